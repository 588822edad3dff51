"""Input checks shared by the dataset distances: clear errors instead of silent NaN."""

from __future__ import annotations

import torch

from crossmodal.errors import InvalidInputError

__all__ = ["as_features", "as_labels", "check_finite"]


def as_features(x: torch.Tensor, name: str, *, min_rows: int = 1) -> torch.Tensor:
    """Return ``x`` as a floating (n, d) tensor; (n, ...) inputs are flattened per sample."""
    if not torch.is_tensor(x):
        raise InvalidInputError(f"{name} must be a torch.Tensor of features (n, d), "
                                f"got {type(x).__name__}; wrap it with torch.as_tensor(...)")
    if not x.is_floating_point():
        raise InvalidInputError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; "
                                f"convert it with {name}.float()")
    if x.dim() == 0:
        raise InvalidInputError(f"{name} must have a sample axis: shape (n, d) or (n, ...), "
                                f"got a scalar")
    if x.dim() == 1:
        x = x.unsqueeze(1)  # n scalar features
    elif x.dim() > 2:
        x = x.reshape(x.shape[0], -1)
    if x.shape[0] < min_rows:
        raise InvalidInputError(f"{name} has {x.shape[0]} samples; at least {min_rows} needed")
    if x.shape[1] == 0:
        raise InvalidInputError(f"{name} has zero features per sample (shape {tuple(x.shape)})")
    check_finite(x, name)
    return x


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise :class:`InvalidInputError` if ``x`` holds NaN or infinite values."""
    bad = ~torch.isfinite(x.detach())
    if bool(bad.any()):
        n_bad = int(bad.reshape(bad.shape[0], -1).any(1).sum()) if bad.dim() else 1
        raise InvalidInputError(f"{name} contains NaN or infinite values (in {n_bad} sample(s)); "
                                f"remove or impute them before computing a distance")


def as_labels(y: torch.Tensor, n: int, name: str, features: str) -> torch.Tensor:
    """Return ``y`` as an int64 vector of length ``n`` (integer class labels)."""
    if not torch.is_tensor(y):
        raise InvalidInputError(f"{name} must be a torch.Tensor of integer labels (n,), "
                                f"got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise InvalidInputError(
            f"{name} must hold integer class labels, got dtype {y.dtype}; for continuous "
            f"targets, make pseudo-labels first (e.g. k-means on the targets) or use mmd()")
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise InvalidInputError(f"{name} must be a vector of labels (n,), got shape "
                                f"{tuple(y.shape)}; one-hot labels: use .argmax(1)")
    if y.shape[0] != n:
        raise InvalidInputError(f"{name} has {y.shape[0]} labels but {features} has {n} samples; "
                                f"they must have the same length")
    return y.long()
