"""Distillation across architecture families, the way a new user runs it (issue 24): torchvision
teachers trained on MNIST at 3x32x32, exported at batch 1 to `.pt2`, lowered by the CLI with default
flags (`fxrewrite lower TEACHER.pt2 --target T --calib images.npy --wbits W --abits A`), and judged
on a labelled test split fxrewrite never sees.

Run: .venv/bin/python -m pytest benchmarks/test_bench_families_mnist.py -q -s [-k resnet18]
Data: ../shared/data/mnist (skipped without it): the first 8,000 images train the teachers (with
labels) and, without labels, are the `.npy` given to --calib; the last 2,000 test. Digits are resized
to 32x32 and repeated over three channels. Trained teachers, their `.pt2` and the `.npy` are cached
in $FXREWRITE_BENCH_CACHE (default ~/.cache/fxrewrite-bench), outside the repository, so a rerun
only distils. Each row is printed and appended to benchmarks/families-results.jsonl with the commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.convnext import CNBlockConfig

from test_bench_distill_mnist import TEST, TRAIN, mnist  # noqa: F401

CACHE = Path(os.environ.get("FXREWRITE_BENCH_CACHE", Path.home() / ".cache" / "fxrewrite-bench"))
RESULTS = Path(__file__).with_name("families-results.jsonl")
REPOSITORY = Path(__file__).resolve().parents[1]
TEACHER_EPOCHS = 4

FAMILIES = {
    "resnet18": partial(torchvision.models.resnet18, num_classes=10),
    "mobilenet_v2": partial(torchvision.models.mobilenet_v2, num_classes=10),
    "mobilenet_v3_small": partial(torchvision.models.mobilenet_v3_small, num_classes=10),
    "efficientnet_b0": partial(torchvision.models.efficientnet_b0, num_classes=10),
    # RANs' baseline, built offline without weights (timm: the dev extra)
    "efficientnet_lite0": lambda: __import__("timm").create_model("efficientnet_lite0", num_classes=10),
    # the ConvNeXt block, two stages
    "convnext": partial(torchvision.models.ConvNeXt, [CNBlockConfig(32, 64, 2), CNBlockConfig(64, None, 2)],
                        num_classes=10),
    "vit": partial(torchvision.models.VisionTransformer, image_size=32, patch_size=4, num_layers=4, num_heads=4,
                   hidden_dim=96, mlp_dim=192, num_classes=10),
    "swin": partial(torchvision.models.SwinTransformer, patch_size=[2, 2], embed_dim=48, depths=[2, 2],
                    num_heads=[2, 4], window_size=[4, 4], num_classes=10),
}
ROWS = ([(family, "archnet", 4, 4) for family in FAMILIES]
        + [(family, "archnet-transformer", 4, 4) for family in ("vit", "swin")]
        + [(family, "archnet", 2, 4) for family in ("resnet18", "mobilenet_v2")])


def _images(raw: torch.Tensor) -> torch.Tensor:
    """MNIST digits (N, 1, 28, 28) as the 3x32x32 inputs the teachers take."""
    return F.interpolate(raw, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1).contiguous()


def _teacher(family: str, images: torch.Tensor, labels: torch.Tensor,
             cache: str | None = None) -> tuple[Path, torch.nn.Module, float]:
    """The family's trained teacher (cached in CACHE / `cache`, default the family's name): its batch-1
    .pt2, the module and its test top-1."""
    folder = CACHE / (cache or family)
    folder.mkdir(parents=True, exist_ok=True)
    model = FAMILIES[family]()
    weights, program = folder / "teacher.pth", folder / "teacher.pt2"
    if weights.is_file():
        model.load_state_dict(torch.load(weights, weights_only=True))
    else:
        torch.manual_seed(0)
        optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
        steps = TEACHER_EPOCHS * -(-8000 // 64)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
        model.train()
        for _ in range(TEACHER_EPOCHS):
            for indices in torch.randperm(8000).split(64):
                optimizer.zero_grad()
                F.cross_entropy(model(images[indices]), labels[indices]).backward()
                optimizer.step()
                schedule.step()
        _recalibrate_batch_norms(model, images[TRAIN])
        torch.save(model.state_dict(), weights)
    model.eval()
    if not program.is_file():
        torch.export.save(torch.export.export(model, (images[:1],)), program)
    with torch.no_grad():
        top1 = (model(images[TEST]).argmax(1) == labels[TEST]).float().mean().item()
    return program, model, top1


def _recalibrate_batch_norms(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Batch-norm statistics as the mean over the training images under the final weights: MobileNetV3's
    norms average with momentum 0.01, too slowly for 500 steps (its test top-1 was 21.75% in eval mode
    and is 97.35% so recalibrated). Teachers cached before this step (all but mobilenet_v3_small) keep
    the running averages they were trained with."""
    for norm in model.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average
    with torch.no_grad():
        for batch in images.split(200):
            model(batch)


def _run(student: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The student's outputs, in batches of 100 where its program takes them, else one by one."""
    try:
        return torch.cat([student(batch) for batch in inputs.split(100)])
    except Exception:  # noqa: BLE001 - a program exported at batch 1 refuses other batches
        return torch.cat([student(batch) for batch in inputs.split(1)])


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPOSITORY, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.parametrize("family, target, wbits, abits", ROWS, ids=[f"{f}-{t}-{w}w{a}a" for f, t, w, a in ROWS])
def test_family_distils_with_default_flags(benchmark, mnist, tmp_path, family, target, wbits, abits):
    raw, labels = mnist
    images = _images(raw)
    program, model, teacher_top1 = _teacher(family, images, labels)
    calib = CACHE / "train-images.npy"
    if not calib.is_file():
        np.save(calib, images[TRAIN].numpy())
    out, report_path = tmp_path / "student.pt2", tmp_path / "report.json"
    command = [str(Path(sys.executable).with_name("fxrewrite")), "lower", str(program), "--target", target,
               "--calib", str(calib), "--wbits", str(wbits), "--abits", str(abits), "-o", str(out),
               "--report", str(report_path)]
    benchmark.group = "torchvision families on MNIST, default flags"
    start = time.perf_counter()
    run = benchmark.pedantic(lambda: subprocess.run(command, capture_output=True, text=True), rounds=1, iterations=1)
    seconds = time.perf_counter() - start
    print(run.stdout[-3000:], run.stderr[-3000:])
    row = {"family": family, "target": target, "bits": f"{wbits}w{abits}a", "commit": _commit(),
           "teacher_top1": teacher_top1, "exit": run.returncode, "seconds": round(seconds, 1)}
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        row |= {"teacher_macs": report["before"]["macs"], "student_macs": report["after"]["macs"],
                "teacher_cycles": report["before"]["cycles"], "student_cycles": report["after"]["cycles"],
                "regions": len(report["regions"]),
                "largest_region": max((len(r["nodes"]) for r in report["regions"]), default=0),
                "legal": not report["still_illegal"]}
    if out.is_file():
        student = torch.export.load(out).module()
        with torch.no_grad():
            got = _run(student, images[TEST])
            want = model(images[TEST])
        row |= {"student_top1": (got.argmax(1) == labels[TEST]).float().mean().item(),
                "agreement": (got.argmax(1) == want.argmax(1)).float().mean().item()}
    print(json.dumps(row))
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    assert run.returncode == 0 and row.get("legal")
