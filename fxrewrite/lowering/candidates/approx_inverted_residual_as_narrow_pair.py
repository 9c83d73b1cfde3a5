"""approx-inverted-residual-as-narrow-pair (APPROXIMATE, needs calibration data): RAN-implicit's
deeper and narrower at no less NN-Mass.

An inverted residual of expansion width E (batch norms folded, no gate),
    y = P(a2(D(a1(E x)))) [+ x],   E: 1x1 C_in -> E, D: k x k depthwise (stride s), P: 1x1 E -> C_out,
becomes two inverted residuals of a third of that width, E' = 8 ceil(E / 24),
    h = P1(a2(D1(a1(E1 x)))) [+ x],   y' = h + P2(a2(D2(a1(E2 h)))),
the first with the teacher block's stride and shapes, the second C_out -> C_out at stride 1 with its
own identity skip. Per output pixel the pointwise layers cost 2 C E' + 2 C_out E' ~ 2/3 of
C_in E + E C_out for square blocks, the depthwise layers 2 E' ~ 2/3 of E, and no tensor is wider than
E'. NN-Mass (fxrewrite/nn_mass.py: skip width x channel-mixing layers bypassed) never falls: the
teacher block has 2 C_in where it has a residual (else 0), the pair 2 C_out for its second skip plus
the first's. That is RAN-i's trade, fewer channels and more layers at equal or higher NN-Mass.

Initialisation from the teacher: the first block keeps the E' expanded channels that contribute
most to y, |P[:, e]| mean |h_e| with h = a2(D(a1(E x))) on calibration inputs, with their expand,
depthwise and project weights (exact where the dropped channels contribute nothing); the second
starts as the identity (projection zero). There is no closed form with three activations in the
path: the pair is then distilled label-free by Adam on the mean squared error to the teacher
block's own output over the calibration inputs, and judged on held-out inputs against that
initialisation. The restructuring planner (fxrewrite/lowering/restructure.py) applies it only with
calibration data, only where the target's cost says the pair is cheaper, and only within the
accuracy budget; it is no pattern pass.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from fxrewrite.ir import op_view
from fxrewrite.lowering.candidates.approx_inverted_residual_as_collapsed_block import find_inverted_residuals
from fxrewrite.lowering.candidates.base import BlockRewrite
from fxrewrite.lowering.candidates.blocks import Collapsible, activation_module, weights_of
from fxrewrite.lowering.candidates.fitting import BATCH, fit_by_adam

NAME = "approx-inverted-residual-as-narrow-pair"
#: the pair's expansion is this share of the teacher block's, rounded up to a multiple of CHANNEL_STEP
SHARE = 3
CHANNEL_STEP = 8


def narrow_width(expanded: int) -> int:
    """E' = CHANNEL_STEP ceil(E / (SHARE CHANNEL_STEP))."""
    return CHANNEL_STEP * math.ceil(expanded / (SHARE * CHANNEL_STEP))


def why_not_narrowable(block: Collapsible) -> str:
    """Why `block` cannot become a narrow pair, or '' where it can."""
    if len(block.convs) != 3:
        return "no expansion to narrow"
    if any(op_view(node).kind == "mul" for node in block.nodes):
        return "a squeeze-and-excitation gate (the pair has none)"
    expanded = op_view(block.convs[0]).output_shape[1]
    if 2 * narrow_width(expanded) >= expanded:
        return f"an expansion of {expanded} channels is too narrow to split"
    return ""


class InvertedResidual(nn.Module):
    """y = project(a2(depthwise(a1(expand(x))))) [+ x], batch norms folded."""

    def __init__(self, c_in: int, c_out: int, expanded: int, kernel: int, stride: int, first: nn.Module,
                 second: nn.Module, residual: bool):
        super().__init__()
        self.expand = nn.Conv2d(c_in, expanded, 1)
        self.act1 = copy.deepcopy(first)
        self.depthwise = nn.Conv2d(expanded, expanded, kernel, stride, kernel // 2, groups=expanded)
        self.act2 = copy.deepcopy(second)
        self.project = nn.Conv2d(expanded, c_out, 1)
        self.residual = residual

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.depthwise(self.act1(self.expand(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.hidden(x))
        return y + x if self.residual else y


class NarrowPair(nn.Module):
    """Two inverted residuals of a third of the teacher block's expansion (module docstring)."""

    def __init__(self, block: Collapsible):
        super().__init__()
        second_act = activation_module(op_view(block.convs[2]).inputs[0])
        width = narrow_width(op_view(block.convs[0]).output_shape[1])
        self.first = InvertedResidual(block.in_ch, block.out_ch, width, block.kernel, block.stride, block.activation,
                                      second_act, block.residual)
        self.second = InvertedResidual(block.out_ch, block.out_ch, width, block.kernel, 1, block.activation,
                                       second_act, True)
        self.teacher_weights = weights_of(block)  # a plain list: not parameters of the pair
        with torch.no_grad():
            self.second.project.weight.zero_(), self.second.project.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    def signature(self) -> tuple:
        return (self.first.expand.out_channels,)

    @torch.no_grad()
    def initialise(self, inputs: torch.Tensor) -> None:
        """The first block from the teacher's channels that contribute most on `inputs`."""
        if self.teacher_weights is None:
            return  # weights computed at run time: the pair keeps its random start
        (expand, e), (depthwise, d), (project, p) = [(w.float(), b.float()) for w, b in self.teacher_weights]
        teacher = InvertedResidual(expand.shape[1], project.shape[0], expand.shape[0], depthwise.shape[-1],
                                   self.first.depthwise.stride[0], self.first.act1, self.first.act2, False)
        for conv, (weight, bias) in zip((teacher.expand, teacher.depthwise, teacher.project),
                                        ((expand, e), (depthwise, d), (project, p))):
            conv.weight.copy_(weight), conv.bias.copy_(bias)
        magnitude = torch.cat([teacher.hidden(batch).abs().mean((2, 3)) for batch in inputs.split(BATCH)]).mean(0)
        kept = (project[:, :, 0, 0].norm(dim=0) * magnitude).topk(self.first.expand.out_channels).indices.sort().values
        self.first.expand.weight.copy_(expand[kept]), self.first.expand.bias.copy_(e[kept])
        self.first.depthwise.weight.copy_(depthwise[kept]), self.first.depthwise.bias.copy_(d[kept])
        self.first.project.weight.copy_(project[:, kept]), self.first.project.bias.copy_(p)
        self.teacher_weights = None  # read once: not carried into the graph the pair is written into

    def distil(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        fit_by_adam(self, inputs, outputs)


CANDIDATE = BlockRewrite(NAME, find_inverted_residuals, NarrowPair, why_not_narrowable)
