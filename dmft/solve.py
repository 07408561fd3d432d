"""`dmft.solve`: the infinite-width dynamics of a two-layer network on a dataset.

Example:
    >>> import jax; jax.config.update("jax_enable_x64", True)
    >>> import dmft
    >>> data = dmft.tasks.single_index(D=4, P=16, P_test=8, degree=1, key=jax.random.key(0))
    >>> model = dmft.TwoLayer("linear", gamma0=1.0)
    >>> sol = dmft.solve(model, data, eta0=0.5, steps=20, save_every=10)   # exact closure
    >>> sol.info["method"], sol.t.tolist(), bool(sol.train_loss[-1] < sol.train_loss[0])
    ('closure', [0.0, 5.0, 10.0], True)
"""

from __future__ import annotations

import dataclasses
import math
import operator
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import closure as _closure
from . import io as _io
from . import single_site as _ss
from .kernels import alignment, field_basis, input_kernel, lazy_kernels, lazy_ntk
from .lazy import lazy_path
from .problem import Dataset, TwoLayer
from .runner import DivergenceError, NotConverged, run_saved
from .sampling import MAX_QUADRATURE_NODES, SAMPLERS, draw_sites, quadrature_size

__all__ = ["solve", "Solution", "METHODS", "DYNAMICS", "exact_closure"]

METHODS = ("auto", "forward", "iterate", "closure", "lazy")
DYNAMICS = ("gd", "flow")


# ----------------------------------------------------------------- the result

@dataclasses.dataclass
class Solution:
    """Infinite-width trajectories at the saved times (leading axis T).

    Attributes:
        t: (T,) times, saved step counts * eta0.
        f_train, f_test: (T, P) and (T, P*) predictions ((T, P, C) with C outputs);
            f_test is None without test inputs.
        train_loss, test_loss: (T,) mean squared errors (test_loss None without y_test).
        ntk, feature_kernel, gradient_kernel: (T, P, P) equal-time kernels on the
            training points (None with kernels=False).
        alignment: (T,) kernel-target alignment of the NTK.
        weight_change: {"first_layer", "readout"} (T,) relative changes
            ||theta - theta0|| / ||theta0|| at infinite width.
        error: standard errors from the replica spread (sampled methods), else None.
        info: method, sizes, iterations and residuals, error estimate, timings,
            the configuration.
        state: closure state at the saved times, else None: "mean" and "second_moment"
            (poly2-fixed) or "covariance" of (z, a) (linear-trained), in the coordinates
            of the field basis: the weights themselves when info["basis"] == "weights"
            (D <= P + P*), else the data span ("kernel-eigenbasis").
        measures: (T, K) node averages of `neuron_measures` (sampled methods), else None.
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
    error: dict | None
    info: dict
    state: dict | None = None
    measures: np.ndarray | None = None

    _GROUPS = ("weight_change", "error", "state")

    def arrays(self) -> dict:
        """All arrays, flattened with dotted names (for saving)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in self._GROUPS:
                for k, a in (v or {}).items():
                    if a is not None:
                        out[f"{f.name}.{k}"] = a
            elif f.name != "info" and v is not None:
                out[f.name] = v
        return out

    def save(self, stem) -> tuple[str, str]:
        """Write STEM.npz + STEM.json (`dmft.io` format)."""
        info = dict(self.info)
        config = info.pop("config", {})
        return _io.save(stem, self.arrays(), config, extra=info)

    @classmethod
    def load(cls, stem) -> "Solution":
        arrays, meta = _io.load(stem)
        kw: dict[str, Any] = {f.name: None for f in dataclasses.fields(cls)}
        for name, a in arrays.items():
            if "." in name:
                group, key = name.split(".", 1)
                kw[group] = kw[group] or {}
                kw[group][key] = a
            else:
                kw[name] = a
        kw["weight_change"] = kw["weight_change"] or {}
        kw["info"] = {**meta.get("extra", {}), "config": meta.get("config", {})}
        return cls(**kw)


# ----------------------------------------------------------------- validation

def _int_arg(name, value, minimum):
    try:
        v = operator.index(value)
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            v = int(value)
        else:
            raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _float_arg(name, value, *, positive=False, nonnegative=False, at_most=None):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonnegative and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    if at_most is not None and v > at_most:
        raise ValueError(f"{name} must be <= {at_most}, got {v}")
    return v


def _window(window, steps):
    steps = _int_arg("steps", steps, 1)
    if window is None:   # the longest window of at most 10 steps that divides steps
        return max(w for w in range(1, min(steps, 10) + 1) if steps % w == 0)
    w = _int_arg("window", window, 1)
    if steps % w:
        raise ValueError(f"window ({w}) must divide steps ({steps})")
    return w


def exact_closure(model: TwoLayer) -> str | None:
    """Name of the exact Gaussian closure for this model, or None."""
    return _closure.kind_for(model.activation, model.trained_readout)


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def _validate(model, data, eta0, steps, save_every, opts) -> dict:
    if not isinstance(model, TwoLayer):
        raise ValueError(f"model must be a dmft.TwoLayer, got {type(model).__name__}")
    if not isinstance(data, Dataset):
        raise ValueError(f"data must be a dmft.Dataset, got {type(data).__name__}")
    cfg = {"eta0": _float_arg("eta0", eta0, positive=True),
           "steps": _int_arg("steps", steps, 1),
           "save_every": _int_arg("save_every", save_every, 1)}
    if cfg["steps"] % cfg["save_every"]:
        raise ValueError(f"steps ({cfg['steps']}) must be a multiple of save_every ({cfg['save_every']})")
    method = _choice("method", opts["method"], METHODS)
    dynamics = _choice("dynamics", opts["dynamics"], DYNAMICS)
    sampler = _choice("sampler", opts["sampler"], SAMPLERS)
    cfg.update(dynamics=dynamics, sampler=sampler,
               samples=_int_arg("samples", opts["samples"], 2),
               replicas=_int_arg("replicas", opts["replicas"], 1),
               weight_decay=_float_arg("weight_decay", opts["weight_decay"], nonnegative=True),
               tol=_float_arg("tol", opts["tol"], positive=True),
               max_iter=_int_arg("max_iter", opts["max_iter"], 1),
               damping=_float_arg("damping", opts["damping"], positive=True, at_most=1.0),
               window=_window(opts["window"], steps),
               kernel_nodes=_int_arg("kernel_nodes", opts["kernel_nodes"], 4),
               quadrature_nodes=_int_arg("quadrature_nodes", opts["quadrature_nodes"], 2),
               control_variate=opts["control_variate"], kernels=bool(opts["kernels"]),
               max_memory_gb=_float_arg("max_memory_gb", opts["max_memory_gb"], positive=True))
    if not model.trained_readout and data.C > 1:
        raise ValueError("readout='fixed' with several outputs makes every output identical; "
                         "use readout='trained' for multi-output data")
    closure_kind = exact_closure(model)
    if method == "auto":
        method = "closure" if closure_kind else "forward"
    if method == "closure" and closure_kind is None:
        raise ValueError(
            f"method='closure' is exact only for a linear activation with trained readouts or a "
            f"polynomial of degree <= 2 with fixed readouts; got activation "
            f"{model.activation.name!r} with readout {model.readout!r}")
    if method == "iterate" and dynamics != "gd":
        raise ValueError("method='iterate' solves gradient descent (dynamics='gd'); "
                         "use method='forward' for gradient flow")
    if method == "lazy" and cfg["weight_decay"] > 0:
        raise ValueError("weight_decay > 0 moves the kernel, so there is no lazy closed form; "
                         "use method='forward'")
    if method in ("forward", "iterate"):
        if sampler == "quadrature":
            r = min(data.D, data.P + data.P_test)
            n = quadrature_size(cfg["quadrature_nodes"], r, data.C, model.trained_readout)
            if n > MAX_QUADRATURE_NODES:
                raise ValueError(f"sampler='quadrature' needs {cfg['quadrature_nodes']}^dims = {n} "
                                 f"nodes (> {MAX_QUADRATURE_NODES}); it is for tiny input "
                                 "dimension; use sampler='orthogonal'")
            cfg["replicas"] = 1
        else:
            per = 2 * cfg["replicas"] if sampler != "mc" else cfg["replicas"]
            if cfg["samples"] % per:
                raise ValueError(f"samples ({cfg['samples']}) must be a multiple of "
                                 f"{per} (replicas x antithetic pairs)")
    meas = opts.get("neuron_measures")
    if meas is not None:
        if not callable(meas):
            raise ValueError(f"neuron_measures must be a function (w, w0) -> (K,), got {meas!r}")
        if method not in ("forward", "iterate"):
            raise ValueError("neuron_measures needs a sampled method (forward or iterate): the "
                             f"{method} method has no individual neurons")
        if data.D > data.P + data.P_test:
            raise ValueError("neuron_measures needs D <= P + P* (the single site then carries "
                             f"the weights themselves); got D={data.D}, P + P*={data.P + data.P_test}")
    cfg["neuron_measures"] = meas
    cv = opts["control_variate"]
    if cv is None:   # the lazy-kernel control variate helps unless weight decay moves the kernel away
        cv = cfg["weight_decay"] == 0
    elif not isinstance(cv, (bool, np.bool_)):
        raise ValueError(f"control_variate must be None, True or False, got {cv!r}")
    cfg["control_variate"] = bool(cv)
    cfg["cv_mode"] = "off" if not cv else ("operator" if data.C > 1 else "matrix")
    cfg["method"] = method
    cfg["closure_kind"] = closure_kind if method == "closure" else None
    need = _memory_estimate(model, data, cfg)
    if need > cfg["max_memory_gb"] * 2 ** 30:
        raise ValueError(f"this solve needs about {need / 2 ** 30:.1f} GiB "
                         f"(> max_memory_gb={cfg['max_memory_gb']}); save less often (save_every), "
                         "pass kernels=False, or use fewer samples")
    return cfg


def _memory_estimate(model, data, cfg) -> float:
    """Bytes for the largest arrays a solve holds (float64)."""
    P, Pt, C, D = data.P, data.P_test, data.C, data.D
    r = min(D, P + Pt)
    T = cfg["steps"] // cfg["save_every"] + 1
    R = cfg["replicas"] if cfg["method"] in ("forward", "iterate") else 1
    per_save = P * C + Pt * C + (3 * P * P if cfg["kernels"] else 0) + 4
    total = R * T * per_save
    if cfg["method"] in ("forward", "iterate"):
        m = cfg["samples"] // R
        if cfg["sampler"] == "quadrature":
            m = quadrature_size(cfg["quadrature_nodes"], r, C, model.trained_readout)
        total += R * ((P + Pt) * P * 2 + m * (r + C) * 3 + m * (P + Pt) * 4)
        if cfg["method"] == "iterate":
            total += 4 * R * cfg["steps"] * P * C
    elif cfg["method"] == "closure":
        total += T * r * r + 4 * P * P
    return 8.0 * total


# ----------------------------------------------------------------- setup

def _dtype():
    return jnp.result_type(float)


def _geometry(data: Dataset) -> dict:
    """What depends on the inputs and targets only (numpy, once per dataset)."""
    dt = _dtype()
    x_tr = np.asarray(data.x_train, dtype=np.float64)
    x_all = x_tr if data.x_test is None else np.concatenate(
        [x_tr, np.asarray(data.x_test, dtype=np.float64)])
    l_all, basis = field_basis(x_all)
    return {"l_all": jnp.asarray(l_all, dt), "basis": basis,
            "kx_all_tr": jnp.asarray(input_kernel(x_all, x_tr), dt),
            "diag": jnp.asarray(np.sum(x_all * x_all, axis=1) / data.D, dt),
            "y": jnp.asarray(data.targets("train"), dt), "P": data.P, "r": l_all.shape[1]}


def _lazy_setup(geo: dict, act, gamma0, *, centered: bool, trained: bool, nodes: int) -> dict:
    """Lazy kernels and f(0) for one activation and gamma0 (traceable: these may be traced)."""
    P = geo["P"]
    diag = geo["diag"]
    phi0, g0 = lazy_kernels(act, geo["kx_all_tr"], diag, diag[:P], nodes=nodes)
    # quadrature is not exactly symmetric in (mu, nu): symmetrize the train block (built as a
    # new array: an in-place `.at[:P].set` that reads its own transpose is not symmetric under jit)
    phi0 = jnp.concatenate([(phi0[:P] + phi0[:P].T) / 2, phi0[P:]])
    g0 = jnp.concatenate([(g0[:P] + g0[:P].T) / 2, g0[P:]])
    k0 = lazy_ntk(phi0, g0, geo["kx_all_tr"], trained)
    c = geo["y"].shape[1]
    if centered or trained:
        f0 = jnp.zeros((diag.shape[0], c), diag.dtype)
    else:   # fixed readouts, uncentered: f(0) = E[phi(u)] / gamma0
        f0 = jnp.broadcast_to(jnp.asarray(act.mean(diag), diag.dtype)[:, None] / gamma0,
                              (diag.shape[0], c))
    return {**geo, "phi0": phi0, "g0": g0, "k0": k0, "f0": f0}


def _setup(model: TwoLayer, data: Dataset, cfg) -> dict:
    return _lazy_setup(_geometry(data), model.activation, model.gamma0, centered=model.centered,
                       trained=model.trained_readout, nodes=cfg["kernel_nodes"])


# ----------------------------------------------------------------- methods

def lazy_records(su, gamma0, eta0, saves, *, dynamics: str, trained: bool, has_test: bool):
    """Records of the lazy closed form at the saved step counts (traceable: gamma0 and
    eta0 may be traced, as in `dmft.batch`). Returns (records, delta)."""
    P = su["P"]
    delta, s = lazy_path(su["k0"][:P], su["y"] - su["f0"][:P], saves, eta0, dynamics=dynamics)
    rec = {"f_train": su["y"][None] - delta}
    if has_test:
        rec["f_test"] = su["f0"][P:][None] + jnp.einsum("ap,tpc->tac", su["k0"][P:], s) / P
    rec["alignment"] = jnp.full(saves.shape, alignment(su["k0"][:P], su["y"]))
    # linearized weights: delta_a = gamma0/P sum_mu phi(u_mu) S_mu, similarly for z
    scale = (gamma0 / P) ** 2
    gk = su["g0"][:P] * su["kx_all_tr"][:P]
    rec["sq_change_first"] = scale * jnp.einsum("tpc,pq,tqc->t", s, gk, s)
    rec["sq_change_readout"] = (scale * jnp.einsum("tpc,pq,tqc->t", s, su["phi0"][:P], s)
                                if trained else jnp.zeros(saves.shape, s.dtype))
    return rec, delta


def _solve_lazy(model, data, cfg, su):
    P = su["P"]
    saves = jnp.arange(0, cfg["steps"] + 1, cfg["save_every"])
    rec, _ = lazy_records(su, model.gamma0, cfg["eta0"], saves, dynamics=cfg["dynamics"],
                          trained=model.trained_readout, has_test=data.P_test > 0)
    k0 = su["k0"][:P]
    T = saves.shape[0]
    if cfg["kernels"]:
        rec.update(ntk=jnp.broadcast_to(k0, (T, P, P)),
                   feature_kernel=jnp.broadcast_to(su["phi0"][:P], (T, P, P)),
                   gradient_kernel=jnp.broadcast_to(su["g0"][:P], (T, P, P)))
    lam_max = float(jnp.max(jnp.linalg.eigvalsh(k0)))
    extra = {"lazy_eta0_stability": cfg["eta0"] * lam_max / P,
             "stable": bool(cfg["eta0"] * lam_max / P < 2) if cfg["dynamics"] == "gd" else True}
    return {k: np.asarray(v) for k, v in rec.items()}, extra


def _closure_ctx(act, su, gamma0, eta0, decay):
    P = su["P"]
    a, b = _closure.poly2_coefficients(act) or (1.0, 0.0)
    dt = _dtype()
    return _closure.Ctx(
        l_tr=su["l_all"][:P], lt_tr=su["l_all"][:P].T.copy(), l_te=su["l_all"][P:], y=su["y"],
        kx_tr=su["kx_all_tr"][:P],
        kxx_tr=su["diag"][:P], kxx_te=su["diag"][P:], f0_tr=su["f0"][:P], f0_te=su["f0"][P:],
        alpha=jnp.asarray(a, dt), beta=jnp.asarray(b, dt), gamma0=jnp.asarray(gamma0, dt),
        eta0=jnp.asarray(eta0, dt), decay=jnp.asarray(decay, dt))


def _solve_closure(model, data, cfg, su, progress):
    kind = cfg["closure_kind"]
    static = _closure.Static(kind, cfg["dynamics"], cfg["kernels"], data.P_test > 0)
    ctx = _closure_ctx(model.activation, su, model.gamma0, cfg["eta0"], cfg["weight_decay"])
    st0 = _closure.initial_state(kind, su["r"], data.C, _dtype())
    rec, _, wall = run_saved(_closure.step, _closure.record, static, ctx, st0,
                             save_every=cfg["save_every"],
                             n_intervals=cfg["steps"] // cfg["save_every"],
                             progress=progress, label=f"closure ({kind})")
    return rec, {"closure": kind, "run_s": wall}


def _shared_ctx(act, su, gamma0, eta0, decay):
    P = su["P"]
    dt = _dtype()
    return _ss.Shared(act=act, l_tr=su["l_all"][:P], l_te=su["l_all"][P:],
                      y=su["y"], kx_tr=su["kx_all_tr"][:P], f0_tr=su["f0"][:P], f0_te=su["f0"][P:],
                      gamma0=jnp.asarray(gamma0, dt), eta0=jnp.asarray(eta0, dt),
                      decay=jnp.asarray(decay, dt), k0_tr=su["k0"][:P],
                      k0_te=su["k0"][P:])


def _replicas(act, trained, cfg, su, key):
    sites = draw_sites(key, cfg["sampler"], cfg["samples"], cfg["replicas"], su["r"],
                       su["y"].shape[1], trained, nodes=cfg["quadrature_nodes"], dtype=_dtype())
    return _ss.init_replicas(act, su["l_all"], su["kx_all_tr"], su["phi0"], su["g0"],
                             sites.z, sites.a, sites.weight, p=su["P"], trained=trained,
                             cv=cfg["cv_mode"])


def _solve_sampled(model, data, cfg, su, key, progress):
    static = _ss.Static(model.trained_readout, cfg["dynamics"], cfg["kernels"], data.P_test > 0,
                        cfg["cv_mode"], cfg["neuron_measures"])
    sh = _shared_ctx(model.activation, su, model.gamma0, cfg["eta0"], cfg["weight_decay"])
    rep = _replicas(model.activation, model.trained_readout, cfg, su, key)
    st0 = _ss.initial_state(rep, su["P"])
    n_int = cfg["steps"] // cfg["save_every"]
    extra = {"nodes_per_replica": int(rep.w.shape[1]), "replicas": int(rep.w.shape[0])}
    drive = None
    if cfg["method"] == "iterate":
        P, W = su["P"], cfg["window"]
        delta_lazy, _ = lazy_path(su["k0"][:P], su["y"] - su["f0"][:P], jnp.arange(W),
                                  cfg["eta0"], dynamics="gd")
        R = rep.w.shape[0]
        delta0 = jnp.broadcast_to(delta_lazy, (R,) + delta_lazy.shape)
        t0 = time.perf_counter()
        delta, n, hist, res = _ss.iterate(static, cfg["max_iter"], W, cfg["steps"] // W, sh, rep,
                                          delta0, cfg["tol"], cfg["damping"])
        n, hist, res = np.asarray(n), np.asarray(hist), np.asarray(res)
        extra.update(window=W, iterations=n.tolist(),
                     residuals=[h[:k].tolist() for h, k in zip(hist, n)],
                     final_residual=float(np.max(res)), iterate_s=time.perf_counter() - t0)
        if not np.all(np.isfinite(res)):
            w = int(np.argmin(np.isfinite(res)))
            raise DivergenceError(
                f"iterate: the residual became non-finite in window {w} (steps {w * W} to "
                f"{(w + 1) * W}); residuals there: {hist[w][:n[w]].tolist()}",
                step=w * W, cause="non-finite Delta in the iteration")
        drive = jnp.moveaxis(delta, 0, 1).reshape(
            (n_int, cfg["save_every"]) + (R,) + delta.shape[2:])
        extra["converged"] = bool(np.all(res <= cfg["tol"]))
    rec, _, wall = run_saved(_ss.step, _ss.record, static, (sh, rep), st0,
                             save_every=cfg["save_every"], n_intervals=n_int, drive=drive,
                             progress=progress, label=cfg["method"])
    extra["run_s"] = wall
    return rec, extra


# ----------------------------------------------------------------- assembly

def _mse(y, f):
    return np.mean((y - f) ** 2, axis=tuple(range(-2, 0)))


def _assemble(model, data, cfg, rec, extra, t) -> Solution:
    y = np.asarray(data.targets("train"))
    yt = data.targets("test")
    sampled = cfg["method"] in ("forward", "iterate")
    error = None
    if sampled:
        R = rec["f_train"].shape[1]
        per_train = _mse(y, rec["f_train"])                        # (T, R)
        per_test = _mse(yt, rec["f_test"]) if (yt is not None and "f_test" in rec) else None
        if R > 1:
            se = lambda a: a.std(axis=1, ddof=1) / np.sqrt(R)      # noqa: E731
            error = {"train_loss": se(per_train), "f_train": se(rec["f_train"])}
            if per_test is not None:
                error["test_loss"] = se(per_test)
            if "f_test" in rec:
                error["f_test"] = se(rec["f_test"])
            if data.scalar:
                error = {k: (v[..., 0] if k.startswith("f_") else v) for k, v in error.items()}
        rec = {k: (v.mean(axis=1) if v.ndim >= 2 else v) for k, v in rec.items()}
    f_tr = rec["f_train"]
    f_te = rec.get("f_test")
    train_loss = _mse(y, f_tr)
    test_loss = _mse(yt, f_te) if (yt is not None and f_te is not None) else None
    sq_first = rec["sq_change_first"]
    if extra.get("basis") == "kernel-eigenbasis" and cfg["weight_decay"] > 0:
        # the D - r weight coordinates outside the data span only decay: add their change
        k = np.arange(0, cfg["steps"] + 1, cfg["save_every"])
        shrink = (1 - cfg["eta0"] * cfg["weight_decay"]) ** k if cfg["dynamics"] == "gd" else \
            np.exp(-cfg["weight_decay"] * cfg["eta0"] * k)
        sq_first = sq_first + (1 - shrink) ** 2 * (data.D - extra["rank"])
    wc = {"first_layer": np.sqrt(np.maximum(sq_first, 0) / data.D),
          "readout": np.sqrt(np.maximum(rec["sq_change_readout"], 0) / data.C)}
    if data.scalar:
        f_tr = f_tr[..., 0]
        f_te = None if f_te is None else f_te[..., 0]
    state = None
    if cfg["method"] == "closure":
        state = {k: rec[k] for k in ("mean", "second_moment", "covariance") if k in rec}
    est = {}
    if error:
        est = {k: float(np.max(v)) for k, v in error.items() if k.endswith("loss")}
    rms = {"train": float(np.sqrt(np.mean(y ** 2)))}
    if yt is not None:
        rms["test"] = float(np.sqrt(np.mean(yt ** 2)))
    info = {"method": cfg["method"], "dynamics": cfg["dynamics"], "target_rms": rms, **extra,
            "error_estimate": est or ({"exact": 0.0} if cfg["method"] in ("closure",) else est)}
    return Solution(t=t, f_train=f_tr, f_test=f_te, train_loss=train_loss, test_loss=test_loss,
                    ntk=rec.get("ntk"), feature_kernel=rec.get("feature_kernel"),
                    gradient_kernel=rec.get("gradient_kernel"), alignment=rec["alignment"],
                    weight_change=wc, error=error, info=info, state=state,
                    measures=rec.get("measures"))


def solve(model: TwoLayer, data: Dataset, eta0: float = 0.1, steps: int = 1000,
          save_every: int = 10, *, method: str = "auto", dynamics: str = "gd",
          samples: int = 16384, replicas: int = 4, sampler: str = "stratified", key=None,
          control_variate: bool | None = None, kernels: bool = True, weight_decay: float = 0.0,
          tol: float = 1e-12, max_iter: int = 200, damping: float = 1.0, window=None,
          kernel_nodes: int = 64, quadrature_nodes: int = 8, progress: bool = False,
          max_memory_gb: float = 4.0, neuron_measures=None) -> Solution:
    """Solve the two-layer DMFT (THEORY.md section 3) in DMFT time units.

    Args:
        model: `dmft.TwoLayer`.
        data: `dmft.Dataset`.
        eta0: gradient-descent step (or integrator step for dynamics="flow").
        steps: number of steps; must be a multiple of save_every.
        save_every: record every this many steps (t = k * eta0).
        method: "auto" (closure when exact, else forward), "forward", "iterate",
            "closure" or "lazy".
        dynamics: "gd" (gradient descent at step eta0, exactly) or "flow"
            (gradient flow, fourth-order Runge-Kutta with step eta0).
        samples: single-site nodes in total over all replicas (sampled methods).
        replicas: independent replicas; their spread gives `Solution.error`.
        sampler: "stratified", "orthogonal", "antithetic", "mc" or "quadrature"
            (`dmft.sampling`).
        key: `jax.random.key`; default key(0). Same key, same result.
        control_variate: correct node averages with the exact lazy kernel; None (default)
            means on without weight decay and off with it (decay moves the kernel far
            from K0, where the correction only adds noise).
        kernels: keep the (T, P, P) kernels (alignment is always computed).
        weight_decay: kappa >= 0 per unit time (THEORY.md section 8).
        tol, max_iter, damping: stopping rule and mixing of method="iterate".
        window: steps per time window of method="iterate" (windows are solved in
            order); default: the longest divisor of steps up to 10. Long windows
            converge only while the kernel moves little within them.
        kernel_nodes: Gauss-Hermite nodes per dimension for lazy kernels without
            a closed form.
        quadrature_nodes: nodes per dimension for sampler="quadrature".
        progress: show a progress bar.
        max_memory_gb: refuse solves whose arrays would exceed this.
        neuron_measures: None, or a function (w, w0) -> (K,) of one neuron's first-layer
            weights now and at t = 0 (jax-traceable): its single-site average is kept in
            `Solution.measures` (sampled methods, D <= P + P* so that nodes are weights).

    Returns:
        A `Solution`.

    Raises:
        ValueError: bad arguments (before any computation).
        DivergenceError: non-finite outputs, with the first bad step.
        NotConverged: method="iterate" above tol after max_iter iterations.
    """
    cfg = _validate(model, data, eta0, steps, save_every, dict(
        method=method, dynamics=dynamics, samples=samples, replicas=replicas, sampler=sampler,
        control_variate=control_variate, kernels=kernels, weight_decay=weight_decay, tol=tol,
        max_iter=max_iter, damping=damping, window=window, kernel_nodes=kernel_nodes,
        quadrature_nodes=quadrature_nodes, max_memory_gb=max_memory_gb,
        neuron_measures=neuron_measures))
    if key is None:
        key = jax.random.key(0)
    t_start = time.perf_counter()
    su = _setup(model, data, cfg)
    setup_s = time.perf_counter() - t_start
    if cfg["method"] == "lazy":
        rec, extra = _solve_lazy(model, data, cfg, su)
    elif cfg["method"] == "closure":
        rec, extra = _solve_closure(model, data, cfg, su, progress)
    else:
        rec, extra = _solve_sampled(model, data, cfg, su, key, progress)
    t = np.arange(0, cfg["steps"] + 1, cfg["save_every"]) * cfg["eta0"]
    extra.update(basis=su["basis"], rank=int(su["r"]),
                 lazy_kernels=("closed form" if model.activation.has_closed_form
                               else f"gauss-hermite {cfg['kernel_nodes']}x{cfg['kernel_nodes']}"),
                 dtype=str(_dtype()), backend=jax.default_backend(), setup_s=setup_s,
                 wall_s=time.perf_counter() - t_start)
    if cfg["method"] in ("forward", "iterate"):
        extra.update(sampler=cfg["sampler"], samples=cfg["samples"],
                     control_variate=cfg["control_variate"])
    config = {"model": model.describe(), "data": data.describe(),
              "solve": {k: v for k, v in cfg.items() if k not in ("max_memory_gb", "neuron_measures")}}
    if neuron_measures is not None:
        config["solve"]["neuron_measures"] = getattr(neuron_measures, "__name__", repr(neuron_measures))
    sol = _assemble(model, data, cfg, rec, {**extra, "config": config}, t)
    if cfg["method"] == "iterate" and not extra["converged"]:
        raise NotConverged(
            f"iterate: residual {extra['final_residual']:.3e} > tol={cfg['tol']:.1e} after "
            f"max_iter={cfg['max_iter']} iterations in some window (iterations per window: "
            f"{extra['iterations']}); residual histories in .residuals, last iterate in "
            ".solution. Try damping < 1, a shorter window, more max_iter, or method='forward'.",
            residuals=extra["residuals"], solution=sol)
    return sol
