"""Fake quantization as one operator ONNX can receive: `fxrewrite::quantize_dequantize`.

The graph form of a quantized model (fxrewrite.quant) reads each quantized tensor through
`torch.fake_quantize_per_tensor_affine` or `_per_channel_affine`. torch.onnx decomposes both before
translating them and translates only 8-bit grids, so a copy of the graph made for ONNX reads them
through this custom operator instead: torch.export keeps it whole, and `to_onnx_ops` writes it as a
QuantizeLinear/DequantizeLinear pair (opset 21) in the narrowest ONNX integer type holding the grid:
int4/uint4 for grids of up to 4 bits, int8/uint8 up to 8. 2-bit weight grids ({-1, 0, 1}) are
carried in int4: ONNX's 2-bit types need opset 25, and onnxruntime 1.32 fails to load a model with
INT2 zero points (measured; see README). Both forms round half to even, so the pair computes what
the fake quantizer does.
"""

from __future__ import annotations

import torch
from torch import fx

from fxrewrite.errors import UsageError


@torch.library.custom_op("fxrewrite::quantize_dequantize", mutates_args=())
def quantize_dequantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int, qmin: int,
                        qmax: int) -> torch.Tensor:
    """x on its grid: per tensor when `scale` is a scalar, else per slice along `axis`."""
    if scale.dim() == 0:
        return torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero_point), qmin, qmax)
    return torch.fake_quantize_per_channel_affine(x, scale, zero_point.to(torch.int32), axis, qmin, qmax)


@quantize_dequantize.register_fake
def _(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int, qmin: int, qmax: int) -> torch.Tensor:
    return torch.empty_like(x)


QDQ = torch.ops.fxrewrite.quantize_dequantize.default
#: the fake quantizers as a traced graph (torch functions) and an exported one (ATen) calls them
PER_TENSOR = (torch.fake_quantize_per_tensor_affine, torch.ops.aten.fake_quantize_per_tensor_affine.default)
PER_CHANNEL = (torch.fake_quantize_per_channel_affine, torch.ops.aten.fake_quantize_per_channel_affine.default)

#: the ONNX storage types by (signed, bits), with the range each holds
STORAGE = {(True, 4): ("INT4", -8, 7), (False, 4): ("UINT4", 0, 15), (True, 8): ("INT8", -128, 127),
           (False, 8): ("UINT8", 0, 255)}


def storage_of(qmin: int, qmax: int) -> tuple[str, int, int]:
    """The narrowest ONNX integer type whose range holds [qmin, qmax]: (name, low, high)."""
    for (signed, _), (name, low, high) in STORAGE.items():
        if signed == (qmin < 0) and low <= qmin and qmax <= high:
            return name, low, high
    raise UsageError(f"a quantization grid [{qmin}, {qmax}] fits no ONNX integer type of 8 bits or fewer")


def with_quantize_dequantize(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` (changed in place) with every fake quantizer read through QDQ. A tensor computed in the
    graph must use its type's full range: QuantizeLinear saturates to the type, not to a narrower
    grid. Constants (weights, stored on their grid) may use a narrower one, as int4 weights use [-7, 7]."""
    graph = gm.graph
    for index, node in enumerate(list(graph.nodes)):
        if node.target in PER_TENSOR:
            x, scale, zero_point, qmin, qmax = node.args
            gm.register_buffer(f"qdq_{index}_scale", torch.tensor(float(scale)))
            gm.register_buffer(f"qdq_{index}_zero_point", torch.tensor(int(zero_point), dtype=torch.int32))
            with graph.inserting_before(node):
                args = (x, graph.get_attr(f"qdq_{index}_scale"), graph.get_attr(f"qdq_{index}_zero_point"), 0,
                        qmin, qmax)
        elif node.target in PER_CHANNEL:
            x, scale, zero_point, axis, qmin, qmax = node.args
            args = (x, scale, zero_point, axis, qmin, qmax)
        else:
            continue
        _, low, high = storage_of(qmin, qmax)
        if x.op != "get_attr" and (qmin, qmax) != (low, high):
            raise UsageError(f"{node.name} quantizes a computed tensor to [{qmin}, {qmax}], narrower than an ONNX "
                             f"integer type ({low}..{high}): QuantizeLinear would not clamp it to that grid")
        with graph.inserting_before(node):
            replacement = graph.call_function(QDQ, args)
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return gm


def to_onnx_ops(x, scale, zero_point, axis: int, qmin: int, qmax: int):  # noqa: ANN001, ANN201 (onnxscript values)
    """QDQ in ONNX (an onnxscript function for torch.onnx's custom translation table)."""
    from onnxscript import ir
    from onnxscript import opset21 as op

    storage = getattr(ir.DataType, storage_of(qmin, qmax)[0])
    zero = op.Cast(zero_point, to=storage)
    return op.DequantizeLinear(op.QuantizeLinear(x, scale, zero, axis=axis), scale, zero, axis=axis)
