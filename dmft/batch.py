"""Many solves of one shape in one compiled program: `dmft.BatchProgram`, `dmft.solve_batch`.

A phase diagram is hundreds of solves that differ only in scalars (gamma0, the
step eta0, the weight decay kappa, the eps of the quadratic activation). A
`BatchProgram` fixes everything that sets array shapes (model, data, steps,
solver, samples) and compiles one program, vmapped over a batch of points, that
maps those scalars to trajectories. Calls with the same batch size reuse it.

Each point draws its single-site nodes from `fold_in(key, index)`, with `index`
the point's place in the whole grid, so a point's draws do not depend on how the
grid was cut into batches or spread over devices; its numbers agree to rounding (another batch
size or device count is another compiled program: 3e-16 relative, more where a rich, long run
amplifies rounding), bit for bit only at the same program width. A point that diverges (a
non-finite value, or a train loss on its way to overflow, `runner.ran_away`) does
not stop the others: its `diverged_step` says where, and its values from that
saved step on are NaN.

Example:
    >>> import jax; jax.config.update("jax_enable_x64", True)
    >>> import dmft
    >>> data = dmft.tasks.kumar_quadratic(D=6, P=20, P_test=10, key=jax.random.key(0))
    >>> model = dmft.TwoLayer(dmft.activations.quadratic(0.5), gamma0=1.0, readout="fixed")
    >>> res = dmft.solve_batch(model, data, {"gamma0": [0.5, 1.0, 2.0]}, eta0=0.5, steps=40,
    ...                        save_every=20)
    >>> res["test_loss"].shape, res["diverged_step"].tolist()
    ((3, 3), [-1, -1, -1])
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import time
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from . import checks
from . import closure as _closure
from . import runner as _runner
from . import single_site as _ss
from .activations import grid_nodes, quadratic
from .errors import InputError, MemoryLimitError, warn
from .geometry import geometry, host_kernels, lazy_setup
from .lazy import lazy_records
from .plan import (MIXED_MIN_GAMMA0, check_mixed_scale, check_sampled_gamma0, check_scale_values, memory_estimate,
                   plan_solve)
from .problem import Dataset, TwoLayer
from .single_site import few_nodes
from .solve import CV_NOISE_MAX, CV_NOISE_REPLICAS, CV_NOISE_SCALE, cv_noise_hits, cv_noise_measure, setup_kernels
from .runner import (count_trace, exact_products, first_nonfinite, first_runaway, next_call, progress_bar,
                     scan_records)
from .schedule import (Schedule, check_batch_key, check_decay, decay_factor, default_batch_key, final_time_counts,
                       schedule_from)

__all__ = ["BATCH_FIELDS", "BatchProgram", "solve_batch"]

BATCH_FIELDS = ("gamma0", "eta0", "weight_decay", "eps")
_BATCH_METHODS = ("auto", "forward", "closure", "lazy")


def check_values(field: str, values) -> np.ndarray:
    """Values of one batched field as a float64 vector; ValueError naming the field."""
    if field not in BATCH_FIELDS:
        raise InputError(f"unknown batch field {field!r}; known: {', '.join(BATCH_FIELDS)}")
    try:
        raw = np.asarray(values)
        items = np.asarray(values, dtype=object).reshape(-1)   # each as given ([True, 0.5] is float64)
        if (raw.dtype.kind not in "iuf" or raw.ndim > 1       # booleans and text are not numbers
                or any(isinstance(x, (bool, np.bool_, str, bytes)) for x in items)):
            raise TypeError
        v = raw.astype(np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"{field}: values must be a sequence of real numbers, got {values!r}") from None
    if v.size == 0:
        raise InputError(f"{field}: no values")
    bad = ~np.isfinite(v)
    if field in ("gamma0", "eta0"):
        bad |= v <= 0
    elif field == "weight_decay":
        bad |= v < 0
    if bad.any():
        # (finite in every rule: "eta0 must be > 0; bad value(s) [inf]" read as a contradiction)
        rule = {"gamma0": "finite and > 0", "eta0": "finite and > 0",
                "weight_decay": "finite and >= 0"}.get(field, "finite")
        raise InputError(f"{field} must be {rule}; bad value(s) {v[bad][:5].tolist()} "
                         f"at position(s) {np.flatnonzero(bad)[:5].tolist()}")
    return v


class _Static:
    """Hashable description of one batch program (everything that is not a traced scalar)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
        self._key = tuple(sorted((k, repr(v)) for k, v in kw.items()))

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key

    def replace(self, **kw) -> "_Static":
        return _Static(**{**{k: v for k, v in self.__dict__.items() if k != "_key"}, **kw})


class BatchProgram:
    """One compiled program for many points that differ only in scalar fields.

    Args:
        model, data: as for `dmft.solve`; their gamma0 (and eps) are the defaults
            for fields not batched.
        eta0, steps, save_every: as for `dmft.solve` (eta0 is the default when it
            is not a batched field; steps and save_every are shared).
        fields: the batched scalars, a subset of BATCH_FIELDS ("eps" only with the
            quadratic activation h + eps/2 h^2).
        method: "auto" (closure when exact, else forward), "forward", "closure" or
            "lazy" (the self-consistent "iterate" is not batched).
        curves: also return f_train and f_test at every saved time.
        state: also return the closure state (poly2-fixed: mean and second moment).
        interruptible: run a call's points in compiled calls of about `runner.CALL_SECONDS`
            each (after a first one of about `runner.FIRST_CALL_STEPS` / n steps that measures
            the rate), handing the points' states back in between, so that Ctrl-C and SIGTERM
            (which act only when the running XLA call returns) stop it within seconds; by
            default a call is one compiled program over the whole schedule, and an interruption
            waits for all of it (minutes with many steps). The calls are cut as
            `runner.run_saved` cuts a solve's (silent calls inside long save intervals, whole
            intervals in power-of-two groups: a few compiled lengths), each as long as its
            slowest point (with final_time the points with the smaller eta0 take more steps);
            the forward method's replicas are drawn once and carried, the rest of the points'
            contexts built again in every call, as the one program builds them (a few ms); the
            numbers are the one program's, bit for bit on a CPU (but for the records at step 0,
            which the cut run computes in a program of its own: their rounding can differ, as
            in the train loss's error bar under the control variate, zero to rounding there,
            6e-18 against 5e-18, and node_share_drift, 1 ulp; under minibatch SGD to
            rounding: a few 1e-16, XLA compiling the batch's row gathers in the two programs
            its own ways; on a GPU, which compiles each call's program apart, to rounding
            too), and the peak memory within
            `memory_estimate`. The lazy method always runs in one call (a closed form; under
            minibatch SGD a loop over the steps, which an interruption waits for).
        node_split: as for `dmft.solve`: each replica's nodes integrated as k populations (the
            points' records then have R k replicas; scan.node_check's programs).
        Other arguments as for `dmft.solve`.

    Calling it: `prog(values, index, key=None, sharding=None, batch_key=None)` with values a dict
    of (n,) arrays (one per field), index the (n,) grid positions (they pick the
    random nodes), and optionally a `jax.sharding.Sharding` for the point axis. Under a
    schedule with a batch_size (minibatch SGD) every point trains on the one batch sequence
    `batch_key` (default `dmft.schedule.default_batch_key(key)`), the DMFT conditioned on it as
    `dmft.solve(batch_key=)` is; under full batch a batch_key is refused, as there.
    Returns a dict of numpy arrays with leading axis n (see `solve_batch`). The forward method's
    lazy-kernel control variate is checked point by point as `dmft.solve` checks it (its noise
    against the same nodes' without it): named where it dominates, and where it was the solver's
    choice and the point diverged or ended unresolved, that point is solved again without it
    (`_judge_control_variate`).
    """

    @exact_products
    def __init__(self, model: TwoLayer, data: Dataset, eta0=None, steps=None, save_every=None, *,
                 schedule: Schedule | None = None, fields=("gamma0",), method: str = "auto",
                 dynamics=None, samples: int = 4096, replicas: int = 4,
                 sampler: str = "stratified", weight_decay=None,
                 control_variate: bool | None = None, kernel_nodes: int = 64,
                 quadrature_nodes: int = 8, curves: bool = False, state: bool = False,
                 max_memory_gb: float = 4.0, final_time: float | None = None,
                 precision: str = "full", interruptible: bool = False, node_split: int = 1):
        if isinstance(eta0, Schedule):
            schedule, eta0 = eta0, None
        given = {k: v for k, v in dict(eta0=eta0, steps=steps, save_every=save_every,
                                       dynamics=dynamics, weight_decay=weight_decay).items()
                 if v is not None}
        sch = schedule_from(schedule, **given, defaults=dict(eta0=0.1, steps=1000))
        if isinstance(fields, str):
            fields = (fields,)
        fields = tuple(fields)
        if not fields:
            raise InputError("fields: give at least one batched field")
        for f in fields:
            if f not in BATCH_FIELDS:
                raise InputError(f"fields: unknown batch field {f!r}; known: {', '.join(BATCH_FIELDS)}")
        if len(set(fields)) != len(fields):
            raise InputError(f"fields: repeated names in {fields}")
        if method not in _BATCH_METHODS:
            raise InputError(f"method must be one of {_BATCH_METHODS} for a batch, got {method!r}"
                             + (" (iterate is not batched; it agrees with forward)" if method == "iterate" else ""))
        if "weight_decay" in fields and control_variate is None:
            control_variate = False          # as dmft.solve does whenever the decay may be > 0
        plan = plan_solve(model, data, sch, method=method, samples=samples, replicas=replicas,
                          sampler=sampler, control_variate=control_variate, kernels=False,
                          kernel_nodes=kernel_nodes, quadrature_nodes=quadrature_nodes,
                          max_memory_gb=max_memory_gb, precision=precision, node_split=node_split)
        one = memory_estimate(dataclasses.replace(plan, kernels=False), at_once=plan.replicas)
        if one > plan.max_memory_gb * 2 ** 30:      # a batch vmaps every replica of every point
            raise MemoryLimitError(f"one point of a batch needs about {one / 2 ** 30:.3g} GiB (> max_memory_gb="
                             f"{plan.max_memory_gb}): a batch integrates all its replicas at once; use "
                             "fewer samples or save less often (dmft.solve runs replicas a few at a time)")
        if "eps" in fields and model.activation.name != "quadratic":
            raise InputError("fields: 'eps' is a parameter of the quadratic activation only; "
                             f"this model's activation is {model.activation.name!r}")
        if plan.method == "lazy" and "weight_decay" in fields:
            raise InputError("fields: weight_decay moves the kernel; the lazy method has none")
        if state and plan.method != "closure":
            raise InputError("state=True needs the closure method (the state is its mean and moments)")
        self.model, self.data, self.fields, self.schedule = model, data, fields, sch
        self.max_memory_gb = plan.max_memory_gb
        # a fixed final time: every point trains to t = final_time and saves at the same times,
        # whatever its eta0 (its step counts follow from its eta0, point by point)
        self.final_time = None if final_time is None else checks.real("final_time", final_time, positive=True)
        self.plan = plan
        self.curves, self.state = checks.flag("curves", curves), checks.flag("state", state)
        self.interruptible = checks.flag("interruptible", interruptible)
        self.method = plan.method
        self._geo = geometry(data)
        self._static = _Static(
            method=plan.method, closure_kind=plan.closure_kind, dynamics=sch.dynamics,
            sampler=plan.sampler, samples=plan.samples, replicas=plan.replicas, node_split=plan.node_split,
            quadrature_nodes=plan.quadrature_nodes,
            kernel_nodes=(plan.kernel_nodes if model.activation.quadrature == "closed form"   # (no grid, nor
                          else grid_nodes(float(np.max(self._geo["diag"])), plan.kernel_nodes)),  # its warning)
            cv_mode=plan.cv_mode, control_variate=plan.control_variate, precision=plan.precision,
            save_steps=tuple(int(k) for k in sch.save_steps), per_point=self.final_time is not None,
            trained=model.trained_readout, centered=model.centered, has_test=data.P_test > 0,
            has_y_test=data.y_test is not None, P=data.P, D=data.D, C=data.C,
            r=int(self._geo["r"]), basis=self._geo["basis"], curves=self.curves, state=self.state,
            batch=(int(sch.batch_size) if sch.batch_size is not None and sch.batch_size < data.P else 0))
        raw = host_kernels(self._geo, model.activation, self._static.kernel_nodes)   # (once, before any trace)
        if raw is None and model.activation.quadrature != "closed form":
            # a quadrature rule's kernels do not depend on the batched fields (eps is the closed-form
            # quadratic's): those of dmft.solve's setup cache, not integrated again in every call
            raw = setup_kernels(plan)
        if raw is not None:
            self._geo["lazy_kernels"] = raw
        self._defaults = {"gamma0": float(model.gamma0), "eta0": sch.eta0,
                          "weight_decay": sch.weight_decay,
                          "eps": (2.0 * float(model.activation.params[1])
                                  if model.activation.name == "quadratic" else 0.0)}
        self._y_test = (None if data.y_test is None
                        else jnp.asarray(data.targets("test"), self._geo["y"].dtype))

    def memory_estimate(self, points: int) -> float:
        """Peak bytes of one call with `points` points (everything is per point under vmap, all
        replicas at once; where no eps is batched, a lazy or closure batch's setup once, and the
        lazy eigenbasis too: `dmft.plan.memory_estimate(shared_setup=)`)."""
        plan = dataclasses.replace(self.plan, kernels=False)
        return memory_estimate(plan, points=points, at_once=plan.replicas, shared_setup="eps" not in self.fields)

    def result_bytes(self, points: int) -> float:
        """Bytes of the arrays a call returns for `points` points (float64; at most, summed over
        every key): a few (n, T) records, each replica's losses (n, T, R), with curves=True the
        predictions (n, T, P + P*, C), and with state=True the closure's moments (n, T, n_s, n_s).
        `solve_batch` holds them for every point of its grid, not one batch's."""
        plan, data = self.plan, self.data
        T = self.schedule.save_steps.size
        R = plan.replicas * plan.node_split if plan.sampled else 1
        per_save = 16 + 2 * R
        if self.curves:
            per_save += (data.P + data.P_test) * data.C
        if self.state and plan.method == "closure":
            n = int(self._geo["r"]) + (data.C if plan.closure_kind == "linear-trained" else 0)
            per_save += n * n + n
        return 8.0 * points * (T * per_save + 8)

    def check_results(self, points: int, batch_size: int) -> None:
        """Refuse `points` points solved `batch_size` at a time where one batch's estimate and every
        point's results (twice: their parts and their concatenation) pass max_memory_gb
        (MemoryLimitError; `solve_batch` calls it before its first batch, a job's preflight can)."""
        need = self.memory_estimate(min(batch_size, points)) + 2.0 * self.result_bytes(points)
        if need > self.max_memory_gb * 2 ** 30:
            raise MemoryLimitError(
                f"solve_batch: {points} points need about {need / 2 ** 30:.3g} GiB (> max_memory_gb={self.max_memory_gb}), "
                f"{2 * self.result_bytes(points) / 2 ** 30:.3g} GiB of it the results every point keeps; solve fewer "
                "points per call, save less often" + (", pass curves=False" if self.curves else "")
                + (", pass state=False" if self.state else "") + " or use a smaller batch_size")

    def check_memory(self, points: int, max_memory_gb: float) -> None:
        """Refuse a call of `points` points whose estimate exceeds max_memory_gb (InputError
        naming the knob: batch_size or chunk, samples)."""
        need = self.memory_estimate(points)
        if need > max_memory_gb * 2 ** 30:
            raise MemoryLimitError(f"{points} points at once need about {need / 2 ** 30:.3g} GiB (> max_memory_gb="
                             f"{max_memory_gb}); use a smaller batch_size (solve_batch) or chunk (scan), "
                             "fewer samples, or save less often")

    def describe(self) -> dict:
        """The configuration as a JSON-able dict."""
        d = self.plan.describe()
        for k in ("kernels", "tol", "max_iter", "damping", "window"):
            d["solve"].pop(k, None)
        return {**d, "fields": list(self.fields), "curves": self.curves, "state": self.state}

    @property
    def times_per_eta0(self) -> np.ndarray:
        """Saved step counts (t = count * eta0)."""
        return self.schedule.save_steps

    def save_counts(self, eta0) -> np.ndarray:
        """(n, T) saved step counts of points with step sizes eta0 (n,): the schedule's for every
        point, or with final_time the steps nearest to the common times
        t_j = final_time * j / (T - 1) (InputError when an eta0 is too large for that grid)."""
        eta0 = np.asarray(eta0, dtype=np.float64).reshape(-1)
        if self.final_time is None:
            return np.broadcast_to(self.schedule.save_steps, (eta0.size, self.schedule.save_steps.size))
        return final_time_counts(self.final_time, self.schedule.save_steps.size, eta0)

    def _check_mixed_scale(self, cols: dict) -> None:
        """precision='mixed''s data-scale rule (`check_mixed_scale`) at the grid's worst corner: its
        smallest gamma0 and, for a batch over eps, its largest |eps| (the output scale
        sqrt(E[phi(h)^2]) of h + (eps / 2) h^2 grows with eps^2)."""
        model, where = self.model, []
        if "eps" in cols:
            eps = float(np.max(np.abs(cols["eps"])))
            model = dataclasses.replace(model, activation=quadratic(eps))
            where.append(f"largest |eps| ({eps:g})")
        gamma0 = float(cols["gamma0"].min()) if "gamma0" in cols else None
        if gamma0 is not None:
            where.append(f"smallest gamma0 ({gamma0:g})")
        try:
            check_mixed_scale(model, self.data, gamma0=gamma0, method=self.method)
        except InputError as err:
            raise InputError(f"{err} (judged at the grid's {' and '.join(where)})") from None

    def check_points(self, values: Mapping) -> tuple[dict, np.ndarray]:
        """Every check a point gets before it is run, the same as `dmft.solve` makes on one
        (`dmft.Schedule`'s eta0 * weight_decay < 1 for gradient descent, through the same
        `check_decay`; a finite final time; with final_time, save counts that fit the grid;
        precision='mixed' gamma0): (the validated columns, their eta0) or an InputError naming
        the field and the first bad points. `solve_batch` calls it on the whole grid before the
        first batch runs."""
        if not isinstance(values, Mapping):
            raise InputError(f"values: give a {{field: values}} mapping, got {type(values).__name__}")
        missing = [f for f in self.fields if f not in values]
        extra = [f for f in values if f not in self.fields]
        if missing or extra:
            raise InputError(f"values: expected the fields {list(self.fields)}; "
                             f"missing {missing}, unexpected {extra}")
        cols = {f: check_values(f, values[f]) for f in self.fields}
        if len({len(v) for v in cols.values()}) != 1:
            raise InputError(f"values: every field needs the same number of values, got "
                             f"{ {f: len(v) for f, v in cols.items()} }")
        n = len(next(iter(cols.values())))
        if self._static.precision == "mixed" and "gamma0" in cols and cols["gamma0"].min() < MIXED_MIN_GAMMA0:
            raise InputError(f"precision='mixed' needs gamma0 >= {MIXED_MIN_GAMMA0}; got "
                             f"{cols['gamma0'].min():g} (its float32 rounding is divided by gamma0)")
        if self._static.precision == "mixed" and ("gamma0" in cols or "eps" in cols) and jax.config.jax_enable_x64:
            self._check_mixed_scale(cols)
        for f in ("gamma0", "eta0"):                 # the float range dmft.solve's check_scales holds
            if f in cols:
                check_scale_values(f, cols[f])
        if "gamma0" in cols:
            check_sampled_gamma0(self._static.method, cols["gamma0"])
        eta = cols["eta0"] if "eta0" in cols else np.full(n, self._defaults["eta0"])
        kappa = cols["weight_decay"] if "weight_decay" in cols else np.full(n, self._defaults["weight_decay"])
        check_decay(eta, kappa, self.schedule.dynamics)
        counts = self.save_counts(eta)
        with np.errstate(over="ignore"):
            t_end = counts[:, -1] * eta
        if not np.all(np.isfinite(t_end)):
            raise InputError(f"eta0: t = steps x eta0 overflows for eta0 = {eta[~np.isfinite(t_end)][:3].tolist()}")
        return cols, eta

    @exact_products
    def __call__(self, values: Mapping, index, key=None, sharding=None, batch_key=None) -> dict:
        # (refused under full batch, which draws none, as `dmft.solve` and `networks.train` refuse it)
        batch_key = check_batch_key(batch_key, self.schedule.batch_size, self.data.P)
        cols, eta = self.check_points(values)
        n = {len(v) for v in cols.values()}
        index = np.asarray(index)
        if index.ndim > 1:
            raise InputError(f"index: one grid position per point (a vector), got shape {index.shape}")
        index = index.reshape(-1)
        self.check_memory(index.size, self.max_memory_gb)
        if len(n) != 1 or index.size not in n or not np.issubdtype(index.dtype, np.integer):
            raise InputError(f"values and index must all have one length n; got lengths "
                             f"{ {f: len(v) for f, v in cols.items()} } and index {index.shape} "
                             f"({index.dtype})")
        if index.size and (index.min() < 0 or index.max() > 2 ** 32 - 1):
            raise InputError(f"index: grid positions must be in [0, 2^32 - 1] (they are folded into "
                             f"the key), got {index.min()} to {index.max()}")
        key = checks.prng_key("key", key)
        key = jax.random.key(0) if key is None else key
        dt = self._geo["y"].dtype
        full = {f: jnp.asarray(cols[f] if f in cols else np.full(index.size, self._defaults[f]), dt)
                for f in BATCH_FIELDS}
        idx = jnp.asarray(index, jnp.uint32)
        if sharding is not None:
            full = jax.device_put(full, sharding)
            idx = jax.device_put(idx, sharding)
        geo = {k: v for k, v in self._geo.items() if k not in ("basis", "P", "r")}
        if self._static.batch:          # every point on one minibatch sequence, as dmft.solve's
            geo["batch_key"] = default_batch_key(key) if batch_key is None else batch_key
        counts = self.save_counts(eta)
        full["counts"] = jnp.asarray(counts, jnp.int32)
        if sharding is not None:
            full["counts"] = jax.device_put(full["counts"], sharding)
        gamma0 = cols["gamma0"] if "gamma0" in cols else np.full(index.size, self._defaults["gamma0"])
        res, noise = self._dispatch(self._static, geo, full, idx, key, counts, eta, gamma0, sharding)
        if self.method == "forward" and self._static.cv_mode != "off":
            res = self._judge_control_variate(res, noise, geo, full, idx, key, counts, eta, gamma0, sharding)
        if "effective_node_share" in res:           # as `dmft.solve` flags a heavy-tailed site law
            res["heavy_tailed"] = np.any(few_nodes(res["effective_node_share"],
                                                   self.plan.samples // self.plan.replicas,
                                                   None if self.plan.sampler == "quadrature"
                                                   else res.get("node_share_drift")), axis=1)
        return res

    def _dispatch(self, st, geo, full, idx, key, counts, eta, gamma0, sharding=None):
        """(`_finish`ed results, (ratio, scale) of the control variate's noise per point and save or
        None) of one call's points under the static configuration st."""
        if self.interruptible and self.method != "lazy" and counts.shape[1] > 1:
            out = _run_cut(st, geo, self._y_test, self.model.activation, full, idx, key, counts, sharding)
        else:
            out = _run(st, geo, self._y_test, self.model.activation, full, idx, key)
        out = jax.tree_util.tree_map(np.asarray, out)
        noise = (out.pop("cv_noise.ratio"), out.pop("cv_noise.scale")) if "cv_noise.ratio" in out else None
        res = _finish(out, counts, eta, gamma0=gamma0, y_ms=float(np.mean(np.asarray(self._geo["y"]) ** 2)))
        if noise is not None:                   # NaN from a point's divergence on, as its records
            gone = np.isnan(res["train_loss"])
            noise = tuple(np.where(gone, np.nan, a) for a in noise)
        return res, noise

    def _judge_control_variate(self, res, noise, geo, full, idx, key, counts, eta, gamma0, sharding=None):
        """`dmft.solve`'s control-variate noise check, point by point: where the train predictions'
        spread over replicas with the correction is above CV_NOISE_MAX times the same nodes' without
        it, at a spread above CV_NOISE_SCALE of the targets' RMS, the point is named
        (res["control_variate_noisy"]); where the control variate was the solver's choice and the
        point diverged, or ended with a spread above the targets' RMS (named or not: the correction
        can destabilize the run itself, and then the ratio does not see it), it is solved again
        without it on the same nodes (res["control_variate_off"]), unless that run diverges too, or
        (a point that did not diverge) its final train loss has no smaller standard error: then the
        first result stands, with a warning for an unresolved one. noise: None with fewer than CV_NOISE_REPLICAS replicas (nothing is named;
        a diverged point is still solved again, as `dmft.solve` does at any replica count)."""
        n = res["diverged_step"].size
        noisy = unresolved = np.zeros(n, bool)
        if noise is not None:
            ratio, scale = noise
            noisy = np.any(cv_noise_hits(ratio, scale), axis=1)
            with np.errstate(invalid="ignore"):         # (whatever the ratio, as `dmft.solve`)
                unresolved = scale[:, -1] > 1.0
        off, kept = np.zeros(n, bool), np.zeros(0, int)
        rows = np.flatnonzero((res["diverged_step"] >= 0) | unresolved) if self.plan.cv_auto else np.zeros(0, int)
        if rows.size:       # (the whole call again, of one shape: each point as control_variate=False
            #                  gives it, bit for bit; a subset's program rounded otherwise, and wide
            #                  saturating inputs amplify rounding to 1e-3 over a few hundred steps)
            st = self._static.replace(cv_mode="off", control_variate=False)
            again, _ = self._dispatch(st, geo, full, idx, key, counts, eta, gamma0, sharding)
            # an unresolved point that did not diverge keeps its first run where the second diverges
            # or its final train loss is no better known (the correction keeps it stable: a catapult
            # stopped mid-rise), as `dmft.solve` keeps it
            with np.errstate(invalid="ignore"):      # (one replica: no error, no unresolved point)
                better = (again["error.train_loss"][rows, -1] < res["error.train_loss"][rows, -1]
                          if "error.train_loss" in res else np.ones(rows.size, bool))
            first_ok = res["diverged_step"][rows] < 0
            keep = first_ok & ((again["diverged_step"][rows] >= 0) | ~better)
            kept = rows[keep]
            rows = rows[~keep & (again["diverged_step"][rows] < 0)]
            for k in res:
                if k in again:
                    res[k][rows] = again[k][rows]
            off[rows] = True
        res["control_variate_noisy"] = noisy
        res["control_variate_off"] = off
        if noisy.any() or off.any() or kept.size:
            pos = np.asarray(idx)            # (a padded call repeats its last point: count positions)
            said, total = [], np.unique(pos).size
            if noisy.any():
                said.append(f"the lazy-kernel control variate adds noise at {np.unique(pos[noisy]).size} of "
                            f"{total} points "
                            f"(their predictions' spread over replicas above {CV_NOISE_MAX:g}x what the same nodes "
                            f"give without it, and above {CV_NOISE_SCALE:g} of the targets' RMS; "
                            "res['control_variate_noisy'])")
            if off.any():
                said.append(f"{np.unique(pos[off]).size} point(s) that diverged or ended unresolved with it were "
                            "solved again without it, and did not diverge (res['control_variate_off'])")
            if kept.size:
                said.append(f"{np.unique(pos[kept]).size} point(s) that ended unresolved with it (spread over "
                            "replicas above the targets' RMS) keep it: without it they diverged or their train loss "
                            "was no better known (the correction keeps them stable; read their error bars)")
            warn("solve_batch: " + "; ".join(said) + CV_ADVICE)
        return res


# the end of solve_batch's control-variate warning (a scan, which has no such setting, replaces it)
CV_ADVICE = (". The kernel has moved far from its lazy value K0 (wide inputs with a saturating activation, "
             "for one): control_variate=False solves every point without it")


def _finish(out: dict, counts: np.ndarray, eta0, gamma0=None, y_ms=None) -> dict:
    """Times, and NaN where a point went bad: after the state's flag (bad = k: the update from
    k to k + 1 steps was not finite, so saves after more than k steps; the save at k is kept, as
    `dmft.solve` keeps it), and from the first save where any output is not finite (a loss can
    overflow while the state has not) or, given the points' gamma0 and the targets' mean square
    y_ms, where the train loss runs away (`runner.ran_away`, as `dmft.solve` raises).
    counts: (n, T)."""
    bad = out.pop("bad").astype(np.int64)
    T = counts.shape[1]
    mask = (bad[:, None] >= 0) & (counts > bad[:, None])                # (n, T)
    for i in range(bad.size):
        j, _ = first_nonfinite({k: np.asarray(v)[i] for k, v in out.items()
                                if np.ndim(v) >= 2 and np.shape(v)[1] == T})
        if gamma0 is not None and "train_loss" in out:
            j = first_runaway(out["train_loss"][i], y_ms, gamma0[i], before=j)
        if j >= 0:
            mask[i, j:] = True
            if bad[i] < 0 or bad[i] > counts[i, j]:
                bad[i] = counts[i, j]
    res = {"t": counts * np.asarray(eta0)[:, None]}
    for k, v in out.items():
        v = np.array(v, dtype=v.dtype, copy=True)
        m = mask.reshape(mask.shape + (1,) * (v.ndim - 2))
        res[k] = np.where(m, np.nan, v)
    res["diverged_step"] = bad
    return res


def _activation(act, eps):
    if act.name != "quadratic":
        return act
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(act),
                                        [jnp.ones_like(eps), eps / 2])


def _mse(y, f):
    return jnp.mean((y - f) ** 2, axis=(-2, -1))


def _method(st: _Static):
    """(static, step, record) of the point's stepped solver, closure or forward."""
    if st.method == "closure":
        return (_closure.Static(st.closure_kind, st.dynamics, False, st.has_test, batch=st.batch),
                _closure.step, _closure.record)
    return _ss.Static(st.trained, st.dynamics, False, st.has_test, st.cv_mode, batch=st.batch), _ss.step, _ss.record


def _setup(st: _Static, geo, act0, v):
    """(the point's activation, its `lazy_setup`) (traced)."""
    act = _activation(act0, v["eps"])
    geo = {**geo, "P": st.P, "r": st.r}
    su = lazy_setup(geo, act, v["gamma0"], centered=st.centered, trained=st.trained, nodes=st.kernel_nodes)
    return act, {**su, "batch_key": geo.get("batch_key")}       # (None: full batch)


def _saves(st: _Static, v):
    """(save steps, gaps between them, last step) of one point (traced)."""
    if st.per_point:                     # this point's own save steps (a fixed final time)
        saves = v["counts"]
        return saves, jnp.diff(saves), saves[-1]
    saves_np = np.asarray(st.save_steps)
    return jnp.asarray(saves_np), np.diff(saves_np), int(saves_np[-1])


def _context(st: _Static, act, su, v, key, rep=None):
    """(context, initial state) of the point's stepped solver (traced): for the forward method
    the replicas `rep`, or when None their nodes drawn from `key`."""
    mixed = st.precision == "mixed"
    if st.method == "closure":
        ctx = _closure.make_context(act, su, v["gamma0"], v["eta0"], v["weight_decay"], su["batch_key"],
                                    mixed=mixed)
        return ctx, _closure.initial_state(st.closure_kind, st.r, st.C, su["y"].dtype)
    sh = _ss.make_shared(act, su, v["gamma0"], v["eta0"], v["weight_decay"], su["batch_key"], mixed=mixed)
    if rep is None:
        rep = _ss.make_replicas(act, su, key, sampler=st.sampler, samples=st.samples,
                                replicas=st.replicas, quadrature_nodes=st.quadrature_nodes,
                                trained=st.trained, cv=st.cv_mode, node_split=st.node_split)
    return (sh, rep), _ss.initial_state(rep, st.P, _method(st)[0])


def _joined(first, recs):
    """The record at step 0 ahead of those of the intervals."""
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, recs)


def _first_bad(bad, steps):
    """The earliest bad step over the point's replicas, or -1."""
    bad = jnp.min(jnp.where(bad >= 0, bad, steps + 1))
    return jnp.where(bad > steps, -1, bad)


def _point(st: _Static, geo, y_test, act0, v, key, state=None, last=None):
    """Everything for one point (traced; vmapped over points). state, last: the last call of a cut
    run of one interval (`_last`): its steps start from `state` and take `last` steps."""
    act, su = _setup(st, geo, act0, v)
    saves, gaps, steps = _saves(st, v)
    if st.method == "lazy":
        rec, delta, _, gone = lazy_records(su, v["gamma0"], v["eta0"], saves, dynamics=st.dynamics,
                                           trained=st.trained, has_test=st.has_test,
                                           batch_key=su["batch_key"], batch=st.batch)
        ok = jnp.all(jnp.isfinite(delta), axis=(1, 2))
        bad = jnp.where(jnp.all(ok), -1, saves[jnp.argmin(ok)])
        # gradient descent past its stability, from the save its loss first rises (`lazy.loss_rose`):
        # NaN from there on, as a non-finite output is (`_finish`)
        rec = {k: jnp.where(gone.reshape(gone.shape + (1,) * (a.ndim - 1)), jnp.nan, a) for k, a in rec.items()}
    else:
        static, step, record = _method(st)
        ctx, s0 = _context(st, act, su, v, key)
        first = record(static, ctx, s0)
        final, recs = scan_records(step, record, static, ctx, s0 if state is None else state,
                                   gaps if last is None else last)
        rec = _joined(first, recs)
        bad = _first_bad(final.bad, steps)
    return _outputs(st, su["y"], y_test, v, saves, rec, bad)


def _outputs(st: _Static, y, y_test, v, saves, rec, bad):
    """A point's outputs from its records at every save (traced)."""
    out = {}
    if st.method == "forward":     # replica axis 1: mean, and the spread as an error estimate
        R = rec["f_train"].shape[1]
        cv = rec.pop("cv_train", None)
        rec.pop("cv_test", None)
        if cv is not None and R >= CV_NOISE_REPLICAS:      # (`dmft.solve`'s measure, in the point's program)
            out["cv_noise.ratio"], out["cv_noise.scale"] = cv_noise_measure(y, rec["f_train"], cv, xp=jnp)
        out["effective_node_share"] = jnp.min(rec.pop("node_share"), axis=1)   # the least replica's
        out["node_share_drift"] = jnp.median(rec.pop("node_share_drift"), axis=1)   # the replicas' median
        if R // st.node_split > 1:
            se = _ss.replica_se
            # each replica's own losses (T, R), as `Solution.replicas`: their spread is the error
            out["replicas.train_loss"] = _mse(y[None, None], rec["f_train"])
            out["error.train_loss"] = se(out["replicas.train_loss"])
            # the pooled loss's excess from its mean prediction's spread, the mean square of that
            # prediction's errors (`validation.node_bias`'s pooled_noise)
            out["pooled_noise.train_loss"] = jnp.mean(se(rec["f_train"]) ** 2, axis=(1, 2))
            if st.has_y_test:
                out["replicas.test_loss"] = _mse(y_test[None, None], rec["f_test"])
                out["error.test_loss"] = se(out["replicas.test_loss"])
                out["pooled_noise.test_loss"] = jnp.mean(se(rec["f_test"]) ** 2, axis=(1, 2))
            out["error.alignment"] = se(rec["alignment"])
            se_sq = {g: se(rec[f"sq_weight_change.{g}"]) for g in ("first_layer", "readout")}
        rec = {k: (jnp.mean(a, axis=1) if a.ndim >= 2 else a) for k, a in rec.items()}
    out["train_loss"] = _mse(y[None], rec["f_train"])
    if st.has_y_test:
        out["test_loss"] = _mse(y_test[None], rec["f_test"])
    out["alignment"] = rec["alignment"]
    sq_first = rec["sq_weight_change.first_layer"]
    if st.basis == "kernel-eigenbasis":
        # the D - r weight coordinates outside the data span only decay
        shrink = decay_factor(v["eta0"], v["weight_decay"], saves, st.dynamics, xp=jnp)
        sq_first = sq_first + (1 - shrink) ** 2 * (st.D - st.r)
    out["weight_change.first_layer"] = jnp.sqrt(jnp.maximum(sq_first, 0) / st.D)
    out["weight_change.readout"] = jnp.sqrt(jnp.maximum(rec["sq_weight_change.readout"], 0) / st.C)
    if st.method == "forward" and R // st.node_split > 1:     # delta method, as Solution.error
        for g, dim in (("first_layer", st.D), ("readout", st.C)):
            out[f"error.weight_change.{g}"] = _ss.weight_change_se(se_sq[g], out[f"weight_change.{g}"], dim)
    if st.curves:
        squeeze = (lambda a: a[..., 0]) if st.C == 1 else (lambda a: a)   # noqa: E731
        out["f_train"] = squeeze(rec["f_train"])
        if st.has_test:
            out["f_test"] = squeeze(rec["f_test"])
    if st.state:
        for k in ("mean", "second_moment", "covariance"):
            if k in rec:
                out[f"state.{k}"] = rec[k]
    out["bad"] = bad
    return out


@functools.partial(jax.jit, static_argnums=(0,))
def _run(st: _Static, geo, y_test, act0, values, index, key):
    count_trace("batch.point")
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
    return jax.vmap(lambda v, k: _point(st, geo, y_test, act0, v, k))(values, keys)


# A cut run (`BatchProgram(interruptible=True)`) computes `_run`'s numbers, bit for bit on a CPU
# (but for the records at step 0, which `_start` computes in a program of its own: quantities that
# are zero to rounding there, such as the train loss's error bar under the control variate, can
# differ in their rounding, 5e-18 against 6e-18, and so node_share_drift by 1 ulp; under minibatch
# SGD, and on a GPU, to rounding, measured: the programs compile otherwise), in these programs:
# `_start` (the forward method's replicas, the initial states, the records at step 0), `_steps` (a
# few intervals of every point, called again and again with the states; one compilation per number
# of intervals, at least two: a scan of one interval is compiled without its loop, and
# its records rounded otherwise) and `_end`; or, for a schedule of one interval, `_last`. The
# replicas (the node draw and its (P + P*, P) sums, the costly part) are carried from call to call;
# the rest of a context is built again in every call, as `_run` builds it: a step loop compiled
# with the whole context as a parameter (rather than computed in the same program) rounded
# differently from the first step (closure and forward, on a CPU; inside a program the arrays'
# layouts are XLA's choice). Building it again took 0.1-2.5 ms a call on a CPU (P = 20-200: the
# time of under 20 steps of the closure, under one of the forward method), in calls of about
# CALL_SECONDS.


@functools.partial(jax.jit, static_argnums=(0,))
def _start(st: _Static, geo, act0, values, index, key):
    count_trace("batch.point")         # (one point program per shape, as `_run`: a scan counts them)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)

    def one(v, k):
        act, su = _setup(st, geo, act0, v)
        static, _, record = _method(st)
        ctx, s0 = _context(st, act, su, v, k)
        return (ctx[1] if st.method == "forward" else None), s0, record(static, ctx, s0)

    return jax.vmap(one)(values, keys)


@functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(5,))
def _steps(st: _Static, geo, act0, values, reps, state, gaps):
    """gaps (m,), or (n, m) with st.per_point: m more intervals of every point, each ending in a
    record. reps: the forward method's replicas (`_start`), else None."""
    count_trace("batch.steps")

    def one(v, rep, s, g):
        act, su = _setup(st, geo, act0, v)
        static, step, record = _method(st)
        ctx, _ = _context(st, act, su, v, None, rep)
        return scan_records(step, record, static, ctx, s, g)

    return jax.vmap(one, in_axes=(0, 0, 0, 0 if st.per_point else None))(values, reps, state, gaps)


@functools.partial(jax.jit, static_argnums=(0,))
def _end(st: _Static, geo, y_test, values, first, recs, bad):
    count_trace("batch.end")

    def one(v, first, recs, bad):
        saves, _, steps = _saves(st, v)
        return _outputs(st, geo["y"], y_test, v, saves, _joined(first, recs), _first_bad(bad, steps))

    return jax.vmap(one)(values, first, recs, bad)


@functools.partial(jax.jit, static_argnums=(0,))
def _last(st: _Static, geo, y_test, act0, values, index, key, state, gaps):
    """The last call of a cut run of one interval (two saves): `_run` but for the state its steps
    start from. A scan of one interval is compiled without its loop, its record fused with the
    outputs and the whole context: apart from them it rounded otherwise."""
    count_trace("batch.steps")
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
    return jax.vmap(lambda v, k, s, g: _point(st, geo, y_test, act0, v, k, s, g),
                    in_axes=(0, 0, 0, 0 if st.per_point else None))(values, keys, state, gaps)


_CALL_STEPS = None      # (tests) a fixed number of steps per call of a cut run, the rate aside


def _run_cut(st: _Static, geo, y_test, act0, values, index, key, counts, sharding=None):
    """`_run` in calls of about `runner.CALL_SECONDS` (the first of about `runner.FIRST_CALL_STEPS`
    / points steps, to measure the rate), cut as `runner.run_saved` cuts its calls (`next_call`):
    the same numbers, bit for bit on a CPU but for the step-0 records' rounding (under minibatch SGD,
    or on a GPU, to rounding). counts: (n, T) the
    points' save steps. A call's length is that of its slowest point: with st.per_point every
    point runs its own steps of the call's intervals."""
    reps, state, first = _start(st, geo, act0, values, index, key)
    gaps = np.diff(np.asarray(counts, np.int64), axis=1)          # (n, T - 1)
    n, intervals = gaps.shape
    longest = gaps.max(axis=0)
    pending = np.zeros(n, np.int64)     # steps of interval `done` taken without a record, per point
    done, recs, rate, shapes = 0, [], 0.0, set()
    while done < intervals:
        cap = _CALL_STEPS or (max(int(rate * _runner.CALL_SECONDS), 1) if rate
                              else max(_runner.FIRST_CALL_STEPS // n, 1))
        left = gaps[:, done] - pending
        lengths = longest.copy()
        lengths[done] = left.max()
        m, silent = next_call(lengths, done, intervals - done, 0, cap)
        if silent:
            call = np.minimum(left, silent)[:, None]
        else:
            call = np.concatenate([left[:, None], gaps[:, done + 1:done + m]], axis=1)
        real = call.shape[1]
        if real == 1 and intervals > 1:          # a scan of one interval is compiled without its loop
            call = np.concatenate([call, np.zeros_like(call)], axis=1)
        arg = jnp.asarray(call if st.per_point else call[0], jnp.int32)
        if st.per_point and sharding is not None:
            arg = jax.device_put(arg, sharding)
        if intervals == 1 and not silent:
            return _last(st, geo, y_test, act0, values, index, key, state, arg)
        tic = time.perf_counter()
        state, rec = _steps(st, geo, act0, values, reps, state, arg)
        if silent:
            pending += call[:, 0]
            jax.block_until_ready(state)
        else:
            recs.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:, :real], rec))
            done += m
            pending[:] = 0
        if call.shape[1] in shapes:
            rate = max(rate, int(call.max(axis=0).sum()) / max(time.perf_counter() - tic, 1e-9))
        shapes.add(call.shape[1])
    recs = {k: np.concatenate([r[k] for r in recs], axis=1) for k in recs[0]}
    if sharding is not None:
        recs = jax.device_put(recs, sharding)
    return _end(st, geo, y_test, values, first, recs, state.bad)


def solve_batch(model: TwoLayer, data: Dataset, grid: Mapping, eta0=None, steps=None,
                save_every=None, *, batch_size: int = 64, key=None, progress: bool = False,
                interruptible: bool | None = None, batch_key=None, **kwargs) -> dict:
    """Solve at every point of an explicit list of points, in compiled batches.

    Args:
        grid: {field: sequence}, all sequences of one length n (point i takes the
            i-th value of each); fields from BATCH_FIELDS.
        eta0, steps, save_every: the protocol (defaults 0.1, 1000, 10), or schedule=
            a `dmft.Schedule` (also as the fourth positional argument).
        batch_size: points per compiled call; the last batch is padded so that
            every call has the same shape (one compilation). Not the SGD minibatch: for
            minibatch SGD give schedule=dmft.Schedule(..., batch_size=B); every point then trains
            on one batch sequence, `batch_key`.
        key: `jax.random.key` (default key(0)); point i uses fold_in(key, i).
        batch_key: the minibatch sequence of SGD, shared by every point (default
            `dmft.schedule.default_batch_key(key)`); point i equals `dmft.solve(...,
            key=fold_in(key, i), batch_key=batch_key)` to rounding (another compiled program: 4e-16
            relative in the losses, measured) (but with weight_decay among the fields
            and control_variate left to the solver, the control variate is off at every point,
            those of decay 0 too: they equal `dmft.solve(..., control_variate=False)`, unbiased
            but noisier; `dmft scan` solves its decay-0 points as a group of their own, with it),
            and networks trained with
            `networks.train(batch_key=batch_key)` see the same batches. Refused under full batch
            (batch_size None or P), which draws none.
        progress: a progress bar over points.
        interruptible: run each batch in compiled calls of about `runner.CALL_SECONDS`, so
            that Ctrl-C and SIGTERM stop it within seconds rather than when the whole batch is
            done (`BatchProgram`'s option; the same numbers, bit for bit on a CPU but for
            rounding in quantities that are zero at t = 0, or under minibatch SGD or on a GPU
            to rounding). Default: `progress`
            (an interactive run).
        kwargs: `BatchProgram` options (method, samples, weight_decay, curves, ...).

    Returns:
        dict of numpy arrays with leading axis n: "t" (n, T), "train_loss",
        "test_loss" (with test targets), "alignment", "weight_change.first_layer",
        "weight_change.readout" (n, T), "diverged_step" (n,) (-1 if none), for the
        forward method "error.train_loss", "error.test_loss", "error.alignment" and
        "error.weight_change.*" (standard errors as in `Solution.error`) and
        "replicas.train_loss", "replicas.test_loss" (n, T, R: each replica's own losses, as
        `Solution.replicas`; for the errors of quantities derived from both, a gap),
        "effective_node_share", "node_share_drift" (n, T) and "heavy_tailed" (n,) (as
        `Solution.info`), with the control variate "control_variate_noisy" (named from 3
        replicas) and "control_variate_off" (n,) (`BatchProgram`'s check of its noise, as
        `dmft.solve` makes it: named, or solved again without it), with curves=True
        "f_train"/"f_test", with state=True "state.*".
    """
    if not isinstance(grid, Mapping) or not grid:
        raise InputError("grid: give a non-empty {field: values} mapping")
    known = [k for k in inspect.signature(BatchProgram.__init__).parameters
             if k not in ("self", "model", "data", "eta0", "steps", "save_every", "fields", "interruptible")]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        iterate = sorted(set(unknown) & {"tol", "max_iter", "damping", "window"})
        raise InputError(f"unknown option(s) {unknown} of a batch"
                         + (f" ({', '.join(iterate)}: options of method='iterate', which is not batched)" if iterate else "")
                         + (" (the fields are the grid's keys)" if "fields" in unknown else "")
                         + f"; known: {', '.join(known)}")
    cols = {f: check_values(f, v) for f, v in grid.items()}
    lengths = {f: len(v) for f, v in cols.items()}
    if len(set(lengths.values())) != 1:
        raise InputError(f"grid: every field needs the same number of values, got {lengths}")
    bs = checks.integer("batch_size", batch_size, minimum=1)
    key = checks.prng_key("key", key)
    batch_key = checks.prng_key("batch_key", batch_key)
    progress = checks.flag("progress", progress)
    interruptible = progress if interruptible is None else checks.flag("interruptible", interruptible)
    prog = BatchProgram(model, data, eta0, steps, save_every, fields=tuple(cols),
                        interruptible=interruptible, **kwargs)
    batch_key = check_batch_key(batch_key, prog.schedule.batch_size, prog.data.P)
    prog.check_points(cols)            # every point, before the first batch runs
    n = next(iter(lengths.values()))
    bs = min(bs, n)
    # one batch at a time, but every point's results kept: their parts and their concatenation
    # (lazy, curves=True, P = 1000, P* = 2000, 101 saves: 267 MiB at 16 points, 1374 at 256,
    # where one batch's estimate alone said 1155 MiB at both)
    prog.check_results(n, bs)
    _runner.drop_compiled_if_crowded(_runner.CALL_SHARE)
    bar = None
    if progress:
        bar = progress_bar(n, "batch", unit="pt")
    parts = []
    for start in range(0, n, bs):
        idx = np.arange(start, start + bs)
        take = np.minimum(idx, n - 1)                      # pad with the last point
        res = prog({f: v[take] for f, v in cols.items()}, idx.clip(max=n - 1), key=key, batch_key=batch_key)
        keep = idx < n
        parts.append({k: v[keep] for k, v in res.items()})
        if bar is not None:
            bar.update(int(keep.sum()))
    if bar is not None:
        bar.close()
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
