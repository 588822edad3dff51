"""PaRe: k schedules, subset selection, patch replacement, mixing, variants, end-to-end runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from crossmodal.errors import InvalidInputError, UnknownNameError
from crossmodal.methods import RunContext, get_method
from crossmodal.methods.pare import (
    K_SCHEDULES,
    PaReConfig,
    PaReMixer,
    k_schedule,
    mix_weight,
    paper_k0,
    select_patches,
)
from crossmodal.methods.patching import (
    GateNetwork,
    align_source_tokens,
    cutmix_embeddings,
    mixup_embeddings,
    replace_patches,
    subset_mask,
)
from crossmodal.models import build_model
from crossmodal.runner import run
from crossmodal.tasks import get_task

GRADUAL = ("linear", "exponential", "piecewise")


# -- k schedules -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", GRADUAL)
@pytest.mark.parametrize("k0, k_final, total", [(10, 0, 4), (3000, 0, 60), (16, 3, 7), (5, 5, 3)])
def test_gradual_schedules_start_at_k0_end_at_k_final_and_never_increase(kind, k0, k_final,
                                                                          total):
    ks = [k_schedule(kind, k0, e, total, k_final=k_final) for e in range(total + 1)]
    assert all(isinstance(k, int) for k in ks)
    assert ks[0] == k0 and ks[-1] == k_final
    assert all(a >= b for a, b in zip(ks, ks[1:]))
    assert all(k_final <= k <= k0 for k in ks)


def test_linear_schedule_is_the_floor_of_k0_times_remaining_fraction():
    assert [k_schedule("linear", 10, e, 4) for e in range(5)] == [10, 7, 5, 2, 0]
    # Alg. 1: k = int(N - N * ep / total) with N = 3 (float error must not floor 1.0 to 0)
    assert [k_schedule("linear", 3, e, 3) for e in range(4)] == [3, 2, 1, 0]


def test_piecewise_schedule_is_a_four_step_staircase():
    assert [k_schedule("piecewise", 8, e, 8) for e in range(9)] == [8, 8, 6, 6, 4, 4, 2, 2, 0]


def test_exponential_schedule_decays_faster_than_linear():
    lin = [k_schedule("linear", 1000, e, 10) for e in range(1, 10)]
    exp = [k_schedule("exponential", 1000, e, 10) for e in range(1, 10)]
    assert all(x < y for x, y in zip(exp, lin))


@pytest.mark.parametrize("kind", K_SCHEDULES)
def test_every_schedule_is_capped_at_the_number_of_patches(kind):
    ks = [k_schedule(kind, 3000, e, 6, n_patches=16, rng=np.random.default_rng(e))
          for e in range(7)]
    assert max(ks) <= 16
    if kind != "non_gradual":
        assert ks[0] == 16


def test_non_gradual_is_random_in_range_and_reproducible_and_constant_is_k0():
    ks = [k_schedule("non_gradual", 20, e, 30, k_final=2, rng=np.random.default_rng([0, e]))
          for e in range(30)]
    assert all(2 <= k <= 20 for k in ks) and len(set(ks)) > 3
    again = [k_schedule("non_gradual", 20, e, 30, k_final=2, rng=np.random.default_rng([0, e]))
             for e in range(30)]
    assert ks == again
    assert k_schedule("non_gradual", 20, 4, 30) == k_schedule("non_gradual", 20, 4, 30)
    assert {k_schedule("constant", 7, e, 5) for e in range(6)} == {7}


def test_schedule_errors_say_what_is_wrong():
    with pytest.raises(UnknownNameError, match="linear"):
        k_schedule("cosine", 10, 0, 5)
    with pytest.raises(InvalidInputError, match="k_final"):
        k_schedule("linear", 3, 0, 5, k_final=4)
    with pytest.raises(InvalidInputError, match="epoch"):
        k_schedule("linear", 3, 6, 5)
    with pytest.raises(InvalidInputError, match="total_epochs"):
        k_schedule("linear", 3, 0, 0)


def test_paper_k0_is_3000_except_200_for_cosmic():
    assert paper_k0("Cosmic") == 200 and paper_k0("CIFAR100") == 3000
    assert paper_k0("smoke_gunpoint") == 3000 and PaReConfig().k0 is None


def test_lambda_is_k_over_n_or_k_over_k0():
    assert mix_weight(4, 16, 8, "k_over_N") == pytest.approx(0.25)
    assert mix_weight(4, 16, 8, "k_over_k0") == pytest.approx(0.5)
    # k0 >= N (e.g. the paper's 3000, capped): the two readings agree
    assert mix_weight(4, 16, 3000, "k_over_k0") == mix_weight(4, 16, 3000, "k_over_N")
    with pytest.raises(UnknownNameError):
        mix_weight(1, 4, 4, "k_over_B")


# -- selection and replacement --------------------------------------------------------------------
def test_subset_mask_picks_exactly_the_top_or_bottom_k_and_has_gradients():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7], [0.8, 0.2, 0.6, 0.4, 0.0]],
                          requires_grad=True)
    top = subset_mask(scores, 2, tau=0.5)
    assert top.detach().tolist() == [[0, 1, 0, 0, 1], [1, 0, 1, 0, 0]]
    bottom = subset_mask(scores, 2, tau=0.5, largest=False)
    assert bottom.detach().tolist() == [[1, 0, 0, 1, 0], [0, 1, 0, 0, 1]]
    (top * torch.arange(5.0)).sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    soft = subset_mask(scores.detach(), 3, tau=0.5, hard=False)
    assert torch.allclose(soft.sum(1), torch.full((2,), 3.0), atol=1e-5)
    assert subset_mask(scores.detach(), 0).abs().sum() == 0
    with pytest.raises(InvalidInputError, match="between 0 and N"):
        subset_mask(scores, 6)


@pytest.mark.parametrize("k", [0, 1, 3, 8])
def test_patch_replacement_keeps_n_minus_k_target_and_inserts_exactly_k_source_patches(k):
    torch.manual_seed(1)
    b, n, d = 3, 8, 5
    x_t, x_s = torch.randn(b, n, d), torch.randn(b, n, d) + 100.0  # source rows are recognisable
    st, ss = torch.rand(b, n), torch.rand(b, n)
    replace, take = select_patches(st, ss, k, tau=0.9, gumbel_scale=0.0)
    mixed, tgt, src = replace_patches(x_t, x_s, replace, take, k)
    for i in range(b):
        bottom = set(torch.topk(st[i], k, largest=False).indices.tolist()) if k else set()
        top = sorted(torch.topk(ss[i], k).indices.tolist()) if k else []
        assert set(tgt[i].tolist()) == bottom and src[i].tolist() == top
        for pos in range(n):
            if pos in bottom:
                assert mixed[i, pos, 0] > 50  # a source patch
            else:
                assert torch.equal(mixed[i, pos], x_t[i, pos])  # target patch untouched
        # the inserted rows are the top-k source rows, in position order ("one by one")
        assert torch.allclose(mixed[i, sorted(bottom)], x_s[i, top])


def test_gradients_reach_the_gate_through_the_straight_through_masks():
    torch.manual_seed(0)
    gate = GateNetwork(6, "fc")
    x_t, x_s = torch.randn(2, 10, 6), torch.randn(2, 10, 6)
    replace, take = select_patches(gate(x_t), gate(x_s), 4, tau=0.9, gumbel_scale=1.0)
    mixed, _, _ = replace_patches(x_t, x_s, replace, take, 4)
    (mixed * torch.randn_like(mixed)).sum().backward()
    assert gate.net.weight.grad is not None and gate.net.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["fc", "mlp", "mlp_dropout", "attention"])
def test_gate_kinds_score_every_patch_in_zero_one(kind):
    gate = GateNetwork(12, kind, hidden=8)
    s = gate(torch.randn(3, 7, 12))
    assert s.shape == (3, 7) and bool(((s > 0) & (s < 1)).all())
    has_dropout = any(isinstance(m, torch.nn.Dropout) for m in gate.modules())
    assert has_dropout == (kind == "mlp_dropout")
    # only the attention scorer looks at the context: change patch 0, watch patch 1's score
    x = torch.randn(1, 7, 12)
    y = x.clone()
    y[0, 0] += 3.0
    gate.eval()
    moved = not torch.allclose(gate(x)[0, 1], gate(y)[0, 1])
    assert moved == (kind == "attention")
    with pytest.raises(UnknownNameError):
        GateNetwork(12, "transformer")


def test_mixup_shapes_and_ratio():
    x_t, x_s = torch.zeros(2, 4, 3), torch.ones(2, 4, 3)
    out = mixup_embeddings(x_t, x_s, 0.25)
    assert out.shape == (2, 4, 3) and torch.allclose(out, torch.full_like(out, 0.25))
    with pytest.raises(InvalidInputError, match="lam"):
        mixup_embeddings(x_t, x_s, 1.5)


def test_cutmix_copies_one_contiguous_block_1d_and_a_square_2d():
    x_t, x_s = torch.zeros(2, 10, 3), torch.ones(2, 10, 3)
    out, lam, box = cutmix_embeddings(x_t, x_s, 4, generator=torch.Generator().manual_seed(0))
    pos = torch.nonzero(box).flatten().tolist()
    assert len(pos) == 4 and pos == list(range(pos[0], pos[0] + 4)) and lam == pytest.approx(0.4)
    assert torch.equal(out[:, box], torch.ones(2, 4, 3)) and torch.equal(out[:, ~box],
                                                                         torch.zeros(2, 6, 3))
    out, lam, box = cutmix_embeddings(torch.zeros(1, 16, 2), torch.ones(1, 16, 2), 5, grid=4)
    grid = box.view(4, 4)
    rows, cols = torch.nonzero(grid.any(1)).flatten(), torch.nonzero(grid.any(0)).flatten()
    assert int(box.sum()) == 4 and len(rows) == 2 and len(cols) == 2  # round(sqrt 5)^2 = 4
    assert lam == pytest.approx(4 / 16)
    out, lam, _ = cutmix_embeddings(x_t, x_s, 0)
    assert lam == 0 and torch.equal(out, x_t)


def test_source_tokens_are_aligned_to_the_target_length():
    toks = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    tiled, valid = align_source_tokens(toks, mask, 7, "tile")
    assert tiled[0, :, 0].tolist() == [0, 1, 2, 0, 1, 2, 0] and bool(valid.all())
    assert tiled[1, :, 0].tolist() == [5, 6, 7, 8, 9, 5, 6]
    res, _ = align_source_tokens(toks, mask, 5, "resample")
    assert res[0, :, 0].tolist() == pytest.approx([0, 0.5, 1, 1.5, 2])
    trunc, valid = align_source_tokens(toks, mask, 7, "truncate")
    assert trunc.shape == (2, 7, 1) and valid[0].tolist() == [1, 1, 1, 0, 0, 0, 0]


def test_padding_source_positions_are_never_selected():
    st, ss = torch.rand(4, 6), torch.rand(4, 6)
    valid = torch.tensor([True, True, True, False, False, False]).expand(4, 6)
    _, take = select_patches(st, ss, 3, tau=0.9, gumbel_scale=1.0, src_valid=valid)
    assert take.detach()[:, 3:].sum() == 0


# -- variants and config -----------------------------------------------------------------------
def test_target_mask_zeroes_exactly_k_patches_and_target_mixup_mixes_within_the_batch():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 3)
    mixed, info = PaReMixer(PaReConfig(variant="target_mask")).mix(x, None, 3, GateNetwork(3))
    zero_rows = (mixed.abs().sum(-1) == 0).sum(1)
    assert zero_rows.tolist() == [3, 3, 3, 3] and info["lam"] == 0.0
    mixed, info = PaReMixer(PaReConfig(variant="target_mixup", k0=8)).mix(x, None, 2, None)
    lam, perm = info["lam"], info["perm"]
    assert lam == pytest.approx(2 / 8)
    assert torch.allclose(mixed, 0.75 * x + 0.25 * x[perm])


def test_config_rejects_bad_switches_with_the_valid_names():
    with pytest.raises(InvalidInputError, match="patch_replacement"):
        PaReConfig(mixing="blend")
    with pytest.raises(InvalidInputError, match="k_final"):
        PaReConfig(k0=2, k_final=3)
    with pytest.raises(InvalidInputError, match="own mixing"):
        PaReConfig(variant="target_mask", mixing="cutmix")
    with pytest.raises(InvalidInputError, match="no option"):
        get_method("pare", k_start=3)


@pytest.fixture(scope="module")
def gunpoint_model():
    model = build_model("smoke_gunpoint", "minilm")
    return model


def _prepared(model, **options):
    m = get_method("pare", proxy_samples=64, **options)
    for key in list(model.extras):
        del model.extras[key]
    m.prepare(model, model.task, RunContext(profile="smoke", seed=0))
    return m


def test_loss_at_k_zero_is_beta1_plus_beta2_times_the_target_loss(gunpoint_model):
    from crossmodal.losses import cross_entropy
    from crossmodal.training import TrainState

    model = gunpoint_model.eval()  # no dropout: the two forward passes agree
    m = _prepared(model, beta1=0.5, beta2=2.0)
    x = torch.as_tensor(get_task("smoke_gunpoint").load("unused")["train"][0][:4])
    y = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        value = m.loss_fn(model.task)(model, (x, y), TrainState(epoch=3, epochs=3))
        expected = 2.5 * cross_entropy(model(x), y)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("variant, head_grad", [("pare", True), ("no_source_loss", False)])
def test_mixed_loss_trains_gate_and_source_head_only_with_the_source_loss(gunpoint_model, variant,
                                                                         head_grad):
    from crossmodal.training import TrainState

    model = gunpoint_model.train()
    m = _prepared(model, variant=variant)
    x = torch.as_tensor(get_task("smoke_gunpoint").load("unused")["train"][0][:4])
    y = torch.tensor([0, 1, 0, 1])
    model.zero_grad()
    state = TrainState(epoch=0, epochs=2)
    m.loss_fn(model.task)(model, (x, y), state).backward()
    n_patches = model.embedder(x).shape[1]  # the smoke recipe's token count for GunPoint
    assert n_patches < 3000
    assert m.k0 == 3000 and state.extra["pare_k"] == n_patches  # k0 = 3000 capped to N
    gate_grad = model.extras["pare_gate"].net.weight.grad
    assert gate_grad is not None and gate_grad.abs().sum() > 0
    head = model.extras["pare_source_head"].linear.weight.grad
    assert (head is not None and head.abs().sum() > 0) == head_grad


# -- end to end --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("key, options", [
    ("smoke_gunpoint", {}),
    ("smoke_digits", {}),
    ("smoke_digits", {"mixing": "cutmix", "selection": "random", "k_schedule": "piecewise"}),
    ("smoke_gunpoint", {"variant": "target_mixup", "k_schedule": "non_gradual",
                        "lambda_mode": "k_over_k0", "k0": 8}),
])
def test_pare_runs_end_to_end_with_the_k_of_its_schedule(small_splits, key, options, tmp_path, monkeypatch):
    from crossmodal.methods.pare import PaRe, schedule_table

    # observe the k that the training loss actually uses in every epoch (results.json does not
    # record it per epoch): wrap PaRe's loss and read state.extra after each call
    used: dict[int, set] = {}
    original = PaRe.loss_fn

    def spying_loss_fn(self, task):
        fn = original(self, task)

        def wrapped(model, batch, state):
            value = fn(model, batch, state)
            used.setdefault(state.epoch, set()).add(state.extra["pare_k"])
            return value

        return wrapped

    monkeypatch.setattr(PaRe, "loss_fn", spying_loss_fn)
    epochs = 3
    r = run(key, "pare", "smoke", epochs=epochs, out=tmp_path, progress=False,
            splits=small_splits(key, 32, 16, pick="first"), method_options={"proxy_samples": 128, **options})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["method"] == "pare" and len(saved["epochs"]) == epochs
    assert math.isfinite(saved["final_metric"]) and saved["final_metric"] == r["final_metric"]
    assert all(math.isfinite(e["train_loss"]) for e in saved["epochs"])
    rep = saved["method_report"]
    assert rep["k0_effective"] == min(options.get("k0", 3000), rep["n_patches"])
    expected = schedule_table([rep["k_schedule"]], rep["k0"], epochs,
                              n_patches=rep["n_patches"], seed=0)
    assert {e: ks for e, ks in used.items()} == {row["epoch"]: {row["k"]} for row in expected}
    ks = [row["k"] for row in expected]
    assert ks[0] == rep["k0_effective"] or rep["k_schedule"] == "non_gradual"
    if rep["k_schedule"] != "non_gradual":  # gradual schedules never increase
        assert all(a >= b for a, b in zip(ks, ks[1:]))


@pytest.mark.slow
def test_crossmodal_run_cli_trains_pare_with_a_schedule_switch(tmp_path, capsys):
    from crossmodal.cli import main

    code = main(["run", "--task", "smoke_gunpoint", "--method", "pare", "--profile", "smoke",
                 "--epochs", "2", "-o", "k_schedule=exponential", "-o", "proxy_samples=64",
                 "-t", "batch_size=25", "--out", str(tmp_path), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["method"] == "pare" and len(saved["epochs"]) == 2
    assert saved["config"]["method"]["k_schedule"] == "exponential"
