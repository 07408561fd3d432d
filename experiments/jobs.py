"""The solve, simulate and validate jobs: a configuration in, a results directory out.

A results directory holds run.json (the command, configuration, environment and
status), config.toml, theory/ and networks/ (.npz + .json each), figures/ and
report.md + report.json (`experiments.output`, `experiments.report`).

Minibatch SGD: train.batch_size = B (1 <= B < P; 0, the default, or P: full-batch gradient
descent) trains on B distinct points per step; train.batch_seed names the one batch sequence
that every DMFT solve and every network ensemble of the run is given (`problem.batch_key`),
so the DMFT is the one conditioned on the batches the networks saw.

A rerun that changes only the [check] section (the verdicts' tolerances) of a complete run
computes nothing: the job reads the saved results back (each file verified against the
SHA-256 that run.json recorded), judges them under the new tolerances and rewrites
report.md, report.json and run.json ("rechecked"); the results and figures stay as they are
(no figure shows a tolerance).

A rerun of the same command, configuration, inputs and code into the directory of a run that
did not complete (interrupted, killed, failed) resumes it: the results that run saved, each
verified against the SHA-256 recorded once it was written, are read back rather than computed
(`output.resumed`, `lazy_to_rich(reuse=)`), and only the rest is computed.

Example:
    >>> from experiments.jobs import load_config
    >>> cfg = load_config(None, overrides=["sweep.gamma0=[0.5, 1.0]", "train.steps=100"])
    >>> cfg["sweep"]["gamma0"], cfg["train"]["steps"], cfg["model"]["activation"]
    ([0.5, 1.0], 100, 'relu')
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys

import jax
import numpy as np

import dmft
import networks
from dmft.errors import ConfigError, DivergenceError, InputError, NotConverged
from dmft.plan import memory_estimate as solve_memory_estimate
from dmft.plan import no_lazy_limit, solution_bytes
from dmft.solve import initial_ntk
from validation import lazy_to_rich
from validation.sweep import NODE_FRACTIONS, plan_node_check
from validation.verdicts import TOLERANCES, rounded, z_bound
from validation.verdicts import checks as verdicts

from . import config as _config
from . import problem as _problem
from . import report as _report
from .config import Field
from .output import (RECHECK, failures_recorded, prepare_output, raise_plot_errors, read_manifest, recheck_note,
                     recheck_recorded, release, read_back, resumed, resuming_line, is_resumed, verify_files,
                     write_manifest)

__all__ = ["SCHEMA", "FULL", "JOBS", "load_config", "preflight", "run_job", "simulate"]

JOBS = ("solve", "simulate", "validate")

SCHEMA: dict[str, dict[str, Field]] = {
    **copy.deepcopy(_problem.SECTIONS),
    "train": {**copy.deepcopy(_problem.SECTIONS["train"]), **copy.deepcopy(_problem.SGD_FIELDS)},
    "theory": {**copy.deepcopy(_problem.SECTIONS["theory"]),
               # as many replicas as simulate.seeds' default 8, 1024 nodes each (validate's z and prediction
               # checks take the fewer of the two's dof, validation.compare.min_dof: with 4 replicas a plain
               # validate judged |z| against about 487 and q against about 2e5, at 8 and 8 against 28 and 415-571)
               "samples": dataclasses.replace(_problem.SECTIONS["theory"]["samples"], default=8192),
               "replicas": dataclasses.replace(_problem.SECTIONS["theory"]["replicas"], default=8),
               "node_check": Field("bool", False, "also solve the DMFT with each replica's nodes split in 2 and in 4 "
                                   "(half and a quarter of the nodes a replica, the same nodes: 3x its cost in all): "
                                   "a node bias check and the losses extrapolated to infinitely many nodes (solve and "
                                   "validate; a sampled method)")},
    "sweep": {
        "gamma0": Field("floats", [0.05, 0.5, 1.0, 2.0], "richness values", 0.0, True),
    },
    "check": {
        "spread_slope": Field("float", TOLERANCES["spread_slope"],
                              "expected slope of per-seed error against width"),
        "spread_slope_tol": Field("float", TOLERANCES["spread_slope_tol"],
                                  "allowed deviation from that slope (> 0: a fitted slope is never exact)", 0.0,
                                  True),
        "agreement_sigma": Field("float", TOLERANCES["agreement_sigma"],
                                 "the test loss's z at the largest width, every saved time t > 0: the normal "
                                 "tail beyond this many sigma, shared among the times, at z's degrees of "
                                 "freedom (validation.verdicts.z_bound); the same tail bounds the prediction "
                                 "check's q (validation.verdicts.q_bound)", 0.0, True),
        "agreement_rel": Field("float", TOLERANCES["agreement_rel"],
                               "max relative test-loss error at the largest width, the worst saved time "
                               "t > 0", 0.0, True),
        "lazy_rel": Field("float", TOLERANCES["lazy_rel"],
                          "max relative final test-loss gap to the lazy limit at the smallest gamma0 "
                          "(train loss without test targets; relative to 1% of the initial loss when "
                          "the final one is below it)", 0.0, True),
        "lazy_move": Field("float", TOLERANCES["lazy_move"],
                           "the lazy check is judged where the lazy limit's first-layer weights move by at "
                           "most this (relative, at the smallest gamma0); beyond it SKIP: that gamma0 is "
                           "not near the lazy limit (a large value: always judged)", 0.0, True),
        "node_bias_rel": Field("float", TOLERANCES["node_bias_rel"],
                               "theory.node_check: a node-count bias up to this many of the DMFT's own "
                               "standard errors is immaterial; the node bias check FAILs where the shift "
                               "passes it by more than agreement_sigma's bound on its own error", 0.0),
    },
}

# The paper-grade preset behind --full.
FULL = {
    "train": {"steps": 2000, "save_every": 40},
    # as many replicas as seeds (validate's z and prediction checks take the fewer of the two's dof,
    # validation.compare.min_dof), 8192 nodes each; the solve is estimated at about 3.6 GiB on a CPU (two
    # replicas at a time) and 7 GiB on an accelerator (eight at a time)
    "theory": {"samples": 131072, "replicas": 16, "max_memory_gb": 8.0},
    "sweep": {"gamma0": [0.03, 0.1, 0.3, 0.5, 1.0, 2.0, 4.0]},
    # (16 networks of width 8192 need about 7 GiB at once: the preset's own limit admits them)
    "simulate": {"widths": [64, 128, 256, 512, 1024, 2048, 4096, 8192], "seeds": 16, "max_memory_gb": 8.0},
}


def _check(cfg: dict) -> None:
    _problem.check_sections(cfg)
    _problem.check_batches(cfg)                 # (a task.path's P: in preflight, once the file is read)
    sim = cfg["simulate"]
    if sim["antithetic"]:
        if cfg["model"]["readout"] != "trained":
            raise ConfigError("simulate.antithetic needs model.readout = 'trained'")
        odd = [w for w in sim["widths"] if w % 2]
        if odd:
            raise ConfigError(f"simulate.widths: must be even with antithetic, got {odd}")
    if len(set(sim["widths"])) != len(sim["widths"]):
        raise ConfigError("simulate.widths: widths must be distinct")
    _config.distinct_labels("sweep.gamma0", cfg["sweep"]["gamma0"])
    if not cfg["theory"]["node_check"] and cfg["check"]["node_bias_rel"] != TOLERANCES["node_bias_rel"]:
        raise ConfigError("check.node_bias_rel: read only by the node bias check, which theory.node_check = false "
                          "leaves out; it would change nothing (set theory.node_check = true, or remove it)")


def load_config(path=None, overrides=(), full: bool = False) -> dict:
    """Defaults, then the --full preset, then the TOML file, then overrides; validated."""
    return _config.load(SCHEMA, path, overrides, preset=FULL if full else None, check=_check)


def preflight(cfg: dict, job: str) -> _problem.Problem:
    """Build the problem and check every solve and ensemble would start, before any compute.

    Raises InputError (a ValueError, from dmft / networks) naming the argument.
    """
    if job in ("solve", "validate"):            # (simulate solves nothing: [theory] is not read)
        _problem.check_task_size(cfg)           # (before the data are generated)
    prob = _problem.build(cfg)
    if job in ("solve", "validate") and cfg["task"]["name"] == "npz":
        _problem.check_data_size(cfg, prob.data)
    _problem.check_batches(cfg, prob.data.P)
    if job in ("validate", "simulate"):
        _check_test_set(cfg, prob.data, job)
    sim = cfg["simulate"]
    if job in ("solve", "validate") and (why := no_lazy_limit(prob.model, prob.data)):
        raise ConfigError(f"model.centered: the {job} job compares with the lazy limit, but {why}")
    # the plans check everything but the batch key (a key, not a setting; given to each run)
    solve_plan = {k: v for k, v in prob.solve_options.items() if k != "batch_key"}
    train_plan = {k: v for k, v in prob.train_options.items() if k != "batch_key"}
    lazy_schedule = prob.schedule.replace(weight_decay=0.0)
    sampled = False
    plans, lazy_plans = [], []
    for g in cfg["sweep"]["gamma0"]:
        m = prob.model.replace(gamma0=g)
        try:
            if job in ("solve", "validate"):
                plan = dmft.plan_solve(m, prob.data, prob.schedule, **solve_plan)
                plans.append(plan)
                sampled |= plan.sampled and plan.sampler != "quadrature"
                if cfg["theory"]["node_check"]:
                    _plan_node_check(cfg, plan, m, prob, solve_plan)
                # and the lazy baseline (without weight decay, as `validation.lazy_to_rich` solves it)
                lazy_plans.append(dmft.plan_solve(m, prob.data, lazy_schedule, method="lazy"))
            if job in ("simulate", "validate"):
                networks.plan_train(m, prob.data, prob.schedule, sim["widths"], sim["seeds"], **train_plan)
        except ConfigError:
            raise
        except dmft.InputError as err:           # named by the configuration's keys
            raise _problem.config_error(err, _problem.PLAN_KEYS, f"sweep at gamma0 = {g:g}") from err
    if job in ("simulate", "validate"):
        _check_sweep_memory(cfg, prob)
    if plans:
        _check_theory_memory(cfg, prob, plans, lazy_plans[0])
        _check_lazy_step(cfg, prob, lazy_plans[0], lazy_schedule)
    if job == "validate" and sampled and (note := replicas_note(cfg)):
        print(note, file=sys.stderr)
    if sampled and cfg["theory"]["node_check"] and cfg["theory"]["replicas"] == 1:
        print(NODE_CHECK_ONE_REPLICA, file=sys.stderr)
    return prob


# (the node check's solves cost about 2x the DMFT's again, for a verdict that can then only SKIP)
NODE_CHECK_ONE_REPLICA = (
    "note: theory.node_check with theory.replicas = 1: the node bias has no error to be judged against (its "
    "errors come from the replicas' spread), so its verdict will SKIP; its solves (about twice the DMFT's cost "
    "again) still give the extrapolated losses. theory.replicas >= 2 lets it judge")


def _check_sweep_memory(cfg: dict, prob) -> None:
    """The networks of every gamma0 stay in memory until the report (`simulate`, `lazy_to_rich`
    return them all), while `networks.plan_train` counts one gamma0's widths: ConfigError where
    the runs of the gamma0 values before the last, with the last one's largest need, pass
    simulate.max_memory_gb (20 gamma0 values, widths 64-1024, 8 seeds, 601 saves: 5.5 GiB
    counted this way, where each gamma0 alone planned 1.2 GiB)."""
    from networks.train import kept_bytes, memory_estimate
    sim, gammas = cfg["simulate"], cfg["sweep"]["gamma0"]
    limit = prob.train_options["max_memory_gb"]
    T = prob.schedule.save_steps.size
    widths, seeds = [int(w) for w in sim["widths"]], int(sim["seeds"])
    one = [kept_bytes(prob.data, w, seeds, T, False, False) for w in widths]
    before = (len(gammas) - 1) * sum(one)
    need = before + max(sum(one[:i]) + memory_estimate(prob.data, w, seeds, T, False)
                        for i, w in enumerate(widths))
    if need > limit * 2 ** 30:
        raise ConfigError(f"sweep.gamma0: the networks of all {len(gammas)} gamma0 values stay in memory until the "
                          f"report: about {need / 2 ** 30:.3g} GiB (> simulate.max_memory_gb = {limit:g}), "
                          f"{before / 2 ** 30:.3g} GiB of it the runs of the gamma0 values before the last; use fewer "
                          "sweep.gamma0 values, widths or simulate.seeds, a larger train.save_every, or raise "
                          "simulate.max_memory_gb")


def _check_theory_memory(cfg: dict, prob, plans: list, lazy_plan) -> None:
    """The solve and validate jobs keep every gamma0's DMFT solution and lazy limit (and
    theory.node_check's two solves, without kernels) until the report, while each solve's plan
    counts itself alone: ConfigError where, during the last DMFT solve, the lazy limits of every
    gamma0, the DMFT solutions before it and that solve's own peak (the largest plan's estimate)
    pass theory.max_memory_gb (40 gamma0 values at the demo's sizes keep 7.8 GiB, where each solve
    alone is estimated at 1.6)."""
    n = len(plans)
    # (what a Solution keeps, `dmft.plan.solution_bytes`: records, errors, and a sampled solve's
    # nodes for `predict`, which a count of the records alone left out)
    lazy = solution_bytes(lazy_plan)
    full = solution_bytes(plans[0])
    if cfg["theory"].get("node_check"):
        full += sum(solution_bytes(dataclasses.replace(plans[0], kernels=False, node_split=k)) for k in NODE_FRACTIONS)
    kept = n * lazy + (n - 1) * full
    need = kept + max(solve_memory_estimate(p) for p in plans)
    limit = prob.solve_options["max_memory_gb"]
    if need > limit * 2 ** 30:
        raise ConfigError(f"sweep.gamma0: the DMFT solutions and lazy limits of all {n} gamma0 values stay in memory "
                          f"until the report: about {need / 2 ** 30:.3g} GiB (> theory.max_memory_gb = {limit:g}), "
                          f"{kept / 2 ** 30:.3g} GiB of it the solutions kept while the last one runs; use fewer "
                          "sweep.gamma0 values, a larger train.save_every, or raise theory.max_memory_gb")


def _check_lazy_step(cfg: dict, prob, lazy_plan, lazy_schedule) -> None:
    """The lazy baseline's step, the last check before the job claims its directory (its only
    compute: K0 on the training points, from the setup cache the solves then read, `initial_ntk`).

    Full-batch gradient descent on the lazy limit is Delta_k = (I - eta0 K0 / P)^k Delta_0
    (`dmft.lazy`): past eta0 lambda_max(K0) / P > 2 its fastest mode grows, and the lazy solve of
    every gamma0 (gamma0 does not enter it) raises once its train loss rises. Only there, where
    the step is past that limit, is the lazy solve itself run (at the smallest gamma0, whose
    runaway bound is the loosest: a failure there is a failure at every gamma0), and a
    DivergenceError becomes a ConfigError naming train.eta0 and its limit: the job would stop
    at its first solve. A step past the limit whose growth does not show within train.steps
    (a short run, a target without that mode) runs as before: no refusal of a run that completes.

    Gradient flow is exact in the lazy limit (no step to be unstable). Under minibatch SGD no
    kernel at t = 0 decides: the lazy error's mean over batch sequences obeys the full-batch
    recursion, but one sequence (the run's) can shrink past its limit (B = 16 of P = 32 at 1.02x
    it: the train loss fell to 1e-10 in 2000 steps on each of 4 sequences) and grow below it
    (B = 4 at 0.98x: it overflowed), so nothing is refused (`dmft.solve` records its stability
    as None, not known) and the lazy solve, the sweep's first, reports its first bad step."""
    B, P = lazy_schedule.batch_size, prob.data.P
    if lazy_schedule.dynamics != "gd" or (B is not None and B < P):
        return
    model = lazy_plan.model
    rate = float(np.max(np.linalg.eigvalsh(initial_ntk(lazy_plan)))) / P
    eta0 = lazy_schedule.eta0
    if not eta0 * rate > 2:
        return
    g = min(float(v) for v in cfg["sweep"]["gamma0"])
    try:
        dmft.solve(model.replace(gamma0=g), prob.data, schedule=lazy_schedule, method="lazy", kernels=False,
                   kernel_nodes=lazy_plan.kernel_nodes)
    except DivergenceError as err:
        limit = 2.0 / rate
        below = rounded(limit * (1 - 1e-12), 3, "down")                 # 3 digits, strictly below
        at = "" if err.step is None else f" (by saved step {err.step}, t = {err.step * eta0:g})"
        raise ConfigError(
            f"train.eta0 = {eta0:g}: the lazy limit, every sweep.gamma0's baseline (full-batch gradient descent "
            f"on the initial NTK K0 of the {P} training points, docs/conventions.md), is past its step's "
            f"stability: eta0 lambda_max(K0) / P = {eta0:g} x {rate:.6g} = {eta0 * rate:.4g} > 2, and its train "
            f"loss grows{at}; it diverges at every gamma0 (gamma0 does not enter it), so the job would stop at its "
            f"first solve. Use train.eta0 < 2 P / lambda_max(K0) = {limit:.6g} (e.g. {below:.3g}), or check the "
            "data scale") from None


def _plan_node_check(cfg: dict, plan, model, prob, solve_plan: dict) -> None:
    """theory.node_check's solves (its nodes split in 2 and 4), beside the full solve's
    `plan` at `model`'s gamma0 (`validation.sweep.plan_node_check`): ConfigError naming the keys
    where they cannot run."""
    try:
        plan_node_check(plan, model, prob.data, prob.schedule, solve_plan)
    except dmft.InputError as err:
        raise ConfigError(f"theory.node_check: {str(err).removeprefix('node_check: ')} (theory.method = "
                          f"{cfg['theory']['method']!r}, theory.sampler = {cfg['theory']['sampler']!r}, "
                          f"theory.samples = {cfg['theory']['samples']}, theory.replicas = "
                          f"{cfg['theory']['replicas']})") from err


def replicas_note(cfg: dict) -> str | None:
    """A sampled DMFT with fewer replicas than the ensembles have seeds (but more than one): the
    agreement z and prediction checks then take its replicas' dof (`validation.compare.min_dof`),
    and their bounds are loose; say so, with the bound and the setting that sharpens it."""
    th, seeds = cfg["theory"], cfg["simulate"]["seeds"]
    if not 1 < th["replicas"] < seeds:
        return None
    sigma = cfg["check"]["agreement_sigma"]
    saves = max(_problem.build_schedule(cfg["train"]).save_steps.size - 1, 1)     # the saved times t > 0
    bound, sharp = (z_bound(sigma, d, saves) for d in (th["replicas"] - 1, seeds - 1))
    return (f"note: theory.replicas = {th['replicas']} is below simulate.seeds = {seeds}: the agreement z and "
            f"prediction checks take the fewer degrees of freedom, the replicas' {th['replicas'] - 1} (they bound "
            f"the law whatever the seeds' and the DMFT's shares), so |z| is judged against about {bound:.3g} at "
            f"{sigma:g} sigma instead of {sharp:.3g}; theory.replicas = {seeds} with theory.samples = "
            f"{th['samples'] * seeds // th['replicas']} (as many nodes a replica) sharpens them")


def _check_test_set(cfg: dict, data, job: str) -> None:
    """validate and simulate report test losses: refuse data without test inputs and targets."""
    if data.P_test > 0 and data.y_test is not None:
        return
    why = "the validation compares test losses" if job == "validate" else "the ensembles report test losses"
    if cfg["task"]["name"] == "npz":
        missing = "x_test and y_test" if data.P_test == 0 else "y_test (it has x_test only)"
        raise ConfigError(f"task.path: {cfg['task']['path']} has no {missing}; {why}: save the file with "
                          "test inputs x_test and targets y_test (dmft.Dataset(x, y, x_test, y_test).save(path))")
    raise ConfigError(f"task.P_test: {why}; give test points")


def run_job(job: str, cfg: dict, out: str, *, force: bool = False, progress: bool = False,
            log=print, started=None) -> dict:
    """Run `job` ("solve", "simulate" or "validate") into `out`; `started()`, when given, is
    called once the run has claimed `out`, before it computes (not when already complete or
    re-checked).

    A complete run in `out` that differs only in its [check] section is re-checked, not
    computed: its saved results are read back (each file verified against run.json's digests;
    a missing or changed one is refused as for a damaged complete run, OutputConflict), judged
    under `cfg["check"]`, and report.md, report.json and run.json are rewritten; the results
    and figures stay as they are.

    Returns:
        {"status": "complete" | "already complete" | "rechecked", "checks": [...], "files": {...}}
        (files: paths under `out`)
    """
    if job not in JOBS:
        raise InputError(f"job must be one of {JOBS}, got {job!r}")
    prob = preflight(cfg, job)
    claimed = prepare_output(out, job, cfg, force, log=log, recheck=True, resume=True)
    if not claimed:
        log(f"{out}: this run is already complete (same command and configuration); "
            "pass --force to recompute")
        old = read_manifest(out)
        return {"status": "already complete", "checks": old.get("checks", []),
                "files": _files_map(old.get("files", {}), lambda rel: os.path.join(out, *rel.split("/")))}
    if claimed == RECHECK:
        return _recheck(job, cfg, out, prob, log)
    if started is not None:
        started()
    with failures_recorded(out, job, cfg):
        return _run(job, cfg, out, prob, progress, _Reuse(job, cfg, out, log))


def _files_map(files, fn) -> dict:
    """`fn` applied to each path of a files record ({"report": [...], "figures": {...}, ...})."""
    if not isinstance(files, dict):
        return {}
    return {k: ({n: fn(p) for n, p in v.items()} if isinstance(v, dict) else [fn(p) for p in v])
            for k, v in files.items() if isinstance(v, (dict, list))}


class _Reuse:
    """The results a resumed run takes from the previous run of the same command, configuration,
    inputs and code that did not complete (`output.resumed`: each file as it was recorded when
    written): called as lazy_to_rich's reuse (kind, gamma0, width), it reads one back (.npz and
    .json both verified) or returns None (computed). Says how many of the job's results it reuses."""

    def __init__(self, job: str, cfg: dict, out: str, log):
        self.out, self.log, self.taken = out, log, {}
        if not resumed(out):
            return
        gamma0s = [float(g) for g in cfg["sweep"]["gamma0"]]
        widths = [int(w) for w in cfg["simulate"]["widths"]] if job != "solve" else []
        node_check = job != "simulate" and cfg["theory"]["node_check"]
        total = have = 0
        for g in gamma0s:          # (the simulate job trains a gamma0's widths together: all kept, or none)
            wanted = _report.saved_files([g], widths, theory=job != "simulate", node_check=node_check)
            kept = [is_resumed(out, f.removesuffix(".npz")) for f in wanted if f.endswith(".npz")]
            total += len(kept)
            have += sum(kept) if job != "simulate" or all(kept) else 0
        log(resuming_line(out, have, total))

    def __call__(self, kind, g, w):
        rel = os.path.relpath(_report.result_stem(self.out, kind, g, w), self.out).replace(os.sep, "/")
        result = read_back(self.out, rel, (networks.Run if kind == "networks" else dmft.Solution).load, self.log)
        if result is not None:
            self.taken[(kind, float(g), w)] = result
        return result

    def reused(self, kind, g, w, result) -> bool:
        """`result` is the one read back for (kind, gamma0, width): its files are there already."""
        return self.taken.get((kind, float(g), w)) is result


def _run(job, cfg, out, prob, progress, reuse=None) -> dict:
    reuse = reuse if reuse is not None else _Reuse(job, cfg, out, lambda *_: None)

    def save(kind, g, w, result) -> str:
        """write_result, but for a reused result (its files are there, verified)."""
        if reuse.reused(kind, g, w, result):
            return _report.result_stem(out, kind, g, w)
        return _report.write_result(out, kind, g, w, result)
    sim = cfg["simulate"]
    key = prob.network_key
    solve_kw = dict(prob.solve_options, key=prob.theory_key)
    if job == "simulate":
        stems = []           # each gamma0's ensembles saved as they are done: a later failure loses none
        runs = simulate(prob.model, prob.data, cfg["sweep"]["gamma0"], sim["widths"], sim["seeds"],
                        prob.schedule, prob.train_options, key, progress,
                        on_result=lambda g, w, run: stems.append(save("networks", g, w, run)), reuse=reuse)
        figures, plot_errors = _report.write_ensemble_figure(runs, out)
        checks = []
        md, js = _report.write_simulation_report(runs, prob.model, prob.data, cfg, out, figures)
        sweep = None
    else:
        stems, done, failed = [], [], []    # each result saved as it is done: a failure loses none

        def keep(*r):
            stems.append(save(*r))
            done.append(r[:3])
        try:
            sweep = lazy_to_rich(prob.model, prob.data, cfg["sweep"]["gamma0"],
                                 sim["widths"] if job == "validate" else [], sim["seeds"],
                                 schedule=prob.schedule, solve_kw=solve_kw,
                                 train_kw=dict(prob.train_options), key=key, progress=progress,
                                 simulate=job == "validate", node_check=cfg["theory"]["node_check"],
                                 on_result=keep, on_failure=lambda g, err: failed.append(
                                     _report.write_failure(out, cfg, g, err)), reuse=reuse)
        except (DivergenceError, NotConverged) as err:       # (the lazy limits', or every gamma0's)
            if err.args and isinstance(err.args[0], str):
                err.args = (err.args[0].rstrip() + " " + _kept_results(done, failed, job),) + err.args[1:]
            raise
        figures, plot_errors = _report.write_figures(sweep, out)
        checks = verdicts(sweep, cfg["check"])
        md, js = _report.write_report(sweep, cfg, out, checks, figures, failed=failed)
        if failed:       # the others' report is written: the run failed at these points (exit 4)
            first = sweep.failed[failed[0]["gamma0"]]
            kind = DivergenceError if isinstance(first, DivergenceError) else NotConverged
            where = dict(step=first.step, cause=first.cause) if kind is DivergenceError else {}
            raise kind(
                f"{len(failed)} of {len(cfg['sweep']['gamma0'])} sweep.gamma0 values failed, and the sweep went on "
                f"past {'it' if len(failed) == 1 else 'them'}: "
                + " ".join(f["error"].rstrip(". ") + "." for f in failed)
                + f" The other gamma0 values finished: their results and report are in {out} (report.md flags "
                "the failed points; its checks and figures take the others only). Whether the rich regime "
                "diverges is not known before its solve: lower train.eta0, or leave those gamma0 values out",
                **where)
    files = {"report": [md, js], "figures": figures, "results": [s + ".npz" for s in stems]}
    # run.json records them relative to the results directory: valid from any working directory
    recorded = _files_map(files, lambda p: os.path.relpath(p, out).replace(os.sep, "/"))
    raise_plot_errors(out, job, cfg, plot_errors, checks=checks, files=recorded)
    write_manifest(out, job, cfg, "complete", {"checks": checks, "files": recorded})
    return {"status": "complete", "checks": checks, "files": files, "sweep": sweep}


def _kept_results(done: list, failed: list, job: str) -> str:
    """What a solve or validate run that stopped in its sweep kept (`done`: the (kind, gamma0,
    width) of each result saved, in order; `failed`: `report.write_failure`'s records), for the
    failure's message: a failing lazy limit (the baseline of every check) stops the sweep, as
    does a DMFT failing at every gamma0."""
    kinds: dict = {}
    for kind, g, w in done:
        kinds.setdefault(kind, []).append(f"{g:g}" if w is None else f"{g:g} (N={w})")
    names = {"lazy": "lazy limit", "dmft": "DMFT", "networks": "networks"}
    parts = [f"{names.get(k, k)} at gamma0 = {', '.join(v)}" for k, v in kinds.items()]
    if failed and failed[0]["partial"]:    # (the error raised is the first's: its saves there too)
        parts.append(f"the saves before the failure at gamma0 = {failed[0]['gamma0']:g} in {failed[0]['partial']}")
    bad = (" The DMFT failed at every gamma0, the others as: " + " ".join(f["error"].rstrip(". ") + "."
                                                                          for f in failed[1:])
           if len(failed) > 1 else "")
    if not parts:
        return "Nothing of the sweep had finished; no report was written." + bad
    return ("Kept from the sweep before it, each .npz with its .json under theory/"
            + (" and networks/" if job == "validate" else "") + ": " + "; ".join(parts)
            + "; no report was written." + bad)


def _recheck(job, cfg, out, prob, log) -> dict:
    """Judge the complete run in `out` (which differs from `cfg` only in its [check] section)
    under `cfg["check"]` from its saved results, and rewrite its reports and run.json; nothing
    is computed again. The results are read back verified (`output.verify_files`) before
    anything is written; the figures show no tolerance, so they stay."""
    old = read_manifest(out)
    sim = cfg["simulate"]
    gamma0s = [float(g) for g in cfg["sweep"]["gamma0"]]
    widths = [int(w) for w in sim["widths"]] if job != "solve" else []
    node_check = job != "simulate" and cfg["theory"]["node_check"]
    read = _report.saved_files(gamma0s, widths, theory=job != "simulate", node_check=node_check) + ["report.json"]
    try:                                    # (nothing is written before the results are read)
        verify_files(out, read, old.get("digests"))
        if job == "simulate":
            runs = _report.read_runs(out, gamma0s, widths)
        else:
            sweep = _report.read_results(out, prob.model, prob.data, prob.schedule, gamma0s, widths,
                                         sim["seeds"], _report.read_report(out).get("timings"), node_check)
    except BaseException:
        release(out)
        raise
    recorded = old.get("files") if isinstance(old.get("files"), dict) else {}
    figures = {name: os.path.join(out, *rel.split("/")) for name, rel in (recorded.get("figures") or {}).items()}
    note = recheck_note(old, cfg)
    with recheck_recorded(out, job, cfg, say=log):
        if job == "simulate":
            checks, sweep = [], None
            md, js = _report.write_simulation_report(runs, prob.model, prob.data, cfg, out, figures, rechecked=note)
        else:
            checks = verdicts(sweep, cfg["check"])
            md, js = _report.write_report(sweep, cfg, out, checks, figures, rechecked=note)
        files = {"report": [md, js], "figures": figures,
                 "results": [os.path.join(out, *rel.split("/")) for rel in read if rel.endswith(".npz")]}
        recorded = _files_map(files, lambda p: os.path.relpath(p, out).replace(os.sep, "/"))
        write_manifest(out, job, cfg, "complete", {"checks": checks, "files": recorded, "rechecked": note})
    log(f"{out}: re-checked the saved results under the new [check] section "
        f"({', '.join(note['differing']) or 'no key changed'}) without recomputing: report.md, report.json "
        "and run.json rewritten; results and figures kept as they were")
    return {"status": "rechecked", "checks": checks, "files": files, "sweep": sweep}


def simulate(model, data, gamma0s, widths, seeds, schedule, train_kw, key, progress=False,
             on_result=None, reuse=None) -> dict:
    """Network ensembles only: gamma0 -> {width -> networks.Run}; point i uses fold_in(key, i).
    on_result(gamma0, width, run) is called for each ensemble of a gamma0 once they are done.
    reuse: None, or reuse("networks", gamma0, width) -> a kept networks.Run or None (as
    `validation.lazy_to_rich`'s): a gamma0 whose every width it returns is not trained again."""
    runs = {}
    for i, g in enumerate(gamma0s):
        kept = {int(w): reuse("networks", float(g), int(w)) for w in widths} if reuse is not None else {}
        if kept and all(run is not None for run in kept.values()):
            runs[float(g)] = kept
        else:
            runs[float(g)] = networks.train(model.replace(gamma0=g), data, width=list(widths), seeds=seeds,
                                            schedule=schedule, key=jax.random.fold_in(key, i),
                                            progress=progress, **train_kw)
        for w, run in runs[float(g)].items():
            if on_result is not None:
                on_result(float(g), w, run)
    return runs
