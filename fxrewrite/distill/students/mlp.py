"""The MLP student, for outputs that are neither image maps nor tokens from tokens: FC -> ReLU -> FC.

- vectors (N, F) from vectors: on the concatenated inputs, hidden width at most max(F, F');
- anything else (a head reading maps or tokens, a map to tokens, patchify): the flattened inputs
  through FC -> ReLU -> FC to prod(output shape), reshaped; it needs the target's reshape, and
  costs a dense layer over the whole input, so it is the student of last resort. Hidden widths run
  from the flattened size (at most MAX_FLAT_WIDTH) down to the inputs' channels.
It starts from the teacher's layers where shapes allow (the default of fxrewrite.distill.students.base).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fxrewrite.distill.sizing import widths
from fxrewrite.distill.students.base import Candidates, Request, Student, runs_on, student_kind
from fxrewrite.errors import DistillError

#: the widest hidden layer of a student on flattened inputs
MAX_FLAT_WIDTH = 4096


class MlpStudent(Student):
    """FC -> ReLU -> FC on the flattened inputs, reshaped to `out_shape` (per sample) where it has
    more than one dim."""

    def __init__(self, in_features: int, out_shape: Sequence[int], width: int, flatten: bool):
        super().__init__()
        self.flatten, self.out_shape = flatten, tuple(out_shape)
        self.body = nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, math.prod(out_shape)))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        flat = [x.flatten(1) for x in inputs] if self.flatten else list(inputs)
        y = self.body(torch.cat(flat, -1) if len(flat) > 1 else flat[0])
        return y if len(self.out_shape) == 1 else y.reshape(-1, *self.out_shape)


@student_kind(rank=30)
def candidates(request: Request) -> Candidates | None:
    """MLP students for any output but an image map (module docstring), widest first."""
    name, inputs, target = request.name, request.inputs, request.target
    shapes, out_shape = request.shapes, request.out_shape
    if len(out_shape) == 4:
        return None
    if len(out_shape) == 2 and all(len(s) == 2 for s in shapes):
        features = sum(s[-1] for s in shapes)
        return [(f"MLP of {width}", lambda width=width: MlpStudent(features, out_shape[1:], width, flatten=False))
                for width in widths(max(features, out_shape[-1]))]
    features = sum(math.prod(s[1:]) for s in shapes)
    # widest first: up to the flattened size (capped), then down to the channels of the inputs
    narrow = max(max(s[1] for s in shapes), out_shape[-1]) if len(out_shape) == 2 else math.prod(out_shape[1:])
    steps = sorted(set(widths(min(max(features, narrow), MAX_FLAT_WIDTH)) + widths(min(narrow, MAX_FLAT_WIDTH))),
                   reverse=True)
    reshaped = "" if len(out_shape) == 2 else f", reshaped to {out_shape[1:]}"
    built = [(f"MLP of {width} on the flattened inputs{reshaped}",
                   lambda width=width: MlpStudent(features, out_shape[1:], width, flatten=True)) for width in steps]
    if not runs_on(target, built[-1][1](), inputs):
        raise DistillError(f"{name}: no student for inputs {shapes} -> output {out_shape} on {target.name}: it would "
                           "flatten the inputs and reshape an FC layer's output, and the target lacks flatten or "
                           "reshape")
    return built
