"""Post-training quantization of a graph that needs no student: batch norms folded, every layer's
quantizers calibrated on the data, no training."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx

from fxrewrite.cost import Size
from fxrewrite.ir import annotate_shapes
from fxrewrite.quant.graph_form import materialize
from fxrewrite.quant.layers import calibrate, quantize_modules
from fxrewrite.quant.prepare import fold_for_quantization
from fxrewrite.quant.scheme import QuantScheme
from fxrewrite.metrics import Agreement, agreement

#: calibration batches that set the activation ranges
CALIBRATION_BATCHES = 8


@dataclass
class Calibrated:
    """A quantized graph with its agreement against the float one, its size, and the time taken."""

    gm: fx.GraphModule
    quantization: str
    agreement: Agreement
    before: Size
    after: Size
    seconds: dict[str, float]


def measure_per_input(gm: fx.GraphModule, sample: torch.Tensor) -> Size:
    """MACs for one input and the parameters of `gm` (a copy is shaped at batch 1)."""
    return Size.of(annotate_shapes(copy.deepcopy(gm), (sample,)), count_nodes=False)


def post_training_quantize(gm: fx.GraphModule, scheme: QuantScheme, batches: Sequence[torch.Tensor],
                           held_out: Sequence[torch.Tensor]) -> Calibrated:
    """Quantize a graph that needs no student: batch norms folded, scales calibrated, no training."""
    start = time.perf_counter()
    model = fold_for_quantization(copy.deepcopy(gm).eval(), (batches[0],))
    quantize_modules(model, scheme)
    calibrate(model, lambda: [model(b) for b in batches[:CALIBRATION_BATCHES]])
    sample = batches[0][:1]
    flat = annotate_shapes(materialize(model), (sample,))
    return Calibrated(flat, scheme.describe(), agreement(flat, gm, held_out), measure_per_input(gm, sample),
                      Size.of(flat, count_nodes=False), {"calibrate": round(time.perf_counter() - start, 3)})
