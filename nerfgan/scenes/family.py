"""An analytic family of 3D objects: z -> a head-like body with ears, nose and eyes, as a density field.

Follow one latent (shapes for a batch of B objects):

    z (B, 512) ~ N(0, I), seeded as everywhere in nerfgan (``nerfgan.sampling``)
      -> normalised as EG3D's mapping network normalises it (RMS 1), times the truncation psi
      -> u = z_n @ A.T                     (B, L=32): a fixed orthonormal projection, u ~ N(0, I)
      -> ObjectParams                      parts (B, K=6) as ellipsoids in the body frame, colours
      -> field(points (B, N, 3))           signed distance, density (B, N, 1), colour (B, N, 3) in [0, 1]

Truncation shrinks u toward 0, the family's mean object, as EG3D's truncation shrinks w toward
its mean: ``psi = 0`` is the same object for every z.

The object lives in EG3D's world and box (``nerfgan.camera``): +y up, the face looks toward +z,
world +x is the object's LEFT. The body is an ellipsoid near the origin, tilted (roll about z,
turn about y; never about x, which the tri-planes' (x, y) / (x, z) planes represent worst),
round to tall or wide; two ears on top, small and round to large and tall, the LEFT ear always in
the pattern colour and the right one in the ear colour (so left and right can be told apart); a
nose toward +z, a button to a snout; two dark eyes, each with a white glint (a mark of about 2 px
at 128 px, 1 px at 64 px: detail the super-resolution must carry). Every colour's lightness and hue
vary with u. The body wears a pattern laid out in the world's x-y plane (the plane EG3D's tri-planes
hold directly, so the turn of the body does not mix z into it): diagonal stripes of 9.5 cm (19 px at
128 px) in any phase, blending into a grid of dots as u changes. Outside all parts the field is
empty, so the background renders black, as an EG3D field without ``white_back``.

This is version 2 of the family (``SceneConfig.version``). Version 1 (16 latents, stripes in the body frame,
less variation, no glints) is what the built-in teacher of earlier nerfgan releases was fitted to; scoring
such a teacher against this family is refused (``check_fitted_to``).

Density from the signed distance d is ``density_max * smoothstep(0.5 - d / (2 * falloff))``:
the full density inside, zero beyond ``falloff`` outside, a smooth shell of width 2 * falloff.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

GLINT_DIRECTION = torch.tensor([0.25, 0.45, 0.86])
"""Where on an eye its white glint sits: the unit direction (body frame) from the eye's centre, up and forward."""
GLINT_SIZE = 0.32
"""The glint's Gaussian radius as a fraction of the eye's."""

FAMILY_VERSION = 2
"""The family this nerfgan builds (see the module's docstring)."""

PARTS = ("body", "ear_left", "ear_right", "nose", "eye_left", "eye_right")
"""The K = 6 parts, in order; every part is an axis-aligned ellipsoid in the body frame."""
STRIPE_PERIOD = 0.095
"""The pattern's period (world units): 19 px at 128 px, 9.5 px at the 64 px rendering."""
STRIPE_ANGLE = 0.35
"""The direction across the stripes, radians from world +x toward +y (the same for every object: the
objects' patterns differ in phase, in stripes or dots, and in colours, a family a generator's modulated
convolutions draw as blends of a few fixed patterns)."""
EYES = (4, 5)
"""The parts that carry a glint."""


@dataclass(frozen=True)
class SceneConfig:
    """The family's fixed settings (saved beside every teacher fitted to it)."""

    latent_dim: int = 32  # L: how many directions of z shape an object
    projection_seed: int = 20261201  # seeds the fixed orthonormal projection A (L, z_dim)
    z_dim: int = 512  # width of z, as EG3D
    falloff: float = 0.01  # half-width of the density shell around the surface (world units)
    density_max: float = 400.0  # density inside (per world unit); 1 - exp(-4) of a ray stops in the shell
    version: int = FAMILY_VERSION  # which family object_params builds (teachers record the one they were fitted to)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SceneConfig":
        d = json.loads(text)
        d.setdefault("version", 1)  # written before the family had versions
        return cls(**d)


@dataclass
class ObjectParams:
    """B objects. Centres and radii in world units; colours in [0, 1]."""

    origin: torch.Tensor  # (B, 3) body-frame origin in the world
    rotation: torch.Tensor  # (B, 3, 3) body frame -> world (columns: body x, y, z axes in world coordinates)
    centres: torch.Tensor  # (B, K, 3) part centres in the body frame
    radii: torch.Tensor  # (B, K, 3) part semi-axes in the body frame
    colours: torch.Tensor  # (B, K, 3) part colours; the body's is its base colour
    stripe_colour: torch.Tensor  # (B, 3) the pattern's colour (and the left ear's)
    stripe_freq: torch.Tensor  # (B,) radians per world unit across the pattern
    stripe_angle: torch.Tensor  # (B,) direction of the pattern in the world's x-y plane (radians)
    stripe_phase: torch.Tensor  # (B,) phase across the stripes
    spots: torch.Tensor  # (B,) in [0, 1]: 0 stripes, 1 a grid of dots, between a blend of the two

    @property
    def batch(self) -> int:
        return int(self.origin.shape[0])


def projection(config: SceneConfig) -> np.ndarray:
    """The fixed (L, z_dim) matrix with orthonormal rows that turns a normalised z into u."""
    rng = np.random.default_rng(config.projection_seed)
    q, _ = np.linalg.qr(rng.standard_normal((config.z_dim, config.latent_dim)))
    return np.ascontiguousarray(q.T).astype(np.float32)


def latent(z: torch.Tensor, config: SceneConfig, psi: torch.Tensor | float = 1.0) -> torch.Tensor:
    """z (B, z_dim) -> u (B, L): z normalised to RMS 1 (as EG3D's mapping does), projected, times psi."""
    if z.ndim != 2 or z.shape[1] != config.z_dim:
        raise ValueError(f"z must be (B, {config.z_dim}), got {tuple(z.shape)}")
    z = z.to(torch.float32)
    zn = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    a = torch.from_numpy(projection(config)).to(z.device)
    u = zn @ a.T  # (B, L), each ~ N(0, 1)
    psi_t = torch.as_tensor(psi, dtype=torch.float32, device=z.device).reshape(-1, 1)
    return u * psi_t


def _rot_y(a: torch.Tensor) -> torch.Tensor:
    c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([torch.stack([c, o, s], -1), torch.stack([o, i, o], -1), torch.stack([-s, o, c], -1)], -2)


def _rot_z(a: torch.Tensor) -> torch.Tensor:
    c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([torch.stack([c, -s, o], -1), torch.stack([s, c, o], -1), torch.stack([o, o, i], -1)], -2)


_LIGHT = (1.0, 1.0, 1.0)
_RED_CYAN = (0.8, -0.4, -0.4)
_GREEN_MAGENTA = (-0.35, 0.7, -0.35)
_YELLOW_BLUE = (0.45, 0.25, -0.7)


def _colour(u3: torch.Tensor, base: tuple[float, float, float], light: float, chroma: float) -> torch.Tensor:
    """(B, 3) latents -> colours around ``base``: lightness from u3[:, 0], hue and saturation from u3[:, 1:]
    (two opponent axes), smooth, kept inside [0.03, 0.97]. A typical latent moves the hue far enough that two
    objects are told apart by colour alone."""
    def v(x: tuple[float, float, float]) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float32, device=u3.device)

    t = torch.tanh(0.9 * u3)
    a, b = t[:, 1:2], t[:, 2:3]
    hue = a * v(_RED_CYAN) + b * (v(_GREEN_MAGENTA) if base[1] < base[0] else v(_YELLOW_BLUE))
    return (v(base) + light * t[:, 0:1] * v(_LIGHT) + chroma * hue).clamp(0.03, 0.97)


def object_params(u: torch.Tensor) -> ObjectParams:
    """u (B, L >= 32) -> the objects' parts. Smooth in u; u = 0 is the family's mean object.

    Which latent moves what: 0-2 body size, 3 roll, 4 turn, 5-6 position, 7-10 ears (spread, size, height,
    shape), 11-13 nose (length, height, width), 14-15 eyes (spacing, size), 16-18 body colour, 19-21 pattern
    colour, 22-24 ear colour, 25-27 nose colour, 30-31 pattern (phase; stripes or dots); 28-29 are unused.
    """
    B = u.shape[0]
    t = torch.tanh(0.6 * u)  # (B, L) in (-1, 1), ~ +-0.4 at the default truncation
    dev = u.device

    def f(*v: float) -> torch.Tensor:
        return torch.tensor(v, dtype=torch.float32, device=dev).expand(B, len(v))

    # Body: an ellipsoid, tilted by roll (about z) and turn (about y); from round to tall or wide.
    body_r = f(0.165, 0.185, 0.16) * (1 + f(0.22, 0.22, 0.18) * t[:, 0:3])
    roll, turn = 0.25 * t[:, 3], 0.3 * t[:, 4]
    rotation = _rot_y(turn) @ _rot_z(roll)
    origin = f(0.0, -0.02, 0.03) + 0.025 * torch.stack([t[:, 5], t[:, 6], torch.zeros_like(t[:, 5])], -1)

    # Ears on top of the body, spread sideways: small and round to large and tall (cat-like).
    ear_spread = 0.55 + 0.15 * t[:, 7]  # fraction of the body's half-width
    ear_size = 0.055 * (1 + 0.4 * t[:, 8])
    ear_height = 0.78 + 0.1 * t[:, 9]
    ear_tall = 1.55 + 0.6 * t[:, 10]  # height / width of an ear
    ear_l = torch.stack([ear_spread * body_r[:, 0], ear_height * body_r[:, 1], -0.1 * body_r[:, 2]], -1)
    ear_r = ear_l * f(-1.0, 1.0, 1.0)
    ear_shape = torch.stack([ear_size * 0.85, ear_size * ear_tall, ear_size * 0.7], -1)
    ear_l_r, ear_r_r = ear_shape * 1.06, ear_shape * 0.96

    # Nose toward +z, below the centre: a button to a snout.
    nose_len = 0.075 * (1 + 0.45 * t[:, 11])
    nose_c = torch.stack([torch.zeros_like(nose_len), -0.15 * body_r[:, 1] + 0.035 * t[:, 12],
                          body_r[:, 2] * 0.93], -1)
    nose_r = torch.stack([0.042 * (1 + 0.4 * t[:, 13]), 0.036 * torch.ones_like(nose_len), nose_len], -1)

    # Eyes: small spheres half sunk in the front of the body.
    eye_x = 0.42 * body_r[:, 0] * (1 + 0.25 * t[:, 14])
    eye_y = 0.22 * body_r[:, 1]
    eye_z = body_r[:, 2] * torch.sqrt(1 - (eye_x / body_r[:, 0]) ** 2 - (eye_y / body_r[:, 1]) ** 2) - 0.004
    eye_l = torch.stack([eye_x, eye_y, eye_z], -1)
    eye_r = eye_l * f(-1.0, 1.0, 1.0)
    eye_size = 0.027 * (1 + 0.35 * t[:, 15])
    eye_rr = torch.stack([eye_size] * 3, -1)

    centres = torch.stack([torch.zeros_like(eye_l), ear_l, ear_r, nose_c, eye_l, eye_r], 1)
    radii = torch.stack([body_r, ear_l_r, ear_r_r, nose_r, eye_rr, eye_rr], 1)

    body_col = _colour(u[:, 16:19], (0.62, 0.52, 0.44), 0.16, 0.32)
    stripe_col = _colour(u[:, 19:22], (0.30, 0.26, 0.40), 0.14, 0.26)
    ear_col = _colour(u[:, 22:25], (0.82, 0.62, 0.56), 0.1, 0.2)
    nose_col = _colour(u[:, 25:28], (0.80, 0.28, 0.24), 0.1, 0.24)
    eye_col = _colour(u[:, 13:16].flip(-1), (0.07, 0.08, 0.11), 0.03, 0.05)
    colours = torch.stack([body_col, stripe_col, ear_col, nose_col, eye_col, eye_col], 1)

    return ObjectParams(
        origin=origin, rotation=rotation, centres=centres, radii=radii, colours=colours,
        stripe_colour=stripe_col,
        stripe_freq=torch.full((B,), 2 * math.pi / STRIPE_PERIOD, device=dev),
        stripe_angle=torch.full((B,), STRIPE_ANGLE, device=dev),
        stripe_phase=math.pi * torch.tanh(0.8 * u[:, 30]),
        spots=torch.sigmoid(2.5 * u[:, 31]),
    )


def ellipsoid_sdf(p: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Signed distance (approximate away from spheres, exact for them) of axis-aligned ellipsoids.

    p (..., 3) relative to the centre, radii (..., 3) -> (...,). Negative inside.
    """
    k0 = (p / radii).norm(dim=-1)
    k1 = (p / radii.square()).norm(dim=-1)
    return k0 * (k0 - 1) / k1.clamp_min(1e-9)


def to_body_frame(params: ObjectParams, points: torch.Tensor) -> torch.Tensor:
    """World points (B, N, 3) -> body-frame points (B, N, 3)."""
    return (points - params.origin[:, None]) @ params.rotation  # R^T (p - o), row-vector form


def part_distances(params: ObjectParams, points: torch.Tensor) -> torch.Tensor:
    """World points (B, N, 3) -> signed distance to each part (B, N, K)."""
    q = to_body_frame(params, points)[:, :, None, :]  # (B, N, 1, 3)
    return ellipsoid_sdf(q - params.centres[:, None], params.radii[:, None])


def density_from_sdf(sdf: torch.Tensor, config: SceneConfig) -> torch.Tensor:
    """Signed distance -> density: density_max inside, 0 beyond ``falloff`` outside, smoothstep between."""
    s = (0.5 - sdf / (2 * config.falloff)).clamp(0, 1)
    return config.density_max * s * s * (3 - 2 * s)


def pattern(params: ObjectParams, points: torch.Tensor) -> torch.Tensor:
    """World points (B, N, 3) -> how much of the pattern colour the body wears there (B, N) in (0, 1).

    The pattern is laid out in the world's x-y plane around the object's origin (it does not depend on z),
    a plane EG3D's tri-planes represent directly: stripes across direction ``stripe_angle``, or (``spots``
    toward 1) a grid of dots, with soft edges.
    """
    dx = points[..., 0] - params.origin[:, None, 0]
    dy = points[..., 1] - params.origin[:, None, 1]
    ang, freq = params.stripe_angle[:, None], params.stripe_freq[:, None]
    a = freq * (dx * torch.cos(ang) + dy * torch.sin(ang)) + params.stripe_phase[:, None]
    b = freq * (dy * torch.cos(ang) - dx * torch.sin(ang))
    s = params.spots[:, None]
    wave = (1 - s) * torch.sin(a) + s * (torch.cos(a) + torch.cos(b) - 1.0)
    return torch.sigmoid(4.0 * wave)


def field(params: ObjectParams, points: torch.Tensor, config: SceneConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """World points (B, N, 3) -> signed distance (B, N), density (B, N, 1), colour (B, N, 3) in [0, 1].

    The colour is a soft choice of the nearest part's colour (softmax over -distance / 2 mm), so it
    is defined everywhere and continuous; the body's colour carries the pattern (:func:`pattern`), the left
    ear the pattern colour, each eye a white glint.
    """
    q = to_body_frame(params, points)  # (B, N, 3)
    d = ellipsoid_sdf(q[:, :, None, :] - params.centres[:, None], params.radii[:, None])  # (B, N, K)
    sdf = d.min(dim=-1).values
    mix = pattern(params, points)[..., None]  # (B, N, 1)
    body = params.colours[:, None, 0] * (1 - mix) + params.stripe_colour[:, None] * mix  # (B, N, 3)
    per_part = params.colours[:, None].expand(-1, q.shape[1], -1, -1).clone()  # (B, N, K, 3)
    per_part[:, :, 0] = body
    for k in [k for k in EYES if k < d.shape[-1]]:  # a glint on each eye: ~1 px wide at 64 px, ~2 px at 128 px
        off = q - params.centres[:, None, k] - params.radii[:, None, k] * GLINT_DIRECTION.to(q.device)
        glint = torch.exp(-off.square().sum(-1) / (2 * (GLINT_SIZE * params.radii[:, None, k, 0]) ** 2))[..., None]
        per_part[:, :, k] = per_part[:, :, k] * (1 - glint) + 0.95 * glint
    w = torch.softmax(-d / 0.002, dim=-1)[..., None]  # (B, N, K, 1)
    colour = (w * per_part).sum(dim=2)
    return sdf, density_from_sdf(sdf, config)[..., None], colour


class SceneFamily:
    """The family as one object: ``params(z, psi)`` and ``field(params, points)``."""

    def __init__(self, config: SceneConfig | None = None) -> None:
        self.config = config or SceneConfig()

    def params(self, z: torch.Tensor, psi: torch.Tensor | float = 1.0) -> ObjectParams:
        """z (B, z_dim), truncation psi (scalar or (B,)) -> the objects' parameters."""
        return object_params(latent(z, self.config, psi))

    def field(self, params: ObjectParams, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return field(params, points, self.config)

    def field_sdf(self, params: ObjectParams, points: torch.Tensor) -> torch.Tensor:
        """World points (B, N, 3) -> signed distance (B, N) to the object (cheaper than :meth:`field`)."""
        return part_distances(params, points).min(dim=-1).values


def check_fitted_to(scene_json: str | None, source: str) -> None:
    """Raise ConfigError when a teacher's recorded family (its ``scene_family`` metadata) is not this one."""
    from nerfgan.errors import ConfigError

    if scene_json is None:
        return
    try:
        fitted = SceneConfig.from_json(scene_json)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: its scene_family metadata is malformed ({e})") from None
    if fitted != SceneConfig():
        raise ConfigError(f"{source}: fitted to another scene family (version {fitted.version}; this nerfgan's is "
                          f"version {FAMILY_VERSION}): its ground truth is not this family's")
