"""add-as-concat-linear (exact): on tokens or vectors, a + alpha*b = linear(cat([a, b], -1)) with weight [I | alpha*I].

The FC-layer counterpart of add-as-concat-conv, for targets without elementwise add whose data are
tokens (N, L, D) or vectors (N, F) rather than NCHW maps (Arch-Net's translation students merge a
residual through concat + FC): output feature f sums feature f of a and of b, every other weight is
zero, so each output is one exact multiply-add per operand. Both operands must have the same shape.

When one operand is an FC layer that feeds only the add, the add folds into it instead:
a + alpha * linear(h; W, c) = linear(cat([h, a], -1); [alpha W | I], alpha c): one FC layer of
D_h + D inputs instead of two.
"""

import torch

from fxrewrite.rewrite import (Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register, same_shape,
                               tensor_operands)
from fxrewrite.rewrite.building import conv_weights, linear


def _token_shape(add) -> tuple[int, ...] | Decline:
    left, right = add.inputs
    if not same_shape(left, right):
        return Decline("the operands differ in shape (broadcast); only same-shape adds become FC layers")
    shape = add.output_shape
    if shape is None or len(shape) not in (2, 3):
        return Decline("only tokens (N, L, D) and vectors (N, F) are concatenated on features (maps: add-as-concat-conv)")
    return shape


def _as_linear(match: Match, rewriter: Rewriter):
    add = match["add"]
    shape = _token_shape(add)
    if isinstance(shape, Decline):
        return shape
    eye = torch.eye(shape[-1])
    weight = torch.cat([eye, float(add.args.get("alpha", 1)) * eye], dim=1)
    joined = rewriter.function(add.node, torch.cat, list(add.inputs), -1)
    return rewriter.module(add.node, "add_fc", linear(weight, None), joined)


def _into_linear(linear_side: int):
    def replace(match: Match, rewriter: Rewriter):
        add, fc = match["add"], match["fc"]
        shape = _token_shape(add)
        if isinstance(shape, Decline):
            return shape
        weights = conv_weights(fc)
        if isinstance(weights, Decline):
            return weights
        weight, bias = weights
        alpha = float(add.args.get("alpha", 1))
        # the sum is other + alpha * fc when the FC is the right operand, fc + alpha * other when the left
        scale_fc, scale_other = (alpha, 1.0) if linear_side == 1 else (1.0, alpha)
        other = add.inputs[1 - linear_side]
        merged = torch.cat([scale_fc * weight, scale_other * torch.eye(shape[-1])], dim=1)
        joined = rewriter.function(add.node, torch.cat, [fc.inputs[0], other], -1)
        return rewriter.module(add.node, "add_fc", linear(merged, None if bias is None else scale_fc * bias), joined)

    return replace


_TENSOR_ADD = {"a tensor-tensor add": tensor_operands}

register(PatternPass(
    name="add-as-concat-linear",
    summary="residual add of tokens or vectors as feature concat + FC (an identity sum, or folded into the FC it adds to)",
    rules=RuleSet((
        Rule("add", op("add", name="add", where=_TENSOR_ADD), _as_linear),
        Rule("add-into-left-linear", op("add", op("linear", name="fc", single_user=True), None, name="add",
                                        where=_TENSOR_ADD), _into_linear(0), priority=1),
        Rule("add-into-right-linear", op("add", None, op("linear", name="fc", single_user=True), name="add",
                                         where=_TENSOR_ADD), _into_linear(1), priority=1),
    )),
    produces_ops=frozenset({"cat", "linear"}),
))
