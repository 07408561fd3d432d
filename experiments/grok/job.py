"""Grokking as a lazy-to-rich transition, in theory and networks: the `dmft grok` job.

Testbeds (docs/conventions.md, "Grokking"; docs/derivations.md, Kumar model):

- "kumar": phi = h + eps/2 h^2, fixed readouts, centered, y = (beta . x)^2 / 2,
  gamma0 = 1/alpha. Infinite width through the exact closure (no sampling
  error); the loss decomposition and the planted overlap from its state.
- "modular_addition": one-hot pairs -> (n + m) mod p, square activation,
  trained readouts, C = p outputs; the forward solver; accuracy and the
  Fourier IPR of the first-layer weights.
- "sparse_parity": x in {-1, 1}^n, y = product of k hidden bits; relu with
  trained readouts by default; ||w - w0||_inf per neuron.

For each gamma0 of [model] gamma0: the DMFT, the lazy (NTK regression) baseline,
and network ensembles at [simulate] widths, all in the same units; grokking
times at a threshold (a fraction of the initial test loss, or an accuracy);
progress measures and their lead over the test-loss drop. For the Kumar model
also the phase diagrams of [diagram] (amount of grokking over gamma0 x eps,
gamma0 x P, gamma0 x kappa: each grid of one shape is one compiled, vmapped
program) with finite-width points overlaid, and the grokking time against the
weight decay ([decay]) with a fitted exponent.

    from experiments import grok
    cfg = grok.load_config(None, ["testbed.name='kumar'"])
    result = grok.run(cfg, "results/grok")
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

import dmft
import networks
from dmft.io import environment, jsonable, save
from validation import grokking as gk
from validation import plots

from ..output import draw_figures
from .config import Testbed, build
from .report import markdown

__all__ = ["run", "phase_diagram", "decay_scan"]


def _threshold(cfg, test_loss0):
    return cfg["threshold"]["loss_fraction"] * float(test_loss0)


def _accuracy_curves(f_train, f_test, data):
    # y as the Dataset holds it: (P,) for one output (sign accuracy), (P, C) for classes
    return gk.accuracy(f_train, data.y_train), gk.accuracy(f_test, data.y_test)


# ----------------------------------------------------------------- curves

def _theory(cfg, tb: Testbed, g, log):
    th = cfg["theory"]
    data, ex = tb.data, {"beta": tb.beta, "measure": tb.measure, "accuracy": tb.accuracy}
    kw = dict(schedule=tb.schedule, kernels=False)
    m = tb.model.replace(gamma0=g)
    t0 = time.perf_counter()
    if tb.name == "kumar":
        sol = dmft.solve(m, data, method="closure", **kw)
        # beta^T S beta: the same quantity as the networks' mean (w . beta)^2
        measures = {"direction_overlap": gk.planted_overlap(sol.state, ex["beta"])}
        dec = gk.kumar_decomposition(sol.state, ex["beta"], g, cfg["kumar"]["eps"])
    else:
        sol = dmft.solve(m, data, method="forward", samples=th["samples"], replicas=th["replicas"],
                         key=jax.random.key(th["seed"]), neuron_measures=ex["measure"], **kw)
        measures = {ex["measure"].__name__: sol.measures[:, 0]}
        dec = None
    log(f"  DMFT gamma0={g:g}: {sol.info['method']} in {time.perf_counter() - t0:.1f} s")
    out = {"t": sol.t, "train_loss": sol.train_loss, "test_loss": sol.test_loss,
           "alignment": sol.alignment, "weight_change": sol.weight_change["first_layer"], **measures}
    if ex["accuracy"]:
        out["train_acc"], out["test_acc"] = _accuracy_curves(sol.f_train, sol.f_test, data)
    if sol.error:
        out["test_loss_se"] = sol.error["test_loss"]
    if dec:
        out.update({f"decomposition.{k}": v for k, v in dec.items()})
    return out


def _lazy(cfg, tb: Testbed, g):
    if tb.schedule.weight_decay > 0:
        return None
    sol = dmft.solve(tb.model.replace(gamma0=g), tb.data, method="lazy", schedule=tb.schedule,
                     kernels=False)
    return {"test_loss": sol.test_loss, "train_loss": sol.train_loss}


def _networks(cfg, tb: Testbed, g, log, progress):
    sim = cfg["simulate"]
    data, ex = tb.data, {"measure": tb.measure, "accuracy": tb.accuracy}
    runs = networks.train(tb.model.replace(gamma0=g), data, width=list(sim["widths"]),
                          seeds=sim["seeds"], schedule=tb.schedule, key=jax.random.key(sim["seed"]),
                          neuron_measures=tb.measure, progress=progress)
    out = {}
    for w, r in runs.items():
        d = {"train_loss": r.train_loss, "test_loss": r.test_loss, "alignment": r.alignment,
             "weight_change": r.weight_change["first_layer"], ex["measure"].__name__: r.measures[..., 0]}
        if ex["accuracy"]:
            d["train_acc"], d["test_acc"] = _accuracy_curves(r.f_train, r.f_test, data)
        if r.info["diverged"]:
            log(f"  networks N={w}, gamma0={g:g}: seeds {sorted(r.info['diverged'])} diverged")
        out[w] = d
    log(f"  networks gamma0={g:g}: widths {list(runs)} x {sim['seeds']} seeds")
    return out


def _times(cfg, t, cur, thr, accuracy):
    if accuracy:
        return gk.grokking_times(t, cur["train_acc"], cur["test_acc"], cfg["threshold"]["accuracy"],
                                 accuracy=True)
    return gk.grokking_times(t, cur["train_loss"], cur["test_loss"], thr)


def _measure_names(cur):
    skip = ("train_loss", "test_loss", "train_acc", "test_acc", "test_loss_se", "t")
    return [k for k in cur if k not in skip and not k.startswith("decomposition.")]


# ----------------------------------------------------------------- diagrams

def phase_diagram(cfg, tb: Testbed, axis: str, *, log=print, progress=False) -> dict:
    """Amount of grokking over gamma0 x axis (Kumar model, exact closure).

    Points of one shape run as one `dmft.solve_batch` (one compilation); the P axis
    changes the data shape, so it is a loop of such programs, one per P.
    Returns gamma0, values, gap / t_train / t_test / reached arrays (G, V).
    """
    dg, k = cfg["diagram"], cfg["kumar"]
    data, model = tb.data, tb.model
    G = np.asarray(dg["gamma0"], float)
    V = np.asarray(dg[axis], float)
    kw = dict(schedule=tb.schedule, method="closure", batch_size=dg["batch_size"], progress=progress)
    t0 = time.perf_counter()
    gg, vv = np.meshgrid(G, V, indexing="ij")
    if axis == "P":
        parts = []
        for p in V.astype(int):
            d = dmft.tasks.kumar_quadratic(D=k["D"], P=int(p), P_test=k["P_test"],
                                           key=jax.random.key(cfg["testbed"]["seed"]))
            parts.append(dmft.solve_batch(model, d, {"gamma0": G}, **kw))
        res = {key: np.stack([p[key] for p in parts], axis=1) for key in ("t", "train_loss", "test_loss")}
    else:
        grid = {"gamma0": gg.ravel(), axis: vv.ravel()}
        r = dmft.solve_batch(model, data, grid, **kw)
        res = {key: r[key].reshape(gg.shape + r[key].shape[1:]) for key in ("t", "train_loss", "test_loss")}
    thr = _threshold(cfg, res["test_loss"][..., 0].max())
    times = gk.grokking_times(res["t"][0, 0], res["train_loss"], res["test_loss"], thr)
    log(f"  diagram gamma0 x {axis}: {gg.size} points in {time.perf_counter() - t0:.1f} s")
    return {"axis": axis, "gamma0": G, "values": V, "threshold": thr, "times": times,
            "seconds": time.perf_counter() - t0, "curves": res}


def _overlay(cfg, tb: Testbed, diag, log) -> list[dict]:
    """Finite-width networks at two grid points (the corners of the gamma0 axis, middle value)."""
    dg, k = cfg["diagram"], cfg["kumar"]
    data, model = tb.data, tb.model
    if dg["overlay_width"] == 0:
        return []
    axis, V = diag["axis"], diag["values"]
    j = len(V) // 2
    pts = []
    for i in sorted({0, len(diag["gamma0"]) - 1}):
        g, v = float(diag["gamma0"][i]), float(V[j])
        m, d, kappa = model.replace(gamma0=g), data, tb.schedule.weight_decay
        if axis == "eps":
            m = m.replace(activation=dmft.activations.quadratic(v))
        elif axis == "P":
            d = dmft.tasks.kumar_quadratic(D=k["D"], P=int(v), P_test=k["P_test"],
                                           key=jax.random.key(cfg["testbed"]["seed"]))
        else:
            kappa = v
        r = networks.train(m, d, width=dg["overlay_width"], seeds=dg["overlay_seeds"],
                           schedule=tb.schedule.replace(weight_decay=kappa),
                           key=jax.random.key(cfg["simulate"]["seed"]))
        gt = gk.grokking_times(r.t, r.train_loss.mean(0), r.test_loss.mean(0), diag["threshold"])
        th = diag["times"]
        pts.append({"gamma0": g, axis: v, "i": i, "j": j, "width": dg["overlay_width"],
                    "gap_network": float(gt.gap), "gap_theory": float(th.gap[i, j]),
                    "status_network": gt.status(), "status_theory": str(th.status()[i, j])})
        log(f"  overlay gamma0={g:g}, {axis}={v:g}: network gap {gt.gap:.4g}, theory {th.gap[i, j]:.4g}")
    return pts


def decay_scan(cfg, tb: Testbed, *, log=print) -> dict | None:
    """Grokking time against weight decay at one gamma0, with a fitted power law."""
    dc = cfg["decay"]
    data, model = tb.data, tb.model
    kappas = np.asarray([x for x in dc["weight_decay"] if x > 0], float)
    if kappas.size == 0:
        return None
    t0 = time.perf_counter()
    m = model.replace(gamma0=dc["gamma0"])
    r = dmft.solve_batch(m, data, {"weight_decay": kappas}, schedule=tb.schedule, method="closure")
    thr = _threshold(cfg, r["test_loss"][0, 0])
    times = gk.grokking_times(r["t"][0], r["train_loss"], r["test_loss"], thr)
    out = {"gamma0": dc["gamma0"], "weight_decay": kappas, "threshold": thr, "times": times,
           "seconds": time.perf_counter() - t0, "curves": r}
    for name, y in (("t_test", times.t_test), ("gap", times.gap)):
        try:
            fit = gk.fit_power_law_decay(kappas, y)
            out[f"fit_{name}"] = {"exponent": fit.slope, "stderr": fit.stderr, "range": fit.x_range,
                                  "points": fit.n}
        except ValueError as err:
            out[f"fit_{name}"] = {"error": str(err)}
    log(f"  weight-decay scan: {kappas.size} kappa in {out['seconds']:.1f} s; "
        f"t_test ~ kappa^{out['fit_t_test'].get('exponent', float('nan')):.3f}")
    return out


# ----------------------------------------------------------------- the job

def run(cfg: dict, out: str, *, log=print, progress: bool = False) -> dict:
    """Run the grokking job into `out` (figures, report.md/json, curves.npz)."""
    tb = build(cfg)
    data = tb.data
    gammas = cfg["model"]["gamma0"]
    t_start = time.perf_counter()
    theory, lazy, nets, summary = {}, {}, {}, []
    for g in gammas:
        theory[g] = _theory(cfg, tb, g, log)
        lazy[g] = _lazy(cfg, tb, g)
        nets[g] = _networks(cfg, tb, g, log, progress)
    t = theory[gammas[0]]["t"]
    thr = _threshold(cfg, theory[gammas[0]]["test_loss"][0])
    acc = tb.accuracy
    for g in gammas:
        rows = [("DMFT", theory[g])]
        if lazy[g] is not None:
            rows.append(("lazy (NTK regression)", lazy[g]))
        rows += [(f"N={w} (seed mean)", {k: np.nanmean(v, axis=0) for k, v in d.items()})
                 for w, d in nets[g].items()]
        for name, cur in rows:
            if acc and "test_acc" not in cur:
                gt = gk.grokking_times(t, cur["train_loss"], cur["test_loss"], thr)
            else:
                gt = _times(cfg, t, cur, thr, acc)
            ew = gk.early_warning(t, cur["test_loss"], {k: cur[k] for k in _measure_names(cur)})
            summary.append({"gamma0": g, "source": name, **gt.as_dict(), "describe": gt.describe(),
                            "drop_observed": bool(gt.reached_test),
                            "final_test_loss": float(cur["test_loss"][-1]),
                            "early_warning": {k: (float(v) if k == "t_drop" else
                                                  {kk: float(vv) for kk, vv in v.items()})
                                              for k, v in ew.items()}})
    diagrams, overlays = [], {}
    if cfg["testbed"]["name"] == "kumar":
        for axis in cfg["diagram"]["axes"]:
            d = phase_diagram(cfg, tb, axis, log=log, progress=progress)
            diagrams.append(d)
            overlays[axis] = _overlay(cfg, tb, d, log)
    decay = decay_scan(cfg, tb, log=log) if cfg["testbed"]["name"] == "kumar" else None

    arrays = {"t": t}
    for g in gammas:
        for k, v in theory[g].items():
            if k != "t":
                arrays[f"theory/gamma0={g:g}/{k}"] = v
        for k, v in (lazy[g] or {}).items():
            arrays[f"lazy/gamma0={g:g}/{k}"] = v
        for w, d in nets[g].items():
            for k, v in d.items():
                arrays[f"networks/gamma0={g:g}/N={w}/{k}"] = v
    for d in diagrams:
        for k in ("gap", "t_train", "t_test"):
            arrays[f"diagram/{d['axis']}/{k}"] = getattr(d["times"], k)
        arrays[f"diagram/{d['axis']}/test_loss"] = d["curves"]["test_loss"]
    if decay:
        arrays["decay/test_loss"] = decay["curves"]["test_loss"]
    save(os.path.join(out, "curves"), arrays, cfg)
    paths = {}
    report = {"testbed": cfg["testbed"]["name"], "data": data.describe(), "threshold": thr,
              "threshold_kind": "accuracy" if acc else "loss", "summary": summary,
              "diagrams": [{"axis": d["axis"], "gamma0": d["gamma0"], "values": d["values"],
                            "threshold": d["threshold"], "seconds": d["seconds"],
                            "times": d["times"].as_dict(), "overlay": overlays.get(d["axis"], [])}
                           for d in diagrams],
              "decay": None if decay is None else {k: (v.as_dict() if k == "times" else v)
                                                   for k, v in decay.items() if k != "curves"},
              "figures": paths, "wall_s": time.perf_counter() - t_start,
              "environment": environment(), "config": cfg}
    with open(os.path.join(out, "report.json"), "w") as fh:
        json.dump(jsonable(report), fh, indent=1)
    # the numbers are on disk (curves.npz, report.json) before any figure is drawn
    makers = {"curves": lambda: plots.grokking_curves(t, theory, lazy, nets, gammas, thr, acc),
              "measures": lambda: plots.progress_measures(t, theory, nets, gammas)}
    if cfg["testbed"]["name"] == "kumar":
        makers["decomposition"] = lambda: plots.kumar_decomposition_plot(t, theory, gammas)
        makers["width"] = lambda: plots.width_departure(t, theory, nets, gammas)
    for d in diagrams:
        makers[f"phase_{d['axis']}"] = lambda d=d: plots.phase_diagram_plot(d, overlays.get(d["axis"], []))
    if decay:
        makers["decay"] = lambda: plots.decay_plot(decay)
    paths, plot_errors = draw_figures(makers, os.path.join(out, "figures"))
    report["figures"] = paths
    if plot_errors:
        report["plot_errors"] = plot_errors
    with open(os.path.join(out, "report.json"), "w") as fh:
        json.dump(jsonable(report), fh, indent=1)
    md = markdown(report, cfg)
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write(md)
    return {"report": report, "files": {"report": [os.path.join(out, "report.md"),
                                                   os.path.join(out, "report.json")],
                                        "figures": paths}, "plot_errors": plot_errors}


