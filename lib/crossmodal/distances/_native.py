"""Optional fused soft-min kernel (``_softmin.c``), compiled on first use with the system C compiler.

The Sinkhorn soft-min on a dense float32 cost matrix is bound by passes over memory: PyTorch
needs four element-wise passes per evaluation (affine map, clamp, exp2, sum), the C kernel one
(it evaluates ``2^t`` with a degree-6 polynomial, relative error < 2e-9, and sums in the same
loop, vectorised with OpenMP SIMD and threaded with OpenMP). It computes the same quantity as
the PyTorch path in ``_sinkhorn._sums`` (tests compare the two).

The kernel is built once per machine into ``$CROSSMODAL_CACHE/native`` (default
``~/.cache/crossmodal/native``) with ``cc -O3 -march=native -fopenmp``; if there is no
compiler, or the build fails, or ``CROSSMODAL_NATIVE=0`` is set, everything falls back to the
pure-PyTorch path (same values, slower). Only float32 CPU tensors use it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading

import torch

__all__ = ["available", "reduce"]

_SRC = pathlib.Path(__file__).with_name("_softmin.c")
_LOCK = threading.Lock()
_LIB: ctypes.CDLL | None = None
_TRIED = False


def _cache_dir() -> pathlib.Path:
    root = os.environ.get("CROSSMODAL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "crossmodal")
    return pathlib.Path(root) / "native"


def _build() -> ctypes.CDLL | None:
    if os.environ.get("CROSSMODAL_NATIVE", "1") == "0" or not _SRC.exists():
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    flags = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
    tag = hashlib.sha256(_SRC.read_bytes() + " ".join([compiler, *flags]).encode()).hexdigest()
    target = _cache_dir() / f"softmin_{tag[:16]}.so"
    try:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                out = pathlib.Path(tmp) / target.name
                subprocess.run([compiler, *flags, "-o", str(out), str(_SRC)], check=True,
                               capture_output=True, timeout=120)
                os.replace(out, target)  # atomic: concurrent builders never see a partial file
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError):
        return None
    args = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_float, ctypes.c_int,
                                                          ctypes.c_int]
    for name in ("softmin_rows", "softmin_cols"):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, None
    return lib


def _lib() -> ctypes.CDLL | None:
    global _LIB, _TRIED
    if not _TRIED:
        with _LOCK:
            if not _TRIED:
                _LIB = _build()
                _TRIED = True
    return _LIB


def available(t: torch.Tensor) -> bool:
    """Whether the fused kernel can reduce a stored cost matrix like ``t``."""
    return (t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()
            and _lib() is not None)


def reduce(store: torch.Tensor, h2: torch.Tensor, s2: torch.Tensor, c: float, *,
           transposed: bool, want_max: bool) -> torch.Tensor:
    """Sums of ``2^(h2 - s2 - c*store)`` (or their maximal exponent) along one axis.

    ``store`` is (B, N, M). Rows (``transposed=False``): ``h2`` (B, M), ``s2`` (B, N), result
    (B, N). Columns: ``h2`` (B, N), ``s2`` (B, M), result (B, M).
    """
    lib = _lib()
    b, n, m = store.shape
    h2 = h2.detach().to(torch.float32).contiguous()
    s2 = s2.detach().to(torch.float32).contiguous()
    out = torch.empty(b, m if transposed else n, dtype=torch.float32)
    fn = lib.softmin_cols if transposed else lib.softmin_rows
    fn(store.data_ptr(), h2.data_ptr(), s2.data_ptr(), out.data_ptr(), b, n, m, float(c),
       int(want_max), max(1, torch.get_num_threads()))
    return out
