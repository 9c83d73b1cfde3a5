"""index-select-as-slices (exact): the slices of a dim at constant positions, as slices and a concat.

index_select(x, d, i) stacks x's slices i_0, i_1, ... along d. With i known at compile time (a
buffer: a channel permutation, a fixed crop), each run of consecutive increasing positions
i_k, i_k + 1, ..., i_k + r - 1 is one slice x[i_k : i_k + r] along d, and the result is their
concatenation in order; a repeated position is a slice read twice. Only data moves, so the values
are equal. The U55 leaves index_select (a gather) on the CPU.
"""

import torch

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import computed_constant, sliced


def runs(positions: list[int]) -> list[tuple[int, int]]:
    """`positions` as (start, length) runs of consecutive increasing positions, in order."""
    found: list[tuple[int, int]] = []
    for position in positions:
        if found and found[-1][0] + found[-1][1] == position:
            found[-1] = (found[-1][0], found[-1][1] + 1)
        else:
            found.append((position, 1))
    return found


def _as_slices(match: Match, rewriter: Rewriter):
    select = match["select"]
    index = select.args["index"]
    positions = computed_constant(index) if isinstance(index, torch.fx.Node) else None
    if positions is None:
        return Decline("the positions are computed from the input: a gather, not fixed slices")
    shape = select.input_shapes[0] if select.input_shapes else None
    dim = select.attrs["dim"]
    size = shape[dim] if shape is not None else None
    listed = [int(p) % size for p in positions.flatten().tolist()] if size else []
    if not listed:
        return Decline("no positions, or the input's shape is unknown")
    anchor, x = select.node, select.inputs[0]
    pieces = [sliced(rewriter, anchor, x, dim, start, length) for start, length in runs(listed)]
    return pieces[0] if len(pieces) == 1 else rewriter.function(anchor, torch.cat, pieces, dim)


register(PatternPass(
    name="index-select-as-slices",
    summary="index_select at constant positions as one slice per run of consecutive positions, concatenated",
    rules=RuleSet((Rule("constant-positions", op("index_select", name="select"), _as_slices),)),
    produces_ops=frozenset({"slice", "cat"}),
))
