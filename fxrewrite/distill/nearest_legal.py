"""The nearest legal op for an op a target lacks, where one keeps the teacher's structure (APPROXIMATE).

Arch-Net's students keep their teacher's layers and change what the chip cannot run; so does a
teacher form (fxrewrite.distill.teacher_form) where a region has no exact legal form:
- a ReLU-like activation x * g(x) with g rising from 0 to 1 (GELU, SiLU, hardswish, Mish) or a
  smooth ReLU (ELU, SELU, CELU, softplus) becomes ReLU, which agrees with it far from 0;
- a k x k max pool becomes the largest max pool the target runs at the same stride, where that
  gives the same output size (ResNet's 3x3 stride-2 stem pool as archnet's 2x2 stride-2 one);
- a 7x7 stride-2 conv (ResNet's and GoogLeNet's stems) becomes a 3x3 stride-2 conv gathering 3x3
  patches and a 3x3 conv over them (`_as_im2col_and_3x3`), equal but at the far border.
Each substitution changes the maths; training then adapts the layers around it, starting from the
teacher's weights. A gate (sigmoid, hardsigmoid) is not ReLU-like and is left as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx

from fxrewrite.ir import OpView, op_view, tensor_shape
from fxrewrite.rewrite import Decline
from fxrewrite.rewrite.building import conv2d, plain_conv_weights
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


def _strided_7x7(view: OpView) -> bool:
    attrs = view.attrs
    return (attrs["kernel"] == (7, 7) and attrs["stride"] == (2, 2) and attrs["padding"] == (3, 3)
            and attrs["groups"] == 1)


def _as_im2col_and_3x3(gm: fx.GraphModule, node: fx.Node, view: OpView) -> fx.Node | None:
    """A 7x7 stride-2 conv (padding 3) as a 3x3 stride-2 conv copying each input channel's 3x3 patch
    into 9 channels (one-hot kernels, padding 1), then a 3x3 conv over them: the patch at offset t
    read at position q + v - 1 is pixel 2q + 2v + t - 3, so tap u = 2v + t of the 7x7 kernel goes to
    weight [o, (i, t)] at v, and every tap is covered once. Exact inside; where the input size is
    even, the last row and column miss the last pixel (the patches map pads there)."""
    weights = plain_conv_weights(view)
    if isinstance(weights, Decline):
        return None
    kernel, bias = weights
    out_ch, in_ch = kernel.shape[:2]
    patches = torch.zeros(in_ch * 9, in_ch, 3, 3)
    second = torch.zeros(out_ch, in_ch * 9, 3, 3)
    # each tap u of 7 as (t, v) with u = 2v + t, t in 0..2, v in 0..2
    split = {u: (u - 2 * min(u // 2, 2), min(u // 2, 2)) for u in range(7)}
    for i in range(in_ch):
        for ty in range(3):
            for tx in range(3):
                patches[i * 9 + ty * 3 + tx, i, ty, tx] = 1.0
    for uy, (ty, vy) in split.items():
        for ux, (tx, vx) in split.items():
            second[:, [i * 9 + ty * 3 + tx for i in range(in_ch)], vy, vx] = kernel[:, :, uy, ux]
    names = (f"{node.name}_patches", f"{node.name}_mix")
    gm.add_submodule(names[0], conv2d(patches, None, stride=(2, 2), padding=(1, 1)))
    gm.add_submodule(names[1], conv2d(second, bias, padding=(1, 1)))
    return gm.graph.call_module(names[1], (gm.graph.call_module(names[0], (view.inputs[0],)),))


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
            elif view.kind == "conv2d" and _strided_7x7(view):
                replacement = _as_im2col_and_3x3(gm, node, view)
                made.append("conv2d 7x7 stride 2 -> 3x3 stride 2 (patches) + 3x3") if replacement is not None else None
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
