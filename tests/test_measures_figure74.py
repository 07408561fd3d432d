"""The grok job's measures figure (`validation.plots_grokking.progress_measures`): each circled
change-time dot lies on the curve it marks, as drawn (in display coordinates, on whatever axis
scale the panel has)."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from validation.plots_grokking import progress_measures


def _on_curve_misses(fig):
    """For every circled dot (marker "o", size 6) whose x lies within its panel's drawn DMFT curve
    (the thick line of its colour): the dot's distance in pixels from that curve's straight segment
    at the dot's x, both in display coordinates (how matplotlib draws them)."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    misses = []
    for ax in fig.axes:
        lines = ax.get_lines()
        for dot in [ln for ln in lines if ln.get_marker() == "o" and ln.get_markersize() == 6]:
            curve = next(ln for ln in lines if ln.get_color() == dot.get_color() and ln.get_linewidth() == 2.0)
            xy = ax.transData.transform(np.column_stack([curve.get_xdata(), curve.get_ydata()]))
            px, py = ax.transData.transform([[dot.get_xdata()[0], dot.get_ydata()[0]]])[0]
            if xy[0, 0] <= px <= xy[-1, 0]:
                misses.append((ax.get_ylabel(), abs(py - np.interp(px, xy[:, 0], xy[:, 1]))))
    return misses


def test_every_change_dot_lies_on_its_drawn_curve():
    """Saves 2500 time units apart (a kumar run, save_every = 2500 steps of eta0 = 2): the SGD
    diffusion's half-integral dot, on its log panel, was interpolated linearly in the rate between
    two saves while the curve is drawn straight in log y; the dot sat 18% (~0.07 decades, several
    pixels) above the curve it marks. Every dot, on the linear panels too, is on its curve."""
    t = np.arange(0.0, 20001.0, 2500.0)
    diffusion = np.array([0.3, 20.0, 1.2, 0.05, 0.02, 0.01, 0.008, 0.006, 0.005])
    th = {"t": t, "train_loss": np.geomspace(1.0, 1e-3, t.size),
          "test_loss": np.array([1.0, 0.95, 0.9, 0.8, 0.1, 0.01, 0.005, 0.004, 0.004]),
          "alignment": np.array([0.05, 0.06, 0.2, 0.5, 0.7, 0.72, 0.73, 0.74, 0.75]),
          "weight_change": np.array([0.0, 0.5, 1.5, 3.0, 5.0, 5.5, 5.8, 5.9, 6.0]),
          "planted_diffusion": diffusion}
    fig = progress_measures(t, {1.0: th}, {}, [1.0])
    misses = _on_curve_misses(fig)
    assert len(misses) == 3                       # the three dots, each within the drawn curve's span
    assert all(d < 0.01 for _, d in misses), misses
    # the diffusion's dot: its value where the drawn (log-log straight) segment is, by hand
    (dot,) = [ln for ln in fig.axes[2].get_lines() if ln.get_marker() == "o" and ln.get_markersize() == 6]
    tc = dot.get_xdata()[0]
    f = np.log(tc / 2500.0) / np.log(5000.0 / 2500.0)
    assert 2500.0 < tc < 5000.0
    assert np.isclose(dot.get_ydata()[0], 20.0 ** (1 - f) * 1.2 ** f, rtol=1e-12)
