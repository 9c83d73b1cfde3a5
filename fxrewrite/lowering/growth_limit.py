"""The growth limit: with exact rewrites alone, no model ends dearer on its target than the target's
`growth_max` times the teacher, in estimated cycles or in MACs.

Every node a rewrite builds inherits the origin of the node it replaced (fxrewrite.rewrite.origin_of:
the teacher node's name), so the lowered graph's cycles and MACs can be charged to the teacher's
nodes. When the lowered model is over the limit, the teacher nodes whose exact rewrites add the most,
as a share of the teacher's cycles or MACs (the larger of the two), are kept as they were until the
rest fits; the lowering runs again with them kept, and they are reported for distillation with the
reason. A per-rewrite limit would judge a rewrite against the illegal op's hypothetical cost (SiLU
rebuilt as x * sigmoid(x) "costs" 2.5 SiLUs); the model's total is what the user runs.

With calibration data, a node whose exact rewrites cost more than a student may (the student
budget) times its own cost is distilled instead, where that excess is a material share
(MATERIAL_SHARE) of the teacher's cost: a residual add that archnet runs only as concat + dense conv
adds a third of a small ConvNeXt's MACs, while the SiLU rebuild adds a negligible share, and no
student is cheaper than those two ops.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from torch import fx

from fxrewrite.cost import Cost, node_cycles, node_macs
from fxrewrite.ir import op_view
from fxrewrite.rewrite import absorbed_by, origin_of
from fxrewrite.target import Target
from fxrewrite.target.host_cpu import host_node_cycles

#: the share of the teacher's cycles or MACs a node's exact rewrites must add before a student is tried instead
MATERIAL_SHARE = 0.05

#: estimated cost per teacher node name
Charges = dict[str, Cost]


def runs_on_host(node: fx.Node, target: Target) -> bool:
    """Whether the target's flow runs `node` on its host CPU: an op the chip cannot run, where there is one."""
    return bool(target.performance.host_cpu) and not target.verdict(node).legal


def charges(gm: fx.GraphModule, target: Target) -> Charges:
    """Estimated cycles and MACs of `gm`, summed per teacher node they descend from. On a target whose
    flow runs what the chip cannot on a host CPU, an illegal node costs that CPU's estimate."""
    charged: Charges = {}
    perf = target.performance
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr") or (view := op_view(node)).structural:
            continue
        cycles = host_node_cycles(view) if runs_on_host(node, target) else node_cycles(view, perf)
        origin = origin_of(node)
        charged[origin] = charged.get(origin, Cost(0.0, 0)) + Cost(cycles, node_macs(view))
    return charged


def merged_origins(gm: fx.GraphModule) -> dict[str, frozenset[str]]:
    """Per teacher node, the other teacher nodes rewrites merged into what it became: keeping one of
    them for distillation keeps the others (a conv kept while its batch norm folds into a copy of
    it would be rewritten all the same)."""
    merged: dict[str, frozenset[str]] = {}
    for node in gm.graph.nodes:
        if absorbed := absorbed_by(node):
            merged[origin_of(node)] = merged.get(origin_of(node), frozenset()) | absorbed
    return merged


def with_merged(keep: dict[str, str], merged: Mapping[str, frozenset[str]]) -> dict[str, str]:
    """`keep` and, for each node in it, the teacher nodes merged with it, kept for the same reason."""
    grown = dict(keep)
    for origin, reason in keep.items():
        for other in merged.get(origin, ()):
            grown.setdefault(other, f"kept with {origin}, which a rewrite merged it into: {reason}")
    return grown


def _candidates(before: Cost, after: Cost, student: Cost | None = None) -> str:
    """The candidates a choice weighed, with their estimated costs, for a kept node's reason."""
    def cost(c: Cost) -> str:
        return f"{c.cycles:.3g} cycles, {c.macs:.3g} MACs"
    said = f"candidates: as it is ({cost(before)}), exact rewrites ({cost(after)})"
    return said + (f", a student of at most {cost(student)}" if student is not None else "")


def _grouped(charged: Charges, merged: Mapping[str, frozenset[str]]) -> Charges:
    """`charged` with each merged node's cost added to the node it was merged into."""
    grouped = dict(charged)
    for origin, others in merged.items():
        for other in others - {origin}:
            if other in grouped:
                grouped[origin] = grouped.get(origin, Cost(0.0, 0)) + grouped.pop(other)
    return grouped


def _total(charged: Charges) -> Cost:
    return sum(charged.values(), Cost(0.0, 0))


@dataclass(frozen=True)
class GrowthLimit:
    """The teacher's charges and the limit; `over` and `dearer_than_students` say which teacher nodes
    to keep, given the charges of a lowering."""

    teacher: Charges
    limit: float | None
    target_name: str
    #: teacher nodes that read integer tensors (an embedding's token ids): no student reads integers
    integer_readers: frozenset[str] = frozenset()
    #: teacher nodes the target's flow runs on its host CPU: their rewrites are judged by cycles alone
    #: (the CPU's arithmetic is not the NPU's MACs, so a rewrite onto the NPU adds MACs and saves cycles)
    on_host: frozenset[str] = frozenset()

    @classmethod
    def of(cls, teacher: fx.GraphModule, target: Target, limit: float | None) -> GrowthLimit:
        readers = frozenset(n.name for n in teacher.graph.nodes if any(
            (meta := a.meta.get("tensor_meta")) is not None and hasattr(meta, "dtype")
            and not meta.dtype.is_floating_point for a in n.all_input_nodes))
        on_host = frozenset(n.name for n in teacher.graph.nodes
                            if n.op not in ("placeholder", "output", "get_attr") and runs_on_host(n, target))
        return cls(charges(teacher, target), limit, target.name, readers, on_host)

    def growth(self, charged: Charges) -> tuple[float, float]:
        """The lowered graph's estimated cycles and MACs as multiples of the teacher's (MACs 1 without any)."""
        total, teacher = _total(charged), _total(self.teacher)
        cycles, macs = total.ratios(teacher)
        return cycles, macs if teacher.macs else 1.0

    def _added(self, charged: Charges, kept: Mapping[str, str], merged: Mapping[str, frozenset[str]],
               ) -> dict[str, tuple[Cost, Cost, tuple[float, float]]]:
        """Per teacher node not in `kept` and lowered: its cost before, after, and what it adds as
        shares of the teacher's cycles and MACs. Nodes a rewrite merged are judged together, under the
        node the result descends from: a batch norm folded into its conv (free on a chip that fuses
        it) is charged the folded conv, which its conv no longer costs."""
        total = _total(self.teacher)
        teacher, charged = _grouped(self.teacher, merged), _grouped(charged, merged)
        added = {}
        for origin, before in teacher.items():
            if origin in kept or origin not in charged:
                continue
            after = charged[origin]
            increase = Cost(after.cycles - before.cycles, after.macs - before.macs)
            added[origin] = (before, after, increase.ratios(total))
        return added

    def over(self, charged: Charges, kept: Mapping[str, str], all_exact: tuple[float, float],
             merged: Mapping[str, frozenset[str]] = {}) -> dict[str, str]:
        """Teacher nodes (not in `kept` yet) to keep so the lowering (`charged`) fits the limit, each
        with its reason (`all_exact`: the cycles and MACs growth with every exact rewrite); empty when
        it fits."""
        if self.limit is None:
            return {}
        teacher_total, lowered_total = _total(self.teacher), _total(charged)
        cycles_excess = lowered_total.cycles - self.limit * teacher_total.cycles
        macs_excess = lowered_total.macs - self.limit * teacher_total.macs if teacher_total.macs else -1.0
        cycles_growth, macs_growth = all_exact
        suggestion = math.ceil(max(all_exact) * 10) / 10
        added = self._added(charged, kept, merged)
        # MACs a rewrite moves from the host CPU onto the NPU do not count against the limit
        macs_excess -= sum(after.macs - before.macs for o, (before, after, _) in added.items() if o in self.on_host)
        growing = {o: item for o, item in added.items()
                   if (item[2][0] if o in self.on_host else max(item[2])) > 0}
        keep: dict[str, str] = {}
        for origin, (before, after, shares) in sorted(growing.items(), key=lambda item: -max(item[1][2])):
            if cycles_excess <= 0 and macs_excess <= 0:
                break
            cycles_excess -= after.cycles - before.cycles
            macs_excess -= after.macs - before.macs
            keep[origin] = (f"kept for distillation: its exact rewrites would add {shares[0]:.1%} of the teacher's "
                            f"estimated cycles and {shares[1]:.1%} of its MACs, and with every exact rewrite the "
                            f"model costs x{cycles_growth:.3g} the cycles and x{macs_growth:.3g} the MACs (limit "
                            f"{self.limit:g} on {self.target_name}): pass --calib to distil it, or --max-growth "
                            f"{suggestion:g}; {_candidates(before, after)}")
        return keep

    def dearer_than_students(self, charged: Charges, kept: Mapping[str, str], student_budget: float,
                             merged: Mapping[str, frozenset[str]] = {}) -> dict[str, str]:
        """Teacher nodes (not in `kept`) whose exact rewrites cost more than `student_budget` times the
        node and add at least MATERIAL_SHARE of the teacher's cycles or MACs, each with its reason;
        never a node reading integers (an embedding's one-hot form is the only legal way to read ids)."""
        keep: dict[str, str] = {}
        for origin, (before, after, shares) in self._added(charged, kept, merged).items():
            if origin in self.integer_readers:
                continue
            cycles_growth = after.cycles / max(before.cycles, 1e-12)
            if origin in self.on_host:
                growth, share = cycles_growth, shares[0]
            else:
                macs_growth = after.macs / before.macs if before.macs else math.inf if after.macs else 1.0
                growth = max(cycles_growth, macs_growth)
                share = max(shares)
            if growth > student_budget and share >= MATERIAL_SHARE:
                keep[origin] = (f"distilled instead: its exact rewrites would cost x{growth:.3g} its estimated cycles "
                                f"or MACs and add {share:.1%} of the teacher's, more than a student may cost "
                                f"(--student-budget {student_budget:g}); "
                                f"{_candidates(before, after, before.scaled(student_budget))}")
        return keep
