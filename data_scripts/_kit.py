"""Make ``import crossmodal`` work from a plain checkout (no ``pip install -e .`` yet)."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import crossmodal  # noqa: F401
except ImportError:  # running from a checkout: use its lib/ folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
