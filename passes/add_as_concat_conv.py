"""add-as-concat-conv (exact): a + alpha*b = conv1x1(cat([a, b], channels)) with weight [I | alpha*I].

For targets without elementwise add: output channel c sums input channel c of a and of b; every
other weight is zero, so each output is one exact multiply-add per operand. Both operands must be
NCHW tensors of the same shape. conv1x1-as-3x3 widens the 1x1 conv where the chip lacks 1x1 kernels.

When one operand is a dense, stride-1, same-padded k x k conv that feeds only the add, the add folds
into it instead: a + alpha * conv(x; W, b) = conv(cat([x, a]); [alpha W | I_c], alpha b), where I_c
puts an identity at the kernel centre, which reads a at the output position itself (conv + alpha a
is [W | alpha I_c] with bias b). One conv instead of two; the target's cost chooses between the forms.
"""

import torch

from fxrewrite.rewrite import (Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register, same_shape,
                               tensor_operands)
from fxrewrite.rewrite.building import conv2d, plain_conv_weights


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


def _centre_identity(channels: int, kernel: tuple[int, int]) -> torch.Tensor:
    eye = torch.zeros(channels, channels, *kernel)
    eye[:, :, kernel[0] // 2, kernel[1] // 2] = torch.eye(channels)
    return eye


def _into_conv(conv_side: int):
    """Fold the add into the conv that is its operand number `conv_side` (0: left, 1: right)."""
    def replace(match: Match, rewriter: Rewriter):
        add, conv = match["add"], match["conv"]
        other = add.inputs[1 - conv_side]
        if not same_shape(conv.node, other):
            return Decline("the operands differ in shape (broadcast)")
        attrs = conv.attrs
        same_padding = tuple((k - 1) // 2 for k in attrs["kernel"])
        if attrs["groups"] != 1 or attrs["stride"] != (1, 1) or any(k % 2 == 0 for k in attrs["kernel"]) \
                or attrs["padding"] != same_padding:
            return Decline("only a dense, stride-1 conv with an odd kernel and same padding takes the add in")
        weights = plain_conv_weights(conv)
        if isinstance(weights, Decline):
            return weights
        weight, bias = weights
        alpha = float(add.args.get("alpha", 1))
        scale_conv, scale_other = (1.0, alpha) if conv_side == 0 else (alpha, 1.0)
        merged = torch.cat([scale_conv * weight, scale_other * _centre_identity(attrs["out_ch"], attrs["kernel"])], 1)
        joined = rewriter.function(add.node, torch.cat, [conv.inputs[0], other], 1)
        module = conv2d(merged, None if bias is None else scale_conv * bias, padding=attrs["padding"])
        return rewriter.module(add.node, "add_conv", module, joined)

    return replace


_TENSOR_ADD = {"a tensor-tensor add": tensor_operands}

register(PatternPass(
    name="add-as-concat-conv",
    summary="residual add as channel concat + conv (a 1x1 sum, or folded into the conv it adds to)",
    rules=RuleSet((
        Rule("add", op("add", name="add", where=_TENSOR_ADD), _as_conv),
        Rule("add-into-left-conv", op("add", op("conv2d", name="conv", single_user=True), None, name="add",
                                      where=_TENSOR_ADD), _into_conv(0), priority=1),
        Rule("add-into-right-conv", op("add", None, op("conv2d", name="conv", single_user=True), name="add",
                                       where=_TENSOR_ADD), _into_conv(1), priority=1),
    )),
    produces_ops=frozenset({"cat", "conv2d"}),
    must_precede=("patch-conv-as-linear", "collapse-linear-convs", "conv1x1-as-3x3", "split-input-channels"),
))
