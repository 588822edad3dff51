r"""Tiny data sets in the publishers' formats, for dry runs of the paper path without data.

``crossmodal data fixtures --dest DIR`` writes, for every paper task and every proxy, a few
dozen random samples in the layout the real download has (file names and folders below the
data root as in the manifest, the same containers, keys, dtypes, per-sample shapes and label
encodings), so that the kit's loaders read them through the same code as the real files:

==================  ==========================================================================
entry               what is written (paths below the data root)
==================  ==========================================================================
PDEBench (8)        ``pdebench/<real file name>``: HDF5 with the real keys (``tensor``,
                    ``x-coordinate``, ``t-coordinate``; ``density``/``Vx``/``pressure``;
                    ``nu``/``tensor``; groups ``0000``.. with ``data`` and ``grid/{x,y,t}``),
                    float32, the real spatial size (1024 or 128x128) and channels; only 5
                    saved time steps instead of 101/201 (the loaders pick a step by time)
CIFAR100            ``cifar-100-python.tar.gz`` with the python pickles ``train``/``test``/
                    ``meta`` (bytes keys, uint8 rows of 3072, ``fine_labels``)
Spherical           ``s2_cifar100.gz``: a gzipped pickle ``{split: {"images", "labels"}}``,
                    uint8 (n, 3, 60, 60)
NinaPro             ``ninapro_{train,val,test}.npy`` (n, 52, 16) float32 and ``label_*.npy``
DarcyFlow           ``piececonst_r421_N1024_smooth{1,2}.mat`` (MATLAB v5, ``coeff``/``sol``
                    float64 421x421)
ECG                 ``challenge2017.pkl``: ``{"data": [records], "label": ["N"|"A"|"O"|"~"]}``
Satellite           ``satellite_{train,test}.npy``: pickled dicts ``{"data" (n, 46), "label"
                    1..24}``
DeepSEA             ``deepsea_filtered.npz``: ``x_{train,val,test}`` one-hot (n, 1000, 4),
                    ``y_*`` (n, 36)
FSD50K              ``audio.zip`` (and its extraction): ``chunks/{tr,val,eval}.csv`` (columns
                    files, labels, ext), ``chunks/lbl_map.json``, 1-s 22.05 kHz wav chunks
PSICOV              ``protein.zip`` (and its extraction): ``protein/{deepcov,psicov}.lst``,
                    ``protein/<set>/features/<pdb>.pkl`` (PDNet features) and
                    ``protein/<set>/distance/<pdb>-cb.npy`` ((L, seq, Cb distance map))
Cosmic              ``deepCR.ACS-WFC.{train,test}.tar`` (and their extraction):
                    ``{train,test}_dirs.npy`` listing ``./<split>/<field>/<i>_img.npy`` files
                    of (3, H, W) image/mask/ignore, with a ``sky.npy`` per field
CIFAR10             ``cifar-10-python.tar.gz`` (``data_batch_1..5``, ``test_batch``,
                    ``batches.meta``)
CoNLL2003           ``conll2003.zip``: ``train.txt``/``valid.txt``/``test.txt`` in the
                    4-column CoNLL format (token, POS, chunk, IOB1 NER tag)
TinyImageNet        ``tiny-imagenet-200.zip`` (and extraction): ``wnids.txt``, ``words.txt``,
                    ``train/<wnid>/images/*.JPEG``, ``val/images`` + ``val_annotations.txt``
Caltech101          ``caltech-101.zip`` (and extraction): ``caltech-101/101_ObjectCategories
                    .tar.gz`` (``<class>/image_0001.jpg``) and ``Annotations.tar``
PascalVOC2012       ``VOCtrainval_11-May-2012.tar`` (and extraction): ``VOCdevkit/VOC2012/``
                    ``JPEGImages``, palette PNG ``SegmentationClass``, ``ImageSets/Segmentation``
==================  ==========================================================================

Layouts of FSD50K, PSICOV and Cosmic follow the authors' loaders (ORCA ``src/data_loaders.py``
and ``src/utils.py``), since NAS-Bench-360 documents no more; turning them into arrays is
:mod:`crossmodal.data.nb360_prepare`.

Fixtures can never pass as real data: the root gets a ``FIXTURES`` marker file, ``crossmodal
data verify`` reports "fixture" for it instead of checking (or recording) checksums,
``crossmodal data download`` refuses to write into it, and ``results.json`` of a run on it
records ``"data": "fixture"``.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from crossmodal.data.manifest import Manifest
from crossmodal.data.pdebench import get_spec, real_path
from crossmodal.data.root import FIXTURE_MARKER, is_fixture_root
from crossmodal.errors import InvalidInputError, unknown_name

#: Name of the marker file at the root of a fixture data root.
MARKER = FIXTURE_MARKER  # the marker file of a fixture root (crossmodal.data.root)
FIXTURE_VERSION = 1


# --------------------------------------------------------------------------- marker


def fixture_info(root: str | Path) -> dict | None:
    """The marker's content if ``root`` is a fixture root, else ``None``."""
    path = Path(root) / MARKER
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {"kind": "crossmodal-fixtures", "note": "unreadable marker"}


# --------------------------------------------------------------------------- helpers


def _save_pickle(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> None:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _extract_copy(archive: Path, members: dict[str, bytes]) -> None:
    """Write the members next to the archive, as ``crossmodal data download`` extracts it."""
    for name, data in members.items():
        out = archive.parent / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    (archive.parent / f".{archive.name}.extracted").write_text(archive.name, "utf-8")


def _npy_bytes(arr, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _image_bytes(arr: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _cifar_rows(rng, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


# --------------------------------------------------------------------------- PDEBench


def _pdebench(key: str, root: Path, rng, n: int = 20, n_t: int = 5) -> list[Path]:
    import h5py  # lazy: HDF5 is needed only to write PDEBench fixtures

    spec = get_spec(key)
    path = real_path(key, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.linspace(0.0, 1.0, n_t + 1).astype(np.float32)  # 1D files: n_t + 1 entries
    if spec.t_target is not None:
        t[1] = spec.t_target  # keep a step at the target time the loader looks for
    with h5py.File(path, "w") as f:
        for name, value in spec.attrs:
            f.attrs[name] = value
        if spec.layout in ("tensor", "cfd"):
            names = ("tensor",) if spec.layout == "tensor" else ("density", "Vx", "pressure")
            for name in names:
                f.create_dataset(name, data=rng.standard_normal((n, n_t, 1024)).astype(np.float32))
            f.create_dataset("x-coordinate", data=((np.arange(1024) + 0.5) / 1024).astype(np.float32))
            f.create_dataset("t-coordinate", data=t)
        elif spec.layout == "darcy":
            f.create_dataset("nu", data=rng.uniform(0.1, 1.0, (n, 128, 128)).astype(np.float32))
            f.create_dataset("tensor", data=rng.random((n, 1, 128, 128)).astype(np.float32))
            f.create_dataset("x-coordinate", data=np.linspace(0, 1, 128, dtype=np.float32))
            f.create_dataset("y-coordinate", data=np.linspace(0, 1, 128, dtype=np.float32))
        else:  # groups "0000", "0001", ... as in PDEBench's *_NA_NA.h5
            is_2d = key.endswith("2D")
            c = len(spec.channels)
            shape = (n_t, 128, 128, c) if is_2d else (n_t, 1024, c)
            for i in range(n):
                g = f.create_group(f"{i:04d}")
                g.create_dataset("data", data=rng.standard_normal(shape).astype(np.float32))
                g.create_dataset("grid/t", data=t[:n_t])
                g.create_dataset("grid/x", data=np.linspace(-1, 1, shape[1], dtype=np.float32))
                if is_2d:
                    g.create_dataset("grid/y", data=np.linspace(-1, 1, 128, dtype=np.float32))
    return [path]


# --------------------------------------------------------------------------- NAS-Bench-360


def _cifar100(root: Path, rng) -> list[Path]:
    path = root / "nb360/cifar100/cifar-100-python.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)

    def batch(n: int, name: str) -> bytes:
        fine = rng.integers(0, 100, n)
        return pickle.dumps({b"filenames": [f"img_{i}.png".encode() for i in range(n)],
                             b"batch_label": name.encode(), b"fine_labels": fine.tolist(),
                             b"coarse_labels": (fine // 5).tolist(),
                             b"data": _cifar_rows(rng, n)}, protocol=2)

    meta = pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                         b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}, protocol=2)
    _tar(path, {"cifar-100-python/train": batch(24, "training batch 1 of 1"),
                "cifar-100-python/test": batch(8, "testing batch 1 of 1"),
                "cifar-100-python/meta": meta})
    return [path]


def _spherical(root: Path, rng) -> list[Path]:
    path = root / "nb360/spherical/s2_cifar100.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {s: {"images": rng.integers(0, 256, (n, 3, 60, 60), dtype=np.uint8),
                "labels": rng.integers(0, 100, n).astype(np.int64)}
            for s, n in (("train", 24), ("test", 8))}
    with gzip.open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=4)
    return [path]


def _ninapro(root: Path, rng) -> list[Path]:
    folder = root / "nb360/ninapro"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for split, n in (("train", 20), ("val", 4), ("test", 8)):
        np.save(folder / f"ninapro_{split}.npy", rng.standard_normal((n, 52, 16)).astype(np.float32))
        np.save(folder / f"label_{split}.npy", rng.integers(0, 18, n).astype(np.int64))
        out += [folder / f"ninapro_{split}.npy", folder / f"label_{split}.npy"]
    return out


def _darcyflow(root: Path, rng) -> list[Path]:
    import scipy.io

    folder = root / "nb360/darcyflow"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, n in ((1, 8), (2, 4)):
        # piecewise-constant coefficients (two values, as the FNO data) and a smooth solution
        coeff = np.where(rng.random((n, 421, 421)) > 0.5, 12.0, 3.0)
        grid = np.linspace(0, 1, 421)
        sol = (rng.random((n, 1, 1)) * np.sin(np.pi * grid)[None, :, None]
               * np.sin(np.pi * grid)[None, None, :] * 0.01)
        path = folder / f"piececonst_r421_N1024_smooth{i}.mat"
        scipy.io.savemat(path, {"coeff": coeff, "sol": sol, "Kcoeff": coeff[:, :1, :1]},
                         do_compression=True)
        out.append(path)
    return out


def _ecg(root: Path, rng) -> list[Path]:
    path = root / "nb360/ecg/challenge2017.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(["N", "A", "O", "~"] * 8)
    # PhysioNet 2017 records are int16-valued at 300 Hz and 9-61 s long: ~1000-1300 samples here
    data = [rng.integers(-500, 500, 1001 + int(rng.integers(0, 300))).astype(np.float64)
            for _ in labels]
    _save_pickle({"data": data, "label": labels}, path)
    return [path]


def _satellite(root: Path, rng) -> list[Path]:
    folder = root / "nb360/satellite"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for split, n in (("train", 24), ("test", 8)):
        d = {"data": rng.standard_normal((n, 46)).astype(np.float32),
             "label": rng.integers(1, 25, n).astype(np.int64)}  # 1..24 as published
        np.save(folder / f"satellite_{split}.npy", d, allow_pickle=True)
        out.append(folder / f"satellite_{split}.npy")
    return out


def _deepsea(root: Path, rng) -> list[Path]:
    path = root / "nb360/deepsea/deepsea_filtered.npz"
    path.parent.mkdir(parents=True, exist_ok=True)

    def onehot(n: int) -> np.ndarray:
        return np.eye(4, dtype=np.uint8)[rng.integers(0, 4, (n, 1000))]

    arrays = {}
    for split, n in (("train", 20), ("val", 4), ("test", 8)):
        arrays[f"x_{split}"] = onehot(n)
        arrays[f"y_{split}"] = (rng.random((n, 36)) < 0.2).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return [path]


#: FSD50K: 1-second chunks at 22.05 kHz (ORCA's SpectrogramDataset reads these).
FSD_RATE = 22050


def _wav_bytes(signal: np.ndarray, rate: int = FSD_RATE) -> bytes:
    import scipy.io.wavfile

    buf = io.BytesIO()
    scipy.io.wavfile.write(buf, rate, (np.clip(signal, -1, 1) * 32767).astype(np.int16))
    return buf.getvalue()


def _fsd50k(root: Path, rng) -> list[Path]:
    path = root / "nb360/fsd50k/audio.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f"Label_{i:03d}" for i in range(200)]
    members: dict[str, bytes] = {"chunks/lbl_map.json":
                                 json.dumps({n: i for i, n in enumerate(names)}).encode()}
    for manifest, split, n_clips in (("tr", "train", 12), ("val", "val", 2), ("eval", "eval", 6)):
        rows = ["files,labels,ext"]
        for c in range(n_clips):
            labels = ",".join(names[j] for j in sorted(rng.choice(200, 1 + c % 3, replace=False)))
            for k in range(2):  # two chunks per clip; ``ext`` is the clip id
                rel = f"chunks/{split}/{c:05d}.{k}.wav"
                members[rel] = _wav_bytes(0.1 * rng.standard_normal(FSD_RATE))
                rows.append(f'{rel},"{labels}",{c:05d}')
        members[f"chunks/{manifest}.csv"] = ("\n".join(rows) + "\n").encode()
    _zip(path, members)
    _extract_copy(path, members)
    return [path]


def _psicov(root: Path, rng) -> list[Path]:
    path = root / "nb360/psicov/protein.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    members: dict[str, bytes] = {}
    for subset, n in (("deepcov", 6), ("psicov", 2)):
        pdbs = [f"{i}{subset[:3].upper()}A" for i in range(n)]
        members[f"protein/{subset}.lst"] = ("\n".join(pdbs) + "\n").encode()
        for pdb in pdbs:
            length = int(rng.integers(40, 150))
            seq = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), length))
            feats = {"seq": seq, "ss": rng.random((3, length)), "pssm": rng.random((length, 22)),
                     "sa": rng.random(length), "entropy": rng.random(length),
                     "ccmpred": rng.random((length, length)),
                     "freecon": rng.random((length, length)),
                     "potential": rng.standard_normal((length, length)) * 0.1}
            members[f"protein/{subset}/features/{pdb}.pkl"] = pickle.dumps(feats, protocol=2)
            coords = np.cumsum(rng.standard_normal((length, 3)) * 2.2, axis=0)
            cb = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
            obj = np.empty(3, dtype=object)
            obj[:] = [length, seq, cb]
            members[f"protein/{subset}/distance/{pdb}-cb.npy"] = _npy_bytes(obj, allow_pickle=True)
    _zip(path, members)
    _extract_copy(path, members)
    return [path]


def _cosmic(root: Path, rng) -> list[Path]:
    folder = root / "nb360/cosmic"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for split, n_fields, per_field in (("train", 3, 4), ("test", 2, 2)):
        members: dict[str, bytes] = {}
        paths = []
        for fld in range(n_fields):
            for i in range(1, per_field + 1):
                image = rng.standard_normal((192, 192)).astype(np.float32)
                mask = (rng.random((192, 192)) < 0.02).astype(np.float32)
                ignore = np.zeros((192, 192), np.float32)
                rel = f"{split}/field{fld:02d}/{i}_img.npy"
                members[rel] = _npy_bytes(np.stack([image, mask, ignore]))
                paths.append("./" + rel)
            members[f"{split}/field{fld:02d}/sky.npy"] = _npy_bytes(
                rng.uniform(0.5, 2.0, per_field).astype(np.float32))
        members[f"{split}_dirs.npy"] = _npy_bytes(np.asarray(paths, dtype=object),
                                                  allow_pickle=True)
        path = folder / f"deepCR.ACS-WFC.{split}.tar"
        _tar(path, members, "w")
        _extract_copy(path, members)
        out.append(path)
    return out


# --------------------------------------------------------------------------- proxies


def _cifar10(root: Path, rng) -> list[Path]:
    path = root / "proxies/cifar10/cifar-10-python.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)

    def batch(n: int, name: str) -> bytes:
        return pickle.dumps({b"batch_label": name.encode(),
                             b"labels": rng.integers(0, 10, n).tolist(),
                             b"data": _cifar_rows(rng, n),
                             b"filenames": [f"img_{i}.png".encode() for i in range(n)]},
                            protocol=2)

    members = {f"cifar-10-batches-py/data_batch_{i}": batch(8, f"training batch {i} of 5")
               for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = batch(8, "testing batch 1 of 1")
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": 8,
         b"num_vis": 3072}, protocol=2)
    _tar(path, members)
    return [path]


_CONLL_WORDS = {"PER": ["Smith", "Maria", "Obama"], "ORG": ["EU", "Reuters", "UN"],
                "LOC": ["Germany", "Paris", "Brussels"], "MISC": ["German", "British", "Euro"]}


def _conll_file(rng, n_sentences: int) -> str:
    lines = ["-DOCSTART- -X- -X- O", ""]
    for s in range(n_sentences):
        kind = ["PER", "ORG", "LOC", "MISC", None][s % 5]
        toks = [("The", "DT", "B-NP", "O"), ("report", "NN", "I-NP", "O")]
        if kind:
            toks.append((str(rng.choice(_CONLL_WORDS[kind])), "NNP", "B-NP", f"I-{kind}"))
        toks += [("said", "VBD", "B-VP", "O"), (".", ".", "O", "O")]
        lines += [" ".join(t) for t in toks] + [""]
    return "\n".join(lines) + "\n"


def _conll2003(root: Path, rng) -> list[Path]:
    path = root / "proxies/conll2003/conll2003.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    _zip(path, {"train.txt": _conll_file(rng, 40).encode(),
                "valid.txt": _conll_file(rng, 10).encode(),
                "test.txt": _conll_file(rng, 10).encode(),
                "metadata": b"CoNLL-2003 fixture (random sentences)\n"})
    return [path]


def _tiny_imagenet(root: Path, rng) -> list[Path]:
    path = root / "proxies/tiny_imagenet/tiny-imagenet-200.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    wnids = [f"n{1440764 + i:08d}" for i in range(4)]
    base = "tiny-imagenet-200"
    m: dict[str, bytes] = {f"{base}/wnids.txt": ("\n".join(wnids) + "\n").encode(),
                           f"{base}/words.txt": "".join(f"{w}\tthing {i}\n"
                                                        for i, w in enumerate(wnids)).encode()}
    for w in wnids:
        boxes = []
        for i in range(6):
            name = f"{w}_{i}.JPEG"
            m[f"{base}/train/{w}/images/{name}"] = _image_bytes(
                rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "JPEG")
            boxes.append(f"{name}\t0\t0\t63\t63")
        m[f"{base}/train/{w}/{w}_boxes.txt"] = ("\n".join(boxes) + "\n").encode()
    ann = []
    for i in range(8):
        m[f"{base}/val/images/val_{i}.JPEG"] = _image_bytes(
            rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "JPEG")
        ann.append(f"val_{i}.JPEG\t{wnids[i % 4]}\t0\t0\t63\t63")
        m[f"{base}/test/images/test_{i}.JPEG"] = m[f"{base}/val/images/val_{i}.JPEG"]
    m[f"{base}/val/val_annotations.txt"] = ("\n".join(ann) + "\n").encode()
    _zip(path, m)
    _extract_copy(path, m)
    return [path]


def _caltech101(root: Path, rng) -> list[Path]:
    path = root / "proxies/caltech101/caltech-101.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    classes = ["Faces", "accordion", "airplanes", "anchor"]
    images, annotations = {}, {}
    for c in classes:
        for i in range(1, 6):
            h, w = int(rng.integers(150, 300)), int(rng.integers(200, 300))
            images[f"101_ObjectCategories/{c}/image_{i:04d}.jpg"] = _image_bytes(
                rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "JPEG")
            annotations[f"Annotations/{c}/annotation_{i:04d}.mat"] = b"MATLAB 5.0 MAT-file fixture"
    inner_img, inner_ann = io.BytesIO(), io.BytesIO()
    for buf, members, mode in ((inner_img, images, "w:gz"), (inner_ann, annotations, "w")):
        with tarfile.open(fileobj=buf, mode=mode) as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    m = {"caltech-101/101_ObjectCategories.tar.gz": inner_img.getvalue(),
         "caltech-101/Annotations.tar": inner_ann.getvalue(),
         "caltech-101/show_annotation.m": b"% fixture\n"}
    _zip(path, m)
    _extract_copy(path, m)
    return [path]


def _voc_palette() -> list[int]:
    pal = []
    for i in range(256):  # the PASCAL VOC colour map (bit-interleaved RGB)
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _pascal_voc(root: Path, rng) -> list[Path]:
    from PIL import Image

    path = root / "proxies/pascal_voc2012/VOCtrainval_11-May-2012.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    base = "VOCdevkit/VOC2012"
    m: dict[str, bytes] = {}
    ids = [f"2007_{i:06d}" for i in range(12)]
    for k, im_id in enumerate(ids):
        h, w = int(rng.integers(200, 375)), int(rng.integers(300, 500))
        m[f"{base}/JPEGImages/{im_id}.jpg"] = _image_bytes(
            rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "JPEG")
        seg = np.zeros((h, w), np.uint8)
        seg[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1 + k % 20  # one object, classes 1..20
        seg[h // 4, w // 4: 3 * w // 4] = 255  # the void border VOC draws around objects
        img = Image.fromarray(seg, mode="P")
        img.putpalette(_voc_palette())
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        m[f"{base}/SegmentationClass/{im_id}.png"] = buf.getvalue()
        m[f"{base}/Annotations/{im_id}.xml"] = (
            f"<annotation><filename>{im_id}.jpg</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size></annotation>").encode()
    seg_sets = {"train": ids[:8], "val": ids[8:], "trainval": ids}
    for name, members in seg_sets.items():
        m[f"{base}/ImageSets/Segmentation/{name}.txt"] = ("\n".join(members) + "\n").encode()
    _tar(path, m, "w")
    _extract_copy(path, m)
    return [path]


# --------------------------------------------------------------------------- entry point


WRITERS: dict[str, Callable[[Path, np.random.Generator], list[Path]]] = {
    **{key: (lambda root, rng, _k=key: _pdebench(_k, root, rng))
       for key in ("Advection1D", "Burgers1D", "DiffusionReaction1D", "DiffusionSorption1D",
                   "NavierStokes1D", "DarcyFlow2D", "ShallowWater2D", "DiffusionReaction2D")},
    "CIFAR100": _cifar100, "Spherical": _spherical, "NinaPro": _ninapro, "FSD50K": _fsd50k,
    "DarcyFlow": _darcyflow, "PSICOV": _psicov, "Cosmic": _cosmic, "ECG": _ecg,
    "Satellite": _satellite, "DeepSEA": _deepsea,
    "CIFAR10": _cifar10, "CoNLL2003": _conll2003, "TinyImageNet": _tiny_imagenet,
    "Caltech101": _caltech101, "PascalVOC2012": _pascal_voc,
}

#: The 18 paper tasks (every NAS-Bench-360 and PDEBench entry) and the five proxies.
PAPER_TASKS = tuple(k for k in WRITERS if k not in
                    ("CIFAR10", "CoNLL2003", "TinyImageNet", "Caltech101", "PascalVOC2012"))
PROXIES = ("CIFAR10", "CoNLL2003", "TinyImageNet", "Caltech101", "PascalVOC2012")


def write_fixtures(dest: str | Path, names: list[str] | None = None, *, seed: int = 0,
                   force: bool = False) -> dict[str, list[Path]]:
    """Write publisher-format fixtures into ``dest`` and mark it as a fixture root.

    Parameters
    ----------
    dest : the data root to write (created if absent). It must be empty or already a
        fixture root: fixtures are never mixed into a root with real data.
    names : manifest entries to write (default: all 18 paper tasks and the 5 proxies).
    seed : seed of the random contents.
    force : write even into a non-empty folder that is not a fixture root.

    Returns
    -------
    dict
        entry name -> files written (the manifest's paths).
    """
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and any(dest.iterdir()) and not is_fixture_root(dest) and not force:
        raise InvalidInputError(
            f"{dest} is not empty and not a fixture root; fixtures must not be mixed with real "
            "data. Choose an empty folder (e.g. --dest /tmp/crossmodal-fixtures).")
    chosen = list(WRITERS) if not names else names
    for name in chosen:
        if name not in WRITERS:
            raise unknown_name("fixture entry", name, list(WRITERS))
    dest.mkdir(parents=True, exist_ok=True)
    # the marker goes first: a crash half-way must not leave unmarked fixture files
    info = fixture_info(dest) or {"kind": "crossmodal-fixtures", "version": FIXTURE_VERSION,
                                  "entries": []}
    info.update(seed=seed, note="random samples in the publishers' formats, written by "
                "`crossmodal data fixtures`; NOT real data: never report numbers from it")
    (dest / MARKER).write_text(json.dumps(info, indent=1), "utf-8")
    written: dict[str, list[Path]] = {}
    for i, name in enumerate(chosen):
        written[name] = WRITERS[name](dest, np.random.default_rng([seed, i]))
    info["entries"] = sorted(set(info.get("entries", [])) | set(written))
    (dest / MARKER).write_text(json.dumps(info, indent=1), "utf-8")
    return written


def describe(root: str | Path) -> list[str]:
    """Lines of ``crossmodal data verify`` for a fixture root: which entries are fixtures."""
    root = Path(root)
    info = fixture_info(root) or {}
    lines = [f"{root} is a FIXTURE root ({MARKER} marker, written by `crossmodal data "
             "fixtures`): random samples in the publishers' formats, not real data; checksums "
             "are not checked or recorded"]
    for entry in Manifest.load():
        present = [f for f in entry.files if (root / f.path).exists()]
        if not present:
            continue
        state = "fixture" if entry.name in info.get("entries", [entry.name]) else "unknown"
        lines.append(f"{entry.name}: {state} ({len(present)}/{len(entry.files)} files)")
    return lines
