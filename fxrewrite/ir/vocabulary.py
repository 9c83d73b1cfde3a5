"""The op vocabulary: one `OpDef` per op kind with every form it comes in (module, functional,
tensor method, ATen), its canonical signature and attribute normalizer. `VOCABULARY` is the only
table: to teach fxrewrite an op, add an entry here. Registering one form for two kinds is an error.

In-place ATen ops (`aten.relu_`) are not registered: the capture makes them functional where that
is safe (fxrewrite.frontend.canonical), and any left are unknown, with the reason.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fxrewrite.ir.attributes import (
    adaptive_pool1d_attrs, adaptive_pool_attrs, addmm_attrs, binary_attrs, cat_attrs, conv_attrs, conv_module, conv_transpose_attrs,
    conv_transpose_module,
    dim_attrs, dropout_attrs, einsum_attrs, embedding_attrs, fake_quant_attrs, flatten_attrs, gelu_attrs,
    hardtanh_attrs, linear_attrs, mean_attrs, mha_attrs, mha_module, no_attrs, no_fields, norm_attrs, norm_module, pad_attrs,
    permute_attrs, pixel_shuffle_attrs, pow_attrs, pool_attrs, pool_module, roll_attrs, sdpa_attrs, shape_change_attrs, transpose_attrs, upsample_attrs,
    upsample_module,
)

aten = torch.ops.aten

UNKNOWN = "unknown"
#: Kinds that never run on the chip: graph plumbing, shape arithmetic and compile-time constants.
STRUCTURAL_KINDS = frozenset({"input", "output", "constant", "shape", "assert", "getitem"})

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
def _sig_addmm(input, mat1, mat2, *, beta=1, alpha=1): ...
def _sig_pow(input, exponent): ...
def _sig_split(input, sections, dim=0): ...
def _sig_unbind(input, dim=0): ...
def _sig_einsum(equation, *operands): ...
def _sig_einsum_aten(equation, operands, path=None): ...
def _sig_roll(input, shifts, dims=None): ...
def _sig_amax(input, dim=(), keepdim=False): ...
def _sig_interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                     recompute_scale_factor=None, antialias=False): ...
# ATen's overloads: default (input, output_size, scales_h, scales_w) and vec (input, output_size, scale_factors)
def _sig_upsample_nearest_aten(input, size, *scales, mode="nearest"): ...
def _sig_upsample_bilinear_aten(input, size, align_corners, *scales, mode="bilinear"): ...
def _sig_pixel_shuffle(input, upscale_factor): ...
def _sig_where(condition, input, other): ...
def _sig_index_select(input, dim, index): ...
def _sig_fake_quant_tensor(input, scale, zero_point, quant_min, quant_max): ...
def _sig_fake_quant_channel(input, scale, zero_point, axis, quant_min, quant_max): ...


@dataclass(frozen=True)
class OpDef:
    kind: str
    summary: str
    attrs: Callable[[Mapping[str, Any]], dict[str, Any]] = no_attrs
    signature: Callable[..., Any] = _sig_unary
    modules: Mapping[type, Callable[[nn.Module], dict[str, Any]]] = field(default_factory=dict)
    functions: Sequence[Any] = ()
    methods: Sequence[str] = ()
    #: functions whose arguments follow another order than `signature`
    special_forms: Mapping[Any, Callable[..., Any]] = field(default_factory=dict)
    #: tensor methods whose arguments follow another order than `signature` (after the tensor itself)
    method_forms: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    operands: Sequence[str] = ("input",)
    #: attributes that a target may constrain beyond the shape-based ones
    attr_names: Sequence[str] = ()


_CONV_ATTRS = ("kernel", "stride", "padding", "dilation", "groups", "grouping", "in_ch", "out_ch", "bias")
_POOL_ATTRS = ("kernel", "stride", "padding", "ceil_mode")
_BINARY_ATTRS = ("operands", "broadcast")

VOCABULARY: tuple[OpDef, ...] = (
    OpDef("conv1d", "1-D convolution", conv_attrs, _sig_conv, {nn.Conv1d: conv_module},
          (F.conv1d, torch.conv1d, aten.conv1d), attr_names=_CONV_ATTRS),
    OpDef("conv2d", "2-D convolution (dense, depthwise or grouped)", conv_attrs, _sig_conv,
          {nn.Conv2d: conv_module}, (F.conv2d, torch.conv2d, aten.conv2d), attr_names=_CONV_ATTRS),
    OpDef("conv_transpose2d", "2-D transposed convolution", conv_transpose_attrs, _sig_conv_transpose,
          {nn.ConvTranspose2d: conv_transpose_module}, (F.conv_transpose2d, aten.conv_transpose2d),
          attr_names=("kernel", "stride", "padding", "dilation", "groups", "in_ch", "out_ch", "bias")),
    OpDef("linear", "fully connected layer", linear_attrs, _sig_linear,
          {nn.Linear: lambda m: {"weight": m.weight, "bias": m.bias}}, (F.linear, aten.linear),
          attr_names=("in_features", "out_features", "bias")),
    OpDef("matmul", "matrix product of two activations (matmul, mm, bmm)", no_attrs, _sig_matmul, {},
          (torch.matmul, operator.matmul, torch.bmm, torch.mm, aten.matmul, aten.bmm, aten.mm),
          ("matmul", "bmm", "mm"), operands=("input", "other")),
    OpDef("addmm", "beta input + alpha (mat1 @ mat2): an FC layer as GPT-2's Conv1D writes it", addmm_attrs,
          _sig_addmm, {}, (torch.addmm, aten.addmm), ("addmm",), operands=("input", "mat1", "mat2"),
          attr_names=("alpha", "beta")),
    OpDef("batch_norm", "batch normalization (inference statistics)", norm_attrs, _sig_batch_norm_f,
          {nn.BatchNorm1d: norm_module, nn.BatchNorm2d: norm_module}, (F.batch_norm,),
          special_forms={aten.batch_norm: _sig_batch_norm_aten}, attr_names=("eps", "affine")),
    OpDef("layer_norm", "layer normalization", norm_attrs, _sig_layer_norm, {nn.LayerNorm: norm_module},
          (F.layer_norm, aten.layer_norm), attr_names=("eps", "affine")),
    OpDef("group_norm", "group normalization", norm_attrs, _sig_group_norm, {nn.GroupNorm: norm_module},
          (F.group_norm, aten.group_norm), attr_names=("eps", "affine")),
    OpDef("relu", "max(x, 0)", modules={nn.ReLU: no_fields}, functions=(F.relu, torch.relu, aten.relu),
          methods=("relu", "relu_")),
    OpDef("relu6", "min(max(x, 0), 6)", modules={nn.ReLU6: no_fields}, functions=(F.relu6, aten.relu6)),
    OpDef("hardtanh", "clamp(x, min_val, max_val)", hardtanh_attrs, _sig_hardtanh,
          {nn.Hardtanh: lambda m: {"min_val": m.min_val, "max_val": m.max_val}}, (F.hardtanh, aten.hardtanh),
          attr_names=("min_val", "max_val")),
    OpDef("gelu", "Gaussian error linear unit", gelu_attrs, _sig_gelu,
          {nn.GELU: lambda m: {"approximate": m.approximate}}, (F.gelu, aten.gelu)),
    OpDef("silu", "x * sigmoid(x)", modules={nn.SiLU: no_fields}, functions=(F.silu, aten.silu)),
    OpDef("hardswish", "x * relu6(x + 3) / 6", modules={nn.Hardswish: no_fields},
          functions=(F.hardswish, aten.hardswish)),
    OpDef("hardsigmoid", "relu6(x + 3) / 6", modules={nn.Hardsigmoid: no_fields},
          functions=(F.hardsigmoid, aten.hardsigmoid)),
    OpDef("sigmoid", "1 / (1 + exp(-x))", modules={nn.Sigmoid: no_fields},
          functions=(torch.sigmoid, F.sigmoid, aten.sigmoid), methods=("sigmoid",)),
    OpDef("tanh", "hyperbolic tangent", modules={nn.Tanh: no_fields}, functions=(torch.tanh, F.tanh, aten.tanh),
          methods=("tanh",)),
    OpDef("softmax", "softmax along one dim", dim_attrs, _sig_dim, {nn.Softmax: lambda m: {"dim": m.dim}},
          (F.softmax, torch.softmax, aten.softmax, aten._softmax), ("softmax",), attr_names=("dim",)),
    OpDef("max_pool2d", "2-D max pooling", pool_attrs, _sig_max_pool, {nn.MaxPool2d: pool_module},
          (F.max_pool2d, F._max_pool2d, torch.max_pool2d, aten.max_pool2d), attr_names=_POOL_ATTRS),
    OpDef("avg_pool2d", "2-D average pooling", pool_attrs, _sig_avg_pool, {nn.AvgPool2d: pool_module},
          (F.avg_pool2d, aten.avg_pool2d), attr_names=_POOL_ATTRS),
    OpDef("adaptive_avg_pool1d", "1-D average pooling to a fixed output size (over the last dim)",
          adaptive_pool1d_attrs, _sig_adaptive_pool, {nn.AdaptiveAvgPool1d: lambda m: {"output_size": m.output_size}},
          (F.adaptive_avg_pool1d, aten.adaptive_avg_pool1d), attr_names=("output_size",)),
    OpDef("adaptive_avg_pool2d", "2-D average pooling to a fixed output size", adaptive_pool_attrs,
          _sig_adaptive_pool, {nn.AdaptiveAvgPool2d: lambda m: {"output_size": m.output_size}},
          (F.adaptive_avg_pool2d, aten.adaptive_avg_pool2d, aten._adaptive_avg_pool2d), attr_names=("output_size",)),
    OpDef("upsample", "a map enlarged by nearest or bilinear resampling (interpolate, nn.Upsample)", upsample_attrs,
          _sig_interpolate, {nn.Upsample: upsample_module}, (F.interpolate,),
          special_forms={aten.upsample_nearest2d: _sig_upsample_nearest_aten,
                         aten.upsample_bilinear2d: _sig_upsample_bilinear_aten},
          attr_names=("mode", "scale", "align_corners")),
    OpDef("pixel_shuffle", "depth to space: (N, C r^2, H, W) -> (N, C, H r, W r)", pixel_shuffle_attrs,
          _sig_pixel_shuffle, {nn.PixelShuffle: lambda m: {"upscale_factor": m.upscale_factor}},
          (F.pixel_shuffle, aten.pixel_shuffle), attr_names=("scale",)),
    OpDef("mean", "mean over dims", mean_attrs, _sig_mean, {}, (torch.mean, aten.mean), ("mean",),
          attr_names=("dims", "keepdim")),
    OpDef("add", "elementwise a + alpha * b", binary_attrs, _sig_binary, {},
          (operator.add, operator.iadd, torch.add, aten.add), ("add", "add_"),
          operands=("input", "other"), attr_names=_BINARY_ATTRS),
    OpDef("sub", "elementwise a - alpha * b", binary_attrs, _sig_binary, {},
          (operator.sub, operator.isub, torch.sub, aten.sub), ("sub", "sub_"),
          special_forms={aten.rsub: _sig_binary}, operands=("input", "other"), attr_names=_BINARY_ATTRS),
    OpDef("mul", "elementwise a * b", binary_attrs, _sig_binary, {},
          (operator.mul, operator.imul, torch.mul, aten.mul), ("mul", "mul_"),
          operands=("input", "other"), attr_names=_BINARY_ATTRS),
    OpDef("div", "elementwise a / b", binary_attrs, _sig_binary, {},
          (operator.truediv, operator.itruediv, torch.div, aten.div), ("div", "div_"),
          operands=("input", "other"), attr_names=_BINARY_ATTRS),
    OpDef("cat", "concatenation along one dim", cat_attrs, _sig_cat, {},
          (torch.cat, torch.concat, torch.concatenate, aten.cat), operands=("tensors",),
          attr_names=("dim", "num_inputs")),
    OpDef("reshape", "view or reshape (also squeeze, unsqueeze, unflatten)", shape_change_attrs, _sig_unary, {},
          (torch.reshape, torch.squeeze, torch.unsqueeze, torch.unflatten, aten.reshape, aten.view,
           aten._unsafe_view, aten.squeeze, aten.unsqueeze, aten.unflatten),
          ("view", "reshape", "squeeze", "unsqueeze", "unflatten", "view_as", "reshape_as")),
    OpDef("flatten", "flatten a range of dims", flatten_attrs, _sig_flatten,
          {nn.Flatten: lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim}}, (torch.flatten, aten.flatten),
          ("flatten",), attr_names=("start_dim", "end_dim")),
    OpDef("permute", "reorder dims", permute_attrs, _sig_unary, {}, (torch.permute, aten.permute), ("permute",),
          attr_names=("dims",)),
    OpDef("transpose", "swap two dims", transpose_attrs, _sig_transpose, {},
          (torch.transpose, torch.swapaxes, torch.swapdims, aten.transpose, aten.swapaxes, aten.swapdims),
          ("transpose", "swapaxes", "swapdims"), attr_names=("dims",)),
    OpDef("split", "a tensor cut into pieces along one dim (chunk, split, unbind); getitem picks one", dim_attrs,
          _sig_split, {}, (torch.chunk, torch.split, aten.chunk, aten.split, aten.split_with_sizes),
          ("chunk", "split"), special_forms={torch.unbind: _sig_unbind, aten.unbind: _sig_unbind},
          method_forms={"unbind": _sig_unbind},
          attr_names=("dim",)),
    OpDef("einsum", "Einstein summation over activations", einsum_attrs, _sig_einsum, {}, (torch.einsum,),
          special_forms={aten.einsum: _sig_einsum_aten}, operands=("operands",), attr_names=("equation",)),
    OpDef("exp", "e to the power x", functions=(torch.exp, aten.exp), methods=("exp",)),
    OpDef("rsqrt", "1 / sqrt(x)", functions=(torch.rsqrt, aten.rsqrt), methods=("rsqrt",)),
    OpDef("pow", "x to a power (T5's RMS norm squares, GPT-2's GELU cubes)", pow_attrs, _sig_pow, {},
          (torch.pow, operator.pow, aten.pow), ("pow",), attr_names=("exponent",)),
    OpDef("reciprocal", "1 / x", functions=(torch.reciprocal, aten.reciprocal), methods=("reciprocal",)),
    OpDef("erf", "the Gauss error function", functions=(torch.erf, aten.erf), methods=("erf",)),
    OpDef("sum", "sum over dims", mean_attrs, _sig_mean, {}, (torch.sum, aten.sum), ("sum",),
          attr_names=("dims", "keepdim")),
    OpDef("amax", "maximum over dims", mean_attrs, _sig_amax, {}, (torch.amax, aten.amax), ("amax",),
          attr_names=("dims", "keepdim")),
    OpDef("roll", "circular shift along dims", roll_attrs, _sig_roll, {}, (torch.roll, aten.roll), ("roll",),
          attr_names=("shifts", "dims")),
    OpDef("slice", "indexing or slicing a tensor", no_attrs, _sig_unary, {},
          (aten.slice, aten.select, aten.index), ("narrow", "select")),
    OpDef("expand", "broadcast to a larger shape", shape_change_attrs, _sig_unary, {}, (aten.expand,),
          ("expand", "expand_as")),
    OpDef("where", "elementwise choice: input where the condition holds, other elsewhere", signature=_sig_where,
          functions=(torch.where, aten.where), operands=("condition", "input", "other")),
    OpDef("index_select", "the slices of one dim at the positions an index tensor lists", dim_attrs,
          _sig_index_select, {}, (torch.index_select, aten.index_select), ("index_select",),
          operands=("input", "index"), attr_names=("dim",)),
    OpDef("pad", "constant or reflective padding", pad_attrs, _sig_pad, {}, (F.pad, aten.pad, aten.constant_pad_nd),
          attr_names=("pad", "mode")),
    OpDef("embedding", "table lookup", embedding_attrs, _sig_embedding_f, {nn.Embedding: lambda m: {"weight": m.weight, "max_norm": m.max_norm}},
          (F.embedding,), special_forms={aten.embedding: _sig_embedding_aten},
          attr_names=("num_embeddings", "embedding_dim")),
    OpDef("scaled_dot_product_attention", "softmax(q k^T / sqrt(d)) v", sdpa_attrs, _sig_sdpa, {},
          (F.scaled_dot_product_attention, aten.scaled_dot_product_attention),
          operands=("query", "key", "value"), attr_names=("causal", "masked")),
    OpDef("multihead_attention", "nn.MultiheadAttention (projections and attention)", mha_attrs,
          _sig_unary, {nn.MultiheadAttention: mha_module}, attr_names=("embed_dim", "num_heads")),
    OpDef("dropout", "dropout or stochastic depth: identity at inference", dropout_attrs, _sig_dropout,
          {nn.Dropout: lambda m: {"p": m.p}, nn.Dropout1d: lambda m: {"p": m.p}, nn.Dropout2d: lambda m: {"p": m.p}},
          (F.dropout, F.dropout1d, F.dropout2d, aten.dropout, aten.feature_dropout),
          special_forms={torchvision.ops.stochastic_depth: _sig_stochastic_depth}),
    OpDef("identity", "returns its input", modules={nn.Identity: no_fields},
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
    OpDef("fake_quant", "quantize-dequantize: the number format a tensor is kept in (see fxrewrite/quant)",
          fake_quant_attrs, _sig_fake_quant_tensor,
          functions=(torch.fake_quantize_per_tensor_affine, aten.fake_quantize_per_tensor_affine),
          special_forms={torch.fake_quantize_per_channel_affine: _sig_fake_quant_channel,
                         aten.fake_quantize_per_channel_affine: _sig_fake_quant_channel},
          attr_names=("qmin", "qmax", "granularity", "role")),
    OpDef("getitem", "picks one result of an op that returns several", functions=(operator.getitem,)),
)

KINDS: tuple[str, ...] = tuple(d.kind for d in VOCABULARY) + ("input", "output", UNKNOWN)
BY_KIND = {d.kind: d for d in VOCABULARY}


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
            claim(methods, name, (op, op.signature), op.kind)
        for name, sig in op.method_forms.items():
            claim(methods, name, (op, sig), op.kind)
    return modules, functions, methods


MODULE_INDEX, FUNCTION_INDEX, METHOD_INDEX = _build_indexes()


def op_def(kind: str) -> OpDef:
    return BY_KIND[kind]
