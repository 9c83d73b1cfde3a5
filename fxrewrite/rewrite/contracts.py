"""Ordering contracts between passes, checked whenever a pipeline is built.

A pass declares the kinds it roots on, reads (inspects beside its roots) and produces, and the
passes it must run before (`must_precede`) or after (`must_follow`: Q.must_follow naming P is the
edge P -> Q, so a new pass states its place in its own file). An edge P -> Q is justified when P produces or reads a
kind Q roots on. An edge is missing when P produces or reads a kind Q roots on, Q produces nothing
P roots on (so the dependency runs one way), and no chain of declared edges leads from P to Q.
Passes that feed each other (conv -> conv rewrites) are left free: the lowering repeats its rounds
to a fixpoint. The default order is a topological order of the declared edges (ties by name).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import networkx as nx

from fxrewrite.errors import PassContractError, UsageError
from fxrewrite.rewrite.registry import Pass, registered_passes


def _feeds(p: Pass, q: Pass) -> frozenset[str]:
    """The kinds P produces or reads that Q roots on."""
    return (p.produces_ops | p.reads_ops) & q.root_ops


def _declared(passes: Iterable[Pass]) -> nx.DiGraph:
    passes = list(passes)
    graph = nx.DiGraph()
    graph.add_nodes_from(p.name for p in passes)
    names = {p.name for p in passes}
    graph.add_edges_from((p.name, q) for p in passes for q in p.must_precede if q in names)
    graph.add_edges_from((q, p.name) for p in passes for q in p.must_follow if q in names)
    return graph


def _universe(passes: Iterable[Pass]) -> dict[str, Pass]:
    """The registered passes plus these, so chains of edges through passes outside a pipeline count."""
    return {**registered_passes(), **{p.name: p for p in passes}}


def check_contracts(passes: Sequence[Pass]) -> None:
    """Refuse, with a sentence, a pipeline whose passes declare an unjustified, missing or cyclic edge."""
    _check_contracts(tuple(passes), len(registered_passes()))


@functools.lru_cache(maxsize=64)
def _check_contracts(passes: tuple[Pass, ...], registered: int) -> None:
    # cached: the planner builds a pipeline for every trial; `registered` keys the registry's growth
    universe = _universe(passes)
    unknown = [(p.name, field, other) for p in passes for field in ("must_precede", "must_follow")
               for other in getattr(p, field) if other not in universe]
    if unknown:
        name, field, other = unknown[0]
        raise PassContractError(f"pass {name}: its {field} names {other!r}, which is no pass; the passes are "
                                f"{', '.join(sorted(universe))}")
    graph = _declared(universe.values())
    names = {p.name for p in passes}
    declared = [(p, later, f"{p.name} declares it must run before {later}") for p in passes for later in p.must_precede]
    declared += [(universe[earlier], p.name, f"{p.name} declares it must run after {earlier}") for p in passes
                 for earlier in p.must_follow if earlier in universe]
    for p, later, said in declared:
        q = universe.get(later)
        if q is not None and {p.name, later} <= names and not _feeds(p, q):
            raise PassContractError(
                f"pass {said}, but it produces or reads nothing {later} "
                f"rewrites ({p.name} produces {_kinds(p.produces_ops)}, reads {_kinds(p.reads_ops)}; {later} "
                f"roots on {_kinds(q.root_ops)}): drop the edge or declare what {p.name} produces")
    try:
        cycle = nx.find_cycle(graph.subgraph(names))
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        raise PassContractError(f"passes {' -> '.join(a for a, _ in cycle)} -> {cycle[0][0]} must each run before "
                                "the next: the must_precede declarations form a cycle")
    for p in passes:
        for q in passes:
            shared = _feeds(p, q)
            if p is q or not shared or _feeds(q, p) or nx.has_path(graph, p.name, q.name):
                continue
            raise PassContractError(
                f"pass {p.name} produces or reads {_kinds(shared)} that {q.name} rewrites, so it must run before "
                f"{q.name}: add {q.name!r} to the must_precede of {p.name}, or {p.name!r} to the must_follow of "
                f"{q.name}")


def _kinds(kinds: frozenset[str]) -> str:
    return "{" + ", ".join(sorted(kinds)) + "}" if kinds else "nothing"


def canonical_order(passes: Iterable[Pass]) -> list[Pass]:
    """The passes in an order where every must_precede contract holds (ties: by name)."""
    passes = list(passes)
    check_contracts(passes)
    by_name = {p.name: p for p in passes}
    return [by_name[n] for n in nx.lexicographical_topological_sort(_declared(passes))]


def _must_precede(p: Pass, q: Pass) -> bool:
    """P must run before Q: declared so, or P feeds Q one way."""
    return q.name in p.must_precede or p.name in q.must_follow or (bool(_feeds(p, q)) and not _feeds(q, p))


def check_order(passes: Sequence[Pass]) -> None:
    """Refuse a pipeline that lists a pass after one it must precede."""
    for index, later in enumerate(passes):
        for earlier in passes[index + 1:]:
            if _must_precede(earlier, later):
                raise UsageError(f"pass {earlier.name} must run before {later.name} ({earlier.name} produces "
                                 f"{_kinds(earlier.produces_ops)} that {later.name} rewrites)")


def parse_pipeline(spec: str) -> list[Pass]:
    """`fold-batch-norm,conv1x1-as-3x3` -> passes, refusing unknown names and wrong orders."""
    known = registered_passes()
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UsageError("empty --passes: name at least one pass (see `fxrewrite passes`)")
    for name in names:
        if name not in known:
            raise UsageError(f"unknown pass {name!r} in --passes; passes are {', '.join(sorted(known))}")
    passes = [known[n] for n in names]
    check_order(passes)
    check_contracts(passes)
    return passes
