"""Use an optimized BLAS for MLX on Linux CPUs.

The `mlx-cpu` wheel links against the reference BLAS it bundles, which makes a
float32 matmul ~34x slower than OpenBLAS on the same CPU. MLX resolves
`cblas_sgemm` and friends through the dynamic linker, so loading OpenBLAS into
the global symbol scope *before* `mlx.core` is imported makes MLX call it
instead. This module does exactly that once, when `rag` is imported; macOS
(Accelerate) is untouched. Set RAG_BLAS=bundled to keep the bundled BLAS
(benchmarks use it to compare both in one run).
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

loaded: str | None = None  # path of the BLAS we loaded, for `rag models` and benchmarks


def find_openblas() -> str | None:
    explicit = os.environ.get("RAG_OPENBLAS")
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for path in _CANDIDATES:
        if os.path.exists(path):
            return path
    found = glob.glob("/usr/lib*/**/libopenblas*.so*", recursive=True)
    return found[0] if found else None


def use_optimized_blas() -> str | None:
    """Load OpenBLAS globally if we are on Linux and MLX is not imported yet."""
    global loaded
    if loaded or not sys.platform.startswith("linux"):
        return loaded
    if os.environ.get("RAG_BLAS", "").lower() == "bundled":
        return None
    if "mlx.core" in sys.modules:
        return None  # too late: MLX already bound its BLAS symbols
    path = find_openblas()
    if path is None:
        return None
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None
    loaded = path
    return path
