"""The application: the `dmft` command, its configurations, jobs, reports, scans and stores.

Layers (each imports only those before it): `dmft` (problem spec, theory, solvers) <-
`networks` (finite networks) <- `validation` (comparisons, fits, metrics, their figures)
<- `experiments` (this package) <- `scripts`. See docs/architecture.md.

    from experiments import scan, grok, dln, jobs
    res = scan.run("scripts/configs/scan.toml", "results/scan")
"""

__all__ = ["console", "interrupted_import", "cli", "config", "problem", "jobs", "report", "output", "store", "scan", "grok", "dln"]


def console() -> None:
    """The `dmft` command (`cli.console`), started from this package, which imports nothing: a
    Ctrl-C while the command's libraries load (JAX: 1-4 s) ended with Python's traceback and the
    signal's own status; it ends as any interruption does, "interrupted" and exit 130 (nothing has
    been written then)."""
    import sys

    try:
        from . import cli
    except (KeyboardInterrupt, ImportError) as err:
        if isinstance(err, ImportError) and interrupted_import(err) is None:
            raise                                           # (a library missing: its traceback)
        print("dmft: interrupted while starting (nothing written)", file=sys.stderr)
        sys.exit(130)
    cli.console()


def interrupted_import(err: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM, SIGHUP) behind an ImportError: one landing while a C extension
    initializes (numpy's, jaxlib's) comes out as "ImportError: ... failed to import" (an exit 1 and a
    traceback), the interruption at the end of its chain of ImportErrors; None for any other error."""
    seen = []
    while isinstance(err, ImportError) and not any(err is e for e in seen):
        seen.append(err)
        err = err.__cause__ or err.__context__
    return err if isinstance(err, KeyboardInterrupt) and seen else None
