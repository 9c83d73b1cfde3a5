"""fold-batch-norm (exact): batch norm after a conv or linear layer folds into its weights.

With s = gamma / sqrt(var + eps), bn(W x + b) = gamma (W x + b - mean) / sqrt(var + eps) + beta
= (s * W) x + (s (b - mean) + beta), scaling each output channel's weights by s. The conv or linear
must feed only the batch norm; inference statistics only.
"""


from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import batch_norm_affine, conv2d, conv_weights, is_plain_conv2d, linear


def _fold(match: Match, rewriter: Rewriter):
    layer = match["layer"]
    if layer.kind == "conv2d" and not is_plain_conv2d(layer):
        return Decline("only zero-padded convs with explicit padding fold")
    weights, scale_shift = conv_weights(layer), batch_norm_affine(match["bn"])
    for result in (weights, scale_shift):
        if isinstance(result, Decline):
            return result
    (weight, bias), (scale, shift) = weights, scale_shift
    shape = (-1,) + (1,) * (weight.dim() - 1)
    new_weight = (weight.double() * scale.reshape(shape)).float()
    new_bias = (shift + scale * (bias.double() if bias is not None else 0.0)).float()
    anchor = match["bn"].node
    if layer.kind == "linear":
        return rewriter.module(anchor, "folded_linear", linear(new_weight, new_bias), layer.inputs[0])
    attrs = layer.attrs
    folded = conv2d(new_weight, new_bias, stride=attrs["stride"], padding=attrs["padding"], groups=attrs["groups"])
    if attrs["dilation"] != (1, 1):
        folded.dilation = attrs["dilation"]
    return rewriter.module(anchor, "folded_conv", folded, layer.inputs[0])


register(PatternPass(
    name="fold-batch-norm",
    summary="fold inference batch norm into the preceding conv or linear layer",
    rules=RuleSet((Rule("bn-after-layer", op("batch_norm", op(("conv2d", "linear"), name="layer", single_user=True),
                                              name="bn"), _fold),)),
    produces_ops=frozenset({"conv2d", "linear"}),
    must_precede=("collapse-linear-convs", "conv1x1-as-3x3", "decompose-large-kernel", "decompose-grouped-conv"),
))
