"""`FakeQuant`: quantize-dequantize one tensor with LSQ or DoReFa, calibrated by least squared error."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from fxrewrite.quant.scheme import Method, format_range
from fxrewrite.target import QuantFormat

_CLIP_FRACTIONS = torch.linspace(0.3, 1.0, 15)
_SAMPLE_ELEMENTS = 1 << 16


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
            # LSQ's gradient scale counts the elements one step size quantizes in a step: for activations under
            # data parallel training, every process's share of the batch (else N processes step it sqrt(N) faster)
            shares = dist.get_world_size() if self.role == "activations" and dist.is_initialized() else 1
            per_element = x.numel() * shares // self.scale.numel()
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
