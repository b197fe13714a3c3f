"""Hypothesis profiles of the fuzz tests (tests/test_fuzz_*.py): ``NERFGAN_FUZZ=ci`` (the default: a bounded budget that .ci/run
spends, derandomized so CI is reproducible) or ``NERFGAN_FUZZ=release`` (25 times the examples, a fresh random
seed each run, for a release; README "What nerfgan writes, reads and refuses" gives the command).

Every example runs under ``bounded`` (conftest): at most 256 MiB more address space and 60 s, so a reader that
allocates what a file declares, or loops, fails as MemoryError or TimeoutError instead of passing slowly.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("NERFGAN_FUZZ", "ci")
SCALE = {"ci": 1, "release": 25}
if PROFILE not in SCALE:
    raise RuntimeError(f"NERFGAN_FUZZ={PROFILE!r}: choose ci or release")

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                      HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("nerfgan-ci", derandomize=True, **_COMMON)
settings.register_profile("nerfgan-release", derandomize=False, **_COMMON)
BASE = settings.get_profile(f"nerfgan-{PROFILE}")


def budget(ci_examples: int) -> settings:
    """Settings of one fuzz test: ``ci_examples`` in the ci profile, SCALE times that in release."""
    return settings(BASE, max_examples=ci_examples * SCALE[PROFILE])


CASES: dict[str, int] = {}
"""Examples each fuzz test ran in this process (printed at the end of the session: tests/conftest.py)."""


def count(name: str) -> None:
    CASES[name] = CASES.get(name, 0) + 1
