"""This CPU's measured latency as the restructuring planner's cost, for targets that are this CPU
(`measured_by = "host-latency"` under [performance]: cpu-reference): a module's median wall time
over REPEATS runs under torch.inference_mode after WARMUP runs, given as cycles at the target's clock
so that reports read as on every target; blocks cached by signature, whole networks timed each time
(fxrewrite.ship.block_cycles). Wall time varies between runs by a few percent, which the planner's
margin on whole-network gains (fxrewrite.lowering.restructure.NETWORK_MARGIN) absorbs."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from fxrewrite.ship.block_cycles import CyclesBySignature

WARMUP = 3
REPEATS = 15


def median_seconds(module: nn.Module, sample: torch.Tensor) -> float:
    """The median wall time of `module(sample)` on this CPU, in seconds."""
    try:
        module.eval()
    except NotImplementedError:  # an exported program's module runs as it was exported
        pass
    times = []
    with torch.inference_mode():
        for run in range(WARMUP + REPEATS):
            start = time.perf_counter()
            module(sample)
            if run >= WARMUP:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


class HostLatency(CyclesBySignature):
    """A module's measured latency on this CPU as cycles at `clock_mhz`, by signature."""

    def __init__(self, clock_mhz: float):
        super().__init__()
        self.clock_mhz = clock_mhz

    def cycles(self, module: nn.Module, sample: torch.Tensor) -> float:
        return median_seconds(module, sample) * self.clock_mhz * 1e6

    def describe(self) -> str:
        return (f"latency measured on this CPU by torch (median of {REPEATS} runs, as cycles at "
                f"{self.clock_mhz:g} MHz; {self.counted('timed')})")
