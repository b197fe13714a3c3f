"""nerfgan.serve.batching (no web framework needed) and nerfgan.serve.jobs against nerfgan.runtime."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import wait_until

from nerfgan.errors import UsageError
from nerfgan.serve.batching import BatcherClosed, MicroBatcher, QueueFull
from nerfgan.serve.jobs import Job, run_jobs
from nerfgan.serve.settings import Limits, ServeSettings


def test_jobs_arriving_together_share_a_batch_within_its_bound():
    seen: list[list[int]] = []

    def run(jobs: list[int]) -> list[int]:
        seen.append(list(jobs))
        return [j * 10 for j in jobs]

    b: MicroBatcher[int, int] = MicroBatcher(run, size=lambda j: j, max_batch=6, max_wait_s=0.3, max_queue=10)
    futures = [b.submit(j) for j in (1, 2, 3, 4, 9)]  # sizes: 1+2+3 fit in 6; 4 next; 9 is larger than a batch
    assert [f.result(10) for f in futures] == [10, 20, 30, 40, 90]
    assert seen == [[1, 2, 3], [4], [9]] and b.stats().batches == 3
    b.close()
    with pytest.raises(BatcherClosed):
        b.submit(1)


def test_a_bad_job_fails_alone():
    def run(jobs: list[int]) -> list[int]:
        if 13 in jobs:
            raise UsageError("seed: 13 is unlucky")
        return jobs

    b: MicroBatcher[int, int] = MicroBatcher(run, size=lambda j: 1, max_batch=8, max_wait_s=0.3)
    futures = [b.submit(j) for j in (1, 13, 2)]
    assert futures[0].result(10) == 1 and futures[2].result(10) == 2
    with pytest.raises(UsageError, match="unlucky"):
        futures[1].result(10)
    b.close()


def test_queue_bound_retry_after_cancel_and_close():
    gate, entered = threading.Event(), threading.Event()

    def run(jobs: list[int]) -> list[int]:
        entered.set()
        gate.wait(30)
        return jobs

    b: MicroBatcher[int, int] = MicroBatcher(run, size=lambda j: 1, max_batch=1, max_wait_s=0, max_queue=2)
    running = b.submit(0)
    assert entered.wait(10)
    queued = [b.submit(1), b.submit(2)]
    with pytest.raises(QueueFull) as e:
        b.submit(3)
    assert e.value.retry_after_s >= 1 and b.stats().refused == 1
    assert queued[0].cancel()  # a client that went away: its job is skipped, not run
    gate.set()
    assert running.result(10) == 0 and queued[1].result(10) == 2
    wait_until(lambda: b.stats().batches >= 2, "the second batch ran")
    assert b.stats().batches == 2
    b.close()


def test_close_fails_the_queued_jobs():
    gate, entered = threading.Event(), threading.Event()
    b: MicroBatcher[int, int] = MicroBatcher(lambda jobs: (entered.set(), gate.wait(30), jobs)[2], size=lambda j: 1,
                                             max_batch=1, max_wait_s=0)
    first, second = b.submit(1), b.submit(2)
    assert entered.wait(10)  # the worker runs the first job; the second waits in the queue
    threading.Timer(0.3, gate.set).start()
    b.close()
    assert first.result(10) == 1
    with pytest.raises(BatcherClosed):
        second.result(10)


def test_a_mixed_batch_equals_the_runtime(gen):
    w = gen.style(seed=4, truncation=0.5)[0]
    jobs = [Job(seed=1, yaw=(10.0, -10.0), pitch=(0.0, 5.0)), Job(seed=2, yaw=(3.0,), pitch=(1.0,), fov=30.0),
            Job(w=w, yaw=(0.0,), pitch=(-4.0,), radius=3.0), Job(seed=3, truncation=0.3),
            Job(seed=1, yaw=(7.0,), pitch=(2.0,), truncation=0.9)]
    out = run_jobs(gen, jobs)
    assert np.array_equal(out[0].images, gen.render(seeds=1, yaw=[10, -10], pitch=[0, 5]))
    assert np.array_equal(out[1].images, gen.render(seeds=2, yaw=3, pitch=1, fov=30))
    assert np.array_equal(out[2].images, gen.render(w=w, pitch=-4, radius=3.0)) and np.array_equal(out[2].w, w)
    assert out[3].images.shape == (0, 128, 128, 3) and np.array_equal(out[3].w, gen.style(seed=3, truncation=0.3)[0])
    assert np.array_equal(out[4].images, gen.render(seeds=1, yaw=7, pitch=2, truncation=0.9))


def test_settings_are_checked():
    assert ServeSettings("e").loopback and ServeSettings("e", host="::1").loopback
    assert not ServeSettings("e", host="0.0.0.0").loopback and ServeSettings("e", host="::1", port=9).url == \
        "http://[::1]:9/"
    with pytest.raises(UsageError, match="--max-queue"):
        Limits(max_queue=0)
    with pytest.raises(UsageError, match="--port"):
        ServeSettings("e", port=70000)
