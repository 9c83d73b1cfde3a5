import pytest
import torch
from torch import nn

from fxrewrite import lower
from pass_helpers import captured, run_pass

PASS = "mask-add-as-rank4"


class ShiftedWindowMask(nn.Module):
    """Swin's masked attention scores: (B n, h, s, s) viewed as (B, n, h, s, s), a constant mask of
    shape `mask_shape` added (first or second operand), viewed back."""

    def __init__(self, windows: int, heads: int, tokens: int, mask_shape: tuple[int, ...], mask_first: bool = False):
        super().__init__()
        self.windows, self.heads, self.tokens, self.mask_first = windows, heads, tokens, mask_first
        self.fc = nn.Linear(tokens, tokens)
        self.register_buffer("mask", torch.randn(mask_shape))

    def forward(self, x):
        s = self.tokens
        scores = self.fc(x).view(x.shape[0] // self.windows, self.windows, self.heads, s, s)
        scores = self.mask + scores if self.mask_first else scores + self.mask
        return scores.view(-1, self.heads, s, s).softmax(-1)


def ranks(gm) -> list[int]:
    return [len(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if hasattr(n.meta.get("tensor_meta"), "shape")]


@pytest.mark.parametrize("form", ["functional", "aten"])
@pytest.mark.parametrize("mask_shape, mask_first", [((1, 4, 1, 5, 5), False), ((4, 1, 5, 5), True),
                                                    ((1, 4, 3, 1, 1), False), ((1,), False)])
@pytest.mark.parametrize("batch", [1, 3])
def test_mask_added_in_rank_4(form, mask_shape, mask_first, batch):
    torch.manual_seed(batch)
    teacher = ShiftedWindowMask(4, 3, 5, mask_shape, mask_first).eval()
    x = torch.randn(4 * batch, 3, 5, 5)
    gm, rewrites = run_pass(PASS, captured(teacher, x, form), x)
    assert rewrites == 1 and max(ranks(gm)) == 4
    with torch.no_grad():
        assert torch.equal(gm(x), teacher(x))  # the same sums in the same order


def test_a_mask_broadcast_along_one_of_the_merged_dims_is_declined():
    teacher = ShiftedWindowMask(2, 3, 5, (5,)).eval()  # broadcast along s, not t
    x = torch.randn(2, 3, 5, 5)
    gm, rewrites = run_pass(PASS, captured(teacher, x, "aten"), x)
    assert rewrites == 0 and max(ranks(gm)) == 5


class AddedInput(ShiftedWindowMask):
    def forward(self, x):
        scores = x.view(1, 2, 3, 5, 5)
        return (scores + self.fc(scores)).view(-1, 3, 5, 5)


def test_an_operand_computed_from_the_input_is_declined():
    x = torch.randn(2, 3, 5, 5)
    gm, rewrites = run_pass(PASS, captured(AddedInput(2, 3, 5, (1,)).eval(), x, "aten"), x)
    assert rewrites == 0


def test_the_u55_runs_the_masked_scores_after_lowering():
    teacher = ShiftedWindowMask(4, 3, 5, (1, 4, 1, 5, 5)).eval()
    result = lower(teacher, (torch.randn(4, 3, 5, 5),), target="ethos-u55-128")
    assert result.verdicts.illegal == ()
    assert result.report.max_relative_error <= 1e-6
