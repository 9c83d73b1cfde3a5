"""Restructuring candidates, one file per rewrite behind `Candidate` (base.py): RAN-e's collapsed
inverted residual (its squeeze-and-excitation gate dropped, or kept on the output), RAN-i's narrow
pair (and ConvNeXt's), SESR's collapsed conv pair, a ResNet basic block's convs split at half rank.
The planner considers them in this order for every block one of them finds; a new candidate is one
file here and its line below (tests/test_restructure.py fails when a file of this folder is not
registered)."""

from fxrewrite.lowering.candidates.approx_basic_block_as_low_rank_convs import CANDIDATE as LOW_RANK_CONVS
from fxrewrite.lowering.candidates.approx_conv_act_pointwise_as_conv import CANDIDATE as COLLAPSED_CONV_PAIR
from fxrewrite.lowering.candidates.approx_convnext_block_as_narrow_pair import CANDIDATE as CONVNEXT_PAIR
from fxrewrite.lowering.candidates.approx_inverted_residual_as_collapsed_block import CANDIDATE as COLLAPSED_BLOCK
from fxrewrite.lowering.candidates.approx_inverted_residual_as_narrow_pair import CANDIDATE as NARROW_PAIR
from fxrewrite.lowering.candidates.approx_se_inverted_residual_as_gated_collapse import CANDIDATE as GATED_COLLAPSE
from fxrewrite.lowering.candidates.base import Candidate, Replacement
from fxrewrite.lowering.candidates.blocks import Collapsible

CANDIDATES: tuple[Candidate, ...] = (COLLAPSED_BLOCK, GATED_COLLAPSE, NARROW_PAIR,
                                       COLLAPSED_CONV_PAIR, LOW_RANK_CONVS, CONVNEXT_PAIR)

__all__ = ["CANDIDATES", "Candidate", "Collapsible", "Replacement"]
