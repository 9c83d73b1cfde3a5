import pytest
import torch
from torch import nn

from conftest import chip
from pass_helpers import FORMS, FunctionalConv, assert_same, captured, kinds, run_pass
from fxrewrite.ir import op_view
from fxrewrite.target import Target


def only_conv(gm):
    (conv,) = [op_view(n) for n in gm.graph.nodes if op_view(n).kind == "conv2d"]
    return conv


@pytest.mark.parametrize("form", FORMS)
def test_conv_then_unpadded_conv_is_one_conv_with_biases(form):
    torch.manual_seed(0)
    first, second = nn.Conv2d(3, 5, 3, padding=1), nn.Conv2d(5, 4, 3, stride=2)
    model = nn.Sequential(FunctionalConv(first) if form == "functional" else first, second).eval()
    x = torch.randn(2, 3, 29, 31)
    gm, rewrites = run_pass("collapse-linear-convs", captured(model, x, "aten" if form == "aten" else "module"), x)
    assert rewrites == 1
    assert only_conv(gm).attrs["kernel"] == (5, 5)
    assert_same(gm, model, x)


def test_restructurable_activation_chain_becomes_one_dense_conv():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(4, 8, 1, bias=False), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.Conv2d(8, 6, 1)).eval()
    x = torch.randn(2, 4, 29, 31)
    gm, rewrites = run_pass("collapse-linear-convs", captured(model, x, "module"), x)
    assert rewrites == 2
    conv = only_conv(gm)
    assert (conv.attrs["kernel"], conv.attrs["grouping"], conv.attrs["padding"]) == ((3, 3), "dense", (1, 1))
    assert_same(gm, model, x)


def test_a_chain_collapsed_on_a_target_reads_the_filled_weights_of_the_first_merge():
    """Regression (found by the random-graph property test): the merged conv is judged on the target
    as a shell first, which memoizes its node's view; filling the shell by swapping its Parameters
    left that view on the empty ones, so the next merge composed garbage (errors of 1e37)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 1, bias=False),
                          nn.Conv2d(16, 16, 1, bias=False)).eval()
    x = torch.randn(1, 3, 9, 9)
    gm, rewrites = run_pass("collapse-linear-convs", captured(model, x, "module"), x, Target.load("npu-generic"))
    assert rewrites == 2
    assert_same(gm, model, x)


def test_two_depthwise_convs_stay_depthwise():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.Conv2d(6, 6, 3, stride=2, groups=6)).eval()
    x = torch.randn(1, 6, 29, 31)
    gm, rewrites = run_pass("collapse-linear-convs", captured(model, x, "module"), x)
    assert rewrites == 1 and only_conv(gm).attrs["grouping"] == "depthwise"
    assert_same(gm, model, x)


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)),  # second pads a biased map
    nn.Sequential(nn.Conv2d(3, 3, 3, stride=2), nn.Conv2d(3, 3, 1)),  # strided first conv
    nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU(), nn.Conv2d(3, 3, 1)),  # an activation between
])
def test_what_would_not_be_exact_is_left_alone(model):
    x = torch.randn(1, 3, 11, 11)
    gm, rewrites = run_pass("collapse-linear-convs", captured(model.eval(), x, "module"), x)
    assert rewrites == 0 and kinds(gm)["conv2d"] == 2


def test_fires_only_where_the_target_cost_says_it_is_cheaper():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1)).eval()
    x = torch.randn(1, 8, 16, 16)
    ops = "[ops.conv2d]\n"
    _, plain = run_pass("collapse-linear-convs", captured(model, x, "module"), x, chip(ops))
    slow_depthwise = chip(ops + "[performance]\ndepthwise_macs_per_cycle = 1.0\n")
    gm, collapsed = run_pass("collapse-linear-convs", captured(model, x, "module"), x, slow_depthwise)
    assert (plain, collapsed) == (0, 1)
    assert_same(gm, model, x)


def test_a_merged_conv_the_target_cannot_run_is_declined_before_composing():
    from fxrewrite.passes import registered_passes
    from fxrewrite.rewrite import PassContext

    torch.manual_seed(3)
    # a wide middle: the merged 5x5 conv (8 -> 2) is far cheaper than the two 3x3 convs
    model = nn.Sequential(nn.Conv2d(8, 32, 3, padding=1), nn.Conv2d(32, 2, 3)).eval()
    x = torch.randn(1, 8, 16, 17)
    three_only = chip('[ops.conv2d]\nkernels = ["3x3"]\n')
    result = registered_passes()["collapse-linear-convs"].run(captured(model, x, "module"), PassContext((x,), three_only))
    assert result.rewrites == 0
    (reason,) = result.stats.declined["conv-conv"]
    assert "the merged conv would not run on test-chip (conv2d kernel 5x5" in reason
    gm, rewrites = run_pass("collapse-linear-convs", captured(model, x, "module"), x,
                            chip('[ops.conv2d]\nkernels = ["3x3", "5x5"]\n'))
    assert rewrites == 1 and only_conv(gm).attrs["kernel"] == (5, 5)
    assert_same(gm, model, x)
