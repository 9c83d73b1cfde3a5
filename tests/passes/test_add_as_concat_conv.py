import pytest
import torch
from torch import nn

from pass_helpers import FORMS, assert_same, captured, kinds, run_pass


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + x


@pytest.mark.parametrize("form", ["module", "aten"])
def test_residual_add_becomes_concat_and_conv(form):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 29, 31)
    model = Residual().eval()
    gm, rewrites = run_pass("add-as-concat-conv", captured(model, x, form), x)
    assert rewrites == 1
    assert kinds(gm) == {"conv2d": 2, "cat": 1}
    assert_same(gm, model, x)


def test_broadcast_add_is_declined():
    class Bias(nn.Module):
        def forward(self, x):
            return x + x.mean(dim=(2, 3), keepdim=True)

    x = torch.randn(1, 4, 5, 5)
    gm, rewrites = run_pass("add-as-concat-conv", captured(Bias(), x, "module"), x)
    assert rewrites == 0 and kinds(gm)["add"] == 1
