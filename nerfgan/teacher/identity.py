"""Which teacher a student was distilled from, and the check every teacher-vs-student tool makes.

A student file records its teacher twice: the teacher's config (inside the StudentConfig JSON) and the
sha256 of the teacher's weights (``TEACHER_KEY`` in the student's safetensors metadata; exports copy it
into every ONNX file and the manifest as ``nerfgan.teacher_weights_sha256``). The weights digest
(nerfgan.teacher.checkpoint.weights_digest) is the same however the teacher was stored (an upstream pickle,
its converted safetensors, the built-in file), so a teacher converted twice is still the same teacher,
while a teacher of the same architecture with other weights is not.

calibrate, parity, scene score and bench call :func:`check_same_teacher`: a different config is always
refused (the images are not comparable); different weights are refused unless the user passes
``--allow-other-teacher``, and the returned record, saved in the report, says so.
"""

from __future__ import annotations

import json
from typing import Any

from nerfgan.errors import ConfigError

TEACHER_KEY = "teacher_weights_sha256"
"""Student safetensors metadata key: weights_digest of the teacher it was distilled from."""

OVERRIDE_OPTION = "--allow-other-teacher"


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_same_teacher(*, teacher: str, teacher_config_json: str, teacher_digest: str, engine: str,
                       engine_config_json: str | None, engine_teacher_digest: str | None,
                       allow_other: bool = False) -> dict[str, Any]:
    """Refuse an engine distilled from another teacher than ``teacher``; returns the record for the report.

    teacher / engine: the user's arguments (named in the error). engine_config_json: the student's config JSON
    (embeds its teacher's config); engine_teacher_digest: its recorded teacher weights digest, None when the file
    predates the record. ConfigError (one line) on a config difference, or a weights difference without
    ``allow_other``.
    """
    if engine_config_json is None:
        raise ConfigError(f"{engine}: its metadata has no student config, so it cannot be checked against "
                          f"--teacher {teacher}")
    try:
        theirs = json.loads(engine_config_json)["teacher"]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{engine}: its student config has no readable teacher config, so it cannot be "
                          f"checked against --teacher {teacher}") from None
    ours, theirs = _flatten(json.loads(teacher_config_json)), _flatten(theirs)
    diff = [f"{k}: engine {theirs.get(k)!r}, teacher {ours.get(k)!r}" for k in sorted(set(ours) | set(theirs))
            if ours.get(k) != theirs.get(k)]
    if diff:
        raise ConfigError(f"{engine}: was distilled from a different teacher than --teacher {teacher} "
                          f"({len(diff)} config value(s) differ: {'; '.join(diff[:4])}{' ...' if len(diff) > 4 else ''})")
    record: dict[str, Any] = {"teacher_weights_sha256": teacher_digest, "recorded_by_engine": engine_teacher_digest,
                              "same_weights": None if engine_teacher_digest is None
                              else engine_teacher_digest == teacher_digest,
                              "allow_other_teacher": allow_other}
    if record["same_weights"] is False:
        if not allow_other:
            raise ConfigError(f"{engine}: was distilled from another teacher than --teacher {teacher} (same config, "
                              f"other weights: recorded {str(engine_teacher_digest)[:12]}..., given "
                              f"{teacher_digest[:12]}...); pass {OVERRIDE_OPTION} to compare anyway")
        record["note"] = (f"compared with another teacher than the one it was distilled from ({OVERRIDE_OPTION}): "
                          "its figures do not measure the distillation")
    elif record["same_weights"] is None:
        record["note"] = "the engine does not record its teacher's weights (made before nerfgan recorded them): " \
                         "only the teacher config was checked"
    return record
