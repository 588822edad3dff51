"""Checks that run before any work: option values, run arguments and data splits.

Everything here raises :class:`crossmodal.errors.InvalidInputError` with a one-line message
that names the bad value and how to fix it, so that a typo costs no training time (a bad
``--out`` used to be found only after ORCA's whole alignment stage).

* :func:`coerce_options` parses ``-o``/``-t`` values (strings from the command line) against
  the type of the config dataclass's field, and type-checks values given from Python.
* :func:`check_seed`, :func:`check_out_dir`: the run's seed and output folder.
* :func:`validate_splits` / :func:`validate_split`: the one validation of data arrays used by
  the task loaders (:meth:`crossmodal.tasks.TaskSpec.load`) and by
  :func:`crossmodal.runner.run` (and so the CLI and the notebooks, which go through it),
  for loaded data and for user-supplied ``splits=`` alike.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import numbers
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.errors import InvalidInputError

#: The largest seed every generator accepts (numpy's ``default_rng`` and torch take 0..2**64-1
#: and 0..2**63-1, ``np.random.seed`` 0..2**32-1): the common range.
MAX_SEED = 2**32 - 1

_TRUE = ("true", "1", "yes", "y", "on")
_FALSE = ("false", "0", "no", "n", "off")
_NONE = ("none", "null")


# --------------------------------------------------------------------------- options


def _is_optional(tp: Any) -> tuple[bool, tuple[Any, ...]]:
    """(does ``tp`` admit None, its other members)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        rest = tuple(a for a in args if a is not type(None))
        return len(rest) < len(args), rest
    return False, (tp,)


def type_name(tp: Any) -> str:
    """A readable name of a field type (``"an integer or none"``, ``"true or false"``)."""
    optional, members = _is_optional(tp)
    names = []
    for t in members:
        origin = typing.get_origin(t)
        if t is bool:
            names.append("true or false")
        elif t is int:
            names.append("an integer")
        elif t is float:
            names.append("a finite number")
        elif t is str:
            names.append("a string")
        elif origin is typing.Literal:
            names.append("one of " + ", ".join(map(str, typing.get_args(t))))
        elif origin in (tuple, list) or t in (tuple, list):
            names.append("a list such as (0.1, 0.3)")
        elif origin is dict or t is dict:
            names.append("a dict such as {'lr': 0.01}")
        else:
            names.append(f"a {getattr(t, '__name__', str(t))}")
    return " or ".join(names + (["none"] if optional else []))


def _example(tp: Any, default: Any) -> str:
    _, members = _is_optional(tp)
    t = members[0] if members else tp
    if default is not None and default is not dataclasses.MISSING and _fits(default, t):
        return str(default).lower() if isinstance(default, bool) else str(default)
    if t is bool:
        return "false"
    if t is int:
        return "5"
    if t is float:
        return "0.001"
    if typing.get_origin(t) is typing.Literal:
        return str(typing.get_args(t)[0])
    return "none"


def _fits(value: Any, t: Any) -> bool:
    if t is bool:
        return isinstance(value, (bool, np.bool_))
    if t is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if t is float:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if t is str:
        return isinstance(value, str)
    return True


def _parse_text(text: str, t: Any) -> Any:
    """Parse one command-line string as type ``t``; raise ValueError when it does not fit."""
    s = text.strip()
    origin = typing.get_origin(t)
    if t is bool:
        low = s.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(text)
    if t is int:
        return int(s)  # "1.5" and "abc" raise ValueError
    if t is float:
        value = float(s)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    if t is str or origin is typing.Literal:
        if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
            s = s[1:-1]  # -o gate='fc' from a shell that kept the quotes
        if origin is typing.Literal and s not in map(str, typing.get_args(t)):
            raise ValueError(text)
        return s
    value = ast.literal_eval(s)  # containers: tuples, lists, dicts
    return _check_value(value, t)


def _check_value(value: Any, t: Any) -> Any:
    """A Python value checked (and mildly normalised) against type ``t``; ValueError if not."""
    origin = typing.get_origin(t)
    if t in (bool, int, float, str):
        if isinstance(value, str) and t is not str:
            return _parse_text(value, t)  # run(method_options={"train_layernorm": "false"})
        if not _fits(value, t):
            raise ValueError(value)
        if t is float and not math.isfinite(float(value)):
            raise ValueError(value)
        if t is int:
            return int(value)
        if t is bool:
            return bool(value)
        return value
    if origin is typing.Literal:
        if value not in typing.get_args(t):
            raise ValueError(value)
        return value
    if origin in (tuple, list) or t in (tuple, list):
        if isinstance(value, str):
            value = ast.literal_eval(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, (tuple, list)):
            raise ValueError(value)
        args = [a for a in typing.get_args(t) if a is not Ellipsis]
        if args:
            value = [_check_value(v, args[0]) for v in value]
        return tuple(value) if (origin or t) is tuple else list(value)
    if origin is dict or t is dict:
        if isinstance(value, str):
            value = ast.literal_eval(value)
        if not isinstance(value, dict):
            raise ValueError(value)
        return value
    return value  # a type we do not know how to check: leave it to the config's own checks


def coerce_value(name: str, value: Any, tp: Any, *, default: Any = None, flag: str = "-o",
                 label: str = "option {name}") -> Any:
    """``value`` parsed (strings) or checked (Python values) against the field type ``tp``.

    Booleans accept ``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case); ``none`` or
    ``null`` give None where the field admits it. A value that does not fit raises an
    :class:`InvalidInputError` naming the option, its type and an example.
    """
    optional, members = _is_optional(tp)
    if value is None and optional:
        return None
    if isinstance(value, str) and optional and value.strip().lower() in _NONE:
        return None
    for t in members:
        try:
            if isinstance(value, str):
                return _parse_text(value, t)
            return _check_value(value, t)
        except (ValueError, SyntaxError, TypeError):
            continue
    raise InvalidInputError(
        f"{label.format(name=name)} must be {type_name(tp)}, got {value!r}; "
        f"e.g. {flag} {name}={_example(tp, default)}"
    )


def coerce_options(config_class: type, options: Mapping[str, Any] | None, *, flag: str = "-o",
                   label: str = "option {name}") -> dict[str, Any]:
    """Every option of ``options`` parsed/checked against ``config_class``'s field types.

    Keys that are not fields of ``config_class`` are passed through unchanged, so that the
    caller's own "unknown option" message (which lists the valid ones) reports them.
    ``label`` names an option in messages (``"option {name} of method 'orca'"``).
    """
    hints = typing.get_type_hints(config_class)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    out = {}
    for name, value in (options or {}).items():
        f = fields.get(name)
        if f is None:
            out[name] = value
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        out[name] = coerce_value(name, value, hints.get(name, Any), default=default, flag=flag,
                                 label=label)
    return out


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["name=value", ...]`` -> ``{name: "value"}``; the values stay strings.

    They are parsed later against the option's declared type (:func:`coerce_options`), so
    that ``false`` becomes False for a boolean and ``abc`` is refused for an integer.
    """
    out = {}
    for item in items or []:
        if "=" not in item:
            raise InvalidInputError(f"option {item!r} must look like name=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise InvalidInputError(f"option {item!r} has no name; write name=value")
        out[key] = value
    return out


# --------------------------------------------------------------------------- run arguments


def check_seed(seed: Any) -> int:
    """A seed in ``[0, 2**32 - 1]`` (what numpy, torch and Python's ``random`` all accept)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise InvalidInputError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}; "
                                "e.g. --seed 0")
    if not 0 <= int(seed) <= MAX_SEED:
        raise InvalidInputError(f"seed must lie in [0, {MAX_SEED}] (2**32 - 1), got {seed}; "
                                "e.g. --seed 0")
    return int(seed)


def check_out_dir(out: str | Path) -> Path:
    """``out`` as a folder we can write into, created if needed; checked before any work.

    Raises an :class:`InvalidInputError` when it is a file, or when it (or a parent) cannot
    be created or written (read-only file system, permissions).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} is a file, not a folder; give a folder path "
                                "(it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InvalidInputError(f"--out {out}: a parent of it is a file; give a folder "
                                "path") from None
    except OSError as err:
        raise InvalidInputError(f"cannot create the output folder {out} ({err.strerror}); "
                                "choose a writable --out") from None
    probe = out / f".write-test-{os.getpid()}.tmp"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InvalidInputError(f"cannot write into the output folder {out} ({err.strerror}); "
                                "choose a writable --out") from None
    return out


# --------------------------------------------------------------------------- data splits


def _as_float32(spec, name: str, what: str, a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == np.float32:
        return arr
    if arr.dtype.kind not in "biuf":
        raise InvalidInputError(f"{spec.key}/{name}: {what} must be real numbers, got dtype "
                                f"{arr.dtype}")
    return arr.astype(np.float32)  # numpy's default float64 would fail in the float32 model


def _as_arrays(spec, name: str, pair: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = pair
    except (TypeError, ValueError):
        raise InvalidInputError(f"{spec.key}/{name}: a split must be a pair (x, y) of arrays, "
                                f"got {type(pair).__name__}") from None
    x = _as_float32(spec, name, "inputs", x)
    y = np.asarray(y)
    if spec.output == "classification":
        if y.dtype.kind in "iu":
            y = y.astype(np.int64, copy=False)  # cross-entropy wants int64 class indices
    elif y.dtype.kind in "biuf":
        y = y.astype(np.float32, copy=False)
    return x, y


def validate_split(spec, name: str, x: np.ndarray, y: np.ndarray) -> None:
    """Check one split against the task spec: lengths, shapes, finite values, label range.

    Checks: as many targets as inputs; at least one sample; inputs ``(n, C, ...)`` with the
    task's channels and rank; finite inputs; classification labels integers in
    ``[0, num_outputs)``; multilabel targets ``(n, K)`` of zeros and ones; dense targets of
    the task's shape; finite targets. Raises :class:`InvalidInputError` saying what is wrong.
    """
    if len(x) != len(y):
        raise InvalidInputError(f"{spec.key}/{name}: {len(x)} inputs but {len(y)} targets")
    if len(x) == 0:
        raise InvalidInputError(f"{spec.key}/{name}: the split is empty; give at least one "
                                "sample")
    if x.ndim != len(spec.input_shape) + 1 or x.shape[1] != spec.in_channels:
        raise InvalidInputError(
            f"{spec.key}/{name}: inputs have shape {x.shape}, expected (n, {spec.in_channels}, ...) "
            f"with per-sample shape like {spec.input_shape}"
        )
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(1).sum())
        raise InvalidInputError(
            f"{spec.key}/{name}: {bad} input samples contain NaN or inf; clean or drop them "
            "before training (for a task's data file: `crossmodal data verify` checks it)"
        )
    if spec.output == "classification":
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise InvalidInputError(
                f"{spec.key}/{name}: classification targets must be integer labels of shape (n,), "
                f"got {y.dtype} {y.shape}"
            )
        if y.min() < 0 or y.max() >= spec.num_outputs:
            raise InvalidInputError(
                f"{spec.key}/{name}: labels must lie in [0, {spec.num_outputs}), "
                f"got [{y.min()}, {y.max()}]"
            )
        return
    if spec.output == "multilabel":
        if y.shape[1:] != (spec.num_outputs,):
            raise InvalidInputError(f"{spec.key}/{name}: multilabel targets must have shape "
                                    f"(n, {spec.num_outputs}), got {y.shape}")
        if not np.isin(y, (0, 1)).all():
            raise InvalidInputError(f"{spec.key}/{name}: multilabel targets must be 0 or 1, "
                                    f"found values in [{y.min()}, {y.max()}]")
        return
    if y.shape[1:] != spec.output_shape and not (
        spec.output == "dense" and y.ndim == len(spec.output_shape) + 1
        and y.shape[1] == spec.output_shape[0]
    ):
        raise InvalidInputError(
            f"{spec.key}/{name}: targets have shape {y.shape}, expected (n, *{spec.output_shape})"
        )
    if not np.isfinite(y).all():
        raise InvalidInputError(f"{spec.key}/{name}: targets contain NaN or inf")


def validate_splits(spec, splits: Any, *, required: tuple[str, ...] = ("train", "test")
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every split checked by :func:`validate_split`; returns them as float32/int64 arrays.

    Lists become arrays, float64 (numpy's default) and integer inputs become float32,
    integer class labels int64, and regression/multilabel targets float32; nothing else is
    changed (no copy when the dtype is already right).
    """
    if not isinstance(splits, Mapping):
        raise InvalidInputError(f"splits must be a dict {{'train': (x, y), 'test': (x, y)}}, "
                                f"got {type(splits).__name__}")
    missing = [s for s in required if s not in splits]
    if missing:
        raise InvalidInputError(f"splits has no {', '.join(map(repr, missing))} split; give "
                                "{'train': (x, y), 'test': (x, y)}")
    out = {}
    for name, pair in splits.items():
        x, y = _as_arrays(spec, name, pair)
        validate_split(spec, name, x, y)
        out[name] = (x, y)
    return out


def check_input_shapes(spec, splits: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Every split's per-sample input shape equals the one the model is built for."""
    want = tuple(spec.input_shape)
    for name, (x, _) in splits.items():
        if tuple(x.shape[1:]) != want:
            raise InvalidInputError(
                f"{spec.key}/{name}: inputs have per-sample shape {tuple(x.shape[1:])}, the "
                f"task (and the model built for it) expects {want}"
            )
