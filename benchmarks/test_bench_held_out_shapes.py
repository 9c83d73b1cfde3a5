"""Distillation judged on data the recipe was never tuned on (issue 39): synthetic shapes.

MNIST is where fxrewrite's defaults were tuned; this benchmark keeps a second dataset out of that
tuning. Ten classes of 32x32 grey images drawn deterministically from seed 0 (`shapes`): disc,
square, triangle, cross, ring, horizontal bars, vertical bars, diagonal stripes, checkerboard, dot
grid; each at a random size, place and contrast, over a random background level, with Gaussian
noise, repeated over three channels. 10,000 images: the first 8,000 train the teacher (with labels)
and are the `.npy` given to --calib (without), the last 2,000 test. The teacher is the families
benchmark's two-stage ConvNeXt, trained as there; `fxrewrite lower teacher.pt2 --target archnet
--calib images.npy --wbits 4 --abits 4` with default flags, judged on the test split.

Run: .venv/bin/python -m pytest benchmarks/test_bench_held_out_shapes.py -q -s
The teacher, its .pt2 and the images are cached in $FXREWRITE_BENCH_CACHE/shapes; rows are
appended to benchmarks/shapes-results.jsonl with the commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from test_bench_families_mnist import CACHE, _commit, _run, _teacher

RESULTS = Path(__file__).with_name("shapes-results.jsonl")
SIZE, COUNT, TRAIN, TEST = 32, 10_000, slice(0, 8000), slice(8000, 10_000)


def _shape(kind: int, rng: np.random.Generator) -> np.ndarray:
    """One image of class `kind` (module docstring) in [0, 1]."""
    y, x = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    r = rng.uniform(5, 12)
    cy, cx = rng.uniform(r, SIZE - r, 2)
    dy, dx = y - cy, x - cx
    period = rng.uniform(4, 8)
    masks = [
        dy ** 2 + dx ** 2 <= r ** 2,
        (abs(dy) <= r * 0.8) & (abs(dx) <= r * 0.8),
        (dy <= r * 0.7) & (dy >= -r) & (abs(dx) <= (dy + r) * 0.6),
        ((abs(dy) <= r / 4) & (abs(dx) <= r)) | ((abs(dx) <= r / 4) & (abs(dy) <= r)),
        (dy ** 2 + dx ** 2 <= r ** 2) & (dy ** 2 + dx ** 2 >= (r * 0.6) ** 2),
        (y % period) < period / 2,
        (x % period) < period / 2,
        ((x + y) % period) < period / 2,
        ((y // (period / 2)) + (x // (period / 2))) % 2 == 0,
        ((y % period) - period / 2) ** 2 + ((x % period) - period / 2) ** 2 <= (period / 4) ** 2,
    ]
    background, contrast = rng.uniform(0, 0.4), rng.uniform(0.4, 0.6)
    image = background + contrast * masks[kind] + rng.normal(0, 0.08, (SIZE, SIZE))
    return np.clip(image, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def shapes() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, COUNT)
    images = np.stack([_shape(int(k), rng) for k in labels])[:, None].repeat(3, axis=1)
    return torch.from_numpy(images), torch.from_numpy(labels)


def test_convnext_on_held_out_shapes_with_default_flags(benchmark, shapes, tmp_path):
    images, labels = shapes
    program, model, teacher_top1 = _teacher("convnext", images, labels, cache="shapes")
    calib = CACHE / "shapes" / "train-images.npy"
    if not calib.is_file():
        np.save(calib, images[TRAIN].numpy())
    out, report_path = tmp_path / "student.pt2", tmp_path / "report.json"
    command = [str(Path(sys.executable).with_name("fxrewrite")), "lower", str(program), "--target", "archnet",
               "--calib", str(calib), "--wbits", "4", "--abits", "4", "-o", str(out), "--report", str(report_path)]
    benchmark.group = "ConvNeXt on held-out synthetic shapes, default flags"
    start = time.perf_counter()
    run = benchmark.pedantic(lambda: subprocess.run(command, capture_output=True, text=True), rounds=1, iterations=1)
    print(run.stdout[-3000:], run.stderr[-3000:])
    row = {"family": "convnext", "data": "shapes", "bits": "4w4a", "commit": _commit(), "teacher_top1": teacher_top1,
           "exit": run.returncode, "seconds": round(time.perf_counter() - start, 1)}
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        distillation = report.get("distillation") or {}
        row |= {"teacher_cycles": report["before"]["cycles"], "student_cycles": report["after"]["cycles"],
                "phase_seconds": distillation.get("seconds"), "stops": distillation.get("stops"),
                "samples_per_second": distillation.get("samples_per_second"),
                "grown": [r["growth"] for r in distillation.get("regions", []) if r["growth"]],
                "outlook": (distillation.get("outlook") or {}).get("text"),
                # the held-out agreement after every epoch: checks the outlook against a longer run
                "history": [(p["phase"], p["epoch"], p["seconds"], p["agreement"]) for p in distillation.get("history", [])]}
    if out.is_file():
        student = torch.export.load(out).module()
        with torch.no_grad():
            got, want = _run(student, images[TEST]), model(images[TEST])
        row |= {"student_top1": (got.argmax(1) == labels[TEST]).float().mean().item(),
                "agreement": (got.argmax(1) == want.argmax(1)).float().mean().item()}
    print(json.dumps(row))
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    assert run.returncode == 0
