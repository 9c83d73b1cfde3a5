"""upsample-nearest-as-pixel-shuffle (exact): nearest upsampling by an integer factor r is a 1x1
conv that writes each channel r^2 times, followed by a pixel shuffle.

Nearest upsampling gives y[c, r h + i, r w + j] = x[c, h, w] for 0 <= i, j < r (torch's nearest
reads source floor(dst / r), which is h for every dst in [r h, r h + r)). pixel_shuffle(z, r)[c,
r h + i, r w + j] = z[c r^2 + i r + j, h, w], so z[c r^2 + k] = x[c] for every k in [0, r^2) gives
y exactly: a 1x1 conv with weight 1 from input channel c to its r^2 outputs, bias-free. Two forms,
the cheaper legal one chosen by the planner: the depthwise conv with channel multiplier r^2 (C r^2
MACs per pixel) and the dense 1x1 (C^2 r^2 MACs per pixel) for chips without depthwise convs. For
chips that run depth-to-space but no resize (npu-generic).
"""

import torch
from torch import nn

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import block_diagonal, conv2d, nchw_shape


def _factor(match: Match) -> int | Decline:
    attrs = match["up"].attrs
    if attrs["mode"] != "nearest":
        return Decline(f"{attrs['mode']} upsampling mixes neighbours; only nearest copies pixels")
    scale_h, scale_w = attrs["scale"]
    if scale_h != scale_w or not isinstance(scale_h, int) or scale_h < 2:
        return Decline(f"scale {scale_h}x{scale_w}: a pixel shuffle enlarges both sides by one integer factor")
    return scale_h


def _phases(match: Match, rewriter: Rewriter, depthwise: bool):
    up = match["up"]
    factor, shape = _factor(match), nchw_shape(up)
    if isinstance(factor, Decline) or isinstance(shape, Decline):
        return factor if isinstance(factor, Decline) else shape
    channels = shape[1]
    weight = torch.ones(channels * factor * factor, 1, 1, 1)  # channel c to outputs c r^2 ... c r^2 + r^2 - 1
    if not depthwise:
        weight = block_diagonal(weight, channels)
    phases = rewriter.module(up.node, "upsample_phases", conv2d(weight, None, groups=channels if depthwise else 1),
                             up.inputs[0])
    return rewriter.module(up.node, "upsample_shuffle", nn.PixelShuffle(factor), phases)


register(PatternPass(
    name="upsample-nearest-as-pixel-shuffle",
    summary="nearest upsampling by r as a 1x1 conv writing r^2 phases and a pixel shuffle",
    rules=RuleSet((
        Rule("depthwise-phases", op("upsample", name="up"), lambda m, r: _phases(m, r, depthwise=True)),
        Rule("dense-phases", op("upsample", name="up"), lambda m, r: _phases(m, r, depthwise=False)),
    )),
    produces_ops=frozenset({"conv2d", "pixel_shuffle"}),
    must_precede=("collapse-linear-convs", "conv1x1-as-3x3", "decompose-grouped-conv"),
))
