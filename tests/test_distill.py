"""Distillation: a tiny teacher trained here on scikit-learn's digits, lowered to archnet."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from fxrewrite.capture import capture
from fxrewrite.distill import DistillConfig, DistillError, distill
from fxrewrite.distill.students import synthesize
from fxrewrite.lower import lower
from fxrewrite.target import Target


class DigitsTeacher(nn.Module):
    """GroupNorm, GELU and SiLU: nothing archnet runs, so two regions need students."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.norm = nn.GroupNorm(1, 16)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 16, 10)

    def forward(self, x):
        x = self.pool(nn.functional.gelu(self.norm(self.conv1(x))))
        return self.fc(nn.functional.silu(self.conv2(x)).flatten(1))


@pytest.fixture(scope="module")
def digits_teacher():
    torch.manual_seed(0)
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    labels = torch.tensor(digits.target)
    teacher = DigitsTeacher()
    optimizer = torch.optim.Adam(teacher.parameters(), 1e-2)
    for _ in range(20):
        for start in range(0, 1400, 100):
            optimizer.zero_grad()
            nn.functional.cross_entropy(teacher(images[start:start + 100]), labels[start:start + 100]).backward()
            optimizer.step()
    teacher.eval()
    accuracy = (teacher(images[1400:]).argmax(1) == labels[1400:]).float().mean().item()
    assert accuracy > 0.85
    archnet = Target.load("archnet")
    exact = lower(capture(teacher, (images[:64],)), archnet, (images[:64],))
    assert [sorted(r["kinds"]) for r in exact.check.regions] == [["gelu", "group_norm"], ["silu"]]
    return exact.gm, images, archnet


def test_students_make_the_graph_legal_and_agree_with_the_teacher(digits_teacher):
    gm, images, archnet = digits_teacher
    batches = [images[i:i + 64] for i in range(0, 1280, 64)]
    result = distill(gm, archnet, batches, [images[1400:]], DistillConfig(epochs=20, finetune_epochs=10, seed=0))
    final = lower(result.gm, archnet, (images[:64],))
    assert final.check.all_legal, [r.reason for r in final.check.illegal]
    assert {"conv2d", "batch_norm", "relu", "cat"} >= {r.kind for r in final.check.rows if r.kind in
                                                        ("conv2d", "batch_norm", "relu", "cat", "gelu", "silu")}
    # untrained students (skip-initialised) agree on 94% with cosine 0.92; trained ones on 99.5%, 0.998
    assert result.report["top1_agreement"] >= 0.98 and result.report["held_out_cosine"] >= 0.99


def test_the_same_seed_gives_the_same_student(digits_teacher):
    gm, images, archnet = digits_teacher
    batches, held_out = [images[:64], images[64:128]], [images[1400:1500]]
    first, second = (distill(gm, archnet, batches, held_out, DistillConfig(epochs=2, finetune_epochs=1, seed=3))
                     for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first.gm.state_dict().values(), second.gm.state_dict().values()))


def test_a_region_no_student_covers_is_an_error_that_says_why():
    with pytest.raises(DistillError, match="no conv student maps"):
        synthesize("region_0", [torch.randn(1, 3, 8, 8)], [torch.randn(1, 3, 16, 16)], 0, Target.load("archnet"))
