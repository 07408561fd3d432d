"""Grokking as a lazy-to-rich transition, in theory and networks: the `dmft grok` job.

Testbeds (docs/conventions.md, "Grokking" and "Early warning"; `experiments.grok.config`):
kumar, modular_addition, sparse_parity, lyu. For each gamma0 of [model] gamma0: the DMFT,
the lazy (NTK regression) baseline, and network ensembles at [simulate] widths, all on
one schedule; grokking times at a threshold (a fraction of the initial test loss, or an
accuracy); progress measures and their lead over the test-loss drop; with [theory] node_check the DMFT
again at half and a quarter of its nodes, every time extrapolated to infinitely many nodes
(`validation.fitting.node_extrapolation`). For the Kumar model
also the phase diagrams of [diagram] (amount of grokking over gamma0 x eps, gamma0 x P,
gamma0 x kappa: each grid of one shape is one compiled, vmapped program) with
finite-width points overlaid, the early-warning verdict over the runs of one diagram (the
fraction of runs in which each measure leads the drop, with its interval), and the
grokking time against the weight decay, which in this centered model slows generalization
(the documented contrast). For the lyu testbed the decay is what triggers grokking: the
grokking time against kappa, fitted by a power law and by A / kappa + B, against the
prediction A = ln(1/gamma0) / L.

    from experiments import grok
    cfg = grok.load_config(None, ["testbed.name='kumar'"])
    result = grok.run(cfg, "results/grok")
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings

import jax
import numpy as np

import dmft
import networks
from dmft.errors import ConfigError, InputError, OutputConflict, failing_at
from dmft.io import environment, jsonable, load, save
from dmft.plotting import seed_stats
from validation import grokking as gk
from validation import plots_grokking as plots
from validation.fitting import node_extrapolation
from validation.sweep import node_check_key

from ..output import (draw_figures, figures_relative, forget_results, is_resumed, json_floats, read_back,
                      record_result, refuse_store, resumed, resuming_line)
from ..store import write_text
from .config import LYU_DEGREE, Testbed, build, minibatch_of, parity_warning, schedule_of
from .report import markdown

__all__ = ["run", "phase_diagram", "decay_scan", "early_warning_grid"]

# the folder of curves.npz's parts while the run goes (`_Parts`)
PARTS = "curves"
# a curve set's per-replica (or per-seed) curves (R, T) are named with this prefix
REPLICAS = gk.REPLICAS_PREFIX
_SKIP = ("train_loss", "test_loss", "train_acc", "test_acc", "train_loss_se", "test_loss_se", "t")


def _threshold(cfg, test_loss0):
    return cfg["threshold"]["loss_fraction"] * float(test_loss0)


def _lyu_threshold(cfg, data):
    """The lyu testbed's uncentered output starts far from zero: the threshold is a fraction of
    the target's mean square, not of the initial loss."""
    return _threshold(cfg, np.mean(data.y_test ** 2))


def _accuracy_curves(f_train, f_test, data):
    # y as the Dataset holds it: (P,) for one output (sign accuracy), (P, C) for classes
    return gk.accuracy(f_train, data.y_train), gk.accuracy(f_test, data.y_test)


def _kumar_measures(cfg, tb: Testbed, state, f_train, g, eps, eta0):
    """The Kumar model's planted alignment and SGD diffusion along beta, from the closure state."""
    return {"planted_alignment": gk.planted_alignment(state, tb.beta),
            "planted_diffusion": gk.overlap_diffusion(
                f_train, tb.data.y_train, tb.data.x_train, tb.beta, state["mean"],
                state["second_moment"], gamma0=g, eps=eps, eta0=eta0,
                batch_size=cfg["early_warning"]["batch_size"])}


# ----------------------------------------------------------------- curves

# theory.node_check's solves at 1 / k of the nodes a replica: their summary rows and curves.npz
# groups; the nodes' key `validation.sweep.node_check_key(key(theory.seed), k)`, independent of the
# full solve's key(theory.seed) and of each other (as the validate job's)
NODE_CHECK_ROWS = {2: "DMFT, half the nodes", 4: "DMFT, a quarter of the nodes"}
NODE_CHECK_GROUPS = {2: "theory_half_nodes", 4: "theory_quarter_nodes"}


def _theory(cfg, tb: Testbed, g, log, progress=False, heavy=None, fraction=1):
    """The DMFT's curves and measures at gamma0 = g; a solve flagged heavy-tailed (`dmft.single_site.few_nodes`)
    is logged and its least effective node share put in `heavy[g]`. fraction k > 1: theory.node_check's
    solve at theory.samples / k nodes from an independent key."""
    th = cfg["theory"]
    key = jax.random.key(th["seed"])
    if fraction > 1:
        th = {**th, "samples": th["samples"] // fraction}
        key = node_check_key(key, fraction)
    data = tb.data
    kw = dict(schedule=tb.schedule, kernels=False, progress=progress, batch_key=tb.batch_key)
    m = tb.model.replace(gamma0=g)
    t0 = time.perf_counter()
    dec = None
    if tb.name == "kumar":
        with failing_at(f"DMFT at gamma0 = {g:g}"):
            sol = dmft.solve(m, data, method="closure", **kw)
        measures = _kumar_measures(cfg, tb, sol.state, sol.f_train, g, cfg["kumar"]["eps"], tb.schedule.eta0)
        dec = gk.kumar_decomposition(sol.state, tb.beta, g, cfg["kumar"]["eps"])
    else:
        with failing_at(f"DMFT at gamma0 = {g:g}"):
            sol = dmft.solve(m, data, method="forward", samples=th["samples"], replicas=th["replicas"],
                             key=key, neuron_measures=tb.measure,
                             max_memory_gb=th["max_memory_gb"], **kw)
        if tb.measure.__name__ == "planted_alignment":
            measures = {"planted_alignment": gk.alignment_ratio(sol.measures)}
        else:
            measures = {tb.measure.__name__: sol.measures[:, 0]}
        if sol.replicas:        # each replica's own curves (R, T): the early-warning leads' errors
            rep = sol.replicas
            per = rep["measures"]
            reps = {"train_loss": rep["train_loss"], "test_loss": rep["test_loss"], "alignment": rep["alignment"],
                    "weight_change": rep["weight_change.first_layer"],
                    **{k: (gk.alignment_ratio(per) if k == "planted_alignment" else per[..., 0]) for k in measures}}
            measures.update({f"{REPLICAS}{k}": np.swapaxes(v, 0, 1) for k, v in reps.items()})
    log(f"  DMFT gamma0={g:g}{f' (1 / {fraction} of the nodes)' if fraction > 1 else ''}: {sol.info['method']} in "
        f"{time.perf_counter() - t0:.1f} s")
    if sol.info.get("heavy_tailed"):
        share = float(np.nanmin(sol.info["effective_node_share"]))
        if heavy is not None:
            heavy[g] = share
        log(f"  DMFT gamma0={g:g}: heavy-tailed (least effective node share {share:.2g}; the solve's "
            "warning says why): its late values move with theory.samples")
    out = {"t": sol.t, "train_loss": sol.train_loss, "test_loss": sol.test_loss,
           "alignment": sol.alignment, "weight_change": sol.weight_change["first_layer"], **measures}
    if tb.accuracy:
        out["train_acc"], out["test_acc"] = _accuracy_curves(sol.f_train, sol.f_test, data)
    if sol.error:
        out["train_loss_se"], out["test_loss_se"] = sol.error["train_loss"], sol.error["test_loss"]
    if dec:
        out.update({f"decomposition.{k}": v for k, v in dec.items()})
    return out


def _lazy(cfg, tb: Testbed, g):
    if tb.schedule.weight_decay > 0:
        return None
    sol = dmft.solve(tb.model.replace(gamma0=g), tb.data, method="lazy", schedule=tb.schedule,
                     kernels=False, batch_key=tb.batch_key)
    out = {"test_loss": sol.test_loss, "train_loss": sol.train_loss}
    if tb.accuracy:
        out["train_acc"], out["test_acc"] = _accuracy_curves(sol.f_train, sol.f_test, tb.data)
    return out


def _networks(cfg, tb: Testbed, g, log, progress):
    sim = cfg["simulate"]
    data = tb.data
    runs = networks.train(tb.model.replace(gamma0=g), data, width=list(sim["widths"]),
                          seeds=sim["seeds"], schedule=tb.schedule, key=jax.random.key(sim["seed"]),
                          batch_key=tb.batch_key, neuron_measures=tb.measure, antithetic=tb.antithetic,
                          progress=progress,
                          max_memory_gb=sim.get("max_memory_gb", 6.0))
    out = {}
    for w, r in runs.items():
        name = tb.measure.__name__
        meas = gk.alignment_ratio(r.measures) if name == "planted_alignment" else r.measures[..., 0]
        d = {"train_loss": r.train_loss, "test_loss": r.test_loss, "alignment": r.alignment,
             "weight_change": r.weight_change["first_layer"], name: meas}
        if tb.accuracy:
            d["train_acc"], d["test_acc"] = _accuracy_curves(r.f_train, r.f_test, data)
        if r.info["diverged"]:
            log(f"  networks N={w}, gamma0={g:g}: seeds {sorted(r.info['diverged'])} diverged")
        out[w] = d
    log(f"  networks gamma0={g:g}: widths {list(runs)} x {sim['seeds']} seeds")
    return out


def _diverged_seeds(d: dict) -> np.ndarray:
    """Which seeds of an ensemble's curves (each (S, T, ...)) have a non-finite train or test loss at
    any save: a seed that diverged is NaN from the save where it went bad (`networks.train`)."""
    bad = np.zeros(len(d["test_loss"]), bool)
    for k in ("train_loss", "test_loss"):
        v = np.asarray(d[k], float)
        bad |= ~np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1)
    return bad


def _kept_seeds(d: dict) -> dict:
    """An ensemble's curves without the seeds that diverged (`_diverged_seeds`), as `_seed_mean`
    averages them: the figures drew a mean over the seeds finite at each save, which jumps where
    one diverges. Where every seed diverged, all of them."""
    bad = _diverged_seeds(d)
    return d if bad.all() or not bad.any() else {k: np.asarray(v)[~bad] for k, v in d.items()}


def _seed_mean(d: dict) -> dict:
    """An ensemble's curves as their means over the seeds that stayed finite at every save (a
    seed that diverged is left out of the whole curve: a mean over whichever seeds were finite
    at each save changed its population at the divergence, so its train and test crossings
    could come from different seeds, or from the jump itself), with the losses' standard errors
    of those means where at least two such seeds remain (NaN where fewer), and with two seeds or
    more such seeds their own curves as its replicas (`REPLICAS`: the leads' errors; with fewer, all
    the seeds', a diverged one among them, so those errors are unknown, NaN). Where every seed
    diverged the mean is over all of them and NaN from the first divergence on (times after it
    are not reached). `_diverged_seeds` says which were left out (report.md says so)."""
    bad = _diverged_seeds(d)
    if bad.all():
        keep = np.ones_like(bad)
        out = {k: np.mean(np.asarray(v, float), axis=0) for k, v in d.items()}
    else:
        keep = ~bad
        with warnings.catch_warnings():         # (a measure NaN at a save in every kept seed: NaN there)
            warnings.simplefilter("ignore", RuntimeWarning)
            out = {k: np.nanmean(np.asarray(v, float)[keep], axis=0) for k, v in d.items()}
    for k in ("train_loss", "test_loss"):
        _, std, n = seed_stats(np.asarray(d[k], float)[keep])   # (std NaN where fewer than two are finite)
        out[f"{k}_se"] = np.where(np.isfinite(out[k]), std / np.sqrt(np.maximum(n, 1)), np.nan)
    if int(keep.sum()) >= 2:
        out.update({f"{REPLICAS}{k}": np.asarray(v)[keep] for k, v in d.items()})
    elif len(d["test_loss"]) >= 2:      # (fewer than two left: all seeds', whose errors are then unknown, null)
        out.update({f"{REPLICAS}{k}": np.asarray(v) for k, v in d.items()})
    return out


def _replicas_of(cur, train, test):
    """The replicas (or seeds) behind a curve set's two curves, as grokking_times takes them;
    None where it has none."""
    if REPLICAS + train in cur and REPLICAS + test in cur:
        return {"train_loss": cur[REPLICAS + train], "test_loss": cur[REPLICAS + test]}
    return None


def _times(cfg, t, cur, thr, accuracy):
    # a seed mean's accuracy times, and a gap, carry errors by the jackknife over the seeds (or
    # replicas); a DMFT's accuracy times none: an accuracy of the pooled outputs is a step function
    # of them, and the jackknife over each replica's own outputs (pseudo-values R acc - (R - 1)
    # acc_(-i)) was not calibrated (stop 55: tanh, 3 classes, P = 64, 256 test points, 60-100 keys
    # against 2^16 nodes: 95% coverage 0.57-0.95, zero errors in up to 43% of keys, the reported
    # variance 0.75-12x the spread, biases of 0.6-1.2 spreads the replicas cannot see)
    if accuracy and "test_acc" in cur:
        return gk.grokking_times(t, cur["train_acc"], cur["test_acc"], cfg["threshold"]["accuracy"],
                                 accuracy=True, replicas=_replicas_of(cur, "train_acc", "test_acc"))
    # a sampled DMFT's times carry standard errors from its losses' (crossing_time_se)
    return gk.grokking_times(t, cur["train_loss"], cur["test_loss"], thr, train_se=cur.get("train_loss_se"),
                             test_se=cur.get("test_loss_se"),
                             replicas=_replicas_of(cur, "train_loss", "test_loss"))


def _measure_names(cur):
    return [k for k in cur if k not in _SKIP and not k.startswith(("decomposition.", REPLICAS))]


def _num(x):
    """A float, or None (JSON null: not reached / not defined) for NaN: never a number."""
    x = float(x)
    return x if np.isfinite(x) else None


def _lead_note(v, t_drop) -> str | None:
    """Why a measure's lead is not a number (None when it is one): no drop, no change, or
    unresolved by the saves (`validation.grokking.MIN_SAVES_BETWEEN`)."""
    if bool(v["resolved"]):
        return None
    if not np.isfinite(t_drop):
        return "no drop"
    if not np.isfinite(v["t_change"]):
        return "no change"
    n = int(v["saves_between"])
    return (f"unresolved: {n} save{'s' if n != 1 else ''} between t_change and t_drop (needs "
            f"{gk.MIN_SAVES_BETWEEN}); their order is the interpolation's, not the saves'")


def _early(t, cur) -> dict:
    """The early-warning record of one curve set: `drop_observed` (the test loss has a plateau at
    least twice its floor), its `t_drop`, and per measure t_change, the saves between it and
    t_drop, lead and leads (None, with the reason in `lead_note`: no drop, or unresolved by the
    saves; a measure that does not change has no lead and does not lead)."""
    names = _measure_names(cur)
    # with the replicas (or seeds) behind the curves, the times and leads have errors (jackknife)
    reps = ({k: cur[REPLICAS + k] for k in ["test_loss", *names]}
            if all(REPLICAS + k in cur for k in ["test_loss", *names]) else None)
    ew = gk.early_warning(t, cur["test_loss"], {k: cur[k] for k in names}, rates=gk.RATES, replicas=reps)
    out = {"drop_observed": bool(ew["observed"]), "t_drop": _num(ew["t_drop"])}
    if reps:
        out["t_drop_se"] = _num(ew["t_drop_se"])
    for k, v in ew.items():
        if k not in ("observed", "t_drop", "t_drop_se"):
            note = _lead_note(v, ew["t_drop"])
            # leads: None where not known (unresolved, no drop); False for a measure that never moved
            leads = bool(v["leads"]) if not note else (False if note == "no change" else None)
            out[k] = {"t_change": _num(v["t_change"]), "lead": _num(v["lead"]), "leads": leads,
                      "saves_between": int(v["saves_between"]), "resolved": bool(v["resolved"])}
            if reps:
                out[k].update(t_change_se=_num(v["t_change_se"]), lead_se=_num(v["lead_se"]))
            if note:
                out[k]["lead_note"] = note
    return out


def _gap_text(x) -> str:
    return "not reached" if not np.isfinite(x) else f"{float(x):.4g}"


# ----------------------------------------------------------------- diagrams

def _column_batches(cfg, tb: Testbed, axis: str, value):
    """(schedule, batch key) of a diagram column: on a P axis train.batch_size on that column's
    P points, on the minibatch axis that size on the testbed's (B = P: full batch), else the
    testbed's own."""
    if axis not in ("P", "minibatch"):
        return tb.schedule, tb.batch_key
    B, P = (cfg["train"]["batch_size"], value) if axis == "P" else (value, tb.data.P)
    size, bkey = minibatch_of(cfg, B, int(P))
    return tb.schedule.replace(batch_size=size), bkey


def _diagram_data(cfg, value):
    k = cfg["kumar"]
    return dmft.tasks.kumar_quadratic(D=k["D"], P=int(value), P_test=k["P_test"],
                                      key=jax.random.key(cfg["testbed"]["seed"]))


def _check_diagram_memory(cfg, tb: Testbed) -> None:
    """A gamma0 x P diagram's largest column, refused before any compute when diagram.batch_size of
    its points would not fit (`dmft.BatchProgram.check_memory`, as its call would refuse it): it was
    refused only when the diagram ran, after the curves and networks, and advised solve_batch's
    batch_size or a scan's chunk."""
    dg = cfg["diagram"]
    if cfg["testbed"]["name"] != "kumar" or "P" not in dg["axes"] or not dg["P"] or not dg["gamma0"]:
        return
    P = int(max(dg["P"]))
    sch, _ = _column_batches(cfg, tb, "P", P)
    prog = dmft.BatchProgram(tb.model, _diagram_data(cfg, P), schedule=sch, fields=("gamma0",), method="closure")
    try:                                # (the diagram's points, as `_check_parts` checks the other axes')
        prog.check_points({"gamma0": np.asarray(dg["gamma0"], float)})
    except InputError as err:
        raise ConfigError(f"diagram.gamma0 x diagram.P: {err}") from None
    points = min(dg["batch_size"], len(dg["gamma0"]))
    need = prog.memory_estimate(points)
    if need > prog.max_memory_gb * 2 ** 30:
        raise ConfigError(f"diagram.batch_size: at diagram.P = {P}, {points} points at once need about "
                          f"{need / 2 ** 30:.1f} GiB (> {prog.max_memory_gb:g} GiB); use a smaller "
                          "diagram.batch_size or diagram.P")


def _check_parts(cfg, tb: Testbed) -> None:
    """Every point of the phase diagrams, their overlays and the weight-decay scan gets the checks
    its solve or training would make (`dmft.BatchProgram.check_points`, `networks.plan_train`, the
    decay's schedule), before any compute, as a ConfigError naming the section: they were made when
    each part ran, after the curves (and often a diagram) had been computed, without naming the key."""
    dg, dc = cfg["diagram"], cfg["decay"]
    data, model = tb.data, tb.model
    if tb.name == "kumar":
        G = np.asarray(dg["gamma0"], float)
        for axis in dg["axes"]:
            V = np.asarray(dg[axis], float)
            where = f"diagram.gamma0 x diagram.{axis}"
            try:
                if axis == "minibatch":           # (the P axis's points: `_check_diagram_memory`)
                    sch, _ = _column_batches(cfg, tb, axis, int(V.max()))
                    dmft.BatchProgram(model, data, schedule=sch, fields=("gamma0",), method="closure",
                                      max_memory_gb=1e9).check_points({"gamma0": G})
                elif axis != "P":
                    gg, vv = np.meshgrid(G, V, indexing="ij")
                    dmft.BatchProgram(model, data, schedule=tb.schedule, fields=("gamma0", axis), method="closure",
                                      max_memory_gb=1e9).check_points({"gamma0": gg.ravel(), axis: vv.ravel()})
            except InputError as err:
                raise ConfigError(f"{where}: {err}") from None
            # every point's results stay until the diagram's call returns (`solve_batch` refuses
            # them past max_memory_gb: it did so after the curves and networks had run)
            measures = axis == cfg["early_warning"]["grid"]         # (as `run` calls `phase_diagram`)
            try:
                for v in (V.astype(int) if axis in ("P", "minibatch") else [None]):
                    d, sch, fields, n = data, tb.schedule, ("gamma0", axis), G.size * V.size
                    if v is not None:                   # (one call per column)
                        d = _diagram_data(cfg, v) if axis == "P" else data
                        sch, _ = _column_batches(cfg, tb, axis, v)
                        fields, n = ("gamma0",), G.size
                    dmft.BatchProgram(model, d, schedule=sch, fields=fields, method="closure", state=measures,
                                      curves=measures).check_results(n, dg["batch_size"])
            except InputError as err:
                raise ConfigError(f"{where}: {err}; or give fewer diagram.gamma0 or diagram.{axis} values, "
                                  "or a larger train.save_every") from None
            if dg["overlay_width"]:
                m, d, sch, _ = _overlay_setup(cfg, tb, axis, float(V[len(V) // 2]))
                try:
                    for g in sorted({float(G.min()), float(G.max())}):
                        networks.plan_train(m.replace(gamma0=g), d, sch, dg["overlay_width"], dg["overlay_seeds"])
                except InputError as err:
                    raise ConfigError(f"diagram.overlay_width, diagram.overlay_seeds ({axis} diagram): {err}") from None
    kappas = np.asarray([x for x in dc["weight_decay"] if x > 0], float)
    if tb.name in ("kumar", "lyu") and kappas.size:
        try:
            m = model.replace(gamma0=dc["gamma0"])
            sch = schedule_of(cfg, weight_decay=0.0, steps=dc["steps"] or None, P=data.P)
            th = cfg["theory"]
            opts = (dict(method="forward", samples=th["samples"], replicas=th["replicas"],
                         max_memory_gb=th["max_memory_gb"]) if tb.name == "lyu" else dict(method="closure"))
            prog = dmft.BatchProgram(m, data, schedule=sch, fields=("weight_decay",), **opts)
            prog.check_points({"weight_decay": kappas})
            prog.check_memory(kappas.size, prog.max_memory_gb)
        except InputError as err:
            raise ConfigError(f"decay: {err}") from None


def phase_diagram(cfg, tb: Testbed, axis: str, *, log=print, progress=False, measures: bool = False) -> dict:
    """Amount of grokking over gamma0 x axis (Kumar model, exact closure).

    Points of one shape run as one `dmft.solve_batch` (one compilation); the P axis
    changes the data shape and the minibatch axis the step's (each size B on the one sequence
    of train.batch_seed; B = P is full-batch descent), so each is a loop of such programs, one
    per value. With measures=True the closure's state and predictions are kept too, for the
    early-warning measures. Returns gamma0, values, gap / t_train / t_test / reached arrays (G, V).
    """
    dg = cfg["diagram"]
    data, model = tb.data, tb.model
    G = np.asarray(dg["gamma0"], float)
    V = np.asarray(dg[axis], float)
    kw = dict(schedule=tb.schedule, method="closure", batch_size=dg["batch_size"], progress=progress,
              state=measures, curves=measures, batch_key=tb.batch_key)
    keys = ("t", "train_loss", "test_loss", "alignment", "weight_change.first_layer", "diverged_step")
    keys += ("state.mean", "state.second_moment", "f_train") if measures else ()
    t0 = time.perf_counter()
    gg, vv = np.meshgrid(G, V, indexing="ij")
    datas = None
    if axis in ("P", "minibatch"):
        parts, datas = [], []
        for v in V.astype(int):
            d = data
            if axis == "P":
                d = _diagram_data(cfg, v)
                datas.append(d)
            sch, bkey = _column_batches(cfg, tb, axis, v)
            parts.append(dmft.solve_batch(model, d, {"gamma0": G}, **{**kw, "schedule": sch, "batch_key": bkey}))
        res = {key: (np.stack([p[key] for p in parts], axis=1) if key != "f_train" or axis != "P"
                     else [p[key] for p in parts])
               for key in keys}
    else:
        grid = {"gamma0": gg.ravel(), axis: vv.ravel()}
        r = dmft.solve_batch(model, data, grid, **kw)
        res = {key: r[key].reshape(gg.shape + r[key].shape[1:]) for key in keys}
    thr = _threshold(cfg, np.nanmax(res["test_loss"][..., 0]))
    times = gk.grokking_times(res["t"][0, 0], res["train_loss"], res["test_loss"], thr)
    log(f"  diagram gamma0 x {axis}: {gg.size} points in {time.perf_counter() - t0:.1f} s")
    return {"axis": axis, "gamma0": G, "values": V, "threshold": thr, "times": times,
            "diverged_step": res["diverged_step"], "seconds": time.perf_counter() - t0, "curves": res,
            "datas": datas}


def early_warning_grid(cfg, tb: Testbed, diag: dict) -> dict:
    """Each measure's lead over the test-loss drop in every run of a phase diagram, and the
    fraction of runs (with an observed drop) in which it leads, with a Wilson 95% interval.
    A run whose lead the saves do not resolve (both times within one save interval) is left
    out of that measure's fraction and counted as `unresolved`; one whose measure does not
    change counts as not leading."""
    c, axis = diag["curves"], diag["axis"]
    G, V = diag["gamma0"], diag["values"]
    t = c["t"][0, 0]
    leads = {k: [] for k in ("alignment", "weight_change", "planted_alignment", "planted_diffusion")}
    unresolved = dict.fromkeys(leads, 0)
    rows = []
    for i, g in enumerate(G):
        for j, v in enumerate(V):
            eps = v if axis == "eps" else cfg["kumar"]["eps"]
            data = diag["datas"][j] if axis == "P" else tb.data
            f_tr = c["f_train"][j][i] if axis == "P" else c["f_train"][i, j]
            state = {"mean": c["state.mean"][i, j], "second_moment": c["state.second_moment"][i, j]}
            sub = Testbed(tb.name, data, tb.model, tb.schedule, tb.measure, tb.accuracy,
                          np.asarray(data.meta["beta"]))
            cur = {"test_loss": c["test_loss"][i, j], "alignment": c["alignment"][i, j],
                   "weight_change": c["weight_change.first_layer"][i, j],
                   **_kumar_measures(cfg, sub, state, f_tr, g, eps, tb.schedule.eta0)}
            if not np.all(np.isfinite(cur["test_loss"])):
                continue
            ew = gk.early_warning(t, cur["test_loss"], {k: cur[k] for k in leads}, rates=gk.RATES)
            if not ew["observed"]:
                continue
            # (a drop is a fall of at least twofold: a run that never crossed the test threshold has
            # one too, and reached_test says so)
            rows.append({"gamma0": float(g), axis: float(v), "t_drop": _num(ew["t_drop"]),
                         "reached_test": bool(np.asarray(diag["times"].reached_test)[i, j]),
                         **{k: _num(ew[k]["lead"]) for k in leads}})
            for k in leads:
                if np.isfinite(ew[k]["t_change"]) and not bool(ew[k]["resolved"]):
                    unresolved[k] += 1
                else:
                    leads[k].append(bool(ew[k]["leads"]))
    verdict = gk.lead_verdict(leads)
    for k in verdict:
        verdict[k]["unresolved"] = unresolved[k]
    return {"axis": axis, "runs": rows, "verdict": verdict, "grid_points": int(len(G) * len(V)),
            "min_saves_between": gk.MIN_SAVES_BETWEEN}


def _cell_status(diag) -> np.ndarray:
    """(G, V) status of a phase diagram's cells: `GrokkingTimes.status`, or "diverged by step k"
    where the DMFT ran away or overflowed (`dmft.solve_batch`'s diverged_step: the first save whose
    train loss passed the run-away bound, or the step whose state was not finite)."""
    bad = np.asarray(diag["diverged_step"])
    status = np.asarray(diag["times"].status(), dtype=object)
    return np.where(bad >= 0, np.array([f"diverged by step {int(b)}" for b in bad.ravel()],
                                       dtype=object).reshape(bad.shape), status)


def _overlay_setup(cfg, tb: Testbed, axis: str, v: float):
    """(model, data, schedule, batch key) of an overlay's networks at the diagram's value v of `axis`."""
    m, d = tb.model, tb.data
    sch, bkey = _column_batches(cfg, tb, axis, v)
    if axis == "eps":
        m = m.replace(activation=dmft.activations.quadratic(v))
    elif axis == "P":
        d = _diagram_data(cfg, v)
    elif axis == "weight_decay":
        sch = sch.replace(weight_decay=v)
    return m, d, sch, bkey


def _overlay(cfg, tb: Testbed, diag, log) -> list[dict]:
    """Finite-width networks at two grid points (the corners of the gamma0 axis, middle value)."""
    dg = cfg["diagram"]
    data, model = tb.data, tb.model
    if dg["overlay_width"] == 0:
        return []
    axis, V = diag["axis"], diag["values"]
    j = len(V) // 2
    pts = []
    status = _cell_status(diag)
    v = float(V[j])
    m, d, sch, bkey = _overlay_setup(cfg, tb, axis, v)
    for i in sorted({0, len(diag["gamma0"]) - 1}):
        g = float(diag["gamma0"][i])
        r = networks.train(m.replace(gamma0=g), d, width=dg["overlay_width"], seeds=dg["overlay_seeds"], schedule=sch,
                           key=jax.random.key(cfg["simulate"]["seed"]), batch_key=bkey)
        # (the seed mean as the summary's: a diverged seed left out, and said, not "not reached")
        losses = {"train_loss": r.train_loss, "test_loss": r.test_loss}
        mean, bad = _seed_mean(losses), _diverged_seeds(losses)
        gt = gk.grokking_times(r.t, mean["train_loss"], mean["test_loss"], diag["threshold"])
        th = diag["times"]
        said = (f"; all {bad.size} seeds diverged" if bad.all() else
                f"; {int(bad.sum())} of {bad.size} seeds diverged, left out" if bad.any() else "")
        pts.append({"gamma0": g, axis: v, "i": i, "j": j, "width": dg["overlay_width"],
                    "gap_network": _num(gt.gap), "gap_theory": _num(th.gap[i, j]),
                    "status_network": gt.status() + said, "status_theory": status[i, j],
                    "seeds_diverged": int(bad.sum())})
        log(f"  overlay gamma0={g:g}, {axis}={v:g}: network gap {_gap_text(gt.gap)}, "
            f"theory {_gap_text(th.gap[i, j]) if diag['diverged_step'][i, j] < 0 else status[i, j]}")
    return pts


def _fit_text(ft: dict) -> str:
    """The console's line for the t_test ~ kappa^b fit: with its error bar, or the report's reason
    for none (it dropped "no error: a line through 2 points", so two points read as a result)."""
    if "exponent" not in ft:
        return f"t_test ~ kappa^b {ft['error']}"
    err = (f" +- {ft['half_width_95']:.3g} (95%, t with {ft['points'] - 2} dof)" if ft.get("half_width_95") is not None
           else f" +- {ft['stderr']:.3f} (1 s.e.)" if ft.get("stderr") is not None
           else f" ({ft.get('stderr_note', 'no error estimate')})")
    return f"t_test ~ kappa^{ft['exponent']:.3f}{err} over {ft['points']} points"


def decay_scan(cfg, tb: Testbed, *, log=print, progress: bool = False) -> dict | None:
    """Grokking time against weight decay at one gamma0, fitted by a power law and by
    A / kappa + B. Kumar (centered, fixed readouts): the exact closure; lyu (uncentered,
    trained readouts): the forward solver, against the prediction A = ln(1/gamma0) / L.
    progress: a progress bar, and the batch in calls of seconds (Ctrl-C acts within seconds)."""
    dc = cfg["decay"]
    data, model = tb.data, tb.model
    kappas = np.asarray([x for x in dc["weight_decay"] if x > 0], float)
    if kappas.size == 0:
        return None
    t0 = time.perf_counter()
    g = dc["gamma0"]
    m = model.replace(gamma0=g)
    sch = schedule_of(cfg, weight_decay=0.0, steps=dc["steps"] or None, P=data.P)
    if tb.name == "lyu":
        th = cfg["theory"]
        r = dmft.solve_batch(m, data, {"weight_decay": kappas}, schedule=sch, method="forward",
                             samples=th["samples"], replicas=th["replicas"], batch_size=len(kappas),
                             key=jax.random.key(th["seed"]), max_memory_gb=th["max_memory_gb"],
                             progress=progress, batch_key=tb.batch_key)
    else:
        r = dmft.solve_batch(m, data, {"weight_decay": kappas}, schedule=sch, method="closure",
                             progress=progress, batch_key=tb.batch_key)
    heavy = None
    if np.any(r.get("heavy_tailed", False)):          # (the forward method's, as a solve flags it)
        least = np.fmin.reduce(r["effective_node_share"], axis=1)
        heavy = {f"{k:g}": float(v) for k, v, h in zip(kappas, least, r["heavy_tailed"]) if h}
    return _decay_result(cfg, tb, r, time.perf_counter() - t0, heavy, log)


def _decay_result(cfg, tb: Testbed, r: dict, seconds: float, heavy: dict | None, log) -> dict:
    """decay_scan's result from the scan's curves `r` (solve_batch's, or a resumed run's saved
    decay part, `_decay_part`, read back): its threshold, times and fits; heavy: {kappa: least
    effective node share} of the heavy-tailed solves, or None."""
    data, model, g = tb.data, tb.model, cfg["decay"]["gamma0"]
    kappas = np.asarray([x for x in cfg["decay"]["weight_decay"] if x > 0], float)
    thr = _lyu_threshold(cfg, data) if tb.name == "lyu" else _threshold(cfg, r["test_loss"][0, 0])
    reps = ({n: np.swapaxes(r[f"replicas.{n}"], -1, -2) for n in ("train_loss", "test_loss")}
            if "replicas.train_loss" in r else None)        # (the gaps' errors: the jackknife)
    times = gk.grokking_times(r["t"][0], r["train_loss"], r["test_loss"], thr,
                              train_se=r.get("error.train_loss"), test_se=r.get("error.test_loss"), replicas=reps)
    out = {"testbed": tb.name, "gamma0": g, "weight_decay": kappas, "threshold": thr, "times": times,
           "seconds": seconds, "curves": r}
    if heavy:
        out["heavy_tailed"] = heavy
        log(f"  weight-decay scan: heavy-tailed at kappa = {', '.join(out['heavy_tailed'])} (least effective "
            f"node share {min(out['heavy_tailed'].values()):.2g}): its late values move with theory.samples")
    for name, y in (("t_test", times.t_test), ("gap", times.gap)):
        try:
            fit = gk.fit_power_law_decay(kappas, y)
            out[f"fit_{name}"] = {"exponent": fit.slope, "stderr": _num(fit.stderr), "range": fit.x_range,
                                  "points": fit.n, "half_width_95": _num(fit.half_width())}
            if not np.isfinite(fit.stderr):
                out[f"fit_{name}"]["stderr_note"] = f"no error: a line through {fit.n} points"
            if name == "t_test" and np.any(np.isfinite(times.t_test_se)):
                # how far the times' own sampling moves the exponent (a sampled DMFT's)
                out[f"fit_{name}"]["stderr_times"] = _num(gk.power_law_exponent_se(kappas, y, times.t_test_se))
        except ValueError as err:
            out[f"fit_{name}"] = {"error": f"not fitted: {err}"}
    if tb.name == "lyu":
        degree = LYU_DEGREE[model.activation.name]          # (the config admits only these)
        try:
            A, B, se_A, se_B = gk.fit_inverse_decay(kappas, times.t_test)
            out["fit_inverse"] = {"A": A, "B": B, "se_A": se_A, "se_B": se_B,
                                  "predicted_A": float(np.log(1 / g) / degree), "degree": degree}
        except ValueError as err:
            out["fit_inverse"] = {"error": f"not fitted: {err}"}
        out["prediction"] = ("Lyu et al. (2024): t_grok ~ ln(alpha) / (L kappa), alpha = 1/gamma0, L = "
                             f"{degree}: exponent -1 and A = {np.log(1 / g) / degree:.3f}")
    else:
        out["prediction"] = ("with a centered output the decay shrinks the weights away from the "
                             "solution: it delays generalization (the contrast to the lyu testbed)")
    fit_text = _fit_text(out["fit_t_test"])
    reached = int(np.sum(times.reached_test))
    log(f"  weight-decay scan: {kappas.size} kappa in {out['seconds']:.1f} s, test threshold reached for "
        f"{reached}; {fit_text}")
    return out


# ----------------------------------------------------------------- the job

def _gamma0_part(g, theory, lazy, nets, fewer=None) -> dict:
    """One gamma0's arrays as curves.npz names them (and the time axis, "t"); fewer: theory.node_check's
    DMFT at 1 / k of the nodes, {k: curves}, as NODE_CHECK_GROUPS[k]/..."""
    arrays = {"t": theory["t"]}
    arrays.update({f"theory/gamma0={g:g}/{k}": v for k, v in theory.items() if k != "t"})
    for frac, cur in (fewer or {}).items():
        arrays.update({f"{NODE_CHECK_GROUPS[frac]}/gamma0={g:g}/{k}": v for k, v in cur.items() if k != "t"})
    arrays.update({f"lazy/gamma0={g:g}/{k}": v for k, v in (lazy or {}).items()})
    for w, d in nets.items():
        arrays.update({f"networks/gamma0={g:g}/N={w}/{k}": v for k, v in d.items()})
    return arrays


def _diagram_part(d) -> dict:
    """A phase diagram's times and the curves they are read from: both losses (with the train loss
    its t_train and gap can be recomputed from curves.npz; it held the test loss alone)."""
    arrays = {f"diagram/{d['axis']}/{k}": getattr(d["times"], k) for k in ("gap", "t_train", "t_test")}
    arrays[f"diagram/{d['axis']}/diverged_step"] = d["diverged_step"]
    arrays[f"diagram/{d['axis']}/train_loss"] = d["curves"]["train_loss"]
    arrays[f"diagram/{d['axis']}/test_loss"] = d["curves"]["test_loss"]
    return arrays


def _overlay_part(pts) -> dict:
    """An overlay's points as arrays (its report.json entry, with the statuses, is the part's extra)."""
    return {k: np.array([p[k] if p[k] is not None else np.nan for p in pts], float)
            for k in ("gamma0", "gap_network", "gap_theory")}


def _decay_part(decay) -> dict:
    """The weight-decay scan's curves behind its times: both losses (t_train and the gap were not
    checkable from curves.npz, which held the test loss alone), with a sampled DMFT's standard errors
    and replicas (the times' errors and the gaps' jackknife) where it has them."""
    c = decay["curves"]
    out = {"decay/t": c["t"], "decay/train_loss": c["train_loss"], "decay/test_loss": c["test_loss"]}
    for key, name in (("error.train_loss", "train_loss_se"), ("error.test_loss", "test_loss_se"),
                      ("replicas.train_loss", "replicas.train_loss"), ("replicas.test_loss", "replicas.test_loss")):
        if key in c:
            out[f"decay/{name}"] = c[key]
    return out


def _gamma0_of(g, arrays) -> tuple[dict, dict | None, dict, dict]:
    """A saved gamma0 part's arrays (`_gamma0_part`'s) as (theory, lazy or None, networks {width:
    curves}, theory.node_check's {k: curves}), as `run` computed them."""
    def group(prefix):
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    theory = {"t": arrays["t"], **group(f"theory/gamma0={g:g}/")}
    fewer = {k: {"t": arrays["t"], **group(f"{name}/gamma0={g:g}/")} for k, name in NODE_CHECK_GROUPS.items()
             if group(f"{name}/gamma0={g:g}/")}
    nets = {}
    for k, v in group(f"networks/gamma0={g:g}/N=").items():
        w, _, name = k.partition("/")
        nets.setdefault(int(w), {})[name] = v
    return theory, group(f"lazy/gamma0={g:g}/") or None, nets, fewer


def _diagram_of(cfg, axis, t, arrays, extra) -> dict:
    """A saved phase diagram (`_diagram_part`'s arrays, its threshold and seconds) as
    `phase_diagram` returned it, less what only the early-warning grid reads (its measures)."""
    p = f"diagram/{axis}/"
    thr = float(extra["threshold"])
    curves = {"train_loss": arrays[p + "train_loss"], "test_loss": arrays[p + "test_loss"]}
    return {"axis": axis, "gamma0": np.asarray(cfg["diagram"]["gamma0"], float),
            "values": np.asarray(cfg["diagram"][axis], float), "threshold": thr,
            "times": gk.grokking_times(t, curves["train_loss"], curves["test_loss"], thr),
            "diverged_step": arrays[p + "diverged_step"], "seconds": float(extra.get("seconds", 0.0)),
            "curves": curves, "datas": None}


def _decay_curves(arrays) -> dict:
    """A saved weight-decay part's arrays (`_decay_part`'s) as decay_scan's curves."""
    names = {"t": "t", "train_loss": "train_loss", "test_loss": "test_loss", "train_loss_se": "error.train_loss",
             "test_loss_se": "error.test_loss", "replicas.train_loss": "replicas.train_loss",
             "replicas.test_loss": "replicas.test_loss"}
    return {names[k[len("decay/"):]]: v for k, v in arrays.items() if k[len("decay/"):] in names}


class _Parts:
    """curves.npz and report.json kept as they are computed: each finished part (a gamma0's theory,
    lazy and network curves; a phase diagram; its finite-width overlay; the early-warning verdict
    over a diagram's runs; the weight-decay scan) is saved at once as OUT/curves/NAME.npz + .json
    (`dmft.io.save`: atomic, verified by `dmft.io.load`; curves' arrays named as in curves.npz, the
    overlay's and the verdict's report.json entries in the JSON's "extra"), so that a later failure
    or an interruption loses none of them (run.json lists them). `finish` writes curves.npz, the
    curves' arrays in order; `remove`, once the run has completed (its report and figures drawn),
    removes the parts: a run whose figures failed keeps them for its rerun to reuse."""

    def __init__(self, out: str, cfg: dict, log=None):
        self.out, self.cfg, self.arrays, self.stems = out, cfg, {}, []
        self.log = log or (lambda *_: None)
        # each part records the wall time since the one before (its JSON's "wall_s"): a resumed
        # run's report counts the reused parts' (`reused_s`)
        self.mark, self.reused_s = time.perf_counter(), 0.0

    def add(self, name: str, arrays: dict, *, report: str | None = None, **extra) -> None:
        """report: the report.json entry the part holds (its arrays are not curves'). Once both
        files are written, their SHA-256 go to the run's results record (`record_result`): a
        rerun of a run that did not complete reuses the part (`take`)."""
        stem = os.path.join(self.out, PARTS, name)
        now = time.perf_counter()
        save(stem, arrays, self.cfg, extra={"part_of": report or "curves.npz", **extra, "wall_s": now - self.mark})
        self.mark = now
        record_result(self.out, [stem + ".npz", stem + ".json"])
        self.stems.append(stem)
        if report is None:
            self.arrays.update(arrays)

    def saved(self, name: str) -> bool:
        """Whether a resumed run has the part `name` of the previous run (both files as recorded,
        `experiments.output.is_resumed`)."""
        return is_resumed(self.out, f"{PARTS}/{name}")

    def take(self, name: str) -> tuple[dict, dict] | None:
        """A resumed run's part `name` read back verified (`dmft.io.load`): (arrays, extra), kept as
        if `add` had saved it; None where there is none, or where it does not read back (computed)."""
        got = read_back(self.out, f"{PARTS}/{name}", load, self.log)
        if got is None:
            return None
        arrays, meta = got
        extra = json_floats(dict(meta.get("extra") or {}))
        wall = extra.pop("wall_s", 0.0)
        self.reused_s += wall if isinstance(wall, (int, float)) else 0.0
        self.mark = time.perf_counter()
        self.stems.append(os.path.join(self.out, PARTS, name))
        if extra.pop("part_of", None) == "curves.npz":
            self.arrays.update(arrays)
        return arrays, extra

    def finish(self, t) -> None:
        save(os.path.join(self.out, "curves"), {"t": t, **{k: v for k, v in self.arrays.items() if k != "t"}},
             self.cfg)

    def remove(self) -> None:
        """Drop the parts from the results record, then remove them (curves.npz holds them). In that
        order: a record that could not be rewritten (a full disk) failed the run after the parts
        were gone, and its rerun computed each again, naming it "changed or missing since the
        previous run wrote" it; now the parts stay, recorded, and the rerun reuses them."""
        forget_results(self.out, [stem + ext for stem in self.stems for ext in (".npz", ".json")])
        for stem in self.stems:        # (a complete run's files are as they were: curves.npz holds these)
            for ext in (".npz", ".json"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stem + ext)
        with contextlib.suppress(OSError):        # (not a folder that holds anything else)
            os.rmdir(os.path.join(self.out, PARTS))


def _part_names(cfg, tb: Testbed) -> list[str]:
    """The parts (`_Parts`) a run of `cfg` saves, where its points give each."""
    names = [f"gamma0_{g:g}" for g in cfg["model"]["gamma0"]]
    if tb.name == "kumar":
        for axis in cfg["diagram"]["axes"]:
            names += [f"diagram_{axis}", *([f"overlay_{axis}"] if cfg["diagram"]["overlay_width"] else [])]
        names += ["early_warning_grid"] if cfg["early_warning"]["grid"] in cfg["diagram"]["axes"] else []
    if tb.name in ("kumar", "lyu") and any(x > 0 for x in cfg["decay"]["weight_decay"]):
        names.append("decay")
    return names


def _reusable(parts: _Parts, name: str, cfg, tb: Testbed) -> bool:
    """Whether a resumed run reuses the saved part `name` (`_Parts.saved`): the phase diagram the
    early-warning grid reads only with that grid saved too (the grid reads its measures, which the
    part does not hold), so that the count said matches what `run` computes."""
    grid = tb.name == "kumar" and name == f"diagram_{cfg['early_warning']['grid']}"
    return parts.saved(name) and (not grid or parts.saved("early_warning_grid"))


def _node_check(summary, theory, fewer) -> list[dict]:
    """Per gamma0 and quantity (t_train, t_test, gap, and the final train and test losses, which
    carry errors where accuracy times do not): the DMFT's value at M, M / 2 and M / 4 nodes a
    replica, the shift from M / 2 to M, the curvature (0 on a 1 / M law) and the extrapolation to
    infinitely many nodes with its error (`validation.fitting.node_extrapolation`); None for what
    is not known (a time not reached, an error the times do not have)."""
    rows = {(r["gamma0"], r["source"]): r for r in summary}
    val = lambda r, k: np.nan if r.get(k) is None else float(r[k])      # noqa: E731 (report.json's None: NaN)
    out = []
    for g, cur in fewer.items():
        srcs = [("DMFT", theory[g]), *((NODE_CHECK_ROWS[k], cur[k]) for k in (2, 4))]
        pairs = {q: [(val(rows[(g, s)], q), val(rows[(g, s)], f"{q}_se")) for s, _ in srcs]
                 for q in ("t_train", "t_test", "gap")}
        for q in ("train_loss", "test_loss"):
            pairs[f"final {q.replace('_', ' ')}"] = [
                (float(c[q][-1]), float(c[f"{q}_se"][-1]) if f"{q}_se" in c else np.nan) for _, c in srcs]
        for q, ((f, f_se), (h, h_se), (qu, q_se)) in pairs.items():
            x = node_extrapolation(f, h, qu, f_se, h_se, q_se)
            out.append({"gamma0": g, "quantity": q, "full": _num(f), "full_se": _num(f_se), "half": _num(h),
                        "half_se": _num(h_se), "quarter": _num(qu), "quarter_se": _num(q_se),
                        **{k: _num(v) for k, v in x.items()}})
    return out


def run(cfg: dict, out: str, *, log=print, progress: bool = False) -> dict:
    """Run the grokking job into `out` (figures, report.md/json, curves.npz); a directory that
    holds a scan's store is refused first (`experiments.output.refuse_store`). Each gamma0's
    curves, each phase diagram and the weight-decay scan are on disk as soon as they are done
    (`_Parts`: OUT/curves/gamma0_G, diagram_AXIS, overlay_AXIS, early_warning_grid, decay .npz +
    .json, until the run completes: curves.npz and report.json hold them, the figures are drawn),
    so that a later failure (a figure's too) or Ctrl-C keeps them; a rerun of that run (same
    command, configuration, inputs and code, its directory claimed with
    `prepare_output(..., resume=True)`) reads back the parts still as they were recorded
    (`_Parts.take`) and computes the rest, ending with the files of a run never stopped."""
    refuse_store(out)
    tb = build(cfg)
    _check_diagram_memory(cfg, tb)
    _check_parts(cfg, tb)
    warned = [w for w in (parity_warning(cfg),) if w]       # said before any compute, and in report.md
    for w in warned:
        log(f"  warning: {w}")
    data = tb.data
    gammas = cfg["model"]["gamma0"]
    t_start = time.perf_counter()
    theory, lazy, nets, summary, heavy, fewer = {}, {}, {}, [], {}, {}
    parts = _Parts(out, cfg, log)
    check = tb.name != "kumar" and cfg["theory"]["node_check"]
    if resumed(out):
        names = _part_names(cfg, tb)
        log(resuming_line(out, sum(_reusable(parts, n, cfg, tb) for n in names), len(names), "parts"))
    for g in gammas:
        got = parts.take(f"gamma0_{g:g}")
        if got is not None:         # (a resumed run's: the curves as they were computed)
            theory[g], lazy[g], nets[g], fewer_g = _gamma0_of(g, got[0])
            if fewer_g:
                fewer[g] = fewer_g
            if "heavy_tailed" in got[1]:
                heavy[g] = float(got[1]["heavy_tailed"])
            continue
        theory[g] = _theory(cfg, tb, g, log, progress, heavy)
        if check:
            fewer[g] = {k: _theory(cfg, tb, g, log, progress, fraction=k) for k in NODE_CHECK_ROWS}
        # NTK regression in DMFT time: its losses do not depend on gamma0 (docs/derivations.md, sec. 2)
        lazy[g] = _lazy(cfg, tb, g) if g == gammas[0] else lazy[gammas[0]]
        nets[g] = _networks(cfg, tb, g, log, progress)
        parts.add(f"gamma0_{g:g}", _gamma0_part(g, theory[g], lazy[g], nets[g], fewer.get(g)), gamma0=g,
                  **({"heavy_tailed": heavy[g]} if g in heavy else {}))
    t = theory[gammas[0]]["t"]
    thr = (_threshold(cfg, theory[gammas[0]]["test_loss"][0]) if tb.name != "lyu"
           else _lyu_threshold(cfg, data))
    acc = tb.accuracy
    for g in gammas:
        rows = [("DMFT", theory[g])] + [(NODE_CHECK_ROWS[k], c) for k, c in fewer.get(g, {}).items()]
        if lazy[g] is not None:
            rows.append(("lazy (NTK regression)", lazy[g]))
        rows += [(f"N={w} (seed mean)", _seed_mean(d)) for w, d in nets[g].items()]
        diverged = {f"N={w} (seed mean)": _diverged_seeds(d) for w, d in nets[g].items()}
        for name, cur in rows:
            gt = _times(cfg, t, cur, thr, acc)
            # an ensemble's seeds that diverged, left out of its mean (_seed_mean)
            seeds = ({"seeds": int(diverged[name].size), "seeds_diverged": int(diverged[name].sum())}
                     if name in diverged else {})
            summary.append({"gamma0": g, "source": name, **seeds, **gt.as_dict(), "describe": gt.describe(),
                            "final_test_loss": _num(cur["test_loss"][-1]),
                            **({"final_train_acc": _num(cur["train_acc"][-1]),
                                "final_test_acc": _num(cur["test_acc"][-1])} if "test_acc" in cur else {}),
                            "early_warning": _early(t, cur)})
    node_check = _node_check(summary, theory, fewer) if fewer else None
    diagrams, overlays, ew_grid = [], {}, None
    if tb.name == "kumar":
        grid_axis = cfg["early_warning"]["grid"]
        for axis in cfg["diagram"]["axes"]:
            # a saved diagram is reused where what it feeds is saved too (the early-warning grid
            # reads its measures, which the part does not hold)
            got = parts.take(f"diagram_{axis}") if _reusable(parts, f"diagram_{axis}", cfg, tb) else None
            if got is not None:
                d = _diagram_of(cfg, axis, t, *got)
            else:
                d = phase_diagram(cfg, tb, axis, log=log, progress=progress, measures=axis == grid_axis)
                parts.add(f"diagram_{axis}", _diagram_part(d), threshold=float(d["threshold"]),
                          seconds=float(d["seconds"]))
            diagrams.append(d)
            got = parts.take(f"overlay_{axis}") if cfg["diagram"]["overlay_width"] else None
            if got is not None:
                overlays[axis] = got[1]["overlay"]
            else:
                overlays[axis] = _overlay(cfg, tb, d, log)
                if overlays[axis]:
                    parts.add(f"overlay_{axis}", _overlay_part(overlays[axis]),
                              report=f"diagrams[{axis}].overlay", overlay=overlays[axis])
            if axis == grid_axis:
                got = parts.take("early_warning_grid")
                if got is not None:
                    ew_grid = got[1]["early_warning_grid"]
                else:
                    ew_grid = early_warning_grid(cfg, tb, d)
                    parts.add("early_warning_grid", {}, report="early_warning_grid", early_warning_grid=ew_grid)
    decay = None
    if tb.name in ("kumar", "lyu"):
        got = parts.take("decay")
        if got is not None:
            decay = _decay_result(cfg, tb, _decay_curves(got[0]), float(got[1].get("seconds", 0.0)),
                                  got[1].get("heavy_tailed"), log)
        else:
            decay = decay_scan(cfg, tb, log=log, progress=progress)
            if decay:
                parts.add("decay", _decay_part(decay), seconds=float(decay["seconds"]),
                          **({"heavy_tailed": decay["heavy_tailed"]} if "heavy_tailed" in decay else {}))
    parts.finish(t)
    report = {"testbed": tb.name, "data": data.describe(), "threshold": thr,
              "threshold_kind": "accuracy" if acc else "loss", "summary": summary,
              "diagrams": [{"axis": d["axis"], "gamma0": d["gamma0"], "values": d["values"],
                            "threshold": d["threshold"], "seconds": d["seconds"],
                            "times": {**d["times"].as_dict(), "status": _cell_status(d).tolist()},
                            "overlay": overlays.get(d["axis"], []), "diverged_step": d["diverged_step"]}
                           for d in diagrams],
              "early_warning_grid": ew_grid, "heavy_tailed": {f"{g:g}": v for g, v in heavy.items()},
              "node_check": node_check,
              "decay": None if decay is None else {k: (v.as_dict() if k == "times" else v)
                                                   for k, v in decay.items() if k != "curves"},
              "warnings": warned, "figures": {}, "wall_s": time.perf_counter() - t_start + parts.reused_s,
              "environment": environment(), "config": cfg}
    with open(os.path.join(out, "report.json"), "w") as fh:
        json.dump(jsonable(figures_relative(report, out)), fh, indent=1)
    # the numbers are on disk (curves.npz, report.json) before any figure is drawn; the parts stay
    # until the figures are drawn (a rerun of a run whose figures failed reuses them all)
    acc_thr = cfg["threshold"]["accuracy"]
    nets = {g: {w: _kept_seeds(d) for w, d in ws.items()} for g, ws in nets.items()}   # as the summary's means
    makers = {"curves": lambda: plots.grokking_curves(t, theory, lazy, nets, gammas, thr, acc, acc_thr),
              "measures": lambda: plots.progress_measures(t, theory, nets, gammas, ew_grid)}
    if tb.name == "kumar":
        makers["decomposition"] = lambda: plots.kumar_decomposition_plot(t, theory, gammas)
        makers["width"] = lambda: plots.width_departure(t, theory, nets, gammas, thr)
    for d in diagrams:
        makers[f"phase_{d['axis']}"] = lambda d=d: plots.phase_diagram_plot(d, overlays.get(d["axis"], []))
    if decay:
        makers["decay"] = lambda: plots.decay_plot(decay)
    paths, plot_errors = draw_figures(makers, os.path.join(out, "figures"))
    report["figures"] = paths
    if plot_errors:
        report["plot_errors"] = plot_errors
    with open(os.path.join(out, "report.json"), "w") as fh:
        json.dump(jsonable(figures_relative(report, out)), fh, indent=1)
    md = markdown(report, cfg)
    write_text(os.path.join(out, "report.md"), md)
    if not plot_errors:
        parts.remove()
    return {"report": report, "files": {"report": [os.path.join(out, "report.md"),
                                                   os.path.join(out, "report.json")],
                                        "figures": paths}, "plot_errors": plot_errors}
