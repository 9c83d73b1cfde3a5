"""fxrewrite: lower PyTorch models onto the operator set of one NPU with torch.fx graph rewrites.

The public names load on first use, so that the command can catch an interrupt while torch imports."""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "Lowered": "fxrewrite.api", "check": "fxrewrite.api", "draw": "fxrewrite.api",
    "load_and_capture": "fxrewrite.api", "lower": "fxrewrite.api",
    "CaptureError": "fxrewrite.errors", "FxrewriteError": "fxrewrite.errors", "InputShapeError": "fxrewrite.errors",
    "LoadError": "fxrewrite.errors", "TargetError": "fxrewrite.errors",
    "capture": "fxrewrite.frontend", "OpView": "fxrewrite.ir", "op_view": "fxrewrite.ir",
    "CheckReport": "fxrewrite.legality", "LoweringReport": "fxrewrite.report",
    "Target": "fxrewrite.target", "Verdict": "fxrewrite.target",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'fxrewrite' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
