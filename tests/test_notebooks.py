"""The notebook machinery: settings, paper tables, comparison tables, reports, reproduce."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from crossmodal import notebook as cm
from crossmodal import reproduce as rp
from crossmodal.errors import DataMissingError, InvalidInputError, UnknownNameError
from crossmodal.notebook import grid
from crossmodal.profiles import default_body
from crossmodal.studies import orca
from crossmodal.tasks import get_task


@pytest.fixture(autouse=True)
def _reports(tmp_path, monkeypatch):
    monkeypatch.setenv(cm.REPORTS_ENV, str(tmp_path / "reports"))


# --------------------------------------------------------------------------- settings


def test_settings_fill_every_none_from_the_library():
    nb = cm.settings("main_results", "smoke")
    defaults = cm.NOTEBOOKS["main_results"]
    assert nb.tasks == list(defaults.tasks["smoke"])
    assert nb.epochs == defaults.smoke_epochs and nb.max_train == defaults.smoke_max_train
    assert nb.seeds == [0, 1, 2]  # every smoke claim is judged over >= 3 seeds
    # None: each task's smoke recipe, the settings `crossmodal run --profile smoke` uses
    from crossmodal.profiles import SMOKE_RECIPE

    per_task = nb.task_settings()
    for key in nb.tasks:
        r = SMOKE_RECIPE[key]
        assert (per_task[key]["epochs"], per_task[key]["max_train"], per_task[key]["lr"],
                per_task[key]["body_lr"]) == (r.epochs, r.max_train, r.lr, r.body_lr)
    text = nb.describe()
    assert "smoke_digits: 4 epochs" in text and "<=1000" not in text  # no contradicting summary
    assert nb.output_dir.parts[-3:] == ("reports", "main_results", "smoke")


def test_settings_keep_explicit_values_and_use_profile_defaults_elsewhere():
    nb = cm.settings("x", "smoke", tasks="smoke_digits", seeds=3, epochs=1, max_train=10)
    assert (nb.tasks, nb.seeds, nb.epochs, nb.max_train) == (["smoke_digits"], [3], 1, 10)
    lab = cm.settings("x", "lab", tasks=["smoke_digits"], check_data=False)
    assert (lab.epochs, lab.max_train) == (10, 10000)  # crossmodal.profiles' lab profile
    paper = cm.settings("main_results", "paper", check_data=False)
    assert paper.epochs is None and paper.max_train is None  # each task's paper settings
    assert paper.seeds == [0, 1, 2, 3, 4] and "CIFAR100" in paper.tasks


@pytest.mark.parametrize("kwargs, error", [
    (dict(profile="huge"), UnknownNameError),
    (dict(tasks=["nope"]), UnknownNameError),
    (dict(tasks=[]), InvalidInputError),
    (dict(epochs=0), InvalidInputError),
])
def test_settings_reject_bad_parameters(kwargs, error):
    with pytest.raises(error):
        cm.settings("main_results", **kwargs)


def test_paper_profile_without_data_stops_at_once_naming_the_fetch_commands(tmp_path):
    with pytest.raises(DataMissingError) as err:
        cm.settings("orca_ablations", "paper", tasks=["ECG", "Advection1D"],
                    data_root=tmp_path / "empty")
    msg = str(err.value)
    assert "2 task(s) have no data" in msg
    assert "crossmodal data download ECG" in msg
    assert "crossmodal data download Advection1D" in msg or "generate_pde.py" in msg


# --------------------------------------------------------------------------- paper tables


def test_paper_value_reads_the_kits_copy_of_the_tables():
    assert cm.paper_value("nb360_main", task="CIFAR100", method="PaRe") == pytest.approx(6.25)
    # method names match case- and punctuation-insensitively, scratch is Train_from_scratch
    # (RECRAFT writes "PARE": its re-run of PaRe, 0.0032 vs 2.70E-03 in the PaRe paper)
    assert cm.paper_value("recraft_main_pdebench", task="Advection1D", method="pare") == \
        pytest.approx(0.0032)
    assert cm.paper_value("pare_finetune_methods", task="CIFAR100", method="scratch") == \
        pytest.approx(50.87)
    assert cm.paper_value("nb360_main", task="CIFAR100", method="PaRe",
                          column="table") == "Table 1"


def test_paper_value_missing_ambiguous_and_unknown():
    # a cell lost in the text extraction is None, as is a method the table does not have
    assert cm.paper_value("recraft_main_nb360", task="DarcyFlow", method="Hand-designed") is None
    assert cm.paper_value("nb360_main", task="CIFAR100", method="RECRAFT") is None
    with pytest.raises(InvalidInputError, match="metric"):
        cm.paper_value("recraft_main_nb360", task="ALL_10", method="RECRAFT")
    with pytest.raises(InvalidInputError, match="no column"):
        cm.paper_value("nb360_main", task="CIFAR100", method="PaRe", column="nope")
    with pytest.raises(UnknownNameError, match="nb360_main"):
        cm.paper_table("nb360_mian")


def test_main_paper_value_takes_each_method_from_its_table():
    orca = cm.main_paper_value("CIFAR100", "orca")
    assert (orca.value, orca.table) == (pytest.approx(6.53), "nb360_main")
    assert cm.main_paper_value("CIFAR100", "mona").table == "mona_nb360"
    assert cm.main_paper_value("Spherical", "recraft").table == "recraft_main_nb360"
    assert cm.main_paper_value("smoke_gunpoint", "nft") is None
    assert cm.paper_wins("orca", "nft") == (10, 10)  # ORCA beats NFT on all 10 in PaRe Table 1


# --------------------------------------------------------------------------- tables


def _runs(rows):
    cols = ["task", "variant", "method", "seed", "metric", "lower_is_better", "final"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_compare_with_paper_gap_ranks_and_status():
    runs = _runs([
        ("CIFAR100", "orca", "orca", 0, "err", True, 7.0),
        ("CIFAR100", "orca", "orca", 1, "err", True, 9.0),
        ("CIFAR100", "nft", "nft", 0, "err", True, 5.0),
        ("smoke_digits", "nft", "nft", 0, "err", True, 5.0),
    ])
    t = cm.compare_with_paper(runs, profile="paper").set_index(["task", "variant"])
    orca = t.loc[("CIFAR100", "orca")]
    assert orca["ours"] == 8.0 and orca["seeds"] == 2
    assert orca["gap"] == pytest.approx(8.0 - 6.53)
    assert orca["rel_gap_pct"] == pytest.approx(100 * (8.0 - 6.53) / 6.53)
    assert (orca["rank_ours"], orca["rank_paper"]) == (2, 1)  # NFT 5.0 ours, 7.67 paper
    assert orca["status"] == "compared"
    assert t.loc[("smoke_digits", "nft"), "status"] == "no paper value"
    smoke = cm.compare_with_paper(runs, profile="smoke")
    assert set(smoke["status"]) == {"direction only (smoke)", "no paper value"}


def test_higher_is_better_metrics_rank_the_largest_first():
    runs = _runs([("t", "a", "a", 0, "auroc", False, 0.9), ("t", "b", "b", 0, "auroc", False, 0.7)])
    t = cm.compare_with_paper(runs, profile="smoke").set_index("variant")
    assert (t.loc["a", "rank_ours"], t.loc["b", "rank_ours"]) == (1, 2)


def test_printed_tables_round_to_three_significant_digits():
    df = pd.DataFrame({"task": ["a", "b"], "x": [0.0072834, 123.456], "n": [1, 2]})
    text = cm.format_table(df)
    assert "0.00728" in text and "123" in text and "123.4" not in text
    assert cm.fmt_value(float("nan")) == "-" and cm.fmt_value(None) == "-"
    md = cm.markdown_table(df)
    assert md.splitlines()[0] == "| task | x | n |" and "| b | 123 | 2 |" in md


def test_pairwise_check_counts_wins_on_our_tasks():
    table = pd.DataFrame({
        "task": ["t1", "t1", "t2", "t2"], "variant": ["nft", "scratch"] * 2,
        "ours": [1.0, 2.0, 3.0, 2.0], "lower_is_better": [True] * 4})
    c = cm.pairwise_check(table, "nft", "scratch")
    assert not c.holds and "ours: 1/2 tasks" in c.detail and "paper: 7/10" in c.detail
    assert cm.pairwise_check(table, "orca", "nft") is None  # orca did not run


def test_asserted_direction_checks_raise_when_the_claim_fails():
    assert cm.check_direction("x", True, assert_holds=True).holds
    with pytest.raises(AssertionError, match="claim failed"):
        cm.check_direction("alignment lowers OTDD", False, "2 > 1", assert_holds=True)


# --------------------------------------------------------------------------- runs


def _fake_result(task, method, seed, body, **_):
    return {"task": task, "method": method, "seed": seed, "body": body or "minilm",
            "metric": {"display": "err", "lower_is_better": True},
            "final_metric": float(seed), "best_metric": float(seed),
            "epochs": [{"test_metric": 1.0, "train_loss": 0.5}], "n_train": 2, "n_test": 2,
            "wall_seconds": 0.0, "method_report": {"otdd_before": 2.0, "otdd_after": 1.0,
                                                   "alignment_curve": [2.0, 1.5]}}


def test_run_grid_runs_each_distinct_configuration_once(monkeypatch):
    calls, kw_seen = [], set()

    def fake_run(task, method, profile, **kw):
        kw_seen.update(kw)
        calls.append((task, method, kw["body"], tuple(sorted(kw["method_options"].items())),
                      kw["train_options"]["num_threads"]))
        return _fake_result(task, method, kw["seed"], kw["body"])

    import crossmodal.runner

    monkeypatch.setattr(crossmodal.runner, "run", fake_run)
    monkeypatch.setattr(grid, "load_splits", lambda nb, task, seed: {})
    nb = cm.settings("orca_ablations", "smoke", seeds=[0, 1])
    runs = orca.run_ablations(nb, ["freezing", "pretraining"])
    # freeze=none and "body 100%" are the same configuration: 4 + 1 distinct, x 2 seeds
    assert len(runs) == 2 * (4 + 2) and len(calls) == 2 * 5
    default = default_body(get_task(nb.tasks[0]), "smoke")
    assert {c[2] for c in calls} == {None, f"{default}-random"}  # "{default}-random" resolved
    assert {c[4] for c in calls} == {1}  # threads pinned to the settings' value
    assert set(runs["ablation"]) == {"freezing", "pretraining"}
    al = orca.alignment_frame(runs)
    assert (al["reduction_pct"] == 50.0).all()
    assert orca.check_alignment_lowers_otdd(runs).holds
    assert "probe" not in kw_seen  # not passed unless asked (older runners lack it)


def test_run_grid_forwards_a_probe_and_keeps_its_records(monkeypatch):
    import crossmodal.runner

    def fake_run(task, method, profile, **kw):
        r = _fake_result(task, method, kw["seed"], kw["body"])
        r["probes"] = [{"epoch": 0, "value": kw["probe"](None)}]
        return r

    monkeypatch.setattr(crossmodal.runner, "run", fake_run)
    monkeypatch.setattr(grid, "load_splits", lambda nb, task, seed: {})
    runs = cm.run_grid(cm.settings("x", "smoke"), ["nft"], probe=lambda record: 7)
    assert runs["probes"][0] == [{"epoch": 0, "value": 7}]


def test_orca_ablation_variants():
    names = [v.name for v in orca.orca_ablation_variants("embedder_training", "smoke")]
    assert names == [f"align_epochs={e}" for e in orca.ALIGN_EPOCH_GRID["smoke"]]
    proxy = orca.orca_ablation_variants("proxy", "paper", proxies=["conll2003", "pydoc_topics"])
    assert [v.options.get("proxy") for v in proxy[1:]] == ["conll2003", "pydoc_topics"]
    assert proxy[0].options["align_score"] == "none"
    with pytest.raises(UnknownNameError):
        orca.orca_ablation_variants("dropout", "smoke")
    assert "1D" in orca.orca_ablation_finding("proxy")


def test_method_options_drop_profile_defaults_the_method_does_not_have(monkeypatch):
    monkeypatch.setitem(cm.METHOD_PROFILE_OPTIONS, "nft", {"smoke": {"not_a_field": 1}})
    assert cm.method_options("nft", "smoke") == {}
    assert cm.method_options("nft", "smoke", lr=1) == {"lr": 1}  # explicit ones pass through
    assert cm.method_options("orca", "smoke")["align_epochs"] == 5


# --------------------------------------------------------------------------- reports


def test_report_writes_every_file_and_results_json_last(tmp_path):
    nb = cm.settings("demo", "smoke", output_dir=tmp_path / "out")
    report = cm.Report(nb, parameters={"profile": "smoke", "epochs": None})
    runs = _runs([("smoke_digits", "nft", "nft", 0, "err", True, 5.0)])
    runs["method_report"] = [{}]
    report.add_runs(runs)
    report.add_check(cm.check_direction("a claim", True, "1 < 2"))
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([1, 2], [3, 4])
    report.add_figure(fig, "curve")
    table = cm.compare_with_paper(runs, profile="smoke")
    out = report.write(table, summary="demo")
    assert sorted(p.name for p in out.iterdir()) == [
        "curve.png", "results.csv", "results.json", "runs.csv", "summary.md"]
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((out / "results.json").read_text())
    for key in ("schema", "notebook", "profile", "parameters", "runs", "results", "paper",
                "checks", "versions", "seeds", "wall_seconds"):
        assert key in doc
    assert doc["schema"] == cm.RESULTS_SCHEMA and doc["status"] == "complete"
    assert doc["results"][0]["ours"] == 5.0 and doc["results"][0]["paper"] is None
    assert doc["versions"]["torch"].startswith("2.")
    assert "| smoke_digits | nft |" in (out / "summary.md").read_text()
    # a new run of the notebook removes the old report before it starts: a run that fails
    # halfway leaves no results.json, so it can never look complete
    cm.Report(nb)
    assert not (out / "results.json").exists() and not (out / "curve.png").exists()


# --------------------------------------------------------------------------- reproduce


def _notebook(path, body):
    book = new_notebook(cells=[
        new_code_cell('profile = "smoke"\noutput_dir = None', metadata={"tags": ["parameters"]}),
        new_code_cell(body)])
    book.metadata["kernelspec"] = {"name": "crossmodal", "display_name": "x", "language": "python"}
    nbformat.write(book, path)


def test_index_lists_every_result_and_every_failure(tmp_path):
    reports = tmp_path / "reports"
    ok = reports / "good" / "smoke"
    ok.mkdir(parents=True)
    ok.joinpath("results.json").write_text(json.dumps({
        "results": [{"task": "CIFAR100", "variant": "orca", "metric": "err", "paper": 6.53,
                     "ours": 7.01234, "status": "compared"}],
        "checks": [{"claim": "c", "holds": True, "detail": "d", "asserted": True}],
        "wall_seconds": 12.0}))
    bad = reports / "bad" / "smoke"
    bad.mkdir(parents=True)
    bad.joinpath("error.txt").write_text("ValueError: boom\n\ntraceback")
    (reports / "half" / "smoke").mkdir(parents=True)
    text = rp.write_index(reports).read_text()
    assert "| good | CIFAR100 | orca | err | 6.53 | 7.01 | compared |" in text
    assert "| bad | FAILED: ValueError: boom |" in text
    assert "| half | FAILED: incomplete: no results.json |" in text
    assert "[holds, asserted] c: d" in text


def test_select_notebooks_rejects_unknown_names():
    assert rp.select_notebooks(["a", "b"], ["b.ipynb"]) == ["b"]
    with pytest.raises(InvalidInputError, match="notebooks: a, b"):
        rp.select_notebooks(["a", "b"], ["c"])


@pytest.mark.slow
def test_reproduce_runs_notebooks_continues_past_failures_and_updates(tmp_path, monkeypatch):
    if not rp.kernel_available():
        pytest.skip("the 'crossmodal' Jupyter kernel is not installed (run `make setup`)")
    nbs, reports = tmp_path / "notebooks", tmp_path / "reports"
    nbs.mkdir()
    _notebook(nbs / "a_fails.ipynb", "raise ValueError('boom')")
    _notebook(nbs / "b_works.ipynb", (
        "from crossmodal import notebook as cm\nimport pandas as pd\n"
        "nb = cm.settings('b_works', profile, tasks=['smoke_digits'], output_dir=output_dir)\n"
        "r = cm.Report(nb)\n"
        "r.write(pd.DataFrame({'task': ['smoke_digits'], 'variant': ['nft'], 'metric': ['e'],"
        " 'ours': [1.5]}))\nprint('done', output_dir)"))
    monkeypatch.chdir(tmp_path)
    code = rp.reproduce("smoke", reports="reports", notebooks="notebooks", progress=False,
                        update_notebooks=True)
    assert code == 1
    assert "ValueError: boom" in (reports / "a_fails" / "smoke" / "error.txt").read_text()
    assert not (reports / "a_fails" / "smoke" / "results.json").exists()
    done = json.loads((reports / "b_works" / "smoke" / "results.json").read_text())
    assert done["results"][0]["ours"] == 1.5
    # papermill injected the report folder as a path relative to the working directory
    executed = nbformat.read(reports / "b_works" / "smoke" / "b_works.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert "done reports/b_works/smoke" in executed.cells[-1].outputs[0]["text"]
    index = (reports / "index.md").read_text()
    assert "| b_works | smoke_digits | nft | e | - | 1.5 |" in index and "a_fails" in index
    # the working notebook was copied back with its outputs and without the injected cell
    updated = nbformat.read(nbs / "b_works.ipynb", as_version=4)
    assert len(updated.cells) == 2 and updated.cells[1].outputs
    assert math.isfinite(np.float64(done["wall_seconds"]))


NOTEBOOKS = sorted(p.stem for p in (Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_paper_profile_without_data_stops_in_the_settings_cell(name, tmp_path, monkeypatch):
    """`-p profile paper` on a machine without the data fails at the top, naming the fetch
    command, before anything trains."""
    if not rp.kernel_available():
        pytest.skip("the 'crossmodal' Jupyter kernel is not installed (run `make setup`)")
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    monkeypatch.setenv("CROSSMODAL_DATA", str(tmp_path / "no-data"))
    src = Path(__file__).parents[1] / "notebooks" / f"{name}.ipynb"
    with pytest.raises(PapermillExecutionError) as err:
        pm.execute_notebook(str(src), str(tmp_path / "out.ipynb"), kernel_name="crossmodal",
                            parameters={"profile": "paper", "output_dir": str(tmp_path / "r")},
                            progress_bar=False, cwd=str(tmp_path))
    assert err.value.ename == "DataMissingError"
    assert "crossmodal data download" in err.value.evalue
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    failed = [c for c in executed.cells if c.cell_type == "code"
              and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "cm.settings(" in failed[0].source
    assert not (tmp_path / "r" / "results.json").exists()


def test_as_list_reads_papermill_parameters():
    assert cm.as_list(None) is None
    assert cm.as_list("freezing") == ["freezing"] and cm.as_list(3) == [3]
    assert cm.as_list(("a", "b")) == ["a", "b"]
