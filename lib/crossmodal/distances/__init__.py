"""Dataset distances: the optimal transport dataset distance (OTDD) and kernel MMD².

``from crossmodal.distances import otdd, mmd``; :class:`OTDDSource` caches a fixed source
dataset for repeated OTDD calls (ORCA's alignment stage). See ``docs/otdd.md``.
"""

from crossmodal.distances._mmd import mmd
from crossmodal.distances._otdd import OTDDSource, otdd

__all__ = ["OTDDSource", "mmd", "otdd"]
