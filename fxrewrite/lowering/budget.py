"""The growth budget: with exact rewrites alone, no model ends dearer on its target than the target's
`growth_max` times the teacher, in estimated cycles or in MACs.

Every node a rewrite builds inherits the origin of the node it replaced (fxrewrite.rewrite.origin_of:
the teacher node's name), so the lowered graph's cycles and MACs can be charged to the teacher's
nodes. When the lowered model is over budget, the teacher nodes whose exact rewrites add the most,
as a share of the teacher's cycles or MACs (the larger of the two), are kept as they were until the
rest fits; the lowering runs again with them kept, and they are reported for distillation with the
reason. With calibration data, a node whose exact rewrites cost more than a student may (the
student budget) times its own cost is distilled instead, where that excess is a material share
(MATERIAL_SHARE) of the teacher's cost: a residual add that archnet runs only as concat + dense conv
adds a third of a small ConvNeXt's MACs, while SiLU rebuilt as x * sigmoid(x) costs 2.5 SiLUs but
a negligible share, and no student is cheaper than those two ops. A per-rewrite limit would judge a rewrite against the illegal op's hypothetical cost (SiLU
rebuilt as x * sigmoid(x) "costs" 2.5 SiLUs); the model's total is what the user runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from torch import fx

from fxrewrite.cost import node_cycles, node_macs
from fxrewrite.ir import op_view
from fxrewrite.rewrite import origin_of
from fxrewrite.target import Target


#: the share of the teacher's cycles or MACs a node's exact rewrites must add before a student is tried instead
MATERIAL_SHARE = 0.05


@dataclass(frozen=True)
class Charge:
    cycles: float
    macs: int


def charges(gm: fx.GraphModule, target: Target) -> dict[str, Charge]:
    """Estimated cycles and MACs of `gm`, summed per teacher node they descend from."""
    cycles: dict[str, float] = {}
    macs: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr") or (view := op_view(node)).structural:
            continue
        origin = origin_of(node)
        cycles[origin] = cycles.get(origin, 0.0) + node_cycles(view, target.performance)
        macs[origin] = macs.get(origin, 0) + node_macs(view)
    return {origin: Charge(cycles[origin], macs[origin]) for origin in cycles}


def _total(charged: Mapping[str, Charge]) -> Charge:
    return Charge(sum(c.cycles for c in charged.values()), sum(c.macs for c in charged.values()))


def _growth(total: Charge, teacher: Charge) -> tuple[float, float]:
    return total.cycles / max(teacher.cycles, 1e-12), total.macs / teacher.macs if teacher.macs else 1.0


@dataclass(frozen=True)
class GrowthBudget:
    """The teacher's charges and the limit; `over` says which teacher nodes to keep when a lowering exceeds it."""

    teacher: dict[str, Charge]
    limit: float | None
    target_name: str

    @classmethod
    def of(cls, teacher: fx.GraphModule, target: Target, limit: float | None) -> GrowthBudget:
        return cls(charges(teacher, target), limit, target.name)

    def growth(self, lowered: fx.GraphModule, target: Target) -> tuple[float, float]:
        """The lowered graph's estimated cycles and MACs as multiples of the teacher's."""
        return _growth(_total(charges(lowered, target)), _total(self.teacher))

    def over(self, lowered: fx.GraphModule, target: Target, kept: Mapping[str, str],
             all_exact: tuple[float, float]) -> dict[str, str]:
        """Teacher nodes (not in `kept` yet) to keep so the lowering fits the limit, each with its reason
        (`all_exact`: the cycles and MACs growth with every exact rewrite); empty when it fits."""
        if self.limit is None:
            return {}
        charged = charges(lowered, target)
        teacher_total = _total(self.teacher)
        cycles_growth, macs_growth = all_exact
        cycles_excess = _total(charged).cycles - self.limit * teacher_total.cycles
        macs_excess = _total(charged).macs - self.limit * teacher_total.macs if teacher_total.macs else -1.0
        added = {}
        for origin, before in self.teacher.items():
            after = charged.get(origin, Charge(0.0, 0))
            shares = ((after.cycles - before.cycles) / max(teacher_total.cycles, 1e-12),
                      (after.macs - before.macs) / teacher_total.macs if teacher_total.macs else 0.0)
            if origin not in kept and max(shares) > 0:
                added[origin] = (after.cycles - before.cycles, after.macs - before.macs, shares)
        suggestion = math.ceil(max(cycles_growth, macs_growth) * 10) / 10
        keep: dict[str, str] = {}
        for origin, (cycles, macs, shares) in sorted(added.items(), key=lambda item: -max(item[1][2])):
            if cycles_excess <= 0 and macs_excess <= 0:
                break
            cycles_excess -= cycles
            macs_excess -= macs
            keep[origin] = (f"kept for distillation: its exact rewrites would add {shares[0]:.1%} of the teacher's "
                            f"estimated cycles and {shares[1]:.1%} of its MACs, and with every exact rewrite the "
                            f"model costs x{cycles_growth:.3g} the cycles and x{macs_growth:.3g} the MACs (limit "
                            f"{self.limit:g} on {self.target_name}): pass --calib to distil it, or --max-growth "
                            f"{suggestion:g}")
        return keep

    def dearer_than_students(self, lowered: fx.GraphModule, target: Target, kept: Mapping[str, str],
                             student_budget: float) -> dict[str, str]:
        """Teacher nodes (not in `kept`) whose exact rewrites cost more than `student_budget` times the
        node and add at least MATERIAL_SHARE of the teacher's cycles or MACs, each with its reason."""
        charged = charges(lowered, target)
        total = _total(self.teacher)
        keep: dict[str, str] = {}
        for origin, before in self.teacher.items():
            after = charged.get(origin)
            if origin in kept or after is None:
                continue
            growth = max(after.cycles / max(before.cycles, 1e-12),
                         after.macs / before.macs if before.macs else math.inf if after.macs else 1.0)
            share = max((after.cycles - before.cycles) / max(total.cycles, 1e-12),
                        (after.macs - before.macs) / total.macs if total.macs else 0.0)
            if growth > student_budget and share >= MATERIAL_SHARE:
                keep[origin] = (f"distilled instead: its exact rewrites would cost x{growth:.3g} its estimated cycles "
                                f"or MACs and add {share:.1%} of the teacher's, more than a student may cost "
                                f"(--student-budget {student_budget:g})")
        return keep
