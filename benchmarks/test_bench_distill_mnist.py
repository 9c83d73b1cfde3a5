"""Arch-Distillation on real data: ConvNeXt-style teachers trained on MNIST, lowered to archnet the way
a user does (`fxrewrite.lower(..., calib=...)`, default flags apart from the formats).

Run: .venv/bin/python -m pytest benchmarks/test_bench_distill_mnist.py -q -s
Data: ../shared/data/mnist (the 10,000-image MNIST test set): the first 8,000 images train the
teachers (with labels) and are the calibration inputs (without; the lowering holds out a fifth of
them for its own report), the last 2,000 measure teacher and student. Skipped when the folder is
absent. Each case prints one row of the README's table and appends it to
benchmarks/mnist-results.jsonl; the reference in the same run is the teacher's own accuracy and cost.

Cases: the 2x2-patchify teacher at float32, 4w4a and 2w4a (parallel schedule), 4w4a and 2w4a progressive;
and a teacher with a ResNet-style 7x7 stride-2 stem at 4w4a, its stem lowered exactly (partial sums
of 3x3 windows) or by the approximate pass (three 3x3 convs fitted by least squares), then distilled.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fxrewrite import lower
from fxrewrite.examples import TinyConvNeXt, train_classifier
from fxrewrite.frontend import capture
from fxrewrite.lowering.exact import default_pipeline
from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import canonical_order

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
RESULTS = Path(__file__).with_name("mnist-results.jsonl")
TRAIN, TEST = slice(0, 8000), slice(8000, 10000)
EPOCHS, FINETUNE_EPOCHS = 6, 4


def _idx(name: str) -> np.ndarray:
    with gzip.open(MNIST / name) as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


@pytest.fixture(scope="module")
def mnist():
    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found at {MNIST}; this benchmark needs ../shared/data/mnist beside the repository")
    images = torch.tensor(_idx("t10k-images-idx3-ubyte.gz"), dtype=torch.float32)[:, None] / 255
    return images, torch.tensor(_idx("t10k-labels-idx1-ubyte.gz"), dtype=torch.long)


def _train_teacher(images: torch.Tensor, labels: torch.Tensor, stem_kernel: int) -> tuple[TinyConvNeXt, float]:
    model = train_classifier(lambda: TinyConvNeXt(stem_kernel=stem_kernel), images, labels, epochs=8, train=8000,
                             batch=64)
    with torch.no_grad():
        return model, (model(images[TEST]).argmax(1) == labels[TEST]).float().mean().item()


@pytest.fixture(scope="module")
def teachers(mnist):
    return {kernel: _train_teacher(*mnist, kernel) for kernel in (2, 7)}


def _approximate_stem_pipeline():
    """The exact pipeline with the large-kernel conv left to the approximate 3x3 stack instead."""
    return canonical_order([p for p in default_pipeline() if p.name != "decompose-large-kernel"]
                           + [registered_passes()["approx-large-kernel"]])


CASES = {
    "float32 parallel": dict(stem=2, bits=(None, None)),
    "4w4a parallel": dict(stem=2, bits=(4, 4)),
    "2w4a parallel": dict(stem=2, bits=(2, 4)),
    "4w4a progressive": dict(stem=2, bits=(4, 4), schedule="progressive"),
    "2w4a progressive": dict(stem=2, bits=(2, 4), schedule="progressive"),
    "7x7 stem exact, 4w4a": dict(stem=7, bits=(4, 4)),
    # the fitted stack costs more than the stem, so the default budget would distil the stem instead
    "7x7 stem approximate 3x3 stack, 4w4a": dict(stem=7, bits=(4, 4), passes=_approximate_stem_pipeline,
                                                 student_budget=4.0),
}


def record_row(case: str, lowered, model, teacher_top1: float, images: torch.Tensor, labels: torch.Tensor,
               seconds: float, test: slice = TEST) -> dict:
    """Student and teacher measured on the `test` inputs (the last 2,000 images): printed as a README
    row and appended to RESULTS."""
    report = lowered.report
    with torch.no_grad():
        student = lowered.gm(images[test]).argmax(1)
        teacher = model(images[test]).argmax(1)
    row = {"case": case, "teacher_top1": teacher_top1,
           "student_top1": (student == labels[test]).float().mean().item(),
           "agreement": (student == teacher).float().mean().item(), "seconds": round(seconds, 1),
           "legal": lowered.legal, "teacher_macs": report.before.macs, "student_macs": report.after.macs,
           "teacher_cycles": round(report.before.estimate.cycles), "student_cycles": round(report.after.estimate.cycles),
           "students": [f"{s.region}: {s.size} (x{s.cost_ratio:.2f})" for s in report.distillation.students],
           "phases": report.seconds, "stops": report.distillation.stops,
           # held-out agreement over time: (phase, epoch, seconds since distillation began, agreement)
           "history": [(p.phase, p.epoch, p.seconds, p.agreement) for p in report.distillation.history]}
    print(f"\n{case}: teacher {teacher_top1:.4f}, student {row['student_top1']:.4f}, agreement {row['agreement']:.4f}, "
          f"{seconds:.0f} s, legal {lowered.legal}, MACs/image {row['teacher_macs']:,} -> {row['student_macs']:,} "
          f"(x{row['student_macs'] / row['teacher_macs']:.2f}), cycles {row['teacher_cycles']:,} -> "
          f"{row['student_cycles']:,} (x{row['student_cycles'] / row['teacher_cycles']:.2f}); "
          + "; ".join(row["students"]))
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    return row


@pytest.mark.parametrize("case", list(CASES))
def test_distil_mnist_convnext_to_archnet(benchmark, mnist, teachers, case):
    images, labels = mnist
    spec = CASES[case]
    model, teacher_top1 = teachers[spec["stem"]]
    example = (images[:1],)
    options = dict(target="archnet", calib=images[TRAIN], calib_size=8000, wbits=spec["bits"][0],
                   abits=spec["bits"][1], epochs=EPOCHS, finetune_epochs=FINETUNE_EPOCHS,
                   schedule=spec.get("schedule", "parallel"))
    if "passes" in spec:
        options |= dict(passes=spec["passes"](), student_budget=spec["student_budget"])
    benchmark.group = "distil ConvNeXt-style MNIST teachers to archnet"
    start = time.perf_counter()
    lowered = benchmark.pedantic(lambda: lower(capture(model, example), example, **options), rounds=1, iterations=1)
    seconds = time.perf_counter() - start
    record_row(case, lowered, model, teacher_top1, images, labels, seconds)
    assert lowered.legal
