"""Several ``crossmodal run`` command lines in one (``accelerate launch``-ed) process group.

``accelerate launch ... tests/ddp_runs.py CMDS.json``: CMDS.json is a list of argument lists
of ``crossmodal.cli.main``; they run one after the other in the same processes, so the test
of two-process training pays the launch (an interpreter start, torch and transformers
imports, the body load, per rank) once for all methods instead of once per method. Exits
with the first non-zero status.
"""

from __future__ import annotations

import json
import sys

from crossmodal.cli import main

if __name__ == "__main__":
    for argv in json.loads(open(sys.argv[1]).read()):
        code = main(argv)
        if code:
            sys.exit(code)
