"""Cross-modal fine-tuning methods, registered by name (``get_method("orca")``).

One module per method; each defines a config dataclass and a :class:`Method` subclass.
"""

from crossmodal.methods import baselines  # noqa: F401  (registers scratch, nft, fpt)
from crossmodal.methods import mona  # noqa: F401
from crossmodal.methods import recraft  # noqa: F401
from crossmodal.methods import pare  # noqa: F401
from crossmodal.methods import gap_adaptive  # noqa: F401
from crossmodal.methods import orca  # noqa: F401
from crossmodal.methods.base import (
    METHODS,
    Method,
    MethodConfig,
    RunContext,
    get_method,
    register_method,
)

__all__ = ["METHODS", "Method", "MethodConfig", "RunContext", "get_method", "register_method"]
