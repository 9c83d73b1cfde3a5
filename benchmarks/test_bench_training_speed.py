"""Distillation's training speed against the plain-step limit (issue 39).

For the families benchmark's resnet18 and mobilenet_v2 teachers (trained on MNIST at 3x32x32,
cached by benchmarks/test_bench_families_mnist.py, which this reuses; random-weight teachers on
noise diverge, as no user's would) on archnet: `fxrewrite.lower(teacher, calib=the first 1,280
training images, epochs=3, finetune_epochs=3, patience=None)`, float32 and 4w4a; the report gives
each phase's samples per second (scoring and checkpoints included). The limit, in the same run on the
same cores: a plain PyTorch training step of the lowered float student (the network the chip runs)
on a batch of the same size (64) - forward, MSE against fixed targets, backward, Adam step - with the
fastest kernels torch offers here (fused Adam; the faster of the contiguous and channels-last layouts),
the best of REPEATS timings of STEPS steps after WARMUP. The ratio is limit / phase: 1.0 means the phase trains
as fast as a bare loop over its student. A 4w4a row also gives the limit of the same student as its phases
train it: fake-quantized in the target's formats (`quantized_limit`, `*_vs_quantized`), which the float limit
leaves out. Speed depends on the machine: compare rows from one machine
and run (each row holds the torch thread count).

Run: .venv/bin/python -m pytest benchmarks/test_bench_training_speed.py -q -s
Rows are appended to benchmarks/training-speed-results.jsonl with the commit.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fxrewrite import lower
from fxrewrite.quant import calibrate, quantize_modules, scheme_for
from fxrewrite.target import Target
from test_bench_families_mnist import _images, _teacher, mnist  # noqa: F401

RESULTS = Path(__file__).with_name("training-speed-results.jsonl")
REPOSITORY = Path(__file__).resolve().parents[1]
BATCH, WARMUP, STEPS, REPEATS = 64, 3, 20, 3


def plain_step_rate(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Samples per second of forward, MSE, backward and a fused Adam step of `model` on batch `x`, in the
    faster of the two memory layouts."""
    return max(_plain_step_rate(copy.deepcopy(model), x, layout)
               for layout in (torch.contiguous_format, torch.channels_last))


def _plain_step_rate(model: torch.nn.Module, x: torch.Tensor, layout: torch.memory_format) -> float:
    model.train().to(memory_format=layout)
    x = x.contiguous(memory_format=layout)
    with torch.no_grad():
        target = model(x).detach() + 1.0
    optimizer = torch.optim.Adam(model.parameters(), 1e-4, fused=True)

    def step() -> None:
        optimizer.zero_grad()
        F.mse_loss(model(x), target).backward()
        optimizer.step()

    for _ in range(WARMUP):
        step()
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(STEPS):
            step()
        best = min(best, time.perf_counter() - start)
    return STEPS * len(x) / best


def _fake_quantized(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """A copy of `model` with its convs and FC layers fake-quantized in archnet's 4-bit formats (LSQ),
    calibrated on `x`, its quantizers training as in the 4w4a phases."""
    quantized = copy.deepcopy(model)
    quantize_modules(quantized, scheme_for(Target.load("archnet"), 4, 4))
    calibrate(quantized, lambda: quantized(x))
    return quantized


@pytest.mark.parametrize("family", ["resnet18", "mobilenet_v2"])
def test_training_speed_against_a_plain_step(benchmark, mnist, family):
    raw, labels = mnist
    images = _images(raw)
    _, teacher, _ = _teacher(family, images, labels)
    calib = images[:1280]
    benchmark.group = "distillation samples/s against the plain-step limit"

    def distilled(bits: int | None):
        return lower(teacher, (calib[:1],), target="archnet", calib=calib, epochs=3, finetune_epochs=3,
                     patience=None, wbits=bits, abits=bits)

    runs = {None: benchmark.pedantic(distilled, (None,), rounds=1, iterations=1), 4: distilled(4)}
    # the float student: the limit excludes fake quantization, which the 4w4a phases pay for
    limit = plain_step_rate(runs[None].gm, calib[:BATCH])
    quantized_limit = plain_step_rate(_fake_quantized(runs[None].gm, calib[:BATCH]), calib[:BATCH])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPOSITORY, capture_output=True,
                            text=True).stdout.strip()
    for bits, lowered in runs.items():
        phases = lowered.report.distillation.samples_per_second
        row = {"family": family, "bits": f"{bits}w{bits}a" if bits else "float32", "threads": torch.get_num_threads(),
               "plain_step": round(limit, 1), **phases,
               **{f"{phase}_vs_limit": round(limit / rate, 2) for phase, rate in phases.items()}}
        if bits:
            row |= {"quantized_limit": round(quantized_limit, 1),
                    **{f"{phase}_vs_quantized": round(quantized_limit / rate, 2) for phase, rate in phases.items()}}
        row["commit"] = commit
        print(json.dumps(row))
        with RESULTS.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        assert set(phases) == {"blockwise", "finetune"}
