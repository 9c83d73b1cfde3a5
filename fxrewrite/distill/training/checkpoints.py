"""What long runs need: epoch-level checkpoints that a killed run resumes from, and progress events
with a progress bar per phase.

A checkpoint holds the phase, the epochs done in it, the trained state and the optimizer's state,
written atomically after every epoch to DIR/distill-checkpoint.pt, and read back with
weights_only=True. Training uses no randomness after the seeded initialisation (fixed batch order,
no dropout), so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fxrewrite.distill.training.processes import is_main, world_size
from fxrewrite.errors import DistillError, first_line
from fxrewrite.files import atomic_write_bytes

CHECKPOINT_NAME = "distill-checkpoint.pt"
#: the training phases, by the names their checkpoints carry (a checkpoint in another phase is refused)
PARALLEL, PROGRESSIVE, GROW, FINETUNE = "blockwise-parallel", "blockwise-progressive", "grow", "finetune"
PHASES = (PARALLEL, PROGRESSIVE, GROW, FINETUNE)
_FIELDS = ("phase", "epoch", "model", "optimizer")


@dataclass(frozen=True)
class Progress:
    phase: str
    epoch: int
    epochs: int
    loss: float
    seconds: float
    #: the stitched network's held-out top-1 agreement and cosine after the epoch, where measured
    agreement: float | None = None
    cosine: float | None = None
    #: a sentence for the user, said once (a time budget too short for the phase)
    note: str = ""
    #: said within an epoch (the note after the phase's first batches), not at its end
    within_epoch: bool = False


ProgressCallback = Callable[[Progress], None]


def remove_checkpoint(directory: Path) -> None:
    """The run finished, so nothing is left to resume: its checkpoint is removed, and its folder where
    nothing else is in it (a file put there, or a folder that is a link, stays)."""
    (directory / CHECKPOINT_NAME).unlink(missing_ok=True)
    if directory.is_dir() and not directory.is_symlink() and not any(directory.iterdir()):
        directory.rmdir()


class Checkpoints:
    """Epoch checkpoints of one run, identified by a fingerprint of its inputs and options."""

    def __init__(self, directory: Path | None, fingerprint: str, resume: bool):
        self.path = directory / CHECKPOINT_NAME if directory is not None else None
        self.fingerprint = fingerprint
        self.saved: dict[str, Any] | None = self._read() if resume else None
        #: decisions a resumed run must repeat (which students grew), saved with every checkpoint
        self.extra: dict[str, Any] = dict(self.saved.get("extra", {})) if self.saved is not None else {}

    def _read(self) -> dict[str, Any] | None:
        if self.path is None:
            raise DistillError("--resume needs a checkpoint directory")
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DistillError(f"checkpoint {self.path} cannot be read ({type(exc).__name__}); delete it to "
                               "start over") from None
        if not isinstance(saved, dict) or any(key not in saved for key in _FIELDS) or saved["phase"] not in PHASES:
            raise DistillError(f"checkpoint {self.path} is not one fxrewrite wrote (its phase or fields are unknown); "
                               "delete it to start over")
        if saved.get("fingerprint") != self.fingerprint:
            raise DistillError(f"checkpoint {self.path} was written by a run with another model, target, data or "
                               "options; delete it or run without --resume")
        written_by = saved.get("world_size", 1)
        if written_by != world_size():
            raise DistillError(f"checkpoint {self.path} was written by a run over {written_by} process(es) and this "
                               f"run has {world_size()}: resume with as many (torchrun --nproc-per-node "
                               f"{written_by}), or delete it to start over")
        return saved

    def resume_point(self, phase: str) -> tuple[int, dict[str, Any] | None]:
        """(epochs already done in `phase`, its saved state) — (0, None) for a phase not reached."""
        if self.saved is None or self.saved["phase"] != phase:
            return 0, None
        return self.saved["epoch"], self.saved

    def restore(self, saved: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Load a saved state into this run's model and optimizer; a state that does not fit is refused."""
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise DistillError(f"checkpoint {self.path} does not fit this run's students ({first_line(exc)}); "
                               "delete it to start over") from None

    def reached(self, phase: str) -> bool:
        return self.saved is not None and self.saved["phase"] == phase

    def save(self, phase: str, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.path is None or not is_main():  # the processes hold the same state; one writes it
            return
        buffer = io.BytesIO()
        torch.save({"fingerprint": self.fingerprint, "world_size": world_size(), "phase": phase, "epoch": epoch,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "extra": self.extra}, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())


class ProgressBars:
    """A tqdm bar per phase with the current loss and the time left; on stderr."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.phase = ""

    def __call__(self, event: Progress) -> None:
        if event.phase != self.phase:
            self.close()
            self.phase = event.phase
            # an event within an epoch counts the epochs done, one at the end of an epoch that epoch too
            self.bar = tqdm(total=event.epochs, initial=event.epoch - (not event.within_epoch), desc=event.phase,
                            unit="epoch", file=sys.stderr, dynamic_ncols=True)
        assert self.bar is not None
        if event.note:
            self.bar.write(f"fxrewrite: {event.note}", file=sys.stderr)
        if event.within_epoch:
            return
        shown = {"loss": f"{event.loss:.4g}"}
        if event.agreement is not None:
            shown["agreement"] = f"{event.agreement:.2%}"
        elif event.cosine is not None:
            shown["cosine"] = f"{event.cosine:.4f}"
        self.bar.set_postfix(shown)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
