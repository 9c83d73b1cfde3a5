"""What a pass is: a name, whether it is exact, the op kinds it roots on, reads and produces, and
the passes it must run before; `PatternPass` builds one from rules. The registry holds one pass per
name (a second registration is an error); `fxrewrite.passes` fills it on import."""

from __future__ import annotations

import sys

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import fx

from fxrewrite.rewrite.driver import Evaluate, RewriteStats, apply_rules
from fxrewrite.rewrite.judge import ReplacementJudge
from fxrewrite.rewrite.pattern import Decline, Match, RuleSet
from fxrewrite.target import Target

#: judges one replacement of a pass: its change in estimated cost, or a Decline (set by the planner)
Judge = Callable[["PatternPass", fx.Node, Match, list[fx.Node]], "float | Decline"]


@dataclass
class PassContext:
    example_inputs: tuple[torch.Tensor, ...]
    target: Target | None = None
    debug: bool = False
    #: judges each replacement; by default, with a target, on the target's verdicts and cost (the
    #: planner passes one that legalizes products in a trial first); without one the first rule wins
    judge: Judge | None = None
    #: the judge's declines so far, by rule and matched nodes (see fxrewrite.rewrite.driver.apply_rules):
    #: the rounds that run with this context build no replacement twice to decline it twice
    declines: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.judge is None and self.target is not None:
            self.judge = ReplacementJudge(self.target)

    def is_candidate(self, node: fx.Node) -> bool:
        """Without a target every node is a candidate; with one, only nodes the target rejects."""
        return self.target is None or not self.target.verdict(node).legal


@dataclass
class PassResult:
    name: str
    rewrites: int
    seconds: float
    stats: RewriteStats | None = None
    notes: list[str] = field(default_factory=list)


class Pass(Protocol):
    name: str
    summary: str
    exact: bool
    root_ops: frozenset[str]
    #: kinds it inspects around its roots (e.g. a producer's kind), so it must see them before they are rewritten
    reads_ops: frozenset[str]
    produces_ops: frozenset[str]
    must_precede: tuple[str, ...]
    #: passes it must run after: a new pass states its own place, without editing the passes before it
    must_follow: tuple[str, ...]

    def run(self, gm: fx.GraphModule, ctx: PassContext, recompile: bool = True) -> PassResult: ...


@dataclass(frozen=True)
class PatternPass:
    """A pass made of pattern rules; it only rewrites roots the target rejects."""

    name: str
    summary: str
    rules: RuleSet
    produces_ops: frozenset[str]
    exact: bool = True
    must_precede: tuple[str, ...] = ()
    must_follow: tuple[str, ...] = ()
    reads_ops: frozenset[str] = frozenset()
    #: "illegal": rewrite nodes the target rejects; "cheaper": rewrite any node when the target's cost drops
    trigger: str = "illegal"

    @property
    def root_ops(self) -> frozenset[str]:
        return frozenset().union(*(r.root_kinds or frozenset() for r in self.rules.rules))

    def run(self, gm: fx.GraphModule, ctx: PassContext, recompile: bool = True) -> PassResult:
        """Rewrite `gm` in place; without `recompile` its code is left for the caller to regenerate."""
        start = time.perf_counter()
        evaluate: Evaluate | None = None
        if ctx.judge is not None:
            judge = ctx.judge
            evaluate = lambda root, match, created: judge(self, root, match, created)  # noqa: E731
        root_filter = ctx.is_candidate if self.trigger == "illegal" else None
        stats = apply_rules(gm, self.rules, debug=ctx.debug, root_filter=root_filter, evaluate=evaluate,
                            target=ctx.target, declines=ctx.declines, recompile=recompile)
        return PassResult(self.name, stats.total, time.perf_counter() - start, stats)


_REGISTRY: dict[str, Pass] = {}
_ORIGINS: dict[str, str] = {}


def register(pass_: Pass) -> Pass:
    if pass_.name in _REGISTRY:
        raise RuntimeError(f"pass {pass_.name!r} is registered twice")
    _REGISTRY[pass_.name] = pass_
    # the module that registers it, so that a test can hold one pass per file of passes/
    _ORIGINS[pass_.name] = sys._getframe(1).f_globals.get("__name__", "")
    return pass_


def pass_module(name: str) -> str:
    """The module that registered the pass `name`."""
    return _ORIGINS[name]


def registered_passes() -> dict[str, Pass]:
    """Every registered pass by name (import fxrewrite.passes to register the library's)."""
    return dict(_REGISTRY)
