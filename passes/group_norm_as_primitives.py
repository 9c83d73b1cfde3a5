"""group-norm-as-primitives (exact): group norm from reshapes, means, a reciprocal square root and products.

With x of shape (N, C, *S) and G groups, g = reshape(x, (N, G, C/G * prod(S))), mu = mean_-1(g),
d = g - mu, v = mean_-1(d * d), y = reshape(d * rsqrt(v + eps), x.shape) * gamma_c + beta_c, with
gamma and beta as (C, 1, ..) constants. The variance is taken of the centred values (the two-pass,
stable form torch uses), so the result agrees to float32 rounding. The batch side of each reshape
is -1, so the graph keeps any batch size.
"""

import math

import torch

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import standardized


def _per_channel(rewriter: Rewriter, anchor, value, prefix: str, rank: int):
    """gamma or beta shaped (C, 1, ..) to broadcast over the spatial axes: a constant, or a reshaped node."""
    spread = (-1,) + (1,) * (rank - 2)
    if isinstance(value, torch.Tensor):
        return rewriter.constant(anchor, prefix, value.detach().reshape(spread))
    return rewriter.function(anchor, torch.reshape, value, spread)


def _as_primitives(match: Match, rewriter: Rewriter):
    norm = match["norm"]
    shape = norm.output_shape
    if shape is None or len(shape) < 2:
        return Decline("its input shape is unknown or has no channel axis")
    groups = norm.attrs["num_groups"]
    anchor, x, fn = norm.node, norm.inputs[0], rewriter.function
    grouped = fn(anchor, torch.reshape, x, (-1, groups, shape[1] // groups * math.prod(shape[2:])))
    scaled = standardized(rewriter, anchor, grouped, [-1], norm.attrs["eps"])
    y = fn(anchor, torch.reshape, scaled, (-1, *shape[1:]))
    if norm.args.get("weight") is not None:
        y = fn(anchor, torch.mul, y, _per_channel(rewriter, anchor, norm.args["weight"], "norm_weight", len(shape)))
    if norm.args.get("bias") is not None:
        y = fn(anchor, torch.add, y, _per_channel(rewriter, anchor, norm.args["bias"], "norm_bias", len(shape)))
    return y


register(PatternPass(
    name="group-norm-as-primitives",
    summary="group norm as reshape, mean, sub, mul, rsqrt and add (the two-pass, stable form)",
    rules=RuleSet((Rule("group-norm", op("group_norm", name="norm"), _as_primitives),)),
    must_precede=("mul-constant-as-batch-norm", "add-as-concat-conv", "add-as-concat-linear", "add-constant-as-batch-norm", "global-avg-pool-as-convs"),
    produces_ops=frozenset({"reshape", "mean", "sub", "mul", "add", "rsqrt"}),
))
