"""The Ethos-U targets' op tables against the real toolchain (slow; needs the ethos-u extra): one small
graph per op and attribute form, a 3x3 conv and then the op, checked by fxrewrite against the target file
and compiled by ExecuTorch's Arm backend and Vela for the file's accelerator. A form the file declares
legal must be delegated whole; a form it calls illegal must leave something on the CPU. Where the two
disagree on purpose, the form is listed with the reason, as a strict expected failure."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite import api
from fxrewrite.target import Target

TARGETS = ["ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512", "ethos-u85-256"]
Op = Callable[[torch.Tensor], torch.Tensor]


class ConvThen(nn.Module):
    """A 3x3 conv (so the NPU has a partition to take the op into) followed by `op`."""

    def __init__(self, op: Op):
        super().__init__()
        self.conv, self.op = nn.Conv2d(8, 8, 3, padding=1), op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(self.conv(x))


class SelfAttention(nn.Module):
    """nn.MultiheadAttention over the map's pixels as tokens."""

    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)
        return self.attention(tokens, tokens, tokens, need_weights=False)[0]


#: a fixed mask and fixed channel positions, as models keep them in buffers
_MASK = torch.rand(1, 8, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5
_POSITIONS = torch.tensor([3, 1, 2, 0, 5, 4, 7, 6])

#: op kind -> forms of it (name -> op after the conv); every kind a file declares has at least one
PROBES: dict[str, dict[str, Op]] = {
    "conv2d": {"depthwise": nn.Conv2d(8, 8, 3, padding=1, groups=8), "grouped": nn.Conv2d(8, 8, 3, padding=1, groups=2),
               "stride 2": nn.Conv2d(8, 8, 3, 2, 1), "1x1": nn.Conv2d(8, 16, 1), "7x7": nn.Conv2d(8, 8, 7, padding=3),
               "dilated": nn.Conv2d(8, 8, 3, padding=2, dilation=2)},
    "conv_transpose2d": {"2x2 stride 2": nn.ConvTranspose2d(8, 8, 2, stride=2)},
    "linear": {"": nn.Sequential(nn.Flatten(), nn.Linear(512, 4))},
    "matmul": {"": lambda x: torch.matmul(x, x.transpose(2, 3))},
    "scaled_dot_product_attention": {"": lambda x: F.scaled_dot_product_attention(x, x, x)},
    "multihead_attention": {"": SelfAttention()},
    "batch_norm": {"after a relu": nn.Sequential(nn.ReLU(), nn.BatchNorm2d(8).eval())},
    "layer_norm": {"": lambda x: F.layer_norm(x, (8,))},
    "group_norm": {"": nn.GroupNorm(2, 8)},
    "avg_pool2d": {"": nn.AvgPool2d(2)},
    "max_pool2d": {"2x2": nn.MaxPool2d(2), "3x3 stride 2": nn.MaxPool2d(3, 2, 1)},
    "adaptive_avg_pool2d": {"to 1": nn.AdaptiveAvgPool2d(1), "to 2": nn.AdaptiveAvgPool2d(2)},
    "mean": {"spatial": lambda x: x.mean((2, 3), keepdim=True), "channels": lambda x: x.mean(1, keepdim=True)},
    "sum": {"": lambda x: x.sum((2, 3), keepdim=True)},
    "amax": {"": lambda x: x.amax((2, 3), keepdim=True)},
    "add": {"": lambda x: x + torch.relu(x)},
    "sub": {"": lambda x: x - torch.relu(x)},
    "mul": {"": lambda x: x * torch.relu(x), "broadcast gate": lambda x: x * torch.sigmoid(x.mean((2, 3), keepdim=True))},
    "div": {"by a tensor": lambda x: x / (torch.sigmoid(x) + 1), "by a constant": lambda x: x / 3.0},
    "reciprocal": {"": lambda x: torch.reciprocal(torch.sigmoid(x) + 1)},
    "cat": {"": lambda x: torch.cat([x, x * 2], 1)},
    "split": {"": lambda x: torch.relu(x.split(4, 1)[0])},
    "slice": {"": lambda x: torch.relu(x[:, :, 1:5])},
    "pad": {"": lambda x: F.pad(x, (1, 1, 1, 1))},
    "reshape": {"": lambda x: torch.relu(x.reshape(1, 8, 64))},
    "flatten": {"": lambda x: torch.relu(x.flatten(1))},
    "permute": {"": lambda x: torch.relu(x.permute(0, 2, 3, 1))},
    "transpose": {"": lambda x: torch.relu(x.transpose(1, 2))},
    "expand": {"": lambda x: x.mean(1, keepdim=True).expand(1, 8, 8, 8) + x},
    "pixel_shuffle": {"": nn.PixelShuffle(2)},
    "where": {"constant mask": lambda x: torch.where(_MASK, x, x * 0.5)},
    "index_select": {"constant positions": lambda x: torch.index_select(x, 1, _POSITIONS)},
    "upsample": {"nearest 2x": lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
                 "nearest 3x": lambda x: F.interpolate(x, scale_factor=3, mode="nearest"),
                 "bilinear 2x": lambda x: F.interpolate(x, scale_factor=2, mode="bilinear")},
    "relu": {"": torch.relu},
    "relu6": {"as the output": F.relu6, "before a conv": nn.Sequential(nn.ReLU6(), nn.Conv2d(8, 8, 1)),
              "before an add": lambda x: F.relu6(x) + x},
    "hardtanh": {"": lambda x: F.hardtanh(x, -1.0, 2.0)},
    **{kind: {"": op} for kind, op in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("hardswish", F.hardswish),
                                       ("hardsigmoid", F.hardsigmoid), ("gelu", F.gelu), ("silu", F.silu),
                                       ("erf", torch.erf), ("exp", torch.exp))},
    "rsqrt": {"": lambda x: torch.rsqrt(torch.sigmoid(x) + 1)},
    "softmax": {"channels": lambda x: torch.softmax(x, 1), "last dim": lambda x: torch.softmax(x, -1)},
    # a kind no Ethos-U file declares: the flow leaves its index arithmetic on the CPU
    "roll": {"": lambda x: torch.roll(x, 1, 2)},
}

#: (target, kind, form) where the file and the toolchain disagree on purpose; strict, so the entry goes
#: when the toolchain changes
DISAGREEMENTS = {
    **{(target, "relu6", form): "ExecuTorch 1.5.1 leaves a relu6 that ends the graph or feeds an add unquantized on "
       "the CPU ('Node was not marked as quantized in the Arm backend'); one that feeds a conv (mobilenet_v2's) is "
       "delegated" for target in TARGETS for form in ("as the output", "before an add")},
    **{(target, "batch_norm", "after a relu"): "the files leave batch norm out on purpose: the flow delegates it "
       "decomposed at up to 13x the cycles of the depthwise 1x1 conv fxrewrite rewrites it into" for target in TARGETS},
}


def _probes() -> list:
    params = []
    for target in TARGETS:
        for kind, forms in PROBES.items():
            for form, op in forms.items():
                reason = DISAGREEMENTS.get((target, kind, form))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                params.append(pytest.param(target, kind, op, id=f"{target}-{kind}-{form or 'plain'}".replace(" ", "_"),
                                           marks=marks))
    return params


@pytest.mark.parametrize("target", TARGETS)
def test_every_declared_op_has_a_probe(target):
    assert set(Target.load(target).ops) <= set(PROBES)


@pytest.mark.slow
@pytest.mark.parametrize("target, kind, op", _probes())
def test_the_file_and_the_toolchain_agree(target, kind, op):
    pytest.importorskip("executorch")
    from fxrewrite.ship.ethos_u import compile_for_ethos_u

    torch.manual_seed(0)
    module, inputs = ConvThen(op).eval(), (torch.randn(1, 8, 8, 8),)
    loaded = Target.load(target)
    legal = api.check(module, loaded, inputs).all_legal
    on_cpu = {cpu.op: cpu.reason for cpu in compile_for_ethos_u(module, inputs, loaded.vela_accelerator).cpu_ops}
    assert legal == (not on_cpu), (f"{target} calls {kind} {'legal' if legal else 'illegal'}; "
                                   f"the toolchain left on the CPU: {on_cpu or 'nothing'}")
