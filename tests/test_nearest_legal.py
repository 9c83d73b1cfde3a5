"""Teacher forms that keep a block's structure where the target lacks an op: the nearest legal op
(fxrewrite.distill.nearest_legal) for a ConvNeXt block's layer norm, large depthwise kernel and GELU,
and a ViT encoder block's attention kept with its own layers."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.convnext import CNBlock

from conftest import exported, symbolic
from fxrewrite.distill.nearest_legal import nearest_legal
from fxrewrite.distill.students.teacher_form import teacher_forms
from fxrewrite.distill.students.base import runs_on
from fxrewrite.ir import op_view
from fxrewrite.lowering.exact import legal_lowering
from fxrewrite.metrics import relative_error
from fxrewrite.target import Target
from test_region_students import trained_loss_drop

ARCHNET = Target.load("archnet")


def features(*shape: int) -> torch.Tensor:
    """Feature maps as a trained network's are: each channel has its own level and spread, and pixels
    vary around them (white noise over channels has no per-channel structure for any affine to fit)."""
    level, spread = torch.randn(shape[1], 1, 1) * 2, torch.rand(shape[1], 1, 1) + 0.5
    return level + spread * torch.randn(shape) * 0.5


class ChannelsLastNorm(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def test_a_layer_norm_becomes_the_per_channel_affine_that_fits_it_exactly_where_pixels_share_their_statistics():
    torch.manual_seed(0)
    model = ChannelsLastNorm(6).eval()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 2)
        model.norm.bias.uniform_(-1, 1)
    # every pixel is the same normalised profile, scaled and shifted alike: LN(x) is then an affine map per channel
    profile = torch.randn(6)
    profile = (profile - profile.mean()) / profile.std(unbiased=False)
    x = (3.0 * profile[None, :, None, None] + 0.7).expand(2, 6, 5, 7)
    gm = symbolic(model, x[:1])
    made = nearest_legal(gm, ARCHNET, (x,))
    assert made == ["layer_norm -> per-channel affine fitted on the inputs (relative error 0.00)"]
    assert "layer_norm" not in {op_view(n).kind for n in gm.graph.nodes}
    with torch.no_grad():
        assert relative_error(gm(x), model(x)) < 1e-5


def test_a_layer_norm_no_affine_comes_near_is_left_without_a_nearest_legal_op():
    """Over pooled features each sample's scale differs: LN(x) = LN(2x), which no affine map follows."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 3)).eval()
    x = torch.randn(64, 8) * torch.rand(64, 1) * 10
    gm = symbolic(head, x[:1])
    assert nearest_legal(gm, ARCHNET, (x,)) == []
    assert teacher_forms(symbolic(head, x[:1]), (x,), ARCHNET, legal_lowering) == []

def test_a_convnext_block_keeps_its_layers_on_archnet_with_their_nearest_legal_ops():
    """ConvNeXt's block (7x7 depthwise, channels-last layer norm and MLP, GELU, layer scale, residual):
    the form is legal on archnet, starts near the block (measured: relative error 0.08 on random
    weights; bound 0.25) and training lowers its loss."""
    torch.manual_seed(0)
    block = CNBlock(16, layer_scale=0.5, stochastic_depth_prob=0.0).eval()
    x = features(16, 16, 9, 11)
    for region in (symbolic(block, x[:1]), exported(block, x[:1])):
        forms = teacher_forms(region, (x,), ARCHNET, legal_lowering)
        assert len(forms) == 1  # no exact form: layer norm and GELU have none on archnet
        form = forms[0]
        assert form.approximations[0].startswith("layer_norm -> per-channel affine fitted on the inputs")
        assert form.approximations[1] == "gelu -> relu"
        assert form.approximations[2].startswith("conv2d 7x7 depthwise -> 4 branches of 3 3x3 convs")
        assert runs_on(ARCHNET, form, (x,))
        with torch.no_grad():
            want = block(x)
            assert relative_error(form(x), want) < 0.25
    first, last = trained_loss_drop(form, [x], want, lr=1e-3)
    assert last < 0.7 * first


def test_on_a_chip_with_depthwise_convs_the_large_depthwise_kernel_stays_depthwise():
    torch.manual_seed(0)
    block = CNBlock(16, layer_scale=0.5, stochastic_depth_prob=0.0).eval()
    x = features(8, 16, 9, 9)
    target = Target.load("npu-generic")
    form, = teacher_forms(symbolic(block, x[:1]), (x,), target, legal_lowering)
    assert runs_on(target, form, (x,))
    convs = [m for m in form.modules() if isinstance(m, nn.Conv2d)]
    assert {m.kernel_size for m in convs} <= {(1, 1), (3, 3)}
    assert any(m.groups == m.in_channels > 1 for m in convs)  # the fitted 3x3 stack runs depthwise


def tokens(*shape: int) -> torch.Tensor:
    """Token features as a trained encoder's are: each feature has its own level and spread."""
    level, spread = torch.randn(shape[-1]) * 2, torch.rand(shape[-1]) + 0.5
    return level + spread * torch.randn(shape) * 0.5


def test_a_vit_encoder_block_keeps_its_attention_on_archnet_transformer():
    """torchvision's ViT encoder block (layer norms, 4-head attention through nn.MultiheadAttention,
    GELU MLP, two residual adds) as a teacher form: q, k, v from the teacher's in-projection, two
    matmuls and a softmax, each add as concat + FC, its layer norms as fitted affines and GELU as
    ReLU. Legal on archnet-transformer, near the block at initialisation (measured: relative error
    0.07 on random weights; bound 0.25) and training lowers its loss."""
    from torchvision.models.vision_transformer import EncoderBlock

    torch.manual_seed(0)
    block = EncoderBlock(4, 24, 48, 0.0, 0.0).eval()
    x = tokens(16, 17, 24)
    target = Target.load("archnet-transformer")
    form, = teacher_forms(exported(block, x[:1]), (x,), target, legal_lowering)
    assert [a.split(" (")[0] for a in form.approximations] == ["layer_norm -> per-channel affine fitted on the inputs",
                                                              "layer_norm -> per-channel affine fitted on the inputs",
                                                              "gelu -> relu"]
    assert runs_on(target, form, (x,))
    found = {op_view(n).kind for n in form.graph_module.graph.nodes}
    assert {"matmul", "softmax", "linear", "cat"} <= found and "scaled_dot_product_attention" not in found
    with torch.no_grad():
        want = block(x)
        assert relative_error(form(x), want) < 0.25
    first, last = trained_loss_drop(form, [x], want, lr=1e-3)
    assert last < 0.7 * first
