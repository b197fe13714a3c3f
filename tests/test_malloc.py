"""nerfgan.malloc: freed blocks are reused inside keep_freed_memory, and glibc's behaviour returns after it."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = r"""
import resource, torch
from nerfgan.malloc import keep_freed_memory
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.LeakyReLU(), torch.nn.Conv2d(16, 16, 3, padding=1))
x = torch.randn(4, 16, 256, 256)
def faults(n=5):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):  # a small training step: activations of 16 MiB freed and re-allocated each time
        net(x).square().mean().backward()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
faults(1)
before = faults()
with keep_freed_memory() as took:
    faults(5)  # the heap grows to the step's peak (in a few steps: a free block is not always where the next fits)
    inside = faults()
after = faults()
print(took, before, inside, after)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_inside_the_block_a_freed_block_is_reused_and_outside_it_is_not():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout.split()
    took, before, inside, after = out[0] == "True", *map(int, out[1:])
    if not took:
        pytest.skip("not glibc: mallopt is unavailable")
    assert before > 10_000  # glibc maps each freed activation afresh: its pages fault in again every step
    assert inside < before / 10  # kept: the same pages come back (at most a late heap growth of one block)
    assert after > before / 2  # and glibc's own behaviour returns after the block


def test_nerfgan_malloc_default_leaves_malloc_alone():
    code = "from nerfgan.malloc import keep_freed_memory\nwith keep_freed_memory() as t: print(t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"NERFGAN_MALLOC": "default", "PATH": ""}).stdout.strip()
    assert out == "False"
