"""Split form of a grouped conv (exact): one dense conv per group on its slice of the channels.

For groups g, output channels of group j read only input channels of group j, so with
x_j = x[:, j*I/g:(j+1)*I/g] and W_j = W[j*O/g:(j+1)*O/g], conv(x, W, groups=g) =
cat_j(conv(x_j, W_j) + b_j) on channels: the same products and sums, so the MACs do not grow
(the block-diagonal dense form multiplies them by g). It needs the target to split channels and
pays one op per group, so decompose-grouped-conv weighs it against the dense form by cost. Convs
with one input channel per group (depthwise, or the channel-multiplier shift layers of
decompose-large-kernel) are left to the dense form: as one conv per channel they would pay an op
per channel of the map. Nor is a conv of more than MAX_GROUPS groups split (the shift layers of a
wide depthwise conv have hundreds): its per-op overheads alone would outweigh it, and building and
judging that many convs is what would make the lowering slow.
"""

import operator

import torch

from fxrewrite.cost import node_macs
from fxrewrite.rewrite import Decline, Match, Rewriter, Rule, op
from fxrewrite.rewrite.building import conv2d, plain_conv_weights

GROUPED_CONV = op("conv2d", name="conv", where={"grouped": lambda v: v.attrs["groups"] > 1})
#: most groups split into convs (regnet_y_400mf's widest grouped conv has 55 groups of 8 channels)
MAX_GROUPS = 64
SPLIT_GROUPED_CONV = op("conv2d", name="conv", where={
    "grouped, several input channels per group": lambda v: 1 < v.attrs["groups"] < v.attrs["in_ch"],
    f"at most {MAX_GROUPS} groups": lambda v: v.attrs["groups"] <= MAX_GROUPS})


def _split_convs(match: Match, rewriter: Rewriter):
    conv = match["conv"]
    weights = plain_conv_weights(conv)
    if isinstance(weights, Decline):
        return weights
    weight, bias = weights
    groups, attrs = conv.attrs["groups"], conv.attrs
    per_in, per_out = attrs["in_ch"] // groups, attrs["out_ch"] // groups
    pieces = rewriter.function(conv.node, torch.split, conv.inputs[0], per_in, 1)
    outputs = []
    for j in range(groups):
        rows = slice(j * per_out, (j + 1) * per_out)
        part = rewriter.function(conv.node, operator.getitem, pieces, j)
        module = conv2d(weight[rows], None if bias is None else bias[rows], stride=attrs["stride"],
                        padding=attrs["padding"])
        outputs.append(rewriter.module(conv.node, "group_conv", module, part))
    rewriter.notes.append(f"{conv.node.name}: groups {groups} -> {groups} dense convs on channel slices, "
                          f"MACs unchanged ({node_macs(conv)})")
    return rewriter.function(conv.node, torch.cat, outputs, 1)


#: the rule decompose-grouped-conv weighs against the dense form
SPLIT_CONVS_RULE = Rule("split-convs", SPLIT_GROUPED_CONV, _split_convs)
