"""The cross-modal model: task embedder -> pretrained body -> task head (ORCA's stage 1).

``build_model(task, body)`` wires the three parts so that the embedder produces the body's
width and the head receives the body's output width and sequence length.
"""

from __future__ import annotations

import torch
from torch import nn

from crossmodal.bodies import Body, load_body
from crossmodal.embedders import Embedder1D, Embedder2D
from crossmodal.errors import InvalidInputError
from crossmodal.heads import DenseHead1D, DenseHead2D, PooledLinearHead
from crossmodal.tasks import TaskSpec, get_task


class CrossModalModel(nn.Module):
    """``head(body(embedder(x)))`` with input validation.

    Attributes
    ----------
    embedder, body, head : the three parts (``body`` may be frozen by a method).
    extras : method-specific modules (a ``ModuleDict``), trained and checkpointed with the rest.
    task : the :class:`~crossmodal.tasks.TaskSpec` the model was built for.
    """

    def __init__(self, embedder: nn.Module, body: Body, head: nn.Module, task: TaskSpec) -> None:
        super().__init__()
        self.embedder, self.body, self.head = embedder, body, head
        self.task = task
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


def make_embedder(
    task: TaskSpec, body: Body, *, patch_size: int | None = None, image_size: int | None = None
) -> nn.Module:
    """ORCA's embedder for ``task`` in front of ``body`` (Swin gets its own 224 px / p = 4 stem)."""
    common = dict(
        in_channels=task.in_channels,
        hidden_size=body.hidden_size,
        position_embeddings=body.position_embeddings_copy(),
        position_offset=body.position_offset,
        max_positions=body.max_positions,
    )
    if task.modality == "1D":
        return Embedder1D(
            patch_size=patch_size or task.patch_size, seq_len=task.input_shape[-1], **common
        )
    if body.kind == "swin":
        patch_size, image_size = 4, 224
    return Embedder2D(
        patch_size=patch_size or task.patch_size,
        image_size=image_size or task.image_size or task.input_shape[-1],
        **common,
    )


def make_head(task: TaskSpec, out_size: int, num_tokens: int) -> nn.Module:
    """The head for ``task`` given the body's output width and number of tokens."""
    if task.output in ("classification", "multilabel"):
        return PooledLinearHead(out_size, task.num_outputs)
    if task.modality == "1D":
        return DenseHead1D(out_size, task.num_outputs, task.output_shape[-1], num_tokens)
    return DenseHead2D(out_size, task.num_outputs, task.output_shape[-2:], num_tokens)


def build_model(
    task: TaskSpec | str,
    body: Body | str = "minilm",
    *,
    patch_size: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
) -> CrossModalModel:
    """Build embedder + body + head for a task.

    Parameters
    ----------
    task : a TaskSpec or a registry key.
    body : a loaded :class:`~crossmodal.bodies.Body` or a body name (``"minilm"``, ...).
    patch_size, image_size : override the task's embedder defaults.
    seed : seeds the random initialisation of the embedder and head.
    """
    task = get_task(task) if isinstance(task, str) else task
    body = load_body(body, seed=seed) if isinstance(body, str) else body
    torch.manual_seed(seed)
    embedder = make_embedder(task, body, patch_size=patch_size, image_size=image_size)
    with torch.no_grad():  # one dummy pass tells the head how many tokens the body emits
        n_out = body(embedder(torch.zeros(1, *task.input_shape))).shape[1]
    head = make_head(task, body.out_size, n_out)
    return CrossModalModel(embedder, body, head, task)
