"""`PassManager`: runs a pipeline (its contracts checked when it is built) with instruments: timing
and rewrite counts, before/after IR dumps, verification against the teacher after each pass, and
a reproducer written when a pass raises."""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import fx, nn

from fxrewrite.ir import annotate_shapes, op_view
from fxrewrite.errors import FxrewriteError, VerificationError
from fxrewrite.files import atomic_write_text
from fxrewrite.rewrite.contracts import check_contracts
from fxrewrite.rewrite.registry import Pass, PassContext, PassResult
from fxrewrite.rewrite.verify import verify


@dataclass
class Instruments:
    dump_ir: Path | None = None
    verify_each: nn.Module | None = None  # the teacher
    tolerance: float = 1e-5
    reproducer_dir: Path | None = None
    on_result: Callable[[PassResult], None] | None = None


class PassManager:
    def __init__(self, passes: Sequence[Pass], instruments: Instruments | None = None):
        check_contracts(passes)
        self.passes = list(passes)
        self.instruments = instruments or Instruments()

    def run(self, gm: fx.GraphModule, ctx: PassContext, round_index: int = 0) -> list[PassResult]:
        """Run the pipeline once over `gm`. Its code is regenerated once at the end rather than after
        each pass (a tenth of a second per pass on a graph of 1,600 nodes), except where an instrument
        reads it between passes; a reproducer therefore holds the graph as this run found it and the
        passes that ran before the failing one."""
        results = []
        by_kind: dict[str, list[fx.Node]] | None = None  # the graph's nodes by op kind, again after a change
        found = gm.code
        instrumented = self.instruments.dump_ir is not None or self.instruments.verify_each is not None
        changed = False
        for index, pass_ in enumerate(self.passes):
            if by_kind is None:
                by_kind = collections.defaultdict(list)
                for node in gm.graph.nodes:
                    by_kind[op_view(node).kind].append(node)
            roots = [n for kind in pass_.root_ops for n in by_kind.get(kind, ())]
            # a pass that rewrites rejected nodes only has nothing to do where the target runs every root
            if pass_.root_ops and (not roots or (getattr(pass_, "trigger", None) == "illegal"
                                                 and not any(ctx.is_candidate(n) for n in roots))):
                # nothing to root on: skipped before any work (no worklist, no fake tensors)
                results.append(PassResult(pass_.name, 0, 0.0))
                if self.instruments.on_result:
                    self.instruments.on_result(results[-1])
                continue
            before = gm.code if instrumented else ""
            try:
                result = pass_.run(gm, ctx, recompile=instrumented)
            except Exception as exc:
                path = self._write_reproducer(found, self.passes[:index], pass_, exc)
                raise FxrewriteError(f"pass {pass_.name} failed: {type(exc).__name__}: {exc}; "
                                     f"reproducer written to {path}") from exc
            if result.rewrites:
                by_kind, changed = None, True
                if any("type" not in node.meta for node in gm.graph.nodes if node.op != "output"):
                    # ShapeProp and the Rewriter record every node's result type; a node without one
                    # was built otherwise, so the graph is propagated again
                    annotate_shapes(gm, ctx.example_inputs)
                self._dump(round_index, index, pass_.name, before, gm.code)
                self._verify(gm, ctx, pass_.name)
            results.append(result)
            if self.instruments.on_result:
                self.instruments.on_result(result)
        if changed and not instrumented:
            gm.delete_all_unused_submodules()
            gm.recompile()
        return results

    def _dump(self, round_index: int, index: int, name: str, before: str, after: str) -> None:
        if self.instruments.dump_ir is None:
            return
        stem = self.instruments.dump_ir / f"{round_index:02d}-{index:02d}-{name}"
        atomic_write_text(stem.with_name(stem.name + ".before.py"), before)
        atomic_write_text(stem.with_name(stem.name + ".after.py"), after)

    def _verify(self, gm: fx.GraphModule, ctx: PassContext, name: str) -> None:
        teacher = self.instruments.verify_each
        if teacher is None:
            return
        check = verify(gm, teacher, ctx.example_inputs, seed=1234)
        if check.max_relative_error > self.instruments.tolerance:
            raise VerificationError(f"--verify-each: after pass {name} the graph differs from the teacher by a "
                                    f"relative error of {check.max_relative_error:.3g} on its {check.describe()} "
                                    f"(tolerance {self.instruments.tolerance:g})")

    def _write_reproducer(self, code: str, earlier: list[Pass], pass_: Pass, exc: Exception) -> Path:
        directory = self.instruments.reproducer_dir or Path("fxrewrite-reproducer")
        spec = ",".join(p.name for p in self.passes)
        replay = ",".join(p.name for p in [*earlier, pass_])
        text = (f"# fxrewrite reproducer: pass {pass_.name} raised {type(exc).__name__}: {exc}\n"
                f"# pipeline: --passes {spec}\n# to replay: --passes {replay} on this graph\n"
                f"# graph as this run of the pipeline found it:\n{code}")
        return atomic_write_text(directory / f"{pass_.name}-reproducer.py", text)
