import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite import lower
from fxrewrite.ir import op_view
from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import Decline, Match, Rewriter, RuleSet, apply_rules
from pass_helpers import FORMS, assert_same, captured, kinds, run_pass

PASS = "decompose-bilinear-upsample"
RULES = {rule.name: rule for rule in registered_passes()[PASS].rules.rules}


class Interpolate(nn.Module):
    """A conv with bias, then bilinear F.interpolate: tracing records the function, export the ATen op."""

    def __init__(self, **how):
        super().__init__()
        self.conv, self.how = nn.Conv2d(3, 5, 3, padding=1), how

    def forward(self, x):
        return F.interpolate(self.conv(x), mode="bilinear", **self.how)


def model(form: str, how: dict) -> nn.Module:
    if form == "module":
        return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.Upsample(mode="bilinear", **how))
    return Interpolate(**how)


def with_rule(name: str, teacher: nn.Module, x: torch.Tensor, form: str):
    gm = captured(teacher, x, form)
    rewrites = sum(apply_rules(gm, RuleSet((RULES[name],))).applied.values())
    gm.graph.lint()
    return gm, rewrites


SHAPE = (9, 13)  # odd sides: the clamped border rows and columns are compared too
INTEGER = [dict(scale_factor=s) for s in (2, 3, 4, 8)] + [dict(size=(SHAPE[0] * 4, SHAPE[1] * 4))]


def _resized(rule: str, form: str, how: dict):
    """The teacher resizing by `how`, and its graph with `rule` applied (after one rewrite)."""
    torch.manual_seed(len(str(how)))
    teacher = model(form, how).eval()
    x = torch.randn(2, 3, *SHAPE)
    gm, rewrites = with_rule(rule, teacher, x, form)
    assert rewrites == 1
    assert_same(gm, teacher, x)
    return kinds(gm), gm


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("how", INTEGER + [dict(scale_factor=2, align_corners=True), dict(scale_factor=(2, 3)),
                                          dict(size=(13, 19)), dict(scale_factor=1.5), dict(size=(5, 7))],
                         ids=str)
def test_any_bilinear_resize_as_two_fixed_linear_maps(form, how):
    found, _ = _resized("linear-maps", form, how)
    assert found["upsample"] == 0 and found["linear"] == 2 and found["transpose"] == 2


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("how", INTEGER, ids=str)
def test_integer_factors_as_nearest_upsampling_and_box_filter(form, how):
    found, gm = _resized("nearest-and-box", form, how)
    assert found["upsample"] == 1 and found["conv2d"] == 3
    nearest = next(v for v in map(op_view, gm.graph.nodes) if v.kind == "upsample")
    assert nearest.attrs["mode"] == "nearest"


@pytest.mark.parametrize("rule", ["linear-maps", "nearest-and-box"])
@pytest.mark.parametrize("shape", [(1, 6), (2, 2), (5, 1)])
def test_maps_of_one_or_two_pixels_are_all_border(rule, shape):
    teacher = Interpolate(scale_factor=4).eval()
    x = torch.randn(1, 3, *shape)
    gm, rewrites = with_rule(rule, teacher, x, "aten")
    assert rewrites == 1
    assert_same(gm, teacher, x)


@pytest.mark.parametrize("form", FORMS)
def test_a_one_pixel_map_becomes_an_expand(form):
    """DeepLabV3's pooled branch: bilinear from 1x1 to the map's size is that pixel everywhere."""
    teacher = model(form, dict(size=(7, 9)) if form != "module" else dict(scale_factor=7)).eval()
    x = torch.randn(2, 3, 1, 1)
    gm, rewrites = run_pass(PASS, captured(teacher, x, form), x)
    assert rewrites == 1 and kinds(gm)["upsample"] == 0 and kinds(gm)["expand"] == 1
    assert_same(gm, teacher, x)
    if form != "aten":  # captured at batch 2, run at batch 5 (a regression: the expand fixed the batch)
        assert_same(gm, teacher, torch.randn(5, 3, 1, 1))


@pytest.mark.parametrize("how, reason", [
    (dict(scale_factor=2, align_corners=True), "align_corners=True"),
    (dict(scale_factor=(2, 3)), "scale 2x3"),
    (dict(size=(13, 19)), "scale"),
])
def test_the_box_filter_declines_resizing_without_a_period(how, reason):
    teacher = Interpolate(**how).eval()
    x = torch.randn(1, 3, *SHAPE)
    gm = captured(teacher, x, "functional")
    up = next(v for v in map(op_view, gm.graph.nodes) if v.kind == "upsample")
    declined = RULES["nearest-and-box"].replace(Match({"up": up}, (up.node,)), Rewriter(gm))
    assert isinstance(declined, Decline) and reason in declined.reason


def test_the_u55_runs_a_segmentation_head_after_lowering():
    """Bilinear resizing is CPU-only on the U55; lowered, the logits' upsampling is two FC layers."""

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 64, 3, stride=2, padding=1), nn.ReLU(),
                                          nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
                                          nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU())
            self.logits = nn.Conv2d(128, 6, 1)

        def forward(self, x):
            return F.interpolate(self.logits(self.features(x)), scale_factor=8, mode="bilinear", align_corners=False)

    teacher = Head().eval()
    x = torch.randn(1, 3, 56, 72)
    result = lower(teacher, (x,), target="ethos-u55-128")
    assert result.verdicts.illegal == ()
    assert kinds(result.gm)["upsample"] == 0 and kinds(result.gm)["linear"] == 2
    assert result.report.max_relative_error <= 1e-5
