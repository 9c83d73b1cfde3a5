"""hardswish-as-hardsigmoid-mul (exact): hardswish(x) = x * hardsigmoid(x).

hardswish(x) = x * relu6(x + 3) / 6 and hardsigmoid(x) = relu6(x + 3) / 6 (PyTorch's definitions),
so the product is the same expression; hardsigmoid-as-relu6 takes the gate further.
"""

import torch
import torch.nn.functional as F

from fxrewrite.rewrite import Match, PatternPass, Rewriter, Rule, RuleSet, op, register


def _as_gate_mul(match: Match, rewriter: Rewriter):
    hardswish = match["hardswish"]
    x = hardswish.inputs[0]
    return rewriter.function(hardswish.node, torch.mul, x, rewriter.function(hardswish.node, F.hardsigmoid, x))


register(PatternPass(
    name="hardswish-as-hardsigmoid-mul",
    summary="hardswish as x * hardsigmoid(x)",
    rules=RuleSet((Rule("hardswish", op("hardswish", name="hardswish"), _as_gate_mul),)),
    produces_ops=frozenset({"hardsigmoid", "mul"}),
    must_precede=("hardsigmoid-as-relu6",),
))
