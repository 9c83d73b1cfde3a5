"""How each op's arguments become its normalized attributes: one normalizer per op family reads
the arguments bound to the canonical signature, and module forms read a module's fields as those
arguments."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import fx, nn

from fxrewrite.ir.graph import as_list, is_tensor, norm_dim, ntuple, tensor_rank, tensor_shape

# --- attribute normalizers: bound arguments (by canonical name) -> attrs -------------------------


def conv_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    weight = tensor_shape(b["weight"])
    n = len(weight) - 2
    kernel, dilation = tuple(weight[2:]), ntuple(b["dilation"], n)
    padding = b["padding"]
    if padding == "valid":
        padding = (0,) * n
    elif padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        padding = tuple(t // 2 for t in totals) if all(t % 2 == 0 for t in totals) else "same"
    else:
        padding = ntuple(padding, n)
    groups = int(b["groups"])
    in_ch, out_ch = weight[1] * groups, weight[0]
    grouping = "dense" if groups == 1 else "depthwise" if groups == in_ch else "grouped"
    return {
        "kernel": kernel,
        "stride": ntuple(b["stride"], n),
        "padding": padding,
        "dilation": dilation,
        "groups": groups,
        "grouping": grouping,
        "in_ch": in_ch,
        "out_ch": out_ch,
        "bias": b["bias"] is not None,
        "padding_mode": b.get("padding_mode", "zeros"),
    }


def conv_transpose_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    weight = tensor_shape(b["weight"])
    n, groups = len(weight) - 2, int(b["groups"])
    return {
        "kernel": tuple(weight[2:]),
        "stride": ntuple(b["stride"], n),
        "padding": ntuple(b["padding"], n),
        "output_padding": ntuple(b["output_padding"], n),
        "dilation": ntuple(b["dilation"], n),
        "groups": groups,
        "in_ch": weight[0],
        "out_ch": weight[1] * groups,
        "bias": b["bias"] is not None,
    }


#: the resampling modes the vocabulary reads; others (bicubic, area, nearest-exact) stay unknown
UPSAMPLE_MODES = ("nearest", "bilinear")


def upsample_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    """mode, align_corners and scale: output over input size along (height, width), an int where it
    divides. From interpolate's size or scale_factor, or ATen's output_size or scale list."""
    shape = tensor_shape(b["input"])
    if shape is None or len(shape) != 4:
        raise ValueError("only 4-D maps (N, C, H, W) are read as upsampling")
    if b["mode"] not in UPSAMPLE_MODES or b.get("antialias"):
        raise ValueError(f"mode {b['mode']!r}{' antialiased' if b.get('antialias') else ''} is not nearest or bilinear")
    size = b.get("size")
    factors = b.get("scale_factor")
    if factors is None and b.get("scales"):  # ATen: (scales_h, scales_w) or (scale_factors,)
        factors = b["scales"][0] if isinstance(b["scales"][0], (list, tuple)) else b["scales"]
    if size is not None:
        out = ntuple(size, 2)
    elif factors is not None:
        factors = list(factors) if isinstance(factors, (list, tuple)) else [factors, factors]
        out = tuple(math.floor(d * float(f)) for d, f in zip(shape[2:], factors))
    else:
        raise ValueError("neither an output size nor a scale factor is given")
    scale = tuple(o // i if o % i == 0 else o / i for o, i in zip(out, shape[2:]))
    return {"mode": b["mode"], "scale": scale, "align_corners": bool(b.get("align_corners"))}


def pixel_shuffle_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    factor = int(b["upscale_factor"])
    return {"scale": (factor, factor)}


def linear_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    out_features, in_features = tensor_shape(b["weight"])
    return {"in_features": in_features, "out_features": out_features, "bias": b["bias"] is not None}


def pow_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    """The exponent where it is a number (None where it is a tensor)."""
    exponent = b.get("exponent")
    return {"exponent": float(exponent) if isinstance(exponent, (int, float)) else None}


def addmm_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"alpha": float(b.get("alpha", 1)), "beta": float(b.get("beta", 1))}


def norm_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    attrs = {key: b[key] for key in ("num_groups", "normalized_shape") if key in b}
    if "normalized_shape" in attrs:
        attrs["normalized_shape"] = tuple(ntuple(attrs["normalized_shape"], len(as_list(attrs["normalized_shape"]))))
    shape = tensor_shape(b["input"])
    if shape is not None and len(shape) > 1 and "normalized_shape" not in attrs:
        attrs["channels"] = shape[1]
    attrs["eps"] = float(b["eps"])
    attrs["affine"] = b["weight"] is not None
    return attrs


def pool_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    kernel = ntuple(b["kernel_size"], 2)
    stride = b.get("stride")
    attrs = {
        "kernel": kernel,
        "stride": kernel if stride is None or stride == [] or stride == () else ntuple(stride, 2),
        "padding": ntuple(b.get("padding", 0), 2),
        "ceil_mode": bool(b.get("ceil_mode", False)),
    }
    if "dilation" in b:
        attrs["dilation"] = ntuple(b["dilation"], 2)
    if "count_include_pad" in b:
        attrs["count_include_pad"] = bool(b["count_include_pad"])
    return attrs


def adaptive_pool_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    size = b["output_size"]
    in_shape = tensor_shape(b["input"]) or ()
    spatial = tuple(in_shape[-2:]) if len(in_shape) >= 2 else (None, None)
    size = as_list(size) * (2 if not isinstance(size, (list, tuple)) else 1)
    return {"output_size": tuple(int(s if s is not None else d) for s, d in zip(size, spatial))}


def adaptive_pool1d_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    size = as_list(b["output_size"])[0]
    in_shape = tensor_shape(b["input"]) or ()
    return {"output_size": int(size if size is not None else in_shape[-1])}


def binary_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    left, right = b["input"], b["other"]
    tensors = [v for v in (left, right) if is_tensor(v)]
    shapes = {tensor_shape(v) for v in tensors}
    attrs: dict[str, Any] = {"operands": "tensor" if len(tensors) == 2 else "scalar", "broadcast": len(shapes) > 1}
    if b.get("alpha", 1) != 1:
        attrs["alpha"] = b["alpha"]
    return attrs


def dim_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"dim": norm_dim(int(b["dim"]), tensor_rank(b["input"]))} if b.get("dim") is not None else {}


def cat_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    tensors = list(b["tensors"])
    return {"dim": norm_dim(int(b["dim"]), tensor_rank(tensors[0])), "num_inputs": len(tensors)}


def mean_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    rank = tensor_rank(b["input"])
    dims = b.get("dim")
    dims = tuple(range(rank or 0)) if dims is None else tuple(sorted(norm_dim(d, rank) for d in as_list(dims)))
    return {"dims": dims, "keepdim": bool(b.get("keepdim", False))}


def flatten_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    rank = tensor_rank(b["input"])
    return {"start_dim": norm_dim(int(b["start_dim"]), rank), "end_dim": norm_dim(int(b["end_dim"]), rank)}


def _varargs(b: Mapping[str, Any]) -> tuple[Any, ...]:
    rest = tuple(b.get("rest", ()))
    return tuple(rest[0]) if len(rest) == 1 and isinstance(rest[0], (list, tuple, torch.Size)) else rest


def permute_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    rank = tensor_rank(b["input"])
    dims = _varargs(b) or tuple(b.get("kwargs", {}).get("dims", ()))
    return {"dims": tuple(norm_dim(int(d), rank) for d in dims)}


def transpose_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    rank = tensor_rank(b["input"])
    return {"dims": tuple(sorted(norm_dim(int(b[k]), rank) for k in ("dim0", "dim1")))}


def shape_change_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"from_shape": tensor_shape(b["input"])}


def embedding_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    num, dim = tensor_shape(b["weight"])
    return {"num_embeddings": num, "embedding_dim": dim}


def einsum_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"equation": str(b["equation"]).replace(" ", "")}


def roll_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"shifts": tuple(as_list(b["shifts"])), "dims": tuple(as_list(b["dims"])) if b["dims"] is not None else ()}


def sdpa_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"causal": bool(b.get("is_causal", False)), "masked": b.get("attn_mask") is not None}


def dropout_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"p": float(b.get("p", 0.5))}


def pad_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"pad": tuple(int(p) for p in b["pad"]), "mode": b.get("mode", "constant")}


def gelu_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"approximate": b.get("approximate", "none")}


def hardtanh_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {"min_val": float(b["min_val"]), "max_val": float(b["max_val"])}


def mha_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {key: b[key] for key in ("embed_dim", "num_heads", "batch_first")}


def fake_quant_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    source = b["input"]
    return {
        "qmin": int(b["quant_min"]),
        "qmax": int(b["quant_max"]),
        "granularity": "per-channel" if "axis" in b else "per-tensor",
        "role": "weights" if isinstance(source, fx.Node) and source.op == "get_attr" else "activations",
    }


def no_attrs(b: Mapping[str, Any]) -> dict[str, Any]:
    return {}


# --- module forms: a module's attributes as bound arguments -------------------------------------


def conv_module(m: nn.Module) -> dict[str, Any]:
    return {"weight": m.weight, "bias": m.bias, "stride": m.stride, "padding": m.padding,
            "dilation": m.dilation, "groups": m.groups, "padding_mode": m.padding_mode}


def conv_transpose_module(m: nn.Module) -> dict[str, Any]:
    return {"weight": m.weight, "bias": m.bias, "stride": m.stride, "padding": m.padding,
            "output_padding": m.output_padding, "dilation": m.dilation, "groups": m.groups}


def norm_module(m: nn.Module) -> dict[str, Any]:
    fields = {"weight": m.weight, "bias": m.bias, "eps": m.eps}
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        fields.update(running_mean=m.running_mean, running_var=m.running_var,
                      training=m.training or m.running_mean is None)
    if isinstance(m, nn.LayerNorm):
        fields["normalized_shape"] = m.normalized_shape
    if isinstance(m, nn.GroupNorm):
        fields["num_groups"] = m.num_groups
    return fields


def pool_module(m: nn.Module) -> dict[str, Any]:
    fields = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding, "ceil_mode": m.ceil_mode}
    if isinstance(m, nn.MaxPool2d):
        fields["dilation"] = m.dilation
    else:
        fields["count_include_pad"] = m.count_include_pad
        fields["divisor_override"] = m.divisor_override
    return fields


def upsample_module(m: nn.Module) -> dict[str, Any]:
    return {"size": m.size, "scale_factor": m.scale_factor, "mode": m.mode, "align_corners": m.align_corners}


def mha_module(m: nn.Module) -> dict[str, Any]:
    return {"embed_dim": m.embed_dim, "num_heads": m.num_heads, "batch_first": m.batch_first}


def no_fields(_: nn.Module) -> dict[str, Any]:
    return {}
