"""What an output folder holds, and whether ``--resume`` may continue it.

A run is identified by its *configuration fingerprint*: task, method, the method's options,
seed, the training settings, body, profile and the split sizes, flattened to dotted keys
(``method.align_epochs``, ``train.lr``). The fingerprint is saved in every checkpoint and
can be read back from ``results.json``. ``--resume`` continues a folder only when the saved
fingerprint equals the requested one, and otherwise names every key that differs, before
any model is built. Settings that do not change the numbers a run computes
(:data:`NON_RESULT_TRAIN_KEYS`: progress bars, keeping the checkpoint, the device, the
thread count and experiment tracking) are left out, so a run may be resumed on another machine.

:func:`plan_run` decides, with the folder's lock held, between a fresh run, a resumed one
and a run that is already finished (``results.json`` complete: nothing to do).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from crossmodal.errors import InvalidInputError
from crossmodal.reporting import _default

#: Training settings that do not change a run's numbers (beyond the last digits for
#: ``num_threads``): they may differ between the interrupted run and its resumption.
NON_RESULT_TRAIN_KEYS = frozenset({"progress", "keep_checkpoint", "device", "num_threads",
                                   "log_with"})

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"

Plan = Literal["fresh", "resume", "finished"]


def _jsonable(obj: Any) -> Any:
    """The value as JSON would give it back (tuples -> lists, numpy scalars -> numbers)."""
    return json.loads(json.dumps(obj, default=_default))


def run_fingerprint(*, task: str, method: str, method_config: dict, seed: int,
                    train_config: dict, body: str, profile: str, n_train: int,
                    n_test: int) -> dict[str, Any]:
    """The flat configuration fingerprint of a run (see the module docstring)."""
    fp: dict[str, Any] = {"task": task, "method": method, "seed": seed, "body": body,
                          "profile": profile, "n_train": int(n_train), "n_test": int(n_test)}
    fp.update({f"method.{k}": v for k, v in method_config.items()})
    fp.update({f"train.{k}": v for k, v in train_config.items()
               if k not in NON_RESULT_TRAIN_KEYS and k != "seed"})  # seed: listed above
    return _jsonable(fp)


def fingerprint_of_results(results: dict) -> dict[str, Any]:
    """The fingerprint recorded by a ``results.json`` written by :func:`crossmodal.runner.run`."""
    config = results.get("config", {})
    return run_fingerprint(
        task=results.get("task"), method=results.get("method"),
        method_config=config.get("method", {}), seed=results.get("seed"),
        train_config=config.get("train", {}), body=results.get("body"),
        profile=results.get("profile"), n_train=results.get("n_train", -1),
        n_test=results.get("n_test", -1))


def fingerprint_of_checkpoint(ckpt: dict) -> dict[str, Any]:
    """The fingerprint saved in a checkpoint; older checkpoints have only the train settings."""
    if "run_config" in ckpt:
        return _jsonable(ckpt["run_config"])
    return _jsonable({f"train.{k}": v for k, v in ckpt.get("config", {}).items()
                      if k not in NON_RESULT_TRAIN_KEYS and k != "seed"}
                     | ({"seed": ckpt["config"]["seed"]} if "seed" in ckpt.get("config", {})
                        else {}))


def config_differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``"key: saved -> wanted"`` for every key of ``saved`` whose value differs in ``wanted``.

    Keys missing from ``saved`` (a setting added to the kit after it was written) are not
    compared; a key missing from ``wanted`` counts as a difference.
    """
    wanted = _jsonable(wanted)
    saved = _jsonable(saved)  # tuples (e.g. train.betas) compare equal to their JSON lists
    out = []
    for key in sorted(saved):
        new = wanted.get(key, "<absent>")
        if saved[key] != new:
            out.append(f"{key}: {saved[key]!r} -> {new!r}")
    return out


def mismatch_error(what: Path, diffs: list[str]) -> InvalidInputError:
    shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
    return InvalidInputError(
        f"cannot resume {what}: it was written with a different configuration "
        f"({len(diffs)} setting(s) differ, saved -> requested: {shown}). Resume with the "
        "saved settings, or start a new run (another --out, or without --resume)"
    )


def load_checkpoint(path: str | Path, *, mmap: bool = False) -> dict:
    """A checkpoint written by :func:`crossmodal.training.fit` (memory-mapped if asked)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        if mmap:  # an old-format file cannot be memory-mapped: read it whole
            try:
                return torch.load(path, map_location="cpu", weights_only=False)
            except (RuntimeError, OSError, EOFError, ValueError):
                pass
        raise InvalidInputError(f"the checkpoint {path} cannot be read ({err}); it is "
                                "damaged: delete it and run again without --resume") from None


def read_results(out_dir: Path) -> dict | None:
    """``out_dir/results.json`` when it holds a complete run, else None."""
    path = out_dir / RESULTS
    if not path.exists():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) and results.get("status") == "complete" \
        else None


def plan_run(out_dir: Path | None, fingerprint: dict[str, Any], resume: bool
             ) -> tuple[Plan, dict | None]:
    """Decide what to do with ``out_dir`` (call it with the folder's lock held).

    Returns ``("finished", results)`` when ``resume`` is set and the folder holds the
    complete run of this configuration; ``("resume", saved)`` when it holds a checkpoint of
    it (``saved``: the checkpoint's training settings); ``("fresh", None)`` otherwise. A saved configuration that differs from
    ``fingerprint`` raises an :class:`InvalidInputError` listing the differing keys. For a
    fresh run, a stale ``results.json`` is removed at once, so the folder never shows an
    old result next to the new run's log and checkpoint.
    """
    if out_dir is None:
        return "fresh", None
    results = read_results(out_dir)
    if resume and results is not None:
        diffs = config_differences(fingerprint_of_results(results), fingerprint)
        if diffs:
            raise mismatch_error(out_dir / RESULTS, diffs)
        return "finished", results
    ckpt_path = out_dir / CHECKPOINT
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, mmap=True)
        diffs = config_differences(fingerprint_of_checkpoint(ckpt), fingerprint)
        saved = dict(ckpt.get("config", {}))
        del ckpt
        if diffs:
            raise mismatch_error(ckpt_path, diffs)
        return "resume", saved
    (out_dir / RESULTS).unlink(missing_ok=True)
    return "fresh", None
