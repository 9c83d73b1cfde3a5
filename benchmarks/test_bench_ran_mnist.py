"""RANs' headline with fxrewrite (issues 26, 37): torchvision's MobileNetV2 and the other families of
issue 37 (EfficientNet-Lite-B0, EfficientNet-B0, MobileNetV3-Small, ResNet-18, a two-stage ConvNeXt)
trained on MNIST (the first 8,000 test digits at 3x32x32; the families benchmark's cached
teachers), restructured and distilled
by `fxrewrite lower TEACHER.pt2 --target T --calib <the 8,000 images, no labels>` with default flags,
judged on the last 2,000 digits fxrewrite never sees: top-1 of teacher and result, their agreement,
and on the Ethos-U targets Vela's frames per second for both as ExecuTorch compiles them (`--vela`)
at 32x32 and, the network being resolution-free, at 224x224; on cpu-reference frames per second
measured on this CPU by torch, as its planner measures blocks. Elsewhere the target's estimate. The rows
with a deployment size cost the restructuring at 1x3x224x224 (`--deploy-shape`), where early
high-resolution blocks weigh more, while agreement is judged on the 32x32 calibration digits.

Run: .venv/bin/python -m pytest benchmarks/test_bench_ran_mnist.py -q -s (needs ../shared/data/mnist;
the Vela rows need the ethos-u extra). Rows go to benchmarks/ran-results.jsonl with the commit.
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

from test_bench_distill_mnist import TEST, TRAIN, mnist  # noqa: F401
from test_bench_families_mnist import CACHE, _commit, _images, _teacher

RESULTS = Path(__file__).with_name("ran-results.jsonl")
#: (family, target, the input size restructuring is costed at: None for the trained 32x32, or --deploy-shape's)
RUNS = ([("mobilenet_v2", target, deploy) for target, deploy in (
            ("ethos-u55-128", None), ("ethos-u55-128", 224), ("ethos-u65-256", None), ("ethos-u65-256", 224),
            ("ethos-u85-256", None), ("npu-generic", None), ("archnet", None))]
        + [(family, target, 224) for family in ("efficientnet_lite0", "efficientnet_b0", "mobilenet_v3_small",
                                                 "resnet18")
           for target in ("ethos-u55-128", "ethos-u65-256")]
        # ConvNeXt the RAN-i way on this CPU, costed by latency measured here
        + [("convnext", "cpu-reference", 224)])


def _any_resolution(program: Path) -> torch.nn.Module:
    """The written program's module without the check that inputs keep the size it was exported at:
    its convs and means take any resolution."""
    module = torch.export.load(program).module(check_guards=False)
    for key, hook in list(module._forward_pre_hooks.items()):
        if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook":
            del module._forward_pre_hooks[key]
    return module


def _cpu_fps_at(module: torch.nn.Module, size: int) -> float:
    from fxrewrite.ship.host_latency import median_seconds

    return 1 / median_seconds(module, torch.randn(1, 3, size, size))


def _fps_at(module: torch.nn.Module, size: int, accelerator: str) -> float:
    from fxrewrite.ship.ethos_u import compile_for_ethos_u

    return 1e3 / compile_for_ethos_u(module, (torch.randn(1, 3, size, size),), accelerator).inference_ms


@pytest.mark.parametrize("family, target, deploy", RUNS, ids=[f"{f}-{t}-{d or 32}" for f, t, d in RUNS])
def test_restructured_family_against_its_teacher(benchmark, mnist, tmp_path, family, target, deploy):
    ethos = target.startswith("ethos")
    if ethos:
        pytest.importorskip("executorch")
    raw, labels = mnist
    images = _images(raw)
    program, teacher, teacher_top1 = _teacher(family, images, labels)
    calib = CACHE / "train-images.npy"
    if not calib.is_file():
        np.save(calib, images[TRAIN].numpy())
    out, report_path = tmp_path / "result.pt2", tmp_path / "report.json"
    command = [sys.executable, "-m", "fxrewrite", "lower", str(program), "--target", target, "--calib", str(calib),
               "-o", str(out), "--report", str(report_path)] + (["--vela"] if ethos else []) + (
                   ["--deploy-shape", f"1,3,{deploy},{deploy}"] if deploy else [])
    benchmark.group = "RAN-e's and RAN-i's restructurings (MNIST), default flags"
    start = time.perf_counter()
    run = benchmark.pedantic(lambda: subprocess.run(command, capture_output=True, text=True), rounds=1, iterations=1)
    row = {"family": family, "target": target, "deploy_shape": deploy, "commit": _commit(), "exit": run.returncode,
           "seconds": round(time.perf_counter() - start), "teacher_top1": round(teacher_top1, 4)}
    print(run.stdout[-4000:], run.stderr[-2000:])
    if report_path.is_file() and out.is_file():
        report = json.loads(report_path.read_text())
        result = _any_resolution(out)
        with torch.no_grad():
            got = torch.cat([result(batch) for batch in images[TEST].split(1)])
            want = teacher(images[TEST])
        blocks = report.get("restructuring", {}).get("blocks", [])
        row |= {"top1": round((got.argmax(1) == labels[TEST]).float().mean().item(), 4),
                "agreement": round((got.argmax(1) == want.argmax(1)).float().mean().item(), 4),
                "replaced": {rewrite: sum(b["chosen"] and b["rewrite"] == rewrite for b in blocks)
                             for rewrite in sorted({b["rewrite"] for b in blocks})},
                "blocks": len({b["block"] for b in blocks}),
                "estimate": [report["before"]["cycles"], report["after"]["cycles"]],
                "nn_mass": [report["before"]["nn_mass"], report["after"]["nn_mass"]],
                "macs": [report["before"]["macs"], report["after"]["macs"]],
                # why the replacements not taken were kept out, by the first three words of the planner's reason
                "kept_out": {why: sum(" ".join(b["why"].split()[:3]) == why for b in blocks)
                             for why in sorted({" ".join(b["why"].split()[:3]) for b in blocks if b["why"]})},
                "still_illegal": len(report["still_illegal"])}
        if target == "cpu-reference":  # frames per second on this CPU; both as exported programs, run the same way
            exported = _any_resolution(program)
            row["cpu_fps_32"] = [round(_cpu_fps_at(exported, 32), 1), round(_cpu_fps_at(result, 32), 1)]
            row["cpu_fps_224"] = [round(_cpu_fps_at(exported, 224), 2), round(_cpu_fps_at(result, 224), 2)]
        if ethos:
            vela = report["vela"]
            row["fps_32"] = [round(1e3 / vela["teacher"]["inference_ms"], 1),
                             round(1e3 / vela["lowered"]["inference_ms"], 1)]
            accelerator = vela["teacher"]["accelerator"]
            try:
                row["fps_224"] = [round(_fps_at(teacher, 224, accelerator), 2), round(_fps_at(result, 224, accelerator), 2)]
            except Exception as exc:  # noqa: BLE001 - recorded in the row, whatever it is
                row["fps_224"] = f"not measured: {type(exc).__name__}: {str(exc)[:200]}"
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    assert run.returncode == 0, run.stderr[-2000:]
