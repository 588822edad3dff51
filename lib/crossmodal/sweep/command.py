"""``crossmodal sweep``: the command line of :mod:`crossmodal.sweep` (argparse only here,
so that building the CLI's parser imports nothing heavy)."""

from __future__ import annotations

import argparse

# The kit's modules are imported inside the functions: the CLI builds this parser for every
# command, and `crossmodal --help` must not import torch (seconds) through the runner.

USAGE = """\
crossmodal sweep NOTEBOOK [NOTEBOOK ...] --profile P --runs-dir DIR [-p NAME VALUE ...]
                 [--executor local|slurm] [--slurm-partition P] [--gpus-per-job N]
                 [--timeout-min M] [--max-parallel N] [--log-with tensorboard|wandb|mlflow]
crossmodal sweep --status DIR
crossmodal sweep --run DIR/RUN"""


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "sweep", usage=USAGE, help="submit a notebook's runs as jobs (local or Slurm)",
        description="Expand a notebook's grid (tasks x variants x seeds, from its parameters "
        "cell and -p overrides) into runs, submit each unfinished run as one job through "
        "submitit, and return at once with the job ids. Each run gets its own folder "
        "<task>__<method>__seed<S>__<config hash> under --runs-dir; a finished run is never "
        "run twice, an unfinished one resumes from its last epoch checkpoint. Collect the "
        "report afterwards by running the notebook with runs_dir (or `crossmodal reproduce "
        "--runs-dir`).")
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="notebooks/<name>.ipynb or a name; 'all' for every notebook")
    p.add_argument("--profile", default="smoke", choices=["smoke", "lab", "paper"])
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a notebook parameter as papermill's -p; VALUE is a Python literal "
                   "or a string, e.g. -p tasks \"['ECG']\" -p seeds 0 (repeatable)")
    p.add_argument("--runs-dir", help="the sweep's runs folder (one subfolder per run)")
    p.add_argument("--executor", default="local", choices=["local", "slurm"],
                   help="local: subprocesses on this machine; slurm: sbatch job arrays")
    p.add_argument("--slurm-partition", help="sbatch --partition")
    p.add_argument("--slurm-account", help="sbatch --account")
    p.add_argument("--slurm-setup", action="append", metavar="CMD",
                   help="a shell line run before the job (e.g. 'module load cuda'); repeatable")
    p.add_argument("--gpus-per-job", type=int,
                   help="GPUs per run (default: 1 on Slurm; every visible GPU locally)")
    p.add_argument("--cpus-per-job", type=int, help="CPU cores per run (sbatch --cpus-per-task)")
    p.add_argument("--mem-gb", type=int, help="memory per run in GB (sbatch --mem)")
    p.add_argument("--timeout-min", type=int,
                   help="wall-clock limit per job in minutes (default: 240 on Slurm); a job "
                   "that reaches it is requeued and resumes from its last epoch checkpoint")
    p.add_argument("--max-parallel", type=int,
                   help="runs training at once (default: 1 locally; Slurm: the array's %%limit)")
    p.add_argument("--log-with", choices=["tensorboard", "wandb", "mlflow"],
                   help="experiment tracking of every run (as `crossmodal run --log-with`)")
    p.add_argument("--dry-run", action="store_true", help="list the runs, submit nothing")
    p.add_argument("--status", metavar="DIR",
                   help="print the counts of pending/running/done/failed runs of DIR and, for "
                   "each failed run, its error and the command that reruns it")
    p.add_argument("--run", metavar="DIR/RUN",
                   help="run one run folder in the foreground (what its job does)")
    p.set_defaults(func=cmd_sweep)
    return p


def cmd_sweep(args) -> int:
    from crossmodal.errors import InvalidInputError
    from crossmodal.sweep import jobs
    from crossmodal.sweep.grids import NOTEBOOK_GRIDS, parse_value

    if args.status:
        states = jobs.sweep_status(args.status)
        print(jobs.format_status(args.status, states))
        return 1 if any(s.state == "failed" for s in states) else 0
    if args.run:
        print(jobs.RunJob(args.run)())
        return 0
    if not args.notebooks or not args.runs_dir:
        raise InvalidInputError("give the notebook(s) and --runs-dir (or --status DIR); "
                                f"usage:\n{USAGE}")
    names = list(NOTEBOOK_GRIDS) if args.notebooks == ["all"] else args.notebooks
    overrides = {k: parse_value(v) for k, v in args.parameter or []}
    options = dict(partition=args.slurm_partition, gpus_per_job=args.gpus_per_job,
                   cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb,
                   timeout_min=args.timeout_min, max_parallel=args.max_parallel,
                   account=args.slurm_account, setup=args.slurm_setup)
    for name in names:
        mine = overrides
        if len(names) > 1:  # a -p applies to the notebooks that have that parameter
            from crossmodal.sweep.grids import notebook_parameters, notebook_path

            known = notebook_parameters(notebook_path(name))
            mine = {k: v for k, v in overrides.items() if k in known}
        rows = jobs.submit(name, mine, profile=args.profile, runs_dir=args.runs_dir,
                           executor=args.executor, log_with=args.log_with,
                           dry_run=args.dry_run, **options)
        print(f"{name} ({args.profile}) -> {args.runs_dir}")
        print(jobs.format_submitted(rows))
    print(f"\nprogress: crossmodal sweep --status {args.runs_dir}")
    return 0
