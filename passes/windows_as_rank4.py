"""windows-as-rank4 (exact): a map cut into windows, or windows put back into a map, in rank 4.

Swin's window partition views a (B, H, W, C) map as (B, H/w, w, W/w, w, C), swaps dims 2 and 3 and
merges the result into (B H W / w^2, w^2, C); its reverse views windows as (B, H/w, W/w, w, w, C),
swaps dims 2 and 3 and merges into (B, H, W, C). In both, the rank-6 view
(a0, a1, a2, a3, a4, a5) of a contiguous tensor is also the rank-4 view (a0 a1, a2, a3, a4 a5): the
merged dims stay adjacent and in order, and the swap of dims 2 and 3 moves neither of them, so
transposing dims 1 and 2 of the rank-4 view and merging gives the same elements in the same order.
Only data moves, so the values are equal; every tensor is then of rank 4 (the Ethos-U files' limit).
"""

import math

import torch

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register

#: the permutation window partition and reverse share: dims 2 and 3 swapped
SWAP_2_3 = (0, 1, 3, 2, 4, 5)


def _in_rank4(match: Match, rewriter: Rewriter):
    split, swap, merge = match["split"], match["swap"], match["merge"]
    shape, merged = split.output_shape, merge.output_shape
    if shape is None or merged is None or len(shape) != 6 or len(merged) > 4:
        return Decline("not a rank-6 view merged back into rank 4 or less")
    if tuple(swap.attrs["dims"]) != SWAP_2_3:
        return Decline(f"permutation {swap.attrs['dims']}, not {SWAP_2_3}")
    a0, a1, a2, a3, a4, a5 = shape
    anchor, fn = merge.node, rewriter.function
    # -1 keeps the batch free (the leading dims hold it), as the views it replaces did
    grouped = fn(anchor, torch.reshape, split.inputs[0], (-1, a2, a3, a4 * a5))
    swapped = fn(anchor, torch.transpose, grouped, 1, 2)
    return fn(anchor, torch.reshape, swapped, (-1, *merged[1:]) if math.prod(merged) else merged)


register(PatternPass(
    name="windows-as-rank4",
    summary="a window partition or reverse through a rank-6 view and swap as a rank-4 view, transpose and merge",
    rules=RuleSet((Rule("windows", op("reshape", op("permute", op("reshape", name="split"), name="swap",
                                                    single_user=True), name="merge"), _in_rank4),)),
    produces_ops=frozenset({"reshape", "transpose"}),
    must_follow=("qkv-unbind-as-split", "patch-conv-as-linear", "mul-constant-as-batch-norm",
                 "expand-constant-as-linear", "add-constant-as-batch-norm"),
))
