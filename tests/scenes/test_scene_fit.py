"""nerfgan scene fit: its folder is claimed and locked like every output (a fit itself takes minutes even when tiny:
the fitting was checked by hand, see the README's fidelity section)."""

from __future__ import annotations

import pytest

from nerfgan.errors import OutputError
from nerfgan.io import folder_lock
from nerfgan.scenes.fit import FitConfig, fit

TINY = FitConfig(field_steps=2, sr_samples=8, sr_steps=1, batch=1, points=256, rays=16, checkpoint_every=1,
                 eval_every=100)


def test_a_folder_of_the_users_is_refused_and_a_running_fit_is_not_joined(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="did not write"):
        fit(mine, TINY, echo=lambda s: None)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    busy = tmp_path / "busy"
    busy.mkdir()
    with folder_lock(busy), pytest.raises(OutputError, match="another nerfgan process"):
        fit(busy, TINY, echo=lambda s: None)
