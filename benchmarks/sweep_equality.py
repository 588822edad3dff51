"""Sweep + collect of ``main_results`` gives the same table as the notebook run directly.

Issue 16's "done when": a local sweep plus collect of ``main_results`` in the smoke profile
gives the same table as running the notebook directly. This script checks it end to end:

1. ``crossmodal sweep notebooks/main_results.ipynb --profile smoke --executor local
   --max-parallel N --runs-dir DIR`` (in this process, so the local jobs are its
   subprocesses), then waits until no run is pending or running;
2. executes the notebook with papermill in collect mode (``runs_dir=DIR``), writing to a
   temporary folder (never ``reports/``);
3. compares the collected ``results.csv`` and ``runs.csv`` with the reference, number by
   number with :func:`crossmodal.reportcheck.compare_values` (relative tolerance 1e-3; the
   wall-time column is not compared), prints a verdict and writes
   ``benchmarks/results/sweep_equality.json`` (wall time, number of runs, the largest
   relative difference, the differences).

The reference is the committed ``reports/main_results/smoke/`` (full mode, the default;
it costs one full main_results execution, about as long as the notebook itself with
``--max-parallel 1``), or, with ``-p`` parameters (a reduced grid), a direct papermill run
of the same reduced notebook into a second temporary folder::

    python benchmarks/sweep_equality.py                       # the full smoke table
    python benchmarks/sweep_equality.py -p tasks "['smoke_gunpoint']" \\
        -p methods "['nft', 'scratch']" -p seeds "[0]" -p epochs 2 -p max_train 16 \\
        -p max_test 16                                         # reduced, vs a direct run

Exit status: 0 equal, 1 different (or a run failed / is missing), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "main_results"
#: per-run columns that legitimately differ between two executions
VOLATILE_COLUMNS = ("wall_seconds",)
TABLES = ("results.csv", "runs.csv")


def max_relative_difference(a: Any, b: Any) -> float:
    r"""The largest :math:`|x - y| / \max(|x|, |y|)` over matching numbers of two tables.

    Numbers inside list-valued cells (learning curves, printed as ``"[...]"``) count too;
    cells that are not numbers are skipped (their equality is checked by compare_values).
    """
    if isinstance(a, str) and isinstance(b, str) and a.startswith("[") and b.startswith("["):
        try:
            a, b = json.loads(a), json.loads(b)
        except ValueError:
            return 0.0
    if isinstance(a, dict) and isinstance(b, dict):
        return max([max_relative_difference(a[k], b[k]) for k in a.keys() & b.keys()],
                   default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        return max([max_relative_difference(x, y) for x, y in zip(a, b)], default=0.0)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        if math.isnan(a) and math.isnan(b):
            return 0.0
        scale = max(abs(a), abs(b))
        return 0.0 if scale == 0 else abs(a - b) / scale
    return 0.0


def compare_tables(fresh: Path, reference: Path, *, rel: float) -> tuple[list[str], float]:
    """Differences of :data:`TABLES` between two report folders, and the max relative one."""
    from crossmodal.reportcheck import compare_values, csv_rows

    diffs, worst = [], 0.0
    for name in TABLES:
        if not (reference / name).exists():
            continue
        if not (fresh / name).exists():
            diffs.append(f"{name}: not written by the collect run")
            continue
        a, b = (csv_rows(d / name, drop=VOLATILE_COLUMNS) for d in (fresh, reference))
        diffs += compare_values(a, b, name, rel=rel)
        worst = max(worst, max_relative_difference(a, b))
    return diffs, worst


def _execute(params: dict[str, Any], out_dir: Path, *, timeout: int | None) -> None:
    """The notebook, executed with papermill into ``out_dir`` (its report goes there too)."""
    import papermill as pm

    from crossmodal.reproduce import KERNEL

    out_dir.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb"),
                        str(out_dir / f"{NOTEBOOK}.ipynb"),
                        parameters={**params, "profile": "smoke", "output_dir": str(out_dir)},
                        kernel_name=KERNEL, progress_bar=False, cwd=str(ROOT),
                        execution_timeout=timeout, log_output=False)


def check(params: dict[str, Any], *, runs_dir: Path, work: Path, max_parallel: int,
          reference: Path | None, rel: float = 1e-3, timeout_s: float = 6 * 3600) -> dict:
    """Sweep, collect, compare; the verdict as a dict (see the module docstring)."""
    from crossmodal.cli import main
    from crossmodal.sweep import jobs

    t0 = time.perf_counter()
    argv = ["sweep", str(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb"), "--profile", "smoke",
            "--executor", "local", "--max-parallel", str(max_parallel), "--gpus-per-job", "0",
            "--runs-dir", str(runs_dir)]
    for name, value in params.items():
        argv += ["-p", name, repr(value)]
    if main(argv) != 0:
        raise SystemExit("crossmodal sweep failed (its message is above)")
    states = jobs.wait_for_runs(runs_dir, timeout_s)
    t_sweep = time.perf_counter() - t0
    failed = [s for s in states if s.state != "done"]
    collected = work / "collected"
    _execute({**params, "runs_dir": str(runs_dir)}, collected, timeout=None)
    t_collect = time.perf_counter() - t0 - t_sweep
    t_direct = None
    if reference is None:  # a reduced grid: the same notebook run directly is the reference
        reference = work / "direct"
        t1 = time.perf_counter()
        _execute(params, reference, timeout=None)
        t_direct = time.perf_counter() - t1
    diffs, worst = compare_tables(collected, reference, rel=rel)
    summary = json.loads((collected / "results.json").read_text())
    missing = summary.get("missing_runs") or []
    equal = not diffs and not failed and not missing
    return {
        "verdict": "equal" if equal else "different",
        "notebook": NOTEBOOK, "profile": "smoke", "parameters": params,
        "reference": str(reference.relative_to(ROOT)) if reference.is_relative_to(ROOT)
        else "direct papermill run of the same parameters",
        "n_runs": len(states), "n_failed": len(failed), "missing_runs": missing,
        "max_parallel": max_parallel, "rel_tolerance": rel,
        "max_relative_difference": worst, "differences": diffs[:50],
        "n_differences": len(diffs),
        "wall_seconds": {"sweep_and_wait": round(t_sweep, 1), "collect": round(t_collect, 1),
                         **({"direct": round(t_direct, 1)} if t_direct is not None else {}),
                         "total": round(time.perf_counter() - t0, 1)},
        "failed": [jobs.format_status(runs_dir, failed)] if failed else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="a notebook parameter (Python "
                        "literal); any -p makes a reduced check against a direct run")
    parser.add_argument("--runs-dir", help="the sweep's runs folder (default: a temporary "
                        "one; give one to reuse finished runs)")
    parser.add_argument("--max-parallel", type=int, default=2)
    parser.add_argument("--reference", help="report folder to compare with (default: "
                        "reports/main_results/smoke without -p, a direct run with -p)")
    parser.add_argument("--rel", type=float, default=1e-3, help="relative tolerance")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/sweep_equality.json"))
    args = parser.parse_args(argv)
    from crossmodal.sweep.grids import parse_value

    params = {name: parse_value(value) for name, value in args.parameter}
    bad = sorted({"profile", "output_dir", "runs_dir"} & set(params))
    if bad:
        parser.error(f"{bad} are set by this script")
    if args.max_parallel < 1:
        parser.error("--max-parallel must be at least 1")
    reference = Path(args.reference) if args.reference else (
        None if params else ROOT / "reports" / NOTEBOOK / "smoke")
    if reference is not None and not (reference / "results.csv").exists():
        parser.error(f"{reference} has no results.csv to compare with")
    os.environ.setdefault("PYTHONPATH", str(ROOT / "lib"))  # the kernel imports these sources
    with tempfile.TemporaryDirectory(prefix="sweep_equality_") as tmp:
        runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tmp) / "runs"
        result = check(params, runs_dir=runs_dir.resolve(), work=Path(tmp),
                       max_parallel=args.max_parallel, reference=reference, rel=args.rel)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"sweep equality ({'reduced' if params else 'full'} main_results, smoke): "
          f"{result['verdict'].upper()} — {result['n_runs']} runs, "
          f"max relative difference {result['max_relative_difference']:.3g} "
          f"(tolerance {args.rel:g}), {result['wall_seconds']['total']:.0f} s wall; "
          f"written to {out}")
    for line in result["differences"][:20]:
        print("  ", line)
    return 0 if result["verdict"] == "equal" else 1


if __name__ == "__main__":
    sys.exit(main())
