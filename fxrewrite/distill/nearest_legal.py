"""The nearest legal op for an op a target lacks, where one keeps the teacher's structure (APPROXIMATE).

Arch-Net's students keep their teacher's layers and change what the chip cannot run; so does a
teacher form (fxrewrite.distill.students.teacher_form) where a region has no exact legal form:
- a ReLU-like activation x * g(x) with g rising from 0 to 1 (GELU, SiLU, hardswish, Mish) or a
  smooth ReLU (ELU, SELU, CELU, softplus) becomes ReLU, which agrees with it far from 0;
- a k x k max pool becomes the largest max pool the target runs at the same stride, where that
  gives the same output size (ResNet's 3x3 stride-2 stem pool as archnet's 2x2 stride-2 one);
- a 7x7 stride-2 conv (ResNet's and GoogLeNet's stems) becomes a 3x3 stride-2 conv gathering 3x3
  patches and a 3x3 conv over them (`_as_im2col_and_3x3`), equal but at the far border;
- a large depthwise kernel (ConvNeXt's 7x7) becomes r branches of stacked depthwise 3x3 convs fitted
  to it by least squares (the approx-large-kernel pass; kernel error about 1%); a large dense kernel
  is not replaced so (a stack at its output width fits a random 7x7 kernel to 23%, and a student
  started there ends below the generic one);
- a layer norm over the last dim becomes the per-channel affine y_c = a_c x_c + b_c that fits it best
  on the region's recorded inputs (least squares per channel: a_c = cov(x_c, LN(x)_c) / var(x_c),
  b_c = mean(LN(x)_c) - a_c mean(x_c)), an inference batch norm where channels come first: Arch-Net's
  and most NPUs' norm, frozen statistics instead of per-token ones; only where that affine is
  within MAX_NORM_FIT_ERROR of the norm on the inputs (a norm over pooled features, whose scale
  varies per sample, has no near affine), and never for a norm over a whole vector per sample.
Each substitution changes the maths; training then adapts the layers around it, starting from the
teacher's weights. A gate (sigmoid, hardsigmoid) is not ReLU-like and is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import fx
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from fxrewrite.ir import OpView, constant_value, op_view, tensor_shape
from fxrewrite.metrics import l2_relative_error
from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import Decline, RuleSet, apply_rules
from fxrewrite.rewrite.building import conv2d, plain_conv_weights
from fxrewrite.target import Target

#: the recorded inputs a fit reads (a layer norm's affine over 2 samples of vectors would fit them exactly)
FIT_SAMPLES = 64
#: a layer norm becomes its fitted affine only where that reproduces it this closely on the inputs: where
#: the per-sample scale varies more (a norm over pooled features), no affine is near it
MAX_NORM_FIT_ERROR = 0.25
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


class _Recorder(fx.Interpreter):
    """Runs a graph and keeps the first input of the nodes asked for."""

    def __init__(self, gm: fx.GraphModule, wanted: set[fx.Node]):
        super().__init__(gm)
        self.wanted, self.inputs = wanted, {}

    def run_node(self, node: fx.Node):
        if node in self.wanted:
            self.inputs[node] = self.env[node.all_input_nodes[0]]
        return super().run_node(node)


def _fitted_affine(view: OpView, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per channel of the last dim, the scale and shift that best fit the layer norm on `x`, and the
    fit's L2 relative error there (fxrewrite.metrics)."""
    with torch.no_grad():
        y = F.layer_norm(x, view.attrs["normalized_shape"], _constant(view, "weight"), _constant(view, "bias"),
                         view.attrs["eps"])
        xs, ys = x.reshape(-1, x.shape[-1]).double(), y.reshape(-1, y.shape[-1]).double()
        x_mean, y_mean = xs.mean(0), ys.mean(0)
        variance = ((xs - x_mean) ** 2).mean(0)
        scale = ((xs - x_mean) * (ys - y_mean)).mean(0) / variance.clamp_min(1e-12)
        shift = y_mean - scale * x_mean
        error = l2_relative_error(xs * scale + shift, ys)
        return scale.float(), shift.float(), error


def _constant(view: OpView, name: str) -> torch.Tensor | None:
    value = view.args.get(name)
    return None if value is None else constant_value(value)


def _as_affine(gm: fx.GraphModule, node: fx.Node, view: OpView, scale: torch.Tensor, shift: torch.Tensor) -> fx.Node:
    made = []
    for kind, value in (("scale", scale), ("shift", shift)):
        name = f"{node.name}_{kind}"
        gm.register_buffer(name, value)
        made.append(gm.graph.get_attr(name))
        made[-1].meta["tensor_meta"] = _extract_tensor_metadata(value)
    scaled = gm.graph.call_function(torch.mul, (view.inputs[0], made[0]))
    scaled.meta = dict(node.meta)
    return gm.graph.call_function(torch.add, (scaled, made[1]))


def _last_dim_norm(view: OpView) -> bool:
    """A layer norm over the last dim of maps or tokens; over a whole vector per sample (a ViT's
    class token before its head) it rescales each sample by its own spread, which a fixed affine
    cannot follow however close its fit on the recorded inputs."""
    shape = tensor_shape(view.node)
    return (view.kind == "layer_norm" and len(view.attrs.get("normalized_shape", ())) == 1
            and shape is not None and len(shape) > 2)


def nearest_legal(gm: fx.GraphModule, target: Target, inputs: Sequence[torch.Tensor]) -> list[str]:
    """Replace, in place, each op `target` rejects that has a nearest legal op (module docstring),
    fitting what is fitted on the first FIT_SAMPLES of `inputs` (of `gm`); returns the substitutions
    made, in words."""
    made: list[str] = []
    norms = {n for n in gm.graph.nodes if n.op != "get_attr" and not target.verdict(n).legal and
             _last_dim_norm(op_view(n))}
    recorder = _Recorder(gm, norms)
    if norms:
        with torch.no_grad():
            recorder.run(*(t[:FIT_SAMPLES].detach().cpu() for t in inputs))
    for node in list(gm.graph.nodes):
        if node.op in ("placeholder", "output", "get_attr") or target.verdict(node).legal:
            continue
        view = op_view(node)
        replacement = None
        with gm.graph.inserting_before(node):
            if view.kind in RELU_LIKE and _relu_runs(target):
                replacement = gm.graph.call_function(torch.relu, (view.inputs[0],))
                made.append(f"{view.kind} -> relu")
            elif node in norms:
                scale, shift, error = _fitted_affine(view, recorder.inputs[node])
                if error <= MAX_NORM_FIT_ERROR:
                    replacement = _as_affine(gm, node, view, scale, shift)
                    made.append(f"layer_norm -> per-channel affine fitted on the inputs (relative error {error:.2f})")
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
    depthwise = RuleSet(tuple(r for r in registered_passes()["approx-large-kernel"].rules.rules
                              if r.name == "large-depthwise"))
    stacks = apply_rules(gm, depthwise, target=target, root_filter=lambda n: not target.verdict(n).legal)
    made += [f"conv2d {note.split(': APPROXIMATE ')[-1].split(', MACs')[0]}" for note in stacks.notes]
    if made:
        gm.graph.eliminate_dead_code()
        gm.recompile()
    return made
