"""The rewrite library: importing this package registers every pass, one per module of this folder
(a new pass is one new file; tests/test_registries.py holds each file to the pass it is named after).
`forms/` holds the graphs a pass chooses between for one op."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.ispkg:
        importlib.import_module(f"{__name__}.{_module.name}")

from fxrewrite.rewrite import registered_passes  # noqa: E402

__all__ = ["registered_passes"]
