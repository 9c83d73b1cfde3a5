"""approx-se-inverted-residual-as-gated-collapse (APPROXIMATE, needs calibration data): RAN-e's
collapse with the squeeze-and-excitation gate kept, moved from the expanded tensor to the output.

An inverted residual with a gate (EfficientNet-B0, MobileNetV3, MnasNet-A; batch norms folded),
    h = a2(D(a1(E x))),   y = P(h * g(h)) [+ x],   g(h) = s(F2 r(F1 mean_hw(h))),
E: 1x1 expand to width C_e, D: k x k depthwise (stride s), P: 1x1 project, F1: C_e -> S, r its
activation, F2: S -> C_e, s a sigmoid or hard sigmoid, becomes
    y' = (W * a(x) + b) * g'(a(x)) [+ x],   g'(u) = s(F2' r(F1' mean_hw(u))),
a = a1: one dense k x k conv C_in -> C_out (as in RAN-e's collapse, approx-inverted-residual-as-
collapsed-block, which drops the gate) and the gate, with the same squeeze width S, activation and
function, reading the collapsed block's activated input and scaling its C_out output channels: no
expanded tensor, one activation fewer in the main path, the gate's per-channel attention kept.

Initialisation from the teacher: W, b from the composed linear map of E, D and P (the collapse's)
scaled by 1 / s(0) = 2, with F2' = 0 and its bias 0, so the gate starts constant at s(0) = 1/2,
where it has slope (wide open, at 1, the hard sigmoid is flat and would learn nothing), and y'
starts as the collapse with its gate dropped. Distillation on the teacher block's own input x and
output y, label-free: first W, b by least squares with the gate constant (the collapse's closed
form), then every weight by Adam on the relative mean squared error; judged on held-out inputs
against the initialisation. Measured on random MobileNetV3 and EfficientNet-B0 blocks, even an
oracle gate (the best scale per sample and output channel) removes under a tenth of the collapse's
error, most of which is the dropped activation. The restructuring planner
(fxrewrite/lowering/restructure.py) weighs it against the collapse without the gate by cycles saved
per point of agreement lost.
"""

from __future__ import annotations

import torch
from torch import nn

from fxrewrite.lowering.candidates.approx_inverted_residual_as_collapsed_block import find_inverted_residuals
from fxrewrite.lowering.candidates.base import BlockRewrite
from fxrewrite.lowering.candidates.blocks import Collapsible, squeeze_excitation
from fxrewrite.lowering.candidates.fitting import fit_by_adam, fit_least_squares

NAME = "approx-se-inverted-residual-as-gated-collapse"
#: the gate's starting logit, where both gates are 1/2 and have slope
OPEN = 0.0


class GatedCollapse(nn.Module):
    """y = (conv(a(x))) * gate(a(x)) [+ x] (module docstring)."""

    def __init__(self, block: Collapsible):
        super().__init__()
        found = squeeze_excitation(block)
        assert found is not None, "the candidate refuses blocks without a gate"
        self.act = block.activation
        self.conv = nn.Conv2d(block.in_ch, block.out_ch, block.kernel, block.stride, block.kernel // 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.squeeze = nn.Conv2d(block.in_ch, found.width, 1)
        self.squeeze_act = found.activation
        self.excite = nn.Conv2d(found.width, block.out_ch, 1)
        self.gate = found.gate
        self.residual = block.residual
        composed = block.composed()
        with torch.no_grad():
            self.excite.weight.zero_(), self.excite.bias.fill_(OPEN)
            if composed is not None:
                self.conv.weight.copy_(composed[0] / self.opening())
                self.conv.bias.copy_(composed[1] / self.opening())

    def opening(self) -> float:
        """The gate's value while it is constant, s(OPEN)."""
        return self.gate(torch.tensor(OPEN)).item()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.act(x)
        y = self.conv(u) * self.gate(self.excite(self.squeeze_act(self.squeeze(self.pool(u)))))
        return y + x if self.residual else y

    def signature(self) -> tuple:
        return (type(self.act).__name__, type(self.gate).__name__, self.squeeze.out_channels)

    def initialise(self, inputs: torch.Tensor) -> None:
        """Initialised from the composed linear map, its gate constant, at construction."""

    def distil(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        with torch.no_grad():
            wanted = (outputs - inputs if self.residual else outputs) / self.opening()
        fit_least_squares(self.conv, self.act(inputs), wanted)  # the optimum while the gate is constant
        fit_by_adam(self, inputs, outputs)


def why_no_gate(block: Collapsible) -> str:
    return "" if squeeze_excitation(block) is not None else "no squeeze-and-excitation gate to keep"


CANDIDATE = BlockRewrite(NAME, find_inverted_residuals, GatedCollapse, why_no_gate)
