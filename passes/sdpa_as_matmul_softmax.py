"""sdpa-as-matmul-softmax (exact): attention from its two products and a softmax.

scaled_dot_product_attention(q, k, v) = softmax((s q) k^T) v along the last dim, with s the given
scale or 1/sqrt(d) for q of last dim d: what torch computes without a mask, causality or dropout
(up to float32 rounding of the order of operations). The scale multiplies q, the smaller of q and
the scores wherever d < L, as a constant tensor, so chips without elementwise multiply take it as a
batch norm (mul-constant-as-batch-norm). For chips that declare matmul and softmax but no fused
attention, as Arch-Net's transformer students keep q, k, v, the products and the softmax.
"""

import math

import torch

from fxrewrite.ir import tensor_shape
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register


def _as_products(match: Match, rewriter: Rewriter):
    attention = match["attention"]
    if attention.attrs["causal"] or attention.attrs["masked"]:
        return Decline("a mask or causal attention needs an elementwise add or select the products do not have")
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
    return fn(anchor, torch.matmul, fn(anchor, torch.softmax, scores, -1), value)


register(PatternPass(
    name="sdpa-as-matmul-softmax",
    summary="scaled dot-product attention as softmax(s q k^T) v: two matmuls and a softmax",
    rules=RuleSet((Rule("attention", op("scaled_dot_product_attention", name="attention"), _as_products),)),
    produces_ops=frozenset({"mul", "transpose", "matmul", "softmax"}),
    must_precede=("mul-constant-as-batch-norm", "softmax-as-exp"),
))
