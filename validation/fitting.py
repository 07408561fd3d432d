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

__all__ = ["LogLogFit", "loglog_fit"]


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
        raise InputError(f"log-log fit needs positive finite values, got x={x}, y={y}")
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
