"""What a vendor compiler is to fxrewrite: the chip's own toolchain, whose numbers are the truth that
reports show and the restructuring planner decides by (the target names it: fxrewrite.target.compilers).

A compiler says whether it is installed (and refuses, saying how to install it, where it is not),
compiles a module for one of its accelerators into what it reports (cycles, time, memory, ops left
to the CPU; with a path, the program it writes there), and gives the planner a block's cycles by
signature. A second compiler is one file of this package beside vela.py.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn


class Compiled(Protocol):
    """What a compiler reports for one graph."""

    accelerator: str
    cycles_total: int
    #: the whole program's cycles: the chip's and what runs beside it (the host CPU's share, estimated)
    program_cycles: int

    def to_dict(self) -> dict[str, Any]: ...

    def describe(self) -> str: ...


class BlockCycles(Protocol):
    """A block's cycles on the chip: (module, sample input, signature) -> cycles, cached by signature."""

    def __call__(self, module: nn.Module, sample: torch.Tensor, signature: Hashable) -> float: ...

    def network(self, module: nn.Module, sample: torch.Tensor) -> float:
        """A whole network's cycles (the planner keeps a replacement only where the network gains)."""

    def describe(self) -> str: ...


class VendorCompiler(Protocol):
    #: the name a target file gives (fxrewrite.target.compilers.ACCELERATORS)
    name: str
    #: its name in sentences
    label: str

    def installed(self) -> bool: ...

    def require(self, wanted_by: str) -> None:
        """Refuse (UsageError, saying how to install it) where it is not installed."""

    def compile(self, module: nn.Module, example_inputs: tuple[torch.Tensor, ...], accelerator: str,
                calibration: Sequence[tuple[torch.Tensor, ...]] = (), program: Path | None = None,
                held_out: Sequence[tuple[torch.Tensor, ...]] = ()) -> Compiled: ...

    def block_cycles(self, accelerator: str) -> BlockCycles: ...

