"""A student for every region shape: tokens (with and without attention), vectors, maps to tokens,
gates and merges. Each is checked for its shapes, that it runs on its target, and that training
lowers its loss against a random teacher signal of the region's shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import chip
from fxrewrite.cost import Cost
from fxrewrite.distill.synthesis import synthesize
from fxrewrite.distill.students.base import runs_on
from fxrewrite.errors import DistillError
from fxrewrite.target import Target

TRANSFORMER = Target.load("archnet-transformer")
ROOMY = Cost(1e12, 10**12)
#: archnet-transformer without matmul and softmax: token mixing by an FC layer across the sequence
NO_ATTENTION = chip("""
[ops.linear]
[ops.batch_norm]
[ops.relu]
[ops.cat]
[ops.transpose]
[ops.reshape]
[ops.flatten]
""")


def trained_loss_drop(student: torch.nn.Module, inputs: list[torch.Tensor], target: torch.Tensor,
                      lr: float = 1e-2) -> tuple[float, float]:
    """The student's MSE to `target` before and after 60 Adam steps on it."""
    optimizer = torch.optim.Adam(student.parameters(), lr)
    student.train()
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = F.mse_loss(student(*inputs), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def built(inputs, output, target, kinds=()):
    sized = synthesize("region_0", inputs, [output], ROOMY, target, ROOMY, set(kinds))
    student = sized.student
    with torch.no_grad():
        assert student.eval()(*inputs).shape == output.shape
    assert runs_on(target, student, inputs), sized.size
    return sized


@pytest.mark.parametrize("target, kinds, expected", [
    (TRANSFORMER, {"layer_norm", "matmul", "softmax", "add"}, "attention + FC-BN-ReLU-FC"),
    (NO_ATTENTION, {"layer_norm", "matmul", "softmax", "add"}, "sequence FC + FC-BN-ReLU-FC"),
    (TRANSFORMER, {"layer_norm", "gelu", "linear", "add"}, "FC-BN-ReLU-FC")])
def test_token_students_mix_tokens_where_the_teacher_does(target, kinds, expected):
    torch.manual_seed(0)
    x = torch.randn(16, 9, 12)
    teacher = torch.softmax(x @ x.transpose(1, 2), -1) @ x if "matmul" in kinds else torch.relu(x)
    sized = built([x], x + teacher, target, kinds)
    assert sized.size.startswith(expected) and sized.size.endswith("+ skip merge")
    first, last = trained_loss_drop(sized.student, [x], x + teacher)
    assert last < 0.5 * first


def test_tokens_to_a_vector_and_a_map_to_tokens():
    torch.manual_seed(1)
    tokens, image = torch.randn(16, 9, 12), torch.randn(16, 1, 8, 8)
    head = built([tokens], torch.randn(16, 10), TRANSFORMER)
    assert head.size.startswith("MLP of") and "flattened" in head.size
    patchify = built([image], torch.randn(16, 17, 12), TRANSFORMER)
    assert "reshaped to (17, 12)" in patchify.size
    first, last = trained_loss_drop(patchify.student, [image], image.flatten(1)[:, :17, None].expand(-1, -1, 12))
    assert last < 0.5 * first


def test_a_map_to_tokens_on_a_target_without_reshape_is_refused_with_its_shapes():
    with pytest.raises(DistillError, match=r"inputs \[\(2, 1, 8, 8\)\] -> output \(2, 17, 12\) on archnet: .*reshape"):
        synthesize("region_0", [torch.randn(2, 1, 8, 8)], [torch.randn(2, 17, 12)], ROOMY, Target.load("archnet"))


@pytest.mark.parametrize("target, gated", [("npu-generic", True), ("archnet", False)])
def test_a_squeeze_and_excitation_gate(target, gated):
    """(N, C, 1, 1) times a map: multiplied through a 1x1 conv where the target runs a per-channel
    mul, else left out and learnt from the map."""
    torch.manual_seed(2)
    gate, x = torch.rand(16, 8, 1, 1), torch.randn(16, 8, 9, 9)
    sized = built([gate, x], gate * x, Target.load(target))
    assert sized.size.endswith("x gate") == gated
    first, last = trained_loss_drop(sized.student, [gate, x], gate * x)
    assert last < 0.5 * first


def test_a_merge_of_a_finer_map_and_a_coarser_one():
    """FPN-style: a 16x16 level brought down to the 8x8 level by its own stride-2 convs; a 4x4 level
    (which would need upsampling) left out."""
    torch.manual_seed(3)
    fine, same, coarse = torch.randn(8, 4, 16, 16), torch.randn(8, 6, 8, 8), torch.randn(8, 6, 4, 4)
    output = F.avg_pool2d(fine, 2)[:, :4] + same[:, :4]
    sized = built([fine, same, coarse], output, Target.load("archnet"))
    student = sized.student
    assert len(student.down[0]) > 0 and student.maps == [0, 1]
    first, last = trained_loss_drop(student, [fine, same, coarse], output)
    assert last < 0.5 * first


@pytest.mark.parametrize("target, form", [("npu-generic", "depthwise-phases"), ("ethos-u55-128", "nearest")])
@pytest.mark.parametrize("mode, factor", [("nearest", 2), ("bilinear", 2), ("bilinear", 4)])
def test_a_merge_enlarges_coarser_levels_with_the_targets_own_ops(target, form, mode, factor):
    """U-Net/FPN decoder: a coarse level upsampled (nearest or bilinear, x2 or x4) and merged with a
    skip level; the student enlarges the coarse one by the first form the target runs."""
    torch.manual_seed(factor)
    batch = 1 if target == "ethos-u55-128" else 8  # Vela runs a batch of one
    skip, coarse = torch.randn(batch, 4, 16, 16), torch.randn(batch, 6, 16 // factor, 16 // factor)
    up = F.interpolate(coarse, scale_factor=factor, mode=mode)
    output = torch.relu(skip[:, :3] + up[:, :3])
    sized = built([skip, coarse], output, Target.load(target))
    student = sized.student
    assert student.maps == [0] and student.ups == [1]
    assert (type(student.up[0]).__name__ == "Upsample") == (form == "nearest")
    if batch > 1:
        first, last = trained_loss_drop(student, [skip, coarse], output)
        assert last < 0.5 * first


def test_a_region_of_only_coarser_maps_is_enlarged_to_the_output():
    torch.manual_seed(5)
    coarse = torch.randn(8, 6, 5, 7)
    output = F.interpolate(coarse, scale_factor=2, mode="bilinear")[:, :4]
    sized = built([coarse], output, Target.load("npu-generic"))
    assert sized.student.maps == [] and sized.student.ups == [0]
    first, last = trained_loss_drop(sized.student, [coarse], output)
    assert last < 0.5 * first


def test_a_channels_last_grid_on_a_chip_without_convs_gets_a_token_student_over_its_positions():
    """Swin's (N, H, W, C) blocks on archnet-transformer: a conv student there was illegal."""
    torch.manual_seed(2)
    grid = torch.randn(16, 4, 4, 12)
    teacher = grid + torch.relu(grid @ torch.randn(12, 12) / 4)
    sized = built([grid], teacher, TRANSFORMER, {"layer_norm", "matmul", "softmax", "roll", "add"})
    assert sized.size.startswith("attention + FC-BN-ReLU-FC") and sized.size.endswith("over the 4x4 grid as tokens")
    first, last = trained_loss_drop(sized.student, [grid], teacher)
    assert last < 0.5 * first


def test_a_region_that_reads_no_input_is_its_recorded_outputs():
    """Regression: Swin's relative position bias, gathered from its table by an index now legal on
    archnet-transformer, became a region of no input, and the grid student crashed on it."""
    bias = torch.randn(1, 4, 4, 6)
    sized = synthesize("region_0", [], [bias], ROOMY, TRANSFORMER, ROOMY)
    assert sized.size.startswith("constant") and torch.equal(sized.student(), bias)


def test_a_region_of_only_coarser_maps_on_a_target_that_cannot_enlarge_is_refused():
    coarse = torch.randn(8, 6, 4, 4)
    with pytest.raises(DistillError, match="no op that enlarges a map"):
        synthesize("region_0", [coarse], [torch.randn(8, 6, 8, 8)], ROOMY, Target.load("archnet"), ROOMY)


def test_a_rank_4_tensor_of_another_layout_is_refused_as_no_image_map():
    """maxvit's window partitions are (N, windows, tokens, C): not a map any conv student makes."""
    with pytest.raises(DistillError, match="no input map comes to the output's 4x64"):
        synthesize("region_2", [torch.randn(8, 64, 16, 16)], [torch.randn(8, 64, 4, 64)], ROOMY,
                   Target.load("archnet"), ROOMY)


def test_an_unpadded_stride_2_region_gets_an_unpadded_halving():
    """squeezenet's 3x3 stride-2 max pool without padding takes 31x31 to 15x15, not ceil(31 / 2)."""
    torch.manual_seed(4)
    x = torch.randn(8, 4, 31, 31)
    output = F.max_pool2d(x, 3, 2)
    sized = built([x], output, Target.load("archnet"))
    assert [conv.padding for conv in sized.student.modules() if isinstance(conv, torch.nn.Conv2d)
            and conv.stride == (2, 2)] == [(0, 0)]
    first, last = trained_loss_drop(sized.student, [x], output)
    assert last < 0.7 * first


class TinyUNet(torch.nn.Module):
    """Two encoder levels, a decoder that upsamples bilinearly then nearest, skip concats."""

    def __init__(self):
        super().__init__()
        conv = torch.nn.Conv2d
        self.enc1, self.enc2, self.enc3 = conv(1, 8, 3, padding=1), conv(8, 16, 3, 2, 1), conv(16, 16, 3, 2, 1)
        self.dec2, self.dec1, self.head = conv(32, 8, 3, padding=1), conv(16, 8, 3, padding=1), conv(8, 2, 1)

    def forward(self, x):
        a = torch.relu(self.enc1(x))
        b = torch.relu(self.enc2(a))
        c = torch.relu(self.enc3(b))
        d = torch.relu(self.dec2(torch.cat([b, F.interpolate(c, scale_factor=2, mode="bilinear")], 1)))
        e = torch.relu(self.dec1(torch.cat([a, F.interpolate(d, scale_factor=2, mode="nearest")], 1)))
        return self.head(e)


def test_a_unet_distils_to_a_legal_graph_where_the_target_can_enlarge_maps_and_is_refused_where_not():
    from fxrewrite import lower

    torch.manual_seed(0)
    teacher, x = TinyUNet().eval(), torch.randn(1, 1, 32, 32)
    calib = torch.rand(128, 1, 32, 32)
    exact = lower(teacher, (x,), target="npu-generic")
    assert [row.attrs for row in exact.verdicts.illegal] == ["mode=bilinear scale=2x2 align_corners=False"]
    distilled = lower(teacher, (x,), target="npu-generic", calib=calib, epochs=1, finetune_epochs=1)
    assert not distilled.verdicts.illegal
    assert any(isinstance(m, torch.nn.PixelShuffle) for m in distilled.gm.modules())
    with pytest.raises(DistillError, match="no op that enlarges a map"):
        lower(teacher, (x,), target="archnet", calib=calib, epochs=1, finetune_epochs=1)
