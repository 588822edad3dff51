"""Downloads against a real HTTP server on loopback (see conftest.py): no internet."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from crossmodal.data import hub
from crossmodal.data.cli import main as data_main
from crossmodal.data.manifest import Manifest

NO_SLEEP = {"sleep": lambda s: None, "progress": False, "timeout": 10}


def _digests(data: bytes) -> dict[str, str]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}


def _manifest(tmp_path: Path, entries: dict) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"schema": 1, "about": "test", "entries": entries}), "utf-8")
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_successful_download_verifies_and_renames(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    dest = tmp_path / "d" / "a.bin"
    d = _digests(payload)
    hub.download_file(server.url("/a.bin"), dest, sha256=d["sha256"], md5=d["md5"],
                      size=len(payload), **NO_SLEEP)
    assert dest.read_bytes() == payload
    assert _leftovers(dest.parent) == ["a.bin"]  # no .part left behind
    assert server.log == [("/a.bin", None)]


def test_resume_after_truncated_transfer_uses_range(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    server.behave["/a.bin"] = "truncate"
    dest = tmp_path / "a.bin"
    sha = _digests(payload)["sha256"]
    # no retries: the first attempt stops half-way and the .part stays for a resume
    with pytest.raises(hub.DownloadError, match="resumes"):
        hub.download_file(server.url("/a.bin"), dest, sha256=sha, retries=0, **NO_SLEEP)
    part = tmp_path / "a.bin.part"
    assert not dest.exists() and part.exists()
    half = part.stat().st_size
    assert 0 < half < len(payload)
    # the same call again asks only for the rest and ends with the whole, verified file
    hub.download_file(server.url("/a.bin"), dest, sha256=sha, retries=0, **NO_SLEEP)
    assert dest.read_bytes() == payload and not part.exists()
    assert server.log[-1] == ("/a.bin", f"bytes={half}-")


def test_truncated_transfer_is_resumed_within_one_call(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    server.behave["/a.bin"] = "truncate"
    dest = tmp_path / "a.bin"
    hub.download_file(server.url("/a.bin"), dest, sha256=_digests(payload)["sha256"],
                      retries=2, **NO_SLEEP)
    assert dest.read_bytes() == payload
    assert [r for _, r in server.log] == [None, f"bytes={len(payload) // 2}-"]


def test_server_ignoring_range_restarts_from_zero(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    server.behave["/a.bin"] = "norange"
    dest = tmp_path / "a.bin"
    (tmp_path / "a.bin.part").write_bytes(b"stale bytes from somewhere else")
    hub.download_file(server.url("/a.bin"), dest, sha256=_digests(payload)["sha256"],
                      **NO_SLEEP)
    assert dest.read_bytes() == payload


def test_checksum_mismatch_names_both_and_leaves_nothing(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    dest = tmp_path / "a.bin"
    wrong = "0" * 64
    with pytest.raises(hub.ChecksumError) as err:
        hub.download_file(server.url("/a.bin"), dest, sha256=wrong, **NO_SLEEP)
    msg = str(err.value)
    assert wrong in msg and _digests(payload)["sha256"] in msg
    assert server.url("/a.bin") in msg and "a.bin" in msg
    assert _leftovers(tmp_path) == []


def test_404_names_the_url_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / "x" / "missing.bin"
    with pytest.raises(hub.DownloadError) as err:
        hub.download_file(server.url("/missing.bin"), dest, size=1000, **NO_SLEEP)
    msg = str(err.value)
    assert server.url("/missing.bin") in msg and "404" in msg
    assert "missing.bin" in msg and "1000 B" in msg  # which file, and how much space it needs
    assert _leftovers(dest.parent) == []
    assert len(server.log) == 1  # a 404 is permanent: no retries


def test_mirror_fallback_after_404_and_after_a_wrong_file(server, payload, tmp_path):
    server.files["/good.bin"] = payload
    server.files["/other.bin"] = payload[::-1]
    sha = _digests(payload)["sha256"]
    urls = [server.url("/gone.bin"), server.url("/other.bin"), server.url("/good.bin")]
    dest = tmp_path / "a.bin"
    hub.download_file(urls, dest, sha256=sha, **NO_SLEEP)
    assert dest.read_bytes() == payload
    assert [p for p, _ in server.log] == ["/gone.bin", "/other.bin", "/good.bin"]


def test_transient_errors_are_retried_with_backoff(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    server.behave["/a.bin"] = "busy"
    waits: list[float] = []
    dest = tmp_path / "a.bin"
    hub.download_file(server.url("/a.bin"), dest, sha256=_digests(payload)["sha256"],
                      retries=3, backoff=0.5, sleep=waits.append, progress=False, timeout=10)
    assert dest.read_bytes() == payload
    assert waits == [0.5, 1.0]  # two 503s, exponential backoff


def test_server_size_disagreeing_with_manifest_discards_part(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    dest = tmp_path / "a.bin"
    with pytest.raises(hub.DownloadError, match="expects"):
        hub.download_file(server.url("/a.bin"), dest, size=len(payload) + 1, **NO_SLEEP)
    assert _leftovers(tmp_path) == []


def test_existing_file_with_wrong_checksum_is_reported(payload, tmp_path):
    dest = tmp_path / "a.bin"
    dest.write_bytes(payload[:-1])
    with pytest.raises(hub.ChecksumError, match="already exists"):
        hub.download_file("http://127.0.0.1:9/never", dest,
                          sha256=_digests(payload)["sha256"], **NO_SLEEP)


def test_insufficient_space_is_refused_before_fetching(server, tmp_path):
    server.files["/huge.bin"] = b"x"
    with pytest.raises(hub.InsufficientSpaceError, match="needs"):
        hub.download_file(server.url("/huge.bin"), tmp_path / "huge.bin", size=1 << 60,
                          **NO_SLEEP)
    assert server.log == []


# --------------------------------------------------------------------------- manifest level


@pytest.fixture
def manifest_setup(server, payload, tmp_path):
    """Entry ``Pub`` (published md5, a mirror) and entry ``Rec`` (no checksum published)."""
    server.files["/pub.bin"] = payload
    server.files["/rec.bin"] = payload[:1000]
    entries = {
        "Pub": {"group": "pdebench", "files": [{
            "path": "pdebench/pub.bin", "urls": [server.url("/down.bin"), server.url("/pub.bin")],
            "size": len(payload), "md5": _digests(payload)["md5"]}]},
        "Rec": {"group": "proxy", "aliases": ["rec-alias"], "files": [{
            "path": "proxies/rec.bin", "urls": [server.url("/rec.bin")], "approx_size": 1000,
            "checksum_note": "not published; sha256 recorded on first download"}]},
    }
    return _manifest(tmp_path, entries), tmp_path / "root"


def test_fetch_records_sha256_when_none_is_published(manifest_setup, payload):
    path, root = manifest_setup
    m = Manifest.load(path)
    hub.fetch("rec-alias", root, manifest=m, **NO_SLEEP)
    rec = hub.recorded_checksums(root)["proxies/rec.bin"]
    assert rec["sha256"] == _digests(payload[:1000])["sha256"]
    assert rec["source"] == "recorded on first download"
    assert hub.verify("Rec", root, manifest=m).ok
    (root / "proxies/rec.bin").write_bytes(b"y" * 1000)  # same size, other bytes
    report = hub.verify("Rec", root, manifest=m)
    assert report.corrupt and "sha256" in str(report)


def test_dry_run_prints_plan_and_fetches_nothing(manifest_setup, server, payload, capsys):
    path, root = manifest_setup
    rc = data_main(["download", "Pub", "Rec", "--dry-run", "--dest", str(root),
                    "--manifest", str(path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "pdebench/pub.bin" in out and "proxies/rec.bin" in out
    assert server.url("/pub.bin") in out  # the mirror is listed too
    assert "2 of 2 files" in out and "201.0 KiB" in out  # 200 KiB + 1000 B
    assert server.log == [] and not root.exists()


def test_cli_download_then_verify(manifest_setup, server, payload, capsys):
    path, root = manifest_setup
    args = ["--dest", str(root), "--manifest", str(path)]
    assert data_main(["download", "pdebench", "--no-progress", *args]) == 0
    assert (root / "pdebench/pub.bin").read_bytes() == payload
    assert [p for p, _ in server.log] == ["/down.bin", "/pub.bin"]  # 404, then the mirror
    assert data_main(["verify", *args]) == 0
    out = capsys.readouterr().out
    assert "Pub: OK" in out and "Rec" not in out  # only what is present is verified
    # a damaged file is caught, and naming a missing dataset fails too
    data = bytearray(payload)
    data[5] ^= 0xFF
    (root / "pdebench/pub.bin").write_bytes(bytes(data))
    assert data_main(["verify", *args]) == 1
    assert "CORRUPT" in capsys.readouterr().out
    assert data_main(["verify", "Rec", *args]) == 1


def test_cli_reports_download_failure_clearly(manifest_setup, server, capsys):
    path, root = manifest_setup
    server.files.pop("/pub.bin")
    rc = data_main(["download", "Pub", "--no-progress", "--retries", "0", "--dest", str(root),
                    "--manifest", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Pub" in err and server.url("/pub.bin") in err and "404" in err
    assert not (root / "pdebench" / "pub.bin").exists()


def test_unknown_dataset_lists_valid_names(manifest_setup, capsys):
    path, root = manifest_setup
    assert data_main(["download", "Nope", "--dest", str(root), "--manifest", str(path)]) == 2
    assert "Pub" in capsys.readouterr().err


def test_list_shows_every_entry_and_presence(tmp_path, capsys):
    assert data_main(["list", "--dest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("Advection1D", "NavierStokes1D", "DeepSEA", "FSD50K", "CIFAR10", "CoNLL2003",
                 "PascalVOC2012"):
        assert name in out
    assert str(tmp_path) in out


def test_download_script_dry_run_uses_the_packaged_manifest(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "data_scripts" / "download.py"
    proc = subprocess.run([sys.executable, str(script), "pdebench", "--dry-run", "--dest",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "8 of 8 files to fetch" in proc.stdout and "GiB" in proc.stdout
    assert "darus.uni-stuttgart.de/api/access/datafile/255674" in proc.stdout
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
