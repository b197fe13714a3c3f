"""Small hostile files must not make nerfgan allocate gigabytes: teacher pickles and teacher safetensors.

Every load here runs under ``bounded``: at most 256 MiB more address space and 60 s. Code that builds the
network a file asks for, or expands shared references, fails there with MemoryError (or TimeoutError)
instead of exhausting the machine; the fixed code refuses with one typed error line naming the file.
"""

from __future__ import annotations

import json
import pickle
import struct
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import Reduce, bounded, invoke
from nerfgan.cli import main
from nerfgan.errors import CheckpointError, ConfigError
from nerfgan.teacher.checkpoint import load_teacher
from nerfgan.teacher.config import TeacherConfig, preset
from nerfgan.teacher.upstream_pickle import read_upstream_snapshot

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def one_line(error: pytest.ExceptionInfo, path: Path, *needles: str) -> str:
    message = str(error.value)
    assert str(path) in message and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# ---------------------------------------------------------------------------- pickle builders


@pytest.fixture
def persistent(monkeypatch: pytest.MonkeyPatch):
    """persistent(class_name, state) -> what torch_utils.persistence pickles (a fake module names it)."""

    def _reconstruct_persistent_obj(meta: dict) -> None:
        raise AssertionError("never called: the loader maps the name to its own stand-in")

    module = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = module.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_utils", types.ModuleType("torch_utils"))
    monkeypatch.setitem(sys.modules, module.__name__, module)

    def make(class_name: str, state: dict) -> Reduce:
        return Reduce(_reconstruct_persistent_obj, {"type": "class", "version": 6, "module_src": "",
                                                    "class_name": class_name, "state": state})
    return make


def module_state(params: dict | None = None, modules: dict | None = None, **attrs: object) -> dict:
    return {"_parameters": OrderedDict(params or {}), "_buffers": OrderedDict(),
            "_non_persistent_buffers_set": set(), "_modules": OrderedDict(modules or {}), **attrs}


def storage(values: np.ndarray) -> bytes:
    """The bytes of a legacy torch.save stream of one float32 storage (what _load_from_bytes reads)."""
    def text(s: str) -> bytes:
        return b"X" + struct.pack("<I", len(s)) + s.encode()
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    ref = (b"\x80\x02(" + text("storage") + b"ctorch\nFloatStorage\n" + text("k") + text("cpu")
           + b"J" + struct.pack("<i", values.size) + b"Nt" + b"Q.")
    return (pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps(info, 2) + ref
            + pickle.dumps(["k"], 2) + struct.pack("<q", values.size) + values.astype("<f4").tobytes())


def tensor(blob: bytes, numel: int) -> Reduce:
    loaded = Reduce(torch.storage._load_from_bytes, blob)
    return Reduce(torch._utils._rebuild_tensor_v2, loaded, 0, (numel,), (1,), False, OrderedDict())


def snapshot(path: Path, persistent, modules: dict | None = None, kwargs: object = None, nrr: int = 64) -> Path:
    gen = persistent("TriPlaneGenerator", module_state(
        modules=modules, _init_args=(), _init_kwargs={} if kwargs is None else kwargs,
        neural_rendering_resolution=nrr))
    path.write_bytes(pickle.dumps({"G_ema": gen}, protocol=4))
    return path


# ------------------------------------------------------------------------------------ pickles


def test_huge_config_pickle_is_refused_before_building(tmp_path, persistent, capsys):
    kwargs = preset("tiny").to_upstream()
    kwargs["mapping_kwargs"]["num_layers"] = 200_000  # 200 000 x 512 x 512 float32: about 210 GB
    path = snapshot(tmp_path / "huge.pkl", persistent, kwargs=kwargs)
    assert path.stat().st_size < 1500
    snap = read_upstream_snapshot(path)
    with bounded(), pytest.raises(ConfigError) as error:
        TeacherConfig.from_upstream(snap.init_kwargs, snap.neural_rendering_resolution, source=str(path))
    one_line(error, path, "mapping_kwargs.num_layers = 200000", "limit 16", "MAX_MAPPING_LAYERS")
    with bounded():
        code, _, err = invoke(main, ["teacher", "import", path, "-o", tmp_path / "t.safetensors"], capsys)
    assert code == 1 and err.count("\n") == 1 and str(path) in err and "MAX_MAPPING_LAYERS" in err
    assert not (tmp_path / "t.safetensors").exists()


def test_shared_module_dag_is_refused(tmp_path, persistent):
    # Each level holds the level below twice: 26 levels are 2**26 paths to one leaf in a 1.7 KB file.
    level = persistent("FullyConnectedLayer", module_state(params={"w": tensor(storage(np.ones(1)), 1)}))
    for _ in range(26):
        level = persistent("SynthesisBlock", module_state(modules={"a": level, "b": level}))
    path = snapshot(tmp_path / "dag.pkl", persistent, modules={"m": level})
    assert path.stat().st_size < 2500
    with bounded(), pytest.raises(CheckpointError) as error:
        read_upstream_snapshot(path)
    one_line(error, path, "m.a.a", "shared")


def test_shared_kwargs_dag_is_refused(tmp_path, persistent):
    level: object = [0.5]
    for _ in range(40):
        level = [level, level]
    path = snapshot(tmp_path / "kwargs.pkl", persistent, kwargs={"rendering_kwargs": {"x": level}})
    assert path.stat().st_size < 1000
    with bounded(), pytest.raises(CheckpointError) as error:
        read_upstream_snapshot(path)
    one_line(error, path, "G_ema._init_kwargs", "MAX_KWARGS_BYTES")


def test_one_tensor_shared_by_many_modules_is_cloned_once(tmp_path, persistent):
    weight = tensor(storage(np.arange(3 << 20, dtype=np.float32)), 3 << 20)  # 12 MB
    children = {f"l{i}": persistent("FullyConnectedLayer", module_state(params={"weight": weight}))
                for i in range(300)}  # 300 copies would be 3.6 GB
    path = snapshot(tmp_path / "tied.pkl", persistent, modules=children)
    with bounded():
        state = read_upstream_snapshot(path).state_dict
        assert len(state) == 300 and len({t.data_ptr() for t in state.values()}) == 1
        assert state["l299.weight"][-1] == (3 << 20) - 1


@pytest.mark.parametrize("shared", ["views", "storages"])
def test_shared_tensor_data_over_the_budget_is_refused(tmp_path, persistent, shared):
    blob = storage(np.ones(1 << 20, dtype=np.float32))  # 4 MB, stored once (pickle memoises the bytes)
    one = Reduce(torch.storage._load_from_bytes, blob)

    def leaf() -> Reduce:  # a new view of one storage, or a new storage parsed from the same bytes
        source = one if shared == "views" else Reduce(torch.storage._load_from_bytes, blob)
        return Reduce(torch._utils._rebuild_tensor_v2, source, 0, (1 << 20,), (1,), False, OrderedDict())
    children = {f"l{i}": persistent("FullyConnectedLayer", module_state(params={"weight": leaf()}))
                for i in range(300)}  # 300 x 4 MB
    path = snapshot(tmp_path / f"{shared}.pkl", persistent, modules=children)
    assert path.stat().st_size < (5 << 20)
    with bounded(), pytest.raises(CheckpointError) as error:
        read_upstream_snapshot(path)
    one_line(error, path, "budget", "file size")


# ---------------------------------------------------------------------------- safetensors


def teacher_file(path: Path, config: dict, tensors: dict | None = None) -> Path:
    meta = {"format": "nerfgan-teacher", "format_version": "1", "config": json.dumps(config)}
    save_file(tensors or {"dataset_label_std": torch.ones(25)}, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("field, value, needle", [
    ("z_dim", 1e8, "z_dim = 100000000 exceeds the limit 1024 (MAX_Z_DIM)"),
    ("channel_max", 16384, "channel_max = 16384 exceeds the limit 1024 (MAX_CHANNELS)"),
    ("channel_base", 2**31, "channel_base = 2147483648 exceeds the limit 65536 (MAX_CHANNEL_BASE)"),
])
def test_huge_teacher_config_in_metadata_is_refused(tmp_path, field, value, needle):
    config = json.loads(preset("ffhq512-128").to_json())  # channel_max 16384: 2.4 GB per 4x4 convolution
    config["upstream_init_kwargs"][field] = value
    path = teacher_file(tmp_path / f"{field}.safetensors", config)
    with bounded(), pytest.raises(CheckpointError) as error:
        load_teacher(path)
    one_line(error, path, needle)


@pytest.mark.parametrize("where, value, needle", [
    ("nrr", 4096, "neural_rendering_resolution = 4096 exceeds the limit 256"),
    ("depth_resolution", 10**6, "depth_resolution = 1000000 exceeds the limit 128 (MAX_SAMPLES_PER_RAY)"),
    ("image_resolution", 100, "image_resolution = 100 is not a power of two"),
])
def test_rendering_sizes_are_bounded(tmp_path, where, value, needle):
    config = json.loads(preset("tiny").to_json())
    if where == "nrr":
        config["neural_rendering_resolution"] = value
    else:
        config["upstream_init_kwargs"]["rendering_kwargs"][where] = value
    with pytest.raises(CheckpointError) as error:
        load_teacher(teacher_file(tmp_path / "r.safetensors", config))
    one_line(error, tmp_path / "r.safetensors", needle)


def test_weights_are_counted_against_the_config_before_building(tmp_path):
    # Within every limit (about 105 M values, 420 MB) but the file holds one small tensor.
    config = json.loads(preset("tiny").to_json())
    config["upstream_init_kwargs"].update(z_dim=1024, channel_base=65536, channel_max=1024)
    path = teacher_file(tmp_path / "big.safetensors", config)
    with bounded(), pytest.raises(CheckpointError) as error:
        load_teacher(path)
    one_line(error, path, "the config has 105,164,177 values in 178 tensors, the file 25 in 1", "missing tensor")


def test_official_configs_pass_the_limits_with_a_margin_of_two():
    for name in ("ffhq512-128", "ffhq512-64", "afhqcats512-128", "shapenetcars128-64", "tiny"):
        config = preset(name)
        doubled = config.replace(z_dim=2 * config.z_dim, channel_max=2 * config.channel_max,
                                 channel_base=2 * config.channel_base, mapping_layers=8 * config.mapping_layers,
                                 neural_rendering_resolution=2 * config.neural_rendering_resolution)
        doubled.validate(name)
    with pytest.raises(ConfigError, match=r"^ffhq: channel_max = 1025 exceeds the limit 1024 \(MAX_CHANNELS\)$"):
        preset("ffhq512-128").replace(channel_max=1025).validate("ffhq")
