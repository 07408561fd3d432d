"""Theory against simulation: comparisons, fits, reports and figures."""

from .fitting import LogLogFit, loglog_fit

__all__ = ["LogLogFit", "loglog_fit"]
