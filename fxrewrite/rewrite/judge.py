"""Judging one replacement on the target: what it produces must be legal, and its estimated cost is
what the driver compares when several rules could replace the same node.

The lowering planner extends this with trial legalization (it first runs the pipeline on the
products, so a rewrite that needs further rewrites is judged by where they lead)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple, Protocol

from torch import fx

from fxrewrite.cost import nodes_cycles
from fxrewrite.rewrite.driver import origin_of
from fxrewrite.rewrite.pattern import Decline, Match
from fxrewrite.target import Target


class Outcome(NamedTuple):
    """What a replacement ends as: the reason one of its nodes is illegal (None if all are legal), its cost."""

    illegal: str | None
    cost: float


class JudgedPass(Protocol):
    name: str
    trigger: str


def _replaced(root: fx.Node, match: Match) -> list[fx.Node]:
    """The matched nodes a replacement takes the place of: the root and those only the match reads."""
    return [n for n in match.nodes if n is root or set(n.users) <= set(match.nodes)]


class ReplacementJudge:
    """Products must be legal on `target`; a pass that fires on cost must save some; a node the growth
    budget keeps (`kept`: teacher node name -> reason) is not rewritten for legality, as a root or as
    part of a match. Returns the change in estimated cost (products minus the nodes they replace) or
    a Decline."""

    def __init__(self, target: Target, kept: Mapping[str, str] | None = None):
        self.target = target
        self.kept = kept or {}

    def __call__(self, pass_: JudgedPass, root: fx.Node, match: Match, created: list[fx.Node]) -> float | Decline:
        if pass_.trigger != "cheaper":
            kept = next((origin_of(n) for n in _replaced(root, match) if origin_of(n) in self.kept), None)
            if kept is not None:
                return Decline(self.kept[kept])
        return self.judge_created(pass_, root, match, created) if created else 0.0

    def judge_created(self, pass_: JudgedPass, root: fx.Node, match: Match, created: list[fx.Node]) -> float | Decline:
        """The judgement of a replacement that built `created` (the trial judge legalizes them first)."""
        return self.judge_products(pass_, root, match, created)

    def judge_products(self, pass_: JudgedPass, root: fx.Node, match: Match,
                       products: Iterable[fx.Node]) -> float | Decline:
        return self.compare(pass_, root, match, self.outcome(products))

    def outcome(self, products: Iterable[fx.Node]) -> Outcome:
        """Why the products are illegal (None when they are legal), and their estimated cost."""
        products = list(products)
        for node in products:
            verdict = self.target.verdict(node)
            if not verdict.legal:
                return Outcome(verdict.reason, 0.0)
        return Outcome(None, nodes_cycles(products, self.target.performance))

    def compare(self, pass_: JudgedPass, root: fx.Node, match: Match, outcome: Outcome) -> float | Decline:
        target = self.target
        if outcome.illegal is not None:
            return Decline(f"what it produces stays illegal on {target.name} ({outcome.illegal}); "
                           "left for distillation")
        before, after = nodes_cycles(_replaced(root, match), target.performance), outcome.cost
        if pass_.trigger == "cheaper" and after >= before:
            return Decline(f"not cheaper on {target.name}: estimated {after:.3g} cycles against {before:.3g} now")
        return after - before
