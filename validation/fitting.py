"""Fits for convergence claims: error against width or step size on log-log axes.

Example:
    >>> import numpy as np
    >>> from validation.fitting import loglog_fit
    >>> n = np.array([64, 128, 256, 512])
    >>> fit = loglog_fit(n, 3.0 / n)
    >>> round(fit.slope, 6), fit.x_range
    (-1.0, (64.0, 512.0))
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dmft.errors import InputError
from dmft.solve import t_quantile

from .inputs import real_array

__all__ = ["LogLogFit", "loglog_fit", "node_extrapolation"]


class LogLogFit(NamedTuple):
    """log y = intercept + slope log x, least squares."""
    slope: float
    intercept: float
    stderr: float                 # one standard error of the slope (nan for two points); a 95%
    #                               interval is slope +- t(n - 2 dof, 0.975) stderr (coverage tested)
    x_range: tuple[float, float]
    n: int

    def predict(self, x):
        return np.exp(self.intercept) * np.asarray(x, float) ** self.slope

    def half_width(self, level: float = 0.95) -> float:
        """Half the slope's `level` interval: t(n - 2 dof) quantile x stderr (nan for two points).
        One standard error covered 49% of the slopes fitted through 3 points."""
        if not np.isfinite(self.stderr):
            return float("nan")
        return t_quantile(0.5 + level / 2, self.n - 2) * self.stderr

    def describe(self) -> str:
        err = (f"+- {self.half_width():.3g} (95%, t with {self.n - 2} dof)" if np.isfinite(self.stderr)
               else "(no error estimate)")
        return (f"slope {self.slope:+.3f} {err} over x in "
                f"[{self.x_range[0]:g}, {self.x_range[1]:g}] ({self.n} points)")


def loglog_fit(x, y) -> LogLogFit:
    """Least-squares slope of log y against log x.

    Raises:
        InputError (a ValueError): x or y not arrays of real numbers (text, None, complex,
        booleans), fewer than two points, all x equal (no slope: least squares returned an
        arbitrary one) or spread by less than 1e-9 in log (a slope of rounding), or
        non-positive / non-finite values.
    """
    for name, v in (("x", x), ("y", y)):
        try:
            is_bool = np.asarray(v).dtype == bool
        except (ValueError, TypeError):   # (ragged, and the like: `real_array` names it)
            is_bool = False
        if is_bool:                       # (read as 1 and 0, and refused as "not positive")
            raise InputError(f"{name}: booleans are not measurements; pass real numbers")
    x = real_array("x", x).ravel()
    y = real_array("y", y).ravel()
    if x.shape != y.shape:
        raise InputError(f"x and y must have the same length, got {x.shape} and {y.shape}")
    if x.size < 2:
        raise InputError("a log-log fit needs at least two points")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        nan = [i for i, v in enumerate(zip(x, y)) if np.isnan(v[0]) or np.isnan(v[1])]
        hint = (f" (NaN at point(s) {nan}: a time or gap that was never reached, e.g. a grokking_times "
                "gap where the test loss never fell below the threshold within the run; run longer or "
                "leave those points out)") if nan else ""
        raise InputError(f"log-log fit needs positive finite values, got x={x}, y={y}{hint}")
    if np.unique(x).size < 2:
        raise InputError(f"a log-log fit needs at least two distinct x, got x = {x[0]:g} at all "
                         f"{x.size} points")
    lx, ly = np.log(x), np.log(y)
    if np.ptp(lx) < 1e-9:            # (x 1e-15 apart read a slope of 5.5e14)
        raise InputError(f"a log-log fit needs x spread beyond rounding, got x from {x.min()!r} to {x.max()!r} "
                         f"(log range {np.ptp(lx):.2g})")
    A = np.stack([np.ones_like(lx), lx], axis=1)
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    resid = ly - A @ coef
    if x.size > 2:
        s2 = resid @ resid / (x.size - 2)
        stderr = float(np.sqrt(s2 / np.sum((lx - lx.mean()) ** 2)))
    else:
        stderr = float("nan")
    return LogLogFit(float(coef[1]), float(coef[0]), stderr, (float(x.min()), float(x.max())), int(x.size))


def node_extrapolation(full, half, quarter, full_se=None, half_se=None, quarter_se=None) -> dict:
    """A sampled estimate's node-count bias from independent solves at M, M / 2 and M / 4 nodes a
    replica, and its extrapolation to infinitely many nodes with an error that counts how far the
    three are from a 1 / M law (the replicas' spread, all at M, sees neither).

    full, half, quarter: the estimates x(M), x(M / 2), x(M / 4) (arrays of one shape; NaN where
    undefined). *_se: their standard errors (optional; None or NaN: unknown).

    For x(M) = x_inf + a / M + b / M^2: shift = x(M) - x(M / 2) = -a / M - 3 b / M^2 (minus the
    bias at M, to first order); curvature = (x(M / 2) - x(M / 4)) - 2 shift = -6 b / M^2 (0 on a
    1 / M law: successive shifts double); extrapolated = 2 x(M) - x(M / 2) (Richardson) = x_inf -
    2 b / M^2, whose remaining bias is curvature / 3. extrapolated_se = sqrt(4 full_se^2 + half_se^2
    + (curvature / 3)^2): the independent solves' errors and that bias in quadrature (the
    curvature's own noise included: conservative on a 1 / M law, honest off it; without errors,
    full_se and half_se both unknown, the curvature term alone; NaN where one of the two is
    unknown). shift_se and curvature_se are the independent solves' errors.

    Returns {"shift", "shift_se", "curvature", "curvature_se", "extrapolated", "extrapolated_se"}."""
    x = [real_array(name, v) for name, v in (("full", full), ("half", half), ("quarter", quarter))]
    if not x[0].shape == x[1].shape == x[2].shape:
        raise InputError(f"full, half and quarter must have one shape, got {[v.shape for v in x]}")
    se = []
    for name, v in (("full_se", full_se), ("half_se", half_se), ("quarter_se", quarter_se)):
        v = np.full(x[0].shape, np.nan) if v is None else real_array(name, v)
        if v.shape != x[0].shape:
            raise InputError(f"{name}: shape {v.shape} differs from the estimates' {x[0].shape}")
        if np.any(v < 0):
            raise InputError(f"{name}: standard errors are >= 0, got {v[v < 0].ravel()[:3]}")
        se.append(v)
    f, h, q = x
    shift = f - h
    curvature = (h - q) - 2 * shift
    # both errors unknown: the curvature term alone; one of them unknown (or inf): NaN (inf), not
    # the other's error dropped with it (a full_se of 0.05 beside an unknown half_se read 7e-17)
    none = np.isnan(se[0]) & np.isnan(se[1])
    noise = np.where(none, 0.0, np.hypot(2 * se[0], se[1]))
    return {"shift": shift, "shift_se": np.hypot(se[0], se[1]),
            "curvature": curvature, "curvature_se": np.sqrt(4 * se[0] ** 2 + 9 * se[1] ** 2 + se[2] ** 2),
            "extrapolated": f + shift, "extrapolated_se": np.hypot(noise, curvature / 3)}
