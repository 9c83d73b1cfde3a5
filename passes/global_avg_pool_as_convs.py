"""global-avg-pool-as-convs (exact): adaptive average pooling to 1x1 as 3x3 stride-2 depthwise convs.

A depthwise 3x3 conv with padding 1, stride 2 and ones at kernel rows and columns {1, 2} sums the
2x2 block of rows {2i, 2i+1} and columns {2j, 2j+1}; blocks partition the map, and the padding row or
column a block may touch is zero, so the map's total sum is kept while each side shrinks to
ceil(n / 2). Repeating until the map is 1x1 and scaling the last conv by 1 / (H W) gives
mean(x) over H and W for every channel. `x.mean((2, 3))` is the same pool; without keepdim its
(N, C) result is the pooled map flattened.
"""

import torch

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import conv2d


def _as_convs(match: Match, rewriter: Rewriter):
    pool = match["pool"]
    pooled = _pool(match, rewriter)
    if pool.kind == "mean" and not pool.attrs["keepdim"] and not isinstance(pooled, Decline):
        return rewriter.function(pool.node, torch.flatten, pooled, 1)
    return pooled


def _pool(match: Match, rewriter: Rewriter):
    pool = match["pool"]
    shape = pool.input_shapes[0] if pool.input_shapes else None
    if shape is None or len(shape) != 4:
        return Decline("only NCHW inputs pool this way")
    channels, height, width = shape[1:]
    steps = max((height - 1).bit_length(), (width - 1).bit_length())
    if steps == 0:
        return pool.inputs[0]
    node = pool.inputs[0]
    for step in range(steps):
        weight = torch.zeros(channels, 1, 3, 3)
        weight[:, :, 1:, 1:] = 1.0 / (height * width) if step == steps - 1 else 1.0
        node = rewriter.module(pool.node, "sum_pool", conv2d(weight, None, stride=(2, 2), padding=(1, 1),
                                                            groups=channels), node)
    return node


register(PatternPass(
    name="global-avg-pool-as-convs",
    summary="adaptive average pool to 1x1 as 3x3 stride-2 depthwise summing convs",
    rules=RuleSet((Rule("global-pool", op("adaptive_avg_pool2d", name="pool",
                                          where={"pooling to 1x1": lambda v: v.attrs["output_size"] == (1, 1)}),
                        _as_convs),
                   Rule("spatial-mean", op("mean", name="pool", where={"a mean over H and W of a map": lambda v: (
                       v.attrs["dims"] == (2, 3) and len(v.input_shapes[0]) == 4)}), _as_convs))),
    produces_ops=frozenset({"conv2d", "flatten"}),
    must_precede=("collapse-linear-convs", "decompose-grouped-conv"),
))
