"""A free batch dimension: a model exported at batch 1 distils on batches and its lowered .pt2
runs at any batch size; where freeing the batch would change the maths, the model says so."""

from __future__ import annotations

import torch
from torch import nn

from fxrewrite import load_and_capture
from fxrewrite.frontend import capture
from fxrewrite.frontend.batch import FIXED_BATCH


class ViewHead(nn.Module):
    """A GELU archnet cannot run, then `y.view(y.size(0), -1)`: export writes the batch size 1 into it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        y = nn.functional.gelu(self.conv(x))
        return self.fc(y.view(y.size(0), -1))


class MixesSamples(nn.Module):
    def forward(self, x):
        return x + x.sum(0, keepdim=True)


def saved_at_batch_1(model: nn.Module, path, *shape: int) -> str:
    torch.export.save(torch.export.export(model.eval(), (torch.randn(1, *shape),)), path)
    return str(path)


def test_a_pt2_exported_at_batch_1_is_released_and_computes_per_sample(tmp_path):
    model = ViewHead().eval()
    gm = load_and_capture(saved_at_batch_1(model, tmp_path / "m.pt2", 1, 6, 6))
    assert FIXED_BATCH not in gm.meta
    x = torch.randn(4, 1, 6, 6)
    torch.testing.assert_close(gm(x), model(x))


def test_a_model_whose_samples_interact_stays_fixed_and_distilling_it_is_refused(tmp_path, run_cli):
    spec = saved_at_batch_1(MixesSamples(), tmp_path / "mix.pt2", 3)
    assert "samples change each other's results" in load_and_capture(spec).meta[FIXED_BATCH]
    code, _, err = run_cli("lower", spec, "-t", "archnet", "--calib", "synthetic", "-o", str(tmp_path / "o.pt2"))
    assert code == 2 and "runs at batch 1 only" in err and "Dim('batch')" in err


def test_the_export_frontend_captures_a_free_batch():
    gm = capture(ViewHead().eval(), (torch.randn(1, 1, 6, 6),), "export")
    assert FIXED_BATCH not in gm.meta
    x = torch.randn(3, 1, 6, 6)
    torch.testing.assert_close(gm(x), ViewHead().eval()(x))


def test_a_pt2_exported_at_batch_1_distils_through_the_cli_and_runs_at_batch_8(tmp_path, run_cli):
    spec = saved_at_batch_1(ViewHead(), tmp_path / "m.pt2", 1, 6, 6)
    out = tmp_path / "student.pt2"
    code, stdout, stderr = run_cli("lower", spec, "-t", "archnet", "--calib", "synthetic", "--calib-size", "64",
                                   "--epochs", "1", "--finetune-epochs", "1", "-o", str(out))
    assert code == 0, stderr
    assert "every node is legal on archnet" in stdout and "saved at batch" not in stdout
    assert torch.export.load(out).module()(torch.randn(8, 1, 6, 6)).shape == (8, 10)


class Attends(nn.Module):
    """nn.MultiheadAttention over patch tokens, sequence first: at batch 1 export writes batch x heads
    as one constant (view(q, [L, 1 * heads, d]))."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.attention = nn.Conv2d(1, 8, 2, stride=2), nn.MultiheadAttention(8, 4)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).permute(2, 0, 1)  # (L, N, E)
        return self.attention(tokens, tokens, tokens, need_weights=False)[0].mean(0)


def test_a_batch_folded_into_attention_heads_is_released_too(tmp_path):
    model = Attends().eval()
    gm = load_and_capture(saved_at_batch_1(model, tmp_path / "attends.pt2", 1, 6, 6))
    assert FIXED_BATCH not in gm.meta
    x = torch.randn(5, 1, 6, 6)
    torch.testing.assert_close(gm(x), model(x), rtol=1e-4, atol=1e-5)


def test_rounding_that_a_deep_network_amplifies_at_batch_2_still_counts_as_per_sample():
    """efficientnet_b0 trained on MNIST, fed random inputs, differs at batch 2 by 3.6% of its logits
    from batch 1 (the kernels round differently): released. A sample reading another: kept fixed."""
    from fxrewrite.frontend.batch import _same
    want = torch.randn(1, 10) * 1000
    assert _same(want * (1 + 0.036 * torch.randn(1, 10)), want)
    assert not _same(want + torch.randn(1, 10) * 1000, want)
