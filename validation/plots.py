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

from dmft.plotting import new_figure, trajectory_figure

__all__ = ["theory_vs_networks", "lazy_to_rich_summary", "width_scaling_plot",
           "relative_error_in_time", "ensemble_losses"]


def _colors(n):
    return [f"C{i % 10}" for i in range(n)]


def theory_vs_networks(sweep, *others, labels=None):
    """Train and test loss against time: DMFT (solid), mean of the widest networks
    (dotted, band = seed spread), lazy closed form (black dashed), one colour per gamma0.

    Also accepts trajectories instead of a sweep: `theory_vs_networks(solution, run, ...)`
    draws them on the same axes (`dmft.Trajectory.plot`)."""
    if not hasattr(sweep, "gamma0s"):
        return trajectory_figure((sweep,) + others, labels=labels)
    fig, axes = new_figure(1, 2, size=(11, 4.2), sharex=True)
    wmax = max(sweep.widths) if sweep.widths else None
    for c, g in zip(_colors(len(sweep.gamma0s)), sweep.gamma0s):
        sol = sweep.solutions[g]
        t = sol.t
        m = t > 0
        for ax, th, name in ((axes[0], sol.train_loss, "train_loss"), (axes[1], sol.test_loss, "test_loss")):
            if th is None:
                continue
            ax.plot(t[m], th[m], color=c, lw=1.8, label=f"gamma0 = {g:g} (DMFT)")
            if wmax is not None:
                run = sweep.runs[g][wmax]
                vals = getattr(run, name)
                mean, std = np.nanmean(vals, 0), np.nanstd(vals, 0)
                ax.plot(t[m], mean[m], color=c, ls=":", lw=1.8)
                ax.fill_between(t[m], np.maximum(mean - std, 1e-12)[m], (mean + std)[m], color=c, alpha=0.15)
    lz = sweep.lazy[sweep.gamma0s[0]]
    axes[0].plot(lz.t[lz.t > 0], lz.train_loss[lz.t > 0], "k--", lw=1.2, label="lazy limit")
    if lz.test_loss is not None:
        axes[1].plot(lz.t[lz.t > 0], lz.test_loss[lz.t > 0], "k--", lw=1.2)
    for ax, name in zip(axes, ("train", "test")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("t (DMFT time = steps x eta0)")
        ax.set_ylabel(f"{name} loss (mean squared error)")
        ax.grid(True, which="both", alpha=0.3)
    if wmax is not None:
        axes[1].set_title(f"dotted: mean of {sweep.seeds} networks of width {wmax} (band: +-1 std)",
                          fontsize=9)
    axes[0].legend(fontsize=8)
    return fig


def lazy_to_rich_summary(sweep):
    """Final test loss, NTK-target alignment and first-layer weight change against gamma0:
    DMFT line, lazy limit, network mean +- std per width."""
    fig, axes = new_figure(1, 3, size=(14, 4.2))
    g = np.array(sweep.gamma0s)
    th = {"test": [sweep.solutions[x].test_loss[-1] if sweep.solutions[x].test_loss is not None
                   else np.nan for x in g],
          "align": [sweep.solutions[x].alignment[-1] for x in g],
          "wc": [sweep.solutions[x].weight_change["first_layer"][-1] for x in g]}
    lz = [sweep.lazy[x].test_loss[-1] if sweep.lazy[x].test_loss is not None else np.nan for x in g]
    labels = ("final test loss", "final NTK-target alignment", "final relative first-layer change")
    for ax, key, label in zip(axes, ("test", "align", "wc"), labels):
        ax.plot(g, th[key], "k-o", lw=2, label="DMFT", zorder=5)
        if key == "test":
            ax.plot(g, lz, "k--", lw=1, label="lazy limit")
        for i, (c, w) in enumerate(zip(_colors(len(sweep.widths)), sweep.widths)):
            vals = []
            for x in g:
                run = sweep.runs[x][w]
                v = {"test": run.test_loss, "align": run.alignment,
                     "wc": run.weight_change["first_layer"]}[key]
                vals.append((np.nanmean(v[:, -1]), np.nanstd(v[:, -1])) if v is not None else (np.nan, 0))
            vals = np.array(vals)
            shift = g * (1 + 0.03 * (i - len(sweep.widths) / 2))
            ax.errorbar(shift, vals[:, 0], yerr=vals[:, 1], fmt="o", ms=3, color=c, capsize=2,
                        label=f"N = {w}")
        ax.set_xscale("log")
        ax.set_xlabel("gamma0 (richness; lazy on the left)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"lazy to rich at t = {sweep.solutions[g[0]].t[-1]:g} (networks: {sweep.seeds} seeds per width)")
    return fig


def width_scaling_plot(sweep):
    """Prediction error against width (log-log) with fitted lines, per gamma0:
    per-seed error (circles, expected slope -1/2) and ensemble-mean error (squares)."""
    fig, axes = new_figure(1, 2, size=(11, 4.2))
    for c, g in zip(_colors(len(sweep.gamma0s)), sweep.gamma0s):
        sc = sweep.scaling[g]
        w = sc["widths"]
        for ax, key, fit_key, marker in ((axes[0], "per_seed_error", "per_seed_fit", "o"),
                                         (axes[1], "mean_error", "mean_fit", "s")):
            fit = sc[fit_key]
            label = f"gamma0 = {g:g}" + (f": slope {fit.slope:+.2f}" if fit else "")
            ax.plot(w, sc[key], marker, color=c, label=label)
            if fit:
                ax.plot(w, fit.predict(w), "-", color=c, lw=1)
            if sc["theory_floor"] > 0:
                ax.axhline(sc["theory_floor"], color=c, ls=":", lw=0.8)
    for ax, title in zip(axes, ("per-seed error (fluctuations ~ N^-1/2)",
                                "error of the ensemble mean (bias ~ N^-1, noise ~ N^-1/2)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width N")
        ax.set_ylabel("RMS prediction error / RMS target (time average)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("finite-width departure from the DMFT (dotted: the DMFT's own standard error)")
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
    """Relative test-loss error of the ensemble mean against time, one panel per gamma0, with the
    DMFT's own relative standard error (dashed): differences below it are within the theory's noise."""
    n = len(sweep.gamma0s)
    fig, axes = new_figure(1, n, size=(3.6 * n, 3.4), squeeze=False)
    for ax, g in zip(axes[0], sweep.gamma0s):
        for c, w in zip(_colors(len(sweep.widths)), sweep.widths):
            comp = sweep.scaling[g]["comparisons"][w]
            loss = comp.test_loss or comp.train_loss
            t = comp.t
            ax.plot(t[t > 0], loss["rel_error"][t > 0], color=c, label=f"N = {w}")
        floor = _theory_relative_se(sweep.solutions[g])
        if floor is not None:
            t = sweep.solutions[g].t
            ax.plot(t[t > 0], floor[t > 0], "k--", lw=0.9, label="DMFT's own SE / DMFT (noise level)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"gamma0 = {g:g}", fontsize=9)
        ax.set_xlabel("t")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("|mean network loss - DMFT| / DMFT")
    axes[0][-1].legend(fontsize=7)
    return fig


def ensemble_losses(runs: dict):
    """Test loss against time for network ensembles: one panel per gamma0, mean +- std per width."""
    gs = list(runs)
    fig, axes = new_figure(1, len(gs), size=(3.8 * len(gs), 3.4), squeeze=False)
    for ax, g in zip(axes[0], gs):
        for c, (w, run) in zip(_colors(len(runs[g])), sorted(runs[g].items())):
            loss = run.test_loss if run.test_loss is not None else run.train_loss
            t = run.t
            m = t > 0
            mean, std = np.nanmean(loss, 0), np.nanstd(loss, 0)
            ax.plot(t[m], mean[m], color=c, label=f"N = {w}")
            ax.fill_between(t[m], np.maximum(mean - std, 1e-12)[m], (mean + std)[m], color=c, alpha=0.15)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"gamma0 = {g:g}", fontsize=9)
        ax.set_xlabel("t (DMFT time)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("test loss (mean +- std over seeds)")
    axes[0][-1].legend(fontsize=7)
    return fig
