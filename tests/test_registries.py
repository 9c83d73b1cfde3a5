"""One place per kind of thing, found by a registry: every file of passes/ registers exactly the pass it
is named after, and every pass of the library comes from its own file there; every file of
fxrewrite/distill/students/ is one student kind; every file of fxrewrite/ship/compilers/ one compiler a
target may name."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import fxrewrite.distill.students as students
import fxrewrite.passes as library
import fxrewrite.ship.compilers as compilers
from fxrewrite.distill.students import Student, conv, student_kinds
from fxrewrite.distill.students.base import student_kind
from fxrewrite.rewrite.registry import pass_module, registered_passes
from fxrewrite.target.compilers import ACCELERATORS

FOLDER = Path(library.__file__).parent


def test_every_file_of_passes_registers_the_pass_it_is_named_after():
    files = sorted([p.stem for p in FOLDER.glob("*.py") if p.stem != "__init__"]
                   + [p.parent.name for p in FOLDER.glob("*/__init__.py")])  # a pass with forms: a sub-package
    origins = {name: pass_module(name) for name in registered_passes()}
    from_library = sorted(module.rsplit(".", 1)[1] for module in origins.values()
                          if module.startswith(f"{library.__name__}."))
    assert from_library == files  # each file registers one pass; none is registered from elsewhere in passes/
    assert all(origin == f"{library.__name__}.{name.replace('-', '_')}" for name, origin in origins.items()
               if origin.startswith(f"{library.__name__}."))


def test_every_file_of_students_defines_one_kind_and_every_registered_kind_is_a_file():
    folder = Path(students.__file__).parent
    files = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "base"))
    for name in files:
        module = importlib.import_module(f"{students.__name__}.{name}")
        kinds = [value for value in vars(module).values() if isinstance(value, type) and issubclass(value, Student)
                 and value.__module__ == module.__name__]
        assert len(kinds) == 1, f"{name}.py defines {len(kinds)} student kinds"
    registered = [name for name, _ in student_kinds()]
    assert set(registered) <= set(files) and len(registered) == len(set(registered))
    # the kinds that stand in for a whole region are chosen by synthesis, not asked per output
    assert set(files) - set(registered) == {"constant", "reparameterised", "teacher_form"}


def test_a_student_kind_registered_twice_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        student_kind(rank=99)(conv.candidates)


def test_every_compiler_a_target_may_name_has_one_file_and_every_file_is_one_compiler():
    folder = Path(compilers.__file__).parent
    files = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "base"))
    assert sorted(compilers.COMPILERS) == sorted(ACCELERATORS) == files
    assert all(compiler.name == name for name, compiler in compilers.COMPILERS.items())
