"""Batch reproduction into ``reports/``: every smoke task x every method.

``crossmodal reproduce --profile smoke`` (what ``make reproduce`` calls) runs each
(task, method) pair, continues past failures, exits non-zero listing them, and regenerates
``reports/index.md``: one table of every result.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from crossmodal.reporting import round_sig

#: Methods in the batch reproduction (later issues add orca, pare, mona, recraft, gap_adaptive).
DEFAULT_METHODS = ("scratch", "nft", "fpt")


def reproduce(
    profile: str = "smoke",
    only: list[str] | None = None,
    reports: str | Path = "reports",
    methods: tuple[str, ...] = DEFAULT_METHODS,
    progress: bool = True,
) -> int:
    """Run every smoke task x method; write ``reports/runs/...`` and ``reports/index.md``."""
    from tqdm.auto import tqdm

    from crossmodal.runner import run
    from crossmodal.tasks import list_tasks

    tasks = [t.key for t in list_tasks("smoke") if not only or t.key in only]
    jobs = [(t, m) for t in tasks for m in methods]
    reports = Path(reports)
    rows, failures = [], []
    for task, method in tqdm(jobs, desc=f"reproduce ({profile})", disable=not progress):
        out = reports / "runs" / task / method / profile
        try:
            r = run(task, method, profile, out=out, progress=False)
            rows.append((task, method, r["metric"]["display"], r["final_metric"],
                         r["wall_seconds"], "ok"))
        except Exception as err:  # keep going; report every failure at the end
            failures.append((task, method, f"{type(err).__name__}: {err}"))
            rows.append((task, method, "", float("nan"), 0.0, "FAILED"))
            (out).mkdir(parents=True, exist_ok=True)
            (out / "error.txt").write_text(traceback.format_exc())
    write_index(reports, profile, rows)
    if failures:
        print("\nFailed runs:")
        for task, method, msg in failures:
            print(f"  {task} / {method}: {msg}")
        return 1
    print(f"\n{len(rows)} runs written under {reports}/runs; summary in {reports}/index.md")
    return 0


def write_index(reports: Path, profile: str, rows: list[tuple]) -> Path:
    lines = [
        f"# Reproduction index ({profile} profile)",
        "",
        "Each row is one `crossmodal run`; its folder holds `results.json` and `metrics.jsonl`.",
        "Smoke tasks have no paper values: they check that every method runs end to end.",
        "",
        "| task | method | metric | final (test) | seconds | status |",
        "|---|---|---|---|---|---|",
    ]
    for task, method, metric, value, secs, status in rows:
        shown = f"{round_sig(value, 3):g}" if status == "ok" else "-"
        lines.append(f"| {task} | {method} | {metric} | {shown} | {secs:.0f} | {status} |")
    path = reports / "index.md"
    reports.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
