import pytest
import torch
from torch import nn

from pass_helpers import assert_same, captured, kinds, run_pass


@pytest.mark.parametrize("form", ["module", "aten"])
@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, 1), (2, 2, 0), (3, 1, 1), (5, 3, 2), ((3, 5), 1, (0, 2))])
def test_average_pool_as_constant_depthwise_conv(form, kernel, stride, padding):
    torch.manual_seed(0)
    model = nn.Sequential(nn.AvgPool2d(kernel, stride, padding)).eval()
    x = torch.randn(2, 3, 29, 31)
    gm, rewrites = run_pass("avg-pool-as-conv", captured(model, x, form), x)
    assert rewrites == 1 and set(kinds(gm)) == {"conv2d"}
    assert_same(gm, model, x)


@pytest.mark.parametrize("pool", [nn.AvgPool2d(3, 2, 1, count_include_pad=False), nn.AvgPool2d(3, 2, ceil_mode=True),
                                  nn.AvgPool2d(2, divisor_override=3)])
def test_divisors_a_conv_cannot_express_are_declined(pool):
    x = torch.randn(1, 2, 9, 9)
    gm, rewrites = run_pass("avg-pool-as-conv", captured(nn.Sequential(pool), x, "module"), x)
    assert rewrites == 0 and kinds(gm)["avg_pool2d"] == 1
