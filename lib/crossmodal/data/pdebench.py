"""Loaders of the 8 PDEBench tasks of PaRe Table 9, for real and generated files alike.

Conventions (ORCA's ``load_pde`` / ``UNetDatasetSingle`` / ``UNetDatasetMult``):

* **input** is the state at t = 0 and **target** the state at ORCA's target time, which is
  the last saved step for every task except 1D diffusion-reaction, where ORCA's
  ``t_train = 30`` on the 0.01 time grid makes the target u(t = 0.29). The loader picks the
  saved step closest to that physical time, so generated files on a coarser time grid work.
* **split**: single-array files (``tensor``, ``density``..., ``nu``) use the *first* 10 % of
  samples as test, group files (``*_NA_NA.h5``: diffusion-sorption, shallow water, 2D
  diffusion-reaction) the *last* 10 % of the sorted group names, exactly as ORCA does.
* **resolution**: native by default, which is PaRe Table 9's 1024 (1D) and 128x128 (2D) for
  the real files. ``resolution=`` subsamples by striding, as ORCA's ``reduced_resolution``
  does. The tasks (``crossmodal.tasks.pdebench``) stride the arrays to ORCA's training
  resolution after loading: 256 for Advection and 64x64 for Darcy (``ORCA_RESOLUTION``).
* **channels**: Advection, Burgers, diffusion-reaction 1D, diffusion-sorption 1 -> 1;
  Navier-Stokes 1D 3 -> 3 (density, Vx, pressure); Darcy coefficient 1 -> solution 1;
  shallow water h 1 -> 1; 2D diffusion-reaction (u, v) 2 -> 2.

Where the kit departs from ORCA's code: ORCA flattens Navier-Stokes' 3 channels into one
sequence of 3072 and standardises it with training statistics, and for 2D
diffusion-reaction maps u(t=0) to v(t=T) only; the kit keeps the channels separate, returns
physical values, and maps (u, v) to (u, v). Arrays are float32 ``(n, C, L)`` or
``(n, C, H, W)``.

Before a file is read it is verified (:func:`crossmodal.data.checksums.check_file`): a real
file against the manifest's size and published md5, a generated file against the sha256
recorded when ``crossmodal data generate`` wrote it. Splits are cached as ``.npy`` with sha256
checksums under ``<root>/pdebench/cache/``, built only from a verified file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossmodal.data import cache, checksums, pde
from crossmodal.data.checksums import CorruptDataError
from crossmodal.data.manifest import Manifest
from crossmodal.errors import DataMissingError, InvalidInputError, unknown_name

Splits = dict[str, tuple[np.ndarray, np.ndarray]]

#: Bump when the preprocessing changes: every cache becomes stale and is rebuilt.
PREPROCESS_VERSION = 1
TEST_FRACTION = 0.1


@dataclass(frozen=True)
class PDESpec:
    """How one PDEBench task is stored and read."""

    key: str
    filename: str  # the real PDEBench file (manifest path: pdebench/<filename>)
    layout: str  # "tensor" | "cfd" | "darcy" | "groups"
    channels: tuple[str, ...]
    t_target: float | None  # physical time of the target; None: last saved step
    generator: str | None  # key of crossmodal.data.pde generator, None if not generable
    split: str  # "first": test = first 10 %, "last": test = last 10 % of sorted groups
    attrs: tuple[tuple[str, float], ...] = ()


SPECS: dict[str, PDESpec] = {s.key: s for s in [
    PDESpec("Advection1D", "1D_Advection_Sols_beta0.4.hdf5", "tensor", ("u",), None,
            "advection1d", "first", (("beta", 0.4),)),
    PDESpec("Burgers1D", "1D_Burgers_Sols_Nu1.0.hdf5", "tensor", ("u",), None,
            "burgers1d", "first", (("Nu", 1.0),)),
    PDESpec("DiffusionReaction1D", "ReacDiff_Nu0.5_Rho1.0.hdf5", "tensor", ("u",), 0.29,
            "diffreact1d", "first", (("Nu", 0.5), ("rho", 1.0))),
    PDESpec("DiffusionSorption1D", "1D_diff-sorp_NA_NA.h5", "groups", ("u",), None,
            "diffsorp1d", "last"),
    PDESpec("NavierStokes1D", "1D_CFD_Rand_Eta0.1_Zeta0.1_periodic_Train.hdf5", "cfd",
            ("density", "Vx", "pressure"), None, None, "first"),
    PDESpec("DarcyFlow2D", "2D_DarcyFlow_beta0.1_Train.hdf5", "darcy", ("nu", "u"), None,
            "darcy2d", "first", (("beta", 0.1),)),
    PDESpec("ShallowWater2D", "2D_rdb_NA_NA.h5", "groups", ("h",), None, None, "last"),
    PDESpec("DiffusionReaction2D", "2D_diff-react_NA_NA.h5", "groups", ("u", "v"), None,
            "diffreact2d", "last"),
]}

#: generate_pde.py task names -> registry keys (case and punctuation are ignored).
GENERATE_ALIASES = {
    "advection1d": "Advection1D", "advection": "Advection1D", "adv": "Advection1D",
    "burgers1d": "Burgers1D", "burgers": "Burgers1D",
    "diffreact1d": "DiffusionReaction1D", "diffusionreaction1d": "DiffusionReaction1D",
    "reacdiff1d": "DiffusionReaction1D", "reactiondiffusion1d": "DiffusionReaction1D",
    "diffsorp1d": "DiffusionSorption1D", "diffusionsorption1d": "DiffusionSorption1D",
    "darcy2d": "DarcyFlow2D", "darcyflow2d": "DarcyFlow2D", "darcy": "DarcyFlow2D",
    "diffreact2d": "DiffusionReaction2D", "diffusionreaction2d": "DiffusionReaction2D",
    "reacdiff2d": "DiffusionReaction2D",
}


def get_spec(task: str) -> PDESpec:
    """The spec of a PDEBench task key (``Advection1D``) or generator name (``advection1d``)."""
    if task in SPECS:
        return SPECS[task]
    norm = re.sub(r"[^a-z0-9]", "", task.lower())
    if norm in GENERATE_ALIASES:
        return SPECS[GENERATE_ALIASES[norm]]
    for key in SPECS:
        if key.lower() == norm:
            return SPECS[key]
    raise unknown_name("PDEBench task", task, list(SPECS))


def real_path(task: str, root: Path) -> Path:
    """Where ``crossmodal data download <task>`` puts the real file."""
    return Path(root) / "pdebench" / get_spec(task).filename


def generated_path(task: str, root: Path) -> Path:
    """Where ``generate_pde.py`` writes the generated file: ``gen_`` + the real file name."""
    return Path(root) / "pdebench" / ("gen_" + get_spec(task).filename)


def generate_command(task: str, root: Path | str = "data/", **options: object) -> str | None:
    """The ``crossmodal data generate`` command that writes ``task``'s generated file.

    ``options`` (``n_samples``, ``resolution``, ``seed``, ``n_steps``) are added as flags
    when given, so the command reproduces a particular file.
    """
    spec = get_spec(task)
    if spec.generator is None:
        return None
    flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in options.items() if v is not None)
    return f"crossmodal data generate --task {spec.generator}{flags} --out {root}"


def _script_command(task: str, root: Path | str) -> str:
    return f"python data_scripts/generate_pde.py --task {get_spec(task).generator} --out {root}"


def find_source(task: str, root: Path, prefer: str = "auto") -> tuple[Path, str]:
    """The file to read and its kind (``"real"``/``"generated"``).

    ``prefer``: ``"auto"`` (the real file if present, else the generated one), ``"real"`` or
    ``"generated"``. Raises :class:`DataMissingError` naming the commands that provide it.
    """
    if prefer not in ("auto", "real", "generated"):
        raise ValueError(f"prefer must be 'auto', 'real' or 'generated', got {prefer!r}")
    spec = get_spec(task)
    real, gen = real_path(task, root), generated_path(task, root)
    candidates = {"auto": [(real, "real"), (gen, "generated")], "real": [(real, "real")],
                  "generated": [(gen, "generated")]}[prefer]
    for path, kind in candidates:
        if path.exists():
            return path, kind
    gen_cmd = generate_command(task, root)
    msg = (f"{spec.key}: no data file in {Path(root) / 'pdebench'} (looked for "
           + " and ".join(p.name for p, _ in candidates) + "). "
           f"Download the real PDEBench file with `crossmodal data download {spec.key}`")
    msg += (f", or generate a small one offline with `{gen_cmd}` (from a checkout also "
            f"`{_script_command(task, root)}`)." if gen_cmd
            else "; the kit has no offline generator for this equation.")
    raise DataMissingError(msg)


def repair_hint(task: str, root: Path, kind: str) -> str:
    """What to do about a bad data file of ``task`` of the given kind (``real``/``generated``)."""
    spec = get_spec(task)
    if kind == "generated":
        rel = str(generated_path(task, root).relative_to(root))
        command = (checksums.recorded_checksums(root).get(rel, {}).get("command")
                   or generate_command(task, root))
        return f"Regenerate it with `{command}`."
    hint = f"Delete it and run `crossmodal data download {spec.key}`"
    if generated_path(task, root).exists():
        hint += f", or delete it to use the generated {generated_path(task, root).name}"
    elif spec.generator:
        hint += f", or delete it and generate a small file with `{generate_command(task, root)}`"
    return hint + "."


def verify_source(task: str, root: Path, path: Path, kind: str) -> dict:
    """Check a file before it is read (size always, checksum when it changed); its record.

    Raises
    ------
    CorruptDataError
        The file differs from the manifest or from its recorded checksum; the message names
        the file and the command that repairs it.
    """
    root = Path(root)
    rel = str(Path(path).relative_to(root))
    fspec = Manifest.load().find_file(rel) if kind == "real" else None
    return checksums.check_file(root, rel, spec=fspec, generated=kind == "generated",
                                repair=repair_hint(task, root, kind))


# --------------------------------------------------------------------------- reading


def _stride(native: int, resolution: int | None, task: str) -> int:
    if resolution is None or resolution == native:
        return 1
    if resolution <= 0 or native % resolution:
        raise InvalidInputError(
            f"{task}: resolution {resolution} does not divide the native resolution {native}; "
            f"choose a divisor such as {native // 2} or {native // 4}")
    return native // resolution


def _time_index(times: np.ndarray | None, n_t: int, t_target: float | None) -> int:
    if t_target is None:
        return n_t - 1
    if times is None:
        raise InvalidInputError("the file has no time coordinate; cannot locate the target time")
    times = np.asarray(times, dtype=np.float64)[:n_t]  # PDEBench's 1D t-coordinate has n_t + 1
    return int(np.argmin(np.abs(times - t_target)))


def _split_rows(n: int, split: str) -> tuple[slice, slice]:
    n_test = int(n * TEST_FRACTION)
    if split == "first":
        return slice(n_test, n), slice(0, n_test)
    cut = int(n * (1 - TEST_FRACTION))
    return slice(0, cut), slice(cut, n)


def _read_single(f, spec: PDESpec, resolution: int | None) -> tuple[np.ndarray, np.ndarray]:
    """tensor / cfd / darcy layouts -> x, y (all samples, file order)."""
    if spec.layout == "darcy":
        nu, sol = f["nu"], f["tensor"]
        s = _stride(nu.shape[-1], resolution, spec.key)
        x = np.asarray(nu[:, ::s, ::s], dtype=np.float32)[:, None]
        y = np.asarray(sol[:, :, ::s, ::s], dtype=np.float32)
        return x, y
    names = ("tensor",) if spec.layout == "tensor" else ("density", "Vx", "pressure")
    first = f[names[0]]
    n_t = first.shape[1]
    times = f["t-coordinate"][()] if "t-coordinate" in f else None
    idx = _time_index(times, n_t, spec.t_target)
    s = _stride(first.shape[-1], resolution, spec.key)
    x = np.stack([np.asarray(f[k][:, 0, ::s], dtype=np.float32) for k in names], axis=1)
    y = np.stack([np.asarray(f[k][:, idx, ::s], dtype=np.float32) for k in names], axis=1)
    return x, y


def _group_keys(f) -> list[str]:
    import h5py

    return sorted(k for k in f.keys() if isinstance(f[k], h5py.Group) and "data" in f[k])


def _read_groups(f, spec: PDESpec, resolution: int | None,
                 keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    idx = s = None
    if not keys:
        return np.zeros((0,), np.float32), np.zeros((0,), np.float32)
    for key in keys:
        g = f[key]
        data = g["data"]  # (T, X, C) or (T, Y, X, C)
        if idx is None:
            times = g["grid/t"][()] if "grid" in g and "t" in g["grid"] else None
            idx = _time_index(times, data.shape[0], spec.t_target)
            s = _stride(data.shape[1], resolution, spec.key)
        sl = (slice(None, None, s),) * (data.ndim - 2)
        first = np.asarray(data[(0, *sl)], dtype=np.float32)
        last = np.asarray(data[(idx, *sl)], dtype=np.float32)
        xs.append(np.moveaxis(first, -1, 0))  # channels first
        ys.append(np.moveaxis(last, -1, 0))
    return np.stack(xs), np.stack(ys)


_REQUIRED = {"tensor": ("tensor",), "cfd": ("density", "Vx", "pressure"),
             "darcy": ("nu", "tensor")}


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def read_splits(path: Path, task: str, *, resolution: int | None = None,
                repair: str | None = None) -> Splits:
    """Read train/test splits straight from a PDEBench-format HDF5 file (no cache).

    A file h5py cannot open (truncated, empty, not HDF5), one without the layout's datasets
    or one whose data cannot be read raises a one-line :class:`CorruptDataError` naming the
    file, what is wrong and ``repair`` (default: the download and generate commands).
    """
    import h5py

    spec = get_spec(task)
    path = Path(path)
    if repair is None:
        kind = "generated" if path.name.startswith("gen_") else "real"
        root = path.parent.parent
        repair = repair_hint(spec.key, root, kind)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise CorruptDataError(
            f"{path} is not a readable HDF5 file ({_first_line(err)}): it is truncated, empty "
            f"or not HDF5. {repair}") from None
    with f:
        if spec.layout == "groups":
            keys = _group_keys(f)
            if not keys:
                raise CorruptDataError(
                    f"{path} has no sample groups with a 'data' dataset (top-level keys: "
                    f"{', '.join(sorted(f.keys())[:8]) or 'none'}); it is not a PDEBench "
                    f"{spec.key} file. {repair}")
        else:
            missing = [k for k in _REQUIRED[spec.layout] if k not in f]
            if missing:
                raise CorruptDataError(
                    f"{path} has no dataset {', '.join(repr(k) for k in missing)} (it has: "
                    f"{', '.join(sorted(f.keys())[:8]) or 'nothing'}); it is not a PDEBench "
                    f"{spec.key} file. {repair}")
        try:
            if spec.layout == "groups":
                train_rows, test_rows = _split_rows(len(keys), spec.split)
                train = _read_groups(f, spec, resolution, keys[train_rows])
                test = _read_groups(f, spec, resolution, keys[test_rows])
            else:
                x, y = _read_single(f, spec, resolution)
                train_rows, test_rows = _split_rows(len(x), spec.split)
                train = (x[train_rows], y[train_rows])
                test = (x[test_rows], y[test_rows])
        except (OSError, KeyError, IndexError) as err:
            raise CorruptDataError(
                f"{path}: its data cannot be read ({type(err).__name__}: {_first_line(err)}). "
                f"{repair}") from None
    for name, (x, _y) in (("train", train), ("test", test)):
        if len(x) == 0:
            raise InvalidInputError(
                f"{spec.key}: the {name} split of {Path(path).name} is empty; the file has too "
                "few samples (need at least 10 for a 10 % test split)")
    return {"train": train, "test": test}


def load_pdebench(task: str, root: Path, *, resolution: int | None = None,
                  prefer: str = "auto", use_cache: bool = True) -> Splits:
    """Train/test splits of a PDEBench task from ``root`` (see the module docstring).

    Parameters
    ----------
    task : one of ``Advection1D, Burgers1D, DiffusionReaction1D, DiffusionSorption1D,
        NavierStokes1D, DarcyFlow2D, ShallowWater2D, DiffusionReaction2D``.
    root : the data root; files are looked up in ``<root>/pdebench/``.
    resolution : spatial size of the output (a divisor of the file's); ``None`` keeps it.
    prefer : ``"auto"`` (real file if present, else generated), ``"real"`` or ``"generated"``.
    use_cache : read/write the ``.npy`` cache under ``<root>/pdebench/cache/``.

    Returns
    -------
    dict
        ``{"train": (x, y), "test": (x, y)}``, float32, x and y of shape (n, C, L) or
        (n, C, H, W).

    Raises
    ------
    DataMissingError
        Neither the real nor the generated file is present; the message names the commands.
    CorruptDataError
        The file fails its size or checksum check, or is not a readable PDEBench file; the
        message names the file and the command that repairs it.
    """
    spec = get_spec(task)
    root = Path(root)
    path, kind = find_source(spec.key, root, prefer)
    rec = verify_source(spec.key, root, path, kind)  # never read (or cache) a bad file
    repair = repair_hint(spec.key, root, kind)
    if not use_cache:
        return read_splits(path, spec.key, resolution=resolution, repair=repair)
    meta = {"version": PREPROCESS_VERSION, "task": spec.key,
            "source": {"name": path.name, "size": rec["size"], "sha256": rec["sha256"]},
            "kind": kind, "resolution": resolution}
    cdir = cache.cache_dir(root, "pdebench", spec.key, f"{kind}-r{resolution or 'native'}")
    cached = cache.load_arrays(cdir, meta)
    if cached is not None:
        return {s: (cached[f"{s}_x"], cached[f"{s}_y"]) for s in ("train", "test")}
    splits = read_splits(path, spec.key, resolution=resolution, repair=repair)
    cache.save_arrays(cdir, {f"{s}_{xy}": arr for s, pair in splits.items()
                             for xy, arr in zip(("x", "y"), pair)}, meta)
    return splits


# --------------------------------------------------------------------------- generation


def generate_task_file(task: str, root: Path, *, n_samples: int = 256,
                       resolution: int | None = None, seed: int = 0,
                       n_steps: int | None = None) -> Path:
    """Generate a PDEBench-format file for ``task`` at :func:`generated_path` and return it.

    ``resolution`` defaults to 256 in 1D and 32 (i.e. 32x32) in 2D. The file's sha256, size
    and stamp are recorded in ``<root>/.checksums.json`` with the command that regenerates
    it, so every later use can verify it.

    Raises
    ------
    InvalidInputError
        ``n_samples`` below :data:`MIN_SAMPLES`, ``resolution`` below 2 or ``n_steps`` below
        2 (checked before any work), or a task without a generator.
    """
    spec = get_spec(task)
    validate_generate_options(n_samples=n_samples, resolution=resolution, n_steps=n_steps)
    if spec.generator is None:
        raise InvalidInputError(
            f"{spec.key} has no offline generator (the kit solves advection, Burgers, "
            "diffusion-reaction 1D/2D, diffusion-sorption and Darcy flow); download the real "
            f"file with `crossmodal data download {spec.key}`")
    is_2d = spec.key.endswith("2D")
    res = resolution if resolution is not None else (32 if is_2d else 256)
    kwargs: dict = {"n_samples": n_samples, "resolution": res, "seed": seed}
    if n_steps is not None and spec.generator != "darcy2d":
        kwargs["n_steps"] = n_steps
    fn = {"advection1d": pde.generate_advection_1d, "burgers1d": pde.generate_burgers_1d,
          "diffreact1d": pde.generate_diffusion_reaction_1d,
          "diffsorp1d": pde.generate_diffusion_sorption_1d, "darcy2d": pde.generate_darcy_2d,
          "diffreact2d": pde.generate_diffusion_reaction_2d}[spec.generator]
    arrays = fn(**kwargs)
    attrs = dict(spec.attrs)
    attrs.update({"generated_by": "crossmodal.data.pde." + fn.__name__, "seed": seed,
                  "n_samples": n_samples, "resolution": res})
    root = Path(root)
    path = pde.write_pdebench_hdf5(arrays, generated_path(spec.key, root), attrs=attrs)
    command = generate_command(spec.key, root, n_samples=n_samples, resolution=resolution,
                               seed=seed, n_steps=n_steps)
    checksums.record(root, str(path.relative_to(root)), checksums.hash_file(path),
                     source="generated", command=command, required=True)
    return path


#: The loader's 10 % test split needs at least 10 samples for one test sample.
MIN_SAMPLES = 10


def validate_generate_options(*, n_samples: int, resolution: int | None,
                              n_steps: int | None) -> None:
    """Reject generator options that cannot give a usable file, before any work."""
    for name, value, low, why in (
            ("n_samples", n_samples, MIN_SAMPLES, "the loader's 10 % test split needs at least "
             f"{MIN_SAMPLES} samples"),
            ("resolution", resolution, 2, "a grid needs at least 2 points per axis"),
            ("n_steps", n_steps, 2, "the initial and the final state must be saved")):
        if value is None and name != "n_samples":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            flag = "--" + name.replace("_", "-")
            raise InvalidInputError(f"{flag} must be an integer >= {low}, got {value!r}: {why}")
