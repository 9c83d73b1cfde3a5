"""How a student brings a coarse input map up to the size it works at, with the target's own ops.

A merge region (an FPN or U-Net level) reads maps coarser than its output. The student enlarges each
by its integer factor r in the first of these forms the target runs (checked by tracing a probe
through the target's verdicts):
1. nearest `upsample` by r, where the target resizes maps (the Ethos-U targets);
2. a 3x3 conv writing r^2 phases per channel, then `pixel_shuffle(r)` (depth to space), where the
   target runs that but no resize (npu-generic): depthwise with channel multiplier r^2 where the
   target runs depthwise convs, dense otherwise. It starts as nearest upsampling (centre tap 1) and,
   trained, can learn smoother phases (bilinear's 3/4-1/4 weights are 3x3 phase kernels);
3. none (archnet: no op makes a map larger): the input is left out, and a region of only such
   inputs is refused with that reason.
"""

from __future__ import annotations

import torch
from torch import nn

from fxrewrite.distill.token_students import runs_on
from fxrewrite.rewrite.building import block_diagonal
from fxrewrite.target import Target

#: the forms, in the order they are tried
FORMS = ("nearest", "depthwise-phases", "dense-phases")


def upsampler(form: str, channels: int, factor: int) -> nn.Module:
    """A layer enlarging (N, channels, H, W) to (N, channels, factor H, factor W), started as nearest."""
    if form == "nearest":
        return nn.Upsample(scale_factor=factor, mode="nearest")
    depthwise = form == "depthwise-phases"
    copies = torch.zeros(channels * factor * factor, 1, 3, 3)
    copies[:, :, 1, 1] = 1.0  # each channel written to its factor^2 phases, as nearest does
    conv = nn.Conv2d(channels, len(copies), 3, padding=1, groups=channels if depthwise else 1)
    with torch.no_grad():
        conv.weight.copy_(copies if depthwise else block_diagonal(copies, channels))
        conv.bias.zero_()
    return nn.Sequential(conv, nn.PixelShuffle(factor))


def legal_form(target: Target, coarse: torch.Tensor, factor: int) -> str | None:
    """The first form (FORMS) the target runs on a map like `coarse` enlarged by `factor`, or None."""
    sample = coarse[:1]
    return next((form for form in FORMS if runs_on(target, upsampler(form, sample.shape[1], factor), [sample])), None)


def factor_between(coarse: tuple[int, ...], fine: tuple[int, ...]) -> int | None:
    """The one integer factor r >= 2 with fine == r * coarse along both sides, or None."""
    if any(c < 1 or f % c for c, f in zip(coarse, fine)):
        return None
    ratios = {f // c for c, f in zip(coarse, fine)}
    return ratios.pop() if len(ratios) == 1 and min(ratios) >= 2 else None
