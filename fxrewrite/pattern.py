"""Declarative patterns over op views, rules, and the greedy rewrite driver.

A `Pattern` matches a node by op kind, attribute predicates (each with words for the failure
reason), operand patterns with named captures, and how many users a matched intermediate may have.
A `Rule` is a pattern plus a replacement function that returns the node replacing the root, or a
`Decline` saying why not. `apply_rules` runs a rule set over a graph with a worklist until nothing
matches (a fixpoint), highest priority first, dispatching on the root's op kind.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from fxrewrite.ops import OpView, op_view, tensor_shape

Predicate = Callable[[OpView], bool]


@dataclass(frozen=True)
class Pattern:
    kinds: frozenset[str] | None
    where: tuple[tuple[str, Predicate], ...] = ()
    operands: tuple[Pattern | None, ...] | None = None
    name: str | None = None
    single_user: bool = False

    def match(self, node: fx.Node) -> Match | str:
        """A Match, or the reason this node does not match."""
        captures: dict[str, OpView] = {}
        reason = self._match(node, captures, is_root=True)
        return reason if reason is not None else Match(captures, tuple(v.node for v in captures.values()))

    def _match(self, node: Any, captures: dict[str, OpView], is_root: bool) -> str | None:
        if not isinstance(node, fx.Node):
            return f"operand {node!r} is not a node"
        view = op_view(node)
        label = "/".join(sorted(self.kinds or {"any op"}))
        if self.kinds is not None and view.kind not in self.kinds:
            return f"{node.name} is {view.kind}, not {label}"
        for words, predicate in self.where:
            if not predicate(view):
                return f"{node.name} ({view.kind}): not {words}"
        if self.single_user and not is_root and len(node.users) != 1:
            return f"{node.name} has {len(node.users)} users; the rewrite needs it to have one"
        if self.operands is not None:
            if len(view.inputs) < len(self.operands):
                return f"{node.name} has {len(view.inputs)} operands, pattern expects {len(self.operands)}"
            for sub, operand in zip(self.operands, view.inputs):
                if sub is not None and (reason := sub._match(operand, captures, is_root=False)) is not None:
                    return reason
        if self.name is not None:
            captures[self.name] = view
        return None


def op(kinds: str | Iterable[str] | None, *operands: Pattern | None, name: str | None = None,
       where: Mapping[str, Predicate] | None = None, single_user: bool = False) -> Pattern:
    """Build a pattern: ``op("batch_norm", op("conv2d", name="conv", single_user=True), name="bn")``."""
    kind_set = None if kinds is None else frozenset([kinds] if isinstance(kinds, str) else kinds)
    return Pattern(kind_set, tuple((where or {}).items()), operands or None, name, single_user)


@dataclass(frozen=True)
class Match:
    captures: Mapping[str, OpView]
    nodes: tuple[fx.Node, ...]

    def __getitem__(self, name: str) -> OpView:
        return self.captures[name]


@dataclass(frozen=True)
class Decline:
    """A replacement function's refusal, with the reason a person can act on."""

    reason: str


class Rewriter:
    """Builds replacement nodes before an anchor node and gives each its shape metadata."""

    def __init__(self, gm: fx.GraphModule, fake_mode: FakeTensorMode | None = None, target: Any = None):
        self.gm = gm
        #: the Target being lowered to, when there is one (for limits such as in_channels_max)
        self.target = target
        self.created: list[fx.Node] = []
        #: what the rewrite wants reported (e.g. the cost of what it produced)
        self.notes: list[str] = []
        self._fake = fake_mode or FakeTensorMode(allow_non_fake_inputs=True)

    def module(self, anchor: fx.Node, prefix: str, module: nn.Module, *args: Any) -> fx.Node:
        name = self._unique(prefix)
        self.gm.add_submodule(name, module)
        with self.gm.graph.inserting_before(anchor):
            node = self.gm.graph.call_module(name, args)
        return self._annotate(node, lambda *xs: module(*xs))

    def function(self, anchor: fx.Node, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> fx.Node:
        with self.gm.graph.inserting_before(anchor):
            node = self.gm.graph.call_function(fn, args, kwargs)
        return self._annotate(node, lambda *xs, **kw: fn(*xs, **kw))

    def _unique(self, prefix: str) -> str:
        # the next free index per prefix lives on the graph module, so naming stays O(1) per rewrite
        counters = self.gm.meta.setdefault("fxrewrite_next_name", collections.Counter())
        base = prefix.replace(".", "_")
        while hasattr(self.gm, f"{base}_{counters[base]}"):
            counters[base] += 1
        counters[base] += 1
        return f"{base}_{counters[base] - 1}"

    def _annotate(self, node: fx.Node, run: Callable[..., Any]) -> fx.Node:
        def fake(arg: fx.Node) -> torch.Tensor:
            meta = arg.meta["tensor_meta"]
            return torch.empty(meta.shape, dtype=meta.dtype)

        with self._fake:
            args = fx.node.map_arg(node.args, fake)
            kwargs = fx.node.map_arg(node.kwargs, fake)
            result = run(*args, **kwargs)
        node.meta["tensor_meta"] = _extract_tensor_metadata(result)
        self.created.append(node)
        return node


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: Pattern
    replace: Callable[[Match, Rewriter], fx.Node | Decline]
    priority: int = 0

    @property
    def root_kinds(self) -> frozenset[str] | None:
        return self.pattern.kinds


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]

    def __add__(self, other: RuleSet) -> RuleSet:
        return RuleSet(self.rules + other.rules)

    def for_kind(self, kind: str) -> list[Rule]:
        return _rules_for(self.rules, kind)


@functools.lru_cache(maxsize=1024)
def _rules_for(rules: tuple[Rule, ...], kind: str) -> list[Rule]:
    return sorted((r for r in rules if r.root_kinds is None or kind in r.root_kinds), key=lambda r: -r.priority)


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
    _drop_unused_attributes(gm)
    gm.graph.lint()
    gm.recompile()
    return stats


def _drop_unused_attributes(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()


def same_shape(a: fx.Node, b: fx.Node) -> bool:
    return tensor_shape(a) is not None and tensor_shape(a) == tensor_shape(b)
