"""ONNX export: Q/DQ in the target's formats, the op check, onnxruntime against torch, the CLI."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import fxrewrite.ship.onnx_file as onnx_file
from fxrewrite.errors import OnnxRefusal, VerificationError
from fxrewrite.frontend import capture
from fxrewrite.quant import materialize
from fxrewrite.ship import onnx_kinds, write_onnx
from fxrewrite.target import Target

from test_quant import quantized, small_net
import zoo

ARCHNET = Target.load("archnet")


def initializer_types(path) -> set[str]:
    return {TensorProto.DataType.Name(i.data_type) for i in onnx.load(path).graph.initializer}


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_a_float_graph_is_plain_onnx_with_a_free_batch_and_agrees_with_torch(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 5)).eval()
    x = torch.randn(1, 3, 17, 17)
    shipped = write_onnx(capture(net, (x,)), (x,), tmp_path / "f.onnx", Target.load("npu-generic"))
    assert shipped.op_types == {"Conv": 1, "Relu": 1, "MaxPool": 1, "Reshape": 1, "Gemm": 1}
    assert shipped.max_relative_error <= 1e-5 and shipped.quantized_tensors == 0
    model = onnx.load(tmp_path / "f.onnx")
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    batch = torch.randn(7, 3, 17, 17)
    np.testing.assert_allclose(run_onnx(tmp_path / "f.onnx", batch), net(batch).detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("wbits", "abits", "types"), [(4, 4, {"INT4", "UINT4"}), (2, 4, {"INT4", "UINT4"}),
                                                        (8, 8, {"INT8", "UINT8"})])
def test_a_quantized_graph_is_qdq_in_the_formats_integer_types_within_one_step(wbits, abits, types, tmp_path):
    model, x = quantized(small_net(), wbits, abits)
    shipped = write_onnx(materialize(model), (x[:1],), tmp_path / "q.onnx", ARCHNET)
    assert shipped.op_types["QuantizeLinear"] == shipped.op_types["DequantizeLinear"] == 6
    assert types <= initializer_types(tmp_path / "q.onnx")  # the zero points carry the storage type
    assert shipped.quantized_tensors == 3 and shipped.max_steps <= 1.001  # the activations of 2 convs and a linear
    weights = [i for i in onnx.load(tmp_path / "q.onnx").graph.initializer if i.name.endswith("_weight")]
    assert weights and all(i.data_type == TensorProto.FLOAT for i in weights)  # on their grid, read through Q/DQ


def test_a_wrong_quantization_in_the_file_is_caught_and_nothing_is_written(tmp_path, monkeypatch):
    from onnxscript import opset21 as op

    def twice_the_scale(x, scale, zero_point, axis, qmin, qmax):
        zero = op.Cast(zero_point, to=onnx.TensorProto.UINT8 if qmin >= 0 else onnx.TensorProto.INT8)
        wide = op.Mul(scale, op.Constant(value_float=2.0))
        return op.DequantizeLinear(op.QuantizeLinear(x, wide, zero, axis=axis), wide, zero, axis=axis)

    monkeypatch.setattr(onnx_file, "to_onnx_ops", twice_the_scale)
    model, x = quantized(small_net(), 8, 8)
    with pytest.raises(VerificationError, match="onnxruntime computes the exported graph differently"):
        write_onnx(materialize(model), (x[:1],), tmp_path / "q.onnx", ARCHNET)
    assert list(tmp_path.iterdir()) == []


def test_a_node_the_target_does_not_run_is_refused_with_its_reason(tmp_path):
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(OnnxRefusal, match="node_add.*Add is the vocabulary's add, which target archnet does not"):
        write_onnx(capture(Residual().eval(), (x,)), (x,), tmp_path / "r.onnx", ARCHNET)
    assert list(tmp_path.iterdir()) == []


def test_onnx_op_types_map_back_to_the_vocabulary():
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 6], np.zeros(24, np.float32))
    bias = helper.make_tensor("b", TensorProto.FLOAT, [6], np.zeros(6, np.float32))
    size = helper.make_tensor("size", TensorProto.INT64, [2], [-1, 12])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"], name="fc"),
             helper.make_node("Add", ["xw", "b"], ["y"], name="fc_bias"),
             helper.make_node("MatMul", ["y", "y_t"], ["scores"], name="attention"),
             helper.make_node("Reshape", ["y", "size"], ["flat"], name="flatten"),
             helper.make_node("Shape", ["flat"], ["shape"], name="size_of"),
             helper.make_node("LayerNormalization", ["y", "b"], ["normed"], name="norm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 4]),
                                           helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [2, 6, 2])],
                              [helper.make_tensor_value_info("normed", TensorProto.FLOAT, None)],
                              initializer=[weight, bias, size])
    kinds = {n.name: (n.kind, n.reason) for n in onnx_kinds(helper.make_model(graph))}
    assert kinds["fc"][0] == kinds["fc_bias"][0] == "linear"
    assert kinds["attention"][0] == "matmul" and kinds["flatten"][0] == "flatten" and kinds["size_of"][0] == "shape"
    assert kinds["norm"] == (None, "ONNX op type LayerNormalization has no counterpart in the op vocabulary")


def test_lower_writes_onnx_and_export_converts_a_saved_program(tmp_path, run_cli):
    small = ("--input-shape", "1,3,16,16", "--calib", "synthetic", "--calib-size", "20", "--wbits", "4", "--abits", "4")
    code, stdout, stderr = run_cli("lower", f"{zoo.__file__}:legal_on_archnet", "-t", "archnet", *small,
                                   "-o", str(tmp_path / "q.onnx"), "--report", str(tmp_path / "r.json"))
    assert code == 0, stderr
    assert "QuantizeLinear" in stdout and "onnxruntime vs torch" in stdout
    assert json.loads((tmp_path / "r.json").read_text())["onnx"]["max_steps"] <= 1.001
    code, _, stderr = run_cli("lower", f"{zoo.__file__}:legal_on_archnet", "-t", "archnet", *small,
                              "-o", str(tmp_path / "q.pt2"))
    assert code == 0, stderr
    code, stdout, stderr = run_cli("export", str(tmp_path / "q.pt2"), "-o", str(tmp_path / "e.onnx"))
    assert code == 0 and "wrote" in stdout and "not checked" not in stdout, stderr  # the .pt2 names archnet
    assert {"INT4", "UINT4"} <= initializer_types(tmp_path / "e.onnx")
    code, _, stderr = run_cli("export", str(tmp_path / "q.pt2"), "-o", str(tmp_path / "n.onnx"), "-t", "npu-generic")
    assert code == 0, stderr  # npu-generic runs conv2d, relu, linear too (formats are `check`'s business)


def test_without_the_onnx_extra_an_onnx_output_is_one_clear_error(tmp_path, run_cli, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else find_spec(name, *a))
    code, _, stderr = run_cli("lower", f"{zoo.__file__}:legal_on_archnet", "-t", "archnet", "--input-shape", "1,3,16,16",
                              "-o", str(tmp_path / "m.onnx"))
    assert code == 2 and stderr.strip() == ("fxrewrite: error: writing ONNX needs onnxscript: install fxrewrite's onnx "
                                            "extra (pip install 'fxrewrite[onnx]', or pip install onnx onnxscript "
                                            "onnxruntime)")
    assert list(tmp_path.iterdir()) == []


class FixedBatch(nn.Module):
    def forward(self, x):
        return torch.relu(x.reshape(1, 12))  # a literal batch of 1 (capture would free it; plain tracing keeps it)


def test_a_graph_whose_batch_cannot_be_free_is_written_and_checked_at_its_batch(tmp_path):
    x = torch.randn(1, 3, 4)
    shipped = write_onnx(torch.fx.symbolic_trace(FixedBatch()), (x,), tmp_path / "b.onnx")
    assert shipped.batch_note == "fixed at 1" and "batch fixed at 1" in shipped.describe()
    assert shipped.max_relative_error == 0.0


def test_an_exporter_failure_is_one_clear_error_and_nothing_is_written(tmp_path, run_cli, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("no translation for aten::frobnicate\nmany more lines")

    monkeypatch.setattr(torch.onnx, "export", fail)
    code, _, stderr = run_cli("lower", f"{zoo.__file__}:legal_on_archnet", "-t", "archnet", "--input-shape", "1,3,16,16",
                              "-o", str(tmp_path / "m.onnx"))
    assert code == 1 and stderr.strip() == (f"fxrewrite: error: torch.onnx could not write the graph (RuntimeError: no "
                                            f"translation for aten::frobnicate); nothing was written to {tmp_path / 'm.onnx'}")
    assert list(tmp_path.iterdir()) == []


def test_nearest_upsampling_lowered_for_npu_generic_ships_as_depth_to_space(tmp_path):
    """The phase conv and pixel shuffle the exact pass makes are Conv and DepthToSpace in ONNX,
    both runnable on npu-generic; onnxruntime agrees with torch."""
    from fxrewrite import lower

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return torch.nn.functional.interpolate(torch.relu(self.conv(x)), scale_factor=2)

    x = torch.randn(1, 8, 15, 17)
    lowered = lower(Decoder().eval(), (x,), target="npu-generic", max_growth=2)
    assert not lowered.verdicts.illegal
    check = write_onnx(lowered.gm, (x,), tmp_path / "decoder.onnx", Target.load("npu-generic"))
    assert check.op_types.get("DepthToSpace") == 1 and "Resize" not in check.op_types
    assert check.max_relative_error < 1e-5
