"""NN-Mass on captured graphs against its closed forms (fxrewrite.nn_mass), in module-traced and
exported (ATen) captures, and in the reports of `check` and `lower`."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlock
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.models.resnet import BasicBlock, Bottleneck

import zoo
from fxrewrite.frontend.capture import capture
from fxrewrite.nn_mass import graph_nn_mass

FRONTENDS = ["symbolic", "export"]


def _mass(module: nn.Module, shape: tuple[int, ...], frontend: str) -> float:
    return graph_nn_mass(capture(module.eval(), (torch.randn(*shape),), frontend))


@pytest.mark.parametrize("frontend", FRONTENDS)
@pytest.mark.parametrize("block, shape, closed_form", [
    (BasicBlock(64, 64), (1, 64, 9, 7), 2 * 64),  # 3x3, 3x3, + x
    (Bottleneck(256, 64), (1, 256, 9, 7), 3 * 256),  # 1x1, 3x3, 1x1, + x
    (InvertedResidual(32, 32, 1, 6), (1, 32, 9, 7), 2 * 32),  # the depthwise conv mixes no channels
    (CNBlock(96, 1e-6, 0.0), (1, 96, 9, 7), 2 * 96),  # RAN-i's 2 w per ConvNeXt block
    (BasicBlock(32, 64, stride=2, downsample=nn.Sequential(nn.Conv2d(32, 64, 1, stride=2), nn.BatchNorm2d(64))),
     (1, 32, 9, 7), 0),  # a conv on the shortcut: no identity link
    (InvertedResidual(32, 32, 2, 6), (1, 32, 9, 7), 0),  # strided: no residual at all
], ids=["basic", "bottleneck", "inverted-residual", "convnext", "projection-shortcut", "strided-inverted"])
def test_a_block_has_its_closed_form(block, shape, closed_form, frontend):
    assert _mass(block, shape, frontend) == closed_form


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_a_network_sums_its_blocks(frontend):
    # resnet18: every stage's identity blocks, 2 x width each; the first block of stages 2-4 projects its shortcut
    assert _mass(torchvision.models.resnet18(), (1, 3, 32, 32), frontend) == 2 * (64 + 64 + 128 + 256 + 512)
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    assert _mass(plain, (1, 3, 9, 9), frontend) == 0


def test_a_concatenated_skip_counts_like_an_added_one():
    class DenseLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(16, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))

        def forward(self, x):
            return torch.cat([x, self.body(x)], 1)

    assert _mass(DenseLayer(), (1, 16, 5, 5), "symbolic") == 16 * 2


def test_check_and_lower_report_nn_mass(run_cli, tmp_path):
    code, out, err = run_cli("check", f"{zoo.__file__}:tiny_cnn", "-t", "npu-generic", "--json",
                             "--input-shape", "1,3,16,16")
    assert json.loads(out)["nn_mass"] == 0  # a plain chain
    report = tmp_path / "r.json"
    code, out, err = run_cli("lower", "torchvision.models:resnet18", "-t", "npu-generic", "--input-shape",
                             "1,3,32,32", "-o", str(tmp_path / "m.pt2"), "--report", str(report))
    assert code == 0, err
    document = json.loads(report.read_text())
    assert document["before"]["nn_mass"] == 2048  # the exact rewrites keep every skip
    assert document["after"]["nn_mass"] >= 2048 and "NN-Mass 2,048 -> " in out
