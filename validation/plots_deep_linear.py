"""Figures of deep linear networks against the per-mode theory (matplotlib Figures, no pyplot).

All take a `networks.DeepLinearRun` (and the model and data it was trained on) and draw
the theory of `dmft.deep_linear` beside it, in time units t = steps x eta.
"""

from __future__ import annotations

import numpy as np

from dmft import deep_linear as dl
from dmft.errors import InputError
from dmft.plotting import new_figure

__all__ = ["modes_figure", "staircase_figure", "staircase_ylim", "noise_figure", "stationary_figure",
           "balance_figure"]


def _band(ax, t, v, color, label=None, ls="-"):
    lo, med, hi = np.nanpercentile(v, [10, 50, 90], axis=0)
    m = t > 0
    ax.plot(t[m], med[m], color=color, ls=ls, label=label)
    ax.fill_between(t[m], lo[m], hi[m], color=color, alpha=0.15)


def modes_figure(run, model, data, sde=None, title=None, weight_decay: float = 0.0):
    """Mode strengths against time: networks (median, 10-90% band), SDE paths (10-90%, dashed),
    gradient flow from the same start (black), target strengths (dotted; with weight decay also
    the fixed points, dash-dotted)."""
    fig, ax = new_figure(size=(6.5, 4.4))
    t = run.t
    flow = dl.mode_flow(model, data, t, weight_decay=weight_decay) if model.init == "aligned" else None
    s = dl.effective_modes(data).s
    star = dl.fixed_points(model, data, weight_decay) if weight_decay else None
    for i in range(run.modes.shape[-1]):
        c = f"C{i % 10}"
        _band(ax, t, run.modes[..., i], c, f"mode {i + 1}, s = {s[i]:.3g} (networks)")
        first = i == 0                                  # one legend entry per kind of line
        if sde is not None:
            lo, hi = np.nanpercentile(sde.modes[..., i], [10, 90], axis=0)
            ax.plot(t[t > 0], lo[t > 0], color=c, ls="--", lw=0.9,
                    label="per-mode SDE, 10% and 90%" if first else None)
            ax.plot(t[t > 0], hi[t > 0], color=c, ls="--", lw=0.9)
        if flow is not None:
            ax.plot(t[t > 0], flow[t > 0, i], color="k", lw=0.9, label="gradient flow" if first else None)
        ax.axhline(s[i], color=c, ls=":", lw=0.7, label="target s_i" if first else None)
        if star is not None and np.isfinite(star[i]):
            ax.axhline(star[i], color=c, ls="-.", lw=0.7, label="fixed point with decay" if first else None)
    ax.set_xscale("log")
    ax.set_xlabel("t = steps x eta")
    ax.set_ylabel("mode strength pi_i = u_i^T W v_i")
    ax.set_title(title or "networks (band) vs per-mode SDE (dashed) vs gradient flow (black)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def staircase_figure(run, data, title=None):
    """Population loss against time (median, band) with the predicted plateaus (dotted) and the
    median learning times of the modes (vertical lines)."""
    from .deep_linear import learning_times_of

    fig, ax = new_figure(size=(6.5, 4.4))
    _band(ax, run.t, run.test_loss, "k", "population loss (networks)")
    pl = dl.plateaus(data)
    lo, hi = staircase_ylim(run, data)
    ax.set_ylim(lo, hi)
    shown = [(k, lev) for k, lev in enumerate(pl["levels"]) if lo < lev < hi]
    for k, lev in shown:
        ax.axhline(lev, color="grey", ls=":", lw=0.8)
    # labels at the left, in log space at least `gap` apart (close plateaus pushed up in turn)
    gap = 0.05 * np.log10(hi / lo)
    y_prev = -np.inf
    for k, lev in sorted(shown, key=lambda kl: kl[1]):
        y = max(np.log10(lev), y_prev + gap)
        y_prev = y
        ax.text(0.01, 10 ** y, f"plateau {k}: {lev:.3g}", transform=ax.get_yaxis_transform(), fontsize=7,
                color="grey", va="bottom", ha="left")
    tl = learning_times_of(run, data)
    for i in range(tl.shape[1]):
        t_i = np.median(tl[:, i])
        if np.isfinite(t_i):
            ax.axvline(t_i, color=f"C{i % 10}", lw=0.8, label=f"mode {i + 1} learned (median)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t = steps x eta")
    ax.set_ylabel("population loss |W - M|^2/2 + d_out sigma^2/2")
    ax.set_title(title or "saddle-to-saddle staircase (dotted: predicted plateaus)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def staircase_ylim(run, data) -> tuple[float, float]:
    """The loss axis of the staircase: from a fifth of the lowest positive plateau (the noise
    floor, or without label noise the weakest mode's plateau) to twice the highest plateau or
    loss shown; a loss that keeps falling once every mode is learned leaves the axis there
    instead of squeezing the steps into a few of many decades."""
    levels = np.asarray(dl.plateaus(data)["levels"], dtype=np.float64)
    pos = levels[levels > 0]
    band = np.nanpercentile(run.test_loss, 90, axis=0)[np.asarray(run.t) > 0]
    top = max(float(pos.max()), float(np.nanmax(band)) if np.isfinite(band).any() else 0.0)
    return 0.2 * float(pos.min()), 2.0 * top


def noise_figure(run, model, data, *, eta0, batch_size, title=None, weight_decay: float = 0.0):
    """Drift and diffusion along each mode against time (networks median and band; the
    formulas at the measured modes, dashed), with each mode's half-learning time (solid
    vertical; with weight decay, half its fixed point) and the theory's diffusion peak (dotted
    vertical)."""
    from .deep_linear import learning_times_of

    fig, axes = new_figure(1, 2, size=(12, 4.2))
    t = run.t
    D = dl.diffusion(model, data, run.modes, eta0=eta0, batch_size=batch_size)
    # the networks record d pi / dt of the full-batch step, the decay's -L kappa pi included
    mu = dl.drift(model, data, run.modes, eta0=eta0, batch_size=batch_size, ito=False,
                  weight_decay=weight_decay)
    targets = dl.fixed_points(model, data, weight_decay) if weight_decay else None
    tl = np.median(learning_times_of(run, data, targets=targets), axis=0)
    peaks = (dl.diffusion_peaks(model, data, eta0=eta0, batch_size=batch_size, weight_decay=weight_decay)
             if model.init == "aligned" else None)
    for i in range(run.modes.shape[-1]):
        c = f"C{i % 10}"
        _band(axes[0], t, run.drift[..., i], c, f"mode {i + 1}")
        _band(axes[1], t, run.diffusion[..., i], c, f"mode {i + 1}")
        axes[0].plot(t[t > 0], np.nanmedian(mu[..., i], 0)[t > 0], color=c, ls="--", lw=0.8)
        axes[1].plot(t[t > 0], np.nanmedian(D[..., i], 0)[t > 0], color=c, ls="--", lw=0.8)
        for ax in axes:
            if np.isfinite(tl[i]):
                ax.axvline(tl[i], color=c, lw=0.8)
            if peaks is not None and ax is axes[1]:
                ax.axvline(peaks["t_peak"][i], color=c, lw=0.8, ls=":")
    axes[0].set_ylabel("drift d pi / dt (full-batch gradient)")
    axes[1].set_ylabel("diffusion Var[delta pi] / eta per step")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("t = steps x eta")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title or "drift and diffusion per mode (solid vertical: half learned; dotted: "
                 "predicted diffusion peak)", fontsize=9)
    return fig


def stationary_figure(run, model, data, *, eta0, batch_size, after, title=None, weight_decay: float = 0.0):
    """Histograms of each mode after t = after against the predicted stationary density
    (solid) and its Boltzmann approximation (dashed; around the fixed point with decay; a mode
    that decays to 0 from its start gets no curve, only a note)."""
    from .deep_linear import decaying_modes

    t = np.asarray(run.t, float)
    if isinstance(after, bool) or not isinstance(after, (int, float, np.number)) or not after < t[-1]:
        raise InputError(f"after: need a time before the run's last save t = {t[-1]:g} (the histograms are of "
                         f"the saves after it), got {after!r}")
    late = run.modes[:, run.t > after]
    r = late.shape[-1]
    fig, axes = new_figure(1, r, size=(3.6 * r, 3.4), squeeze=False)
    T = dl.boltzmann_temperature(model, data, eta0=eta0, batch_size=batch_size, weight_decay=weight_decay)
    s = dl.fixed_points(model, data, weight_decay)
    decays = decaying_modes(model, data, weight_decay)
    for i, ax in enumerate(axes[0]):
        x = late[..., i].ravel()
        x = x[np.isfinite(x)]
        ax.hist(x, bins=60, density=True, color=f"C{i % 10}", alpha=0.5, label="networks")
        ax.set_xlabel(f"pi_{i + 1}")
        ax.set_title(f"mode {i + 1}", fontsize=9)
        if decays[i]:
            ax.text(0.5, 0.9, "decays to 0 from its start\n(below the decay's barrier)", transform=ax.transAxes,
                    fontsize=7, ha="center", va="top")
            continue
        grid = np.linspace(max(x.min() - 3 * x.std(), 1e-6 * x.max()), x.max() + 3 * x.std(), 1001)
        try:
            p = dl.stationary_density(model, data, grid, eta0=eta0, batch_size=batch_size,
                                      weight_decay=weight_decay)[:, i]
            ax.plot(grid, p, "k", lw=1.2, label="stationary density")
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
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
