"""Theory against simulation: comparisons, fits, the lazy-to-rich sweep, reports and figures.

    import validation
    sweep = validation.lazy_to_rich(model, data, gamma0s=[0.1, 1.0], widths=[64, 256], seeds=8,
                                    solve_kw=dict(eta0=0.5, steps=600, save_every=20))
    validation.compare(sweep.solutions[1.0], sweep.runs[1.0][256]).summary
"""

from . import plots
from .compare import Comparison, compare, width_scaling
from .fitting import LogLogFit, loglog_fit
from .sweep import LazyToRich, lazy_to_rich

__all__ = ["compare", "Comparison", "width_scaling", "lazy_to_rich", "LazyToRich", "loglog_fit",
           "LogLogFit", "plots"]
