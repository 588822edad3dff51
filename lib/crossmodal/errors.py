"""Exceptions with messages that say what is wrong and how to fix it."""

from __future__ import annotations


class CrossmodalError(Exception):
    """Base class of the kit's own errors."""


class DataMissingError(CrossmodalError, FileNotFoundError):
    """A task's data files are not on disk; the message names the command that fetches them."""


class UnknownNameError(CrossmodalError, KeyError):
    """An unknown task, method, body or profile name; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0]) if self.args else ""


class InvalidInputError(CrossmodalError, ValueError):
    """Bad input: wrong shapes, NaN/inf values, mismatched lengths."""


class NonFiniteLossError(CrossmodalError, FloatingPointError):
    """Training produced a NaN or infinite loss."""


def unknown_name(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> UnknownNameError:
    """Build an :class:`UnknownNameError` that lists the valid names."""
    return UnknownNameError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(valid))}")
