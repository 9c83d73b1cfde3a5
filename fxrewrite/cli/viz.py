"""`fxrewrite viz MODEL -o FILE.svg`: the captured graph drawn with graphviz, coloured by verdict."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fxrewrite import api
from fxrewrite.cli.exits import EXIT_OK
from fxrewrite.cli.options import captured
from fxrewrite.files import check_outputs, wrote_line
from fxrewrite.target import Target
from fxrewrite.viz import dot_text_instead


def add(commands: argparse._SubParsersAction, *parents: argparse.ArgumentParser) -> None:
    viz = commands.add_parser("viz", parents=list(parents), help="draw the graph, coloured by legality",
                              description="Draw the captured graph with graphviz.")
    viz.add_argument("--target", "-t", help="colour nodes by their verdict on this target")
    viz.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.svg, .png, .pdf or .dot")
    viz.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    target = Target.load(args.target) if args.target else None
    output = Path(args.output)
    fallback = dot_text_instead(output)
    check_outputs({"-o": output} | ({"-o's DOT text": fallback} if fallback else {}),
                  api.files_read(args.model, args.weights, target=target))
    gm = captured(args)
    title = args.model + (f" on {target.name}" if target else "")
    written, note = api.draw(gm, output, target, title)
    if note:
        print(f"fxrewrite: {note}", file=sys.stderr)
    print(wrote_line([written]))
    return EXIT_OK
