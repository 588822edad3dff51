"""Batched, log-domain entropic OT on dense cost matrices, solved with geomloss's Sinkhorn loop.

The solver is geomloss's own symmetric Sinkhorn loop with epsilon-annealing
(``sinkhorn_loop`` and ``epsilon_schedule``, the routines behind
``geomloss.SamplesLoss("sinkhorn", backend="tensorized")``). geomloss lets the caller supply
the soft-min (the soft C-transform ``f_i = -eps log sum_j exp(h_j - C_ij / eps)``); this module
supplies a faster one for dense matrices. It computes exactly the same quantity, in the log
domain, but

* evaluates ``exp`` as ``exp2`` of pre-scaled arguments (PyTorch's CPU ``exp`` is several times
  slower than ``exp2`` and falls into a very slow path for arguments below about -87, which
  is where most entries of a Sinkhorn kernel at small eps lie);
* centres each row with the previous soft-min output instead of a fresh max-reduction, and
  folds centring, scaling and the dual potential into one ``baddbmm`` call, so that each
  soft-min reads the cost matrix once; rows whose centred sum falls outside a safe range are
  recomputed with an exact max-reduction, so this changes speed, never the value;
* reduces over either axis of one stored matrix, so ``C_yx`` is never materialised;
* works on cache-sized blocks, and accepts one temperature per batch element (so that many
  small problems with different annealing schedules can be solved as one batch);
* differentiates analytically: the gradient of the last (extrapolation) soft-min with respect
  to the point clouds and to the label-distance table is recomputed block by block in the
  backward pass, so no dense ``(N, M)`` graph is kept alive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from crossmodal.distances import _native

try:  # geomloss >= 0.3 keeps the point-cloud Sinkhorn solver in geomloss._legacy
    from geomloss._legacy.sinkhorn_divergence import epsilon_schedule, sinkhorn_cost, sinkhorn_loop
except ImportError:  # pragma: no cover - geomloss 0.2.x (the version microsoft/otdd uses)
    from geomloss.sinkhorn_divergence import epsilon_schedule, sinkhorn_cost, sinkhorn_loop

__all__ = ["DenseCost", "epsilon_schedule", "log_weights", "solve", "softmin"]

_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)
# Centred row sums must lie in [2^-100, 2^100]; otherwise the row is recomputed exactly.
_SUM_LO, _SUM_HI = 2.0**-100, 2.0**100
# Entries below 2^-110 of the row maximum are clamped there before exp2 (they contribute
# less than 1e-33 relative each, far below float32 resolution); this avoids exp2's slow path.
_CLAMP_LOG2 = -110.0
# Work on blocks of about this many matrix entries (4 MiB in float32: fits in L2/L3).
_BLOCK = 1 << 20
# Log-weight of zero-mass (padding) points: exp(-1e30) == 0 exactly in float32 and float64.
PAD_LOG_WEIGHT = -1e30


def log_weights(a: torch.Tensor) -> torch.Tensor:
    """``log(a)`` with zero weights mapped to a huge negative number (padding points)."""
    out = a.log()
    return torch.where(a > 0, out, torch.full_like(out, PAD_LOG_WEIGHT))


def _blocks(b: int, n: int, m: int) -> list[tuple[slice, slice]]:
    """Split a (b, n, m) array into blocks of about ``_BLOCK`` entries (batch, then rows)."""
    if n * m >= _BLOCK:
        rows = max(1, _BLOCK // m)
        return [(slice(i, i + 1), slice(r, min(n, r + rows)))
                for i in range(b) for r in range(0, n, rows)]
    per = max(1, _BLOCK // (n * m))
    return [(slice(i, min(b, i + per)), slice(0, n)) for i in range(0, b, per)]


class DenseCost:
    """A batch of cost matrices ``C[b,i,j] = kappa |u_bi - v_bj|^power + omega W[lu_bi, lv_bj]``.

    ``C`` is computed once (without autograd) and stored as ``store * scale[b]``; ``rows`` and
    ``cols`` are the two views geomloss's loop needs (``C_xy`` and ``C_yx = C_xy^T``).
    ``u``, ``v`` and ``W`` may require grad: the soft-min's backward pass sends the
    gradient of a ``rows`` soft-min to ``u`` and of a ``cols`` soft-min to ``v`` (geomloss's
    convention ``C_xy = cost(x, y.detach())``, ``C_yx = cost(y, x.detach())``), and
    ``w_grad_scale`` times the gradient with respect to the table to ``W``.
    """

    def __init__(
        self,
        u: torch.Tensor,
        v: torch.Tensor,
        *,
        power: int = 2,
        kappa: float = 1.0,
        w: torch.Tensor | None = None,
        lu: torch.Tensor | None = None,
        lv: torch.Tensor | None = None,
        omega: float = 0.0,
        w_grad_scale: float = 0.5,
        scale: torch.Tensor | None = None,
    ) -> None:
        if u.dim() != 3 or v.dim() != 3:
            raise ValueError("DenseCost expects batched point clouds (B, N, D) and (B, M, D)")
        self.u, self.v, self.power, self.kappa = u, v, power, float(kappa)
        self.omega = float(omega) if w is not None else 0.0
        self.w = w if self.omega != 0.0 else None
        self.lu, self.lv = lu, lv
        self.w_grad_scale = w_grad_scale
        with torch.no_grad():
            store = _cost_block(self, slice(None), slice(None), u.detach(), v.detach(),
                                None if self.w is None else self.w.detach())
            if scale is not None:
                store.div_(scale.view(-1, 1, 1))
        self.store = store
        b = store.shape[0]
        self.scale = (scale.detach().clone() if scale is not None
                      else torch.ones(b, dtype=store.dtype, device=store.device))
        self.rows = _CostView(self, transposed=False)
        self.cols = _CostView(self, transposed=True)
        # one scratch buffer for all the soft-mins on this cost (no per-call allocation)
        self.work = torch.empty(min(_BLOCK + max(store.shape[1:]), store.numel()) + 1,
                                dtype=store.dtype, device=store.device)

    def rate(self, eps) -> float:
        """The scalar ``r`` with ``C / eps == store * r`` for every batch element.

        When ``eps`` differs across the batch in a way ``scale`` does not absorb, the store is
        rescaled in place (once per change of regime, e.g. when annealing reaches the target
        temperature).
        """
        if not torch.is_tensor(eps):
            eps_b = torch.full_like(self.scale, float(eps))
        else:
            eps_b = eps.reshape(-1).to(self.scale)
        r = self.scale / eps_b
        r_max, r_min = float(r.max()), float(r.min())
        if r_max - r_min <= 1e-6 * r_max:
            return r_max
        with torch.no_grad():
            self.store.mul_(r.view(-1, 1, 1))
        self.scale = eps_b.clone()
        return 1.0


class _CostView:
    """``C`` (rows: the soft-min reduces over j) or ``C^T`` (cols: reduces over i)."""

    def __init__(self, cost: DenseCost, transposed: bool) -> None:
        self.cost, self.transposed = cost, transposed
        self.last: torch.Tensor | None = None  # previous soft-min output, centres the next one


def _cost_block(cost: DenseCost, bs: slice, rs: slice, u: torch.Tensor, v: torch.Tensor,
                w: torch.Tensor | None) -> torch.Tensor:
    """Cost entries of batch slice ``bs`` and row slice ``rs`` (no autograd inside)."""
    ub, vb = u[bs, rs], v[bs]
    if cost.kappa != 0.0:
        sq = torch.baddbmm((ub * ub).sum(-1, keepdim=True) + (vb * vb).sum(-1).unsqueeze(1),
                           ub, vb.transpose(1, 2), alpha=-2.0)
        if cost.power == 1:
            out = sq.clamp_min_(0.0).sqrt_().mul_(cost.kappa)
        else:
            out = sq.mul_(cost.kappa)
    else:
        out = torch.zeros(ub.shape[0], ub.shape[1], vb.shape[1], dtype=u.dtype, device=u.device)
    if w is not None:  # omega W[lu_i, lv_j], as a GEMM with one-hot columns (exact, and much
        lu, lv = cost.lu[bs, rs], cost.lv[bs]  # faster than a gather with (n, m) indices)
        onehot_v = torch.nn.functional.one_hot(lv, w.shape[1]).to(out.dtype)
        out.baddbmm_(w[lu] * cost.omega, onehot_v.transpose(1, 2))
    return out


def _sums(view: _CostView, r: float, h: torch.Tensor, shift: torch.Tensor,
          want_max: bool = False) -> torch.Tensor:
    """Sum of ``exp(h - r*store - shift)`` along the reduced axis (or its max, in log2 units)."""
    store = view.cost.store
    if _native.available(store):  # one fused pass instead of four (same quantity)
        return _native.reduce(store, h * _LOG2E, shift * _LOG2E, r * _LOG2E,
                              transposed=view.transposed, want_max=want_max)
    b, n, m = store.shape
    ones_n = torch.ones(b, n, 1, dtype=store.dtype, device=store.device)
    ones_m = torch.ones(b, 1, m, dtype=store.dtype, device=store.device)
    if not view.transposed:  # X_ij = h_j - shift_i - r C_ij, reduce over j
        left = torch.cat([-shift.unsqueeze(2), ones_n], 2)
        right = torch.cat([ones_m, h.unsqueeze(1)], 1)
        out = torch.empty(b, n, dtype=store.dtype, device=store.device)
    else:  # X_ij = h_i - shift_j - r C_ij, reduce over i
        left = torch.cat([h.unsqueeze(2), ones_n], 2)
        right = torch.cat([ones_m, -shift.unsqueeze(1)], 1)
        out = torch.full((b, m), -math.inf if want_max else 0.0, dtype=store.dtype,
                         device=store.device)
    work = view.cost.work
    for bs, rs in _blocks(b, n, m):
        sb = store[bs, rs]
        x = work[: sb.numel()].view(sb.shape)
        torch.baddbmm(sb, left[bs, rs], right[bs], beta=-r * _LOG2E, alpha=_LOG2E, out=x)
        if not view.transposed:
            if want_max:
                out[bs, rs] = x.amax(2)
            else:
                out[bs, rs] = x.clamp_min_(_CLAMP_LOG2).exp2_().sum(2)
        elif want_max:
            out[bs] = torch.maximum(out[bs], x.amax(1))
        else:
            out[bs] += x.clamp_min_(_CLAMP_LOG2).exp2_().sum(1)
    return out


def _lse(view: _CostView, eps, h: torch.Tensor) -> torch.Tensor:
    """``log sum exp(h - C/eps)`` along the view's reduced axis, shape (B, K)."""
    cost = view.cost
    r = cost.rate(eps)
    b, n, m = cost.store.shape
    k = m if view.transposed else n
    eps_col = eps if torch.is_tensor(eps) else torch.tensor(float(eps), dtype=h.dtype,
                                                            device=h.device)
    if view.last is not None:  # centre with the previous output: usually within a few units
        shift = -view.last / eps_col
        s = _sums(view, r, h, shift)
        ok = (s >= _SUM_LO) & (s <= _SUM_HI)
        if bool(ok.all()):
            return s.log() + shift
    zero = torch.zeros(b, k, dtype=h.dtype, device=h.device)
    shift = _sums(view, r, h, zero, want_max=True) * _LN2  # exact row/column maxima
    return _sums(view, r, h, shift).log() + shift


class _SoftminFn(torch.autograd.Function):
    """Soft-min with an analytic, block-recomputed backward pass (see module docstring)."""

    @staticmethod
    def forward(ctx, h, u, v, w, view, eps):  # noqa: D401 - autograd signature
        lse = _lse(view, eps, h)
        eps_col = eps if torch.is_tensor(eps) else torch.tensor(float(eps), dtype=h.dtype,
                                                                device=h.device)
        f = -eps_col * lse
        view.last = f.detach()
        ctx.view, ctx.eps = view, eps
        ctx.save_for_backward(h, u, v, w, lse)
        return f

    @staticmethod
    def backward(ctx, grad_f):
        h, u, v, w, lse = ctx.saved_tensors
        view, eps = ctx.view, ctx.eps
        cost = view.cost
        need_u = ctx.needs_input_grad[1] and not view.transposed
        need_v = ctx.needs_input_grad[2] and view.transposed
        need_w = ctx.needs_input_grad[3]
        grad_u = torch.zeros_like(u) if need_u else None
        grad_v = torch.zeros_like(v) if need_v else None
        grad_w = torch.zeros_like(w) if need_w else None
        if not (need_u or need_v or need_w):
            return None, None, None, None, None, None
        b = u.shape[0]
        eps_b = (eps.reshape(-1) if torch.is_tensor(eps)
                 else torch.full((b,), float(eps), dtype=h.dtype, device=h.device))
        ud, vd = u.detach(), v.detach()
        wd = None if w is None else w.detach()
        n, m = ud.shape[1], vd.shape[1]
        for bs, rs in _blocks(b, n, m):
            c = _cost_block(cost, bs, rs, ud, vd, wd)
            e = eps_b[bs].view(-1, 1, 1)
            if not view.transposed:  # f_i = -eps lse_j(h_j - C_ij/eps): dF/dC_ij = g_i P_ij
                p = (h[bs].unsqueeze(1) - c / e - lse[bs, rs].unsqueeze(2)).exp_()
                g = p.mul_(grad_f[bs, rs].unsqueeze(2))
            else:  # g_j = -eps lse_i(h_i - C_ij/eps)
                p = (h[bs, rs].unsqueeze(2) - c / e - lse[bs].unsqueeze(1)).exp_()
                g = p.mul_(grad_f[bs].unsqueeze(1))
            if (need_u or need_v) and cost.kappa != 0.0:
                if cost.power == 1:  # d|u-v| / du = (u - v) / |u - v| (0 where u == v)
                    ub, vb = ud[bs, rs], vd[bs]
                    dist = torch.baddbmm((ub * ub).sum(-1, keepdim=True)
                                         + (vb * vb).sum(-1).unsqueeze(1),
                                         ub, vb.transpose(1, 2), alpha=-2.0).clamp_min_(0).sqrt_()
                    gk = torch.where(dist > 0, g / dist.clamp_min(1e-30), torch.zeros_like(g))
                    gk = gk * cost.kappa
                else:
                    gk = g * (2.0 * cost.kappa)
                if need_u:
                    grad_u[bs, rs] += gk.sum(2, keepdim=True) * ud[bs, rs] - gk @ vd[bs]
                if need_v:
                    grad_v[bs] += (gk.sum(1).unsqueeze(2) * vd[bs]
                                   - gk.transpose(1, 2) @ ud[bs, rs])
            if need_w:
                lu, lv = cost.lu[bs, rs], cost.lv[bs]
                nw_u, nw_v = grad_w.shape
                eu = torch.nn.functional.one_hot(lu, nw_u).to(g.dtype)
                ev = torch.nn.functional.one_hot(lv, nw_v).to(g.dtype)
                grad_w += (eu.transpose(1, 2) @ g @ ev).sum(0) * (cost.omega * cost.w_grad_scale)
        return None, grad_u, grad_v, grad_w, None, None


def softmin(eps, view: _CostView, h: torch.Tensor) -> torch.Tensor:
    """The soft-min geomloss's loop calls: ``-eps log sum exp(h - C/eps)`` over the view's axis."""
    cost = view.cost
    tracked = [t for t in (cost.u, cost.v, cost.w) if t is not None and t.requires_grad]
    if torch.is_grad_enabled() and tracked:
        return _SoftminFn.apply(h, cost.u, cost.v, cost.w, view, eps)
    lse = _lse(view, eps, h)
    eps_col = eps if torch.is_tensor(eps) else float(eps)
    f = -eps_col * lse
    view.last = f.detach()
    return f


def solve(
    a: torch.Tensor,
    b: torch.Tensor,
    cost_xy: DenseCost,
    eps_list: Sequence,
    *,
    cost_xx: DenseCost | None = None,
    cost_yy: DenseCost | None = None,
) -> torch.Tensor:
    """Entropic OT values of a batch, in geomloss's dual form, shape (B,).

    ``a`` (B, N) and ``b`` (B, M) are the weights (zero for padding); ``eps_list`` is the
    annealing schedule (floats, or (B, 1) tensors for one schedule per batch element). With
    ``cost_xx`` and ``cost_yy`` the result is the debiased Sinkhorn divergence
    ``OT(a,b) - OT(a,a)/2 - OT(b,b)/2``; without, the raw ``OT(a,b)``.
    """
    debias = cost_xx is not None
    grad_mode = torch.is_grad_enabled()
    try:  # geomloss's loop toggles the global grad mode; restore the caller's afterwards
        f_aa, g_bb, g_ab, f_ba = sinkhorn_loop(
            softmin,
            log_weights(a),
            log_weights(b),
            cost_xx.rows if debias else None,
            cost_yy.rows if debias else None,
            cost_xy.rows,
            cost_xy.cols,
            list(eps_list),
            None,
            debias=debias,
        )
    finally:
        torch.set_grad_enabled(grad_mode)
    if not grad_mode:
        f_ba, g_ab = f_ba.detach(), g_ab.detach()
        if debias:
            f_aa, g_bb = f_aa.detach(), g_bb.detach()
    return sinkhorn_cost(None, None, a, b, f_aa, g_bb, g_ab, f_ba, batch=True, debias=debias)
