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
    image. The super-resolution copies the teacher's (variant and weights).
    """

    teacher: TeacherConfig  # the teacher this student imitates (dims, R, super-resolution, cameras)
    channel_base: int = 2048  # synthesis widths, see above
    channel_max: int = 128
    mapping_layers: int = 4  # depth of the pose-conditioned mapping MLP
    mapping_lr_multiplier: float = 0.01  # StyleGAN2's equalised-lr multiplier for the mapping MLP
    pose_input: bool = True  # False: the mapping sees w only (the no-pose ablation)
    conv_clamp: float | None = 256.0  # clamp synthesis activations (keeps FP16 export in range)

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
        try:
            d: dict[str, Any] = json.loads(text)
            teacher_json = json.dumps(d.pop("teacher"))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise ConfigError(f"{source}: student config JSON is malformed ({type(e).__name__}: {e})") from None
        teacher = TeacherConfig.from_json(teacher_json, source=source)
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
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"channel_base": 2048, "channel_max": 128, "mapping_layers": 4},
    "ffhq512": {"channel_base": 32768, "channel_max": 512, "mapping_layers": 4},
}


def student_preset(name: str, teacher: TeacherConfig) -> StudentConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown student preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return StudentConfig(teacher=teacher, **PRESETS[name])
