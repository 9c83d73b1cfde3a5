"""Calibration data: every --calib source, the held-out split, and clear errors for bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fxrewrite.quant import load_calibration
from fxrewrite.errors import InputShapeError, LoadError

EXAMPLE = torch.zeros(1, 3, 17, 19)


def test_an_array_is_split_into_batches_and_a_held_out_fifth(tmp_path):
    np.save(tmp_path / "x.npy", np.random.rand(50, 3, 17, 19).astype(np.float32))
    data = load_calibration(str(tmp_path / "x.npy"), EXAMPLE, size=45, batch_size=16)
    assert data.samples == (36, 9)
    assert [len(b) for b in data.train] == [16, 16, 4]


def test_a_tensor_file_is_read_without_unpickling_code(tmp_path):
    torch.save(torch.rand(10, 3, 17, 19), tmp_path / "x.pt")
    assert load_calibration(str(tmp_path / "x.pt"), EXAMPLE, 10, 4).samples == (8, 2)


def test_a_folder_of_images_is_resized_to_the_input_and_scaled_to_unit_range(tmp_path):
    for index in range(5):
        Image.fromarray(np.random.randint(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / f"{index}.png")
    data = load_calibration(str(tmp_path), torch.zeros(1, 1, 17, 19), 100, 8)
    assert data.train[0].shape == (4, 1, 17, 19) and 0 <= data.train[0].min() and data.train[0].max() <= 1


def test_a_callable_yields_inputs_and_its_labels_are_dropped():
    data = load_calibration("zoo:calibration_pairs", EXAMPLE, 100, 64)
    assert data.samples == (32, 8) and data.train[0].shape == (32, 3, 17, 19)


def test_synthetic_token_ids_stay_in_the_range_the_example_covers():
    # regression: normal floats cast to ids were negative, and a one-hot embedding crashed (exit 3, BERT)
    example = torch.tensor([[3, 17, 9, 40]])
    data = load_calibration("synthetic", example, 200, 64)
    ids = torch.cat([*data.train, *data.held_out])
    assert ids.dtype == torch.int64 and int(ids.min()) == 3 and int(ids.max()) == 40


def test_synthetic_inputs_follow_the_seed():
    first, second = (load_calibration("synthetic", EXAMPLE, 20, 8, seed=4) for _ in range(2))
    assert torch.equal(first.train[0], second.train[0])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda p: np.save(p / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True), LoadError,
     "not a readable .npy array without pickles"),
    (lambda p: (p / "x.pt").write_bytes(pickle.dumps(pickle.Pickler)), LoadError, "weights_only=True"),
    (lambda p: torch.save({"images": torch.rand(2, 3)}, p / "x.pt"), LoadError, "holds a dict, not one tensor"),
    (lambda p: np.save(p / "x.npy", np.zeros((8, 3, 16, 16), np.float32)), InputShapeError,
     r"samples of shape \(3, 16, 16\), but the model takes \(3, 17, 19\)"),
])
def test_bad_data_is_one_clear_error(tmp_path, make, error, message):
    make(tmp_path)
    spec = str(next(tmp_path.iterdir()))
    with pytest.raises(error, match=message):
        load_calibration(spec, EXAMPLE, 10, 4)


def test_a_missing_source_says_what_can_be_passed(tmp_path):
    with pytest.raises(LoadError, match="no such file or folder; pass a folder of images"):
        load_calibration(str(tmp_path / "nothing.npy"), EXAMPLE, 10, 4)
