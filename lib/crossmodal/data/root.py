"""Where the kit keeps its data.

The data root is chosen, in order, by an explicit argument (``--dest`` / ``--data-root``),
the environment variable ``CROSSMODAL_DATA``, or ``./data`` relative to the current
directory. Everything the kit downloads, generates or caches lives below it::

    <root>/pdebench/<PDEBench file>           real PDEBench files (crossmodal data download)
    <root>/pdebench/gen_<PDEBench file>       generated files (data_scripts/generate_pde.py)
    <root>/pdebench/cache/...                 preprocessed splits (.npy) with checksums
    <root>/nb360/<task>/...                   NAS-Bench-360 files and their prepared caches
    <root>/proxies/<name>/...                 proxy datasets (CIFAR-10, Tiny-ImageNet, ...)
    <root>/.checksums.json                    sha256, size and stamp of every downloaded or
                                              generated file (crossmodal.data.checksums)
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that selects the data root.
ENV_VAR = "CROSSMODAL_DATA"


def data_root(override: str | Path | None = None) -> Path:
    """Resolve the data root.

    Parameters
    ----------
    override : str or Path, optional
        Explicit folder; wins over the environment. ``~`` is expanded.

    Returns
    -------
    Path
        Absolute path (it need not exist yet).
    """
    if override is not None and str(override) != "":
        return Path(override).expanduser().resolve()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    return (Path.cwd() / "data").resolve()


#: The marker file :func:`crossmodal.data.fixtures.write_fixtures` leaves in a fixture root.
FIXTURE_MARKER = "FIXTURES"


def is_fixture_root(root: str | Path | None) -> bool:
    """Whether ``root`` holds fixtures written by :func:`crossmodal.data.fixtures.write_fixtures`
    (its marker file exists). Here, in the leaf module, so that the checksum and loading code
    can ask without importing the fixture writers."""
    return root is not None and (Path(root) / FIXTURE_MARKER).exists()
