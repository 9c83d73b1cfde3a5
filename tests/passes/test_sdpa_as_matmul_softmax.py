import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import chip
from pass_helpers import FORMS, assert_same, captured, kinds, run_pass
from fxrewrite import lower
from fxrewrite.frontend import capture

from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import PassContext, relative_error


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


class MaskedAttention(nn.Module):
    """Self-attention with a mask made from parameters alone (a buffer)."""

    def __init__(self, mask: torch.Tensor, dim: int = 12, heads: int = 3):
        super().__init__()
        self.qkv, self.heads = nn.Linear(dim, 3 * dim), heads
        self.register_buffer("mask", mask)

    def heads_of(self, x):
        n, length, dim = x.shape
        return self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)

    def forward(self, x):
        q, k, v = self.heads_of(x)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)


class InputMaskedAttention(MaskedAttention):
    """The same with the mask as the forward's second input."""

    def __init__(self):
        super().__init__(torch.ones(()))

    def forward(self, x, mask):
        q, k, v = self.heads_of(x)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _keeps(length: int) -> torch.Tensor:
    """A random boolean mask that keeps each query's own key, so no row drops every key."""
    return (torch.rand(length, length) > 0.5) | torch.eye(length, dtype=torch.bool)


@pytest.mark.parametrize("form", FORMS)
def test_causal_attention_adds_a_constant_triangle(form):
    torch.manual_seed(0)
    x = 3.0 * torch.randn(2, 7, 12)
    model = Attention(causal=True).eval()
    gm, rewrites = run_pass("sdpa-as-matmul-softmax", captured(model, x, "aten" if form == "module" else form), x)
    assert rewrites == 1 and kinds(gm)["add"] == 1 and "scaled_dot_product_attention" not in kinds(gm)
    assert_same(gm, model, x)


@pytest.mark.parametrize("form", ["functional", "aten"])
@pytest.mark.parametrize("kind", ["boolean", "additive"])
def test_a_constant_mask_is_added_as_one_constant(form, kind):
    torch.manual_seed(1)
    x, keeps = 3.0 * torch.randn(2, 7, 12), _keeps(7)
    mask = keeps if kind == "boolean" else torch.randn(7, 7).masked_fill(~keeps, float("-inf"))
    model = MaskedAttention(mask).eval()
    gm, rewrites = run_pass("sdpa-as-matmul-softmax", captured(model, x, form), x)
    assert rewrites == 1 and kinds(gm)["add"] == 1
    assert_same(gm, model, x)


@pytest.mark.parametrize("form", ["functional", "aten"])
@pytest.mark.parametrize("kind", ["key padding (boolean)", "additive"])
def test_a_mask_read_from_an_input_is_applied_as_torch_applies_it(form, kind):
    torch.manual_seed(2)
    x = 3.0 * torch.randn(2, 7, 12)
    padding = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    padding[1, ..., 5:] = False  # the second sequence is two tokens shorter
    mask = padding if kind.startswith("key") else torch.randn(2, 3, 7, 7)
    model = InputMaskedAttention().eval()
    gm = capture(model, (x, mask), "export" if form == "aten" else "symbolic")
    assert registered_passes()["sdpa-as-matmul-softmax"].run(gm, PassContext((x, mask), None)).rewrites == 1
    assert kinds(gm)["where" if kind.startswith("key") else "add"] == 1
    with torch.no_grad():
        assert relative_error(gm(x, mask), model(x, mask)) <= 1e-5


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_with_key_padding_and_a_causal_mask(batch_first):
    torch.manual_seed(3)
    attention = nn.MultiheadAttention(12, 3, batch_first=batch_first).eval()
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)  # True drops a key, as in key_padding_mask

    class Module(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = attention

        def forward(self, x, padding):
            return self.attention(x, x, x, key_padding_mask=padding, attn_mask=causal, need_weights=False)[0]

    x = torch.randn(2, 6, 12) if batch_first else torch.randn(6, 2, 12)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[0, 4:] = True  # True drops a key in nn.MultiheadAttention
    gm = capture(Module().eval(), (x, padding), "export")
    assert registered_passes()["sdpa-as-matmul-softmax"].run(gm, PassContext((x, padding), None)).rewrites == 1
    assert "scaled_dot_product_attention" not in kinds(gm)
    with torch.no_grad():
        assert relative_error(gm(x, padding), Module().eval()(x, padding)) <= 1e-5


def test_a_constant_mask_that_drops_every_key_of_a_query_is_declined_with_its_reason():
    x, keeps = torch.randn(1, 5, 12), _keeps(5)
    keeps[2] = False
    gm = captured(MaskedAttention(keeps).eval(), x, "aten")
    result = registered_passes()["sdpa-as-matmul-softmax"].run(gm, PassContext((x,), None))
    assert result.rewrites == 0 and kinds(gm)["scaled_dot_product_attention"] == 1
    assert any("drops every key of some query" in reason for reasons in result.stats.declined.values()
               for reason in reasons)


def test_causal_attention_is_legal_on_archnet_transformer():
    torch.manual_seed(4)
    x = torch.randn(1, 9, 12)
    lowered = lower(captured(Attention(causal=True).eval(), x, "aten"), (x,), target="archnet-transformer")
    assert lowered.legal and lowered.report.max_relative_error <= 1e-5
    assert lowered.report.rewrites["sdpa-as-matmul-softmax"] == 1


def test_a_chip_with_matmul_softmax_and_batch_norm_runs_attention_exactly():
    torch.manual_seed(1)
    x = torch.randn(1, 9, 12)
    target = chip("[ops.linear]\n[ops.matmul]\n[ops.softmax]\n[ops.batch_norm]\n[ops.reshape]\n[ops.permute]\n"
                  "[ops.transpose]\n[ops.slice]\n[ops.split]\n")
    lowered = lower(captured(Attention().eval(), x, "aten"), (x,), target=target)
    assert lowered.legal and lowered.report.max_relative_error <= 1e-5
    assert lowered.report.rewrites["sdpa-as-matmul-softmax"] == 1


class CrossAttention(nn.Module):
    """Queries from a 5-token target, keys and values from a 7-token source (an encoder's output)."""

    def __init__(self, causal: bool):
        super().__init__()
        self.q, self.kv, self.causal = nn.Linear(12, 12), nn.Linear(12, 24), causal

    def forward(self, target):
        source = torch.cat([target, target[:, :2]], dim=1).flip(1)  # 7 tokens, from the one input
        q = self.q(target).unflatten(-1, (3, 4)).transpose(1, 2)
        k, v = self.kv(source).unflatten(-1, (2, 3, 4)).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


@pytest.mark.parametrize("form", ["functional", "aten"])
@pytest.mark.parametrize("causal", [False, True])
def test_cross_attention_of_another_length_causal_or_not(form, causal):
    torch.manual_seed(5)
    x = 3.0 * torch.randn(2, 5, 12)
    model = CrossAttention(causal).eval()
    gm, rewrites = run_pass("sdpa-as-matmul-softmax", captured(model, x, form), x)
    assert rewrites == 1 and kinds(gm)["add"] == int(causal)
    assert_same(gm, model, x)
