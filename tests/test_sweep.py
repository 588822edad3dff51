"""``crossmodal sweep``: a notebook's grid as jobs, their state, and the notebook's collect mode.

The slow tests run real submitit jobs (``--executor local``: subprocesses) on tiny smoke
settings; the Slurm path is checked through the sbatch script submitit writes (a fake
``sbatch`` on PATH stands in for the cluster).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pandas as pd
import pytest

from crossmodal import notebook as cm
from crossmodal.cli import main
from crossmodal.errors import DataMissingError, InvalidInputError
from crossmodal.sweep import jobs
from crossmodal.sweep.grids import NOTEBOOK_GRIDS, expand, notebook_parameters

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

#: the smallest grid of main_results: one task, two methods, one seed, tiny subsets
TINY = ["-p", "tasks", "smoke_gunpoint", "-p", "seeds", "0", "-p", "epochs", "2",
        "-p", "max_train", "16", "-p", "max_test", "16"]


def _sweep(runs_dir: Path, notebook: str, *args: str) -> int:
    return main(["sweep", str(NOTEBOOKS / f"{notebook}.ipynb"), "--profile", "smoke",
                 "--runs-dir", str(runs_dir), "--executor", "local", "--gpus-per-job", "0",
                 *args])


def _wait(runs_dir: Path) -> list[jobs.RunState]:
    """Poll until no run is pending or running (TimeoutError after 300 s fails the test)."""
    return jobs.wait_for_runs(runs_dir, 300.0, poll_s=0.5)


def _direct(notebook: str, methods: list[str], **kw):
    nb = cm.settings(notebook, "smoke", tasks=["smoke_gunpoint"], seeds=[0], max_train=16,
                     max_test=16, **kw)
    return nb, cm.run_grid(nb, cm.main_variants(methods, "smoke"))


# --------------------------------------------------------------------------- planning


def test_every_notebook_has_a_grid_from_its_parameters_cell():
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == sorted(NOTEBOOK_GRIDS)
    for name in names:
        params = notebook_parameters(NOTEBOOKS / f"{name}.ipynb")
        assert params["profile"] == "smoke" and params["runs_dir"] is None
        nb, planned = expand(name, params)
        ids = [p.run_id for p, _ in planned]
        assert ids and len(set(ids)) == len(ids), name
        assert {p.task for p, _ in planned} == set(nb.tasks)


def test_run_ids_follow_the_configuration_not_the_label():
    nb = cm.settings("main_results", "smoke", tasks=["smoke_gunpoint"], seeds=[0], epochs=2)
    a = cm.plan_grid(nb, [cm.Variant("nft", "nft")])[0]
    assert a.run_id == cm.plan_grid(nb, [cm.Variant("another label", "nft")])[0].run_id
    assert a.run_id.startswith("smoke_gunpoint__nft__seed0__")
    nb3 = cm.settings("main_results", "smoke", tasks=["smoke_gunpoint"], seeds=[0], epochs=3)
    assert cm.plan_grid(nb3, ["nft"])[0].run_id != a.run_id
    orca = cm.plan_grid(nb, [cm.Variant("o", "orca", {"align_epochs": 1}),
                             cm.Variant("o", "orca", {"align_epochs": 2})])
    assert orca[0].run_id != orca[1].run_id
    from crossmodal.methods.recraft import BoundProbe

    probed = cm.plan_grid(nb, ["nft"], probe=BoundProbe())[0]
    assert probed.run_id != a.run_id and "BoundProbe" in probed.identity["probe"]


def test_sweep_rejects_an_unknown_parameter(tmp_path, capsys):
    assert _sweep(tmp_path, "main_results", "-p", "task", "smoke_digits", "--dry-run") == 2
    assert "unknown notebook parameter(s) ['task']" in capsys.readouterr().err


# --------------------------------------------------------------------------- collect


def _fake_result(task: str, method: str, seed: int, final: float) -> dict:
    return {"task": task, "method": method, "seed": seed, "body": "minilm",
            "metric": {"display": "err", "lower_is_better": True}, "final_metric": final,
            "best_metric": final, "epochs": [{"test_metric": final, "train_loss": 1.0}],
            "n_train": 16, "n_test": 16, "wall_seconds": 0.0, "status": "complete"}


def test_collect_reads_finished_runs_and_marks_the_missing_ones(tmp_path, monkeypatch):
    import crossmodal.runner

    def no_training(*a, **k):
        raise AssertionError("collect mode must not train")

    monkeypatch.setattr(crossmodal.runner, "run", no_training)
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    nb = cm.settings("main_results", "smoke", tasks=["smoke_gunpoint"], seeds=[0],
                     runs_dir=runs_dir, output_dir=tmp_path / "report")
    planned = cm.plan_grid(nb, ["nft", "scratch"])
    (runs_dir / planned[0].run_id).mkdir()
    (runs_dir / planned[0].run_id / "results.json").write_text(
        json.dumps(_fake_result("smoke_gunpoint", "nft", 0, 12.5)))
    report = cm.Report(nb)
    with pytest.warns(UserWarning, match="1 of 2 runs are not finished"):
        runs = cm.run_grid(nb, ["nft", "scratch"], report)
    assert list(runs["variant"]) == ["nft"] and runs["final"].tolist() == [12.5]
    assert nb.missing_runs == [planned[1].run_id]
    out = report.write(cm.compare_with_paper(runs, profile="smoke"))
    doc = json.loads((out / "results.json").read_text())
    assert doc["missing_runs"] == [planned[1].run_id]
    check = [c for c in doc["checks"] if c["claim"] == cm.COLLECT_CLAIM]
    assert len(check) == 1 and not check[0]["holds"] and planned[1].run_id in check[0]["detail"]
    assert planned[1].run_id in (out / "summary.md").read_text()

    empty = tmp_path / "empty"
    empty.mkdir()
    nb2 = cm.settings("main_results", "smoke", tasks=["smoke_gunpoint"], seeds=[0],
                      runs_dir=empty)
    with pytest.warns(UserWarning), pytest.raises(DataMissingError, match="crossmodal sweep"):
        cm.run_grid(nb2, ["nft"])


def test_reproduce_passes_runs_dir_to_every_notebook(tmp_path, monkeypatch):
    import papermill

    from crossmodal import reproduce as rp

    seen = {}

    def fake_execute(src, dst, parameters, **kw):
        seen[Path(src).stem] = parameters
        out = Path(parameters["output_dir"])
        (out / "results.json").write_text(json.dumps({"results": [], "checks": []}))

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setattr(rp, "kernel_available", lambda name=rp.KERNEL: True)
    runs = tmp_path / "runs"
    runs.mkdir()
    assert main(["reproduce", "--profile", "paper", "--runs-dir", str(runs), "--reports",
                 str(tmp_path / "reports"), "--no-progress", "--workers", "1"]) == 0
    assert sorted(seen) == sorted(NOTEBOOK_GRIDS)
    assert {p["runs_dir"] for p in seen.values()} == {str(runs.resolve())}
    assert {p["profile"] for p in seen.values()} == {"paper"}
    with pytest.raises(InvalidInputError, match="not a folder"):
        rp.reproduce("paper", runs_dir=tmp_path / "absent", reports=tmp_path / "r")


# --------------------------------------------------------------------------- state


def _run_folder(runs_dir: Path, name: str, **files) -> Path:
    folder = runs_dir / name
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text("{}")
    for fname, content in files.items():
        (folder / fname.replace("_", ".")).write_text(json.dumps(content))
    return folder


def test_status_counts_each_state(tmp_path, capsys):
    import socket

    host = socket.gethostname()
    _run_folder(tmp_path, "a", results_json={})
    _run_folder(tmp_path, "b", status_json={"state": "running", "host": host, "pid": os.getpid()})
    _run_folder(tmp_path, "c", status_json={"state": "running", "host": host, "pid": 2**22 + 7})
    _run_folder(tmp_path, "d", status_json={"state": "failed", "error": "ValueError: boom"})
    _run_folder(tmp_path, "e")  # submitted, not started
    states = {s.run_id: s.state for s in jobs.sweep_status(tmp_path)}
    assert states == {"a": "done", "b": "running", "c": "failed", "d": "failed",
                      "e": "pending"}
    assert main(["sweep", "--status", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "5 runs: 1 pending, 1 running, 1 done, 2 failed" in out
    assert "d: ValueError: boom" in out and f"crossmodal sweep --run {tmp_path / 'd'}" in out
    assert "died without a result" in out


# --------------------------------------------------------------------------- Slurm


def test_slurm_script_has_the_requested_partition_gpus_and_time(tmp_path, monkeypatch, capsys):
    text = jobs.sbatch_text(jobs.slurm_parameters(partition="gpu-a100", gpus_per_job=2,
                                                  timeout_min=90, mem_gb=32), tmp_path)
    for line in ("#SBATCH --partition=gpu-a100", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --time=90", "#SBATCH --mem=32GB", "#SBATCH --signal=USR2@120"):
        assert line in text.splitlines(), (line, text)

    # the real SlurmExecutor path, with stand-ins for srun and sbatch on PATH
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch_calls"
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f"#!/bin/sh\ncat \"$1\" >> {log}\necho 'Submitted batch job 4242'\n")
    (bin_dir / "squeue").write_text("#!/bin/sh\necho 4242\n")
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runs = tmp_path / "runs"
    assert main(["sweep", str(NOTEBOOKS / "main_results.ipynb"), "--profile", "smoke",
                 *TINY, "-p", "methods", "['nft', 'scratch']", "--runs-dir", str(runs),
                 "--executor", "slurm", "--slurm-partition", "gpu-a100", "--gpus-per-job", "1",
                 "--timeout-min", "30", "--max-parallel", "1"]) == 0
    out = capsys.readouterr().out
    assert "4242_0" in out and "4242_1" in out and "2 submitted" in out
    script = log.read_text().splitlines()
    for line in ("#SBATCH --partition=gpu-a100", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --time=30", "#SBATCH --array=0-1%1"):
        assert line in script, (line, script)
    states = jobs.sweep_status(runs)
    assert [s.state for s in states] == ["pending", "pending"]  # queued (squeue knows 4242)
    # submitting again does not submit the queued runs twice
    assert main(["sweep", str(NOTEBOOKS / "main_results.ipynb"), "--profile", "smoke", *TINY,
                 "-p", "methods", "['nft', 'scratch']", "--runs-dir", str(runs),
                 "--executor", "slurm"]) == 0
    assert "2 pending" in capsys.readouterr().out
    assert log.read_text().count("#SBATCH --array") == 1


# --------------------------------------------------------------------------- tracking


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_log_with_a_tracker_that_is_not_installed_says_how_to_fix_it(tmp_path, tracker, capsys):
    from accelerate.utils import is_mlflow_available, is_wandb_available

    from crossmodal.tracking import check_tracker

    if {"wandb": is_wandb_available, "mlflow": is_mlflow_available}[tracker]():
        pytest.skip(f"{tracker} is installed here")
    fix = f"pip install {tracker}"
    with pytest.raises(InvalidInputError, match=fix):
        check_tracker(tracker)
    with pytest.raises(InvalidInputError, match=fix):
        jobs.submit("main_results", {}, profile="smoke", runs_dir=tmp_path, log_with=tracker,
                    notebooks=NOTEBOOKS)
    # from the command line: one error line, exit 2, before any training or submission
    capsys.readouterr()
    for argv in (["run", "--task", "smoke_digits", "--log-with", tracker],
                 ["sweep", str(NOTEBOOKS / "main_results.ipynb"), "--runs-dir",
                  str(tmp_path / "runs"), "--log-with", tracker]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("crossmodal: error: --log-with") and fix in err, err
    assert not (tmp_path / "runs").exists()


def test_run_passes_log_with_to_the_runner(tmp_path, monkeypatch, capsys):
    import crossmodal.runner

    seen = {}

    def fake_run(task, method, profile, **kw):
        seen.update(kw)
        return {**_fake_result(task, method, 0, 1.0), "profile": profile}

    monkeypatch.setattr(crossmodal.runner, "run", fake_run)
    assert main(["run", "--task", "smoke_gunpoint", "--out", str(tmp_path), "--log-with",
                 "tensorboard"]) == 0
    assert seen["log_with"] == "tensorboard"


@pytest.mark.slow
def test_log_with_tensorboard_writes_a_readable_event_file(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from crossmodal.runner import run

    nb = cm.settings("main_results", "smoke", tasks=["smoke_gunpoint"], seeds=[0],
                     max_train=32, max_test=16)
    out = tmp_path / "run"
    result = run("smoke_gunpoint", "scratch", "smoke", epochs=2, out=out, progress=False,
                 splits=cm.load_splits(nb, "smoke_gunpoint", 0), log_with="tensorboard",
                 train_options={"batch_size": 8, "num_threads": 1})
    events = list((out / "logs" / "crossmodal").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "epoch/test_metric", "epoch/train_loss"} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(2 * 32 // 8))
    metric = [e.value for e in acc.Scalars("epoch/test_metric")]
    assert metric == pytest.approx([e["test_metric"] for e in result["epochs"]], rel=1e-6)
    lr = [e.value for e in acc.Scalars("train/lr")]
    assert lr[0] > 0 and lr[-1] < max(lr)  # warm-up then cosine decay, as scheduled


# --------------------------------------------------------------------------- local jobs


@pytest.mark.slow
def test_local_sweep_runs_jobs_and_the_collected_table_equals_the_direct_run(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    methods = ["nft", "scratch"]
    assert _sweep(runs_dir, "main_results", *TINY, "-p", "methods", repr(methods),
                  "--max-parallel", "2") == 0
    out = capsys.readouterr().out
    assert "2 submitted" in out
    states = _wait(runs_dir)
    assert [s.state for s in states] == ["done", "done"], jobs.format_status(runs_dir, states)
    # a finished run is never run twice
    assert _sweep(runs_dir, "main_results", *TINY, "-p", "methods", repr(methods)) == 0
    assert "2 done" in capsys.readouterr().out

    nb, direct = _direct("main_results", methods, epochs=2)
    nbc = cm.settings("main_results", "smoke", tasks=["smoke_gunpoint"], seeds=[0], epochs=2,
                      max_train=16, max_test=16, runs_dir=runs_dir,
                      output_dir=tmp_path / "report")
    collected = cm.run_grid(nbc, cm.main_variants(methods, "smoke"))
    assert nbc.missing_runs == []
    cols = ["task", "variant", "method", "seed", "final", "best", "curve", "train_loss"]
    pd.testing.assert_frame_equal(collected[cols], direct[cols])
    table = cm.compare_with_paper(collected, profile="smoke")
    pd.testing.assert_frame_equal(table, cm.compare_with_paper(direct, profile="smoke"))

    # the same check as the lead's full one, through benchmarks/sweep_equality.py: the
    # notebook executed by papermill in collect mode (the two finished runs, not retrained)
    # against a direct papermill run of the same reduced notebook
    eq = _sweep_equality()
    out = tmp_path / "sweep_equality.json"
    params = ["-p", "tasks", "['smoke_gunpoint']", "-p", "seeds", "[0]", "-p", "epochs", "2",
              "-p", "max_train", "16", "-p", "max_test", "16", "-p", "methods", repr(methods)]
    assert eq.main([*params, "--runs-dir", str(runs_dir), "--out", str(out)]) == 0
    verdict = json.loads(out.read_text())
    assert verdict["verdict"] == "equal" and verdict["n_runs"] == 2, verdict
    assert verdict["max_relative_difference"] <= 1e-3 and verdict["missing_runs"] == []
    assert verdict["reference"] == "direct papermill run of the same parameters"
    assert "EQUAL" in capsys.readouterr().out


def _sweep_equality():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_equality",
                                                  ROOT / "benchmarks" / "sweep_equality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_equality_compares_every_number_and_ignores_wall_times(tmp_path):
    """benchmarks/sweep_equality.py's comparison: a changed metric fails, wall time does not."""
    eq = _sweep_equality()
    ref, fresh = tmp_path / "ref", tmp_path / "fresh"
    for d in (ref, fresh):
        d.mkdir()
    (ref / "results.csv").write_text("task,variant,ours\nsmoke_gunpoint,nft,30.0\n")
    (ref / "runs.csv").write_text('task,final,curve,wall_seconds\nx,30.0,"[40.0, 30.0]",5.0\n')
    (fresh / "results.csv").write_text("task,variant,ours\nsmoke_gunpoint,nft,30.00001\n")
    (fresh / "runs.csv").write_text('task,final,curve,wall_seconds\nx,30.0,"[40.0, 30.0]",9.0\n')
    diffs, worst = eq.compare_tables(fresh, ref, rel=1e-3)
    assert diffs == [] and 0 < worst < 1e-6
    (fresh / "runs.csv").write_text('task,final,curve,wall_seconds\nx,30.0,"[40.0, 33.0]",9.0\n')
    diffs, worst = eq.compare_tables(fresh, ref, rel=1e-3)
    assert len(diffs) == 1 and "runs.csv" in diffs[0] and worst == pytest.approx(3 / 33)
    (fresh / "results.csv").unlink()
    assert "results.csv: not written by the collect run" in eq.compare_tables(
        fresh, ref, rel=1e-3)[0]


def _wait_for(cond, what: str, runs_dir: Path, timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"{what}\n{jobs.format_status(runs_dir)}"
        time.sleep(0.02)


def _status(folder: Path) -> dict:
    return json.loads((folder / "status.json").read_text()) \
        if (folder / "status.json").exists() else {}


@pytest.mark.slow
def test_a_preempted_then_killed_job_resumes_to_the_uninterrupted_metric(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    args = ["-p", "tasks", "smoke_gunpoint", "-p", "seeds", "0", "-p", "epochs", "6",
            "-p", "max_train", "32",
            "-p", "max_test", "16", "-p", "methods", "['scratch']"]
    assert _sweep(runs_dir, "main_results", *args) == 0
    (folder,) = [p.parent for p in runs_dir.glob("*/spec.json")]
    ckpt = folder / "checkpoint.pt"

    # 1. preemption: USR2 (what Slurm sends) makes submitit checkpoint and requeue the job
    _wait_for(ckpt.exists, "no first epoch checkpoint", runs_dir)
    first = _status(folder)["pid"]
    os.kill(first, signal.SIGUSR2)
    t_signal = time.time()
    _wait_for(lambda: _status(folder).get("pid", first) != first, "not requeued", runs_dir)
    second = _status(folder)["pid"]
    # the requeued process resumed: it writes a checkpoint of a later epoch
    _wait_for(lambda: ckpt.exists() and ckpt.stat().st_mtime > t_signal + 0.5
              and _status(folder)["pid"] == second, "the requeued job trained no epoch",
              runs_dir)

    # 2. a hard kill (out of memory, node failure): the run is failed until resubmitted
    os.kill(second, signal.SIGKILL)
    _wait_for(lambda: jobs.run_state(folder).state != "running", "still running", runs_dir, 30)
    assert not (folder / "results.json").exists(), "the run finished before it was killed"
    assert jobs.run_state(folder).state == "failed"
    job = json.loads((folder / "job.json").read_text())
    assert "Requeued job" in Path(job["stdout"]).read_text() + Path(job["stderr"]).read_text()
    done_epochs = len((folder / "metrics.jsonl").read_text().splitlines())
    assert 2 <= done_epochs < 6

    assert _sweep(runs_dir, "main_results", *args) == 0
    assert "1 submitted" in capsys.readouterr().out
    assert _wait(runs_dir)[0].state == "done"
    resumed = json.loads((folder / "results.json").read_text())
    nb = cm.settings("main_results", "smoke", tasks=["smoke_gunpoint"], seeds=[0], epochs=6,
                     max_train=32, max_test=16)
    direct = cm.run_grid(nb, cm.main_variants(["scratch"], "smoke"))
    assert resumed["final_metric"] == direct["final"].iloc[0]
    assert [e["test_metric"] for e in resumed["epochs"]] == direct["curve"].iloc[0]
    assert [e["train_loss"] for e in resumed["epochs"]] == direct["train_loss"].iloc[0]


@pytest.mark.slow
def test_status_reports_a_failing_job_with_its_error_and_command(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    # a misspelt proxy fails only when the run loads it: inside the job
    assert _sweep(runs_dir, "orca_ablations", "-p", "ablations", "['proxy']",
                  "-p", "proxies", "['no_such_proxy']", "-p", "tasks", "smoke_basicmotions",
                  "-p", "seeds", "0",
                  "-p", "epochs", "1", "-p", "max_train", "16", "-p", "max_test", "16",
                  "--max-parallel", "2") == 0
    capsys.readouterr()
    states = {s.run_id: s for s in _wait(runs_dir)}
    assert sorted(s.state for s in states.values()) == ["done", "failed"]
    (failed,) = [s for s in states.values() if s.state == "failed"]
    assert "no_such_proxy" in (runs_dir / failed.run_id / "error.txt").read_text()
    assert main(["sweep", "--status", str(runs_dir)]) == 1
    out = capsys.readouterr().out
    assert "2 runs: 0 pending, 0 running, 1 done, 1 failed" in out
    assert "unknown proxy dataset 'no_such_proxy'" in out
    assert f"rerun: crossmodal sweep --run {runs_dir / failed.run_id}" in out
