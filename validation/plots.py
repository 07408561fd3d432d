"""Matplotlib figures in DMFT time units (no pyplot state leaks: figures are returned).

Example:
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np
    >>> from validation import plots
    >>> t = np.arange(1.0, 4.0)
    >>> fig = plots.loss_curves({"gamma0 = 1": (t, np.ones(3), np.ones(3) / 2)}, lazy=(t, t, t))
    >>> len(fig.axes)
    2
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["loss_curves"]


def loss_curves(curves: dict, lazy=None, title: str | None = None):
    """Train and test loss against time, one colour per curve.

    Args:
        curves: label -> (t, train_loss, test_loss or None).
        lazy: optional (t, train_loss, test_loss) of the lazy closed form, drawn
            black dashed (centered networks have one lazy limit for all gamma0).
    Returns:
        A matplotlib Figure with two axes (train, test), log-log.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True, constrained_layout=True)
    series = list(curves.items())
    if lazy is not None:
        series.append(("lazy limit (gamma0 -> 0)", lazy))
    for i, (label, (t, tr, te)) in enumerate(series):
        is_lazy = lazy is not None and i == len(series) - 1
        style = dict(color="k", ls="--", lw=1.2) if is_lazy else dict(color=f"C{i % 10}")
        t = np.asarray(t)
        mask = t > 0
        axes[0].plot(t[mask], np.asarray(tr)[mask], label=label, **style)
        if te is not None:
            axes[1].plot(t[mask], np.asarray(te)[mask], label=label, **style)
    for ax, name in zip(axes, ("train", "test")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("t (DMFT time = steps x eta0)")
        ax.set_ylabel(f"{name} loss (mean squared error)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
