"""Distillation over processes: shards, averaged gradients and rank 0's decisions, in 2 gloo processes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from fxrewrite.examples import digits_convnext, digits_inputs
from fxrewrite.distill.training.checkpoints import Checkpoints
from fxrewrite.distill.training.processes import (batch_norms_over_processes, data_parallel, on_main, rank, shard,
                                                   world_size)
from fxrewrite.errors import DistillError


@contextlib.contextmanager
def two_gloo_processes(process: int, port: int) -> Iterator[None]:
    """This process joined, as `process`, to a group of two over gloo on `port`, until the block ends."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=process, world_size=2)
    try:
        yield
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(process: int, port: int, results) -> None:
    with two_gloo_processes(process, port):
        batches = list(torch.arange(10.0).reshape(10, 1).split(4))  # batches of 4, 4, 2
        mine = shard(batches)
        torch.manual_seed(process)  # different starts: DDP must hand every process rank 0's weights
        layer = nn.Linear(1, 1)
        loss_of = data_parallel(layer, lambda _, batch: ((layer(batch) - 1) ** 2).mean())
        loss_of(0, mine[0]).backward()
        decided = on_main(lambda: f"decided by {rank()}")
        results.put((process, world_size(), [b.flatten().tolist() for b in mine],
                     layer.weight.item(), layer.weight.grad.item(), decided))


def test_two_processes_share_each_batch_average_gradients_and_take_rank_0s_decisions():
    context = mp.get_context("spawn")
    results = context.Queue()
    mp.start_processes(_worker, args=(free_port(), results), nprocs=2, start_method="spawn")
    by_rank = dict((r[0], r[1:]) for r in (results.get(timeout=60) for _ in range(2)))
    (size0, shards0, weight0, grad0, decided0), (size1, shards1, weight1, grad1, decided1) = by_rank[0], by_rank[1]
    assert size0 == size1 == 2
    # each process holds half of every batch; together they hold exactly the batch
    assert shards0 == [[0.0, 2.0], [4.0, 6.0], [8.0]] and shards1 == [[1.0, 3.0], [5.0, 7.0], [9.0]]
    assert decided0 == decided1 == "decided by 0"
    assert weight0 == weight1  # rank 0's initial state
    # the averaged gradient is the gradient of the whole first batch, as one process would compute it
    torch.manual_seed(0)
    alone = nn.Linear(1, 1)
    ((alone(torch.tensor([[0.0], [1.0], [2.0], [3.0]])) - 1) ** 2).mean().backward()
    assert abs(grad0 - alone.weight.grad.item()) < 1e-6 and abs(grad1 - grad0) < 1e-7


def _norm_worker(process: int, port: int, results) -> None:
    with two_gloo_processes(process, port):
        torch.manual_seed(0)
        layers = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
        batch = shard([torch.randn(6, 3, 7, 5) * 3 + 1])[0]  # odd sizes; 3 samples per process
        loss_of = data_parallel(layers, lambda _, b: layers(b).square().mean())
        with batch_norms_over_processes(layers):
            loss_of(0, batch).backward()
        norm = layers[1]
        results.put((process, norm.running_mean.tolist(), norm.running_var.tolist(),
                     [p.grad.flatten().tolist() for p in layers.parameters()], "forward" in vars(norm)))


def test_batch_norms_over_two_processes_normalise_the_whole_batch_as_one_process_does():
    context = mp.get_context("spawn")
    results = context.Queue()
    mp.start_processes(_norm_worker, args=(free_port(), results), nprocs=2, start_method="spawn")
    by_rank = dict((r[0], r[1:]) for r in (results.get(timeout=60) for _ in range(2)))
    torch.manual_seed(0)
    layers = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    whole = torch.randn(6, 3, 7, 5) * 3 + 1
    layers(whole).square().mean().backward()
    want = [p.grad.flatten() for p in layers.parameters()]
    for mean, var, grads, patched in by_rank.values():
        assert not patched  # the layer is itself again after training
        assert torch.allclose(torch.tensor(mean), layers[1].running_mean, atol=1e-6)
        assert torch.allclose(torch.tensor(var), layers[1].running_var, rtol=1e-5)
        for got, expected in zip(grads, want):
            assert torch.allclose(torch.tensor(got), expected, rtol=1e-4, atol=1e-6)


def test_alone_nothing_is_sharded_or_wrapped():
    batches = list(torch.randn(6, 2).split(4))
    assert shard(batches) == batches
    loss = lambda _, b: b.sum()  # noqa: E731
    assert data_parallel(nn.Linear(2, 2), loss) is loss and on_main(lambda: 7) == 7


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory) -> Path:
    """The demo's ConvNeXt-style teacher, trained on scikit-learn's digits and saved as users hand one over."""
    path = tmp_path_factory.mktemp("teacher") / "digits_convnext.pt2"
    torch.export.save(torch.export.export(digits_convnext().eval(), (digits_inputs()[:1],)), path)
    return path


def lower_digits(teacher: Path, output: Path, processes: int, *extra: str) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] if processes > 1 else []
    command = [sys.executable, *launcher, "-m", "fxrewrite", "lower", str(teacher), "-t", "archnet",
               "--calib", "fxrewrite.examples:digits_inputs", "--calib-size", "900", "--epochs", "4",
               "--finetune-epochs", "3", "--wbits", "4", "--abits", "4", "-o", str(output),
               "--report", str(output.with_suffix(".json")), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


#: the held-out top-1 agreement each run must reach on the digits teacher (chance is 10%), and how far the
#: two runs may differ. Measured over seeds 0-2 on this 2-core machine (OMP_NUM_THREADS 2 for one process, 1
#: for each of two): one process 0.789 / 0.850 / 0.861 (0.794 at seed 0 with 1 thread), two processes
#: 0.806 / 0.811 / 0.833; two minus one +0.017 / -0.039 / -0.028 (standard deviation 0.03; 180 held-out
#: inputs, so one input is 0.0056). Earlier, one process measured 0.772-0.872 over seeds 0-4 and on two other
#: x86 machines. The bound sits five spreads below the lowest figure, the margin five spreads wide: before
#: the two runs built the same students and normalised over the whole batch, two processes ended 0.22
#: below one at seed 0 (0.567 against 0.789)
AGREEMENT_BOUND = 0.60
AGREEMENT_MARGIN = 0.15


def test_two_gloo_processes_distil_the_digits_teacher_as_one_process_does(digits_teacher, tmp_path):
    one = lower_digits(digits_teacher, tmp_path / "one.pt2", 1)
    assert one.returncode == 0, one.stderr[-2000:]
    two = lower_digits(digits_teacher, tmp_path / "two.pt2", 2)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("every node is legal on archnet") == 1  # rank 0 alone reports and writes
    reports = [json.loads((tmp_path / f"{n}.json").read_text())["distillation"] for n in ("one", "two")]
    assert [r["processes"] for r in reports] == [1, 2] and all(r["device"] == "cpu" for r in reports)
    assert all(r["top1_agreement"] >= AGREEMENT_BOUND for r in reports), [r["top1_agreement"] for r in reports]
    assert abs(reports[0]["top1_agreement"] - reports[1]["top1_agreement"]) <= AGREEMENT_MARGIN, reports
    # finished runs leave no checkpoint behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.json", "one.pt2", "two.json", "two.pt2"]


def _resume_worker(process: int, port: int, directory: str, results) -> None:
    with two_gloo_processes(process, port):
        outcome = []
        for name in ("alone", "together"):
            try:
                saved = Checkpoints(Path(directory) / name, "run", resume=True).resume_point("blockwise-parallel")
                outcome.append(saved[0])
            except DistillError as exc:
                outcome.append(str(exc))
        results.put((process, outcome))


def test_a_checkpoint_is_resumed_only_by_as_many_processes_as_wrote_it(tmp_path):
    layer = nn.Linear(1, 1)
    for name, size in (("alone", 1), ("together", 2)):
        checkpoints = Checkpoints(tmp_path / name, "run", resume=False)
        checkpoints.save("blockwise-parallel", 2, layer, torch.optim.SGD(layer.parameters(), 0.1))
        if size == 2:  # what two processes write: the same, with their count
            saved = torch.load(checkpoints.path, weights_only=True)
            torch.save(saved | {"world_size": 2}, checkpoints.path)
    context = mp.get_context("spawn")
    results = context.Queue()
    mp.start_processes(_resume_worker, args=(free_port(), str(tmp_path), results), nprocs=2, start_method="spawn")
    by_rank = dict((r[0], r[1:]) for r in (results.get(timeout=60) for _ in range(2)))
    for (refused, resumed), in by_rank.values():
        assert "was written by a run over 1 process(es) and this run has 2: resume with as many" in refused
        assert resumed == 2  # the epochs done in the phase
