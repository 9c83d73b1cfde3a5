"""The rewrite library: importing this package registers every pass, one per module of this folder
(a new pass is one new file; tests/test_registries.py holds each file to the pass it is named after).
A pass that chooses between several graphs for one op is a sub-package: its `__init__` is the pass,
and each form it chooses between is a module beside it (decompose_max_pool/smaller_pools.py, ...)."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from fxrewrite.rewrite import registered_passes  # noqa: E402

__all__ = ["registered_passes"]
