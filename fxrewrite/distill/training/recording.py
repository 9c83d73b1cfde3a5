"""Recording what the teacher's regions see: their inputs and outputs on every calibration batch,
and forward hooks that collect what named submodules of a stitched network return."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

from fxrewrite.distill.regions.carving import REGION_PREFIX

#: per region (submodule name): its input tensors and output tensors on one batch
Records = dict[str, tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]]


@dataclass(frozen=True)
class Recorded:
    """One calibration batch, the teacher's final output on it, and every region's inputs and outputs."""

    batch: torch.Tensor
    final: torch.Tensor
    regions: Records


def as_tuple(value: object) -> tuple[torch.Tensor, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


class _Recorder(fx.Interpreter):
    """Runs the carved teacher and keeps every region's inputs and outputs."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.records: Records = {}

    def call_module(self, target, args, kwargs):
        result = super().call_module(target, args, kwargs)
        if target.startswith(REGION_PREFIX):
            # sizes pass as they are (a region that outputs one is refused when its student is sized)
            self.records[target] = tuple(tuple(v.detach() if isinstance(v, torch.Tensor) else v for v in values)
                                         for values in (args, as_tuple(result)))
        return result


def record(teacher: fx.GraphModule, batches: Sequence[torch.Tensor]) -> list[Recorded]:
    cache = []
    with torch.no_grad():
        for batch in batches:
            recorder = _Recorder(teacher)
            final = recorder.run(batch)
            cache.append(Recorded(batch, final, recorder.records))
    return cache


class OutputHooks:
    """Forward hooks that collect what the named submodules return."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self.values: dict[str, tuple[torch.Tensor, ...]] = {}
        self.hooks = [model.get_submodule(n).register_forward_hook(
            lambda m, a, out, n=n: self.values.__setitem__(n, as_tuple(out))) for n in names]

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


def region_order(teacher: fx.GraphModule) -> list[str]:
    """The carved regions' submodule names in graph order."""
    return [str(n.target) for n in teacher.graph.nodes if n.op == "call_module"
            and str(n.target).startswith(REGION_PREFIX)]
