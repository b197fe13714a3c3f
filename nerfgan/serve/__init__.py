"""nerfgan.serve: an engine over HTTP (FastAPI + uvicorn, the ``[serve]`` extra) with a viewer in the browser.

    nerfgan serve --engine qs/export                 # http://127.0.0.1:8000/ : the viewer; /v1/... : the API

    import nerfgan.runtime as nr
    from nerfgan.serve import create_app
    app = create_app(nr.load("qs/export"))           # an ASGI app: mount it in your own server

Importing this package imports neither FastAPI nor uvicorn (create_app does); see nerfgan.serve.app for the
endpoints and nerfgan.serve.settings for the limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nerfgan.serve.settings import Limits, ServeSettings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fastapi import FastAPI

    from nerfgan.runtime import Generator

__all__ = ["Limits", "ServeSettings", "create_app"]


def create_app(generator: "Generator", limits: Limits | None = None,
               allowed_hosts: "Sequence[str] | None" = None) -> "FastAPI":
    """The ASGI app serving ``generator`` (nerfgan.serve.app.create_app); MissingDependencyError without the extra."""
    from nerfgan.serve.server import require_extra

    require_extra()
    from nerfgan.serve.app import create_app as make

    return make(generator, limits, allowed_hosts)
