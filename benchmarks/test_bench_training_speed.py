"""Distillation's training speed against the plain-step limit (issue 39).

For torchvision's resnet18 and mobilenet_v2 (10 classes, random weights) at 3x32x32 on archnet:
`fxrewrite.lower(teacher, calib=1,280 noise inputs, epochs=3, finetune_epochs=3, patience=None)`,
float32 and 4w4a; the report gives each phase's samples per second (scoring and checkpoints
included). The limit, in the same run on the same cores: a plain PyTorch training step of the
lowered student (the network the chip runs) on a batch of the same size (64) - forward, MSE against
fixed targets, backward, Adam step - timed over STEPS steps after WARMUP. The ratio is limit /
phase: 1.0 means the phase trains as fast as a bare loop over its student. Speed depends on the
machine: compare rows from one machine and run (each row holds the torch thread count).

Run: .venv/bin/python -m pytest benchmarks/test_bench_training_speed.py -q -s
Rows are appended to benchmarks/training-speed-results.jsonl with the commit.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fxrewrite import lower

RESULTS = Path(__file__).with_name("training-speed-results.jsonl")
REPOSITORY = Path(__file__).resolve().parents[1]
BATCH, WARMUP, STEPS = 64, 3, 20
FAMILIES = {"resnet18": torchvision.models.resnet18, "mobilenet_v2": torchvision.models.mobilenet_v2}


def plain_step_rate(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Samples per second of forward, MSE, backward and an Adam step of `model` on batch `x`."""
    model.train()
    with torch.no_grad():
        target = model(x).detach() + 1.0
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            start = time.perf_counter()
        optimizer.zero_grad()
        F.mse_loss(model(x), target).backward()
        optimizer.step()
    return STEPS * len(x) / (time.perf_counter() - start)


@pytest.mark.parametrize("family", FAMILIES)
def test_training_speed_against_a_plain_step(benchmark, family):
    torch.manual_seed(0)
    teacher = FAMILIES[family](num_classes=10).eval()
    calib = torch.randn(1280, 3, 32, 32)
    benchmark.group = "distillation samples/s against the plain-step limit"

    def distilled(bits: int | None):
        return lower(teacher, (calib[:1],), target="archnet", calib=calib, epochs=3, finetune_epochs=3,
                     patience=None, wbits=bits, abits=bits)

    runs = {None: benchmark.pedantic(distilled, (None,), rounds=1, iterations=1), 4: distilled(4)}
    # the float student: the limit excludes fake quantization, which the 4w4a phases pay for
    limit = plain_step_rate(runs[None].gm, calib[:BATCH])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPOSITORY, capture_output=True,
                            text=True).stdout.strip()
    for bits, lowered in runs.items():
        phases = lowered.report.distillation.samples_per_second
        row = {"family": family, "bits": f"{bits}w{bits}a" if bits else "float32", "threads": torch.get_num_threads(),
               "plain_step": round(limit, 1), **phases,
               **{f"{phase}_vs_limit": round(limit / rate, 2) for phase, rate in phases.items()}, "commit": commit}
        print(json.dumps(row))
        with RESULTS.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        assert set(phases) == {"blockwise", "finetune"}
