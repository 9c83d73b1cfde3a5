"""Training to a target instead of to an epoch count.

After every epoch the stitched network (the teacher with the students in place) is scored on the
held-out split: top-1 agreement with the teacher where the output is class scores, then the cosine
of the outputs. The best state so far is kept; a phase stops when the score has not improved for
`patience` epochs or when its deadline passes, and it ends with its best state, not its last.
Every score is recorded with the seconds since distillation began, so schedules can be compared by
the time they need to reach an agreement.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fxrewrite.distill.processes import on_main
from fxrewrite.errors import TrainingDiverged
from fxrewrite.ir import tensor_leaves
from fxrewrite.rewrite.compare import top1_agreement

DIVERGED_ADVICE = ("the checkpoint of the last good epoch is kept (--resume continues from it); lower --lr, or "
                   "check the calibration inputs")
#: a cosine gain below this is no improvement (agreement counts any gain: it moves in whole samples)
MIN_COSINE_GAIN = 1e-4


@dataclass(frozen=True)
class Score:
    """Held-out top-1 agreement (None when the output is not class scores) and cosine."""

    agreement: float | None
    cosine: float

    def beats(self, other: Score | None) -> bool:
        if other is None:
            return True
        if self.agreement is not None and other.agreement is not None and self.agreement != other.agreement:
            return self.agreement > other.agreement
        return self.cosine > other.cosine + MIN_COSINE_GAIN


@dataclass(frozen=True)
class Point:
    """One scored epoch: where, when (seconds since distillation began) and how well."""

    phase: str
    epoch: int
    seconds: float
    agreement: float | None
    cosine: float


def held_out_score(forward: Callable[[torch.Tensor], Any], held: Sequence[Any]) -> Score:
    """`forward` on the held-out records' batches against the teacher's outputs on them (`final`; the
    first tensor of each)."""
    with torch.no_grad():
        got = torch.cat([tensor_leaves(forward(e.batch))[0] for e in held])
    want = torch.cat([tensor_leaves(e.final)[0] for e in held])
    cosine = F.cosine_similarity(got.flatten(1), want.flatten(1)).mean().item()
    return Score(top1_agreement(got, want) if got.dim() == 2 else None, cosine)


def swapped_score(teacher: torch.nn.Module, order: Sequence[str], students: torch.nn.ModuleDict,
                  held: Sequence[Any]) -> Callable[[], Score]:
    """The score of the teacher with every region swapped for its student (in eval mode while scored),
    on the held-out records (`batch` and the teacher's `final` output)."""
    swapped = copy.deepcopy(teacher).eval()
    for name in order:
        setattr(swapped, name, students[name])

    def score() -> Score:
        students.eval()
        try:
            return held_out_score(swapped, held)
        finally:
            students.train()

    return score


class Monitor:
    """Scores, keeps the best state and says when to stop, for one phase at a time (module docstring).
    Its state travels in the checkpoint's `extra`, so a resumed phase keeps its best and its count."""

    def __init__(self, score: Callable[[], Score], started: float, history: list[Point],
                 patience: int | None = None, deadline: float | None = None):
        self.score, self.started, self.history = score, started, history
        self.patience, self.deadline = patience, deadline
        self.best: Score | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stale = 0
        self.stopped = ""
        #: said once, after the phase's first epoch, where the time budget cannot reach a plateau
        self.note = ""
        self.opened, self.first_epoch = time.perf_counter(), None

    def _budget_note(self, phase: str, epoch: int, cap: int | None) -> str:
        """Where the deadline leaves fewer epochs than a plateau takes to show (patience + 1), what the
        phase would need and what to change."""
        now = time.perf_counter()
        per_epoch = (now - self.opened) / max(1, epoch - self.first_epoch)
        left = max(0.0, self.deadline - now) / per_epoch
        wanted = (self.patience or 0) + 1 if cap is None else min(cap - epoch, (self.patience or 0) + 1)
        if left >= wanted:
            return ""
        needed = per_epoch * ((cap - epoch) if cap is not None else wanted)
        return (f"{phase}: an epoch takes {per_epoch:.2g} s, so the time budget leaves {int(left)} more epoch(s), "
                f"too few to reach a held-out plateau (its epoch cap needs about {needed:.0f} s more); raise "
                "--time-budget, train with --device cuda, or pass fewer inputs (--calib-size)")

    def after_epoch(self, phase: str, epoch: int, model: torch.nn.Module, cap: int | None = None) -> bool:
        """Score `model` after `epoch` (of `cap`); True when the phase should stop. Over several processes,
        rank 0 scores and reads the clock, so that all of them stop at the same epoch in the same state."""
        if self.first_epoch is None:
            self.first_epoch = epoch - 1  # epochs a resumed phase had done before this run
            if self.deadline is not None:
                self.note = on_main(lambda: self._budget_note(phase, epoch, cap))
        score = on_main(self.score)
        if not math.isfinite(score.cosine):
            raise TrainingDiverged(f"{phase}: after epoch {epoch} the network's held-out outputs are not finite "
                                   f"(cosine {score.cosine}); {DIVERGED_ADVICE}")
        self.history.append(Point(phase, epoch, round(time.perf_counter() - self.started, 2), score.agreement,
                                  score.cosine))
        if score.beats(self.best):
            self.best, self.best_state, self.stale = score, copy.deepcopy(model.state_dict()), 0
        else:
            self.stale += 1
        if self.patience is not None and self.stale >= self.patience:
            self.stopped = f"no held-out gain in {self.stale} epochs"
        elif self.deadline is not None and on_main(lambda: time.perf_counter() >= self.deadline):
            self.stopped = "time budget reached" + (f" ({self.note})" if self.note else "")
        return bool(self.stopped)

    def finish(self, model: torch.nn.Module) -> None:
        """Leave `model` in its best state."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state(self) -> dict[str, Any]:
        return {"best": None if self.best is None else asdict(self.best), "best_state": self.best_state,
                "stale": self.stale, "stopped": self.stopped, "history": [asdict(p) for p in self.history]}

    def restore(self, saved: dict[str, Any]) -> None:
        self.best = None if saved["best"] is None else Score(**saved["best"])
        self.best_state, self.stale, self.stopped = saved["best_state"], saved["stale"], saved["stopped"]
        self.history[:] = [Point(**p) for p in saved["history"]]
