"""The distillation phases, each a loss over the recorded batches handed to the one training loop.

- parallel: every student at once, on the teacher's own region inputs, against the teacher's
  region outputs;
- progressive (Arch-Net): period k swaps the first k+1 regions (graph order) for their students and
  matches their outputs with weights 0.8^(k-i), the newest at 1;
- fine-tuning: the stitched network end to end, on a cosine loss and normalized MSE on the final
  output, plus 0.5 x the per-block MSE, and where the output is class scores and a temperature is
  given, the KL divergence of the student's softened scores from the teacher's (times T^2, as in
  Hinton et al.'s distillation); optionally on augmented inputs (fxrewrite.distill.training.augment).

Each phase takes an optional monitor (stop on a held-out plateau or deadline, end in the best state)
and a cosine learning-rate curve (fxrewrite.distill.training.loop).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite.distill.training.augment import augment
from fxrewrite.distill.training.losses import block_loss, normalized_mse
from fxrewrite.distill.training.checkpoints import FINETUNE, PARALLEL, PROGRESSIVE, Checkpoints, ProgressCallback
from fxrewrite.distill.training.loop import adam, train_phase
from fxrewrite.distill.training.monitor import Monitor
from fxrewrite.distill.training.recording import OutputHooks, Recorded, as_tuple
from fxrewrite.ir import tensor_leaves

Schedule = Literal["parallel", "progressive"]
SCHEDULES: tuple[str, ...] = ("parallel", "progressive")
PROGRESSIVE_DECAY = 0.8
BLOCK_WEIGHT = 0.5
#: the share of the learning rate a teacher-form student trains at in the blockwise phase
TEACHER_FORM_LR = 1 / 3


def _blockwise_loss(adapters: nn.ModuleDict, name: str, outputs: Sequence[torch.Tensor],
                    wanted: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(block_loss(got, want, adapters[f"{name}_{i}"] if f"{name}_{i}" in adapters else None)
               for i, (got, want) in enumerate(zip(outputs, wanted)))


def parallel(students: nn.ModuleDict, adapters: nn.ModuleDict, cache: Sequence[Recorded], epochs: int, lr: float,
             checkpoints: Checkpoints, progress: ProgressCallback | None,
             names: Sequence[str] | None = None, phase: str = PARALLEL, monitor: Monitor | None = None,
             cosine_lr: bool = False) -> None:
    """Every student (or those in `names`, the rest kept as they are) on its own region's recorded data."""
    trained = nn.ModuleDict({"students": students, "adapters": adapters})  # all of it goes in the checkpoint
    names = list(students) if names is None else list(names)
    # a student that starts as its teacher block (an exact teacher form) takes smaller
    # steps: it only has to recover what quantization loses, and the full rate throws that start away
    starts_exact = {n for n in names if students[n].starts_at_teacher}
    exact = [p for n in starts_exact for p in students[n].parameters()]
    parameters = [p for n in names if n not in starts_exact for p in students[n].parameters()]
    parameters += [p for key, adapter in adapters.items() if key.rsplit("_", 1)[0] in names
                   for p in adapter.parameters()]
    optimizer = adam([{"params": parameters}, {"params": exact, "lr": lr * TEACHER_FORM_LR}], lr)

    def loss(_: int, entry: Recorded) -> torch.Tensor:
        return sum(_blockwise_loss(adapters, n, as_tuple(students[n](*entry.regions[n][0])), entry.regions[n][1])
                   for n in names)

    train_phase(phase, epochs, trained, optimizer, cache, loss, checkpoints, progress, monitor, cosine_lr)


def progressive(teacher: fx.GraphModule, order: Sequence[str], students: nn.ModuleDict, adapters: nn.ModuleDict,
                cache: Sequence[Recorded], epochs: int, lr: float, checkpoints: Checkpoints,
                progress: ProgressCallback | None, monitor: Monitor | None = None, cosine_lr: bool = False) -> None:
    trained = nn.ModuleDict({"students": students, "adapters": adapters})
    optimizer = adam(trained.parameters(), lr)
    model = copy.deepcopy(teacher).requires_grad_(False)
    teacher_regions = {n: getattr(model, n) for n in order}
    per_period = max(1, -(-epochs // len(order)))

    def loss(epoch: int, entry: Recorded) -> torch.Tensor:
        period = min(epoch // per_period, len(order) - 1)
        for position, name in enumerate(order):
            setattr(model, name, students[name] if position <= period else teacher_regions[name])
        matched = order[:period + 1]
        hooks = OutputHooks(model, matched)
        model(entry.batch)
        hooks.remove()
        return sum(PROGRESSIVE_DECAY ** (period - i) *
                   _blockwise_loss(adapters, n, hooks.values[n], entry.regions[n][1])
                   for i, n in enumerate(matched))

    train_phase(PROGRESSIVE, per_period * len(order), trained, optimizer, cache, loss, checkpoints,
                progress, monitor, cosine_lr)


def soft_target_loss(got: torch.Tensor, want: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(want / T) || softmax(got / T)) over the class axis, averaged over the batch."""
    return temperature ** 2 * F.kl_div(F.log_softmax(got / temperature, 1), F.softmax(want / temperature, 1),
                                       reduction="batchmean")


def finetune(stitched: nn.Module, order: Sequence[str], cache: Sequence[Recorded], epochs: int, lr: float,
             checkpoints: Checkpoints, progress: ProgressCallback | None, monitor: Monitor | None = None,
             cosine_lr: bool = False, temperature: float | None = None,
             relabel: Callable[[torch.Tensor], Recorded] | None = None, seed: int = 0, stretch: bool = False) -> None:
    """With `relabel`, every batch is augmented (fxrewrite.distill.training.augment) and its targets are the
    teacher's outputs on the augmented inputs; with `stretch`, the epoch cap grows to what the monitor's
    deadline leaves room for (fxrewrite.distill.training.loop.train_phase)."""
    optimizer = adam(stitched.parameters(), lr / 3)
    positions = {id(entry): index for index, entry in enumerate(cache)}

    def loss(epoch: int, entry: Recorded) -> torch.Tensor:
        if relabel is not None:
            entry = relabel(augment(entry.batch, epoch * len(cache) + positions[id(entry)], seed))
        hooks = OutputHooks(stitched, order)
        got = stitched(entry.batch)
        hooks.remove()
        # every floating-point tensor of the output (a tuple or a model output class holds several)
        pairs = [(g, w) for g, w in zip(tensor_leaves(got), tensor_leaves(entry.final)) if w.is_floating_point()]
        final = sum(1 - F.cosine_similarity(g.flatten(1), w.flatten(1)).mean() + normalized_mse(g, w) for g, w in pairs)
        if temperature is not None and pairs and pairs[0][1].dim() == 2:  # class scores
            final = final + soft_target_loss(pairs[0][0], pairs[0][1], temperature)
        blocks = sum(normalized_mse(g, w) for n in order for g, w in zip(hooks.values[n], entry.regions[n][1]))
        return final + BLOCK_WEIGHT * blocks

    train_phase(FINETUNE, epochs, stitched, optimizer, cache, loss, checkpoints, progress, monitor, cosine_lr,
                stretch=stretch)
