r"""Raw files -> arrays for the three NAS-Bench-360 tasks whose data is not arrays already.

``crossmodal data download`` fetches and extracts the archives; the loader
(:func:`crossmodal.data.nb360.load_nb360`) then calls :func:`prepare`, which writes
``<root>/nb360/<task>/prepared/{train,test}_{x,y}.npy`` once. The steps follow the authors'
loaders (ORCA ``src/data_loaders.py``, ``src/utils.py``), made deterministic:

* **FSD50K** (``nb360/fsd50k/chunks/``: ``tr.csv``, ``eval.csv`` with columns ``files``,
  ``labels`` (comma-separated names), ``ext`` (the clip id), ``lbl_map.json``; 1-s wav chunks
  at 22.05 kHz). Per chunk, ORCA's log-mel: power mel spectrogram (``n_fft = 1920``, Hann
  window of ``0.03 s`` = 661 samples, hop ``0.01 s`` = 220, 96 HTK mel bands without
  normalisation, centred frames: 101), :math:`10\log_{10}\max(S, 10^{-10})` clipped to
  80 dB below its maximum, plus 40, minus its mean, one zero frame appended -> (1, 96, 102).
  Labels: 200-dim multi-hot. One sample per clip (its first chunk); ORCA draws a random chunk
  per epoch for training and averages all chunks of a clip for evaluation.
* **PSICOV** (``nb360/psicov/protein/``: ``deepcov.lst`` (train), ``psicov.lst`` (test),
  ``<set>/features/<pdb>.pkl``, ``<set>/distance/<pdb>-cb.npy``). PDNet's 57 input channels
  (``ss`` 3x2, ``pssm`` 22x2, ``sa`` 2, ``entropy`` 2 as row/column broadcasts, then
  ``ccmpred``, ``freecon``, ``potential``), the Cb distance map with values below 1 set to 1;
  both padded by 5 on each side (ORCA's ``pad_size = 10``; inputs with 0, distances with
  100 Å as ORCA's ``get_input_output_dist``), unknown distances 0 (ORCA's ``nan_to_num``),
  training distances clipped at 16 Å (ORCA's ``label_engineering = '16.0'``, train only), and
  cut to the top-left 128x128 window: x (57, 128, 128), y (1, 128, 128). ORCA feeds 512x512
  windows (``load_psicov(training_window=512)``; a random crop of longer proteins) and scores
  whole 512x512 test maps; the 128 window is the kit's deviation (README, paper profile).
* **Cosmic** (``nb360/cosmic/``: ``{train,test}_dirs.npy`` listing ``./<path>.npy`` files of
  (2 or 3, H, W) image / cosmic-ray mask / ignore mask, relative to ``nb360/cosmic``). ORCA's
  fixed 128x128 crop at (64, 64); no sky augmentation (ORCA adds a random multiple of
  ``sky.npy`` to training images): x = image (1, 128, 128), y = mask (1, 128, 128).
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np

from crossmodal.errors import DataMissingError, InvalidInputError

PREPARE_VERSION = 2  # 2: PSICOV targets padded with 100 A, training targets clipped at 16
FSD_RATE, FSD_N_FFT, FSD_WIN, FSD_HOP, FSD_MELS, FSD_TOP_DB = 22050, 1920, 661, 220, 96, 80.0
PSICOV_CHANNELS, PSICOV_PAD, PSICOV_WINDOW = 57, 10, 128
#: ORCA's distance fill of the padding and its training-target clip (Angstrom)
PSICOV_PAD_DISTANCE, PSICOV_TRAIN_CLIP = 100.0, 16.0
COSMIC_CROP, COSMIC_OFFSET = 128, 64


def prepared_dir(key: str, root: Path) -> Path:
    return Path(root) / "nb360" / key.lower() / "prepared"


def _missing(key: str, what: Path) -> DataMissingError:
    return DataMissingError(
        f"{key}: {what} is not there, so the raw files cannot be prepared; fetch and extract "
        f"them with `crossmodal data download {key}` (it unpacks the archives).")


# --------------------------------------------------------------------------- FSD50K


def _mel_filterbank(n_freqs: int, n_mels: int, rate: int) -> np.ndarray:
    """Triangular HTK mel filters without normalisation (torchaudio's defaults), (F, M)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, rate / 2, n_freqs)
    pts = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(rate / 2), n_mels + 2))
    diff = np.diff(pts)
    slopes = pts[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    return np.maximum(0.0, np.minimum(down, up))


def log_mel(audio: np.ndarray) -> np.ndarray:
    """ORCA's FSD50K feature of one chunk (see the module docstring), (96, frames + 1)."""
    import torch

    x = torch.as_tensor(np.asarray(audio, np.float32))
    window = torch.hann_window(FSD_WIN)
    spec = torch.stft(x, FSD_N_FFT, hop_length=FSD_HOP, win_length=FSD_WIN, window=window,
                      center=True, pad_mode="reflect", return_complex=True).abs() ** 2
    fb = torch.as_tensor(_mel_filterbank(FSD_N_FFT // 2 + 1, FSD_MELS, FSD_RATE), dtype=spec.dtype)
    mel = (fb.T @ spec).numpy()
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - FSD_TOP_DB) + FSD_TOP_DB / 2
    db = (db - db.mean()).astype(np.float32)
    return np.pad(db, ((0, 0), (0, 1)))


def _read_wav(path: Path) -> np.ndarray:
    import scipy.io.wavfile

    rate, data = scipy.io.wavfile.read(path)
    if rate != FSD_RATE:
        raise InvalidInputError(f"{path}: sample rate {rate}, expected {FSD_RATE}")
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / np.iinfo(data.dtype).max
    if data.ndim > 1:
        data = data.mean(1)
    return data[:FSD_RATE] if len(data) >= FSD_RATE else np.pad(data, (0, FSD_RATE - len(data)))


def _resolve(chunks: Path, name: str) -> Path:
    for cand in (Path(name), chunks.parent / name, chunks / name, chunks / Path(name).name):
        if cand.exists():
            return cand
    raise DataMissingError(f"FSD50K: audio file {name} listed in the manifest is not in {chunks}")


def _prepare_fsd50k(root: Path) -> dict[str, np.ndarray]:
    chunks = Path(root) / "nb360" / "fsd50k" / "chunks"
    if not (chunks / "lbl_map.json").exists():
        raise _missing("FSD50K", chunks / "lbl_map.json")
    lbl_map = json.loads((chunks / "lbl_map.json").read_text("utf-8"))
    out = {}
    for split, manifest in (("train", "tr.csv"), ("test", "eval.csv")):
        with open(chunks / manifest, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        first: dict[str, dict] = {}
        for row in rows:
            first.setdefault(row["ext"], row)
        xs, ys = [], []
        for row in first.values():
            xs.append(log_mel(_read_wav(_resolve(chunks, row["files"])))[None])
            y = np.zeros(len(lbl_map), np.float32)
            for lbl in row["labels"].split(","):
                y[lbl_map[lbl]] = 1.0
            ys.append(y)
        out[f"{split}_x"], out[f"{split}_y"] = np.stack(xs), np.stack(ys)
    return out


# --------------------------------------------------------------------------- PSICOV


def psicov_features(feats: dict) -> np.ndarray:
    """PDNet's (L, L, 57) input of one protein (ORCA's ``get_feature``)."""
    length = len(feats["seq"])
    chans = []

    def pair(v: np.ndarray) -> None:
        a = np.repeat(np.asarray(v).reshape(1, length), length, axis=0)
        chans.extend([a, a.T])

    for j in range(3):
        pair(feats["ss"][j])
    for j in range(22):
        pair(feats["pssm"][:, j])
    pair(feats["sa"])
    pair(feats["entropy"])
    chans += [np.asarray(feats[k]) for k in ("ccmpred", "freecon", "potential")]
    x = np.stack(chans, axis=-1)
    if x.shape != (length, length, PSICOV_CHANNELS):
        raise InvalidInputError(f"PSICOV: features of shape {x.shape}, expected "
                                f"({length}, {length}, {PSICOV_CHANNELS})")
    return x


def _window(a: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Pad by PSICOV_PAD/2 per side, then the top-left PSICOV_WINDOW square (``fill`` outside)."""
    half = PSICOV_PAD // 2
    out = np.full((PSICOV_WINDOW, PSICOV_WINDOW, a.shape[-1]), fill, np.float32)
    n = min(len(a), PSICOV_WINDOW - half)
    out[half:half + n, half:half + n] = a[:n, :n]
    return out


def _prepare_psicov(root: Path) -> dict[str, np.ndarray]:
    base = Path(root) / "nb360" / "psicov" / "protein"
    out = {}
    for split, subset in (("train", "deepcov"), ("test", "psicov")):
        lst = base / f"{subset}.lst"
        if not lst.exists():
            raise _missing("PSICOV", lst)
        xs, ys = [], []
        for pdb in [s.strip() for s in lst.read_text().splitlines() if s.strip()]:
            with open(base / subset / "features" / f"{pdb}.pkl", "rb") as fh:
                feats = pickle.load(fh)  # the NB360 archive's pickles; sha256 is checked
            length, _seq, cb = np.load(base / subset / "distance" / f"{pdb}-cb.npy",
                                       allow_pickle=True)
            y = np.asarray(cb, np.float64).copy()
            y[y < 1.0] = 1.0
            if int(length) != len(y):
                raise InvalidInputError(f"PSICOV: {pdb} has L = {length} but a {y.shape} map")
            xs.append(np.moveaxis(_window(psicov_features(feats)), -1, 0))
            target = _window(np.nan_to_num(y, nan=0.0)[..., None], fill=PSICOV_PAD_DISTANCE)
            if split == "train":
                target = np.minimum(target, PSICOV_TRAIN_CLIP)
            ys.append(np.moveaxis(target, -1, 0))
        out[f"{split}_x"], out[f"{split}_y"] = np.stack(xs), np.stack(ys)
    return out


# --------------------------------------------------------------------------- Cosmic


def _prepare_cosmic(root: Path) -> dict[str, np.ndarray]:
    base = Path(root) / "nb360" / "cosmic"
    out = {}
    for split in ("train", "test"):
        listing = base / f"{split}_dirs.npy"
        if not listing.exists():
            raise _missing("Cosmic", listing)
        xs, ys = [], []
        for rel in np.load(listing, allow_pickle=True):
            rel = str(rel)
            data = np.load(base / (rel[2:] if rel.startswith("./") else rel))
            sl = (slice(COSMIC_OFFSET, COSMIC_OFFSET + COSMIC_CROP),) * 2
            if data.shape[1] < COSMIC_OFFSET + COSMIC_CROP or data.shape[2] < COSMIC_OFFSET + COSMIC_CROP:
                raise InvalidInputError(f"Cosmic: {rel} is {data.shape}, too small for the "
                                        f"{COSMIC_CROP}-pixel crop at {COSMIC_OFFSET}")
            xs.append(data[0][sl][None].astype(np.float32))
            ys.append(data[1][sl][None].astype(np.float32))
        out[f"{split}_x"], out[f"{split}_y"] = np.stack(xs), np.stack(ys)
    return out


PREPARERS = {"FSD50K": _prepare_fsd50k, "PSICOV": _prepare_psicov, "Cosmic": _prepare_cosmic}


def prepare(key: str, root: Path) -> Path:
    """Turn the extracted raw files of ``key`` into ``prepared/{train,test}_{x,y}.npy``.

    Returns the folder. Raises :class:`DataMissingError` if the raw files are absent.
    """
    if key not in PREPARERS:
        raise InvalidInputError(f"{key} needs no preparation; only {sorted(PREPARERS)} do")
    arrays = PREPARERS[key](Path(root))
    folder = prepared_dir(key, root)
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        tmp = folder / f".{name}.tmp.npy"
        np.save(tmp, arr)
        tmp.replace(folder / f"{name}.npy")
    (folder / "PREPARED.json").write_text(json.dumps(
        {"version": PREPARE_VERSION, "task": key,
         "shapes": {k: list(v.shape) for k, v in arrays.items()}}), "utf-8")
    return folder
