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

import jax
import numpy as np

from . import checks
from . import closure as _closure
from .activations import GRID_HALF_WIDTH, MAX_GRID_NODES, TAIL_SHARE_TOL, capped_grid_error, tail_share
from .errors import Float32Warning, InputError, MemoryLimitError, warn
from .problem import Dataset, TwoLayer
from .runner import RECORD_MAP_VALUES
from .sampling import MAX_QUADRATURE_NODES, SAMPLERS, check_counts, quadrature_size
from .schedule import MAX_STEPS, Schedule

__all__ = ["SolvePlan", "plan_solve", "exact_closure", "no_lazy_limit", "METHODS", "PRECISIONS", "DEFAULTS",
           "memory_estimate", "solution_bytes", "setup_bytes", "check_mixed_scale", "RUNTIME_BYTES"]

# what compiling and running any program takes beyond its arrays (measured: 100-400 MiB for the
# solvers' compilations, `scripts/bench_memory.py`)
RUNTIME_BYTES = 512 * 2 ** 20

METHODS = ("auto", "forward", "iterate", "closure", "lazy")

# the options of `dmft.solve` and their defaults (one place: the CLI and the docs read it)
DEFAULTS: dict[str, Any] = dict(
    method="auto", samples=16384, replicas=4, sampler="stratified", control_variate=None,
    kernels=True, tol=1e-12, max_iter=200, damping=1.0, window=None, kernel_nodes=64,
    quadrature_nodes=8, max_memory_gb=4.0, neuron_measures=None, precision="full", node_split=1)

PRECISIONS = ("full", "mixed")
# below this gamma0 the float32 rounding of the node sums (~1e-7 relative), divided by gamma0
# in f = f(0) + (F - F0) / gamma0, is no longer far below the (shrinking) sampling error
MIXED_MIN_GAMMA0 = 0.05
# and the data's scale, which moves that rounding as gamma0 does (measured against precision="full",
# relu and tanh, D = 8, P = 32): the fields' float32 rounding is ~1e-7 of their size, so fields of
# sd 1e4 (tanh) put the losses 0.5 of their standard error off; and the node sums' rounding, of the
# size of phi, against the motion gamma0 x the targets: `check_mixed_scale`
MIXED_MAX_FIELD_VARIANCE = 1e6
# sqrt(E[phi(h)^2]) at the widest field over gamma0 x the targets' rms: 13-35 on data of unit scale
# at gamma0 = MIXED_MIN_GAMMA0 (41-58 for teacher_network's defaults, 60-96 for modular_addition's one-hot
# targets, whose losses mixed moved by 6e-5 and 6e-4 of their standard error); the losses moved by
# 3e-5-1e-3 of their standard error at 25-39, 0.003-0.14 at 126-194 and 6-240 at ~2000 (forward method)
MIXED_MAX_SCALE_RATIO = 5 / MIXED_MIN_GAMMA0
# the same for the sampled methods in the working float type: their node sums round at its
# epsilon and f divides them by gamma0. The test loss against the lazy method (tanh and linear,
# 256 nodes): float64 6e-9 relative at 1e-9, 6e-7 at 1e-10, 4e-5 at 1e-12, 1e-2 at 1e-14;
# float32 (x64 off) 1e-4 at 1e-2, 2e-2 at 1e-5, 0.3 at 1e-6. The closure is exact there.
SAMPLED_MIN_GAMMA0 = {"float64": 1e-9, "float32": 1e-2}


def gamma0_range(dtype: str) -> tuple[float, float]:
    """The gamma0 whose square and inverse square the float type `dtype` holds as normal numbers,
    [2^-511, 2^511] in float64 and [2^-63, 2^63] in float32: a solve and a network compute with
    gamma0^2 (the networks' step gamma0^2 N grad L) and 1/gamma0^2 (the run-away bound,
    `dmft.runner`), and outside this range with 0 or inf in their place (float32 reads 1e-300 as 0
    and 1e300 as inf; the closure at gamma0 = 1e-300 said its train loss was not finite at t = 0
    and advised a lower gamma0)."""
    low = float(np.sqrt(np.finfo(dtype).tiny))
    return low, 1.0 / low


def check_scales(model: TwoLayer, schedule: Schedule) -> None:
    """Refuse a gamma0 outside `gamma0_range` of the working float type, and an eta0 that it
    turns into 0 or inf (float32 ran train.eta0 = 1e-300 as 0: no step moved)."""
    check_scale_values("gamma0", [float(model.gamma0)])
    check_scale_values("eta0", [float(schedule.eta0)])


def check_scale_values(name: str, values) -> None:
    """`check_scales` for many values of gamma0 or eta0 (a batch's points: solve_batch ran eta0 =
    1e-320 for 16 s with no step moving, and read gamma0 = 1e200 as a divergence): InputError
    naming the first value outside the range."""
    dtype = sampled_min_gamma0()[1]
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if name == "gamma0":
        low, high = gamma0_range(dtype)
        bad = ~((v >= low) & (v <= high))
        if bad.any():
            g = float(v[bad][0])
            raise InputError(f"gamma0 = {g:g} is outside [{low:.3g}, {high:.3g}], the gamma0 whose square "
                             f"and inverse square {dtype} holds: the solvers compute with gamma0^2 and "
                             "1/gamma0^2, which would vanish or overflow there"
                             + ("; the lazy limit itself does not depend on gamma0 (method='lazy' at "
                                f"gamma0 = {low:.3g} or above)" if g < low else ""))
        return
    info = np.finfo(dtype)
    bad = (v > 0) & ~((v >= float(info.tiny)) & (v <= float(info.max)))
    if bad.any():
        x = float(v[bad][0])
        raise InputError(f"{name} = {x:g} is outside what {dtype} holds as a normal number "
                         f"([{float(info.tiny):.3g}, {float(info.max):.3g}]): it would run as "
                         + ("0 or a subnormal number" if x < float(info.tiny) else "inf"))


def warn_float32(who: str) -> None:
    """Say (Float32Warning) that `who` computes in float32 because the entry point left JAX's
    x64 off: a library never turns it on, and the answers, tolerances and refusals are then
    float32's, said before only in info["dtype"] (precision="mixed" ran as "full (float32)")."""
    if not jax.config.jax_enable_x64:
        warn(f"{who}: jax_enable_x64 is off, so this computes in float32 (its rounding, ranges and "
             "refusals are float32's; the solvers are validated in float64). Call "
             "jax.config.update('jax_enable_x64', True) before any computation for float64, or "
             "filter dmft.errors.Float32Warning if float32 is meant", Float32Warning)


def sampled_min_gamma0() -> tuple[float, str]:
    """The smallest gamma0 the forward and iterate methods resolve, and the working float type."""
    name = "float64" if jax.config.jax_enable_x64 else "float32"
    return SAMPLED_MIN_GAMMA0[name], name


def check_sampled_gamma0(method: str, gamma0) -> None:
    """Refuse a sampled method below `sampled_min_gamma0` (its rounding would be the answer)."""
    floor, dtype = sampled_min_gamma0()
    g = float(np.min(gamma0))
    if method in ("forward", "iterate") and g < floor:
        raise InputError(f"gamma0 = {g:g} is below what method={method!r} resolves in {dtype} "
                         f"({floor:g}): its node sums' rounding is divided by gamma0. Use "
                         "method='lazy' (there the DMFT differs from it by O(gamma0^2)), or "
                         "'closure' where it is exact")


# geometry and lazy kernels that `dmft.solve` keeps for reuse between solves, at most
SETUP_CACHE_BYTES = 256 * 2 ** 20
# on a CPU, a forward solve integrates at once at most this many field values (nodes x train
# points, 16 MiB in float32): a step's passes over larger (nodes, P) arrays run from memory, not
# cache, and slow down (65536 nodes, P = 256, mixed: 54 ms a step at once, 27 ms a replica of
# 16384 at a time). Further replicas run one group after another: the same nodes and answer, to
# rounding (each group width its own compiled program: 3e-16 relative, README)
CPU_GROUP_ELEMENTS = 2 ** 22


def exact_closure(model: TwoLayer) -> str | None:
    """Name of the exact Gaussian closure for this model, or None (InputError naming `model`
    when it is not a `dmft.TwoLayer`)."""
    if not isinstance(model, TwoLayer):
        raise InputError(f"model must be a dmft.TwoLayer, got {type(model).__name__} {model!r}")
    return _closure.kind_for(model.activation, model.trained_readout)


def no_lazy_limit(model: TwoLayer, data: Dataset) -> str | None:
    """Why `model` has no lazy (gamma0 -> 0) limit on `data`, or None when it has one.

    With fixed readouts and an uncentered output, f(theta_0) = E[phi(h)] / gamma0 (THEORY
    section 1): where the activation's mean does not vanish the initial error grows like
    1 / gamma0, the features move by O(1) and no kernel regime is approached; the lazy
    method's linearization there is the limit of nothing (5% off the exact answer at every
    gamma0, measured on the quadratic model)."""
    if model.centered or model.trained_readout:
        return None
    diag = _field_variances(data)
    mean = np.asarray(model.activation.mean(diag), np.float64)
    worst = float(np.max(np.abs(mean)))
    if worst <= 1e-12 * max(1.0, float(np.sqrt(np.max(diag)))):
        return None
    return (f"with fixed readouts and centered=False the initial output E[phi(h)] / gamma0 "
            f"(|E[phi]| up to {worst:.3g} here) grows as gamma0 -> 0, so the {model.activation.name!r} "
            "model has no lazy limit; use centered=True or trained readouts")


@dataclasses.dataclass(frozen=True)
class SolvePlan:
    """A validated solve: problem, schedule, options and the resolved method.

    Attributes:
        model, data, schedule: the problem and protocol.
        method: "forward", "iterate", "closure" or "lazy" ("auto" resolved).
        closure_kind: the exact closure ("poly2-fixed", "linear-trained") or None.
        cv_mode: the control variate: "off", "matrix" (C = 1) or "operator" (C > 1).
        precision: "full" (every product in the working dtype) or "mixed" (the step's
            products in float32, the state accumulated in the working dtype).
        memory_bytes: estimated peak bytes of the solve.
        cv_auto: whether the control variate was the solver's choice (control_variate=None), which
            `run_plan` turns off where it adds noise (`dmft.solve`'s docstring).
        node_split: 1, or k: each replica's nodes integrated as k populations of M / k
            (`dmft.solve`'s node_split).
        replicas_at_once: how many replicas a sampled solve integrates at once (vmapped): all of
            them, or the largest divisor of `replicas` whose solve fits in max_memory_gb (and,
            for the forward solver on a CPU, whose fields fit `CPU_GROUP_ELEMENTS`, `_cache_group`);
            the groups then run one after another, so memory follows the group.
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
    precision: str
    memory_bytes: float
    replicas_at_once: int
    cv_auto: bool = False   # control_variate was left to the solver (None): it may turn it off
    node_split: int = 1     # each replica's nodes integrated as this many populations (dmft.solve)

    @property
    def sampled(self) -> bool:
        return self.method in ("forward", "iterate")

    def options(self) -> dict:
        """The options as a JSON-able dict (what result metadata records)."""
        out = {k: getattr(self, k) for k in ("method", "closure_kind", "sampler", "samples", "replicas",
                                             "control_variate", "cv_mode", "kernels", "tol",
                                             "max_iter", "damping", "window", "kernel_nodes",
                                             "quadrature_nodes", "precision")}
        if self.node_split > 1:
            out["node_split"] = self.node_split
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


def _field_variances(data: Dataset) -> np.ndarray:
    """|x|^2 / D of every training and test input: the first-layer fields' variances at t = 0."""
    x = np.asarray(data.x_train, np.float64)
    if data.x_test is not None:
        x = np.concatenate([x, np.asarray(data.x_test, np.float64)])
    return np.sum(x * x, axis=1) / data.D


KERNEL_ERROR_MAX = 1e-4   # largest relative error of the lazy kernels a solve that uses them accepts


def _check_kernel_accuracy(model: TwoLayer, data: Dataset, method: str, auto: bool = False) -> bool:
    """Whether the lazy kernels may be used: refuse a solve that uses them (method='lazy', or a
    control variate asked for) where their rule (trapezoid, or piecewise), capped at
    MAX_GRID_NODES per dimension, is off by more than KERNEL_ERROR_MAX at the widest field
    (`activations.capped_grid_error`): tanh's G0 is 2% off at field variance 3e3 and 34% at 1e4,
    and the control variate carried that into every answer (a loss of 1689 +- 6378 where networks
    read 0.004, or a divergence that was not there). A control variate that was the solver's
    choice (`auto`) is turned off there instead, with a warning: False."""
    act = model.activation
    if act.has_closed_form:
        return True
    v = float(np.max(_field_variances(data)))
    err = capped_grid_error(act, v)
    if err <= KERNEL_ERROR_MAX:
        return True
    where = (f"activation {act.name!r}: at the widest field (variance |x|^2 / D = {v:.3g}) its lazy kernels' "
             f"{act.quadrature} quadrature, capped at {MAX_GRID_NODES} nodes per dimension, is off by {err:.2g} "
             "(relative; E[phi'(u)^2] or E[phi(u)^2])")
    if auto and method != "lazy":
        warn(f"{where}: the control variate, built on them, is off (control_variate=False; rescaling the "
             "inputs toward |x|^2 / D ~ 1 would keep it)")
        return False
    use = "method='lazy' is built on them" if method == "lazy" else (
        "the control variate carries that error into every answer")
    fix = ("" if method == "lazy" else
           ", or solve with control_variate=False (the sampled estimate then does not use them)")
    raise InputError(f"{where}; {use}. Rescale the inputs toward |x|^2 / D ~ 1 (the model is not "
                     f"scale-invariant){fix}")


def _check_kernels_exist(model: TwoLayer, data: Dataset) -> None:
    """Refuse an activation (without closed-form kernels) whose Gaussian moments the lazy
    kernels' quadrature cannot hold on this data's widest field: `tail_share` above
    TAIL_SHARE_TOL (exp(h^2) at field variance >= 1/4 has no E[phi^2] at all; its quadrature
    was finite and every solve diverged at t = 0)."""
    act = model.activation
    if act.has_closed_form:
        return
    v = float(np.max(_field_variances(data)))
    share = tail_share(act, v)
    if not np.isfinite(share):
        raise InputError(
            f"activation {act.name!r}: its lazy kernels (E[phi(u) phi(u')], E[phi'(u) phi'(u')]) are not finite "
            f"on this data: phi or phi' is not finite within +-{GRID_HALF_WIDTH:g} standard deviations of the "
            f"widest field (variance |x|^2 / D = {v:.3g}): undefined or too fast-growing there")
    if share > TAIL_SHARE_TOL:
        raise InputError(
            f"activation {act.name!r}: the Gaussian integrals of phi^2 and phi'^2 behind the lazy kernels have "
            f"{share:.2g} of their mass at +-{GRID_HALF_WIDTH:g} standard deviations of the widest field "
            f"(variance |x|^2 / D = {v:.3g}), where every quadrature stops: E[phi(u)^2] or E[phi'(u)^2] does "
            "not exist (phi grows like exp(c u^2)) or needs narrower fields; rescale the inputs or use an "
            "activation that grows more slowly")


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
    # the iteration counter is int32; its residual history (windows x max_iter) is in the estimate
    max_iter = checks.integer("max_iter", o["max_iter"], minimum=1, maximum=MAX_STEPS)
    damping = checks.real("damping", o["damping"], positive=True, at_most=1.0)
    window = _window(o["window"], schedule.steps)
    kernel_nodes = checks.integer("kernel_nodes", o["kernel_nodes"], minimum=4)
    if kernel_nodes > MAX_GRID_NODES:
        raise InputError(f"kernel_nodes must be <= {MAX_GRID_NODES}, got {kernel_nodes}")
    quadrature_nodes = checks.integer("quadrature_nodes", o["quadrature_nodes"], minimum=2)
    kernels = checks.flag("kernels", o["kernels"])
    max_memory_gb = checks.real("max_memory_gb", o["max_memory_gb"], positive=True)
    precision = checks.choice("precision", o["precision"], PRECISIONS)
    node_split = checks.integer("node_split", o["node_split"], minimum=1)
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
    if precision == "mixed" and method not in ("closure", "forward"):
        raise InputError(f"precision='mixed' is for methods 'closure' and 'forward' (float32 "
                         f"products, float64 state); the {method} method has no mixed path")
    if precision == "mixed" and float(model.gamma0) < MIXED_MIN_GAMMA0:
        raise InputError(f"precision='mixed' needs gamma0 >= {MIXED_MIN_GAMMA0} (got "
                         f"{float(model.gamma0):g}): its float32 rounding is divided by gamma0; "
                         "use precision='full'")
    if precision == "mixed" and jax.config.jax_enable_x64:      # (without float64 it is "full (float32)")
        check_mixed_scale(model, data, method=method)
    check_sampled_gamma0(method, model.gamma0)
    check_scales(model, schedule)
    if method == "iterate" and schedule.dynamics != "gd":
        raise InputError("method='iterate' solves gradient descent (dynamics='gd'); "
                         "use method='forward' for gradient flow")
    sgd = schedule.batch_size is not None and schedule.batch_size < data.P
    if sgd and method == "iterate":
        raise InputError("batch_size: minibatch SGD is solved by method='forward', 'closure' or 'lazy' (the "
                         "DMFT conditioned on the batch sequence), not 'iterate'")
    _check_kernels_exist(model, data)
    if method == "lazy" and (why := no_lazy_limit(model, data)):
        raise InputError(f"method='lazy': {why}")
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
            # one deterministic rule: samples and replicas do not apply (recorded as run)
            samples, replicas = n, 1
            if node_split > 1:
                raise InputError("node_split splits each replica's random nodes; sampler='quadrature' is one "
                                 "deterministic rule (no replicas to split)")
        else:
            check_counts(sampler, samples, replicas, node_split)
    elif node_split > 1:
        raise InputError(f"node_split splits the nodes of a sampled method (forward or iterate); the {method} "
                         "method has none")
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
        meas = checks.neuron_measure("neuron_measures", meas, data.D)
    cv = o["control_variate"]
    if cv is None:   # the lazy-kernel control variate helps unless weight decay moves the kernel away
        cv = schedule.weight_decay == 0
    elif not isinstance(cv, (bool, np.bool_)):
        raise InputError(f"control_variate must be None, True or False, got {cv!r}")
    cv, auto = bool(cv), o["control_variate"] is None
    if method == "lazy" or (method in ("forward", "iterate") and cv):
        cv = _check_kernel_accuracy(model, data, method, auto=auto) and cv
    plan = SolvePlan(model=model, data=data, schedule=schedule, method=method,
                     closure_kind=closure_kind if method == "closure" else None, sampler=sampler,
                     samples=samples, replicas=replicas, control_variate=cv,
                     cv_mode="off" if not cv else ("operator" if data.C > 1 else "matrix"),
                     kernels=kernels, tol=tol, max_iter=max_iter, damping=damping, window=window,
                     kernel_nodes=kernel_nodes, quadrature_nodes=quadrature_nodes,
                     max_memory_gb=max_memory_gb, neuron_measures=meas, precision=precision,
                     memory_bytes=0.0, replicas_at_once=replicas, cv_auto=auto, node_split=node_split)
    warn_float32("dmft.solve" + (f" (precision={precision!r})" if precision != "full" else ""))
    budget = max_memory_gb * 2 ** 30
    cap = _cache_group(plan)
    groups = [g for g in range(cap, 0, -1) if replicas % g == 0] if plan.sampled else [replicas]
    for g in groups:                  # all replicas at once if they fit, else the largest group that does
        need = memory_estimate(plan, at_once=g)
        if need <= budget:
            return dataclasses.replace(plan, memory_bytes=need, replicas_at_once=g)
    more = (" or more replicas (they run a few at a time)"
            if plan.sampled and sampler != "quadrature" else "")
    raise MemoryLimitError(f"this solve needs about {need / 2 ** 30:.3g} GiB "
                     f"(> max_memory_gb={max_memory_gb}"
                     + (f", even one replica of {samples // replicas} nodes at a time" if len(groups) > 1 else "")
                     + "); save less often (save_every), "
                     + ("lower max_iter, " if plan.method == "iterate" else "")
                     + ("pass kernels=False, " if plan.kernels else "") + "use fewer samples" + more)


def check_mixed_scale(model: TwoLayer, data: Dataset, gamma0: float | None = None, method: str = "forward") -> None:
    """Refuse precision='mixed' where the data's scale makes its float32 rounding reach the sampling
    error: fields wider than MIXED_MAX_FIELD_VARIANCE, or an output scale sqrt(E[phi(h)^2]) over
    gamma0 x the targets' rms above MIXED_MAX_SCALE_RATIO (the rounding of the node sums, divided by
    gamma0, against the targets it must fit; the forward method's only: the closure has no sampling
    error, and its mixed answers stayed within 1e-8 of full at ratios up to 5800).
    gamma0: a batch's smallest (default the model's)."""
    v = float(np.max(_field_variances(data)))
    if v > MIXED_MAX_FIELD_VARIANCE:
        raise InputError(f"precision='mixed': the widest field's variance |x|^2 / D is {v:.3g} (> "
                         f"{MIXED_MAX_FIELD_VARIANCE:g}), where the fields' float32 rounding moves the answer; "
                         "rescale the inputs toward |x|^2 / D ~ 1 or use precision='full'")
    if method == "closure":
        return
    y_rms = float(np.sqrt(np.mean(np.square(np.asarray(data.y_train, np.float64)))))
    if y_rms == 0:
        raise InputError("precision='mixed': the targets are all zero, so no motion stands above the node sums' "
                         "float32 rounding; use precision='full'")
    out = float(np.sqrt(np.asarray(model.activation.lazy_kernels(v, v, v)[0], np.float64)))
    gamma0 = float(model.gamma0 if gamma0 is None else gamma0)
    ratio = out / (gamma0 * y_rms)
    if not ratio <= MIXED_MAX_SCALE_RATIO:
        raise InputError(f"precision='mixed': the output scale sqrt(E[phi(h)^2]) = {out:.3g} at the widest field is "
                         f"{ratio:.3g} x gamma0 ({gamma0:g}) x the targets' rms ({y_rms:.3g}), above "
                         f"{MIXED_MAX_SCALE_RATIO:g}: the node sums' float32 rounding, divided by gamma0, would no "
                         "longer be far below the sampling error (as below gamma0 = "
                         f"{MIXED_MIN_GAMMA0} on data of unit scale); rescale the inputs or the targets, "
                         "or use precision='full'")


def _nodes_per_replica(plan: SolvePlan) -> int:
    data = plan.data
    if plan.sampler == "quadrature":
        return quadrature_size(plan.quadrature_nodes, min(data.D, data.P + data.P_test), data.C,
                               plan.model.trained_readout)
    return plan.samples // plan.replicas


def _cache_group(plan: SolvePlan) -> int:
    """The most replicas a forward solve on a CPU integrates at once for speed: the largest
    divisor of `replicas` whose fields (group nodes x P) fit CPU_GROUP_ELEMENTS, at least 1;
    elsewhere (other methods, accelerators, which want the largest batch) all of them."""
    R = plan.replicas
    if plan.method != "forward" or jax.default_backend() != "cpu":
        return R
    fields = _nodes_per_replica(plan) * plan.data.P
    return max([g for g in range(1, R + 1) if R % g == 0 and g * fields <= CPU_GROUP_ELEMENTS],
               default=1)


def _setup_values(N: int, P: int, r: int, C: int) -> float:
    """The values a solve's setup holds: geometry and lazy kernels ((P + P*) x P arrays)."""
    return N * r + 6.0 * N * P + P * C


def _input_values(N: int, D: int) -> float:
    """The inputs' float64 copies (geometry's concatenation and squares, the input kernel's device
    copies), once for a batch too (its geometry is shared): they bind when D >> P + P* (D = 4e5,
    P = P* = 100 measured 3.2x the estimate without them)."""
    return 4.0 * N * D


def setup_bytes(P: int, P_test: int, D: int, C: int = 1) -> float:
    """Bytes every solve of data of these sizes holds, whatever its method: its setup and inputs
    (`memory_estimate`'s floor), known before the data are made."""
    N = P + P_test
    return 8.0 * (_setup_values(N, P, min(D, N), C) + _input_values(N, D))


def solution_bytes(plan: SolvePlan) -> float:
    """Bytes a finished `Solution` of `plan` keeps once its solve is done (float64), beside the
    setup it shares with every solve of the same data (`dmft.solve`'s setup cache): its records (the
    predictions on every point, with kernels=True the three (P, P) kernels, the scalars) at every
    save; for a sampled solve their standard errors, each population's losses and what `predict`
    reads, every replica's nodes now and at t = 0 (R m (2 (r + C) + 1) values, with the operator
    control variate two (R, m, P) arrays of their features on the train points too); neuron
    measures' records of each population with their mean and error; a closure's recorded moments;
    and the bases and kernels of the data its `predict` reads.
    What a caller that keeps many solutions (`sgd_mean`, the jobs' sweeps) counts against
    max_memory_gb besides one solve's peak (`memory_estimate`)."""
    data = plan.data
    P, Pt, C, D = data.P, data.P_test, data.C, data.D
    N = P + Pt
    r = min(D, N)
    T = plan.schedule.save_steps.size
    values = T * (N * C + (3 * P * P if plan.kernels else 0) + 16)
    geometry = 2 * P * P + 3 * P * r + Pt * P       # the predictor's own bases and kernels of the data
    if plan.sampled:
        R, m = plan.replicas, _nodes_per_replica(plan)
        values = 2 * values + 2 * R * plan.node_split * T + R * m * (2 * (r + C) + 1)
        if plan.control_variate:
            values += 2 * R * P * C                  # each replica's correction on the train points
        if plan.cv_mode == "operator":
            values += 2 * R * m * P                  # the predictor's two (R, m, P) feature arrays
        if plan.neuron_measures is not None:        # each population's records, their mean and error
            values += (R * plan.node_split + 2) * T * checks.measure_size(plan.neuron_measures, D)
    elif plan.method == "closure":
        n = r + C if plan.closure_kind == "linear-trained" else r
        values += 2 * T * (n * n + n)
    # + the small arrays and the info's lists of Python floats (a few per save), 16 KiB at least
    return 8.0 * (values + geometry + 64 * T) + 16384.0


# What XLA:CPU holds beside one copy of a sampled solve's records. There `np.asarray` of a
# program's output aliases its buffer (no host copy), and the replicas' fields on every point (the
# draw's control-variate matrices, each record) are built one population at a time past
# RECORD_MAP_VALUES (`runner.over_members`), so the peak is one copy of the records and either
# their second copy (the chunks' and groups' parts with their concatenation, after the run; then
# the standard errors' temporaries, a / max|a| and its deviations, 2/3 of one copy of the kernels)
# or a group's temporaries (during it), never both. Measured in fresh processes (`scripts/
# bench_memory.py`): at the demo's sizes (relu, D = 32, P = 256, P* = 1000, 32768 nodes in 8
# replicas, 4 at a time, mixed) the peak grew 1.84 copies of the records a save, about 2.0 in one
# group (node_split = 4), and the compiled group program held 77 MiB of temporaries where this
# counts 157 (92 against 192 in float64 at P = 512). On an accelerator (and for a batch's vmapped
# points) the records stay counted three times and the group's fields at once: XLA there keeps the
# device's output beside its host copy and the concatenation, with the standard errors'
# temporaries on top (2.5-3 copies), and vmap holds every member's fields on all points together.
def _sampled_cpu_work(plan: SolvePlan, g: int, m: int, once: float) -> float:
    """Values a sampled solve on a CPU holds beside one copy of its records (`once`) and its state:
    the larger of the records' second copy and the group's temporaries (the fields on every point
    of one population, or of the whole group where `over_members` vmaps them, and the vmapped
    step's h, phi, phi' and gradients on the train points, in float32 under precision='mixed')."""
    P, N, k = plan.data.P, plan.data.P + plan.data.P_test, plan.node_split
    pop = m // k
    one_at_a_time = g * k > 1 and pop * N >= RECORD_MAP_VALUES
    fields = 4.0 * (pop if one_at_a_time else g * m) * N
    step = 6.0 * g * m * P * (0.5 if plan.precision == "mixed" else 1.0)
    return max(once, fields, step)


def memory_estimate(plan: SolvePlan, *, points: int = 1, at_once: int | None = None,
                    shared_setup: bool = False) -> float:
    """Peak bytes a solve allocates (float64), from the sizes it will hold, calibrated against
    measured peaks (`scripts/bench_memory.py`; never below them there).

    Counts: the geometry and lazy kernels ((P + P*) x P arrays), the method's state for every
    replica (the final nodes are kept for `Solution.predict`), the draw, control-variate
    matrices and per-step temporaries of the `at_once` replicas integrated together (default
    `plan.replicas_at_once`; they are vmapped), the records three times over (the device's
    output, the host copy, the concatenation; a sampled solve on a CPU: twice, `_sampled_cpu_work`),
    and for `points` > 1 (a `BatchProgram` call)
    everything per point, as vmap makes it; `shared_setup` (a batch whose points share their
    kernels: no batched eps) counts the lazy and closure methods' setup once, as vmap leaves what
    does not depend on the batched values (a lazy batch at P = 1000 measured 132 MiB at 8 points
    and 135 MiB at 32, estimated 1.8 and 4.8 GiB when counted per point), and the lazy
    eigenbasis once too (the closure's P x P work stays per point: it grows with them)."""
    data = plan.data
    P, Pt, C, D = data.P, data.P_test, data.C, data.D
    N = P + Pt
    r = min(D, N)
    T = plan.schedule.save_steps.size
    R = plan.replicas if plan.sampled else 1
    g = min(R, at_once or plan.replicas_at_once)
    kern = 3 * P * P if plan.kernels else 0
    # predictions on every point, and for a sampled solve with the control variate its correction
    # there too (cv_train / cv_test, judged after the run)
    per_save = N * C * (2 if plan.sampled and plan.control_variate else 1) + kern + 8
    once = R * plan.node_split * T * per_save                    # (each population's records)
    setup, inputs = _setup_values(N, P, r, C), _input_values(N, D)
    work = 0.0
    if plan.sampled:
        m = _nodes_per_replica(plan)
        gk = g * plan.node_split          # the group's populations: each its own matrices (node_split)
        state = R * m * (2 * (r + C) + 1)                                  # nodes now and at t = 0
        if plan.cv_mode == "operator" and 0 < (plan.schedule.batch_size or 0) < P:
            state += R * m * (r + C)                # SGD: the control variate's carried contractions
        if plan.neuron_measures is not None:    # K values a node of what a record builds at once,
            # records of all: one population's (nodes, K) where a CPU records them one at a time
            # (`over_members`), else the group's (it counted the group's there: 1152 MiB where the
            # compiled record held 288, 4 replicas of 4096 nodes, K = 9216; 1995 MiB estimated for a
            # 529 MiB peak, measured in a fresh process)
            K = checks.measure_size(plan.neuron_measures, D)
            pop = m // plan.node_split
            one = points == 1 and jax.default_backend() == "cpu" and gk > 1 and pop * N >= RECORD_MAP_VALUES
            state += (pop if one else g * m) * K
            once += R * plan.node_split * T * K
        # the control-variate matrices of the group being integrated (`for_prediction` drops them
        # after), the t = 0 node features of every replica ("operator": the predictor reads them)
        cv = gk * (N * P + 2 * P * P) + (2 * R * m * P if plan.cv_mode == "operator" else 0)
        init_tmp = 4.0 * g * m * N                                         # fields on every point
        step_tmp = 6.0 * g * m * P + (2.0 * g * m * Pt if Pt else 0.0)    # h, phi, phi', gradients
        work = state + cv + gk * P * P * 3                                  # + node kernels at a save
        if points == 1 and jax.default_backend() == "cpu":
            # (a quarter of a copy over the two measured: one group's peak grew 2.0 copies a save,
            # and a solve whose records dominate would otherwise be estimated at its peak)
            records, work = 1.25 * once, work + _sampled_cpu_work(plan, g, m, once)
        else:
            records, work = 3.0 * once, work + max(init_tmp, step_tmp)
        if plan.method == "iterate":   # + the residual history (windows x max_iter): the worst so far,
            # a group's on the device, its host copy, its calls' parts and their concatenation, and the
            # lists info["residuals"] makes of it (up to max_iter Python floats a window: 4x its bytes)
            history = (plan.schedule.steps // plan.window + 1) * plan.max_iter * 10
            work += 4.0 * gk * plan.schedule.steps * P * C + history
    else:
        records = 3.0 * once
    if plan.method == "closure":       # (the kernels and bases, then the moments and their records)
        # the recorded (n, n) moments three times over, as every record (device output, host
        # copy, concatenation): D = 1000, P = 1000, P* = 500 grew 15.2 MiB a save, 2 n^2 values,
        # where once over it estimated 0.78 of the peak at 201 saves
        n = r + C if plan.closure_kind == "linear-trained" else r
        shared, work = 4.0 * P * P + 3.0 * N * n, 6.0 * n * n + 3.0 * T * n * n
    elif plan.method == "lazy":                                            # lazy: eigenbasis, paths
        shared, work = 4.0 * P * P + 2.0 * Pt * P, 4.0 * T * P * C
    common = 0.0            # what a batch's points hold once
    if not plan.sampled:
        if points > 1 and shared_setup:     # points sharing their kernels: the setup once
            common, setup = setup, 0.0
        # the lazy eigenbasis once too; a closure batch holds about 2 P^2 values a point (461 -> 2368
        # MiB from 2 to 16 points at P = 3000, where the lazy one stays at 720 MiB)
        if points > 1 and shared_setup and plan.method == "lazy":
            common += shared
        else:
            work += shared
    if points > 1:          # a vmapped batch keeps more of every point's temporaries alive at once
        work *= 1.5
    # + compilation and the runtime, and the setups `dmft.solve` keeps for reuse
    return 8.0 * (points * (setup + work + records) + common + inputs) + RUNTIME_BYTES + SETUP_CACHE_BYTES
