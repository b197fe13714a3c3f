"""Student files and training state: safetensors + JSON, never pickle.

* ``student.safetensors``: the student's weights (teacher mapping, pose mapping, synthesis,
  super-resolution) with metadata ``format``, ``config`` (StudentConfig JSON, which embeds the
  teacher's config and so its camera defaults), ``camera`` (radius, pivot, focal) and the
  nerfgan version. It is all ``nerfgan-export --student`` needs.
* ``train_state.safetensors``: everything a killed run needs to continue exactly: generator, its
  EMA, discriminator, both optimizers (tensors flattened under ``opt_g/`` and ``opt_d/``, the
  rest as JSON), the step and elapsed time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import nerfgan
from nerfgan import camera
from nerfgan.errors import CheckpointError, ConfigError
from nerfgan.student.config import StudentConfig
from nerfgan.student.generator import StudentGenerator
from nerfgan.teacher.checkpoint import (
    check_shapes, check_state_dict, expected_shapes, read_safetensors, read_safetensors_header, write_safetensors,
)

FORMAT = "nerfgan-student"
STATE_FORMAT = "nerfgan-train-state"


def save_student(model: StudentGenerator, path: str | os.PathLike[str], extra: Mapping[str, str] | None = None) -> Path:
    r = model.config.teacher.rendering
    meta = {"format": FORMAT, "nerfgan_version": nerfgan.__version__, "config": model.config.to_json(),
            "camera": json.dumps({"radius": r.avg_camera_radius, "pivot": list(r.avg_camera_pivot),
                                  "focal": camera.DEFAULT_FOCAL})}
    meta.update(extra or {})
    return write_safetensors(path, {k: v.float() for k, v in model.state_dict().items()}, meta)


def load_student(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> StudentGenerator:
    """Load a student written by :func:`save_student`.

    Bounds before allocation: the config (and the teacher config in it) is checked against
    nerfgan.teacher.limits, and the tensors listed in the file's header against a student built on the meta
    device, before any tensor is read or the real module is built.
    """
    shapes, meta = read_safetensors_header(path, "student checkpoint")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a nerfgan student file (metadata format={meta.get('format')!r})")
    try:
        config = StudentConfig.from_json(meta["config"], source=str(path))
    except KeyError:
        raise CheckpointError(f"{path}: student config missing (metadata has no 'config')") from None
    except ConfigError as e:  # it names the file, the field and the limit
        raise CheckpointError(str(e)) from None
    check_shapes(expected_shapes(lambda: StudentGenerator(config)), shapes, str(path))
    tensors, _ = read_safetensors(path, "student checkpoint")
    model = StudentGenerator(config)
    check_state_dict(model, tensors, str(path))
    model.load_state_dict(tensors)
    return model.eval().requires_grad_(False).to(device)


def read_student_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    _, meta = read_safetensors(path, "student checkpoint", with_tensors=False)
    return meta


# --- training state ------------------------------------------------------------------------------
def _flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}/{idx}/{k}"] = v
            else:
                scalars[f"{idx}/{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], meta: dict[str, Any], prefix: str) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "/"):
            idx, name = key[len(prefix) + 1:].split("/", 1)
            state.setdefault(int(idx), {})[name] = v
    for key, v in meta["scalars"].items():
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_train_state(path: str | os.PathLike[str], modules: Mapping[str, torch.nn.Module],
                     optimizers: Mapping[str, torch.optim.Optimizer], info: Mapping[str, Any]) -> Path:
    """Modules and optimizers by name (e.g. 'G', 'G_ema', 'D'; 'opt_g', 'opt_d') plus JSON-able ``info``."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update({f"{name}/{k}": v for k, v in module.state_dict().items()})
    opt_meta = {}
    for name, opt in optimizers.items():
        t, m = _flatten_optimizer(opt, name)
        tensors.update(t)
        opt_meta[name] = m
    meta = {"format": STATE_FORMAT, "nerfgan_version": nerfgan.__version__, "info": json.dumps(dict(info)),
            "optimizers": json.dumps(opt_meta)}
    return write_safetensors(path, tensors, meta)


def load_train_state(path: str | os.PathLike[str], modules: Mapping[str, torch.nn.Module],
                     optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """Restore into the given modules and optimizers; returns ``info`` (with an int ``step``).

    Anything malformed (metadata missing or of the wrong type, optimizer state that does not fit) is a
    CheckpointError naming the file.
    """
    tensors, meta = read_safetensors(path, "training state")
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a nerfgan training state (metadata format={meta.get('format')!r})")
    for name, module in modules.items():
        sub = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + "/")}
        check_state_dict(module, sub, f"{path} [{name}]")
        module.load_state_dict(sub)
    try:
        opt_meta = json.loads(meta["optimizers"])
        for name, opt in optimizers.items():
            if name not in opt_meta:
                raise CheckpointError(f"{path}: no state for optimizer {name}")
            opt.load_state_dict(_unflatten_optimizer(tensors, opt_meta[name], name))
        info: dict[str, Any] = json.loads(meta["info"])
        if not isinstance(info, dict) or isinstance(info.get("step"), bool) or not isinstance(info.get("step"), int) \
                or info["step"] < 0:
            raise ValueError(f"info.step must be a non-negative integer, got {info.get('step') if isinstance(info, dict) else info!r}")
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{path}: malformed training state ({type(e).__name__}: {str(e)[:200]})") from None
    return info
