"""Rendering single views from a teacher: a seed and a pose in, images out."""

from __future__ import annotations

import numpy as np
import torch

from nerfgan import camera
from nerfgan.sampling import z_from_seed
from nerfgan.teacher.generator import EG3D, TeacherOutput


def cameras_for(
    model: EG3D, yaw: float, pitch: float, radius: float | None = None, fov: float | None = None,
    pivot: tuple[float, float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(render camera, conditioning camera), each (25,), for a pose in degrees from the frontal view.

    Radius and pivot default to the teacher's rendering config; the focal length is 4.2647 unless
    a diagonal field of view ``fov`` (degrees) is given. The conditioning camera is the frontal one
    with the same intrinsics, as upstream's gen_samples.py does.
    """
    r = model.config.rendering
    radius = r.avg_camera_radius if radius is None else radius
    pivot = r.avg_camera_pivot if pivot is None else pivot
    focal = camera.DEFAULT_FOCAL if fov is None else camera.fov_to_focal(fov)
    c = camera.pose(yaw, pitch, radius=radius, pivot=pivot, focal=focal)
    c_cond = camera.pose(0.0, 0.0, radius=r.avg_camera_radius, pivot=pivot, focal=focal)
    return c, c_cond


@torch.no_grad()
def render_view(
    model: EG3D, seed: int, yaw: float = 0.0, pitch: float = 0.0, radius: float | None = None,
    fov: float | None = None, truncation: float = 0.7, render_mode: str = "deterministic",
) -> TeacherOutput:
    """One deterministic view of the object for ``seed`` (batch of 1)."""
    device = next(model.parameters()).device
    c, c_cond = cameras_for(model, yaw, pitch, radius, fov)
    z = torch.from_numpy(z_from_seed(seed, model.config.z_dim)).to(device)
    ws = model.mapping(z, torch.from_numpy(c_cond[None]).to(device), truncation_psi=truncation)
    return model.synthesis(ws, torch.from_numpy(c[None]).to(device), render_mode=render_mode)
