"""Submit a notebook's runs as jobs (submitit), run one job, and read where a sweep stands.

Layout of a runs directory (``--runs-dir DIR``)::

    DIR/<task>__<method>__seed<S>__<hash>/   one folder per run (crossmodal.sweep.plan)
        spec.json      what to run: notebook, its parameters, the run's full configuration
        job.json       the job that runs it: executor, job id, log files (each submission)
        status.json    running / failed / requeued, with host, pid and times (by the job)
        error.txt      the traceback of a failed run
        checkpoint.pt  the last epoch's checkpoint (deleted when the run completes)
        metrics.jsonl  one line per finished epoch
        results.json   the finished run (crossmodal.runner.run); its presence means done
        logs/          TensorBoard/MLflow/W&B files when the sweep was given --log-with
    DIR/.submitit/                          submitit's pickles and the jobs' stdout/stderr

A job is :class:`RunJob`: submitit checkpointable, so a preempted or timed-out Slurm job is
requeued, and (like any resubmitted job) resumes from the run's last epoch checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from crossmodal.errors import CrossmodalError, InvalidInputError

# The kit's modules (the runner, the notebook layer) are imported inside the functions: the
# CLI imports this module to build its parser, and `crossmodal --help` must not import torch.

EXECUTORS = ("local", "slurm")
STATES = ("pending", "running", "done", "failed")

#: Default wall-clock limit per job (minutes): Slurm's, and the local one (a week: a local
#: job also waits for a free slot inside its limit).
DEFAULT_TIMEOUT_MIN = {"slurm": 240, "local": 7 * 24 * 60}


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _pid_alive(pid: int) -> bool:
    """Whether a process of this machine is alive (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# --------------------------------------------------------------------------- the job


@contextlib.contextmanager
def _flock(path: Path, *, wait: bool):
    """An exclusive ``flock`` on ``path`` (yields False when taken and ``wait`` is off)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(f, flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _slot(runs_dir: Path, slots: int | None, poll_s: float = 0.5):
    """One of ``slots`` run slots of a local sweep (None: no limit): ``--max-parallel``.

    A local job waits here (its run stays "pending") until fewer than ``slots`` runs of the
    runs directory are training; the slot is a ``flock`` held by the running process, so a
    killed job frees its slot.
    """
    if not slots:
        yield
        return
    while True:
        for i in range(slots):
            with _flock(runs_dir / ".slots" / f"slot{i}.lock", wait=False) as got:
                if got:
                    yield
                    return
        time.sleep(poll_s)


class RunJob(submitit.helpers.Checkpointable):
    """Run the planned run of ``folder/spec.json`` (what a submitted job calls).

    A finished run (``results.json``) is not run again; an unfinished one resumes from its
    checkpoint (``crossmodal.runner.run(resume=True)``), except runs with a probe (a probe's
    own state, e.g. MoNA's fitted source classifier, is not in the checkpoint), which start
    over. As a submitit checkpointable its ``checkpoint`` (called on preemption or time-out)
    requeues the same call: everything it needs is on disk.
    """

    def __init__(self, folder: str | Path, slots: int | None = None) -> None:
        self.folder = str(folder)
        self.slots = slots

    def __call__(self) -> str:
        folder = Path(self.folder)
        if (folder / "results.json").exists():
            return "done"
        with _slot(folder.parent, self.slots), _flock(folder / ".lock", wait=False) as mine:
            if not mine:
                return "running elsewhere"  # another job holds this run
            status = {"state": "running", "host": socket.gethostname(), "pid": os.getpid(),
                      "started": time.time(), "job_id": _job_id()}
            _write_json(folder / "status.json", status)
            (folder / "error.txt").unlink(missing_ok=True)
            try:
                execute(folder)
            except Exception as err:
                (folder / "error.txt").write_text(
                    f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}")
                _write_json(folder / "status.json", {**status, "state": "failed",
                                                     "ended": time.time(),
                                                     "error": f"{type(err).__name__}: {err}"})
                raise
            except BaseException as err:  # submitit's requeue exits; Ctrl-C/cancel interrupts
                requeued = isinstance(err, SystemExit)
                _write_json(folder / "status.json", {
                    **status, "ended": time.time(),
                    "state": "requeued" if requeued else "failed",
                    "error": "preempted or timed out: requeued, resumes from the last epoch "
                             "checkpoint" if requeued else f"interrupted ({type(err).__name__})"})
                raise
            _write_json(folder / "status.json", {**status, "state": "done", "ended": time.time()})
        return "done"


def _job_id() -> str | None:
    try:
        return submitit.JobEnvironment().job_id
    except RuntimeError:  # not inside a submitit job (`crossmodal sweep --run`)
        return None


def execute(folder: str | Path) -> dict[str, Any]:
    """Train the run of ``folder/spec.json`` into ``folder``; return its result dict.

    The run is re-planned from the spec's notebook and parameters (so the probe and options
    are the notebook's own) and must have the spec's run id.
    """
    from crossmodal.notebook import load_splits
    from crossmodal.runner import run
    from crossmodal.sweep.grids import expand

    folder = Path(folder)
    spec = _read_json(folder / "spec.json")
    if spec is None:
        raise InvalidInputError(f"{folder} has no readable spec.json; is it a run folder of a "
                                "`crossmodal sweep --runs-dir`?")
    nb, planned = expand(spec["notebook"], spec["params"])
    match = [(p, g) for p, g in planned if p.run_id == spec["run_id"]]
    if not match:
        raise CrossmodalError(
            f"the grid of {spec['notebook']} no longer has the run {spec['run_id']} (the kit or "
            "the notebook's parameters changed since it was submitted); submit the sweep again "
            "to plan its current runs")
    p, g = match[0]
    extra = {"probe": g.probe} if g.probe is not None else {}
    return run(p.task, p.variant.method, nb.profile, epochs=nb.epochs, seed=p.seed, out=folder,
               resume=g.probe is None, body=p.body, data_root=nb.data_root,
               method_options=dict(p.variant.options),
               train_options={"num_threads": nb.num_threads, **g.train_options},
               progress=False, splits=load_splits(nb, p.task, p.seed),
               log_with=spec.get("log_with"), **extra)


# --------------------------------------------------------------------------- state


@dataclass
class RunState:
    """Where one run of a runs directory stands."""

    run_id: str
    state: str  # one of STATES
    detail: str = ""
    error: str = ""


def _job_alive(job: dict[str, Any] | None) -> bool | None:
    """Whether a submitted job still exists (None: cannot tell from here)."""
    if not job:
        return None
    if job.get("executor") == "local":
        if job.get("host") != socket.gethostname():
            return None
        return _pid_alive(int(job["job_id"]))
    base, _, task = str(job["job_id"]).partition("_")
    listed = _squeue_ids(base, int(time.time() // 10))
    if listed is None:
        return None
    return any(_id_matches(entry, base, task) for entry in listed)


@functools.lru_cache(maxsize=256)
def _squeue_ids(base_id: str, _bucket: int) -> tuple[str, ...] | None:
    """The ids Slurm lists for a job or job array (one ``squeue`` call per array and 10 s,
    not one per run); None when squeue cannot tell."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", base_id, "-o", "%i"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return tuple(out.stdout.split()) if out.returncode == 0 else None


def _id_matches(entry: str, base: str, task: str) -> bool:
    """Whether squeue's ``entry`` (``4242``, ``4242_3`` or a pending range ``4242_[2-5,7%4]``)
    is job ``base``'s array task ``task`` (or the job itself when ``task`` is empty)."""
    if not task or entry == base:
        return entry.split("_")[0] == base
    eb, _, et = entry.partition("_")
    if eb != base:
        return False
    if not et.startswith("["):
        return et == task
    for part in et.strip("[]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and int(lo) <= int(task) <= int(hi or lo):
            return True
    return False


def run_state(folder: str | Path) -> RunState:
    """done (results.json), failed (an error, or a job gone without a result), running, or
    pending (submitted, not started; or requeued)."""
    folder = Path(folder)
    rid = folder.name
    if (folder / "results.json").exists():
        return RunState(rid, "done")
    status = _read_json(folder / "status.json")
    job = _read_json(folder / "job.json")
    log = f"; log: {job['stderr']}" if job and job.get("stderr") else ""
    if status is None or status.get("state") == "requeued":
        alive = _job_alive(job)
        if alive is False:
            return RunState(rid, "failed", "its job ended before the run started" + log,
                            error="the job ended without running (see its log)")
        what = "requeued" if status else "submitted"
        return RunState(rid, "pending", f"{what}, job {job['job_id'] if job else '?'}")
    state = status.get("state")
    if state == "running":
        here = status.get("host") == socket.gethostname()
        if here and not _pid_alive(int(status["pid"])):
            return RunState(rid, "failed",
                            f"its process {status['pid']} died without a result (killed, out of "
                            "memory or preempted); resubmitting resumes from the last epoch "
                            "checkpoint" + log, error="process died")
        if not here and _job_alive(job) is False:
            return RunState(rid, "failed", f"its job {job['job_id']} is gone from the queue "
                            "without a result" + log, error="job gone")
        ckpt = " (has a checkpoint)" if (folder / "checkpoint.pt").exists() else ""
        return RunState(rid, "running", f"on {status.get('host')}, pid {status.get('pid')}{ckpt}")
    if state == "failed":
        return RunState(rid, "failed", str(folder / "error.txt") + log,
                        error=status.get("error", "failed"))
    return RunState(rid, "failed", f"done without results.json (state {state!r})",
                    error="no results.json")


def sweep_status(runs_dir: str | Path) -> list[RunState]:
    """The state of every run folder (a folder with a spec.json) of a runs directory."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise InvalidInputError(f"no runs directory at {runs_dir}")
    return [run_state(p.parent) for p in sorted(runs_dir.glob("*/spec.json"))]


def wait_for_runs(runs_dir: str | Path, timeout_s: float, poll_s: float = 1.0
                  ) -> list[RunState]:
    """Poll :func:`sweep_status` until no run of ``runs_dir`` is pending or running.

    Raises
    ------
    TimeoutError
        After ``timeout_s`` seconds, with the sweep's status table as its message.
    """
    t0 = time.monotonic()
    while True:
        states = sweep_status(runs_dir)
        if states and all(s.state in ("done", "failed") for s in states):
            return states
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(format_status(runs_dir, states))
        time.sleep(poll_s)


def rerun_command(runs_dir: str | Path, run_id: str) -> str:
    """The command that runs one run in the foreground (what its job runs)."""
    return f"crossmodal sweep --run {shlex.quote(str(Path(runs_dir) / run_id))}"


def format_status(runs_dir: str | Path, states: list[RunState] | None = None) -> str:
    """Counts per state, then each failed run with its error and the command that reruns it."""
    states = sweep_status(runs_dir) if states is None else states
    counts = Counter(s.state for s in states)
    lines = [f"{runs_dir}: {len(states)} runs: "
             + ", ".join(f"{counts.get(k, 0)} {k}" for k in STATES)]
    for s in states:
        if s.state == "running":
            lines.append(f"  running  {s.run_id}: {s.detail}")
    failed = [s for s in states if s.state == "failed"]
    if failed:
        lines.append("failed:")
        for s in failed:
            lines += [f"  {s.run_id}: {s.error}", f"    where: {s.detail}",
                      f"    rerun: {rerun_command(runs_dir, s.run_id)}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- executors


def slurm_parameters(*, partition: str | None = None, gpus_per_job: int = 1,
                     cpus_per_job: int | None = None, mem_gb: int | None = None,
                     timeout_min: int | None = None, max_parallel: int | None = None,
                     account: str | None = None, setup: list[str] | None = None,
                     job_name: str = "crossmodal") -> dict[str, Any]:
    """The ``SlurmExecutor.update_parameters`` of a sweep (sbatch's names).

    ``signal_delay_s``: Slurm sends USR2 this long before the time limit, so the job can be
    requeued (it resumes from its last epoch checkpoint).
    """
    params: dict[str, Any] = {"job_name": job_name, "gpus_per_node": int(gpus_per_job),
                              "ntasks_per_node": 1, "nodes": 1,
                              "time": int(timeout_min or DEFAULT_TIMEOUT_MIN["slurm"]),
                              "signal_delay_s": 120}
    if partition:
        params["partition"] = partition
    if cpus_per_job:
        params["cpus_per_task"] = int(cpus_per_job)
    if mem_gb:
        params["mem"] = f"{int(mem_gb)}GB"
    if max_parallel:
        params["array_parallelism"] = int(max_parallel)
    if account:
        params["additional_parameters"] = {"account": account}
    if setup:
        params["setup"] = list(setup)
    return params


def sbatch_text(params: dict[str, Any], folder: str | Path,
                command: str = "python -u -m submitit.core._submit FOLDER") -> str:
    """The sbatch script submitit writes for ``params`` (no Slurm needed to render it)."""
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(command=command, folder=str(folder), **params)


def make_executor(kind: str, runs_dir: Path, *, partition: str | None = None,
                  gpus_per_job: int | None = None, cpus_per_job: int | None = None,
                  mem_gb: int | None = None, timeout_min: int | None = None,
                  max_parallel: int | None = None, account: str | None = None,
                  setup: list[str] | None = None):
    """A submitit executor whose pickles and logs go to ``runs_dir/.submitit/``."""
    folder = runs_dir / ".submitit"
    if kind == "slurm":
        try:
            ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=3)
        except RuntimeError as err:
            raise CrossmodalError(f"--executor slurm: {err} (run the sweep on a Slurm login "
                                  "node, or use --executor local)") from err
        ex.update_parameters(**slurm_parameters(
            partition=partition, gpus_per_job=1 if gpus_per_job is None else gpus_per_job,
            cpus_per_job=cpus_per_job, mem_gb=mem_gb, timeout_min=timeout_min,
            max_parallel=max_parallel, account=account, setup=setup))
        return ex
    if kind != "local":
        raise InvalidInputError(f"--executor must be one of {EXECUTORS}, got {kind!r}")
    if gpus_per_job is None:  # every visible GPU, shared by the local jobs
        import torch

        gpus_per_job = torch.cuda.device_count()
    ex = submitit.LocalExecutor(folder=folder, max_num_timeout=3)
    ex.update_parameters(timeout_min=int(timeout_min or DEFAULT_TIMEOUT_MIN["local"]),
                         gpus_per_node=int(gpus_per_job), signal_delay_s=60)
    return ex


# --------------------------------------------------------------------------- submission


@dataclass
class Submitted:
    """One planned run and what the sweep did with it."""

    run_id: str
    task: str
    variant: str
    seed: int
    action: str  # "submitted", or why not: "done", "running", "pending"
    job_id: str = ""


def plan_sweep(notebook: str, overrides: dict[str, Any], *, profile: str,
               notebooks: str | Path | None = None):
    """``(notebook name, resolved parameters, settings, planned runs)`` of a notebook."""
    from crossmodal.sweep.grids import (
        expand,
        notebook_parameters,
        notebook_path,
        resolve_parameters,
    )

    path = notebook_path(notebook, notebooks)
    params = resolve_parameters(notebook_parameters(path), {**overrides, "profile": profile})
    nb, planned = expand(path.stem, params)
    return path.stem, params, nb, planned


def submit(notebook: str, overrides: dict[str, Any], *, profile: str, runs_dir: str | Path,
           executor: str = "local", log_with: str | None = None, dry_run: bool = False,
           notebooks: str | Path | None = None, **executor_options: Any) -> list[Submitted]:
    """Plan a notebook's runs and submit each unfinished one as a job; return at once.

    A done run is skipped; so is a running one and a pending one whose job still exists; a
    failed or interrupted run is submitted again (and resumes from its checkpoint).
    """
    from crossmodal.tracking import check_tracker

    if log_with is not None:
        check_tracker(log_with)
    runs_dir = Path(runs_dir).resolve()
    name, params, nb, planned = plan_sweep(notebook, overrides, profile=profile,
                                           notebooks=notebooks)
    rows, todo = [], []
    for p, _grid in planned:
        folder = runs_dir / p.run_id
        row = Submitted(p.run_id, p.task, p.variant.name, p.seed, "submitted")
        st = run_state(folder) if (folder / "spec.json").exists() else None
        if st is not None and st.state in ("done", "running", "pending"):
            row.action = st.state
            job = _read_json(folder / "job.json")
            row.job_id = str(job["job_id"]) if job and st.state != "done" else ""
        else:
            todo.append((row, folder, p))
        rows.append(row)
    if dry_run or not todo:
        for row, _, _ in todo:
            row.action = "would submit" if dry_run else row.action
        return rows
    runs_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["crossmodal", *sys.argv[1:]]) if sys.argv[1:] else ""
    for _row, folder, p in todo:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "status.json").unlink(missing_ok=True)
        _write_json(folder / "spec.json", {
            "run_id": p.run_id, "notebook": name, "params": params, "variant": p.variant.name,
            "identity": p.identity, "log_with": log_with, "submitted": time.time(),
            "submitted_by": command})
    ex = make_executor(executor, runs_dir, **executor_options)
    slots = executor_options.get("max_parallel") or (1 if executor == "local" else None)
    fns = [RunJob(folder, slots if executor == "local" else None) for _, folder, _ in todo]
    if executor == "slurm":
        with ex.batch():  # one job array; --max-parallel is its %limit
            jobs = [ex.submit(fn) for fn in fns]
    else:
        jobs = [ex.submit(fn) for fn in fns]
    for (row, folder, _), job in zip(todo, jobs):
        row.job_id = str(job.job_id)
        _write_json(folder / "job.json", {
            "executor": executor, "job_id": row.job_id, "host": socket.gethostname(),
            "submitted": time.time(), "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr)})
    return rows


def format_submitted(rows: list[Submitted]) -> str:
    """The table ``crossmodal sweep`` prints: one line per run with its job id."""
    header = ["run", "task", "variant", "seed", "job", "action"]
    body = [[r.run_id, r.task, r.variant, str(r.seed), r.job_id or "-", r.action] for r in rows]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
             for r in [header, ["-" * w for w in widths], *body]]
    counts = Counter(r.action for r in rows)
    lines.append(", ".join(f"{n} {a}" for a, n in counts.items()))
    return "\n".join(lines)
