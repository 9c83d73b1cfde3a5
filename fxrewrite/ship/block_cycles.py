"""What every measured cost of the restructuring planner shares (fxrewrite.lowering.restructure's
`measure`): a block's cycles cached by its signature, so that a network's repeated blocks are measured
once, and whole networks measured each time and counted. A measure says only how it measures one
module (`cycles`) and names itself (`describe`)."""

from __future__ import annotations

from collections.abc import Hashable

import torch
from torch import nn


class CyclesBySignature:
    """`cycles(module, sample)` for blocks by signature and for whole networks (module docstring)."""

    def __init__(self) -> None:
        self.cache: dict[Hashable, float] = {}
        self.networks = 0

    def cycles(self, module: nn.Module, sample: torch.Tensor) -> float:
        """One module's cycles on `sample`: each measure's own."""
        raise NotImplementedError(f"{type(self).__name__} says how it measures a module")

    def __call__(self, module: nn.Module, sample: torch.Tensor, signature: Hashable) -> float:
        if signature not in self.cache:
            self.cache[signature] = self.cycles(module, sample)
        return self.cache[signature]

    def network(self, module: nn.Module, sample: torch.Tensor) -> float:
        """A whole network's cycles (the teacher with replacements in place): each is another network,
        so nothing is cached."""
        self.networks += 1
        return self.cycles(module, sample)

    def counted(self, verb: str) -> str:
        """'N blocks VERB[, M whole networks]', for `describe`."""
        return f"{len(self.cache)} blocks {verb}" + (f", {self.networks} whole networks" if self.networks else "")
