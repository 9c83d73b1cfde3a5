"""Which rank-4 tensors are image maps (N, C, H, W), for targets that cannot permute.

Students read and write image maps. A rank-4 tensor in another layout (swin's channels-last
(N, H, W, C), attention's (N, heads, L, d), maxvit's window partitions (N, windows, tokens, C)) is
none, and on a target without permute no student could make or read it: it stays inside a region
(fxrewrite.distill.regions.carving), as tokens do on a target without reshape.

A rank-4 tensor's layout is followed through the graph as the order of NCHW's dims it holds. Convs,
pools and batch norms write maps from maps (over a channels-last tensor, as an exact
add-as-concat-conv applies them, the result keeps its input's layout); a permute or transpose
reorders its input's layout (convnext's (0, 2, 3, 1) and back with (0, 3, 1, 2) is a map again); a
reshape keeps a map where its input held the map's H and W last and it leaves them there
(shufflenet's channel shuffle through (N, g, C/g, H, W)), or where it makes a (N, C, 1, 1) vector
map; every other op keeps the layout of its first input that has one. A layout that cannot be
followed is none.
"""

from __future__ import annotations

from torch import fx

from fxrewrite.ir import op_view, tensor_shape

MAP = (0, 1, 2, 3)
#: ops that write a map from a map (over another layout, their result keeps that layout)
MAP_WRITERS = frozenset({"conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
                         "batch_norm", "upsample", "pixel_shuffle"})
#: the layout of a tensor of rank other than 4 whose last two dims are a map's H and W
SPATIAL_LAST = "spatial-last"


def _reordered(view, source: tuple[int, ...] | str | None) -> tuple[int, ...] | str | None:
    rank = len(view.output_shape)
    if view.kind == "permute":
        order = view.attrs["dims"]
    else:
        order = list(range(rank))
        first, second = view.attrs["dims"]
        order[first], order[second] = second, first
    if source == SPATIAL_LAST:
        return SPATIAL_LAST if tuple(order[-2:]) == (rank - 2, rank - 1) else None
    return tuple(source[d] for d in order) if isinstance(source, tuple) and rank == 4 else None


def _reshaped(view, source: tuple[int, ...] | str | None, source_shape: tuple[int, ...]) -> str | tuple | None:
    shape = view.output_shape
    if len(shape) == 4 and tuple(shape[2:]) == (1, 1):
        return MAP
    spatial = source in (MAP, SPATIAL_LAST) and tuple(shape[-2:]) == tuple(source_shape[-2:])
    if not spatial or len(shape) < 4:
        return None
    return MAP if len(shape) == 4 else SPATIAL_LAST


def non_map_tensors(gm: fx.GraphModule) -> set[fx.Node]:
    """The computed rank-4 nodes of `gm` whose layout is not (N, C, H, W) (module docstring)."""
    layout: dict[fx.Node, tuple[int, ...] | str | None] = {}
    for node in gm.graph.nodes:
        shape = tensor_shape(node)
        if node.op in ("placeholder", "get_attr"):
            layout[node] = MAP if shape is not None and len(shape) == 4 else None
            continue
        if node.op == "output":
            continue
        view = op_view(node)
        inputs = [a for a in node.all_input_nodes if layout.get(a) is not None]
        source = layout.get(view.inputs[0]) if view.inputs else None
        if view.kind in MAP_WRITERS:  # over a tensor laid out otherwise, the result is no map either
            layout[node] = MAP if source == MAP else source
        elif view.kind in ("permute", "transpose") and shape is not None:
            layout[node] = _reordered(view, source)
        elif view.kind in ("reshape", "flatten") and shape is not None and view.inputs:
            layout[node] = _reshaped(view, source, tensor_shape(view.inputs[0]) or ())
        else:
            layout[node] = layout[inputs[0]] if inputs else None
    return {n for n, value in layout.items() if n.op not in ("placeholder", "get_attr") and value != MAP
            and (shape := tensor_shape(n)) is not None and len(shape) == 4}
