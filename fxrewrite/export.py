"""Writing a lowered graph as a .pt2 ExportedProgram, atomically."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import fx

from fxrewrite.files import atomic_write_bytes
from fxrewrite.frontend.capture import quiet_torch


def save_pt2(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...], path: str | Path) -> Path:
    """Export `gm` with torch.export and write it to `path` (temporary file, then rename)."""
    with quiet_torch():
        program = torch.export.export(gm, tuple(example_inputs))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return atomic_write_bytes(path, buffer.getvalue())
