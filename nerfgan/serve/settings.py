"""What `nerfgan serve` and :func:`nerfgan.serve.create_app` are configured with: frozen, checked, JSON-printable.

Imports nothing heavier than the standard library: `nerfgan serve --help` and `--dry-run` stay fast.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

from nerfgan.errors import UsageError

SERVE_INSTALL = "pip install 'nerfgan[serve]'"

# The poses the runtime accepts (nerfgan.camera.check_pose): |yaw| <= 180, |pitch| < 90 degrees.
YAW_LIMIT = 180.0
PITCH_LIMIT = 90.0  # exclusive: the camera may not reach a pole
RADIUS_MAX = 100.0  # world units; the engines' cameras sit at about 2.7
FOV_RANGE = (1.0, 120.0)  # degrees, diagonal (nerfgan.runtime.generator)
SEED_MAX = 2**32 - 1
W_DIM_MAX = 1024  # nerfgan/teacher/limits.py: z and w have at most 1024 values


@dataclass(frozen=True)
class Limits:
    """Bounds of one server. Batches and queue count images and requests; a request is one engine job.

    max_batch: images per engine call (requests arriving within max_wait_ms are merged up to it; a single request
    with more poses runs alone). max_queue: requests waiting for the engine; one more is answered 503 with
    Retry-After. max_poses: poses in one /v1/render request. max_frames: frames of one /v1/orbit GIF.
    max_body_bytes: the largest request body (a w of 1024 floats is about 25 kB of JSON).
    """

    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 64
    max_poses: int = 64
    max_frames: int = 120
    max_body_bytes: int = 64 << 10
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        checks = (("max_batch", 1, 1024), ("max_wait_ms", 0, 1000), ("max_queue", 1, 100_000),
                  ("max_poses", 1, 1024), ("max_frames", 1, 3600), ("max_body_bytes", 1024, 16 << 20),
                  ("jpeg_quality", 1, 100))
        for name, lo, hi in checks:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise UsageError(f"--{name.replace('_', '-')}: expected a number in [{lo}, {hi}], got {v!r}")


@dataclass(frozen=True)
class ServeSettings:
    """`nerfgan serve`'s resolved options (what --dry-run prints)."""

    engine: str
    precision: str | None = None
    device: str = "auto"
    threads: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port: expected 0..65535, got {self.port}")
        if not self.host or any(c.isspace() for c in self.host):
            raise UsageError(f"--host: expected an address or host name, got {self.host!r}")

    @property
    def loopback(self) -> bool:
        """True when only this machine can connect (127.0.0.0/8, ::1, localhost)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def allowed_hosts(self) -> list[str] | None:
        """The Host header names the server answers to (DNS rebinding): its --host, and localhost's names on a
        loopback address; None (any) for a wildcard address (0.0.0.0, ::), whose names cannot be known."""
        if self.host in ("0.0.0.0", "::", ""):
            return None
        names = [self.host]
        if self.loopback:
            names += ["localhost", "127.0.0.1", "::1"]
        return names

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "url": self.url, "loopback_only": self.loopback}
