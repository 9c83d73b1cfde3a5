"""relu6-as-relus (exact): relu6(x) = relu(x) - relu(x - 6), written with convs for chips without ReLU6.

For x <= 0 both terms are 0; for 0 < x < 6 the second is 0; for x >= 6 the difference is
x - (x - 6) = 6. On NCHW tensors x - 6 is a 1x1 identity conv with bias -6, and the difference
is a 1x1 conv with weight [I | -I] over cat(relu(x), relu(x - 6)), so only conv, cat and relu
remain (conv1x1-as-3x3 widens the 1x1 convs where needed). In float32, x - 6 is exact for
x <= 12 (Sterbenz's lemma); above that the difference may be off by one ulp of x, which is below
float32 tolerance for the activations a ReLU6 sees.
"""

import torch
from torch import nn

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import conv2d


def _as_relus(match: Match, rewriter: Rewriter):
    relu6 = match["relu6"]  # hardtanh(0, 6), as ATen graphs spell it, is seen as relu6 too
    shape = relu6.output_shape
    if shape is None or len(shape) != 4:
        return Decline("only NCHW tensors: the shift by 6 and the difference are written as 1x1 convs")
    anchor, x = relu6.node, relu6.inputs[0]
    eye = torch.eye(shape[1])[:, :, None, None]
    shifted = rewriter.module(anchor, "minus_six", conv2d(eye, torch.full((shape[1],), -6.0)), x)
    low = rewriter.module(anchor, "relu", nn.ReLU(), x)
    high = rewriter.module(anchor, "relu", nn.ReLU(), shifted)
    joined = rewriter.function(anchor, torch.cat, [low, high], 1)
    return rewriter.module(anchor, "relu6_difference", conv2d(torch.cat([eye, -eye], dim=1), None), joined)


register(PatternPass(
    name="relu6-as-relus",
    summary="ReLU6 as relu(x) - relu(x - 6), with the shift and difference as 1x1 convs",
    rules=RuleSet((Rule("relu6", op("relu6", name="relu6"), _as_relus),)),
    produces_ops=frozenset({"conv2d", "cat", "relu"}),
    must_precede=("collapse-linear-convs", "conv1x1-as-3x3"),
))
