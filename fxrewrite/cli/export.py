"""`fxrewrite export LOWERED.pt2 -o OUT.onnx`: a lowered program written as ONNX through the writer
of its suffix, its ops checked against its target."""

from __future__ import annotations

import argparse
from pathlib import Path

from fxrewrite.api import files_read
from fxrewrite.cli.exits import EXIT_OK
from fxrewrite.cli.options import add_trust_pickle
from fxrewrite.errors import UsageError
from fxrewrite.files import check_outputs, wrote_line
from fxrewrite.frontend import load_model
from fxrewrite.target import Target
from fxrewrite.writers import Program, writer_for


def add(commands: argparse._SubParsersAction, *parents: argparse.ArgumentParser) -> None:
    export = commands.add_parser("export", parents=list(parents), help="write a lowered .pt2 as ONNX",
                                 description="Write ONNX (opset 21, Q/DQ for quantized layers, free batch), check "
                                             "its ops against the target and its results against onnxruntime.")
    export.add_argument("model", metavar="LOWERED.pt2", help="a program written by fxrewrite lower")
    export.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    add_trust_pickle(export, "LOWERED.pt2")
    export.add_argument("--target", "-t", help="refuse ONNX nodes this target does not run (default: the target "
                                               "the .pt2 was lowered for)")
    export.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
    return EXIT_OK
