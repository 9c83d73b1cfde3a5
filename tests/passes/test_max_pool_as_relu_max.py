import pytest
import torch
from torch import nn

from pass_helpers import assert_same, captured, kinds, run_pass


@pytest.mark.parametrize("form", ["module", "aten"])
@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, 1), (3, 1, 1), (3, 2, 0), (5, 2, 2), (5, 1, 1),
                                                     ((3, 1), (2, 1), (1, 0)), ((1, 3), 2, 0)])
def test_max_pool_after_relu_as_running_maxes(form, kernel, stride, padding):
    torch.manual_seed(1)
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d(kernel, stride, padding)).eval()
    x = torch.randn(2, 3, 29, 31)
    gm, rewrites = run_pass("max-pool-as-relu-max", captured(model, x, form), x)
    assert rewrites == 1
    assert set(kinds(gm)) == {"conv2d", "relu", "cat"}
    assert_same(gm, model, x)


def test_unpadded_pool_of_signed_values_is_exact():
    torch.manual_seed(2)
    model = nn.Sequential(nn.MaxPool2d(3, 2)).eval()
    x = torch.randn(1, 2, 28, 17) - 3.0  # all windows negative: a zero border would show
    gm, rewrites = run_pass("max-pool-as-relu-max", captured(model, x, "module"), x)
    assert rewrites == 1
    assert_same(gm, model, x)


@pytest.mark.parametrize("pool, why", [(nn.MaxPool2d(3, 2, 1), "may be negative"), (nn.MaxPool2d(2, 2), "odd"),
                                       (nn.MaxPool2d(3, 2, 1, ceil_mode=True), "ceil_mode")])
def test_declines_what_it_cannot_do_exactly(pool, why):
    x = torch.randn(1, 2, 8, 8)
    gm = captured(nn.Sequential(pool), x, "module")
    from fxrewrite.passes import registered_passes
    from fxrewrite.rewrite import PassContext
    result = registered_passes()["max-pool-as-relu-max"].run(gm, PassContext((x,)))
    assert result.rewrites == 0 and kinds(gm)["max_pool2d"] == 1
    assert why in " ".join(result.stats.declined["max-pool"])
