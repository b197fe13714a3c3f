"""FID and KID of an engine's samples, computed by torch-fidelity (the ``[metrics]`` extra).

torch-fidelity does the measuring: its TF-ported Inception-v3 (``FeatureExtractorInceptionV3``, pool features
'2048') and its FID / KID code (``fid_features_to_statistics``, ``fid_statistics_to_metric``,
``kid_features_to_metric``). nerfgan only feeds it images (uint8 (B, 3, H, W)) and the Inception weights:

* Weights come from the user's file (``--inception-weights``) or torch hub's cache, where torch-fidelity itself
  keeps them (``<hub dir>/checkpoints/weights-inception-2015-12-05-6726825d.pth``). Nothing is downloaded. The file
  is read without torch.load: a torch zip-format state dict through a restricted unpickler (the storage machinery
  of nerfgan.teacher.upstream_storage: no global but the tensor-rebuild functions and storage types, every size
  checked against the file), or a .safetensors file through nerfgan's safetensors reader. Keys, shapes and dtypes
  are checked against the extractor's own before it is used.
* The checked tensors reach the extractor in memory: torch-fidelity's constructor loads its weights through
  ``load_state_dict_from_url`` when given no path; while it is built, that name in its module answers with the
  checked tensors (and is then restored). So no file is unpickled and no temporary file is written.
* torch-fidelity imports torchvision at import time for parts FID/KID never use (CIFAR/STL datasets, VGG/LPIPS,
  CLIP/DINOv2 normalisation). Where torchvision cannot be imported (missing, or a build for another torch: a CUDA
  torchvision beside a CPU torch fails with "operator torchvision::nms does not exist"), torch-fidelity is
  imported with a stand-in for those names (:func:`import_torch_fidelity`); the stand-in is removed from
  sys.modules straight after, so no other code sees it.
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nerfgan.errors import CheckpointError, InputFileError, MissingDependencyError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's name (and in torch hub's cache)
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
EXTRACTOR_NAME = "inception-v3-compat"  # torch-fidelity's registered name of the extractor
FEATURE_LAYER = "2048"  # pool features: torch-fidelity's default layer for FID and KID
MAX_WEIGHTS_FILE_BYTES = 512 << 20  # the real file is 91 MB
MAX_PICKLE_BYTES = 4 << 20  # data.pkl of a state dict: names and tensor records only (the real one: 40 kB)
KID_SUBSETS = 100  # torch-fidelity's defaults, written down in the report
KID_SUBSET_SIZE = 1000  # capped at n
KID_DEGREE, KID_COEF0, KID_RNG_SEED = 3, 1.0, 2020
EXTRA_HINT = "pip install 'nerfgan[metrics]'"


# --- importing torch-fidelity --------------------------------------------------------------------------------
class _Unavailable:
    """What the torchvision stand-in hands out for every name: a class that refuses to be used."""

    _what = "torchvision"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise MissingDependencyError(f"{self._what} is not available (torchvision could not be imported); "
                                     "nerfgan's FID/KID do not use it")


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (_Unavailable,), {"_what": f"{self.__name__}.{name}"})


_STAND_IN = ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.transforms.functional",
             "torchvision.models", "torchvision.ops", "torchvision.io", "torchvision.utils")


def _torchvision_importable() -> bool:
    try:
        importlib.import_module("torchvision")
    except Exception:  # missing, or a build for another torch (RuntimeError: operator torchvision::nms ...)
        return False
    return True


def _forget(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]


def import_torch_fidelity() -> Any:
    """The torch_fidelity module; MissingDependencyError naming the extra when it is not installed.

    When torchvision cannot be imported, torch-fidelity is imported with a stand-in for the torchvision modules it
    names at import time (every name a class that refuses to be used), removed from sys.modules afterwards.
    """
    try:
        import torch_fidelity  # type: ignore[import-not-found, import-untyped, unused-ignore]

        return torch_fidelity
    except ModuleNotFoundError as e:
        if e.name == "torch_fidelity":
            raise MissingDependencyError(f"nerfgan fid needs the metrics extra: {EXTRA_HINT}") from None
        first: BaseException = e
    except Exception as e:
        first = e
    if _torchvision_importable():
        raise MissingDependencyError(f"torch-fidelity cannot be imported ({type(first).__name__}: "
                                     f"{str(first)[:200]}); reinstall it: {EXTRA_HINT}") from None
    _forget("torch_fidelity")
    saved = {m: sys.modules[m] for m in list(sys.modules) if m == "torchvision" or m.startswith("torchvision.")}
    _forget("torchvision")  # what a failed import of torchvision left behind
    stand_in = {name: _StandInModule(name) for name in _STAND_IN}
    for name, module in stand_in.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(stand_in[parent], child, module)
    sys.modules.update(stand_in)
    try:
        import torch_fidelity  # type: ignore[import-not-found, import-untyped, unused-ignore]

        return torch_fidelity
    except Exception as e:
        _forget("torch_fidelity")
        raise MissingDependencyError(f"torch-fidelity cannot be imported without torchvision ({type(e).__name__}: "
                                     f"{str(e)[:200]}); install a torchvision built for this torch") from None
    finally:
        for name, module in stand_in.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
        sys.modules.update(saved)


# --- reading the Inception weights ---------------------------------------------------------------------------
def hub_weights_path() -> Path:
    """Where torch-fidelity keeps its downloaded Inception weights: torch hub's checkpoints folder."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def resolve_weights(path: str | None) -> Path:
    """--inception-weights, or the file in torch hub's cache; InputFileError saying where to get it otherwise."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputFileError(f"--inception-weights {p}: {'not a regular file' if p.exists() else 'not found'}")
        return p
    cached = hub_weights_path()
    if cached.is_file():
        return cached
    raise InputFileError(f"no Inception weights: nerfgan fid downloads nothing; get {INCEPTION_URL} and pass "
                         f"--inception-weights FILE (or put it at {cached})")


class _StateDict(OrderedDict):  # type: ignore[type-arg]
    """collections.OrderedDict inside the pickle; its BUILD may only set torch's ``_metadata`` (dropped)."""

    def __setstate__(self, state: object) -> None:
        from nerfgan.teacher.upstream_storage import Rejected

        if not isinstance(state, dict) or set(state) - {"_metadata"}:
            raise Rejected("the state dict's pickle sets attributes other than _metadata")


def _zip_state_dict(path: Path, size: int) -> dict[str, Any]:
    """A torch zip-format (torch.save, torch >= 1.6) state dict, read without torch.load."""
    import torch

    from nerfgan.teacher import upstream_storage as us

    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        pkl = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise us.Rejected("not a torch zip-format state dict (no single <name>/data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]

        def member(name: str, limit: int) -> bytes:
            info = infos.get(prefix + name)
            if info is None:
                raise us.Rejected(f"has no {us.quote(prefix + name)}")
            if (info.file_size > limit or info.compress_type != zipfile.ZIP_STORED
                    or info.header_offset + info.compress_size > size):
                raise us.Rejected(f"{us.quote(prefix + name)} is not a stored member of at most {limit:,} bytes")
            return zf.read(info)

        if prefix + "byteorder" in infos and member("byteorder", 16) != b"little":
            raise us.Rejected("tensors are not little-endian")
        budget = us.Budget(size)
        storages: dict[str, us._Storage] = {}

        class Unpickler(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                allowed: dict[tuple[str, str], Any] = {
                    ("collections", "OrderedDict"): _StateDict,
                    ("torch._utils", "_rebuild_tensor_v2"): us.rebuild_tensor_v2,
                    ("torch._utils", "_rebuild_parameter"): us.rebuild_parameter,
                    **us._STORAGE_TYPES}
                try:
                    return allowed[(module, name)]
                except (KeyError, TypeError):
                    raise us.Rejected(f"forbidden global '{us.quote(module)}.{us.quote(name)}'") from None

            def persistent_load(self, pid: object) -> us._Storage:
                # ('storage', storage type, key, location, element count)
                if (type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage"
                        or not isinstance(pid[1], us._StorageType) or type(pid[2]) is not str
                        or not pid[2].isdigit() or type(pid[3]) is not str):
                    raise us.Rejected("malformed storage reference")
                key, dtype = pid[2], pid[1].dtype
                numel = us.checked_int(pid[4], "storage size", size // max(dtype.itemsize, 1))
                if key not in storages:
                    raw = member(f"data/{key}", size)
                    if len(raw) != numel * dtype.itemsize:
                        raise us.Rejected(f"storage {key} holds {len(raw):,} bytes, its record says "
                                          f"{numel * dtype.itemsize:,}")
                    budget.tensors(len(raw), f"storage {key}")
                    storages[key] = us._Storage(torch.from_numpy(np.frombuffer(raw, dtype).copy()))
                return storages[key]

        data = member("data.pkl", MAX_PICKLE_BYTES)
        obj, end = us.load_one(Unpickler, data, 0, us.FORBIDDEN_OPS - {"BINPERSID"})
        if end != len(data) or not isinstance(obj, dict):
            raise us.Rejected("data.pkl is not a single state dict")
        return dict(obj)


def read_inception_weights(path: str | os.PathLike[str]) -> dict[str, Any]:
    """name -> tensor of an Inception weights file (.pth torch zip format, or .safetensors); CheckpointError
    naming the file for anything else. Nothing in the file is executed."""
    from nerfgan.teacher import upstream_storage as us

    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise InputFileError(f"{p}: cannot read the Inception weights ({e.strerror})") from None
    if size > MAX_WEIGHTS_FILE_BYTES:
        raise CheckpointError(f"{p}: {size:,} bytes, over {MAX_WEIGHTS_FILE_BYTES >> 20} MiB "
                              "(MAX_WEIGHTS_FILE_BYTES) for Inception weights")
    if p.suffix.lower() == ".safetensors":
        from nerfgan.teacher.checkpoint import read_safetensors

        return dict(read_safetensors(p, "Inception weights")[0])
    try:
        if not zipfile.is_zipfile(p):
            with open(p, "rb") as f:
                damaged = f.read(4) == b"PK\x03\x04"
            raise us.Rejected("a damaged or truncated zip file (no zip directory at its end)" if damaged else
                              "not a torch zip-format file (a legacy torch.save file? re-save it with torch >= 1.6 "
                              "or convert it to .safetensors)")
        state = _zip_state_dict(p, size)
    except us.Rejected as e:  # the shared pre-scan words its opcode message for snapshots
        raise CheckpointError(f"{p}: not usable Inception weights: "
                              f"{str(e).removeprefix('not an EG3D snapshot: ')}") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{p}: not usable Inception weights: unreadable ({str(e)[:160]})") from None
    return state


def check_inception_state(expected: Mapping[str, Any], got: Mapping[str, Any], source: str) -> None:
    """Same keys, shapes and dtype kinds as the extractor's own state dict, and finite values; CheckpointError."""
    import torch

    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: not torch-fidelity's Inception-v3 weights: {len(missing)} missing keys "
                              f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}")
    for k, ref in expected.items():
        t = got[k]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(ref.shape) \
                or t.dtype.is_floating_point != ref.dtype.is_floating_point:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise CheckpointError(f"{source}: tensor {k} is {shape} "
                                  f"{getattr(t, 'dtype', '')}, expected {tuple(ref.shape)} {ref.dtype}")
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{source}: tensor {k} has non-finite values")


def build_inception(path: str | os.PathLike[str], device: str = "cpu") -> Any:
    """torch-fidelity's FeatureExtractorInceptionV3 ('2048' features) holding the checked weights of ``path``."""
    state = read_inception_weights(path)
    tf = import_torch_fidelity()
    mod: Any = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")

    source = str(path)

    class CheckedInception(mod.FeatureExtractorInceptionV3):  # type: ignore[misc, name-defined, unused-ignore]
        def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
            own = self.state_dict()
            check_inception_state(own, state_dict, source)
            return super().load_state_dict({k: state_dict[k].to(own[k].dtype) for k in own}, strict=True)

    calls: list[str] = []

    def from_memory(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(url)
        return state

    original = mod.load_state_dict_from_url
    mod.load_state_dict_from_url = from_memory
    try:
        extractor = CheckedInception(EXTRACTOR_NAME, [FEATURE_LAYER], feature_extractor_weights_path=None)
    finally:
        mod.load_state_dict_from_url = original
    if calls != [mod.URL_INCEPTION_V3]:  # a torch-fidelity that loads its weights another way: a bug here
        raise RuntimeError(f"torch-fidelity {tf.__version__} did not load its weights through "
                           f"load_state_dict_from_url ({calls})")
    return extractor.to(device).eval()


# --- features and metrics ------------------------------------------------------------------------------------
def inception_features(extractor: Any, images: np.ndarray, batch: int = 16) -> Any:
    """Pool features (N, 2048) float32 (torch, CPU) of uint8 images (N, H, W, 3)."""
    import torch

    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    device = next(extractor.parameters()).device
    parts = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch].transpose(0, 3, 1, 2))).to(device)
            parts.append(extractor(x)[0].float().cpu())
    return torch.cat(parts)


def kid_subset_size(n: int) -> int:
    """torch-fidelity's KID subset size (1000), capped at the number of samples."""
    return min(KID_SUBSET_SIZE, n)


def fid_kid(features_a: Any, features_b: Any) -> dict[str, float]:
    """FID and KID (mean, std over KID_SUBSETS subsets) between two feature sets, by torch-fidelity's functions."""
    tf = import_torch_fidelity()
    metric_fid: Any = importlib.import_module("torch_fidelity.metric_fid")
    metric_kid: Any = importlib.import_module("torch_fidelity.metric_kid")

    n = min(len(features_a), len(features_b))
    fid = metric_fid.fid_statistics_to_metric(metric_fid.fid_features_to_statistics(features_a),
                                              metric_fid.fid_features_to_statistics(features_b), verbose=False)
    kid = metric_kid.kid_features_to_metric(features_a, features_b, kid_subsets=KID_SUBSETS,
                                            kid_subset_size=kid_subset_size(n), kid_kernel="poly",
                                            kid_kernel_poly_degree=KID_DEGREE, kid_kernel_poly_gamma=None,
                                            kid_kernel_poly_coef0=KID_COEF0, rng_seed=KID_RNG_SEED, verbose=False)
    out = {"fid": float(fid[tf.KEY_METRIC_FID]), "kid_mean": float(kid[tf.KEY_METRIC_KID_MEAN]),
           "kid_std": float(kid[tf.KEY_METRIC_KID_STD])}
    if not all(math.isfinite(v) for v in out.values()):
        raise RuntimeError(f"FID/KID not finite: {out}")
    return out


def metric_settings(n: int) -> dict[str, Any]:
    tf = import_torch_fidelity()
    return {"torch_fidelity": tf.__version__, "feature_extractor": EXTRACTOR_NAME, "feature_layer": FEATURE_LAYER,
            "kid_subsets": KID_SUBSETS, "kid_subset_size": kid_subset_size(n), "kid_kernel": "poly",
            "kid_degree": KID_DEGREE, "kid_coef0": KID_COEF0, "kid_gamma": "1 / 2048", "kid_rng_seed": KID_RNG_SEED}
