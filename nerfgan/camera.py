"""The 25-value camera vector and the pose conventions: the only module that knows them.

Layout of a camera vector ``c`` (shape ``(..., 25)``, float32)::

    c[..., 0:16]   cam2world, 4x4, row-major
    c[..., 16:25]  intrinsics, 3x3, row-major, normalised by image size

cam2world maps camera coordinates to world coordinates; its columns are the camera's
x axis (image right), y axis (image DOWN), z axis (viewing direction) and centre, all in
world space, and its last row is ``[0, 0, 0, 1]``. The camera frame is OpenCV-like
(+x right, +y down, +z forward). The world has +y up; the subject faces +z, so the frontal
camera sits on the +z axis looking toward -z and world +x is the subject's LEFT side
(it appears on the right of a frontal image).

Intrinsics are ``[[f, 0, cx], [0, f, cy], [0, 0, 1]]`` with ``f = focal_px / image_width``
and ``cx = cy = 0.5``; the same values serve every render resolution.

Two angle conventions appear here:

* :func:`look_at` takes upstream EG3D's ABSOLUTE angles in radians (``pi/2, pi/2`` is the
  frontal view), exactly as ``LookAtPoseSampler.sample`` with zero standard deviation.
* :func:`pose`, :func:`parse_pose` and :func:`check_pose` take user-facing OFFSETS in degrees
  from the frontal view (``0, 0`` faces the subject). Positive yaw moves the camera toward
  world +x, the subject's left side (the face turns toward the left of the image);
  positive pitch moves the camera UP (world +y), looking down on the subject.

This module depends on numpy only: the runtime imports it without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nerfgan.errors import PoseError, UsageError

__all__ = [
    "CAMERA_DIM",
    "DEFAULT_FOCAL",
    "DEFAULT_PIVOT",
    "DEFAULT_RADIUS",
    "check_pose",
    "focal_to_fov",
    "fov_to_focal",
    "frontal",
    "intrinsics",
    "look_at",
    "orbit",
    "pack",
    "parse_pose",
    "pose",
    "unpack",
]

CAMERA_DIM = 25
"""Length of a camera vector: 16 cam2world values + 9 intrinsics values."""

DEFAULT_FOCAL = 4.2647
"""FFHQ/AFHQ normalised focal length (focal in pixels / image width)."""

DEFAULT_RADIUS = 2.7
"""FFHQ/AFHQ camera distance from the world origin (world units)."""

DEFAULT_PIVOT = (0.0, 0.0, 0.2)
"""FFHQ/AFHQ look-at point (world units)."""

# Upstream FOV_to_intrinsics uses these truncated constants; reproduce them exactly.
_PI_TRUNCATED = 3.14159
_SQRT2_TRUNCATED = 1.414

# Upstream clamps the absolute pitch away from the poles by this margin (radians).
_PITCH_EPS = 1e-5

# User-facing range limits (degrees).
_MAX_ABS_YAW_DEG = 180.0
_MAX_ABS_PITCH_DEG = 90.0  # exclusive: the camera may not reach a pole


def pack(cam2world: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Build camera vectors from poses and intrinsics.

    Args:
        cam2world: ``(..., 4, 4)`` camera-to-world matrices (world units).
        intrinsics: ``(..., 3, 3)`` normalised intrinsics; leading dims broadcast against
            those of ``cam2world`` (one ``(3, 3)`` matrix serves a whole batch).

    Returns:
        ``(..., 25)`` float32 camera vectors.

    Raises:
        PoseError: naming ``cam2world`` or ``intrinsics`` when a shape is wrong.
    """
    m = np.asarray(cam2world, dtype=np.float32)
    k = np.asarray(intrinsics, dtype=np.float32)
    if m.ndim < 2 or m.shape[-2:] != (4, 4):
        raise PoseError(f"cam2world must have shape (..., 4, 4), got {m.shape}")
    if k.ndim < 2 or k.shape[-2:] != (3, 3):
        raise PoseError(f"intrinsics must have shape (..., 3, 3), got {k.shape}")
    try:
        lead = np.broadcast_shapes(m.shape[:-2], k.shape[:-2])
    except ValueError:
        raise PoseError(
            f"cam2world {m.shape} and intrinsics {k.shape} have incompatible batch shapes"
        ) from None
    m = np.broadcast_to(m, lead + (4, 4)).reshape(lead + (16,))
    k = np.broadcast_to(k, lead + (3, 3)).reshape(lead + (9,))
    return np.concatenate([m, k], axis=-1)


def unpack(c: np.ndarray, name: str = "c") -> tuple[np.ndarray, np.ndarray]:
    """Split camera vectors into poses and intrinsics.

    Args:
        c: ``(..., 25)`` camera vectors.
        name: what to call ``c`` in error messages (a tensor or option name).

    Returns:
        ``(cam2world, intrinsics)``: float32 arrays of shape ``(..., 4, 4)`` and ``(..., 3, 3)``.

    Raises:
        PoseError: naming ``name`` when the last dim is not 25 or a value is not finite.
    """
    c = np.asarray(c, dtype=np.float32)
    if c.ndim < 1 or c.shape[-1] != CAMERA_DIM:
        raise PoseError(f"{name} must have shape (..., {CAMERA_DIM}), got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise PoseError(f"{name} contains non-finite values")
    lead = c.shape[:-1]
    return c[..., :16].reshape(lead + (4, 4)), c[..., 16:].reshape(lead + (3, 3))


def intrinsics(
    focal: float = DEFAULT_FOCAL, principal: Sequence[float] = (0.5, 0.5)
) -> np.ndarray:
    """Normalised pinhole intrinsics.

    Args:
        focal: focal length in pixels divided by the image width (square pixels, no skew).
        principal: principal point ``(cx, cy)`` as fractions of the image width and height.

    Returns:
        ``(3, 3)`` float32 matrix ``[[focal, 0, cx], [0, focal, cy], [0, 0, 1]]``.
    """
    cx, cy = principal
    return np.array(
        [[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]], dtype=np.float32
    )


def fov_to_focal(fov_deg: float) -> float:
    """Normalised focal length from upstream's diagonal field of view in degrees.

    Reproduces upstream ``FOV_to_intrinsics`` exactly, truncated constants included:
    ``focal = 1 / (tan(fov_deg * 3.14159 / 360) * 1.414)``. 18.837 gives 4.26339 (not 4.2647).
    """
    return 1.0 / (math.tan(fov_deg * _PI_TRUNCATED / 360.0) * _SQRT2_TRUNCATED)


def focal_to_fov(focal: float) -> float:
    """Inverse of :func:`fov_to_focal`: diagonal field of view in degrees for a normalised focal."""
    return math.atan(1.0 / (focal * _SQRT2_TRUNCATED)) * 360.0 / _PI_TRUNCATED


def _normalize(v: np.ndarray) -> np.ndarray:
    # As torch.nn.functional.normalize: divide by max(norm, 1e-12).
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def look_at(
    yaw: float | np.ndarray,
    pitch: float | np.ndarray,
    radius: float | np.ndarray = DEFAULT_RADIUS,
    lookat: Sequence[float] | np.ndarray = DEFAULT_PIVOT,
) -> np.ndarray:
    """Camera-to-world matrices of cameras on a sphere that look at a point.

    Upstream ``LookAtPoseSampler.sample`` with zero standard deviations (argument order
    differs: radius comes before lookat here). The angles are rounded to float32 first, as
    upstream holds them in float32 tensors; the rest is computed in float64.

    Args:
        yaw: ``(...)`` ABSOLUTE horizontal angle in radians; ``pi/2`` is frontal and larger
            values move the camera toward world +x.
        pitch: ``(...)`` ABSOLUTE vertical angle in radians; ``pi/2`` is level, smaller
            values move the camera UP (world +y). Clamped to ``[1e-5, pi - 1e-5]``. The camera
            height is linear in pitch: ``y = radius * (1 - 2 * pitch / pi)``.
        radius: ``(...)`` distance of the camera from the WORLD ORIGIN (not from ``lookat``).
        lookat: ``(..., 3)`` world point the camera looks at.

    Returns:
        ``(..., 4, 4)`` float32 cam2world, leading dims the broadcast of all the inputs'.
        Columns: right, down (OpenCV y), forward, camera centre.
    """
    theta = np.asarray(yaw, dtype=np.float32).astype(np.float64)
    p = np.asarray(pitch, dtype=np.float32).astype(np.float64)
    r = np.asarray(radius, dtype=np.float32).astype(np.float64)
    target = np.asarray(lookat, dtype=np.float32).astype(np.float64)
    if target.ndim < 1 or target.shape[-1] != 3:
        raise PoseError(f"lookat must have shape (..., 3), got {target.shape}")
    lead = np.broadcast_shapes(theta.shape, p.shape, r.shape, target.shape[:-1])

    v = np.clip(p, _PITCH_EPS, math.pi - _PITCH_EPS) / math.pi
    phi = np.arccos(1.0 - 2.0 * v)
    origin = np.stack(
        np.broadcast_arrays(
            r * np.sin(phi) * np.cos(math.pi - theta),
            r * np.cos(phi),
            r * np.sin(phi) * np.sin(math.pi - theta),
        ),
        axis=-1,
    )
    origin = np.broadcast_to(origin, lead + (3,))
    target = np.broadcast_to(target, lead + (3,))

    forward = _normalize(target - origin)
    up_world = np.broadcast_to(np.array([0.0, 1.0, 0.0]), forward.shape)
    right = -_normalize(np.cross(up_world, forward))
    down = _normalize(np.cross(forward, right))

    m = np.zeros(lead + (4, 4), dtype=np.float64)
    m[..., :3, 0] = right
    m[..., :3, 1] = down
    m[..., :3, 2] = forward
    m[..., :3, 3] = origin
    m[..., 3, 3] = 1.0
    return m.astype(np.float32)


def check_pose(
    yaw_deg: float | np.ndarray,
    pitch_deg: float | np.ndarray,
    radius: float | np.ndarray | None = None,
    name: str = "pose",
) -> None:
    """Check user-facing pose offsets; shared by the CLI and the runtime.

    Args:
        yaw_deg: ``(...)`` yaw offset from frontal in degrees; finite, ``|yaw| <= 180``.
        pitch_deg: ``(...)`` pitch offset from frontal in degrees; finite, ``|pitch| < 90``.
        radius: ``(...)`` camera distance (world units), finite and ``> 0``; ``None`` skips it.
        name: the option or tensor to name in the error message.

    Raises:
        PoseError: naming ``name`` and the offending value.
    """
    yaw = np.asarray(yaw_deg, dtype=np.float64)
    pitch = np.asarray(pitch_deg, dtype=np.float64)
    if not np.all(np.isfinite(yaw)):
        raise PoseError(f"{name}: yaw must be finite, got {yaw_deg!r}")
    if not np.all(np.isfinite(pitch)):
        raise PoseError(f"{name}: pitch must be finite, got {pitch_deg!r}")
    if np.any(np.abs(yaw) > _MAX_ABS_YAW_DEG):
        raise PoseError(
            f"{name}: yaw must be within [-180, 180] degrees, got {yaw_deg!r}"
        )
    if np.any(np.abs(pitch) >= _MAX_ABS_PITCH_DEG):
        raise PoseError(
            f"{name}: pitch must be strictly between -90 and 90 degrees, got {pitch_deg!r}"
        )
    if radius is not None:
        r = np.asarray(radius, dtype=np.float64)
        if not np.all(np.isfinite(r)) or np.any(r <= 0):
            raise PoseError(f"{name}: radius must be finite and > 0, got {radius!r}")


def parse_pose(text: str, name: str = "--pose") -> tuple[float, float, float | None]:
    """Parse ``"YAW,PITCH[,RADIUS]"`` (degrees, degrees, world units), e.g. ``"30,-10,2.7"``.

    Returns:
        ``(yaw_deg, pitch_deg, radius)``; ``radius`` is ``None`` when not given.

    Raises:
        PoseError: naming ``name`` (the option, ``--pose`` by default) and the bad text when
            the text is malformed or a value fails :func:`check_pose`.
    """
    parts = [s.strip() for s in str(text).split(",")]
    if len(parts) not in (2, 3):
        raise PoseError(
            f"{name}: expected YAW,PITCH[,RADIUS] in degrees (e.g. 30,-10 or 30,-10,2.7), "
            f"got {text!r}"
        )
    try:
        values = [float(s) for s in parts]
    except ValueError:
        raise PoseError(
            f"{name}: expected numbers YAW,PITCH[,RADIUS], got {text!r}"
        ) from None
    yaw, pitch = values[0], values[1]
    radius = values[2] if len(values) == 3 else None
    try:
        check_pose(yaw, pitch, radius, name=name)
    except PoseError as e:
        raise PoseError(f"{e} (in {text!r})") from None
    return yaw, pitch, radius


def pose(
    yaw_deg: float | np.ndarray = 0.0,
    pitch_deg: float | np.ndarray = 0.0,
    radius: float | np.ndarray = DEFAULT_RADIUS,
    pivot: Sequence[float] | np.ndarray = DEFAULT_PIVOT,
    focal: float = DEFAULT_FOCAL,
) -> np.ndarray:
    """Camera vectors for user-facing pose offsets from the frontal view.

    Args:
        yaw_deg: ``(...)`` degrees; ``0`` is frontal, positive moves the camera toward world
            +x, the subject's LEFT side (the face turns toward the left of the image).
        pitch_deg: ``(...)`` degrees; ``0`` is level, positive moves the camera UP (world +y)
            so it looks down on the subject. The camera height is linear in pitch:
            ``y = radius * pitch_deg / 90``.
        radius: ``(...)`` camera distance from the world origin (world units).
        pivot: ``(..., 3)`` world point the camera looks at.
        focal: normalised focal length (see :func:`intrinsics`).

    Returns:
        ``(..., 25)`` float32 camera vectors (``(25,)`` for scalar inputs).

    Raises:
        PoseError: when a value fails :func:`check_pose`.
    """
    check_pose(yaw_deg, pitch_deg, radius)
    yaw = math.pi / 2 + np.radians(np.asarray(yaw_deg, dtype=np.float64))
    pitch = math.pi / 2 - np.radians(np.asarray(pitch_deg, dtype=np.float64))
    return pack(look_at(yaw, pitch, radius, pivot), intrinsics(focal))


def frontal(
    radius: float = DEFAULT_RADIUS,
    pivot: Sequence[float] = DEFAULT_PIVOT,
    focal: float = DEFAULT_FOCAL,
) -> np.ndarray:
    """The conditioning camera upstream uses: ``look_at(pi/2, pi/2, radius, pivot)``.

    Returns:
        ``(25,)`` float32 camera vector.
    """
    return pack(look_at(math.pi / 2, math.pi / 2, radius, pivot), intrinsics(focal))


def orbit(
    n: int,
    yaw_range_deg: float = 20.0,
    pitch_range_deg: float = 14.0,
    pitch_offset_deg: float = 3.0,
) -> np.ndarray:
    """Pose offsets for one closed orbit, for videos (in the spirit of EG3D's gen_videos).

    Frame ``k`` of ``n`` at ``t = k / n``: ``yaw = yaw_range_deg * sin(2 pi t)``,
    ``pitch = pitch_offset_deg + pitch_range_deg * cos(2 pi t)``; the camera traces an
    ellipse around the frontal view, slightly above it by default.

    Returns:
        ``(n, 2)`` float32 array of ``(yaw_deg, pitch_deg)``, ready for :func:`pose`.

    Raises:
        UsageError: when ``n`` is not a positive integer.
        PoseError: when the ranges put a frame outside :func:`check_pose`'s limits.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UsageError(f"orbit: number of frames must be a positive integer, got {n!r}")
    t = np.arange(n, dtype=np.float64) / n
    yaw = yaw_range_deg * np.sin(2 * math.pi * t)
    pitch = pitch_offset_deg + pitch_range_deg * np.cos(2 * math.pi * t)
    check_pose(yaw, pitch, name="orbit")
    return np.stack([yaw, pitch], axis=-1).astype(np.float32)
