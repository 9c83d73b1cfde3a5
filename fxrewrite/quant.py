"""Fake quantization in the target's formats: LSQ or DoReFa, calibration, and the form a graph keeps.

Where: the MAC array reads quantized tensors, so every conv2d and linear gets its weights and its
input activation quantized; everything else computes on what those produce. Biases stay float32
(the accumulator's precision).

Grids. Weights: a b-bit signed format, symmetric narrow range [-(2^(b-1)-1), 2^(b-1)-1], zero point
0, one scale per output channel or per tensor as the target says. Activations: affine,
x^ = (clamp(round(x / s) + z, qmin, qmax) - z) * s with the format's full range; unsigned formats
take their zero point z from calibration, signed ones use z = 0.

Methods. LSQ (Esser et al., ICLR 2020): the scale s is learned, its gradient scaled by
1 / sqrt(n * qmax); rounding passes the gradient straight through. DoReFa (Zhou et al. 2016):
weights are tanh-normalised, w^ = m * round(qmax * tanh(w) / max|tanh(w)|) / qmax with m = max|w|
(the rescaling keeps magnitudes, as the folded network has no batch norm after a conv), and
activations use a fixed scale from calibration. Both start from calibration: the clipping range
with the least squared quantization error on the calibration data (weights: their own values).

Graph form. `materialize` writes a trained or calibrated model as plain torch ops that
torch.export keeps: the weight is stored already on its grid and read through
`torch.fake_quantize_per_channel_affine` (or `_per_tensor_affine`), the input through
`torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)`, and the layer is
`F.conv2d` / `F.linear` on the two. The (qmin, qmax) pair names the format: (-7, 7) is int4
narrow-range, (0, 15) uint4; `fxrewrite check` rejects any format or granularity the target does
not declare.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from fxrewrite.errors import UsageError
from fxrewrite.target import QuantFormat, Target

Method = Literal["lsq", "dorefa"]
METHODS: tuple[str, ...] = ("lsq", "dorefa")
_CLIP_FRACTIONS = torch.linspace(0.3, 1.0, 15)
_SAMPLE_ELEMENTS = 1 << 16


@dataclass(frozen=True)
class QuantScheme:
    weights: QuantFormat
    weight_granularity: str
    activations: QuantFormat
    method: Method = "lsq"

    def describe(self) -> str:
        return (f"{self.method}: weights {self.weights.name} {self.weight_granularity}, "
                f"activations {self.activations.name} per-tensor")


def _pick(formats: Iterable[QuantFormat], bits: int | None, what: str, flag: str, target: Target,
          prefer_signed: bool) -> QuantFormat:
    integer = sorted((f for f in formats if not f.is_float), key=lambda f: (f.bits, f.signed != prefer_signed))
    if not integer:
        raise UsageError(f"target {target.name} declares no integer {what} format; drop {flag}")
    if bits is None:
        return integer[-1]
    matching = [f for f in integer if f.bits == bits]
    if not matching:
        raise UsageError(f"{flag} {bits}: target {target.name} declares {what} formats "
                         f"{', '.join(f.name for f in integer)}")
    return sorted(matching, key=lambda f: f.signed != prefer_signed)[0]


def scheme_for(target: Target, wbits: int | None, abits: int | None, method: Method = "lsq") -> QuantScheme:
    """The target's formats at these bit widths (default: its widest integer formats)."""
    if method not in METHODS:
        raise UsageError(f"quantization method {method!r}: choose one of {', '.join(METHODS)}")
    weights = _pick(target.weights.formats, wbits, "weight", "--wbits", target, prefer_signed=True)
    if not weights.signed:
        raise UsageError(f"target {target.name}: weights format {weights.name} is unsigned; "
                         "fxrewrite quantizes weights symmetrically and needs a signed format")
    activations = _pick(target.activations.formats, abits, "activation", "--abits", target, prefer_signed=False)
    granularity = "per-channel" if "per-channel" in target.weights.granularity else "per-tensor"
    return QuantScheme(weights, granularity, activations, method)


def format_range(fmt: QuantFormat, narrow: bool) -> tuple[int, int]:
    if not fmt.signed:
        return 0, 2 ** fmt.bits - 1
    top = 2 ** (fmt.bits - 1) - 1
    return (-top if narrow else -top - 1), top


def _round_pass(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


def _grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    return (x - x * factor).detach() + x * factor


class FakeQuant(nn.Module):
    """Quantize-dequantize one tensor: weights (per channel along dim 0, or per tensor) or activations."""

    def __init__(self, fmt: QuantFormat, role: Literal["weights", "activations"], method: Method,
                 channels: int | None = None):
        super().__init__()
        self.fmt, self.role, self.method = fmt, role, method
        self.qmin, self.qmax = format_range(fmt, narrow=role == "weights")
        shape = (channels,) if channels else ()
        self.scale = nn.Parameter(torch.ones(shape), requires_grad=method == "lsq")
        self.register_buffer("zero_point", torch.zeros(shape))
        self.register_buffer("calibrated", torch.tensor(False))
        self.observing = False
        self._samples: list[torch.Tensor] = []

    @property
    def per_channel(self) -> bool:
        return self.scale.dim() == 1

    def _view(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.reshape((-1,) + (1,) * (like.dim() - 1)) if self.per_channel else t

    def _quantize(self, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        scale, zero_point = self._view(scale, x), self._view(zero_point, x)
        return (_round_pass(torch.clamp(x / scale + zero_point, self.qmin, self.qmax)) - zero_point) * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            flat = x.detach().flatten()
            self._samples.append(flat[:: max(1, flat.numel() // _SAMPLE_ELEMENTS)].float().cpu())
            return x
        if not bool(self.calibrated):
            self.calibrate(x.detach())
        if self.method == "dorefa" and self.role == "weights":
            return self._dorefa_weights(x)
        scale = self.scale.abs().clamp_min(1e-8)
        if self.method == "lsq" and self.training:
            per_element = x.numel() // self.scale.numel()
            scale = _grad_scale(scale, 1.0 / math.sqrt(per_element * max(self.qmax, 1)))
        return self._quantize(x, scale, self.zero_point)

    def _dorefa_weights(self, w: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, w.dim())) if self.per_channel else tuple(range(w.dim()))
        t = torch.tanh(w)
        t = t / t.abs().amax(dim=dims, keepdim=True).clamp_min(1e-8)
        magnitude = w.detach().abs().amax(dim=dims, keepdim=True)
        return _round_pass(t * self.qmax).clamp(self.qmin, self.qmax) * magnitude / self.qmax

    def dorefa_scale(self, w: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, w.dim())) if self.per_channel else tuple(range(w.dim()))
        return (w.detach().abs().amax(dim=dims) / self.qmax).clamp_min(1e-12)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Set scale (and zero point) to the clipping range with the least squared error on `x`."""
        if self.role == "weights":
            self._calibrate_weights(x)
        else:
            self._calibrate_activations(x.flatten().float())
        self.calibrated.fill_(True)

    def _calibrate_weights(self, w: torch.Tensor) -> None:
        rows = w.reshape(w.shape[0], -1) if self.per_channel else w.reshape(1, -1)
        top = rows.abs().amax(dim=1).clamp_min(1e-8)
        best_error, best_scale = None, None
        for fraction in _CLIP_FRACTIONS:
            scale = top * fraction / self.qmax
            q = (torch.clamp(torch.round(rows / scale[:, None]), self.qmin, self.qmax)) * scale[:, None]
            error = (q - rows).pow(2).sum(dim=1)
            if best_error is None:
                best_error, best_scale = error, scale
            else:
                better = error < best_error
                best_error, best_scale = torch.where(better, error, best_error), torch.where(better, scale, best_scale)
        self.scale.copy_(best_scale if self.per_channel else best_scale[0])

    def _calibrate_activations(self, sample: torch.Tensor) -> None:
        low, high = min(sample.min().item(), 0.0), max(sample.max().item(), 1e-8)
        best = None
        for fraction in _CLIP_FRACTIONS.tolist():
            lo, hi = low * fraction, high * fraction
            if self.fmt.signed:
                scale, zero = max(-lo, hi) / self.qmax, 0.0
            else:
                scale = (hi - lo) / self.qmax
                zero = float(min(max(round(-lo / scale), self.qmin), self.qmax))
            s, z = torch.tensor(scale), torch.tensor(zero)
            error = ((torch.clamp(torch.round(sample / s + z), self.qmin, self.qmax) - z) * s - sample).pow(2).mean()
            if best is None or error < best[0]:
                best = (error, scale, zero)
        self.scale.fill_(best[1])
        self.zero_point.fill_(best[2])

    def finish_observing(self) -> None:
        self.observing = False
        if self._samples:
            self._calibrate_activations(torch.cat(self._samples))
            self.calibrated.fill_(True)
        self._samples = []

    def grid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values on the grid, scale, zero point) as the graph stores them."""
        with torch.no_grad():
            if self.method == "dorefa" and self.role == "weights":
                return self._dorefa_weights(x), self.dorefa_scale(x), torch.zeros_like(self.dorefa_scale(x))
            scale = self.scale.detach().abs().clamp_min(1e-8)
            return self._quantize(x, scale, self.zero_point), scale, self.zero_point.clone()


class QuantLayer(nn.Module):
    """A conv2d or linear layer whose weights and input pass through fake quantization."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, scheme: QuantScheme):
        super().__init__()
        self.layer = layer
        per_channel = scheme.weight_granularity == "per-channel"
        self.weight_quant = FakeQuant(scheme.weights, "weights", scheme.method,
                                      layer.weight.shape[0] if per_channel else None)
        self.input_quant = FakeQuant(scheme.activations, "activations", scheme.method)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_quant(self.layer.weight)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(self.input_quant(x), weight, self.layer.bias)
        return F.linear(self.input_quant(x), weight, self.layer.bias)


def _quantizable(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.padding_mode == "zeros") or type(module) is nn.Linear


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold every inference batch norm that follows a conv: in nn.Sequential containers and in
    GraphModules (module calls), with torch's own fuse_conv_bn_eval. In place; returns `module`."""
    for parent in list(module.modules()):
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for first, second in zip(names, names[1:]):
                conv, bn = parent._modules.get(first), parent._modules.get(second)
                if type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                    parent._modules[first] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                    del parent._modules[second]
        elif isinstance(parent, fx.GraphModule):
            _fold_graph_batch_norms(parent)
    return module


def _fold_graph_batch_norms(gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if bn is not None and node.args else None
        if not (isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and isinstance(source, fx.Node)
                and source.op == "call_module" and type(modules.get(source.target)) is nn.Conv2d
                and len(source.users) == 1):
            continue
        fused = fuse_conv_bn_eval(modules[source.target].eval(), bn.eval())
        gm.get_submodule(source.target.rpartition(".")[0] or "").__setattr__(source.target.rpartition(".")[2], fused)
        node.replace_all_uses_with(source)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()


def quantize_modules(module: nn.Module, scheme: QuantScheme) -> int:
    """Wrap every zero-padded nn.Conv2d and nn.Linear of `module` in a QuantLayer, in place."""
    count = 0
    for parent in list(module.modules()):
        if isinstance(parent, QuantLayer):
            continue
        for name, child in list(parent.named_children()):
            if _quantizable(child):
                setattr(parent, name, QuantLayer(child, scheme))
                count += 1
    return count


def quantizers(module: nn.Module) -> list[FakeQuant]:
    return [m for m in module.modules() if isinstance(m, FakeQuant)]


@torch.no_grad()
def calibrate(module: nn.Module, run: Callable[[], object]) -> None:
    """Initialise every quantizer: weights from themselves, activations from what `run()` feeds them."""
    for quant in quantizers(module):
        quant.observing = quant.role == "activations"
    try:
        run()
    finally:
        for quant in quantizers(module):
            if quant.role == "activations":
                quant.finish_observing()
    for layer in (m for m in module.modules() if isinstance(m, QuantLayer)):
        if not bool(layer.weight_quant.calibrated):
            layer.weight_quant.calibrate(layer.layer.weight.detach())


class _QuantTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, QuantLayer) or super().is_leaf_module(m, qualified_name)


def materialize(module: nn.Module) -> fx.GraphModule:
    """`module` traced flat, every QuantLayer written in the graph form of the module docstring."""
    gm = fx.GraphModule(module, _QuantTracer().trace(module))
    graph = gm.graph
    for index, node in enumerate(n for n in list(graph.nodes) if n.op == "call_module"
                                 and isinstance(gm.get_submodule(n.target), QuantLayer)):
        layer: QuantLayer = gm.get_submodule(node.target)
        inner = layer.layer
        values, scale, zero_point = layer.weight_quant.grid(inner.weight)
        prefix = f"quant_{index}"
        # parameters (frozen), so that parameter counts and optimizers see the layer's weights
        gm.register_parameter(f"{prefix}_weight", nn.Parameter(values.detach().clone(), requires_grad=False))
        if inner.bias is not None:
            gm.register_parameter(f"{prefix}_bias", nn.Parameter(inner.bias.detach().clone(), requires_grad=False))
        wq = layer.weight_quant
        with graph.inserting_before(node):
            weight = graph.get_attr(f"{prefix}_weight")
            if wq.per_channel:
                gm.register_buffer(f"{prefix}_weight_scale", scale.float())
                gm.register_buffer(f"{prefix}_weight_zero_point", zero_point.round().to(torch.int32))
                weight = graph.call_function(torch.fake_quantize_per_channel_affine, (
                    weight, graph.get_attr(f"{prefix}_weight_scale"), graph.get_attr(f"{prefix}_weight_zero_point"),
                    0, wq.qmin, wq.qmax))
            else:
                weight = graph.call_function(torch.fake_quantize_per_tensor_affine,
                                             (weight, float(scale), 0, wq.qmin, wq.qmax))
            aq = layer.input_quant
            x = graph.call_function(torch.fake_quantize_per_tensor_affine, (
                node.args[0], float(aq.scale.detach().abs().clamp_min(1e-8)), int(aq.zero_point), aq.qmin, aq.qmax))
            bias = graph.get_attr(f"{prefix}_bias") if inner.bias is not None else None
            if isinstance(inner, nn.Conv2d):
                out = graph.call_function(F.conv2d, (x, weight, bias, inner.stride, inner.padding, inner.dilation,
                                                     inner.groups))
            else:
                out = graph.call_function(F.linear, (x, weight, bias))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def is_fake_quant(node: object) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in (
        torch.fake_quantize_per_tensor_affine, torch.fake_quantize_per_channel_affine)

