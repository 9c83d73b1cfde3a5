"""patch-conv-as-linear (exact): a k x l conv with stride (k, l) and no padding (ViT's patchify) as
an FC layer over the patches.

out[n, o, i, j] = b_o + sum_{c, u, v} W[o, c, u, v] x[n, c, k i + u, l j + v]: each output pixel is
one patch's C k l values times a row of W. So x (N, C, H, W) is reshaped to (N, C, H/k, k, W/l, l),
permuted to (N, H/k, W/l, C, k, l) and reshaped to (N, HW/(kl), C k l) (the patches as tokens); an
FC layer with weight W reshaped to (O, C k l) and bias b gives (N, HW/(kl), O), reshaped to
(N, H/k, W/l, O) and permuted back to (N, O, H/k, W/l). The same products summed in another order
(float32 rounding). Where H or W is no multiple of the patch the conv drops the remainder, which a
reshape cannot, so such a conv is declined. For chips that run FC layers and move data (reshape,
permute) but run no conv: Arch-Net's transformer students.
"""


from fxrewrite.ir import tensor_shape
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import linear, plain_conv_weights


def _as_linear(match: Match, rewriter: Rewriter):
    conv = match["conv"]
    attrs = conv.attrs
    kernel = attrs["kernel"]
    if attrs["stride"] != kernel or attrs["padding"] != (0, 0) or attrs["dilation"] != (1, 1) or attrs["groups"] != 1:
        return Decline("only a dense conv whose stride is its kernel, without padding, reads disjoint patches")
    shape = tensor_shape(conv.inputs[0])
    if shape is None or len(shape) != 4 or shape[2] % kernel[0] or shape[3] % kernel[1]:
        return Decline("the map's size is unknown or no multiple of the patch (the conv drops the remainder)")
    weights = plain_conv_weights(conv)
    if isinstance(weights, Decline):
        return weights
    weight, bias = weights
    (channels, height, width), (k, l) = shape[1:], kernel
    rows, cols = height // k, width // l
    anchor, method = conv.node, rewriter.method
    patches = method(anchor, "reshape", conv.inputs[0], -1, channels, rows, k, cols, l)
    tokens = method(anchor, "reshape", method(anchor, "permute", patches, 0, 2, 4, 1, 3, 5), -1, rows * cols,
                    channels * k * l)
    projected = rewriter.module(anchor, "patch_fc", linear(weight.reshape(weight.shape[0], -1), bias), tokens)
    grid = method(anchor, "reshape", projected, -1, rows, cols, weight.shape[0])
    return method(anchor, "permute", grid, 0, 3, 1, 2)


register(PatternPass(
    name="patch-conv-as-linear",
    summary="a conv with stride equal to its kernel (patchify) as an FC layer over the reshaped patches",
    rules=RuleSet((Rule("patch-as-fc", op("conv2d", name="conv"), _as_linear),)),
    produces_ops=frozenset({"reshape", "permute", "linear"}),
))
