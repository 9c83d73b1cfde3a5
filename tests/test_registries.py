"""One place per kind of thing, found by a registry: every file of passes/ registers exactly the pass it
is named after, and every pass of the library comes from its own file there."""

from __future__ import annotations

from pathlib import Path

import fxrewrite.passes as library
from fxrewrite.rewrite.registry import pass_module, registered_passes

FOLDER = Path(library.__file__).parent


def test_every_file_of_passes_registers_the_pass_it_is_named_after():
    files = sorted(p.stem for p in FOLDER.glob("*.py") if p.stem != "__init__")
    origins = {name: pass_module(name) for name in registered_passes()}
    from_library = sorted(module.rsplit(".", 1)[1] for module in origins.values()
                          if module.startswith(f"{library.__name__}."))
    assert from_library == files  # each file registers one pass; none is registered from elsewhere in passes/
    assert all(origin == f"{library.__name__}.{name.replace('-', '_')}" for name, origin in origins.items()
               if origin.startswith(f"{library.__name__}."))
