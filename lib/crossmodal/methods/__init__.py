"""Cross-modal fine-tuning methods, registered by name (``get_method("orca")``).

One module per method; each defines a config dataclass and a :class:`Method` subclass.
"""

from crossmodal.methods import (
    baselines,  # noqa: F401  (registers scratch, nft, fpt)
    gap_adaptive,  # noqa: F401
    mona,  # noqa: F401
    orca,  # noqa: F401
    pare,  # noqa: F401
    recraft,  # noqa: F401
)
from crossmodal.methods.base import (
    METHODS,
    Method,
    MethodConfig,
    RunContext,
    get_method,
    method_options,
    register_method,
)

__all__ = ["METHODS", "Method", "MethodConfig", "RunContext", "get_method", "method_options",
           "register_method"]
