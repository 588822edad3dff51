"""Runs never clobber each other, resume only what it can, and bad input fails before work.

The cases are those of the reliability review (issue 12): a lock on ``--out``, ``--resume``
against the full configuration, results.json before the checkpoint is removed, option
values parsed against their declared types, ``run(splits=...)`` validation, early errors
for the seed, the epochs and the output folder, thread count and file permissions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import crossmodal.runner as runner
from crossmodal.cli import main
from crossmodal.errors import InvalidInputError
from crossmodal.profiles import default_body
from crossmodal.reporting import write_json_atomic
from crossmodal.runlock import LOCK_NAME, RunFolderInUseError, RunLock
from crossmodal.runner import run
from crossmodal.tasks import get_task
from crossmodal.training import TrainConfig
from crossmodal.validation import coerce_options, validate_splits

GP = ["--task", "smoke_gunpoint", "--profile", "smoke", "--no-progress"]
LIB = str(Path(__file__).resolve().parents[1] / "lib")


class Stop(Exception):
    """Raised by a patched step to end a run once the part under test is done."""


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a run gets as far as loading data or building a model."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the run started work before rejecting its input")

    monkeypatch.setattr(runner, "load_task_data", forbidden)
    monkeypatch.setattr(runner, "build_model", forbidden)


# --------------------------------------------------------------------------- option values


def test_cli_option_values_follow_the_declared_types(monkeypatch, tmp_path):
    seen = {}
    real_get_method, real_config = runner.get_method, runner.make_train_config

    def get_method(name, **options):
        seen["method"] = real_get_method(name, **options)
        return seen["method"]

    def make_train_config(*args, **kwargs):
        seen["train"] = real_config(*args, **kwargs)
        return seen["train"]

    def build_model(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(runner, "get_method", get_method)
    monkeypatch.setattr(runner, "make_train_config", make_train_config)
    monkeypatch.setattr(runner, "build_model", build_model)
    with pytest.raises(Stop):
        main(["run", *GP, "--method", "fpt", "--out", str(tmp_path / "o"),
              "-o", "train_layernorm=false", "-t", "clip_grad=none", "-t", "lr=1e-3",
              "-t", "keep_checkpoint=yes"])
    assert seen["method"].config.train_layernorm is False  # "false" used to be truthy
    cfg = seen["train"]
    assert cfg.clip_grad is None and cfg.lr == 0.001 and isinstance(cfg.lr, float)
    assert cfg.keep_checkpoint is True


@pytest.mark.parametrize("text, value", [
    ("true", True), ("False", False), ("1", True), ("0", False), ("yes", True), ("no", False),
])
def test_boolean_options_accept_the_usual_spellings(text, value):
    from crossmodal.methods.baselines import FPTConfig

    assert coerce_options(FPTConfig, {"train_layernorm": text}) == {"train_layernorm": value}


def test_python_values_are_type_checked_too():
    from crossmodal.methods.orca import ORCAConfig

    assert coerce_options(ORCAConfig, {"align_epochs": np.int64(3)}) == {"align_epochs": 3}
    with pytest.raises(InvalidInputError, match="align_epochs"):
        coerce_options(ORCAConfig, {"align_epochs": 1.5})
    with pytest.raises(InvalidInputError, match="must be true or false"):
        coerce_options(TrainConfig, {"progress": 2})


@pytest.mark.parametrize("argv, words", [
    (["--method", "orca", "-o", "align_epochs=abc"], ["align_epochs", "an integer", "-o align_epochs="]),
    (["--method", "orca", "-o", "align_epochs=1.5"], ["align_epochs", "an integer"]),
    (["--method", "nft", "-t", "lr=abc"], ["lr", "number", "-t lr="]),
    (["--method", "fpt", "-o", "train_layernorm=maybe"], ["train_layernorm", "true or false"]),
    (["--method", "nft", "-t", "seed=3"], ["seed", "--seed"]),
    (["--method", "nft", "-t", "epochs=3"], ["epochs", "--epochs"]),
    (["--method", "nft", "--seed", "-1"], ["seed", "4294967295"]),
    (["--method", "nft", "--seed", str(2**64)], ["seed", "4294967295"]),
    (["--method", "orca", "--epochs", "0"], ["epochs must be >= 1"]),
    (["--method", "orca", "--epochs", "-1"], ["epochs must be >= 1"]),
])
def test_bad_values_are_one_line_errors_before_any_work(argv, words, no_work, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *GP, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("crossmodal: error:") and "\n" not in err
    for word in words:
        assert word in err
    assert not out.exists()  # the folder made for the run is removed again


def test_an_out_that_is_a_file_is_refused_before_any_work(no_work, tmp_path, capsys):
    target = tmp_path / "results"
    target.write_text("keep me")
    assert main(["run", *GP, "--method", "orca", "--out", str(target)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_an_unwritable_out_is_refused_before_any_work(no_work, tmp_path, capsys):
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    else:  # root ignores permissions; sysfs refuses new files even to root
        folder = Path("/sys/kernel")
        if not folder.is_dir() or os.access(folder, os.W_OK) and _can_create(folder):
            pytest.skip("no read-only folder to test with")
    for out in (folder, folder / "sub"):
        assert main(["run", *GP, "--method", "orca", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "choose a writable --out" in err and "Traceback" not in err


def _can_create(folder: Path) -> bool:
    probe = folder / ".crossmodal-probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


def test_reproduce_hint_names_a_flag_the_cli_accepts(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["reproduce", "--only", "00_quickstart", "--notebooks", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "no notebooks folder" in err and "--notebooks" in err


# --------------------------------------------------------------------------- the lock


def _hold_lock(folder: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {LIB!r})
        from crossmodal.runlock import RunLock
        RunLock({str(folder)!r}).acquire()
        print("locked", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_a_folder_in_use_is_refused_naming_the_process(no_work, tmp_path,
                                                                         capsys):
    folder = tmp_path / "run"
    holder = _hold_lock(folder)
    try:
        assert main(["run", *GP, "--method", "nft", "--out", str(folder)]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "in use by another run" in err
        with pytest.raises(RunFolderInUseError):
            run("smoke_gunpoint", "nft", out=folder, progress=False)
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's flock: the stale lock file is taken over
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == holder.pid
    with RunLock(folder):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (folder / LOCK_NAME).exists()


def test_two_locks_in_one_process_exclude_each_other(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunFolderInUseError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()
    assert not (tmp_path / "run").exists()  # created by the lock, left empty: removed


def test_without_flock_a_live_pid_refuses_and_a_dead_pid_is_taken_over(tmp_path, monkeypatch):
    import crossmodal.runlock as runlock

    monkeypatch.setattr(runlock, "fcntl", None)  # a file system without flock
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / LOCK_NAME).write_text(json.dumps({"pid": live.pid}))
        with pytest.raises(RunFolderInUseError, match=f"pid {live.pid}"):
            RunLock(folder).acquire()
    finally:
        live.kill()
        live.wait()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": dead.pid}))
    with RunLock(folder):
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_run_removes_the_temporary_files_a_killed_run_left(no_work, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in (".results.json.x1y2.tmp", "checkpoint.pt.tmp"):
        (folder / name).write_text("half")
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInputError):  # stops at once; the cleaning came first
        run("smoke_gunpoint", "orca", method_options={"align_epochs": "abc"}, out=folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


# --------------------------------------------------------------------------- splits


def _splits(small_splits, key="smoke_gunpoint", **change):
    s = small_splits(key, 16, 8, pick="first")
    s = {k: (x.copy(), y.copy()) for k, (x, y) in s.items()}
    for name, fn in change.items():
        s[name] = fn(*s[name])
    return s


def _with(a, i, v):
    a = a.copy()
    a.reshape(-1)[i] = v
    return a


@pytest.mark.parametrize("method", ["nft", "orca"])
@pytest.mark.parametrize("change, match", [
    (dict(train=lambda x, y: (x[:0], y[:0])), "train: the split is empty"),
    (dict(test=lambda x, y: (x[:0], y[:0])), "test: the split is empty"),
    (dict(train=lambda x, y: (_with(x, 7, np.nan), y)), "train: 1 input samples contain NaN"),
    (dict(train=lambda x, y: (_with(x, 7, np.inf), y)), "NaN or inf"),
    (dict(test=lambda x, y: (_with(x, 7, np.nan), y)), "test: 1 input samples contain NaN"),
    (dict(train=lambda x, y: (x, _with(y, 0, 10))), r"labels must lie in \[0, 2\)"),
    (dict(train=lambda x, y: (x, _with(y, 0, -1))), r"labels must lie in \[0, 2\)"),
    (dict(test=lambda x, y: (x, _with(y, 0, 10))), r"test: labels must lie"),
    (dict(train=lambda x, y: (x, y[:-1])), "16 inputs but 15 targets"),
    (dict(train=lambda x, y: (x, y.astype(np.float32))), "integer labels"),
    (dict(train=lambda x, y: (x[..., :100], y)), r"per-sample shape \(1, 100\)"),
    (dict(train=lambda x, y: (x[:, 0], y)), "inputs have shape"),
])
def test_user_splits_are_validated_before_any_work(small_splits, change, match, method, no_work):
    with pytest.raises(InvalidInputError, match=match):
        run("smoke_gunpoint", method, "smoke", epochs=1, progress=False,
            method_options={"align_epochs": 1} if method == "orca" else None,
            splits=_splits(small_splits, **change))


def test_splits_must_have_train_and_test(small_splits, no_work):
    with pytest.raises(InvalidInputError, match="no 'test' split"):
        run("smoke_gunpoint", "nft", progress=False, splits={"train": small_splits("smoke_gunpoint", 16, 8, pick="first")["train"]})


def test_validation_converts_float64_and_lists_and_checks_multilabel_targets(small_splits):
    spec = get_task("smoke_gunpoint")
    x, y = small_splits("smoke_gunpoint", 16, 8, pick="first")["train"]
    out = validate_splits(spec, {"train": (x.astype(np.float64), y.astype(np.int32)),
                                 "test": (x.tolist(), y.tolist())})
    assert out["train"][0].dtype == np.float32 and out["train"][1].dtype == np.int64
    assert out["test"][0].dtype == np.float32 and out["test"][0].shape == x.shape
    assert validate_splits(spec, {"train": (x, y), "test": (x, y)})["train"][0] is x  # no copy
    ml = get_task("DeepSEA")
    xm = np.zeros((4, *ml.input_shape), np.float32)
    ym = np.zeros((4, ml.num_outputs), np.float32)
    validate_splits(ml, {"train": (xm, ym), "test": (xm, ym)})
    with pytest.raises(InvalidInputError, match="multilabel targets must be 0 or 1"):
        validate_splits(ml, {"train": (xm, ym + 2), "test": (xm, ym)})
    with pytest.raises(InvalidInputError, match="multilabel targets must have shape"):
        validate_splits(ml, {"train": (xm, ym[:, :3]), "test": (xm, ym)})


@pytest.mark.slow
def test_float64_user_arrays_train(small_splits, tmp_path):
    s = small_splits("smoke_gunpoint", 16, 8, pick="first")
    s = {k: (x.astype(np.float64), y) for k, (x, y) in s.items()}
    r = run("smoke_gunpoint", "nft", "smoke", epochs=1, progress=False, splits=s,
            train_options={"num_threads": 1})
    assert np.isfinite(r["final_metric"]) and r["n_train"] == 16


# --------------------------------------------------------------------------- resume


def _interrupted_run(monkeypatch, out, splits, **kw):
    """A 2-epoch run killed after its first epoch (its checkpoint is on disk)."""
    real_fit = runner.fit

    def fit(*args, **kwargs):
        def stop(record):
            raise KeyboardInterrupt

        kwargs["on_epoch_end"] = stop
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runner, "fit", fit)
    with pytest.raises(KeyboardInterrupt):
        run("smoke_gunpoint", "nft", "smoke", epochs=2, out=out, progress=False, splits=splits,
            **kw)
    monkeypatch.setattr(runner, "fit", real_fit)
    assert (out / "checkpoint.pt").exists() and not (out / "results.json").exists()


@pytest.mark.slow
def test_resume_compares_the_whole_configuration_and_a_finished_run_is_not_retrained(small_splits,
        tmp_path, monkeypatch, capsys):
    out, splits = tmp_path / "run", small_splits("smoke_gunpoint", 16, 8, pick="first")
    base = dict(epochs=2, out=out, progress=False, resume=True)
    _interrupted_run(monkeypatch, out, splits,
                     train_options={"num_threads": 1, "keep_checkpoint": True})
    ckpt_bytes = (out / "checkpoint.pt").stat().st_size

    def forbidden(*args, **kwargs):
        raise AssertionError("a refused resume built a model")

    # the smoke recipe's lr for the task, whatever the recipe says today
    saved_lr = runner.make_train_config(get_task("smoke_gunpoint"), "smoke").lr
    assert saved_lr != 1e-3
    monkeypatch.setattr(runner, "build_model", forbidden)
    for kw, key in [
        (dict(seed=7), "seed: 0 -> 7"),
        (dict(train_options={"lr": 1e-3}), f"train.lr: {saved_lr!r} -> 0.001"),
        (dict(method="fpt"), "method: 'nft' -> 'fpt'"),
        (dict(task="smoke_basicmotions", splits=small_splits("smoke_basicmotions", 16, 8, pick="first")),
         "task: 'smoke_gunpoint' -> 'smoke_basicmotions'"),
        # the smoke profile's body, whatever it is today (minilm-l3)
        (dict(body="minilm-random"),
         f"body: {default_body(get_task('smoke_gunpoint'), 'smoke')!r} -> 'minilm-random'"),
    ]:
        args = {"task": "smoke_gunpoint", "method": "nft", "splits": splits, **base, **kw}
        with pytest.raises(InvalidInputError, match="cannot resume") as err:
            run(args.pop("task"), args.pop("method"), "smoke", **args)
        assert key in str(err.value), str(err.value)
    monkeypatch.undo()
    assert (out / "checkpoint.pt").stat().st_size == ckpt_bytes  # nothing was touched

    # the same configuration resumes (the thread count may differ) and completes; the
    # checkpoint the interrupted run was told to keep stays
    first = run("smoke_gunpoint", "nft", "smoke", splits=splits, **base,
                train_options={"num_threads": 2})
    assert [e["epoch"] for e in first["epochs"]] == [1, 2] and first["status"] == "complete"
    assert (out / "checkpoint.pt").exists()
    saved = (out / "results.json").read_text()

    # --resume on the finished run: says so, returns it, trains nothing, changes nothing
    def no_fit(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runner, "fit", no_fit)
    capsys.readouterr()
    again = run("smoke_gunpoint", "nft", "smoke", splits=splits, **base)
    assert again["final_metric"] == first["final_metric"]
    assert "already holds this finished run" in capsys.readouterr().err
    with pytest.raises(InvalidInputError, match="seed: 0 -> 7"):
        run("smoke_gunpoint", "nft", "smoke", splits=splits, seed=7, **base)
    assert (out / "results.json").read_text() == saved


@pytest.mark.slow
def test_results_are_written_before_the_checkpoint_is_removed(small_splits, tmp_path, monkeypatch):
    out, splits = tmp_path / "run", small_splits("smoke_gunpoint", 16, 8, pick="first")

    def killed_while_writing(obj, path):
        raise Stop  # a kill between the end of training and results.json

    monkeypatch.setattr(runner, "write_json_atomic", killed_while_writing)
    with pytest.raises(Stop):
        run("smoke_gunpoint", "nft", "smoke", epochs=1, out=out, progress=False, splits=splits)
    monkeypatch.undo()
    assert (out / "checkpoint.pt").exists()  # the finished training is not lost

    def no_training(*args, **kwargs):
        raise AssertionError("the resumed run trained an epoch again")

    import accelerate

    monkeypatch.setattr(accelerate.Accelerator, "backward", no_training)
    r = run("smoke_gunpoint", "nft", "smoke", epochs=1, out=out, progress=False, splits=splits,
            resume=True)
    monkeypatch.undo()
    assert r["status"] == "complete" and (out / "results.json").exists()
    assert not (out / "checkpoint.pt").exists()


# --------------------------------------------------------------------------- environment


def test_thread_count_follows_omp_num_threads(monkeypatch):
    from crossmodal.training import default_num_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_num_threads() == 1 and TrainConfig().num_threads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert TrainConfig().num_threads == 3
    assert runner.make_train_config(get_task("smoke_gunpoint"), "smoke").num_threads == 3
    from crossmodal import notebook as cm

    assert cm.settings("x", "smoke", tasks=["smoke_digits"]).num_threads == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert default_num_threads() == 1


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_results_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_json_atomic({"a": 1}, tmp_path / "results.json")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_other_ranks_of_a_launch_neither_lock_nor_clean(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "checkpoint.pt.tmp").write_text("rank 0 is writing this")
    monkeypatch.setenv("RANK", "1")
    with RunLock(folder) as lock:
        assert not lock.held and not (folder / LOCK_NAME).exists()
    with pytest.raises(InvalidInputError):
        run("smoke_gunpoint", "orca", method_options={"align_epochs": "abc"}, out=folder)
    assert (folder / "checkpoint.pt.tmp").exists()


def test_a_fresh_run_removes_an_old_result_before_it_trains(small_splits, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"status": "complete", "seed": 0}))

    def build_model(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(runner, "build_model", build_model)
    with pytest.raises(Stop):
        run("smoke_gunpoint", "nft", seed=1, out=folder, progress=False,
            splits=small_splits("smoke_gunpoint", 16, 8, pick="first"))
    # a kill from here on can no longer leave seed 0's result beside seed 1's log
    assert not (folder / "results.json").exists()
