"""A notebook's report folder, ``reports/<notebook>/<profile>/``: ``results.json`` (schema
:data:`RESULTS_SCHEMA`, written last, so a folder without it is an incomplete run),
``results.csv`` (the comparison table), ``runs.csv`` (one row per run), ``summary.md``,
``*.png`` figures, and the executed notebook written by papermill.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crossmodal.notebook.grid import DRY_RUN_STATUS, is_dry_run, slug
from crossmodal.notebook.settings import NotebookSettings, display_path
from crossmodal.notebook.tables import Check, check_direction, markdown_table, records
from crossmodal.reporting import package_versions, write_json_atomic

#: Version tag of the ``results.json`` layout shared by every notebook.
RESULTS_SCHEMA = "crossmodal.notebook/1"

#: Files of a report folder; removed when a notebook starts, so a failed run never leaves a
#: folder that looks complete (``results.json`` is written last).
REPORT_FILES = ("results.json", "results.csv", "runs.csv", "summary.md")


class Report:
    """Collects a notebook's runs, tables, checks and figures; writes the report folder.

    Creating a report removes the previous report files of its folder, so a notebook that
    fails halfway leaves no ``results.json`` (the marker of a complete report).
    """
    def __init__(self, settings: NotebookSettings, parameters: dict[str, Any] | None = None):
        self.settings = settings
        self.parameters = dict(parameters or {})
        self.runs = pd.DataFrame()
        self.checks: list[Check] = []
        self.figures: list[str] = []
        self.extra: dict[str, Any] = {}
        self._t0 = time.perf_counter()
        out = settings.output_dir
        out.mkdir(parents=True, exist_ok=True)
        for name in REPORT_FILES:
            (out / name).unlink(missing_ok=True)
        for png in out.glob("*.png"):
            png.unlink()

    def add_runs(self, runs: pd.DataFrame) -> None:
        self.runs = pd.concat([self.runs, runs], ignore_index=True)

    def add_check(self, check: Check | None) -> Check | None:
        """Record a direction check (None is ignored: the check did not apply)."""
        if check is not None:
            self.checks.append(check)
        return check

    def add_figure(self, fig, name: str):
        """Save a matplotlib figure as ``<name>.png`` (atomically); return it for display.

        Figures are built on :class:`matplotlib.figure.Figure` (no pyplot, any backend), so
        the returned ``IPython.display.Image`` is what shows them in a notebook.
        """
        fname = f"{slug(name)}.png"
        path = self.settings.output_dir / fname
        _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
        self.figures.append(fname)
        try:
            from IPython.display import Image
        except ImportError:  # outside Jupyter: the file is what matters
            return fname
        return Image(data=path.read_bytes(), format="png")

    def checks_text(self) -> str:
        return "\n".join(c.line() for c in self.checks) or "(no direction checks)"

    def write(self, table: pd.DataFrame, *, summary: str = "",
              columns: Sequence[str] | None = None) -> Path:
        """Write results.csv, runs.csv, summary.md, then results.json; return the folder.

        ``table`` has one row per result with at least task, variant (or method), metric,
        ours, and optionally paper, gap, status (what ``reports/index.md`` lists).
        """
        s, out = self.settings, self.settings.output_dir
        wall = time.perf_counter() - self._t0
        if s.runs_dir is not None and not any(c.claim == COLLECT_CLAIM for c in self.checks):
            self.add_check(collect_check(s))
        table = table.copy()
        if "variant" not in table:
            table["variant"] = table["method"]
        for col, default in (("paper", np.nan), ("status", "")):
            if col not in table:
                table[col] = default
        dry = is_dry_run(self.runs)
        if dry:  # numbers of a dry run are never compared with a paper
            for col in ("paper", "gap", "rel_gap_pct", "rank_paper"):
                if col in table:
                    table[col] = np.nan
            table["status"] = DRY_RUN_STATUS
            summary = ("**DRY RUN** (--limit-batches / --batch-size or fixture data): these "
                       "numbers only show that the pipeline runs; they are not results and "
                       "are not compared with any paper.\n\n" + summary)
        _atomic_write(out / "results.csv", lambda f: f.write(table.to_csv(index=False).encode()))
        runs = self.runs.drop(columns=["method_report", "probes"], errors="ignore")
        _atomic_write(out / "runs.csv", lambda f: f.write(runs.to_csv(index=False).encode()))
        md = [f"# {s.notebook} ({s.profile} profile{', DRY RUN' if dry else ''})", "",
              summary.strip(), "",
              markdown_table(table, columns), "", "## Direction checks", "",
              "A *sanity check* holds by construction (it tests the code); a *paper claim* "
              "is checked on our runs and can fail.", "",
              *([f"- {c.line()}" for c in self.checks] or ["- (none)"]), "",
              *[f"![{f}]({f})" for f in self.figures], "",
              f"Wall time: {wall:.0f} s. Seeds: {', '.join(map(str, s.seeds))}.", ""]
        _atomic_write(out / "summary.md", lambda f: f.write("\n".join(md).encode()))
        doc = {
            "schema": RESULTS_SCHEMA,
            "notebook": s.notebook,
            "profile": s.profile,
            "dry_run": dry,
            "parameters": self.parameters,
            "settings": {k: (str(v) if isinstance(v, Path) else v)
                         for k, v in dataclasses.asdict(s).items()
                         if k not in ("output_dir", "data_root", "runs_dir", "missing_runs")},
            "seeds": s.seeds,
            "runs": records(self.runs),
            "results": records(table),
            "paper": records(table[["task", "variant", "paper"]].dropna())
            if "paper" in table else [],
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "figures": self.figures,
            "extra": self.extra,
            **({"runs_dir": display_path(s.runs_dir), "missing_runs": list(s.missing_runs)}
               if s.runs_dir is not None else {}),
            "versions": package_versions(),
            "wall_seconds": wall,
            "status": "complete",
        }
        write_json_atomic(doc, out / "results.json")
        os.chmod(out / "results.json", 0o644)
        return out

    def files_text(self) -> str:
        """The report's files, as the notebook prints them."""
        out = self.settings.output_dir
        names = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
        return f"{display_path(out)}/: " + ", ".join(names)


COLLECT_CLAIM = "every run of the grid is finished in runs_dir"


def collect_check(nb: NotebookSettings) -> Check:
    """The mark of a report collected from a sweep: which runs of its grid were missing."""
    missing = nb.missing_runs
    detail = (f"{len(missing)} missing (not in the table): {', '.join(missing)}" if missing
              else "all collected")
    return check_direction(COLLECT_CLAIM, not missing,
                           f"{display_path(nb.runs_dir)}: {detail}",
                           paper="crossmodal sweep --status shows why")


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; reports are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
