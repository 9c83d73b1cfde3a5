"""max-pool-as-depthwise-max (exact): k x k max pooling from depthwise 3x3 convs, ReLU and adds.

Each axis is pooled in turn (max over a rectangle is max over rows of max over columns). Along one
axis, the radius-1 running max of m with a = m(i - 1), b = m(i), c = m(i + 1) is

    max(a, b, c) = b + relu(max(a - b, c - b)) = b + relu((a - b) + relu(c - a)),

using max(u, v) = u + relu(v - u) with u = a - b, v = c - b, v - u = c - a. Both differences are
one depthwise 3x3 conv of m each (taps +1 and -1 along the axis), so a step is two depthwise convs,
two ReLUs and two adds, with no dense conv and no negation: on a chip with a depthwise unit it costs
a few operations per element, where the dense relu-max form costs 18 C MACs per element. A k-tap
window (k = 2r + 1) is r steps; the last one reads with the pool's stride and padding p - r + 1 on
that axis, b then being a centre-tap conv that subsamples (unless the step keeps every position).
A 1-tap axis only subsamples. Zero padding stands in for the pool's -inf padding under the
conditions of the dense form (max_pool_as_relu_max.relu_max_precondition): padding 0 or an input
made non-negative by its producer.
"""

from __future__ import annotations

import torch
from torch import fx

from fxrewrite.passes.decompose_max_pool.relu_max import running_max_rule
from fxrewrite.rewrite import Rewriter
from fxrewrite.rewrite.building import conv2d


def _taps(channels: int, axis: int, taps: dict[int, float]) -> torch.Tensor:
    """Depthwise (C, 1, 3, 3) weights with `taps` (offset -> value) along `axis` (0 rows, 1 columns)."""
    weight = torch.zeros(channels, 1, 3, 3)
    for offset, value in taps.items():
        if axis == 0:
            weight[:, 0, 1 + offset, 1] = value
        else:
            weight[:, 0, 1, 1 + offset] = value
    return weight


def _pool_axis(rewriter: Rewriter, anchor: fx.Node, m: fx.Node, channels: int, axis: int, kernel: int, stride: int,
               padding: int) -> fx.Node:
    radius = (kernel - 1) // 2

    def depthwise(name: str, source: fx.Node, taps: dict[int, float], last: bool) -> fx.Node:
        pad, steps = [1, 1], [1, 1]
        if last:
            pad[axis], steps[axis] = padding - radius + 1, stride
        layer = conv2d(_taps(channels, axis, taps), None, stride=tuple(steps), padding=tuple(pad), groups=channels)
        return rewriter.module(anchor, name, layer, source)

    fn = rewriter.function
    if radius == 0:  # only subsampling: the centre tap at the pool's stride, padding p + 1
        return m if (stride, padding) == (1, 0) else depthwise("subsample", m, {0: 1.0}, last=True)
    for step in range(radius):
        last = step == radius - 1
        left_minus_centre = depthwise("max_left", m, {-1: 1.0, 0: -1.0}, last)
        right_minus_left = depthwise("max_right", m, {1: 1.0, -1: -1.0}, last)
        centre = depthwise("max_centre", m, {0: 1.0}, last) if last and (stride, padding - radius + 1) != (1, 1) else m
        gap = fn(anchor, torch.relu, fn(anchor, torch.add, left_minus_centre,
                                        fn(anchor, torch.relu, right_minus_left)))
        m = fn(anchor, torch.add, centre, gap)
    return m


DEPTHWISE_MAX_RULE = running_max_rule("depthwise-max", _pool_axis)
