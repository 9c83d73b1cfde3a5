"""Pipelines: spec strings, ordering contracts, and the instruments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fxrewrite.errors import FxrewriteError, PassContractError, UsageError, VerificationError
from fxrewrite.passes import registered_passes
from fxrewrite.rewrite import (Instruments, PassContext, PassManager, PatternPass, Rule, RuleSet, canonical_order,
                               check_contracts, op, parse_pipeline)

from conftest import symbolic


def test_spec_strings_and_unknown_names():
    assert [p.name for p in parse_pipeline("fold-batch-norm, conv1x1-as-3x3")] == ["fold-batch-norm", "conv1x1-as-3x3"]
    with pytest.raises(UsageError, match="unknown pass 'fold-bn'.*passes are add-as-concat-conv"):
        parse_pipeline("fold-bn")


def test_a_wrong_order_is_refused_with_a_sentence():
    with pytest.raises(UsageError, match="pass add-as-concat-conv must run before conv1x1-as-3x3"):
        parse_pipeline("conv1x1-as-3x3,add-as-concat-conv")


def test_canonical_order_honours_every_contract():
    order = [p.name for p in canonical_order(registered_passes().values())]
    for p in registered_passes().values():
        for later in p.must_precede:
            assert order.index(p.name) < order.index(later)


def model_and_input():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Dropout(0.2)).eval(), torch.randn(1, 3, 9, 9)


def test_dump_ir_writes_numbered_before_and_after_only_for_passes_that_changed(tmp_path):
    model, x = model_and_input()
    gm = symbolic(model, x)
    PassManager(parse_pipeline("conv1x1-as-3x3,decompose-grouped-conv,remove-noops"),
                Instruments(dump_ir=tmp_path)).run(gm, PassContext((x,)))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["00-00-conv1x1-as-3x3.after.py", "00-00-conv1x1-as-3x3.before.py",
                     "00-02-remove-noops.after.py", "00-02-remove-noops.before.py"]
    before = (tmp_path / "00-02-remove-noops.before.py").read_text()
    after = (tmp_path / "00-02-remove-noops.after.py").read_text()
    assert 'getattr(self, "2")' in before and 'getattr(self, "2")' not in after


def broken_pass(replace) -> PatternPass:
    return PatternPass("break-relu", "a deliberately wrong rewrite", RuleSet((Rule("relu", op("relu", name="r"), replace),)),
                       frozenset({"tanh"}))


def test_verify_each_stops_at_the_pass_that_broke_the_maths():
    model, x = model_and_input()
    gm = symbolic(model, x)
    wrong = broken_pass(lambda m, rw: rw.module(m["r"].node, "tanh", nn.Tanh(), m["r"].inputs[0]))
    manager = PassManager([registered_passes()["conv1x1-as-3x3"], wrong], Instruments(verify_each=model))
    with pytest.raises(VerificationError, match="after pass break-relu the graph differs from the teacher"):
        manager.run(gm, PassContext((x,)))


def test_a_pass_that_raises_leaves_a_reproducer(tmp_path):
    model, x = model_and_input()
    gm = symbolic(model, x)

    def explode(match, rewriter):
        raise ValueError("boom")

    manager = PassManager([broken_pass(explode)], Instruments(reproducer_dir=tmp_path))
    with pytest.raises(FxrewriteError, match="pass break-relu failed: ValueError: boom; reproducer written to"):
        manager.run(gm, PassContext((x,)))
    text = (tmp_path / "break-relu-reproducer.py").read_text()
    assert "# pipeline: --passes break-relu" in text and "def forward" in text


def relu_pass(name: str, produces: set[str], must_precede: tuple[str, ...] = ()) -> PatternPass:
    keep_input = lambda match, rewriter: match["r"].inputs[0]  # noqa: E731 (never run: contracts only)
    return PatternPass(name, "a pass rooted on relu", RuleSet((Rule("relu", op("relu", name="r"), keep_input),)),
                       frozenset(produces), must_precede=must_precede)


def test_an_unjustified_edge_is_refused_with_a_sentence():
    conv1x1 = registered_passes()["conv1x1-as-3x3"]
    with pytest.raises(PassContractError, match="relu-as-tanh declares it must run before conv1x1-as-3x3, but it "
                                                "produces or reads nothing conv1x1-as-3x3 rewrites"):
        PassManager([relu_pass("relu-as-tanh", {"tanh"}, ("conv1x1-as-3x3",)), conv1x1])


def test_a_missing_edge_is_refused_with_a_sentence():
    conv1x1 = registered_passes()["conv1x1-as-3x3"]
    with pytest.raises(PassContractError, match="relu-as-conv produces or reads {conv2d} that conv1x1-as-3x3 "
                                                "rewrites.*add 'conv1x1-as-3x3' to the must_precede of relu-as-conv"):
        PassManager([relu_pass("relu-as-conv", {"conv2d"}), conv1x1])
    PassManager([relu_pass("relu-as-conv", {"conv2d"}, ("conv1x1-as-3x3",)), conv1x1])


def test_a_cycle_of_edges_is_refused():
    first = relu_pass("first", {"relu"}, ("second",))
    second = relu_pass("second", {"relu"}, ("first",))
    with pytest.raises(PassContractError, match="form a cycle"):
        PassManager([first, second])


def test_a_pass_that_feeds_another_one_way_must_come_first_in_a_spec():
    with pytest.raises(UsageError, match="pass avg-pool-as-conv must run before decompose-large-kernel"):
        parse_pipeline("decompose-large-kernel,avg-pool-as-conv")
    parse_pipeline("conv1x1-as-3x3,decompose-grouped-conv")  # conv -> conv passes feed each other: either order


class IgnoresItsInput(nn.Module):
    """Its output is the same for every input (as a randomly initialised googlenet's is)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4).eval()  # folded on npu-generic: the relu then reads a rewritten node

    def forward(self, x):
        return self.second(torch.relu(self.norm(self.first(x)))) * 0.0 + 1.0


def test_a_teacher_that_ignores_its_input_is_verified_on_intermediate_tensors():
    model, x = IgnoresItsInput().eval(), torch.randn(1, 3, 9, 9)
    gm = symbolic(model, x)
    wrong = broken_pass(lambda m, rw: rw.module(m["r"].node, "tanh", nn.Tanh(), m["r"].inputs[0]))
    manager = PassManager([wrong], Instruments(verify_each=symbolic(model, x)))
    with pytest.raises(VerificationError, match="after pass break-relu .* on its .* intermediate tensors"):
        manager.run(gm, PassContext((x,)))


def test_the_report_says_which_tensors_the_error_compares():
    from fxrewrite import lower
    model, x = IgnoresItsInput().eval(), torch.randn(1, 3, 9, 9)
    report = lower(symbolic(model, x), (x,), target="npu-generic").report
    assert report.verified_on == "outputs and 1 intermediate tensors" and report.max_relative_error < 1e-5


def test_verification_compares_where_rewritten_tensors_are_read_and_catches_a_wrong_one(monkeypatch):
    import importlib
    verification = importlib.import_module("fxrewrite.rewrite.verify")
    model, x = IgnoresItsInput().eval(), torch.randn(1, 3, 9, 9)
    teacher, lowered = symbolic(model, x), symbolic(model, x)
    relu = next(n for n in lowered.graph.nodes if n.target is torch.relu)
    with lowered.graph.inserting_before(relu):
        wrong = lowered.graph.call_function(torch.tanh, relu.args)
    relu.replace_input_with(relu.args[0], wrong)
    lowered.recompile()
    # only the relu reads a changed operand; the output ignores the input, so only the relu can tell
    assert verification._frontier(lowered, teacher) == {relu.name}
    assert verification.verify(lowered, teacher, (x,), seed=0).max_relative_error > 0.1


def test_a_pass_with_nothing_to_root_on_is_skipped_before_any_work(monkeypatch):
    from fxrewrite.passes import registered_passes
    from fxrewrite.rewrite import PassContext, PassManager, PatternPass

    x = torch.randn(1, 3, 8, 8)
    gm = symbolic(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), x)
    softmax, collapse = registered_passes()["softmax-as-exp"], registered_passes()["collapse-linear-convs"]
    ran = []
    original = PatternPass.run
    monkeypatch.setattr(PatternPass, "run", lambda self, gm, ctx, **kw: ran.append(self.name) or original(self, gm, ctx, **kw))
    results = PassManager([softmax, collapse]).run(gm, PassContext((x,)))
    assert [r.name for r in results] == ["softmax-as-exp", "collapse-linear-convs"]
    assert ran == ["collapse-linear-convs"]  # the graph has a conv but no softmax


def test_a_tensor_an_in_place_op_changes_later_is_compared_as_it_was_computed():
    """torchvision's SiLU(inplace=True) overwrites the conv it follows; rewritten as x * sigmoid(x)
    it no longer does, and the comparison must not mistake that for an error."""
    from fxrewrite import lower
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.SiLU(inplace=True)).eval()
    x = torch.randn(1, 3, 9, 9)
    report = lower(symbolic(model, x), (x,), target="npu-generic").report
    assert report.rewrites["silu-as-sigmoid-mul"] == 1 and "intermediate" in report.verified_on
    assert report.max_relative_error < 1e-5


def test_a_pipeline_run_leaves_no_layer_that_no_node_calls():
    # passes leave replaced layers behind (cleaning every pass cost a tenth of a second on large
    # graphs); the manager deletes them once at the end of the run
    model, x = model_and_input()
    gm = symbolic(model, x)
    PassManager(parse_pipeline("conv1x1-as-3x3,remove-noops")).run(gm, PassContext((x,)))
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    assert {name for name, _ in gm.named_children()} == called
    assert torch.allclose(gm(x), model(x), atol=1e-6)


def test_a_contract_naming_no_pass_is_an_error_not_dropped():
    typo = relu_pass("relu-as-conv", {"conv2d"}, must_precede=("conv1x1-as-3x", ))
    with pytest.raises(PassContractError, match="relu-as-conv: its must_precede names 'conv1x1-as-3x', which is no pass"):
        check_contracts([typo])
