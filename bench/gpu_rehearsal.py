"""bench/gpu.py's control flow rehearsed on the CPU: CUDA calls replaced by CPU stand-ins, tiny shapes.

    python bench/gpu_rehearsal.py [bench/gpu.py's options]

For `bench/gpu_check.sh --rehearse` only: it runs every line of bench/gpu.py's kernel table and end
to end (argument handling, the cuBLAS-float64 check, timing, the results file rewritten per row, the
synthetic-file writing and every e2e stage) with pylin's CPU kernels, so that a slip in that Python
shows here and not after minutes of GPU time.  Its numbers mean nothing; the results name the card
"rehearsal (CPU stand-ins)".  The stand-ins: cuda.available/upload/dequantize, torch.cuda's device
properties, events, synchronization and memory counters, and pylin.load(device=...) on the CPU.
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import make_synthetic_gguf  # noqa: E402

import pylin  # noqa: E402
from pylin import cuda  # noqa: E402

TINY_SHAPES = {"q/o": (512, 512), "k/v": (128, 512), "gate/up": (1024, 512), "down": (512, 1024)}
TINY_MODEL = make_synthetic_gguf.Shape(256, 2, 4, 2, 512, 300)


class _Props:
    name = "rehearsal (CPU stand-ins)"
    total_memory, multi_processor_count, major, minor = 1 << 30, 1, 0, 0
    L2_cache_size = 1 << 20


class _Event:
    def __init__(self, enable_timing: bool = False) -> None:
        self.t = 0.0

    def record(self, *_: Any) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other: _Event) -> float:
        return (other.t - self.t) * 1e3


def install_stand_ins() -> None:
    cuda.available = lambda: True
    cuda.upload = lambda w, device="cuda": w
    cuda.dequantize = lambda w: torch.from_numpy(w.dequantize())
    torch.cuda.get_device_properties = lambda device: _Props()
    torch.cuda.Event = _Event
    torch.cuda.synchronize = lambda *_: None
    torch.cuda.empty_cache = lambda: None
    torch.cuda.memory_allocated = torch.cuda.max_memory_allocated = lambda *_: 0
    generator = torch.Generator
    torch.Generator = lambda device=None: generator()
    load = pylin.load
    pylin.load = lambda path, device=None, **options: load(path, **options)
    for name in ("llama-3-8b", "llama-3.3-70b"):
        make_synthetic_gguf.MODELS[name] = TINY_MODEL


def main() -> None:
    install_stand_ins()
    sys.argv = ["gpu.py", "--device", "cpu", *sys.argv[1:]]
    module = runpy.run_path(str(BENCH / "gpu.py"), run_name="gpu_rehearsed")
    for model in module["SHAPES"]:
        module["SHAPES"][model] = dict(TINY_SHAPES)
    module["main"]()


if __name__ == "__main__":
    main()
