"""The configuration of a scan: the problem sections, a base gamma0, one width, and [scan].

A scan is a configuration (the sections of `experiments.problem` plus [scan]) and a
grid over numeric fields of it, named "section.key" (or by the bare key when that is
unambiguous). Fields that only set scalars of the dynamics (model.gamma0, train.eta0,
train.weight_decay, model.eps) are *batched*: the points of one group differ only in
them and run through one `dmft.BatchProgram`. Every other scanned field starts a new
group with its own data and program.
"""

from __future__ import annotations

import numpy as np

from dmft.errors import ConfigError

from .. import config as _config
from .. import problem as _problem
from .grid import grid_of
from .schema import OUTPUTS, SCHEMA, resolve_field

__all__ = ["load_config", "check"]

def _defaults() -> dict:
    cfg = _config.defaults(SCHEMA)
    cfg["scan"].update(grid=None, points=None)
    return cfg


def _grid_table(kind):
    """The merge handler of scan.grid / scan.points (a table of field = [values])."""
    def handler(cfg, field, v, source):
        if field:                                    # an override scan.grid.FIELD=[...]
            v = {field: v}
        if v is None:
            return
        if not isinstance(v, dict):
            raise ConfigError(f"{source}: scan.{kind} must be a table of field = [values]")
        table, seen = dict(cfg["scan"][kind] or {}), set()
        for name, vals in _flatten(v):
            f = resolve_field(name, f"scan.{kind}")
            if f in seen:
                raise ConfigError(f"{source}: scan.{kind} gives {f} twice")
            seen.add(f)
            table[f] = vals          # replaces an axis of an earlier source (an override)
        cfg["scan"][kind] = table
    return handler


_TABLES = {"scan.grid": _grid_table("grid"), "scan.points": _grid_table("points")}


def _flatten(table: dict, prefix: str = ""):
    """(dotted name, value) pairs: TOML reads an unquoted model.gamma0 = [...] as nested tables."""
    for k, v in table.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def load_config(source=None, overrides=()) -> dict:
    """The scan configuration: defaults, then `source`, then overrides; validated.

    Args:
        source: a TOML file, a dict laid out like one (a `load_config` result too), or None.
        overrides: "section.key=value" strings (TOML literals), e.g.
            "scan.grid.model.gamma0=[0.1, 1.0]".

    Raises:
        ConfigError: naming the key, before anything is computed.
    """
    if isinstance(source, dict) and "sweep" in source:
        raise ConfigError("configuration: unknown section [sweep] (a scan sets gamma0 in [model] or "
                          f"its grid); known: {', '.join(SCHEMA)}")
    cfg = _config.load(SCHEMA, source, overrides, tables=_TABLES, initial=_defaults())
    grid = check(cfg)
    # the grid as validated (numbers coerced), so equal scans have equal configurations
    kind = "grid" if grid.kind == "product" else "points"
    cfg["scan"][kind] = {f: list(v) for f, v in zip(grid.fields, grid.values)}
    return cfg


def check(cfg: dict):
    """Cross-field checks; returns the `Grid`."""
    sc, tr, model, task = cfg["scan"], cfg["train"], cfg["model"], cfg["task"]
    if not (sc["theory"] or sc["networks"]):
        raise ConfigError("scan.theory and scan.networks are both false: nothing to compute")
    bad = [o for o in sc["outputs"] if o not in OUTPUTS]
    if bad or not sc["outputs"] or len(set(sc["outputs"])) != len(sc["outputs"]):
        raise ConfigError(f"scan.outputs: a non-empty list of distinct names among {list(OUTPUTS)}, "
                          f"got {sc['outputs']}")
    if tr["steps"] % tr["save_every"]:
        raise ConfigError(f"train.steps ({tr['steps']}) must be a multiple of train.save_every "
                          f"({tr['save_every']})")
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
    for f in grid.fields:                  # an axis that changes nothing only costs time
        sec, key = f.split(".", 1)
        if sec == "task" and key not in _problem.TASK_FIELDS.get(task["name"], {key}):
            raise ConfigError(f"scan.grid: {f} is not used by task.name = {task['name']!r}")
        if (sec == "theory" and not sc["theory"]) or (sec == "simulate" and not sc["networks"]):
            switch = "scan.theory" if sec == "theory" else "scan.networks"
            raise ConfigError(f"scan.grid: {f} is scanned but {switch} is false")
    return grid
