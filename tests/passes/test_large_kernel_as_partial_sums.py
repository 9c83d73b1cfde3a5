import pytest
import torch
from torch import nn

from conftest import chip
from pass_helpers import LARGE_KERNEL_CASES, FunctionalConv, assert_same, captured, kinds, large_kernel_case
from fxrewrite.ir import op_view
from fxrewrite.passes.decompose_large_kernel.partial_sums import PARTIAL_SUMS_RULE, window_starts
from fxrewrite.rewrite import PassContext, PatternPass, RuleSet


PARTIAL_SUMS = PatternPass("partial-sums-only", "test", RuleSet((PARTIAL_SUMS_RULE,)), frozenset({"conv2d", "add"}))


def run_partial_sums(gm, x):
    result = PARTIAL_SUMS.run(gm, PassContext((x,)))
    gm.graph.lint()
    return gm, result.rewrites


def conv_views(gm):
    return [v for v in map(op_view, gm.graph.nodes) if v.kind == "conv2d"]


@LARGE_KERNEL_CASES
def test_large_kernel_as_exact_partial_sums(k, stride, padding, depthwise):
    model, x = large_kernel_case(k, stride, padding, depthwise)
    gm, rewrites = run_partial_sums(captured(model, x, "module"), x)
    assert rewrites == 1
    convs = conv_views(gm)
    assert {v.attrs["kernel"] for v in convs} <= {(3, 3), (1, 1)}
    assert all(v.attrs["padding"][0] <= 1 and v.attrs["padding"][1] <= 1 for v in convs)
    windows = [v for v in convs if v.node.target.startswith("window")]
    assert len(windows) == len(window_starts(k)) ** 2
    # the grouping survives: a depthwise conv becomes depthwise windows and depthwise shifts only
    assert {v.attrs["grouping"] for v in convs} == ({"depthwise"} if depthwise else {"dense", "depthwise"})
    assert kinds(gm)["add"] == len(windows) - 1
    assert_same(gm, model, x)


@pytest.mark.parametrize("form", ["functional", "aten"])
def test_other_forms_and_rectangular_kernels(form):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, (7, 5), stride=2, padding=(3, 1), bias=True)
    model = FunctionalConv(conv) if form == "functional" else nn.Sequential(conv)
    x = torch.randn(1, 3, 29, 31)
    gm, rewrites = run_partial_sums(captured(model, x, form), x)
    assert rewrites == 1 and {v.attrs["kernel"] for v in conv_views(gm)} <= {(3, 3), (1, 1)}
    assert_same(gm, model, x)


def test_window_starts_cover_every_tap():
    for k in range(3, 16, 2):
        covered = {start + e for start in window_starts(k) for e in range(3)}
        assert covered == set(range(k)) and len(window_starts(k)) == -(-k // 3)


def test_lowering_keeps_a_large_depthwise_conv_depthwise_on_a_depthwise_chip():
    from fxrewrite import lower

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2, groups=8), nn.ReLU()).eval()
    x = torch.randn(1, 8, 15, 15)
    target = chip("""
        [ops.conv2d]
        kernels = ["1x1", "3x3"]
        padding_max = 1
        groupings = ["dense", "depthwise"]
        [ops.add]
        [ops.relu]
    """)
    lowered = lower(model, (x,), target=target)
    assert lowered.report.to_dict()["still_illegal"] == []
    assert {v.attrs["grouping"] for v in conv_views(lowered.gm)} == {"depthwise"}
    assert lowered.report.to_dict()["after"]["macs"] <= 4 * lowered.report.to_dict()["before"]["macs"]
