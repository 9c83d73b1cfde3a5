"""Transformers lowered the Arch-Net way: a tiny ViT trained here on scikit-learn's 8x8 digits is
distilled, label-free and at 4-bit weights and activations, onto archnet-transformer (batch norm for
LayerNorm, attention kept with legal parts) and onto archnet (no token ops: one student from the
image to the head's features), and must agree with its teacher on held-out digits."""

from __future__ import annotations

import pytest
import torch

from fxrewrite import check, lower
from fxrewrite.examples import _digits, digits_vit

HELD_OUT = 1400  # digits_vit trains on the first 1,400 digits; the 397 after them test


@pytest.fixture(scope="module")
def vit_and_digits():
    images, labels = _digits(size=8)
    return digits_vit(), images, labels


def test_the_teacher_learns_the_digits(vit_and_digits):
    model, images, labels = vit_and_digits
    with torch.no_grad():
        assert (model(images[HELD_OUT:]).argmax(1) == labels[HELD_OUT:]).float().mean() > 0.85


# on archnet-transformer the patch embedding and class token lower exactly (patch-conv-as-linear,
# expand-constant-as-linear); this briefly trained teacher's blocks have layer norms no affine comes
# near (tests/test_nearest_legal.py has a block that keeps its attention), and its final norm alone
# has no layer to train as a fitted affine, so generic students
@pytest.mark.parametrize("target, students", [("archnet-transformer", {"TokenStudent", "MlpStudent"}),
                                              ("archnet", {"MlpStudent"})])
def test_a_vit_distils_at_4_bits_to_a_legal_student_that_agrees_with_it(vit_and_digits, target, students):
    model, images, _ = vit_and_digits
    lowered = lower(model, (images[:1],), target=target, calib=images[:HELD_OUT], calib_size=HELD_OUT, wbits=4,
                    abits=4, epochs=20, finetune_epochs=5)
    report = lowered.report
    assert not report.still_illegal and check(lowered.gm, target, (images[:1],)).all_legal
    assert {s.student for s in report.distillation.students} == students
    if target == "archnet-transformer":
        assert any(s.size.startswith("attention + ") for s in report.distillation.students)
    with torch.no_grad():
        agreement = (lowered.gm(images[HELD_OUT:]).argmax(1) == model(images[HELD_OUT:]).argmax(1)).float().mean()
    assert agreement >= 0.8, f"{target}: {agreement:.3f}"


def test_the_cli_distils_the_example_vit_onto_archnet_transformer(tmp_path, run_cli):
    out = tmp_path / "vit.pt2"
    code, _, err = run_cli("lower", "fxrewrite.examples:digits_vit", "--input-shape", "1,1,8,8", "--target",
                           "archnet-transformer", "--calib", "fxrewrite.examples:digits_inputs_8x8", "--epochs", "2",
                           "--finetune-epochs", "1", "-o", str(out))
    assert code == 0, err
    code, _, err = run_cli("check", str(out), "--target", "archnet-transformer")
    assert code == 0, err


class TokenClassifier(torch.nn.Module):
    """Token ids embedded, plus position embeddings, one encoder block, mean over positions, head."""

    def __init__(self):
        super().__init__()
        from fxrewrite.examples import EncoderBlock
        self.embed = torch.nn.Embedding(12, 16)
        self.position = torch.nn.Parameter(torch.randn(1, 6, 16) * 0.02)
        self.block, self.head = EncoderBlock(16, 2), torch.nn.Linear(16, 3)

    def forward(self, ids):
        return self.head(self.block(self.embed(ids) + self.position).mean(1))


def test_token_ids_are_one_hot_encoded_on_archnet_transformer_and_refused_with_a_reason_on_archnet():
    from fxrewrite.errors import DistillError
    torch.manual_seed(0)
    model, ids = TokenClassifier().eval(), torch.randint(0, 12, (320, 6))
    lowered = lower(model, (ids[:1],), target="archnet-transformer", calib=ids, epochs=2, finetune_epochs=1)
    assert lowered.legal and lowered.report.rewrites["embedding-as-one-hot"] == 1
    with pytest.raises(DistillError, match=r"no student for integer inputs \[\(64, 6\)\] \(token ids\) on archnet"):
        lower(model, (ids[:1],), target="archnet", calib=ids, epochs=2, finetune_epochs=1)
