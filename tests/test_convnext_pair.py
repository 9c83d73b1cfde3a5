"""ConvNeXt blocks the RAN-i way (lowering/candidates/approx_convnext_block_as_narrow_pair.py) and
cpu-reference's cost, latency measured on this CPU (fxrewrite/ship/host_latency.py): blocks found in
module and ATen captures, the pair exact where the dropped hidden units contribute nothing, its
MACs, distilled better than its start, and the planner costing by measured latency."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlock, CNBlockConfig

from conftest import held_out_errors
from fxrewrite import api
from fxrewrite.distill.sizing import module_cost
from fxrewrite.lowering.candidates.approx_convnext_block_as_narrow_pair import (CANDIDATE, ConvNeXtNarrowPair,
                                                                                find_convnext_blocks)
from fxrewrite.ship import host_latency
from fxrewrite.ship.host_latency import HostLatency
from fxrewrite.target import Target

CPU = Target.load("cpu-reference")


def _teacher(channels: int = 32, used: int | None = None) -> CNBlock:
    """A ConvNeXt block with a layer scale that is not its 1e-6 start; only `used` hidden units
    reach the output where it is given."""
    torch.manual_seed(0)
    block = CNBlock(channels, 0.5, 0.0).eval()
    with torch.no_grad():
        block.block[2].weight.uniform_(0.5, 1.5), block.block[2].bias.uniform_(-0.5, 0.5)  # the layer norm
        if used is not None:
            block.block[5].weight[:, used:] = 0
    return block


def _block(teacher: nn.Module, x: torch.Tensor, frontend: str = "export"):
    [block] = find_convnext_blocks(api.lower(teacher, (x[:1],), target=CPU, frontend=frontend).gm)
    return block


@pytest.mark.parametrize("frontend", ["symbolic", "export"])
def test_the_blocks_of_a_torchvision_convnext_are_found(frontend):
    model = torchvision.models.ConvNeXt([CNBlockConfig(16, 32, 2), CNBlockConfig(32, None, 1)], num_classes=10).eval()
    gm = api.lower(model, (torch.randn(1, 3, 32, 32),), target=CPU, frontend=frontend).gm
    blocks = find_convnext_blocks(gm)
    assert [(b.in_ch, b.kernel, b.residual, type(b.activation)) for b in blocks] == [
        (16, 7, True, nn.GELU), (16, 7, True, nn.GELU), (32, 7, True, nn.GELU)]
    assert all(CANDIDATE.refusal(b) == "" for b in blocks)


@pytest.mark.parametrize("frontend", ["symbolic", "export"])
def test_the_pair_starts_as_the_teacher_where_the_dropped_units_contribute_nothing(frontend):
    teacher = _teacher(used=32)  # 128 hidden units, 32 of them read: the pair keeps 32
    x = torch.randn(3, 32, 9, 11)  # odd sizes: the 7x7 depthwise conv's border
    pair = ConvNeXtNarrowPair(_block(teacher, x, frontend))
    pair.initialise(x)
    with torch.no_grad():
        want = teacher(x)
        assert torch.allclose(pair(x), want, atol=1e-5 * want.abs().max().item())
    # per pixel 2 (49 C + 2 C^2) MACs against 49 C + 8 C^2: x0.74 at C = 32, toward x0.5 as C grows
    pixels, c = 9 * 11, 32
    assert module_cost(pair, (x[:1],), CPU).macs == 2 * pixels * (49 * c + 2 * c * c)
    assert module_cost(teacher, (x[:1],), CPU).macs == pixels * (49 * c + 8 * c * c)


def test_a_narrow_expansion_is_not_split():
    block = _block(CNBlock(2, 0.5, 0.0).eval(), torch.randn(1, 2, 9, 9))  # 8 hidden units
    assert CANDIDATE.refusal(block) == "an expansion of 8 is too narrow to split"


def test_the_distilled_pair_beats_its_initialisation_on_held_out_inputs():
    teacher = _teacher()
    x = torch.randn(192, 32, 9, 9)
    with torch.no_grad():
        y = teacher(x)
    pair = ConvNeXtNarrowPair(_block(teacher, x))
    initial, distilled = held_out_errors(pair, x, y)
    # measured 0.28-0.31 of the initial error over input seeds and 1 or 2 threads
    assert 0 < distilled < 0.6 * initial


def test_host_latency_times_each_signature_once(monkeypatch):
    timed = []
    monkeypatch.setattr(host_latency, "median_seconds", lambda module, sample: timed.append(module) or 2e-6)
    measure = HostLatency(clock_mhz=500)
    block = nn.Conv2d(3, 3, 3)
    assert measure(block, torch.zeros(1, 3, 8, 8), ("a",)) == pytest.approx(1000)  # 2 us at 500 MHz
    assert measure(nn.Identity(), torch.zeros(1, 3, 8, 8), ("a",)) == pytest.approx(1000) and len(timed) == 1
    assert measure.network(block, torch.zeros(1, 3, 8, 8)) == pytest.approx(1000) and len(timed) == 2
    assert measure.describe().startswith("latency measured on this CPU by torch (median of 15 runs, as cycles at 500 MHz")


def test_real_timing_is_positive_for_modules_and_exported_programs():
    conv, x = nn.Conv2d(3, 8, 3), torch.zeros(1, 3, 16, 16)
    assert host_latency.median_seconds(conv, x) > 0
    assert host_latency.median_seconds(torch.export.export(conv, (x,)).module(), x) > 0  # it refuses eval()


class TinyConvNeXt(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 2, stride=2)
        self.block = CNBlock(32, 0.5, 0.0)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))


def test_cpu_reference_costs_the_restructuring_by_measured_latency(run_cli, tmp_path):
    report = tmp_path / "r.json"
    code, out, err = run_cli("lower", f"{__file__}:TinyConvNeXt", "-t", "cpu-reference", "--input-shape", "1,3,16,16",
                             "--calib", "synthetic", "--calib-size", "64", "-o", str(tmp_path / "m.pt2"),
                             "--report", str(report))
    assert code == 0, err
    restructuring = json.loads(report.read_text())["restructuring"]
    assert restructuring["costed_by"].startswith("latency measured on this CPU by torch")
    assert [row["rewrite"] for row in restructuring["blocks"]] == [CANDIDATE.name]
