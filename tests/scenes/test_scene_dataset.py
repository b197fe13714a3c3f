"""`nerfgan scene dataset`: EG3D's dataset format, written atomically, read back."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from nerfgan import camera
from nerfgan.cli import main
from nerfgan.errors import InputFileError, UsageError
from nerfgan.io import TMP_SUFFIX
from nerfgan.sampling import PoseDistribution, draw
from nerfgan.scenes.dataset import open_dataset, write_dataset
from conftest import invoke


@pytest.mark.parametrize("name", ["data", "data.zip"])
def test_dataset_reads_back_with_the_training_cameras(tmp_path, name):
    out = write_dataset(tmp_path / name, n=3, seed=4, resolution=32)
    ds = open_dataset(out)
    assert len(ds) == 3 and ds.names[2] == "00000/img00000002.png"
    expected = draw(4, range(3), PoseDistribution(), camera.DEFAULT_RADIUS, camera.DEFAULT_PIVOT).c
    np.testing.assert_allclose(ds.labels, expected, rtol=0, atol=1e-6)
    img = ds.image(1)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert img.max() > 100 and (img == 0).all(axis=-1).mean() > 0.2  # an object on a black background
    assert not any(p.name.endswith(TMP_SUFFIX) for p in tmp_path.iterdir())


def test_zip_and_folder_hold_the_same_images(tmp_path):
    a = open_dataset(write_dataset(tmp_path / "a", n=2, seed=1, resolution=24))
    b = open_dataset(write_dataset(tmp_path / "b.zip", n=2, seed=1, resolution=24))
    assert a.names == b.names
    np.testing.assert_array_equal(a.image(0), b.image(0))
    with zipfile.ZipFile(tmp_path / "b.zip") as zf:
        assert json.loads(zf.read("dataset.json"))["labels"][0][0] == "00000/img00000000.png"


def test_existing_output_is_never_overwritten(tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("keep")
    with pytest.raises(UsageError, match="already exists"):
        write_dataset(keep, n=1, seed=0, resolution=16)
    assert (keep / "notes.txt").read_text() == "keep"


def test_bad_datasets_name_the_problem(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(InputFileError, match="no dataset.json"):
        open_dataset(d)
    (d / "dataset.json").write_text(json.dumps({"labels": [["x.png", [0.0] * 24]]}))
    with pytest.raises(InputFileError, match="label 0"):
        open_dataset(d)
    (d / "dataset.json").write_text(json.dumps({"labels": [["../../etc/passwd", [0.0] * 25]]}))
    with pytest.raises(InputFileError, match="leaves the data set"):
        open_dataset(d).image(0)


def test_cli_writes_a_dataset(tmp_path, capsys):
    code, out, err = invoke(main, ["scene", "dataset", "--n", 2, "--res", 16, "-o", tmp_path / "ds"], capsys)
    assert code == 0, err
    assert len(open_dataset(tmp_path / "ds")) == 2
    code, _, err = invoke(main, ["scene", "dataset", "--n", 2, "-o", tmp_path / "ds"], capsys)
    assert code == 2 and "already exists" in err
