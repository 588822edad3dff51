"""What a student sees in JupyterLab, checked on the notebooks' source cells.

* one figure per cell: a cell shows only its last expression, so a second ``add_figure``
  in the same cell would be saved but never displayed inline;
* the notebooks of issue 15 end with their result table (not a file listing);
* the smoke defaults are 3 seeds, and the ``parameters`` cell is tagged for papermill;
* each notebook imports the notebook layer and its one study module.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from crossmodal import notebook as cm

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(p.stem for p in FOLDER.glob("*.ipynb"))
ENDS_WITH_TABLE = ("00_quickstart", "main_results", "orca_ablations", "pare_k_schedules")


def _code(name: str) -> list:
    book = nbformat.read(FOLDER / f"{name}.ipynb", as_version=4)
    return [c for c in book.cells if c.cell_type == "code"]


@pytest.mark.parametrize("name", ALL)
def test_at_most_one_figure_per_cell_and_a_parameters_cell(name):
    code = _code(name)
    assert all(c.source.count("add_figure(") <= 1 for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])


@pytest.mark.parametrize("name", ENDS_WITH_TABLE)
def test_last_output_is_the_result_table(name):
    last = _code(name)[-1].source
    assert "format_table(table" in last and "files_text" not in last


def test_smoke_notebooks_default_to_three_seeds():
    for name in ALL:
        nb = cm.settings(name, "smoke")
        assert len(nb.seeds) >= 3, name


#: The study module of each notebook (``crossmodal.studies.<module>``).
STUDY_OF = {"00_quickstart": "orca", "main_results": "main_results", "orca_ablations": "orca",
            "pare_k_schedules": "pare", "mona_discrepancy": "mona",
            "modality_gap": "gap_adaptive", "recraft_bound_tightness": "recraft",
            "recraft_kappa_sensitivity": "recraft"}


@pytest.mark.parametrize("name", ALL)
def test_each_notebook_imports_the_notebook_layer_and_its_one_study(name):
    source = "\n".join(c.source for c in _code(name))
    assert "from crossmodal import notebook as cm" in source
    studies = set(re.findall(r"from crossmodal\.studies import (\w+)", source))
    assert studies == {STUDY_OF[name]}, f"{name} imports the studies {sorted(studies)}"
    assert "from crossmodal import studies" not in source  # the former single module
    assert f"from crossmodal.studies import {STUDY_OF[name]} as study" in source
