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
#: the meta key torch.fx and torch.export record the calling modules under, passed on to what a rewrite builds
MODULE_STACK = "nn_module_stack"


def origin_of(node: fx.Node) -> str:
    """The name of the teacher node `node` descends from (its own name when no rewrite built it)."""
    return node.meta.get(ORIGIN, node.name)


#: meta key naming the other teacher nodes a rewrite merged into a node (a conv folded into its batch norm)
ABSORBED = "fxrewrite_absorbed"


def absorbed_by(node: fx.Node) -> frozenset[str]:
    """The teacher nodes, besides its origin, whose computation `node` took over when a rewrite
    replaced them with it."""
    return node.meta.get(ABSORBED, frozenset())


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


def _state(gm: fx.GraphModule, nodes: list[fx.Node]) -> tuple:
    """What a replacement is built from: the matched nodes, their operands and modules."""
    return tuple((n, n.args, tuple(n.kwargs.items()),
                  gm.get_submodule(n.target) if n.op == "call_module" else None) for n in nodes)


def _discard(gm: fx.GraphModule, created: list[fx.Node]) -> None:
    for node in reversed(created):
        gm.graph.erase_node(node)


def apply_rules(gm: fx.GraphModule, rules: RuleSet, *, debug: bool = False, max_rewrites: int | None = None,
                root_filter: Callable[[fx.Node], bool] | None = None, evaluate: Evaluate | None = None,
                target: Any = None, declines: dict | None = None, recompile: bool = True) -> RewriteStats:
    """Rewrite `gm` in place until no rule applies. `root_filter` limits which nodes may be roots;
    with `debug`, record why candidates did not match. Without `evaluate` the first rule (by
    priority) that builds a replacement wins; with it, every matching rule builds one and the
    cheapest accepted one wins. `target` is handed to replacement functions through the Rewriter.

    `declines` remembers what `evaluate` declined, by rule and matched nodes with their operands
    (and modules): a later run on the same graph declines such a match again without building its
    replacement. Rewrites build new nodes and modules rather than editing them, so an unchanged
    match builds the same products; the confirming round of a lowering is mostly such matches.
    Without `recompile` the module's code is not regenerated (a pass manager does it once per run)."""
    stats = RewriteStats()
    limit = max_rewrites if max_rewrites is not None else 4 * len(gm.graph.nodes) + 100
    worklist = collections.deque(gm.graph.nodes)
    queued = set(worklist)
    erased: set[fx.Node] = set()
    fake_mode: FakeTensorMode | None = None  # made for the first replacement built: most runs build none
    built = False  # whether any replacement was built (it may have added submodules, kept or not)
    declines_seen = declines if declines is not None else {}
    while worklist:
        node = worklist.popleft()
        queued.discard(node)
        if node in erased or node.op in ("placeholder", "output", "get_attr"):
            continue
        rooted = rules.for_kind(op_view(node).kind)
        # the filter (a target verdict) is dearer than the kind lookup, which most nodes fail
        if not rooted or (root_filter is not None and not root_filter(node)):
            continue
        candidates: list[_Candidate] = []
        for rule in rooted:
            found = rule.pattern.match(node)
            if isinstance(found, str):
                if debug:
                    stats.misses[rule.name].append(found)
                continue
            memo_key = (rule.name, _state(gm, found.nodes)) if declines is not None else None
            if memo_key in declines_seen:
                stats.declined[rule.name].append(f"{node.name}: {declines_seen[memo_key]}")
                continue
            fake_mode = fake_mode or FakeTensorMode(allow_non_fake_inputs=True)
            rewriter = Rewriter(gm, fake_mode, target)
            built = True
            result = rule.replace(found, rewriter)
            if not isinstance(result, Decline) and evaluate is not None:
                verdict = evaluate(node, found, rewriter.created)
                result = verdict if isinstance(verdict, Decline) else result
                if isinstance(verdict, Decline) and memo_key is not None:
                    declines_seen[memo_key] = verdict.reason
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
        node.replace_all_uses_with(best.result)
        merged: set[str] = set()
        # captures are recorded operands first, so reversed order erases users before producers;
        # then what only erased nodes read (a position table whose lookup a rewrite evaluated once)
        matched = set(best.match.nodes)
        orphans = list(reversed(best.match.nodes))
        while orphans:
            dead = orphans.pop(0)
            # a matched node is replaced whatever it is (a dropout is impure to torch.fx); an orphan
            # only when it is pure
            if dead not in erased and not dead.users and dead.op not in ("placeholder", "output") \
                    and (dead in matched or not dead.is_impure()):
                merged |= {origin_of(dead), *absorbed_by(dead)}
                orphans.extend(dead.all_input_nodes)
                gm.graph.erase_node(dead)
                erased.add(dead)
        origin = origin_of(node)
        merged.discard(origin)
        for made in best.rewriter.created:
            made.meta[ORIGIN] = origin
            if MODULE_STACK in node.meta:  # the teacher block it belongs to (fxrewrite.distill.regions.blocks)
                made.meta.setdefault(MODULE_STACK, node.meta[MODULE_STACK])
            if merged:
                made.meta[ABSORBED] = frozenset(merged)
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
        drop_unused_attributes(gm, submodules=recompile)
    if stats.total:
        gm.graph.lint()
        if recompile:
            gm.recompile()
    return stats


def drop_unused_attributes(gm: fx.GraphModule, submodules: bool = True) -> None:
    """Erase constants nothing reads and, with `submodules`, the layers no node calls (a walk over
    every module: a pass manager does it once per run)."""
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
    if submodules:
        gm.delete_all_unused_submodules()
