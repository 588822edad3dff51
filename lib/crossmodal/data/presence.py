"""Is a task's data on disk? (``crossmodal tasks`` shows the answer in its "data" column.)

Cheap checks only (file existence, no hashing): ``crossmodal data verify`` does the checksums.
"""

from __future__ import annotations

from pathlib import Path

from crossmodal.data import pdebench
from crossmodal.data.nb360 import source_files
from crossmodal.errors import UnknownNameError


def is_present(spec, root: Path) -> bool:
    """Whether the task ``spec`` (a :class:`~crossmodal.tasks.TaskSpec`) can be loaded from
    ``root`` without fetching anything.

    * smoke tasks (and any task marked ``offline``): always;
    * PDEBench tasks: the downloaded file or a generated one (``gen_<file>``) exists;
    * NAS-Bench-360 tasks: every file of the task's manifest entry exists (a ``.part``
      file from an interrupted download does not count).
    """
    task_key = spec.key
    if spec.offline or spec.benchmark == "smoke":
        return True
    root = Path(root)
    if spec.benchmark == "PDEBench":
        return (pdebench.real_path(task_key, root).exists()
                or pdebench.generated_path(task_key, root).exists())
    try:
        return all(p.exists() for p in source_files(task_key, root))
    except UnknownNameError:
        return False
