"""What `nerfgan train` shows: a message before each long silent start-up step, a bar with a total and an ETA for
--steps and for --minutes, evaluations as one tidy line, no bar left to redraw after an interruption, and DDP
built without the deprecated broadcast_buffers argument where torch has its replacement."""

from __future__ import annotations

import inspect

import pytest
from tqdm import tqdm

from nerfgan.student.train import Trainer, _no_forward_buffer_sync, eval_summary, train_preset


@pytest.fixture
def trainer(tmp_path, builtin_teacher, capsys):
    cfg = train_preset("tiny", batch_size=2, n_eval=2, eval_every=0, ckpt_every=1000)
    t = Trainer(cfg, builtin_teacher, tmp_path / "run", progress=True)
    t.startup_err = capsys.readouterr().err

    def fake_step():  # the loop and the bar without the seconds a real step takes
        t.step += 1
        return {"loss_g": 1.0}

    t.train_step = fake_step
    yield t
    t.close()


def open_bars():
    return [b for b in list(getattr(tqdm, "_instances", [])) if not b.disable]


def test_start_up_says_what_it_does_before_the_silent_parts(trainer):
    assert "building the tiny student" in trainer.startup_err
    assert "rendering 2 held-out samples with the teacher" in trainer.startup_err


def test_steps_bar_has_a_total(trainer, capsys):
    trainer.run(steps=3)
    err = capsys.readouterr().err
    assert "3/3" in err and "step" in err and not open_bars()


def test_minutes_bar_counts_training_seconds_towards_its_total(trainer, capsys):
    trainer.run(minutes=1e-9)
    err = capsys.readouterr().err
    assert "s of training" in err and "/0 s" in err and "step=1" in err and not open_bars()


def test_the_bar_is_closed_before_an_interruption_is_reported(trainer):
    def interrupted():
        raise KeyboardInterrupt  # a second Ctrl-C: stop at once

    trainer.train_step = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.run(steps=5)
    assert not open_bars()  # nothing left for tqdm to redraw after click's "Aborted."


def test_an_evaluation_is_one_tidy_line():
    row = {"step": 318, "train_minutes": 2.511, "images": 1272, "psnr_hr": 24.3123, "ssim_hr": 0.81234,
           "psnr_lr": 22.1, "ssim_lr": 0.79}
    line = eval_summary(row)
    assert "\n" not in line and "=" not in line
    assert line.startswith("step 318 (2.5 min, 1272 images)") and "24.31 dB" in line and "0.812" in line


def test_ddp_gets_the_argument_its_deprecation_asks_for():
    class New:
        def __init__(self, module, broadcast_buffers=None, forward_sync_buffers=None):
            pass

    class Old:
        def __init__(self, module, broadcast_buffers=True):
            pass

    assert _no_forward_buffer_sync(New) == {"forward_sync_buffers": False}
    assert _no_forward_buffer_sync(Old) == {"broadcast_buffers": False}
    from torch.nn.parallel import DistributedDataParallel as DDP

    expected = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters \
        else "broadcast_buffers"
    assert list(_no_forward_buffer_sync(DDP)) == [expected]
