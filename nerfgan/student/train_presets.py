"""Training presets by name: imported by the CLI to list them, so nothing heavy (no torch) is imported here.

Each preset is the student preset of the same name (nerfgan.student.config) plus these TrainConfig
overrides; ``nerfgan.student.train.train_preset`` builds the config.
"""

from __future__ import annotations

from typing import Any

_FFHQ512: dict[str, Any] = {"batch_size": 16, "stage1_steps": 20000, "d_channel_base": 32768, "d_channel_max": 512,
                            "ema_halflife_images": 10000.0, "eval_every": 1000, "ckpt_every": 500, "n_eval": 64}

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "tiny-fast": {"sr_lr_ratio": 1.0},  # the -fast super-resolution is a slice of the teacher's, not a copy: full steps
    "ffhq512": _FFHQ512,
    "ffhq512-fast": {**_FFHQ512, "sr_lr_ratio": 1.0},
}
