"""OnnxBackend's ONNX Runtime settings and its cache of optimised graphs (nerfgan.runtime.ort_session)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import onnxruntime as ort  # noqa: E402

from nerfgan.errors import UsageError  # noqa: E402
from nerfgan.io import TMP_SUFFIX  # noqa: E402
from nerfgan.runtime import ort_session as OS  # noqa: E402
from nerfgan.runtime import spec as S  # noqa: E402
from nerfgan.runtime.backends import OnnxBackend  # noqa: E402


@pytest.fixture
def export_copy(tiny_export_dir, tmp_path, monkeypatch):
    """A private copy of the tiny export (the shared one stays untouched); the user cache is redirected."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    d = tmp_path / "export"
    d.mkdir()
    for name in ("manifest.json", "student.onnx", "student_int8.onnx"):
        shutil.copy2(tiny_export_dir / name, d / name)
    return d


def feeds(b, batch=2):
    rng = np.random.default_rng(3)
    return {t.name: rng.standard_normal(t.concrete(batch)).astype(np.float32) for t in b.spec.inputs}


def infer(path, **kw):
    with OnnxBackend(path, **kw) as b:
        return b.cache_state, b.cache_path, b.infer(feeds(b))


def max_err(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def stamp(p):
    st = p.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def names(d):
    return sorted(p.name for p in d.iterdir())


def test_session_options_read_back(export_copy):
    with OnnxBackend(export_copy / "student.onnx", cache="off") as b:
        so = b._session.get_session_options()
        assert so.intra_op_num_threads == OS.physical_cores()
        assert so.inter_op_num_threads == 1
        assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with OnnxBackend(export_copy / "student.onnx", threads=1, optimization="extended", cache="off") as b:
        so = b._session.get_session_options()
        assert so.intra_op_num_threads == 1  # the caller's threads win
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with pytest.raises(UsageError, match="optimisation level 'fast'"):
        OnnxBackend(export_copy / "student.onnx", optimization="fast", cache="off")
    with pytest.raises(UsageError, match="threads 0"):
        OnnxBackend(export_copy / "student.onnx", threads=0)
    with pytest.raises(UsageError, match="cache 'yes'"):
        OnnxBackend(export_copy / "student.onnx", cache="yes")


def fake_cpus(root, cores):
    """A /sys/devices/system/cpu tree: ``cores`` lists (package, core) per logical CPU."""
    for n, (pkg, core) in enumerate(cores):
        t = root / f"cpu{n}" / "topology"
        t.mkdir(parents=True)
        (t / "physical_package_id").write_text(f"{pkg}\n")
        (t / "core_id").write_text(f"{core}\n")
    return root


def test_physical_cores_counts_smt_siblings_once(tmp_path, monkeypatch):
    # 8 logical CPUs: 2 packages x 2 cores x 2 threads (CPU n and n+4 are siblings, as Linux numbers them)
    root = fake_cpus(tmp_path / "cpu", [(0, 0), (0, 1), (1, 0), (1, 1)] * 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert OS.physical_cores(root) == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 4})  # two siblings of one core
    assert OS.physical_cores(root) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})  # same core id, other package: 3 cores
    assert OS.physical_cores(root) == 3
    # unreadable topology: the usable logical CPUs (psutil absent or not, never more than the affinity)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert 1 <= OS.physical_cores(tmp_path / "none") <= 2


def test_cache_written_then_reused_with_equal_outputs(export_copy, tmp_path):
    src = export_copy / "student.onnx"
    state0, none, ref = infer(src, cache="off")
    assert (state0, none) == ("off", None) and names(export_copy) == ["manifest.json", "student.onnx",
                                                                       "student_int8.onnx"]
    state1, cache, out1 = infer(src)
    assert state1 == "written" and cache.parent == export_copy and cache.is_file()
    assert cache.name.startswith(f"student.ort-opt.{ort.__version__}.") and OS.sidecar(cache).is_file()
    side = json.loads(OS.sidecar(cache).read_text())
    assert side["key"]["source_sha256"] == S.read_export(export_copy).find("student.onnx").sha256
    before = stamp(cache), stamp(OS.sidecar(cache))
    with OnnxBackend(src) as b:
        assert (b.cache_state, b.cache_path) == ("reused", cache)
        # the session was built from the optimised graph, with optimisation off
        so = b._session.get_session_options()
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        assert so.intra_op_num_threads == OS.physical_cores() and so.inter_op_num_threads == 1
        out2 = b.infer(feeds(b))
        assert b.metadata == OnnxBackend(src, cache="off").metadata  # nerfgan's metadata survives the optimiser
    assert (stamp(cache), stamp(OS.sidecar(cache))) == before  # not rewritten
    assert max_err(ref, out1) <= 1e-5 and max_err(ref, out2) <= 1e-5
    assert not (tmp_path / "xdg").exists() or not any((tmp_path / "xdg").rglob("*.onnx"))
    assert not [n for n in names(export_copy) if n.endswith(TMP_SUFFIX)]


def test_int8_cache_equal_outputs(export_copy):
    src = export_copy / "student_int8.onnx"
    _, _, ref = infer(src, cache="off")
    assert infer(src)[0] == "written"
    state, _, out = infer(src)
    assert state == "reused" and max_err(ref, out) <= 1e-5


def test_source_changed_uses_another_cache(export_copy):
    """A new export in the folder (another file, its manifest entry updated) never meets the old cache."""
    src = export_copy / "student.onnx"
    _, old_cache, _ = infer(src)
    old = stamp(old_cache)
    shutil.copy2(export_copy / "student_int8.onnx", src)  # the folder now holds other bytes under the name
    manifest = json.loads((export_copy / "manifest.json").read_text())
    int8 = next(a for a in manifest["artifacts"] if a["file"] == "student_int8.onnx")
    entry = next(a for a in manifest["artifacts"] if a["file"] == "student.onnx")
    entry.update(sha256=int8["sha256"], bytes=int8["bytes"])
    (export_copy / "manifest.json").write_text(json.dumps(manifest))
    _, _, ref = infer(src, cache="off")
    state, new_cache, out = infer(src)
    assert state == "written" and new_cache != old_cache and stamp(old_cache) == old
    assert max_err(ref, out) <= 1e-5  # the new file's results, not the old cache's
    assert infer(src)[:2] == ("reused", new_cache)


def test_stale_key_is_rebuilt(export_copy):
    src = export_copy / "student.onnx"
    _, _, ref = infer(src, cache="off")
    _, cache, _ = infer(src)
    side = OS.sidecar(cache)
    rec = json.loads(side.read_text())
    rec["key"]["onnxruntime"] = "0.0.1"  # made by another ONNX Runtime (same name: a hand-copied cache)
    side.write_text(json.dumps(rec))
    state, _, out = infer(src)
    assert state == "rebuilt" and json.loads(side.read_text())["key"]["onnxruntime"] == ort.__version__
    assert max_err(ref, out) <= 1e-5
    assert infer(src)[0] == "reused"


@pytest.mark.parametrize("damage", ["flipped", "truncated", "garbage_with_matching_sidecar", "external_data"])
def test_corrupt_cache_is_ignored_and_rebuilt(export_copy, damage):
    import onnx

    src = export_copy / "student.onnx"
    _, _, ref = infer(src, cache="off")
    _, cache, _ = infer(src)
    side = OS.sidecar(cache)
    data = bytearray(cache.read_bytes())
    if damage == "flipped":
        data[len(data) // 2] ^= 0xFF
        cache.write_bytes(bytes(data))
    elif damage == "truncated":
        cache.write_bytes(bytes(data[: len(data) // 3]))
    else:
        if damage == "garbage_with_matching_sidecar":
            bad = b"not an onnx model" * 100
        else:  # a loadable-looking graph whose tensor reads a file outside the folder: the read_onnx_checked refusal
            model = onnx.load_from_string(bytes(data))
            t = model.graph.initializer[0]
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.EXTERNAL
            t.external_data.add(key="location", value="../../secret.bin")
            bad = model.SerializeToString()
        cache.write_bytes(bad)
        rec = json.loads(side.read_text())
        rec.update(sha256=hashlib.sha256(bad).hexdigest(), bytes=len(bad))
        side.write_text(json.dumps(rec))
    state, again, out = infer(src)
    assert (state, again) == ("rebuilt", cache)
    assert max_err(ref, out) <= 1e-5
    assert infer(src)[0] == "reused"


def test_read_only_export_uses_the_user_cache(export_copy, tmp_path, monkeypatch):
    real = OS._writable_dir
    monkeypatch.setattr(OS, "_writable_dir", lambda d: d != export_copy and real(d))  # (root writes anywhere)
    if os.geteuid() != 0:
        export_copy.chmod(0o555)
    try:
        before = names(export_copy)
        state, cache, _ = infer(export_copy / "student.onnx")
        assert state == "written" and cache.parent == tmp_path / "xdg" / "nerfgan" / "onnxruntime"
        assert names(export_copy) == before
        assert infer(export_copy / "student.onnx")[:2] == ("reused", cache)
        # no writable user cache either: no cache at all, nothing written
        (tmp_path / "afile").write_text("x")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "afile" / "xdg"))
        state, cache, _ = infer(export_copy / "student_int8.onnx")
        assert (state, cache) == ("unavailable", None) and names(export_copy) == before
    finally:
        export_copy.chmod(0o755)


def test_files_outside_an_export_are_never_cached(export_copy, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy2(export_copy / "student.onnx", loose / "student.onnx")
    assert infer(loose / "student.onnx")[:2] == ("unavailable", None)
    (export_copy / "extra.onnx").write_bytes((export_copy / "student.onnx").read_bytes())  # not in the manifest
    assert infer(export_copy / "extra.onnx")[:2] == ("unavailable", None)
    assert names(loose) == ["student.onnx"] and not (tmp_path / "xdg").exists()
    assert not [n for n in names(export_copy) if ".ort-opt." in n]
    assert infer(export_copy / "student.onnx", cache="off")[:2] == ("off", None)
    assert not [n for n in names(export_copy) if ".ort-opt." in n]


def test_a_planted_cache_with_an_updated_sidecar_is_never_served(export_copy, tiny_export_dir):
    """Issue 22 item 4: a graph planted under the cache's name (here the mapping, so every output would differ),
    its sidecar's sha256 and size updated to match, lacks the MAC only this user's nerfgan writes: rebuilt."""
    src = export_copy / "student.onnx"
    _, _, ref = infer(src, cache="off")
    _, cache, _ = infer(src)
    planted = (export_copy / "student_int8.onnx").read_bytes()  # a valid nerfgan graph, other outputs
    cache.write_bytes(planted)
    side = OS.sidecar(cache)
    rec = json.loads(side.read_text())
    rec.update(sha256=hashlib.sha256(planted).hexdigest(), bytes=len(planted))
    side.write_text(json.dumps(rec))
    state, again, out = infer(src)
    assert (state, again) == ("rebuilt", cache) and max_err(ref, out) <= 1e-5
    assert infer(src)[0] == "reused"
    key = tmp_xdg_key(export_copy)
    assert key.stat().st_mode & 0o077 == 0 and key.stat().st_size == 32


def tmp_xdg_key(export_copy):
    return export_copy.parent / "xdg" / "nerfgan" / "onnxruntime" / OS.SECRET_FILE
