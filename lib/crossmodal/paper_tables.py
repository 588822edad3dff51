"""The one reader of the papers' tables: ``crossmodal/paper_results/*.csv``.

Every number, hyperparameter and note the kit quotes from a paper comes through here, so the
parsing rules live in one place: cells are read as strings (``keep_default_na=False``: an
empty cell is "lost in the extraction", its note says ``MISSING``), ``value`` becomes a float
(NaN = missing), and method names match case- and punctuation-insensitively (``PaRe`` =
``PaRE`` = ``pare``; ``Train_from_scratch`` = ``scratch``).

* :func:`paper_table`, :func:`paper_value`: a table, one cell;
* :func:`main_paper_value`, :func:`paper_main_table`: the main-table number of a task x method
  (first table of :data:`MAIN_TABLES` with one);
* :func:`hyperparameter_rows`: per task, the hyperparameters of some tables of a
  hyperparameter CSV (what :mod:`crossmodal.protocol` and :mod:`crossmodal.profiles` read);
* :func:`paper_notes`: the notes of a table, for results the papers give in words or figures.
"""

from __future__ import annotations

import csv
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from crossmodal.errors import InvalidInputError, unknown_name
from crossmodal.reporting import round_sig

#: The task keys of the papers' NAS-Bench-360 and PDEBench tables (kit registry keys).
NB360_TASKS = ("CIFAR100", "Spherical", "DarcyFlow", "PSICOV", "Cosmic", "NinaPro", "FSD50K",
               "ECG", "Satellite", "DeepSEA")
PDEBENCH_TASKS = ("Advection1D", "Burgers1D", "DiffusionReaction1D", "DiffusionSorption1D",
                  "NavierStokes1D", "DarcyFlow2D", "ShallowWater2D", "DiffusionReaction2D")


def _folder():
    return resources.files("crossmodal") / "paper_results"


def table_names() -> list[str]:
    """The names of the kit's paper tables (``paper_results/<name>.csv``)."""
    return sorted(p.name[:-4] for p in _folder().iterdir() if p.name.endswith(".csv"))


@cache
def read_table(name: str) -> pd.DataFrame:
    """``paper_results/<name>.csv``, cached and shared: do not modify it (:func:`paper_table`
    returns a copy). Cells are strings; ``value`` is a float (NaN = missing)."""
    path = _folder() / f"{name}.csv"
    if not path.is_file():
        raise unknown_name("paper table", name, table_names())
    with path.open(newline="") as f:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
    if "value" in df:
        df["value"] = pd.to_numeric(df["value"].replace("", np.nan), errors="coerce")
    return df


def paper_table(name: str) -> pd.DataFrame:
    """A copy of ``crossmodal/paper_results/<name>.csv`` (``value`` as float, NaN = missing)."""
    return read_table(name).copy()


def normalise_method(name: str) -> str:
    """A method name as the tables are matched on: lower case, letters and digits only."""
    # "PaRe", "PaRE", "PARE" and "pare" are one method; "Train_from_scratch" is "scratch".
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return {"trainfromscratch": "scratch", "gapadaptive": "gapadaptive"}.get(key, key)


def paper_value(
    table: str,
    *,
    task: str,
    method: str,
    column: str = "value",
    **filters: str,
) -> float | str | None:
    """One cell of a paper table: ``column`` of the row matching ``task``, ``method``, filters.

    Method names match case- and punctuation-insensitively (``"pare"`` finds ``PaRe``/
    ``PaRE``; ``"scratch"`` finds ``Train_from_scratch``). Returns None when no row matches
    or the cell is empty (lost in the extraction: the note says ``MISSING``). Several
    matching rows raise :class:`InvalidInputError` naming the columns that tell them apart,
    e.g. ``metric`` or ``setting``; pass one of them as a keyword.
    """
    df = read_table(table)
    for col in (column, *filters):
        if col not in df.columns:
            raise InvalidInputError(f"paper table {table!r} has no column {col!r}; "
                                    f"columns: {', '.join(df.columns)}")
    rows = df[(df["task"] == task) & (df["method"].map(normalise_method) == normalise_method(method))]
    for col, want in filters.items():
        rows = rows[rows[col] == str(want)]
    if rows.empty:
        return None
    if len(rows) > 1:
        differ = [c for c in df.columns if rows[c].nunique() > 1 and c not in ("note", "value",
                                                                               "value_raw")]
        raise InvalidInputError(
            f"{len(rows)} rows of {table!r} match task={task!r}, method={method!r}; "
            f"select one with a keyword for: {', '.join(differ) or '(identical rows)'}"
        )
    value = rows.iloc[0][column]
    if isinstance(value, float) and math.isnan(value):
        return None
    if value == "":
        return None
    return value


#: Where each method's main-table number comes from, first table with a value wins:
#: NFT/FPT/ORCA/PaRe from PaRe Tables 1/2, scratch from PaRe Table 15, MoNA from the slides'
#: MoNA tables, RECRAFT (and NFT on PDEBench) from RECRAFT Tables 1/2.
MAIN_TABLES = ("nb360_main", "pdebench_main", "pare_finetune_methods", "mona_nb360",
               "mona_pdebench", "recraft_main_nb360", "recraft_main_pdebench")


@dataclass(frozen=True)
class PaperValue:
    value: float
    table: str
    source: str
    metric: str


def main_paper_value(task: str, method: str,
                     tables: Sequence[str] = MAIN_TABLES) -> PaperValue | None:
    """The paper's number for ``task`` x ``method`` from the main tables (None: no number)."""
    for table in tables:
        df = read_table(table)
        rows = df[(df["task"] == task) & (df["method"].map(normalise_method) == normalise_method(method))]
        rows = rows[rows["value"].notna()]
        if len(rows) == 1:
            r = rows.iloc[0]
            return PaperValue(float(r["value"]), table, f"{r['source']} {r['table']}",
                              r["metric"])
    return None


def paper_main_table(methods: Sequence[str],
                     tasks: Sequence[str] = NB360_TASKS + PDEBENCH_TASKS) -> pd.DataFrame:
    """The papers' main-table numbers: one row per paper task, one column per method."""
    rows = []
    for t in tasks:
        row: dict[str, Any] = {"task": t, "metric": ""}
        for m in methods:
            pv = main_paper_value(t, m)
            row[m] = pv.value if pv else np.nan
            if pv and not row["metric"]:
                row["metric"] = pv.metric
        rows.append(row)
    return pd.DataFrame(rows)


def paper_notes(table: str, width: int = 100) -> str:
    """The ``table``/``metric``/``note`` cells of a paper table, wrapped: for results that the
    papers give in words or figures only (the notes say ``MISSING: ...``)."""
    df = read_table(table)
    out = []
    for _, r in df.iterrows():
        value = "" if pd.isna(r.get("value", np.nan)) else f" = {round_sig(float(r['value']), 3):g}"
        what = r["metric"] if "metric" in r else f"{r['component']} {r['symbol']}"
        head = f"- {r['table']}: {what}{value}"
        out.append(textwrap.fill(f"{head}. {r['note']}", width, subsequent_indent="  "))
    return "\n".join(out)


@cache
def hyperparameter_rows(name: str, tables: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Per task, ``{hyperparameter: raw value}`` of the rows of ``paper_results/<name>.csv``
    whose ``table`` is one of ``tables`` (empty values skipped); ``"__table__"`` holds the
    table the task's first row came from. Raw strings: the caller parses them (e.g.
    ``"1E-04"``, ``"[0.9, 0.98]"``).
    """
    path = _folder() / f"{name}.csv"
    if not path.is_file():
        raise unknown_name("paper table", name, table_names())
    out: dict[str, dict[str, str]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["table"] in tables and row["value"]:
                d = out.setdefault(row["task"], {"__table__": row["table"]})
                d[row["hyperparameter"]] = row["value"]
    return out
