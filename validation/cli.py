"""The `dmft` command: solve, simulate and validate from a TOML configuration.

    dmft validate                                  # the default lazy-to-rich report (a few minutes)
    dmft validate --full --out results/full        # paper-grade sizes
    dmft grok --config scripts/configs/grok_kumar.toml   # grokking: curves, measures, phase diagrams
    dmft solve --config scripts/configs/kumar.toml --gamma0 0.5 1 2
    dmft simulate --widths 64 256 --seeds 4 --set train.steps=200

Exit codes: 0 done (or already complete), 1 a check failed with --strict,
2 bad configuration or arguments, 3 the output directory holds something else,
4 a numerical failure (divergence, no convergence).
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]

EXIT_OK, EXIT_CHECK, EXIT_CONFIG, EXIT_OUTPUT, EXIT_NUMERIC = 0, 1, 2, 3, 4


def _common(s, config_help, set_help="override one key (TOML literal), repeatable"):
    """Flags every job shares: --config, --set, precision, device, progress."""
    s.add_argument("--config", help=config_help)
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help=set_help)
    prec = s.add_mutually_exclusive_group()
    prec.add_argument("--x64", dest="x64", action="store_true", default=True, help="float64 (default)")
    prec.add_argument("--x32", dest="x64", action="store_false", help="float32")
    s.add_argument("--device", choices=("cpu", "gpu"), default=None, help="JAX platform (default: JAX's choice)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")


def _parser():
    p = argparse.ArgumentParser(prog="dmft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="job", required=True)
    for job, text in (("solve", "DMFT (and lazy limit) at each gamma0"),
                      ("simulate", "finite-width network ensembles at each gamma0 and width"),
                      ("validate", "theory against networks: figures, report, verdicts")):
        s = sub.add_parser(job, help=text, description=text)
        _common(s, "TOML configuration (defaults: validation/config.py)")
        s.add_argument("--gamma0", type=float, nargs="+", help="sweep.gamma0")
        s.add_argument("--steps", type=int, help="train.steps")
        s.add_argument("--eta0", type=float, help="train.eta0")
        if job != "solve":
            s.add_argument("--widths", type=int, nargs="+", help="simulate.widths")
            s.add_argument("--seeds", type=int, help="simulate.seeds")
        if job != "simulate":
            s.add_argument("--samples", type=int, help="theory.samples")
        s.add_argument("--full", action="store_true", help="the larger, paper-grade preset")
        s.add_argument("--out", help=f"results directory (default results/{job})")
        s.add_argument("--force", action="store_true", help="recompute or overwrite an existing run")
        if job == "validate":
            s.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    _add_scan_parser(sub)
    _add_grok_parser(sub)
    return p


def _add_grok_parser(sub):
    text = "grokking as a lazy-to-rich transition: theory, networks, measures, phase diagrams"
    s = sub.add_parser("grok", help=text, description=text + " (validation/grok.py documents the TOML)")
    _common(s, "grok TOML (testbed, model.gamma0, simulate.widths, diagram, decay)")
    s.add_argument("--testbed", choices=("kumar", "modular_addition", "sparse_parity"), help="testbed.name")
    s.add_argument("--gamma0", type=float, nargs="+", help="model.gamma0")
    s.add_argument("--widths", type=int, nargs="+", help="simulate.widths")
    s.add_argument("--seeds", type=int, help="simulate.seeds")
    s.add_argument("--steps", type=int, help="train.steps")
    s.add_argument("--full", action="store_true", help="paper-size preset (Kumar et al. Fig. 1 and 3e)")
    s.add_argument("--out", help="results directory (default results/grok)")
    s.add_argument("--force", action="store_true", help="recompute or overwrite an existing run")


def _grok_main(args) -> int:
    from .config import ConfigError
    from .grok import load_config

    over = list(args.overrides)
    for attr, key in (("testbed", "testbed.name"), ("gamma0", "model.gamma0"), ("widths", "simulate.widths"),
                      ("seeds", "simulate.seeds"), ("steps", "train.steps")):
        v = getattr(args, attr)
        if v is not None:
            over.append(f"{key}={v!r}" if not isinstance(v, str) else f"{key}='{v}'")
    if args.testbed not in (None, "kumar") and not any(o.startswith("diagram.axes") for o in over):
        over.append("diagram.axes=[]")            # phase diagrams are for the Kumar model
    try:
        cfg = load_config(args.config, over, full=args.full)
    except ConfigError as err:
        print(f"dmft grok: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        devices = _select_device(args.device, args.x64)
    except ValueError as err:
        print(f"dmft grok: {err}", file=sys.stderr)
        return EXIT_CONFIG
    import dmft
    from . import grok
    from .jobs import OutputConflict, _write_manifest, prepare_output

    out = args.out or os.path.join("results", "grok")
    log = lambda s: print(s, file=sys.stderr)   # noqa: E731
    try:
        grok.build(cfg)                          # sizes and values the generators refuse
        if not prepare_output(out, "grok", cfg, args.force):
            print(f"dmft grok: {out} already holds this run (complete); --force recomputes it")
            return EXIT_OK
    except OutputConflict as err:
        print(f"dmft grok: {err}", file=sys.stderr)
        return EXIT_OUTPUT
    except ValueError as err:
        print(f"dmft grok: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    log(f"dmft grok: {'float64' if args.x64 else 'float32'} on {devices[0]}, writing {out}")
    try:
        res = grok.run(cfg, out, log=log, progress=not args.no_progress and sys.stderr.isatty())
    except (dmft.DivergenceError, dmft.NotConverged) as err:
        print(f"dmft grok: numerical failure: {err}", file=sys.stderr)
        _write_manifest(out, "grok", cfg, "failed", {"error": str(err)})
        return EXIT_NUMERIC
    _write_manifest(out, "grok", cfg, "complete", {"wall_s": res["report"]["wall_s"]})
    print(f"report: {res['files']['report'][0]}")
    for path in res["files"]["figures"].values():
        print(f"figure: {path}")
    return EXIT_OK


def _add_scan_parser(sub):
    text = "a resumable parameter scan: one compiled program per shape, sharded over devices and processes"
    s = sub.add_parser("scan", help=text, description=text + " (validation/scan.py documents the TOML)")
    _common(s, "scan TOML ([scan.grid] or [scan.points] and the problem sections)",
            "override one key (TOML literal), e.g. scan.grid.model.gamma0=[0.1,1]; repeatable")
    s.add_argument("--out", help="the results store (default results/scan); rerunning resumes it")
    s.add_argument("--distributed", action="store_true",
                   help="join jax.distributed with the cluster's own settings (SLURM, ...)")
    s.add_argument("--coordinator", metavar="HOST:PORT",
                   help="jax.distributed coordinator (process 0's address)")
    s.add_argument("--num-processes", type=int, help="jax.distributed: number of processes")
    s.add_argument("--process-id", type=int, help="jax.distributed: this process's rank")


def _scan_main(args) -> int:
    from .scan import ConfigError, StoreConflict, StoreWriteError, init_distributed, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"dmft scan: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    explicit = [args.coordinator, args.num_processes, args.process_id]
    try:
        if any(v is not None for v in explicit) and any(v is None for v in explicit):
            raise ValueError("--coordinator, --num-processes and --process-id go together")
        if args.distributed or explicit[0] is not None:
            import jax

            if args.device is not None:
                jax.config.update("jax_platforms", "cuda" if args.device == "gpu" else "cpu")
            init_distributed(*explicit)
            devices = _select_device(None, args.x64)
        else:
            devices = _select_device(args.device, args.x64)
    except (ValueError, RuntimeError) as err:
        print(f"dmft scan: {err}", file=sys.stderr)
        return EXIT_CONFIG
    import dmft
    from . import scan

    out = args.out or os.path.join("results", "scan")
    print(f"dmft scan: {'float64' if args.x64 else 'float32'} on {devices[0]}, writing {out}",
          file=sys.stderr)
    try:
        res = scan.run(cfg, out, progress=not args.no_progress and sys.stderr.isatty(),
                       log=lambda s: print(s, file=sys.stderr))
    except StoreConflict as err:
        print(f"dmft scan: {err}", file=sys.stderr)
        return EXIT_OUTPUT
    except StoreWriteError as err:
        print(f"dmft scan: {err}", file=sys.stderr)
        return EXIT_OUTPUT
    except (dmft.DivergenceError, dmft.NotConverged) as err:
        print(f"dmft scan: numerical failure: {err}; finished chunks are kept in {out}", file=sys.stderr)
        return EXIT_NUMERIC
    except ValueError as err:     # a size or combination the solvers refuse, before compute
        print(f"dmft scan: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if res is not None:
        print(res.summary())
    return EXIT_OK


def _overrides(args) -> list[str]:
    out = list(args.overrides)
    flag_keys = {"gamma0": "sweep.gamma0", "steps": "train.steps", "eta0": "train.eta0",
                 "widths": "simulate.widths", "seeds": "simulate.seeds", "samples": "theory.samples"}
    for attr, key in flag_keys.items():
        v = getattr(args, attr, None)
        if v is not None:
            out.append(f"{key}={list(v) if isinstance(v, list) else v!r}")
    return out


def _select_device(device, x64):
    import jax

    if device is not None:
        jax.config.update("jax_platforms", "cuda" if device == "gpu" else "cpu")
    try:
        devices = jax.devices()
    except RuntimeError as err:
        raise ValueError(f"--device {device}: no such device here ({err})") from None
    jax.config.update("jax_enable_x64", bool(x64))
    return devices


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.job == "scan":
        return _scan_main(args)
    if args.job == "grok":
        return _grok_main(args)
    from .config import ConfigError, load

    try:
        cfg = load(args.config, _overrides(args), full=args.full)
    except ConfigError as err:
        print(f"dmft {args.job}: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        devices = _select_device(args.device, args.x64)
    except ValueError as err:
        print(f"dmft {args.job}: {err}", file=sys.stderr)
        return EXIT_CONFIG
    import dmft
    from .jobs import OutputConflict, run_job

    out = args.out or os.path.join("results", args.job)
    progress = not args.no_progress and sys.stderr.isatty()
    print(f"dmft {args.job}: {'float64' if args.x64 else 'float32'} on {devices[0]}, writing {out}",
          file=sys.stderr)
    try:
        result = run_job(args.job, cfg, out, force=args.force, progress=progress,
                         log=lambda s: print(s, file=sys.stderr))
    except OutputConflict as err:
        print(f"dmft {args.job}: {err}", file=sys.stderr)
        return EXIT_OUTPUT
    except (dmft.DivergenceError, dmft.NotConverged) as err:
        print(f"dmft {args.job}: numerical failure: {err}", file=sys.stderr)
        return EXIT_NUMERIC
    except ValueError as err:      # a size or combination the solvers refuse, before compute
        print(f"dmft {args.job}: configuration error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    from .report import verdict_table

    if result["checks"]:
        print(verdict_table(result["checks"]))
    files = result["files"]
    if files:
        print(f"report: {files['report'][0]}")
        for name, path in files.get("figures", {}).items():
            print(f"figure: {path}")
    failed = [c for c in result["checks"] if c["verdict"] == "FAIL"]
    if failed and getattr(args, "strict", False):
        return EXIT_CHECK
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
