"""Training to a target instead of to an epoch count.

Before a phase's first epoch and after every epoch the stitched network (the teacher with the
students in place) is scored on the held-out split: top-1 agreement with the teacher where the
output is class scores, then the cosine of the outputs. The best state so far, the starting one
included, is kept; a phase stops when the score has not improved for `patience` epochs (in a phase
scored on its own objective, fine-tuning, only once its training loss no longer falls either: a
loss still falling by LEARNING over those epochs is a phase still learning, whose held-out score is
noisy at a high learning rate), when its deadline passes, when its agreement falls to chance from above it, or when its training loss grows
epoch after epoch, and it ends with its best state, not its last: no phase ends worse than it began.
A monitor given `retries` meets the last two (signs that the learning rate is too high) up to that
many times by rolling back to the best state and halving the learning rate instead of stopping.
After a phase's first batches its speed is known, and a deadline too near for a plateau is said at
once (`speed`); a phase asked to may instead grow its epoch cap to what its deadline leaves room
for (`stretched_cap`), so time left in the budget is spent while the score still rises.
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

from fxrewrite.distill.training.processes import on_main
from fxrewrite.errors import TrainingDiverged
from fxrewrite.ir import tensor_leaves
from fxrewrite.metrics import Score, score_between

DIVERGED_ADVICE = ("the checkpoint of the last good epoch is kept (--resume continues from it); lower --lr, or "
                   "check the calibration inputs")
#: agreement at most this many times 1 / classes is chance level
CHANCE_FACTOR = 1.5
#: a phase whose mean training loss grows this many epochs running, each by more than GROWTH, stops
GROWING_EPOCHS = 2
GROWTH = 0.02
#: a training loss that fell by more than this share over the last `patience` epochs is still learning:
#: no plateau yet, where the monitor is told to ask (measured on the families benchmark: MobileNetV3's
#: fine-tuning stopped at epoch 5 of 20, its loss still falling 20%; asked in the blockwise phase too, whose
#: loss falls long after its swapped score stops helping, it took MobileNetV2's fine-tuning time)
LEARNING = 0.05
#: a stretched phase (Monitor.stretched_cap) runs at most this many times its epoch cap
STRETCH = 3


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
    return score_between(got, torch.cat([tensor_leaves(e.final)[0] for e in held]))


def at_chance(score: Score) -> bool:
    """Whether the score's agreement is within CHANCE_FACTOR of what guessing the class would give."""
    return score.agreement is not None and score.classes > 1 and score.agreement <= CHANCE_FACTOR / score.classes


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
                 patience: int | None = None, deadline: float | None = None, ask_loss: bool = False,
                 retries: int = 0):
        self.score, self.started, self.history = score, started, history
        self.patience, self.deadline = patience, deadline
        #: whether a plateau also needs the training loss to have stopped falling (LEARNING)
        self.ask_loss = ask_loss
        #: divergences met by a rollback at half the learning rate, at most `retries`, each said in a sentence
        self.retries, self.rollbacks = retries, []
        #: set when the training loop should roll back and halve its learning rate now
        self.retry = False
        self.best: Score | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0
        self.stale = 0
        self.stopped = ""
        #: the mean training loss of every epoch run, for the growing-loss stop
        self.losses: list[float] = []
        #: said once, after the phase's first batches, where the time budget cannot reach a plateau
        self.note = ""
        #: whether the phase's epoch cap was stretched to its deadline (then no plateau stops it)
        self.stretched = False
        #: the samples trained on (every process's) and the seconds the phase took, scoring and checkpoints included
        self.samples, self.seconds = 0, 0.0

    def begin(self, phase: str, model: torch.nn.Module) -> None:
        """Score `model` before its first epoch: the state to beat, kept if no epoch beats it."""
        if self.best is None:
            self._scored(phase, 0, model)

    def _scored(self, phase: str, epoch: int, model: torch.nn.Module) -> Score:
        score = on_main(self.score)
        if not math.isfinite(score.cosine):
            raise TrainingDiverged(f"{phase}: after epoch {epoch} the network's held-out outputs are not finite "
                                   f"(cosine {score.cosine}); {DIVERGED_ADVICE}")
        self.history.append(Point(phase, epoch, round(time.perf_counter() - self.started, 2), score.agreement,
                                  score.cosine))
        if score.beats(self.best):
            self.best, self.best_state, self.best_epoch, self.stale = score, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            self.stale += 1
        return score

    def count(self, samples: int, seconds: float) -> None:
        """Add a phase's (or a resumed part's) samples trained and its seconds, for `samples_per_second`."""
        self.samples, self.seconds = self.samples + samples, self.seconds + seconds

    @property
    def samples_per_second(self) -> float | None:
        return self.samples / self.seconds if self.samples and self.seconds > 0 else None

    def stretched_cap(self, cap: int, epoch: int, per_epoch: float) -> int:
        """The epoch cap of a phase at `epoch` whose epochs take `per_epoch` s, grown to the epochs its
        deadline leaves room for, at most STRETCH times `cap` and never below it; decided on rank 0. A
        phase so stretched runs to that cap (its learning rate's cosine to its end) or its deadline, not to
        a plateau: its best state is kept either way, and a plateau at a high learning rate ended
        fine-tuning 14 epochs into 60 on the held-out shapes benchmark, 1.15 points of agreement below
        the same run taken to its cap (90.45% against 91.60%)."""
        if self.deadline is None:
            return cap
        deadline = self.deadline
        stretched = on_main(lambda: min(STRETCH * cap,
                                        max(cap, epoch + int((deadline - time.perf_counter()) / per_epoch))))
        self.stretched = stretched > cap
        return stretched

    def speed(self, phase: str, per_epoch: float, done: int, cap: int | None, batches: int) -> str:
        """Once the first `batches` of a phase have run (`done` epochs before them; an epoch takes
        `per_epoch` s): where the deadline leaves fewer epochs than a plateau takes to show (patience
        + 1), the note saying what the phase would need and what to change."""
        if self.deadline is None or self.note:
            return ""
        left = max(0.0, self.deadline - time.perf_counter()) / per_epoch
        wanted = (self.patience or 0) + 1 if cap is None else min(cap - done, (self.patience or 0) + 1)
        if left >= wanted:
            return ""
        needed = per_epoch * ((cap - done) if cap is not None else wanted)
        self.note = on_main(lambda: (
            f"{phase}: an epoch takes about {per_epoch:.2g} s (timed on its first {batches} batches), so the time "
            f"budget leaves {left:.1f} epoch(s), too few to reach a held-out plateau (its epoch cap needs about "
            f"{needed:.0f} s); raise --time-budget, train with --device cuda, or pass fewer inputs (--calib-size)"))
        return self.note

    def after_epoch(self, phase: str, epoch: int, model: torch.nn.Module, cap: int | None = None,
                    loss: float | None = None) -> bool:
        """Score `model` after `epoch` (of `cap`, its mean training loss `loss`); True when the phase
        should stop: on a plateau, at the deadline, when held-out agreement falls to chance from above
        it, or when the loss grew GROWING_EPOCHS epochs running. Over several processes, rank 0 scores
        and reads the clock, so that all of them stop at the same epoch in the same state."""
        score = self._scored(phase, epoch, model)
        if loss is not None:
            self.losses.append(loss)
        recent = self.losses[-GROWING_EPOCHS - 1:]
        diverged = ""
        if score.agreement is not None and at_chance(score) and self.best is not None and not at_chance(self.best):
            diverged = f"held-out agreement fell to {score.agreement:.1%}, chance level for {score.classes} classes"
        elif len(recent) > GROWING_EPOCHS and all(b > a * (1 + GROWTH) for a, b in zip(recent, recent[1:])):
            diverged = (f"the training loss grew {GROWING_EPOCHS} epochs running ("
                        + " -> ".join(f"{v:.3g}" for v in recent) + ")")
        if diverged and len(self.rollbacks) < self.retries:
            self.rollbacks.append(f"epoch {epoch}: {diverged}; rolled back to epoch {self.best_epoch} and halved "
                                  "the learning rate")
            self.losses, self.stale, self.retry = [], 0, True
        elif diverged:
            self.stopped = f"{diverged}; rolled back to epoch {self.best_epoch}, the best held-out score"
        elif self.patience is not None and self.stale >= self.patience and not self._learning() and not self.stretched:
            self.stopped = f"no held-out gain in {self.stale} epochs"
        elif self.deadline is not None and on_main(lambda: time.perf_counter() >= self.deadline):
            self.stopped = "time budget reached" + (f" ({self.note})" if self.note else "")
        return bool(self.stopped)

    def _learning(self) -> bool:
        """Whether the monitor asks the loss and it fell by more than LEARNING over the last `patience` epochs."""
        if not self.ask_loss:
            return False
        window = self.losses[-(self.patience or 0) - 1:]
        return len(window) > (self.patience or 0) and window[-1] < window[0] * (1 - LEARNING)

    def finish(self, model: torch.nn.Module) -> None:
        """Leave `model` in its best state."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state(self) -> dict[str, Any]:
        return {"best": None if self.best is None else asdict(self.best), "best_state": self.best_state,
                "best_epoch": self.best_epoch, "stale": self.stale, "stopped": self.stopped, "losses": self.losses,
                "history": [asdict(p) for p in self.history], "rollbacks": self.rollbacks}

    def restore(self, saved: dict[str, Any]) -> None:
        self.best = None if saved["best"] is None else Score(**saved["best"])
        self.best_state, self.stale, self.stopped = saved["best_state"], saved["stale"], saved["stopped"]
        self.best_epoch, self.losses = saved["best_epoch"], list(saved["losses"])
        self.history[:] = [Point(**p) for p in saved["history"]]
        self.rollbacks = list(saved.get("rollbacks", []))  # checkpoints written before rollbacks had none
