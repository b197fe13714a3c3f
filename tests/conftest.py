"""Shared fixtures: the upstream reference file and the tiny teacher built from its weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE_NPZ = FIXTURES / "eg3d_tiny_sr128.npz"
UPSTREAM_PKL = FIXTURES / "eg3d_tiny_sr128.pkl"
OFFICIAL_CONFIGS = sorted((FIXTURES / "eg3d").glob("*.json"))

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="session")
def reference():
    """The shared upstream fixture, parsed (config, weights, inputs, upstream outputs)."""
    from nerfgan.teacher.reference import read_reference

    return read_reference(REFERENCE_NPZ)


@pytest.fixture(scope="session")
def tiny_teacher(reference):
    """The fixture's EG3D (128px output, 64px rendering) in eval mode on CPU."""
    from nerfgan.teacher.checkpoint import build_teacher

    return build_teacher(reference.config, reference.state, source=str(REFERENCE_NPZ))
