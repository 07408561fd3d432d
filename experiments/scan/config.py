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

import dmft
from dmft.errors import ConfigError
from dmft.plan import MIXED_MIN_GAMMA0, SAMPLED_MIN_GAMMA0, gamma0_range

from .. import config as _config
from .. import problem as _problem
from .grid import grid_of
from .schema import DLN_OUTPUTS, KINDS, OUTPUTS, SCHEMA, SETTINGS, Kind, kind_of, resolve_field

__all__ = ["load_config", "check", "check_gamma0", "gamma0_range"]


def _defaults(kind: Kind) -> dict:
    cfg = _config.defaults(kind.schema)
    cfg["scan"].update(grid=None, points=None)
    return cfg


def _grid_table(table_name, kind: Kind):
    """The merge handler of scan.grid / scan.points (a table of field = [values]).

    A whole table (`[scan.grid]` in a file, `--set scan.grid={...}`) replaces the table of
    an earlier source, so an axis can be dropped, and an empty one removes it (`--set
    scan.grid={}` with `--set scan.points={...}` turns a file's grid into points);
    `scan.grid.FIELD=[...]` replaces one axis."""
    def handler(cfg, field, v, source):
        whole = not field
        if field:                                    # an override scan.grid.FIELD=[...]
            v = {field: v}
        if v is None:
            return
        if not isinstance(v, dict):
            raise ConfigError(f"{source}: scan.{table_name} must be a table of field = [values]")
        if whole and not v:                          # scan.grid={}: no grid (a file's grid -> points)
            cfg["scan"][table_name] = None
            return
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
    _check_set_and_scanned(cfg, kind, source, overrides)
    grid = check(cfg)
    _config.check_saves(cfg, kind.schema, source, overrides)
    # the grid as validated (numbers coerced), so equal scans have equal configurations
    table = "grid" if grid.kind == "product" else "points"
    cfg["scan"][table] = {f: list(v) for f, v in zip(grid.fields, grid.values)}
    return cfg


def _check_set_and_scanned(cfg: dict, kind: Kind, source, overrides) -> None:
    """Refuse a section value the user wrote for a field an axis also sets: the axis replaces it
    at every point, so it would be dropped without a word. A value equal to the field's default
    passes (a configuration as `load_config` returns it names every key, and reloads), and so
    does one of the axis's own values (nothing is lost: that point is computed; the shipped
    scan.toml sets task.P = 110 beside the axis [40, 110, 300])."""
    given = _config.given_keys(source, overrides)
    for table in ("grid", "points"):
        for f, values in (cfg["scan"][table] or {}).items():
            sec, key = f.split(".", 1)
            value = cfg[sec][key]
            if f in given and value != kind.schema[sec][key].default and not _among(value, values):
                raise ConfigError(f"{f} = {value!r} is set in [{sec}], but scan.{table} also scans {f} "
                                  f"({_axis_shown(values)}), whose values replace it at every point; set {f} "
                                  "in one of the two places")


def _axis_shown(values, most: int = 6) -> str:
    """An axis's values as written, the middle of a long one elided (a 1000-value axis printed
    every value in the refusal)."""
    values = [v.item() if hasattr(v, "item") else v for v in values]      # (numpy scalars as numbers)
    if len(values) <= most:
        return repr(values)
    head, tail = values[:most // 2], values[-(most // 2):]
    return (f"[{', '.join(map(repr, head))}, ... {len(values) - len(head) - len(tail)} more ..., "
            f"{', '.join(map(repr, tail))}]")


def _among(value, values) -> bool:
    try:
        return any(v == value for v in values)
    except TypeError:                  # (not a list: grid_of names that)
        return False


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
    _problem.check_task_path(task)
    _problem.check_unread(cfg)             # a fixed setting nothing reads would label results wrongly
    _check_batches(cfg, grid, cols)
    draws = sc["theory"] and _draws_nodes(cfg)
    if draws:
        _check_counts(cfg, grid, cols)
    if sc["node_check"]:
        _check_node_check(cfg, grid, cols, draws)
    # the widest range any working float type accepts; `run` checks again in the one it runs in
    check_gamma0(cfg, grid, "float64", draws)
    for sec, switch in (("theory", "theory"), ("simulate", "networks")):   # (two-layer: [scan] has both)
        if switch in sc and not sc[switch] and isinstance(cfg.get(sec), dict):
            fields = SCHEMA.get(sec, {})
            off = [k for k, v in cfg[sec].items()    # (the memory limits change no result: SETTINGS)
                   if k in fields and v != fields[k].default and (sec, k) not in SETTINGS]
            if off:                        # a fixed setting nothing reads: its results would be labelled by it
                raise ConfigError(f"{sec}.{off[0]}: set, but scan.{switch} is false, so nothing reads "
                                  f"[{sec}]; drop it or set scan.{switch} = true")
    for f in grid.fields:                  # an axis that changes nothing only costs time
        sec, key = f.split(".", 1)
        if sec == "task" and key not in _problem.TASK_FIELDS.get(task["name"], {key}):
            raise ConfigError(f"scan.grid: {f} is not used by task.name = {task['name']!r}")
        if (sec == "theory" and not sc["theory"]) or (sec == "simulate" and not sc["networks"]):
            switch = "scan.theory" if sec == "theory" else "scan.networks"
            raise ConfigError(f"scan.grid: {f} is scanned but {switch} is false")
    return grid


def _check_batches(cfg: dict, grid, cols: dict) -> None:
    """Minibatch SGD at every point (`experiments.problem.check_batches`, point by point): a batch
    above the point's task.P, a batch_seed (set or scanned) where every point is full-batch
    descent (it changes nothing), and theory.method = 'iterate' under SGD are refused, naming the
    key and, for an axis, the grid's point."""
    tr, task, th = cfg["train"], cfg["task"], cfg["theory"]
    n = grid.size
    B = cols.get("train.batch_size", np.full(n, tr["batch_size"]))
    npz = task["name"] == "npz"              # (a data file's P is checked when its group is built)
    P = None if npz else cols.get("task.P", np.full(n, task["P"]))
    scanned = [f for f in ("train.batch_size", "task.P") if f in cols]

    def where(i):
        return (f"{_table(grid)}: at the point {', '.join(f'{f} = {int(cols[f][i])}' for f in scanned)}: "
                if scanned else "")

    if P is not None and np.any(B > P):
        i = int(np.flatnonzero(B > P)[0])
        raise ConfigError(f"{where(i)}train.batch_size ({int(B[i])}) must be <= task.P ({int(P[i])}; 0: "
                          "full-batch gradient descent)")
    sgd = (B > 0) & (B < P) if P is not None else B > 0
    seeds = "train.batch_seed" in cols or tr["batch_seed"] != _problem.SGD_FIELDS["batch_seed"].default
    if seeds and not np.any(sgd):
        raise ConfigError("train.batch_seed: read only by minibatch SGD (0 < train.batch_size < task.P), and "
                          "every point of this scan is full-batch gradient descent: it would change nothing")
    if not npz and np.any(sgd) and cfg["scan"]["theory"] and th["method"] == "iterate":   # (npz: its group)
        raise ConfigError("train.batch_size: minibatch SGD is solved by theory.method = 'auto', 'forward', "
                          "'closure' or 'lazy' (the DMFT conditioned on the batch sequence), not 'iterate'")


def _draws_nodes(cfg: dict) -> bool:
    """Whether the DMFT's method draws single-site nodes (forward, iterate; auto where no exact
    closure applies): theory.samples, theory.replicas and the sampled-gamma0 floor apply."""
    method = cfg["theory"]["method"]
    if method != "auto":
        return method in ("forward", "iterate")
    model = dict(cfg["model"])
    if model["activation"] == "quadratic":
        model["eps"] = 1.0                 # (which closure applies does not depend on eps; the grid may set it)
    return dmft.exact_closure(_problem.build_model(model)) is None


def _check_counts(cfg: dict, grid, cols: dict) -> None:
    """theory.samples against theory.replicas at every point (as `dmft.solve` checks them: every
    replica gets the same number of nodes, in antithetic pairs unless theory.sampler = 'mc'),
    named by the configuration's keys and, where an axis sets them, by the grid's point."""
    th = cfg["theory"]
    if th["sampler"] == "quadrature":      # (one deterministic rule: samples and replicas do not apply)
        return
    n = grid.size
    samples = cols.get("theory.samples", np.full(n, th["samples"]))
    replicas = cols.get("theory.replicas", np.full(n, th["replicas"]))
    pairs = 1 if th["sampler"] == "mc" else 2
    bad = np.flatnonzero(samples % _problem.sample_unit(th["sampler"], replicas))
    if not bad.size:
        return
    i = int(bad[0])
    s, r = int(samples[i]), int(replicas[i])
    scanned = [f for f in ("theory.samples", "theory.replicas") if f in cols]
    where = (f"{_table(grid)}: at the point {', '.join(f'{f} = {int(cols[f][i])}' for f in scanned)}: "
             if scanned else "")
    need = (f"theory.replicas ({r}; theory.sampler = 'mc')" if pairs == 1 else
            f"2 x theory.replicas ({pairs * r}: every replica gets the same number of nodes, in "
            "antithetic pairs)")
    raise ConfigError(f"{where}theory.samples ({s}) must be a multiple of {need}")


def _check_node_check(cfg: dict, grid, cols: dict, draws: bool) -> None:
    """scan.node_check: a DMFT that draws nodes (not a closure, the lazy limit or a quadrature
    rule), whose replicas' nodes split in 4 parts of whole pairs at every point."""
    th = cfg["theory"]
    if not cfg["scan"]["theory"]:
        raise ConfigError("scan.node_check: checks the DMFT's node count, but scan.theory is false")
    if not draws or th["sampler"] == "quadrature":
        what = "a quadrature rule" if draws else f"theory.method = {th['method']!r} (an exact method here)"
        raise ConfigError(f"scan.node_check: the DMFT solved by {what} has no sampled nodes whose count could "
                          "bias it; it needs theory.method 'forward' (or 'auto' without an exact closure) and "
                          "a sampler other than 'quadrature'")
    n = grid.size
    samples = cols.get("theory.samples", np.full(n, th["samples"]))
    replicas = cols.get("theory.replicas", np.full(n, th["replicas"]))
    per = _problem.sample_unit(th["sampler"], replicas, 4)     # (each replica's nodes split in 4 parts)
    bad = np.flatnonzero(samples % per)
    if bad.size:
        i = int(bad[0])
        raise ConfigError(f"scan.node_check: theory.samples ({int(samples[i])}) must be a multiple of {int(per[i])} "
                          "(4 x 2 x theory.replicas: each replica's nodes split in 4 parts of whole antithetic "
                          "pairs, halves of pairs for theory.sampler = 'mc')")


def _table(grid) -> str:
    return "scan.grid" if grid.kind == "product" else "scan.points"


def check_gamma0(cfg: dict, grid, dtype: str, draws: bool | None = None) -> None:
    """Refuse, naming the key (scan.grid and the value, for an axis), a gamma0 outside what a point
    computes in the float type `dtype` ("float32" or "float64"): `gamma0_range`; with a DMFT method
    that draws nodes, `dmft.plan.SAMPLED_MIN_GAMMA0` (`dmft.solve` refuses below it); with
    theory.precision = 'mixed', `dmft.plan.MIXED_MIN_GAMMA0`; with scan.networks,
    `networks.train.NETWORK_MIN_GAMMA0` (`networks.train` refuses below it: a scan did so only
    at the point, once its store was written)."""
    from networks.train import NETWORK_MIN_GAMMA0

    if kind_of(cfg).name != "two_layer":
        return
    sc, th = cfg["scan"], cfg["theory"]
    if draws is None:
        draws = sc["theory"] and _draws_nodes(cfg)
    floors = []
    if draws:
        method = f"theory.method = {th['method']!r}" + (" (the forward method here)" if th["method"] == "auto" else "")
        floors.append((SAMPLED_MIN_GAMMA0[dtype], f"what {method} resolves in "
                       f"{dtype} ({SAMPLED_MIN_GAMMA0[dtype]:g}; dmft.solve refuses it: its node sums' "
                       "rounding is divided by gamma0); use theory.method = 'lazy', or 'closure' where exact"))
    if sc["theory"] and th["precision"] == "mixed":
        floors.append((MIXED_MIN_GAMMA0, f"what theory.precision = 'mixed' resolves ({MIXED_MIN_GAMMA0:g}; "
                       "dmft.solve refuses it: its float32 rounding is divided by gamma0); use "
                       "theory.precision = 'full'"))
    if sc["networks"]:
        floors.append((NETWORK_MIN_GAMMA0[dtype], f"what a network resolves in {dtype} "
                       f"({NETWORK_MIN_GAMMA0[dtype]:g}; networks.train refuses it: its output divides "
                       "the weights' rounding by gamma0)"))
    scanned = "model.gamma0" in grid.fields
    values = grid.values[grid.fields.index("model.gamma0")] if scanned else (cfg["model"]["gamma0"],)
    name = f"{_table(grid)}: model.gamma0 = " if scanned else "model.gamma0 = "
    low, high = gamma0_range(dtype)
    for g in values:
        if not low <= g <= high:
            raise ConfigError(
                f"{name}{g:g} is outside [{low:.3g}, {high:.3g}], the gamma0 whose square and inverse "
                f"square {dtype} holds: a point computes with gamma0^2 (its networks' step) and 1/gamma0^2 "
                "(the DMFT's run-away bound), which would vanish or overflow there"
                + ("; the lazy limit is theory.method = 'lazy'" if g < low else ""))
        for floor, why in floors:
            if g < floor:
                raise ConfigError(f"{name}{g:g} is below {why}")


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
    kappa = cols.get("train.weight_decay", np.array([tr["weight_decay"]]))
    if cfg["theory"]["cross_modes"] and np.any(kappa > 0):
        raise ConfigError("theory.cross_modes: the cross-mode drift is derived without weight decay, and "
                          "train.weight_decay > 0 at some point of the grid; turn one of the two off")
    sc = cfg["scan"]
    for f in grid.fields:           # axes that change nothing only cost time (they ran, rc = 0)
        if f.startswith("theory.") and not sc["theory"]:
            raise ConfigError(f"scan.grid: {f} is scanned but scan.theory is false")
        if f.startswith("theory.") and m["init"] != "aligned":
            raise ConfigError(f"scan.grid: {f} is scanned but model.init = {m['init']!r} has no per-mode SDE "
                              "(it describes an aligned start): every theory output is NaN at every point")
        if f in _DLN_NETWORKS_ONLY and not sc["networks"]:
            raise ConfigError(f"scan.grid: {f} is read only by the networks, and scan.networks is false")
    return grid


# the deep-linear fields only the networks read (`grid.NOT_READ["theory"]`)
_DLN_NETWORKS_ONLY = ("train.seeds", "train.seed", "train.probe")
