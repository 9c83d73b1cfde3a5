"""What the ops a chip's flow leaves on its host CPU cost, estimated: ExecuTorch's Arm flow runs what
the Ethos-U cannot on the Cortex-M beside it (`[performance] host_cpu = "cortex-m55"` in a target
file). No Cortex-M simulator is installable here, so these figures are not measured by fxrewrite.

The model: an op on the CPU costs `CYCLES_PER_ELEMENT[op]` cycles per element of its output, plus
the transfer of its inputs and output through memory at `TRANSFER_CYCLES_PER_BYTE`, on a Cortex-M55
clocked as the NPU (Corstone-300 runs both from one clock). The int8 program's quantize and
dequantize ops, at its boundary and around every CPU op, are counted the same way.

Sources: quantize_per_tensor measured 1,365,831 cycles on 1x3x224x224 (9.1 cycles per element) on
an Alif E8's Cortex-M55 (pytorch/executorch#17651, MobileNetV2 with the Cortex-M backend);
dequantize is taken to cost the same. The portable kernels ExecuTorch registers for the rest run
scalar float code; their figures are fxrewrite's estimate from the arithmetic per output element
(loads, multiply-adds and index arithmetic at about one per cycle), stated so a user can replace
them with a board's measurements: bilinear resizing 4 loads, 4 multiply-adds and the source index
per output (~24), average pooling k^2 loads and adds and a divide (~2 k^2 + 8 for the window it
reads, counted by the op's input elements per output), selection and gathers a load and a store
(~4), comparisons and elementwise ops ~4, anything else 8.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from fxrewrite.ir import OpView

#: the host CPUs a target file may name
HOST_CPUS = ("cortex-m55",)

#: cycles per output element on the host CPU, by the op's ATen name
CYCLES_PER_ELEMENT: dict[str, float] = {
    "quantize_per_tensor": 9.1,
    "dequantize_per_tensor": 9.1,
    "upsample_bilinear2d": 24.0,
    "upsample_nearest2d": 4.0,
    "where": 4.0,
    "index_select": 4.0,
    "index": 4.0,
    "gather": 4.0,
    "gt": 4.0, "ge": 4.0, "lt": 4.0, "le": 4.0, "eq": 4.0, "ne": 4.0,
}
#: ops whose cost grows with the input window each output reads (average pooling: per input element)
CYCLES_PER_INPUT_ELEMENT: dict[str, float] = {"avg_pool2d": 2.0, "max_pool2d": 2.0}
DEFAULT_CYCLES_PER_ELEMENT = 8.0
#: a 32-bit bus moving one word a cycle
TRANSFER_CYCLES_PER_BYTE = 0.25


@dataclass(frozen=True)
class HostOp:
    """One op node the program runs on the CPU: its ATen name and tensor sizes."""

    op: str
    input_elements: int
    output_elements: int
    #: bytes it reads and writes (float between dequantize and quantize, int8 around them)
    moved_bytes: int


def host_op_cycles(op: HostOp) -> float:
    """Estimated cycles of one CPU op, compute and transfer."""
    if op.op in CYCLES_PER_INPUT_ELEMENT:
        compute = CYCLES_PER_INPUT_ELEMENT[op.op] * op.input_elements + 8.0 * op.output_elements
    else:
        compute = CYCLES_PER_ELEMENT.get(op.op, DEFAULT_CYCLES_PER_ELEMENT) * op.output_elements
    return compute + TRANSFER_CYCLES_PER_BYTE * op.moved_bytes


def host_cycles(ops: Iterable[HostOp]) -> int:
    """Estimated cycles of every CPU op of a program."""
    return round(sum(host_op_cycles(op) for op in ops))


def _aten_name(view: OpView) -> str:
    if view.kind == "upsample":
        return f"upsample_{view.attrs['mode']}2d"
    return view.kind


def host_node_cycles(view: OpView) -> float:
    """Estimated cycles of one graph node run on the host CPU between int8 NPU segments: its kernel
    on float values, a dequantize of each input and a quantize of its output."""
    inputs = sum(math.prod(shape) for shape in view.input_shapes)
    output = math.prod(view.output_shape) if view.output_shape is not None else 0
    kernel = HostOp(_aten_name(view), inputs, output, 4 * (inputs + output))
    conversions = [HostOp("dequantize_per_tensor", inputs, inputs, 5 * inputs),
                   HostOp("quantize_per_tensor", output, output, 5 * output)]
    return host_op_cycles(kernel) + sum(map(host_op_cycles, conversions))
