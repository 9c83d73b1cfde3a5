"""The greedy rewrite driver: a rule set applied over a graph with a worklist until nothing matches
(a fixpoint), highest priority first, dispatching on the root's op kind."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import fx
from torch._subclasses.fake_tensor import FakeTensorMode

from fxrewrite.ir import op_view
from fxrewrite.rewrite.pattern import Decline, Match, Rule, RuleSet
from fxrewrite.rewrite.rewriter import Rewriter


#: meta key naming the teacher node a node descends from: a rewrite passes its root's on to what it builds
ORIGIN = "fxrewrite_origin"


def origin_of(node: fx.Node) -> str:
    """The name of the teacher node `node` descends from (its own name when no rewrite built it)."""
    return node.meta.get(ORIGIN, node.name)


@dataclass
class RewriteStats:
    applied: collections.Counter = field(default_factory=collections.Counter)
    declined: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    misses: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.applied.values())


class RewriteLoopError(RuntimeError):
    """The rules kept rewriting past the loop guard: two of them undo each other."""


#: judges a built replacement: its cost (lower wins among rules for one root), or a Decline
Evaluate = Callable[[fx.Node, Match, list[fx.Node]], "float | Decline"]


@dataclass
class _Candidate:
    rule: Rule
    match: Match
    rewriter: Rewriter
    result: fx.Node
    cost: float = 0.0


def _discard(gm: fx.GraphModule, created: list[fx.Node]) -> None:
    for node in reversed(created):
        gm.graph.erase_node(node)


def apply_rules(gm: fx.GraphModule, rules: RuleSet, *, debug: bool = False, max_rewrites: int | None = None,
                root_filter: Callable[[fx.Node], bool] | None = None, evaluate: Evaluate | None = None,
                target: Any = None) -> RewriteStats:
    """Rewrite `gm` in place until no rule applies. `root_filter` limits which nodes may be roots;
    with `debug`, record why candidates did not match. Without `evaluate` the first rule (by
    priority) that builds a replacement wins; with it, every matching rule builds one and the
    cheapest accepted one wins. `target` is handed to replacement functions through the Rewriter."""
    stats = RewriteStats()
    limit = max_rewrites if max_rewrites is not None else 4 * len(gm.graph.nodes) + 100
    worklist = collections.deque(gm.graph.nodes)
    queued = set(worklist)
    erased: set[fx.Node] = set()
    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    built = False  # whether any replacement was built (it may have added submodules, kept or not)
    while worklist:
        node = worklist.popleft()
        queued.discard(node)
        if node in erased or node.op in ("placeholder", "output", "get_attr"):
            continue
        if root_filter is not None and not root_filter(node):
            continue
        candidates: list[_Candidate] = []
        for rule in rules.for_kind(op_view(node).kind):
            found = rule.pattern.match(node)
            if isinstance(found, str):
                if debug:
                    stats.misses[rule.name].append(found)
                continue
            rewriter = Rewriter(gm, fake_mode, target)
            built = True
            result = rule.replace(found, rewriter)
            if not isinstance(result, Decline) and evaluate is not None:
                verdict = evaluate(node, found, rewriter.created)
                result = verdict if isinstance(verdict, Decline) else result
            if isinstance(result, Decline):
                stats.declined[rule.name].append(f"{node.name}: {result.reason}")
                _discard(gm, rewriter.created)
                continue
            candidates.append(_Candidate(rule, found, rewriter, result, 0.0 if evaluate is None else verdict))
            if evaluate is None:
                break
        if not candidates:
            continue
        best = min(candidates, key=lambda c: c.cost)
        for other in candidates:
            if other is not best:
                _discard(gm, other.rewriter.created)
        if len(candidates) > 1:
            stats.notes.append(f"{node.name}: chose {best.rule.name} (cost {best.cost:.3g}) over " + ", ".join(
                f"{c.rule.name} ({c.cost:.3g})" for c in candidates if c is not best))
        origin = origin_of(node)
        for made in best.rewriter.created:
            made.meta[ORIGIN] = origin
        node.replace_all_uses_with(best.result)
        # captures are recorded operands first, so reversed order erases users before producers
        for dead in reversed(best.match.nodes):
            if not dead.users and dead.op != "placeholder":
                gm.graph.erase_node(dead)
                erased.add(dead)
        stats.applied[best.rule.name] += 1
        stats.notes.extend(best.rewriter.notes)
        if stats.total > limit:
            raise RewriteLoopError(f"no fixpoint after {limit} rewrites; last rule {best.rule.name} on {node.name} "
                                   f"(applied: {dict(stats.applied)})")
        for fresh in [*best.rewriter.created, *best.result.users]:
            if fresh not in queued:
                worklist.append(fresh)
                queued.add(fresh)
    # an untouched graph needs neither cleaning nor new code (most trial runs rewrite nothing)
    if built:
        _drop_unused_attributes(gm)
    if stats.total:
        gm.graph.lint()
        gm.recompile()
    return stats


def _drop_unused_attributes(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
