"""The papers' architectures, offline: RoBERTa-base (from its configuration) and Swin-base
(timm, ``pretrained=False``) with random weights and fewer layers (the same widths, heads,
positions and stems; fewer blocks keep CI fast).

1. Every one of the 18 paper tasks gets ORCA's token count (shapes only, no data).
2. ORCA, PaRe, MoNA, RECRAFT and gap-adaptive A/B build and take training steps on a 2D task
   with an image proxy (Swin's pretrained-stem path) and on a 1D task with a text proxy.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from crossmodal.embedders import orca_patch_size
from crossmodal.methods import RunContext, get_method
from crossmodal.models import build_model
from crossmodal.tasks import get_task, list_tasks
from crossmodal.training import TrainConfig, fit

ROBERTA, SWIN = "roberta-base-random", "swin-base-random"

#: ORCA's 1D tasks: (input sample shape in ORCA's ``task_configs.get_config``,
#: ``target_seq_len`` of ``src/configs/<task>.yaml`` (512 where unset, get_config's default),
#: the resulting token count of ``Embeddings1D``). Facts read from sjunhongshen/ORCA@19b8c1c.
ORCA_1D = {
    "ECG": ((1, 1000), 64, 50),  # ecg.yaml target_seq_len 64
    "Satellite": ((1, 46), 512, 46),  # satellite.yaml: unset
    "DeepSEA": ((4, 1000), 512, 500),  # deepsea.yaml 512
    "Advection1D": ((1, 256), 512, 256),  # PDEADV.yaml 512, sample (1, 1, 256)
    "Burgers1D": ((1, 256), 128, 128),  # PDEBG.yaml 128, sample (1, 1, 256)
    "DiffusionReaction1D": ((1, 1024), 256, 256),  # PDERD.yaml 256
    "DiffusionSorption1D": ((1, 1024), 32, 32),  # PDEDS.yaml 32
    "NavierStokes1D": ((1, 3072), 128, 128),  # PDE1DCFD.yaml 128, sample (1, 1, 3072)
}
#: ORCA's 2D embedder: resize to 224, 4 x 4 patches (Swin-base's stem geometry).
ORCA_2D_TOKENS = (224 // 4) ** 2

PAPER_TASKS = [t.key for t in list_tasks() if t.benchmark != "smoke"]


def test_the_registry_has_the_18_paper_tasks():
    assert len(PAPER_TASKS) == 18
    assert {k for k in PAPER_TASKS if get_task(k).modality == "1D"} == set(ORCA_1D)


@pytest.mark.parametrize("length, target, n", [(v[0][-1], v[1], v[2]) for v in ORCA_1D.values()])
def test_orca_patch_rule(length, target, n):
    p = orca_patch_size(length, target)
    assert length % p == 0 and length // p == n


def _orca_spec(key: str):
    """The registry task with ORCA's sample shape (the kit's shape where ORCA's is 2D)."""
    spec = get_task(key)
    if key not in ORCA_1D:
        return spec
    shape = ORCA_1D[key][0]
    if tuple(spec.input_shape) == shape:
        return spec
    out = (shape[0], shape[-1]) if spec.output == "dense" else spec.output_shape
    return dataclasses.replace(spec, input_shape=shape, output_shape=out,
                               num_outputs=shape[0] if spec.output == "dense" else
                               spec.num_outputs)


@pytest.mark.parametrize("key", PAPER_TASKS)
def test_each_paper_task_gets_orcas_token_count(key):
    spec = _orca_spec(key)
    if spec.modality == "1D":
        model = build_model(spec, ROBERTA, n_tokens=ORCA_1D[key][1], num_layers=1,
                            embedder_init="source", dropout=0.0)
        expected = ORCA_1D[key][2]
    else:
        model = build_model(spec, SWIN, num_layers=1, embedder_init="source", dropout=0.0)
        expected = ORCA_2D_TOKENS
    assert model.embedder.num_tokens == expected == model.architecture["n_tokens"]
    with torch.no_grad():
        tokens = model.embedder(torch.zeros(1, *spec.input_shape))
        out = model(torch.zeros(1, *spec.input_shape))
    assert tokens.shape[1] == expected
    want = (1, spec.num_outputs) if spec.output != "dense" else (1, *spec.output_shape)
    assert tuple(out.shape) == want
    # the body is the real architecture: RoBERTa-base's width and positions, Swin-base's
    # 128-wide stem and 1024-wide 7 x 7 output
    if spec.modality == "1D":
        assert model.body.hidden_size == 768 and model.body.max_positions == 512
    else:
        assert (model.body.hidden_size, model.body.out_size) == (128, 1024)
        assert model.architecture["body_tokens_out"] == 49


@pytest.mark.parametrize("key", [k for k in ORCA_1D if tuple(get_task(k).input_shape)
                                 == ORCA_1D[k][0]])
def test_registry_tasks_with_orcas_input_shape_get_orcas_tokens(key):
    model = build_model(key, ROBERTA, n_tokens=ORCA_1D[key][1], num_layers=1)
    assert model.embedder.num_tokens == ORCA_1D[key][2]


# -- one training step per method -------------------------------------------------------------
#: Each method at its smallest: tiny proxies and stage budgets (the code paths, not results).
TINY = {
    "orca": dict(align_epochs=1, proxy_samples=12, align_samples_per_class=3, eval_samples=4),
    "pare": dict(k0=6, proxy_samples=6),
    "mona": dict(meta_steps=1, meta_batch_size=2, source_batch_size=2, proxy_samples=6,
                 discrepancy_trials=0),
    "recraft": dict(recal_epochs=2, fa_epochs=1, fld_epochs=1, stage1_batch_size=2,
                    stage1_samples=4, proxy_samples=10),
    "gap_adaptive_a": dict(embedder_epochs=1, embedder_batch_size=2, gap_samples=4,
                           proxy_samples=6),
    "gap_adaptive_b": dict(k0=6, proxy_samples=6, noise_steps=1, contrastive_epochs=1,
                           contrastive_batch_size=4),
}


def _tiny_splits(spec, n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *spec.input_shape)).astype(np.float32)
    y = np.arange(n) % 2 if spec.output == "classification" else \
        rng.standard_normal((n, *spec.output_shape)).astype(np.float32)
    return {"train": (x, y), "test": (x[:2], y[:2])}


def _one_epoch(method: str, spec, body: str, *, n_tokens=None):
    """The runner's sequence (prepare, before_finetune, freeze, fit) on a tiny in-memory split."""
    model = build_model(spec, body, num_layers=1, n_tokens=n_tokens, embedder_init="source",
                        dropout=0.0)
    m = get_method(method, **TINY[method])
    ctx = RunContext(profile="smoke", progress=False)  # smoke proxies: digits / pydoc_topics
    m.prepare(model, spec, ctx)
    report = m.before_finetune(model, spec, _tiny_splits(spec), ctx)
    trainable = {id(p) for p in m.trainable_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    cfg = TrainConfig(epochs=1, batch_size=2, eval_batch_size=2, device="cpu",
                      progress=False, num_threads=None)
    history = fit(model, spec, _tiny_splits(spec), cfg, loss_fn=m.loss_fn(spec), params=params)
    changed = sum(not torch.equal(a, b) for a, b in zip(params, before))
    return model, report, history, changed, len(params)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(TINY))
def test_every_method_trains_on_a_2d_task_with_an_image_proxy(method):
    spec = get_task("CIFAR100")
    model, report, history, changed, n_params = _one_epoch(method, spec, SWIN)
    assert model.body.source_embedder.kind == "image"
    assert report.get("proxy") == "digits"
    assert np.isfinite(history[-1]["train_loss"])
    assert changed == n_params > 0  # every trainable tensor moved in the steps
    if "n_patches" in report:  # PaRe / gap-B mix patches over Swin's 3136 tokens
        assert report["n_patches"] == ORCA_2D_TOKENS


@pytest.mark.slow
@pytest.mark.parametrize("method", list(TINY))
def test_every_method_trains_on_a_1d_task_with_a_text_proxy(method):
    spec = get_task("ECG")
    model, report, history, changed, n_params = _one_epoch(method, spec, ROBERTA,
                                                           n_tokens=ORCA_1D["ECG"][1])
    assert model.embedder.num_tokens == 50
    assert model.body.source_embedder.kind == "text"
    assert report.get("proxy") == "pydoc_topics"
    assert np.isfinite(history[-1]["train_loss"])
    assert changed == n_params > 0
    if "n_patches" in report:
        assert report["n_patches"] == 50


def test_the_paper_pretraining_ablation_has_the_minibertas_for_text_bodies_only():
    from crossmodal.bodies import BODIES
    from crossmodal.notebook.grid import _pretraining_amounts
    from crossmodal.studies.orca import orca_ablation_variants

    variants = orca_ablation_variants("pretraining", "paper")
    names = [v.name for v in variants]
    assert names[0] == "body 0% (random init)" and names[-1] == "body 100% (pretrained)"
    assert names[1:-1] == ["body 1M words", "body 10M words", "body 100M words",
                           "body 1B words"]
    text = [v.body.format(default="roberta-base", amounts=_pretraining_amounts("roberta-base"))
            for v in variants]
    assert text[1:-1] == ["roberta-med-small-1M", "roberta-base-10M", "roberta-base-100M",
                          "roberta-base-1B"] and all(b in BODIES for b in text)
    swin = [v.body.format(default="swin-base", amounts=_pretraining_amounts("swin-base"))
            for v in variants]
    assert swin[1:-1] == [""] * 4  # skipped for Swin tasks
    assert len(orca_ablation_variants("pretraining", "smoke")) == 2  # smoke unchanged
