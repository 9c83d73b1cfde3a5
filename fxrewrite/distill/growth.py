"""A student that misses its accuracy grows one step.

After the blockwise phase each student runs on its region's held-out inputs; one whose output's
mean cosine with the teacher region's stays below GROW_BELOW_COSINE is rebuilt one step larger (the
next candidate of its sizing: a layer more, or the next width up), if that costs at most
sizing.GROWTH_CAP times its allowance or the whole network stays within its budget (the spare cycles,
sizing.spare, taken by the students in graph order as they grow), started from the teacher's layers
again and trained alone for as many epochs as the blockwise phase ran. The report says which grew and
why. The grown names travel in every later checkpoint, so a resumed run rebuilds the same students
before loading their weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite.distill.training.checkpoints import FINETUNE, GROW, Checkpoints, ProgressCallback
from fxrewrite.distill.training.processes import on_main
from fxrewrite.distill.training.recording import Recorded, as_tuple
from fxrewrite.distill.training.schedules import parallel
from fxrewrite.distill.sizing import Sized

GROW_BELOW_COSINE = 0.9


@torch.no_grad()
def held_out_cosines(students: nn.ModuleDict, held_out: Sequence[Recorded]) -> dict[str, float]:
    """Per student, the mean cosine of its outputs with its teacher region's on the held-out records."""
    students.eval()
    scores: dict[str, list[float]] = {name: [] for name in students}
    for entry in held_out:
        for name, (args, wanted) in entry.regions.items():
            for got, want in zip(as_tuple(students[name](*args)), wanted):
                scores[name].append(F.cosine_similarity(got.flatten(1), want.flatten(1)).mean().item())
    students.train()
    return {name: sum(values) / max(len(values), 1) for name, values in scores.items()}


def _replace(name: str, bigger: Sized, students: nn.ModuleDict, sized: dict[str, Sized], teacher: fx.GraphModule,
             device: torch.device) -> None:
    students[name] = bigger.student.to(device)
    students[name].initialise_from(getattr(teacher, name))
    sized[name] = bigger


def grow_missing(students: nn.ModuleDict, sized: dict[str, Sized], teacher: fx.GraphModule, adapters: nn.ModuleDict,
                 cache: Sequence[Recorded], held_out: Sequence[Recorded], epochs: int, lr: float,
                 checkpoints: Checkpoints, progress: ProgressCallback | None, device: torch.device,
                 spare: float) -> dict[str, str]:
    """Grow the students that miss GROW_BELOW_COSINE (see the module docstring), `spare` the estimated
    cycles the whole network may still spend; what happened, per region."""
    if "grown" in checkpoints.extra:  # resumed after the decision: rebuild the same students
        grown = list(checkpoints.extra["grown"])
        for name in grown:
            # the step it took, whatever the spare
            bigger = sized[name].larger(math.inf) if sized[name].larger else None
            if bigger is None:
                raise RuntimeError(f"{name}: the checkpoint says it grew, but no larger student exists")
            _replace(name, bigger, students, sized, teacher, device)
        notes = {name: f"grew to {sized[name].size} (resumed)" for name in grown}
    else:
        cosines = on_main(lambda: held_out_cosines(students, held_out))  # one decision for every process
        grown, notes = [], {}
        for name, cosine in cosines.items():
            if cosine >= GROW_BELOW_COSINE:
                continue
            bigger = sized[name].larger(spare) if sized[name].larger else None
            if bigger is None:
                notes[name] = (f"held-out cosine {cosine:.3f} < {GROW_BELOW_COSINE} after the blockwise phase; no "
                               "larger student within the growth cap or the network's budget")
                continue
            before, spare = sized[name].size, spare - bigger.cost.cycles + sized[name].cost.cycles
            _replace(name, bigger, students, sized, teacher, device)
            grown.append(name)
            notes[name] = (f"held-out cosine {cosine:.3f} < {GROW_BELOW_COSINE} after the blockwise phase: grew from "
                           f"{before} to {bigger.size} (x{bigger.cost_ratio:.2f} its region's cost)")
        checkpoints.extra["grown"] = grown
    if grown and not checkpoints.reached(FINETUNE):
        parallel(students, adapters, cache, epochs, lr, checkpoints, progress, names=grown, phase=GROW)
    return notes
