"""Regions: the nodes a target still rejects, grouped for distillation.

The rejected nodes, with the rest of the teacher blocks they belong to (the module hierarchy
recorded at capture, fxrewrite.distill.regions.blocks) and the legal nodes they enclose (see
`region_members`), are grouped into connected partitions whose fusion never creates a cycle
(`_partitions`); each region is cut at legal tensors and has its input and output tensors. A
partition is cut once more where a teacher block begins, and after each residual add outside
blocks (`split_at_blocks`), so a chain of residual blocks the target cannot run becomes one region
per block, each with its skip, rather than one region for the whole chain; a cut falls only at a
tensor students can make and read, which is what makes a region span several blocks.
`carve` fuses each region into a submodule with torch.fx's fuser (`region_0`, ...) so a student
block with the same call signature can take its place.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from torch import fx
from torch.fx.passes.utils.fuser_utils import fuse_by_partitions

from fxrewrite.cost import nodes_macs
from fxrewrite.distill.regions.blocks import Blocks, teacher_blocks
from fxrewrite.distill.regions.layouts import non_map_tensors
from fxrewrite.distill.regions.partition import components, crossings, levels
from fxrewrite.distill.regions.reach import Reach, is_token_node, readable, wider_than_convs_read
from fxrewrite.distill.regions.sharing import data_free, private_sizes
from fxrewrite.ir import op_view, tensor_shape
from fxrewrite.nn_mass import nn_mass
from fxrewrite.rewrite.pattern import reads_an_input
from fxrewrite.target import Target

REGION_PREFIX = "region_"
#: ops that only move data: a region absorbs those next to it
LAYOUT_KINDS = frozenset({"reshape", "permute", "transpose", "flatten"})


def _absorbed(node: fx.Node, members: set[fx.Node], reach: Reach) -> bool:
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
            or (feeding and wider_than_convs_read(node, reach)))


def _pulled(member: fx.Node, members: set[fx.Node], reach: Reach, non_maps: set[fx.Node]) -> set[fx.Node]:
    """The users a member takes into the region: all of them when it is made from parameters and
    sizes alone (a class token expanded to the batch, a position bias: a student needs a tensor to
    read), when its map is wider than the target's convs read, or when it is a rank-4 tensor that is
    no map on a target that cannot permute (no student could read either: resnet50's 1024-channel
    blocks on archnet become one region up to a tensor a student can read or the output)."""
    unfed = not any(tensor_shape(p) for p in member.all_input_nodes if reads_an_input(p))
    if not (unfed or member in non_maps or wider_than_convs_read(member, reach)):
        return set()
    return {u for u in member.users if u not in members and u.op != "output"}


def _whole_blocks(gm: fx.GraphModule, nodes: set[fx.Node], blocks: Blocks) -> set[fx.Node]:
    """Every node computing activations in the teacher blocks (fxrewrite.distill.regions.blocks) that `nodes`
    belong to; size arithmetic and tensors made from parameters alone join by `_absorbed`'s rules."""
    wanted = {blocks[n] for n in nodes} - {None}
    return {n for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")
            and blocks[n] in wanted and tensor_shape(n) is not None and not data_free(n)} if wanted else set()


def region_members(gm: fx.GraphModule, target: Target, seeds: frozenset[fx.Node],
                   non_maps: set[fx.Node], blocks: Blocks) -> set[fx.Node]:
    """The illegal nodes with the rest of their teacher blocks (a student replaces a whole block, as
    Arch-Net's do; fxrewrite.distill.regions.blocks) and, on a target that cannot hold tokens, every node
    making tokens, grown by the legal nodes `_absorbed` says join them until none does. A legal node enclosed by them
    (every data input from a member, every user a member) merges the regions around it (a ConvNeXt
    block's linear layers between LayerNorm, GELU and the layer scale), so one student replaces the
    block instead of two students having to reproduce the exact tensors around a single legal op.
    Members take some of their users along (`_pulled`). Parameters used only by members join them too.
    `seeds` are members from the start (`_partitions` adds the paths an unreadable tensor would
    cross on), and so are `non_maps`: on a target that cannot permute, the rank-4 tensors laid out
    otherwise than a map (fxrewrite.distill.regions.layouts), which must not leave a region."""
    reach = Reach.of(target)
    rejected = {n for n in gm.graph.nodes if not target.verdict(n).legal}
    members = set(seeds) | rejected | {n for n in gm.graph.nodes if not reach.tokens and is_token_node(n)}
    members |= non_maps | _whole_blocks(gm, rejected, blocks)
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


#: a region spanning more teacher blocks than this is a warning in the report
MANY_BLOCKS = 3


@dataclass(frozen=True)
class Region:
    index: int
    nodes: tuple[fx.Node, ...]
    inputs: tuple[fx.Node, ...]
    outputs: tuple[fx.Node, ...]
    #: the teacher blocks it holds (fxrewrite.distill.regions.blocks), in graph order
    blocks: tuple[str, ...] = ()
    #: why it holds several: the first tensor between two of them that no student can make or read
    joined_by: str = ""

    @property
    def kinds(self) -> collections.Counter:
        return collections.Counter(op_view(n).kind for n in self.nodes if n.op != "get_attr")

    @property
    def macs(self) -> int:
        return nodes_macs(list(self.nodes))

    @property
    def nn_mass(self) -> float:
        return nn_mass(self.nodes, self.nodes[0].graph) if self.nodes else 0.0

    def describe(self) -> dict:
        return {
            "region": self.index,
            "nodes": [n.name for n in self.nodes],
            "kinds": dict(self.kinds),
            "inputs": [{"name": n.name, "shape": list(tensor_shape(n) or ())} for n in self.inputs],
            "outputs": [{"name": n.name, "shape": list(tensor_shape(n) or ())} for n in self.outputs],
            "teacher_macs": self.macs,
            "nn_mass": self.nn_mass,
            "blocks": list(self.blocks),
            "joined_by": self.joined_by,
        }


def _is_residual_add(node: fx.Node) -> bool:
    view = op_view(node)
    shapes = [tensor_shape(a) for a in node.all_input_nodes if a.op != "get_attr"]
    return view.kind == "add" and len(shapes) == 2 and shapes[0] == shapes[1] == view.output_shape


def _cut(producer: fx.Node, node: fx.Node, reach: Reach, non_maps: set[fx.Node], blocks: Blocks) -> bool:
    """Whether a region boundary falls between `producer` and its user `node`: where `node` enters a
    teacher block (fxrewrite.distill.regions.blocks) `producer` is not in, or, where `node` is in no block,
    after a residual add (the add a model writes around its blocks goes with the block before it)."""
    if not readable(producer, reach, non_maps):
        return False
    return blocks[producer] != blocks[node] if blocks[node] is not None else _is_residual_add(producer)


def _a_size(node: fx.Node) -> bool:
    """Whether `node` computes a size (no tensor, and no tuple that getitems read)."""
    return node.op != "get_attr" and tensor_shape(node) is None and not any(op_view(u).kind == "getitem"
                                                                             for u in node.users)


def split_at_blocks(members: list[fx.Node], reach: Reach, non_maps: set[fx.Node],
                    blocks: Blocks) -> list[list[fx.Node]]:
    """`members` (one partition, in graph order) cut where a teacher block begins, and after every
    residual add outside blocks: a node's piece is the largest of its in-partition producers' pieces, plus one
    across a cut (`_cut`). Nodes fed from outside alone (parameters, a second input) join the first
    piece that reads them. No cut falls where students on the target could not make or read the
    tensor (tokens without a reshape, a map wider than its convs read, a rank-4 tensor that is no
    map). Pieces only feed later pieces, and every path between members stays inside the
    partition, so no cut makes a cycle. Size arithmetic goes with the piece that reads it: an int
    cannot leave a region."""
    inside = set(members)
    block: dict[fx.Node, int] = {}
    for node in members:
        # a parameter is fed from outside: it starts no piece (a weight read in a later block would cut
        # ViT's token stream at its first layer, a tensor no student makes on archnet)
        producers = [a for a in node.all_input_nodes if a in inside and a.op != "get_attr"]
        if producers:
            block[node] = max(block.get(p, 0) + _cut(p, node, reach, non_maps, blocks) for p in producers)
    for node in reversed(members):
        if node not in block or (_a_size(node) and any(u in inside for u in node.users)):
            block[node] = min((block[u] for u in node.users if u in block), default=block.get(node, 0))
    groups: dict[int, list[fx.Node]] = {}
    for node in members:
        groups.setdefault(block[node], []).append(node)
    return [groups[index] for index in sorted(groups)]


def _partitions(gm: fx.GraphModule, target: Target) -> list[list[fx.Node]]:
    """The regions' members cut after residual adds, each in graph order, sorted by first node: the
    members connected by edges within one level (fxrewrite.distill.regions.partition), cut again until no
    tensor a student could not read crosses between two (`_crossings`); torch's fuser carves them.
    Sizes are made private first (`private_sizes`), which rewrites `gm` without changing what it
    computes."""
    private_sizes(gm, target)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    blocks = teacher_blocks(gm.graph)
    reach, seeds = Reach.of(target), frozenset()
    # on a target that cannot permute, rank-4 tensors that are no maps must stay inside regions
    non_maps = non_map_tensors(gm) if not reach.permutes else set()
    while True:
        members = region_members(gm, target, seeds, non_maps, blocks)
        groups = components(members, order)
        level = levels(gm, groups, order)
        parts = [piece for group in groups for step in sorted({level[n] for n in group})
                 for piece in components({n for n in group if level[n] == step}, order)]
        parts = [cut for part in parts for cut in split_at_blocks(part, reach, non_maps, blocks)]
        crossed = crossings(parts, order, lambda n: n in non_maps or wider_than_convs_read(n, reach)) - members
        if not crossed:
            return sorted(parts, key=lambda members: order[members[0]])
        seeds |= crossed


def _unreadable_because(node: fx.Node, reach: Reach, non_maps: set[fx.Node], target: Target) -> str:
    shape = tensor_shape(node)
    if shape is None:
        return f"{node.name}, a size or tuple, which no student writes"
    described = f"{node.name} ({'x'.join(map(str, shape))})"
    if len(shape) == 3 and not reach.tokens:
        return f"{described}: tokens, which {target.name} cannot reshape from or to image maps"
    if wider_than_convs_read(node, reach):
        return f"{described}: a map of {shape[1]} channels, more than the {reach.widest:g} {target.name}'s convs read"
    return f"{described}: a rank-4 tensor that is no image map, and {target.name} cannot permute"


def _joined_by(members: list[fx.Node], reach: Reach, non_maps: set[fx.Node], target: Target,
               blocks: Blocks) -> str:
    """Why `members` span several teacher blocks: the first tensor passed between two of them that no
    student could make or read, so no cut can fall there."""
    inside = set(members)
    crossing = [n for n in members if any(u in inside and blocks[u] != blocks[n] for u in n.users)
                and not readable(n, reach, non_maps)]
    crossing.sort(key=lambda n: tensor_shape(n) is None)  # a tensor explains more than the sizes read beside it
    if crossing:
        return _unreadable_because(crossing[0], reach, non_maps, target)
    tables = [n for n in members if n.op != "get_attr" and data_free(n)]
    if tables:
        return (f"{tables[0].name} and the like: tensors made from parameters alone (position tables), computed "
                "once beside the blocks that read them")
    return "a cut between them would make two regions feed each other (a cycle)"


def find_regions(gm: fx.GraphModule, target: Target) -> list[Region]:
    """Connected, cycle-free groups of the nodes `target` rejects, in graph order, each with the
    teacher blocks it spans and, where several, why (`_joined_by`)."""
    regions = []
    parts = _partitions(gm, target)
    blocks = teacher_blocks(gm.graph)
    reach = Reach.of(target)
    non_maps = non_map_tensors(gm) if not reach.permutes else set()
    for index, members in enumerate(parts):
        inside = set(members)
        inputs = {a: None for n in members for a in n.all_input_nodes if a not in inside and a.op != "get_attr"}
        outputs = [n for n in members if any(u not in inside for u in n.users)]
        spanned = tuple(dict.fromkeys(blocks[n] for n in members if blocks[n] is not None))
        joined = _joined_by(members, reach, non_maps, target, blocks) if len(spanned) > 1 else ""
        regions.append(Region(index, tuple(members), tuple(inputs), tuple(outputs), spanned, joined))
    return regions


def carve(gm: fx.GraphModule, target: Target) -> fx.GraphModule:
    """`gm` with every region fused into a submodule named region_<index> (graph order)."""
    return fuse_by_partitions(gm, [dict.fromkeys(members) for members in _partitions(gm, target)],
                              prefix=REGION_PREFIX)
