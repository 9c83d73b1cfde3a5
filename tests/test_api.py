"""`fxrewrite.lower`, the Python face of `fxrewrite lower`: specs, modules, the typed report."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

import fxrewrite
from fxrewrite.examples import digits_inputs
from fxrewrite.report import VERSION


def test_lower_a_torchvision_spec_exactly_and_read_the_report():
    lowered = fxrewrite.lower("torchvision.models:resnet18", target="npu-generic", input_shapes=["1,3,64,64"])
    report = lowered.report
    assert lowered.legal and not report.still_illegal and not report.needs_distillation
    assert report.max_relative_error < 1e-5
    assert report.rewrites["fold-batch-norm"] == 20
    # the 7x7 stem as 3x3 windows on shifted copies, the cheaper of the two exact forms
    assert any("chose partial-sums" in note for note in report.notes)
    assert report.after.macs < 1.1 * report.before.macs
    document = json.loads(report.to_json())
    assert document["version"] == VERSION and document["target"] == "npu-generic"
    assert {"still_illegal", "regions", "max_relative_error", "before", "after", "seconds"} <= document.keys()
    assert "every node is legal on npu-generic" in report.to_text()
    assert lowered.gm(*lowered.example_inputs).shape == (1, 1000)


def test_lower_a_module_with_example_inputs():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 48, 48)
    model = torchvision.models.mobilenet_v2().eval()
    lowered = fxrewrite.lower(model, (x,), target="npu-generic")
    assert lowered.legal and lowered.report.max_relative_error < 1e-5
    torch.testing.assert_close(lowered.gm(x), model(x), rtol=1e-4, atol=1e-4)


def test_quantization_without_calibration_data_is_refused():
    with pytest.raises(fxrewrite.FxrewriteError, match="--wbits/--abits need calibration data"):
        fxrewrite.lower("fxrewrite.examples:tiny_convnext", target="archnet", input_shapes=["1,1,28,28"], wbits=4)


def test_lower_the_digits_example_with_distillation_at_4_bits():
    lowered = fxrewrite.lower("fxrewrite.examples:digits_convnext", target="archnet", input_shapes=["1,1,28,28"],
                              calib=digits_inputs(), calib_size=1797, wbits=4, abits=4, epochs=3, finetune_epochs=2)
    report = lowered.report
    assert lowered.legal, [(n.name, n.reason) for n in report.still_illegal]
    assert report.distillation is not None and report.distillation.quantization.startswith("lsq: weights int4")
    assert len(report.distillation.students) == len(report.regions) >= 1
    assert report.distillation.samples == (1438, 359)
    assert report.distillation.agreement.top1 >= 0.85
    assert json.loads(report.to_json())["distillation"]["top1_agreement"] == report.distillation.agreement.top1
