"""The main tables behind ``main_results.ipynb``: every method on every task beside the
papers' numbers (PaRe Tables 1/2/15, the slides' MoNA tables, RECRAFT Tables 1/2), and the
papers' method orderings judged over (task, seed) pairs (:data:`MAIN_CLAIMS`,
:func:`main_claim_checks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from crossmodal.notebook import Check, pairwise_check

#: Claims of the main tables, checked in direction: (better, worse) method pairs.
MAIN_CLAIMS = (("nft", "scratch"), ("nft", "fpt"), ("orca", "nft"), ("pare", "orca"),
               ("mona", "orca"), ("recraft", "pare"), ("gap_adaptive", "nft"),
               ("gap_adaptive_a", "nft"), ("gap_adaptive_b", "pare"))


def main_claim_checks(runs: pd.DataFrame,
                      claims: Sequence[tuple[str, str]] = MAIN_CLAIMS) -> list[Check]:
    """The paired verdict of each (better, worse) claim over the (task, seed) pairs of
    ``runs`` (:func:`crossmodal.notebook.pairwise_check`), with the paper's win count; claims
    whose methods did not both run are left out."""
    checks = [pairwise_check(runs, better, worse) for better, worse in claims]
    return [c for c in checks if c is not None]
