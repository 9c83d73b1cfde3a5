"""The rewrite library: importing this package registers every pass (one rewrite per module)."""

from fxrewrite.passes import (  # noqa: F401
    add_as_concat_conv,
    add_constant_as_batch_norm,
    approx_gelu_as_tanh,
    approx_large_kernel,
    approx_large_kernel_as_3x3_stack,
    avg_pool_as_conv,
    batch_norm_as_conv,
    channels_last_as_channels_first,
    collapse_linear_convs,
    conv1x1_as_3x3,
    decompose_large_kernel,
    decompose_max_pool,
    embedding_as_one_hot,
    fold_batch_norm,
    gelu_as_erf,
    global_avg_pool_as_convs,
    group_norm_as_primitives,
    grouped_conv_as_dense,
    grouped_conv_as_split_convs,
    hardsigmoid_as_relu6,
    hardswish_as_hardsigmoid_mul,
    large_kernel_as_partial_sums,
    layer_norm_as_primitives,
    mul_constant_as_batch_norm,
    patch_conv_as_strided_3x3,
    relu6_as_relus,
    remove_noops,
    silu_as_sigmoid_mul,
    softmax_as_exp,
    split_input_channels,
    upsample_nearest_as_pixel_shuffle,
)
from fxrewrite.rewrite.passes import registered_passes

__all__ = ["registered_passes"]
