"""The replacement both collapses build: y = conv(act(x)) [+ x], one activation and one dense k x k
conv, started from the block's composed linear map and distilled by least squares on the teacher
block's own input and output (see each collapse's file for its maths)."""

from __future__ import annotations

import torch
from torch import nn

from fxrewrite.lowering.candidates.blocks import Collapsible
from fxrewrite.lowering.candidates.fitting import fit_least_squares


class CollapsedBlock(nn.Module):
    """y = conv(act(x)) [+ x]: one activation, one dense k x k conv."""

    def __init__(self, block: Collapsible):
        super().__init__()
        self.act = block.activation
        self.conv = nn.Conv2d(block.in_ch, block.out_ch, block.kernel, block.stride, block.kernel // 2)
        self.residual = block.residual
        composed = block.composed()
        if composed is not None:
            with torch.no_grad():
                self.conv.weight.copy_(composed[0])
                self.conv.bias.copy_(composed[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.act(x))
        return y + x if self.residual else y

    def signature(self) -> tuple:
        return (type(self.act).__name__,)

    def initialise(self, inputs: torch.Tensor) -> None:
        """Initialised from the composed linear map already, at construction."""

    def distil(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        fit_least_squares(self.conv, self.act(inputs), outputs - inputs if self.residual else outputs)

