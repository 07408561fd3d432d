"""The figure of one or a few trajectories (`Trajectory.plot`), in DMFT time units.

Figures are built on `matplotlib.figure.Figure` directly, never through pyplot's global
state, so importing or calling this changes no backend and leaks no figures.
"""

from __future__ import annotations

import functools

import numpy as np

from .errors import InputError

__all__ = ["trajectory_figure", "new_figure", "mark_lone_points", "tidy_log_ticks", "seed_stats", "seed_mean_line",
           "log_ylim_from_lines", "BAND_NOTE"]

BAND_NOTE = "band: +-1 std over seeds"


def new_figure(nrows: int = 1, ncols: int = 1, *, size=None, **subplot_kw):
    """(Figure, axes) without pyplot: constrained layout, `subplots` keywords passed on. The
    figure marks its lone points when drawn (`mark_lone_points`)."""
    size = size or (4.3 * ncols, 3.6 * nrows)
    fig = _figure_class()(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, **subplot_kw)
    return fig, axes


@functools.cache
def _figure_class():
    from matplotlib.figure import Figure

    class DmftFigure(Figure):
        """A Figure that gives a marker to each line with a single visible point as it is drawn."""

        def draw(self, renderer):
            mark_lone_points(self)
            return super().draw(renderer)

    return DmftFigure


def mark_lone_points(fig):
    """Give a marker to every line of `fig` that has exactly one point it can draw (finite, and
    positive on a log axis) and no marker: a line through one point draws nothing, so a run
    with a single save after t = 0 (the log time axis leaves t = 0 out) showed blank panels.
    Only lines in data coordinates: a reference line with an end in axes units (`axhline`,
    `axvline`: x from 0 to 1 of the panel) is drawn whatever the scale, and read as one point on a
    log axis it got a filled circle at the panel's edge that looked like data. Returns fig."""
    for ax in fig.axes:
        logx, logy = ax.get_xscale() == "log", ax.get_yscale() == "log"
        for line in ax.get_lines():
            if line.get_marker() not in (None, "None", "", " ") or line.get_linestyle() in ("None", "", " "):
                continue
            if line.get_transform() is not ax.transData:
                continue
            try:
                x = np.asarray(line.get_xdata(), dtype=np.float64)
                y = np.asarray(line.get_ydata(), dtype=np.float64)
            except (TypeError, ValueError):        # (dates, categories: not ours)
                continue
            if x.shape != y.shape:
                continue
            ok = np.isfinite(x) & np.isfinite(y) & (x > 0 if logx else True) & (y > 0 if logy else True)
            if int(np.sum(ok)) == 1:
                line.set_marker("o")
                line.set_markersize(max(line.get_markersize(), 4.0))
    return fig


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
            with np.errstate(over="ignore"):          # (a span past the float range: not a decade)
                if not (lo > 0 and np.isfinite(hi) and hi > lo) or not np.log10(hi / lo) <= 1.0:
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


def seed_stats(values):
    """(mean, std, n) over the leading seed axis: std with ddof=1 (the reports' spread) and NaN
    where fewer than two seeds are finite (no spread to show); n the finite seeds per time.
    Computed without nan-functions so that an all-NaN time warns of nothing."""
    v = np.asarray(values, dtype=np.float64)
    fin = np.isfinite(v)
    n = fin.sum(axis=0)
    z = np.where(fin, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, z.sum(axis=0) / n, np.nan)
        dev = np.where(fin, v - mean, 0.0)
        std = np.where(n >= 2, np.sqrt((dev ** 2).sum(axis=0) / np.maximum(n - 1, 1)), np.nan)
    return mean, std, n


def _seed_label(label, values):
    """`label`, with how many seeds are finite at the last time when fewer than all."""
    v = np.asarray(values, dtype=np.float64)
    seeds = v.shape[0]
    last = np.isfinite(v[:, -1]) if v.ndim >= 2 else np.isfinite(v)
    n_end = int(last.reshape(seeds, -1).all(axis=1).sum())
    if label is None or n_end == seeds:
        return label
    return f"{label} ({n_end}/{seeds} seeds finite)"


def seed_mean_line(ax, t, mask, values, *, label=None, band=False, band_alpha=0.12, label_always=True,
                   **style):
    """Draw the seed mean of `values` (seeds, time) against t[mask], with a +-1 std band
    (ddof=1, only where two or more seeds are finite) when `band`.

    A label says how many seeds are finite at the end when fewer than all (a diverged seed
    would otherwise drop silently out of the mean); an all-NaN ensemble draws no line, only an
    empty legend entry saying "diverged"; with label_always=False the label is kept only then
    (a figure whose legend does not list its ensembles). Returns the Line2D."""
    v = np.asarray(values, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if not np.isfinite(v).any():
        style = {k: x for k, x in style.items() if k not in ("marker", "ms")}
        return ax.plot([], [], label=None if label is None else f"{label}: diverged", **style)[0]
    mean, std, _ = seed_stats(v)
    shown = _seed_label(label, v)
    if not label_always and shown == label:
        shown = None
    line = ax.plot(t[mask], mean[mask], label=shown, **style)[0]
    if band:
        lo, hi = mean - std, mean + std
        if ax.get_yscale() == "log":            # below the axis: `log_ylim_from_lines` sets the limits
            lo = np.maximum(lo, 1e-300)
        ok = np.isfinite(std)
        if ok[mask].any():
            ax.fill_between(t[mask], lo[mask], hi[mask], where=ok[mask],
                            color=line.get_color(), alpha=band_alpha, lw=0)
    return line


def log_ylim_from_lines(ax, margin: float = 1.15):
    """On a log y axis, the y-limits of the finite positive data of the lines (the centre
    curves and horizontal reference lines) widened by `margin`, not of the bands: a band's
    lower edge mean - std is <= 0 where the seeds spread widely, and its clipped floor would
    stretch the axis over hundreds of decades. Returns ax."""
    if ax.get_yscale() != "log":
        return ax
    skip = ax.get_xaxis_transform(which="grid")          # axvline: y in axes units
    ys = [np.asarray(ln.get_ydata(), dtype=np.float64).ravel() for ln in ax.get_lines()
          if ln.get_transform() is not skip and len(ln.get_ydata())]
    y = np.concatenate(ys) if ys else np.zeros(0)
    y = y[np.isfinite(y) & (y > 0)]
    if y.size:
        ax.set_ylim(y.min() / margin, y.max() * margin)
    return ax


def _data_digest(tr):
    """The data digest a trajectory's info records (`Dataset.describe`), or None."""
    cfg = (getattr(tr, "info", None) or {}).get("config") if isinstance(getattr(tr, "info", None), dict) else None
    data = cfg.get("data") if isinstance(cfg, dict) else None
    digest = data.get("sha256") if isinstance(data, dict) else None
    return digest if isinstance(digest, str) else None


def trajectory_figure(trajectories, *, labels=None, title=None):
    """Train and test loss, alignment and first-layer weight change against t (log time).

    A theory is a solid line; an ensemble of networks a dotted seed mean with a +-1 std band.
    """
    trajectories = list(trajectories)
    if not trajectories or not all(hasattr(tr, "ENSEMBLE_AXES") and hasattr(tr, "t") for tr in trajectories):
        raise InputError("trajectories: need one or more dmft.Trajectory objects (a Solution, a Run, ...), "
                         f"got {[type(tr).__name__ for tr in trajectories]}")
    labels = list(labels) if labels is not None else [tr.label() for tr in trajectories]
    if len(labels) != len(trajectories):
        raise InputError(f"labels: {len(labels)} labels for {len(trajectories)} trajectories")
    fig, axes = new_figure(1, 3, size=(13, 3.8))
    axes[0].set_yscale("log")
    any_ens = False
    for i, (tr, lab) in enumerate(zip(trajectories, labels)):
        color = f"C{i % 10}"
        ens = bool(tr.ENSEMBLE_AXES)
        any_ens = any_ens or ens
        t = np.asarray(tr.t, dtype=np.float64)
        m = t > 0
        style = dict(color=color, ls=":" if ens else "-", lw=1.8)
        for name, ax, ls_extra in (("train_loss", axes[0], {}), ("test_loss", axes[0], {"alpha": 0.55})):
            v = getattr(tr, name)
            if v is None:
                continue
            label = f"{lab}: {name.split('_')[0]}"
            marker = dict(marker="o" if name == "test_loss" else None, ms=2.5)
            if ens:
                seed_mean_line(ax, t, m, v, label=label, band=True, **style, **ls_extra, **marker)
            else:
                ax.plot(t[m], np.asarray(v, dtype=np.float64)[m], label=label, **{**style, **ls_extra}, **marker)
        for ax, v in ((axes[1], tr.alignment), (axes[2], (tr.weight_change or {}).get("first_layer"))):
            if v is None:
                continue
            if ens:
                seed_mean_line(ax, t, m, v, label=lab, band=True, **style)
            else:
                ax.plot(t[m], np.asarray(v, dtype=np.float64)[m], label=lab, **style)
    log_ylim_from_lines(axes[0])
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
    if any_ens:
        axes[0].set_title(f"dotted: seed mean ({BAND_NOTE})", fontsize=9)
    # trajectories of different data drawn together (a legitimate figure, which `compare` refuses
    # to judge): said on it, as their recorded data digests say
    digests = [_data_digest(tr) for tr in trajectories]
    if len({d for d in digests if d}) > 1:
        note = "different data: " + ", ".join(f"{lab} ({d[:8]})" for lab, d in zip(labels, digests) if d)
        title = f"{title}\n{note}" if title else note
    if title:
        fig.suptitle(title, fontsize=None if "different data" not in title else 9)
    return tidy_log_ticks(fig)
