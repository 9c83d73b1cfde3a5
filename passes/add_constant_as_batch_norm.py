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

import torch

from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register, tensor_operands
from fxrewrite.rewrite.building import affine_as_batch_norm, constant_operand


def _as_batch_norm(match: Match, rewriter: Rewriter):
    add = match["add"]
    found = constant_operand(add)
    if isinstance(found, Decline):
        return found
    x, padded, x_first = found
    shape = add.output_shape
    alpha = float(add.args.get("alpha", 1))
    weight_scale, shift_scale = (1.0, alpha) if x_first else (alpha, 1.0)
    rank = len(shape)
    return affine_as_batch_norm(rewriter, add.node, x, shape, torch.full((1,) * rank, weight_scale), shift_scale * padded,
                                "add_bn")


register(PatternPass(
    name="add-constant-as-batch-norm",
    summary="adding a tensor made from parameters (a position embedding) as a batch norm's shift",
    rules=RuleSet((Rule("add-constant", op("add", name="add", where={"a tensor-tensor add": tensor_operands}),
                        _as_batch_norm),)),
    produces_ops=frozenset({"batch_norm", "reshape"}),
    must_precede=("batch-norm-as-conv", "fold-batch-norm"),
))
