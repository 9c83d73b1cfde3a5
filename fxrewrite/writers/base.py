"""What every output writer takes and returns: a lowered program in, the file written and what was
checked on the way out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import fx

from fxrewrite.ship.ethos_u import VelaResult
from fxrewrite.ship.onnx_file import OnnxCheck
from fxrewrite.target import Target


@dataclass(frozen=True)
class Program:
    """A lowered graph, the example inputs it was lowered at, its target (None: not known, so its ops
    are not checked) and whether every node is legal there; for int8 formats, inputs to calibrate on
    and to judge on (each a batch of one)."""

    gm: fx.GraphModule
    example_inputs: tuple[torch.Tensor, ...]
    target: Target | None
    legal: bool
    calibration: tuple[tuple[torch.Tensor, ...], ...] = ()
    held_out: tuple[tuple[torch.Tensor, ...], ...] = ()


@dataclass(frozen=True)
class Written:
    """The file written, a note for the line that says so, and what the writer checked: the ONNX
    form against onnxruntime, or Vela's compile of an ExecuTorch program."""

    path: Path
    note: str = ""
    onnx: OnnxCheck | None = None
    vela: VelaResult | None = None


class Writer(Protocol):
    #: the suffix of the files it writes, with its dot
    suffix: str
    #: what such a file is, in a few words
    summary: str
    #: whether it quantizes to int8 itself, calibrated on the program's `calibration` inputs
    calibrates: bool

    def prepare(self, target: Target | None, flag: str) -> None:
        """Before any work: refuse (UsageError) what cannot be written (a missing extra, a target the
        format does not fit); `flag` names the option, for the message."""

    def write(self, program: Program, path: Path) -> Written:
        """Write `program` to `path` (atomically: a failure leaves no file)."""
