"""Regions: the nodes a target still rejects, grouped for distillation.

torch.fx's capability-based partitioner groups the rejected nodes (and the legal nodes they enclose,
see `region_members`) into connected partitions whose fusion never creates a cycle; each region is cut at legal tensors and has its input and output
tensors. `carve` fuses each region into a submodule (`region_0`, ...) so a student block with the
same call signature can take its place.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass

from torch import fx, nn
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
from torch.fx.passes.operator_support import OperatorSupportBase

from fxrewrite.cost import nodes_macs
from fxrewrite.ir import op_view, tensor_shape
from fxrewrite.target import Target

REGION_PREFIX = "region_"


class _InRegion(OperatorSupportBase):
    def __init__(self, members: set[fx.Node]):
        self.members = members

    def is_node_supported(self, submodules: Mapping[str, nn.Module], node: fx.Node) -> bool:
        return node in self.members


def region_members(gm: fx.GraphModule, target: Target) -> set[fx.Node]:
    """The illegal nodes, plus every legal node enclosed by them: one whose data inputs all come from
    region nodes and whose users are all region nodes. Absorbing it merges the regions around it
    (a ConvNeXt block's linear layers between LayerNorm, GELU and the layer scale), so one student
    replaces the block instead of two students having to reproduce the exact tensors around a
    single legal op. Parameters used only by region nodes join them too."""
    members = {n for n in gm.graph.nodes if not target.verdict(n).legal}
    grown = True
    while grown:
        grown = False
        for node in gm.graph.nodes:
            producers = [a for a in node.all_input_nodes if a.op != "get_attr"]
            if (node not in members and node.op not in ("placeholder", "get_attr", "output") and producers
                    and node.users and all(p in members for p in producers) and all(u in members for u in node.users)):
                members.add(node)
                grown = True
    # parameters read only inside regions travel with them, so students see activations only
    members |= {n for n in gm.graph.nodes if n.op == "get_attr" and n.users and all(u in members for u in n.users)}
    return members


@dataclass(frozen=True)
class Region:
    index: int
    nodes: tuple[fx.Node, ...]
    inputs: tuple[fx.Node, ...]
    outputs: tuple[fx.Node, ...]

    @property
    def kinds(self) -> collections.Counter:
        return collections.Counter(op_view(n).kind for n in self.nodes if n.op != "get_attr")

    @property
    def macs(self) -> int:
        return nodes_macs(list(self.nodes))

    def describe(self) -> dict:
        return {
            "region": self.index,
            "nodes": [n.name for n in self.nodes],
            "kinds": dict(self.kinds),
            "inputs": [{"name": n.name, "shape": list(tensor_shape(n) or ())} for n in self.inputs],
            "outputs": [{"name": n.name, "shape": list(tensor_shape(n) or ())} for n in self.outputs],
            "teacher_macs": self.macs,
        }


def _partitioner(gm: fx.GraphModule, target: Target) -> CapabilityBasedPartitioner:
    return CapabilityBasedPartitioner(gm, _InRegion(region_members(gm, target)), allows_single_node_partition=True,
                                      skip_horizontal_fusion=True)


def find_regions(gm: fx.GraphModule, target: Target) -> list[Region]:
    """Connected, cycle-free groups of the nodes `target` rejects, in graph order."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    regions = []
    partitions = sorted(_partitioner(gm, target).propose_partitions(), key=lambda p: min(order[n] for n in p.nodes))
    for index, partition in enumerate(partitions):
        members = sorted(partition.nodes, key=order.__getitem__)
        inside = set(members)
        inputs = {a: None for n in members for a in n.all_input_nodes if a not in inside and a.op != "get_attr"}
        outputs = [n for n in members if any(u not in inside for u in n.users)]
        regions.append(Region(index, tuple(members), tuple(inputs), tuple(outputs)))
    return regions


def carve(gm: fx.GraphModule, target: Target) -> fx.GraphModule:
    """`gm` with every region fused into a submodule named region_<index> (graph order)."""
    partitioner = _partitioner(gm, target)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    partitions = sorted(partitioner.propose_partitions(), key=lambda p: min(order[n] for n in p.nodes))
    return partitioner.fuse_partitions(partitions, prefix=REGION_PREFIX)
