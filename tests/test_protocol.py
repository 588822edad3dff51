"""The protocol table against the committed facts (tests/protocol_facts.json), its use by the
training loop and the runner, and the ``crossmodal protocol`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from crossmodal.cli import main
from crossmodal.errors import CrossmodalError, InvalidInputError
from crossmodal.protocol import (
    ORCA_CONFIGS,
    orca_stack_num,
    paper_tasks,
    pare_code_values,
    resolve,
)
from crossmodal.tasks import get_task
from crossmodal.training import TrainConfig, make_optimizer, make_scheduler

FACTS = json.loads((Path(__file__).parent / "protocol_facts.json").read_text())["tasks"]
METHODS = ("nft", "orca", "pare", "mona", "recraft")


def _v(fact):
    return fact["value"]


def test_the_facts_cover_the_18_paper_tasks():
    assert sorted(FACTS) == sorted(paper_tasks()) and len(FACTS) == 18


@pytest.mark.parametrize("key", sorted(FACTS))
def test_fine_tuning_settings_match_the_papers_and_orca_configs(key):
    fact = FACTS[key]
    # the papers' tables agree with ORCA's config (PaRe Tables 12/13 = RECRAFT Tables 8/9)
    oc = _v(fact["orca_config"])
    assert (oc["epochs"], oc["batch_size"], oc["accum"]) == (
        _v(fact["epochs"]), _v(fact["batch_size"]), _v(fact["grad_accum"]))
    assert oc["optimizer"].lower() == _v(fact["optimizer"])
    assert _v(fact["recraft_epochs"]) == _v(fact["epochs"])
    for method in METHODS:
        tr = resolve(key, method, "paper").train
        for name in ("epochs", "batch_size", "grad_accum", "optimizer", "clip_grad",
                     "warmup_epochs", "decay_epochs"):
            assert tr[name].value == _v(fact[name]), (key, method, name)
        for name in ("lr", "weight_decay", "momentum"):
            assert tr[name].value == pytest.approx(_v(fact[name])), (key, method, name)
        assert list(tr["betas"].value) == _v(fact["betas"])
        assert tr["accum_semantics"].value == "sum"
        assert tr["schedule"].value == "warmup_linear" and _v(fact["schedule"]) == "WarmupLR"
        for s in tr.values():
            assert s.source  # every value names its source
        TrainConfig(**resolve(key, method, "paper").train_kwargs()).validate()


@pytest.mark.parametrize("key", sorted(FACTS))
def test_model_loss_and_stage_settings_match_the_facts(key):
    fact, task = FACTS[key], get_task(key)
    orca = resolve(key, "orca", "paper")
    assert orca.model["dropout"].value == _v(fact["dropout"]) == 0.0
    assert orca.model["embedder_init"].value == "source"
    assert resolve(key, "pare", "paper").model["embedder_init"].value == "random"
    if "n_tokens" in fact:
        assert orca.model["n_tokens"].value == _v(fact["n_tokens"])
        assert orca.model["patch_size"].value * _v(fact["n_tokens"]) == task.input_shape[-1]
    # the task registry trains with ORCA's loss and options
    assert task.loss == _v(fact["loss"]) == orca.loss["loss"].value
    assert dict(task.loss_options) == fact["loss"]["options"]
    # ORCA's alignment budget
    st = orca.stage
    assert st["align_epochs"].value == _v(fact["align_epochs"])
    assert st["align_samples_per_class"].value == _v(fact["align_samples_per_class"])
    assert orca.method_options()["align_epochs"] == _v(fact["align_epochs"])
    # PaRe A.2.6 and RECRAFT Tables 8/9
    pare = resolve(key, "pare", "paper").stage
    assert pare["k0"].value == _v(fact["pare_k0"]) and pare["beta2"].value == _v(
        fact["pare_beta2"])
    rc = resolve(key, "recraft", "paper").stage
    assert rc["kappa"].value == _v(fact["recraft_kappa"])
    assert rc["fa_epochs"].value == _v(fact["recraft_fa_epochs"])
    assert rc["fld_epochs"].value == _v(fact["recraft_fld_epochs"])


def test_named_values_from_the_issue():
    # spot checks that do not go through the facts file
    assert resolve("ECG", "orca").model["n_tokens"].value == 50
    assert resolve("DeepSEA", "orca").model["n_tokens"].value == 500
    assert resolve("NinaPro", "orca").stage["align_epochs"].value == 100
    for key in ("PSICOV", "DeepSEA"):
        assert resolve(key, "orca").stage["align_samples_per_class"].value == 64
    assert resolve("CIFAR100", "orca").stage["align_samples_per_class"].value == 128
    assert resolve("ECG", "nft").train["momentum"].value == 0.99
    assert resolve("DiffusionReaction1D", "nft").train["momentum"].value == 0.99
    assert resolve("CIFAR100", "nft").train["clip_grad"].value is None
    assert resolve("NinaPro", "nft").train["clip_grad"].value == 1.0
    for key in ("ECG", "DeepSEA"):
        assert resolve(key, "recraft").stage["fld_epochs"].value == 2
    assert resolve("CIFAR100", "recraft").stage["kappa"].value == 0.3
    assert resolve("Satellite", "recraft").stage["kappa"].value == 0.5
    assert get_task("FSD50K").loss_options == {"pos_weight": 10.0}
    assert get_task("DeepSEA").loss_options == {"pos_weight": 4.0}


def test_orca_patch_rule():
    assert orca_stack_num(1000, 64) == 20  # ECG: N = 50
    assert orca_stack_num(1000, 512) == 2  # DeepSEA: N = 500
    assert orca_stack_num(46, 512) == 1
    assert orca_stack_num(1024, 32) == 32
    with pytest.raises(InvalidInputError):
        orca_stack_num(0, 4)


def test_pare_code_values_are_options_not_defaults():
    code = pare_code_values(get_task("ECG"))
    assert code["beta2"][0] == 0.1 and code["k0"][0] == 32 and code["topk_switch_epoch"][0] == 5
    code = pare_code_values(get_task("CIFAR100"))
    assert (code["k0"][0], code["k_final"][0], code["beta2"][0]) == (2000, 500, 1.0)
    assert pare_code_values(get_task("Cosmic"))["beta2"][0] == 0.3
    assert pare_code_values(get_task("Advection1D")) == {}  # no released PDE configs
    assert resolve("ECG", "pare").stage["beta2"].value == 1.0  # the paper profile: the paper


def test_orca_configs_transcription_matches_the_facts():
    for key, cfg in ORCA_CONFIGS.items():
        fact = FACTS[key]
        assert cfg["embedder_epochs"] == _v(fact["align_epochs"])
        assert cfg["target_seq_len"] == _v(fact["target_seq_len"])
        assert cfg["lr"] == pytest.approx(_v(fact["orca_config"])["lr"])


def test_bad_inputs_are_crossmodal_errors():
    with pytest.raises(CrossmodalError, match="unknown task"):
        resolve("nope", "nft")
    with pytest.raises(CrossmodalError, match="unknown method"):
        resolve("ECG", "nope")
    with pytest.raises(CrossmodalError, match="paper task"):
        resolve("smoke_digits", "nft", "paper")
    with pytest.raises(CrossmodalError, match="unknown profile"):
        resolve("ECG", "nft", "huge")


def test_smoke_profile_keeps_its_training_defaults():
    tr = resolve("smoke_digits", "nft", "smoke").train_kwargs()
    assert tr["accum_semantics"] == "mean" and tr["clip_grad"] == 1.0
    assert tr["schedule"] == "cosine" and tuple(tr["betas"]) == (0.9, 0.999)


# --------------------------------------------------------------------------- training loop

def _one_step(semantics: str, accum: int) -> torch.Tensor:
    from crossmodal.training import fit

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    w0 = model.weight.detach().clone()
    task = get_task("smoke_digits")
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = np.array([0, 1] * 4)

    def loss_fn(m, batch, state):
        xb, yb = batch
        return torch.nn.functional.cross_entropy(m(xb), yb)

    cfg = TrainConfig(epochs=1, batch_size=2, grad_accum=accum, accum_semantics=semantics,
                      optimizer="sgd", lr=0.1, momentum=0.0, schedule="constant",
                      warmup_frac=0.0, clip_grad=None, progress=False, device="cpu")
    import crossmodal.training as tr

    orig = tr.evaluate
    tr.evaluate = lambda *a, **k: 0.0  # the metric is irrelevant here
    try:
        fit(model, task, {"train": (x, y), "test": (x, y)}, cfg, loss_fn=loss_fn)
    finally:
        tr.evaluate = orig
    return model.weight.detach() - w0


def test_summed_accumulation_steps_with_the_sum_of_the_micro_batch_gradients():
    # one step over 4 micro-batches: sum = 4 x mean (SGD, no momentum)
    d_sum, d_mean = _one_step("sum", 4), _one_step("mean", 4)
    assert torch.allclose(d_sum, 4 * d_mean, atol=1e-6)
    assert d_mean.abs().sum() > 0


def test_summed_accumulation_discards_the_partial_window_and_rejects_too_few_batches():
    # 4 batches, accum 3: sum steps once (3 batches), mean steps twice (3 + 1)
    d_sum3 = _one_step("sum", 3)
    assert d_sum3.abs().sum() > 0
    with pytest.raises(InvalidInputError, match="grad_accum"):
        _one_step("sum", 5)


def test_orca_warmup_schedule_per_micro_batch():
    p = torch.nn.Parameter(torch.zeros(1))
    cfg = TrainConfig(epochs=4, schedule="warmup_linear", warmup_epochs=1, decay_epochs=5,
                      lr=1.0)
    opt = make_optimizer([p], cfg)
    sched = make_scheduler(opt, cfg, total_steps=0, batches_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # ORCA WarmupLR: s/W for s < W = 10, then (T - s)/(T - W), T = 50
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5)
    assert lrs[10] == pytest.approx(1.0) and lrs[30] == pytest.approx(20 / 40)
    assert lrs[39] == pytest.approx(11 / 40)  # decay_epochs > epochs: ends above 0


def test_betas_reach_adam_and_bad_settings_are_explained():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer([p], TrainConfig(optimizer="adam", betas=(0.9, 0.98)))
    assert opt.param_groups[0]["betas"] == (0.9, 0.98)
    with pytest.raises(CrossmodalError, match="accumulation"):
        TrainConfig(accum_semantics="avg").validate()
    with pytest.raises(CrossmodalError, match="betas"):
        TrainConfig(betas=(0.9, 1.5)).validate()
    with pytest.raises(CrossmodalError, match="decay_epochs"):
        TrainConfig(schedule="warmup_linear", warmup_epochs=5, decay_epochs=5).validate()


# --------------------------------------------------------------------------- runner and CLI

def test_paper_profile_run_records_the_protocol_in_results(tmp_path):
    from crossmodal.runner import run

    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 1, 1000)).astype(np.float32)
    y = np.arange(24) % 4
    result = run("ECG", "nft", "paper", body="minilm-random", epochs=1,
                 splits={"train": (x[:16], y[:16]), "test": (x[16:], y[16:])},
                 train_options={"batch_size": 4, "grad_accum": 2, "num_threads": 1},
                 progress=False, out=tmp_path)
    cfg = json.loads((tmp_path / "results.json").read_text())["config"]
    assert cfg == json.loads(json.dumps(result["config"]))
    tr = cfg["train"]
    assert tr["grad_accum"] == 2 and tr["accum_semantics"] == "sum"
    assert tr["clip_grad"] is None and tr["momentum"] == 0.99 and tr["betas"] == [0.9, 0.98]
    assert tr["optimizer"] == "sgd" and tr["schedule"] == "warmup_linear"
    model = cfg["model"]
    assert model["n_tokens"] == 50 and model["dropout"] == 0.0
    assert model["embedder_init"] == "random"
    assert model["n_tokens_built"] == 50  # patch 20 on 1000 samples
    assert set(model["applied"]) >= {"n_tokens", "dropout", "embedder_init"}
    assert cfg["protocol"]["train"]["lr"]["source"] == "PaRe Table 12 Learning Rate"


def test_orca_paper_run_takes_the_alignment_budget_from_the_table():
    from crossmodal.methods import get_method
    from crossmodal.protocol import resolve as res

    opts = res("NinaPro", "orca", "paper").method_options()
    m = get_method("orca", **opts)
    assert m.config.align_epochs == 100 and m.config.align_samples_per_class == 128
    assert m.config.proxy_samples == 5000 and m.config.multilabel_labels == "kmeans"


def test_protocol_command(capsys):
    assert main(["protocol", "ECG", "--method", "orca"]) == 0
    out = capsys.readouterr().out
    assert "n_tokens" in out and "align_epochs" in out and "ecg.yaml" in out
    assert main(["protocol", "DeepSEA", "-m", "recraft", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stage"]["fld_epochs"]["value"] == 2
    assert data["loss"]["pos_weight"]["value"] == 4.0
    assert data["train"]["grad_accum"]["source"] == "PaRe Table 12 Accum."
    assert main(["protocol", "nope"]) == 2
    assert "unknown task" in capsys.readouterr().err


# --------------------------------------------------------------------------- PaRe code options

def test_pare_topk_switch_replaces_the_top_target_patches_hard():
    from crossmodal.methods.pare import PaReConfig, PaReMixer

    torch.manual_seed(0)
    x_t, x_s = torch.randn(2, 6, 4), torch.randn(2, 6, 4) + 100.0
    scores = {id(x_t): torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.3, 0.4]] * 2),
              id(x_s): torch.tensor([[0.5, 0.1, 0.7, 0.2, 0.9, 0.0]] * 2)}

    def gate(x):
        return scores[id(x)]

    mixer = PaReMixer(PaReConfig(topk_switch_epoch=3), k0=6)
    mixed, info = mixer.mix(x_t, x_s, 2, gate, epoch=3)
    # target positions 1 and 3 (highest scores) get source positions 2 and 4 (in order)
    assert torch.equal(mixed[:, [0, 2, 4, 5]], x_t[:, [0, 2, 4, 5]])
    assert torch.equal(mixed[:, 1], x_s[:, 2]) and torch.equal(mixed[:, 3], x_s[:, 4])
    assert info["lam"] == pytest.approx(2 / 6)
    # before the switch the paper's Gumbel selection replaces low-scored target patches
    torch.manual_seed(0)
    early, _ = PaReMixer(PaReConfig(topk_switch_epoch=3, gumbel_scale=0.0), k0=6).mix(
        x_t, x_s, 2, gate, epoch=2)
    assert torch.equal(early[:, 1], x_t[:, 1]) and torch.equal(early[:, 3], x_t[:, 3])


def test_pare_code_options_are_validated():
    from crossmodal.methods.pare import PaReConfig

    with pytest.raises(CrossmodalError, match="source_tokens"):
        PaReConfig(source_tokens=0)
    with pytest.raises(CrossmodalError, match="topk_switch_epoch"):
        PaReConfig(topk_switch_epoch=-1)


def test_data_root_reaches_the_paper_proxies(tmp_path, monkeypatch):
    from crossmodal.errors import DataMissingError
    from crossmodal.methods import RunContext
    from crossmodal.proxies import load_proxy

    monkeypatch.delenv("CROSSMODAL_DATA", raising=False)
    root = tmp_path / "my_root"
    with pytest.raises(DataMissingError, match=str(root)):
        load_proxy("conll2003", root=root)
    # ORCA reads its proxy from the run's data root
    from crossmodal.methods import get_method
    from crossmodal.models import build_model

    model = build_model("smoke_gunpoint", "minilm-random")
    m = get_method("orca", proxy="conll2003", align_epochs=1)
    x = np.zeros((4, *model.task.input_shape), np.float32)
    with pytest.raises(DataMissingError, match=str(root)):
        m.before_finetune(model, get_task("smoke_gunpoint"), {"train": (x, np.array([0, 1, 0, 1]))},
                   RunContext(profile="paper", data_root=root, device="cpu"))


@pytest.mark.parametrize("key", [k for k in sorted(FACTS) if "n_tokens" in FACTS[k]])
def test_a_model_built_from_the_table_has_orcas_token_count(key):
    from crossmodal.models import build_model
    from crossmodal.runner import model_options

    task = get_task(key)
    opts = model_options(resolve(key, "orca", "paper").model_kwargs())
    model = build_model(task, "minilm-random", **opts)
    with torch.no_grad():
        tokens = model.embedder(torch.zeros(2, *task.input_shape))
    assert tokens.shape[1] == _v(FACTS[key]["n_tokens"])


# -- task inputs and targets against ORCA's loaders (facts: orca_input) -----------------------


@pytest.mark.parametrize("key", sorted(FACTS))
def test_task_inputs_and_target_normalisers_match_orcas_loaders(key):
    """The registry feeds what ORCA's loader feeds, or names the deviation (README too)."""
    from crossmodal.protocol import DEVIATIONS

    fact, task = FACTS[key]["orca_input"], get_task(key)
    assert "src/data_loaders.py" in fact["source"] and "get_config" in fact["source"]
    deviation = fact["kit_deviation"]
    if deviation is None:
        assert list(task.input_shape) == fact["fed_shape"], key
    else:  # a documented deviation: it must be listed in the table's DEVIATIONS and README
        assert list(task.input_shape) != fact["fed_shape"]
        assert any(d.startswith(f"{deviation}:") for d in DEVIATIONS), deviation
        readme = (Path(__file__).parents[1] / "README.md").read_text()
        assert {"PSICOV": "* PSICOV: ORCA feeds 57x512x512",
                "NavierStokes1D": "* Navier-Stokes 1D: ORCA flattens",
                "DiffusionReaction2D": "* Diffusion-Reaction 2D: ORCA maps u(t=0) to v(T)",
                }[deviation] in readme
    prep = fact.get("kit_preprocessing_deviation")  # same shape, other preprocessing
    if prep is not None:
        from crossmodal.protocol import DEVIATIONS

        assert any(d.startswith(f"{prep['name']}:") for d in DEVIATIONS), prep
        readme = (Path(__file__).parents[1] / "README.md").read_text()
        assert f"* {prep['name']}: ORCA" in readme and "src/data_loaders.py" in prep["source"]
    decoded = fact["target_normalizer"] == "unit_gaussian"  # standardised *and* decoded
    assert task.target_normalizer == ("unit_gaussian" if decoded else None), key
    proto = resolve(key, "nft", "paper")
    assert list(proto.loss["input_shape"].value) == list(task.input_shape)
    assert proto.loss["target_normalizer"].value == task.target_normalizer


def test_darcy_flow_head_predicts_standardised_targets_and_decodes_them():
    """ORCA's y_normalizer: mean/std per pixel of the training targets, decoded before loss."""
    from crossmodal.heads import TargetDecodedHead
    from crossmodal.models import build_model, fit_target_normalizer

    task = get_task("DarcyFlow")
    model = build_model(task, "minilm-random")
    assert isinstance(model.head, TargetDecodedHead)
    rng = np.random.default_rng(0)
    y = (3.0 + 2.0 * rng.standard_normal((50, *task.output_shape))).astype(np.float32)
    assert fit_target_normalizer(model, y)
    mean, std = torch.tensor(y.mean(0)), torch.tensor(y.std(0, ddof=1))
    assert torch.allclose(model.head.mean, mean, atol=1e-5)
    assert torch.allclose(model.head.scale, std + 1e-5, atol=1e-5)
    h = torch.zeros(2, 7, 4)
    model.head.inner.forward = lambda tokens: torch.ones(len(tokens), *task.output_shape)
    out = model.head(h)  # inner output z = 1: one standard deviation above the mean
    assert torch.allclose(out, (mean + std + 1e-5).expand_as(out), atol=1e-4)
    assert {"head.mean", "head.scale"} <= set(model.state_dict())  # kept in checkpoints
    # tasks without ORCA's normaliser keep a plain head, and fitting is a no-op
    plain = build_model(get_task("DarcyFlow2D"), "minilm-random")
    assert not isinstance(plain.head, TargetDecodedHead)
    assert not fit_target_normalizer(plain, np.zeros((2, 1, 64, 64), np.float32))


def test_the_runner_fits_the_target_normaliser_before_any_stage():
    from crossmodal.runner import run

    task = get_task("DarcyFlow")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, *task.input_shape)).astype(np.float32)
    y = (5.0 + rng.random((6, *task.output_shape))).astype(np.float32)
    seen = {}

    def probe(model, m, spec, splits, record):
        seen.setdefault("mean", float(model.head.mean.mean()))
        return {}

    run(task, "nft", "smoke", epochs=1, body="minilm-random", progress=False,
        splits={"train": (x, y), "test": (x[:2], y[:2])}, limit_batches=1, batch_size=2,
        probe=probe)
    assert seen["mean"] == pytest.approx(float(y.mean()), rel=1e-5)


def test_pde_inputs_are_strided_to_orcas_resolution():
    from crossmodal.tasks.pdebench import ORCA_RESOLUTION, reduce_to_orca

    assert ORCA_RESOLUTION == {"Advection1D": 256, "DarcyFlow2D": 64}
    x = np.arange(2 * 1024, dtype=np.float32).reshape(2, 1, 1024)
    (xs, ys), = reduce_to_orca("Advection1D", {"train": (x, x + 1)}).values()
    assert xs.shape == (2, 1, 256) and np.array_equal(xs, x[..., ::4])  # ORCA's ::4
    assert np.array_equal(ys, (x + 1)[..., ::4])
    g = np.zeros((2, 1, 128, 128), np.float32)
    g[..., ::2, ::2] = 1.0
    (gs, _), = reduce_to_orca("DarcyFlow2D", {"test": (g, g)}).values()
    assert gs.shape == (2, 1, 64, 64) and (gs == 1.0).all()
    small = {"train": (x[..., :256], x[..., :256])}  # generated files: left as they are
    assert reduce_to_orca("Advection1D", small) is small
    assert get_task("Advection1D").input_shape == (1, 256)
    assert get_task("DarcyFlow2D").input_shape == (1, 64, 64)


# -- bad input on the paper path: a CrossmodalError naming the fix, never a traceback ---------

BAD_PAPER_INPUTS = [
    (["run", "--task", "ECG", "--method", "orca", "--profile", "paper", "--data-root", "{empty}",
      "--body", "roberta-base-random", "--limit-batches", "1"], "crossmodal data download ECG"),
    (["run", "--task", "CIFAR100", "--method", "pare", "--profile", "paper", "--data-root",
      "{empty}", "--body", "swin-base-random"], "crossmodal data download CIFAR100"),
    (["run", "--task", "smoke_gunpoint", "--method", "nft", "--profile", "smoke", "--body",
      "swin-base-random", "--epochs", "1"], "use a text body"),
    (["run", "--task", "smoke_digits", "--method", "nft", "--limit-batches", "0"],
     "positive integer"),
    (["run", "--task", "ECG", "--method", "orca", "--profile", "paper", "--data-root", "{empty}",
      "-o", "align_score=bogus"], "align_score must be one of"),
    (["run", "--task", "smoke_digits", "--method", "nft", "--body", "nope", "--epochs", "1"],
     "unknown body"),
    (["protocol", "ECG", "--method", "nope"], "valid methods"),
    (["protocol", "smoke_digits", "--method", "orca", "--profile", "paper"], "valid paper tasks"),
]


@pytest.mark.parametrize("argv, fix", BAD_PAPER_INPUTS, ids=[" ".join(a[:4]) + f" [{i}]" for i, (a, _)
                                                            in enumerate(BAD_PAPER_INPUTS)])
def test_bad_paper_path_inputs_are_clear_cli_errors(argv, fix, tmp_path, capsys):
    argv = [a.format(empty=tmp_path) for a in argv]
    assert main(argv) == 2  # CrossmodalError caught by the CLI: exit 2, one message
    err = capsys.readouterr().err
    assert err.startswith("crossmodal: error: ") and fix in err, err
    assert "Traceback" not in err


def test_the_library_raises_no_bare_not_implemented_error():
    """A missing code path must be a CrossmodalError that says what to do instead."""
    lib = Path(__file__).parents[1] / "lib" / "crossmodal"
    offenders = [f"{p.relative_to(lib)}:{i}" for p in lib.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "raise NotImplementedError" in line]
    assert offenders == []


def test_train_defaults_of_the_paper_profile_are_the_protocol_table():
    """One reader of the paper settings: protocol.train_defaults; profiles refuses 'paper'."""
    from crossmodal.errors import InvalidInputError
    from crossmodal.profiles import train_defaults as profile_train_defaults
    from crossmodal.protocol import resolve, train_defaults
    from crossmodal.tasks import get_task

    ecg = get_task("ECG")
    assert train_defaults(ecg, "paper") == resolve(ecg, "nft", "paper").train_kwargs()
    smoke = get_task("smoke_digits")
    assert train_defaults(smoke, "smoke") == profile_train_defaults(smoke, "smoke")
    with pytest.raises(InvalidInputError, match="protocol"):
        profile_train_defaults(ecg, "paper")
