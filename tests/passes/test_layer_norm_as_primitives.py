import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pass_helpers import FORMS, assert_same, captured, kinds, run_pass, with_random_affine


class FunctionalNorm(nn.Module):
    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        n = self.norm
        return F.layer_norm(x, n.normalized_shape, n.weight, n.bias, n.eps)


def randomized_norm(shape, affine: bool) -> nn.LayerNorm:
    return with_random_affine(nn.LayerNorm(shape, eps=1e-5, elementwise_affine=affine))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape, normalized, affine", [((2, 7, 13), (13,), True), ((2, 3, 5, 9), (5, 9), True),
                                                       ((3, 11), (11,), False)])
def test_layer_norm_as_means_and_rsqrt(form, shape, normalized, affine):
    torch.manual_seed(0)
    norm = randomized_norm(normalized, affine)
    model = (FunctionalNorm(norm) if form == "functional" else nn.Sequential(norm)).eval()
    x = 3.0 + 2.0 * torch.randn(*shape)  # an offset and a scale the normalization must remove
    gm, rewrites = run_pass("layer-norm-as-primitives", captured(model, x, form), x)
    assert rewrites == 1
    left = {"mean": 2, "sub": 1, "mul": 2 + affine, "add": 1 + affine, "rsqrt": 1}
    assert kinds(gm) == left
    assert_same(gm, model, x)
