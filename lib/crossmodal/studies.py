"""The method studies behind five notebooks: PaRe's ablations, MoNA's discrepancy, RECRAFT's
bound and kappa, and the gap-adaptive proposal.

Each notebook calls these functions after :func:`crossmodal.notebook.settings` (runs go
through :func:`crossmodal.notebook.run_grid`, measurements of the trained model through the
runner's ``probe``), so that the notebooks hold no training logic:

* ``pare_k_schedules``: :func:`run_pare_ablations`, :func:`pare_ablation_table`,
  :func:`pare_paper_table`, :func:`pare_k_table`, :func:`pare_ablation_checks`;
* ``mona_discrepancy``: :func:`discrepancy_frame`, :func:`discrepancy_approximation`,
  :func:`check_approximation`;
* ``recraft_bound_tightness``: :func:`bound_frame`, :func:`check_bound_above_loss`;
* ``recraft_kappa_sensitivity``: :func:`kappa_variants`, :func:`kappa_table`,
  :func:`kappa_proxy_sweep`;
* ``modality_gap``: :func:`gap_estimates`, :func:`weight_frame`, :func:`check_weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from crossmodal.errors import InvalidInputError, unknown_name
from crossmodal.notebook import (
    NB360_TASKS,
    Check,
    NotebookSettings,
    Report,
    Variant,
    _read_table,
    check_direction,
    fmt_value,
    load_splits,
    method_options,
    paper_value,
    run_grid,
    status_of,
)

# --------------------------------------------------------------------------- PaRe ablations

#: PaRe's ablations: name -> (config field, paper table, {our value: the table's setting}).
#: Table 4 (k schedules and mixing), Table 5 (gate vs random), Table 6 (gate networks).
PARE_ABLATIONS: dict[str, tuple[str, str, dict[str, str]]] = {
    "k_schedule": ("k_schedule", "pare_k_schedules", {
        "linear": "linear", "exponential": "exponential", "piecewise": "piecewise",
        "non_gradual": "non-gradual"}),
    "mixing": ("mixing", "pare_mixing_ablation", {
        "patch_replacement": "patch_replacement_linear_k (PaRe default)", "mixup": "mixup",
        "cutmix": "cutmix"}),
    "selection": ("selection", "pare_gate_ablation", {
        "gate": "gate (FC+sigmoid) patch scoring", "random": "random patch selection"}),
    "gate": ("gate", "pare_gate_network_config", {
        "fc": "FC + sigmoid (Ours)", "mlp": "MLP + sigmoid",
        "mlp_dropout": "MLP + dropout + sigmoid"}),
}

#: PaRe's own choice for each ablated field: the reference of every comparison.
PARE_DEFAULTS = {"k_schedule": "linear", "mixing": "patch_replacement", "selection": "gate",
                 "gate": "fc"}

#: Where each ablation's numbers are in the PaRe paper.
PARE_TABLES = {"k_schedule": "Table 4 (k schedules)", "mixing": "Table 4 (mixing)",
               "selection": "Table 5", "gate": "Table 6"}


def pare_variants(ablation: str, values: Sequence[str], profile: str) -> list[Variant]:
    """PaRe with one field varied (``values``; PaRe's default is added first if missing)."""
    if ablation not in PARE_ABLATIONS:
        raise unknown_name("PaRe ablation", ablation, list(PARE_ABLATIONS))
    field = PARE_ABLATIONS[ablation][0]
    values = list(dict.fromkeys([PARE_DEFAULTS[ablation], *values]))
    base = method_options("pare", profile)
    return [Variant(v, "pare", {**base, field: v}) for v in values]


def run_pare_ablations(nb: NotebookSettings, axes: dict[str, Sequence[str] | None],
                       report: Report | None = None) -> pd.DataFrame:
    """Run every ablation of ``axes`` (ablation -> values; None or empty: skipped). PaRe's
    default configuration is shared by all ablations and runs once. Rows carry ``ablation``."""
    memo: dict = {}
    frames = []
    for ablation, values in axes.items():
        if not values:
            continue
        runs = run_grid(nb, pare_variants(ablation, values, nb.profile), memo=memo)
        frames.append(runs.assign(ablation=ablation))
    if not frames:
        raise InvalidInputError("no PaRe ablation to run: give at least one of k_schedules, "
                                "mixings, selections, gates")
    runs = pd.concat(frames, ignore_index=True)
    if report is not None:
        report.add_runs(runs)
    return runs


def pare_paper_value(ablation: str, value: str, task: str) -> float | None:
    """The PaRe paper's number for one ablation value on one NAS-Bench-360 task (or None)."""
    _, table, settings = PARE_ABLATIONS[ablation]
    if value not in settings:
        return None  # e.g. the "constant" schedule: not in the paper
    df = _read_table(table)
    rows = df[(df["task"] == task) & (df["setting"] == settings[value])]
    v = rows["value"].iloc[0] if len(rows) else np.nan
    return None if pd.isna(v) else float(v)


def pare_paper_table(ablation: str, values: Sequence[str],
                     tasks: Sequence[str] = NB360_TASKS) -> pd.DataFrame:
    """The paper's table of an ablation: one row per task, one column per value."""
    _, table, _ = PARE_ABLATIONS[ablation]
    metrics = _read_table(table).groupby("task")["metric"].first()
    values = list(dict.fromkeys([PARE_DEFAULTS[ablation], *values]))
    rows = []
    for t in tasks:
        row: dict[str, Any] = {"task": t, "metric": metrics.get(t, "")}
        row.update({v: pare_paper_value(ablation, v, t) for v in values})
        rows.append(row)
    return pd.DataFrame(rows).astype({v: float for v in values})


def pare_ablation_table(runs: pd.DataFrame, profile: str) -> pd.DataFrame:
    """Per ablation x task x value: final and best test metric (mean over seeds), the paper's
    number for the task when it is a paper task, and the status of the comparison."""
    g = runs.groupby(["ablation", "task", "variant"], sort=False)
    table = g.agg(metric=("metric", "first"), lower_is_better=("lower_is_better", "first"),
                  ours=("final", "mean"), best=("best", "mean"),
                  seeds=("seed", "nunique")).reset_index()
    table["paper"] = [pare_paper_value(a, v, t) if t in NB360_TASKS else np.nan
                      for a, t, v in zip(table["ablation"], table["task"], table["variant"])]
    table["paper"] = table["paper"].astype(float)
    table["gap"] = table["ours"] - table["paper"]
    table["status"] = [status_of(profile, p) for p in table["paper"]]
    return table


def _paper_wins(ablation: str, better: str, worse: str) -> tuple[int, int, int]:
    wins = ties = n = 0
    for t in NB360_TASKS:
        a, b = pare_paper_value(ablation, better, t), pare_paper_value(ablation, worse, t)
        if a is None or b is None:
            continue
        n += 1
        wins += a < b
        ties += a == b
    return wins, ties, n


def pare_ablation_checks(table: pd.DataFrame) -> list[Check]:
    """For each ablation: does PaRe's default beat each other value on our tasks, as in the
    paper? (Observed: at smoke scale either can win.)"""
    checks = []
    for ablation in dict.fromkeys(table["ablation"]):
        sub = table[table["ablation"] == ablation]
        default = PARE_DEFAULTS[ablation]
        for v in dict.fromkeys(sub["variant"]):
            if v == default:
                continue
            wins = ties = n = 0
            for task in dict.fromkeys(sub["task"]):
                rows = sub[sub["task"] == task].set_index("variant")
                if default not in rows.index or v not in rows.index:
                    continue
                sign = 1.0 if rows["lower_is_better"].iloc[0] else -1.0
                a, b = sign * rows.loc[default, "ours"], sign * rows.loc[v, "ours"]
                n += 1
                wins += bool(a < b)
                ties += bool(a == b)
            pw, pt, pn = _paper_wins(ablation, default, v)
            paper = (f"paper {PARE_TABLES[ablation]}: {pw}/{pn} tasks, {pt} ties" if pn
                     else "not in the paper")
            checks.append(check_direction(f"PaRe's {default} beats {v}", wins * 2 > n,
                                          f"ours: {wins}/{n} tasks, {ties} ties; {paper}",
                                          paper=paper))
    return checks


def pare_k_table(runs: pd.DataFrame) -> pd.DataFrame:
    """k per fine-tuning epoch (1-based) of every k-schedule run, as the run used it."""
    from crossmodal.methods.pare import schedule_table

    rows = []
    sub = runs[runs["ablation"] == "k_schedule"] if "ablation" in runs else runs
    for _, r in sub.iterrows():
        rep = r["method_report"]
        for row in schedule_table([rep["k_schedule"]], rep["k0"], len(r["curve"]),
                                  n_patches=rep["n_patches"], seed=int(r["seed"])):
            rows.append({"task": r["task"], "schedule": row["schedule"],
                         "epoch": row["epoch"] + 1, "k": row["k"], "N": rep["n_patches"]})
    return pd.DataFrame(rows).drop_duplicates(["task", "schedule", "epoch"])


def k_wide(k_table: pd.DataFrame) -> pd.DataFrame:
    """:func:`pare_k_table` with one column per epoch (``ep1``, ``ep2``, ...), for printing."""
    wide = k_table.pivot_table(index=["task", "schedule", "N"], columns="epoch", values="k",
                               sort=False)
    wide.columns = [f"ep{int(c)}" for c in wide.columns]
    return wide.astype(int).reset_index()


def check_gradual_schedules(kinds: Sequence[str], k0: int, epochs: Sequence[int]) -> Check:
    """Asserted: every gradual schedule starts at k0 and never increases, for each horizon
    (PaRe's "k decreases" with the epoch; the non-gradual and constant ones are exempt)."""
    from crossmodal.methods.pare import schedule_table

    bad = []
    gradual = [k for k in kinds if k in ("linear", "exponential", "piecewise")]
    for total in epochs:
        for kind in gradual:
            ks = [r["k"] for r in schedule_table([kind], k0, total)]
            if ks[0] != k0 or any(b > a for a, b in zip(ks, ks[1:])):
                bad.append(f"{kind} over {total} epochs")
    return check_direction(
        "gradual k schedules start at k0 and never increase", not bad,
        f"{', '.join(gradual)} over {', '.join(map(str, epochs))} epochs"
        + (f"; fails: {', '.join(bad)}" if bad else ""), assert_holds=True,
        paper="PaRe §3: k decreases with the epoch")


def plot_k_schedules(k_table: pd.DataFrame, kinds: Sequence[str], k0: int = 3000,
                     paper_epochs: int = 60):
    """Left: k per epoch as our runs used it (k0 capped to N). Right: k over ``paper_epochs``
    epochs with the paper's k0 (ORCA trains CIFAR-100 for 60 epochs)."""
    from matplotlib.figure import Figure

    from crossmodal.methods.pare import schedule_table

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for (task, kind), grp in k_table.groupby(["task", "schedule"], sort=False):
        left.plot(grp["epoch"], grp["k"], marker="o", label=f"{kind} ({task})")
    from matplotlib.ticker import MaxNLocator

    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("fine-tuning epoch")
    left.set_ylabel("k (replaced patches)")
    left.set_title("our runs (k0 capped to N patches)", fontsize=9)
    left.legend(fontsize=7)
    long = pd.DataFrame(schedule_table(kinds, k0, paper_epochs))
    for kind, grp in long.groupby("schedule", sort=False):
        right.step(grp["epoch"] + 1, grp["k"], where="post", label=kind)
    right.set_xlabel("fine-tuning epoch")
    right.set_ylabel("k")
    right.set_title(f"k0 = {k0} over {paper_epochs} epochs", fontsize=9)
    right.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------- MoNA


def discrepancy_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run and probe of :class:`~crossmodal.methods.mona.DiscrepancyProbe`:
    task, variant, seed, epoch (0: before fine-tuning), discrepancy (Algorithm 2),
    discrepancy_exact, the test metric after that epoch, and why a task was skipped."""
    rows = []
    for _, r in runs.iterrows():
        for p in r["probes"]:
            e = int(p["epoch"])
            rows.append({"task": r["task"], "variant": r["variant"], "seed": r["seed"],
                         "epoch": e, "discrepancy": p.get("discrepancy", np.nan),
                         "discrepancy_exact": p.get("discrepancy_exact", np.nan),
                         "test_metric": r["curve"][e - 1] if e > 0 else np.nan,
                         "skipped": p.get("skipped", "")})
    return pd.DataFrame(rows)


def discrepancy_approximation(runs: pd.DataFrame, distances: Sequence[str],
                              trials: Sequence[int], task: str | None = None,
                              seed: int = 0) -> pd.DataFrame:
    """Algorithm 2's random search against the exact discrepancy on a small case: the source
    logits of the first run on ``task`` (default: the first task the probe measured) before
    fine-tuning, for each distance d and number of trials
    (:func:`~crossmodal.methods.mona.approximation_study`)."""
    from crossmodal.methods.mona import approximation_study

    for _, r in runs.iterrows():
        if task is not None and r["task"] != task:
            continue
        first = next((p for p in r["probes"] if "source_logits" in p), None)
        if first is None:
            continue
        rows = []
        for d in distances:
            for row in approximation_study(first["source_logits"], first["target_labels"],
                                           trials=trials, distance=d, seed=seed):
                rows.append({"task": r["task"], "classes": int(np.max(first["target_labels"]))
                             + 1, "source_classes": len(first["source_logits"][0]), **row})
        return pd.DataFrame(rows)
    raise InvalidInputError("no run holds source logits: run with DiscrepancyProbe on a "
                            "classification task with at most as many classes as the proxy")


def check_approximation(study: pd.DataFrame) -> list[Check]:
    """Asserted: the random search never goes below the exact minimum, and it reaches it once
    its trials cover every (subset, permutation) pair (up to a 1e-9 chance of a miss)."""
    tol = 1e-9
    above = bool((study["approx"] >= study["exact"] - tol).all())
    cover = study[study["covers_all"]]
    reach = bool(np.allclose(cover["approx"], cover["exact"], atol=tol))
    brute = study["exact_brute"].dropna() if "exact_brute" in study else pd.Series([])
    agree = bool(np.allclose(brute, study.loc[brute.index, "exact"], atol=tol)) if len(brute) \
        else True
    return [
        check_direction("Algorithm 2's approximation is >= the exact discrepancy", above,
                        f"{len(study)} (distance, trials) pairs", assert_holds=True,
                        paper="Alg. 2 minimises over a random subset of the (B, pi) pairs"),
        check_direction("with trials covering every (B, pi) pair it equals the exact value",
                        reach, "trials " + ", ".join(map(str, sorted(set(cover["trials"]))))
                        + f" for {cover['candidates'].iloc[0] if len(cover) else 0} pairs",
                        assert_holds=True),
        check_direction("the exact search (assignment per subset) equals brute force", agree,
                        f"{len(brute)} comparisons", assert_holds=True),
    ]


# --------------------------------------------------------------------------- RECRAFT


def bound_frame(runs: pd.DataFrame, epoch: str = "last") -> pd.DataFrame:
    """RECRAFT's bound terms per run from :class:`~crossmodal.methods.recraft.BoundProbe`:
    the probe after the last epoch (``epoch="last"``) or every probe (``"all"``).
    ``gap_pct`` = 100 (bound - target loss) / target loss."""
    rows = []
    for _, r in runs.iterrows():
        probes = r["probes"] if epoch == "all" else r["probes"][-1:]
        for p in probes:
            row = {"task": r["task"], "variant": r["variant"], "seed": r["seed"],
                   "epoch": p["epoch"], "test_metric": r["final"], "metric": r["metric"],
                   "skipped": p.get("skipped", "")}
            for k in ("source_error", "fa", "fld", "tf", "bound", "target_loss", "kappa"):
                row[k] = p.get(k, np.nan)
            row["gap_pct"] = 100 * p["gap"] if "gap" in p else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def check_bound_above_loss(frame: pd.DataFrame) -> Check | None:
    """Asserted: the bound is at least the target loss it bounds, on every measured run."""
    ok = frame.dropna(subset=["bound"])
    if ok.empty:
        return None
    holds = ok["bound"] >= ok["target_loss"]
    return check_direction(
        "RECRAFT's bound >= the target test loss", bool(holds.all()),
        f"{int(holds.sum())}/{len(ok)} runs; min margin "
        f"{fmt_value((ok['bound'] - ok['target_loss']).min())} nats", assert_holds=True,
        paper="App. B, Eq. 45")


def recraft_gap_claim() -> tuple[float, str]:
    """The paper's bound-tightness number (App. B: averaged gap < 29 %) and its wording."""
    v = paper_value("recraft_bound_tightness", task="ALL (averaged)", method="recraft")
    raw = paper_value("recraft_bound_tightness", task="ALL (averaged)", method="recraft",
                      column="value_raw")
    return float(v), str(raw)


def kappa_variants(kappas: Sequence[float], profile: str) -> list[Variant]:
    """RECRAFT with each kappa (the rest at the profile's options)."""
    base = method_options("recraft", profile)
    return [Variant(f"kappa={fmt_value(float(k))}", "recraft", {**base, "kappa": float(k)})
            for k in kappas]


def kappa_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task x kappa: final/best test metric (mean over seeds) and stage 1's report (FA and
    FLD after stage 1, the recalibrated source head's proxy loss/accuracy on held-out data)."""
    rows = []
    for _, r in runs.iterrows():
        rep = r["method_report"] or {}
        hold = rep.get("recalibration_holdout", {})
        rows.append({"task": r["task"], "kappa": rep.get("kappa", np.nan), "seed": r["seed"],
                     "metric": r["metric"], "lower_is_better": r["lower_is_better"],
                     "ours": r["final"], "best": r["best"], "fa_after": rep.get("fa_after"),
                     "fld_after": rep.get("fld_after"), "proxy_loss": hold.get("loss"),
                     "proxy_accuracy": hold.get("accuracy")})
    frame = pd.DataFrame(rows)
    return (frame.groupby(["task", "kappa"], sort=False)
            .agg({c: "first" if c in ("metric", "lower_is_better") else "mean"
                  for c in frame.columns if c not in ("task", "kappa", "seed")})
            .reset_index())


def recraft_kappa_range() -> tuple[float, float]:
    """RECRAFT App. E's recommended kappa range (about 0.3 to 0.5)."""
    df = _read_table("recraft_kappa_sensitivity")
    lo = df.loc[df["metric"] == "recommended kappa range lower end", "value"].iloc[0]
    hi = df.loc[df["metric"] == "recommended kappa range upper end", "value"].iloc[0]
    return float(lo), float(hi)


def kappa_proxy_sweep(nb: NotebookSettings, kappas: Sequence[float], *, task: str | None = None,
                      seed: int = 0) -> pd.DataFrame:
    """RECRAFT Fig. 6: the proxy performance of the recalibrated source head against kappa,
    for the body of ``task`` (default: the first task) with the profile's recalibration
    settings; the ``kappa=None`` row is the head without the Lipschitz penalty."""
    from crossmodal.bodies import load_body
    from crossmodal.methods import get_method
    from crossmodal.methods.recraft import proxy_features, recalibration_sweep
    from crossmodal.profiles import default_body
    from crossmodal.tasks import get_task

    cfg = get_method("recraft", **method_options("recraft", nb.profile)).config
    body = load_body(default_body(get_task(task or nb.tasks[0]), nb.profile), seed=seed)
    feats, labels = proxy_features(body, proxy=cfg.proxy, proxy_samples=cfg.proxy_samples,
                                   profile=nb.profile, seed=seed)
    rows = recalibration_sweep(feats, labels, kappas, rho=cfg.rho, epochs=cfg.recal_epochs,
                               lr=cfg.recal_lr, holdout=cfg.proxy_holdout, seed=seed)
    return pd.DataFrame(rows).assign(body=body.name, proxy_samples=len(labels))


# --------------------------------------------------------------------------- gap-adaptive


def gap_estimates(nb: NotebookSettings, distances: Sequence[str] = ("otdd", "mmd"),
                  seed: int | None = None, **options: Any) -> pd.DataFrame:
    """The modality gap D of every task under each estimator, after version A's embedder
    stage (:func:`~crossmodal.methods.gap_adaptive.estimate_task_gap`): one row per task and
    distance, with the estimator the slides prescribe for the task (``auto``: OTDD for
    discrete labels, MMD for continuous ones). ``options``: gap_adaptive_a's fields."""
    from crossmodal.methods.gap_adaptive import estimate_task_gap

    seed = nb.seeds[0] if seed is None else seed
    opts = method_options("gap_adaptive_a", nb.profile, **options)
    rows = []
    for task in nb.tasks:
        rep = estimate_task_gap(task, nb.profile, splits=load_splits(nb, task, seed), seed=seed,
                                distances=tuple(distances), **opts)
        for d in distances:
            rows.append({"task": task, "distance": d, "prescribed": rep["gap_distance"],
                         "D": rep["gaps"][d], "uses": d == rep["gap_distance"]})
    return pd.DataFrame(rows).astype({"D": float})


def weight_frame(gaps: pd.DataFrame, epochs: int, *, alpha: float, beta: float, eps: float,
                 gamma: float) -> pd.DataFrame:
    """Version A's loss weights per task and epoch for the prescribed D of each task: Option 2
    (continuous) and Option 1 (switch at Gamma)."""
    from crossmodal.methods.gap_adaptive import weight_schedule

    rows = []
    for _, g in gaps[gaps["uses"]].iterrows():
        for weighting in ("continuous", "switch"):
            for w in weight_schedule(g["D"], epochs, weighting=weighting, alpha=alpha,
                                     beta=beta, eps=eps, gamma=gamma):
                rows.append({"task": g["task"], "D": g["D"], "weighting": weighting,
                             "epoch": w["epoch"] + 1, "target_weight": w["target_weight"],
                             "source_weight": w["source_weight"]})
    return pd.DataFrame(rows)


def check_weights(weights: pd.DataFrame) -> Check:
    """Asserted: Option 2's source weight falls with the epoch, and is lower for a larger gap
    D at every epoch (the slides' intent: a large gap should focus on the target loss)."""
    cont = weights[weights["weighting"] == "continuous"]
    falls = all(bool((np.diff(g.sort_values("epoch")["source_weight"]) <= 0).all())
                for _, g in cont.groupby("task"))
    by_d = cont.sort_values("D")
    lower = all(bool((np.diff(g["source_weight"].to_numpy()) <= 1e-12).all())
                for _, g in by_d.groupby("epoch"))
    return check_direction(
        "Option 2's source weight falls with the epoch and with the gap D", falls and lower,
        f"{cont['task'].nunique()} tasks, D = "
        + ", ".join(f"{t}: {fmt_value(d)}" for t, d in
                    cont.groupby("task", sort=False)["D"].first().items()),
        assert_holds=True, paper="slides 000, slide 56 (Option 2)")


def plot_weights(weights: pd.DataFrame):
    """The source-loss weight per epoch per task: Option 2 (lines) and Option 1 (dashed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    for (task, weighting), g in weights.groupby(["task", "weighting"], sort=False):
        style = "-o" if weighting == "continuous" else "--"
        ax.plot(g["epoch"], g["source_weight"], style,
                label=f"{task} (D={fmt_value(g['D'].iloc[0])}, {weighting})")
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("source-loss weight")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)
    ax.set_title("gap-adaptive loss weights (version A)", fontsize=9)
    return fig
