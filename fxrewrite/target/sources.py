"""Where a target description comes from: a built-in name or a TOML file, and the files it extends.

A target file may start from another (`extends = "ethos-u55-128"` in its [target] table: a built-in
name, or a path relative to the file) and state only what differs: the two documents are merged
table by table, a value of the extending file replacing the extended one's (an [ops.KIND] table
merges constraint by constraint), and the result is validated as one document. A chain of extends
is followed to its end and refused where it loops.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from fxrewrite.errors import TargetError

BUILTIN_PACKAGE = "fxrewrite.targets"


def builtin_targets() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files(BUILTIN_PACKAGE).iterdir()
                  if p.name.endswith(".toml"))


def file_of(name_or_path: str | Path, folder: Path | None = None) -> Path | None:
    """The file `name_or_path` names where it is a path (a .toml, or any file that exists; relative
    to `folder` when given); None for a built-in target's name."""
    path = Path(name_or_path)
    if folder is not None and not path.is_absolute():
        path = folder / path
    return path if path.suffix == ".toml" or path.exists() else None


def read_source(name_or_path: str | Path, folder: Path | None = None) -> tuple[bytes, str]:
    """The bytes of a target and where they come from (the file, or the built-in's resource)."""
    path = file_of(name_or_path, folder)
    if path is not None:
        if not path.is_file():
            raise TargetError(f"target file {path}: no such file")
        return path.read_bytes(), str(path)
    resource = resources.files(BUILTIN_PACKAGE) / f"{name_or_path}.toml"
    if not resource.is_file():
        raise TargetError(f"unknown target {name_or_path!r}: built-in targets are {', '.join(builtin_targets())}, "
                          "or pass the path of a .toml file")
    return resource.read_bytes(), str(resource)


def _decoded(data: bytes, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TargetError(f"{origin}: not valid TOML ({exc})") from None


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        both_tables = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both_tables else value
    return merged


def resolved_document(data: bytes, origin: str, chain: tuple[str, ...] = ()) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The target document `data` (read from `origin`) with what it extends merged under it, and the
    files of the targets it extends, nearest first."""
    document = _decoded(data, origin)
    meta = document.get("target")
    if not isinstance(meta, dict) or "extends" not in meta:
        return document, ()
    parent = meta["extends"]
    if not isinstance(parent, str) or not parent:
        raise TargetError(f"{origin}: target.extends: expected a built-in target's name or a .toml path, got "
                          f"{parent!r}")
    if not meta.get("name"):
        raise TargetError(f"{origin}: target.name: a target that extends another names itself")
    folder = Path(origin).parent if Path(origin).is_file() else None
    base_data, base_origin = read_source(parent, folder)
    if base_origin in (*chain, origin):
        raise TargetError(f"{origin}: target.extends leads in a loop: {' -> '.join((*chain, origin, base_origin))}")
    base, base_files = resolved_document(base_data, base_origin, (*chain, origin))
    own = {**document, "target": {k: v for k, v in meta.items() if k != "extends"}}
    return _merged(base, own), (base_origin, *base_files)
