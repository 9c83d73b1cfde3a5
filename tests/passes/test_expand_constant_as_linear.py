import pytest
import torch
from torch import nn

from pass_helpers import assert_same, captured, kinds, run_pass
from fxrewrite import lower


class ClassToken(nn.Module):
    """ViT's class token prepended to tokens: the constant expanded to the batch read from x."""

    def __init__(self):
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, 6))

    def forward(self, x):
        return torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)


@pytest.mark.parametrize("form", ["module", "aten"])
def test_a_class_token_per_sample_is_a_zero_weight_fc_layer(form):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6)
    model = ClassToken().eval()
    gm, rewrites = run_pass("expand-constant-as-linear", captured(model, x, form), x)
    assert rewrites == 1
    assert "expand" not in kinds(gm) and kinds(gm)["linear"] == 1
    assert_same(gm, model, x, rtol=0.0)  # 0 * x + c is c exactly
    other = torch.randn(3, 5, 6)
    assert_same(gm, model, other, rtol=0.0)


class ExpandInput(nn.Module):
    def forward(self, x):
        return x.expand(2, -1, -1)


def test_an_expanded_activation_is_declined():
    x = torch.randn(1, 4, 6)
    gm, rewrites = run_pass("expand-constant-as-linear", captured(ExpandInput().eval(), x, "module"), x)
    assert rewrites == 0 and kinds(gm)["expand"] == 1


def test_a_class_token_lowers_onto_archnet_transformer_exactly():
    torch.manual_seed(1)
    x = torch.randn(1, 5, 6)
    lowered = lower(captured(ClassToken().eval(), x, "aten"), (x,), target="archnet-transformer")
    assert lowered.legal and lowered.report.max_relative_error < 1e-5
    assert lowered.report.rewrites["expand-constant-as-linear"] == 1
