"""The cross-modal model: task embedder -> pretrained body -> task head (ORCA's stage 1).

``build_model(task, body)`` wires the three parts so that the embedder produces the body's
width and the head receives the body's output width and sequence length.

ORCA's architecture choices and where they enter (``sjunhongshen/ORCA`` ``src/embedder.py``,
``src/utils.py``):

* token count: ``n_tokens`` is ORCA's ``target_seq_len``; the 1D patch is the smallest
  divisor of the input length that fits it (:func:`crossmodal.embedders.orca_patch_size`).
  2D tasks ignore it, as ORCA's 2D embedder does (Swin: 224 px, patch 4, 3136 tokens).
* embedder initialisation: ``embedder_init="source"|"random"``
  (:func:`crossmodal.embedders.init_embedder`).
* body dropout: ``dropout`` (ORCA and PaRe run ``drop_out: 0``; None keeps the body's).
* heads: classification and multi-label heads are ORCA's (mean over tokens + linear) in
  both modes; dense heads are ``head="orca"`` (ORCA's parameter-free 1D pooling, the 2D
  1x1 conv + PixelShuffle decoder) or ``head="linear"`` (the kit's per-token linear
  decoders). ``head=None`` picks ``"linear"`` for the ``smoke`` tasks (so their models and
  numbers stay as they were) and ``"orca"`` for every paper task.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from crossmodal.bodies import Body, load_body
from crossmodal.embedders import (
    EMBEDDER_INITS,
    Embedder1D,
    Embedder2D,
    init_embedder,
    orca_patch_size,
)
from crossmodal.errors import InvalidInputError, unknown_name
from crossmodal.heads import (
    DenseHead1D,
    DenseHead2D,
    PixelShuffleHead2D,
    PooledDenseHead1D,
    PooledLinearHead,
    TargetDecodedHead,
)
from crossmodal.tasks import TaskSpec, get_task

HEAD_KINDS = ("linear", "orca")
#: Swin's stem: 224 x 224 images in 4 x 4 patches (ORCA's ``wrapper2D`` for ``weight: base``).
SWIN_IMAGE_SIZE, SWIN_PATCH = 224, 4


class CrossModalModel(nn.Module):
    """``head(body(embedder(x)))`` with input validation.

    Attributes
    ----------
    embedder, body, head : the three parts (``body`` may be frozen by a method).
    extras : method-specific modules (a ``ModuleDict``), trained and checkpointed with the rest.
    task : the :class:`~crossmodal.tasks.TaskSpec` the model was built for.
    architecture : how it was built (n_tokens, patch_size, embedder_init, dropout, head, ...),
        JSON-able, for ``results.json``.
    """

    def __init__(self, embedder: nn.Module, body: Body, head: nn.Module, task: TaskSpec,
                 architecture: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.embedder, self.body, self.head = embedder, body, head
        self.task = task
        self.architecture = dict(architecture or {})
        # Methods attach their own trainable parts here (PaRe's gate and source head, ...)
        # so that optimisers and checkpoints see them with the rest of the model.
        self.extras = nn.ModuleDict()

    def check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != tuple(self.task.input_shape):
            raise InvalidInputError(
                f"task {self.task.key} expects inputs (B, {', '.join(map(str, self.task.input_shape))}), "
                f"got {tuple(x.shape)}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Body output tokens ``(B, N, D)``."""
        self.check_input(x)
        return self.body(self.embedder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


TARGET_NORMALIZERS = ("unit_gaussian",)


def decoded_head(task: TaskSpec, head: nn.Module) -> nn.Module:
    """``head`` wrapped in the task's target decoder (see :class:`TargetDecodedHead`)."""
    if task.target_normalizer not in TARGET_NORMALIZERS:
        raise unknown_name("target_normalizer", str(task.target_normalizer), TARGET_NORMALIZERS)
    if task.output != "dense":
        raise InvalidInputError(f"{task.key}: a target normaliser needs a dense task")
    return TargetDecodedHead(head, tuple(task.output_shape))


def fit_target_normalizer(model: nn.Module, y_train: Any) -> bool:
    """Fit the model's target decoder on the training targets (True if it has one).

    Called once per run after the model is built, before any stage trains (runner.run), so
    every method's head predicts in the same standardised space, as ORCA's Darcy Flow does.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, TargetDecodedHead):
        return False
    head.fit(torch.as_tensor(np.asarray(y_train)))
    return True


def make_embedder(
    task: TaskSpec, body: Body, *, patch_size: int | None = None, image_size: int | None = None,
    n_tokens: int | None = None,
) -> nn.Module:
    """ORCA's embedder for ``task`` in front of ``body``.

    1D: patch ``patch_size``, else the ORCA patch fitting ``n_tokens`` (ORCA's
    target_seq_len), else the task's default. 2D: Swin bodies get Swin's own 224 px / p = 4
    stem geometry (a different explicit ``patch_size``/``image_size`` is an error); other
    bodies use the task's patch and image size unless given.
    """
    common = dict(
        in_channels=task.in_channels,
        hidden_size=body.hidden_size,
        position_embeddings=body.position_embeddings_copy(),
        position_offset=body.position_offset,
        max_positions=body.max_positions,
    )
    if task.modality == "1D":
        if body.kind == "swin":
            raise InvalidInputError(
                f"task {task.key} is 1D but body {body.name} is Swin, which runs on 2D grids: "
                "use a text body (roberta-base, minilm) for 1D tasks")
        length = task.input_shape[-1]
        if patch_size is not None and n_tokens is not None:
            raise InvalidInputError("give either patch_size or n_tokens for a 1D task, not both")
        if n_tokens is not None:
            patch_size = orca_patch_size(length, n_tokens)
        return Embedder1D(patch_size=patch_size or task.patch_size, seq_len=length, **common)
    if body.kind == "swin":
        if patch_size not in (None, SWIN_PATCH) or image_size not in (None, SWIN_IMAGE_SIZE):
            raise InvalidInputError(
                f"the Swin body takes {SWIN_IMAGE_SIZE} px images in {SWIN_PATCH} px patches "
                f"(its pretrained geometry); got patch_size={patch_size}, image_size="
                f"{image_size}: leave them unset")
        patch_size, image_size = SWIN_PATCH, SWIN_IMAGE_SIZE
    return Embedder2D(
        patch_size=patch_size or task.patch_size,
        image_size=image_size or task.image_size or task.input_shape[-1],
        **common,
    )


def default_head(task: TaskSpec) -> str:
    """``"linear"`` for smoke tasks (unchanged since the kit began), ``"orca"`` otherwise."""
    return "linear" if task.benchmark == "smoke" else "orca"


def make_head(task: TaskSpec, out_size: int, num_tokens: int, kind: str = "linear", *,
              stride: int | None = None) -> nn.Module:
    """The head for ``task`` given the body's output width and number of tokens.

    ``kind="orca"``: ORCA's dense predictors (``stride``: the 2D decoder's upsampling, the
    embedder's image size over the output grid side).
    """
    if kind not in HEAD_KINDS:
        raise unknown_name("head", kind, HEAD_KINDS)
    if task.output in ("classification", "multilabel"):
        return PooledLinearHead(out_size, task.num_outputs)
    if task.modality == "1D":
        if kind == "orca":
            return PooledDenseHead1D(task.num_outputs, task.output_shape[-1], num_tokens)
        return DenseHead1D(out_size, task.num_outputs, task.output_shape[-1], num_tokens)
    if kind == "orca":
        if stride is None:
            raise InvalidInputError("the ORCA 2D head needs the decoder stride")
        return PixelShuffleHead2D(out_size, task.num_outputs, task.output_shape[-2:],
                                  num_tokens, stride)
    return DenseHead2D(out_size, task.num_outputs, task.output_shape[-2:], num_tokens)


def build_model(
    task: TaskSpec | str,
    body: Body | str = "minilm",
    *,
    n_tokens: int | None = None,
    patch_size: int | None = None,
    image_size: int | None = None,
    embedder_init: str = "random",
    dropout: float | None = None,
    head: str | None = None,
    num_layers: int | None = None,
    seed: int = 0,
) -> CrossModalModel:
    """Build embedder + body + head for a task.

    Parameters
    ----------
    task : a TaskSpec or a registry key.
    body : a loaded :class:`~crossmodal.bodies.Body` or a body name (``"minilm"``, ...).
    n_tokens : ORCA's ``target_seq_len`` for 1D tasks: the patch is the smallest divisor of
        the input length giving at most this many tokens (None: the task's patch size).
    patch_size, image_size : override the task's embedder defaults.
    embedder_init : ``"random"`` or ``"source"`` (copy the body's pretrained input layer;
        see :mod:`crossmodal.embedders`).
    dropout : the body's dropout rate (None: the body's default). Applied in place when
        ``body`` is a loaded Body.
    head : ``"orca"`` or ``"linear"`` dense heads (None: :func:`default_head`).
    num_layers : with a body name, keep only this many layers (fast tests of the real
        architectures; see :func:`crossmodal.bodies.load_body`).
    seed : seeds the random initialisation of the embedder and head.
    """
    task = get_task(task) if isinstance(task, str) else task
    if embedder_init not in EMBEDDER_INITS:
        raise unknown_name("embedder_init", embedder_init, EMBEDDER_INITS)
    if isinstance(body, str):
        body = load_body(body, seed=seed, dropout=dropout, num_layers=num_layers)
    else:
        if num_layers is not None:
            raise InvalidInputError("num_layers applies to a body name, not a loaded body")
        if dropout is not None:
            body.set_dropout(dropout)
    head_kind = head or default_head(task)
    torch.manual_seed(seed)
    embedder = make_embedder(task, body, patch_size=patch_size, image_size=image_size,
                             n_tokens=n_tokens)
    init_embedder(embedder, body.source_embedder, embedder_init)
    with torch.no_grad():  # one dummy pass tells the head how many tokens the body emits
        n_out = body(embedder(torch.zeros(1, *task.input_shape))).shape[1]
    stride = None
    if task.modality == "2D":
        stride = embedder.image_size // int(round(n_out**0.5))
    head_module = make_head(task, body.out_size, n_out, head_kind, stride=stride)
    if task.target_normalizer is not None:
        head_module = decoded_head(task, head_module)
    architecture = dict(
        body=body.name, n_tokens=embedder.num_tokens, patch_size=embedder.patch_size,
        n_tokens_requested=n_tokens, embedder_init=embedder_init, dropout=body.dropout,
        head=head_kind, body_tokens_out=int(n_out), num_layers=body.num_layers,
    )
    if task.modality == "2D":
        architecture["image_size"] = embedder.image_size
    return CrossModalModel(embedder, body, head_module, task, architecture)
