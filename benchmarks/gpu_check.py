"""One-command check of the GPU path (issue 13, item 5): at most ~5 minutes on one GPU.

What it does, on publisher-format fixtures (``crossmodal data fixtures``) written to a
temporary folder:

1. ORCA and PaRe on an ECG-format task (RoBERTa-base architecture, random weights) and a
   CIFAR100-format task (Swin-base architecture, random weights), in the ``paper`` profile,
   for a few hundred fine-tuning micro-batches (``--steps``, default 200, of ``--batch-size``
   8) after the method's stage 1;
2. for every run: samples/s of fine-tuning, peak GPU memory, and **the device every stage
   ran on**: forward pre-hooks on the embedder and the body record the device of their
   inputs, separately for the method's stage 1 (ORCA's alignment) and for fine-tuning; the
   check fails (exit 1) if any stage touched the CPU;
3. the OTDD (exact inner OT) between two labelled sets of n = 5000 points per side (10
   classes, 768-D like RoBERTa's features) on the GPU and on the CPU: seconds and values.

Everything is printed and written to ``benchmarks/results/gpu_check.json``.

Usage::

    python benchmarks/gpu_check.py                 # needs a CUDA GPU
    python benchmarks/gpu_check.py --steps 50      # quicker

Without a GPU it prints why and exits with status 3 without writing a result (so a CPU
machine never produces a "GPU check" file).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

NO_GPU_EXIT = 3
CASES = (("ECG", "roberta-base-random"), ("CIFAR100", "swin-base-random"))
METHODS = ("orca", "pare")


def gpu_available() -> tuple[bool, str]:
    """Whether a CUDA GPU can be used, and why not."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, ("no CUDA GPU is visible to torch (torch.cuda.is_available() is False; "
                       f"torch {torch.__version__}, CUDA build {torch.version.cuda})")
    return True, torch.cuda.get_device_name(0)


class DeviceLog:
    """Which devices the embedder and body saw, per stage (set ``stage`` before each)."""

    def __init__(self) -> None:
        self.stage = "build"
        self.seen: dict[str, set[str]] = {}

    def hook(self, part: str):
        def pre(_module, args):
            for a in args:
                if hasattr(a, "device"):
                    self.seen.setdefault(self.stage, set()).add(f"{part}:{a.device.type}")
                    break
        return pre

    def as_dict(self) -> dict[str, list[str]]:
        return {k: sorted(v) for k, v in self.seen.items()}


def run_case(task: str, body: str, method: str, root: pathlib.Path, steps: int,
             batch_size: int) -> dict[str, Any]:
    import torch

    import crossmodal.runner as runner
    from crossmodal.tasks import get_task

    log = DeviceLog()
    build, fit = runner.build_model, runner.fit

    def build_with_hooks(*args, **kwargs):
        model = build(*args, **kwargs)
        model.embedder.register_forward_pre_hook(log.hook("embedder"))
        model.body.register_forward_pre_hook(log.hook("body"))
        log.stage = "stage 1 (method pretrain)"
        return model

    timing: dict[str, float] = {}

    def timed_fit(*args, **kwargs):
        log.stage = "fine-tuning"
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fit(*args, **kwargs)
        torch.cuda.synchronize()
        timing["fit_seconds"] = time.perf_counter() - t0
        return out

    n_train = len(get_task(task).load(root)["train"][0])
    per_epoch = max(1, -(-n_train // batch_size))
    epochs = max(1, -(-steps // per_epoch))
    runner.build_model, runner.fit = build_with_hooks, timed_fit
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        result = runner.run(task, method, "paper", epochs=epochs, body=body, data_root=root,
                            batch_size=batch_size, progress=False,
                            train_options={"device": "auto"})
    finally:
        runner.build_model, runner.fit = build, fit
    samples = epochs * n_train
    devices = log.as_dict()
    stages_cpu = sorted(s for s, parts in devices.items() if s != "build"
                        and any(p.endswith(":cpu") for p in parts))
    return {
        "task": task, "body": body, "method": method, "epochs": epochs,
        "micro_batches": epochs * per_epoch, "batch_size": batch_size, "n_train": n_train,
        "wall_seconds": time.perf_counter() - t0, "fit_seconds": timing.get("fit_seconds"),
        "samples_per_second": samples / timing["fit_seconds"] if timing.get("fit_seconds") else None,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
        "devices": devices, "stages_on_cpu": stages_cpu,
        "final_metric": result["final_metric"], "result_device": result["device"],
    }


def otdd_gpu_vs_cpu(n: int = 5000, dim: int = 768, classes: int = 10) -> dict[str, Any]:
    import torch

    from crossmodal.distances import otdd

    g = torch.Generator().manual_seed(0)
    data = []
    for side in range(2):
        y = torch.arange(n) % classes
        x = torch.randn(n, dim, generator=g) + 0.3 * side + torch.randn(classes, dim, generator=g)[y]
        data += [x, y]
    out: dict[str, Any] = {"n_per_side": n, "dim": dim, "classes": classes}
    for dev in ("cuda", "cpu"):
        args = [t.to(dev) for t in data]
        if dev == "cuda":
            otdd(*[t[:500] for t in args])  # warm-up (kernels, allocator)
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        value = float(otdd(*args, device=dev))
        if dev == "cuda":
            torch.cuda.synchronize()
        out[dev] = {"seconds": time.perf_counter() - t0, "value": value}
    out["speedup"] = out["cpu"]["seconds"] / out["cuda"]["seconds"]
    out["rel_diff"] = abs(out["cuda"]["value"] / out["cpu"]["value"] - 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning micro-batches per run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--otdd-n", type=int, default=5000, help="OTDD points per side")
    parser.add_argument("--out", type=pathlib.Path,
                        default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    args = parser.parse_args(argv)

    ok, what = gpu_available()
    if not ok:
        print(f"gpu_check: no GPU here, nothing checked: {what}. Run this script on a machine "
              "with a CUDA GPU (it takes about 5 minutes); no result file was written.")
        return NO_GPU_EXIT
    import torch

    from crossmodal.data.fixtures import write_fixtures
    from crossmodal.reporting import package_versions, write_json_atomic

    print(f"gpu_check on {what}")
    report: dict[str, Any] = {"gpu": what, "torch": torch.__version__, "cuda": torch.version.cuda,
                              "python": platform.python_version(), "runs": []}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp) / "fixtures"
        write_fixtures(root, ["ECG", "CIFAR100", "CIFAR10", "CoNLL2003"])
        os.environ["CROSSMODAL_DATA"] = str(root)  # proxies are read from the data root
        for task, body in CASES:
            for method in METHODS:
                row = run_case(task, body, method, root, args.steps, args.batch_size)
                report["runs"].append(row)
                print(f"{task:9s} {method:5s} {body:20s} {row['samples_per_second']:8.1f} "
                      f"samples/s  peak {row['peak_gpu_mib']:8.0f} MiB  devices "
                      f"{row['devices']}")
    report["otdd"] = otdd_gpu_vs_cpu(args.otdd_n)
    o = report["otdd"]
    print(f"OTDD n={o['n_per_side']}/side: GPU {o['cuda']['seconds']:.2f} s, CPU "
          f"{o['cpu']['seconds']:.2f} s (x{o['speedup']:.1f}), values {o['cuda']['value']:.4g} "
          f"/ {o['cpu']['value']:.4g}")
    report["wall_seconds"] = time.perf_counter() - t_all
    report["all_stages_on_gpu"] = not any(r["stages_on_cpu"] for r in report["runs"])
    report["versions"] = package_versions()
    write_json_atomic(report, args.out)
    print(f"wrote {args.out} ({report['wall_seconds']:.0f} s)")
    if not report["all_stages_on_gpu"]:
        print("gpu_check: FAILED: some stages ran on the CPU: "
              + "; ".join(f"{r['task']}/{r['method']}: {r['stages_on_cpu']}"
                          for r in report["runs"] if r["stages_on_cpu"]))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
