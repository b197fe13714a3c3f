"""`nerfgan serve` as a command: --help, --dry-run, errors, a fast `nerfgan --help`, and the README's curl example
against a live server started by the command (same pixels as nerfgan-run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import invoke, wait_until
from nerfgan.cli import main, run_main


def test_help_has_examples(capsys):
    code, out, _ = invoke(main, ["serve", "--help"], capsys)
    assert code == 0 and "Examples:" in out and "nerfgan serve --engine qs/export" in out and "127.0.0.1" in out
    code, out, _ = invoke(main, ["--help"], capsys)
    assert code == 0 and "serve" in out


def test_dry_run_prints_the_settings(tiny_export_dir, capsys):
    code, out, err = invoke(main, ["serve", "--engine", tiny_export_dir, "--port", 0, "--max-queue", 5, "--dry-run"],
                            capsys)
    assert code == 0, err
    s = json.loads(out)
    assert s["host"] == "127.0.0.1" and s["loopback_only"] is True and s["limits"]["max_queue"] == 5
    assert s["engine"] == str(tiny_export_dir) and s["port"] == 0


@pytest.mark.parametrize("args, code, text", [
    (["--engine", "nowhere"], 1, "nowhere: not found"),
    (["--engine", "ENGINE", "--port", 70000], 2, "--port"),
    (["--engine", "ENGINE", "--max-batch", 0], 2, "--max-batch"),
    (["--engine", "ENGINE", "--precision", "fp64"], 2, "--precision"),
])
def test_bad_options_are_one_line(tiny_export_dir, capsys, args, code, text):
    args = [tiny_export_dir if a == "ENGINE" else a for a in args]
    got, out, err = invoke(main, ["serve", *args, "--dry-run"], capsys)
    assert got == code and text in err and len(err.strip().splitlines()) == 1, err


def test_a_missing_extra_is_one_line(tiny_export_dir, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    code, _, err = invoke(main, ["serve", "--engine", tiny_export_dir], capsys)
    assert code == 1 and err.strip() == "Error: nerfgan serve needs fastapi: pip install 'nerfgan[serve]'"


def test_nerfgan_help_imports_no_web_framework():
    code = "import sys; from nerfgan.cli import cli; print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', " \
           "'pydantic', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def _nerfgan() -> list[str]:
    script = Path(sys.executable).parent / "nerfgan"
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from nerfgan.cli import main; main()"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_readme_curl_example_matches_nerfgan_run(tiny_export_dir, tmp_path, capsys):
    server = subprocess.Popen([*_nerfgan(), "serve", "--engine", str(tiny_export_dir), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = server.stdout.readline()  # type: ignore[union-attr]
        m = re.search(r"at http://127\.0\.0\.1:(\d+)/", first)
        assert m, first
        port = m.group(1)
        assert "127.0.0.1 only" in server.stdout.readline()  # type: ignore[union-attr]
        def up() -> bool:
            assert server.poll() is None, "the server exited"
            return subprocess.run(["curl", "-sf", f"localhost:{port}/healthz"], capture_output=True,
                                  timeout=10).returncode == 0

        wait_until(up, "the server answered /healthz", poll_s=0.1)
        # the README's example as written, on this server's port
        subprocess.run(["curl", "-s", "-X", "POST", f"localhost:{port}/v1/render",
                        "-H", "content-type: application/json", "-d", '{"seed":7,"yaw":20,"pitch":-5}', "-o", "x.png"],
                       cwd=tmp_path, timeout=120, check=True)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        finally:
            if server.poll() is None:
                server.kill()
    assert server.returncode == 0
    code, _, err = invoke(run_main, ["--engine", tiny_export_dir, "--seed", 7, "--pose", "20,-5",
                                     "-o", tmp_path / "y.png"], capsys)
    assert code == 0, err
    x, y = (np.asarray(Image.open(tmp_path / f).convert("RGB")) for f in ("x.png", "y.png"))
    assert x.shape == (128, 128, 3) and np.array_equal(x, y)
    assert os.path.getsize(tmp_path / "x.png") > 1000


def test_listening_beyond_loopback_is_said_loudly(tiny_export_dir, capsys, monkeypatch):
    pytest.importorskip("fastapi", reason="needs the serve extra")
    from nerfgan.serve import server

    served = []
    real_bind = server.bind
    monkeypatch.setattr(server, "bind", lambda host, port: real_bind("127.0.0.1", 0))  # no real 0.0.0.0 socket here
    monkeypatch.setattr(server, "serve_forever", lambda app, sock: served.append(app))
    code, out, err = invoke(main, ["serve", "--engine", tiny_export_dir, "--host", "0.0.0.0", "--port", 0], capsys)
    assert code == 0 and len(served) == 1
    assert re.search(r"at http://0\.0\.0\.0:\d+/", out) and "nerfgan serve: stopped" in out
    assert "WARNING: listening on 0.0.0.0: other machines can connect, and there is no authentication" in err
