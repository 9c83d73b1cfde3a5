"""The `fxrewrite` command's entry point: signals are handled before torch is imported, so that an
interrupt at any moment ends in one line and exit 130, and SIGTERM lets output writes clean up."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from fxrewrite.cli.exits import EXIT_INTERRUPTED, EXIT_TERMINATED

INTERRUPTED = "fxrewrite: interrupted\n"


def _terminate(signum: int, frame: object) -> None:
    # raising unwinds the stack: temporary output files are removed (fxrewrite.files) before exiting
    raise SystemExit(EXIT_TERMINATED)


def _exit_while_importing(signum: int, frame: object) -> None:
    # an exception raised inside a C extension's initialisation (numpy's, under torch) can surface as an
    # unrelated RuntimeError; nothing is written yet, so exiting at once loses nothing
    if signum == signal.SIGINT:
        os.write(sys.stderr.fileno(), INTERRUPTED.encode())
        os._exit(EXIT_INTERRUPTED)
    os._exit(EXIT_TERMINATED)


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGINT, _exit_while_importing)
    signal.signal(signal.SIGTERM, _exit_while_importing)
    try:
        from fxrewrite.cli.command import main as run  # imports torch: seconds

        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _terminate)
        return run(argv)
    except KeyboardInterrupt:
        print(INTERRUPTED, end="", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        # the command is over and its files are written: an interrupt now has nothing left to stop, and one
        # landing in a finaliser while the interpreter shuts down printed "Exception ignored ... KeyboardInterrupt"
        signal.signal(signal.SIGINT, signal.SIG_IGN)
