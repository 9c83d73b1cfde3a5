"""add-constant-as-batch-norm (exact): x + alpha * c, or c + alpha * x, with c made from parameters
alone (a position embedding, a learned offset), is an inference batch norm.

bn(y)_f = (y_f - m_f) / sqrt(v_f + eps) * w_f + b_f with running mean m = 0, running variance v = 1
and eps = 0 is y_f * w_f + b_f; w = 1 and b = alpha c gives x + alpha c, w = alpha and b = c gives
c + alpha x: one multiply and one add per element, exact in float. Where c holds one value per
channel (shape (1, C) or (1, C, 1, ...) against x of rank 2 to 4), the batch norm runs over x's
channels directly; otherwise x is reshaped to (N, F) with F the product of its dims past the batch,
c is broadcast to that shape and flattened into the shift, and the result is reshaped back. For
chips that run batch norm but no elementwise add, as Arch-Net's translation students do (position
embeddings added through a legal op); c is evaluated once, so the table it came from is no longer read.
"""

import math

import torch
from torch import nn

from fxrewrite.ir import tensor_shape
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import computed_constant
from fxrewrite.rewrite.pattern import reads_an_input

_NORMS = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}


def _affine(features: int, weight: torch.Tensor, shift: torch.Tensor, norm: type[nn.Module]) -> nn.Module:
    layer = norm(features, eps=0.0)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(shift)
        layer.running_mean.zero_()
        layer.running_var.fill_(1.0)
    return layer.eval()


def _as_batch_norm(match: Match, rewriter: Rewriter):
    add = match["add"]
    left, right = add.inputs
    reads = [reads_an_input(left), reads_an_input(right)]
    if reads != [True, False] and reads != [False, True]:
        return Decline("neither operand, or both, is made from parameters alone")
    x, c_node = (left, right) if reads[0] else (right, left)
    c, shape = computed_constant(c_node), add.output_shape
    if c is None or shape is None or len(shape) < 2 or not c.is_floating_point():
        return Decline("the constant operand is not a floating-point tensor, or the shape is unknown")
    if tensor_shape(x) != tuple(shape):
        return Decline("the input operand is broadcast; only the constant may be")
    padded = c.reshape((1,) * (len(shape) - c.dim()) + tuple(c.shape))
    if padded.shape[0] != 1:
        return Decline("the constant varies along the batch")
    alpha = float(add.args.get("alpha", 1))
    weight_scale, shift_scale = (1.0, alpha) if reads[0] else (alpha, 1.0)
    channels = shape[1]
    if len(shape) in _NORMS and padded.numel() == channels and padded.shape[1] == channels:
        norm = _affine(channels, torch.full((channels,), weight_scale), shift_scale * padded.flatten(),
                       _NORMS[len(shape)])
        return rewriter.module(add.node, "add_bn", norm, x)
    features = math.prod(shape[1:])
    shift = shift_scale * padded.expand(1, *shape[1:]).reshape(features)
    flat = rewriter.method(add.node, "reshape", x, -1, features)
    norm = rewriter.module(add.node, "add_bn", _affine(features, torch.full((features,), weight_scale), shift,
                                                      nn.BatchNorm1d), flat)
    return rewriter.method(add.node, "reshape", norm, -1, *shape[1:])


register(PatternPass(
    name="add-constant-as-batch-norm",
    summary="adding a tensor made from parameters (a position embedding) as a batch norm's shift",
    rules=RuleSet((Rule("add-constant", op("add", name="add", where={
        "a tensor-tensor add": lambda v: v.attrs["operands"] == "tensor"}), _as_batch_norm),)),
    produces_ops=frozenset({"batch_norm", "reshape"}),
    must_precede=("batch-norm-as-conv", "fold-batch-norm"),
))
