"""roll-as-slices (exact): a circular shift as two slices joined in the other order.

roll(x, s, d) along a dim of size n moves element i to (i + s) mod n: with r = s mod n, the result
is cat([x[n - r:], x[:n - r]], d) along d, the last r elements first. A roll over several dims is
one such shift per dim in turn. Only data moves, so the values are equal. Swin's shifted windows
roll their maps by half a window and back; for chips that slice and concatenate but have no roll.
"""

import torch

from fxrewrite.ir import tensor_shape
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import sliced


def _as_slices(match: Match, rewriter: Rewriter):
    roll = match["roll"]
    shifts, dims = roll.attrs["shifts"], roll.attrs["dims"]
    shape = tensor_shape(roll.inputs[0])
    if not dims or len(shifts) != len(dims) or shape is None:
        return Decline("a roll of the flattened tensor (no dims) or of unknown shape is not split into slices")
    anchor, fn, x = roll.node, rewriter.function, roll.inputs[0]
    for shift, dim in zip(shifts, dims):
        size = shape[dim]
        r = shift % size
        if r == 0:
            continue
        tail = sliced(rewriter, anchor, x, dim, size - r, r)
        head = sliced(rewriter, anchor, x, dim, 0, size - r)
        x = fn(anchor, torch.cat, [tail, head], dim)
    if x is roll.inputs[0]:
        return Decline("a roll by whole turns moves nothing (remove it, not rebuild it)")
    return x


register(PatternPass(
    name="roll-as-slices",
    summary="a circular shift (torch.roll) as two slices concatenated the other way round",
    rules=RuleSet((Rule("roll", op("roll", name="roll"), _as_slices),)),
    produces_ops=frozenset({"slice", "cat"}),
))
