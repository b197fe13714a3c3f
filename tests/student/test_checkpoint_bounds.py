"""Student files: a small file with a huge config is refused before any network is built.

Loads run under ``bounded`` (at most 256 MiB more address space, 60 s): code that builds what the
metadata asks for fails there with MemoryError instead of exhausting the machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import bounded
import torch
from safetensors.torch import save_file

from nerfgan.errors import CheckpointError, ConfigError
from nerfgan.student.checkpoint import FORMAT, load_student
from nerfgan.student.config import StudentConfig, student_preset
from nerfgan.teacher.config import preset


def student_file(path: Path, edit) -> Path:
    """A student file holding one small tensor, its config the tiny preset's as changed by ``edit``."""
    config = json.loads(student_preset("tiny", preset("tiny")).to_json())
    edit(config)
    save_file({"mapping.embed.bias": torch.zeros(512)}, str(path),
              metadata={"format": FORMAT, "config": json.dumps(config)})
    return path


def expect_refused(path: Path, *needles: str) -> None:
    with bounded(), pytest.raises(CheckpointError) as error:
        load_student(path)
    message = str(error.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    for needle in needles:
        assert needle in message, message


def test_huge_mapping_is_refused(tmp_path):
    # 300 000 layers of 512 x 512 float32: about 315 GB
    path = student_file(tmp_path / "deep.safetensors", lambda c: c.update(mapping_layers=300_000))
    assert path.stat().st_size < 8192
    expect_refused(path, "mapping_layers = 300000 exceeds the limit 16 (MAX_MAPPING_LAYERS)")


@pytest.mark.parametrize("field, value, needle", [
    ("channel_max", 16384, "channel_max = 16384 exceeds the limit 1024 (MAX_CHANNELS)"),
    ("channel_base", 10**9, "channel_base = 1000000000 exceeds the limit 65536 (MAX_CHANNEL_BASE)"),
    ("mapping_layers", 4.5, "mapping_layers = 4.5 is not an integer"),
])
def test_student_widths_are_bounded(tmp_path, field, value, needle):
    expect_refused(student_file(tmp_path / "wide.safetensors", lambda c: c.update({field: value})), needle)


def test_huge_teacher_inside_the_student_is_refused(tmp_path):
    def edit(config: dict) -> None:
        config["teacher"]["upstream_init_kwargs"]["z_dim"] = 10**8
    expect_refused(student_file(tmp_path / "t.safetensors", edit), "z_dim = 100000000 exceeds the limit 1024")


def test_weights_are_counted_against_the_config_before_building(tmp_path):
    # Within every limit (about 102 M values, 410 MB) but the file holds one small tensor.
    def edit(config: dict) -> None:
        config.update(channel_base=65536, channel_max=1024, mapping_layers=16)
        config["teacher"]["upstream_init_kwargs"].update(channel_base=65536, channel_max=1024)
    path = student_file(tmp_path / "big.safetensors", edit)
    expect_refused(path, "weights do not match the config (the config has", "the file 512 in 1", "missing tensor")


def test_a_student_config_names_its_file(tmp_path):
    config = json.loads(student_preset("tiny", preset("tiny")).to_json())
    text = json.dumps({**config, "channel_max": 4096})
    with pytest.raises(ConfigError, match=r"^student.json: student config: channel_max = 4096 exceeds the limit"):
        StudentConfig.from_json(text, source="student.json")


@pytest.mark.parametrize("edit", ["no optimizers", "step abc", "info not json"])
def test_a_malformed_train_state_is_a_checkpoint_error(tmp_path, edit):
    from safetensors import safe_open

    from nerfgan.student.checkpoint import load_train_state, save_train_state

    def parts():
        torch.manual_seed(0)
        m = torch.nn.Linear(2, 2)
        return m, torch.optim.Adam(m.parameters())

    m, opt = parts()
    path = save_train_state(tmp_path / "state.safetensors", {"G": m}, {"opt": opt}, {"step": 2})
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    if edit == "no optimizers":
        del meta["optimizers"]
    elif edit == "step abc":
        meta["info"] = json.dumps({"step": "abc"})
    else:
        meta["info"] = "{not json"
    save_file(tensors, str(path), metadata=meta)
    m, opt = parts()
    with pytest.raises(CheckpointError, match="state.safetensors: malformed training state"):
        load_train_state(path, {"G": m}, {"opt": opt})
