"""Compatibility name: the proxy registry lives in :mod:`crossmodal.data.proxies`, how a proxy
goes through a body's pretrained input layer in :mod:`crossmodal.features`.

``from crossmodal.proxies import load_proxy, source_features`` (notebooks, older code) keeps
working; new code imports from those two modules.
"""

from crossmodal.data.proxies import (
    IMAGE_NORMS,
    IMAGE_PROXIES,
    PAPER_PROXIES,
    PROXIES,
    PROXY_MODALITY,
    PYDOC_GROUPS,
    TEXT_PROXIES,
    ProxyData,
    default_proxy,
    load_digits_proxy,
    load_proxy,
    load_pydoc_topics,
)
from crossmodal.features import ImageSourceTokens, masked_mean, source_features, source_tokens

__all__ = ["IMAGE_NORMS", "IMAGE_PROXIES", "PAPER_PROXIES", "PROXIES", "PROXY_MODALITY",
           "PYDOC_GROUPS", "TEXT_PROXIES", "ImageSourceTokens", "ProxyData", "default_proxy",
           "load_digits_proxy", "load_proxy", "load_pydoc_topics", "masked_mean",
           "source_features", "source_tokens"]
