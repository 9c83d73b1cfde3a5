"""MODEL specs, weights and input shapes, with one clear error for each bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fxrewrite.errors import InputShapeError, LoadError
from fxrewrite.frontend.inputs import parse_input_spec
from fxrewrite.frontend.load import load_model

import zoo

ZOO = str(Path(zoo.__file__))
SMALL = ["1,3,16,16"]


def test_pkg_module_callable_with_random_weights():
    loaded = load_model("torchvision.models:resnet18", input_shapes=["1,3,32,32"])
    assert type(loaded.module).__name__ == "ResNet"
    assert not loaded.module.training
    assert loaded.example_inputs[0].shape == (1, 3, 32, 32)


def test_python_file_callable():
    loaded = load_model(f"{ZOO}:tiny_cnn", input_shapes=SMALL)
    assert type(loaded.module).__name__ == "TinyCNN"


def test_default_input_shape_is_an_imagenet_image():
    assert load_model(f"{ZOO}:tiny_cnn").example_inputs[0].shape == (1, 3, 224, 224)


def test_several_inputs_and_integer_dtypes():
    assert parse_input_spec("1,128:int64").dtype == torch.int64
    assert parse_input_spec("2x3").shape == (2, 3)
    with pytest.raises(LoadError, match="bad --input-shape '1,a'"):
        parse_input_spec("1,a")
    with pytest.raises(LoadError, match="dtype must be one of"):
        parse_input_spec("1,3:complex")


def test_state_dict_weights_are_loaded(tmp_path):
    source = zoo.TinyCNN()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    loaded = load_model(f"{ZOO}:tiny_cnn", weights=str(tmp_path / "w.pt"), input_shapes=SMALL)
    assert torch.equal(loaded.module.head.weight, source.head.weight)


def test_weights_that_do_not_fit(tmp_path):
    torch.save({"nonsense.weight": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(LoadError, match="does not fit the model: keys .* missing .* unexpected"):
        load_model(f"{ZOO}:tiny_cnn", weights=str(tmp_path / "w.pt"), input_shapes=SMALL)


def test_pt2_from_torch_export_save(tmp_path):
    module = zoo.TinyCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    torch.export.save(torch.export.export(module, (x,)), tmp_path / "m.pt2")
    loaded = load_model(str(tmp_path / "m.pt2"))
    assert loaded.example_inputs[0].shape == x.shape, "the .pt2's own example inputs are the default"
    torch.testing.assert_close(loaded.module(x), module(x))


def test_pickled_module_needs_trust_pickle(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(zoo.TinyCNN(), path)
    with pytest.raises(LoadError, match="pickled Python objects.*add --trust-pickle"):
        load_model(str(path), input_shapes=SMALL)
    assert isinstance(load_model(str(path), trust_pickle=True, input_shapes=SMALL).module, zoo.TinyCNN)


def test_state_dict_given_as_model_says_to_use_weights(tmp_path):
    torch.save(zoo.TinyCNN().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(LoadError, match="is a state dict, not a model.*--weights"):
        load_model(str(tmp_path / "sd.pt"))


@pytest.mark.parametrize("name", ["garbage.pt", "garbage.pt2"])
def test_corrupt_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x80\x02 this is not a torch file")
    with pytest.raises(LoadError, match="cannot read .*not a valid"):
        load_model(str(path))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no/such/model.pt", "no such file, and not of the form pkg.module:callable"),
        ("no/such/model.pt2", "no such file"),
        ("torchvision.models:resnet_nineteen", "has no attribute 'resnet_nineteen'"),
        ("nonexistent_pkg.models:net", "no module named 'nonexistent_pkg.models'"),
        (f"{ZOO}:not_a_module", "returned str, not a torch.nn.Module"),
        ("missing.py:net", "no such file missing.py"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(LoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_model(spec)


def test_wrong_input_shape_names_the_shape_and_the_flag():
    with pytest.raises(InputShapeError, match="fails on example inputs of shape 1x5x16x16.*--input-shape"):
        load_model(f"{ZOO}:tiny_cnn", input_shapes=["1,5,16,16"])
