"""Arm's Vela, through ExecuTorch's Arm backend (the ethos-u extra): int8 by ExecuTorch's quantizer,
Vela's cycles, time and memory, the ops left on the CPU (fxrewrite.ship.ethos_u), and per block for
the planner (fxrewrite.ship.vela_cost)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fxrewrite.ship.ethos_u import VelaResult, compile_for_ethos_u
from fxrewrite.ship.ethos_u_toolchain import ethos_u_installed, require_ethos_u
from fxrewrite.ship.vela_cost import VelaBlockCycles


@dataclass(frozen=True)
class Vela:
    name: str = "vela"
    label: str = "Vela"

    def installed(self) -> bool:
        return ethos_u_installed()

    def require(self, wanted_by: str) -> None:
        require_ethos_u(wanted_by)

    def compile(self, module: nn.Module, example_inputs: tuple[torch.Tensor, ...], accelerator: str,
                calibration: Sequence[tuple[torch.Tensor, ...]] = (), program: Path | None = None,
                held_out: Sequence[tuple[torch.Tensor, ...]] = ()) -> VelaResult:
        return compile_for_ethos_u(module, example_inputs, accelerator, calibration, program, held_out)

    def block_cycles(self, accelerator: str) -> VelaBlockCycles:
        return VelaBlockCycles(accelerator)


COMPILER = Vela()
