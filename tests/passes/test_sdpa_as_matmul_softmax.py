import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import chip
from pass_helpers import FORMS, assert_same, captured, kinds, run_pass
from fxrewrite import lower


class Attention(nn.Module):
    """Multi-head self-attention written with F.scaled_dot_product_attention (projections, heads split)."""

    def __init__(self, dim: int = 12, heads: int = 3, scale: float | None = None, causal: bool = False):
        super().__init__()
        self.qkv, self.heads, self.scale, self.causal = nn.Linear(dim, 3 * dim), heads, scale, causal

    def forward(self, x):
        n, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)


class ModuleAttention(nn.Module):
    """The same products through nn.MultiheadAttention's fast path off (it calls SDPA inside)."""

    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(12, 3, batch_first=True)

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("scale", [None, 0.7])
def test_attention_becomes_two_matmuls_and_a_softmax(form, scale):
    torch.manual_seed(0)
    x = 3.0 * torch.randn(2, 7, 12)  # odd sequence length; scores large enough that the softmax is peaked
    model = (ModuleAttention() if form == "module" and scale is None else Attention(scale=scale)).eval()
    gm = captured(model, x, "aten" if form == "module" else form)  # SDPA appears only in traced graphs
    gm, rewrites = run_pass("sdpa-as-matmul-softmax", gm, x)
    assert rewrites == 1
    found = kinds(gm)
    assert found["matmul"] == 2 and found["softmax"] == 1 and "scaled_dot_product_attention" not in found
    assert_same(gm, model, x)


def test_causal_attention_is_declined_with_its_reason():
    x = torch.randn(1, 5, 12)
    gm, rewrites = run_pass("sdpa-as-matmul-softmax", captured(Attention(causal=True).eval(), x, "functional"), x)
    assert rewrites == 0
    assert kinds(gm)["scaled_dot_product_attention"] == 1


def test_a_chip_with_matmul_softmax_and_batch_norm_runs_attention_exactly():
    torch.manual_seed(1)
    x = torch.randn(1, 9, 12)
    target = chip("[ops.linear]\n[ops.matmul]\n[ops.softmax]\n[ops.batch_norm]\n[ops.reshape]\n[ops.permute]\n"
                  "[ops.transpose]\n[ops.slice]\n[ops.split]\n")
    lowered = lower(captured(Attention().eval(), x, "aten"), (x,), target=target)
    assert lowered.legal and lowered.report.max_relative_error <= 1e-5
    assert lowered.report.rewrites["sdpa-as-matmul-softmax"] == 1
