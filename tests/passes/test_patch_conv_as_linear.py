import pytest
import torch
from torch import nn

from pass_helpers import FORMS, FunctionalConv, assert_same, captured, kinds, run_pass
from fxrewrite import lower


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("kernel, size", [((4, 4), (32, 28)), ((2, 3), (6, 15)), ((1, 1), (5, 7)), ((7, 7), (21, 7))])
def test_a_patch_conv_becomes_an_fc_layer_over_the_patches(form, kernel, size):
    torch.manual_seed(sum(kernel))
    conv = nn.Conv2d(3, 5, kernel, stride=kernel, bias=True)
    model = (nn.Sequential(FunctionalConv(conv)) if form == "functional" else nn.Sequential(conv)).eval()
    x = torch.randn(2, 3, *size)
    gm, rewrites = run_pass("patch-conv-as-linear", captured(model, x, form), x)
    assert rewrites == 1
    found = kinds(gm)
    assert found["linear"] == 1 and "conv2d" not in found
    assert_same(gm, model, x)


@pytest.mark.parametrize("conv, size", [(nn.Conv2d(3, 4, 4, stride=4), (30, 32)),  # 30 is no multiple of 4
                                        (nn.Conv2d(3, 4, 3, stride=2), (9, 9)),
                                        (nn.Conv2d(3, 4, 2, stride=2, padding=1), (8, 8)),
                                        (nn.Conv2d(4, 4, 2, stride=2, groups=2), (8, 8))])
def test_overlapping_padded_grouped_or_ragged_convs_are_declined(conv, size):
    x = torch.randn(1, conv.in_channels, *size)
    gm, rewrites = run_pass("patch-conv-as-linear", captured(nn.Sequential(conv).eval(), x, "module"), x)
    assert rewrites == 0 and kinds(gm)["conv2d"] == 1


class Patchify(nn.Module):
    """ViT's stem: 4x4 patches to tokens (N, L, D)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


def test_vit_patchify_lowers_onto_archnet_transformer_exactly():
    torch.manual_seed(3)
    x = torch.randn(1, 3, 16, 12)
    lowered = lower(captured(Patchify().eval(), x, "aten"), (x,), target="archnet-transformer")
    assert lowered.legal and lowered.report.max_relative_error < 1e-5
    assert lowered.report.rewrites["patch-conv-as-linear"] == 1
