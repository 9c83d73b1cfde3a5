"""layer-norm-as-primitives (exact): layer norm from means, a reciprocal square root and products.

Over the normalized (last) dims D: mu = mean_D(x), d = x - mu, v = mean_D(d * d),
y = d * rsqrt(v + eps) * gamma + beta. The variance is taken of the centred values (two passes, the
numerically stable form), as torch computes it, so the result agrees to float32 rounding.
"""

import torch

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import standardized


def _operand(rewriter: Rewriter, anchor, value, prefix: str):
    """A parameter as a node: the node itself, or a constant for a module's tensor."""
    return value if not isinstance(value, torch.Tensor) else rewriter.constant(anchor, prefix, value)


def _as_primitives(match: Match, rewriter: Rewriter):
    norm = match["norm"]
    shape = norm.output_shape
    if shape is None:
        return Decline("its input shape is unknown")
    dims = list(range(len(shape) - len(norm.attrs["normalized_shape"]), len(shape)))
    anchor, x, fn = norm.node, norm.inputs[0], rewriter.function
    y = standardized(rewriter, anchor, x, dims, norm.attrs["eps"])
    if norm.args.get("weight") is not None:
        y = fn(anchor, torch.mul, y, _operand(rewriter, anchor, norm.args["weight"], "norm_weight"))
    if norm.args.get("bias") is not None:
        y = fn(anchor, torch.add, y, _operand(rewriter, anchor, norm.args["bias"], "norm_bias"))
    return y


register(PatternPass(
    name="layer-norm-as-primitives",
    summary="layer norm as mean, sub, mul, rsqrt and add (the two-pass, stable form)",
    rules=RuleSet((Rule("layer-norm", op("layer_norm", name="norm"), _as_primitives),)),
    must_precede=("mul-constant-as-batch-norm", "add-as-concat-conv", "add-as-concat-linear", "add-constant-as-batch-norm", "global-avg-pool-as-convs"),
    produces_ops=frozenset({"mean", "sub", "mul", "add", "rsqrt"}),
))
