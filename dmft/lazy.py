"""The lazy limit gamma0 -> 0 in closed form (docs/derivations.md, section 2; docs/conventions.md).

The NTK stays at K0 and the train error obeys

    gradient descent:  Delta_k = (I - eta0 K0 / P)^k Delta_0
    gradient flow:     Delta(t) = exp(-K0 t / P) Delta_0

with test predictions f_* = f_*(0) + K0_{*,train} S / P, S = int_0^t Delta ds.
Both are evaluated in the eigenbasis of K0 with expm1/log1p, so singular
kernels and tiny eigenvalues need no inverse.

The train loss of this linear model never rises at a stable step (each eigenmode of the
error shrinks by |1 - eta0 lambda / P| <= 1, or decays under flow); past the step's
stability, eta0 lambda_max / P > 2, a mode grows geometrically and stays finite for hundreds
of steps (1e140 after 100). `loss_rose` marks the saves from the first rise on: there the
lazy method diverges, as the other methods do (`DivergenceError` in `solve`, NaN and
`diverged_step` in `solve_batch`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .kernels import alignment
from .runner import count_trace

__all__ = ["lazy_path", "lazy_records", "lazy_records_compiled", "loss_rose"]


@functools.partial(jax.jit, static_argnames=("dynamics",))
def lazy_path(k0_tr, delta0, steps, eta0, *, dynamics: str):
    """Delta and S = int Delta dt at the given step counts, with K fixed at K0.

    Args:
        k0_tr: (P, P) lazy NTK on the training points.
        delta0: (P, C) error at t = 0.
        steps: (T,) integer step counts; t = steps * eta0.
        eta0: step size in DMFT time units.
        dynamics: "gd" or "flow".

    Returns:
        (delta, s, rate): delta and s each (T, P, C); rate the largest of K0's rates, lambda_max / P
        (gradient descent is stable while eta0 rate <= 2).
    """
    count_trace("lazy.lazy_path")
    p = k0_tr.shape[0]
    lam, vec = jnp.linalg.eigh(k0_tr)
    x = (jnp.clip(lam, 0.0, None) / p)[None, :]                      # rates of K0 / P
    coef = vec.T @ delta0                                            # (P, C)
    k = jnp.asarray(steps)[:, None]
    t = k * eta0
    if dynamics == "gd":
        base = 1.0 - eta0 * x
        stable = (base > 0) & (base <= 1)
        logb = jnp.log(jnp.where(base == 0, 1.0, jnp.abs(base)))
        sign = jnp.where((base < 0) & (k % 2 == 1), -1.0, 1.0)
        power = jnp.where(base == 0, (k == 0) * 1.0, sign * jnp.exp(k * logb))   # (1 - eta0 x)^k
        one_minus = jnp.where(stable, -jnp.expm1(k * jnp.log1p(-eta0 * jnp.where(stable, x, 0.0))),
                              1.0 - power)
    else:
        power = jnp.exp(-x * t)
        one_minus = -jnp.expm1(-x * t)
    ratio = jnp.where(x > 0, one_minus / jnp.where(x > 0, x, 1.0), t)   # (1 - p) / x -> t
    delta = jnp.einsum("pq,tq,qc->tpc", vec, power, coef)
    s = jnp.einsum("pq,tq,qc->tpc", vec, ratio, coef)
    return delta, s, jnp.max(x)


def lazy_records(su, gamma0, eta0, saves, *, dynamics: str, trained: bool, has_test: bool):
    """Records of the lazy closed form at the saved step counts (traceable: gamma0 and
    eta0 may be traced, as in `dmft.solve_batch`). `su` is `dmft.geometry.lazy_setup`'s.

    Returns (records, delta, s, diverged): delta and s = int Delta dt, each (T, P, C), and
    diverged (T,) True from the save where gradient descent past its stability first shows
    (`loss_rose`).
    """
    P = su["P"]
    delta, s, rate = lazy_path(su["k0"][:P], su["y"] - su["f0"][:P], saves, eta0, dynamics=dynamics)
    diverged = (loss_rose(jnp.mean(delta ** 2, axis=(1, 2)), jnp.mean(su["y"] ** 2))
                & (eta0 * rate > 2) if dynamics == "gd" else jnp.zeros(saves.shape, bool))
    rec = {"f_train": su["y"][None] - delta}
    if has_test:
        rec["f_test"] = su["f0"][P:][None] + jnp.einsum("ap,tpc->tac", su["k0"][P:], s) / P
    rec["alignment"] = jnp.full(saves.shape, alignment(su["k0"][:P], su["y"]))
    # linearized weights: delta_a = gamma0/P sum_mu phi(u_mu) S_mu, similarly for z
    scale = (jnp.asarray(gamma0, s.dtype) / P) ** 2     # (an array: a huge gamma0 gives inf, not OverflowError)
    gk = su["g0"][:P] * su["kx_all_tr"][:P]
    rec["sq_weight_change.first_layer"] = scale * jnp.einsum("tpc,pq,tqc->t", s, gk, s)
    rec["sq_weight_change.readout"] = (scale * jnp.einsum("tpc,pq,tqc->t", s, su["phi0"][:P], s)
                                       if trained else jnp.zeros(saves.shape, s.dtype))
    return rec, delta, s, diverged


_SETUP_ARRAYS = ("k0", "y", "f0", "g0", "kx_all_tr", "phi0")


@functools.partial(jax.jit, static_argnames=("P", "dynamics", "trained", "has_test"))
def _records_program(arrays, gamma0, eta0, saves, *, P: int, dynamics: str, trained: bool, has_test: bool):
    return lazy_records({**arrays, "P": P}, gamma0, eta0, saves, dynamics=dynamics, trained=trained,
                        has_test=has_test)


def lazy_records_compiled(su, gamma0, eta0, saves, *, dynamics: str, trained: bool, has_test: bool):
    """`lazy_records` as one compiled program (per shape, dynamics and readout; gamma0, eta0 and
    the save steps are its arguments): run op by op, a first lazy solve compiled some 30 small
    programs (about 1.5 s at a small size)."""
    arrays = {k: su[k] for k in _SETUP_ARRAYS}
    return _records_program(arrays, jnp.asarray(gamma0, su["k0"].dtype), jnp.asarray(eta0, su["k0"].dtype),
                            jnp.asarray(saves), P=su["P"], dynamics=dynamics, trained=trained, has_test=has_test)


# a rise of the train loss beyond rounding: relative to its start (RISE_RTOL, or RISE_EPS of the
# float type's epsilon if larger: 1e-9 in float64, 1.2e-4 in float32), and to the targets' scale
RISE_RTOL, RISE_EPS, RISE_ATOL = 1e-9, 1e3, 1e-24


def loss_rose(loss, y_ms):
    """(T,) bool, True from the first save whose train loss `loss` (T,) exceeds its value at
    t = 0 beyond rounding (see RISE_RTOL; `RISE_ATOL` of the targets' mean square `y_ms`): the
    lazy model's divergence (see the module docstring; `lazy_records` asks it only of gradient
    descent past its stability, where rounding cannot read as a rise). numpy or jax arrays."""
    xp = jnp if isinstance(loss, jax.Array) else np
    rtol = max(RISE_RTOL, RISE_EPS * float(np.finfo(loss.dtype).eps))
    up = loss > loss[0] * (1 + rtol) + RISE_ATOL * y_ms
    return xp.cumsum(up) > 0
