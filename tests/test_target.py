"""Target descriptions: the built-ins, verdict reasons, formats, and errors for invalid files."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from fxrewrite.cost import node_cycles
from fxrewrite.errors import TargetError
from fxrewrite.target import Performance, QuantFormat, Target, builtin_targets
from fxrewrite.target.target import parse_target

from conftest import CHIP_HEADER, compute_views, symbolic

BUILTINS = ["archnet", "archnet-transformer", "cpu-reference", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256",
            "ethos-u65-512", "ethos-u85-256", "npu-generic"]


def only_view(module: nn.Module, *shape: int):
    return compute_views(symbolic(nn.Sequential(module), torch.randn(*shape)))[0]


def test_builtin_targets_are_listed_and_load():
    assert builtin_targets() == BUILTINS
    for name in BUILTINS:
        target = Target.load(name)
        assert target.name == name
        assert name in target.report()


def test_archnet_rejects_a_7x7_conv_with_an_actionable_reason():
    verdict = Target.load("archnet").verdict(only_view(nn.Conv2d(8, 8, 7, padding=3), 1, 8, 9, 9).node)
    assert not verdict.legal
    assert verdict.reason == "conv2d kernel 7x7 not in allowed kernels {3x3}"


def test_archnet_limits_input_channels_and_grouping():
    archnet = Target.load("archnet")
    assert archnet.verdict(only_view(nn.Conv2d(512, 8, 3), 1, 512, 5, 5).node).legal
    wide = archnet.verdict(only_view(nn.Conv2d(513, 8, 3), 1, 513, 5, 5).node)
    assert wide.reason == "conv2d input channels 513 exceeds the limit 512"
    depthwise = archnet.verdict(only_view(nn.Conv2d(8, 8, 3, groups=8), 1, 8, 5, 5).node)
    assert depthwise.reason == "conv2d grouping depthwise not in allowed groupings {dense}"


def test_op_missing_from_target_names_what_the_target_runs():
    verdict = Target.load("npu-generic").verdict(only_view(nn.LayerNorm(5), 1, 3, 5).node)
    assert not verdict.legal
    assert verdict.reason.startswith("layer_norm is not supported by target npu-generic (it runs add, avg_pool2d")


def test_npu_generic_pools_and_strides():
    npu = Target.load("npu-generic")
    assert npu.verdict(only_view(nn.MaxPool2d(3, 2, 1), 1, 4, 9, 9).node).legal
    assert npu.verdict(only_view(nn.Conv2d(4, 4, 3, stride=3), 1, 4, 9, 9).node).reason == \
        "conv2d stride 3x3 not in allowed strides {1, 2}"
    assert not npu.verdict(only_view(nn.AvgPool2d(5), 1, 4, 9, 9).node).legal


def test_ethos_u_limits_from_executorchs_arm_backend():
    u55 = Target.load("ethos-u55-128")
    assert u55.verdict(only_view(nn.Conv2d(4, 4, 3, groups=2), 1, 4, 9, 9).node).legal, "the flow splits groups"
    batched = u55.verdict(only_view(nn.Conv2d(4, 4, 3), 2, 4, 9, 9).node)
    assert batched.reason == "conv2d batch size 2 exceeds the limit 1"
    assert u55.verdict(only_view(nn.Linear(4, 4), 2, 4).node).legal, "a fully connected layer takes any batch"
    stride4 = u55.verdict(only_view(nn.Conv2d(4, 4, 4, stride=4), 1, 4, 8, 8).node)
    assert stride4.reason == "conv2d stride 4x4 outside [1, 3]"
    dilated = u55.verdict(only_view(nn.Conv2d(4, 4, 3, dilation=40), 1, 4, 90, 90).node)
    assert dilated.reason.startswith("conv2d dilated kernel 81x81 outside [1, 64]")
    bilinear = only_view(nn.Upsample(scale_factor=3, mode="bilinear"), 1, 4, 5, 5).node
    assert not u55.verdict(bilinear).legal and Target.load("ethos-u85-256").verdict(bilinear).legal
    for transformer_op in (nn.GELU(), nn.LayerNorm(5), nn.Softmax(-1), nn.SiLU()):
        assert u55.verdict(only_view(transformer_op, 1, 4, 5, 5).node).legal, transformer_op


def test_cpu_reference_allows_everything_in_the_vocabulary():
    cpu = Target.load("cpu-reference")
    assert cpu.verdict(only_view(nn.GELU(), 1, 4).node).legal
    assert cpu.verdict(only_view(nn.Conv2d(4, 4, 11), 1, 4, 12, 12).node).legal


def test_quantization_formats():
    archnet = Target.load("archnet")
    assert archnet.weights.accepts(QuantFormat.parse("int4"), "per-channel").legal
    assert archnet.activations.accepts(QuantFormat.parse("uint4")).legal
    verdict = archnet.activations.accepts(QuantFormat.parse("int8"))
    assert verdict.reason == "format int8 not in {uint4, uint8}"
    assert not Target.load("npu-generic").weights.accepts(QuantFormat.parse("int8"), "per-tensor").legal
    assert QuantFormat.parse("uint4") == QuantFormat("uint4", 4, signed=False)


def write(tmp_path, text: str):
    path = tmp_path / "chip.toml"
    path.write_text(textwrap.dedent(text))
    return path


VALID = """
    [target]
    name = "chip"
    [quantization.weights]
    formats = ["int8"]
    [quantization.activations]
    formats = ["int8"]
    [ops.conv2d]
    kernels = ["3x3"]
    [ops.relu]
"""


def test_a_users_own_file_works_wherever_a_name_does(tmp_path, run_cli):
    target = Target.load(write(tmp_path, VALID))
    assert set(target.ops) == {"conv2d", "relu"}
    code, out, _ = run_cli("targets", str(tmp_path / "chip.toml"))
    assert code == 0 and "conv2d  kernel in {3x3}" in out


@pytest.mark.parametrize(
    "edit, message",
    [
        (('kernels = ["3x3"]', 'kernels = ["3x3"]\nkernal_size = 3'), "unknown key ops.conv2d.kernal_size"),
        (('kernels = ["3x3"]', "kernels = 3"), 'ops.conv2d.kernels: expected a non-empty list of sizes such as "3x3"'),
        (('kernels = ["3x3"]', 'kernels = ["3by3"]'), "ops.conv2d.kernels: expected positive sizes written \"HxW\""),
        (("[ops.relu]", "[ops.swishy]"), "ops.swishy: unknown op kind; the vocabulary has"),
        (('kernels = ["3x3"]', "stride_range = [4, 1]"), "ops.conv2d.stride_range: expected [low, high] with 0 <= low <= high"),
        (('kernels = ["3x3"]', "in_channels_max = -1"), "ops.conv2d.in_channels_max: expected a positive integer"),
        (("[ops.relu]", "[ops.relu]\nkernels = [\"3x3\"]"), "ops.relu.kernels: relu has no kernel attribute"),
        (('formats = ["int8"]\n    [quantization.activations]', 'formats = ["int9"]\n    [quantization.activations]'),
         "quantization.weights.formats: expected formats such as"),
        (('name = "chip"', 'name = 7'), "target.name: expected a string"),
        (('name = "chip"', 'name = "chip"\nvela_accelerator = 128'), "target.vela_accelerator: expected a string"),
        (('name = "chip"', 'name = "chip"\ncompiler = "tvm"\naccelerator = "x"'),
         "target.compiler: 'tvm' is no compiler fxrewrite knows; it knows vela"),
        (('name = "chip"', 'name = "chip"\ncompiler = "vela"\naccelerator = "ethos-u99"'),
         "target.accelerator: 'ethos-u99' is not an accelerator Vela compiles for"),
        (('name = "chip"', 'name = "chip"\nvela_accelerator = "ethos-u55-128"\ncompiler = "vela"'),
         "give either it or target.compiler and target.accelerator, not both"),
        (("[quantization.weights]", "[quantisation.weights]"), "unknown key quantisation"),
        (("[ops.relu]", "[ops.relu"), "not valid TOML"),
        (("[ops.relu]", "[performance]\nmacs = 1\n[ops.relu]"), "unknown key performance.macs"),
        (("[ops.relu]", "[performance]\nclock_mhz = 0\n[ops.relu]"), "performance.clock_mhz: expected a positive"),
        (("[ops.relu]", "[performance]\nlut_ops = [\"tanh\"]\n[ops.relu]"),
         "performance.lut_ops: tanh not declared under [ops]"),
        (("[ops.relu]", "[cost]\nmac = 1\n[ops.relu]"), "the [cost] table was replaced by [performance]"),
        (("[ops.relu]", "[performance]\nmeasured_by = \"latency\"\n[ops.relu]"),
         "performance.measured_by: expected one of 'estimate', 'host-latency', got 'latency'"),
        (("[ops.relu]", "[performance]\nhost_cpu = \"cortex-a53\"\n[ops.relu]"),
         "performance.host_cpu: expected one of 'cortex-m55', got 'cortex-a53'"),
    ],
)
def test_invalid_files_name_the_file_the_key_and_what_was_expected(tmp_path, edit, message):
    old, new = edit
    text = textwrap.dedent(VALID).replace(textwrap.dedent(old) if "\n" not in old else old.replace("    ", ""), new.replace("    ", ""), 1)
    assert text != textwrap.dedent(VALID), "the edit must change the file"
    path = write(tmp_path, text)
    with pytest.raises(TargetError) as error:
        Target.load(path)
    assert str(error.value).startswith(str(path))
    assert message in str(error.value)


def test_performance_model_comes_from_the_file_and_the_formats():
    npu = Target.load("npu-generic").performance
    assert (npu.dense_macs_per_cycle, npu.depthwise_macs_per_cycle, npu.op_overhead_cycles) == (512, 128, 100)
    assert (npu.activation_bytes, npu.weight_bytes, npu.growth_max, npu.lut_ops) == (1.0, 1.0, 1.5, {"sigmoid"})
    u55, u85 = Target.load("ethos-u55-128").performance, Target.load("ethos-u85-256").performance
    assert (u55.clock_mhz, u85.clock_mhz) == (500, 1000)  # Vela's system configs
    assert u55.weight_bytes_per_cycle is not None and u85.weight_bytes_per_cycle is None  # flash beside SRAM; SRAM only
    archnet = Target.load("archnet").performance
    assert archnet.weight_bytes == 1.0 and archnet.activation_bytes == 1.0  # int8 and uint8 are the widest


def test_node_cycles_are_the_slower_of_compute_and_memory_plus_overhead():
    npu = Target.load("npu-generic").performance
    depthwise = only_view(nn.Conv2d(8, 8, 3, groups=8, bias=False), 1, 8, 5, 5)
    macs, moved = 9 * 8 * 9, (8 * 25 + 8 * 9) + 8 * 9  # 3x3 output; input, output and weight bytes
    assert node_cycles(depthwise, npu) == max(macs / 128, moved / 32) + 100
    dense = only_view(nn.Conv2d(64, 64, 3, padding=1, bias=False), 1, 64, 32, 32)
    assert node_cycles(dense, npu) == 64 * 64 * 9 * 32 * 32 / 512 + 100  # compute-bound
    sigmoid = only_view(nn.Sigmoid(), 1, 64, 32, 32)
    assert node_cycles(sigmoid, npu) == max(64 * 32 * 32 / 16, 2 * 64 * 32 * 32 / 32) + 100  # a table lookup
    relu = only_view(nn.ReLU(), 1, 64, 32, 32)
    assert node_cycles(relu, npu) == 2 * 64 * 32 * 32 / 32 + 100  # memory-bound
    assert node_cycles(only_view(nn.Flatten(), 1, 64, 2, 2), npu) == 0.0


def test_unknown_target_name_lists_the_builtins():
    with pytest.raises(TargetError, match="unknown target 'tpu'.*archnet, archnet-transformer, cpu-reference, ethos-u55-128, ethos-u55-256, ethos-u65-256, ethos-u65-512, ethos-u85-256, npu-generic"):
        Target.load("tpu")


def test_missing_target_file():
    with pytest.raises(TargetError, match="no such file"):
        Target.load("does/not/exist.toml")


def test_weights_on_their_own_bus_cost_the_slower_of_the_two_buses():
    """Ethos-U55 reads weights from flash at an eighth of the SRAM's bandwidth, in parallel with activations."""
    shared = Performance(dense_macs_per_cycle=1e9, bytes_per_cycle=8, op_overhead_cycles=10)
    split = dataclasses.replace(shared, weight_bytes_per_cycle=1)
    fc = only_view(nn.Linear(512, 1000, bias=False), 1, 512)  # 512,000 weight bytes, 1,512 activation bytes
    assert node_cycles(fc, shared) == (512_000 + 1_512) / 8 + 10
    assert node_cycles(fc, split) == 512_000 / 1 + 10
    relu = only_view(nn.ReLU(), 1, 64, 8, 8)  # no weights: the SRAM bus alone
    assert node_cycles(relu, split) == node_cycles(relu, shared)
    u55 = Target.load("ethos-u55-128")
    assert u55.performance.lut_ops <= set(u55.ops)


class ConvBlock(nn.Module):
    """conv -> batch norm -> relu, a relu read from the input, and a concat of the two."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4).eval()

    def forward(self, x):
        return torch.cat([torch.relu(self.bn(self.conv(x))), torch.relu(x)], 1)


def test_ops_fused_into_their_producer_or_built_in_place_cost_nothing():
    """Vela folds a batch norm into the conv before it, runs the activation in that conv's output stage,
    and has producers write into a concat's slices."""
    perf = Performance(op_overhead_cycles=10, fused_ops=frozenset({"batch_norm", "relu"}), free_ops=frozenset({"cat"}))
    views = {v.node.name: v for v in compute_views(symbolic(ConvBlock().eval(), torch.randn(1, 4, 6, 6)))}
    costs = {name: node_cycles(view, perf) for name, view in views.items()}
    assert costs["conv"] > 0 and costs["bn"] == 0 and costs["relu"] == 0  # relu after the folded bn
    assert costs["relu_1"] > 0, "nothing runs before the input's relu"
    assert costs["cat"] == 0
    plain = Performance(op_overhead_cycles=10)
    assert all(node_cycles(view, plain) > 0 for view in views.values())


def test_fused_ops_need_vocabulary_kinds_and_free_ops_declared_ones(tmp_path):
    for key, kinds, message in (("fused_ops", '["batchnorm"]', "batchnorm not in the vocabulary"),
                                ("free_ops", '["cat"]', "cat not declared under \\[ops\\]")):
        path = tmp_path / "chip.toml"
        path.write_text(CHIP_HEADER + f"[ops.relu]\n[performance]\n{key} = {kinds}\n")
        with pytest.raises(TargetError, match=message):
            Target.load(str(path))


def test_a_chip_variant_states_only_what_differs():
    """ethos-u55-256.toml extends ethos-u55-128.toml: the same ops and formats, its own MAC array and rates."""
    small, large = Target.load("ethos-u55-128"), Target.load("ethos-u55-256")
    assert large.ops == small.ops and (large.weights, large.activations) == (small.weights, small.activations)
    assert (large.name, large.vela_accelerator) == ("ethos-u55-256", "ethos-u55-256")
    assert large.performance.dense_macs_per_cycle == 119.1 != small.performance.dense_macs_per_cycle
    assert large.performance.clock_mhz == small.performance.clock_mhz == 500  # inherited
    assert [Path(f).name for f in large.files] == ["ethos-u55-256.toml", "ethos-u55-128.toml"]


def test_extends_merges_an_op_constraint_by_constraint_and_follows_relative_paths(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "chip.toml").write_text('[target]\nextends = "archnet"\nname = "chip"\n')
    (tmp_path / "variant.toml").write_text('[target]\nextends = "base/chip.toml"\nname = "variant"\n'
                                           '[ops.conv2d]\nkernels = ["1x1"]\n')
    archnet, variant = Target.load("archnet"), Target.load(tmp_path / "variant.toml")
    assert variant.ops["conv2d"].constraints["kernels"] != archnet.ops["conv2d"].constraints["kernels"]
    assert {k: v for k, v in variant.ops["conv2d"].constraints.items() if k != "kernels"} == \
        {k: v for k, v in archnet.ops["conv2d"].constraints.items() if k != "kernels"}
    assert variant.ops.keys() == archnet.ops.keys() and len(variant.files) == 3


@pytest.mark.parametrize("body, message", [
    ('[target]\nextends = "loop.toml"\nname = "loop"\n', "target.extends leads in a loop"),
    ('[target]\nextends = "no-such-chip"\nname = "x"\n', "unknown target 'no-such-chip'"),
    ('[target]\nextends = "archnet"\n', "a target that extends another names itself"),
    ('[target]\nextends = 3\nname = "x"\n', "target.extends: expected a built-in target's name"),
])
def test_a_bad_extends_is_one_clear_error(body, message, tmp_path):
    (tmp_path / "loop.toml").write_text(body)
    with pytest.raises(TargetError) as raised:
        Target.load(tmp_path / "loop.toml")
    assert message in str(raised.value)


def test_the_older_spelling_names_the_same_compiler():
    text = (Path(__file__).parents[1] / "targets" / "ethos-u55-128.toml").read_text()
    older = text.replace('compiler = "vela"\naccelerator = "ethos-u55-128"', 'vela_accelerator = "ethos-u55-128"')
    assert older != text
    chip = parse_target(older.encode(), "older.toml")
    assert (chip.compiler, chip.accelerator, chip.vela_accelerator) == ("vela", "ethos-u55-128", "ethos-u55-128")
    assert Target.load("archnet").compiler == "" and Target.load("archnet").vela_accelerator == ""


@pytest.mark.parametrize("name", ["ethos-u65-256", "ethos-u65-512"])
def test_the_u65_targets_take_the_u55_ops_at_their_own_clock(name):
    """ExecuTorch lowers the U65 with the U55's TOSA profile: the same ops and formats; Vela's
    Ethos_U65_High_End runs at 1 GHz."""
    u55, u65 = Target.load("ethos-u55-128"), Target.load(name)
    assert u65.ops == u55.ops and (u65.weights, u65.activations) == (u55.weights, u55.activations)
    assert (u65.compiler, u65.accelerator) == ("vela", name) and u65.performance.clock_mhz == 1000
