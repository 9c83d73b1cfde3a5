"""add-as-concat-conv (exact): a + alpha*b = conv1x1(cat([a, b], channels)) with weight [I | alpha*I].

For targets without elementwise add: output channel c sums input channel c of a and of b; every
other weight is zero, so each output is one exact multiply-add per operand. Both operands must be
NCHW tensors of the same shape. conv1x1-as-3x3 widens the 1x1 conv where the chip lacks 1x1 kernels.
"""

import torch

from fxrewrite.layers import conv2d
from fxrewrite.pattern import Decline, Match, Rewriter, Rule, RuleSet, op, same_shape
from fxrewrite.pipeline import PatternPass, register


def _as_conv(match: Match, rewriter: Rewriter):
    add = match["add"]
    left, right = add.inputs
    if not same_shape(left, right):
        return Decline("the operands differ in shape (broadcast); only same-shape adds become convs")
    shape = add.output_shape
    if shape is None or len(shape) != 4:
        return Decline("only 4-D (NCHW) operands can be concatenated on channels")
    channels = shape[1]
    eye = torch.eye(channels)
    weight = torch.cat([eye, float(add.args.get("alpha", 1)) * eye], dim=1)[:, :, None, None]
    joined = rewriter.function(add.node, torch.cat, [left, right], 1)
    return rewriter.module(add.node, "add_conv", conv2d(weight, None), joined)


register(PatternPass(
    name="add-as-concat-conv",
    summary="residual add as channel concat + 1x1 conv",
    rules=RuleSet((Rule("add", op("add", name="add", where={"a tensor-tensor add": lambda v: v.attrs["operands"] == "tensor"}),
                        _as_conv),)),
    produces_ops=frozenset({"cat", "conv2d"}),
    must_precede=("conv1x1-as-3x3",),
))
