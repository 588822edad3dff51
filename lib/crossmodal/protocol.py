"""The protocol table: resolved settings of every (task, method, profile), each with its source.

One place answers "what does a run of METHOD on TASK in PROFILE use, and who says so?"
(``crossmodal protocol TASK --method M --profile paper``). The runner takes its training
config, the model's token count / dropout / embedder initialisation and the method's stage
settings from here, and ``results.json`` records the values under ``config``.

Sources, in the order they are used for the ``paper`` profile:

1. The papers' tables, read from the kit's copies in ``crossmodal/paper_results``:
   PaRe Tables 12/13 (epochs, batch size, accumulation, optimiser, lr, weight decay: ORCA's
   fine-tuning settings, which RECRAFT Tables 8/9 repeat), PaRe A.2.6 (k0, k_final, beta1,
   beta2), RECRAFT Tables 8/9 (kappa, FA and FLD epochs, label discretisation).
2. ORCA's released configs (``sjunhongshen/ORCA@19b8c1c``, ``src/configs/<file>.yaml``), for
   what the tables do not give: ``clip``, the ``WarmupLR`` warm-up/decay epochs, Adam
   ``betas``, SGD ``momentum``, ``drop_out``, ``target_seq_len``, ``embedder_epochs``,
   ``maxsamples``. They are transcribed below in :data:`ORCA_CONFIGS` (read, not copied:
   numbers only) and checked against ``tests/protocol_facts.json``.
3. ORCA's code for rules: the 1D patch rule (``src/embedder.py:Embeddings1D.get_stack_num``:
   the smallest divisor p of the input length L with L/p <= target_seq_len; N = L/p), the
   k-means pseudo-labels (``infer_labels``, k = 10), OTDD's options (``embedder.py:otdd``).
4. Kit defaults, marked ``kit default``, where no paper or config gives a value (MoNA's
   settings, the kit's alignment optimiser, ...).

Every deviation of the paper profile from the authors' code that remains is listed in the
README's "Paper profile" section (and :data:`DEVIATIONS`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from crossmodal.errors import InvalidInputError, unknown_name
from crossmodal.methods import METHODS, get_method
from crossmodal.models import default_head
from crossmodal.paper_tables import hyperparameter_rows
from crossmodal.profiles import get_profile, method_defaults, paper_hyperparameters
from crossmodal.profiles import train_defaults as profile_train_defaults
from crossmodal.tasks import get_task
from crossmodal.training import TrainConfig

ORCA_REF = "ORCA@19b8c1c"
PARE_REF = "PaRe@7d5362c"

#: ORCA's per-task config file (``src/configs/``) for each paper task key.
ORCA_CONFIG_FILE = {
    "CIFAR100": "cifar100.yaml", "Spherical": "spherical.yaml", "NinaPro": "ninapro.yaml",
    "FSD50K": "fsd.yaml", "DarcyFlow": "darcy.yaml", "PSICOV": "psicov.yaml",
    "Cosmic": "cosmic.yaml", "ECG": "ecg.yaml", "Satellite": "satellite.yaml",
    "DeepSEA": "deepsea.yaml", "Advection1D": "PDEADV.yaml", "Burgers1D": "PDEBG.yaml",
    "DiffusionReaction1D": "PDERD.yaml", "DiffusionSorption1D": "PDEDS.yaml",
    "NavierStokes1D": "PDE1DCFD.yaml", "DarcyFlow2D": "PDEDC.yaml",
    "ShallowWater2D": "PDESW.yaml", "DiffusionReaction2D": "PDERD2D.yaml",
}

_KEYS = ("epochs", "embedder_epochs", "maxsamples", "drop_out", "batch_size", "accum", "clip",
         "optimizer", "lr", "betas", "weight_decay", "momentum", "warmup_epochs",
         "decay_epochs", "target_seq_len")


def _cfg(*values: Any) -> dict[str, Any]:
    return dict(zip(_KEYS, values, strict=True))


_B = (0.9, 0.98)
#: ORCA's ``hyperparameters`` per task (``target_seq_len`` None: absent, get_config uses 512).
#: epochs, embedder_epochs, maxsamples, drop_out, batch_size, accum, clip, optimizer, lr,
#: betas, weight_decay, momentum, WarmupLR warmup_epochs, decay_epochs, target_seq_len
ORCA_CONFIGS: dict[str, dict[str, Any]] = {
    "CIFAR100": _cfg(60, 60, 128, 0.0, 32, 32, -1, "SGD", 1e-4, _B, 1e-3, 0.9, 5, 200, None),
    "Spherical": _cfg(60, 60, 128, 0.0, 32, 4, -1, "AdamW", 1e-4, _B, 0.1, 0.999, 5, 60, None),
    "NinaPro": _cfg(60, 100, 128, 0.0, 32, 1, 1, "Adam", 1e-4, _B, 1e-5, 0.999, 5, 60, None),
    "FSD50K": _cfg(100, 60, 128, 0.0, 32, 1, -1, "Adam", 1e-4, _B, 5e-5, 0.9, 5, 100, None),
    "DarcyFlow": _cfg(100, 60, 128, 0.0, 4, 1, -1, "AdamW", 1e-3, _B, 5e-3, 0.9, 5, 100, None),
    "PSICOV": _cfg(10, 60, 64, 0.0, 1, 32, -1, "Adam", 5e-6, _B, 1e-5, 0.99, 5, 100, None),
    "Cosmic": _cfg(60, 60, 128, 0.0, 4, 1, -1, "AdamW", 1e-3, _B, 0.0, 0.99, 5, 60, None),
    "ECG": _cfg(15, 60, 128, 0.0, 4, 16, -1, "SGD", 1e-6, _B, 0.1, 0.99, 5, 200, 64),
    "Satellite": _cfg(60, 60, 128, 0.0, 16, 4, -1, "AdamW", 3e-5, _B, 3e-6, 0.9, 5, 60, None),
    "DeepSEA": _cfg(13, 60, 64, 0.0, 16, 1, 1, "Adam", 1e-5, _B, 0.0, 0.99, 10, 25, 512),
    "Advection1D": _cfg(200, 60, 128, 0.0, 4, 1, 1, "Adam", 1e-4, _B, 1e-5, 0.99, 5, 200, 512),
    "Burgers1D": _cfg(200, 60, 128, 0.0, 4, 1, 1, "Adam", 1e-5, _B, 1e-5, 0.99, 5, 200, 128),
    "DiffusionReaction1D": _cfg(200, 60, 128, 0.0, 4, 1, 1, "SGD", 1e-3, _B, 1e-5, 0.99, 5,
                                200, 256),
    "DiffusionSorption1D": _cfg(200, 60, 128, 0.0, 4, 1, 1, "AdamW", 1e-4, _B, 0.0, 0.99, 5,
                                200, 32),
    "NavierStokes1D": _cfg(200, 60, 128, 0.0, 4, 1, 1, "AdamW", 1e-4, _B, 1e-3, 0.99, 5, 200,
                           128),
    "DarcyFlow2D": _cfg(100, 60, 128, 0.0, 4, 1, -1, "AdamW", 1e-4, _B, 1e-5, 0.99, 5, 200, 64),
    "ShallowWater2D": _cfg(200, 60, 128, 0.0, 4, 1, 1, "AdamW", 1e-4, _B, 0.0, 0.99, 10, 200,
                           64),
    "DiffusionReaction2D": _cfg(200, 60, 128, 0.0, 4, 1, 1, "Adam", 1e-4, _B, 1e-3, 0.99, 5,
                                200, 64),
}

#: ORCA's 1D input length per task (``src/task_configs.py:get_config`` ``sample_shape`` and
#: ``src/data_loaders.py:load_pde`` resolutions): the length its patch rule is applied to.
ORCA_1D_LENGTH = {"ECG": 1000, "Satellite": 46, "DeepSEA": 1000, "Advection1D": 256,
                  "Burgers1D": 256, "DiffusionReaction1D": 1024, "DiffusionSorption1D": 1024,
                  "NavierStokes1D": 3072}

#: PaRe's released code where it differs from the paper (``BIT-DA/PaRe@7d5362c``): exposed as
#: options, documented; the paper profile follows the paper.
PARE_CODE = {
    "beta2_1d": (0.1, f"{PARE_REF} src/main_PaRe_1d.py:309 (loss + 0.1 * mixed)"),
    "beta2_dense": (0.3, f"{PARE_REF} src/main_PaRe_dense.py:316 (loss + 0.3 * mixed)"),
    "beta2_2d_classification": (1.0, f"{PARE_REF} src/main_PaRe.py:320"),
    "k_2d_classification": ((2000, 500), f"{PARE_REF} configs/{{cifar100,spherical,ninapro,fsd}}"
                            "_PaRe.yaml begin_num 2000, end_num 1500; main_PaRe.py:192 "
                            "k = int(begin - end * ep / E)"),
    "k_darcy": ((1000, 500), f"{PARE_REF} configs/darcy_PaRe.yaml begin_num 1000, end_num 500"),
    "k_cosmic": ((500, 0), f"{PARE_REF} configs/cosmic_PaRe.yaml begin_num 500, end_num 500"),
    "k_1d": ((32, 0), f"{PARE_REF} configs/{{ecg,satellite,deepsea}}_PaRe.yaml seq_num 32; "
             "main_PaRe_1d.py:190 k = int(seq_num - seq_num * ep / E)"),
    "source_tokens_1d": (32, f"{PARE_REF} seq_num 32: the CoNLL features are 32 tokens, not "
                         "tiled to N"),
    "topk_switch_epoch_2d": (10, f"{PARE_REF} src/main_PaRe.py:286 (ep < 10: Gumbel; then top-k)"),
    "topk_switch_epoch_1d": (5, f"{PARE_REF} src/main_PaRe_1d.py:284 (ep < 5)"),
}

#: Remaining deviations of the paper profile from the authors' code (also in the README).
DEVIATIONS = (
    "ORCA clips the gradient after every micro-batch backward; the kit clips once per "
    "optimiser step. Identical on every paper task: clipping is on only where accum = 1.",
    "ORCA's alignment optimiser: the paper profile uses the authors' (the fine-tuning "
    "optimiser with 10x its lr if lr <= 1e-3, StepLR x0.2 after epochs 20/40/60; the paper "
    "gives none); the smoke and lab profiles keep the kit's Adam at align_lr 1e-3, constant.",
    "PSICOV: ORCA feeds 57x512x512 windows (src/data_loaders.py:load_psicov "
    "training_window=512; test maps whole at 512x512, utils.py:psicov_mae LMAX=512); the kit's "
    "prepared cache holds 57x128x128 top-left windows (a 512 cache of DeepCov would be ~200 GB "
    "of float32 in memory; the kit's splits are in-memory arrays), so MAE_8 is scored on the "
    "first 123 residues of each test protein. Padding (100 A) and the 16 A training clip "
    "follow ORCA.",
    "NavierStokes1D: ORCA flattens (density, pressure, Vx) into one 3072-point channel and "
    "trains and scores on values standardised with the training inputs' statistics (load_pde "
    "1DCFD, no decoder); the kit keeps 3x1024 channels (N = 128 tokens either way, patch 8 "
    "over 3 channels instead of 24 points of one) and scores nRMSE in physical units, as "
    "PDEBench reports it.",
    "DiffusionReaction2D: ORCA maps u(t=0) to v(T) (one channel; load_pde RD2D); the kit "
    "maps (u, v)(t=0) to (u, v)(T), the PDEBench task PaRe Table 9 describes.",
    "Cosmic: ORCA multiplies the predictions and the targets by (1 - ignore), the deepCR "
    "ignore mask, before the loss and the metric (get_data transform=mask), and adds a random "
    "multiple of the sky background to training images; the kit's prepared arrays keep the "
    "image and the cosmic-ray mask only (no ignore mask, no sky augmentation).",
    "Augmentation: ORCA's loaders augment on the fly (CIFAR-100: RandomCrop(32, 4) + "
    "horizontal flip; FSD50K: a random 1 s chunk per clip and epoch, evaluation over all "
    "chunks); the kit's splits are fixed arrays (CIFAR-100 unaugmented, FSD50K the first "
    "chunk of each clip).",
    "Burgers1D: ORCA's get_config declares (1, 1, 256) but load_pde feeds the file's 1024 "
    "points (reduced_resolution 1), so ORCA's Embeddings1D (stride from 256) would emit 512 "
    "tokens against 128 position embeddings; the kit feeds 1024 points with "
    "target_seq_len 128's N = 128 (patch 8).",
    "DarcyFlow (NAS-Bench-360): ORCA's LpLoss(size_average=False) sums the relative L2 over "
    "the batch; the kit averages it (a constant factor, the batch size 4, that AdamW's "
    "update does not see apart from its epsilon).",
    "PaRe's paper profile follows the paper (Tables 12/13, A.2.6: k0 3000 / Cosmic 200, "
    "beta2 1, Gumbel selection throughout); the released code's values are options "
    "(see PARE_CODE and `crossmodal protocol TASK --method pare`).",
    "RECRAFT Table 8 lists PSICOV with RoBERTa and Table 9 Diffusion-Sorption with Swin; the "
    "kit runs PSICOV with Swin and Diffusion-Sorption with RoBERTa (ORCA's configs), and "
    "takes kappa from the table row.",
)


@dataclass(frozen=True)
class Setting:
    """One resolved value and where it comes from."""

    value: Any
    source: str

    def to_json(self) -> dict[str, Any]:
        v = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"value": v, "source": self.source}


@dataclass
class Protocol:
    """The resolved settings of one (task, method, profile)."""

    task: str
    method: str
    profile: str
    train: dict[str, Setting] = field(default_factory=dict)
    model: dict[str, Setting] = field(default_factory=dict)
    loss: dict[str, Setting] = field(default_factory=dict)
    stage: dict[str, Setting] = field(default_factory=dict)
    notes: dict[str, Setting] = field(default_factory=dict)

    def train_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`crossmodal.training.TrainConfig`."""
        return {k: s.value for k, s in self.train.items()}

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`crossmodal.models.build_model` (None: not set)."""
        return {k: s.value for k, s in self.model.items()
                if k in ("n_tokens", "patch_size", "embedder_init", "dropout")}

    def method_options(self) -> dict[str, Any]:
        """Method config overrides (fields of the method's config dataclass only)."""

        valid = {f.name for f in dataclasses.fields(METHODS[self.method].config_class)}
        return {k: s.value for k, s in self.stage.items() if k in valid}

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "method": self.method, "profile": self.profile,
                **{part: {k: s.to_json() for k, s in getattr(self, part).items()}
                   for part in ("train", "model", "loss", "stage", "notes")}}


def _table_rows(filename: str, tables: tuple[str, ...]) -> dict[str, dict[str, str]]:
    return hyperparameter_rows(filename.removesuffix(".csv"), tables)


def pare_table(task_key: str) -> tuple[dict[str, str], str]:
    """PaRe Table 12/13's fine-tuning settings of a task (raw strings) and the table's name."""
    rows = _table_rows("pare_hyperparameters.csv", ("Table 12", "Table 13"))
    if task_key not in rows:
        raise unknown_name("paper task (PaRe Tables 12/13)", task_key, list(rows))
    return rows[task_key], f"PaRe {rows[task_key]['__table__']}"


def recraft_table(task_key: str) -> dict[str, str]:
    return _table_rows("recraft_hyperparameters.csv", ("Table 8", "Table 9")).get(task_key, {})


def pare_a26(task_key: str) -> dict[str, str]:
    return _table_rows("pare_hyperparameters.csv", ("A.2.6 text",)).get(task_key, {})


def paper_tasks() -> list[str]:
    """The 18 paper tasks (NAS-Bench-360 and PDEBench) the protocol table covers."""
    return list(ORCA_CONFIG_FILE)


def orca_stack_num(length: int, target_seq_len: int) -> int:
    """ORCA's 1D patch: the smallest divisor p of ``length`` with ``length / p <= target``."""
    if length < 1 or target_seq_len < 1:
        raise InvalidInputError(f"need positive length and target_seq_len, got {length}, "
                                f"{target_seq_len}")
    for p in range(1, length + 1):
        if length % p == 0 and length // p <= target_seq_len:
            return p
    return length


def orca_tokens(task_key: str) -> tuple[int, str]:
    """ORCA's token count N of a 1D task and its derivation."""
    cfg = ORCA_CONFIGS[task_key]
    tsl = cfg["target_seq_len"] if cfg["target_seq_len"] is not None else 512
    length = ORCA_1D_LENGTH[task_key]
    p = orca_stack_num(length, tsl)
    file = ORCA_CONFIG_FILE[task_key]
    tsl_src = (f"{file}:target_seq_len={tsl}" if cfg["target_seq_len"] is not None
               else "target_seq_len absent -> 512 (task_configs.py:get_config)")
    return length // p, (f"{ORCA_REF} {tsl_src}; L={length} (get_config/load_pde); "
                         f"embedder.py get_stack_num -> patch {p}, N = {length // p}")


def _orca_src(task_key: str, key: str) -> str:
    return f"{ORCA_REF} src/configs/{ORCA_CONFIG_FILE[task_key]}:{key}"


def orca_alignment_optimizer(task) -> dict[str, Setting]:
    """ORCA's embedder optimiser of the alignment stage for a paper task, with sources.

    ``src/task_configs.py:get_optimizer_scheduler(module='embedder')``: the task's fine-tuning
    optimiser (kind, betas, weight decay, momentum) with its lr times 10 when lr <= 1e-3, and
    ``get_scheduler(no_warmup_scheduler)``: StepLR, x0.2 after epochs 20, 40, 60, stepped once
    per alignment epoch (every config's ``no_warmup_scheduler``). The ORCA paper gives no
    embedder optimiser, so the code is the source. The fine-tuning values are the paper
    profile's (:func:`_paper_train`: PaRe Tables 12/13, betas/momentum from ORCA's config).
    """
    train = _paper_train(task, "orca")
    rule = f"{ORCA_REF} src/task_configs.py:get_optimizer_scheduler(module='embedder')"
    lr = train["lr"].value
    return {
        "align_optimizer": Setting(train["optimizer"].value,
                                   f"{rule}: the fine-tuning optimiser ({train['optimizer'].source})"),
        "align_lr": Setting(lr * 10 if lr <= 1e-3 else lr,
                            f"{rule}: lr x10 when lr <= 1e-3 ({train['lr'].source} = {lr:g})"),
        "align_betas": Setting(train["betas"].value, f"{rule} ({train['betas'].source})"),
        "align_weight_decay": Setting(train["weight_decay"].value,
                                      f"{rule} ({train['weight_decay'].source})"),
        "align_momentum": Setting(train["momentum"].value, f"{rule} ({train['momentum'].source})"),
        "align_lr_steps": Setting((20, 40, 60), f"{ORCA_REF} src/configs/*.yaml "
                                  "no_warmup_scheduler StepLR sched [20, 40, 60]; "
                                  "task_configs.py:get_scheduler"),
        "align_lr_gamma": Setting(0.2, f"{ORCA_REF} src/configs/*.yaml no_warmup_scheduler "
                                  "base 0.2"),
    }


def _paper_train(task, method: str) -> dict[str, Setting]:
    key = task.key
    hp, table = pare_table(key)
    orca = ORCA_CONFIGS[key]
    out = {
        "epochs": Setting(int(float(hp["Epoch"])), f"{table} Epoch"),
        "batch_size": Setting(int(float(hp["Batch Size"])), f"{table} Batch Size"),
        "grad_accum": Setting(int(float(hp.get("Accum.", 1))), f"{table} Accum."),
        "accum_semantics": Setting("sum", f"{ORCA_REF} src/main.py:train_one_epoch (backward "
                                   "on the raw loss, step every accum batches); "
                                   f"{PARE_REF} main_PaRe*.py the same"),
        "optimizer": Setting(hp["Optimizer"].lower(), f"{table} Optimizer"),
        "lr": Setting(float(hp["Learning Rate"]), f"{table} Learning Rate"),
        "weight_decay": Setting(float(hp["Weight Decay"]), f"{table} Weight Decay"),
        "betas": Setting(tuple(orca["betas"]), _orca_src(key, "optimizer.params.betas")),
        "momentum": Setting(orca["momentum"], _orca_src(key, "optimizer.params.momentum")
                            + (" (used by SGD only)" if orca["optimizer"] != "SGD" else "")),
        "clip_grad": Setting(None if orca["clip"] <= 0 else float(orca["clip"]),
                             _orca_src(key, f"clip={orca['clip']}")),
        "schedule": Setting("warmup_linear", _orca_src(key, "scheduler.name=WarmupLR") +
                            "; task_configs.py:get_scheduler, stepped per batch"),
        "warmup_epochs": Setting(float(orca["warmup_epochs"]),
                                 _orca_src(key, "scheduler.params.warmup_epochs")),
        "decay_epochs": Setting(float(orca["decay_epochs"]),
                                _orca_src(key, "scheduler.params.decay_epochs")),
    }
    return out


def _profile_train(task, profile) -> dict[str, Setting]:
    d = TrainConfig()
    given = profile_train_defaults(task, profile)
    src = (f"profile {profile.name} (crossmodal.profiles.train_defaults"
           + (", the smoke recipe)" if profile.name == "smoke" else ")"))
    kit = "kit default (crossmodal.training.TrainConfig)"
    names = ("epochs", "batch_size", "grad_accum", "accum_semantics", "optimizer", "lr",
             "body_lr", "weight_decay", "betas", "momentum", "clip_grad", "schedule",
             "warmup_frac")
    return {n: Setting(given[n], src) if n in given else Setting(getattr(d, n), kit)
            for n in names if n in given or hasattr(d, n)}


#: The embedder initialisation each method's paper/code ran (``models`` builds both).
EMBEDDER_INIT = {
    "orca": ("source", f"{ORCA_REF} src/utils.py:embedder_init (train_embedder: copies "
             "RoBERTa's embedding LayerNorm / Swin's patch-embedding conv + LayerNorm)"),
    "nft": ("random", f"{ORCA_REF} src/utils.py:embedder_init (embedder_epochs 0: "
            "trunc-normal init, fresh LayerNorm)"),
    "pare": ("random", "PaRe paper Sec. 3.1 (f^t randomly initialised); the code copies the "
             f"stem ({PARE_REF} utils_PaRe.py embedder_init, `if True:`): embedder_init=source"),
}


def _model(task, method: str, profile_name: str) -> dict[str, Setting]:
    init, init_src = EMBEDDER_INIT.get(method, ("random", "kit default (the paper does not "
                                                "say; ORCA's code copies the stem only when "
                                                "it trains the embedder)"))
    out: dict[str, Setting] = {}
    if profile_name != "paper":
        out["n_tokens"] = Setting(None, "kit default (the task's patch_size)")
        out["embedder_init"] = Setting("random", "kit default")
        out["dropout"] = Setting(None, "the body's own dropout")
        return out
    key = task.key
    if task.modality == "1D":
        n, src = orca_tokens(key)
        out["n_tokens"] = Setting(n, src)
        length = task.input_shape[-1]
        if length % n:
            raise InvalidInputError(f"{key}: ORCA's N={n} does not divide the kit's input "
                                    f"length {length}")
        out["patch_size"] = Setting(length // n, f"kit input length {length} / N {n}")
    else:
        out["n_tokens"] = Setting(None, "2D: Swin's stem fixes N = (224/4)^2 = 3136 "
                                  f"({ORCA_REF} embedder.py:Embeddings2D, img 224, patch 4)")
    out["embedder_init"] = Setting(init, init_src)
    out["dropout"] = Setting(ORCA_CONFIGS[key]["drop_out"], _orca_src(key, "drop_out") +
                             " (PaRe configs: drop_out 0)")
    return out


def _loss(task) -> dict[str, Setting]:
    src = f"{ORCA_REF} src/task_configs.py:get_config ({task.key})"
    out = {"loss": Setting(task.loss, src if task.benchmark != "smoke" else "task registry")}
    for k, v in (task.loss_options or {}).items():
        out[k] = Setting(v, src)

    dense = {"1D": "parameter-free pooling over the hidden dimension (PooledDenseHead1D)",
             "2D": "1x1 conv + PixelShuffle decoder (PixelShuffleHead2D)"}[task.modality]
    out["head"] = Setting({"classification": "mean-pool + linear",
                           "multilabel": "mean-pool + linear",
                           "dense": dense if default_head(task) == "orca"
                           else "per-token linear decoder (kit)"}[task.output],
                          f"{ORCA_REF} src/embedder.py wrapper1D/wrapper2D; crossmodal.heads")
    out["input_shape"] = Setting(tuple(task.input_shape), _input_source(task))
    out["target_normalizer"] = Setting(
        task.target_normalizer,
        f"{ORCA_REF} src/data_loaders.py:load_darcy_flow y_normalizer, decoded in main.py"
        if task.target_normalizer else "none (ORCA's loader does not standardise the target)"
        if task.benchmark != "smoke" else "task registry")
    return out


#: Where each paper task's input shape comes from (ORCA's loader: what it feeds).
_INPUT_SOURCES = {
    "Advection1D": "load_pde ADV reduced_resolution=4",
    "DarcyFlow2D": "load_pde Darcy reduced_resolution=2",
    "DarcyFlow": "load_darcy_flow sub=5 (coefficient + 2 grid channels)",
    "PSICOV": "kit 128 window (ORCA load_psicov 512: see DEVIATIONS)",
    "NavierStokes1D": "kit 3 channels (ORCA load_pde 1DCFD (1, 3072): see DEVIATIONS)",
    "DiffusionReaction2D": "kit (u, v) (ORCA load_pde RD2D u -> v: see DEVIATIONS)",
    "Burgers1D": "load_pde Burgers reduced_resolution=1 (see DEVIATIONS)",
}


def _input_source(task) -> str:
    if task.benchmark == "smoke":
        return "task registry"
    return (f"{ORCA_REF} src/task_configs.py:get_config sample_shape / src/data_loaders.py:"
            + _INPUT_SOURCES.get(task.key, "the task's loader"))


def _stage(task, method: str, profile_name: str) -> tuple[dict[str, Setting], dict[str, Setting]]:

    cfg = get_method(method).config
    kit = "kit default"
    stage = {f.name: Setting(getattr(cfg, f.name), kit) for f in dataclasses.fields(cfg)}
    notes: dict[str, Setting] = {}
    # the profile's stage options (crossmodal.profiles.METHOD_PROFILE_OPTIONS), as runs use
    for name, value in method_defaults(method, profile_name).items():
        if name in stage:
            stage[name] = Setting(value, f"profile {profile_name} "
                                  "(crossmodal.profiles.METHOD_PROFILE_OPTIONS)")
    if profile_name != "paper" or task.key not in ORCA_CONFIGS:
        return stage, notes
    key, orca = task.key, ORCA_CONFIGS[task.key]
    if method == "orca":
        stage["align_epochs"] = Setting(orca["embedder_epochs"], _orca_src(key, "embedder_epochs"))
        stage["align_samples_per_class"] = Setting(orca["maxsamples"], _orca_src(key, "maxsamples"))
        stage["align_score"] = Setting("otdd", _orca_src(key, "objective=otdd-exact"))
        stage["otdd_inner"] = Setting("exact", _orca_src(key, "objective=otdd-exact"))
        stage["proxy_samples"] = Setting(5000, f"{ORCA_REF} embedder.py:get_tgt_model "
                                         "get_data(..., maxsize=5000)")
        stage["pseudo_label_k"] = Setting(10, f"{ORCA_REF} embedder.py:infer_labels k=10")
        if "inner_ot_debiased" in stage:
            stage["inner_ot_debiased"] = Setting(True, f"{ORCA_REF} embedder.py:otdd "
                                                 "inner_ot_debiased=True")
        else:
            notes["inner_ot_debiased"] = Setting(True, f"{ORCA_REF} embedder.py:otdd (not yet an "
                                                 "option of the kit's ORCA)")
        notes["otdd"] = Setting("p=2, inner_ot_p=2, entreg=0.1, debiased_loss=True",
                                f"{ORCA_REF} embedder.py:otdd")
        notes["alignment_labels"] = Setting(
            "k-means (k=10) pseudo-labels" if task.output != "classification" else "labels",
            f"{ORCA_REF} task_configs.py:get_config infer_label "
            f"({'True' if task.output != 'classification' else 'False'})")
        stage.update(orca_alignment_optimizer(task))
    elif method in ("pare", "gap_adaptive_b"):
        a26 = pare_a26(key)
        if "k_initial (k0)" in a26:
            stage["k0"] = Setting(int(float(a26["k_initial (k0)"])), "PaRe A.2.6 k0")
            stage["k_final"] = Setting(int(float(a26["k_final"])), "PaRe A.2.6 k_final")
            stage["beta1"] = Setting(float(a26["beta1"]), "PaRe A.2.6 beta1")
            stage["beta2"] = Setting(float(a26["beta2"]), "PaRe A.2.6 beta2")
        stage["k_schedule"] = Setting("linear", "PaRe Alg. 1 (k = int(k0 (1 - ep/E)))")
        stage["lambda_mode"] = Setting("k_over_N", "PaRe Alg. 1 (lambda = k/N)")
        stage["tau"] = Setting(0.9, f"{PARE_REF} main_PaRe.py SubsetOperator tau (the paper "
                               "gives none)")
        for name, (value, src) in pare_code_values(task).items():
            notes[f"code_{name}"] = Setting(value, src)
    elif method == "recraft":
        rt = recraft_table(key)
        if rt:
            stage["kappa"] = Setting(float(rt["kappa (row label lost)"]),
                                     "RECRAFT Table 8/9 kappa (backbone "
                                     f"{rt.get('Backbone', '?')})")
            stage["fa_epochs"] = Setting(int(float(rt["FA epoch"])), "RECRAFT Table 8/9 FA epoch")
            stage["fld_epochs"] = Setting(int(float(rt["FLD epoch"])),
                                          "RECRAFT Table 8/9 FLD epoch")
            bins = rt.get("Label discretization", "-")
            if bins not in ("-", ""):
                stage["label_bins"] = Setting(int(float(bins)),
                                              "RECRAFT Table 8/9 Label discretization")
    elif method == "mona":
        for name in stage:
            stage[name] = Setting(stage[name].value, "kit default (MoNA's settings are not "
                                  "given in the slides or papers the kit has)")
    return stage, notes


def pare_code_values(task) -> dict[str, tuple[Any, str]]:
    """The values of PaRe's released code for a task (options; the paper profile ignores them).

    Keys: ``beta2``, ``k0``/``k_final`` (the code's k = int(begin - end * ep / E)),
    ``topk_switch_epoch`` (Gumbel selection before it, plain top-k after), and for 1D tasks
    ``source_tokens`` (32-token CoNLL features, not tiled).
    """
    out: dict[str, tuple[Any, str]] = {}
    if task.benchmark != "NAS-Bench-360":
        return out  # the released code has configs for NAS-Bench-360 only
    if task.modality == "1D":
        out["beta2"] = PARE_CODE["beta2_1d"]
        (k0, kf), src = PARE_CODE["k_1d"]
        out["k0"], out["k_final"] = (k0, src), (kf, src)
        out["topk_switch_epoch"] = PARE_CODE["topk_switch_epoch_1d"]
        out["source_tokens"] = PARE_CODE["source_tokens_1d"]
        return out
    dense = task.output == "dense"
    out["beta2"] = PARE_CODE["beta2_dense" if dense else "beta2_2d_classification"]
    kk = {"DarcyFlow": "k_darcy", "Cosmic": "k_cosmic"}.get(
        task.key, None if dense else "k_2d_classification")
    if kk is not None:
        (k0, kf), src = PARE_CODE[kk]
        out["k0"], out["k_final"] = (k0, src), (kf, src)
    out["topk_switch_epoch"] = PARE_CODE["topk_switch_epoch_2d"]
    return out


def train_defaults(task: Any, profile: str | Any) -> dict:
    """Keyword arguments for :class:`crossmodal.training.TrainConfig` of a task in a profile.

    ``paper``: the protocol table (:func:`resolve`): PaRe Tables 12/13 plus ORCA's configs
    (summed accumulation, WarmupLR, betas (0.9, 0.98), per-task momentum and clipping).
    ``smoke`` / ``lab``: :func:`crossmodal.profiles.train_defaults` (the smoke recipe; the lab
    profile's values).

    Raises
    ------
    crossmodal.errors.UnknownNameError
        For a task without paper settings in the paper profile (lists the paper tasks).
    """
    spec = get_task(task) if isinstance(task, str) else task
    prof = get_profile(profile) if isinstance(profile, str) else profile
    if prof.name == "paper":
        if spec.key not in ORCA_CONFIGS or spec.key not in paper_hyperparameters():
            raise unknown_name("paper task", spec.key, paper_tasks())
        return resolve(spec, "nft", "paper").train_kwargs()
    return profile_train_defaults(spec, prof)


def resolve(task: str | Any, method: str = "nft", profile: str = "paper") -> Protocol:
    """The resolved protocol of one (task, method, profile).

    Raises
    ------
    crossmodal.errors.UnknownNameError
        For an unknown task, method or profile, or a task without paper settings in the
        paper profile (the message lists the valid names).
    """
    spec = get_task(task) if isinstance(task, str) else task
    prof = get_profile(profile)
    if method not in METHODS:
        raise unknown_name("method", method, list(METHODS))
    if prof.name == "paper" and spec.key not in ORCA_CONFIGS:
        raise unknown_name("paper task", spec.key, paper_tasks())
    proto = Protocol(spec.key, method, prof.name)
    proto.train = (_paper_train(spec, method) if prof.name == "paper"
                   else _profile_train(spec, prof))
    proto.model = _model(spec, method, prof.name)
    proto.loss = _loss(spec)
    proto.stage, proto.notes = _stage(spec, method, prof.name)
    if prof.name == "paper":
        rt = recraft_table(spec.key)
        if rt:
            proto.notes["recraft_backbone"] = Setting(rt.get("Backbone"), "RECRAFT Table 8/9")
    return proto


def format_protocol(proto: Protocol) -> str:
    """A readable listing: one ``name  value  (source)`` line per setting, by section."""
    lines = [f"{proto.task} / {proto.method} / profile {proto.profile}"]
    titles = {"train": "fine-tuning", "model": "model", "loss": "task loss and head",
              "stage": f"method stages ({proto.method} options)", "notes": "notes"}
    for part, title in titles.items():
        items = getattr(proto, part)
        if not items:
            continue
        lines.append(f"\n[{title}]")
        width = max(len(k) for k in items)
        for k, s in items.items():
            v = list(s.value) if isinstance(s.value, tuple) else s.value
            lines.append(f"  {k.ljust(width)}  {v!r:<14}  ({s.source})")
    return "\n".join(lines)
