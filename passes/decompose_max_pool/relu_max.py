"""max-pool-as-relu-max (exact): k x k max pooling from dense convs, ReLU and concat, via max(a, b) = a + relu(b - a).

Max over a rectangle is max over rows of max over columns, so each axis is pooled in turn. Along
one axis, a radius-1 running max m'(i) = max(m(i - 1), m(i), m(i + 1)) takes two steps
u <- u + relu(m(i + d) - u), d = -1, +1, starting from u = m: the difference is a 3x3 conv over
cat(m, u) with weight [S_d | -I] (S_d reads channel c at offset d), the sum a conv over cat(u, r)
with weight [I | I]. A k-tap window (k = 2r + 1) is r radius-1 maxes; a 1-tap axis only subsamples. The last sum conv of an axis
also picks the pooled positions: a 3x3 conv with only its centre tap, stride s and padding
p - r + 1 on that axis reads the running max at s q + r - p, the centre of output q's window, and
its output size (n + 2p - k) / s + 1 is the pool's.

Border: the convs read zeros outside the map, where the pool ignores those positions (-inf
padding). The two agree when x >= 0 (the window always holds a real pixel, and its max is >= 0),
so the pass needs padding 0 or an input made non-negative by its producer (ReLU, ReLU6, sigmoid).
Needs odd kernels, dilation 1, floor rounding and p >= r - 1.
"""

from collections.abc import Callable

import torch
from torch import fx

from fxrewrite.ir import OpView, op_view
from fxrewrite.rewrite import Decline, Match, Rewriter, Rule, op
from fxrewrite.rewrite.building import conv2d, nchw_shape

NON_NEGATIVE_PRODUCERS = frozenset({"relu", "relu6", "sigmoid", "hardsigmoid"})


def _tap(channels: int, axis: int, offset: int) -> torch.Tensor:
    """A (C, C, 3, 3) identity reading each channel at `offset` along `axis` (0 rows, 1 columns)."""
    weight = torch.zeros(channels, channels, 3, 3)
    row, column = (1 + offset, 1) if axis == 0 else (1, 1 + offset)
    weight[:, :, row, column] = torch.eye(channels)
    return weight


def _pool_axis(rewriter: Rewriter, anchor, x, channels: int, axis: int, kernel: int, stride: int, padding: int):
    radius = (kernel - 1) // 2
    eye = _tap(channels, axis, 0)
    running = x
    for iteration in range(radius):
        source, u = running, running
        for step, offset in enumerate((-1, 1)):
            diff = rewriter.module(anchor, "max_diff", conv2d(torch.cat([_tap(channels, axis, offset), -eye], 1), None,
                                                           padding=(1, 1)), rewriter.function(anchor, torch.cat, [source, u], 1))
            gap = rewriter.function(anchor, torch.relu, diff)
            last = iteration == radius - 1 and step == 1
            pad, steps = [1, 1], [1, 1]
            if last:
                pad[axis], steps[axis] = padding - radius + 1, stride
            summed = conv2d(torch.cat([eye, eye], 1), None, stride=tuple(steps), padding=tuple(pad))
            u = rewriter.module(anchor, "max_sum", summed, rewriter.function(anchor, torch.cat, [u, gap], 1))
        running = u
    if radius == 0 and (stride, padding) != (1, 0):
        pad, steps = [1, 1], [1, 1]
        pad[axis], steps[axis] = padding + 1, stride
        running = rewriter.module(anchor, "subsample", conv2d(eye, None, stride=tuple(steps), padding=tuple(pad)), x)
    return running


def relu_max_precondition(pool: OpView) -> tuple[int, ...] | Decline:
    """The pool's NCHW shape when a running-max form with zero-padded convs is exact for it (see the
    module docstring; the depthwise form shares these conditions), else why not."""
    attrs = pool.attrs
    shape = nchw_shape(pool)
    if isinstance(shape, Decline):
        return shape
    if attrs["ceil_mode"] or attrs.get("dilation", (1, 1)) != (1, 1):
        return Decline("ceil_mode and dilation are not expressed; only floor rounding and dilation 1")
    if any(k % 2 == 0 for k in attrs["kernel"]):
        return Decline(f"kernel {attrs['kernel']}: only odd kernels have a centre tap to subsample at")
    if any(p < (k - 1) // 2 - 1 for k, p in zip(attrs["kernel"], attrs["padding"])):
        return Decline("padding below (k - 1) / 2 - 1 would need a subsampling conv larger than 3x3")
    producer = pool.inputs[0]
    if any(attrs["padding"]) and op_view(producer).kind not in NON_NEGATIVE_PRODUCERS:
        return Decline(f"its input comes from {op_view(producer).kind}, not from ReLU/ReLU6/sigmoid, so it may be "
                       "negative, and zero padding would change the max at the border")
    return shape


PoolAxis = Callable[[Rewriter, fx.Node, fx.Node, int, int, int, int, int], fx.Node]


def running_max_rule(name: str, pool_axis: PoolAxis, priority: int = 0) -> Rule:
    """A rule pooling each axis in turn, columns then rows, with `pool_axis(rewriter, anchor, x,
    channels, axis, kernel, stride, padding)`, where relu_max_precondition holds."""

    def replace(match: Match, rewriter: Rewriter):
        pool = match["pool"]
        shape = relu_max_precondition(pool)
        if isinstance(shape, Decline):
            return shape
        attrs = pool.attrs
        node = pool.inputs[0]
        for axis in (1, 0):
            node = pool_axis(rewriter, pool.node, node, shape[1], axis, attrs["kernel"][axis], attrs["stride"][axis],
                             attrs["padding"][axis])
        return node

    return Rule(name, op("max_pool2d", name="pool"), replace, priority)


RELU_MAX_RULE = running_max_rule("relu-max", _pool_axis, priority=1)
