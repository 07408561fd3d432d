"""Run a pure step function over time and record observables at save points.

A solver supplies two pure functions of (static, ctx, state, ...):

    step(static, ctx, state, drive_k) -> state     # one step of size eta0
    record(static, ctx, state) -> dict of arrays   # observables at a save point

`static` is a hashable NamedTuple (shapes, flags), `ctx` a pytree of arrays
(data, model scalars, samples), `state` a pytree carrying at least the
integer leaves `k` (step count) and `bad` (first step whose output was not
finite, or -1). The loop is one `lax.scan` over save intervals around a
`lax.scan` of `save_every` steps, compiled once per (solver, static, chunk
length) and called in chunks so that long runs can show progress and stop
at the first non-finite value.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DivergenceError", "NotConverged", "run_saved", "scan_records", "TRACE_COUNTS"]

# Number of times each jitted solver core was traced (that is, compiled).
TRACE_COUNTS: dict[str, int] = {}


def count_trace(name: str) -> None:
    """Called inside jitted functions: runs only while tracing."""
    TRACE_COUNTS[name] = TRACE_COUNTS.get(name, 0) + 1


class DivergenceError(FloatingPointError):
    """A solve produced NaN or inf. `.step` is the first bad step, `.partial`
    holds what was recorded before it (a dict of arrays), `.cause` says which
    quantity went non-finite."""

    def __init__(self, message, step=None, cause=None, partial=None):
        super().__init__(message)
        self.step = step
        self.cause = cause
        self.partial = partial


class NotConverged(RuntimeError):
    """A self-consistent iteration stopped at max_iter above tolerance.
    `.residuals` holds the residual history and `.solution` the last iterate."""

    def __init__(self, message, residuals=None, solution=None):
        super().__init__(message)
        self.residuals = residuals
        self.solution = solution


def scan_records(step, record, static, ctx, state, save_every: int, n_intervals: int, drive=None):
    """`n_intervals` intervals of `save_every` steps, recording after each (traceable).

    Returns (final state, records with a leading axis of length n_intervals)."""
    def one_step(s, d):
        return step(static, ctx, s, d), None

    def interval(s, d):
        s, _ = jax.lax.scan(one_step, s, d, length=save_every)
        return s, record(static, ctx, s)

    return jax.lax.scan(interval, state, drive, length=n_intervals)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _advance(step, record, static, save_every, n_intervals, ctx, state, drive):
    count_trace(f"{step.__module__}.{step.__name__}")
    return scan_records(step, record, static, ctx, state, save_every, n_intervals, drive)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _record(record, static, ctx, state):
    return record(static, ctx, state)


def _stack(records):
    keys = records[0].keys()
    return {k: np.concatenate([np.asarray(r[k]) for r in records], axis=0) for k in keys}


def _first_bad(state) -> int:
    bad = np.asarray(state.bad)
    bad = bad[bad >= 0]
    return int(bad.min()) if bad.size else -1


def run_saved(step, record, static, ctx, state, *, save_every: int, n_intervals: int,
              drive=None, progress: bool = False, label: str = "solve",
              stop_on_nonfinite: bool = True):
    """Record at step 0 and after every `save_every` steps, `n_intervals` times.

    Args:
        drive: None, or an array with leading axes (n_intervals, save_every)
            fed to `step` one slice per step (used by the iterate solver).
        progress: show a progress bar (tqdm) over steps; the run is then cut
            into about 20 calls (at most two compiled chunk lengths).
        stop_on_nonfinite: raise at the first bad step (solvers); with False the
            run carries on and `state.bad` tells which members went bad (ensembles).

    Returns:
        (records, state, seconds) where records maps names to arrays with a
        leading time axis of length n_intervals + 1.

    Raises:
        DivergenceError: after the first chunk whose state reports a bad step.
    """
    t0 = time.perf_counter()
    records = [jax.tree_util.tree_map(lambda a: np.asarray(a)[None], _record(record, static, ctx, state))]
    chunk = -(-n_intervals // 20) if progress else n_intervals
    bar = _progress_bar(n_intervals * save_every, label) if progress else None
    done = 0
    while done < n_intervals:
        n = min(chunk, n_intervals - done)
        d = None if drive is None else jax.tree_util.tree_map(lambda a: a[done:done + n], drive)
        state, rec = _advance(step, record, static, save_every, n, ctx, state, d)
        records.append(jax.tree_util.tree_map(np.asarray, rec))
        done += n
        if bar is not None:
            bar.update(n * save_every)
        bad = _first_bad(state) if stop_on_nonfinite else -1
        if bad >= 0:
            if bar is not None:
                bar.close()
            raise DivergenceError(
                f"{label}: non-finite output at step {bad} (t = step * eta0): the prediction "
                "error Delta = y - f overflowed. Lower eta0 or gamma0, or check the data scale. "
                f"Records up to step {done * save_every} are in .partial.",
                step=bad, cause="non-finite prediction error Delta", partial=_stack(records))
    if bar is not None:
        bar.close()
    return _stack(records), state, time.perf_counter() - t0


def _progress_bar(total, label):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is a nicety, never a requirement
        return None
    return tqdm(total=total, desc=label, unit="step", leave=False)


def finite_flag(k, bad, value):
    """Update the first-bad-step marker with the finiteness of `value` at step k."""
    ok = jnp.all(jnp.isfinite(value))
    return jnp.where((bad < 0) & ~ok, k, bad)
