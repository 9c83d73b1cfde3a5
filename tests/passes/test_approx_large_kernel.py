import pytest
import torch
from torch import nn

from pass_helpers import FORMS, FunctionalConv, captured, conv_kernels, run_pass
from fxrewrite.passes.approx_large_kernel.dense_3x3_stack import compose
from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import PassContext


def test_approximate_pass_says_so_and_reports_its_error():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, 7, padding=3, groups=6)
    with torch.no_grad():  # a smooth kernel, as trained large kernels tend to be
        ramp = torch.linspace(-1, 1, 7)
        conv.weight.copy_(torch.exp(-(ramp[:, None] ** 2 + ramp[None, :] ** 2))[None, None] * torch.rand(6, 1, 1, 1))
    model = nn.Sequential(conv).eval()
    x = torch.randn(1, 6, 29, 31)
    pass_ = registered_passes()["approx-large-kernel"]
    assert not pass_.exact and "approx" in pass_.name
    gm, rewrites = run_pass("approx-large-kernel", captured(model, x, "module"), x)
    assert rewrites == 1 and conv_kernels(gm) == [(3, 3)] * 3
    with torch.no_grad():
        got, want = gm(x), model(x)
    interior = (slice(None), slice(None), slice(3, -3), slice(3, -3))
    error = ((got - want)[interior].abs().max() / want.abs().max()).item()
    assert error < 0.05
    result = pass_.run(captured(model, x, "module"), PassContext((x,)))
    assert any("APPROXIMATE" in note and "relative kernel error" in note for note in result.stats.notes)


@pytest.mark.parametrize("form, stride", list(zip(FORMS, (1, 2, 2))))
def test_a_dense_stem_becomes_a_fitted_3x3_stack_that_says_so(form, stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 7, stride=stride, padding=3)
    with torch.no_grad():  # smooth kernels, as trained stems have
        ramp = torch.linspace(-1, 1, 7)
        conv.weight.copy_(torch.exp(-(ramp[:, None] ** 2 + ramp[None, :] ** 2))[None, None] * torch.randn(4, 2, 1, 1))
    model = FunctionalConv(conv) if form == "functional" else nn.Sequential(conv)
    x = torch.randn(1, 2, 29, 31)
    result = registered_passes()["approx-large-kernel"].run(gm := captured(model, x, form), PassContext((x,)))
    assert result.rewrites == 1 and conv_kernels(gm) == [(3, 3)] * 3
    assert any("APPROXIMATE 7x7 dense -> 3 stacked 3x3 convs" in note for note in result.stats.notes)
    with torch.no_grad():
        got, want = gm(x), model(x)
    assert got.shape == want.shape
    border = 3 // stride + 1  # pixels whose window meets the inner layers' zero padding
    interior = (slice(None), slice(None), slice(border, -border), slice(border, -border))
    assert ((got - want)[interior].abs().max() / want.abs().max()).item() < 0.01


def test_the_stack_composes_like_the_convs_it_stands_for():
    torch.manual_seed(1)
    layers = [torch.randn(4, 2, 3, 3), torch.randn(4, 4, 3, 3), torch.randn(5, 4, 3, 3)]
    x = torch.randn(1, 2, 15, 15)
    stacked = x
    for layer in layers:
        stacked = torch.nn.functional.conv2d(stacked, layer, padding=1)
    composed = torch.nn.functional.conv2d(x, compose(layers), padding=3)
    torch.testing.assert_close(stacked[..., 3:-3, 3:-3], composed[..., 3:-3, 3:-3], rtol=1e-4, atol=1e-4)
