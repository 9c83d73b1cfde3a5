"""avg-pool-as-stacked-pools (exact): an average pool whose stride the target cannot take, as pools
it can, or a mean.

- factored: a k x k pool with stride k (windows that tile the map, no padding) is the same pool
  of factor a followed by one of factor b for k = a b: each output averages an a b x a b block, the
  mean of b x b means of a x a blocks of equal size, and floor(floor(n / a) / b) = floor(n / (a b))
  outputs are kept along each side. Each side is factored into strides the target runs (at most
  3 on the U55, which leaves average pools of stride 4 and more on the CPU).
- whole-map: a pool whose window is the whole map (keyword-spotting nets end so) is the mean over
  height and width.

Needs no padding, floor rounding and no divisor_override.
"""

import torch
from torch import nn

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import nchw_shape

#: the largest stride a pool takes where the target does not say (Vela's and the U55's limit)
DEFAULT_STRIDE_MAX = 3


def stride_factors(stride: int, largest: int) -> list[int] | None:
    """`stride` as a product of factors from `largest` down to 2, largest first; None where a prime
    factor is above `largest`."""
    factors, rest = [], stride
    for factor in range(largest, 1, -1):
        while rest % factor == 0:
            factors.append(factor)
            rest //= factor
    return factors if rest == 1 else None


def _plain(match: Match) -> Decline | None:
    pool = match["pool"]
    if any(pool.attrs["padding"]) or pool.attrs["ceil_mode"] or pool.args.get("divisor_override") is not None:
        return Decline("only unpadded pools with floor rounding and no divisor_override are restacked")
    return None


def _whole_map(match: Match, rewriter: Rewriter):
    pool, shape = match["pool"], nchw_shape(match["pool"])
    refused = shape if isinstance(shape, Decline) else _plain(match)
    if refused is not None:
        return refused
    if tuple(pool.attrs["kernel"]) != tuple(shape[2:]):
        return Decline("the window is not the whole map")
    return rewriter.function(pool.node, torch.mean, pool.inputs[0], [2, 3], keepdim=True)


def _factored(match: Match, rewriter: Rewriter):
    pool = match["pool"]
    refused = _plain(match)
    if refused is not None:
        return refused
    kernel, stride = tuple(pool.attrs["kernel"]), tuple(pool.attrs["stride"])
    if kernel != stride:
        return Decline(f"kernel {kernel} and stride {stride} differ: only windows that tile the map are restacked")
    limit = rewriter.target.limit("avg_pool2d", "stride_range") if rewriter.target is not None else None
    largest = limit[1] if limit else DEFAULT_STRIDE_MAX
    if max(stride) <= largest:
        return Decline(f"stride {stride} is already one the pool takes (at most {largest})")
    sides = [stride_factors(s, largest) for s in stride]
    if any(f is None for f in sides):
        return Decline(f"stride {stride} has a prime factor above {largest}, the largest stride a pool takes here")
    steps = max(len(f) for f in sides)
    sides = [f + [1] * (steps - len(f)) for f in sides]
    x = pool.inputs[0]
    for height, width in zip(*sides):
        x = rewriter.module(pool.node, "stacked_pool", nn.AvgPool2d((height, width), (height, width)), x)
    return x


register(PatternPass(
    name="avg-pool-as-stacked-pools",
    summary="an average pool of stride k over tiling windows as pools of k's factors, or over the whole map as "
            "a mean",
    rules=RuleSet((Rule("whole-map", op("avg_pool2d", name="pool"), _whole_map, priority=1),
                   Rule("factored", op("avg_pool2d", name="pool"), _factored))),
    produces_ops=frozenset({"avg_pool2d", "mean"}),
    must_precede=("avg-pool-as-conv", "global-avg-pool-as-convs"),
))
