"""``nerfgan web``: an export folder -> a static site that renders it in the browser (nerfgan.export.web).
Imports click only until it runs."""

from __future__ import annotations

import click

from nerfgan.cli_common import dry_run_option, echo_json, out_option


@click.command("web", short_help="Write a static web page that renders an export in the browser.")
@click.option("--engine", required=True, type=click.Path(file_okay=False),
              help="The export folder (manifest.json, mapping.onnx, student.onnx[, student_int8.onnx]).")
@out_option("out_dir", "SITE_DIR to write: index.html, the ONNX files, onnxruntime-web, nerfgan-web.json.",
            required=True, type=click.Path(file_okay=False))
@click.option("--serve", is_flag=True,
              help="Then serve SITE_DIR on --host/--port until Ctrl-C, cross-origin isolated (WebAssembly threads).")
@click.option("--host", default="127.0.0.1", show_default=True, help="With --serve: the address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="With --serve: TCP port (0: a free one).")
@dry_run_option("Print the resolved settings as JSON; write nothing.")
def web_command(engine: str, out_dir: str, serve: bool, host: str, port: int, dry_run: bool) -> None:
    """Write a static folder any web server can host: the page maps seeds to w and renders the student in the
    browser with ONNX Runtime Web (WebAssembly), nothing fetched from elsewhere.

    \b
    The page takes ?seed=7&yaw=20&pitch=-5[&truncation=0.7][&precision=fp32|int8][&threads=N].
    More than one WebAssembly thread needs the page served cross-origin isolated (headers
    Cross-Origin-Opener-Policy: same-origin, Cross-Origin-Embedder-Policy: require-corp), as --serve does.

    \b
    Examples:
      nerfgan web --engine qs/export -o site
      python -m http.server -d site 8000           # any static server; then open http://127.0.0.1:8000/
      nerfgan web --engine qs/export -o site --serve --port 8000
    """
    from nerfgan.export.web import ORT_WEB_VERSION, check_destination, write_site

    check_destination(out_dir, "-o", engine)
    if dry_run:
        echo_json({"engine": engine, "out": out_dir, "onnxruntime_web": ORT_WEB_VERSION, "serve": serve,
                   "host": host, "port": port})
        return
    write_site(engine, out_dir, "-o", log=click.echo)
    if serve:
        serve_site(out_dir, host, port)


def serve_site(folder: str, host: str, port: int) -> None:
    """Serve a written site until Ctrl-C, saying where."""
    import threading

    from nerfgan.export.web import serving

    with serving(folder, host, port) as url:
        click.echo(f"serving {folder} at {url}/ (cross-origin isolated; Ctrl-C stops it)")
        if host not in ("127.0.0.1", "localhost", "::1"):
            click.echo(f"WARNING: listening on {host}: other machines can load the page and its model files",
                       err=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    click.echo("stopped")
