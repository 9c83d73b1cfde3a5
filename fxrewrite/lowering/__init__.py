"""Lowering: the planner (trial legalization, choice by cost), the exact rounds with verification,
and the flow that adds distillation or post-training quantization when data is given."""

from fxrewrite.lowering.exact import MAX_ROUNDS, ExactLowering, default_pipeline, lower_exact
from fxrewrite.lowering.flow import LoweringOutcome, lower_graph, validate
from fxrewrite.lowering.planner import TrialJudge, extract_subgraph

__all__ = ["MAX_ROUNDS", "ExactLowering", "LoweringOutcome", "TrialJudge", "default_pipeline", "extract_subgraph",
           "lower_exact", "lower_graph", "validate"]
