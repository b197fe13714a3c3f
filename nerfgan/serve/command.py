"""``nerfgan serve``: one engine over HTTP, with the viewer at /. Imports click only until it serves (fast --help)."""

from __future__ import annotations

import click

from nerfgan.cli_common import dry_run_option, echo_json
from nerfgan.serve.settings import SERVE_INSTALL, Limits, ServeSettings

_D = Limits()


@click.command("serve", short_help="Serve an engine over HTTP, with a viewer in the browser.")
@click.option("--engine", required=True, help="An export folder (manifest.json), a student .onnx (mapping.onnx "
              "beside it), a TensorRT student.plan, or a student .safetensors (runs PyTorch).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Which student of an export folder (default fp32).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to run.")
@click.option("--threads", type=click.IntRange(1), default=None, help="ONNX Runtime threads (default: all cores).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; the default answers this machine only. 0.0.0.0 opens it to the network "
                   "(there is no authentication).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port (0: a free one, printed at start).")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=_D.max_batch, show_default=True,
              help="Images per engine call: concurrent requests are merged up to it.")
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000), default=_D.max_wait_ms, show_default=True,
              help="How long the first request of a batch waits for others.")
@click.option("--max-queue", type=click.IntRange(1, 100_000), default=_D.max_queue, show_default=True,
              help="Requests waiting for the engine; beyond it the answer is 503 with Retry-After.")
@dry_run_option("Print the resolved settings as JSON; load and serve nothing.")
def serve_command(engine: str, precision: str | None, device: str, threads: int | None, host: str, port: int,
                  max_batch: int, max_wait_ms: float, max_queue: int, dry_run: bool) -> None:
    """Serve an engine over HTTP: a viewer at / (drag to turn the object) and a JSON API under /v1.

    \b
    Endpoints: GET /healthz, GET /v1/info, POST /v1/render (PNG, JPEG or .npy),
    GET /v1/orbit?seed=7&frames=24 (GIF), POST /v1/style (w of a seed).

    \b
    Examples:
      nerfgan serve --engine qs/export                     # then open http://127.0.0.1:8000/
      nerfgan serve --engine qs/export --precision int8 --port 8080
      nerfgan serve --engine qs/export --host 0.0.0.0      # reachable from other machines
      curl -s -X POST localhost:8000/v1/render -H 'content-type: application/json' \\
           -d '{"seed":7,"yaw":20,"pitch":-5}' -o view.png
      nerfgan serve --engine qs/export --dry-run
    """
    from nerfgan.runtime.run_cli import check_engine

    settings = ServeSettings(engine, precision, device, threads, host, port,
                             Limits(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue))
    check_engine(engine, precision)
    if dry_run:
        echo_json(settings.to_dict())
        return
    run(settings)


def run(settings: ServeSettings) -> None:
    """Load the engine, bind the port, serve until Ctrl-C, close the engine."""
    from nerfgan.runtime import load
    from nerfgan.serve.server import bind, require_extra, serve_forever

    require_extra()
    sock = bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    try:
        with load(settings.engine, precision=settings.precision, device=settings.device,
                  threads=settings.threads) as g:
            from nerfgan.serve.app import create_app

            app = create_app(g, settings.limits, allowed_hosts=settings.allowed_hosts)
            shown = ServeSettings(settings.engine, settings.precision, settings.device, settings.threads,
                                  settings.host, port, settings.limits)
            click.echo(f"nerfgan serve: {settings.engine} ({g.backend}, {g.img_resolution}x{g.img_resolution}) "
                       f"at {shown.url}")
            if shown.loopback:
                click.echo(f"listening on {settings.host} only: this machine can connect, others cannot "
                           "(--host 0.0.0.0 to open it)")
            else:
                click.echo(f"WARNING: listening on {settings.host}: other machines can connect, and there is no "
                           "authentication", err=True)
            serve_forever(app, sock)
            click.echo("nerfgan serve: stopped")
    finally:
        sock.close()


__all__ = ["SERVE_INSTALL", "run", "serve_command"]
