"""The identity of one run of a notebook's grid: a stable hash of its full configuration.

A run is one (task, method with its full config, body, seed, profile, epochs, subset sizes,
training overrides, probe). Its folder under a sweep's runs directory is named
``<task>__<method>__seed<S>__<hash>``: readable, and unique per configuration, so two
notebooks (or two variants of one notebook) that ask for the same configuration share one
run, and a finished run is never run twice.

The hash is the first 12 hex digits of the SHA-256 of the configuration as canonical JSON
(sorted keys, no spaces). The label a notebook gives a variant (``"kappa=0.3"``) is not part
of it; the code version is not either (rerun into a new folder after changing the kit).
"""

from __future__ import annotations

import hashlib
import json
import re
import types
from typing import Any

#: Length of the configuration hash in a run's folder name (48 bits: no collisions in any
#: grid of realistic size).
HASH_LENGTH = 12


def canonical_json(obj: Any) -> str:
    """``obj`` as JSON with sorted keys and no whitespace (tuples become lists)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)


def config_hash(identity: dict[str, Any]) -> str:
    """The first :data:`HASH_LENGTH` hex digits of SHA-256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:HASH_LENGTH]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(name)).strip("_") or "run"


def run_id(identity: dict[str, Any]) -> str:
    """``<task>__<method>__seed<S>__<hash>``: the folder name of a run."""
    return (f"{_slug(identity['task'])}__{_slug(identity['method'])}__seed{identity['seed']}"
            f"__{config_hash(identity)}")


def probe_key(probe: Any) -> str | None:
    """What identifies a probe: its class and its plain (str/number/bool/None) settings.

    Probes change what a run records (``probes`` in results.json), so two runs that differ
    only in their probe are different runs.
    """
    if probe is None:
        return None
    if isinstance(probe, types.FunctionType):
        return f"{probe.__module__}.{probe.__qualname__}"
    cls = type(probe)
    plain = {k: v for k, v in sorted(vars(probe).items())
             if not k.startswith("_") and isinstance(v, (str, int, float, bool, type(None)))}
    return f"{cls.__module__}.{cls.__qualname__}{canonical_json(plain)}"
