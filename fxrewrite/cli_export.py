"""The `export` command: a lowered .pt2 written as ONNX, its ops checked against its target."""

from __future__ import annotations

import argparse
from pathlib import Path

from fxrewrite.errors import UsageError
from fxrewrite.api import files_read
from fxrewrite.files import check_outputs, wrote_line
from fxrewrite.frontend import load_model
from fxrewrite.target import Target
from fxrewrite.writers import Program, writer_for


def run_export(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if Path(args.model).suffix != ".pt2" or output.suffix != ".onnx":
        raise UsageError(f"fxrewrite export reads a .pt2 and writes an .onnx file, not {args.model} -> {output}")
    chosen = Target.load(args.target) if args.target else None
    check_outputs({"-o": output}, files_read(args.model, target=chosen))
    writer = writer_for(output)
    writer.prepare(chosen, "-o")
    loaded = load_model(args.model, trust_pickle=args.trust_pickle)
    target = chosen or (Target.load(loaded.target) if loaded.target else None)
    written = writer.write(Program(loaded.module, loaded.example_inputs, target, legal=True), output)
    print(written.onnx.describe())
    print(wrote_line([output]) + ("" if target else " (its ops were not checked: pass --target)"))
    return 0
