"""expand-constant-as-linear (exact for finite inputs): a constant broadcast over the batch (ViT's
class token, c.expand(N, -1, -1)) as an FC layer with zero weights and the constant as its bias.

linear(t; 0, vec(c)) = 0 t + vec(c) = vec(c) for every sample of any finite tensor t with N rows, so
with t flattened to (N, F) and the result reshaped to c's shape per sample, each of the N samples
gets c. t is the tensor the batch size N is read from (the expand's size argument comes from
t.shape[0]), so the FC layer is how a chip that runs FC layers but no broadcast makes a per-sample
copy of c; it spends F x numel(c) multiply-adds by zero (the image's 3,072 x 96 for ViT's token, as
many as its patch embedding), which the chip's cost model counts.
"""

import math

import torch
from torch import fx

from fxrewrite.ir import tensor_shape
from fxrewrite.rewrite import Decline, Match, PatternPass, Rewriter, Rule, RuleSet, op, register
from fxrewrite.rewrite.building import computed_constant, linear
from fxrewrite.rewrite.pattern import reads_an_input


def _batch_source(sizes: list) -> fx.Node | None:
    """The tensor whose size gives the expand's first dim: the first tensor up the size argument."""
    frontier = [a for a in sizes[:1] if isinstance(a, fx.Node)]
    seen: set[fx.Node] = set()
    while frontier:
        node = frontier.pop()
        if node in seen:
            continue
        seen.add(node)
        if tensor_shape(node) is not None and node.op != "get_attr":
            return node
        frontier.extend(node.all_input_nodes)
    return None


def _as_linear(match: Match, rewriter: Rewriter):
    expand = match["expand"]
    source, shape = expand.inputs[0], expand.output_shape
    constant = computed_constant(source)
    if constant is None or shape is None or not constant.is_floating_point() or constant.dim() != len(shape) \
            or constant.shape[0] != 1:
        return Decline("only a floating-point constant with a batch dim of 1, broadcast to the batch, is rebuilt")
    given = expand.node.args[1:]  # aten: one list of sizes; the method: the sizes themselves
    sizes = list(given[0]) if len(given) == 1 and isinstance(given[0], (list, tuple)) else list(given)
    batch = _batch_source(sizes)
    if batch is None or not reads_an_input(batch):
        return Decline("the batch size is not read from a tensor of the graph")
    per_sample = constant.expand(1, *shape[1:]).reshape(-1)
    features = math.prod(tensor_shape(batch)[1:])
    flat = rewriter.method(expand.node, "reshape", batch, -1, features)
    fc = linear(torch.zeros(per_sample.numel(), features), per_sample)
    return rewriter.method(expand.node, "reshape", rewriter.module(expand.node, "constant_fc", fc, flat), -1, *shape[1:])


register(PatternPass(
    name="expand-constant-as-linear",
    summary="a constant broadcast over the batch (a class token) as a zero-weight FC layer whose bias is the constant",
    rules=RuleSet((Rule("constant-per-sample", op("expand", name="expand"), _as_linear),)),
    produces_ops=frozenset({"reshape", "linear"}),
))
