import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pass_helpers import FORMS, assert_same, captured, kinds, run_pass, with_random_affine


class FunctionalGroupNorm(nn.Module):
    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        n = self.norm
        return F.group_norm(x, n.num_groups, n.weight, n.bias, n.eps)


def randomized_norm(groups: int, channels: int, affine: bool) -> nn.GroupNorm:
    return with_random_affine(nn.GroupNorm(groups, channels, eps=1e-5, affine=affine))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape, groups, affine", [((2, 6, 7, 9), 3, True), ((1, 8, 5, 5), 8, True),
                                                   ((2, 4, 11), 1, False)])
def test_group_norm_as_means_and_rsqrt(form, shape, groups, affine):
    torch.manual_seed(0)
    norm = randomized_norm(groups, shape[1], affine)
    model = (FunctionalGroupNorm(norm) if form == "functional" else nn.Sequential(norm)).eval()
    # an offset and a scale per group that the normalization must remove
    x = 3.0 + 2.0 * torch.randn(*shape) * torch.arange(1, shape[1] + 1).reshape(-1, *([1] * (len(shape) - 2)))
    gm, rewrites = run_pass("group-norm-as-primitives", captured(model, x, form), x)
    assert rewrites == 1
    counted = kinds(gm)
    assert counted["group_norm"] == 0 and counted["rsqrt"] == 1 and counted["mean"] == 2
    assert counted["mul"] == 2 + affine and counted["add"] == 1 + affine
    assert_same(gm, model, x)
    bigger = torch.randn(3, *shape[1:])
    assert_same(gm, model, bigger)
