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
and couples the modes at O(eta / B); docs/derivations.md says how much). Its first-order
effect on the means, a drift -(eta / 2B) a_i^(L-1) sum_k S(a_i, a_k)(c_ik + c_ki) from the
off-mode noise c_ik, is an option (cross_modes=True of `drift`, `mode_sde`,
`stationary_density`; off by default).

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
import functools
import math
import time
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import checks
from .errors import DivergenceError, InputError, MemoryLimitError, warn
from .plan import RUNTIME_BYTES, warn_float32
from .plotting import new_figure
from .runner import CALL_SHARE, count_trace, drop_compiled_if_crowded, run_saved
from .problem import DeepLinear, LinearTeacher
from .schedule import Schedule, check_decay, schedule_from
from .trajectory import Records

__all__ = ["EffectiveModes", "effective_modes", "mode_flow", "learning_times", "plateaus",
           "noise_variance", "diffusion", "drift", "cross_modes_of", "CrossModes", "cross_shift", "mode_sde", "sde_memory_estimate", "check_sde_start", "ModeSDE",
           "stationary_density",
           "ShallowWellError", "PointMassError", "UnresolvedLawError",
           "boltzmann_temperature", "fixed_points", "step_rates", "warn_step", "sgd_lyapunov", "SGDLyapunov",
           "largest_stable_eta0", "warn_sgd_unstable", "switched_off", "diffusion_peaks", "staircase_figure",
           "recorded_setting"]


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
    if not _white(data):
        raise InputError("data: the per-mode theory of a fixed set needs white inputs (X^T X / P = I); "
                         "make the teacher with whiten=True")
    Mt, u, sv, vt, idx = _least_squares_pairs(data)
    U, V, s = u[:, idx], vt[idx].T, sv[idx]
    sign = np.sign(np.sum(U * np.asarray(data.U), axis=0))
    sign = np.where(sign == 0, 1.0, sign)
    U, V = U * sign, V * sign
    z = X @ V                                           # (P, r)
    rho = (Y - X @ Mt.T) @ U                            # in-sample label residuals along the modes
    return EffectiveModes(U, V, s, data.label_noise, P, kappa=np.mean(z ** 4, axis=0),
                          tau=np.mean(rho * z ** 3, axis=0), lam=np.mean(rho ** 2 * z ** 2, axis=0))


def _least_squares_pairs(data: LinearTeacher):
    """(M~, u, sv, vt, idx): the least-squares target M~ = Y^T X / P of a fixed set, its singular
    pairs, and for each teacher mode the pair it overlaps most (greedy, in order); the pairs
    not in idx are the label noise's own."""
    X, Y, P = np.asarray(data.x_train), np.asarray(data.y_train), data.P
    Mt = Y.T @ X / P
    u, sv, vt = np.linalg.svd(Mt, full_matrices=False)
    overlap = np.abs(np.asarray(data.U).T @ u) * np.abs(np.asarray(data.V).T @ vt.T)
    taken, idx = set(), []
    for i in range(data.rank):
        order = np.argsort(-overlap[i])
        j = next(int(j) for j in order if int(j) not in taken)
        taken.add(j)
        idx.append(j)
    return Mt, u, sv, vt, idx


def _check(model, data):
    if not isinstance(model, DeepLinear):
        raise InputError(f"model must be a dmft.DeepLinear, got {type(model).__name__}")
    model.check_data(data)


def _check_aligned(model, data, what: str):
    """The flow and the per-mode SDE start from the aligned, balanced network; refuse another."""
    _check(model, data)
    if model.init != "aligned":
        raise InputError(f"model.init: {what} starts from the aligned, balanced network (init='aligned'); "
                         f"got init={model.init!r} (a random start has no per-mode reduction: train networks, "
                         "or use DeepLinear(..., init='aligned'))")


# ----------------------------------------------------------------- gradient flow

def _gf_rate(p, s, L):
    return L * np.abs(p) ** (2.0 - 2.0 / L) * (s - p)


def _log_mode_init(model: DeepLinear) -> float:
    """log(init_scale^L), computed in log space (init_scale^L may under- or overflow a float)."""
    return model.depth * math.log(model.init_scale)


_LOG_MAX = math.log(np.finfo(np.float64).max)


def _mode_init(model: DeepLinear) -> float:
    """init_scale^L as a float; InputError naming init_scale when it overflows float64 (an
    underflow to 0 is returned as 0.0: the log-space flow does not need it)."""
    lp = _log_mode_init(model)
    if lp >= _LOG_MAX:
        raise InputError(f"init_scale: init_scale^depth = {model.init_scale:g}^{model.depth} = 10^{lp / math.log(10):.0f} "
                         "overflows float64; use a smaller init_scale")
    return math.exp(lp)


# The flow in the variable w = log(p / |s - p|) (p below s: the logit of p / s; above s:
# log(p / (p - s))): dt/dw = g(w) = p^(2/L - 1) / (L s) on both sides, smooth, bounded near the
# target (where t grows linearly in w) and exponential in w on the plateau (where p ~ s e^w), so
# unit panels of Gauss-Legendre quadrature in w are exact to rounding whatever the time scale:
# the cost depends on |log pi0|, never on t.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_W_END = 40.0                         # |p - s| / s = e^-40 < 1e-17: p = s in float64 beyond


def _branch(s: float, log_pi0: float):
    """(+1, w0) for a start below the target, (-1, w0) above it, (0, 0) on it."""
    log_s = math.log(s)
    if log_pi0 < log_s:
        # w0 = log(pi0) - log(s - pi0), with pi0 possibly below float range
        return 1, log_pi0 - log_s - math.log1p(-math.exp(log_pi0 - log_s))
    if log_pi0 > log_s:
        return -1, -math.log1p(-math.exp(log_s - log_pi0))
    return 0, 0.0


def _log_p(s, w, side):
    """log p(w) (side +1: p = s / (1 + e^-w); side -1: p = s / (1 - e^-w))."""
    if side > 0:
        return math.log(s) - np.logaddexp(0.0, -w)
    return math.log(s) - np.log(-np.expm1(-w))


def _p(s, w, side):
    with np.errstate(over="ignore", under="ignore"):
        if side > 0:            # s / (1 + e^-w), without overflow for w << 0 (nor an underflow of
            e = np.exp(-np.abs(w))          # e^w alone: s = 1e150 at w = -845 is 1e-217, not 0)
            return np.where(w >= 0, s / (1.0 + e), np.exp(_log_p(s, np.minimum(w, 0.0), side)))
        return s / (-np.expm1(-w))


def _log_g(s, L, w, side):
    """log dt/dw = (2/L - 1) log p - log(L s)."""
    return (2.0 / L - 1.0) * _log_p(s, w, side) - math.log(L * s)


def _scaled_integral(log_g, a, width, log_ga):
    """int_a^(a + width) g(w) dw / g(a) (elementwise; 16-point Gauss-Legendre), finite whatever g(a) is."""
    a, width, log_ga = (np.asarray(v, dtype=np.float64)[..., None] for v in (a, width, log_ga))
    x = a + width * (_GL_X + 1) / 2
    return (width[..., 0] / 2) * np.sum(_GL_W * np.exp(log_g(x) - log_ga), axis=-1)


def _edges(w0: float, w_end: float, near_zero: bool) -> np.ndarray:
    """Panel edges from w0 to past w_end: unit panels on the integers, and with near_zero (dt/dw
    vanishes like a power of w at w = 0, where p is infinite) geometric panels from w0 up to 1."""
    last = max(w_end, w0 + 1.0)
    if not near_zero:
        inner = np.arange(math.floor(w0) + 1.0, last, 1.0)
        return np.concatenate([[w0], inner[inner > w0], [last]])
    n_geo = max(int(math.ceil(-math.log2(w0))), 0) if w0 < 1 else 0
    geo = w0 * 2.0 ** np.arange(n_geo + 1)
    geo = geo[geo < 1.0]
    unit = np.arange(1.0, last, 1.0)
    return np.unique(np.concatenate([[w0], geo, unit[unit > w0], [last]]))


class _Panels:
    """t(w) = int_w0^w g and its inverse for a flow written as dt/dw = g(w) > 0 (w increasing with
    t), g given by log_g: Gauss-Legendre on the panels of `_edges`, a cumulative table of the
    panels' times, Newton's method inside a panel. Past the last edge g is taken constant (the
    subclasses end where it is, to rounding).

    A start falling from so far above the level r it settles at (pi0 / r > 2^1022) that its
    w0 = log(pi0 / (pi0 - r)) ~ r / pi0 underflows (`_far_start`) begins the panels at w = 2^-1022
    (pi ~ 2^1022 r) after t_far, the time of the stretch above, where d pi/dt = -L pi^(3 - 2/L) to
    rounding: pi^-(2 - 2/L) grows by (2 - 2/L) L t, in closed form (`far_log_p`)."""

    t_far = 0.0
    far = None                  # (log pi0, L) of a start above the panels

    def log_g(self, w):
        raise NotImplementedError

    def _far_start(self, w0: float, log_r: float, log_pi0: float, L: int) -> float:
        """w0, or 2^-1022 with t_far and `far` set when w0 is below it (see the class)."""
        if w0 >= _TINY:
            return w0
        e = 2.0 - 2.0 / L
        log_p1 = log_r - math.log(math.expm1(_TINY))        # pi at w = 2^-1022
        self.far = (log_pi0, L)
        # (pi1^-e - pi0^-e) / (e L), pi1^-e = r^-e 2^(-1022 e) underflows to nothing measurable
        self.t_far = float(-np.expm1(e * (log_p1 - log_pi0)) * np.exp(-e * log_p1) / (e * L))
        return _TINY

    def far_log_p(self, t):
        """log pi(t) on the stretch above the panels (t <= t_far)."""
        log_pi0, L = self.far
        e = 2.0 - 2.0 / L
        with np.errstate(divide="ignore"):
            return -np.logaddexp(-e * log_pi0, np.log(e * L * np.asarray(t, dtype=np.float64))) / e

    def _build(self, edges):
        self.edges = edges
        self.log_ge = self.log_g(edges)
        with np.errstate(over="ignore"):
            panels = np.exp(self.log_ge[:-1]) * _scaled_integral(self.log_g, edges[:-1], np.diff(edges),
                                                                 self.log_ge[:-1])
            self.cum = np.concatenate([[0.0], np.cumsum(panels)])          # t at the edges (may be inf)
            self.g_end = float(np.exp(self.log_ge[-1]))

    def time_to(self, w) -> np.ndarray:
        """t at which the flow reaches w (>= w0, <= the last edge)."""
        w = np.asarray(w, dtype=np.float64)
        j = np.clip(np.searchsorted(self.edges, w, side="right") - 1, 0, self.edges.size - 2)
        a = self.edges[j]
        with np.errstate(over="ignore"):
            return self.t_far + self.cum[j] + np.exp(self.log_ge[j]) * _scaled_integral(self.log_g, a, w - a,
                                                                                        self.log_ge[j])

    def w_at(self, t) -> np.ndarray:
        """w(t) for t >= 0: the panel by the cumulative table, then Newton's method on the scaled
        integral inside it (g / g(edge) lies in [e^-1, e] on a panel). t is counted from the first
        edge (w0, or after t_far for a start far above the panels)."""
        t = np.maximum(np.asarray(t, dtype=np.float64) - self.t_far, 0.0)
        last = self.edges.size - 1
        # the first panel whose end is reached at or after t (increments that underflow leave
        # runs of equal times at the start: t = 0 is the start)
        j = np.clip(np.searchsorted(self.cum, t, side="left") - 1, 0, last)
        out = np.empty_like(t)
        beyond = j == last
        with np.errstate(over="ignore"):            # (w = inf: the end, where p settles)
            out[beyond] = self.edges[-1] + (t[beyond] - self.cum[-1]) / self.g_end
        j, tt = j[~beyond], t[~beyond]
        a, width, lg = self.edges[j], self.edges[j + 1] - self.edges[j], self.log_ge[j]
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            r = np.minimum((tt - self.cum[j]) * np.exp(-lg), 1e300)          # the scaled target
            r = np.where(tt == self.cum[j], 0.0, r)                           # (not 0 x inf)
        d = np.clip(r, 0.0, width)
        for _ in range(60):
            f = _scaled_integral(self.log_g, a, d, lg) - r
            step = f / np.exp(self.log_g(a + d) - lg)
            new = np.clip(d - step, 0.0, width)
            # (relative to w on the geometric panels near w = 0, where pi ~ 1 / w)
            done = np.all(np.abs(new - d) <= 1e-15 * np.maximum(np.minimum(width, 1.0), np.abs(a + new)))
            d = new
            if done:
                break
        out[~beyond] = a + d
        return out


class _Flow(_Panels):
    """Gradient flow of one mode without decay, p(t) and t(p), from log pi0 (see the comment above)."""

    def __init__(self, s: float, L: int, log_pi0: float):
        self.s, self.L = float(s), int(L)
        self.side, w0 = _branch(self.s, log_pi0)
        self.log_pi0 = log_pi0
        if self.side < 0:
            w0 = self._far_start(w0, math.log(self.s), log_pi0, self.L)
        self.w0 = w0
        if self.side != 0:      # above the target g ~ w^(1 - 2/L) near w = 0 (p -> infinity)
            self._build(_edges(self.w0, _W_END, near_zero=self.side < 0))

    def log_g(self, w):
        return _log_g(self.s, self.L, w, self.side)

    def p_at(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if self.side == 0:
            return np.full(t.shape, self.s)
        return _from_start(self, t, _p(self.s, self.w_at(t), self.side))


def _from_start(flow: _Panels, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """p(t) of a flow, with its start itself at t = 0 and the stretch above its panels (t < t_far)
    in closed form."""
    p = np.where(t == 0, math.exp(flow.log_pi0), p)
    if flow.far is not None:
        with np.errstate(over="ignore"):
            p = np.where((t > 0) & (t < flow.t_far), np.exp(flow.far_log_p(np.minimum(t, flow.t_far))), p)
    return p


# With weight decay kappa the flow is d pi/dt = L pi h(pi), h(p) = p^c (s - p) - kappa, c = 1 - 2/L.
# For L > 2, h < 0 at 0 and at s and concave in between: two roots pi_u (a barrier) < pi* (the
# fixed point) or none. A start is in one of four intervals, each with its own logit-like
# variable, so that every root at an end is at w = +-infinity and dt/dw stays bounded there:
#   rising (pi_u, pi*): w = log((p - pi_u) / (pi* - p));   falling (pi*, inf): w = log(p / (p - pi*));
#   decaying (0, pi_u): w = log((pi_u - p) / p);           no roots (0, inf): w = -log p.
# Everything is in logs: w gives log p and log |p - r| of the roots r exactly, and h, measured
# from a root r, is kappa (e^z - 1) with z = c log(p / r) + log((s - p) / (s - r)) (r^c (s - r) =
# kappa), so it keeps its digits where it cancels near a root, and no product over- or
# underflows: the barrier may lie below float range (1e-400 at s = 1e100, kappa = 1e-300,
# L = 100) or be subnormal, s - pi* = kappa / pi*^c too, with the start and the times (up to
# ~1e300 / kappa) in range.

_TINY = float(np.finfo(np.float64).tiny)


def _log_expm1(z):
    """log(e^z - 1) for z > 0 (elementwise; -inf at 0), without overflow."""
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return np.where(z > 30.0, z + np.log1p(-np.exp(-z)), np.log(np.expm1(z)))


def _log1mexp(z):
    """log(1 - e^z) for z < 0 (elementwise; -inf at 0), without cancellation."""
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(z > -0.6931471805599453, np.log(-np.expm1(z)), np.log1p(-np.exp(z)))


def _log_barrier(s: float, L: int, kappa: float, star: float) -> float:
    """log of the lower root pi_u of h (bisection in log p below the maximum of h; pi_u may lie
    below float range)."""
    c = 1.0 - 2.0 / L
    log_s, log_k = math.log(s), math.log(kappa)
    top = min((log_k + math.log(c)) * L / (2.0 * L - 2.0), math.log(star))
    lo = (log_k - log_s) / c - 1.0        # h < 0 there: p^c s < kappa
    hi = top
    for _ in range(400):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if c * mid + log_s + float(_log1mexp(min(mid - log_s, 0.0))) > log_k:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


class _DecayFlow(_Panels):
    """Gradient flow of one mode with weight decay kappa > 0 at depth L > 2 (see the comment
    above), from pi0, or from exp(log_pi0) (a start below float range: pi(t) underflows to 0
    where it does, and is followed in logs)."""

    def __init__(self, s: float, L: int, kappa: float, pi0: float | None = None, *,
                 log_pi0: float | None = None):
        self.s, self.L, self.kappa, self.c = float(s), int(L), float(kappa), 1.0 - 2.0 / L
        if log_pi0 is None:
            log_pi0 = math.log(pi0) if pi0 > 0 else -math.inf
        self.log_pi0 = lp = float(log_pi0)
        self.pi0 = math.exp(lp) if lp < _LOG_MAX else math.inf
        self.log_s, self.log_k = math.log(self.s), math.log(self.kappa)
        self.star = _fixed_point(self.s, self.L, self.kappa)
        c = self.c
        if not np.isfinite(self.star):
            self.kind, self.a, self.log_a = "none", 0.0, -math.inf
            w0 = -lp
            # g is constant to rounding once p^c |s - p| < e^-40 kappa: p^c s and p^(1 + c) below it
            # (the second is the later one for s << kappa^(1 / (1 + c)): it was left out, and a start
            # from above kept the rate L p^(1 + c) ~ 5e-47 of p ~ 1e-30 below it, 0 by t = 1e50)
            w_end = max((self.log_s - self.log_k + 40.0) / c, (40.0 - self.log_k) / (1.0 + c), 0.0) + 1.0
        else:
            la = self.log_a = _log_barrier(self.s, L, self.kappa, self.star)
            self.a = math.exp(la)                               # 0.0 below float range
            lb = self.log_b = math.log(self.star)
            self.log_ba = lb + float(_log1mexp(la - lb))        # log(pi* - pi_u)
            self.log_sa = self.log_s + float(_log1mexp(la - self.log_s))    # log(s - pi_u)
            self.log_sb = self.log_k - c * lb                   # log(s - pi*): kappa / pi*^c
            if self.pi0 == self.star or lp in (lb, la):
                self.kind = "fixed"
                return
            if lp > lb:
                self.kind, w0, w_end = "falling", -float(_log1mexp(lb - lp)), _W_END
                w0 = self._far_start(w0, lb, lp, self.L)
            elif lp > la:               # log(pi0 - pi_u) - log(pi* - pi0)
                self.kind, w_end = "rising", _W_END
                w0 = lp + float(_log1mexp(la - lp)) - lb - float(_log1mexp(lp - lb))
            else:                       # log(pi_u - pi0) - log(pi0)
                self.kind = "decaying"
                w0 = la + float(_log1mexp(lp - la)) - lp if lp > -math.inf else math.inf
                w_end = (40.0 + self.log_s - self.log_sa) / c + 1.0     # p^c s < 1e-17 kappa
        self.w0 = w0
        if np.isfinite(w0):
            edges = _edges(w0, max(w_end, w0 + 1.0), near_zero=self.kind == "falling")
            if self.kind == "none":
                edges = self._refine_near_top(edges)
            self._build(edges)

    def _refine_near_top(self, edges):
        """Without roots but with kappa just above the threshold the flow lingers near the top
        p_m = c s / (1 + c) of h, where dt/dw ~ 1 / (|h_max| + |h''| (p - p_m)^2 / 2) is a narrow
        peak: edges at p_m e^(-+ width 2^k) resolve it (width: the peak's half-width in w)."""
        s, c = self.s, self.c
        lm = math.log(c * s / (1.0 + c))
        # log(-h(p_m)) and log |h''(p_m)| = log(c p_m^(c-2) ((1 - c)(s - p_m) + 2 p_m)) = log(c s p_m^(c-2))
        log_hmax = max(float(self._log_neg_h(np.asarray(-lm))), -745.0 + self.log_k)
        log_h2 = math.log(c) + math.log(s) + (c - 2.0) * lm
        log_width = 0.5 * (math.log(2.0) + log_hmax - log_h2) - lm
        if log_width >= 0.0:
            return edges
        width = math.exp(log_width)
        wm = -lm
        steps = width * 2.0 ** np.arange(-2, int(math.ceil(-log_width / math.log(2.0))) + 1)
        extra = np.concatenate([[wm], wm - steps, wm + steps])
        extra = extra[(extra > edges[0]) & (extra < edges[-1])]
        return np.unique(np.concatenate([edges, extra]))

    def _log_neg_h(self, w):
        """log(-h) at w of the rootless flow (p = e^-w)."""
        lp, log_s, log_k, c = -w, self.log_s, self.log_k, self.c
        with np.errstate(invalid="ignore", divide="ignore"):
            below = log_k + _log1mexp(np.minimum(c * lp + log_s + _log1mexp(np.minimum(lp - log_s, 0.0)) - log_k,
                                                 0.0))
            above = np.logaddexp(log_k, c * lp + lp + _log1mexp(np.minimum(log_s - lp, 0.0)))
        return np.where(lp < log_s, below, above)

    def log_p(self, w):
        """log p at w."""
        w = np.asarray(w, dtype=np.float64)
        if self.kind == "rising":
            lda = self.log_ba - np.logaddexp(0.0, -w)           # log(p - pi_u)
            ldb = self.log_ba - np.logaddexp(0.0, w)            # log(pi* - p)
            return np.where(w < 0, np.logaddexp(self.log_a, lda),
                            self.log_b + _log1mexp(np.minimum(ldb - self.log_b, 0.0)))
        if self.kind == "falling":                              # p = pi* / (1 - e^-w)
            return self.log_b - _log1mexp(-w)
        if self.kind == "decaying":                             # p = pi_u / (1 + e^w)
            return self.log_a - np.logaddexp(0.0, w)
        return -w

    def log_g(self, w):
        w = np.asarray(w, dtype=np.float64)
        c, log_k, logL = self.c, self.log_k, math.log(self.L)
        lp = self.log_p(w)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            if self.kind == "rising":       # g = (p - a)(b - p) / ((b - a) L p h), h > 0
                lda = self.log_ba - np.logaddexp(0.0, -w)
                ldb = self.log_ba - np.logaddexp(0.0, w)
                # z from the barrier (w < 0) or from the fixed point (w >= 0); z > 0 between them
                z_a = c * np.logaddexp(0.0, lda - self.log_a) + _log1mexp(np.minimum(lda - self.log_sa, 0.0))
                z_b = (c * _log1mexp(np.minimum(ldb - self.log_b, 0.0))          # log(p / b), p = b - (b - p)
                       + np.logaddexp(0.0, ldb - self.log_sb))
                log_h = log_k + _log_expm1(np.maximum(np.where(w < 0, z_a, z_b), 1e-300))
                return lda + ldb - self.log_ba - logL - lp - log_h
            if self.kind == "falling":      # g = (p - b) / (b L (-h)), -h = kappa - p^c (s - p) > 0
                ld = self.log_b - _log_expm1(w)                 # log(p - b)
                q = ld - self.log_sb                            # log((p - b) / (s - b))
                # p < s: -h = kappa (1 - e^z), z = c log(p / b) + log(1 - (p - b) / (s - b)) < 0
                z = -c * _log1mexp(-w) + _log1mexp(np.minimum(q, 0.0))        # (log(p / b) = -log(1 - e^-w))
                below = log_k + _log1mexp(np.minimum(z, -1e-300))
                # p >= s: -h = kappa + p^c (p - s), p - s = (p - b) (1 - (s - b) / (p - b))
                above = np.logaddexp(log_k, c * lp + ld + _log1mexp(np.minimum(-q, 0.0)))
                return ld - logL - self.log_b - np.where(q < 0, below, above)
            if self.kind == "decaying":     # g = (a - p) / (a L (-h)), -h = kappa (1 - e^z)
                lda = self.log_a - np.logaddexp(0.0, -w)        # log(a - p)
                z = -c * np.logaddexp(0.0, w) + np.logaddexp(0.0, lda - self.log_sa)
                return lda - logL - self.log_a - (log_k + _log1mexp(np.minimum(z, -1e-300)))
            # g = -1 / (L h); at the threshold itself h(p_m) may round to >= 0: a stall, not a NaN
            return -logL - np.maximum(self._log_neg_h(w), log_k - 690.0)

    def p_at(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if self.kind == "fixed":
            return np.full(t.shape, self.pi0)
        if not np.isfinite(self.w0):
            return np.zeros(t.shape)
        with np.errstate(over="ignore", under="ignore"):
            return _from_start(self, t, np.exp(self.log_p(self.w_at(t))))

    def w_of(self, p: float) -> float:
        """The variable at p (in this flow's interval: rising or falling)."""
        lp = math.log(p)
        if self.kind == "rising":
            return lp + float(_log1mexp(self.log_a - lp)) - self.log_b - float(_log1mexp(lp - self.log_b))
        if self.kind == "falling":
            return -float(_log1mexp(self.log_b - lp))
        raise ValueError(self.kind)


def _flow_closed(s, L, log_pi0, t, kappa=0.0):
    """The closed forms: L = 1 (linear) and L = 2 (logistic in w: w = w0 + 2 s' t, s' = s - kappa;
    for s' <= 0 the mode decays: pi = 1 / ((e^(2 d t) - 1) / d + e^(2 d t) / pi0), d = -s')."""
    if L == 1:
        star = s / (1.0 + kappa)
        with np.errstate(over="ignore"):        # (no cancellation at early times when pi0 << star)
            return star * -np.expm1(-(1.0 + kappa) * t) + math.exp(log_pi0) * np.exp(-(1.0 + kappa) * t)
    s = s - kappa
    if s <= 0:
        pi0 = math.exp(log_pi0)
        with np.errstate(over="ignore"):
            if s == 0:
                return pi0 / (1.0 + 2.0 * pi0 * t)
            # (e^(2 d t) - 1) / d as 2 t (e^x - 1) / x, x = 2 d t: x underflows at d = 1e-100, t = 1e-240
            # while 2 t does not (the mode stayed at its start)
            x = 2.0 * -s * t
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(x > 0, np.expm1(x) / np.where(x > 0, x, 1.0), 1.0)
                return 1.0 / (2.0 * t * ratio + np.exp(x) / pi0)
    side, w0 = _branch(s, log_pi0)
    if side == 0:
        return np.full(t.shape, s)
    if side < 0:
        # above the target p = s / (1 - e^-w), w = w0 + 2 s t, where w may be below float range
        # (w0 ~ s / pi0: s = 1e-24, pi0 = 1e300, t = 1e-300 gave s / 0 = inf, not 3.3e299): for
        # w < 1, in v = w / s = w0 / s + 2 t, p = 1 / (v (1 - e^-w) / w), whose ratio tends to 1
        r = math.exp(math.log(s) - log_pi0)                        # s / pi0 < 1 (0 if it underflows)
        v = (-math.log1p(-r) / r if r > 0 else 1.0) * math.exp(-log_pi0) + 2.0 * t
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            w = s * v
            ratio = np.where(w > 0, -np.expm1(-w) / np.where(w > 0, w, 1.0), 1.0)
            return np.where(w < 1.0, 1.0 / (v * ratio), _p(s, w0 + 2 * s * t, side))
    return _p(s, w0 + 2 * s * t, side)


def _reals(name: str, value, *, nan_ok: bool = False, flat: bool = True) -> np.ndarray:
    """A float64 array of finite real numbers (flattened unless flat=False; NaN let through with
    nan_ok, never infinities), or an InputError naming `name`."""
    try:
        arr = np.asarray(value)
        if arr.dtype == object or np.iscomplexobj(arr) or arr.dtype.kind not in "fiu":
            raise TypeError(f"dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name}: expected real numbers, got {value!r:.60} ({err})") from None
    if np.any(np.isinf(arr) if nan_ok else ~np.isfinite(arr)):
        raise InputError(f"{name}: values must be finite" + (" (or NaN for a diverged record)" if nan_ok else ""))
    return arr.reshape(-1) if flat else arr


def _decay_flow_from(s: float, L: int, kappa: float, log_pi0: float) -> _DecayFlow:
    """The decay flow of one mode (L > 2, kappa > 0) from exp(log_pi0), followed in logs (a start
    below float range, above the barrier, rises into it; below, it decays)."""
    return _DecayFlow(s, L, kappa, log_pi0=log_pi0)


def _decay_flow(model: DeepLinear, s: float, kappa: float) -> _DecayFlow:
    """The decay flow of one mode from the model's aligned start (`_decay_flow_from`)."""
    _mode_init(model)                                   # refuses an overflowing start
    return _decay_flow_from(s, model.depth, kappa, _log_mode_init(model))


def switched_off(model: DeepLinear, data: LinearTeacher, weight_decay: float = 0.0) -> np.ndarray:
    """(r,) bool: the modes whose gradient flow from the aligned start decays to 0 under weight
    decay: no fixed point (`fixed_points` NaN; at L = 2 with s = kappa the decay is algebraic), or
    for L > 2 a start below the decay's barrier. Decided from the flow's fixed points, not from
    pi at some late time (a mode learned after t = 1e300 from a tiny start is not switched off).
    All False without decay."""
    _check_aligned(model, data, "switched_off")
    kappa = checks.real("weight_decay", weight_decay, nonnegative=True)
    s = effective_modes(data).s
    off = ~np.isfinite(_fixed_points(s, model.depth, kappa))
    if model.depth > 2 and kappa > 0:
        for i in np.flatnonzero(~off):
            off[i] = _decay_flow(model, float(s[i]), kappa).kind == "decaying"
    return off


def mode_flow(model: DeepLinear, data: LinearTeacher, t, weight_decay: float = 0.0) -> np.ndarray:
    """Gradient-flow mode strengths from the aligned, balanced start pi_i(0) = init_scale^L.

    Closed form for L = 1 and L = 2 (pi = s / (1 + (s / pi0 - 1) e^{-2st})); for L > 2 the
    quadrature of dt/dw = pi^(2/L - 1) / (L s) in w = log(pi / |s - pi|) on unit panels, inverted
    by Newton's method (relative error ~1e-13). Both work from log(init_scale^L), so a start
    below float range is fine, and their cost does not depend on t (t = 1e300 costs what t = 1
    costs). On a fixed set the network fits M~ (`effective_modes`), so s~ replaces s.

    With weight decay kappa (per unit time, as in `networks.train`) the flow is
    d pi/dt = L pi^(2-2/L)(s - pi) - L kappa pi: closed forms for L <= 2 (s - kappa replaces s at
    L = 2; a mode with s <= kappa decays), and for L > 2 the same quadrature in a variable that
    puts the decay's two roots, the barrier pi_u and the fixed point pi* (`fixed_points`), at
    w = -+infinity: a mode starting below pi_u decays to 0, one above it settles at pi*
    (docs/derivations.md, section 6).

    Args:
        t: (T,) times >= 0 (any order); another shape is an InputError.
        weight_decay: kappa >= 0.
    Returns:
        (T, r) mode strengths, modes in the order of the teacher's singular values.
    """
    _check_aligned(model, data, "mode_flow")
    t = _reals("t", t, flat=False)
    if t.ndim != 1:                     # (a (2, 2) t was flattened in silence: rows of 4 times came back)
        raise InputError(f"t: a 1-d array of times, shape (T,), got shape {t.shape}")
    if np.any(t < 0):
        raise InputError("t: times must be finite and >= 0")
    kappa = checks.real("weight_decay", weight_decay, nonnegative=True)
    s = effective_modes(data).s
    L, lp = model.depth, _log_mode_init(model)
    _mode_init(model)                                   # refuses an overflowing start
    out = np.empty((t.size, s.size))
    for i, si in enumerate(s):
        if L <= 2:
            out[:, i] = _flow_closed(si, L, lp, t, kappa)
        elif kappa == 0:
            out[:, i] = _Flow(si, L, lp).p_at(t)
        else:
            out[:, i] = _decay_flow(model, si, kappa).p_at(t)
        out[t == 0, i] = math.exp(lp)                    # the start itself (not through the closed forms' w)
        if not np.all(np.isfinite(out[:, i])):           # (never silently: NaN came back at s ~ 1e132, L = 3)
            j = int(np.argmax(~np.isfinite(out[:, i])))
            raise InputError(f"singular_values: mode {i + 1}'s flow (s = {si:g}, depth {L}, weight_decay "
                             f"{kappa:g}) is not finite at t = {t[j]:g}: its quadrature cannot resolve it in "
                             "float64; rescale the teacher (singular values nearer 1)")
    return out


def _flow_time(s: float, L: int, kappa: float, log_from: float, frac: float) -> float:
    """Gradient-flow time of a mode of target s (weight decay kappa) from the strength
    exp(log_from) to frac x the value it settles at (pi* = `_fixed_point`; frac < 1 from below,
    > 1 from above): the closed forms for L <= 2, the quadrature of `_Flow` / `_DecayFlow` else.
    NaN when the flow from there never reaches that level (it starts at or past it, settles on the
    other side, or decays to 0); inf when the time exceeds float64's range. The flow is
    autonomous, so the time between two levels is this function started at the first: no
    difference of two large times."""
    if L > 2 and kappa > 0:
        flow = _decay_flow_from(s, L, kappa, log_from)
        level = frac * flow.star
        if not ((flow.kind == "rising" and flow.pi0 < level < flow.star)
                or (flow.kind == "falling" and flow.star < level < flow.pi0)):
            return math.nan
        t = float(flow.time_to(flow.w_of(level)))
    else:
        target = _fixed_point(s, L, kappa)             # (L <= 2, or no decay: the closed forms)
        if not target > 0:
            return math.nan
        side, w0 = _branch(target, log_from)
        if side > 0 and frac < 1:
            w = math.log(frac / (1 - frac))
        elif side < 0 and frac > 1:
            w = -math.log1p(-1.0 / frac)               # log(frac / (frac - 1))
        else:
            return math.nan
        if w0 >= w:
            return math.nan
        if L == 1:
            t = math.log((math.exp(log_from) - target) / (target * (frac - 1))) / (1.0 + kappa)
        elif L == 2:
            t = (w - w0) / (2 * target)
        else:
            t = float(_Flow(s, L, log_from).time_to(w))
    return t if math.isfinite(t) else math.inf          # reached, but past float64's range


def learning_times(model: DeepLinear, data: LinearTeacher, level: float = 0.5,
                   weight_decay: float = 0.0) -> np.ndarray:
    """(r,) gradient-flow times at which each mode reaches `level` x the value it settles at (its
    target s_i; with weight decay its fixed point, `fixed_points`), from the aligned start
    (closed form for L <= 2: ln((s / pi0 - 1) / (1 / level - 1)) / (2 s) for L = 2, s - kappa
    replacing s with decay; the quadrature of `mode_flow` else, cost independent of the time).
    Computed from log(init_scale^L). NaN for a mode that starts at or above the level and for one
    the decay switches off (no fixed point, or a start below the barrier: it decays to 0);
    InputError naming init_scale when a time exceeds float64's range."""
    _check_aligned(model, data, "learning_times")
    level = checks.real("level", level, positive=True, below=1.0)
    kappa = checks.real("weight_decay", weight_decay, nonnegative=True)
    s = effective_modes(data).s
    L, lp = model.depth, _log_mode_init(model)
    _mode_init(model)
    out = np.full(s.size, np.nan)
    for i, si in enumerate(s):
        out[i] = _flow_time(float(si), L, kappa, lp, level)
        if out[i] == math.inf:
            raise InputError(f"init_scale: mode {i + 1}'s learning time from init_scale^depth = "
                             f"10^{lp / math.log(10):.0f} exceeds float64's range")
    return out


def _white(data: LinearTeacher) -> bool:
    """Whether a fixed set's inputs are white (X^T X / P = I), what the per-mode theory needs."""
    X = np.asarray(data.x_train)
    return bool(np.allclose(X.T @ X / data.P, np.eye(data.d_in), atol=1e-8))


def plateaus(data: LinearTeacher, settled=None) -> dict:
    """The saddle-to-saddle staircase of the population loss |W - M|_F^2 / 2 + d_out sigma^2 / 2.

    From a small start the network learns the singular pairs of the target it fits one at a
    time, in order of decreasing strength, each along its own directions: online the teacher's
    modes (s); on a whitened fixed set those of the least-squares target M~ = Y^T X / P, i.e.
    the teacher's modes as the data show them (`effective_modes`: s~, directions off the
    teacher's) and, with label noise and a teacher of rank below min(d_in, d_out), pairs of the
    noise's own. Level k is the loss once the k strongest teacher modes are learned, with every
    noise pair stronger than the k-th (learned before it): |M - W_k|_F^2 / 2 + floor. Online
    that is the sum of s_j^2 / 2 over the modes not yet learned plus the floor; on a noisy
    fixed set the plateaus lie above it (P = 20, sigma = 1, s = 3, 2, 1, 0.5, teacher key 1:
    4.74, 2.95, 2.54 against 4.63, 2.63, 2.13). A noise pair whose strength lies between two teacher modes' is
    learned between them, so the loss moves within that step. "end" is the loss once M~ is
    learned whole (a network at least min(d_in, d_out) wide): |M - M~|_F^2 / 2 + floor. A fixed
    set whose inputs are not white has no per-mode theory: its staircase uses the teacher's
    modes and no noise pairs ("modes": "teacher", an approximation), else "effective".

    Args:
        settled: (r,) where each learned teacher mode settles instead of its full strength (under
            weight decay, its fixed point: `validation.deep_linear.settled_targets`); NaN for a
            mode that is never learned (its strength then stays in every plateau, which are one
            fewer per such mode). The noise pairs are then left out (where they settle depends on
            the model), and "end" is the last level. None: every pair at its full strength.

    Returns {"order": teacher-mode indices in learning order, "levels": (k + 1,) loss plateaus for
             the k teacher modes learned, "noise_floor": d_out sigma^2 / 2, "end",
             "noise_pairs": strengths of the noise's own pairs (decreasing; empty online),
             "modes": "effective" or "teacher", "strengths": the strengths that set the order, in
             learning order (modes of equal strength are learned together: no plateau between
             them, and their order among themselves is not predicted)}.
    """
    if not isinstance(data, LinearTeacher):
        raise InputError(f"data must be a dmft.LinearTeacher, got {type(data).__name__}")
    # online (and on a set whose inputs are not white) the teacher's modes and no noise pairs;
    # on a white fixed set the pairs of M~ (signs do not matter: only u v^T enters)
    fitted = not data.online and _white(data)
    U, V, s = np.asarray(data.U), np.asarray(data.V), np.asarray(data.s)
    noise_s = np.zeros(0)
    if fitted:
        _, u, sv, vt, idx = _least_squares_pairs(data)
        rest = np.array([j for j in range(sv.size) if j not in idx], dtype=int)
        U, V, s = u[:, idx], vt[idx].T, sv[idx]
        noise_u, noise_s, noise_v = u[:, rest], sv[rest], vt[rest].T
    if settled is None:
        strength = s
    else:
        strength = _reals("settled", settled, nan_ok=True, flat=False)
        if strength.shape != s.shape:
            raise InputError(f"settled: one value per mode, shape {s.shape}, got {strength.shape}")
        noise_s = np.zeros(0)                   # (where the noise pairs settle depends on the model)
    order = np.array([j for j in np.argsort(-s, kind="stable") if np.isfinite(strength[j])], dtype=int)
    M = np.asarray(data.U) @ np.diag(np.asarray(data.s)) @ np.asarray(data.V).T
    floor = 0.5 * data.d_out * data.label_noise ** 2
    # a residual at rounding's size is none (M = W_r exactly online, or on a noiseless white set)
    cut = (16 * np.finfo(np.float64).eps) ** 2 * M.size * float(np.sum(M * M))

    def level(W):
        rest = float(np.sum((M - W) ** 2))
        return 0.5 * (rest if rest > cut else 0.0) + floor

    teacher = [strength[j] * np.outer(U[:, j], V[:, j]) for j in order]
    noise = [(sn, sn * np.outer(noise_u[:, i], noise_v[:, i])) for i, sn in enumerate(noise_s)]
    with np.errstate(over="ignore", invalid="ignore"):        # (an overflow is refused below)
        levels = [level(np.zeros_like(M))]
        for k in range(1, order.size + 1):
            weakest = s[order[k - 1]]
            levels.append(level(sum(teacher[:k]) + sum((w for sn, w in noise if sn > weakest), np.zeros_like(M))))
        end = level(sum(teacher, np.zeros_like(M)) + sum((w for _, w in noise), np.zeros_like(M)))
    if not np.all(np.isfinite(levels + [end])):
        raise InputError(f"settled: strengths up to {np.nanmax(np.abs(strength)):.3g} overflow the loss")
    return {"order": order, "levels": np.asarray(levels), "noise_floor": floor, "end": end,
            "noise_pairs": noise_s, "modes": "effective" if data.online or fitted else "teacher",
            "strengths": s[order]}


# ----------------------------------------------------------------- SGD: the per-mode SDE

def noise_variance(modes: EffectiveModes, pi, batch_size: int):
    """c_i(pi): the variance of one sample's gradient along each mode (times the finite-
    population factor on a fixed set), at mode strengths pi (..., r): exact at any pi (Isserlis
    online, the measured moments on a fixed set; docs/derivations.md, section 6).

    modes: an `EffectiveModes` (`effective_modes(data)`); batch_size: an integer >= 1, at most P on
    a fixed set of P points (the factor (P - B) / (P - 1) goes negative past it). Either is
    refused (InputError naming it) before anything is computed."""
    if not isinstance(modes, EffectiveModes):
        raise InputError(f"modes must be a dmft.deep_linear.EffectiveModes (effective_modes(data)), got "
                         f"{type(modes).__name__}")
    B = checks.integer("batch_size", batch_size, minimum=1)
    if modes.P is not None and B > modes.P:
        raise InputError(f"batch_size must be <= P = {modes.P} (the fixed set's size), got {B}")
    pi = _pis(pi, np.size(modes.s))
    return _finite_where_pi_is("c", _noise_variance(modes, pi, B), pi)


def _noise_variance(modes: EffectiveModes, pi, batch_size: int):
    """c_i(pi) without the checks (non-finite pi in, non-finite c out: a diverged path's records)."""
    d = modes.s - pi
    with np.errstate(over="ignore", invalid="ignore"):
        if modes.P is None:
            return 2.0 * d * d + modes.sigma ** 2
        P, B = modes.P, batch_size
        fpc = (P - B) / (P - 1) if P > 1 else 0.0
        return np.maximum((modes.kappa - 1.0) * d * d + 2.0 * modes.tau * d + modes.lam, 0.0) * fpc


def _pis(pi, r: int) -> np.ndarray:
    """Mode strengths (..., r) or one value for every mode: real numbers, else an InputError
    naming pi. NaN is let through (a diverged network's records are NaN: NaN in, NaN out at
    that entry); an infinite pi is refused."""
    arr = _reals("pi", pi, nan_ok=True, flat=False)
    try:
        np.broadcast_shapes(arr.shape, (r,))
    except ValueError:
        raise InputError(f"pi: the last axis holds the {r} modes, got shape {arr.shape}") from None
    return arr


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
    pi = _pis(pi, modes.s.size)
    return _finite_where_pi_is("D", _diffusion(modes, pi, eta0, B, model.depth), pi)


def _diffusion(modes: EffectiveModes, pi, eta0: float, B: int, L: int):
    """D_i(pi) without the checks (non-finite in, non-finite out)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return eta0 / B * L ** 2 * np.abs(pi) ** (4 - 4 / L) * _noise_variance(modes, pi, B)


def _finite_where_pi_is(name: str, out, pi):
    """`out`, or an InputError naming pi where a finite pi gave a non-finite value (overflow)."""
    bad = ~np.isfinite(out) & np.broadcast_to(np.isfinite(pi), np.shape(out))
    if np.any(bad):
        at = np.broadcast_to(pi, np.shape(out))[bad].flat[0]
        raise InputError(f"pi: {name} overflows float64 at pi = {at:g}; mode strengths that large "
                         "are outside what the per-mode reduction describes")
    return out


def _decay(eta0: float, weight_decay) -> float:
    kappa = checks.real("weight_decay", weight_decay, nonnegative=True)
    check_decay(eta0, kappa)                         # Schedule's rule: eta0 * kappa < 1
    return kappa


def _fixed_point(s: float, L: int, kappa: float) -> float:
    """The stable fixed point of the flow with decay, d pi/dt = L pi^(2-2/L)(s - pi) - L kappa pi:
    the largest root in (0, s] of h(p) = s - p - kappa p^(2/L - 1) (s itself without decay), or
    NaN when there is none (the decay wins: the mode decays to 0)."""
    if kappa == 0:
        return s
    if L == 1:
        return s / (1.0 + kappa)
    if L == 2:
        return s - kappa if kappa < s else float("nan")
    e = 2.0 / L - 1.0

    def h(p):
        with np.errstate(over="ignore"):
            return float(s - p - kappa * np.power(np.float64(p), e))

    # L > 2: h is concave, largest at p_m = (kappa (1 - 2/L))^(L / (2L - 2)): two roots or none
    lo = min(max((kappa * (1.0 - 2.0 / L)) ** (L / (2.0 * L - 2.0)), np.finfo(float).tiny), s)
    if h(lo) <= 0:
        return float("nan")
    hi = s
    for _ in range(200):                                            # bisection to rounding
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if h(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _fixed_points(s, L: int, kappa: float) -> np.ndarray:
    return np.array([_fixed_point(float(si), L, kappa) for si in s])


def fixed_points(model: DeepLinear, data: LinearTeacher, weight_decay: float = 0.0) -> np.ndarray:
    """(r,) the mode strengths gradient flow with weight decay kappa settles at: the stable root
    of s_i - pi = kappa pi^(2/L - 1) (s_i without decay; s_i / (1 + kappa) for L = 1, s_i - kappa
    for L = 2). NaN for a mode the decay switches off (no root: it decays to 0)."""
    _check(model, data)
    kappa = checks.real("weight_decay", weight_decay, nonnegative=True)
    return _fixed_points(effective_modes(data).s, model.depth, kappa)


# a step of eta0 x the flow's restoring rate h at the fixed point: the per-step map of pi - pi* is
# 1 - h (linearized), so SGD's stationary variance there is the continuous-time law's / (1 - h / 2)
# (an AR(1)), 25% above it at h = 0.4; at h >= 2 no global minimum is stable under the step (the
# balanced one is the flattest: L s^(2-2/L) is the largest Hessian eigenvalue there), and GD
# oscillates or diverges around the target instead of settling
LAW_STEP_WARN = 0.4
STEP_UNSTABLE = 2.0


def step_rates(model: DeepLinear, data: LinearTeacher, *, eta0: float, weight_decay: float = 0.0) -> np.ndarray:
    """(r,) h_i = eta0 |mu_i'(pi*_i)|: the SGD step against the flow's restoring rate at each mode's
    fixed point, mu' = L ((1 - 2/L) kappa - pi*^(2-2/L)) (-L s^(2-2/L) without decay; NaN for a
    mode the decay switches off). The laws (`stationary_density`, `boltzmann_temperature`) are
    those of the continuous-time SDE: at the fixed point the discrete step's variance is theirs
    / (1 - h/2) (an AR(1) with factor 1 - h), and at h >= 2 the step is unstable at every
    global minimum (the balanced minimum is the flattest, Hessian L s_1^(2-2/L)): full-batch GD
    oscillates or diverges around the target (L = 2, s~ = 3.28, eta0 = 0.34: h = 2.2, GD read
    2.10 at its last save), and there is no stationary law of SGD near pi* at all. Those
    functions, `mode_sde` and `networks.train` warn (`LAW_STEP_WARN`, `STEP_UNSTABLE`). h = 2 is
    full-batch GD's limit: small batches go unstable below it (the per-sample curvature's spread;
    online depth 1, d_in = 4, B = 1: at h = 0.44), which h does not see. That limit is
    `sgd_lyapunov`'s (the top Lyapunov exponent of the linearized per-batch steps at the balanced
    minimum, `largest_stable_eta0`): `networks.train`, `mode_sde` and the dln job warn before
    compute where it is clearly positive (`warn_sgd_unstable`), `networks.train` flags such runs
    once their loss runs away (`dmft.runner.ran_away`), and the per-mode SDE, without noise at a
    noiseless target, does not diverge there."""
    _check(model, data)
    eta0 = checks.real("eta0", eta0, positive=True)
    kappa = checks.real("weight_decay", weight_decay, nonnegative=True)
    return _step_rates(effective_modes(data).s, model.depth, eta0, kappa)


def _step_rates(s, L: int, eta0: float, kappa: float) -> np.ndarray:
    star = _fixed_points(s, L, kappa)
    with np.errstate(over="ignore", invalid="ignore"):
        return eta0 * np.abs(L * ((1.0 - 2.0 / L) * kappa - np.abs(star) ** (2 - 2 / L)))


def warn_step(h: np.ndarray, eta0: float, what: str, law: bool = False) -> None:
    """Warn where eta0 is too large for the step to settle at the fixed points (h >= 2), or, for a
    law (law=True), too large for the continuous-time law to describe SGD (h > LAW_STEP_WARN)."""
    h = np.where(np.isnan(h), 0.0, h)                  # (a switched-off mode: no fixed point)
    i = int(np.argmax(h))
    limit = STEP_UNSTABLE * eta0 / h[i] if h[i] > 0 else math.inf
    if h[i] >= STEP_UNSTABLE:
        warn(f"{what}: eta0 = {eta0:g} is beyond the step's stability limit {limit:.3g} at mode {i + 1}'s fixed "
             f"point (eta0 x its restoring rate = {h[i]:.3g} >= 2, `dl.step_rates`): GD and SGD cannot settle at "
             "the target there, they oscillate about it or diverge"
             + ("; this continuous-time law describes no SGD" if law else "") + "; lower eta0")
    elif law and h[i] > LAW_STEP_WARN:
        warn(f"{what}: eta0 x the restoring rate at mode {i + 1}'s fixed point is {h[i]:.3g} (`dl.step_rates`): "
             "this is the continuous-time SDE's law, and the linearized SGD step alone makes its variance "
             f"{1 / (1 - h[i] / 2):.3g} times the law's (1 / (1 - h/2); more at larger h, where the step's "
             "nonlinearity enters); lower eta0 for a law that describes SGD")


# ----------------------------------------------------------------- SGD's stability at the minimum

class SGDLyapunov(NamedTuple):
    """`sgd_lyapunov`'s estimate: the top Lyapunov exponent per step of the linearized SGD maps."""

    exponent: float     # per step: a typical run's distance from the minimum grows as e^(exponent k)
    stderr: float       # over the independent chains
    eta0: float
    batch_size: int
    weight_decay: float
    chains: int
    steps: int          # per chain, after `burn` steps that are not counted
    burn: int
    dim: int            # the directions of W_tot the network can move at the minimum
    seconds: float      # wall time of the estimate (with its compile)

    @property
    def unstable(self) -> bool:
        """Clearly positive: more than 3 standard errors above 0."""
        return bool(self.exponent > 3.0 * self.stderr)


LYAPUNOV_STEPS = 2000
LYAPUNOV_CHAINS = 16
LYAPUNOV_BURN = 200


def _mode_kernel(model: DeepLinear, modes: EffectiveModes, kappa: float):
    """(Uf, Vf, nu): the operator N = T T^* on (d_out, d_in) matrices at the aligned, balanced minimum (T: a
    change of the weights to the change of W_tot = A_l W_l B_l, T d = sum_l A_l d_l B_l with A_l
    the layers above l and B_l those below; T^* its adjoint, the vjp), N(u) = sum_l A_l A_l^T u
    B_l^T B_l, in the modes' bases completed to orthonormal ones (Uf (d_out, d_out), Vf (d_in,
    d_in), the r modes first): N(Uf E_ij Vf^T) = nu_ij Uf E_ij Vf^T. At the aligned, balanced
    minimum (each layer a_i = pi*_i^(1/L) on mode i) A_l A_l^T = U diag(a^(2(L-1-l))) U^T (the
    identity for the top layer) and B_l^T B_l = V diag(a^(2l)) V^T (the identity for the first),
    so nu_ij = sum_l alpha_i^(l) beta_j^(l), alpha_i^(l) = a_i^(2(L-1-l)) for a mode i and 1 for
    another direction at the top layer only, beta likewise: N's range is the pairs (i, j) with a
    mode on either side (all of them at depth 1, where N = I), of dimension r (d_in + d_out - r)
    for L >= 2. (tests/test_dln_stability.py checks it against N built from the weights.)"""
    L = model.depth
    star = _fixed_points(modes.s, L, kappa)
    a = np.where(np.isfinite(star), star, 0.0) ** (1.0 / L)
    U, V = np.asarray(modes.U, np.float64), np.asarray(modes.V, np.float64)
    r = a.size
    Uf = np.linalg.qr(np.hstack([U, np.eye(U.shape[0])]))[0][:, :U.shape[0]]    # (first r: +-U)
    Vf = np.linalg.qr(np.hstack([V, np.eye(V.shape[0])]))[0][:, :V.shape[0]]
    nu = np.zeros((U.shape[0], V.shape[0]))
    for l in range(L):
        alpha = np.zeros(U.shape[0])
        alpha[:r] = a ** (2 * (L - 1 - l))
        alpha[r:] = 1.0 if l == L - 1 else 0.0
        beta = np.zeros(V.shape[0])
        beta[:r] = a ** (2 * l)
        beta[r:] = 1.0 if l == 0 else 0.0
        nu += np.outer(alpha, beta)
    return Uf, Vf, nu


def _lyapunov_chains(rng, online: bool, B: int, steps: int, burn: int, chains: int, xt, nu, eta, decay):
    """Each chain's mean log growth per step of u -> (1 - eta kappa) u - eta N(u S_b), S_b =
    X_b^T X_b / B, over `steps` steps after `burn`, in the modes' bases (`_mode_kernel`): u = Uf Z
    Vf^T, so Z -> (1 - eta kappa) Z - eta nu * (Z X~_b^T X~_b / B) with X~_b = X_b Vf (online
    again N(0, I): drawn so; on a fixed set `xt`, the points in that basis), Z on N's range (nu >
    0). The chains step together in numpy (small arrays: no compile; ~20 us a step for 16 chains
    at d = 4); `rng` draws the batches: N(0, I) inputs online, B distinct of the P points on a
    fixed set."""
    d_out, d_in = nu.shape
    on = nu > 1e-10 * max(float(nu.max()), np.finfo(float).tiny)
    Z = rng.standard_normal((chains, d_out, d_in)) * on
    Z /= np.linalg.norm(Z.reshape(chains, -1), axis=1)[:, None, None]
    total = np.zeros(chains)
    P = xt.shape[0]
    for k in range(burn + steps):
        if online:
            xb = rng.standard_normal((chains, B, d_in))
        elif B == P:
            xb = np.broadcast_to(xt, (chains, P, d_in))
        else:
            xb = xt[np.argpartition(rng.random((chains, P)), B - 1, axis=1)[:, :B]]
        Z = decay * Z - (eta / B) * nu * ((Z @ xb.transpose(0, 2, 1)) @ xb)
        n = np.linalg.norm(Z.reshape(chains, -1), axis=1)
        if k >= burn:
            total += np.log(n)
        Z /= n[:, None, None]
    return total / steps, int(on.sum())


_LYAPUNOV_CACHE: dict = {}


def _data_print(data: LinearTeacher) -> tuple:
    parts = [data.U, data.V, data.s, np.float64(data.label_noise)]
    if not data.online:
        parts.append(data.x_train)
    return tuple(hash(np.ascontiguousarray(np.asarray(p, np.float64)).tobytes()) for p in parts)


def sgd_lyapunov(model: DeepLinear, data: LinearTeacher, *, eta0: float, batch_size: int,
                 weight_decay: float = 0.0, key=None, steps: int = LYAPUNOV_STEPS,
                 chains: int = LYAPUNOV_CHAINS, burn: int = LYAPUNOV_BURN) -> SGDLyapunov:
    """The top Lyapunov exponent per step of SGD's per-batch maps linearized at the balanced
    global minimum: whether a typical run of `networks.train` settles there (< 0) or runs away
    (> 0) at this eta0 and batch size. Full-batch GD's limit (`step_rates`' h = 2) is where the
    mean map goes unstable; small batches go unstable earlier through the spread of the batch
    curvature (online, depth 1, d_in = 4, B = 1: the runs settle at eta0 = 0.4, run away at 0.5,
    h = 0.5). Mean-square stability is stricter than needed there (it fails at eta0 = 1/3,
    where runs settle): a product of random maps grows or decays like e^(exponent k) almost
    surely, whatever its mean square does.

    The maps are the networks' own step (networks/deep_linear.py, loss |y - f|^2 / (2B), W_l <-
    (1 - eta kappa) W_l - eta grad_{W_l}) linearized at the aligned, balanced weights whose
    modes sit at `fixed_points` (pi*_i = s~_i without decay). Without label noise or decay the
    minimum is a fixed point of every batch's step and this is exact: a change d of the weights
    moves W_tot by u = T d (T the jvp of the end-to-end product; the vjp T^* maps a W_tot-space
    gradient to the weights'), the batch gradient's jvp is T^*(u S_b), S_b = X_b^T X_b / B, and
    the step maps u to (1 - eta kappa) u - eta N(u S_b), N = T T^* (at depth 1, N = I and the
    map is u (I - eta S_b)). The weight changes that leave W_tot alone (the layers' rescalings,
    unused hidden units) are flat, factor 1 under every batch, and not counted: the exponent
    is that of u on the range of N (in closed form at the minimum, `_mode_kernel`). With label noise the
    minimum is not a fixed point of each batch's step: near it the step is an affine random
    recursion d -> (I - eta H_b) d - eta g_b, and this exponent is its multiplicative part
    (negative: a stationary law around the minimum; positive: it grows). With weight decay the
    linearization is at the decayed fixed point, with the decay's factor 1 - eta kappa. In both
    cases the maps keep the Gauss-Newton part of the batch Hessian only (the part of the
    residual labels y - f at the minimum is dropped: zero mean over batches with label noise
    alone, O(s - pi*) with decay).

    Batches are drawn as the networks draw theirs: fresh N(0, I) inputs online; B distinct
    indices of the P points, uniformly (as `dmft.schedule.batch_indices`), on a fixed set; labels do not
    enter.

    Against networks (64 seeds, 4000 steps, s = 1, d_in = d_out = 4, width 8, init_scale 0.5,
    online and P = 16, B = 1, 2, 5, eta0 at 0.8-1.25 x the flip of this exponent): at depth 1 no
    run ran away at 0.95 x the flip (two seeds in 64 on the fixed set at B = 1) and every run did
    at 1.05 x. At depth 2 and 3 the flip sits inside the runs' transition, which is wider: 0-16% of
    seeds ran away at 0.9 x, 0-25% at 0.95 x, 19-100% at 1.05 x, 86-100% at 1.25 x (depth 3, B = 5
    and depth 2, B = 5 on the fixed set: no flip below GD's limit h = 2, which `warn_step` owns). SGD does not conserve balancedness,
    so a run learning from a small start lands on a minimum off the balanced one, whose own
    exponent differs: at depth 2, B = 1, 1.05 x the flip, the runs that settled sat at
    |W_2|^2 / |W_1|^2 = 0.26-0.75 with exponents -0.008 to -0.033 at their own weights, against
    +0.014 at the balanced minimum. The exponent is exact for the balanced minimum, and a
    median-like threshold for runs from an aligned, balanced start.

    With label noise or weight decay (64 seeds, 8000 steps; diverged: `networks.train`'s flag):
    at depth 1 it holds as without (online, B = 1, sigma = 0.5: 0% diverged at 0.9 x the flip, 2%
    at 0.95 x, all at 1.05 x, the loss below heavy-tailed, median 14.5 at 0.9 x, as an affine
    recursion near its multiplicative limit is; decay 0.2: 0%, 16%, all). At depth 2 it is
    necessary only: runs diverged well below the flip (P = 16, sigma = 0.3, B = 2: 48% at 0.7 x;
    online, decay 0.1, B = 1: 98% at 0.7 x; online, sigma = 0.3, B = 1: 8% at 0.5 x, all at 0.7 x;
    none at 0.3 x), which no linearization at the minimum sees: with the residual's Hessian term
    kept, over all the weights, the exponent was positive at every eta0 with noise (0.001-0.02 at
    0.3 x, where no run diverged: the flat directions' random walk) and negative with decay up to
    0.9 x. The warning says only what the exponent shows.

    Args:
        eta0, batch_size, weight_decay: the SGD protocol (batch_size <= P on a fixed set).
        key: `jax.random.key` of the chains (default key(0)), whose bits seed the batches' draws.
        steps: steps per chain counted, after `burn` steps from a random direction.
        chains: independent chains (>= 2); the standard error is over them.

    Returns:
        SGDLyapunov (exponent and standard error per step; `.unstable` when clearly positive).
        A finite exponent always (each step is renormalized); InputError before any compute
        on bad inputs.
    """
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    kappa = _decay(eta0, weight_decay)
    steps = checks.integer("steps", steps, minimum=10, maximum=10 ** 7)
    chains = checks.integer("chains", chains, minimum=2, maximum=4096)
    burn = checks.integer("burn", burn, minimum=0, maximum=10 ** 7)
    key = checks.prng_key("key", key)
    key = jax.random.key(0) if key is None else key
    modes = effective_modes(data)
    d_in, d_out = data.d_in, data.d_out
    t0 = time.perf_counter()
    _, Vf, nu = _mode_kernel(model, modes, kappa)
    xt = np.zeros((1, d_in)) if data.online else np.asarray(data.x_train, np.float64) @ Vf
    # (the batches from a numpy generator seeded by the key's bits: the same key, the same estimate)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key), np.uint32).ravel())
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        per, dim = _lyapunov_chains(rng, bool(data.online), B, steps, burn, chains, xt, nu, eta0, 1.0 - eta0 * kappa)
    if not np.all(np.isfinite(per)):            # (a step overflowing float64 from a unit vector)
        raise InputError(f"eta0: {eta0:g} is too large for the linearized step to be computed "
                         "(its growth overflows float64 in one step)")
    return SGDLyapunov(float(per.mean()), float(per.std(ddof=1) / math.sqrt(chains)), eta0, B, kappa,
                       chains, steps, burn, dim, time.perf_counter() - t0)


def largest_stable_eta0(model: DeepLinear, data: LinearTeacher, *, batch_size: int, weight_decay: float = 0.0,
                        high: float, key=None, steps: int = LYAPUNOV_STEPS, chains: int = LYAPUNOV_CHAINS,
                        rtol: float = 0.01) -> float:
    """The eta0 in (0, high) where `sgd_lyapunov`'s exponent crosses 0, by bisection on the same
    chains' keys (common random numbers: the estimate is smooth in eta0), to `rtol` relative;
    `high` itself if the exponent is negative there. Its error is the exponent's standard error
    over its slope in eta0 besides rtol (a few percent at the default chains and steps)."""
    high = checks.real("high", high, positive=True)
    rtol = checks.real("rtol", rtol, positive=True)

    def exponent(eta):
        return sgd_lyapunov(model, data, eta0=eta, batch_size=batch_size, weight_decay=weight_decay,
                            key=key, steps=steps, chains=chains).exponent

    if exponent(high) <= 0:
        return high
    lo, hi = 0.0, high
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        if weight_decay and mid * weight_decay >= 1:
            hi = mid
            continue
        lo, hi = (mid, hi) if exponent(mid) <= 0 else (lo, mid)
    return lo


def _contracting(model: DeepLinear, data: LinearTeacher, eta0: float, kappa: float) -> bool:
    """Whether every batch's linearized map on a fixed set is a contraction (in the norm of N^-1 on
    N's range), so that the exponent is <= 0 with no estimate: eta0 nu_max max_n |x_n|^2 <= 2 - eta0 kappa,
    as each map is (1 - eta0 kappa) I - eta0 N R_b with 0 <= N R_b <= nu_max |S_b| and |S_b| <=
    max_n |x_n|^2 (a mean of the batch's x x^T); nu_max is N's top eigenvalue (`_mode_kernel`)."""
    nu_max = float(_mode_kernel(model, effective_modes(data), kappa)[2].max())
    return bool(eta0 * nu_max * float(np.max(np.sum(np.asarray(data.x_train) ** 2, axis=1))) <= 2.0 - eta0 * kappa)


# the warning's estimate is skipped above this many multiply-adds (~ tens of seconds in numpy:
# chains x (burn + steps) x 2 d_out d_in B); `sgd_lyapunov` itself runs at any size
LYAPUNOV_WARN_WORK = 1e10


def warn_sgd_unstable(model: DeepLinear, data: LinearTeacher, *, eta0: float, batch_size: int,
                      weight_decay: float, what: str, steps_run: int | None = None,
                      say: bool = True) -> SGDLyapunov | None:
    """Warn, before any compute, where SGD cannot settle at the target minimum at this eta0 and
    batch size (`sgd_lyapunov` clearly positive), with the exponent and the largest stable
    eta0 (`largest_stable_eta0`). Silent (and skipped) where full-batch GD is already unstable
    there (`step_rates` >= 2: `warn_step` says so) and for a full batch (B = P: GD, whose
    stability `step_rates` decides), and where the estimate would cost more than
    `LYAPUNOV_WARN_WORK` multiply-adds (d_in d_out B above ~1.4e5: call `sgd_lyapunov` with fewer
    chains or steps). Returns the estimate (None where skipped). Estimates are
    cached per setting, so the networks, the SDE and the dln job pay for one; say=False returns
    it without the warning (the dln job records what `networks.train` already said)."""
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    kappa = _decay(eta0, weight_decay)
    if (not data.online and B == data.P) or \
            np.nanmax(_step_rates(effective_modes(data).s, model.depth, eta0, kappa)) >= STEP_UNSTABLE:
        return None
    if not data.online and _contracting(model, data, eta0, kappa):
        return None
    if LYAPUNOV_CHAINS * (LYAPUNOV_BURN + LYAPUNOV_STEPS) * 2.0 * data.d_in * data.d_out * B > LYAPUNOV_WARN_WORK:
        return None
    tag = (model.depth, model.width, _data_print(data), eta0, B, kappa)
    if tag not in _LYAPUNOV_CACHE:
        est = sgd_lyapunov(model, data, eta0=eta0, batch_size=B, weight_decay=kappa)
        limit = (largest_stable_eta0(model, data, batch_size=B, weight_decay=kappa, high=eta0)
                 if est.unstable else None)
        if len(_LYAPUNOV_CACHE) > 32:
            _LYAPUNOV_CACHE.clear()
        _LYAPUNOV_CACHE[tag] = (est, limit)
    est, limit = _LYAPUNOV_CACHE[tag]
    if est.unstable and say:
        grow = (f"; over the {steps_run} steps asked, a factor e^{est.exponent * steps_run:.3g}"
                if steps_run else "")
        warn(f"{what}: SGD at eta0 = {eta0:g}, batch size {B} cannot settle at the target minimum: the "
             f"linearized per-batch step's top Lyapunov exponent there is {est.exponent:.3g} +- {est.stderr:.2g} "
             f"per step (`dl.sgd_lyapunov`; > 0: a typical run's distance from the target grows as "
             f"e^({est.exponent:.3g} k){grow}), although eta0 x the restoring rate is below GD's 2; the largest "
             f"stable eta0 at this batch size is about {limit:.3g}"
             + (" (at the balanced minimum: runs that land on another minimum of this deep network may settle, "
                "near this limit a part of the seeds does)" if model.depth > 1 else "") + "; lower eta0 or raise batch_size")
    return est


# ----------------------------------------------------------------- the cross-mode correction

class CrossModes(NamedTuple):
    """The off-mode gradient noise that `cross_modes=True` feeds back into each mode's drift
    (docs/derivations.md, section 6, "The cross-mode drift"). In the full output and input
    bases (the r modes first, then the least-squares target's other pairs, then the rest):
    c_ab = A2_ab d_a^2 + A1_ab d_a + A0_ab is B Var(G_ab), the variance of one sample's gradient
    along u_a v_b^T (a != b; times the finite-population factor on a fixed set), at residuals
    d_a = target_a - pi_a (pi_a = 0 off the modes)."""

    A2: np.ndarray        # (d_out, d_in)
    A1: np.ndarray
    A0: np.ndarray
    target: np.ndarray    # (d_out,) the target's strength along each output direction


def _full_basis(Q: np.ndarray) -> np.ndarray:
    """Q (d, m) with orthonormal columns, completed to an orthonormal basis of R^d."""
    d, m = Q.shape
    if m == d:
        return Q
    u, _, _ = np.linalg.svd(np.eye(d) - Q @ Q.T)
    return np.concatenate([Q, u[:, : d - m]], axis=1)


def cross_modes_of(data: LinearTeacher, batch_size: int) -> CrossModes:
    """The `CrossModes` of `data` at batch size B: online (Isserlis) c_ab = d_a^2 + sigma^2;
    on a fixed set the exact moments over the P points (with z = V^T x, eps = U^T (y - M~ x)):
    c_ab = [d_a^2 <z_a^2 z_b^2> + 2 d_a <eps_a z_a z_b^2> + <eps_a^2 z_b^2>] (P - B) / (P - 1)."""
    modes = effective_modes(data)
    B = checks.integer("batch_size", batch_size, minimum=1)
    r = modes.s.size
    if modes.P is None:
        Uf, Vf = _full_basis(np.asarray(modes.U)), _full_basis(np.asarray(modes.V))
        d_out, d_in = Uf.shape[0], Vf.shape[0]
        ones = np.ones((d_out, d_in))
        return CrossModes(ones, 0.0 * ones, modes.sigma ** 2 * ones,
                          np.concatenate([modes.s, np.zeros(d_out - r)]))
    if B > modes.P:
        raise InputError(f"batch_size must be <= P = {modes.P} (the fixed set's size), got {B}")
    X, Y, P = np.asarray(data.x_train), np.asarray(data.y_train), data.P
    Mt, u, sv, vt, idx = _least_squares_pairs(data)
    rest = [j for j in range(sv.size) if j not in idx]
    Uf = _full_basis(np.concatenate([np.asarray(modes.U), u[:, rest]], axis=1))
    Vf = _full_basis(np.concatenate([np.asarray(modes.V), vt[rest].T], axis=1))
    d_out, d_in = Uf.shape[0], Vf.shape[0]
    m = sv.size
    target = np.zeros(d_out)
    target[:r], target[r:m] = modes.s, sv[rest]
    z, eps = X @ Vf, (Y - X @ Mt.T) @ Uf                               # (P, d_in), (P, d_out)
    fpc = (P - B) / (P - 1) if P > 1 else 0.0
    z2 = z ** 2
    za = np.zeros((P, d_out))
    za[:, :m] = z[:, :m]                                                # z_a along the target's pairs
    A2 = np.einsum("pa,pb->ab", za ** 2, z2) / P * fpc
    A1 = 2.0 * np.einsum("pa,pb->ab", eps * za, z2) / P * fpc
    A0 = np.einsum("pa,pb->ab", eps ** 2, z2) / P * fpc
    return CrossModes(A2, A1, A0, target)


def _cross_drift_a(xp, L: int, a, cm, eta, B, row: int | None = None):
    """The cross-mode drift of each layer scalar a_i (..., r), in time units:
    -(eta / (2 B L)) sum_{k != i} [S(a_i, a_k) c_ik + S(a_i, a_k) c_ki], the sums over the full
    input (c_ik) and output (c_ki) bases, a_k = 0 off the modes, and
    S(x, y) = sum_{m=2..L} (m - 1) y^(2(L - m)) x^(2m - 3). Zero at depth 1.

    Off the modes (k >= r) S is (L - 1) a_i^(2L - 3) whatever k, and c_ki's residual d_k is the
    target's, a constant: those sums are taken over the coefficients, not per path, so a step
    costs O(r^2) a path (with O(r d) per step), not O(d_in d_out) a path. row = i: mode i's drift
    alone (...,), at O(r) a point (the laws' grids: every pair's (..., r, r) terms held 4 GB at r = 32)."""
    A2, A1, A0, target = (xp.asarray(v) for v in cm)
    r = a.shape[-1]
    d = target[:r] - a ** L                                             # (..., r) the modes' residuals
    if row is not None:             # the same terms as below, in row i alone: c_ik, c_ki and S(a_i, a_k)
        i, di = row, d[..., row, None]
        block = A2[i, :r] * di ** 2 + A1[i, :r] * di + A0[i, :r]
        column = A2[:r, i] * d ** 2 + A1[:r, i] * d + A0[:r, i]
        rest_in = d[..., i] ** 2 * xp.sum(A2[i, r:]) + d[..., i] * xp.sum(A1[i, r:]) + xp.sum(A0[i, r:])
        tk = target[r:]
        rest_out = xp.sum(A2[r:, i] * tk ** 2 + A1[r:, i] * tk + A0[r:, i])
        S = 0.0
        for m in range(2, L + 1):
            S = S + (m - 1) * a ** (2 * (L - m)) * a[..., i, None] ** (2 * m - 3)
        modes = xp.sum(xp.where(np.arange(r) != i, S * (block + column), 0.0), axis=-1)
        S0 = (L - 1) * a[..., i] ** (2 * L - 3) if L >= 2 else 0.0 * a[..., i]
        return -eta / (2.0 * B * L) * (modes + S0 * (rest_in + rest_out))
    # c_ik (row i, input k) for the modes i, k < r, from row i's residual d_i: (..., r, r);
    # c_ki for k < r is the same block transposed (row k's residual d_k)
    block = A2[:r, :r] * d[..., :, None] ** 2 + A1[:r, :r] * d[..., :, None] + A0[:r, :r]
    rest_in = d ** 2 * xp.sum(A2[:r, r:], axis=-1) + d * xp.sum(A1[:r, r:], axis=-1) + xp.sum(A0[:r, r:], axis=-1)
    tk = target[r:, None]                                               # the other outputs' residuals
    rest_out = xp.sum(A2[r:, :r] * tk ** 2 + A1[r:, :r] * tk + A0[r:, :r], axis=0)     # (r,)
    S = 0.0
    for m in range(2, L + 1):                                           # S(a_i, a_k), (..., r, r)
        S = S + (m - 1) * a[..., None, :] ** (2 * (L - m)) * a[..., :, None] ** (2 * m - 3)
    off = ~np.eye(r, dtype=bool)
    modes = xp.sum(xp.where(off, S * (block + xp.swapaxes(block, -1, -2)), 0.0), axis=-1)
    S0 = (L - 1) * a ** (2 * L - 3) if L >= 2 else 0.0 * a              # S(a_i, 0)
    return -eta / (2.0 * B * L) * (modes + S0 * (rest_in + rest_out))


def _cross_law_drift(cm: CrossModes, s: np.ndarray, i: int, L: int, eta0: float, B: int):
    """x -> mu_i^cross at pi_i = x (G,), the other modes at their targets s (for the laws)."""

    def extra(x):
        pis = np.broadcast_to(np.asarray(s, dtype=np.float64), (x.size, s.size)).copy()
        pis[:, i] = x
        a = np.sign(pis) * np.abs(pis) ** (1.0 / L)
        return L * a[:, i] ** (L - 1) * _cross_drift_a(np, L, a, cm, eta0, B, row=i)
    return extra


# the first-order cross-mode shift (`cross_shift`) past which mode_sde warns: without the drift,
# of a share the per-mode SDE leaves out; with it, of a shift beyond first order (at 25-35%
# the drift still read the networks' means to 2-7%, at 40-140% it overshot them twofold)
CROSS_LEFT_OUT, CROSS_FIRST_ORDER = 0.1, 0.25


def cross_shift(model: DeepLinear, data: LinearTeacher, *, eta0: float, batch_size: int) -> np.ndarray:
    """(r,) each mode's stationary mean shift from the cross-mode drift, at first order and
    relative to its target: mu_i^cross(s) / (L s_i^(2 - 2/L)) / s_i (the extra drift at the
    targets over the flow's restoring slope there; <= 0). How far the per-mode reduction is from
    the networks here: a few percent, it holds; tens of percent, `mode_sde` without
    cross_modes is off by that much and with it first order is stretched (docs/derivations.md,
    section 6). Without weight decay (the drift's derivation has none); 0 at depth 1."""
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    return _cross_shift(model.depth, effective_modes(data).s, cross_modes_of(data, B), eta0, B)


def _cross_shift(L: int, s: np.ndarray, cm: CrossModes, eta0: float, B: int) -> np.ndarray:
    if L == 1:
        return np.zeros_like(s)
    with np.errstate(all="ignore"):        # (a target beyond float range: NaN, not judged)
        a = s ** (1.0 / L)
        extra = L * a ** (L - 1) * _cross_drift_a(np, L, a, cm, eta0, B)
        return extra / (L * s ** (2 - 2 / L)) / s


def _warn_cross_range(shift: np.ndarray, cross: bool) -> None:
    """mode_sde's warning where the cross-mode shift is large (`CROSS_LEFT_OUT`, `CROSS_FIRST_ORDER`)."""
    if not np.any(np.isfinite(shift)):
        return
    i = int(np.nanargmax(np.abs(shift)))
    size = abs(float(shift[i]))
    if cross and size > CROSS_FIRST_ORDER:
        warn(f"mode_sde: the cross-mode drift moves mode {i + 1}'s mean by {100 * size:.0f}% of its target at "
             "first order (info['cross_shift']): beyond first order, where it overshoots the networks' "
             "shift; lower eta0 or raise batch_size for an SDE that describes them")
    elif not cross and size > CROSS_LEFT_OUT:
        warn(f"mode_sde: the noise off the mode directions moves mode {i + 1}'s mean by about {100 * size:.0f}% "
             "of its target (info['cross_shift']), which this per-mode SDE leaves out: cross_modes=True adds it "
             "at first order (or lower eta0, raise batch_size)")


def _check_cross(cross, kappa: float, what: str) -> bool:
    cross = checks.flag("cross_modes", cross)
    if cross and kappa != 0:
        raise InputError(f"cross_modes: {what} derives the cross-mode drift without weight decay; "
                         "give weight_decay=0 or cross_modes=False")
    return cross


def drift(model: DeepLinear, data: LinearTeacher, pi, *, eta0: float, batch_size: int,
          ito: bool = True, weight_decay: float = 0.0, cross_modes: bool = False):
    """mu_i(pi) = L pi^(2-2/L)(s_i - pi) - L kappa pi (+ (L - 1) D_i / (2 L pi), the Ito term,
    with ito=True); kappa the weight decay (docs/derivations.md, section 6).

    cross_modes=True adds the O(eta / B) drift that the noise off the mode directions feeds
    back into each mode (the misalignment's stationary moments at the modes' present strengths
    pi, all given in the last axis; docs/derivations.md, section 6, "The cross-mode drift"):
    L a_i^(L-1) times `_cross_drift_a`, a_i = pi_i^(1/L). Without weight decay only."""
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    kappa = _decay(eta0, weight_decay)
    ito = checks.flag("ito", ito)
    cross = _check_cross(cross_modes, kappa, "drift")
    modes = effective_modes(data)
    pi = _pis(pi, modes.s.size)
    if cross:               # the cross drift reads every mode's pi off the last axis: one value for
        pi = np.broadcast_to(pi, np.broadcast_shapes(pi.shape, (modes.s.size,)))  # all, spread to each
    L = model.depth
    with np.errstate(over="ignore", invalid="ignore"):
        mu = _gf_rate(pi, modes.s, L) - L * kappa * pi
    if ito:
        D = _diffusion(modes, pi, eta0, B, L)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            mu = mu + np.where(pi != 0, (L - 1) * D / (2 * L * pi), 0.0)
    if cross and L % 2 == 0 and np.any(pi < 0):       # (pi = a^L: never below 0 at even depth)
        raise InputError(f"pi: a mode strength below 0 at depth {L} (even: pi = a^L >= 0) has no cross-mode "
                         "drift; give pi >= 0 or cross_modes=False")
    if cross:
        with np.errstate(over="ignore", invalid="ignore"):
            a = np.sign(pi) * np.abs(pi) ** (1.0 / L)
            mu = mu + L * a ** (L - 1) * _cross_drift_a(np, L, a, cross_modes_of(data, B), eta0, B)
    return _finite_where_pi_is("the drift", mu, pi)


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


_MAX_COUNT = 2 ** 63 - 1      # a count an int64 holds (a larger int would not convert to a float)


def sde_memory_estimate(paths: int, saves: int, modes: int) -> float:
    """Bytes `mode_sde` needs: per path, its saved layer scalars on the device and their host
    copies, the mode strengths and diffusions derived from them (with the temporaries of
    `noise_variance`), eight float64 arrays of (saves, modes), plus the step's state, noise and
    key; and the runtime's fixed cost. Measured (fresh processes, 1-6 GB): the peak grew 6.0
    arrays a save on a fixed set and 4.6-4.9 online, 0.54-0.71 of this (it counted ten: 0.44 of
    it online, d = 32, 1024 paths, 2001 saves). Each argument an integer >= 1 (InputError naming
    it else)."""
    paths, saves, modes = (checks.integer(name, v, minimum=1, maximum=_MAX_COUNT)
                           for name, v in (("paths", paths), ("saves", saves), ("modes", modes)))
    per_path = 8.0 * (8 * saves * modes + 16 * modes + 8)
    return paths * per_path + RUNTIME_BYTES


def _log_noise_variance(modes: EffectiveModes, pi, B: int) -> np.ndarray:
    """(r,) log c_i(pi) at one strength pi (or one per mode), without overflow (-inf where c
    vanishes): the quadratic in d = s - pi scaled by max(|d|, 1)^2."""
    d = np.asarray(modes.s, dtype=np.float64) - pi
    m = np.maximum(np.abs(d), 1.0)
    A, T, lam, fpc = _noise_quadratic(modes, B)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):     # (lam / m^2 -> 0 for a huge m)
        return 2.0 * np.log(m) + np.log(np.maximum(A * (d / m) ** 2 + 2.0 * T * (d / m) / m + lam / m ** 2, 0.0) * fpc)


def check_sde_start(model: DeepLinear, data: LinearTeacher, *, eta0: float, batch_size: int) -> float:
    """The aligned start pi0 = init_scale^depth of `mode_sde`, or an InputError where the start,
    its gradient noise variance c(pi0) or its diffusion D(pi0) = (eta0 / B) L^2 pi0^(4 - 4/L) c(pi0)
    overflows the SDE's working precision (float64 with JAX's x64, else float32), all computed in
    logs. The error names init_scale when the start is the cause (it overflows, or lies above every
    target), else singular_values or label_noise, whichever dominates c(pi0) (a lower eta0 helps
    only the diffusion). `mode_sde` calls it before any path; the `dmft dln` job's configuration
    before any network trains.

    At depth L >= 2 a layer scalar a0 = init_scale below the working precision's smallest normal
    number is refused too, naming init_scale: it rounds to 0 or to a subnormal, which XLA's
    arithmetic flushes to 0, and a zero start never moves (every step adds a0^(L-1) x ...), where
    the float64 start learns (L = 2, init_scale = 1e-50 in float32: the paths stayed at 0 for
    8000 steps; in float64 they reach s = 3 by t = 50). A start whose pi0 = a0^L alone underflows
    is not refused: the paths carry a0, which the step grows at the right rate (L = 2,
    init_scale = 1e-20 in float32, pi0 = 1e-40: the modes are learned as in float64); at L >= 3
    such a start moves by less than the rounding of a0 per step, in float64 too. At depth 1 the
    step does not multiply by a0, and a zero start moves."""
    _check_aligned(model, data, "check_sde_start")
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    modes = effective_modes(data)
    dt = jnp.result_type(float)
    log_max = math.log(float(jnp.finfo(dt).max))
    L, lp = model.depth, _log_mode_init(model)
    tiny = float(jnp.finfo(dt).tiny)
    if L >= 2 and model.init_scale < tiny:
        raise InputError(f"init_scale: the SDE's start, the layer scalar init_scale = {model.init_scale:g}, is below "
                         f"{jnp.dtype(dt).name}'s smallest normal number {tiny:.3g}: it starts at 0 there (XLA "
                         f"flushes subnormals), and at depth {L} a zero start never moves; use a larger init_scale"
                         + (" or float64 (jax_enable_x64; the command's --x64)" if dt != jnp.float64 else ""))
    pi0 = math.exp(lp) if lp < _LOG_MAX else math.inf
    log_c0 = float(np.max(_log_noise_variance(modes, pi0, B))) if lp < log_max else math.inf
    log_d0 = math.log(eta0 / B) + 2 * math.log(L) + (4 - 4 / L) * lp + log_c0
    if lp < log_max and log_c0 < log_max and log_d0 < log_max:
        return pi0
    if lp >= log_max or pi0 > float(np.max(modes.s)):
        name = "init_scale"
    else:
        name = "singular_values" if 2 * float(np.max(modes.s)) ** 2 >= modes.sigma ** 2 else "label_noise"
    dec = math.log(10.0)
    sizes = [f"the mode strength init_scale^depth = 10^{lp / dec:.0f}"]
    if lp < log_max:                                    # (c and D of a start past the range: not computed)
        sizes += [f"its noise variance c = 10^{log_c0 / dec:.0f}", f"its diffusion D = 10^{log_d0 / dec:.0f}"]
    raise InputError(f"{name}: the SDE's start overflows {jnp.dtype(dt).name} (max 10^{log_max / dec:.0f}): "
                     + ", ".join(sizes) + "; use a smaller "
                     + ("init_scale" if name == "init_scale" else f"{name} (rescale the teacher)")
                     + ("" if lp >= log_max or log_c0 >= log_max else " or eta0"))


# which quantity went non-finite first on a path (the code recorded beside its step)
_SDE_CAUSES = {1: "the layer scalar a", 2: "the mode strength pi = a^L", 3: "the diffusion D(pi)"}


class _SDEStatic(NamedTuple):
    depth: int
    online: bool
    cross: bool = False


class _SDEState(NamedTuple):
    a: jax.Array          # (paths, r) layer scalars
    pi: jax.Array         # (paths, r) mode strengths a^L
    c: jax.Array          # (paths, r) noise variances c(pi)
    k: jax.Array          # (paths,) steps taken
    bad: jax.Array        # (paths,) first bad step (-1: none)
    why: jax.Array        # (paths,) its cause (`_SDE_CAUSES`)


def _sde_c(online: bool, coef, scalars, pi):
    s, kappa, tau, lam = coef
    sigma2, fpc = scalars[3], scalars[4]
    d = s - pi
    if online:
        return 2 * d * d + sigma2
    return jnp.maximum((kappa - 1) * d * d + 2 * tau * d + lam, 0.0) * fpc


def _sde_step(static: _SDEStatic, ctx, st: _SDEState, drive):
    """One Euler-Maruyama step of every path of `mode_sde` (`runner.run_saved`'s step): path p's
    noise at step k is drawn from fold_in(key_p, k). One compiled program per depth, mode count,
    save count and path count: the step size, batch size, decay, noise and start are arguments."""
    count_trace("deep_linear.sde_paths")
    keys, coef, scalars = ctx[:3]
    L = static.depth
    s = coef[0]
    eta, B, shrink = scalars[0], scalars[1], scalars[2]
    dt = s.dtype

    def one(pkey, a, pi, c, k, bad, why):
        zeta = jax.random.normal(jax.random.fold_in(pkey, k), a.shape, dt) * jnp.sqrt(c / B)
        if static.cross:
            a = shrink * a + eta * (a ** (L - 1) * (s - pi + zeta) + _cross_drift_a(jnp, L, a, ctx[3], eta, B))
        else:
            a = shrink * a + eta * a ** (L - 1) * (s - pi + zeta)
        pi = a ** L
        c = _sde_c(static.online, coef, scalars, pi)
        D = eta / B * L ** 2 * jnp.abs(pi) ** (4 - 4 / L) * c
        code = jnp.where(~jnp.all(jnp.isfinite(a)), 1,
                         jnp.where(~jnp.all(jnp.isfinite(pi)), 2, jnp.where(~jnp.all(jnp.isfinite(D)), 3, 0)))
        first = (bad < 0) & (code > 0)
        # the state after this step is that of step k + 1: the step a network's seed would be
        # flagged at (its loss at the weights of step k + 1 is the first non-finite one)
        return _SDEState(a, pi, c, k + 1, jnp.where(first, k + 1, bad), jnp.where(first, code, why))

    return jax.vmap(one)(keys, st.a, st.pi, st.c, st.k, st.bad, st.why)


def _sde_record(static: _SDEStatic, ctx, st: _SDEState):
    return {"a": st.a}


def _sde_start(static: _SDEStatic, coef, scalars, paths: int) -> _SDEState:
    a0 = jnp.full((coef.shape[1],), scalars[5], coef.dtype)            # one path's start
    pi0 = a0 ** static.depth
    c0 = _sde_c(static.online, coef, scalars, pi0)
    return _SDEState(*(jnp.broadcast_to(v, (paths,) + v.shape) for v in (a0, pi0, c0)),
                     jnp.zeros((paths,), jnp.int32), jnp.full((paths,), -1, jnp.int32),
                     jnp.zeros((paths,), jnp.int32))


def mode_sde(model: DeepLinear, data: LinearTeacher, eta0=None, batch_size=None, steps=None,
             save_every=None, paths: int = 1024, key=None, *, weight_decay=None,
             schedule: Schedule | None = None, max_memory_gb: float = 4.0,
             keep_diverged: bool = False, progress: bool = False, cross_modes: bool = False) -> ModeSDE:
    """Integrate the per-mode SDE with vmapped Euler-Maruyama paths, one step per SGD step.

    The scheme is Euler-Maruyama for each layer's scalar a = pi^(1/L):
    a <- (1 - eta kappa) a + eta a^(L-1) (s - a^L + zeta), zeta ~ N(0, c(pi) / B), which is the
    SGD step of the aligned network (with the schedule's weight decay kappa) with its noise made
    Gaussian; it carries the Ito term of pi exactly. Weight decay multiplies every layer by the
    same factor, so the aligned, balanced family stays invariant and the reduction stays exact
    for an aligned start: in pi it adds -L kappa pi to the drift, nothing to the diffusion.

    Paths are an ensemble, like the seeds of `networks.train`: a path whose layer scalar, mode
    strength or diffusion goes non-finite is flagged in `info["diverged"]` ({path: first bad
    step}, the step count whose state is the first non-finite one, as the networks count theirs)
    and its records are NaN from that step's save on; when every path diverges, DivergenceError
    (its .step the earliest bad step, .cause the quantity, .partial the records of the saves
    before it), unless keep_diverged.

    Args:
        eta0, batch_size, steps, save_every, weight_decay: the SGD protocol (or schedule=, with
            batch_size set).
        paths: independent paths (>= 1).
        key: `jax.random.key` (default key(0)); path p uses fold_in(key, p).
        max_memory_gb: refuse (InputError, before any compute) a run whose paths and saves need
            more (`sde_memory_estimate`).
        keep_diverged: when every path diverges, return the ModeSDE (every path flagged, each
            NaN from its own bad step's save on) with info["all_diverged"] = {"step", "t",
            "cause", "message"} (the DivergenceError's) instead of raising: a caller that
            records divergences as the networks' (the `dmft dln` job) keeps every record.
        cross_modes: add to each layer scalar's step the O(eta / B) drift that the noise off the
            mode directions feeds back (`_cross_drift_a`: the stationary moments of the
            misalignment at the paths' present strengths; docs/derivations.md, section 6, "The
            cross-mode drift"). Default False: the per-mode SDE above, unchanged. Without
            weight decay only (InputError else).
        progress: show a progress bar over steps; the run is then cut into calls of about
            `runner.CALL_SECONDS` (`runner.run_saved`), so that an interruption acts within
            seconds. The numbers do not depend on the cut.

    Returns:
        ModeSDE with .t (T,) and .modes (paths, T, r).
    """
    _check_aligned(model, data, "mode_sde")
    given = {k: v for k, v in dict(eta0=eta0, steps=steps, save_every=save_every, batch_size=batch_size,
                                   weight_decay=weight_decay).items() if v is not None}
    sch = schedule_from(schedule, **given, defaults=dict(eta0=0.01, steps=1000))
    if sch.dynamics != "gd":         # (first: a flow schedule has no batch size, and was refused naming it)
        raise InputError("dynamics: the per-mode SDE describes (S)GD steps; use mode_flow for gradient flow")
    if sch.batch_size is None:
        raise InputError("batch_size: the SDE describes minibatch SGD; give batch_size")
    eta, B = _sgd_args(model, data, sch.eta0, sch.batch_size)
    kappa_wd = float(sch.weight_decay)
    cross = _check_cross(cross_modes, kappa_wd, "mode_sde")
    paths = checks.integer("paths", paths, minimum=1)
    max_memory_gb = checks.real("max_memory_gb", max_memory_gb, positive=True)
    key = checks.prng_key("key", key)
    key = jax.random.key(0) if key is None else key
    keep_diverged = checks.flag("keep_diverged", keep_diverged)
    progress = checks.flag("progress", progress)
    modes = effective_modes(data)
    L = model.depth
    T = int(sch.save_steps.size)
    need = sde_memory_estimate(paths, T, modes.s.size)
    if need > max_memory_gb * 2 ** 30:
        raise MemoryLimitError(f"paths: {paths} paths x {T} saves x {modes.s.size} modes need about "
                         f"{need / 2 ** 30:.3g} GiB (> max_memory_gb={max_memory_gb:g}); use fewer paths "
                         "or fewer saves (save_every, n_saves)")
    dt = jnp.result_type(float)
    pi0 = check_sde_start(model, data, eta0=eta, batch_size=B)
    warn_float32("mode_sde")
    online = modes.P is None
    fpc = 1.0 if online else ((modes.P - B) / (modes.P - 1) if modes.P > 1 else 0.0)
    zero = np.zeros_like(modes.s)
    coef = jnp.asarray(np.stack([modes.s] + ([zero] * 3 if online else [modes.kappa, modes.tau, modes.lam])), dt)
    scalars = jnp.asarray([eta, B, 1.0 - eta * kappa_wd, modes.sigma ** 2, fpc, model.init_scale], dt)
    keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(jnp.arange(paths))
    cm = None if kappa_wd else cross_modes_of(data, B)      # (cross is refused with decay)
    shift = None if cm is None else _cross_shift(L, modes.s, cm, eta, B)
    if shift is not None:
        _warn_cross_range(shift, cross)
    warn_step(_step_rates(modes.s, L, eta, kappa_wd), eta, "mode_sde", law=False)
    # (the networks this SDE describes run away where SGD is unstable at the minimum; at a
    # noiseless target the SDE, without noise there, does not: said before compute)
    warn_sgd_unstable(model, data, eta0=eta, batch_size=B, weight_decay=kappa_wd,
                      what="mode_sde (the networks it describes)", steps_run=sch.steps)
    static = _SDEStatic(L, online, cross and L >= 2)     # (depth 1: no cross-mode drift, the plain step)
    ctx = (keys, coef, scalars)
    if static.cross:
        ctx = ctx + (CrossModes(*(jnp.asarray(v, dt) for v in cm)),)
    drop_compiled_if_crowded(CALL_SHARE)
    rec, st, _ = run_saved(_sde_step, _sde_record, static, ctx,
                           _sde_start(static, coef, scalars, paths), gaps=sch.gaps, progress=progress,
                           label="mode_sde", stop_on_nonfinite=False)
    a = np.moveaxis(rec["a"], 0, 1)                                      # (paths, saves, r)
    bad, why = np.asarray(st.bad), np.asarray(st.why)
    with np.errstate(over="ignore", invalid="ignore"):
        pi = a ** L
    D = _diffusion(modes, pi, eta, B, L)
    # a path is NaN from its first bad step's save on (the save there holds the non-finite state)
    dead = (bad[:, None] >= 0) & (sch.save_steps[None, :] >= bad[:, None])
    pi = np.where(dead[..., None], np.nan, pi)
    D = np.where(dead[..., None], np.nan, D)
    diverged = {int(p): int(b) for p, b in enumerate(bad) if b >= 0}
    all_diverged = None
    if len(diverged) == paths:
        first = int(bad.min())
        cause = _SDE_CAUSES[int(why[np.argmin(bad)])]
        n_good = int(np.sum(sch.save_steps < first))
        message = (f"mode_sde: every path diverged; the first at step {first} (t = {first * eta:g}), where "
                   f"{cause} went non-finite. Lower eta0 or init_scale.")
        if not keep_diverged:
            raise DivergenceError(
                f"{message} Records of the {n_good} saves before are in .partial.", step=first, cause=cause,
                partial={"t": sch.times[:n_good], "modes": pi[:, :n_good], "diffusion": D[:, :n_good]})
        all_diverged = {"step": first, "t": first * eta, "cause": cause, "message": message}
    info = {"paths": paths, "eta0": eta, "batch_size": B, "weight_decay": kappa_wd, "depth": L,
            **({"cross_modes": True} if cross else {}),
            "cross_shift": None if shift is None else shift.tolist(),
            "dtype": jnp.dtype(dt).name, "mode_init": pi0, "s_effective": modes.s.tolist(), "online": online, "diverged": diverged,
            "memory_estimate_gb": need / 2 ** 30,
            "config": {"model": model.describe(), "data": data.describe(),
                       "sde": {**sch.describe(), "paths": paths},
                       "key": np.asarray(jax.random.key_data(key)).tolist()}}   # same key, same paths
    if all_diverged is not None:
        info["all_diverged"] = all_diverged
    elif diverged:         # some paths: said, so that a nanmean over the rest is not read unknowing
        warn(f"mode_sde: {len(diverged)} of {paths} paths diverged (the first at step "
                      f"{min(diverged.values())}): their records are NaN from the save where each went bad "
                      "(info['diverged']), so statistics over the others describe survivors; lower eta0 or "
                      "init_scale")
    return ModeSDE(t=sch.times, modes=pi, diffusion=D, info=info)


_MIN_WELL = 5.0      # least log-ratio of the density at pi* to that at the barrier for a metastable law


class ShallowWellError(InputError):
    """`stationary_density`: the well around a mode's fixed point is too shallow for a metastable
    law (SGD escapes to pi = 0 about as fast as it relaxes): there is no density to compare with."""


class PointMassError(InputError):
    """`stationary_density`: the noise vanishes at a mode's fixed point (no label noise and no
    decay to move it off the target, or full-batch steps): the stationary law is a point mass."""


def stationary_density(model: DeepLinear, data: LinearTeacher, pi, *, eta0: float,
                       batch_size: int, weight_decay: float = 0.0, mode: int | None = None,
                       cross_modes: bool = False) -> np.ndarray:
    """The stationary density of each mode's SDE on the grid pi (G,) (increasing; > 0 for depth
    L > 1, any sign at L = 1, where pi = a is one scalar weight and its law can reach below 0):
    p_i(pi) ~ D_i^-1 exp(int 2 mu_i / D_i) with the Ito drift, i.e.
    pi^((L-1)/L) / D_i exp((2B / (eta L)) int_{pi*}^{pi} (s_i - q - kappa q^(2/L - 1)) / (q^(2-2/L) c_i(q)) dq),
    normalized on the grid, pi* = `fixed_points` (s_i without weight decay). Returns (G, r).

    Without label noise and weight decay D vanishes at the target and the law is a point mass
    at s_i (the gradient-flow fixed point): PointMassError (an InputError) says so. With weight
    decay kappa > 0 the fixed point moves below the target, where the noise does not vanish: the
    law is a proper density around pi* even without label noise. For L > 2 decay also makes pi = 0 attracting
    (for L = 2 when the noise is strong), and the exact stationary law is then the point mass
    there, reached by a noise-driven escape over
    a barrier whose height grows like B / eta; what is returned is the metastable law of the well
    around pi* (the density above the barrier's top, zero below it; the cut is made wherever
    the density rises again toward 0 below pi*), the one SGD shows on times short of the
    escape. A well whose density at pi* is less than e^5 times that at the barrier's top
    escapes about as fast as it relaxes: ShallowWellError (an InputError). A mode with no fixed
    point (the decay wins) is an InputError.

    The noise vanishes at pi* when c(pi*) is 0, or on a fixed set no more than the rounding of its
    measured moments (`_point_mass_level`: 1e-20 of the largest c(0), where rounding leaves at most
    ~1e-25); a law narrower than float64 resolves at pi* (fewer than 256 float64 values across its
    core: tiny eta0, say) is a point mass there too. Both: PointMassError. (The rule was c(pi*) <=
    1e-12 c(0): label noise 1e-7 on s = 3, or 1 on s = 1e7, was a "point mass" although its law is
    3.2e-8 and 0.32 wide, 1e8 ulps, as the SDE's paths show.)

    The law is integrated on a fine grid, refined around its core (where the density is above
    1e-3 of its peak; about 7.4 standard deviations of a Gaussian law, which is sqrt(eta0) wide at
    small eta0), and read off at pi. A grid pi that crosses the core with a step wider than a sixth
    of it would normalize the law wrongly: UnresolvedLawError (an InputError) names the core, so a
    finer grid can be given there (`validation.deep_linear.mode_law` adds one). A grid that holds
    only part of the law gives the law conditioned on the grid's range; one that misses its core
    altogether is an InputError that names the core (normalized there, a far tail read as the law).

    mode: None for every mode, or one mode's index (counted from 0; messages, like the dln
    job's reports, count modes from 1, so mode=1 is "mode 2"): only its law is computed
    and checked (each mode's law is its own; the other columns are NaN), so that each mode's
    histogram can have a grid of its own and one mode's point mass or shallow well does not
    refuse another's law.

    cross_modes=True adds to each mode's drift the cross-mode drift of `drift(...,
    cross_modes=True)` with the other modes at their targets (docs/derivations.md, section 6,
    "The cross-mode drift"): the law of the mode beside learned ones, whose mean sits O(eta / B)
    lower. Without weight decay only (InputError else). Default False: the law above, unchanged.
    The drift pulls a small mode down linearly, as decay does, so where the density rises again
    toward 0 (depth > 2) the law is that of the well around pi*, cut at the barrier's top like
    decay's (ShallowWellError likewise).
    """
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    kappa = _decay(eta0, weight_decay)
    cross = _check_cross(cross_modes, kappa, "stationary_density")
    modes = effective_modes(data)
    L = model.depth
    r = modes.s.size
    pi = _reals("pi", pi)
    if pi.size < 2 or np.any(np.diff(pi) <= 0) or (L > 1 and np.any(pi <= 0)):
        raise InputError("pi: a grid of increasing values, positive for depth > 1 (a deeper mode's "
                         "strength pi = a^L stays on the side it starts on; at depth 1 pi = a crosses 0)")
    if mode is not None:
        mode = checks.integer("mode", mode, minimum=0)
        if mode >= r:
            raise InputError(f"mode: the data has {r} modes (0 to {r - 1}), got {mode}")
    wanted = np.arange(r) == mode if mode is not None else np.ones(r, bool)
    star = np.where(wanted, _fixed_points(modes.s, L, kappa), 1.0)
    if np.any(~np.isfinite(star)):
        off = (np.flatnonzero(~np.isfinite(star)) + 1).tolist()            # counted from 1
        raise InputError(f"weight_decay: {kappa:g} switches off mode(s) {off} "
                         "(no fixed point above 0: the mode decays to 0, a point mass)")
    warn_step(np.where(wanted, _step_rates(modes.s, L, eta0, kappa), np.nan), eta0, "stationary_density", law=True)
    c_at_star = noise_variance(modes, star, B)
    if np.any(wanted & (c_at_star <= _point_mass_level(modes, B))):
        # (the cause named: full-batch steps read "weight_decay = 0.2 too small to move it off the target")
        why = (f"full-batch steps, batch_size = P = {B}: no gradient noise" if modes.P is not None and B >= modes.P
               else f"no label noise, and weight_decay = {kappa:g} too small to move it off the target")
        raise PointMassError(f"stationary_density: the noise vanishes at the fixed point ({why}): the stationary "
                             "law is a point mass there")
    out = np.full((pi.size, r), np.nan)
    cm = cross_modes_of(data, B) if cross and L >= 2 else None
    for i, (si, ps) in enumerate(zip(modes.s, star)):
        if not wanted[i]:
            continue
        one = EffectiveModes(modes.U[:, i:i + 1], modes.V[:, i:i + 1], modes.s[i:i + 1], modes.sigma,
                             modes.P, *(None if v is None else v[i:i + 1]
                                        for v in (modes.kappa, modes.tau, modes.lam)))
        barrier = None
        extra = None if cm is None else _cross_law_drift(cm, modes.s, i, L, eta0, B)
        if (kappa > 0 or extra is not None) and L >= 2:
            # the metastable law: cut at the barrier's top, found on the whole of (0, pi*) on a grid
            # of its own, so that whether there is a law does not depend on the caller's grid. The
            # cross-mode drift pulls a small mode down linearly, as decay does (-c pi against D ~
            # pi^(4 - 4/L)): without the cut a grid reaching down to 1e-6 pi* read the law there
            # (depth 4); where the density falls toward 0 instead there is no barrier (None)
            barrier, depth = _barrier_top(one, float(ps), kappa, L, B, eta0, extra)
            if barrier is not None and depth < _MIN_WELL:
                cause = "weight_decay" if kappa > 0 else "cross_modes"
                if depth <= 0:       # (the density rises from pi* itself: "e^0.00 ... the barrier's top, pi = pi*")
                    pull = "the decay" if kappa > 0 and extra is None else (
                        "the cross-mode drift" if kappa == 0 else "the decay and the cross-mode drift")
                    raise ShallowWellError(
                        f"{cause}: mode {i + 1} has no well at pi* = {ps:.4g}: the density rises from pi* toward "
                        f"pi = 0 ({pull} pulls the mode down harder than the loss restores it there), so there "
                        f"is no metastable law; lower {'weight_decay or ' if kappa > 0 else ''}eta0, or raise "
                        "batch_size")
                raise ShallowWellError(
                    f"{cause}: the well around pi* = {ps:.4g} of mode {i + 1} is shallow (the density at "
                    f"pi* is e^{depth:.2f} times that at the barrier's top, pi = {barrier:.3g}): SGD escapes "
                    f"to pi = 0 about as fast as it relaxes, so there is no metastable law; lower "
                    f"{'weight_decay or ' if kappa > 0 else ''}eta0, or raise batch_size")
        # integrate on a fine grid from the fixed point, then read off at pi; the fine grid is
        # refined around the law's core until it holds it with many points (a law sqrt(eta) wide,
        # 1e-6 at eta = 1e-12, fell between two of 20001 points over the caller's range)
        lo, hi = min(pi[0], ps), max(pi[-1], ps)
        fine = np.unique(np.concatenate([np.linspace(lo, hi, 20001), pi, [ps],
                                         [si] if lo < si < hi else []]))     # s: a wall without label noise
        at_resolution = False
        for _ in range(_REFINE_ROUNDS):
            logp = _log_density_on(one, kappa, L, B, eta0, fine, ps, barrier, extra)
            core = np.flatnonzero(logp >= logp.max() - _CORE_LOG)
            if core.size >= _CORE_POINTS:
                break
            a, b = fine[max(core[0] - 1, 0)], fine[min(core[-1] + 1, fine.size - 1)]
            # (a bracket of a few hundred ulps: float64 has no more points to put in it)
            at_resolution = b - a <= 4 * _CORE_POINTS * np.spacing(max(abs(a), abs(b)))
            if at_resolution:
                break
            fine = np.unique(np.concatenate([fine, np.linspace(a, b, 4 * _CORE_POINTS + 1)]))
        a, b = fine[core[0]], fine[core[-1]]            # the law's core: density >= e^-_CORE_LOG x peak
        if core.size < _CORE_POINTS and at_resolution:       # refined to float64's resolution: too few points
            raise PointMassError(
                f"stationary_density: mode {i + 1}'s law around pi* = {ps:.8g} is narrower than float64 resolves "
                f"there (its core, [{a:.17g}, {b:.17g}], holds {core.size} float64 values): a point mass at "
                f"this precision (eta0 = {eta0:g} is small against the mode's scale)")
        if pi[-1] < a or pi[0] > b:         # (normalized on such a grid, a tail read as the law)
            # the core on both sides of pi* (the fine grid ends at pi* on the side the grid is not)
            w = 3 * (b - a)
            both = np.unique(np.concatenate([np.linspace(ps - w if L == 1 else max(ps - w, ps / 1e3), ps + w, 20001),
                                             [ps]]))
            lp = _log_density_on(one, kappa, L, B, eta0, both, ps, barrier, extra)
            wide = np.flatnonzero(lp >= lp.max() - _CORE_LOG)
            a, b = both[wide[0]], both[wide[-1]]
            raise InputError(f"pi: the grid [{pi[0]:g}, {pi[-1]:g}] misses mode {i + 1}'s law, whose core (the "
                             f"density above 1e-3 of its peak) is [{a:.4g}, {b:.4g}] around pi* = {ps:.4g}; give a "
                             "grid that holds it" + ("" if mode is not None else
                                                     ", or mode= for one mode's law on a grid of its own"))
        _check_resolved(pi, a, b, i)
        with np.errstate(invalid="ignore"):
            vals = np.interp(pi, fine, np.where(np.isfinite(logp), logp, -1e300))
        if not np.any(vals > -1e299):
            raise InputError(f"pi: the grid [{pi[0]:g}, {pi[-1]:g}] holds none of mode {i + 1}'s law (it lies "
                             f"past a point where the noise vanishes, or below the barrier; the law sits around "
                             f"{ps:g})")
        p = np.exp(vals - vals.max())
        norm = np.trapezoid(p, pi)
        if not (np.isfinite(norm) and norm > 0 and np.all(np.isfinite(p / norm))):
            raise InputError(f"pi: the grid [{pi[0]:g}, {pi[-1]:g}] is too narrow to normalize mode {i + 1}'s "
                             "law in float64")
        out[:, i] = p / norm
    return out


_REFINE_ROUNDS = 64      # refinements of the fine grid around the law's core (each ~1e3x finer): down to
                         # float64's resolution from any range (a grid over 1e89 for a law 1e-8 wide
                         # at 3 needs ~33; 12 stopped short and the law was "unresolved")
_ROUNDING_NOISE = 1e-20  # c(pi*) at or below this x the largest c(0) on a fixed set: rounding, no noise


def _point_mass_level(modes: EffectiveModes, B: int) -> float:
    """The noise variance at or below which the noise vanishes: 0 online (c = 2 (s - pi)^2 +
    sigma^2 is exact); on a fixed set _ROUNDING_NOISE x the largest c_j(0), since the measured
    moments keep the rounding of the fit (without label noise c_i(s_i) / max_j c_j(0) reached
    6e-26 over 144 teachers, P = 4 to 5000, d = 4 to 16, s spread over 1 to 1e50; relative to
    the mode's own c_i(0), which the old rule used, 1.2 for s = 1e50 beside 1e100)."""
    if modes.P is None:
        return 0.0
    return _ROUNDING_NOISE * float(np.max(_noise_variance(modes, 0.0 * modes.s, B)))


_CORE_LOG = math.log(1e3)   # the core: where the density is at least 1e-3 of its peak
_CORE_POINTS = 256       # fine points the core must hold
_CORE_STEPS = 6          # a caller's grid steps at most 1/6 of the core across it (about 1.2 standard
                         # deviations of a Gaussian law, where the trapezoid rule still normalizes it to ~1e-8)


class UnresolvedLawError(InputError):
    """`stationary_density`: the caller's grid steps over a mode's law (a few grid points across
    it, or none), so the density it returns would be normalized wrongly. `mode` (from 0) and `core`
    = (a, b), where the law's density is at least 1e-3 of its peak, say where a finer grid is needed."""

    def __init__(self, message, mode: int, core: tuple):
        super().__init__(message)
        self.mode, self.core = mode, core


def _check_resolved(pi: np.ndarray, a: float, b: float, i: int) -> None:
    """UnresolvedLawError when the grid pi crosses the core [a, b] of mode i's law with a step
    wider than (b - a) / _CORE_STEPS (a grid that stays out of the core, in a tail, is left alone)."""
    top, bottom = max(a, pi[0]), min(b, pi[-1])
    if top >= bottom and not (pi[0] <= a <= pi[-1] or pi[0] <= b <= pi[-1]):
        return                                           # the grid holds only a tail of the law
    j0 = max(int(np.searchsorted(pi, a, side="right")) - 1, 0)
    j1 = min(int(np.searchsorted(pi, b, side="left")), pi.size - 1)
    step = float(np.max(np.diff(pi[j0:j1 + 1]))) if j1 > j0 else float(pi[-1] - pi[0])
    if step > (b - a) / _CORE_STEPS:
        raise UnresolvedLawError(
            f"pi: the grid steps by up to {step:.3g} across mode {i + 1}'s law, which is about {b - a:.3g} wide "
            f"(its density is above 1e-3 of its peak on [{a:.8g}, {b:.8g}]): the density would be normalized "
            f"wrongly; give steps of at most {(b - a) / _CORE_STEPS:.3g} there", mode=i, core=(float(a), float(b)))


def _log_density_on(one: EffectiveModes, kappa: float, L: int, B: int, eta0: float, fine: np.ndarray,
                    ps: float, barrier, extra=None) -> np.ndarray:
    """The stationary log density (unnormalized, 0 at the fixed point ps, which `fine` holds) on
    the increasing grid `fine`, -inf past a wall and below the barrier's top. extra: None, or a
    function of the grid giving a drift added to mu (the cross-mode drift), as 2 extra / D in g."""
    g, rest = _log_density_terms(one, kappa, L, B, eta0, fine)
    if extra is not None:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            D = _diffusion(one, fine[:, None], eta0, B, L)[:, 0]
            g = np.where(np.isfinite(g) & (D > 0), g + 2.0 * extra(fine) / D, g)
    with np.errstate(invalid="ignore"):
        k0 = int(np.searchsorted(fine, ps))
        F = np.zeros_like(fine)                                   # F(pi*) = 0, -inf past a wall
        for sl in (slice(k0, None), slice(k0, None, -1) if k0 else slice(0, 1)):
            x, y = fine[sl], g[sl]                                # outward from pi*
            F[sl] = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(x))])
        logp = F + rest
    logp = np.where(np.isfinite(logp), logp, -np.inf)
    if barrier is not None:
        logp[fine < barrier] = -np.inf
    return logp


def _log_density_terms(one: EffectiveModes, kappa: float, L: int, B: int, eta0: float, x: np.ndarray):
    """(g, rest) on the mode strengths x (> 0) of the one-mode `one`: the stationary log density is
    int_{pi*}^{x} g + rest, g = 2 mu / D without the Ito term = (2B / (eta L)) (s - q - kappa
    q^(2/L - 1)) / (q^(2-2/L) c(q)) (-inf where the noise vanishes: a wall) and
    rest = ((L - 1) / L) log x - log D (in logs: D ~ x^(4 - 4/L) underflows for tiny x). At L = 1
    x may be negative (no powers of x: g = (2B / eta) (s - x - kappa x) / c, rest = -log D)."""
    si = float(one.s[0])
    c = noise_variance(one, x[:, None], B)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if L == 1:          # pi = a, any sign: mu = s - pi - kappa pi, D = eta c / B (no powers of pi)
            g = (2 * B / eta0) * (si - x - kappa * x) / c
            return np.where(c > 0, g, -np.inf), -(math.log(eta0 / B) + np.log(c))
        g = (2 * B / (eta0 * L)) * (si - x - kappa * x ** (2.0 / L - 1.0)) / (x ** (2 - 2 / L) * c)
        g = np.where(c > 0, g, -np.inf)
        log_d = math.log(eta0 / B * L ** 2) + (4 - 4 / L) * np.log(x) + np.log(c)
        return g, (L - 1) / L * np.log(x) - log_d


_BARRIER_PER_DECADE = 400       # points a decade of the barrier search (the depth to ~1e-5 relative)
_BARRIER_DECADES = 30           # decades below pi* searched at a time


def _barrier_top(one: EffectiveModes, ps: float, kappa: float, L: int, B: int, eta0: float, extra=None):
    """(pi_b, depth): the top of the barrier between the well around the fixed point ps and
    pi = 0, i.e. the stationary log density's minimum over (0, ps], and the log-ratio of the
    density at ps to that at pi_b; (None, None) when the density falls toward 0 below ps (no
    barrier: nothing to cut). Where the noise vanishes below ps (a wall: the law ends there) the
    minimum is taken above the wall, (None, None) if the density falls toward it.

    The search uses its own grid, geometric from ps down (`_BARRIER_PER_DECADE` points a decade,
    the log density integrated by the trapezoid rule in log pi), extended by `_BARRIER_DECADES`
    decades until the density rises toward 0 at its bottom (it does for L > 2, where the decay's
    pull -kappa pi^(2/L - 1) dominates g; at L = 2 when the noise is strong) or float64's range
    ends: the answer does not depend on any caller's grid. extra: the cross-mode drift, as in
    `_log_density_on`."""
    log_ps, du = math.log(ps), math.log(10.0) / _BARRIER_PER_DECADE
    log_floor = math.log(1e-300)
    decades = _BARRIER_DECADES
    while True:
        n = int(decades * _BARRIER_PER_DECADE)
        u = log_ps - du * np.arange(n, -1, -1)                   # increasing, u[-1] = log ps
        u = u[u >= log_floor]
        x = np.exp(u)
        x[-1] = ps
        g, rest = _log_density_terms(one, kappa, L, B, eta0, x)
        if extra is not None:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                D = _diffusion(one, x[:, None], eta0, B, L)[:, 0]
                g = np.where(np.isfinite(g) & (D > 0), g + 2.0 * extra(x) / D, g)
        with np.errstate(invalid="ignore", over="ignore"):
            gx = g * x                                          # dF/du
            inc = 0.5 * (gx[1:] + gx[:-1]) * np.diff(u)
            F = -np.concatenate([np.cumsum(inc[::-1])[::-1], [0.0]])     # int_{ps}^{x} g, F(ps) = 0
            logp = F + rest
        bad = np.flatnonzero(np.isneginf(g) | np.isnan(logp))   # walls: no noise there
        if bad.size:                                            # the law ends at the wall nearest ps
            if bad[-1] == x.size - 1:
                return None, None
            logp, x = logp[bad[-1] + 1:], x[bad[-1] + 1:]
            if logp.size < 2:
                return None, None
            j = int(np.argmin(logp))
            return (None, None) if j == 0 else (float(x[j]), float(logp[-1] - logp[j]))
        rises = logp[0] > logp[1]                               # (+inf > anything)
        if rises or u[0] <= log_floor + du:
            break
        decades += _BARRIER_DECADES
    if not rises:                                               # falls toward 0: no barrier
        return None, None
    j = int(np.argmin(logp))
    return float(x[j]), float(logp[-1] - logp[j])


def boltzmann_temperature(model: DeepLinear, data: LinearTeacher, *, eta0: float, batch_size: int,
                          weight_decay: float = 0.0):
    """(r,) T_i = D_i(pi*) / (2 |mu_i'(pi*)|): near the fixed point pi* the stationary law is close
    to exp(-(pi - pi*)^2 / (2 T_i)). Without weight decay pi* = s_i and
    T_i = eta L s_i^(2-2/L) c_i(s_i) / (2B), a Boltzmann law of the mode loss (s - pi)^2 / 2; with
    decay kappa, mu' = L ((1 - 2/L) kappa - pi*^(2-2/L)) (NaN for a mode the decay switches off).
    In logs: D(pi*) overflows where T does not (s = 1e100, sigma = 1e10 at L = 4: D ~ 1e319,
    T ~ 1e168; it was refused naming pi, which the caller did not give); a T beyond
    float64 is an InputError naming singular_values, or label_noise where it dominates c(pi*).
    (At the threshold of decay, where pi* is a double root, mu' = 0 and T is inf.)"""
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    kappa = _decay(eta0, weight_decay)
    modes = effective_modes(data)
    L = model.depth
    star = _fixed_points(modes.s, L, kappa)
    slope = L * ((1.0 - 2.0 / L) * kappa - np.abs(star) ** (2 - 2 / L))
    warn_step(_step_rates(modes.s, L, eta0, kappa), eta0, "boltzmann_temperature", law=True)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_c = _log_noise_variance(modes, star, B)
        log_t = (math.log(eta0 / B) + 2 * math.log(L) + (4 - 4 / L) * np.log(star)
                 + log_c - math.log(2.0) - np.log(np.abs(slope)))
        T = np.exp(log_t)
    if np.any(np.isinf(T) & (slope != 0)):
        i = int(np.argmax(np.isinf(T) & (slope != 0)))
        # label_noise where it makes at least half of c(pi*) (on a fixed set c(pi*) also holds the
        # rounding of the fit, ~1e-30 s^2: s = 1e100 with sigma = 1 named label_noise for it)
        name = ("label_noise" if modes.sigma > 0 and 2 * math.log(modes.sigma) >= log_c[i] - math.log(2.0)
                else "singular_values")
        raise InputError(f"{name}: mode {i + 1}'s Boltzmann temperature (s = {modes.s[i]:g}, label noise "
                         f"{modes.sigma:g}, depth {L}) is 10^{log_t[i] / math.log(10):.0f}, beyond float64; "
                         "rescale the teacher")
    return T


_NO_PEAK_RISES = "no peak: {D} rises to its plateau (no interior maximum along the flow)"
_NO_PEAK_FALLS = "no peak: {D} falls from the start (no interior maximum along the flow)"
_NO_PEAK_DIPS = ("no peak: {D} falls from the start to a minimum, then rises to its plateau (no interior "
                 "maximum along the flow)")
_NO_PEAK_STILL = "no peak: the mode starts where it settles ({D} is constant along the flow)"
_NO_PEAK_ZERO = "no peak: {D} is zero along the flow (no gradient noise: full-batch steps)"
_NO_PEAK_OFF = "no peak: weight decay switches the mode off (it decays to 0)"
_NO_PEAK_OUTSIDE = "no peak in t's range [{lo:g}, {hi:g}]: {D} peaks at t = {at:.6g}"


def _noise_quadratic(modes: EffectiveModes, batch_size: int):
    """(A, T, Lam, fpc), each (r,) but fpc: c_i(pi) = max(A d^2 + 2 T d + Lam, 0) fpc with
    d = s_i - pi, the quadratic `_noise_variance` evaluates (online A = 2, T = 0, Lam = sigma^2,
    fpc = 1; on a fixed set kappa_i - 1, tau_i, lambda_i and (P - B) / (P - 1))."""
    s = np.asarray(modes.s, dtype=np.float64)
    if modes.P is None:
        return np.full_like(s, 2.0), np.zeros_like(s), np.full_like(s, modes.sigma ** 2), 1.0
    P, B = modes.P, batch_size
    return (np.asarray(modes.kappa) - 1.0, np.asarray(modes.tau), np.asarray(modes.lam),
            (P - B) / (P - 1) if P > 1 else 0.0)


def _diffusion_extrema(k: float, A: float, T: float, lam: float, s: float):
    """(r1, r2): the local maximum and minimum in pi > 0 of pi^k c(pi), c = A d^2 + 2 T d + lam,
    d = s - pi (NaN, NaN where there is none; r2 = inf where it falls for good). Its derivative is
    pi^(k-1) Q(pi) with the quadratic Q = (k + 2) A pi^2 - 2 (k + 1)(A s + T) pi + k c(0),
    Q(0) = k c(0) >= 0: pi^k c rises, falls between the two positive roots r1 < r2 of Q when it
    has them, and rises again."""
    a2, b1, cc = (k + 2.0) * A, (k + 1.0) * (A * s + T), k * (A * s * s + 2.0 * T * s + lam)
    if a2 > 0:
        disc = b1 * b1 - a2 * cc
        if b1 > 0 and disc > 0:
            root = b1 + math.sqrt(disc)
            return cc / root, root / a2                   # (the small root without cancellation)
        return math.nan, math.nan
    if b1 > 0:                                            # (A = 0: c linear) Q falls through 0 once
        return cc / (2.0 * b1), math.inf
    return math.nan, math.nan


def _peak_level(k: float, A: float, T: float, lam: float, s: float, start: float, end: float):
    """(the mode strength at which pi^k c(pi) has its interior maximum along the flow from
    `start` to `end` (pi moves monotonically between them), "") or (NaN, the reason there is
    none, with "{D}" for the quantity's name). pi^k c rises in pi on (0, r1) and past r2 and falls
    between (`_diffusion_extrema`; rises everywhere without them), so there is at most one interior
    maximum, r1; without it the quantity rises all the way, falls all the way, or falls to the
    minimum r2 and rises again, as the start's place relative to r1 and r2 says."""
    if start == end:
        return math.nan, _NO_PEAK_STILL
    r1, r2 = _diffusion_extrema(k, A, T, lam, s)
    lo, hi = min(start, end), max(start, end)
    if lo < r1 < hi:
        return r1, ""
    if math.isnan(r1):
        rises_first, dip = end > start, False
    elif end > start:                       # pi rising: D rises with it outside [r1, r2)
        rises_first = not r1 <= start < r2
        dip = not rises_first and r2 < end
    else:                                   # pi falling: D rises in time inside (r1, r2]
        rises_first = r1 < start <= r2
        dip = start > r2 > end
    if rises_first:
        return math.nan, _NO_PEAK_RISES
    return math.nan, _NO_PEAK_DIPS if dip else _NO_PEAK_FALLS


def _peak_window(t):
    """`diffusion_peaks`' t: None, or (t[0], t[-1]) of increasing, finite times >= 0."""
    if t is None:
        return None
    t = _reals("t", t, flat=False)
    if t.ndim != 1 or t.size < 2 or np.any(t < 0) or np.any(np.diff(t) <= 0):
        raise InputError(f"t: the window to look for the peak in: (T,) increasing times >= 0, T >= 2, got "
                         f"{np.array2string(t, threshold=6, precision=4)}")
    return float(t[0]), float(t[-1])


def diffusion_peaks(model: DeepLinear, data: LinearTeacher, *, eta0: float, batch_size: int,
                    t=None, weight_decay: float = 0.0) -> dict:
    """When the diffusion along each mode peaks on the gradient-flow path (with weight decay
    kappa: the decayed flow, learning times to fractions of the fixed point), against when the
    mode is learned.

    Along the flow pi_i moves monotonically from its start to the value it settles at, so D_i
    peaks in time where D_i(pi) peaks in pi over that range. D_i = (eta / B) L^2 pi^(4-4/L) c_i(pi)
    with c_i quadratic in pi, so its extrema in pi are the roots of a quadratic
    (`_diffusion_extrema`): at most one interior maximum, found exactly, and its time is the
    flow's exact time to that level (the quadrature of `learning_times`); the leads are flow
    times between two levels, computed from the earlier one (never a difference of two large
    times: exact also from starts below float range). No time grid is involved.

    D need not have an interior maximum: with label noise strong enough D keeps rising to its
    plateau (online at L = 2, D ~ pi^2 (2 (s - pi)^2 + sigma^2) peaks at
    pi = (3 s - sqrt(s^2 - 4 sigma^2)) / 4 only when sigma < s / 2; the layer scalar's
    D_a ~ pi (2 (s - pi)^2 + sigma^2) at pi = (4 s - sqrt(4 s^2 - 6 sigma^2)) / 6 only when
    sigma < s sqrt(2/3)); from a start above the target it may fall from the start. A local
    maximum below the plateau D rises to later is still the peak. Such a mode's peak time and
    leads are NaN, the reason in "no_peak" ("no_peak_layer" for the layer scalar); so are those
    of a mode the decay switches off.

    Args:
        t: optional window: at least two increasing times >= 0 (InputError naming t else); a
            peak outside [t[0], t[-1]] is reported as NaN with its time in the reason. Default:
            anywhere along the flow. (Only its ends matter: it is not a grid.)

    Returns {"t_peak": (r,) time of the maximum of D_i (function space), "t_peak_layer": (r,)
    time of the maximum of the diffusion of each layer's scalar a_i (D_a = D_i / (L pi^(1-1/L))^2),
    "t_half", "t_90": (r,) times at 50% and 90% of the target, "lead_half", "lead_90": t_half -
    t_peak and t_90 - t_peak (> 0: the diffusion peaks first), "lead_half_layer": t_half -
    t_peak_layer, "no_peak", "no_peak_layer": (r,) why a peak time is NaN ("" where there is
    a peak), "s": the targets}.
    """
    _check_aligned(model, data, "diffusion_peaks")
    eta0, B = _sgd_args(model, data, eta0, batch_size)
    kappa = _decay(eta0, weight_decay)
    window = _peak_window(t)
    modes = effective_modes(data)
    s = modes.s
    t_half = learning_times(model, data, 0.5, weight_decay=kappa)
    t_90 = learning_times(model, data, 0.9, weight_decay=kappa)
    L, lp = model.depth, _log_mode_init(model)
    pi0 = _mode_init(model)                               # 0.0 for a start below float range
    dead = switched_off(model, data, kappa)
    A, T, lam, fpc = _noise_quadratic(modes, B)
    r = s.size
    out = {key: np.full(r, np.nan) for key in ("t_peak", "t_peak_layer", "lead_half", "lead_90",
                                               "lead_half_layer")}
    why = {"no_peak": [""] * r, "no_peak_layer": [""] * r}
    # D ~ pi^(4 - 4/L) c(pi) and D_a = D / (L pi^(1 - 1/L))^2 ~ pi^(2 - 2/L) c(pi)
    kinds = (("t_peak", "no_peak", "D", 4.0 - 4.0 / L, (("lead_half", t_half, 0.5), ("lead_90", t_90, 0.9))),
             ("t_peak_layer", "no_peak_layer", "D_a", 2.0 - 2.0 / L, (("lead_half_layer", t_half, 0.5),)))
    for i in range(r):
        si = float(s[i])
        if dead[i]:
            why["no_peak"][i] = why["no_peak_layer"][i] = _NO_PEAK_OFF
            continue
        star = _fixed_point(si, L, kappa)
        end = star
        if L > 2 and kappa > 0 and _decay_flow(model, si, kappa).kind == "fixed":
            end = pi0                                     # (a start on the barrier stays there)
        zero = fpc == 0 or (A[i] == 0 and T[i] == 0 and lam[i] == 0)
        for t_key, why_key, name, k, leads in kinds:
            level, reason = ((math.nan, _NO_PEAK_ZERO) if zero
                             else _peak_level(k, A[i], T[i], lam[i], si, pi0, end))
            if reason:
                why[why_key][i] = reason.format(D=name)
                continue
            t_peak = _flow_time(si, L, kappa, lp, level / star)
            if window is not None and not window[0] <= t_peak <= window[1]:
                why[why_key][i] = _NO_PEAK_OUTSIDE.format(lo=window[0], hi=window[1], D=name, at=t_peak)
                continue
            out[t_key][i] = t_peak
            for lead_key, t_learn, frac in leads:
                if not np.isfinite(t_learn[i]):
                    continue
                # the flow time between the peak's level and the learning level, from the earlier
                if level == frac * star:
                    out[lead_key][i] = 0.0
                elif level < frac * star:
                    out[lead_key][i] = _flow_time(si, L, kappa, math.log(level), frac)
                else:
                    out[lead_key][i] = -_flow_time(si, L, kappa, math.log(frac * star), level / star)
    return {"t_peak": out["t_peak"], "t_peak_layer": out["t_peak_layer"], "t_half": t_half, "t_90": t_90,
            "lead_half": out["lead_half"], "lead_90": out["lead_90"],
            "lead_half_layer": out["lead_half_layer"], "no_peak": why["no_peak"],
            "no_peak_layer": why["no_peak_layer"], "s": s}


def _has(name: str, value, fields, what: str):
    """value, or an InputError naming `name` when it lacks one of the attributes `fields`."""
    missing = [f for f in fields if not hasattr(value, f)]
    if missing:
        raise InputError(f"{name}: expected {what} (with {', '.join(fields)}), got {type(value).__name__} "
                         f"{value!r:.40} (no {', '.join(missing)})")
    return value


def recorded_setting(result, name: str):
    """A setting a run or SDE result records (`name`: "weight_decay", "depth", "init", ...): its
    info's own entry, else its recorded configuration's train, sde or model section's; None where
    it records none (a hand-built result)."""
    info = getattr(result, "info", None)
    if not isinstance(info, dict):
        return None
    config = info.get("config") or {}
    for where in (info, config.get("train") or {}, config.get("sde") or {}, config.get("model") or {}):
        if where.get(name) is not None:
            return where[name]
    return None


def staircase_figure(model, data, run=None, sde=None, t=None, title=None, weight_decay: float = 0.0):
    """Mode strengths and population loss against time: gradient flow (black), SDE band,
    networks (median and band), plateau levels (dotted; at depth 1, which learns every mode at one
    rate, the start and the end alone).

    run: networks' records (.t, .modes, .test_loss) or None; sde: a `ModeSDE` or None; t: the
    flow's times (default: run.t, else up to twice the slowest mode's t_90, which needs a mode
    that starts below 90% of its target: InputError naming init_scale otherwise); weight_decay:
    kappa of the flow and the plateaus (the modes settle at `fixed_points`, a switched-off mode
    stays in every plateau). A run or SDE that records another weight decay is refused, naming
    weight_decay (the undecayed flow and plateaus were drawn beside decayed networks)."""
    _check_aligned(model, data, "staircase_figure")
    kappa = checks.real("weight_decay", weight_decay, nonnegative=True)
    if run is not None:
        _has("run", run, ("t", "modes", "test_loss"), "the networks' records (networks.train)")
    if sde is not None:
        _has("sde", sde, ("t", "modes"), "a ModeSDE (mode_sde)")
    for name, result in (("run", run), ("sde", sde)):
        recorded = recorded_setting(result, "weight_decay")
        if recorded is not None and float(recorded) != kappa:
            raise InputError(f"weight_decay: the {name} trained with weight decay {recorded:g}, the figure's flow "
                             f"would be drawn with {kappa:g}; pass weight_decay={recorded:g}")
    if t is None and run is None:
        t_90 = learning_times(model, data, 0.9, weight_decay=kappa)
        if not np.any(np.isfinite(t_90)):
            raise InputError(f"init_scale: the default time axis runs to twice the slowest mode's t_90, but "
                             f"from init_scale^depth = {model.init_scale:g}^{model.depth} every mode starts at or "
                             "above 90% of its target (it is never learned); pass t")
        t = np.geomspace(1e-2, 2 * np.nanmax(t_90), 400)
    elif t is None:
        t = run.t
    pi = mode_flow(model, data, t, weight_decay=kappa)
    fig, axes = new_figure(1, 2, size=(11, 4))
    for i in range(pi.shape[1]):
        c = f"C{i % 10}"
        axes[0].plot(t, pi[:, i], color="k", lw=1, label="gradient flow" if i == 0 else None)
        if run is not None:
            lo, med, hi = np.nanpercentile(run.modes[..., i], [10, 50, 90], axis=0)
            axes[0].plot(run.t, med, color=c, label=f"mode {i + 1} (networks)")
            axes[0].fill_between(run.t, lo, hi, color=c, alpha=0.2)
        if sde is not None:
            lo, hi = np.nanpercentile(sde.modes[..., i], [10, 90], axis=0)
            axes[0].plot(sde.t, lo, color=c, ls="--", lw=0.8)
            axes[0].plot(sde.t, hi, color=c, ls="--", lw=0.8)
    settled = (None if not kappa else
               np.where(switched_off(model, data, kappa), np.nan, fixed_points(model, data, kappa)))
    pl = plateaus(data, settled)
    # (depth 1 learns every mode at one rate, the noise pairs of a fixed set too: its start and end)
    for lev in pl["levels"] if model.depth > 1 else (pl["levels"][0], pl["end"]):
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
