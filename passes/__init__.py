"""The rewrite library: importing this package registers every pass (one rewrite per module)."""

from fxrewrite.passes import (  # noqa: F401
    add_as_concat_conv,
    conv1x1_as_3x3,
    decompose_large_kernel,
    fold_batch_norm,
    global_avg_pool_as_convs,
    grouped_conv_as_dense,
    remove_noops,
)
