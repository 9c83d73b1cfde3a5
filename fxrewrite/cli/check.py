"""`fxrewrite check MODEL --target T`: one row per node with its verdict; with --vela, the teacher as
ExecuTorch's Arm flow and Vela compile it."""

from __future__ import annotations

import argparse
from dataclasses import replace

from fxrewrite import api
from fxrewrite.cli.exits import EXIT_ILLEGAL, EXIT_OK
from fxrewrite.cli.options import add_vela_argument, captured
from fxrewrite.cli.vela import vela_runs
from fxrewrite.target import Target


def add(commands: argparse._SubParsersAction, *parents: argparse.ArgumentParser) -> None:
    check = commands.add_parser("check", parents=list(parents), help="explain which nodes a target cannot run",
                                description="One row per node with its verdict; exit 1 when any node is illegal.")
    check.add_argument("--target", "-t", required=True, help="built-in target name or path of a .toml file")
    check.add_argument("--json", action="store_true", help="print the report as JSON (see README) instead of text")
    add_vela_argument(check)
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    target = Target.load(args.target)
    vela = vela_runs(target, "--vela" if args.vela else None)
    gm = captured(args)
    vela.add("teacher", gm, gm.meta["example_inputs"])
    report = replace(api.check(gm, target, name=args.model), vela=vela.numbers())
    print(report.to_json() if args.json else report.to_text() + vela.text())
    return EXIT_OK if report.all_legal else EXIT_ILLEGAL
