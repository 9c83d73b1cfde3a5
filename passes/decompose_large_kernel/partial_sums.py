"""The partial-sums form of a large kernel (exact): a k x k conv as a sum of 3x3 convs on shifted inputs.

Let x~ be x zero-padded by the original padding P and, per spatial axis, out(q) = sum_{j<k} W(j) x~(s q + j).
Split the taps into windows of three starting at d in D = {0, 3, 6, ..} (the last one moved back
to k - 3; a tap two windows share goes to the first). Then out(q) = sum_d sum_{e<3} W_d(e) y_d(s q + e)
with y_d(p) = x~(p + d): each window is a valid 3x3 conv (stride s, the original groups) of a
shifted copy of x~. The copies are made by m - 1 = (k - 3) / 2 valid 3x3 one-hot depthwise convs,
each moving by 0, 1 or 2 (so every copy has the extent of x~ less k - 3, whatever its shift, and
copies sharing a first move share that layer). Padding: x~ is never read outside its extent, so
its zero border may come from anywhere: the first shift layer pads min(P, 1) and 1x1 identity
depthwise convs pad the rest, one pixel per layer, before it. Rectangular odd kernels are first
embedded in a square one with zero taps. Cost: |D|^2 3x3 convs at the original width plus cheap
depthwise shifts, so a depthwise conv stays depthwise (against dense shift layers in the
shift-first form), and a dense 5x5 costs 36 MACs per tap position pair against 81 shift-first.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

from fxrewrite.cost import node_macs, nodes_macs
from fxrewrite.rewrite import Decline, Match, Rewriter, Rule
from fxrewrite.rewrite.building import LARGE_KERNEL_CONV, conv2d, odd_square_conv


def window_starts(k: int) -> list[int]:
    """Starts of the 3-tap windows covering taps 0..k-1."""
    return sorted({min(start, k - 3) for start in range(0, k, 3)})


def _moves(shift: int, layers: int) -> tuple[int, ...]:
    """A shift of `shift` pixels as `layers` moves of 0..2, largest first (so copies share prefixes)."""
    moves = []
    for _ in range(layers):
        moves.append(min(2, shift))
        shift -= moves[-1]
    return tuple(moves)


def _one_hot_depthwise(channels: int, move: tuple[int, int], padding: tuple[int, int]):
    kernel = torch.zeros(channels, 1, 3, 3)
    kernel[:, 0, move[0], move[1]] = 1.0
    return conv2d(kernel, None, padding=padding, groups=channels)


def _padded(conv, rewriter: Rewriter, padding: tuple[int, int]) -> tuple[fx.Node, tuple[int, int]]:
    """x with all but min(P, 1) of its zero border added by 1x1 identity convs; the rest for the first shift."""
    channels = conv.attrs["in_ch"]
    node = conv.inputs[0]
    remaining = [max(p - 1, 0) for p in padding]
    while any(remaining):
        step = tuple(1 if r else 0 for r in remaining)
        identity = conv2d(torch.ones(channels, 1, 1, 1), None, padding=step, groups=channels)
        node = rewriter.module(conv.node, "pad", identity, node)
        remaining = [r - s for r, s in zip(remaining, step)]
    return node, tuple(min(p, 1) for p in padding)


def _partial_sums(match: Match, rewriter: Rewriter):
    conv = match["conv"]
    squared = odd_square_conv(conv, "split into 3x3 windows")
    if isinstance(squared, Decline):
        return squared
    weight, bias, padding = squared
    kh, kw = conv.attrs["kernel"]
    k = weight.shape[-1]
    layers = (k - 3) // 2
    source, first_padding = _padded(conv, rewriter, padding)
    copies: dict[tuple[tuple[int, int], ...], fx.Node] = {(): source}

    def shifted(path: tuple[tuple[int, int], ...]) -> fx.Node:
        if path not in copies:
            pad = first_padding if len(path) == 1 else (0, 0)
            layer = _one_hot_depthwise(conv.attrs["in_ch"], path[-1], pad)
            copies[path] = rewriter.module(conv.node, "shift", layer, shifted(path[:-1]))
        return copies[path]

    taken = torch.zeros(k, k, dtype=torch.bool)
    total = None
    for dy in window_starts(k):
        for dx in window_starts(k):
            mask = torch.zeros(k, k, dtype=torch.bool)
            mask[dy:dy + 3, dx:dx + 3] = True
            mask &= ~taken
            taken |= mask
            part = (weight * mask)[:, :, dy:dy + 3, dx:dx + 3]
            path = tuple(zip(_moves(dy, layers), _moves(dx, layers)))
            window = conv2d(part, bias if total is None else None, stride=conv.attrs["stride"],
                            groups=conv.attrs["groups"])
            node = rewriter.module(conv.node, "window", window, shifted(path))
            total = node if total is None else rewriter.function(conv.node, operator.add, total, node)
    rewriter.notes.append(f"{conv.node.name}: {kh}x{kw} -> {len(window_starts(k)) ** 2} 3x3 windows on shifted "
                          f"copies, MACs {node_macs(conv)} -> {nodes_macs(rewriter.created)}")
    return total


#: the rule decompose-large-kernel weighs against its shift-first form
PARTIAL_SUMS_RULE = Rule("partial-sums", LARGE_KERNEL_CONV, _partial_sums)
