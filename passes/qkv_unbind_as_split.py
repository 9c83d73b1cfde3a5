"""qkv-unbind-as-split (exact): a fused q/k/v projection split the rank-5 way, in rank 4.

Attention with one projection to S C features (S = 3: timm's ViTs, DeiT) splits it as
reshape(x, (B, N, S, H, D)).permute(2, 0, 3, 1, 4).unbind(0): item i is the (B, H, N, D) tensor
whose element (b, h, n, d) is x[b, n, i H D + h D + d]. reshape(x, (B, N, S H, D)) holds that
element at (b, n, i H + h, d); with dims 1 and 2 swapped it is at (b, i H + h, n, d), and a split into
pieces of H along dim 1 puts it at (b, h, n, d) of piece i: the same elements, so the values are
equal. Every tensor is then of rank 4 at most, which chips limited to rank 4 (the Ethos-U's files) run.
Picked one at a time (`qkv[i]`, torchvision's Swin), item i is that transposed view's slice
[i H, (i + 1) H) along dim 1.
"""

import operator

import torch

from fxrewrite.ir import tensor_shape
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import sliced

#: the permutation that moves the q/k/v axis first and heads before tokens
QKV_ORDER = (2, 0, 3, 1, 4)


def _heads_first(match: Match, rewriter: Rewriter, anchor) -> tuple[object, int] | Decline:
    """The projection as (B, S H, N, D), built before `anchor`, and H; or why the match is no q/k/v split."""
    permute, reshape = match["permute"], match["reshape"]
    x = reshape.inputs[0]
    flat, split = tensor_shape(x), reshape.output_shape
    if flat is None or split is None or len(flat) != 3 or len(split) != 5 or tuple(flat[:2]) != tuple(split[:2]):
        return Decline("not a (B, N, S H D) projection reshaped to (B, N, S, H, D)")
    if tuple(permute.attrs["dims"]) != QKV_ORDER:
        return Decline(f"permutation {permute.attrs['dims']}, not {QKV_ORDER}")
    _, tokens, pieces, heads, width = split
    fn = rewriter.function
    # -1 keeps the batch free, as the reshape it replaces kept it (torch.export then exports it dynamic)
    grouped = fn(anchor, torch.reshape, x, (-1, tokens, pieces * heads, width))
    return fn(anchor, torch.transpose, grouped, 1, 2), heads


def _as_split(match: Match, rewriter: Rewriter):
    unbind = match["unbind"]
    if "unbind" not in str(unbind.node.target) or unbind.attrs.get("dim") != 0:
        return Decline("not an unbind of the q/k/v axis")
    built = _heads_first(match, rewriter, unbind.node)
    if isinstance(built, Decline):
        return built
    transposed, heads = built
    return rewriter.function(unbind.node, torch.split, transposed, heads, 1)


def _as_slice(match: Match, rewriter: Rewriter):
    node = match["item"].node
    if node.target is operator.getitem and isinstance(node.args[1], int):  # qkv[i], traced
        index = node.args[1]
    elif "select" in str(node.target) and len(node.args) == 3 and node.args[1] == 0:  # aten.select(qkv, 0, i)
        index = node.args[2]
    else:
        return Decline("not one item of the q/k/v axis (an integer index along dim 0)")
    built = _heads_first(match, rewriter, node)
    if isinstance(built, Decline):
        return built
    transposed, heads = built
    return sliced(rewriter, node, transposed, 1, int(index) * heads, heads)


register(PatternPass(
    name="qkv-unbind-as-split",
    summary="a fused q/k/v projection's rank-5 reshape, permute and unbind as a rank-4 reshape, transpose and split",
    rules=RuleSet((Rule("qkv", op("split", op("permute", op("reshape", name="reshape"), name="permute"),
                                  name="unbind"), _as_split),
                   Rule("qkv-item", op("slice", op("permute", op("reshape", name="reshape"), name="permute"),
                                       name="item"), _as_slice))),
    produces_ops=frozenset({"reshape", "transpose", "split", "slice"}),
    must_follow=("roll-as-slices", "index-select-as-slices", "decompose-grouped-conv"),
))
