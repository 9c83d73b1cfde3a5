import pytest
import torch
from torch import nn

from fxrewrite import lower
from pass_helpers import assert_same, captured, kinds, run_pass

PASS = "where-constant-mask-as-mul-add"


class Masked(nn.Module):
    """A conv with bias, then where() under a fixed random mask (of the map, or broadcast per channel)."""

    def __init__(self, other, mask_shape=(1, 5, 9, 13)):
        super().__init__()
        self.conv, self.other = nn.Conv2d(3, 5, 3, padding=1), other
        self.register_buffer("mask", torch.rand(mask_shape) > 0.5)

    def forward(self, x):
        y = self.conv(x)
        other = y * -0.5 if self.other == "tensor" else self.other
        return torch.where(self.mask, y, other)


class MaskedFirst(Masked):
    def forward(self, x):
        return torch.where(self.mask, 2.0, self.conv(x))


@pytest.mark.parametrize("form", ["functional", "aten"])
@pytest.mark.parametrize("other", ["tensor", 0.0, -3.5])
@pytest.mark.parametrize("mask_shape", [(1, 5, 9, 13), (1, 5, 1, 1), (9, 13)])
def test_a_choice_under_a_constant_mask_as_a_blend(form, other, mask_shape):
    torch.manual_seed(len(mask_shape))
    teacher = Masked(other, mask_shape).eval()
    x = torch.randn(2, 3, 9, 13)
    gm, rewrites = run_pass(PASS, captured(teacher, x, form), x)
    assert rewrites == 1 and kinds(gm)["where"] == 0
    with torch.no_grad():
        assert torch.equal(gm(x), teacher(x))  # a * 1 + b * 0 is a, bit for bit


@pytest.mark.parametrize("form", ["functional", "aten"])
def test_a_number_in_the_first_branch(form):
    teacher = MaskedFirst("tensor").eval()
    x = torch.randn(1, 3, 9, 13)
    gm, rewrites = run_pass(PASS, captured(teacher, x, form), x)
    assert rewrites == 1
    assert_same(gm, teacher, x, rtol=0)


class Compared(nn.Module):
    def forward(self, x):
        return torch.where(x > 0, x, x * 0.1)


@pytest.mark.parametrize("teacher, reason", [(Compared(), "computed from the input"),
                                             (Masked(float("-inf")), "0 * inf")])
def test_masks_from_the_input_and_infinite_branches_are_declined(teacher, reason):
    x = torch.randn(1, 3, 9, 13) if isinstance(teacher, Masked) else torch.randn(1, 5, 9, 13)
    gm, rewrites = run_pass(PASS, captured(teacher.eval(), x, "aten"), x)
    assert rewrites == 0 and kinds(gm)["where"] == 1
    result = lower(teacher.eval(), (x,), target="ethos-u55-128")
    assert [row.kind for row in result.verdicts.illegal if row.kind == "where"] == ["where"]
    assert any(reason in said for declined in result.report.declined for said in declined.reasons)


def test_the_u55_runs_a_masked_map_after_lowering():
    teacher = Masked("tensor").eval()
    x = torch.randn(1, 3, 9, 13)
    result = lower(teacher, (x,), target="ethos-u55-128")
    assert result.verdicts.illegal == () and kinds(result.gm)["where"] == 0
    assert result.report.max_relative_error == 0
