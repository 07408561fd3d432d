"""The application: the `dmft` command, its configurations, jobs, reports, scans and stores.

Layers (each imports only those before it): `dmft` (problem spec, theory, solvers) <-
`networks` (finite networks) <- `validation` (comparisons, fits, metrics, their figures)
<- `experiments` (this package) <- `scripts`. See docs/architecture.md.

    from experiments import scan, grok, dln, jobs
    res = scan.run("scripts/configs/scan.toml", "results/scan")
"""

__all__ = ["console", "cli", "config", "problem", "jobs", "report", "output", "store", "scan", "grok", "dln"]


def console() -> None:
    """The `dmft` command (`cli.console`), started from this package, which imports nothing: a
    Ctrl-C while the command's libraries load (JAX: 1-4 s) ended with Python's traceback and the
    signal's own status; it ends as any interruption does, "interrupted" and exit 130 (nothing has
    been written then)."""
    import sys

    try:
        from . import cli
    except KeyboardInterrupt:
        print("dmft: interrupted while starting (nothing written)", file=sys.stderr)
        sys.exit(130)
    cli.console()
