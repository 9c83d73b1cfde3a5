"""where-constant-mask-as-mul-add (exact): a choice under a fixed mask as a blend,
where(m, a, b) = a * m + b * (1 - m).

With m in {0, 1} made from parameters and buffers alone (a mask known at compile time), each
element is a * 1 + b * 0 = a or a * 0 + b * 1 = b: exact where a and b are finite (0 * inf is
nan, so a branch that is an infinite or nan number is declined; activations are finite in any
program that runs). The two masks are constants, the products and the sum elementwise ops every
chip runs; the U55 leaves `where` on the CPU (its boolean input is not supported).
"""

import math

import torch

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import computed_constant


def _branch(rewriter: Rewriter, anchor, value, weight: torch.Tensor, name: str):
    """value * weight: a constant where value is a number, else a product node."""
    if isinstance(value, (int, float)):
        return rewriter.constant(anchor, name, value * weight)
    return rewriter.function(anchor, torch.mul, value, rewriter.constant(anchor, f"{name}_mask", weight))


def _as_blend(match: Match, rewriter: Rewriter):
    where = match["where"]
    condition, chosen, other = (where.args[k] for k in ("condition", "input", "other"))
    mask = computed_constant(condition) if isinstance(condition, torch.fx.Node) else None
    if mask is None or mask.dtype != torch.bool:
        return Decline("the condition is computed from the input (a comparison): only a mask known at compile "
                       "time is a fixed blend")
    numbers = [v for v in (chosen, other) if not isinstance(v, torch.fx.Node)]
    if len(numbers) == 2:
        return Decline("both branches are numbers: the result is a constant, not a blend")
    if any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in numbers):
        return Decline(f"a branch of {numbers[0]!r}: 0 * inf and 0 * nan are nan, so the blend would not be exact")
    dtype = where.node.meta["tensor_meta"].dtype
    weight = mask.to(dtype)
    anchor = where.node
    return rewriter.function(anchor, torch.add, _branch(rewriter, anchor, chosen, weight, "where_then"),
                             _branch(rewriter, anchor, other, 1 - weight, "where_else"))


register(PatternPass(
    name="where-constant-mask-as-mul-add",
    summary="where(m, a, b) under a constant mask m as a * m + b * (1 - m)",
    rules=RuleSet((Rule("constant-mask", op("where", name="where"), _as_blend),)),
    produces_ops=frozenset({"mul", "add"}),
    must_precede=("mul-constant-as-batch-norm", "add-constant-as-batch-norm", "add-as-concat-linear",
                  "add-as-concat-conv"),
))
