"""The training protocol shared by theory and networks: `dmft.Schedule`.

One object says how a model is trained and when it is looked at, so that
`dmft.solve` and `networks.train` run the same protocol in the same time units
(docs/conventions.md): step size eta0 (learning rate eta0 gamma0^2 N), number of
steps, weight decay kappa per unit time, gradient descent or gradient flow, and
the saved step counts k (time t = k eta0). It is validated once, on construction.

Save times are
- every `save_every` steps (the default),
- log-spaced: `save_at="log"` with `n_saves` distinct step counts from 1 to `steps`
  (curves that span decades are not kinked at early times), or
- an explicit sequence of step counts.
Step 0 and the last step are always saved; at most MAX_SAVES = 10^7 saves after step 0
(counted before the grid is built: a finer grid is refused, naming save_every, n_saves or
save_at).

Example:
    >>> import dmft
    >>> s = dmft.Schedule(eta0=0.5, steps=100, save_every=25)
    >>> s.save_steps.tolist(), s.times.tolist()
    ([0, 25, 50, 75, 100], [0.0, 12.5, 25.0, 37.5, 50.0])
    >>> dmft.Schedule(eta0=1.0, steps=1000, save_at="log", n_saves=5).save_steps.tolist()
    [0, 1, 6, 32, 178, 1000]
    >>> dmft.Schedule(eta0=0.1, steps=10, save_at=[2, 5]).save_steps.tolist()
    [0, 2, 5, 10]
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from . import checks
from .errors import InputError

__all__ = ["Schedule", "DYNAMICS", "schedule_from", "batch_indices", "default_batch_key", "check_batch_key", "final_time_counts", "check_decay",
           "decay_factor",
           "MAX_STEPS", "MAX_SAVES", "DEFAULT_SAVE_EVERY", "DEFAULT_N_SAVES"]

DYNAMICS = ("gd", "flow")
# the step counter of every solver and trainer is an int32 (`runner.scan_records`, the state's
# step and divergence flag, `fold_in(batch_key, step)`): a longer run would wrap it
MAX_STEPS = 2 ** 31 - 1
# saves after step 0; the save grid (and every record, per save) is allocated for each of them,
# so it is counted before it is built (a million saves of even a scalar loss per replica is
# already more than any figure or fit reads)
MAX_SAVES = 10 ** 7
# when save_every / n_saves are not given (uniform saves / save_at="log")
DEFAULT_SAVE_EVERY = 10
DEFAULT_N_SAVES = 50


# RK4's stability interval on the negative real axis: [-RK4_LIMIT, 0] (|1 + z + z^2/2 + z^3/6 +
# z^4/24| <= 1); a decay (or kernel) rate times eta0 beyond it grows instead of decaying
RK4_LIMIT = 2.785293563


def decay_factor(eta0, weight_decay, steps, dynamics: str, xp=np):
    """What weight decay alone leaves of a parameter after `steps` steps (a weight the gradient
    never reaches, as those outside the data's span): (1 - eta0 kappa)^k for gradient descent,
    and for gradient flow RK4's own factor R(-eta0 kappa)^k, R(z) = 1 + z + z^2/2 + z^3/6 + z^4/24
    (the solvers and networks integrate the flow by RK4; exp(-kappa t) differed by 3e-8)."""
    x = eta0 * weight_decay
    step = 1 - x if dynamics == "gd" else 1 - x + x ** 2 / 2 - x ** 3 / 6 + x ** 4 / 24
    return step ** xp.asarray(steps)


def check_decay(eta0, weight_decay, dynamics: str = "gd") -> None:
    """Refuse eta0 * weight_decay >= 1 for gradient descent (the decay factor 1 - eta0 kappa would
    flip the sign of every weight each step) and >= RK4_LIMIT for gradient flow (its RK4 step
    would make the decay grow). eta0 and weight_decay may be arrays of points (a
    `dmft.solve_batch` grid): the error then names the first bad positions."""
    limit = 1.0 if dynamics == "gd" else RK4_LIMIT
    eta0, kappa = np.broadcast_arrays(np.asarray(eta0, np.float64), np.asarray(weight_decay, np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        prod = eta0 * kappa
    bad = ~(prod < limit)
    if not bad.any():
        return
    where = ""
    if prod.ndim:
        where = f" at point(s) {np.flatnonzero(bad)[:5].tolist()}"
        prod = prod[bad][:5]
        shown = prod.tolist() if prod.size > 1 else f"{float(prod[0]):g}"
    else:
        shown = f"{float(prod):g}"
    if dynamics != "gd":
        raise InputError(f"weight_decay: eta0 * weight_decay = {shown} >= {RK4_LIMIT:.4g}{where} is past the "
                         "stability of the RK4 step that integrates gradient flow (the decay would grow); "
                         "use a smaller eta0")
    raise InputError(f"weight_decay: eta0 * weight_decay = {shown} >= 1{where} flips the sign of the "
                     "weights every step; use a smaller eta0 or decay")


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """How to train and when to record (docs/conventions.md, "Loss, time and learning rate").

    Args:
        eta0: step size in DMFT time units (> 0); the integrator step for dynamics="flow".
        steps: number of steps, 1 <= steps <= MAX_STEPS = 2^31 - 1 (the solvers' step counter
            is int32); the run ends at t = steps * eta0.
        save_every: record every this many steps (steps must be a multiple; default
            DEFAULT_SAVE_EVERY = 10) when save_at is None; refused beside save_at. In the
            sampled solvers a record costs many steps: its (P, P) kernels (computed for the
            alignment even with kernels=False) are node sums of P^2 terms where a step has
            P r. Measured (relu, D = 32, 16384 nodes, float64): a record 200-210 ms at
            P = 512 and 80-90 ms at P = 256, against a full-batch step of 20 / 13 ms and a
            minibatch step (B = 16) of 2.4 / 1.5 ms: at save_every = 10 the records are half
            of a full-batch run and 85-90% of an SGD run. Save less often (or save_at="log")
            where the steps are what a run is for.
        weight_decay: kappa >= 0 per unit time: theta <- (1 - eta0 kappa) theta - ...
        dynamics: "gd" (gradient descent at step eta0, exactly) or "flow" (gradient
            flow, fourth-order Runge-Kutta with step eta0).
        save_at: None (every save_every), "log" (n_saves log-spaced step counts), or a
            sequence of step counts in [0, steps].
        n_saves: number of log-spaced saves after step 0 (save_at="log" only; default
            DEFAULT_N_SAVES = 50; 1 saves the last step alone); fewer when the log grid has
            repeated integers at early steps (1000 steps, 200 saves: 131), and never more than
            steps (the jobs refuse a train.log_saves above train.steps; here a short run with the
            default keeps every step it has).
        batch_size: None for full-batch (gradient descent on all P points), else
            the minibatch size B of stochastic gradient descent (1 <= B <= P).
    """

    eta0: float = 0.1
    steps: int = 1000
    save_every: int | None = None
    weight_decay: float = 0.0
    dynamics: str = "gd"
    save_at: Any = None
    n_saves: int | None = None
    batch_size: int | None = None

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)   # noqa: E731
        set_("eta0", checks.real("eta0", self.eta0, positive=True))
        set_("steps", checks.integer("steps", self.steps, minimum=1))
        if self.steps > MAX_STEPS:
            raise InputError(f"steps must be <= {MAX_STEPS} (the step counter of every solver is int32), "
                             f"got {self.steps}")
        if not np.isfinite(self.eta0 * self.steps):
            raise InputError(f"eta0: the final time steps x eta0 = {self.steps} x {self.eta0:g} overflows")
        set_("weight_decay", checks.real("weight_decay", self.weight_decay, nonnegative=True))
        set_("dynamics", checks.choice("dynamics", self.dynamics, DYNAMICS))
        if self.batch_size is not None:
            set_("batch_size", checks.integer("batch_size", self.batch_size, minimum=1))
            if self.dynamics != "gd":
                raise InputError("batch_size: minibatch SGD is a discrete-time process; it needs "
                                 "dynamics='gd'")
        check_decay(self.eta0, self.weight_decay, self.dynamics)
        save = self.save_at
        # one way to say when to save: a save_every or n_saves that the grid would not use is
        # refused, not dropped (the defaults are None so that a given value can be told apart)
        if save is not None and self.save_every is not None:
            raise InputError(f"save_every ({self.save_every!r}) and save_at ({save!r}) both given: saves "
                             "are either every save_every steps or at save_at; give one")
        if self.n_saves is not None and not (isinstance(save, str) and save == "log"):
            raise InputError(f"n_saves ({self.n_saves!r}) counts log-spaced saves; it needs save_at='log' "
                             f"(got save_at={save!r})")
        if save is None:
            every = DEFAULT_SAVE_EVERY if self.save_every is None else self.save_every
            set_("save_every", checks.integer("save_every", every, minimum=1))
            if self.steps % self.save_every:
                raise InputError(f"steps ({self.steps}) must be a multiple of save_every "
                                 f"({self.save_every})")
            _check_saves("save_every", self.steps // self.save_every,
                         f" (steps / save_every = {self.steps} / {self.save_every})")
            counts = np.arange(0, self.steps + 1, self.save_every, dtype=np.int64)
        elif isinstance(save, str):
            if save != "log":
                raise InputError(f"save_at must be None, 'log' or a sequence of step counts, got {save!r}")
            n = checks.integer("n_saves", DEFAULT_N_SAVES if self.n_saves is None else self.n_saves,
                               minimum=1)
            _check_saves("n_saves", n, "")
            set_("n_saves", n)
            # (one save: the last step; geomspace(1, steps, 1) is [1], which saved step 1 as well)
            grid = np.rint(np.geomspace(1, self.steps, n)).astype(np.int64) if n > 1 else np.asarray([self.steps])
            counts = np.unique(np.concatenate([[0], grid, [self.steps]]))
        else:
            try:
                raw = np.asarray(save)
            except Exception:  # noqa: BLE001
                raise InputError(f"save_at: expected step counts, got {save!r}") from None
            if raw.ndim != 1 or raw.size == 0:
                raise InputError(f"save_at: expected a non-empty list of step counts, got shape {raw.shape}")
            _check_saves("save_at", raw.size, " (step counts given)")
            # each element as given (an array would turn True into 1 before the check saw it)
            given = list(save) if isinstance(save, (list, tuple)) else raw.tolist()
            if raw.dtype.kind == "b":
                given = [bool(v) for v in given]
            vals = [checks.integer(f"save_at[{i}]", v, minimum=0, maximum=self.steps)
                    for i, v in enumerate(given)]
            if any(b <= a for a, b in zip(vals, vals[1:])):
                raise InputError(f"save_at: step counts must be strictly increasing, got {vals}")
            counts = np.unique(np.concatenate([[0], np.asarray(vals, np.int64), [self.steps]]))
            set_("save_at", tuple(vals))
        counts.setflags(write=False)
        object.__setattr__(self, "_counts", counts)

    # ------------------------------------------------------------ derived

    @property
    def save_steps(self) -> np.ndarray:
        """(T,) saved step counts, starting at 0 and ending at `steps`."""
        return self._counts

    @property
    def times(self) -> np.ndarray:
        """(T,) saved times t = k * eta0."""
        return self._counts * self.eta0

    @property
    def gaps(self) -> np.ndarray:
        """(T - 1,) steps between consecutive saves."""
        return np.diff(self._counts)

    @property
    def uniform(self) -> bool:
        """True when saves are every `save_every` steps."""
        return self.save_every is not None

    @property
    def final_time(self) -> float:
        return self.steps * self.eta0

    def replace(self, **changes) -> "Schedule":
        """A copy with some fields changed (validated again).

        A new save_every means uniform saves and a new save_at means that grid: the fields
        of the old grid that the new one does not use are dropped (given both, they are
        checked as in the constructor).
        """
        if "save_every" in changes and "save_at" not in changes:
            changes["save_at"] = None
        if "save_at" in changes:
            if changes["save_at"] is not None:
                changes.setdefault("save_every", None)
            if not (isinstance(changes["save_at"], str) and changes["save_at"] == "log"):
                changes.setdefault("n_saves", None)
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict:
        """The protocol as a JSON-able dict (for result metadata)."""
        d = {"eta0": self.eta0, "steps": self.steps, "save_every": self.save_every,
             "weight_decay": self.weight_decay, "dynamics": self.dynamics}
        if not self.uniform:
            d["save_at"] = self.save_at if isinstance(self.save_at, str) else list(self.save_at)
            d["save_steps"] = self.save_steps.tolist()
            if self.save_at == "log":
                d["n_saves"] = self.n_saves
        if self.batch_size is not None:
            d["batch_size"] = self.batch_size
        return d

    def __eq__(self, other):
        return isinstance(other, Schedule) and self.describe() == other.describe()

    def __hash__(self):
        return hash(repr(sorted(self.describe().items())))

    def __repr__(self):
        d = self.describe()
        d.pop("save_steps", None)
        return "Schedule(" + ", ".join(f"{k}={v!r}" for k, v in d.items()) + ")"


def _check_saves(name: str, n: int, detail: str) -> None:
    """Refuse more than MAX_SAVES saves, counted before any save grid is built."""
    if n > MAX_SAVES:
        raise InputError(f"{name}: {n} saves{detail} is more than MAX_SAVES = {MAX_SAVES}; every save "
                         "is recorded and held in memory: save less often (a larger save_every, fewer "
                         "n_saves)")


_UNSET = object()


def schedule_from(schedule=None, *, eta0=_UNSET, steps=_UNSET, save_every=_UNSET,
                  weight_decay=_UNSET, dynamics=_UNSET, save_at=_UNSET, batch_size=_UNSET,
                  defaults: dict | None = None) -> Schedule:
    """A Schedule from either a Schedule or the keyword form (not both).

    Entry points take `schedule=` or the old keywords eta0, steps, save_every,
    weight_decay, dynamics; this turns either into one validated object. A keyword
    given next to a Schedule is refused (it would be silently ignored otherwise).
    """
    given = {k: v for k, v in dict(eta0=eta0, steps=steps, save_every=save_every,
                                   weight_decay=weight_decay, dynamics=dynamics, save_at=save_at,
                                   batch_size=batch_size).items() if v is not _UNSET}
    if schedule is not None:
        if not isinstance(schedule, Schedule):
            raise InputError(f"schedule must be a dmft.Schedule, got {type(schedule).__name__}")
        if given:
            raise InputError(f"{', '.join(sorted(given))}: given both in the Schedule and as keywords; "
                             "pass one or the other")
        return schedule
    kw = dict(defaults or {})
    kw.update(given)
    return Schedule(**kw)


def final_time_counts(final_time: float, n_saves: int, eta0) -> np.ndarray:
    """(n, n_saves) step counts nearest to the common times t_j = final_time * j / (n_saves - 1)
    for each step size of eta0 (n,): runs at different eta0 saved at the same times.

    Raises InputError when an eta0 is too large for that grid (two saves on one step)."""
    eta0 = np.asarray(eta0, dtype=np.float64).reshape(-1)
    grid = np.linspace(0.0, final_time, n_saves)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        last = final_time / eta0
    long = ~(last <= MAX_STEPS)
    if long.any():
        raise InputError(f"eta0: {eta0[long][:3].tolist()} too small for final_time = {final_time:g}: "
                         f"final_time / eta0 is more than {MAX_STEPS} steps (the step counter is int32)")
    counts = np.rint(grid[None, :] / eta0[:, None]).astype(np.int64)
    bad = np.any(np.diff(counts, axis=1) <= 0, axis=1)
    if bad.any():
        raise InputError(f"eta0: {eta0[bad][:3].tolist()} too large for {n_saves} saves up to "
                         f"final_time = {final_time:g} (two saves would fall on one step); save "
                         "less often or use a smaller eta0")
    return counts


def check_batch_key(batch_key, batch_size, P: int):
    """`batch_key` checked (`checks.prng_key`), and refused where the schedule draws no batches:
    full-batch descent (batch_size None or P) ignored it without a word, so a user who meant
    minibatch SGD got gradient descent."""
    batch_key = checks.prng_key("batch_key", batch_key)
    if batch_key is not None and (batch_size is None or batch_size >= P):      # (> P is refused as such)
        raise InputError(f"batch_key: given, but the schedule is full-batch gradient descent (batch_size = "
                         f"{batch_size}, P = {P}), which draws no batches; drop batch_key, or set a batch_size "
                         "below P for minibatch SGD")
    return batch_key


def default_batch_key(key):
    """The minibatch sequence a solve uses when no batch_key is given: fold_in(key, 2^31 - 1)
    (the nodes use fold_in(key, replica), so the two never share random bits)."""
    import jax

    return jax.random.fold_in(key, 2 ** 31 - 1)


# batch_indices draws B of P by Floyd's algorithm while B^2 <= FLOYD_RATIO P (B steps, each
# comparing with the B drawn: O(B^2)), else by a random permutation (jax.random.choice, a sort of
# P keys). Measured on 2 CPU cores: P = 4096, B = 64: 4.5 us against 1.7 ms; P = 165, B = 16
# (a closure step is ~23 us): 1.3 against 26 us; at the bound, B^2 = 512 P: 0.65 against 1.4 ms
# (P = 4096), 2.1 against 6.5 ms (P = 16384); Floyd's is slower beyond ~900 P and, by up to 1.6x,
# for B above P / 2 (165 of 164: 43 against 30 us), so it also needs 2 B <= P.
# The batches are the same on every platform. On CPU Floyd's B dependent steps run as a loop;
# on an accelerator, where a loop iteration's overhead would be paid B times inside every
# training step, the same result is computed in parallel (`_floyd_parallel`: a fixed point
# reached in 1-8 sweeps of a sort of the B draws for random draws, at most B; on CPU 1.2-2.8x
# the loop's time, measured).
FLOYD_RATIO = 512


def floyd_draws(P: int, B: int) -> bool:
    """Whether `batch_indices` draws B of P by Floyd's algorithm (see FLOYD_RATIO), on any platform."""
    return 1 < B and B * B <= FLOYD_RATIO * P and 2 * B <= P


def _floyd_loop(draw, top):
    """Floyd's algorithm from its draws: for i = 0, ..., B - 1 take draw[i], or top[i] if draw[i]
    was taken (draw[i] uniform in {0, ..., top[i]}, top = P - B, ..., P - 1)."""
    import jax
    import jax.numpy as jnp

    def take(i, chosen):
        t = draw[i]
        return chosen.at[i].set(jnp.where(jnp.any(chosen == t), top[i], t))

    return jax.lax.fori_loop(0, draw.shape[0], take, jnp.full(draw.shape, -1, draw.dtype))


def _floyd_parallel(draw, top):
    """`_floyd_loop`'s result without its B dependent steps. The chosen c solve the triangular
    system c_i = top_i if draw_i is among c_0, ..., c_{i-1}, else draw_i, which has one solution;
    sweeps of it from c = draw reach that solution (after n sweeps at least c_0, ..., c_{n-1} are
    right, so at most B sweeps and one more that changes nothing: 1-8 in all for random draws)
    and stop at the first sweep that changes nothing (a fixed point is the solution; the cap of
    B + 1 sweeps never binds). A sweep sorts the (value, position) pairs of c and looks each draw
    up in it: O(B log B)."""
    import jax
    import jax.numpy as jnp

    b = draw.shape[0]
    pos = jnp.arange(b)

    def sweep(c):
        value, where = jax.lax.sort((c, pos), num_keys=2)
        first = jnp.minimum(jnp.searchsorted(value, draw, side="left"), b - 1)
        return jnp.where((value[first] == draw) & (where[first] < pos), top, draw)

    def body(state):
        c, _, n = state
        new = sweep(c)
        return new, jnp.any(new != c), n + 1

    return jax.lax.while_loop(lambda state: state[1] & (state[2] <= b), body,
                              (draw, jnp.array(True), jnp.array(0)))[0]


def batch_indices(key, step, P: int, B: int):
    """The minibatch of step `step`: B distinct indices among P, a uniformly random B-subset drawn
    from fold_in(key, step) (traceable; the same key gives the same sequence in the theory and in
    every network; the order within a batch is not random, and nothing reads it: a batch's
    terms are summed). B == P is the full batch, in order.

    Floyd's algorithm while B^2 <= FLOYD_RATIO P and 2 B <= P (`floyd_draws`): for
    j = P - B, ..., P - 1 draw t uniform in {0, ..., j}; take t, or j if t was taken (each B-subset
    has probability 1 / C(P, B)); else a random permutation's first B (`jax.random.choice`). The
    same key gives the same batches on every platform (at the same x64 setting, which sets the
    draws' integer type): on CPU Floyd's steps run as a loop, on an accelerator the same result
    is computed in parallel (`_floyd_parallel`). Called outside a traced program (a batch
    reproduced by hand), one compiled program per (P, B) serves every key and step."""
    import jax

    from .io import compute_platform

    if not any(isinstance(a, jax.core.Tracer) for a in (key, step)):
        return _batch_indices_program(int(P), int(B), compute_platform())(key, step)
    return _batch_indices(key, step, P, B)


@functools.lru_cache(maxsize=64)
def _batch_indices_program(P: int, B: int, platform: str):
    """`batch_indices` of (P, B) compiled once: called eagerly, its draws and Floyd loop compiled
    again at every call (20 ms each; 300 calls of a reference loop took 7 s)."""
    import jax

    return jax.jit(lambda key, step: _batch_indices(key, step, P, B))


def _batch_indices(key, step, P: int, B: int):
    import jax
    import jax.numpy as jnp

    from .io import compute_platform

    if B >= P:
        return jnp.arange(P)
    k = jax.random.fold_in(key, step)
    if B == 1:
        return jax.random.randint(k, (1,), 0, P)
    if not floyd_draws(P, B):
        return jax.random.choice(k, P, (B,), replace=False)
    top = jnp.arange(P - B, P)
    draw = jax.random.randint(k, (B,), 0, top + 1)
    return (_floyd_loop if compute_platform() == "cpu" else _floyd_parallel)(draw, top)
