"""The schema of a scan: the problem sections, a base gamma0, one width, and [scan]; which
fields can be scanned and which of them are batched into one program."""

from __future__ import annotations

from dmft.errors import ConfigError

from .. import problem as _problem
from ..config import Field, coerce

__all__ = ["SCHEMA", "OUTPUTS", "BATCHED", "SCANNABLE", "resolve_field", "coerce_value"]

OUTPUTS = ("final", "grokking", "curves", "predictions")

# the problem sections, with a base gamma0 and one network width per point, and [scan]
_BASE = _problem.SECTIONS
SCHEMA: dict[str, dict[str, Field]] = {sec: dict(_BASE[sec]) for sec in ("task", "model", "train", "theory")}
SCHEMA["model"]["gamma0"] = Field("float", 1.0, "richness where the grid does not set it", 0.0, True)
SCHEMA["simulate"] = {
    "width": Field("int", 256, "network width", 1),
    **{k: _BASE["simulate"][k] for k in ("seeds", "seed", "antithetic", "max_memory_gb")},
}
SCHEMA["scan"] = {
    "theory": Field("bool", True, "solve the DMFT at every point"),
    "networks": Field("bool", False, "train a network ensemble at every point"),
    "outputs": Field("strs", ["final"], f"kept per point, among {', '.join(OUTPUTS)}"),
    "chunk": Field("int", 64, "points per compiled call and per chunk file", 1),
    "grok_threshold": Field("float", 0.1, "loss level theta of the grokking times "
                            "(validation.grokking_times)", 0.0, True),
}

# fields that only set scalars of the dynamics: config key -> dmft.BatchProgram field
BATCHED = {"model.gamma0": "gamma0", "train.eta0": "eta0", "train.weight_decay": "weight_decay",
           "model.eps": "eps"}
_NOT_SCANNABLE = {
    "train.steps": "every point must share the time axis",
    "train.save_every": "every point must share the time axis",
    "simulate.max_memory_gb": "it is a limit, not a parameter of the problem",
}
SCANNABLE = {f"{sec}.{k}": f for sec in ("task", "model", "train", "theory", "simulate")
             for k, f in SCHEMA[sec].items()
             if f.kind in ("int", "float") and f"{sec}.{k}" not in _NOT_SCANNABLE}


def resolve_field(name: str, where: str = "scan.grid") -> str:
    """The "section.key" a grid name refers to (a bare key works when unambiguous)."""
    if not isinstance(name, str):
        raise ConfigError(f"{where}: field names are strings, got {name!r}")
    if name in SCANNABLE:
        return name
    fixed = [f for f in _NOT_SCANNABLE if name in (f, f.split(".", 1)[1])]
    if fixed:
        raise ConfigError(f"{where}: {fixed[0]} cannot be scanned ({_NOT_SCANNABLE[fixed[0]]})")
    matches = [f for f in SCANNABLE if f.split(".", 1)[1] == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"{where}: {name!r} is ambiguous; say {' or '.join(matches)}")
    raise ConfigError(f"{where}: unknown field {name!r}; numeric fields that can be scanned: "
                      f"{', '.join(SCANNABLE)}")


def coerce_value(field: str, where: str, value):
    """One grid value of a scannable field, checked and converted."""
    return coerce(where, SCANNABLE[field], value)
