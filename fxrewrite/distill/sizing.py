"""Students sized by cost: each student may cost at most `budget` times its teacher region's estimated
cycles and MACs on the target (DEFAULT_STUDENT_BUDGET, `--student-budget`).

Both are estimated the same way, at the shapes the region was recorded at, after the batch norms
are folded into the layers before them (as they are when the student is deployed). The policy
follows Restructurable Activation Networks' observation that non-linear units are what a network
can spare before width: candidates run from the widest, deepest student down, dropping a layer
before narrowing (widths x1, x3/4, x1/2, x3/8, x1/4 of the region's channels, at least MIN_WIDTH),
and the first that fits the budget is taken. When none fits, the smallest is taken and the report
says by how much it misses. A region too cheap for any student to match (a head of a few hundred
MACs) may still spend FLOOR_SHARE of the whole teacher's cost: its student is then immaterial to
the model's cost, and a starved one would be what the model's accuracy hangs on. A student that
misses its accuracy may grow one step (fxrewrite.distill.growth) to GROWTH_CAP times its allowance,
or further where the whole network stays within `budget` times the teacher's cycles (`spare`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fxrewrite.cost import Cost, Estimate, graph_macs
from fxrewrite.quant.prepare import fold_for_quantization
from fxrewrite.target import Target

DEFAULT_STUDENT_BUDGET = 1.0
#: a student that misses its accuracy may grow one step, to at most this many times its allowance
GROWTH_CAP = 1.5
#: the share of the whole teacher's cycles and MACs any one student may spend, whatever its region costs
FLOOR_SHARE = 0.05
WIDTH_STEPS = (1.0, 0.75, 0.5, 0.375, 0.25)
MIN_WIDTH = 4


def module_cost(module: nn.Module, inputs: Sequence[torch.Tensor], target: Target) -> Cost:
    """Estimated cycles and MACs of `module` on `target` at the shapes of `inputs`, batch norms folded;
    a student as it is deployed (Student.deployed)."""
    module = copy.deepcopy(module).eval()
    # by attribute, not fxrewrite.distill.students.base.deployed: the students package imports this module
    with torch.no_grad():
        folded = fold_for_quantization(module.deployed() if hasattr(module, "deployed") else module, tuple(inputs))
    return Cost(Estimate.of(folded, target.performance).cycles, graph_macs(folded))


@dataclass(frozen=True)
class Sized:
    """The student chosen, its size in words, and its cost as a multiple of the teacher region's."""

    student: nn.Module
    size: str
    cost_ratio: float
    #: builds the student one step larger, given the cycles the whole network may still spend (None when
    #: the step costs more than GROWTH_CAP x the allowance and adds more than that spare, or there is none)
    larger: Callable[[float], Sized | None] | None = None
    #: whether it costs at most what it was allowed
    fits: bool = True
    #: its estimated cost as deployed
    cost: Cost = field(kw_only=True)


def widths(full: int) -> list[int]:
    """The candidate widths for a region whose full width is `full`, widest first."""
    return sorted({max(min(MIN_WIDTH, full), round(full * step)) for step in WIDTH_STEPS}, reverse=True)


def allowance(region: Cost, model: Cost, budget: float) -> Cost:
    """What one student may cost: `budget` times its region, or FLOOR_SHARE of the model where more."""
    by_region, floor = region.scaled(budget), model.scaled(FLOOR_SHARE)
    return Cost(max(by_region.cycles, floor.cycles), max(by_region.macs, floor.macs))


def spare(model: Cost, regions: Sequence[Cost], students: Sequence[Cost], budget: float) -> float:
    """The estimated cycles the whole network may still spend: `budget` times the teacher `model`'s, less
    the model's with its `regions` replaced by `students` (negative where it is over). Cycles alone: they
    are what the chip runs; MACs bound each student's allowance, so that no student is wide where the
    estimate charges per op, not the network."""
    return model.cycles * budget - (model.cycles - sum(r.cycles for r in regions) + sum(s.cycles for s in students))


def first_within_budget(candidates: Sequence[tuple[str, Callable[[], nn.Module]]], inputs: Sequence[torch.Tensor],
                        teacher: Cost, allowed: Cost, target: Target) -> Sized:
    """The first of the (size label, builder) candidates costing at most `allowed`; else the last. The
    ratio reported is to the teacher region's cost."""
    def built(index: int) -> tuple[Sized, Cost]:
        label, build = candidates[index]
        student = build()
        cost = module_cost(student, inputs, target)
        return Sized(student, label, cost.ratio(teacher), cost=cost), cost

    def step_up(index: int, current: Cost, spare: float) -> Sized | None:
        sized, cost = built(index)
        return sized if cost.within(allowed.scaled(GROWTH_CAP)) or cost.cycles - current.cycles <= spare else None

    for index in range(len(candidates)):
        sized, cost = built(index)
        if cost.within(allowed) or index == len(candidates) - 1:
            return dataclasses.replace(sized, fits=cost.within(allowed),
                                       larger=(lambda spare: step_up(index - 1, cost, spare)) if index > 0 else None)
    raise ValueError("a student needs at least one candidate")
