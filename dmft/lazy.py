"""The lazy limit gamma0 -> 0 in closed form (docs/derivations.md, section 2; docs/conventions.md).

The NTK stays at K0 and the train error obeys

    gradient descent:  Delta_k = (I - eta0 K0 / P)^k Delta_0
    gradient flow:     Delta(t) = exp(-K0 t / P) Delta_0

with test predictions f_* = f_*(0) + K0_{*,train} S / P, S = int_0^t Delta ds.
Both are evaluated in the eigenbasis of K0 with expm1/log1p, so singular
kernels and tiny eigenvalues need no inverse.

Minibatch SGD (batch size B, conditioned on the batch sequence as the other methods are,
docs/conventions.md) is kernel SGD with K0: with W_k = P / B on step k's batch and 0 elsewhere,

    Delta_{k+1} = Delta_k - eta0 K0 W_k Delta_k / P,    S_{k+1} = S_k + eta0 W_k Delta_k,

stepped exactly (`lazy_sgd_path`: the batch's columns of K0, O(P B C) a step; `lazy_sgd_run`
steps the same recursion through `dmft.runner.run_saved`, so that `dmft.solve` shows progress,
acts on an interruption within seconds and names the first non-finite step), with the same
test predictions and linearized weights from S. Its train loss may rise at a stable step (a
batch's step can raise the loss on the other points), so only non-finite values and the
runaway rule (`dmft.runner.ran_away`) mark its divergence, and `dmft.solve` records its
stability (`info["stable"]`) as None: not known (a stable full-batch step does not make the batch
steps stable).

The train loss of this linear model never rises at a stable step (each eigenmode of the
error shrinks by |1 - eta0 lambda / P| <= 1, or decays under flow); past the step's
stability, eta0 lambda_max / P > 2, a mode grows geometrically and stays finite for hundreds
of steps (1e140 after 100). `loss_rose` marks the saves from the first rise on: there the
lazy method diverges, as the other methods do (`DivergenceError` in `solve`, NaN and
`diverged_step` in `solve_batch`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .kernels import alignment
from .schedule import batch_indices
from .runner import count_trace, finite_flag, run_saved, scan_records

__all__ = ["lazy_path", "lazy_sgd_path", "lazy_sgd_run", "lazy_records", "lazy_records_compiled", "loss_rose"]


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


class _SGDStatic(NamedTuple):
    P: int
    batch: int


class _SGDState(NamedTuple):
    k: jax.Array          # steps taken
    bad: jax.Array        # first step whose update was not finite (-1: none)
    delta: jax.Array      # (P, C) train error
    s: jax.Array          # (P, C) sum_k eta0 W_k Delta_k


def _sgd_step(static: _SGDStatic, ctx, st: _SGDState, drive):
    """One step of `lazy_sgd_path`'s recursion (`runner.run_saved`'s step)."""
    count_trace("lazy.sgd_step")
    k0_tr, eta0, batch_key = ctx
    B = static.batch
    idx = batch_indices(batch_key, st.k, static.P, B)
    d_b = st.delta[idx]
    delta = st.delta - (eta0 / B) * (k0_tr[:, idx] @ d_b)
    s = st.s.at[idx].add((eta0 * static.P / B) * d_b)
    return _SGDState(st.k + 1, finite_flag(st.k, st.bad, st.delta, delta, s), delta, s)


def _sgd_record(static: _SGDStatic, ctx, st: _SGDState):
    return {"delta": st.delta, "s": st.s}


def lazy_sgd_path(k0_tr, delta0, saves, eta0, batch_key, batch: int):
    """Delta and S = sum_k eta0 W_k Delta_k at the saved step counts `saves` (T,) (starting at
    0) under minibatch SGD with K fixed at K0: each step uses the batch's columns of K0
    (`dmft.schedule.batch_indices(batch_key, k, P, batch)`, the sequence the other methods and
    the networks draw). Traceable (`runner.scan_records` of `lazy_sgd_run`'s step); returns
    (delta, s), each (T, P, C)."""
    saves = jnp.asarray(saves)
    start = _SGDState(saves[0].astype(jnp.int32), jnp.asarray(-1, jnp.int32), delta0, jnp.zeros_like(delta0))
    _, rec = scan_records(_sgd_step, _sgd_record, _SGDStatic(int(k0_tr.shape[0]), int(batch)),
                          (k0_tr, eta0, batch_key), start, jnp.diff(saves))
    return (jnp.concatenate([start.delta[None], rec["delta"]]), jnp.concatenate([start.s[None], rec["s"]]))


def lazy_sgd_run(k0_tr, delta0, gaps, eta0, batch_key, batch: int, *, progress: bool = False):
    """`lazy_sgd_path` at step 0 and after each interval of `gaps`, through `runner.run_saved`
    (the same steps: under a progress bar cut into calls of about `runner.CALL_SECONDS`, so that
    Ctrl-C acts within seconds). Returns (delta, s), each (T, P, C), as numpy arrays.

    Raises:
        DivergenceError: at the first step whose error or sum is not finite; `.partial` holds
            "delta" and "s" at the saves before it.
    """
    P = k0_tr.shape[0]
    eta0 = jnp.asarray(eta0, k0_tr.dtype)
    start = _SGDState(jnp.asarray(0, jnp.int32), jnp.asarray(-1, jnp.int32), delta0, jnp.zeros_like(delta0))
    rec, _, _ = run_saved(_sgd_step, _sgd_record, _SGDStatic(int(P), int(batch)), (k0_tr, eta0, batch_key),
                          start, gaps=gaps, progress=progress, label="lazy SGD")
    return rec["delta"], rec["s"]


def lazy_records(su, gamma0, eta0, saves, *, dynamics: str, trained: bool, has_test: bool,
                 batch_key=None, batch: int = 0, path=None):
    """Records of the lazy closed form at the saved step counts (traceable: gamma0 and
    eta0 may be traced, as in `dmft.solve_batch`). `su` is `dmft.geometry.lazy_setup`'s.
    batch > 0: minibatch SGD of that size on the sequence `batch_key` (`lazy_sgd_path`), or its
    (delta, s) given as `path` (`lazy_sgd_run`'s).

    Returns (records, delta, s, diverged): delta and s = int Delta dt, each (T, P, C), and
    diverged (T,) True from the save where gradient descent past its stability first shows
    (`loss_rose`; never under SGD, whose loss may rise: the caller's runaway rule judges it).
    """
    P = su["P"]
    if batch:
        delta, s = path if path is not None else lazy_sgd_path(su["k0"][:P], su["y"] - su["f0"][:P], saves,
                                                               eta0, batch_key, batch)
        diverged = jnp.zeros(saves.shape, bool)
    else:
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


@functools.partial(jax.jit, static_argnames=("P", "dynamics", "trained", "has_test", "batch"))
def _records_program(arrays, gamma0, eta0, saves, batch_key, path, *, P: int, dynamics: str, trained: bool,
                     has_test: bool, batch: int):
    return lazy_records({**arrays, "P": P}, gamma0, eta0, saves, dynamics=dynamics, trained=trained,
                        has_test=has_test, batch_key=batch_key, batch=batch, path=path)


def lazy_records_compiled(su, gamma0, eta0, saves, *, dynamics: str, trained: bool, has_test: bool,
                          batch_key=None, batch: int = 0, path=None):
    """`lazy_records` as one compiled program (per shape, dynamics, readout and batch size;
    gamma0, eta0, the save steps and the batch key are its arguments): run op by op, a first
    lazy solve compiled some 30 small programs (about 1.5 s at a small size). Under SGD `path`
    may give (delta, s) from `lazy_sgd_run`."""
    arrays = {k: su[k] for k in _SETUP_ARRAYS}
    if batch_key is None:
        batch_key = jax.random.key(0)                  # (unused by full-batch descent)
    return _records_program(arrays, jnp.asarray(gamma0, su["k0"].dtype), jnp.asarray(eta0, su["k0"].dtype),
                            jnp.asarray(saves), batch_key, path, P=su["P"], dynamics=dynamics, trained=trained,
                            has_test=has_test, batch=int(batch))


# a rise of the train loss beyond rounding: relative to its start (RISE_RTOL, or RISE_EPS of the
# float type's epsilon if larger: 1e-9 in float64, 1.2e-4 in float32), and to the targets' scale
RISE_RTOL, RISE_EPS, RISE_ATOL = 1e-9, 1e3, 1e-24


def loss_rose(loss, y_ms):
    """(T,) bool, True from the first save whose train loss `loss` (T,) exceeds the lowest value
    saved before it beyond rounding (see RISE_RTOL; `RISE_ATOL` of the targets' mean square
    `y_ms`): the lazy model's divergence (see the module docstring; `lazy_records` asks it only
    of gradient descent past its stability, where rounding cannot read as a rise). Past its
    stability the loss can fall for a while (the stable modes') before the growing mode shows:
    its first rise is from its running minimum, well below its value at t = 0. numpy or jax
    arrays."""
    xp = jnp if isinstance(loss, jax.Array) else np
    rtol = max(RISE_RTOL, RISE_EPS * float(np.finfo(loss.dtype).eps))
    low = jax.lax.cummin(loss) if xp is jnp else np.minimum.accumulate(loss)
    up = loss > low * (1 + rtol) + RISE_ATOL * y_ms
    return xp.cumsum(up) > 0
