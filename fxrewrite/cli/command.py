"""The `fxrewrite` command: the parser, built from each command's module, and the one place errors
become exit codes and one line on stderr."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from fxrewrite.cli import check, export, lower, pass_list, targets, viz
from fxrewrite.cli.exits import EXIT_BROKEN_PIPE, EXIT_INTERNAL, EXIT_INTERRUPTED
from fxrewrite.cli.options import Parser, common, model_args
from fxrewrite.errors import FxrewriteError

#: the commands in the order --help lists them, each a module with `add(commands, *parents)` and `run(args)`
COMMANDS = (check, viz, lower, export, pass_list, targets)
#: the commands that read a MODEL (the others take their own positional)
MODEL_COMMANDS = (check, viz, lower)


def build_parser() -> argparse.ArgumentParser:
    # a command's --debug must not reset one given before the command (`fxrewrite --debug lower ...`)
    shared, model = common(argparse.SUPPRESS), model_args()
    parser = Parser(prog="fxrewrite", parents=[common()],
                    description="Lower PyTorch models onto the operator set of one NPU.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add(commands, shared, *((model,) if command in MODEL_COMMANDS else ()))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FxrewriteError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"fxrewrite: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fxrewrite: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
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
