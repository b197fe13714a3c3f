"""Fuzzing the file readers with Hypothesis (issue 22): manifests, dataset.json labels, render-set indexes,
calibration metadata, safetensors headers and metadata, photos. Each example is a file that is nearly right,
nearly anything, or raw bytes; the reader must give a valid result or one typed error (a NerfganError), within
bounded time and memory (conftest.bounded). Budgets: tests/fuzzing.py (NERFGAN_FUZZ=ci|release).
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import bounded
from fuzzing import budget, count
from nerfgan.errors import NerfganError

# --- shared strategies ----------------------------------------------------------------------------------------
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=4), max_leaves=24)
SHA = st.sampled_from(["0" * 64, "f" * 64, "A" * 64, "0" * 63, ""]) | st.text(max_size=70)
NAMES = st.sampled_from(["student.onnx", "mapping.onnx", "../x.onnx", "/etc/passwd", "a/b.onnx", "manifest.json",
                         "", ".", "C:\\x", "x\0y"]) | st.text(max_size=20)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``valid``, sometimes any JSON value in its place."""
    return st.one_of(valid, valid, valid, JSON)


def dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def file_bytes(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """The bytes of a JSON file: a nearly right document, a damaged one (cut short, a byte changed), or raw bytes."""
    doc = valid.map(dumps)
    damaged = st.tuples(doc, st.integers(0, 1 << 16), st.integers(0, 255)).map(
        lambda t: (t[0][:t[1] % (len(t[0]) + 1)] if t[2] < 128 else
                   t[0][:t[1] % max(1, len(t[0]))] + bytes([t[2]]) + t[0][t[1] % max(1, len(t[0])) + 1:]))
    return st.one_of(doc, doc, doc, damaged, st.binary(max_size=256))


def place(path: Path, data: bytes, kind: str) -> None:
    """Put ``data`` at ``path`` as a file, or put a FIFO, a folder or a link to /dev/zero under that name."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    else:
        path.write_bytes(data)


KINDS = st.sampled_from(["file"] * 12 + ["fifo", "dir", "devzero"])


def typed_or_valid(call: Any) -> Any:
    """``call()`` under bounded time and memory: its result, or None when it raised a NerfganError."""
    with bounded():
        try:
            return call()
        except NerfganError as e:
            assert str(e) and "\n" not in str(e).strip(), repr(e)  # one line
            return None


# --- manifests ------------------------------------------------------------------------------------------------
ARTIFACT = st.fixed_dictionaries({
    "file": maybe(NAMES), "kind": maybe(st.sampled_from(["student", "mapping", ""])),
    "precision": maybe(st.sampled_from(["fp32", "int8"])), "format": maybe(st.sampled_from(["onnx", "tensorrt"])),
    "sha256": maybe(SHA), "bytes": maybe(st.integers(-1, 1 << 41))})
MANIFEST = st.fixed_dictionaries({
    "format": maybe(st.just("nerfgan-export-manifest")),
    "checkpoint": maybe(st.fixed_dictionaries({"sha256": maybe(SHA)})),
    "artifacts": maybe(st.lists(ARTIFACT, max_size=4))})


@budget(300)
@given(data=file_bytes(MANIFEST), kind=KINDS)
def test_fuzz_manifest(data, kind):
    from nerfgan.runtime import spec as S

    count("manifest")
    with tempfile.TemporaryDirectory() as d:
        place(Path(d) / S.MANIFEST, data, kind)
        m = typed_or_valid(lambda: S.read_export(d))
    if m is not None:
        files = [a.file for a in m.artifacts]
        assert files and len(set(files)) == len(files)
        assert all(S.plain_name_problem(f) is None and len(a.sha256) == 64 and a.bytes > 0
                   for f, a in zip(files, m.artifacts))


# --- dataset.json ---------------------------------------------------------------------------------------------
CAMERA_VALUE = st.floats(-10, 10) | st.integers(-3, 3)
LABEL = st.one_of(
    st.tuples(st.text(max_size=12), st.lists(CAMERA_VALUE, min_size=25, max_size=25)).map(list),
    st.tuples(maybe(st.text(max_size=12)), maybe(st.lists(maybe(CAMERA_VALUE), min_size=23, max_size=27))).map(list),
    JSON)
LABELS = st.fixed_dictionaries({"labels": maybe(st.lists(LABEL, max_size=6))})


@budget(300)
@given(data=file_bytes(LABELS), kind=KINDS, as_zip=st.booleans())
def test_fuzz_dataset_labels(data, kind, as_zip):
    from nerfgan.scenes.dataset import open_dataset

    count("dataset.json")
    with tempfile.TemporaryDirectory() as d:
        if as_zip:
            path = Path(d) / "data.zip"
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("dataset.json", data)
        else:
            path = Path(d) / "data"
            path.mkdir()
            place(path / "dataset.json", data, kind)
        ds = typed_or_valid(lambda: open_dataset(path))
    if ds is not None:
        assert ds.labels.dtype == np.float32 and ds.labels.shape == (len(ds.names), 25) and len(ds.names) >= 1
        assert np.isfinite(ds.labels).all() and all(isinstance(n, str) for n in ds.names)


# --- render-set index -----------------------------------------------------------------------------------------
def _teacher_config() -> dict[str, Any]:
    from nerfgan.teacher.checkpoint import read_teacher_metadata

    return json.loads(read_teacher_metadata("tiny")["config"])


TINY_CONFIG = _teacher_config()
SHARD = st.fixed_dictionaries({"file": maybe(st.sampled_from(["shard-00000.npz", "shard-00001.npz", "../x.npz"])),
                               "start": maybe(st.integers(-2, 200)), "count": maybe(st.integers(-1, 200)),
                               "sha256": maybe(SHA)})
INDEX = st.fixed_dictionaries({
    "format": maybe(st.just("nerfgan-render-set")), "format_version": maybe(st.integers(0, 3)),
    "seed": maybe(st.integers(-1, 2**33)), "n": maybe(st.integers(-1, 1 << 40)),
    "shard_size": maybe(st.integers(-1, 1 << 40)), "shards": maybe(st.lists(SHARD, max_size=3)),
    "pose_distribution": maybe(st.dictionaries(st.sampled_from(["yaw_std", "pitch_std", "yaw_range", "x"]),
                                               maybe(st.floats(-100, 100)), max_size=3)),
    "teacher": maybe(st.fixed_dictionaries({"sha256": maybe(SHA), "config": maybe(st.just(TINY_CONFIG))})),
})


@budget(300)
@given(data=file_bytes(INDEX), kind=KINDS)
def test_fuzz_render_set_index(data, kind):
    from nerfgan.teacher.renders import FORMAT, FORMAT_VERSION, INDEX as NAME, RenderSet

    count("render-set index")
    try:  # the generated format fields are placeholders: the real ones, when the document kept them
        doc = json.loads(data)
        if isinstance(doc, dict) and doc.get("format") == "nerfgan-render-set":
            doc.update(format=FORMAT, format_version=FORMAT_VERSION)
            data = dumps(doc)
    except ValueError:
        pass
    with tempfile.TemporaryDirectory() as d:
        place(Path(d) / NAME, data, kind)
        rs = typed_or_valid(lambda: RenderSet.open(d, verify=False, allow_incomplete=True))
    if rs is not None:
        assert rs.shard_size >= 1 and all(s["count"] >= 1 for s in rs.shard_entries)


# --- calibration metadata -------------------------------------------------------------------------------------
CALIB_META = st.fixed_dictionaries({"format": maybe(st.just("nerfgan-calibration")), "n": maybe(st.integers(-1, 9)),
                                    "teacher_config": maybe(st.just(TINY_CONFIG))})


@budget(100)
@given(meta=file_bytes(CALIB_META), n=st.integers(0, 3), width=st.sampled_from([4, 8]))
def test_fuzz_calibration_file(meta, n, width):
    from nerfgan.calibrate.calibset import ARRAY_SHAPES, FORMAT, load_calibration_set

    count("calibration file")
    text = meta.decode("utf-8", "replace").replace("nerfgan-calibration", FORMAT)
    sizes = {"n": n, "z_dim": width, "w_dim": width, "H": 8, "R": 4}
    arrays: dict[str, Any] = {"meta": np.array(text)}
    for name, (dtypes, shape) in ARRAY_SHAPES.items():
        arrays[name] = np.zeros(tuple(sizes[s] if isinstance(s, str) else s for s in shape), dtypes[0])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "calib.npz"
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        cs = typed_or_valid(lambda: load_calibration_set(path))
    if cs is not None:
        assert len(cs) == cs.meta["n"] == n


# --- safetensors headers and metadata -------------------------------------------------------------------------
TENSOR = st.fixed_dictionaries({"dtype": maybe(st.sampled_from(["F32", "F16", "I64", "X"])),
                                "shape": maybe(st.lists(st.integers(-1, 1 << 33), max_size=3)),
                                "data_offsets": maybe(st.lists(st.integers(-1, 1 << 33), min_size=2, max_size=2))})
METADATA = st.dictionaries(st.sampled_from(["format", "format_version", "config", "teacher_weights_sha256", "x"]),
                           maybe(st.sampled_from(["nerfgan-teacher", "nerfgan-student", json.dumps(TINY_CONFIG)])
                                 | st.text(max_size=20)), max_size=4)
HEADER = st.dictionaries(st.sampled_from(["a", "b.weight", "__metadata__"]), maybe(TENSOR), max_size=3).flatmap(
    lambda h: METADATA.map(lambda m: {**h, "__metadata__": m}) | st.just(h))


@budget(300)
@given(header=file_bytes(HEADER), declared=st.one_of(st.none(), st.integers(0, 1 << 62)),
       payload=st.binary(max_size=64))
def test_fuzz_safetensors_header(header, declared, payload):
    from nerfgan.errors import CheckpointError
    from nerfgan.student.config import StudentConfig
    from nerfgan.teacher.checkpoint import read_safetensors_header, teacher_config_of

    count("safetensors header")
    head = struct.pack("<Q", len(header) if declared is None else declared)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.safetensors"
        path.write_bytes(head + header + payload)

        def read() -> Any:
            shapes, meta = read_safetensors_header(path, "checkpoint")
            try:
                return teacher_config_of(path, meta)
            except CheckpointError:
                return StudentConfig.from_json(meta.get("config", ""), source=str(path))

        typed_or_valid(read)


# --- photos (PNG inputs) --------------------------------------------------------------------------------------
MODES = st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK"])


def _image_bytes(mode: str, w: int, h: int, seed: int, fmt: str) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode in ("I", "F"):
        im = Image.fromarray(rng.integers(-5, 70000, (h, w)).astype(np.int32 if mode == "I" else np.float32))
    else:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt if not (fmt == "PNG" and mode in ("I", "F", "CMYK")) else "TIFF")
    return buf.getvalue()


@budget(300)
@given(mode=MODES, w=st.integers(1, 48), h=st.integers(1, 48), seed=st.integers(0, 2**16),
       fmt=st.sampled_from(["PNG", "PNG", "TIFF"]), cut=st.none() | st.integers(0, 4096),
       flip=st.none() | st.integers(0, 4096))
def test_fuzz_photo(mode, w, h, seed, fmt, cut, flip):
    from PIL import Image

    from nerfgan.student.invert import read_photo

    count("photo")
    data = bytearray(_image_bytes(mode, w, h, seed, fmt))
    if flip is not None:
        data[flip % len(data)] ^= 0x5A
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "photo.png"
        path.write_bytes(bytes(data))
        rgb = typed_or_valid(lambda: read_photo(path))
        if rgb is not None:
            assert rgb.dtype == np.uint8 and rgb.shape == (h, w, 3) and w == h
            if flip is None and cut is None and mode == "I;16":  # scaled, never clipped white
                with Image.open(path) as im:
                    grey = np.asarray(im).astype(np.uint32)
                np.testing.assert_array_equal(rgb[..., 0], (grey * 255 + 32767) // 65535)


def test_the_profiles_differ_in_budget_only():
    import fuzzing

    assert fuzzing.PROFILE in fuzzing.SCALE and budget(3).max_examples == 3 * fuzzing.SCALE[fuzzing.PROFILE]
    assert budget(3).deadline is None


pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]  # (Pillow warns about the damaged files it reads)
