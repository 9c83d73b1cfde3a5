"""Shipping a lowered graph to a vendor's toolchain: ONNX with the target's quantization as Q/DQ
pairs, checked against the target's ops and against onnxruntime (needs the `onnx` extra)."""

from fxrewrite.ship.onnx_file import OnnxCheck, require_onnx, write_onnx
from fxrewrite.ship.onnx_ops import OnnxNode, onnx_kinds, refusals

__all__ = ["OnnxCheck", "OnnxNode", "onnx_kinds", "refusals", "require_onnx", "write_onnx"]
