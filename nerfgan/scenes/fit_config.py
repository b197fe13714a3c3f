"""The settings of ``nerfgan scene fit`` (torch-free, so the command line can show its defaults cheaply)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FitConfig:
    seed: int = 0  # fixes the initial weights and every step's objects, points and rays
    channel_base: int = 4096  # the backbone's widths: EG3D's tiny config (the upstream fixture's) with these two
    channel_max: int = 64  # ... changed, so the tri-planes have 16 / 32 / 64 channels at 256 / 128 / 64 px
    field_steps: int = 2000  # steps of the field phase
    sr_samples: int = 256  # posed objects rendered once for the super-resolution phase
    sr_steps: int = 900  # steps of the super-resolution phase
    batch: int = 4  # objects per field step (8 per super-resolution step)
    points: int = 4096  # 3D points per object and step
    rays: int = 256  # 64 px rays per object and step
    lr: float = 2e-3  # Adam, betas (0.9, 0.99)
    lr_decay_from: float = 0.5  # each phase keeps lr until this fraction of its steps, then decays it linearly
    lr_final: float = 0.05  # ... to this fraction of lr at the phase's last step
    psi_min: float = 0.3  # truncation of each object ~ U[psi_min, 1] (a quarter of them at exactly 1)
    checkpoint_every: int = 100
    eval_every: int = 250

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
