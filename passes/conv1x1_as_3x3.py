"""conv1x1-as-3x3 (exact): a 1x1 conv is a 3x3 conv whose border taps are zero.

With W3[:, :, 1, 1] = W1 and zeros elsewhere, and padding p + 1 instead of p, every output pixel
reads the same input pixel: y(q) = W1 x(s q - p) = sum_t W3[t] x_pad(s q - (p + 1) + t). The output
size (H + 2(p + 1) - 3) / s + 1 = (H + 2p - 1) / s + 1 is unchanged.
"""

import torch

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import conv2d, plain_conv_weights


def _widen(match: Match, rewriter: Rewriter):
    conv = match["conv"]
    weights = plain_conv_weights(conv)
    if isinstance(weights, Decline):
        return weights
    weight, bias = weights
    wide = torch.zeros(weight.shape[0], weight.shape[1], 3, 3, dtype=weight.dtype)
    wide[:, :, 1, 1] = weight[:, :, 0, 0]
    padding = tuple(p + 1 for p in conv.attrs["padding"])
    module = conv2d(wide, bias, stride=conv.attrs["stride"], padding=padding, groups=conv.attrs["groups"])
    return rewriter.module(conv.node, "conv3x3", module, conv.inputs[0])


register(PatternPass(
    name="conv1x1-as-3x3",
    summary="1x1 conv as a zero-bordered 3x3 conv",
    rules=RuleSet((Rule("conv1x1", op("conv2d", name="conv", where={"a 1x1 kernel": lambda v: v.attrs["kernel"] == (1, 1)}),
                        _widen),)),
    produces_ops=frozenset({"conv2d"}),
    must_precede=("patch-conv-as-linear", "patch-conv-as-strided-3x3",),
))
