import pytest
import torch
from torch import nn

from fxrewrite import lower
from pass_helpers import captured, kinds, run_pass

PASS = "qkv-unbind-as-split"


class FusedAttention(nn.Module):
    """timm's attention: one projection to 3 C, split the rank-5 way (with bias, odd token count)."""

    def __init__(self, width=24, heads=3):
        super().__init__()
        self.qkv, self.heads = nn.Linear(width, 3 * width), heads

    def forward(self, x):
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return torch.softmax(q @ k.transpose(-2, -1), -1) @ v


@pytest.mark.parametrize("form", ["functional", "aten"])
@pytest.mark.parametrize("tokens", [1, 13])
def test_the_rank_5_split_in_rank_4(form, tokens):
    torch.manual_seed(tokens)
    teacher = FusedAttention().eval()
    x = torch.randn(2, tokens, 24)
    gm, rewrites = run_pass(PASS, captured(teacher, x, form), x)
    ranks = [len(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if hasattr(n.meta.get("tensor_meta"), "shape")]
    assert rewrites == 1 and max(ranks) == 4
    with torch.no_grad():
        assert torch.equal(gm(x), teacher(x))  # the same elements feed the same ops


class OtherOrder(FusedAttention):
    def forward(self, x):
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 1, 3, 4)
        q, k, v = qkv.unbind(0)
        return q + k + v


def test_another_permutation_is_declined():
    x = torch.randn(1, 5, 24)
    gm, rewrites = run_pass(PASS, captured(OtherOrder().eval(), x, "aten"), x)
    assert rewrites == 0


def test_the_u55_runs_fused_attention_after_lowering():
    teacher = FusedAttention().eval()
    x = torch.randn(1, 13, 24)
    result = lower(teacher, (x,), target="ethos-u55-128")
    assert result.verdicts.illegal == ()
    assert result.report.max_relative_error <= 1e-5


class PickedAttention(FusedAttention):
    """torchvision's Swin: the same split, its items picked one at a time (qkv[0], qkv[1], qkv[2])."""

    def forward(self, x):
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        return torch.softmax(q @ k.transpose(-2, -1), -1) @ v


@pytest.mark.parametrize("form", ["functional", "aten"])
def test_items_picked_one_at_a_time_in_rank_4(form):
    torch.manual_seed(4)
    teacher = PickedAttention().eval()
    x = torch.randn(2, 13, 24)
    gm, rewrites = run_pass(PASS, captured(teacher, x, form), x)
    ranks = [len(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if hasattr(n.meta.get("tensor_meta"), "shape")]
    assert rewrites == 3 and max(ranks) == 4
    with torch.no_grad():
        assert torch.equal(gm(x), teacher(x))
