"""Whether Arm's Ethos-U toolchain is here (ExecuTorch's Arm backend and Vela, the ethos-u extra), and
which accelerator a target compiles for: asked before any work by everything that compiles."""

from __future__ import annotations

import importlib.util

from fxrewrite.errors import UsageError
from fxrewrite.target import Target, builtin_targets

EXTRA_ADVICE = "pip install 'fxrewrite[ethos-u]' (executorch[ethos-u]==1.5.1, which brings Vela)"


def ethos_u_installed() -> bool:
    """Whether ExecuTorch's Arm backend and Vela (the ethos-u extra) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("executorch", "ethosu"))


def require_ethos_u(wanted_by: str = "compiling for Ethos-U") -> None:
    """Refuse, before any work, when ExecuTorch's Arm backend or Vela is missing."""
    if not ethos_u_installed():
        raise UsageError(f"{wanted_by} compiles through ExecuTorch's Arm backend and Vela, which are not installed: "
                         f"{EXTRA_ADVICE}")


def accelerator_of(target: Target, wanted_by: str) -> str:
    """Before any work: the Vela accelerator `target` names, with the ethos-u extra installed; UsageError
    where either is missing (`wanted_by`: the option that asks, such as --vela)."""
    if not target.vela_accelerator:
        ethos = [name for name in builtin_targets() if Target.load(name).vela_accelerator]
        raise UsageError(f"{wanted_by}: target {target.name} names no Vela accelerator (target.vela_accelerator in "
                         f"its file); the built-in Ethos-U targets are {', '.join(ethos)}")
    require_ethos_u(wanted_by)
    return target.vela_accelerator
