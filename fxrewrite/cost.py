"""Cost of a graph: multiply-accumulates per node and parameter counts."""

from __future__ import annotations

import math

from torch import fx

from fxrewrite.ops import OpView, op_view, tensor_shape


def node_macs(view: OpView) -> int:
    """Multiply-accumulates of one node (convs, linear, matmul); 0 for everything else."""
    out = view.output_shape
    if out is None:
        return 0
    if view.kind in ("conv1d", "conv2d"):
        a = view.attrs
        return math.prod(out) * (a["in_ch"] // a["groups"]) * math.prod(a["kernel"])
    if view.kind == "linear":
        return math.prod(out) * view.attrs["in_features"]
    if view.kind == "matmul" and view.inputs:
        left = tensor_shape(view.inputs[0])
        return math.prod(out) * left[-1] if left else 0
    return 0


def graph_macs(gm: fx.GraphModule) -> int:
    return sum(node_macs(op_view(n)) for n in gm.graph.nodes)


def parameter_count(gm: fx.GraphModule) -> int:
    return sum(p.numel() for p in gm.parameters())


def nodes_macs(nodes: list[fx.Node]) -> int:
    return sum(node_macs(op_view(n)) for n in nodes)
