"""Output writers, one file per format, found by the suffix of the path written (`lower -o`,
`export -o`, `Lowered.save`). A new format is one file here with a `WRITER` and its line in
`WRITERS`; tests/test_writers.py fails when a file of this folder is not registered."""

from __future__ import annotations

from pathlib import Path

from fxrewrite.errors import UsageError
from fxrewrite.writers.base import Program, Writer, Written
from fxrewrite.writers.onnx import WRITER as ONNX
from fxrewrite.writers.pt2 import WRITER as PT2
from fxrewrite.writers.pte import WRITER as PTE

#: every writer by the suffix it writes
WRITERS: dict[str, Writer] = {writer.suffix: writer for writer in (PT2, ONNX, PTE)}


def writer_for(path: str | Path, flag: str = "-o") -> Writer:
    """The writer of `path`'s suffix; UsageError (naming `flag`) listing the formats otherwise."""
    suffix = Path(path).suffix
    if suffix not in WRITERS:
        formats = "; ".join(f"{s}: {w.summary}" for s, w in WRITERS.items())
        raise UsageError(f"{flag} {path}: fxrewrite writes {', '.join(WRITERS)} files, chosen by the suffix ({formats})")
    return WRITERS[suffix]


__all__ = ["WRITERS", "Program", "Writer", "Written", "writer_for"]
