"""Fit the tiny EG3D to the scene family by regression (no GAN): the built-in ``tiny`` teacher.

Three parts, in order:

1. The mapping network is SET, not trained: its two layers are written so that the first
   L = 16 channels of w are ``W0 + u`` with u the family's latent (``scenes.family.latent``) and
   the other channels 0, and ``w_avg = W0``. Then EG3D's truncation ``w_avg + psi (w - w_avg)``
   is exactly the family's truncation ``u -> psi u``, so a truncated teacher still has a ground
   truth. (The leaky ReLUs stay linear: fc0 carries +u and -u, fc1 recombines them above 0.)
2. Field phase: backbone and decoder learn density and colour at 3D points (half of them near
   the surface, half uniform in the box; binary cross-entropy on the occupancy of one 6 cm step,
   L1 on colour where the object is), and low-resolution colour, opacity and depth on random
   rays rendered by the teacher's own ray marcher. Each step draws new objects: (seed, step)
   fixes everything a step sees, so a resumed fit is the same fit.
3. Super-resolution phase: the teacher's 64 px feature images of ``sr_samples`` posed objects
   are rendered once; the super-resolution learns the exact 128 px image from them (and its
   block-0 output the exact 64 px one, which EG3D returns as ``image_raw``).

State is saved every ``checkpoint_every`` steps in ``OUT/fit_state.safetensors``; a killed fit
resumes where that left it. ``OUT/fit_log.jsonl`` records held-out occupancy IoU and 64 px PSNR
against the fitting time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from nerfgan import camera
from nerfgan.errors import ConfigError
from nerfgan.io import atomic_path
from nerfgan.scenes.family import SceneConfig, SceneFamily, projection
from nerfgan.scenes.fit_config import FitConfig
from nerfgan.scenes.render import render, render_rays
from nerfgan.teacher.config import preset
from nerfgan.teacher.generator import EG3D
from nerfgan.teacher.stylegan2 import FullyConnectedLayer
from nerfgan.teacher.triplane import PLANE_CHANNELS, sample_planes

W0 = 4.0
"""w_avg's value in the latent's channels: w stays on the linear side of the leaky ReLU for u > -W0."""

GRAD_CLIP = 5.0
"""Gradients are clipped to this global norm."""

OCC_STEP = 0.06
"""Occupancy is compared over a step of this length (world units). Shorter steps ask the decoder for
densities of hundreds from the start, which equalised-lr Adam reaches only after many steps; at 6 cm a
density of 12 already reads as occupied, and the ray losses sharpen the surface from there."""

RAY_WEIGHT = 1.0
"""Weight of the L1 colour of the 64 px rays (the image the super-resolution starts from)."""

DECODER_LR_MUL = 5.0
"""The decoder (a 32-64-33 MLP) learns this much faster than the backbone."""


# --- the mapping network, set from the family's projection ---------------------------------------
@torch.no_grad()
def set_mapping(model: EG3D, scene: SceneConfig) -> None:
    """Write the mapping so that w[:, :L] = W0 + u, w[:, L:] = 0, w_avg = (W0, ..., 0)."""
    m = model.backbone.mapping
    if m.num_layers != 2 or m.z_dim != scene.z_dim:
        raise ValueError("set_mapping needs EG3D's 2-layer mapping with z_dim = the family's")
    L = scene.latent_dim
    a = torch.from_numpy(projection(scene))  # (L, z_dim)
    gain0 = math.sqrt(2.0)  # leaky ReLU gain of bias_act
    fc0: FullyConnectedLayer = m.fc0  # type: ignore[assignment]
    fc1: FullyConnectedLayer = m.fc1  # type: ignore[assignment]
    w0 = torch.zeros(fc0.out_features, fc0.in_features)
    w0[:L, : scene.z_dim] = a
    w0[L:2 * L, : scene.z_dim] = -a
    fc0.weight.copy_(w0 / fc0.weight_gain)
    fc0.bias.zero_()
    # fc0 out: h+ = g lrelu(u), h- = g lrelu(-u); h+ - h- = g * 1.2 * u.
    w1 = torch.zeros(fc1.out_features, fc1.in_features)
    k = 1.0 / (gain0 * 1.2 * gain0)
    idx = torch.arange(L)
    w1[idx, idx] = k
    w1[idx, idx + L] = -k
    fc1.weight.copy_(w1 / fc1.weight_gain)
    b1 = torch.zeros(fc1.out_features)
    b1[:L] = W0 / gain0
    fc1.bias.copy_(b1 / fc1.bias_gain)
    w_avg = torch.zeros(m.w_dim)
    w_avg[:L] = W0
    m.w_avg.copy_(w_avg)


def styles(model: EG3D, z: torch.Tensor, psi: torch.Tensor, c_cond: torch.Tensor) -> torch.Tensor:
    """ws (B, num_ws, w_dim) with a truncation per object (EG3D's lerp toward w_avg)."""
    ws = model.mapping(z, c_cond)
    w_avg = model.backbone.mapping.w_avg
    return w_avg + psi.reshape(-1, 1, 1) * (ws - w_avg)


# --- what one step sees ----------------------------------------------------------------------------
def _draw(cfg: FitConfig, step: int, n: int, stream: int) -> tuple[np.random.Generator, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng([cfg.seed, stream, step])
    z = torch.from_numpy(rng.standard_normal((n, 512)).astype(np.float32))
    psi = rng.uniform(cfg.psi_min, 1.0, n)
    psi[rng.random(n) < 0.25] = 1.0
    return rng, z, torch.from_numpy(psi.astype(np.float32))


def _poses(rng: np.random.Generator, n: int, radius: float, pivot: tuple[float, float, float]) -> torch.Tensor:
    yaw = np.clip(rng.normal(0, 25, n), -70, 70).astype(np.float32)
    pitch = np.clip(rng.normal(0, 12, n), -35, 35).astype(np.float32)
    return torch.from_numpy(camera.pose(yaw, pitch, radius=radius, pivot=pivot).reshape(n, 25).astype(np.float32))


def _points(family: SceneFamily, params: Any, rng: np.random.Generator, n: int) -> torch.Tensor:
    """(B, n, 3): half uniform in the box, half the nearest-to-surface of 4n candidates."""
    B = params.batch
    uni = torch.from_numpy(rng.uniform(-0.5, 0.5, (B, n // 2, 3)).astype(np.float32))
    cand = torch.from_numpy(rng.uniform(-0.36, 0.36, (B, 4 * n, 3)).astype(np.float32))
    d = family.field_sdf(params, cand).abs()
    near = torch.gather(cand, 1, d.topk(n - n // 2, dim=1, largest=False).indices[..., None].expand(-1, -1, 3))
    return torch.cat([uni, near], 1)


def _teacher_field(model: EG3D, planes: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    B = planes.shape[0]
    p5 = planes.reshape(B, 3, PLANE_CHANNELS, planes.shape[-2], planes.shape[-1])
    box = model.config.rendering.box_warp

    def f(points: torch.Tensor, _dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return model.decoder(sample_planes(p5, points, box))

    return f


def _teacher_rays(field: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                  origins: torch.Tensor, dirs: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's deterministic rendering of rays (B, M, 3) -> features (B, M, C), opacity-weighted depth
    sum(w t) (B, M) and opacity (B, M). Unlike the renderer's depth, sum(w t) has no division by the opacity,
    whose gradient is NaN on rays the field does not yet touch."""
    from nerfgan.teacher.renderer import _gather_samples, coarse_depths, importance_depths, ray_march

    B, M, _ = origins.shape
    depths = coarse_depths(B, M, cfg, False, origins.device)
    colors, densities = _gather_samples(field, origins, dirs, depths)
    _, _, weights = ray_march(colors, densities, depths, cfg.white_back)
    fine = importance_depths(depths, weights, cfg.depth_resolution_importance, deterministic=True)
    colors_f, densities_f = _gather_samples(field, origins, dirs, fine)
    depths = torch.cat([depths, fine], dim=-2)
    _, order = torch.sort(depths, dim=-2)
    depths = torch.gather(depths, -2, order)
    colors = torch.gather(torch.cat([colors, colors_f], -2), -2, order.expand(-1, -1, -1, colors.shape[-1]))
    densities = torch.gather(torch.cat([densities, densities_f], -2), -2, order)
    feats, _, weights = ray_march(colors, densities, depths, cfg.white_back)
    mids = (depths[:, :, 1:] + depths[:, :, :-1]) / 2
    return feats, (weights * mids).sum(dim=(2, 3)), weights.sum(dim=(2, 3))


def occupancy(density: torch.Tensor) -> torch.Tensor:
    return 1 - torch.exp(-density * OCC_STEP)


def field_loss(model: EG3D, family: SceneFamily, cfg: FitConfig, step: int) -> tuple[torch.Tensor, dict[str, float]]:
    r = model.config.rendering
    rng, z, psi = _draw(cfg, step, cfg.batch, 0)
    B = cfg.batch
    c_cond = torch.from_numpy(np.repeat(camera.frontal(r.avg_camera_radius, r.avg_camera_pivot)[None], B, 0))
    planes = model.planes(styles(model, z, psi, c_cond))
    field = _teacher_field(model, planes)
    params = family.params(z, psi)
    with torch.no_grad():
        pts = _points(family, params, rng, cfg.points)
        _, dens_g, col_g = family.field(params, pts)
    rgb_t, sigma_t = field(pts, pts)
    occ_t = occupancy(F.softplus(sigma_t - 1)).clamp(1e-6, 1 - 1e-6)
    occ_g = occupancy(dens_g)
    l_occ = F.binary_cross_entropy(occ_t, occ_g)
    wgt = occ_g + 0.02
    l_col = ((rgb_t[..., :3] - col_g).abs() * wgt).sum() / (wgt.sum() * 3)
    # Random 64 px rays through the teacher's ray marcher.
    c = _poses(rng, B, r.avg_camera_radius, r.avg_camera_pivot)
    from nerfgan.teacher.rays import generate_rays

    origins, dirs = generate_rays(c[:, :16].reshape(B, 4, 4), c[:, 16:].reshape(B, 3, 3), 64)
    pick = torch.from_numpy(np.stack([rng.choice(64 * 64, cfg.rays, replace=False) for _ in range(B)]))
    origins = torch.gather(origins, 1, pick[..., None].expand(-1, -1, 3))
    dirs = torch.gather(dirs, 1, pick[..., None].expand(-1, -1, 3))
    with torch.no_grad():
        rgb_g, depth_g, mask_g = render_rays(family, params, origins, dirs, r.ray_start, r.ray_end)
    feats, depth_w, mask_t = _teacher_rays(field, origins, dirs, r)
    l_ray = (feats[..., :3] - (rgb_g * 2 - 1)).abs().mean()
    l_mask = (mask_t - mask_g).abs().mean()
    hit = (mask_g > 0.5).float()
    l_depth = ((depth_w - depth_g * mask_g).abs() * hit).sum() / hit.sum().clamp_min(1)
    loss = l_occ + l_col + RAY_WEIGHT * l_ray + 0.5 * l_mask + 2.0 * l_depth
    return loss, {"occ": l_occ.item(), "col": l_col.item(), "ray": l_ray.item(), "mask": l_mask.item(),
                  "depth": l_depth.item()}


@torch.no_grad()
def held_out(model: EG3D, family: SceneFamily, n: int = 4) -> dict[str, float]:
    """Occupancy IoU on 16k uniform points and 64 px image PSNR on n held-out posed objects (psi = 1)."""
    r = model.config.rendering
    cfg = FitConfig(seed=987654321, psi_min=1.0)
    rng, z, psi = _draw(cfg, 0, n, 0)
    c_cond = torch.from_numpy(np.repeat(camera.frontal(r.avg_camera_radius, r.avg_camera_pivot)[None], n, 0))
    ws = styles(model, z, psi, c_cond)
    planes = model.planes(ws)
    params = family.params(z, psi)
    pts = torch.from_numpy(rng.uniform(-0.4, 0.4, (n, 16384, 3)).astype(np.float32))
    _, sigma_t = _teacher_field(model, planes)(pts, pts)
    _, dens_g, _ = family.field(params, pts)
    a, b = occupancy(F.softplus(sigma_t - 1)) > 0.5, occupancy(dens_g) > 0.5
    iou = float((a & b).sum()) / max(float((a | b).sum()), 1.0)
    c = _poses(rng, n, r.avg_camera_radius, r.avg_camera_pivot)
    out = model.render_planes(planes, ws, c)
    gt = render(family, params, c, out.feature_image.shape[-1], r.ray_start, r.ray_end)
    mse = ((out.feature_image[:, :3].clamp(-1, 1) - gt.image) ** 2).mean(dim=(1, 2, 3))
    psnr = float((10 * torch.log10(4 / mse.clamp_min(1e-10))).mean())
    return {"iou": iou, "psnr_raw": psnr}


# --- the super-resolution phase ----------------------------------------------------------------
@torch.no_grad()
def sr_cache(model: EG3D, family: SceneFamily, cfg: FitConfig, progress: Callable[[int], None]) -> dict[str, torch.Tensor]:
    """The teacher's 64 px feature images and ws, and the exact 64 and 128 px images, for sr_samples objects."""
    r = model.config.rendering
    out: dict[str, list[torch.Tensor]] = {"feature_image": [], "ws": [], "gt_image": [], "gt_raw": []}
    for i in range(0, cfg.sr_samples, 4):
        n = min(4, cfg.sr_samples - i)
        rng, z, psi = _draw(cfg, i, n, 1)
        c_cond = torch.from_numpy(np.repeat(camera.frontal(r.avg_camera_radius, r.avg_camera_pivot)[None], n, 0))
        ws = styles(model, z, psi, c_cond)
        c = _poses(rng, n, r.avg_camera_radius, r.avg_camera_pivot)
        t = model.synthesis(ws, c)
        params = family.params(z, psi)
        out["feature_image"].append(t.feature_image)
        out["ws"].append(ws)
        out["gt_image"].append(render(family, params, c, r.image_resolution, r.ray_start, r.ray_end).image)
        out["gt_raw"].append(render(family, params, c, t.feature_image.shape[-1], r.ray_start, r.ray_end).image)
        progress(n)
    return {k: torch.cat(v) for k, v in out.items()}


def sr_loss(model: EG3D, cache: dict[str, torch.Tensor], cfg: FitConfig, step: int) -> tuple[torch.Tensor, dict[str, float]]:
    rng = np.random.default_rng([cfg.seed, 2, step])
    idx = torch.from_numpy(rng.choice(cache["ws"].shape[0], 8, replace=False))
    feat = cache["feature_image"][idx]
    image, rgb0 = model.superresolution(feat[:, :3], feat, cache["ws"][idx])
    raw = rgb0 if model.raw_quirk(feat.shape[-1]) else feat[:, :3]
    l_img = (image - cache["gt_image"][idx]).abs().mean()
    l_raw = (raw - cache["gt_raw"][idx]).abs().mean()
    return l_img + 0.5 * l_raw, {"image": l_img.item(), "raw": l_raw.item()}


def lr_factor(cfg: FitConfig, step: int) -> float:
    """The learning-rate factor at ``step`` (0-based, counted over both phases): a pure function of the
    step, so a resumed fit follows the same schedule."""
    start, n = (0, cfg.field_steps) if step < cfg.field_steps else (cfg.field_steps, cfg.sr_steps)
    frac = (step - start) / max(n, 1)
    if frac <= cfg.lr_decay_from:
        return 1.0
    t = (frac - cfg.lr_decay_from) / max(1 - cfg.lr_decay_from, 1e-9)
    return 1.0 + (cfg.lr_final - 1.0) * t


def new_teacher(cfg: FitConfig, scene: SceneConfig) -> EG3D:
    """EG3D's tiny config at the fit's backbone widths, with seeded initial weights and the mapping set from
    the family."""
    torch.manual_seed(cfg.seed)
    model = EG3D(dataclasses.replace(preset("tiny"), channel_base=cfg.channel_base, channel_max=cfg.channel_max))
    set_mapping(model, scene)
    return model


def metadata(cfg: FitConfig, scene: SceneConfig, seconds: float) -> dict[str, str]:
    return {"scene_family": scene.to_json(), "fit_config": cfg.to_json(), "fit_seconds": f"{seconds:.0f}"}


def fit(out: Path, cfg: FitConfig, scene: SceneConfig | None = None, echo: Callable[[str], None] = print) -> Path:
    """Run (or resume) a fit into ``out``; returns the path of the fitted ``teacher.safetensors``.

    ``out`` is missing, empty or an earlier fit's folder (else UsageError); one fit at a time holds it (a lock).
    """
    from nerfgan.io import check_writable_dir, claim_dir, folder_lock, mark_dir

    scene = scene or SceneConfig()
    family = SceneFamily(scene)
    claim_dir(out, "scene fit", "-o", lambda p: (p / "fit_config.json").is_file())  # (fits from before owner files)
    check_writable_dir(out, "fit folder")
    out.mkdir(parents=True, exist_ok=True)
    from nerfgan.malloc import keep_freed_memory

    with folder_lock(out, what="fit folder", wait=False), keep_freed_memory():
        mark_dir(out, "scene fit")
        return _fit(out, cfg, scene, family, echo)


def _fit(out: Path, cfg: FitConfig, scene: SceneConfig, family: SceneFamily, echo: Callable[[str], None]) -> Path:
    from tqdm import tqdm  # type: ignore[import-untyped]

    from nerfgan.student.checkpoint import load_train_state, save_train_state
    from nerfgan.teacher.checkpoint import read_safetensors, save_teacher, write_safetensors

    settings = {"fit": asdict(cfg), "scene": asdict(scene)}
    cfg_path = out / "fit_config.json"
    if cfg_path.exists() and json.loads(cfg_path.read_text()) != json.loads(json.dumps(settings)):
        raise ConfigError(f"{cfg_path}: {out} holds a fit with other settings; give a new -o or the same settings")
    with atomic_path(cfg_path) as tmp:
        tmp.write_text(json.dumps(settings, indent=1))
    model = new_teacher(cfg, scene).train()
    model.requires_grad_(True)
    model.backbone.mapping.requires_grad_(False)
    backbone_params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    sr_params = list(model.superresolution.parameters())
    groups: list[dict[str, Any]] = [{"params": backbone_params},
                                    {"params": list(model.decoder.parameters()), "lr": cfg.lr * DECODER_LR_MUL}]
    opt_field = torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.99))
    opt_sr = torch.optim.Adam(sr_params, lr=cfg.lr, betas=(0.9, 0.99))
    state_path, log_path = out / "fit_state.safetensors", out / "fit_log.jsonl"
    info: dict[str, Any] = {"step": 0, "seconds": 0.0}
    if state_path.exists():
        info = load_train_state(state_path, {"G": model}, {"opt_field": opt_field, "opt_sr": opt_sr})
        echo(f"resuming {out} at step {info['step']} ({info['seconds'] / 60:.1f} min fitted)")
    total = cfg.field_steps + cfg.sr_steps
    step, seconds = int(info["step"]), float(info["seconds"])

    def save() -> None:
        save_train_state(state_path, {"G": model}, {"opt_field": opt_field, "opt_sr": opt_sr},
                         {"step": step, "seconds": seconds})

    def log(rec: dict[str, Any]) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    cache: dict[str, torch.Tensor] | None = None
    skipped = 0
    base_lrs = {id(o): [cfg.lr * (DECODER_LR_MUL if k == 1 else 1.0) for k in range(len(o.param_groups))]
                for o in (opt_field, opt_sr)}
    bar = tqdm(total=total, initial=step, desc="fit teacher", unit="step", dynamic_ncols=True)
    while step < total:
        t0 = time.perf_counter()
        if step < cfg.field_steps:
            loss, parts = field_loss(model, family, cfg, step)
            opt = opt_field
        else:
            if cache is None:
                cache_path = out / "sr_cache.safetensors"
                if cache_path.exists():
                    cache, _ = read_safetensors(cache_path, "super-resolution cache")
                else:
                    model.eval()
                    with tqdm(total=cfg.sr_samples, desc="render SR set", unit="img", leave=False) as b2:
                        cache = sr_cache(model, family, cfg, b2.update)
                    write_safetensors(cache_path, cache)
                model.train()
            loss, parts = sr_loss(model, cache, cfg, step)
            opt = opt_sr
        for group, base in zip(opt.param_groups, base_lrs[id(opt)]):
            group["lr"] = base * lr_factor(cfg, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], GRAD_CLIP)
        if torch.isfinite(norm):  # a non-finite step (a ray with ~0 opacity, say) is skipped, not applied
            opt.step()
        else:
            skipped += 1
        step += 1
        seconds += time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()})
        if step % cfg.eval_every == 0 or step == total:
            model.eval()
            ev = held_out(model, family)
            model.train()
            log({"step": step, "minutes": round(seconds / 60, 2), "skipped": skipped, **parts, **ev})
            bar.write(f"step {step}: held-out IoU {ev['iou']:.3f}, 64 px PSNR {ev['psnr_raw']:.2f} dB")
        if step % cfg.checkpoint_every == 0 or step == total:
            save()
    bar.close()
    model.eval()
    return save_teacher(model, out / "teacher.safetensors", metadata(cfg, scene, seconds))
