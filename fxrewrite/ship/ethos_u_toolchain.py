"""Whether Arm's Ethos-U toolchain is here (ExecuTorch's Arm backend and Vela, the ethos-u extra):
asked before any work by everything that compiles for it."""

from __future__ import annotations

import importlib.util

from fxrewrite.errors import UsageError

EXTRA_ADVICE = "pip install 'fxrewrite[ethos-u]' (executorch[ethos-u]==1.5.1, which brings Vela)"


def ethos_u_installed() -> bool:
    """Whether ExecuTorch's Arm backend and Vela (the ethos-u extra) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("executorch", "ethosu"))


def require_ethos_u(wanted_by: str = "compiling for Ethos-U") -> None:
    """Refuse, before any work, when ExecuTorch's Arm backend or Vela is missing."""
    if not ethos_u_installed():
        raise UsageError(f"{wanted_by} compiles through ExecuTorch's Arm backend and Vela, which are not installed: "
                         f"{EXTRA_ADVICE}")

