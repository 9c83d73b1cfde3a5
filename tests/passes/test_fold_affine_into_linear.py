import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Permute

from fxrewrite import lower
from fxrewrite.target import Target
from pass_helpers import assert_same, captured, kinds, run_pass, with_random_affine

PASS = "fold-affine-into-linear"


class NormThenLinear(nn.Module):
    """A transformer's pre-norm FC layer: LayerNorm over features (random affine), then Linear with bias."""

    def __init__(self, functional: bool):
        super().__init__()
        self.norm, self.fc, self.functional = with_random_affine(nn.LayerNorm(12)), nn.Linear(12, 20), functional

    def forward(self, x):
        n = self.norm
        y = F.layer_norm(x, (12,), n.weight, n.bias, n.eps) if self.functional else n(x)
        return self.fc(y)


@pytest.mark.parametrize("form", ["module", "functional", "aten"])
def test_a_norms_affine_map_folds_into_the_next_fc_layer(form):
    torch.manual_seed(1)
    teacher = NormThenLinear(form == "functional").eval()
    x = torch.randn(2, 7, 12) * 3 + 1
    gm, rewrites = run_pass(PASS, captured(teacher, x, "aten" if form == "aten" else "symbolic"), x)
    assert rewrites == 1 and kinds(gm)["layer_norm"] == 1 and kinds(gm)["linear"] == 1
    norm = next(n for n in gm.graph.nodes if "layer_norm" in str(n.target))
    assert norm.args[2:4] == (None, None)  # the norm keeps its statistics only
    assert_same(gm, teacher, x)


class ScaleOnlyNorm(nn.Module):
    """A norm made with bias=False (a scale, no shift) before an FC layer without bias."""

    def __init__(self):
        super().__init__()
        self.norm, self.fc = nn.LayerNorm(12, bias=False), nn.Linear(12, 20, bias=False)
        with torch.no_grad():
            self.norm.weight.uniform_(-2, 2)

    def forward(self, x):
        return self.fc(self.norm(x))


@pytest.mark.parametrize("form", ["module", "aten"])
def test_a_norm_without_shift_folds_its_scale(form):
    """A regression: the fold read the missing shift as the number 0 and failed (exit 3)."""
    teacher = ScaleOnlyNorm().eval()
    x = torch.randn(2, 7, 12) * 3 + 1
    gm, rewrites = run_pass(PASS, captured(teacher, x, "aten" if form == "aten" else "symbolic"), x)
    assert rewrites == 1
    assert_same(gm, teacher, x)


class ConvNeXtTail(nn.Module):
    """ConvNeXt's block tail: Linear, GELU, Linear, permute to channels, layer scale."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8), Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.rand(8, 1, 1) + 0.5)

    def forward(self, x):
        return self.layer_scale * self.mlp(x)


class TokenScale(nn.Module):
    """timm's LayerScale: a per-feature scale after an FC layer, on tokens."""

    def __init__(self):
        super().__init__()
        self.fc, self.gamma = nn.Linear(8, 8), nn.Parameter(torch.rand(8) + 0.5)

    def forward(self, x):
        return self.fc(x) * self.gamma


@pytest.mark.parametrize("form", ["functional", "aten"])
@pytest.mark.parametrize("module, shape", [(ConvNeXtTail, (1, 5, 7, 8)), (TokenScale, (2, 9, 8))])
def test_a_per_feature_scale_folds_into_the_fc_layer_before_it(form, module, shape):
    torch.manual_seed(2)
    teacher = module().eval()
    x = torch.randn(*shape)
    gm, rewrites = run_pass(PASS, captured(teacher, x, form), x)
    assert rewrites == 1 and kinds(gm)["mul"] == 0
    assert_same(gm, teacher, x)


class SharedScale(TokenScale):
    def forward(self, x):
        y = self.fc(x)
        return y * self.gamma + y


class ChannelScale(TokenScale):
    def forward(self, x):
        return self.fc(x) * self.gamma[:3].reshape(3, 1, 1)


@pytest.mark.parametrize("module, shape", [(SharedScale, (2, 9, 8)), (ChannelScale, (1, 3, 4, 8))])
def test_scales_of_a_shared_output_or_of_other_axes_are_declined(module, shape):
    teacher = module().eval()
    x = torch.randn(*shape)
    gm, rewrites = run_pass(PASS, captured(teacher, x, "aten"), x)
    assert rewrites == 0


def test_the_folds_make_an_ethos_u_convnext_block_cheaper_by_its_estimate():
    from torchvision.models.convnext import CNBlock

    torch.manual_seed(3)
    block = CNBlock(16, layer_scale=0.5, stochastic_depth_prob=0.0).eval()
    for module in block.modules():
        if isinstance(module, nn.LayerNorm):
            with_random_affine(module)
    x = torch.randn(1, 16, 9, 11)
    result = lower(block, (x,), target=Target.load("ethos-u55-128"))
    assert result.report.rewrites[PASS] == 2
    assert result.report.after.estimate.cycles < result.report.before.estimate.cycles
    assert result.report.max_relative_error <= 1e-5
