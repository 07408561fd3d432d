"""A results store for scans: one manifest and one .npz file per chunk of grid points.

    DIR/manifest.json      identity (format, configuration, versions), grid, chunks, sessions
    DIR/journal.jsonl      the records of the chunks written since the manifest was last saved:
                           a header naming that manifest (the SHA-256 of its bytes), then one
                           line per chunk (its record, what changed in the session's counts),
                           each line with its own SHA-256
    DIR/chunks/NAME.npz    "index" (global grid indices), one array per output (leading axis n),
                           the points' coordinates and the manifest digest it was written for
    DIR/log.jsonl          a line per chunk written (name, points, process, seconds), chunk set
                           aside and stale lock found: informational, never read to trust a
                           chunk (a session stopped between a chunk's record and its line
                           leaves none)

Every file but the two .jsonl is written to a temporary name, flushed to disk and renamed, so
a chunk file either exists complete or not at all. A chunk's record is appended to the journal
(flushed to disk) once its file is in place, so writing a chunk costs the same however many
chunks the store holds; the whole manifest is saved (the journal folded into it, then emptied)
only when a session opens the store, starts and ends. A scan killed at any moment loses only the
chunks in flight: a chunk file without its journal line, or whose line was cut short, is not
trusted and is computed again; every other line stands (the next line appended starts on a line
of its own). A journal whose header names other manifest bytes than those on disk (killed
between the manifest's save and the journal's emptying: folded already) is ignored. Readers
(`Store.read`, `load`) read the manifest and the journal, so they see every chunk recorded so
far while a scan runs.

Everything read is verified, and nothing found wrong is deleted:

- the manifest: its fixed part (format, identity, grid, chunk names, groups) carries a
  SHA-256 digest ("digest"), so an edit of any of it is refused (`StoreConflict` naming
  manifest.json); a manifest missing a field is refused naming it; the caller checks that
  its grid and chunk names are those its configuration plans (`check_layout`).
- a journal line: it counts only when its own SHA-256 (over the rest of the line) matches and
  the journal follows this manifest's bytes; a line cut short (a kill while it was appended) or
  edited is not trusted, and neither is the chunk it names (nor any older record of it): `load`
  names it with the reason, a resume sets it aside and recomputes it.
- a chunk: it is trusted only when the manifest or the journal records it (SHA-256, size,
  points, written when the chunk was) and the file matches that record, it holds the points
  and coordinates the plan gives it, it was written for this manifest's digest, and it holds exactly the
  outputs (names, per-point shapes, dtypes) its group's chunks hold ("schemas"). A chunk
  file with no record (a write killed before its record was saved, or an edited manifest),
  a missing file that is recorded, and a file that is no chunk of the plan are not trusted
  either. On resume a bad chunk is named, moved aside (NAME.npz.damaged-N) and recomputed;
  `load` reports it instead of reading it.

Opening a directory written with another identity (another configuration, format or code
version) raises `StoreConflict` naming what differs. Settings that do not change results
(memory limits) are kept outside the identity (`settings`, also recorded per session). While
a scan writes, it holds an exclusive lock on DIR/.lock (with its process id and host in it),
so two scans cannot write the same store at once; a lock left by a killed scan is found stale
and cleared, and a reader tells a running scan from a killed one (`Store.lock_holder`).

Example:
    >>> import tempfile, numpy as np
    >>> from experiments.store import Store
    >>> d = tempfile.TemporaryDirectory()
    >>> s = Store.create_or_open(d.name, {"config": {"a": 1}}, {"grid": {}, "chunk_names": ["c0"]})
    >>> s.write_chunk("c0", {"index": np.arange(3), "x": np.ones(3)})
    >>> sorted(s.finished()), s.read_chunk("c0")["x"].tolist()
    (['c0'], [1.0, 1.0, 1.0])
    >>> s.close()
    >>> d.cleanup()
"""

from __future__ import annotations

import copy
import datetime
import fcntl
import hashlib
import io
import json
import os
import re
import socket
import time

import numpy as np

from dmft.errors import InputError, StoreConflict, StoreWriteError

from .config import differences

__all__ = ["Store", "StoreConflict", "StoreWriteError", "FORMAT", "manifest_digest"]

FORMAT = "dmft-scan-store/2"
MANIFEST = "manifest.json"
CHUNKS = "chunks"
LOG = "log.jsonl"
JOURNAL = "journal.jsonl"
# a journal's first line: which manifest (the SHA-256 of its bytes) its records follow
JOURNAL_FORMAT = "dmft-scan-journal/1"
# the chunk a journal line names, read from its start (so that a line cut short still names it)
_LINE_CHUNK = re.compile(r'^\{"chunk":"([A-Za-z0-9_-]+)"')
# the manifest's parts that a journal line updates besides the chunk's record
STATE = {"schemas": dict, "sessions": list, "settings": dict}
_TMP = re.compile(r"\.tmp-\d+$")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# what a manifest must hold to be read (the identity and layout of its scan, its records)
REQUIRED = ("format", "identity", "digest", "grid", "chunk_names", "chunks", "sessions")
# the manifest's parts that change as a scan runs; every other field is fixed at creation
# and covered by its digest
MUTABLE = ("digest", "chunks", "schemas", "sessions", "settings")
# arrays a chunk file holds besides "index" and its outputs (not returned by reads)
META = "__store__"              # JSON: the chunk's name and the manifest digest it was written for
COORD = "__coord__"             # prefix: the points' coordinates, one array per scanned field


def in_the_way(path: str) -> tuple[str, str | None]:
    """(the nearest path at or above `path` that is there, why no directory can be made at `path`
    or None). A file named with a trailing slash ("a_file/"), a symbolic link to a missing
    target and a loop of links were not seen (os.path.exists is False for all three): the
    directory's creation failed later saying "File exists", "No such file or directory" or
    "[Errno 20] Not a directory: .../chunks". Now each is named, with what is in the way."""
    here = path.rstrip(os.sep) or os.sep
    while not os.path.lexists(here):
        up = os.path.dirname(here)
        here = (up.rstrip(os.sep) or os.sep) if up else "."
    if os.path.isdir(here):
        return here, None
    if os.path.islink(here) and not os.path.exists(here):
        try:
            target = repr(os.readlink(here))
        except OSError:
            target = "?"
        return here, f"{here} is a symbolic link to {target}, which is missing (or loops)"
    return here, f"{here} exists and is not a directory"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def text_bytes(text: str) -> bytes:
    """The bytes of a text file the command writes (report.md, config.toml): UTF-8 whatever the
    locale, a path's bytes the locale could not decode written back as they were (surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` as `text_bytes` gives it."""
    with open(path, "wb") as fh:
        fh.write(text_bytes(text))


def atomic_write(path: str, data: bytes) -> None:
    """Write `data` to `path` via a temporary file, fsync and rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def npz_bytes(arrays: dict) -> bytes:
    """The bytes of an .npz file holding `arrays`."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def npz_arrays(blob: bytes) -> dict:
    with np.load(io.BytesIO(blob)) as z:
        return {k: z[k] for k in z.files}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _index_digest(index) -> str:
    return sha256(np.ascontiguousarray(np.asarray(index, dtype=np.int64)).tobytes())


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's fixed part (every field but `MUTABLE`), as canonical JSON."""
    fixed = {k: v for k, v in manifest.items() if k not in MUTABLE}
    return sha256(json.dumps(fixed, sort_keys=True, separators=(",", ":")).encode())


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _line_bytes(obj: dict) -> bytes:
    """One journal line: `obj` (its keys in order) with the SHA-256 of its canonical JSON last."""
    return (json.dumps({**obj, "sha256": sha256(_canonical(obj))}, separators=(",", ":")) + "\n").encode()


def _changes(old, new, path=(), ops=None) -> list:
    """What turns `old` into `new` (JSON documents): [path, value] to set, [path] to remove.
    Dicts and lists that grow are followed into, so a session's counts cost what changed."""
    ops = [] if ops is None else ops
    if isinstance(old, dict) and isinstance(new, dict):
        for k, v in new.items():
            if k not in old:
                ops.append([[*path, k], v])
            elif old[k] != v:
                _changes(old[k], v, (*path, k), ops)
        ops.extend([[*path, k]] for k in old if k not in new)
    elif isinstance(old, list) and isinstance(new, list) and len(new) >= len(old):
        for i, v in enumerate(new):
            if i >= len(old):
                ops.append([[*path, i], v])
            elif old[i] != v:
                _changes(old[i], v, (*path, i), ops)
    elif old != new:
        ops.append([list(path), new])
    return ops


def _apply(doc: dict, ops: list) -> None:
    """Apply `_changes` ops to the `STATE` of manifest `doc` in place (KeyError, IndexError,
    TypeError or ValueError when they do not fit it, or touch any other field: the fixed part
    stays what its digest covers)."""
    for op in ops:
        if (not isinstance(op, list) or len(op) not in (1, 2) or not isinstance(op[0], list)
                or not op[0] or op[0][0] not in STATE):
            raise ValueError("not a change of the manifest's state")
        if len(op[0]) == 1 and (len(op) == 1 or not isinstance(op[1], STATE[op[0][0]])):
            raise TypeError(f"{op[0][0]} is not what a store writes")
        *parents, last = op[0]
        target = doc
        for k in parents:
            target = target[k]
        if len(op) == 1:
            del target[last]
        elif isinstance(target, list) and last == len(target):
            target.append(op[1])
        else:
            if isinstance(target, list) and not (isinstance(last, int) and 0 <= last < len(target)):
                raise IndexError(last)
            target[last] = op[1]


def _parse_line(raw: bytes) -> dict | None:
    """A journal line's content (less its checksum) when it is whole and its SHA-256 matches."""
    try:
        line = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(line, dict) or not isinstance(line.get("sha256"), str):
        return None
    check = line.pop("sha256")
    return line if sha256(_canonical(line)) == check else None


def _state(manifest: dict) -> dict:
    """A copy of the manifest's `STATE` (as it reads back from JSON)."""
    return json.loads(json.dumps({k: manifest[k] for k in STATE if k in manifest}))


def schema_of(arrays: dict) -> dict:
    """{output: [dtype, per-point shape]} of a chunk's outputs (not "index" or store metadata)."""
    return {k: [np.asarray(v).dtype.str, list(np.shape(v)[1:])] for k, v in sorted(arrays.items())
            if k != "index" and k != META and not k.startswith(COORD)}


def _schema_difference(got: dict, want: dict) -> str:
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    parts = []
    if missing:
        parts.append(f"missing output(s) {', '.join(missing)}")
    if extra:
        parts.append(f"unexpected output(s) {', '.join(extra)}")
    for k in sorted(set(got) & set(want)):
        if list(got[k]) != list(want[k]):
            parts.append(f"output {k} is {got[k][0]} of per-point shape {tuple(got[k][1])}, "
                         f"its group's is {want[k][0]} of {tuple(want[k][1])}")
    return "; ".join(parts)


class Store:
    """A scan's directory. Use `create_or_open` to write, `read` to load."""

    def __init__(self, path: str, manifest: dict, lock=None):
        self.path = os.fspath(path)
        self.manifest = manifest
        self._lock = lock
        self._base = None           # the SHA-256 of the manifest's bytes on disk (None: unknown)
        self._saved = _state(manifest)      # `STATE` as the manifest and journal on disk give it
        self._journal_bad = {}      # chunk -> why its journal line was not trusted
        self._journal_fd = None     # the journal, open for appending (the lock holder's)
        self._journal_ok = False    # it starts with this manifest's header and ends with a newline
        self._families = None       # the families some record names (a cache of the records')
        self._dropped = set()       # records forgotten (`set_aside`) since the manifest was saved

    @classmethod
    def _load(cls, path, lock=None) -> "Store":
        """The store at `path`: its manifest (verified) with its journal's records applied."""
        manifest, base = cls._read_manifest_bytes(path)
        store = cls(path, manifest, lock)
        store._base = base
        store._replay()
        return store

    def _replay(self) -> None:
        """Apply the journal's trusted lines to the manifest (records and `STATE`), in order; a
        journal that follows another manifest's bytes (folded into this one, or left beside an
        edited manifest) is ignored; a line cut short or altered sets aside its chunk's record."""
        self._journal_bad = {}
        try:
            with open(os.path.join(self.path, JOURNAL), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            data = b""
        except OSError as err:
            raise StoreConflict(f"{self.path}/{JOURNAL} cannot be read ({err.strerror or err})") from None
        lines = data.split(b"\n")
        head = _parse_line(lines[0]) if len(lines) > 1 else None
        if head is None or head.get("journal") != JOURNAL_FORMAT or head.get("base") != self._base:
            self._saved = _state(self.manifest)
            return
        chunks = self.manifest["chunks"]
        for i, raw in enumerate(lines[1:], 1):
            if not raw:
                continue
            torn = i == len(lines) - 1          # no newline after it: cut short (or being written)
            line = None if torn else _parse_line(raw)
            why = ("was cut short" if torn else "was altered (its checksum does not match)" if line is None
                   else "")
            if not why:
                try:
                    name, rec, drop = line["chunk"], line["record"], line.get("drop", [])
                    if (not isinstance(name, str) or not isinstance(rec, dict) or not isinstance(drop, list)
                            or not all(isinstance(gone, str) for gone in drop)):
                        raise TypeError("not a record")
                    # (all or nothing: the changes go to a copy of the state, kept only when all fit)
                    state = {k: copy.deepcopy(self.manifest[k]) for k in STATE if k in self.manifest}
                    _apply(state, line.get("state", []))
                    self.manifest.update(state)
                    for gone in drop:
                        chunks.pop(gone, None)
                    chunks[name] = rec
                    self._journal_bad.pop(name, None)
                    continue
                except (KeyError, IndexError, TypeError, ValueError):
                    why = "is not a record this store writes"
            m = _LINE_CHUNK.match(raw.decode("ascii", "replace"))
            if m:           # not trusted: nor is any older record of that chunk
                chunks.pop(m.group(1), None)
                self._journal_bad[m.group(1)] = why
        self._saved = _state(self.manifest)

    # ------------------------------------------------------------ opening

    @classmethod
    def create_or_open(cls, path, identity: dict, layout: dict, settings: dict | None = None) -> "Store":
        """Claim `path` for the scan with this identity, creating the store if needed.

        Args:
            identity: what must match to resume (configuration, versions); compared
                key by key with the manifest of an existing store.
            layout: the rest of the fixed manifest (grid, chunk names, ...): written on creation,
                compared with an existing store's (a difference is refused).
            settings: what may change between sessions without changing results (memory
                limits); kept as the manifest's "settings" (the latest session's).

        Raises:
            StoreConflict: the directory holds another scan, something not written by a
                scan, a manifest that was edited or does not match `layout`, or is locked by a
                running scan.
            StoreWriteError: the directory cannot be created or written.
        """
        path = os.fspath(path)
        identity = json.loads(json.dumps(identity))        # as it reads back from JSON
        layout = json.loads(json.dumps(layout))
        man_path = os.path.join(path, MANIFEST)
        try:
            blocked = in_the_way(path)[1]
            if blocked:
                raise NotADirectoryError(blocked)
            if cls._holds_no_scan(path):
                raise cls._no_scan(path)
            made = [p for p in (os.path.join(path, CHUNKS), os.path.join(path, ".lock")) if not os.path.exists(p)]
            os.makedirs(os.path.join(path, CHUNKS), exist_ok=True)
            lock = cls._acquire(path)
            # under the lock: another process may have made the store since the look above, or
            # (a `dmft solve`, whose lock is not this one) claimed the directory for its run
            existing = os.path.exists(man_path)
            if not existing and not cls._unborn(path):
                lock.truncate(0)                # (an empty lock file is not held)
                cls._unmake(made)               # (what this call made is not left in that run's directory)
                lock.close()
                raise cls._no_scan(path)
        except StoreConflict:
            raise                               # (in use by another scan, or holds no scan)
        except NotADirectoryError as err:
            raise StoreConflict(f"cannot use {path} as a scan store: {err}; choose another output directory") from err
        except OSError as err:
            msg = f"cannot use {path} as a scan store: {err.strerror or err}; choose another output directory"
            raise (StoreWriteError(err.errno, msg) if err.errno is not None else StoreWriteError(msg)) from err
        try:
            if existing:
                store = cls._load(path, lock)
                manifest = store.manifest
                cls._check_identity(path, manifest, identity)
            else:
                manifest = {"format": FORMAT, "created": _now(), "identity": identity, **layout}
                manifest.update(digest=manifest_digest(manifest), sessions=[], chunks={}, schemas={})
                store = cls(path, manifest, lock)
            store.check_layout(layout)
            manifest.setdefault("schemas", {})
            if settings is not None:
                manifest["settings"] = json.loads(json.dumps(settings))
            store._clean_temporaries()
            if not existing:
                store.save_manifest()
            return store
        except BaseException:
            if "store" in locals():
                store._close_journal()
            lock.close()
            raise

    @classmethod
    def peek(cls, path, identity: dict, expected: dict | None = None,
             layout: dict | None = None) -> set[str]:
        """The verified chunks a store at `path` already holds for this identity (empty if there
        is no store yet), without creating, locking or changing anything.

        Raises:
            StoreConflict: as `create_or_open` would.
        """
        path = os.fspath(path)
        if cls._holds_no_scan(path):
            raise cls._no_scan(path)
        if not os.path.exists(os.path.join(path, MANIFEST)):
            return set()
        store = cls._load(path)
        cls._check_identity(path, store.manifest, json.loads(json.dumps(identity)))
        if layout is not None:
            store.check_layout(layout)
        good, _ = store.verified(expected)
        return good

    @staticmethod
    def _unmake(made) -> None:
        """Remove the empty chunks/ and the lock file that a refused `create_or_open` made itself
        (the empty folder only: anything written into it since is kept)."""
        for p in made:
            try:
                if os.path.basename(p) == CHUNKS:
                    os.rmdir(p)
                else:
                    os.unlink(p)
            except OSError:
                pass

    @staticmethod
    def _no_scan(path) -> StoreConflict:
        """The refusal of a directory that `_holds_no_scan`."""
        return StoreConflict(f"{path} is not empty and holds no scan ({MANIFEST} missing); "
                             "choose another output directory")

    @classmethod
    def _holds_no_scan(cls, path) -> bool:
        """Whether `path` holds something other than a store: no manifest, and not `_unborn`. The
        manifest is looked for again after the listing: a scan that made the store between the
        two looks (its manifest, chunks and journal listed) made a store, not "no scan"."""
        man_path = os.path.join(path, MANIFEST)
        return not os.path.exists(man_path) and not cls._unborn(path) and not os.path.exists(man_path)

    @staticmethod
    def _unborn(path) -> bool:
        """Whether `path` is free for a new store: missing, empty, or holding only what a store
        makes before its first manifest (the lock file and an empty chunks/: a first manifest
        write that failed, disk full, or a process killed then, or another one creating it now)."""
        if not os.path.isdir(path):
            return True
        names = {n for n in os.listdir(path) if not _TMP.search(n)}      # (a manifest write cut short)
        if not names <= {".lock", CHUNKS}:
            return False
        chunks = os.path.join(path, CHUNKS)
        return CHUNKS not in names or (os.path.isdir(chunks) and not os.listdir(chunks))

    @staticmethod
    def _check_identity(path, manifest, identity):
        diff = differences(manifest.get("identity"), identity)
        if diff:
            shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
            # what a rerun must restore, by what differs (no configuration restores other code)
            heads = {"code" if d.split(".")[0] == "versions" else d.split(".")[0] for d in diff}
            # (each a condition of the one rerun that resumes it: "only the code ... can (no configuration
            # can); rerun the original configuration" read as two contradicting ways)
            parts = {"code": "the code and versions that computed it (no configuration alone restores them)",
                     "x64": "the number type it was computed in (--x64 / --x32)",
                     "platform": "the platform it was computed on (--device)",
                     "data": "the data file it was computed from, restored",
                     "config": "the original configuration"}
            advice = "rerun it with " + " and ".join(text for h, text in parts.items() if h in heads or
                                                     (h == "config" and not heads & set(parts)))
            raise StoreConflict(
                f"{path} holds a scan with a different configuration or version "
                f"(differs in: {shown}). Its finished points are kept and readable "
                f"(experiments.scan.load); use another output directory for this scan. To resume it: {advice}.")

    def check_layout(self, layout: dict) -> None:
        """Refuse a manifest whose grid, chunk names, ... are not `layout` (what its own
        configuration plans): StoreConflict naming the fields that differ."""
        layout = json.loads(json.dumps(layout))
        diff = differences({k: self.manifest.get(k) for k in layout}, layout)
        if diff:
            shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
            raise StoreConflict(
                f"{self.path}/{MANIFEST} does not agree with the plan of its own configuration "
                f"(differs in: {shown}); the store cannot be trusted: use another output directory "
                "(the chunk files are left as they are)")

    # a reader (no lock) reads the manifest and journal again this many times, READ_WAIT seconds
    # apart, before it calls a chunk file that neither records damaged
    READ_RETRIES = 3
    READ_WAIT = 0.1

    @classmethod
    def read(cls, path) -> "Store":
        """Open an existing store for reading (no lock, no identity check; the manifest is verified,
        and the records its journal holds, those of the chunks a running scan wrote so far, read).

        Raises:
            StoreConflict: no store at `path`, or a manifest that is damaged, edited or incomplete.
        """
        path = os.fspath(path)
        if not os.path.exists(os.path.join(path, MANIFEST)):
            where = ("does not exist" if not os.path.exists(path) else
                     "is not a directory" if not os.path.isdir(path) else f"holds no {MANIFEST}")
            raise StoreConflict(f"{path}: no scan store here ({path} {where}); give the --out "
                                "directory of a scan")
        return cls._load(path)

    @classmethod
    def _read_manifest(cls, path) -> dict:
        return cls._read_manifest_bytes(path)[0]

    @staticmethod
    def _read_manifest_bytes(path) -> tuple[dict, str]:
        """(the manifest, verified; the SHA-256 of its bytes)."""
        where = f"{path}/{MANIFEST}"
        try:
            with open(os.path.join(path, MANIFEST), "rb") as fh:
                blob = fh.read()
            manifest = json.loads(blob.decode())
        except json.JSONDecodeError as err:
            raise StoreConflict(f"{where} is not valid JSON ({err})") from None
        except UnicodeDecodeError:
            raise StoreConflict(f"{where} is not text (damaged)") from None
        except OSError as err:
            raise StoreConflict(f"{where} cannot be read ({err.strerror or err})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            fmt = manifest.get("format") if isinstance(manifest, dict) else None
            raise StoreConflict(f"{path} was written in store format {fmt!r}, not {FORMAT!r}; "
                                "use another output directory")
        missing = [k for k in REQUIRED if k not in manifest]
        if missing:
            raise StoreConflict(f"{where} has lost field(s) {', '.join(missing)}; the store "
                                "cannot be trusted: use another output directory (the chunk files "
                                "are left as they are)")
        kinds = {"identity": dict, "grid": dict, "chunk_names": list, "chunks": dict, "sessions": list,
                 "schemas": dict, "settings": dict}
        wrong = [k for k, t in kinds.items() if k in manifest and not isinstance(manifest[k], t)]
        if wrong or not all(isinstance(r, dict) for r in manifest["chunks"].values()):
            raise StoreConflict(f"{where}: field(s) {', '.join(wrong or ['chunks'])} are not what a "
                                "store writes (damaged or edited); use another output directory")
        if manifest["digest"] != manifest_digest(manifest):
            fixed = sorted(k for k in manifest if k not in MUTABLE and k != "digest")
            raise StoreConflict(
                f"{where} was changed after it was written: its fixed fields ({', '.join(fixed)}) no "
                "longer match their digest. Its results cannot be labelled: use another output "
                "directory (the chunk files are left as they are)")
        return manifest, sha256(blob)

    @staticmethod
    def _acquire(path):
        fh = open(os.path.join(path, ".lock"), "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise StoreConflict(f"{path} is in use by another running scan; wait for it to finish "
                                "(or stop it) and rerun to resume") from None
        fh.seek(0)
        previous = fh.read().strip()
        fh.seek(0)
        fh.truncate()
        fh.write(_holder_id())
        fh.flush()
        fh.stale = previous if previous and previous != _holder_id() else None
        return fh

    @staticmethod
    def lock_holder(path) -> dict | None:
        """Who holds the store's lock, read without taking it: None when no scan holds it (an
        empty or missing lock file: a scan empties it when it ends, even by an error), else
        {"process": pid, "host": name, "alive": True / False / None}. "alive" is whether that
        process still runs; None when it ran on another host (it cannot be asked from here).
        A lock file that still names a process which no longer runs was left by a scan that was
        killed outright (SIGKILL, a lost machine)."""
        try:
            with open(os.path.join(os.fspath(path), ".lock")) as fh:
                text = fh.read(256).strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            raise StoreConflict(f"{path}/.lock cannot be read ({getattr(err, 'strerror', None) or err})") from None
        if not text:
            return None
        pid, _, host = text.partition("@")
        if not pid.isdigit():
            raise StoreConflict(f"{path}/.lock holds {text[:40]!r}, not a scan's process id (edited or damaged)")
        alive = _process_runs(int(pid)) if not host or host == socket.gethostname() else None
        return {"process": int(pid), "host": host or socket.gethostname(), "alive": alive}

    @property
    def stale_lock(self) -> str | None:
        """The process id left in the lock file by a scan that was killed (None if none)."""
        return getattr(self._lock, "stale", None)

    def close(self) -> None:
        """Release the lock (and empty the lock file: an empty lock file is not held)."""
        self._close_journal()
        if self._lock is not None:
            try:
                self._lock.seek(0)
                self._lock.truncate()
            except OSError:
                pass
            self._lock.close()
            self._lock = None

    def _clean_temporaries(self) -> None:
        """Remove the temporaries writes cut short left (NAME.tmp-PID). Only the lock holder gets
        here, but a scan that has ended writes its report.md after it let the lock go: the
        temporary of a process that still runs is its write in progress, and is left to it."""
        for d in (self.path, os.path.join(self.path, CHUNKS)):
            for name in os.listdir(d):
                m = _TMP.search(name)
                pid = int(m.group()[len(".tmp-"):]) if m else None
                if m and (pid == os.getpid() or not _process_runs(pid)):
                    os.remove(os.path.join(d, name))

    # ------------------------------------------------------------ writing

    def _write(self, path, data: bytes, what: str) -> None:
        try:
            atomic_write(path, data)
        except OSError as err:
            raise self._write_error(err, f"could not write {what} to {self.path}") from err

    def _write_error(self, err: OSError, what: str, unrecorded: str | None = None) -> StoreWriteError:
        """A failed write as StoreWriteError: `what` failed, and the chunks already written are kept
        (not `unrecorded`, a chunk whose record could not be appended: its file is not trusted)."""
        done = len((set(self.manifest.get("chunks") or {}) - {unrecorded}) & self.finished())
        return StoreWriteError(err.errno, f"{what}: {err.strerror or err}. The {done} chunk(s) already written "
                               "are kept; free space or fix permissions and rerun the same scan to resume")

    def save_manifest(self) -> None:
        """Write the whole manifest (atomically) and empty the journal, whose records it now holds.
        (Killed between the two, the journal names the manifest it followed, not this one, and
        is ignored.)"""
        data = json.dumps(self.manifest, indent=1).encode()
        self._write(os.path.join(self.path, MANIFEST), data, MANIFEST)
        self._base = sha256(data)
        self._saved = _state(self.manifest)
        self._dropped.clear()
        self._journal_ok = False            # its header names the manifest before this one
        try:
            if self._journal_fd is not None:
                os.ftruncate(self._journal_fd, 0)
            elif os.path.exists(os.path.join(self.path, JOURNAL)):
                os.truncate(os.path.join(self.path, JOURNAL), 0)
        except OSError:     # (it follows the manifest before this one: never read again)
            pass

    def _journal_append(self, line: dict, what: str, unrecorded: str | None = None) -> None:
        """Append `line` to the journal and flush it to disk; a journal that does not follow the
        manifest on disk is emptied and started (a header naming the manifest's bytes) first, and
        one whose last line was cut short gets a newline first, so that this line is whole."""
        data = _line_bytes(line)
        try:
            if self._journal_fd is None:
                self._journal_fd = os.open(os.path.join(self.path, JOURNAL),
                                           os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            fd = self._journal_fd
            if not self._journal_ok:
                if self._base is None:      # (a manifest never saved by this store: save it)
                    self.save_manifest()
                size = os.fstat(fd).st_size
                head = _parse_line(os.pread(fd, min(size, 4096), 0).split(b"\n")[0]) if size else None
                if head is None or head.get("base") != self._base or head.get("journal") != JOURNAL_FORMAT:
                    os.ftruncate(fd, 0)
                    data = _line_bytes({"journal": JOURNAL_FORMAT, "base": self._base}) + data
                elif os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data
            self._journal_ok = False        # (until the whole line is down)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            self._journal_ok = True
        except OSError as err:
            raise self._write_error(err, f"could not record {what} in {self.path}/{JOURNAL}", unrecorded) from err

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            try:
                os.close(self._journal_fd)
            except OSError:
                pass
            self._journal_fd = None
            self._journal_ok = False

    def write_chunk(self, name: str, arrays: dict, *, coords: dict | None = None,
                    family: str | None = None, then=None) -> None:
        """Write chunk `name` atomically, then record its checksum, size and points: one line
        appended to the journal (its own checksum in it, flushed to disk), folded into the
        manifest by the next `save_manifest`; its cost does not grow with the chunks written.

        Args:
            arrays: "index" (the points' grid indices) and the outputs, each with a leading
                axis over the points.
            coords: {field: the points' values}, stored with the chunk and checked on read.
            family: the chunks that must hold the same outputs (a scan's group): the first
                chunk of a family records their names, per-point shapes and dtypes, and every
                later one must match.
            then: called after the chunk file is in place and before the record is appended
                (bookkeeping: what it changes in the manifest's schemas, sessions or settings
                is saved in the same journal line).
        """
        if not _NAME.match(name):
            raise InputError(f"chunk name {name!r}: letters, digits, '-' and '_' only")
        if "index" not in arrays:
            raise InputError("a chunk needs its 'index' array")
        bad = [k for k in arrays if k == META or k.startswith(COORD)]
        if bad:
            raise InputError(f"chunk {name}: output name(s) {bad} are reserved for the store")
        n = np.asarray(arrays["index"]).size
        uneven = [k for k, v in arrays.items() if np.ndim(v) == 0 or np.shape(v)[0] != n]
        if uneven:
            raise InputError(f"chunk {name}: array(s) {uneven} do not have one entry per point ({n})")
        schema = schema_of(arrays)
        schemas = self.manifest.setdefault("schemas", {})
        if family is not None:
            if self._families is None:
                self._families = {r.get("family") for r in self.manifest["chunks"].values()}
            held = family in schemas and family in self._families
            if held and schemas[family] != schema:
                raise InputError(f"chunk {name}: its outputs differ from those of the chunks of "
                                 f"{family} already written ({_schema_difference(schema, schemas[family])})")
        out = {**arrays, META: np.frombuffer(json.dumps(
            {"name": name, "digest": self.manifest["digest"]}).encode(), np.uint8)}
        out.update({f"{COORD}{f}": np.asarray(v) for f, v in (coords or {}).items()})
        data = npz_bytes(out)
        self._write(self.chunk_path(name), data, f"chunk {name}")
        rec = {"sha256": sha256(data), "bytes": len(data), "points": int(n),
               "index_sha256": _index_digest(arrays["index"])}
        if family is not None:
            rec["family"] = family
            schemas[family] = schema
        self.manifest["chunks"][name] = rec
        self._journal_bad.pop(name, None)
        if self._families is not None:
            self._families.add(family)
        if then is not None:
            then()
        state = _state(self.manifest)
        line = {"chunk": name, "record": rec, "state": _changes(self._saved, state)}
        if self._dropped - {name}:
            line["drop"] = sorted(self._dropped - {name})
        self._journal_append(line, f"chunk {name}", unrecorded=name)
        self._saved = state
        self._dropped.clear()

    def log(self, **event) -> None:
        """Append one JSON line to the log (not atomic; a torn last line is ignored)."""
        event = {"time": _now(), **event}
        try:
            with open(os.path.join(self.path, LOG), "a") as fh:
                fh.write(json.dumps(event) + "\n")
        except OSError as err:
            raise StoreWriteError(err.errno, f"could not append to {self.path}/{LOG}: {err}") from err

    # ------------------------------------------------------------ reading

    def chunk_path(self, name: str) -> str:
        return os.path.join(self.path, CHUNKS, f"{name}.npz")

    def finished(self) -> set[str]:
        """Names of the chunk files on disk (each complete: files appear only by rename; not yet
        verified)."""
        d = os.path.join(self.path, CHUNKS)
        if not os.path.isdir(d):
            return set()
        return {n[:-4] for n in os.listdir(d) if n.endswith(".npz")}

    def read_chunk(self, name: str, expected: dict | None = None) -> dict:
        """The arrays of a chunk, verified against the manifest (StoreConflict if damaged)."""
        ok, reason, arrays = self._check_chunk(name, expected)
        if not ok:
            raise StoreConflict(f"{self.chunk_path(name)}: {reason}")
        return arrays

    @staticmethod
    def _written_for(data: bytes):
        """The configuration digest a chunk file's own record names, or None where it has none
        readable (only to name damage: nothing read from an unverified file is used)."""
        try:
            meta = json.loads(npz_arrays(data)[META].tobytes().decode())
        except Exception:  # noqa: BLE001 - unreadable is simply not named
            return None
        return meta.get("digest") if isinstance(meta, dict) else None

    def _check_chunk(self, name: str, expected: dict | None = None):
        """(ok, reason, arrays) for one chunk file against its manifest record and the plan.

        `expected`: {"index": the points the plan gives it, "coords": {field: their values}}."""
        path = self.chunk_path(name)
        rec = self.manifest["chunks"].get(name)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return False, ("missing, though recorded as written" if rec is not None else "missing"), None
        except OSError as err:
            return False, f"unreadable ({err.strerror or err})", None
        if not data:
            return False, "empty file", None
        if rec is None and name in self._journal_bad:
            return False, (f"its record in {JOURNAL} {self._journal_bad[name]}, so not trusted: "
                           "a write killed while recording it, or an edited record"), None
        if rec is None:
            return False, (f"not recorded in {MANIFEST} (nor in {JOURNAL}), so not trusted: a write "
                           "that did not finish, or an edited manifest"), None
        if len(data) != rec.get("bytes") or sha256(data) != rec.get("sha256"):
            written = self._written_for(data)
            if written is not None and written != self.manifest["digest"]:
                return False, (f"not the chunk {MANIFEST} records: a whole chunk written for another configuration "
                               f"or grid (its digest is not {MANIFEST}'s; a file swapped in from another scan, or "
                               f"{MANIFEST} itself)"), None
            if len(data) != rec.get("bytes"):
                return False, f"truncated or extended ({len(data)} bytes, {rec.get('bytes')} written)", None
            return False, "checksum mismatch (corrupted)", None
        try:
            arrays = npz_arrays(data)
        except Exception as err:  # noqa: BLE001 - any failure to parse is damage
            return False, f"not a readable .npz ({type(err).__name__})", None
        if "index" not in arrays:
            return False, "holds no 'index' array", None
        index = arrays["index"]
        if _index_digest(index) != rec.get("index_sha256") or index.size != rec.get("points"):
            return False, "holds other points than recorded", None
        if expected is not None and not np.array_equal(index, np.asarray(expected["index"])):
            return False, "holds the points of another chunk (swapped or misnamed)", None
        try:
            meta = json.loads(arrays.pop(META).tobytes().decode())
        except (KeyError, ValueError, AttributeError):
            return False, "holds no readable record of the scan it was written for", None
        if not isinstance(meta, dict) or meta.get("name") != name:
            return False, f"was written as chunk {meta.get('name') if isinstance(meta, dict) else None!r}", None
        if meta.get("digest") != self.manifest["digest"]:
            return False, (f"was written for another configuration or grid (its digest is not "
                           f"{MANIFEST}'s)"), None
        coords = {k[len(COORD):]: arrays.pop(k) for k in [k for k in arrays if k.startswith(COORD)]}
        if expected is not None:
            want = {f: np.asarray(v) for f, v in (expected.get("coords") or {}).items()}
            if sorted(coords) != sorted(want):
                return False, (f"holds coordinates of field(s) {sorted(coords)}, the grid scans "
                               f"{sorted(want)}"), None
            for f in want:
                if coords[f].shape != want[f].shape or not np.array_equal(coords[f], want[f]):
                    return False, (f"its points' {f} ({coords[f].tolist()}) are not the grid's "
                                   f"({want[f].tolist()})"), None
        uneven = [k for k, v in arrays.items() if v.ndim == 0 or v.shape[0] != index.size]
        if uneven:
            return False, f"array(s) {', '.join(uneven)} do not have one entry per point", None
        family = rec.get("family")
        if family is not None:
            want = self.manifest.get("schemas", {}).get(family)
            if want is None:
                return False, f"{MANIFEST} holds no record of the outputs of {family}", None
            diff = _schema_difference(schema_of(arrays), want)
            if diff:
                return False, diff, None
        return True, "", arrays

    def read_all(self, expected: dict | None = None) -> tuple[dict, dict]:
        """({name: arrays} of the good chunks, {name: reason} of the bad ones), reading each
        chunk file once. With `expected` (chunk name -> {"index", "coords"} of the plan), a file
        that is no chunk of the plan is bad too. Chunks recorded in the manifest whose file is
        gone are bad ("missing")."""
        good, bad = {}, {}
        names = self.finished() | set(self.manifest["chunks"])
        for attempt in range(1 + (self.READ_RETRIES if self._lock is None else 0)):
            for name in sorted(names):
                if expected is not None and name not in expected:
                    bad[name] = "not a chunk of this scan's plan"
                    continue
                ok, reason, arrays = self._check_chunk(name, None if expected is None else expected[name])
                if ok:
                    good[name] = arrays
                    bad.pop(name, None)
                else:
                    bad[name] = reason
            names = {n for n in bad if self.manifest["chunks"].get(n) is None}
            if not names or attempt == self.READ_RETRIES:
                break
            # read-only, beside a running scan: a chunk file is renamed into place before its
            # record is appended; read the manifest and journal again before calling it damaged
            time.sleep(self.READ_WAIT)
            fresh = self._load(self.path)
            self.manifest, self._base, self._saved = fresh.manifest, fresh._base, fresh._saved
            self._journal_bad, self._families = fresh._journal_bad, None
        return good, bad

    def verified(self, expected: dict | None = None) -> tuple[set, dict]:
        """(names of the good chunks, {name: reason} of the bad ones), as `read_all`."""
        good, bad = self.read_all(expected)
        return set(good), bad

    def set_aside(self, name: str) -> str | None:
        """Move a bad chunk file out of the way (never deleted) and forget its record; returns its
        new path (None when there was no file)."""
        src = self.chunk_path(name)
        if self.manifest["chunks"].pop(name, None) is not None:
            self._dropped.add(name)     # (saved with the next record, or the manifest)
        self._families = None
        if not os.path.exists(src):
            return None
        k = 0
        while os.path.exists(f"{src}.damaged-{k}"):
            k += 1
        dst = f"{src}.damaged-{k}"
        os.replace(src, dst)
        return dst

    def events(self) -> list[dict]:
        """The log lines, oldest first."""
        out = []
        try:
            with open(os.path.join(self.path, LOG)) as fh:
                for line in fh:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
        except FileNotFoundError:
            pass
        return out


def _holder_id() -> str:
    """What a scan writes into the lock it holds: its process id and host."""
    return f"{os.getpid()}@{socket.gethostname()}"


def _process_runs(pid: int) -> bool:
    """Whether process `pid` runs on this host (signal 0 asks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # another user's process: it runs
        return True
    except OverflowError:
        return False
    return True
