"""grouped-conv-as-dense (exact): a grouped or depthwise conv is a dense conv with a block-diagonal weight.

For groups g, output channels of group j read only input channels of group j:
W_dense[j*O/g:(j+1)*O/g, j*I/g:(j+1)*I/g] = W[j*O/g:(j+1)*O/g] and zero elsewhere. The MACs grow by g.
Declines when the dense weight would exceed MAX_DENSE_WEIGHT_ELEMENTS.
"""

from fxrewrite.cost import node_macs
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
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
    name="grouped-conv-as-dense",
    summary="grouped or depthwise conv as a dense conv with a block-diagonal weight",
    rules=RuleSet((Rule("grouped", op("conv2d", name="conv", where={"grouped": lambda v: v.attrs["groups"] > 1}),
                        _densify),)),
    produces_ops=frozenset({"conv2d"}),
    must_precede=("split-input-channels",),
))
