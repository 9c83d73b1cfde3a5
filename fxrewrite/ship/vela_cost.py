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
        self.networks = 0

    def __call__(self, module: nn.Module, sample: torch.Tensor, signature: Hashable) -> float:
        if signature not in self.cache:
            self.cache[signature] = float(compile_for_ethos_u(module.eval(), (sample,), self.accelerator).cycles_total)
        return self.cache[signature]

    def network(self, module: nn.Module, sample: torch.Tensor) -> float:
        """Vela's total cycles for a whole network (the teacher with replacements in place); each is
        another network, so nothing is cached."""
        self.networks += 1
        return float(compile_for_ethos_u(module.eval(), (sample,), self.accelerator).cycles_total)

    def describe(self) -> str:
        networks = f", {self.networks} whole networks" if self.networks else ""
        return f"Vela on {self.accelerator} ({len(self.cache)} blocks compiled{networks})"
