"""A results store for scans: one manifest and one .npz file per chunk of grid points.

    DIR/manifest.json      identity (format, full configuration, versions), grid, chunks, sessions
    DIR/chunks/NAME.npz    "index" (global grid indices) and one array per output, leading axis n
    DIR/log.jsonl          one line per chunk written (name, points, process, seconds)

Every file is written to a temporary name, flushed to disk and renamed, so a chunk
file either exists complete or not at all: a scan killed at any moment loses only
the chunks in flight. Opening a directory written with another identity (another
configuration, format or code version) raises `StoreConflict` naming what differs.
While a scan writes, it holds an exclusive lock on DIR/.lock, so two scans cannot
write the same store at once.

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
                            **json.loads(json.dumps(layout)), "sessions": []}
            store = cls(path, manifest, lock)
            store._clean_temporaries()
            if not existing:
                store.save_manifest()
            return store
        except BaseException:
            lock.close()
            raise

    @classmethod
    def peek(cls, path, identity: dict) -> set[str]:
        """The chunks a store at `path` already holds for this identity (empty if there is no
        store yet), without creating or locking anything.

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
        return store.finished()

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
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            fmt = manifest.get("format") if isinstance(manifest, dict) else None
            raise StoreConflict(f"{path} was written in store format {fmt!r}, not {FORMAT!r}; "
                                "use another output directory")
        return manifest

    @staticmethod
    def _acquire(path):
        fh = open(os.path.join(path, ".lock"), "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise StoreConflict(f"{path} is in use by another running scan; wait for it to finish "
                                "(or stop it) and rerun to resume") from None
        return fh

    def close(self) -> None:
        """Release the lock."""
        if self._lock is not None:
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
        """Write chunk `name` atomically (arrays must include "index")."""
        if not _NAME.match(name):
            raise InputError(f"chunk name {name!r}: letters, digits, '-' and '_' only")
        if "index" not in arrays:
            raise InputError("a chunk needs its 'index' array")
        self._write(self.chunk_path(name), npz_bytes(arrays), f"chunk {name}")

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
        with np.load(self.chunk_path(name)) as z:
            return {k: z[k] for k in z.files}

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
