import torch
from torch import nn

from pass_helpers import captured, conv_kernels, run_pass
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
