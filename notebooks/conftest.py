"""nbval settings for the notebooks (``python -m pytest`` re-executes them with --nbval-lax).

Re-executing a notebook writes its report; during the test run the reports go to a
temporary folder (``$CROSSMODAL_REPORTS``, inherited by the kernel), so ``make test`` never
rewrites the committed ``reports/``.

The printed numbers are masked by ``tests/nbval_sanitize.cfg`` (they flip at rounding
boundaries across machines); instead, right after the last cell of each notebook, one more
test item compares that fresh report numerically with the committed
``reports/<notebook>/smoke/`` (:func:`crossmodal.reportcheck.compare_report_folders`,
relative tolerance 1e-3). It costs no extra execution: it reads the files the notebook just
wrote.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

if "CROSSMODAL_REPORTS" not in os.environ:
    _tmp = tempfile.mkdtemp(prefix="crossmodal-nbval-reports-")
    os.environ["CROSSMODAL_REPORTS"] = _tmp
    atexit.register(shutil.rmtree, _tmp, ignore_errors=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

COMMITTED_REPORTS = Path(__file__).resolve().parents[1] / "reports"
PROFILE = "smoke"  # nbval runs each notebook with its default parameters
_EXECUTED: set[str] = set()  # notebooks whose cells ran in this session


def pytest_runtest_logreport(report):
    if report.when == "call" and ".ipynb::Cell" in report.nodeid:
        _EXECUTED.add(Path(report.nodeid.split("::")[0]).stem)


class ReportMatchesCommitted(pytest.Item):
    """The notebook's fresh report equals the committed one within the tolerance."""

    def __init__(self, *, notebook: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.notebook = notebook

    def runtest(self) -> None:
        from crossmodal.reportcheck import REL_TOL, compare_report_folders

        committed = COMMITTED_REPORTS / self.notebook / PROFILE
        fresh = Path(os.environ["CROSSMODAL_REPORTS"]) / self.notebook / PROFILE
        if self.notebook not in _EXECUTED:
            pytest.skip("the notebook's cells did not run in this session")
        if not (committed / "results.json").exists():
            pytest.skip(f"no committed report in {committed}")
        if fresh.resolve() == committed.resolve():
            pytest.skip("CROSSMODAL_REPORTS points at the committed reports: nothing to compare")
        if not (fresh / "results.json").exists():
            pytest.fail(f"{self.notebook} wrote no results.json into {fresh}", pytrace=False)
        diffs = compare_report_folders(fresh, committed)
        if diffs:
            shown = "\n  ".join(diffs[:30]) + (f"\n  ... and {len(diffs) - 30} more"
                                                if len(diffs) > 30 else "")
            pytest.fail(f"{self.notebook}: the fresh report differs from reports/"
                        f"{self.notebook}/{PROFILE}/ beyond the relative tolerance {REL_TOL} "
                        f"({len(diffs)} difference(s)); if the change is intended, re-run "
                        "`crossmodal reproduce --profile smoke` (python -m crossmodal.reproduce "
                        f"--update-notebooks) and commit:\n  {shown}", pytrace=False)

    def reportinfo(self):
        return self.path, None, f"{self.notebook}::report matches reports/{self.notebook}/smoke"


@pytest.hookimpl(trylast=True)  # after -k/-m deselection
def pytest_collection_modifyitems(session, config, items):
    # each notebook trains models for up to a minute: the same class as the e2e tests
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
    # one numeric report check after the last cell of every notebook run in full
    out, i = [], 0
    while i < len(items):
        item = items[i]
        out.append(item)
        parent = getattr(item, "parent", None)
        nb_file = str(item.fspath).endswith(".ipynb") and hasattr(item, "cell_num")
        last = i + 1 == len(items) or getattr(items[i + 1], "parent", None) is not parent
        if nb_file and last and item.cell_num == _last_cell(parent):
            check = ReportMatchesCommitted.from_parent(parent, name="report-matches-committed",
                                                       notebook=Path(str(item.fspath)).stem)
            check.add_marker(pytest.mark.slow)
            out.append(check)
        i += 1
    items[:] = out


def _last_cell(nb_file) -> int:
    cells = getattr(getattr(nb_file, "nb", None), "cells", [])
    return sum(c.cell_type == "code" for c in cells) - 1
