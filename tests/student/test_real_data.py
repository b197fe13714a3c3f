"""Real images in stage 2 (--real): the data set's checks, the discriminator's batch, the CLI and resume."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from conftest import invoke

from nerfgan import camera
from nerfgan.cli import main
from nerfgan.errors import ConfigError, InputFileError, UsageError
from nerfgan.sampling import PoseDistribution, draw
from nerfgan.scenes.dataset import image_name, open_dataset
from nerfgan.student.real_data import RealImages, downsample, real_count
from nerfgan.student.train import Trainer, TrainConfig, train_preset

FAST = ["--batch-size", "2", "--n-eval", "2", "--eval-every", "1", "--device", "cpu"]


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def make_data(path: Path, n: int = 6, res: int = 128, seed: int = 5, images: dict[int, bytes | None] | None = None,
              labels: dict[int, list] | None = None, as_zip: bool = True) -> Path:
    """An EG3D-format data set (the layout nerfgan scene dataset writes) of smooth random images, the 25-value cameras
    of samples 0..n-1 of ``seed`` as labels; ``images`` / ``labels`` replace entries (None: no such file), to make
    broken data sets."""
    rng = np.random.default_rng(seed)
    cams = draw(seed, range(n), PoseDistribution(), camera.DEFAULT_RADIUS, camera.DEFAULT_PIVOT).c
    files, entries = {}, []
    for i in range(n):
        low = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(low).resize((res, res), Image.BILINEAR))
        files[image_name(i)] = (images or {}).get(i, png(image))
        entries.append([image_name(i), (labels or {}).get(i, [float(v) for v in cams[i]])])
    files["dataset.json"] = json.dumps({"labels": entries}).encode()
    if as_zip:
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in files.items():
                if data is not None:
                    zf.writestr(name, data)
    else:
        for name, data in files.items():
            if data is None:
                continue
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
    return path


def filtered_half(x: np.ndarray) -> np.ndarray:
    """(C, 2R, 2R) -> (C, R, R) by hand: [1, 3, 3, 1] / 8 along rows then columns, taps outside renormalised away."""
    def along(a: np.ndarray, axis: int) -> np.ndarray:
        a = np.moveaxis(a, axis, -1)
        n = a.shape[-1]
        out = np.zeros(a.shape[:-1] + (n // 2,))
        for i in range(n // 2):
            taps = [(j, w) for j, w in zip(range(2 * i - 1, 2 * i + 3), (1, 3, 3, 1)) if 0 <= j < n]
            out[..., i] = sum(w * a[..., j] for j, w in taps) / sum(w for _, w in taps)
        return np.moveaxis(out, -1, axis)
    return along(along(x.astype(np.float64), -1), -2)


@pytest.fixture(scope="module")
def teacher():
    from nerfgan.teacher.checkpoint import load_teacher

    return load_teacher("tiny")


def _fake_batch(B: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(B, 512, generator=g), "c": torch.randn(B, 25, generator=g),
            "feature_image": torch.randn(B, 32, 64, 64, generator=g), "image": torch.randn(B, 3, 128, 128, generator=g)}


@pytest.fixture
def no_teacher_renders(monkeypatch):
    """The trainer's teacher renders (batches and held-out set) replaced by random targets that depend on (seed,
    indices) only, as the renders do: for tests of what the discriminator sees, not of what the teacher renders."""
    from nerfgan.student import train

    def fake(teacher, seed, indices, dist_, chunk=4):
        parts = [_fake_batch(1, seed * 100_003 + int(i)) for i in indices]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    monkeypatch.setattr(train, "teacher_batch", fake)


# --- the data set ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("as_zip", [True, False])
def test_load_returns_images_in_minus_one_one_and_their_labels(tmp_path, as_zip):
    path = tmp_path / ("d.zip" if as_zip else "d")
    if not as_zip:
        path.mkdir()
    make_data(path, n=5, as_zip=as_zip)
    real = RealImages(path)
    assert (len(real), real.width, real.height) == (5, 128, 128)
    images, cams = real.load([3, 1])
    ds = open_dataset(path)
    assert images.shape == (2, 3, 128, 128) and images.dtype == torch.float32 and cams.shape == (2, 25)
    expected = torch.from_numpy(np.stack([ds.image(3), ds.image(1)])).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(images, expected) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(cams, torch.from_numpy(ds.labels[[3, 1]]))
    assert real.digest == RealImages(path).digest  # a function of the data set
    other = make_data(tmp_path / "other.zip", n=5, seed=6)
    assert RealImages(other).digest != real.digest


def test_the_cache_is_bounded(tmp_path):
    real = RealImages(make_data(tmp_path / "d.zip", n=6), cache_bytes=2 * 128 * 128 * 3)
    for i in range(6):
        real.image(i)
    assert len(real._cache) == 2 and sorted(real._cache) == [4, 5] and real._cache_bytes <= 2 * 128 * 128 * 3


def test_picks_are_a_function_of_seed_and_step(tmp_path):
    real = RealImages(make_data(tmp_path / "d.zip", n=6))
    a = real.pick(0, 7, 3)
    assert len(set(a.tolist())) == 3 and np.array_equal(a, real.pick(0, 7, 3))
    assert any(not np.array_equal(a, real.pick(0, s, 3)) for s in range(8, 12))
    seed0, seed1 = (np.stack([real.pick(seed, s, 3) for s in range(8)]) for seed in (0, 1))
    assert not np.array_equal(seed0, seed1)


def test_real_count_rounds_half_up():
    assert [real_count(f, 4) for f in (0.1, 0.125, 0.25, 0.5, 0.6, 1.0)] == [0, 1, 1, 2, 2, 4]


def test_the_low_resolution_branch_is_the_antialiased_downsampling(tmp_path):
    real = RealImages(make_data(tmp_path / "d.zip", n=2))
    images, _ = real.load([0, 1])
    raw = downsample(images, 64)
    assert raw.shape == (2, 3, 64, 64)
    for k in range(2):
        np.testing.assert_allclose(raw[k].numpy(), filtered_half(images[k].numpy()), atol=1e-5)
    strided = images[:, :, ::2, ::2]  # what plain subsampling (no filter) would give: not this
    assert (raw - strided).abs().max() > 0.05


def test_a_16_bit_grey_image_is_scaled_not_clipped(tmp_path):
    grey = (np.arange(128 * 128, dtype=np.uint32).reshape(128, 128) % 256).astype(np.uint16) * 257
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "I;16"
    real = RealImages(make_data(tmp_path / "d.zip", images={0: buf.getvalue()}))
    image = real.image(0)
    assert image.dtype == np.uint8 and image.shape == (128, 128, 3)
    np.testing.assert_array_equal(image[..., 1], grey // 257)
    assert (image == 255).mean() < 0.01
    assert np.array_equal(open_dataset(tmp_path / "d.zip").image(0), image)


def test_a_truncated_image_is_one_error_naming_it_when_read(tmp_path):
    whole = png(np.full((128, 128, 3), 7, np.uint8))
    real = RealImages(make_data(tmp_path / "d.zip", n=3, images={2: whole[:len(whole) // 2]}))  # header intact
    real.load([0, 1])
    with pytest.raises(InputFileError, match=r"img00000002.png is not a readable image"):
        real.load([2])


def test_config_records_the_data_set_and_reads_older_files(tmp_path):
    real = RealImages(make_data(tmp_path / "d.zip", n=4))
    cfg = train_preset("tiny", **real.config_fields(0.5))
    d = json.loads(cfg.to_json())
    assert (d["real"], d["real_fraction"], d["real_count"], d["real_digest"]) == (str(real.path), 0.5, 4, real.digest)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    old = {k: v for k, v in d.items() if not k.startswith("real")}  # a config.json from before --real
    assert TrainConfig.from_json(json.dumps(old)) == train_preset("tiny")
    with pytest.raises(ConfigError, match="need real"):
        TrainConfig(real_fraction=0.5)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="real-fraction"):
            TrainConfig(real="d.zip", real_fraction=bad)


# --- the discriminator's real samples ------------------------------------------------------------------------
def test_the_d_batch_holds_fraction_f_of_real_images(tmp_path, teacher, no_teacher_renders):
    real = RealImages(make_data(tmp_path / "d.zip", n=6))
    cfg = train_preset("tiny", batch_size=4, n_eval=2, eval_every=0, stage1_steps=0, **real.config_fields(0.5))
    trainer = Trainer(cfg, teacher, tmp_path / "run", progress=False, real=real)
    assert trainer.n_real == 2
    trainer.step = 9
    batch = _fake_batch(4)
    img, raw, c, n = trainer.d_real_samples(batch)
    assert n == 2 and img.shape == (4, 3, 128, 128) and raw.shape == (4, 3, 64, 64) and c.shape == (4, 25)
    assert torch.equal(img[:2], batch["image"][:2]) and torch.equal(raw[:2], batch["feature_image"][:2, :3])
    assert torch.equal(c[:2], batch["c"][:2])  # the teacher's renders and their render cameras ...
    picks = real.pick(cfg.seed, 9, 2)
    images, cams = real.load(picks)
    assert torch.equal(img[2:], images) and torch.equal(c[2:], cams)  # ... then real images with their own cameras
    assert torch.equal(raw[2:], downsample(images, 64))

    # two processes, each with half the global batch, hold the same samples in the same order
    parts = []
    for rank in range(2):
        trainer.rank, trainer.world = rank, 2
        local = {k: v[rank * 2:(rank + 1) * 2] for k, v in batch.items()}
        parts.append(trainer.d_real_samples(local))
    trainer.rank, trainer.world = 0, 1
    for k, whole in enumerate((img, raw, c)):
        assert torch.equal(torch.cat([parts[0][k], parts[1][k]]), whole)
    trainer.close()


def test_a_stage_2_step_shows_the_discriminator_real_images(tmp_path, teacher, no_teacher_renders):
    real = RealImages(make_data(tmp_path / "d.zip", n=6))
    cfg = train_preset("tiny", batch_size=2, n_eval=1, eval_every=0, stage1_steps=0, **real.config_fields(0.5))
    trainer = Trainer(cfg, teacher, tmp_path / "run", progress=False, real=real)
    calls = []
    forward = trainer.D.forward

    def recording(image, image_raw, c):
        calls.append((image.detach().clone(), image_raw.detach().clone(), c.detach().clone()))
        return forward(image, image_raw, c)

    trainer.D.forward = recording
    logs = trainer.train_step()
    assert logs["real_images"] == 1 and trainer.real_images == 1
    assert len(calls) == 3  # G's adversarial term, D on real samples, D on fakes
    images, cams = real.load(real.pick(cfg.seed, 0, 1))
    image, image_raw, c = calls[1]
    assert torch.equal(image[1:], images) and torch.equal(c[1:], cams)
    assert torch.equal(image_raw[1:], downsample(images, 64))
    batch = trainer.data.batch(0)
    assert torch.equal(image[:1], batch["image"][:1]) and torch.equal(c[:1], batch["c"][:1])  # the teacher's sample
    assert not torch.equal(calls[2][0][1:], images)  # the fakes are the student's
    trainer.close()


# --- the command line ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_runs_both_stages_with_real_images(tmp_path, capsys):
    data = make_data(tmp_path / "data.zip", n=6)
    run = tmp_path / "run"
    code, out, err = invoke(main, ["train", "--teacher", "tiny", "--out", run, "--steps", 3, "--stage1-steps", 1,
                                   "--real", data, *FAST], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert [r["real_images"] for r in rows] == [0, 0, 1, 2]  # none in stage 1, one of two samples in each stage-2 step
    train = json.loads((run / "config.json").read_text())["train"]
    real = RealImages(data)
    assert (train["real"], train["real_fraction"], train["real_count"], train["real_digest"]) == \
        (str(data), 0.5, 6, real.digest)
    with safe_open(str(run / "train_state.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["info"])["real_images"] == 2

    # the same run with another data set is refused on resume, as any other change of settings
    other = make_data(tmp_path / "other.zip", n=6, seed=9)
    code, _, err = invoke(main, ["train", "--teacher", "tiny", "--out", run, "--steps", 4, "--stage1-steps", 1,
                                 "--real", other, "--resume", *FAST], capsys)
    last = err.strip().splitlines()[-1]  # after the progress lines (loading the teacher, building the student)
    assert code == 2 and last.startswith("Error: --resume") and "other settings" in last and "real" in last
    assert "Traceback" not in err
    code, _, err = invoke(main, ["train", "--teacher", "tiny", "--out", run, "--steps", 4, "--stage1-steps", 1,
                                 "--resume", *FAST], capsys)
    assert code == 2 and "real" in err  # and without --real


def _bad_sets(tmp: Path) -> dict[str, tuple[list, str]]:
    """name -> (extra argv, what the one error line says)."""
    whole = png(np.zeros((128, 128, 3), np.uint8))
    no_labels = tmp / "nolabels"
    (no_labels / "00000").mkdir(parents=True)
    (no_labels / "00000" / "img00000000.png").write_bytes(whole)
    return {
        "wrong camera length": (["--real", make_data(tmp / "a.zip", labels={2: [0.0] * 24})],
                                "dataset.json label 2 is not [name, [25 numbers]]"),
        "unreadable image": (["--real", make_data(tmp / "b.zip", images={4: b"not a png at all"})],
                             "00000/img00000004.png is not a readable image"),
        "wrong size": (["--real", make_data(tmp / "c.zip", res=64)], "images are 64x64 pixels"),
        "mixed sizes": (["--real", make_data(tmp / "d.zip", images={3: png(np.zeros((64, 64, 3), np.uint8))})],
                        "00000/img00000003.png is 64x64 pixels"),
        "no dataset.json": (["--real", no_labels], "has no dataset.json"),
        "missing image": (["--real", make_data(tmp / "e.zip", images={1: None})], "has no 00000/img00000001.png"),
        "too few images": (["--real", make_data(tmp / "f.zip", n=1), "--real-fraction", "1"],
                           "has 1 images, fewer than the 2 each step"),
        "not there": (["--real", tmp / "nowhere.zip"], "data set not found"),
        "bad crc": (["--real", _bad_crc(make_data(tmp / "g.zip"), 3)], "00000/img00000003.png is damaged"),
    }


def _bad_crc(path: Path, i: int) -> Path:
    """Flip one byte inside stored member ``image_name(i)`` of the zip ``path``: its CRC-32 no longer matches."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(image_name(i))
    assert info.compress_type == zipfile.ZIP_STORED
    raw = bytearray(path.read_bytes())
    at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


BAD_SETS = ["wrong camera length", "unreadable image", "wrong size", "mixed sizes", "no dataset.json", "missing image",
            "too few images", "not there", "bad crc"]


def test_the_bad_set_cases_are_all_run(tmp_path):
    assert list(_bad_sets(tmp_path)) == BAD_SETS


@pytest.mark.parametrize("case", BAD_SETS)
def test_a_bad_data_set_is_one_error_line_before_any_training(case, tmp_path, capsys):
    (tmp_path / "sets").mkdir()
    argv, message = _bad_sets(tmp_path / "sets")[case]
    run = tmp_path / "run"
    code, out, err = invoke(main, ["train", "--teacher", "tiny", "--out", run, "--steps", 3, *argv, *FAST], capsys)
    assert code == 1 and err.startswith("Error: --real ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not run.exists()  # no run folder, no checkpoint: nothing was trained


@pytest.mark.parametrize("argv, message", [
    (["--real-fraction", "0.5"], "--real-fraction needs --real"),
    (["--real", "DATA", "--real-fraction", "0"], "--real-fraction"),
    (["--real", "DATA", "--real-fraction", "1.5"], "--real-fraction"),
    (["--real", "DATA", "--real-fraction", "0.2"], "no real image per step"),  # 0.2 of a batch of 2 rounds to 0
])
def test_real_fraction_errors(argv, message, tmp_path, capsys):
    data = make_data(tmp_path / "data.zip", n=4)
    argv = [str(data) if a == "DATA" else a for a in argv]
    code, _, err = invoke(main, ["train", "--out", tmp_path / "run", "--steps", 1, *argv, *FAST], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_dry_run_prints_the_real_data_set(tmp_path, capsys):
    data = make_data(tmp_path / "data.zip", n=4)
    code, out, err = invoke(main, ["train", "--out", tmp_path / "run", "--real", data, "--real-fraction", "0.25",
                                   "--batch-size", "4", "--dry-run"], capsys)
    assert code == 0, err
    train = json.loads(out)["train"]
    assert (train["real"], train["real_fraction"], train["real_count"]) == (str(data), 0.25, 4)
    code, out, _ = invoke(main, ["train", "--out", tmp_path / "run", "--dry-run"], capsys)
    assert code == 0 and json.loads(out)["train"]["real"] is None and not (tmp_path / "run").exists()


# --- resume ---------------------------------------------------------------------------------------------------
def _state(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.slow
def test_resume_with_real_images_ends_with_the_same_weights(tmp_path, teacher, no_teacher_renders):
    real = RealImages(make_data(tmp_path / "d.zip", n=6))
    cfg = train_preset("tiny", batch_size=2, n_eval=1, eval_every=0, stage1_steps=1, ckpt_every=1,
                       **real.config_fields(0.5))
    Trainer(cfg, teacher, tmp_path / "full", progress=False, real=real).run(steps=3)
    Trainer(cfg, teacher, tmp_path / "cut", progress=False, real=real).run(steps=2)
    resumed = Trainer(cfg, teacher, tmp_path / "cut", resume=True, progress=False, real=real)
    assert resumed.real_images == 1
    resumed.run(steps=3)
    a, b = _state(tmp_path / "full" / "train_state.safetensors"), _state(tmp_path / "cut" / "train_state.safetensors")
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []  # G, G_ema, D, optimizers
    assert resumed.real_images == 2


def test_a_run_from_before_real_images_resumes(tmp_path, teacher, no_teacher_renders):
    cfg = train_preset("tiny", batch_size=2, n_eval=1, eval_every=0, stage1_steps=10)
    with Trainer(cfg, teacher, tmp_path / "old", progress=False) as t:
        t.checkpoint()  # a run stopped at step 0
    path = tmp_path / "old" / "config.json"
    saved = json.loads(path.read_text())
    saved["train"] = {k: v for k, v in saved["train"].items() if not k.startswith("real")}
    path.write_text(json.dumps(saved))  # what a run started before --real existed wrote
    with Trainer(cfg, teacher, tmp_path / "old", resume=True, progress=False) as t:
        assert t.step == 0 and t.real is None
    real = RealImages(make_data(tmp_path / "d.zip", n=4))
    with pytest.raises(UsageError, match="other settings"):  # but not with real images added
        Trainer(train_preset("tiny", batch_size=2, n_eval=2, eval_every=0, stage1_steps=10, **real.config_fields(0.5)),
                teacher, tmp_path / "old", resume=True, progress=False, real=real)
