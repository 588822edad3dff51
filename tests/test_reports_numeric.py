"""The numeric comparison of notebook reports, and the nbval sanitizer that relies on it.

During ``make test`` nbval re-executes each notebook, which writes its report into a
temporary folder; ``notebooks/conftest.py`` then compares that report with the committed
``reports/<notebook>/smoke/`` through :func:`crossmodal.reportcheck.compare_report_folders`
(relative tolerance 1e-3, absolute 1e-6). These tests check the comparison itself on the
committed reports: 7th-digit noise passes, a real change of a result fails.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from crossmodal.reportcheck import REL_TOL, compare_report_folders, compare_values

ROOT = Path(__file__).resolve().parents[1]
REPORTS = sorted(p.parent for p in (ROOT / "reports").glob("*/smoke/results.json"))


def _perturb(obj, factor):
    """Every float of a JSON value multiplied by ``factor`` (ints and bools kept)."""
    if isinstance(obj, float):
        return obj * factor
    if isinstance(obj, list):
        return [_perturb(v, factor) for v in obj]
    if isinstance(obj, dict):
        return {k: _perturb(v, factor) for k, v in obj.items()}
    return obj


def _first_result_value(doc):
    for row in doc.get("results", []):
        if isinstance(row.get("ours"), float) and row["ours"] != 0:
            return row
    pytest.skip("this report has no numeric result")


@pytest.mark.parametrize("folder", REPORTS, ids=lambda p: p.parent.name)
def test_seventh_digit_noise_passes_and_a_changed_result_fails(folder, tmp_path):
    doc = json.loads((folder / "results.json").read_text())
    fresh = tmp_path / "fresh"
    fresh.mkdir()

    noisy = _perturb(doc, 1 + 3e-7)  # what another machine of the same kind gives
    (fresh / "results.json").write_text(json.dumps(noisy))
    shutil.copy(folder / "results.csv", fresh / "results.csv")
    assert compare_report_folders(fresh, folder) == []

    changed = copy.deepcopy(doc)
    row = _first_result_value(changed)
    row["ours"] *= 1 + 10 * REL_TOL  # a real change: 1 %
    (fresh / "results.json").write_text(json.dumps(changed))
    diffs = compare_report_folders(fresh, folder)
    assert diffs and any(".ours" in d for d in diffs)


def test_volatile_keys_are_ignored_and_structure_changes_are_caught():
    a = {"wall_seconds": 1.0, "versions": {"torch": "2.1"}, "runs": [{"final": 30.0}]}
    b = {"wall_seconds": 9.0, "versions": {"torch": "2.2"}, "runs": [{"final": 30.0}]}
    assert compare_values(a, b) == []
    assert compare_values({"runs": [1.0]}, {"runs": [1.0, 2.0]})
    assert compare_values({"holds": True}, {"holds": False})
    assert compare_values({"x": 1.0}, {"y": 1.0})
    assert compare_values({"tf": 1.68e-07}, {"tf": -3.1e-07}) == []  # below the abs tolerance


def test_numbers_in_text_may_differ_by_one_unit_in_the_last_printed_digit():
    assert compare_values("ours: 3/4 tasks; mean 3.12 %", "ours: 3/4 tasks; mean 3.11 %") == []
    assert compare_values("mean 3.12 %", "mean 3.10 %")
    assert compare_values("ours: 2/4 tasks", "ours: 3/4 tasks")  # small integers are counts
    assert compare_values("gap 549 %", "gap 550 %") == []  # 3 significant digits, rounded
    assert compare_values("orca beats nft", "nft beats orca")


def test_the_csv_is_compared_too(tmp_path):
    folder = REPORTS[0]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(folder / "results.json", fresh / "results.json")
    text = (folder / "results.csv").read_text().splitlines()
    header, first = text[0].split(","), text[1].split(",")
    col = header.index("ours")
    first[col] = str(float(first[col]) * 1.05 + 1.0)
    (fresh / "results.csv").write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
    assert any(d.startswith("results.csv") for d in compare_report_folders(fresh, folder))


def _sanitize(text: str) -> str:
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text())
    for regex, replace in patterns:
        text = re.sub(regex, replace, text)
    return text


def test_the_sanitizer_hides_rounding_flips_but_not_the_table_structure():
    committed = ("              task variant  bound gap_pct\n"
                 "    smoke_gunpoint recraft   3.12     549\n"
                 "[holds, asserted] bound >= loss: 9/9 runs; min margin 3.2 nats\n")
    fresh = ("              task variant  bound gap_pct\n"
             "    smoke_gunpoint recraft   3.11     550\n"
             "[holds, asserted] bound >= loss: 9/9 runs; min margin 3.21 nats\n")
    assert _sanitize(committed) == _sanitize(fresh)
    other = fresh.replace("recraft", "orca")
    assert _sanitize(committed) != _sanitize(other)
    assert _sanitize(committed) != _sanitize(fresh.replace("[holds,", "[does NOT hold,"))
    # names that contain digits stay readable
    assert "MAE_8" in _sanitize("MAE_8 1D 00_quickstart") and "1D" in _sanitize("1D")


pytest_plugins = ["pytester"]


@pytest.mark.slow
def test_nbval_compares_each_notebooks_fresh_report_with_the_committed_one(pytester,
                                                                             monkeypatch):
    """The hook in notebooks/conftest.py, on a two-cell notebook (no training)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    monkeypatch.delenv("CROSSMODAL_REPORTS", raising=False)
    nbs = pytester.path / "notebooks"
    nbs.mkdir()
    shutil.copy(ROOT / "notebooks" / "conftest.py", nbs / "conftest.py")
    write = ("import json, os, pathlib\n"
             "out = pathlib.Path(os.environ['CROSSMODAL_REPORTS']) / 'tiny' / 'smoke'\n"
             "out.mkdir(parents=True, exist_ok=True)\n"
             "(out / 'results.json').write_text(json.dumps({'results': [{'ours': 30.0000001,"
             " 'wall_seconds': 5.0}]}))")
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1"), new_code_cell(write)]),
                   nbs / "tiny.ipynb")
    committed = pytester.path / "reports" / "tiny" / "smoke"
    committed.mkdir(parents=True)
    args = ["-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env", "-rA", "-q",
            "notebooks"]

    (committed / "results.json").write_text(json.dumps({"results": [{"ours": 30.0}]}))
    ok = pytester.runpytest_subprocess(*args)
    ok.assert_outcomes(passed=3)
    assert "report-matches-committed" in ok.stdout.str()

    (committed / "results.json").write_text(json.dumps({"results": [{"ours": 32.5}]}))
    bad = pytester.runpytest_subprocess(*args)
    bad.assert_outcomes(passed=2, failed=1)
    assert "results.json.results[0].ours: 30.0000001 != committed 32.5" in bad.stdout.str()
