"""Running the app with uvicorn: in the foreground (`nerfgan serve`) or in a background thread (tests, benchmarks).

The listening socket is bound here, before uvicorn starts, so a busy port is one error line naming --port.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nerfgan.errors import MissingDependencyError, UsageError
from nerfgan.serve.settings import SERVE_INSTALL


def require_extra() -> None:
    """MissingDependencyError (one line naming the extra) unless FastAPI and uvicorn can be imported."""
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(f"nerfgan serve needs {' and '.join(missing)}: {SERVE_INSTALL}")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); UsageError naming --host/--port when refused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror})") from None
    return sock


def _server(app: Any, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5))


def serve_forever(app: Any, sock: socket.socket, log_level: str = "info") -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C / SIGTERM: uvicorn shuts down gracefully, then re-raises the signal,
    which is the normal end of a server here (no 'Aborted.')."""
    try:
        _server(app, log_level).run(sockets=[sock])
    except KeyboardInterrupt:
        pass


@contextmanager
def running(app: Any, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve ``app`` from a background thread for the ``with`` block; yields its base URL ('http://127.0.0.1:PORT').
    Startup and shutdown are bounded by ``timeout_s`` each (RuntimeError when the server does not start)."""
    sock = bind(host, port)
    server = _server(app, "warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="nerfgan-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {timeout_s:g} s")
            time.sleep(0.02)
        bound_host, bound_port = sock.getsockname()[:2]
        yield f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
