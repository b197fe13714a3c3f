"""Issue 22 item 10: Ctrl-C during the quickstart's teacher renders keeps the finished shards (of RENDER_SHARD
samples) and says so; the rerun continues from them."""

from __future__ import annotations

import pytest

import nerfgan.teacher.renders as R
from nerfgan.quickstart import RENDER_SHARD, Quickstart


def test_ctrl_c_during_the_renders_keeps_finished_shards_and_says_so(tmp_path, monkeypatch):
    lines: list[str] = []
    q = Quickstart(str(tmp_path), 0.05, 40, False, "cpu", echo=lines.append)
    q.out.mkdir(exist_ok=True)
    q.stage("teacher", q.teacher)
    real, rendered = R.render_samples, [0]

    def interrupted(model, samples):  # Ctrl-C once 20 samples are rendered
        rendered[0] += len(samples.index)
        if rendered[0] > 20:
            raise KeyboardInterrupt
        return real(model, samples)

    monkeypatch.setattr(R, "render_samples", interrupted)
    with pytest.raises(KeyboardInterrupt):
        q.stage("renders", q.renders)
    assert RENDER_SHARD == 16
    assert lines[-1] == (f"[renders] interrupted: 16 of 40 renders kept in {tmp_path / 'renders'}; run the same "
                         "command again to continue")
    plan = R.plan_render_set(tmp_path / "teacher.safetensors", 40, tmp_path / "renders", seed=0, shard_size=16)
    assert plan.samples_kept == 16 and plan.todo == [(16, 16), (32, 8)]
