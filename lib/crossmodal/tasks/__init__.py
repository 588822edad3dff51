"""Task registry: ``get_task(key)``, ``list_tasks()``, and each task's loader.

:mod:`crossmodal.tasks.registry` is a leaf (the :class:`TaskSpec` and the registry); the task
definitions of each benchmark register themselves when their module is imported, here, as
``crossmodal/methods/__init__.py`` imports the methods.
"""

from crossmodal.tasks import (
    nb360,  # noqa: F401  (registers the NAS-Bench-360 tasks)
    pdebench,  # noqa: F401  (registers the PDEBench tasks)
    smoke,  # noqa: F401  (registers the smoke tasks)
)
from crossmodal.tasks.registry import (
    OUTPUT_TYPES,
    Splits,
    TaskSpec,
    get_task,
    list_tasks,
    register_task,
    spec_for_splits,
    validate_split,
)

__all__ = [
    "OUTPUT_TYPES", "Splits", "TaskSpec", "get_task", "list_tasks", "register_task",
    "spec_for_splits", "validate_split",
]
