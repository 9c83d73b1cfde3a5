"""addmm-as-linear (exact): beta b + alpha (x @ W), with W and b made from parameters alone, as an FC layer.

GPT-2's Conv1D writes its projections as addmm(b, x, W) with W of shape (in, out): the FC layer
linear(x, W', b') = x W'^T + b' with W' = alpha W^T and b' = beta b gives the same sums (alpha W's
products rounded once more where alpha is not 1, float32 rounding). b may be a row (out,) or broadcast
to the output. For chips that run FC layers but know no addmm: every one.
"""

from fxrewrite.ir import tensor_shape
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import computed_constant, linear


def _as_linear(match: Match, rewriter: Rewriter):
    addmm = match["addmm"]
    bias_node, x, weight_node = addmm.inputs[:3]
    weight, bias = computed_constant(weight_node), computed_constant(bias_node)
    if weight is None or bias is None or not weight.is_floating_point():
        return Decline("the weight or the bias reads an input: a product of two activations, not an FC layer")
    shape = tensor_shape(x)
    if shape is None or len(shape) != 2 or weight.dim() != 2:
        return Decline("the input's shape is unknown")
    rows = bias.reshape((1,) * (2 - bias.dim()) + tuple(bias.shape)) if bias.dim() <= 2 else None
    if rows is None or rows.shape[0] != 1:
        return Decline("the bias varies by row: it is no FC layer's bias")
    alpha, beta = addmm.attrs["alpha"], addmm.attrs["beta"]
    layer = linear(alpha * weight.t(), beta * rows[0].expand(weight.shape[1]).clone())
    return rewriter.module(addmm.node, "fc", layer, x)


register(PatternPass(
    name="addmm-as-linear",
    summary="addmm of parameters (GPT-2's Conv1D) as an FC layer",
    rules=RuleSet((Rule("addmm-as-fc", op("addmm", name="addmm"), _as_linear),)),
    produces_ops=frozenset({"linear"}),
    must_precede=("fold-affine-into-linear",),
))
