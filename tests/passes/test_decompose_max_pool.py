import pytest
import torch
from torch import nn

from conftest import chip, without_growth_limit
from pass_helpers import FORMS, assert_same, captured, kinds, run_pass
from fxrewrite.ir import op_view
from fxrewrite.lowering.exact import lower_exact
from fxrewrite.passes import registered_passes
from fxrewrite.passes.decompose_max_pool.depthwise_max import DEPTHWISE_MAX_RULE
from fxrewrite.passes.decompose_max_pool.smaller_pools import SMALLER_POOLS_RULE
from fxrewrite.rewrite import PassContext, PatternPass, RuleSet
from fxrewrite.target import Target

RUNNING_MAX_CASES = pytest.mark.parametrize("kernel, stride, padding", [
    (3, 2, 1), (3, 1, 1), (3, 2, 0), (5, 2, 2), (5, 1, 1), ((3, 1), (2, 1), (1, 0)), ((1, 3), 2, 0)])


def only(rule):
    return PatternPass(f"{rule.name}-only", "test", RuleSet((rule,)), frozenset({"conv2d", "relu", "add", "max_pool2d"}))


def run_rule(rule, gm, x):
    result = only(rule).run(gm, PassContext((x,)))
    gm.graph.lint()
    return gm, result


class FunctionalPool(nn.Module):
    """F.max_pool2d with the given settings, of relu(x) or of x."""

    def __init__(self, *args, relu: bool = True, **kwargs):
        super().__init__()
        self.relu, self.args, self.kwargs = relu, args, kwargs

    def forward(self, x):
        return nn.functional.max_pool2d(torch.relu(x) if self.relu else x, *self.args, **self.kwargs)


def relu_pool(form, *args, **kwargs):
    if form == "functional":
        return FunctionalPool(*args, **kwargs)
    return nn.Sequential(nn.ReLU(), nn.MaxPool2d(*args, **kwargs))


def views(gm, kind):
    return [v for v in map(op_view, gm.graph.nodes) if v.kind == kind]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("rule, built", [(None, {"conv2d", "relu", "cat"}), (DEPTHWISE_MAX_RULE, {"conv2d", "relu", "add"})])
@RUNNING_MAX_CASES
def test_max_pool_after_relu_as_running_maxes(form, rule, built, kernel, stride, padding):
    """rule None: the pass as a whole, whose first form is relu-max with dense convs."""
    torch.manual_seed(1)
    model = relu_pool(form, kernel, stride, padding).eval()
    x = torch.randn(2, 3, 29, 31)
    gm = captured(model, x, form)
    rewrites = run_pass("decompose-max-pool", gm, x)[1] if rule is None else run_rule(rule, gm, x)[1].rewrites
    assert rewrites == 1
    assert set(kinds(gm)) == built
    if rule is DEPTHWISE_MAX_RULE:
        assert {v.attrs["grouping"] for v in views(gm, "conv2d")} == {"depthwise"}
    assert_same(gm, model, x)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", [
    (5, 1, 2, False), (5, 2, 2, False), (7, 1, 3, False), (7, 2, 2, False), (9, 3, 4, False), (5, 2, 1, False),
    (5, 2, 2, True), (7, 2, 3, True), (9, 2, 4, True)])
def test_large_max_pool_as_stacked_3x3_pools_for_signed_inputs(form, kernel, stride, padding, ceil_mode):
    torch.manual_seed(kernel + stride)
    model = FunctionalPool(kernel, stride, padding, relu=False, ceil_mode=ceil_mode) if form == "functional" else \
        nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    x = torch.randn(1, 3, 29, 30) - 0.5
    gm, result = run_rule(SMALLER_POOLS_RULE, captured(model, x, form), x)
    assert result.rewrites == 1, result.stats.declined
    assert len(views(gm, "max_pool2d")) == kernel // 2 and set(kinds(gm)) == {"max_pool2d"}
    assert_same(gm, model, x)


def test_unpadded_pool_of_signed_values_is_exact():
    torch.manual_seed(2)
    model = nn.Sequential(nn.MaxPool2d(3, 2)).eval()
    x = torch.randn(1, 2, 28, 17) - 3.0  # all windows negative: a zero border would show
    for rule in (None, DEPTHWISE_MAX_RULE):
        gm = captured(model, x, "module")
        rewrites = run_pass("decompose-max-pool", gm, x)[1] if rule is None else run_rule(rule, gm, x)[1].rewrites
        assert rewrites == 1
        assert_same(gm, model, x)


@pytest.mark.parametrize("pool, why", [(nn.MaxPool2d(3, 2, 1), "may be negative"), (nn.MaxPool2d(2, 2), "odd"),
                                       (nn.MaxPool2d(3, 2, 1, ceil_mode=True), "ceil_mode")])
def test_declines_what_it_cannot_do_exactly(pool, why):
    x = torch.randn(1, 2, 8, 8)
    gm = captured(nn.Sequential(pool), x, "module")
    result = registered_passes()["decompose-max-pool"].run(gm, PassContext((x,)))
    assert result.rewrites == 0 and kinds(gm)["max_pool2d"] == 1
    assert why in " ".join(result.stats.declined["relu-max"])
    assert why in " ".join(result.stats.declined["depthwise-max"])
    assert "only square odd kernels of 5" in " ".join(result.stats.declined["smaller-pools"])


def test_a_ceil_mode_stack_of_another_size_is_declined():
    x = torch.randn(1, 2, 29, 30)
    gm, result = run_rule(SMALLER_POOLS_RULE, captured(nn.MaxPool2d(7, 3, 3, ceil_mode=True), x, "module"), x)
    assert result.rewrites == 0 and "another output size" in result.stats.declined["smaller-pools"][0]


POOL_CHIP = """
[ops.conv2d]
kernels = ["3x3"]
groupings = ["dense", "depthwise"]
[ops.relu]
[ops.add]
[ops.cat]
dims = [1]
"""


@pytest.mark.parametrize("chip_body, expected", [
    (POOL_CHIP + '[ops.max_pool2d]\nkernels = ["3x3"]\n', {"max_pool2d", "relu", "conv2d"}),
    (POOL_CHIP, {"conv2d", "relu", "add"}),
    (POOL_CHIP.replace('"dense", "depthwise"', '"dense"').replace("[ops.add]\n", ""), {"conv2d", "relu", "cat"})])
def test_the_cheapest_form_the_target_runs_is_chosen(chip_body, expected):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(5, 1, 2)).eval()
    x = torch.randn(1, 3, 21, 23)
    target = without_growth_limit(chip(chip_body))
    lowered = lower_exact(captured(model, x, "module"), target, (x,))
    assert not lowered.verdicts.illegal
    assert set(kinds(lowered.gm)) == expected
    assert lowered.verification.max_relative_error <= 1e-5


def test_npu_generic_pools_5x5_as_3x3_pools():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(5, 1, 2)).eval()
    x = torch.randn(1, 3, 20, 20)
    lowered = lower_exact(captured(model, x, "export"), Target.load("npu-generic"), (x,))
    assert not lowered.verdicts.illegal and kinds(lowered.gm)["max_pool2d"] == 2
