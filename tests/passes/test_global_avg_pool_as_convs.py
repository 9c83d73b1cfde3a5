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
