"""Arch-Distillation, parallel blockwise schedule: a student block of legal ops for every region,
trained without labels on the teacher's own region inputs and outputs, then stitched in and
fine-tuned end to end.

Student policy (per region, one output): NCHW -> NCHW regions get `depth` 3x3 conv + batch norm +
ReLU layers of `width` channels and a last 3x3 conv + batch norm, with one stride-2 conv per halving
of the map. width = max(input, output channels), capped by the target's in_channels_max. depth =
the halvings, plus one more layer when the region's teacher MACs exceed one such layer's, at most
3. When an input has the output's shape (a skip path), the student ends with a concat-and-conv
merge of that input and the body, initialised to input + body. 2-D and 3-D regions (vectors,
tokens) get Linear-ReLU-Linear on the last dim.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite.capture import annotate_shapes
from fxrewrite.errors import FxrewriteError
from fxrewrite.regions import REGION_PREFIX, carve, find_regions
from fxrewrite.target import Target

MAX_DEPTH = 3


class DistillError(FxrewriteError):
    """A region no student can stand in for, or data that does not fit the model."""


def _conv_bn(in_ch: int, out_ch: int, stride: int, relu: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1), nn.BatchNorm2d(out_ch)]
    return layers + [nn.ReLU()] if relu else layers


class ConvStudent(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, width: int, depth: int, halvings: int, skip_input: int | None):
        super().__init__()
        layers, channels = [], in_ch
        for index in range(depth):
            layers += _conv_bn(channels, width, 2 if index < halvings else 1, relu=True)
            channels = width
        self.body = nn.Sequential(*layers, *_conv_bn(channels, out_ch, 1, relu=False))
        self.skip_input = skip_input
        if skip_input is not None:
            self.merge = nn.Conv2d(2 * out_ch, out_ch, 3, padding=1)
            with torch.no_grad():
                self.merge.weight.zero_()
                self.merge.bias.zero_()
                eye = torch.eye(out_ch)
                self.merge.weight[:, :out_ch, 1, 1] = eye
                self.merge.weight[:, out_ch:, 1, 1] = eye

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        body = self.body(torch.cat(inputs, 1) if len(inputs) > 1 else inputs[0])
        if self.skip_input is None:
            return body
        return self.merge(torch.cat([inputs[self.skip_input], body], 1))


class MlpStudent(nn.Module):
    def __init__(self, in_features: int, out_features: int, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def synthesize(name: str, inputs: Sequence[torch.Tensor], output: torch.Tensor, teacher_macs: int,
               target: Target) -> nn.Module:
    """A student for one region from its recorded input and output tensors (see the module policy)."""
    shapes = [tuple(t.shape) for t in inputs]
    out_shape = tuple(output.shape)
    limit = target.limit("conv2d", "in_channels_max") or math.inf
    if len(out_shape) == 4 and all(len(s) == 4 and s[2:] == shapes[0][2:] for s in shapes):
        halvings = next((j for j in range(4) if tuple(math.ceil(d / 2 ** j) for d in shapes[0][2:]) == out_shape[2:]),
                        None)
        if halvings is None:
            raise DistillError(f"{name}: no conv student maps {shapes[0][2:]} to {out_shape[2:]} (only halvings)")
        in_ch = sum(s[1] for s in shapes)
        width = int(min(max(in_ch, out_shape[1]), limit))
        one_layer = 9 * width * width * math.prod(out_shape[2:])
        depth = min(MAX_DEPTH, max(halvings, 1) + (1 if teacher_macs > one_layer else 0))
        skip = next((i for i, s in enumerate(shapes) if s == out_shape), None)
        return ConvStudent(in_ch, out_shape[1], width, depth, halvings, skip)
    if len(inputs) == 1 and len(out_shape) in (2, 3) and shapes[0][:-1] == out_shape[:-1]:
        return MlpStudent(shapes[0][-1], out_shape[-1], max(shapes[0][-1], out_shape[-1]))
    raise DistillError(f"{name}: no student for inputs {shapes} -> output {out_shape}; students cover NCHW maps "
                       "(same or halved size) and vectors or tokens with the same leading dims")


class _Recorder(fx.Interpreter):
    """Runs the carved teacher and keeps every region's inputs and output."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.records: dict[str, tuple[tuple[torch.Tensor, ...], torch.Tensor]] = {}

    def call_module(self, target, args, kwargs):
        result = super().call_module(target, args, kwargs)
        if target.startswith(REGION_PREFIX):
            if not isinstance(result, torch.Tensor):
                raise DistillError(f"{target} has several outputs; students with several outputs are not built yet")
            self.records[target] = (tuple(a.detach() for a in args), result.detach())
        return result


@dataclass
class Distilled:
    gm: fx.GraphModule
    report: dict = field(default_factory=dict)


def _normalized_mse(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(got, want) / want.var().clamp_min(1e-8)


def distill(gm: fx.GraphModule, target: Target, batches: Sequence[torch.Tensor], held_out: Sequence[torch.Tensor],
            *, epochs: int = 20, finetune_epochs: int = 10, lr: float = 3e-3, seed: int = 0) -> Distilled:
    """Replace every region of `gm` by a trained student; returns the stitched, re-captured graph."""
    torch.manual_seed(seed)
    teacher = carve(copy.deepcopy(gm), target)
    macs = {f"{REGION_PREFIX}{r.index}": r.macs for r in find_regions(gm, target)}
    cache = []
    with torch.no_grad():
        for batch in batches:
            recorder = _Recorder(teacher)
            final = recorder.run(batch)
            cache.append((batch, final, recorder.records))
    students = nn.ModuleDict({name: synthesize(name, args, out, macs[name], target)
                              for name, (args, out) in cache[0][2].items()})
    optimizer = torch.optim.Adam(students.parameters(), lr=lr)
    students.train()
    for _ in range(epochs):  # (a) parallel blockwise: every student on the teacher's own region inputs
        for _, _, records in cache:
            optimizer.zero_grad()
            loss = sum(_normalized_mse(students[n](*args), out) for n, (args, out) in records.items())
            loss.backward()
            optimizer.step()
    stitched = copy.deepcopy(teacher)
    for name, student in students.items():
        setattr(stitched, name, student)
    stitched.recompile()
    optimizer = torch.optim.Adam(students.parameters(), lr=lr / 3)
    for _ in range(finetune_epochs):  # (b) stitched, end to end: per-block MSE + cosine on the output
        for batch, final, records in cache:
            outputs: dict[str, torch.Tensor] = {}
            hooks = [getattr(stitched, n).register_forward_hook(
                lambda m, a, o, n=n: outputs.__setitem__(n, o)) for n in students]
            optimizer.zero_grad()
            got = stitched(batch)
            for hook in hooks:
                hook.remove()
            cosine = 1 - F.cosine_similarity(got.flatten(1), final.flatten(1)).mean()
            loss = cosine + _normalized_mse(got, final) + 0.5 * sum(
                _normalized_mse(outputs[n], records[n][1]) for n in students)
            loss.backward()
            optimizer.step()
    stitched.eval()
    # a fresh trace inlines the students, so the result is made of vocabulary ops only
    flat = annotate_shapes(fx.GraphModule(stitched, fx.Tracer().trace(stitched)), (batches[0],))
    return Distilled(flat, _agreement(flat, gm, held_out) | {"regions": len(students)})


def _agreement(student: fx.GraphModule, teacher: fx.GraphModule, held_out: Sequence[torch.Tensor]) -> dict:
    with torch.no_grad():
        pairs = [(student(x), teacher(x)) for x in held_out]
    got, want = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    report = {"held_out_mse": F.mse_loss(got, want).item(),
              "held_out_cosine": F.cosine_similarity(got.flatten(1), want.flatten(1)).mean().item()}
    if got.dim() == 2:
        report["top1_agreement"] = (got.argmax(1) == want.argmax(1)).float().mean().item()
    return report
