from __future__ import annotations

import collections

import pytest
import torch
from torch import fx, nn

from fxrewrite.frontend import capture
from fxrewrite.ir import op_view
from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import PassContext, relative_error
from fxrewrite.target import Target

FORMS = ("module", "functional", "aten")


def kinds(gm: fx.GraphModule) -> collections.Counter:
    return collections.Counter(v.kind for v in map(op_view, gm.graph.nodes) if not v.structural)


def conv_kernels(gm: fx.GraphModule) -> list[tuple[int, int]]:
    return [v.attrs["kernel"] for v in map(op_view, gm.graph.nodes) if v.kind == "conv2d"]


class FunctionalConv(nn.Module):
    """The same conv called as F.conv2d on parameters, so tracing records a function and get_attr nodes."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        c = self.conv
        return torch.nn.functional.conv2d(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)


#: the kernel sizes, strides, paddings and groupings every large-kernel decomposition is tested on
LARGE_KERNEL_CASES = pytest.mark.parametrize("k, stride, padding, depthwise", [
    (k, stride, padding, depthwise) for k in (5, 7, 9, 11) for stride in (1, 2) for padding in ("same", "valid", "small")
    for depthwise in (False, True)])


def large_kernel_case(k: int, stride: int, padding: str, depthwise: bool) -> tuple[nn.Module, torch.Tensor]:
    """A k x k conv with bias (4 input channels; depthwise, or dense to 5) and an odd-sized input."""
    torch.manual_seed(k + stride)
    channels = 4
    pad = {"same": k // 2, "valid": 0, "small": 1}[padding]
    conv = nn.Conv2d(channels, channels if depthwise else 5, k, stride=stride, padding=pad,
                     groups=channels if depthwise else 1, bias=True)
    return nn.Sequential(conv), torch.randn(1, channels, 29, 31)


def with_random_affine(norm: nn.Module) -> nn.Module:
    """`norm` with its affine weight in [-2, 2] and bias in [-1, 1] (when it has them)."""
    if getattr(norm, "weight", None) is not None:
        with torch.no_grad():
            norm.weight.uniform_(-2, 2)
            norm.bias.uniform_(-1, 1)
    return norm


def captured(module: nn.Module, x: torch.Tensor, form: str) -> fx.GraphModule:
    module = module.eval()
    return capture(module, (x,), "export" if form == "aten" else "symbolic")


def run_pass(name: str, gm: fx.GraphModule, x: torch.Tensor, target: Target | None = None) -> tuple[fx.GraphModule, int]:
    """Apply one registered pass (to every candidate without a target; with one, as lowering does
    but without trial legalization) and check the graph still lints."""
    result = registered_passes()[name].run(gm, PassContext((x,), target))
    gm.graph.lint()
    return gm, result.rewrites


def assert_same(gm: fx.GraphModule, reference: nn.Module, x: torch.Tensor, rtol: float = 1e-5) -> None:
    """Every output pixel, borders included, within float32 rounding of the reference."""
    with torch.no_grad():
        got, want = gm(x), reference(x)
    assert got.shape == want.shape
    error = relative_error(got, want)
    assert error <= rtol, f"relative error {error:.3g}"
