"""`dmft.plan_solve`: every check of a solve, and what it would run, before any compute.

`dmft.solve` and `dmft.BatchProgram` call it; so do applications that want to refuse a
configuration before starting a long job (`experiments`). The returned `SolvePlan` holds
the validated problem, schedule and options, the method chosen ("auto" resolved), and
the memory the solve will need.

Example:
    >>> import jax; jax.config.update("jax_enable_x64", True)
    >>> import dmft
    >>> data = dmft.tasks.single_index(D=4, P=16, P_test=8, degree=1, key=0)
    >>> plan = dmft.plan_solve(dmft.TwoLayer("linear"), data, dmft.Schedule(0.5, 20, 10))
    >>> plan.method, plan.closure_kind
    ('closure', 'linear-trained')
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from . import checks
from . import closure as _closure
from .errors import InputError
from .problem import Dataset, TwoLayer
from .sampling import MAX_QUADRATURE_NODES, SAMPLERS, quadrature_size
from .schedule import Schedule

__all__ = ["SolvePlan", "plan_solve", "exact_closure", "METHODS", "DEFAULTS", "memory_estimate"]

METHODS = ("auto", "forward", "iterate", "closure", "lazy")

# the options of `dmft.solve` and their defaults (one place: the CLI and the docs read it)
DEFAULTS: dict[str, Any] = dict(
    method="auto", samples=16384, replicas=4, sampler="stratified", control_variate=None,
    kernels=True, tol=1e-12, max_iter=200, damping=1.0, window=None, kernel_nodes=64,
    quadrature_nodes=8, max_memory_gb=4.0, neuron_measures=None)


def exact_closure(model: TwoLayer) -> str | None:
    """Name of the exact Gaussian closure for this model, or None."""
    return _closure.kind_for(model.activation, model.trained_readout)


@dataclasses.dataclass(frozen=True)
class SolvePlan:
    """A validated solve: problem, schedule, options and the resolved method.

    Attributes:
        model, data, schedule: the problem and protocol.
        method: "forward", "iterate", "closure" or "lazy" ("auto" resolved).
        closure_kind: the exact closure ("poly2-fixed", "linear-trained") or None.
        cv_mode: the control variate: "off", "matrix" (C = 1) or "operator" (C > 1).
        memory_bytes: estimated peak bytes of the solve.
        (and every option of `dmft.solve`, validated)
    """

    model: TwoLayer
    data: Dataset
    schedule: Schedule
    method: str
    closure_kind: str | None
    sampler: str
    samples: int
    replicas: int
    control_variate: bool
    cv_mode: str
    kernels: bool
    tol: float
    max_iter: int
    damping: float
    window: int
    kernel_nodes: int
    quadrature_nodes: int
    max_memory_gb: float
    neuron_measures: Callable | None
    memory_bytes: float

    @property
    def sampled(self) -> bool:
        return self.method in ("forward", "iterate")

    def options(self) -> dict:
        """The options as a JSON-able dict (what result metadata records)."""
        out = {k: getattr(self, k) for k in ("method", "closure_kind", "sampler", "samples", "replicas",
                                             "control_variate", "cv_mode", "kernels", "tol",
                                             "max_iter", "damping", "window", "kernel_nodes",
                                             "quadrature_nodes")}
        if self.neuron_measures is not None:
            out["neuron_measures"] = getattr(self.neuron_measures, "__name__", repr(self.neuron_measures))
        return out

    def describe(self) -> dict:
        """{"model", "data", "solve"}: the full configuration of this solve."""
        solve = {**self.schedule.describe(), **self.options()}
        return {"model": self.model.describe(), "data": self.data.describe(), "solve": solve}


def _window(window, steps):
    if window is None:   # the longest window of at most 10 steps that divides steps
        return max(w for w in range(1, min(steps, 10) + 1) if steps % w == 0)
    w = checks.integer("window", window, minimum=1)
    if steps % w:
        raise InputError(f"window ({w}) must divide steps ({steps})")
    return w


def plan_solve(model: TwoLayer, data: Dataset, schedule: Schedule, **options) -> SolvePlan:
    """Validate a solve and resolve its method; raises `InputError` naming the argument.

    Args:
        model, data, schedule: the problem and protocol.
        options: those of `dmft.solve` (see `DEFAULTS`); unknown names are refused.
    """
    if not isinstance(model, TwoLayer):
        raise InputError(f"model must be a dmft.TwoLayer, got {type(model).__name__}")
    if not isinstance(data, Dataset):
        raise InputError(f"data must be a dmft.Dataset, got {type(data).__name__}")
    if not isinstance(schedule, Schedule):
        raise InputError(f"schedule must be a dmft.Schedule, got {type(schedule).__name__}")
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise InputError(f"unknown option(s) {unknown}; known: {', '.join(DEFAULTS)}")
    o = {**DEFAULTS, **options}
    method = checks.choice("method", o["method"], METHODS)
    sampler = checks.choice("sampler", o["sampler"], SAMPLERS)
    samples = checks.integer("samples", o["samples"], minimum=2)
    replicas = checks.integer("replicas", o["replicas"], minimum=1)
    tol = checks.real("tol", o["tol"], positive=True)
    max_iter = checks.integer("max_iter", o["max_iter"], minimum=1)
    damping = checks.real("damping", o["damping"], positive=True, at_most=1.0)
    window = _window(o["window"], schedule.steps)
    kernel_nodes = checks.integer("kernel_nodes", o["kernel_nodes"], minimum=4)
    quadrature_nodes = checks.integer("quadrature_nodes", o["quadrature_nodes"], minimum=2)
    kernels = checks.flag("kernels", o["kernels"])
    max_memory_gb = checks.real("max_memory_gb", o["max_memory_gb"], positive=True)
    if schedule.batch_size is not None and schedule.batch_size > data.P:
        raise InputError(f"batch_size must be <= P = {data.P}, got {schedule.batch_size}")
    if not model.trained_readout and data.C > 1:
        raise InputError("readout='fixed' with several outputs makes every output identical; "
                         "use readout='trained' for multi-output data")
    closure_kind = exact_closure(model)
    if method == "auto":
        method = "closure" if closure_kind else "forward"
    if method == "closure" and closure_kind is None:
        raise InputError(
            f"method='closure' is exact only for a linear activation with trained readouts or a "
            f"polynomial of degree <= 2 with fixed readouts; got activation "
            f"{model.activation.name!r} with readout {model.readout!r}")
    if method == "iterate" and schedule.dynamics != "gd":
        raise InputError("method='iterate' solves gradient descent (dynamics='gd'); "
                         "use method='forward' for gradient flow")
    sgd = schedule.batch_size is not None and schedule.batch_size < data.P
    if sgd and method in ("lazy", "iterate"):
        raise InputError(f"batch_size: minibatch SGD is solved by method='forward' or 'closure' (the DMFT "
                         f"conditioned on the batch sequence), not {method!r}")
    if method == "lazy" and schedule.weight_decay > 0:
        raise InputError("weight_decay > 0 moves the kernel, so there is no lazy closed form; "
                         "use method='forward'")
    if method in ("forward", "iterate"):
        if sampler == "quadrature":
            r = min(data.D, data.P + data.P_test)
            n = quadrature_size(quadrature_nodes, r, data.C, model.trained_readout)
            if n > MAX_QUADRATURE_NODES:
                raise InputError(f"sampler='quadrature' needs {quadrature_nodes}^dims = {n} "
                                 f"nodes (> {MAX_QUADRATURE_NODES}); it is for tiny input "
                                 "dimension; use sampler='orthogonal'")
            replicas = 1
        else:
            per = 2 * replicas if sampler != "mc" else replicas
            if samples % per:
                raise InputError(f"samples ({samples}) must be a multiple of "
                                 f"{per} (replicas x antithetic pairs)")
    meas = o["neuron_measures"]
    if meas is not None:
        if not callable(meas):
            raise InputError(f"neuron_measures must be a function (w, w0) -> (K,), got {meas!r}")
        if method not in ("forward", "iterate"):
            raise InputError("neuron_measures needs a sampled method (forward or iterate): the "
                             f"{method} method has no individual neurons")
        if data.D > data.P + data.P_test:
            raise InputError("neuron_measures needs D <= P + P* (the single site then carries "
                             f"the weights themselves); got D={data.D}, P + P*={data.P + data.P_test}")
    cv = o["control_variate"]
    if cv is None:   # the lazy-kernel control variate helps unless weight decay moves the kernel away
        cv = schedule.weight_decay == 0
    elif not isinstance(cv, (bool, np.bool_)):
        raise InputError(f"control_variate must be None, True or False, got {cv!r}")
    cv = bool(cv)
    plan = SolvePlan(model=model, data=data, schedule=schedule, method=method,
                     closure_kind=closure_kind if method == "closure" else None, sampler=sampler,
                     samples=samples, replicas=replicas, control_variate=cv,
                     cv_mode="off" if not cv else ("operator" if data.C > 1 else "matrix"),
                     kernels=kernels, tol=tol, max_iter=max_iter, damping=damping, window=window,
                     kernel_nodes=kernel_nodes, quadrature_nodes=quadrature_nodes,
                     max_memory_gb=max_memory_gb, neuron_measures=meas, memory_bytes=0.0)
    need = memory_estimate(plan)
    if need > max_memory_gb * 2 ** 30:
        raise InputError(f"this solve needs about {need / 2 ** 30:.1f} GiB "
                         f"(> max_memory_gb={max_memory_gb}); save less often (save_every), "
                         "pass kernels=False, or use fewer samples")
    return dataclasses.replace(plan, memory_bytes=need)


def memory_estimate(plan: SolvePlan) -> float:
    """Bytes for the largest arrays a solve holds (float64)."""
    data, model = plan.data, plan.model
    P, Pt, C, D = data.P, data.P_test, data.C, data.D
    r = min(D, P + Pt)
    T = plan.schedule.save_steps.size
    R = plan.replicas if plan.sampled else 1
    per_save = P * C + Pt * C + (3 * P * P if plan.kernels else 0) + 4
    total = R * T * per_save
    if plan.sampled:
        m = plan.samples // R
        if plan.sampler == "quadrature":
            m = quadrature_size(plan.quadrature_nodes, r, C, model.trained_readout)
        total += R * ((P + Pt) * P * 2 + m * (r + C) * 3 + m * (P + Pt) * 4)
        if plan.method == "iterate":
            total += 4 * R * plan.schedule.steps * P * C
    elif plan.method == "closure":
        total += T * r * r + 4 * P * P
    return 8.0 * total
