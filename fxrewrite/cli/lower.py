"""`fxrewrite lower MODEL --target T`: exact rewrites, verified against the teacher; with --calib,
distillation, quantization and restructuring; the program written by the writer of -o's suffix and
the report as JSON. Under torchrun every process lowers and trains its share; rank 0 writes."""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from fxrewrite import api
from fxrewrite.cli.exits import EXIT_ILLEGAL, EXIT_INTERNAL, EXIT_OK
from fxrewrite.cli.options import (add_training_arguments, add_vela_argument, captured, refuse_without_calib,
                                   training_keywords)
from fxrewrite.cli.vela import vela_runs
from fxrewrite.distill import CHECKPOINT_NAME, ProgressBars, remove_checkpoint
from fxrewrite.distill.training.processes import is_main, launched_processes, start_from_environment, stop
from fxrewrite.errors import check_positive
from fxrewrite.files import atomic_write_text, check_outputs, wrote_line
from fxrewrite.quant import SOURCES_HELP, load_calibration
from fxrewrite.rewrite import Instruments
from fxrewrite.target import Target
from fxrewrite.writers import Program, writer_for

#: how far an exact lowering may differ from its teacher (relative error): past it a rewrite is wrong
DEFAULT_TOLERANCE = 1e-5


def add(commands: argparse._SubParsersAction, *parents: argparse.ArgumentParser) -> None:
    lower = commands.add_parser("lower", parents=list(parents), help="rewrite a model with exact passes",
                                description="Rewrite the illegal nodes exactly, verify against the teacher, "
                                            "save a .pt2 and a report; exit 1 when nodes remain for distillation.")
    lower.add_argument("--target", "-t", required=True, help="built-in target name or path of a .toml file")
    lower.add_argument("-o", "--output", metavar="OUT", help="lowered program: OUT.pt2 (default: MODEL-TARGET.pt2), "
                                                             "OUT.onnx (needs the onnx extra) or, for an Ethos-U "
                                                             "target, OUT.pte (needs the ethos-u extra)")
    lower.add_argument("--report", metavar="OUT.json", help="write the lowering report as JSON")
    lower.add_argument("--passes", metavar="SPEC", help="comma-separated passes to run once, in this order "
                                                        "(default: every exact pass, repeated to a fixpoint)")
    lower.add_argument("--timing", action="store_true", help="print time and rewrite count per pass")
    lower.add_argument("--dump-ir", metavar="DIR", help="write the graph before and after each pass that changed it")
    lower.add_argument("--verify-each", action="store_true",
                       help="after each pass, compare with the teacher on fresh inputs and stop at the first "
                            "pass whose relative error exceeds --tolerance")
    lower.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                       help=f"relative error allowed (default {DEFAULT_TOLERANCE:g})")
    lower.add_argument("--max-growth", type=float, metavar="X",
                       help="let exact rewrites make the model at most X times the teacher's estimated cycles and "
                            "MACs; nodes past it are kept for distillation (default: the target's "
                            "performance.growth_max)")
    add_vela_argument(lower)
    add_training_arguments(lower)
    lower.set_defaults(run=run)


def _default_output(spec: str, target: str) -> Path:
    stem = Path(spec.rpartition(":")[2] if ":" in spec and not Path(spec).exists() else spec).stem
    return Path(f"{stem}-{target}.pt2")


def run(args: argparse.Namespace) -> int:
    """Under torchrun, every process lowers and trains its share (fxrewrite.distill.training.processes); rank 0 writes.
    Without --calib nothing is trained, so no process group is joined (each process would wait for the others)."""
    alone = launched_processes() == 1  # also checks what torchrun sets
    started = not alone and args.calib is not None and start_from_environment(args.device)
    try:
        return _lower(args)
    finally:
        if started:
            stop()


def _lower(args: argparse.Namespace) -> int:
    target = Target.load(args.target)
    output = Path(args.output) if args.output else _default_output(args.model, target.name)
    writer = writer_for(output)
    check_positive("--tolerance", args.tolerance)  # before the work, which may be long
    refuse_without_calib(args)
    checkpoint_dir = output.with_suffix(".ckpt")
    outputs = {"-o": output} | ({"--report": Path(args.report)} if args.report else {})
    folders = {"--dump-ir": Path(args.dump_ir)} if args.dump_ir else {}
    if args.calib is not None:
        folders[f"the checkpoint folder of -o {output.name}"] = checkpoint_dir
    check_outputs(outputs, api.files_read(args.model, args.weights, args.calib, target), folders)
    writer.prepare(target, f"-o {output}")
    vela = vela_runs(target, "--vela" if args.vela else f"-o {output}" if writer.calibrates else None)
    if args.calib is not None and args.resume and not (checkpoint_dir / CHECKPOINT_NAME).is_file() and is_main():
        print(f"fxrewrite: no checkpoint in {checkpoint_dir}/ to resume from; starting from the beginning",
              file=sys.stderr)
    gm = captured(args)
    if args.calib is not None and vela.compiler is not None:  # ExecuTorch's int8 quantizer calibrates on them
        vela.calibrate_on(load_calibration(args.calib, gm.meta["example_inputs"][0], args.calib_size, 1, args.seed))
    if args.vela:
        vela.add("teacher", gm, gm.meta["example_inputs"])  # before the lowering rewrites gm
    instruments = Instruments(
        dump_ir=Path(args.dump_ir) if args.dump_ir else None,
        verify_each=copy.deepcopy(gm) if args.verify_each else None,
        tolerance=args.tolerance,
    )
    bars = ProgressBars()
    try:
        lowered = api.lower(gm, target=target, passes=args.passes, instruments=instruments, tolerance=args.tolerance,
                            max_growth=args.max_growth,
                            name=args.model, debug=args.debug, seed=args.seed, checkpoint_dir=checkpoint_dir,
                            progress=bars if is_main() else None, **training_keywords(args))
    finally:
        bars.close()
    if not is_main():
        return EXIT_OK if lowered.legal else EXIT_ILLEGAL
    report = lowered.report
    if not report.max_relative_error <= args.tolerance:  # NaN fails too
        print(report.to_text())
        print(f"fxrewrite: error: the lowered graph differs from the teacher by {report.max_relative_error:.3g}, "
              f"above --tolerance {args.tolerance:g}; nothing was written", file=sys.stderr)
        # past the exactness fxrewrite promises (DEFAULT_TOLERANCE) a rewrite is wrong: a bug
        return EXIT_INTERNAL if not report.max_relative_error <= DEFAULT_TOLERANCE else EXIT_ILLEGAL
    written = writer.write(Program(lowered.gm, lowered.example_inputs, target, lowered.legal, vela.calibration,
                                   vela.held_out), output)
    report.onnx = written.onnx.to_dict() if written.onnx is not None else None
    vela.add("lowered", lowered.gm, lowered.example_inputs, written.vela)
    report.vela = vela.numbers()
    if args.report:
        atomic_write_text(args.report, report.to_json())
    if report.distillation is not None:
        remove_checkpoint(checkpoint_dir)
    if args.timing:
        print(report.timing_table())
    print(report.to_text() + vela.text())
    if written.onnx is not None:
        print(written.onnx.describe())
    print(wrote_line([output, args.report]) + (f" ({written.note})" if written.note else ""))
    if not lowered.legal:
        if report.distillation is None:
            print(f"fxrewrite: error: to distil these {len(report.regions)} regions into students of legal "
                  f"ops, pass --calib with {SOURCES_HELP}", file=sys.stderr)
        return EXIT_ILLEGAL
    return EXIT_OK
