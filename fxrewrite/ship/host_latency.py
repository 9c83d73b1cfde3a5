"""This CPU's measured latency as the restructuring planner's cost, for targets that are this CPU
(`measured_by = "host-latency"` under [performance]: cpu-reference): a module's median wall time
over REPEATS runs under torch.inference_mode after WARMUP runs, given as cycles at the target's clock
so that reports read as on every target. Blocks are cached by signature, as Vela's are; whole
networks are timed each time. Wall time varies between runs by a few percent, which the planner's
margin on whole-network gains (fxrewrite.lowering.restructure.NETWORK_MARGIN) absorbs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Hashable

import torch
from torch import nn

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


class HostLatency:
    """A module's measured latency on this CPU as cycles at `clock_mhz`, by signature."""

    def __init__(self, clock_mhz: float):
        self.clock_mhz = clock_mhz
        self.cache: dict[Hashable, float] = {}
        self.networks = 0

    def __call__(self, module: nn.Module, sample: torch.Tensor, signature: Hashable) -> float:
        if signature not in self.cache:
            self.cache[signature] = median_seconds(module, sample) * self.clock_mhz * 1e6
        return self.cache[signature]

    def network(self, module: nn.Module, sample: torch.Tensor) -> float:
        self.networks += 1
        return median_seconds(module, sample) * self.clock_mhz * 1e6

    def describe(self) -> str:
        networks = f", {self.networks} whole networks" if self.networks else ""
        return (f"latency measured on this CPU by torch (median of {REPEATS} runs, as cycles at "
                f"{self.clock_mhz:g} MHz; {len(self.cache)} blocks timed{networks})")
