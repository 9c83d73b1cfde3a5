"""The Python interface: what the CLI calls, usable from a notebook or a script."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import fx, nn

from fxrewrite import legality, viz
from fxrewrite.capture import Frontend, capture
from fxrewrite.legality import CheckReport
from fxrewrite.load import load_model
from fxrewrite.target import Target


def load_and_capture(
    spec: str,
    *,
    weights: str | None = None,
    trust_pickle: bool = False,
    input_shapes: Sequence[str] | None = None,
    frontend: Frontend = "auto",
    seed: int = 0,
) -> fx.GraphModule:
    """Load MODEL `spec` and capture it; the example inputs are kept in `gm.meta["example_inputs"]`."""
    loaded = load_model(spec, weights=weights, trust_pickle=trust_pickle, input_shapes=input_shapes, seed=seed)
    gm = capture(loaded.module, loaded.example_inputs, frontend)
    gm.meta["example_inputs"] = loaded.example_inputs
    return gm


def _as_graph(model: nn.Module, example_inputs: tuple[torch.Tensor, ...] | None) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule) and "fxrewrite_frontend" in model.meta:
        return model
    if example_inputs is None:
        raise TypeError("example_inputs are needed to capture a module that is not yet a captured GraphModule")
    return capture(model.eval(), tuple(example_inputs))


def _as_target(target: Target | str | None) -> Target | None:
    return Target.load(target) if isinstance(target, str) else target


def check(
    model: nn.Module,
    target: Target | str,
    example_inputs: tuple[torch.Tensor, ...] | None = None,
    *,
    name: str = "",
) -> CheckReport:
    """Verdict for every node of `model` (captured first unless it already is) on `target`."""
    gm = _as_graph(model, example_inputs)
    return legality.check(gm, _as_target(target), name or type(model).__name__)


def draw(
    model: nn.Module,
    path: str | Path,
    target: Target | str | None = None,
    title: str = "",
    example_inputs: tuple[torch.Tensor, ...] | None = None,
) -> tuple[Path, str]:
    """Draw `model` to `path`; returns the file written and a note (non-empty when `dot` is missing)."""
    return viz.render(_as_graph(model, example_inputs), path, _as_target(target), title)
