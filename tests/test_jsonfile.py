"""nerfgan.jsonfile, the one bounded JSON reader (issue 22), and the manifest refusals built on it."""

from __future__ import annotations

import json
import os

import pytest

from conftest import bounded
from nerfgan.errors import ConfigError, InputFileError
from nerfgan.jsonfile import count_values, loads, read_json
from nerfgan.runtime import spec as S

ENTRY = {"file": "student.onnx", "kind": "student", "precision": "fp32", "format": "onnx", "sha256": "0" * 64,
         "bytes": 5}
MANIFEST = {"format": S.MANIFEST_FORMAT, "checkpoint": {"sha256": "1" * 64}, "artifacts": [ENTRY]}


def test_values_are_counted_before_parsing_and_bound_the_parse():
    assert count_values(b"[]") >= 1 and count_values('{"a": [1, 2]}') >= 4
    with bounded(), pytest.raises(InputFileError, match="JSON values"):
        loads(b"[" + b"[]," * (4 << 20) + b"[]]", "x.json", max_values=1 << 20)
    assert loads(b'{"a": [1, 2.5, "x"]}', "x.json") == {"a": [1, 2.5, "x"]}


@pytest.mark.parametrize("text, message", [
    ('{"a": NaN}', "NaN is not a JSON number"), ('[Infinity]', "Infinity"), ('{"a": 1, "a": 2}', "given twice"),
    ('[' * 100_000 + ']' * 100_000, "nested too deeply|JSON values"), ('{"a": ', "not valid JSON"),
    (b'\xff\xfe\x00', "not valid JSON"),
])
def test_strict_json_and_one_typed_error(text, message):
    with pytest.raises(InputFileError, match=message):
        loads(text, "x.json", max_values=1 << 20)
    with pytest.raises(ConfigError):
        loads(text, "x.json", max_values=1 << 20, error=ConfigError)


@pytest.mark.parametrize("kind", ["fifo", "devzero", "dir"])
def test_a_manifest_that_is_not_a_regular_file_is_refused_as_such(tmp_path, kind):
    """Issue 22: a manifest.json that was a FIFO or a link to /dev/zero was reported as missing."""
    path = tmp_path / S.MANIFEST
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "devzero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    with bounded(seconds=20), pytest.raises(InputFileError, match="not a regular file") as e:
        S.read_export(tmp_path)
    assert "not an export folder" not in str(e.value)
    with pytest.raises(InputFileError, match="not a regular file"):
        read_json(path, "thing", 1 << 20)


def test_a_manifest_listing_a_file_twice_is_refused(tmp_path):
    (tmp_path / S.MANIFEST).write_text(json.dumps({**MANIFEST, "artifacts": [ENTRY, dict(ENTRY, bytes=6)]}))
    with pytest.raises(InputFileError, match=r"artifacts\[1\].file 'student.onnx' is listed twice"):
        S.read_export(tmp_path)
    (tmp_path / S.MANIFEST).write_text(json.dumps(MANIFEST))
    assert [a.file for a in S.read_export(tmp_path).artifacts] == ["student.onnx"]
