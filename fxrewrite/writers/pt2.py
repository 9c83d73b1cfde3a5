"""`.pt2`: the lowered graph as a torch.export ExportedProgram, its batch left free where torch.export
can, naming its target (fxrewrite.export.save_pt2)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fxrewrite.export import save_pt2
from fxrewrite.target import Target
from fxrewrite.writers.base import Program, Written


@dataclass(frozen=True)
class Pt2Writer:
    suffix: str = ".pt2"
    summary: str = "a torch.export program"
    calibrates: bool = False

    def prepare(self, target: Target | None, flag: str) -> None:
        """Every lowered graph can be written as a .pt2."""

    def write(self, program: Program, path: Path) -> Written:
        name = program.target.name if program.target is not None else None
        written, note = save_pt2(program.gm, program.example_inputs, path, name)
        return Written(written, note)


WRITER = Pt2Writer()
