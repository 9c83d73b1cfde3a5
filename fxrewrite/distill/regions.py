"""Regions: the nodes a target still rejects, grouped for distillation.

The rejected nodes (and the legal nodes they enclose, see `region_members`) are grouped into
connected partitions whose fusion never creates a cycle (`_partitions`); each region is
cut at legal tensors and has its input and output tensors. A partition is cut once more after each
residual add it holds (`split_after_residual_adds`), so a chain of residual blocks the target cannot
run becomes one region per block, each with its skip, rather than one region for the whole chain.
`carve` fuses each region into a submodule with torch.fx's fuser (`region_0`, ...) so a student
block with the same call signature can take its place.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from torch import fx
from torch.fx.passes.utils.fuser_utils import fuse_by_partitions

from fxrewrite.cost import nodes_macs
from fxrewrite.distill.layouts import non_map_tensors
from fxrewrite.distill.partition import components, levels
from fxrewrite.distill.sharing import data_free, private_sizes
from fxrewrite.ir import op_view, tensor_shape
from fxrewrite.rewrite.pattern import reads_an_input
from fxrewrite.target import Target

REGION_PREFIX = "region_"
#: ops that only move data: a region absorbs those next to it
LAYOUT_KINDS = frozenset({"reshape", "permute", "transpose", "flatten"})


def _is_token_node(node: fx.Node) -> bool:
    shape = tensor_shape(node)
    return node.op not in ("placeholder", "get_attr", "output") and shape is not None and len(shape) == 3


@dataclass(frozen=True)
class _Reach:
    """What students on a target read and make: token sequences (N, L, D), which need a reshape to be
    made from maps and from each other (without one, as on archnet, a transformer's token stream is
    never cut: its region runs on to a map or a vector); image maps (convs read them); and how many
    channels a conv reads."""

    tokens: bool
    maps: bool
    widest: float
    #: whether students may make rank-4 tensors of other layouts than maps (fxrewrite.distill.layouts)
    permutes: bool

    @classmethod
    def of(cls, target: Target) -> _Reach:
        return cls("reshape" in target.ops or target.allow_all_ops, "conv2d" in target.ops or target.allow_all_ops,
                   target.limit("conv2d", "in_channels_max") or math.inf,
                   "permute" in target.ops or target.allow_all_ops)


def _absorbed(node: fx.Node, members: set[fx.Node], reach: _Reach) -> bool:
    """Whether `node`, legal and outside the members, joins them."""
    if node.op not in ("call_function", "call_method", "call_module"):
        return False
    producers = [a for a in node.all_input_nodes if a.op != "get_attr"]
    fed, feeding = any(p in members for p in producers), any(u in members for u in node.users)
    if producers and node.users and all(p in members for p in producers) and all(u in members for u in node.users):
        return True  # enclosed
    if not (fed or feeding):
        return False
    kind = op_view(node).kind
    rank = max((len(tensor_shape(n) or ()) for n in [node, *producers]), default=0)
    # size arithmetic (x.shape read to reshape x, x.dim() read by an assert) joins the region that
    # reads it, or the one it reads from when nothing outside computes with it: an int cannot leave
    # a region (private_sizes gives each reader its own copy)
    return ((kind == "shape" and (feeding or (fed and all(
        u in members or op_view(u).kind in ("shape", "assert") for u in node.users))))
            or (kind == "getitem" and fed)  # a tuple cannot leave a region
            # a tensor made from sizes and parameters alone (BERT's all-ones attention mask): a student
            # reads activations only; every region reading it has its own copy (`private_sizes`)
            or (feeding and data_free(node))
            # so regions begin and end at batch-first tensors, not at attention's (3, N, heads, L, d)
            or (kind in LAYOUT_KINDS and rank >= 5)
            or (not reach.maps and rank >= 4)  # no student reads rank-4 tensors as image maps
            # a map wider than the target's convs read, which no student could read
            or (feeding and _wider_than_convs_read(node, reach)))


def _wider_than_convs_read(node: fx.Node, reach: _Reach) -> bool:
    shape = tensor_shape(node)
    return shape is not None and len(shape) == 4 and shape[1] > reach.widest


def _pulled(member: fx.Node, members: set[fx.Node], reach: _Reach, non_maps: set[fx.Node]) -> set[fx.Node]:
    """The users a member takes into the region: all of them when it is made from parameters and
    sizes alone (a class token expanded to the batch, a position bias: a student needs a tensor to
    read), when its map is wider than the target's convs read, or when it is a rank-4 tensor that is
    no map on a target that cannot permute (no student could read either: resnet50's 1024-channel
    blocks on archnet become one region up to a tensor a student can read or the output)."""
    unfed = not any(tensor_shape(p) for p in member.all_input_nodes if reads_an_input(p))
    if not (unfed or member in non_maps or _wider_than_convs_read(member, reach)):
        return set()
    return {u for u in member.users if u not in members and u.op != "output"}


def region_members(gm: fx.GraphModule, target: Target, seeds: frozenset[fx.Node],
                   non_maps: set[fx.Node]) -> set[fx.Node]:
    """The illegal nodes (and, on a target that cannot hold tokens, every node making tokens), grown
    by the legal nodes `_absorbed` says join them until none does. A legal node enclosed by them
    (every data input from a member, every user a member) merges the regions around it (a ConvNeXt
    block's linear layers between LayerNorm, GELU and the layer scale), so one student replaces the
    block instead of two students having to reproduce the exact tensors around a single legal op.
    Members take some of their users along (`_pulled`). Parameters used only by members join them too.
    `seeds` are members from the start (`_partitions` adds the paths an unreadable tensor would
    cross on), and so are `non_maps`: on a target that cannot permute, the rank-4 tensors laid out
    otherwise than a map (fxrewrite.distill.layouts), which must not leave a region."""
    reach = _Reach.of(target)
    members = set(seeds) | {n for n in gm.graph.nodes
                            if not target.verdict(n).legal or (not reach.tokens and _is_token_node(n))}
    members |= non_maps
    # both rules only grow with the members, so one worklist reaches the same fixpoint as repeated
    # sweeps: a node joining can change the answer only for its producers and users
    worklist = collections.deque(gm.graph.nodes)
    queued = set(worklist)
    while worklist:
        node = worklist.popleft()
        queued.discard(node)
        if node in members:
            joined = _pulled(node, members, reach, non_maps)
        else:
            joined = {node} if _absorbed(node, members, reach) else set()
        members |= joined
        for neighbour in {n for j in joined for n in (*j.all_input_nodes, *j.users, j)}:
            if neighbour not in queued:
                worklist.append(neighbour)
                queued.add(neighbour)
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


def _is_residual_add(node: fx.Node, reach: _Reach, non_maps: set[fx.Node]) -> bool:
    view = op_view(node)
    shapes = [tensor_shape(a) for a in node.all_input_nodes if a.op != "get_attr"]
    return (view.kind == "add" and len(shapes) == 2 and shapes[0] == shapes[1] == view.output_shape
            and (len(shapes[0]) != 3 or reach.tokens) and not _wider_than_convs_read(node, reach)
            and node not in non_maps)


def split_after_residual_adds(members: list[fx.Node], reach: _Reach,
                              non_maps: set[fx.Node] = frozenset()) -> list[list[fx.Node]]:
    """`members` (one partition, in graph order) cut after every residual add: a node's block is the
    largest of its in-partition producers' blocks, plus one past a residual add. Nodes fed from
    outside alone (parameters, a second input) join the first block that reads them. An add is not
    cut after where students on the target could not make or read its output (tokens without a
    reshape, a map wider than its convs read, a rank-4 tensor that is no map). Blocks only
    feed later blocks, and every path between members stays inside the partition, so no cut makes
    a cycle."""
    inside = set(members)
    block: dict[fx.Node, int] = {}
    for node in members:
        producers = [a for a in node.all_input_nodes if a in inside]
        if producers:
            block[node] = max(block.get(p, 0) + _is_residual_add(p, reach, non_maps) for p in producers)
    for node in reversed(members):
        if node not in block:
            block[node] = min((block[u] for u in node.users if u in block), default=0)
    groups: dict[int, list[fx.Node]] = {}
    for node in members:
        groups.setdefault(block[node], []).append(node)
    return [groups[index] for index in sorted(groups)]


def _partitions(gm: fx.GraphModule, target: Target) -> list[list[fx.Node]]:
    """The regions' members cut after residual adds, each in graph order, sorted by first node: the
    members connected by edges within one level (fxrewrite.distill.partition), cut again until no
    tensor a student could not read crosses between two (`_crossings`); torch's fuser carves them.
    Sizes are made private first (`private_sizes`), which rewrites `gm` without changing what it
    computes."""
    private_sizes(gm, target)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    reach, seeds = _Reach.of(target), frozenset()
    # on a target that cannot permute, rank-4 tensors that are no maps must stay inside regions
    non_maps = non_map_tensors(gm) if not reach.permutes else set()
    while True:
        members = region_members(gm, target, seeds, non_maps)
        groups = components(members, order)
        level = levels(gm, groups, order)
        parts = [piece for group in groups for step in sorted({level[n] for n in group})
                 for piece in components({n for n in group if level[n] == step}, order)]
        parts = [cut for part in parts for cut in split_after_residual_adds(part, reach, non_maps)]
        crossed = _crossings(parts, order, lambda n: n in non_maps or _wider_than_convs_read(n, reach)) - members
        if not crossed:
            return sorted(parts, key=lambda members: order[members[0]])
        seeds |= crossed


def _crossings(parts: list[list[fx.Node]], order: Mapping[fx.Node, int],
               unreadable: Callable[[fx.Node], bool]) -> set[fx.Node]:
    """The nodes on paths from a part to a later part that reads an `unreadable` tensor of it (a map
    wider than the target's convs read, a rank-4 tensor that is no map where the target cannot
    permute). No student could read it, so the two parts must be one; they were cut apart because
    such a path leaves one and comes back (resnet50's bottleneck on archnet: its first conv and its
    add rejected, the convs between legal), and the nodes on it join them."""
    part_of = {n: i for i, part in enumerate(parts) for n in part}
    crossed: set[fx.Node] = set()
    for index, part in enumerate(parts):
        readers = {part_of[u] for n in part if unreadable(n)
                   for u in n.users if part_of.get(u, index) != index}
        for other in readers:
            first, last = order[part[0]], max(order[n] for n in parts[other])
            ahead = _reachable(part, lambda n: n.users, lambda n: order[n] <= last)
            behind = _reachable(parts[other], lambda n: n.all_input_nodes, lambda n: order[n] >= first)
            crossed |= {n for n in ahead & behind if n.op not in ("placeholder", "get_attr", "output")}
    return crossed


def _reachable(starts: list[fx.Node], step: Callable[[fx.Node], Iterable[fx.Node]],
               keep: Callable[[fx.Node], bool]) -> set[fx.Node]:
    """Nodes reached from `starts` by `step` (users or inputs) while `keep` holds."""
    seen, stack = set(), list(starts)
    while stack:
        for nxt in step(stack.pop()):
            if nxt not in seen and keep(nxt):
                seen.add(nxt)
                stack.append(nxt)
    return seen


def find_regions(gm: fx.GraphModule, target: Target) -> list[Region]:
    """Connected, cycle-free groups of the nodes `target` rejects, in graph order."""
    regions = []
    for index, members in enumerate(_partitions(gm, target)):
        inside = set(members)
        inputs = {a: None for n in members for a in n.all_input_nodes if a not in inside and a.op != "get_attr"}
        outputs = [n for n in members if any(u not in inside for u in n.users)]
        regions.append(Region(index, tuple(members), tuple(inputs), tuple(outputs)))
    return regions


def carve(gm: fx.GraphModule, target: Target) -> fx.GraphModule:
    """`gm` with every region fused into a submodule named region_<index> (graph order)."""
    return fuse_by_partitions(gm, [dict.fromkeys(members) for members in _partitions(gm, target)],
                              prefix=REGION_PREFIX)
