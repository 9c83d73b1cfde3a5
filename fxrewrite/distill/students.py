"""Student blocks: legal ops only, the region's input and output shapes, started from the teacher.

Policy (per region output; the size within the budget is chosen by fxrewrite.distill.sizing):
- NCHW -> NCHW (same or halved map): `depth` layers of 3x3 conv + batch norm + ReLU of `width`
  channels and a last 3x3 conv; one stride-2 conv per halving of the map. The widest width is
  max(input, output channels), capped by the target's in_channels_max; depth runs from the
  halvings plus one (at most MAX_DEPTH) down to the halvings (at least 1). Where an input has the
  output's shape and already points its way (cosine above SKIP_COSINE on the recorded batch: a skip
  path), the last conv reads that input beside the body and starts as input + body (a residual
  block whose add the target cannot run); otherwise a batch norm follows it.
- 2-D and 3-D tensors (vectors, tokens) with the input's leading dims: Linear-ReLU-Linear on the
  last dim, hidden width at most max(in, out). An NCHW map to a vector (a pooling head): the same
  on the flattened map, hidden width at most max(channels, out).
- A region with several outputs gets one such student per output, all reading every input, each
  with an equal share of the budget.

Teacher weights: a student layer starts from a teacher layer of the region where that layer has a
legal counterpart of the same shape and stride: a 1x1 conv or linear goes in the centre of a 3x3,
a depthwise conv becomes the diagonal of a dense one, a 3x3 conv is copied. Larger kernels have
no counterpart (a crop is not the same maths) and start from random weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite.cost import Cost
from fxrewrite.distill.sizing import DEFAULT_STUDENT_BUDGET, Sized, first_within_budget, widths
from fxrewrite.errors import DistillError
from fxrewrite.ir import op_view
from fxrewrite.rewrite import Decline
from fxrewrite.rewrite.building import block_diagonal, conv_weights
from fxrewrite.target import Target

MAX_DEPTH = 3
#: a skip path is taken where an input of the output's shape already points the output's way
SKIP_COSINE = 0.5


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
        self.body = nn.Sequential(*layers)
        self.skip_input = skip_input
        if skip_input is None:
            self.last = nn.Sequential(*_conv_bn(width, out_ch, 1, relu=False))
            return
        # the last conv reads [skip input | body] and starts as skip + (a fresh conv of the body)
        self.last = nn.Conv2d(out_ch + width, out_ch, 3, padding=1)
        with torch.no_grad():
            self.last.weight[:, :out_ch].zero_()
            self.last.weight[:, :out_ch, 1, 1] = torch.eye(out_ch)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        body = self.body(torch.cat(inputs, 1) if len(inputs) > 1 else inputs[0])
        if self.skip_input is None:
            return self.last(body)
        return self.last(torch.cat([inputs[self.skip_input], body], 1))


class MlpStudent(nn.Module):
    def __init__(self, in_features: int, out_features: int, width: int, flatten: bool = False):
        super().__init__()
        head = [nn.Flatten()] if flatten else []
        self.body = nn.Sequential(*head, nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, out_features))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.body(inputs[0])


class MultiOutputStudent(nn.Module):
    """One student per output of a region with several, each reading every input."""

    def __init__(self, students: Sequence[nn.Module]):
        super().__init__()
        self.heads = nn.ModuleList(students)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(head(*inputs) for head in self.heads)


class TensorInputs(nn.Module):
    """A student of the region's tensor inputs alone: sizes read at run time (the batch size a
    reshape needs) reach a region as inputs too, and the student does not need them."""

    def __init__(self, student: nn.Module, positions: Sequence[int]):
        super().__init__()
        self.student, self.positions = student, tuple(positions)

    def forward(self, *inputs: object) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.student(*(inputs[i] for i in self.positions))


def _one_student(name: str, inputs: Sequence[torch.Tensor], output: torch.Tensor, teacher: Cost, allowed: Cost,
                 target: Target) -> Sized:
    shapes = [tuple(t.shape) for t in inputs]
    out_shape = tuple(output.shape)
    limit = target.limit("conv2d", "in_channels_max") or math.inf
    if len(out_shape) == 4 and all(len(s) == 4 and s[2:] == shapes[0][2:] for s in shapes):
        halvings = next((j for j in range(4) if tuple(math.ceil(d / 2 ** j) for d in shapes[0][2:]) == out_shape[2:]),
                        None)
        if halvings is None:
            raise DistillError(f"{name}: no conv student maps {shapes[0][2:]} to {out_shape[2:]} (only halvings)")
        in_ch = sum(s[1] for s in shapes)
        skip = next((i for i, t in enumerate(inputs) if t.shape == output.shape
                     and F.cosine_similarity(t.flatten(), output.flatten(), dim=0) > SKIP_COSINE), None)
        shallowest = max(halvings, 1)
        depths = range(min(MAX_DEPTH, shallowest + 1), shallowest - 1, -1)
        candidates = [(f"{depth} x conv3x3 of {width}" + (" + skip merge" if skip is not None else ""),
                       lambda width=width, depth=depth: ConvStudent(in_ch, out_shape[1], width, depth, halvings, skip))
                      for width in widths(int(min(max(in_ch, out_shape[1]), limit))) for depth in depths]
    elif len(inputs) == 1 and len(out_shape) in (2, 3) and shapes[0][:-1] == out_shape[:-1]:
        candidates = [(f"MLP of {width}", lambda width=width: MlpStudent(shapes[0][-1], out_shape[-1], width))
                      for width in widths(max(shapes[0][-1], out_shape[-1]))]
    elif len(inputs) == 1 and len(shapes[0]) == 4 and len(out_shape) == 2 and shapes[0][0] == out_shape[0]:
        features = math.prod(shapes[0][1:])
        candidates = [(f"MLP of {width} on the flattened map",
                       lambda width=width: MlpStudent(features, out_shape[-1], width, flatten=True))
                      for width in widths(max(shapes[0][1], out_shape[-1]))]
    else:
        raise DistillError(f"{name}: no student for inputs {shapes} -> output {out_shape}; students cover NCHW maps "
                           "(same or halved size) and vectors or tokens with the same leading dims")
    return first_within_budget(candidates, inputs, teacher, allowed, target)


def synthesize(name: str, inputs: Sequence[object], outputs: Sequence[torch.Tensor], teacher: Cost,
               target: Target, allowed: Cost | None = None) -> Sized:
    """A student for one region from its recorded inputs and output tensors (see the module policy),
    costing at most `allowed` where any candidate does (default: the teacher region's cost `teacher`
    times DEFAULT_STUDENT_BUDGET)."""
    positions = [i for i, value in enumerate(inputs) if isinstance(value, torch.Tensor)]
    tensors = [inputs[i] for i in positions]
    allowed = allowed or teacher.scaled(DEFAULT_STUDENT_BUDGET)
    parts = len(outputs)
    sized = [_one_student(name, tensors, out, teacher.divided(parts), allowed.divided(parts), target)
             for out in outputs]
    student = sized[0].student if len(sized) == 1 else MultiOutputStudent([s.student for s in sized])
    if len(positions) != len(inputs):
        student = TensorInputs(student, positions)
    simple = len(sized) == 1 and len(positions) == len(inputs)  # only a plain student is regrown as it is
    return Sized(student, "; ".join(s.size for s in sized), sum(s.cost_ratio for s in sized) / len(sized),
                 sized[0].larger if simple else None)


def _dense_3x3(weight: torch.Tensor, groups: int) -> torch.Tensor | None:
    """The dense 3x3 kernel a 1x1 / 3x3, dense or depthwise kernel equals, or None."""
    out_ch, per_group, kh, kw = weight.shape
    if (kh, kw) not in ((1, 1), (3, 3)) or groups not in (1, out_ch) or (groups > 1 and per_group != 1):
        return None
    border = (3 - kh) // 2
    return F.pad(block_diagonal(weight, groups), (border, border, border, border))


def _teacher_kernels(region: fx.GraphModule) -> list[tuple[str, tuple[int, ...], torch.Tensor, torch.Tensor | None]]:
    """(role, stride, weight, bias) of each region layer that has a legal counterpart."""
    found = []
    for node in region.graph.nodes:
        view = op_view(node)
        if view.kind not in ("conv2d", "linear"):
            continue
        weights = conv_weights(view)
        if isinstance(weights, Decline):
            continue
        weight, bias = weights
        if view.kind == "linear":
            found.append(("linear", (1, 1), weight, bias))
            found.append(("conv", (1, 1), _dense_3x3(weight[:, :, None, None], 1), bias))
        elif view.attrs["padding"] == tuple((k - 1) // 2 for k in view.attrs["kernel"]):
            kernel = _dense_3x3(weight, view.attrs["groups"])
            if kernel is not None:
                found.append(("conv", view.attrs["stride"], kernel, bias))
    return found


@torch.no_grad()
def seed_from_teacher(student: nn.Module, region: fx.GraphModule) -> int:
    """Start student layers from teacher layers with a legal counterpart (module policy); returns how many."""
    available = _teacher_kernels(region)
    seeded = 0
    for layer in student.modules():
        role = "conv" if isinstance(layer, nn.Conv2d) else "linear" if isinstance(layer, nn.Linear) else None
        if role is None or (role == "conv" and tuple(layer.padding) != (1, 1)):
            continue
        stride = tuple(layer.stride) if role == "conv" else (1, 1)
        for index, (kind, teacher_stride, weight, bias) in enumerate(available):
            if kind == role and teacher_stride == stride and weight.shape == layer.weight.shape:
                layer.weight.copy_(weight)
                if layer.bias is not None:
                    layer.bias.copy_(bias if bias is not None else torch.zeros_like(layer.bias))
                del available[index]
                seeded += 1
                break
    return seeded
