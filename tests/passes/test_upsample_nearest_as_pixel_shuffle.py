import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite import lower
from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import RuleSet, apply_rules
from pass_helpers import FORMS, assert_same, captured, kinds, run_pass


class Interpolate(nn.Module):
    """A conv with bias, then F.interpolate: tracing records the function, export the ATen op."""

    def __init__(self, **how):
        super().__init__()
        self.conv, self.how = nn.Conv2d(3, 5, 3, padding=1), how

    def forward(self, x):
        return F.interpolate(self.conv(x), **self.how)


def model(form: str, factor: int, by_size: bool) -> nn.Module:
    if form == "module":
        return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.Upsample(scale_factor=factor))
    return Interpolate(size=(9 * factor, 13 * factor)) if by_size else Interpolate(scale_factor=factor)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("by_size", [False, True])
def test_nearest_upsampling_as_phase_conv_and_pixel_shuffle(form, factor, by_size):
    torch.manual_seed(factor)
    teacher = model(form, factor, by_size).eval()
    x = torch.randn(2, 3, 9, 13)  # odd sides: every border pixel is a copy too
    gm, rewrites = run_pass("upsample-nearest-as-pixel-shuffle", captured(teacher, x, form), x)
    assert rewrites == 1 and kinds(gm)["upsample"] == 0 and kinds(gm)["pixel_shuffle"] == 1
    assert_same(gm, teacher, x)


def test_the_dense_form_is_exact_too():
    teacher = model("functional", 2, False).eval()
    x = torch.randn(1, 3, 7, 5)
    gm = captured(teacher, x, "functional")
    dense = registered_passes()["upsample-nearest-as-pixel-shuffle"].rules.rules[1]
    apply_rules(gm, RuleSet((dense,)))
    convs = [m for m in gm.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert kinds(gm)["pixel_shuffle"] == 1 and len(convs) == 1 and convs[0].groups == 1
    assert_same(gm, teacher, x)


@pytest.mark.parametrize("how", [dict(scale_factor=2, mode="bilinear"), dict(scale_factor=(2, 3)),
                                 dict(size=(13, 19))])
def test_resampling_that_is_not_a_copy_per_phase_is_declined(how):
    teacher = Interpolate(**how).eval()
    x = torch.randn(1, 3, 9, 13)
    gm, rewrites = run_pass("upsample-nearest-as-pixel-shuffle", captured(teacher, x, "functional"), x)
    assert rewrites == 0 and kinds(gm)["upsample"] == 1


def test_npu_generic_runs_nearest_upsampling_after_lowering_and_reports_bilinear():
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return F.interpolate(y, scale_factor=2), F.interpolate(y, scale_factor=2, mode="bilinear")

    teacher = Decoder().eval()
    x = torch.randn(1, 8, 15, 17)
    result = lower(teacher, (x,), target="npu-generic")
    illegal = result.verdicts.illegal
    assert [row.kind for row in illegal] == ["upsample"] and "upsample is not supported" in illegal[0].reason
    assert "mode=bilinear" in illegal[0].attrs
    assert kinds(result.gm)["pixel_shuffle"] == 1
    assert result.report.max_relative_error <= 1e-5
