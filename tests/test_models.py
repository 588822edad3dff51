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


def test_paper_bodies_fail_offline_with_instructions(monkeypatch):
    from crossmodal.bodies import BodyUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing cached here, and offline
    with pytest.raises(BodyUnavailableError, match="HF_HUB_OFFLINE.*minilm"):
        load_body("roberta-base")


# -- Hugging Face Hub: cache first, download when online, clear error offline ----------------
def test_hub_offline_follows_the_environment_and_the_network(monkeypatch):
    import socket

    from crossmodal import bodies

    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise OSError("no route")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert bodies.hub_offline() and not calls  # the variable wins, no connection tried
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert bodies.hub_offline() and calls  # no network

    class Conn:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Conn())
    assert not bodies.hub_offline()


def _fake_loader(calls):
    def load(local_files_only):
        calls.append(local_files_only)
        if local_files_only:
            raise OSError("not in the local cache")
        return "downloaded"

    return load


def test_from_hub_downloads_when_online_and_stops_offline(monkeypatch):
    from crossmodal import bodies

    calls = []
    monkeypatch.setattr(bodies, "hub_offline", lambda: False)
    assert bodies.from_hub(_fake_loader(calls), "roberta-base", "FacebookAI/roberta-base") \
        == "downloaded"
    assert calls == [True, False]  # the cache first, then the download

    calls.clear()
    monkeypatch.setattr(bodies, "hub_offline", lambda: True)
    with pytest.raises(bodies.BodyUnavailableError, match="cannot be reached.*--body minilm"):
        bodies.from_hub(_fake_loader(calls), "roberta-base", "FacebookAI/roberta-base")
    assert calls == [True]  # offline: never tries the network

    calls.clear()
    assert bodies.from_hub(lambda local: calls.append(local) or "cached", "x", "r") == "cached"
    assert calls == [True]  # cached: no network check at all


def test_a_failed_download_is_a_clear_error(monkeypatch):
    from crossmodal import bodies

    def load(local_files_only):
        raise OSError("not cached") if local_files_only else ConnectionError("reset by peer")

    monkeypatch.setattr(bodies, "hub_offline", lambda: False)
    with pytest.raises(bodies.BodyUnavailableError, match="downloading .* failed.*reset by peer"):
        bodies.from_hub(load, "swin-base", "timm/swin")


def test_roberta_loads_through_the_hub_path_when_online(monkeypatch):
    """``roberta-base`` asks transformers for the cache first, then downloads (mocked)."""
    import transformers

    from crossmodal import bodies

    seen = []
    random_body = bodies.load_roberta("roberta-base", pretrained=False, num_layers=1)
    # the random body's parts stand in for the downloaded ones
    fake_model = transformers.RobertaModel(transformers.RobertaConfig(
        **{**bodies.ROBERTA_ARCHITECTURES["base"], "num_hidden_layers": 1}),
        add_pooling_layer=False)

    def fake_from_pretrained(repo, local_files_only=False, **kwargs):
        seen.append((repo, local_files_only))
        if local_files_only:
            raise OSError("not cached")
        return fake_model

    monkeypatch.setattr(bodies, "hub_offline", lambda: False)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", fake_from_pretrained)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda repo, local_files_only=False, **kw:
                        random_body.source_embedder.tokenizer)
    body = bodies.load_roberta("roberta-base", pretrained=True)
    assert seen == [("FacebookAI/roberta-base", True), ("FacebookAI/roberta-base", False)]
    assert body.name == "roberta-base" and body.pretrained and body.hidden_size == 768


# -- the papers' bodies, offline with random weights --------------------------------------------
@pytest.mark.parametrize("name, width, heads, layers", [
    ("roberta-base-random", 768, 12, 12),
    ("roberta-base-10M-random", 768, 12, 12),
    ("roberta-med-small-1M-random", 512, 8, 6),
])
def test_random_roberta_twins_build_offline_with_the_real_architecture(name, width, heads,
                                                                       layers):
    from crossmodal.bodies import ROBERTA_ARCHITECTURES, ROBERTA_BODIES

    arch = ROBERTA_ARCHITECTURES[ROBERTA_BODIES[name.removesuffix("-random")][1]]
    assert (arch["hidden_size"], arch["num_attention_heads"], arch["num_hidden_layers"]) \
        == (width, heads, layers)
    body = load_body(name, num_layers=1)
    assert body.hidden_size == width and body.max_positions == 512
    assert body.position_offset == 2 and not body.pretrained
    assert len(body.blocks.layer) == 1
    assert body.blocks.layer[0].attention.self.num_attention_heads == heads
    feats = body.source_embedder.mean_features(["a proxy sentence"])
    assert feats.shape == (1, width)


def test_minibertas_are_registered_with_their_hub_names():
    from crossmodal.bodies import BODIES, ROBERTA_BODIES

    assert {ROBERTA_BODIES[n][0] for n in ROBERTA_BODIES if n != "roberta-base"} == {
        "nyu-mll/roberta-base-1B-1", "nyu-mll/roberta-base-100M-1",
        "nyu-mll/roberta-base-10M-1", "nyu-mll/roberta-med-small-1M-1"}
    for n in ROBERTA_BODIES:
        assert n in BODIES and f"{n}-random" in BODIES


def test_swin_random_keeps_its_stem_as_the_source_embedder():
    import torch.nn.functional as F

    body = load_body("swin-base-random", num_layers=1)
    src = body.source_embedder
    assert src.kind == "image" and (body.hidden_size, body.out_size) == (128, 1024)
    images = torch.rand(2, 3, 32, 32)
    tokens = src.embed_images(images)
    assert tokens.shape == (2, 3136, 128)
    up = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False)
    expected = src.embeddings.norm(
        F.conv2d(up, src.embeddings.proj.weight, src.embeddings.proj.bias, stride=4)
        .flatten(2).transpose(1, 2))
    torch.testing.assert_close(tokens, expected, rtol=1e-4, atol=1e-4)
    # grey images use the same stem, channels repeated
    torch.testing.assert_close(src.embed_images(images[:, :1]),
                               src.embed_images(images[:, :1].expand(-1, 3, -1, -1)))
    with pytest.raises(InvalidInputError, match="embeds images"):
        src.embed_texts(["text"])
    assert [len(s.blocks) for s in body.blocks] == [1, 1, 1, 1]


def test_dropout_override():
    default, none = load_body("minilm"), load_body("minilm", dropout=0.0)
    assert default.dropout == pytest.approx(0.1) and none.dropout == 0.0
    assert load_body("swin-base-random", num_layers=1).dropout == 0.0  # Swin's default
    x = torch.randn(2, 7, 384)
    none.train()
    torch.testing.assert_close(none(x), none(x))  # no dropout: train mode is deterministic
    default.train()
    assert not torch.allclose(default(x), default(x))
    with pytest.raises(InvalidInputError, match="dropout"):
        load_body("minilm", dropout=1.5)


# -- embedder initialisation, token counts, ORCA's heads -----------------------------------------
def test_source_init_copies_the_pretrained_layernorm_1d():
    body = load_body("minilm")
    src_ln = body.source_embedder.embeddings.LayerNorm
    model = build_model("smoke_gunpoint", body, embedder_init="source")
    torch.testing.assert_close(model.embedder.norm.weight, src_ln.weight)
    torch.testing.assert_close(model.embedder.norm.bias, src_ln.bias)
    assert model.embedder.norm.weight.data_ptr() != src_ln.weight.data_ptr()
    assert float(model.embedder.proj.bias.detach().abs().max()) == 0.0  # ORCA's conv_init
    rnd = build_model("smoke_gunpoint", "minilm", embedder_init="random")
    assert torch.equal(rnd.embedder.norm.weight, torch.ones(384))
    assert model.architecture["embedder_init"] == "source"
    with pytest.raises(UnknownNameError, match="source"):
        build_model("smoke_gunpoint", "minilm", embedder_init="pretrained")


@pytest.mark.parametrize("key, channels", [("CIFAR100", 3), ("Cosmic", 1), ("PSICOV", 57)])
def test_source_init_copies_swins_stem_tiled_over_channels(key, channels):
    body = load_body("swin-base-random", num_layers=1)
    stem = body.source_embedder.embeddings
    model = build_model(key, body, embedder_init="source")
    w = model.embedder.proj.weight
    assert w.shape == (128, channels, 4, 4)
    for c in range(channels):
        torch.testing.assert_close(w[:, c], stem.proj.weight[:, c % 3])
    torch.testing.assert_close(model.embedder.proj.bias, stem.proj.bias)
    torch.testing.assert_close(model.embedder.norm.weight, stem.norm.weight)
    if channels == 3:  # CIFAR-100's embedder starts as Swin's own stem
        x = torch.rand(1, 3, 32, 32)
        torch.testing.assert_close(model.embedder(x), body.source_embedder.embed_images(x))


def test_n_tokens_picks_orcas_patch_and_conflicts_are_explained():
    model = build_model("ECG", "minilm", n_tokens=64)
    assert (model.embedder.patch_size, model.embedder.num_tokens) == (20, 50)
    assert model.architecture["n_tokens"] == 50
    with pytest.raises(InvalidInputError, match="not both"):
        build_model("ECG", "minilm", n_tokens=64, patch_size=4)
    with pytest.raises(InvalidInputError, match="leave them unset"):
        build_model("CIFAR100", load_body("swin-base-random", num_layers=1), patch_size=8)


def test_orca_heads():
    from crossmodal.heads import PixelShuffleHead2D, PooledDenseHead1D

    tokens = torch.randn(2, 8, 12)
    head = PooledDenseHead1D(out_channels=1, out_len=24, num_tokens=8)
    assert not list(head.parameters())  # parameter-free
    out = head(tokens)
    # token n's 3 outputs are the means of its 3 blocks of 4 hidden features
    torch.testing.assert_close(out[:, 0].reshape(2, 8, 3), tokens.reshape(2, 8, 3, 4).mean(-1))
    grid = torch.randn(2, 49, 16)
    head2 = PixelShuffleHead2D(16, out_channels=1, out_hw=(85, 85), num_tokens=49, stride=32)
    assert head2(grid).shape == (2, 1, 85, 85)
    assert isinstance(head2.decoder[0], torch.nn.Conv2d) and head2.decoder[0].kernel_size == (1, 1)
    assert head2.decoder[0].out_channels == 3 * 32 * 32  # Swin's 3 image channels
    m = build_model("smoke_advection", "minilm")
    assert m.architecture["head"] == "linear"  # smoke tasks keep the kit's decoders
    m = build_model("Burgers1D", "minilm")
    assert isinstance(m.head, PooledDenseHead1D) and m.architecture["head"] == "orca"


def test_mismatched_body_and_proxy_or_task_are_explained():
    from crossmodal.proxies import load_proxy, source_features

    swin = load_body("swin-base-random", num_layers=1)
    with pytest.raises(InvalidInputError, match="text body.*1D"):
        build_model("ECG", swin)
    with pytest.raises(InvalidInputError, match="image proxy"):
        source_features(swin, load_proxy("pydoc_topics", max_samples=4))
    with pytest.raises(InvalidInputError, match="text proxy"):
        source_features(load_body("minilm"), load_proxy("digits", max_samples=4))
    feats = source_features(swin, load_proxy("digits", max_samples=3))
    assert feats.shape == (3, 128)  # Swin's stem tokens, mean-pooled (ORCA's proxy features)
