"""Run a pure step function over time and record observables at save points.

A solver supplies two pure functions of (static, ctx, state, ...):

    step(static, ctx, state, drive_k) -> state     # one step of size eta0
    record(static, ctx, state) -> dict of arrays   # observables at a save point

`static` is a hashable NamedTuple (shapes, flags), `ctx` a pytree of arrays
(data, model scalars, samples), `state` a pytree carrying at least the
integer leaves `k` (step count) and `bad` (first step whose output was not
finite, or -1). The loop is one `lax.scan` over save intervals (their lengths,
`dmft.Schedule.gaps`, are an array, so any save grid works) around a
`lax.fori_loop` of steps, compiled once per (solver, static, number of
intervals per call) and called in chunks so that long runs can show progress
and stop at the first non-finite value.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from .errors import DivergenceError, NotConverged

__all__ = ["DivergenceError", "NotConverged", "run_saved", "scan_records", "next_call", "kept_note", "TRACE_COUNTS",
           "count_trace", "finite_flag", "first_nonfinite", "progress_bar", "exact_products",
           "RUNAWAY", "ran_away", "runaway_bound", "first_runaway", "memory_maps", "drop_compiled_if_crowded",
           "CALL_SHARE", "RECORD_MAP_VALUES", "over_members"]

# Number of times each jitted solver core was traced (that is, compiled).
TRACE_COUNTS: dict[str, int] = {}


def exact_products(fn):
    """Run `fn` with every matrix product in the full precision of its dtype.

    By default JAX lets a GPU multiply float32 matrices in TF32 (a 10-bit mantissa): on an
    H200 that moved the precision="mixed" Kumar et al. closure by 4e-5 relative (6e-8 on a
    CPU) and doubled the error of a linear forward solve. The functions that run solvers,
    trainers and predictors (`run_plan`, `BatchProgram`, `Trajectory.predict`,
    `networks.train`, `train_deep_linear`) and the public kernel helpers are wrapped; `solve`,
    `solve_batch` and `sgd_mean` go through them. So "float32" means IEEE float32 on every
    device; float64 and CPUs are unaffected (on a TPU, float32 at "highest" is several times
    slower than its default). Scoped to the call (a context, not a global setting; compiled programs are
    cached per precision). A precision the caller set stands: to trade accuracy for speed on a
    GPU, call inside `jax.default_matmul_precision("tensorfloat32")`.
    """
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        if jax.config.jax_default_matmul_precision is not None:      # the caller chose
            return fn(*args, **kwargs)
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)
    return wrapped


def count_trace(name: str) -> None:
    """Called inside jitted functions: runs only while tracing."""
    TRACE_COUNTS[name] = TRACE_COUNTS.get(name, 0) + 1


def scan_records(step, record, static, ctx, state, gaps, drive=None, offset=0):
    """len(gaps) intervals, interval i of gaps[i] steps followed by a record (traceable).

    Args:
        gaps: (n,) integer steps per interval.
        drive: None, or a pytree of arrays with a leading axis over all steps of the run,
            fed to `step` one slice per step (the iterate solver's prescribed Delta).
        offset: the global index of the first step (to index `drive`).

    Returns (final state, records with a leading axis of length n)."""
    def interval(carry, gap):
        def body(_, c):
            s, k = c
            d = None if drive is None else jax.tree_util.tree_map(
                lambda a: jax.lax.dynamic_index_in_dim(a, k, keepdims=False), drive)
            return step(static, ctx, s, d), k + 1

        s, k = jax.lax.fori_loop(0, gap, body, carry)
        return (s, k), record(static, ctx, s)

    (state, _), recs = jax.lax.scan(interval, (state, jnp.asarray(offset, jnp.int32)),
                                    jnp.asarray(gaps, jnp.int32))
    return state, recs


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _advance(step, record, static, ctx, state, gaps, drive, offset):
    count_trace(f"{step.__module__}.{step.__name__}")
    return scan_records(step, record, static, ctx, state, gaps, drive, offset)


# On a CPU a record runs over an ensemble's members (replicas, seeds) one at a time, a loop, where
# one member's fields reach RECORD_MAP_VALUES (units x (train + test points)), and vmapped below.
# Vmapped, XLA:CPU merges the members' field products into one and then transposes the fields for
# the (P, P) kernel sums and the test outputs; one at a time it does not. Measured on a 2-core CPU,
# a record's time looped over vmapped (4 replicas or 8 seeds, tanh and relu, P = 32-256, 0-1000
# test points): float64 fields from 2^18 values (2 MiB) a member, 0.2-0.99 in every case (the
# forward solver with 1024 nodes a replica, P = 64 and 1000 test points 31 -> 8 ms; the demo's
# problem, 32768 nodes, P = 256, 1000 test points, tanh float64 314 -> 186 ms; networks 2048 x 8
# seeds, P = 64, 256 test points 43 -> 15 ms), at 2^17-2^18 values 0.85-1.15, below 0.5-1.5
# (records under 6 ms). The float32 fields of precision="mixed" cross over at the same count, not
# the same bytes: a whole solve with a record every step at 2^18-2^19 values (1-2 MiB), looped
# over vmapped, 0.72-1.01 (sized by bytes from stop 51, they were vmapped there: 1.2-1.35x slower).
# The steps stay vmapped: looped they gained nothing (the forward solver's replica groups already
# keep its fields in cache)
RECORD_MAP_VALUES = 2 ** 18


def over_members(fn, members, values: int):
    """fn over the leading axis of the pytree `members` (an ensemble's replicas or seeds):
    `lax.map` on a CPU where `values`, the size of one member's fields (units x points, train and
    test), reaches RECORD_MAP_VALUES and there is more than one member, else `vmap`; the same
    values either way up to rounding."""
    n = jax.tree_util.tree_leaves(members)[0].shape[0]
    if jax.default_backend() == "cpu" and n > 1 and values >= RECORD_MAP_VALUES:
        return jax.lax.map(lambda m: fn(*m), members)
    return jax.vmap(fn)(*members)


def _stack(records):
    keys = records[0].keys()
    return {k: np.concatenate([np.asarray(r[k]) for r in records], axis=0) for k in keys}


def _first_bad(state) -> int:
    bad = np.asarray(state.bad)
    bad = bad[bad >= 0]
    return int(bad.min()) if bad.size else -1


# With a progress bar (an interactive run) a compiled call is cut to about CALL_SECONDS of steps
# once the step rate is known, and to FIRST_CALL_STEPS before, so that Ctrl-C and SIGTERM (which
# act only when the running XLA call returns) stop a long run within seconds: a run of 5e7 steps
# with log-spaced saves otherwise ignored them for 90 s inside one save interval. The cut changes
# where the state passes through the host, not the step program: on a CPU the numbers are
# bit-identical (on an H200 they agreed to rounding: a GPU compiles each call's program apart).
CALL_SECONDS = 5.0
FIRST_CALL_STEPS = 2000


def next_call(gaps, done, n, pending, cap):
    """(intervals, silent steps) of the next call under a cap of `cap` steps: the `n` intervals
    of the chunk when they fit, else the largest power-of-two number of whole intervals that fits
    (few compiled shapes), else `cap` steps into interval `done` without a record."""
    first = int(gaps[done]) - pending
    if first > cap:
        return 0, cap                                    # leaves >= 1 step for the recorded call
    lengths = np.concatenate([[first], gaps[done + 1:done + n]])
    if lengths.sum() <= cap:
        return n, 0
    fit = int(np.searchsorted(np.cumsum(lengths), cap, side="right"))     # >= 1
    return 1 << (fit.bit_length() - 1), 0


def run_saved(step, record, static, ctx, state, *, gaps, drive=None, progress: bool = False,
              label: str = "solve", stop_on_nonfinite: bool = True,
              cause: str = "the prediction error Delta = y - f"):
    """Record at step 0 and after each interval of `gaps` steps.

    Args:
        gaps: (n,) steps between saves (`dmft.Schedule.gaps`).
        drive: None, or arrays with a leading axis over all steps, fed to `step`
            one slice per step (used by the iterate solver).
        progress: show a progress bar (tqdm) over steps; the run is then cut
            into about 20 calls (at most three compiled lengths: the first call also records
            step 0), and any call longer than about `CALL_SECONDS` into shorter ones (a few
            more compiled lengths), so that an interruption acts within seconds. The numbers
            do not depend on the cut.
        stop_on_nonfinite: raise at the first bad step (solvers); with False the
            run carries on and `state.bad` tells which members went bad (ensembles).
        cause: the quantity whose finiteness `state.bad` tracks, for the error message.

    Returns:
        (records, state, seconds) where records maps names to arrays with a
        leading time axis of length n + 1.

    Raises:
        DivergenceError: after the first chunk whose state reports a bad step.
    """
    t0 = time.perf_counter()
    gaps = np.asarray(gaps, dtype=np.int64)
    n_intervals = int(gaps.size)
    # The record at step 0 is the first call's first record, after an interval of no steps: one
    # compiled program a run, not a second one for that record (a separate program for it took 14%
    # of the suite's compile time: 497 compiles)
    records = []
    chunk = -(-n_intervals // 20) if progress else max(n_intervals, 1)
    bar = progress_bar(int(gaps.sum()), label) if progress else None
    done, offset = 0, 0
    pending = 0                         # steps of interval `done` already taken without a record
    rate, shapes = 0.0, set()           # steps per second from calls of an already compiled shape
    counts = np.concatenate([[0], np.cumsum(gaps)])
    try:
        while not records or done < n_intervals:
            n, silent = min(chunk, n_intervals - done), 0
            if progress and n_intervals:
                cap = max(int(rate * CALL_SECONDS), 1) if rate else FIRST_CALL_STEPS
                n, silent = next_call(gaps, done, n, pending, cap)
            if silent:
                call = np.array([silent])
            elif n:
                call = np.concatenate([[gaps[done] - pending], gaps[done + 1:done + n]])
            else:                                        # no intervals: the record at step 0 alone
                call = np.zeros(0, np.int64)
            first = not records                          # this call also records step 0
            if first:
                call = np.concatenate([[0], call])
            tic = time.perf_counter()
            state, rec = _advance(step, record, static, ctx, state, call, drive, offset)
            steps_now = int(call.sum())
            offset += steps_now
            first_saved = done if first else done + 1
            kept = not silent or first                   # (a silent call records nothing after step 0)
            if silent:
                pending += silent
                if first:
                    records.append(jax.tree_util.tree_map(lambda a: np.asarray(a[:1]), rec))
                jax.block_until_ready(state)
            else:
                records.append(jax.tree_util.tree_map(np.asarray, rec))
                done += n
                pending = 0
            if len(call) in shapes:
                rate = max(rate, steps_now / max(time.perf_counter() - tic, 1e-9))
            shapes.add(len(call))
            if bar is not None:
                bar.update(steps_now)
            bad = _first_bad(state) if stop_on_nonfinite else -1
            if bad >= 0:
                # the update from step `bad` to bad + 1 went bad: the saves after at most `bad` steps are good
                good = int(np.searchsorted(counts, bad, side="right"))
                if kept and good > first_saved:         # a record (a kernel, say) may have overflowed first
                    _check_records({k: v[:good - first_saved] for k, v in records[-1].items()},
                                   first_saved, counts, label, records)
                raise DivergenceError(
                    f"{label}: non-finite output at step {bad} (t = step * eta0): {cause} overflowed. "
                    "Lower eta0 or gamma0, or check the data scale. "
                    + kept_note(counts, good),
                    step=bad, cause=cause, partial=_cut(records, good), saved_steps=counts[:good])
            if stop_on_nonfinite and kept:
                _check_records(records[-1], first_saved, counts, label, records)
    finally:
        if bar is not None:
            bar.close()
    return _stack(records), state, time.perf_counter() - t0


def _check_records(rec, first_saved, counts, label, records):
    """Raise DivergenceError when a record (predictions, losses, kernels, ...) is not finite while
    the state still is: the step is located to the interval between two saves."""
    i, name = first_nonfinite(rec)
    if i < 0:
        return
    j = first_saved + i
    lo, hi = int(counts[max(j - 1, 0)]), int(counts[j])
    when = ("in the initial record (step 0)" if hi == 0 else
            f"at the save after step {hi} (it overflowed between steps {lo} and {hi})")
    advice = ("Lower eta0 or gamma0, or check the data scale. " if name != "measures" else
              "The measures are the neuron_measures function's values on finite weights: check that "
              "function (a log, root or division at a value the weights reach). ")
    raise DivergenceError(
        f"{label}: the recorded {name!r} is not finite {when}, while the state is still finite. "
        + advice + kept_note(counts, j),
        step=hi, cause=f"non-finite {name}", partial=_cut(records, j), saved_steps=counts[:j])


def _cut(records, good):
    """The first `good` saves of the chunks recorded so far (None when there are none)."""
    if good == 0:
        return None
    return {k: v[:good] for k, v in _stack(records).items()}


def kept_note(counts, good) -> str:
    if good == 0:
        return "Nothing was recorded before it (.partial is None)."
    return (f"The saves up to step {int(counts[good - 1])} ({good}) are in .partial "
            "(their step counts in .saved_steps).")


def progress_bar(total, label, unit="step"):
    """A tqdm bar, or None when tqdm is missing (progress is a nicety, never a requirement)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=label, unit=unit, leave=False)


def finite_flag(k, bad, *values):
    """Update the first-bad-step marker: step k (the update from k to k + 1 steps) is bad when
    any of `values` (its input error and its output state) is not finite."""
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree_util.tree_leaves(values)]))
    return jnp.where((bad < 0) & ~ok, k, bad)


# A train loss past RUNAWAY x max(1, gamma0^-2) x its scale (the largest of its value at t = 0,
# the targets' mean square and 1) is a divergence though still finite: gradient descent past
# its stability grows it geometrically until it overflows (tanh, D = 16, P = 64, gamma0 = 1,
# eta0 = 30: 1e20 after 20 steps, 1e241 after 200). A catapult rises and comes back: its peak,
# measured over eta0 up to the edge of stability at gamma0 = 0.05-3 (relu, tanh, D = 16,
# P = 64), was at most 107 times the start (relu, gamma0 = 0.05, eta0 = 19.9: 0.27 / gamma0^2;
# 1.1-2.4 at gamma0 >= 0.2), and grows like gamma0^-2 toward the lazy limit, hence the factor.
# The peak is set by the outputs the kernel needs to move (O(1 / gamma0) in these units), not by
# the targets: on targets scaled by 1e-8 (a start of 1e-16) the same catapult peaked near 1e-2,
# hence the 1 in the scale. The bound stays ~1e10 times above any catapult seen.
RUNAWAY = 1e10


def runaway_bound(loss, y_ms, gamma0):
    """RUNAWAY x max(1, gamma0^-2) x max(loss at t = 0, `y_ms`, 1), the bound `ran_away` compares
    the train loss `loss` (T,) with; numpy or jax (traced gamma0 too), inf past the range."""
    xp = jnp if isinstance(loss, jax.Array) or isinstance(gamma0, jax.Array) else np
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scale = xp.maximum(xp.maximum(loss[0], y_ms), 1.0)
        return RUNAWAY * xp.maximum(1.0, 1.0 / xp.asarray(gamma0) ** 2) * scale


def ran_away(loss, y_ms, gamma0):
    """(T,) bool, True from the first save whose train loss `loss` (T,) exceeds `runaway_bound`:
    a finite loss the dynamics will overflow (see RUNAWAY). NaN never counts (non-finite values
    are flagged on their own). numpy or jax arrays (traced gamma0 too)."""
    xp = jnp if isinstance(loss, jax.Array) or isinstance(gamma0, jax.Array) else np
    bound = runaway_bound(loss, y_ms, gamma0)
    with np.errstate(invalid="ignore"):
        return xp.cumsum((bound > 0) & (loss > bound)) > 0


def first_runaway(loss, y_ms, gamma0, before: int = -1) -> int:
    """The first save where the train loss (T,) ran away (`ran_away`), if that comes before
    `before` (a first non-finite save; -1: none), else `before`."""
    away = np.flatnonzero(ran_away(np.asarray(loss, np.float64), y_ms, float(gamma0)))
    return int(away[0]) if away.size and (before < 0 or away[0] < before) else before


def first_nonfinite(records: dict, skip=()) -> tuple[int, str | None]:
    """(index along the leading axis, name) of the first record holding NaN or inf, or (-1, None).

    Records are arrays with a leading (saved-time) axis; `skip` names records that may hold NaN
    on purpose."""
    first, name = -1, None
    for k, v in records.items():
        if k in skip or v is None:
            continue
        v = np.asarray(v)
        if not np.issubdtype(v.dtype, np.floating) and not np.issubdtype(v.dtype, np.complexfloating):
            continue
        bad = ~np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1) if v.ndim else ~np.isfinite(v)[None]
        if bad.any():
            i = int(np.argmax(bad))
            if first < 0 or i < first:
                first, name = i, k
    return first, name


# ----------------------------------------------------------------- compiled programs and memory maps

def memory_maps() -> tuple[int, int]:
    """(memory maps this process holds, the kernel's limit on them), or (0, 0) where /proc does
    not tell (not Linux). XLA:CPU maps each compiled program's code into memory and JAX keeps every
    program a process has compiled: a process that compiles many shapes (a scan over task.P or the
    sizes of deep linear networks: ~700 maps a group) reaches vm.max_map_count (65530 by default)
    and the next compile segfaults inside XLA."""
    try:
        with open("/proc/self/maps", "rb") as fh:
            held = sum(1 for _ in fh)
        with open("/proc/sys/vm/max_map_count") as fh:
            limit = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0, 0
    return held, limit


# The share of the memory-map limit past which each solve, batch, training and SDE call drops
# JAX's compiled programs before it runs (a notebook's or a user's loop over many shapes through the
# library reaches the limit as a scan does). Above the 0.45 at which scans (between groups) and the
# tests (between tests) drop them, so that within one test or one scan group nothing is recompiled.
CALL_SHARE = 0.7


# Reading /proc/self/maps costs about 1.2 us a map (40 ms at the 28000 a long test process or
# notebook holds): more than a small solve. The maps grow when XLA compiles, so they are read again
# only after a compile (a jax.monitoring listener counts them) or, should that listener not be
# called (another JAX's event names, a user's clear_event_listeners), after MAPS_RECHECK_S seconds.
# A second holds far fewer compiles than the ~20000 maps between CALL_SHARE and the limit.
MAPS_RECHECK_S = 1.0


class _MapsWatch:
    """The memory maps' last count, and when it is worth counting again: after a compile, after a
    drop, or MAPS_RECHECK_S after the last count. The listener is registered on first use, not on
    import."""

    def __init__(self):
        self.compiles = 0           # compiles seen (XLA backend compiles and persistent-cache loads)
        self.listening = False
        self.seen = -1              # self.compiles at the last count (-1: count at the next call)
        self.at = -np.inf           # time.monotonic() of the last count
        self.held = self.limit = 0  # the last count (`memory_maps`)

    def _count(self, event, *args, **kwargs):
        if "backend_compile" in event:
            self.compiles += 1

    def maps(self) -> tuple[int, int]:
        """`memory_maps()`, or its last count where no compile has happened since (nor a drop)
        and less than MAPS_RECHECK_S has passed."""
        if not self.listening:
            jax.monitoring.register_event_duration_secs_listener(self._count)
            self.listening = True
        if self.compiles != self.seen or time.monotonic() - self.at >= MAPS_RECHECK_S:
            self.held, self.limit = memory_maps()
            self.seen, self.at = self.compiles, time.monotonic()
        return self.held, self.limit

    def dropped(self):
        self.seen = -1


_MAPS_WATCH = _MapsWatch()


def drop_compiled_if_crowded(share: float = 0.45) -> bool:
    """Drop JAX's compiled programs (`jax.clear_caches`: later calls compile again) when this
    process holds more than `share` of its memory-map limit (`memory_maps`); True if it did. For
    long runs that compile many shapes: a scan calls it between groups, and `dmft.solve`,
    `dmft.solve_batch`, `dmft.mode_sde` and `networks.train` (each width) call it with
    `CALL_SHARE` before they run. The maps are counted again only after a compile or a drop, or
    MAPS_RECHECK_S after the last count (`_MapsWatch`); otherwise the last count is judged.
    Changes no number and no configuration."""
    held, limit = _MAPS_WATCH.maps()
    if limit and held > share * limit:
        jax.clear_caches()
        _MAPS_WATCH.dropped()
        return True
    return False

