"""The `dmft` command: solve, simulate, validate, grok, dln and scan from a TOML configuration.

    dmft validate                                  # the default lazy-to-rich report (a few minutes)
    dmft validate --full --out results/full        # paper-grade sizes
    dmft grok --config scripts/configs/grok_kumar.toml   # grokking: curves, measures, phase diagrams
    dmft solve --config scripts/configs/kumar.toml --gamma0 0.5 1 2
    dmft simulate --widths 64 256 --seeds 4 --set train.steps=200
    dmft scan --config scripts/configs/scan.toml --out results/scan
    dmft dln --config scripts/configs/dln.toml     # deep linear networks under SGD: per-mode theory

Your own data: save the arrays with `dmft.Dataset(x, y, x_test, y_test).save("mine.npz")`
and pass `--set task.name=npz --set task.path=mine.npz` (or put them in [task]: a relative
path there is relative to the TOML file; with --set, to the current directory).

A rerun into a results directory that holds a complete run of the same job and code is "already
complete" (nothing done; of other code it is computed again; an unfinished one is resumed); one
that changes only [check] (the verdicts' tolerances; validate, solve and dln: simulate has no
verdicts and does not read it) judges the saved results again without recomputing them and
rewrites the reports ("re-checked"); any other change is refused unless --force (which
recomputes).

Exit codes: 0 done (or already complete, or re-checked), 1 a check failed with --strict,
2 bad configuration or arguments, 3 the output location is unusable, holds something
else or is in use by another live run, 4 a numerical failure (divergence, no convergence),
5 the numbers were saved but a figure could not be drawn, 6 a scan's process lost the others
(one was killed or crashed; finished chunks are kept), 128 + the signal's number when
stopped by Ctrl-C (130), SIGTERM (143) or SIGHUP (129): each is an interruption, recorded
in run.json as "interrupted", with what the job finished kept.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings


def _redeliver(previous):
    """A `sys.unraisablehook` that delivers again a Ctrl-C, SIGTERM or SIGHUP whose exception
    Python could not raise: one that lands in a callback whose errors are only printed (JAX's
    garbage-collection callback, run by every collection) was lost, and the job (or the import
    of JAX) went on to its end. Every other unraisable exception goes to `previous`."""

    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            # (from another thread, 10 ms later: delivered now, its handler would run here, in
            # this hook, where its exception is lost again; lost again, it comes back here)
            # (the timer can fire while start() still waits for its thread, on a loaded machine:
            # that delivery lands here as a KeyboardInterrupt, and is scheduled once more)
            signum = getattr(unraisable.exc_value, "signum", signal.SIGINT)
            while True:
                try:
                    threading.Timer(0.01, _thread.interrupt_main, (signum,)).start()
                    return
                except KeyboardInterrupt:
                    continue
                except RuntimeError:    # (no new thread at the interpreter's shutdown: printed)
                    break
        previous(unraisable)

    return hook


# (before JAX is imported, below: a Ctrl-C during that import was lost too)
sys.unraisablehook = _redeliver(sys.unraisablehook)

from dmft.errors import ConfigError, DivergenceError, Float32Warning, InputError, NotConverged, OutputError

from . import RECEIVED, interrupted_import
from .output import PlotError, release

__all__ = ["main", "EXIT_OK", "EXIT_CHECK", "EXIT_CONFIG", "EXIT_OUTPUT", "EXIT_NUMERIC", "EXIT_PLOT",
           "EXIT_LOST", "exit_code"]

EXIT_OK, EXIT_CHECK, EXIT_CONFIG, EXIT_OUTPUT, EXIT_NUMERIC, EXIT_PLOT = 0, 1, 2, 3, 4, 5
EXIT_LOST = 6           # a scan's process lost the others (one was killed or crashed); finished chunks kept


# the one place where errors become exit codes (first match wins), with the message prefix
_EXITS = ((ConfigError, EXIT_CONFIG, "configuration error: "),
          (OutputError, EXIT_OUTPUT, ""),
          ((DivergenceError, NotConverged), EXIT_NUMERIC, "numerical failure: "),
          (PlotError, EXIT_PLOT, ""),
          ((InputError, ValueError), EXIT_CONFIG, "configuration error: "),
          (OSError, EXIT_OUTPUT, "file error: "))


def exit_code(err: BaseException) -> tuple[int, str] | None:
    """(exit code, message prefix) for an error the command reports, or None (a bug: re-raised)."""
    for cls, code, prefix in _EXITS:
        if isinstance(err, cls):
            return code, prefix
    return None


class _Once(argparse.Action):
    """A flag given at most once (a second --config replaced the first, unsaid)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string}: given twice ({getattr(namespace, self.dest)!r} and {values!r}); give it once")
        setattr(namespace, self.dest, values)


def _path(text: str) -> str:
    """A path argument: not empty (--out '' wrote to the default directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return text


def _common(s, config_help, set_help="override one key (TOML literal), repeatable (a later --set of a key wins)"):
    """Flags every job shares: --config, --set, precision, device, progress, --out."""
    s.add_argument("--config", action=_Once, type=_path, help=config_help)
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help=set_help)
    prec = s.add_mutually_exclusive_group()
    prec.add_argument("--x64", dest="x64", action="store_true", default=True, help="float64 (default)")
    prec.add_argument("--x32", dest="x64", action="store_false", help="float32")
    s.add_argument("--device", choices=("cpu", "gpu"), default=None, help="JAX platform (default: JAX's choice)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.add_argument("--compile-cache", metavar="DIR|off", default=None,
                   help="keep XLA's compiled programs here across runs (default: $DMFT_COMPILE_CACHE, "
                        "else $XDG_CACHE_HOME/dmft/xla or ~/.cache/dmft/xla); 'off' compiles afresh every run")


def _parser():
    p = argparse.ArgumentParser(prog="dmft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="job", required=True)
    for job, text in (("solve", "DMFT (and lazy limit) at each gamma0"),
                      ("simulate", "finite-width network ensembles at each gamma0 and width"),
                      ("validate", "theory against networks: figures, report, verdicts")):
        s = sub.add_parser(job, help=text, description=text)
        _common(s, "TOML configuration (defaults: experiments/jobs.py)")
        s.add_argument("--gamma0", type=float, nargs="+", help="sweep.gamma0")
        s.add_argument("--steps", type=int, help="train.steps")
        s.add_argument("--eta0", type=float, help="train.eta0")
        if job != "solve":
            s.add_argument("--widths", type=int, nargs="+", help="simulate.widths")
            s.add_argument("--seeds", type=int, help="simulate.seeds")
        if job != "simulate":
            s.add_argument("--samples", type=int, help="theory.samples")
        s.add_argument("--full", action="store_true", help="the larger, paper-grade preset")
        s.add_argument("--out", action=_Once, type=_path, help=f"results directory (default results/{job})")
        s.add_argument("--force", action="store_true", help="recompute or overwrite an existing run")
        if job == "validate":
            s.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    _add_scan_parser(sub)
    _add_grok_parser(sub)
    _add_dln_parser(sub)
    return p


def _add_dln_parser(sub):
    text = "deep linear networks under SGD: per-mode gradient flow, SDE and stationary laws vs networks"
    s = sub.add_parser("dln", help=text, description=text + " (experiments/dln documents the TOML)")
    _common(s, "dln TOML ([teacher], [model], [train], [theory], [staircase], [check]); defaults: the settings "
               "of scripts/configs/dln.toml")
    s.add_argument("--seeds", type=int, help="train.seeds")
    s.add_argument("--steps", type=int, help="train.steps")
    s.add_argument("--full", action="store_true", help="the seed paper's sizes (1e5 steps and 1024 seeds: t = 300 "
                                                       "at the default eta0 = 0.003, which the label-noise checks need)")
    s.add_argument("--out", action=_Once, type=_path, help="results directory (default results/dln)")
    s.add_argument("--force", action="store_true", help="recompute or overwrite an existing run")
    s.add_argument("--strict", action="store_true", help="exit 1 when a check fails")


def _add_grok_parser(sub):
    text = "grokking as a lazy-to-rich transition: theory, networks, measures, phase diagrams"
    s = sub.add_parser("grok", help=text, description=text + " (experiments/grok documents the TOML)")
    _common(s, "grok TOML (testbed, model.gamma0, simulate.widths, diagram, decay)")
    from .grok.config import TESTBEDS        # the one registry of testbeds

    s.add_argument("--testbed", choices=TESTBEDS, help="testbed.name")
    s.add_argument("--gamma0", type=float, nargs="+", help="model.gamma0")
    s.add_argument("--widths", type=int, nargs="+", help="simulate.widths")
    s.add_argument("--seeds", type=int, help="simulate.seeds")
    s.add_argument("--steps", type=int, help="train.steps")
    s.add_argument("--eta0", type=float, help="train.eta0")
    s.add_argument("--full", action="store_true", help="paper-size preset (Kumar et al. Fig. 1 and 3e; the kumar testbed's)")
    s.add_argument("--out", action=_Once, type=_path, help="results directory (default results/grok)")
    s.add_argument("--force", action="store_true", help="recompute or overwrite an existing run")


JOIN_TIMEOUT = 300.0         # seconds a scan's process waits for the others to join (JAX's default)
HANG_TIMEOUT = 60.0          # seconds without a sign of life from another process (scan.execute's)


def _add_scan_parser(sub):
    text = "a resumable parameter scan: one compiled program per shape, sharded over devices and processes"
    s = sub.add_parser("scan", help=text, description=text + " (experiments/scan documents the TOML)")
    _common(s, "scan TOML ([scan.grid] or [scan.points] and the problem sections)",
            "override one key (TOML literal), e.g. scan.grid.model.gamma0=[0.1,1]; repeatable")
    s.add_argument("--out", action=_Once, type=_path, help="the results store (default results/scan); rerunning resumes it")
    s.add_argument("--distributed", action="store_true",
                   help="join jax.distributed with the cluster's own settings (SLURM, ...)")
    s.add_argument("--coordinator", metavar="HOST:PORT",
                   help="jax.distributed coordinator (process 0's address)")
    s.add_argument("--num-processes", type=int, help="jax.distributed: number of processes")
    s.add_argument("--process-id", type=int, help="jax.distributed: this process's rank")
    s.add_argument("--join-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --coordinator or --distributed: how long a process waits for all the others "
                        f"to join before it ends, saying so (exit 2; default {JOIN_TIMEOUT:g}). A process that "
                        "loses contact with the others mid-scan ends at once (exit 6; finished chunks are "
                        "kept: the same commands resume)")
    s.add_argument("--hang-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --coordinator or --distributed: how long a process waits for a sign of life from "
                        "each other one (signed every few seconds, however slow its chunk) before it ends, "
                        f"saying that one is stopped or hung (exit 6; finished chunks are kept; default "
                        f"{HANG_TIMEOUT:g}, from 1 to 86400)")


def compile_cache_dir(choice: str | None) -> str | None:
    """The persistent compilation cache's folder for --compile-cache `choice` (None: the
    environment's DMFT_COMPILE_CACHE, else $XDG_CACHE_HOME/dmft/xla or ~/.cache/dmft/xla);
    None when it is "off"."""
    choice = choice or os.environ.get("DMFT_COMPILE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "dmft", "xla")
    return None if choice.strip().lower() == "off" else os.path.abspath(os.path.expanduser(choice))


def _use_compile_cache(choice):
    """Keep compiled programs on disk, so that a rerun, the next job or a scan's other processes
    skip XLA's compiles (half a cold small solve, ~20 s of `make demo`). A cached program is the
    program XLA would compile (keyed by the computation, its flags and the versions): the numbers
    are the same. JAX's own setting (JAX_COMPILATION_CACHE_DIR) wins; a folder that cannot be
    made leaves the cache off, said once."""
    import jax

    path = compile_cache_dir(choice)
    if path is None or jax.config.jax_compilation_cache_dir:
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        _say(f"dmft: compile cache off ({path}: {err.strerror or err})")
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def _select_device(device, x64):
    """The devices the job runs on (JAX's default, or those of --device); ConfigError when the
    machine has none of that kind. Precision is set here, at the entry point."""
    import jax

    if device is None:
        devices = jax.devices()
    else:
        try:
            devices = jax.devices(device)
        except RuntimeError as err:
            have = sorted({d.platform for d in jax.devices()})
            raise ConfigError(f"--device {device}: no such device here (this machine has: "
                              f"{', '.join(have)}; {str(err).splitlines()[0]})") from None
        jax.config.update("jax_default_device", devices[0])
    jax.config.update("jax_enable_x64", bool(x64))
    if not x64:                 # --x32 chose float32: the library's warning would only repeat it
        warnings.filterwarnings("ignore", category=Float32Warning)
    return devices


def _load_for_precision(load, path, overrides, x64):
    """The configuration, its networks' train.dtype following --x32 where the user did not write
    one (the default float64 refused every `dmft dln --x32` and deep-linear scan under it)."""
    from .config import given_keys

    cfg = load(path, overrides)
    if (not x64 and cfg.get("train", {}).get("dtype") == "float64"
            and "train.dtype" not in given_keys(path, overrides)):
        cfg = load(path, [*overrides, "train.dtype='float32'"])
    return cfg


def _check_network_dtype(cfg, x64):
    """Deep linear networks in float64 need x64: a float64 train.dtype the user wrote is refused
    under --x32 before anything is written."""
    if cfg.get("train", {}).get("dtype") == "float64" and not x64:
        raise ConfigError("train.dtype = 'float64' with --x32; pass --x64 or set train.dtype = 'float32'")


def _say(text):
    print(text, file=sys.stderr)


def _progress(args) -> bool:
    return not args.no_progress and sys.stderr.isatty()


# ----------------------------------------------------------------- jobs

def _grok(args) -> int:
    from . import grok
    from .config import flag_overrides
    from .output import failures_recorded, prepare_output, raise_plot_errors, write_manifest

    over = flag_overrides({"testbed.name": args.testbed, "model.gamma0": args.gamma0,
                           "simulate.widths": args.widths, "simulate.seeds": args.seeds,
                           "train.steps": args.steps, "train.eta0": args.eta0}, args.overrides)
    cfg = grok.load_config(args.config, over, full=args.full)
    devices = _select_device(args.device, args.x64)
    out = args.out or os.path.join("results", "grok")
    grok.build(cfg)                          # sizes and values the generators refuse
    if not prepare_output(out, "grok", cfg, args.force, log=_say, resume=True):
        _say(f"dmft grok: {out}: this run is already complete (same command and configuration); "
             "pass --force to recompute")
        return EXIT_OK
    _say(f"dmft grok: {'float64' if args.x64 else 'float32'} on {devices[0]}, writing {out}")
    with failures_recorded(out, "grok", cfg):       # (its final run.json too: one that fails says "failed")
        res = grok.run(cfg, out, log=_say, progress=_progress(args))
        raise_plot_errors(out, "grok", cfg, res.get("plot_errors"))
        write_manifest(out, "grok", cfg, "complete", {"wall_s": res["report"]["wall_s"]})
    print(f"report: {res['files']['report'][0]}")
    for path in res["files"]["figures"].values():
        print(f"figure: {path}")
    return EXIT_OK


def _dln(args) -> int:
    from . import dln
    from .config import flag_overrides
    from .dln.job import recheck
    from .output import RECHECK, failures_recorded, prepare_output, raise_plot_errors, read_manifest, write_manifest

    over = flag_overrides({"train.seeds": args.seeds, "train.steps": args.steps}, args.overrides)
    cfg = _load_for_precision(lambda p, o: dln.load_config(p, o, full=args.full), args.config, over, args.x64)
    devices = _select_device(args.device, args.x64)
    _check_network_dtype(cfg, args.x64)
    dln.build(cfg)                                   # values the generators refuse, before compute
    out = args.out or os.path.join("results", "dln")
    claimed = prepare_output(out, "dln", cfg, args.force, log=_say, recheck=True, resume=True)
    if not claimed:
        _say(f"dmft dln: {out}: this run is already complete (same command and configuration); "
             "pass --force to recompute")
        failed = [c for c in read_manifest(out).get("checks", []) if isinstance(c, dict) and c.get("verdict") == "FAIL"]
        return EXIT_CHECK if (failed and args.strict) else EXIT_OK      # as the other jobs: its recorded verdicts
    if claimed == RECHECK:                 # only [check] changed: the saved runs are judged again
        res = recheck(cfg, out, log=_say)
    else:
        _say(f"dmft dln: {'float64' if args.x64 else 'float32'} on {devices[0]}, writing {out}")
        with failures_recorded(out, "dln", cfg):    # (its final run.json too: one that fails says "failed")
            res = dln.run(cfg, out, log=_say, progress=_progress(args))
            raise_plot_errors(out, "dln", cfg, res.get("plot_errors"), checks=res["report"]["checks"])
            write_manifest(out, "dln", cfg, "complete", {"checks": res["report"]["checks"]})
    for c in res["report"]["checks"]:
        print(f"{c['name']:<36} {c['verdict']}  {c['detail']}")
    print(f"report: {res['files']['report'][0]}")
    for path in res["files"]["figures"].values():
        print(f"figure: {path}")
    failed = [c for c in res["report"]["checks"] if c["verdict"] == "FAIL"]
    return EXIT_CHECK if (failed and args.strict) else EXIT_OK


def _scan(args) -> int:
    from . import scan
    from .scan.execute import ProcessLost, check_port_free

    cfg = _load_for_precision(scan.load_config, args.config, args.overrides, args.x64)
    explicit = [args.coordinator, args.num_processes, args.process_id]
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise ConfigError("--coordinator, --num-processes and --process-id go together")
    if explicit[0] is not None:
        host, _, port = str(explicit[0]).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--coordinator: expected HOST:PORT (a port in 1-65535), got {explicit[0]!r}")
    distributed = args.distributed or explicit[0] is not None
    if args.join_timeout is not None and not distributed:      # (any value, -5 too, was silently ignored)
        raise ConfigError("--join-timeout: read only with --coordinator or --distributed (where the scan's "
                          "processes join); it would be silently ignored here")
    join = JOIN_TIMEOUT if args.join_timeout is None else args.join_timeout
    if not 0 < join <= 86400:
        raise ConfigError(f"--join-timeout: expected seconds in (0, 86400], got {join:g}")
    if args.hang_timeout is not None and not distributed:
        raise ConfigError("--hang-timeout: read only with --coordinator or --distributed (where the scan has "
                          "other processes to wait for); it would be silently ignored here")
    hang = HANG_TIMEOUT if args.hang_timeout is None else args.hang_timeout
    if not 1 <= hang <= 86400:
        raise ConfigError(f"--hang-timeout: expected seconds in [1, 86400], got {hang:g}")
    if distributed:
        import jax

        if args.device is not None:       # before the runtime starts: the platform of every process
            jax.config.update("jax_platforms", "cuda" if args.device == "gpu" else "cpu")
        if explicit[2] == 0 and explicit[0] is not None:
            check_port_free(explicit[0])       # (before the "waiting" line, which a busy port preceded)
        try:
            with _joining(explicit, join):
                # (JAX's own limit later: it aborted with "another task died" after 300 s of silence)
                scan.init_distributed(*explicit, timeout=int(join) + 60, heartbeat=int(hang) + 60)
        except RuntimeError as err:
            raise ConfigError(f"jax.distributed: {err}") from None
        devices = _select_device(None, args.x64)
        mine = None                      # each process shards over its own local devices
    else:
        devices = _select_device(args.device, args.x64)
        mine = devices                   # all of --device's kind (its first is only the default)
    _check_network_dtype(cfg, args.x64)                  # (deep-linear scans' networks)
    out = args.out or os.path.join("results", "scan")
    # (the store's path, not "writing": a scan that is refused writes nothing, a complete one at most its report)
    _say(f"dmft scan: {'float64' if args.x64 else 'float32'} on {devices[0]}, store {out}")
    try:
        res = scan.run(cfg, out, devices=mine, progress=_progress(args), log=_say, hang_timeout=hang)
    except (DivergenceError, NotConverged) as err:
        raise type(err)(f"{err}; finished chunks are kept in {out}") from err
    except ProcessLost as err:
        # ended at once: JAX's shutdown at exit waits for the lost process (its heartbeat timeout,
        # --hang-timeout + 60 s of silence) and then aborts this one (SIGABRT, a C++ stack trace)
        if err.result is not None:       # lost only at the end: complete, nothing to resume
            print(err.result.summary())
            _say(f"dmft scan: {err}")
        else:
            _say(f"dmft scan: {err}; finished chunks are kept in {out}: start every process again with the "
                 "same command to resume")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK if err.result is not None else EXIT_LOST)
    if res is not None:
        print(res.summary())
    return EXIT_OK


@contextlib.contextmanager
def _joining(explicit, timeout: float):
    """Say that this process waits for the scan's others, and end it with a message when they have
    not all joined within `timeout` seconds (it waited 300 s in silence, then JAX aborted it saying
    that another task died; a SIGTERM or Ctrl-C does not act while JAX waits)."""
    coordinator, count, rank = explicit
    who = f"process {rank} of {count}" if rank is not None else "this process"
    where = f" at {coordinator}" if coordinator is not None else ""
    _say(f"dmft scan: {who}: waiting up to {timeout:g} s for the scan's processes to join{where}")

    def give_up():
        _say(f"dmft scan: configuration error: {who}: not every process joined{where} within {timeout:g} s "
             "(start every process with the same --coordinator and --num-processes, each its own "
             "--process-id from 0; --join-timeout waits longer); nothing was computed or written")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_CONFIG)

    timer = threading.Timer(timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _say_unread(job: str, overrides) -> None:
    """A note for each --set in a section `job` never reads (`output.UNREAD_SECTIONS`): it is
    accepted (a file may serve several jobs) and changes nothing here, which went unsaid."""
    from .config import parse_override
    from .output import UNREAD_SECTIONS

    readers = {"simulate": "dmft simulate and dmft validate", "theory": "dmft solve and dmft validate",
               "check": "dmft solve and dmft validate"}
    said = set()
    for text in overrides or ():
        ((sec, table),) = parse_override(text).items()
        name = f"{sec}.{next(iter(table))}"
        if sec in UNREAD_SECTIONS.get(job, ()) and name not in said:     # (a key set twice: one note)
            said.add(name)
            _say(f"dmft {job}: note: {sec}.{next(iter(table))} changes nothing here: dmft {job} does not "
                 f"read [{sec}] ({readers.get(sec, 'other jobs')} do)")


def _sweep_job(args) -> int:
    from .config import flag_overrides
    from .jobs import load_config, run_job
    from .report import verdict_table

    flags = {"sweep.gamma0": args.gamma0, "train.steps": args.steps, "train.eta0": args.eta0,
             "simulate.widths": getattr(args, "widths", None), "simulate.seeds": getattr(args, "seeds", None),
             "theory.samples": getattr(args, "samples", None)}
    cfg = load_config(args.config, flag_overrides(flags, args.overrides), full=args.full)
    _say_unread(args.job, args.overrides)
    devices = _select_device(args.device, args.x64)
    out = args.out or os.path.join("results", args.job)
    result = run_job(args.job, cfg, out, force=args.force, progress=_progress(args), log=_say,
                     started=lambda: _say(f"dmft {args.job}: {'float64' if args.x64 else 'float32'} "
                                          f"on {devices[0]}, writing {out}"))
    if result["checks"]:
        print(verdict_table(result["checks"]))
    files = result["files"]
    if files:
        print(f"report: {files['report'][0]}")
        for path in files.get("figures", {}).values():
            print(f"figure: {path}")
    failed = [c for c in result["checks"] if c["verdict"] == "FAIL"]
    if failed and getattr(args, "strict", False):
        return EXIT_CHECK
    return EXIT_OK


_JOBS = {"solve": _sweep_job, "simulate": _sweep_job, "validate": _sweep_job, "grok": _grok,
         "scan": _scan, "dln": _dln}


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (kill, timeout, a batch scheduler, a closed terminal), raised where
    Ctrl-C's KeyboardInterrupt would be, so that the job records "interrupted" as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.signal = signum, signal.Signals(signum).name


def _terminate(signum, frame):
    RECEIVED.append(signum)
    raise _Terminated(signum)


_STOPS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _interrupted(job: str, signum: int) -> int:
    """Say that the job was interrupted (naming the signal but for Ctrl-C's); its exit code."""
    _say(f"dmft {job}: interrupted" + (f" ({signal.Signals(signum).name})" if signum != signal.SIGINT else ""))
    return 128 + int(signum)


def main(argv=None) -> int:
    """Run one job; returns its exit code (errors are reported on one line, never a traceback).
    While it runs (from the main thread), SIGTERM and SIGHUP interrupt it as Ctrl-C does (unless
    ignored, as under nohup); the previous handlers are restored after."""
    RECEIVED.clear()                  # (this run's interruptions: `interrupted_import`)
    args = _parser().parse_args(argv)
    if hasattr(args, "compile_cache"):
        _use_compile_cache(args.compile_cache)
    handlers = {}
    if threading.current_thread() is threading.main_thread():    # (not one ignored: nohup's SIGHUP)
        handlers = {s: signal.signal(s, _terminate) for s in _STOPS if signal.getsignal(s) != signal.SIG_IGN}
    try:
        return _JOBS[args.job](args)
    except KeyboardInterrupt as err:
        return _interrupted(args.job, getattr(err, "signum", signal.SIGINT))
    except Exception as err:  # noqa: BLE001 - mapped to exit codes below, or re-raised
        signum = interrupted_import(err)                 # (a Ctrl-C while a library loaded)
        if signum is not None:
            return _interrupted(args.job, signum)
        found = exit_code(err)
        if found is None:
            raise
        code, prefix = found
        # (an OutputError made with an errno, a scan store's, printed "[Errno 36] cannot use ...")
        text = err.strerror if isinstance(err, OutputError) and err.errno is not None and err.strerror else err
        _say(f"dmft {args.job}: {prefix}{text}")
        return code
    finally:
        release()                     # a results directory the job claimed is free again
        for s, handler in handlers.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"dmft: warning: {message}\n"


def _tolerant_stdout() -> None:
    """Under a locale that cannot spell a path (LC_ALL=C with PYTHONUTF8=0 and PYTHONIOENCODING=latin-1,
    an --out with an accent), printing "report: PATH" after the run raised UnicodeEncodeError: a
    complete run ended "configuration error: 'latin-1' codec can't encode ..." (exit 2). stdout
    now writes what its encoding cannot as backslash escapes, as stderr always did."""
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        try:
            sys.stdout.reconfigure(errors="backslashreplace")
        except (OSError, ValueError):     # (a closed stdout)
            pass


def console() -> None:
    """The `dmft` command. After an interruption (Ctrl-C, SIGTERM, SIGHUP: exit 128 + the
    signal's number; the job has already kept what it finished) the process ends at once: a
    normal interpreter exit tears XLA's runtime down under computations still in flight on its
    threads, and crashed (SIGSEGV) about one time in six. Warnings print as one line, "dmft:
    warning: ..." (they printed the script's path, line and `sys.exit(console())` around it), each
    text once a run (the same law's warning came from up to five call sites of one dln study),
    unless the user chose filters (-W, PYTHONWARNINGS)."""
    warnings.formatwarning = _one_line_warning
    _tolerant_stdout()
    if not sys.warnoptions:
        warnings.filterwarnings("once", category=UserWarning)
    try:
        code = main()
    except KeyboardInterrupt as err:     # (before the job's own handler: while its arguments are read)
        signum = getattr(err, "signum", signal.SIGINT)
        _say("dmft: interrupted")
        code = 128 + int(signum)
    if code > 128:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
