"""embedding-as-one-hot (exact): a table lookup is a one-hot vector times the table.

embedding(ids, W)[..., :] = W[ids] = one_hot(ids, V) @ W = linear(one_hot(ids, V), W^T): each
one-hot row has a single 1, so every output is one weight times 1 plus zeros, exact in float.
For chips that run one-hot encoding (or receive it from the host) and fully connected layers but
no gather. padding_idx only matters for training; max_norm renormalizes the table on lookup, so
embeddings with max_norm are declined.
"""

import torch.nn.functional as F

from fxrewrite.ir import constant_value
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import linear


def _as_one_hot(match: Match, rewriter: Rewriter):
    embedding = match["embedding"]
    if embedding.args.get("max_norm") is not None:
        return Decline("max_norm renormalizes looked-up rows; the product with the table would not")
    table = constant_value(embedding.args.get("weight"))
    if table is None:
        return Decline("its table is computed at run time, not a constant")
    rows = table.shape[0]
    one_hot = rewriter.function(embedding.node, F.one_hot, embedding.inputs[0], rows)
    as_float = rewriter.method(embedding.node, "float", one_hot)
    return rewriter.module(embedding.node, "embedding_linear", linear(table.t(), None), as_float)


register(PatternPass(
    name="embedding-as-one-hot",
    summary="embedding lookup as one-hot encoding times a linear layer",
    rules=RuleSet((Rule("embedding", op("embedding", name="embedding"), _as_one_hot),)),
    produces_ops=frozenset({"one_hot", "cast", "linear"}),
))
