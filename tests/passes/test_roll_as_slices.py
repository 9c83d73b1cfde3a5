import pytest
import torch
from torch import nn

from pass_helpers import FORMS, assert_same, captured, kinds, run_pass


class Roll(nn.Module):
    def __init__(self, shifts, dims):
        super().__init__()
        self.shifts, self.dims = shifts, dims

    def forward(self, x):
        return torch.roll(x, self.shifts, self.dims)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shifts, dims", [((-2, -2), (1, 2)), (3, 1), ((8,), (-1,)), ((1, -7), (1, 2))])
def test_a_roll_is_two_slices_in_the_other_order(form, shifts, dims):
    torch.manual_seed(0)
    x = torch.randn(2, 7, 5, 3)  # odd sizes; shifts past the size and negative ones
    model = Roll(shifts, dims).eval()
    gm, rewrites = run_pass("roll-as-slices", captured(model, x, form), x)
    assert rewrites == 1
    found = kinds(gm)
    assert "roll" not in found and found["cat"] >= 1
    assert_same(gm, model, x, rtol=0.0)  # data moves, values do not change


def test_a_roll_of_the_flattened_tensor_is_declined():
    x = torch.randn(1, 4, 3)
    gm, rewrites = run_pass("roll-as-slices", captured(Roll(2, None).eval(), x, "module"), x)
    assert rewrites == 0 and kinds(gm)["roll"] == 1
