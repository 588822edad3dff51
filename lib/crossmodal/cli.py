"""The ``crossmodal`` command line.

    crossmodal tasks                          # the task registry, with data presence
    crossmodal methods                        # registered methods and their options
    crossmodal run --task smoke_digits --method nft --profile smoke --out runs/x
    crossmodal protocol ECG --method orca     # the resolved settings of a run, with sources
    crossmodal reproduce --profile smoke      # run every notebook (papermill) into reports/
    crossmodal sweep notebooks/main_results.ipynb --profile paper --executor slurm --runs-dir D
    crossmodal data download|verify|generate|list ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crossmodal.errors import CrossmodalError

# Each command imports what it needs inside its function: ``crossmodal --help`` and the data
# commands must not pay for torch, transformers and accelerate (seconds) that only ``run``
# needs. This is the one module of the kit that imports lazily for that reason.


def _parse_options(items: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{k: "v"}``; :func:`crossmodal.runner.run` parses each value
    against the option's declared type (``false`` is False for a boolean, ``abc`` an error
    for an integer), before any work."""
    from crossmodal.validation import parse_assignments

    return parse_assignments(items)


def _data_present(task, root: Path) -> str:
    if task.offline:
        return "offline"
    from crossmodal.data import presence

    return "yes" if presence.is_present(task, root) else "no"


def cmd_tasks(args) -> int:
    from crossmodal.data.root import data_root
    from crossmodal.metrics import get_metric
    from crossmodal.tasks import list_tasks

    root = data_root(args.data_root)
    rows = []
    for t in list_tasks():
        metric = get_metric(t.metric)
        rows.append([t.key, t.benchmark, t.modality, "x".join(map(str, t.input_shape)), t.output,
                     str(t.num_outputs), metric.display, "lower" if t.lower_is_better else "higher",
                     t.paper_data_size, _data_present(t, root)])
    header = ["task", "benchmark", "mod", "input", "output", "K", "metric", "better", "paper size",
              "data"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"\ndata root: {root}  (set CROSSMODAL_DATA or --data-root to change it)")
    return 0


def cmd_methods(args) -> int:
    import textwrap

    from crossmodal.methods import METHODS, method_options

    for name in sorted(METHODS):
        cls = METHODS[name]
        print(f"{name}: {cls.paper}")
        options = method_options(name)
        if not options:
            print("    (no options beyond the training settings)")
        for opt in options:
            print(f"    {opt['name']} = {opt['default']!r}  ({opt['type']})")
            for line in textwrap.wrap(opt["help"], 88):
                print(f"        {line}")
        print()
    return 0


def cmd_run(args) -> int:
    from crossmodal.runner import run

    out = args.out or f"runs/{args.task}/{args.method}/{args.profile}/seed{args.seed}"
    result = run(
        args.task, args.method, args.profile, epochs=args.epochs, seed=args.seed, out=out,
        resume=args.resume, body=args.body, data_root=args.data_root,
        method_options=_parse_options(args.option), train_options=_parse_options(args.train),
        progress=not args.no_progress, limit_batches=args.limit_batches,
        batch_size=args.batch_size, log_with=args.log_with,
    )
    metric = result["metric"]
    print(json.dumps({
        "task": result["task"], "method": result["method"], "profile": result["profile"],
        "metric": metric["display"], "final": round(result["final_metric"], 4),
        "best": round(result["best_metric"], 4), "wall_seconds": round(result["wall_seconds"], 1),
        "results": str(Path(out) / "results.json"),
        **({"dry_run": True} if result.get("dry_run") else {}),
    }, indent=2))
    return 0


def cmd_protocol(args) -> int:
    from crossmodal.protocol import format_protocol, resolve

    proto = resolve(args.task, args.method, args.profile)
    if args.json:
        print(json.dumps(proto.to_json(), indent=2))
    else:
        print(format_protocol(proto))
    return 0


def cmd_reproduce(args) -> int:
    from crossmodal.reproduce import reproduce

    return reproduce(profile=args.profile, only=args.only, reports=args.reports,
                     notebooks=args.notebooks, progress=not args.no_progress,
                     runs_dir=args.runs_dir, workers=args.workers)


def cmd_data(argv: list[str]) -> int:
    from crossmodal.data.cli import main as data_main

    return data_main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossmodal",
        description="Cross-modal fine-tuning kit: ORCA, PaRe, MoNA, RECRAFT and baselines.",
        epilog="`crossmodal data --help` lists the data commands (download, verify, generate).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tasks", help="list the task registry and whether each task's data is here")
    p.add_argument("--data-root", help="data folder (default: $CROSSMODAL_DATA or ./data)")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("methods", help="list the registered methods and their options")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("run", help="train and evaluate one method on one task",
                       description="Train one method on one task and write results.json, "
                       "metrics.jsonl (per epoch) and a checkpoint per epoch into --out.")
    p.add_argument("--task", required=True, help="task key (see `crossmodal tasks`)")
    p.add_argument("--method", default="nft", help="method name (see `crossmodal methods`)")
    p.add_argument("--profile", default="smoke", choices=["smoke", "lab", "paper"])
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the profile's)")
    p.add_argument("--seed", type=int, default=0, help="0 .. 2**32-1 (default 0)")
    p.add_argument("--out", help="output folder (default runs/<task>/<method>/<profile>/seed<S>)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--body", help="override the profile's body (minilm, minilm-random, "
                   "roberta-base, swin-base, ...)")
    p.add_argument("--data-root", help="data folder (default: $CROSSMODAL_DATA or ./data)")
    p.add_argument("--option", "-o", action="append", metavar="NAME=VALUE",
                   help="a method option, e.g. -o align_epochs=5 (repeatable)")
    p.add_argument("--train", "-t", action="append", metavar="NAME=VALUE",
                   help="a training option, e.g. -t lr=1e-4 -t batch_size=8 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--limit-batches", type=int, metavar="N",
                   help="dry run: every epoch and every stage-1 loop stops after N "
                   "micro-batches; evaluation on N batches (results.json: dry_run)")
    p.add_argument("--batch-size", type=int, metavar="B",
                   help="micro-batch size of every stage instead of the profile's "
                   "(accumulation and the rest stay; results.json: dry_run)")
    p.add_argument("--log-with", choices=["tensorboard", "wandb", "mlflow"],
                   help="log per-step loss and lr and per-epoch metrics through Accelerate's "
                   "trackers into <out>/logs (TensorBoard: offline files; wandb runs offline "
                   "unless WANDB_MODE is set; wandb and mlflow must be installed)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("protocol", help="print the resolved settings of a (task, method, "
                       "profile), each with its source",
                       description="The protocol table: fine-tuning settings, model (tokens, "
                       "dropout, embedder init), task loss and the method's stage settings, "
                       "each with its source (paper table or the authors' config file and key).")
    p.add_argument("task", help="task key (see `crossmodal tasks`)")
    p.add_argument("--method", "-m", default="nft", help="method name (default nft)")
    p.add_argument("--profile", default="paper", choices=["smoke", "lab", "paper"])
    p.add_argument("--json", action="store_true", help="print JSON instead of a listing")
    p.set_defaults(func=cmd_protocol)

    p = sub.add_parser("reproduce", help="run the smoke/lab/paper reproduction into reports/")
    p.add_argument("--profile", default="smoke", choices=["smoke", "lab", "paper"])
    p.add_argument("--only", nargs="*", help="only these notebooks (names in notebooks/)")
    p.add_argument("--reports", default="reports", help="reports folder (default: reports)")
    p.add_argument("--workers", type=int, default=2,
                   help="notebooks run at once, one process and one thread each (default 2)")
    p.add_argument("--notebooks", default="notebooks",
                   help="folder of the notebooks to run (default: notebooks, i.e. run from the "
                   "repository root)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--runs-dir", help="collect: every notebook reads its finished runs from "
                   "this `crossmodal sweep --runs-dir` instead of training")
    p.set_defaults(func=cmd_reproduce)

    from crossmodal.sweep.command import add_parser as add_sweep_parser

    add_sweep_parser(sub)

    sub.add_parser("data", help="download, verify or generate datasets (see `crossmodal data "
                   "--help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "data":
        return cmd_data(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CrossmodalError as err:
        print(f"crossmodal: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
