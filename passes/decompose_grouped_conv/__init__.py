"""decompose-grouped-conv (exact): a grouped or depthwise conv as dense convs, in the cheaper of two forms.

This module's dense form is one conv with a block-diagonal weight: for groups g, output channels of
group j read only input channels of group j, so W_dense[j*O/g:(j+1)*O/g, j*I/g:(j+1)*I/g] =
W[j*O/g:(j+1)*O/g] and zero elsewhere. The MACs grow by g. The split form
(grouped_conv_as_split_convs) keeps the MACs but pays one conv per group. The dense form declines
when its weight would exceed MAX_DENSE_WEIGHT_ELEMENTS.
"""

from fxrewrite.cost import node_macs
from fxrewrite.passes.decompose_grouped_conv.split_convs import GROUPED_CONV, SPLIT_CONVS_RULE
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, register
from fxrewrite.rewrite.building import block_diagonal, conv2d, plain_conv_weights
#: largest dense weight this pass builds (64 MB of float32); beyond it distillation is the better answer
MAX_DENSE_WEIGHT_ELEMENTS = 1 << 24


def _densify(match: Match, rewriter: Rewriter):
    conv = match["conv"]
    attrs = conv.attrs
    elements = attrs["out_ch"] * attrs["in_ch"] * attrs["kernel"][0] * attrs["kernel"][1]
    if elements > MAX_DENSE_WEIGHT_ELEMENTS:
        return Decline(f"the dense weight would hold {elements:,} elements (limit {MAX_DENSE_WEIGHT_ELEMENTS:,}); "
                       "leave this conv to distillation")
    weights = plain_conv_weights(conv)
    if isinstance(weights, Decline):
        return weights
    weight, bias = weights
    groups = conv.attrs["groups"]
    module = conv2d(block_diagonal(weight, groups), bias, stride=conv.attrs["stride"], padding=conv.attrs["padding"])
    node = rewriter.module(conv.node, "dense_conv", module, conv.inputs[0])
    rewriter.notes.append(f"{conv.node.name}: groups {groups} -> dense, MACs x{groups} "
                          f"({node_macs(conv)} -> {node_macs(conv) * groups})")
    return node


register(PatternPass(
    name="decompose-grouped-conv",
    summary="grouped or depthwise conv as dense convs: block-diagonal, or one per group on channel slices",
    rules=RuleSet((Rule("dense", GROUPED_CONV, _densify), SPLIT_CONVS_RULE)),
    produces_ops=frozenset({"conv2d", "split", "cat"}),
    must_precede=("split-input-channels",),
))
