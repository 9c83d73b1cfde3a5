"""bilinear-as-linear-maps (exact): bilinear resizing as two fully connected layers with fixed weights.

Bilinear resizing of a channel X (H x W) to H' x W' is separable: Y = A_h X A_w^T, where row i of
A_w (W' x W) holds the two interpolation weights of output column i on its source columns (and
A_h likewise for rows), whatever the scale, sizes or align_corners. So Y is X through an FC layer
with weight A_w (over the last dim), transposed, through an FC layer with weight A_h, transposed
back. The matrices are read off the node's own op, run once on probes whose column j (row i) is
ones: a constant along the other axis stays that constant, so the probe's output is column j of
A_w. Costs C (H W W' + W' H H') MACs, dense, where the U55 runs dense MACs about 25x faster than
depthwise ones.
"""

import torch

from fxrewrite.ir import OpView
from fxrewrite.rewrite import Decline, Match, Rewriter, Rule, op
from fxrewrite.rewrite.building import linear, nchw_shape


def _resized(up: OpView, rewriter: Rewriter, probe: torch.Tensor) -> torch.Tensor | Decline:
    """`probe` through the node's own op and arguments."""
    node = up.node
    if any(arg is not up.inputs[0] for arg in node.all_input_nodes):
        if up.attrs["scale"] != tuple(map(int, up.attrs["scale"])):
            return Decline("the output size is computed in the graph and the scale is not an integer")
        return torch.nn.functional.interpolate(probe, size=up.output_shape[2:], mode="bilinear",
                                               align_corners=up.attrs["align_corners"])
    if node.op == "call_module":
        return rewriter.gm.get_submodule(node.target)(probe)
    return node.target(probe, *node.args[1:], **node.kwargs)


def interpolation_matrices(up: OpView, rewriter: Rewriter) -> tuple[torch.Tensor, torch.Tensor] | Decline:
    """(A_h, A_w): the (H' x H) and (W' x W) matrices of the node's resizing."""
    _, _, height, width = nchw_shape(up)
    rows = torch.eye(height).view(height, 1, height, 1).expand(-1, -1, -1, width).contiguous()
    columns = torch.eye(width).view(width, 1, 1, width).expand(-1, -1, height, -1).contiguous()
    with torch.no_grad():
        by_row, by_column = _resized(up, rewriter, rows), _resized(up, rewriter, columns)
    if isinstance(by_row, Decline):
        return by_row
    return by_row[:, 0, :, 0].t().contiguous(), by_column[:, 0, 0, :].t().contiguous()


def _as_linear_maps(match: Match, rewriter: Rewriter):
    up = match["up"]
    shape = nchw_shape(up)
    if isinstance(shape, Decline):
        return shape
    if up.attrs["mode"] != "bilinear":
        return Decline(f"{up.attrs['mode']} upsampling is not bilinear")
    matrices = interpolation_matrices(up, rewriter)
    if isinstance(matrices, Decline):
        return matrices
    along_h, along_w = matrices
    anchor, fn = up.node, rewriter.function
    y = rewriter.module(anchor, "bilinear_width", linear(along_w, None), up.inputs[0])
    y = rewriter.module(anchor, "bilinear_height", linear(along_h, None), fn(anchor, torch.transpose, y, 2, 3))
    return fn(anchor, torch.transpose, y, 2, 3)


LINEAR_MAPS_RULE = Rule("linear-maps", op("upsample", name="up"), _as_linear_maps)
