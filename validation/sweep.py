"""The lazy-to-rich sweep: DMFT, its lazy limit and network ensembles at each gamma0.

Theory and networks run the same `dmft.Schedule`, so their records share one time base.

Example (tiny sizes):
    >>> import jax; jax.config.update("jax_enable_x64", True)
    >>> import dmft, validation
    >>> data = dmft.tasks.single_index(D=4, P=12, P_test=20, degree=2, key=0)
    >>> sw = validation.lazy_to_rich(dmft.TwoLayer("relu"), data, gamma0s=[0.1, 1.0],
    ...                              widths=[16, 64], seeds=2,
    ...                              schedule=dmft.Schedule(eta0=0.5, steps=20, save_every=10),
    ...                              solve_kw=dict(samples=256))
    >>> sorted(sw.runs[1.0]), sw.scaling[1.0]["per_seed_error"].shape
    ([16, 64], (2,))
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import numpy as np

import dmft
import networks
from dmft import checks
from dmft.errors import DivergenceError, InputError, NotConverged, failing_at
from dmft.plan import no_lazy_limit
from dmft.runner import progress_bar

from .compare import width_scaling
from .inputs import shown

__all__ = ["LazyToRich", "lazy_to_rich", "NODE_FRACTIONS", "NODE_CHECK_KINDS", "node_check_key",
           "plan_node_check", "recorded_seconds"]

# the node-count check's solves, at 1 / k of the nodes a replica (the sweep's: each replica's nodes split
# in k, as scans' are; the grok job's: as many replicas from independent keys, `node_check_key`): three
# sizes, since two cannot tell a 1 / M bias from a departure from that law (validation.fitting.node_extrapolation)
NODE_FRACTIONS = (2, 4)
NODE_CHECK_FOLD = 0x6E6F6465
# their on_result kinds (and the validate and solve jobs' result names)
NODE_CHECK_KINDS = {2: "dmft_half_nodes", 4: "dmft_quarter_nodes"}


def node_check_key(key, k: int):
    """The nodes' key of an independent solve at 1 / k of the nodes: fold_in(fold_in(key,
    NODE_CHECK_FOLD), k), independent of the full solve's `key` and of each other (the grok job's
    theory.node_check; the sweep and scans split the solve's own nodes)."""
    return jax.random.fold_in(jax.random.fold_in(key, NODE_CHECK_FOLD), k)


_PROTOCOL = ("eta0", "steps", "save_every", "weight_decay", "dynamics", "save_at")


@dataclasses.dataclass
class LazyToRich:
    """Results of a sweep over gamma0 (dict keys are the gamma0 values).

    Attributes:
        model, data, schedule: the problem (model.gamma0 is replaced at each point).
        gamma0s, widths, seeds: the grid.
        solutions: gamma0 -> dmft.Solution; lazy: gamma0 -> the lazy closed form.
        runs: gamma0 -> {width -> networks.Run}.
        scaling: gamma0 -> `width_scaling` result (errors, fits, comparisons).
        timings: seconds spent per part.
        fewer: gamma0 -> {k -> dmft.Solution at 1 / k of the nodes a replica} for k in
            NODE_FRACTIONS (node_check=True; else empty): the node-count check
            (`validation.compare.node_bias`).
        failed: gamma0 -> the DivergenceError or NotConverged of its DMFT (or node check) solve,
            where `lazy_to_rich(on_failure=)` went on past it (else empty); such a gamma0 is in
            none of the other fields, gamma0s included.
    """

    model: dmft.TwoLayer
    data: dmft.Dataset
    gamma0s: list
    widths: list
    seeds: int
    solutions: dict
    lazy: dict
    runs: dict
    scaling: dict
    timings: dict
    schedule: dmft.Schedule | None = None
    fewer: dict = dataclasses.field(default_factory=dict)
    failed: dict = dataclasses.field(default_factory=dict)


def _schedule(schedule, solve_kw, train_kw):
    """One Schedule from `schedule` or the protocol keywords of solve_kw / train_kw."""
    proto = {}
    for name, kw in (("solve_kw", solve_kw), ("train_kw", train_kw)):
        for k in _PROTOCOL:
            if k in kw:
                v = kw.pop(k)
                if k in proto and proto[k] != v:
                    raise InputError(f"{name}: {k}={v!r} differs from the other's {proto[k]!r}; theory "
                                     "and networks share one schedule (pass schedule=)")
                proto[k] = v
    if schedule is not None and proto:
        raise InputError(f"{', '.join(sorted(proto))}: given with schedule=; pass one or the other")
    return schedule if schedule is not None else dmft.schedule.schedule_from(
        None, **proto, defaults=dict(eta0=0.1, steps=1000))


# what the sweep passes to networks.train itself, and the options train_kw may hold
_SWEEP_SETS = ("model", "data", "width", "seeds", "schedule", "key")


def _check_train_kw(train_kw: dict) -> None:
    """train_kw's keys against networks.train's keyword options, before any compute: a misspelt
    one was refused by networks.train after every solve (11.7 s of theory in the audit's sweep),
    and width, seeds or key raised Python's 'multiple values' TypeError there."""
    import inspect

    params = inspect.signature(networks.train).parameters
    options = {k for k, p in params.items() if p.kind is not p.VAR_KEYWORD} - set(_SWEEP_SETS)
    mine = sorted(k for k in train_kw if k in _SWEEP_SETS)
    if mine:
        raise InputError(f"train_kw: {', '.join(mine)} set by lazy_to_rich itself (widths=, seeds=, key=, "
                         "schedule= are its own arguments)")
    unknown = sorted(k for k in train_kw if k not in options)
    if unknown:
        raise InputError(f"train_kw: unknown option(s) {', '.join(unknown)} of networks.train; expected some of "
                         f"{', '.join(sorted(options))}")


def _one_batch_sequence(solve_kw: dict, train_kw: dict) -> None:
    """Minibatch SGD: the DMFT is conditioned on one batch sequence, which the networks it is
    compared with must see, as must its lazy limit. One key for all three (in place): the one
    given (in either, or the same in both), else the solve's default (`default_batch_key` of its
    key); two different keys are refused (networks on their own batches approach
    `dmft.sgd_mean`, not one solve)."""
    given = [(name, kw["batch_key"]) for name, kw in (("solve_kw", solve_kw), ("train_kw", train_kw))
             if kw.get("batch_key") is not None]
    keys = [(name, checks.prng_key(f"{name}['batch_key']", k)) for name, k in given]
    data_of = [jax.random.key_data(k).tolist() if jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key)
               else np.asarray(k).tolist() for _, k in keys]
    if len(keys) == 2 and data_of[0] != data_of[1]:
        raise InputError("solve_kw['batch_key'] and train_kw['batch_key'] differ: the DMFT of minibatch SGD "
                         "is conditioned on one batch sequence, the one the networks compared with it must see "
                         "(give one key; networks on their own batches approach dmft.sgd_mean)")
    if keys:
        bkey = keys[0][1]
    else:
        root = checks.prng_key("solve_kw['key']", solve_kw.get("key"))
        bkey = dmft.schedule.default_batch_key(jax.random.key(0) if root is None else root)
    solve_kw["batch_key"] = train_kw["batch_key"] = bkey


# the options of networks.train that networks.plan_train checks
_PLANNED = ("optimizer", "antithetic", "kernels", "max_memory_gb", "neuron_measures", "keep_params")


def lazy_to_rich(model, data, gamma0s, widths, seeds, *, schedule=None, solve_kw=None,
                 train_kw=None, key=None, progress: bool = False,
                 simulate: bool = True, on_result=None, node_check: bool = False, on_failure=None,
                 reuse=None, **unknown) -> LazyToRich:
    """Solve the DMFT and train network ensembles at each gamma0, on one schedule.

    Args:
        model: `dmft.TwoLayer` (its gamma0 is replaced by each sweep value).
        data: `dmft.Dataset`.
        gamma0s: richness values; widths: network widths; seeds: networks per width.
        schedule: the `dmft.Schedule` of theory and networks (or eta0, steps, save_every
            inside solve_kw / train_kw, as before).
        solve_kw: other keyword options of `dmft.solve` (method, samples, key, ...).
        train_kw: other keyword options of `networks.train` (antithetic, ...). Under minibatch
            SGD the solves, their lazy limits and the networks train on one batch sequence: the
            batch_key given in either (two different ones are refused), else the solve's default.
        key: `jax.random.key` of the networks; point i uses fold_in(key, i).
        progress: one progress bar over all solves and ensembles.
        simulate: False for theory only (no networks).
        on_result: called as each result is done, on_result(kind, gamma0, width, result) with
            kind "dmft" or "lazy" (width None; a `dmft.Solution`) or "networks" (a
            `networks.Run`), so a caller can keep them before a later point fails; with
            node_check also the kinds of NODE_CHECK_KINDS (a `dmft.Solution`).
        node_check: also solve the DMFT at each gamma0 with each replica's nodes split in 2 and
            in 4 (`dmft.solve(node_split=)`: half and a quarter of the nodes a replica, the same
            nodes, key and batches), into `fewer`: its node-count bias, which the replicas' spread
            does not see, paired with the solve so that their shared noise cancels
            (`validation.node_bias`, the verdicts' node bias check). A sampled method only
            (forward or iterate, not a quadrature rule); 3x the DMFT's cost in all (each split
            solve integrates as many nodes; without kernels). One of those solves that diverges
            raises, as the DMFT's own would.
        on_failure: None (default): the sweep stops at the first DMFT (or node check) solve that
            diverges or does not converge, raising its error. A callable: it is called as
            on_failure(gamma0, error) (the error names the gamma0, its first bad step and quantity
            in .step, .cause and its message; .partial holds the saves before it) and the sweep
            goes on: that gamma0 is left out of the result (its networks are not trained: there is
            no theory to compare them with) and its error kept in `failed` (a node check's split solve's
            with .kind, NODE_CHECK_KINDS[k]); if every gamma0 fails,
            the first error is raised. The lazy limits (the baseline of every check) always raise.
        reuse: None (default), or a callable reuse(kind, gamma0, width) (the arguments of
            on_result) returning a result kept from before (a resumed job's, read back verified)
            or None: a result it returns is taken as computed (neither solved nor trained again,
            still passed to on_result; `timings` count the wall time it recorded, info["wall_s"]),
            None computes it. The caller vouches that it is the result this sweep would compute
            (same problem, options and keys).

    Raises:
        InputError (a ValueError), before any compute: a bad argument, named (and every check of
        each solve and ensemble: `dmft.plan_solve`, `networks.plan_train`).
    """
    if unknown:
        raise InputError(f"lazy_to_rich: unknown keyword argument(s) {', '.join(sorted(unknown))}; expected "
                         "schedule, solve_kw, train_kw, key, progress, simulate, on_result, node_check, on_failure, "
                         "reuse "
                         "(options of dmft.solve go in solve_kw, of networks.train in train_kw)")
    _check_arguments(model, data, gamma0s, widths, seeds, schedule, solve_kw, train_kw, key, progress,
                     simulate)
    checks.flag("node_check", node_check)
    for name, fn in (("on_result", on_result), ("on_failure", on_failure), ("reuse", reuse)):
        if fn is not None and not callable(fn):
            raise InputError(f"{name} must be a callable or None, got {type(fn).__name__}")
    done = on_result if on_result is not None else (lambda *_: None)
    got = reuse if reuse is not None else (lambda *_: None)
    solve_kw = dict(solve_kw or {})
    train_kw = dict(train_kw or {})
    if isinstance(model, dmft.TwoLayer) and isinstance(data, dmft.Dataset) and \
            (why := no_lazy_limit(model, data)):       # before any compute: the sweep's baseline
        raise InputError(f"lazy_to_rich compares with the lazy limit: {why}")
    sch = _schedule(schedule, solve_kw, train_kw)
    _check_train_kw(train_kw)
    if sch.batch_size is not None and sch.batch_size < data.P:
        _one_batch_sequence(solve_kw, train_kw)
    gamma0s = [float(g) for g in gamma0s]
    widths = [int(w) for w in widths] if simulate else []
    for name, values in (("gamma0s", gamma0s), ("widths", widths)):
        if len(set(values)) < len(values):       # results are dicts keyed by value: one would be lost
            raise InputError(f"{name}: values must be distinct, got {values}")
    key = jax.random.key(1) if key is None else key
    # (under SGD the lazy limit runs on the theory's batch sequence: dmft.solve's default otherwise)
    lazy_kw = {k: v for k, v in solve_kw.items() if k in ("kernels", "kernel_nodes", "batch_key")}
    # every solve and ensemble of the sweep is checked before any runs (one refused late, the
    # lazy baseline of minibatch SGD say, wasted every solve before it)
    lazy_sch = sch if sch.weight_decay == 0 else sch.replace(weight_decay=0.0)
    planned = {k: v for k, v in solve_kw.items() if k not in ("key", "batch_key", "progress")}
    for g in gamma0s:
        m = model.replace(gamma0=g)
        plan = dmft.plan_solve(m, data, sch, **planned)
        if node_check:
            plan_node_check(plan, m, data, sch, planned)
        dmft.plan_solve(m, data, lazy_sch, method="lazy", **{k: v for k, v in lazy_kw.items() if k != "batch_key"})
        if widths:
            networks.plan_train(m, data, sch, widths, seeds, **{k: v for k, v in train_kw.items() if k in _PLANNED})
    bar = progress_bar(len(gamma0s) * (1 + len(widths)), "lazy-to-rich", unit="job") if progress else None
    sols, lazy, runs, scaling, fewer, failed = {}, {}, {}, {}, {}, {}
    timings = {"theory_s": 0.0, "networks_s": 0.0}
    # the lazy limits first: seconds each, and one whose step is past its stability (eta0
    # lambda_max / P > 2) fails here, before any DMFT or network is run for nothing
    for g in gamma0s:
        # (under weight decay the kernel limit has none: the baseline is the lazy run without it,
        # and the lazy-limit check SKIPs, validation.verdicts: the gap would be the decay's)
        t0 = time.perf_counter()
        lazy[g] = got("lazy", g, None)
        if lazy[g] is None:
            with failing_at(f"lazy limit at gamma0 = {g:g}"):
                lazy[g] = dmft.solve(model.replace(gamma0=g), data, schedule=lazy_sch, method="lazy", **lazy_kw)
        else:
            t0 -= recorded_seconds(lazy[g])
        timings["theory_s"] += time.perf_counter() - t0
        done("lazy", g, None, lazy[g])
    for i, g in enumerate(gamma0s):
        m = model.replace(gamma0=g)
        t0 = time.perf_counter()
        try:
            _solve_point(m, data, sch, solve_kw, g, node_check, sols, fewer, done, got, timings)
        except (DivergenceError, NotConverged) as err:
            if on_failure is None:
                raise
            sols.pop(g, None)
            fewer.pop(g, None)
            failed[g] = err
            on_failure(g, err)
        timings["theory_s"] += time.perf_counter() - t0
        _advance(bar, f"gamma0={g:g} theory")
        if g in failed:          # (its networks: nothing to compare them with)
            for w in widths:
                _advance(bar, f"gamma0={g:g} N={w} (skipped)")
            continue
        if widths:               # (none, as the arguments allow: theory only, as simulate=False)
            runs[g] = {}
            for w in widths:
                t0 = time.perf_counter()
                runs[g][w] = got("networks", g, w)
                if runs[g][w] is None:
                    runs[g][w] = networks.train(m, data, width=w, seeds=seeds, schedule=sch,
                                                key=jax.random.fold_in(key, i), **train_kw)
                else:
                    t0 -= recorded_seconds(runs[g][w])
                timings["networks_s"] += time.perf_counter() - t0
                done("networks", g, w, runs[g][w])
                _advance(bar, f"gamma0={g:g} N={w}")
            scaling[g] = width_scaling(sols[g], runs[g])
    if bar is not None:
        bar.close()
    if failed and not sols:
        raise failed[gamma0s[0]]
    kept = [g for g in gamma0s if g not in failed]
    return LazyToRich(model, data, kept, widths, seeds, sols, {g: lazy[g] for g in kept}, runs, scaling, timings,
                      sch, fewer, failed)


def _solve_point(m, data, sch, solve_kw, g, node_check, sols, fewer, done, got, timings) -> None:
    """The DMFT at gamma0 = g (and node_check's split solves) into sols and fewer, each passed to
    `done` as it is done (or taken from `got`, lazy_to_rich's reuse, where it returns one); a
    DivergenceError or NotConverged names the gamma0 (`failing_at`)."""
    sols[g] = got("dmft", g, None)
    if sols[g] is None:
        with failing_at(f"theory at gamma0 = {g:g}"):
            sols[g] = dmft.solve(m, data, schedule=sch, **solve_kw)
    else:
        timings["theory_s"] += recorded_seconds(sols[g])
    done("dmft", g, None, sols[g])
    if node_check:
        fewer[g] = {}
        for k in NODE_FRACTIONS:
            # the solve's own nodes split in k (its key, samples and batches: paired with it); the
            # losses are all node_bias reads: no kernels, 6 (T, P, P) arrays a solve
            kw = {**solve_kw, "node_split": k, "kernels": False}
            if sols[g].info.get("control_variate_off"):     # (the same estimator as the whole)
                kw["control_variate"] = False
            fewer[g][k] = got(NODE_CHECK_KINDS[k], g, None)
            if fewer[g][k] is not None:
                timings["theory_s"] += recorded_seconds(fewer[g][k])
                done(NODE_CHECK_KINDS[k], g, None, fewer[g][k])
                continue
            try:
                with failing_at(f"theory at gamma0 = {g:g} with its nodes split in {k} (node_check: where the "
                                "full solve did not diverge, its node count matters here; raise the samples, "
                                "or leave node_check off)"):
                    fewer[g][k] = dmft.solve(m, data, schedule=sch, **kw)
            except (DivergenceError, NotConverged) as err:
                err.kind = NODE_CHECK_KINDS[k]       # (its .partial is the split solve's, not the DMFT's)
                raise
            done(NODE_CHECK_KINDS[k], g, None, fewer[g][k])


def recorded_seconds(result) -> float:
    """The wall time a result read back recorded when it was computed (its info["wall_s"]; 0
    without one): what a resumed run counts for it in its timings."""
    took = (getattr(result, "info", None) or {}).get("wall_s")
    return float(took) if isinstance(took, (int, float)) and math.isfinite(took) and took > 0 else 0.0


def plan_node_check(plan, model, data, schedule, planned: dict) -> None:
    """node_check's solves planned before any compute (`plan`: the full solve's `dmft.plan_solve`,
    `planned` its options): a sampled method whose replicas' nodes split into 4 parts of whole
    antithetic pairs (`dmft.solve(node_split=)`); else InputError saying why."""
    if not plan.sampled or plan.sampler == "quadrature":
        what = f"method {plan.method!r}" + (" with a quadrature rule" if plan.sampled else "")
        raise InputError(f"node_check: the DMFT solved by {what} has no sampled nodes whose count could bias it; "
                         "node_check needs a sampled solve (method 'forward' or 'iterate', a sampler other "
                         "than a quadrature rule)")
    for k in sorted(NODE_FRACTIONS, reverse=True):       # (the finest split first: its rule holds the other's)
        try:
            dmft.plan_solve(model, data, schedule, **{**planned, "node_split": k, "kernels": False})
        except InputError as err:
            raise InputError(f"node_check: samples = {plan.samples} in {plan.replicas} replicas cannot be split into "
                             f"{k} parts a replica ({err}); give samples a multiple of {2 * k} x replicas") from err


def _values(name, values, empty: bool = False) -> list:
    """A sequence (list, tuple, 1-d array; non-empty unless `empty`) as a list; else an
    InputError naming it."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or hasattr(values, "keys") \
            or getattr(values, "ndim", 1) != 1:
        raise InputError(f"{name} must be a list of values, got {type(values).__name__} {shown(values)}")
    values = list(values)
    if not values and not empty:
        raise InputError(f"{name} must hold at least one value, got none")
    return values


def _check_arguments(model, data, gamma0s, widths, seeds, schedule, solve_kw, train_kw, key, progress,
                     simulate) -> None:
    """Every argument of `lazy_to_rich` of the right kind (InputError naming it); the values are
    then checked by dmft.plan_solve and networks.plan_train."""
    if not isinstance(model, dmft.TwoLayer):
        raise InputError(f"model must be a dmft.TwoLayer, got {type(model).__name__}")
    if not isinstance(data, dmft.Dataset):
        raise InputError(f"data must be a dmft.Dataset, got {type(data).__name__}")
    for i, g in enumerate(_values("gamma0s", gamma0s)):
        checks.real(f"gamma0s[{i}]", g, positive=True)
    if checks.flag("simulate", simulate):
        widths = _values("widths", widths, empty=True)      # none: theory only, as simulate=False
        for i, w in enumerate(widths):
            checks.integer(f"widths[{i}]", w, minimum=1)
        if widths:
            checks.integer("seeds", seeds, minimum=1)
    if schedule is not None and not isinstance(schedule, dmft.Schedule):
        raise InputError(f"schedule must be a dmft.Schedule (or None), got {type(schedule).__name__}")
    for name, kw in (("solve_kw", solve_kw), ("train_kw", train_kw)):
        try:
            dict(kw or {})
        except (TypeError, ValueError):
            raise InputError(f"{name} must be a dict of keyword options, got {type(kw).__name__} "
                             f"{shown(kw)}") from None
    checks.prng_key("key", key)
    checks.flag("progress", progress)


def _advance(bar, text):
    if bar is not None:
        bar.set_postfix_str(text)
        bar.update(1)
