"""Student kinds, one per module (base.py says what a student is); importing this package registers
every kind that builds students for a region output (a new kind is one new file;
tests/test_registries.py holds each file to the one kind it defines)."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from fxrewrite.distill.students.base import Student, student_kinds  # noqa: E402

__all__ = ["Student", "student_kinds"]
