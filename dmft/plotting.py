"""The figure of one or a few trajectories (`Trajectory.plot`), in DMFT time units.

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot's global
state, so importing or calling this changes no backend and leaks no figures.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

__all__ = ["trajectory_figure", "new_figure", "tidy_log_ticks"]


def new_figure(nrows: int = 1, ncols: int = 1, *, size=None, **subplot_kw):
    """(Figure, axes) without pyplot: constrained layout, `subplots` keywords passed on."""
    from matplotlib.figure import Figure

    size = size or (4.3 * ncols, 3.6 * nrows)
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, **subplot_kw)
    return fig, axes


def _minor_log_formatter(axis):
    """Short minor tick labels ('%g') for a log axis spanning at most a decade, chosen at draw
    time so that no two labels (the decade labels included) overlap: matplotlib's own minor
    labels ("3x10^1") collide on narrow panels and short spans."""
    from matplotlib import font_manager, rcParams, ticker

    class MinorLog(ticker.Formatter):
        def __init__(self):
            self.shown = set()

        def set_locs(self, locs):
            self.shown = set()
            lo, hi = sorted(axis.get_view_interval())
            if not (lo > 0 and np.isfinite(hi) and hi > lo) or np.log10(hi / lo) > 1.0:
                return
            horizontal = axis.axis_name == "x"
            box = axis.axes.bbox
            length = box.width if horizontal else box.height
            size = font_manager.FontProperties(
                size=rcParams["xtick.labelsize" if horizontal else "ytick.labelsize"]).get_size_in_points()
            px = size * axis.figure.dpi / 72.0

            def place(x, text):          # (center, half extent) in pixels along the axis
                c = length * np.log(x / lo) / np.log(hi / lo)
                return c, (0.62 * px * len(text) if horizontal else 0.7 * px) / 2 + 0.25 * px

            taken = [place(x, "10^0") for x in axis.get_majorticklocs() if lo <= x <= hi]
            ordered = sorted((x for x in locs if lo <= x <= hi),
                             key=lambda x: (round(x / 10.0 ** np.floor(np.log10(x)), 6) not in (2.0, 5.0), x))
            for x in ordered:
                c, h = place(x, f"{x:g}")
                if all(abs(c - c2) >= h + h2 for c2, h2 in taken):
                    taken.append((c, h))
                    self.shown.add(x)

        def __call__(self, x, pos=None):
            return f"{x:g}" if x in self.shown else ""

    return MinorLog()


def tidy_log_ticks(fig):
    """Short, non-colliding minor tick labels on every log axis of `fig` (chosen at draw
    time, so later limits are followed). Returns fig."""
    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "log":
                axis.set_minor_formatter(_minor_log_formatter(axis))
    return fig


def _series(values, ensemble: bool):
    """(center, low, high) of a record: the seed mean and +-1 std band for an ensemble."""
    v = np.asarray(values, dtype=np.float64)
    if not ensemble:
        return v, None, None
    with np.errstate(invalid="ignore"):
        m, s = np.nanmean(v, axis=0), np.nanstd(v, axis=0)
    return m, m - s, m + s


def trajectory_figure(trajectories, *, labels=None, title=None):
    """Train and test loss, alignment and first-layer weight change against t (log time).

    A theory is a solid line; an ensemble of networks a dotted seed mean with a +-1 std band.
    """
    trajectories = list(trajectories)
    labels = list(labels) if labels is not None else [tr.label() for tr in trajectories]
    if len(labels) != len(trajectories):
        raise InputError(f"labels: {len(labels)} labels for {len(trajectories)} trajectories")
    fig, axes = new_figure(1, 3, size=(13, 3.8))
    for i, (tr, lab) in enumerate(zip(trajectories, labels)):
        color = f"C{i % 10}"
        ens = bool(tr.ENSEMBLE_AXES)
        t = np.asarray(tr.t, dtype=np.float64)
        m = t > 0
        style = dict(color=color, ls=":" if ens else "-", lw=1.8)
        for name, ax, ls_extra in (("train_loss", axes[0], {}), ("test_loss", axes[0], {"alpha": 0.55})):
            v = getattr(tr, name)
            if v is None:
                continue
            c, lo, hi = _series(v, ens)
            ax.plot(t[m], c[m], label=f"{lab}: {name.split('_')[0]}", **{**style, **ls_extra},
                    marker="o" if name == "test_loss" else None, ms=2.5)
            if lo is not None:
                ax.fill_between(t[m], np.maximum(lo, 1e-300)[m], hi[m], color=color, alpha=0.12)
        for ax, v in ((axes[1], tr.alignment), (axes[2], (tr.weight_change or {}).get("first_layer"))):
            if v is None:
                continue
            c, lo, hi = _series(v, ens)
            ax.plot(t[m], c[m], label=lab, **style)
            if lo is not None:
                ax.fill_between(t[m], lo[m], hi[m], color=color, alpha=0.12)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss (mean squared error; test: markers)")
    axes[1].set_ylabel("NTK-target alignment")
    axes[2].set_ylabel("relative first-layer change")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("t (DMFT time = steps x eta0)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    if len(trajectories) > 1:
        axes[1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return tidy_log_ticks(fig)
