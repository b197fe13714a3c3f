"""Style mixing through the student and its teacher (the paper's figure 8: the student kept the teacher's style space).

    images = mix_student(student, w_a, w_b, c, mix_from=4)       # (3, 3, H, W): A, mixed, B
    images = mix_teacher(teacher, z_a, z_b, c, c_cond, mix_from=4, psi=0.7)

Follow the codes (one object pair, B = 1):

    w_a, w_b (1, w_dim)  the teacher's style codes of seeds A and B (EG3D's mapping, truncated)
      student: PoseMapping(w, c) -> codes (1, num_ws, w_dim), one per synthesis layer (all equal for one w)
               mixed = codes_a[:, :k] ++ codes_b[:, k:]  -> synthesis -> feature image -> super-resolution(w_b)
      teacher: ws (1, num_ws_t, w_dim) of the backbone; the same mix at layer k_t = teacher_layer(k) -> tri-planes
               -> rendering -> super-resolution (EG3D feeds it the last code: B's)

So the coarse layers (layout, shape, pose-dependent structure) come from A and the fine ones (colour, pattern)
from B, in both networks. ``teacher_layer`` maps the student's layer k to the teacher's at the same fraction of
the synthesis depth (the two networks have different numbers of layers); ``mix_layers`` lists both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from nerfgan.errors import UsageError

if TYPE_CHECKING:
    from nerfgan.student.generator import StudentGenerator
    from nerfgan.teacher.generator import EG3D


def check_mix_from(k: int, num_ws: int) -> None:
    if not 1 <= k < num_ws:
        raise UsageError(f"--mix-from: the student has synthesis layers 0..{num_ws - 1}; give a layer in "
                         f"1..{num_ws - 1} (layers before it come from A, it and after from B), got {k}")


def teacher_layer(k: int, num_ws_student: int, num_ws_teacher: int) -> int:
    """The teacher's layer at the same fraction of its synthesis as the student's layer ``k`` (in 1..num_ws_t-1)."""
    return int(min(max(round(k / num_ws_student * num_ws_teacher), 1), num_ws_teacher - 1))


def _mix(codes_a: torch.Tensor, codes_b: torch.Tensor, k: int) -> torch.Tensor:
    """(B, L, D) codes -> A's layers [0, k) and B's layers [k, L)."""
    return torch.cat([codes_a[:, :k], codes_b[:, k:]], dim=1)


@torch.no_grad()
def mix_student(student: "StudentGenerator", w_a: torch.Tensor, w_b: torch.Tensor, c: torch.Tensor,
                mix_from: int) -> torch.Tensor:
    """w_a, w_b (1, w_dim), render camera c (1, 25) -> images (3, 3, H, W) in [-1, 1]: A, mixed, B."""
    syn = student.synthesis
    check_mix_from(mix_from, int(syn.num_ws))
    codes_a, codes_b = student.mapping(w_a, c), student.mapping(w_b, c)
    out = []
    for codes, w_sr in ((codes_a, w_a), (_mix(codes_a, codes_b, mix_from), w_b), (codes_b, w_b)):
        feature = syn(codes, noise_mode="const")
        image, _ = student.superresolution(feature[:, :3], feature, w_sr.unsqueeze(1))
        out.append(image)
    return torch.cat(out)


@torch.no_grad()
def mix_teacher(teacher: "EG3D", z_a: torch.Tensor, z_b: torch.Tensor, c: torch.Tensor,
                c_cond: torch.Tensor, k: int, psi: float) -> torch.Tensor:
    """z_a, z_b (1, z_dim), cameras (1, 25), teacher layer k -> images (3, 3, H, W) in [-1, 1]: A, mixed, B."""
    ws_a = teacher.mapping(z_a, c_cond, truncation_psi=psi)
    ws_b = teacher.mapping(z_b, c_cond, truncation_psi=psi)
    return torch.cat([teacher.synthesis(ws, c).image for ws in (ws_a, _mix(ws_a, ws_b, k), ws_b)])


def mix_layers(num_ws_student: int, num_ws_teacher: int, k: int) -> dict[str, int]:
    """The layers each network switches from A to B at (for captions and --dry-run)."""
    return {"student_layer": k, "student_layers": num_ws_student,
            "teacher_layer": teacher_layer(k, num_ws_student, num_ws_teacher), "teacher_layers": num_ws_teacher}


def mix_grid(student_path: str, seeds: tuple[int, int], mix_from: int | None, yaw: float, pitch: float, psi: float,
             teacher_path: str | None = None) -> tuple[np.ndarray, int]:
    """A captioned uint8 grid (a student row: A, mixed, B; with a teacher, the teacher's row below it) and the
    student layer it mixed from (``mix_from``, or half of the layers when None)."""
    from nerfgan import camera
    from nerfgan.captions import caption_grid
    from nerfgan.io import to_uint8
    from nerfgan.sampling import z_from_seed
    from nerfgan.student.checkpoint import load_student
    from nerfgan.student.invert import _map_frontal, camera_for

    student = load_student(student_path).eval()
    n_s = int(student.synthesis.num_ws)
    mix_from = n_s // 2 if mix_from is None else mix_from
    z = [torch.from_numpy(z_from_seed(s, student.config.teacher.z_dim)) for s in seeds]
    c = torch.from_numpy(camera_for(student, yaw, pitch))
    w_a, w_b = (_map_frontal(student, zz, psi) for zz in z)
    rows = [list(to_uint8(mix_student(student, w_a, w_b, c, mix_from).numpy()))]
    labels = ["student"]
    note = f"student: layers 0-{mix_from - 1} of {n_s} from seed {seeds[0]}, {mix_from}-{n_s - 1} from seed {seeds[1]}"
    if teacher_path is not None:
        from nerfgan.student.checkpoint import read_student_metadata
        from nerfgan.teacher.checkpoint import load_teacher, weights_digest
        from nerfgan.teacher.identity import TEACHER_KEY, check_same_teacher

        teacher = load_teacher(teacher_path).eval()
        meta = read_student_metadata(student_path)
        check_same_teacher(teacher=teacher_path, teacher_config_json=teacher.config.to_json(),
                           teacher_digest=weights_digest(teacher), engine=student_path,
                           engine_config_json=meta.get("config"), engine_teacher_digest=meta.get(TEACHER_KEY))
        r = teacher.config.rendering
        c_cond = torch.from_numpy(camera.frontal(r.avg_camera_radius, r.avg_camera_pivot)[None])
        n_t = int(teacher.num_ws)
        k_t = teacher_layer(mix_from, n_s, n_t)
        img = mix_teacher(teacher, z[0], z[1], c, c_cond, k_t, psi)
        if img.shape[-1] != rows[0][0].shape[0]:
            raise UsageError(f"--teacher {teacher_path}: renders {img.shape[-1]} px, the student {rows[0][0].shape[0]}")
        rows.append(list(to_uint8(img.numpy())))
        labels.append("teacher")
        note += f"; teacher: layers 0-{k_t - 1} of {n_t} from seed {seeds[0]}, {k_t}-{n_t - 1} from seed {seeds[1]}"
    cols = [f"seed {seeds[0]}", f"mixed: coarse {seeds[0]}, fine {seeds[1]}", f"seed {seeds[1]}"]
    footer = f"style mixing at yaw {yaw:g}, pitch {pitch:g}, truncation {psi:g}; {note}"
    return caption_grid(rows, columns=cols, rows=labels, footer=footer), mix_from
