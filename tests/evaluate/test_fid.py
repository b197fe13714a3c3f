"""nerfgan fid: FID/KID through torch-fidelity on a seeded random Inception-v3 (no download), checked against
torch-fidelity's own calculate_metrics; the weights reader refuses bad files in one line and executes nothing."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import invoke

from nerfgan.cli import main
from nerfgan.errors import CheckpointError, InputFileError, MissingDependencyError

if importlib.util.find_spec("torch_fidelity") is None:  # the dev extra installs it; imported through nerfgan below
    pytest.skip("the metrics extra (torch-fidelity) is not installed", allow_module_level=True)

from nerfgan.evaluate import fid as F  # noqa: E402

N_IMAGES = 10  # per image set: Inception-v3 at 299 x 299 on CPU takes ~0.3-1 s an image


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """torch-fidelity's Inception-v3 with seeded He-normal convolutions and fc (activations stay O(1)),
    saved by torch.save as torch-fidelity's own file is: a torch zip-format state dict."""
    F.import_torch_fidelity()  # torch-fidelity imports with or without a working torchvision
    from torch_fidelity import feature_extractor_inceptionv3 as mod

    class Untrained(mod.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the initialisation

    original = mod.load_state_dict_from_url
    mod.load_state_dict_from_url = lambda *a, **k: {}
    try:
        model = Untrained(F.EXTRACTOR_NAME, [F.FEATURE_LAYER])
    finally:
        mod.load_state_dict_from_url = original
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # batch norms keep scale 1, shift 0 (random ones collapse every image to one feature)
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5)
    path = tmp_path_factory.mktemp("inception") / F.INCEPTION_FILE
    torch.save(model.state_dict(), path)
    return path


def _write_set(folder: Path, images: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:05d}.png")
    return folder


def _read_set(folder: Path) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))])


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory) -> dict[str, Path]:
    """Two 64 x 64 sets of one distribution (smooth colour blobs, different seeds) and a clearly different one
    (stripes)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0

    def blobs(k: int) -> np.ndarray:
        out = []
        for _ in range(k):
            cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
            mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2)[..., None]
            out.append(np.where(mask, rng.uniform(40, 255, 3), rng.uniform(0, 60, 3)))
        return np.clip(np.stack(out) + rng.normal(0, 4, (k, 64, 64, 3)), 0, 255).astype(np.uint8)

    stripes = np.stack([np.repeat((((xx * rng.integers(4, 12)) % 1 > 0.5) * 255)[..., None], 3, -1)
                        for _ in range(N_IMAGES)]).astype(np.uint8)
    root = tmp_path_factory.mktemp("sets")
    return {"a": _write_set(root / "a", blobs(N_IMAGES)), "b": _write_set(root / "b", blobs(N_IMAGES)),
            "stripes": _write_set(root / "stripes", stripes)}


@pytest.fixture(scope="module")
def features(weights, image_sets):
    extractor = F.build_inception(weights)
    return {k: F.inception_features(extractor, _read_set(p)) for k, p in image_sets.items()}


class PngFolder(torch.utils.data.Dataset):
    """A folder's PNGs as torch-fidelity's own folder input reads them (PIL, RGB, uint8 (3, H, W)), for when
    torchvision (which its folder reader calls) cannot be imported here."""

    def __init__(self, folder: Path) -> None:
        self.files = sorted(folder.glob("*.png"))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(_read_set_one(self.files[i])).permute(2, 0, 1).contiguous()


def _read_set_one(path: Path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))


@pytest.mark.slow
def test_fid_and_kid_equal_torch_fidelitys_own_calculate_metrics(weights, image_sets, features):
    tf = F.import_torch_fidelity()
    ours = F.fid_kid(features["a"], features["b"])
    usable = F._torchvision_importable()
    theirs = tf.calculate_metrics(
        input1=str(image_sets["a"]) if usable else PngFolder(image_sets["a"]),
        input2=str(image_sets["b"]) if usable else PngFolder(image_sets["b"]),
        fid=True, kid=True, cuda=False, batch_size=N_IMAGES, feature_extractor_weights_path=str(weights),
        kid_subset_size=F.kid_subset_size(N_IMAGES), cache=False, verbose=False, save_cpu_ram=True)
    assert ours["fid"] > 1e-3  # a non-trivial value to agree on
    assert ours["fid"] == pytest.approx(theirs[tf.KEY_METRIC_FID], rel=1e-3, abs=1e-6)
    assert ours["kid_mean"] == pytest.approx(theirs[tf.KEY_METRIC_KID_MEAN], rel=1e-3, abs=1e-7)
    # every KID subset is the whole set at n = subset size: the std is rounding noise on both sides
    assert ours["kid_std"] == pytest.approx(theirs[tf.KEY_METRIC_KID_STD], rel=1e-2, abs=1e-6)


@pytest.mark.slow
def test_a_set_against_itself_is_near_zero_and_against_a_different_set_larger(features):
    same = F.fid_kid(features["a"], features["a"])
    near = F.fid_kid(features["a"], features["b"])
    far = F.fid_kid(features["a"], features["stripes"])
    # measured with N_IMAGES = 10: FID same -4e-6, near 0.48, far 99; KID same -7e-4 (the unbiased estimate of a set
    # against itself is not 0), near -7e-4, far 0.19
    assert abs(same["fid"]) < 1e-3 * far["fid"] and abs(same["kid_mean"]) < 0.02 * far["kid_mean"]
    assert far["fid"] > 10 * near["fid"] > 0 and far["kid_mean"] > 10 * abs(near["kid_mean"])


def test_the_weights_reader_returns_torch_saves_tensors_without_unpickling_through_torch(weights, monkeypatch):
    expected = torch.load(weights, weights_only=True)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    got = F.read_inception_weights(weights)
    assert list(got) == list(expected)
    assert all(got[k].dtype == v.dtype and torch.equal(got[k], v) for k, v in expected.items())


def test_kid_subset_size_is_capped_at_n():
    assert F.kid_subset_size(16) == 16 and F.kid_subset_size(5000) == 1000


# --- the command -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_writes_fid_and_kid_for_an_engine_against_the_tiny_teacher(weights, tiny_student_path, tmp_path, capsys):
    out = tmp_path / "f.json"
    code, stdout, err = invoke(main, ["fid", "--engine", tiny_student_path, "--reference", "tiny", "--n", 8,
                                      "--inception-weights", weights, "--json", out], capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["n"] == 8 and report["fid"] > 0 and np.isfinite(report["kid_mean"])
    assert {"fid", "kid_mean", "kid_std"} <= set(report) and report["teacher_vs_data"] is None
    assert report["settings"]["kid_subset_size"] == 8 and report["settings"]["truncation"] == 1.0
    assert report["reference"]["kind"] == "teacher" and "FID" in stdout


@pytest.fixture(scope="module")
def data_zip(tmp_path_factory) -> Path:
    """An EG3D-format data set of 6 scene-family images (128 px)."""
    from nerfgan.scenes.dataset import write_dataset

    return write_dataset(tmp_path_factory.mktemp("data") / "data.zip", 6, seed=5)


@pytest.mark.slow
def test_cli_against_a_data_set_and_the_teachers_own_fid_against_it(weights, tiny_student_path, data_zip, tmp_path,
                                                                    capsys):
    out = tmp_path / "f.json"
    code, _, err = invoke(main, ["fid", "--engine", tiny_student_path, "--reference", data_zip, "--n", 4,
                                 "--inception-weights", weights, "-o", out], capsys)
    assert code == 0, err
    vs_data = json.loads(out.read_text())
    assert vs_data["reference"]["kind"] == "data" and vs_data["teacher_vs_data"] is None
    code, stdout, err = invoke(main, ["fid", "--engine", tiny_student_path, "--reference", "tiny", "--data", data_zip,
                                      "--n", 4, "--inception-weights", weights, "-o", out], capsys)
    assert code == 0, err
    both = json.loads(out.read_text())
    tvd = both["teacher_vs_data"]
    assert tvd["data"] == str(data_zip) and tvd["fid"] > 0 and np.isfinite(tvd["kid_mean"])
    assert "teacher against" in stdout
    # the engine's features are the same in both runs (same seed): only the reference differs
    assert vs_data["fid"] != both["fid"] and vs_data["resolutions"]["engine"] == both["resolutions"]["engine"]


@pytest.mark.slow  # the data set fixture renders the scene family
def test_a_data_set_smaller_than_n_fails_before_rendering(weights, data_zip, tmp_path, capsys, no_render):
    code, _, err = invoke(main, ["fid", "--engine", tmp_path / "e", "--reference", data_zip, "--n", 7,
                                 "--inception-weights", weights], capsys)
    assert code == 1 and f"--reference {data_zip}: has 6 images, fewer than --n 7" in _one_line(err)
    code, _, err = invoke(main, ["fid", "--engine", tmp_path / "e", "--reference", data_zip, "--data", data_zip,
                                 "--n", 2, "--inception-weights", weights], capsys)
    assert code == 2 and "--data" in _one_line(err)


@pytest.fixture
def no_render(monkeypatch):
    """Fail the test if anything is loaded or rendered."""
    import nerfgan.runtime
    import nerfgan.teacher.checkpoint

    monkeypatch.setattr(nerfgan.runtime, "load", lambda *a, **k: pytest.fail("engine loaded"))
    monkeypatch.setattr(nerfgan.teacher.checkpoint, "load_teacher", lambda *a, **k: pytest.fail("teacher loaded"))


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_missing_weights_without_network_fail_in_one_line_before_rendering(tmp_path, monkeypatch, capsys, no_render):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import socket

    monkeypatch.setattr(socket, "socket", lambda *a, **k: pytest.fail("network used"))
    code, _, err = invoke(main, ["fid", "--engine", tmp_path / "e", "--reference", "tiny", "--n", 4,
                                 "-o", tmp_path / "f.json"], capsys)
    line = _one_line(err)
    assert code == 1 and F.INCEPTION_URL in line and "--inception-weights" in line
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / F.INCEPTION_FILE) in line  # torch hub's cache
    assert not (tmp_path / "f.json").exists()


def test_weights_in_torch_hubs_cache_are_found(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / F.INCEPTION_FILE
    cached.parent.mkdir(parents=True)
    os.symlink(weights, cached)
    assert F.resolve_weights(None) == cached


def _zip_with_pickle(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")
    return path


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_files(weights: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    from safetensors.torch import save_file

    marker = tmp / "executed"
    truncated = tmp / "truncated.pth"
    truncated.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    wrong = tmp / "wrong_keys.pth"
    state = torch.load(weights, weights_only=True)
    torch.save({("features." + k if i == 0 else k): v for i, (k, v) in enumerate(state.items())}, wrong)
    reshaped = tmp / "reshaped.safetensors"
    state["fc.weight"] = state["fc.weight"][:10].contiguous()
    save_file(state, str(reshaped))
    legacy = tmp / "legacy.pth"
    torch.save({"a": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    return {
        "truncated": (truncated, "a damaged or truncated zip file"),
        "wrong keys": (wrong, "1 missing keys"),
        "wrong shape": (reshaped, "tensor fc.weight is (10, 2048)"),
        "legacy format": (legacy, "not a torch zip-format file"),
        "malicious global": (_zip_with_pickle(tmp / "evil.pth", pickle.dumps(_Evil(marker), protocol=2)),
                             "forbidden global"),
        "not a state dict": (_zip_with_pickle(tmp / "list.pth", pickle.dumps([1, 2], protocol=2)),
                             "not a single state dict"),
    }


@pytest.mark.parametrize("case", ["truncated", "wrong keys", "wrong shape", "legacy format", "malicious global",
                                  "not a state dict"])
def test_a_bad_weights_file_fails_in_one_line_and_executes_nothing(case, weights, tmp_path, capsys, no_render):
    path, says = _bad_files(weights, tmp_path)[case]
    code, _, err = invoke(main, ["fid", "--engine", tmp_path / "e", "--reference", "tiny", "--n", 4,
                                 "--inception-weights", path, "-o", tmp_path / "f.json"], capsys)
    line = _one_line(err)
    assert code == 1 and str(path) in line and says in line, line
    assert not (tmp_path / "executed").exists() and not (tmp_path / "f.json").exists()


def test_the_reader_raises_typed_errors(weights, tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        F.resolve_weights(str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointError, match="forbidden global 'posix.system'|forbidden global 'os.system'"):
        F.read_inception_weights(_bad_files(weights, tmp_path)["malicious global"][0])


def test_without_torch_fidelity_one_line_names_the_extra(monkeypatch, tmp_path, capsys, no_render):
    for name in [m for m in sys.modules if m == "torch_fidelity" or m.startswith("torch_fidelity.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import fails as for a missing package
    with pytest.raises(MissingDependencyError, match=r"pip install 'nerfgan\[metrics\]'"):
        F.import_torch_fidelity()
    code, _, err = invoke(main, ["fid", "--engine", tmp_path / "e", "--reference", "tiny", "--n", 4], capsys)
    assert code == 1 and _one_line(err).endswith("nerfgan fid needs the metrics extra: pip install 'nerfgan[metrics]'")


BROKEN_TORCHVISION = "raise RuntimeError('operator torchvision::nms does not exist')\n"


@pytest.mark.slow
def test_a_broken_torchvision_is_stood_in_for_and_the_stand_in_does_not_leak(tmp_path):
    """A torchvision built for another torch fails at import (as PyPI's CUDA build beside a CPU torch does):
    torch-fidelity still imports, and afterwards torchvision is neither in sys.modules nor importable."""
    (tmp_path / "torchvision").mkdir()
    (tmp_path / "torchvision" / "__init__.py").write_text(BROKEN_TORCHVISION)
    script = (
        "import sys\n"
        "from nerfgan.evaluate.fid import import_torch_fidelity\n"
        "tf = import_torch_fidelity()\n"
        "from torch_fidelity import metric_fid, metric_kid, feature_extractor_inceptionv3\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'torchvision'], sorted(sys.modules)\n"
        "try:\n"
        "    import torchvision\n"
        "except RuntimeError as e:\n"
        "    assert 'nms' in str(e)\n"
        "else:\n"
        "    raise AssertionError('the stand-in leaked')\n"
        "import torch_fidelity.datasets as d\n"
        "try:\n"
        "    d.CIFAR10('x')\n"
        "except Exception as e:\n"
        "    assert 'torchvision' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('a stood-in class worked')\n"
        "print('ok', tf.__version__)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-2000:]
