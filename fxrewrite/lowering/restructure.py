"""The restructuring planner: fewer non-linearities where the chip's cost says it pays, as
Restructurable Activation Networks do, distilled label-free and kept only within an accuracy budget.

For a legal lowered graph and calibration data, every block a restructuring candidate finds
(fxrewrite/lowering/candidates/, one file each: every inverted residual for RAN-e's collapse and for
RAN-i's narrow pair, every k x k conv -> activation -> 1x1 conv for SESR's collapse) is considered
once, for every candidate that finds it and does not refuse it:
1. cost: the block's cycles on the target against each replacement's, each compiled alone by
   Vela where the caller gives a `BlockCycles` (fxrewrite.ship.vela_cost on the Ethos-U targets),
   else the target's estimate; a replacement that is not cheaper, or not legal, is dropped;
2. distil: each replacement starts from the teacher block's weights (`initialise`) and is fitted
   to the teacher block's own input and output on calibration inputs, label-free (`distil`: least
   squares for a collapse, Adam for the pair), and judged on held-out inputs against its start;
3. accept: in order of cycles saved per point of agreement lost (each replacement alone in the
   network; a knapsack's greedy order, so a large saving that costs much agreement does not spend
   the budget of many cheap ones), each replacement of a block not replaced yet is kept while the
   network's held-out top-1 agreement with the teacher, at its lower 95% bound over the held-out
   inputs (fxrewrite.metrics.agreement_lower_bound), stays within `accuracy_budget` points of 100%
   (the teacher agrees with itself); for outputs that are not class scores, while the held-out
   cosine stays within accuracy_budget / 100 of 1, and for class scores that carry no class
   information (the teacher gives one class for every input), the cosine of the outputs' deviations
   from the teacher's mean. Where the measure also compiles whole networks (`measure.network`: Vela on the Ethos-U targets), a
   replacement within the budget is kept only if the whole network with it, and with those kept
   before it, compiles to fewer cycles than without it (costed in context: compiled alone, a block
   does not show what it saves or costs the blocks around it), and the replacements kept are dropped
   together where the whole network gains less than NETWORK_MARGIN (two compiles of one network, with
   other calibration inputs or weights, differ by that much: measured 1-3% on MobileNetV2);
4. tune: the replacements taken are trained together in the network on the teacher's outputs
   (fxrewrite/lowering/joint_tuning.py), keeping the held-out agreement's best state.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, replace

import torch
from torch import fx, nn

from fxrewrite.cost import nodes_cycles
from fxrewrite.distill.options import DEFAULT_ACCURACY_BUDGET
from fxrewrite.distill.sizing import module_cost
from fxrewrite.ir import annotate_shapes, tensor_shape
from fxrewrite.legality import check
from fxrewrite.metrics import agreement_lower_bound, l2_relative_error, score_between
from fxrewrite.lowering.joint_tuning import agreement_with, outputs_of, tune_jointly
from fxrewrite.lowering.planner import extract_subgraph, products_signature
from fxrewrite.lowering.candidates import CANDIDATES, Candidate, Collapsible
from fxrewrite.quant import CalibrationData
from fxrewrite.rewrite.verify import NodeRecorder
from fxrewrite.target import Target

#: calibration inputs the least-squares fits read at most (each block's tensors are kept)
FIT_SAMPLES = 512
#: held-out inputs the acceptance reads at most
JUDGE_SAMPLES = 1000
BATCH = 64
#: the least share of the whole network's cycles the replacements must save together (module docstring)
NETWORK_MARGIN = 0.03


@dataclass(frozen=True)
class Considered:
    """One block the planner looked at, and what it chose."""

    block: str
    rewrite: str
    cycles_before: float
    cycles_after: float
    #: held-out L2 relative error (fxrewrite.metrics) of the replacement against the teacher block, initialised
    #: and distilled
    error_initial: float | None = None
    error_distilled: float | None = None
    chosen: bool = False
    why: str = ""


#: a replacement considered: (the block's output node, the rewrite)
Key = tuple[str, str]
#: a block's cycles: (module, an input of its shape, a signature that names its structure) -> cycles
BlockCycles = Callable[[nn.Module, torch.Tensor, Hashable], float]


@dataclass
class Restructured:
    gm: fx.GraphModule
    considered: list[Considered]
    #: points of held-out top-1 agreement with the teacher the restructuring may cost
    accuracy_budget: float
    #: held-out agreement (top-1, or cosine for other outputs) of the result with the teacher
    agreement: float | None = None
    #: where the cycles came from
    costed_by: str = "the target's estimate"
    #: held-out agreement with each replacement fitted alone, before they were tuned together
    agreement_separately: float | None = None
    #: why the teacher's class scores carry no class information ('' where they do, or are not class scores)
    vacuous: str = ""
    #: what `agreement` measures
    measure: str = "top-1 agreement"
    #: the input shape the cycles are for (the deployment shape, or the shapes recorded on the graph)
    costed_at: str = ""
    #: the agreement the budget is held to: the lower 95% bound of `agreement` over the held-out inputs
    #: (fxrewrite.metrics.agreement_lower_bound); None where the measure is a cosine
    agreement_bound: float | None = None
    #: the whole network's cycles, the teacher's and with the replacements kept, where the measure
    #: compiles whole networks (None where blocks alone were costed)
    network_cycles: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        return {"budget_points": self.accuracy_budget, "agreement": self.agreement, "measure": self.measure,
                "agreement_before_joint_tuning": self.agreement_separately, "costed_by": self.costed_by,
                "costed_at": self.costed_at, "agreement_lower_bound": self.agreement_bound,
                "network_cycles": list(self.network_cycles) if self.network_cycles else None,
                "blocks": [asdict(c) for c in self.considered]} | (
                    {"no_class_information": self.vacuous} if self.vacuous else {})

    def to_text(self) -> str:
        chosen = [c for c in self.considered if c.chosen]
        blocks = len({c.block for c in self.considered})
        lines = [f"restructuring (accuracy budget {self.accuracy_budget:g} points, cycles by {self.costed_by} at "
                 f"{self.costed_at}): "
                 f"{len(chosen)} of {blocks} blocks replaced"
                 + (f", held-out {self.measure} {self.agreement:.2%}" if self.agreement is not None else "")
                 + (f" ({self.agreement_separately:.2%} before the replacements were tuned together)"
                    if self.agreement_separately is not None else "")
                 + (f"; at least {self.agreement_bound:.2%} at 95% confidence, what the budget holds"
                    if self.agreement_bound is not None else "")
                 + ("; whole network {:,.0f} -> {:,.0f} cycles".format(*self.network_cycles)
                    if self.network_cycles else "")]
        if self.vacuous:
            lines.append(f"  no top-1 agreement: {self.vacuous}, so any replacement would agree 100%; the budget is "
                         f"spent on the {self.measure} instead")
        for c in self.considered:
            errors = (f"; held-out L2 relative error {c.error_initial:.3g} initialised, {c.error_distilled:.3g} "
                      "distilled" if c.error_distilled is not None else "")
            lines.append(f"  {c.block} ({c.rewrite}): {c.cycles_before:,.0f} -> {c.cycles_after:,.0f} cycles{errors}; "
                         f"{'chosen' if c.chosen else 'kept: ' + c.why}")
        return "\n".join(lines)


def _samples(batches: tuple[torch.Tensor, ...], limit: int) -> torch.Tensor:
    return torch.cat(batches)[:limit]


def _record(gm: fx.GraphModule, names: set[str], inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    values: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    with torch.no_grad():
        for batch in inputs.split(BATCH):
            recorder = NodeRecorder(gm, names)
            recorder.run(batch)
            for name in names:
                values[name].append(recorder.values[name])
    return {name: torch.cat(parts) for name, parts in values.items()}


def _relative_error(module: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor) -> float:
    return l2_relative_error(outputs_of(module, inputs), outputs)


def replacement_name(output_name: str) -> str:
    """The submodule that holds the replacement of the block ending at `output_name`."""
    return f"restructured_{output_name}"


def swapped(gm: fx.GraphModule, blocks: dict[str, tuple[Collapsible, nn.Module]]) -> fx.GraphModule:
    """A copy of `gm` with each block (by output name) replaced by its replacement's graph inlined,
    written as the vocabulary's ops (activations, convs, adds) so that the target judges each."""
    result = copy.deepcopy(gm)
    graph = result.graph
    by_name = {node.name: node for node in graph.nodes}
    for output_name, (block, module) in blocks.items():
        output = by_name[output_name]
        prefix = replacement_name(output_name)
        result.add_submodule(prefix, copy.deepcopy(module))
        inlined = fx.symbolic_trace(module).graph
        for node in inlined.nodes:
            if node.op in ("call_module", "get_attr"):
                node.target = f"{prefix}.{node.target}"
        [placeholder] = [node for node in inlined.nodes if node.op == "placeholder"]
        with graph.inserting_before(output):
            # the block's input may be an earlier block's output, replaced already
            replacement = graph.graph_copy(inlined, {placeholder: by_name[block.input.name]})
        output.replace_all_uses_with(replacement)
        by_name[output_name] = replacement
        for node in reversed([by_name[n.name] for n in block.nodes]):
            if not node.users:
                graph.erase_node(node)
    graph.eliminate_dead_code()
    result.delete_all_unused_submodules()
    result.recompile()
    return result


def _legal(module: nn.Module, sample: torch.Tensor, target: Target) -> str:
    graph = annotate_shapes(fx.symbolic_trace(module), (sample,))
    return "; ".join(f"{row.kind}: {row.reason}" for row in check(graph, target).illegal)


def _block_cycles(block: Collapsible, sample: torch.Tensor, costed: fx.GraphModule, by_name: dict[str, fx.Node],
                  target: Target, measure: BlockCycles | None) -> float:
    """The teacher block's cycles in `costed` (the graph with the shapes it is costed at, its nodes
    `by_name`), measured where `measure` is given, else estimated."""
    nodes = [by_name[n.name] for n in block.nodes]
    if measure is None:
        return nodes_cycles(nodes, target.performance)
    teacher, _ = extract_subgraph(costed, [n for n in nodes if n.op != "get_attr"])
    return measure(teacher, sample, ("teacher", products_signature(nodes), tuple(sample.shape)))


def _replacement_cycles(block: Collapsible, rewrite: str, module: nn.Module, sample: torch.Tensor, target: Target,
                        measure: BlockCycles | None) -> float:
    if measure is None:
        return module_cost(module, (sample,), target).cycles
    with torch.no_grad():
        shapes = (tuple(sample.shape), tuple(module(sample).shape))
    return measure(module, sample, ("replacement", rewrite, *module.signature(), block.kernel, block.stride,
                                    block.residual, *shapes))


def blocks_and_takers(gm: fx.GraphModule) -> list[tuple[Collapsible, list[Candidate]]]:
    """Every block some candidate finds in `gm`, once, with the candidates that find it and do not
    refuse it, in the registry's order; a block inside one found before is left out."""
    found: dict[str, tuple[Collapsible, list[Candidate]]] = {}
    claimed: set[fx.Node] = set()
    for candidate in CANDIDATES:
        for block in candidate.blocks(gm):
            key = block.output.name
            if key not in found and claimed & set(block.nodes):
                continue  # inside a block considered already
            if key not in found:
                claimed |= set(block.nodes)
                found[key] = (block, [])
            if found[key][0].nodes == block.nodes and not candidate.refusal(block):
                found[key][1].append(candidate)
    return list(found.values())


def acceptance_order(rows: dict[Key, Considered], alone: dict[Key, float], samples: int) -> list[Key]:
    """The rows by cycles saved per point of agreement each loses alone (`alone`: its agreement; a
    loss below one sample in `samples` counts as one sample), most first."""
    def saved_per_point(key: Key) -> float:
        return (rows[key].cycles_before - rows[key].cycles_after) / max(1.0 - alone[key], 1.0 / samples)

    return sorted(rows, key=saved_per_point, reverse=True)


def restructure(gm: fx.GraphModule, target: Target, data: CalibrationData,
                accuracy_budget: float = DEFAULT_ACCURACY_BUDGET,
                seed: int = 0, measure: BlockCycles | None = None,
                deploy_shape: tuple[int, ...] | None = None) -> Restructured:
    """`gm` (legal on `target`, shapes recorded at batch 1) with the replacements that pay (module
    docstring); `measure` gives the cycles where the estimate should not (its `describe()` names it).
    With `deploy_shape` the cycles are those of the network run at that input shape (a resolution-free
    network calibrated at another size), while agreement is judged on the calibration data."""
    considered: dict[Key, Considered] = {}
    candidates: dict[Key, tuple[Collapsible, nn.Module]] = {}
    costed = gm if deploy_shape is None else annotate_shapes(copy.deepcopy(gm), (torch.zeros(deploy_shape),))
    costed_nodes = {node.name: node for node in costed.graph.nodes}
    recorded = tuple(tensor_shape(next(n for n in gm.graph.nodes if n.op == "placeholder")))
    costed_at = (f"the deployment shape {'x'.join(map(str, deploy_shape))}, agreement judged on the calibration "
                 f"inputs at {'x'.join(map(str, recorded))}" if deploy_shape is not None else
                 f"the input shape {'x'.join(map(str, recorded))}")
    for block, takers in blocks_and_takers(gm):
        sample = torch.zeros(tensor_shape(block.input))
        cost_sample = torch.zeros(tensor_shape(costed_nodes[block.input.name]))
        built = []
        for candidate in takers:
            torch.manual_seed(seed)
            module = candidate.build(block)
            illegal = _legal(module, sample, target) or (_legal(module, cost_sample, target)
                                                         if deploy_shape is not None else "")
            built.append((candidate.name, module, illegal))
        # the block is compiled only where some replacement is legal, and then compared by the same measure
        measured = measure if any(not illegal for *_, illegal in built) else None
        before = _block_cycles(block, cost_sample, costed, costed_nodes, target, measured)
        for rewrite, module, illegal in built:
            after = _replacement_cycles(block, rewrite, module, cost_sample, target, None if illegal else measured)
            key, row = (block.output.name, rewrite), Considered(block.output.name, rewrite, before, after)
            if illegal:
                considered[key] = replace(row, why=f"not legal on {target.name}: {illegal}")
            elif after >= before:
                considered[key] = replace(row, why="not cheaper on the target")
            else:
                considered[key], candidates[key] = row, (block, module)
    def costed_by() -> str:
        return measure.describe() if hasattr(measure, "describe") else "the target's estimate"

    if not candidates:
        return Restructured(gm, list(considered.values()), accuracy_budget, costed_by=costed_by(), costed_at=costed_at)
    held = _samples(data.held_out, JUDGE_SAMPLES)
    teacher = outputs_of(gm, held)
    scored = score_between(teacher, teacher)
    judged_by = dict(vacuous=scored.vacuous, measure="top-1 agreement" if scored.agreement is not None else
                     "cosine of the outputs' deviations from the teacher's mean" if scored.vacuous else "cosine")
    train = _samples(data.train, FIT_SAMPLES)
    names = {n for block, _ in candidates.values() for n in (block.input.name, block.output.name)}
    seen, judged = _record(gm, names, train), _record(gm, names, held)
    for key, (block, module) in candidates.items():
        torch.manual_seed(seed)
        module.initialise(seen[block.input.name])
        initial = _relative_error(module, judged[block.input.name], judged[block.output.name])
        module.distil(seen[block.input.name], seen[block.output.name])
        distilled = _relative_error(module, judged[block.input.name], judged[block.output.name])
        considered[key] = replace(considered[key], error_initial=initial, error_distilled=distilled)
    floor = 1.0 - accuracy_budget / 100
    top1 = scored.agreement is not None

    def bound(score: float) -> float:  # what the budget holds: top-1 agreement at 95% confidence
        return agreement_lower_bound(score, len(held)) if top1 else score

    accepted: dict[str, tuple[Collapsible, nn.Module]] = {}
    accepted_by: dict[str, str] = {}
    agreement = None
    network = getattr(measure, "network", None)  # costing in context (module docstring, step 3)
    whole_input = torch.zeros(deploy_shape or recorded)
    # the whole network's cycles: the teacher's (compiled when first asked), and with what is kept so far
    baseline: float | None = None
    current: float | None = None
    alone = {key: agreement_with(swapped(gm, {key[0]: candidates[key]}), held, teacher) for key in candidates}
    for key in acceptance_order({key: considered[key] for key in candidates}, alone, len(held)):
        name = key[0]
        if name in accepted:
            considered[key] = replace(considered[key], why=f"the block is replaced already ({accepted_by[name]})")
            continue
        trial = swapped(gm, accepted | {name: candidates[key]})
        score = agreement_with(trial, held, teacher)
        if bound(score) >= floor:
            if network is not None:
                if baseline is None:
                    baseline = current = network(costed, whole_input)
                cycles = network(trial if costed is gm else swapped(costed, accepted | {name: candidates[key]}),
                                 whole_input)
                if cycles >= current:
                    considered[key] = replace(considered[key], why=f"not faster in the whole network ({cycles:,.0f} "
                                                                    f"cycles with it, {current:,.0f} without)")
                    continue
                current = cycles
            accepted[name], accepted_by[name], agreement = candidates[key], key[1], score
            considered[key] = replace(considered[key], chosen=True)
        else:
            considered[key] = replace(considered[key], why=f"held-out {judged_by['measure']} would fall to "
                                                            f"{score:.2%}" + (f" (at least {bound(score):.2%} at 95% "
                                                                              "confidence)" if top1 else "")
                                                            + f", below the budget's {floor:.2%}")
    if accepted and baseline is not None and current > baseline * (1 - NETWORK_MARGIN):
        why = (f"the whole network would gain only x{baseline / current:.3f} ({baseline:,.0f} -> {current:,.0f} "
               f"cycles), less than the {NETWORK_MARGIN:.0%} two compiles of one network differ by")
        for name, rewrite in accepted_by.items():
            considered[(name, rewrite)] = replace(considered[(name, rewrite)], chosen=False, why=why)
        accepted, current, agreement = {}, baseline, None
    network_cycles = (baseline, current) if baseline is not None else None
    if not accepted:
        return Restructured(gm, list(considered.values()), accuracy_budget, agreement, costed_by(), **judged_by,
                            costed_at=costed_at, network_cycles=network_cycles)
    final = swapped(gm, accepted)
    train_all = torch.cat(data.train)
    separately, agreement = tune_jointly(final, [final.get_submodule(replacement_name(n)) for n in accepted], train_all,
                                         outputs_of(gm, train_all), held, teacher, seed)
    return Restructured(annotate_shapes(final, (held[:1],)), list(considered.values()), accuracy_budget, agreement,
                        costed_by(), separately, **judged_by, costed_at=costed_at,
                        agreement_bound=bound(agreement) if top1 else None,
                        network_cycles=network_cycles)
