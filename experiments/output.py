"""Results directories of the jobs: claim, lock, manifest (run.json), refuse what belongs to another run.

A results directory holds run.json (the command, configuration, environment, status and the
pid and host of the process that wrote it) and config.toml next to the job's own files. A run
holds an advisory lock on the directory (flock on .dmft-lock) from its claim to its end, so a
second run, forced or not, is refused while the first lives (the OS frees the lock when a process
dies, however it dies: a run.json still "running" under a free lock is a run that was killed).
A directory that holds a different run is refused (`OutputConflict`); rerunning the same
configuration finds it complete and does nothing unless forced, after checking every file
against the SHA-256 that run.json recorded when the run completed (a missing or changed file is
refused, naming it); that needs no write access. run.json itself is sealed (`seal`, the SHA-256 of
its content): one edited since dmft wrote it is refused, and with --force its file list is not
trusted (nothing it names is removed). A run that differs from the complete run in
the directory only in its [check] section (the verdicts' tolerances: same command, code, inputs
and everything else) is not computed again when its job can judge the saved results
(`prepare_output(..., recheck=True)` returns `RECHECK`): every file of the run is verified
first (a missing or changed one is refused as for "already complete"), the job reads the
results back, verifying each file it reads (`verify_files`), and claims the directory with
`start_recheck`, which keeps the results and figures (their recorded digests carry over) while
the reports, config.toml and run.json are written anew (their previous bytes are kept in
.dmft-recheck until it ends: a recheck killed outright is put back by the next run). A run is
the same when its
command, configuration and inputs are: the arithmetic (--x64/--x32), the platform it ran on,
and the SHA-256 of a data file it read (task.path), so a changed data file or another
precision is a different run, never "already complete". The same run written by other code
(`code_digest`, recorded in run.json) is computed again, as one that did not complete is: a
complete run is never reported from a solver since edited (one of other library versions is,
saying which moved: `--force` computes it again). The same run of the same code that did not
complete (failed, interrupted, killed, its figures failed) is resumed by a job that asks
(`prepare_output(..., resume=True)`): the results it recorded with their SHA-256 once written
(`record_result`, in .dmft-results) that still match are kept for the job to reuse (`resumed`),
all else it wrote is removed as below. Recomputing over a previous run
(--force, one that did not complete, or one of other code) first removes what that run wrote,
so no stale file outlives it or enters the new digests: the files it recorded (its digests when
it completed; the files it had written when it failed or was interrupted; the journal,
.dmft-written, that it appends each file to as it opens it, for a run killed outright: a file
whose name the journal cannot take is not made, its open failing) and the
directories that leaves empty, in a directory dmft made (marked .dmft-owned) as in a user's;
anything else there is kept, and said. A run knows its files exactly: the process records every
file it opens for writing (or renames into place) in the directory it claimed, so nothing else
there (a user's file, a log the user appends to during the run) is ever digested or removed. A
location that cannot be used at all (a file in the way, no permission, a missing parent that
cannot be created) raises `OutputError` naming it, before any compute.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import signal
import socket
import sys

import numpy as np

from dmft.errors import DmftError, OutputConflict, OutputError
from dmft.io import compute_platform, environment, jsonable, sha256
from dmft.plotting import tidy_log_ticks

from . import interrupted_import
from .config import differences, to_toml
from .problem import data_digest, unread_task_keys
from .store import CHUNKS, FORMAT, MANIFEST as STORE_MANIFEST, in_the_way, write_text

__all__ = ["prepare_output", "write_manifest", "read_manifest", "seal", "check_writable", "release", "OutputConflict",
           "OutputError", "PlotError", "draw_figures", "raise_plot_errors", "RECHECK", "CHECK_SECTION",
           "start_recheck", "recheck_recorded", "verify_files", "recheck_note", "RECHECK_REWRITES", "partial_named",
           "record_result", "resumed", "is_resumed", "read_back", "resuming_line", "is_result", "json_floats",
           "forget_results"]

MANIFEST = "run.json"
OWNED = ".dmft-owned"      # marker: dmft made this directory
FOREIGN = ".dmft-foreign"  # written by earlier versions in a user's directory; ignored now
LOCK = ".dmft-lock"        # flock-ed by the live run writing the directory; holds its pid and host
JOURNAL = ".dmft-written"  # the run's files, appended as it opens them: known even if it is killed
BACKUP = ".dmft-recheck"   # a recheck's copy of the files it rewrites, until it has ended
RESULTS = ".dmft-results"  # "SHA-256 path" of each result file, appended once the result is complete
_MARKERS = {MANIFEST, OWNED, FOREIGN, LOCK, JOURNAL, BACKUP, BACKUP + ".tmp", RESULTS}

# The files this process writes in each results directory that a job has claimed: an audit
# hook sees every open() for writing and every rename (np.savez, savefig and the reports all
# open their files), so a run's files are known exactly, never guessed from what is on disk (a
# user's log appended to during a run, or a file with a future mtime, is not the run's).
_RECORDING: dict[str, set] = {}
_JOURNALS: dict[str, int] = {}     # directory -> descriptor of its journal, while recording
_LOCKS: dict[str, int] = {}        # directory -> descriptor holding its lock
# directory -> {file: SHA-256} of a re-checked run's files, kept as the run that computed them
# wrote them (verified when the recheck claimed the directory), or of the results a resumed run
# reuses (verified when it claimed the directory): its new run.json carries their digests over,
# and a failure lists them among the files it wrote
_KEPT: dict[str, dict] = {}
_RESUMED: dict[str, dict] = {}     # directory -> {file: SHA-256} of the results a resumed run reuses
_CARRIED: dict[str, set] = {}      # directory -> the results a re-checked run had reused (its "reused")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


_TORN: set = set()                 # directories whose journal's last append failed (part of a line may be there)


class _JournalFailed(OSError):
    """The journal could not take a file's name: the call that would make the file fails."""


def _note(path, add: bool) -> None:
    """Record (or with `add` off, forget) a file this process writes in a directory it records,
    its name appended to the journal before the file exists. A name the journal cannot take (a
    full disk) fails the open or rename that would make the file (an OSError naming the
    journal): that failure was swallowed, and the file, missing from the journal, was kept by the
    clean-up after a kill as "a file the previous run did not write" (a stale result among the
    next run's)."""
    real = os.path.realpath(os.fsdecode(path))
    for root, files in _RECORDING.items():
        if real.startswith(root + os.sep):
            rel = os.path.relpath(real, root).replace(os.sep, "/")
            if not add:
                files.discard(rel)
            elif rel not in files:
                if root in _JOURNALS and _is_ours(rel):
                    # (after a failed append, a new line: what it left of its own is no name)
                    line = (("\n" if root in _TORN else "") + rel + "\n").encode()
                    _TORN.add(root)
                    try:
                        if os.write(_JOURNALS[root], line) < len(line):     # (a full disk, midway)
                            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    except OSError as err:
                        raise _JournalFailed(err.errno, err.strerror, os.path.join(root, JOURNAL)) from err
                    _TORN.discard(root)
                files.add(rel)


def _audit(event: str, args) -> None:
    if not _RECORDING or event not in ("open", "os.rename"):
        return
    try:
        if event == "open":
            path, mode, flags = args[:3]
            if isinstance(path, int):
                return
            if (any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)):
                _note(path, True)
        else:                      # os.rename and os.replace: the file now has its new name
            _note(args[1], True)   # (first: a rename that fails keeps the old name recorded)
            if os.path.realpath(os.fsdecode(args[0])) != os.path.realpath(os.fsdecode(args[1])):
                _note(args[0], False)
    except _JournalFailed as err:      # (as the OSError it is: a figure's failure names no private class)
        raise OSError(err.errno, err.strerror, err.filename) from err.__cause__
    except Exception:  # noqa: BLE001 - an audit hook must never break the call it watches otherwise
        pass


sys.addaudithook(_audit)


def _is_ours(rel: str) -> bool:
    """Not run.json, its temporary or a marker: a file of the results themselves."""
    return rel not in _MARKERS and not rel.startswith(MANIFEST + ".")


def _start_recording(out: str, kept: dict | None = None, results: bool = True) -> None:
    """Record what this process writes in `out` from now on (a fresh journal, and with `results` a
    fresh results record, RESULTS); `kept` ({file: SHA-256}): files of a previous run this one
    keeps as its own, listed in both. Without `results` (a recheck, which writes no result; a job
    that does not resume) the results record is left as it is."""
    root = os.path.realpath(out)
    _stop_recording(root)
    _JOURNALS[root] = os.open(os.path.join(out, JOURNAL), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                              0o666)                # (as open() makes a file: the umask decides, no x bit)
    _RECORDING[root] = set()
    kept = {str(rel): d for rel, d in (kept or {}).items() if _is_ours(str(rel))}
    _KEPT[root] = kept
    os.write(_JOURNALS[root], "".join(f"{rel}\n" for rel in kept).encode())
    if not results:
        return
    with open(os.path.join(out, RESULTS), "w") as fh:
        fh.write("".join(_result_line(d, rel) for rel, d in kept.items() if is_result(rel)))


def _result_line(digest: str, rel: str) -> str:
    """A line of the results record: the file's SHA-256, its path, and the line's own check (the
    first 16 hex digits of its SHA-256), so that a damaged line is told from a changed file."""
    return f"{digest} {rel} {hashlib.sha256(f'{digest} {rel}'.encode()).hexdigest()[:16]}\n"


def is_result(rel: str) -> bool:
    """A result file that `record_result` vouches for: theory/ or networks/ (solve, validate,
    simulate), curves/ (grok's parts) or runs/ (dln's), .npz or .json, not a failed point's saves
    (..._failed) nor partial.npz."""
    stem, ext = os.path.splitext(rel)
    return (rel.split("/")[0] in ("theory", "networks", "curves", "runs") and ext in (".npz", ".json")
            and not stem.endswith("_failed"))


def json_floats(obj):
    """A JSON record (a result's "extra", a run's info) as it was before `dmft.io.jsonable` wrote
    it: the strings that made of non-finite floats ("nan", "inf", "-inf") floats again, in maps
    and lists at any depth; everything else as it is."""
    if isinstance(obj, dict):
        return {k: json_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_floats(v) for v in obj]
    return float(obj) if isinstance(obj, str) and obj in ("nan", "inf", "-inf") else obj


def record_result(out: str, paths) -> None:
    """After a result's files (`paths`, in `out`) are completely written: their SHA-256 appended
    to the results record (RESULTS), from which a rerun of the same run that did not complete
    reuses them (`resumed`) where they still match. Nothing where `out` is not being recorded."""
    root = os.path.realpath(out)
    if root not in _RECORDING:
        return
    lines = []
    for path in paths:
        rel = os.path.relpath(os.path.realpath(os.fspath(path)), root).replace(os.sep, "/")
        if is_result(rel):
            lines.append(_result_line(sha256(os.path.join(out, *rel.split('/'))), rel))
    with open(os.path.join(out, RESULTS), "a") as fh:
        fh.write("".join(lines))
        fh.flush()
        os.fsync(fh.fileno())


def forget_results(out: str, paths) -> None:
    """Result files (`paths`, in `out`) that `record_result` recorded and the run itself removed
    since (grok's parts, once the run has completed: curves.npz and report.json hold them):
    dropped from the results record, so that a rerun of a run killed before its run.json said
    complete does not name them as changed or missing. Nothing where `out` is not being recorded."""
    root = os.path.realpath(out)
    if root not in _RECORDING:
        return
    drop = {os.path.relpath(os.path.realpath(os.fspath(p)), root).replace(os.sep, "/") for p in paths}
    record = os.path.join(out, RESULTS)
    try:
        with open(record, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return
    with open(record, "w") as fh:
        fh.write("".join(line for line in lines if line.rstrip("\n").rpartition(" ")[0].partition(" ")[2] not in drop))


def _verified_results(out: str) -> tuple[dict, list, int]:
    """The results record of a previous run: ({file: SHA-256} of the result files that are as it
    recorded them, [files recorded but missing or changed since], the number of its lines damaged
    (each vouching for nothing; a last line a kill cut short, without its newline, is not damage))."""
    recorded, damaged = {}, 0
    try:
        with open(os.path.join(out, RESULTS), encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    continue
                digest, _, rel = line[:-1].rpartition(" ")[0].partition(" ")
                if len(digest) != 64 or _result_line(digest, rel) != line:
                    damaged += 1
                elif is_result(rel) and ".." not in rel.split("/"):
                    recorded[rel] = digest
    except OSError:
        return {}, [], 0
    good, bad = {}, []
    for rel, digest in recorded.items():
        path = os.path.join(out, *rel.split("/"))
        if os.path.isfile(path) and sha256(path) == digest:
            good[rel] = digest
        else:
            bad.append(rel)
    return good, bad, damaged


def resumed(out: str) -> dict:
    """{file: SHA-256} of the results that this process's run in `out` reuses from the previous run
    of the same command, configuration, inputs and code that did not complete (each verified
    against its recorded digest when the directory was claimed); {} for a run computed afresh."""
    return dict(_RESUMED.get(os.path.realpath(out), {}))


def is_resumed(out: str, rel: str) -> bool:
    """Whether this process's resumed run in `out` reuses the result `rel` (its stem relative to
    `out`): both its .npz and its .json as the previous run recorded them (`resumed`)."""
    files = _RESUMED.get(os.path.realpath(out), {})
    return rel + ".npz" in files and rel + ".json" in files


def read_back(out: str, rel: str, load, log):
    """The result `rel` (its stem relative to `out`) that this process's resumed run reuses
    (`is_resumed`), read back by `load(stem)` (which verifies it); None where the previous run did
    not record it, or where it does not read back (said to `log`: the job computes it again)."""
    if not is_resumed(out, rel):
        return None
    try:
        return load(os.path.join(out, *rel.split("/")))
    except Exception as err:  # noqa: BLE001 - a result that does not read back is computed again
        log(f"{out}: {rel} does not read back ({type(err).__name__}: {err}); computing it again")
        return None


def resuming_line(out: str, reused: int, total: int, what: str = "results") -> str:
    """What a resumed job says of the results (or grok's parts) it reuses."""
    return f"{out}: resuming: {reused} of {total} {what} reused (verified), the rest computed"


def _stop_recording(root: str):
    _KEPT.pop(root, None)
    _RESUMED.pop(root, None)
    _CARRIED.pop(root, None)
    _TORN.discard(root)
    fd = _JOURNALS.pop(root, None)
    if fd is not None:
        os.close(fd)
    return _RECORDING.pop(root, None)


def _journal(out: str) -> list:
    """The files the journal says a run wrote ([] without one: a run of an earlier version)."""
    try:
        with open(os.path.join(out, JOURNAL), encoding="utf-8", errors="replace") as fh:
            return [line.rstrip("\n") for line in fh if line.strip()]
    except OSError:
        return []


def _written(out: str, stop: bool = False) -> list:
    """The files this process wrote in `out` since it claimed it, that are there now (run.json
    and the markers aside); with stop, recording ends. Without a record (a manifest written by
    a process that did not claim `out`): every file of a directory dmft made, else none."""
    root = os.path.realpath(out)
    files = _stop_recording(root) if stop else _RECORDING.get(root)
    if files is None:
        return sorted(_files(out)) if os.path.isfile(os.path.join(out, OWNED)) else []
    return sorted(f for f in files if _is_ours(f) and os.path.isfile(os.path.join(out, *f.split("/"))))


def _files(out: str) -> list:
    found = []
    for root, _, files in os.walk(out):
        found += [os.path.relpath(os.path.join(root, n), out).replace(os.sep, "/") for n in files]
    return [f for f in found if _is_ours(f)]


class PlotError(DmftError, RuntimeError):
    """A figure failed after the numbers were saved (they stay; run.json says so)."""


def draw_figures(makers: dict, directory: str, *, dpi: int = 120) -> tuple[dict, dict]:
    """Draw and save each figure of `makers` (name -> function returning a Figure) as
    DIRECTORY/NAME.png. A figure that fails does not stop the others.

    Returns (paths of the saved figures, errors: name -> message)."""
    os.makedirs(directory, exist_ok=True)
    paths, errors = {}, {}
    for name, make in makers.items():
        try:
            fig = tidy_log_ticks(make())
            path = os.path.join(directory, f"{name}.png")
            fig.savefig(path, dpi=dpi)
            paths[name] = path
        except Exception as err:  # noqa: BLE001 - reported as a plotting failure, numbers are safe
            errors[name] = f"{type(err).__name__}: {err}"
    return paths, errors


def figures_relative(report, out: str):
    """`report` with every figure path ("figures": name -> path, "figure": path, at any depth)
    relative to the results directory `out`, as report.json records them: the directory can be
    moved or copied and its report still names its own figures (they were absolute)."""
    def rel(path):        # (the jobs build them as out/figures/NAME: relative to the working directory
        return (os.path.relpath(os.path.abspath(path), os.path.abspath(out)).replace(os.sep, "/")   # when out is)
                if isinstance(path, str) else path)
    if isinstance(report, dict):
        return {k: ({n: rel(v) for n, v in w.items()} if k == "figures" and isinstance(w, dict)
                    else rel(w) if k == "figure" else figures_relative(w, out)) for k, w in report.items()}
    if isinstance(report, (list, tuple)):
        return [figures_relative(w, out) for w in report]
    return report


def precision_line(env: dict) -> str:
    """One line for a report: the arithmetic (float64 unless the job ran with --x32) and where."""
    bits = "float64" if env.get("x64") else "float32 (--x32)"
    return f"Arithmetic: {bits} on {env.get('backend', '?')} ({', '.join(env.get('devices', [])) or '?'})."


def raise_plot_errors(out: str, job: str, cfg: dict, plot_errors: dict, **state) -> None:
    """After the numbers are saved: when figures failed, record it in run.json (status
    "plot_failed", with `state` and the errors) and raise PlotError naming each figure."""
    if not plot_errors:
        return
    write_manifest(out, job, cfg, "plot_failed", {**state, "plot_errors": plot_errors})
    raise PlotError(f"{len(plot_errors)} figure(s) failed after the numbers were saved in {out} "
                    "(run.json records it): " + "; ".join(f"{k}: {v}" for k, v in plot_errors.items()))


@contextlib.contextmanager
def failures_recorded(out: str, job: str, cfg: dict):
    """Within: any error (but a figure's, which has its own status) marks run.json "failed"
    with the error, Ctrl-C (or SIGTERM, SIGHUP: the command raises them as KeyboardInterrupt
    with their name in `signal`) "interrupted", each with the files written so far, before it
    propagates."""
    try:
        yield
    except PlotError:
        raise
    except KeyboardInterrupt as err:                              # with the files written so far
        write_manifest(out, job, cfg, "interrupted", {"signal": getattr(err, "signal", "SIGINT")})
        raise
    except BaseException as err:       # any failure: the files written so far are recorded
        signum = interrupted_import(err)     # (a Ctrl-C while a library loaded: an ImportError)
        if signum is not None:
            write_manifest(out, job, cfg, "interrupted", {"signal": signal.Signals(signum).name})
            raise
        kept = keep_partial(out, cfg, err)
        named = _named(out, err)
        write_manifest(out, job, cfg, "failed", {"error": f"{type(named).__name__}: {named}",
                                                 **({"partial": kept} if kept else {})})
        if named is err:
            raise
        raise named from err


def _named(out: str, err: BaseException) -> BaseException:
    """`err`, or for a write's OSError that names no file (a full disk's, raised by a write or a
    flush; a failing disk's EIO, by an fsync) an OutputError naming the results directory: "file
    error: [Errno 28] No space left on device" (or "[Errno 5] Input/output error") said nothing of
    where."""
    if (isinstance(err, OSError) and not isinstance(err, OutputError) and err.filename is None
            and err.errno in _WRITE_ERRORS):
        return OutputError(f"{out}: cannot write the results ({err.strerror or err})")
    return err


_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


PARTIAL = "partial"


def keep_partial(out: str, cfg: dict, err: BaseException) -> str | None:
    """A DivergenceError's saves before the failure (`err.partial`, `err.saved_steps`; finite but
    where a group of replicas had stopped sooner, NaN there) written to OUT/partial.npz with its
    .json (the configuration, the error, the failing step), so that the failing solve's saves are
    not lost (the results of points that finished before it are the job's to keep: solve and
    validate save each as it is done); the error's message then names that file rather than the
    exception's attributes. Returns the file's name in `out`, or None (nothing kept, or it could
    not be written: the failure itself is what propagates)."""
    from dmft.errors import DivergenceError
    from dmft.io import save

    part = getattr(err, "partial", None) if isinstance(err, DivergenceError) else None
    if not isinstance(part, dict):
        return None
    arrays = {k: np.asarray(v) for k, v in part.items()
              if isinstance(v, (np.ndarray, np.generic, float, int)) and np.asarray(v).dtype.kind in "biuf"}
    if err.saved_steps is not None:
        arrays["saved_steps"] = err.saved_steps
    if not arrays or all(a.size == 0 for a in arrays.values()):
        return None
    try:
        save(os.path.join(out, PARTIAL), arrays, cfg,
             extra={"error": str(err), "step": None if err.step is None else int(err.step), "cause": err.cause})
    except Exception:                    # (a full disk, say: the divergence is the error to report)
        return None
    name = PARTIAL + ".npz"
    err.args = (partial_named(str(err.args[0]) if err.args else "", os.path.join(out, name)),) + tuple(err.args[1:])
    return name


def partial_named(msg: str, where: str, append: bool = True) -> str:
    """A DivergenceError's message with the file `where` its saves were written to in place of the
    exception's attributes (".partial", ".saved_steps"); where it names neither and `append`, a
    sentence saying where they are."""
    for old, new in ((" are in .partial (their step counts in .saved_steps)", f" are in {where} (their step "
                      "counts in saved_steps)"), (" are in .partial.", f" are in {where}.")):
        if old in msg:
            return msg.replace(old, new)
    return msg + f" The saves before it are in {where}." if append else msg


def _existing_parent(out: str) -> str:
    """Refuse a location where no directory can be (a file in the way, also as "a_file/"; a
    symbolic link to a missing target or a loop, at `out` or above: `store.in_the_way`, which
    were refused as "cannot write the results directory (File exists)"); the nearest existing
    directory at or above it."""
    parent, blocked = in_the_way(out)
    if blocked and parent == (out.rstrip(os.sep) or os.sep):
        raise OutputError(f"{out} exists and is not a directory; choose another --out"
                          if os.path.exists(parent) else f"{blocked}; choose another --out")
    if blocked:
        raise OutputError(f"{out}: {parent} is a file, not a directory; choose another --out"
                          if os.path.exists(parent) else f"{out}: {blocked}; choose another --out")
    return parent


def check_writable(out: str) -> None:
    """Refuse an output location that cannot hold a results directory (OutputError)."""
    out = os.fspath(out)
    parent = _existing_parent(out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: no permission to write in {os.path.abspath(parent)}; "
                          "choose another --out")


@functools.cache
def code_digest() -> str:
    """SHA-256 over the Python sources of dmft, networks, validation and experiments (relative
    paths and contents, in order): the code that computes a result. dmft.__version__ is a
    constant, so an edited solver was not told apart from the one that wrote a store."""
    import dmft
    import experiments
    import networks
    import validation

    h = hashlib.sha256()
    for pkg in (dmft, networks, validation, experiments):
        root = os.path.dirname(os.path.abspath(pkg.__file__))
        files = sorted(os.path.join(d, f) for d, _, names in os.walk(root)
                       for f in names if f.endswith(".py"))
        for path in files:
            rel = os.path.relpath(path, os.path.dirname(root)).replace(os.sep, "/")
            with open(path, "rb") as fh:
                body = fh.read()
            h.update(f"{rel}\0{len(body)}\0".encode())
            h.update(body)
    return h.hexdigest()


def run_inputs(cfg: dict) -> dict:
    """What besides the configuration decides a run's numbers: float64 or not, the platform the
    job computes on, and the SHA-256 of the data file it reads (task.path, for task.name = npz)."""
    import jax

    return {"x64": bool(jax.config.jax_enable_x64), "platform": compute_platform(), **data_digest(cfg)}


# the statuses of a run that did not complete: a rerun of the same run (and code) resumes it
UNFINISHED = ("running", "interrupted", "failed", "plot_failed")


# the versions that decide a result's numbers (`dmft.io.environment`'s): a run that did not complete
# is resumed only under the same ones, so that no resumed run mixes two libraries' results
RESUME_VERSIONS = ("python", "numpy", "jax", "jaxlib", "optax", "backend")


def _versions_moved(old: dict) -> list[str]:
    """RESUME_VERSIONS that differ between the previous run's run.json and this process, as
    "name old -> new" (every one where the record is missing)."""
    was = old.get("environment") if isinstance(old.get("environment"), dict) else {}
    now = environment()
    return [f"{k} {was.get(k, '?')} -> {now.get(k, '?')}" for k in RESUME_VERSIONS if was.get(k) != now.get(k)]


def _clear(out: str, old: dict, keep=()) -> tuple[int, list]:
    """Remove what a previous dmft run wrote in `out`, in a directory dmft made as in a user's:
    the files it recorded (its digests, or the files it had written when it failed or was
    interrupted, the journal's for one killed outright, and the config.toml of a run.json), then
    the directories that leaves empty; nothing dmft did not write is ever deleted, and `keep`
    (the verified results a resumed run reuses) stays. Returns (the number of files removed, the
    files kept that the previous run did not write)."""
    recorded = old.get("digests") if isinstance(old.get("digests"), dict) else {}
    written = old.get("written") if isinstance(old.get("written"), list) else []
    root = os.path.realpath(out)
    removed = 0
    listed = [*recorded, *written, *_journal(out), *(["config.toml"] if old else [])]
    for rel in {str(r) for r in listed} - _MARKERS - set(keep):
        path = os.path.join(out, *rel.split("/"))
        if os.path.isfile(path) and os.path.realpath(path).startswith(root + os.sep):
            os.remove(path)
            removed += 1
            folder = os.path.dirname(path)
            with contextlib.suppress(OSError):
                while os.path.realpath(folder).startswith(root + os.sep) and not os.listdir(folder):
                    os.rmdir(folder)
                    folder = os.path.dirname(folder)
    return removed, [f for f in _files(out) if f not in keep]


# settings that change no result, only whether a run is refused (memory limits): a rerun under
# another limit is the same run, as a scan resumes under one (`scan.execute.SETTINGS`)
SETTINGS = ("max_memory_gb",)

# the section of a job's configuration that holds only the verdicts' tolerances: the saved results
# decide the verdicts under another one (`RECHECK`)
CHECK_SECTION = "check"

# what `prepare_output` returns for a run whose results are judged again, not computed
RECHECK = "recheck"


# keys added to a job's configuration after runs were written without them, with the value that
# those runs used: a run.json without one is read as having it (a full-batch run written before
# train.batch_size existed is the same run as one that says batch_size = 0)
ADDED_KEYS = {("train", "batch_size"): 0, ("train", "batch_seed"): 0,
              # grok's gamma0 x minibatch diagram: its sizes (the schema's default) are read only
              # with the axis, which no run had then
              ("diagram", "minibatch"): [4, 16, 64, 165],
              # the node bias check's allowance: runs before it judged without one (0), but every such
              # run is of older code and is computed again under this one; read as the default, a
              # rerun there computes rather than refuses "a different run" over a key it never set
              ("check", "node_bias_rel"): 0.5}


def _with_added(cfg: dict, like: dict) -> dict:
    """`cfg` with the `ADDED_KEYS` that `like` has and it lacks, at their old value."""
    out = {sec: (dict(t) if isinstance(t, dict) else t) for sec, t in cfg.items()}
    for (sec, key), value in ADDED_KEYS.items():
        if isinstance(out.get(sec), dict) and key not in out[sec] and key in (like.get(sec) or {}):
            out[sec][key] = value
    return out


# sections a job never reads: they do not make it another run (`dmft solve --set simulate.seeds=3`
# on a finished solve was "a different run" to compute again; a [check] change on `dmft simulate`,
# which judges nothing, was "re-checked")
UNREAD_SECTIONS = {"solve": ("simulate",), "simulate": ("theory", CHECK_SECTION)}


def _identity(cfg, checks: bool = True, job: str | None = None) -> dict:
    """A configuration less its `SETTINGS` and the sections `job` never reads
    (`UNREAD_SECTIONS`): what makes two runs the same run (without `checks`, also less its
    `CHECK_SECTION`: what makes the results the same)."""
    cfg = jsonable(cfg) if isinstance(cfg, dict) else {}
    unread = UNREAD_SECTIONS.get(job, ())
    return {sec: ({k: v for k, v in table.items() if k not in SETTINGS} if isinstance(table, dict) else table)
            for sec, table in cfg.items() if (checks or sec != CHECK_SECTION) and sec not in unread}


def _legacy_inputs(old: dict, inputs: dict) -> dict:
    """The inputs of a run written before run.json recorded them, from its environment record
    (x64, backend); a data file's digest was not kept, so an npz run counts as another run."""
    env = old.get("environment") if isinstance(old.get("environment"), dict) else {}
    legacy = {"x64": env.get("x64", inputs["x64"]), "platform": env.get("backend", inputs["platform"])}
    if "task.path sha256" in inputs:
        legacy["task.path sha256"] = "(not recorded)"
    return legacy


def seal(man: dict) -> str:
    """run.json's seal: the SHA-256 of its content less the seal itself (canonical JSON, sorted
    keys), recorded by `write_manifest`. A run.json whose content no longer matches its seal was
    edited after dmft wrote it: its configuration, digests or verdicts cannot be trusted (one
    edited to another configuration made the old results "already complete")."""
    body = {k: v for k, v in man.items() if k != "seal"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_manifest(out: str) -> dict:
    try:
        with open(os.path.join(out, MANIFEST), encoding="utf-8") as fh:
            man = json.load(fh)
        return man if isinstance(man, dict) else {}
    except (OSError, ValueError):             # (ValueError: not JSON, or bytes that are not UTF-8)
        return {}


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _holder(out: str, fd: int) -> str:
    """Who holds `out`'s lock: "pid N on HOST" from the lock file (or a running run.json), or ""."""
    try:
        said = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        said = ""
    man = read_manifest(out)
    if not said and man.get("status") == "running" and man.get("pid"):
        said = f"pid {man['pid']} on {man.get('host', '?')}"
    return said


def _lock(out: str, create: bool) -> bool:
    """Hold `out`'s lock (flock on LOCK) until `release`: True once held (at once when this
    process holds it already), False when there is no lock file and `create` is off (or the
    file system has no locks). One that a live process holds is refused (OutputConflict, naming
    it and the holder's pid); the OS frees a lock when its process ends, however it ends. A
    read-only lock file (a finished run in a read-only place) is locked through a read-only
    descriptor."""
    root = os.path.realpath(out)
    if root in _LOCKS:
        return True
    path = os.path.join(out, LOCK)
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o666)
    except FileNotFoundError:
        if create:
            raise
        return False
    except OSError as err:
        if create or err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(out, fd)
        os.close(fd)
        raise OutputConflict(f"{out} is in use by another dmft run{f' ({holder})' if holder else ''}; "
                             "wait for it to end (or stop it), or choose another --out") from None
    except OSError as err:              # a file system without locks: the run goes on unguarded
        os.close(fd)
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        return False
    _LOCKS[root] = fd
    return True


def _sign_lock(out: str) -> None:
    """Write this process's pid and host in the held lock file, for a run refused meanwhile."""
    fd = _LOCKS.get(os.path.realpath(out))
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)


def release(out: str | None = None) -> None:
    """End this process's run in `out` (in every directory when None): recording stops and the
    lock is emptied and freed. The final write_manifest calls it; the command, on its way out."""
    roots = list({**_LOCKS, **_RECORDING}) if out is None else [os.path.realpath(out)]
    for root in roots:
        _stop_recording(root)
        fd = _LOCKS.pop(root, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def prepare_output(out: str, job: str, cfg: dict, force: bool, log=None, recheck: bool = False,
                   resume: bool = False) -> bool | str:
    """Claim the directory for this run and hold its lock until the run ends (the final
    write_manifest releases it). Returns True when the job is to compute, False when the same
    run is already complete: nothing is written then, so a finished run in a read-only place is
    found too. With `recheck` (a job that can judge saved results again), `RECHECK` when the
    directory holds a complete run of this command, code and inputs that differs only in its
    [check] section (`CHECK_SECTION`), every file of it as run.json recorded: nothing is written
    yet (but a lock file where there was none) and the lock is held; the job reads the results
    (`verify_files`), then `start_recheck`.
    `log` (default: stderr) hears of a previous run that was killed and of files kept that are
    not dmft's. With `resume` (a job that saves its results with `record_result`), a previous run
    of the same command, configuration, inputs and code that did not complete (`UNFINISHED`) is
    resumed, unless forced: the result files it recorded that are still as it wrote them (their
    SHA-256) are kept, not removed, and listed by `resumed` for the job to reuse; everything else
    it wrote is removed as for any rerun (a failed point's saves, partial.npz, a changed file,
    which is named in one line to `log`).

    Raises:
        OutputConflict: a live run holds it, before anything is touched (also with force); it
            holds another run (or files not written by dmft), or a run.json edited since dmft
            wrote it, and force is off; the run to re-check has a missing or changed file.
        OutputError: it cannot be created or written.
    """
    out = os.fspath(out)
    _existing_parent(out)
    if os.path.isdir(out) and _lock(out, create=False):
        _sign_lock(out)                 # (a run refused meanwhile, say while a recheck reads, names us)
    try:
        _restore_killed_recheck(out, log or _say)
        claimed = _claim(out, job, cfg, force, log or _say, recheck, resume)
    except BaseException:
        release(out)
        raise
    if not claimed:
        release(out)
    return claimed


def _damaged(out: str, damaged: list) -> OutputConflict:
    """The refusal of a complete run whose files are not as run.json recorded them."""
    return OutputConflict(
        f"{out}: run.json says this run is complete, but its files are not as written: "
        + "; ".join(damaged[:8]) + (f" (and {len(damaged) - 8} more)" if len(damaged) > 8 else "")
        + ". Pass --force to compute it again, or choose another --out.")


def _same_results(old: dict, job: str, cfg: dict, same_inputs: bool) -> bool:
    """`old` is a run of this command, code and inputs whose configuration matches `cfg` but for
    its [check] section (which the job reads): its results are the ones `cfg` computes."""
    return (old.get("command") == job and same_inputs and old.get("code") == code_digest()
            and _identity(old.get("config"), checks=False, job=job) == _identity(cfg, checks=False, job=job)
            and CHECK_SECTION not in UNREAD_SECTIONS.get(job, ()))


def _only_checks_differ(old: dict, job: str, cfg: dict, same_inputs: bool) -> bool:
    """`old` is a complete run of this command, code and inputs, with digests, whose configuration
    differs from `cfg` in its [check] section alone: its results decide the new verdicts."""
    return (old.get("status") == "complete" and isinstance(old.get("digests"), dict) and bool(old["digests"])
            and _same_results(old, job, cfg, same_inputs))


def refuse_store(out) -> None:
    """Refuse `out` when it holds a `dmft scan` store (its manifest.json in the store format, or a
    manifest.json beside a chunks/ folder): OutputConflict naming it, --force or not. A run there
    would put its files beside the store's, in a directory whose contents the scan alone accounts
    for (a forced run keeps the files it did not write)."""
    out = os.fspath(out)
    store, name = os.path.split(os.path.realpath(out))       # (a link to chunks/ too)
    if name == CHUNKS and os.path.isfile(os.path.join(store, STORE_MANIFEST)):
        # (a store's chunks/ is empty until its first chunk: a run there was taken, its files kept,
        # and its partial.npz set aside by the next session as a damaged chunk)
        raise OutputConflict(f"{out} is the {CHUNKS}/ folder of the dmft scan store {store}: a run there "
                             "would write its files among the store's, with --force too; choose another --out")
    path = os.path.join(out, STORE_MANIFEST)
    if not os.path.isfile(path):
        return
    try:
        with open(path) as fh:
            fmt = json.load(fh).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None
    ours = isinstance(fmt, str) and fmt.split("/")[0] == FORMAT.split("/")[0]
    if not ours and not os.path.isdir(os.path.join(out, CHUNKS)):
        return
    raise OutputConflict(f"{out} holds a dmft scan's store ({STORE_MANIFEST}"
                         + (f", format {fmt!r}" if isinstance(fmt, str) else "") + f", {CHUNKS}/): a run "
                         "there would write its files beside the store's, with --force too; choose another --out")


def _claim(out: str, job: str, cfg: dict, force: bool, say, recheck: bool = False,
           resume: bool = False, made: bool | None = None) -> bool | str:
    """prepare_output's checks and claim: refusals first, write access only for a run to compute.
    Checks made without the lock (a new directory, or one without a lock file, had none to take)
    are made again once it is held (`made`: this process made the directory): another run may have
    claimed, written and left the directory between them and the lock (its complete run was
    cleared and overwritten, a different configuration's too, without --force). A line the
    first checks said is not said again by the second (it was, twice)."""
    if made is None:
        said, tell = set(), say

        def say(line):
            if line not in said:
                said.add(line)
                tell(line)
    refuse_store(out)
    path = os.path.join(out, MANIFEST)
    previous, can_resume, resume = False, resume, False
    old = read_manifest(out) if os.path.exists(path) else {}
    if old and not (isinstance(old.get("command"), str) and isinstance(old.get("config"), dict)):
        old = {}                                # a run.json that dmft did not write: treated as unreadable
    if old and "seal" in old and old["seal"] != seal(old):      # (one without a seal: written before seals)
        if not force:
            raise OutputConflict(f"{out}: {MANIFEST} was edited after dmft wrote it (its content no longer "
                                 "matches its seal), so the configuration, files and verdicts it records cannot "
                                 "be trusted; choose another --out, or pass --force to compute the run again "
                                 "(the files it lists are then kept, not removed)")
        old = {}
    if old:
        old = {**old, "config": _with_added(old["config"], jsonable(cfg))}
    if os.path.exists(path) and not old and not force:
        raise OutputConflict(f"{out}: {MANIFEST} is unreadable (damaged, or not written by dmft); choose "
                             "another --out, or pass --force to write over it (the files its run recorded "
                             "are replaced, others are kept)")
    if old:
        inputs = run_inputs(cfg)
        old_inputs = old.get("inputs") or _legacy_inputs(old, inputs)
        same_inputs = jsonable(old_inputs) == jsonable(inputs)
        same = (old.get("command") == job and _identity(old.get("config"), job=job) == _identity(cfg, job=job)
                and same_inputs)
        if same and old.get("status") == "complete" and not force:
            damaged = check_digests(out, old.get("digests"))
            if damaged:            # (edited files are not replaced without --force, of any code)
                raise _damaged(out, damaged)
            if old.get("code") == code_digest():
                moved = _versions_moved(old)
                if moved:       # (its numbers stand as computed: the code is the same, the libraries not)
                    say(f"{out}: computed under other library versions ({', '.join(moved)}); its results "
                        "are kept as they are: pass --force to compute it again under these")
                return False
        if recheck and not same and not force and _only_checks_differ(old, job, cfg, same_inputs):
            damaged = check_digests(out, old["digests"])     # every file: none is laundered into new digests
            if damaged:
                raise _damaged(out, damaged)
            check_writable(out)
            if os.path.realpath(out) not in _LOCKS and _lock(out, create=True):
                # (no lock file to take before these checks: made again under the lock it now holds)
                return _claim(out, job, cfg, force, say, recheck, can_resume, False if made is None else made)
            return RECHECK
        if (recheck and can_resume and not same and not force and old.get("status") in UNFINISHED
                and _same_results(old, job, cfg, same_inputs)):
            # an unfinished run whose [check] section alone differs: its results are this run's (the
            # checks judge them at the end, under the new section), so it is resumed, not refused
            diff = differences(_identity(old.get("config", {}), job=job), _identity(cfg, job=job))
            say(f"{out}: the previous run did not complete, and differs from this one only in its "
                f"[{CHECK_SECTION}] section ({', '.join(diff[:8])}): resuming it, judged under the new one")
            same = True
        if not same and not force:          # (the same run of other code is computed again)
            diff = differences(_identity(old.get("config", {}), job=job), _identity(cfg, job=job))
            diff += [k for k in sorted(set(old_inputs) | set(inputs))
                     if jsonable(old_inputs.get(k)) != jsonable(inputs.get(k))]
            if old.get("code") != code_digest():     # (a [check]-only change is re-checked under the same code only;
                # first, so that more than 8 other differences do not cut it from the message)
                diff.insert(0, "the code that wrote it (the sources of dmft, networks, validation and experiments)")
            raise OutputConflict(
                f"{out} already holds a different run ({old.get('command', '?')}"
                f"{'; differing: ' + ', '.join(diff[:8]) if diff else ''}). "
                "Choose another --out, or pass --force to overwrite it.")
        previous = True
        # the same run of this code that did not complete (failed, interrupted, killed, its figures
        # failed): its verified results are reused, the rest computed (`resumed`)
        resume = (can_resume and same and not force and old.get("status") in UNFINISHED
                  and old.get("code") == code_digest())
        moved = _versions_moved(old) if resume else []
        if moved:           # (its results and this run's would come from different libraries)
            say(f"{out}: the previous run's libraries differ from this one's ({', '.join(moved)}): "
                "computing it again, none of its results reused")
            resume = False
    elif os.path.isdir(out) and set(os.listdir(out)) - _MARKERS and not force:
        raise OutputConflict(f"{out} is not empty and was not written by dmft; choose another --out "
                             "or pass --force")
    check_writable(out)                 # only now: a complete run needs no write access
    running = False
    try:
        made = not os.path.isdir(out) if made is None else made    # dmft's own directory only when dmft makes it
        os.makedirs(out, exist_ok=True)
        if os.path.realpath(out) not in _LOCKS and _lock(out, create=True):    # (taken only now: checked again)
            return _claim(out, job, cfg, force, say, recheck, can_resume, made)
        _sign_lock(out)
        _drop_backup(out)               # (a killed recheck's copy that was not put back: this run replaces it)
        reuse, changed, damaged_lines = _verified_results(out) if resume else ({}, [], 0)
        if old.get("status") == "running":      # and no live process holds the lock
            who = f"pid {old['pid']} on {old.get('host', '?')}, " if old.get("pid") else ""
            say(f"{out}: the previous run ({who}still \"running\" in run.json) was killed before it "
                "finished; " + ("resuming it" if reuse else "computing it again"))
        if resume and not reuse:    # (the job's "resuming: K of N" line comes only with something reused)
            say(f"{out}: none of the previous run's results can be reused (none was recorded as complete"
                + (", or each changed since" if changed else "") + "): computing it again")
        if damaged_lines:
            say(f"{out}: {damaged_lines} line(s) of the previous run's results record ({RESULTS}) damaged: the "
                "results they named are computed again")
        if changed:
            say(f"{out}: not reused, changed or missing since the previous run wrote them (computed again): "
                + ", ".join(changed[:5]) + (f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""))
        removed, kept = _clear(out, old, keep=reuse) if not made or old else (0, [])
        if kept and (previous or removed):
            say(f"{out}: kept {len(kept)} file(s) the previous run did not write: " + ", ".join(kept[:5])
                + (f" (and {len(kept) - 5} more)" if len(kept) > 5 else ""))
        if made:
            open(os.path.join(out, OWNED), "w").close()
        # from here on, what this process writes in `out` is the run's (its results record: a job's that resumes)
        _start_recording(out, reuse, results=can_resume)
        _RESUMED[os.path.realpath(out)] = dict(reuse)
        write_manifest(out, job, cfg, "running")
        running = True
        write_text(os.path.join(out, "config.toml"), to_toml(cfg, unread_task_keys(cfg)))
    except OSError as err:
        bad = err if isinstance(err, OutputError) else \
            OutputError(f"{out}: cannot write the results directory ({err.strerror or err})")
        if running:       # (its run.json said "running": a rerun took it for a run killed outright)
            with contextlib.suppress(OSError):
                write_manifest(out, job, cfg, "failed", {"error": f"{type(bad).__name__}: {bad}"})
        if bad is err:
            raise
        raise bad from err
    except Exception as err:    # (any other failure once run.json said "running": a TOML value that cannot be written)
        if running:
            with contextlib.suppress(OSError):
                write_manifest(out, job, cfg, "failed", {"error": f"{type(err).__name__}: {err}"})
        raise
    return True


def digests(out: str, stop: bool = False) -> dict:
    """SHA-256 of every file this run wrote (relative path -> hex; run.json and markers aside)."""
    return {rel: sha256(os.path.join(out, *rel.split("/"))) for rel in _written(out, stop)}


def check_digests(out: str, recorded) -> list:
    """What differs from the digests run.json recorded when the run completed: missing or
    changed files ([] when all match, or when an earlier version recorded none)."""
    if not isinstance(recorded, dict):
        return []
    problems = []
    for rel, digest in recorded.items():
        path = os.path.join(out, *rel.split("/"))
        if not os.path.isfile(path):
            problems.append(f"{rel} is missing")
        elif sha256(path) != digest:
            problems.append(f"{rel} was changed or damaged")
    return problems


def verify_files(out: str, files, recorded) -> None:
    """Before a job reads the files `files` (paths relative to `out`) of a previous run: each is
    one the run recorded (`recorded`, run.json's digests) and is as it was written; else the
    refusal of a damaged complete run (OutputConflict, naming each), before anything is written."""
    recorded = recorded if isinstance(recorded, dict) else {}
    files = list(dict.fromkeys(files))
    damaged = [f"{rel} is missing" if not os.path.isfile(os.path.join(out, *rel.split("/"))) else
               f"{rel} was not recorded by the run" for rel in files if rel not in recorded]
    damaged += check_digests(out, {rel: recorded[rel] for rel in files if rel in recorded})
    if damaged:
        raise _damaged(out, damaged)


def start_recheck(out: str, job: str, cfg: dict) -> dict:
    """Claim `out` to re-check its complete run (after `prepare_output` returned `RECHECK` and the
    job has read the results): the lock is held, the run's files are kept (the journal lists them
    and the final run.json carries their recorded digests over, unless the recheck writes one
    anew), run.json says "running" under `cfg` and config.toml is `cfg`. Returns the previous
    run.json. Jobs call it through `recheck_recorded`, which puts the complete run back when
    the recheck fails or is interrupted, and keeps a copy on disk (BACKUP) from which the next
    run puts it back when the recheck was killed outright (SIGKILL)."""
    old = read_manifest(out)
    kept = old.get("digests") if isinstance(old.get("digests"), dict) else {}
    try:
        check_writable(out)
        _lock(out, create=True)
        _sign_lock(out)
        _start_recording(out, kept, results=False)
        # the results that run took from an earlier one stay so (a recheck writes no result)
        _CARRIED[os.path.realpath(out)] = {str(r) for r in old.get("reused", ()) if r in kept} \
            if isinstance(old.get("reused"), list) else set()
        write_manifest(out, job, cfg, "running")
        write_text(os.path.join(out, "config.toml"), to_toml(cfg, unread_task_keys(cfg)))
    except BaseException as err:
        release(out)
        if isinstance(err, OSError) and not isinstance(err, OutputError):
            raise OutputError(f"{out}: cannot write the results directory ({err.strerror or err})") from err
        raise
    return old


# the files a recheck rewrites: all else in the directory is the complete run's, untouched
RECHECK_REWRITES = (MANIFEST, "config.toml", "report.md", "report.json")


@contextlib.contextmanager
def recheck_recorded(out: str, job: str, cfg: dict, say=None):
    """Claim `out` for a recheck (`start_recheck`; yields the previous run.json) and, on any error
    or interruption within (the final write_manifest included), put the files a recheck
    rewrites (`RECHECK_REWRITES`) back as they were, release the directory and propagate: the
    results were never touched, so the complete run stays complete and verified, under its own
    configuration (a failed recheck threw it away: its next run recomputed everything). `say`
    (default: stderr) hears that it was kept."""
    before = {}
    for name in RECHECK_REWRITES:
        try:
            with open(os.path.join(out, name), "rb") as fh:
                before[name] = fh.read()
        except FileNotFoundError:
            before[name] = None
    try:
        # on disk first: a recheck killed outright (SIGKILL) is put back by the next run
        _write_backup(out, before)
    except BaseException as err:
        _drop_backup(out)
        release(out)
        if isinstance(err, OSError):
            raise OutputError(f"{out}: cannot write the results directory ({err.strerror or err})") from err
        raise
    try:
        yield start_recheck(out, job, cfg)
    except BaseException as err:
        lost = _put_back_run(out, before)
        if lost:
            with contextlib.suppress(Exception):    # an unfinished run: the next one recomputes it
                write_manifest(out, job, cfg, "failed", {"error": f"{type(err).__name__}: {err}"})
        _drop_backup(out)
        release(out)
        (say or _say)(f"{out}: the re-check stopped ({type(err).__name__}); "
                      + (f"could not put back {', '.join(lost)}: the next run of this command computes it again" if lost
                         else "the complete run is kept as it was, under its previous [check] section"))
        raise


def _write_backup(out: str, before: dict) -> None:
    """`before` ({name: bytes or None}) in `out`'s BACKUP file, written atomically."""
    text = json.dumps({name: None if data is None else data.hex() for name, data in before.items()})
    tmp = os.path.join(out, BACKUP + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(out, BACKUP))


def _drop_backup(out: str) -> None:
    """Remove a recheck's copy (and a half-written one, and the temporaries of run.json or of a
    put-back that a kill left); where it cannot be removed (a read-only directory) it stays,
    harmless: only a run.json still "running" makes it put back."""
    for name in (BACKUP, BACKUP + ".tmp", MANIFEST + ".tmp", *(n + ".restore" for n in RECHECK_REWRITES)):
        with contextlib.suppress(OSError):
            os.remove(os.path.join(out, name))


def _restore_killed_recheck(out: str, say) -> None:
    """A recheck killed outright (no process holds the lock now: the caller took it) left its
    BACKUP and a run.json still "running": put the complete run's files back, run.json last, so
    that this run finds the complete run (it was computed again before). A BACKUP beside any
    other run.json is one the recheck did not get to remove: dropped. An unreadable BACKUP is
    said and dropped (the run then goes on as for any killed run: computed again)."""
    path = os.path.join(out, BACKUP)
    if os.path.realpath(out) not in _LOCKS:
        return
    if not os.path.isfile(path) or read_manifest(out).get("status") != "running":
        _drop_backup(out)            # (and the temporaries a write killed midway left)
        return
    try:
        with open(path) as fh:
            saved = json.load(fh)
        before = {str(name): None if data is None else bytes.fromhex(data) for name, data in saved.items()}
        if set(before) != set(RECHECK_REWRITES):
            raise ValueError(f"names {sorted(before)}")
    except (OSError, ValueError, TypeError, AttributeError) as err:
        say(f"{out}: {BACKUP}, the copy a killed re-check left, is unreadable ({err}): not put back")
        _drop_backup(out)            # (the run is an unfinished one now: computed again)
        return
    lost = _put_back_run(out, before)
    if lost:
        say(f"{out}: a re-check was killed before it finished, and {', '.join(lost)} could not be put back")
        return
    _drop_backup(out)
    say(f"{out}: a re-check was killed before it finished; the complete run it was judging is put "
        "back as it was")


def _put_back_run(out: str, before: dict) -> list:
    """Put a recheck's files back (`_put_back`), run.json last and only when every other file
    is back: else a "complete" run.json would vouch for a report it does not match (refused as
    damaged by every command). The names that could not be."""
    lost = _put_back(out, {k: v for k, v in before.items() if k != MANIFEST})
    return lost or _put_back(out, {MANIFEST: before[MANIFEST]})


def _put_back(out: str, before: dict) -> list:
    """Write each file of `before` ({name: bytes, or None for none}) back into `out` atomically;
    the names that could not be."""
    lost = []
    for name, data in before.items():
        path = os.path.join(out, name)
        try:
            if data is None:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            tmp = path + ".restore"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError:
            lost.append(name)
            with contextlib.suppress(OSError):
                os.remove(path + ".restore")
    return lost


def recheck_note(old: dict, cfg: dict) -> dict:
    """What run.json records of a recheck: the [check] section the results were judged under
    before and the keys that changed."""
    before = (old.get("config") or {}).get(CHECK_SECTION, {})
    return {"previous_check": before,
            "differing": differences({CHECK_SECTION: before}, {CHECK_SECTION: jsonable(cfg.get(CHECK_SECTION, {}))})}


def write_manifest(out, job, cfg, status, extra=None) -> None:
    """run.json: command, status, configuration, environment, pid and host (and extra fields),
    atomically, sealed (`seal`: a rerun refuses a run.json edited since). A complete run also
    records the SHA-256 of every file it wrote, so that a rerun which finds it complete verifies
    them (`prepare_output`); any status but "running" ends the run (`release`)."""
    man = {"command": job, "status": status, "config": jsonable(cfg), "inputs": jsonable(run_inputs(cfg)),
           "code": code_digest(), "environment": environment(), "pid": os.getpid(),
           "host": socket.gethostname()}
    if extra:
        man.update(jsonable(extra))
    root = os.path.realpath(out)
    kept = {rel: d for rel, d in _KEPT.get(root, {}).items()     # (a recheck's)
            if os.path.isfile(os.path.join(out, *rel.split("/")))}
    reused = {*_RESUMED.get(root, {}), *_CARRIED.get(root, ())} - _RECORDING.get(root, set())
    if status != "running" and reused:
        # the result files a resumed run took from the previous run as they were (not written
        # again): which of its numbers another process computed (grok's parts are folded into
        # curves.npz at the end, their files then gone); a recheck keeps its run's list
        man["reused"] = sorted(reused)
    if status == "complete":
        man["digests"] = dict(sorted({**kept, **digests(out, stop=True)}.items()))
    elif status != "running":          # failed, interrupted, plot_failed: what a rerun removes
        man["written"] = sorted({*kept, *_written(out, stop=True)})
    man = json.loads(json.dumps(man))         # (sealed as it reads back)
    man["seal"] = seal(man)
    tmp = os.path.join(out, MANIFEST + ".tmp")
    # a recheck's final run.json that fails leaves its copy and lock to `recheck_recorded`, which
    # puts the complete run back first (dropped here, a kill during that put-back lost the copy, and
    # the next run took the run for one killed midway: resumed, not put back)
    rechecking = status != "running" and os.path.isfile(os.path.join(out, BACKUP))
    written = False
    try:
        with open(tmp, "w") as fh:
            json.dump(man, fh, indent=2)
        os.replace(tmp, os.path.join(out, MANIFEST))
        written = True
    except BaseException as err:        # (interrupted too: no half-written run.json.tmp stays)
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, OSError):
            raise OutputError(f"{out}: cannot write {MANIFEST} ({err.strerror or err})") from err
        raise
    finally:
        if status != "running" and (written or not rechecking):    # the run has ended: its lock goes
            _drop_backup(out)                                      # (a recheck's copy first)
            release(out)
