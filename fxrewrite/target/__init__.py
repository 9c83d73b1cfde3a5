"""Chip descriptions: the constraint language, number formats, the performance section, the TOML
schema, and `Target` with its one `verdict(node)`."""

from fxrewrite.target.constraints import CONSTRAINTS, OpRule, Verdict
from fxrewrite.target.formats import QuantFormat, QuantSpec
from fxrewrite.target.performance import Performance
from fxrewrite.target.sources import builtin_targets
from fxrewrite.target.target import Target, parse_target

__all__ = ["CONSTRAINTS", "Performance", "OpRule", "QuantFormat", "QuantSpec", "Target", "Verdict", "builtin_targets",
           "parse_target"]
