from __future__ import annotations

import dataclasses

import textwrap

import pytest
import torch
from torch import fx, nn

from fxrewrite import cli
from fxrewrite.frontend import capture
from fxrewrite.ir import OpView, op_view
from fxrewrite.target import Target, parse_target


def compute_views(gm: fx.GraphModule) -> list[OpView]:
    """Views of the nodes that compute something (no inputs, outputs, constants or asserts)."""
    return [v for v in (op_view(n) for n in gm.graph.nodes) if not v.structural]


CHIP_HEADER = """
[target]
name = "test-chip"
[quantization.weights]
formats = ["int8"]
[quantization.activations]
formats = ["int8"]
"""


def chip(body: str, name: str = "test-chip.toml") -> Target:
    """A target from the TOML tables in `body` (ops, cost), int8 weights and activations."""
    return parse_target((CHIP_HEADER + textwrap.dedent(body)).encode(), name)


def without_growth_limit(target: Target) -> Target:
    """`target` letting exact rewrites make a model as dear as they need (tests of one rewrite's form)."""
    return dataclasses.replace(target, performance=dataclasses.replace(target.performance, growth_max=None))


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


def held_out_errors(replacement: nn.Module, x: torch.Tensor, y: torch.Tensor, fitted: int = 160) -> tuple[float, float]:
    """A restructuring replacement's L2 relative error to the teacher block's outputs `y` on the
    inputs after the first `fitted`, once initialised and once distilled on those `fitted`."""
    def error() -> float:
        with torch.no_grad():
            return ((replacement(x[fitted:]) - y[fitted:]).norm() / y[fitted:].norm()).item()

    replacement.initialise(x[:fitted])
    initial = error()
    replacement.distil(x[:fitted], y[:fitted])
    return initial, error()
