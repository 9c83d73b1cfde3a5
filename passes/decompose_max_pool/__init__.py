"""decompose-max-pool (exact): a max pool the target cannot run, in the cheapest of three exact forms.

- smaller-pools (max_pool_as_smaller_pools): a k x k pool as stacked 3x3 pools, for chips whose
  pooling unit stops at 3x3; exact for any input.
- depthwise-max (max_pool_as_depthwise_max): running maxes from depthwise 3x3 convs, ReLU and adds.
- relu-max (max_pool_as_relu_max): running maxes from dense 3x3 convs, ReLU and concat, for chips
  with dense convs alone (Arch-Net's set); the dearest, C x the depthwise form's MACs.

The last two need padding 0 or a non-negative input. With a target, each form that applies is
legalized in a trial and the one with the fewest estimated cycles wins; without one, relu-max (the
form every conv chip can take) is built.
"""

from fxrewrite.passes.decompose_max_pool.depthwise_max import DEPTHWISE_MAX_RULE
from fxrewrite.passes.decompose_max_pool.relu_max import NON_NEGATIVE_PRODUCERS, RELU_MAX_RULE
from fxrewrite.passes.decompose_max_pool.smaller_pools import SMALLER_POOLS_RULE
from fxrewrite.rewrite import PatternPass, RuleSet, register

register(PatternPass(
    name="decompose-max-pool",
    summary="max pool as stacked 3x3 pools, or running maxes a + relu(b - a) from depthwise or dense 3x3 convs, "
            "the cheapest",
    rules=RuleSet((RELU_MAX_RULE, DEPTHWISE_MAX_RULE, SMALLER_POOLS_RULE)),
    produces_ops=frozenset({"conv2d", "cat", "relu", "add", "max_pool2d"}),
    reads_ops=NON_NEGATIVE_PRODUCERS,
    must_precede=("add-as-concat-conv", "add-as-concat-linear", "add-constant-as-batch-norm", "collapse-linear-convs", "conv1x1-as-3x3",
                  "decompose-grouped-conv", "hardsigmoid-as-relu6", "relu6-as-relus"),
))
