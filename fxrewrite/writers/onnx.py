"""`.onnx`: opset 21 with Q/DQ pairs for quantized layers and a free batch, checked against the
target's ops (where every node is legal) and against onnxruntime (fxrewrite.ship.onnx_file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fxrewrite.ship import require_onnx, write_onnx
from fxrewrite.target import Target
from fxrewrite.writers.base import Program, Written


@dataclass(frozen=True)
class OnnxWriter:
    suffix: str = ".onnx"
    summary: str = "ONNX, needs the onnx extra"
    calibrates: bool = False

    def prepare(self, target: Target | None, flag: str) -> None:
        require_onnx()

    def write(self, program: Program, path: Path) -> Written:
        # a graph with nodes left for distillation is written as it is, its ops unchecked, as its .pt2 would be
        checked = write_onnx(program.gm, program.example_inputs, path, program.target if program.legal else None)
        return Written(checked.path, onnx=checked)


WRITER = OnnxWriter()
