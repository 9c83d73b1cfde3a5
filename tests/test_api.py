"""`fxrewrite.lower`, the Python face of `fxrewrite lower`: specs, modules, the typed report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

import fxrewrite
from fxrewrite.examples import digits_inputs
from fxrewrite.report import VERSION

TARGETS = Path(__file__).parents[1] / "targets"


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
    # 3 + 2 epochs over one student per teacher block (7 regions): 0.84 measured
    assert report.distillation.agreement.top1 >= 0.8
    assert json.loads(report.to_json())["distillation"]["top1_agreement"] == report.distillation.agreement.top1


class _Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.drop = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(torch.relu(self.conv(x)))


BAD_ARGUMENTS = {
    "a dict of inputs": (dict(example_inputs={"x": torch.randn(1, 3, 8, 8)}), "example_inputs must be a tensor"),
    "a numpy array": (dict(example_inputs=torch.randn(1, 3, 8, 8).numpy()), "not a ndarray"),
    "inputs of the wrong shape": (dict(example_inputs=(torch.randn(1, 5, 8, 8),)), "fails on example inputs of shape"),
    "a target of the wrong type": (dict(target=3), "target must be a Target"),
    "calib of the wrong type": (dict(calib=[1, 2]), "calib must name a source"),
    "bits as text": (dict(calib="synthetic", wbits="4"), "--wbits '4': give a whole number of bits"),
    "fractional epochs": (dict(calib="synthetic", epochs=1.5), "--epochs 1.5: give a whole number"),
    "shapes as one string": (dict(example_inputs=None, input_shapes="1,3,8,8"), "not a string"),
    "a NaN growth limit": (dict(max_growth=float("nan")), "--max-growth nan: give a positive finite number"),
    "a NaN tolerance": (dict(tolerance=float("nan")), "--tolerance nan"),
    "an unknown keyword": (dict(epoch=3), "unknown keywords epoch"),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_the_api_refuses_bad_arguments_at_the_door_with_the_cli_sentences(case, capfd):
    keywords, message = BAD_ARGUMENTS[case]
    keywords = {"example_inputs": (torch.randn(1, 3, 8, 8),), **keywords}
    with pytest.raises(fxrewrite.FxrewriteError, match=message.replace("(", r"\(").replace("?", r"\?")):
        fxrewrite.lower(_Small(), keywords.pop("example_inputs"), **keywords)
    assert capfd.readouterr().err == ""  # no torch logs or tracebacks before the error


def test_the_api_takes_a_bare_tensor_a_list_and_a_path_and_keeps_the_module_mode(tmp_path):
    model = _Small().train()
    x = torch.randn(1, 3, 8, 8)
    lowered = fxrewrite.lower(model, x, target=Path(TARGETS) / "npu-generic.toml")
    assert lowered.legal and model.training  # the caller's module keeps its mode
    assert fxrewrite.lower(model, [x], target="npu-generic").legal
    with pytest.raises(fxrewrite.FxrewriteError, match="model must be an nn.Module"):
        fxrewrite.lower(42, x)


def test_a_model_spec_may_be_a_path(tmp_path):
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(_Small().eval(), (torch.randn(1, 3, 8, 8),)), path)
    report = fxrewrite.check(path, "npu-generic")
    assert report.model == str(path) and [r.kind for r in report.rows if r.kind == "conv2d"] == ["conv2d"]
