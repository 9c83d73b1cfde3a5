"""The op view: every node of a graph read through one vocabulary, plus the small graph helpers."""

from fxrewrite.ir.graph import annotate_shapes, answered_upward, constant_value, fetch_attr, format_value, tensor_leaves, tensor_shape
from fxrewrite.ir.view import OpView, is_fake_quant, is_quantized_graph, op_view, qualified_name
from fxrewrite.ir.vocabulary import KINDS, STRUCTURAL_KINDS, UNKNOWN, VOCABULARY, OpDef, op_def

__all__ = ["KINDS", "STRUCTURAL_KINDS", "UNKNOWN", "VOCABULARY", "OpDef", "OpView", "annotate_shapes", "answered_upward", "constant_value",
           "fetch_attr", "format_value", "is_fake_quant", "is_quantized_graph", "op_def", "op_view", "qualified_name",
           "tensor_leaves", "tensor_shape"]
