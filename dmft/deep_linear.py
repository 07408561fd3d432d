"""Theory of deep linear networks under gradient flow and SGD: per-mode dynamics.

Conventions: docs/conventions.md ("Deep linear networks"); derivations: docs/derivations.md
(section "Deep linear networks and SGD noise"). With aligned and balanced weights every
layer carries a scalar a_i = pi_i^(1/L) on mode i and the dynamics split into one
equation per mode:

    gradient flow:  d pi_i / dt = mu_i(pi_i) = L pi_i^(2 - 2/L) (s_i - pi_i)                (Saxe et al.)
    SGD (step eta, batch B):  d pi = [mu_i + (L - 1) D_i / (2 L pi)] dt + sqrt(D_i) dW      (Ito)
                              D_i(pi) = (eta / B) L^2 pi^(4 - 4/L) c_i(pi)

where c_i is the variance of one sample's gradient along the mode:

    online data:               c_i = 2 (s_i - pi)^2 + sigma^2                       (Isserlis)
    P fixed whitened points:   c_i = [(kappa_i - 1) d^2 + 2 tau_i d + lambda_i] (P - B) / (P - 1),
                               d = s~_i - pi, kappa_i = <z^4>, tau_i = <rho z^3>, lambda_i = <rho^2 z^2>

with z = v~_i . x and rho = u~_i . (y - M~ x) over the P points, M~ = Y^T X / P the target the
network actually fits (its singular values s~ and vectors u~, v~; `effective_modes`). The
reduction drops the noise off the mode directions (it breaks alignment and balancedness
and couples the modes at O(eta / B); docs/derivations.md says how much).

Example:
    >>> import dmft
    >>> data = dmft.tasks.linear_teacher(4, 4, [2.0, 1.0], key=0)           # online data
    >>> model = dmft.DeepLinear(depth=2, width=8, init_scale=0.1, init="aligned")
    >>> pi = dmft.deep_linear.mode_flow(model, data, [0.0, 5.0])
    >>> pi.shape, bool(pi[1, 0] > 1.9)
    ((2, 2), True)
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from . import checks
from .errors import InputError
from .plotting import new_figure
from .problem import DeepLinear, LinearTeacher
from .schedule import Schedule, schedule_from
from .trajectory import Records

__all__ = ["EffectiveModes", "effective_modes", "mode_flow", "learning_times", "plateaus",
           "noise_variance", "diffusion", "drift", "mode_sde", "ModeSDE", "stationary_density",
           "boltzmann_temperature", "diffusion_peaks", "staircase_figure"]


# ----------------------------------------------------------------- the modes the network fits

@dataclasses.dataclass(frozen=True)
class EffectiveModes:
    """The target a deep linear network fits and the statistics of its gradient noise.

    Attributes:
        U, V: (d_out, r), (d_in, r) mode directions (the teacher's online; those of the least-
            squares target M~ = Y^T X / P on a fixed set, matched to the teacher's by overlap).
        s: (r,) the target's strength along each mode (s online; s~ on a fixed set).
        kappa, tau, lam: (r,) data moments of c_i (fixed set), or None (online).
        sigma: label noise; P: fixed points or None.
    """

    U: np.ndarray
    V: np.ndarray
    s: np.ndarray
    sigma: float
    P: int | None
    kappa: np.ndarray | None = None
    tau: np.ndarray | None = None
    lam: np.ndarray | None = None


def effective_modes(data: LinearTeacher) -> EffectiveModes:
    """The modes, strengths and noise moments of `data` (see the module docstring).

    On a fixed set the inputs must be white (X^T X / P = I), as `linear_teacher(whiten=True)`
    makes them: that is what makes the empirical loss a function of M~ alone.
    """
    if not isinstance(data, LinearTeacher):
        raise InputError(f"data must be a dmft.LinearTeacher, got {type(data).__name__}")
    if data.online:
        return EffectiveModes(np.asarray(data.U), np.asarray(data.V), np.asarray(data.s),
                              data.label_noise, None)
    X, Y, P = np.asarray(data.x_train), np.asarray(data.y_train), data.P
    gram = X.T @ X / P
    if not np.allclose(gram, np.eye(data.d_in), atol=1e-8):
        raise InputError("data: the per-mode theory of a fixed set needs white inputs (X^T X / P = I); "
                         "make the teacher with whiten=True")
    Mt = Y.T @ X / P
    u, sv, vt = np.linalg.svd(Mt, full_matrices=False)
    # match each teacher mode to the empirical singular pair it overlaps most (greedy, in order)
    overlap = np.abs(np.asarray(data.U).T @ u) * np.abs(np.asarray(data.V).T @ vt.T)
    taken, idx = set(), []
    for i in range(data.rank):
        order = np.argsort(-overlap[i])
        j = next(int(j) for j in order if int(j) not in taken)
        taken.add(j)
        idx.append(j)
    U, V, s = u[:, idx], vt[idx].T, sv[idx]
    sign = np.sign(np.sum(U * np.asarray(data.U), axis=0))
    sign = np.where(sign == 0, 1.0, sign)
    U, V = U * sign, V * sign
    z = X @ V                                           # (P, r)
    rho = (Y - X @ Mt.T) @ U                            # in-sample label residuals along the modes
    return EffectiveModes(U, V, s, data.label_noise, P, kappa=np.mean(z ** 4, axis=0),
                          tau=np.mean(rho * z ** 3, axis=0), lam=np.mean(rho ** 2 * z ** 2, axis=0))


def _check(model, data):
    if not isinstance(model, DeepLinear):
        raise InputError(f"model must be a dmft.DeepLinear, got {type(model).__name__}")
    model.check_data(data)


# ----------------------------------------------------------------- gradient flow

def _gf_rate(p, s, L):
    return L * np.abs(p) ** (2.0 - 2.0 / L) * (s - p)


def _rk45_path(s, L, pi0, times, rtol=1e-11):
    """pi(t) of d pi/dt = L pi^(2-2/L)(s - pi) at sorted `times`, by embedded Runge-Kutta
    (Dormand-Prince 5(4)) integrated in u = log pi with step control; exact to ~rtol."""
    a = np.array([[0, 0, 0, 0, 0, 0],
                  [1 / 5, 0, 0, 0, 0, 0],
                  [3 / 40, 9 / 40, 0, 0, 0, 0],
                  [44 / 45, -56 / 15, 32 / 9, 0, 0, 0],
                  [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0, 0],
                  [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0]])
    b5 = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0])
    b4 = np.array([5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40])

    def f(u):        # du/dt = L pi^(1-2/L) (s - pi), pi = e^u
        p = math.exp(u)
        return L * p ** (1.0 - 2.0 / L) * (s - p)

    u, t = math.log(pi0), 0.0
    h = 1e-3 / max(L * max(s, pi0) ** (2 - 2 / L), 1e-12)
    out = np.empty(len(times))
    for n, target in enumerate(times):
        while t < target:
            h = min(h, target - t)
            k = np.empty(7)
            k[0] = f(u)
            for i in range(1, 6):
                k[i] = f(u + h * np.dot(a[i, :i], k[:i]))
            u5 = u + h * np.dot(b5[:6], k[:6])
            k[6] = f(u5)
            u4 = u + h * np.dot(b4, k)
            err = abs(u5 - u4)
            tol = rtol * max(1.0, abs(u5))
            if err <= tol:
                t, u = t + h, u5
            h *= min(5.0, max(0.2, 0.9 * (tol / max(err, 1e-300)) ** 0.2))
        out[n] = math.exp(u)
    return out


def mode_flow(model: DeepLinear, data: LinearTeacher, t) -> np.ndarray:
    """Gradient-flow mode strengths from the aligned, balanced start pi_i(0) = init_scale^L.

    Closed form for L = 1 and L = 2 (pi = s e^{2st} / (e^{2st} - 1 + s / pi0)); an adaptive
    Runge-Kutta integration (relative error ~1e-11) for L > 2. On a fixed set the network
    fits M~ (`effective_modes`), so s~ replaces s.

    Args:
        t: (T,) times >= 0 (any order).
    Returns:
        (T, r) mode strengths, modes in the order of the teacher's singular values.
    """
    _check(model, data)
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(t)) or np.any(t < 0):
        raise InputError("t: times must be finite and >= 0")
    s = effective_modes(data).s
    L, pi0 = model.depth, model.mode_init
    out = np.empty((t.size, s.size))
    for i, si in enumerate(s):
        if L == 1:
            out[:, i] = si + (pi0 - si) * np.exp(-t)
        elif L == 2:
            e = np.exp(-2 * si * t)           # pi = s / (1 + (s / pi0 - 1) e^{-2st}), overflow-free
            out[:, i] = si / (1 + (si / pi0 - 1) * e)
        else:
            order = np.argsort(t)
            path = _rk45_path(si, L, pi0, t[order])
            out[order, i] = path
    return out


def _time_between(s, L, p1, p2, n=4000):
    """Gradient-flow time for pi to go from p1 to p2 (both between 0 and s): the integral of
    dp / (L p^(2-2/L) (s - p)), by Gauss-Legendre quadrature in log p on many panels."""
    x, w = np.polynomial.legendre.leggauss(16)
    lo, hi = math.log(p1), math.log(p2)
    edges = np.linspace(lo, hi, n // 16 + 1)
    total = 0.0
    for a_, b_ in zip(edges[:-1], edges[1:]):
        v = (b_ - a_) / 2 * x + (a_ + b_) / 2
        p = np.exp(v)
        total += (b_ - a_) / 2 * np.sum(w * p / (L * p ** (2 - 2 / L) * (s - p)))
    return total


def learning_times(model: DeepLinear, data: LinearTeacher, level: float = 0.5) -> np.ndarray:
    """(r,) gradient-flow times at which each mode reaches `level` x its target, from the aligned
    start (closed form for L = 2: ln((s / pi0 - 1) / (1 / level - 1)) / (2 s); quadrature else).
    NaN for a mode that starts above the level."""
    _check(model, data)
    level = checks.real("level", level, positive=True, below=1.0)
    s = effective_modes(data).s
    L, pi0 = model.depth, model.mode_init
    out = np.full(s.size, np.nan)
    for i, si in enumerate(s):
        target = level * si
        if pi0 >= target:
            continue
        if L == 1:
            out[i] = math.log((si - pi0) / (si - target))
        elif L == 2:
            out[i] = math.log((si / pi0 - 1) / (si / target - 1)) / (2 * si)
        else:
            out[i] = _time_between(si, L, pi0, target)
    return out


def plateaus(data: LinearTeacher) -> dict:
    """The saddle-to-saddle staircase of the population loss.

    Modes are learned in order of decreasing strength; before the k-th is learned the loss
    sits at (1/2) sum of s_j^2 over the modes not yet learned, plus d_out sigma^2 / 2.

    Returns {"order": mode indices in learning order, "levels": (r + 1,) loss plateaus,
             "noise_floor": d_out sigma^2 / 2}.
    """
    if not isinstance(data, LinearTeacher):
        raise InputError(f"data must be a dmft.LinearTeacher, got {type(data).__name__}")
    s = np.asarray(data.s)
    order = np.argsort(-s, kind="stable")
    floor = 0.5 * data.d_out * data.label_noise ** 2
    levels = [0.5 * float(np.sum(s[order[k:]] ** 2)) + floor for k in range(s.size + 1)]
    return {"order": order, "levels": np.asarray(levels), "noise_floor": floor}


# ----------------------------------------------------------------- SGD: the per-mode SDE

def noise_variance(modes: EffectiveModes, pi, batch_size: int):
    """c_i(pi): the variance of one sample's gradient along each mode (times the finite-
    population factor on a fixed set), at mode strengths pi (..., r). The residual s - pi is
    clipped at -s: above 2 s the Gaussian closure of the (one-sided) noise fails."""
    pi = np.asarray(pi, dtype=np.float64)
    d = np.maximum(modes.s - pi, -modes.s)
    if modes.P is None:
        return 2.0 * d * d + modes.sigma ** 2
    P, B = modes.P, batch_size
    fpc = (P - B) / (P - 1) if P > 1 else 0.0
    c = (modes.kappa - 1.0) * d * d + 2.0 * modes.tau * d + modes.lam
    return np.maximum(c, 0.0) * fpc


def _sgd_args(model, data, eta0, batch_size):
    _check(model, data)
    eta0 = checks.real("eta0", eta0, positive=True)
    B = checks.integer("batch_size", batch_size, minimum=1)
    if not data.online and B > data.P:
        raise InputError(f"batch_size must be <= P = {data.P}, got {B}")
    return eta0, B


def diffusion(model: DeepLinear, data: LinearTeacher, pi, *, eta0: float, batch_size: int):
    """D_i(pi) = (eta / B) L^2 pi^(4 - 4/L) c_i(pi): Var[delta pi_i] / eta of one SGD step."""
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    modes = effective_modes(data)
    pi = np.asarray(pi, dtype=np.float64)
    L = model.depth
    return eta0 / B * L ** 2 * np.abs(pi) ** (4 - 4 / L) * noise_variance(modes, pi, B)


def drift(model: DeepLinear, data: LinearTeacher, pi, *, eta0: float, batch_size: int,
          ito: bool = True):
    """mu_i(pi) = L pi^(2-2/L)(s_i - pi) (+ (L - 1) D_i / (2 L pi), the Ito term, with ito=True)."""
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    modes = effective_modes(data)
    pi = np.asarray(pi, dtype=np.float64)
    L = model.depth
    mu = _gf_rate(pi, modes.s, L)
    if ito:
        D = diffusion(model, data, pi, eta0=eta0, batch_size=B)
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = mu + np.where(pi != 0, (L - 1) * D / (2 * L * pi), 0.0)
    return mu


@dataclasses.dataclass
class ModeSDE(Records):
    """Paths of the per-mode SDE (leading axes: path, time).

    Attributes:
        t: (T,) times k * eta0.
        modes: (paths, T, r) mode strengths.
        diffusion: (paths, T, r) D_i(pi) along the paths.
        info: settings and timings.
    """

    t: np.ndarray
    modes: np.ndarray
    diffusion: np.ndarray
    info: dict

    ENSEMBLE_AXES: ClassVar[tuple] = ("path",)


def mode_sde(model: DeepLinear, data: LinearTeacher, eta0=None, batch_size=None, steps=None,
             save_every=None, paths: int = 1024, key=None, *, schedule: Schedule | None = None) -> ModeSDE:
    """Integrate the per-mode SDE with vmapped Euler-Maruyama paths, one step per SGD step.

    The scheme is Euler-Maruyama for each layer's scalar a = pi^(1/L):
    a <- a + eta a^(L-1) (s - a^L + zeta), zeta ~ N(0, c(pi) / B), which is the SGD step of
    the aligned network with its noise made Gaussian; it carries the Ito term of pi exactly.

    Args:
        eta0, batch_size, steps, save_every: the SGD protocol (or schedule=, with batch_size set).
        paths: independent paths (>= 1).
        key: `jax.random.key` (default key(0)); path p uses fold_in(key, p).

    Returns:
        ModeSDE with .t (T,) and .modes (paths, T, r).
    """
    _check(model, data)
    given = {k: v for k, v in dict(eta0=eta0, steps=steps, save_every=save_every,
                                   batch_size=batch_size).items() if v is not None}
    sch = schedule_from(schedule, **given, defaults=dict(eta0=0.01, steps=1000, save_every=10))
    if sch.batch_size is None:
        raise InputError("batch_size: the SDE describes minibatch SGD; give batch_size")
    eta, B = _sgd_args(model, data, sch.eta0, sch.batch_size)
    paths = checks.integer("paths", paths, minimum=1)
    key = checks.prng_key("key", key)
    key = jax.random.key(0) if key is None else key
    modes = effective_modes(data)
    L, pi0 = model.depth, model.mode_init
    dt = jnp.result_type(float)
    s = jnp.asarray(modes.s, dt)
    online = modes.P is None
    fpc = 1.0 if online else ((modes.P - B) / (modes.P - 1) if modes.P > 1 else 0.0)
    kappa = jnp.asarray(modes.kappa if not online else np.zeros_like(modes.s), dt)
    tau = jnp.asarray(modes.tau if not online else np.zeros_like(modes.s), dt)
    lam = jnp.asarray(modes.lam if not online else np.zeros_like(modes.s), dt)
    sigma2 = modes.sigma ** 2

    def c_of(pi):
        d = jnp.maximum(s - pi, -s)
        if online:
            return 2 * d * d + sigma2
        return jnp.maximum((kappa - 1) * d * d + 2 * tau * d + lam, 0.0) * fpc

    def step(a, k, pkey):
        pi = a ** L
        zeta = jax.random.normal(jax.random.fold_in(pkey, k), a.shape, dt) * jnp.sqrt(c_of(pi) / B)
        return a + eta * a ** (L - 1) * (s - pi + zeta)

    gaps = jnp.asarray(sch.gaps, jnp.int32)

    def one_path(pkey):
        def interval(carry, gap):
            a, k = carry
            a, k = jax.lax.fori_loop(0, gap, lambda _, c: (step(c[0], c[1], pkey), c[1] + 1), (a, k))
            return (a, k), a
        a0 = jnp.full(s.shape, model.init_scale, dt)
        _, rec = jax.lax.scan(interval, (a0, jnp.int32(0)), gaps)
        return jnp.concatenate([a0[None], rec])

    run = jax.jit(jax.vmap(one_path))
    keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(jnp.arange(paths))
    a = np.asarray(run(keys))
    pi = a ** L
    D = eta / B * L ** 2 * np.abs(pi) ** (4 - 4 / L) * noise_variance(modes, pi, B)
    info = {"paths": paths, "eta0": eta, "batch_size": B, "depth": L, "mode_init": pi0,
            "s_effective": modes.s.tolist(), "online": online,
            "config": {"model": model.describe(), "data": data.describe(),
                       "sde": {**sch.describe(), "paths": paths}}}
    return ModeSDE(t=sch.times, modes=pi, diffusion=D, info=info)


def stationary_density(model: DeepLinear, data: LinearTeacher, pi, *, eta0: float,
                       batch_size: int) -> np.ndarray:
    """The stationary density of each mode's SDE on the grid pi (G,) (> 0, increasing):
    p_i(pi) ~ D_i^-1 exp(int 2 mu_i / D_i) with the Ito drift, i.e.
    pi^((L-1)/L) / D_i exp((2B / (eta L)) int_{s_i}^{pi} (s_i - q) / (q^(2-2/L) c_i(q)) dq),
    normalized on the grid. Returns (G, r).

    Without label noise D vanishes at the target and the law is a point mass at s_i (the
    gradient-flow fixed point): InputError says so.
    """
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    modes = effective_modes(data)
    c_at_target = noise_variance(modes, modes.s, B)
    scale = noise_variance(modes, 0.0 * modes.s, B)           # c at pi = 0, the noise's own scale
    if np.any(c_at_target <= 1e-12 * np.maximum(scale, 1e-300)):
        raise InputError("stationary_density: without label noise the noise vanishes at the target; "
                         "the stationary law is a point mass at s (the gradient-flow fixed point)")
    pi = np.asarray(pi, dtype=np.float64).reshape(-1)
    if pi.size < 2 or np.any(pi <= 0) or np.any(np.diff(pi) <= 0):
        raise InputError("pi: a grid of increasing positive values")
    L = model.depth
    out = np.empty((pi.size, modes.s.size))
    for i, si in enumerate(modes.s):
        # integrate on a fine grid from s_i, then read off at pi
        lo, hi = min(pi[0], si), max(pi[-1], si)
        fine = np.unique(np.concatenate([np.linspace(lo, hi, 20001), pi, [si]]))
        one = EffectiveModes(modes.U[:, i:i + 1], modes.V[:, i:i + 1], modes.s[i:i + 1], modes.sigma,
                             modes.P, *(None if v is None else v[i:i + 1]
                                        for v in (modes.kappa, modes.tau, modes.lam)))
        c = noise_variance(one, fine[:, None], B)[:, 0]
        g = (2 * B / (eta0 * L)) * (si - fine) / (fine ** (2 - 2 / L) * c)
        F = np.concatenate([[0.0], np.cumsum(0.5 * (g[1:] + g[:-1]) * np.diff(fine))])
        F -= F[np.searchsorted(fine, si)]
        logp = F + (L - 1) / L * np.log(fine) - np.log(eta0 / B * L ** 2 * fine ** (4 - 4 / L) * c)
        logp = np.interp(pi, fine, logp)
        p = np.exp(logp - logp.max())
        out[:, i] = p / np.trapezoid(p, pi)
    return out


def boltzmann_temperature(model: DeepLinear, data: LinearTeacher, *, eta0: float, batch_size: int):
    """(r,) T_i = eta L s_i^(2-2/L) c_i(s_i) / (2B): near the target the stationary law is close
    to exp(-(pi - s)^2 / (2 T_i)), a Boltzmann law of the mode loss (s - pi)^2 / 2."""
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    modes = effective_modes(data)
    L = model.depth
    return eta0 * L * modes.s ** (2 - 2 / L) * noise_variance(modes, modes.s, B) / (2 * B)


def diffusion_peaks(model: DeepLinear, data: LinearTeacher, *, eta0: float, batch_size: int,
                    t=None) -> dict:
    """When the diffusion along each mode peaks on the gradient-flow path, against when the mode
    is learned.

    Returns {"t_peak": (r,) time of maximal D_i (function space), "t_peak_layer": (r,) time of
    maximal diffusion of each layer's scalar a_i (D_a = D_i / (L pi^(1-1/L))^2), "t_half",
    "t_90": (r,) times at 50% and 90% of the target, "lead_half", "lead_90": t_half - t_peak
    and t_90 - t_peak (> 0: the diffusion peaks first)}.
    """
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    s = effective_modes(data).s
    t_half = learning_times(model, data, 0.5)
    t_90 = learning_times(model, data, 0.9)
    L = model.depth

    def curves(t):
        pi = mode_flow(model, data, t)
        D = diffusion(model, data, pi, eta0=eta0, batch_size=B)
        return D, D / np.maximum(L * np.abs(pi) ** (1 - 1 / L), 1e-300) ** 2

    if t is None:
        t = np.linspace(0, 2.0 * np.nanmax(t_90), 4001)
    t = np.asarray(t, dtype=np.float64)
    peaks = []
    for which in (0, 1):              # the maximum on the grid, then on a fine grid around it
        coarse = curves(t)[which]
        best = []
        for i in range(s.size):
            j = int(np.argmax(coarse[:, i]))
            lo, hi = t[max(j - 1, 0)], t[min(j + 1, t.size - 1)]
            fine_t = np.linspace(lo, hi, 2001)
            fine = curves(fine_t)[which][:, i]
            best.append(fine_t[int(np.argmax(fine))])
        peaks.append(np.asarray(best))
    t_peak, t_peak_a = peaks
    return {"t_peak": t_peak, "t_peak_layer": t_peak_a, "t_half": t_half, "t_90": t_90,
            "lead_half": t_half - t_peak, "lead_90": t_90 - t_peak,
            "lead_half_layer": t_half - t_peak_a, "s": s}


def staircase_figure(model, data, run=None, sde=None, t=None, title=None):
    """Mode strengths and population loss against time: gradient flow (black), SDE band,
    networks (median and band), plateau levels (dotted)."""
    fig, axes = new_figure(1, 2, size=(11, 4))
    if t is None:
        t = run.t if run is not None else np.geomspace(1e-2, 2 * np.nanmax(learning_times(model, data, 0.9)), 400)
    pi = mode_flow(model, data, t)
    for i in range(pi.shape[1]):
        c = f"C{i % 10}"
        axes[0].plot(t, pi[:, i], color="k", lw=1)
        if run is not None:
            lo, med, hi = np.nanpercentile(run.modes[..., i], [10, 50, 90], axis=0)
            axes[0].plot(run.t, med, color=c, label=f"mode {i + 1} (networks)")
            axes[0].fill_between(run.t, lo, hi, color=c, alpha=0.2)
        if sde is not None:
            lo, hi = np.nanpercentile(sde.modes[..., i], [10, 90], axis=0)
            axes[0].plot(sde.t, lo, color=c, ls="--", lw=0.8)
            axes[0].plot(sde.t, hi, color=c, ls="--", lw=0.8)
    pl = plateaus(data)
    for lev in pl["levels"]:
        axes[1].axhline(lev, color="grey", ls=":", lw=0.8)
    if run is not None:
        lo, med, hi = np.nanpercentile(run.test_loss, [10, 50, 90], axis=0)
        axes[1].plot(run.t, med, "k")
        axes[1].fill_between(run.t, lo, hi, color="k", alpha=0.2)
    axes[0].set_ylabel("mode strength pi_i (black: gradient flow)")
    axes[1].set_ylabel("population loss (dotted: plateaus)")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("t = steps x eta")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
