"""The planner's trial legalization: memoized by what the products are, not by their weights."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from conftest import symbolic, without_growth_limit
from fxrewrite.lowering.exact import lower_exact
from fxrewrite.lowering.planner import TrialJudge, products_signature
from fxrewrite.rewrite import Decline, Match
from fxrewrite.target import Target


class TwinDepthwise(nn.Module):
    """Two 5x5 depthwise convs of one shape with different weights, and a third of another width."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 4, 5, padding=2, groups=4), nn.Conv2d(4, 4, 5, padding=2, groups=4)
        self.c = nn.Conv2d(4, 4, 5, padding=1, groups=4)

    def forward(self, x):
        return self.c(self.b(torch.relu(self.a(x))))


def test_products_signature_ignores_weights_but_not_shapes_or_attributes():
    gm = symbolic(TwinDepthwise(), torch.randn(1, 4, 11, 11))
    a, b, c = (n for n in gm.graph.nodes if n.op == "call_module")
    assert products_signature([a]) == products_signature([b])
    assert products_signature([a]) != products_signature([c])


def test_products_signature_tells_a_zero_bias_from_another():
    """collapse-linear-convs merges a 1x1 conv into a padded 3x3 one only when its bias is zero, so a
    trial's outcome depends on that, and the memo must not hand one's outcome to the other."""
    convs = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1))
    with torch.no_grad():
        convs[0].bias.zero_()
    gm = symbolic(convs, torch.randn(1, 4, 5, 5))
    zero_bias, some_bias = (n for n in gm.graph.nodes if n.op == "call_module")
    assert products_signature([zero_bias]) != products_signature([some_bias])


def test_identical_products_are_legalized_once_per_depth():
    gm = symbolic(TwinDepthwise(), torch.randn(1, 4, 11, 11))
    a, b, c = (n for n in gm.graph.nodes if n.op == "call_module")
    trials = []
    judge = TrialJudge(Target.load("archnet"), lambda products, context: trials.append(products))
    decompose = SimpleNamespace(name="decompose-large-kernel", trigger="illegal")
    verdicts = [judge(decompose, node, Match({}, (node,)), [node]) for node in (a, b, c)]
    assert len(trials) == 2  # a and b share one trial; c has another padding
    assert all(isinstance(v, Decline) and "stays illegal on archnet" in v.reason for v in verdicts)


def test_memoized_lowering_stays_exact():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 11, 11)
    lowered = lower_exact(symbolic(TwinDepthwise(), x), without_growth_limit(Target.load("archnet")), (x,))
    assert lowered.verdicts.all_legal and lowered.verification.max_relative_error <= 1e-5


def test_a_batch_norm_folded_into_its_conv_is_judged_with_the_conv():
    """On Ethos-U a batch norm after a conv is free (fused), and the folded conv descends from the batch
    norm: judged alone, the batch norm went from 0 cycles to the whole conv's (x inf) and mobilenet_v2's
    blocks were distilled instead of folded."""
    from fxrewrite.cost import Cost
    from fxrewrite.lowering.growth_limit import GrowthLimit

    budget = GrowthLimit({"conv": Cost(100.0, 1000), "bn": Cost(0.0, 0), "other": Cost(900.0, 9000)}, 1.5, "chip")
    lowered = {"bn": Cost(100.0, 1000), "other": Cost(900.0, 9000)}  # the folded conv is charged to the bn
    assert "bn" in budget.dearer_than_students(lowered, {}, 1.0)  # the old judgement, without the merge
    assert budget.dearer_than_students(lowered, {}, 1.0, {"bn": frozenset({"conv"})}) == {}
