"""approx-gelu-as-tanh (APPROXIMATE): the exact GELU as its tanh approximation, for chips with tanh.

gelu(x) ~ 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) (Hendrycks and Gimpel). The two differ
by at most MAX_ERROR (absolute, over all x), reported in the note of every rewrite; distillation
fine-tunes around it. Not in the default pipeline: name it in --passes.
"""

import math

import torch

from fxrewrite.rewrite import Match, PatternPass, Rewriter, Rule, RuleSet, op, register


def _tanh_form(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


_GRID = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
#: the largest |tanh form - exact GELU| (both vanish or agree to rounding beyond +-10)
MAX_ERROR = float((_tanh_form(_GRID) - torch.nn.functional.gelu(_GRID)).abs().max())


def _as_tanh(match: Match, rewriter: Rewriter):
    gelu = match["gelu"]
    anchor, x, fn = gelu.node, gelu.inputs[0], rewriter.function
    cubic = fn(anchor, torch.mul, fn(anchor, torch.mul, fn(anchor, torch.mul, x, x), x), 0.044715)
    inner = fn(anchor, torch.mul, fn(anchor, torch.add, x, cubic), math.sqrt(2 / math.pi))
    gate = fn(anchor, torch.add, fn(anchor, torch.tanh, inner), 1.0)
    rewriter.notes.append(f"{anchor.name}: GELU by its tanh form, off by at most {MAX_ERROR:.2g} (absolute)")
    return fn(anchor, torch.mul, fn(anchor, torch.mul, x, 0.5), gate)


register(PatternPass(
    name="approx-gelu-as-tanh",
    summary="APPROXIMATE: exact GELU as 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))",
    rules=RuleSet((Rule("gelu", op("gelu", name="gelu", where={"the exact (erf) GELU": lambda v: (
        v.attrs["approximate"] == "none")}), _as_tanh),)),
    must_precede=("mul-constant-as-batch-norm", "add-as-concat-conv", "add-as-concat-linear", "add-constant-as-batch-norm",),
    produces_ops=frozenset({"mul", "add", "tanh"}),
    exact=False,
))
