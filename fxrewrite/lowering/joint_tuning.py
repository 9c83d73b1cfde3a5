"""The restructuring's replacements trained together in the network, label-free.

Each replacement was fitted alone on its teacher block's input and output; in the network their
errors compound through the blocks after them, which no block's fit sees. So after the planner has
chosen, the replacements (and nothing else: the rest is the teacher's, frozen) are trained for a few
epochs on the mean squared error between the network's outputs and the teacher's on the calibration
inputs, relative to the teacher outputs' variance. Held-out agreement with the teacher is scored
before and after every epoch and the best state, the start included, is kept: tuning never lowers it.
Where top-1 agreement ties (it saturates on the teacher's own training images) the cosine of the
outputs decides, as in distillation's monitor.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrewrite.metrics import Score, score_between

EPOCHS = 3
LR = 1e-3
BATCH = 64


def outputs_of(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([module(batch) for batch in inputs.split(BATCH)])


def score_of(module: nn.Module, inputs: torch.Tensor, teacher: torch.Tensor) -> Score:
    """`module`'s top-1 agreement (where the outputs are class scores) and cosine with the teacher's
    outputs `teacher` on `inputs`."""
    return score_between(outputs_of(module, inputs), teacher)


def agreement_with(module: nn.Module, inputs: torch.Tensor, teacher: torch.Tensor) -> float:
    """Top-1 agreement with the teacher where the outputs are class scores, else the mean cosine."""
    return score_of(module, inputs, teacher).headline


def tune_jointly(gm: fx.GraphModule, replacements: list[nn.Module], train: torch.Tensor, wanted: torch.Tensor,
                 held: torch.Tensor, teacher_held: torch.Tensor, seed: int = 0) -> tuple[float, float]:
    """Train `replacements` (submodules of `gm`) so that `gm` on `train` gives the teacher's `wanted`
    (module docstring); `gm` ends in its best held-out state. Returns the held-out agreement before and after."""
    parameters = [p for module in replacements for p in module.parameters()]
    frozen = [p for p in gm.parameters() if all(p is not q for q in parameters)]
    for parameter in frozen:
        parameter.requires_grad_(False)
    optimizer = torch.optim.Adam(parameters, LR)
    scale = wanted.var().clamp_min(1e-12)
    generator = torch.Generator().manual_seed(seed)
    gm.eval()  # the teacher's layers keep their statistics
    best = start = score_of(gm, held, teacher_held)
    best_state = copy.deepcopy(gm.state_dict())
    try:
        for _ in range(EPOCHS):
            for rows in torch.randperm(len(train), generator=generator).split(BATCH):
                optimizer.zero_grad()
                (F.mse_loss(gm(train[rows]), wanted[rows]) / scale).backward()
                optimizer.step()
            score = score_of(gm, held, teacher_held)
            if score.beats(best):
                best, best_state = score, copy.deepcopy(gm.state_dict())
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
    gm.load_state_dict(best_state)
    return start.headline, best.headline
