"""nerfgan-export --aoti: the student as an AOTInductor package (student.pt2 + sidecar), its FP32 gate, and the
runtime's pt2 backend (nr.load(..., backend='pt2'), nerfgan-run --backend pt2, a .pt2 path given directly).

Compiling the tiny student takes about 35 s of CPU time (a minute or more of wall time on a busy 2-core machine):
one package is compiled for the module (``aoti_export``) and one more by the gate test (a perturbed student).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import invoke
from nerfgan.cli import export_main, run_main
from nerfgan.errors import ExportMismatchError, InputFileError, TensorError, UsageError
from nerfgan.export.pipeline import ExportConfig, export
from nerfgan.io import file_sha256
from nerfgan.runtime import load
from nerfgan.runtime.backends import OnnxBackend
from nerfgan.runtime.pt2_backend import SIDECAR_MAX_BYTES, Pt2Backend, Pt2Sidecar, sidecar_path

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def aoti_export(tmp_path_factory, tiny_student_path):
    """An export of the tiny student with --aoti (cpu): (folder, manifest, log lines)."""
    out = tmp_path_factory.mktemp("aoti") / "export"
    lines: list[str] = []
    manifest = export(tiny_student_path, out, ExportConfig(aoti=True), log=lines.append)
    return out, manifest, lines


def feeds(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Student inputs: random style codes, cameras from the runtime's own pose code (yaw spread over n)."""
    from nerfgan import camera

    rng = np.random.default_rng(seed)
    c = np.stack([camera.pose(yaw, 0.0) for yaw in np.linspace(-20, 20, n)]).astype(np.float32)
    return {"w": rng.standard_normal((n, 512)).astype(np.float32), "c": c}


# --- options: refused before any work ---------------------------------------------------------------------------
def test_device_options_are_checked_before_any_work(tmp_path, tiny_student_path, capsys):
    with pytest.raises(UsageError, match="add --aoti"):
        ExportConfig(aoti_device="cuda")
    code, out, _ = invoke(export_main, ["--student", tiny_student_path, "-o", tmp_path / "out", "--aoti", "--dry-run"],
                          capsys)
    assert code == 0
    cfg = json.loads(out)["export"]
    assert cfg["aoti"] is True and cfg["aoti_device"] == "cpu"
    if not torch.cuda.is_available():
        code, _, err = invoke(export_main, ["--student", tiny_student_path, "-o", tmp_path / "out", "--aoti",
                                            "--device", "cuda"], capsys)
        assert code != 0 and err.count("\n") == 1
        assert "--device cuda: no CUDA device is available" in err
        assert not (tmp_path / "out").exists()
    for args, message in ((["--engine", tmp_path / "x.pt2", "--threads", 2], "--threads sets ONNX Runtime's"),
                          (["--engine", tmp_path / "x.onnx", "--backend", "pt2"], "--backend pt2 runs AOTInductor")):
        code, _, err = invoke(run_main, [*args, "-o", tmp_path / "v.png", "--dry-run"], capsys)
        assert code != 0 and err.count("\n") == 1 and message in err


# --- the export and its gate --------------------------------------------------------------------------------------
@slow
def test_package_is_listed_gated_and_described(aoti_export, tiny_student_path):
    out, manifest, lines = aoti_export
    entry = next(a for a in manifest["artifacts"] if a["file"] == "student.pt2")
    assert (entry["kind"], entry["precision"], entry["format"], entry["device"]) == ("student", "fp32", "pt2", "cpu")
    assert entry["sha256"] == file_sha256(out / "student.pt2")
    assert entry["bytes"] == (out / "student.pt2").stat().st_size
    checks = {c["output"]: c for c in entry["validation"]}
    assert set(checks) == {"image", "image_raw"}
    assert all(c["metric"] == "max_abs_error" and c["ok"] and c["value"] <= 1e-4 for c in checks.values())
    sidecar = Pt2Sidecar.from_json((out / "student.pt2.json").read_text(), "sidecar")
    assert sidecar.package_sha256 == entry["sha256"] and sidecar.device == "cpu" and sidecar.batch == (1, 1, 16)
    assert sidecar.metadata["nerfgan.checkpoint_sha256"] == file_sha256(tiny_student_path)
    assert sidecar.torch_version == torch.__version__ and sidecar.compile_seconds > 0
    assert any(line.startswith("compiled student.pt2 in") for line in lines)
    print(f"compile time of the tiny student's package: {sidecar.compile_seconds:.1f} s")  # (-s shows it)


@slow
def test_perturbed_package_misses_the_gate_and_installs_nothing(aoti_export, tmp_path, tiny_student_path,
                                                                monkeypatch):
    """A package compiled from a student whose weights drifted by 1 % is refused; the folder keeps its old export.
    Then an export without --aoti into the same folder removes the package and sidecar the old manifest listed."""
    from nerfgan.export import aoti

    out = tmp_path / "export"
    shutil.copytree(aoti_export[0], out)
    before = {p.name: file_sha256(p) for p in out.iterdir() if p.is_file() and p.stat().st_size}
    real = aoti.compile_package

    def perturbed(student, *args, **kwargs):
        drifted = copy.deepcopy(student)
        with torch.no_grad():
            for p in drifted.parameters():
                p.mul_(1.01)
        return real(drifted, *args, **kwargs)

    monkeypatch.setattr(aoti, "compile_package", perturbed)
    with pytest.raises(ExportMismatchError, match=r"student\.pt2:image max_abs_error") as e:
        export(tiny_student_path, out, ExportConfig(aoti=True), log=lambda s: None)
    assert "student.onnx" not in str(e.value)  # the ONNX files passed; only the package missed
    after = {p.name: file_sha256(p) for p in out.iterdir() if p.is_file() and p.stat().st_size}
    assert after == before
    assert not [p for p in out.iterdir() if p.is_dir()], "staging folder left behind"

    monkeypatch.undo()
    manifest = export(tiny_student_path, out, ExportConfig(), log=lambda s: None)
    assert {a["file"] for a in manifest["artifacts"]} == {"mapping.onnx", "student.onnx"}
    assert not (out / "student.pt2").exists() and not (out / "student.pt2.json").exists()


# --- the runtime ------------------------------------------------------------------------------------------------
@slow
def test_nerfgan_run_renders_from_the_package(aoti_export, tmp_path, capsys):
    out = aoti_export[0]
    code, stdout, err = invoke(run_main, ["--engine", out, "--backend", "pt2", "--seeds", "0-2", "--grid",
                                          "-o", tmp_path / "grid.png"], capsys)
    assert code == 0, err
    assert "wrote" in stdout and (tmp_path / "grid.png").stat().st_size > 0
    code, _, err = invoke(run_main, ["--engine", out / "student.pt2", "--seed", 3, "-o", tmp_path / "one.png"], capsys)
    assert code == 0, err
    with load(out, backend="pt2") as g_pt2, load(out) as g_ort:
        assert g_pt2.student.name == "pt2-cpu-fp32" and g_ort.student.name.startswith("onnxruntime")
        a = g_pt2.render(seeds=[0, 1, 2], yaw=[-20, 0, 20]).astype(int)
        b = g_ort.render(seeds=[0, 1, 2], yaw=[-20, 0, 20]).astype(int)
    assert a.shape == (3, 128, 128, 3) and np.abs(a - b).max() <= 1


@slow
def test_package_loads_in_a_fresh_process_without_the_model_code(aoti_export):
    """Batch 1 and 3 from the same package, in a process that never imports nerfgan.student or nerfgan.export,
    against ONNX Runtime's student.onnx of the same export."""
    out = aoti_export[0]
    script = f"""
import json, sys
import numpy as np
import nerfgan.runtime as nr
from nerfgan import camera
from nerfgan.runtime.backends import OnnxBackend
out = {str(out)!r}
errs = {{}}
with nr.load(out + "/student.pt2") as g, OnnxBackend(out + "/student.onnx") as ref:
    for b in (1, 3):
        rng = np.random.default_rng(b)
        f = {{"w": rng.standard_normal((b, 512)).astype(np.float32),
             "c": np.repeat(camera.frontal()[None], b, 0).astype(np.float32)}}
        got, want = g.student.infer(f), ref.infer(f)
        errs[b] = {{k: [list(got[k].shape), float(np.abs(got[k] - want[k]).max())] for k in want}}
    images = g.render(seeds=[5])
print(json.dumps({{"errs": errs, "render": list(images.shape),
                  "imported": sorted(m for m in sys.modules if m.startswith(("nerfgan.student", "nerfgan.export")))}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["imported"] == []
    assert result["render"] == [1, 128, 128, 3]
    for b, expect in (("1", 1), ("3", 3)):
        assert result["errs"][b]["image"][0] == [expect, 3, 128, 128]
        assert result["errs"][b]["image_raw"][0] == [expect, 3, 64, 64]
        assert max(v[1] for v in result["errs"][b].values()) <= 1e-4


@slow
def test_batches_beyond_the_package_max_are_split_and_calls_serialised(aoti_export):
    out = aoti_export[0]
    f = feeds(17, seed=3)  # the package takes batches up to 16
    with Pt2Backend(out / "student.pt2") as b, OnnxBackend(out / "student.onnx") as ref:
        assert b.package_max_batch == 16
        got, want = b.infer(f), ref.infer(f)
        assert got["image"].shape == (17, 3, 128, 128)
        assert max(float(np.abs(got[k] - want[k]).max()) for k in want) <= 1e-4
        results: dict[int, dict[str, np.ndarray]] = {}
        small = [feeds(2, seed=s) for s in range(4)]
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, b.infer(small[i]))) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        for i in range(4):
            assert np.abs(results[i]["image"] - ref.infer(small[i])["image"]).max() <= 1e-4
        with pytest.raises(TensorError, match="input w has shape"):
            b.infer({"w": f["w"][:, :10], "c": f["c"]})
    with pytest.raises(UsageError, match="backend is closed"):
        b.infer(small[0])


@slow
def test_refusals_name_the_file_in_one_line(aoti_export, tmp_path):
    src = aoti_export[0]
    d = tmp_path / "pkg"
    d.mkdir()
    pkg = d / "student.pt2"
    shutil.copy(src / "student.pt2", pkg)
    good = (src / "student.pt2.json").read_text()
    side = sidecar_path(pkg)

    def sidecar(**change) -> None:
        data = json.loads(good)
        data.update(change)
        side.write_text(json.dumps(data))

    with pytest.raises(InputFileError, match="no sidecar student.pt2.json"):
        Pt2Backend(pkg)
    side.write_text(" " * (SIDECAR_MAX_BYTES + 1))
    with pytest.raises(InputFileError, match="larger than 1024 kB"):
        Pt2Backend(pkg)
    sidecar(batch=[1, 16])
    with pytest.raises(InputFileError, match="batch must be"):
        Pt2Backend(pkg)
    sidecar(package_sha256="0" * 64)
    with pytest.raises(InputFileError, match="describes another package"):
        Pt2Backend(pkg)
    sidecar(torch_version="1.13.1")
    with pytest.raises(InputFileError, match="compiled by torch 1.13.1"):
        Pt2Backend(pkg)
    sidecar(target="AVX512 AVX512_NOSUCH")
    with pytest.raises(InputFileError, match="vector instructions AVX512 AVX512_NOSUCH, which this CPU lacks"):
        Pt2Backend(pkg)
    meta = dict(json.loads(good)["metadata"], **{"nerfgan.checkpoint_sha256": "f" * 64})
    sidecar(metadata=meta)  # what an edited sidecar claims vs what was compiled in
    with pytest.raises(InputFileError, match="metadata compiled into the package differs"):
        Pt2Backend(pkg)
    if not torch.cuda.is_available():
        sidecar(device="cuda", target="9.0")
        with pytest.raises(InputFileError, match="compiled for CUDA, and no CUDA device is available"):
            Pt2Backend(pkg)
    side.write_text(good)
    with pytest.raises(UsageError, match="compiled for cpu"):
        Pt2Backend(pkg, device="cuda")
    with pytest.raises(UsageError, match="--threads"):
        load(pkg, threads=2)
    with pytest.raises(UsageError, match="--backend pt2 runs AOTInductor packages"):
        load(src / "student.onnx", backend="pt2")
    Pt2Backend(pkg).close()  # the good sidecar back: it loads

    folder = tmp_path / "export"
    shutil.copytree(src, folder)
    data = bytearray((folder / "student.pt2").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "student.pt2").write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="sha256 .* differs"):
        load(folder, backend="pt2")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["format"] != "pt2"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="no fp32 pt2 student.*nerfgan-export --aoti"):
        load(folder, backend="pt2")


def test_a_failed_load_leaves_no_folders_in_the_temporary_directory(aoti_export, tmp_path):
    """Issue 22: torch's loader unpacks a package under $TMPDIR and left two aotinductor_* folders there for each
    failed load; nerfgan gives it a private folder and removes it."""
    import tempfile
    import zipfile

    src = aoti_export[0]
    d = tmp_path / "pkg"
    d.mkdir()
    pkg = d / "student.pt2"
    with zipfile.ZipFile(src / "student.pt2") as zin, zipfile.ZipFile(pkg, "w") as zout:
        for info in zin.infolist():  # every member kept but the compiled library, which is cut short
            data = zin.read(info)
            zout.writestr(info, data[:64] if info.filename.endswith(".so") else data)
    side = json.loads((src / "student.pt2.json").read_text())
    side["package_sha256"] = hashlib.sha256(pkg.read_bytes()).hexdigest()
    sidecar_path(pkg).write_text(json.dumps(side))
    tmp = Path(tempfile.gettempdir())

    def ours():
        return sorted(p.name for p in tmp.iterdir() if p.name.startswith(("aotinductor_", "nerfgan-aoti-")))

    before = ours()
    for _ in range(2):
        with pytest.raises(InputFileError, match="torch cannot load it as an AOTInductor package"):
            Pt2Backend(pkg)
    assert ours() == before
    b = Pt2Backend(src / "student.pt2")
    scratch = Path(b._scratch)
    assert scratch.is_dir()
    b.close()
    assert not scratch.exists() and ours() == before
