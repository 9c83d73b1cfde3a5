"""softmax-as-exp (exact): softmax from a maximum, exponentials, a sum and a reciprocal.

softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m) with m = max_j x_j along the dim: subtracting the
maximum keeps every exponential in (0, 1] (the numerically stable form torch uses), and the
quotient is the product with the reciprocal of the sum.
"""

import torch

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register


def _as_exp(match: Match, rewriter: Rewriter):
    softmax = match["softmax"]
    if "dim" not in softmax.attrs:
        return Decline("softmax without a dim is ambiguous")
    anchor, x, fn, dim = softmax.node, softmax.inputs[0], rewriter.function, softmax.attrs["dim"]
    shifted = fn(anchor, torch.sub, x, fn(anchor, torch.amax, x, dim, keepdim=True))
    exponentials = fn(anchor, torch.exp, shifted)
    total = fn(anchor, torch.sum, exponentials, dim, keepdim=True)
    return fn(anchor, torch.mul, exponentials, fn(anchor, torch.reciprocal, total))


register(PatternPass(
    name="softmax-as-exp",
    summary="softmax as exp(x - max) times the reciprocal of its sum",
    rules=RuleSet((Rule("softmax", op("softmax", name="softmax"), _as_exp),)),
    produces_ops=frozenset({"amax", "sub", "exp", "sum", "mul", "reciprocal"}),
    must_precede=("mul-constant-as-batch-norm",),
))
