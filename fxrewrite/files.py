"""Writing output files so that a failure never leaves a half-written file behind, and checking,
before any work, that a run's outputs can be written and overwrite none of its inputs."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from fxrewrite.errors import UsageError

#: the temporary file's name stays short whatever the output's name (file systems cap names at 255 bytes)
_TEMP_PREFIX = ".fxrewrite-"


def _mode_for(target: Path) -> int:
    """The permissions of the file being replaced, else the usual ones for a new file (0666 less umask)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it over `path`; the file keeps the
    permissions of the one it replaces. On any failure or interruption the temporary file is removed.
    Where `path` is a symbolic link, the file it points to is written and the link kept (see link_note)."""
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_TEMP_PREFIX, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, _mode_for(target))  # mkstemp creates 0600
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def link_note(path: str | os.PathLike) -> str:
    """Where `path` is a symbolic link, what writing it does (for the line that says it was written)."""
    return f"{path} is a link: wrote the file it points to, {os.path.realpath(path)}" if Path(path).is_symlink() else ""


def wrote_line(paths: Iterable[str | os.PathLike | None]) -> str:
    """`wrote A and B`, saying where a path was a link and the file it points to was written."""
    written = [p for p in paths if p]
    notes = [note for note in map(link_note, written) if note]
    return "wrote " + " and ".join(map(str, written)) + (f" ({'; '.join(notes)})" if notes else "")


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` lies in `folder` or below it, links resolved."""
    return folder.resolve() in path.resolve().parents


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same resolved path, or the same inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (or the nearest folder above it that exists), else None.
    A probe file is tried, as permission bits do not tell (root, read-only mounts)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=_TEMP_PREFIX):
            return None
    except OSError as exc:
        return f"cannot write into {folder} ({exc.strerror or exc})"


def check_outputs(outputs: Mapping[str, Path], inputs: Iterable[Path | str] = (),
                  folders: Mapping[str, Path] | None = None) -> None:
    """Refuse, before any work, outputs that would overwrite an input or each other, that name an
    existing folder, or whose folder cannot be written. `outputs` and `folders` map the option that
    names each location (e.g. "--report") to it; `folders` are output folders (such as --dump-ir),
    which may hold no input. `inputs` are the files and folders the run reads: no output may lie in
    an input folder."""
    named = [(flag, Path(p)) for flag, p in outputs.items()]
    for flag, path in [*named, *(folders or {}).items()]:
        try:
            Path(path).resolve()
        except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError for a loop, later ones OSError
            raise UsageError(f"{flag} {path}: symbolic links that lead in a loop; remove them or name another "
                             "file") from None
    existing_inputs = [Path(p) for p in inputs if p and Path(p).exists()]
    for index, (flag, path) in enumerate(named):
        for source in existing_inputs:
            if _same_file(path, source):
                raise UsageError(f"{flag} {path} would overwrite the input {source}; choose another file")
            if source.is_dir() and _inside(path, source):
                raise UsageError(f"{flag} {path} lies in the input folder {source}, which the run reads; choose "
                                 "another place")
        for other_flag, other in named[:index]:
            if _same_file(path, other):
                raise UsageError(f"{flag} {path} names the same file as {other_flag}; choose another file")
        if path.is_dir():
            raise UsageError(f"{flag} {path} is a folder; name a file")
        if len(os.fsencode(path.name)) > 255:
            raise UsageError(f"{flag} {path}: the file name is longer than the 255 bytes a file system allows")
        problem = _unwritable(Path(os.path.realpath(path)).parent)
        if problem is not None:
            raise UsageError(f"{flag} {path}: {problem}")
    for flag, folder in (folders or {}).items():
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{flag} {folder} is a file; name a folder (it is created if missing)")
        for source in existing_inputs:
            if _same_file(folder, source) or _inside(source, folder):
                raise UsageError(f"{flag} {folder} holds the input {source}, and fxrewrite writes into that folder; "
                                 "choose another")
        problem = _unwritable(folder)
        if problem is not None:
            raise UsageError(f"{flag} {folder}: {problem}")
