"""Cost of a graph: multiply-accumulates, bytes moved, parameters, and a per-target weighted estimate."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class CostWeights:
    """A target's cost estimate: mac * MACs + byte * bytes moved, in arbitrary units.

    Grouped and depthwise convs count `grouped_mac` per MAC because NPUs run them at a fraction of
    their dense throughput. Bytes use the target's widest activation and weight formats.
    `growth_max` bounds how much dearer an exact rewrite may make the nodes it replaces.
    """

    mac: float = 1.0
    byte: float = 1.0
    grouped_mac: float = 1.0
    activation_bytes: float = 1.0
    weight_bytes: float = 1.0
    #: an exact rewrite costing more than this many times what it replaces is left for distillation
    growth_max: float | None = None

    def node(self, view: OpView) -> float:
        grouped = view.kind in ("conv1d", "conv2d") and view.attrs["groups"] > 1
        compute = self.mac * node_macs(view) * (self.grouped_mac if grouped else 1.0)
        moved = (self.activation_bytes * node_activation_elements(view)
                 + self.weight_bytes * node_weight_elements(view))
        return compute + self.byte * moved

    def nodes(self, nodes: Iterable[fx.Node]) -> float:
        return sum(self.node(op_view(n)) for n in nodes if n.op not in ("placeholder", "output", "get_attr"))


def graph_macs(gm: fx.GraphModule) -> int:
    return sum(node_macs(op_view(n)) for n in gm.graph.nodes)


def parameter_count(gm: fx.GraphModule) -> int:
    return sum(p.numel() for p in gm.parameters())


def nodes_macs(nodes: list[fx.Node]) -> int:
    return sum(node_macs(op_view(n)) for n in nodes)
