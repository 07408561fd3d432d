"""Results directories of the jobs: claim, manifest (run.json), refuse what belongs to another run.

A results directory holds run.json (the command, configuration, environment and status) and
config.toml next to the job's own files. A directory that holds a different run is refused
(`OutputConflict`); rerunning the same configuration finds it complete and does nothing unless
forced, after checking every file against the SHA-256 that run.json recorded when the run
completed (a missing or changed file is refused, naming it). A run is the same when its
command, configuration and inputs are: the arithmetic (--x64/--x32), the platform it ran on,
and the SHA-256 of a data file it read (task.path), so a changed data file or another
precision is a different run, never "already complete". The same run written by other code
(`code_digest`, recorded in run.json) is computed again, as one that did not complete is: a
complete run is never reported from a solver since edited. Recomputing over a previous run
(--force, one that did not complete, or one of other code) first removes what that run wrote,
so no stale file outlives it or enters the new digests: all of a directory dmft made (marked
.dmft-owned), and in a user's directory written into with --force only the files the run
recorded (its digests when it completed; the files it had written when it failed or was
interrupted). A run knows its files exactly: the process records every file it opens for
writing (or renames into place) in the directory it claimed, so nothing else there (a user's
file, a log the user appends to during the run) is ever digested or removed; a run killed
outright (SIGKILL) records nothing, and its files stay (never digested) until overwritten. A
location that cannot be used at all (a file in the way, no permission, a missing parent that
cannot be created) raises `OutputError` naming it, before any compute.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import sys

from dmft.errors import DmftError, OutputConflict, OutputError
from dmft.io import compute_platform, environment, jsonable, sha256
from dmft.plotting import tidy_log_ticks

from .config import differences, to_toml
from .problem import data_digest

__all__ = ["prepare_output", "write_manifest", "read_manifest", "check_writable", "OutputConflict",
           "OutputError", "PlotError", "draw_figures", "raise_plot_errors"]

MANIFEST = "run.json"
OWNED = ".dmft-owned"      # marker: dmft made this directory (a forced rerun may empty it)
FOREIGN = ".dmft-foreign"  # written by earlier versions in a user's directory; ignored now
_MARKERS = {MANIFEST, OWNED, FOREIGN}

# The files this process writes in each results directory that a job has claimed: an audit
# hook sees every open() for writing and every rename (np.savez, savefig and the reports all
# open their files), so a run's files are known exactly, never guessed from what is on disk (a
# user's log appended to during a run, or a file with a future mtime, is not the run's).
_RECORDING: dict[str, set] = {}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _note(path, add: bool) -> None:
    real = os.path.realpath(os.fsdecode(path))
    for root, files in _RECORDING.items():
        if real.startswith(root + os.sep):
            rel = os.path.relpath(real, root).replace(os.sep, "/")
            (files.add if add else files.discard)(rel)


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
            _note(args[0], False)
            _note(args[1], True)
    except Exception:  # noqa: BLE001 - an audit hook must never break the call it watches
        pass


sys.addaudithook(_audit)


def _is_ours(rel: str) -> bool:
    """Not run.json, its temporary or a marker: a file of the results themselves."""
    return rel not in _MARKERS and not rel.startswith(MANIFEST + ".")


def _start_recording(out: str) -> None:
    _RECORDING[os.path.realpath(out)] = set()


def _written(out: str, stop: bool = False) -> list:
    """The files this process wrote in `out` since it claimed it, that are there now (run.json
    and the markers aside); with stop, recording ends. Without a record (a manifest written by
    a process that did not claim `out`): every file of a directory dmft made, else none."""
    root = os.path.realpath(out)
    files = _RECORDING.pop(root, None) if stop else _RECORDING.get(root)
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
    with the error, Ctrl-C "interrupted", each with the files written so far, before it
    propagates."""
    try:
        yield
    except PlotError:
        raise
    except KeyboardInterrupt:
        write_manifest(out, job, cfg, "interrupted")            # with the files written so far
        raise
    except BaseException as err:       # any failure: the files written so far are recorded
        write_manifest(out, job, cfg, "failed", {"error": f"{type(err).__name__}: {err}"})
        raise


def check_writable(out: str) -> None:
    """Refuse an output location that cannot hold a results directory (OutputError)."""
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputError(f"{out} exists and is not a directory; choose another --out")
    parent = out
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent.rstrip(os.sep)) or "."
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise OutputError(f"{out}: {parent} is a file, not a directory; choose another --out")
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


def _clear(out: str, old: dict) -> None:
    """Remove what a previous dmft run wrote in `out`: everything, when dmft made the directory
    (its OWNED marker says so); else only the files that run recorded (its digests, or the files
    it had written when it failed or was interrupted, and its config.toml), so that nothing dmft
    did not write is ever deleted (a run killed outright recorded nothing: its files stay)."""
    if os.path.isfile(os.path.join(out, OWNED)):
        for name in os.listdir(out):
            path = os.path.join(out, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        return
    recorded = old.get("digests") if isinstance(old.get("digests"), dict) else {}
    written = old.get("written") if isinstance(old.get("written"), list) else []
    for rel in {str(r) for r in [*recorded, *written, "config.toml"]} - _MARKERS:
        path = os.path.join(out, *rel.split("/"))
        if os.path.isfile(path) and os.path.realpath(path).startswith(os.path.realpath(out) + os.sep):
            os.remove(path)


def _legacy_inputs(old: dict, inputs: dict) -> dict:
    """The inputs of a run written before run.json recorded them, from its environment record
    (x64, backend); a data file's digest was not kept, so an npz run counts as another run."""
    env = old.get("environment") if isinstance(old.get("environment"), dict) else {}
    legacy = {"x64": env.get("x64", inputs["x64"]), "platform": env.get("backend", inputs["platform"])}
    if "task.path sha256" in inputs:
        legacy["task.path sha256"] = "(not recorded)"
    return legacy


def read_manifest(out: str) -> dict:
    try:
        with open(os.path.join(out, MANIFEST)) as fh:
            man = json.load(fh)
        return man if isinstance(man, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def prepare_output(out: str, job: str, cfg: dict, force: bool) -> bool:
    """Claim the directory for this run. Returns False when the same run is already complete.

    Raises:
        OutputConflict: it holds another run (or files not written by dmft) and force is off.
        OutputError: it cannot be created or written.
    """
    check_writable(out)
    path = os.path.join(out, MANIFEST)
    previous = False
    old = read_manifest(out) if os.path.exists(path) else {}
    if old and not (isinstance(old.get("command"), str) and isinstance(old.get("config"), dict)):
        old = {}                                # a run.json that dmft did not write: treated as unreadable
    if os.path.exists(path) and not old and not force:
        raise OutputConflict(f"{out}: {MANIFEST} is unreadable (damaged, or not written by dmft); choose "
                             "another --out, or pass --force to write over it (in a directory dmft made "
                             "its files are replaced, elsewhere the other files are kept)")
    if old:
        inputs = run_inputs(cfg)
        old_inputs = old.get("inputs") or _legacy_inputs(old, inputs)
        same_inputs = jsonable(old_inputs) == jsonable(inputs)
        same = old.get("command") == job and old.get("config") == jsonable(cfg) and same_inputs
        if same and old.get("status") == "complete" and not force:
            damaged = check_digests(out, old.get("digests"))
            if damaged:            # (edited files are not replaced without --force, of any code)
                raise OutputConflict(
                    f"{out}: run.json says this run is complete, but its files are not as written: "
                    + "; ".join(damaged[:8]) + (f" (and {len(damaged) - 8} more)" if len(damaged) > 8 else "")
                    + ". Pass --force to compute it again, or choose another --out.")
            if old.get("code") == code_digest():
                return False
        if not same and not force:          # (the same run of other code is computed again)
            diff = differences(old.get("config", {}), jsonable(cfg))
            diff += [k for k in sorted(set(old_inputs) | set(inputs))
                     if jsonable(old_inputs.get(k)) != jsonable(inputs.get(k))]
            raise OutputConflict(
                f"{out} already holds a different run ({old.get('command', '?')}"
                f"{'; differing: ' + ', '.join(diff[:8]) if diff else ''}). "
                "Choose another --out, or pass --force to overwrite it.")
        previous = True
    elif os.path.isdir(out) and os.listdir(out) and not force:
        raise OutputConflict(f"{out} is not empty and was not written by dmft; choose another --out "
                             "or pass --force")
    try:
        # dmft's own directory whatever its run.json says (a damaged one too); else a user's
        owned = os.path.isfile(os.path.join(out, OWNED)) or not (os.path.isdir(out) and os.listdir(out))
        if previous or (owned and os.path.isdir(out)):
            _clear(out, old)
        os.makedirs(out, exist_ok=True)
        if owned:
            open(os.path.join(out, OWNED), "w").close()
        _start_recording(out)          # from here on, what this process writes in `out` is the run's
        write_manifest(out, job, cfg, "running")
        with open(os.path.join(out, "config.toml"), "w") as fh:
            fh.write(to_toml(cfg))
    except OSError as err:
        raise OutputError(f"{out}: cannot write the results directory ({err.strerror or err})") from err
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


def write_manifest(out, job, cfg, status, extra=None) -> None:
    """run.json: command, status, configuration, environment (and extra fields), atomically.
    A complete run also records the SHA-256 of every file it wrote, so that a rerun which
    finds it complete verifies them (`prepare_output`)."""
    man = {"command": job, "status": status, "config": jsonable(cfg), "inputs": jsonable(run_inputs(cfg)),
           "code": code_digest(), "environment": environment()}
    if extra:
        man.update(jsonable(extra))
    if status == "complete":
        man["digests"] = digests(out, stop=True)
    elif status != "running":          # failed, interrupted, plot_failed: what a rerun removes
        man["written"] = _written(out, stop=True)
    tmp = os.path.join(out, MANIFEST + ".tmp")
    try:
        with open(tmp, "w") as fh:
            json.dump(man, fh, indent=2)
        os.replace(tmp, os.path.join(out, MANIFEST))
    except OSError as err:
        raise OutputError(f"{out}: cannot write {MANIFEST} ({err.strerror or err})") from err
