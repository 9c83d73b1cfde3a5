"""Vela as the restructuring planner's cost: a block compiled alone through ExecuTorch's Arm flow
(fxrewrite.ship.ethos_u), its Vela cycles cached by the block's signature, so that a network's
repeated blocks compile once. Both sides of a comparison, the teacher's block and its replacement,
are compiled the same way (int8, their own input and output conversions), so the comparison is
fair though neither number is the block's share of the whole network's cycles."""

from __future__ import annotations

import torch
from torch import nn

from fxrewrite.ship.block_cycles import CyclesBySignature
from fxrewrite.ship.ethos_u import compile_for_ethos_u


class VelaBlockCycles(CyclesBySignature):
    """Vela's total cycles for a module compiled alone on `accelerator`, by signature."""

    def __init__(self, accelerator: str):
        super().__init__()
        self.accelerator = accelerator

    def cycles(self, module: nn.Module, sample: torch.Tensor) -> float:
        return float(compile_for_ethos_u(module.eval(), (sample,), self.accelerator).cycles_total)

    def describe(self) -> str:
        return f"Vela on {self.accelerator} ({self.counted('compiled')})"
