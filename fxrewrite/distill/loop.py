"""The one training loop every phase uses: epochs over the cached batches, a loss per batch, a
checkpoint after every epoch (a resumed phase continues where it stopped), a progress event."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from fxrewrite.distill.checkpoints import Checkpoints, Progress, ProgressCallback

Batch = TypeVar("Batch")


def train_phase(phase: str, epochs: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                batches: Sequence[Batch], batch_loss: Callable[[int, Batch], torch.Tensor], checkpoints: Checkpoints,
                progress: ProgressCallback | None) -> None:
    """Train `model` for `epochs` epochs of `phase` (or what is left after a resume): for every batch,
    minimise `batch_loss(epoch, batch)`; `model` holds everything trained, for the checkpoint."""
    done, saved = checkpoints.resume_point(phase)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
    start = time.perf_counter()
    for epoch in range(done, epochs):
        total = 0.0
        for batch in batches:
            optimizer.zero_grad()
            loss = batch_loss(epoch, batch)
            loss.backward()
            optimizer.step()
            total += loss.item()
        checkpoints.save(phase, epoch + 1, model, optimizer)
        if progress is not None:
            progress(Progress(phase, epoch + 1, epochs, total / len(batches), time.perf_counter() - start))
