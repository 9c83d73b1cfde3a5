"""Distillation over several processes with torch.distributed: data parallel, decisions made once.

Launched by torchrun (`torchrun --nproc-per-node N -m fxrewrite lower ... --calib ...`), every
process runs the same lowering. The training set is sharded with a DistributedSampler (no shuffle:
training uses a fixed batch order) and each process takes 1/N of every batch, so the global batch
and the number of steps are those of one process; each phase trains through
DistributedDataParallel, which starts every process from rank 0's state (parameters and buffers,
quantizer scales included) and averages the gradients. Batch norms in training mode normalise over
the whole batch, every process's share together (`batch_norms_over_processes`), so each step is one
process's step. What decides the run's
course (the held-out scores that stop a phase or pick its best epoch, the time budget, which
students grow) is computed on rank 0 and broadcast, so no process can take another branch and
leave the others waiting. Only rank 0 writes checkpoints and outputs.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as collective
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from fxrewrite.errors import UsageError

T = TypeVar("T")


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def launched_processes() -> int:
    """How many processes torchrun started (WORLD_SIZE), checked with the rest of what it sets."""
    text = os.environ.get("WORLD_SIZE", "1")
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"WORLD_SIZE={text!r}: torchrun sets it to the number of processes; unset it to run alone")
    size = int(text)
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if size > 1 and name not in os.environ]
    if missing:
        raise UsageError(f"WORLD_SIZE={size} without {', '.join(missing)}: start several processes with torchrun "
                         "(torchrun --nproc-per-node N -m fxrewrite ...), or unset WORLD_SIZE to run alone")
    return size


def start_from_environment(device: str) -> bool:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1): gloo on the
    CPU, NCCL on GPUs, each process on the GPU of its LOCAL_RANK. False when run alone."""
    if launched_processes() <= 1 or dist.is_initialized():
        return False
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def on_main(compute: Callable[[], T]) -> T:
    """`compute()` run on rank 0, its result handed to every process."""
    if world_size() == 1:
        return compute()
    box: list[Any] = [compute() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """This process's share of each batch (see the module docstring); the batches themselves alone."""
    size = world_size()
    if size == 1 or not batches:
        return list(batches)
    samples = torch.cat(list(batches))
    mine = list(DistributedSampler(range(len(samples)), num_replicas=size, rank=rank(), shuffle=False))
    per_process = -(-len(batches[0]) // size)
    return list(samples[mine].split(per_process))


class _Loss(nn.Module):
    """The loss of one batch as a module's forward, for DistributedDataParallel to wrap: the
    parameters it trains are `model`'s."""

    def __init__(self, model: nn.Module, batch_loss: Callable[[int, Any], torch.Tensor]):
        super().__init__()
        self.model = model
        self.batch_loss = batch_loss

    def forward(self, epoch: int, batch: Any) -> torch.Tensor:
        return self.batch_loss(epoch, batch)


def data_parallel(model: nn.Module, batch_loss: Callable[[int, Any], torch.Tensor]) -> Callable[[int, Any],
                                                                                                 torch.Tensor]:
    """`batch_loss`, with gradients averaged over the processes when there are several."""
    if world_size() == 1:
        return batch_loss
    # a phase may leave some of `model` unused (progressive periods, students not growing)
    return DistributedDataParallel(_Loss(model, batch_loss), find_unused_parameters=True)


@contextlib.contextmanager
def batch_norms_over_processes(model: nn.Module) -> Iterator[None]:
    """While it lasts, `model`'s batch norms in training mode normalise over every process's share
    of the batch together, as one process normalises over the whole batch: with n_p samples in
    process p, mean = sum_p sum x / sum_p n_p and var = sum_p sum (x - mean)^2 / sum_p n_p, each sum
    an all-reduce whose backward all-reduces the gradients, so the averaged gradient is the whole
    batch's. By hand because torch's SyncBatchNorm runs on GPUs alone and fxrewrite trains on CPUs
    over gloo too. Alone, nothing changes."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] \
        if world_size() > 1 else []
    for norm in norms:
        norm.forward = functools.partial(_over_processes, norm)  # an instance attribute, removed below
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward


def _over_processes(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if not norm.training:
        return type(norm).forward(norm, x)
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    count = torch.tensor(float(x.numel() // x.shape[1]), dtype=x.dtype, device=x.device)
    dist.all_reduce(count)
    mean = collective.all_reduce(x.sum(dims)) / count
    centred = x - mean.view(shape)
    var = collective.all_reduce((centred * centred).sum(dims)) / count
    if norm.track_running_stats and norm.running_mean is not None:
        with torch.no_grad():
            norm.num_batches_tracked.add_(1)
            momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
            norm.running_mean.lerp_(mean.detach(), momentum)
            norm.running_var.lerp_(var.detach() * count / max(float(count) - 1, 1.0), momentum)
    y = centred * torch.rsqrt(var + norm.eps).view(shape)
    return y * norm.weight.view(shape) + norm.bias.view(shape) if norm.affine else y
