"""``nerfgan-run``: images, seed grids, orbit animations and latent interpolations from an exported student.

    nerfgan-run --engine qs/export --seed 7 --pose 20,-5 -o view.png
    nerfgan-run --engine qs/export --seeds 0-15 --grid -o grid.png
    nerfgan-run --engine qs/export --seeds 0-3 -o view.png          # view-0.png ... view-3.png
    nerfgan-run --engine qs/export --seed 7 --orbit 48 -o orbit.gif
    nerfgan-run --engine qs/export --interp 3,5 --steps 8 -o strip.png

Built on nerfgan.runtime only: with an ONNX export or a TensorRT plan it never imports torch, so this
module imports nothing heavier than click, numpy and PIL (MP4 needs imageio-ffmpeg, imported when used).
Every option is checked before the engine is loaded, and every output path is checked writable before
anything is rendered; every file is written atomically.

Limits: at most MAX_SEEDS (1024) seeds, MAX_FRAMES (3600) orbit frames or interpolation steps, MAX_IMAGES
(3600) images rendered by one command (an orbit with --seeds renders seeds x frames), and MAX_HELD_BYTES
(4 GiB) of uint8 images held for one output file (a grid, a strip, an animation's frames).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image

from nerfgan import camera
from nerfgan.captions import caption_grid
from nerfgan.cli import run_standalone
from nerfgan.cli_common import AliasOption, version_option
from nerfgan.errors import InputFileError, PoseError, UsageError
from nerfgan.io import ANIMATION_FPS, atomic_path, check_writable, frame_ms
from nerfgan.runtime import Generator, load
from nerfgan.runtime.spec import MANIFEST, read_export

MAX_SEEDS = 1024
MAX_FRAMES = 3600
MAX_IMAGES = 3600  # images one command renders
MAX_HELD_BYTES = 4 << 30  # uint8 images held in memory for one output (grid, strip, animation frames)
STILL, ANIMATION = (".png",), (".gif", ".mp4")
MP4_INSTALL = "pip install 'nerfgan[video]'"


# --- option types: a bad value is one `Error: --option: ...` line (exit 2), not click's usage block ---------
def _opt(param: click.Parameter | None) -> str:
    names = list(param.opts) if param is not None else []
    return max(names, key=len) if names else "value"


class _Number(click.ParamType):
    """An int or float in [lo, hi] (``lo_open``: lo excluded); a bad value raises nerfgan's UsageError."""

    def __init__(self, kind: type, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> None:
        self.kind, self.lo, self.hi, self.lo_open = kind, lo, hi, lo_open
        self.name = "integer" if kind is int else "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        def show(v: float) -> str:
            return str(int(v)) if self.kind is int else f"{v:g}"

        want = ("an integer" if self.kind is int else "a number") + (
            "" if self.lo is None else f" {'>' if self.lo_open else '>='} {show(self.lo)}") + (
            "" if self.hi is None else f" and <= {show(self.hi)}")
        try:
            v = self.kind(value)
        except (TypeError, ValueError):
            raise UsageError(f"{_opt(param)}: expected {want}, got {value!r}") from None
        if not math.isfinite(v) or (self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)) \
                or (self.hi is not None and v > self.hi):
            raise UsageError(f"{_opt(param)}: expected {want}, got {value!r}")
        return v


class _Choice(click.ParamType):
    name = "choice"

    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value not in self.choices:
            raise UsageError(f"{_opt(param)}: choose one of {', '.join(self.choices)}, got {value!r}")
        return value


# --- parsing -------------------------------------------------------------------------------------------------
def parse_seeds(text: str, name: str = "--seeds") -> list[int]:
    """``"A-B"`` (inclusive) or ``"A,B,C"``: non-negative integers below 2**32, at most MAX_SEEDS of them."""
    s = str(text).strip()
    try:
        if "-" in s and "," not in s:
            a, b = (int(p) for p in s.split("-"))
            if a > b:
                raise UsageError(f"{name}: range {s!r} runs backwards (A-B needs A <= B)")
            if b - a + 1 > MAX_SEEDS:
                raise UsageError(f"{name}: {s!r} is {b - a + 1} seeds, at most {MAX_SEEDS}")
            seeds = list(range(a, b + 1))
        else:
            seeds = [int(p) for p in s.split(",")]
    except ValueError:
        raise UsageError(f"{name}: expected A-B (inclusive) or A,B,C with non-negative integers, got {text!r}") from None
    if not all(0 <= v < 2**32 for v in seeds):
        raise UsageError(f"{name}: seeds must be integers in [0, 2**32), got {text!r}")
    if len(seeds) > MAX_SEEDS:
        raise UsageError(f"{name}: {len(seeds)} seeds, at most {MAX_SEEDS}")
    return seeds


def per_seed_path(output: str, seed: int) -> str:
    """``out.png`` -> ``out-<seed>.png``: the file of one seed when --seeds is given without --grid."""
    p = Path(output)
    return str(p.with_name(f"{p.stem}-{seed}{p.suffix}"))


# --- the plan: every option resolved and checked, nothing loaded ----------------------------------------------
@dataclass(frozen=True)
class Plan:
    engine: str
    precision: str | None
    device: str
    threads: int | None
    mode: str  # 'single', 'seeds' (one file each), 'grid', 'orbit', 'interp'
    seeds: list[int]  # the seeds rendered ('interp': its two ends)
    truncation: float
    fov: float | None
    poses: list[list[float | None]]  # [yaw, pitch, radius] per frame (one for stills); radius None: the engine's
    outputs: list[str]
    frames: int  # frames of the animation; 1 for stills and strips
    cols: int | None  # grid columns (grid; orbit with --seeds; interp strip)
    fps: float | None
    space: str | None  # interp: 'w' (lerp) or 'z' (slerp)
    steps: int | None
    batch: int
    backend: str | None = None  # what runs the student: None (ONNX Runtime), 'openvino' or 'pt2' (AOTInductor package)
    openvino_precision: str | None = None  # OpenVINO's student precision: None ('fp32') or 'bf16'

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def make_plan(engine: str, precision: str | None, device: str, threads: int | None, pose_text: str, seed: int | None,
              seeds_text: str | None, truncation: float, fov: float | None, output: str, grid: bool, cols: int | None,
              orbit: int | None, yaw_range: float | None, pitch_range: float | None, fps: float | None,
              interp: str | None, steps: int | None, space: str | None, batch: int, backend: str | None = None,
              openvino_precision: str | None = None) -> Plan:
    """Resolve and check every option (UsageError/PoseError naming it) without touching the engine."""
    yaw, pitch, radius = camera.parse_pose(pose_text)
    if openvino_precision is not None and backend != "openvino":
        raise UsageError("--openvino-precision works with --backend openvino only")
    if backend == "openvino" and device == "cuda":
        raise UsageError("--backend openvino runs on the CPU: use --device cpu (or auto)")
    if backend == "openvino" and Path(engine).suffix.lower() in (".plan", ".engine", ".safetensors", ".pt2"):
        raise UsageError(f"--backend openvino runs ONNX files (an export folder or a .onnx file), not {engine}")
    pt2 = backend == "pt2" or (backend is None and Path(engine).suffix.lower() == ".pt2")
    if backend == "pt2" and Path(engine).suffix.lower() in (".onnx", ".plan", ".engine", ".safetensors"):
        raise UsageError(f"--backend pt2 runs AOTInductor packages (an export folder with student.pt2, or a .pt2 "
                         f"file), not {engine}")
    if pt2 and threads is not None:
        raise UsageError("--threads sets ONNX Runtime's or OpenVINO's threads; a .pt2 package runs on torch's "
                         "(set OMP_NUM_THREADS)")
    if seed is not None and seeds_text is not None:
        raise UsageError("--seed and --seeds: give one of them")
    if orbit is not None and interp is not None:
        raise UsageError("--orbit and --interp: give one of them")
    seeds = parse_seeds(seeds_text) if seeds_text is not None else [0 if seed is None else seed]
    for flag, given, needs in (("--steps", steps, interp), ("--space", space, interp), ("--yaw-range", yaw_range, orbit),
                               ("--pitch-range", pitch_range, orbit)):
        if given is not None and needs is None:
            raise UsageError(f"{flag} works with {'--interp' if flag in ('--steps', '--space') else '--orbit'} only")
    if interp is not None:
        if seed is not None or seeds_text is not None:
            raise UsageError("--interp A,B names its seeds: drop --seed/--seeds")
        if grid:
            raise UsageError("--grid works with --seeds; --interp writes its steps in one row (see --cols)")
        ends = parse_seeds(interp, "--interp")
        if len(ends) != 2 or ends[0] == ends[1]:
            raise UsageError(f"--interp: expected two different seeds A,B, got {interp!r}")
        seeds, steps = ends, 8 if steps is None else steps
        mode = "interp"
    elif orbit is not None:
        mode = "orbit"
    elif seeds_text is not None:
        mode = "grid" if grid else "seeds"
        if not grid and len(set(seeds)) != len(seeds):
            raise UsageError(f"--seeds: {seeds_text!r} repeats a seed; each seed writes its own file")
    else:
        mode = "grid" if grid else "single"

    suffix = Path(output).suffix.lower()
    allowed = {"interp": STILL + ANIMATION, "orbit": ANIMATION}.get(mode, STILL)
    if suffix not in allowed:
        what = {"interp": "--interp writes a .png strip or a .gif/.mp4 animation",
                "orbit": "--orbit writes a .gif or .mp4 animation"}.get(mode, "a still image is written as .png "
                                                                              "(--orbit writes .gif or .mp4)")
        raise UsageError(f"-o {output}: {what}")
    if Path(output).is_dir():
        raise UsageError(f"-o {output}: is a directory, expected a file name")
    animated = suffix in ANIMATION
    if suffix == ".mp4" and not mp4_encoder_available():
        raise UsageError(f"-o {output}: writing .mp4 needs imageio with its ffmpeg plugin ({MP4_INSTALL}); "
                         "or write a .gif")
    if fps is not None and not animated:
        raise UsageError("--fps works with a .gif or .mp4 output only")
    if fov is not None and not 1.0 <= fov <= 120.0:
        raise UsageError(f"--fov: {fov:g} degrees is outside [1, 120]")
    n_cells = {"grid": len(seeds), "orbit": len(seeds) if seeds_text is not None else 1,
               "interp": 0 if animated else steps}.get(mode, 0) or 0
    if cols is not None and n_cells <= 1:
        raise UsageError("--cols works with --grid, --orbit with --seeds, or an --interp strip")
    if cols is not None and cols > n_cells:
        raise UsageError(f"--cols: {cols} is more than the {n_cells} images")
    if n_cells > 1 and cols is None:
        cols = steps if mode == "interp" else math.ceil(math.sqrt(n_cells))

    poses: list[list[float | None]] = [[yaw, pitch, radius]]
    frames = int(steps or 2) if mode == "interp" and animated else 1
    if mode == "orbit":
        yr, pr = 20.0 if yaw_range is None else yaw_range, 14.0 if pitch_range is None else pitch_range
        if yr > 180:
            raise UsageError(f"--yaw-range: {yr:g} degrees is more than 180")
        if pr >= 90:
            raise UsageError(f"--pitch-range: {pr:g} degrees must be below 90")
        offsets = camera.orbit(int(orbit or 0), yr, pr, pitch_offset_deg=0.0).astype(np.float64)
        ys, ps = np.round(yaw + offsets[:, 0], 4), np.round(pitch + offsets[:, 1], 4)  # as printed by --dry-run
        where = f"--orbit around --pose {pose_text} with --yaw-range {yr:g}, --pitch-range {pr:g}"
        if np.abs(ys).max() > 180:
            raise PoseError(f"{where}: the yaw reaches {float(np.abs(ys).max()):g} degrees (limit 180)")
        if np.abs(ps).max() >= 90:
            raise PoseError(f"{where}: the pitch reaches {float(np.abs(ps).max()):g} degrees (limit: below 90)")
        poses = [[float(a), float(b), radius] for a, b in zip(ys, ps)]
        frames = len(poses)
        if frames * len(seeds) > MAX_IMAGES:
            raise UsageError(f"--orbit {orbit} with {len(seeds)} seeds is {frames * len(seeds)} images; at most "
                             f"{MAX_IMAGES} per command (fewer frames or seeds)")
    if mode == "seeds":
        outputs = [per_seed_path(output, s) for s in seeds]
    else:
        outputs = [output]
    return Plan(engine=engine, precision=precision, device=device, threads=threads, mode=mode, seeds=seeds,
                truncation=truncation, fov=fov, poses=poses, outputs=outputs, frames=frames, cols=cols,
                fps=(24.0 if fps is None else fps) if animated else None, space=(space or "w") if mode == "interp" else None,
                steps=steps, batch=batch, backend=backend, openvino_precision=openvino_precision)


def check_engine(path: str, precision: str | None) -> None:
    """The cheap checks of nerfgan.runtime.load, for --dry-run and before loading: a folder's manifest is
    well-formed; a file with a manifest beside it is listed there (sizes and sha256 are checked by load)."""
    p = Path(path)
    if p.is_dir():
        read_export(p)
    elif not p.is_file():
        raise InputFileError(f"{p}: {'not a regular file' if p.exists() else 'not found'} (expected an export folder, "
                             ".onnx, .plan or student .safetensors)")
    elif precision is not None:
        raise UsageError("--precision picks a file inside an export folder; a file path already names one")
    elif p.suffix.lower() in (".onnx", ".plan", ".engine", ".pt2") and (p.parent / MANIFEST).exists():
        manifest = read_export(p.parent)
        if manifest.find(p.name) is None:
            raise InputFileError(f"{p}: not listed in {manifest.path}: a leftover of an earlier export; use the "
                                 f"folder {p.parent} or a file it lists")


def check_outputs(plan: Plan) -> None:
    """Every output path can be written (nerfgan.io.check_writable): one error line now, not after rendering."""
    for out in plan.outputs:
        parent = Path(out).parent
        if not parent.exists() and not parent.is_symlink():  # (README: a missing folder is an error, not made)
            raise UsageError(f"-o {out}: the folder {parent} does not exist; make it first")
        check_writable(out)


def held_images(plan: Plan) -> int:
    """Images held in memory at once for one output file (per-seed files are written one by one)."""
    if plan.mode == "seeds":
        return min(plan.batch, len(plan.seeds))
    if plan.mode == "orbit":
        return plan.frames * len(plan.seeds)
    return int(plan.steps or 0) if plan.mode == "interp" else len(plan.seeds)


def check_memory(g: Generator, plan: Plan) -> None:
    """The images one output holds stay within MAX_HELD_BYTES at the engine's resolution."""
    need = held_images(plan) * g.img_resolution ** 2 * 3
    if need > MAX_HELD_BYTES:
        raise UsageError(f"{held_images(plan)} images of {g.img_resolution}x{g.img_resolution} would hold "
                         f"{need / 2**30:.1f} GiB for one output; at most {MAX_HELD_BYTES / 2**30:g} GiB "
                         "(fewer seeds, frames or steps)")


# --- images --------------------------------------------------------------------------------------------------
def tile(images: Sequence[np.ndarray], cols: int, labels: Sequence[str] = (), footer: str | None = None) -> np.ndarray:
    """uint8 (H, W, 3) images -> one captioned grid (nerfgan.captions.caption_grid): row-major, ``cols`` wide,
    ``labels[i]`` under image i, ``footer`` across the bottom, empty cells white. One image comes back bare."""
    if len(images) == 1:
        return images[0]
    rows = [list(images[r:r + cols]) for r in range(0, len(images), cols)]
    return caption_grid(rows, labels=[list(labels[r:r + cols]) for r in range(0, len(labels), cols)] or None,
                        footer=footer)


def caption_footer(plan: Plan) -> str:
    """What every tile of the plan's grid, strip or animation frame shares: the pose(s), truncation, engine."""
    yaw, pitch, radius = plan.poses[0]
    if plan.mode == "orbit":
        ys, ps = [p[0] or 0.0 for p in plan.poses], [p[1] or 0.0 for p in plan.poses]
        where = f"orbit of {plan.frames} frames: yaw {min(ys):g} to {max(ys):g}, pitch {min(ps):g} to {max(ps):g}"
    else:
        where = f"yaw {yaw:g} pitch {pitch:g}"
    where += ("" if radius is None else f" radius {radius:g}") + ("" if plan.fov is None else f" fov {plan.fov:g}")
    what = f"interpolation in {plan.space} from seed {plan.seeds[0]} to seed {plan.seeds[1]}; " \
        if plan.mode == "interp" else ""
    return (f"{what}{where}, truncation {plan.truncation:g}; rendered by nerfgan-run from "
            f"{Path(plan.engine).name or plan.engine}")


def tile_labels(plan: Plan) -> list[str]:
    """The label under each tile: its seed, or for an interpolation strip its position t (ends: their seeds)."""
    if plan.mode != "interp":
        return [f"seed {s}" for s in plan.seeds]
    n = int(plan.steps or 2)
    return [f"seed {plan.seeds[0]}" if i == 0 else f"seed {plan.seeds[1]}" if i == n - 1 else f"t = {i / (n - 1):.2f}"
            for i in range(n)]


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation of latents a, b (D,) at t (N,) -> (N, D) float32; lerp when they are parallel."""
    a64, b64, tt = a.astype(np.float64), b.astype(np.float64), t.astype(np.float64)[:, None]
    cos = float(np.dot(a64, b64) / (np.linalg.norm(a64) * np.linalg.norm(b64)))
    omega = math.acos(min(1.0, max(-1.0, cos)))
    if math.sin(omega) < 1e-6:
        return ((1 - tt) * a64 + tt * b64).astype(np.float32)
    return ((np.sin((1 - tt) * omega) * a64 + np.sin(tt * omega) * b64) / math.sin(omega)).astype(np.float32)


def mp4_encoder_available() -> bool:
    """True when imageio's ffmpeg plugin (imageio-ffmpeg, which ships an ffmpeg binary) can be imported."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def _render(g: Generator, plan: Plan, w: np.ndarray, obj: np.ndarray, pose: np.ndarray) -> Iterator[np.ndarray]:
    """Images (H, W, 3) of style codes w[obj[i]] at poses[pose[i]], ``plan.batch`` per engine call."""
    yaw = np.array([p[0] for p in plan.poses], np.float64)
    pitch = np.array([p[1] for p in plan.poses], np.float64)
    radius = plan.poses[0][2]
    for i in range(0, len(obj), plan.batch):
        o, q = obj[i:i + plan.batch], pose[i:i + plan.batch]
        yield from g.render(w=w[o], yaw=yaw[q], pitch=pitch[q], radius=radius, fov=plan.fov)


def _styles(g: Generator, plan: Plan) -> np.ndarray:
    """Style codes: one per seed, or one per interpolation step."""
    if plan.mode != "interp":
        return g.style(seed=plan.seeds, truncation=plan.truncation, fov=plan.fov)
    t = np.linspace(0.0, 1.0, int(plan.steps or 2), dtype=np.float32)
    a, b = plan.seeds
    if plan.space == "z":
        z = g.latents([a, b])
        return g.style(z=slerp(z[0], z[1], t), truncation=plan.truncation, fov=plan.fov)
    wa, wb = (g.style(seed=s, truncation=plan.truncation, fov=plan.fov) for s in (a, b))
    return ((1 - t)[:, None] * wa + t[:, None] * wb).astype(np.float32)


def execute(g: Generator, plan: Plan) -> list[str]:
    """Render and write the plan's outputs; returns one 'wrote ...' line per file."""
    w = _styles(g, plan)
    lines: list[str] = []
    if plan.mode == "seeds":
        idx = np.arange(len(plan.seeds))
        for path, img in zip(plan.outputs, _render(g, plan, w, idx, np.zeros_like(idx))):
            lines.append(write_png(path, img))
        return lines
    if plan.mode == "orbit":
        n, f = len(w), plan.frames
        obj, pose = np.tile(np.arange(n), f), np.repeat(np.arange(f), n)  # frame-major: frame k is obj 0..n-1
        images = _render(g, plan, w, obj, pose)
        labels, footer = tile_labels(plan), caption_footer(plan)  # the same on every frame: one frame size
        frames = [tile([next(images) for _ in range(n)], plan.cols or 1, labels, footer) for _ in range(f)]
        return [write_animation(plan.outputs[0], frames, plan.fps or 24.0)]
    idx = np.arange(len(w))
    images_list = list(_render(g, plan, w, idx, np.zeros_like(idx)))
    if plan.mode == "interp" and plan.frames > 1:
        return [write_animation(plan.outputs[0], images_list, plan.fps or 24.0)]
    return [write_png(plan.outputs[0], tile(images_list, plan.cols or 1, tile_labels(plan), caption_footer(plan)))]


def _size(path: str) -> str:
    return f"{Path(path).stat().st_size / 1e3:.1f} kB"


def write_png(path: str, image: np.ndarray) -> str:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return f"wrote {path} ({image.shape[1]}x{image.shape[0]}, {_size(path)})"


def write_animation(path: str, frames: list[np.ndarray], fps: float) -> str:
    """A looping GIF (PIL) or an H.264 MP4 (imageio-ffmpeg), written atomically."""
    with atomic_path(path) as tmp:
        if path.lower().endswith(".mp4"):
            ffmpeg: Any = importlib.import_module("imageio_ffmpeg")
            h, w = frames[0].shape[:2]
            writer = ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         macro_block_size=2, output_params=["-f", "mp4"])  # tmp has no .mp4 suffix
            try:
                writer.send(None)
                for frame in frames:
                    writer.send(np.ascontiguousarray(frame))
            finally:
                writer.close()
        else:
            images = [Image.fromarray(f) for f in frames]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                           duration=frame_ms(fps))
    h, w_ = frames[0].shape[:2]
    return f"wrote {path} ({w_}x{h}, {len(frames)} frames at {fps:g} fps, {_size(path)})"


# --- the command ---------------------------------------------------------------------------------------------
@click.command("nerfgan-run")
@version_option("nerfgan-run")
@click.option("--engine", required=True, help="An export folder (manifest.json), a student .onnx (mapping.onnx "
              "beside it), a TensorRT student.plan, an AOTInductor student.pt2 (nerfgan-export --aoti; runs "
              "PyTorch), or a student .safetensors (runs PyTorch). A .pt2 package and a TensorRT plan are native code (a "
              "shared library, a GPU engine) that runs as this process: load only files you exported; ONNX and "
              ".safetensors files hold data only.")
@click.option("--precision", type=_Choice("fp32", "fp16", "int8"), default=None, metavar="[fp32|fp16|int8]",
              help="Which student of an export folder (default fp32).")
@click.option("--device", type=_Choice("auto", "cpu", "cuda"), default="auto", show_default=True,
              metavar="[auto|cpu|cuda]", help="Where to run.")
@click.option("--threads", type=_Number(int, 1), default=None,
              help="ONNX Runtime (or OpenVINO) threads (default: all cores).")
@click.option("--backend", type=_Choice("onnxruntime", "openvino", "pt2"), default=None,
              metavar="[onnxruntime|openvino|pt2]",
              help="What runs an export folder's student: ONNX Runtime (default), OpenVINO's CPU plugin (pip install "
                   "'nerfgan[openvino]'), or pt2: its AOTInductor package student.pt2 (nerfgan-export --aoti) in "
                   "PyTorch, on the device it was compiled for.")
@click.option("--openvino-precision", type=_Choice("fp32", "bf16"), default=None, metavar="[fp32|bf16]",
              help="With --backend openvino: the student's inference precision (default fp32; bf16 is refused "
                   "below 30 dB from ONNX Runtime on a probe batch).")
@click.option("--pose", "pose_text", default="0,0", show_default=True,
              help="YAW,PITCH[,RADIUS]: degrees from the frontal view (+yaw: the subject's left, +pitch: up); "
                   "radius defaults to the engine's. With --orbit: the centre of the orbit.")
@click.option("--seed", type=_Number(int, 0, 2**32 - 1), default=None, help="Latent seed (default 0).")
@click.option("--seeds", "seeds_text", default=None,
              help=f"A-B (inclusive) or A,B,C; at most {MAX_SEEDS}. Without --grid, -o out.png writes "
                   "out-<seed>.png per seed.")
@click.option("--grid", is_flag=True, help="All seeds in one PNG grid, ceil(sqrt(n)) columns unless --cols.")
@click.option("--cols", type=_Number(int, 1), default=None, help="Grid columns (--grid, --orbit with --seeds, "
              "--interp strip).")
@click.option("--truncation", type=_Number(float, 0.0, 1.0), default=0.7, show_default=True, help="Truncation psi.")
@click.option("--fov", type=_Number(float, 1.0, 120.0), default=None,
              help="Diagonal field of view in degrees (default: the engine's, about 18.8).")
@click.option("--orbit", type=_Number(int, 1, MAX_FRAMES), default=None,
              help="N frames of one closed orbit around --pose, written as .gif (or .mp4 with imageio-ffmpeg); "
                   f"with --seeds each frame is a grid (frames x seeds at most {MAX_IMAGES}).")
@click.option("--yaw-range", type=_Number(float, 0.0), default=None, help="--orbit yaw amplitude, degrees [20].")
@click.option("--pitch-range", type=_Number(float, 0.0), default=None, help="--orbit pitch amplitude, degrees [14].")
@click.option("--fps", type=_Number(float, *ANIMATION_FPS), default=None,
              help="Frames per second of a .gif/.mp4 [24].")
@click.option("--interp", default=None, help="A,B: interpolate from seed A to seed B in --steps images.")
@click.option("--steps", type=_Number(int, 2, MAX_FRAMES), default=None, help="--interp images [8].")
@click.option("--space", type=_Choice("w", "z"), default=None, metavar="[w|z]",
              help="--interp: lerp in w (default) or slerp in z.")
@click.option("--mix", default=None, help="A,B: style mixing, coarse layers from seed A, fine from seed B (a student "
              ".safetensors engine: its per-layer codes are inside an exported graph).")
@click.option("--mix-from", type=_Number(int, 1), default=None,
              help="--mix: the first of the student's synthesis layers taken from B [half of them].")
@click.option("--teacher", "teacher_path", default=None,
              help="--mix: also mix in this teacher (TEACHER.safetensors or 'tiny'), a row below the student's.")
@click.option("--batch", type=_Number(int, 1), default=8, show_default=True, help="Images per engine call.")
@click.option("-o", "--out", "--output", "output", cls=AliasOption, hidden_names=("--output",), required=True,
              help="File to write: .png (image, grid, strip), .gif or .mp4.")
@click.option("--dry-run", is_flag=True, help="Print the resolved plan as JSON; load and render nothing.")
def run(engine: str, precision: str | None, device: str, threads: int | None, backend: str | None,
        openvino_precision: str | None, pose_text: str, seed: int | None,
        seeds_text: str | None, grid: bool, cols: int | None, truncation: float, fov: float | None, orbit: int | None,
        yaw_range: float | None, pitch_range: float | None, fps: float | None, interp: str | None, steps: int | None,
        space: str | None, mix: str | None, mix_from: int | None, teacher_path: str | None, batch: int, output: str,
        dry_run: bool) -> None:
    """Render images, seed grids, orbit animations or latent interpolations from an exported student.

    \b
    Examples:
      nerfgan-run --engine qs/export --seed 7 --pose 20,-5 -o view.png
      nerfgan-run --engine qs/export --seeds 0-3 -o view.png       # view-0.png ... view-3.png
      nerfgan-run --engine qs/export --seeds 0-15 --grid -o grid.png
      nerfgan-run --engine qs/export --seed 7 --orbit 48 -o orbit.gif
      nerfgan-run --engine qs/export --interp 3,5 --steps 8 -o strip.png
      nerfgan-run --engine qs/export --precision int8 --seed 7 -o view.png --dry-run
      nerfgan-run --engine qs/export --backend openvino --seed 7 -o view.png
      nerfgan-run --engine qs/export --backend pt2 --seed 7 -o view.png
      nerfgan-run --engine qs/run/student.safetensors --mix 3,5 --mix-from 4 --teacher qs/teacher.safetensors -o mix.png
    """
    if mix is not None or mix_from is not None or teacher_path is not None:
        _run_mix(engine, mix, mix_from, teacher_path, pose_text, truncation, output, dry_run,
                 others={"--seed": seed, "--seeds": seeds_text, "--grid": grid or None, "--orbit": orbit,
                         "--interp": interp, "--precision": precision, "--backend": backend})
        return
    plan = make_plan(engine, precision, device, threads, pose_text, seed, seeds_text, truncation, fov, output, grid,
                     cols, orbit, yaw_range, pitch_range, fps, interp, steps, space, batch, backend, openvino_precision)
    check_engine(engine, precision)
    if dry_run:
        click.echo(plan.to_json())
        return
    check_outputs(plan)
    with load(engine, precision=precision, device=device, threads=threads, backend=backend,
              openvino_precision=openvino_precision) as g:
        check_memory(g, plan)
        for line in execute(g, plan):
            click.echo(line)


def _run_mix(engine: str, mix: str | None, mix_from: int | None, teacher_path: str | None, pose_text: str,
             truncation: float, output: str, dry_run: bool, others: dict[str, Any]) -> None:
    """nerfgan-run --mix: a captioned PNG of seeds A, B and their mix, the student's row and the teacher's."""
    if mix is None:
        raise UsageError("--mix-from and --teacher work with --mix A,B only")
    given = [k for k, v in others.items() if v is not None]
    if given:
        raise UsageError(f"--mix A,B names its seeds and renders the PyTorch student: drop {', '.join(given)}")
    ends = parse_seeds(mix, "--mix")
    if len(ends) != 2 or ends[0] == ends[1]:
        raise UsageError(f"--mix: expected two different seeds A,B, got {mix!r}")
    if not engine.endswith(".safetensors"):
        raise UsageError(f"--engine {engine}: --mix needs the student's .safetensors (an exported graph takes w alone; "
                         "the per-layer codes it mixes are inside it)")
    if not output.lower().endswith(".png"):
        raise UsageError(f"-o {output}: --mix writes a .png")
    yaw, pitch, _ = camera.parse_pose(pose_text)
    if dry_run:
        click.echo(json.dumps({"mode": "mix", "engine": engine, "seeds": ends, "mix_from": mix_from,
                               "teacher": teacher_path, "yaw": yaw, "pitch": pitch, "truncation": truncation}))
        return
    check_writable(output, "image")
    from nerfgan.io import save_png
    from nerfgan.student.mixing import mix_grid

    grid, k = mix_grid(engine, (ends[0], ends[1]), mix_from, yaw, pitch, truncation, teacher_path)
    save_png(output, grid)
    click.echo(f"wrote {output}: seeds {ends[0]} and {ends[1]} mixed from the student's layer {k}"
               + (f", with the teacher {teacher_path}" if teacher_path else ""))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``nerfgan-run``."""
    run_standalone(run, "nerfgan-run", argv)


if __name__ == "__main__":
    main()
