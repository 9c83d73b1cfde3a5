"""Quantized layers: every zero-padded conv2d and linear wrapped so its weights and input pass
through fake quantization, and calibration of all quantizers from data."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite.quant.fake import FakeQuant
from fxrewrite.quant.scheme import QuantScheme


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


def dequantize_modules(module: nn.Module) -> int:
    """Replace every QuantLayer of `module` by the layer it wraps (its trained float weights), in place."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QuantLayer):
                setattr(parent, name, child.layer)
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
