"""The grok job's Markdown report."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["markdown"]


def _fmt(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "n/a" if not np.isfinite(x) else f"{x:.4g}"


def markdown(rep: dict, cfg: dict) -> str:
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
