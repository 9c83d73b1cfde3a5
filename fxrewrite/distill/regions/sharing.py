"""Copies of what several parts of a graph share, so that regions do not: sizes, constants and
tensors made from sizes and parameters alone (`private_sizes`), and which of a carved region's
inputs it reads for their sizes alone (`size_only_inputs`). A region can take in and give out
activations only: an int, or a constant another region also reads, crossing a region boundary is
something no student can produce."""

from __future__ import annotations

from torch import fx

from fxrewrite.frontend.canonical import METADATA_ONLY
from fxrewrite.ir import answered_upward, op_view, tensor_shape
from fxrewrite.target import Target

_DATA_FREE = "_fxrewrite_data_free"


def _read_values(node: fx.Node) -> list[fx.Node]:
    """The inputs whose values `node` reads (not those it reads for their shape alone)."""
    return node.all_input_nodes[1:] if node.target in METADATA_ONLY else node.all_input_nodes


def _computes_no_tensor(node: fx.Node) -> bool:
    return node.op in ("placeholder", "output", "get_attr") or tensor_shape(node) is None


def _computed_producers(node: fx.Node) -> list[fx.Node]:
    """The computed tensors whose values `node` reads (parameters and sizes are data-free already)."""
    if _computes_no_tensor(node):
        return []
    return [a for a in _read_values(node) if a.op != "get_attr" and op_view(a).kind != "shape"]


def data_free(node: fx.Node) -> bool:
    """Whether `node` computes a tensor from sizes and parameters alone, reading no input's values;
    answered once per node."""
    return answered_upward(node, _DATA_FREE, _computed_producers,
                           lambda n, free: not _computes_no_tensor(n) and all(free))


def private_sizes(gm: fx.GraphModule, target: Target) -> None:
    """Give every reader of a size (x.shape, x.shape[0], ...) its own copy of the size arithmetic,
    in place: a size one region computes and another reads would be an int crossing between
    regions, which no student can produce (swin_t reads its batch size in every block). The same
    for constants and tensors made from sizes and parameters alone that a node the target rejects
    reads (BERT's attention mask, read by every attention): a region takes its copy in, so none
    crosses."""
    for node in reversed(list(gm.graph.nodes)):
        if node.op not in ("call_function", "call_method", "get_attr") or len(node.users) < 2:
            continue
        shared = node.op == "get_attr" or data_free(node)
        if not (op_view(node).kind == "shape" or (shared and any(
                data_free(u) or not target.verdict(u).legal for u in node.users))):
            continue
        for user in list(node.users)[1:]:
            with gm.graph.inserting_before(user):
                copy = gm.graph.node_copy(node)
            copy.meta = dict(node.meta)
            user.replace_input_with(node, copy)


def size_only_inputs(region: fx.GraphModule) -> frozenset[int]:
    """The positions of a carved region's inputs that it reads for their sizes alone."""
    placeholders = [n for n in region.graph.nodes if n.op == "placeholder"]
    return frozenset(i for i, node in enumerate(placeholders)
                     if node.users and all(op_view(u).kind == "shape" for u in node.users))
