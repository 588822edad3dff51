r"""Small PDEBench-format datasets solved from the equations, in seconds on a CPU.

Every generator returns the arrays of the matching PDEBench file (same keys, same axis order,
float32), so :func:`crossmodal.data.pdebench.load_pdebench` reads generated and downloaded
files alike. They are deterministic for a fixed ``seed`` and vectorised over samples.

=====================  ==========================================  =============================
generator              equation (PDEBench parameter file)          HDF5 layout
=====================  ==========================================  =============================
advection_1d           :math:`u_t + \beta u_x = 0`, beta=0.4        tensor (n, T, X), x, t coords
burgers_1d             :math:`u_t + (u^2/2)_x = (\nu/\pi) u_{xx}`   tensor (n, T, X), x, t coords
diffusion_reaction_1d  :math:`u_t = \nu u_{xx} + \rho u (1-u)`      tensor (n, T, X), x, t coords
diffusion_sorption_1d  :math:`u_t = D/R(u)\, u_{xx}`                groups "0000".. with data (T, X, 1)
darcy_2d               :math:`-\nabla\cdot(a\nabla u) = \beta`      nu (n, X, Y), tensor (n, 1, X, Y)
diffusion_reaction_2d  FitzHugh-Nagumo, see its docstring           groups with data (T, Y, X, 2)
=====================  ==========================================  =============================

As in PDEBench, the 1D grids are cell centres ``x_i = (i + 1/2) / X`` of the periodic unit
interval (Dirichlet/Cauchy for diffusion-sorption), and the 1D ``t-coordinate`` has one more
entry than the tensor's time axis (PDEBench builds it as ``arange(T + 1) * dt_save``; the
last entry is unused). Initial conditions follow PDEBench's recipe (Takamoto et al. 2022,
App. D): a sum of two sine waves with random integer wave numbers, amplitudes and phases,
with probability 0.1 an absolute value and, independently, a tanh window, and a random sign.
(PDEBench divides the wave numbers by ``xc[-1] - xc[0]``, slightly less than 1; the kit uses
the unit length so that the sine part is exactly periodic.)

Where the kit departs from PDEBench's solvers (which are finite-volume codes in JAX), the
docstrings say so; the tests in ``tests/data/test_pde.py`` check each solver against an exact
solution or a conserved quantity.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.fft as sfft
from scipy import linalg as sla
from scipy import sparse
from scipy.sparse import linalg as spla

__all__ = [
    "generate_advection_1d", "generate_burgers_1d", "generate_darcy_2d",
    "generate_diffusion_reaction_1d", "generate_diffusion_reaction_2d",
    "generate_diffusion_sorption_1d", "random_sine_ic", "solve_burgers",
    "solve_darcy", "solve_diffusion_reaction_1d", "solve_diffusion_reaction_2d",
    "solve_diffusion_sorption", "write_pdebench_hdf5",
]


# --------------------------------------------------------------------------- grids, ICs


def cell_centres(n: int, left: float = 0.0, right: float = 1.0) -> np.ndarray:
    """Cell centres of ``n`` equal cells on ``[left, right]`` (PDEBench's ``xc``)."""
    dx = (right - left) / n
    return left + (np.arange(n) + 0.5) * dx


def _time_axes(n_steps: int, t_final: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Save times of the tensor and PDEBench's t-coordinate (one extra entry)."""
    if n_steps < 2:
        raise ValueError(f"n_steps must be at least 2 (initial and final state), got {n_steps}")
    dt_save = t_final / (n_steps - 1)
    return np.arange(n_steps) * dt_save, np.arange(n_steps + 1) * dt_save, dt_save


def random_sine_ic(rng: np.random.Generator, n: int, *, k_max: int, n_waves: int = 2,
                   p_abs: float = 0.1, p_window: float = 0.1) -> dict[str, np.ndarray]:
    r"""Parameters of PDEBench-style random initial conditions.

    .. math::

        u_0(x) = s \, W(x) \, \Big| \sum_{i=1}^{N} A_i \sin(2\pi k_i x + \phi_i) \Big|^{[a]}

    with :math:`k_i \in \{1..k_{max}\}`, :math:`A_i \sim U(0,1)`, :math:`\phi_i \sim U(0, 2\pi)`,
    :math:`N = 2`, a random sign :math:`s`, the absolute value taken with probability ``p_abs``
    and the window :math:`W(x) = \tfrac12(\tanh((x-x_L)/0.01) - \tanh((x-x_R)/0.01))`,
    :math:`x_L \sim U(0.1, 0.45)`, :math:`x_R \sim U(0.55, 0.9)`, applied with probability
    ``p_window`` (else :math:`W = 1`). Integer wave numbers on the unit interval make the
    sine part exactly periodic, which the exact advection solution relies on.
    """
    return {
        "k": rng.integers(1, k_max + 1, size=(n, n_waves)).astype(np.float64),
        "amp": rng.uniform(0.0, 1.0, size=(n, n_waves)),
        "phase": rng.uniform(0.0, 2 * np.pi, size=(n, n_waves)),
        "use_abs": rng.random(n) < p_abs,
        "sign": rng.choice(np.array([1.0, -1.0]), size=n),
        "use_window": rng.random(n) < p_window,
        "x_left": rng.uniform(0.1, 0.45, size=n),
        "x_right": rng.uniform(0.55, 0.9, size=n),
    }


def eval_sine_ic(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Evaluate :func:`random_sine_ic` at points ``x`` of shape (X,) or (n, X)."""
    x = np.asarray(x, dtype=np.float64)
    xx = x if x.ndim == 2 else np.broadcast_to(x, (len(params["k"]), x.shape[-1]))
    waves = params["amp"][:, :, None] * np.sin(
        2 * np.pi * params["k"][:, :, None] * xx[:, None, :] + params["phase"][:, :, None])
    u = waves.sum(axis=1)
    u = np.where(params["use_abs"][:, None], np.abs(u), u) * params["sign"][:, None]
    width = 0.01
    window = 0.5 * (np.tanh((xx - params["x_left"][:, None]) / width)
                    - np.tanh((xx - params["x_right"][:, None]) / width))
    return np.where(params["use_window"][:, None], u * window, u)


# --------------------------------------------------------------------------- advection


def generate_advection_1d(n_samples: int = 256, resolution: int = 256, n_steps: int = 41,
                          beta: float = 0.4, t_final: float = 2.0,
                          seed: int = 0) -> dict[str, np.ndarray]:
    r"""1D linear advection on the periodic unit interval, solved exactly.

    .. math::

        u_t + \beta u_x = 0, \qquad u(x, t) = u_0\big((x - \beta t) \bmod 1\big).

    PDEBench solves this with a second-order finite-volume scheme; the exact shift used here
    has no numerical diffusion. Defaults give the time grid ORCA reads from the real file
    (201 steps every 0.01 subsampled by 5: 41 steps every 0.05 up to T = 2). Initial
    conditions: :func:`random_sine_ic` with wave numbers 1..4, as PDEBench's generator.

    Returns
    -------
    dict
        ``tensor`` (n, n_steps, resolution) float32, ``x-coordinate`` (resolution,),
        ``t-coordinate`` (n_steps + 1,).
    """
    rng = np.random.default_rng(seed)
    x = cell_centres(resolution)
    t, t_coord, _ = _time_axes(n_steps, t_final)
    params = random_sine_ic(rng, n_samples, k_max=4)  # PDEBench's advection uses k_tot = 4
    tensor = np.empty((n_samples, n_steps, resolution), dtype=np.float32)
    for k, tk in enumerate(t):
        shifted = np.mod(x - beta * tk, 1.0)
        tensor[:, k] = eval_sine_ic(params, shifted)
    return {"tensor": tensor, "x-coordinate": x.astype(np.float32),
            "t-coordinate": t_coord.astype(np.float32)}


# --------------------------------------------------------------------------- Burgers


def _etdrk4_coefficients(lin: np.ndarray, h: float, n_contour: int = 32):
    """ETDRK4 coefficients (Kassam & Trefethen 2005, contour-integral evaluation)."""
    r = np.exp(1j * np.pi * (np.arange(1, n_contour + 1) - 0.5) / n_contour)
    lr = h * lin[:, None] + r[None, :]
    e = np.exp(h * lin)
    e2 = np.exp(h * lin / 2)
    q = h * np.real(np.mean((np.exp(lr / 2) - 1) / lr, axis=1))
    f1 = h * np.real(np.mean((-4 - lr + np.exp(lr) * (4 - 3 * lr + lr**2)) / lr**3, axis=1))
    f2 = h * np.real(np.mean((2 + lr + np.exp(lr) * (-2 + lr)) / lr**3, axis=1))
    f3 = h * np.real(np.mean((-4 - 3 * lr - lr**2 + np.exp(lr) * (4 - lr)) / lr**3, axis=1))
    return e, e2, q, f1, f2, f3


def solve_burgers(u0: np.ndarray, nu: float, t_save: np.ndarray, *, cfl: float = 0.5,
                  pi_scaling: bool = True) -> np.ndarray:
    r"""Viscous Burgers on the periodic unit interval by a dealiased Fourier ETDRK4 scheme.

    .. math::

        u_t + \left(\tfrac{u^2}{2}\right)_x = D\, u_{xx}, \qquad D = \nu/\pi

    (PDEBench's convention; ``pi_scaling=False`` uses :math:`D = \nu`). The diffusion is
    integrated exactly by exponential time differencing, the flux term with 2/3-rule
    dealiasing. The zero Fourier mode is never updated, so :math:`\int u\,dx` (mass) is
    conserved to round-off. The step is re-chosen every save interval from the current
    :math:`\max|u|` (``cfl`` times the dealiased advective limit). Suited to the viscous
    regime of PaRe's Burgers task (:math:`\nu = 1`); for :math:`\nu \lesssim 10^{-2}` at
    coarse resolution the solution develops shocks the spectral grid cannot resolve.

    Parameters
    ----------
    u0 : (n, X) initial states.
    nu : viscosity parameter.
    t_save : increasing save times, starting at 0.

    Returns
    -------
    (n, len(t_save), X) float64 array.
    """
    u0 = np.atleast_2d(np.asarray(u0, dtype=np.float64))
    n, nx = u0.shape
    diff = nu / np.pi if pi_scaling else nu
    k = 2 * np.pi * np.fft.rfftfreq(nx, d=1.0 / nx)
    lin = -diff * k**2
    dealias = (np.arange(k.size) < (nx // 3)).astype(np.float64)
    ik_half = -0.5j * k * dealias

    def nonlinear(vhat: np.ndarray) -> np.ndarray:
        u = sfft.irfft(vhat, n=nx, axis=-1)
        return ik_half * sfft.rfft(u * u, axis=-1)

    out = np.empty((n, len(t_save), nx))
    out[:, 0] = u0
    v = sfft.rfft(u0, axis=-1)
    kmax = np.pi * nx * 2 / 3  # largest retained wave number after dealiasing
    for j in range(1, len(t_save)):
        interval = t_save[j] - t_save[j - 1]
        umax = max(float(np.abs(out[:, j - 1]).max()), 1e-8)
        h_max = cfl * 2.0 / (umax * kmax)  # RK4 is stable to |h*lambda| ~ 2.8 on the axis
        steps = max(1, int(np.ceil(interval / h_max)))
        h = interval / steps
        e, e2, q, f1, f2, f3 = _etdrk4_coefficients(lin, h)
        for _ in range(steps):
            nv = nonlinear(v)
            a = e2 * v + q * nv
            na = nonlinear(a)
            b = e2 * v + q * na
            nb = nonlinear(b)
            c = e2 * a + q * (2 * nb - nv)
            nc = nonlinear(c)
            v = e * v + nv * f1 + 2 * (na + nb) * f2 + nc * f3
        out[:, j] = sfft.irfft(v, n=nx, axis=-1)
    return out


def generate_burgers_1d(n_samples: int = 256, resolution: int = 256, n_steps: int = 41,
                        nu: float = 1.0, t_final: float = 2.0,
                        seed: int = 0) -> dict[str, np.ndarray]:
    r"""1D viscous Burgers, :math:`u_t + (u^2/2)_x = (\nu/\pi) u_{xx}`, periodic, PaRe's
    :math:`\nu = 1`. Initial conditions use wave numbers up to 4 as in PDEBench's Burgers
    data; solver: :func:`solve_burgers`. Layout as :func:`generate_advection_1d`."""
    rng = np.random.default_rng(seed)
    x = cell_centres(resolution)
    t, t_coord, _ = _time_axes(n_steps, t_final)
    u0 = eval_sine_ic(random_sine_ic(rng, n_samples, k_max=4), x)
    u = solve_burgers(u0, nu, t)
    return {"tensor": u.astype(np.float32), "x-coordinate": x.astype(np.float32),
            "t-coordinate": t_coord.astype(np.float32)}


# --------------------------------------------------------------------------- diffusion-reaction 1D


def _logistic_exact(u: np.ndarray, rho: float, dt: float) -> np.ndarray:
    # exact flow of u' = rho u (1 - u); written so that u = 0 and u = 1 are exact fixed points
    g = np.exp(rho * dt)
    return u * g / (1.0 + u * (g - 1.0))


def solve_diffusion_reaction_1d(u0: np.ndarray, nu: float, rho: float, t_save: np.ndarray, *,
                                max_dt: float = 2.5e-3) -> np.ndarray:
    r"""Fisher-KPP diffusion-reaction on the periodic unit interval by Strang splitting.

    .. math::

        u_t = \nu u_{xx} + \rho\, u(1 - u)

    Each step is half a reaction step, one diffusion step, half a reaction step; both
    sub-flows are exact (the logistic ODE in closed form, as PDEBench does, and the heat
    equation as :math:`\hat u_k \mapsto e^{-\nu k^2 h} \hat u_k` in Fourier space), so the only
    error is the second-order splitting error in :math:`h \le` ``max_dt``.
    """
    u = np.atleast_2d(np.asarray(u0, dtype=np.float64)).copy()
    n, nx = u.shape
    k = 2 * np.pi * np.fft.rfftfreq(nx, d=1.0 / nx)
    out = np.empty((n, len(t_save), nx))
    out[:, 0] = u
    for j in range(1, len(t_save)):
        interval = t_save[j] - t_save[j - 1]
        steps = max(1, int(np.ceil(interval / max_dt - 1e-9)))
        h = interval / steps
        decay = np.exp(-nu * k**2 * h)
        for _ in range(steps):
            u = _logistic_exact(u, rho, h / 2)
            u = sfft.irfft(decay * sfft.rfft(u, axis=-1), n=nx, axis=-1)
            u = _logistic_exact(u, rho, h / 2)
        out[:, j] = u
    return out


def generate_diffusion_reaction_1d(n_samples: int = 256, resolution: int = 256,
                                   n_steps: int = 101, nu: float = 0.5, rho: float = 1.0,
                                   t_final: float = 1.0, seed: int = 0) -> dict[str, np.ndarray]:
    r"""1D diffusion-reaction :math:`u_t = \nu u_{xx} + \rho u(1-u)`, periodic, PaRe's
    :math:`\nu = 0.5, \rho = 1`. As in PDEBench the initial condition (wave numbers up to 4)
    is rescaled to [0, 1]; the time grid matches the real file (101 steps up to T = 1), which
    ORCA needs because its target is the state at t = 0.29. Solver:
    :func:`solve_diffusion_reaction_1d`."""
    rng = np.random.default_rng(seed)
    x = cell_centres(resolution)
    t, t_coord, _ = _time_axes(n_steps, t_final)
    u0 = eval_sine_ic(random_sine_ic(rng, n_samples, k_max=4), x)
    lo, hi = u0.min(axis=1, keepdims=True), u0.max(axis=1, keepdims=True)
    u0 = (u0 - lo) / np.maximum(hi - lo, 1e-12)
    u = solve_diffusion_reaction_1d(u0, nu, rho, t)
    return {"tensor": u.astype(np.float32), "x-coordinate": x.astype(np.float32),
            "t-coordinate": t_coord.astype(np.float32)}


# --------------------------------------------------------------------------- diffusion-sorption 1D


def retardation(u: np.ndarray, *, porosity: float = 0.29, rho_s: float = 2880.0,
                k_f: float = 3.5e-4, n_f: float = 0.874) -> np.ndarray:
    r"""Freundlich retardation factor
    :math:`R(u) = 1 + \frac{1-\phi}{\phi} \rho_s k_f n_f (u + 10^{-6})^{n_f - 1}`
    (the :math:`10^{-6}` keeps it finite at :math:`u = 0`, as in PDEBench)."""
    return 1.0 + (1 - porosity) / porosity * rho_s * k_f * n_f * (u + 1e-6) ** (n_f - 1)


def solve_diffusion_sorption(u0: np.ndarray, t_save: np.ndarray, *, diffusivity: float = 5e-4,
                             porosity: float = 0.29, rho_s: float = 2880.0, k_f: float = 3.5e-4,
                             n_f: float = 0.874, u_left: float = 1.0,
                             substeps: int = 4) -> np.ndarray:
    r"""Diffusion-sorption on [0, 1] by linearly implicit Euler in time.

    .. math::

        u_t = \frac{D}{R(u)} u_{xx}, \qquad u(0, t) = 1, \qquad
        u(1, t) \text{ via the ghost value } D\,(u_{X-2} - u_{X-1})/\Delta x

    The spatial discretisation and boundary ghost values are PDEBench's (cell-centred finite
    volumes; a Dirichlet ghost value of 1 on the left, the Cauchy-type ghost value on the
    right). PDEBench integrates with adaptive RK45; here :math:`R` is frozen at the old time
    level and the linear tridiagonal system of every sample is solved at once (one banded
    solve per step), which is unconditionally stable; ``substeps`` steps per save interval.
    """
    u = np.atleast_2d(np.asarray(u0, dtype=np.float64)).copy()
    n, nx = u.shape
    dx = 1.0 / nx
    out = np.empty((n, len(t_save), nx))
    out[:, 0] = u
    size = n * nx
    for j in range(1, len(t_save)):
        h = (t_save[j] - t_save[j - 1]) / substeps
        for _ in range(substeps):
            c = diffusivity / retardation(u, porosity=porosity, rho_s=rho_s, k_f=k_f,
                                          n_f=n_f) * h / dx**2  # (n, X)
            lower = np.ones((n, nx))  # coefficient of u_{i-1} in the Laplacian row i
            upper = np.ones((n, nx))  # coefficient of u_{i+1}
            diag = np.full((n, nx), -2.0)
            upper[:, -1] = 0.0
            lower[:, 0] = 0.0
            # right ghost g = D (u_{X-2} - u_{X-1}) / dx folded into the last row
            lower[:, -1] += diffusivity / dx
            diag[:, -1] -= diffusivity / dx
            ab = np.zeros((3, size))
            ab[0, 1:] = (-c * upper).reshape(-1)[:-1]
            ab[1] = (1.0 - c * diag).reshape(-1)
            ab[2, :-1] = (-c * lower).reshape(-1)[1:]
            rhs = u.copy()
            rhs[:, 0] += c[:, 0] * u_left
            u = sla.solve_banded((1, 1), ab, rhs.reshape(-1),
                                 overwrite_ab=True, check_finite=False).reshape(n, nx)
        out[:, j] = u
    return out


def generate_diffusion_sorption_1d(n_samples: int = 256, resolution: int = 256,
                                   n_steps: int = 101, t_final: float = 500.0,
                                   seed: int = 0) -> dict[str, np.ndarray]:
    r"""1D diffusion-sorption with PDEBench's parameters (:math:`D = 5\cdot10^{-4}`,
    :math:`\phi = 0.29`, :math:`\rho_s = 2880`, :math:`k_f = 3.5\cdot10^{-4}`,
    :math:`n_f = 0.874`, T = 500, 101 saved steps) and its initial condition: a constant
    :math:`u_0 \sim U(0, 0.2)` per sample.

    Returns the group layout of ``1D_diff-sorp_NA_NA.h5``: ``data`` (n, T, X, 1) (written
    as one group ``"0000"``, ``"0001"``, ... per sample), ``grid/x`` (X,), ``grid/t`` (T,).
    """
    rng = np.random.default_rng(seed)
    x = cell_centres(resolution)
    t = np.linspace(0.0, t_final, n_steps)
    u0 = np.ones((n_samples, resolution)) * rng.uniform(0.0, 0.2, size=(n_samples, 1))
    u = solve_diffusion_sorption(u0, t)
    return {"data": u[..., None].astype(np.float32), "grid/x": x.astype(np.float32),
            "grid/t": t.astype(np.float32)}


# --------------------------------------------------------------------------- Darcy 2D


def darcy_matrix(a: np.ndarray) -> sparse.csr_matrix:
    r"""Finite-volume matrix of :math:`-\nabla\cdot(a \nabla u)` on the unit square.

    Cell-centred grid of ``a.shape`` cells, face coefficients the arithmetic mean of the two
    neighbouring cells (as PDEBench), and :math:`u = 0` on the boundary imposed at the face
    (half-cell distance, so the boundary face contributes :math:`2a/h^2`). Unknowns are
    ordered row-major over ``(x, y)``.
    """
    nx, ny = a.shape
    hx, hy = 1.0 / nx, 1.0 / ny
    idx = np.arange(nx * ny).reshape(nx, ny)
    ax = 0.5 * (a[1:, :] + a[:-1, :]) / hx**2  # faces between x-neighbours
    ay = 0.5 * (a[:, 1:] + a[:, :-1]) / hy**2
    diag = np.zeros((nx, ny))
    diag[1:, :] += ax
    diag[:-1, :] += ax
    diag[:, 1:] += ay
    diag[:, :-1] += ay
    diag[0, :] += 2 * a[0, :] / hx**2
    diag[-1, :] += 2 * a[-1, :] / hx**2
    diag[:, 0] += 2 * a[:, 0] / hy**2
    diag[:, -1] += 2 * a[:, -1] / hy**2
    rows = [idx.ravel(), idx[1:, :].ravel(), idx[:-1, :].ravel(), idx[:, 1:].ravel(),
            idx[:, :-1].ravel()]
    cols = [idx.ravel(), idx[:-1, :].ravel(), idx[1:, :].ravel(), idx[:, :-1].ravel(),
            idx[:, 1:].ravel()]
    vals = [diag.ravel(), -ax.ravel(), -ax.ravel(), -ay.ravel(), -ay.ravel()]
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(nx * ny, nx * ny))


def solve_darcy(a: np.ndarray, beta: float) -> np.ndarray:
    r"""Solve :math:`-\nabla\cdot(a\nabla u) = \beta` with :math:`u = 0` on the boundary of the
    unit square for each coefficient field ``a`` of shape (n, X, Y) (sparse direct solve).

    PDEBench integrates the time-dependent version to (near) steady state; the steady state
    itself is solved here. Returns (n, X, Y) float64.
    """
    a = np.asarray(a, dtype=np.float64)
    out = np.empty_like(a)
    rhs = np.full(a.shape[1] * a.shape[2], float(beta))
    for i in range(a.shape[0]):
        out[i] = spla.spsolve(darcy_matrix(a[i]).tocsc(), rhs).reshape(a.shape[1:])
    return out


def darcy_coefficients(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray,
                       n_blobs: int = 5, high: float = 1.0, low: float = 0.1) -> np.ndarray:
    r"""PDEBench's random piecewise-constant Darcy coefficients.

    :math:`g(x, y) = \sum_{i=1}^{5} \exp(-((x - x_i)^2 + (y - y_i)^2)/s_i)` with centres
    uniform on the unit square and :math:`s_i \sim 0.5\,U(0, 1)`; then :math:`a = 1` where
    :math:`g` exceeds its mean and :math:`a = 0.1` elsewhere. (PDEBench thresholds at the mean
    over the whole batch; here it is each sample's own mean so that a sample does not depend
    on how many others are generated with it.)
    """
    xm = rng.uniform(0, 1, size=(n, n_blobs))
    ym = rng.uniform(0, 1, size=(n, n_blobs))
    s = 0.5 * rng.uniform(0, 1, size=(n, n_blobs))
    g = np.zeros((n, x.size, y.size))
    for i in range(n_blobs):
        d2 = (x[None, :, None] - xm[:, None, None, i]) ** 2 + (y[None, None, :] - ym[:, None, None, i]) ** 2
        g += np.exp(-d2 / np.maximum(s[:, None, None, i], 1e-12))
    return np.where(g > g.mean(axis=(1, 2), keepdims=True), high, low)


def generate_darcy_2d(n_samples: int = 256, resolution: int = 32, beta: float = 0.1,
                      seed: int = 0) -> dict[str, np.ndarray]:
    r"""2D steady Darcy flow :math:`-\nabla\cdot(a(x)\nabla u(x)) = \beta` on the unit square,
    :math:`u = 0` on the boundary, PaRe's :math:`\beta = 0.1`; coefficients from
    :func:`darcy_coefficients`, solution from :func:`solve_darcy`.

    Returns
    -------
    dict
        ``nu`` (n, X, Y) coefficient, ``tensor`` (n, 1, X, Y) solution, ``x-coordinate``,
        ``y-coordinate`` (PDEBench's ``2D_DarcyFlow_beta*_Train.hdf5`` layout).
    """
    rng = np.random.default_rng(seed)
    x = cell_centres(resolution)
    y = cell_centres(resolution)
    a = darcy_coefficients(rng, n_samples, x, y)
    u = solve_darcy(a, beta)
    return {"nu": a.astype(np.float32), "tensor": u[:, None].astype(np.float32),
            "x-coordinate": x.astype(np.float32), "y-coordinate": y.astype(np.float32)}


# --------------------------------------------------------------------------- diffusion-reaction 2D


#: 5-point stencil over the last two axes (y, x); scaled per axis in _neumann_laplacian
_STENCIL_Y = np.array([[[0.0, 1.0, 0.0], [0.0, -2.0, 0.0], [0.0, 1.0, 0.0]]])
_STENCIL_X = np.array([[[0.0, 0.0, 0.0], [1.0, -2.0, 1.0], [0.0, 0.0, 0.0]]])


def _neumann_laplacian(f: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """5-point Laplacian over the last two axes of (n, Y, X) with zero-flux boundaries.

    ``mode="nearest"`` makes each ghost cell a copy of its neighbour, so a boundary cell sees
    only its interior neighbour (PDEBench's matrix does the same).
    """
    from scipy import ndimage

    kernel = _STENCIL_Y / dy**2 + _STENCIL_X / dx**2
    return ndimage.correlate(f, kernel, mode="nearest")


def solve_diffusion_reaction_2d(u0: np.ndarray, v0: np.ndarray, t_save: np.ndarray, *,
                                du: float = 1e-3, dv: float = 5e-3, k: float = 5e-3,
                                extent: float = 2.0, reaction: bool = True,
                                max_dt: float = 0.125) -> tuple[np.ndarray, np.ndarray]:
    r"""FitzHugh-Nagumo diffusion-reaction on a square of side ``extent`` (PDEBench: [-1, 1]^2)
    with zero-flux boundaries, by classical RK4 with method-of-lines finite differences.

    .. math::

        u_t = D_u \Delta u + u - u^3 - k - v, \qquad v_t = D_v \Delta v + u - v

    The step is at most ``max_dt`` and small enough for the diffusion eigenvalues
    (:math:`8 D/\Delta x^2`) and the cubic term to sit inside RK4's stability region.
    ``reaction=False`` keeps only the diffusion (used by the tests: mass is then conserved).
    Arrays are (n, Y, X); returns u, v of shape (n, T, Y, X).
    """
    u = np.asarray(u0, dtype=np.float64).copy()
    v = np.asarray(v0, dtype=np.float64).copy()
    ny, nx = u.shape[-2:]
    dx, dy = extent / nx, extent / ny
    stiff = 4 * max(du, dv) * (1 / dx**2 + 1 / dy**2)

    def rhs(u, v):
        fu = du * _neumann_laplacian(u, dx, dy)
        fv = dv * _neumann_laplacian(v, dx, dy)
        if reaction:
            fu += u - u * u * u - k - v  # u*u*u: np.power is ~100x slower
            fv += u - v
        return fu, fv

    us = np.empty((u.shape[0], len(t_save), ny, nx))
    vs = np.empty_like(us)
    us[:, 0], vs[:, 0] = u, v
    for j in range(1, len(t_save)):
        interval = t_save[j] - t_save[j - 1]
        react = 1 + 3 * float(np.max(u**2)) if reaction else 0.0
        h_max = min(max_dt, 2.0 / (stiff + react))
        steps = max(1, int(np.ceil(interval / h_max)))
        h = interval / steps
        for _ in range(steps):
            k1u, k1v = rhs(u, v)
            k2u, k2v = rhs(u + 0.5 * h * k1u, v + 0.5 * h * k1v)
            k3u, k3v = rhs(u + 0.5 * h * k2u, v + 0.5 * h * k2v)
            k4u, k4v = rhs(u + h * k3u, v + h * k3v)
            u = u + h / 6 * (k1u + 2 * k2u + 2 * k3u + k4u)
            v = v + h / 6 * (k1v + 2 * k2v + 2 * k3v + k4v)
        us[:, j], vs[:, j] = u, v
    return us, vs


def generate_diffusion_reaction_2d(n_samples: int = 256, resolution: int = 32,
                                   n_steps: int = 21, t_final: float = 5.0,
                                   seed: int = 0) -> dict[str, np.ndarray]:
    r"""2D diffusion-reaction (FitzHugh-Nagumo) with PDEBench's parameters
    (:math:`D_u = 10^{-3}`, :math:`D_v = 5\cdot10^{-3}`, :math:`k = 5\cdot10^{-3}`, domain
    :math:`[-1, 1]^2`, T = 5) and initial condition (standard normal noise in every cell for u
    and v). The real file saves 101 steps; the smoke default saves 21 (every 0.25) to keep
    the file small, which does not change what the loader reads (t = 0 and t = 5). Solver:
    :func:`solve_diffusion_reaction_2d`.

    Returns the group layout of ``2D_diff-react_NA_NA.h5``: ``data`` (n, T, Y, X, 2)
    (channels u, v), ``grid/x``, ``grid/y``, ``grid/t``.
    """
    rng = np.random.default_rng(seed)
    x = cell_centres(resolution, -1.0, 1.0)
    y = cell_centres(resolution, -1.0, 1.0)
    t = np.linspace(0.0, t_final, n_steps)
    u0 = rng.standard_normal((n_samples, resolution, resolution))
    v0 = rng.standard_normal((n_samples, resolution, resolution))
    u, v = solve_diffusion_reaction_2d(u0, v0, t)
    return {"data": np.stack([u, v], axis=-1).astype(np.float32),
            "grid/x": x.astype(np.float32), "grid/y": y.astype(np.float32),
            "grid/t": t.astype(np.float32)}


# --------------------------------------------------------------------------- writing


def write_pdebench_hdf5(arrays: dict[str, np.ndarray], path: Path,
                        attrs: dict | None = None) -> Path:
    """Write generator output as a PDEBench HDF5 file (atomically: ``.tmp`` then rename).

    Two layouts, chosen by the keys:

    * single-array files (``tensor``/``nu``/coordinates): one dataset per key, file
      attributes from ``attrs`` (PDEBench stores e.g. ``beta``, ``Nu``, ``rho`` there);
    * group files (a ``data`` key of shape (n, T, ...), plus ``grid/...`` keys): one group per
      sample named ``"0000"``, ``"0001"``, ... holding ``data`` and the ``grid`` datasets,
      as in PDEBench's ``*_NA_NA.h5`` files.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            if "data" in arrays:
                data = arrays["data"]
                width = max(4, len(str(len(data) - 1)))
                grids = {k: v for k, v in arrays.items() if k.startswith("grid/")}
                for i in range(len(data)):
                    g = f.create_group(str(i).zfill(width))
                    g.create_dataset("data", data=data[i])
                    for key, val in grids.items():
                        g.create_dataset(key, data=val)
            else:
                for key, val in arrays.items():
                    f.create_dataset(key, data=val)
            for key, val in (attrs or {}).items():
                f.attrs[key] = val
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
