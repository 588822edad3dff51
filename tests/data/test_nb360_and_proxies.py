"""NAS-Bench-360 loaders and paper proxies on tiny files written in the publishers' formats."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from crossmodal.data import cache, nb360, presence
from crossmodal.data.manifest import Manifest
from crossmodal.data.proxies import CONLL_CLASSES, conll_sentences, load_proxy_arrays
from crossmodal.errors import DataMissingError
from crossmodal.tasks import get_task, list_tasks

RNG = np.random.default_rng(0)


def _path(root: Path, key: str, i: int = 0) -> Path:
    p = root / Manifest.load().get(key).files[i].path
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _tar_gz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _cifar_batch(n: int, label_key: bytes, k: int) -> bytes:
    return pickle.dumps({b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
                         label_key: list(RNG.integers(0, k, n))})


def test_cifar100(tmp_path, publish_fixtures):
    _tar_gz(_path(tmp_path, "CIFAR100"), {
        "cifar-100-python/train": _cifar_batch(12, b"fine_labels", 100),
        "cifar-100-python/test": _cifar_batch(5, b"fine_labels", 100)})
    publish_fixtures(tmp_path)
    s = get_task("CIFAR100").load(tmp_path)
    assert s["train"][0].shape == (12, 3, 32, 32) and s["test"][1].shape == (5,)
    # ORCA's per-channel standardisation of [0, 1] pixels
    assert s["train"][0][:, 0].min() >= (0 - 0.5071) / 0.2675 - 1e-5


def test_spherical(tmp_path, publish_fixtures):
    data = {split: {"images": RNG.integers(0, 256, (n, 3, 60, 60), dtype=np.uint8),
                    "labels": RNG.integers(0, 100, n)} for split, n in (("train", 6), ("test", 4))}
    with gzip.open(_path(tmp_path, "Spherical"), "wb") as fh:
        pickle.dump(data, fh)
    publish_fixtures(tmp_path)
    s = get_task("Spherical").load(tmp_path)
    np.testing.assert_allclose(s["test"][0], data["test"]["images"] / 255.0, atol=1e-6)


def test_ninapro_merges_validation_into_training(tmp_path, publish_fixtures):
    sizes = {"train": 7, "val": 3, "test": 4}
    for i, n in enumerate(sizes.values()):
        np.save(_path(tmp_path, "NinaPro", 2 * i), RNG.normal(size=(n, 52, 16)))
        np.save(_path(tmp_path, "NinaPro", 2 * i + 1), RNG.integers(0, 18, n))
    publish_fixtures(tmp_path)
    s = get_task("NinaPro").load(tmp_path)
    assert s["train"][0].shape == (10, 1, 16, 52) and s["test"][0].shape == (4, 1, 16, 52)
    raw = np.load(_path(tmp_path, "NinaPro", 4))
    np.testing.assert_allclose(s["test"][0][:, 0], raw.transpose(0, 2, 1), rtol=1e-6)


def test_darcyflow_subsamples_421_to_85(tmp_path, publish_fixtures):
    import scipy.io

    for i, n in ((0, 3), (1, 2)):
        coeff = RNG.choice([3.0, 12.0], size=(n, 421, 421))
        scipy.io.savemat(_path(tmp_path, "DarcyFlow", i), {"coeff": coeff, "sol": coeff * 0.01})
    publish_fixtures(tmp_path)
    s = nb360.load_nb360("DarcyFlow", tmp_path, use_cache=False)
    # ORCA's input: standardised coefficient + two grid channels; targets stay 1 channel
    assert s["train"][0].shape == (3, 3, 85, 85) and s["test"][1].shape == (2, 1, 85, 85)
    x = s["train"][0]
    np.testing.assert_allclose(x[:, 0].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[0, 1, 0], np.linspace(0, 1, 85), rtol=1e-6)  # x along width
    np.testing.assert_allclose(x[0, 2, :, 0], np.linspace(0, 1, 85), rtol=1e-6)
    y = s["test"][1].astype(np.float64)  # y stays in physical units (0.01 x coefficient)
    assert (np.isclose(y, 0.03) | np.isclose(y, 0.12)).all()
    get_task("DarcyFlow").load(tmp_path)


def test_ecg_windows_use_class_dependent_strides():
    rec = np.arange(2000.0)
    x, y = nb360.ecg_windows([rec, rec], np.array([0, 3]))
    # N: stride 500 -> starts 0, 500 (1000 excluded: range stops before len - 1000)
    # ~: stride 25 -> 40 windows
    assert (y == 0).sum() == 2 and (y == 3).sum() == 40
    assert x.shape[1:] == (1, 1000) and x[1, 0, 0] == 500


def test_ecg(tmp_path, publish_fixtures):
    labels = ["N", "A", "O", "~"] * 5
    data = {"data": [RNG.normal(size=RNG.integers(1600, 3000)) for _ in labels], "label": labels}
    with open(_path(tmp_path, "ECG"), "wb") as fh:
        pickle.dump(data, fh)
    publish_fixtures(tmp_path)
    s = get_task("ECG").load(tmp_path)
    assert s["train"][0].shape[1:] == (1, 1000) and set(np.unique(s["train"][1])) <= {0, 1, 2, 3}
    assert len(s["test"][1]) > 0


def test_satellite_labels_start_at_zero(tmp_path, publish_fixtures):
    for i, n in ((0, 9), (1, 4)):
        np.save(_path(tmp_path, "Satellite", i),
                {"data": RNG.normal(size=(n, 46)), "label": RNG.integers(1, 25, n)},
                allow_pickle=True)
    publish_fixtures(tmp_path)
    s = get_task("Satellite").load(tmp_path)
    assert s["train"][0].shape == (9, 1, 46) and s["train"][1].min() >= 0


def test_deepsea(tmp_path, publish_fixtures):
    def onehot(n):
        return np.eye(4, dtype=np.uint8)[RNG.integers(0, 4, (n, 1000))]

    np.savez(_path(tmp_path, "DeepSEA"), x_train=onehot(5), y_train=RNG.integers(0, 2, (5, 36)),
             x_val=onehot(2), y_val=RNG.integers(0, 2, (2, 36)), x_test=onehot(3),
             y_test=RNG.integers(0, 2, (3, 36)))
    publish_fixtures(tmp_path)
    s = get_task("DeepSEA").load(tmp_path)
    assert s["train"][0].shape == (7, 4, 1000) and s["test"][1].shape == (3, 36)
    np.testing.assert_array_equal(s["train"][0].sum(1), 1.0)  # one-hot over the channel axis


def test_nb360_cache_is_written_with_checksums_and_reused(tmp_path, publish_fixtures):
    for i, n in ((0, 9), (1, 4)):
        np.save(_path(tmp_path, "Satellite", i),
                {"data": RNG.normal(size=(n, 46)), "label": RNG.integers(1, 25, n)},
                allow_pickle=True)
    publish_fixtures(tmp_path)
    first = nb360.load_nb360("Satellite", tmp_path)
    (cdir,) = cache.cache_dirs(tmp_path, "nb360", "Satellite")
    assert cache.verify_cache(cdir) == []
    again = nb360.load_nb360("Satellite", tmp_path)
    np.testing.assert_array_equal(first["train"][0], again["train"][0])


def test_unprepared_tasks_say_what_is_missing(tmp_path):
    archive = _path(tmp_path, "PSICOV")
    archive.write_bytes(b"zip")
    with pytest.raises(DataMissingError, match="prepared"):
        nb360.load_nb360("PSICOV", tmp_path)
    prepared = tmp_path / "nb360" / "psicov" / "prepared"
    prepared.mkdir(parents=True)
    for split, n in (("train", 3), ("test", 2)):
        np.save(prepared / f"{split}_x.npy", np.zeros((n, 57, 16, 16), np.float32))
        np.save(prepared / f"{split}_y.npy", np.zeros((n, 1, 16, 16), np.float32))
    assert get_task("PSICOV").load(tmp_path)["test"][0].shape == (2, 57, 16, 16)


@pytest.mark.parametrize("key", [t.key for t in list_tasks("NAS-Bench-360")])
def test_missing_nb360_data_names_both_fetch_commands(key, tmp_path):
    with pytest.raises(DataMissingError) as err:
        get_task(key).load(tmp_path)
    assert f"crossmodal data download {key}" in str(err.value)
    assert f"python data_scripts/download.py {key}" in str(err.value)


def test_presence(tmp_path):
    assert presence.is_present(get_task("smoke_digits"), tmp_path)
    assert not presence.is_present(get_task("Advection1D"), tmp_path)
    assert not presence.is_present(get_task("NinaPro"), tmp_path)
    gen = tmp_path / "pdebench" / "gen_1D_Advection_Sols_beta0.4.hdf5"
    gen.parent.mkdir(parents=True)
    gen.write_bytes(b"")
    assert presence.is_present(get_task("Advection1D"), tmp_path)
    paths = [tmp_path / f.path for f in Manifest.load().get("NinaPro").files]
    for p in paths[:-1]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    paths[-1].with_name(paths[-1].name + ".part").write_bytes(b"")
    assert not presence.is_present(get_task("NinaPro"), tmp_path)  # a .part is not a file
    paths[-1].write_bytes(b"")
    assert presence.is_present(get_task("NinaPro"), tmp_path)


def test_manifest_covers_the_papers_tasks_and_proxies():
    m = Manifest.load()
    for task in list_tasks("NAS-Bench-360") + list_tasks("PDEBench"):
        entry = m.get(task.key)
        for f in entry.files:
            assert f.urls and f.urls[0].startswith(("https://", "http://"))
            # a published checksum, or a note saying why there is none
            assert f.has_published_checksum or "not published" in f.checksum_note
    for name in ("CIFAR10", "CoNLL2003", "TinyImageNet", "Caltech101", "PascalVOC2012"):
        assert m.get(name).group == "proxy"
    # every PDEBench file has the md5 PDEBench publishes, and the exact parameter file
    for task in list_tasks("PDEBench"):
        (f,) = m.get(task.key).files
        assert len(f.md5 or "") == 32 and "darus.uni-stuttgart.de" in f.urls[0]
    assert m.get("Advection1D").files[0].path.endswith("beta0.4.hdf5")
    assert m.get("Burgers1D").files[0].path.endswith("Nu1.0.hdf5")
    assert m.get("DiffusionReaction1D").files[0].path.endswith("Nu0.5_Rho1.0.hdf5")
    assert m.get("DarcyFlow2D").files[0].path.endswith("beta0.1_Train.hdf5")
    assert "Eta0.1_Zeta0.1" in m.get("NavierStokes1D").files[0].path


def test_packaged_manifest_is_the_data_scripts_manifest():
    repo = Path(__file__).resolve().parents[2]
    assert (repo / "data_scripts" / "manifest.json").resolve() == \
        (repo / "lib" / "crossmodal" / "data" / "manifest.json").resolve()


# --------------------------------------------------------------------------- proxies


def test_cifar10_proxy(tmp_path, monkeypatch, publish_fixtures):
    members = {f"cifar-10-batches-py/data_batch_{i}": _cifar_batch(4, b"labels", 10)
               for i in range(1, 6)}
    archive = tmp_path / "proxies" / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    _tar_gz(archive, members)
    monkeypatch.setenv("CROSSMODAL_DATA", str(tmp_path))
    publish_fixtures(tmp_path)
    p = load_proxy_arrays("cifar10", max_samples=7, seed=1)
    assert p.images.shape == (7, 3, 32, 32) and p.images.dtype == np.float32
    assert 0.0 <= p.images.min() and p.images.max() <= 1.0 and p.num_classes == 10
    assert len(load_proxy_arrays("cifar10", max_samples=None).labels) == 20


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER
met VBD B-VP O
John NNP B-NP I-PER
in IN B-PP O
Paris NNP B-NP I-LOC

It PRP B-NP O
rained VBD B-VP O
.

Alice NNP B-NP I-PER
Bob NNP I-NP B-PER
"""


def test_conll_sentence_labels():
    texts, labels = conll_sentences(CONLL)
    assert texts[0] == "EU rejects German call ." and texts[2] == "It rained ."
    names = [CONLL_CLASSES[i] for i in labels]
    # tie ORG/MISC -> first mentioned; PER x2 beats LOC; no entity; B- splits two mentions
    assert names == ["ORG", "PER", "none", "PER"]


def test_conll_proxy_reads_the_zip(tmp_path, monkeypatch, publish_fixtures):
    archive = tmp_path / "proxies" / "conll2003" / "conll2003.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("train.txt", CONLL)
        zf.writestr("test.txt", "x X X O\n")
    monkeypatch.setenv("CROSSMODAL_DATA", str(tmp_path))
    publish_fixtures(tmp_path)
    p = load_proxy_arrays("conll2003", max_samples=3)
    assert p.modality == "text" and len(p) == 3 and p.num_classes == 5
    assert set(p.texts) <= set(conll_sentences(CONLL)[0])


def test_missing_proxy_names_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSMODAL_DATA", str(tmp_path))
    with pytest.raises(DataMissingError, match="crossmodal data download CoNLL2003"):
        load_proxy_arrays("conll2003")
    from crossmodal.proxies import load_proxy

    with pytest.raises(DataMissingError, match="crossmodal data download CIFAR10"):
        load_proxy("cifar10")
