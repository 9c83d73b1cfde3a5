"""mul-constant-as-batch-norm (exact): x * c, with c a constant (a layer scale, a fitted norm's
scale), is an inference batch norm.

bn(x)_f = (x_f - m_f) / sqrt(v_f + eps) * w_f + b_f with m = 0, v = 1, eps = 0, w = c and b = 0 is
x_f * c_f: one multiply per element, exact in float; a product with a number (Swin's attention
scale, q * d^-1/2) is one with c that number for every channel. Where c holds one value per
channel (ConvNeXt's layer scale, (C, 1, 1) times a map) or one value, the batch norm runs over x's
channels and a conv before it can fold it in (fold-batch-norm); otherwise (a scale along the last
dim of tokens) x is reshaped to (N, F) with F the product of its dims past the batch, c broadcast
to that shape and flattened into the weight, and the result reshaped back, as
add-constant-as-batch-norm does for shifts. For chips that run batch norm but no elementwise
multiply (Arch-Net's sets).
"""

import torch

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register, tensor_operands
from fxrewrite.rewrite.building import affine_as_batch_norm, constant_operand


def _as_batch_norm(match: Match, rewriter: Rewriter):
    mul = match["mul"]
    found = constant_operand(mul)
    if isinstance(found, Decline):
        return found
    x, padded, _ = found
    shape = mul.output_shape
    return affine_as_batch_norm(rewriter, mul.node, x, shape, padded, torch.zeros((1,) * len(shape)), "mul_bn")


def _scalar_as_batch_norm(match: Match, rewriter: Rewriter):
    mul = match["mul"]
    scalars = [v for v in (mul.args.get("input"), mul.args.get("other")) if isinstance(v, (int, float))]
    shape = mul.output_shape
    if len(scalars) != 1 or len(mul.inputs) != 1 or shape is None or len(shape) < 2:
        return Decline("only a tensor of rank 2 or more times one number becomes a batch norm")
    rank = len(shape)
    return affine_as_batch_norm(rewriter, mul.node, mul.inputs[0], shape, torch.full((1,) * rank, float(scalars[0])),
                                torch.zeros((1,) * rank), "mul_bn")


register(PatternPass(
    name="mul-constant-as-batch-norm",
    summary="multiplying by a per-channel constant (a layer scale) as a batch norm's weight",
    rules=RuleSet((Rule("mul-constant", op("mul", name="mul", where={"a tensor-tensor product": tensor_operands}),
                        _as_batch_norm),
                   Rule("mul-number", op("mul", name="mul", where={
                       "a product with a number": lambda v: v.attrs["operands"] == "scalar"}), _scalar_as_batch_norm))),
    produces_ops=frozenset({"batch_norm", "reshape"}),
    must_precede=("batch-norm-as-conv", "fold-batch-norm"),
))
