"""The application: the `dmft` command, its configurations, jobs, reports, scans and stores.

Layers (each imports only those before it): `dmft` (problem spec, theory, solvers) <-
`networks` (finite networks) <- `validation` (comparisons, fits, metrics, their figures)
<- `experiments` (this package) <- `scripts`. See docs/architecture.md.

    from experiments import scan, grok, dln, jobs
    res = scan.run("scripts/configs/scan.toml", "results/scan")
"""

__all__ = ["cli", "config", "problem", "jobs", "report", "output", "store", "scan", "grok", "dln"]
