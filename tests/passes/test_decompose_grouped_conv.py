import pytest
import torch
from torch import nn

from fxrewrite.ir import op_view
from fxrewrite.lowering import lower_exact
from fxrewrite.passes.decompose_grouped_conv.split_convs import SPLIT_CONVS_RULE
from fxrewrite.rewrite import PassContext, PatternPass, RuleSet
from fxrewrite.target import Target

from conftest import without_growth_limit
from pass_helpers import FORMS, FunctionalConv, assert_same, captured, kinds, run_pass

SPLIT_ONLY = PatternPass("split-convs-only", "test", RuleSet((SPLIT_CONVS_RULE,)), frozenset({"conv2d"}))


def conv_groups(gm):
    return [v.attrs["groups"] for v in map(op_view, gm.graph.nodes) if v.kind == "conv2d"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("groups, stride", [(3, 1), (6, 2)])
def test_grouped_and_depthwise_become_block_diagonal_dense(form, groups, stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 12, 3, stride=stride, padding=1, groups=groups)
    model = FunctionalConv(conv) if form == "functional" else nn.Sequential(conv)
    x = torch.randn(1, 6, 29, 31)
    gm, rewrites = run_pass("decompose-grouped-conv", captured(model, x, form), x)
    assert rewrites == 1
    assert conv_groups(gm) == [1]
    assert_same(gm, model, x)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("groups, stride, bias", [(3, 1, True), (2, 2, True), (3, 2, False)])
def test_grouped_conv_as_one_dense_conv_per_channel_slice(form, groups, stride, bias):
    torch.manual_seed(groups)
    conv = nn.Conv2d(6, 12, 3, stride=stride, padding=1, groups=groups, bias=bias)
    model = FunctionalConv(conv) if form == "functional" else nn.Sequential(conv)
    x = torch.randn(1, 6, 29, 31)
    gm = captured(model, x, form)
    rewrites = SPLIT_ONLY.run(gm, PassContext((x,))).rewrites
    gm.graph.lint()
    assert rewrites == 1
    assert conv_groups(gm) == [1] * groups
    assert kinds(gm)["split"] == 1 and kinds(gm)["cat"] == 1
    assert_same(gm, model, x)


def test_one_input_channel_per_group_is_not_split():
    model = nn.Sequential(nn.Conv2d(6, 12, 3, padding=1, groups=6))
    x = torch.randn(1, 6, 9, 9)
    assert SPLIT_ONLY.run(captured(model, x, "module"), PassContext((x,))).rewrites == 0


def test_the_cheaper_form_wins_per_target():
    """npu-generic splits channels, so a regnet-style conv (group width 8) keeps its MACs there;
    archnet cannot split, so a grouped conv becomes one dense conv."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(48, 48, 3, padding=1, groups=6), nn.ReLU()).eval()
    x = torch.randn(1, 48, 15, 15)
    on_npu = lower_exact(captured(model, x, "module"), Target.load("npu-generic"), (x,))
    assert on_npu.verdicts.all_legal and conv_groups(on_npu.gm) == [1] * 6
    assert on_npu.after.macs == on_npu.before.macs
    on_archnet = lower_exact(captured(model, x, "module"), without_growth_limit(Target.load("archnet")), (x,))
    assert conv_groups(on_archnet.gm) == [1]
    assert on_archnet.after.macs == 6 * on_archnet.before.macs
    assert on_npu.verification.max_relative_error < 1e-5 and on_archnet.verification.max_relative_error < 1e-5


def test_a_dense_weight_over_budget_is_declined(monkeypatch):
    from fxrewrite.passes import decompose_grouped_conv

    monkeypatch.setattr(decompose_grouped_conv, "MAX_DENSE_WEIGHT_ELEMENTS", 100)
    model = nn.Sequential(nn.Conv2d(6, 6, 3, groups=6))
    x = torch.randn(1, 6, 9, 9)
    gm, rewrites = run_pass("decompose-grouped-conv", captured(model, x, "module"), x, Target.load("archnet"))
    assert rewrites == 0
    assert conv_groups(gm) == [6]


def test_more_groups_than_the_split_limit_are_not_split(monkeypatch):
    from fxrewrite.passes.decompose_grouped_conv import split_convs as grouped_conv_as_split_convs

    model = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1, groups=6))
    x = torch.randn(1, 12, 9, 9)
    monkeypatch.setattr(grouped_conv_as_split_convs, "MAX_GROUPS", 4)
    assert SPLIT_ONLY.run(captured(model, x, "module"), PassContext((x,))).rewrites == 0
