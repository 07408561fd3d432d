"""Finite-width two-layer networks trained exactly as the theory assumes.

The network is THEORY.md section 1 (see docs/conventions.md):

    f(x) = 1 / (gamma0 N) sum_i a_i phi(w_i . x / sqrt(D)),   w_i ~ N(0, I_D),

with trained (a_i ~ N(0, 1)) or fixed (a_i = 1) readouts, optionally centered
(f - f(theta_0)). Optimizers receive the DMFT-scaled gradient gamma0^2 N grad L,
L = |y - f|^2 / (2P); plain gradient descent with learning rate eta0 then is
exactly theta <- theta - eta0 gamma0^2 N grad L, so step k sits at DMFT time
t = k eta0 for every width and gamma0.

Seeds are vmapped (one compiled program for all seeds); a list of widths is a
loop of compiled programs, one per width.

Example:
    >>> import jax; jax.config.update("jax_enable_x64", True)
    >>> import dmft, networks
    >>> data = dmft.tasks.single_index(D=4, P=8, P_test=4, degree=1, key=0)
    >>> run = networks.train(dmft.TwoLayer("relu"), data, width=64, seeds=3, eta0=0.5,
    ...                      steps=20, save_every=10)
    >>> run.f_train.shape, run.train_loss.shape, run.t.tolist()
    ((3, 3, 8), (3, 3), [0.0, 5.0, 10.0])
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import dmft
from dmft import io as _io
from dmft.kernels import alignment, input_kernel
from dmft.runner import finite_flag, run_saved

__all__ = ["train", "Run", "default_optimizer", "MAX_MEMORY_GB"]

MAX_MEMORY_GB = 4.0


# ----------------------------------------------------------------- optimizers

def _gd(learning_rate, weight_decay):
    # theta <- (1 - lr kappa) theta - lr * (gamma0^2 N grad L)   (THEORY.md section 8)
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate))


# one transformation object for all calls: eta0 and kappa live in its state, so
# changing them does not recompile
_DEFAULT = optax.inject_hyperparams(_gd)(learning_rate=1.0, weight_decay=0.0)


def default_optimizer():
    """Plain full-batch gradient descent with weight decay, hyperparameters in the state."""
    return _DEFAULT


# ----------------------------------------------------------------- the result

@dataclasses.dataclass
class Run:
    """Trajectories of an ensemble of width-N networks (leading axes: seed, time).

    Attributes:
        t: (T,) DMFT times, identical to `dmft.solve`'s for the same eta0/steps/save_every.
        f_train, f_test: (S, T, P), (S, T, P*) predictions ((..., C) with C outputs).
        train_loss, test_loss: (S, T) mean squared errors (test_loss None without y_test).
        ntk, feature_kernel, gradient_kernel: (S, T, P, P) with kernels=True, else None.
        alignment: (S, T) kernel-target alignment of the empirical NTK.
        weight_change: {"first_layer", "readout"} -> (S, T), ||theta - theta0|| / ||theta0||.
        info: width, seeds, optimizer, wall time, divergence flags.
        measures: (S, T, K) neuron measures averaged over units (with neuron_measures), else None.
    """

    t: np.ndarray
    f_train: np.ndarray
    f_test: np.ndarray | None
    train_loss: np.ndarray
    test_loss: np.ndarray | None
    ntk: np.ndarray | None
    feature_kernel: np.ndarray | None
    gradient_kernel: np.ndarray | None
    alignment: np.ndarray
    weight_change: dict
    info: dict
    measures: np.ndarray | None = None

    @property
    def width(self) -> int:
        return int(self.info["width"])

    def arrays(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "weight_change":
                out.update({f"weight_change.{k}": a for k, a in v.items()})
            elif f.name != "info" and v is not None:
                out[f.name] = v
        return out

    def save(self, stem):
        """Write STEM.npz + STEM.json (`dmft.io` format)."""
        info = dict(self.info)
        config = info.pop("config", {})
        return _io.save(stem, self.arrays(), config, extra=info)

    @classmethod
    def load(cls, stem) -> "Run":
        arrays, meta = _io.load(stem)
        kw: dict[str, Any] = {f.name: None for f in dataclasses.fields(cls)}
        kw["weight_change"] = {}
        for name, a in arrays.items():
            if name.startswith("weight_change."):
                kw["weight_change"][name.split(".", 1)[1]] = a
            else:
                kw[name] = a
        kw["info"] = {**meta.get("extra", {}), "config": meta.get("config", {})}
        return cls(**kw)


# ----------------------------------------------------------------- the program

class Static(NamedTuple):
    trained: bool
    kernels: bool
    has_test: bool
    optimizer: Any          # an optax GradientTransformation (hashable by identity)
    measures: Any = None    # neuron measure (w, w0) -> (K,), averaged over units, or None


class Shared(NamedTuple):
    act: Any
    x_tr: jax.Array
    x_te: jax.Array
    y: jax.Array            # (P, C)
    kx_tr: jax.Array        # (P, P)
    gamma0: jax.Array


class Seed(NamedTuple):
    params0: dict
    f0_tr: jax.Array        # (P, C) output at initialization (zeros when not centered)
    f0_te: jax.Array


class State(NamedTuple):
    params: dict
    opt_state: Any
    k: jax.Array
    bad: jax.Array


def _readout(static, params, like):
    return params["a"] if static.trained else jnp.ones((like.shape[0], 1), like.dtype)


def _output(static, sh: Shared, params, x):
    """f(x) = phi(x w^T / sqrt(D)) a / (gamma0 N), shape (points, C)."""
    w = params["w"]
    h = x @ w.T / math.sqrt(x.shape[1])
    a = _readout(static, params, w)
    return sh.act(h) @ a / (sh.gamma0 * w.shape[0])


def _loss(static, sh, seed, params):
    # Delta = y - f_c with f_c = f - f(theta_0) when centered (f0_tr is zero otherwise)
    r = sh.y - (_output(static, sh, params, sh.x_tr) - seed.f0_tr)
    return jnp.sum(r * r) / (2 * sh.y.shape[0])


def _step1(static: Static, sh: Shared, seed: Seed, st: State):
    n = st.params["w"].shape[0]
    loss, grads = jax.value_and_grad(lambda p: _loss(static, sh, seed, p))(st.params)
    scaled = jax.tree_util.tree_map(lambda g: sh.gamma0 ** 2 * n * g, grads)   # gamma0^2 N grad L
    updates, opt_state = static.optimizer.update(scaled, st.opt_state, st.params)
    params = optax.apply_updates(st.params, updates)
    return State(params, opt_state, st.k + 1, finite_flag(st.k, st.bad, loss))


def _record1(static: Static, sh: Shared, seed: Seed, st: State):
    p = st.params
    w = p["w"]
    n, d = w.shape
    h = sh.x_tr @ w.T / math.sqrt(d)
    phi, dphi = sh.act(h), sh.act.derivative(h)
    a = _readout(static, p, w)
    out = {"f_train": phi @ a / (sh.gamma0 * n) - seed.f0_tr}
    if static.has_test:
        out["f_test"] = _output(static, sh, p, sh.x_te) - seed.f0_te
    # two-layer structure: Phi = phi phi^T / N, G = (a^2 phi') phi'^T / N, K = Phi + G * K^x
    feat = phi @ phi.T / n
    grad = (dphi * jnp.mean(a * a, axis=1)[None, :]) @ dphi.T / n
    ntk = grad * sh.kx_tr + (feat if static.trained else 0.0)
    out["alignment"] = alignment(ntk, sh.y)
    if static.kernels:
        out.update(ntk=ntk, feature_kernel=feat, gradient_kernel=grad)
    w0 = seed.params0["w"]
    out["weight_change_first"] = jnp.linalg.norm(w - w0) / jnp.linalg.norm(w0)
    if static.trained:
        a0 = seed.params0["a"]
        out["weight_change_readout"] = jnp.linalg.norm(a - a0) / jnp.linalg.norm(a0)
    else:
        out["weight_change_readout"] = jnp.zeros((), w.dtype)
    if static.measures is not None:
        out["measures"] = jnp.mean(jax.vmap(static.measures)(w, w0), axis=0)
    # a seed that went non-finite reports NaN from then on
    return jax.tree_util.tree_map(lambda v: jnp.where(st.bad >= 0, jnp.nan, v), out)


def step(static, ctx, st, drive):
    sh, seeds = ctx
    return jax.vmap(lambda s, x: _step1(static, sh, s, x))(seeds, st)


def record(static, ctx, st):
    sh, seeds = ctx
    return jax.vmap(lambda s, x: _record1(static, sh, s, x))(seeds, st)


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


@functools.partial(jax.jit, static_argnames=("trained",))
def _init_outputs(act, gamma0, params, x_tr, x_te, *, trained: bool):
    """f(x; theta_0) on train and test points, for every seed."""
    sh = Shared(act, x_tr, x_te, None, None, gamma0)
    st = Static(trained, False, True, None)
    one = lambda p: (_output(st, sh, p, x_tr), _output(st, sh, p, x_te))   # noqa: E731
    return jax.vmap(one)(params)


# ----------------------------------------------------------------- validation

def _int_arg(name, value, minimum):
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _nonnegative(name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def _check_optimizer(opt):
    if opt is None:
        return None
    if not (isinstance(opt, optax.GradientTransformation)
            or (hasattr(opt, "init") and hasattr(opt, "update")
                and callable(opt.init) and callable(opt.update))):
        raise ValueError(f"optimizer must be an optax GradientTransformation, got {type(opt).__name__}")
    try:
        hash(opt)
    except TypeError:
        raise ValueError("optimizer must be hashable (an optax GradientTransformation is)") from None
    return opt


def memory_estimate(data, width, seeds, T, kernels) -> float:
    """Bytes for the largest arrays of one width (float64)."""
    P, Pt, C, D = data.P, data.P_test, data.C, data.D
    per_step = seeds * (width * (D + C) * 6 + (P + Pt) * width * 4)
    records = seeds * T * ((P + Pt) * C + 4 + (3 * P * P if kernels else 0))
    return 8.0 * (per_step + records)


def _validate(model, data, width, seeds, eta0, steps, save_every, optimizer, antithetic,
              kernels, weight_decay, max_memory_gb):
    if not isinstance(model, dmft.TwoLayer):
        raise ValueError(f"model must be a dmft.TwoLayer, got {type(model).__name__}")
    if not isinstance(data, dmft.Dataset):
        raise ValueError(f"data must be a dmft.Dataset, got {type(data).__name__}")
    widths = list(width) if isinstance(width, (list, tuple, np.ndarray)) else [width]
    if not widths:
        raise ValueError("width: give at least one width")
    widths = [_int_arg("width", w, 1) for w in widths]
    if antithetic:
        if not model.trained_readout:
            raise ValueError("antithetic=True pairs readouts (w, a), (w, -a): it needs "
                             "readout='trained'")
        odd = [w for w in widths if w % 2]
        if odd:
            raise ValueError(f"width must be even with antithetic=True, got {odd}")
    seeds = _int_arg("seeds", seeds, 1)
    steps = _int_arg("steps", steps, 1)
    save_every = _int_arg("save_every", save_every, 1)
    if steps % save_every:
        raise ValueError(f"steps ({steps}) must be a multiple of save_every ({save_every})")
    try:
        eta0 = float(eta0)
    except (TypeError, ValueError):
        raise ValueError(f"eta0 must be a positive number, got {eta0!r}") from None
    if not (math.isfinite(eta0) and eta0 > 0):
        raise ValueError(f"eta0 must be positive and finite, got {eta0}")
    kappa = _nonnegative("weight_decay", weight_decay)
    if _nonnegative("max_memory_gb", max_memory_gb) == 0:
        raise ValueError("max_memory_gb must be > 0")
    optimizer = _check_optimizer(optimizer)
    if optimizer is not None and kappa:
        raise ValueError("weight_decay applies to the default optimizer; with your own, chain "
                         "optax.add_decayed_weights(kappa) before it")
    if not model.trained_readout and data.C > 1:
        raise ValueError("readout='fixed' with several outputs makes every output identical")
    T = steps // save_every + 1
    for w in widths:
        need = memory_estimate(data, w, seeds, T, kernels)
        if need > max_memory_gb * 2 ** 30:
            raise ValueError(f"width {w} x {seeds} seeds needs about {need / 2 ** 30:.1f} GiB "
                             f"(> max_memory_gb={max_memory_gb})"
                             + ("; kernels=True stores (seeds, T, P, P) arrays: save less often "
                                "or pass kernels=False" if kernels else "; use fewer seeds"))
    return widths, seeds, eta0, steps, save_every, optimizer, kappa


# ----------------------------------------------------------------- entry point

def train(model, data, width=1024, seeds: int = 16, eta0: float = 0.1, steps: int = 1000,
          save_every: int = 10, optimizer=None, key=None, antithetic: bool = False,
          kernels: bool = False, *, weight_decay: float = 0.0, progress: bool = False,
          max_memory_gb: float = MAX_MEMORY_GB, neuron_measures=None):
    """Train `seeds` networks of each width, vmapped over seeds.

    Args:
        model: `dmft.TwoLayer` (activation, gamma0, readout, centered).
        data: `dmft.Dataset`.
        width: N, or a list of widths (then a dict width -> Run is returned).
        seeds: networks per width (independent initializations).
        eta0: learning rate in DMFT time units; sets the time base t = k eta0.
        steps, save_every: as in `dmft.solve`.
        optimizer: None for plain gradient descent (with `weight_decay`), or any
            optax GradientTransformation. It receives gamma0^2 N grad L; give it
            learning rate eta0 to stay in DMFT units (e.g. optax.sgd(eta0,
            momentum=0.9); for weight decay chain optax.add_decayed_weights(kappa)
            first). Scale-free optimizers such as Adam have no such units.
        key: `jax.random.key` (default key(0)); seed s uses fold_in(key, s).
        antithetic: pair units (w, a), (w, -a), so f(x; theta_0) = 0 exactly.
        kernels: keep the (S, T, P, P) empirical kernels (the alignment is always kept).
        weight_decay: kappa >= 0 per unit time for the default optimizer.
        progress: show a progress bar.
        neuron_measures: None, or a function (w, w0) -> (K,) of one unit's first-layer
            weights now and at initialization (jax-traceable); its mean over units is
            recorded in `Run.measures`, the same as `dmft.solve(neuron_measures=...)`.

    Returns:
        A `Run` (or a dict of Runs for a list of widths).
    """
    widths, seeds, eta0, steps, save_every, opt, kappa = _validate(
        model, data, width, seeds, eta0, steps, save_every, optimizer, antithetic, kernels,
        weight_decay, max_memory_gb)
    if neuron_measures is not None and not callable(neuron_measures):
        raise ValueError(f"neuron_measures must be a function (w, w0) -> (K,), got {neuron_measures!r}")
    key = jax.random.key(0) if key is None else key
    runs = {w: _train_width(model, data, w, seeds, eta0, steps, save_every, opt, kappa, key,
                            antithetic, kernels, progress, neuron_measures) for w in widths}
    single = not isinstance(width, (list, tuple, np.ndarray))
    return runs[widths[0]] if single else runs


def _train_width(model, data, width, seeds, eta0, steps, save_every, opt, kappa, key,
                 antithetic, kernels, progress, measures=None):
    t0 = time.perf_counter()
    dtype = jnp.result_type(float)
    x_tr = jnp.asarray(data.x_train, dtype)
    x_te = jnp.asarray(data.x_test if data.x_test is not None else np.zeros((0, data.D)), dtype)
    y = jnp.asarray(data.targets("train"), dtype)
    trained = model.trained_readout
    user_opt = opt is not None
    opt = opt if user_opt else _DEFAULT
    static = Static(trained, bool(kernels), data.P_test > 0, opt, measures)
    sh = Shared(model.activation, x_tr, x_te, y, input_kernel(x_tr), jnp.asarray(model.gamma0, dtype))

    keys = jnp.stack([jax.random.fold_in(key, s) for s in range(seeds)])
    params0 = jax.vmap(lambda k: init_params(k, width, data.D, data.C, trained, antithetic, dtype))(keys)
    if model.centered:
        f0_tr, f0_te = _init_outputs(model.activation, sh.gamma0, params0, x_tr, x_te, trained=trained)
    else:
        f0_tr = jnp.zeros((seeds, data.P, data.C), dtype)
        f0_te = jnp.zeros((seeds, data.P_test, data.C), dtype)
    opt_state = jax.vmap(opt.init)(params0)
    if not user_opt:   # eta0 and kappa are state, not constants: no recompilation
        opt_state.hyperparams["learning_rate"] = jnp.full((seeds,), eta0, dtype)
        opt_state.hyperparams["weight_decay"] = jnp.full((seeds,), kappa, dtype)
    st0 = State(params0, opt_state, jnp.zeros((seeds,), jnp.int32), jnp.full((seeds,), -1, jnp.int32))
    rec, st, wall = run_saved(step, record, static, (sh, Seed(params0, f0_tr, f0_te)), st0,
                              save_every=save_every, n_intervals=steps // save_every,
                              progress=progress, label=f"networks N={width}", stop_on_nonfinite=False)
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
    bad = np.asarray(st.bad)
    diverged = {int(s): int(b) for s, b in enumerate(bad) if b >= 0}
    info = {"width": width, "seeds": seeds, "antithetic": antithetic,
            "optimizer": "gradient descent (optax sgd)" if not user_opt else repr(opt),
            "weight_decay": kappa, "diverged": diverged, "run_s": wall,
            "wall_s": time.perf_counter() - t0, "dtype": str(dtype), "backend": jax.default_backend(),
            "config": {"model": model.describe(), "data": data.describe(),
                       "train": {"width": width, "seeds": seeds, "eta0": eta0, "steps": steps,
                                 "save_every": save_every, "antithetic": antithetic,
                                 "kernels": kernels, "weight_decay": kappa,
                                 "optimizer": None if not user_opt else repr(opt)}}}
    t = np.arange(0, steps + 1, save_every) * eta0
    return Run(t=t, f_train=f_tr, f_test=f_te, train_loss=train_loss, test_loss=test_loss,
               ntk=rec.get("ntk"), feature_kernel=rec.get("feature_kernel"),
               gradient_kernel=rec.get("gradient_kernel"), alignment=rec["alignment"],
               weight_change={"first_layer": rec["weight_change_first"],
                              "readout": rec["weight_change_readout"]},
               info=info, measures=rec.get("measures"))
