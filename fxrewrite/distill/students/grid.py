"""The grid student, for grids (N, H, W, C) -> (N, H, W, C') on a chip of FC layers without convs
(Swin's channels-last maps): the H W positions read as tokens, flattened in, through a token student
(fxrewrite.distill.students.tokens), and unflattened out. It starts from the teacher's layers where
shapes allow, as the token student does.
"""

from __future__ import annotations

import torch
from torch import nn

from fxrewrite.distill.students import tokens
from fxrewrite.distill.students.base import Candidates, Request, Student, student_kind


class GridTokens(Student):
    """A token student on (N, H, W, C) grids read as H W tokens: flatten, the student, unflatten."""

    def __init__(self, student: nn.Module, grid: tuple[int, int]):
        super().__init__()
        self.student, self.grid = student, grid

    def forward(self, *grids: torch.Tensor) -> torch.Tensor:
        return self.student(*(g.flatten(1, 2) for g in grids)).unflatten(1, self.grid)


@student_kind(rank=10)
def candidates(request: Request) -> Candidates | None:
    """Token students over the grid's positions, on a target with FC layers but no convs; None elsewhere."""
    name, inputs, output, target = request.name, request.inputs, request.output, request.target
    shapes, out_shape = request.shapes, request.out_shape
    fc_without_convs = "linear" in target.ops and "conv2d" not in target.ops and not target.allow_all_ops
    if len(out_shape) != 4 or not fc_without_convs or not shapes or \
            not all(len(s) == 4 and s[:3] == out_shape[:3] for s in shapes):
        return None
    # on a chip of FC layers without convs, a grid of the output's H x W (Swin's channels-last maps) is tokens
    flat = tokens.candidates(Request(name, [t.flatten(1, 2) for t in inputs], output.flatten(1, 2),
                                     request.region_kinds, target))
    return [(f"{label} over the {out_shape[1]}x{out_shape[2]} grid as tokens",
             lambda build=build: GridTokens(build(), out_shape[1:3])) for label, build in flat]
