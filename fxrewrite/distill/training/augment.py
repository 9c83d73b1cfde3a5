"""Label-free augmentation for the end-to-end phase (issue 13): the student sees new inputs every
epoch and learns the teacher's outputs on them, computed as it goes.

- images (float inputs of rank 4): each one shifted by up to an eighth of its height and width (at
  least one pixel) with zeros coming in, and mirrored left-right with probability 1/2;
- mixup, as Arch-Net does on a tenth of its batches: on one batch in MIXUP_EVERY, every input is
  blended with another of the batch, x = l * x + (1 - l) * x', l uniform in [0, 1];
- integer inputs (token ids) are left as they are.

The draws come from a generator seeded by the step, so a resumed run sees the same inputs as an
uninterrupted one. Labels never exist here: the targets are the teacher's outputs on the new inputs,
so the augmentation widens what the student is taught without teaching anything wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite.distill.training.recording import OutputHooks, Recorded

MIXUP_EVERY = 10
#: the largest shift, as a share of each side
SHIFT_SHARE = 1 / 8


def augment(batch: torch.Tensor, step: int, seed: int = 0) -> torch.Tensor:
    """`batch` augmented as the module docstring says, with draws fixed by (`seed`, `step`)."""
    if not batch.is_floating_point():
        return batch
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    out = batch
    if batch.dim() == 4:
        out = _shift_and_mirror(batch, generator)
    if int(torch.randint(MIXUP_EVERY, (1,), generator=generator)) == 0 and len(out) > 1:
        mix = torch.rand(len(out), *([1] * (out.dim() - 1)), generator=generator).to(out.device, out.dtype)
        partner = torch.randperm(len(out), generator=generator).to(out.device)
        out = mix * out + (1 - mix) * out[partner]
    return out


def _shift_and_mirror(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n, _, height, width = batch.shape
    dy, dx = max(1, round(height * SHIFT_SHARE)), max(1, round(width * SHIFT_SHARE))
    padded = F.pad(batch, (dx, dx, dy, dy))
    tops = torch.randint(2 * dy + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(2 * dx + 1, (n,), generator=generator).tolist()
    mirrored = (torch.rand(n, generator=generator) < 0.5).tolist()
    crops = [padded[i, :, top:top + height, left:left + width] for i, (top, left) in enumerate(zip(tops, lefts))]
    return torch.stack([crop.flip(-1) if flip else crop for crop, flip in zip(crops, mirrored)])


class Relabel:
    """The teacher's final output (or the reference model's, where approximate rewrites are being
    distilled) and its regions' outputs on a new batch, as a record the fine-tuning loss reads."""

    def __init__(self, teacher: nn.Module, order: Sequence[str], reference: nn.Module | None = None):
        self.teacher, self.order, self.reference = teacher, list(order), reference

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> Recorded:
        hooks = OutputHooks(self.teacher, self.order)
        final = self.teacher(batch)
        hooks.remove()
        if self.reference is not None:
            final = self.reference(batch)
        # region inputs are not read by the fine-tuning loss
        return Recorded(batch, final, {name: ((), hooks.values[name]) for name in self.order})
