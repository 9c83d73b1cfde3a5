from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from fxrewrite import cli
from fxrewrite.capture import capture
from fxrewrite.ops import OpView, op_view


def compute_views(gm: fx.GraphModule) -> list[OpView]:
    """Views of the nodes that compute something (no inputs, outputs, constants or asserts)."""
    return [v for v in (op_view(n) for n in gm.graph.nodes) if not v.structural]


def symbolic(module: nn.Module, *inputs: torch.Tensor) -> fx.GraphModule:
    return capture(module.eval(), inputs, "symbolic")


def exported(module: nn.Module, *inputs: torch.Tensor) -> fx.GraphModule:
    return capture(module.eval(), inputs, "export")


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
