"""Rewriting graphs: patterns and rules, the greedy driver, graph-building helpers for passes, what a
pass is (contracts, registry) and the pass manager with its instruments."""

from fxrewrite.metrics import relative_error
from fxrewrite.rewrite.contracts import canonical_order, check_contracts, check_order, parse_pipeline
from fxrewrite.rewrite.driver import RewriteLoopError, RewriteStats, absorbed_by, apply_rules, origin_of
from fxrewrite.rewrite.judge import ReplacementJudge
from fxrewrite.rewrite.manager import Instruments, PassManager
from fxrewrite.rewrite.registry import Pass, PassContext, PassResult, PatternPass, register, registered_passes
from fxrewrite.rewrite.pattern import Decline, Match, Pattern, Rule, RuleSet, op, same_shape, tensor_operands
from fxrewrite.rewrite.rewriter import Rewriter
from fxrewrite.rewrite.verify import Verification, fresh_inputs, verify, verify_on

__all__ = ["Decline", "Instruments", "Match", "Pass", "PassContext", "PassManager", "PassResult", "Pattern",
           "PatternPass", "ReplacementJudge", "RewriteLoopError", "RewriteStats", "Rewriter", "Rule", "RuleSet",
           "Verification", "absorbed_by", "apply_rules", "canonical_order", "check_contracts", "check_order", "fresh_inputs", "op",
           "origin_of", "parse_pipeline", "register", "registered_passes", "relative_error", "same_shape", "tensor_operands", "verify",
           "verify_on"]
