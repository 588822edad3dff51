#!/usr/bin/env python
"""Download datasets listed in the manifest (resumable, checksummed, atomic).

    python data_scripts/download.py Advection1D CIFAR10 --dry-run
    python data_scripts/download.py nb360 --dest /big/disk/crossmodal-data
    python data_scripts/download.py --verify            # re-check what is there
    python data_scripts/download.py --list

The manifest is ``lib/crossmodal/data/manifest.json`` (``data_scripts/manifest.json`` links
to it). Same as ``crossmodal data download|verify|list``.
"""

from __future__ import annotations

import sys

import _kit  # noqa: F401  (puts lib/ on the path in a bare checkout)

from crossmodal.data.cli import main


def _argv(args: list[str]) -> list[str]:
    # --verify / --list pick the other data commands; everything else is a download
    for flag, command in (("--verify", "verify"), ("--list", "list")):
        if flag in args:
            return [command, *[a for a in args if a != flag]]
    return ["download", *args]


if __name__ == "__main__":
    raise SystemExit(main(_argv(sys.argv[1:]), prog="download.py"))
