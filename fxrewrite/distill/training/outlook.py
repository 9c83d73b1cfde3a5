"""What a longer time budget would likely give, from the run's own held-out scores.

A phase keeps its best state, so its curve is the running best of the held-out score s (top-1
agreement, else the cosine) after each epoch, against t, the seconds since the phase began.
Learning curves flatten roughly as the logarithm of training time, so s(t) ~ a + b ln t is fitted by
least squares over the second half of the phase's epochs (at least FIT_EPOCHS), and a budget twice as
long would add about b ln 2, at most what a perfect score leaves. The first epochs' steep rise does
not continue: on the held-out shapes benchmark (ConvNeXt, 4w4a, 60 epochs), fits over the first 15,
20 and 30 epochs predicted +4.3, +3.6 and +2.8 points for the next doubling of time where the run then
gave +0.8, +0.9 and +1.1; fits over their second halves predicted +0.8, +1.0 and +0.9. That is an
estimate from one run, not a promise: a phase whose best score stopped rising (b ln 2 below FLAT)
says more time would likely not help.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from fxrewrite.distill.training.monitor import Point

#: a doubling gain below this (agreement: 0.1 point; cosine: 1e-4) is no gain worth the time
FLAT = {"agreement": 1e-3, "cosine": 1e-4}
#: the fewest scored epochs a fit is made from
FIT_EPOCHS = 3


@dataclass(frozen=True)
class Outlook:
    """The fitted gain of doubling the phase's time, in the score's own unit, and the sentence saying it."""

    phase: str
    score: str
    epochs: int
    seconds: float
    doubling_gain: float
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def doubling_gain(points: Sequence[tuple[float, float]]) -> float:
    """b ln 2 of the least-squares fit s = a + b ln t over (t, s) points with t > 0."""
    xs = [math.log(t) for t, _ in points]
    ys = [s for _, s in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    return 0.0 if spread == 0 else math.log(2) * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / spread


def longer_budget(history: Sequence[Point], phase: str, stopped: str = "") -> Outlook | None:
    """The outlook of `phase` from its scored epochs in `history` (None with fewer than FIT_EPOCHS);
    `stopped` is why it stopped before its cap, if it did."""
    scored = [p for p in history if p.phase == phase]
    if len(scored) < FIT_EPOCHS + 1:  # the start and FIT_EPOCHS epochs
        return None
    score = "agreement" if all(p.agreement is not None for p in scored) else "cosine"
    start, best, points = scored[0].seconds, -math.inf, []
    for point in scored:
        best = max(best, point.agreement if score == "agreement" else point.cosine)
        if point.epoch > 0:
            points.append((max(point.seconds - start, 1e-3), best))
    # never past a perfect score: agreement and cosine end at 1
    gain = min(doubling_gain(points[min(len(points) // 2, len(points) - FIT_EPOCHS):]), 1.0 - best)
    seconds = points[-1][0]
    said = f"{100 * gain:+.1f} points of agreement" if score == "agreement" else f"{gain:+.4f} held-out cosine"
    if gain < FLAT[score]:
        text = (f"{phase}: its best held-out {score} stopped rising over its {len(points)} epochs ({seconds:.0f} s); "
                "a longer --time-budget would likely not help (more calibration inputs or a larger student might)")
    else:
        why = f" ({stopped})" if stopped else ""
        text = (f"{phase}: {len(points)} epochs in {seconds:.0f} s{why}, its best held-out {score} still rising: twice "
                f"the time would likely give about {said} (fitted against log time over the second half of its epochs)")
    return Outlook(phase, score, len(points), round(seconds, 1), round(gain, 5), text)
