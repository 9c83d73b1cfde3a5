"""Graph-building helpers that passes share: reading a conv's weights in any form, making conv
modules, the block-diagonal form of a grouped kernel, an odd kernel made square, and the stable
standardization the norm decompositions build."""

from __future__ import annotations

import math

import torch
from torch import fx, nn

from fxrewrite.ir import OpView, constant_value, tensor_shape
from fxrewrite.rewrite.pattern import Decline, op, reads_an_input
from fxrewrite.rewrite.rewriter import Rewriter


def conv_weights(view: OpView) -> tuple[torch.Tensor, torch.Tensor | None] | Decline:
    """The constant weight and bias of a conv or linear view, whatever form it came in."""
    weight = constant_value(view.args.get("weight"))
    if weight is None:
        return Decline(f"{view.node.name}: its weight is computed at run time, not a constant")
    bias_arg = view.args.get("bias")
    bias = constant_value(bias_arg) if bias_arg is not None else None
    if bias_arg is not None and bias is None:
        return Decline(f"{view.node.name}: its bias is computed at run time, not a constant")
    return weight, bias


def batch_norm_affine(bn: OpView) -> tuple[torch.Tensor, torch.Tensor] | Decline:
    """(scale, shift) in float64 with bn(x) = scale * x + shift per channel: scale = gamma / sqrt(var + eps),
    shift = beta - mean * scale. Inference statistics only."""
    if bn.args.get("training"):
        return Decline("batch norm in training mode uses batch statistics; export the model in eval mode")
    mean, var = constant_value(bn.args.get("running_mean")), constant_value(bn.args.get("running_var"))
    if mean is None or var is None:
        return Decline("batch norm has no running statistics to fold")
    gamma, beta = constant_value(bn.args.get("weight")), constant_value(bn.args.get("bias"))
    gamma = torch.ones_like(mean) if gamma is None else gamma
    beta = torch.zeros_like(mean) if beta is None else beta
    scale = gamma.double() / torch.sqrt(var.double() + bn.attrs["eps"])
    return scale, beta.double() - mean.double() * scale


def depthwise_1x1(scale: torch.Tensor, shift: torch.Tensor | None) -> nn.Conv2d:
    """The depthwise 1x1 conv computing scale_c * x_c + shift_c (float32)."""
    return conv2d(scale.float().reshape(-1, 1, 1, 1), None if shift is None else shift.float(), groups=len(scale))


#: the batch norm that runs over dim 1 of a tensor of each rank
NORM_BY_RANK = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}


def affine_norm(features: int, weight: torch.Tensor, shift: torch.Tensor, norm: type[nn.Module]) -> nn.Module:
    """An inference batch norm computing weight * x + shift exactly (running mean 0, variance 1, eps 0)."""
    layer = norm(features, eps=0.0)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(shift)
        layer.running_mean.zero_()
        layer.running_var.fill_(1.0)
    return layer.eval()


def affine_as_batch_norm(rewriter: Rewriter, anchor: fx.Node, x: fx.Node, shape: tuple[int, ...], weight: torch.Tensor,
                         shift: torch.Tensor, prefix: str) -> fx.Node:
    """weight * x + shift (each of x's rank, batch dim 1, broadcast to x's `shape`) as an inference batch
    norm: over x's channels where both hold one value per channel (or one value), else over x
    reshaped to (N, F), F the product of its dims past the batch, and reshaped back."""
    channels = shape[1]

    def per_channel(t: torch.Tensor) -> bool:
        return t.numel() == 1 or (t.numel() == channels and t.shape[1] == channels)

    if len(shape) in NORM_BY_RANK and per_channel(weight) and per_channel(shift):
        norm = affine_norm(channels, weight.flatten().expand(channels).float(), shift.flatten().expand(channels).float(),
                           NORM_BY_RANK[len(shape)])
        return rewriter.module(anchor, prefix, norm, x)
    features = math.prod(shape[1:])
    flat_weight, flat_shift = (t.expand(1, *shape[1:]).reshape(features).float() for t in (weight, shift))
    flat = rewriter.method(anchor, "reshape", x, -1, features)
    norm = rewriter.module(anchor, prefix, affine_norm(features, flat_weight, flat_shift, NORM_BY_RANK[2]), flat)
    return rewriter.method(anchor, "reshape", norm, -1, *shape[1:])


def conv2d(weight: torch.Tensor, bias: torch.Tensor | None, *, stride: tuple[int, int] = (1, 1),
           padding: tuple[int, int] = (0, 0), groups: int = 1) -> nn.Conv2d:
    """An nn.Conv2d holding exactly these weights (float32, zero padding, dilation 1)."""
    out_ch, in_per_group, kh, kw = weight.shape
    conv = nn.Conv2d(in_per_group * groups, out_ch, (kh, kw), stride=stride, padding=padding, groups=groups,
                     bias=bias is not None, device="meta")
    return holding(conv, weight, bias)


def holding(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """`layer` holding float32 copies of these weights (it is built on the meta device, so there is no
    initialisation to overwrite). A layer built from uninitialised weights is a shell, filled later in
    place: its node's memoized view holds its Parameters."""
    if layer.weight.shape != weight.shape:  # an assigned Parameter is not checked, unlike copy_
        raise ValueError(f"a weight of shape {tuple(weight.shape)} for a layer that takes {tuple(layer.weight.shape)}")
    layer.weight = nn.Parameter(weight.detach().to(torch.float32, copy=True))
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().to(torch.float32, copy=True))
    return layer.eval()


def block_diagonal(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The dense kernel of a grouped conv: output channels of group j read only the input channels
    of group j, W_dense[j O/g:(j+1) O/g, j I/g:(j+1) I/g] = W[j O/g:(j+1) O/g], zero elsewhere."""
    out_ch, in_per = weight.shape[:2]
    out_per = out_ch // groups
    dense = weight.new_zeros(out_ch, in_per * groups, *weight.shape[2:])
    for g in range(groups):
        dense[g * out_per:(g + 1) * out_per, g * in_per:(g + 1) * in_per] = weight[g * out_per:(g + 1) * out_per]
    return dense


def linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An nn.Linear holding exactly these weights (float32)."""
    return holding(nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta"), weight, bias)


def is_plain_conv2d(view: OpView) -> bool:
    return view.attrs.get("padding_mode") == "zeros" and isinstance(view.attrs.get("padding"), tuple)


def plain_conv_weights(view: OpView) -> tuple[torch.Tensor, torch.Tensor | None] | Decline:
    """Weights of a zero-padded, undilated conv with explicit padding: the convs rewrites rebuild."""
    if not is_plain_conv2d(view) or view.attrs["dilation"] != (1, 1):
        return Decline("only zero-padded, undilated convs with explicit padding are rebuilt")
    return conv_weights(view)


def nchw_shape(view: OpView) -> tuple[int, ...] | Decline:
    """The 4-D shape of a node's first input, or why the rewrite cannot use it."""
    shape = view.input_shapes[0] if view.input_shapes else None
    return shape if shape is not None and len(shape) == 4 else Decline("only NCHW (4-D) inputs")


def odd_square_conv(view: OpView, form: str) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]] | Decline:
    """An odd k x k conv's weight embedded in a square kernel with zero taps (padding grows to match),
    its bias and that padding; declined for even kernels or convs rewrites do not rebuild."""
    kh, kw = view.attrs["kernel"]
    if kh % 2 == 0 or kw % 2 == 0:
        return Decline(f"even kernel {kh}x{kw}: only odd kernels {form}")
    weights = plain_conv_weights(view)
    if isinstance(weights, Decline):
        return weights
    weight, bias = weights
    k = max(kh, kw)
    square = weight.new_zeros(*weight.shape[:2], k, k)
    top, left = (k - kh) // 2, (k - kw) // 2
    square[:, :, top:top + kh, left:left + kw] = weight
    return square, bias, (view.attrs["padding"][0] + top, view.attrs["padding"][1] + left)


def standardized(rewriter: Rewriter, anchor: fx.Node, x: fx.Node, dims: list[int], eps: float) -> fx.Node:
    """(x - mean(x)) * rsqrt(mean((x - mean(x))^2) + eps) over `dims`, as nodes before `anchor`: the
    two-pass, numerically stable variance that torch's norms use."""
    fn = rewriter.function
    centred = fn(anchor, torch.sub, x, fn(anchor, torch.mean, x, dims, keepdim=True))
    variance = fn(anchor, torch.mean, fn(anchor, torch.mul, centred, centred), dims, keepdim=True)
    return fn(anchor, torch.mul, centred, fn(anchor, torch.rsqrt, fn(anchor, torch.add, variance, eps)))


#: a conv with a kernel side over 3, the root of the large-kernel rewrites
LARGE_KERNEL_CONV = op("conv2d", name="conv", where={"a kernel larger than 3x3": lambda v: max(v.attrs["kernel"]) > 3})


def constant_operand(binary: OpView) -> tuple[fx.Node, torch.Tensor, bool] | Decline:
    """For a binary op of a computed tensor x and a floating-point constant c (made from parameters
    alone) broadcast to x's shape, rank 2 or more: x, c with leading ones up to x's rank, and whether x
    is the first operand."""
    left, right = binary.inputs
    reads = [reads_an_input(left), reads_an_input(right)]
    if reads != [True, False] and reads != [False, True]:
        return Decline("neither operand, or both, is made from parameters alone")
    x, c_node = (left, right) if reads[0] else (right, left)
    c, shape = computed_constant(c_node), binary.output_shape
    if c is None or shape is None or len(shape) < 2 or not c.is_floating_point():
        return Decline("the constant operand is not a floating-point tensor, or the shape is unknown")
    if tensor_shape(x) != tuple(shape):
        return Decline("the input operand is broadcast; only the constant may be")
    padded = c.reshape((1,) * (len(shape) - c.dim()) + tuple(c.shape))
    if padded.shape[0] != 1:
        return Decline("the constant varies along the batch")
    return x, padded, reads[0]


def computed_constant(node: fx.Node) -> torch.Tensor | None:
    """The value of `node` when it is computed from parameters and buffers alone (a position
    embedding looked up at fixed positions), evaluated once by running its ancestors; None when it
    reads a graph input or is no tensor."""
    if reads_an_input(node):
        return None
    stored = constant_value(node)
    if stored is not None:
        return stored
    ancestors, stack = set(), [node]
    while stack:
        current = stack.pop()
        if current not in ancestors:
            ancestors.add(current)
            stack.extend(current.all_input_nodes)
    graph: fx.Graph = fx.Graph()
    copies: dict[fx.Node, fx.Node] = {}
    for current in node.graph.nodes:
        if current in ancestors:
            copies[current] = graph.node_copy(current, lambda a: copies[a])
    graph.output(copies[node])
    with torch.no_grad():
        value = fx.GraphModule(node.graph.owning_module, graph)()
    return value.detach() if isinstance(value, torch.Tensor) else None


def sliced(rewriter: Rewriter, anchor: fx.Node, x: fx.Node, dim: int, start: int, length: int) -> fx.Node:
    """x[start : start + length] along `dim` (start >= 0) as ATen's slice, which ExecuTorch's Arm
    quantizer annotates and so delegates; it leaves `narrow` unquantized, on the CPU."""
    return rewriter.function(anchor, torch.ops.aten.slice.Tensor, x, dim, start, start + length)
