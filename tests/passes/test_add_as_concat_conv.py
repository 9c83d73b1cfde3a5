import pytest
import torch
from torch import nn

from conftest import chip
from pass_helpers import assert_same, captured, kinds, run_pass
from fxrewrite import lower
from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import PassContext
from fxrewrite.target import Target


class Residual(nn.Module):
    """x + conv(x) in several spellings; `activated` puts a ReLU between, so the add cannot fold."""

    def __init__(self, kernel=3, alpha=1.0, conv_left=False, activated=False):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, kernel, padding=kernel // 2)
        self.alpha, self.conv_left, self.activated = alpha, conv_left, activated

    def forward(self, x):
        y = self.conv(x)
        y = torch.relu(y) if self.activated else y
        return torch.add(y, x, alpha=self.alpha) if self.conv_left else torch.add(x, y, alpha=self.alpha)


@pytest.mark.parametrize("form", ["module", "aten"])
def test_add_after_activation_becomes_concat_and_1x1_conv(form):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 29, 31)
    model = Residual(activated=True, alpha=0.5).eval()
    gm, rewrites = run_pass("add-as-concat-conv", captured(model, x, form), x)
    assert rewrites == 1
    assert kinds(gm) == {"conv2d": 2, "cat": 1, "relu": 1}
    assert_same(gm, model, x)


@pytest.mark.parametrize("form", ["module", "aten"])
@pytest.mark.parametrize("kernel, alpha, conv_left", [(3, 1.0, False), (5, 0.5, False), (1, -2.0, True), (3, 0.25, True)])
def test_add_folds_into_the_conv_it_adds_to(form, kernel, alpha, conv_left):
    torch.manual_seed(kernel)
    x = torch.randn(2, 4, 29, 31)
    model = Residual(kernel, alpha, conv_left).eval()
    gm, rewrites = run_pass("add-as-concat-conv", captured(model, x, form), x)
    assert rewrites == 1
    assert kinds(gm) == {"conv2d": 1, "cat": 1}
    assert_same(gm, model, x)


def test_the_target_cost_chooses_between_the_forms_and_says_so():
    x = torch.randn(1, 4, 9, 9)
    gm = captured(Residual().eval(), x, "module")
    # a compute-bound chip: a 1x1 summing conv costs less than widening the 3x3 conv by four identity inputs
    with_1x1 = chip("[ops.conv2d]\n[ops.cat]\n[performance]\ndense_macs_per_cycle = 1\nbytes_per_cycle = 1000\n")
    result = registered_passes()["add-as-concat-conv"].run(gm, PassContext((x,), with_1x1))
    assert any(note.startswith("add: chose add (") and "over add-into-right-conv" in note for note in result.stats.notes)


def test_without_1x1_kernels_folding_into_the_conv_wins():
    x = torch.randn(1, 4, 9, 9)
    model = Residual().eval()
    lowered = lower(captured(model, x, "module"), (x,), target=Target.load("archnet"))
    assert lowered.legal and lowered.report.max_relative_error < 1e-5
    assert any("chose add-into-right-conv" in note for note in lowered.report.notes)


def test_broadcast_add_is_declined():
    class Bias(nn.Module):
        def forward(self, x):
            return x + x.mean(dim=(2, 3), keepdim=True)

    x = torch.randn(1, 4, 5, 5)
    gm, rewrites = run_pass("add-as-concat-conv", captured(Bias(), x, "module"), x)
    assert rewrites == 0 and kinds(gm)["add"] == 1


class AddsAPositionBias(nn.Module):
    """A bias made from a parameter alone, (1, C, H, W) at every batch size, added to a map that grows
    with the batch: the shapes agree at batch 1 only."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bias = nn.Parameter(torch.randn(1, 4, 5, 5))

    def forward(self, x):
        return self.conv(x) + self.bias.permute(0, 1, 3, 2)


def test_an_add_that_broadcasts_over_the_batch_is_not_concatenated():
    """At the example's batch of 1 the operands had one shape, so the add became cat + conv, which
    fails at batch 8 (swin_t's relative position bias); regression test."""
    torch.manual_seed(0)
    model, x = AddsAPositionBias().eval(), torch.randn(1, 4, 5, 5)
    lowered = lower(captured(model, x, "module"), (x,), target="archnet")
    batch = torch.randn(8, 4, 5, 5)
    assert lowered.report.rewrites["add-as-concat-conv"] == 0
    assert_same(lowered.gm, model, batch)
