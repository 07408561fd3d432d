"""A results store for scans: one manifest and one .npz file per chunk of grid points.

    DIR/manifest.json      identity (format, full configuration, versions), grid, chunks, sessions
    DIR/chunks/NAME.npz    "index" (global grid indices) and one array per output, leading axis n
    DIR/log.jsonl          one line per chunk written (name, points, process, seconds)

Every file is written to a temporary name, flushed to disk and renamed, so a chunk
file either exists complete or not at all: a scan killed at any moment loses only
the chunks in flight. The manifest records each chunk's SHA-256, size and points when it
is written; a chunk is trusted only when its file matches that record (and holds the
points the plan gives it), so a truncated, emptied, corrupted or swapped file is found,
named, moved aside (NAME.npz.damaged-N, nothing is deleted) and recomputed on resume, and
reported by `load` instead of read. Opening a directory written with another identity
(another configuration, format or code version) raises `StoreConflict` naming what
differs; a manifest missing a field is refused naming it. While a scan writes, it holds an
exclusive lock on DIR/.lock (with its process id in it), so two scans cannot write the
same store at once; a lock left by a killed scan is found stale and cleared.

Example:
    >>> import tempfile, numpy as np
    >>> from experiments.store import Store
    >>> d = tempfile.mkdtemp()
    >>> s = Store.create_or_open(d, {"config": {"a": 1}}, {"chunks": ["c0"]})
    >>> s.write_chunk("c0", {"index": np.arange(3), "x": np.ones(3)})
    >>> sorted(s.finished()), s.read_chunk("c0")["x"].tolist()
    (['c0'], [1.0, 1.0, 1.0])
    >>> s.close()
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import io
import json
import os
import re

import numpy as np

from dmft.errors import InputError, StoreConflict, StoreWriteError

from .config import differences

__all__ = ["Store", "StoreConflict", "StoreWriteError", "FORMAT"]

FORMAT = "dmft-scan-store/1"
MANIFEST = "manifest.json"
CHUNKS = "chunks"
LOG = "log.jsonl"
_TMP = re.compile(r"\.tmp-\d+$")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# what a manifest must hold to be read (the identity and layout of its scan)
REQUIRED = ("format", "identity", "grid", "chunk_names", "sessions")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


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


class Store:
    """A scan's directory. Use `create_or_open` to write, `read` to load."""

    def __init__(self, path: str, manifest: dict, lock=None):
        self.path = os.fspath(path)
        self.manifest = manifest
        self._lock = lock

    # ------------------------------------------------------------ opening

    @classmethod
    def create_or_open(cls, path, identity: dict, layout: dict) -> "Store":
        """Claim `path` for the scan with this identity, creating the store if needed.

        Args:
            identity: what must match to resume (configuration, versions); compared
                key by key with the manifest of an existing store.
            layout: the rest of the manifest (grid, chunk names, ...), written on creation.

        Raises:
            StoreConflict: the directory holds another scan, something not written by a
                scan, or is locked by a running scan.
            StoreWriteError: the directory cannot be created or written.
        """
        path = os.fspath(path)
        identity = json.loads(json.dumps(identity))        # as it reads back from JSON
        man_path = os.path.join(path, MANIFEST)
        try:
            if os.path.exists(path) and not os.path.isdir(path):
                raise NotADirectoryError(f"{path} exists and is not a directory")
            existing = os.path.exists(man_path)
            if not existing and os.path.isdir(path) and os.listdir(path):
                raise StoreConflict(f"{path} is not empty and holds no scan ({MANIFEST} missing); "
                                    "choose another output directory")
            os.makedirs(os.path.join(path, CHUNKS), exist_ok=True)
            lock = cls._acquire(path)
        except OSError as err:
            raise StoreWriteError(err.errno, f"cannot use {path} as a scan store: {err}") from err
        try:
            if existing:
                manifest = cls._read_manifest(path)
                cls._check_identity(path, manifest, identity)
            else:
                manifest = {"format": FORMAT, "created": _now(), "identity": identity,
                            **json.loads(json.dumps(layout)), "sessions": [], "chunks": {}}
            manifest.setdefault("chunks", {})
            store = cls(path, manifest, lock)
            store._clean_temporaries()
            if not existing:
                store.save_manifest()
            return store
        except BaseException:
            lock.close()
            raise

    @classmethod
    def peek(cls, path, identity: dict, expected: dict | None = None) -> set[str]:
        """The verified chunks a store at `path` already holds for this identity (empty if there
        is no store yet), without creating, locking or changing anything.

        Raises:
            StoreConflict: as `create_or_open` would.
        """
        path = os.fspath(path)
        if not os.path.exists(os.path.join(path, MANIFEST)):
            if os.path.isdir(path) and os.listdir(path):
                raise StoreConflict(f"{path} is not empty and holds no scan ({MANIFEST} missing); "
                                    "choose another output directory")
            return set()
        store = cls(path, cls._read_manifest(path))
        cls._check_identity(path, store.manifest, json.loads(json.dumps(identity)))
        good, _ = store.verified(expected)
        return good

    @staticmethod
    def _check_identity(path, manifest, identity):
        diff = differences(manifest.get("identity"), identity)
        if diff:
            shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
            raise StoreConflict(
                f"{path} holds a scan with a different configuration or version "
                f"(differs in: {shown}). Its finished points are kept; use another "
                "output directory for this scan, or rerun the original configuration "
                "to resume it.")

    @classmethod
    def read(cls, path) -> "Store":
        """Open an existing store for reading (no lock, no identity check)."""
        path = os.fspath(path)
        if not os.path.exists(os.path.join(path, MANIFEST)):
            raise FileNotFoundError(f"{path}: no scan store here ({MANIFEST} missing)")
        return cls(path, cls._read_manifest(path))

    @staticmethod
    def _read_manifest(path) -> dict:
        try:
            with open(os.path.join(path, MANIFEST)) as fh:
                manifest = json.load(fh)
        except json.JSONDecodeError as err:
            raise StoreConflict(f"{path}/{MANIFEST} is not valid JSON ({err})") from None
        except UnicodeDecodeError:
            raise StoreConflict(f"{path}/{MANIFEST} is not text (damaged)") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            fmt = manifest.get("format") if isinstance(manifest, dict) else None
            raise StoreConflict(f"{path} was written in store format {fmt!r}, not {FORMAT!r}; "
                                "use another output directory")
        missing = [k for k in REQUIRED if k not in manifest]
        if missing:
            raise StoreConflict(f"{path}/{MANIFEST} has lost field(s) {', '.join(missing)}; the store "
                                "cannot be trusted: use another output directory (the chunk files "
                                "are left as they are)")
        return manifest

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
        fh.write(str(os.getpid()))
        fh.flush()
        fh.stale = previous if previous and previous != str(os.getpid()) else None
        return fh

    @property
    def stale_lock(self) -> str | None:
        """The process id left in the lock file by a scan that was killed (None if none)."""
        return getattr(self._lock, "stale", None)

    def close(self) -> None:
        """Release the lock (and empty the lock file: an empty lock file is not held)."""
        if self._lock is not None:
            try:
                self._lock.seek(0)
                self._lock.truncate()
            except OSError:
                pass
            self._lock.close()
            self._lock = None

    def _clean_temporaries(self) -> None:
        # only the lock holder gets here, so no other writer owns these
        for d in (self.path, os.path.join(self.path, CHUNKS)):
            for name in os.listdir(d):
                if _TMP.search(name):
                    os.remove(os.path.join(d, name))

    # ------------------------------------------------------------ writing

    def _write(self, path, data: bytes, what: str) -> None:
        try:
            atomic_write(path, data)
        except OSError as err:
            done = len(self.finished())
            raise StoreWriteError(
                err.errno, f"could not write {what} to {self.path}: {err.strerror or err}. "
                f"The {done} chunk(s) already written are kept; free space or fix permissions "
                "and rerun the same scan to resume") from err

    def save_manifest(self) -> None:
        self._write(os.path.join(self.path, MANIFEST),
                    json.dumps(self.manifest, indent=1).encode(), MANIFEST)

    def write_chunk(self, name: str, arrays: dict) -> None:
        """Write chunk `name` atomically (arrays must include "index"), then record its checksum,
        size and points in the manifest (atomically too)."""
        if not _NAME.match(name):
            raise InputError(f"chunk name {name!r}: letters, digits, '-' and '_' only")
        if "index" not in arrays:
            raise InputError("a chunk needs its 'index' array")
        data = npz_bytes(arrays)
        self._write(self.chunk_path(name), data, f"chunk {name}")
        self.manifest.setdefault("chunks", {})[name] = {
            "sha256": sha256(data), "bytes": len(data), "points": int(np.asarray(arrays["index"]).size),
            "index_sha256": _index_digest(arrays["index"])}
        self.save_manifest()

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
        """Names of the chunks on disk (each complete: files appear only by rename)."""
        d = os.path.join(self.path, CHUNKS)
        if not os.path.isdir(d):
            return set()
        return {n[:-4] for n in os.listdir(d) if n.endswith(".npz")}

    def read_chunk(self, name: str) -> dict:
        """The arrays of a chunk, verified against the manifest (StoreConflict if damaged)."""
        ok, reason, arrays = self._check_chunk(name)
        if not ok:
            raise StoreConflict(f"{self.chunk_path(name)}: {reason}")
        return arrays

    def _check_chunk(self, name: str, expected_index=None):
        """(ok, reason, arrays) for one chunk file against its manifest record and the plan."""
        path = self.chunk_path(name)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return False, "missing", None
        except OSError as err:
            return False, f"unreadable ({err.strerror or err})", None
        if not data:
            return False, "empty file", None
        rec = (self.manifest.get("chunks") or {}).get(name)
        if rec is not None:
            if len(data) != rec.get("bytes"):
                return False, f"truncated or extended ({len(data)} bytes, {rec.get('bytes')} written)", None
            if sha256(data) != rec.get("sha256"):
                return False, "checksum mismatch (corrupted)", None
        try:
            arrays = npz_arrays(data)
        except Exception as err:  # noqa: BLE001 - any failure to parse is damage
            return False, f"not a readable .npz ({type(err).__name__})", None
        if "index" not in arrays:
            return False, "holds no 'index' array", None
        if rec is not None and _index_digest(arrays["index"]) != rec.get("index_sha256"):
            return False, "holds other points than recorded", None
        if expected_index is not None and not np.array_equal(np.asarray(arrays["index"]),
                                                             np.asarray(expected_index)):
            return False, "holds the points of another chunk (swapped or misnamed)", None
        return True, "", arrays

    def verified(self, expected: dict | None = None) -> tuple[set, dict]:
        """(names of the good chunks, {name: reason} of the damaged ones) among the chunk files
        on disk; `expected` maps chunk names to the points the plan gives them."""
        good, bad = set(), {}
        for name in sorted(self.finished()):
            ok, reason, arrays = self._check_chunk(name, None if expected is None else expected.get(name))
            if ok:
                good.add(name)
                rec = (self.manifest.get("chunks") or {}).get(name)
                if rec is None:        # written before checksums were recorded: record it now
                    with open(self.chunk_path(name), "rb") as fh:
                        data = fh.read()
                    self.manifest.setdefault("chunks", {})[name] = {
                        "sha256": sha256(data), "bytes": len(data), "points": int(arrays["index"].size),
                        "index_sha256": _index_digest(arrays["index"]), "recorded": "on verification"}
            else:
                bad[name] = reason
        return good, bad

    def read_all(self, expected: dict | None = None) -> tuple[dict, dict]:
        """({name: arrays} of the good chunks, {name: reason} of the damaged ones), reading each
        chunk file once."""
        good, bad = {}, {}
        for name in sorted(self.finished()):
            ok, reason, arrays = self._check_chunk(name, None if expected is None else expected.get(name))
            if ok:
                good[name] = arrays
            else:
                bad[name] = reason
        return good, bad

    def set_aside(self, name: str) -> str:
        """Move a damaged chunk file out of the way (never deleted); returns its new path."""
        src = self.chunk_path(name)
        k = 0
        while os.path.exists(f"{src}.damaged-{k}"):
            k += 1
        dst = f"{src}.damaged-{k}"
        os.replace(src, dst)
        (self.manifest.get("chunks") or {}).pop(name, None)
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
