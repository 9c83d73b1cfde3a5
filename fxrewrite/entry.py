"""The `fxrewrite` command's entry point: signals are handled before torch is imported, so that an
interrupt at any moment ends in one line and exit 130, and SIGTERM lets output writes clean up."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM


def _terminate(signum: int, frame: object) -> None:
    # raising unwinds the stack: temporary output files are removed (fxrewrite.files) before exiting
    raise SystemExit(EXIT_TERMINATED)


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from fxrewrite.cli import main as run  # imports torch: seconds

        return run(argv)
    except KeyboardInterrupt:
        print("fxrewrite: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
