"""``crossmodal data list|download|verify|generate``: the one way data enters the kit.

    crossmodal data list [--group pdebench]                # what the manifest offers, what is here
    crossmodal data download Advection1D CIFAR10 --dry-run # what would be fetched, total size
    crossmodal data download nb360 --dest /big/disk        # a whole group (nb360/pdebench/proxies)
    crossmodal data verify                                 # re-check every file present,
                                                           # generated files included
    crossmodal data generate --task advection1d --out data/  # small PDEBench-format files offline
    crossmodal data fixtures --dest /tmp/fx                 # tiny publisher-format fixtures

``data_scripts/download.py`` and ``data_scripts/generate_pde.py`` are thin wrappers around
``download`` and ``generate``. The data root is ``--dest`` (alias ``--data-root``), else
``$CROSSMODAL_DATA``, else ``./data``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crossmodal.data import cache, fixtures, hub, pdebench
from crossmodal.data.fixtures import is_fixture_root, write_fixtures
from crossmodal.data.manifest import GROUPS, Manifest, human_size
from crossmodal.data.root import ENV_VAR, data_root
from crossmodal.errors import CrossmodalError


def _add_root(p: argparse.ArgumentParser, *flags: str) -> None:
    p.add_argument(*flags, dest="root", metavar="DIR",
                   help=f"data root (default: ${ENV_VAR}, else ./data)")


def _add_manifest(p: argparse.ArgumentParser) -> None:
    # A different manifest (tests, private mirrors); the packaged one by default.
    p.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)


def build_parser(prog: str = "crossmodal data") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Download, verify and generate the kit's datasets.",
        epilog="Names are manifest entries (`crossmodal data list`), their aliases, or the "
        "groups nb360, pdebench and proxies.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the manifest's datasets, sizes, checksums and presence")
    p.add_argument("--group", help="only this group (nb360, pdebench, proxies)")
    _add_root(p, "--dest", "--data-root")
    _add_manifest(p)

    p = sub.add_parser("download", help="fetch datasets (resumable, checksummed)")
    p.add_argument("names", nargs="*", help="entries, aliases or groups")
    p.add_argument("--all", action="store_true", help="every entry of the manifest")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be fetched and the total size; fetch nothing")
    p.add_argument("--retries", type=int, default=3, help="retries per URL for transient errors")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="socket timeout in seconds, per connect and per read (default 30)")
    p.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="overall time limit per file, every URL and retry included (default "
                   "6 h; 0: none); the partial file is kept to resume")
    p.add_argument("--min-rate", type=float, default=None, metavar="BYTES_PER_S",
                   help="abandon (and retry) a transfer slower than this over a 120 s window "
                   "(default 16384; 0: off)")
    p.add_argument("--no-extract", action="store_true", help="keep archives packed")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_root(p, "--dest", "--data-root")
    _add_manifest(p)

    p = sub.add_parser("verify", help="re-check sizes and checksums of what is present "
                       "(downloaded and generated files, caches); exit 1 if one is bad")
    p.add_argument("names", nargs="*", help="entries/groups (default: every entry with files here)")
    p.add_argument("--no-caches", action="store_true", help="skip the .npy caches")
    _add_root(p, "--dest", "--data-root")
    _add_manifest(p)

    p = sub.add_parser("generate", help="solve PDEs into small PDEBench-format HDF5 files")
    p.add_argument("--task", required=True, action="append",
                   help="advection1d, burgers1d, diffreact1d, diffsorp1d, darcy2d, "
                   "diffreact2d, or all (repeatable)")
    p.add_argument("--n-samples", type=int, default=256, help="samples (default 256)")
    p.add_argument("--resolution", type=int,
                   help="grid points per axis (default 256 in 1D, 32 in 2D)")
    p.add_argument("--n-steps", type=int, help="saved time steps (default: the generator's)")
    p.add_argument("--seed", type=int, default=0)
    _add_root(p, "--out", "--dest", "--data-root")

    p = sub.add_parser("fixtures", help="write tiny random data in the publishers' formats "
                       "(dry runs of the paper path; marked, never real data)")
    p.add_argument("names", nargs="*", help="entries (default: the 18 paper tasks and 5 proxies)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dest", "--data-root", dest="root", metavar="DIR", required=True,
                   help="an empty folder (or an existing fixture root)")
    return parser


def _manifest(args) -> Manifest:
    return Manifest.load(args.manifest) if getattr(args, "manifest", None) else Manifest.load()


def cmd_list(args) -> int:
    manifest, root = _manifest(args), data_root(args.root)
    group = GROUPS.get(args.group.lower(), args.group) if args.group else None
    rows = []
    for e in manifest:
        if group and e.group != group:
            continue
        states = [i.state for i in hub.plan([e], root)]
        here = ("yes" if all(s == "present" for s in states)
                else "partial" if any(s != "missing" for s in states) else "no")
        checks = {"md5" if f.md5 else "sha256" if f.sha256 else "record" for f in e.files}
        rows.append([e.name, e.group, str(len(e.files)), human_size(e.expected_size),
                     "+".join(sorted(checks)), "yes" if e.generate else "", here])
    header = ["name", "group", "files", "size", "checksum", "generate", "here"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"\ndata root: {root}\nchecksum: md5/sha256 published by the source; 'record' = none "
          "published, the sha256 of the first download is recorded and verified afterwards")
    return 0


def _select(args, manifest: Manifest):
    if not args.names and not getattr(args, "all", False):
        raise CrossmodalError("name at least one dataset (or --all); `crossmodal data list` "
                              "shows them")
    return manifest.select(args.names, all_=getattr(args, "all", False))


def cmd_download(args) -> int:
    manifest, root = _manifest(args), data_root(args.root)

    if is_fixture_root(root):  # its files would count as "present" and never be fetched
        raise CrossmodalError(f"{root} is a fixture root (written by `crossmodal data "
                              "fixtures`); download real data into another folder")
    entries = _select(args, manifest)
    items = hub.plan(entries, root)
    if args.dry_run:
        total, unknown = 0, 0
        for it in items:
            note = {"present": "present, skip", "partial": "partial, resume",
                    "missing": "fetch"}[it.state]
            print(f"{note:16s} {human_size(it.to_fetch) if it.state != 'present' else '':>10s}  "
                  f"{it.spec.path}\n{'':28s}<- {it.spec.urls[0]}"
                  + "".join(f"\n{'':28s}   mirror {u}" for u in it.spec.urls[1:]))
            if it.state != "present":
                if it.to_fetch is None:
                    unknown += 1
                else:
                    total += it.to_fetch
        todo = sum(it.state != "present" for it in items)
        print(f"\n{todo} of {len(items)} files to fetch into {root}: {human_size(total)}"
              + (f" plus {unknown} of unknown size" if unknown else "") + " (dry run: nothing "
              "fetched)")
        return 0
    for entry in entries:
        print(f"{entry.name}: {len(entry.files)} file(s), {human_size(entry.expected_size)}")
        paths = hub.fetch(entry, root, manifest=manifest, retries=args.retries,
                          timeout=args.timeout, progress=not args.no_progress,
                          extract=not args.no_extract, deadline_s=args.deadline,
                          min_bytes_per_s=args.min_rate)
        for p in paths:
            print(f"  ok  {p}")
    return 0


def cmd_verify(args) -> int:
    manifest, root = _manifest(args), data_root(args.root)

    if fixtures.is_fixture_root(root):  # never checksummed, never recorded, never "ok"
        print("\n".join(fixtures.describe(root)))
        return 0
    if args.names:
        entries = manifest.select(args.names)
    else:
        # every entry with files, generated stand-ins or a .npy cache under the root
        entries = [e for e in manifest
                   if any(i.state != "missing" for i in hub.plan([e], root))
                   or hub.generated_files(e, root) or cache.cache_dirs(root, e.group, e.name)]
        if not entries:
            print(f"nothing downloaded under {root} yet")
            return 0
    # Exit 1 when something is corrupt, or when a dataset named explicitly is incomplete.
    failed = False
    for entry in entries:
        report = hub.verify(entry, root, manifest=manifest, caches=not args.no_caches)
        print(report)
        failed |= report.corrupt or (bool(args.names) and not report.ok)
    return 1 if failed else 0


def cmd_generate(args) -> int:
    import time


    root = data_root(args.root)
    # reject impossible sizes before solving anything
    pdebench.validate_generate_options(n_samples=args.n_samples, resolution=args.resolution,
                                       n_steps=args.n_steps)
    tasks: list[str] = []
    for name in args.task:
        if name.lower() == "all":
            tasks += [s.key for s in pdebench.SPECS.values() if s.generator]
        else:
            tasks.append(pdebench.get_spec(name).key)
    for key in dict.fromkeys(tasks):
        t0 = time.perf_counter()
        path = pdebench.generate_task_file(key, root, n_samples=args.n_samples,
                                           resolution=args.resolution, seed=args.seed,
                                           n_steps=args.n_steps)
        print(f"{key}: wrote {path} ({human_size(path.stat().st_size)}, "
              f"{time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_fixtures(args) -> int:
    root = data_root(args.root)
    written = write_fixtures(root, args.names or None, seed=args.seed)
    for name, paths in written.items():
        print(f"{name}: " + ", ".join(str(p.relative_to(root)) for p in paths))
    print(f"\n{len(written)} fixture entries in {root} (marked by {root / 'FIXTURES'}); run "
          f"e.g. `crossmodal run --task ECG --method orca --profile paper --data-root {root} "
          "--body roberta-base-random --limit-batches 2 --batch-size 2`")
    return 0


COMMANDS = {"list": cmd_list, "download": cmd_download, "verify": cmd_verify,
            "generate": cmd_generate, "fixtures": cmd_fixtures}


def main(argv: list[str] | None = None, prog: str = "crossmodal data") -> int:
    """Run a data command; returns the exit status (2 on a kit error, message on stderr)."""
    args = build_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return COMMANDS[args.command](args)
    except CrossmodalError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
