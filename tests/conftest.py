"""Shared pytest setup: fixed seeds, the one tolerance table, per-test random generators.

Markers (slow, cuda, realmodel) are declared in pyproject.toml.  Add fixtures here only when more
than one test file needs them.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

# Every numerical tolerance of the suite, in one place.
TOLERANCES: dict[str, float] = {
    "matmul_float32": 1e-6,  # relative Frobenius error of a float32 kernel vs the float64 product
    "matmul_float64": 1e-12,  # the same for the float64 kernels
}


@pytest.fixture(autouse=True)
def _fixed_seeds() -> None:
    """torch's global generator seeded; numpy code takes the `rng` fixture instead of global state."""
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(0)


@pytest.fixture
def tolerances() -> dict[str, float]:
    return TOLERANCES


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test's id: deterministic, and different for each parametrization."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
