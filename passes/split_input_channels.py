"""split-input-channels (exact): a conv over too many input channels, split at a concatenation.

If x = cat(x_1, ..., x_n) on channels and W = [W_1 | ... | W_n] is cut at the same columns, then
conv(x, W) + b = sum_j conv(x_j, W_j) + b. The parts are packed greedily into p chunks of at most M
channels (M = the target's in_channels_max; a chunk of several parts is concatenated again). The
sum is itself a conv: for a slice h of at most M // p output channels, cat_j(conv(chunk_j,
W_j[h])) goes through a 1x1 conv with weight [I | I | ... | I] and bias b[h], which reads p |h| <= M
channels; the slices are concatenated. Each output is the same products summed in another order,
so the result equals the original to float rounding. Needs the conv's input to be a channel concat
whose parts have at most M channels each.
"""

import torch

from fxrewrite.ir import tensor_shape
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import conv2d, plain_conv_weights


def _chunks(widths: list[int], limit: int) -> list[list[int]]:
    """Consecutive parts packed greedily into chunks of at most `limit` channels (part indices)."""
    chunks: list[list[int]] = [[]]
    used = 0
    for index, width in enumerate(widths):
        if chunks[-1] and used + width > limit:
            chunks.append([])
            used = 0
        chunks[-1].append(index)
        used += width
    return chunks


def _split(match: Match, rewriter: Rewriter):
    conv, cat = match["conv"], match["cat"]
    limit = rewriter.target.limit("conv2d", "in_channels_max") if rewriter.target is not None else None
    if limit is None:
        return Decline("the target sets no in_channels_max for conv2d, so there is nothing to split for")
    if conv.attrs["in_ch"] <= limit:
        return Decline(f"{conv.attrs['in_ch']} input channels are within the limit {limit}")
    if conv.attrs["groups"] != 1:
        return Decline("only dense convs split on input channels (make grouped convs dense first)")
    weights = plain_conv_weights(conv)
    if isinstance(weights, Decline):
        return weights
    weight, bias = weights
    parts = list(cat.inputs)
    widths = [tensor_shape(p)[1] for p in parts]
    if max(widths) > limit:
        return Decline(f"a concatenated part has {max(widths)} channels, more than the limit {limit}")
    chunks = _chunks(widths, limit)
    if len(chunks) > limit:
        return Decline(f"{len(chunks)} partial sums cannot be added by one conv of at most {limit} inputs")
    starts = [sum(widths[:i]) for i in range(len(widths) + 1)]
    out_ch, attrs = conv.attrs["out_ch"], conv.attrs
    slice_width = limit // len(chunks)
    slices = []
    for first in range(0, out_ch, slice_width):
        rows = slice(first, min(first + slice_width, out_ch))
        width = rows.stop - rows.start
        partials = []
        for chunk in chunks:
            columns = slice(starts[chunk[0]], starts[chunk[-1] + 1])
            source = parts[chunk[0]] if len(chunk) == 1 else rewriter.function(
                conv.node, torch.cat, [parts[i] for i in chunk], 1)
            partial = conv2d(weight[rows, columns], None, stride=attrs["stride"], padding=attrs["padding"])
            partials.append(rewriter.module(conv.node, "partial_conv", partial, source))
        summing = torch.cat([torch.eye(width)] * len(chunks), dim=1)[:, :, None, None]
        joined = rewriter.function(conv.node, torch.cat, partials, 1)
        summed = conv2d(summing, None if bias is None else bias[rows])
        slices.append(rewriter.module(conv.node, "partial_sum", summed, joined))
    return slices[0] if len(slices) == 1 else rewriter.function(conv.node, torch.cat, slices, 1)


register(PatternPass(
    name="split-input-channels",
    summary="conv over more input channels than the target allows, as partial convs summed by a conv",
    rules=RuleSet((Rule("split-at-cat", op("conv2d", op("cat", name="cat", where={"a channel concat": lambda v: v.attrs["dim"] == 1}),
                                         name="conv"), _split),)),
    produces_ops=frozenset({"conv2d", "cat"}),
    must_precede=("conv1x1-as-3x3",),
))
