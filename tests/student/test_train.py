"""The distillation trainer: learning, exact resume after a kill, torchrun, and user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nerfgan.cli import main
from nerfgan.student.checkpoint import load_student
from nerfgan.student.train import Trainer, train_preset

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FAST = ["--batch-size", "2", "--eval-every", "0", "--n-eval", "2", "--stage1-steps", "3", "--device", "cpu"]


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    from nerfgan.teacher.renders import make_render_set

    out = tmp_path_factory.mktemp("renders") / "set"
    make_render_set("tiny", 6, out, seed=0, shard_size=3, batch_size=3, progress=False)
    return out


def train_cmd(out, renders, *extra):
    return [sys.executable, "-m", "nerfgan.cli", "train", "--teacher", "tiny", "--renders", str(renders),
            "--out", str(out), *FAST, *extra]


def state_step(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return int(json.loads(f.metadata()["info"])["step"])


def state_tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_resume_after_kill_ends_with_the_same_weights(tmp_path, renders):
    steps = 7
    full = tmp_path / "full"
    subprocess.run(train_cmd(full, renders, "--steps", str(steps)), check=True, env=ENV, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(killed, renders, "--steps", str(steps), "--ckpt-every", "1"), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "train_state.safetensors"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and state_step(state) >= 4:  # in stage 2: generator, discriminator and R1 all ran
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    k = state_step(state)
    assert 4 <= k < steps
    subprocess.run(train_cmd(killed, renders, "--steps", str(steps), "--ckpt-every", "1", "--resume"),
                   check=True, env=ENV, capture_output=True)

    a, b = state_tensors(full / "train_state.safetensors"), state_tensors(state)
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert different == []  # G, G_ema, D and both optimizers' moments
    assert state_step(state) == steps
    assert load_student(killed / "student.safetensors").config.pose_input


def test_torchrun_two_cpu_processes_keep_identical_weights(tmp_path, renders):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nerfgan.cli",
           "train", "--teacher", "tiny", "--renders", str(renders), "--out", str(out), "--steps", "5",
           "--batch-size", "2", "--eval-every", "0", "--n-eval", "2", "--stage1-steps", "2", "--device", "cpu"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((out / "replicas.json").read_text())
    assert rep["world_size"] == 2 and rep["step"] == 5
    assert len(rep["sha256"]) == 2 and rep["sha256"][0] == rep["sha256"][1]
    # and the run really trained: the weights moved away from the initial ones
    first = Trainer(train_preset("tiny", batch_size=2, n_eval=2), _teacher(), tmp_path / "init", renders=str(renders))
    assert first.replica_digest() != rep["sha256"][0]


def _teacher():
    from nerfgan.teacher.checkpoint import load_teacher

    return load_teacher("tiny")


def test_reconstruction_loss_falls(tmp_path, renders):
    cfg = train_preset("tiny", batch_size=2, n_eval=2, eval_every=0, stage1_steps=100, ckpt_every=1000)
    trainer = Trainer(cfg, _teacher(), tmp_path / "run", renders=str(renders), progress=False)
    losses = [trainer.train_step()["loss_g"] for _ in range(12)]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_on_the_fly_batches_equal_the_render_set(tmp_path, renders):
    from nerfgan.teacher.renders import RenderSet

    cfg = train_preset("tiny", batch_size=2, n_eval=2)
    trainer = Trainer(cfg, _teacher(), tmp_path / "fly", progress=False)
    batch = trainer.data.batch(0)  # samples 0 and 1 of seed 0, rendered now
    stored = RenderSet.open(renders).load([0, 1])
    assert torch.equal(batch["w"], torch.from_numpy(stored["w"]))
    assert (batch["image"] - torch.from_numpy(stored["image"])).abs().max() < 2e-3  # float16 storage


def test_outputs_of_a_run(tmp_path, renders, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", "--renders", str(renders), "--out", str(out), "--steps", "2", "--batch-size", "2",
              "--eval-every", "1", "--n-eval", "2", "--device", "cpu"])
    assert e.value.code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(0 < r["ssim_hr"] <= 1 and r["psnr_hr"] > 0 for r in rows)
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["step-0000000.png", "step-0000001.png", "step-0000002.png"]
    assert "held-out PSNR" in capsys.readouterr().out
    student = load_student(out / "student.safetensors")
    assert json.loads((out / "config.json").read_text())["student"] == json.loads(student.config.to_json())


def test_eval_grid_is_captioned_with_the_shared_difference_scale(tiny_student_path, builtin_teacher):
    import numpy as np

    from nerfgan import camera
    from nerfgan.captions import difference, difference_note, layout
    from nerfgan.io import to_uint8
    from nerfgan.student.train import comparison_grid

    student = load_student(tiny_student_path)
    z = torch.from_numpy(np.concatenate([np.random.default_rng(s).standard_normal((1, 512)) for s in (0, 1)])).float()
    c = torch.from_numpy(camera.pose(np.array([-30.0, 20.0]), np.array([0.0, 10.0])))
    with torch.no_grad():
        ws = builtin_teacher.mapping(z, c, truncation_psi=0.7)
        w, teacher = ws[:, 0], builtin_teacher.synthesis(ws, c).image
        out = student(w, c).image.clamp(-1, 1).numpy()
    grid = comparison_grid(student, {"w": w, "c": c, "image": teacher})
    t = teacher.clamp(-1, 1).numpy()
    tiles = [[to_uint8(t[i]), to_uint8(out[i]), difference(out, t)[i]] for i in range(2)]
    lay = layout(tiles, columns=["teacher", "student", "difference"],
                 rows=["held-out 0\nyaw -30 pitch 0", "held-out 1\nyaw 20 pitch 10"],
                 footer=difference_note("student", "teacher"))
    assert grid.shape == lay.shape and lay.top > 0 and lay.left > 0 and lay.bottom > 0
    for r in range(2):
        for col in range(3):
            y, x = lay.origin(r, col)
            np.testing.assert_array_equal(grid[y:y + 128, x:x + 128], tiles[r][col])
    assert (grid[-lay.bottom:].min(axis=-1) < 128).sum() > 100  # the difference scale


@pytest.mark.parametrize("args, message", [
    (["--steps", "1", "--resume"], "nothing to resume"),
    (["--steps", "1", "--refresh", "0.5", "--no-renders"], "--refresh needs --renders"),
    ([], "--steps"),
    (["--steps", "1", "--eval-minutes", "1,x"], "--eval-minutes"),
])
def test_user_errors(tmp_path, renders, args, message, capsys):
    argv = ["train", "--out", str(tmp_path / "r"), "--batch-size", "2", "--n-eval", "2", "--device", "cpu"]
    if "--no-renders" in args:
        args = [a for a in args if a != "--no-renders"]
    else:
        argv += ["--renders", str(renders)]
    with pytest.raises(SystemExit) as e:
        main(argv + args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err


def test_existing_run_needs_resume(tmp_path, renders, capsys):
    argv = ["train", "--renders", str(renders), "--out", str(tmp_path / "r"), "--steps", "1", "--batch-size", "2",
            "--n-eval", "2", "--eval-every", "0", "--device", "cpu"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "--resume" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # resuming with other settings is refused
        main(argv[:-2] + ["--lr", "0.01", "--resume", "--device", "cpu"])
    assert e.value.code == 2 and "lr" in capsys.readouterr().err


def test_refresh_mixes_fresh_teacher_renders_into_set_batches(tmp_path, renders):
    cfg = train_preset("tiny", batch_size=4, n_eval=2, refresh=0.25)
    trainer = Trainer(cfg, _teacher(), tmp_path / "refresh", renders=str(renders), progress=False)
    batch = trainer.data.batch(3)
    assert batch["w"].shape == (4, 512) and batch["image"].shape == (4, 3, 128, 128)
    from nerfgan.teacher.renders import RenderSet

    stored = RenderSet.open(renders).load()
    in_set = [any(torch.equal(w, torch.from_numpy(s)) for s in stored["w"]) for w in batch["w"]]
    assert in_set == [True, True, True, False]  # 3 drawn from the set, 1 rendered fresh (index 6 + 3 * 4)
    again = trainer.data.batch(3)
    assert torch.equal(again["w"], batch["w"])  # a step's data depends on (seed, step) only
