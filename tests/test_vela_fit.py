"""The Ethos-U cost fit (fxrewrite.ship.vela_fit) on samples whose cycles come from a known model:
the fit must find a model that reproduces them, starting from the target file's numbers."""

from __future__ import annotations

import dataclasses
import json
import statistics

from fxrewrite.ship import vela_fit
from fxrewrite.target import Target


def test_the_fit_recovers_cycles_made_by_a_known_performance_model(tmp_path):
    target = Target.load("ethos-u55-128")
    truth = dataclasses.replace(target.performance, dense_macs_per_cycle=40, depthwise_macs_per_cycle=5,
                                pooling_per_cycle=3, elementwise_per_cycle=0.7, lut_per_cycle=0.4, bytes_per_cycle=6,
                                weight_bytes_per_cycle=0.5, op_overhead_cycles=900)
    layers = dict(list(vela_fit.LAYERS.items())[::2])  # every other layer keeps the test short
    samples = tmp_path / "samples.jsonl"
    with samples.open("w") as handle:  # what Vela would have written, had the chip been `truth`
        for name, (factory, shape) in layers.items():
            module, inputs = vela_fit._build(factory, shape)
            nodes = vela_fit._nodes(module, inputs, target.performance)
            cycles = round(vela_fit.Sample(name, 0, nodes).estimate(truth))
            handle.write(json.dumps({"graph": name, "accelerator": target.vela_accelerator, "cycles": cycles}) + "\n")
    measured = vela_fit.collect(layers, target, samples)  # read back: nothing is compiled
    before = statistics.median(abs(e) for e in vela_fit.errors(measured, target.performance).values())
    after = statistics.median(abs(e) for e in vela_fit.errors(measured, vela_fit.fit(measured, [], target.performance)).values())
    assert before > 0.3 and after < 0.02, (before, after)
