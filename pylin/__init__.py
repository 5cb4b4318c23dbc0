"""pylin: a decoder LLM at one input as an exactly equivalent linear system (the detached Jacobian).

    import pylin
    model = pylin.load("gemma-3-270m-q4_k_m.gguf")          # GGUF file or HF folder; stays quantized
    lin = model.linearize("The bridge out of Marin is the")  # frozen at this input
    print(lin.reconstruction())                              # rel. error ~1e-6, R^2

Importing pylin loads only numpy and the native CPU module; torch, transformers and CUDA load on use.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any


def _require_native_module() -> None:
    """A clear ImportError when pylin is imported from a source tree that has no built `_core`.

    After a non-editable install, Python run inside the repository imports the source `pylin/` first
    (the cwd leads sys.path) and would fail with a circular-import message; numpy says what happened
    instead, and so does pylin.
    """
    if importlib.util.find_spec(f"{__name__}._core") is not None:
        return
    here = Path(__file__).resolve().parent
    if (here.parent / "CMakeLists.txt").is_file():
        raise ImportError(
            f"pylin is being imported from its source tree ({here}), which has no built native module. "
            "Run Python from another directory to use the installed pylin, or install this checkout "
            "editable: pip install -e ."
        )
    raise ImportError(f"pylin's native module _core is missing from {here}: reinstall pylin")


_require_native_module()

from . import kernels  # noqa: E402
from ._version import __version__  # noqa: E402
from .qtensor import QTensor  # noqa: E402

__all__ = ["QTensor", "__version__", "build_info", "kernels", "load", "default_model_path"]


def build_info() -> dict[str, Any]:
    """What this build of pylin contains: version, compiler, CPU ISA variants, OpenMP, CUDA archs."""
    from . import _core

    native = dict(_core.BUILD_INFO)
    info: dict[str, Any] = {
        "version": __version__,
        "compiler": native["compiler"],
        "openmp": native["openmp"],
        "threading": native.get("threading", "openmp" if native["openmp"] else "serial"),
        "isa_compiled": list(native["isa_compiled"]),
        "isa_available": kernels.available_isas(),
        "isa_active": kernels.isa(),
        "threads": kernels.num_threads(),
        "cuda": [],
        "cuda_version": None,
    }
    try:
        from . import _cuda  # type: ignore[attr-defined]
    except ImportError:
        return info
    cuda_info = dict(_cuda.BUILD_INFO)
    info["cuda"] = [f"sm_{a}" for a in str(cuda_info["archs"]).split(",") if a]
    info["cuda_version"] = cuda_info["cuda_version"]
    return info


def __getattr__(name: str) -> Any:
    # Heavy entry points load on first use so `import pylin` stays light.
    if name in ("load", "default_model_path"):
        from . import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'pylin' has no attribute {name!r}")
