"""Comparing a graph with its teacher: NaN never agrees, infinities agree with themselves, and
tensors whose squares underflow are judged at the scale float32 can resolve."""

from __future__ import annotations

import math

import torch

from fxrewrite.metrics import agreement, relative_error, top1_agreement


def test_nan_is_never_equal_and_equal_infinities_are():
    want = torch.tensor([1.0, float("-inf"), 3.0])
    assert relative_error(want.clone(), want) == 0.0  # a -inf attention mask compares equal to itself
    assert relative_error(torch.tensor([1.0, float("nan"), 3.0]), want) == math.inf
    both_nan = torch.tensor([float("nan"), 2.0])
    assert relative_error(both_nan, both_nan.clone()) == math.inf


def test_top1_agreement_does_not_count_rows_of_nan_as_agreeing():
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    broken = torch.full((2, 2), float("nan"))
    assert top1_agreement(scores, scores) == 1.0
    assert top1_agreement(broken, broken) == 0.0
    result = agreement(lambda x: torch.full((len(x), 3), float("nan")), lambda x: x[:, :3], [torch.randn(4, 5)])
    assert result.top1 == 0.0 and math.isnan(result.cosine)


def test_tensors_whose_squares_underflow_are_compared_at_the_scale_float32_resolves():
    """transformers' MobileViT with its own random initialisation has activations of 1e-33: its layer
    norms' variances underflow and rounding makes relative differences of 1e-4 after an exact fold.
    Below sqrt(tiny) (1e-19) a tensor is judged at that scale; above it, relative errors still count."""
    tiny = torch.randn(64) * 1e-33
    assert relative_error(tiny * (1 + 1e-4), tiny) < 1e-12
    small = torch.randn(64) * 1e-10
    assert relative_error(small * (1 + 1e-4), small) > 5e-5
