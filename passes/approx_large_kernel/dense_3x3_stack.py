"""Dense form of approx-large-kernel (APPROXIMATE): a dense k x k conv (k = 2m + 1) as m stacked 3x3
convs at its output width, fitted by least squares, as Arch-Net replaces ResNet's 7x7 stem.

Linear 3x3 convs A_1 (W x C_in), A_2 .. A_m-1 (W x W) and A_m (C_out x W) in a row are one
k x k conv whose kernel composes theirs: K[o, i] = sum_w A_j[o, w] (*) K_j-1[w, i], a full 2-D
convolution, so the layers are fitted (L-BFGS, FIT_STEPS iterations) to minimise ||K - A_m o ... o A_1||^2
with W = C_out. The original stride goes on the last layer, which sees the composite at full
resolution; every layer pads 1, so the m - 1 border pixels differ from the original's (zeros enter
between layers, not only at the input). Where calibration data is given, the fitted stack is then
trained with the rest of the network. The rewrite note gives the relative kernel error.
"""

import torch
import torch.nn.functional as F

from fxrewrite.cost import node_macs, nodes_macs
from fxrewrite.ir import OpView
from fxrewrite.rewrite import Decline, Match, Rewriter, Rule
from fxrewrite.rewrite.building import LARGE_KERNEL_CONV, conv2d, plain_conv_weights

FIT_STEPS = 200


def compose(layers: list[torch.Tensor]) -> torch.Tensor:
    """The (C_out, C_in, 2m + 1, 2m + 1) kernel that m stacked linear 3x3 convs compute."""
    kernel = layers[0]
    for layer in layers[1:]:
        kernel = F.conv2d(kernel.transpose(0, 1), layer.flip(-1, -2), padding=2).transpose(0, 1)
    return kernel


def fit_stack(kernel: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    """m 3x3 layers at the kernel's output width whose composition approximates `kernel`."""
    out_ch, in_ch, k = kernel.shape[0], kernel.shape[1], kernel.shape[-1]
    layers_count = (k - 1) // 2
    generator = torch.Generator().manual_seed(seed)
    shapes = [(out_ch, in_ch)] + [(out_ch, out_ch)] * (layers_count - 1)
    # each layer starts at the size that gives the composition the kernel's magnitude
    scale = (kernel.abs().mean().clamp_min(1e-12) * k * k) ** (1.0 / layers_count)
    layers = [(torch.randn(o, i, 3, 3, generator=generator) * scale / (9 * i) ** 0.5).requires_grad_()
              for o, i in shapes]
    # a smooth, small least-squares problem: L-BFGS gets 100x closer than Adam in the same time
    optimizer = torch.optim.LBFGS(layers, max_iter=FIT_STEPS, line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                                  tolerance_change=1e-15, history_size=50)
    target = kernel.detach()

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = ((compose(layers) - target) ** 2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return [layer.detach() for layer in layers]


def same_padded_odd_square(conv: OpView, grouping_fits: bool,
                           what: str) -> tuple[torch.Tensor, torch.Tensor | None] | Decline:
    """The weight and bias of a square, odd, same-padded conv whose grouping a fit handles
    (`grouping_fits`; `what` says which kernels are fitted when it is not)."""
    kh, kw = conv.attrs["kernel"]
    if kh != kw or kh % 2 == 0 or not grouping_fits:
        return Decline(f"only square, odd, {what}")
    m = (kh - 1) // 2
    if conv.attrs["padding"] != (m, m):
        return Decline(f"only same padding ({m}) keeps the stacked map sizes")
    return plain_conv_weights(conv)


def _stack(match: Match, rewriter: Rewriter):
    conv = match["conv"]
    attrs = conv.attrs
    kh, kw = attrs["kernel"]
    weights = same_padded_odd_square(conv, attrs["groups"] == 1, "dense kernels are fitted as a 3x3 stack")
    if isinstance(weights, Decline):
        return weights
    weight, bias = weights
    layers = fit_stack(weight.float())
    error = (torch.linalg.vector_norm(compose(layers) - weight) / torch.linalg.vector_norm(weight)).item()
    node = conv.inputs[0]
    for index, layer in enumerate(layers):
        last = index == len(layers) - 1
        module = conv2d(layer, bias if last else None, stride=attrs["stride"] if last else (1, 1), padding=(1, 1))
        node = rewriter.module(conv.node, "approx_3x3", module, node)
    rewriter.notes.append(f"{conv.node.name}: APPROXIMATE {kh}x{kw} dense -> {len(layers)} stacked 3x3 convs of width "
                          f"{attrs['out_ch']}, relative kernel error {error:.3g}, MACs {node_macs(conv)} -> "
                          f"{nodes_macs(rewriter.created)}")
    return node


#: the rule approx-large-kernel applies to dense convs
DENSE_STACK_RULE = Rule("dense-stack", LARGE_KERNEL_CONV, _stack)
