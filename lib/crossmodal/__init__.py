"""crossmodal: a reproducibility kit for cross-modal fine-tuning (ORCA, PaRe, MoNA, RECRAFT).

The package is organised by concept: ``tasks`` (registry and loaders), ``embedders``,
``bodies``, ``heads``, ``models`` (their composition), ``training`` (the loop), ``metrics``,
``distances`` (OTDD, MMD), ``methods`` (one module per method), ``data`` (downloads and
generators) and ``reporting``.
"""

__version__ = "0.1.0"
