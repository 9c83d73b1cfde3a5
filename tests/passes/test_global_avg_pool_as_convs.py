import pytest
import torch
from torch import nn

from pass_helpers import assert_same, captured, kinds, run_pass


@pytest.mark.parametrize("form", ["module", "aten"])
@pytest.mark.parametrize("height, width", [(7, 7), (29, 31), (1, 5), (2, 3), (56, 56)])
def test_global_average_pool_as_summing_convs(form, height, width):
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1))
    x = torch.randn(2, 5, height, width)
    gm, rewrites = run_pass("global-avg-pool-as-convs", captured(model, x, form), x)
    assert rewrites == 1
    assert set(kinds(gm)) == {"conv2d"}
    assert_same(gm, model, x)


class SpatialMean(nn.Module):
    def __init__(self, keepdim: bool):
        super().__init__()
        self.keepdim = keepdim

    def forward(self, x):
        return x.mean((2, 3), keepdim=self.keepdim)


@pytest.mark.parametrize("form", ["module", "aten"])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("height, width", [(7, 7), (29, 31), (1, 1)])
def test_a_mean_over_height_and_width_is_the_same_pool(form, keepdim, height, width):
    torch.manual_seed(0)
    model = SpatialMean(keepdim)
    x = torch.randn(2, 5, height, width)
    gm, rewrites = run_pass("global-avg-pool-as-convs", captured(model, x, form), x)
    assert rewrites == 1
    assert set(kinds(gm)) <= {"conv2d", "flatten"} and (kinds(gm)["flatten"] == 1) != keepdim
    assert_same(gm, model, x)


def test_a_mean_over_channels_is_not_a_pool():
    x = torch.randn(2, 5, 4, 4)
    gm, rewrites = run_pass("global-avg-pool-as-convs", captured(ChannelMean(), x, "module"), x)
    assert rewrites == 0 and kinds(gm) == {"mean": 1}


class ChannelMean(nn.Module):
    def forward(self, x):
        return x.mean(1)
