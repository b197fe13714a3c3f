"""nerfgan.runtime: one contract over ONNX Runtime and PyTorch; no torch import; threads; clear errors."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

import nerfgan.runtime as nr
from nerfgan.errors import InputFileError, PoseError, TensorError, UsageError


def test_render_contract(gen):
    images = gen.render(seeds=[0, 1, 2], yaw=[-20, 0, 20], pitch=5)
    assert images.shape == (3, 128, 128, 3) and images.dtype == np.uint8
    assert gen.backend == "onnxruntime-cpu-fp32" and gen.img_resolution == 128 and gen.resolution == 64
    out = gen.generate(seeds=0)
    assert out["image"].shape == (1, 3, 128, 128) and out["image_raw"].shape == (1, 3, 64, 64)


def test_style_once_many_views_equals_seeds(gen):
    w = gen.style(seed=7)
    assert w.shape == (1, 512)
    views = gen.render(w=w, yaw=[-30, 0, 30])  # one object, three poses
    for k, yaw in enumerate([-30, 0, 30]):
        np.testing.assert_array_equal(views[k], gen.render(seeds=7, yaw=yaw)[0])
    assert not np.array_equal(views[0], views[2]), "the pose changed nothing"
    pair = gen.render(seeds=[7, 8], yaw=[0, 30])  # pairwise
    np.testing.assert_array_equal(pair[0], views[1])
    with pytest.raises(UsageError, match="2 objects and 3 poses"):
        gen.render(seeds=[7, 8], yaw=[0, 10, 20])


def test_matches_the_pytorch_checkpoint(gen, tiny_student_path):
    with nr.load(tiny_student_path, device="cpu") as g_torch:
        assert g_torch.backend == "pytorch-cpu-fp32"
        a = g_torch.generate(seeds=[3, 4], yaw=[15, -15], truncation=0.6)
    b = gen.generate(seeds=[3, 4], yaw=[15, -15], truncation=0.6)
    assert np.abs(a["image"] - b["image"]).max() < 1e-4
    assert np.abs(a["image_raw"] - b["image_raw"]).max() < 1e-4


def test_int8_file_loads_by_precision(export_dir, gen):
    with nr.load(export_dir, precision="int8", device="cpu") as g8:
        assert g8.precision == "int8"
        a, b = g8.generate(seeds=1)["image"], gen.generate(seeds=1)["image"]
    assert 0 < np.abs(a - b).mean() < 0.2  # quantized: close, not equal
    with pytest.raises(UsageError, match="no fp16 onnx student"):
        nr.load(export_dir, precision="fp16", device="cpu")


def test_threads_share_one_generator(gen):
    seeds = list(range(8))
    expected = {s: gen.render(seeds=s, yaw=s * 5 - 20)[0] for s in seeds}
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(s: int) -> None:
        try:
            for _ in range(2):
                results[s] = gen.render(seeds=s, yaw=s * 5 - 20)[0]
        except BaseException as e:  # collected and re-raised in the test thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for s in seeds:
        np.testing.assert_array_equal(results[s], expected[s])


def test_batch_beyond_the_profile(gen):
    backend = gen.student
    saved = backend.max_batch
    backend.max_batch = 2
    try:
        w = gen.style(seed=[1, 2, 3])
        with pytest.raises(TensorError, match="batch 3 is outside this engine's profile"):
            backend.infer({"w": w, "c": gen.cameras(yaw=[0, 1, 2])})
        assert gen.render(w=w, yaw=[0, 1, 2]).shape == (3, 128, 128, 3)  # the Generator splits it
    finally:
        backend.max_batch = saved


def test_bad_inputs_are_named(gen, export_dir, tmp_path):
    w = gen.style(seed=1)
    bad = w.copy()
    bad[0, 3] = np.nan
    with pytest.raises(TensorError, match="input w contains NaN"):
        gen.render(w=bad)
    with pytest.raises(TensorError, match="inf"):
        gen.style(z=np.full((1, 512), np.inf, np.float32))
    with pytest.raises(TensorError, match=r"w: expected shape \(B, 512\)"):
        gen.render(w=np.zeros((1, 7), np.float32))
    with pytest.raises(PoseError):
        gen.render(seeds=0, pitch=95)
    with pytest.raises(PoseError, match="fov"):
        gen.render(seeds=0, fov=170)
    with pytest.raises(UsageError, match="seeds"):
        gen.render(seeds=-1)
    with pytest.raises(UsageError, match="exactly one"):
        gen.render(seeds=0, w=w)
    with pytest.raises(UsageError, match="truncation"):
        gen.style(seed=0, truncation=1.5)
    with pytest.raises(TensorError, match="expected inputs"):
        gen.student.infer({"w": w})
    with pytest.raises(InputFileError, match="not found"):
        nr.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no manifest.json"):
        nr.load(tmp_path / "empty")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(InputFileError, match="junk.onnx: ONNX Runtime cannot load it"):
        nr.load(tmp_path / "junk.onnx", device="cpu")
    with pytest.raises(InputFileError, match="unknown model file type"):
        nr.load(export_dir / "manifest.json")
    with pytest.raises(UsageError, match="--device"):
        nr.load(export_dir, device="tpu")


def test_closed_generator_refuses(export_dir):
    g = nr.load(export_dir / "student.onnx", device="cpu")  # mapping.onnx beside it is found
    assert g.mapping is not None
    g.close()
    with pytest.raises(UsageError, match="closed"):
        g.render(seeds=0)


def test_onnx_rendering_never_imports_torch(export_dir):
    code = ("import sys, nerfgan.runtime as nr\n"
            f"g = nr.load({str(export_dir)!r}, device='cpu')\n"
            "img = g.render(seeds=[0, 1], yaw=[0, 20])\n"
            "g8 = nr.load(" + repr(str(export_dir)) + ", precision='int8', device='cpu'); g8.render(seeds=0)\n"
            "print(img.shape, 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2, 128, 128, 3) False"
