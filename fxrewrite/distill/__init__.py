"""Arch-Distillation: a student block of legal ops for every region, trained without labels.

1. The teacher is carved into regions (fxrewrite.regions) and run once per batch; every region's
   inputs and outputs are cached.
2. Blockwise phase, one of two schedules:
   - parallel: every student at once, on the teacher's own region inputs, against the teacher's
     region outputs;
   - progressive (Arch-Net): period k swaps the first k+1 regions (graph order) for their
     students and matches their outputs with weights 0.8^(k-i), the newest at 1.
   The loss is MSE under teacher attention, through a residual feature adapter (helpers.py).
3. The students are stitched in, batch norms folded, and (with a quantization scheme) every conv
   and linear layer gets LSQ or DoReFa fake quantization, calibrated on the data. The whole network
   is then fine-tuned end to end on a cosine loss and normalized MSE on the final output, plus
   0.5 x the per-block MSE.
4. The result is traced flat (quantization in its graph form, fxrewrite.quant), so it is made of
   vocabulary ops only; the helpers are gone.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite.capture import annotate_shapes
from fxrewrite.cost import graph_macs, parameter_count
from fxrewrite.distill.helpers import FeatureAdapter, block_loss, normalized_mse
from fxrewrite.distill.students import DistillError, seed_from_teacher, synthesize
from fxrewrite.distill.training import Checkpoints, ProgressCallback, run_epochs
from fxrewrite.quant import QuantScheme, calibrate, fold_batch_norms, materialize, quantize_modules, quantizers
from fxrewrite.regions import REGION_PREFIX, carve, find_regions
from fxrewrite.target import Target

__all__ = ["DistillConfig", "DistillError", "Distilled", "distill", "post_training_quantize"]

Schedule = Literal["parallel", "progressive"]
SCHEDULES: tuple[str, ...] = ("parallel", "progressive")
PROGRESSIVE_DECAY = 0.8
BLOCK_WEIGHT = 0.5
CALIBRATION_BATCHES = 8


@dataclass
class DistillConfig:
    epochs: int = 20
    finetune_epochs: int = 10
    lr: float = 3e-3
    seed: int = 0
    schedule: Schedule = "parallel"
    quant: QuantScheme | None = None
    attention: bool = True
    adaptation: bool = True
    device: str = "cpu"
    checkpoint_dir: Path | None = None
    resume: bool = False
    progress: ProgressCallback | None = None


@dataclass
class Distilled:
    gm: fx.GraphModule
    report: dict = field(default_factory=dict)


Records = dict[str, tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]]


def _as_tuple(value: object) -> tuple[torch.Tensor, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


class _Recorder(fx.Interpreter):
    """Runs the carved teacher and keeps every region's inputs and outputs."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.records: Records = {}

    def call_module(self, target, args, kwargs):
        result = super().call_module(target, args, kwargs)
        if target.startswith(REGION_PREFIX):
            self.records[target] = (tuple(a.detach() for a in args), tuple(r.detach() for r in _as_tuple(result)))
        return result


def _record(teacher: fx.GraphModule, batches: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, Records]]:
    cache = []
    with torch.no_grad():
        for batch in batches:
            recorder = _Recorder(teacher)
            final = recorder.run(batch)
            cache.append((batch, final, recorder.records))
    return cache


class _Outputs:
    """Forward hooks that collect what the named submodules return."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self.values: dict[str, tuple[torch.Tensor, ...]] = {}
        self.hooks = [model.get_submodule(n).register_forward_hook(
            lambda m, a, out, n=n: self.values.__setitem__(n, _as_tuple(out))) for n in names]

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


def _fingerprint(gm: fx.GraphModule, target: Target, batches: Sequence[torch.Tensor], config: DistillConfig) -> str:
    digest = hashlib.sha256()
    digest.update(gm.code.encode())
    digest.update(target.name.encode())
    for tensor in list(gm.state_dict().values()) + list(batches):
        digest.update(repr((tuple(tensor.shape), float(tensor.double().sum()))).encode())
    options = (config.epochs, config.finetune_epochs, config.lr, config.seed, config.schedule, config.quant,
               config.attention, config.adaptation)
    digest.update(repr(options).encode())
    return digest.hexdigest()


def _region_order(teacher: fx.GraphModule) -> list[str]:
    return [str(n.target) for n in teacher.graph.nodes if n.op == "call_module"
            and str(n.target).startswith(REGION_PREFIX)]


def _blockwise_loss(students: nn.ModuleDict, adapters: nn.ModuleDict, name: str,
                    outputs: Sequence[torch.Tensor], wanted: Sequence[torch.Tensor], attention: bool) -> torch.Tensor:
    return sum(block_loss(got, want, adapters[f"{name}_{i}"] if f"{name}_{i}" in adapters else None, attention)
               for i, (got, want) in enumerate(zip(outputs, wanted)))


def _parallel(students, adapters, cache, config, checkpoints) -> None:
    trained = nn.ModuleDict({"students": students, "adapters": adapters})
    optimizer = torch.optim.Adam(trained.parameters(), lr=config.lr)

    def epoch(_: int) -> float:
        total = 0.0
        for _, _, records in cache:
            optimizer.zero_grad()
            loss = sum(_blockwise_loss(students, adapters, n, _as_tuple(students[n](*args)), outs, config.attention)
                       for n, (args, outs) in records.items())
            loss.backward()
            optimizer.step()
            total += loss.item()
        return total / len(cache)

    run_epochs("blockwise-parallel", config.epochs, trained, optimizer, epoch, checkpoints, config.progress)


def _progressive(teacher, order, students, adapters, cache, config, checkpoints) -> None:
    trained = nn.ModuleDict({"students": students, "adapters": adapters})
    optimizer = torch.optim.Adam(trained.parameters(), lr=config.lr)
    model = copy.deepcopy(teacher).requires_grad_(False)
    teacher_regions = {n: getattr(model, n) for n in order}
    per_period = max(1, -(-config.epochs // len(order)))

    def epoch(index: int) -> float:
        period = min(index // per_period, len(order) - 1)
        for position, name in enumerate(order):
            setattr(model, name, students[name] if position <= period else teacher_regions[name])
        matched = order[:period + 1]
        total = 0.0
        for batch, _, records in cache:
            hooks = _Outputs(model, matched)
            optimizer.zero_grad()
            model(batch)
            hooks.remove()
            loss = sum(PROGRESSIVE_DECAY ** (period - i) *
                       _blockwise_loss(students, adapters, n, hooks.values[n], records[n][1], config.attention)
                       for i, n in enumerate(matched))
            loss.backward()
            optimizer.step()
            total += loss.item()
        return total / len(cache)

    run_epochs("blockwise-progressive", per_period * len(order), trained, optimizer, epoch, checkpoints,
               config.progress)


def _finetune(stitched, order, cache, config, checkpoints) -> None:
    optimizer = torch.optim.Adam(stitched.parameters(), lr=config.lr / 3)

    def epoch(_: int) -> float:
        total = 0.0
        for batch, final, records in cache:
            hooks = _Outputs(stitched, order)
            optimizer.zero_grad()
            got = stitched(batch)
            hooks.remove()
            cosine = 1 - F.cosine_similarity(got.flatten(1), final.flatten(1)).mean()
            blocks = sum(normalized_mse(g, w) for n in order for g, w in zip(hooks.values[n], records[n][1]))
            loss = cosine + normalized_mse(got, final) + BLOCK_WEIGHT * blocks
            loss.backward()
            optimizer.step()
            total += loss.item()
        return total / len(cache)

    run_epochs("finetune", config.finetune_epochs, stitched, optimizer, epoch, checkpoints, config.progress)


def distill(gm: fx.GraphModule, target: Target, batches: Sequence[torch.Tensor], held_out: Sequence[torch.Tensor],
            config: DistillConfig | None = None) -> Distilled:
    """Replace every region of `gm` by a trained student (see the module docstring)."""
    config = config or DistillConfig()
    if config.schedule not in SCHEDULES:
        raise DistillError(f"schedule {config.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    times: dict[str, float] = {}
    start = time.perf_counter()
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    checkpoints = Checkpoints(config.checkpoint_dir, _fingerprint(gm, target, batches, config), config.resume)
    teacher = carve(copy.deepcopy(gm), target).to(device)
    order = _region_order(teacher)
    if not order:
        raise DistillError("no region to distil: every node is legal (use post_training_quantize for formats)")
    macs = {f"{REGION_PREFIX}{r.index}": r.macs for r in find_regions(gm, target)}
    cache = _record(teacher, [b.to(device) for b in batches])
    students = nn.ModuleDict({n: synthesize(n, *cache[0][2][n], macs[n], target) for n in order}).to(device)
    seeded = {n: seed_from_teacher(students[n], getattr(teacher, n)) for n in order}
    adapters = nn.ModuleDict({f"{n}_{i}": FeatureAdapter(out) for n in order
                              for i, out in enumerate(cache[0][2][n][1])} if config.adaptation else {}).to(device)
    times["teacher"] = time.perf_counter() - start

    start = time.perf_counter()
    students.train()
    if not checkpoints.reached("finetune"):
        if config.schedule == "parallel":
            _parallel(students, adapters, cache, config, checkpoints)
        else:
            _progressive(teacher, order, students, adapters, cache, config, checkpoints)
    times["blockwise"] = time.perf_counter() - start

    start = time.perf_counter()
    stitched = copy.deepcopy(teacher)
    for name in order:
        setattr(stitched, name, students[name])
    stitched = fold_batch_norms(stitched.eval())
    if config.quant is not None:
        quantize_modules(stitched, config.quant)
        stitched.to(device)
        calibrate(stitched, lambda: [stitched(b) for b, _, _ in cache[:CALIBRATION_BATCHES]])
    for quant in quantizers(stitched):  # the rest stays in eval mode: frozen statistics, no dropout
        quant.train()
    _finetune(stitched, order, cache, config, checkpoints)
    stitched.eval()
    times["finetune"] = time.perf_counter() - start

    start = time.perf_counter()
    regions = _region_errors(stitched, teacher, order, held_out, device, seeded)
    stitched = stitched.cpu()
    flat = materialize(stitched) if config.quant is not None else fx.GraphModule(stitched, fx.Tracer().trace(stitched))
    flat = annotate_shapes(flat, (batches[0][:1].cpu(),))  # one sample: MACs per input
    report = {
        "schedule": config.schedule,
        "quantization": config.quant.describe() if config.quant else "float32",
        "regions": regions,
        **_agreement(flat, gm, held_out),
        **_size(gm, flat, batches[0][:1].cpu()),
    }
    times["report"] = time.perf_counter() - start
    report["seconds"] = {k: round(v, 3) for k, v in times.items()}
    return Distilled(flat, report)


def _region_errors(stitched: nn.Module, teacher: fx.GraphModule, order: Sequence[str],
                   held_out: Sequence[torch.Tensor], device: torch.device, seeded: dict[str, int]) -> list[dict]:
    """Per region, on the held-out split: the student's output in the stitched network vs the teacher's."""
    errors: dict[str, list[tuple[float, float]]] = {n: [] for n in order}
    with torch.no_grad():
        for batch in held_out:
            batch = batch.to(device)
            wanted = _record(teacher, [batch])[0][2]
            hooks = _Outputs(stitched, order)
            stitched(batch)
            hooks.remove()
            for name in order:
                for got, want in zip(hooks.values[name], wanted[name][1]):
                    errors[name].append((F.mse_loss(got, want).item(),
                                         F.cosine_similarity(got.flatten(1), want.flatten(1)).mean().item()))
    return [{"region": name, "student": type(getattr(stitched, name)).__name__,
             "seeded_layers": seeded[name],
             "student_params": sum(p.numel() for p in getattr(stitched, name).parameters()),
             "mse": sum(e[0] for e in errors[name]) / max(len(errors[name]), 1),
             "cosine": sum(e[1] for e in errors[name]) / max(len(errors[name]), 1)} for name in order]


def _size(teacher: fx.GraphModule, student: fx.GraphModule, sample: torch.Tensor) -> dict:
    """MACs per input and parameters, of the teacher graph and the student."""
    shaped = annotate_shapes(copy.deepcopy(teacher), (sample,))
    return {"before": {"macs": graph_macs(shaped), "params": parameter_count(teacher)},
            "after": {"macs": graph_macs(student), "params": parameter_count(student)}}


def _agreement(student: fx.GraphModule, teacher: fx.GraphModule, held_out: Sequence[torch.Tensor]) -> dict:
    with torch.no_grad():
        pairs = [(student(x), teacher(x)) for x in held_out]
    got, want = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    report = {"held_out_samples": len(got), "held_out_mse": F.mse_loss(got, want).item(),
              "held_out_cosine": F.cosine_similarity(got.flatten(1), want.flatten(1)).mean().item()}
    if got.dim() == 2:
        report["top1_agreement"] = (got.argmax(1) == want.argmax(1)).float().mean().item()
    return report


def post_training_quantize(gm: fx.GraphModule, scheme: QuantScheme, batches: Sequence[torch.Tensor],
                           held_out: Sequence[torch.Tensor]) -> Distilled:
    """Quantize a graph that needs no student: batch norms folded, scales calibrated, no training."""
    start = time.perf_counter()
    model = fold_batch_norms(copy.deepcopy(gm).eval())
    quantize_modules(model, scheme)
    calibrate(model, lambda: [model(b) for b in batches[:CALIBRATION_BATCHES]])
    flat = annotate_shapes(materialize(model), (batches[0][:1],))
    report = {"schedule": "post-training calibration", "quantization": scheme.describe(), "regions": [],
              **_agreement(flat, gm, held_out), **_size(gm, flat, batches[0][:1]),
              "seconds": {"calibrate": round(time.perf_counter() - start, 3)}}
    return Distilled(flat, report)
