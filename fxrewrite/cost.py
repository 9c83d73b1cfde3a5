"""Cost of a graph: multiply-accumulates, bytes moved, parameters, and a target's weighted estimate."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from torch import fx

from fxrewrite.ir import OpView, op_view, tensor_shape
from fxrewrite.target import CostWeights


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


def node_weight_elements(view: OpView) -> int:
    if view.kind in ("conv1d", "conv2d"):
        a = view.attrs
        return a["out_ch"] * (a["in_ch"] // a["groups"]) * math.prod(a["kernel"])
    if view.kind == "linear":
        return view.attrs["in_features"] * view.attrs["out_features"]
    return 0


def node_activation_elements(view: OpView) -> int:
    """Elements read and written: every tensor operand plus the result."""
    shapes = [*view.input_shapes, *([view.output_shape] if view.output_shape is not None else [])]
    return sum(math.prod(s) for s in shapes)


def node_cost(view: OpView, weights: CostWeights) -> float:
    """The target's estimate for one node: weighted MACs (grouped ones dearer) plus weighted bytes."""
    grouped = view.kind in ("conv1d", "conv2d") and view.attrs["groups"] > 1
    compute = weights.mac * node_macs(view) * (weights.grouped_mac if grouped else 1.0)
    moved = (weights.activation_bytes * node_activation_elements(view)
             + weights.weight_bytes * node_weight_elements(view))
    return compute + weights.byte * moved


def nodes_cost(nodes: Iterable[fx.Node], weights: CostWeights) -> float:
    return sum(node_cost(op_view(n), weights) for n in nodes if n.op not in ("placeholder", "output", "get_attr"))


def graph_macs(gm: fx.GraphModule) -> int:
    return sum(node_macs(op_view(n)) for n in gm.graph.nodes)


def parameter_count(gm: fx.GraphModule) -> int:
    return sum(p.numel() for p in gm.parameters())


def nodes_macs(nodes: list[fx.Node]) -> int:
    return sum(node_macs(op_view(n)) for n in nodes)


@dataclass(frozen=True)
class Size:
    """What a graph costs in the report: MACs (per the batch its shapes were recorded at), parameters, nodes."""

    macs: int
    params: int
    nodes: int | None = None

    @classmethod
    def of(cls, gm: fx.GraphModule, count_nodes: bool = True) -> Size:
        return cls(graph_macs(gm), parameter_count(gm), len(gm.graph.nodes) if count_nodes else None)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in (("macs", self.macs), ("params", self.params), ("nodes", self.nodes)) if v is not None}
