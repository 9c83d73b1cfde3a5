"""`fxrewrite passes`: every registered rewrite pass, in the order the lowering runs them."""

from __future__ import annotations

import argparse

from fxrewrite.cli.exits import EXIT_OK
from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import canonical_order


def add(commands: argparse._SubParsersAction, *parents: argparse.ArgumentParser) -> None:
    passes = commands.add_parser("passes", parents=list(parents), help="list the rewrite passes",
                                 description="Every registered pass with whether it is exact.")
    passes.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for p in canonical_order(registered_passes().values()):
        print(f"{p.name:26} {'exact' if p.exact else 'approximate':11} {p.summary}")
    return EXIT_OK
