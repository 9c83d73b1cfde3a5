"""One verdict per node: `check`, the picture, the regions, the pass filter and the planner all ask
`Target.verdict`, so they can never disagree."""

from __future__ import annotations

import torch
from torch import fx, nn

from fxrewrite import load_and_capture
from fxrewrite.distill import find_regions
from fxrewrite.export import save_pt2
from fxrewrite.ir import annotate_shapes, is_quantized_graph, op_view
from fxrewrite.legality import check
from fxrewrite.quant import calibrate, fold_for_quantization, materialize, quantize_modules, scheme_for
from fxrewrite.rewrite import Decline, Match, PassContext, ReplacementJudge
from fxrewrite.target import Target, Verdict
from fxrewrite.viz import to_dot

from conftest import symbolic

ARCHNET = Target.load("archnet")


def conv_reading_a_float_input(tmp_path) -> tuple[fx.GraphModule, str]:
    """A 4-bit network saved as .pt2 and loaded back (ATen forms), whose second conv reads its input
    without quantize-dequantize; returns the graph and that conv's node name."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * 5 * 5, 10)).eval()
    x = torch.rand(16, 1, 5, 5)
    model = fold_for_quantization(net, (x,))
    quantize_modules(model, scheme_for(ARCHNET, 4, 4))
    calibrate(model, lambda: model(x))
    gm = annotate_shapes(materialize(model), (x,))
    second = [n for n in gm.graph.nodes if op_view(n).kind == "conv2d"][1]
    quantized_input = second.args[0]
    second.replace_input_with(quantized_input, quantized_input.args[0])
    gm.graph.eliminate_dead_code()
    gm.recompile()
    save_pt2(gm, (x[:1],), tmp_path / "q.pt2")
    loaded = load_and_capture(str(tmp_path / "q.pt2"))
    convs = [n for n in loaded.graph.nodes if op_view(n).kind == "conv2d"]
    assert all(str(n.target).startswith("aten.") for n in convs)
    return loaded, convs[1].name


def test_a_float_operand_in_a_quantized_pt2_is_illegal_everywhere_alike(tmp_path):
    gm, name = conv_reading_a_float_input(tmp_path)
    assert is_quantized_graph(gm.graph), "the aten.* fake-quant forms make the graph quantized"
    node = next(n for n in gm.graph.nodes if n.name == name)

    report = check(gm, ARCHNET)
    assert [r.name for r in report.illegal] == [name]
    assert "conv2d reads float32 input in a quantized graph" in report.illegal[0].reason

    picture = to_dot(gm, ARCHNET).source
    start = picture.index(f"\t{name} [label=")
    statement = picture[start:picture.index("]", start)]
    assert "reads float32 input" in statement and "#ffcdd2" in statement

    regions = find_regions(gm, ARCHNET)
    assert [[n.name for n in r.nodes if op_view(n).kind == "conv2d"] for r in regions] == [[name]]
    assert PassContext((torch.rand(1, 1, 5, 5),), ARCHNET).is_candidate(node)


def test_every_caller_takes_the_verdict_from_target_verdict(monkeypatch):
    """Mark ReLUs illegal through Target.verdict alone: every consumer must follow."""
    def verdict(self: Target, node: fx.Node) -> Verdict:
        return Verdict(False, "marked by the test") if op_view(node).kind == "relu" else Verdict(True)

    monkeypatch.setattr(Target, "verdict", verdict)
    x = torch.randn(1, 3, 6, 6)
    gm = symbolic(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)), x)
    relu = next(n for n in gm.graph.nodes if op_view(n).kind == "relu")

    assert [(r.name, r.reason) for r in check(gm, ARCHNET).illegal] == [(relu.name, "marked by the test")]
    assert "marked by the test" in to_dot(gm, ARCHNET).source
    assert [[n.name for n in r.nodes] for r in find_regions(gm, ARCHNET)] == [[relu.name]]
    context = PassContext((x,), ARCHNET)
    assert [n.name for n in gm.graph.nodes if context.is_candidate(n)] == [relu.name]
    judged = ReplacementJudge(ARCHNET)(type("Pass", (), {"name": "p", "trigger": "illegal"}), relu,
                                      Match({}, (relu,)), [relu])
    assert isinstance(judged, Decline) and "marked by the test" in judged.reason


def test_views_and_verdicts_follow_a_node_whose_module_or_inputs_change():
    """Views and verdicts are memoized per node state: swapping the module behind a name (as
    distillation does) or rewiring an input must be seen, not answered from the memo."""
    x = torch.randn(1, 3, 8, 8)
    gm = symbolic(nn.Sequential(nn.Conv2d(3, 3, 5, padding=2), nn.Conv2d(3, 3, 3, padding=1)).eval(), x)
    annotate_shapes(gm, (x,))
    first, second = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert op_view(first).attrs["kernel"] == (5, 5) and not ARCHNET.verdict(first).legal
    gm.add_submodule(str(first.target), nn.Conv2d(3, 3, 3, padding=1))
    assert op_view(first).attrs["kernel"] == (3, 3) and ARCHNET.verdict(first).legal
    placeholder = next(iter(gm.graph.nodes))
    assert op_view(second).inputs == (first,)
    second.replace_input_with(first, placeholder)
    assert op_view(second).inputs == (placeholder,)
