"""Limits on what a file may ask nerfgan to build or allocate, checked before anything is built or read.

A config read from a file (upstream pickle kwargs, safetensors metadata, a calibration set's or render
set's metadata) decides how large the networks and arrays are, so a 1 KB file could ask for 200 GB. Every
such value is checked here first. Each network limit is about twice the largest value of the official EG3D
generators (shared/eg3d/*.json: z_dim 512, channel_base 32768, channel_max 512, 2 mapping layers,
512 px images, R = 128, 64 + 64 samples per ray) and of nerfgan's student presets, so real checkpoints
pass with a margin. A violation is one ConfigError line naming the file, the field and the limit.
numpy-free and torch-free: the runtime may import it.
"""

from __future__ import annotations

from nerfgan.errors import ConfigError

MAX_Z_DIM = 1024
"""Latent width z_dim (official 512)."""

MAX_CHANNEL_BASE = 65536
"""channel_base of a synthesis network, whose widths are min(channel_base // r, channel_max) (official 32768)."""

MAX_CHANNELS = 1024
"""channel_max: channels of the widest synthesis layer (official 512)."""

MAX_MAPPING_LAYERS = 16
"""Depth of a mapping MLP (official EG3D 2, StyleGAN2 8, student presets 4)."""

MAX_IMAGE_RESOLUTION = 1024
"""Side of a final image in pixels, a power of two (official 512)."""

MAX_NEURAL_RENDERING_RESOLUTION = 256
"""R, rays per side of the volume-rendered feature image (official 128)."""

MAX_SAMPLES_PER_RAY = 128
"""depth_resolution (coarse) and depth_resolution_importance (fine), each (official at most 64)."""

MAX_FP16_RES = 8
"""num_fp16_res and sr_num_fp16_res: resolutions run in float16 on a GPU (official 0 and 4)."""

MAX_KWARGS_BYTES = 1 << 20
"""An upstream snapshot's init kwargs as JSON spells them out, shared references in full (official ~2 KB)."""

MATERIALISED_PER_FILE_BYTE = 2
"""Tensor bytes an upstream snapshot may materialise (storage copies + state-dict clones) per byte of the file."""

MATERIALISED_SLACK_BYTES = 16 << 20
"""... plus this constant (16 MiB), so that tiny files are not held to a budget of a few bytes."""

MAX_NPZ_MEMBER_BYTES = 16 << 30
"""Declared uncompressed size of one array of a calibration set or render-set shard (16 GiB)."""

MAX_COMPRESSION_RATIO = 32
"""Declared uncompressed / compressed size of a deflated .npz member; float data compresses < 4:1, zeros 1000:1."""

RATIO_EXEMPT_BYTES = 1 << 20
"""Members declaring at most this many uncompressed bytes are exempt from MAX_COMPRESSION_RATIO (1 MiB)."""

MAX_NPZ_META_BYTES = 1 << 20
"""The JSON ``meta`` member of a calibration set (1 MiB); nerfgan writes about 3 KB."""

MAX_INDEX_BYTES = 64 << 20
MAX_INDEX_VALUES = 1 << 20  # JSON values of a render set index (nerfgan.jsonfile), counted before it is parsed
"""A render set's index.json, refused before it is parsed (64 MiB; about 150 bytes per shard)."""


def check_int(value: object, field: str, low: int, high: int, source: str, limit: str = "") -> int:
    """``value`` if it is an int (not a bool) in [low, high], else ConfigError '{source}: {field} = ...'.

    ``limit`` names the constant that sets ``high``; it is shown in the message.
    """
    if type(value) is not int:
        raise ConfigError(f"{source}: {field} = {_short(value)} is not an integer")
    if value > high:
        name = f" ({limit})" if limit else ""
        raise ConfigError(f"{source}: {field} = {value} exceeds the limit {high}{name}")
    if value < low:
        raise ConfigError(f"{source}: {field} = {value} is below the minimum {low}")
    return value


def check_power_of_two(value: int, field: str, high: int, source: str, limit: str) -> int:
    """``value`` a power of two in [4, high], else ConfigError naming ``source``, ``field`` and ``limit``."""
    check_int(value, field, 4, high, source, limit)
    if value & (value - 1):
        raise ConfigError(f"{source}: {field} = {value} is not a power of two (at most {high}, {limit})")
    return value


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
