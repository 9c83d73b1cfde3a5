"""The built-in examples the demo runs: model specs and calibration data, loadable as specs."""

from __future__ import annotations

import torch

from fxrewrite.quant import load_calibration
from fxrewrite.examples import tiny_convnext


def test_the_example_model_maps_digits_sized_images_to_ten_logits():
    assert tiny_convnext()(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_the_digits_are_calibration_data_without_labels():
    data = load_calibration("fxrewrite.examples:digits_inputs", torch.zeros(1, 1, 28, 28), 1797, 64)
    assert data.samples == (1438, 359)
    assert 0 <= data.train[0].min() and data.train[0].max() <= 1
