"""Writing a lowered graph as ONNX with torch.onnx, checked against the target and onnxruntime.

torch.onnx (its torch.export-based exporter, with onnxscript) writes the file; fxrewrite adds the
Q/DQ translation of its fake quantizers (fxrewrite.ship.qdq), the op check (fxrewrite.ship.onnx_ops)
and a comparison with onnxruntime on fresh random inputs at another batch size than the export's,
so that the free batch dimension is exercised. Float graphs must agree to a relative 1e-5 of the
output's largest magnitude; quantized graphs are compared where they quantize activations, in
steps of each tensor's scale: float rounding differs between the two runtimes by a few ulps, so a
value on a rounding boundary may land one step away, and no more than one step is allowed. The
file is written only when both checks pass.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import fx

from fxrewrite.errors import OnnxRefusal, UsageError, VerificationError
from fxrewrite.files import atomic_write_bytes
from fxrewrite.frontend.batch import at_batch, batch_dims
from fxrewrite.frontend.capture import quiet_torch
from fxrewrite.metrics import relative_error
from fxrewrite.ir import tensor_leaves
from fxrewrite.ship.onnx_ops import refusals
from fxrewrite.ship.qdq import QDQ, to_onnx_ops, with_quantize_dequantize
from fxrewrite.target import Target

OPSET = 21
FLOAT_TOLERANCE = 1e-5
#: quantization steps a quantized activation may differ by (see the module docstring)
STEP_TOLERANCE = 1.001  # one step, and the rounding of the difference itself
#: the batch size of the comparison inputs (the example inputs are usually batch 1)
CHECK_BATCH = 3
PACKAGES = ("onnx", "onnxscript", "onnxruntime")


@dataclass(frozen=True)
class OnnxCheck:
    """What was written and how closely onnxruntime computes what torch does."""

    path: Path
    op_types: dict[str, int]
    max_relative_error: float  # of the outputs
    quantized_tensors: int  # activations compared in quantization steps
    max_steps: float  # largest difference at one of them, in steps of its scale
    batch_note: str = ""  # "fixed at N" where torch.export could not keep the batch free

    def describe(self) -> str:
        nodes = ", ".join(f"{n} {t}" for t, n in sorted(self.op_types.items(), key=lambda item: -item[1]))
        quantized = (f"; at {self.quantized_tensors} quantized activations at most {self.max_steps:.3g} "
                     "quantization steps apart" if self.quantized_tensors else "")
        batch = f"; batch {self.batch_note}" if self.batch_note else ""
        return (f"{self.path}: opset {OPSET}, {nodes}{batch}; onnxruntime vs torch: output relative error "
                f"{self.max_relative_error:.3g}{quantized}")

    def to_dict(self) -> dict:
        return {"path": str(self.path), "opset": OPSET, "op_types": self.op_types,
                "max_relative_error": self.max_relative_error, "quantized_tensors": self.quantized_tensors,
                "max_steps": self.max_steps, "batch": self.batch_note or "free"}


def require_onnx() -> None:
    """Refuse, before any work, when the optional ONNX packages are missing."""
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise UsageError(f"writing ONNX needs {', '.join(missing)}: install fxrewrite's onnx extra "
                         "(pip install 'fxrewrite[onnx]', or pip install onnx onnxscript onnxruntime)")


def write_onnx(module: fx.GraphModule | torch.export.ExportedProgram, example_inputs: tuple[torch.Tensor, ...],
               path: str | Path, target: Target | None = None, seed: int = 0) -> OnnxCheck:
    """Write `module` to `path` as ONNX with a free batch dimension (see the module docstring);
    with `target`, refuse any node it does not run (without, the ops are not checked: a graph with
    nodes left for distillation is written as it is, as its .pt2 would be)."""
    require_onnx()
    import onnx

    graph_module = module.module() if isinstance(module, torch.export.ExportedProgram) else module
    program, batch_free = _export(with_quantize_dequantize(copy.deepcopy(graph_module)), tuple(example_inputs))
    try:
        with quiet_torch():
            model = torch.onnx.export(program, dynamo=True, custom_translation_table={QDQ: to_onnx_ops},
                                      opset_version=OPSET, verbose=False).model_proto
    except Exception as exc:  # noqa: BLE001 - the exporter's own failure, said in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise OnnxRefusal(f"torch.onnx could not write the graph ({type(exc).__name__}: {first}); nothing was "
                          f"written to {path}") from exc
    _name_batch(model)
    refused = refusals(model, target) if target is not None else []
    if refused:
        raise OnnxRefusal(f"the ONNX form holds {len(refused)} node(s) target {target.name} does not run, so "
                          f"nothing was written: " + "; ".join(f"{n.name}: {n.reason}" for n in refused[:5]))
    data = model.SerializeToString()
    batch = CHECK_BATCH if batch_free else len(example_inputs[0])
    output_error, tensors, steps = _compare(data, program, example_inputs, batch, seed)
    if (output_error > FLOAT_TOLERANCE and not tensors) or steps > STEP_TOLERANCE:
        raise VerificationError(f"onnxruntime computes the exported graph differently from torch (output relative "
                                f"error {output_error:.3g}, quantized activations {steps:.3g} steps apart); "
                                f"nothing written to {path}")
    op_types: dict[str, int] = {}
    for node in onnx.load_from_string(data).graph.node:
        op_types[node.op_type] = op_types.get(node.op_type, 0) + 1
    return OnnxCheck(atomic_write_bytes(path, data), op_types, output_error, tensors, steps,
                     "" if batch_free else f"fixed at {batch}")


def _export(gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.export.ExportedProgram, bool]:
    """The program with its batch free where torch.export can keep it so (as fxrewrite.export does),
    else at the example's batch size; and whether the batch is free."""
    with quiet_torch(), torch.no_grad():
        try:
            return torch.export.export(gm, at_batch(inputs, 2), dynamic_shapes=batch_dims(inputs), strict=False), True
        except Exception:  # noqa: BLE001 - any failure here means: keep the example's batch
            return torch.export.export(gm, inputs, strict=False), False


def _name_batch(model) -> None:  # noqa: ANN001 (onnx.ModelProto)
    """Call the inputs' free first dimension `batch` (torch.export names it after a symbol, s77)."""
    graph = model.graph
    symbols = {i.type.tensor_type.shape.dim[0].dim_param for i in graph.input if i.type.tensor_type.shape.dim}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param and dim.dim_param in symbols:
                dim.dim_param = "batch"


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[str, object] = {}

    def run_node(self, node: fx.Node) -> object:
        value = super().run_node(node)
        self.values[node.name] = value
        return value


def _compare(data: bytes, program: torch.export.ExportedProgram, example_inputs: tuple[torch.Tensor, ...],
             batch: int, seed: int) -> tuple[float, int, float]:
    """(output relative error, quantized activations compared, largest difference in steps) of
    onnxruntime against torch on fresh inputs."""
    import onnx
    import onnxruntime

    generator = torch.Generator().manual_seed(seed)
    inputs = tuple(torch.randn(at_batch((x,), batch)[0].shape, generator=generator, dtype=x.dtype)
                   if x.is_floating_point() else at_batch((x,), batch)[0] for x in example_inputs)
    gm = program.module()
    recorder = _Recorder(gm)
    with torch.no_grad():
        expected = tensor_leaves(recorder.run(*inputs))
    quantizers = {n.name: n for n in gm.graph.nodes if n.target is QDQ and n.args[0].op != "get_attr"}
    model = onnx.load_from_string(data)
    produced = {o for node in model.graph.node for o in node.output}
    watched = [name for name in quantizers if name in produced]
    outputs = [o.name for o in model.graph.output]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in watched)
    options = onnxruntime.SessionOptions()
    # the file's own meaning: onnxruntime's fused integer kernels (QLinearConv) accumulate u8 x s8
    # products in 16 bits on CPUs without VNNI and can saturate, which a chip's toolchain does not
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    results = dict(zip([*outputs, *watched], session.run(None, feeds)))
    output_error = max((relative_error(torch.from_numpy(results[name]), want)
                        for name, want in zip(outputs, expected)), default=0.0)
    steps = 0.0
    for name in watched:
        scale = float(recorder.values[quantizers[name].args[1].name])
        difference = (torch.from_numpy(results[name]) - recorder.values[name]).abs().max().item()
        steps = max(steps, difference / scale)
    return output_error, len(watched), steps
