"""The one training loop every phase uses: epochs over the cached batches, a loss per batch, a
checkpoint after every epoch (a resumed phase continues where it stopped), a progress event.

With a monitor (fxrewrite.distill.training.monitor) the epochs are a cap: the phase stops on a held-out
plateau or its deadline and ends in its best state. With `cosine_lr` the learning rate warms up
linearly over the first WARMUP_SHARE of the phase's steps, then follows a half cosine to zero at
the cap; it is a function of the step alone, so a resumed phase continues the same curve.

Speed (issue 39, measured on 2 cores against a plain training step): every phase steps a fused Adam
(`adam`: one kernel over all parameters instead of several per tensor; resnet18's plain step x1.5) and
a model with depthwise convolutions trains in the channels-last layout (`training_layout`: oneDNN's
depthwise kernels are faster in it, torchvision's mobilenet_v2 plain step x2.4; dense convs gain nothing
there that the reorders of the recorded, contiguous region inputs do not cost back, so they stay). The
layout follows from the model, not from a timing, so a run and its resumed copy train alike; the phase
ends with its model contiguous again.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from fxrewrite.distill.training.checkpoints import Checkpoints, Progress, ProgressCallback
from fxrewrite.distill.training.monitor import DIVERGED_ADVICE, Monitor
from fxrewrite.distill.training.processes import batch_norms_over_processes, data_parallel, is_main, world_size
from fxrewrite.errors import TrainingDiverged

Batch = TypeVar("Batch")

#: the share of a phase's steps (at its epoch cap) spent warming the learning rate up
WARMUP_SHARE = 0.05
#: the learning rate's multiple after a rollback (fxrewrite.distill.training.monitor: retries)
RETRY_FACTOR = 0.5
#: the batches timed at the start of a phase to know its speed (fxrewrite.distill.training.monitor.Monitor.speed)
SPEED_BATCHES = 8


def lr_factor(step: int, total: int) -> float:
    """The learning rate's multiple at `step` of `total`: linear warm-up, then a half cosine to 0."""
    warmup = max(1, round(WARMUP_SHARE * total))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def adam(parameters: Iterable[torch.nn.Parameter] | list[dict[str, Any]], lr: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel (the same update as the per-tensor loop, in one pass)."""
    return torch.optim.Adam(parameters, lr=lr, fused=True)


def training_layout(model: torch.nn.Module, probe: Callable[[], object]) -> torch.memory_format:
    """channels_last where `model` has a depthwise convolution (a 4-D weight of one input channel per
    group) and `probe` (the phase's loss on the batches and epochs that differ in shape or graph) runs
    with it so; else contiguous: a graph may view a conv's output in a way only the contiguous layout
    allows (a patch embedding as torch.export records it). The probe runs in eval mode without
    gradients, and `model`'s state is put back as it was."""
    if not any(p.dim() == 4 and p.shape[1] == 1 and p.shape[2:].numel() > 1 for p in model.parameters()):
        return torch.contiguous_format
    modes = {module: module.training for module in model.modules()}
    saved = {key: value.clone() for key, value in model.state_dict().items()}
    model.to(memory_format=torch.channels_last).eval()
    try:
        with torch.no_grad():
            probe()
        return torch.channels_last
    except RuntimeError:
        return torch.contiguous_format
    finally:
        model.load_state_dict(saved)
        model.to(memory_format=torch.contiguous_format)
        for module, training in modes.items():
            module.train(training)


@contextlib.contextmanager
def _contiguous_after(model: torch.nn.Module) -> Iterator[None]:
    """`model` in the contiguous layout again when the phase ends, however it ends (what follows exports it)."""
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def train_phase(phase: str, epochs: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                batches: Sequence[Batch], batch_loss: Callable[[int, Batch], torch.Tensor], checkpoints: Checkpoints,
                progress: ProgressCallback | None, monitor: Monitor | None = None, cosine_lr: bool = False,
                stretch: bool = False) -> None:
    """Train `model` for `epochs` epochs of `phase` (or what is left after a resume, or until the
    monitor stops it): for every batch, minimise `batch_loss(epoch, batch)`; `model` holds everything
    trained, for the checkpoint. With `stretch` and a monitor with a deadline, the epoch cap grows, once
    the first batches are timed, to the epochs the deadline leaves room for (Monitor.stretched_cap), and
    the phase runs to that cap or the deadline rather than to a plateau, ending in its best state."""
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    done, saved = checkpoints.resume_point(phase)
    monitor_key, cap_key = f"monitor:{phase}", f"cap:{phase}"
    if cap_key in checkpoints.extra and monitor is not None:  # a resumed phase keeps the cap it stretched to
        epochs, monitor.stretched = checkpoints.extra[cap_key], checkpoints.extra[cap_key] > epochs
    if saved is not None:
        checkpoints.restore(saved, model, optimizer)
        if monitor is not None and monitor_key in checkpoints.extra:
            monitor.restore(checkpoints.extra[monitor_key])
            base_lrs = [base * RETRY_FACTOR ** len(monitor.rollbacks) for base in base_lrs]
    start = time.perf_counter()
    total = epochs * len(batches)
    # the first and last batches (the last may be smaller) at the first and last epochs (a progressive
    # phase's graph changes with the epoch)
    probed = {(epoch, id(batch)): batch for epoch in {done, max(done, epochs - 1)}
              for batch in (batches[0], batches[-1])}
    layout = training_layout(model, lambda: [batch_loss(epoch, batch) for (epoch, _), batch in probed.items()]) \
        if done < epochs else torch.contiguous_format
    # after the resume: every process starts from rank 0's state
    step = data_parallel(model.to(memory_format=layout), batch_loss)
    begun = time.perf_counter()
    if monitor is not None and done < epochs:
        monitor.begin(phase, model)
    scoring = time.perf_counter() - begun  # what scoring the held-out split adds to every epoch

    def stretched(epoch: int, per_epoch: float) -> int:
        """The epoch cap once the phase's speed is known: stretched once where asked, else as it is."""
        if stretch and monitor is not None and cap_key not in checkpoints.extra:
            checkpoints.extra[cap_key] = monitor.stretched_cap(epochs, epoch, per_epoch + scoring)
        return checkpoints.extra.get(cap_key, epochs)
    trained = 0
    with batch_norms_over_processes(model), _contiguous_after(model):
        timed, said = min(SPEED_BATCHES, len(batches)), False
        for epoch in itertools.count(done):
            if epoch >= epochs or (monitor is not None and monitor.stopped):
                break  # resumed after the phase had stopped
            loss_sum, opened = 0.0, time.perf_counter()
            for index, batch in enumerate(batches):
                if monitor is not None and epoch == done and index == timed:
                    per_epoch = (time.perf_counter() - opened) * len(batches) / timed
                    epochs = stretched(epoch, per_epoch)
                    total = epochs * len(batches)
                    note = monitor.speed(phase, per_epoch, done, epochs, timed)
                    if note and progress is not None and is_main():
                        progress(Progress(phase, epoch, epochs, loss_sum / timed, time.perf_counter() - start,
                                          note=note, within_epoch=True))
                        said = True
                if cosine_lr:
                    factor = lr_factor(epoch * len(batches) + index, total)
                    for group, base in zip(optimizer.param_groups, base_lrs):
                        group["lr"] = base * factor
                optimizer.zero_grad()
                loss = step(epoch, batch)
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingDiverged(f"{phase}: the training loss became {value} in epoch {epoch + 1}, batch "
                                           f"{index + 1}; {DIVERGED_ADVICE}")
                loss.backward()
                optimizer.step()
                loss_sum += value
                trained += _samples(batch)
            if monitor is not None and epoch == done and timed == len(batches):  # an epoch of fewer batches
                per_epoch = time.perf_counter() - opened
                epochs = stretched(epoch, per_epoch)
                total = epochs * len(batches)
                monitor.speed(phase, per_epoch, done, epochs, timed)
            stop = monitor.after_epoch(phase, epoch + 1, model, epochs, loss_sum / len(batches)) \
                if monitor is not None else False
            if monitor is not None and monitor.retry:  # rolled back: continue from the best state at a lower rate
                monitor.retry = False
                monitor.finish(model)
                optimizer.state.clear()
                base_lrs = [base * RETRY_FACTOR for base in base_lrs]
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base
            if monitor is not None:
                checkpoints.extra[monitor_key] = monitor.state()
            checkpoints.save(phase, epoch + 1, model, optimizer)
            if progress is not None and is_main():
                point = monitor.history[-1] if monitor is not None else None
                note = monitor.note if monitor is not None and epoch == done and not said else ""
                progress(Progress(phase, epoch + 1, epochs, loss_sum / len(batches), time.perf_counter() - start,
                                  point.agreement if point else None, point.cosine if point else None, note))
            if stop:
                break
    if monitor is not None:
        monitor.finish(model)
        monitor.count(trained * world_size(), time.perf_counter() - start)


def _samples(batch: object) -> int:
    """The samples in one batch: a recorded batch's inputs, or the batch itself."""
    inputs = getattr(batch, "batch", batch)
    return len(inputs) if isinstance(inputs, torch.Tensor) else 1
