"""ONNX op types seen through fxrewrite's op vocabulary, and the check that an ONNX graph holds only
what a target runs.

torch.onnx writes each vocabulary op as one ONNX node or as a few (a linear layer on tokens is a
MatMul and an Add); this reads them back. Shape arithmetic on int64 tensors (Shape, Gather,
Concat, ... of sizes, as a free batch dimension needs) computes no activations and is always
allowed, as `shape` nodes are in the torch graph. Attribute limits (kernel sizes, strides,
channels) are not checked again here: `fxrewrite check` verified them on the graph exported.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ONNX op types with one counterpart in the vocabulary
KINDS = {
    "Conv": "conv2d", "ConvTranspose": "conv_transpose2d", "Gemm": "linear", "Relu": "relu", "Sigmoid": "sigmoid",
    "Tanh": "tanh", "Exp": "exp", "Erf": "erf", "Softmax": "softmax", "HardSwish": "hardswish",
    "HardSigmoid": "hardsigmoid", "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Reciprocal": "reciprocal",
    "Concat": "cat", "Split": "split", "Slice": "slice", "Transpose": "permute", "MaxPool": "max_pool2d",
    "AveragePool": "avg_pool2d", "GlobalAveragePool": "adaptive_avg_pool2d", "ReduceMean": "mean",
    "ReduceSum": "sum", "ReduceMax": "amax", "BatchNormalization": "batch_norm", "Pad": "pad", "Cast": "cast",
    "OneHot": "one_hot", "Expand": "expand", "Flatten": "flatten", "Einsum": "einsum", "Resize": "upsample",
    "DepthToSpace": "pixel_shuffle",
}
#: what moves no data or only carries quantization
FREE = {"Constant", "Identity", "QuantizeLinear", "DequantizeLinear"}
#: what computes sizes when every input is a size
SIZE_OPS = {"Shape", "Gather", "Concat", "Unsqueeze", "Squeeze", "Slice", "Cast", "Add", "Sub", "Mul", "Div",
            "Reshape", "Range", "Equal", "Where", "ConstantOfShape", "Max", "Min"}


@dataclass(frozen=True)
class OnnxNode:
    name: str
    op_type: str
    kind: str | None  # the vocabulary kind, "shape" for size arithmetic, None for no counterpart
    reason: str = ""  # why it is refused ("" when it is not)


def onnx_kinds(model) -> list[OnnxNode]:  # noqa: ANN001 (an onnx.ModelProto)
    """Each node of `model`'s main graph with its vocabulary kind."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    constants = {i.name for i in graph.initializer}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.input, *graph.output]
             if v.type.tensor_type.HasField("shape")}
    sizes: set[str] = set()  # int64 values computed from sizes and constants alone
    linear_outputs: set[str] = set()  # products of a MatMul by a weight, to which a bias Add belongs
    found = []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Shape" or (node.op_type in SIZE_OPS and inputs and all(
                i in sizes or i in constants for i in inputs) and node.op_type != "Reshape"):
            sizes.update(node.output)
            found.append(OnnxNode(node.name, node.op_type, "shape"))
            continue
        if node.op_type == "Constant":
            constants.update(node.output)
        if node.op_type in FREE:
            if node.op_type == "DequantizeLinear" and all(i in constants for i in inputs):
                constants.update(node.output)  # a weight on its grid
            found.append(OnnxNode(node.name, node.op_type, "constant" if node.op_type == "Constant" else "quantize"))
            continue
        kind = _kind(node, inputs, constants, ranks, linear_outputs)
        if kind == "linear":
            linear_outputs.update(node.output)
        found.append(OnnxNode(node.name, node.op_type, kind,
                              "" if kind else f"ONNX op type {node.op_type} has no counterpart in the op vocabulary"))
    return found


def _kind(node, inputs: list[str], constants: set[str], ranks: dict[str, int],  # noqa: ANN001 (onnx.NodeProto)
          linear_outputs: set[str]) -> str | None:
    if node.op_type == "MatMul":
        # a layer's weight is a constant operand: torch.onnx writes linear on more than two dims so
        return "linear" if inputs[1] in constants else "matmul"
    if node.op_type == "Add" and len(inputs) == 2 and inputs[0] in linear_outputs and inputs[1] in constants:
        return "linear"  # its bias
    if node.op_type == "Reshape":
        # torch.flatten(x, 1) is written as a Reshape to two dims
        return "flatten" if ranks.get(node.output[0]) == 2 else "reshape"
    if node.op_type == "Conv" and ranks.get(inputs[0]) == 3:
        return "conv1d"
    return KINDS.get(node.op_type)


def refusals(model, target) -> list[OnnxNode]:  # noqa: ANN001 (onnx.ModelProto, fxrewrite Target)
    """The nodes of `model` that `target` cannot run, each with its reason."""
    refused = []
    for node in onnx_kinds(model):
        if node.reason:
            refused.append(node)
        elif node.kind not in ("shape", "constant", "quantize") and not (target.allow_all_ops or node.kind in target.ops):
            refused.append(OnnxNode(node.name, node.op_type, node.kind,
                                    f"{node.op_type} is the vocabulary's {node.kind}, which target {target.name} "
                                    "does not declare"))
    return refused
