"""The `fxrewrite` command: argument parsing and exit codes; every command calls into the library.

Exit codes: 0 done; 1 the model has nodes the target cannot run; 2 bad input; 3 internal error.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import traceback
from dataclasses import replace
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from fxrewrite import api
from fxrewrite.cli_export import run_export
from fxrewrite.cli_training import add_training_arguments, refuse_without_calib, training_keywords
from fxrewrite.cli_vela import VelaRuns, add_vela_argument, vela_accelerator
from fxrewrite.distill import CHECKPOINT_NAME, ProgressBars, remove_checkpoint
from fxrewrite.distill.processes import is_main, launched_processes, start_from_environment, stop
from fxrewrite.errors import FxrewriteError, check_positive
from fxrewrite.files import atomic_write_text, check_outputs, wrote_line
from fxrewrite.frontend import DEFAULT_INPUT_SHAPE, FRONTENDS
from fxrewrite.passes import registered_passes
from fxrewrite.quant import SOURCES_HELP, load_calibration
from fxrewrite.rewrite import Instruments, canonical_order
from fxrewrite.target import Target, builtin_targets
from fxrewrite.viz import dot_text_instead
from fxrewrite.writers import Program, writer_for

EXIT_OK, EXIT_ILLEGAL, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader quit
#: how far an exact lowering may differ from its teacher (relative error): past it a rewrite is wrong
DEFAULT_TOLERANCE = 1e-5


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line on stderr, as every other bad input (the full usage is under --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(default: object = False) -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=default, help="show the Python traceback of an error")
    return common


def _add_trust_pickle(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--trust-pickle", action="store_true",
                        help=f"allow {what} to need unpickling: a pickled nn.Module, a .pt2 with pickled parts; "
                             "unpickling runs code from the file")


def _model_args() -> argparse.ArgumentParser:
    parser = _Parser(add_help=False)
    parser.add_argument("model", metavar="MODEL",
                        help="pkg.module:callable (e.g. torchvision.models:resnet18), file.py:callable, "
                             "a .pt2 from torch.export.save, a TorchScript archive from torch.jit.save, or a "
                             "pickled module (.pt) with --trust-pickle")
    parser.add_argument("--weights", metavar="STATE_DICT", help="state dict loaded into MODEL (weights_only)")
    _add_trust_pickle(parser, "MODEL (and --weights)")
    parser.add_argument("--input-shape", action="append", metavar="SHAPE",
                        help=f"shape of one model input, e.g. 1,3,224,224 or 1,128:int64; repeat for several "
                             f"inputs (default: {DEFAULT_INPUT_SHAPE}, or the example inputs stored in a .pt2)")
    parser.add_argument("--frontend", choices=FRONTENDS, default="auto",
                        help="symbolic: torch.fx.symbolic_trace; export: torch.export; "
                             "auto (default): symbolic, falling back to export")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random example inputs (default 0)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    # a command's --debug must not reset one given before the command (`fxrewrite --debug lower ...`)
    common, model = _common(argparse.SUPPRESS), _model_args()
    parser = _Parser(prog="fxrewrite", parents=[_common()],
                     description="Lower PyTorch models onto the operator set of one NPU.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", parents=[common, model], help="explain which nodes a target cannot run",
                                description="One row per node with its verdict; exit 1 when any node is illegal.")
    check.add_argument("--target", "-t", required=True, help="built-in target name or path of a .toml file")
    check.add_argument("--json", action="store_true", help="print the report as JSON (see README) instead of text")
    add_vela_argument(check)

    viz = commands.add_parser("viz", parents=[common, model], help="draw the graph, coloured by legality",
                              description="Draw the captured graph with graphviz.")
    viz.add_argument("--target", "-t", help="colour nodes by their verdict on this target")
    viz.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.svg, .png, .pdf or .dot")

    lower = commands.add_parser("lower", parents=[common, model], help="rewrite a model with exact passes",
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

    export = commands.add_parser("export", parents=[common], help="write a lowered .pt2 as ONNX",
                                 description="Write ONNX (opset 21, Q/DQ for quantized layers, free batch), check "
                                             "its ops against the target and its results against onnxruntime.")
    export.add_argument("model", metavar="LOWERED.pt2", help="a program written by fxrewrite lower")
    export.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    _add_trust_pickle(export, "LOWERED.pt2")
    export.add_argument("--target", "-t", help="refuse ONNX nodes this target does not run (default: the target "
                                               "the .pt2 was lowered for)")

    commands.add_parser("passes", parents=[common], help="list the rewrite passes",
                        description="Every registered pass with whether it is exact.")

    targets = commands.add_parser("targets", parents=[common], help="list targets, or describe one",
                                  description="List the built-in targets, or print what one supports.")
    targets.add_argument("name", nargs="?", metavar="NAME", help="target name or .toml path")
    return parser


def _load(args: argparse.Namespace):
    return api.load_and_capture(args.model, weights=args.weights, trust_pickle=args.trust_pickle,
                                input_shapes=args.input_shape, frontend=args.frontend, seed=args.seed)


def _run_check(args: argparse.Namespace) -> int:
    target = Target.load(args.target)
    vela = VelaRuns(vela_accelerator(target, "--vela" if args.vela else None))
    gm = _load(args)
    vela.add("teacher", gm, gm.meta["example_inputs"])
    report = replace(api.check(gm, target, name=args.model), vela=vela.numbers())
    print(report.to_json() if args.json else report.to_text() + vela.text())
    return EXIT_OK if report.all_legal else EXIT_ILLEGAL


def _run_viz(args: argparse.Namespace) -> int:
    target = Target.load(args.target) if args.target else None
    output = Path(args.output)
    fallback = dot_text_instead(output)
    check_outputs({"-o": output} | ({"-o's DOT text": fallback} if fallback else {}),
                  api.files_read(args.model, args.weights, target=target))
    gm = _load(args)
    title = args.model + (f" on {target.name}" if target else "")
    written, note = api.draw(gm, output, target, title)
    if note:
        print(f"fxrewrite: {note}", file=sys.stderr)
    print(wrote_line([written]))
    return EXIT_OK


def _run_targets(args: argparse.Namespace) -> int:
    if args.name:
        print(Target.load(args.name).report())
        return EXIT_OK
    for name in builtin_targets():
        print(f"{name:16} {Target.load(name).description}")
    return EXIT_OK


def _default_output(spec: str, target: str) -> Path:
    stem = Path(spec.rpartition(":")[2] if ":" in spec and not Path(spec).exists() else spec).stem
    return Path(f"{stem}-{target}.pt2")


def _run_lower(args: argparse.Namespace) -> int:
    """Under torchrun, every process lowers and trains its share (fxrewrite.distill.processes); rank 0 writes.
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
    vela = VelaRuns(vela_accelerator(target, "--vela" if args.vela else f"-o {output}" if writer.calibrates else None))
    if args.calib is not None and args.resume and not (checkpoint_dir / CHECKPOINT_NAME).is_file() and is_main():
        print(f"fxrewrite: no checkpoint in {checkpoint_dir}/ to resume from; starting from the beginning",
              file=sys.stderr)
    gm = _load(args)
    if args.calib is not None and vela.accelerator is not None:  # ExecuTorch's int8 quantizer calibrates on them
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


def _run_passes(args: argparse.Namespace) -> int:
    for p in canonical_order(registered_passes().values()):
        print(f"{p.name:26} {'exact' if p.exact else 'approximate':11} {p.summary}")
    return EXIT_OK


_COMMANDS = {"check": _run_check, "viz": _run_viz, "targets": _run_targets, "lower": _run_lower,
             "export": run_export, "passes": _run_passes}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except FxrewriteError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"fxrewrite: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fxrewrite: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`fxrewrite check ... | head`): stop quietly, as a killed writer would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"fxrewrite: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(this is a bug in fxrewrite; rerun with --debug and report the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
