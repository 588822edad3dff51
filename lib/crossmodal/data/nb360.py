r"""Loaders of the 10 NAS-Bench-360 tasks, reading the files ``crossmodal data download`` fetches.

Each loader turns the publisher's files into ``{"train": (x, y), "test": (x, y)}`` numpy
arrays with the shapes of :mod:`crossmodal.tasks.nb360`, following ORCA's preprocessing and
splits (``src/data_loaders.py`` of ORCA, with ``valid_split`` off, i.e. the validation part is
merged into training where ORCA does so):

===========  =========================================================================
task         what is read and how it is split
===========  =========================================================================
CIFAR100     ``cifar-100-python.tar.gz``; the archive's 50k/10k split; pixels scaled to
             [0, 1] then standardised per channel with ORCA's CIFAR-100 mean/std
Spherical    ``s2_cifar100.gz`` (a pickled dict); the file's split; pixels / 255
NinaPro      ``ninapro_{train,val,test}.npy`` + labels; train = train + val;
             windows (n, 52, 16) transposed to (n, 1, 16, 52)
DarcyFlow    ``piececonst_r421_N1024_smooth{1,2}.mat``; 421x421 subsampled by 5 to 85x85;
             train = first 1000 of smooth1, test = first 100 of smooth2; x is ORCA's
             input (3, 85, 85): the coefficient standardised per grid point with the
             training mean/std (ORCA's UnitGaussianNormalizer, eps 1e-5) and the two
             grid coordinates in [0, 1]; y is the solution in physical units (ORCA also
             standardises y and decodes before the loss; the kit does not)
ECG          ``challenge2017.pkl``; every record standardised; records split 90/10
             (scikit-learn ``train_test_split``, ``random_state=0``) before cutting
             windows of 1000 with ORCA's class-dependent strides (N 500, A 83, O 250,
             ~ 25); windows shuffled with seed 0
Satellite    ``satellite_{train,test}.npy`` (pickled dicts); labels 1..24 -> 0..23
DeepSEA      ``deepsea_filtered.npz``; train = x_train + x_val; one-hot (n, 1000, 4)
             transposed to (n, 4, 1000)
FSD50K,      the extracted archives are turned into arrays once by
PSICOV,      :mod:`crossmodal.data.nb360_prepare` (log-mel features, PDNet's 57 channels,
Cosmic       deepCR crops), written to ``<root>/nb360/<task>/prepared/{train,test}_{x,y}.npy``
             and read from there; prepared arrays put there by hand are read as they are
===========  =========================================================================

Data augmentation that ORCA applies on the fly (random crops and flips for CIFAR-100) is not
part of the arrays. Every downloaded file is verified before it is read
(:func:`crossmodal.data.checksums.check_file`: the manifest's size and published md5, or the
sha256 recorded on first download). Prepared splits are cached as ``.npy`` with sha256
checksums under ``<root>/nb360/cache/<Task>-v<version>/``, built only from verified files and
rebuilt when a source file changes.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from crossmodal.data import cache, checksums, nb360_prepare
from crossmodal.data.manifest import Manifest
from crossmodal.errors import DataMissingError, InvalidInputError, unknown_name

Splits = dict[str, tuple[np.ndarray, np.ndarray]]

#: Bump when any reader changes: every NAS-Bench-360 cache becomes stale.
PREPROCESS_VERSION = 2  # 2: Darcy Flow inputs as ORCA's (standardised coefficient + grid)

#: ORCA's CIFAR-100 normalisation (per-channel mean and std of the training images).
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

#: ECG windows: length, base stride, and the stride divisor per class (N, A, O, ~), which
#: oversamples the rare classes exactly as ORCA/NAS-Bench-360 do.
ECG_WINDOW, ECG_STRIDE = 1000, 500
ECG_STRIDE_DIVISOR = {0: 1, 1: 6, 2: 2, 3: 20}
ECG_LABELS = {"N": 0, "A": 1, "O": 2, "~": 3}

#: Tasks whose raw files the kit cannot yet turn into arrays.
NEEDS_PREPARATION = ("FSD50K", "PSICOV", "Cosmic")


def fetch_hint(key: str) -> str:
    """The commands that fetch a task's files."""
    return (f"`crossmodal data download {key}` (or `python data_scripts/download.py {key}`)")


def source_files(key: str, root: Path, manifest: Manifest | None = None) -> list[Path]:
    """The downloaded files of ``key`` (manifest paths below ``root``)."""
    manifest = manifest or Manifest.load()
    return [Path(root) / f.path for f in manifest.get(key).files]


def require_files(key: str, root: Path, manifest: Manifest | None = None) -> list[Path]:
    """The task's files, or :class:`DataMissingError` listing what is absent and the fix."""
    paths = source_files(key, root, manifest)
    missing = [p for p in paths if not p.exists()]
    if missing:
        partial = [p for p in missing if p.with_name(p.name + ".part").exists()]
        resume = (" A partial download is there; the same command resumes it."
                  if partial else "")
        raise DataMissingError(
            f"{key}: the NAS-Bench-360 data is not in {Path(root)} (missing: "
            + ", ".join(str(p.relative_to(root)) for p in missing)
            + f"). Fetch it with {fetch_hint(key)}; choose the data folder with --dest/--data-root "
            f"or the CROSSMODAL_DATA environment variable.{resume}")
    return paths


def verify_files(key: str, root: Path, manifest: Manifest | None = None) -> list[dict]:
    """Check every downloaded file of ``key`` before use; their checksum records.

    Raises
    ------
    CorruptDataError
        A file's size or checksum is wrong; the message names it and the download command.
    """
    manifest = manifest or Manifest.load()
    return [checksums.check_file(root, f.path, spec=f,
                                 repair=f"Delete it and run {fetch_hint(key)} again.")
            for f in manifest.get(key).files]


# --------------------------------------------------------------------------- readers


def _read_cifar100(paths: list[Path]) -> Splits:
    mean = np.asarray(CIFAR100_MEAN, np.float32)[:, None, None]
    std = np.asarray(CIFAR100_STD, np.float32)[:, None, None]
    out = {}
    with tarfile.open(paths[0], "r:gz") as tf:
        for split in ("train", "test"):
            member = tf.extractfile(f"cifar-100-python/{split}")
            if member is None:
                raise InvalidInputError(f"{paths[0]} has no cifar-100-python/{split}")
            batch = pickle.load(member, encoding="bytes")  # checksummed publisher file
            x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32)
            x = (x.astype(np.float32) / 255.0 - mean) / std
            out[split] = (x, np.asarray(batch[b"fine_labels"], np.int64))
    return out


def _read_spherical(paths: list[Path]) -> Splits:
    with gzip.open(paths[0], "rb") as fh:
        data = pickle.load(fh)  # the NB360 file is a pickle; its sha256 is checked
    out = {}
    for split in ("train", "test"):
        x = np.asarray(data[split]["images"])
        if x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
            x = np.moveaxis(x, -1, 1)
        out[split] = ((x.astype(np.float32) / 255.0),
                      np.asarray(data[split]["labels"], np.int64))
    return out


def _read_ninapro(paths: list[Path]) -> Splits:
    arrays = {p.stem: np.load(p, encoding="bytes", allow_pickle=True) for p in paths}

    def windows(name: str) -> np.ndarray:  # (n, 52, 16) -> (n, 1, 16, 52)
        return np.transpose(arrays[name].astype(np.float32), (0, 2, 1))[:, None]

    x_train = np.concatenate([windows("ninapro_train"), windows("ninapro_val")])
    y_train = np.concatenate([arrays["label_train"], arrays["label_val"]]).astype(np.int64)
    return {"train": (x_train, y_train),
            "test": (windows("ninapro_test"), arrays["label_test"].astype(np.int64))}


def _read_mat_fields(path: Path, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Fields of a MATLAB file, v5 (scipy) or v7.3 (HDF5: axes come out reversed)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=list(fields))
        return {f: np.asarray(mat[f]) for f in fields}
    except (NotImplementedError, ValueError):
        import h5py

        with h5py.File(path, "r") as fh:
            return {f: np.transpose(fh[f][()]) for f in fields}


def _read_darcy(paths: list[Path], sub: int = 5, n_train: int = 1000,
                n_test: int = 100) -> Splits:
    side = (421 - 1) // sub + 1  # 85 for sub = 5

    def read(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
        f = _read_mat_fields(path, ("coeff", "sol"))
        x = f["coeff"][:n, ::sub, ::sub][:, :side, :side].astype(np.float32)
        y = f["sol"][:n, ::sub, ::sub][:, :side, :side].astype(np.float32)[:, None]
        return x, y

    (x_tr, y_tr), (x_te, y_te) = read(paths[0], n_train), read(paths[1], n_test)
    # ORCA (data_loaders.py load_darcy_flow): standardise with the training statistics per
    # grid point, then append the coordinate grid (meshgrid order: x along width, y along
    # height) as two more channels
    mean, std = x_tr.mean(0), x_tr.std(0)
    gx, gy = np.meshgrid(np.linspace(0, 1, side), np.linspace(0, 1, side))
    grid = np.stack([gx, gy]).astype(np.float32)

    def inputs(x: np.ndarray) -> np.ndarray:
        z = ((x - mean) / (std + 1e-5)).astype(np.float32)[:, None]
        return np.concatenate([z, np.broadcast_to(grid, (len(x), 2, side, side))], axis=1)

    return {"train": (inputs(x_tr), y_tr), "test": (inputs(x_te), y_te)}


def ecg_windows(records: list[np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut records into windows of :data:`ECG_WINDOW` with class-dependent strides.

    A window starts at every multiple of the stride ``s = 500 // d(label)`` strictly before
    ``len(record) - 1000`` (ORCA's ``slide_and_cut``), so short records give no window.
    """
    xs, ys = [], []
    for rec, lab in zip(records, labels):
        stride = ECG_STRIDE // ECG_STRIDE_DIVISOR[int(lab)]
        for start in range(0, len(rec) - ECG_WINDOW, stride):
            xs.append(rec[start:start + ECG_WINDOW])
            ys.append(lab)
    if not xs:
        return np.zeros((0, 1, ECG_WINDOW), np.float32), np.zeros((0,), np.int64)
    return np.stack(xs).astype(np.float32)[:, None], np.asarray(ys, np.int64)


def _read_ecg(paths: list[Path]) -> Splits:
    from sklearn.model_selection import train_test_split

    with open(paths[0], "rb") as fh:
        res = pickle.load(fh)  # the NB360 file is a pickle; its sha256 is checked
    records = [(np.asarray(r, np.float64) - np.mean(r)) / np.std(r) for r in res["data"]]
    unknown = sorted({str(lab) for lab in res["label"]} - set(ECG_LABELS))
    if unknown:
        raise InvalidInputError(f"ECG: unexpected labels {unknown} in {paths[0].name}")
    labels = np.asarray([ECG_LABELS[str(lab)] for lab in res["label"]], np.int64)
    idx = np.arange(len(records))
    tr, te = train_test_split(idx, test_size=0.1, random_state=0)
    rng = np.random.default_rng(0)
    out = {}
    for split, rows in (("train", tr), ("test", te)):
        x, y = ecg_windows([records[i] for i in rows], labels[rows])
        perm = rng.permutation(len(y))
        out[split] = (x[perm], y[perm])
    return out


def _read_satellite(paths: list[Path]) -> Splits:
    out = {}
    for split, path in zip(("train", "test"), paths):
        d = np.load(path, allow_pickle=True)[()]  # a pickled dict; sha256 is checked
        out[split] = (np.asarray(d["data"], np.float32)[:, None],
                      np.asarray(d["label"], np.int64) - 1)
    return out


def _read_deepsea(paths: list[Path]) -> Splits:
    with np.load(paths[0]) as d:
        x_train = np.concatenate([d["x_train"], d["x_val"]])
        y_train = np.concatenate([d["y_train"], d["y_val"]])
        x_test, y_test = d["x_test"], d["y_test"]
    return {
        "train": (np.transpose(x_train, (0, 2, 1)).astype(np.float32),
                  y_train.astype(np.float32)),
        "test": (np.transpose(x_test, (0, 2, 1)).astype(np.float32), y_test.astype(np.float32)),
    }


def _read_prepared(key: str, root: Path) -> Splits:
    folder = Path(root) / "nb360" / key.lower() / "prepared"
    names = [f"{s}_{xy}.npy" for s in ("train", "test") for xy in ("x", "y")]
    if not all((folder / n).exists() for n in names):
        try:  # the extracted raw files -> prepared arrays, once
            nb360_prepare.prepare(key, root)
        except DataMissingError as err:
            raise DataMissingError(
                f"{err} The preparation ({_PREPARATION[key]}) reads the extracted archive; "
                f"alternatively put prepared splits in {folder} as " + ", ".join(names)
                + " with the shapes of `crossmodal tasks`.") from err
    a = {n[:-4]: np.load(folder / n, allow_pickle=False) for n in names}
    return {s: (a[f"{s}_x"], a[f"{s}_y"]) for s in ("train", "test")}


_PREPARATION = {
    "FSD50K": "log-mel spectrograms of the 1-second chunks, 96 mel bands x 102 frames",
    "PSICOV": "PDNet's 57 feature channels and cropped distance maps per protein",
    "Cosmic": "deepCR's 128x128 patches with sky backgrounds and cosmic-ray masks",
}

READERS: dict[str, Callable[[list[Path]], Splits]] = {
    "CIFAR100": _read_cifar100, "Spherical": _read_spherical, "NinaPro": _read_ninapro,
    "DarcyFlow": _read_darcy, "ECG": _read_ecg, "Satellite": _read_satellite,
    "DeepSEA": _read_deepsea,
}
TASKS = (*READERS, *NEEDS_PREPARATION)


def load_nb360(key: str, root: Path, *, use_cache: bool = True) -> Splits:
    """Train/test splits of a NAS-Bench-360 task from the data root.

    Parameters
    ----------
    key : a NAS-Bench-360 registry key (``CIFAR100``, ``Spherical``, ``NinaPro``, ``FSD50K``,
        ``DarcyFlow``, ``PSICOV``, ``Cosmic``, ``ECG``, ``Satellite``, ``DeepSEA``).
    root : the data root; files are where the manifest puts them (``<root>/nb360/<task>/``).
    use_cache : read/write the prepared ``.npy`` cache under ``<root>/nb360/cache/``.

    Returns
    -------
    dict
        ``{"train": (x, y), "test": (x, y)}`` (see the module docstring for each task).

    Raises
    ------
    DataMissingError
        The task's files are absent; the message names the download command.
    """
    if key not in TASKS:
        raise unknown_name("NAS-Bench-360 task", key, list(TASKS))
    root = Path(root)
    paths = require_files(key, root)
    if key in NEEDS_PREPARATION:
        return _read_prepared(key, root)
    reader = READERS[key]
    records = verify_files(key, root)  # never read (or cache) a damaged file
    if not use_cache:
        return reader(paths)
    meta = {"version": PREPROCESS_VERSION, "task": key,
            "sources": [{"name": p.name, "size": r["size"], "sha256": r["sha256"]}
                        for p, r in zip(paths, records)]}
    cdir = cache.cache_dir(root, "nb360", key, f"v{PREPROCESS_VERSION}")
    cached = cache.load_arrays(cdir, meta)
    if cached is not None:
        return {s: (cached[f"{s}_x"], cached[f"{s}_y"]) for s in ("train", "test")}
    splits = reader(paths)
    cache.save_arrays(cdir, {f"{s}_{xy}": arr for s, pair in splits.items()
                             for xy, arr in zip(("x", "y"), pair)}, meta)
    return splits
