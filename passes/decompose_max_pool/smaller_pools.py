"""max-pool-as-smaller-pools (exact): a k x k max pool (odd k = 2r + 1 >= 5) as r stacked 3x3 max pools.

Max pooling pads with -inf, so a 3x3 stride-1 pool with padding 1 maps x to its radius-1 running
max M_1(i) = max x[i - 1 .. i + 1] over the pixels inside the map, and r - 1 of them give
M_(r-1)(i) = max x[i - r + 1 .. i + r - 1]. A last 3x3 pool with the original stride s and padding
p' = p - r + 1 reads M_(r-1) at s q - p' .. s q - p' + 2, whose union is x[s q - p .. s q - p + 2r]:
the original window, clipped to the map in both. Border taps of the last pool that fall outside
M_(r-1) hold -inf, and the pixels they would have covered are covered by the tap beside them, so
the result is exact for any input, signs included. Needs p >= r - 1 (p' >= 0) and, for ceil mode,
the same output size both ways (checked). YOLO's SPPF pools 5x5 at stride 1 this way on chips
whose pooling unit stops at 3x3.
"""

from __future__ import annotations

from torch import nn

from fxrewrite.rewrite import Decline, Match, Rewriter, Rule, op
from fxrewrite.rewrite.building import nchw_shape


def pooled_length(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """Output length of a max pool along one axis, by PyTorch's rule (a ceil-mode window must start inside the map
    or its left padding)."""
    length = (size + 2 * padding - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    return length - 1 if ceil_mode and (length - 1) * stride >= size + padding else length


def _as_smaller_pools(match: Match, rewriter: Rewriter):
    pool = match["pool"]
    attrs = pool.attrs
    shape = nchw_shape(pool)
    if isinstance(shape, Decline):
        return shape
    kernel, stride, padding, ceil_mode = attrs["kernel"], attrs["stride"], attrs["padding"], attrs["ceil_mode"]
    if attrs.get("dilation", (1, 1)) != (1, 1):
        return Decline("dilated pools are not expressed")
    if kernel[0] != kernel[1] or kernel[0] % 2 == 0 or kernel[0] < 5:
        return Decline(f"kernel {kernel}: only square odd kernels of 5 and more stack as 3x3 pools")
    radius = kernel[0] // 2
    last_padding = tuple(p - radius + 1 for p in padding)
    if min(last_padding) < 0 or max(last_padding) > 1:
        return Decline(f"padding {padding}: the last 3x3 pool would pad {last_padding}, outside 0..1")
    for size, s, p, q in zip(shape[2:], stride, padding, last_padding):
        if pooled_length(size, kernel[0], s, p, ceil_mode) != pooled_length(size, 3, s, q, ceil_mode):
            return Decline("ceil mode gives the stack another output size than the pool")
    node = pool.inputs[0]
    for _ in range(radius - 1):
        node = rewriter.module(pool.node, "running_max", nn.MaxPool2d(3, 1, 1), node)
    return rewriter.module(pool.node, "pool", nn.MaxPool2d(3, stride, last_padding, ceil_mode=ceil_mode), node)


SMALLER_POOLS_RULE = Rule("smaller-pools", op("max_pool2d", name="pool"), _as_smaller_pools)
