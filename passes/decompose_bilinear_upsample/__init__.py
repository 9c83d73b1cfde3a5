"""decompose-bilinear-upsample (exact): bilinear upsampling, which the U55 leaves on the CPU, in the
cheapest of three exact forms the target runs.

- one-pixel (bilinear_from_one_pixel): a 1x1 map upsamples to that pixel everywhere, an expand.
- linear-maps (bilinear_as_linear_maps): bilinear resizing is separable, Y = A_h X A_w^T per
  channel, so two fully connected layers with fixed weights along width and height (the latter
  between two transposes); any sizes, scales and align_corners.
- nearest-and-box (bilinear_as_nearest_and_box): for an integer factor, nearest upsampling and a
  separable depthwise box filter, for chips with depthwise convs and resizing but no FC.

With a target, each form that applies is legalized in a trial and the one with the fewest
estimated cycles wins. On the U55-128 by Vela, 21 channels from 28x28 to 224x224: linear maps
1,687,076 cycles, nearest and box 5,199,077.
"""

from fxrewrite.passes.decompose_bilinear_upsample.linear_maps import LINEAR_MAPS_RULE
from fxrewrite.passes.decompose_bilinear_upsample.nearest_and_box import NEAREST_AND_BOX_RULE
from fxrewrite.passes.decompose_bilinear_upsample.one_pixel import ONE_PIXEL_RULE
from fxrewrite.rewrite import PatternPass, RuleSet, register

register(PatternPass(
    name="decompose-bilinear-upsample",
    summary="bilinear upsampling as an expand (1x1 maps), two fixed FC layers along width and height, or "
            "nearest upsampling and a depthwise box filter, the cheapest",
    rules=RuleSet((ONE_PIXEL_RULE, LINEAR_MAPS_RULE, NEAREST_AND_BOX_RULE)),
    produces_ops=frozenset({"upsample", "conv2d", "linear", "transpose", "cat", "slice", "expand"}),
    must_precede=("upsample-nearest-as-pixel-shuffle", "expand-constant-as-linear", "collapse-linear-convs",
                  "conv1x1-as-3x3", "decompose-large-kernel", "decompose-grouped-conv"),
))
