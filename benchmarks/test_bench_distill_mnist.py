"""Arch-Distillation on real data: a ConvNeXt-style teacher trained on MNIST, lowered to archnet.

Run: .venv/bin/python -m pytest benchmarks/test_bench_distill_mnist.py -q -s
Data: ../shared/data/mnist (the 10,000-image MNIST test set): the first 8,000 images train the
teacher (with labels) and the students (without), the last 2,000 measure both. Skipped when the
folder is absent. Each case prints one row of the README's table and appends it to
benchmarks/mnist-results.jsonl; the reference in the same run is the teacher's own accuracy.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fxrewrite.frontend import capture
from fxrewrite.cost import graph_macs
from fxrewrite.distill import DistillConfig, distill
from fxrewrite.examples import TinyConvNeXt
from fxrewrite.legality import check
from fxrewrite import lower
from fxrewrite.quant import scheme_for
from fxrewrite.target import Target

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
RESULTS = Path(__file__).with_name("mnist-results.jsonl")
TRAIN, TEST = slice(0, 8000), slice(8000, 10000)


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


@pytest.fixture(scope="module")
def teacher(mnist):
    images, labels = mnist
    torch.manual_seed(0)
    model = TinyConvNeXt()
    optimizer = torch.optim.AdamW(model.parameters(), 3e-3)
    start = time.perf_counter()
    for _ in range(8):
        for batch in torch.randperm(8000).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[TEST]).argmax(1) == labels[TEST]).float().mean().item()
    archnet = Target.load("archnet")
    example = (images[:64],)
    exact = lower(capture(model, example), example, target=archnet)
    print(f"\nteacher: top-1 {accuracy:.4f} after {time.perf_counter() - start:.0f} s of training; "
          f"{len(exact.report.regions)} regions on archnet: "
          + "; ".join(", ".join(f"{k} {n}" for k, n in r.kinds.items()) for r in exact.report.regions))
    return model, exact.gm, accuracy, archnet


CASES = {
    "float32 parallel": dict(bits=None, schedule="parallel"),
    "4w4a parallel": dict(bits=(4, 4), schedule="parallel"),
    "2w4a parallel": dict(bits=(2, 4), schedule="parallel"),
    "4w4a progressive": dict(bits=(4, 4), schedule="progressive"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_distil_mnist_convnext_to_archnet(benchmark, mnist, teacher, case):
    images, labels = mnist
    model, gm, teacher_top1, archnet = teacher
    bits, schedule = CASES[case]["bits"], CASES[case]["schedule"]
    scheme = scheme_for(archnet, *bits) if bits else None
    config = DistillConfig(epochs=6, finetune_epochs=4, schedule=schedule, quant=scheme, seed=0)
    train = images[TRAIN].split(64)
    held_out = images[TEST].split(500)
    benchmark.group = "distil a ConvNeXt-style MNIST teacher to archnet"
    start = time.perf_counter()
    result = benchmark.pedantic(distill, args=(gm, archnet, train, held_out, config), rounds=1, iterations=1)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        student_top1 = (result.gm(images[TEST]).argmax(1) == labels[TEST]).float().mean().item()
    legal = check(result.gm, archnet).all_legal
    row = {"case": case, "teacher_top1": teacher_top1, "student_top1": student_top1,
           "agreement": result.agreement.top1, "seconds": round(seconds, 1), "legal": legal,
           "teacher_macs": graph_macs(capture(model, (images[:1],))), "student_macs": graph_macs(result.gm),
           "phases": result.seconds}
    print(f"\n{case}: teacher {teacher_top1:.4f}, student {student_top1:.4f}, agreement {row['agreement']:.4f}, "
          f"{seconds:.0f} s, legal {legal}, MACs/image {row['teacher_macs']:,} -> {row['student_macs']:,}")
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    assert legal
