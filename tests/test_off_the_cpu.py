"""Ops the U55 leaves on the CPU through ExecuTorch's Arm flow, lowered onto the NPU (slow; needs the
ethos-u extra): for each kind, the teacher compiled alone has the op on the CPU, fxrewrite's exact
lowering has no op there, and its whole program (Vela's NPU cycles and the host CPU's estimate) is
cheaper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxrewrite import lower


class Split(nn.Module):
    """A 3x3 conv and ReLU, then one op the U55 cannot run."""

    def __init__(self, op):
        super().__init__()
        self.conv, self.op = nn.Conv2d(8, 8, 3, padding=1), op
        self.register_buffer("mask", torch.rand(1, 8, 16, 16) > 0.5)
        self.register_buffer("positions", torch.tensor([3, 1, 2, 0, 5, 4, 7, 6]))

    def forward(self, x):
        return self.op(self, torch.relu(self.conv(x)))


CASES = {
    "upsample_bilinear2d": lambda m, y: F.interpolate(y, scale_factor=4, mode="bilinear"),
    "where": lambda m, y: torch.where(m.mask, y, y * 0.5),
    "index_select": lambda m, y: torch.index_select(y, 1, m.positions),
    "avg_pool2d": lambda m, y: F.avg_pool2d(y, 8, 8),
}


@pytest.mark.slow
@pytest.mark.parametrize("op", CASES)
def test_the_op_the_flow_leaves_on_the_cpu_runs_on_the_npu_after_lowering(op):
    pytest.importorskip("executorch")
    from fxrewrite.ship.ethos_u import compile_for_ethos_u

    torch.manual_seed(0)
    teacher = Split(CASES[op]).eval()
    x = torch.randn(1, 8, 16, 16)
    result = lower(teacher, (x,), target="ethos-u55-128")
    assert result.verdicts.illegal == () and result.report.max_relative_error <= 1e-5
    alone = compile_for_ethos_u(teacher, (x,), "ethos-u55-128")
    lowered = compile_for_ethos_u(result.gm, (x,), "ethos-u55-128")
    assert [cpu.op for cpu in alone.cpu_ops] == [op] and alone.cpu_ops[0].cycles > 0
    assert lowered.cpu_ops == () and lowered.delegates == 1
    assert lowered.program_cycles < alone.program_cycles
