"""Judging one replacement on the target: what it produces must be legal, and its estimated cost is
what the driver compares when several rules could replace the same node.

The lowering planner extends this with trial legalization (it first runs the pipeline on the
products, so a rewrite that needs further rewrites is judged by where they lead)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from torch import fx

from fxrewrite.cost import nodes_cost
from fxrewrite.rewrite.pattern import Decline, Match
from fxrewrite.target import Target


class JudgedPass(Protocol):
    name: str
    trigger: str


class ReplacementJudge:
    """Products must be legal on `target`; a pass that fires on cost must save some; no replacement
    may cost more than `growth_max` times the nodes it replaces. Returns the change in estimated
    cost (products minus the nodes they replace) or a Decline."""

    def __init__(self, target: Target):
        self.target = target

    def __call__(self, pass_: JudgedPass, root: fx.Node, match: Match, created: list[fx.Node]) -> float | Decline:
        return self.judge_products(pass_, root, match, created) if created else 0.0

    def judge_products(self, pass_: JudgedPass, root: fx.Node, match: Match,
                       products: Iterable[fx.Node]) -> float | Decline:
        target = self.target
        products = list(products)
        for node in products:
            verdict = target.verdict(node)
            if not verdict.legal:
                return Decline(f"what it produces stays illegal on {target.name} ({verdict.reason}); "
                               "left for distillation")
        replaced = [n for n in match.nodes if n is root or set(n.users) <= set(match.nodes)]
        before, after = nodes_cost(replaced, target.cost), nodes_cost(products, target.cost)
        if pass_.trigger == "cheaper" and after >= before:
            return Decline(f"not cheaper on {target.name}: estimated cost {after:.3g} against {before:.3g} now")
        growth_max = target.cost.growth_max
        if growth_max is not None and after > growth_max * before:
            return Decline(f"its legal form costs {after / max(before, 1e-12):.3g}x the nodes it replaces, over "
                           f"cost.growth_max = {growth_max:g} of {target.name}; left for distillation")
        return after - before
