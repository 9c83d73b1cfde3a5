import pytest
import torch
from torch import nn

from pass_helpers import FORMS, assert_same, captured, kinds, run_pass


class FunctionalSoftmax(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return torch.softmax(x, self.dim)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dim", [-1, 1])
def test_softmax_as_exp_of_the_shifted_input(form, dim):
    torch.manual_seed(0)
    model = (FunctionalSoftmax(dim) if form == "functional" else nn.Sequential(nn.Softmax(dim))).eval()
    x = 30.0 * torch.randn(2, 5, 7)  # large logits: the shift by the maximum keeps exp finite
    gm, rewrites = run_pass("softmax-as-exp", captured(model, x, form), x)
    assert rewrites == 1
    assert kinds(gm) == {"amax": 1, "sub": 1, "exp": 1, "sum": 1, "mul": 1, "reciprocal": 1}
    assert_same(gm, model, x)
