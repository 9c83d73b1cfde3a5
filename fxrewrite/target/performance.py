"""A target's performance section: the weights of its cost estimate (`[cost]` in the target file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CostWeights:
    """A target's cost estimate: mac * MACs + byte * bytes moved, in arbitrary units (fxrewrite.cost).

    Grouped and depthwise convs count `grouped_mac` per MAC because NPUs run them at a fraction of
    their dense throughput. Bytes use the target's widest activation and weight formats.
    `growth_max` bounds how much dearer an exact rewrite may make the nodes it replaces.
    """

    mac: float = 1.0
    byte: float = 1.0
    grouped_mac: float = 1.0
    activation_bytes: float = 1.0
    weight_bytes: float = 1.0
    #: an exact rewrite costing more than this many times what it replaces is left for distillation
    growth_max: float | None = None
