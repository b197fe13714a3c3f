"""The student's configuration: a frozen dataclass saved beside every student file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from nerfgan.errors import ConfigError
from nerfgan.teacher import limits
from nerfgan.teacher.config import TeacherConfig
from nerfgan.teacher.limits import check_int


@dataclass(frozen=True)
class StudentConfig:
    """A pose-conditioned convolutional generator distilled from one EG3D teacher.

    Widths: the synthesis network has min(channel_base // r, channel_max) channels at resolution r,
    from 4x4 up to the teacher's neural rendering resolution R, and outputs the 32-channel feature
    image. The super-resolution has the teacher's variant (structure, resolutions); with ``sr_channels``
    None it is the teacher's super-resolution (its widths; the trainer copies its weights), with
    ``sr_channels`` (c0, c1) its two blocks are narrower (c0 and c1 output channels) and the trainer
    starts them from a slice of the teacher's weights (see StudentGenerator.from_teacher).
    """

    teacher: TeacherConfig  # the teacher this student imitates (dims, R, super-resolution, cameras)
    channel_base: int = 2048  # synthesis widths, see above
    channel_max: int = 128
    mapping_layers: int = 4  # depth of the pose-conditioned mapping MLP
    mapping_lr_multiplier: float = 0.01  # StyleGAN2's equalised-lr multiplier for the mapping MLP
    pose_input: bool = True  # False: the mapping sees w only (the no-pose ablation)
    conv_clamp: float | None = 256.0  # clamp synthesis activations (keeps FP16 export in range)
    sr_channels: tuple[int, int] | None = None  # output widths of the SR's two blocks; None: the teacher's

    @property
    def sr_copied(self) -> bool:
        """True when the super-resolution is the teacher's own (same widths, weights copied at the start)."""
        return self.sr_channels is None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str = "student config") -> None:
        """Raise ConfigError naming ``source`` and the field for a value outside nerfgan.teacher.limits (the
        teacher's own config was validated when it was made); nothing here allocates."""
        R = self.teacher.neural_rendering_resolution
        if R & (R - 1) or R < 8:
            raise ConfigError(f"{source}: the teacher's neural rendering resolution must be a power of two >= 8, got {R}")
        check_int(self.channel_base, "channel_base", 4, limits.MAX_CHANNEL_BASE, source, "MAX_CHANNEL_BASE")
        check_int(self.channel_max, "channel_max", 1, limits.MAX_CHANNELS, source, "MAX_CHANNELS")
        check_int(self.mapping_layers, "mapping_layers", 1, limits.MAX_MAPPING_LAYERS, source, "MAX_MAPPING_LAYERS")
        if self.sr_channels is not None:
            if not isinstance(self.sr_channels, tuple) or len(self.sr_channels) != 2:
                raise ConfigError(f"{source}: sr_channels must be null or two channel counts, got {self.sr_channels!r}")
            for i, c in enumerate(self.sr_channels):
                check_int(c, f"sr_channels[{i}]", 1, limits.MAX_CHANNELS, source, "MAX_CHANNELS")

    @property
    def resolution(self) -> int:
        """R: side of the feature image the synthesis network produces."""
        return self.teacher.neural_rendering_resolution

    @property
    def img_resolution(self) -> int:
        return self.teacher.img_resolution

    def to_json(self) -> str:
        d = asdict(self)
        d["teacher"] = json.loads(self.teacher.to_json())
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "student config") -> "StudentConfig":
        from nerfgan.jsonfile import loads
        from nerfgan.teacher.config import CONFIG_MAX_VALUES

        parsed = loads(text, source, "student config", CONFIG_MAX_VALUES, error=ConfigError)
        try:
            d: dict[str, Any] = parsed  # (not an object: AttributeError below)
            teacher_json = json.dumps(d.pop("teacher"))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise ConfigError(f"{source}: student config JSON is malformed ({type(e).__name__}: {e})") from None
        teacher = TeacherConfig.from_json(teacher_json, source=source)
        if isinstance(d.get("sr_channels"), list):  # JSON has no tuples; absent (older files): the teacher's SR
            d["sr_channels"] = tuple(d["sr_channels"])
        try:
            return cls(teacher=teacher, **d)  # __post_init__ checks the limits before anything is built
        except TypeError as e:
            raise ConfigError(f"{source}: student config JSON is malformed ({e})") from None
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def replace(self, **changes: Any) -> "StudentConfig":
        return replace(self, **changes)


# Presets: synthesis widths per teacher scale. 'tiny' runs on a CPU in minutes; 'ffhq512' is a
# full-size student for EG3D's 512 px models (a StyleGAN2 synthesis to 128x128 with channel_base 32768, ~45 GMAC per image).
# The '-fast' presets (beyond the paper) narrow the super-resolution, which is 3/4 of the default
# student's FLOPs at 512 px, and the synthesis; see benchmarks/presets.py for FLOPs and speed.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"channel_base": 2048, "channel_max": 128, "mapping_layers": 4},
    "ffhq512": {"channel_base": 32768, "channel_max": 512, "mapping_layers": 4},
    # half the synthesis widths and 3/8 of the super-resolution's (2X: 128, 64 -> 48, 24; 8XDC: 256, 128 -> 96,
    # 48): at 512 px 5.8x fewer FLOPs, ~3.5x the CPU speed (halving the SR too gave 3.9x FLOPs but only
    # 2.8-3.0x the speed); see benchmarks/presets.py.
    "tiny-fast": {"channel_base": 1024, "channel_max": 64, "mapping_layers": 4, "sr_channels": (48, 24)},
    "ffhq512-fast": {"channel_base": 16384, "channel_max": 256, "mapping_layers": 4, "sr_channels": (96, 48)},
}


def student_preset(name: str, teacher: TeacherConfig) -> StudentConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown student preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return StudentConfig(teacher=teacher, **PRESETS[name])
