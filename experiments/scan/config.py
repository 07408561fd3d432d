"""Loading and checking a scan's configuration (the schema of each kind is `scan.schema`).

A scan is a configuration and a grid over numeric fields of it, named "section.key" (or
by the bare key when that is unambiguous). For the two-layer kind, fields that only set
scalars of the dynamics (model.gamma0, train.eta0, train.weight_decay, model.eps) are
*batched*: the points of one group differ only in them and run through one
`dmft.BatchProgram`; every other scanned field starts a new group with its own data and
program. For the deep-linear kind every point is one ensemble and one SDE.
"""

from __future__ import annotations

import numpy as np

from dmft.errors import ConfigError

from .. import config as _config
from .. import problem as _problem
from .grid import grid_of
from .schema import DLN_OUTPUTS, KINDS, OUTPUTS, Kind, kind_of, resolve_field

__all__ = ["load_config", "check"]


def _defaults(kind: Kind) -> dict:
    cfg = _config.defaults(kind.schema)
    cfg["scan"].update(grid=None, points=None)
    return cfg


def _grid_table(table_name, kind: Kind):
    """The merge handler of scan.grid / scan.points (a table of field = [values]).

    A whole table (`[scan.grid]` in a file, `--set scan.grid={...}`) replaces the table of
    an earlier source, so an axis can be dropped; `scan.grid.FIELD=[...]` replaces one axis."""
    def handler(cfg, field, v, source):
        whole = not field
        if field:                                    # an override scan.grid.FIELD=[...]
            v = {field: v}
        if v is None:
            return
        if not isinstance(v, dict):
            raise ConfigError(f"{source}: scan.{table_name} must be a table of field = [values]")
        table, seen = ({} if whole else dict(cfg["scan"][table_name] or {})), set()
        for name, vals in _flatten(v):
            f = resolve_field(name, f"scan.{table_name}", kind)
            if f in seen:
                raise ConfigError(f"{source}: scan.{table_name} gives {f} twice")
            seen.add(f)
            table[f] = vals          # replaces an axis of an earlier source (an override)
        cfg["scan"][table_name] = table
    return handler


def _flatten(table: dict, prefix: str = ""):
    """(dotted name, value) pairs: TOML reads an unquoted model.gamma0 = [...] as nested tables."""
    for k, v in table.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _source_kind(source, overrides) -> Kind:
    """The kind named by the source's [scan] kind or an override scan.kind=... (default two_layer)."""
    table = source if isinstance(source, dict) else (_config.read_toml(source) if source is not None else {})
    name = (table.get("scan") or {}).get("kind", "two_layer") if isinstance(table.get("scan"), dict) else "two_layer"
    for text in overrides:
        over = _config.parse_override(text)
        if "kind" in over.get("scan", {}):
            name = over["scan"]["kind"]
    if name not in KINDS:
        raise ConfigError(f"scan.kind: must be one of {list(KINDS)}, got {name!r}")
    return KINDS[name]


def load_config(source=None, overrides=()) -> dict:
    """The scan configuration: defaults, then `source`, then overrides; validated.

    Args:
        source: a TOML file, a dict laid out like one (a `load_config` result too), or None.
        overrides: "section.key=value" strings (TOML literals), e.g.
            "scan.grid.model.gamma0=[0.1, 1.0]".

    Raises:
        ConfigError: naming the key, before anything is computed.
    """
    kind = _source_kind(source, overrides)
    if isinstance(source, dict) and "sweep" in source:
        raise ConfigError("configuration: unknown section [sweep] (a scan sets gamma0 in [model] or "
                          f"its grid); known: {', '.join(kind.schema)}")
    edit = None
    if kind.name == "two_layer":
        # the two-layer schema has no kind key (stores written before kinds existed stay resumable)
        def edit(table):
            if isinstance(table.get("scan"), dict):
                table["scan"].pop("kind", None)
        overrides = [o for o in overrides if not o.replace(" ", "").startswith("scan.kind=")]
    tables = {"scan.grid": _grid_table("grid", kind), "scan.points": _grid_table("points", kind)}
    cfg = _config.load(kind.schema, source, overrides, tables=tables, initial=_defaults(kind), edit=edit)
    grid = check(cfg)
    _config.check_saves(cfg, kind.schema, source, overrides)
    # the grid as validated (numbers coerced), so equal scans have equal configurations
    table = "grid" if grid.kind == "product" else "points"
    cfg["scan"][table] = {f: list(v) for f, v in zip(grid.fields, grid.values)}
    return cfg


def _check_common(cfg: dict, outputs) -> None:
    sc = cfg["scan"]
    if not (sc["theory"] or sc["networks"]):
        raise ConfigError("scan.theory and scan.networks are both false: nothing to compute")
    bad = [o for o in sc["outputs"] if o not in outputs]
    if bad or not sc["outputs"] or len(set(sc["outputs"])) != len(sc["outputs"]):
        raise ConfigError(f"scan.outputs: a non-empty list of distinct names among {list(outputs)}, "
                          f"got {sc['outputs']}")
    tr = cfg["train"]
    if not tr.get("log_saves") and tr["steps"] % tr["save_every"]:
        raise ConfigError(f"train.steps ({tr['steps']}) must be a multiple of train.save_every "
                          f"({tr['save_every']})")


def check(cfg: dict):
    """Cross-field checks; returns the `Grid`."""
    kind = kind_of(cfg)
    if kind.name == "deep_linear":
        return _check_deep_linear(cfg)
    sc, model, task = cfg["scan"], cfg["model"], cfg["task"]
    _check_common(cfg, OUTPUTS)
    grid = grid_of(cfg)
    if "predictions" in sc["outputs"]:
        moving = [f for f in ("task.P", "task.P_test") if f in grid.fields]
        if moving:
            raise ConfigError(f"scan.outputs: 'predictions' need the same points everywhere, but the "
                              f"grid scans {', '.join(moving)}")
    cols = grid.columns()
    if "model.eps" in grid.fields and model["activation"] != "quadratic":
        raise ConfigError(f"scan.grid: model.eps is scanned but model.activation is "
                          f"{model['activation']!r}; eps belongs to activation = 'quadratic'")
    if model["activation"] == "quadratic":
        eps = cols.get("model.eps", np.array([model["eps"]]))
        if np.any(eps == 0):
            raise ConfigError("model.eps: set eps != 0 for the quadratic activation h + eps/2 h^2")
    if task["name"] == "npz" and not task["path"]:
        raise ConfigError("task.path: needed when task.name = 'npz'")
    _problem.check_unread(cfg)             # a fixed setting nothing reads would label results wrongly
    for f in grid.fields:                  # an axis that changes nothing only costs time
        sec, key = f.split(".", 1)
        if sec == "task" and key not in _problem.TASK_FIELDS.get(task["name"], {key}):
            raise ConfigError(f"scan.grid: {f} is not used by task.name = {task['name']!r}")
        if (sec == "theory" and not sc["theory"]) or (sec == "simulate" and not sc["networks"]):
            switch = "scan.theory" if sec == "theory" else "scan.networks"
            raise ConfigError(f"scan.grid: {f} is scanned but {switch} is false")
    return grid


def _check_deep_linear(cfg: dict):
    from ..dln.config import SCHEMA as _  # noqa: F401  (the sections' own checks follow)

    _check_common(cfg, DLN_OUTPUTS)
    grid = grid_of(cfg)
    cols = grid.columns()
    from ..dln.config import check_unread
    check_unread(cfg, {f: list(v) for f, v in zip(grid.fields, grid.values)})
    t, m, tr = cfg["teacher"], cfg["model"], cfg["train"]
    r = len(t["singular_values"]) if t["spectrum"] == "list" else t["rank"]
    d_in = cols.get("teacher.d_in", np.array([t["d_in"]]))
    d_out = cols.get("teacher.d_out", np.array([t["d_out"]]))
    width = cols.get("model.width", np.array([m["width"]]))
    depth = cols.get("model.depth", np.array([m["depth"]]))
    P = cols.get("teacher.P", np.array([t["P"]]))
    B = cols.get("train.batch_size", np.array([tr["batch_size"]]))
    if np.any(r > np.minimum(d_in, d_out)):
        raise ConfigError(f"teacher: rank {r} exceeds min(d_in, d_out) at some point of the grid")
    if np.any((depth > 1) & (width < r)):
        raise ConfigError(f"model.width: below the teacher's rank {r} at some point of the grid")
    if np.any((P > 0) & (P < d_in)):
        raise ConfigError("teacher.P: fewer points than d_in cannot be whitened, at some point of the grid")
    if np.any((P > 0) & (B > P)):
        raise ConfigError("train.batch_size: above teacher.P at some point of the grid")
    sc = cfg["scan"]
    for f in grid.fields:
        if f.startswith("theory.") and not sc["theory"]:
            raise ConfigError(f"scan.grid: {f} is scanned but scan.theory is false")
    return grid
