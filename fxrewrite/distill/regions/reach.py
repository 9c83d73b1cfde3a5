"""What students on a target can read and make, which decides where a region may begin and end."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import fx

from fxrewrite.ir import tensor_shape
from fxrewrite.target import Target


def is_token_node(node: fx.Node) -> bool:
    shape = tensor_shape(node)
    return node.op not in ("placeholder", "get_attr", "output") and shape is not None and len(shape) == 3


@dataclass(frozen=True)
class Reach:
    """What students on a target read and make: token sequences (N, L, D), which need a reshape to be
    made from maps and from each other (without one, as on archnet, a transformer's token stream is
    never cut: its region runs on to a map or a vector); image maps (convs read them); and how many
    channels a conv reads."""

    tokens: bool
    maps: bool
    widest: float
    #: whether students may make rank-4 tensors of other layouts than maps (fxrewrite.distill.regions.layouts)
    permutes: bool

    @classmethod
    def of(cls, target: Target) -> Reach:
        return cls("reshape" in target.ops or target.allow_all_ops, "conv2d" in target.ops or target.allow_all_ops,
                   target.limit("conv2d", "in_channels_max") or math.inf,
                   "permute" in target.ops or target.allow_all_ops)


def wider_than_convs_read(node: fx.Node, reach: Reach) -> bool:
    shape = tensor_shape(node)
    return shape is not None and len(shape) == 4 and shape[1] > reach.widest


def readable(node: fx.Node, reach: Reach, non_maps: set[fx.Node]) -> bool:
    """Whether students on the target could make and read `node`'s tensor (a region may end at it)."""
    shape = tensor_shape(node)
    return (shape is not None and (len(shape) != 3 or reach.tokens) and not wider_than_convs_read(node, reach)
            and node not in non_maps)
