"""The `dmft dln` job's Markdown report."""

from __future__ import annotations

import os

import numpy as np

from dmft import deep_linear as dl
from validation.deep_linear import SETTLED, SPREAD_Z

from ..output import precision_line


def _cell(text) -> str:
    """Text for a markdown table cell (a | would split it)."""
    return str(text).replace("|", "\\|")

__all__ = ["markdown", "unbalanced_note"]


def _f(x, nd=4):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "n/a" if not np.isfinite(x) else f"{x:.{nd}g}"


def _spread_cell(row) -> str:
    """The modes table's spread column: the compared ratio, or why there is none."""
    if row.get("scattered"):
        return "SDE collapsed, networks not"
    if row.get("spread_compared", True):
        return _ratio(row)
    return "too few seeds" if row.get("spread_note") else "not compared"


def _ratio(row) -> str:
    """A compared spread ratio, with the band it was judged against (the configured band widened
    by the ratio's sampling error) where the row records one."""
    band = row.get("spread_band")
    return _f(row["std_ratio"], 3) + (f" [{_f(band[0], 3)}, {_f(band[1], 3)}]" if band else "")


def _modes(idx) -> str:
    return ("mode " if len(idx) == 1 else "modes ") + ", ".join(str(i + 1) for i in idx)


def _layer_leads(p: dict, sigma: float) -> str:
    """What the table says of the layer scalar's diffusion peak against the half-learning time,
    mode by mode (docs/derivations.md derives a lead without label noise; with it, or with
    decay, a mode may lag or have no interior peak)."""
    n = len(p["t_peak"])
    why = p.get("no_peak_layer") or [""] * n
    lead = [float("nan") if x is None else float(x) for x in p["lead_half_layer"]]
    leads = [i for i in range(n) if not why[i] and np.isfinite(lead[i]) and lead[i] > 0]
    lags = [i for i in range(n) if not why[i] and np.isfinite(lead[i]) and lead[i] <= 0]
    none = [i for i in range(n) if i not in leads and i not in lags]
    if len(leads) == n:
        return "the diffusion of each layer's scalar leads the half-learning time, for every mode."
    parts = []
    if leads:
        parts.append(f"leads the half-learning time for {_modes(leads)}")
    if lags:
        parts.append(f"does not lead it for {_modes(lags)} (lead " + ", ".join(_f(lead[i], 3) for i in lags) + ")")
    if none:
        parts.append(f"has no peak time for {_modes(none)}")
    noise = (f" (docs/derivations.md derives the lead without label noise; here sigma = {sigma:g})"
             if sigma > 0 else "")
    return "the diffusion of each layer's scalar " + "; ".join(parts) + noise + "."


# a relative cross-mode shift below this is rounding (float64: the sigma = 0 study's are ~1e-31), shown as 0
CROSS_ROUNDING = 1e-12


def unresolved_note(stair: dict) -> str:
    """"; not checked between modes 1 and 2 (...)" for the staircase's consecutive steps whose learning
    order the seeds do not resolve (`vdl.staircase`'s "unresolved", and its "unresolved_why"), else "" (runs
    saved before it: "")."""
    pairs = stair.get("unresolved") or []
    if not pairs:
        return ""
    why = stair.get("unresolved_why") or ("their median learning times are within the seeds' spread: learned "
                                          "together, in either order")
    return "; not checked between " + ", ".join(f"modes {a + 1} and {b + 1}" for a, b in pairs) + f" ({why})"


def unbalanced_note(r: dict, init_scale=None) -> str:
    """Why D(pi) need not describe a random start far from balanced ("" where it is near)."""
    u = r.get("unbalanced")
    if not u or not u.get("far"):
        return ""
    at = f" at init_scale {init_scale:g}" if init_scale else ""
    return (f"D(pi) assumes aligned, balanced layers; this random start{at} is not balanced (median "
            f"|W_(l+1)^T W_(l+1) - W_l W_l^T|_F = {u['initial']:.3g} at t = 0, {u['relative']:.2g} x the "
            "layer scale s_max^(2/L), and gradient flow conserves it), so the measured diffusion need not "
            "follow D(pi)")


def _times(values) -> str:
    """Learning times, "not learned" for a mode no median crossing was found for."""
    return "[" + ", ".join(_f(x) if x is not None and np.isfinite(float(x)) else "not learned" for x in values) + "]"


def _teacher(studies) -> str:
    """The teacher once, with every label-noise value of the studies."""
    d = studies[0]["data"]
    s = d.get("singular_values", []) if isinstance(d, dict) else []
    where = f"P = {d['P']} whitened points" if isinstance(d, dict) and d.get("P") else "online data"
    sigmas = ", ".join(f"{r['sigma']:g}" for r in studies)
    if not isinstance(d, dict):
        return f"{d}; label noise sigma = {sigmas}"
    return (f"d_in = {d['d_in']}, d_out = {d['d_out']}, singular values {[round(x, 4) for x in s]}, {where}, "
            f"label noise sigma = {sigmas} (one study each)")


def _networks_precision(tr: dict, env: dict) -> str:
    """The networks' own precision where it is not the job's: train.dtype = 'float32' under
    --x64 trains them in float32 while the theory runs in float64 (the report said "Arithmetic:
    float64" alone)."""
    if tr.get("dtype") == "float32" and env.get("x64"):
        return " The networks trained in float32 (train.dtype); the theory in float64."
    return ""


def markdown(rep: dict) -> str:
    cfg = rep["config"]
    tr, m, chk = cfg["train"], cfg["model"], cfg["check"]
    lines = ["# Deep linear networks under SGD: per-mode theory against networks", "",
             f"Depth L = {m['depth']}, width {m['width']}, init {m['init']}; SGD with eta = {tr['eta0']:g}, "
             f"batch size {tr['batch_size']}, {tr['steps']} steps, {tr['seeds']} networks"
             + (f", weight decay kappa = {tr['weight_decay']:g} (theory and networks; the modes settle at "
                f"the fixed points, not the targets; the staircase ensemble trains without decay)"
                if tr.get("weight_decay") else "") + "; "
             f"teacher: {_teacher(rep['studies'])}. {precision_line(rep.get('environment', {}))}"
             + _networks_precision(tr, rep.get("environment", {})), ""]
    if rep.get("rechecked"):
        changed = ", ".join(rep["rechecked"].get("differing") or []) or "no key"
        lines += [f"Re-checked: these verdicts judge the saved runs of an earlier run under a changed [check] "
                  f"section ({changed}); nothing was computed again (times are that run's).", ""]
    sde = m["init"] == "aligned"
    cross = bool(cfg.get("theory", {}).get("cross_modes"))
    lines += [("Theory: gradient flow per mode (Saxe et al.), the per-mode SDE with the diffusion derived in "
               "docs/derivations.md (section 6), its stationary law." if sde else
               "Theory: the diffusion D(pi) of the per-mode reduction (docs/derivations.md, section 6) and its "
               "stationary law; no per-mode SDE ran (it follows an aligned, balanced start, and this start is "
               "random).") + " Time t = steps x eta. A comparison passes "
              "within its statistical tolerance or within its effect-size tolerance ([check] effect, ks_max): "
              + ("the SDE and the laws hold the cross-mode drift (theory.cross_modes: the O(eta/B) shift of the "
                 "means that the noise off the mode directions makes; docs/derivations.md, \"The cross-mode "
                 "drift\")." if cross else
                 "with a thousand networks the statistics resolve the reduction's known O(eta/B) cross-mode shift "
                 "(docs/derivations.md), which the effect size says is small; theory.cross_modes = true adds "
                 "it to the SDE and the laws."), "",
              *([] if not sde else [
              f"A mode's mean passes by one of three rules, named in the table's \"passed by\" column: "
              f"|z| <= {chk['z_max']:g} ([check] z_max), |difference| / SDE spread <= {chk['effect']:g} "
              f"([check] effect), or |difference| / target <= {chk['target_rel']:g} ([check] target_rel: an "
              f"ensemble collapsed at its target, or shrunk below its start by weight decay, has no spread to "
              f"compare with; not one on a plateau, small and growing); and its spread ratio must lie "
              f"in [{chk['spread_low']:g}, {chk['spread_high']:g}], widened by {SPREAD_Z:g} sampling errors of "
              "the ratio for the numbers of seeds and paths (the band applied is in brackets in the table), "
              f"wherever the SDE's spread exceeds {chk['target_rel']:g} x the target (\"not compared\" below it; "
              f"there the networks' spread must be below {chk['spread_high']:g} x {chk['target_rel']:g} x the target "
              "too, or the row FAILs: \"SDE collapsed, networks not\"). A mean passes by z only within the target "
              "and three SDE spreads of it.",
              ""]),
              "## Verdicts", "", "| check | verdict | detail |", "|---|---|---|"]
    lines += [f"| {_cell(c['name'])} | **{c['verdict']}** | {_cell(c['detail'])} |" for c in rep["checks"]]
    for r in rep["studies"]:
        lines += ["", f"## Label noise sigma = {r['sigma']:g}", "",
                  f"Target strengths (effective): {[round(x, 4) for x in r['effective_s']]}"
                  + (f"; fixed points with decay: {_times(r['fixed_points'])}"
                     if r.get("fixed_points") is not None else "") + f"; networks {r['networks_s']:.1f} s stepping."]
        div = [f"{r[k]} {what}" for k, what in (("networks_diverged", "networks"), ("sde_diverged", "SDE paths"))
               if r.get(k)]
        if div:
            lines += ["", f"Diverged (left out of the comparisons): {', '.join(div)}."]
        ly = r.get("sgd_lyapunov")
        if ly and ly.get("unstable"):       # (dl.sgd_lyapunov; networks.train warned before compute)
            lines += ["", f"SGD is unstable at the target minimum at this eta0 and batch size: the linearized "
                      f"per-batch step's top Lyapunov exponent is {ly['exponent']:.3g} +- {ly['stderr']:.2g} per "
                      "step (`dl.sgd_lyapunov`), so typical networks run away from the target (the per-mode SDE "
                      "does not see this)."]
        shift = r.get("cross_shift")
        if shift:            # (dl.cross_shift; mode_sde warns where it is large)
            held = "which this SDE holds (theory.cross_modes)" if cross else "which this per-mode SDE leaves out"
            # (without label noise the shift is 0 but for rounding, 1e-31 relative, which read "lowers each
            # mode's mean by 2.6e-30%, 7.4e-30%, ...": a rounding error reported as an effect)
            shown = ["0" if abs(x) < CROSS_ROUNDING else f"{100 * abs(x):.2g}%" for x in shift]
            lines += ["", (f"The noise off the mode directions lowers each mode's mean by {', '.join(shown)} of its "
                           f"target at first order (`dl.cross_shift`), {held}" if set(shown) != {"0"} else
                           "The noise off the mode directions does not shift the modes' means at first order "
                           "(`dl.cross_shift`: 0 to rounding)")
                      + (": beyond first order, neither SDE describes the networks" if cross
                         and max(abs(x) for x in shift) > dl.CROSS_FIRST_ORDER else "") + "."]
        if r.get("sde_all_diverged"):
            d = r["sde_all_diverged"]
            lines += ["", f"Every SDE path diverged: the first at step {d['step']} (t = {_f(d['t'])}), where "
                      f"{d['cause']} went non-finite; there is no theory ensemble to compare the networks with."]
        if r.get("modes"):
            lines += ["", "Modes, networks vs SDE (mean +- std):", "",
                      "| mode | t | networks | SDE | z | difference / spread | difference / target | std ratio "
                      "| passed by | verdict |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            lines += [f"| {x['mode'] + 1} | {_f(x['t'])} | {_f(x['networks_mean'])} +- {_f(x['networks_std'], 3)} | "
                      f"{_f(x['sde_mean'])} +- {_f(x['sde_std'], 3)} | {_f(x['z'], 3)} | {_f(x['effect'], 2)} | "
                      f"{_f(x.get('target_rel'), 2)} | "
                      f"{_spread_cell(x)} | "
                      f"{x.get('mean_rule') or '-'} | {x['verdict']} |" for x in r["modes"]]
        lines += ["", "Diffusion along each mode, measured / predicted D(pi): the pooled ratio (sum over seeds and "
                  "times of the measured over that of the predicted), its standard error (seeds as the independent "
                  "units), the band it is judged against (the configured band widened by "
                  f"{SPREAD_Z:g} standard errors on a log scale, read as Student t with seeds - 1 degrees of "
                  "freedom), and the 10% and 90% points of single records' ratios:", "",
                  "| mode | pooled ratio | std. error | band applied | 10% | 90% | verdict |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {x['mode'] + 1} | {_f(x['ratio'], 3)} | {_f(x.get('stderr'), 2)} | "
                  + (f"[{_f(x['band'][0], 3)}, {_f(x['band'][1], 3)}]" if x.get("band") else "-")
                  + f" | {_f(x['p10'], 3)} | {_f(x['p90'], 3)} | {x['verdict']} |" for x in r["diffusion"]]
        if any(x.get("decays") for x in r["diffusion"]):
            lines += ["", "SKIP: a mode that weight decay switches off stays near 0, where its own D vanishes "
                      "and what is measured is the noise leaking from the other modes (which the per-mode "
                      "reduction drops)."]
        note = unbalanced_note(r, m.get("init_scale"))
        if note:
            lines += ["", f"Not balanced: {note} (the ratios above measure that departure, not the reduction's "
                      "accuracy)."]
        if any(x.get("swamped") is not None for x in r["diffusion"]):
            lines += ["", "SKIP: a mode whose D is below 1% of the largest mode's wherever it has one of its own (a "
                      "mode still at its saddle while the others are learned, or one far weaker than the strongest) "
                      "has nothing of its own to measure: what is measured is the noise leaking from the other "
                      "modes, which the per-mode reduction drops; a mode still at its saddle is judged by a longer "
                      "run. (Records are compared only where a mode's D is at least 1% of its own largest and 1% "
                      "of the largest mode's at that time.)"]
        if any(x.get("no_noise") for x in r["diffusion"]):
            lines += ["", "SKIP: full-batch steps (batch size = P) have no gradient noise: D = 0, measured and "
                      "predicted alike."]
        if r.get("diffusion_peaks"):
            p = r["diffusion_peaks"]
            lines += ["", "When the diffusion peaks on the gradient-flow path (its interior maximum, which may be a local one "
                      "below a plateau D rises to later; lead > 0: before):", "",
                      "| mode | t_peak | t_half | t_90 | lead over t_half | lead over t_90 | layer scalar's lead over t_half |",
                      "|---|---|---|---|---|---|---|"]
            n = len(p["t_peak"])
            why, why_layer = p.get("no_peak") or [""] * n, p.get("no_peak_layer") or [""] * n
            for i in range(n):
                # a mode without an interior maximum of D has no peak time: its reason, never a number
                peak = _cell(why[i]) if why[i] else _f(p["t_peak"][i])
                leads = ("-", "-") if why[i] else (_f(p["lead_half"][i], 3), _f(p["lead_90"][i], 3))
                layer = "-" if why_layer[i] else _f(p["lead_half_layer"][i], 3)
                lines.append(f"| {i + 1} | {peak} | {_f(p['t_half'][i])} | {_f(p['t_90'][i])} | "
                             f"{leads[0]} | {leads[1]} | {layer} |")
            if any(why_layer):
                lines += ["", "The layer scalar's diffusion (its lead is \"-\" above): " + "; ".join(
                    f"mode {i + 1}: {w}" for i, w in enumerate(why_layer) if w) + "."]
            lines += ["", "In function space the diffusion along a mode is (without label noise exactly) "
                      "proportional to its squared speed, so it peaks with the transition, not before it; "
                      + _layer_leads(p, r["sigma"])]
        if r.get("stationary"):
            lines += ["", "Stationary laws (late times):", "",
                      "| mode | KS | critical (1%) | mean | density mean | variance | Boltzmann T | verdict |",
                      "|---|---|---|---|---|---|---|---|"]
            lines += [f"| {x['mode'] + 1} | {_f(x['ks'], 3)} | {_f(x['critical'], 3)} | {_f(x['mean'])} | "
                      f"{_f(x['density_mean'])} | {_f(x['var'], 3)} | {_f(x['boltzmann_T'], 3)} | {x['verdict']} |"
                      for x in r["stationary"]]
            h = np.nan_to_num(np.asarray(r.get("step_rates") or [0.0], dtype=float))    # (older reports: none)
            if h.max() > dl.LAW_STEP_WARN:    # (dl.step_rates; the laws warn too)
                lines += ["", f"These laws are the continuous-time SDE's: at this eta0 the step times mode "
                          f"{int(h.argmax()) + 1}'s restoring rate is {h.max():.3g}, where the step alone makes "
                          "SGD's variance about " + (f"{1 / (1 - h.max() / 2):.3g} times" if h.max() < 2 else
                                                    "unbounded against") + " the law's (1 / (1 - h/2)); a KS "
                          "verdict can pass that: compare the variance with the Boltzmann T above."]
            decays = [str(x["mode"] + 1) for x in r["stationary"] if x.get("decays") and not x.get("no_fixed_point")]
            if decays:       # (named: a mode SKIPped as still being learned read this reason too)
                lines += ["", f"SKIP (mode{'s' if len(decays) > 1 else ''} {', '.join(decays)}): the gradient "
                          "flow decays to 0 from the start (below the decay's "
                          "barrier, docs/derivations.md section 6): the law of the well around its fixed point "
                          "does not describe it (with label noise SGD may still carry it over the barrier)."]
            none = [str(x["mode"] + 1) for x in r["stationary"] if x.get("no_fixed_point")]
            if none:         # (no barrier there: the decay leaves the mode no well at all)
                lines += ["", f"SKIP (mode{'s' if len(none) > 1 else ''} {', '.join(none)}): the weight decay "
                          "leaves the mode no fixed point (p^(1 - 2/L) (s - p) stays below kappa for every p, "
                          "docs/derivations.md section 6): it decays to 0 from any start, and no stationary law "
                          "around a fixed point describes it."]
            settling = [x for x in r["stationary"] if x.get("settling") is not None]
            if settling:
                lines += ["", "SKIP: still being learned in the window: " + ", ".join(
                    f"mode {x['mode'] + 1}'s gradient flow reaches {100 * SETTLED:g}% of its fixed point at "
                    f"t = {_f(x['settling'])}" for x in settling)
                          + f", after the window's first save (t = {_f(settling[0]['after'])}): run longer or raise "
                          "theory.stationary_after."]
        elif r.get("stationary_error"):
            lines += ["", f"No stationary law to compare with: {r['stationary_error']}"]
        elif r.get("point_mass"):
            pm = r["point_mass"]
            lines += ["", f"Without label noise the stationary law is the point mass at the target: at "
                      f"t = {_f(pm['t'])} the largest distance of a mode to it is "
                      f"{_f(pm['max_abs_distance_to_target'], 3)}"
                      + (f" (a mode's median is still {_f(pm['max_rel_median_distance'], 2)} of its target away: "
                         "not there yet, still being learned)." if pm.get("max_rel_median_distance", 0) > 0.1 else
                         ".")]
        if r.get("staircase"):
            s = r["staircase"]
            # (no seed learning every mode left the in-order share 0 of 0, which read "0% of the seeds that
            # learn every mode": as if such seeds had learned out of order)
            share = (f"{100 * s['fraction_of_seeds_in_order']:.0f}% of the seeds that learn every mode within the "
                     f"run, {100 * s['fraction_all_learned']:.0f}% of seeds" if s["fraction_all_learned"] > 0 else
                     "no seed learns every mode within the run, so no seed's order is judged")
            lines += ["", f"Saddle-to-saddle (random init, scale {_f(s['init_scale'], 3)}): modes learned in the "
                      f"predicted order: {s['order_ok']} ({share}{unresolved_note(s)}); "
                      f"median learning times (mode 1 first, as every per-mode list): {_times(s['learning_times'])}."
                      + (f" {s['verdict']}: {s['reason']}." if s.get("reason") else "")]
            if s["plateaus"]:
                lines += ["", "| after mode | t | loss | predicted plateau | rel. error | verdict |",
                          "|---|---|---|---|---|---|"]
                lines += [f"| {p['after_mode'] + 1} | {_f(p['t'])} | "
                          + (f"{_f(p['loss'])} | {_f(p['plateau'])} | {_f(p['rel_error'], 3)} | {p['verdict']} |"
                             if p["loss"] is not None else
                             f"unresolved | {_f(p['plateau'])} | - | SKIP: {p['note']} |") for p in s["plateaus"]]
        lines += ["", "Figures: " + ", ".join(f"`{os.path.basename(v)}`" for v in r["figures"].values())]
        skipped = dict(r.get("figures_not_drawn") or {})
        if (r.get("staircase") or {}).get("figure_not_drawn"):
            skipped[f"staircase_sigma_{r['sigma']:g}"] = r["staircase"]["figure_not_drawn"]
        if skipped:
            lines += ["", "Not drawn: " + ", ".join(f"`{k}` ({v.removeprefix('not drawn: ')})"
                                                    for k, v in skipped.items()) + "."]
    lines += ["", f"Wall time {rep['wall_s']:.1f} s.", ""]
    return "\n".join(lines)
