"""What every restructuring candidate declares, so that the planner (fxrewrite/lowering/restructure.py)
iterates a registry: which blocks of a graph it may replace, why it cannot replace one, and the
replacement it builds, which starts from the teacher block (`initialise`), is fitted to the teacher
block's own input and output (`distil`) and names its structure for the cost cache (`signature`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import fx, nn

from fxrewrite.lowering.candidates.blocks import Collapsible


class Replacement(Protocol):
    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def signature(self) -> tuple:
        """What, beside the block's shapes, decides its cycles (the cost cache's key)."""

    def initialise(self, inputs: torch.Tensor) -> None:
        """Start from the teacher block (`inputs`: the block's inputs on calibration data)."""

    def distil(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        """Fit the teacher block's own `outputs` on its `inputs`, label-free."""


class Candidate(Protocol):
    #: the rewrite's name, as reports give it
    name: str

    def blocks(self, gm: fx.GraphModule) -> list[Collapsible]:
        """The blocks of `gm` it may replace, in graph order."""

    def refusal(self, block: Collapsible) -> str:
        """Why it cannot replace `block`, or '' where it can."""

    def build(self, block: Collapsible) -> Replacement:
        """The replacement of `block`."""


def refuses_none(block: Collapsible) -> str:
    return ""


@dataclass(frozen=True)
class BlockRewrite:
    """A candidate from its parts: the blocks `find` returns, the replacement `build` makes of one,
    and why `refuse` turns one down ('' where it does not)."""

    name: str
    find: Callable[[fx.GraphModule], list[Collapsible]]
    build: Callable[[Collapsible], nn.Module]
    refuse: Callable[[Collapsible], str] = refuses_none

    def blocks(self, gm: fx.GraphModule) -> list[Collapsible]:
        return self.find(gm)

    def refusal(self, block: Collapsible) -> str:
        return self.refuse(block)
