"""Load on `nerfgan serve`, loopback only: requests/s and latency p50/p99 at 1, 4 and 16 concurrent clients.

    python benchmarks/serve_load.py --engine qs/export
    python benchmarks/serve_load.py --engine qs/export --clients 1,4,16 --requests 48 --runs 3 --max-wait-ms 5

Starts `nerfgan serve --engine ENGINE --host 127.0.0.1 --port 0` in a subprocess (so the clients do not share its
interpreter), waits for /healthz, then for each client count C: one untimed warm-up run, then --runs timed runs of
max(--requests, 3 C) POST /v1/render requests, PNG, seeds and poses drawn from a seeded generator, spread over C
threads, each with its own keep-alive connection (http.client: nothing beyond the standard library). Per run:
requests/s = requests / wall time; p50 and p99 of the per-request latencies (numpy, linear); requests per batch
(a batch is one mapping call and one student call) from the server's /healthz counters. The table gives the median
of the runs for each figure. Any answer other than 200 is counted and shown (a 503 means the queue bound was
reached). Everything is bounded by --timeout seconds; the server is stopped at the end (SIGINT, then kill).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def start_server(engine: str, args: argparse.Namespace) -> tuple[subprocess.Popen[str], int]:
    exe = Path(sys.executable).parent / "nerfgan"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-c", "from nerfgan.cli import main; main()"]
    cmd += ["serve", "--engine", engine, "--host", "127.0.0.1", "--port", "0", "--max-batch", str(args.max_batch),
            "--max-wait-ms", str(args.max_wait_ms)] + (["--threads", str(args.threads)] if args.threads else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not m:
        proc.kill()
        raise SystemExit(f"the server did not start: {line.strip()}")
    port = int(m.group(1))
    threading.Thread(target=lambda: proc.stdout and proc.stdout.read(), daemon=True).start()  # drain its log
    deadline = time.monotonic() + 60
    while True:
        try:
            get(port, "/healthz")
            return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("the server did not answer /healthz within 60 s") from None
            time.sleep(0.1)


def get(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def one_run(port: int, clients: int, n: int, rng: np.random.Generator) -> dict[str, float]:
    bodies = [json.dumps({"seed": int(s), "yaw": float(y), "pitch": float(p)}).encode()
              for s, y, p in zip(rng.integers(0, 2**32, n), rng.uniform(-40, 40, n), rng.uniform(-20, 20, n))]
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()
    work = iter(bodies)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while True:
                with lock:
                    body = next(work, None)
                if body is None:
                    return
                t = time.perf_counter()
                conn.request("POST", "/v1/render", body, {"content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                with lock:
                    (latencies.append(time.perf_counter() - t) if resp.status == 200 else failures.append(resp.status))
        finally:
            conn.close()

    before = get(port, "/healthz")
    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    after = get(port, "/healthz")
    lat = np.array(latencies) * 1000
    return {"rps": len(latencies) / wall, "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "per_call": len(latencies) / max(1, after["batches"] - before["batches"]), "failed": len(failures)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", required=True, help="what `nerfgan serve --engine` takes (e.g. qs/export)")
    ap.add_argument("--clients", default="1,4,16", help="concurrent clients, comma-separated")
    ap.add_argument("--requests", type=int, default=32, help="requests per run (at least 3 per client)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per client count (the median is shown)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads of the server")
    ap.add_argument("--timeout", type=float, default=900, help="stop everything after this many seconds")
    args = ap.parse_args()
    proc, port = start_server(args.engine, args)
    timer = threading.Timer(args.timeout, lambda: (proc.kill(), print("timed out", file=sys.stderr)))
    timer.daemon = True
    timer.start()
    rng = np.random.default_rng(0)
    rows = []
    try:
        info = get(port, "/v1/info")
        for c in (int(v) for v in args.clients.split(",")):
            n = max(args.requests, 3 * c)
            one_run(port, c, max(c, n // 4), rng)  # warm-up
            runs = [one_run(port, c, n, rng) for _ in range(args.runs)]
            rows.append((c, n, {k: statistics.median(r[k] for r in runs) for k in runs[0]}))
    finally:
        timer.cancel()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"nerfgan serve, {info['backend']}, {info['resolution']} px, max batch {args.max_batch}, max wait "
          f"{args.max_wait_ms:g} ms; POST /v1/render (PNG), median of {args.runs} runs")
    print("| clients | requests/run | requests/s | p50 ms | p99 ms | requests per batch | failed |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for c, n, r in rows:
        print(f"| {c} | {n} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['per_call']:.1f} | "
              f"{r['failed']:.0f} |")


if __name__ == "__main__":
    main()
