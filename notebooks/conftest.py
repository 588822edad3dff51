"""nbval settings for the notebooks (``python -m pytest`` re-executes them with --nbval-lax).

Re-executing a notebook writes its report; during the test run the reports go to a
temporary folder (``$CROSSMODAL_REPORTS``, inherited by the kernel), so ``make test`` never
rewrites the committed ``reports/``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

if "CROSSMODAL_REPORTS" not in os.environ:
    _tmp = tempfile.mkdtemp(prefix="crossmodal-nbval-reports-")
    os.environ["CROSSMODAL_REPORTS"] = _tmp
    atexit.register(shutil.rmtree, _tmp, ignore_errors=True)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    # each notebook trains models for up to a minute: the same class as the e2e tests
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
