"""A target's performance model (`[performance]` in the target file): the latency estimate every choice minimizes.

As in Arm Vela's estimate, an op costs max(compute cycles, memory cycles) plus a fixed overhead:
compute is its work divided by the throughput of the unit that runs it (dense conv and FC MACs,
depthwise or grouped conv MACs, pooling and reduction window elements, elementwise output
elements, table-lookup outputs), memory is the bytes it reads and writes (activations at the
target's widest activation format, weights at its widest weight format) divided by the bandwidth.
An op the compiler fuses into its producer (`fused_ops`) or builds in place (`free_ops`) costs nothing (fxrewrite.cost.is_fused).
Where weights come over their own bus (Ethos-U's weights stream from flash while activations stay
in SRAM), `weight_bytes_per_cycle` is that bus's bandwidth and memory is the slower of the two.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Performance:
    """Throughputs per cycle, clock, bandwidth and per-op overhead of one target (see the module docstring)."""

    clock_mhz: float = 1000.0
    dense_macs_per_cycle: float = 256.0
    depthwise_macs_per_cycle: float = 64.0
    pooling_per_cycle: float = 32.0
    elementwise_per_cycle: float = 16.0
    lut_per_cycle: float = 4.0
    bytes_per_cycle: float = 16.0
    #: bandwidth of the weights' own bus; None: weights share bytes_per_cycle with activations
    weight_bytes_per_cycle: float | None = None
    op_overhead_cycles: float = 0.0
    #: ops the target runs as a lookup table (at lut_per_cycle rather than elementwise_per_cycle)
    lut_ops: frozenset[str] = frozenset()
    #: ops the target's compiler fuses into the op writing their input (activations into a conv's
    #: output stage, a batch norm into the conv's weights): free where that op has no other reader
    fused_ops: frozenset[str] = frozenset()
    #: ops the compiler builds without moving data (Vela writes a concat's inputs into its slices)
    free_ops: frozenset[str] = frozenset()
    activation_bytes: float = 1.0
    weight_bytes: float = 1.0
    #: exact rewrites may make the model at most this many times the teacher's estimated cycles and
    #: MACs; the nodes past it are kept for distillation (None: no limit; fxrewrite.lowering.growth_limit)
    growth_max: float | None = None
    #: how the restructuring planner costs the target without a vendor compiler: "estimate" (this
    #: model) or "host-latency" (the target is this CPU: latency measured here, fxrewrite.ship.host_latency)
    measured_by: str = "estimate"
    #: the CPU the chip's flow leaves the ops it cannot run on ("cortex-m55"; empty: none): an illegal
    #: node kept as it is costs that CPU's estimate (fxrewrite.target.host_cpu), not the NPU's
    host_cpu: str = ""

    def milliseconds(self, cycles: float) -> float:
        return cycles / (self.clock_mhz * 1e3)
