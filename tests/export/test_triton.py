"""The Triton model repository: layout, configs parsed by Triton's own protobuf, ensemble wiring, atomicity."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from nerfgan.errors import ConfigError, InputFileError, OutputError, UsageError
from nerfgan.export import triton
from nerfgan.export.triton import (
    TritonNames,
    TritonServing,
    triton_dims,
    write_triton_repository,
)
from nerfgan.runtime.spec import ModelSpec, TensorSpec, mapping_spec, student_spec

NAMES = TritonNames()
MAPPING = mapping_spec(z_dim=8, w_dim=8)
STUDENT = student_spec(8, 16, 32)


@pytest.fixture
def pb() -> Any:
    """Triton's ModelConfig protobuf module (skips where tritonclient[grpc] is not installed)."""
    return pytest.importorskip("tritonclient.grpc.model_config_pb2")


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """Dummy model files in tmp_path/in (any bytes will do: the repository only copies them)."""
    d = tmp_path / "in"
    d.mkdir()
    files = {"mapping": d / "mapping.onnx", "student": d / "student.onnx", "plan": d / "student.plan"}
    for kind, path in files.items():
        path.write_bytes(f"dummy {kind} bytes".encode())
    return files


def write(repo: Path, inputs: dict[str, Path], backend: str = "onnxruntime", **kw: Any) -> Path:
    kw.setdefault("max_batch_size", 8)
    student = inputs["plan"] if backend == "tensorrt" else inputs["student"]
    return write_triton_repository(repo, mapping_file=kw.pop("mapping_file", inputs["mapping"]),
                                   student_file=kw.pop("student_file", student),
                                   mapping_spec=kw.pop("mapping_spec", MAPPING),
                                   student_spec=kw.pop("student_spec", STUDENT), student_backend=backend, **kw)


def parse(pb: Any, path: Path) -> Any:
    text_format = pytest.importorskip("google.protobuf.text_format")
    return text_format.Parse(path.read_text(), pb.ModelConfig())


def configs(pb: Any, repo: Path) -> dict[str, Any]:
    return {name: parse(pb, repo / name / "config.pbtxt") for name in (NAMES.mapping, NAMES.student, NAMES.ensemble)}


def signature(t: Any) -> tuple[int, list[int], list[int] | None]:
    """(data_type, dims, reshape) of a parsed ModelInput/ModelOutput."""
    return t.data_type, list(t.dims), list(t.reshape.shape) if t.HasField("reshape") else None


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --- layout ---------------------------------------------------------------------------------------------------------


def test_layout_and_copied_files(tmp_path: Path, inputs: dict[str, Path]) -> None:
    repo = write(tmp_path / "repo", inputs)
    assert repo == tmp_path / "repo"
    assert sorted(p.name for p in repo.iterdir()) == sorted([".nerfgan-owner.json", "README.md", NAMES.mapping,
                                                              NAMES.student, NAMES.ensemble])
    assert (repo / NAMES.mapping / "1" / "model.onnx").read_bytes() == inputs["mapping"].read_bytes()
    assert (repo / NAMES.student / "1" / "model.onnx").read_bytes() == inputs["student"].read_bytes()
    assert not (repo / NAMES.student / "1" / "model.plan").exists()
    assert (repo / NAMES.ensemble / "1").is_dir() and not any((repo / NAMES.ensemble / "1").iterdir())
    for name in (NAMES.mapping, NAMES.student, NAMES.ensemble):
        assert (repo / name / "config.pbtxt").is_file()
    assert leftovers(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert repo.stat().st_mode & 0o777 == 0o777 & ~umask  # the usual mode, not mkdtemp's private 0700


def test_tensorrt_backend_writes_a_plan(tmp_path: Path, inputs: dict[str, Path], pb: Any) -> None:
    repo = write(tmp_path / "repo", inputs, backend="tensorrt", plan_max_batch=8, instance_kind="KIND_GPU")
    student_dir = repo / NAMES.student / "1"
    assert sorted(p.name for p in student_dir.iterdir()) == ["model.plan"]
    assert (student_dir / "model.plan").read_bytes() == inputs["plan"].read_bytes()
    cfg = configs(pb, repo)
    assert cfg[NAMES.student].platform == "tensorrt_plan"
    assert cfg[NAMES.mapping].platform == "onnxruntime_onnx"  # the mapping always stays ONNX
    assert "tensorrt_plan" in (repo / "README.md").read_text()


# --- composing model configs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["mapping", "student"])
def test_composing_config(tmp_path: Path, inputs: dict[str, Path], pb: Any, which: str) -> None:
    repo = write(tmp_path / "repo", inputs, max_batch_size=16, instance_kind="KIND_GPU", instance_count=2,
                 preferred_batch_sizes=[4, 16], max_queue_delay_us=250)
    name, spec = (NAMES.mapping, MAPPING) if which == "mapping" else (NAMES.student, STUDENT)
    cfg = parse(pb, repo / name / "config.pbtxt")
    assert cfg.name == name == (repo / name).name
    assert cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 16
    assert [t.name for t in cfg.input] == spec.input_names
    assert [t.name for t in cfg.output] == spec.output_names
    for parsed, declared in zip(list(cfg.input) + list(cfg.output), spec.inputs + spec.outputs):
        assert parsed.data_type == pb.TYPE_FP32
        expected = [int(d) for d in declared.shape[1:]] or [1]  # batch axis left out
        assert list(parsed.dims) == expected, declared.name
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 16]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert len(cfg.instance_group) == 1
    assert cfg.instance_group[0].count == 2
    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU


def test_concrete_dims(tmp_path: Path, inputs: dict[str, Path], pb: Any) -> None:
    cfg = configs(pb, write(tmp_path / "repo", inputs))
    m, s = cfg[NAMES.mapping], cfg[NAMES.student]
    assert {t.name: list(t.dims) for t in m.input} == {"z": [8], "c_cond": [25], "psi": [1]}
    assert {t.name: list(t.dims) for t in m.output} == {"w": [8]}
    assert {t.name: list(t.dims) for t in s.input} == {"w": [8], "c": [25]}
    assert {t.name: list(t.dims) for t in s.output} == {"image": [3, 32, 32], "image_raw": [3, 16, 16]}


def test_psi_is_reshaped_to_the_bare_batch_axis(tmp_path: Path, inputs: dict[str, Path], pb: Any) -> None:
    cfg = configs(pb, write(tmp_path / "repo", inputs))
    mapping_psi, ensemble_psi = (next(t for t in cfg[m].input if t.name == "psi") for m in (NAMES.mapping, NAMES.ensemble))
    assert list(mapping_psi.dims) == list(ensemble_psi.dims) == [1]  # clients send (B, 1)
    assert mapping_psi.HasField("reshape") and list(mapping_psi.reshape.shape) == []  # the mapping sees (B,)
    assert [t.name for t in cfg[NAMES.mapping].input if t.HasField("reshape")] == ["psi"]
    # The ensemble input carries no reshape: a real Triton (2.51) refuses "ensemble tensor psi: inconsistent shape:
    # [-1] is inferred from model nerfgan while [-1,1] is inferred from model nerfgan_mapping" otherwise.
    ensemble = cfg[NAMES.ensemble]
    assert not [t.name for t in list(ensemble.input) + list(ensemble.output) if t.HasField("reshape")]


def test_defaults_and_no_dynamic_batching(tmp_path: Path, inputs: dict[str, Path], pb: Any) -> None:
    cfg = configs(pb, write(tmp_path / "a", inputs))
    for model in (NAMES.mapping, NAMES.student):
        assert cfg[model].HasField("dynamic_batching")
        assert list(cfg[model].dynamic_batching.preferred_batch_size) == []
        assert cfg[model].dynamic_batching.max_queue_delay_microseconds == 100
        assert cfg[model].instance_group[0].kind == pb.ModelInstanceGroup.KIND_AUTO
        assert cfg[model].instance_group[0].count == 1
    off = configs(pb, write(tmp_path / "b", inputs, dynamic_batching=False))
    for model in (NAMES.mapping, NAMES.student):
        assert not off[model].HasField("dynamic_batching")
        assert off[model].max_batch_size == 8  # still batches, without the scheduler merging requests


def test_triton_dims() -> None:
    assert triton_dims(TensorSpec("x", ("B", 3, 4), "float32", ""), "m") == ([3, 4], None)
    assert triton_dims(TensorSpec("x", ("B",), "float32", ""), "m") == ([1], [])
    for shape in [(3, "B"), (), ("B", "H"), ("B", 0)]:
        with pytest.raises(ConfigError, match=r"m: tensor 'x'"):
            triton_dims(TensorSpec("x", shape, "float32", ""), "m")


def test_dtype_names() -> None:
    assert triton.triton_dtype(TensorSpec("x", ("B",), "float16", ""), "m") == "TYPE_FP16"
    assert triton.triton_dtype(TensorSpec("x", ("B",), "int64", ""), "m") == "TYPE_INT64"
    with pytest.raises(ConfigError, match=r"m: tensor 'x' has dtype 'complex64'"):
        triton.triton_dtype(TensorSpec("x", ("B",), "complex64", ""), "m")


def test_every_dtype_name_is_a_triton_enum(pb: Any) -> None:
    for name in triton.TRITON_DTYPES.values():
        assert pb.DataType.Value(name) != pb.TYPE_INVALID


# --- the ensemble -----------------------------------------------------------------------------------------------------


def test_ensemble_config(tmp_path: Path, inputs: dict[str, Path], pb: Any) -> None:
    cfg = configs(pb, write(tmp_path / "repo", inputs, max_batch_size=4))[NAMES.ensemble]
    assert cfg.name == NAMES.ensemble == "nerfgan"
    assert cfg.platform == "ensemble"
    assert cfg.max_batch_size == 4
    assert [t.name for t in cfg.input] == ["z", "c_cond", "psi", "c"]
    assert [t.name for t in cfg.output] == ["image", "image_raw"]
    assert not cfg.HasField("dynamic_batching") and len(cfg.instance_group) == 0
    assert [s.model_name for s in cfg.ensemble_scheduling.step] == [NAMES.mapping, NAMES.student]
    assert all(s.model_version == -1 for s in cfg.ensemble_scheduling.step)


def test_ensemble_wiring(tmp_path: Path, inputs: dict[str, Path], pb: Any) -> None:
    cfg = configs(pb, write(tmp_path / "repo", inputs, backend="tensorrt"))
    ensemble = cfg[NAMES.ensemble]
    steps = list(ensemble.ensemble_scheduling.step)
    mapping_step, student_step = steps

    # every input_map / output_map key is a real tensor of the composing model, and every input is fed
    for step in steps:
        model = cfg[step.model_name]
        assert set(step.input_map) == {t.name for t in model.input}, step.model_name
        assert set(step.output_map) <= {t.name for t in model.output}, step.model_name

    # every ensemble input is consumed; the mapping's output is what the student takes; the student makes the outputs
    consumed = {v for s in steps for v in s.input_map.values()}
    assert {t.name for t in ensemble.input} <= consumed
    intermediate = mapping_step.output_map["w"]
    assert student_step.input_map["w"] == intermediate
    assert intermediate not in {t.name for t in ensemble.input} | {t.name for t in ensemble.output}
    assert student_step.input_map["c"] == "c"
    assert {student_step.output_map[k] for k in student_step.output_map} == {t.name for t in ensemble.output}

    # ensemble tensors agree in dtype and dims (what Triton compares: the shape a composing model declares to the
    # outside, before its own reshape) with the composing models' tensors they connect to
    produced: dict[str, Any] = {t.name: signature(t)[:2] for t in ensemble.input}
    for step in steps:
        model = cfg[step.model_name]
        for key, value in step.input_map.items():
            wanted = signature(next(t for t in model.input if t.name == key))[:2]
            assert produced[value] == wanted, (step.model_name, key)
        for key, value in step.output_map.items():
            produced[value] = signature(next(t for t in model.output if t.name == key))[:2]
    for t in ensemble.output:
        assert produced[t.name] == signature(t)[:2], t.name


def test_custom_names(tmp_path: Path, inputs: dict[str, Path], pb: Any) -> None:
    names = TritonNames(mapping="m", student="s", ensemble="gen")
    repo = write(tmp_path / "repo", inputs, names=names)
    assert sorted(p.name for p in repo.iterdir()) == [".nerfgan-owner.json", "README.md", "gen", "m", "s"]
    assert parse(pb, repo / "m" / "config.pbtxt").name == "m"
    ensemble = parse(pb, repo / "gen" / "config.pbtxt")
    assert ensemble.name == "gen"
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["m", "s"]


@pytest.mark.parametrize("kw", [{"mapping": "a/b"}, {"student": ".hidden"}, {"ensemble": ""},
                                {"mapping": "x", "student": "x"}])
def test_bad_names(kw: dict[str, str]) -> None:
    with pytest.raises(UsageError, match=r"names"):
        TritonNames(**kw)


def test_specs_that_do_not_chain(tmp_path: Path, inputs: dict[str, Path]) -> None:
    no_w = ModelSpec("student", (TensorSpec("style", ("B", 8), "float32", ""),) + STUDENT.inputs[1:], STUDENT.outputs)
    with pytest.raises(ConfigError, match=r"no input named 'w'"):
        write(tmp_path / "repo", inputs, student_spec=no_w)
    wide = student_spec(16, 16, 32)
    with pytest.raises(ConfigError, match=r"disagree on 'w'"):
        write(tmp_path / "repo", inputs, student_spec=wide)
    clash = ModelSpec("student", STUDENT.inputs[:1] + (TensorSpec("z", ("B", 25), "float32", ""),), STUDENT.outputs)
    with pytest.raises(ConfigError, match=r"collide: \['z'\]"):
        write(tmp_path / "repo", inputs, student_spec=clash)
    assert not (tmp_path / "repo").exists() and leftovers(tmp_path) == []


def test_readme(tmp_path: Path, inputs: dict[str, Path]) -> None:
    text = (write(tmp_path / "repo", inputs) / "README.md").read_text()
    assert "tritonserver --model-repository" in text
    for name in (NAMES.mapping, NAMES.student, NAMES.ensemble, "z", "c_cond", "psi", "c", "image", "image_raw"):
        assert f"`{name}`" in text
    code = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert code is not None
    compile(code.group(1), "README.md", "exec")  # the client example is valid Python
    assert "'psi': np.full((1, 1), 0.7, np.float32)" in code.group(1)  # psi sent as (B, 1), as the ensemble declares
    assert "`psi` (B, 1) float32" in text


# --- refusals -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "match"), [
    ({"max_batch_size": 0}, r"max_batch_size: must be >= 1"),
    ({"preferred_batch_sizes": [4, 9]}, r"preferred_batch_sizes: \[9\] outside 1..max_batch_size \(8\)"),
    ({"preferred_batch_sizes": [4], "dynamic_batching": False}, r"preferred_batch_sizes: .*dynamic_batching is off"),
    ({"instance_kind": "gpu"}, r"instance_kind: must be one of KIND_AUTO"),
    ({"instance_count": 0}, r"instance_count: must be >= 1"),
    ({"max_queue_delay_us": -1}, r"max_queue_delay_us: must be >= 0"),
    ({"backend": "tensorflow"}, r"student_backend: must be one of onnxruntime, tensorrt"),
    ({"backend": "tensorrt", "instance_kind": "KIND_CPU"}, r"instance_kind: KIND_CPU cannot run a TensorRT plan"),
    ({"backend": "tensorrt", "max_batch_size": 16, "plan_max_batch": 8},
     r"max_batch_size: 16 exceeds the plan's optimisation profile maximum \(8\) of .*student\.plan"),
])
def test_bad_options_create_nothing(tmp_path: Path, inputs: dict[str, Path], kw: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        write(tmp_path / "out" / "repo", inputs, **kw)
    assert not (tmp_path / "out").exists()


def test_plan_max_batch_is_not_checked_for_onnx(tmp_path: Path, inputs: dict[str, Path]) -> None:
    write(tmp_path / "a", inputs, backend="tensorrt", max_batch_size=8, plan_max_batch=8)  # exactly covered
    write(tmp_path / "b", inputs, max_batch_size=16, plan_max_batch=8)  # ONNX Runtime has no profile
    assert (tmp_path / "a" / NAMES.student / "1" / "model.plan").is_file()
    assert (tmp_path / "b" / NAMES.student / "1" / "model.onnx").is_file()


def test_file_kind_must_match_backend(tmp_path: Path, inputs: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match=r"student\.onnx: student_backend is 'tensorrt'"):
        write(tmp_path / "repo", inputs, backend="tensorrt", student_file=inputs["student"])
    with pytest.raises(UsageError, match=r"student\.plan: student_backend is 'onnxruntime'"):
        write(tmp_path / "repo", inputs, student_file=inputs["plan"])
    assert not (tmp_path / "repo").exists()


def test_missing_model_files(tmp_path: Path, inputs: dict[str, Path]) -> None:
    missing_m, missing_s = tmp_path / "nope" / "mapping.onnx", tmp_path / "nope" / "student.onnx"
    with pytest.raises(InputFileError) as err:
        write(tmp_path / "out" / "repo", inputs, mapping_file=missing_m, student_file=missing_s)
    assert f"mapping_file {missing_m}: not found" in str(err.value)
    assert f"student_file {missing_s}: not found" in str(err.value)
    with pytest.raises(InputFileError, match=r"mapping_file .*: not a regular file"):
        write(tmp_path / "out" / "repo", inputs, mapping_file=tmp_path / "in")
    assert not (tmp_path / "out").exists()


def test_bad_dtype_creates_nothing(tmp_path: Path, inputs: dict[str, Path]) -> None:
    odd = ModelSpec("mapping", MAPPING.inputs[:2] + (TensorSpec("psi", ("B",), "complex64", ""),), MAPPING.outputs)
    with pytest.raises(ConfigError, match=r"nerfgan_mapping: tensor 'psi' has dtype 'complex64'"):
        write(tmp_path / "repo", inputs, mapping_spec=odd)
    assert not (tmp_path / "repo").exists() and leftovers(tmp_path) == []


def test_serving_is_a_frozen_config() -> None:
    s = TritonServing(8, preferred_batch_sizes=(2, 8))
    with pytest.raises(AttributeError):
        s.max_batch_size = 4  # type: ignore[misc]
    assert "preferred_batch_size: [ 2, 8 ]" in triton.model_config_text("m", MAPPING, "onnxruntime", s)


# --- overwriting and atomicity ----------------------------------------------------------------------------------------


def users_folder(path: Path) -> Path:
    """A folder nerfgan did not write (say, a hand-made model repository)."""
    (path / "old_model" / "1").mkdir(parents=True)
    (path / "old_model" / "config.pbtxt").write_text('name: "old_model"')
    return path


OLD_NAMES = TritonNames(mapping="old_m", student="old_s", ensemble="old_e")
OLD_LISTING = [".nerfgan-owner.json", "README.md", "old_e", "old_m", "old_s"]


def existing_repo(path: Path, inputs: dict[str, Path]) -> Path:
    """A repository an earlier nerfgan run wrote (other model names, so a replacement is visible)."""
    return write(path, inputs, names=OLD_NAMES)


def test_refuses_a_non_empty_directory(tmp_path: Path, inputs: dict[str, Path]) -> None:
    repo = existing_repo(tmp_path / "repo", inputs)
    with pytest.raises(UsageError, match=re.escape(f"{repo}: model repository directory exists and is not empty")):
        write(repo, inputs)
    assert sorted(p.name for p in repo.iterdir()) == OLD_LISTING
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"file: exists and is not a directory"):
        write(tmp_path / "file", inputs, overwrite=True)
    assert (tmp_path / "file").read_text() == "x"


def test_an_empty_directory_is_filled(tmp_path: Path, inputs: dict[str, Path]) -> None:
    (tmp_path / "repo").mkdir()
    repo = write(tmp_path / "repo", inputs)
    assert (repo / NAMES.ensemble / "config.pbtxt").is_file()
    assert leftovers(tmp_path) == []


def test_current_directory_as_repository(tmp_path: Path, inputs: dict[str, Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    repo = write(Path("."), inputs)
    assert repo == tmp_path / "repo"
    assert (tmp_path / "repo" / NAMES.mapping / "1" / "model.onnx").is_file()
    assert leftovers(tmp_path) == []


def test_overwrite_replaces(tmp_path: Path, inputs: dict[str, Path]) -> None:
    repo = write(existing_repo(tmp_path / "repo", inputs), inputs, overwrite=True)
    assert sorted(p.name for p in repo.iterdir()) == sorted([".nerfgan-owner.json", "README.md", NAMES.mapping,
                                                              NAMES.student, NAMES.ensemble])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("make", ["users_models", "users_files", "cwd_with_checkpoint"])
def test_overwrite_never_touches_what_nerfgan_did_not_write(tmp_path: Path, inputs: dict[str, Path], make: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    if make == "users_models":
        users_folder(repo)
    else:
        repo.mkdir()
        (repo / "notes.txt").write_text("keep")
        if make == "cwd_with_checkpoint":
            (repo / "student.safetensors").write_bytes(b"weights")
            monkeypatch.chdir(repo)
    before = sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))
    with pytest.raises(OutputError, match="files nerfgan did not write.*nothing was changed"):
        write(Path(".") if make == "cwd_with_checkpoint" else repo, inputs, overwrite=True)
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == before
    assert leftovers(tmp_path) == []


def test_overwrite_recognises_a_repository_from_before_owner_files(tmp_path: Path, inputs: dict[str, Path]) -> None:
    repo = existing_repo(tmp_path / "repo", inputs)
    (repo / ".nerfgan-owner.json").unlink()
    write(repo, inputs, overwrite=True)
    (repo / ".nerfgan-owner.json").unlink()
    (repo / "mine.txt").write_text("a file of the user's among the models")
    with pytest.raises(OutputError, match="did not write"):
        write(repo, inputs, overwrite=True)


def boom(*args: Any, **kwargs: Any) -> None:
    raise OSError("disk full")


def test_failure_mid_write_leaves_nothing(tmp_path: Path, inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "copyfile", boom)
    with pytest.raises(OutputError, match="repo: cannot write .*disk full"):
        write(tmp_path / "repo", inputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no repository, no temporary directory


def test_failure_mid_write_keeps_the_old_repository(tmp_path: Path, inputs: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    repo = existing_repo(tmp_path / "repo", inputs)
    monkeypatch.setattr(shutil, "copyfile", boom)
    with pytest.raises(OutputError, match="disk full"):
        write(repo, inputs, overwrite=True)
    assert sorted(p.name for p in repo.iterdir()) == OLD_LISTING
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "repo"]


def test_failed_swap_restores_the_old_repository(tmp_path: Path, inputs: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    repo = existing_repo(tmp_path / "repo", inputs)
    real_replace = os.replace
    calls: list[str] = []

    def replace(src: Any, dst: Any) -> None:
        calls.append(Path(dst).name)
        if calls.count("repo") == 2:  # the new repository's rename into place
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(triton.os, "replace", replace)
    with pytest.raises(OutputError, match="rename failed"):
        write(repo, inputs, overwrite=True)
    assert calls == [".nerfgan-owner.json", "repo", "repo", "repo"]  # owner file, old set aside, new refused, old back
    assert sorted(p.name for p in repo.iterdir()) == OLD_LISTING
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "repo"]


# --- backends: python, and what differs between the three ---------------------------------------------------------------


def test_python_backend_layout(tmp_path: Path, inputs: dict[str, Path], pb: Any) -> None:
    from nerfgan.export.triton_python import MODEL_PY

    repo = write(tmp_path / "repo", inputs, backend="python")
    for model, source in ((NAMES.mapping, inputs["mapping"]), (NAMES.student, inputs["student"])):
        version = repo / model / "1"
        assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "model.py"]
        assert (version / "model.onnx").read_bytes() == source.read_bytes()
        assert (version / "model.py").read_text() == MODEL_PY
        cfg = parse(pb, repo / model / "config.pbtxt")
        assert (cfg.backend, cfg.platform) == ("python", "")
    assert not any((repo / NAMES.ensemble / "1").iterdir())
    compile(MODEL_PY, "model.py", "exec")
    assert "from nerfgan.runtime" in MODEL_PY and "import torch" not in MODEL_PY
    assert "Python backend" in (repo / "README.md").read_text()


def test_python_backend_takes_onnx_only(tmp_path: Path, inputs: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match=r"student\.plan: student_backend is 'python', which does not take a \.plan"):
        write(tmp_path / "repo", inputs, backend="python", student_file=inputs["plan"])
    assert not (tmp_path / "repo").exists()


def test_backends_differ_only_in_their_composing_models_backend_line(tmp_path: Path, inputs: dict[str, Path]) -> None:
    repos = {b: write(tmp_path / b, inputs, backend=b, plan_max_batch=8) for b in ("onnxruntime", "tensorrt", "python")}
    ensembles = {b: (r / NAMES.ensemble / "config.pbtxt").read_text() for b, r in repos.items()}
    assert ensembles["onnxruntime"] == ensembles["tensorrt"] == ensembles["python"]  # one ensemble text for all three
    line = {"onnxruntime": 'platform: "onnxruntime_onnx"', "tensorrt": 'platform: "tensorrt_plan"',
            "python": 'backend: "python"'}
    for model in (NAMES.mapping, NAMES.student):
        texts = {b: (r / model / "config.pbtxt").read_text().splitlines() for b, r in repos.items()}
        for b, lines in texts.items():
            runs_in = "onnxruntime" if model == NAMES.mapping and b == "tensorrt" else b  # the mapping is never a plan
            assert lines[1] == line[runs_in], (model, b)
            assert lines[:1] + lines[2:] == texts["onnxruntime"][:1] + texts["onnxruntime"][2:], (model, b)
    files = {b: sorted(str(p.relative_to(r)) for p in r.rglob("*") if p.is_file() and p.name != "README.md")
             for b, r in repos.items()}
    assert set(files["tensorrt"]) ^ set(files["onnxruntime"]) == {f"{NAMES.student}/1/model.onnx",
                                                                  f"{NAMES.student}/1/model.plan"}
    assert set(files["python"]) - set(files["onnxruntime"]) == {f"{NAMES.mapping}/1/model.py",
                                                                f"{NAMES.student}/1/model.py"}
    assert set(files["onnxruntime"]) <= set(files["python"])


@pytest.mark.parametrize(("kw", "match"), [
    ({"triton": "repo", "triton_backend": "tensorflow"}, r"--triton-backend: choose one of onnxruntime, tensorrt, python"),
    ({"triton_backend": "python"}, r"--triton-backend python: given without --triton REPO_DIR"),
    ({"triton": "repo", "triton_backend": "tensorrt"}, r"--triton-backend tensorrt: serves a TensorRT plan; add --trt"),
])
def test_export_config_refuses_bad_triton_backends(kw: dict[str, Any], match: str) -> None:
    from nerfgan.export.pipeline import ExportConfig

    with pytest.raises(UsageError, match=match):
        ExportConfig(**kw)


def test_cli_takes_triton_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from nerfgan.cli import export_main

    with pytest.raises(SystemExit) as e:
        export_main(["--ckpt", str(tmp_path / "s.safetensors"), "--triton", str(tmp_path / "repo"),
                     "--triton-backend", "python", "--dry-run"])
    assert e.value.code == 0
    assert json.loads(capsys.readouterr().out)["export"]["triton_backend"] == "python"


@pytest.mark.parametrize("change", ["edited", "added"])
def test_overwrite_keeps_a_file_the_user_changed_or_added_inside_the_repository(
        tmp_path: Path, inputs: dict[str, Path], change: str) -> None:
    """Issue 22: the repository's owner file records the sha256 of every file written, and --triton replaces the
    repository only while every file in it is one of those, unchanged (nerfgan.io.may_replace, as for -o)."""
    repo = write(tmp_path / "repo", inputs)
    config = repo / NAMES.student / "config.pbtxt"
    if change == "edited":
        config.write_text(config.read_text() + "\n# the user's tuning\n")
    else:
        (repo / NAMES.student / "notes.txt").write_text("mine")
    before = {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    with pytest.raises(OutputError, match="nothing was changed"):
        write(repo, inputs, overwrite=True)
    assert {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert leftovers(tmp_path) == []
