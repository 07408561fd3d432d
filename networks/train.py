"""Finite-width two-layer networks trained exactly as the theory assumes.

The network is the one of docs/conventions.md:

    f(x) = 1 / (gamma0 N) sum_i a_i phi(w_i . x / sqrt(D)),   w_i ~ N(0, I_D),

with trained (a_i ~ N(0, 1)) or fixed (a_i = 1) readouts, optionally centered
(f - f(theta_0)). Optimizers receive the DMFT-scaled gradient gamma0^2 N grad L,
L = |y - f|^2 / (2P); plain gradient descent with learning rate eta0 then is
exactly theta <- theta - eta0 gamma0^2 N grad L, so step k sits at DMFT time
t = k eta0 for every width and gamma0. Gradient flow (dynamics="flow") integrates
d theta / dt = -(gamma0^2 N grad L + kappa theta) with fourth-order Runge-Kutta at
step eta0, as `dmft.solve` does.

Seeds are vmapped (one compiled program for all seeds); a list of widths is a
loop of compiled programs, one per width. Seed s of width N draws from
fold_in(fold_in(key, N), s): ensembles of different widths are independent (with one key
for all widths, width 2N's first N units were width N's, so the errors of a width scan
were correlated and a fit's error bar did not hold).

Example:
    >>> import jax; jax.config.update("jax_enable_x64", True)
    >>> import dmft, networks
    >>> data = dmft.tasks.single_index(D=4, P=8, P_test=4, degree=1, key=0)
    >>> run = networks.train(dmft.TwoLayer("relu"), data, width=64, seeds=3, eta0=0.5,
    ...                      steps=20, save_every=10, keep_params=True)
    >>> run.f_train.shape, run.train_loss.shape, run.t.tolist()
    ((3, 3, 8), (3, 3), [0.0, 5.0, 10.0])
    >>> bool(abs(run.predict(data.x_test) - run.f_test[:, -1]).max() < 1e-12)
    True
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import dmft
from dmft import checks
from dmft.schedule import batch_indices, check_batch_key
from dmft.errors import DivergenceError, InputError, MemoryLimitError, warn
from dmft.plan import RUNTIME_BYTES, sampled_min_gamma0, warn_float32
from dmft.kernels import alignment, input_kernel
from dmft import runner as _runner
from dmft.runner import exact_products, finite_flag, first_nonfinite, first_runaway, over_members, run_saved
from dmft.schedule import Schedule, schedule_from
from dmft.solve import predict_rows

from .deep_linear import train_deep_linear

__all__ = ["train", "Run", "default_optimizer", "MAX_MEMORY_GB", "TrainPlan", "plan_train",
           "memory_estimate", "init_params"]

MAX_MEMORY_GB = 4.0


# ----------------------------------------------------------------- optimizers

def _gd(learning_rate, weight_decay):
    # theta <- (1 - lr kappa) theta - lr * (gamma0^2 N grad L)   (docs/conventions.md)
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate))


# The smallest gamma0 a network resolves in each float type. A step moves the weights by
# O(gamma0) against O(1) weights and the output is that change times 1 / gamma0, so rounding
# enters the output as ~0.03 eps / gamma0 relative (measured: 0.6% at gamma0 = 1e-15 in float64;
# at 1e-20 a centered network's first loss read 1e6 for 0.445). At these floors that is 7e-9
# (float64, the DMFT's sampled floor) and 4e-4 (float32, below a 4096-wide ensemble's seed spread
# of ~1e-2: at gamma0 = 1e-4 in float32 the networks sat 3.5e-3 from the lazy limit, as at 1e-2)
NETWORK_MIN_GAMMA0 = {"float64": 1e-9, "float32": 1e-5}

# one transformation object for all calls: eta0 and kappa live in its state, so
# changing them does not recompile
_DEFAULT = optax.inject_hyperparams(_gd)(learning_rate=1.0, weight_decay=0.0)


def default_optimizer():
    """Plain full-batch gradient descent with weight decay, hyperparameters in the state."""
    return _DEFAULT


# ----------------------------------------------------------------- the result

@dataclasses.dataclass
class Run(dmft.Trajectory):
    """Trajectories of an ensemble of width-N networks (leading axes: seed, time); `dmft.Trajectory`.

    Attributes (beyond the shared records of `dmft.Trajectory`):
        t: (T,) DMFT times, identical to `dmft.solve`'s for the same schedule.
        f_train, f_test: (S, T, P), (S, T, P*) predictions ((..., C) with C outputs).
        train_loss, test_loss: (S, T) mean squared errors (test_loss None without y_test).
        ntk, feature_kernel, gradient_kernel: (S, T, P, P) with kernels=True, else None.
        alignment: (S, T) kernel-target alignment of the empirical NTK.
        weight_change: {"first_layer", "readout"} -> (S, T), ||w - w0|| / sqrt(N D) and
            ||a - a0|| / sqrt(N C) (the initial weights' root mean square, docs/conventions.md).
        info: width, seeds, optimizer, wall time, divergence flags.
        measures: (S, T, K) neuron measures averaged over units (with neuron_measures), else None.
        params, params0: final and initial parameters {"w": (S, N, D), "a": (S, N, C)} with
            keep_params=True, else None.
    """

    params: dict | None = None
    params0: dict | None = None

    GROUPS: ClassVar[tuple] = ("weight_change", "params", "params0")
    ENSEMBLE_AXES: ClassVar[tuple] = ("seed",)
    PREDICT_HINT: ClassVar[str] = ("train with keep_params=True (the parameters are then saved "
                                   "with the run too)")

    def __post_init__(self):
        super().__post_init__()
        if self.params is not None and self.params0 is not None:
            cfg = self.info.get("config", {})
            try:
                model = dmft.TwoLayer.from_description(cfg["model"])
            except (KeyError, InputError) as err:
                why = str(err) if isinstance(err, InputError) else "the run records no model"

                def refuse(x_new):
                    raise InputError(f"predict: the parameters are here, but the model cannot be rebuilt "
                                     f"from the run's description ({why}); predict with the run that "
                                     "networks.train returned, in the session that trained it")
                self.attach_predictor(refuse)
                return
            self.attach_predictor(_param_predictor(model, self.params, self.params0,
                                                   bool(self.f_train.ndim == 3)))

    @property
    def width(self) -> int:
        return int(self.info["width"])

    def label(self) -> str:
        return f"N = {self.info.get('width', '?')}"


def _check_measures(measures, sd, j, bad, counts, width) -> int:
    """The first save seed `sd` loses, given `j`, its first diverged save by its other records
    (-1: none), and `bad`, the step its weights went non-finite at (-1: never): DivergenceError
    where its neuron measures went non-finite first while its weights and every other record were
    still finite and not running away: that is the user's neuron_measures function, not a divergence."""
    if measures is None:
        return j
    jm, _ = first_nonfinite({"measures": np.asarray(measures[sd])})
    if jm < 0 or 0 <= j <= jm:          # the measures finite, or lost with the other records
        return j
    if 0 <= bad < counts[jm]:           # lost with the weights, non-finite before that save
        return jm
    when = ("in the initial record (step 0)" if counts[jm] == 0 else f"at the save after step {int(counts[jm])}")
    raise DivergenceError(
        f"networks N={width}: the recorded 'measures' of seed {sd} is not finite {when}, while its weights "
        "and other records are still finite. The measures are the neuron_measures function's values on "
        "finite weights: check that function (a log, root or division at a value the weights reach).",
        step=int(counts[jm]), cause="non-finite measures")


PREDICT_BLOCK_VALUES = 2 ** 22


@functools.partial(jax.jit, static_argnames=("trained", "centered"))
def _predict_outputs(act, g, params, params0, xb, *, trained: bool, centered: bool):
    """The networks' outputs (S, n, C) on the points xb (one program for every Run of one shape)."""
    def f(p):
        w = p["w"]
        a = p["a"] if trained else jnp.ones((w.shape[0], 1), w.dtype)
        return _forward(act, g, w, a, xb)

    out = jax.vmap(f)(params)
    return out - jax.vmap(f)(params0) if centered else out


def _param_predictor(model, params, params0, scalar):
    act, g, trained = model.activation, model.gamma0, model.trained_readout

    def outputs(p, p0, xb):
        return _predict_outputs(act, g, p, p0, xb, trained=trained, centered=model.centered)

    def predictor(x_new):
        x = dmft.problem.as_array("x_new", x_new, (1, 2))
        x = x[None] if x.ndim == 1 else x
        if x.shape[1] != np.shape(params["w"])[-1]:
            raise InputError(f"x_new: has {x.shape[1]} features but the networks have "
                             f"D = {np.shape(params['w'])[-1]}")
        n = x.shape[0]
        # one compiled program, in blocks of points whose hidden layers (seeds x width x points)
        # hold at most PREDICT_BLOCK_VALUES values: memory flat in the number of points (40000
        # points of 8 networks of width 1024 at once took 5 GB); the points padded (the last one
        # repeated) to `dmft.solve.predict_rows` rows and the blocks to one size, so that any count
        # of points of one size compiles nothing new
        seeds, width = np.shape(params["w"])[:2]
        block = max(1, PREDICT_BLOCK_VALUES // (seeds * width))
        rows = predict_rows(max(n, 1), block)
        block = min(rows, block)
        x = jnp.asarray(np.concatenate([x, np.repeat(x[-1:] if n else np.zeros((1, x.shape[1])), rows - n, axis=0)]),
                        jnp.asarray(params["w"]).dtype)
        p, p0 = (jax.tree_util.tree_map(jnp.asarray, q) for q in (params, params0))    # (on the device once)
        out = np.concatenate([np.asarray(outputs(p, p0, x[i:i + block])) for i in range(0, rows, block)], axis=1)[:, :n]
        return out[..., 0] if scalar else out

    return predictor


# ----------------------------------------------------------------- the program

class Static(NamedTuple):
    trained: bool
    kernels: bool
    has_test: bool
    optimizer: Any          # an optax GradientTransformation (hashable by identity)
    measures: Any = None    # neuron measure (w, w0) -> (K,), averaged over units, or None
    flow: bool = False      # gradient flow (RK4) instead of the optimizer's steps
    batch: int = 0          # minibatch size B of SGD (0: full batch)


class Shared(NamedTuple):
    act: Any
    x_tr: jax.Array
    x_te: jax.Array
    y: jax.Array            # (P, C)
    kx_tr: jax.Array        # (P, P)
    gamma0: jax.Array
    eta0: jax.Array         # the RK4 step (gradient flow); gradient descent reads it from the optimizer
    decay: jax.Array        # weight decay kappa (gradient flow)


class Seed(NamedTuple):
    params0: dict
    f0_tr: jax.Array        # (P, C) output at initialization (zeros when not centered)
    f0_te: jax.Array
    batch_key: jax.Array = None   # the minibatch sequence of this seed (SGD)


class State(NamedTuple):
    params: dict
    opt_state: Any
    k: jax.Array
    bad: jax.Array


def _readout(static, params, like):
    return params["a"] if static.trained else jnp.ones((like.shape[0], 1), like.dtype)


def _forward(act, gamma0, w, a, x):
    """f(x) = phi(x w^T / sqrt(D)) a / (gamma0 N), shape (points, C), computed in the units'
    layout: the fields h = w x^T / sqrt(D) are (N, points) and the readout sums over their
    leading axis, as the DMFT's node fields are laid out: the gradient step autodiff makes of it
    runs 1.1-2x faster than from the points' layout x w^T (docs/derivations.md, "Precision"), the
    same numbers up to rounding."""
    h = w @ x.T / math.sqrt(x.shape[1])
    return (a.T @ act(h)).T / (gamma0 * w.shape[0])


def _output(static, sh: Shared, params, x):
    w = params["w"]
    return _forward(sh.act, sh.gamma0, w, _readout(static, params, w), x)


def _loss(static, sh, seed, params, batch=None):
    # Delta = y - f_c with f_c = f - f(theta_0) when centered (f0_tr is zero otherwise);
    # SGD: (1/2P) sum_mu w_mu Delta_mu^2 with w = P/B on the batch = (1/2B) sum over the batch,
    # computed on the batch's B points alone (`batch`: their indices)
    rows = slice(None) if batch is None else batch
    r = sh.y[rows] - (_output(static, sh, params, sh.x_tr[rows]) - seed.f0_tr[rows])
    return jnp.sum(r * r) / (2 * r.shape[0])


def _scaled_grad(static, sh, seed, params, batch=None):
    n = params["w"].shape[0]
    loss, grads = jax.value_and_grad(lambda p: _loss(static, sh, seed, p, batch))(params)
    return loss, jax.tree_util.tree_map(lambda g: sh.gamma0 ** 2 * n * g, grads)   # gamma0^2 N grad L


def _step1(static: Static, sh: Shared, seed: Seed, st: State):
    if static.flow:
        # classical fourth-order Runge-Kutta on d theta/dt = -(gamma0^2 N grad L + kappa theta)
        def vel(p):
            _, g = _scaled_grad(static, sh, seed, p)
            return jax.tree_util.tree_map(lambda gi, pi: -(gi + sh.decay * pi), g, p)

        def shift(p, v, c):
            return jax.tree_util.tree_map(lambda pi, vi: pi + c * vi, p, v)

        eta = sh.eta0
        loss = _loss(static, sh, seed, st.params)
        k1 = vel(st.params)
        k2 = vel(shift(st.params, k1, eta / 2))
        k3 = vel(shift(st.params, k2, eta / 2))
        k4 = vel(shift(st.params, k3, eta))
        params = jax.tree_util.tree_map(lambda p, a, b, c, d: p + eta / 6 * (a + 2 * b + 2 * c + d),
                                        st.params, k1, k2, k3, k4)
        return State(params, st.opt_state, st.k + 1, finite_flag(st.k, st.bad, loss, params))
    batch = batch_indices(seed.batch_key, st.k, sh.y.shape[0], static.batch) if static.batch else None
    loss, scaled = _scaled_grad(static, sh, seed, st.params, batch)
    updates, opt_state = static.optimizer.update(scaled, st.opt_state, st.params)
    params = optax.apply_updates(st.params, updates)
    return State(params, opt_state, st.k + 1, finite_flag(st.k, st.bad, loss, params))


def _record1(static: Static, sh: Shared, seed: Seed, st: State):
    p = st.params
    w = p["w"]
    n, d = w.shape
    a = _readout(static, p, w)
    # the outputs as the step and f(theta_0) compute them (`_forward`), so that a centered run
    # starts at exactly zero; the kernels from fields in the points' layout (P, N): their sums over
    # units ran 1.1-1.3x slower from `_forward`'s layout (docs/derivations.md, "Precision")
    out = {"f_train": _output(static, sh, p, sh.x_tr) - seed.f0_tr}
    h = sh.x_tr @ w.T / math.sqrt(d)
    phi, dphi = sh.act(h), sh.act.derivative(h)
    if static.has_test:
        out["f_test"] = _output(static, sh, p, sh.x_te) - seed.f0_te
    # two-layer structure: Phi = phi phi^T / N, G = (a^2 phi') phi'^T / N, K = Phi + G * K^x
    feat = phi @ phi.T / n
    grad = (dphi * jnp.mean(a * a, axis=1)[None, :]) @ dphi.T / n
    ntk = grad * sh.kx_tr + (feat if static.trained else 0.0)
    out["alignment"] = alignment(ntk, sh.y)
    if static.kernels:
        out.update(ntk=ntk, feature_kernel=feat, gradient_kernel=grad)
    # relative to the initial norm's expectation, sqrt(N D) and sqrt(N C), as the DMFT's
    # sqrt(<|w - w0|^2> / D): the realized |w0| made the seed mean a ratio estimator, heavy-
    # tailed at small widths (readouts at N = 1: E[1 / |a0|] is infinite; 5x the DMFT's value)
    w0 = seed.params0["w"]
    out["weight_change.first_layer"] = jnp.linalg.norm(w - w0) / jnp.sqrt(w0.size * 1.0)
    if static.trained:
        a0 = seed.params0["a"]
        out["weight_change.readout"] = jnp.linalg.norm(a - a0) / jnp.sqrt(a0.size * 1.0)
    else:
        out["weight_change.readout"] = jnp.zeros((), w.dtype)
    if static.measures is not None:
        out["measures"] = jnp.mean(jax.vmap(static.measures)(w, w0), axis=0)
    # a seed that went non-finite reports NaN from then on
    return jax.tree_util.tree_map(lambda v: jnp.where(st.bad >= 0, jnp.nan, v), out)


def step(static, ctx, st, drive):
    sh, seeds = ctx
    return jax.vmap(lambda s, x: _step1(static, sh, s, x))(seeds, st)


def record(static, ctx, st):
    sh, seeds = ctx
    w = st.params["w"]                  # (seeds, width, D): a seed's fields on the train and test points
    return over_members(lambda s, x: _record1(static, sh, s, x), (seeds, st),
                        w.shape[1] * (sh.x_tr.shape[0] + sh.x_te.shape[0]))


def init_params(key, width: int, d: int, c: int, trained: bool, antithetic: bool, dtype):
    """w ~ N(0, I_D); a ~ N(0, 1) (trained). Antithetic: units (w, a) and (w, -a)."""
    kw, ka = jax.random.split(key)
    if antithetic:
        half = width // 2
        w = jax.random.normal(kw, (half, d), dtype)
        a = jax.random.normal(ka, (half, c), dtype)
        return {"w": jnp.concatenate([w, w]), "a": jnp.concatenate([a, -a])}
    params = {"w": jax.random.normal(kw, (width, d), dtype)}
    if trained:
        params["a"] = jax.random.normal(ka, (width, c), dtype)
    return params


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6, 7))
def _init_seeds(key, seeds: int, width: int, d: int, c: int, trained: bool, antithetic: bool, dtype):
    """Each seed's key (fold_in(fold_in(key, width), s): widths independent of one another), its
    initial parameters (`init_params`) and its own batch key, in one compiled program (op by op
    under vmap, every operation compiled apart: about ten programs a width)."""
    wkey = jax.random.fold_in(key, width)
    keys = jax.vmap(lambda s: jax.random.fold_in(wkey, s))(jnp.arange(seeds))
    params0 = jax.vmap(lambda k: init_params(k, width, d, c, trained, antithetic, dtype))(keys)
    return keys, params0, jax.vmap(lambda k: jax.random.fold_in(k, 2 ** 31 - 1))(keys)


@functools.partial(jax.jit, static_argnames=("trained",))
def _init_outputs(act, gamma0, params, x_tr, x_te, *, trained: bool):
    """f(x; theta_0) on train and test points, for every seed."""
    sh = Shared(act, x_tr, x_te, None, None, gamma0, None, None)
    st = Static(trained, False, True, None)
    one = lambda p: (_output(st, sh, p, x_tr), _output(st, sh, p, x_te))   # noqa: E731
    w = params["w"]                     # one seed at a time on a CPU past the size, as the records
    return over_members(one, (params,), w.shape[1] * (x_tr.shape[0] + x_te.shape[0]))


# ----------------------------------------------------------------- validation

def _check_optimizer(opt):
    if opt is None:
        return None
    if not (isinstance(opt, optax.GradientTransformation)
            or (hasattr(opt, "init") and hasattr(opt, "update")
                and callable(opt.init) and callable(opt.update))):
        raise InputError(f"optimizer must be an optax GradientTransformation, got {type(opt).__name__}")
    try:
        hash(opt)
    except TypeError:
        raise InputError("optimizer must be hashable (an optax GradientTransformation is)") from None
    return opt


def memory_estimate(data, width, seeds, T, kernels, measures: int = 0) -> float:
    """Peak bytes of one width (float64), calibrated against measured peaks
    (`scripts/bench_memory.py`): parameters, optimizer state and gradients, the fields and
    their derivatives on every point (all seeds at once: vmapped), the P x P kernels a save
    computes for the alignment, and the records three times over, with `measures` = K values
    a seed a save for neuron_measures (`checks.measure_size`; 0 without): D = 96, K = D^2,
    16 seeds, 1001 saves measured 2.4 GiB where the estimate without them said 0.66)."""
    P, Pt, C, D = data.P, data.P_test, data.C, data.D
    N = P + Pt
    params = seeds * width * (D + C) * 8
    step_tmp = seeds * width * N * 5
    save_tmp = seeds * 3 * P * P + seeds * measures
    records = 3.0 * seeds * T * (N * C + 4 + (3 * P * P if kernels else 0) + measures)
    data_b = N * (D + C) + 2 * P * P
    return 8.0 * (params + step_tmp + save_tmp + records + data_b) + RUNTIME_BYTES


def kept_bytes(data, width, seeds, T, kernels, keep_params, measures: int = 0) -> float:
    """Bytes a finished `Run` holds (float64): its records, (seeds, T, P, P) kernels with
    kernels=True, (seeds, T, K) neuron measures (`measures` = K), and the initial and final
    parameters with keep_params=True."""
    N = data.P + data.P_test
    records = seeds * T * (N * data.C + 4 + (3 * data.P * data.P if kernels else 0) + measures)
    params = 2 * seeds * width * (data.D + data.C) if keep_params else 0
    return 8.0 * (records + params)


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """A validated `networks.train` call: problem, schedule, widths and options."""

    model: Any
    data: Any
    schedule: Schedule
    widths: tuple
    seeds: int
    optimizer: Any
    antithetic: bool
    kernels: bool
    max_memory_gb: float
    neuron_measures: Any
    keep_params: bool

    def describe(self, width: int) -> dict:
        """The configuration of one width, as recorded in `Run.info["config"]`."""
        train = {"width": width, "seeds": self.seeds, **self.schedule.describe(),
                 "antithetic": self.antithetic, "kernels": self.kernels,
                 "optimizer": None if self.optimizer is None else repr(self.optimizer)}
        return {"model": self.model.describe(), "data": self.data.describe(), "train": train}


def _several(width) -> bool:
    """A list of widths (a list, tuple or numpy array of one axis or more), not one width (a 0-d
    numpy array is one width, as a 0-d jax array is: `list()` of it raised a TypeError)."""
    return isinstance(width, (list, tuple)) or (isinstance(width, np.ndarray) and width.ndim > 0)


def plan_train(model, data, schedule: Schedule, width=1024, seeds: int = 16, *, optimizer=None,
               antithetic: bool = False, kernels: bool = False, max_memory_gb: float = MAX_MEMORY_GB,
               neuron_measures=None, keep_params: bool = False) -> TrainPlan:
    """Every check of `networks.train`, before any compute; InputError naming the argument."""
    if not isinstance(model, dmft.TwoLayer):
        raise InputError(f"model must be a dmft.TwoLayer, got {type(model).__name__}")
    if not isinstance(data, dmft.Dataset):
        raise InputError(f"data must be a dmft.Dataset, got {type(data).__name__}")
    widths = list(width) if _several(width) else [width]
    if not widths:
        raise InputError("width: give at least one width")
    widths = [checks.integer("width", w, minimum=1) for w in widths]
    if len(set(widths)) < len(widths):          # a dict width -> Run keeps one run per width
        raise InputError(f"width: the widths of a list must be distinct, got {widths}")
    antithetic = checks.flag("antithetic", antithetic)
    kernels = checks.flag("kernels", kernels)
    keep_params = checks.flag("keep_params", keep_params)
    if antithetic:
        if not model.trained_readout:
            raise InputError("antithetic=True pairs readouts (w, a), (w, -a): it needs "
                             "readout='trained'")
        odd = [w for w in widths if w % 2]
        if odd:
            raise InputError(f"width must be even with antithetic=True, got {odd}")
    seeds = checks.integer("seeds", seeds, minimum=1)
    precision = sampled_min_gamma0()[1]
    floor = NETWORK_MIN_GAMMA0[precision]
    if model.gamma0 < floor:
        raise InputError(f"gamma0 = {model.gamma0:g} is below what a network resolves in {precision} "
                         f"({floor:g}): its weights move by O(gamma0) and its output divides their "
                         "rounding by gamma0. Compare with the lazy limit instead (dmft.solve(..., "
                         "method='lazy'))")
    max_memory_gb = checks.real("max_memory_gb", max_memory_gb, positive=True)
    optimizer = _check_optimizer(optimizer)
    if optimizer is not None and schedule.weight_decay:
        raise InputError("weight_decay applies to the default optimizer; with your own, chain "
                         "optax.add_decayed_weights(kappa) before it")
    if optimizer is not None and schedule.dynamics == "flow":
        raise InputError("dynamics='flow' integrates gradient flow itself; it takes no optimizer")
    if schedule.batch_size is not None and schedule.batch_size > data.P:
        raise InputError(f"batch_size must be <= P = {data.P}, got {schedule.batch_size}")
    if not model.trained_readout and data.C > 1:
        raise InputError("readout='fixed' with several outputs makes every output identical")
    neuron_measures = checks.neuron_measure("neuron_measures", neuron_measures, data.D)
    T = schedule.save_steps.size
    K = checks.measure_size(neuron_measures, data.D) if neuron_measures is not None else 0
    kept = 0.0              # the finished widths' runs stay in memory while the next one trains
    for w in widths:
        need = memory_estimate(data, w, seeds, T, kernels, K) + kept
        if need > max_memory_gb * 2 ** 30:
            raise MemoryLimitError(f"width {w} x {seeds} seeds needs about {need / 2 ** 30:.3g} GiB "
                             f"(> max_memory_gb={max_memory_gb}"
                             + (f", {kept / 2 ** 30:.3g} GiB of it the runs of the widths before it"
                                if kept else "") + ")"
                             + ("; kernels=True stores (seeds, T, P, P) arrays: save less often "
                                "or pass kernels=False" if kernels else "; use a smaller width or fewer seeds")
                             + (f"; neuron_measures records {K} values a seed a save: save less often or "
                                "measure fewer values" if K else ""))
        kept += kept_bytes(data, w, seeds, T, kernels, keep_params, K)
    warn_float32("networks.train")
    return TrainPlan(model, data, schedule, tuple(widths), seeds, optimizer, antithetic, kernels,
                     max_memory_gb, neuron_measures, keep_params)


# ----------------------------------------------------------------- entry point

_UNSET = object()


def _deep_linear_option_names() -> list[str]:
    """The keyword options of `train_deep_linear` that `train` passes through as they are."""
    import inspect

    return [n for n, p in inspect.signature(train_deep_linear).parameters.items()
            if p.kind == p.KEYWORD_ONLY and n not in ("key", "progress", "keep_weights", "max_memory_gb")]


def _check_deep_linear_options(options: dict) -> None:
    """The options that pass through to `networks.deep_linear.train_deep_linear`: known names,
    and a dtype it can use (InputError naming it, not a TypeError from the call)."""
    known = _deep_linear_option_names()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"unknown option(s) {unknown} for a deep linear network; known: {', '.join(known)}")
    dt = options.get("dtype")
    if dt is not None:
        try:
            name = dt if isinstance(dt, str) else str(np.dtype(dt))
        except TypeError:
            name = None
        if name not in ("float32", "float64"):
            raise InputError(f"dtype must be 'float32' or 'float64' (or None), got {dt!r}")


@exact_products
def train(model, data, width=None, seeds: int = 16, eta0=_UNSET, steps=_UNSET, save_every=_UNSET,
          optimizer=None, key=None, antithetic: bool = False, kernels: bool = False, *,
          schedule: Schedule | None = None, weight_decay=_UNSET, dynamics=_UNSET, save_at=_UNSET,
          batch_size=_UNSET, batch_key=None, progress: bool = False,
          max_memory_gb: float = MAX_MEMORY_GB, neuron_measures=None, keep_params: bool = False,
          **deep_linear_options):
    """Train `seeds` networks of each width, vmapped over seeds.

    Args:
        model: `dmft.TwoLayer` (activation, gamma0, readout, centered), or `dmft.DeepLinear`
            (then data is a `dmft.LinearTeacher` and a `networks.DeepLinearRun` is returned;
            see `networks.deep_linear`, whose options probe=, dtype= and block= pass through,
            checked here: an unknown name or a dtype other than float32/float64 is an InputError;
            batch_key passes through when that trainer takes it, and is refused, never ignored,
            otherwise).
        data: `dmft.Dataset` (or `dmft.LinearTeacher`).
        width: N (default 1024), or a list of widths (then a dict width -> Run is returned);
            a DeepLinear model carries its own width.
        seeds: networks per width (independent initializations).
        eta0, steps, save_every, weight_decay, dynamics, save_at: the training protocol in
            keyword form (defaults 0.1, 1000, 10, 0.0, "gd", None), or
        schedule: a `dmft.Schedule` (not both), the same object `dmft.solve` takes. eta0
            sets the time base t = k eta0; dynamics="flow" integrates gradient flow
            (RK4 at step eta0) with weight decay kappa.
        optimizer: None for plain gradient descent (with the schedule's weight decay), or
            any optax GradientTransformation. It receives gamma0^2 N grad L; give it
            learning rate eta0 to stay in DMFT units (e.g. optax.sgd(eta0,
            momentum=0.9); for weight decay chain optax.add_decayed_weights(kappa)
            first). Scale-free optimizers such as Adam have no such units.
        key: `jax.random.key` (default key(0)); seed s of width N uses
            fold_in(fold_in(key, N), s). An int is refused here, as by `dmft.solve` (int seeds
            are for the data generators, `dmft.tasks`).
        antithetic: pair units (w, a), (w, -a), so f(x; theta_0) = 0 exactly.
        kernels: keep the (S, T, P, P) empirical kernels (the alignment is always kept).
        progress: show a progress bar.
        neuron_measures: None, or a function (w, w0) -> (K,) of one unit's first-layer
            weights now and at initialization (jax-traceable); its mean over units is
            recorded in `Run.measures`, the same as `dmft.solve(neuron_measures=...)`.
        keep_params: keep the initial and final parameters in `Run.params0` / `Run.params`
            (and so `Run.predict` works after saving and loading).
        batch_size: minibatch SGD with B points per step (also `Schedule(batch_size=B)`).
        batch_key: None: seed s draws its own batches from fold_in(its key, 2^31 - 1);
            a key: every seed trains on this one batch sequence, the one `dmft.solve(batch_key=)`
            conditions the DMFT on.

    Returns:
        A `Run` (or a dict of Runs for a list of widths).
    """
    if isinstance(eta0, Schedule):
        schedule, eta0 = eta0, _UNSET
    sch = schedule_from(schedule, **{k: v for k, v in dict(
        eta0=eta0, steps=steps, save_every=save_every, weight_decay=weight_decay, dynamics=dynamics,
        save_at=save_at, batch_size=batch_size).items() if v is not _UNSET},
        defaults=dict(eta0=0.1, steps=1000))
    if isinstance(model, dmft.DeepLinear):
        given = [name for name, v, default in (("width", width, None), ("optimizer", optimizer, None),
                                               ("antithetic", antithetic, False), ("kernels", kernels, False),
                                               ("neuron_measures", neuron_measures, None)) if v is not default]
        if batch_key is not None:          # passed on once train_deep_linear takes it; never ignored
            if "batch_key" not in _deep_linear_option_names():
                given.append("batch_key")
            else:
                bk = checks.prng_key("batch_key", batch_key)
                deep_linear_options = {**deep_linear_options, "batch_key": bk}
        if given:
            raise InputError(f"{', '.join(given)}: not options of a deep linear network (its width "
                             "is DeepLinear.width; each seed draws its own batches)")
        _check_deep_linear_options(deep_linear_options)
        keep_params = checks.flag("keep_params", keep_params)     # (refused as keep_weights, its name there)
        return train_deep_linear(model, data, sch, seeds, key=key, progress=progress,
                                 keep_weights=keep_params, max_memory_gb=max_memory_gb,
                                 **deep_linear_options)
    if deep_linear_options:
        raise InputError(f"unknown option(s) {sorted(deep_linear_options)} for a two-layer network")
    width = 1024 if width is None else width
    plan = plan_train(model, data, sch, width, seeds, optimizer=optimizer, antithetic=antithetic,
                      kernels=kernels, max_memory_gb=max_memory_gb, neuron_measures=neuron_measures,
                      keep_params=keep_params)
    batch_key = check_batch_key(batch_key, sch.batch_size, data.P)     # (after data is known a Dataset)
    progress = checks.flag("progress", progress)
    key = checks.prng_key("key", key)
    key = jax.random.key(0) if key is None else key
    runs = {w: run_width(plan, w, key, progress=progress, batch_key=batch_key) for w in plan.widths}
    single = not _several(width)
    return runs[plan.widths[0]] if single else runs


def run_width(plan: TrainPlan, width: int, key, *, progress: bool = False, batch_key=None) -> Run:
    """The ensemble of one width of a validated `TrainPlan` (batch_key: see `train`)."""
    _runner.drop_compiled_if_crowded(_runner.CALL_SHARE)
    t0 = time.perf_counter()
    model, data, sch = plan.model, plan.data, plan.schedule
    seeds = plan.seeds
    dtype = jnp.result_type(float)
    x_tr = jnp.asarray(data.x_train, dtype)
    x_te = jnp.asarray(data.x_test if data.x_test is not None else np.zeros((0, data.D)), dtype)
    y = jnp.asarray(data.targets("train"), dtype)
    trained = model.trained_readout
    user_opt = plan.optimizer is not None
    opt = plan.optimizer if user_opt else _DEFAULT
    flow = sch.dynamics == "flow"
    B = sch.batch_size
    batch = 0 if (B is None or B >= data.P) else int(B)
    static = Static(trained, plan.kernels, data.P_test > 0, opt, plan.neuron_measures, flow, batch)
    sh = Shared(model.activation, x_tr, x_te, y, input_kernel(x_tr), jnp.asarray(model.gamma0, dtype),
                jnp.asarray(sch.eta0, dtype), jnp.asarray(sch.weight_decay, dtype))

    keys, params0, own_batch_keys = _init_seeds(key, seeds, width, data.D, data.C, trained,
                                                plan.antithetic, dtype)
    batch_keys = own_batch_keys if batch_key is None else jnp.stack([batch_key] * seeds)
    if model.centered:
        f0_tr, f0_te = _init_outputs(model.activation, sh.gamma0, params0, x_tr, x_te, trained=trained)
    else:
        f0_tr = jnp.zeros((seeds, data.P, data.C), dtype)
        f0_te = jnp.zeros((seeds, data.P_test, data.C), dtype)
    opt_state = jax.vmap(opt.init)(params0)
    if not user_opt:   # eta0 and kappa are state, not constants: no recompilation
        opt_state.hyperparams["learning_rate"] = jnp.full((seeds,), sch.eta0, dtype)
        opt_state.hyperparams["weight_decay"] = jnp.full((seeds,), sch.weight_decay, dtype)
    st0 = State(params0, opt_state, jnp.zeros((seeds,), jnp.int32), jnp.full((seeds,), -1, jnp.int32))
    rec, st, wall = run_saved(step, record, static, (sh, Seed(params0, f0_tr, f0_te, batch_keys)), st0,
                              gaps=sch.gaps, progress=progress, label=f"networks N={width}",
                              stop_on_nonfinite=False)
    rec = {k: np.moveaxis(v, 0, 1) for k, v in rec.items()}          # (S, T, ...)
    yt = data.targets("test")
    f_tr, f_te = rec["f_train"], rec.get("f_test")
    with np.errstate(over="ignore", invalid="ignore"):     # diverging seeds overflow
        train_loss = np.mean((np.asarray(y)[None, None] - f_tr) ** 2, axis=(2, 3))
        test_loss = (np.mean((yt[None, None] - f_te) ** 2, axis=(2, 3))
                     if (yt is not None and f_te is not None) else None)
    if data.scalar:
        f_tr = f_tr[..., 0]
        f_te = None if f_te is None else f_te[..., 0]
    bad = np.array(st.bad, dtype=np.int64)
    # every returned array is finite, or its seed is flagged: a record that overflowed while the
    # state did not (a loss, a kernel) flags the seed at that save, NaN from there on
    counts = sch.save_steps
    series = {"train_loss": train_loss, "test_loss": test_loss, "alignment": rec["alignment"],
              **{k: v for k, v in rec.items() if k not in ("alignment",)}}
    y_ms = float(np.mean(np.asarray(y) ** 2))
    for sd in range(seeds):
        j, _ = first_nonfinite({k: np.asarray(v)[sd] for k, v in series.items()
                                if v is not None and k != "measures"})
        # a finite train loss on its way to overflow is a divergence too (`dmft.runner.ran_away`,
        # the bound the DMFT uses)
        j = first_runaway(train_loss[sd], y_ms, model.gamma0, before=j)
        j = _check_measures(rec.get("measures"), sd, j, bad[sd], counts, width)
        # bad = k: the update from k to k + 1 steps went non-finite, so the saves after more than
        # k steps are lost (the save at k is the state before it: kept unless a record overflowed)
        cut = counts > bad[sd] if bad[sd] >= 0 else np.zeros_like(counts, bool)
        if j >= 0:
            cut[j:] = True
            if bad[sd] < 0 or bad[sd] > counts[j]:
                bad[sd] = counts[j]
        if cut.any():
            for arr in (train_loss, test_loss, f_tr, f_te, *rec.values()):
                if arr is not None and np.issubdtype(np.asarray(arr).dtype, np.floating):
                    arr[sd, cut] = np.nan
    diverged = {int(s): int(b) for s, b in enumerate(bad) if b >= 0}
    info = {"width": width, "seeds": seeds, "antithetic": plan.antithetic,
            "optimizer": ("gradient flow (RK4)" if flow else "gradient descent (optax sgd)")
            if not user_opt else repr(opt),
            "weight_decay": sch.weight_decay, "dynamics": sch.dynamics, "batch_size": batch or None,
            "shared_batches": batch_key is not None and batch > 0, "diverged": diverged,
            "run_s": wall, "wall_s": time.perf_counter() - t0, "dtype": str(dtype),
            "backend": jax.default_backend(),
            "config": {**plan.describe(width), "key": np.asarray(jax.random.key_data(key)).tolist(),
                       **({"batch_key": np.asarray(jax.random.key_data(batch_key)).tolist()}
                          if batch_key is not None else {})}}
    keep = plan.keep_params
    run = Run(t=sch.times, f_train=f_tr, f_test=f_te, train_loss=train_loss, test_loss=test_loss,
              ntk=rec.get("ntk"), feature_kernel=rec.get("feature_kernel"),
              gradient_kernel=rec.get("gradient_kernel"), alignment=rec["alignment"],
              weight_change={"first_layer": rec["weight_change.first_layer"],
                             "readout": rec["weight_change.readout"]},
              info=info, measures=rec.get("measures"),
              params=jax.tree_util.tree_map(np.asarray, st.params) if keep else None,
              params0=jax.tree_util.tree_map(np.asarray, params0) if keep else None)
    if keep:               # the model trained with, not one rebuilt from its description (a custom
        run.attach_predictor(_param_predictor(model, run.params, run.params0,   # activation is not rebuilt)
                                              bool(run.f_train.ndim == 3)))
    if diverged:           # flagged in info; said here too, so a mean curve of NaN is not the first sign
        first = min(diverged.values())
        warn(f"networks.train: {'every one' if len(diverged) == seeds else len(diverged)} of "
                      f"{seeds} seeds diverged at width {width} (the first by step {first}): their records "
                      "are NaN from the save where each went bad (info['diverged'] holds each seed's "
                      "step); lower eta0 or gamma0")
    return run
