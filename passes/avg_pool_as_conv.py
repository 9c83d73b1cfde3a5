"""avg-pool-as-conv (exact): k x k average pooling is a depthwise conv with every weight 1 / (kh kw).

avg_pool(x)(q) = (1 / (kh kw)) sum_t x_pad(s q + t) with zero padding when count_include_pad is
true, which is the depthwise conv with that constant kernel, the same stride and padding. With
count_include_pad false the border divisor changes, so only padding 0 (no border) is accepted then.
decompose-large-kernel and decompose-grouped-conv take the conv further where the target needs.
"""

import torch

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import conv2d, nchw_shape


def _as_conv(match: Match, rewriter: Rewriter):
    pool = match["pool"]
    attrs = pool.attrs
    shape = nchw_shape(pool)
    if isinstance(shape, Decline):
        return shape
    if attrs["ceil_mode"]:
        return Decline("ceil_mode pools partial windows with another divisor; only floor rounding is exact")
    if any(attrs["padding"]) and not attrs.get("count_include_pad", True):
        return Decline("count_include_pad=False divides border windows by fewer pixels than the conv would")
    if pool.args.get("divisor_override") is not None:
        return Decline("divisor_override is not expressed")
    kh, kw = attrs["kernel"]
    weight = torch.full((shape[1], 1, kh, kw), 1.0 / (kh * kw))
    module = conv2d(weight, None, stride=attrs["stride"], padding=attrs["padding"], groups=shape[1])
    return rewriter.module(pool.node, "avg_conv", module, pool.inputs[0])


register(PatternPass(
    name="avg-pool-as-conv",
    summary="k x k average pool as a depthwise conv with constant weights",
    rules=RuleSet((Rule("avg-pool", op("avg_pool2d", name="pool"), _as_conv),)),
    produces_ops=frozenset({"conv2d"}),
    must_precede=("patch-conv-as-linear", "collapse-linear-convs", "conv1x1-as-3x3", "decompose-large-kernel", "decompose-grouped-conv"),
))
