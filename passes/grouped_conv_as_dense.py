"""grouped-conv-as-dense (exact): a grouped or depthwise conv is a dense conv with a block-diagonal weight.

Declines when the dense weight would exceed MAX_DENSE_WEIGHT_ELEMENTS. For groups g, output channels of group j read only input channels of group j:
W_dense[j*O/g:(j+1)*O/g, j*I/g:(j+1)*I/g] = W[j*O/g:(j+1)*O/g] and zero elsewhere. The MACs grow by g.
"""

import torch

from fxrewrite.cost import node_macs
from fxrewrite.layers import conv2d, plain_conv_weights
from fxrewrite.pattern import Decline, Match, Rewriter, Rule, RuleSet, op
from fxrewrite.pipeline import PatternPass, register


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
    out_per, in_per = weight.shape[0] // groups, weight.shape[1]
    dense = torch.zeros(weight.shape[0], in_per * groups, *weight.shape[2:], dtype=weight.dtype)
    for g in range(groups):
        dense[g * out_per:(g + 1) * out_per, g * in_per:(g + 1) * in_per] = weight[g * out_per:(g + 1) * out_per]
    module = conv2d(dense, bias, stride=conv.attrs["stride"], padding=conv.attrs["padding"])
    node = rewriter.module(conv.node, "dense_conv", module, conv.inputs[0])
    rewriter.notes.append(f"{conv.node.name}: groups {groups} -> dense, MACs x{groups} "
                          f"({node_macs(conv)} -> {node_macs(conv) * groups})")
    return node


register(PatternPass(
    name="grouped-conv-as-dense",
    summary="grouped or depthwise conv as a dense conv with a block-diagonal weight",
    rules=RuleSet((Rule("grouped", op("conv2d", name="conv", where={"grouped": lambda v: v.attrs["groups"] > 1}),
                        _densify),)),
    produces_ops=frozenset({"conv2d"}),
    must_precede=("split-input-channels",),
))
