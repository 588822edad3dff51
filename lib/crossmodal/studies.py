"""The method studies behind five notebooks: PaRe's ablations, MoNA's discrepancy, RECRAFT's
bound and kappa, and the gap-adaptive proposal.

Each notebook calls these functions after :func:`crossmodal.notebook.settings` (runs go
through :func:`crossmodal.notebook.run_grid`, measurements of the trained model through the
runner's ``probe``), so that the notebooks hold no training logic:

* ``pare_k_schedules``: :func:`run_pare_ablations`, :func:`pare_ablation_table`,
  :func:`pare_paper_table`, :func:`pare_k_table`, :func:`pare_ablation_checks`;
* ``mona_discrepancy``: :func:`discrepancy_frame`, :func:`discrepancy_approximation`,
  :func:`check_approximation`;
* ``recraft_bound_tightness``: :func:`bound_frame`, :func:`check_bound_above_loss`,
  :func:`bound_step_checks`, :func:`check_kappa_certified`;
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
    _records,
    check_direction,
    fmt_value,
    load_splits,
    mean_pm_std,
    method_options,
    paper_value,
    run_grid,
    status_of,
    verdict_check,
)


def records(df: pd.DataFrame) -> list[dict]:
    """A table as JSON-able records (NaN becomes None), for ``report.extra``."""
    return _records(df)


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
                  ours=("final", "mean"), ours_std=("final", "std"), best=("best", "mean"),
                  seeds=("seed", "nunique")).reset_index()
    table["ours ± std"] = mean_pm_std(table["ours"], table["ours_std"])
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


def pare_ablation_checks(table: pd.DataFrame, runs: pd.DataFrame | None = None) -> list[Check]:
    """For each ablation: does PaRe's default beat each other value on our tasks, as in the
    paper? (Observed: at smoke scale either can win.) With ``runs`` (one row per run), each
    claim gets a paired verdict over the (task, seed) pairs (:func:`verdict_check`)."""
    checks = []
    if runs is not None:
        for ablation in dict.fromkeys(table["ablation"]):
            sub = runs[runs["ablation"] == ablation]
            default = PARE_DEFAULTS[ablation]
            for v in dict.fromkeys(sub["variant"]):
                if v == default:
                    continue
                pw, pt, pn = _paper_wins(ablation, default, v)
                paper = (f"paper {PARE_TABLES[ablation]}: {pw}/{pn} tasks, {pt} ties" if pn
                         else "not in the paper")
                c = verdict_check(sub, default, v, claim=f"PaRe's {default} beats {v}",
                                  paper=paper)
                if c is not None:
                    checks.append(c)
        return checks
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
    right.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    right.set_ylabel("k")
    right.set_title(f"k0 = {k0} over {paper_epochs} epochs", fontsize=9)
    right.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------- MoNA


def paper_notes(table: str, width: int = 100) -> str:
    """The ``table``/``metric``/``note`` cells of a paper table, wrapped: for results that the
    papers give in words or figures only (the notes say ``MISSING: ...``)."""
    import textwrap

    df = _read_table(table)
    out = []
    for _, r in df.iterrows():
        value = "" if pd.isna(r.get("value", np.nan)) else f" = {fmt_value(r['value'])}"
        what = r["metric"] if "metric" in r else f"{r['component']} {r['symbol']}"
        head = f"- {r['table']}: {what}{value}"
        out.append(textwrap.fill(f"{head}. {r['note']}", width, subsequent_indent="  "))
    return "\n".join(out)


def mona_variants(profile: str) -> list[Variant]:
    """NFT and MoNA (with the profile's MoNA options)."""
    return [Variant("nft", "nft"), Variant("mona", "mona", method_options("mona", profile))]


def discrepancy_probe(nb: NotebookSettings, trials: int, distance: str):
    """A :class:`~crossmodal.methods.mona.DiscrepancyProbe` with MoNA's proxy settings for the
    profile (the same source classifier as MoNA's own report)."""
    from crossmodal.methods import get_method
    from crossmodal.methods.mona import DiscrepancyProbe

    cfg = get_method("mona", **method_options("mona", nb.profile)).config
    return DiscrepancyProbe(trials=int(trials), distance=distance, proxy=cfg.proxy,
                            proxy_samples=cfg.proxy_samples, seed=nb.seeds[0])


def check_discrepancy_trend(frame: pd.DataFrame, variant: str = "nft") -> list[Check]:
    """Per task: is Algorithm 2's D (pretrained body, current embedder) after the last
    fine-tuning epoch above D before fine-tuning? (Observed, a claim that can fail.)

    The slides' finding (Fig. 16: longer fine-tuning distorts the source knowledge more, on
    every target but CIFAR-100) is measured differently, by linear probing of the fine-tuned
    model on CIFAR-10, and gives no discrepancy numbers: this is a related direction on a
    different quantity, not a check of Fig. 16's numbers."""
    checks = []
    sub = frame[(frame["variant"] == variant) & frame["discrepancy_exact"].notna()]
    for task, g in sub.groupby("task", sort=False):
        g = g.groupby("epoch")["discrepancy_exact"].mean().sort_index()  # mean over seeds
        first, last = g.iloc[0], g.iloc[-1]
        seeds = sub[sub["task"] == task]["seed"].nunique() if "seed" in sub else 1
        checks.append(check_direction(
            f"{task}: fine-tuning ({variant}) raises Algorithm 2's discrepancy", bool(last > first),
            "exact D per epoch " + ", ".join(f"{int(e)}: {fmt_value(d)}" for e, d in g.items())
            + (f" (mean of {seeds} seeds)" if seeds > 1 else ""),
            paper="related to slides Fig. 16 (linear probing on CIFAR-10: a different "
                  "quantity)"))
    return checks


def plot_discrepancy(frame: pd.DataFrame):
    """D per fine-tuning epoch (0: before), a panel per task, a line per variant (approximate:
    solid, exact: dashed)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    sub = frame[frame["discrepancy"].notna()]
    tasks = list(dict.fromkeys(sub["task"]))
    fig = Figure(figsize=(4.2 * max(1, len(tasks)), 3.2), layout="constrained")
    axes = fig.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        for variant, g in sub[sub["task"] == task].groupby("variant", sort=False):
            g = g.groupby("epoch")[["discrepancy", "discrepancy_exact"]].mean()
            line = ax.plot(g.index, g["discrepancy"], marker="o", label=f"{variant} (Alg. 2)")
            ax.plot(g.index, g["discrepancy_exact"], "--", color=line[0].get_color(),
                    label=f"{variant} (exact)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("fine-tuning epoch (0: before)")
        ax.set_ylabel("modality knowledge discrepancy D")
        ax.legend(fontsize=7)
    return fig


def discrepancy_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run and probe of :class:`~crossmodal.methods.mona.DiscrepancyProbe`:
    task, variant, seed, epoch (0: before fine-tuning), discrepancy (Algorithm 2 with the
    pretrained body), discrepancy_exact, discrepancy_finetuned_body_exact (the same source
    classifier on the fine-tuned body: a different, named quantity), the test metric after
    that epoch, and why a task was skipped."""
    rows = []
    for _, r in runs.iterrows():
        for p in r["probes"]:
            e = int(p["epoch"])
            rows.append({"task": r["task"], "variant": r["variant"], "seed": r["seed"],
                         "epoch": e, "discrepancy": p.get("discrepancy", np.nan),
                         "discrepancy_exact": p.get("discrepancy_exact", np.nan),
                         "discrepancy_finetuned_body_exact": p.get(
                             "discrepancy_finetuned_body_exact", np.nan),
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
    """Sanity checks (they hold by construction; asserted): the random search never goes
    below the exact minimum, and it reaches it once its trials cover every (subset,
    permutation) pair (up to a 1e-9 chance of a miss); the assignment search equals brute
    force. They test our implementation of Algorithm 2, not a claim of MoNA."""
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
                        paper="Alg. 2 minimises over a random subset of the (B, pi) pairs",
                        kind="sanity"),
        check_direction("with trials covering every (B, pi) pair it equals the exact value",
                        reach, "trials " + ", ".join(map(str, sorted(set(cover["trials"]))))
                        + f" for {cover['candidates'].iloc[0] if len(cover) else 0} pairs",
                        assert_holds=True, kind="sanity"),
        check_direction("the exact search (assignment per subset) equals brute force", agree,
                        f"{len(brute)} comparisons", assert_holds=True, kind="sanity"),
    ]


# --------------------------------------------------------------------------- RECRAFT


BOUND_COLUMNS = ("source_error", "fa", "fld", "tf", "bound", "target_loss", "kappa",
                 "kappa_certified", "w1", "w1_floor", "fa_plugin", "A", "B",
                 "calibration_gap", "source_entropy_target")


def bound_frame(runs: pd.DataFrame, epoch: str = "last") -> pd.DataFrame:
    """RECRAFT's bound terms per run from :class:`~crossmodal.methods.recraft.BoundProbe`:
    the probe after the last epoch (``epoch="last"``) or every probe (``"all"``).
    ``gap_pct`` = 100 (bound - target loss) / target loss; the columns of
    :data:`BOUND_COLUMNS` (the terms, the W1 floor, the certified kappa, the proof's A and B)."""
    rows = []
    for _, r in runs.iterrows():
        probes = r["probes"] if epoch == "all" else r["probes"][-1:]
        for p in probes:
            row = {"task": r["task"], "variant": r["variant"], "seed": r["seed"],
                   "epoch": p["epoch"], "test_metric": r["final"], "metric": r["metric"],
                   "skipped": p.get("skipped", "")}
            for k in BOUND_COLUMNS:
                row[k] = p.get(k, np.nan)
            row["gap_pct"] = 100 * p["gap"] if "gap" in p else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def check_bound_above_loss(frame: pd.DataFrame) -> Check | None:
    """Observed (a paper claim that can fail): the bound, computed without the target loss,
    is at least the target test loss, for every measurement (run x probed epoch)."""
    ok = frame.dropna(subset=["bound"])
    if ok.empty:
        return None
    holds = ok["bound"] >= ok["target_loss"]
    return check_direction(
        "RECRAFT's bound >= the target test loss", bool(holds.all()),
        f"{int(holds.sum())}/{len(ok)} measurements (run x probed epoch); min margin "
        f"{fmt_value((ok['bound'] - ok['target_loss']).min())} nats",
        paper="Theorem 7 / App. B, Eq. 45")


def bound_step_checks(frame: pd.DataFrame) -> list[Check]:
    """The proof's two steps on every measurement (observed, claims that can fail):
    B <= FA (Kantorovich-Rubinstein with the certified kappa, the W1 floor subtracted) and
    A <= FLD + TF; and a sanity check: the certified kappa is at most the configured one
    (the rescaling enforces it)."""
    ok = frame.dropna(subset=["bound"])
    if ok.empty or "B" not in ok:
        return []
    b_ok = ok["B"] <= ok["fa"] + 1e-9
    a_ok = ok["A"] <= ok["fld"] + ok["tf"] + 1e-9
    return [
        check_direction("B = E_t[H(h_s)] - E_s[H(h_s)] <= FA", bool(b_ok.all()),
                        f"{int(b_ok.sum())}/{len(ok)} measurements; max B - FA "
                        f"{fmt_value((ok['B'] - ok['fa']).max())} nats",
                        paper="App. A, Eqs. 41-44"),
        check_direction("A = L_t - E_t[H(h_s)] <= FLD + TF", bool(a_ok.all()),
                        f"{int(a_ok.sum())}/{len(ok)} measurements; max A - (FLD + TF) "
                        f"{fmt_value((ok['A'] - ok['fld'] - ok['tf']).max())} nats",
                        paper="App. A, Eqs. 33-40"),
    ]


def check_kappa_certified(runs: pd.DataFrame) -> Check | None:
    """Sanity (by construction, asserted): every run's certified source-head constant is at
    most its kappa (the recalibrated head is rescaled until it is)."""
    rows = [(r["method_report"] or {}) for _, r in runs.iterrows()]
    rows = [r for r in rows if "kappa_certified" in r]
    if not rows:
        return None
    ok = all(r["kappa_certified"] <= r["kappa"] * (1 + 1e-6) for r in rows)
    return check_direction(
        "the source head's certified Lipschitz constant is <= kappa", ok,
        ", ".join(f"{fmt_value(r['kappa_certified'])} (penalised fit "
                  f"{fmt_value(r.get('kappa_penalised_fit'))}) <= {fmt_value(r['kappa'])}"
                  for r in rows[:4]) + (" ..." if len(rows) > 4 else ""),
        assert_holds=True, kind="sanity", paper="App. F (kappa-Lipschitz source loss)")


def bound_runs(nb: NotebookSettings, report: Report | None = None,
               kappa: float | None = None) -> pd.DataFrame:
    """RECRAFT on every task with :class:`~crossmodal.methods.recraft.BoundProbe` (the bound on
    the held-out target split before fine-tuning and after every epoch); ``kappa`` None keeps
    the method's."""
    from crossmodal.methods.recraft import BoundProbe

    opts = method_options("recraft", nb.profile, **({} if kappa is None else {"kappa": kappa}))
    return run_grid(nb, [Variant("recraft", "recraft", opts)], report, probe=BoundProbe())


def _gap_per_task(frame: pd.DataFrame) -> pd.Series:
    """The relative gap (%) per task, the mean over seeds (measured rows only)."""
    ok = frame.dropna(subset=["bound"])
    return ok.groupby("task", sort=False)["gap_pct"].mean()


def bound_table(frame: pd.DataFrame, profile: str) -> pd.DataFrame:
    """The report's table: the relative gap per task (mean over seeds), and its mean over
    tasks beside the paper's "averaged gap < 29 %" (an upper limit: the paper column holds
    29)."""
    per_task = _gap_per_task(frame)
    rows = [{"task": t, "variant": "recraft", "metric": "bound gap (%)", "ours": g,
             "paper": np.nan, "status": status_of(profile, np.nan)}
            for t, g in per_task.items()]
    claim, _ = recraft_gap_claim()
    rows.append({"task": "mean over tasks", "variant": "recraft", "metric": "bound gap (%)",
                 "ours": float(per_task.mean()) if len(per_task) else np.nan, "paper": claim,
                 "status": ("compared (paper: < 29 %)" if profile == "paper"
                            else f"direction only ({profile})")})
    return pd.DataFrame(rows)


def check_gap_claim(frame: pd.DataFrame) -> Check | None:
    """Observed (a paper claim): is our relative gap, averaged over tasks (each the mean over
    its seeds), below the paper's 29 %?"""
    per_task = _gap_per_task(frame)
    if per_task.empty:
        return None
    claim, raw = recraft_gap_claim()
    mean = float(per_task.mean())
    return check_direction(f"the bound is tight: mean relative gap < {fmt_value(claim)} %",
                           mean < claim, f"ours: {fmt_value(mean)} % over {len(per_task)} "
                           f"tasks; paper: {raw}", paper=f"App. B: averaged gap {raw}")


def plot_bound(frame: pd.DataFrame):
    """The four terms of the bound stacked per task, with the target test loss beside them."""
    from matplotlib.figure import Figure

    ok = frame.dropna(subset=["bound"])
    fig = Figure(figsize=(1.8 + 1.6 * max(1, len(ok)), 3.4), layout="constrained")
    ax = fig.subplots()
    xs = np.arange(len(ok))
    bottom = np.zeros(len(ok))
    for term, label in (("source_error", "source error"), ("fa", "FA"), ("fld", "FLD"),
                        ("tf", "TF")):
        vals = ok[term].to_numpy(dtype=float)
        ax.bar(xs - 0.2, vals, 0.4, bottom=bottom, label=label)
        bottom = bottom + vals
    ax.bar(xs + 0.2, ok["target_loss"], 0.4, color="black", label="target loss")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xticks(xs, ok["task"], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("nats")
    ax.set_title("RECRAFT bound (stacked) vs target test loss", fontsize=9)
    ax.legend(fontsize=7)
    return fig


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
    """Per task x kappa: final/best test metric (mean over seeds) and stage 1's report (the
    certified kappa, FA = kappa_certified * W1, W1 and FLD after stage 1, on the whole training
    set; the recalibrated source head's proxy loss/accuracy on held-out data). ``w1_after``
    shows what kappa did to the alignment itself (``fa_after`` scales with kappa by
    definition)."""
    rows = []
    for _, r in runs.iterrows():
        rep = r["method_report"] or {}
        hold = rep.get("recalibration_holdout", {})
        rows.append({"task": r["task"], "kappa": rep.get("kappa", np.nan), "seed": r["seed"],
                     "metric": r["metric"], "lower_is_better": r["lower_is_better"],
                     "ours": r["final"], "best": r["best"],
                     "kappa_certified": rep.get("kappa_certified"),
                     "fa_after": rep.get("fa_after"), "w1_after": rep.get("w1_after"),
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


#: kappa grids of the target-error study per profile (each value is a full RECRAFT run) and of
#: the proxy study (a refit of the source head per value: cheap).
KAPPA_GRIDS = {"smoke": (0.1, 0.3, 0.5, 1.0),
               "lab": tuple(round(0.1 * i, 1) for i in range(1, 11)),
               "paper": tuple(round(0.1 * i, 1) for i in range(1, 11))}
PROXY_KAPPA_GRID = tuple(round(0.1 * i, 1) for i in range(1, 11))


def recraft_paper_kappas() -> str:
    """The kappa of RECRAFT Tables 8/9 per backbone, as one line."""
    df = _read_table("recraft_hyperparameters")
    rows = df[df["hyperparameter"].str.startswith("kappa")]
    rows = rows[pd.to_numeric(rows["value_raw"], errors="coerce").notna()]
    by = rows.groupby("value_raw")["task"].apply(lambda t: ", ".join(dict.fromkeys(t)))
    return "; ".join(f"kappa = {k}: {tasks}" for k, tasks in by.items())


def kappa_checks(table: pd.DataFrame, sweep: pd.DataFrame, tolerance: float) -> list[Check]:
    """RECRAFT's kappa findings in direction.

    * sanity (by construction, asserted): a tighter Lipschitz constraint costs source (proxy)
      loss: the recalibrated head's training loss at the smallest kappa is above the one at
      the largest (App. F: "smaller kappa gives a larger source loss"; the penalty and the
      rescaling shrink the head, so this tests our code);
    * observed: App. F's rule (the smallest kappa within ``tolerance`` of the unpenalised
      head's held-out proxy accuracy) picks a kappa in the recommended range;
    * observed, per task: the kappa with the lowest final target error lies in that range.
    """
    from crossmodal.methods.recraft import select_kappa

    lo, hi = recraft_kappa_range()
    sw = sweep[sweep["kappa"].notna()].sort_values("kappa")
    checks = [check_direction(
        "smaller kappa gives a larger source loss on the proxy",
        bool(sw["fit_loss"].iloc[0] > sw["fit_loss"].iloc[-1]),
        f"proxy loss {fmt_value(sw['fit_loss'].iloc[0])} at kappa={fmt_value(sw['kappa'].iloc[0])}"
        f" vs {fmt_value(sw['fit_loss'].iloc[-1])} at kappa={fmt_value(sw['kappa'].iloc[-1])}",
        assert_holds=True, paper="App. F, Fig. 6", kind="sanity")]
    chosen = select_kappa(sweep.astype(object).where(sweep.notna(), None).to_dict("records"),
                          tolerance)
    checks.append(check_direction(
        f"App. F's rule picks a kappa in [{fmt_value(lo)}, {fmt_value(hi)}]",
        chosen is not None and lo <= chosen <= hi,
        f"smallest kappa within {fmt_value(tolerance)} of the unpenalised proxy accuracy: "
        f"{fmt_value(chosen)}", paper="App. E/F: kappa about 0.3-0.5"))
    for task, g in table.groupby("task", sort=False):
        sign = 1.0 if g["lower_is_better"].iloc[0] else -1.0
        best = g.loc[(sign * g["ours"]).idxmin()]
        ties = g[g["ours"] == best["ours"]]["kappa"].tolist()
        checks.append(check_direction(
            f"{task}: the best target error is at a kappa in [{fmt_value(lo)}, {fmt_value(hi)}]",
            any(lo <= k <= hi for k in ties),
            f"best {fmt_value(best['ours'])} at kappa " + ", ".join(fmt_value(k) for k in ties),
            paper="App. E, Fig. 5"))
    return checks


def kappa_results(table: pd.DataFrame, profile: str) -> pd.DataFrame:
    """The report's table: the final target metric per task and kappa (the paper has figures
    only)."""
    out = table.assign(variant=[f"kappa={fmt_value(k)}" for k in table["kappa"]],
                       paper=np.nan, status="figure only in the paper: direction checks")
    return out


def plot_kappa(table: pd.DataFrame, sweep: pd.DataFrame):
    """Left: final target error vs kappa per task (Fig. 5). Right: held-out proxy accuracy and
    loss of the recalibrated source head vs kappa (Fig. 6). The paper's range is shaded."""
    from matplotlib.figure import Figure

    lo, hi = recraft_kappa_range()
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for task, g in table.groupby("task", sort=False):
        left.plot(g["kappa"], g["ours"], marker="o", label=task)
    left.set_xlabel("kappa")
    left.set_ylabel(table["metric"].iloc[0])
    left.set_title("target error vs kappa (Fig. 5)", fontsize=9)
    left.legend(fontsize=7)
    sw = sweep[sweep["kappa"].notna()]
    right.plot(sw["kappa"], sw["holdout_accuracy"], marker="o", color="tab:blue",
               label="held-out proxy accuracy")
    ref = sweep[sweep["kappa"].isna()]
    if len(ref):
        right.axhline(ref["holdout_accuracy"].iloc[0], color="tab:blue", ls=":",
                      label="no Lipschitz penalty")
    right.set_xlabel("kappa")
    right.set_ylabel("accuracy")
    twin = right.twinx()
    twin.plot(sw["kappa"], sw["holdout_loss"], marker="s", color="tab:red",
              label="held-out proxy loss")
    twin.set_ylabel("cross-entropy (nats)")
    right.set_title("recalibrated source head on the proxy (Fig. 6)", fontsize=9)
    handles = right.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    right.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7)
    for ax in (left, right):
        ax.axvspan(lo, hi, color="grey", alpha=0.15)
    return fig


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


def gap_variants(methods: Sequence[str], profile: str, *, alpha: float, beta: float,
                 eps: float, gamma: float) -> list[Variant]:
    """One variant per method; version A gets the loss constants (Option 2, continuous)."""
    out = []
    for m in methods:
        extra = (dict(alpha=alpha, beta=beta, eps=eps, gamma=gamma)
                 if m == "gap_adaptive_a" else {})
        out.append(Variant(m, m, method_options(m, profile, **extra)))
    return out


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


def weight_frame(gaps: pd.DataFrame, epochs: int | None, *, alpha: float, beta: float,
                 eps: float, gamma: float, profile: str = "paper",
                 max_source_weight: float = 100.0) -> pd.DataFrame:
    """Version A's loss weights per task and epoch for the prescribed D of each task: Option 2
    (continuous, capped at ``max_source_weight``) and Option 1 (switch at Gamma). ``epochs``
    None: each task's epochs in ``profile`` (the paper's, PaRe Tables 12/13). The ``epoch``
    column is 1-based (the first epoch has the full weight, the last 0)."""
    from crossmodal.methods.gap_adaptive import weight_schedule
    from crossmodal.profiles import train_defaults
    from crossmodal.tasks import get_task

    rows = []
    for _, g in gaps[gaps["uses"]].iterrows():
        total = epochs or train_defaults(get_task(g["task"]), profile)["epochs"]
        for weighting in ("continuous", "switch"):
            for w in weight_schedule(g["D"], total, weighting=weighting, alpha=alpha,
                                     beta=beta, eps=eps, gamma=gamma, cap=max_source_weight):
                rows.append({"task": g["task"], "D": g["D"], "weighting": weighting,
                             "epoch": w["epoch"] + 1, "target_weight": w["target_weight"],
                             "source_weight": w["source_weight"]})
    return pd.DataFrame(rows)


def check_weights(weights: pd.DataFrame) -> Check:
    """Sanity (by construction, asserted): Option 2's source weight falls with the epoch, and
    is lower for a larger gap D at every epoch (the slides' intent: a large gap should focus
    on the target loss). The formula is monotone, so this tests our code, not the slides."""
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
        assert_holds=True, paper="slides 000, slide 56 (Option 2)", kind="sanity")


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
