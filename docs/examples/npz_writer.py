"""`.npz`: the lowered graph's weights as NumPy arrays by their names, for a toolchain that reads no
torch files. An example of an output writer (docs/contributing.md; tests/test_contributing.py
registers and runs it); a real one is a file in fxrewrite/writers/ and a line in its WRITERS."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fxrewrite.files import atomic_write_bytes
from fxrewrite.target import Target
from fxrewrite.writers import Program, Written


@dataclass(frozen=True)
class NpzWriter:
    suffix: str = ".npz"
    summary: str = "the weights as NumPy arrays"
    calibrates: bool = False

    def prepare(self, target: Target | None, flag: str) -> None:
        """Any lowered graph's weights can be written."""

    def write(self, program: Program, path: Path) -> Written:
        buffer = io.BytesIO()
        np.savez(buffer, **{name: t.detach().cpu().numpy() for name, t in program.gm.state_dict().items()})
        return Written(atomic_write_bytes(path, buffer.getvalue()))


WRITER = NpzWriter()
