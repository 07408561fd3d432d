"""Grokking as a lazy-to-rich transition, in theory and networks: the `dmft grok` job.

Testbeds (THEORY.md sections 6 and 8):

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

    from validation import grok
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

from . import grokking as gk
from .config import ConfigError, Field
from .config import load as _load

__all__ = ["SCHEMA", "FULL", "load_config", "build", "run", "phase_diagram", "decay_scan"]

TESTBEDS = ("kumar", "modular_addition", "sparse_parity")

SCHEMA: dict[str, dict[str, Field]] = {
    "testbed": {
        "name": Field("str", "kumar", "grokking testbed", choices=TESTBEDS),
        "seed": Field("int", 0, "data seed", 0),
    },
    "kumar": {
        "D": Field("int", 30, "input dimension", 1),
        "P": Field("int", 165, "training points (between D and D^2 for grokking)", 1),
        "P_test": Field("int", 1000, "test points", 1),
        "eps": Field("float", 0.02, "eps of phi = h + eps/2 h^2", 0.0, True),
    },
    "modular_addition": {
        "p": Field("int", 11, "modulus (p >= 2)", 2),
        "train_fraction": Field("float", 0.6, "fraction of the p^2 pairs used for training", 0.0, True),
    },
    "sparse_parity": {
        "n": Field("int", 10, "input bits", 1),
        "k": Field("int", 3, "bits in the parity (k <= n)", 1),
        "P": Field("int", 400, "training points", 1),
        "P_test": Field("int", 400, "test points", 1),
        "activation": Field("str", "relu", "activation of the parity network"),
    },
    "model": {
        "gamma0": Field("floats", [0.5, 1.0, 3.0], "richness values (gamma0 = 1/alpha)", 0.0, True),
        "weight_decay": Field("float", 0.0, "weight decay kappa per unit time", 0.0),
    },
    "train": {
        "eta0": Field("float", 2.0, "gradient-descent step in DMFT time units", 0.0, True),
        "steps": Field("int", 30000, "number of steps", 1),
        "save_every": Field("int", 250, "record every this many steps", 1),
    },
    "theory": {
        "samples": Field("int", 4096, "single-site nodes (forward solver testbeds)", 2),
        "replicas": Field("int", 4, "replicas for the error estimate", 1),
        "seed": Field("int", 0, "seed of the single-site nodes", 0),
    },
    "simulate": {
        "widths": Field("ints", [2, 16, 128], "network widths", 1),
        "seeds": Field("int", 4, "networks per width", 1),
        "seed": Field("int", 1, "seed of the network initializations", 0),
    },
    "threshold": {
        "loss_fraction": Field("float", 0.1, "loss threshold as a fraction of the initial test loss",
                               0.0, True),
        "accuracy": Field("float", 0.9, "accuracy threshold (classification testbeds)", 0.0, True),
    },
    "diagram": {
        "axes": Field("strs", ["eps", "P", "weight_decay"], "phase diagrams: gamma0 against these"),
        "gamma0": Field("floats", [0.25, 0.5, 1.0, 2.0, 4.0], "gamma0 values of the diagrams", 0.0, True),
        "eps": Field("floats", [0.01, 0.03, 0.1, 0.3], "eps values", 0.0, True),
        "P": Field("ints", [45, 90, 165, 330], "training-set sizes", 1),
        "weight_decay": Field("floats", [0.0, 2.5e-5, 1e-4, 4e-4], "weight decays", 0.0),
        "overlay_width": Field("int", 128, "network width of the finite-width points (0: none)", 0),
        "overlay_seeds": Field("int", 2, "networks per finite-width point", 1),
        "batch_size": Field("int", 32, "grid points per compiled call", 1),
    },
    "decay": {
        "gamma0": Field("float", 1.0, "gamma0 of the weight-decay scan", 0.0, True),
        "weight_decay": Field("floats", [2.5e-5, 5e-5, 1e-4, 2e-4], "kappa values ([0.0]: no scan)", 0.0),
    },
}

FULL = {   # Kumar et al. (2024) sizes: Fig. 1 (D=100, P=550, eps=0.02, alpha=1) and Fig. 3e
    "kumar": {"D": 100, "P": 550, "P_test": 1000},
    "model": {"gamma0": [0.25, 0.5, 1.0, 2.0]},
    "train": {"steps": 100000, "save_every": 500},
    "simulate": {"widths": [2, 8, 32, 128, 512, 2048, 4096], "seeds": 8},
    "diagram": {"gamma0": [0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0],
                "eps": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
                "P": [110, 220, 330, 550, 1100, 2200], "overlay_width": 1024, "overlay_seeds": 4},
}

AXES = ("eps", "P", "weight_decay")


def _check(cfg: dict) -> None:
    tr = cfg["train"]
    if tr["steps"] % tr["save_every"]:
        raise ConfigError(f"train.steps ({tr['steps']}) must be a multiple of train.save_every "
                          f"({tr['save_every']})")
    th = cfg["theory"]
    if th["samples"] % (2 * th["replicas"]):
        raise ConfigError(f"theory.samples ({th['samples']}) must be a multiple of "
                          f"2 x theory.replicas ({2 * th['replicas']})")
    sp = cfg["sparse_parity"]
    if sp["k"] > sp["n"]:
        raise ConfigError(f"sparse_parity.k: must be <= sparse_parity.n ({sp['n']}), got {sp['k']}")
    if cfg["modular_addition"]["train_fraction"] > 1:
        raise ConfigError("modular_addition.train_fraction: must be in (0, 1], got "
                          f"{cfg['modular_addition']['train_fraction']}")
    if cfg["threshold"]["accuracy"] > 1:
        raise ConfigError(f"threshold.accuracy: must be in (0, 1], got {cfg['threshold']['accuracy']}")
    for a in cfg["diagram"]["axes"]:
        if a not in AXES:
            raise ConfigError(f"diagram.axes: unknown axis {a!r}; known: {list(AXES)}")
    if len(set(cfg["simulate"]["widths"])) != len(cfg["simulate"]["widths"]):
        raise ConfigError("simulate.widths: widths must be distinct")
    if cfg["testbed"]["name"] != "kumar" and cfg["diagram"]["axes"]:
        # diagrams are for the Kumar model; quietly irrelevant elsewhere would hide a typo
        raise ConfigError("diagram.axes: phase diagrams are drawn for the kumar testbed; set "
                          "diagram.axes = [] for other testbeds")


def load_config(path=None, overrides=(), full: bool = False) -> dict:
    """The grok configuration: defaults, --full preset, TOML file, overrides (validated)."""
    return _load(path, overrides, full, schema=SCHEMA, full_preset=FULL, check_fn=_check)


# ----------------------------------------------------------------- problem

def build(cfg: dict):
    """(data, model, extras) for the configured testbed; raises ValueError on bad sizes."""
    name, key = cfg["testbed"]["name"], jax.random.key(cfg["testbed"]["seed"])
    if name == "kumar":
        k = cfg["kumar"]
        data = dmft.tasks.kumar_quadratic(D=k["D"], P=k["P"], P_test=k["P_test"], key=key)
        model = dmft.TwoLayer(dmft.activations.quadratic(k["eps"]), gamma0=1.0, readout="fixed")
        beta = np.asarray(data.meta["beta"])
        return data, model, {"beta": beta, "measure": gk.direction_overlap(beta), "accuracy": False}
    if name == "modular_addition":
        m = cfg["modular_addition"]
        data = dmft.tasks.modular_addition(m["p"], m["train_fraction"], key=key)
        if data.P_test == 0:
            raise ValueError("modular_addition.train_fraction = 1 leaves no test pairs")
        model = dmft.TwoLayer(dmft.activations.square(), gamma0=1.0)
        return data, model, {"measure": gk.fourier_ipr(m["p"]), "accuracy": True}
    s = cfg["sparse_parity"]
    data = dmft.tasks.sparse_parity(s["n"], s["k"], s["P"], s["P_test"], key=key)
    model = dmft.TwoLayer(s["activation"], gamma0=1.0)
    return data, model, {"measure": gk.max_change(), "accuracy": True}


def _threshold(cfg, test_loss0):
    return cfg["threshold"]["loss_fraction"] * float(test_loss0)


def _accuracy_curves(f_train, f_test, data):
    # y as the Dataset holds it: (P,) for one output (sign accuracy), (P, C) for classes
    return gk.accuracy(f_train, data.y_train), gk.accuracy(f_test, data.y_test)


# ----------------------------------------------------------------- curves

def _theory(cfg, data, model, ex, g, log):
    tr, th = cfg["train"], cfg["theory"]
    kw = dict(eta0=tr["eta0"], steps=tr["steps"], save_every=tr["save_every"], kernels=False,
              weight_decay=cfg["model"]["weight_decay"])
    m = model.replace(gamma0=g)
    t0 = time.perf_counter()
    if cfg["testbed"]["name"] == "kumar":
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


def _lazy(cfg, data, model, g):
    tr = cfg["train"]
    if cfg["model"]["weight_decay"] > 0:
        return None
    sol = dmft.solve(model.replace(gamma0=g), data, method="lazy", eta0=tr["eta0"], steps=tr["steps"],
                     save_every=tr["save_every"], kernels=False)
    return {"test_loss": sol.test_loss, "train_loss": sol.train_loss}


def _networks(cfg, data, model, ex, g, log, progress):
    tr, sim = cfg["train"], cfg["simulate"]
    runs = networks.train(model.replace(gamma0=g), data, width=list(sim["widths"]), seeds=sim["seeds"],
                          eta0=tr["eta0"], steps=tr["steps"], save_every=tr["save_every"],
                          key=jax.random.key(sim["seed"]), weight_decay=cfg["model"]["weight_decay"],
                          neuron_measures=ex["measure"], progress=progress)
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

def phase_diagram(cfg, data, model, axis: str, *, log=print, progress=False) -> dict:
    """Amount of grokking over gamma0 x axis (Kumar model, exact closure).

    Points of one shape run as one `dmft.solve_batch` (one compilation); the P axis
    changes the data shape, so it is a loop of such programs, one per P.
    Returns gamma0, values, gap / t_train / t_test / reached arrays (G, V).
    """
    dg, tr, k = cfg["diagram"], cfg["train"], cfg["kumar"]
    G = np.asarray(dg["gamma0"], float)
    V = np.asarray(dg[axis], float)
    kw = dict(eta0=tr["eta0"], steps=tr["steps"], save_every=tr["save_every"], method="closure",
              batch_size=dg["batch_size"], weight_decay=cfg["model"]["weight_decay"], progress=progress)
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
        if axis == "weight_decay":
            kw.pop("weight_decay")
        r = dmft.solve_batch(model, data, grid, **kw)
        res = {key: r[key].reshape(gg.shape + r[key].shape[1:]) for key in ("t", "train_loss", "test_loss")}
    thr = _threshold(cfg, res["test_loss"][..., 0].max())
    times = gk.grokking_times(res["t"][0, 0], res["train_loss"], res["test_loss"], thr)
    log(f"  diagram gamma0 x {axis}: {gg.size} points in {time.perf_counter() - t0:.1f} s")
    return {"axis": axis, "gamma0": G, "values": V, "threshold": thr, "times": times,
            "seconds": time.perf_counter() - t0, "curves": res}


def _overlay(cfg, data, model, diag, log) -> list[dict]:
    """Finite-width networks at two grid points (the corners of the gamma0 axis, middle value)."""
    dg, tr, k = cfg["diagram"], cfg["train"], cfg["kumar"]
    if dg["overlay_width"] == 0:
        return []
    axis, V = diag["axis"], diag["values"]
    j = len(V) // 2
    pts = []
    for i in sorted({0, len(diag["gamma0"]) - 1}):
        g, v = float(diag["gamma0"][i]), float(V[j])
        m, d, kappa = model.replace(gamma0=g), data, cfg["model"]["weight_decay"]
        if axis == "eps":
            m = m.replace(activation=dmft.activations.quadratic(v))
        elif axis == "P":
            d = dmft.tasks.kumar_quadratic(D=k["D"], P=int(v), P_test=k["P_test"],
                                           key=jax.random.key(cfg["testbed"]["seed"]))
        else:
            kappa = v
        r = networks.train(m, d, width=dg["overlay_width"], seeds=dg["overlay_seeds"], eta0=tr["eta0"],
                           steps=tr["steps"], save_every=tr["save_every"], weight_decay=kappa,
                           key=jax.random.key(cfg["simulate"]["seed"]))
        gt = gk.grokking_times(r.t, r.train_loss.mean(0), r.test_loss.mean(0), diag["threshold"])
        th = diag["times"]
        pts.append({"gamma0": g, axis: v, "i": i, "j": j, "width": dg["overlay_width"],
                    "gap_network": float(gt.gap), "gap_theory": float(th.gap[i, j]),
                    "status_network": gt.status(), "status_theory": str(th.status()[i, j])})
        log(f"  overlay gamma0={g:g}, {axis}={v:g}: network gap {gt.gap:.4g}, theory {th.gap[i, j]:.4g}")
    return pts


def decay_scan(cfg, data, model, *, log=print) -> dict | None:
    """Grokking time against weight decay at one gamma0, with a fitted power law."""
    dc, tr = cfg["decay"], cfg["train"]
    kappas = np.asarray([x for x in dc["weight_decay"] if x > 0], float)
    if kappas.size == 0:
        return None
    t0 = time.perf_counter()
    m = model.replace(gamma0=dc["gamma0"])
    r = dmft.solve_batch(m, data, {"weight_decay": kappas}, eta0=tr["eta0"], steps=tr["steps"],
                         save_every=tr["save_every"], method="closure")
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
    from . import plots

    data, model, ex = build(cfg)
    tr = cfg["train"]
    gammas = cfg["model"]["gamma0"]
    t_start = time.perf_counter()
    theory, lazy, nets, summary = {}, {}, {}, []
    for g in gammas:
        theory[g] = _theory(cfg, data, model, ex, g, log)
        lazy[g] = _lazy(cfg, data, model, g)
        nets[g] = _networks(cfg, data, model, ex, g, log, progress)
    t = theory[gammas[0]]["t"]
    thr = _threshold(cfg, theory[gammas[0]]["test_loss"][0])
    acc = ex["accuracy"]
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
            d = phase_diagram(cfg, data, model, axis, log=log, progress=progress)
            diagrams.append(d)
            overlays[axis] = _overlay(cfg, data, model, d, log)
    decay = decay_scan(cfg, data, model, log=log) if cfg["testbed"]["name"] == "kumar" else None

    os.makedirs(os.path.join(out, "figures"), exist_ok=True)
    figs = {"curves": plots.grokking_curves(t, theory, lazy, nets, gammas, thr, acc),
            "measures": plots.progress_measures(t, theory, nets, gammas)}
    if cfg["testbed"]["name"] == "kumar":
        figs["decomposition"] = plots.kumar_decomposition_plot(t, theory, gammas)
        figs["width"] = plots.width_departure(t, theory, nets, gammas)
    for d in diagrams:
        figs[f"phase_{d['axis']}"] = plots.phase_diagram_plot(d, overlays.get(d["axis"], []))
    if decay:
        figs["decay"] = plots.decay_plot(decay)
    import matplotlib.pyplot as plt
    paths = {}
    for name, fig in figs.items():
        paths[name] = os.path.join(out, "figures", f"{name}.png")
        fig.savefig(paths[name], dpi=120)
        plt.close(fig)

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
    from dmft.io import environment, jsonable, save
    save(os.path.join(out, "curves"), arrays, cfg)
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
    md = _markdown(report, cfg)
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write(md)
    return {"report": report, "files": {"report": [os.path.join(out, "report.md"),
                                                   os.path.join(out, "report.json")],
                                        "figures": paths}}


def _fmt(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "n/a" if not np.isfinite(x) else f"{x:.4g}"


def _markdown(rep: dict, cfg: dict) -> str:
    kind = rep["threshold_kind"]
    thr = cfg["threshold"]["accuracy"] if kind == "accuracy" else rep["threshold"]
    lines = [f"# Grokking report: {rep['testbed']}", "",
             f"Data: {rep['data']}", "",
             f"Threshold: {kind} {'>' if kind == 'accuracy' else '<'} {_fmt(thr)}; gap = max(0, t_test - "
             "t_train) in DMFT time (Kumar et al. 2024). 'not reached' means the curve never crossed "
             "the threshold within the run (final values shown).", "",
             "| gamma0 | source | t_train | t_test | gap | status | final test loss |",
             "|---|---|---|---|---|---|---|"]
    for r in rep["summary"]:
        lines.append(f"| {r['gamma0']:g} | {r['source']} | {_fmt(r['t_train'])} | {_fmt(r['t_test'])} | "
                     f"{_fmt(r['gap'])} | {r['status']} | {_fmt(r['final_test_loss'])} |")
    lines += ["", "## Early warning", "",
              "Time of the steepest change (in log time) of each progress measure against the time of "
              "the steepest test-loss drop; lead = t_drop - t_change (> 0: the measure moved first).", "",
              "| gamma0 | source | t_drop | measure | t_change | lead |", "|---|---|---|---|---|---|"]
    for r in rep["summary"]:
        ew = r["early_warning"]
        if not r["drop_observed"]:
            continue          # no crossing of the threshold: no drop to warn of
        for name, v in ew.items():
            if name == "t_drop":
                continue
            lines.append(f"| {r['gamma0']:g} | {r['source']} | {_fmt(ew['t_drop'])} | {name} | "
                         f"{_fmt(v['t_change'])} | {_fmt(v['lead'])} |")
    leads = [v["leads"] for r in rep["summary"] if r["drop_observed"]
             for k, v in r["early_warning"].items() if k != "t_drop"]
    lines += ["", (f"Measures leading the drop: {sum(bool(x) for x in leads)} of {len(leads)} "
                   "(measure, source, gamma0) combinations with an observed drop." if leads else
                   "No test-loss drop past the threshold was observed: no lead times.")]
    for d in rep["diagrams"]:
        tm = d["times"]
        gap = np.asarray(tm["gap"], float)
        lines += ["", f"## Phase diagram: gamma0 x {d['axis']} ({gap.size} points, {d['seconds']:.1f} s)", "",
                  "Gap (n/a: threshold not reached):", "",
                  "| gamma0 \\ " + d["axis"] + " | " + " | ".join(_fmt(v) for v in d["values"]) + " |",
                  "|---" * (len(d["values"]) + 1) + "|"]
        for i, g in enumerate(d["gamma0"]):
            lines.append(f"| {g:g} | " + " | ".join(_fmt(x) for x in gap[i]) + " |")
        for o in d["overlay"]:
            lines.append(f"\nFinite width N={o['width']} at gamma0={o['gamma0']:g}, {d['axis']}="
                         f"{_fmt(o[d['axis']])}: network gap {_fmt(o['gap_network'])} "
                         f"({o['status_network']}) vs theory {_fmt(o['gap_theory'])} ({o['status_theory']}).")
    dc = rep["decay"]
    if dc:
        lines += ["", f"## Weight decay (gamma0 = {dc['gamma0']:g})", "",
                  "| kappa | t_train | t_test | gap |", "|---|---|---|---|"]
        for i, k in enumerate(dc["weight_decay"]):
            lines.append(f"| {k:g} | {_fmt(dc['times']['t_train'][i])} | {_fmt(dc['times']['t_test'][i])} | "
                         f"{_fmt(dc['times']['gap'][i])} |")
        for name in ("t_test", "gap"):
            f = dc.get(f"fit_{name}", {})
            if "exponent" in f:
                lines.append(f"\nFit {name} ~ kappa^b: b = {f['exponent']:.3f} +- {_fmt(f['stderr'])} over "
                             f"kappa in [{f['range'][0]:g}, {f['range'][1]:g}] ({f['points']} points); "
                             "Omnigrok predicts b = -1 (Lyu et al.: ln(alpha)/kappa, also b = -1).")
            elif f:
                lines.append(f"\nFit {name}: {f['error']}")
    lines += ["", "Figures: " + ", ".join(f"`{os.path.basename(p)}`" for p in rep["figures"].values()),
              "", f"Wall time: {rep['wall_s']:.1f} s."]
    return "\n".join(lines) + "\n"
