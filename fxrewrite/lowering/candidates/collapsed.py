"""The replacement both collapses build: y = conv(act(x)) [+ x], one activation and one dense k x k
conv, started from the block's composed linear map and distilled by least squares on the teacher
block's own input and output (see each collapse's file for its maths)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite.lowering.candidates.blocks import Collapsible

#: ridge of the least-squares fit, relative to the mean diagonal of the normal matrix
RIDGE = 1e-4
#: rows (output pixels) the fit reads at most
FIT_ROWS = 50_000


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
        fit_least_squares(self, inputs, outputs)


@torch.no_grad()
def fit_least_squares(collapsed: CollapsedBlock, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
    """Set the collapsed conv to the least-squares map from act(x)'s patches to y (- x)."""
    conv = collapsed.conv
    target = outputs - inputs if collapsed.residual else outputs
    patches = F.unfold(collapsed.act(inputs), conv.kernel_size, padding=conv.padding, stride=conv.stride)
    features = patches.transpose(1, 2).reshape(-1, patches.shape[1]).double()
    wanted = target.flatten(2).transpose(1, 2).reshape(-1, target.shape[1]).double()
    if features.shape[0] > FIT_ROWS:
        rows = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(0))[:FIT_ROWS]
        features, wanted = features[rows], wanted[rows]
    features = torch.cat([features, torch.ones(features.shape[0], 1, dtype=features.dtype)], 1)
    normal = features.T @ features
    normal += torch.eye(normal.shape[0], dtype=normal.dtype) * RIDGE * normal.diagonal().mean()
    solution = torch.linalg.solve(normal, features.T @ wanted)  # (C_in k k + 1, C_out)
    conv.weight.copy_(solution[:-1].T.reshape(conv.weight.shape).float())
    conv.bias.copy_(solution[-1].float())


@dataclass(frozen=True)
class Collapse:
    """A candidate that collapses every block `find` returns into a CollapsedBlock (the interface:
    candidates/base.py); RAN-e's and SESR's collapses differ only in the blocks they find."""

    name: str
    find: Callable[[fx.GraphModule], list[Collapsible]]

    def blocks(self, gm: fx.GraphModule) -> list[Collapsible]:
        return self.find(gm)

    def refusal(self, block: Collapsible) -> str:
        return ""

    def build(self, block: Collapsible) -> nn.Module:
        return CollapsedBlock(block)
