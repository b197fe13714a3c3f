"""The request bodies and query strings, checked by pydantic: unknown fields, NaN/inf, wrong types and values out
of range are refused with the field named (strict types for JSON bodies: "7" is not a seed, 7.0 neither)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nerfgan.io import ANIMATION_FPS
from nerfgan.serve.settings import FOV_RANGE, PITCH_LIMIT, RADIUS_MAX, SEED_MAX, W_DIM_MAX, YAW_LIMIT

Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Yaw = Annotated[float, Field(ge=-YAW_LIMIT, le=YAW_LIMIT)]
Pitch = Annotated[float, Field(gt=-PITCH_LIMIT, lt=PITCH_LIMIT)]
Radius = Annotated[float, Field(gt=0, le=RADIUS_MAX)]
Fov = Annotated[float, Field(ge=FOV_RANGE[0], le=FOV_RANGE[1])]
Truncation = Annotated[float, Field(ge=0.0, le=1.0)]


def _as_list(v: Any) -> Any:
    """A single pose value is a list of one (bool is left to fail as a number)."""
    return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v


class RenderRequest(BaseModel):
    """POST /v1/render: one object (seed or w) at one or several poses; yaw and pitch broadcast (1 and N, or N and N).
    The server's max_poses bounds N (checked by the app, which knows its limits)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    seed: Seed | None = None
    w: Annotated[list[float], Field(min_length=1, max_length=W_DIM_MAX)] | None = None
    yaw: Annotated[list[Yaw], Field(min_length=1, max_length=1024)] = [0.0]
    pitch: Annotated[list[Pitch], Field(min_length=1, max_length=1024)] = [0.0]
    radius: Radius | None = None
    fov: Fov | None = None
    truncation: Truncation = 0.7
    format: Literal["png", "jpeg", "npy"] = "png"

    _lists = field_validator("yaw", "pitch", mode="before")(_as_list)


class StyleRequest(BaseModel):
    """POST /v1/style: the style code w of a seed."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    seed: Seed
    truncation: Truncation = 0.7
    fov: Fov | None = None


class OrbitQuery(BaseModel):
    """GET /v1/orbit?seed=&frames=: a closed orbit around the frontal view (nerfgan.camera.orbit), as a GIF.
    Query strings are text: numbers are parsed from it (lax mode), everything else is checked as for bodies."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    seed: Seed
    frames: Annotated[int, Field(ge=1)] = 24
    truncation: Truncation = 0.7
    yaw_range: Annotated[float, Field(ge=0, le=YAW_LIMIT)] = 20.0
    pitch_range: Annotated[float, Field(ge=0, lt=PITCH_LIMIT)] = 14.0
    fps: Annotated[float, Field(ge=ANIMATION_FPS[0], le=ANIMATION_FPS[1])] = 24.0  # (a GIF's frame time is 16-bit)
