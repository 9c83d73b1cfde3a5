"""The command line over its argument space: random combinations of valid and invalid values for
every option never end in exit 3 or a traceback, and never change a file the run did not name as
an output."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxrewrite import cli

import zoo

ZOO = str(Path(zoo.__file__))


def _values(valid: list[str], invalid: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(valid + invalid)


OPTIONS = {
    "--input-shape": _values(["1,3,16,16", "2,3,16,16"], ["1,3,x", "0,3,16,16", "1,3,10000000,10000000", "", "1,4,16,16",
                                                         "99999999999999999999"]),
    "--seed": _values(["0", "7"], ["-1", "abc", str(2**64)]),
    "--frontend": _values(["auto", "symbolic", "export"], ["jit"]),
    "--tolerance": _values(["1e-5", "1e-3"], ["0", "-1", "nan", "inf", "x"]),
    "--max-growth": _values(["2", "1000"], ["0", "nan", "-3"]),
    "--passes": _values(["fold-batch-norm", "remove-noops,fold-batch-norm"], ["no-such-pass", ",,"]),
    "--calib": _values(["synthetic", "CALIB_NPY"], ["nowhere.npy", "NAN_NPY", "MODEL_FILE", "os:getcwd"]),
    "--calib-size": _values(["8", "12"], ["1", "0", "-5", "1e9"]),
    "--wbits": _values(["4", "8"], ["3", "0", "four"]),
    "--abits": _values(["4", "8"], ["5"]),
    "--epochs": _values(["1"], ["0", "1.5"]),
    "--finetune-epochs": _values(["1"], ["-1"]),
    "--lr": _values(["0.003"], ["nan", "-1", "0"]),
    "--time-budget": _values(["60"], ["nan", "0"]),
    "--batch-size": _values(["4"], ["0"]),
    "--device": _values(["cpu"], ["tpu", "cuda:x"]),
    "--report": _values(["REPORT"], ["MODEL_FILE", "OUT", "FOLDER", "CALIB_NPY"]),
    "-o": _values(["OUT", "OUT_ONNX"], ["MODEL_FILE", "FOLDER", "out.txt", "FILE_AS_FOLDER/o.pt2"]),
    "--dump-ir": _values(["IR"], ["MODEL_FILE"]),
}
#: options that make a run train; the sizes above keep such a run to seconds
TRAINING = {"--calib", "--wbits", "--abits"}


def _resolve(value: str, folder: Path) -> str:
    places = {"CALIB_NPY": "calib.npy", "NAN_NPY": "nan.npy", "MODEL_FILE": "model.pt2", "REPORT": "report.json",
              "OUT": "out.pt2", "OUT_ONNX": "out.onnx", "FOLDER": "folder", "IR": "ir",
              "FILE_AS_FOLDER": "plain.txt"}
    for token, name in places.items():
        value = value.replace(token, str(folder / name))
    return value


def _prepare(folder: Path) -> None:
    torch.export.save(torch.export.export(zoo.LegalOnArchnet().eval(), (torch.randn(1, 3, 16, 16),)),
                      folder / "model.pt2")
    np.save(folder / "calib.npy", np.random.default_rng(0).standard_normal((12, 3, 16, 16)).astype(np.float32))
    nan = np.zeros((12, 3, 16, 16), np.float32)
    nan[3, 0, 0, 0] = np.nan
    np.save(folder / "nan.npy", nan)
    (folder / "folder").mkdir()
    (folder / "plain.txt").write_text("a file")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("command", ["check", "lower"])
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_combination_of_options_ends_in_exit_3_or_touches_other_files(command, data, capsys):
    allowed = ["--input-shape", "--seed", "--frontend"] if command == "check" else list(OPTIONS)
    chosen = data.draw(st.lists(st.sampled_from(allowed), unique=True, max_size=6), label="options")
    model = data.draw(st.sampled_from([f"{ZOO}:legal_on_archnet", f"{ZOO}:gelu_head", "MODEL_FILE"]), label="model")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        _prepare(folder)
        argv = [command, _resolve(model, folder), "-t", "archnet"]
        if "--input-shape" not in chosen and model != "MODEL_FILE":
            argv += ["--input-shape", "1,3,16,16"]
        if any(option in TRAINING for option in chosen):
            argv += ["--epochs", "1", "--finetune-epochs", "1", "--calib-size", "8"]
        outputs = set()
        for option in chosen:
            value = _resolve(data.draw(OPTIONS[option], label=option), folder)
            argv += [option, value]
            if option in ("-o", "--report", "--dump-ir"):
                outputs.add(value)
        if command == "lower" and "-o" not in chosen:
            argv += ["-o", str(folder / "out.pt2")]
            outputs.add(str(folder / "out.pt2"))
        before = _snapshot(folder)
        try:
            code = cli.main(argv)
        except SystemExit as stop:  # argparse's usage errors
            code = stop.code
        err = capsys.readouterr().err
        assert code in (0, 1, 2), f"exit {code} for {argv}: {err}"
        assert "Traceback" not in err
        if code == 2:
            assert err.strip().count("\n") == 0, err
        after = _snapshot(folder)
        changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
        named = {p for p in changed if any(p == o or p.startswith(o + "/") or p.startswith(str(Path(o).with_suffix(".ckpt")))
                                           for o in outputs)}
        assert changed == named, f"{argv} changed {changed - named}"
