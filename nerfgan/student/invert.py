"""Inversion: find the style code w that makes a generator reproduce a photo seen from a known camera.

    from nerfgan.student.invert import InversionSettings, invert, load_photo, render_code
    student = load_student("qs/run/student.safetensors")
    photo, note = load_photo("photo.png", student.config.img_resolution)     # (1, 3, H, W) float32 in [-1, 1]
    c = camera_for(student, yaw=0, pitch=0)                                   # (1, 25)
    result = invert(student, photo, c, InversionSettings(steps=100))          # about 1 min on 2 CPU cores
    result.w                                                                  # (1, w_dim) float32
    nerfgan.runtime.load("qs/run/student.safetensors").render(w=result.w, yaw=30)   # any engine

What is optimised: the teacher's style code w (1, w_dim), the input of StudentGenerator.forward(w, c), of
every exported student and of nerfgan.runtime's Generator.render(w=...). It starts at the mean code w_avg of
the teacher's mapping, or at the w of a seed (``start_seed``, truncation ``truncation``, frontal conditioning
camera, as everywhere in nerfgan). It moves in units of the mapping's per-channel standard deviation
(:func:`code_scale`: w = start + scale * v, v optimised from 0), so a channel the mapping never varies stays
where it starts; Adam's first steps move every free coordinate by about lr, which in raw w would push the
built-in teacher's 496 unused channels off anything the student was trained on.

With ``per_layer`` ("w+"), per-layer offsets (1, num_ws, w_dim), zero at the start (also in units of
code_scale), are optimised too and added to the synthesis network's codes after the student's pose mapping
(for the teacher: to its ws); w still feeds the pose mapping and the super-resolution. Those offsets exist
only in PyTorch: an exported student takes w alone, so a per-layer result renders through :func:`render_code`
only (w alone, without its offsets, is a different and usually worse reconstruction).

The same parametrisation inverts the teacher (nerfgan.teacher's EG3D: ws = w broadcast to every layer), for
comparisons.

The loss: the student trainer's final-image terms, L1 + (1 - SSIM) with the weights of
``ReconstructionWeights`` (``highres_l1`` = ``highres_ssim`` = 1 by default; nerfgan.student.losses). The
trainer's feature-image terms compare with the teacher's feature image, which a photo does not have.

Optimiser: Adam (betas 0.9, 0.999) at ``lr``, the last ``rampdown`` fraction of the steps ramped down to 0
along a half cosine (as StyleGAN2's projector ends).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from nerfgan import camera
from nerfgan.errors import ConfigError, InputFileError
from nerfgan.student.generator import StudentGenerator
from nerfgan.student.losses import ReconstructionWeights, l1, psnr, ssim_loss
from nerfgan.teacher.generator import EG3D

MAX_PHOTO_PIXELS = 4096 * 4096
"""A photo larger than this is refused before it is decoded."""


@dataclass(frozen=True)
class InversionSettings:
    """How :func:`invert` optimises. Defaults: 100 steps of Adam at lr 0.2 from w_avg, w only."""

    steps: int = 100  # optimisation steps
    lr: float = 0.2  # Adam learning rate, in units of code_scale (the per-channel std of w)
    per_layer: bool = False  # also optimise per-layer offsets (w+); PyTorch only
    start_seed: int | None = None  # None: start at w_avg; else at this seed's w
    truncation: float = 0.7  # truncation psi of the seed's w (unused when start_seed is None)
    rampdown: float = 0.25  # fraction of the steps over which lr ramps down to 0
    l1_weight: float = ReconstructionWeights().highres_l1  # L1 on the final image
    ssim_weight: float = ReconstructionWeights().highres_ssim  # 1 - SSIM on the final image

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ConfigError(f"inversion steps must be an integer >= 0, got {self.steps!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"inversion lr must be finite and > 0, got {self.lr!r}")
        if not 0.0 <= self.truncation <= 1.0:
            raise ConfigError(f"inversion truncation must be in [0, 1], got {self.truncation!r}")
        if not 0.0 <= self.rampdown <= 1.0:
            raise ConfigError(f"inversion rampdown must be in [0, 1], got {self.rampdown!r}")
        for name in ("l1_weight", "ssim_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"inversion {name} must be finite and >= 0, got {v!r}")
        if self.l1_weight == 0 and self.ssim_weight == 0:
            raise ConfigError("inversion: l1_weight and ssim_weight are both 0, nothing to optimise")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class InversionResult:
    w: np.ndarray  # (1, w_dim) float32: the optimised style code
    offsets: np.ndarray | None  # (1, num_ws, w_dim) float32 per-layer offsets (per_layer only), else None
    loss_history: tuple[float, ...]  # (steps + 1,): the loss before each step, then after the last one
    psnr_history: tuple[float, ...]  # (steps + 1,): PSNR (dB) of the render against the photo, same points
    seconds: float  # wall time of the optimisation (the last evaluation included)


Model = StudentGenerator | EG3D


def _rendering(model: Model):  # type: ignore[no-untyped-def]
    return model.config.teacher.rendering if isinstance(model, StudentGenerator) else model.config.rendering


def _mapping(model: Model) -> torch.nn.Module:
    if isinstance(model, StudentGenerator):
        return model.teacher_mapping.net
    return model.backbone.mapping


def num_ws(model: Model) -> int:
    """Number of per-layer codes of the synthesis network (the second dim of the per-layer offsets)."""
    return int(model.synthesis.num_ws) if isinstance(model, StudentGenerator) else int(model.num_ws)


def image_resolution(model: Model) -> int:
    return int(model.config.img_resolution)


def camera_for(model: Model, yaw: float, pitch: float, radius: float | None = None) -> np.ndarray:
    """(1, 25) float32 render camera for a pose in degrees, with the model's radius and pivot and focal 4.2647
    (what nerfgan.runtime's Generator.cameras gives for a student file)."""
    r = _rendering(model)
    c = camera.pose(yaw, pitch, radius=r.avg_camera_radius if radius is None else radius,
                    pivot=r.avg_camera_pivot, focal=camera.DEFAULT_FOCAL)
    return c.reshape(1, 25).astype(np.float32)


def _map_frontal(model: Model, z: torch.Tensor, psi: float) -> torch.Tensor:
    """w (B, w_dim) of latents z (B, z_dim) through the model's mapping, truncation ``psi``, conditioned on the frontal
    camera (as everywhere in nerfgan)."""
    r = _rendering(model)
    c_cond = torch.from_numpy(camera.frontal(r.avg_camera_radius, r.avg_camera_pivot)[None]).to(z.device)
    c_cond = c_cond.expand(len(z), 25)
    with torch.no_grad():
        if isinstance(model, StudentGenerator):
            return model.teacher_mapping(z, c_cond, psi).float()
        return model.mapping(z, c_cond, truncation_psi=psi)[:, 0].float()


def _z_dim(model: Model) -> int:
    return int(model.config.teacher.z_dim if isinstance(model, StudentGenerator) else model.config.z_dim)


def start_code(model: Model, seed: int | None = None, truncation: float = 0.7) -> torch.Tensor:
    """(1, w_dim) starting code: the mapping's w_avg, or the w of ``seed`` (frontal conditioning camera)."""
    from nerfgan.sampling import z_from_seed

    w_avg: torch.Tensor = _mapping(model).w_avg  # type: ignore[assignment]
    if seed is None:
        return w_avg.detach().clone().reshape(1, -1).float()
    return _map_frontal(model, torch.from_numpy(z_from_seed(seed, _z_dim(model))).to(w_avg.device), truncation)


def code_scale(model: Model, n: int = 1024, seed: int = 0) -> torch.Tensor:
    """(w_dim,) per-channel standard deviation of w over ``n`` latents z ~ N(0, I) (torch generator ``seed``,
    truncation 1, frontal conditioning camera): the unit in which :func:`invert` moves w. A channel the mapping
    never varies (the built-in teacher's codes use 16 of 512) has scale 0 and stays at its start."""
    w_avg: torch.Tensor = _mapping(model).w_avg  # type: ignore[assignment]
    z = torch.randn(n, _z_dim(model), generator=torch.Generator().manual_seed(seed)).to(w_avg.device)
    return _map_frontal(model, z, 1.0).std(dim=0)


def render_code(model: Model, w: torch.Tensor, c: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """The image (B, 3, H, W) of code w (B, w_dim) from cameras c (B, 25), with optional per-layer offsets
    (B or 1, num_ws, w_dim). Without offsets, for a student this is exactly ``student(w, c).image``."""
    if isinstance(model, StudentGenerator):
        if offsets is None:
            return model(w, c).image
        ws = model.mapping(w, c) + offsets
        feature_image = model.synthesis(ws, noise_mode="const")
        image, _ = model.superresolution(feature_image[:, :3], feature_image, w.unsqueeze(1))
        return image
    ws = w.unsqueeze(1).expand(-1, model.num_ws, -1)
    if offsets is not None:
        ws = ws + offsets
    return model.synthesis(ws, c, noise_mode="const").image


def invert(model: Model, image: np.ndarray | torch.Tensor, c: np.ndarray | torch.Tensor,
           settings: InversionSettings = InversionSettings()) -> InversionResult:
    """Optimise w (and per-layer offsets with ``settings.per_layer``) so that the model's image from camera c
    (1, 25) matches ``image`` (1, 3, H, W) in [-1, 1], H = W = the model's image resolution.

    The model's own weights are not changed (nor their requires_grad flags, which are restored).
    """
    params = list(model.parameters())
    device = params[0].device
    target = torch.as_tensor(np.asarray(image, np.float32) if not torch.is_tensor(image) else image,
                             dtype=torch.float32, device=device)
    cam = torch.as_tensor(np.asarray(c, np.float32) if not torch.is_tensor(c) else c,
                          dtype=torch.float32, device=device).reshape(-1, 25)
    res = image_resolution(model)
    if target.shape != (1, 3, res, res):
        raise ValueError(f"invert: image must be (1, 3, {res}, {res}), got {tuple(target.shape)}")
    if cam.shape[0] != 1:
        raise ValueError(f"invert: one camera (1, 25) expected, got {tuple(cam.shape)}")
    s = settings
    w0 = start_code(model, s.start_seed, s.truncation).to(device)
    scale = code_scale(model).to(device)
    v = torch.zeros_like(w0, requires_grad=True)  # w = w0 + scale * v
    variables = [v]
    u: torch.Tensor | None = None  # offsets = scale * u
    if s.per_layer:
        u = torch.zeros(1, num_ws(model), w0.shape[1], device=device, requires_grad=True)
        variables.append(u)
    flags = [p.requires_grad for p in params]
    was_training = model.training
    model.eval().requires_grad_(False)
    opt = torch.optim.Adam(variables, lr=s.lr, betas=(0.9, 0.999))
    losses: list[float] = []
    psnrs: list[float] = []

    def loss_of(rendered: torch.Tensor) -> torch.Tensor:
        total = rendered.new_zeros([])
        if s.l1_weight:
            total = total + s.l1_weight * l1(rendered, target)
        if s.ssim_weight:
            total = total + s.ssim_weight * ssim_loss(rendered, target)
        return total

    t0 = time.perf_counter()
    try:
        for step in range(s.steps):
            t = step / s.steps
            ramp = min(1.0, (1.0 - t) / s.rampdown) if s.rampdown > 0 else 1.0
            for g in opt.param_groups:
                g["lr"] = s.lr * 0.5 * (1.0 - math.cos(math.pi * ramp))
            w, offsets = w0 + scale * v, None if u is None else scale * u
            rendered = render_code(model, w, cam, offsets)
            loss = loss_of(rendered)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            psnrs.append(float(psnr(rendered.detach(), target)[0]))
        with torch.no_grad():
            w, offsets = w0 + scale * v, None if u is None else scale * u
            rendered = render_code(model, w, cam, offsets)
            losses.append(float(loss_of(rendered)))
            psnrs.append(float(psnr(rendered, target)[0]))
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        model.train(was_training)
    seconds = time.perf_counter() - t0
    return InversionResult(
        w=w.detach().cpu().numpy().astype(np.float32),
        offsets=None if offsets is None else offsets.detach().cpu().numpy().astype(np.float32),
        loss_history=tuple(losses), psnr_history=tuple(psnrs), seconds=seconds)


def read_photo(path: str | os.PathLike[str]) -> np.ndarray:
    """A photo file as uint8 (H, W, 3) RGB (alpha dropped, grey expanded). InputFileError naming the file when it
    is missing, not an image, not square, or over MAX_PHOTO_PIXELS."""
    from PIL import Image, UnidentifiedImageError

    from nerfgan.io import existing_file, image_rgb8

    p = existing_file(path, "photo")
    try:
        with Image.open(p) as img:
            w, h = img.size
            if w * h > MAX_PHOTO_PIXELS:
                raise InputFileError(f"{p}: photo is {w}x{h}, larger than {MAX_PHOTO_PIXELS} pixels")
            if w != h:
                raise InputFileError(f"{p}: photo is {w}x{h}; give a square crop (the generator renders square "
                                     "images; nerfgan does not crop for you)")
            rgb = image_rgb8(img, str(p))  # (16-bit grey scaled, not clipped)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputFileError(f"{p}: cannot read the photo ({type(e).__name__}: {str(e)[:120]})") from None
    return rgb


def photo_to_input(rgb: np.ndarray, resolution: int) -> tuple[np.ndarray, str | None]:
    """uint8 (S, S, 3) -> ((1, 3, resolution, resolution) float32 in [-1, 1], a note when it was resized).

    A square photo of another size is resized (Pillow's Lanczos filter) and the note says so."""
    from PIL import Image

    note = None
    if rgb.shape[0] != resolution:
        note = f"photo resized from {rgb.shape[1]}x{rgb.shape[0]} to {resolution}x{resolution} (Lanczos)"
        rgb = np.asarray(Image.fromarray(rgb).resize((resolution, resolution), Image.Resampling.LANCZOS))
    x = rgb.astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(np.moveaxis(x, -1, 0)[None]), note


def load_photo(path: str | os.PathLike[str], resolution: int) -> tuple[np.ndarray, str | None]:
    """:func:`read_photo` then :func:`photo_to_input`: ((1, 3, R, R) float32 in [-1, 1], resize note or None)."""
    return photo_to_input(read_photo(path), resolution)
