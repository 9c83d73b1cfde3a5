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

from fxrewrite.quant.calibration_data import SOURCES_HELP, CalibrationData, load_calibration
from fxrewrite.quant.fake import FakeQuant
from fxrewrite.quant.graph_form import materialize
from fxrewrite.quant.layers import QuantLayer, calibrate, dequantize_modules, quantize_modules, quantizers
from fxrewrite.quant.post_training import post_training_quantize
from fxrewrite.quant.prepare import fold_for_quantization
from fxrewrite.quant.scheme import METHODS, Method, QuantScheme, format_range, scheme_for

__all__ = ["METHODS", "SOURCES_HELP", "CalibrationData", "FakeQuant", "Method", "QuantLayer", "QuantScheme",
           "calibrate", "dequantize_modules", "fold_for_quantization", "format_range", "load_calibration", "materialize",
           "post_training_quantize", "quantize_modules", "quantizers", "scheme_for"]
