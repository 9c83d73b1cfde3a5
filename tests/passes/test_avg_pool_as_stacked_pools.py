import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite import lower
from fxrewrite.ir import op_view
from fxrewrite.passes.avg_pool_as_stacked_pools import stride_factors
from pass_helpers import FORMS, assert_same, captured, kinds, run_pass

PASS = "avg-pool-as-stacked-pools"


class Pooled(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.conv, self.kernel, self.stride = nn.Conv2d(3, 5, 3, padding=1), kernel, stride

    def forward(self, x):
        return F.avg_pool2d(self.conv(x), self.kernel, self.stride)


def model(form, kernel, stride):
    if form == "module":
        return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.AvgPool2d(kernel, stride))
    return Pooled(kernel, stride)


def test_strides_factor_into_legal_strides():
    assert stride_factors(4, 3) == [2, 2] and stride_factors(6, 3) == [3, 2] and stride_factors(16, 3) == [2] * 4
    assert stride_factors(9, 3) == [3, 3] and stride_factors(5, 3) is None and stride_factors(3, 3) == [3]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("window", [4, 6, 8, (4, 2), (9, 4)])
def test_tiling_pools_as_pools_of_their_factors(form, window):
    torch.manual_seed(3)
    teacher = model(form, window, window).eval()
    x = torch.randn(2, 3, 29, 31)  # sides no stride divides: the last rows and columns are dropped as the pool does
    gm, rewrites = run_pass(PASS, captured(teacher, x, form), x)
    assert rewrites == 1
    pools = [op_view(n) for n in gm.graph.nodes if op_view(n).kind == "avg_pool2d"]
    assert len(pools) >= 2 and all(max(p.attrs["stride"]) <= 3 for p in pools)
    assert_same(gm, teacher, x)


@pytest.mark.parametrize("form", FORMS)
def test_a_window_over_the_whole_map_is_a_mean(form):
    teacher = model(form, (25, 5), (25, 5)).eval()  # a keyword-spotting net's last pool
    x = torch.randn(1, 3, 25, 5)
    gm, rewrites = run_pass(PASS, captured(teacher, x, form), x)
    assert rewrites == 1 and kinds(gm)["avg_pool2d"] == 0 and kinds(gm)["mean"] == 1
    assert_same(gm, teacher, x)


@pytest.mark.parametrize("kernel, stride", [(5, 5), (4, 2), (3, 4)])
def test_prime_strides_and_overlapping_windows_are_declined(kernel, stride):
    teacher = Pooled(kernel, stride).eval()
    x = torch.randn(1, 3, 29, 31)
    gm, rewrites = run_pass(PASS, captured(teacher, x, "functional"), x)
    assert rewrites == 0


def test_the_u55_runs_a_large_stride_pool_after_lowering():
    teacher = Pooled(8, 8).eval()
    x = torch.randn(1, 3, 32, 48)
    result = lower(teacher, (x,), target="ethos-u55-128")
    assert result.verdicts.illegal == ()
    assert result.report.max_relative_error <= 1e-5
