"""decompose-large-kernel (exact): a k x k conv (k = 2m + 1 >= 5) as 3x3 convs, in the cheaper of two forms.

The partial-sums form (large_kernel_as_partial_sums) keeps the conv's grouping; this module's
shift-first form is a stack of m 3x3 convs:

Let x~ be x zero-padded by the original padding P. Layer 1 (3x3, padding P, groups C_in) copies each
input channel into 9 shifted channels, y_1,d(p) = x~(p + 1 + d) for d in {-1, 0, 1}^2. Layer j
(3x3, no padding, groups C_in) widens the shift grid by one: y_j,o(p) = y_j-1,i(p + 1 + e) =
x~(p + j + o) for o in {-j..j}^2, with i = clamp(o, -(j-1), j-1) and e = o - i, so each shift is
built exactly once. The last layer (3x3, no padding, the original stride and groups) applies the
weights: out(q) = sum_t W(t) y_m-1,i(s q + 1 + e) = sum_t W(t) x~(s q + m + t) with t = i + e,
which is the original conv at every output pixel, borders included, because all zero padding is
applied once, to the input. Where the original padding P >= m, layer 1 pads P - m + 1 and every
later layer pads 1 instead (so no layer pads more than a 3x3 conv needs): the clamp split gives i and
e the same sign, so a tap read from a later layer's zero border, p + e outside the map, would have
read x at p + e + i, further outside, which is zero too. Rectangular odd kernels are first embedded in a square one with zero
taps (padding grows by the same amount). Cost: the shift layers carry (2j + 1)^2 C_in channels.
"""

import torch

from fxrewrite.cost import node_macs, nodes_macs
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, register
from fxrewrite.passes.decompose_large_kernel.partial_sums import PARTIAL_SUMS_RULE
from fxrewrite.rewrite.building import LARGE_KERNEL_CONV, conv2d, odd_square_conv


def _offsets(radius: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]


def _split(offset: tuple[int, int], inner: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """offset = i + e with i in the radius-`inner` grid and e in {-1, 0, 1}^2."""
    i = tuple(max(-inner, min(inner, o)) for o in offset)
    return i, (offset[0] - i[0], offset[1] - i[1])


def _shift_layer(channels: int, radius: int) -> torch.Tensor:
    """Weights (channels * S_r, S_(r-1), 3, 3) taking the radius r-1 shift grid to radius r."""
    inner = {o: k for k, o in enumerate(_offsets(radius - 1))}
    outer = _offsets(radius)
    per_channel = torch.zeros(len(outer), len(inner), 3, 3)
    for k, o in enumerate(outer):
        i, e = _split(o, radius - 1)
        per_channel[k, inner[i], 1 + e[0], 1 + e[1]] = 1.0
    return per_channel.repeat(channels, 1, 1, 1)


def _final_layer(weight: torch.Tensor, m: int, groups: int) -> torch.Tensor:
    """Weights (O, (I/g) * S_(m-1), 3, 3) applying the k x k kernel to the radius m-1 shift grid."""
    out_ch, in_per_group = weight.shape[:2]
    inner = {o: k for k, o in enumerate(_offsets(m - 1))}
    final = torch.zeros(out_ch, in_per_group * len(inner), 3, 3, dtype=weight.dtype)
    for t in _offsets(m):
        i, e = _split(t, m - 1)
        columns = torch.arange(in_per_group) * len(inner) + inner[i]
        final[:, columns, 1 + e[0], 1 + e[1]] = weight[:, :, m + t[0], m + t[1]]
    return final


def _decompose(match: Match, rewriter: Rewriter):
    conv = match["conv"]
    squared = odd_square_conv(conv, "decompose into 3x3 stacks")
    if isinstance(squared, Decline):
        return squared
    square, bias, padding = squared
    kh, kw = conv.attrs["kernel"]
    m = (square.shape[-1] - 1) // 2
    first = tuple(p - m + 1 if p >= m else p for p in padding)
    later = tuple(1 if p >= m else 0 for p in padding)
    in_ch, groups = conv.attrs["in_ch"], conv.attrs["groups"]
    node = rewriter.module(conv.node, "shift", conv2d(_shift_layer(in_ch, 1), None, padding=first, groups=in_ch),
                           conv.inputs[0])
    for radius in range(2, m):
        node = rewriter.module(conv.node, "shift", conv2d(_shift_layer(in_ch, radius), None, padding=later,
                                                          groups=in_ch), node)
    final = conv2d(_final_layer(square, m, groups), bias, stride=conv.attrs["stride"], padding=later, groups=groups)
    node = rewriter.module(conv.node, "taps", final, node)
    rewriter.notes.append(f"{conv.node.name}: {kh}x{kw} -> {m} 3x3 convs, MACs {node_macs(conv)} -> "
                          f"{nodes_macs(rewriter.created)}")
    return node


register(PatternPass(
    name="decompose-large-kernel",
    summary="k x k conv (odd k >= 5) as exact 3x3 convs: shift-first stack or partial sums, the cheaper",
    rules=RuleSet((Rule("shift-first", LARGE_KERNEL_CONV, _decompose, priority=1), PARTIAL_SUMS_RULE)),
    produces_ops=frozenset({"conv2d"}),
    must_precede=("decompose-grouped-conv",),
))
