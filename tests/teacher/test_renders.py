"""Teacher render sets: format, agreement with direct rendering, determinism, resume, errors, CLI.

The tiny teacher renders about 1 sample/s on 2 CPU cores, so every set here has at most 6 samples
and the reference set is made once per module.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import invoke
from nerfgan.cli import main
from nerfgan.errors import InputFileError, NerfganError, UsageError
from nerfgan.sampling import PoseDistribution
from nerfgan.teacher import renders
from nerfgan.teacher.checkpoint import resolve_teacher_path
from nerfgan.teacher.renders import RenderSet, file_sha256, make_render_set

OPTS = dict(shard_size=2, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def ref_set(tmp_path_factory):
    """Samples 0..3 of seed 0 from the built-in tiny teacher, made in one uninterrupted run."""
    return make_render_set("tiny", 4, tmp_path_factory.mktemp("renders") / "ref", seed=0, **OPTS)


@pytest.fixture
def counted(monkeypatch):
    """Counts render_samples calls; set ``fail_after`` to raise KeyboardInterrupt on a later call."""
    state = {"calls": 0, "fail_after": None}
    real = renders.render_samples

    def wrapper(model, samples):
        if state["fail_after"] is not None and state["calls"] >= state["fail_after"]:
            raise KeyboardInterrupt
        state["calls"] += 1
        return real(model, samples)

    monkeypatch.setattr(renders, "render_samples", wrapper)
    return state


def assert_sets_equal(a: RenderSet, b: RenderSet) -> None:
    x, y = a.load(as_float32=False), b.load(as_float32=False)
    assert x.keys() == y.keys()
    for k in x:
        assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), k


def no_temporaries(directory) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_shapes_dtypes_and_index(ref_set, builtin_teacher):
    rs = RenderSet.open(ref_set)
    cfg = builtin_teacher.config  # ref_set is the built-in teacher's (no longer the fixture's config)
    R, H = cfg.neural_rendering_resolution, cfg.img_resolution
    assert len(rs) == 4 and len(rs.shard_entries) == 2 and rs.seed == 0
    assert rs.config == cfg and rs.dist == PoseDistribution()
    assert (rs.neural_rendering_resolution, rs.image_resolution) == (64, 128)
    assert rs.teacher_sha256 == file_sha256(resolve_teacher_path("tiny"))
    raw = rs.load(as_float32=False)
    expected = {"index": ("int64", (4,)), "z": ("float32", (4, cfg.z_dim)), "c": ("float32", (4, 25)),
                "c_cond": ("float32", (4, 25)), "psi": ("float32", (4,)), "yaw": ("float32", (4,)),
                "pitch": ("float32", (4,)), "w": ("float32", (4, cfg.w_dim)),
                "feature_image": ("float16", (4, 32, R, R)), "image_raw": ("float16", (4, 3, R, R)),
                "image": ("float16", (4, 3, H, H)), "image_depth": ("float32", (4, 1, R, R))}
    assert {k: (str(v.dtype), v.shape) for k, v in raw.items()} == expected
    assert np.array_equal(raw["index"], np.arange(4))
    assert np.array_equal(raw["image_raw"], raw["feature_image"][:, :3])
    f32 = rs.load([3, 1])
    assert f32["image"].dtype == np.float32 and np.array_equal(f32["index"], [3, 1])
    assert np.array_equal(f32["image"], raw["image"][[3, 1]].astype(np.float32))
    shards = list(rs.shards())
    assert [len(s["index"]) for s in shards] == [2, 2]
    index = json.loads((ref_set / "index.json").read_text())
    assert index["format"] == "nerfgan-render-set" and index["n"] == 4 and index["shard_size"] == 2
    assert index["render"]["render_mode"] == "deterministic" and index["render"]["noise_mode"] == "const"
    assert [s["file"] for s in index["shards"]] == ["shard-00000.npz", "shard-00001.npz"]
    assert no_temporaries(ref_set)


def test_stored_arrays_match_direct_rendering(ref_set, builtin_teacher):
    tiny_teacher = builtin_teacher  # the set was rendered by --teacher tiny
    rs = RenderSet.open(ref_set)
    for i in (0, 3):
        s = rs.load([i])
        z, c, c_cond = (torch.from_numpy(s[k]) for k in ("z", "c", "c_cond"))
        psi = float(s["psi"][0])
        with torch.no_grad():
            ws = tiny_teacher.mapping(z, c_cond, psi)
            out = tiny_teacher.synthesis(ws, c)
        assert np.array_equal(s["w"], ws[:, 0].numpy())
        # float16 storage: at most half an ulp (2**-11 relative) plus batch-size float32 noise
        for name, got in (("feature_image", out.feature_image), ("image_raw", out.feature_image[:, :3]),
                          ("image", out.image)):
            np.testing.assert_allclose(s[name], got.numpy(), rtol=2 ** -11, atol=1e-5, err_msg=name)
        # depth is the ratio sum(w t) / sum(w): on silhouette pixels, where sum(w) is small, the batch-size
        # float32 noise of w is amplified (the fitted teacher's sharp edges: 1 pixel in 4096 off by 3e-5)
        np.testing.assert_allclose(s["image_depth"], out.image_depth.numpy(), rtol=2e-5, atol=1e-5)
    assert not np.array_equal(rs.load([0])["image"], rs.load([1])["image"])


def test_interrupted_run_resumes_and_equals_one_run(ref_set, tmp_path, counted):
    out = tmp_path / "resumed"
    counted["fail_after"] = 1  # the second batch (= second shard) is interrupted
    with pytest.raises(KeyboardInterrupt):
        make_render_set("tiny", 4, out, seed=0, **OPTS)
    assert counted["calls"] == 1 and no_temporaries(out)
    assert [s["file"] for s in json.loads((out / "index.json").read_text())["shards"]] == ["shard-00000.npz"]
    with pytest.raises(InputFileError, match="incomplete"):
        RenderSet.open(out)
    assert len(RenderSet.open(out, allow_incomplete=True)) == 2
    counted["fail_after"], counted["calls"] = None, 0
    make_render_set("tiny", 4, out, seed=0, **OPTS)
    assert counted["calls"] == 1  # only the missing shard
    assert_sets_equal(RenderSet.open(out), RenderSet.open(ref_set))

    # the same set again: nothing to render
    counted["calls"] = 0
    make_render_set("tiny", 4, out, seed=0, **OPTS)
    assert counted["calls"] == 0

    # extending to 6 samples renders one more shard and leaves the first two untouched
    before = {s["file"]: s["sha256"] for s in json.loads((out / "index.json").read_text())["shards"]}
    make_render_set("tiny", 6, out, seed=0, **OPTS)
    assert counted["calls"] == 1
    after = {s["file"]: s["sha256"] for s in json.loads((out / "index.json").read_text())["shards"]}
    assert {k: after[k] for k in before} == before and len(after) == 3
    assert all(file_sha256(out / f) == h for f, h in after.items())
    rs = RenderSet.open(out)
    assert len(rs) == 6 and np.array_equal(rs.load()["index"], np.arange(6))

    # a deleted shard is re-rendered, bitwise the same
    (out / "shard-00001.npz").unlink()
    counted["calls"] = 0
    make_render_set("tiny", 6, out, seed=0, **OPTS)
    assert counted["calls"] == 1 and json.loads((out / "index.json").read_text())["shards"][1]["sha256"] == \
        after["shard-00001.npz"]
    with pytest.raises(UsageError, match="shrink"):
        make_render_set("tiny", 3, out, seed=0, **OPTS)
    assert no_temporaries(out)


def test_other_seed_differs_and_is_refused_in_the_same_directory(ref_set, tmp_path):
    other = make_render_set("tiny", 1, tmp_path / "seed1", seed=1, **OPTS)
    a, b = RenderSet.open(ref_set).load([0]), RenderSet.open(other).load([0])
    assert not np.array_equal(a["z"], b["z"]) and not np.array_equal(a["image"], b["image"])
    before = (ref_set / "index.json").read_bytes()
    with pytest.raises(NerfganError, match="seed: 0 there, 1 asked") as e:
        make_render_set("tiny", 4, ref_set, seed=1, **OPTS)
    assert str(ref_set) in str(e.value) and "new -o" in str(e.value)
    with pytest.raises(NerfganError, match="pitch_std_deg"):
        make_render_set("tiny", 4, ref_set, seed=0, dist=PoseDistribution(pitch_std_deg=1.0), **OPTS)
    assert (ref_set / "index.json").read_bytes() == before


def test_damaged_sets_are_detected_on_open(ref_set, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(ref_set, d)
    shard = d / "shard-00001.npz"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = b"\x00" * 16
    shard.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="shard-00001.npz.*corrupt"):
        RenderSet.open(d)
    shard.unlink()
    with pytest.raises(InputFileError, match="shard-00001.npz.*not found"):
        RenderSet.open(d)
    (d / "index.json").write_text("{not json")
    with pytest.raises(InputFileError, match="index.json"):
        RenderSet.open(d)
    (d / "index.json").unlink()
    with pytest.raises(InputFileError, match="index.json.*not found"):
        RenderSet.open(d)
    with pytest.raises(InputFileError, match="index.json"):  # resuming into a broken directory is refused too
        (d / "index.json").write_text("[]")
        make_render_set("tiny", 2, d, **OPTS)


def test_bad_options(tmp_path):
    with pytest.raises(UsageError, match="--n"):
        make_render_set("tiny", 0, tmp_path / "x", progress=False)
    with pytest.raises(UsageError, match="--shard-size"):
        make_render_set("tiny", 2, tmp_path / "x", shard_size=0, progress=False)
    with pytest.raises(InputFileError, match="nope.safetensors"):
        make_render_set(tmp_path / "nope.safetensors", 2, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def run(args, capsys):
    return invoke(main, args, capsys)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    code, stdout, err = run(["teacher", "renders", "--teacher", "tiny", "--n", 1, "--seed", 5, "-o", out,
                             "--batch-size", 2, "--shard-size", 2, "--pitch-std", 5, "--device", "cpu"], capsys)
    assert code == 0, err
    assert "1 samples in 1 shards" in stdout and "MB" in stdout
    rs = RenderSet.open(out)
    assert len(rs) == 1 and rs.seed == 5 and rs.dist.pitch_std_deg == 5.0
    code, stdout, _ = run(["teacher", "renders", "--teacher", "tiny", "--n", 4, "--seed", 5, "-o", out,
                           "--shard-size", 2, "--pitch-std", 5, "--dry-run"], capsys)
    assert code == 0 and json.loads(stdout)["shards_to_render"] == [{"start": 0, "count": 2}, {"start": 2, "count": 2}]
    code, _, err = run(["teacher", "renders", "--teacher", "tiny", "--n", 0, "-o", tmp_path / "zero"], capsys)
    assert code == 2 and "--n" in err and err.count("\n") == 1
    code, _, err = run(["teacher", "renders", "--teacher", "tiny", "--n", 1, "--seed", 6, "-o", out,
                        "--shard-size", 2, "--pitch-std", 5], capsys)
    assert code == 1 and str(out) in err and "seed" in err
