"""Vela as the restructuring planner's cost: a block compiled alone through ExecuTorch's Arm flow
(fxrewrite.ship.ethos_u), its Vela cycles cached by the block's signature, so that a network's
repeated blocks compile once. Both sides of a comparison, the teacher's block and its replacement,
are compiled the same way (int8, their own input and output conversions), so the comparison is
fair though neither number is the block's share of the whole network's cycles."""

from __future__ import annotations

from collections.abc import Hashable

import torch
from torch import nn

from fxrewrite.ship.ethos_u import compile_for_ethos_u


class VelaBlockCycles:
    """Vela's total cycles for a module compiled alone on `accelerator`, by signature."""

    def __init__(self, accelerator: str):
        self.accelerator = accelerator
        self.cache: dict[Hashable, float] = {}

    def __call__(self, module: nn.Module, sample: torch.Tensor, signature: Hashable) -> float:
        if signature not in self.cache:
            self.cache[signature] = float(compile_for_ethos_u(module.eval(), (sample,), self.accelerator).cycles_total)
        return self.cache[signature]

    def describe(self) -> str:
        return f"Vela on {self.accelerator} ({len(self.cache)} blocks compiled)"
