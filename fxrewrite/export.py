"""Writing a lowered graph as a .pt2 ExportedProgram, atomically, with a free batch dimension and
the name of the target it was lowered for."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from torch import fx

from fxrewrite.files import atomic_write_bytes
from fxrewrite.frontend.batch import at_batch, batch_dims
from fxrewrite.frontend.capture import quiet_torch
from fxrewrite.frontend.load import PT2_METADATA


def save_pt2(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...], path: str | Path,
             target: str | None = None) -> tuple[Path, str]:
    """Export `gm` with torch.export, dim 0 of every input dynamic, and write it to `path`
    (temporary file, then rename), naming `target` inside. Returns the path and, where the batch
    could not be left free, why the program is fixed at the example's batch size ("" otherwise)."""
    inputs = tuple(example_inputs)
    with quiet_torch():
        try:
            program = torch.export.export(gm, at_batch(inputs, 2), dynamic_shapes=batch_dims(inputs), strict=False)
            note = ""
        except Exception as exc:
            program = torch.export.export(gm, inputs, strict=False)
            note = (f"saved at batch {inputs[0].shape[0] if inputs and inputs[0].dim() else 1} only: torch.export "
                    f"could not keep the batch dynamic ({type(exc).__name__})")
    buffer = io.BytesIO()
    extra = {PT2_METADATA: json.dumps({"target": target})} if target else None
    torch.export.save(program, buffer, extra_files=extra)
    return atomic_write_bytes(path, buffer.getvalue()), note

