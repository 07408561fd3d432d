"""The grok job's Markdown report."""

from __future__ import annotations

import os

import numpy as np

from dmft.solve import t_quantile
from validation.grokking import COARSE_FALL

from ..output import precision_line
from ..report import training_line

__all__ = ["markdown"]



# what the early-warning table's less obvious measures are (the others are the validate job's)
_MEASURES = {
    "planted_alignment": "planted_alignment is beta^T S beta / (Tr S / D), the first-layer second moment along "
                         "the planted direction against an average one (1 at the start, D when aligned)",
    "planted_diffusion": "planted_diffusion is the diffusion per unit time of the planted overlap beta^T S beta under SGD with "
                         "early_warning.batch_size = {B} points a step, computed from the run's state "
                         "whatever the run's own batch (full batch too): a measure, not the run's noise"}


def _fmt(x, missing="n/a"):
    """A number; `missing` for None or NaN (times and gaps: "not reached", never a number)."""
    if x is None:
        return missing
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return missing if not np.isfinite(x) else f"{x:.4g}"


def _time(x, se=None):
    """A crossing time, with its standard error where it has one (a sampled DMFT's, a seed mean's)."""
    out = _fmt(x, "not reached")
    if se is not None and x is not None and np.isfinite(float(x)) and np.isfinite(float(se)):
        out += f" +- {float(se):.2g}"
    return out


def _lead_text(v: dict) -> str:
    """A lead that is no number: why (no change, or unresolved by the saves)."""
    if v.get("t_change") is None:
        return "no change"
    note = v.get("lead_note", "")
    return "unresolved (within one save interval)" if note.startswith("unresolved") else (note or "n/a")


def _not_grokked(grid: dict) -> str:
    """The early-warning verdict's runs with a drop (a twofold fall) that never crossed the test
    threshold: counted in the verdict, said so."""
    n = sum(1 for r in grid["runs"] if r.get("reached_test") is False)
    return (f" {n} of these {len(grid['runs'])} runs never crossed the test threshold (their drop is a fall of at "
            "least twofold, not grokking); they are counted in the fractions." if n else "")


def _diverged_text(r: dict) -> str:
    """A seed mean's seeds that diverged (`experiments.grok.job._seed_mean` leaves them out)."""
    n, S = r.get("seeds_diverged", 0), r.get("seeds", 0)
    if not n:
        return ""
    if n == S:
        return f" (all {S} seeds diverged: the mean is NaN from the first divergence)"
    return f" ({n} of {S} seeds diverged: the mean of the other {S - n})"


def _heavy(name: str, shares: dict) -> str:
    """The sentence for DMFT solves flagged heavy-tailed, {value label: least effective node share}."""
    return (f"Heavy-tailed DMFT at {name} = {', '.join(shares)}: its outputs are carried by few nodes, or by a "
            "share of them that still moves with the node count (least effective node share "
            f"{', '.join(f'{v:.2g}' for v in shares.values())}; dmft.solve.NODE_SHARE_MIN and SHARE_DRIFT_MIN), "
            "so its late-time values move with theory.samples and its standard "
            "error understates the error (docs/derivations.md, section 2); compare several theory.samples, "
            "and the widths, before trusting them.")


def _dof_line(rep: dict, cfg: dict) -> list[str]:
    """How far a +- error reaches: the errors' degrees of freedom and their 95% t factor (with 2
    replicas, 1 degree of freedom: an interval 12.7 errors wide, so a small error says little)."""
    parts = []
    R = cfg.get("theory", {}).get("replicas")
    if rep.get("testbed") != "kumar" and R and R > 1:        # (the kumar testbed's DMFT is exact)
        parts.append(f"the DMFT's over its {R} replicas: {R - 1} degree{'s' if R > 2 else ''} of freedom, a 95% "
                     f"interval +- {t_quantile(0.975, R - 1):.3g} errors")
    S = cfg.get("simulate", {}).get("seeds")
    if S and S > 1:
        parts.append(f"the seed means' over {S} seeds: {S - 1} degree{'s' if S > 2 else ''} of freedom, +- "
                     f"{t_quantile(0.975, S - 1):.3g} errors")
    return [f"Standard errors here: {'; '.join(parts)}.", ""] if parts else []


def _node_check_lines(rep: dict, cfg: dict) -> list[str]:
    """theory.node_check's table: each DMFT time and final loss at M / 4, M / 2 and M nodes a
    replica, the shift, the curvature and the extrapolation to infinitely many nodes."""
    rows = rep.get("node_check")
    if not rows:
        return []
    th = cfg["theory"]
    M = th["samples"] // th["replicas"]
    lines = ["", "## Node-count check", "",
             f"theory.node_check: the DMFT solved again at half and a quarter of the nodes a replica ({M // 2} "
             f"and {M // 4} beside {M}; independent nodes). With M nodes a replica the DMFT is a finite system whose "
             "values carry a bias that its replicas' error bars do not see, ~ a / M + b / M^2. The shift x(M) - "
             "x(M / 2) is minus the bias at M to first order; the curvature, (x(M / 2) - x(M / 4)) - 2 shift, is 0 "
             "on a 1 / M law (successive shifts double); the extrapolation 2 x(M) - x(M / 2) is off by the "
             "curvature / 3, which its error includes beside the solves' own "
             "(`validation.fitting.node_extrapolation`). A DMFT's accuracy times carry no error of their own: "
             "their extrapolation's error is the curvature's part alone, and a shift there may be noise as much "
             "as bias. A shift of many errors means the DMFT at theory.samples is not yet at infinite width; a "
             "curvature as large as the shift, that M is not yet where the bias falls as 1 / M: raise "
             "theory.samples.", "",
             f"| gamma0 | quantity | {M // 4} nodes a replica | {M // 2} | {M} | shift | curvature | "
             "extrapolated |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['gamma0']:g} | {r['quantity']} | {_time(r['quarter'], r.get('quarter_se'))} | "
                     f"{_time(r['half'], r.get('half_se'))} | {_time(r['full'], r.get('full_se'))} | "
                     f"{_signed(r['shift'], r['shift_se'])} | {_signed(r['curvature'], r['curvature_se'])} | "
                     f"{_time(r['extrapolated'], r['extrapolated_se'])} |")
    return lines


def _signed(x, se):
    """A shift with its sign and error; n/a where either time is not reached."""
    if x is None or not np.isfinite(float(x)):
        return "n/a"
    return f"{float(x):+.4g}" + (f" +- {float(se):.2g}" if se is not None and np.isfinite(float(se)) else "")


def _inverse_text(fi: dict) -> str:
    """What the fit A / kappa + B says, by the signs of A and B (the log-log slope of A / kappa + B is
    -A / (A + B kappa)): it read "B ... makes the log-log slope shallower than -1" whatever they were,
    also beside A < 0 and a fitted exponent of +1.25."""
    if fi["A"] <= 0:
        return ("A <= 0: over these kappa t_test does not fall as 1 / kappa (see the exponent above), so this "
                "scan does not show the predicted law and B is no length of a rich phase.")
    if fi["B"] < 0:
        return "B < 0 makes the log-log slope -A / (A + B kappa) steeper than -1."
    return ("B is the kappa-independent length of the rich phase, which makes the log-log slope shallower "
            "than -1.")


# what a "(coarse)" mark on a time or gap means (validation.grokking.COARSE_FALL)
_COARSE_NOTE = (f"(coarse): the loss (or the error rate 1 - accuracy) fell over {COARSE_FALL:g}-fold between the two "
                "saves around the crossing behind "
                "that time or gap, so the saves do not resolve it there and the time may lie anywhere between them "
                "(its error bar, a local one, does not say so): save more often (train.save_every or "
                "train.log_saves).")


def markdown(rep: dict, cfg: dict) -> str:
    kind = rep["threshold_kind"]
    thr = cfg["threshold"]["accuracy"] if kind == "accuracy" else rep["threshold"]
    lines = [f"# Grokking report: {rep['testbed']}", "",
             "Data: " + ", ".join(f"{k} = {v}" for k, v in rep["data"].items() if k not in ("meta", "sha256"))
             + f" (task {rep['data'].get('meta', {}).get('task', '?')})", "",
             f"Threshold: {kind} {'>' if kind == 'accuracy' else '<'} {_fmt(thr)}; gap = max(0, t_test - "
             "t_train) in DMFT time (Kumar et al. 2024). 'not reached' means the curve never crossed "
             "the threshold within the run (final values shown); a gap needs both times. On a loss "
             "threshold a sampled DMFT's times and a seed mean's carry +- one standard error (the loss's "
             "error over its slope at the crossing, `validation.grokking.crossing_time_se`; replicas - 1 "
             "or seeds - 1 degrees of freedom), and so do their gaps (by the jackknife over the replicas or "
             "seeds: the two times share their errors, `validation.grokking.jackknife_se`); on an accuracy "
             "threshold a seed mean's times and gap have them by the jackknife, a DMFT's none (its accuracy is of "
             "the pooled outputs, a step function of them: a jackknife over each replica's outputs, measured, "
             "covered 57-95% of nominal 95% intervals). In report.json "
             "these are null, `reached_train` / `reached_test` say whether each threshold was crossed, and "
             "`early_warning.drop_observed` (a different thing) whether the test loss has a drop to warn "
             "of (a plateau at least twice its floor).", "", *_dof_line(rep, cfg),
             precision_line(rep.get("environment", {})), ""]
    lines += [x for w in rep.get("warnings") or [] for x in (f"**Warning**: {w}.", "")]
    P = rep.get("data", {}).get("P")
    axes = [d["axis"] for d in rep.get("diagrams") or []]
    notes = [n for n, a in (("the minibatch axis's columns have their own sizes", "minibatch"),
                            ("the P axis's columns of at most B points are full batch", "P")) if a in axes]
    others = [w for w, ran in (("the phase diagrams' points" + (f" ({'; '.join(notes)})" if notes else ""), axes),
                               ("the weight-decay scan", rep.get("decay"))) if ran]
    sgd = training_line(cfg, P, "the DMFT, its lazy limit and every network"
                        + (", and " + " and ".join(others) if others else ""))
    if sgd and P is not None:
        lines += [sgd.strip(), ""]
    acc = kind == "accuracy"
    lines += ["| gamma0 | source | t_train | t_test | gap | status | final test loss |"
              + (" final train / test accuracy |" if acc else ""),
              "|---|---|---|---|---|---|---|" + ("---|" if acc else "")]
    def mark(r, q):           # a crossing the saves do not resolve (validation.grokking.COARSE_FALL)
        return " (coarse)" if r.get(f"coarse_{q}") and r.get(f"t_{q}") is not None else ""
    coarse_seen = False       # (the decay and phase-diagram tables mark theirs too: they showed none)
    for r in rep["summary"]:
        lines.append(f"| {r['gamma0']:g} | {r['source']} | {_time(r['t_train'], r.get('t_train_se'))}{mark(r, 'train')} | "
                     f"{_time(r['t_test'], r.get('t_test_se'))}{mark(r, 'test')} | "
                     f"{_time(r['gap'], r.get('gap_se'))} | {r['status']}{_diverged_text(r)} | {_fmt(r['final_test_loss'])} |"
                     + (f" {_fmt(r.get('final_train_acc'))} / {_fmt(r.get('final_test_acc'))} |" if acc else ""))
    if any(mark(r, q) for r in rep["summary"] for q in ("train", "test")):
        coarse_seen = True
        lines += ["", _COARSE_NOTE]
    if rep.get("heavy_tailed"):
        lines += ["", _heavy("gamma0", rep["heavy_tailed"])]
    lines += _node_check_lines(rep, cfg)
    lines += ["", "## Early warning", "",
              "Drop time: when the test loss has fallen half way, in log scale, from its plateau (its "
              "highest value before its minimum; a spike that is over well before the drop is no plateau) to its floor (at most two decades below); a measure's change time: when it has done half of its "
              "change (for a rate such as the SGD diffusion, when half of its time integral has "
              "accumulated). Both are level crossings interpolated in log time, so on saves that resolve "
              "the curves they do not move with the save grid (docs/conventions.md). lead = t_drop - "
              "t_change > 0: the measure moved "
              "first. A lead is given only where the saves resolve it: at least one saved time between "
              "t_change and t_drop, so that at that save one curve had passed its mark and the other had "
              "not. With both times inside one save interval their order is the interpolation's alone, "
              "and the lead is 'unresolved' (null in report.json, with `lead_note`): save more often "
              "(e.g. train.log_saves) to resolve it. A sampled DMFT's times and leads, and a seed mean's, "
              "carry +- one standard error, by the jackknife over its replicas or seeds (the two "
              "crossings of a lead share their errors; `validation.grokking.jackknife_se`; replicas - 1 "
              "or seeds - 1 degrees of freedom).", "",
              "| gamma0 | source | t_drop | measure | t_change | saves between | lead |",
              "|---|---|---|---|---|---|---|"]
    for r in rep["summary"]:
        ew = r["early_warning"]
        if not ew["drop_observed"]:
            continue          # no drop to warn of
        for name, v in ew.items():
            if name in ("t_drop", "t_drop_se", "drop_observed"):
                continue
            lead = _time(v["lead"], v.get("lead_se")) if v.get("lead") is not None else _lead_text(v)
            change = _time(v["t_change"], v.get("t_change_se")) if v.get("t_change") is not None else "no change"
            # a drop of a curve that never crossed the test threshold is no grokking: said in the row
            nogrok = " (test threshold not reached: no grokking)" if r.get("reached_test") is False else ""
            lines.append(f"| {r['gamma0']:g} | {r['source']} | {_time(ew['t_drop'], ew.get('t_drop_se'))}{nogrok} | "
                         f"{name} | {change} | {v.get('saves_between', '-')} | {lead} |")
    if not any(r["early_warning"]["drop_observed"] for r in rep["summary"]):
        lines.append("| - | no curve has a drop to warn of (plateau at least twice its floor) | - | - | - | - | - |")
    named = {m for r in rep["summary"] if r["early_warning"]["drop_observed"] for m in r["early_warning"]}
    said = [text for m, text in _MEASURES.items() if m in named]
    if said:        # (planted_diffusion stood in a full-batch run's table with no word of what it is)
        lines += ["", "Measures: " + "; ".join(said).format(B=cfg["early_warning"]["batch_size"]) + "."]
    grid = rep.get("early_warning_grid")
    if grid:
        lines += ["", f"Verdict over the runs of the gamma0 x {grid['axis']} diagram with an observed drop "
                  f"({len(grid['runs'])} of {grid['grid_points']} runs): the fraction in which each measure "
                  "leads the drop, with its Wilson 95% interval; runs whose lead the saves do not resolve "
                  "are left out of that measure's fraction and counted apart."
                  + _not_grokked(grid), "",
                  "| measure | leads in | fraction | 95% interval | unresolved (left out) |",
                  "|---|---|---|---|---|"]
        for name, v in grid["verdict"].items():
            lines.append(f"| {name} | {v['leading']} of {v['runs']} | {_fmt(v['fraction'])} | "
                         f"[{_fmt(v['ci95'][0])}, {_fmt(v['ci95'][1])}] | {v.get('unresolved', 0)} |")
    for d in rep["diagrams"]:
        tm = d["times"]
        gap = np.asarray(tm["gap"], dtype=object)
        bad = np.asarray(d.get("diverged_step", np.full(gap.shape, -1)))
        lines += ["", f"## Phase diagram: gamma0 x {d['axis']} ({gap.size} points, {d['seconds']:.1f} s)", "",
                  "Gap (not reached: a threshold was not crossed within the run; diverged by step k: the DMFT "
                  "ran away, its train loss past the run-away bound, or overflowed, by that step):", ""]
        if d["axis"] == "minibatch":
            lines += [f"Each column is minibatch SGD with B of the P = {P} training points a step, "
                      f"on the one sequence of train.batch_seed = {cfg['train']['batch_seed']}"
                      + ("; B = P is full-batch gradient descent." if P in d["values"] else ".")
                      + " The planted diffusion, a measure, is that of SGD with early_warning.batch_size "
                      "in every column.", ""]
        lines += ["| gamma0 \\ " + d["axis"] + " | " + " | ".join(_fmt(v) for v in d["values"]) + " |",
                  "|---" * (len(d["values"]) + 1) + "|"]
        # a gap read from a crossing the saves do not resolve is marked, as the summary's times are
        rough = np.zeros(gap.shape, bool)
        for q in ("train", "test"):
            if tm.get(f"coarse_{q}") is not None:
                rough |= np.asarray(tm[f"coarse_{q}"], dtype=bool).reshape(gap.shape)
        for i, g in enumerate(d["gamma0"]):
            cells = []
            for j, (x, b) in enumerate(zip(gap[i], bad[i])):
                if b >= 0:
                    cells.append(f"diverged by step {int(b)}")
                    continue
                text = _time(x)
                if rough[i, j] and x is not None and np.isfinite(float(x)):
                    text += " (coarse)"
                    coarse_seen = True
                cells.append(text)
            lines.append(f"| {g:g} | " + " | ".join(cells) + " |")
        for o in d["overlay"]:
            lines.append(f"\nFinite width N={o['width']} at gamma0={o['gamma0']:g}, {d['axis']}="
                         f"{_fmt(o[d['axis']])}: network gap {_time(o['gap_network'])} "
                         f"({o['status_network']}) vs theory {_time(o['gap_theory'])} ({o['status_theory']}).")
    dc = rep["decay"]
    if dc:
        lines += ["", f"## Weight decay ({dc.get('testbed', '')}, gamma0 = {dc['gamma0']:g})", "",
                  f"Prediction: {dc.get('prediction', '')}.", ""]
        if dc.get("heavy_tailed"):
            lines += [_heavy("kappa", dc["heavy_tailed"]), ""]
        lines += ["| kappa | t_train | t_test | gap | kappa t_test |", "|---|---|---|---|---|"]
        for i, k in enumerate(dc["weight_decay"]):
            tt = dc["times"]["t_test"][i]
            se = {n: (dc["times"].get(f"{n}_se") or [None] * (i + 1))[i] for n in ("t_train", "t_test", "gap")}
            row = {f"{n}_{q}": (dc["times"].get(f"{n}_{q}") or [None] * (i + 1))[i]
                   for n in ("t", "coarse") for q in ("train", "test")}
            marks = {q: mark(row, q) for q in ("train", "test")}
            coarse_seen = coarse_seen or any(marks.values())
            lines.append(f"| {k:g} | {_time(dc['times']['t_train'][i], se['t_train'])}{marks['train']} | "
                         f"{_time(tt, se['t_test'])}{marks['test']} | "
                         f"{_time(dc['times']['gap'][i], se['gap'])} | {_time(k * tt if tt is not None else None)} |")
        for name in ("t_test", "gap"):
            f = dc.get(f"fit_{name}", {})
            if "exponent" in f:
                err = (f"+- {_fmt(f['half_width_95'])} (95%, t with {f['points'] - 2} dof)"
                       if f.get("half_width_95") is not None else
                       f"+- {_fmt(f['stderr'])} (1 s.e.)" if f.get("stderr") is not None
                       else f"({f.get('stderr_note', 'no error estimate')})")
                if f.get("stderr_times") is not None:
                    err += f"; +- {_fmt(f['stderr_times'])} (1 s.e.) from the times' own errors"
                lines.append(f"\nFit {name} ~ kappa^b: b = {f['exponent']:.3f} {err} over "
                             f"kappa in [{f['range'][0]:g}, {f['range'][1]:g}] ({f['points']} points).")
            elif f:
                lines.append(f"\nFit {name}: {f['error']}")
        fi = dc.get("fit_inverse")
        if fi and "A" in fi:
            lines.append(f"\nFit t_test = A / kappa + B: A = {fi['A']:.3f} +- {fi['se_A']:.3f}, B = "
                         f"{fi['B']:.3g} +- {fi['se_B']:.2g} (1 s.e. each); predicted A = ln(1/gamma0) / L = "
                         f"{fi['predicted_A']:.3f} (L = {fi['degree']}). " + _inverse_text(fi))
        elif fi:
            lines.append(f"\nFit A / kappa + B: {fi['error']}")
    if coarse_seen and not any(mark(r, q) for r in rep["summary"] for q in ("train", "test")):
        lines += ["", _COARSE_NOTE]
    lines += ["", "Figures: " + ", ".join(f"`{os.path.basename(p)}`" for p in rep["figures"].values()),
              "", f"Wall time: {rep['wall_s']:.1f} s."]
    return "\n".join(lines) + "\n"
