"""patch-conv-as-strided-3x3 (exact): a k x k conv with stride k (a patch embedding: ConvNeXt's and
Swin's stems, their 2x2 downsampling, ViT's patchify) as 3x3 stride-2 convs.

- k = 2: out[q] = w[0] x[2q] + w[1] x[2q + 1] per axis, floor(n / 2) outputs. A 3x3 stride-2 conv
  reads x[2q - 1 + p], ..., x[2q + 1 + p] at padding p: on an even size n, padding 1 and kernel
  (0, w[0], w[1]) give the same sums and n / 2 outputs; on an odd one, padding 0 and kernel
  (w[0], w[1], 0) give them and (n - 1) / 2 outputs. Each axis takes its own.
- k = 2m, m > 1: a 2x2 stride-2 conv with one-hot kernels copies each channel's 2x2 patch into four
  channels, z[(c, a)][p] = x_c[2p + a], then an m x m stride-m conv over z with
  W'[o, (c, a), b] = w[o, c, 2b + a] sums x_c[kq + 2b + a] over b < m, a < 2: every tap once. Sizes:
  floor(floor(n / 2) / m) = floor(n / k). Both convs are then patch convs again, down to k = 2.
Each output is the same products summed in another order (float32 rounding). Dense convs only.
"""

import torch

from fxrewrite.ir import OpView, tensor_shape
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import conv2d, plain_conv_weights


def _is_patch_conv(view: OpView) -> bool:
    kh, kw = view.attrs["kernel"]
    return (kh == kw and kh % 2 == 0 and view.attrs["stride"] == (kh, kw) and view.attrs["padding"] == (0, 0)
            and view.attrs["dilation"] == (1, 1) and view.attrs["groups"] == 1)


def _two_by_two(conv: OpView, rewriter: Rewriter, weight: torch.Tensor, bias: torch.Tensor | None):
    shape = tensor_shape(conv.inputs[0])
    if shape is None or len(shape) != 4:
        return Decline("the input is not a map of known size")
    padding = (1 - shape[2] % 2, 1 - shape[3] % 2)  # 1 on an even axis, 0 on an odd one
    wide = torch.zeros(*weight.shape[:2], 3, 3, dtype=weight.dtype)
    wide[:, :, padding[0]:padding[0] + 2, padding[1]:padding[1] + 2] = weight
    return rewriter.module(conv.node, "conv3x3_s2", conv2d(wide, bias, stride=(2, 2), padding=padding), conv.inputs[0])


def _as_strided(match: Match, rewriter: Rewriter):
    conv = match["conv"]
    chip = rewriter.target
    if chip is not None and not chip.allow_all_ops and "conv2d" not in chip.ops:
        return Decline(f"{chip.name} runs no conv at all (patch-conv-as-linear builds the FC form)")
    weights = plain_conv_weights(conv)
    if isinstance(weights, Decline):
        return weights
    weight, bias = weights
    k = weight.shape[-1]
    if k == 2:
        return _two_by_two(conv, rewriter, weight, bias)
    out_ch, in_ch, m = weight.shape[0], weight.shape[1], k // 2
    patches = torch.zeros(in_ch * 4, in_ch, 2, 2, dtype=weight.dtype)
    for c in range(in_ch):
        for a_y in range(2):
            for a_x in range(2):
                patches[c * 4 + a_y * 2 + a_x, c, a_y, a_x] = 1.0
    # W'[o, (c, a_y, a_x), b_y, b_x] = w[o, c, 2 b_y + a_y, 2 b_x + a_x]
    merged = weight.reshape(out_ch, in_ch, m, 2, m, 2).permute(0, 1, 3, 5, 2, 4).reshape(out_ch, in_ch * 4, m, m)
    gathered = rewriter.module(conv.node, "patches_2x2", conv2d(patches, None, stride=(2, 2)), conv.inputs[0])
    return rewriter.module(conv.node, "patch_conv", conv2d(merged.contiguous(), bias, stride=(m, m)), gathered)


register(PatternPass(
    name="patch-conv-as-strided-3x3",
    summary="k x k stride-k conv (a patch embedding) as 2x2 patch gathering and 3x3 stride-2 convs",
    rules=RuleSet((Rule("patch-conv", op("conv2d", name="conv", where={"a k x k stride-k conv, k even": _is_patch_conv}),
                        _as_strided),)),
    produces_ops=frozenset({"conv2d"}),
    must_precede=("patch-conv-as-linear",),
))
