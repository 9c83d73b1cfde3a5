"""The vendor compilers (base.py says what one is), one per module, found by the name a target gives
(a new compiler is one new file here and its accelerators in fxrewrite.target.compilers;
tests/test_registries.py holds the two in step)."""

from __future__ import annotations

import importlib
import pkgutil

from fxrewrite.errors import UsageError
from fxrewrite.ship.compilers.base import VendorCompiler
from fxrewrite.target import Target, builtin_targets

#: name -> compiler, from every module of this package but base
COMPILERS: dict[str, VendorCompiler] = {}
for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        _compiler = importlib.import_module(f"{__name__}.{_module.name}").COMPILER
        COMPILERS[_compiler.name] = _compiler


def compiler_of(target: Target, wanted_by: str, name: str) -> VendorCompiler:
    """Before any work: compiler `name`, installed, for a target it judges; UsageError where the target
    is judged by another or none, or the compiler is missing (`wanted_by`: the option that asks, such
    as --vela)."""
    compiler = COMPILERS[name]
    if target.compiler != name:
        judged = [chip for chip in builtin_targets() if Target.load(chip).compiler == name]
        raise UsageError(f"{wanted_by}: target {target.name} names no {compiler.label} accelerator (target.compiler = "
                         f"\"{name}\" and target.accelerator in its file); the built-in targets {compiler.label} "
                         f"compiles for are {', '.join(judged)}")
    compiler.require(wanted_by)
    return compiler


def installed_compiler(target: Target) -> VendorCompiler | None:
    """The compiler `target` is judged by where it is installed, else None."""
    compiler = COMPILERS.get(target.compiler)
    return compiler if compiler is not None and compiler.installed() else None
