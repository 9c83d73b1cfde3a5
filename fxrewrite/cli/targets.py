"""`fxrewrite targets [NAME]`: the built-in targets, or what one supports."""

from __future__ import annotations

import argparse

from fxrewrite.cli.exits import EXIT_OK
from fxrewrite.target import Target, builtin_targets


def add(commands: argparse._SubParsersAction, *parents: argparse.ArgumentParser) -> None:
    targets = commands.add_parser("targets", parents=list(parents), help="list targets, or describe one",
                                  description="List the built-in targets, or print what one supports.")
    targets.add_argument("name", nargs="?", metavar="NAME", help="target name or .toml path")
    targets.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.name:
        print(Target.load(args.name).report())
        return EXIT_OK
    for name in builtin_targets():
        print(f"{name:16} {Target.load(name).description}")
    return EXIT_OK
