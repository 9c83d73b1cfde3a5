"""The lowering report: typed records of what the lowering did, rendered as text and as JSON.

JSON schema (version 1): `version`, `model`, `target`; `passes` (one row per pass run: name,
rewrites, seconds) and `rewrites` (totals per pass); `declined` (per pass, the reasons candidates
were declined) and `notes`; `still_illegal` (name, kind, reason) and `needs_distillation`;
`regions` (what distillation replaces: region, nodes, kinds, inputs, outputs, teacher_macs, nn_mass);
`max_relative_error` of the exact phase against the teacher and `verified_on`, what it compared;
`before` and `after` (macs, params, nodes, nn_mass; the target's latency estimate: cycles, ms, cycles by op
kind, the ten dearest nodes), and `exact_after` when training changed the graph;
`seconds` per phase; `distillation`
(schedule, quantization, calibration, samples, per-region students, held-out agreement, before,
after, seconds) when calibration data was given.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from fxrewrite.cost import Size
from fxrewrite.distill import Distilled, Point, Region, StudentResult
from fxrewrite.distill.regions.carving import MANY_BLOCKS
from fxrewrite.distill.training.outlook import Outlook
from fxrewrite.ir import tensor_shape
from fxrewrite.lowering import LoweringOutcome
from fxrewrite.lowering.restructure import Restructured
from fxrewrite.metrics import Agreement

VERSION = 1


@dataclass(frozen=True)
class PassRun:
    name: str
    rewrites: int
    seconds: float


@dataclass(frozen=True)
class Declined:
    """Why a pass's candidates were not rewritten (one entry per distinct reason)."""

    pass_name: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class IllegalNode:
    name: str
    kind: str
    reason: str


@dataclass(frozen=True)
class TensorEnd:
    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RegionReport:
    """A region the lowering hands to distillation: connected illegal nodes, cut at legal tensors."""

    region: int
    nodes: tuple[str, ...]
    kinds: dict[str, int]
    inputs: tuple[TensorEnd, ...]
    outputs: tuple[TensorEnd, ...]
    teacher_macs: int
    #: the teacher blocks it spans, and why several where it does (fxrewrite.distill.regions.carving)
    blocks: tuple[str, ...] = ()
    joined_by: str = ""
    #: NN-Mass of the skip joins inside the region (fxrewrite.nn_mass)
    nn_mass: float = 0.0

    @classmethod
    def of(cls, region: Region) -> RegionReport:
        ends = lambda nodes: tuple(TensorEnd(n.name, tuple(tensor_shape(n) or ())) for n in nodes)  # noqa: E731
        return cls(region.index, tuple(n.name for n in region.nodes), dict(region.kinds), ends(region.inputs),
                   ends(region.outputs), region.macs, region.blocks, region.joined_by, region.nn_mass)

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "nodes": list(self.nodes), "kinds": self.kinds,
                "inputs": [{"name": e.name, "shape": list(e.shape)} for e in self.inputs],
                "outputs": [{"name": e.name, "shape": list(e.shape)} for e in self.outputs],
                "teacher_macs": self.teacher_macs, "blocks": list(self.blocks), "joined_by": self.joined_by,
                "nn_mass": self.nn_mass}

    def spans(self) -> str:
        """The teacher blocks in words, with the reason where there are several."""
        if len(self.blocks) <= 1:
            return f"teacher block {self.blocks[0]}" if self.blocks else "outside the teacher's blocks"
        return f"{len(self.blocks)} teacher blocks ({self.blocks[0]} .. {self.blocks[-1]}), joined by {self.joined_by}"

    def to_text(self) -> str:
        shapes = lambda ends: ", ".join("x".join(map(str, e.shape)) or "?" for e in ends)  # noqa: E731
        kinds = ", ".join(f"{k} {n}" for k, n in self.kinds.items())
        return (f"region {self.region}: {len(self.nodes)} nodes ({kinds}); {shapes(self.inputs)} -> "
                f"{shapes(self.outputs)}; teacher MACs {self.teacher_macs:,}, NN-Mass {self.nn_mass:,.0f}; "
                f"{self.spans()}")


@dataclass(frozen=True)
class DistillationReport:
    """What training did: students (or post-training calibration alone), agreement, size, time."""

    schedule: str
    quantization: str
    calibration: str
    samples: tuple[int, int]
    students: tuple[StudentResult, ...]
    agreement: Agreement
    before: Size
    after: Size
    seconds: dict[str, float]
    #: the held-out score after every epoch: phase, epoch, seconds since distillation began, agreement, cosine
    history: tuple[Point, ...] = ()
    #: why a phase stopped before its epoch cap
    stops: dict[str, str] = field(default_factory=dict)
    #: calibration inputs given but left out by --calib-size
    dropped: int = 0
    #: where training ran: the device, and how many processes shared each batch (torchrun)
    device: str = "cpu"
    processes: int = 1
    #: per phase, each rollback to its best epoch at half the learning rate
    rollbacks: dict[str, list[str]] = field(default_factory=dict)
    #: the options it ran with (fxrewrite.distill.options.TrainingOptions.report_echo)
    options: dict[str, Any] = field(default_factory=dict)
    #: per phase, samples trained on per second of the phase
    samples_per_second: dict[str, float] = field(default_factory=dict)
    #: what a longer time budget would likely give fine-tuning (fxrewrite.distill.training.outlook)
    outlook: Outlook | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "quantization": self.quantization,
                "regions": [asdict(s) for s in self.students], **self.agreement.as_dict(),
                "before": self.before.as_dict(), "after": self.after.as_dict(), "seconds": self.seconds,
                "calibration": self.calibration,
                "samples": dict(zip(("train", "held_out", "dropped"), (*self.samples, self.dropped))),
                "history": [asdict(p) for p in self.history], "stops": self.stops, "rollbacks": self.rollbacks,
                "device": self.device, "processes": self.processes, "options": self.options,
                "samples_per_second": self.samples_per_second,
                "outlook": self.outlook.as_dict() if self.outlook else None}

    def to_text(self) -> str:
        train, held = self.samples
        lines = [f"{self.schedule}, {self.quantization}; {train} inputs from {self.calibration}, {held} held out"
                 + (f"; --calib-size left out {self.dropped} of the inputs given" if self.dropped else "")]
        lines += [f"  {s.region}: {s.student} ({s.size}; {s.student_params:,} params; x{s.cost_ratio:.2f} the teacher "
                  f"region's estimated cost), held-out MSE {s.mse:.3g}, "
                  f"cosine {s.cosine:.4f}" + (f"; {s.growth}" if s.growth else "") for s in self.students]
        top1 = f", top-1 agreement {self.agreement.top1:.2%}" if self.agreement.top1 is not None else ""
        deviations = " of the deviations from the teacher's mean output" if self.agreement.vacuous else ""
        lines.append(f"vs teacher on the held-out split: cosine{deviations} {self.agreement.cosine:.4f}, "
                     f"MSE {self.agreement.mse:.3g}{top1}")
        if self.agreement.vacuous:
            lines.append(f"no top-1 agreement: {self.agreement.vacuous}, so it would be 100% for a student that "
                         "outputs a constant; judged by the cosine and MSE above instead")
        lines += [f"{phase}: {what}" for phase, whats in self.rollbacks.items() for what in whats]
        lines += [f"{phase} stopped early: {why}" for phase, why in self.stops.items()]
        if self.history:
            best = max(self.history, key=lambda p: (p.agreement or 0.0, p.cosine))
            lines.append(f"best held-out epoch: {best.phase} {best.epoch} at {best.seconds:.0f} s"
                         + (f", agreement {best.agreement:.2%}" if best.agreement is not None else "")
                         + f", cosine {best.cosine:.4f}")
        if self.samples_per_second:
            lines.append("training speed: " + ", ".join(f"{k} {v:,.0f} samples/s" for k, v in
                                                         self.samples_per_second.items()))
        if self.outlook is not None:
            lines.append(f"longer budget: {self.outlook.text}")
        lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items())
                     + f" (on {self.device}" + (f", {self.processes} processes)" if self.processes > 1 else ")"))
        return "\n".join(lines)


@dataclass
class LoweringReport:
    model: str
    target: str
    passes: list[PassRun]
    declined: list[Declined]
    notes: list[str]
    still_illegal: list[IllegalNode]
    regions: list[RegionReport]
    max_relative_error: float
    #: what max_relative_error compares: the outputs and the intermediate tensors both graphs compute
    verified_on: str
    before: Size
    after: Size
    seconds: dict[str, float]
    exact_after: Size | None = None
    distillation: DistillationReport | None = None
    #: the ONNX file written and onnxruntime's differences from torch (fxrewrite.ship.OnnxCheck)
    onnx: dict[str, Any] | None = None
    #: per graph compiled (`--vela`: teacher, lowered), Vela's numbers (fxrewrite.ship.ethos_u.VelaResult)
    vela: dict[str, Any] | None = None
    #: the restructuring planner's blocks and choices (fxrewrite.lowering.restructure), with --calib
    restructuring: Restructured | None = None
    version: int = field(default=VERSION)

    @property
    def rewrites(self) -> dict[str, int]:
        totals: Counter = Counter()
        for run in self.passes:
            totals[run.name] += run.rewrites
        return dict(totals)

    @property
    def needs_distillation(self) -> bool:
        return bool(self.still_illegal)

    @classmethod
    def from_outcome(cls, outcome: LoweringOutcome) -> LoweringReport:
        exact = outcome.exact
        declined = [Declined(r.name, tuple(sorted({reason for reasons in r.stats.declined.values()
                                                   for reason in reasons})))
                    for r in exact.passes if r.stats and r.stats.declined]
        report = cls(
            model=outcome.model, target=outcome.target.name,
            passes=[PassRun(r.name, r.rewrites, round(r.seconds, 4)) for r in exact.passes],
            declined=declined,
            notes=[note for r in exact.passes if r.stats for note in r.stats.notes] + outcome.notes,
            still_illegal=[IllegalNode(r.name, r.kind, r.reason) for r in outcome.verdicts.illegal],
            regions=[RegionReport.of(r) for r in outcome.regions],
            max_relative_error=exact.verification.max_relative_error,
            verified_on=exact.verification.describe(),
            before=exact.before, after=exact.after,
            seconds={k: round(v, 4) for k, v in exact.seconds.items()},
        )
        trained, data = outcome.trained, outcome.calibration
        if outcome.restructured is not None:
            report.restructuring = outcome.restructured
            report.exact_after, report.after = exact.after, Size.of(outcome.gm, performance=outcome.target.performance)
        if trained is None or data is None:
            return report
        students = tuple(trained.regions) if isinstance(trained, Distilled) else ()
        schedule = trained.schedule if isinstance(trained, Distilled) else "post-training calibration"
        history, stops = (tuple(trained.history), trained.stops) if isinstance(trained, Distilled) else ((), {})
        report.distillation = DistillationReport(schedule, trained.quantization, data.source, data.samples, students,
                                                 trained.agreement, trained.before, trained.after, trained.seconds,
                                                 history, stops, data.dropped, outcome.device, outcome.processes,
                                                 trained.rollbacks if isinstance(trained, Distilled) else {},
                                                 outcome.options.report_echo() if outcome.options else {},
                                                 trained.samples_per_second if isinstance(trained, Distilled) else {},
                                                 trained.outlook if isinstance(trained, Distilled) else None)
        report.exact_after, report.after = exact.after, Size.of(outcome.gm, performance=outcome.target.performance)
        report.seconds |= {f"distill_{k}": v for k, v in trained.seconds.items()}
        return report

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "version": self.version, "model": self.model, "target": self.target,
            "passes": [asdict(p) for p in self.passes], "rewrites": self.rewrites,
            "declined": {d.pass_name: list(d.reasons) for d in self.declined}, "notes": self.notes,
            "still_illegal": [asdict(n) for n in self.still_illegal], "needs_distillation": self.needs_distillation,
            "regions": [r.to_dict() for r in self.regions], "max_relative_error": self.max_relative_error,
            "verified_on": self.verified_on,
            "before": self.before.as_dict(), "after": self.after.as_dict(), "seconds": self.seconds,
        }
        if self.exact_after is not None:
            document["exact_after"] = self.exact_after.as_dict()
        if self.restructuring is not None:
            document["restructuring"] = self.restructuring.to_dict()
        if self.distillation is not None:
            document["distillation"] = self.distillation.to_dict()
        if self.onnx is not None:
            document["onnx"] = self.onnx
        if self.vela is not None:
            document["vela"] = self.vela
        return document

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def timing_table(self) -> str:
        lines = [f"{'pass':28} {'rewrites':>8} {'seconds':>8}"]
        lines += [f"{p.name:28} {p.rewrites:>8} {p.seconds:>8.4f}" for p in self.passes]
        return "\n".join(lines)

    def to_text(self) -> str:
        lines = [f"rewrites: {', '.join(f'{k} {v}' for k, v in self.rewrites.items() if v) or 'none'}",
                 f"max relative error vs teacher: {self.max_relative_error:.3g} on its {self.verified_on}"
                 + (" (exact rewrites)" if self.distillation else "")]
        if self.restructuring is not None:
            lines.append(self.restructuring.to_text())
        if self.distillation is not None:
            lines.append(self.distillation.to_text())
        lines.append(f"MACs {self.before.macs:,} -> {self.after.macs:,}; "
                     f"params {self.before.params:,} -> {self.after.params:,}"
                     + (f"; NN-Mass {self.before.nn_mass:,.0f} -> {self.after.nn_mass:,.0f}"
                        if self.before.nn_mass is not None and self.after.nn_mass is not None else ""))
        if self.before.estimate is not None and self.after.estimate is not None:
            lines.append(f"estimated on {self.target}: {self.before.estimate.to_text()}\n"
                         f"                    -> {self.after.estimate.to_text()}")
            lines.append(f"dearest nodes after: {self.after.estimate.dearest_text()}")
        if self.still_illegal:
            lines.append(f"{len(self.still_illegal)} nodes are still illegal on {self.target} and need distillation:")
            lines += [f"  {n.name} ({n.kind}): {n.reason}" for n in self.still_illegal]
            if self.regions and self.distillation is None:
                lines.append(f"{len(self.regions)} regions to distil (connected illegal nodes, cut at legal tensors):")
                lines += [f"  {r.to_text()}" for r in self.regions]
        else:
            lines.append(f"every node is legal on {self.target}")
        lines += [f"warning: region {r.region} spans {r.spans()}" for r in self.regions if len(r.blocks) > MANY_BLOCKS]
        return "\n".join(lines)
