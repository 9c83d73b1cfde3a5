"""The rewrite engine: matching, captures, user constraints, fixpoints, overlaps and the loop guard."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from fxrewrite.rewrite import Decline, RewriteLoopError, Rule, RuleSet, apply_rules, op

from conftest import compute_views, symbolic


def relu_chain(n: int) -> fx.GraphModule:
    return symbolic(nn.Sequential(*[nn.ReLU() for _ in range(n)]), torch.randn(2, 3))


def collapse_double_relu(match, rewriter):
    """relu(relu(x)) = relu(x): the inner relu's input feeds one relu."""
    return rewriter.module(match["outer"].node, "relu", nn.ReLU(), match["inner"].inputs[0])


DOUBLE_RELU = Rule("double-relu", op("relu", op("relu", name="inner", single_user=True), name="outer"),
                   collapse_double_relu)


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_back_to_back_and_overlapping_matches_reach_the_fixpoint(n):
    gm = relu_chain(n)
    stats = apply_rules(gm, RuleSet((DOUBLE_RELU,)))
    assert [v.kind for v in compute_views(gm)] == ["relu"]
    assert stats.applied["double-relu"] == n - 1
    x = torch.randn(2, 3)
    torch.testing.assert_close(gm(x), torch.relu(x))


def test_single_user_constraint_blocks_a_shared_intermediate():
    class Shared(nn.Module):
        def forward(self, x):
            y = torch.relu(x)
            return torch.relu(y) + y

    gm = symbolic(Shared(), torch.randn(2, 3))
    stats = apply_rules(gm, RuleSet((DOUBLE_RELU,)), debug=True)
    assert stats.total == 0
    assert any("has 2 users" in reason for reason in stats.misses["double-relu"])


def test_debug_mode_says_why_a_candidate_did_not_match():
    gm = symbolic(nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU()), torch.randn(1, 3, 5, 5))
    stats = apply_rules(gm, RuleSet((DOUBLE_RELU,)), debug=True)
    assert stats.misses["double-relu"] == ["_0 is conv2d, not relu"]


def test_attribute_predicates_explain_their_refusal():
    pattern = op("conv2d", where={"a 1x1 kernel": lambda v: v.attrs["kernel"] == (1, 1)})
    gm = symbolic(nn.Sequential(nn.Conv2d(3, 3, 3)), torch.randn(1, 3, 5, 5))
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    assert pattern.match(node) == "_0 (conv2d): not a 1x1 kernel"


def test_a_declined_rewrite_leaves_the_graph_untouched_and_records_why():
    def decline(match, rewriter):
        rewriter.module(match["outer"].node, "relu", nn.ReLU(), match["inner"].inputs[0])
        return Decline("not today")

    gm = relu_chain(2)
    before = gm.code
    stats = apply_rules(gm, RuleSet((Rule("never", DOUBLE_RELU.pattern, decline),)))
    assert gm.code == before
    assert stats.declined["never"] == ["_1: not today"]


def test_priorities_pick_the_higher_rule_first():
    def to_sigmoid(match, rewriter):
        return rewriter.module(match["outer"].node, "sigmoid", nn.Sigmoid(), match["inner"].inputs[0])

    low = DOUBLE_RELU
    high = Rule("double-relu-to-sigmoid", DOUBLE_RELU.pattern, to_sigmoid, priority=5)
    gm = relu_chain(2)
    apply_rules(gm, RuleSet((low,)) + RuleSet((high,)))
    assert [v.kind for v in compute_views(gm)] == ["sigmoid"]


def test_rules_that_undo_each_other_hit_the_loop_guard():
    def swap(kind, module):
        def replace(match, rewriter):
            return rewriter.module(match["x"].node, kind, module(), match["x"].inputs[0])
        return replace

    flip = Rule("relu-to-tanh", op("relu", name="x"), swap("tanh", nn.Tanh))
    flop = Rule("tanh-to-relu", op("tanh", name="x"), swap("relu", nn.ReLU))
    with pytest.raises(RewriteLoopError, match="no fixpoint after 50 rewrites"):
        apply_rules(relu_chain(1), RuleSet((flip, flop)), max_rewrites=50)
