"""Tests for nerfgan.teacher.upstream_pickle: exact import of the fixture, hostile files refused."""

from __future__ import annotations

import builtins
import json
import os
import pickle
import struct
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from conftest import Reduce
import torch

from nerfgan.errors import CheckpointError, InputFileError, UsageError
from nerfgan.teacher.upstream_pickle import UpstreamGenerator, read_upstream_snapshot

FIXTURES = Path(__file__).parents[1] / "fixtures"
PKL = FIXTURES / "eg3d_tiny_sr128.pkl"
NPZ = FIXTURES / "eg3d_tiny_sr128.npz"
BUFFER_SUFFIXES = ("resample_filter", "noise_const", "w_avg", "dataset_label_std")
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
REBUILD_TENSOR = torch._utils._rebuild_tensor_v2  # pickled by name only: the loader's stand-in runs


@pytest.fixture(scope="module")
def g_ema() -> UpstreamGenerator:
    return read_upstream_snapshot(PKL)


@pytest.fixture(scope="module")
def npz() -> dict[str, np.ndarray]:
    with np.load(NPZ) as z:
        return {k: z[k] for k in z.files if k.startswith("sd/") or k == "init_kwargs_json"}


# ------------------------------------------------------------------------------ the fixture


def test_fixture_state_dict_is_bitwise_upstream(g_ema: UpstreamGenerator, npz: dict) -> None:
    expected = [k[3:] for k in npz if k.startswith("sd/")]
    assert list(g_ema.state_dict) == expected
    for key, tensor in g_ema.state_dict.items():
        ref = npz["sd/" + key]
        assert tensor.dtype == torch.float32 and tensor.device.type == "cpu"
        assert tensor.is_contiguous() and not tensor.requires_grad
        assert tuple(tensor.shape) == ref.shape, key
        assert tensor.numpy().tobytes() == ref.tobytes(), key


def test_fixture_kwargs_and_resolution(g_ema: UpstreamGenerator, npz: dict) -> None:
    assert g_ema.class_name == "TriPlaneGenerator"
    assert g_ema.init_kwargs == json.loads(str(npz["init_kwargs_json"]))
    assert json.loads(json.dumps(g_ema.init_kwargs)) == g_ema.init_kwargs
    assert type(g_ema.init_kwargs["mapping_kwargs"]) is dict  # EasyDict -> dict
    assert g_ema.neural_rendering_resolution == 64
    assert type(g_ema.neural_rendering_resolution) is int


def test_fixture_g_differs_in_parameters_only(g_ema: UpstreamGenerator) -> None:
    g = read_upstream_snapshot(PKL, which="G")
    assert list(g.state_dict) == list(g_ema.state_dict)
    assert g.init_kwargs == g_ema.init_kwargs
    same = {k for k in g.state_dict if torch.equal(g.state_dict[k], g_ema.state_dict[k])}
    assert same == {k for k in g.state_dict if k.endswith(BUFFER_SUFFIXES)}


# ------------------------------------------------------------------- hand-made pickle helpers


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def legacy_blob(values: np.ndarray, storage_global: bytes = b"ctorch\nFloatStorage\n",
                numel: int | None = None) -> bytes:
    """A legacy (non-zip) torch.save stream of one storage, what _load_from_bytes reads."""
    info = {"protocol_version": 1001, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}
    n = values.size if numel is None else numel
    ref = (b"\x80\x02(" + _unicode("storage") + storage_global + _unicode("key0") + _unicode("cpu")
           + b"J" + struct.pack("<i", n) + b"Nt" + b"Q.")
    return (pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps(info, 2) + ref
            + pickle.dumps(["key0"], 2) + struct.pack("<q", n) + values.astype("<f4").tobytes())


@pytest.fixture
def upstream_names(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Fake (never imported by the loader) upstream modules, so that pickle can name them."""

    def _reconstruct_persistent_obj(meta: dict) -> None:
        raise AssertionError("must never be called")

    class EasyDict(dict):
        pass

    pkg, persistence = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    dnnlib, util = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    setattr(persistence, "_reconstruct_persistent_obj", _reconstruct_persistent_obj)
    setattr(util, "EasyDict", EasyDict)
    for name, module in [("torch_utils", pkg), ("torch_utils.persistence", persistence),
                         ("dnnlib", dnnlib), ("dnnlib.util", util)]:
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict)


def persistent(names: types.SimpleNamespace, class_name: str, state: dict,
               module_src: str = "# source removed", **meta_extra: object) -> Reduce:
    meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": class_name,
            "state": state, **meta_extra}
    return Reduce(names.reconstruct, meta)


def module_state(params: dict | None = None, buffers: dict | None = None,
                 modules: dict | None = None, skip: set | None = None, **attrs: object) -> dict:
    return {"training": False, "_parameters": OrderedDict(params or {}),
            "_buffers": OrderedDict(buffers or {}), "_non_persistent_buffers_set": skip or set(),
            "_forward_hooks": OrderedDict(), "_modules": OrderedDict(modules or {}), **attrs}


def write(path: Path, obj: object) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def expect_rejected(path: Path, *needles: str) -> str:
    with pytest.raises(CheckpointError) as info:
        read_upstream_snapshot(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    for needle in needles:
        assert needle in message
    return message


# --------------------------------------------------------------------------- synthetic files


def test_synthetic_generator_walks_modules_in_torch_order(tmp_path: Path, upstream_names) -> None:
    sentinel = tmp_path / "SENTINEL"
    weight = torch.arange(6.0).reshape(2, 3)
    child = persistent(upstream_names, "FullyConnectedLayer", module_state(
        params={"weight": torch.nn.Parameter(weight.t()), "bias": None},
        buffers={"scratch": torch.ones(2), "filt": torch.full((2, 2), 0.5)}, skip={"scratch"},
        weight_gain=np.float64(0.25)))
    src = f"open({str(sentinel)!r}, 'w').write('ran')"
    gen = persistent(upstream_names, "TriPlaneGenerator", module_state(
        buffers={"dataset_label_std": torch.zeros(3)}, modules={"b": child, "none": None},
        _init_args=(), _init_kwargs=upstream_names.EasyDict(
            z_dim=8, gain=np.float64(0.5), sub=upstream_names.EasyDict(pivot=(0, 0, 0.2))),
        neural_rendering_resolution=32), module_src=src)
    g = read_upstream_snapshot(write(tmp_path / "syn.pkl", {"G": gen, "G_ema": gen}))
    assert not sentinel.exists()
    assert list(g.state_dict) == ["dataset_label_std", "b.weight", "b.filt"]
    assert torch.equal(g.state_dict["b.weight"], weight.t())
    assert g.state_dict["b.weight"].is_contiguous()
    assert g.init_kwargs == {"z_dim": 8, "gain": 0.5, "sub": {"pivot": [0, 0, 0.2]}}
    assert g.neural_rendering_resolution == 32


# ------------------------------------------------------------------------- hostile pickles


def test_reduce_to_os_system_is_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    path = write(tmp_path / "evil.pkl", {"G_ema": Reduce(os.system, f"touch {sentinel}")})
    expect_rejected(path, f"{os.system.__module__}.system")  # posix.system on Linux
    assert not sentinel.exists()


def test_protocol0_global_os_system_is_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "evil0.pkl"
    path.write_bytes(b"\x80\x02cos\nsystem\n(S'touch " + str(sentinel).encode() + b"'\ntR.")
    expect_rejected(path, "os.system")
    assert not sentinel.exists()


def test_builtins_exec_is_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    code = f"open({str(sentinel)!r}, 'w').write('ran')"
    path = write(tmp_path / "exec.pkl", {"G_ema": Reduce(builtins.exec, code)})
    expect_rejected(path, "builtins.exec")
    assert not sentinel.exists()


def test_subprocess_popen_is_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    path = write(tmp_path / "popen.pkl", [Reduce(subprocess.Popen, ["touch", str(sentinel)])])
    expect_rejected(path, "subprocess.Popen")
    assert not sentinel.exists()


def test_malicious_module_src_never_runs(tmp_path: Path, upstream_names) -> None:
    sentinel = tmp_path / "SENTINEL"
    src = f"import os\nos.system('touch {sentinel}')\n"
    gen = persistent(upstream_names, "TriPlaneGenerator", {}, module_src=src)
    expect_rejected(write(tmp_path / "src.pkl", {"G_ema": gen}), "_init_kwargs")
    assert not sentinel.exists()


@pytest.mark.parametrize("change", [{"version": 99}, {"type": "function"}, {"extra": 1}])
def test_persistent_meta_of_unknown_shape_is_refused(tmp_path: Path, upstream_names,
                                                     change: dict) -> None:
    gen = persistent(upstream_names, "TriPlaneGenerator", module_state(), **change)
    expect_rejected(write(tmp_path / "meta.pkl", {"G_ema": gen}), "persistent object")


def test_storage_blob_with_forbidden_global_is_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    blob = legacy_blob(np.ones(1, np.float32), storage_global=b"cos\nsystem\n")
    evil = pickle.dumps(Reduce(os.system, f"touch {sentinel}"), protocol=2)
    blob2 = legacy_blob(np.ones(1, np.float32)).replace(pickle.dumps(["key0"], 2), evil)
    for name, data in [("a", blob), ("b", blob2)]:
        storage = Reduce(torch.storage._load_from_bytes, data)
        tensor = Reduce(REBUILD_TENSOR, storage, 0, (1,), (1,), False, OrderedDict())
        path = write(tmp_path / f"{name}.pkl", {"G_ema": tensor})
        expect_rejected(path, "system", "storage blob")
    assert not sentinel.exists()


GOOD_BLOB = legacy_blob(np.arange(4, dtype=np.float32))


@pytest.mark.parametrize("blob, size, stride, offset, needle", [
    (GOOD_BLOB, (4,), (1,), 0, "is Tensor, expected"),  # control: a valid tensor
    (GOOD_BLOB[:-1], (4,), (1,), 0, "15 data bytes"),
    (legacy_blob(np.arange(4, dtype=np.float32), numel=5), (4,), (1,), 0, "expected 5 x 4"),
    (GOOD_BLOB, (10**6, 10**6), (0, 0), 0, "does not fit"),
    (GOOD_BLOB, (2,), (1,), 3, "does not fit"),
    (GOOD_BLOB, (2,), (-1,), 1, "tensor stride -1"),
], ids=["control", "short", "numel", "huge_view", "out_of_range", "negative_stride"])
def test_storage_blob_sizes_are_validated(tmp_path: Path, blob: bytes, size: tuple, stride: tuple,
                                          offset: int, needle: str) -> None:
    storage = Reduce(torch.storage._load_from_bytes, blob)
    tensor = Reduce(REBUILD_TENSOR, storage, offset, size, stride, False, OrderedDict())
    expect_rejected(write(tmp_path / "view.pkl", {"G_ema": tensor}), needle)


@pytest.mark.parametrize("target", [b"torch._utils\n_rebuild_parameter", b"dnnlib.util\nEasyDict",
                                    b"training.triplane\nOSGDecoder", b"numpy\ndtype",
                                    b"numpy._core.multiarray\nscalar"],
                         ids=lambda target: target.decode().replace("\n", "."))
def test_build_cannot_modify_allow_listed_globals(tmp_path: Path, target: bytes) -> None:
    # GLOBAL target; BUILD (None, {'__defaults__': (1,)}): would setattr on the stand-in itself.
    data = b"\x80\x02c" + target + b"\nN}" + _unicode("__defaults__") + b"K\x01\x85s\x86b."
    path = tmp_path / "build.pkl"
    path.write_bytes(data)
    expect_rejected(path)
    assert read_upstream_snapshot(PKL).neural_rendering_resolution == 64  # nothing was poisoned


def test_outer_persistent_id_and_huge_lengths_are_refused(tmp_path: Path) -> None:
    cases = {
        "persid": (b"\x80\x02" + _unicode("x") + b"Q.", "BINPERSID"),
        "memo": (b"\x80\x02Nr\xff\xff\xff\xff.", "memo index"),
        "bytes8": (b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"xx.", "not a valid pickle"),
    }
    for name, (data, needle) in cases.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(data)
        expect_rejected(path, needle)


# ---------------------------------------------------------------------------- plain errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pkl"
    with pytest.raises(InputFileError, match="nope.pkl") as info:
        read_upstream_snapshot(path)
    assert not isinstance(info.value, CheckpointError)


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.pkl"
    path.write_text("hello, this is not a pickle\n")
    expect_rejected(path, "not a pickle")


def test_truncated_fixture(tmp_path: Path) -> None:
    path = tmp_path / "truncated.pkl"
    path.write_bytes(PKL.read_bytes()[: 5_000_000])
    expect_rejected(path, "not a")


def test_pickle_of_a_list(tmp_path: Path) -> None:
    expect_rejected(write(tmp_path / "list.pkl", [1, 2, 3]), "expected an EG3D snapshot", "list")


def test_dict_without_g_ema(tmp_path: Path) -> None:
    expect_rejected(write(tmp_path / "dict.pkl", {"G": 1, "D": 2}), "'G_ema'", "keys")


def test_g_ema_not_a_triplane_generator(tmp_path: Path, upstream_names) -> None:
    other = persistent(upstream_names, "DualDiscriminator", module_state())
    path = write(tmp_path / "d.pkl", {"G_ema": other})
    expect_rejected(path, "DualDiscriminator", "TriPlaneGenerator")
    expect_rejected(write(tmp_path / "n.pkl", {"G_ema": None}), "'G_ema'", "TriPlaneGenerator")


def test_which_must_be_g_or_g_ema() -> None:
    with pytest.raises(UsageError, match="--which") as info:
        read_upstream_snapshot(PKL, which="D")
    assert "G_ema" in str(info.value) and not isinstance(info.value, InputFileError)
