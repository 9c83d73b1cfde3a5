"""Label-free augmentation for fine-tuning: shifted and mirrored images, mixup on a tenth of the
batches, draws fixed by the step, targets recomputed by the teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from conftest import chip, symbolic
from fxrewrite import lower
from fxrewrite.distill.training.augment import MIXUP_EVERY, Relabel, augment
from fxrewrite.distill.regions.carving import carve
from fxrewrite.distill.training.recording import region_order
from fxrewrite.target import Target


def shifts_and_mirrors(image: torch.Tensor, reach: int) -> list[torch.Tensor]:
    height, width = image.shape[-2:]
    padded = F.pad(image, (reach, reach, reach, reach))
    crops = [padded[:, top:top + height, left:left + width] for top in range(2 * reach + 1)
             for left in range(2 * reach + 1)]
    return crops + [c.flip(-1) for c in crops]


def test_each_image_is_a_shifted_or_mirrored_copy_and_the_draws_follow_the_step():
    torch.manual_seed(0)
    batch = torch.rand(8, 2, 16, 12) + 1  # no zeros, so a shift shows
    plain = [s for s in range(40) if all(any(torch.equal(o, c) for c in shifts_and_mirrors(i, 2))
                                          for o, i in zip(augment(batch, s), batch))]
    assert len(plain) >= 40 - 3 * 40 // MIXUP_EVERY  # mixup is rare; every other batch is shifts and mirrors
    assert not torch.equal(augment(batch, plain[0]), batch)
    assert torch.equal(augment(batch, 5), augment(batch, 5)) and not torch.equal(augment(batch, 5), augment(batch, 6))
    assert torch.equal(augment(batch, 5, seed=1), augment(batch, 5, seed=1))


def test_mixup_blends_inputs_on_about_a_tenth_of_the_batches_and_token_ids_stay():
    batch = torch.randn(16, 7)  # not an image: mixup only
    mixed = [s for s in range(300) if not torch.equal(augment(batch, s), batch)]
    assert 300 // MIXUP_EVERY // 2 <= len(mixed) <= 300 // MIXUP_EVERY * 2
    blended = augment(batch, mixed[0])
    low, high = batch.min(0).values, batch.max(0).values
    assert bool(((blended >= low - 1e-6) & (blended <= high + 1e-6)).all())  # convex combinations of the batch
    tokens = torch.randint(100, (4, 9))
    assert torch.equal(augment(tokens, mixed[0]), tokens)


class Gelus(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        return self.head(F.gelu(self.conv(x)).flatten(1))


TARGET = "[ops.conv2d]\n[ops.relu]\n[ops.linear]\n[ops.flatten]\n[ops.cat]\n"


def test_relabel_gives_the_teachers_outputs_on_the_new_batch():
    torch.manual_seed(0)
    model, x = Gelus().eval(), torch.randn(6, 3, 5, 5)
    teacher = carve(symbolic(model, x[:1]), chip(TARGET))
    order = region_order(teacher)
    entry = Relabel(teacher, order)(x)
    torch.testing.assert_close(entry.final, model(x))
    assert set(entry.regions) == set(order) and entry.regions[order[0]][1][0].shape[0] == 6


def test_fine_tuning_on_augmented_inputs_gives_a_legal_student_that_learned():
    torch.manual_seed(0)
    x = torch.randn(320, 3, 5, 5)
    model = Gelus().eval()
    target: Target = chip(TARGET)
    lowered = lower(symbolic(model, x[:1]), (x[:1],), target=target, calib=x, epochs=4, finetune_epochs=4,
                    patience=None, augment=True)
    assert lowered.legal
    history = [p for p in lowered.report.distillation.history if p.phase == "finetune"]
    # the start and 4 epochs
    assert len(history) == 5 and lowered.report.distillation.agreement.top1 > 0.6  # 3 classes: chance is 1/3
