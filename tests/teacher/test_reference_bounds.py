"""teacher verify's reference .npz: every member's declared size is bounded before anything is inflated."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from conftest import REFERENCE_NPZ, bounded
from nerfgan.errors import InputFileError
from nerfgan.teacher.reference import read_reference


def npz_of_zeros(path, members: int, floats: int):
    """``members`` deflated arrays of ``floats`` float32 zeros each (about 1 KB of file per MiB declared)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(floats, np.float32))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i in range(members):
            z.writestr(f"sd/w{i}.npy", buf.getvalue())
    return path


def test_many_small_members_over_the_budget_are_refused(tmp_path):
    path = npz_of_zeros(tmp_path / "bomb.npz", members=200, floats=(1 << 20) // 4 - 32)  # 200 MiB declared
    assert path.stat().st_size < 400_000
    with bounded(), pytest.raises(InputFileError, match="bomb.npz: its arrays declare .* over"):
        read_reference(path)


def test_one_big_deflated_member_is_refused(tmp_path):
    path = npz_of_zeros(tmp_path / "big.npz", members=1, floats=1 << 28)  # 1 GiB of zeros in about 1 MB
    with bounded(), pytest.raises(InputFileError, match="MAX_COMPRESSION_RATIO"):
        read_reference(path)


def test_the_shipped_reference_is_within_the_budget():
    assert read_reference(REFERENCE_NPZ).state
