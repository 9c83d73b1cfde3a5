import pytest
import torch
from torch import nn

from conftest import chip
from pass_helpers import assert_same, captured, kinds, run_pass
from fxrewrite import lower


class Conv1D(nn.Module):
    """GPT-2's projection: addmm(b, x, W) over the flattened tokens, W of shape (in, out)."""

    def __init__(self, nx: int = 12, nf: int = 20, alpha: float = 1.0, beta: float = 1.0, row_bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) / nx ** 0.5)
        self.bias = nn.Parameter(torch.randn(1, nf) if row_bias else torch.randn(nf))
        self.alpha, self.beta = alpha, beta

    def forward(self, x):
        flat = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight, beta=self.beta, alpha=self.alpha)
        return torch.relu(flat.reshape(x.shape[:-1] + (self.weight.shape[1],)))


@pytest.mark.parametrize("form", ["functional", "aten"])
@pytest.mark.parametrize("alpha, beta, row_bias", [(1.0, 1.0, False), (0.5, 2.0, True)])
def test_gpt2s_conv1d_becomes_an_fc_layer(form, alpha, beta, row_bias):
    torch.manual_seed(0)
    x = torch.randn(2, 7, 12)
    model = Conv1D(alpha=alpha, beta=beta, row_bias=row_bias).eval()
    gm, rewrites = run_pass("addmm-as-linear", captured(model, x, form), x)
    assert rewrites == 1 and kinds(gm)["linear"] == 1 and "addmm" not in kinds(gm)
    assert_same(gm, model, x)


def test_transformers_conv1d_module_is_lowered_to_an_fc_chip():
    from transformers.pytorch_utils import Conv1D as HuggingFaceConv1D
    torch.manual_seed(1)
    x = torch.randn(1, 5, 12)
    model = nn.Sequential(HuggingFaceConv1D(20, 12), nn.ReLU()).eval()
    lowered = lower(captured(model, x, "aten"), (x,), target=chip("[ops.linear]\n[ops.relu]\n[ops.reshape]\n"))
    assert lowered.legal and lowered.report.max_relative_error <= 1e-5
    assert lowered.report.rewrites["addmm-as-linear"] == 1


class Products(nn.Module):
    def forward(self, x):
        return torch.addmm(x[0, :3], x, x.t()[:, :3])


def test_a_product_of_activations_is_declined_with_its_reason():
    x = torch.randn(4, 5)
    gm = captured(Products().eval(), x, "functional")
    gm, rewrites = run_pass("addmm-as-linear", gm, x)
    assert rewrites == 0 and kinds(gm)["addmm"] == 1
