"""The schema of a scan: which sections it has, which fields can be scanned, and which of
them are batched into one program, for each kind of model.

- two_layer (default): the problem sections of `experiments.problem` (with minibatch SGD,
  train.batch_size and train.batch_seed), a base gamma0, one network width, and [scan]. Points
  that differ only in the batched fields (gamma0, eta0, weight_decay, eps) run as one
  `dmft.BatchProgram`; a batch size is a group's (every point of it on one batch sequence).
- deep_linear (`[scan] kind = "deep_linear"`): the sections of the `dmft dln` job with one
  label-noise value per point; every point is one network ensemble and one per-mode SDE.
"""

from __future__ import annotations

import dataclasses

from dmft.errors import ConfigError

from .. import problem as _problem
from ..config import Field, coerce
from ..dln.config import SCHEMA as _DLN_BASE

__all__ = ["SCHEMA", "OUTPUTS", "BATCHED", "SCANNABLE", "KINDS", "SETTINGS", "Kind", "kind_of", "resolve_field",
           "coerce_value"]

# settings that never change a result (a memory limit only decides whether a chunk runs or is
# refused): kept out of a store's identity, so a scan resumes under another limit, and recorded
# as the store's (and each session's) "settings"
SETTINGS = (("theory", "max_memory_gb"), ("simulate", "max_memory_gb"))

OUTPUTS = ("final", "grokking", "curves", "predictions")

# the problem sections, with a base gamma0 and one network width per point, and [scan]
_BASE = _problem.SECTIONS
SCHEMA: dict[str, dict[str, Field]] = {sec: dict(_BASE[sec]) for sec in ("task", "model", "train", "theory")}
SCHEMA["model"]["gamma0"] = Field("float", 1.0, "richness where the grid does not set it", 0.0, True)
SCHEMA["train"] = {**SCHEMA["train"], **_problem.SGD_FIELDS, "final_time": Field(
    "float", 0.0, "if > 0: every point trains to this time and saves at the same times "
    "(train.steps / train.save_every of them), whatever its eta0", 0.0)}
SCHEMA["simulate"] = {
    "width": Field("int", 256, "network width", 1),
    **{k: _BASE["simulate"][k] for k in ("seeds", "seed", "antithetic", "max_memory_gb")},
}
SCHEMA["scan"] = {
    "theory": Field("bool", True, "solve the DMFT at every point"),
    "networks": Field("bool", False, "train a network ensemble at every point"),
    "outputs": Field("strs", ["final"], f"kept per point, among {', '.join(OUTPUTS)}"),
    "chunk": Field("int", 64, "points per compiled call and per chunk file", 1),
    "node_check": Field("bool", False, "also solve each point's DMFT with each replica's nodes split in 2 and in 4 "
                        "(half and a quarter of its nodes a replica, the same nodes; 3x its cost in all): "
                        "theory.node.* (the final test loss's node-count shift, its z and its extrapolation "
                        "to infinitely many nodes; the train loss's without test targets) and "
                        "theory.node.train.* (the train loss's beside it)"),
    "grok_threshold": Field("float", 0.1, "loss level theta of the grokking times "
                            "(validation.grokking_times), an absolute loss (dmft grok's "
                            "threshold.loss_fraction is a fraction of the initial loss)", 0.0, True),
}

# fields that only set scalars of the dynamics: config key -> dmft.BatchProgram field
BATCHED = {"model.gamma0": "gamma0", "train.eta0": "eta0", "train.weight_decay": "weight_decay",
           "model.eps": "eps"}
_NOT_SCANNABLE = {
    "train.final_time": "every point must share the time axis",
    "train.steps": "every point must share the time axis",
    "train.save_every": "every point must share the time axis",
    "simulate.max_memory_gb": "it is a limit, not a parameter of the problem",
    "theory.max_memory_gb": "it is a limit, not a parameter of the problem",
}
SCANNABLE = {f"{sec}.{k}": f for sec in ("task", "model", "train", "theory", "simulate")
             for k, f in SCHEMA[sec].items()
             if f.kind in ("int", "float") and f"{sec}.{k}" not in _NOT_SCANNABLE}


# ----------------------------------------------------------------- deep linear networks

def _dln_schema():
    sch = {sec: dict(_DLN_BASE[sec]) for sec in ("teacher", "model", "train", "theory")}
    # the stationary histograms are the dln job's, not a scan output: no reader here (it was
    # accepted, ignored, and part of the identity)
    del sch["theory"]["stationary_after"]
    sch["teacher"]["label_noise"] = Field("float", 0.0, "label noise sigma", 0.0)
    sch["scan"] = {
        "kind": Field("str", "deep_linear", "the kind of model scanned", choices=("deep_linear",)),
        "theory": Field("bool", True, "integrate the per-mode SDE and gradient flow at every point"),
        "networks": Field("bool", True, "train the network ensemble at every point"),
        "outputs": Field("strs", ["final", "learning"], "kept per point, among final, learning, curves"),
        "chunk": Field("int", 4, "points per chunk file", 1),
    }
    return sch


DLN_OUTPUTS = ("final", "learning", "curves")
_DLN_NOT_SCANNABLE = {
    "train.final_time": "every point must share the time axis",
    "train.steps": "every point must share the time axis",
    "train.save_every": "every point must share the time axis",
    "train.log_saves": "every point must share the time axis",
    "teacher.rank": "every point must share the modes",
    # (scannable, it was part of the points' keys: the SDE's draws, and so its results, moved with a
    # memory limit that a scan may be resumed under)
    "theory.max_memory_gb": "it is a limit, not a parameter of the problem",
}


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of scanned model: its schema and what can be scanned or batched."""

    name: str
    schema: dict
    outputs: tuple
    scannable: dict
    not_scannable: dict
    batched: dict              # config key -> batched field (two_layer); every field for deep_linear
    pointwise: bool            # True: every point runs alone (groups do not split by field)


def _scannable(schema, not_scannable, sections):
    return {f"{sec}.{k}": f for sec in sections for k, f in schema[sec].items()
            if f.kind in ("int", "float") and f"{sec}.{k}" not in not_scannable}


_DLN = _dln_schema()
KINDS = {
    "two_layer": Kind("two_layer", SCHEMA, OUTPUTS, SCANNABLE, _NOT_SCANNABLE, BATCHED, False),
    "deep_linear": Kind("deep_linear", _DLN, DLN_OUTPUTS,
                        _scannable(_DLN, _DLN_NOT_SCANNABLE, ("teacher", "model", "train", "theory")),
                        _DLN_NOT_SCANNABLE, {}, True),
}


def kind_of(cfg) -> Kind:
    """The kind of a configuration (or of a source table before loading)."""
    scan = (cfg or {}).get("scan", {}) if isinstance(cfg, dict) else {}
    name = scan.get("kind", "two_layer") if isinstance(scan, dict) else "two_layer"
    if name not in KINDS:
        raise ConfigError(f"scan.kind: must be one of {list(KINDS)}, got {name!r}")
    return KINDS[name]


def resolve_field(name: str, where: str = "scan.grid", kind: Kind | None = None) -> str:
    """The "section.key" a grid name refers to (a bare key works when unambiguous)."""
    kind = kind or KINDS["two_layer"]
    scannable, fixed_fields = kind.scannable, kind.not_scannable
    if not isinstance(name, str):
        raise ConfigError(f"{where}: field names are strings, got {name!r}")
    if name in scannable:
        return name
    fixed = [f for f in fixed_fields if name in (f, f.split(".", 1)[1])]
    if fixed:
        raise ConfigError(f"{where}: {fixed[0]} cannot be scanned ({fixed_fields[fixed[0]]})")
    matches = [f for f in scannable if f.split(".", 1)[1] == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"{where}: {name!r} is ambiguous; say {' or '.join(matches)}")
    raise ConfigError(f"{where}: unknown field {name!r}; numeric fields that can be scanned: "
                      f"{', '.join(scannable)}")


def coerce_value(field: str, where: str, value, kind: Kind | None = None):
    """One grid value of a scannable field, checked and converted."""
    return coerce(where, (kind or KINDS["two_layer"]).scannable[field], value)

