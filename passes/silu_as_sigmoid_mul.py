"""silu-as-sigmoid-mul (exact): silu(x) = x * sigmoid(x), for chips with a sigmoid and a multiplier.

The same two float32 operations torch computes for SiLU, so the result is the same to rounding.
"""

import torch

from fxrewrite.rewrite import Match, PatternPass, Rewriter, Rule, RuleSet, op, register


def _as_sigmoid_mul(match: Match, rewriter: Rewriter):
    silu = match["silu"]
    x = silu.inputs[0]
    return rewriter.function(silu.node, torch.mul, x, rewriter.function(silu.node, torch.sigmoid, x))


register(PatternPass(
    name="silu-as-sigmoid-mul",
    summary="SiLU (swish) as x * sigmoid(x)",
    rules=RuleSet((Rule("silu", op("silu", name="silu"), _as_sigmoid_mul),)),
    produces_ops=frozenset({"sigmoid", "mul"}),
    must_precede=("mul-constant-as-batch-norm",),
))
