"""Cost of a graph: multiply-accumulates, parameters, and a target's latency estimate in cycles.

The estimate follows the target's performance model (fxrewrite.target.performance): per node,
max(work / throughput of its unit, bytes moved / bandwidth) + per-op overhead. Views that move no
data (reshape, flatten, getitem) cost nothing; everything else costs at least its overhead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import fx

from fxrewrite.ir import OpView, op_view, tensor_shape
from fxrewrite.nn_mass import graph_nn_mass
from fxrewrite.target import Performance


def node_macs(view: OpView) -> int:
    """Multiply-accumulates of one node (convs, linear, matmul); 0 for everything else."""
    out = view.output_shape
    if out is None:
        return 0
    if view.kind in ("conv1d", "conv2d"):
        a = view.attrs
        return math.prod(out) * (a["in_ch"] // a["groups"]) * math.prod(a["kernel"])
    if view.kind == "linear":
        return math.prod(out) * view.attrs["in_features"]
    if view.kind == "matmul" and view.inputs:
        left = tensor_shape(view.inputs[0])
        return math.prod(out) * left[-1] if left else 0
    return 0


def node_weight_elements(view: OpView) -> int:
    if view.kind in ("conv1d", "conv2d"):
        a = view.attrs
        return a["out_ch"] * (a["in_ch"] // a["groups"]) * math.prod(a["kernel"])
    if view.kind == "linear":
        return view.attrs["in_features"] * view.attrs["out_features"]
    return 0


def node_activation_elements(view: OpView) -> int:
    """Elements read and written: every tensor operand plus the result."""
    shapes = [*view.input_shapes, *([view.output_shape] if view.output_shape is not None else [])]
    return sum(math.prod(s) for s in shapes)


#: kinds that cost nothing on the chip: shape relabels move no data, fake quantization stands for the
#: rounding an integer op does as it writes its output, and dropout and identity do nothing at inference
FREE_KINDS = frozenset({"reshape", "flatten", "getitem", "fake_quant", "dropout", "identity"})
#: kinds that reduce windows or axes on the pooling unit
POOLING_KINDS = frozenset({"max_pool2d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "mean", "sum",
                           "amax"})


#: norms whose affine map (weight and bias) is work of its own: a chip without a norm unit runs it as
#: another elementwise pass, which folding it into the next FC layer saves (fold-affine-into-linear)
AFFINE_NORM_KINDS = frozenset({"layer_norm", "group_norm"})


def work_unit(view: OpView, lut_ops: frozenset[str]) -> tuple[str, float]:
    """The unit that runs a node (the Performance field holding its throughput per cycle) and how much
    work it gives that unit: MACs, window elements or output elements."""
    if view.kind in ("conv1d", "conv2d"):
        return ("dense_macs_per_cycle" if view.attrs["groups"] == 1 else "depthwise_macs_per_cycle"), node_macs(view)
    if view.kind in ("linear", "matmul"):
        return "dense_macs_per_cycle", node_macs(view)
    out = math.prod(view.output_shape) if view.output_shape is not None else 0
    if view.kind in POOLING_KINDS:
        window = math.prod(view.attrs.get("kernel", (1,)))
        return "pooling_per_cycle", out * window if "kernel" in view.attrs else sum(
            math.prod(s) for s in view.input_shapes[:1])
    if view.kind in AFFINE_NORM_KINDS and view.attrs.get("affine"):
        out *= 2  # the affine map (a multiply and an add per element) is a second pass over the output
    return ("lut_per_cycle" if view.kind in lut_ops else "elementwise_per_cycle"), out


def _work_cycles(view: OpView, perf: Performance) -> float:
    unit, work = work_unit(view, perf.lut_ops)
    return work / getattr(perf, unit)


def op_cycles(perf: Performance, work_cycles: float, activation_elements: int, weight_elements: int) -> float:
    """max(compute, memory) + overhead for an op of this work and these tensor sizes."""
    activations, weights = perf.activation_bytes * activation_elements, perf.weight_bytes * weight_elements
    if perf.weight_bytes_per_cycle is None:
        memory = (activations + weights) / perf.bytes_per_cycle
    else:
        memory = max(activations / perf.bytes_per_cycle, weights / perf.weight_bytes_per_cycle)
    return max(work_cycles, memory) + perf.op_overhead_cycles


#: kinds that write their output through the output stage an activation can be fused into
FUSION_HOSTS = frozenset({"conv1d", "conv2d", "linear", "matmul", "add", "sub", "mul", "avg_pool2d", "max_pool2d",
                          "adaptive_avg_pool2d", "mean"})


def is_fused(view: OpView, perf: Performance) -> bool:
    """Whether the compiler fuses this node into the op writing its input: a kind in `fused_ops` whose
    producer is a fusion host (or a batch norm itself folded into one) read by nothing else."""
    if view.kind not in perf.fused_ops or not view.inputs:
        return False
    producer = view.inputs[0]
    if producer.op not in ("call_function", "call_module", "call_method") or len(producer.users) != 1:
        return False
    before = op_view(producer)
    return before.kind in FUSION_HOSTS or (before.kind == "batch_norm" != view.kind and is_fused(before, perf))


def costs_nothing(view: OpView, perf: Performance) -> bool:
    """A node the target runs without work of its own: structural, free, built in place or fused."""
    return view.structural or view.kind in FREE_KINDS or view.kind in perf.free_ops or is_fused(view, perf)


def node_cycles(view: OpView, perf: Performance) -> float:
    """Estimated cycles of one node on the target (see the module docstring)."""
    if costs_nothing(view, perf):
        return 0.0
    return op_cycles(perf, _work_cycles(view, perf), node_activation_elements(view), node_weight_elements(view))


def nodes_cycles(nodes: Iterable[fx.Node], perf: Performance) -> float:
    return sum(node_cycles(op_view(n), perf) for n in nodes if n.op not in ("placeholder", "output", "get_attr"))


@dataclass(frozen=True)
class Cost:
    """Estimated cycles and MACs of a graph, a region or a node's descendants on one target."""

    cycles: float
    macs: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.cycles + other.cycles, self.macs + other.macs)

    def scaled(self, factor: float) -> Cost:
        return Cost(self.cycles * factor, int(self.macs * factor))

    def divided(self, parts: int) -> Cost:
        return Cost(self.cycles / parts, self.macs // parts)

    def within(self, allowance: Cost) -> bool:
        return self.cycles <= allowance.cycles and self.macs <= allowance.macs

    def ratios(self, reference: Cost) -> tuple[float, float]:
        """Cycles and MACs as multiples of `reference`'s (MACs 0 when the reference has none)."""
        return self.cycles / max(reference.cycles, 1e-12), self.macs / reference.macs if reference.macs else 0.0

    def ratio(self, reference: Cost) -> float:
        """The larger of the cycles and MACs ratios to `reference`."""
        return max(self.ratios(reference))


@dataclass(frozen=True)
class Estimate:
    """A graph's estimated latency on one target: in total, per op kind, and its dearest nodes."""

    cycles: float
    milliseconds: float
    by_kind: dict[str, float]
    dearest: tuple[tuple[str, str, float], ...]

    @classmethod
    def of(cls, gm: fx.GraphModule, perf: Performance, top: int = 10) -> Estimate:
        rows = [(n.name, v.kind, node_cycles(v, perf)) for n in gm.graph.nodes
                if n.op not in ("placeholder", "output", "get_attr") and not (v := op_view(n)).structural]
        by_kind: dict[str, float] = {}
        for _, kind, cycles in rows:
            by_kind[kind] = by_kind.get(kind, 0.0) + cycles
        total = sum(by_kind.values())
        dearest = tuple(sorted((r for r in rows if r[2] > 0), key=lambda r: -r[2])[:top])
        return cls(total, perf.milliseconds(total), dict(sorted(by_kind.items(), key=lambda kv: -kv[1])), dearest)

    def as_dict(self) -> dict[str, Any]:
        return {"cycles": round(self.cycles), "ms": round(self.milliseconds, 4),
                "by_kind": {k: round(v) for k, v in self.by_kind.items()},
                "dearest": [{"node": name, "kind": kind, "cycles": round(c)} for name, kind, c in self.dearest]}

    def to_text(self) -> str:
        kinds = ", ".join(f"{k} {v / max(self.cycles, 1e-12):.0%}" for k, v in list(self.by_kind.items())[:6])
        return f"{self.cycles:,.0f} cycles ({self.milliseconds:.3f} ms): {kinds}"

    def dearest_text(self) -> str:
        return ", ".join(f"{name} ({kind}) {cycles:,.0f}" for name, kind, cycles in self.dearest)


def graph_macs(gm: fx.GraphModule) -> int:
    return sum(node_macs(op_view(n)) for n in gm.graph.nodes)


def parameter_count(gm: fx.GraphModule) -> int:
    return sum(p.numel() for p in gm.parameters())


def nodes_macs(nodes: list[fx.Node]) -> int:
    return sum(node_macs(op_view(n)) for n in nodes)


@dataclass(frozen=True)
class Size:
    """What a graph costs in the report: MACs (per the batch its shapes were recorded at), parameters,
    nodes, and with a target, its latency estimate there."""

    macs: int
    params: int
    nodes: int | None = None
    estimate: Estimate | None = None
    #: fxrewrite.nn_mass: the skip links' width x the channel-mixing layers they bypass
    nn_mass: float | None = None

    @classmethod
    def of(cls, gm: fx.GraphModule, count_nodes: bool = True, performance: Performance | None = None) -> Size:
        return cls(graph_macs(gm), parameter_count(gm), len(gm.graph.nodes) if count_nodes else None,
                   Estimate.of(gm, performance) if performance is not None else None, graph_nn_mass(gm))

    def as_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {k: v for k, v in (("macs", self.macs), ("params", self.params),
                                                      ("nodes", self.nodes), ("nn_mass", self.nn_mass))
                                    if v is not None}
        return document | (self.estimate.as_dict() if self.estimate is not None else {})
