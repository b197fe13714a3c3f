"""The teacher's configuration: a frozen dataclass read from upstream's constructor kwargs.

Upstream EG3D is configured by ``TriPlaneGenerator(**init_kwargs)`` plus the pickled attribute
``neural_rendering_resolution``. :meth:`TeacherConfig.from_upstream` validates those kwargs and
keeps every value that affects the output; :meth:`TeacherConfig.to_upstream` gives them back,
so a converted checkpoint still describes itself in upstream's terms.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from nerfgan.errors import ConfigError
from nerfgan.teacher import limits
from nerfgan.teacher.limits import check_int, check_power_of_two

# Upstream's super-resolution class names -> our short names (an explicit table, no lookup by string).
SUPERRESOLUTION_MODULES = {
    "training.superresolution.SuperresolutionHybrid2X": "2X",
    "training.superresolution.SuperresolutionHybrid4X": "4X",
    "training.superresolution.SuperresolutionHybrid8X": "8X",
    "training.superresolution.SuperresolutionHybrid8XDC": "8XDC",
}
# (output resolution each module asserts)
SUPERRESOLUTION_OUTPUT = {"2X": 128, "4X": 256, "8X": 512, "8XDC": 512}
CONFIG_MAX_VALUES = 1 << 14  # JSON values of a config (nerfgan.jsonfile); upstream's kwargs have about a hundred



@dataclass(frozen=True)
class RenderingConfig:
    """How rays are cast and marched, and how the super-resolution is fed (upstream rendering_kwargs)."""

    image_resolution: int  # final image side in pixels
    superresolution: str  # "2X" | "4X" | "8X" | "8XDC"
    depth_resolution: int  # S coarse samples per ray
    depth_resolution_importance: int  # N importance samples per ray (0: coarse only)
    ray_start: float  # near bound, world units along the unit ray direction
    ray_end: float  # far bound
    box_warp: float  # side of the cube [-box_warp/2, box_warp/2]^3 covered by the tri-planes
    avg_camera_radius: float  # default camera distance from the world origin
    avg_camera_pivot: tuple[float, float, float]  # default look-at point
    white_back: bool = False  # composite on white (1 - accumulated opacity added to all channels)
    c_gen_conditioning_zero: bool = False  # the mapping network sees c = 0
    c_scale: float = 0.0  # conditioning scale; upstream's missing key means 0
    superresolution_noise_mode: str = "none"
    sr_antialias: bool = True
    disparity_space_sampling: bool = False
    clamp_mode: str = "softplus"
    decoder_lr_mul: float = 1.0
    density_noise: float = 0.0  # std of Gaussian noise added to densities (stochastic mode only)
    training_only: tuple[tuple[str, Any], ...] = ()  # kept verbatim, unused for rendering


@dataclass(frozen=True)
class TeacherConfig:
    """Everything needed to build an EG3D generator (network widths and rendering)."""

    rendering: RenderingConfig
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 25
    img_resolution: int = 512
    img_channels: int = 3
    channel_base: int = 32768  # backbone channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    mapping_layers: int = 2
    conv_clamp: float | None = None  # backbone clamp
    num_fp16_res: int = 0
    sr_num_fp16_res: int = 4  # > 0 means the super-resolution clamps at 256
    neural_rendering_resolution: int = 128  # R: rays per image side
    sr_kwargs: tuple[tuple[str, Any], ...] = field(default=())  # kept verbatim (ignored upstream too)
    fused_modconv_default: str = "inference_only"

    @property
    def sr_conv_clamp(self) -> float | None:
        return 256.0 if self.sr_num_fp16_res > 0 else None

    # --- upstream kwargs <-> config -------------------------------------------------------
    @classmethod
    def from_upstream(cls, init_kwargs: dict[str, Any], neural_rendering_resolution: int, source: str = "config") -> "TeacherConfig":
        """Validate upstream ``TriPlaneGenerator`` kwargs; ``source`` names the file in errors."""
        kw = dict(init_kwargs)
        try:
            rk = dict(kw.pop("rendering_kwargs"))
        except KeyError:
            raise ConfigError(f"{source}: init kwargs have no 'rendering_kwargs'") from None
        mapping_kwargs = dict(kw.pop("mapping_kwargs", {}) or {})
        sr_kwargs = kw.pop("sr_kwargs", {}) or {}
        known = {"z_dim", "w_dim", "c_dim", "img_resolution", "img_channels", "channel_base", "channel_max",
                 "conv_clamp", "num_fp16_res", "sr_num_fp16_res", "fused_modconv_default"}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise ConfigError(f"{source}: unsupported generator kwargs {unknown}")
        sr_name = rk.get("superresolution_module")
        if sr_name not in SUPERRESOLUTION_MODULES:
            raise ConfigError(
                f"{source}: superresolution_module {sr_name!r} is not one of {sorted(SUPERRESOLUTION_MODULES)}"
            )
        for key, value in (("ray_start", rk.get("ray_start")), ("ray_end", rk.get("ray_end"))):
            if not isinstance(value, (int, float)):
                raise ConfigError(f"{source}: rendering_kwargs.{key} = {value!r} is not supported (a number is required)")
        if rk.get("clamp_mode", "softplus") != "softplus":
            raise ConfigError(f"{source}: rendering_kwargs.clamp_mode {rk.get('clamp_mode')!r} is not supported")
        noise = rk.get("superresolution_noise_mode", "none")
        if noise not in ("const", "random", "none"):
            raise ConfigError(f"{source}: superresolution_noise_mode {noise!r} is not const, random or none")
        handled = {"image_resolution", "superresolution_module", "depth_resolution", "depth_resolution_importance",
                   "ray_start", "ray_end", "box_warp", "avg_camera_radius", "avg_camera_pivot", "white_back",
                   "c_gen_conditioning_zero", "c_scale", "superresolution_noise_mode", "sr_antialias",
                   "disparity_space_sampling", "clamp_mode", "decoder_lr_mul", "density_noise"}
        extra = tuple(sorted((k, rk[k]) for k in rk if k not in handled))
        try:
            rendering = RenderingConfig(
                image_resolution=int(rk["image_resolution"]),
                superresolution=SUPERRESOLUTION_MODULES[sr_name],
                depth_resolution=int(rk["depth_resolution"]),
                depth_resolution_importance=int(rk.get("depth_resolution_importance", 0) or 0),
                ray_start=float(rk["ray_start"]),
                ray_end=float(rk["ray_end"]),
                box_warp=float(rk["box_warp"]),
                avg_camera_radius=float(rk.get("avg_camera_radius", 2.7)),
                avg_camera_pivot=tuple(float(v) for v in rk.get("avg_camera_pivot", (0.0, 0.0, 0.2))),  # type: ignore[arg-type]
                white_back=bool(rk.get("white_back", False)),
                c_gen_conditioning_zero=bool(rk.get("c_gen_conditioning_zero", False)),
                c_scale=float(rk.get("c_scale", 0.0)),
                superresolution_noise_mode=noise,
                sr_antialias=bool(rk.get("sr_antialias", True)),
                disparity_space_sampling=bool(rk.get("disparity_space_sampling", False)),
                clamp_mode="softplus",
                decoder_lr_mul=float(rk.get("decoder_lr_mul", 1.0)),
                density_noise=float(rk.get("density_noise", 0.0) or 0.0),
                training_only=extra,
            )
            cfg = cls(
                rendering=rendering,
                z_dim=int(kw.get("z_dim", 512)),
                w_dim=int(kw.get("w_dim", 512)),
                c_dim=int(kw.get("c_dim", 25)),
                img_resolution=int(kw.get("img_resolution", rendering.image_resolution)),
                img_channels=int(kw.get("img_channels", 3)),
                channel_base=int(kw.get("channel_base", 32768)),
                channel_max=int(kw.get("channel_max", 512)),
                mapping_layers=int(mapping_kwargs.get("num_layers", 8)),
                conv_clamp=None if kw.get("conv_clamp") is None else float(kw["conv_clamp"]),
                num_fp16_res=int(kw.get("num_fp16_res", 0)),
                sr_num_fp16_res=int(kw.get("sr_num_fp16_res", 0)),
                neural_rendering_resolution=int(neural_rendering_resolution),
                sr_kwargs=tuple(sorted(dict(sr_kwargs).items())),
                fused_modconv_default=str(kw.get("fused_modconv_default", "inference_only")),
            )
        except KeyError as e:
            raise ConfigError(f"{source}: rendering_kwargs is missing {e.args[0]!r}") from None
        except (TypeError, ValueError, OverflowError) as e:
            raise ConfigError(f"{source}: invalid value in init kwargs ({e})") from None
        cfg.validate(source)
        return cfg

    def validate(self, source: str = "config") -> None:
        """Raise ConfigError naming ``source`` and the field for a value outside nerfgan.teacher.limits or
        inconsistent with upstream's modules; nothing here allocates, so it runs before any module is built."""
        r = self.rendering
        check_int(self.z_dim, "z_dim", 1, limits.MAX_Z_DIM, source, "MAX_Z_DIM")
        check_int(self.channel_base, "channel_base", 1, limits.MAX_CHANNEL_BASE, source, "MAX_CHANNEL_BASE")
        check_int(self.channel_max, "channel_max", 1, limits.MAX_CHANNELS, source, "MAX_CHANNELS")
        check_int(self.mapping_layers, "mapping_kwargs.num_layers", 1, limits.MAX_MAPPING_LAYERS, source,
                  "MAX_MAPPING_LAYERS")
        check_power_of_two(self.img_resolution, "img_resolution", limits.MAX_IMAGE_RESOLUTION, source,
                           "MAX_IMAGE_RESOLUTION")
        check_power_of_two(r.image_resolution, "rendering_kwargs.image_resolution", limits.MAX_IMAGE_RESOLUTION,
                           source, "MAX_IMAGE_RESOLUTION")
        check_int(self.neural_rendering_resolution, "neural_rendering_resolution", 4,
                  limits.MAX_NEURAL_RENDERING_RESOLUTION, source, "MAX_NEURAL_RENDERING_RESOLUTION")
        check_int(r.depth_resolution, "rendering_kwargs.depth_resolution", 2, limits.MAX_SAMPLES_PER_RAY, source,
                  "MAX_SAMPLES_PER_RAY")
        check_int(r.depth_resolution_importance, "rendering_kwargs.depth_resolution_importance", 0,
                  limits.MAX_SAMPLES_PER_RAY, source, "MAX_SAMPLES_PER_RAY")
        check_int(self.num_fp16_res, "num_fp16_res", 0, limits.MAX_FP16_RES, source, "MAX_FP16_RES")
        check_int(self.sr_num_fp16_res, "sr_num_fp16_res", 0, limits.MAX_FP16_RES, source, "MAX_FP16_RES")
        expected = SUPERRESOLUTION_OUTPUT[r.superresolution]
        if self.img_resolution != expected or r.image_resolution != expected:
            raise ConfigError(
                f"{source}: SuperresolutionHybrid{r.superresolution} produces {expected}x{expected} images, "
                f"but img_resolution={self.img_resolution}, rendering image_resolution={r.image_resolution}"
            )
        if self.img_channels != 3:
            raise ConfigError(f"{source}: img_channels must be 3, got {self.img_channels}")
        if self.w_dim != 512:
            raise ConfigError(f"{source}: w_dim must be 512 (upstream's super-resolution hard-codes it), got {self.w_dim}")
        if self.c_dim not in (0, 25):
            raise ConfigError(f"{source}: c_dim must be 25 (or 0), got {self.c_dim}")
        if r.depth_resolution_importance > 0 and r.depth_resolution < 4:
            raise ConfigError(f"{source}: importance sampling needs depth_resolution >= 4")
        if not (0 < r.ray_start < r.ray_end):
            raise ConfigError(f"{source}: need 0 < ray_start < ray_end, got {r.ray_start}..{r.ray_end}")
        if r.box_warp <= 0:
            raise ConfigError(f"{source}: box_warp must be positive, got {r.box_warp}")

    def to_upstream(self) -> dict[str, Any]:
        """Upstream ``TriPlaneGenerator`` kwargs (JSON-serialisable)."""
        r = self.rendering
        sr_module = {v: k for k, v in SUPERRESOLUTION_MODULES.items()}[r.superresolution]
        rk: dict[str, Any] = {
            "image_resolution": r.image_resolution,
            "disparity_space_sampling": r.disparity_space_sampling,
            "clamp_mode": r.clamp_mode,
            "superresolution_module": sr_module,
            "c_gen_conditioning_zero": r.c_gen_conditioning_zero,
            "c_scale": r.c_scale,
            "superresolution_noise_mode": r.superresolution_noise_mode,
            "decoder_lr_mul": r.decoder_lr_mul,
            "sr_antialias": r.sr_antialias,
            "depth_resolution": r.depth_resolution,
            "depth_resolution_importance": r.depth_resolution_importance,
            "ray_start": r.ray_start,
            "ray_end": r.ray_end,
            "box_warp": r.box_warp,
            "avg_camera_radius": r.avg_camera_radius,
            "avg_camera_pivot": list(r.avg_camera_pivot),
        }
        if r.white_back:
            rk["white_back"] = True
        if r.density_noise:
            rk["density_noise"] = r.density_noise
        rk.update(dict(r.training_only))
        return {
            "z_dim": self.z_dim, "w_dim": self.w_dim, "mapping_kwargs": {"num_layers": self.mapping_layers},
            "channel_base": self.channel_base, "channel_max": self.channel_max,
            "fused_modconv_default": self.fused_modconv_default, "rendering_kwargs": rk,
            "num_fp16_res": self.num_fp16_res, "sr_num_fp16_res": self.sr_num_fp16_res,
            "sr_kwargs": dict(self.sr_kwargs), "conv_clamp": self.conv_clamp, "c_dim": self.c_dim,
            "img_resolution": self.img_resolution, "img_channels": self.img_channels,
        }

    # --- our own JSON form (saved beside every artifact) -------------------------------------
    def to_json(self) -> str:
        return json.dumps({"upstream_init_kwargs": self.to_upstream(),
                           "neural_rendering_resolution": self.neural_rendering_resolution}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> "TeacherConfig":
        """Parse and check a config (bounded: nerfgan.jsonfile, CONFIG_MAX_VALUES); ConfigError naming ``source``."""
        from nerfgan.jsonfile import loads

        d = loads(text, source, "teacher config", CONFIG_MAX_VALUES, error=ConfigError)
        try:
            return cls.from_upstream(d["upstream_init_kwargs"], d["neural_rendering_resolution"], source=source)
        except (json.JSONDecodeError, KeyError, TypeError, RecursionError) as e:
            raise ConfigError(f"{source}: teacher config JSON is malformed ({type(e).__name__}: {e})") from None

    def replace(self, **changes: Any) -> "TeacherConfig":
        return dataclasses.replace(self, **changes)


def preset_names() -> list[str]:
    """Names of the built-in teacher configs: the four official EG3D generators and 'tiny'."""
    return sorted(_presets())


def preset(name: str) -> TeacherConfig:
    """A built-in config: 'ffhq512-128', 'ffhq512-64', 'afhqcats512-128', 'shapenetcars128-64'
    (the official models' constructor kwargs) or 'tiny' (the shared fixture's 128px generator)."""
    presets = _presets()
    if name not in presets:
        raise ConfigError(f"unknown teacher preset {name!r}; choose one of {', '.join(sorted(presets))}")
    p = presets[name]
    return TeacherConfig.from_upstream(p["init_kwargs"], p["neural_rendering_resolution"], source=f"preset {name}")


def _presets() -> dict[str, Any]:
    from importlib.resources import files

    return json.loads(files("nerfgan.teacher").joinpath("presets.json").read_text())
