"""Batch reproduction: execute every notebook in ``notebooks/`` with papermill into ``reports/``.

``crossmodal reproduce --profile smoke [--only NAME ...]`` (what ``make reproduce`` calls)
runs each notebook with ``-p profile <profile> -p output_dir reports/<nb>/<profile>`` on the
Jupyter kernel ``crossmodal`` (installed into the venv by ``make setup``), writes the
executed notebook to ``reports/<nb>/<profile>/<nb>.ipynb``, continues past a failing
notebook (its traceback goes to ``error.txt`` beside it), exits non-zero listing the
failures, and regenerates ``reports/index.md``: one table of every result of every report
folder, with the paper value, ours and the status.

``--update-notebooks`` (smoke profile only) copies each executed notebook back into
``notebooks/`` without papermill's injected-parameters cell, so the committed notebooks
carry fresh smoke outputs for the nbval regression check.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from crossmodal.errors import CrossmodalError, InvalidInputError
from crossmodal.notebook import fmt_value
from crossmodal.profiles import get_profile

KERNEL = "crossmodal"
PROFILE_ORDER = ("smoke", "lab", "paper")


def list_notebooks(notebooks: str | Path = "notebooks") -> list[str]:
    """Notebook names (file stems) in ``notebooks/``, sorted (``00_quickstart`` first)."""
    folder = Path(notebooks)
    if not folder.is_dir():
        raise InvalidInputError(f"no notebooks folder at {folder.absolute()}; run from the "
                                "repository root or pass --notebooks PATH/TO/notebooks")
    return sorted(p.stem for p in folder.glob("*.ipynb") if not p.name.startswith("."))


def select_notebooks(available: list[str], only: list[str] | None) -> list[str]:
    """``only`` (names with or without ``.ipynb``) checked against ``available``."""
    if not only:
        return available
    wanted = [Path(n).stem if n.endswith(".ipynb") else n for n in only]
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise InvalidInputError(f"unknown notebook(s) {', '.join(unknown)}; notebooks: "
                                f"{', '.join(available)}")
    return [n for n in available if n in wanted]


def kernel_available(name: str = KERNEL) -> bool:
    from jupyter_client.kernelspec import KernelSpecManager

    return name in KernelSpecManager().find_kernel_specs()


def run_notebook(
    name: str,
    profile: str,
    *,
    notebooks: Path,
    reports: Path,
    kernel: str = KERNEL,
    progress: bool = True,
    timeout: int | None = None,
    runs_dir: str | Path | None = None,
) -> tuple[bool, float, str]:
    """Execute one notebook; return (ok, seconds, error message).

    ``runs_dir`` (a ``crossmodal sweep --runs-dir``) is passed as the notebook's ``runs_dir``
    parameter: it collects the finished runs instead of training.
    """
    import papermill as pm

    out_dir = reports / name / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    # a stale results.json would make a failed run look complete in the index
    for stale in ("results.json", "error.txt"):
        (out_dir / stale).unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(notebooks / f"{name}.ipynb"), str(out_dir / f"{name}.ipynb"),
            parameters={"profile": profile, "output_dir": str(out_dir),
                        **({"runs_dir": str(Path(runs_dir).resolve())} if runs_dir else {})},
            kernel_name=kernel, progress_bar=progress, cwd=os.getcwd(),
            execution_timeout=timeout, log_output=False,
        )
        if not (out_dir / "results.json").exists():
            raise CrossmodalError(f"{name} ran but wrote no results.json (does it call "
                                  "report.write?)")
        return True, time.perf_counter() - t0, ""
    except Exception as err:  # keep going; every failure is listed at the end
        seconds = time.perf_counter() - t0
        msg = _short_error(err)
        (out_dir / "error.txt").write_text(f"{msg}\n\n{traceback.format_exc()}")
        return False, seconds, msg


def _last_seconds(reports: Path, name: str, profile: str) -> float:
    """The wall time of a notebook's last complete report (0 when there is none)."""
    try:
        doc = json.loads((reports / name / profile / "results.json").read_text())
        return float(doc.get("wall_seconds") or 0.0)
    except (OSError, ValueError):
        return 0.0


def _short_error(err: Exception) -> str:
    ename = getattr(err, "ename", None)  # papermill's PapermillExecutionError
    if ename:
        return f"{ename}: {getattr(err, 'evalue', '')}".strip()
    return f"{type(err).__name__}: {err}"


def update_notebook(name: str, profile: str, *, notebooks: Path, reports: Path) -> Path:
    """Copy an executed notebook back to ``notebooks/`` minus papermill's injected cell."""
    import nbformat

    if profile != "smoke":
        raise InvalidInputError("only smoke outputs are committed to notebooks/ "
                                "(nbval re-runs them in `make test`)")
    book = nbformat.read(reports / name / profile / f"{name}.ipynb", as_version=4)
    book.cells = [c for c in book.cells
                  if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for cell in book.cells:  # papermill's per-cell timing metadata changes every run
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
    book.metadata.pop("papermill", None)
    target = notebooks / f"{name}.ipynb"
    nbformat.write(book, target)
    return target


def reproduce(
    profile: str = "smoke",
    only: list[str] | None = None,
    reports: str | Path = "reports",
    notebooks: str | Path = "notebooks",
    progress: bool = True,
    kernel: str = KERNEL,
    timeout: int | None = None,
    update_notebooks: bool = False,
    runs_dir: str | Path | None = None,
    workers: int = 2,
) -> int:
    """Run the notebooks with papermill; write ``reports/index.md``; 0 when all succeeded.

    With ``runs_dir`` every notebook collects its runs from that sweep folder (no training).
    ``workers`` notebooks run at once, each in its own process and Jupyter kernel with one
    torch thread (the notebooks pin it), so two workers keep a 2-core machine busy without
    oversubscribing it. The longest notebooks (by the wall time of their last report)
    start first, so the total is close to max(longest, sum / workers).
    """
    profile = get_profile(profile).name
    notebooks, reports = Path(notebooks), Path(reports)
    names = select_notebooks(list_notebooks(notebooks), only)
    if runs_dir is not None and not Path(runs_dir).is_dir():
        raise InvalidInputError(f"--runs-dir {runs_dir} is not a folder; give the --runs-dir of "
                                "your `crossmodal sweep` runs")
    if not kernel_available(kernel):
        raise CrossmodalError(
            f"the Jupyter kernel {kernel!r} is not installed; run `make setup`, or "
            f"`python -m ipykernel install --sys-prefix --name {kernel}` inside the venv"
        )
    status: dict[str, dict[str, Any]] = {}
    failures = []
    order = sorted(names, key=lambda n: -_last_seconds(reports, n, profile))
    kw = dict(notebooks=notebooks, reports=reports, kernel=kernel, progress=False,
              timeout=timeout, runs_dir=runs_dir)
    t0 = time.perf_counter()

    def done(i: int, name: str, ok: bool, secs: float, msg: str) -> None:
        status[name] = {"ok": ok, "seconds": secs, "error": msg}
        if progress:
            print(f"[{i}/{len(names)}] {name}: {'ok' if ok else 'FAILED'} in {secs:.0f} s"
                  + (f" ({msg})" if msg else ""), flush=True)
        if ok and update_notebooks:
            update_notebook(name, profile, notebooks=notebooks, reports=reports)
        if not ok:
            failures.append((name, msg))

    if workers <= 1:
        for i, name in enumerate(order, start=1):
            if progress:
                print(f"[{i}/{len(names)}] {name} ({profile}) ...", flush=True)
            done(i, name, *run_notebook(name, profile, **{**kw, "progress": progress}))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # one torch/BLAS thread per kernel: the kernels inherit the environment
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("MKL_NUM_THREADS", "1")
        if progress:
            print(f"running {len(names)} notebooks in {workers} worker processes "
                  f"(longest first): {', '.join(order)}", flush=True)
        with ProcessPoolExecutor(max_workers=workers,
                                 mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(run_notebook, name, profile, **kw): name for name in order}
            for i, fut in enumerate(as_completed(futures), start=1):
                done(i, futures[fut], *fut.result())
    failures.sort(key=lambda f: names.index(f[0]))
    wall = time.perf_counter() - t0
    index = write_index(reports, status={profile: status})
    total = sum(s["seconds"] for s in status.values())
    print(f"\n{len(names) - len(failures)}/{len(names)} notebooks ok in {wall:.0f} s wall "
          f"({total:.0f} s of notebook time, {max(workers, 1)} worker(s)); index: {index}")
    if failures:
        print(f"Failed notebooks (the executed notebook and error.txt are in {reports}/<nb>/"
              f"{profile}/):")
        for name, msg in failures:
            print(f"  {name}: {msg}")
        return 1
    return 0


# --------------------------------------------------------------------------- index


def collect_reports(reports: Path) -> list[dict[str, Any]]:
    """Every report folder ``reports/<nb>/<profile>/``: its results.json (or its failure)."""
    found = []
    for folder in sorted(p for p in reports.glob("*/*") if p.is_dir()):
        name, profile = folder.parent.name, folder.name
        if profile not in PROFILE_ORDER:
            continue
        entry: dict[str, Any] = {"notebook": name, "profile": profile, "folder": folder}
        res = folder / "results.json"
        if res.exists():
            try:
                entry["results"] = json.loads(res.read_text())
            except json.JSONDecodeError as err:
                entry["error"] = f"unreadable results.json: {err}"
        elif (folder / "error.txt").exists():
            entry["error"] = (folder / "error.txt").read_text().splitlines()[0]
        else:
            entry["error"] = "incomplete: no results.json"
        found.append(entry)
    return found


def write_index(reports: str | Path,
                status: dict[str, dict[str, dict[str, Any]]] | None = None) -> Path:
    """Regenerate ``reports/index.md`` from every report folder.

    ``status`` ({profile: {notebook: {"ok", "seconds", "error"}}}) adds this run's wall times
    and failures; folders not run this time keep the state their files show.
    """
    reports = Path(reports)
    status = status or {}
    entries = collect_reports(reports)
    lines = ["# Reproduction index", "",
             "Generated by `crossmodal reproduce` (`make reproduce`) from `reports/<notebook>/"
             "<profile>/results.json`. Smoke results run offline tasks with a small body, so "
             "they are compared with the papers in *direction* only (see each notebook's "
             "checks); `compared` rows run the papers' protocol.", ""]
    for profile in PROFILE_ORDER:
        mine = [e for e in entries if e["profile"] == profile]
        if not mine:
            continue
        lines += [f"## {profile} profile", "", "| notebook | status | seconds | checks | report |",
                  "|---|---|---|---|---|"]
        for e in mine:
            st = status.get(profile, {}).get(e["notebook"], {})
            res = e.get("results")
            secs = st.get("seconds", res.get("wall_seconds") if res else None)
            checks = res.get("checks", []) if res else []
            held = sum(c["holds"] for c in checks)
            state = "ok" if res else f"FAILED: {e.get('error', '')}"
            rel = f"{e['notebook']}/{profile}/summary.md" if res else \
                f"{e['notebook']}/{profile}/error.txt"
            lines.append(f"| {e['notebook']} | {state} | "
                         f"{'-' if secs is None else f'{secs:.0f}'} | "
                         f"{held}/{len(checks)} hold | [{rel}]({rel}) |")
        lines += ["", "| notebook | task | method | metric | paper | ours (mean ± std) | status |",
                  "|---|---|---|---|---|---|---|"]
        for e in mine:
            res = e.get("results")
            if not res:
                lines.append(f"| {e['notebook']} | - | - | - | - | - | FAILED |")
                continue
            for r in res.get("results", []):
                method = r.get("variant") or r.get("method", "")
                if r.get("ablation"):
                    method = f"{r['ablation']}: {method}"
                ours = r.get("ours ± std") or fmt_value(r.get("ours"))  # mean ± std over seeds
                lines.append(
                    f"| {e['notebook']} | {r.get('task', '')} | {method} | {r.get('metric', '')} "
                    f"| {fmt_value(r.get('paper'))} | {ours} | {r.get('status', '')} |")
        lines += ["", "Direction checks:", ""]
        for e in mine:
            for c in (e.get("results") or {}).get("checks", []):
                mark = c.get("verdict") or ("holds" if c["holds"] else "does NOT hold")
                kind = "asserted" if c.get("asserted") else "observed"
                lines.append(f"- {e['notebook']}: [{mark}, {kind}] {c['claim']}: {c['detail']}")
        lines.append("")
    path = reports / "index.md"
    reports.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m crossmodal.reproduce``: the same as ``crossmodal reproduce`` plus options."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m crossmodal.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="smoke", choices=list(PROFILE_ORDER))
    p.add_argument("--only", nargs="*", help="only these notebooks")
    p.add_argument("--reports", default="reports")
    p.add_argument("--notebooks", default="notebooks")
    p.add_argument("--kernel", default=KERNEL)
    p.add_argument("--timeout", type=int, help="seconds per cell before giving up")
    p.add_argument("--update-notebooks", action="store_true",
                   help="copy the executed smoke notebooks back into notebooks/ (for nbval)")
    p.add_argument("--workers", type=int, default=2,
                   help="notebooks run at once, one process and one thread each (default 2)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--runs-dir", help="collect the runs of this `crossmodal sweep` folder")
    args = p.parse_args(argv)
    try:
        return reproduce(args.profile, args.only, args.reports, args.notebooks,
                         not args.no_progress, args.kernel, args.timeout, args.update_notebooks,
                         runs_dir=args.runs_dir, workers=args.workers)
    except CrossmodalError as err:
        print(f"crossmodal reproduce: error: {err}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
