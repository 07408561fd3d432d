"""Figures of comparisons in DMFT time units; each function returns a matplotlib Figure.

Figures are built on `matplotlib.figure.Figure`, never through pyplot: importing or
calling this module changes no backend and keeps no global figure state.

Figures of a `validation.LazyToRich` sweep: `theory_vs_networks` (losses against
time; also takes one or more trajectories, e.g. a `dmft.Solution` and a
`networks.Run`), `lazy_to_rich_summary` (final values against gamma0),
`width_scaling_plot` (error against width, fitted) and `relative_error_in_time`;
`ensemble_losses` for network ensembles alone. Grokking figures are in
`validation.plots_grokking`, deep linear networks' in `validation.plots_deep_linear`.
"""

from __future__ import annotations

import numpy as np

from dmft.errors import InputError
from dmft.plotting import BAND_NOTE, log_ylim_from_lines, new_figure, seed_mean_line, seed_stats, trajectory_figure

from .inputs import theory_name

__all__ = ["theory_vs_networks", "lazy_to_rich_summary", "width_scaling_plot",
           "relative_error_in_time", "ensemble_losses"]


def _colors(n):
    return [f"C{i % 10}" for i in range(n)]


def _lazy_label(sweep) -> str:
    """"lazy limit", saying so when the sweep's runs decay weights: the lazy curve is then the
    no-decay closed form, not the lazy limit of the decayed runs."""
    wd = getattr(getattr(sweep, "schedule", None), "weight_decay", 0.0) or 0.0
    return "lazy limit (no weight decay)" if wd > 0 else "lazy limit"


def _check_sweep(sweep, name="sweep"):
    """An InputError naming `name` unless it is a `validation.LazyToRich` sweep."""
    if not all(hasattr(sweep, a) for a in ("gamma0s", "widths", "solutions", "runs")):
        raise InputError(f"{name}: need a validation.LazyToRich sweep, got {type(sweep).__name__}")


def theory_vs_networks(sweep, *others, labels=None):
    """Train and test loss against time: DMFT (solid), mean of the widest networks
    (dotted, band = seed spread), lazy closed form (black dashed), one colour per gamma0.

    Also accepts trajectories instead of a sweep: `theory_vs_networks(solution, run, ...)`
    draws them on the same axes (`dmft.Trajectory.plot`)."""
    if sweep is None:
        raise InputError("sweep: need a validation.LazyToRich sweep or one or more trajectories, got None")
    if not hasattr(sweep, "gamma0s"):
        return trajectory_figure((sweep,) + others, labels=labels)
    if others or labels is not None:
        raise InputError(f"others and labels are for trajectories, not a sweep: got {len(others)} other "
                         f"argument(s) and labels={labels!r} with a LazyToRich sweep (they would be ignored)")
    fig, axes = new_figure(1, 2, size=(11, 4.2), sharex=True)
    wmax = max(sweep.widths) if sweep.widths else None
    theory = theory_name(sweep)
    for c, g in zip(_colors(len(sweep.gamma0s)), sweep.gamma0s):
        sol = sweep.solutions[g]
        t = sol.t
        m = t > 0
        for ax, th, name in ((axes[0], sol.train_loss, "train_loss"), (axes[1], sol.test_loss, "test_loss")):
            if th is None:
                continue
            ax.plot(t[m], th[m], color=c, lw=1.8, label=f"gamma0 = {g:g} ({theory})")
            if wmax is not None:
                run = sweep.runs[g][wmax]
                vals = getattr(run, name)
                if vals is not None:
                    ax.set_yscale("log")
                    seed_mean_line(ax, t, m, vals, label=f"gamma0 = {g:g}, N = {wmax} (seed mean)",
                                   band=True, band_alpha=0.15, color=c, ls=":", lw=1.8)
    lz = sweep.lazy[sweep.gamma0s[0]]
    axes[0].plot(lz.t[lz.t > 0], lz.train_loss[lz.t > 0], "k--", lw=1.2, label=_lazy_label(sweep))
    if lz.test_loss is not None:
        axes[1].plot(lz.t[lz.t > 0], lz.test_loss[lz.t > 0], "k--", lw=1.2)
    for ax, name in zip(axes, ("train", "test")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("t (DMFT time = steps x eta0)")
        ax.set_ylabel(f"{name} loss (mean squared error)")
        ax.grid(True, which="both", alpha=0.3)
        log_ylim_from_lines(ax)
    if wmax is not None:
        axes[1].set_title(f"dotted: mean of {sweep.seeds} networks of width {wmax} ({BAND_NOTE})",
                          fontsize=9)
    axes[0].legend(fontsize=8)
    return fig


def lazy_to_rich_summary(sweep):
    """Final test loss, NTK-target alignment and first-layer weight change against gamma0:
    DMFT line, lazy limit, network mean +- std per width (ddof=1; no bar under two finite seeds)."""
    _check_sweep(sweep)
    fig, axes = new_figure(1, 3, size=(14, 4.2))
    g = np.array(sweep.gamma0s)
    th = {"test": [sweep.solutions[x].test_loss[-1] if sweep.solutions[x].test_loss is not None
                   else np.nan for x in g],
          "align": [sweep.solutions[x].alignment[-1] for x in g],
          "wc": [sweep.solutions[x].weight_change["first_layer"][-1] for x in g]}
    lz = [sweep.lazy[x].test_loss[-1] if sweep.lazy[x].test_loss is not None else np.nan for x in g]
    labels = ("final test loss", "final NTK-target alignment", "final relative first-layer change")
    for ax, key, ylabel in zip(axes, ("test", "align", "wc"), labels):
        ax.plot(g, th[key], "k-o", lw=2, label=theory_name(sweep), zorder=5)
        if key == "test":
            ax.plot(g, lz, "k--", lw=1, label=_lazy_label(sweep))
        for i, (c, w) in enumerate(zip(_colors(len(sweep.widths)), sweep.widths)):
            vals, finite = [], []
            for x in g:
                run = sweep.runs[x][w]
                v = {"test": run.test_loss, "align": run.alignment,
                     "wc": run.weight_change["first_layer"]}[key]
                if v is None:
                    vals.append((np.nan, np.nan))
                    continue
                mean, std, n = seed_stats(np.asarray(v, float)[:, -1])
                vals.append((mean, std))
                finite.append((int(n), np.asarray(v).shape[0]))
            vals = np.array(vals, dtype=float)
            shift = g * (1 + 0.03 * (i - len(sweep.widths) / 2))
            lost = [(n, s) for n, s in finite if n < s]
            note = f" (fewest finite: {min(lost)[0]}/{lost[0][1]} seeds)" if lost else ""
            bar = np.isfinite(vals[:, 1])             # no bar where fewer than two seeds are finite
            label = f"N = {w}{note}"
            if bar.any():
                ax.errorbar(shift[bar], vals[bar, 0], yerr=vals[bar, 1], fmt="o", ms=3, color=c, capsize=2,
                            label=label)
                label = None
            if (~bar).any():
                ax.plot(shift[~bar], vals[~bar, 0], "o", ms=3, color=c, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("gamma0 (richness; lazy on the left)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_yscale("log")
    log_ylim_from_lines(axes[0])
    axes[0].legend(fontsize=7)
    fig.suptitle(f"lazy to rich at t = {sweep.solutions[g[0]].t[-1]:g} (networks: {sweep.seeds} seeds per "
                 "width; bars: +-1 std over seeds)")
    return fig


def width_scaling_plot(sweep):
    """Prediction error against width (log-log) with fitted lines, per gamma0:
    per-seed error (circles, expected slope -1/2; open: with the DMFT's own error taken out, as
    fitted) and ensemble-mean error (squares); the DMFT's own standard error dotted where known
    (NaN with one replica: said on the panels)."""
    _check_sweep(sweep)
    fig, axes = new_figure(1, 2, size=(11, 4.2))
    unknown, drawn = [], False
    for c, g in zip(_colors(len(sweep.gamma0s)), sweep.gamma0s):
        sc = sweep.scaling[g]
        w = sc["widths"]
        for ax, key, fit_key, marker in ((axes[0], "per_seed_error", "per_seed_fit", "o"),
                                         (axes[1], "mean_error", "mean_fit", "s")):
            fit = sc[fit_key]
            label = f"gamma0 = {g:g}" + (f": slope {fit.slope:+.2f}" if fit else "")
            ax.plot(w, sc[key], marker, color=c, label=label)
            floor = sc["theory_floor"]
            if key == "per_seed_error" and floor > 0 and "per_seed_error_net" in sc:
                # what is fitted, as rings a size larger: drawn the points' size, they hid behind them
                # where the DMFT's error is immaterial, and the title's "open circles" showed nothing
                ax.plot(w, sc["per_seed_error_net"], marker, color=c, mfc="none", ms=10)
            if fit:
                ax.plot(w, fit.predict(w), "-", color=c, lw=1)
            if floor > 0:
                ax.axhline(floor, color=c, ls=":", lw=0.8)
                drawn = True
        if not np.isfinite(sc["theory_floor"]):
            unknown.append(f"{g:g}")
    zero = any(getattr(c, "summary", {}).get("absolute_errors") for g in sweep.gamma0s
               for c in sweep.scaling[g]["comparisons"].values())
    for ax, title in zip(axes, ("per-seed error (fluctuations ~ N^-1/2)",
                                "error of the ensemble mean (bias ~ N^-1, noise ~ N^-1/2)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width N")
        ax.set_ylabel("RMS prediction error, time average (absolute: targets all zero)" if zero else
                      "RMS prediction error / RMS target (time average)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        if unknown:
            ax.text(0.02, 0.02, f"DMFT standard error unknown (one replica; gamma0 = {', '.join(unknown)})",
                    transform=ax.transAxes, fontsize=7, ha="left", va="bottom", color="0.3")
    fig.suptitle(f"finite-width departure from the {theory_name(sweep)}" +
                 (" (dotted: the DMFT's own standard error; rings: with it taken out, what is fitted)" if drawn else ""))
    return fig


def _theory_relative_se(sol):
    """The DMFT's standard error of its (test, else train) loss relative to that loss, over time;
    None for exact methods (no error estimate)."""
    err = sol.error or {}
    use_test = sol.test_loss is not None and "test_loss" in err
    se = err.get("test_loss" if use_test else "train_loss")
    if se is None:
        return None
    loss = sol.test_loss if use_test else sol.train_loss
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(np.asarray(se)) / np.abs(np.asarray(loss))
    return rel if np.any(np.isfinite(rel) & (rel > 0)) else None


def relative_error_in_time(sweep):
    """Relative test-loss error (train loss without test targets; the y label says which) of the
    ensemble mean against time, one panel per gamma0, with the DMFT's own relative standard error
    (dashed): differences below it are within the theory's noise."""
    _check_sweep(sweep)
    n = len(sweep.gamma0s)
    fig, axes = new_figure(1, n, size=(3.6 * n, 3.4), squeeze=False)
    kinds = set()
    for ax, g in zip(axes[0], sweep.gamma0s):
        for c, w in zip(_colors(len(sweep.widths)), sweep.widths):
            comp = sweep.scaling[g]["comparisons"][w]
            loss = comp.test_loss or comp.train_loss
            kinds.add("test" if comp.test_loss else "train")
            t = comp.t
            ax.plot(t[t > 0], loss["rel_error"][t > 0], color=c, label=f"N = {w}")
        floor = _theory_relative_se(sweep.solutions[g])
        zero = any(getattr(c, "summary", {}).get("zero_targets")   # (rel_error is NaN: no loss scale)
                   for c in sweep.scaling[g]["comparisons"].values())
        if zero:
            ax.text(0.5, 0.5, "targets all zero:\nno relative error", transform=ax.transAxes, ha="center",
                    va="center", fontsize=9)
        elif floor is not None:
            t = sweep.solutions[g].t
            ax.plot(t[t > 0], floor[t > 0], "k--", lw=0.9, label="DMFT's own SE / DMFT (noise level)")
        ax.set_xscale("log")
        if not zero:
            ax.set_yscale("log")
        ax.set_title(f"gamma0 = {g:g}", fontsize=9)
        ax.set_xlabel("t (= steps x eta0)")
        ax.grid(True, which="both", alpha=0.3)
    name = f"{kinds.pop()} loss" if len(kinds) == 1 else "loss"
    theory = theory_name(sweep)
    axes[0][0].set_ylabel(f"|mean network {name} - {theory}| / {theory}")
    axes[0][-1].legend(fontsize=7)
    return fig


def ensemble_losses(runs: dict):
    """Test loss (train loss where a run has none) against time for network ensembles: one panel
    per gamma0, seed mean and +-1 std band (ddof=1) per width."""
    if not isinstance(runs, dict) or not runs or not all(isinstance(r, dict) and r for r in runs.values()):
        raise InputError("runs: need {gamma0: {width: networks.Run}} with at least one gamma0 and one "
                         f"width each, got {runs!r:.80}")
    gs = list(runs)
    fig, axes = new_figure(1, len(gs), size=(3.8 * len(gs), 3.4), squeeze=False)
    kinds = set()
    for ax, g in zip(axes[0], gs):
        ax.set_yscale("log")
        for c, (w, run) in zip(_colors(len(runs[g])), sorted(runs[g].items())):
            test = run.test_loss is not None
            kinds.add("test" if test else "train")
            loss = run.test_loss if test else run.train_loss
            t = np.asarray(run.t, float)
            label = f"N = {w}" + ("" if test else " (train loss)")
            seed_mean_line(ax, t, t > 0, loss, label=label, band=True, band_alpha=0.15, color=c)
        ax.set_xscale("log")
        ax.set_title(f"gamma0 = {g:g}", fontsize=9)
        ax.set_xlabel("t (DMFT time)")
        ax.grid(True, which="both", alpha=0.3)
        log_ylim_from_lines(ax)
    name = f"{kinds.pop()} loss" if len(kinds) == 1 else "test loss (train where marked)"
    axes[0][0].set_ylabel(f"{name} (seed mean; {BAND_NOTE})", fontsize=8)
    for ax in axes[0]:         # the last panel's legend; any other that counts lost seeds its own
        if ax is axes[0][-1] or any("seeds finite" in x or "diverged" in x for x in ax.get_legend_handles_labels()[1]):
            ax.legend(fontsize=7)
    return fig
