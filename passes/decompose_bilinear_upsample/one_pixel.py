"""bilinear-from-one-pixel (exact): bilinear upsampling of a 1x1 map is that pixel everywhere.

Every output position's source coordinate is clamped to the only pixel, so both interpolation
weights fall on it and sum to one: an expand. DeepLabV3's pooled ASPP branch does this.
"""

from fxrewrite.rewrite import Decline, Match, Rewriter, Rule, op
from fxrewrite.rewrite.building import nchw_shape


def _as_expand(match: Match, rewriter: Rewriter):
    up = match["up"]
    shape = nchw_shape(up)
    if isinstance(shape, Decline):
        return shape
    if up.attrs["mode"] != "bilinear" or tuple(shape[2:]) != (1, 1):
        return Decline("only a bilinear upsampling of a 1x1 map is a constant map")
    # -1 keeps the batch free: a graph captured at batch 1 runs calibration batches
    return rewriter.method(up.node, "expand", up.inputs[0], -1, *up.output_shape[1:])


ONE_PIXEL_RULE = Rule("one-pixel", op("upsample", name="up"), _as_expand, priority=1)
