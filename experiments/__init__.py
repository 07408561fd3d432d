"""The application: the `dmft` command, its configurations, jobs, reports, scans and stores.

Layers (each imports only those before it): `dmft` (problem spec, theory, solvers) <-
`networks` (finite networks) <- `validation` (comparisons, fits, metrics, their figures)
<- `experiments` (this package) <- `scripts`. See docs/architecture.md.

    from experiments import scan, grok, dln, jobs
    res = scan.run("scripts/configs/scan.toml", "results/scan")
"""

__all__ = ["console", "interrupted_import", "cli", "config", "problem", "jobs", "report", "output", "store", "scan",
           "grok", "dln"]


RECEIVED: list[int] = []     # the interruptions' signals the command's handlers received (a run's)


def console() -> None:
    """The `dmft` command (`cli.console`), started from this package, which imports nothing. A
    Ctrl-C while the command's libraries load (JAX: 1-4 s) ended with Python's traceback and the
    signal's own status, or, landing in a C extension's initialization, exit 1 and an ImportError:
    it is held until they have loaded, then ends the command as any interruption does,
    "interrupted" and exit 130 (nothing has been written then)."""
    import signal
    import sys

    held = []
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
        try:
            from . import cli
        finally:
            signal.signal(signal.SIGINT, _ctrl_c)
    else:
        from . import cli
    if held:
        print("dmft: interrupted while starting (nothing written)", file=sys.stderr)
        sys.exit(130)
    try:
        cli.console()
    except SystemExit as end:           # the run has ended, its results and run.json written
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(s) is not signal.SIG_IGN:
                # (as the interpreter reads it: None is 0, a message 1)
                signal.signal(s, _ended(0 if end.code is None else end.code if isinstance(end.code, int) else 1))
        raise


def _ended(code: int):
    """A handler for a signal while the interpreter exits after the run (its atexit callbacks,
    JAX's runtime torn down): a Ctrl-C there printed "Exception ignored ... KeyboardInterrupt"
    and a SIGTERM made a complete run's status -15; it ends the process at once with the run's
    own status, its output flushed."""
    def handler(signum, frame):
        import os
        import sys

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, RuntimeError):     # (closed, or a flush the signal interrupted)
                pass
        os._exit(code)
    return handler


def _ctrl_c(signum, frame):
    """Python's Ctrl-C handler (KeyboardInterrupt), noting the signal (`RECEIVED`)."""
    RECEIVED.append(signum)
    raise KeyboardInterrupt


def interrupted_import(err: BaseException) -> int | None:
    """The signal behind an ImportError, or None (any other error): a Ctrl-C (or SIGTERM, SIGHUP)
    landing while a C extension initializes (numpy's, jaxlib's) comes out as "ImportError: ...
    failed to import" (an exit 1 and a traceback), with the interruption at the end of its chain
    of ImportErrors or, where the extension printed it and raised a bare ImportError, as a signal
    the command's handlers received (`RECEIVED`)."""
    import signal

    seen = []
    while isinstance(err, ImportError) and not any(err is e for e in seen):
        seen.append(err)
        err = err.__cause__ or err.__context__
    if not seen:
        return None
    if isinstance(err, KeyboardInterrupt):
        return int(getattr(err, "signum", signal.SIGINT))
    return RECEIVED[-1] if RECEIVED else None
