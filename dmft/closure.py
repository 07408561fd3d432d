"""Exact Gaussian moment closure of the two-layer single site (docs/derivations.md, section 4).

When every neuron's update is affine in its own parameters, the Gaussian
initial law stays Gaussian: write the site as z = U xi + m with xi ~ N(0, I)
and evolve U and m. The state holds V = U - I, not U: what f divides by gamma0 is
the change of the fields' moments, and computed from V it keeps its relative
precision however small gamma0 is (from U it carried U's rounding, ~1e-16 of O(1),
divided by gamma0: relative error ~1e-16 / gamma0). Two cases are exact:

- "poly2-fixed": phi(h) = alpha h + beta h^2 (linear, quadratic(eps), square)
  with fixed readouts a = 1. With L the field basis (h = L z),
      z <- (1 - eta0 kappa) z + eta0 gamma0 / P sum_mu Delta_mu (alpha + 2 beta h_mu) L_mu,
  affine in z; E[h] = L m and E[h^2] = |U^T L_mu|^2 + (L_mu . m)^2 give f, its change
  E[h^2] - K^x_mumu = 2 L_mu . (L_mu V) + |L_mu V|^2 + (L_mu . m)^2 (the rows of L hold
  the data's fields in full: |L_mu|^2 = K^x_mumu).
- "linear-trained": phi(h) = h with trained readouts; the joint site
  (z, a) = U xi evolves linearly,
      z <- z + eta0 gamma0 G a,  a <- a + eta0 gamma0 G^T z,  G = L^T Delta / P,
  and f = L E[z a^T] / gamma0 = L U_z U_a^T / gamma0, where
  U_z U_a^T = V_za + V_az^T + V_z V_a^T (U = I + V split in its z and a rows).

There is no sampling error at all; the cost per step is O(P r^2) for
poly2-fixed (two GEMMs) and O(P r C + r^2 C) for linear-trained.

precision="mixed" (a context holding float32 copies of the field basis, `l_lo`) does
the step's products in float32 while (U, m)
stay and accumulate in float64: the increments are small against U, so it is the
accumulation that needs the precision (an all-float32 run of the Kumar et al. setting
ends 36% off in test loss; mixed ends within 6e-8, `scripts/bench_dmft.py`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .kernels import alignment
from .runner import finite_flag
from .schedule import batch_indices

__all__ = ["KINDS", "Static", "Ctx", "State", "kind_for", "poly2_coefficients",
           "initial_state", "step", "record", "make_context", "predict"]

KINDS = ("poly2-fixed", "linear-trained")


class Static(NamedTuple):
    kind: str
    dynamics: str
    kernels: bool
    has_test: bool
    batch: int = 0          # minibatch size B of SGD (0: full batch)


class Ctx(NamedTuple):
    l_tr: jax.Array        # (P, r)
    lt_tr: jax.Array       # (r, P) = l_tr.T, stored once (a transposed operand is copied per step)
    l_te: jax.Array        # (P*, r)
    y: jax.Array           # (P, C)
    kx_tr: jax.Array       # (P, P)
    f0_tr: jax.Array       # (P, C)
    f0_te: jax.Array       # (P*, C)
    alpha: jax.Array
    beta: jax.Array
    gamma0: jax.Array
    eta0: jax.Array
    decay: jax.Array
    batch_key: jax.Array = None   # the key of the minibatch sequence (SGD)
    l_lo: jax.Array = None        # (P, r) l_tr in float32: precision="mixed" (None: full)
    lt_lo: jax.Array = None       # (r, P) its transpose


class State(NamedTuple):
    V: jax.Array           # U - I: (r, r) or (r + C, r + C)
    m: jax.Array           # (r,) mean (zero for linear-trained)
    k: jax.Array
    bad: jax.Array


def poly2_coefficients(act):
    """(alpha, beta) with phi = alpha h + beta h^2, or None."""
    if act.degree == 1 and act.name == "linear":
        return 1.0, 0.0
    if act.degree == 2:
        return act.params
    return None


def kind_for(act, trained: bool) -> str | None:
    """The exact closure for this activation and readout, or None."""
    if trained:
        return "linear-trained" if (act.degree == 1 and act.name == "linear") else None
    return "poly2-fixed" if poly2_coefficients(act) is not None else None


def initial_state(kind: str, r: int, c: int, dtype) -> State:
    n = r + c if kind == "linear-trained" else r
    return State(jnp.zeros((n, n), dtype), jnp.zeros((r,), dtype),
                 jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))


# --------------------------------------------------------------- poly2-fixed

def _poly2_f(ctx: Ctx, l, f0, V, m, c=lambda a: a, perp=None):
    """(f, L U, L m) on the rows of l (U = I + V); c casts the other operands to l's dtype;
    perp: the change of the fields' variance outside the data span (new inputs only)."""
    l_v, hm = l @ c(V), l @ c(m)                                # fields: E[h] = L m
    # f = f(0) + (E phi(h) - E phi(u)) / gamma0 with E phi(u) = beta K^x_mumu = beta |L_mu|^2:
    # E[h^2] - |L_mu|^2 = 2 L_mu . (L_mu V) + |L_mu V|^2 + (L_mu . m)^2, relative to the change
    dh2 = jnp.sum(l_v * (2 * l + l_v), axis=1) + hm ** 2
    if perp is not None:
        dh2 = dh2 + perp
    f = c(f0[:, 0]) + (c(ctx.alpha) * hm + c(ctx.beta) * dh2) / c(ctx.gamma0)
    return f, l + l_v, hm


def _operands(ctx: Ctx, idx=None):
    """The field basis (and its transpose) the step multiplies with, and the cast of everything
    else to their dtype: float32 copies for precision="mixed", else the arrays themselves; idx:
    a minibatch's rows only (SGD), with the targets, the outputs at t = 0 and the batch loss's
    weight P / B on them (1 for all points)."""
    if ctx.l_lo is None:
        l, lt, c = ctx.l_tr, ctx.lt_tr, lambda a: a
    else:
        lo = ctx.l_lo.dtype
        l, lt, c = ctx.l_lo, ctx.lt_lo, lambda a: jnp.asarray(a).astype(lo)
    if idx is None:
        return l, lt, c, ctx.y, ctx.f0_tr, 1.0
    l = l[idx]
    return l, l.T, c, ctx.y[idx], ctx.f0_tr[idx], ctx.l_tr.shape[0] / idx.shape[0]


def _poly2_velocity(ctx: Ctx, V, m, idx=None):
    p = ctx.l_tr.shape[0]
    l, lt, c, y, f0, scale = _operands(ctx, idx)       # SGD: the batch's rows, its error x P / B
    f, y_u, hm = _poly2_f(ctx, l, f0, V, m, c)
    delta = (c(y[:, 0]) - f) * scale
    # sum_mu Delta_mu phi'(h_mu) L_mu / P, split into its parts linear in xi and constant
    g_u = (lt @ (delta[:, None] * y_u)).astype(V.dtype) / p
    g_m = (lt @ (delta * (c(ctx.alpha) + 2 * c(ctx.beta) * hm))).astype(V.dtype) / p
    dV = 2 * ctx.beta * ctx.gamma0 * g_u - ctx.decay * (jnp.eye(V.shape[0], dtype=V.dtype) + V)
    dm = ctx.gamma0 * g_m - ctx.decay * m
    return dV, dm, delta.astype(V.dtype)


def _poly2_kernels(ctx: Ctx, V, m):
    yu = ctx.l_tr + ctx.l_tr @ V
    c = yu @ yu.T                                               # field covariance
    mu = ctx.l_tr @ m
    d = jnp.diagonal(c)
    m1, m2 = mu[:, None], mu[None, :]
    c11, c22 = d[:, None], d[None, :]
    e11 = c + m1 * m2
    e12 = m1 * (c22 + m2 ** 2) + 2 * c * m2
    e21 = m2 * (c11 + m1 ** 2) + 2 * c * m1
    e22 = (c11 + m1 ** 2) * (c22 + m2 ** 2) + 2 * c ** 2 + 4 * c * m1 * m2
    a, b = ctx.alpha, ctx.beta
    feat = a * a * e11 + a * b * (e12 + e21) + b * b * e22      # Gaussian moments of phi
    grad = a * a + 2 * a * b * (m1 + m2) + 4 * b * b * (c + m1 * m2)
    return feat, grad


# ------------------------------------------------------------ linear-trained

def _cross(V, r):
    """E[z a^T] = U_z U_a^T of U = I + V, from V: V_za + V_az^T + V_z V_a^T."""
    vw, va = V[:r], V[r:]
    return vw[:, r:] + va[:, :r].T + vw @ va.T


def _linear_velocity(ctx: Ctx, V, m, idx=None):
    r, p = ctx.l_tr.shape[1], ctx.l_tr.shape[0]
    l, lt, c, y, f0, scale = _operands(ctx, idx)       # SGD: the batch's rows, its error x P / B
    f = c(f0) + l @ c(_cross(V, r)) / c(ctx.gamma0)          # f = L E[z a^T] / gamma0
    delta = (c(y) - f) * scale
    g = (lt @ delta).astype(V.dtype) / p                        # (r, C)
    U = jnp.eye(V.shape[0], dtype=V.dtype) + V
    dV = ctx.gamma0 * jnp.concatenate([g @ U[r:], g.T @ U[:r]], axis=0) - ctx.decay * U
    return dV, jnp.zeros_like(m), delta.astype(V.dtype)


# -------------------------------------------------------------- runner API

def _velocity(static: Static, ctx: Ctx, V, m, idx=None):
    """Velocities of (V, m) and the error Delta; idx: SGD's batch (`dmft.schedule.batch_indices`),
    whose loss (1/2P) sum_mu w_mu Delta_mu^2 has w = P / B on it and 0 elsewhere, so only its
    rows enter (the error returned is on them, times P / B)."""
    if static.kind == "poly2-fixed":
        return _poly2_velocity(ctx, V, m, idx)
    return _linear_velocity(ctx, V, m, idx)


def step(static: Static, ctx: Ctx, st: State, drive):
    eta = ctx.eta0
    if static.dynamics == "gd":
        p = ctx.l_tr.shape[0]
        idx = (batch_indices(ctx.batch_key, st.k, p, static.batch)
               if static.batch and static.batch < p else None)
        dV, dm, delta = _velocity(static, ctx, st.V, st.m, idx)
        V, m = st.V + eta * dV, st.m + eta * dm
    else:
        # classical fourth-order Runge-Kutta for gradient flow
        k1 = _velocity(static, ctx, st.V, st.m)
        k2 = _velocity(static, ctx, st.V + eta / 2 * k1[0], st.m + eta / 2 * k1[1])
        k3 = _velocity(static, ctx, st.V + eta / 2 * k2[0], st.m + eta / 2 * k2[1])
        k4 = _velocity(static, ctx, st.V + eta * k3[0], st.m + eta * k3[1])
        V = st.V + eta / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        m = st.m + eta / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        delta = k1[2]
    return State(V, m, st.k + 1, finite_flag(st.k, st.bad, delta, V, m))


def record(static: Static, ctx: Ctx, st: State):
    V, m = st.V, st.m
    r = ctx.l_tr.shape[1]
    U = jnp.eye(V.shape[0], dtype=V.dtype) + V
    out = {}
    if static.kind == "poly2-fixed":
        out["f_train"] = _poly2_f(ctx, ctx.l_tr, ctx.f0_tr, V, m)[0][:, None]
        if static.has_test:
            out["f_test"] = _poly2_f(ctx, ctx.l_te, ctx.f0_te, V, m)[0][:, None]
        feat, grad = _poly2_kernels(ctx, V, m)
        ntk = grad * ctx.kx_tr
        out["sq_weight_change.first_layer"] = jnp.sum(V ** 2) + jnp.sum(m ** 2)
        out["sq_weight_change.readout"] = jnp.zeros((), V.dtype)
        out["mean"] = m
        out["second_moment"] = U @ U.T + jnp.outer(m, m)
    else:
        v = _cross(V, r)
        out["f_train"] = ctx.f0_tr + ctx.l_tr @ v / ctx.gamma0
        if static.has_test:
            out["f_test"] = ctx.f0_te + ctx.l_te @ v / ctx.gamma0
        uw, ua = U[:r], U[r:]
        yw = ctx.l_tr @ uw
        feat = yw @ yw.T                                        # Phi = E[h h^T]
        c = ua.shape[0]
        grad = jnp.full_like(feat, jnp.sum(ua ** 2) / c)         # G = E[a^2] (phi' = 1)
        ntk = feat + grad * ctx.kx_tr
        out["sq_weight_change.first_layer"] = jnp.sum(V[:r] ** 2)
        out["sq_weight_change.readout"] = jnp.sum(V[r:] ** 2)
        out["covariance"] = U @ U.T
    out["alignment"] = alignment(ntk, ctx.y)
    if static.kernels:
        out.update(ntk=ntk, feature_kernel=feat, gradient_kernel=grad)
    return out


# -------------------------------------------------------------- setup and prediction

def make_context(act, su: dict, gamma0, eta0, decay, batch_key=None, mixed: bool = False) -> Ctx:
    """The closure's arrays from `dmft.geometry.lazy_setup`'s (traceable in gamma0, eta0, decay
    and the activation's parameters); batch_key: the minibatch sequence of SGD; mixed: also
    keep float32 copies of the field basis for the step's products."""
    P = su["P"]
    a, b = poly2_coefficients(act) or (1.0, 0.0)
    dt = su["y"].dtype
    l_tr = su["l_all"][:P]
    lo = (l_tr.astype(jnp.float32), l_tr.T.astype(jnp.float32)) if mixed else (None, None)
    return Ctx(
        l_tr=su["l_all"][:P], lt_tr=su["l_all"][:P].T.copy(), l_te=su["l_all"][P:], y=su["y"],
        kx_tr=su["kx_all_tr"][:P],
        f0_tr=su["f0"][:P], f0_te=su["f0"][P:],
        alpha=jnp.asarray(a, dt), beta=jnp.asarray(b, dt), gamma0=jnp.asarray(gamma0, dt),
        eta0=jnp.asarray(eta0, dt), decay=jnp.asarray(decay, dt), batch_key=batch_key,
        l_lo=lo[0], lt_lo=lo[1])


def predict(kind: str, ctx: Ctx, V, m, l_new, perp_var, f0_new, shrink):
    """Exact predictions on new inputs from the final state (V = U - I, m).

    Args:
        l_new: (n, r) field-basis rows of the new inputs; perp_var: (n,) variance of their
            field outside the data span at t = 0, which only decays by `shrink`
            (|x|^2 / D = |l_new|^2 + perp_var).
        f0_new: (n, C) output at t = 0.
    Returns (n, C).
    """
    if kind == "poly2-fixed":
        f = _poly2_f(ctx, l_new, f0_new, V, m, perp=(shrink ** 2 - 1) * perp_var)[0]
        return f[:, None]
    # the field outside the span is independent of the readouts: it adds nothing to E[h a]
    return f0_new + l_new @ _cross(V, l_new.shape[1]) / ctx.gamma0
