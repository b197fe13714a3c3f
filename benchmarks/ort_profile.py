"""Where ONNX Runtime's CPU provider spends its time on one exported ONNX file, and what its optimiser fused.

    python benchmarks/ort_profile.py export/student.onnx export/student_int8.onnx --batch 4
    python benchmarks/ort_profile.py export/student_int8.onnx --level extended --threads 2 --top 15

For each file: the session is built with the given graph optimisation level (nerfgan's OnnxBackend defaults:
'all', sequential execution, one inter-op thread), the optimised graph is saved (SessionOptions
.optimized_model_filepath, into a temporary folder) and its node types counted: QLinearConv / ConvInteger
(int8 convolutions), Conv / FusedConv / NchwcConv (float convolutions), QuantizeLinear / DequantizeLinear left
over, and the rest. Then --runs profiled calls at --batch on random inputs of the file's declared shapes
(the nerfgan.io metadata) after --warmup unprofiled ones, with ONNX Runtime's own profiler
(SessionOptions.enable_profiling); the table lists the nodes that took longest in total: op type, node name,
total ms over the profiled runs, share of all node time, and whether the node computes in int8 or float.
--startup: the time to open each file as nerfgan's OnnxBackend without its cache of the optimised graph, on the
first open (which writes it) and on later opens (which reuse it), on a copy of the file and its manifest.json.

The median wall time per call and images/s (unprofiled; --timed-runs calls per file, taken round-robin over the
files so that load from other processes hits each file alike) are printed above each table.

On a busy machine the medians move; compare files in one run of this script.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}
INT8_OPS = {"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QLinearAdd", "QLinearMul",
            "QLinearLeakyRelu", "QLinearSigmoid", "QLinearConcat", "QLinearAveragePool", "QLinearGlobalAveragePool",
            "DynamicQuantizeLinear"}
FLOAT_CONVS = {"Conv", "FusedConv", "NchwcConv", "ConvTranspose", "NhwcFusedConv"}


def feeds_for(session: object, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 inputs of the declared shapes (the nerfgan.io metadata; ORT's own shapes otherwise)."""
    rng = np.random.default_rng(seed)
    meta = dict(session.get_modelmeta().custom_metadata_map)  # type: ignore[attr-defined]
    declared = {}
    if "nerfgan.io" in meta:
        for t in json.loads(meta["nerfgan.io"]).get("inputs", []):
            declared[t["name"]] = [batch if d == "B" else int(d) for d in t["shape"]]
    out = {}
    for i in session.get_inputs():  # type: ignore[attr-defined]
        shape = declared.get(i.name) or [batch if not isinstance(d, int) else d for d in i.shape]
        out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def op_counts(path: Path) -> collections.Counter[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return collections.Counter(n.op_type for n in model.graph.node)


def options(level: str, threads: int | None) -> Any:
    """nerfgan's OnnxBackend session settings (nerfgan.runtime.ort_session.session_options) at ``level``."""
    import onnxruntime as ort

    from nerfgan.runtime.ort_session import session_options

    if level == "disable":
        so = session_options(ort, "basic", threads)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return so
    return session_options(ort, level, threads)


def fused_counts(path: Path, level: str, threads: int | None, work: Path) -> collections.Counter[str]:
    """Node types of the graph ONNX Runtime optimised at ``level`` (saved via optimized_model_filepath)."""
    import onnxruntime as ort

    so = options(level, threads)
    opt = work / f"{path.stem}.{level}.opt.onnx"
    so.optimized_model_filepath = str(opt)
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return op_counts(opt)


def interleaved_medians(paths: list[Path], level: str, threads: int | None, batch: int, warmup: int,
                        runs: int) -> list[float]:
    """Median seconds per call of each file, timed round-robin (one call of each file per round), so that load from
    other processes hits every file alike."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), options(level, threads), providers=["CPUExecutionProvider"])
                for p in paths]
    feeds = [feeds_for(s, batch) for s in sessions]
    for s, f in zip(sessions, feeds):
        for _ in range(warmup):
            s.run(None, f)
    walls: list[list[float]] = [[] for _ in paths]
    for _ in range(runs):
        for i, (s, f) in enumerate(zip(sessions, feeds)):
            t = time.perf_counter()
            s.run(None, f)
            walls[i].append(time.perf_counter() - t)
    return [statistics.median(w) for w in walls]


def node_times(path: Path, level: str, threads: int | None, batch: int, warmup: int, runs: int,
               work: Path) -> list[tuple[str, str, float]]:
    """[(op type, node name, µs)] per node, summed over ``runs`` profiled calls (ONNX Runtime's profiler), longest
    first."""
    import onnxruntime as ort

    so = options(level, threads)
    so.enable_profiling = True
    so.profile_file_prefix = str(work / f"{path.stem}.{level}.prof")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = feeds_for(sess, batch)
    for _ in range(warmup + runs):
        sess.run(None, feeds)
    trace = json.loads(Path(sess.end_profiling()).read_text())
    # the warm-up calls are profiled too: model_run events are stamped at their start, so keep node events from
    # the start of the first of the last ``runs`` calls on
    starts = sorted(e["ts"] for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run")
    start = starts[-runs] if len(starts) >= runs else 0
    per_node: dict[str, list[Any]] = {}
    for e in trace:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < start:
            continue
        name = e["name"][:-len("_kernel_time")]
        op = e.get("args", {}).get("op_name", "?")
        per_node.setdefault(name, [op, 0.0])[1] += float(e["dur"])
    rows = [(op, name, us) for name, (op, us) in per_node.items()]
    rows.sort(key=lambda r: -r[2])
    return rows


def startup(path: Path, repeats: int, work: Path) -> dict[str, float]:
    """Median seconds to open ``path`` as nerfgan's OnnxBackend: without the cache ('off'), the first open that
    writes it ('write', once) and opens that reuse it ('reuse'). ``path`` is copied with the manifest beside it into
    ``work`` first (the cache goes beside the copy), so the export itself is left as it is."""
    import shutil

    from nerfgan.runtime.backends import OnnxBackend

    folder = work / f"startup-{path.stem}"
    folder.mkdir()
    shutil.copy2(path, folder / path.name)
    if (path.parent / "manifest.json").is_file():
        shutil.copy2(path.parent / "manifest.json", folder / "manifest.json")
    target = folder / path.name

    def once(cache: str) -> tuple[float, str]:
        t = time.perf_counter()
        b = OnnxBackend(target, cache=cache)
        dt = time.perf_counter() - t
        state = b.cache_state
        b.close()
        return dt, state

    off = [once("off")[0] for _ in range(repeats)]
    write, state = once("auto")
    if state != "written":
        print(f"{path}: no cache written ({state}: not listed in a manifest.json beside it?)", file=sys.stderr)
        return {"off": statistics.median(off)}
    reuse = []
    for _ in range(repeats):
        dt, state = once("auto")
        assert state == "reused", state
        reuse.append(dt)
    return {"off": statistics.median(off), "write": write, "reuse": statistics.median(reuse)}


def print_report(path: Path, counts: collections.Counter[str], rows: list[tuple[str, str, float]], wall: float,
                 batch: int, runs: int, top: int) -> None:
    total = sum(r[2] for r in rows) or 1.0
    int8 = sum(counts[o] for o in INT8_OPS)
    fconv = sum(counts[o] for o in FLOAT_CONVS)
    print(f"\n== {path}  (batch {batch}; median {wall * 1e3:.1f} ms/call, {batch / wall:.2f} img/s, round-robin)")
    print("optimised graph: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    print(f"fused: int8 kernels {int8} (QLinearConv {counts['QLinearConv']}, ConvInteger {counts['ConvInteger']}); "
          f"float convolutions {fconv}; QuantizeLinear {counts['QuantizeLinear']}, "
          f"DequantizeLinear {counts['DequantizeLinear']} left")
    by_op: dict[str, float] = collections.defaultdict(float)
    for op, _, us in rows:
        by_op[op] += us
    print(f"\ntime by op type (sum of {runs} profiled calls, {total / 1e3 / runs:.1f} ms of node time per call)")
    print(f"{'op type':<22}{'total ms':>10}{'share':>8}{'nodes':>7}")
    n_by_op = collections.Counter(op for op, _, _ in rows)
    for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{op:<22}{us / 1e3:>10.1f}{us / total:>8.1%}{n_by_op[op]:>7}")
    print(f"\ntop {top} nodes")
    print(f"{'op type':<22}{'kind':<7}{'total ms':>10}{'share':>8}  node")
    for op, name, us in rows[:top]:
        kind = "int8" if op in INT8_OPS else ("q/dq" if op in ("QuantizeLinear", "DequantizeLinear") else "float")
        print(f"{op:<22}{kind:<7}{us / 1e3:>10.1f}{us / total:>8.1%}  {name[:70]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", nargs="+", type=Path, help="ONNX files (a nerfgan export's student*.onnx)")
    ap.add_argument("--level", choices=sorted(LEVELS), default="all", help="graph optimisation level (default all)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: ONNX Runtime's)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5, help="profiled calls per file")
    ap.add_argument("--timed-runs", type=int, default=15, help="timed calls per file, round-robin over the files")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--startup", action="store_true",
                    help="also time opening each file as nerfgan's OnnxBackend without / with the cache")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    results = []
    missing = [p for p in args.onnx if not p.is_file()]
    if missing:
        print(f"{missing[0]}: not found", file=sys.stderr)
        return 2
    walls = interleaved_medians(args.onnx, args.level, args.threads, args.batch, args.warmup, args.timed_runs)
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        for path, wall in zip(args.onnx, walls):
            counts = fused_counts(path, args.level, args.threads, Path(tmp))
            rows = node_times(path, args.level, args.threads, args.batch, args.warmup, args.runs, Path(tmp))
            print_report(path, counts, rows, wall, args.batch, args.runs, args.top)
            opened = startup(path, 5, Path(tmp)) if args.startup else {}
            if opened:
                print("\nstart-up (OnnxBackend open, median of 5): "
                      + ", ".join(f"{k} {v:.3f} s" for k, v in opened.items()))
            results.append({"file": str(path), "level": args.level, "batch": args.batch, "median_s": wall,
                            "img_per_s": args.batch / wall, "op_counts": dict(counts), "startup_s": opened,
                            "nodes": [{"op": o, "node": n, "total_ms": us / 1e3} for o, n, us in rows]})
    if args.json:
        tmp_out = args.json.with_name(args.json.name + ".tmp")
        tmp_out.write_text(json.dumps(results, indent=1))
        tmp_out.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
