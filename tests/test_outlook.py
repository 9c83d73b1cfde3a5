"""The longer-budget outlook: a fit of the running best held-out score against log time
(fxrewrite.distill.training.outlook)."""

from __future__ import annotations

import math

import pytest

from fxrewrite.distill.training.monitor import Point
from fxrewrite.distill.training.outlook import doubling_gain, longer_budget


def _history(scores: list[float], phase: str = "finetune", agreement: bool = True) -> list[Point]:
    """The phase scored at its start (10 s into the run) and after epochs 10 s apart."""
    return [Point("blockwise-parallel", 1, 5.0, 0.5, 0.9)] + [
        Point(phase, epoch, 10.0 + 10 * epoch, score if agreement else None, score if not agreement else 0.9)
        for epoch, score in enumerate(scores)]


def test_the_fit_recovers_a_logarithmic_curve():
    points = [(t, 0.6 + 0.05 * math.log(t)) for t in (10, 20, 40, 80, 160)]
    assert doubling_gain(points) == pytest.approx(0.05 * math.log(2))


def test_a_curve_still_rising_says_what_twice_the_time_would_give():
    scores = [0.5] + [0.6 + 0.05 * math.log(10 * epoch) for epoch in range(1, 9)]
    outlook = longer_budget(_history(scores), "finetune", "time budget reached")
    assert outlook.score == "agreement" and outlook.epochs == 8 and outlook.seconds == 80
    assert outlook.doubling_gain == pytest.approx(0.05 * math.log(2), abs=1e-5)
    assert "+3.5 points of agreement" in outlook.text and "(time budget reached)" in outlook.text


def test_a_flat_best_says_more_time_would_likely_not_help():
    # the last epochs fall below the best: the phase keeps its best, so the curve is flat, not falling
    outlook = longer_budget(_history([0.5, 0.9, 0.9, 0.88, 0.85, 0.87]), "finetune")
    assert outlook.doubling_gain == 0 and "would likely not help" in outlook.text


def test_without_top1_the_outlook_is_in_held_out_cosine():
    scores = [0.5] + [0.8 + 0.01 * math.log(10 * epoch) for epoch in range(1, 5)]
    outlook = longer_budget(_history(scores, agreement=False), "finetune")
    assert outlook.score == "cosine" and "held-out cosine" in outlook.text


def test_too_few_epochs_give_no_outlook():
    assert longer_budget(_history([0.5, 0.6, 0.7]), "finetune") is None
    assert longer_budget(_history([0.5, 0.6, 0.7, 0.8]), "another phase") is None


def test_the_outlook_never_passes_a_perfect_score():
    scores = [0.5] + [0.9 + 0.05 * math.log(epoch) for epoch in range(1, 9)]  # ends at 0.994, rising fast
    outlook = longer_budget(_history(scores), "finetune")
    assert outlook.doubling_gain == pytest.approx(1.0 - scores[-1], abs=1e-5)
