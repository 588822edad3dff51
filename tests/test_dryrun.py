"""The paper path on publisher-format fixtures (issue 13).

* fast: ``crossmodal data fixtures`` writes every paper task and proxy in the real layout, the
  kit's loaders read all 18 tasks through the real code path with the registry's shapes, and
  ``crossmodal data verify`` says "fixture" (never "ok");
* slow: every paper task x method in the ``paper`` profile, on the fixtures, with random
  bodies of the real architectures, 2 micro-batches of 2 samples per stage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from crossmodal.data import fixtures
from crossmodal.data.cli import main as data_main
from crossmodal.tasks import get_task, list_tasks

PAPER_TASKS = [t.key for t in list_tasks() if t.benchmark in ("NAS-Bench-360", "PDEBench")]


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fixtures")
    assert data_main(["fixtures", "--dest", str(root)]) == 0
    return root


def test_every_paper_task_and_proxy_has_a_fixture():
    assert len(PAPER_TASKS) == 18
    assert set(PAPER_TASKS) == set(fixtures.PAPER_TASKS)
    assert set(fixtures.PROXIES) == {"CIFAR10", "CoNLL2003", "TinyImageNet", "Caltech101",
                                     "PascalVOC2012"}


@pytest.mark.parametrize("key", PAPER_TASKS)
def test_loader_reads_fixture_with_registry_shapes(fixture_root, key):
    spec = get_task(key)
    from crossmodal.data.presence import is_present

    assert is_present(get_task(key), fixture_root)
    splits = spec.load(fixture_root)  # validates shapes, dtypes, label ranges
    for name in ("train", "test"):
        x, y = splits[name]
        assert x.dtype == np.float32 and len(x) >= 2, (name, x.dtype, len(x))
        assert tuple(x.shape[1:]) == tuple(spec.input_shape)
        if spec.output == "classification":
            assert y.dtype == np.int64
        else:
            assert tuple(y.shape[1:]) == tuple(spec.output_shape)
    assert len(splits["train"][0]) >= 4  # two micro-batches of 2


def test_proxies_read_from_fixture(fixture_root):
    from crossmodal.data.proxies import CONLL_CLASSES, load_proxy_arrays

    cifar = load_proxy_arrays("cifar10", root=fixture_root)
    assert cifar.images.shape[1:] == (3, 32, 32) and cifar.images.dtype == np.float32
    assert 0 <= cifar.images.min() and cifar.images.max() <= 1
    text = load_proxy_arrays("conll2003", root=fixture_root)
    assert len(text) == 40 and set(text.labels) == set(range(len(CONLL_CLASSES)))


def test_layouts_of_image_proxies(fixture_root):
    from PIL import Image

    voc = fixture_root / "proxies/pascal_voc2012/VOCdevkit/VOC2012"
    ids = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    mask = Image.open(voc / "SegmentationClass" / f"{ids[0]}.png")
    assert mask.mode == "P" and set(np.unique(np.asarray(mask))) <= {0, *range(1, 21), 255}
    tiny = fixture_root / "proxies/tiny_imagenet/tiny-imagenet-200"
    wnid = (tiny / "wnids.txt").read_text().split()[0]
    img = Image.open(next((tiny / "train" / wnid / "images").iterdir()))
    assert img.size == (64, 64) and img.mode == "RGB"
    assert (fixture_root / "proxies/caltech101/caltech-101/101_ObjectCategories.tar.gz").exists()


def test_verify_says_fixture_and_download_refuses(fixture_root, capsys):
    assert data_main(["verify", "--data-root", str(fixture_root)]) == 0
    out = capsys.readouterr().out
    assert "FIXTURE root" in out and "ECG: fixture" in out and " ok " not in out
    assert not (fixture_root / ".checksums.json").exists()  # nothing recorded as real
    assert data_main(["download", "ECG", "--dest", str(fixture_root)]) == 2
    assert "fixture root" in capsys.readouterr().err


def test_fixtures_refuse_a_root_with_other_files(tmp_path):
    (tmp_path / "real.bin").write_bytes(b"x")
    assert data_main(["fixtures", "--dest", str(tmp_path), "ECG"]) == 2
    assert not (tmp_path / fixtures.MARKER).exists()


def test_prepare_raw_formats_without_the_marker(tmp_path):
    """FSD50K/PSICOV/Cosmic: the raw->arrays step depends on the files, not on the marker."""
    from crossmodal.data import nb360_prepare

    fixtures.write_fixtures(tmp_path, ["PSICOV", "Cosmic"])
    (tmp_path / fixtures.MARKER).unlink()
    for key, shape in (("PSICOV", (57, 128, 128)), ("Cosmic", (1, 128, 128))):
        folder = nb360_prepare.prepare(key, tmp_path)
        assert np.load(folder / "train_x.npy").shape[1:] == shape
        assert np.load(folder / "test_y.npy").shape[1:] == (1, 128, 128)
    # PSICOV's targets as ORCA's loader makes them: padding 100 A, training distances <= 16 A
    folder = nb360_prepare.prepared_dir("PSICOV", tmp_path)
    train_y, test_y = np.load(folder / "train_y.npy"), np.load(folder / "test_y.npy")
    assert train_y.max() <= 16.0 and (train_y[:, 0, 0, :] == 16.0).all()
    assert (test_y[:, 0, 0, :] == 100.0).all() and test_y.max() == 100.0


# --------------------------------------------------------------------------- dry-run switches


def test_batch_budget_counts_micro_batches_across_loops():
    from crossmodal.training import BatchBudget

    budget, seen = BatchBudget(3), []
    for epoch in budget.loop(range(10)):
        for b in budget.each(range(2)):
            seen.append((epoch, b))
    assert seen == [(0, 0), (0, 1), (1, 0)]
    free = BatchBudget(None)
    assert sum(1 for e in free.loop(range(3)) for _ in free.each(range(4))) == 12


def test_fit_stops_each_epoch_and_evaluation_after_limit():
    import torch

    from crossmodal.models import build_model
    from crossmodal.training import TrainConfig, fit, task_loss_fn

    spec = get_task("smoke_digits")
    rng = np.random.default_rng(0)
    x = rng.random((40, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_outputs, 40).astype(np.int64)
    model = build_model(spec, "minilm-random")
    calls, evals = [], []
    base = task_loss_fn(spec)

    def counting(model, batch, state):
        calls.append((state.epoch, len(batch[0])))
        return base(model, batch, state)

    head_forward = model.head.forward
    model.head.forward = lambda h: (evals.append(len(h)) if not model.training else None,
                                    head_forward(h))[1]
    cfg = TrainConfig(epochs=2, batch_size=4, eval_batch_size=3, grad_accum=8, lr=1e-4,
                      limit_batches=2, progress=False)
    hist = fit(model, spec, {"train": (x, y), "test": (x, y)}, cfg, loss_fn=counting)
    assert calls == [(0, 4), (0, 4), (1, 4), (1, 4)]
    assert evals == [3, 3, 3, 3]  # two eval batches per epoch
    assert all(np.isfinite(h["test_metric"]) for h in hist)
    assert torch.isfinite(torch.tensor(hist[-1]["lr"]))


def test_runner_records_dry_run_and_overrides(tmp_path):
    from crossmodal.runner import run

    spec = get_task("smoke_digits")
    rng = np.random.default_rng(0)
    x = rng.random((12, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_outputs, 12).astype(np.int64)
    r = run(spec, "nft", "smoke", epochs=1, body="minilm-random", out=tmp_path / "r",
            splits={"train": (x, y), "test": (x, y)}, limit_batches=1, batch_size=2,
            progress=False)
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    for res in (r, saved):
        assert res["dry_run"] is True and res["limit_batches"] == 1 and res["batch_size"] == 2
        assert res["config"]["train"]["batch_size"] == 2
        assert res["config"]["train"]["limit_batches"] == 1
    plain = run(spec, "nft", "smoke", epochs=1, body="minilm-random",
                splits={"train": (x, y), "test": (x, y)}, progress=False)
    assert plain["dry_run"] is False and plain["limit_batches"] is None
    with pytest.raises(Exception, match="positive integer"):
        run(spec, "nft", "smoke", epochs=1, splits={"train": (x, y), "test": (x, y)},
            limit_batches=0, progress=False)


def test_reports_of_dry_runs_are_never_compared_with_a_paper():
    import pandas as pd

    from crossmodal.notebook import DRY_RUN_STATUS, compare_with_paper

    runs = pd.DataFrame([{"task": "ECG", "variant": "orca", "method": "orca",
                          "metric": "1-F1", "lower_is_better": True, "final": 0.5, "seed": 0,
                          "dry_run": dry} for dry in (True,)])
    table = compare_with_paper(runs, profile="paper")
    assert table["paper"].isna().all() and (table["status"] == DRY_RUN_STATUS).all()
    real = compare_with_paper(runs.assign(dry_run=False), profile="paper")
    assert real["paper"].notna().all() and (real["status"] == "compared").all()


def test_gpu_check_exits_cleanly_without_a_gpu(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(Path(__file__).resolve()
                                                                      .parents[1] / "lib")}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks"
                                               / "gpu_check.py"), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "no GPU here" in proc.stdout and "Traceback" not in proc.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- task x method

DRY_METHODS = ("nft", "fpt", "scratch", "orca", "pare", "mona", "recraft", "gap_adaptive_a",
               "gap_adaptive_b")
#: CI runs a representative subset: every task once and every method on a 1D (RoBERTa,
#: text proxy) and a 2D (Swin, image proxy) task, the methods cycling over the tasks so that
#: classification, multi-label and dense targets all meet the stage-1 methods; ``make
#: paper-dryrun`` (CROSSMODAL_DRYRUN=all) runs all 18 x 9 with the full-size bodies.
FULL = os.environ.get("CROSSMODAL_DRYRUN", "") == "all"
#: encoder layers (RoBERTa) / blocks per stage (Swin) of the random bodies; "full": all
LAYERS = os.environ.get("CROSSMODAL_DRYRUN_LAYERS", "1")


def _ci_cases() -> list[tuple[str, str]]:
    tasks_2d = [t for t in PAPER_TASKS if get_task(t).modality == "2D"]
    tasks_1d = [t for t in PAPER_TASKS if get_task(t).modality == "1D"]
    cases = [(t, DRY_METHODS[i % 9]) for i, t in enumerate(tasks_2d)]
    cases += [(t, DRY_METHODS[(i + 3) % 9]) for i, t in enumerate(tasks_1d)]  # from orca
    missing = [m for m in DRY_METHODS if (m not in {c[1] for c in cases if c[0] in tasks_1d})]
    return cases + [(tasks_1d[0], m) for m in missing]


DRY_CASES = ([(t, m) for t in PAPER_TASKS for m in DRY_METHODS] if FULL else _ci_cases())
RANDOM_BODY = {"1D": "roberta-base-random", "2D": "swin-base-random"}


@pytest.fixture(scope="module")
def small_bodies():
    """The real architectures with random weights, ``LAYERS`` layers (CI) or all (full)."""
    import inspect

    import crossmodal.bodies as bodies
    import crossmodal.models as models

    if LAYERS == "full" or "num_layers" not in inspect.signature(bodies.load_body).parameters:
        yield None
        return
    original = models.load_body

    def load(name, *args, **kwargs):
        kwargs.setdefault("num_layers", int(LAYERS))
        return original(name, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "load_body", load)
        yield int(LAYERS)


def _as_json(value):
    """``value`` as results.json stores it (tuples become lists)."""
    return json.loads(json.dumps(value))


#: TrainConfig fields the dry run sets on purpose (``epochs=1`` and the dry-run switches).
DRY_OVERRIDES = {"epochs": 1, "batch_size": 2, "limit_batches": 2, "progress": False}


def protocol_mismatches(saved: dict, task: str, method: str) -> list[str]:
    """Every setting of a saved ``results.json`` that differs from the protocol table.

    Compares ``config.train`` with the table's fine-tuning settings, ``config.method`` with
    its stage settings, ``config.model`` with its token count / patch / dropout / embedder
    initialisation (and that the model was built with them: ``applied``, ``n_tokens_built``)
    and ``config.protocol`` with the whole table entry. A case the table lacks raises
    (``crossmodal.protocol.resolve``: UnknownNameError), so it cannot pass by being absent.
    """
    from crossmodal.protocol import resolve

    proto = resolve(task, method, "paper")
    config = saved["config"]
    bad: list[str] = []
    for part, table in (("train", proto.train_kwargs()), ("method", proto.method_options())):
        run_part = config[part]
        for k, v in table.items():
            if part == "train" and k in DRY_OVERRIDES:
                expected = DRY_OVERRIDES[k]
            else:
                expected = _as_json(v)
            if k not in run_part:
                bad.append(f"{part}.{k}: not recorded (table {expected!r})")
            elif run_part[k] != expected:
                bad.append(f"{part}.{k}: run {run_part[k]!r} != table {expected!r}")
    model = config["model"]
    for k, s in proto.model.items():
        if model.get(k) != _as_json(s.value):
            bad.append(f"model.{k}: run {model.get(k)!r} != table {s.value!r}")
    want = {k for k, v in proto.model_kwargs().items() if v is not None}
    if "n_tokens" in want:
        want.discard("patch_size")  # build_model takes N; the patch follows (L / N)
    if not want <= set(model["applied"]):
        bad.append(f"model: table settings {sorted(want - set(model['applied']))} were not "
                   "passed to build_model")
    n = proto.model["n_tokens"].value
    if n is not None and model["n_tokens_built"] != n:
        bad.append(f"model.n_tokens_built: {model['n_tokens_built']} != table N {n}")
    if config.get("protocol") != _as_json(proto.to_json()):
        bad.append("config.protocol differs from crossmodal.protocol.resolve(...).to_json()")
    return bad


def test_dry_cases_are_all_in_the_protocol_table():
    """Every dry-run case has a table entry (the comparison below cannot be skipped)."""
    from crossmodal.methods import METHODS
    from crossmodal.protocol import paper_tasks, resolve

    assert set(PAPER_TASKS) == set(paper_tasks())
    assert set(DRY_METHODS) <= set(METHODS)
    for task, method in DRY_CASES:
        assert resolve(task, method, "paper").train_kwargs()["lr"] > 0


def test_protocol_mismatches_detects_a_changed_setting():
    """The comparison fails when a recorded value or the recorded table entry differs."""
    from crossmodal.protocol import resolve

    proto = resolve("ECG", "orca", "paper")
    train = {**_as_json(proto.train_kwargs()), **DRY_OVERRIDES}
    model = {k: _as_json(s.value) for k, s in proto.model.items()}
    model["applied"] = sorted(k for k, v in proto.model_kwargs().items()
                              if v is not None and k != "patch_size")
    model["n_tokens_built"] = proto.model["n_tokens"].value
    saved = {"config": {"train": train, "method": _as_json(proto.method_options()),
                        "model": model, "protocol": _as_json(proto.to_json())}}
    assert protocol_mismatches(saved, "ECG", "orca") == []
    for part, key, value in (("train", "grad_accum", 1), ("train", "betas", [0.9, 0.999]),
                             ("method", "align_epochs", 10), ("model", "n_tokens", 250),
                             ("model", "n_tokens_built", 250)):
        changed = json.loads(json.dumps(saved))
        changed["config"][part][key] = value
        assert any(m.startswith(f"{part}.{key}") for m in
                   protocol_mismatches(changed, "ECG", "orca")), (part, key)
    changed = json.loads(json.dumps(saved))
    changed["config"]["protocol"]["train"]["lr"]["value"] = 1.0
    assert protocol_mismatches(changed, "ECG", "orca") == [
        "config.protocol differs from crossmodal.protocol.resolve(...).to_json()"]
    with pytest.raises(Exception, match="paper task"):
        protocol_mismatches(saved, "smoke_digits", "orca")


@pytest.mark.slow
@pytest.mark.parametrize("task,method", DRY_CASES, ids=[f"{t}-{m}" for t, m in DRY_CASES])
def test_paper_dry_run(fixture_root, small_bodies, monkeypatch, task, method, tmp_path):
    import math

    from crossmodal.runner import run

    monkeypatch.setenv("CROSSMODAL_DATA", str(fixture_root))  # proxies come from the root
    spec = get_task(task)
    shapes = []

    def probe(model, m, task_spec, splits, record):  # after stage 1 and after the epoch
        import torch

        x = torch.as_tensor(splits["test"][0][:2])
        model.eval()
        with torch.no_grad():
            shapes.append(tuple(model(x.to(next(model.parameters()).device)).shape))
        expected = (2, spec.num_outputs) if spec.output != "dense" else (2, *spec.output_shape)
        return {"shape_ok": shapes[-1] == expected}

    result = run(task, method, "paper", epochs=1, body=RANDOM_BODY[spec.modality],
                 data_root=fixture_root, limit_batches=2, batch_size=2, progress=False,
                 out=tmp_path / "run", probe=probe)
    assert [p["shape_ok"] for p in result["probes"]] == [True, True], shapes
    assert result["status"] == "complete" and result["dry_run"] and result["data"] == "fixture"
    assert result["profile"] == "paper" and result["config"]["train"]["batch_size"] == 2
    assert math.isfinite(result["final_metric"]), result["final_metric"]
    assert len(result["epochs"]) == 1 and math.isfinite(result["epochs"][0]["train_loss"])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["limit_batches"] == 2 and saved["batch_size"] == 2
    assert protocol_mismatches(saved, task, method) == []
