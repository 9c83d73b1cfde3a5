"""batch-norm-as-conv (exact): an inference batch norm that follows no conv is a depthwise 1x1 conv.

bn(x)_c = s_c x_c + t_c with s = gamma / sqrt(var + eps) and t = beta - mean s: a depthwise 1x1 conv
with weight s_c and bias t_c, stride 1, no padding, so every pixel, borders included, is the same
product and sum. Where the target runs the conv in another form, the rest of the pipeline takes it
there: conv1x1-as-3x3 gives the zero-bordered 3x3, decompose-grouped-conv the dense diagonal conv;
and where a conv follows with nothing non-linear between (a pre-activation block without its
activation), collapse-linear-convs merges the two when that is exact and cheaper.
"""

from fxrewrite.ir import op_view
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import batch_norm_affine, depthwise_1x1, nchw_shape


def _as_conv(match: Match, rewriter: Rewriter):
    bn = match["bn"]
    producer = bn.inputs[0]
    if op_view(producer).kind in ("conv2d", "linear") and len(producer.users) == 1:
        return Decline("it follows a conv or linear layer: fold-batch-norm folds it into that layer's weights")
    shape, affine = nchw_shape(bn), batch_norm_affine(bn)
    for result in (shape, affine):
        if isinstance(result, Decline):
            return result
    scale, shift = affine
    return rewriter.module(bn.node, "bn_conv", depthwise_1x1(scale, shift), bn.inputs[0])


register(PatternPass(
    name="batch-norm-as-conv",
    summary="batch norm that follows no conv (after an add, a concat, an input) as a depthwise 1x1 conv",
    rules=RuleSet((Rule("batch-norm", op("batch_norm", name="bn"), _as_conv),)),
    produces_ops=frozenset({"conv2d"}),
    must_precede=("patch-conv-as-linear", "collapse-linear-convs",),
))
