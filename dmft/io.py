"""One results format for the whole project: NAME.npz (arrays) + NAME.json (metadata).

The JSON side records the full configuration plus versions and device, so
any figure can be regenerated from the pair. Both files are written to a
temporary name and renamed, so a crash never leaves half a result; and the
pair is replaced in an order that a crash at any point leaves one whole
result to `load`, the old or the new: the new arrays go to NAME.npz.pending
first, then the JSON that records their SHA-256, then the arrays are renamed
into place (a `load` that finds the JSON naming the pending arrays finishes
that rename).

Example:
    >>> import tempfile, os, numpy as np
    >>> from dmft import io
    >>> with tempfile.TemporaryDirectory() as d:
    ...     paths = io.save(os.path.join(d, "run"), {"t": np.arange(3.0)}, {"eta0": 0.1})
    ...     arrays, meta = io.load(os.path.join(d, "run"))
    >>> arrays["t"].tolist(), meta["config"]["eta0"]
    ([0.0, 1.0, 2.0], 0.1)
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import sys

import numpy as np

from .errors import InputError, OutputError, ResultFileError

__all__ = ["save", "load", "sha256", "environment", "jsonable", "result_stem"]

FORMAT = "dmft-results/1"
PENDING = ".pending"        # NAME.npz.pending: new arrays not yet renamed into place


def jsonable(obj):
    """Convert numpy scalars/arrays, tuples and non-finite floats for JSON."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


def compute_platform() -> str:
    """The platform computations run on: the default device's when one is set (the command's
    --device), else JAX's default backend."""
    import jax

    device = jax.config.jax_default_device
    return device if isinstance(device, str) else getattr(device, "platform", None) or jax.default_backend()


def environment() -> dict:
    """Versions and device, for result metadata."""
    import jax
    import jaxlib

    backend = compute_platform()
    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "numpy": np.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
           "x64": bool(jax.config.jax_enable_x64),
           "devices": [str(d) for d in jax.devices(backend)],
           "backend": backend}
    try:
        from importlib.metadata import version
        env["dmft-two-layer"] = version("dmft-two-layer")
        env["optax"] = version("optax")
    except Exception:  # noqa: BLE001 - metadata only
        pass
    return env


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sha256(path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    with open(path, "rb") as fh:
        return _file_digest(fh)


def _file_digest(fh) -> str:
    """The SHA-256 of an open binary file's bytes from its position to its end (hex)."""
    h = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def result_stem(stem) -> str:
    """A result's path without the .npz / .json ending it may be given with (save and load
    both take "run", "run.npz" and "run.json" for the pair run.npz + run.json)."""
    if not isinstance(stem, (str, os.PathLike)):
        raise InputError(f"stem: give a path (a str or os.PathLike), got {type(stem).__name__}")
    stem = os.fspath(stem)
    if not isinstance(stem, str) or not stem or stem.endswith(os.sep):
        raise InputError(f"stem: give a file path without its ending (NAME for NAME.npz + NAME.json), got {stem!r}")
    return stem.rsplit(".", 1)[0] if stem.endswith((".npz", ".json")) else stem


def save(stem, arrays: dict, config: dict, extra: dict | None = None, kind: str | None = None
         ) -> tuple[str, str]:
    """Write STEM.npz and STEM.json; returns the two paths.

    Args:
        arrays: name -> array (None values are skipped).
        config: the full configuration that produced the arrays.
        extra: other metadata (timings, diagnostics).
        kind: what the arrays are (a result type's name), checked by `load(kind=...)`.

    The JSON also records each array's shape and dtype and the SHA-256 of the .npz, so that
    `load` can tell a damaged file, or another run's .npz beside this JSON, from this result.
    """
    stem = result_stem(stem)
    clean = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    for k, v in clean.items():       # (np.savez takes "file" and "allow_pickle" as its own)
        if k in ("file", "allow_pickle") or v.dtype.hasobject:
            raise InputError(f"arrays: {k!r} cannot be saved in a result file "
                             + ("(a name np.savez reserves)" if not v.dtype.hasobject else
                                "(an object array: load refuses pickles)"))
    npz, meta_path = stem + ".npz", stem + ".json"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    except OSError as err:
        raise OutputError(f"{os.path.abspath(stem)}: cannot make its folder ({err.strerror or err})") from err
    try:
        return _write_pair(stem, clean, config, extra, kind)
    except OSError as err:
        raise OutputError(f"{os.path.abspath(npz)}: cannot be written ({err.strerror or err})") from err


def _write_pair(stem, clean, config, extra, kind):
    npz, meta_path = stem + ".npz", stem + ".json"

    def write_npz(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **clean)

    # (the order keeps one whole pair on disk at every moment: the old pair until the JSON is
    # replaced, then the new JSON with its arrays pending, then the new pair; see `_finish_pending`)
    pending = npz + PENDING
    _atomic_write(pending, write_npz)
    digest = sha256(pending)
    meta = {"format": FORMAT, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            **({"kind": kind} if kind else {}),
            "config": jsonable(config), "environment": environment(),
            "arrays": sorted(clean),
            "shapes": {k: [list(v.shape), v.dtype.str] for k, v in sorted(clean.items())},
            "npz_sha256": digest,
            **({"extra": jsonable(extra)} if extra else {})}

    def write_json(tmp):
        with open(tmp, "w") as fh:
            json.dump(meta, fh, indent=2)

    _atomic_write(meta_path, write_json)
    try:
        os.replace(pending, npz)
    except FileNotFoundError:      # (a `load` finished it meanwhile: see `_finish_pending`)
        if not (os.path.isfile(npz) and sha256(npz) == digest):
            raise
    return npz, meta_path


def _finish_pending(npz: str, recorded) -> None:
    """Rename NAME.npz.pending into place where it holds the arrays the JSON records (`recorded`,
    their SHA-256) and NAME.npz does not: a save stopped between its JSON and this rename (or a
    reader and the writer finishing it at once: either rename wins, the other finds it done)."""
    pending = npz + PENDING
    if not isinstance(recorded, str) or not os.path.isfile(pending):
        return
    if os.path.isfile(npz) and sha256(npz) == recorded:
        return
    if sha256(pending) != recorded:
        return
    try:
        os.replace(pending, npz)
    except FileNotFoundError:      # (finished by another process meanwhile)
        pass


def load(stem, kind=None) -> tuple[dict, dict]:
    """Read STEM.npz and STEM.json back: (arrays, metadata), verified.

    Checks that both files exist and parse, that the JSON is this format (and of `kind`, when
    both say; `kind` may be a tuple of accepted kinds), that the .npz holds exactly the arrays the JSON lists with their shapes and
    dtypes, and that its SHA-256 is the one recorded when it was written (files written before
    checksums and shapes were recorded, with neither, are checked for what they record; a file
    with shapes and no checksum is refused as edited).

    Raises:
        ResultFileError: naming the file and what is wrong with it.
    """
    stem = result_stem(stem)
    npz, meta_path = stem + ".npz", stem + ".json"
    if os.path.isfile(meta_path) and os.path.isfile(npz + PENDING):     # a save stopped before its last rename
        try:
            with open(meta_path) as fh:
                _finish_pending(npz, json.load(fh).get("npz_sha256"))
        except (OSError, ValueError, AttributeError):
            pass                   # (the checks below name what is wrong)
    for path in (meta_path, npz):
        if not os.path.isfile(path):
            raise ResultFileError(f"{os.path.abspath(path)}: no such file (a result is NAME.npz + NAME.json)")
    try:
        with open(meta_path) as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as err:
        raise ResultFileError(f"{os.path.abspath(meta_path)}: not readable JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ResultFileError(f"{os.path.abspath(meta_path)}: not a {FORMAT} metadata file (format {got!r})")
    kinds = (kind,) if isinstance(kind, str) else tuple(kind or ())
    if kinds and meta.get("kind", kinds[0]) not in kinds:
        raise ResultFileError(f"{os.path.abspath(meta_path)}: holds a {meta['kind']}, not a {kinds[0]}")
    recorded = meta.get("npz_sha256")
    if recorded is None and "shapes" in meta:    # written together since checksums were recorded
        raise ResultFileError(f"{os.path.abspath(meta_path)}: records the arrays' shapes but no SHA-256 of "
                              f"{os.path.basename(npz)} (an edited file?): the arrays cannot be verified")
    if recorded is not None and not (isinstance(recorded, str) and len(recorded) == 64):
        raise ResultFileError(f"{os.path.abspath(meta_path)}: its 'npz_sha256' is not a SHA-256 (an edited file?)")
    # (the bytes hashed are the bytes read: one open, so a save replacing NAME.npz between the
    # two cannot pair its arrays with this JSON)
    with open(npz, "rb") as fh:
        if recorded is not None and _file_digest(fh) != recorded:
            raise ResultFileError(
                f"{os.path.abspath(npz)}: its SHA-256 differs from the one {os.path.basename(meta_path)} "
                "recorded when it was written: the file was damaged or replaced (another run's arrays?)")
        fh.seek(0)
        try:
            with np.load(fh, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as err:       # noqa: BLE001 - a damaged zip member raises many kinds (tokenize's too)
            raise ResultFileError(f"{os.path.abspath(npz)}: not a readable .npz ({type(err).__name__}: {err})") from err
    listed = meta.get("arrays")
    if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
        raise ResultFileError(f"{os.path.abspath(meta_path)}: its 'arrays' is not a list of names (an edited file?)")
    if sorted(arrays) != sorted(listed):
        missing = sorted(set(listed or ()) - set(arrays))
        extra = sorted(set(arrays) - set(listed or ()))
        raise ResultFileError(f"{os.path.abspath(npz)}: its arrays differ from those {os.path.basename(meta_path)} "
                              f"lists (missing {missing}, unlisted {extra})")
    shapes = meta.get("shapes") or {}
    if not isinstance(shapes, dict) or not all(
            isinstance(v, list) and len(v) == 2 and isinstance(v[0], list) and isinstance(v[1], str)
            for v in shapes.values()):
        raise ResultFileError(f"{os.path.abspath(meta_path)}: its 'shapes' is not a map of "
                              "[shape, dtype] pairs (an edited file?)")
    for name, spec in shapes.items():
        a = arrays.get(name)
        if a is None or [list(a.shape), a.dtype.str] != list(spec):
            raise ResultFileError(f"{os.path.abspath(npz)}: array {name!r} has shape/dtype "
                                  f"{None if a is None else [list(a.shape), a.dtype.str]}, the metadata "
                                  f"recorded {spec}")
    return arrays, meta
