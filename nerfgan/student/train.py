"""The distillation trainer: the teacher is frozen, the student learns to render what it renders.

One step (global batch B, split over the processes of a torchrun job):

1. data: (w, render camera c, teacher feature image, teacher final image) for B samples, from a
   teacher render set or rendered on the fly (each sample a pure function of (seed, index));
2. generator: reconstruction (L1 on the 32-channel feature image and the raw RGB, L1 + SSIM on
   the final image), plus in stage 2 the non-saturating adversarial loss (weight 0.1) of the
   pose-conditioned dual discriminator; Adam; EMA of the weights;
3. discriminator (stage 2 only): logistic loss on teacher (real) vs student (fake) pairs of final
   and raw images, with the render camera as condition; lazy R1 on the real pairs. With real images
   (``--real``, nerfgan.student.real_data), a fraction of the real pairs are data set images with
   their own cameras and an antialiased downsampling as raw image, picked by (seed, step).

Which samples a step uses depends only on (seed, step), so a resumed run sees exactly the data
an uninterrupted one would; with the saved weights, EMA, discriminator and optimizer states it
ends with the same weights. Training time (``--minutes``) excludes evaluation and checkpoints.

The run folder (RUN_DIR) belongs to one run at a time: a lock file (a second training into it fails
at once), an owner file (a folder holding files nerfgan did not write is refused; runs from before
the owner file are recognised by their train state or config), no file written through a symbolic
link. A fresh run starts metrics.jsonl and eval/ anew; a resumed one drops the metrics rows past its
checkpoint, so every step has at most one row. The held-out set is cached with the settings it was
rendered for (seed, n, poses, teacher digest and config) and rendered again when they differ.
SIGINT / SIGTERM stop the run between two steps with a checkpoint (TrainingInterrupted, exit code
128 + signal); a second Ctrl-C stops at once without one.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import math
import os
import signal
import stat
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from nerfgan.errors import CheckpointError, ConfigError, OutputError, UsageError
from nerfgan.io import atomic_path, check_writable_dir, folder_lock, mark_dir, save_png, to_uint8
from nerfgan.sampling import PoseDistribution, draw
from nerfgan.student.checkpoint import load_train_state, save_student, save_train_state
from nerfgan.student.config import StudentConfig, student_preset
from nerfgan.student.discriminator import Discriminator
from nerfgan.student.generator import StudentGenerator
from nerfgan.student.real_data import RealImages, downsample
from nerfgan.student.run_dir import (EVAL_DIR, HELD_OUT_FORMAT, NOFOLLOW, RUN_KIND, TrainingInterrupted, claim_run_dir,
                                     read_rows, refuse_links, remove_outputs)
from nerfgan.student.train_presets import TRAIN_PRESETS
from nerfgan.student.losses import (
    PSNR_CAP_DB, ReconstructionWeights, d_logistic, g_nonsaturating, psnr, r1_penalty, reconstruction_loss, ssim,
)
from nerfgan.teacher.checkpoint import read_safetensors, weights_digest, write_safetensors
from nerfgan.teacher.config import TeacherConfig
from nerfgan.teacher.identity import TEACHER_KEY
from nerfgan.teacher.generator import EG3D

EVAL_SEED_OFFSET = 1_000_003  # held-out samples come from seed + this: other z and other poses


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes. Saved as RUN_DIR/config.json."""

    preset: str = "tiny"  # student preset (widths)
    pose_input: bool = True  # False trains the no-pose ablation (mapping sees w only)
    seed: int = 0
    batch_size: int = 4  # global batch, split over processes
    lr: float = 0.002  # Adam learning rate of the student
    sr_lr_ratio: float = 0.1  # the super-resolution starts from the teacher's: smaller steps
    betas: tuple[float, float] = (0.9, 0.99)
    recon: ReconstructionWeights = field(default_factory=ReconstructionWeights)
    adv_weight: float = 0.1  # weight of the adversarial loss in stage 2 (nerfgan's choice: reconstruction dominates)
    stage1_steps: int = 1500  # stage 1: reconstruction only; stage 2 adds the adversarial loss
    d_lr: float = 0.002
    d_betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 1.0
    r1_interval: int = 4  # lazy R1: every this many D steps, scaled by the interval
    d_channel_base: int = 2048
    d_channel_max: int = 128
    ema_halflife_images: float = 2000.0  # EMA half-life, in training images
    ema_rampup: float = 0.05  # half-life <= rampup * images seen so far (StyleGAN2)
    refresh: float = 0.0  # with a render set: fraction of each batch rendered fresh by the teacher
    pose: PoseDistribution = field(default_factory=PoseDistribution)
    n_eval: int = 16  # held-out samples for PSNR/SSIM
    eval_every: int = 250  # steps (0: only at eval_minutes and at the end)
    eval_minutes: tuple[float, ...] = ()  # also evaluate when training time passes these marks
    ckpt_every: int = 100  # steps between checkpoints
    real: str | None = None  # stage 2: EG3D-format data set (folder or .zip, as given) mixed into D's real samples
    real_fraction: float = 0.0  # with real: fraction of D's real samples that are real images, in (0, 1]
    real_count: int = 0  # with real: images in the data set
    real_digest: str | None = None  # with real: RealImages.digest (names, labels and image file sizes)

    def __post_init__(self) -> None:
        if self.real is None:
            if self.real_fraction or self.real_count or self.real_digest is not None:
                raise ConfigError("real_fraction, real_count and real_digest need real (--real-fraction needs --real)")
        elif not (math.isfinite(self.real_fraction) and 0 < self.real_fraction <= 1):
            raise ConfigError(f"--real-fraction must be in (0, 1], got {self.real_fraction}")

    def student_config(self, teacher: TeacherConfig) -> StudentConfig:
        """The student this run trains for ``teacher``: the preset's widths, with or without pose input."""
        return student_preset(self.preset, teacher).replace(pose_input=self.pose_input)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        d = json.loads(text)
        d["betas"], d["d_betas"] = tuple(d["betas"]), tuple(d["d_betas"])
        d["eval_minutes"] = tuple(d["eval_minutes"])
        d["recon"] = ReconstructionWeights(**d["recon"])
        d["pose"] = PoseDistribution(**d["pose"])
        return cls(**d)  # fields added later (real, real_fraction, ...) take their defaults in older files


LATER_FIELDS = ("real", "real_fraction", "real_count", "real_digest")
"""TrainConfig fields that config.json files of older runs lack (their defaults: what those runs did)."""


def train_preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown training preset {name!r}; choose one of {', '.join(sorted(TRAIN_PRESETS))}")
    return TrainConfig(preset=name, **{**TRAIN_PRESETS[name], **overrides})


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
Batch = dict[str, torch.Tensor]  # w (B, 512), c (B, 25), feature_image (B, 32, R, R), image (B, 3, H, W)


def teacher_batch(teacher: EG3D, seed: int, indices: np.ndarray, dist_: PoseDistribution, chunk: int = 4) -> Batch:
    """Render samples ``indices`` of stream ``seed`` with the teacher, exactly as a render set stores them."""
    from nerfgan.teacher.renders import render_targets

    r = teacher.config.rendering
    s = draw(seed, indices, dist_, r.avg_camera_radius, r.avg_camera_pivot, teacher.config.z_dim)
    device = next(teacher.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {"w": [], "c": [], "feature_image": [], "image": []}
    for i in range(0, len(indices), chunk):
        out = render_targets(teacher, s.subset(slice(i, i + chunk)))
        parts["c"].append(torch.from_numpy(s.c[i:i + chunk]).to(device))
        for k in ("w", "feature_image", "image"):
            parts[k].append(out[k])
    return {k: torch.cat(v) for k, v in parts.items()}


class DataSource:
    """Where a step's teacher targets come from: a render set (with optional refresh) or the teacher."""

    def __init__(self, cfg: TrainConfig, teacher: EG3D, renders: str | None, device: torch.device) -> None:
        self.cfg, self.teacher, self.device = cfg, teacher, device
        self.set: dict[str, torch.Tensor] | None = None
        self.set_size = 0
        if renders is not None:
            from nerfgan.teacher.renders import RenderSet

            rs = RenderSet.open(renders)
            if rs.config != teacher.config:
                raise UsageError(f"--renders {renders}: the render set was made by another teacher config")
            arrays = rs.load(as_float32=False)  # images stay float16 in memory; batches are converted
            self.set = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in ("w", "c", "feature_image", "image")}
            self.set_size = len(rs)

    def batch(self, step: int, rank: int = 0, world: int = 1) -> Batch:
        B = self.cfg.batch_size
        lo, hi = rank * B // world, (rank + 1) * B // world
        if self.set is None:
            idx = np.arange(step * B, (step + 1) * B)[lo:hi]
            return teacher_batch(self.teacher, self.cfg.seed, idx, self.cfg.pose)  # on the teacher's (= our) device
        rng = np.random.default_rng([self.cfg.seed, step])
        n_fresh = int(round(self.cfg.refresh * B))
        pick = rng.choice(self.set_size, size=B - n_fresh, replace=B - n_fresh > self.set_size)
        fresh = self.set_size + step * B + np.arange(n_fresh)  # indices no render set holds
        mine_pick = [i for j, i in enumerate(pick) if lo <= j < hi]
        mine_fresh = [i for j, i in enumerate(fresh, start=len(pick)) if lo <= j < hi]
        parts = []
        if mine_pick:
            parts.append({k: v[mine_pick].float().to(self.device) for k, v in self.set.items()})
        if mine_fresh:
            parts.append(teacher_batch(self.teacher, self.cfg.seed, np.asarray(mine_fresh), self.cfg.pose))
        return {k: torch.cat([p[k].to(self.device) for p in parts]) for k in ("w", "c", "feature_image", "image")}


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(student: StudentGenerator, held_out: Batch, chunk: int = 8) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of the student against the teacher, high and low resolution."""
    vals: dict[str, list[torch.Tensor]] = {"psnr_hr": [], "ssim_hr": [], "psnr_lr": [], "ssim_lr": []}
    for i in range(0, len(held_out["w"]), chunk):
        out = student(held_out["w"][i:i + chunk], held_out["c"][i:i + chunk])
        t_img, t_raw = held_out["image"][i:i + chunk], held_out["feature_image"][i:i + chunk, :3]
        vals["psnr_hr"].append(psnr(out.image, t_img))
        vals["ssim_hr"].append(ssim(out.image.clamp(-1, 1), t_img.clamp(-1, 1)))
        vals["psnr_lr"].append(psnr(out.image_raw, t_raw))
        vals["ssim_lr"].append(ssim(out.image_raw.clamp(-1, 1), t_raw.clamp(-1, 1)))
    return {k: float(torch.cat(v).clamp(max=PSNR_CAP_DB).mean()) for k, v in vals.items()}  # as mean_psnr caps


@torch.no_grad()
def comparison_grid(student: StudentGenerator, held_out: Batch, n: int = 4) -> np.ndarray:
    """uint8 captioned grid of the first n held-out samples: rows of teacher | student | difference (the one
    scale of nerfgan.captions.difference, stated in the footer), one row label per sample."""
    from nerfgan.captions import caption_grid, difference, difference_note

    out = student(held_out["w"][:n], held_out["c"][:n]).image.clamp(-1, 1).cpu().numpy()
    teacher = held_out["image"][:n].clamp(-1, 1).cpu().numpy()
    t, s, d = to_uint8(teacher), to_uint8(out), difference(out, teacher)
    centre = held_out["c"][:n, [3, 7, 11]].double().cpu().numpy()  # camera centres (cam2world's last column)
    yaw = np.degrees(np.arctan2(centre[:, 0], centre[:, 2]))  # camera.pose: x = r sin(yaw), z = r cos(yaw) ...
    pitch = 90 * centre[:, 1] / np.linalg.norm(centre, axis=1)  # ... and height y = r * pitch / 90
    rows = [f"held-out {i}\nyaw {round(yaw[i]):d} pitch {round(pitch[i]):d}" for i in range(len(t))]
    return caption_grid([[t[i], s[i], d[i]] for i in range(len(t))], columns=["teacher", "student", "difference"],
                        rows=rows, footer=difference_note("student", "teacher"))


# ------------------------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------------------------
def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_grads(params: list[torch.nn.Parameter], world: int) -> None:
    """Average gradients over processes (for the discriminator, whose R1 double backward DDP cannot reduce)."""
    if world == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


class Trainer:
    """Owns the models, optimizers and run directory; ``run(steps=..., minutes=...)`` trains.

    The run folder's lock is held from construction until ``close()``, which ``run()`` calls when it ends (a
    later ``run()`` takes the lock again); also a context manager.
    """

    def __init__(self, cfg: TrainConfig, teacher: EG3D, run_dir: str | os.PathLike[str], renders: str | None = None,
                 resume: bool = False, device: str | torch.device = "cpu", progress: bool = True,
                 resume_hint: str = "run the same command with --resume to continue",
                 real: RealImages | None = None) -> None:
        self.cfg, self.teacher, self.progress = cfg, teacher.eval().requires_grad_(False), progress
        self.run_dir = Path(run_dir)
        self.resume_hint = resume_hint  # the end of the line printed when a signal stops the run
        self.device = torch.device(device)
        self.rank, self.world = _dist_info()
        if cfg.batch_size % self.world:
            raise UsageError(f"--batch-size {cfg.batch_size} is not divisible by the {self.world} processes")
        self._lock = contextlib.ExitStack()
        self._holds_lock = False
        self._signal = 0  # set by the signal handler during run(), read between steps
        self._last_row: dict[str, Any] | None = None  # the last metrics row written (one row per step)
        self.real: RealImages | None = None  # stage 2's real images (cfg.real), opened and checked up front
        self.n_real = 0  # real images among the D's real samples of a step (global batch)
        try:
            self.real = self._open_real(real)
            self._open_run_dir(resume)
            self._say(f"building the {cfg.preset} student" + (f", loading the render set {renders}" if renders else "")
                      + " ...")
            self._build(renders)
            self.teacher_sha256 = weights_digest(self.teacher)  # recorded in every student file and train state
            self._setup_run_dir(resume)
            self.held_out: Batch = self._held_out() if self.rank == 0 else {}
        except BaseException:
            self.close()
            raise

    def _say(self, message: str) -> None:
        """One line on stderr before long silent work (rank 0, progress on), clear of any progress bar."""
        if self.progress and self.rank == 0:
            from tqdm import tqdm  # type: ignore[import-untyped]

            tqdm.write(message, file=sys.stderr)

    def _open_real(self, real: RealImages | None) -> RealImages | None:
        """cfg.real opened (or ``real``, when given, checked to be it) and checked against the student's resolution and
        the batch, before the run folder is touched."""
        cfg = self.cfg
        if cfg.real is None:
            if real is not None:
                raise UsageError(f"real images {real.path} given, but the training config has no real data set")
            return None
        if real is None:
            real = RealImages(cfg.real)
        if (len(real), real.digest) != (cfg.real_count, cfg.real_digest):
            raise UsageError(f"--real {real.path}: not the data set the training config records ({cfg.real_count} "
                             f"images, digest {str(cfg.real_digest)[:16]}...; this one has {len(real)}, "
                             f"{real.digest[:16]}...); build the config with RealImages.config_fields")
        self.n_real = real.check(cfg.student_config(self.teacher.config).img_resolution, cfg.real_fraction,
                                 cfg.batch_size)
        return real

    def _build(self, renders: str | None) -> None:
        cfg, teacher = self.cfg, self.teacher
        torch.manual_seed(cfg.seed)
        scfg = cfg.student_config(teacher.config)
        self.G = StudentGenerator.from_teacher(scfg, teacher).to(self.device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        R, H = scfg.resolution, scfg.img_resolution
        self.D = Discriminator(img_resolution=H, raw_resolution=R, c_dim=25, channel_base=cfg.d_channel_base,
                                   channel_max=cfg.d_channel_max).to(self.device).train()
        trainable = {id(p) for p in self.G.trainable_parameters()}
        sr = [p for n, p in self.G.named_parameters() if n.startswith("superresolution.") and id(p) in trainable]
        rest = [p for n, p in self.G.named_parameters() if not n.startswith("superresolution.") and id(p) in trainable]
        groups: list[dict[str, Any]] = [{"params": rest}, {"params": sr, "lr": cfg.lr * cfg.sr_lr_ratio}]
        self.opt_g = torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr, betas=cfg.d_betas)
        self.G_train: torch.nn.Module = self.G
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G_train = DDP(self.G, device_ids=ids, **_no_forward_buffer_sync(DDP))
        self.data = DataSource(cfg, teacher, renders, self.device)
        self.step = 0
        self.train_seconds = 0.0
        self.evaluated_marks: list[float] = []
        self.real_images = 0  # real images the discriminator has seen (global count)

    # --- run directory ------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.run_dir / "train_state.safetensors"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def _open_run_dir(self, resume: bool) -> None:
        """Before any long work: the folder may be a run folder, the run can start, and this process holds it."""
        if resume and not self.state_path.is_file():
            raise UsageError(f"--resume: {self.state_path} does not exist (nothing to resume)")
        if self.rank != 0:
            return
        claim_run_dir(self.run_dir)
        refuse_links(self.run_dir)
        check_writable_dir(self.run_dir, "run folder")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"--out {self.run_dir}: cannot make the run folder ({e.strerror or e})") from None
        self._acquire()  # a run in progress here is reported as such, whatever it has written so far
        claim_run_dir(self.run_dir)  # again, now that no other run can be changing it
        if not resume:
            self._check_fresh()
        mark_dir(self.run_dir, RUN_KIND)

    def _check_fresh(self) -> None:
        if self.state_path.exists():
            raise UsageError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose another "
                             "--out")
        student = self.run_dir / "student.safetensors"
        if student.exists():  # its train state was removed: a finished student, which a new run would replace
            raise UsageError(f"{self.run_dir} holds a student from an earlier run ({student.name}, no train state to "
                             "resume); move it away or choose another --out")

    def _acquire(self) -> None:
        if self.rank == 0 and not self._holds_lock:
            self._lock.enter_context(folder_lock(self.run_dir, what="run folder", wait=False))
            self._holds_lock = True

    def close(self) -> None:
        """Release the run folder's lock (another process may then train into it) and the real data set's file."""
        if self.real is not None:
            self.real.close()  # reopened when read again
        self._lock.close()
        self._holds_lock = False

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup_run_dir(self, resume: bool) -> None:
        cfg_path = self.run_dir / "config.json"
        meta = {"train": json.loads(self.cfg.to_json()), "student": json.loads(self.G.config.to_json())}
        if resume:
            try:
                saved = json.loads(cfg_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise UsageError(f"--resume: {cfg_path} is missing or unreadable ({e})") from None
            if isinstance(saved, dict) and isinstance(saved.get("train"), dict):  # a run from before LATER_FIELDS
                defaults = json.loads(TrainConfig().to_json())
                saved["train"] = {**{k: defaults[k] for k in LATER_FIELDS}, **saved["train"]}
            if saved != meta:
                diff = sorted(k for k in saved.get("train", {}) if saved["train"][k] != meta["train"].get(k))
                raise UsageError(f"--resume: {cfg_path} was written with other settings ({', '.join(diff) or 'student'})")
            _, state_meta = read_safetensors(self.state_path, "training state", with_tensors=False)
            try:
                recorded = json.loads(state_meta.get("info", "{}")).get(TEACHER_KEY)
            except (ValueError, AttributeError):
                raise CheckpointError(f"{self.state_path}: training state info is not valid JSON") from None
            if recorded is not None and recorded != self.teacher_sha256:
                raise UsageError(f"--resume: {self.run_dir} was trained from another teacher (teacher weights sha256 "
                                 f"{recorded[:16]}..., the given teacher's is {self.teacher_sha256[:16]}...); "
                                 "give the same --teacher")
            info = load_train_state(self.state_path, {"G": self.G, "G_ema": self.G_ema, "D": self.D},
                                    {"opt_g": self.opt_g, "opt_d": self.opt_d})
            try:
                self.step, self.train_seconds = int(info["step"]), float(info["train_seconds"])
                self.evaluated_marks = [float(m) for m in info.get("evaluated_marks", [])]
                self.real_images = int(info.get("real_images", 0))
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointError(f"{self.state_path}: malformed training state info ({e})") from None
        if self.rank != 0:
            return
        if resume:
            self._truncate_metrics()
        else:  # what an earlier run left without a checkpoint belongs to no run that can continue
            remove_outputs(self.run_dir, ("metrics.jsonl", "replicas.json"))
        with atomic_path(cfg_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))

    def _truncate_metrics(self) -> None:
        """Keep the rows of steps up to the checkpoint's (those after it are logged again as the run repeats them)."""
        if not self.metrics_path.exists():
            return
        rows = read_rows(self.metrics_path)
        keep = [r for r in rows if r["step"] <= self.step]
        text = "".join(json.dumps(r) + "\n" for r in keep)
        if text != self.metrics_path.read_text(encoding="utf-8"):
            with atomic_path(self.metrics_path) as tmp:
                tmp.write_text(text, encoding="utf-8")
        self._last_row = keep[-1] if keep else None

    def _held_out_settings(self) -> str:
        scfg = self.G.config
        return json.dumps({"seed": self.cfg.seed + EVAL_SEED_OFFSET, "n": self.cfg.n_eval,
                           "pose": asdict(self.cfg.pose), TEACHER_KEY: self.teacher_sha256,
                           "teacher_config": json.loads(self.teacher.config.to_json()),
                           "resolution": scfg.resolution, "img_resolution": scfg.img_resolution}, sort_keys=True)

    def _held_out(self) -> Batch:
        """Fixed held-out (z, pose) samples rendered by the teacher once, cached in the run dir with their settings."""
        path = self.run_dir / "held_out.safetensors"
        settings = self._held_out_settings()
        if path.is_file() and not path.is_symlink():
            try:
                tensors, meta = read_safetensors(path, "held-out set")
            except CheckpointError:
                tensors, meta = {}, {}
            if meta.get("format") == HELD_OUT_FORMAT and meta.get("settings") == settings:
                return {k: v.to(self.device) for k, v in tensors.items()}
        idx = np.arange(self.cfg.n_eval)
        self._say(f"rendering {self.cfg.n_eval} held-out samples with the teacher (cached in {path.name}) ...")
        batch = teacher_batch(self.teacher, self.cfg.seed + EVAL_SEED_OFFSET, idx, self.cfg.pose)
        write_safetensors(path, batch, {"format": HELD_OUT_FORMAT, "settings": settings})
        return batch

    def checkpoint(self) -> None:
        if self.rank != 0:
            return
        refuse_links(self.run_dir)
        info = {"step": self.step, "train_seconds": self.train_seconds, "evaluated_marks": self.evaluated_marks,
                TEACHER_KEY: self.teacher_sha256}
        if self.cfg.real is not None:
            info["real_images"] = self.real_images
        save_train_state(self.state_path, {"G": self.G, "G_ema": self.G_ema, "D": self.D},
                         {"opt_g": self.opt_g, "opt_d": self.opt_d}, info)
        save_student(self.G_ema, self.run_dir / "student.safetensors",
                     extra={"step": str(self.step), TEACHER_KEY: self.teacher_sha256})

    def _append_row(self, row: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl, never through a symbolic link."""
        path = self.metrics_path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o666)
        except OSError as e:
            if e.errno == errno.ELOOP:
                refuse_links(self.run_dir)
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutputError(f"{path}: not a regular file; nerfgan writes metrics only to a plain file")
            f.write(json.dumps(row) + "\n")

    def log_eval(self) -> dict[str, Any]:
        """Evaluate the EMA student on the held-out set (rank 0 only; other ranks return {}).

        At most one row per step: a step already logged (by this run, or before the checkpoint it resumed from)
        returns that row again.
        """
        if self.rank != 0:
            return {}
        if self._last_row is not None and self._last_row["step"] == self.step:
            return self._last_row
        metrics = evaluate(self.G_ema, self.held_out)
        row = {"step": self.step, "train_minutes": self.train_seconds / 60, "images": self.step * self.cfg.batch_size,
               **metrics}
        if self.cfg.real is not None:
            row["real_images"] = self.real_images  # real images the discriminator has seen so far
        self._append_row(row)
        self._last_row = row
        refuse_links(self.run_dir)
        save_png(self.run_dir / EVAL_DIR / f"step-{self.step:07d}.png", comparison_grid(self.G_ema, self.held_out))
        return row

    # --- one step -----------------------------------------------------------------------------------
    def _ema_update(self) -> None:
        cfg = self.cfg
        half = min(cfg.ema_halflife_images, (self.step + 1) * cfg.batch_size * cfg.ema_rampup) if cfg.ema_rampup else cfg.ema_halflife_images
        beta = 0.5 ** (cfg.batch_size / max(half, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.lerp_(p, 1 - beta)
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)

    def d_real_samples(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """The discriminator's real samples of this step on this process -> (image (b, 3, H, W), raw (b, 3, R, R),
        camera (b, 25), real images in the global batch).

        Without real images: the teacher's renders. With them, the global batch's last n_real positions are data set
        images picked by (seed, step), their raw the antialiased downsampling to R, their camera their label; this
        process holds positions [lo, hi) of the global batch as it does for the teacher's samples.
        """
        img, raw, c = batch["image"], batch["feature_image"][:, :3], batch["c"]
        if self.real is None:
            return img, raw, c, 0
        B = self.cfg.batch_size
        lo, hi = self.rank * B // self.world, (self.rank + 1) * B // self.world
        first_real = B - self.n_real
        n_teacher = min(max(first_real - lo, 0), hi - lo)  # this process's teacher positions come first
        picks = self.real.pick(self.cfg.seed, self.step, self.n_real)[max(lo, first_real) - first_real:hi - first_real]
        r_img, r_c = self.real.load(picks, self.device)
        r_raw = downsample(r_img, raw.shape[-1])
        return (torch.cat([img[:n_teacher], r_img]), torch.cat([raw[:n_teacher], r_raw]),
                torch.cat([c[:n_teacher], r_c]), self.n_real)

    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        torch.manual_seed(cfg.seed * 1_000_003 + self.step)  # any torch randomness is a function of the step
        batch = self.data.batch(self.step, self.rank, self.world)
        adversarial = self.step >= cfg.stage1_steps and cfg.adv_weight > 0
        logs: dict[str, float] = {}

        # generator
        self.D.requires_grad_(False)
        out = self.G_train(batch["w"], batch["c"])
        loss, terms = reconstruction_loss(out.feature_image, batch["feature_image"], out.image, batch["image"], cfg.recon)
        logs.update({k: float(v.detach()) for k, v in terms.items()})
        if adversarial:
            g_adv = g_nonsaturating(self.D(out.image, out.image_raw, batch["c"]))
            loss = loss + cfg.adv_weight * g_adv
            logs["g_adv"] = float(g_adv.detach())
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self._ema_update()
        logs["loss_g"] = float(loss.detach())

        # discriminator
        if adversarial:
            self.D.requires_grad_(True)
            d_step = self.step - cfg.stage1_steps
            real_img, real_raw, real_c, n_real = self.d_real_samples(batch)
            real_img, real_raw = real_img.detach().requires_grad_(True), real_raw.detach().requires_grad_(True)
            real_logits = self.D(real_img, real_raw, real_c)
            fake_logits = self.D(out.image.detach(), out.image_raw.detach(), batch["c"])
            loss_d = d_logistic(real_logits, fake_logits)
            if cfg.r1_gamma > 0 and d_step % cfg.r1_interval == 0:
                r1 = r1_penalty(real_logits, [real_img, real_raw]).mean()
                loss_d = loss_d + (cfg.r1_gamma / 2) * r1 * cfg.r1_interval
                logs["r1"] = float(r1.detach())
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            _all_reduce_grads(list(self.D.parameters()), self.world)
            self.opt_d.step()
            logs["loss_d"] = float(loss_d.detach())
            if self.real is not None:
                self.real_images += n_real
                logs["real_images"] = n_real
        self.step += 1
        return logs

    # --- loop ---------------------------------------------------------------------------------------
    def _stop_state(self, steps: int | None, minutes: float | None) -> tuple[bool, int]:
        """(the run is done, the signal that asks it to stop or 0), the same on every process."""
        done = ((steps is not None and self.step >= steps)
                or (minutes is not None and self.train_seconds >= minutes * 60))
        signum = self._signal
        if self.world > 1:  # rank 0's clock decides when the run is done; a signal to any process stops all
            flag = torch.tensor([int(done) if self.rank == 0 else 0, signum], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            done, signum = bool(flag[0].item()), int(flag[1].item())
        return done, signum

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """SIGINT / SIGTERM set a flag the loop reads between steps (the handler writes nothing); a second SIGINT
        raises KeyboardInterrupt at once. Only the main thread can install handlers; the previous ones come back."""
        self._signal = 0
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            if self._signal and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._signal = self._signal or signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)

    def _due_marks(self) -> list[float]:
        done = set(self.evaluated_marks)
        return [m for m in self.cfg.eval_minutes if m not in done and self.train_seconds >= m * 60]

    def run(self, steps: int | None = None, minutes: float | None = None) -> list[dict[str, Any]]:
        """Train until ``steps`` total steps or ``minutes`` of training time; returns the evaluation rows.

        SIGINT / SIGTERM stop it after the current step with a checkpoint and raise TrainingInterrupted. The run
        folder's lock is released when it returns or raises.
        """
        if steps is None and minutes is None:
            raise UsageError("give --steps or --minutes")
        from nerfgan.malloc import keep_freed_memory

        try:
            self._acquire()
            with self._stop_on_signals(), keep_freed_memory():
                return self._run(steps, minutes)
        finally:
            self.close()

    def _progress_bar(self, steps: int | None, minutes: float | None) -> Any:
        """The training bar on stderr: steps of --steps, or (--minutes alone) seconds of training time; both with
        their total and an ETA."""
        from tqdm import tqdm  # type: ignore[import-untyped]

        common: dict[str, Any] = dict(disable=not self.progress or self.rank != 0, dynamic_ncols=True, desc="train",
                                      file=sys.stderr)
        if steps is not None:
            return tqdm(total=steps, initial=min(self.step, steps), unit="step", **common)
        total = float(minutes or 0.0) * 60
        return tqdm(total=total, initial=min(self.train_seconds, total), unit="s", **common,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of training "
                               "[{elapsed}<{remaining}{postfix}]")

    def _run(self, steps: int | None, minutes: float | None) -> list[dict[str, Any]]:
        rows = []
        if self.step == 0 and self.rank == 0 and (self.cfg.eval_every or 0.0 in self.cfg.eval_minutes):
            self._say(f"evaluating the untrained student on {self.cfg.n_eval} held-out samples ...")
            rows.append(self.log_eval())
            if 0.0 in self.cfg.eval_minutes and 0.0 not in self.evaluated_marks:
                self.evaluated_marks.append(0.0)
        bar = self._progress_bar(steps, minutes)
        psnr_text = f"{rows[-1]['psnr_hr']:.2f}dB" if rows else None
        try:
            while True:
                done, signum = self._stop_state(steps, minutes)
                if done or signum:
                    break
                t0 = time.perf_counter()
                logs = self.train_step()
                dt = time.perf_counter() - t0
                self.train_seconds += dt
                if self.world > 1:
                    dist.barrier()
                marks = self._due_marks()
                if marks or (self.cfg.eval_every and self.step % self.cfg.eval_every == 0):
                    row = self.log_eval()
                    self.evaluated_marks.extend(marks)
                    if row:
                        rows.append(row)
                        psnr_text = f"{row['psnr_hr']:.2f}dB"
                        if self.progress:
                            bar.write(eval_summary(row), file=sys.stderr)
                postfix: dict[str, Any] = {} if steps is not None else {"step": self.step}
                postfix.update(loss=f"{logs['loss_g']:.3f}", img_s=f"{self.cfg.batch_size / dt:.1f}",
                               stage=2 if "loss_d" in logs else 1)
                if psnr_text:
                    postfix["psnr"] = psnr_text
                bar.set_postfix(postfix, refresh=False)
                bar.update(1 if steps is not None else min(self.train_seconds, bar.total) - bar.n)
                if self.step % self.cfg.ckpt_every == 0:
                    self.checkpoint()
        finally:
            bar.close()  # before anything reports an interruption: no bar redrawn under the message
        if signum and not done:
            self.checkpoint()
            name = signal.Signals(signum).name
            raise TrainingInterrupted(signum, f"interrupted by {name} at step {self.step}: checkpoint written to "
                                              f"{self.state_path} (student: {self.run_dir / 'student.safetensors'}); "
                                              f"{self.resume_hint}")
        if self.rank == 0 and (not rows or rows[-1]["step"] != self.step):
            rows.append(self.log_eval())
        self.checkpoint()
        self.check_replicas()
        return rows

    def replica_digest(self) -> str:
        """sha256 of this process's generator and discriminator weights."""
        import hashlib

        h = hashlib.sha256()
        for module in (self.G, self.D):
            for name, t in module.state_dict().items():
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def check_replicas(self) -> None:
        """Every process must hold the same weights; rank 0 writes RUN_DIR/replicas.json (a bug if they differ)."""
        digest = self.replica_digest()
        digests = [digest]
        if self.world > 1:  # as bytes in tensors (all_gather_object would pickle)
            mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8, device=self.device)
            gathered = [torch.empty_like(mine) for _ in range(self.world)]
            dist.all_gather(gathered, mine)
            digests = [bytes(g.cpu().tolist()).hex() for g in gathered]
        if self.rank == 0:
            with atomic_path(self.run_dir / "replicas.json") as tmp:
                tmp.write_text(json.dumps({"step": self.step, "world_size": self.world, "sha256": digests}, indent=1))
        if len(set(digests)) != 1:
            raise RuntimeError(f"replica weights diverged at step {self.step}: {digests}")


def eval_summary(row: dict[str, Any]) -> str:
    """One tidy line for an evaluation row of metrics.jsonl."""
    return (f"step {row['step']} ({row['train_minutes']:.1f} min, {row['images']} images): held-out PSNR "
            f"{row['psnr_hr']:.2f} dB / SSIM {row['ssim_hr']:.3f} (high-res), {row['psnr_lr']:.2f} dB / "
            f"{row['ssim_lr']:.3f} (low-res)")


def _no_forward_buffer_sync(ddp: Any) -> dict[str, Any]:
    """DDP's argument for 'do not broadcast the buffers at each forward': ``forward_sync_buffers=False`` where torch
    has it (2.13+, where ``broadcast_buffers`` is deprecated with a FutureWarning per process), else
    ``broadcast_buffers=False``. The generator's buffers are identical on every process either way (same seed,
    same teacher), so the one broadcast at construction that forward_sync_buffers keeps changes nothing."""
    import inspect

    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def init_distributed(device: str) -> str:
    """Under torchrun (RANK/WORLD_SIZE set): join the process group (NCCL on CUDA, gloo on CPU); returns the device."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "cuda":
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return f"cuda:{local}"
    dist.init_process_group("gloo")
    return device


def iter_metrics(run_dir: str | os.PathLike[str]) -> Iterator[dict[str, float]]:
    path = Path(run_dir) / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)

