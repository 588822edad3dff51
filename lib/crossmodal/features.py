r"""Pooled features of proxy (source) and target samples: the one place every method gets them.

RECRAFT (FA, the source head, the bound), MoNA (the outer loss, Algorithm 2's source
classifier) and the gap-adaptive method (the modality gap D) all compare mean-pooled *body
outputs* of proxy samples with those of target samples. Proxy sentences have different
lengths; :func:`crossmodal.proxies.source_tokens` pads them to a common length. The padded
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
  same deterministic function of their inputs.

Pooling: :math:`\bar z = \sum_n m_n z_n / \sum_n m_n` with the real-token mask :math:`m`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from crossmodal.errors import InvalidInputError

__all__ = ["eval_mode", "masked_mean", "proxy_body_features", "proxy_tokens",
           "source_body_features", "target_features"]


def masked_mean(tokens: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Mean over the sequence axis of ``(n, N, D)`` tokens, over real tokens where ``mask``
    (``(n, N)``) is 1: :math:`\sum_n m_n z_n / \max(1, \sum_n m_n)`; ``mask=None``: all."""
    from crossmodal.proxies import masked_token_mean

    if tokens.ndim != 3:
        raise InvalidInputError(f"masked_mean needs tokens (n, N, D), got {tuple(tokens.shape)}")
    if mask is not None and mask.shape[0] != tokens.shape[0]:
        raise InvalidInputError(f"mask must have {tokens.shape[0]} rows, got {tuple(mask.shape)}")
    # a body that merges tokens (Swin: 3136 in, 49 out) keeps an all-ones mask meaningful only
    return masked_token_mean(tokens, mask)


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
        real-token mask (:func:`crossmodal.proxies.source_tokens`); ``mask=None``: no padding.
    params : other parameters for the body (e.g. MoNA's virtually updated ones), through
        ``torch.func.functional_call``; None: the body's own.
    batch_size : samples per forward pass.
    grad : keep the autograd graph (MoNA's outer loss); else no gradients.

    The caller chooses the mode: :func:`proxy_body_features` wraps this in :func:`eval_mode`.
    """
    from torch.func import functional_call

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
    token mask ``(n, N)`` (:func:`crossmodal.proxies.source_tokens`, cached per proxy)."""
    from crossmodal.proxies import source_tokens

    return source_tokens(body, proxy)


@torch.no_grad()
def proxy_body_features(body: nn.Module, proxy, batch_size: int = 64) -> Tensor:
    """Mean-pooled pretrained-body features of a proxy dataset ``(n, D_out)``, in eval mode,
    padding masked in the attention (:func:`source_body_features`)."""
    tokens, mask = proxy_tokens(body, proxy)
    with eval_mode(body):
        return source_body_features(body, tokens, mask, batch_size=batch_size).cpu()


def target_features(model: nn.Module, x: Tensor, batch_size: int = 64) -> Tensor:
    """Mean-pooled body features of target inputs ``(n, D_out)``; gradients flow when enabled.

    The mode is the caller's (stage-1 losses and the bound use :func:`eval_mode`)."""
    device = next(model.parameters()).device
    return torch.cat([model.features(x[i : i + batch_size].to(device)).mean(1)
                      for i in range(0, len(x), batch_size)])
