"""Corrupt data never trains: every file is checked before use, and the error names the fix.

These use the packaged manifest (no ``publish_fixtures``): a file at a real name must match
the sizes and checksums the publishers give.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from crossmodal.data import cache, checksums, nb360, pdebench
from crossmodal.data.checksums import CorruptDataError
from crossmodal.data.cli import main as data_main
from crossmodal.data.manifest import Manifest
from crossmodal.errors import CrossmodalError
from crossmodal.tasks import get_task


def _generate(root: Path, **kw) -> Path:
    opts = {"n_samples": 20, "resolution": 32, "n_steps": 4} | kw
    return pdebench.generate_task_file("advection1d", root, **opts)


def _overwrite_middle(path: Path, data: bytes) -> None:
    """Overwrite bytes in the middle of a file, keeping its size (finite garbage)."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(data[: size - size // 2 - 1])
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse-clock filesystems


# --------------------------------------------------------------------------- generated files


def test_generated_file_gets_a_recorded_checksum_and_a_repair_command(tmp_path):
    path = _generate(tmp_path, seed=3)
    rec = checksums.recorded_checksums(tmp_path)[str(path.relative_to(tmp_path))]
    assert rec["sha256"] == checksums.hash_file(path)["sha256"]
    assert rec["size"] == path.stat().st_size and rec["source"] == "generated"
    assert rec["command"] == (f"crossmodal data generate --task advection1d --n-samples 20 "
                              f"--resolution 32 --seed 3 --n-steps 4 --out {tmp_path}")


def test_finite_garbage_in_a_generated_file_is_refused_and_verify_fails(tmp_path, capsys):
    path = _generate(tmp_path)
    _overwrite_middle(path, b"A" * (1 << 20))  # finite floats, same size (review case 2.4)
    with pytest.raises(CorruptDataError) as err:
        get_task("Advection1D").load(tmp_path)
    msg = str(err.value)
    assert path.name in msg and "sha256" in msg
    assert "crossmodal data generate --task advection1d --n-samples 20" in msg
    assert not cache.cache_dirs(tmp_path, "pdebench", "Advection1D")  # nothing cached from it
    assert data_main(["verify", "--dest", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "CORRUPT" in out and f"pdebench/{path.name}" in out


def test_verify_checks_generated_files(tmp_path, capsys):
    path = _generate(tmp_path)
    assert data_main(["verify", "--dest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"[ok      ] pdebench/{path.name}" in out


def test_truncated_generated_file_is_refused_by_size_before_h5py(tmp_path):
    path = _generate(tmp_path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.raises(CorruptDataError, match="bytes were recorded when it was written") as e:
        pdebench.load_pdebench("Advection1D", tmp_path)
    assert "crossmodal data generate" in str(e.value)


def test_generated_file_without_record_is_refused(tmp_path):
    path = _generate(tmp_path)
    (tmp_path / checksums.CHECKSUMS_FILE).unlink()
    with pytest.raises(CorruptDataError, match="no checksum was recorded") as err:
        pdebench.load_pdebench("Advection1D", tmp_path)
    assert path.name in str(err.value) and "crossmodal data generate --task advection1d" \
        in str(err.value)


def test_unchanged_file_is_not_rehashed_and_a_touched_one_is(tmp_path, monkeypatch):
    path = _generate(tmp_path)
    calls: list[Path] = []
    real = checksums.hash_file
    monkeypatch.setattr(checksums, "hash_file", lambda p, *a: calls.append(p) or real(p, *a))
    pdebench.load_pdebench("Advection1D", tmp_path)
    pdebench.load_pdebench("Advection1D", tmp_path)
    assert calls == []  # stamp unchanged: size check only
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    pdebench.load_pdebench("Advection1D", tmp_path)  # same bytes: re-hashed, accepted
    pdebench.load_pdebench("Advection1D", tmp_path)  # stamp refreshed: no hash again
    assert calls == [path]


# --------------------------------------------------------------------------- caches


def test_same_size_corrupt_cache_is_detected_and_rebuilt(tmp_path):
    _generate(tmp_path)
    good = pdebench.load_pdebench("Advection1D", tmp_path)
    (cdir,) = cache.cache_dirs(tmp_path, "pdebench", "Advection1D")
    _overwrite_middle(cdir / "train_x.npy", b"\x00\x01" * 5000)  # review case 2.7
    with pytest.warns(UserWarning, match="train_x.npy differs from the sha256"):
        again = pdebench.load_pdebench("Advection1D", tmp_path)
    np.testing.assert_array_equal(np.asarray(again["train"][0]), np.asarray(good["train"][0]))
    assert cache.verify_cache(cdir) == []  # rebuilt from the verified source


def test_cache_meta_holds_the_verified_source_digest(tmp_path):
    path = _generate(tmp_path)
    pdebench.load_pdebench("Advection1D", tmp_path)
    (cdir,) = cache.cache_dirs(tmp_path, "pdebench", "Advection1D")
    meta = json.loads((cdir / cache.CHECKSUMS).read_text())["meta"]
    assert meta["source"]["sha256"] == checksums.hash_file(path)["sha256"]


# --------------------------------------------------------------------------- real names


def test_real_name_with_the_wrong_size_is_refused(tmp_path):
    _generate(tmp_path)
    real = pdebench.real_path("Advection1D", tmp_path)
    real.write_bytes(b"\x89H")  # review case 2.9: a 2-byte "real" file next to a good one
    with pytest.raises(CorruptDataError) as err:
        get_task("Advection1D").load(tmp_path)
    msg = str(err.value)
    assert real.name in msg and "8,232,966,952" in msg
    assert "crossmodal data download Advection1D" in msg and "gen_" in msg  # both ways out


def test_real_name_with_a_wrong_md5_is_refused(tmp_path):
    path = tmp_path / Manifest.load().get("CIFAR100").files[0].path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x1f\x8b" + bytes(1000))
    with pytest.raises(CorruptDataError, match="md5") as err:
        nb360.load_nb360("CIFAR100", tmp_path)
    assert "crossmodal data download CIFAR100" in str(err.value)


def test_file_without_checksum_far_below_its_estimate_is_refused(tmp_path):
    for f in Manifest.load().get("Satellite").files:
        (tmp_path / f.path).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / f.path, {"data": np.zeros((3, 46)), "label": np.ones(3)},
                allow_pickle=True)
    with pytest.raises(CorruptDataError, match="size estimate"):
        get_task("Satellite").load(tmp_path)
    assert data_main(["verify", "Satellite", "--dest", str(tmp_path)]) == 1


def test_downloaded_file_changed_after_its_first_download_is_refused(tmp_path,
                                                                     publish_fixtures):
    # a hand-placed Satellite file: recorded on first use, checked afterwards
    for f in Manifest.load().get("Satellite").files:
        (tmp_path / f.path).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / f.path, {"data": np.zeros((3, 46)), "label": np.ones(3)},
                allow_pickle=True)
    manifest = json.loads(publish_fixtures(tmp_path).read_text())
    for f in manifest["entries"]["Satellite"]["files"]:  # as if nothing were published
        f.pop("sha256")
        f.pop("size")
    Path(os.environ["CROSSMODAL_MANIFEST"]).write_text(json.dumps(manifest))
    get_task("Satellite").load(tmp_path)
    rec = checksums.recorded_checksums(tmp_path)["nb360/satellite/satellite_train.npy"]
    assert rec["source"] == "recorded on first use"
    _overwrite_middle(tmp_path / "nb360/satellite/satellite_train.npy", b"\x07" * 16)
    with pytest.raises(CorruptDataError, match="was recorded when it was downloaded"):
        get_task("Satellite").load(tmp_path)


# --------------------------------------------------------------------------- HDF5 errors


def _one_line_error(path: Path) -> str:
    with pytest.raises(CrossmodalError) as err:
        pdebench.read_splits(path, "Advection1D")
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert "crossmodal data generate --task advection1d" in msg  # the fix
    return msg


def test_truncated_empty_and_wrong_key_hdf5_give_one_line_errors(tmp_path):
    path = _generate(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "not a readable HDF5 file" in _one_line_error(path)
    path.write_bytes(b"")
    assert "truncated, empty or not HDF5" in _one_line_error(path)
    path.unlink()
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((20, 4, 32), np.float32)
        f["x"] = np.zeros(32)
        f["t"] = np.zeros(5)
    msg = _one_line_error(path)
    assert "no dataset 'tensor'" in msg and "it has: data, t, x" in msg


def test_wrong_key_generated_file_with_a_valid_record_fails_clearly_at_load(tmp_path):
    path = pdebench.generated_path("Advection1D", tmp_path)
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((20, 4, 32), np.float32)
    checksums.record(tmp_path, str(path.relative_to(tmp_path)), checksums.hash_file(path),
                     source="generated")
    with pytest.raises(CorruptDataError, match="no dataset 'tensor'"):
        get_task("Advection1D").load(tmp_path)


# --------------------------------------------------------------------------- generate options


@pytest.mark.parametrize("flags", [["--n-samples", "0"], ["--n-samples", "-5"],
                                   ["--resolution", "0"], ["--resolution", "-3"],
                                   ["--n-steps", "1"]])
def test_generate_rejects_impossible_sizes_before_any_work(tmp_path, capsys, flags):
    rc = data_main(["generate", "--task", "advection1d", *flags, "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert flags[0] in err and "must be an integer" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.raises(CrossmodalError):
        pdebench.generate_task_file("advection1d", tmp_path, n_samples=int(flags[1])
                                    if flags[0] == "--n-samples" else 20,
                                    resolution=int(flags[1]) if flags[0] == "--resolution"
                                    else None,
                                    n_steps=int(flags[1]) if flags[0] == "--n-steps" else None)
