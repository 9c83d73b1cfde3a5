"""Number formats a target declares for weights and activations (`int4`, `uint8`, `float32`, ...)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fxrewrite.target.constraints import Invalid, Verdict

GRANULARITIES = ("per-tensor", "per-channel")


@dataclass(frozen=True)
class QuantFormat:
    """A number format: `int4` is 4-bit signed integer, `uint8` 8-bit unsigned, `float32` no quantization."""

    name: str
    bits: int
    signed: bool
    is_float: bool = False

    @classmethod
    def parse(cls, text: str) -> QuantFormat:
        match = re.fullmatch(r"(u?int|float)(\d+)", text)
        if match is None or int(match[2]) not in ((2, 3, 4, 5, 6, 7, 8, 16, 32) if match[1] != "float" else (16, 32)):
            raise Invalid('formats such as "int8", "uint4", "int2" or "float32"')
        return cls(text, int(match[2]), match[1] != "uint", match[1] == "float")

    @classmethod
    def of_range(cls, qmin: int, qmax: int) -> QuantFormat | None:
        """The integer format whose grid [qmin, qmax] is: (0, 15) uint4; (-8, 7) or narrow (-7, 7) int4."""
        if qmin == 0 and qmax > 0 and (qmax + 1) & qmax == 0:
            return cls(f"uint{qmax.bit_length()}", qmax.bit_length(), False)
        if qmax > 0 and (qmax + 1) & qmax == 0 and qmin in (-qmax, -qmax - 1):
            return cls(f"int{qmax.bit_length() + 1}", qmax.bit_length() + 1, True)
        return None


@dataclass(frozen=True)
class QuantSpec:
    formats: tuple[QuantFormat, ...]
    granularity: tuple[str, ...]

    def accepts(self, fmt: QuantFormat, granularity: str = "per-tensor") -> Verdict:
        if fmt not in self.formats:
            return Verdict(False, f"format {fmt.name} not in {{{', '.join(f.name for f in self.formats)}}}")
        if not fmt.is_float and granularity not in self.granularity:
            return Verdict(False, f"{granularity} quantization not in {{{', '.join(self.granularity)}}}")
        return Verdict(True)

    def words(self) -> str:
        formats = ", ".join(f.name for f in self.formats)
        if all(f.is_float for f in self.formats):
            return formats
        return f"{formats} ({' or '.join(self.granularity)})"
