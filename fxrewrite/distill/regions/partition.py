"""Cutting a set of nodes into connected groups that fuse without a cycle (for fxrewrite.distill.regions.carving).

By hand, since torch's partitioner (CapabilityBasedPartitioner) proposes such cycle-free groups in
time quadratic in their size (0.9 s of maxvit_t's 3 s lowering).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from torch import fx


def components(members: set[fx.Node], order: Mapping[fx.Node, int]) -> list[list[fx.Node]]:
    """The members connected by edges between them (either way), each in graph order."""
    parent = {n: n for n in members}

    def root(node: fx.Node) -> fx.Node:
        while parent[node] is not node:
            parent[node] = node = parent[parent[node]]
        return node

    for node in members:
        for arg in node.all_input_nodes:
            if arg in members:
                parent[root(arg)] = root(node)
    groups: dict[fx.Node, list[fx.Node]] = {}
    for node in sorted(members, key=order.__getitem__):
        groups.setdefault(root(node), []).append(node)
    return list(groups.values())


def levels(gm: fx.GraphModule, components: list[list[fx.Node]], order: Mapping[fx.Node, int]) -> dict[fx.Node, int]:
    """Per member of a component, one more than the largest level in its own component from which a
    path leaves the component and reaches it (0 when none does), and at least its producers' levels
    in that component. A path leaving a level comes back only to a higher one, so the members of
    one component and level fuse without a cycle."""
    component = {n: index for index, members in enumerate(components) for n in members}
    last = [order[members[-1]] for members in components]
    level: dict[fx.Node, int] = {}
    #: per node, the components a path left to reach it, with the highest level it left from
    left: dict[fx.Node, dict[int, int]] = {}
    for node in gm.graph.nodes:
        mine = component.get(node)
        arriving: dict[int, int] = {}
        for arg in node.all_input_nodes:
            leaving = dict(left[arg])
            if arg in component and component[arg] != mine:
                leaving[component[arg]] = max(leaving.get(component[arg], 0), level[arg])
            for index, step in leaving.items():
                if last[index] >= order[node] and arriving.get(index, -1) < step:
                    arriving[index] = step
        if mine is not None:
            inside = [level[a] for a in node.all_input_nodes if component.get(a) == mine]
            returning = [arriving.pop(mine) + 1] if mine in arriving else []
            level[node] = max(inside + returning, default=0)
        left[node] = arriving
    return level


def crossings(parts: list[list[fx.Node]], order: Mapping[fx.Node, int],
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
            ahead = reachable(part, lambda n: n.users, lambda n: order[n] <= last)
            behind = reachable(parts[other], lambda n: n.all_input_nodes, lambda n: order[n] >= first)
            crossed |= {n for n in ahead & behind if n.op not in ("placeholder", "get_attr", "output")}
    return crossed


def reachable(starts: list[fx.Node], step: Callable[[fx.Node], Iterable[fx.Node]],
               keep: Callable[[fx.Node], bool]) -> set[fx.Node]:
    """Nodes reached from `starts` by `step` (users or inputs) while `keep` holds."""
    seen, stack = set(), list(starts)
    while stack:
        for nxt in step(stack.pop()):
            if nxt not in seen and keep(nxt):
                seen.add(nxt)
                stack.append(nxt)
    return seen
