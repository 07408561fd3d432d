"""Grokking figures a reader of Kumar et al. (2024), Gromov (2023) and Barak et al. (2022)
recognizes: losses and accuracies against time, progress measures with the drop and their
change times marked, the Kumar loss decomposition, finite width against the DMFT, phase
diagrams of the amount of grokking, grokking time against weight decay.

Conventions in every figure: one colour per gamma0; the DMFT is a thick solid line, the
widest network ensemble its seed mean in the same colour with markers (drawn on top, so it
is never hidden), the lazy NTK regression a black dashed line; thresholds are labelled;
times are DMFT times on a log axis.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.patches import Rectangle

from dmft.errors import InputError
from dmft.plotting import new_figure, seed_mean_line

from .grokking import RATES, REPLICAS_PREFIX, early_warning

__all__ = ["grokking_curves", "progress_measures", "kumar_decomposition_plot", "width_departure",
           "phase_diagram_plot", "decay_plot", "MEASURE_LABELS"]

MEASURE_LABELS = {
    "alignment": "NTK-target alignment",
    "weight_change": "relative first-layer change |W - W0| / |W0|",
    "planted_alignment": "planted alignment b^T S b / (Tr S / D)\n(1: isotropic, D: all along b)",
    "planted_diffusion": "SGD diffusion of b^T S b per unit time",
    "fourier_ipr": "Fourier IPR of first-layer weights\n(1: one mode, 1/(p//2): flat)",
    "max_change": "|w - w0|_inf (mean over units)",
}


def _colors(n):
    return [f"C{i % 10}" for i in range(n)]


def _pos(t):
    return t > 0


def _widest(nets, g):
    return max(nets[g]) if nets.get(g) else None


def _check_gammas(name, curves, gammas):
    """An InputError naming `name` when it lacks a curve dict for some gamma0 in `gammas`."""
    if not isinstance(curves, dict):
        raise InputError(f"{name}: need {{gamma0: curves}}, got {type(curves).__name__}")
    missing = [g for g in gammas if g not in curves]
    if missing:
        raise InputError(f"{name}: no curves for gamma0 = {', '.join(f'{g:g}' for g in missing)} "
                         f"(has {', '.join(f'{g:g}' for g in curves) or 'none'})")


def grokking_curves(t, theory, lazy, nets, gammas, threshold, accuracy=False, acc_threshold=0.9):
    """Train loss, test loss, NTK-target alignment (and train/test accuracy for classification)."""
    _check_gammas("theory", theory, gammas)
    ncol = 3 + int(accuracy)
    fig, axes = new_figure(1, ncol, size=(4.4 * ncol, 4.0))
    m = _pos(t)
    lazy_drawn = False
    for c, g in zip(_colors(len(gammas)), gammas):
        th, lz = theory[g], lazy.get(g)
        wmax = _widest(nets, g)
        for ax, key in ((axes[0], "train_loss"), (axes[1], "test_loss")):
            ax.plot(t[m], th[key][m], color=c, lw=2.2, alpha=0.8, label=f"gamma0 = {g:g} (DMFT)")
            se = th.get(f"{key}_se")
            if se is not None and np.any(np.isfinite(se[m]) & (se[m] > 0)):   # a sampled DMFT: +-1 se
                lo = np.asarray(th[key] - se, float)[m]
                hi = np.asarray(th[key] + se, float)[m]
                # (on the log axis a band below a tenth of the curve, zero included, is cut there; the
                # label says so where it is: it said "+-1 se" of a band drawn narrower than that)
                floor = 0.1 * np.asarray(th[key], float)[m]
                cut = " (cut at 0.1x the curve)" if np.any(lo < floor) else ""
                ax.fill_between(t[m], np.maximum(lo, floor), hi, color=c, alpha=0.2,
                                lw=0, label=f"gamma0 = {g:g} (DMFT) +-1 se{cut}")
            if wmax is not None:
                seed_mean_line(ax, t, m, nets[g][wmax][key], color=c, lw=0.9, marker="o", ms=2.5,
                               label=f"gamma0 = {g:g}, N = {wmax} (seed mean)")
        if lz is not None and not lazy_drawn:      # the lazy limit does not depend on gamma0 here
            for ax, key in ((axes[0], "train_loss"), (axes[1], "test_loss")):
                ax.plot(t[m], lz[key][m], color="k", ls="--", lw=1.2, label="lazy (NTK regression)")
            if accuracy and "test_acc" in lz:
                axes[3].plot(t[m], lz["test_acc"][m], color="k", ls="--", lw=1.2, label="lazy: test")
            lazy_drawn = True
        axes[2].plot(t[m], th["alignment"][m], color=c, lw=2.2, alpha=0.8)
        if wmax is not None:
            seed_mean_line(axes[2], t, m, nets[g][wmax]["alignment"], color=c, lw=0.9, marker="o", ms=2.5)
        if accuracy:
            axes[3].plot(t[m], th["test_acc"][m], color=c, lw=2.2, alpha=0.8)
            axes[3].plot(t[m], th["train_acc"][m], color=c, lw=1.0, ls=":")
            if wmax is not None:
                seed_mean_line(axes[3], t, m, nets[g][wmax]["test_acc"], color=c, lw=0.9, marker="o", ms=2.5)
    for ax, lab in zip(axes, ("train loss (mean squared error)", "test loss (mean squared error)",
                              "NTK-target alignment", "accuracy (solid: test, dotted: train)")):
        ax.set_xscale("log")
        ax.set_xlabel("t (DMFT time = steps x eta0)")
        ax.set_ylabel(lab)
        ax.grid(True, which="both", alpha=0.25)
    for ax in axes[:2]:
        ax.set_yscale("log")
        if not accuracy:        # classification testbeds are judged on accuracy (last panel)
            ax.axhline(threshold, color="grey", lw=0.8, ls="-.", label=f"threshold {threshold:.3g}")
    if accuracy:
        axes[3].axhline(acc_threshold, color="grey", lw=0.8, ls="-.", label=f"threshold {acc_threshold:g}")
        axes[3].legend(fontsize=7, loc="lower right")
    axes[1].legend(fontsize=7)
    axes[0].set_title("train", fontsize=10)
    axes[1].set_title("test", fontsize=10)
    return fig


# the progress measures drawn on a log y axis
_LOG_PANELS = ("planted_diffusion",)


def _change_level(t, y, tc, rate, log_y=False):
    """The measure's value at its change time tc, where the figure marks it: for a level, the midpoint
    of its first and last values it crosses there (by `change_time`'s definition); for a rate, its
    value interpolated as `change_time` interpolates (in log t, linearly in t from t = 0), and on a
    log y axis (log_y, two positive values) in log y too, as the curve is drawn there. (The mark
    was read off the curve's saves at t > 0 only, clamped to the first: a change within the first
    save interval [0, t_1] was drawn at the value at t_1, a point on no curve. On the log panel of
    the diffusion, a value interpolated linearly in y lay off the drawn segment: 18% above it with
    saves 2500 time units apart.)"""
    t, y = np.asarray(t, float), np.asarray(y, float)
    if not rate:
        return float((y[0] + y[-1]) / 2)
    j = int(np.clip(np.searchsorted(t, tc), 1, len(t) - 1))
    a, b = t[j - 1], t[j]
    f = (np.log(tc / a) / np.log(b / a)) if a > 0 else (tc - a) / (b - a)
    if log_y and y[j - 1] > 0 and y[j] > 0:
        return float(np.exp(np.log(y[j - 1]) + f * (np.log(y[j]) - np.log(y[j - 1]))))
    return float(y[j - 1] + f * (y[j] - y[j - 1]))


def progress_measures(t, theory, nets, gammas, ew_grid=None):
    """Each progress measure against time (DMFT solid, widest networks with markers); the
    test-loss drop (dashed vertical) and each measure's change time (a dot on the curve),
    as `validation.grokking.early_warning` defines them. With a grid verdict, a last panel
    shows the fraction of runs in which each measure leads the drop, with 95% intervals."""
    if not gammas or not isinstance(theory, dict) or gammas[0] not in theory:
        raise InputError(f"gammas: need at least one gamma0 with theory curves, got gammas = {list(gammas)!r}")
    _check_gammas("theory", theory, gammas)
    skip = ("train_loss", "test_loss", "train_acc", "test_acc", "train_loss_se", "test_loss_se", "t")
    names = [k for k in theory[gammas[0]] if k not in skip
             and not k.startswith(("decomposition.", REPLICAS_PREFIX))]
    ncol = len(names) + int(ew_grid is not None)
    # the lead panel's bars get ~0.9 inch each, so that their three- or four-line labels stay apart
    widths = [4.3] * len(names) + ([max(4.3, 0.9 * len(ew_grid["verdict"]) + 1.0)] if ew_grid is not None else [])
    fig, axes = new_figure(1, ncol, size=(sum(widths), 3.9), squeeze=False, width_ratios=widths)
    axes = axes[0]
    m = _pos(t)
    for c, g in zip(_colors(len(gammas)), gammas):
        th = theory[g]
        wmax = _widest(nets, g)
        ew = early_warning(t, th["test_loss"], {k: th[k] for k in names}, rates=RATES)
        for ax, name in zip(axes, names):
            ax.plot(t[m], th[name][m], color=c, lw=2.0, alpha=0.85, label=f"gamma0 = {g:g}")
            if wmax is not None and name in nets[g][wmax]:
                seed_mean_line(ax, t, m, nets[g][wmax][name], color=c, lw=0.9, marker="o", ms=2.2,
                               label=f"gamma0 = {g:g}, N = {wmax}" if ax is axes[0] else None,
                               label_always=False)
            if ew["observed"]:
                ax.axvline(float(ew["t_drop"]), color=c, lw=0.8, ls="--")
            tc = float(ew[name]["t_change"])
            if np.isfinite(tc):
                level = _change_level(t, th[name], tc, name in RATES, name in _LOG_PANELS)
                ax.plot([tc], [level], "o", color=c, ms=6, mec="k", mew=0.6)
    for ax, name in zip(axes, names):
        ax.set_xscale("log")
        ax.set_xlabel("t (DMFT time)")
        ax.set_ylabel(MEASURE_LABELS.get(name, name.replace("_", " ")), fontsize=8)
        if name in _LOG_PANELS:
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.25)
    wides = sorted({w for g in gammas for w in [_widest(nets, g)] if w is not None})
    net_note = f"thin, small dots: N={wides[-1]} seed mean; " if wides else ""
    axes[0].legend(fontsize=7, title=f"thick: DMFT; {net_note}\ndashed: test-loss drop; "
                   "circled dot: half change (DMFT)", title_fontsize=7)
    if ew_grid is not None:
        ax = axes[-1]
        v = ew_grid["verdict"]
        keys = list(v)
        frac = [v[k]["fraction"] for k in keys]
        lo = [v[k]["fraction"] - v[k]["ci95"][0] for k in keys]
        hi = [v[k]["ci95"][1] - v[k]["fraction"] for k in keys]
        ax.bar(range(len(keys)), frac, yerr=[lo, hi], color="C7", capsize=4)
        # each measure's own count of runs: a run whose lead the saves do not resolve is left out
        ticks = [k.replace("_", "\n") + f"\nn = {v[k]['runs']}"
                 + (f"\n(+{v[k]['unresolved']} unresolved)" if v[k].get("unresolved") else "") for k in keys]
        ax.set_xticks(range(len(keys)), ticks, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("fraction of runs where it leads the drop (95% CI)", fontsize=8)
        ax.set_title(f"runs of the gamma0 x {ew_grid['axis']} diagram", fontsize=8)
    return fig


def kumar_decomposition_plot(t, theory, gammas):
    """Test loss of the Kumar model split into variance, misalignment and linear power."""
    fig, axes = new_figure(1, len(gammas), size=(4.3 * len(gammas), 3.7), squeeze=False, sharey=True)
    m = _pos(t)
    for ax, g in zip(axes[0], gammas):
        th = theory[g]
        for part, c in (("variance", "C0"), ("misalignment", "C1"), ("linear_power", "C2")):
            ax.plot(t[m], th[f"decomposition.{part}"][m], color=c, label=part.replace("_", " "))
        ax.plot(t[m], th["decomposition.total"][m], color="k", lw=1.8, label="sum (population loss)")
        ax.plot(t[m], th["test_loss"][m], color="k", ls=":", label="test loss (test set)")
        _log_panel(ax, g)
    axes[0][0].set_ylabel("population test loss and its parts")
    axes[0][0].legend(fontsize=7)
    return fig


def _log_panel(ax, g):
    """Log-log axes of one gamma0 panel, in DMFT time."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t (DMFT time)")
    ax.set_title(f"gamma0 = {g:g}", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)


def width_departure(t, theory, nets, gammas, threshold=None):
    """Kumar et al. Fig. 4: test loss of networks of each width against the DMFT curve."""
    _check_gammas("theory", theory, gammas)
    _check_gammas("nets", nets, gammas)
    fig, axes = new_figure(1, len(gammas), size=(4.3 * len(gammas), 3.7), squeeze=False, sharey=True)
    m = _pos(t)
    for ax, g in zip(axes[0], gammas):
        ax.plot(t[m], theory[g]["test_loss"][m], color="k", lw=2.2, label="infinite width (DMFT)")
        for c, w in zip(_colors(len(nets[g])), sorted(nets[g])):
            y = nets[g][w]["test_loss"]
            seed_mean_line(ax, t, m, y, color=c, lw=1.2, label=f"N = {w} (seed mean)")
            if np.isfinite(y[0]).any():
                ax.plot(t[m], y[0][m], color=c, lw=0.5, alpha=0.5)
        if threshold is not None:
            ax.axhline(threshold, color="grey", lw=0.8, ls="-.", label=f"threshold {threshold:.3g}")
        _log_panel(ax, g)
    axes[0][0].set_ylabel("test loss (thin: one seed)")
    for ax in axes[0]:         # the first panel's legend; any other that counts lost seeds its own
        if ax is axes[0][0] or any("seeds finite" in x or "diverged" in x for x in ax.get_legend_handles_labels()[1]):
            ax.legend(fontsize=7)
    return fig


def phase_diagram_plot(diag, overlay=()):
    """Amount of grokking (gap) over gamma0 x axis on a log colour scale; hatched cells: the
    threshold was not reached (no gap), marked "diverged" where the run overflowed (the diagram's
    optional "diverged_step", -1 where none); finite-width networks as circled, labelled cells."""
    tm = diag["times"]
    gap = np.asarray(tm.gap, float)
    G, V = np.asarray(diag["gamma0"]), np.asarray(diag["values"])
    fig, ax = new_figure(size=(6.2, 4.8))
    pos = gap[np.isfinite(gap) & (gap > 0)]
    norm = None
    if pos.size:          # a log scale; one distinct value: a decade around it (LogNorm needs a span)
        lo, hi = (pos.min(), pos.max()) if pos.max() > pos.min() else (pos.min() / 3.0, pos.min() * 3.0)
        norm = LogNorm(vmin=lo, vmax=hi)
    shown = np.where(np.isfinite(gap) & (gap > 0), gap, np.nan)
    im = ax.imshow(shown.T, origin="lower", aspect="auto", cmap="viridis", norm=norm)
    for i, j in zip(*np.nonzero(~np.isfinite(gap))):
        ax.add_patch(Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, hatch="xx", color="grey", lw=0))
    for i, j in zip(*np.nonzero(np.isfinite(gap) & (gap <= 0))):
        ax.text(i, j, "0", ha="center", va="center", fontsize=7, color="grey")
    bad = np.asarray(diag.get("diverged_step", np.full(gap.shape, -1)))
    for i, j in zip(*np.nonzero(bad >= 0)):
        ax.text(i, j, "diverged", ha="center", va="center", fontsize=7, color="black")
    step = max(1, len(G) // 8)
    ax.set_xticks(range(0, len(G), step), [f"{g:.3g}" for g in G[::step]], rotation=45, fontsize=8)
    ax.set_yticks(range(len(V)), [f"{v:.3g}" for v in V], fontsize=8)
    ax.set_xlabel("gamma0 (= 1/alpha; lazy on the left)")
    ax.set_ylabel(diag["axis"])
    if pos.size:          # no positive gap anywhere: nothing coloured, no colour bar
        fig.colorbar(im, ax=ax, label="gap = t_test - t_train (DMFT time, log scale)")
    for o in overlay:
        ax.plot(o["i"], o["j"], "o", mfc="none", mec="red", ms=16, mew=1.5)
        gn = o["gap_network"]
        val = f"{gn:.3g}" if gn is not None and np.isfinite(gn) else "not reached"
        ax.annotate(f"N = {o['width']}: {val}", (o["i"], o["j"]), color="red", fontsize=7,
                    xytext=(0, 12), textcoords="offset points", ha="center",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    if not pos.size:
        what = ("the threshold was not reached anywhere" if not np.isfinite(gap).any()
                else "no positive gap anywhere (0: no delay)")
    else:
        what = "hatched: threshold not reached"
    ax.set_title(f"amount of grokking over gamma0 x {diag['axis']}\n({what}; red: finite width)", fontsize=9)
    return fig


def _run_end(decay) -> float:
    """The last time of the weight-decay scan's runs (a not-reached time is beyond it)."""
    curves = decay.get("curves") or {}
    if "t" in curves:
        return float(np.max(np.asarray(curves["t"], float)))
    t = decay.get("t_end")
    if t is None:
        raise InputError("decay: the scan's times (curves['t'] or t_end) are needed to place "
                         "the kappa that did not reach the threshold")
    return float(t)


def decay_plot(decay):
    """Grokking time against weight decay on log-log axes, the fitted power law over the points
    that reached the threshold only, and (lyu) the fit A / kappa + B against the prediction."""
    fig, ax = new_figure(size=(5.8, 4.4))
    k = np.asarray(decay["weight_decay"], float)
    times = decay["times"]
    y = np.asarray(times.t_test, float)
    flags = getattr(times, "reached_test", None)
    # reached: from the reached flags where given, else a finite time (0: reached at t = 0)
    reached = np.asarray(flags, bool) & np.isfinite(y) if flags is not None else np.isfinite(y) & (y >= 0)
    ok = reached & (y > 0)
    at_zero = reached & (y <= 0)        # no place on a log axis: marked at its bottom
    ax.set_xscale("log")
    ax.set_yscale("log")
    if ok.any():
        ax.loglog(k[ok], y[ok], "o", color="C0", label="t_test (threshold reached)")
        # the times' own standard errors (a sampled DMFT's), as report.md gives them: the figure drew
        # the points bare (t_test = 42 +- 66 at the smallest kappa of a lyu scan looked exact)
        se = np.broadcast_to(np.asarray(getattr(times, "t_test_se", np.nan), float), y.shape)
        bar = ok & np.isfinite(se)
        if bar.any():
            ax.errorbar(k[bar], y[bar], yerr=se[bar], fmt="none", ecolor="C0", elinewidth=0.9, capsize=3,
                        label="+-1 s.e. of t_test (a bar below 0 runs off the log axis)")
    if at_zero.any():
        ax.plot(k[at_zero], np.full(at_zero.sum(), 0.03), "v", color="C0", ms=8, clip_on=False,
                transform=ax.get_xaxis_transform(), label="reached at t = 0 (at the axis bottom)")
    if (~reached).any():
        # not reached: a lower bound, t_test > the end of the run; open up-triangles on the
        # dashed end-of-run line, never a reached time
        nr = ~reached
        t_end = _run_end(decay)
        ax.axhline(t_end, color="grey", ls="--", lw=0.8)
        ax.loglog(k[nr], np.full(nr.sum(), t_end), "^", mfc="none", mec="grey", ms=8,
                  label=f"not reached by the end of the run (t = {t_end:.3g}): t_test > t_end")
        lo = min(t_end, y[ok].min()) if ok.any() else t_end
        ax.set_ylim(lo / 3, t_end * 3)
    f = decay.get("fit_t_test", {})
    pts = ok & (k > 0)                  # the points `fit_power_law_decay` fits
    if "exponent" in f and np.unique(k[pts]).size >= 2:
        kk = np.geomspace(k[pts].min(), k[pts].max(), 50)
        se = f.get("stderr")
        err = f" +- {se:.2f}, 1 s.e." if se is not None and np.isfinite(se) else ", no error"
        # the fit keeps no intercept: refit the same points (least squares in log-log); where
        # that does not give the recorded slope, only a guide of that slope can be drawn
        slope, icpt = np.polyfit(np.log(k[pts]), np.log(y[pts]), 1)
        if np.isclose(slope, f["exponent"], rtol=1e-6, atol=1e-9):
            ref = np.exp(icpt) * kk ** slope
            label = f"fit: kappa^({f['exponent']:.2f}{err}; reached points only)"
        else:
            ref = y[pts][0] * (kk / k[pts][0]) ** f["exponent"]
            label = f"slope guide (fitted slope {f['exponent']:.2f}{err}) through the first point"
        ax.loglog(kk, ref, "-", color="C0", lw=0.9, label=label)
    fi = decay.get("fit_inverse", {})
    if "A" in fi and ok.sum() >= 2:
        kk = np.geomspace(k[ok].min(), k[ok].max(), 50)
        ax.loglog(kk, fi["A"] / kk + fi["B"], "--", color="C1", lw=0.9,
                  label=f"A/kappa + B: A = {fi['A']:.3g} (predicted {fi['predicted_A']:.3g})")
    ax.set_xlabel("weight decay kappa (per unit DMFT time)")
    ax.set_ylabel("time the test loss reaches the threshold (DMFT)")
    ax.set_title(f"grokking time vs weight decay, gamma0 = {decay['gamma0']:g} ({decay.get('testbed', '')})",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7)
    return fig
