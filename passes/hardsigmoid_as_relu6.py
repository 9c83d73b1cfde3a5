"""hardsigmoid-as-relu6 (exact): hardsigmoid(x) = relu6(x + 3) / 6.

Two forms, and the planner keeps the cheapest one the target runs:
- scalar ops: relu6(x + 3) * (1/6), for chips with scalar add and multiply;
- for NCHW maps on chips without them: the shift and the scale as depthwise 1x1 convs,
  relu6(conv(x; w = 1, b = 3)) then conv(.; w = 1/6, b = 0); collapse-linear-convs folds the
  shift into a conv before it where that is exact and cheaper;
- for vectors and tokens on chips without them: the same as FC layers on the last dim, with
  weight I (then I/6) and bias 3 (then 0); the zero weights add exact zeros.
x + 3 is exact in float32 where torch computes it the same way; multiplying by the float32 1/6
instead of dividing by 6 differs by at most one unit in the last place.
"""

import torch
import torch.nn.functional as F

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import depthwise_1x1, linear, nchw_shape


def _with_scalar_ops(match: Match, rewriter: Rewriter):
    gate = match["gate"]
    anchor, x = gate.node, gate.inputs[0]
    shifted = rewriter.function(anchor, torch.add, x, 3.0)
    return rewriter.function(anchor, torch.mul, rewriter.function(anchor, F.relu6, shifted), 1.0 / 6.0)


def _with_convs(match: Match, rewriter: Rewriter):
    gate = match["gate"]
    shape = nchw_shape(gate)
    if isinstance(shape, Decline):
        return shape
    anchor, ones = gate.node, torch.ones(shape[1], dtype=torch.float64)
    shifted = rewriter.module(anchor, "plus_three", depthwise_1x1(ones, 3.0 * ones), gate.inputs[0])
    clamped = rewriter.function(anchor, F.relu6, shifted)
    return rewriter.module(anchor, "sixth", depthwise_1x1(ones / 6.0, None), clamped)


def _with_linears(match: Match, rewriter: Rewriter):
    gate = match["gate"]
    shape = gate.output_shape
    if shape is None or len(shape) < 2:
        return Decline("FC layers need a feature dim")
    anchor, eye = gate.node, torch.eye(shape[-1])
    shifted = rewriter.module(anchor, "plus_three", linear(eye, torch.full((shape[-1],), 3.0)), gate.inputs[0])
    return rewriter.module(anchor, "sixth", linear(eye / 6.0, None), rewriter.function(anchor, F.relu6, shifted))


register(PatternPass(
    name="hardsigmoid-as-relu6",
    summary="hardsigmoid as relu6(x + 3) / 6, with scalar ops or depthwise 1x1 convs",
    rules=RuleSet((Rule("scalar-ops", op("hardsigmoid", name="gate"), _with_scalar_ops),
                   Rule("convs", op("hardsigmoid", name="gate"), _with_convs),
                   Rule("linears", op("hardsigmoid", name="gate"), _with_linears))),
    produces_ops=frozenset({"add", "mul", "relu6", "conv2d", "linear"}),
    must_precede=("mul-constant-as-batch-norm", "add-as-concat-conv", "add-as-concat-linear", "add-constant-as-batch-norm", "collapse-linear-convs", "relu6-as-relus"),
))
