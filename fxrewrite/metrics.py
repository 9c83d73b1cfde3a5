"""How close a graph's outputs are to its teacher's, measured one way everywhere: exact rewrites'
verification, students' distillation and monitoring, the restructuring planner and joint tuning,
the ONNX and Ethos-U checks.

- `relative_error`: max |got - want| / max |want| over every output tensor; reported as
  `max_relative_error` (exact lowering, ONNX), where a rewrite must be exact to float32.
- `l2_relative_error`: ||got - want|| / ||want||; reported as "L2 relative error" (a restructured
  block against its teacher block, an int8 program against its float graph), where errors are
  approximations and the norm of the whole output is the scale.
- top-1 agreement of class scores, only where they carry class information (`no_class_information`);
  the mean cosine per sample otherwise, of the outputs' deviations from the teacher's mean where the
  scores carry none (`score_between`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fxrewrite.ir import tensor_leaves


def relative_error(got: object, want: object) -> float:
    """max |got - want| / max |want| over every output tensor (|want| over its finite values); infinite
    when the outputs do not pair up or a NaN stands anywhere: NaN never equals anything, while equal
    infinities (a -inf attention mask) count as equal."""
    got_leaves, want_leaves = tensor_leaves(got), tensor_leaves(want)
    if len(got_leaves) != len(want_leaves):
        return float("inf")
    worst = 0.0
    for g, w in zip(got_leaves, want_leaves):
        if g.shape != w.shape:
            return float("inf")
        if g.numel() == 0:
            continue
        finite = w[torch.isfinite(w)] if w.is_floating_point() else w
        scale = (finite.abs().max().item() if finite.numel() else 0.0) or 1.0
        if w.is_floating_point():
            # below sqrt(tiny) (1e-19 in float32) squares underflow: variances vanish, norms stop normalising
            # and cancellations leave no relative precision, so such a tensor (a randomly initialised deep
            # network's activations can fall to 1e-40) is compared at that scale instead of its own
            scale = max(scale, math.sqrt(torch.finfo(w.dtype).tiny))
        # in the common dtype: the difference of two close floats is exact in their own precision
        # (Sterbenz), and a far one is off by a relative 1e-7 at most, so float64 would only cost time
        common = torch.promote_types(g.dtype, w.dtype)
        g, w = g.to(common), w.to(common)
        difference = torch.where(g == w, torch.zeros((), dtype=common), (g - w).abs()).max().item()
        if math.isnan(difference):
            return float("inf")
        worst = max(worst, difference / scale)
    return worst


def l2_relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| (a zero `want` counts as norm 1e-12)."""
    return ((got - want).norm() / want.norm().clamp_min(1e-12)).item()


def top1_agreement(got: torch.Tensor, want: torch.Tensor) -> float:
    """How often the top-1 classes of two (N, classes) score tensors agree; a row holding a NaN or an
    infinity agrees with nothing (argmax would call two NaN rows equal)."""
    finite = torch.isfinite(got).all(1) & torch.isfinite(want).all(1)
    return ((got.argmax(1) == want.argmax(1)) & finite).float().mean().item()


#: teacher outputs that vary between inputs by less than this share of their size carry no class information
NEAR_CONSTANT = 1e-3


#: z of the one-sided 95% confidence an agreement's lower bound holds at
CONFIDENCE_Z = 1.645


def agreement_lower_bound(agreement: float, samples: int, z: float = CONFIDENCE_Z) -> float:
    """The Wilson score lower bound of a top-1 agreement p measured on n = `samples` inputs,
    (p + z^2/2n - z sqrt(p (1 - p)/n + z^2/4n^2)) / (1 + z^2/n): the agreement that inputs drawn like
    them reach at one-sided 95% confidence. A few hundred held-out inputs measure agreement to about
    a point; a budget of half a point spent on the measured figure is spent on that noise."""
    n = max(samples, 1)
    centre = agreement + z * z / (2 * n)
    spread = z * math.sqrt(max(agreement * (1 - agreement), 0.0) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def no_class_information(want: torch.Tensor) -> str:
    """Why top-1 agreement with the teacher's class scores `want` (N, C), C > 1, would mean nothing, else
    '': the teacher gives one class for every input (a randomly initialised network on random inputs
    does), or its scores hardly vary between inputs; agreement would then be 100% for any student that
    outputs a constant."""
    finite = want[torch.isfinite(want).all(1)]
    if len(finite) < 2:
        return ""
    classes = finite.argmax(1).unique()
    if len(classes) == 1:
        return f"the teacher gives class {classes.item()} for every one of the {len(finite)} inputs"
    spread = ((finite - finite.mean(0)).norm() / finite.norm().clamp_min(1e-30)).item()
    if spread < NEAR_CONSTANT:
        return f"the teacher's scores vary between inputs by {spread:.1e} of their size"
    return ""


def is_class_scores(want: torch.Tensor) -> bool:
    """Whether outputs of this shape are class scores: (N, C) with C > 1."""
    return want.dim() == 2 and want.shape[1] > 1


def deviation_cosine(got: torch.Tensor, want: torch.Tensor) -> float:
    """The mean cosine per sample of the outputs' deviations from the teacher's mean output: how well
    `got` follows what varies between inputs (0 where nothing does)."""
    mean = want.flatten(1).mean(0)
    return F.cosine_similarity(got.flatten(1) - mean, want.flatten(1) - mean).mean().item()


@dataclass(frozen=True)
class Agreement:
    """A student against its teacher on held-out inputs: MSE and cosine of the outputs, and for
    class scores how often the top-1 class agrees. Where the teacher's scores carry no class
    information (`vacuous` says why), top-1 agreement is not given and the cosine is that of the
    outputs' deviations from the teacher's mean output (deviation_cosine)."""

    samples: int
    mse: float
    cosine: float
    top1: float | None = None
    vacuous: str = ""

    def as_dict(self) -> dict[str, float | str]:
        document = {"held_out_samples": self.samples, "held_out_mse": self.mse, "held_out_cosine": self.cosine}
        return (document | ({"top1_agreement": self.top1} if self.top1 is not None else {})
                | ({"no_class_information": self.vacuous} if self.vacuous else {}))


def agreement(student: Callable[[torch.Tensor], torch.Tensor], teacher: Callable[[torch.Tensor], torch.Tensor],
              batches: Sequence[torch.Tensor]) -> Agreement:
    with torch.no_grad():
        # a structured output (a tuple, a model output class) is judged on its first tensor
        pairs = [(tensor_leaves(student(x))[0], tensor_leaves(teacher(x))[0]) for x in batches]
    got, want = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    mse = F.mse_loss(got, want).item()
    vacuous = no_class_information(want) if is_class_scores(want) else ""
    if vacuous:
        return Agreement(len(got), mse, deviation_cosine(got, want), vacuous=vacuous)
    return Agreement(len(got), mse, F.cosine_similarity(got.flatten(1), want.flatten(1)).mean().item(),
                     top1_agreement(got, want) if is_class_scores(want) else None)


#: a cosine gain below this is no improvement (agreement counts any gain: it moves in whole samples)
MIN_COSINE_GAIN = 1e-4


@dataclass(frozen=True)
class Score:
    """Held-out top-1 agreement (None when the output is not class scores, or scores that carry no
    class information: `vacuous` says why, and the cosine is then of the deviations from the
    teacher's mean output), cosine, and the number of classes the agreement is over."""

    agreement: float | None
    cosine: float
    classes: int = 0
    vacuous: str = ""

    @property
    def headline(self) -> float:
        """The agreement where the outputs are class scores, else the cosine."""
        return self.cosine if self.agreement is None else self.agreement

    def beats(self, other: Score | None) -> bool:
        if other is None:
            return True
        if self.agreement is not None and other.agreement is not None and self.agreement != other.agreement:
            return self.agreement > other.agreement
        return self.cosine > other.cosine + MIN_COSINE_GAIN


def score_between(got: torch.Tensor, want: torch.Tensor) -> Score:
    """Outputs `got` against the teacher's `want`: the mean cosine per sample, and top-1 agreement
    where the outputs are class scores (N, C) with C > 1 that carry class information (else the
    cosine of the deviations from the teacher's mean output: compare.no_class_information)."""
    vacuous = no_class_information(want) if is_class_scores(want) else ""
    if vacuous:
        return Score(None, deviation_cosine(got, want), vacuous=vacuous)
    cosine = F.cosine_similarity(got.flatten(1), want.flatten(1)).mean().item()
    classes = got.shape[1] if is_class_scores(want) else 0
    return Score(top1_agreement(got, want) if classes else None, cosine, classes)
