"""Task registry: ``get_task(key)``, ``list_tasks()``, and each task's loader."""

from crossmodal.tasks.registry import (
    OUTPUT_TYPES,
    Splits,
    TaskSpec,
    get_task,
    list_tasks,
    register_task,
    validate_split,
)

__all__ = [
    "OUTPUT_TYPES", "Splits", "TaskSpec", "get_task", "list_tasks", "register_task",
    "validate_split",
]
