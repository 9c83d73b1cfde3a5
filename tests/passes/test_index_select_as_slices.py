import pytest
import torch
from torch import nn

from fxrewrite import lower
from fxrewrite.passes.index_select_as_slices import runs
from pass_helpers import captured, kinds, run_pass

PASS = "index-select-as-slices"


class Selected(nn.Module):
    def __init__(self, positions, dim):
        super().__init__()
        self.conv, self.dim = nn.Conv2d(3, 6, 3, padding=1), dim
        self.register_buffer("positions", torch.tensor(positions))

    def forward(self, x):
        return torch.index_select(self.conv(x), self.dim, self.positions)


class SelectedByMethod(Selected):
    def forward(self, x):
        return self.conv(x).index_select(self.dim, self.positions)


def test_positions_become_runs_in_order():
    assert runs([0, 1, 2]) == [(0, 3)]
    assert runs([3, 1, 2, 0, 5, 4]) == [(3, 1), (1, 2), (0, 1), (5, 1), (4, 1)]
    assert runs([2, 2]) == [(2, 1), (2, 1)]


@pytest.mark.parametrize("form", ["functional", "aten"])
@pytest.mark.parametrize("module", [Selected, SelectedByMethod])
@pytest.mark.parametrize("positions, dim", [([5, 0, 1, 2, 4], 1), ([2, 3, 4], 1), ([8, 0, 8, 3], 2),
                                            ([12, 11, 10, 0], 3), ([0], 1)])
def test_constant_positions_as_slices_and_a_concat(form, module, positions, dim):
    torch.manual_seed(dim)
    teacher = module(positions, dim).eval()
    x = torch.randn(2, 3, 9, 13)
    gm, rewrites = run_pass(PASS, captured(teacher, x, form), x)
    assert rewrites == 1 and kinds(gm)["index_select"] == 0
    with torch.no_grad():
        assert torch.equal(gm(x), teacher(x))  # only data moves


class Gathered(nn.Module):
    def forward(self, x):
        return torch.index_select(x, 1, x[0, 0, 0].long().clamp(0, 2))


def test_positions_read_from_the_input_are_declined():
    x = torch.rand(1, 3, 4, 4) * 3
    gm, rewrites = run_pass(PASS, captured(Gathered().eval(), x, "aten"), x)
    assert rewrites == 0 and kinds(gm)["index_select"] == 1


def test_the_u55_runs_a_channel_permutation_after_lowering():
    teacher = Selected([5, 0, 1, 2, 4, 3], 1).eval()
    x = torch.randn(1, 3, 9, 13)
    result = lower(teacher, (x,), target="ethos-u55-128")
    assert result.verdicts.illegal == () and kinds(result.gm)["index_select"] == 0
    assert result.report.max_relative_error == 0
