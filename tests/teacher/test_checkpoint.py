"""Teacher files: upstream pickle -> safetensors import, loading, and every malformed-file error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import UPSTREAM_PKL
from nerfgan.errors import CheckpointError, InputFileError
from nerfgan.teacher.checkpoint import build_teacher, load_teacher, read_teacher_metadata, save_teacher
from nerfgan.teacher.config import TeacherConfig
from nerfgan.teacher.upstream_pickle import read_upstream_snapshot


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    snap = read_upstream_snapshot(UPSTREAM_PKL)
    config = TeacherConfig.from_upstream(snap.init_kwargs, snap.neural_rendering_resolution)
    path = tmp_path_factory.mktemp("teacher") / "tiny.safetensors"
    save_teacher(build_teacher(config, snap.state_dict), path)
    return path


def test_import_equals_reference_weights_and_renders_identically(imported, reference, tiny_teacher):
    model = load_teacher(imported)
    assert model.config == reference.config
    sd = model.state_dict()
    assert list(sd) == list(reference.state)
    for k, v in reference.state.items():
        assert torch.equal(sd[k], v), k
    z = torch.from_numpy(reference.z)
    c = torch.from_numpy(reference.c[1])
    with torch.no_grad():
        a = model(z, c, c_cond=torch.from_numpy(reference.c_cond), truncation_psi=0.7)
        b = tiny_teacher(z, c, c_cond=torch.from_numpy(reference.c_cond), truncation_psi=0.7)
    for name in ("image", "image_raw", "image_depth", "feature_image"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_metadata_describes_the_file(imported):
    meta = read_teacher_metadata(imported)
    assert meta["format"] == "nerfgan-teacher"
    assert TeacherConfig.from_json(meta["config"]).neural_rendering_resolution == 64


def test_generator_g_differs_from_g_ema():
    g = read_upstream_snapshot(UPSTREAM_PKL, which="G").state_dict
    g_ema = read_upstream_snapshot(UPSTREAM_PKL).state_dict
    assert not torch.equal(g["backbone.mapping.fc0.weight"], g_ema["backbone.mapping.fc0.weight"])


def _rewrite(src, dst, edit):
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(src))
    edit(tensors)
    save_file(tensors, str(dst), metadata=meta)


def test_missing_tensor_is_named(imported, tmp_path):
    bad = tmp_path / "missing.safetensors"
    _rewrite(imported, bad, lambda t: t.pop("decoder.net.2.bias"))
    with pytest.raises(CheckpointError, match=r"missing.safetensors.*missing tensor.*decoder\.net\.2\.bias"):
        load_teacher(bad)


def test_extra_tensor_is_named(imported, tmp_path):
    bad = tmp_path / "extra.safetensors"
    _rewrite(imported, bad, lambda t: t.update({"decoder.net.9.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"extra.safetensors.*unexpected tensor.*decoder\.net\.9\.weight"):
        load_teacher(bad)


def test_wrong_shape_is_named(imported, tmp_path):
    bad = tmp_path / "shape.safetensors"
    _rewrite(imported, bad, lambda t: t.update({"decoder.net.0.bias": torch.zeros(65)}))
    with pytest.raises(CheckpointError, match=r"shape.safetensors.*decoder\.net\.0\.bias"):
        load_teacher(bad)


def test_not_a_safetensors_file(tmp_path):
    bad = tmp_path / "notes.safetensors"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.safetensors"):
        load_teacher(bad)


def test_safetensors_without_teacher_metadata(tmp_path):
    bad = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(1)}, str(bad))
    with pytest.raises(CheckpointError, match=r"plain.safetensors.*not a nerfgan teacher"):
        load_teacher(bad)


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="nowhere.safetensors"):
        load_teacher(tmp_path / "nowhere.safetensors")


def test_save_is_atomic_and_leaves_no_temporary(imported, tmp_path):
    model = load_teacher(imported)
    out = tmp_path / "copy.safetensors"
    save_teacher(model, out)
    assert [p.name for p in tmp_path.iterdir()] == ["copy.safetensors"]
    assert np.array_equal(load_file(str(out))["backbone.mapping.w_avg"].numpy(), model.backbone.mapping.w_avg.numpy())


def test_builtin_tiny_teacher_is_the_fixture_architecture_fitted_to_the_scene_family(reference):
    """The fixture's config with a wider backbone (the fit's channel_base / channel_max: tri-planes with room for
    the family's pattern), so the same modules and keys as every upstream-format test; other weights; and the
    fit travels in the file."""
    import dataclasses
    import json

    model = load_teacher("tiny")
    meta = read_teacher_metadata("tiny")
    fit = json.loads(meta["fit_config"])
    assert model.config == dataclasses.replace(reference.config, channel_base=fit["channel_base"],
                                               channel_max=fit["channel_max"])
    assert set(model.state_dict()) == set(reference.state)
    assert not torch.equal(model.state_dict()["decoder.net.0.weight"], reference.state["decoder.net.0.weight"])
    family = json.loads(meta["scene_family"])
    assert family["latent_dim"] == 32 and family["version"] == 2  # the family this nerfgan builds
    assert fit["field_steps"] > 0


def test_builtin_name_does_not_shadow_an_existing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").write_text("not a teacher")
    with pytest.raises(CheckpointError, match="tiny"):
        load_teacher("tiny")


def test_the_same_teacher_file_has_the_same_bytes_in_every_process(tmp_path):
    """safetensors writes metadata in hash-map order; write_safetensors sorts it (files are known by sha256)."""
    import hashlib
    import subprocess
    import sys

    code = ("import sys; from nerfgan.teacher.checkpoint import load_teacher, save_teacher; "
            "save_teacher(load_teacher('tiny'), sys.argv[1], {'source': 'a', 'zeta': 'b', 'alpha': 'c'})")
    digests = set()
    for i in range(3):
        path = tmp_path / f"t{i}.safetensors"
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
