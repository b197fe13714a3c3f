"""``nerfgan quickstart -o DIR``: the whole pipeline on the built-in teacher, in minutes on a CPU.

The built-in ``tiny`` teacher is EG3D's tiny configuration fitted to nerfgan's analytic scene family
(``nerfgan.scenes``): head-like objects with ears, nose, eyes and stripes, whose exact renders are
known, so the student is judged against its teacher AND against the ground truth.

Stages, each written into DIR and reused by a later run with the same settings. A stage is done when its
marker DIR/.quickstart/<stage>.json records the settings it depends on (its own option and those of the stages
before it: --renders from `renders` on, the budget (--steps or --minutes) from `train` on, except `calibrate`, whose samples hold no
student); a changed option redoes exactly the stages that depend on it, and each redone stage says why. A changed budget or --renders trains a new student from
scratch (the student then depends on the settings only, never on earlier calls); a killed or Ctrl-C'd run with
the same settings continues from its checkpoint. ``--force`` redoes every stage; in DIR/run it removes only what
nerfgan runs wrote there. A folder that is not nerfgan's is refused before any work:

    teacher     DIR/teacher.safetensors      the built-in teacher, copied from the package
    renders     DIR/renders/                 the teacher rendered once for --renders samples (resumable)
    train       DIR/run/student.safetensors  a student distilled for QUICKSTART_STEPS steps (--steps), or for
                                             --minutes of training time; resumes a killed run; the adversarial
                                             stage starts after QUICKSTART_STAGE1_STEPS steps
    calibrate   DIR/calib.npz                32 held-out teacher renders (at most --renders): INT8 calibration and its gate
    export      DIR/export/                  mapping.onnx, student.onnx, student_int8.onnx, manifest.json
    images      DIR/views.png, DIR/orbit.gif four seeds at three yaws, and a camera orbit, via nerfgan.runtime
    parity      DIR/parity/                  teacher vs the ONNX student: PSNR, SSIM, 3D consistency
    score       DIR/score.json               teacher and ONNX student vs the exact ground truth (16 held-out samples)
    bench       DIR/bench.json               teacher vs PyTorch student vs ONNX FP32 / INT8, images/s
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

STAGES = ("teacher", "renders", "train", "calibrate", "export", "images", "parity", "score", "bench")

QUICKSTART_STAGE1_STEPS = 300
"""Reconstruction-only steps before the adversarial loss joins (the tiny preset's 1500 would take most of an
hour on 2 cores)."""

QUICKSTART_STEPS = 600
"""The quickstart's training budget: steps, not minutes, so a slower or busier machine makes the same student
later instead of a worse one now (about 5 minutes on 2 quiet cores)."""

USUAL_PSNR_DB = 24.0
"""A --minutes run whose held-out PSNR ends below this is warned about: below what the default step budget
gives (README, "Run")."""


RENDER_SHARD = 16
"""Samples per render-set shard: a Ctrl-C or kill during the renders loses at most this many (the set is resumed
shard by shard)."""

OWNER_KIND = "quickstart"  # nerfgan.io owner-file kind of the quickstart folder


def _same_run(run: Path, cfg: Any) -> bool:
    """``run`` holds a training state whose config.json was written for ``cfg`` (a killed run to continue)."""
    try:
        saved = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (run / "train_state.safetensors").is_file() and isinstance(saved, dict) \
        and saved.get("train") == json.loads(cfg.to_json())


class Quickstart:
    def __init__(self, out: str, minutes: float | None, renders: int, force: bool, device: str,
                 echo: Callable[[str], Any] = click.echo, steps: int | None = None) -> None:
        """The training budget: ``steps`` steps when given, else ``minutes`` of training time (--minutes),
        else QUICKSTART_STEPS steps. It is one of the train stage's settings."""
        self.out = Path(out)
        self.n_renders, self.force, self.device, self.echo = renders, force, device, echo
        self.steps = steps if steps is not None or minutes is not None else QUICKSTART_STEPS
        self.minutes = minutes if self.steps is None else None
        self.marks = self.out / ".quickstart"
        self.redone: list[str] = []  # stages run by this call
        self.reused: list[str] = []  # stages whose earlier result was valid for these settings
        self.why = "not done yet"  # why the stage being run is run (why_redo)

    # --- stage bookkeeping ------------------------------------------------------------------------
    def _settings(self, stage: str) -> dict[str, Any]:
        """What a stage's result depends on: its own option and those of the stages before it."""
        k = STAGES.index(stage)
        settings: dict[str, Any] = {"stage": stage}
        if k >= STAGES.index("renders"):
            settings["renders"] = self.n_renders
        if k >= STAGES.index("train") and stage != "calibrate":  # calibration samples are teacher renders and the
            if self.steps is not None:                               # frozen teacher mapping's codes: no student in them
                settings["steps"] = self.steps
            else:
                settings["minutes"] = self.minutes
        return settings

    def _marker(self, stage: str) -> dict[str, Any] | None:
        mark = self.marks / f"{stage}.json"
        try:
            data = json.loads(mark.read_text(encoding="utf-8")) if mark.is_file() and not mark.is_symlink() else None
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def why_redo(self, stage: str) -> str | None:
        """None when the stage's result in DIR is valid for these settings, else why it is (re)done."""
        if self.force:
            return "--force"
        mark = self._marker(stage)
        if mark is None:
            return "not done yet"
        before, now = mark.get("settings") or {}, self._settings(stage)
        if before == now:
            return None
        changed = [f"--{k} {before.get(k)} -> {now[k]}" for k in now if before.get(k) != now[k]]
        return "changed: " + ", ".join(changed)

    def done(self, stage: str) -> bool:
        return self.why_redo(stage) is None

    def finish(self, stage: str, seconds: float, **facts: Any) -> None:
        from nerfgan.io import atomic_path

        self.marks.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.marks / f"{stage}.json") as tmp:
            tmp.write_text(json.dumps({"settings": self._settings(stage), "seconds": round(seconds, 1), **facts}))

    def stage(self, stage: str, fn: Callable[[], dict[str, Any]]) -> None:
        why = self.why_redo(stage)
        if why is None:
            self.echo(f"[{stage}] done before, reused (--force to redo)")
            self.reused.append(stage)
            return
        self.echo(f"[{stage}] ... ({why})" if why != "not done yet" else f"[{stage}] ...")
        (self.marks / f"{stage}.json").unlink(missing_ok=True)  # killed from here on, the stage counts as not done
        self.why = why
        t0 = time.perf_counter()
        try:
            facts = fn() or {}
        except KeyboardInterrupt:  # say what is kept and how to go on, before click's "Aborted."
            self.echo(f"[{stage}] interrupted{self._kept(stage)}; run the same command again to continue")
            raise
        seconds = time.perf_counter() - t0
        self.finish(stage, seconds, **facts)
        self.redone.append(stage)
        self.echo(f"[{stage}] {seconds:.0f} s")

    def _kept(self, stage: str) -> str:
        """What an interrupted stage leaves for the next run, as ', N of M renders kept in DIR/renders'."""
        if stage != "renders":
            return ""
        try:
            from nerfgan.teacher.renders import _read_index

            done = sum(s["count"] for s in _read_index(self.out / "renders")["shards"])
        except Exception:  # nothing written yet, or unreadable: nothing to report
            return ""
        return f": {done} of {self.n_renders} renders kept in {self.out / 'renders'}"

    # --- stages -----------------------------------------------------------------------------------
    def teacher(self) -> dict[str, Any]:
        from nerfgan.teacher.checkpoint import load_teacher, save_teacher

        from nerfgan.teacher.checkpoint import read_teacher_metadata

        keep = {k: v for k, v in read_teacher_metadata("tiny").items() if k in ("scene_family", "fit_config", "fit_seconds")}
        save_teacher(load_teacher("tiny"), self.out / "teacher.safetensors", {"source": "nerfgan built-in 'tiny'", **keep})
        return {}

    def renders(self) -> dict[str, Any]:
        from nerfgan.teacher.renders import make_render_set

        make_render_set(self.out / "teacher.safetensors", self.n_renders, self.out / "renders", seed=0,
                        device=self.device, progress=True, shard_size=self._shard_size())
        return {}

    def train(self) -> dict[str, Any]:
        from nerfgan.student.run_dir import clear_run_dir
        from nerfgan.student.train import Trainer, train_preset
        from nerfgan.teacher.checkpoint import load_teacher

        run = self.out / "run"
        cfg = train_preset("tiny", eval_every=0, n_eval=8, stage1_steps=QUICKSTART_STAGE1_STEPS,
                           eval_minutes=() if self.minutes is None else (self.minutes / 2,))
        # A run killed with these very settings continues; any other (--force, another --minutes or --renders)
        # starts again from scratch, so the student depends on the settings only, never on earlier calls.
        resume = self.why == "not done yet" and _same_run(run, cfg)
        if resume:
            self.echo(f"  continuing the interrupted run in {run}")
        else:
            if self.why != "not done yet":
                self.echo(f"  a new run from scratch in {run} (the student depends on the settings only)")
            clear_run_dir(run, "--force" if self.force else "-o")
        teacher = load_teacher(self.out / "teacher.safetensors", device=self.device)
        with Trainer(cfg, teacher, run, renders=str(self.out / "renders"), resume=resume, device=self.device,
                     resume_hint="run the same quickstart command again (without --force) to continue") as trainer:
            rows = trainer.run(steps=self.steps) if self.steps is not None else trainer.run(minutes=self.minutes)
        last = rows[-1]
        facts = {"steps": trainer.step, "stage2_steps": max(0, trainer.step - cfg.stage1_steps),
                 "psnr_hr": last["psnr_hr"], "psnr_lr": last["psnr_lr"], "seconds_training": trainer.train_seconds}
        self.echo(f"  held-out PSNR after {trainer.step} steps: {last['psnr_hr']:.2f} dB (128 px), "
                  f"{last['psnr_lr']:.2f} dB (64 px)")
        for line in self.budget_warnings(facts):
            self.echo("  warning: " + line)
        return facts

    def budget_warnings(self, facts: dict[str, Any]) -> list[str]:
        """What a --minutes run should be told about its student: it stopped before the adversarial stage, or
        below the usual quality (a step budget has neither problem: it trains the same student on any machine)."""
        if self.minutes is None:
            return []
        out = []
        if facts["steps"] <= QUICKSTART_STAGE1_STEPS:
            out.append(f"--minutes {self.minutes:g} ended after {facts['steps']} steps, before the adversarial stage "
                       f"(from step {QUICKSTART_STAGE1_STEPS}): this machine was slower or busier than the budget "
                       f"assumes; leave out --minutes (a budget of {QUICKSTART_STEPS} steps) for the usual student")
        if facts["psnr_hr"] < USUAL_PSNR_DB:
            out.append(f"the student's held-out PSNR, {facts['psnr_hr']:.2f} dB, is below the usual "
                       f"{USUAL_PSNR_DB:g} dB of the default step budget")
        return out

    def _shard_size(self) -> int:
        """RENDER_SHARD, or the shard size of the set an earlier (interrupted) quickstart began, which it continues."""
        try:
            from nerfgan.teacher.renders import _read_index

            return int(_read_index(self.out / "renders")["shard_size"])
        except Exception:  # no set begun yet
            return RENDER_SHARD

    def calibrate(self) -> dict[str, Any]:
        from nerfgan.calibrate.calibset import make_calibration_set

        # 32 fresh teacher renders (seed 1; the render set the student trained on is seed 0), so the INT8
        # gate judges the quantized student on samples it never saw
        make_calibration_set(self.out / "teacher.safetensors", self.out / "run" / "student.safetensors",
                             min(32, self.n_renders), self.out / "calib.npz", seed=1, progress=True)
        return {}

    def export(self) -> dict[str, Any]:
        from nerfgan.export.pipeline import ExportConfig, export

        manifest = export(self.out / "run" / "student.safetensors", self.out / "export",
                          ExportConfig(int8=True, calib=str(self.out / "calib.npz")), log=lambda s: self.echo("  " + s))
        return {"artifacts": [a["file"] for a in manifest["artifacts"]]}

    def images(self) -> dict[str, Any]:
        import numpy as np
        from PIL import Image

        import nerfgan.runtime as nr
        from nerfgan import camera
        from nerfgan.captions import caption_grid
        from nerfgan.io import atomic_path, save_png

        yaws, seeds, psi = [-30.0, 0.0, 30.0], range(4), 0.7
        with nr.load(self.out / "export", device="cpu") as g:
            tiles = [list(g.render(w=g.style(seed=s, truncation=psi), yaw=yaws)) for s in seeds]  # 4 x 3 (H, W, 3)
            save_png(self.out / "views.png", caption_grid(
                tiles, columns=[f"yaw {y:g}" for y in yaws], rows=[f"seed {s}" for s in seeds],
                footer=f"pitch 0, truncation {psi:g}; rendered by nerfgan.runtime from export/ (ONNX, CPU)"))
            w = g.style(seed=0)
            poses = camera.orbit(36)
            frames = np.concatenate([g.render(w=w, yaw=poses[i:i + 12, 0], pitch=poses[i:i + 12, 1])
                                     for i in range(0, len(poses), 12)])
        pil = [Image.fromarray(f) for f in frames]
        with atomic_path(self.out / "orbit.gif") as tmp:
            pil[0].save(tmp, format="GIF", save_all=True, append_images=pil[1:], duration=40, loop=0)
        return {}

    def parity(self) -> dict[str, Any]:
        from nerfgan.runtime.parity import run_parity

        report = run_parity(str(self.out / "teacher.safetensors"), self.out / "export", self.out / "parity", n=15,
                            device="cpu", log=lambda s: None)
        a = report["aggregates"]
        self.echo(f"  student (ONNX) vs teacher: PSNR {a['psnr_image']:.2f} dB, SSIM {a['ssim_image']:.3f} "
                  f"(128 px); report in {self.out / 'parity' / 'report.md'}")
        return {"psnr_image": a["psnr_image"], "ssim_image": a["ssim_image"]}

    def score(self) -> dict[str, Any]:
        from nerfgan.evaluate.scene_score import score, summary
        from nerfgan.io import atomic_path

        report = score(str(self.out / "teacher.safetensors"), n=16, seed=12345, engine=self.out / "export")
        with atomic_path(self.out / "score.json") as tmp:
            tmp.write_text(json.dumps(report, indent=1))
        self.echo("  against the exact ground truth (16 held-out samples):")
        self.echo("\n".join("  " + line for line in summary(report).splitlines()))
        return {"teacher_psnr_image": report["psnr_image"], "engine_psnr_image": report["engine"]["psnr_image"]}

    def bench(self) -> dict[str, Any]:
        from nerfgan.io import atomic_path
        from nerfgan.runtime.bench import run_bench, table_text

        result = run_bench(str(self.out / "teacher.safetensors"),
                           [str(self.out / "run" / "student.safetensors"), str(self.out / "export"),
                            str(self.out / "export")], [None, "fp32", "int8"], batches=(1, 4), device="cpu",
                           runs=3, warmup=1, log=lambda s: None)
        with atomic_path(self.out / "bench.json") as tmp:
            tmp.write_text(json.dumps(result, indent=1, allow_nan=False))
        self.echo(table_text(result))
        return {}

    # --- the whole job ----------------------------------------------------------------------------
    def check(self) -> None:
        """Before any work: DIR is missing, empty or an earlier quickstart's (it writes files of fixed names there),
        DIR can be written, and DIR/run is a folder nerfgan may train into (and, with --force, clear)."""
        from nerfgan.io import check_writable_dir, claim_dir
        from nerfgan.student.run_dir import claim_run_dir

        claim_dir(self.out, OWNER_KIND, "-o", lambda p: (p / ".quickstart").is_dir())  # (older quickstarts)
        check_writable_dir(self.out, "quickstart folder")
        claim_run_dir(self.out / "run", "--force" if self.force else "-o")

    def run(self, extra: dict[str, Callable[[], dict[str, Any]]] | None = None) -> None:
        self.check()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            from nerfgan.errors import OutputError

            raise OutputError(f"-o {self.out}: cannot make the folder ({e.strerror or e})") from None
        from nerfgan.io import mark_dir

        mark_dir(self.out, OWNER_KIND)
        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "teacher": self.teacher, "renders": self.renders, "train": self.train, "calibrate": self.calibrate,
            "export": self.export, "images": self.images, "parity": self.parity, "score": self.score,
            "bench": self.bench,
            **(extra or {})}
        for name in STAGES:
            if name in steps:
                self.stage(name, steps[name])

    def summary(self) -> None:
        o = self.out
        lines = [
            ("teacher.safetensors", "the built-in teacher: EG3D fitted to nerfgan's scene family"),
            ("renders/", f"{self.n_renders} teacher renders"),
            ("run/student.safetensors", "the distilled student (PyTorch); run/metrics.jsonl, run/eval/*.png"),
            ("export/", "mapping.onnx, student.onnx, student_int8.onnx, manifest.json (validation figures)"),
            ("views.png", "four seeds at yaw -30, 0, 30, rendered through nerfgan.runtime (ONNX Runtime)"),
            ("orbit.gif", "a camera orbit around seed 0"),
            ("parity/report.md", "teacher vs engine: PSNR, SSIM, 3D consistency, grid.png, psnr_vs_yaw.png"),
            ("score.json", "teacher and engine vs the exact ground truth (nerfgan scene score)"),
            ("bench.json", "images/s of the teacher and each engine"),
        ]
        self.echo(f"\nnerfgan quickstart: made in {o}/")
        train = self._marker("train") or {}
        if "steps" in train:
            n, n2 = int(train["steps"]), int(train.get("stage2_steps", 0))
            stages = (f"{n - n2} reconstruction + {n2} adversarial" if n2 else f"{n} reconstruction only, no adversarial")
            self.echo(f"  student: {n} steps ({stages}), held-out PSNR {float(train['psnr_hr']):.2f} dB vs the teacher")
            for line in self.budget_warnings(train):
                self.echo("  warning: " + line)
        if self.reused:
            self.echo(f"  redone: {', '.join(self.redone) or 'nothing'}; reused: {', '.join(self.reused)}")
        elif self.redone:
            self.echo(f"  ran every stage{' again (--force)' if self.force else ''}: {', '.join(self.redone)}")
        for path, what in lines:
            if (o / path.rstrip("/")).exists():
                self.echo(f"  {str(o / path):<40} {what}")
        self.echo(f"next: nerfgan-run --engine {o}/export --seed 3 --pose 30,0 -o view.png")
