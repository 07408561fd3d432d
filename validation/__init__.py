"""Theory against simulation: comparisons, fits, verdicts, grokking metrics and their figures.

    import validation
    sweep = validation.lazy_to_rich(model, data, gamma0s=[0.1, 1.0], widths=[64, 256], seeds=8,
                                    schedule=dmft.Schedule(eta0=0.5, steps=600, save_every=20))
    validation.compare(sweep.solutions[1.0], sweep.runs[1.0][256]).summary
    validation.checks(sweep)                       # verdicts against stated tolerances
    validation.grokking_times(t, train_loss, test_loss, threshold)

Importing this package changes nothing global (no plotting backend, no JAX flags).
"""

from . import deep_linear, grokking, plots, plots_deep_linear, plots_grokking, verdicts
from .compare import Comparison, compare, node_bias, width_scaling
from .fitting import LogLogFit, node_extrapolation, loglog_fit
from .grokking import GrokTimes, early_warning, grokking_times, jackknife_se
from .sweep import LazyToRich, lazy_to_rich
from .verdicts import checks

__all__ = ["compare", "Comparison", "width_scaling", "node_bias", "lazy_to_rich", "LazyToRich", "loglog_fit",
           "LogLogFit", "node_extrapolation", "checks", "grokking_times", "GrokTimes", "early_warning", "jackknife_se", "grokking",
           "plots", "plots_grokking", "plots_deep_linear", "deep_linear", "verdicts"]
