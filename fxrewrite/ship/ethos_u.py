"""Arm Ethos-U's own compiler as judge: a graph compiled the way ExecuTorch's Arm backend compiles it,
and what Vela, Arm's compiler, says of it (needs the `ethos-u` extra, imported only here).

The flow is ExecuTorch's: `torch.export`, int8 post-training quantization by `EthosUQuantizer`
(PT2E) on calibration inputs, `to_edge_transform_and_lower` with `EthosUPartitioner`, which hands
what the NPU runs to Vela and leaves the rest on the CPU. Vela writes its summary CSV (cycles,
inference time, memory) and, with `--verbose-performance`, a CSV per layer into a folder read back
here. The partitioner's reason for each op it leaves on the CPU is kept beside the op.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import csv
import dataclasses
import itertools
import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from fxrewrite.errors import FxrewriteError, VelaError
from fxrewrite.files import atomic_write_bytes
from fxrewrite.metrics import is_class_scores, l2_relative_error, no_class_information, top1_agreement
from fxrewrite.target.host_cpu import HostOp, host_cycles
from fxrewrite.ship.learned_scales import carry_learned_scales, without_fake_quantizers
from fxrewrite.ship.vela_layers import VelaLayer, named_after_nodes
from fxrewrite.ship.ethos_u_toolchain import require_ethos_u

#: ops ExecuTorch leaves outside every delegate by design: the int8 program's input and output conversions
BOUNDARY_OPS = frozenset({"quantize_per_tensor", "dequantize_per_tensor", "getitem", "executorch_call_delegate"})
#: nodes that run no kernel on the CPU
_NO_KERNEL = frozenset({"getitem", "executorch_call_delegate"})


@dataclass(frozen=True)
class CpuOp:
    op: str
    count: int
    #: the partitioner's reason, for the first node of this op it rejected
    reason: str
    #: output elements of all its nodes
    elements: int = 0
    #: estimated host CPU cycles of all its nodes, compute and transfer (fxrewrite.target.host_cpu)
    cycles: int = 0


@dataclass(frozen=True)
class QuantizationCheck:
    """What int8 post-training quantization changed, on inputs the quantizer did not see."""

    calibration_inputs: int
    held_out_inputs: int
    #: share of held-out inputs whose top-1 class the int8 graph keeps (None: the output is not class scores,
    #: or scores that carry no class information)
    top1_agreement: float | None
    #: ||int8 - float|| / ||float|| over the held-out outputs (fxrewrite.metrics.l2_relative_error)
    relative_error: float
    #: why the float graph's class scores carry no class information ('' where they do or are not scores)
    no_class_information: str = ""


@dataclass(frozen=True)
class VelaResult:
    """Vela's verdict and numbers for one compiled graph."""

    accelerator: str
    system_config: str
    memory_mode: str
    cycles_total: int
    cycles_npu: int
    inference_ms: float
    sram_kib: float
    flash_kib: float
    delegates: int
    cpu_ops: tuple[CpuOp, ...] = ()
    layers: tuple[VelaLayer, ...] = field(default=(), repr=False)
    quantization: QuantizationCheck | None = None
    #: layers whose input and weight scales a quantized student learned and the program kept
    learned_scale_layers: int = 0
    #: the same check with every scale estimated by ExecuTorch's quantizer (a quantized student only)
    quantization_estimated: QuantizationCheck | None = None
    #: estimated host CPU cycles of the program's ops outside the NPU, its int8 input and output
    #: conversions included (fxrewrite.target.host_cpu)
    cpu_cycles: int = 0
    #: seconds ExecuTorch's Arm flow and Vela took to compile it
    compile_seconds: float = 0.0

    @property
    def program_cycles(self) -> int:
        """The whole program: Vela's NPU cycles and the host CPU's estimated cycles, one after the other."""
        return self.cycles_total + self.cpu_cycles

    def to_dict(self) -> dict:
        return asdict(self) | {"program_cycles": self.program_cycles}

    def describe(self) -> str:
        on_cpu = ", ".join(f"{op.op} x{op.count} ({op.reason})" for op in self.cpu_ops) or "none"
        text = (f"{self.cycles_total:,} cycles ({self.cycles_npu:,} on the NPU's MACs), {self.inference_ms:.3f} ms, "
                f"SRAM {self.sram_kib:,.1f} KiB, flash {self.flash_kib:,.1f} KiB; {self.delegates} "
                f"delegated subgraphs; on the CPU: {on_cpu}; whole program with the CPU's ops (estimated "
                f"{self.cpu_cycles:,} cycles, int8 conversions included): {self.program_cycles:,} cycles; "
                f"compiled in {self.compile_seconds:.0f} s")
        busiest = sorted(self.layers, key=lambda layer: -layer.cycles)[:3]
        if busiest:
            text += "; most cycles: " + ", ".join(f"{layer.node or layer.name} ({layer.operator}) {layer.cycles:,}"
                                                  for layer in busiest)
        q = self.quantization
        if q is not None:
            scales = (f"with the scales the student learned on {self.learned_scale_layers} layers"
                      if self.learned_scale_layers else f"calibrated on {q.calibration_inputs} inputs")
            text += f"; int8 ({scales}) against the float graph on {q.held_out_inputs} held-out inputs: {_judged(q)}"
        if self.quantization_estimated is not None:
            text += f" (every scale estimated by ExecuTorch instead: {_judged(self.quantization_estimated)})"
        return text


def _judged(check: QuantizationCheck) -> str:
    agreement = f"top-1 agreement {check.top1_agreement:.2%}, " if check.top1_agreement is not None else ""
    vacuous = f" (no top-1 agreement: {check.no_class_information})" if check.no_class_information else ""
    return f"{agreement}L2 relative error {check.relative_error:.3g}{vacuous}"


def _op_name(node: torch.fx.Node) -> str:
    # an overload's __name__ ends in its overload, e.g. ".vec"; its schema names the op
    schema = getattr(node.target, "_schema", None)
    if schema is not None:
        return schema.name.split("::")[-1]
    return getattr(node.target, "__name__", str(node.target))


@contextlib.contextmanager
def _swapped(module: object, name: str, replacement: object) -> Iterator[None]:
    """`module.name` replaced for the duration of one compile: ExecuTorch keeps what fxrewrite reads
    (the partitioner's reasons, each delegate's Vela files) inside calls it makes itself."""
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


@contextlib.contextmanager
def _rejections() -> Iterator[dict[str, str]]:
    """Per op, the partitioner's reason for leaving it on the CPU. ExecuTorch builds its reporter
    inside `partition` and only logs it as a table, so the reporter class is swapped for one that
    keeps what it is told."""
    from executorch.backends.arm.tosa import partitioner
    from executorch.exir.backend.utils import WhyNoPartitionReporter

    reasons: dict[str, str] = {}

    class Recording(WhyNoPartitionReporter):
        def report_reject(self, node: torch.fx.Node, reason: str) -> None:
            super().report_reject(node, reason)
            reasons.setdefault(_op_name(node), " ".join(reason.split()))

    with _swapped(partitioner, "WhyNoPartitionReporter", Recording):
        yield reasons


@contextlib.contextmanager
def _each_delegate_in_its_folder(folder: Path) -> Iterator[None]:
    """Vela writes its CSVs to `<intermediate path>/output`, the same folder for every delegated
    subgraph, so a graph cut in several kept only the last one's numbers; each call gets its own."""
    from executorch.backends.arm.ethosu import backend

    compile_one = backend.vela_compile
    count = itertools.count()

    def into_own_folder(*args: object, intermediate_path: str | None = None, **kwargs: object) -> object:
        own = folder / f"delegate_{next(count)}"
        own.mkdir()
        return _in_a_child_process(compile_one, *args, intermediate_path=str(own), **kwargs)

    with _swapped(backend, "vela_compile", into_own_folder):
        yield


def _in_a_child_process(compile_one: Callable[..., object], *args: object, **kwargs: object) -> object:
    """One Vela compile in a forked child: Vela's C++ core (regor) dies of a segmentation fault on some
    graphs (swin_t's at 224x224 on the U55-128), which would take fxrewrite down with it; a dead
    child is a VelaError instead."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        try:
            return pool.submit(compile_one, *args, **kwargs).result()
        except BrokenProcessPool as exc:
            raise VelaError("Vela crashed compiling the graph ExecuTorch's Arm flow handed it (its process died, "
                            "as Vela's C++ core does on some graphs); nothing was compiled") from exc


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _quantization_check(module: nn.Module, quantized: nn.Module, calibrated: int,
                        held_out: Sequence[tuple[torch.Tensor, ...]]) -> QuantizationCheck | None:
    if not held_out:
        return None
    with torch.no_grad():
        pairs = [(module(*inputs), quantized(*inputs)) for inputs in held_out]
    if not all(isinstance(f, torch.Tensor) and isinstance(q, torch.Tensor) for f, q in pairs):
        return None
    float_out, int8_out = torch.cat([f.flatten(1) for f, _ in pairs]), torch.cat([q.flatten(1) for _, q in pairs])
    # agreement only where the float graph's class scores carry class information (compare.no_class_information)
    scores = all(is_class_scores(f) for f, _ in pairs)
    vacuous = no_class_information(float_out) if scores else ""
    agreement = top1_agreement(int8_out, float_out) if scores and not vacuous else None
    error = l2_relative_error(int8_out, float_out)
    return QuantizationCheck(calibrated, len(held_out), agreement, error, vacuous)


def _host_ops(program: torch.fx.Graph) -> list[HostOp]:
    """The op nodes of a lowered program that run on the host CPU, with their sizes."""

    def numel_and_bytes(value: object) -> tuple[int, int]:
        if isinstance(value, torch.Tensor):
            return value.numel(), value.numel() * value.element_size()
        if isinstance(value, (tuple, list)):  # an op with several results (topk: values and indices)
            parts = [numel_and_bytes(part) for part in value]
            return sum(n for n, _ in parts), sum(b for _, b in parts)
        return 0, 0

    ops = []
    for node in program.nodes:
        if node.op != "call_function" or _op_name(node) in _NO_KERNEL:
            continue
        inputs = [numel_and_bytes(arg.meta.get("val")) for arg in node.all_input_nodes]
        output = numel_and_bytes(node.meta.get("val"))
        ops.append(HostOp(_op_name(node), sum(n for n, _ in inputs), output[0], sum(b for _, b in inputs) + output[1]))
    return ops


def _cpu_ops(host: list[HostOp], reasons: dict[str, str]) -> tuple[CpuOp, ...]:
    """Per op kind the flow left on the CPU (the int8 boundary's conversions aside): count, elements, cycles."""
    kept = [op for op in host if op.op not in BOUNDARY_OPS]
    counts = collections.Counter(op.op for op in kept)
    return tuple(CpuOp(name, count, reasons.get(name, "not partitioned"),
                       sum(op.output_elements for op in kept if op.op == name),
                       host_cycles(op for op in kept if op.op == name))
                 for name, count in counts.most_common())


def _result(folder: Path, accelerator: str, delegated: int, host: list[HostOp],
            reasons: dict[str, str]) -> VelaResult:
    summaries = sorted(folder.rglob("*_summary_*.csv"))
    if not summaries:
        raise VelaError(f"Vela compiled nothing for {accelerator}: every op stayed on the CPU "
                         f"({', '.join(sorted({op.op for op in host})) or 'none'})")
    totals = collections.Counter()
    rows = [row for summary in summaries for row in _read_csv(summary)]
    for row in rows:  # one row per delegated subgraph
        for key in ("cycles_total", "cycles_npu", "inference_time", "sram_memory_used", "off_chip_flash_memory_used",
                    "on_chip_flash_memory_used"):
            totals[key] += float(row[key])
    layers = tuple(VelaLayer(row["Name"], row["Original Operator"], int(float(row["Op Cycles"])),
                             int(float(row["MAC Count"])), float(row["Util% (MAC)"]))
                   for per_layer in sorted(folder.rglob("*_per-layer.csv")) for row in _read_csv(per_layer))
    return VelaResult(
        accelerator=accelerator, system_config=rows[0]["system_config"], memory_mode=rows[0]["memory_mode"],
        cycles_total=int(totals["cycles_total"]), cycles_npu=int(totals["cycles_npu"]),
        inference_ms=totals["inference_time"] * 1e3, sram_kib=totals["sram_memory_used"],
        flash_kib=totals["off_chip_flash_memory_used"] + totals["on_chip_flash_memory_used"],
        delegates=delegated,
        cpu_ops=_cpu_ops(host, reasons), cpu_cycles=host_cycles(host), layers=layers)


def compile_for_ethos_u(module: nn.Module, example_inputs: tuple[torch.Tensor, ...], accelerator: str,
                        calibration: Sequence[tuple[torch.Tensor, ...]] = (), program: Path | None = None,
                        held_out: Sequence[tuple[torch.Tensor, ...]] = ()) -> VelaResult:
    """`module` compiled for `accelerator` (Vela's name, e.g. ethos-u55-128) through ExecuTorch's Arm
    flow, quantized on `calibration` (default: the example inputs), and what Vela reports; with
    `program`, the ExecuTorch program (.pte, the Ethos-U delegate inside) is written there; with
    `held_out` inputs, the int8 graph is compared with `module` on them. A quantized student's
    learned scales are kept (fxrewrite.ship.learned_scales) and compared with ExecuTorch's estimates."""
    require_ethos_u()
    try:
        return _compile(module, example_inputs, accelerator, calibration, program, held_out)
    except FxrewriteError:
        raise
    except Exception as exc:  # noqa: BLE001 - a third-party toolchain's failure, said in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]  # ExecuTorch lists every pass run
        raise VelaError(f"ExecuTorch's Arm backend could not compile the graph for {accelerator}: "
                        f"{type(exc).__name__}: {first}") from exc


def _compile(module: nn.Module, example_inputs: tuple[torch.Tensor, ...], accelerator: str,
             calibration: Sequence[tuple[torch.Tensor, ...]], program: Path | None,
             held_out: Sequence[tuple[torch.Tensor, ...]]) -> VelaResult:
    with _quiet():  # torchao's import warns through torch's logging about its enums being registered twice
        from executorch.backends.arm.ethosu import EthosUCompileSpec, EthosUPartitioner
        from executorch.backends.arm.quantizer import EthosUQuantizer, get_symmetric_quantization_config
        from executorch.exir import to_edge_transform_and_lower
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    started = time.perf_counter()
    with (tempfile.TemporaryDirectory(prefix="fxrewrite-vela-") as folder, _quiet(), _rejections() as reasons,
          _each_delegate_in_its_folder(Path(folder))):
        spec = EthosUCompileSpec(accelerator, extra_flags=["--verbose-performance"])
        spec.dump_intermediate_artifacts_to(folder)
        float_module, learned = without_fake_quantizers(module)
        graph = torch.export.export(float_module, example_inputs).module(check_guards=False)
        quantizer = EthosUQuantizer(spec)
        quantizer.set_global(get_symmetric_quantization_config())
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for inputs in calibration or [example_inputs]:
                prepared(*inputs)
        estimated = None
        if learned:
            estimated = _quantization_check(module, convert_pt2e(copy.deepcopy(prepared)), len(calibration) or 1,
                                            held_out)
        carried = carry_learned_scales(prepared, learned)
        converted = convert_pt2e(prepared)
        check = _quantization_check(module, converted, len(calibration) or 1, held_out)
        quantized = torch.export.export(converted, example_inputs)
        lowered = to_edge_transform_and_lower(quantized, partitioner=[EthosUPartitioner(spec)])
        executed = lowered.exported_program().graph
        delegated = sum(_op_name(n) == "executorch_call_delegate" for n in executed.nodes if n.op == "call_function")
        if program is not None:
            atomic_write_bytes(program, lowered.to_executorch().buffer)
        result = _result(Path(folder), accelerator, delegated, _host_ops(executed), reasons)
        layers = named_after_nodes(result.layers, module) if isinstance(module, torch.fx.GraphModule) else result.layers
        return dataclasses.replace(result, layers=layers, quantization=check, learned_scale_layers=carried,
                                   quantization_estimated=estimated, compile_seconds=time.perf_counter() - started)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Vela prints its whole report to stdout; fxrewrite prints its own summary."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)
