"""Benchmark crossmodal.distances.otdd against microsoft/otdd (optional) on synthetic data.

Data: two labelled datasets of ``n`` points per side, 10 classes, 32-D (class-conditional
Gaussians with different means and covariances on the two sides), float32, CPU.
For each ``n`` and inner mode we report, for ours and (when importable) the reference:

* ``time_s``: the minimum over ``--repeats`` runs (the machine is shared; the minimum is the
  least noisy estimate); the two implementations alternate within each repeat, in one process;
* ``value`` and ``rel_diff`` = |ours / reference - 1|;
* ``peak_mib``: the peak resident memory added by one call, measured in a fresh
  process (``ru_maxrss`` of the child minus its resident size before the call).

The reference is microsoft/otdd's ``DatasetDistance``; it is not part of this repository. It
is imported if ``import otdd.pytorch.distance`` works (e.g. with ``--reference-path`` pointing
at a checkout, under geomloss 0.2.x); otherwise its columns are skipped.

Usage::

    python benchmarks/otdd_bench.py                      # writes benchmarks/results/otdd.json
    python benchmarks/otdd_bench.py --sizes 500 2000 --repeats 3 --reference-path ~/otdd
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # the reference prints progress bars
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

import torch  # noqa: E402

from crossmodal.distances import otdd  # noqa: E402

N_CLASSES, DIM = 10, 32


def make_data(n: int, seed: int = 0):
    """Two datasets of n points, 10 balanced classes, 32-D, labels 0..9 in random order."""
    g = torch.Generator().manual_seed(seed + n)
    out = []
    for side in range(2):
        y = torch.arange(n) % N_CLASSES
        y = y[torch.randperm(n, generator=g)]
        means = 2.0 * torch.randn(N_CLASSES, DIM, generator=g) + 0.5 * side
        mix = torch.randn(N_CLASSES, DIM, DIM, generator=g) / DIM ** 0.5
        z = torch.randn(n, DIM, generator=g)
        x = means[y] + (mix[y] @ z.unsqueeze(2)).squeeze(2)
        out += [x.float().contiguous(), y]
    return out


def ours(x1, y1, x2, y2, inner):
    return float(otdd(x1, y1, x2, y2, inner=inner))


def load_reference(path: str | None):
    if path:
        sys.path.insert(0, path)
    try:
        logging.disable(logging.WARNING)
        import geomloss
        from otdd.pytorch.distance import DatasetDistance  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure means "no reference here"
        print(f"reference (microsoft/otdd) not importable, skipped: {exc!r}")
        return None
    from torch.utils.data import TensorDataset

    def reference(x1, y1, x2, y2, inner):
        method = {"exact": "exact", "gaussian": "gaussian_approx"}[inner]
        dist = DatasetDistance(TensorDataset(x1, y1), TensorDataset(x2, y2),
                               inner_ot_method=method, device="cpu", verbose=0)
        return float(dist.distance(maxsamples=10000))

    reference.version = f"microsoft/otdd under geomloss {geomloss.__version__}"
    return reference


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_child(which: str, n: int, inner: str, threads: int, reference_path: str | None):
    """Run one call in this fresh process and print the peak resident memory it added."""
    torch.set_num_threads(threads)
    fn = ours if which == "ours" else load_reference(reference_path)
    fn(*make_data(60), inner)  # warm-up: lazy imports, compiled kernels, allocator pools
    data = make_data(n)
    before = _rss_mib()
    fn(*data, inner)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print(json.dumps({"peak_mib": peak - before}))


def peak_memory(which: str, n: int, inner: str, threads: int,
                reference_path: str | None) -> float | None:
    """Peak resident memory (MiB) added by one call, measured in a fresh Python process.

    A fresh process (not ``fork``): forking after torch's OpenMP thread pool has started can
    deadlock the child.
    """
    if platform.system() != "Linux":
        return None
    cmd = [sys.executable, __file__, "--memory-child", which, "--sizes", str(n),
           "--inner", inner, "--threads", str(threads)]
    if reference_path:
        cmd += ["--reference-path", reference_path]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    return round(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"], 1)


def interleaved_times(fns, args, repeats: int) -> list[tuple[float, float]]:
    """Minimum time and value of each function, the functions alternating within each repeat
    (so that a change in machine load affects all of them alike)."""
    times = [[] for _ in fns]
    values = [None] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            values[k] = fn(*args)
            times[k].append(time.perf_counter() - t0)
    return [(min(t), v) for t, v in zip(times, values)]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 5000])
    ap.add_argument("--inner", nargs="+", default=["exact", "gaussian"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference-path", default=None, help="a microsoft/otdd checkout")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks/results/otdd.json"))
    ap.add_argument("--memory-child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child, args.sizes[0], args.inner[0], args.threads,
                      args.reference_path)
        return {}
    torch.set_num_threads(args.threads)
    reference = load_reference(args.reference_path)
    rows = []
    for n in args.sizes:
        data = make_data(n)
        for inner in args.inner:
            row = {"n": n, "classes": N_CLASSES, "dim": DIM, "inner": inner}
            ours(*data, inner)  # warm-up (allocator, lazy imports)
            fns = [ours] if reference is None else [ours, reference]
            timed = interleaved_times(fns, (*data, inner), args.repeats)
            row["ours_time_s"], row["ours_value"] = timed[0]
            if reference is not None:
                row["ref_time_s"], row["ref_value"] = timed[1]
                row["speedup"] = round(row["ref_time_s"] / row["ours_time_s"], 2)
                row["rel_diff"] = abs(row["ours_value"] / row["ref_value"] - 1.0)
            if not args.no_memory:
                mem = (n, inner, args.threads, args.reference_path)
                row["ours_peak_mib"] = peak_memory("ours", *mem)
                if reference is not None:
                    row["ref_peak_mib"] = peak_memory("reference", *mem)
            for key in ("ours_time_s", "ref_time_s"):
                if key in row:
                    row[key] = round(row[key], 4)
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "benchmark": "otdd, default arguments (debiased, entreg=0.1, p=2, scaling=0.5)",
        "data": f"n points per side, {N_CLASSES} balanced classes, {DIM}-D, float32, CPU",
        "threads": args.threads,
        "repeats": args.repeats,
        "timing": "minimum over repeats; ours and reference alternate within each repeat, one process",
        "memory": "peak RSS added by one call, in a fresh process (MiB)",
        "reference": getattr(reference, "version", None),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
        "rows": rows,
    }
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
