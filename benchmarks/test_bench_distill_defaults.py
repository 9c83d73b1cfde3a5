"""Distillation with default flags on teachers of two families (issue 13): what a user gets from
`fxrewrite lower MODEL --target archnet --calib images --wbits B --abits B` and nothing else (all
inputs used, phases stopped on a held-out plateau within the 600 s budget, best epoch kept), and an
ablation of the recipe's switchable parts at 4w4a.

Run: .venv/bin/python -m pytest benchmarks/test_bench_distill_defaults.py -q -s
Data and measurement as benchmarks/test_bench_distill_mnist.py (first 8,000 MNIST test images train
the teachers and, without labels, calibrate; the last 2,000 test); rows go to the same results file,
with the held-out agreement after every epoch.

Teachers: the ConvNeXt-style one of that benchmark (2x2 patchify stem), and a MobileNetV3-style one
(hardswish stem, inverted residual blocks with 5x5 depthwise convs and squeeze-and-excitation gates
with hardsigmoid, global pooling), both trained with labels for 8 epochs.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from fxrewrite import lower
from fxrewrite.examples import train_classifier
from fxrewrite.frontend import capture

from test_bench_distill_mnist import TEST, TRAIN, _train_teacher, mnist, record_row  # noqa: F401


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce, self.expand = nn.Conv2d(channels, squeezed, 1), nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        return x * nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(self.pool(x)))))


class InvertedResidual(nn.Module):
    """1x1 expand, 5x5 depthwise, squeeze-and-excitation, 1x1 project; a residual where shapes allow."""

    def __init__(self, inputs: int, expanded: int, outputs: int, stride: int):
        super().__init__()
        self.residual = stride == 1 and inputs == outputs
        self.body = nn.Sequential(
            nn.Conv2d(inputs, expanded, 1, bias=False), nn.BatchNorm2d(expanded), nn.Hardswish(),
            nn.Conv2d(expanded, expanded, 5, stride, 2, groups=expanded, bias=False), nn.BatchNorm2d(expanded),
            nn.Hardswish(), SqueezeExcite(expanded, expanded // 4),
            nn.Conv2d(expanded, outputs, 1, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class TinyMobileNetV3(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(InvertedResidual(16, 48, 24, 2), InvertedResidual(24, 72, 24, 1),
                                    InvertedResidual(24, 96, 40, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(40, classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


@pytest.fixture(scope="module")
def family_teachers(mnist):
    images, labels = mnist
    mobilenet = train_classifier(TinyMobileNetV3, images, labels, epochs=8, train=8000, batch=64)
    with torch.no_grad():
        mobilenet_top1 = (mobilenet(images[TEST]).argmax(1) == labels[TEST]).float().mean().item()
    return {"ConvNeXt": _train_teacher(images, labels, 2), "MobileNetV3": (mobilenet, mobilenet_top1)}


BITS = {"float32": (None, None), "4w4a": (4, 4), "2w4a": (2, 4)}
#: the recipe's switchable parts, each taken out of the defaults (soft targets at T=4 and the warm-up
#: cosine learning rate are on by default), at 4w4a
ABLATION = {"without soft targets": dict(temperature=None), "without cosine lr": dict(cosine_lr=False),
            "without either (the recipe before issue 13)": dict(temperature=None, cosine_lr=False)}
CASES = {f"defaults {family} {bits}": (family, bits, {}) for family in ("ConvNeXt", "MobileNetV3") for bits in BITS}
CASES |= {f"ablation ConvNeXt 4w4a {part}": ("ConvNeXt", "4w4a", options) for part, options in ABLATION.items()}
#: Arch-Net's progressive schedule beside the default parallel one: the held-out agreement over time of
#: both (the rows' `history`) gives the time each needs to reach the same agreement
CASES |= {"schedule progressive ConvNeXt 4w4a": ("ConvNeXt", "4w4a", dict(schedule="progressive"))}
#: label-free augmentation in fine-tuning (off by default), on both families
CASES |= {f"ablation {family} 4w4a with augmentation": (family, "4w4a", dict(augment=True))
          for family in ("ConvNeXt", "MobileNetV3")}
#: students trained quantized already in the blockwise phase (off by default), on both families
CASES |= {f"ablation {family} {bits} with blockwise quantization": (family, bits, dict(blockwise_quant=True))
          for family in ("ConvNeXt", "MobileNetV3") for bits in ("4w4a", "2w4a")}


@pytest.mark.parametrize("case", list(CASES))
def test_distil_with_default_flags(benchmark, mnist, family_teachers, case):
    images, labels = mnist
    family, bits, options = CASES[case]
    model, teacher_top1 = family_teachers[family]
    wbits, abits = BITS[bits]
    example = (images[:1],)
    benchmark.group = "distil two teacher families to archnet with default flags"
    start = time.perf_counter()
    lowered = benchmark.pedantic(lambda: lower(capture(model, example), example, target="archnet",
                                               calib=images[TRAIN], wbits=wbits, abits=abits, **options),
                                 rounds=1, iterations=1)
    record_row(case, lowered, model, teacher_top1, images, labels, time.perf_counter() - start)
    assert lowered.legal
