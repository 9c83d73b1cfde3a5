"""Quantization schemes: the target's declared formats at the bit widths a user asks for."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from fxrewrite.errors import UsageError
from fxrewrite.target import QuantFormat, Target

Method = Literal["lsq", "dorefa"]
METHODS: tuple[str, ...] = ("lsq", "dorefa")


@dataclass(frozen=True)
class QuantScheme:
    weights: QuantFormat
    weight_granularity: str
    activations: QuantFormat
    method: Method = "lsq"

    def describe(self) -> str:
        return (f"{self.method}: weights {self.weights.name} {self.weight_granularity}, "
                f"activations {self.activations.name} per-tensor")


def _pick(formats: Iterable[QuantFormat], bits: int | None, what: str, flag: str, target: Target,
          prefer_signed: bool) -> QuantFormat:
    integer = sorted((f for f in formats if not f.is_float), key=lambda f: (f.bits, f.signed != prefer_signed))
    if not integer:
        raise UsageError(f"target {target.name} declares no integer {what} format; drop {flag}")
    if bits is None:
        return integer[-1]
    matching = [f for f in integer if f.bits == bits]
    if not matching:
        raise UsageError(f"{flag} {bits}: target {target.name} declares {what} formats "
                         f"{', '.join(f.name for f in integer)}")
    return sorted(matching, key=lambda f: f.signed != prefer_signed)[0]


def scheme_for(target: Target, wbits: int | None, abits: int | None, method: Method = "lsq") -> QuantScheme:
    """The target's formats at these bit widths (default: its widest integer formats)."""
    if method not in METHODS:
        raise UsageError(f"quantization method {method!r}: choose one of {', '.join(METHODS)}")
    weights = _pick(target.weights.formats, wbits, "weight", "--wbits", target, prefer_signed=True)
    if not weights.signed:
        raise UsageError(f"target {target.name}: weights format {weights.name} is unsigned; "
                         "fxrewrite quantizes weights symmetrically and needs a signed format")
    activations = _pick(target.activations.formats, abits, "activation", "--abits", target, prefer_signed=False)
    granularity = "per-channel" if "per-channel" in target.weights.granularity else "per-tensor"
    return QuantScheme(weights, granularity, activations, method)


def format_range(fmt: QuantFormat, narrow: bool) -> tuple[int, int]:
    if not fmt.signed:
        return 0, 2 ** fmt.bits - 1
    top = 2 ** (fmt.bits - 1) - 1
    return (-top if narrow else -top - 1), top
