"""A notebook's grid of runs, expanded outside the notebook (for ``crossmodal sweep``).

Each notebook builds its runs in one or more :func:`crossmodal.notebook.run_grid` calls from
its parameters. :data:`NOTEBOOK_GRIDS` holds, per notebook, a function that makes the same
calls' arguments (variants, probe, training overrides) from the same parameters and the same
library builders the notebook calls (``main_variants``, ``orca_ablation_variants``,
``pare_variants``, ``kappa_variants``, ...). The parameters' defaults are read from the
notebook's own ``parameters`` cell, and overrides applied as papermill's ``-p`` does, so
``expand("main_results", ...)`` plans exactly the runs the executed notebook asks for.
Should the two ever drift apart, the notebook's collect mode (``runs_dir``) marks the runs
it asked for and did not find.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossmodal import notebook as cm
from crossmodal.errors import InvalidInputError, unknown_name
from crossmodal.methods.recraft import BoundProbe
from crossmodal.studies import gap_adaptive, mona, orca, pare, recraft


@dataclass
class Grid:
    """The arguments of one ``run_grid`` call of a notebook."""
    variants: list
    probe: Any = None
    train_options: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- parameters


def notebook_path(notebook: str | Path, notebooks: str | Path | None = None) -> Path:
    """``notebooks/<name>.ipynb`` for a name, or the given ``.ipynb`` path."""
    p = Path(notebook)
    if p.suffix == ".ipynb":
        if not p.exists():
            raise InvalidInputError(f"no notebook at {p}")
        return p
    if notebooks is None:
        root = cm.repo_root()
        notebooks = root / "notebooks" if root is not None else Path("notebooks")
    path = Path(notebooks) / f"{p.name}.ipynb"
    if not path.exists():
        raise InvalidInputError(f"no notebook {path}; give a path to an .ipynb or a name in "
                                f"{notebooks}/")
    return path


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The values of a notebook's ``parameters`` cell (flat ``name = literal`` lines)."""
    book = json.loads(Path(path).read_text())
    for cell in book["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"])
            out = {}
            for node in ast.parse(src).body:
                if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                        and isinstance(node.targets[0], ast.Name)):
                    raise InvalidInputError(f"{path}: the parameters cell must hold only "
                                            f"`name = value` lines, found {ast.unparse(node)!r}")
                out[node.targets[0].id] = ast.literal_eval(node.value)
            return out
    raise InvalidInputError(f"{path} has no cell tagged 'parameters'")


def parse_value(text: str) -> Any:
    """A ``-p name value`` value: a Python literal (``3``, ``None``, ``['a', 'b']``) or a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def resolve_parameters(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by ``overrides``; an unknown name is an error (papermill would only
    warn, and a misspelt ``-p`` would silently sweep the default grid)."""
    bad = sorted(set(overrides) - set(defaults))
    if bad:
        raise InvalidInputError(f"unknown notebook parameter(s) {bad}; this notebook's "
                                f"parameters: {', '.join(defaults)}")
    return {**defaults, **overrides}


# --------------------------------------------------------------------------- grids


def _quickstart(nb, p: dict[str, Any]) -> list[Grid]:
    align = p.get("align_epochs")
    options = cm.method_options("orca", nb.profile, **({"align_epochs": align} if align else {}))
    return [Grid([cm.Variant("orca", "orca", options), cm.Variant("nft", "nft")])]


def _main_results(nb, p: dict[str, Any]) -> list[Grid]:
    methods = cm.as_list(p.get("methods")) or cm.available_methods()
    return [Grid(cm.main_variants(methods, nb.profile))]


def _modality_gap(nb, p: dict[str, Any]) -> list[Grid]:
    return [Grid(gap_adaptive.gap_variants(cm.as_list(p["methods"]), nb.profile,
                                           alpha=p["alpha"], beta=p["beta"], eps=p["eps"],
                                           gamma=p["gamma"]))]


def _mona_discrepancy(nb, p: dict[str, Any]) -> list[Grid]:
    return [Grid(mona.mona_variants(nb.profile),
                 probe=mona.discrepancy_probe(nb, p["trials"], p["distance"]))]


def _orca_ablations(nb, p: dict[str, Any]) -> list[Grid]:
    return [Grid(orca.orca_ablation_variants(a, nb.profile, proxies=p.get("proxies"),
                                             align_epochs=p.get("align_epochs")))
            for a in cm.as_list(p["ablations"])]


def _pare_k_schedules(nb, p: dict[str, Any]) -> list[Grid]:
    axes = {"k_schedule": cm.as_list(p["k_schedules"]), "mixing": cm.as_list(p["mixings"]),
            "selection": cm.as_list(p["selections"]), "gate": cm.as_list(p["gates"])}
    return [Grid(pare.pare_variants(a, values, nb.profile)) for a, values in axes.items() if values]


def _recraft_bound_tightness(nb, p: dict[str, Any]) -> list[Grid]:
    kappa = p.get("kappa")
    opts = cm.method_options("recraft", nb.profile, **({} if kappa is None else {"kappa": kappa}))
    return [Grid([cm.Variant("recraft", "recraft", opts)], probe=BoundProbe())]


def _recraft_kappa_sensitivity(nb, p: dict[str, Any]) -> list[Grid]:
    kappas = [float(k) for k in (cm.as_list(p.get("kappas")) or recraft.KAPPA_GRIDS[nb.profile])]
    return [Grid(recraft.kappa_variants(kappas, nb.profile))]


#: notebook name -> ``grids(settings, parameters)``: the notebook's ``run_grid`` calls.
NOTEBOOK_GRIDS: dict[str, Callable[[Any, dict[str, Any]], list[Grid]]] = {
    "00_quickstart": _quickstart,
    "main_results": _main_results,
    "modality_gap": _modality_gap,
    "mona_discrepancy": _mona_discrepancy,
    "orca_ablations": _orca_ablations,
    "pare_k_schedules": _pare_k_schedules,
    "recraft_bound_tightness": _recraft_bound_tightness,
    "recraft_kappa_sensitivity": _recraft_kappa_sensitivity,
}


def settings_for(notebook: str, params: dict[str, Any], *, check_data: bool = True):
    """The notebook's :func:`crossmodal.notebook.settings` from its parameter values."""
    return cm.settings(notebook, params.get("profile", "smoke"), tasks=params.get("tasks"),
                       seeds=params.get("seeds"), epochs=params.get("epochs"),
                       max_train=params.get("max_train"), max_test=params.get("max_test"),
                       check_data=check_data)


def expand(notebook: str, params: dict[str, Any], *, check_data: bool = True):
    """``(settings, [(planned run, its grid), ...])`` of a notebook for resolved parameters.

    Runs shared by several of the notebook's grids (an ablation's reference variant) appear
    once.
    """

    if notebook not in NOTEBOOK_GRIDS:
        raise unknown_name("notebook with a sweep grid", notebook, list(NOTEBOOK_GRIDS))
    nb = settings_for(notebook, params, check_data=check_data)
    grids = NOTEBOOK_GRIDS[notebook](nb, params)
    planned, seen = [], set()
    for g in grids:
        for run in cm.plan_grid(nb, g.variants, train_options=g.train_options, probe=g.probe):
            if run.run_id not in seen:
                seen.add(run.run_id)
                planned.append((run, g))
    return nb, planned
