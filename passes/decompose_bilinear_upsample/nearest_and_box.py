"""bilinear-as-nearest-and-box (exact): bilinear upsampling by an integer factor s
(align_corners=False) as nearest upsampling by s and a fixed separable depthwise box filter.

Along one axis, bilinear upsampling reads output i at source position c = (i + 1/2) / s - 1/2,
clamped to [0, n - 1], and mixes its two neighbours linearly. Nearest upsampling gives
u(j) = x(floor(j / s)), each sample held over s pixels; a box filter of width s run over such a
step function ramps linearly from one step to the next, which is linear interpolation, and its
centre must sit on the output pixel's centre. For odd s the box of s taps (each 1/s) is centred;
for even s the centre falls between two taps, so the box is s + 1 taps with halved ends
([1/2, 1, ..., 1, 1/2] / s), the mean of the two boxes either side. Phase p of an output pixel then
weighs its farther source by |2p + 1 - s| / 2s, bilinear's weight.

Borders: bilinear clamps c to the map, which repeats the edge pixel; so the map is padded by one
edge pixel on each side (slices and concatenation) before the nearest upsampling, which replicates
it s times, and the box reads only the r = (taps - 1) / 2 copies it needs (a slice of the
upsampled map). Height and width are filtered by a (taps x 1) and a (1 x taps) depthwise conv.
"""

import torch
from torch import fx

from fxrewrite.rewrite import Decline, Match, Rewriter, Rule, op
from fxrewrite.rewrite.building import conv2d, nchw_shape, sliced


def box_taps(factor: int) -> torch.Tensor:
    """The 1-D filter that turns nearest upsampling by `factor` into linear interpolation."""
    if factor % 2:
        return torch.full((factor,), 1.0 / factor)
    taps = torch.full((factor + 1,), 1.0 / factor)
    taps[0] = taps[-1] = 0.5 / factor
    return taps


def _factor(match: Match) -> int | Decline:
    attrs = match["up"].attrs
    if attrs["mode"] != "bilinear":
        return Decline(f"{attrs['mode']} upsampling is not bilinear")
    if attrs["align_corners"]:
        return Decline("align_corners=True samples at steps of (n - 1) / (s n - 1), which repeat with no "
                       "period, so no fixed filter reproduces them")
    scale_h, scale_w = attrs["scale"]
    if scale_h != scale_w or not isinstance(scale_h, int) or scale_h < 2:
        return Decline(f"scale {scale_h}x{scale_w}: only one integer factor on both sides is a fixed filter")
    return scale_h


def _edge_padded(rewriter: Rewriter, anchor: fx.Node, x: fx.Node, dim: int, size: int) -> fx.Node:
    """x with its first and last slice along `dim` (of `size`) repeated once: replicate padding by one."""
    first = sliced(rewriter, anchor, x, dim, 0, 1)
    last = sliced(rewriter, anchor, x, dim, size - 1, 1)
    return rewriter.function(anchor, torch.cat, [first, x, last], dim)


def _as_nearest_and_box(match: Match, rewriter: Rewriter):
    up = match["up"]
    factor, shape = _factor(match), nchw_shape(up)
    if isinstance(factor, Decline) or isinstance(shape, Decline):
        return factor if isinstance(factor, Decline) else shape
    channels, height, width = shape[1:]
    anchor, x = up.node, up.inputs[0]
    padded = _edge_padded(rewriter, anchor, _edge_padded(rewriter, anchor, x, 2, height), 3, width)
    nearest = rewriter.function(anchor, torch.nn.functional.interpolate, padded, scale_factor=factor, mode="nearest")
    taps = box_taps(factor)
    reach = len(taps) // 2
    # the upsampled map is s pixels wider on each side than the output; the box reads `reach` of them
    for dim, size in ((2, height), (3, width)):
        nearest = sliced(rewriter, anchor, nearest, dim, factor - reach, factor * size + 2 * reach)
    rows = conv2d(taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), None, groups=channels)
    columns = conv2d(taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), None, groups=channels)
    return rewriter.module(anchor, "bilinear_columns", columns,
                           rewriter.module(anchor, "bilinear_rows", rows, nearest))


NEAREST_AND_BOX_RULE = Rule("nearest-and-box", op("upsample", name="up"), _as_nearest_and_box)
