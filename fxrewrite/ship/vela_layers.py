"""Vela's per-layer rows traced back to the graph's nodes.

Vela names a layer after a TOSA tensor (`tosa_rescale_default_2`), not after the node of the
PyTorch graph it came from: ExecuTorch's passes rename everything on the way. What survives is
arithmetic: a conv, linear or matmul keeps its multiply-accumulate count through every lowering,
and Vela lists layers in execution order. So each of Vela's MAC layers is given to the next graph
node, in topological order, with exactly its MAC count; a layer whose count no node within a
short window has (a node the flow decomposed into several) stays unnamed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from torch import fx

from fxrewrite.cost import node_macs
from fxrewrite.ir import op_view


@dataclass(frozen=True)
class VelaLayer:
    """One row of Vela's per-layer CSV."""

    name: str
    operator: str
    cycles: int
    macs: int
    #: percent of the MAC array's peak this layer reaches
    utilisation: float
    #: the graph node this layer computes, where its MAC count places it (fxrewrite.ship.vela_layers)
    node: str | None = None


#: Vela's operators that run on the MAC array (TOSA's names, as its per-layer CSV writes them)
MAC_OPERATORS = ("Conv", "FullyConnected", "MatMul")
#: how many MAC nodes a layer may skip over: nodes the flow folded away or split differently
WINDOW = 4


def _macs_per_node(gm: fx.GraphModule) -> list[tuple[str, int]]:
    nodes = []
    for node in gm.graph.nodes:
        if node.op in ("call_function", "call_module", "call_method") and (macs := node_macs(op_view(node))):
            nodes.append((node.name, macs))
    return nodes


def named_after_nodes(layers: Sequence[VelaLayer], gm: fx.GraphModule) -> tuple[VelaLayer, ...]:
    """`layers` with `node` set where a graph node's MAC count places it (see the module docstring)."""
    nodes = _macs_per_node(gm)
    position, named = 0, []
    for layer in layers:
        if layer.macs and any(kind in layer.operator for kind in MAC_OPERATORS):
            window = nodes[position:position + WINDOW]
            match = next((i for i, (_, macs) in enumerate(window) if macs == layer.macs), None)
            if match is not None:
                layer = dataclasses.replace(layer, node=window[match][0])
                position += match + 1
        named.append(layer)
    return tuple(named)
