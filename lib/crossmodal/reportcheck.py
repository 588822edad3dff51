"""Compare a freshly written notebook report with the committed one, numerically.

``make test`` re-executes the notebooks (nbval). On another machine of the same kind the
numbers agree only to about the 7th significant digit (the order of floating-point sums in
the BLAS kernels differs), so comparing the *printed* tables digit by digit fails whenever
a value sits on a rounding boundary (3.115 printed as 3.11 or 3.12). The nbval sanitizer
(``tests/nbval_sanitize.cfg``) therefore masks the numbers in the printed outputs, and this
module compares the numbers themselves: each notebook's fresh ``results.json`` and
``results.csv`` against ``reports/<notebook>/smoke/`` in the checkout.

Rules (:func:`compare_values`):

* numbers: ``|a - b| <= max(rel * max(|a|, |b|), abs_)`` with ``rel = 1e-3`` and
  ``abs_ = 1e-6`` by default: 7th-digit noise passes, a real change of a result (a
  prediction flipping on a test set of 40 samples moves an error by 2.5 %) fails;
* numbers inside strings (``"ours: 3/4 tasks; mean reduction 14.9 %"``) are printed rounded,
  so two prints may differ by one unit in the last printed digit (or by the relative
  tolerance, for full-precision prints); the rest of the string must be equal;
* everything else (keys, list lengths, strings, booleans, None) must be equal, except the
  keys of :data:`VOLATILE_KEYS` (wall times, package versions, the thread count), which
  are not compared.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

#: Keys whose values legitimately change between machines or runs.
VOLATILE_KEYS = frozenset({"wall_seconds", "seconds", "versions", "num_threads"})

REL_TOL = 1e-3
ABS_TOL = 1e-6

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w)")


def _ulp(text: str) -> float:
    """One unit in the last printed digit of a rounded number's text (``"3.11"`` -> 0.01).

    Integers of one or two digits are exact (counts such as ``3/4 tasks``; a value printed
    with 3 significant digits shows decimals below 100), so their unit is 0.
    """
    mantissa, _, exponent = text.lower().partition("e")
    if "." not in mantissa and not exponent and len(mantissa.lstrip("+-").lstrip("0")) < 3:
        return 0.0
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 10.0 ** (-decimals + (int(exponent) if exponent else 0))


def _close(a: float, b: float, rel: float, abs_: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= max(rel * max(abs(a), abs(b)), abs_)


def _compare_strings(fresh: str, committed: str, where: str) -> list[str]:
    if fresh == committed:
        return []
    if _NUMBER.sub("#", fresh) != _NUMBER.sub("#", committed):
        return [f"{where}: {fresh!r} != committed {committed!r}"]
    for a, b in zip(_NUMBER.findall(fresh), _NUMBER.findall(committed)):
        x, y = float(a), float(b)
        # a rounding flip moves the last printed digit by one; full-precision prints get the
        # relative tolerance of plain numbers
        tol = max(max(_ulp(a), _ulp(b)) * 1.001, REL_TOL * max(abs(x), abs(y)), ABS_TOL)
        if abs(x - y) > tol:
            return [f"{where}: {fresh!r} != committed {committed!r} ({a} vs {b})"]
    return []


def compare_values(fresh: Any, committed: Any, where: str = "", *, rel: float = REL_TOL,
                   abs_: float = ABS_TOL) -> list[str]:
    """Every difference between two JSON-like values, as ``"path: ..."`` lines (none: equal)."""
    if isinstance(fresh, bool) or isinstance(committed, bool):
        return [] if fresh is committed else [f"{where}: {fresh!r} != committed {committed!r}"]
    if isinstance(fresh, (int, float)) and isinstance(committed, (int, float)):
        if _close(float(fresh), float(committed), rel, abs_):
            return []
        return [f"{where}: {fresh!r} != committed {committed!r} (rel. tolerance {rel})"]
    if isinstance(fresh, str) and isinstance(committed, str):
        return _compare_strings(fresh, committed, where)
    if isinstance(fresh, dict) and isinstance(committed, dict):
        out = []
        keys = (set(fresh) | set(committed)) - VOLATILE_KEYS
        for key in sorted(keys, key=str):
            if key not in fresh:
                out.append(f"{where}.{key}: missing in the fresh report")
            elif key not in committed:
                out.append(f"{where}.{key}: not in the committed report")
            else:
                out += compare_values(fresh[key], committed[key], f"{where}.{key}", rel=rel,
                                      abs_=abs_)
        return out
    if isinstance(fresh, list) and isinstance(committed, list):
        if len(fresh) != len(committed):
            return [f"{where}: {len(fresh)} entries != committed {len(committed)}"]
        out = []
        for i, (a, b) in enumerate(zip(fresh, committed)):
            out += compare_values(a, b, f"{where}[{i}]", rel=rel, abs_=abs_)
        return out
    if fresh == committed:
        return []
    return [f"{where}: {fresh!r} != committed {committed!r}"]


def csv_rows(path: str | Path, drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The rows of a report CSV as dicts, numbers as floats, without the ``drop`` columns."""

    def cell(text: str) -> Any:
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline="") as f:
        return [{k: cell(v) for k, v in row.items() if k not in drop}
                for row in csv.DictReader(f)]


def compare_report_folders(fresh: str | Path, committed: str | Path, *, rel: float = REL_TOL,
                           abs_: float = ABS_TOL) -> list[str]:
    """Differences between ``fresh/`` and ``committed/`` in ``results.json`` and ``results.csv``.

    A file the committed folder has but the fresh one lacks is a difference; a file neither
    has is not compared.
    """
    fresh, committed = Path(fresh), Path(committed)
    out = []
    for name in ("results.json", "results.csv"):
        if not (committed / name).exists():
            continue
        if not (fresh / name).exists():
            out.append(f"{name}: not written by the fresh run")
            continue
        if name.endswith(".json"):
            a, b = (json.loads((d / name).read_text()) for d in (fresh, committed))
        else:
            a, b = csv_rows(fresh / name), csv_rows(committed / name)
        out += compare_values(a, b, name, rel=rel, abs_=abs_)
    return out
