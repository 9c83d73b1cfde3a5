"""The canonical op vocabulary: every fx node, whatever its form, seen as one `OpView`.

A module call (`nn.Conv2d`), a functional call (`F.conv2d`, `torch.conv2d`), a tensor method
(`x.add(y)`) and an ATen op (`aten.conv2d.default`) of the same op produce the same kind and the
same normalized attributes. `VOCABULARY` is the only table: to teach fxrewrite an op, add an
`OpDef` there.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn

aten = torch.ops.aten

UNKNOWN = "unknown"
#: Kinds that never run on the chip: graph plumbing, shape arithmetic and compile-time constants.
STRUCTURAL_KINDS = frozenset({"input", "output", "constant", "shape", "assert", "getitem"})


@dataclass(frozen=True)
class OpView:
    """One node seen through the vocabulary."""

    kind: str
    attrs: Mapping[str, Any]
    inputs: tuple[fx.Node, ...]
    node: fx.Node
    source: str
    #: the node's arguments bound to the canonical signature (module forms: the module's parameters)
    args: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def structural(self) -> bool:
        return self.kind in STRUCTURAL_KINDS

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(s for s in (tensor_shape(n) for n in self.inputs) if s is not None)

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        return tensor_shape(self.node)

    def describe(self) -> str:
        """Key attributes in words, e.g. ``kernel=7x7 stride=1x1 grouping=depthwise``; defaults left out."""
        return " ".join(f"{k}={format_value(v)}" for k, v in self.attrs.items() if not _is_default(k, v, self.attrs))


def _is_default(key: str, value: Any, attrs: Mapping[str, Any]) -> bool:
    if key == "dilation":
        return all(d == 1 for d in value)
    if key == "groups":
        return attrs.get("grouping") != "grouped"
    return (key, value) in (("padding_mode", "zeros"), ("ceil_mode", False), ("count_include_pad", True))


def format_value(value: Any) -> str:
    if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
        return "x".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def tensor_shape(value: Any) -> tuple[int, ...] | None:
    """Shape of a tensor, or of the tensor a node produces (from ShapeProp or export metadata)."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if not isinstance(value, fx.Node):
        return None
    meta = value.meta.get("tensor_meta")
    if meta is not None and hasattr(meta, "shape"):
        return tuple(int(d) for d in meta.shape)
    val = value.meta.get("val")
    if isinstance(val, torch.Tensor):
        return tuple(int(d) for d in val.shape)
    if value.op == "get_attr" and value.graph.owning_module is not None:
        attr = _fetch_attr(value.graph.owning_module, str(value.target))
        if isinstance(attr, torch.Tensor):
            return tuple(attr.shape)
    return None


def _fetch_attr(root: nn.Module, path: str) -> Any:
    target: Any = root
    for name in path.split("."):
        target = getattr(target, name, None)
    return target


def _is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (isinstance(value, fx.Node) and tensor_shape(value) is not None)


def _ntuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value) if len(value) == n else tuple(int(value[0]) for _ in range(n))
    return (int(value),) * n


def _norm_dim(dim: int, rank: int | None) -> int:
    return dim % rank if rank and dim < 0 else int(dim)


def _rank(value: Any) -> int | None:
    shape = tensor_shape(value)
    return len(shape) if shape is not None else None


# --- attribute normalizers: bound arguments (by canonical name) -> attrs -------------------------


def _conv_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    weight = tensor_shape(b["weight"])
    n = len(weight) - 2
    kernel, dilation = tuple(weight[2:]), _ntuple(b["dilation"], n)
    padding = b["padding"]
    if padding == "valid":
        padding = (0,) * n
    elif padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        padding = tuple(t // 2 for t in totals) if all(t % 2 == 0 for t in totals) else "same"
    else:
        padding = _ntuple(padding, n)
    groups = int(b["groups"])
    in_ch, out_ch = weight[1] * groups, weight[0]
    grouping = "dense" if groups == 1 else "depthwise" if groups == in_ch else "grouped"
    return {
        "kernel": kernel,
        "stride": _ntuple(b["stride"], n),
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
        "grouping": grouping,
        "in_ch": in_ch,
        "out_ch": out_ch,
        "bias": b["bias"] is not None,
        "padding_mode": b.get("padding_mode", "zeros"),
    }


def _conv_transpose_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    weight = tensor_shape(b["weight"])
    n, groups = len(weight) - 2, int(b["groups"])
    return {
        "kernel": tuple(weight[2:]),
        "stride": _ntuple(b["stride"], n),
        "padding": _ntuple(b["padding"], n),
        "output_padding": _ntuple(b["output_padding"], n),
        "dilation": _ntuple(b["dilation"], n),
        "groups": groups,
        "in_ch": weight[0],
        "out_ch": weight[1] * groups,
        "bias": b["bias"] is not None,
    }


def _linear_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    out_features, in_features = tensor_shape(b["weight"])
    return {"in_features": in_features, "out_features": out_features, "bias": b["bias"] is not None}


def _norm_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    attrs = {key: b[key] for key in ("num_groups", "normalized_shape") if key in b}
    if "normalized_shape" in attrs:
        attrs["normalized_shape"] = tuple(_ntuple(attrs["normalized_shape"], len(_as_list(attrs["normalized_shape"]))))
    shape = tensor_shape(b["input"])
    if shape is not None and len(shape) > 1 and "normalized_shape" not in attrs:
        attrs["channels"] = shape[1]
    attrs["eps"] = float(b["eps"])
    attrs["affine"] = b["weight"] is not None
    return attrs


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple, torch.Size)) else [value]


def _pool_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    kernel = _ntuple(b["kernel_size"], 2)
    stride = b.get("stride")
    attrs = {
        "kernel": kernel,
        "stride": kernel if stride is None or stride == [] or stride == () else _ntuple(stride, 2),
        "padding": _ntuple(b.get("padding", 0), 2),
        "ceil_mode": bool(b.get("ceil_mode", False)),
    }
    if "dilation" in b:
        attrs["dilation"] = _ntuple(b["dilation"], 2)
    if "count_include_pad" in b:
        attrs["count_include_pad"] = bool(b["count_include_pad"])
    return attrs


def _adaptive_pool_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    size = b["output_size"]
    in_shape = tensor_shape(b["input"]) or ()
    spatial = tuple(in_shape[-2:]) if len(in_shape) >= 2 else (None, None)
    size = _as_list(size) * (2 if not isinstance(size, (list, tuple)) else 1)
    return {"output_size": tuple(int(s if s is not None else d) for s, d in zip(size, spatial))}


def _binary_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    left, right = b["input"], b["other"]
    tensors = [v for v in (left, right) if _is_tensor(v)]
    shapes = {tensor_shape(v) for v in tensors}
    attrs: dict[str, Any] = {"operands": "tensor" if len(tensors) == 2 else "scalar", "broadcast": len(shapes) > 1}
    if b.get("alpha", 1) != 1:
        attrs["alpha"] = b["alpha"]
    return attrs


def _dim_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"dim": _norm_dim(int(b["dim"]), _rank(b["input"]))} if b.get("dim") is not None else {}


def _cat_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    tensors = list(b["tensors"])
    return {"dim": _norm_dim(int(b["dim"]), _rank(tensors[0])), "num_inputs": len(tensors)}


def _mean_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    rank = _rank(b["input"])
    dims = b.get("dim")
    dims = tuple(range(rank or 0)) if dims is None else tuple(sorted(_norm_dim(d, rank) for d in _as_list(dims)))
    return {"dims": dims, "keepdim": bool(b.get("keepdim", False))}


def _flatten_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    rank = _rank(b["input"])
    return {"start_dim": _norm_dim(int(b["start_dim"]), rank), "end_dim": _norm_dim(int(b["end_dim"]), rank)}


def _varargs(b: Mapping[str, Any]) -> tuple[Any, ...]:
    rest = tuple(b.get("rest", ()))
    return tuple(rest[0]) if len(rest) == 1 and isinstance(rest[0], (list, tuple, torch.Size)) else rest


def _permute_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    rank = _rank(b["input"])
    dims = _varargs(b) or tuple(b.get("kwargs", {}).get("dims", ()))
    return {"dims": tuple(_norm_dim(int(d), rank) for d in dims)}


def _transpose_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    rank = _rank(b["input"])
    return {"dims": tuple(sorted(_norm_dim(int(b[k]), rank) for k in ("dim0", "dim1")))}


def _shape_change_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"from_shape": tensor_shape(b["input"])}


def _embedding_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    num, dim = tensor_shape(b["weight"])
    return {"num_embeddings": num, "embedding_dim": dim}


def _sdpa_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"causal": bool(b.get("is_causal", False)), "masked": b.get("attn_mask") is not None}


def _dropout_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"p": float(b.get("p", 0.5))}


def _pad_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"pad": tuple(int(p) for p in b["pad"]), "mode": b.get("mode", "constant")}


def _gelu_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"approximate": b.get("approximate", "none")}


def _hardtanh_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"min_val": float(b["min_val"]), "max_val": float(b["max_val"])}


def _mha_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {key: b[key] for key in ("embed_dim", "num_heads", "batch_first")}


def _fake_quant_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    source = b["input"]
    return {
        "qmin": int(b["quant_min"]),
        "qmax": int(b["quant_max"]),
        "granularity": "per-channel" if "axis" in b else "per-tensor",
        "role": "weights" if isinstance(source, fx.Node) and source.op == "get_attr" else "activations",
    }


def _no_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {}


# --- canonical signatures: each form's arguments bind to these names ---------------------------
# Hand-written because torch.fx.operator_schemas covers neither tensor methods nor every builtin.


def _sig_unary(input, *rest, **kwargs): ...
def _sig_binary(input, other, alpha=1): ...
def _sig_conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1): ...
def _sig_conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1): ...
def _sig_linear(input, weight, bias=None): ...
def _sig_batch_norm_f(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5): ...
def _sig_batch_norm_aten(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled=True): ...
def _sig_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True): ...
def _sig_group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True): ...
def _sig_max_pool(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False): ...
def _sig_avg_pool(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None): ...
def _sig_adaptive_pool(input, output_size): ...
def _sig_dim(input, dim=None, *rest, **kwargs): ...
def _sig_cat(tensors, dim=0): ...
def _sig_mean(input, dim=None, keepdim=False, *, dtype=None): ...
def _sig_flatten(input, start_dim=0, end_dim=-1): ...
def _sig_transpose(input, dim0, dim1): ...
def _sig_embedding_f(input, weight, *rest, **kwargs): ...
def _sig_embedding_aten(weight, input, *rest, **kwargs): ...
def _sig_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False): ...
def _sig_dropout(input, p=0.5, training=False, *rest, **kwargs): ...
def _sig_stochastic_depth(input, p, mode, training=True): ...
def _sig_pad(input, pad, mode="constant", value=None): ...
def _sig_gelu(input, approximate="none"): ...
def _sig_hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False): ...
def _sig_matmul(input, other): ...
def _sig_fake_quant_tensor(input, scale, zero_point, quant_min, quant_max): ...
def _sig_fake_quant_channel(input, scale, zero_point, axis, quant_min, quant_max): ...


# --- module forms: a module's attributes as bound arguments -------------------------------------


def _conv_module(m: nn.Module) -> dict[str, Any]:
    return {"weight": m.weight, "bias": m.bias, "stride": m.stride, "padding": m.padding,
            "dilation": m.dilation, "groups": m.groups, "padding_mode": m.padding_mode}


def _conv_transpose_module(m: nn.Module) -> dict[str, Any]:
    return {"weight": m.weight, "bias": m.bias, "stride": m.stride, "padding": m.padding,
            "output_padding": m.output_padding, "dilation": m.dilation, "groups": m.groups}


def _norm_module(m: nn.Module) -> dict[str, Any]:
    fields = {"weight": m.weight, "bias": m.bias, "eps": m.eps}
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        fields.update(running_mean=m.running_mean, running_var=m.running_var,
                      training=m.training or m.running_mean is None)
    if isinstance(m, nn.LayerNorm):
        fields["normalized_shape"] = m.normalized_shape
    if isinstance(m, nn.GroupNorm):
        fields["num_groups"] = m.num_groups
    return fields


def _pool_module(m: nn.Module) -> dict[str, Any]:
    fields = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding, "ceil_mode": m.ceil_mode}
    if isinstance(m, nn.MaxPool2d):
        fields["dilation"] = m.dilation
    else:
        fields["count_include_pad"] = m.count_include_pad
        fields["divisor_override"] = m.divisor_override
    return fields


def _mha_module(m: nn.Module) -> dict[str, Any]:
    return {"embed_dim": m.embed_dim, "num_heads": m.num_heads, "batch_first": m.batch_first}


@dataclass(frozen=True)
class OpDef:
    kind: str
    summary: str
    attrs: Callable[[Mapping[str, Any]], dict[str, Any]] = _no_attrs
    signature: Callable[..., Any] = _sig_unary
    modules: Mapping[type, Callable[[nn.Module], dict[str, Any]]] = field(default_factory=dict)
    functions: Sequence[Any] = ()
    methods: Sequence[str] = ()
    #: functions whose arguments follow another order than `signature`
    special_forms: Mapping[Any, Callable[..., Any]] = field(default_factory=dict)
    operands: Sequence[str] = ("input",)
    #: attributes that a target may constrain beyond the shape-based ones
    attr_names: Sequence[str] = ()


def _none(_: nn.Module) -> dict[str, Any]:
    return {}


_CONV_ATTRS = ("kernel", "stride", "padding", "dilation", "groups", "grouping", "in_ch", "out_ch", "bias")
_POOL_ATTRS = ("kernel", "stride", "padding", "ceil_mode")
_BINARY_ATTRS = ("operands", "broadcast")

VOCABULARY: tuple[OpDef, ...] = (
    OpDef("conv1d", "1-D convolution", _conv_attrs, _sig_conv, {nn.Conv1d: _conv_module},
          (F.conv1d, torch.conv1d, aten.conv1d), attr_names=_CONV_ATTRS),
    OpDef("conv2d", "2-D convolution (dense, depthwise or grouped)", _conv_attrs, _sig_conv,
          {nn.Conv2d: _conv_module}, (F.conv2d, torch.conv2d, aten.conv2d), attr_names=_CONV_ATTRS),
    OpDef("conv_transpose2d", "2-D transposed convolution", _conv_transpose_attrs, _sig_conv_transpose,
          {nn.ConvTranspose2d: _conv_transpose_module}, (F.conv_transpose2d, aten.conv_transpose2d),
          attr_names=("kernel", "stride", "padding", "dilation", "groups", "in_ch", "out_ch", "bias")),
    OpDef("linear", "fully connected layer", _linear_attrs, _sig_linear,
          {nn.Linear: lambda m: {"weight": m.weight, "bias": m.bias}}, (F.linear, aten.linear),
          attr_names=("in_features", "out_features", "bias")),
    OpDef("matmul", "matrix product of two activations (matmul, mm, bmm)", _no_attrs, _sig_matmul, {},
          (torch.matmul, operator.matmul, torch.bmm, torch.mm, aten.matmul, aten.bmm, aten.mm),
          ("matmul", "bmm", "mm"), operands=("input", "other")),
    OpDef("batch_norm", "batch normalization (inference statistics)", _norm_attrs, _sig_batch_norm_f,
          {nn.BatchNorm1d: _norm_module, nn.BatchNorm2d: _norm_module}, (F.batch_norm,),
          special_forms={aten.batch_norm: _sig_batch_norm_aten}, attr_names=("eps", "affine")),
    OpDef("layer_norm", "layer normalization", _norm_attrs, _sig_layer_norm, {nn.LayerNorm: _norm_module},
          (F.layer_norm, aten.layer_norm), attr_names=("eps", "affine")),
    OpDef("group_norm", "group normalization", _norm_attrs, _sig_group_norm, {nn.GroupNorm: _norm_module},
          (F.group_norm, aten.group_norm), attr_names=("eps", "affine")),
    OpDef("relu", "max(x, 0)", modules={nn.ReLU: _none}, functions=(F.relu, torch.relu, aten.relu, aten.relu_),
          methods=("relu", "relu_")),
    OpDef("relu6", "min(max(x, 0), 6)", modules={nn.ReLU6: _none}, functions=(F.relu6, aten.relu6)),
    OpDef("hardtanh", "clamp(x, min_val, max_val)", _hardtanh_attrs, _sig_hardtanh,
          {nn.Hardtanh: lambda m: {"min_val": m.min_val, "max_val": m.max_val}}, (F.hardtanh, aten.hardtanh),
          attr_names=("min_val", "max_val")),
    OpDef("gelu", "Gaussian error linear unit", _gelu_attrs, _sig_gelu,
          {nn.GELU: lambda m: {"approximate": m.approximate}}, (F.gelu, aten.gelu)),
    OpDef("silu", "x * sigmoid(x)", modules={nn.SiLU: _none}, functions=(F.silu, aten.silu, aten.silu_)),
    OpDef("hardswish", "x * relu6(x + 3) / 6", modules={nn.Hardswish: _none},
          functions=(F.hardswish, aten.hardswish, aten.hardswish_)),
    OpDef("hardsigmoid", "relu6(x + 3) / 6", modules={nn.Hardsigmoid: _none},
          functions=(F.hardsigmoid, aten.hardsigmoid, aten.hardsigmoid_)),
    OpDef("sigmoid", "1 / (1 + exp(-x))", modules={nn.Sigmoid: _none},
          functions=(torch.sigmoid, F.sigmoid, aten.sigmoid), methods=("sigmoid",)),
    OpDef("tanh", "hyperbolic tangent", modules={nn.Tanh: _none}, functions=(torch.tanh, F.tanh, aten.tanh),
          methods=("tanh",)),
    OpDef("softmax", "softmax along one dim", _dim_attrs, _sig_dim, {nn.Softmax: lambda m: {"dim": m.dim}},
          (F.softmax, torch.softmax, aten.softmax, aten._softmax), ("softmax",), attr_names=("dim",)),
    OpDef("max_pool2d", "2-D max pooling", _pool_attrs, _sig_max_pool, {nn.MaxPool2d: _pool_module},
          (F.max_pool2d, F._max_pool2d, torch.max_pool2d, aten.max_pool2d), attr_names=_POOL_ATTRS),
    OpDef("avg_pool2d", "2-D average pooling", _pool_attrs, _sig_avg_pool, {nn.AvgPool2d: _pool_module},
          (F.avg_pool2d, aten.avg_pool2d), attr_names=_POOL_ATTRS),
    OpDef("adaptive_avg_pool2d", "2-D average pooling to a fixed output size", _adaptive_pool_attrs,
          _sig_adaptive_pool, {nn.AdaptiveAvgPool2d: lambda m: {"output_size": m.output_size}},
          (F.adaptive_avg_pool2d, aten.adaptive_avg_pool2d, aten._adaptive_avg_pool2d), attr_names=("output_size",)),
    OpDef("mean", "mean over dims", _mean_attrs, _sig_mean, {}, (torch.mean, aten.mean), ("mean",),
          attr_names=("dims", "keepdim")),
    OpDef("add", "elementwise a + alpha * b", _binary_attrs, _sig_binary, {},
          (operator.add, operator.iadd, torch.add, aten.add, aten.add_), ("add", "add_"),
          operands=("input", "other"), attr_names=_BINARY_ATTRS),
    OpDef("sub", "elementwise a - alpha * b", _binary_attrs, _sig_binary, {},
          (operator.sub, operator.isub, torch.sub, aten.sub, aten.sub_), ("sub", "sub_"),
          special_forms={aten.rsub: _sig_binary}, operands=("input", "other"), attr_names=_BINARY_ATTRS),
    OpDef("mul", "elementwise a * b", _binary_attrs, _sig_binary, {},
          (operator.mul, operator.imul, torch.mul, aten.mul, aten.mul_), ("mul", "mul_"),
          operands=("input", "other"), attr_names=_BINARY_ATTRS),
    OpDef("div", "elementwise a / b", _binary_attrs, _sig_binary, {},
          (operator.truediv, operator.itruediv, torch.div, aten.div, aten.div_), ("div", "div_"),
          operands=("input", "other"), attr_names=_BINARY_ATTRS),
    OpDef("cat", "concatenation along one dim", _cat_attrs, _sig_cat, {},
          (torch.cat, torch.concat, torch.concatenate, aten.cat), operands=("tensors",),
          attr_names=("dim", "num_inputs")),
    OpDef("reshape", "view or reshape (also squeeze, unsqueeze, unflatten)", _shape_change_attrs, _sig_unary, {},
          (torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten, aten.reshape, aten.view,
           aten._unsafe_view, aten.squeeze, aten.unsqueeze, aten.unflatten),
          ("view", "reshape", "squeeze", "unsqueeze", "unflatten", "view_as", "reshape_as")),
    OpDef("flatten", "flatten a range of dims", _flatten_attrs, _sig_flatten,
          {nn.Flatten: lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim}}, (torch.flatten, aten.flatten),
          ("flatten",), attr_names=("start_dim", "end_dim")),
    OpDef("permute", "reorder dims", _permute_attrs, _sig_unary, {}, (torch.permute, aten.permute), ("permute",),
          attr_names=("dims",)),
    OpDef("transpose", "swap two dims", _transpose_attrs, _sig_transpose, {}, (torch.transpose, aten.transpose),
          ("transpose",), attr_names=("dims",)),
    OpDef("slice", "indexing or slicing a tensor", _no_attrs, _sig_unary, {},
          (aten.slice, aten.select, aten.index), ("narrow", "select")),
    OpDef("expand", "broadcast to a larger shape", _shape_change_attrs, _sig_unary, {}, (aten.expand,),
          ("expand", "expand_as")),
    OpDef("pad", "constant or reflective padding", _pad_attrs, _sig_pad, {}, (F.pad, aten.pad, aten.constant_pad_nd),
          attr_names=("pad", "mode")),
    OpDef("embedding", "table lookup", _embedding_attrs, _sig_embedding_f, {nn.Embedding: lambda m: {"weight": m.weight, "max_norm": m.max_norm}},
          (F.embedding,), special_forms={aten.embedding: _sig_embedding_aten},
          attr_names=("num_embeddings", "embedding_dim")),
    OpDef("scaled_dot_product_attention", "softmax(q k^T / sqrt(d)) v", _sdpa_attrs, _sig_sdpa, {},
          (F.scaled_dot_product_attention, aten.scaled_dot_product_attention),
          operands=("query", "key", "value"), attr_names=("causal", "masked")),
    OpDef("multihead_attention", "nn.MultiheadAttention (projections and attention)", _mha_attrs,
          _sig_unary, {nn.MultiheadAttention: _mha_module}, attr_names=("embed_dim", "num_heads")),
    OpDef("dropout", "dropout or stochastic depth: identity at inference", _dropout_attrs, _sig_dropout,
          {nn.Dropout: lambda m: {"p": m.p}, nn.Dropout1d: lambda m: {"p": m.p}, nn.Dropout2d: lambda m: {"p": m.p}},
          (F.dropout, F.dropout1d, F.dropout2d, aten.dropout, aten.feature_dropout),
          special_forms={torchvision.ops.stochastic_depth: _sig_stochastic_depth}),
    OpDef("identity", "returns its input", modules={nn.Identity: _none},
          functions=(aten.clone, aten.contiguous, aten.alias, aten.detach, torch.clone),
          methods=("contiguous", "clone", "detach")),
    OpDef("one_hot", "integer ids as one-hot vectors", functions=(F.one_hot, aten.one_hot)),
    OpDef("cast", "dtype or device conversion", functions=(aten._to_copy, aten.to, torch.Tensor.float),
          methods=("to", "float", "half", "type_as")),
    OpDef("constant", "a parameter, buffer or shape-only tensor, known at compile time",
          functions=(aten.arange, aten.zeros, aten.ones, aten.full, aten.zeros_like, aten.ones_like, torch.arange)),
    OpDef("shape", "shape query or arithmetic on shapes, done at compile time",
          functions=(builtins.getattr, aten.sym_size), methods=("size", "dim")),
    OpDef("assert", "runtime check, removed at compile time",
          functions=(torch._assert, aten._assert_async, aten._assert_tensor_metadata, aten._assert_scalar)),
    OpDef("fake_quant", "quantize-dequantize: the number format a tensor is kept in (see fxrewrite/quant.py)",
          _fake_quant_attrs, _sig_fake_quant_tensor,
          functions=(torch.fake_quantize_per_tensor_affine, aten.fake_quantize_per_tensor_affine),
          special_forms={torch.fake_quantize_per_channel_affine: _sig_fake_quant_channel,
                         aten.fake_quantize_per_channel_affine: _sig_fake_quant_channel},
          attr_names=("qmin", "qmax", "granularity", "role")),
    OpDef("getitem", "picks one result of an op that returns several", functions=(operator.getitem,)),
)

KINDS: tuple[str, ...] = tuple(d.kind for d in VOCABULARY) + ("input", "output", UNKNOWN)
_BY_KIND = {d.kind: d for d in VOCABULARY}


def _build_indexes() -> tuple[dict, dict, dict]:
    modules: dict[type, OpDef] = {}
    functions: dict[Any, tuple[OpDef, Callable[..., Any]]] = {}
    methods: dict[str, OpDef] = {}

    def claim(index: dict, key: Any, value: Any, kind: str) -> None:
        owner = index.get(key)
        owner_kind = owner[0].kind if isinstance(owner, tuple) else getattr(owner, "kind", None)
        if owner is not None and owner_kind != kind:
            raise RuntimeError(f"op vocabulary: {key!r} registered for both {owner_kind} and {kind}")
        index[key] = value

    for op in VOCABULARY:
        for cls in op.modules:
            claim(modules, cls, op, op.kind)
        for fn in op.functions:
            claim(functions, fn, (op, op.signature), op.kind)
        for fn, sig in op.special_forms.items():
            claim(functions, fn, (op, sig), op.kind)
        for name in op.methods:
            claim(methods, name, op, op.kind)
    return modules, functions, methods


_MODULE_INDEX, _FUNCTION_INDEX, _METHOD_INDEX = _build_indexes()


def op_def(kind: str) -> OpDef:
    return _BY_KIND[kind]


def qualified_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target.__name__}" if target.namespace == "aten" else str(target)
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target))
    return f"{module}.{name}" if module and module != "builtins" else name


def _module_def(module: nn.Module) -> OpDef | None:
    for cls in type(module).__mro__:
        op = _MODULE_INDEX.get(cls)
        # A subclass that overrides forward computes something else: it is not this op.
        if op is not None and type(module).forward is cls.forward:
            return op
    return None


@functools.lru_cache(maxsize=None)
def _signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function)


def _bind(signature: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = _signature(signature).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _operand_nodes(op: OpDef, bound: Mapping[str, Any]) -> tuple[fx.Node, ...]:
    nodes: list[fx.Node] = []
    for name in op.operands:
        for value in _as_list(bound.get(name)):
            if isinstance(value, fx.Node):
                nodes.append(value)
    return tuple(nodes)


def _unknown(node: fx.Node, source: str, why: str) -> OpView:
    return OpView(UNKNOWN, {"target": qualified_name(node.target), "why": why}, tuple(node.all_input_nodes), node, source)


def _produces_tensor(node: fx.Node) -> bool:
    return tensor_shape(node) is not None


def op_view(node: fx.Node) -> OpView:
    """See `node` through the vocabulary; nodes outside it get kind `unknown`."""
    if node.op == "placeholder":
        return OpView("input", {}, (), node, "placeholder")
    if node.op == "output":
        return OpView("output", {}, tuple(node.all_input_nodes), node, "output")
    if node.op == "get_attr":
        return OpView("constant", {}, (), node, "get_attr")
    if node.op == "call_module":
        module = _fetch_attr(node.graph.owning_module, str(node.target))
        source = f"module {type(module).__module__}.{type(module).__qualname__}"
        if str(node.target) == "_guards_fn":
            return OpView("assert", {}, tuple(node.all_input_nodes), node, source)
        op = _module_def(module) if isinstance(module, nn.Module) else None
        if op is None:
            return _unknown(node, source, f"module class {type(module).__qualname__} is not in the vocabulary")
        bound = {"input": node.args[0] if node.args else None, **_module_of(op, module)(module)}
        return _finish(op, bound, node, source)
    if node.op == "call_method":
        op = _METHOD_INDEX.get(str(node.target))
        source = f"method Tensor.{node.target}"
        if op is None:
            return _unknown(node, source, f"tensor method .{node.target}() is not in the vocabulary")
        signature = op.signature
    elif getattr(node.target, "__module__", None) in ("_operator", "operator") and not _produces_tensor(node):
        return OpView("shape", {}, tuple(node.all_input_nodes), node, f"function {qualified_name(node.target)}")
    else:
        key = node.target.overloadpacket if isinstance(node.target, torch._ops.OpOverload) else node.target
        entry = _FUNCTION_INDEX.get(key)
        source = f"function {qualified_name(node.target)}"
        if entry is None:
            return _unknown(node, source, "function is not in the vocabulary")
        op, signature = entry
    if op.kind == "getitem" and _produces_tensor(node) and _produces_tensor(node.args[0]):
        op = _BY_KIND["slice"]
    try:
        bound = _bind(signature, tuple(node.args), dict(node.kwargs))
    except TypeError as exc:
        return _unknown(node, source, f"its arguments do not fit {op.kind}: {exc}")
    return _finish(op, bound, node, source)


def _module_of(op: OpDef, module: nn.Module) -> Callable[[nn.Module], dict[str, Any]]:
    for cls in type(module).__mro__:
        if cls in op.modules:
            return op.modules[cls]
    return _none


def _finish(op: OpDef, bound: dict[str, Any], node: fx.Node, source: str) -> OpView:
    try:
        attrs = op.attrs(bound)
    except (TypeError, ValueError, KeyError) as exc:
        return _unknown(node, source, f"cannot read the attributes of {op.kind}: {exc}")
    if op.kind == "hardtanh" and (attrs["min_val"], attrs["max_val"]) == (0.0, 6.0):
        op, attrs = _BY_KIND["relu6"], {}
    inputs = _operand_nodes(op, bound) if op.kind != "multihead_attention" else tuple(node.all_input_nodes)
    return OpView(op.kind, attrs, inputs, node, source, bound)


def constant_value(value: Any) -> torch.Tensor | None:
    """The tensor behind a parameter argument: a module's tensor, or a get_attr node's; None if computed."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, fx.Node) and value.op == "get_attr":
        tensor = _fetch_attr(value.graph.owning_module, str(value.target))
        return tensor.detach() if isinstance(tensor, torch.Tensor) else None
    return None
