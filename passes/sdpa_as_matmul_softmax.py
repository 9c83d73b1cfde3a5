"""sdpa-as-matmul-softmax (exact): attention from its two products, its mask and a softmax.

scaled_dot_product_attention(q, k, v, mask) = softmax((s q) k^T + B) v along the last dim, with s the
given scale or 1/sqrt(d) for q of last dim d, and B the mask as torch applies it: an additive float mask
as it is; a boolean mask as 0 where it keeps a key and -inf where it drops one; causal attention as the
boolean lower triangle of the (L, S) scores. A mask made from parameters alone (a causal triangle, a
fixed pattern) becomes one constant added to the scores, its -inf written as float32's lowest value:
exp of it after the softmax's shift is 0 as exp(-inf) is, so a row that keeps any key is unchanged, and
a row that keeps none (torch gives NaN there) is declined. A mask read from an input (key padding) is
added as it is, or selected with torch.where for a boolean one, -inf included. What torch computes
without dropout, up to float32 rounding of the order of operations. The scale multiplies q, the
smaller of q and the scores wherever d < L, as a constant tensor, so chips without elementwise multiply
take it as a batch norm (mul-constant-as-batch-norm), as they take the constant mask
(add-constant-as-batch-norm). For chips that declare matmul and softmax but no fused attention, as
Arch-Net's transformer students keep q, k, v, the products and the softmax.
"""

import math

import torch
from torch import fx

from fxrewrite.ir import tensor_shape
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import computed_constant

#: what a dropped key adds to its score in a constant mask: float32's lowest value, finite for batch norms
DROPPED = torch.finfo(torch.float32).min


def _constant_bias(mask: torch.Tensor, scores: tuple[int, ...]) -> torch.Tensor | Decline:
    """The additive form of a constant mask broadcast to the `scores` shape."""
    bias = torch.zeros(()).masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else mask.float()
    if bool(torch.isneginf(torch.broadcast_to(bias, scores)).all(dim=-1).any()):
        return Decline("the mask drops every key of some query, whose attention torch gives as NaN")
    return bias.clamp_min(DROPPED)


def _mask_applied(attention, rewriter: Rewriter, scores: fx.Node, shape: tuple[int, ...]) -> fx.Node | Decline:
    """`scores` with the attention's mask or causality applied (the module docstring's B)."""
    anchor, fn = attention.node, rewriter.function
    if attention.attrs["causal"]:
        mask = torch.ones(shape[-2:], dtype=torch.bool).tril()
    else:
        node = attention.args["attn_mask"]
        mask = computed_constant(node)
        if mask is None:  # read from an input: applied as torch applies it
            dtype = getattr(node.meta.get("val", node.meta.get("tensor_meta")), "dtype", None)
            if dtype is None:
                return Decline("the mask's dtype is unknown")
            if dtype != torch.bool:
                return fn(anchor, torch.add, scores, node)
            return fn(anchor, torch.where, node, scores, rewriter.constant(anchor, "dropped", torch.tensor(-math.inf)))
    bias = _constant_bias(mask, shape)
    if isinstance(bias, Decline):
        return bias
    return fn(anchor, torch.add, scores, rewriter.constant(anchor, "attention_mask", bias))


def _as_products(match: Match, rewriter: Rewriter):
    attention = match["attention"]
    if float(attention.args.get("dropout_p") or 0.0) != 0.0 or attention.args.get("enable_gqa"):
        return Decline("dropout and grouped-query attention are not the plain products")
    query, key, value = attention.inputs[:3]
    shape = tensor_shape(query)
    if shape is None or tensor_shape(key) is None or len(shape) < 2 or tensor_shape(key)[-2] != tensor_shape(value)[-2]:
        return Decline("the shapes of q, k and v are unknown or do not pair")
    scale = attention.args.get("scale")
    scale = 1.0 / math.sqrt(shape[-1]) if scale is None else float(scale)
    anchor, fn = attention.node, rewriter.function
    scaled = fn(anchor, torch.mul, query, rewriter.constant(anchor, "attention_scale", torch.tensor(scale)))
    scores = fn(anchor, torch.matmul, scaled, fn(anchor, torch.transpose, key, -2, -1))
    if attention.attrs["causal"] or attention.attrs["masked"]:
        scores = _mask_applied(attention, rewriter, scores, tuple(shape[:-1]) + (tensor_shape(key)[-2],))
        if isinstance(scores, Decline):
            return scores
    return fn(anchor, torch.matmul, fn(anchor, torch.softmax, scores, -1), value)


register(PatternPass(
    name="sdpa-as-matmul-softmax",
    summary="scaled dot-product attention as softmax(s q k^T + mask) v: two matmuls, the mask and a softmax",
    rules=RuleSet((Rule("attention", op("scaled_dot_product_attention", name="attention"), _as_products),)),
    produces_ops=frozenset({"mul", "transpose", "matmul", "softmax", "add", "where"}),
    must_precede=("mul-constant-as-batch-norm", "softmax-as-exp", "add-constant-as-batch-norm", "mask-add-as-rank4",
                  "where-constant-mask-as-mul-add", "add-as-concat-linear", "add-as-concat-conv"),
))
