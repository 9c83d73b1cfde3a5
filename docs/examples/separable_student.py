"""A depthwise-separable student for same-size image maps (N, C, H, W) -> (N, C', H, W):

    y = BN(pointwise_1x1(ReLU(BN(depthwise_3x3(x)))))

about 9 C + C C' MACs per pixel where the conv student's first layer alone costs 9 C width. It starts
from the teacher's own layers: the region's first depthwise 3x3 conv and first 1x1 conv of the
same shapes are copied in (its `initialise_from`). It is asked before the conv student (rank 35 <
40); where the map changes size it declines (returns None) and the next kind is asked.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from fxrewrite.distill.students.base import Candidates, Request, Student, runs_on, student_kind
from fxrewrite.ir import op_view
from fxrewrite.rewrite.building import conv_weights


class SeparableStudent(Student):
    """depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN (module docstring)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.depthwise = nn.Sequential(nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch), nn.BatchNorm2d(in_ch),
                                       nn.ReLU())
        self.pointwise = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch))

    @torch.no_grad()
    def initialise_from(self, region: fx.GraphModule) -> int:
        teacher = [conv_weights(op_view(node)) for node in region.graph.nodes if op_view(node).kind == "conv2d"]
        copied = 0
        for layer in (self.depthwise[0], self.pointwise[0]):
            same = next((w for w in teacher if isinstance(w, tuple) and w[0].shape == layer.weight.shape), None)
            if same is not None:
                layer.weight.copy_(same[0])
                layer.bias.copy_(same[1] if same[1] is not None else torch.zeros_like(layer.bias))
                copied += 1
        return copied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


@student_kind(rank=35)
def candidates(request: Request) -> Candidates | None:
    """One separable student for a single same-size map input, where the target runs it; None otherwise."""
    (x, *rest), y = request.inputs, request.output
    if rest or x.dim() != 4 or y.dim() != 4 or x.shape[2:] != y.shape[2:]:
        return None
    if not runs_on(request.target, SeparableStudent(x.shape[1], y.shape[1]), [x]):
        return None
    return [(f"separable 3x3 of {x.shape[1]} -> {y.shape[1]}", lambda: SeparableStudent(x.shape[1], y.shape[1]))]
