"""Figures of deep linear networks against the per-mode theory (matplotlib Figures, no pyplot).

All take a `networks.DeepLinearRun` (and the model and data it was trained on) and draw
the theory of `dmft.deep_linear` beside it, in time units t = steps x eta.
"""

from __future__ import annotations

import warnings

import numpy as np

from dmft import checks
from dmft import deep_linear as dl
from dmft.errors import InputError
from dmft.plotting import new_figure

from .deep_linear import decaying_modes, learning_times_of, mode_law, settled_targets

__all__ = ["modes_figure", "staircase_figure", "staircase_ylim", "noise_figure", "stationary_figure",
           "balance_figure"]


def _nan(fn, *args, **kw):
    """A numpy nan-reduction without its 'All-NaN slice' warning: a time where every run (or path)
    diverged is NaN, drawn as a gap."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kw)


def _band(ax, t, v, color, label=None, ls="-"):
    lo, med, hi = _nan(np.nanpercentile, v, [10, 50, 90], axis=0)
    m = t > 0
    ax.plot(t[m], med[m], color=color, ls=ls, label=label)
    ax.fill_between(t[m], lo[m], hi[m], color=color, alpha=0.15)


def _settled(model, data, weight_decay) -> tuple[np.ndarray, np.ndarray, float]:
    """(targets, decays, kappa): (r,) the value each mode settles at (its effective s without weight
    decay; with decay kappa its fixed point, `dl.fixed_points`, NaN for a mode that decays), (r,) bool
    the modes decay switches off (`decaying_modes` from the aligned start: below the barrier, or
    no fixed point, whatever the start), and kappa checked. With decay the model is needed (the
    fixed points depend on its depth): InputError naming it."""
    kappa = checks.real("weight_decay", weight_decay, nonnegative=True)
    s = dl.effective_modes(data).s
    if not kappa:
        return s, np.zeros(s.size, bool), kappa
    if model is None:
        raise InputError(f"model: with weight_decay = {kappa:g} the modes settle at the fixed points of the "
                         "model's depth; pass the dmft.DeepLinear the run was trained as")
    targets = settled_targets(model, data, kappa)
    return targets, ~np.isfinite(targets), kappa


def _decays_note(kappa: float) -> str:
    return f"decays to 0 under weight decay {kappa:g}"


def _median_time(times) -> tuple[float | None, int, int]:
    """(median, learned, seeds) of one mode's learning times over the seeds: a seed that never
    learned it (inf, or NaN) counts as later than every other, so the median is that of all the
    seeds and finite exactly when more than half learned the mode; None when half or fewer did."""
    t = np.asarray(times, dtype=np.float64).ravel()
    t = np.where(np.isfinite(t), t, np.inf)
    learned, seeds = int(np.isfinite(t).sum()), int(t.size)
    return (float(np.median(t)) if 2 * learned > seeds else None), learned, seeds


def _learning_line(axes, times, i: int):
    """Mode i's median half-learning time over the seeds (`_median_time`) as a vertical line on
    each of `axes`, the first's labelled with how many seeds learned the mode ("k/n seeds"); when
    half or fewer did, no line, only an empty legend entry on the first saying so."""
    c = f"C{i % 10}"
    med, k, n = _median_time(times)
    if med is None:
        axes[0].plot([], [], color=c, lw=0.8, label=f"mode {i + 1}: half learned by {k}/{n} seeds only, no median")
        return
    for j, ax in enumerate(axes):
        ax.axvline(med, color=c, lw=0.8,
                   label=f"mode {i + 1} half learned (median; {k}/{n} seeds learned it)" if j == 0 else None)


def modes_figure(run, model, data, sde=None, title=None, weight_decay: float = 0.0):
    """Mode strengths against time: networks (median, 10-90% band), SDE paths (10-90%, dashed),
    gradient flow from the same start (black), target strengths (dotted; with weight decay also
    the fixed points, dash-dotted). A mode that weight decay switches off (`decaying_modes`, or
    no fixed point) gets no target line: its label says it decays to 0."""
    fig, ax = new_figure(size=(6.5, 4.4))
    t = run.t
    star, decays, kappa = _settled(model, data, weight_decay)
    flow = dl.mode_flow(model, data, t, weight_decay=kappa) if model.init == "aligned" else None
    s = dl.effective_modes(data).s
    labelled = set()                                    # one legend entry per kind of line

    def once(kind):
        if kind in labelled:
            return None
        labelled.add(kind)
        return kind

    for i in range(run.modes.shape[-1]):
        c = f"C{i % 10}"
        note = f"; {_decays_note(kappa)}" if decays[i] else ""
        _band(ax, t, run.modes[..., i], c, f"mode {i + 1}, s = {s[i]:.3g} (networks{note})")
        if sde is not None:
            lo, hi = _nan(np.nanpercentile, sde.modes[..., i], [10, 90], axis=0)
            ax.plot(t[t > 0], lo[t > 0], color=c, ls="--", lw=0.9, label=once("per-mode SDE, 10% and 90%"))
            ax.plot(t[t > 0], hi[t > 0], color=c, ls="--", lw=0.9)
        if flow is not None:
            ax.plot(t[t > 0], flow[t > 0, i], color="k", lw=0.9, label=once("gradient flow"))
        if decays[i]:                                   # its target is 0: nothing to settle at
            continue
        ax.axhline(s[i], color=c, ls=":", lw=0.7, label=once("target s_i without decay" if kappa else "target s_i"))
        if kappa:
            ax.axhline(star[i], color=c, ls="-.", lw=0.7, label=once("fixed point with decay"))
    ax.set_xscale("log")
    ax.set_xlabel("t = steps x eta")
    ax.set_ylabel("mode strength pi_i = u_i^T W v_i")
    ax.set_title(title or "networks (band) vs per-mode SDE (dashed) vs gradient flow (black)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def staircase_figure(run, data, title=None, *, model=None, weight_decay: float = 0.0):
    """Population loss against time (median, band) with the predicted plateaus (dotted) and the
    median half-learning times of the modes (vertical lines; a seed that never learned a mode
    counts as later than all, the label says how many seeds learned it, and a mode half or fewer
    of the seeds learned gets no line, only a legend entry saying so).

    With weight decay (`weight_decay` > 0, and then `model`, the dmft.DeepLinear the run was
    trained as) each mode settles at its fixed point (`dl.fixed_points`), not at s_i: the
    plateaus hold the learned modes at their fixed points (`_plateau_levels`), the learning times
    are to half the fixed point, and a mode the decay switches off (`decaying_modes`) has target
    0: no learning time, its strength stays in every plateau, and the legend says it decays. A run
    at depth 1 (`model`'s, else its recorded model.depth) has no plateau between two modes: the
    start and end levels alone are drawn (the end `dl.plateaus(...)["end"]`: it fits the noise
    pairs of a fixed set too)."""
    fig, ax = new_figure(size=(6.5, 4.4))
    targets, decays, kappa = _settled(model, data, weight_decay)
    _band(ax, run.t, run.test_loss, "k", "population loss (networks)")
    levels = _plateau_levels(data, model=model, weight_decay=kappa)
    lo, hi = staircase_ylim(run, data, model=model, weight_decay=kappa)
    ax.set_ylim(lo, hi)
    # depth 1 learns every mode at one rate: the start and the end, no plateau between two modes
    shallow = (model.depth if model is not None else dl.recorded_setting(run, "depth")) == 1
    named = [(f"plateau {k}", lev) for k, lev in enumerate(levels)]
    if shallow:            # (it learns the noise pairs too: it ends at plateaus' "end", not the last level)
        named = [("start", levels[0]),
                 ("end", float(dl.plateaus(data, np.where(decays, np.nan, targets) if kappa else None)["end"]))]
    shown = [(k, lev) for k, lev in named if lo < lev < hi]
    for k, lev in shown:
        ax.axhline(lev, color="grey", ls=":", lw=0.8)
    # labels at the left, in log space at least `gap` apart (close plateaus pushed up in turn)
    gap = 0.05 * np.log10(hi / lo)
    y_prev = -np.inf
    for k, lev in sorted(shown, key=lambda kl: kl[1]):
        y = max(np.log10(lev), y_prev + gap)
        y_prev = y
        ax.text(0.01, 10 ** y, f"{k}: {lev:.3g}", transform=ax.get_yaxis_transform(), fontsize=7,
                color="grey", va="bottom", ha="left")
    tl = learning_times_of(run, data, targets=targets if kappa else None)
    for i in range(tl.shape[1]):
        if decays[i]:
            ax.plot([], [], color=f"C{i % 10}", lw=0.8, label=f"mode {i + 1}: {_decays_note(kappa)}, never learned")
        else:
            _learning_line([ax], tl[:, i], i)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t = steps x eta")
    ax.set_ylabel("population loss |W - M|^2/2 + d_out sigma^2/2")
    decay = f", weight decay {kappa:g}: modes settle at their fixed points" if kappa else ""
    ax.set_title(title or ("depth 1: every mode learned at one rate, no staircase (dotted: start and end)" if shallow
                           else f"saddle-to-saddle staircase (dotted: predicted plateaus{decay})"), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _plateau_levels(data, *, model=None, weight_decay: float = 0.0) -> np.ndarray:
    """(levels,) the staircase's loss plateaus, in learning order (decreasing s~):
    `dl.plateaus(data)["levels"]` without weight decay. With decay kappa (`model` needed) a
    learned mode settles at its fixed point pi_i* (`dl.plateaus(settled=...)`), and a mode the
    decay switches off is never learned: its strength stays in every plateau, which are one
    fewer per such mode."""
    targets, decays, kappa = _settled(model, data, weight_decay)
    settled = np.where(decays, np.nan, targets) if kappa else None
    return np.asarray(dl.plateaus(data, settled)["levels"], dtype=np.float64)


def staircase_ylim(run, data, *, model=None, weight_decay: float = 0.0) -> tuple[float, float]:
    """The loss axis of the staircase: from a fifth of the lowest positive plateau (the noise
    floor, or without label noise the weakest mode's plateau; with weight decay the plateaus of
    `_plateau_levels`) to twice the highest plateau or loss shown; a loss that keeps falling once
    every mode is learned leaves the axis there instead of squeezing the steps into a few of many
    decades."""
    levels = _plateau_levels(data, model=model, weight_decay=weight_decay)
    pos = levels[levels > 0]
    band = _nan(np.nanpercentile, run.test_loss, 90, axis=0)[np.asarray(run.t) > 0]
    top = max(float(pos.max()), float(np.nanmax(band)) if np.isfinite(band).any() else 0.0)
    return 0.2 * float(pos.min()), 2.0 * top


NOISE_KEY = ("networks: median (solid) and 10-90% band; dashed: the formula at the networks' modes; "
             "solid vertical: half learned; dotted vertical: predicted diffusion peak")


def noise_figure(run, model, data, *, eta0, batch_size, title=None, weight_decay: float = 0.0):
    """Drift and diffusion along each mode against time (networks median and band; the
    formulas at the measured modes, dashed), with each mode's median half-learning time over the
    seeds (solid vertical; with weight decay, half its fixed point; a seed that never learned the
    mode counts as later than all, the legend says how many learned it, and a mode half or fewer
    learned gets no line, only a legend entry) and the theory's diffusion peak (dotted vertical).
    A mode that weight decay switches off (`decaying_modes`) gets neither: its label says it
    decays to 0."""
    fig, axes = new_figure(1, 2, size=(12, 4.2))
    t = run.t
    targets, decays, kappa = _settled(model, data, weight_decay)
    D = dl.diffusion(model, data, run.modes, eta0=eta0, batch_size=batch_size)
    # the networks record d pi / dt of the full-batch step, the decay's -L kappa pi included
    mu = dl.drift(model, data, run.modes, eta0=eta0, batch_size=batch_size, ito=False,
                  weight_decay=kappa)
    tl = learning_times_of(run, data, targets=targets if kappa else None)
    peaks = (dl.diffusion_peaks(model, data, eta0=eta0, batch_size=batch_size, weight_decay=kappa)
             if model.init == "aligned" else None)
    for i in range(run.modes.shape[-1]):
        c = f"C{i % 10}"
        label = f"mode {i + 1}" + (f": {_decays_note(kappa)}" if decays[i] else "")
        _band(axes[0], t, run.drift[..., i], c, label)
        _band(axes[1], t, run.diffusion[..., i], c, label)
        axes[0].plot(t[t > 0], _nan(np.nanmedian, mu[..., i], 0)[t > 0], color=c, ls="--", lw=0.8)
        axes[1].plot(t[t > 0], _nan(np.nanmedian, D[..., i], 0)[t > 0], color=c, ls="--", lw=0.8)
        if decays[i]:                                   # target 0: no learning time, no peak
            continue
        _learning_line(axes, tl[:, i], i)
        if peaks is not None and np.isfinite(peaks["t_peak"][i]):
            axes[1].axvline(peaks["t_peak"][i], color=c, lw=0.8, ls=":")
    axes[0].set_ylabel("drift d pi / dt (full-batch gradient)")
    axes[1].set_ylabel("diffusion Var[delta pi] / eta per step")
    if np.any(np.isfinite(run.diffusion) & (run.diffusion > 0)):
        axes[1].set_yscale("log")
    else:        # (full-batch steps: a log axis with nothing on it, and a warning, said nothing)
        said = ("no gradient noise: the diffusion is 0 (full-batch steps)" if np.any(np.isfinite(run.diffusion))
                else "no finite diffusion recorded (every seed diverged)")     # (not full batch: NaN)
        axes[1].text(0.5, 0.5, said, transform=axes[1].transAxes, ha="center", va="center", fontsize=8)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("t = steps x eta")
        ax.grid(True, which="both", alpha=0.3)
    # one t range for both panels: a diffusion peak predicted past the run's end widened the right one
    # alone, so that a mode's half-learning line stood at different places in the two
    lims = [ax.get_xlim() for ax in axes]
    for ax in axes:
        ax.set_xlim(min(lo for lo, _ in lims), max(hi for _, hi in lims))
    axes[0].legend(fontsize=7)
    # the key to the lines goes with any title (the job's titles replaced it: nothing said what the
    # dashed and dotted lines were)
    fig.suptitle((title + "\n" if title else "drift and diffusion per mode\n") + NOISE_KEY, fontsize=9)
    return fig


def stationary_figure(run, model, data, *, eta0, batch_size, after, title=None, weight_decay: float = 0.0,
                       cross_modes: bool = False):
    """Histograms of each mode after t = after against the predicted stationary density
    (solid) and its Boltzmann approximation (dashed; around the fixed point with decay; a mode
    that decays to 0 from its start gets no curve, only a note). cross_modes=True draws the law
    with the cross-mode drift (`dl.stationary_density(cross_modes=True)`, as `stationary_fit`'s)."""
    t = np.asarray(run.t, float)
    if isinstance(after, bool) or not isinstance(after, (int, float, np.number)) or not after < t[-1]:
        raise InputError(f"after: need a time before the run's last save t = {t[-1]:g} (the histograms are of "
                         f"the saves after it), got {after!r}")
    late = run.modes[:, run.t > after]
    r = late.shape[-1]
    fig, axes = new_figure(1, r, size=(3.6 * r, 3.4), squeeze=False)
    T = dl.boltzmann_temperature(model, data, eta0=eta0, batch_size=batch_size, weight_decay=weight_decay)
    s = dl.fixed_points(model, data, weight_decay)
    decays = decaying_modes(model, data, weight_decay) | ~np.isfinite(s)     # (as stationary_fit)
    for i, ax in enumerate(axes[0]):
        x = late[..., i].ravel()
        x = x[np.isfinite(x)]
        ax.set_xlabel(f"pi_{i + 1}")
        ax.set_title(f"mode {i + 1}", fontsize=9)
        if x.size == 0:
            ax.text(0.5, 0.9, f"every network diverged\nbefore t = {after:g}", transform=ax.transAxes,
                    fontsize=7, ha="center", va="top")
            continue
        ax.hist(x, bins=60, density=True, color=f"C{i % 10}", alpha=0.5, label="networks")
        if decays[i]:
            why = "no fixed point under the decay" if not np.isfinite(s[i]) else "below the decay's barrier"
            ax.text(0.5, 0.9, f"decays to 0 from its start\n({why})", transform=ax.transAxes,
                    fontsize=7, ha="center", va="top")
            continue
        # the mode's law alone, on a grid over its samples and its fixed point (as stationary_fit:
        # the other modes' laws, or their absence, do not refuse it)
        a, b = min(x.min(), s[i]), max(x.max(), s[i])
        # (depth 1: pi = a has either sign, and so has its grid; deeper, pi stays positive)
        grid = np.linspace(a - 3 * x.std() if model.depth == 1 else max(a - 3 * x.std(), 1e-6 * b), b + 3 * x.std(), 1001)
        try:
            grid, p = mode_law(model, data, grid, i, eta0=eta0, batch_size=batch_size, weight_decay=weight_decay,
                               cross_modes=cross_modes)
            ax.plot(grid, p, "k", lw=1.2, label="stationary density" + (" (cross-mode drift)" if cross_modes else ""))
        except InputError as err:                   # no metastable law (a shallow well): say so
            ax.text(0.5, 0.9, f"no stationary density:\n{str(err)[:60]}", transform=ax.transAxes,
                    fontsize=6, ha="center", va="top")
        ax.plot(grid, np.exp(-(grid - s[i]) ** 2 / (2 * T[i])) / np.sqrt(2 * np.pi * T[i]), "k--", lw=0.8,
                label="Boltzmann")
    axes[0][0].set_ylabel("density")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title or f"stationary laws (t > {after:g})", fontsize=9)
    return fig


def balance_figure(run, title=None):
    """|W_{l+1}^T W_{l+1} - W_l W_l^T|_F and its change since t = 0, per layer boundary."""
    fig, axes = new_figure(1, 2, size=(11, 3.8))
    for j in range(run.balancedness.shape[-1]):
        _band(axes[0], run.t, run.balancedness[..., j], f"C{j % 10}", f"layers {j + 1}-{j + 2}")
        _band(axes[1], run.t, run.balance_change[..., j], f"C{j % 10}", f"layers {j + 1}-{j + 2}")
    axes[0].set_ylabel("|W_{l+1}^T W_{l+1} - W_l W_l^T|_F")
    axes[1].set_ylabel("its change since t = 0 (0 under gradient flow without decay)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("t = steps x eta")
        ax.grid(True, which="both", alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:       # (depth 1 has no layer boundary to label)
        axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
