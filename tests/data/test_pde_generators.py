"""PDE solvers against exact solutions and conserved quantities; generated files load as tasks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from crossmodal.data import pde, pdebench
from crossmodal.errors import DataMissingError
from crossmodal.tasks import get_task, spec_for_splits

REPO = Path(__file__).resolve().parents[2]


def test_advection_is_an_exact_periodic_shift():
    # beta * dt = 0.4 * 0.05 = 0.02 = two cells of 1/100: step k is u0 rolled by 2k cells
    out = pde.generate_advection_1d(n_samples=6, resolution=100, n_steps=41, seed=3)
    u = out["tensor"]
    assert u.shape == (6, 41, 100) and u.dtype == np.float32
    for k in (1, 7, 40):
        np.testing.assert_allclose(u[:, k], np.roll(u[:, 0], 2 * k, axis=-1), atol=2e-6)
    assert out["t-coordinate"].shape == (42,)  # PDEBench keeps one unused trailing time
    np.testing.assert_allclose(out["x-coordinate"], (np.arange(100) + 0.5) / 100, atol=1e-7)


def test_advection_initial_conditions_vary_and_are_seeded():
    a = pde.generate_advection_1d(n_samples=8, resolution=32, n_steps=3, seed=0)["tensor"]
    b = pde.generate_advection_1d(n_samples=8, resolution=32, n_steps=3, seed=0)["tensor"]
    c = pde.generate_advection_1d(n_samples=8, resolution=32, n_steps=3, seed=1)["tensor"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.std(a[:, 0], axis=0).mean() > 0.1  # samples differ from one another


def test_burgers_conserves_mass_with_periodic_boundaries():
    x = pde.cell_centres(128)
    rng = np.random.default_rng(0)
    u0 = pde.eval_sine_ic(pde.random_sine_ic(rng, 5, k_max=4), x) + 0.3
    t = np.linspace(0, 1.0, 11)
    u = pde.solve_burgers(u0, nu=0.1, t_save=t)
    mass = u.mean(axis=-1)  # \int u dx on the unit interval
    np.testing.assert_allclose(mass, mass[:, :1].repeat(len(t), 1), atol=1e-12)
    energy = (u**2).mean(axis=-1)
    assert np.all(np.diff(energy, axis=1) < 1e-12)  # viscosity only removes energy


def test_burgers_small_amplitude_mode_decays_at_nu_over_pi():
    # |u| ~ 1e-6: the flux term is negligible and u = eps e^{-(nu/pi)(2 pi)^2 t} sin(2 pi x)
    x = pde.cell_centres(64)
    eps, nu, t_end = 1e-6, 1.0, 0.05
    u = pde.solve_burgers(eps * np.sin(2 * np.pi * x)[None], nu, np.array([0.0, t_end]))
    exact = eps * np.exp(-(nu / np.pi) * (2 * np.pi) ** 2 * t_end) * np.sin(2 * np.pi * x)
    np.testing.assert_allclose(u[0, -1], exact, atol=1e-11)


def test_diffusion_reaction_1d_matches_heat_and_logistic_solutions():
    x = pde.cell_centres(64)
    t = np.array([0.0, 0.1, 0.3])
    # rho = 0: heat equation, a sine mode decays as exp(-nu k^2 t)
    u = pde.solve_diffusion_reaction_1d(np.sin(2 * np.pi * x)[None], nu=0.5, rho=0.0, t_save=t)
    exact = np.exp(-0.5 * (2 * np.pi) ** 2 * t)[:, None] * np.sin(2 * np.pi * x)
    np.testing.assert_allclose(u[0], exact, atol=1e-10)
    # constant state: no diffusion, logistic growth u(t) = u0 e^{rho t} / (1 + u0 (e^{rho t} - 1))
    u0 = 0.2
    u = pde.solve_diffusion_reaction_1d(np.full((1, 16), u0), nu=0.5, rho=1.0, t_save=t)
    g = np.exp(t)
    np.testing.assert_allclose(u[0, :, 0], u0 * g / (1 + u0 * (g - 1)), rtol=1e-10)


def test_diffusion_reaction_1d_generator_stays_in_unit_interval():
    out = pde.generate_diffusion_reaction_1d(n_samples=4, resolution=64, n_steps=11)
    u = out["tensor"]
    assert u.min() >= -1e-6 and u.max() <= 1 + 1e-6
    np.testing.assert_allclose(u[:, 0].min(axis=1), 0.0, atol=1e-6)  # IC rescaled to [0, 1]


def test_diffusion_sorption_step_solves_pdebench_discretisation():
    # one linearly implicit Euler step: (u1 - u0)/h = D/R(u0) (u1[i-1] - 2 u1[i] + u1[i+1])/dx^2
    # with PDEBench's ghosts: 1 on the left, D (u1[-2] - u1[-1]) / dx on the right
    rng = np.random.default_rng(1)
    u0 = rng.uniform(0.0, 0.5, size=(2, 24))
    h, d, dx = 5.0, 5e-4, 1 / 24
    u1 = pde.solve_diffusion_sorption(u0, np.array([0.0, h]), substeps=1)[:, 1]
    padded = np.concatenate([np.ones((2, 1)), u1, d * (u1[:, -2:-1] - u1[:, -1:]) / dx], axis=1)
    lap = (padded[:, :-2] - 2 * padded[:, 1:-1] + padded[:, 2:]) / dx**2
    np.testing.assert_allclose((u1 - u0) / h, d / pde.retardation(u0) * lap, atol=1e-12)


def test_diffusion_sorption_fills_from_the_left_within_bounds():
    t = np.linspace(0, 500.0, 6)
    u = pde.solve_diffusion_sorption(np.zeros((1, 32)), t)
    assert u.min() >= -1e-12 and u.max() <= 1.0 + 1e-12  # maximum principle
    assert np.all(np.diff(u[0, 1:].sum(-1)) > 0)  # solute keeps entering at x = 0
    assert np.all(np.diff(u[0, -1]) <= 1e-12)  # concentration falls away from x = 0


def _darcy_residual_loop(a: np.ndarray, u: np.ndarray, beta: float) -> np.ndarray:
    """-div(a grad u) - beta, cell by cell: face coefficient = mean of the two cells,
    zero Dirichlet value half a cell outside the boundary faces."""
    n = a.shape[0]
    h = 1.0 / n
    res = np.zeros_like(u)
    for i in range(n):
        for j in range(n):
            flux = 0.0
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                p, q = i + di, j + dj
                if 0 <= p < n and 0 <= q < n:
                    flux += 0.5 * (a[i, j] + a[p, q]) * (u[p, q] - u[i, j]) / h**2
                else:
                    flux += a[i, j] * (0.0 - u[i, j]) / (h / 2) / h
            res[i, j] = -flux - beta
    return res


def test_darcy_solution_has_zero_discrete_residual():
    out = pde.generate_darcy_2d(n_samples=3, resolution=12, beta=0.1, seed=2)
    a, u = out["nu"].astype(np.float64), out["tensor"][:, 0].astype(np.float64)
    np.testing.assert_array_equal(np.unique(out["nu"]), np.float32([0.1, 1.0]))  # two phases
    for k in range(3):
        res = _darcy_residual_loop(a[k], u[k], 0.1)
        assert np.abs(res).max() < 1e-4 * 0.1  # float32 storage limits this
        assert u[k].min() > 0  # a positive source with zero boundary values
    exact = pde.solve_darcy(a[:1], 0.1)[0]
    assert np.abs(_darcy_residual_loop(a[0], exact, 0.1)).max() < 1e-9


def test_diffusion_reaction_2d_conserves_mass_without_reaction():
    rng = np.random.default_rng(0)
    u0, v0 = rng.standard_normal((2, 2, 16, 16))
    t = np.linspace(0, 2.0, 5)
    u, v = pde.solve_diffusion_reaction_2d(u0, v0, t, reaction=False)
    for w, w0 in ((u, u0), (v, v0)):
        mass = w.sum(axis=(-2, -1))
        np.testing.assert_allclose(mass, np.repeat(w0.sum(axis=(-2, -1))[:, None], 5, 1),
                                   atol=1e-9)
    assert u[:, -1].std() < u0.std()  # diffusion smooths


GENERATED = ["Advection1D", "Burgers1D", "DiffusionReaction1D", "DiffusionSorption1D",
             "DarcyFlow2D", "DiffusionReaction2D"]


@pytest.mark.parametrize("key", GENERATED)
def test_generated_files_load_with_registry_shapes(key, tmp_path):
    spec = get_task(key)
    res = 8 if spec.modality == "2D" else 32
    path = pdebench.generate_task_file(key, tmp_path, n_samples=20, resolution=res, n_steps=5)
    assert path == tmp_path / "pdebench" / ("gen_" + pdebench.SPECS[key].filename)
    splits = spec.load(tmp_path)  # validates shapes, dtypes and finiteness
    (x_tr, y_tr), (x_te, y_te) = splits["train"], splits["test"]
    assert len(x_tr) == 18 and len(x_te) == 2  # 10 % test
    spatial = (res,) * (len(spec.input_shape) - 1)
    assert x_tr.shape[1:] == (spec.in_channels, *spatial)
    assert y_te.shape[1:] == (spec.output_shape[0], *spatial)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.float32


def test_hdf5_layout_matches_pdebench(tmp_path):
    adv = pdebench.generate_task_file("advection1d", tmp_path, n_samples=10, resolution=16,
                                      n_steps=4)
    with h5py.File(adv) as f:
        assert set(f) == {"tensor", "x-coordinate", "t-coordinate"}
        assert f["tensor"].shape == (10, 4, 16) and f.attrs["beta"] == pytest.approx(0.4)
    darcy = pdebench.generate_task_file("darcy2d", tmp_path, n_samples=10, resolution=8)
    with h5py.File(darcy) as f:
        assert f["nu"].shape == (10, 8, 8) and f["tensor"].shape == (10, 1, 8, 8)
    sorp = pdebench.generate_task_file("diffsorp1d", tmp_path, n_samples=10, resolution=16,
                                       n_steps=3)
    with h5py.File(sorp) as f:
        assert sorted(f)[:2] == ["0000", "0001"] and len(f) == 10
        assert f["0000/data"].shape == (3, 16, 1) and f["0000/grid/t"].shape == (3,)


def test_loader_split_resolution_and_target_time(tmp_path):
    path = pdebench.generate_task_file("advection1d", tmp_path, n_samples=30, resolution=64,
                                       n_steps=5)
    with h5py.File(path) as f:
        u = f["tensor"][()]
    s = pdebench.load_pdebench("Advection1D", tmp_path)
    np.testing.assert_array_equal(s["test"][0][:, 0], u[:3, 0])  # first 10 % are test
    np.testing.assert_array_equal(s["train"][1][:, 0], u[3:, -1])  # target: last time
    half = pdebench.load_pdebench("Advection1D", tmp_path, resolution=16)
    np.testing.assert_array_equal(half["train"][0][:, 0], u[3:, 0, ::4])
    with pytest.raises(Exception, match="divide"):
        pdebench.load_pdebench("Advection1D", tmp_path, resolution=24)
    # diffusion-reaction 1D: ORCA's target is u(t = 0.29), the closest saved step
    pdebench.generate_task_file("diffreact1d", tmp_path, n_samples=10, resolution=16,
                                n_steps=101)
    with h5py.File(pdebench.generated_path("DiffusionReaction1D", tmp_path)) as f:
        v = f["tensor"][()]
    d = pdebench.load_pdebench("DiffusionReaction1D", tmp_path, use_cache=False)
    np.testing.assert_array_equal(d["train"][1][:, 0], v[1:, 29])


def test_cache_is_checksummed_and_rebuilt_when_the_source_changes(tmp_path):
    from crossmodal.data import cache

    pdebench.generate_task_file("advection1d", tmp_path, n_samples=10, resolution=16, n_steps=3)
    first = pdebench.load_pdebench("Advection1D", tmp_path)
    (cdir,) = cache.cache_dirs(tmp_path, "pdebench", "Advection1D")
    assert cache.verify_cache(cdir) == []
    pdebench.generate_task_file("advection1d", tmp_path, n_samples=10, resolution=16, n_steps=3,
                                seed=5)
    second = pdebench.load_pdebench("Advection1D", tmp_path)
    assert not np.array_equal(first["train"][0], second["train"][0])
    np.save(cdir / "train_x.npy", np.zeros_like(second["train"][0]))
    assert any("train_x.npy" in p for p in cache.verify_cache(cdir))


def test_missing_pdebench_data_names_download_and_generate(tmp_path):
    with pytest.raises(DataMissingError) as err:
        pdebench.load_pdebench("Burgers1D", tmp_path)
    msg = str(err.value)
    assert "crossmodal data download Burgers1D" in msg
    assert "python data_scripts/generate_pde.py --task burgers1d" in msg
    with pytest.raises(DataMissingError, match="no offline generator"):
        pdebench.load_pdebench("ShallowWater2D", tmp_path)


def test_generate_script_runs_from_the_checkout(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "data_scripts" / "generate_pde.py"), "--task", "darcy2d",
         "--n-samples", "10", "--resolution", "8", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "DarcyFlow2D: wrote" in proc.stdout
    assert get_task("DarcyFlow2D").load(tmp_path)["train"][0].shape == (9, 1, 8, 8)


def test_real_layouts_without_generators_load(tmp_path, publish_fixtures):
    """Navier-Stokes (three single arrays) and shallow water (groups), as PDEBench writes them."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "pdebench"
    folder.mkdir()
    with h5py.File(folder / pdebench.SPECS["NavierStokes1D"].filename, "w") as f:
        for name in ("density", "Vx", "pressure"):
            f[name] = rng.normal(size=(20, 6, 32)).astype(np.float32)
        f["t-coordinate"] = np.arange(7, dtype=np.float32)
    publish_fixtures(tmp_path)
    ns = get_task("NavierStokes1D").load(tmp_path)
    assert ns["train"][0].shape == (18, 3, 32)
    with h5py.File(folder / pdebench.SPECS["NavierStokes1D"].filename) as f:
        np.testing.assert_array_equal(ns["test"][1][:, 1], f["Vx"][:2, -1])
    with h5py.File(folder / pdebench.SPECS["ShallowWater2D"].filename, "w") as f:
        for i in range(10):
            f[f"{i:04d}/data"] = rng.normal(size=(4, 8, 8, 1)).astype(np.float32)
            f[f"{i:04d}/grid/t"] = np.arange(4, dtype=np.float32)
    publish_fixtures(tmp_path)
    sw = get_task("ShallowWater2D").load(tmp_path)
    assert sw["train"][0].shape == (9, 1, 8, 8) and sw["test"][0].shape == (1, 1, 8, 8)
    with h5py.File(folder / pdebench.SPECS["ShallowWater2D"].filename) as f:
        np.testing.assert_array_equal(sw["test"][1][0, 0], f["0009/data"][-1, ..., 0])  # last 10 %


def test_real_file_is_preferred_over_generated(tmp_path):
    pdebench.generate_task_file("advection1d", tmp_path, n_samples=10, resolution=16, n_steps=3)
    assert pdebench.find_source("Advection1D", tmp_path)[1] == "generated"
    real = pdebench.generate_task_file("advection1d", tmp_path / "other", n_samples=10,
                                       resolution=16, n_steps=3, seed=4)
    real.rename(pdebench.real_path("Advection1D", tmp_path))
    path, kind = pdebench.find_source("Advection1D", tmp_path)
    assert kind == "real" and path.name == "1D_Advection_Sols_beta0.4.hdf5"
    assert pdebench.load_pdebench("Advection1D", tmp_path, prefer="generated")["train"][0].shape \
        == (9, 1, 16)


def test_spec_follows_the_size_of_generated_data(tmp_path):
    pdebench.generate_task_file("darcy2d", tmp_path, n_samples=10, resolution=8)
    spec = get_task("DarcyFlow2D")
    adapted = spec_for_splits(spec, spec.load(tmp_path))
    assert adapted.input_shape == (1, 8, 8) and adapted.output_shape == (1, 8, 8)
    assert adapted.image_size == 8 and adapted.key == spec.key
    digits = get_task("smoke_digits")
    assert spec_for_splits(digits, digits.load(tmp_path)) is digits
