"""The nearest legal op for an op a target lacks, where one keeps the teacher's structure (APPROXIMATE).

Arch-Net's students keep their teacher's layers and change what the chip cannot run; so does a
teacher form (fxrewrite.distill.teacher_form) where a region has no exact legal form:
- a ReLU-like activation x * g(x) with g rising from 0 to 1 (GELU, SiLU, hardswish, Mish) or a
  smooth ReLU (ELU, SELU, CELU, softplus) becomes ReLU, which agrees with it far from 0;
- a k x k max pool becomes the largest max pool the target runs at the same stride, where that
  gives the same output size (ResNet's 3x3 stride-2 stem pool as archnet's 2x2 stride-2 one).
Each substitution changes the maths; training then adapts the layers around it, starting from the
teacher's weights. A gate (sigmoid, hardsigmoid) is not ReLU-like and is left as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx

from fxrewrite.ir import op_view, tensor_shape
from fxrewrite.target import Target

RELU_LIKE = frozenset({"gelu", "silu", "hardswish", "mish", "elu", "selu", "celu", "softplus"})


def _relu_runs(target: Target) -> bool:
    return "relu" in target.ops or target.allow_all_ops


def _pool_kernel(target: Target, stride: tuple[int, int]) -> int | None:
    """The largest square max-pool kernel the target declares at this stride, or None."""
    kernels = target.limit("max_pool2d", "kernels")
    strides = target.limit("max_pool2d", "strides")
    if not kernels or (strides and stride[0] not in strides) or stride[0] != stride[1]:
        return None
    return max((h for h, w in kernels if h == w), default=None)


def nearest_legal(gm: fx.GraphModule, target: Target) -> list[str]:
    """Replace, in place, each op `target` rejects that has a nearest legal op (module docstring);
    returns the substitutions made, in words."""
    made: list[str] = []
    for node in list(gm.graph.nodes):
        if node.op in ("placeholder", "output", "get_attr") or target.verdict(node).legal:
            continue
        view = op_view(node)
        replacement = None
        with gm.graph.inserting_before(node):
            if view.kind in RELU_LIKE and _relu_runs(target):
                replacement = gm.graph.call_function(torch.relu, (view.inputs[0],))
                made.append(f"{view.kind} -> relu")
            elif view.kind == "max_pool2d":
                kernel = _pool_kernel(target, tuple(view.attrs["stride"]))
                shape, source = tensor_shape(node), tensor_shape(view.inputs[0])
                stride = view.attrs["stride"][0]
                if kernel and shape and source and all((n - kernel) // stride + 1 == m
                                                       for n, m in zip(source[2:], shape[2:])):
                    replacement = gm.graph.call_function(F.max_pool2d, (view.inputs[0], kernel, stride))
                    made.append(f"max_pool2d {view.attrs['kernel'][0]}x{view.attrs['kernel'][1]} -> {kernel}x{kernel}")
        if replacement is not None:
            replacement.meta = dict(node.meta)
            node.replace_all_uses_with(replacement)
            gm.graph.erase_node(node)
    if made:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return made
