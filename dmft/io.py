"""One results format for the whole project: NAME.npz (arrays) + NAME.json (metadata).

The JSON side records the full configuration plus versions and device, so
any figure can be regenerated from the pair. Both files are written to a
temporary name and renamed, so a crash never leaves half a result.

Example:
    >>> import tempfile, os, numpy as np
    >>> from dmft import io
    >>> d = tempfile.mkdtemp()
    >>> paths = io.save(os.path.join(d, "run"), {"t": np.arange(3.0)}, {"eta0": 0.1})
    >>> arrays, meta = io.load(os.path.join(d, "run"))
    >>> arrays["t"].tolist(), meta["config"]["eta0"]
    ([0.0, 1.0, 2.0], 0.1)
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys

import numpy as np

__all__ = ["save", "load", "environment", "jsonable"]

FORMAT = "dmft-results/1"


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


def environment() -> dict:
    """Versions and device, for result metadata."""
    import jax
    import jaxlib

    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "numpy": np.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
           "x64": bool(jax.config.jax_enable_x64),
           "devices": [str(d) for d in jax.devices()],
           "backend": jax.default_backend()}
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


def save(stem, arrays: dict, config: dict, extra: dict | None = None) -> tuple[str, str]:
    """Write STEM.npz and STEM.json; returns the two paths.

    Args:
        arrays: name -> array (None values are skipped).
        config: the full configuration that produced the arrays.
        extra: other metadata (timings, diagnostics).
    """
    stem = os.fspath(stem)
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    npz, meta_path = stem + ".npz", stem + ".json"
    clean = {k: np.asarray(v) for k, v in arrays.items() if v is not None}

    def write_npz(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **clean)

    meta = {"format": FORMAT, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "config": jsonable(config), "environment": environment(),
            "arrays": sorted(clean), **({"extra": jsonable(extra)} if extra else {})}

    def write_json(tmp):
        with open(tmp, "w") as fh:
            json.dump(meta, fh, indent=2)

    _atomic_write(npz, write_npz)
    _atomic_write(meta_path, write_json)
    return npz, meta_path


def load(stem) -> tuple[dict, dict]:
    """Read STEM.npz and STEM.json back: (arrays, metadata)."""
    stem = os.fspath(stem)
    if stem.endswith(".npz") or stem.endswith(".json"):
        stem = stem.rsplit(".", 1)[0]
    with np.load(stem + ".npz") as z:
        arrays = {k: z[k] for k in z.files}
    with open(stem + ".json") as fh:
        meta = json.load(fh)
    return arrays, meta
