r"""Pooled features of proxy (source) and target samples: the one place every method gets them.

RECRAFT (FA, the source head, the bound), MoNA (the outer loss, Algorithm 2's source
classifier) and the gap-adaptive method (the modality gap D) all compare mean-pooled *body
outputs* of proxy samples with those of target samples. Proxy sentences have different
lengths; :func:`source_tokens` pads them to a common length. The padded
positions must stay out of the body's attention, not only out of the pooling, or a sentence's
features depend on how long the other sentences of its batch are (measured on the smoke proxy:
53 % of positions are padding and attending to them moves the pooled features by 65 %,
mean cosine 0.80). So:

* :func:`source_body_features` runs the body with the proxy's ``attention_mask``
  (:meth:`crossmodal.bodies.Body.forward`) and pools over real tokens only
  (:func:`masked_mean`): a sentence's features equal those of the sentence alone, to float
  tolerance (``tests/methods/test_features.py``);
* :func:`proxy_body_features` loads a proxy, embeds it with the body's pretrained input layer
  and calls :func:`source_body_features`, in eval mode (no dropout);
* :func:`target_features` pools the model's body outputs of target inputs (target sequences
  have no padding: the embedder makes fixed-length sequences);
* :func:`eval_mode` is the context both sides use, so that source and target features are the
  same deterministic function of their inputs;
* :func:`source_tokens` / :func:`source_features` put a proxy through the body's own
  pretrained input layer (f^s: the tokenizer and word + position embeddings of a text body,
  the patch stem of Swin), the tokens that :func:`source_body_features` and ORCA's alignment
  read.

Pooling: :math:`\bar z = \sum_n m_n z_n / \sum_n m_n` with the real-token mask :math:`m`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from crossmodal.data.proxies import IMAGE_PROXIES, TEXT_PROXIES, ProxyData
from crossmodal.errors import InvalidInputError

__all__ = ["ImageSourceTokens", "eval_mode", "masked_mean", "pooled_outputs",
           "proxy_body_features", "proxy_tokens", "source_body_features", "source_features",
           "source_tokens", "target_features"]


def masked_mean(tokens: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Mean over the sequence axis of ``(n, N, D)`` tokens, over real tokens where ``mask``
    (``(n, N)``) is 1: :math:`\sum_n m_n z_n / \max(1, \sum_n m_n)`; ``mask=None``: all."""
    if tokens.ndim != 3:
        raise InvalidInputError(f"masked_mean needs tokens (n, N, D), got {tuple(tokens.shape)}")
    if mask is not None and mask.shape[0] != tokens.shape[0]:
        raise InvalidInputError(f"mask must have {tokens.shape[0]} rows, got {tuple(mask.shape)}")
    # a body that merges tokens (Swin: 3136 in, 49 out) keeps an all-ones mask meaningful only
    return _masked_token_mean(tokens, mask)


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode (dropout off) and restore each one's own mode after."""
    state = [(sub, sub.training) for m in modules for sub in m.modules()]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for sub, training in state:
            sub.training = training


def source_body_features(body: nn.Module, tokens: Tensor, mask: Tensor | None, *,
                         params: dict[str, Tensor] | None = None, batch_size: int = 64,
                         grad: bool = False) -> Tensor:
    """Proxy tokens through the body with their attention mask, pooled over real tokens.

    Parameters
    ----------
    body : a :class:`~crossmodal.bodies.Body` (its ``forward`` takes ``attention_mask``).
    tokens, mask : ``(n, N, D)`` outputs of the body's pretrained input layer and the ``(n, N)``
        real-token mask (:func:`source_tokens`); ``mask=None``: no padding.
    params : other parameters for the body (e.g. MoNA's virtually updated ones), through
        ``torch.func.functional_call``; None: the body's own.
    batch_size : samples per forward pass.
    grad : keep the autograd graph (MoNA's outer loss); else no gradients.

    The caller chooses the mode: :func:`proxy_body_features` wraps this in :func:`eval_mode`.
    """
    if mask is not None and mask.shape != tokens.shape[:2]:
        raise InvalidInputError(f"the mask must be (n, N) = {tuple(tokens.shape[:2])}, got "
                                f"{tuple(mask.shape)}")
    device = next(body.parameters()).device
    out = []
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        for i in range(0, len(tokens), batch_size):
            t = tokens[i : i + batch_size].to(device)
            m = None if mask is None else mask[i : i + batch_size].to(device)
            # only padded batches need the mask in the attention (grid bodies take none)
            kwargs = {} if m is None or bool(m.bool().all()) else {"attention_mask": m}
            z = (body(t, **kwargs) if params is None
                 else functional_call(body, params, (t,), kwargs))
            out.append(masked_mean(z, m))
    return torch.cat(out)


def proxy_tokens(body: nn.Module, proxy) -> tuple[Tensor, Tensor]:
    """The proxy through the body's pretrained input layer: tokens ``(n, N, D)`` and the real-
    token mask ``(n, N)`` (:func:`source_tokens`, cached per proxy)."""
    return source_tokens(body, proxy)


@torch.no_grad()
def proxy_body_features(body: nn.Module, proxy, batch_size: int = 64) -> Tensor:
    """Mean-pooled pretrained-body features of a proxy dataset ``(n, D_out)``, in eval mode,
    padding masked in the attention (:func:`source_body_features`)."""
    tokens, mask = proxy_tokens(body, proxy)
    with eval_mode(body):
        return source_body_features(body, tokens, mask, batch_size=batch_size).cpu()


def pooled_outputs(module: nn.Module | Callable[[Tensor], Tensor], x: Tensor,
                   batch_size: int = 64, device: torch.device | str | None = None) -> Tensor:
    r"""``module``'s token outputs ``(n, N, D)`` of ``x`` mean-pooled over the sequence,
    :math:`\bar z_i = \frac1N \sum_n z_{i,n}`, in batches of ``batch_size`` on ``device``
    (None: the module's parameters' device); gradients flow when enabled, the mode is the
    caller's. The one pooling of unpadded token sequences (the embedder's, the body's); padded
    proxy tokens go through :func:`masked_mean`."""
    if device is None:
        device = next(module.parameters()).device if isinstance(module, nn.Module) else None
    return torch.cat([module(x[i : i + batch_size].to(device)).mean(1)
                      for i in range(0, len(x), batch_size)])


def target_features(model: nn.Module, x: Tensor, batch_size: int = 64) -> Tensor:
    """Mean-pooled body features of target inputs ``(n, D_out)``; gradients flow when enabled.

    The mode is the caller's (stage-1 losses and the bound use :func:`eval_mode`)."""
    return pooled_outputs(model.features, x, batch_size, next(model.parameters()).device)


# ------------------------------------------------ a proxy through the body's input layer


class ImageSourceTokens:
    """Lazily embedded image-proxy tokens: ``tokens[idx]`` runs the pretrained stem on ``idx``.

    Swin's stem makes 3136 x 128 floats (1.6 MB) per image, so 2000 proxy images would be
    3.2 GB as one tensor; the stem is cheap (one 4x4 convolution and a LayerNorm), so the
    tokens are computed when indexed, without gradients, and never stored. Supports what the
    methods use of a ``(S, N, D)`` tensor: ``len``, ``shape``, indexing the first axis (int,
    slice, index tensor) and ``.to(device)``.
    """

    def __init__(self, images: torch.Tensor, source, num_tokens: int, dim: int,
                 device: torch.device | str | None = None) -> None:
        self.images, self.source = images, source
        self.shape = torch.Size((len(images), num_tokens, dim))
        self.dtype = torch.float32
        self.device = torch.device(device) if device is not None else source.device

    def __len__(self) -> int:
        return len(self.images)

    def dim(self) -> int:
        return 3

    def to(self, device) -> ImageSourceTokens:
        return ImageSourceTokens(self.images, self.source, self.shape[1], self.shape[2], device)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, tuple):  # e.g. tokens[idx, :n]: embed the samples, then slice
            return self[idx[0]][(slice(None), *idx[1:])]
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu()
        single = isinstance(idx, int)
        batch = self.images[idx : idx + 1] if single else self.images[idx]
        out = self.source.embed_images(batch).to(self.device)
        return out[0] if single else out


def _proxy_images(proxy: ProxyData) -> torch.Tensor:
    images = torch.as_tensor(np.asarray(proxy.images, dtype=np.float32))
    if proxy.image_norm is not None:
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)
                     for v in proxy.image_norm)
        images = (images - mean) / std
    return images


def _check_match(body, proxy: ProxyData):
    src = body.source_embedder
    if src is None:
        raise InvalidInputError(
            f"body {body.name!r} has no pretrained input layer to embed the proxy "
            f"{proxy.name!r} with: use a text body (roberta-base, minilm) or swin-base")
    if src.kind == "text" and proxy.texts is None:
        raise InvalidInputError(
            f"proxy {proxy.name!r} has images but body {body.name!r} is a text body: use a "
            f"text proxy ({', '.join(TEXT_PROXIES)}) or --body swin-base")
    if src.kind == "image" and proxy.images is None:
        raise InvalidInputError(
            f"proxy {proxy.name!r} is text but body {body.name!r} embeds images: use an image "
            f"proxy ({', '.join(IMAGE_PROXIES)}) or a text body")
    return src


@torch.no_grad()
def source_tokens(body, proxy: ProxyData, max_length: int | None = None,
                  batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The proxy through the body's own pretrained input layer: tokens (n, N, D) and mask (n, N).

    Text proxies go through the tokenizer and the pretrained word/position embeddings
    (f^s of PaRe and MoNA), at most ``max_length`` tokens (None: the proxy's
    ``max_tokens``), cached on the proxy object per (body, max_length). Image proxies go through the vision body's pretrained stem (Swin:
    resize to 224, 4x4 patch conv, LayerNorm; N = 3136), as ORCA embeds CIFAR-10; their
    tokens are an :class:`ImageSourceTokens` computed when indexed, the mask all ones.
    """
    src = _check_match(body, proxy)
    max_length = max_length if max_length is not None else proxy.max_tokens
    key = ("tokens", body.name, max_length)
    if key in proxy._cache:
        return proxy._cache[key]
    if src.kind == "image":
        images = _proxy_images(proxy)
        probe = src.embed_images(images[:1])
        tokens = ImageSourceTokens(images, src, probe.shape[1], probe.shape[2])
        mask = torch.ones(len(images), probe.shape[1], dtype=torch.long)
        proxy._cache[key] = (tokens, mask)
        return proxy._cache[key]
    toks, masks = [], []
    for i in range(0, len(proxy), batch_size):
        t, m = src.embed_texts(proxy.texts[i : i + batch_size], max_length=max_length)
        pad = max_length - t.shape[1]  # pad every batch to max_length so they concatenate
        toks.append(torch.nn.functional.pad(t, (0, 0, 0, pad)))
        masks.append(torch.nn.functional.pad(m, (0, pad)))
    proxy._cache[key] = (torch.cat(toks), torch.cat(masks))
    return proxy._cache[key]


@torch.no_grad()
def source_features(body, proxy: ProxyData, max_length: int | None = None,
                    batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled (over real tokens) source embeddings, (n, D): ORCA's proxy features.

    Image proxies: the mean of Swin's stem tokens per image (ORCA ``get_tgt_model``:
    ``swin.embeddings(Resize(224)(x))``, then ``.mean(1)``), computed in batches.
    """
    toks, mask = source_tokens(body, proxy, max_length)
    if isinstance(toks, ImageSourceTokens):
        return torch.cat([toks[i : i + batch_size].mean(1)
                          for i in range(0, len(toks), batch_size)])
    return _masked_token_mean(toks, mask)


def _masked_token_mean(out: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of body outputs ``(n, N', D)`` over the real tokens marked in the input ``mask``.

    A text body keeps the sequence length (N' = N), so the input mask applies to its outputs.
    Swin merges patches (3136 input tokens -> 49 outputs); its source tokens have no padding
    (an all-ones mask), so the plain mean is the masked mean.
    """
    if mask is None:
        return out.mean(1)
    if mask.shape[1] != out.shape[1]:
        if not bool(mask.bool().all()):
            raise InvalidInputError(
                f"the body changed the sequence length ({mask.shape[1]} -> {out.shape[1]}) of "
                "padded source tokens; a padding mask cannot be carried through it")
        return out.mean(1)
    m = mask.unsqueeze(-1).to(out.dtype)
    return (out * m).sum(1) / m.sum(1).clamp_min(1.0)
