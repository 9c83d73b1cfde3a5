"""The `fxrewrite` command, one module per command (`check`, `viz`, `lower`, `export`, `pass_list`,
`targets`: each adds its parser and its `run`), the option groups they share (`options`), `--vela`'s
runs (`vela`), and one table of exit codes (`exits`). Every command calls into the library
(fxrewrite.api); `main` turns errors into exit codes.

`main` and `build_parser` load on first use: the entry point reads the exit codes before torch imports."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_parser", "main"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'fxrewrite.cli' has no attribute {name!r}")
    return getattr(importlib.import_module("fxrewrite.cli.command"), name)
