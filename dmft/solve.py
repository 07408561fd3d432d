"""`dmft.solve`: the infinite-width dynamics of a two-layer network on a dataset.

Example:
    >>> import jax; jax.config.update("jax_enable_x64", True)
    >>> import dmft
    >>> data = dmft.tasks.single_index(D=4, P=16, P_test=8, degree=1, key=jax.random.key(0))
    >>> model = dmft.TwoLayer("linear", gamma0=1.0)
    >>> sol = dmft.solve(model, data, eta0=0.5, steps=20, save_every=10)   # exact closure
    >>> sol.info["method"], sol.t.tolist(), bool(sol.train_loss[-1] < sol.train_loss[0])
    ('closure', [0.0, 5.0, 10.0], True)
    >>> sol.predict(data.x_test).shape
    (8,)
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import time
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from . import checks
from . import closure as _closure
from . import single_site as _ss
from .single_site import (EFFECTIVE_NODES_MIN, NODE_SHARE_MIN, SHARE_BLOCKS, SHARE_DRIFT_MIN,  # (their home:
                          few_nodes)                                                   # node_share's)
from .activations import (HERMITE_NODES, HERMITE_RHO_MAX, HERMITE_SD_MAX, MAX_GRID_NODES,
                          capped_grid_error, grid_capped, grid_nodes, mehler_kernels, piece_nodes)
from .activations import get as get_activation
from .activations import names as activation_names
from .errors import DivergenceError, InputError, MemoryLimitError, NotConverged, failing_at, warn
from .geometry import dtype as _dtype
from .geometry import geometry, initial_output, lazy_setup_compiled, new_point_basis, series_setup
from .kernels import input_kernel, lazy_kernels, lazy_ntk
from .lazy import lazy_path, lazy_records_compiled, lazy_sgd_run
from .plan import (DEFAULTS, KERNEL_ERROR_MAX, METHODS, SETUP_CACHE_BYTES, SolvePlan, exact_closure, memory_estimate,
                   plan_solve, solution_bytes)
from .problem import Dataset, TwoLayer
from . import runner as _runner
from .runner import (RUNAWAY, exact_products, first_nonfinite, first_runaway, kept_note, progress_bar,
                     run_saved, runaway_bound)
from .sampling import normal_quantile, split_rows
from .schedule import (DYNAMICS, RK4_LIMIT, Schedule, check_batch_key, decay_factor, default_batch_key,
                       schedule_from)
from .trajectory import Trajectory

__all__ = ["solve", "Solution", "METHODS", "DYNAMICS", "exact_closure", "sgd_mean", "default_batch_key",
           "run_plan", "initial_ntk"]


# ----------------------------------------------------------------- the result

@dataclasses.dataclass
class Solution(Trajectory):
    """Infinite-width trajectories at the saved times (leading axis T); `dmft.Trajectory`.

    Attributes (beyond the shared records of `dmft.Trajectory`):
        t: (T,) times, saved step counts * eta0.
        f_train, f_test: (T, P) and (T, P*) predictions ((T, P, C) with C outputs);
            f_test is None without test inputs.
        train_loss, test_loss: (T,) mean squared errors (test_loss None without y_test).
        ntk, feature_kernel, gradient_kernel: (T, P, P) equal-time kernels on the
            training points (None with kernels=False).
        alignment: (T,) kernel-target alignment A(K, y) = y^T K y / (||K||_F ||y||^2) of the
            NTK; sampled methods: the mean of the replicas' own alignments (see `replicas`), not
            A of the pooled `ntk`: the two differ by O(replicas / samples) (at most 0.05 of the
            alignment's standard error at 4096 nodes a replica, up to 0.8 at 128; P = 16, relu
            and tanh, gamma0 = 1 and 3).
        weight_change: {"first_layer", "readout"} (T,) relative changes at infinite width,
            sqrt(<|w - w0|^2> / D) and sqrt(<|a - a0|^2> / C): the limits of the networks'
            ||W - W0|| / sqrt(N D) and ||a - a0|| / sqrt(N C), changes relative to the initial
            norm's root mean square (docs/conventions.md; the lazy method's are linearized).
        error: standard errors from the replica spread (sampled methods), else None, of every
            record named in INTERVAL_RECORDS that the solution has (the weight changes' by the
            delta method); with `info["error_dof"]` = replicas - 1 degrees of freedom
            (`Solution.interval`).
        info: method, sizes, iterations and residuals, error estimate, timings,
            the configuration.
        state: closure state at the saved times, else None: "mean" and "second_moment"
            (poly2-fixed) or "covariance" of (z, a) (linear-trained), in the coordinates
            of the field basis: the weights themselves when info["basis"] == "weights"
            (D <= P + P*), else the data span ("kernel-eigenbasis").
        measures: (T, K) node averages of `neuron_measures` (sampled methods), else None.
        replicas: where `error` comes from replicas, each replica's own estimate of the
            scalar records "train_loss", "test_loss", "alignment", "weight_change.first_layer",
            "weight_change.readout" ((T, R)) and "measures" ((T, R, K)); else None. Their mean
            over R is the record for alignment and measures, and the record to first order for
            the losses and weight changes (which are those of the pooled nodes); their spread
            gives `error`. For errors of quantities derived from several records at once (a
            lead between two crossings: `validation.grokking.jackknife_se`). `sgd_mean` gives
            the sequences' values (R = sequences).
    """

    error: dict | None = None
    state: dict | None = None
    replicas: dict | None = None

    GROUPS: ClassVar[tuple] = ("weight_change", "error", "state", "replicas")
    ALL_FINITE: ClassVar[bool] = True                  # (a solve raises rather than return NaN)
    TIME_SERIES_GROUPS: ClassVar[tuple] = GROUPS        # every error and state has a time axis
    PREDICT_HINT: ClassVar[str] = ("solve again in this session (the final state is kept in memory, "
                                   "not in files)")

    @exact_products
    def predict(self, x_new, *, error: bool = False):
        """Predictions at the final saved time on new inputs x_new (n, D).

        The same estimator as `f_test` (on the test inputs it returns f_test[-1]). With
        error=True, also its standard error over the replicas, as `error["f_test"]` is for the
        test points (on them the same numbers); zeros for the exact methods (closure, lazy).
        Outside the span of the data each node's terms are averaged over OFFSPAN_DRAWS
        stratified values of its field there (independent of the dynamics), so predictions
        there are as precise as a solve holding the point (measured 0.4-1.1x its spread).
        The points are computed as `predict_rows(n)` rows (1, 2, 3, 4, 6, 8, 12, ... up to 1024,
        then multiples of 256; the last point repeated): other counts of points of one size compile
        nothing new.

        Returns:
            (n,) or (n, C); with error=True the pair (prediction, standard error).
        """
        error = checks.flag("error", error)
        if error and not self.error and self.info.get("method") not in ("closure", "lazy"):
            raise InputError(f"predict: this solution has no error estimate ({_no_error_why(self.info)})")
        f, se = super().predict(x_new)            # (refused above before any compute)
        if not error:
            return f
        if se is None:
            raise InputError(f"predict: this solution has no error estimate ({_no_error_why(self.info)})")
        return f, se

    def predict_interval(self, x_new, level: float = 0.95):
        """Two-sided confidence interval of the predictions on new inputs x_new (n, D): the
        standard error of `predict(x_new, error=True)` times the Student t quantile with
        `info["error_dof"]` degrees of freedom, as in `interval`. Returns (low, high)."""
        level = _level(level)
        f, se = self.predict(x_new, error=True)
        half = _t_half(se, level, self.info)
        return f - half, f + half

    def interval(self, name: str = "test_loss", level: float = 0.95):
        """Two-sided confidence interval of a record at every saved time.

        `name` is one of INTERVAL_RECORDS: losses, predictions, kernels (solved with
        kernels=True), the NTK-target alignment, the weight changes ("weight_change.first_layer",
        "weight_change.readout") and the measures.

        The standard error `error[name]` comes from R independent replicas, so it is itself
        uncertain (with R = 4 it is off by a factor 2 or more in one solve out of ten); the
        interval uses the Student t quantile with R - 1 degrees of freedom
        (`info["error_dof"]`), which keeps its coverage at `level` whatever R is (measured
        over many keys in scripts/bench_errors.py; a normal quantile covers 83% at R = 4).
        Exact methods (closure, lazy) return a zero-width interval.

        Returns:
            (low, high) arrays shaped like the record.
        """
        level = _level(level)
        value = _record_of(self, name) if name in INTERVAL_RECORDS else None
        if value is None:
            have = [n for n in INTERVAL_RECORDS if _record_of(self, n) is not None]
            raise InputError(f"interval: no record {name!r} here; this solution has {', '.join(have)} "
                             f"(of {', '.join(INTERVAL_RECORDS)})")
        value = np.asarray(value)
        if not self.error:
            if self.info.get("method") in ("closure", "lazy"):
                return value.copy(), value.copy()
            raise InputError(f"interval: this solution has no error estimate (method "
                             f"{self.info.get('method')!r}, {_no_error_why(self.info)})")
        half = _t_half(self.error[name], level, self.info)
        return value - half, value + half


def _record_of(sol, name: str):
    """The record `name` of INTERVAL_RECORDS ("group.key" within a dict group), or None."""
    group, _, key = name.partition(".")
    value = getattr(sol, group, None)
    return (value or {}).get(key) if key else value


def _level(level) -> float:
    level = checks.real("level", level, positive=True)
    if not 0.5 + level / 2 < 1:          # (a level within rounding of 1 has an infinite quantile)
        raise InputError(f"level must be in (0, 1), below 1 by more than rounding, got {level!r}")
    return level


def _no_error_why(info: dict) -> str:
    """Why a sampled solution carries no error estimate, and what would give it one."""
    if info.get("sampler") == "quadrature":
        return ("sampler 'quadrature' is one deterministic rule, whose error no replica spread estimates; "
                "solve with another sampler and replicas >= 2 for an error bar")
    return "one replica; solve with replicas >= 2"


def _t_half(se, level: float, info: dict) -> np.ndarray:
    """Half-width of a two-sided t interval at `level` from a standard error over replicas."""
    dof = int(info.get("error_dof", 0))
    if dof < 1:                         # exact methods: zero-width (their standard error is 0)
        return np.zeros_like(np.asarray(se, float))
    return t_quantile(0.5 + level / 2, dof) * np.asarray(se)


INTERVAL_RECORDS = ("train_loss", "test_loss", "f_train", "f_test", "alignment", "ntk", "feature_kernel",
                    "gradient_kernel", "weight_change.first_layer", "weight_change.readout", "measures")


def t_quantile(p: float, dof: int) -> float:
    """Quantile of Student's t law with `dof` degrees of freedom (normal for dof = inf)."""
    if dof < 1:
        raise InputError(f"interval: {dof} degrees of freedom; an error estimate needs >= 2 replicas")
    from scipy import stats

    return float(stats.t.ppf(p, dof))


# ----------------------------------------------------------------- methods

def _solve_lazy(plan: SolvePlan, su, batch_key, progress):
    model, data, sch = plan.model, plan.data, plan.schedule
    P = su["P"]
    saves = jnp.asarray(sch.save_steps)
    batch = _batch(plan)                   # minibatch SGD: kernel SGD on the same batch sequence
    records = functools.partial(lazy_records_compiled, su, model.gamma0, sch.eta0, dynamics=sch.dynamics,
                                trained=model.trained_readout, has_test=data.P_test > 0,
                                batch_key=batch_key, batch=batch)
    path = None
    if batch:                              # stepped through the runner: progress, Ctrl-C, first bad step
        try:
            path = lazy_sgd_run(su["k0"][:P], su["y"] - su["f0"][:P], sch.gaps, sch.eta0, batch_key, batch,
                                progress=progress)
        except DivergenceError as err:
            if err.partial is not None:    # the saves before it, as records
                n = len(err.partial["delta"])
                with np.errstate(all="ignore"):
                    err.partial = {k: np.asarray(v) for k, v in records(
                        saves[:n], path=(err.partial["delta"], err.partial["s"]))[0].items()}
            raise
    rec, _, s, rose = records(saves, path=path)
    rose = np.asarray(rose)
    k0 = su["k0"][:P]
    T = saves.shape[0]
    if plan.kernels:
        rec.update(ntk=jnp.broadcast_to(k0, (T, P, P)),
                   feature_kernel=jnp.broadcast_to(su["phi0"][:P], (T, P, P)),
                   gradient_kernel=jnp.broadcast_to(su["g0"][:P], (T, P, P)))
    lam_max = float(jnp.max(jnp.linalg.eigvalsh(k0)))
    # "stable": whether the step is stable (full-batch descent: eta0 lambda_max / P < 2; flow: always).
    # Under minibatch SGD no such test holds (a product of batch steps may grow where the full-batch
    # step is stable, as eta0 = 3.5 with B = 1 did: test loss 3e6 after 60 steps): None, not known
    extra = {"lazy_eta0_stability": sch.eta0 * lam_max / P,    # (of full-batch descent)
             "stable": (None if batch else bool(sch.eta0 * lam_max / P < 2)) if sch.dynamics == "gd" else True,
             "loss_rose_at": int(np.argmax(rose)) if rose.any() else -1}
    s_final = s[-1]

    def predictor(x_new):
        x_new = _new_inputs(data, x_new)
        kx = np.asarray(input_kernel(x_new, data.x_train))
        dnew = np.sum(x_new * x_new, axis=1) / data.D
        _check_new_kernels(plan, dnew)
        k0_new, f0 = _new_point_terms(plan, su, kx, dnew)
        f = _squeeze(data, np.asarray(f0 + k0_new @ s_final / P))
        return f, np.zeros_like(f)                                   # exact: no sampling error

    return {k: np.asarray(v) for k, v in rec.items()}, extra, predictor


@functools.partial(jax.jit, static_argnames=("trained", "centered", "c"))
def _closed_form_terms(act, kx, dnew, diag_train, gamma0, *, trained: bool, centered: bool, c: int):
    """K0 and f(0) at new points of an activation with closed-form lazy kernels, one compiled
    program (op by op, each new count of points compiled some 27 small programs, ~1.1 s)."""
    phi0, g0 = lazy_kernels(act, kx, dnew, diag_train)
    return lazy_ntk(phi0, g0, kx, trained), initial_output(act, dnew, gamma0, c, centered=centered, trained=trained)


def _new_point_terms(plan: SolvePlan, su, kx, dnew):
    """(K0 (n, P), f(0) (n, C)) at new points with input kernel kx (n, P) against the training
    points and diagonal dnew (n,): compiled where the lazy kernels have a closed form; a
    quadrature rule's as `lazy_kernels` computes them with concrete inputs (its grid sized by
    their variance, or Mehler's series)."""
    model, act = plan.model, plan.model.activation
    trained, centered, c = model.trained_readout, model.centered, plan.data.C
    diag_train = su["diag"][:su["P"]]
    if act.quadrature == "closed form":
        return _closed_form_terms(act, jnp.asarray(kx, _dtype()), jnp.asarray(dnew, _dtype()), diag_train,
                                  model.gamma0, trained=trained, centered=centered, c=c)
    phi0, g0 = lazy_kernels(act, kx, dnew, diag_train, nodes=plan.kernel_nodes)
    return (lazy_ntk(phi0, g0, kx, trained),
            initial_output(act, jnp.asarray(dnew, _dtype()), model.gamma0, c, centered=centered, trained=trained))


def _check_new_kernels(plan: SolvePlan, variances) -> None:
    """`predict`'s check of `plan_solve`'s: where the prediction uses the lazy kernels at the new
    points (the lazy method, or the control variate) and their capped grid is off by more than
    KERNEL_ERROR_MAX at the widest new field, InputError naming x_new (they were used with a
    warning that said 'less accurate': tanh's G0 is 34% off at variance 1e4)."""
    act = plan.model.activation
    if act.has_closed_form or not np.size(variances) or not (plan.method == "lazy" or plan.control_variate):
        return
    v = float(np.max(variances))
    err = capped_grid_error(act, v)
    if err > KERNEL_ERROR_MAX:
        raise InputError(
            f"x_new: at the widest new field (variance |x|^2 / D = {v:.3g}) the lazy kernels of activation "
            f"{act.name!r}, on their capped grid, are off by {err:.2g} (relative), and this prediction uses "
            "them (" + ("the lazy method" if plan.method == "lazy" else "the control variate") + "); rescale "
            "x_new like the training inputs" + ("" if plan.method == "lazy" else
                                                 ", or predict from a solve with control_variate=False"))


def _batch(plan: SolvePlan) -> int:
    """The SGD batch size B, or 0 for full-batch gradient descent."""
    B = plan.schedule.batch_size
    return 0 if (B is None or B >= plan.data.P) else int(B)


def _solve_closure(plan: SolvePlan, su, progress, batch_key):
    model, data, sch = plan.model, plan.data, plan.schedule
    kind = plan.closure_kind
    mixed = plan.precision == "mixed"
    static = _closure.Static(kind, sch.dynamics, plan.kernels, data.P_test > 0, _batch(plan))
    ctx = _closure.make_context(model.activation, su, model.gamma0, sch.eta0, sch.weight_decay,
                                batch_key, mixed)
    st0 = _closure.initial_state(kind, su["r"], data.C, _dtype())
    rec, st, wall = run_saved(_closure.step, _closure.record, static, ctx, st0, gaps=sch.gaps,
                              progress=progress, label=f"closure ({kind})")

    def predictor(x_new):
        x_new = _new_inputs(data, x_new)
        l_new, perp = new_point_basis(data, su["basis"], x_new)
        dnew = jnp.asarray(np.sum(x_new * x_new, axis=1) / data.D, _dtype())
        f0 = initial_output(model.activation, dnew, model.gamma0, data.C, centered=model.centered,
                            trained=model.trained_readout)
        out = _closure.predict(kind, ctx, st.V, st.m, jnp.asarray(l_new, _dtype()),
                               jnp.asarray(perp, _dtype()), f0, _shrink(sch))
        f = _squeeze(data, np.asarray(out))
        return f, np.zeros_like(f)                                   # exact: no sampling error

    return rec, {"closure": kind, "run_s": wall}, predictor


def _shrink(sch: Schedule) -> float:
    """The factor weight decay has applied to every parameter by the last step."""
    return float(decay_factor(sch.eta0, sch.weight_decay, sch.steps, sch.dynamics))


def _solve_sampled(plan: SolvePlan, su, key, progress, batch_key):
    model, data, sch = plan.model, plan.data, plan.schedule
    mixed = plan.precision == "mixed"
    static = _ss.Static(model.trained_readout, sch.dynamics, plan.kernels, data.P_test > 0,
                        plan.cv_mode, plan.neuron_measures, _batch(plan))
    sh = _ss.make_shared(model.activation, su, model.gamma0, sch.eta0, sch.weight_decay, batch_key,
                         mixed)
    # the replicas are independent: when all of them at once would not fit in max_memory_gb,
    # `plan_solve` chose groups that do, drawn and integrated one after another (replica i's
    # nodes come from fold_in(key, i) whatever the grouping: the same answer)
    R = plan.replicas
    g = plan.replicas_at_once
    recs, finals, reps, runs, its, failed = [], [], [], [], [], []     # recs: records or partial ones
    for first in range(0, R, g):
        rep = drive = None                  # the last group's matrices go before the next is drawn
        rep = _ss.make_replicas(model.activation, su, key, sampler=plan.sampler, samples=plan.samples,
                                replicas=R, quadrature_nodes=plan.quadrature_nodes,
                                trained=model.trained_readout, cv=plan.cv_mode, first=first, count=g,
                                node_split=plan.node_split)
        label = plan.method if g == R else f"{plan.method} (replicas {first + 1}-{first + g} of {R})"
        try:
            if plan.method == "iterate":
                drive, it = _iterate(plan, static, sh, rep, su, label, progress)
                if its:        # one residual history (windows x max_iter), the worst so far, not one a group
                    it["hist"] = np.fmax(its[-1].pop("hist"), it["hist"])
                its.append(it)
            rec, st, wall = run_saved(_ss.step, _ss.record, static, (sh, rep), _ss.initial_state(rep, su["P"], static),
                                      gaps=sch.gaps, drive=drive, progress=progress, label=label)
        except DivergenceError as err:      # the other groups still run: the earliest bad step is raised
            failed.append(err)
            recs.append(err.partial)
            continue
        recs.append(rec)
        finals.append(st)
        reps.append(_ss.for_prediction(rep))
        runs.append(wall)
    if failed:
        err = _earliest(failed, recs)
        if err.partial is not None and "cv_train" in err.partial:
            noise = _cv_noise(data, err.partial)
            if (j := _cv_noisy(noise)) >= 0:
                note = _cv_noise_note(noise, j, float(sch.times[j]))
                if plan.cv_auto:
                    raise _NoisyControlVariate(note) from err
                err.args = (err.args[0] + " " + note + " Solve with control_variate=False.",)
                err.cv_note = note
        raise err
    rec = recs[0] if len(recs) == 1 else {k: np.concatenate([r[k] for r in recs], axis=1) for k in recs[0]}
    noise = _cv_noise(data, rec) if "cv_train" in rec else None
    rec.pop("cv_train", None)
    rec.pop("cv_test", None)
    share = np.min(rec.pop("node_share"), axis=1)                        # (T,), the least replica's
    drift = np.median(rec.pop("node_share_drift"), axis=1)               # (T,), the replicas' median
    # (node_split = k: R k populations of M / k nodes, recorded as replicas; the R drawn ones are
    # the independent replicas, error_dof = R - 1; the nodes' key pairs split solves with the whole)
    split = {"node_split": plan.node_split} if plan.node_split > 1 else {}
    extra = {"nodes_per_replica": int(reps[0].w.shape[1]), "replicas": R * plan.node_split, **split,
             "nodes_key": np.asarray(jax.random.key_data(key)).tolist(),
             "replicas_at_once": g,
             "run_s": float(np.sum(runs)), "effective_node_share": share.tolist(),
             "node_share_drift": drift.tolist()}
    # a run that ends unresolved (the replicas' spread of the train predictions above the targets'
    # RMS) with the solver's own control variate is solved again without it (`run_plan`), whatever
    # the noise ratio: fed back through the error, the correction can destabilize the run itself,
    # and then the same nodes' spread without it is as large (tanh, 64 nodes a replica, gamma0 =
    # 0.3: the loss rose 1.48 -> 2.22 +- 4.5 at a ratio of 0.57-0.96; 0.401 +- 0.009 without it)
    unresolved = noise is not None and plan.cv_auto and noise[1][-1] > 1.0
    note = ""
    if noise is not None and (j := _cv_noisy(noise)) >= 0:
        note = _cv_noise_note(noise, j, float(sch.times[j]))
        # nothing to keep where it diverges: solved again without it (a catapult near the lazy
        # regime, 1.56 at 1.7, ends resolved)
        if plan.cv_auto and _will_diverge(plan, rec):
            raise _NoisyControlVariate(note)
        extra["control_variate_noisy"] = note
        if not unresolved:
            warn(f"{plan.method}: {note} Solve with control_variate=False.")
    if unresolved:
        extra[_UNRESOLVED] = ((f"{note} " if note else "")
                              + f"The run with the lazy-kernel control variate ended unresolved: at t = "
                              f"{float(sch.times[-1]):g} its train predictions' spread over replicas is "
                              f"{noise[1][-1]:.3g} of the targets' RMS (the correction, fed back through the error, "
                              "can destabilize the run where the nodes' kernel moves far from K0 or a replica has "
                              "few nodes).")
    M = extra["nodes_per_replica"]
    few = few_nodes(share, M, None if plan.sampler == "quadrature" else drift)   # (a grid has no tail)
    if np.any(few):
        j = int(np.argmax(few))
        extra["heavy_tailed"] = True
        if few_nodes(share[j:j + 1], M)[0]:
            why = (f"the outputs are carried by few nodes (effective share {share[j]:.2g} of {M} per replica, "
                   f"about {share[j] * M:.0f} nodes, at t = {float(sch.times[j]):g}; light-tailed site laws "
                   f"keep it above {NODE_SHARE_MIN:g}): a few nodes run away (or few are active)")
        else:
            why = (f"the share of nodes that carry the outputs still moves with the node count (over all {M} "
                   f"nodes of a replica it is {drift[j]:.2g} of its value over {M // SHARE_BLOCKS}, at t = "
                   f"{float(sch.times[j]):g}; where {M // SHARE_BLOCKS} nodes sample the site law it is above "
                   f"{SHARE_DRIFT_MIN:g}): larger samples keep finding larger nodes, or {M} a replica are too "
                   "few for this site law")
        warn(
            f"{plan.method}: {why}, so the average moves with the node count and the error bar, the "
            "replicas' spread, understates the error. Compare solves at several samples (or networks at "
            "several widths) before trusting it; info['effective_node_share'] and info['node_share_drift'] "
            "hold it per save")
    if its:
        n = np.max([it["n"] for it in its], axis=0)                  # per window, the slowest group
        hist = its[-1]["hist"]                                        # the worst replica's residuals
        extra.update(window=plan.window, iterations=n.tolist(),
                     residuals=[h[:k].tolist() for h, k in zip(hist, n)],
                     final_residual=float(max(np.max(it["res"]) for it in its)),
                     iterate_s=float(sum(it["s"] for it in its)),
                     converged=bool(all(np.all(it["res"] <= plan.tol) for it in its)))
        if len(its) > 1:
            extra["iterations_by_group"] = [it["n"].tolist() for it in its]

    def predictor(x_new):
        x_new = _new_inputs(data, x_new)
        dt = _dtype()
        if x_new.shape[0] == 0:           # no points: a prediction's shapes, as the exact methods give
            empty = _squeeze(data, np.zeros((0, data.C), dt))
            return empty, (empty if R > 1 else None)
        l_new, perp = new_point_basis(data, su["basis"], x_new)
        _check_new_kernels(plan, np.sum(x_new * x_new, axis=1) / data.D)
        dnew = jnp.asarray(np.sum(x_new * x_new, axis=1) / data.D, dt)
        kx = np.asarray(input_kernel(x_new, data.x_train))
        k0_new, f0 = _new_point_terms(plan, su, kx, dnew)
        # the field outside the data span (kernel eigenbasis) at t = 0 is sd_x xi, xi ~ N(0, 1)
        # independent of everything the dynamics touch (it only decays), so each node's terms at
        # a new point are averaged over xi: OFFSPAN_DRAWS values per node, one in each of as many
        # equal-probability strata (unbiased, and the xi average nearly exact: off-span
        # predictions as precise as in-span ones; one draw per node was 1.5-2.5x noisier). A point's
        # prediction does not depend on the others predicted with it and costs O(draws) per node.
        # The sampler's antithetic pairs are kept (a pair sharing its weights shares xi, a pair of
        # negated weights gets -xi, so F0 still cancels within it). xi is drawn per replica from
        # fold_in(fold_in(key, 2^20), replica): the same for any grouping.
        sd = jnp.asarray(np.sqrt(np.clip(perp, 0, None)), dt)
        root = jax.random.fold_in(key, 2 ** 20)
        M = reps[0].w.shape[1] * plan.node_split           # a replica's nodes (its parts', split)
        paired = plan.sampler not in ("mc", "quadrature")
        outside = bool(np.any(perp > 0))                            # (none in the weight basis)

        def draws(r):
            if not outside:
                return jnp.zeros((M, 1), dt)
            k = jax.random.fold_in(root, r)
            K = OFFSPAN_DRAWS
            rows = M if not paired else M // 2
            xi = normal_quantile((jnp.arange(K, dtype=dt)[None, :] + jax.random.uniform(k, (rows, K), dt)) / K)
            if not paired:
                return xi
            return jnp.concatenate([xi, xi if model.trained_readout else -xi])

        # points in blocks of at most PREDICT_BLOCK_VALUES / (nodes at once) (each (nodes, block)
        # array: memory bounded whatever n), the last block padded to the same shape (one compile)
        n = l_new.shape[0]
        block = max(1, min(n, PREDICT_BLOCK_VALUES // (g * M)))      # (g M: the group's nodes, split or not)
        rows = [jnp.asarray(a, dt) for a in (l_new, sd, k0_new, f0)]
        outs = []
        for i, (rep, st) in enumerate(zip(reps, finals)):
            xi_nodes = jnp.concatenate([split_rows(draws(i * g + j), plan.node_split) for j in range(g)])
            parts = []
            for start in range(0, n, block):
                cut = [a[start:start + block] for a in rows]
                pad = block - cut[0].shape[0]
                if pad:
                    cut = [jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)) for a in cut]
                out = _ss.predict(static, sh, rep, st, cut[0], xi_nodes, cut[1], cut[2], cut[3], _shrink(sch))
                parts.append(np.asarray(out)[:, :block - pad])
            outs.append(np.concatenate(parts, axis=1))
        per = np.concatenate(outs)                                    # (R k, n, C), replicas in order
        se = per.std(axis=0, ddof=1) / np.sqrt(per.shape[0]) if R > 1 else None     # (as error["f_test"])
        return _squeeze(data, per.mean(axis=0)), (None if se is None else _squeeze(data, se))

    # (the rows of a block of predictions, read when it predicts: `_padded` pads to whole blocks)
    predictor.block = lambda: max(1, PREDICT_BLOCK_VALUES // (g * reps[0].w.shape[1] * plan.node_split))
    return rec, extra, predictor


CV_NOISE_MAX = 2.0     # the predictions' spread over replicas with the control variate, over without it,
CV_NOISE_SCALE = 0.1   # where that spread is also above this share of the targets' RMS: the correction's noise
CV_NOISE_REPLICAS = 3  # the least replicas the comparison is made with


_UNRESOLVED = "_control_variate_unresolved"   # (a key of the first run's info that `run_plan` takes out)


class _NoisyControlVariate(Exception):
    """Raised by `_solve_sampled` where the solver's own control variate added noise (`_cv_noise`)."""


def _cv_noise(data: Dataset, rec) -> tuple[np.ndarray, np.ndarray]:
    """Per save, (ratio, scale): the train predictions' spread over replicas (RMS over points)
    with the lazy-kernel control variate over the same nodes' without it (their estimate less the
    correction), and that spread over the targets' RMS. Measured: in the lazy regime the ratio
    is far below 1, in rich runs (relu and tanh, gamma0 0.5-2) at most 1.34 and the scale at most
    0.03; through a catapult near the lazy regime (relu, gamma0 = 0.05, at the edge of stability)
    1.56 at a scale of 1.7, where the control variate is what keeps the solve stable. Where the
    kernel has moved so far that (K0 - K0_nodes) S / P is mostly noise, fed back through the
    error (erf or tanh at input scale 10-30), the ratio reads 2-13 and the scale 0.17-1 from the
    first saves on, and the loss ends 3.8 +- 15 or diverges where the same solve without it
    reads 0.005. Zeros at t = 0, with fewer than CV_NOISE_REPLICAS replicas (two
    give the spreads one degree of freedom each: their ratio passed 2 at 32 nodes a replica in 2
    of 400 SGD solves) or with all-zero targets (nothing to fit: rounding against rounding)."""
    f = np.asarray(rec["f_train"], np.float64)
    y = np.asarray(data.targets("train"), np.float64)
    if f.ndim < 3 or f.shape[1] < CV_NOISE_REPLICAS:
        return np.zeros(f.shape[:1]), np.zeros(f.shape[:1])
    with np.errstate(all="ignore"):
        ratio, scale = cv_noise_measure(y, f, np.asarray(rec["cv_train"], np.float64))
    big = np.finfo(np.float64).max
    return np.nan_to_num(ratio, nan=0.0, posinf=big), np.nan_to_num(scale, nan=0.0, posinf=big)


def cv_noise_measure(y, f, cv, xp=np):
    """Per save, (ratio, scale) of `_cv_noise` from the targets y, the records f (saves, replicas,
    points...) and their corrections cv, in numpy or (xp=jnp) traced inside a batch's point
    program: the spread over replicas (RMS over points) of f over that of f - cv (the largest
    float where only the latter is 0), and of f over the targets' RMS; zeros for all-zero targets."""
    rms = xp.sqrt(xp.mean(y * y))
    sd = lambda a: xp.sqrt(xp.mean(xp.var(a, axis=1), axis=tuple(range(1, a.ndim - 1))))   # noqa: E731
    spread, plain = sd(f), sd(f - cv)
    big = xp.finfo(spread.dtype).max
    ratio = xp.where(plain > 0, spread / xp.where(plain > 0, plain, 1.0), xp.where(spread > 0, big, 0.0))
    scale = spread / xp.where(rms > 0, rms, 1.0)
    return xp.where(rms > 0, ratio, 0.0), xp.where(rms > 0, scale, 0.0)


def cv_noise_hits(ratio, scale):
    """Where (per save, or per point and save) the control variate's noise dominates: a ratio
    above CV_NOISE_MAX at a spread above CV_NOISE_SCALE of the targets' RMS (NaN: no)."""
    with np.errstate(invalid="ignore"):
        return (ratio > CV_NOISE_MAX) & (scale > CV_NOISE_SCALE)


def _cv_noisy(noise) -> int:
    """The first save where the control variate's noise dominates (`_cv_noise`), or -1."""
    hit = cv_noise_hits(*noise)
    return int(np.argmax(hit)) if hit.any() else -1


def _will_diverge(plan: SolvePlan, rec) -> bool:
    """Whether these records (replica axis 1) make a divergence `_assemble` will raise: a
    prediction that is not finite, or a train loss that ran away."""
    f = np.asarray(rec["f_train"], np.float64).mean(axis=1)
    y = np.asarray(plan.data.targets("train"), np.float64)
    with np.errstate(all="ignore"):
        loss = _mse(y, f)
    return (not np.all(np.isfinite(f))) or first_runaway(loss, float(np.mean(y * y)), plan.model.gamma0) >= 0


def _cv_noise_note(noise, j: int, t: float) -> str:
    return (f"The lazy-kernel control variate adds noise here: at t = {t:g} the predictions' spread over "
            f"replicas is {noise[0][j]:.3g} times what the same nodes give without it, and {noise[1][j]:.2g} of "
            "the targets' RMS (the kernel has moved far from its lazy value K0, and (K0 - K0_nodes) S / P is "
            "then noise, fed back through the error: wide inputs with a saturating activation, for one).")


def _earliest(errors, ran) -> DivergenceError:
    """The first bad step over groups of replicas run one after another, as one vmapped run
    would have reported it. Its partial records are every group's (`ran`, in replica order: the
    records or partial records of each) over the saves the earliest error kept, a group that
    stopped sooner padded with NaN; None when a group has none (it failed in the iteration)."""
    err = min(errors, key=lambda e: e.step)
    if err.partial is None:
        return err
    if any(p is None for p in ran):
        err.partial = None
        return err
    n = len(next(iter(err.partial.values())))

    def cut(a):
        a = np.asarray(a)[:n]
        if len(a) == n:
            return a
        return np.concatenate([a.astype(float), np.full((n - len(a),) + a.shape[1:], np.nan)])

    err.partial = {k: np.concatenate([cut(p[k]) for p in ran], axis=1) for k in err.partial}
    return err


def _iterate(plan: SolvePlan, static, sh, rep, su, label, progress: bool = False):
    """The self-consistent iteration for one group of replicas: (the converged Delta that drives
    the forward run, {"n", "hist", "res" per window, "s": seconds}). With a progress bar the
    windows run in calls of about `runner.CALL_SECONDS` (power-of-two groups, one window in the
    first), so that an interruption acts within seconds; the numbers do not depend on the cut."""
    sch = plan.schedule
    P, W = su["P"], plan.window
    total = sch.steps // W
    delta_lazy, _, _ = lazy_path(su["k0"][:P], su["y"] - su["f0"][:P], jnp.arange(W), sch.eta0, dynamics="gd")
    delta0 = jnp.broadcast_to(delta_lazy, (rep.w.shape[0],) + delta_lazy.shape)
    t0 = time.perf_counter()
    parts, carry, done, rate, shapes = [], None, 0, 0.0, set()
    bar = progress_bar(total, f"{label}: iteration", unit="window") if progress else None
    try:
        while done < total:
            count = total - done
            if progress:                   # powers of two only: few compiled programs
                cap = min(max(int(rate * _runner.CALL_SECONDS), 1), count)
                count = 1 << (cap.bit_length() - 1)
            tic = time.perf_counter()
            *part, carry = _ss.iterate(static, plan.max_iter, W, count, sh, rep, delta0, plan.tol,
                                       plan.damping, carry, jnp.asarray(done, jnp.int32))
            part[1:] = [np.asarray(a) for a in part[1:]]
            if count in shapes:
                rate = max(rate, count / max(time.perf_counter() - tic, 1e-9))
            shapes.add(count)
            parts.append(part)
            n, hist, res = part[1:]
            if not np.all(np.isfinite(res)):
                w = int(np.argmin(np.isfinite(res)))
                g = done + w
                raise DivergenceError(
                    f"{label}: the residual became non-finite in window {g} (steps {g * W} to "
                    f"{(g + 1) * W}); residuals there: {hist[w][:n[w]].tolist()}",
                    step=g * W, cause="non-finite Delta in the iteration")
            done += count
            if bar is not None:
                bar.update(count)
    finally:
        if bar is not None:
            bar.close()
    delta = parts[0][0] if len(parts) == 1 else jnp.concatenate([p[0] for p in parts], axis=1)
    n, hist, res = (np.concatenate([p[i] for p in parts]) for i in (1, 2, 3))
    return jnp.moveaxis(delta, 0, 1), {"n": n, "hist": hist, "res": res, "s": time.perf_counter() - t0}


def _new_inputs(data: Dataset, x_new) -> np.ndarray:
    """New inputs as a float64 (n, D) array, checked like `Dataset`'s."""
    from .problem import as_array

    x = as_array("x_new", x_new, (1, 2))
    one = x.ndim == 1
    x = x[None] if one else x
    if x.shape[1] != data.D:
        # (a 1-d x_new is one point of D features; n points of one feature are (n, 1))
        hint = (f"; a 1-d x_new is one point: for {x.shape[1]} points of D = 1 pass x_new.reshape(-1, 1)"
                if one and data.D == 1 else "")
        raise InputError(f"x_new: has {x.shape[1]} features but the data have D = {data.D}{hint}")
    return np.asarray(x, dtype=np.float64)


def _squeeze(data: Dataset, f):
    return f[..., 0] if data.scalar else f


# standard normals per node averaged over at a new point's field outside the data span
# (stratified: one per equal-probability stratum). Off-span predictions then spread 0.4-1.1x as
# much over keys as a solve holding the point as a test point (tanh, erf with decay, relu;
# 32 keys): 1.5-2.5x with one draw per node. predict costs 16x the elementwise work.
OFFSPAN_DRAWS = 16
# predict holds a few (nodes at once, points) arrays: points go in blocks of at most this many
# node-point values (2^24 float64: 128 MiB an array), so a predict of many points stays small
PREDICT_BLOCK_VALUES = 2 ** 24
# predict computes n points as predict_rows(n) rows (the last point repeated, its copies dropped):
# any count of points compiles one of a few programs (a new count compiled ~30 programs, ~2 s, for
# a 10 ms prediction), at most 1.5x the rows (a quadrature rule's kernels at the new points cost
# in proportion: tanh's one point 5 ms a call, as 16 rows it was 57)


def predict_rows(n: int, block: int | None = None) -> int:
    """The rows `predict` computes n points at: 1, 2, 3, 4, 6, 8, 12, ... (2^k and 3 2^(k-1)) up
    to 1024, then multiples of 256; where the predictor goes in blocks of `block` rows and that is
    more than one block, whole blocks of n (one point of a very wide ensemble was 8 blocks of
    padding)."""
    if n <= 1024:
        top = 1 << max(n - 1, 0).bit_length()
        rows = 3 * top // 4 if top >= 4 and n <= 3 * top // 4 else top
    else:
        rows = -(-n // 256) * 256
    if block is not None and rows > block:
        rows = -(-max(n, 1) // block) * block
    return rows


def _padded(data: Dataset, predictor):
    """`predictor` on x_new's points padded to `predict_rows` rows (checked first, as it checks
    them): (predictions, standard errors) of the points given. A predictor that goes in blocks
    says how many rows a block holds (its `block()`)."""
    def predict(x_new):
        x = _new_inputs(data, x_new)
        n = x.shape[0]
        m = predict_rows(n, predictor.block() if hasattr(predictor, "block") else None)
        if n == 0 or m == n:
            return predictor(x)
        f, se = predictor(np.concatenate([x, np.repeat(x[-1:], m - n, axis=0)]))
        return f[:n], (None if se is None else se[:n])
    return predict


# ----------------------------------------------------------------- assembly

def _mse(y, f):
    # a loss that overflows is inf, which `_assemble` raises as the first bad step (numpy's
    # own overflow warning would only print beside it)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.mean((y - f) ** 2, axis=tuple(range(-2, 0)))


def _assemble(plan: SolvePlan, rec, extra, su, *, arrays_only: bool = False):
    """The `Solution` of a run's records (its first saves when they are a divergence's
    partial records); with arrays_only, its arrays by name (a `DivergenceError.partial`)."""
    model, data, sch = plan.model, plan.data, plan.schedule
    n = np.shape(rec["f_train"])[0]                 # saves recorded (all, or those before a divergence)
    save_steps, times = sch.save_steps[:n], sch.times[:n]
    y = np.asarray(data.targets("train"))
    yt = data.targets("test")
    error = replicas = None
    if plan.sampled:
        R = rec["f_train"].shape[1]                               # (populations: replicas x node_split)
        per_train = _mse(y, rec["f_train"])                        # (T, R)
        per_test = _mse(yt, rec["f_test"]) if (yt is not None and "f_test" in rec) else None
        if R // plan.node_split > 1:
            replicas = {"train_loss": per_train, "test_loss": per_test, "alignment": rec["alignment"],
                        "measures": rec.get("measures")}
            se = lambda a: _ss.replica_se(np.asarray(a), xp=np)   # noqa: E731
            error = {"train_loss": se(per_train), "f_train": se(rec["f_train"])}
            if per_test is not None:
                error["test_loss"] = se(per_test)
            if "f_test" in rec:
                error["f_test"] = se(rec["f_test"])
            for k in ("alignment", "ntk", "feature_kernel", "gradient_kernel", "measures"):
                if rec.get(k) is not None:
                    error[k] = se(rec[k])
            # weight changes: sqrt(mean over replicas of the squared change / dim), so by the
            # delta method se = se(squared change) / (2 dim change), 0 where the change is 0
            se_sq = {g: se(rec[f"sq_weight_change.{g}"]) for g in ("first_layer", "readout")}
            if data.scalar:
                error = {k: (v[..., 0] if k.startswith("f_") else v) for k, v in error.items()}
            sq_rep, sq_rep_readout = rec["sq_weight_change.first_layer"], rec["sq_weight_change.readout"]
        rec = {k: (v.mean(axis=1) if v.ndim >= 2 else v) for k, v in rec.items()}
        extra = {**extra, "error_dof": R // plan.node_split - 1}     # (the independent replicas')
    f_tr = rec["f_train"]
    f_te = rec.get("f_test")
    train_loss = _mse(y, f_tr)
    test_loss = _mse(yt, f_te) if (yt is not None and f_te is not None) else None
    sq_first = rec["sq_weight_change.first_layer"]
    if su["basis"] == "kernel-eigenbasis" and sch.weight_decay > 0:
        # the D - r weight coordinates outside the data span only decay: add their change
        shrink = decay_factor(sch.eta0, sch.weight_decay, save_steps, sch.dynamics)
        sq_first = sq_first + (1 - shrink) ** 2 * (data.D - su["r"])
    wc = {"first_layer": np.sqrt(np.maximum(sq_first, 0) / data.D),
          "readout": np.sqrt(np.maximum(rec["sq_weight_change.readout"], 0) / data.C)}
    if error:
        for g, dim in (("first_layer", data.D), ("readout", data.C)):
            error[f"weight_change.{g}"] = _ss.weight_change_se(se_sq[g], wc[g], dim, xp=np)
        # each replica's own weight changes (its squared change, with the same off-span part)
        replicas["weight_change.first_layer"] = np.sqrt(np.maximum(
            sq_rep + (sq_first - rec["sq_weight_change.first_layer"])[:, None], 0) / data.D)
        replicas["weight_change.readout"] = np.sqrt(np.maximum(sq_rep_readout, 0) / data.C)
        replicas = {k: np.asarray(v) for k, v in replicas.items() if v is not None}
    f_tr = _squeeze(data, f_tr)
    f_te = None if f_te is None else _squeeze(data, f_te)
    state = None
    if plan.method == "closure":
        state = {k: rec[k] for k in ("mean", "second_moment", "covariance") if k in rec}
    est = {}
    if error:
        est = {k: float(np.max(v)) for k, v in error.items() if k.endswith("loss")}
    rms = {"train": float(np.sqrt(np.mean(y ** 2)))}
    if yt is not None:
        rms["test"] = float(np.sqrt(np.mean(yt ** 2)))
    info = {"method": plan.method, "dynamics": sch.dynamics, "target_rms": rms, **extra,
            "error_estimate": est or ({"exact": 0.0} if plan.method in ("closure", "lazy") else est)}
    # every returned array is finite, or the solve raises with the first bad saved step
    arrays = {"f_train": f_tr, "f_test": f_te, "train_loss": train_loss, "test_loss": test_loss,
              "ntk": rec.get("ntk"), "feature_kernel": rec.get("feature_kernel"),
              "gradient_kernel": rec.get("gradient_kernel"), "alignment": rec["alignment"],
              "weight_change.first_layer": wc["first_layer"], "weight_change.readout": wc["readout"],
              "measures": rec.get("measures"), **{f"error.{k}": v for k, v in (error or {}).items()},
              **{f"replicas.{k}": v for k, v in (replicas or {}).items()},
              **{f"state.{k}": v for k, v in (state or {}).items()}}
    if arrays_only:
        return {k: v for k, v in arrays.items() if v is not None}
    j, name = first_nonfinite(arrays)
    what, cause = "is not finite", f"non-finite {name}"
    rose = info.pop("loss_rose_at", -1)
    if rose >= 0 and (j < 0 or rose <= j):       # (lazy.loss_rose: the linear model diverges)
        j, name, what, cause = rose, "train_loss", "rose above its lowest earlier value", "train loss rose"
    away = first_runaway(train_loss, np.mean(y ** 2), model.gamma0, before=j)
    if away != j:                                # finite, but on its way to overflow (runner.RUNAWAY)
        bound = float(runaway_bound(train_loss, np.mean(y ** 2), model.gamma0))
        j, name, cause = away, "train_loss", "train loss ran away"
        what = (f"ran away ({train_loss[j]:.3g} > {bound:.3g} = {RUNAWAY:g} x max(1, gamma0^-2) x "
                "max(its value at t = 0, the targets' mean square, 1); still finite, it grows until it overflows)")
    if j >= 0:
        k = int(save_steps[j])
        lo = int(save_steps[j - 1]) if j > 0 else 0
        raise DivergenceError(
            f"{plan.method}: {name} {what} at t = {times[j]:g} (saved step {k}; it went bad "
            f"between steps {lo} and {k}). "
            + (f"Lower eta0 below {2 * sch.eta0 / extra['lazy_eta0_stability']:.3g}, or check the data scale "
               f"(the lazy step is unstable: eta0 lambda_max / P = {extra['lazy_eta0_stability']:.3g} > 2; "
               "gamma0 does not enter the lazy limit's step)"
               if plan.method == "lazy" and extra.get("stable") is False
               else "Lower eta0 or gamma0, or check the data scale") + ". "
            + (f"{extra['control_variate_noisy']} Solve with control_variate=False. "
               if "control_variate_noisy" in extra else "")
            + kept_note(save_steps, j),
            step=k, cause=cause,
            partial={key: np.asarray(v)[:j] for key, v in arrays.items() if v is not None} if j else None,
            saved_steps=save_steps[:j])
    return Solution(t=times, f_train=f_tr, f_test=f_te, train_loss=train_loss,
                    test_loss=test_loss, ntk=rec.get("ntk"), feature_kernel=rec.get("feature_kernel"),
                    gradient_kernel=rec.get("gradient_kernel"), alignment=rec["alignment"],
                    weight_change=wc, error=error, info=info, state=state,
                    measures=rec.get("measures"), replicas=replicas)


_UNSET = object()


def solve(model: TwoLayer, data: Dataset, eta0=_UNSET, steps=_UNSET, save_every=_UNSET, *,
          schedule: Schedule | None = None, dynamics=_UNSET, weight_decay=_UNSET, save_at=_UNSET,
          batch_size=_UNSET, batch_key=None, method: str = "auto", samples: int = 16384, replicas: int = 4,
          sampler: str = "stratified", key=None, control_variate: bool | None = None,
          kernels: bool = True, tol: float = 1e-12, max_iter: int = 200, damping: float = 1.0,
          window=None, kernel_nodes: int = 64, quadrature_nodes: int = 8, progress: bool = False,
          max_memory_gb: float = 4.0, neuron_measures=None, precision: str = "full",
          node_split: int = 1) -> Solution:
    """Solve the two-layer DMFT (docs/derivations.md) in DMFT time units.

    Args:
        model: `dmft.TwoLayer`.
        data: `dmft.Dataset`.
        eta0, steps, save_every, dynamics, weight_decay, save_at, batch_size: the training
            protocol in keyword form (defaults 0.1, 1000, 10, "gd", 0.0, None, None), or
        schedule: a `dmft.Schedule` (also accepted as the third positional argument);
            not both. eta0 is the gradient-descent step (the integrator step for
            dynamics="flow": fourth-order Runge-Kutta); step k is at t = k eta0;
            weight_decay is kappa >= 0 per unit time (docs/conventions.md). With batch_size
            B < P each step uses a minibatch of B points (minibatch SGD); the infinite-width
            dynamics is then the DMFT conditioned on the batch sequence, which every neuron
            shares (methods "forward" and "closure").
        batch_key: the key of the minibatch sequence (default: derived from key); pass the
            same one to `networks.train(batch_key=...)` to train networks on the same batches.
        method: "auto" (closure when exact, else forward), "forward", "iterate",
            "closure" or "lazy".
        samples: single-site nodes in total over all replicas (sampled methods).
        replicas: independent replicas; their spread gives `Solution.error`.
        sampler: "stratified", "orthogonal", "antithetic", "mc", "quadrature" or "sobol"
            (`dmft.sampling`).
        key: `jax.random.key`; default key(0). Same key, same result.
        control_variate: correct node averages with the exact lazy kernel; None (default)
            means on without weight decay and off with it (decay moves the kernel far
            from K0, where the correction only adds noise).
        kernels: keep the (T, P, P) kernels (alignment is always computed).
        tol, max_iter, damping: stopping rule and mixing of method="iterate".
        window: steps per time window of method="iterate" (windows are solved in
            order); default: the longest divisor of steps up to 10. Long windows
            converge only while the kernel moves little within them.
        kernel_nodes: least quadrature nodes per dimension for lazy kernels without a
            closed form (trapezoid rule, or piecewise Gauss-Legendre between declared kinks;
            raised for large input variance, `dmft.activations.grid_nodes`).
        quadrature_nodes: nodes per dimension for sampler="quadrature" (one deterministic
            tensor-product rule: samples and replicas do not apply, there is no error bar, and
            the config records the rule's node count as samples and 1 replica).
        progress: show a progress bar.
        max_memory_gb: refuse solves whose arrays would exceed this.
        neuron_measures: None, or a function (w, w0) -> (K,) of one neuron's first-layer
            weights now and at t = 0 (jax-traceable): its single-site average is kept in
            `Solution.measures` (sampled methods, D <= P + P* so that nodes are weights).
        precision: "full" (default) or "mixed" (methods "closure" and "forward"): each step's
            products in float32 while the state (closure moments, or nodes) accumulates in
            float64. The forward solver's records sum the outputs in float64 but the (P, P)
            kernels in float32 (most of a record's cost): kernels and alignment carry ~1e-7
            relative rounding, which near gamma0 = 0.05 with a near-exact sampler can exceed
            their own (tiny) standard error on some entries; use "full" to study kernels
            there. About 1.7x faster for the Kumar et al. closure (test loss within 1e-7
            relative of "full"); for the forward solver's losses and predictions the
            difference stays within a few percent of the sampling error (`scripts/bench_dmft.py`).
            Needs gamma0 >= 0.05 (the rounding of the node sums is divided by gamma0) and
            float64 enabled (otherwise everything is float32 already).
        node_split: 1 (default), or k: the same nodes as node_split=1 (same key, samples and
            replicas), each replica's integrated as k populations of samples / (replicas k) nodes
            (whole antithetic pairs, `dmft.sampling.split_sites`): the DMFT at 1 / k of the nodes
            a replica, paired node for node with the unsplit solve, so that the difference of the
            two is the node-count bias with the sampling noise they share cancelled
            (`validation.node_bias`; docs/derivations.md section 2). Sampled methods, not
            sampler="quadrature"; samples a multiple of 2 x replicas x k. info records
            "node_split" and the R k populations as "replicas" (every sampled solve records its
            key's data, "nodes_key"); its errors are the populations' spread (conservative: a
            replica's parts are not independent) at error_dof = replicas - 1.

    Returns:
        A `Solution`; `.predict(x_new)` gives final-time predictions on new inputs.

    Raises:
        InputError (a ValueError): bad arguments (before any computation).
        DivergenceError: non-finite outputs, with the first bad step.
        NotConverged: method="iterate" above tol after max_iter iterations.
    """
    if isinstance(eta0, Schedule):
        if schedule is not None:
            raise InputError("schedule: given twice (positionally and as schedule=)")
        schedule, eta0 = eta0, _UNSET
    sch = schedule_from(schedule, **{k: v for k, v in dict(
        eta0=eta0, steps=steps, save_every=save_every, dynamics=dynamics, weight_decay=weight_decay,
        save_at=save_at, batch_size=batch_size).items() if v is not _UNSET},
        defaults=dict(eta0=0.1, steps=1000))
    # the plain arguments first: plan_solve evaluates the activation's tails (small JAX programs)
    progress = checks.flag("progress", progress)
    key = checks.prng_key("key", key)
    checks.prng_key("batch_key", batch_key)
    plan = plan_solve(model, data, sch, method=method, samples=samples, replicas=replicas,
                      sampler=sampler, control_variate=control_variate, kernels=kernels, tol=tol,
                      max_iter=max_iter, damping=damping, window=window, kernel_nodes=kernel_nodes,
                      quadrature_nodes=quadrature_nodes, max_memory_gb=max_memory_gb,
                      neuron_measures=neuron_measures, precision=precision, node_split=node_split)
    if key is None:
        key = jax.random.key(0)
    batch_key = check_batch_key(batch_key, sch.batch_size, data.P)
    return run_plan(plan, key=key, progress=progress, batch_key=batch_key)


SETUP_CACHE_SIZE = 4
_SETUP_CACHE: collections.OrderedDict = collections.OrderedDict()


def _nbytes(su: dict) -> int:
    return sum(int(getattr(v, "nbytes", 0)) for v in su.values())


def _fingerprint(data: Dataset) -> str:
    """A digest of the data's arrays (shapes, dtypes and bytes)."""
    h = hashlib.sha1()
    for a in (data.x_train, data.y_train, data.x_test, data.y_test):
        if a is None:
            h.update(b"-")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# a quadrature estimate of the lazy kernels that moves more than this (relative) under a
# doubling of the nodes is reported: the trapezoid rule is exponentially accurate for smooth
# activations (~1e-13) but converges slowly across a kink that is not declared (declared
# kinks are integrated piecewise, ~1e-14), and the control variate and the lazy method carry
# that error into every answer
KERNEL_QUADRATURE_TOL = 1e-6


def _smooth_builtin(act) -> bool:
    """tanh and softplus as the library defines them: analytic, the trapezoid rule is exact to
    ~1e-13 there (tested) while its grid is not capped, no estimate needed (a capped grid's
    error is measured, `capped_grid_error`)."""
    if act.name not in activation_names():
        return False
    builtin = get_activation(act.name)
    return act.fn is builtin.fn and act.params == builtin.params


# the series' own error is measured on a block of this many training points against themselves (their
# pairs with themselves, rho = 1, included), the grid's on this many entries (nodes^2 evaluations each)
SERIES_CHECK_POINTS = 16
GRID_CHECK_ENTRIES = 64


def _quadrature_error(act, su, nodes: int) -> float:
    """The lazy kernels' relative change (Phi0, G0; against the largest value) when the rule the
    setup used is refined: the grid's nodes doubled (halved at the largest grid), on up to
    GRID_CHECK_ENTRIES training-block entries; where the setup summed Mehler's series
    (`geometry.series_setup`), its coefficients' nodes halved
    instead, on up to SERIES_CHECK_POINTS training points against themselves (the grid's doubling
    for the entries the series leaves to it). Warns above KERNEL_QUADRATURE_TOL."""
    P = su["P"]
    n = grid_nodes(float(jnp.max(su["diag"])), nodes)
    other = min(2 * n, MAX_GRID_NODES) if n < MAX_GRID_NODES else n // 2
    diag, kx = np.asarray(su["diag"], np.float64), np.asarray(su["kx_all_tr"], np.float64)
    rng = np.random.default_rng(0)
    series = series_setup(su, act)
    if series:
        pts = np.sort(rng.choice(P, size=min(SERIES_CHECK_POINTS, P), replace=False))
        d = diag[pts]
        k12 = kx[pts][:, pts]
        fine, coarse = (mehler_kernels(act, d, d, k12, nodes=m) for m in (HERMITE_NODES, (HERMITE_NODES + 1) // 2))
        a, b, done = list(fine[:2]), list(coarse[:2]), fine[2]
        if not done.all():          # (near duplicates, wide points: the grid, refined its own way)
            rest = np.nonzero(~done)
            k11, k22 = d[rest[0]], d[rest[1]]
            for res, m in ((a, n), (b, other)):
                for x, v in zip(res, act.lazy_kernels(k11, k12[rest], k22, nodes=m)):
                    x[rest] = np.asarray(v)
        rule = f"Mehler's series moves by {{err:.2g}} (relative) between its coefficients on {HERMITE_NODES} and {(HERMITE_NODES + 1) // 2} nodes"
    else:
        idx = rng.integers(0, P, size=(2, min(GRID_CHECK_ENTRIES, P * P)))
        k11, k22, k12 = su["diag"][idx[0]], su["diag"][idx[1]], su["kx_all_tr"][idx[0], idx[1]]
        a = act.lazy_kernels(k11, k12, k22, nodes=n)
        b = act.lazy_kernels(k11, k12, k22, nodes=other)
        rule = (f"the {act.quadrature} estimate moves by {{err:.2g}} (relative) between {n} and {other} nodes per "
                "dimension")
    err = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / max(float(np.max(np.abs(np.asarray(y)))), 1e-300))
              for x, y in zip(a, b))
    if err > KERNEL_QUADRATURE_TOL:
        where = (f"phi' is probably not smooth somewhere besides the declared kinks {list(act.kinks)}"
                 if act.kinks else "phi' is probably not smooth (a kink): declare it, "
                 "dmft.activations.custom(fn, kinks=[...]), and the rule is exact across it")
        warn(f"lazy kernels of activation {act.name!r} (no closed form): {rule.format(err=err)}; "
             f"{where}. The control variate and method='lazy' carry this error into every answer: "
             + ("" if series else "raise kernel_nodes, or ") + "solve with control_variate=False")
    return err


def _quadrature_label(act, max_variance: float, nodes: int, series: bool) -> str:
    """info["lazy_kernels"]: how the lazy kernels were computed (`series`: the setup's took Mehler's
    series, `dmft.geometry.series_setup`)."""
    if act.quadrature == "closed form":        # (no grid: nor its warning about wide inputs)
        return act.quadrature
    n = grid_nodes(max_variance, nodes)
    if act.quadrature == "piecewise":
        return (f"piecewise Gauss-Legendre, {piece_nodes(n)} nodes per piece, kinks at "
                f"{', '.join(f'{k:g}' for k in act.kinks)}")
    if not series:
        return f"trapezoid {n}x{n}"
    return (f"Mehler series where |rho| <= {HERMITE_RHO_MAX:g}, a one-dimensional rule where rho = +-1 "
            f"(standard deviations <= {HERMITE_SD_MAX:g}), trapezoid {n}x{n} elsewhere")


def _setup(plan: SolvePlan) -> tuple[dict, bool]:
    """`geometry` and the lazy kernels for this solve, and whether they were reused.

    They depend on the data, the activation, the readout and the dtype only, so solves that
    share those (over keys, gamma0, schedules) reuse the last SETUP_CACHE_SIZE of them, up to
    SETUP_CACHE_BYTES in all (larger setups are not kept): for activations without a closed
    form the quadrature of the kernels costs as much as a short solve. f(0) (which may
    depend on gamma0) is recomputed every time.
    """
    model, data, act = plan.model, plan.data, plan.model.activation
    key = (_fingerprint(data), act.name, act.fn, act.dfn, act.lazy_fn, act.mean_fn, act.degree, act.kinks,
           tuple(float(p) for p in act.params), plan.kernel_nodes, model.centered,
           model.trained_readout, str(_dtype()))
    su = _SETUP_CACHE.get(key)
    reused = su is not None
    if reused:
        _SETUP_CACHE.move_to_end(key)
    else:
        su = lazy_setup_compiled(geometry(data), act, 1.0, centered=model.centered,
                        trained=model.trained_readout, nodes=plan.kernel_nodes)
        bad = [k for k in ("phi0", "g0", "k0") if not np.all(np.isfinite(np.asarray(su[k])))]
        widest = float(jnp.max(su["diag"])) if su["diag"].size else 0.0
        if bad:               # (a callable finite on [-3, 3] that is not on the fields' whole line)
            raise InputError(f"activation {act.name!r}: its lazy kernels {bad} are not finite on this data: "
                             "E[phi(u) phi(u')] or E[phi'(u) phi'(u')] does not exist for the Gaussian "
                             "fields u (phi or phi' undefined or too fast-growing somewhere on the real line), "
                             f"or it overflows float64 (the widest field's variance |x|^2 / D is {widest:.3g}: "
                             "rescale the inputs)")
        if act.quadrature in ("trapezoid", "piecewise") and grid_capped(widest):
            # the grid is coarser than GRID_STEP: its error at the widest field, measured (plan_solve
            # refused it above KERNEL_ERROR_MAX where the kernels are used; doubling nodes is not
            # possible: both counts are raised to the cap, and the rule was compared with itself)
            su = {**su, "lazy_kernels_error": capped_grid_error(act, widest)}
        elif not act.has_closed_form and not _smooth_builtin(act):
            su = {**su, "lazy_kernels_error": _quadrature_error(act, su, plan.kernel_nodes)}
        if _nbytes(su) <= SETUP_CACHE_BYTES:
            _SETUP_CACHE[key] = su
        while (len(_SETUP_CACHE) > SETUP_CACHE_SIZE
               or sum(_nbytes(v) for v in _SETUP_CACHE.values()) > SETUP_CACHE_BYTES):
            _SETUP_CACHE.popitem(last=False)
    f0 = initial_output(act, su["diag"], model.gamma0, su["y"].shape[1], centered=model.centered,
                        trained=model.trained_readout)
    return {**su, "f0": f0}, reused


def setup_kernels(plan: SolvePlan):
    """(Phi0, G0) (P + P*, P) of `plan`'s data and activation from the setup the solves of that
    data share (`_setup`'s cache, its checks and warnings included): `BatchProgram` takes them
    where its program would otherwise integrate them on their grid in every call."""
    su = _setup(plan)[0]
    return su["phi0"], su["g0"]


def initial_ntk(plan: SolvePlan) -> np.ndarray:
    """(P, P) the lazy NTK K0 on the training points of `plan`'s data, from the setup the solves of
    that data share (`_setup`'s cache: a solve after it computes its kernels no more)."""
    return np.asarray(_setup(plan)[0]["k0"][:plan.data.P], np.float64)


def _check_rk4(plan: SolvePlan, su) -> None:
    """Gradient flow is integrated by RK4 at step eta0 (not the lazy method: exact there): refuse a
    step past RK4's stability on the fastest initial rate, lambda_max(K0) / P + weight_decay,
    before the dynamics run (it would return finite numbers that are no flow at all)."""
    sch = plan.schedule
    if sch.dynamics != "flow" or plan.method == "lazy":
        return
    P = su["P"]
    rate = float(jnp.max(jnp.linalg.eigvalsh(su["k0"][:P]))) / P + sch.weight_decay
    if sch.eta0 * rate >= RK4_LIMIT:
        raise InputError(f"eta0: gradient flow is integrated by RK4 at step eta0, stable while eta0 x rate "
                         f"< {RK4_LIMIT:.4g}; the fastest initial rate lambda_max(K0) / P + weight_decay "
                         f"is {rate:.4g}, so eta0 = {sch.eta0:g} gives {sch.eta0 * rate:.3g}: use "
                         f"eta0 < {RK4_LIMIT / rate:.3g}")


@exact_products
def run_plan(plan: SolvePlan, *, key=None, progress: bool = False, batch_key=None) -> Solution:
    """Run a validated `SolvePlan` (what `dmft.solve` does after its checks).

    Where the control variate is the solver's choice (`plan.cv_auto`) and its run diverges, or
    ends unresolved (the replicas' spread of the train predictions above the targets' RMS at the
    last save, `_cv_noise`), or its correction's noise dominates a run that diverges, the solve is
    run again without it (the same nodes): its answer is returned with a warning and the reason
    in info["control_variate_off"]; if that run diverges too, the first error stands (an
    unresolved first run is returned, info["control_variate_unresolved"] saying so, as it is
    where the second run's final train loss has no smaller standard error: a catapult stopped
    mid-rise, which the correction keeps stable).
    The lazy step's stability at t = 0 is no guide here: where saturating nodes on wide inputs
    carry K0, they saturate within the first step and the kernel drops (erf at input scale 1e3,
    eta0 lambda_max(K0) / P ~ 10: networks of width 16384 descend to 0.2, as the rerun does)."""
    _runner.drop_compiled_if_crowded(_runner.CALL_SHARE)
    key = jax.random.key(0) if key is None else key
    batch_key = default_batch_key(key) if batch_key is None else batch_key
    t_start = time.perf_counter()
    su, reused = _setup(plan)
    setup_s = time.perf_counter() - t_start
    _check_rk4(plan, su)
    run = functools.partial(_run_once, su=su, reused=reused, setup_s=setup_s, t_start=t_start, key=key,
                            progress=progress, batch_key=batch_key)
    kept = None
    try:
        kept = run(plan)
    except _NoisyControlVariate as noisy:
        why, first = str(noisy), None
    except DivergenceError as err:
        if not (plan.sampled and plan.cv_auto and plan.control_variate):
            raise
        why, first = None, err
    if kept is not None:
        why, first = kept.info.pop(_UNRESOLVED, None), None
        if why is None:
            return kept
    off = dataclasses.replace(plan, control_variate=False, cv_mode="off", cv_auto=False)
    try:
        sol = run(off)
    except DivergenceError:
        if kept is not None:             # it diverges without the control variate: the first run stands
            return _keep_unresolved(plan, kept, why, "which diverged")
        if first is not None:            # it diverges without the control variate too: a divergence
            raise first from None
        raise
    if kept is not None:                 # unresolved both ways: the run whose train loss is the better known
        e_with, e_without = (float(np.asarray(r.error["train_loss"])[-1]) for r in (kept, sol))
        if not e_without < e_with:
            return _keep_unresolved(plan, kept, why, f"whose final train loss's standard error, {e_without:.3g}, is "
                                                     f"no smaller than the {e_with:.3g} with it")
    if why is None:
        why = (f"The run with the lazy-kernel control variate diverged at t = {float(first.step * plan.schedule.eta0):g}"
               " (step " + f"{first.step}), and the same nodes without it did not: the correction's noise, "
               "(K0 - K0_nodes) S / P fed back through the error, diverged (the kernel moved far from its lazy "
               "value K0: wide inputs with a saturating activation, for one).")
    warn(f"{plan.method}: {why} Solved again with control_variate=False (info['control_variate_off'] says why).")
    sol.info["control_variate_off"] = why
    return sol


def _keep_unresolved(plan: SolvePlan, kept: Solution, why: str, how: str) -> Solution:
    """The run with the solver's control variate, unresolved, returned where the run without it
    diverged or is no better known (`how`): there the correction keeps the run stable (a catapult
    stopped mid-rise, say), and the error bars say how unresolved it is."""
    why = (f"{why} Solved again with control_variate=False, {how}: the run with it is returned (the correction "
           "keeps the run stable here; read its error bars).")
    warn(f"{plan.method}: {why}")
    kept.info["control_variate_unresolved"] = why
    return kept


def _run_once(plan: SolvePlan, *, su, reused, setup_s, t_start, key, progress, batch_key) -> Solution:
    """`run_plan`'s solve with one plan, its setup done."""
    model, data = plan.model, plan.data
    try:
        if plan.method == "lazy":
            rec, extra, predictor = _solve_lazy(plan, su, batch_key, progress)
        elif plan.method == "closure":
            rec, extra, predictor = _solve_closure(plan, su, progress, batch_key)
        else:
            rec, extra, predictor = _solve_sampled(plan, su, key, progress, batch_key)
    except DivergenceError as err:
        if err.partial is None:
            raise
        # the records before it, named and shaped as a Solution's; an output of them that
        # overflowed (a loss squares f), or a train loss that ran away while still finite (the
        # rule the networks and batches apply), is the first bad step, raised as `_assemble` does
        # (with the control variate's note, `_solve_sampled`'s, where it has one)
        note = {"control_variate_noisy": err.cv_note} if getattr(err, "cv_note", None) else {}
        with np.errstate(all="ignore"):
            partial = _assemble(plan, err.partial, {}, su, arrays_only=True)
            y_ms = np.mean(np.asarray(data.targets("train")) ** 2)
            if (first_nonfinite(partial)[0] >= 0
                    or first_runaway(partial["train_loss"], y_ms, model.gamma0) >= 0):
                _assemble(plan, err.partial, note, su)
        err.partial = partial
        raise
    if _batch(plan):
        extra["batch_key"] = np.asarray(jax.random.key_data(batch_key)).tolist()
    extra.update(basis=su["basis"], rank=int(su["r"]),
                 lazy_kernels=_quadrature_label(model.activation, float(jnp.max(su["diag"])), plan.kernel_nodes,
                                                series_setup(su, model.activation)),
                 **({"lazy_kernels_error": su["lazy_kernels_error"]} if "lazy_kernels_error" in su else {}),
                 dtype=str(_dtype()), backend=jax.default_backend(),
                 # float32 everywhere (x64 off) leaves nothing for "mixed" to change
                 precision=plan.precision if _dtype() == jnp.float64 else "full (float32)",
                 setup_s=setup_s, setup_reused=reused,
                 wall_s=time.perf_counter() - t_start)
    if plan.sampled:
        extra.update(sampler=plan.sampler, samples=plan.samples, control_variate=plan.control_variate)
    config = plan.describe()
    config["solve"]["key"] = np.asarray(jax.random.key_data(key)).tolist()   # same key, same result
    sol = _assemble(plan, rec, {**extra, "config": config}, su)
    sol.attach_predictor(_padded(data, predictor))
    if plan.method == "iterate" and not extra["converged"]:
        raise NotConverged(
            f"iterate: residual {extra['final_residual']:.3e} > tol={plan.tol:.1e} after "
            f"max_iter={plan.max_iter} iterations in some window (iterations per window: "
            f"{extra['iterations']}); residual histories in .residuals, last iterate in "
            ".solution. Try damping < 1, a shorter window, more max_iter, or method='forward'.",
            residuals=extra["residuals"], solution=sol)
    return sol


_SCHEDULE_KEYWORDS = ("eta0", "steps", "save_every", "weight_decay", "dynamics", "save_at", "batch_size")


def sgd_mean(model: TwoLayer, data: Dataset, schedule: Schedule | None = None, sequences: int = 8, *, key=None,
             **options) -> Solution:
    """The DMFT of minibatch SGD averaged over batch sequences: the mean curve of networks that
    each draw their own batches (`networks.train` without batch_key).

    Sequence i is the DMFT conditioned on batches drawn from fold_in(batch_root, i), with
    batch_root = `default_batch_key(key)`, and (sampled methods) its own nodes from
    fold_in(key, i); the records are averaged over sequences and `Solution.error` holds their
    standard error across sequences (t with sequences - 1 dof, `info["error_dof"]`), which then
    holds the nodes' sampling error too. `info["per_sequence_test_loss"]` keeps each sequence's
    curve. The standard error is right (observed variance over keys 0.8-1.3 of it), but its t
    interval assumes the mean over sequences near normal: where a loss's law over sequences is
    strongly skewed (small batches: skewness 2.5 at B = 2 of P = 24) the 95% interval covers
    less (measured 0.81-0.83 with 4 or 8 sequences, 0.88 with 16; 0.90-0.94 at B = 4; 0.95-0.97
    at B = 20): there use many sequences, or read the spread of per_sequence_test_loss.

    Where the sequences' solves differ in what they record of the control variate
    (`info["control_variate"]`, `"control_variate_off"`, `"control_variate_noisy"`,
    `"control_variate_unresolved"`: one sequence
    solved again without it, say), that entry is a list per sequence. A divergence names its
    sequence. `predict` averages the sequences' predictions (its error: their spread across
    sequences, as `error`).

    Args:
        schedule: a `dmft.Schedule` with batch_size < P (or its keywords, eta0=, steps=,
            batch_size=, ..., as `dmft.solve` takes them).
        sequences: number of batch sequences (>= 2).
        options: those of `dmft.solve` (method, samples, ...).
    """
    if not isinstance(model, TwoLayer):
        raise InputError(f"model must be a dmft.TwoLayer, got {type(model).__name__}")
    if not isinstance(data, Dataset):
        raise InputError(f"data must be a dmft.Dataset, got {type(data).__name__}")
    if "batch_key" in options:
        raise InputError("batch_key: sgd_mean draws its own batch sequences (from key); for one "
                         "given sequence use dmft.solve(batch_key=...)")
    schedule = schedule_from(schedule, **{k: options.pop(k) for k in _SCHEDULE_KEYWORDS if k in options})
    if schedule.batch_size is None or schedule.batch_size >= data.P:
        raise InputError("schedule: sgd_mean needs a dmft.Schedule with batch_size < P")
    sequences = checks.integer("sequences", sequences, minimum=2)
    key = checks.prng_key("key", key)
    # every sequence's solution is kept until the mean (and each record stacked over them for it):
    # counted with one solve's peak before any compute (2^40 sequences ran for minutes, unrefused)
    plan = plan_solve(model, data, schedule, **{k: v for k, v in options.items() if k != "progress"})
    one, kept = memory_estimate(plan), 2.0 * sequences * solution_bytes(plan)
    if one + kept > plan.max_memory_gb * 2 ** 30:
        raise MemoryLimitError(
            f"sgd_mean: {sequences} sequences keep about {kept / 2 ** 30:.3g} GiB "
            f"of solutions beside a solve's {one / 2 ** 30:.3g} GiB (> max_memory_gb="
            f"{plan.max_memory_gb}); use fewer sequences" + (", kernels=False" if plan.kernels else "")
            + (", fewer samples" if plan.sampled else "") + ", save less often, or raise max_memory_gb")
    key = jax.random.key(0) if key is None else key
    root = default_batch_key(key)
    # each sequence its own nodes (fold_in(key, i)): the spread across sequences then holds the
    # nodes' sampling error too (with one node draw for all, that error was common to every
    # sequence and the standard error did not see it)
    sols = []
    for i in range(sequences):
        with failing_at(f"sgd_mean, sequence {i} of {sequences} (batch_key fold_in(default_batch_key(key), {i}))"):
            sols.append(solve(model, data, schedule=schedule, key=jax.random.fold_in(key, i),
                              batch_key=jax.random.fold_in(root, i), **options))
    n = len(sols)

    def mean(name):
        vals = [getattr(s, name) for s in sols]
        return None if vals[0] is None else np.mean(vals, axis=0)

    def se(vals):
        return np.std(vals, axis=0, ddof=1) / np.sqrt(n)

    first = sols[0]
    # each sequence's own records, as a solve's replicas (their spread is `error`)
    reps = {"train_loss": [s.train_loss for s in sols], "test_loss": [s.test_loss for s in sols],
            "alignment": [s.alignment for s in sols], "measures": [s.measures for s in sols],
            **{f"weight_change.{k}": [s.weight_change[k] for s in sols] for k in first.weight_change}}
    replicas = {k: np.stack(v, axis=1) for k, v in reps.items() if v[0] is not None}
    error = {"train_loss": se([s.train_loss for s in sols]), "f_train": se([s.f_train for s in sols]),
             **{f"weight_change.{k}": se([s.weight_change[k] for s in sols]) for k in first.weight_change}}
    for name in ("test_loss", "f_test", "alignment", "ntk", "feature_kernel", "gradient_kernel", "measures"):
        if getattr(first, name) is not None:
            error[name] = se([getattr(s, name) for s in sols])
    info = {**first.info, "sequences": n, "error_dof": n - 1,
            "per_sequence_test_loss": [s.test_loss.tolist() for s in sols if s.test_loss is not None]}
    info.pop("batch_key", None)
    # what the mean's own error and call are, not the first sequence's (its error_estimate was one
    # solve's replica spread, 3.6x below the spread across sequences; its key fold_in(key, 0))
    info["error_estimate"] = {k: float(np.max(v)) for k, v in error.items() if k.endswith("loss")}
    info["config"] = {**first.info.get("config", {})}
    info["config"]["solve"] = {**info["config"].get("solve", {}),
                               "key": np.asarray(jax.random.key_data(key)).tolist(), "sgd_mean_sequences": n}
    shares = [s.info["effective_node_share"] for s in sols if "effective_node_share" in s.info]
    if shares:                                   # the least sequence's, and flagged if any one was
        info["effective_node_share"] = np.min(shares, axis=0).tolist()
        drifts = [s.info["node_share_drift"] for s in sols if "node_share_drift" in s.info]
        if drifts:
            info["node_share_drift"] = np.min(drifts, axis=0).tolist()
        info.pop("heavy_tailed", None)
        if any(s.info.get("heavy_tailed") for s in sols):
            info["heavy_tailed"] = True
    # what each sequence's solve did with its control variate, where they differ (the first's alone
    # said "on" where four of six had been solved again without it)
    for name in ("control_variate", "control_variate_off", "control_variate_noisy", "control_variate_unresolved"):
        per = [s.info.get(name) for s in sols]
        info.pop(name, None)
        if any(v != per[0] for v in per):
            info[name] = per
        elif per[0] is not None:
            info[name] = per[0]
    predictors = [s._predictor for s in sols]

    def predictor(x_new):                   # the sequences' mean, its error their spread across them
        fs = np.stack([np.asarray(p(x_new)[0]) for p in predictors])
        return fs.mean(axis=0), fs.std(axis=0, ddof=1) / np.sqrt(n)

    return Solution(t=first.t, f_train=mean("f_train"), f_test=mean("f_test"),
                    train_loss=mean("train_loss"), test_loss=mean("test_loss"), ntk=mean("ntk"),
                    feature_kernel=mean("feature_kernel"), gradient_kernel=mean("gradient_kernel"),
                    alignment=mean("alignment"),
                    weight_change={k: np.mean([s.weight_change[k] for s in sols], axis=0)
                                   for k in first.weight_change},
                    error=error, info=info, measures=mean("measures"), replicas=replicas).attach_predictor(
                        None if any(p is None for p in predictors) else predictor)
