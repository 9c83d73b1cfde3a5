"""An Ethos-U target's performance model fitted to Vela, Arm's compiler (needs the `ethos-u` extra and scipy).

Samples are graphs compiled by ExecuTorch's Arm flow for the target's accelerator (fxrewrite.ship.ethos_u):
single layers over the shapes that dominate vision models (dense 3x3 and 1x1 convs, depthwise convs, fully
connected layers, pooling, elementwise and lookup-table ops) and, optionally, whole torchvision models.
Vela's `cycles_total` is the label; fxrewrite's estimate (fxrewrite.cost) of the same graph, captured as
`check` captures it, is the prediction. The throughputs, the two bandwidths (activations in SRAM, weights
over the flash bus) and the per-op overhead are fitted in log space to minimise the squared log ratio,
which weighs a 2x error on a small layer as much as one on a large model.

Measurements are appended to a JSON-lines file (one row per graph and accelerator) and reused, so a
refit costs no compile. Run:

    python -m fxrewrite.ship.vela_fit --target ethos-u55-128 --models resnet18,mobilenet_v2

It prints the fitted [performance] lines and the errors: per graph, their median, and per model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fxrewrite.cost import costs_nothing, node_activation_elements, node_weight_elements, op_cycles, work_unit
from fxrewrite.frontend import capture
from fxrewrite.ir import op_view
from fxrewrite.target import Performance, Target

#: the Performance fields fitted, all positive (so fitted as logarithms)
FITTED = ("dense_macs_per_cycle", "depthwise_macs_per_cycle", "pooling_per_cycle", "elementwise_per_cycle",
          "lut_per_cycle", "bytes_per_cycle", "weight_bytes_per_cycle", "op_overhead_cycles")
SAMPLES = Path(__file__).resolve().parents[2] / "benchmarks" / "vela-samples.jsonl"


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> Callable[[], nn.Module]:
    return lambda: nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups)


def _then(op: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], nn.Module]:
    class Op(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return op(x)
    return Op


#: name -> (module factory, input shape): one layer each
LAYERS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    **{f"conv3x3_{c}to{c}_{s}px": (_conv(c, c, 3), (1, c, s, s)) for c, s in ((16, 48), (32, 24), (64, 24), (128, 12),
                                                                             (256, 6), (512, 3))},
    **{f"conv3x3s2_{c}to{2 * c}_{s}px": (_conv(c, 2 * c, 3, 2), (1, c, s, s)) for c, s in ((3, 96), (32, 48), (128, 12))},
    **{f"conv1x1_{a}to{b}_{s}px": (_conv(a, b, 1), (1, a, s, s)) for a, b, s in ((16, 96, 48), (96, 24, 24), (64, 384, 12),
                                                                               (384, 64, 12), (320, 1280, 3))},
    **{f"depthwise3x3_{c}_{s}px": (_conv(c, c, 3, groups=c), (1, c, s, s)) for c, s in ((32, 48), (96, 24), (144, 24),
                                                                                      (384, 12), (960, 3))},
    **{f"depthwise5x5s2_{c}_{s}px": (_conv(c, c, 5, 2, groups=c), (1, c, s, s)) for c, s in ((144, 24), (672, 6))},
    **{f"linear_{a}to{b}": ((lambda a=a, b=b: nn.Linear(a, b)), (1, a)) for a, b in ((512, 1000), (1280, 1000), (128, 10))},
    **{f"add_{c}_{s}px": (_then(lambda x: x + x), (1, c, s, s)) for c, s in ((32, 48), (128, 12))},
    **{f"mul_{c}_{s}px": (_then(lambda x: x * x), (1, c, s, s)) for c, s in ((32, 48), (128, 12))},
    **{f"sigmoid_{c}_{s}px": (_then(torch.sigmoid), (1, c, s, s)) for c, s in ((32, 48), (128, 12))},
    **{f"hardswish_{c}_{s}px": (_then(nn.functional.hardswish), (1, c, s, s)) for c, s in ((16, 48), (96, 12))},
    **{f"maxpool3x3s2_{c}_{s}px": ((lambda: nn.MaxPool2d(3, 2, 1)), (1, c, s, s)) for c, s in ((64, 48), (64, 24))},
    **{f"avgpool2x2_{c}_{s}px": ((lambda: nn.AvgPool2d(2)), (1, c, s, s)) for c, s in ((64, 24), (256, 6))},
    **{f"mean_{c}_{s}px": (_then(lambda x: x.mean((2, 3))), (1, c, s, s)) for c, s in ((512, 3), (1280, 3), (96, 24))},
}


def _model(name: str, resolution: int) -> tuple[Callable[[], nn.Module], tuple[int, ...]]:
    import torchvision

    return (lambda: getattr(torchvision.models, name)(num_classes=1000)), (1, 3, resolution, resolution)


@dataclasses.dataclass(frozen=True)
class Sample:
    graph: str
    vela_cycles: int
    #: per node of the captured graph: (unit, work, activation elements, weight elements)
    nodes: tuple[tuple[str, float, int, int], ...]

    def estimate(self, perf: Performance) -> float:
        return sum(op_cycles(perf, work / getattr(perf, unit), act, weights) for unit, work, act, weights in self.nodes)


def _build(factory: Callable[[], nn.Module], shape: tuple[int, ...]) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return factory().eval(), (torch.randn(shape),)


def _nodes(module: nn.Module, inputs: tuple[torch.Tensor, ...], perf: Performance) -> tuple:
    gm = capture(module, inputs, "auto")
    rows = []
    for node in gm.graph.nodes:
        view = op_view(node)
        if node.op in ("placeholder", "output", "get_attr") or costs_nothing(view, perf):
            continue
        unit, work = work_unit(view, perf.lut_ops)
        rows.append((unit, float(work), node_activation_elements(view), node_weight_elements(view)))
    return tuple(rows)


def _measured(path: Path, accelerator: str) -> dict[str, int]:
    if not path.is_file():
        return {}
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {row["graph"]: row["cycles"] for row in rows if row["accelerator"] == accelerator}


def collect(graphs: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]], target: Target,
            path: Path = SAMPLES) -> list[Sample]:
    """Every graph's Vela cycles (compiled now unless `path` has them) beside its estimate's inputs."""
    from fxrewrite.ship.ethos_u import compile_for_ethos_u

    accelerator = target.accelerator
    known = _measured(path, accelerator)
    samples = []
    for name, (factory, shape) in graphs.items():
        module, inputs = _build(factory, shape)
        if name not in known:
            known[name] = compile_for_ethos_u(module, inputs, accelerator).cycles_total
            with path.open("a") as handle:
                handle.write(json.dumps({"graph": name, "accelerator": accelerator, "cycles": known[name]}) + "\n")
            print(f"  {name}: {known[name]:,} Vela cycles", file=sys.stderr)
        samples.append(Sample(name, known[name], _nodes(module, inputs, target.performance)))
    return samples


def _with(perf: Performance, logs: list[float]) -> Performance:
    return dataclasses.replace(perf, **{key: math.exp(value) for key, value in zip(FITTED, logs)})


def _start(perf: Performance) -> list[float]:
    # a file without a weight bus starts from the shared one; an overhead of 0 has no logarithm
    values = {key: getattr(perf, key) for key in FITTED} | {"weight_bytes_per_cycle": perf.weight_bytes_per_cycle or
                                                           perf.bytes_per_cycle}
    return [math.log(max(values[key], 1.0)) for key in FITTED]


def fit(layers: list[Sample], models: list[Sample], start: Performance) -> Performance:
    """The Performance minimising the mean squared log ratio of estimate to Vela over the layers plus
    the same over the models: each group weighs the same, however many samples it has."""
    from scipy.optimize import minimize

    def mean_loss(samples: list[Sample], perf: Performance) -> float:
        return sum(math.log(s.estimate(perf) / s.vela_cycles) ** 2 for s in samples) / max(len(samples), 1)

    def loss(logs: list[float]) -> float:
        perf = _with(start, logs)
        return mean_loss(layers, perf) + mean_loss(models, perf)

    # The max() in the model leaves flat directions: a rate the memory term hides does not move. So the
    # search also starts with memory ten times faster (compute rates are fitted first), and each search
    # is restarted from its result; the best end wins.
    memory = [FITTED.index("bytes_per_cycle"), FITTED.index("weight_bytes_per_cycle")]
    fast_memory = [value + math.log(10) if i in memory else value for i, value in enumerate(_start(start))]
    ends = []
    for logs in (_start(start), fast_memory):
        for _ in range(3):
            logs = list(minimize(loss, logs, method="Powell", options={"maxiter": 20000}).x)
        ends.append((loss(logs), logs))
    return _with(start, min(ends)[1])


def errors(samples: list[Sample], perf: Performance) -> dict[str, float]:
    """Per graph, the estimate's relative error against Vela (+0.10: 10% above)."""
    return {s.graph: s.estimate(perf) / s.vela_cycles - 1 for s in samples}


def _toml(perf: Performance) -> str:
    return "\n".join(f"{key} = {getattr(perf, key):.4g}" for key in FITTED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fxrewrite.ship.vela_fit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="a target naming a Vela accelerator")
    parser.add_argument("--models", default="", help="torchvision models to add as whole-model samples")
    parser.add_argument("--resolution", type=int, default=96, help="the models' input size (default 96)")
    parser.add_argument("--samples", type=Path, default=SAMPLES, help=f"measurements read and appended (default {SAMPLES})")
    args = parser.parse_args(argv)
    target = Target.load(args.target)
    layers = collect(LAYERS, target, args.samples)
    models = collect({name: _model(name, args.resolution) for name in filter(None, args.models.split(","))},
                     target, args.samples)
    fitted = fit(layers, models, target.performance)
    print(f"[performance] fitted to Vela on {target.accelerator} ({len(layers)} layers, {len(models)} models):")
    print(_toml(fitted))
    for label, perf in (("the file's", target.performance), ("fitted", fitted)):
        layer_errors = errors(layers, perf)
        print(f"{label}: median per-layer error {statistics.median(abs(e) for e in layer_errors.values()):.1%}, "
              f"worst {max(layer_errors.items(), key=lambda kv: abs(kv[1]))}")
        for name, error in errors(models, perf).items():
            print(f"  {name}: {error:+.1%}")
    print("each model estimated by a fit without it (leave one out):")
    for model in models:
        without = fit(layers, [m for m in models if m is not model], target.performance)
        print(f"  {model.graph}: {model.estimate(without) / model.vela_cycles - 1:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
