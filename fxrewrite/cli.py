"""The `fxrewrite` command: argument parsing and exit codes; every command calls into the library.

Exit codes: 0 done; 1 the model has nodes the target cannot run; 2 bad input; 3 internal error.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from fxrewrite import api
from fxrewrite.capture import FRONTENDS
from fxrewrite.errors import FxrewriteError
from fxrewrite.load import DEFAULT_INPUT_SHAPE
from fxrewrite.target import Target, builtin_targets

EXIT_OK, EXIT_ILLEGAL, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    return common


def _model_args() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("model", metavar="MODEL",
                        help="pkg.module:callable (e.g. torchvision.models:resnet18), file.py:callable, "
                             "a .pt2 from torch.export.save, or a pickled module (.pt) with --trust-pickle")
    parser.add_argument("--weights", metavar="STATE_DICT", help="state dict loaded into MODEL (weights_only)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow MODEL to be a pickled nn.Module; unpickling runs code from the file")
    parser.add_argument("--input-shape", action="append", metavar="SHAPE",
                        help=f"shape of one model input, e.g. 1,3,224,224 or 1,128:int64; repeat for several "
                             f"inputs (default: {DEFAULT_INPUT_SHAPE}, or the example inputs stored in a .pt2)")
    parser.add_argument("--frontend", choices=FRONTENDS, default="auto",
                        help="symbolic: torch.fx.symbolic_trace; export: torch.export; "
                             "auto (default): symbolic, falling back to export")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random example inputs (default 0)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    common, model = _common(), _model_args()
    parser = argparse.ArgumentParser(prog="fxrewrite", parents=[common],
                                     description="Lower PyTorch models onto the operator set of one NPU.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", parents=[common, model], help="explain which nodes a target cannot run",
                                description="One row per node with its verdict; exit 1 when any node is illegal.")
    check.add_argument("--target", "-t", required=True, help="built-in target name or path of a .toml file")
    check.add_argument("--json", action="store_true", help="print the report as JSON (see README) instead of text")

    viz = commands.add_parser("viz", parents=[common, model], help="draw the graph, coloured by legality",
                              description="Draw the captured graph with graphviz.")
    viz.add_argument("--target", "-t", help="colour nodes by their verdict on this target")
    viz.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.svg, .png, .pdf or .dot")

    targets = commands.add_parser("targets", parents=[common], help="list targets, or describe one",
                                  description="List the built-in targets, or print what one supports.")
    targets.add_argument("name", nargs="?", metavar="NAME", help="target name or .toml path")
    return parser


def _load(args: argparse.Namespace):
    return api.load_and_capture(args.model, weights=args.weights, trust_pickle=args.trust_pickle,
                                input_shapes=args.input_shape, frontend=args.frontend, seed=args.seed)


def _run_check(args: argparse.Namespace) -> int:
    target = Target.load(args.target)
    gm = _load(args)
    report = api.check(gm, target, name=args.model)
    print(report.to_json() if args.json else report.to_text())
    return EXIT_OK if report.all_legal else EXIT_ILLEGAL


def _run_viz(args: argparse.Namespace) -> int:
    target = Target.load(args.target) if args.target else None
    gm = _load(args)
    title = args.model + (f" on {target.name}" if target else "")
    written, note = api.draw(gm, args.output, target, title)
    if note:
        print(f"fxrewrite: {note}", file=sys.stderr)
    print(f"wrote {written}")
    return EXIT_OK


def _run_targets(args: argparse.Namespace) -> int:
    if args.name:
        print(Target.load(args.name).report())
        return EXIT_OK
    for name in builtin_targets():
        print(f"{name:16} {Target.load(name).description}")
    return EXIT_OK


_COMMANDS = {"check": _run_check, "viz": _run_viz, "targets": _run_targets}


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
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"fxrewrite: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(this is a bug in fxrewrite; rerun with --debug and report the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
