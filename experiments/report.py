"""The report of the validate, solve and simulate jobs: Markdown + JSON + figures + raw results.

The verdicts come from `validation.verdicts` (each check against a stated tolerance of
the [check] section); this module writes them, the tables and the figures to disk.
"""

from __future__ import annotations

import json
import os

import numpy as np

from dmft import io as _io
from validation import plots

from .config import to_toml
from .output import draw_figures

__all__ = ["write_report", "write_results", "write_runs", "write_figures", "write_ensemble_figure",
           "write_simulation_report", "verdict_table", "FIGURES"]

FIGURES = {"losses": plots.theory_vs_networks, "lazy_to_rich": plots.lazy_to_rich_summary,
           "width_scaling": plots.width_scaling_plot, "relative_error": plots.relative_error_in_time}


def _fmt(x, nd=4):
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}g}"


def _final_table(sweep):
    rows = []
    for g in sweep.gamma0s:
        sol, lz = sweep.solutions[g], sweep.lazy[g]
        se = (sol.error or {}).get("test_loss")
        row = {"gamma0": g, "dmft_test_loss": float(sol.test_loss[-1]) if sol.test_loss is not None else None,
               "dmft_se": float(se[-1]) if se is not None else None,
               "lazy_test_loss": float(lz.test_loss[-1]) if lz.test_loss is not None else None,
               "dmft_alignment": float(sol.alignment[-1]),
               "dmft_weight_change": float(sol.weight_change["first_layer"][-1]),
               "networks": {}}
        for w in sweep.widths:
            run = sweep.runs[g][w]
            tl = run.test_loss if run.test_loss is not None else run.train_loss
            row["networks"][w] = {"test_loss_mean": float(np.nanmean(tl[:, -1])),
                                  "test_loss_std": float(np.nanstd(tl[:, -1])),
                                  "alignment": float(np.nanmean(run.alignment[:, -1])),
                                  "weight_change": float(np.nanmean(run.weight_change["first_layer"][:, -1])),
                                  "diverged": len(run.info["diverged"])}
        rows.append(row)
    return rows


def _scaling_table(sweep):
    rows = []
    for g in sweep.gamma0s:
        sc = sweep.scaling[g]
        row = {"gamma0": g, "widths": [int(w) for w in sc["widths"]],
               "per_seed_error": sc["per_seed_error"].tolist(), "mean_error": sc["mean_error"].tolist(),
               "test_loss_bias": sc["test_loss_bias"].tolist(), "theory_floor": sc["theory_floor"]}
        for k in ("per_seed_fit", "mean_fit", "bias_fit"):
            f = sc[k]
            row[k] = None if f is None else {"slope": f.slope, "stderr": f.stderr,
                                             "range": list(f.x_range), "points": f.n}
        rows.append(row)
    return rows


def write_results(sweep, out: str) -> list[str]:
    """Raw results: theory/*.npz+json and networks/*.npz+json. Returns the stems."""
    stems = []
    for g in sweep.gamma0s:
        for name, sol in (("dmft", sweep.solutions[g]), ("lazy", sweep.lazy[g])):
            stem = os.path.join(out, "theory", f"{name}_gamma0_{g:g}")
            sol.save(stem)
            stems.append(stem)
        for w in sweep.widths:
            stem = os.path.join(out, "networks", f"gamma0_{g:g}_N{w}")
            sweep.runs[g][w].save(stem)
            stems.append(stem)
    return stems


def write_runs(runs: dict, out: str) -> list[str]:
    """gamma0 -> {width -> Run} saved as networks/gamma0_G_NW.npz + .json."""
    stems = []
    for g, by_width in runs.items():
        for w, run in by_width.items():
            stem = os.path.join(out, "networks", f"gamma0_{g:g}_N{w}")
            run.save(stem)
            stems.append(stem)
    return stems


def write_ensemble_figure(runs: dict, out: str) -> tuple[dict, dict]:
    """figures/networks.png; returns (paths, errors)."""
    return draw_figures({"networks": lambda: plots.ensemble_losses(runs)}, os.path.join(out, "figures"))


def write_simulation_report(runs, model, data, cfg, out, figures):
    """report.md + report.json for network ensembles alone."""
    env = _io.environment()
    rows = []
    for g, by_width in runs.items():
        for w, run in by_width.items():
            tl = run.test_loss if run.test_loss is not None else run.train_loss
            rows.append({"gamma0": g, "width": w, "seeds": run.info["seeds"],
                         "final_loss_mean": float(np.nanmean(tl[:, -1])),
                         "final_loss_std": float(np.nanstd(tl[:, -1])),
                         "alignment": float(np.nanmean(run.alignment[:, -1])),
                         "weight_change": float(np.nanmean(run.weight_change["first_layer"][:, -1])),
                         "diverged": run.info["diverged"], "wall_s": run.info["wall_s"]})
    rep = {"task": data.describe(), "model": model.describe(), "ensembles": rows,
           "figures": {k: os.path.relpath(v, out) for k, v in figures.items()},
           "config": cfg, "environment": env}
    js = os.path.join(out, "report.json")
    with open(js, "w") as fh:
        json.dump(_io.jsonable(rep), fh, indent=2)
    lines = ["# Finite-width network ensembles", "",
             "| gamma0 | width | seeds | final test loss | alignment | weight change | diverged | s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['gamma0']:g} | {r['width']} | {r['seeds']} | {_fmt(r['final_loss_mean'])} +- "
              f"{_fmt(r['final_loss_std'], 2)} | {_fmt(r['alignment'], 3)} | {_fmt(r['weight_change'], 3)} | "
              f"{len(r['diverged'])} | {r['wall_s']:.1f} |" for r in rows]
    lines += ["", "## Figures", ""] + [f"- [{k}]({os.path.relpath(v, out)})" for k, v in figures.items()]
    lines += ["", "## Configuration", "", "```toml", to_toml(cfg).rstrip(), "```", ""]
    md = os.path.join(out, "report.md")
    with open(md, "w") as fh:
        fh.write("\n".join(lines))
    return md, js


def write_figures(sweep, out: str, names=None) -> tuple[dict, dict]:
    """The sweep's figures in out/figures; returns (paths, errors) (a failed figure is reported,
    not raised: the numbers are already on disk)."""
    makers = {name: (lambda fn=fn: fn(sweep)) for name, fn in FIGURES.items()
              if (names is None or name in names) and (sweep.widths or name == "losses")}
    return draw_figures(makers, os.path.join(out, "figures"))


def write_report(sweep, cfg: dict, out: str, verdicts: list[dict], figures: dict,
                 environment: dict | None = None) -> tuple[str, str]:
    """report.md and report.json in `out`."""
    environment = environment or _io.environment()
    final = _final_table(sweep)
    scaling = _scaling_table(sweep) if sweep.widths else []
    data = sweep.data
    report = {"task": data.describe(), "model": sweep.model.describe(), "gamma0": sweep.gamma0s,
              "widths": sweep.widths, "seeds": sweep.seeds, "checks": verdicts, "final": final,
              "width_scaling": scaling, "timings": sweep.timings,
              "figures": {k: os.path.relpath(v, out) for k, v in figures.items()},
              "config": cfg, "environment": environment,
              "theory_info": {f"{g:g}": {k: v for k, v in sweep.solutions[g].info.items()
                                          if k not in ("config", "residuals")} for g in sweep.gamma0s}}
    json_path = os.path.join(out, "report.json")
    with open(json_path, "w") as fh:
        json.dump(_io.jsonable(report), fh, indent=2)

    m = sweep.model
    lines = [
        "# Lazy-to-rich validation: DMFT against finite networks", "",
        f"Task `{data.meta.get('task', 'custom')}` with D = {data.D}, P = {data.P}, P* = {data.P_test}, "
        f"C = {data.C}; two-layer `{m.activation.name}` network, {m.readout} readouts, "
        f"{'centered' if m.centered else 'not centered'}. gamma0 in {sweep.gamma0s}; networks of width "
        f"{sweep.widths} with {sweep.seeds} seeds each, trained in DMFT units (t = steps x eta0). "
        f"Theory {sweep.timings['theory_s']:.0f} s, networks {sweep.timings['networks_s']:.0f} s "
        f"on {environment.get('backend', '?')}.", "",
        "## Checks", "", "| check | value | tolerance | verdict | detail |", "| --- | --- | --- | --- | --- |"]
    for v in verdicts:
        lines.append(f"| {v['name']} | {_fmt(v['value'])} | {v['tolerance'] or '-'} | **{v['verdict']}** | "
                     f"{v['detail']} |")
    lines += ["", "## Final values (last saved time)", ""]
    head = "| gamma0 | DMFT test loss | lazy | " + " | ".join(f"N={w}" for w in sweep.widths) + \
           " | DMFT alignment | DMFT weight change |"
    lines += [head, "|" + " --- |" * (5 + len(sweep.widths))]
    for r in final:
        nets = " | ".join(f"{_fmt(r['networks'][w]['test_loss_mean'])} +- {_fmt(r['networks'][w]['test_loss_std'], 2)}"
                          for w in sweep.widths)
        se = f" +- {_fmt(r['dmft_se'], 2)}" if r["dmft_se"] else ""
        lines.append(f"| {r['gamma0']:g} | {_fmt(r['dmft_test_loss'])}{se} | {_fmt(r['lazy_test_loss'])} | "
                     f"{nets}{' | ' if nets else ''}{_fmt(r['dmft_alignment'], 3)} | "
                     f"{_fmt(r['dmft_weight_change'], 3)} |")
    if scaling:
        lines += ["", "## Finite-width scaling (prediction error against width, fitted)", "",
                  "| gamma0 | per-seed slope | ensemble-mean slope | test-loss bias slope | widths | DMFT error floor |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in scaling:
            def s(f):
                return "-" if f is None else f"{f['slope']:+.2f} +- {f['stderr']:.2f}"
            lines.append(f"| {r['gamma0']:g} | {s(r['per_seed_fit'])} | {s(r['mean_fit'])} | "
                         f"{s(r['bias_fit'])} | {r['widths'][0]}..{r['widths'][-1]} | "
                         f"{_fmt(r['theory_floor'], 2)} |")
        lines += ["", "Per-seed errors follow the N^-1/2 fluctuations of Bordelon & Pehlevan (2023); the "
                  "ensemble mean mixes the N^-1 bias with seed noise of order (seeds N)^-1/2."]
    lines += ["", "## Figures", ""]
    lines += [f"- [{k}]({os.path.relpath(v, out)})" for k, v in figures.items()]
    lines += ["", "## Configuration", "", "```toml", to_toml(cfg).rstrip(), "```", "",
              "## Environment", "", "```", json.dumps(environment, indent=1), "```", ""]
    md_path = os.path.join(out, "report.md")
    with open(md_path, "w") as fh:
        fh.write("\n".join(lines))
    return md_path, json_path


def verdict_table(verdicts: list[dict]) -> str:
    """A short console table, one line per check."""
    width = max(len(v["name"]) for v in verdicts)
    rows = [f"{'check':<{width}}  {'value':>9}  {'tolerance':>14}  verdict"]
    for v in verdicts:
        rows.append(f"{v['name']:<{width}}  {_fmt(v['value']):>9}  {str(v['tolerance'] or '-'):>14}  {v['verdict']}")
    return "\n".join(rows)
