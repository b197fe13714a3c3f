"""The teacher's parameter and buffer names, shapes and order are exactly upstream's."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import OFFICIAL_CONFIGS
from nerfgan.teacher.config import TeacherConfig, preset
from nerfgan.teacher.generator import EG3D


def _build_meta(config: TeacherConfig) -> EG3D:
    with torch.device("meta"):
        return EG3D(config)


@pytest.mark.parametrize("path", OFFICIAL_CONFIGS, ids=[p.stem for p in OFFICIAL_CONFIGS])
def test_official_config_keys_and_shapes(path):
    spec = json.loads(path.read_text())
    config = TeacherConfig.from_upstream(spec["init_kwargs"], spec["pickled_attributes"]["neural_rendering_resolution"])
    model = _build_meta(config)
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    expected = [(k, v) for k, v in spec["state_dict"].items()]
    missing = {k for k, _ in expected} - {k for k, _ in got}
    unexpected = {k for k, _ in got} - {k for k, _ in expected}
    assert not missing and not unexpected, (missing, unexpected)
    assert got == expected  # same shapes, same order as upstream's state_dict()
    buffers = {name for name, _ in model.named_buffers()}
    assert buffers == set(spec["buffers"])
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == spec["num_params"]


def test_official_presets_match_the_shared_configs():
    for path in OFFICIAL_CONFIGS:
        spec = json.loads(path.read_text())
        cfg = TeacherConfig.from_upstream(spec["init_kwargs"], spec["pickled_attributes"]["neural_rendering_resolution"])
        assert preset(path.stem) == cfg


def test_fixture_weights_load_strictly(reference):
    model = EG3D(reference.config)
    assert list(model.state_dict()) == list(reference.state)
    model.load_state_dict(reference.state, strict=True)


def test_config_round_trips_through_upstream_kwargs_and_json():
    for path in OFFICIAL_CONFIGS:
        spec = json.loads(path.read_text())
        cfg = TeacherConfig.from_upstream(spec["init_kwargs"], 128)
        assert TeacherConfig.from_upstream(cfg.to_upstream(), 128) == cfg
        assert TeacherConfig.from_json(cfg.to_json()) == cfg
        # every rendering kwarg of upstream survives the round trip
        assert cfg.to_upstream()["rendering_kwargs"] == {**spec["init_kwargs"]["rendering_kwargs"]}
