"""Is a task's data on disk? (``crossmodal tasks`` shows the answer in its "data" column.)

Cheap checks only (file existence, no hashing): ``crossmodal data verify`` does the checksums.
"""

from __future__ import annotations

from pathlib import Path

from crossmodal.errors import UnknownNameError


def is_present(task_key: str, root: Path) -> bool:
    """Whether ``task_key`` can be loaded from ``root`` without fetching anything.

    * smoke tasks (and any task marked ``offline``): always;
    * PDEBench tasks: the downloaded file or a generated one (``gen_<file>``) exists;
    * NAS-Bench-360 tasks: every file of the task's manifest entry exists (a ``.part``
      file from an interrupted download does not count).
    """
    from crossmodal.tasks import get_task

    spec = get_task(task_key)
    if spec.offline or spec.benchmark == "smoke":
        return True
    root = Path(root)
    if spec.benchmark == "PDEBench":
        from crossmodal.data import pdebench

        return (pdebench.real_path(task_key, root).exists()
                or pdebench.generated_path(task_key, root).exists())
    from crossmodal.data.nb360 import source_files

    try:
        return all(p.exists() for p in source_files(task_key, root))
    except UnknownNameError:
        return False
