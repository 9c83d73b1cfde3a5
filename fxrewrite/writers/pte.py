"""`.pte`: the ExecuTorch program with the Ethos-U delegate, as ExecuTorch's Arm flow compiles the
lowered graph (int8 by its quantizer, Vela for the target's accelerator); Vela's numbers come back
with it (fxrewrite.ship.ethos_u)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fxrewrite.errors import UsageError
from fxrewrite.ship.compilers import compiler_of
from fxrewrite.target import Target
from fxrewrite.writers.base import Program, Written


@dataclass(frozen=True)
class PteWriter:
    suffix: str = ".pte"
    summary: str = "an ExecuTorch program for an Ethos-U target, needs the ethos-u extra"

    calibrates: bool = True

    def prepare(self, target: Target | None, flag: str) -> None:
        if target is None:
            raise UsageError(f"{flag}: an ExecuTorch program is compiled for a target's Ethos-U accelerator; name the "
                             "target")
        compiler_of(target, flag, "vela")

    def write(self, program: Program, path: Path) -> Written:
        vela = compiler_of(program.target, f"writing {path}", "vela")
        result = vela.compile(program.gm, program.example_inputs, program.target.accelerator, program.calibration, path,
                              program.held_out)
        return Written(path, vela=result)


WRITER = PteWriter()
