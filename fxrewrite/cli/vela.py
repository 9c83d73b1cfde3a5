"""`--vela` for `check` and `lower`: the teacher (and the lowered graph) compiled by Arm's own
toolchain for the target's Ethos-U accelerator (the target's compiler, fxrewrite.ship.compilers.vela),
reported beside fxrewrite's estimate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fxrewrite.errors import VelaError
from fxrewrite.quant import CalibrationData
from fxrewrite.ship.compilers import compiler_of
from fxrewrite.ship.compilers.base import Compiled, VendorCompiler
from fxrewrite.target import Target


def vela_runs(target: Target, wanted_by: str | None) -> VelaRuns:
    """Before any work: the runs of Vela for `target`, refused where it cannot compile for it; none
    where no option (`wanted_by`: --vela, -o X.pte) asks for Vela."""
    return VelaRuns(None if wanted_by is None else compiler_of(target, wanted_by, "vela"), target.accelerator)


#: inputs ExecuTorch's quantizer calibrates on at most: its histogram observers take each input alone,
#: about a second per input for mobilenet_v2, so 6,400 calibration images held one compile for hours
QUANTIZER_SAMPLES = 256
#: held-out inputs the int8 graph is judged on at most
JUDGED_SAMPLES = 500


@dataclass
class VelaRuns:
    """The graphs of one command compiled by `compiler` for `accelerator` (nothing when it is None: no
    `--vela`)."""

    compiler: VendorCompiler | None
    accelerator: str = ""
    results: dict[str, Compiled] = field(default_factory=dict)
    #: inputs ExecuTorch's quantizer calibrates on, and inputs held out to judge its int8 graph (--calib)
    calibration: tuple[tuple[torch.Tensor, ...], ...] = ()
    held_out: tuple[tuple[torch.Tensor, ...], ...] = ()
    #: per graph the toolchain could not compile, its one-line reason (the other graph is still compiled)
    failed: dict[str, str] = field(default_factory=dict)

    def calibrate_on(self, data: CalibrationData) -> None:
        """Quantize on `data`'s first training inputs, one at a time (the chip runs a batch of one), and
        judge the int8 graph on the first of its held-out fifth."""
        self.calibration = tuple((one,) for one in torch.cat(data.train)[:QUANTIZER_SAMPLES].split(1))
        self.held_out = tuple((one,) for one in torch.cat(data.held_out)[:JUDGED_SAMPLES].split(1))

    def add(self, name: str, module: nn.Module, inputs: tuple[torch.Tensor, ...],
            compiled: Compiled | None = None) -> None:
        """Compile `module` where a compiler was asked for (`compiled`: what writing its .pte compiled)."""
        if self.compiler is None:
            return
        try:
            self.results[name] = compiled or self.compiler.compile(module, inputs, self.accelerator, self.calibration,
                                                                   held_out=self.held_out)
        except VelaError as exc:
            self.failed[name] = str(exc)

    def numbers(self) -> dict[str, Any] | None:
        """For the JSON report: per graph, Vela's numbers."""
        numbers = {name: result.to_dict() for name, result in self.results.items()}
        return numbers | {name: {"error": reason} for name, reason in self.failed.items()} or None

    def text(self) -> str:
        """Lines to follow the report's text (empty without `--vela`)."""
        if not self.results and not self.failed:
            return ""
        first = next(iter(self.results.values()), None)
        where = f"{first.accelerator} ({first.system_config}, {first.memory_mode})" if first else self.accelerator
        lines = [f"Vela on {where}, int8 by ExecuTorch's Arm backend:"]
        lines += [f"  {name}: not compiled: {reason}" for name, reason in self.failed.items()]
        baseline = self.results.get("teacher")
        for name, result in self.results.items():
            ratio = (f" (x{result.cycles_total / baseline.cycles_total:.3f} the teacher's NPU cycles, "
                     f"x{result.program_cycles / baseline.program_cycles:.3f} its whole program)"
                     if baseline is not None and result is not baseline and baseline.cycles_total else "")
            lines.append(f"  {name}: {result.describe()}{ratio}")
        return "\n" + "\n".join(lines)
