"""gelu-as-erf (exact): gelu(x) = x * 0.5 * (1 + erf(x / sqrt(2))), for chips that declare erf.

torch's exact GELU (approximate="none") computes this expression; the tanh-approximated GELU is
left to approx-gelu-as-tanh, which is named approximate and only runs when asked for.
"""

import math

import torch

from fxrewrite.rewrite import Match, PatternPass, Rewriter, Rule, RuleSet, op, register


def _as_erf(match: Match, rewriter: Rewriter):
    gelu = match["gelu"]
    anchor, x, fn = gelu.node, gelu.inputs[0], rewriter.function
    gate = fn(anchor, torch.add, fn(anchor, torch.erf, fn(anchor, torch.mul, x, 1.0 / math.sqrt(2.0))), 1.0)
    return fn(anchor, torch.mul, fn(anchor, torch.mul, x, 0.5), gate)


register(PatternPass(
    name="gelu-as-erf",
    summary="exact GELU as x * 0.5 * (1 + erf(x / sqrt(2)))",
    rules=RuleSet((Rule("gelu", op("gelu", name="gelu", where={"the exact (erf) GELU": lambda v: (
        v.attrs["approximate"] == "none")}), _as_erf),)),
    must_precede=("mul-constant-as-batch-norm", "add-as-concat-conv", "add-as-concat-linear", "add-constant-as-batch-norm",),
    produces_ops=frozenset({"mul", "add", "erf"}),
))
