"""Dataset distances: the optimal transport dataset distance (OTDD) and kernel MMD².

``from crossmodal.distances import otdd, mmd``; :class:`OTDDSource` caches a fixed source
dataset for repeated OTDD calls (ORCA's alignment stage). See ``docs/otdd.md``.
``orca_mmd`` and ``orca_pairwise_l2`` are ORCA's own MMD and ``l2`` alignment objectives.
"""

from crossmodal.distances._mmd import mmd
from crossmodal.distances._orca_scores import orca_mmd, orca_pairwise_l2
from crossmodal.distances._otdd import OTDDSource, otdd

__all__ = ["OTDDSource", "mmd", "orca_mmd", "orca_pairwise_l2", "otdd"]
