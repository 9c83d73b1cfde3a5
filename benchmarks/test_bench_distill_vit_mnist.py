"""Transformers lowered the Arch-Net way on real data (issue 12): a ViT (7x7 patches of 28x28 MNIST
digits, 2 encoder blocks of width 64 with 4 heads, LayerNorm and GELU) trained on MNIST, then lowered
like a user does (`fxrewrite.lower(..., calib=...)`) to archnet-transformer (batch norm for
LayerNorm, attention kept with legal parts) and to archnet (no token ops: one student from the
image to the head's features), at float32, 4w4a and 2w4a.

Run: .venv/bin/python -m pytest benchmarks/test_bench_distill_vit_mnist.py -q -s
Data and measurement as benchmarks/test_bench_distill_mnist.py (first 8,000 images train and
calibrate, last 2,000 test; skipped without ../shared/data/mnist); rows go to the same results file.
"""

from __future__ import annotations

import time

import pytest
import torch

from fxrewrite import lower
from fxrewrite.examples import TinyViT, train_classifier
from fxrewrite.frontend import capture

from test_bench_distill_mnist import EPOCHS, FINETUNE_EPOCHS, TEST, TRAIN, mnist, record_row  # noqa: F401

CASES = {f"ViT {bits_name}, {target}": (target, bits) for target in ("archnet-transformer", "archnet")
         for bits_name, bits in (("float32", (None, None)), ("4w4a", (4, 4)), ("2w4a", (2, 4)))}


@pytest.fixture(scope="module")
def vit_teacher(mnist):
    images, labels = mnist
    model = train_classifier(lambda: TinyViT(image=28, patch=7, dim=64, depth=2, heads=4), images, labels, epochs=8,
                             train=8000, batch=64)
    with torch.no_grad():
        return model, (model(images[TEST]).argmax(1) == labels[TEST]).float().mean().item()


@pytest.mark.parametrize("case", list(CASES))
def test_distil_mnist_vit(benchmark, mnist, vit_teacher, case):
    images, labels = mnist
    model, teacher_top1 = vit_teacher
    target, (wbits, abits) = CASES[case]
    example = (images[:1],)
    benchmark.group = "distil a ViT trained on MNIST to archnet-transformer and archnet"
    start = time.perf_counter()
    lowered = benchmark.pedantic(lambda: lower(capture(model, example), example, target=target, calib=images[TRAIN],
                                               calib_size=8000, wbits=wbits, abits=abits, epochs=EPOCHS,
                                               finetune_epochs=FINETUNE_EPOCHS), rounds=1, iterations=1)
    record_row(case, lowered, model, teacher_top1, images, labels, time.perf_counter() - start)
    assert lowered.legal
