"""Embedders, bodies and heads: shapes per task, offline pretrained weights, errors."""

from __future__ import annotations

import pytest
import torch

from crossmodal.bodies import load_body
from crossmodal.embedders import Embedder1D, Embedder2D
from crossmodal.errors import InvalidInputError, UnknownNameError
from crossmodal.heads import DenseHead1D, DenseHead2D, PooledLinearHead
from crossmodal.models import build_model
from crossmodal.tasks import get_task

SMOKE = ["smoke_digits", "smoke_gunpoint", "smoke_basicmotions", "smoke_advection"]


@pytest.mark.parametrize("key", SMOKE)
def test_model_output_has_the_shape_the_registry_promises(key):
    task = get_task(key)
    model = build_model(task, "minilm")
    x = torch.randn(3, *task.input_shape)
    out = model(x)
    expected = (3, task.num_outputs) if task.output != "dense" else (3, *task.output_shape)
    assert tuple(out.shape) == expected
    tokens = model.embedder(x)
    assert tokens.shape == (3, model.embedder.num_tokens, model.body.hidden_size)


@pytest.mark.parametrize("key", ["CIFAR100", "DarcyFlow", "Cosmic", "ECG", "DeepSEA",
                                 "Satellite", "NinaPro", "Burgers1D", "DarcyFlow2D"])
def test_paper_task_shapes_with_the_minilm_body(key):
    task = get_task(key)
    model = build_model(task, "minilm")
    out = model(torch.randn(1, *task.input_shape))
    expected = (1, task.num_outputs) if task.output != "dense" else (1, *task.output_shape)
    assert tuple(out.shape) == expected


def test_minilm_loads_offline_and_differs_from_random():
    pre, rnd = load_body("minilm"), load_body("minilm-random")
    assert pre.hidden_size == rnd.hidden_size == 384
    w_pre = dict(pre.named_parameters())
    w_rnd = dict(rnd.named_parameters())
    assert w_pre.keys() == w_rnd.keys()
    diffs = [(w_pre[k] - w_rnd[k]).abs().max().item() for k in w_pre if "weight" in k]
    assert min(diffs) > 1e-3
    # the pretrained body is not random: its first attention weights have a known scale
    q = w_pre["blocks.layer.0.attention.self.query.weight"]
    assert 0.01 < q.std().item() < 0.2


def test_load_body_returns_independent_copies():
    a, b = load_body("minilm"), load_body("minilm")
    p = next(a.parameters())
    with torch.no_grad():
        p.add_(1.0)
    assert not torch.equal(p, next(b.parameters()))


def test_pretrained_embedder_copies_position_embeddings():
    body = load_body("minilm")
    model = build_model("smoke_gunpoint", body)
    pe = model.embedder.position_embeddings.weight
    src = body._position_embeddings[0].weight
    assert torch.equal(pe, src) and pe.data_ptr() != src.data_ptr()


def test_source_embedder_embeds_text():
    body = load_body("minilm")
    feats = body.source_embedder.mean_features(["a sentence", "another longer sentence here"])
    assert feats.shape == (2, 384) and torch.isfinite(feats).all()


def test_embedders_and_heads_shapes():
    e1 = Embedder1D(3, 16, patch_size=4, seq_len=10)
    assert e1(torch.randn(2, 3, 10)).shape == (2, 3, 16)  # right-padded to 12
    e2 = Embedder2D(1, 16, patch_size=4, image_size=16)
    assert e2(torch.randn(2, 1, 9, 9)).shape == (2, 16, 16)  # resized to 16x16
    tokens = torch.randn(2, 16, 8)
    assert PooledLinearHead(8, 5)(tokens).shape == (2, 5)
    assert DenseHead1D(8, 2, out_len=30, num_tokens=16)(tokens).shape == (2, 2, 30)
    assert DenseHead2D(8, 3, out_hw=(9, 9), num_tokens=16)(tokens).shape == (2, 3, 9, 9)


def test_wrong_input_shape_gives_a_clear_error():
    model = build_model("smoke_digits", "minilm")
    with pytest.raises(InvalidInputError, match=r"expects inputs \(B, 1, 8, 8\)"):
        model(torch.randn(2, 3, 8, 8))


def test_too_many_tokens_for_the_body_is_explained():
    body = load_body("minilm")
    with pytest.raises(InvalidInputError, match="patch size"):
        build_model("ECG", body, patch_size=1)  # 1000 tokens > 512 positions


def test_unknown_body():
    with pytest.raises(UnknownNameError, match="minilm-random"):
        load_body("bert-large")


def test_paper_bodies_fail_offline_with_instructions():
    from crossmodal.bodies import BodyUnavailableError

    with pytest.raises(BodyUnavailableError, match="minilm"):
        load_body("roberta-base")
