"""Parameter scans: a grid of problems, one compiled program per shape, a resumable store.

A scan is a configuration (the sections of `validation.config` plus [scan]) and a
grid over numeric fields of it, named "section.key" (or by the bare key when that
is unambiguous). Fields that only set scalars of the dynamics (model.gamma0,
train.eta0, train.weight_decay, model.eps) are *batched*: the points of one
group differ only in them and run through one `dmft.BatchProgram`, vmapped over
points, in chunks of `scan.chunk` points, sharded over the local devices. Every
other scanned field (task.P, task.D, simulate.width, seeds, ...) starts a new
group with its own data and program.

    [scan]
    outputs = ["final", "grokking"]   # also "curves" (loss, alignment, weight change
                                      # against time) and "predictions" (f_train, f_test)
    [scan.grid]                       # cartesian product; or [scan.points] (equal-length lists)
    "model.gamma0" = [0.1, 0.3, 1.0, 3.0]
    "task.P" = [64, 128]

From Python (a dict laid out like the TOML works as well as a file):

    res = scan.run("scan.toml", "results/scan")    # ScanResult; rerun to resume
    res["theory.final.test_loss"]                  # an array shaped like the grid
    res.heatmap("theory.grok.gap", x="gamma0", y="P").savefig("gap.png")
    print(res.summary())

Outputs per point, for source = theory (`dmft.BatchProgram`) and networks (seed
means of `networks.train`; "error.*" are standard errors of those means):
"final" gives SOURCE.final.Q for Q in train_loss, test_loss, alignment,
weight_change.first_layer, weight_change.readout, error.train_loss,
error.test_loss; "grokking" gives SOURCE.grok.t_train, t_test, gap, reached_train,
reached_test (`validation.grokking.grokking_times` at scan.grok_threshold);
"curves" gives t and SOURCE.Q against time; "predictions" SOURCE.f_train and
f_test. Always: theory.diverged_step (-1: none) and networks.diverged_seeds.

Results go to a `validation.store.Store`: a manifest and one .npz per chunk, each
written atomically; rerunning the same scan resumes (finished chunks are skipped);
another configuration in the same directory is refused. Chunk boundaries depend
on the grid and `scan.chunk` only, and point i draws its randomness from
fold_in(key, i), so results do not depend on devices, processes or interruptions.
Under `jax.distributed` each process takes every count-th chunk and process 0
writes them all (the chunks travel through JAX's collectives; on CPU, gloo):

    dmft scan --config scan.toml --coordinator HOST0:1234 --num-processes 2 --process-id RANK

Example:
    >>> from validation import scan
    >>> cfg = scan.load_config({"scan": {"grid": {"gamma0": [0.5, 1.0], "task.P": [8, 16, 32]}}})
    >>> grid = scan.grid_of(cfg)
    >>> grid.fields, grid.shape, grid.point(4)
    (('model.gamma0', 'task.P'), (2, 3), {'model.gamma0': 1.0, 'task.P': 16})
    >>> [(g.fields, len(g.indices)) for g in scan.plan(cfg).groups]
    [({'task.P': 8}, 2), ({'task.P': 16}, 2), ({'task.P': 32}, 2)]
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
import tomllib

import numpy as np

from .config import SCHEMA as _BASE
from .config import ConfigError, Field, _coerce, parse_override
from .store import Store, StoreConflict, StoreWriteError, npz_arrays, npz_bytes

__all__ = ["SCHEMA", "BATCHED", "OUTPUTS", "Grid", "Plan", "ScanResult", "load_config", "grid_of",
           "plan", "run", "load", "init_distributed", "heatmap", "lines", "ConfigError",
           "StoreConflict", "StoreWriteError"]

OUTPUTS = ("final", "grokking", "curves", "predictions")

# the scan's configuration: the problem sections of validation.config, with a base
# gamma0 and one network width per point, and the [scan] section
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
                            "(validation.grokking.grokking_times)", 0.0, True),
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


# ----------------------------------------------------------------- configuration

def _defaults() -> dict:
    cfg = {sec: {k: copy.deepcopy(f.default) for k, f in fields.items()} for sec, fields in SCHEMA.items()}
    cfg["scan"].update(grid=None, points=None)
    return cfg


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


def _merge(cfg: dict, update, source: str) -> None:
    if not isinstance(update, dict):
        raise ConfigError(f"{source}: expected a table of sections")
    for sec, table in update.items():
        if sec not in SCHEMA:
            hint = " (a scan sets gamma0 in [model] or its grid)" if sec == "sweep" else ""
            raise ConfigError(f"{source}: unknown section [{sec}]{hint}; known: {', '.join(SCHEMA)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{sec}] must be a table")
        for k, v in table.items():
            if sec == "scan" and k.split(".", 1)[0] in ("grid", "points"):
                _merge_grid(cfg, k, v, source)
            elif k not in SCHEMA[sec]:
                known = ", ".join(list(SCHEMA[sec]) + (["grid", "points"] if sec == "scan" else []))
                raise ConfigError(f"{source}: unknown key {sec}.{k}; known in [{sec}]: {known}")
            else:
                cfg[sec][k] = _coerce(f"{sec}.{k}", SCHEMA[sec][k], v)


def _merge_grid(cfg, k, v, source):
    kind, _, field = k.partition(".")
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
        source: a TOML file, a dict laid out like one, or None.
        overrides: "section.key=value" strings (TOML literals), e.g.
            "scan.grid.model.gamma0=[0.1, 1.0]".

    Raises:
        ConfigError: naming the key, before anything is computed.
    """
    cfg = _defaults()
    if isinstance(source, dict):
        _merge(cfg, copy.deepcopy(source), "configuration")
    elif source is not None:
        try:
            with open(source, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {source}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{source}: not valid TOML ({err})") from None
        _merge(cfg, data, str(source))
    for text in overrides:
        _merge(cfg, parse_override(text), f"override {text!r}")
    grid = _check(cfg)
    # the grid as validated (numbers coerced), so equal scans have equal configurations
    kind = "grid" if grid.kind == "product" else "points"
    cfg["scan"][kind] = {f: list(v) for f, v in zip(grid.fields, grid.values)}
    return cfg


# the task fields each generator reads (validation.jobs.build)
_TASK_FIELDS = {"single_index": {"D", "P", "P_test", "degree", "noise", "seed"},
                "kumar_quadratic": {"D", "P", "P_test", "seed"},
                "teacher_network": {"D", "P", "P_test", "teacher_width", "seed"},
                "npz": set()}


def _check(cfg: dict) -> Grid:
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
        if sec == "task" and key not in _TASK_FIELDS.get(task["name"], {key}):
            raise ConfigError(f"scan.grid: {f} is not used by task.name = {task['name']!r}")
        if (sec == "theory" and not sc["theory"]) or (sec == "simulate" and not sc["networks"]):
            switch = "scan.theory" if sec == "theory" else "scan.networks"
            raise ConfigError(f"scan.grid: {f} is scanned but {switch} is false")
    return grid


# ----------------------------------------------------------------- the grid

@dataclasses.dataclass(frozen=True)
class Grid:
    """Points of a scan, in a fixed order (C order for a product).

    Attributes:
        kind: "product" (a cartesian product of axes) or "points" (an explicit list).
        fields: the scanned fields ("section.key").
        values: product: each axis's values; points: each field's column.
    """

    kind: str
    fields: tuple
    values: tuple

    @property
    def shape(self) -> tuple:
        if self.kind == "product":
            return tuple(len(v) for v in self.values)
        return (len(self.values[0]),)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def columns(self) -> dict[str, np.ndarray]:
        """Each field's value at every point, as (size,) arrays in grid order."""
        if self.kind == "points":
            return {f: np.asarray(v) for f, v in zip(self.fields, self.values)}
        mesh = np.meshgrid(*[np.asarray(v) for v in self.values], indexing="ij")
        return {f: m.reshape(-1) for f, m in zip(self.fields, mesh)}

    def point(self, i: int) -> dict:
        """The field values of point i."""
        if self.kind == "points":
            return {f: v[i] for f, v in zip(self.fields, self.values)}
        where = np.unravel_index(i, self.shape)
        return {f: v[int(j)] for f, v, j in zip(self.fields, self.values, where)}

    def describe(self) -> dict:
        return {"kind": self.kind, "fields": list(self.fields), "shape": list(self.shape),
                "values": [list(v) for v in self.values]}


def grid_of(cfg: dict) -> Grid:
    """The grid of a scan configuration; ConfigError for an empty or invalid one."""
    sc = cfg["scan"]
    if (sc["grid"] is None) == (sc["points"] is None):
        raise ConfigError("scan: give exactly one of [scan.grid] (a cartesian product of axes) or "
                          "[scan.points] (equal-length lists, one point per position)")
    kind = "product" if sc["grid"] is not None else "points"
    table = sc["grid"] if kind == "product" else sc["points"]
    if not table:
        raise ConfigError(f"scan.{'grid' if kind == 'product' else 'points'}: empty grid (no fields)")
    fields, values = [], []
    for name, vals in table.items():
        f = resolve_field(name)
        where = f"scan.{'grid' if kind == 'product' else 'points'}.{f}"
        if isinstance(vals, (tuple, np.ndarray)):
            vals = list(np.asarray(vals).tolist())
        if not isinstance(vals, list):
            raise ConfigError(f"{where}: expected a list of values, got {vals!r}")
        if not vals:
            raise ConfigError(f"{where}: empty grid (no values)")
        inner = SCANNABLE[f]
        vals = [_coerce(f"{where}[{i}]", inner, v) for i, v in enumerate(vals)]
        if kind == "product" and len(set(vals)) != len(vals):
            raise ConfigError(f"{where}: repeated values {vals}; each point would be computed twice")
        fields.append(f)
        values.append(tuple(vals))
    if kind == "points" and len({len(v) for v in values}) != 1:
        raise ConfigError("scan.points: every field needs the same number of values, got "
                          + ", ".join(f"{f}: {len(v)}" for f, v in zip(fields, values)))
    return Grid(kind, tuple(fields), tuple(values))


# ----------------------------------------------------------------- the plan

@dataclasses.dataclass(frozen=True)
class Group:
    """Points that share every non-batched field (so one program serves them)."""
    number: int
    fields: dict            # the group's values of the scanned non-batched fields
    indices: np.ndarray     # grid indices, ascending


@dataclasses.dataclass(frozen=True)
class Chunk:
    name: str
    group: int
    indices: np.ndarray


@dataclasses.dataclass(frozen=True)
class Plan:
    """The grid cut into groups and fixed-size chunks (a function of the configuration only)."""
    grid: Grid
    groups: list
    chunks: list

    def group_config(self, cfg: dict, g: int) -> dict:
        """The configuration of group g (its non-batched fields set)."""
        out = copy.deepcopy(cfg)
        for f, v in self.groups[g].fields.items():
            sec, key = f.split(".", 1)
            out[sec][key] = v
        return out


def plan(cfg: dict) -> Plan:
    """Groups in order of first appearance in the grid; chunks of `scan.chunk` points each."""
    grid = grid_of(cfg)
    cols = grid.columns()
    keyed = [f for f in grid.fields if f not in BATCHED]
    if keyed:
        rows = np.stack([cols[f].astype(np.float64) for f in keyed], axis=1)
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        label = rank[inverse]
    else:
        label = np.zeros(grid.size, dtype=np.int64)
    size = cfg["scan"]["chunk"]
    groups, chunks = [], []
    order = np.argsort(label, kind="stable")               # each group's points, ascending
    bounds = np.cumsum(np.bincount(label))
    for g in range(len(bounds)):
        idx = order[bounds[g - 1] if g else 0:bounds[g]]
        groups.append(Group(g, {f: cols[f][idx[0]].item() for f in keyed}, idx))
        for c, start in enumerate(range(0, len(idx), size)):
            chunks.append(Chunk(f"g{g:04d}-c{c:06d}", g, idx[start:start + size]))
    return Plan(grid, groups, chunks)


# ----------------------------------------------------------------- per-point outputs

_CURVES = ("train_loss", "test_loss", "alignment", "weight_change.first_layer",
           "weight_change.readout", "error.train_loss", "error.test_loss")


def _derive(src: str, rec: dict, outputs, theta) -> dict:
    """The stored arrays of one source ("theory" or "networks") from its per-point records."""
    out = {}
    curves = [q for q in _CURVES if q in rec]
    if "final" in outputs:
        out.update({f"{src}.final.{q}": rec[q][:, -1] for q in curves})
    if "grokking" in outputs:
        # THEORY.md section 6: first times below theta (NaN, reached False: not within the run)
        from .grokking import crossing_time, grokking_times

        if "test_loss" in rec:
            g = grokking_times(rec["t"], rec["train_loss"], rec["test_loss"], theta)
            out.update({f"{src}.grok.{k}": getattr(g, k) for k in
                        ("t_train", "t_test", "gap", "reached_train", "reached_test")})
        else:
            out[f"{src}.grok.t_train"], out[f"{src}.grok.reached_train"] = \
                crossing_time(rec["t"], rec["train_loss"], theta)
    if "curves" in outputs:
        out["t"] = rec["t"]
        out.update({f"{src}.{q}": rec[q] for q in curves})
    if "predictions" in outputs:
        out.update({f"{src}.{q}": rec[q] for q in ("f_train", "f_test") if q in rec})
    for q in ("diverged_step", "diverged_seeds"):
        if q in rec:
            out[f"{src}.{q}"] = rec[q]
    return out


def _network_records(run) -> dict:
    """Seed means (and standard errors of the mean) of one ensemble, as one point's records."""
    s = run.train_loss.shape[0]
    series = {"train_loss": run.train_loss, "test_loss": run.test_loss, "alignment": run.alignment,
              "weight_change.first_layer": run.weight_change["first_layer"],
              "weight_change.readout": run.weight_change["readout"]}
    rec = {"t": run.t}
    for q, v in series.items():
        if v is None:
            continue
        rec[q] = v.mean(axis=0)
        if q.endswith("loss") and s > 1:
            rec[f"error.{q}"] = v.std(axis=0, ddof=1) / math.sqrt(s)
    rec["f_train"] = run.f_train.mean(axis=0)
    if run.f_test is not None:
        rec["f_test"] = run.f_test.mean(axis=0)
    rec["diverged_seeds"] = np.int64(len(run.info["diverged"]))
    return rec


# ----------------------------------------------------------------- groups at run time

def _error_class(kind: str):
    import dmft

    return {"StoreConflict": StoreConflict, "ConfigError": ConfigError, "ValueError": ValueError,
            "DivergenceError": dmft.DivergenceError, "NotConverged": dmft.NotConverged,
            "FloatingPointError": FloatingPointError}.get(kind, RuntimeError)


class _Comm:
    """This process's place among the processes of `jax.distributed` (one process: no-op)."""

    def __init__(self):
        import jax

        self.count, self.index = jax.process_count(), jax.process_index()

    def allgather(self, blob: bytes) -> list[bytes]:
        """Every process's bytes, on every process (through JAX's collectives)."""
        if self.count == 1:
            return [blob]
        from jax.experimental import multihost_utils

        n = np.asarray(multihost_utils.process_allgather(np.array([len(blob)], np.int32))).reshape(-1)
        buf = np.zeros(max(int(n.max()), 1), np.uint8)
        buf[:len(blob)] = np.frombuffer(blob, np.uint8)
        got = np.asarray(multihost_utils.process_allgather(buf)).reshape(self.count, -1)
        return [got[i, :n[i]].tobytes() for i in range(self.count)]

    def agree(self, fn, first_only: bool = False):
        """Run fn (on process 0 alone with first_only) and share the outcome: every process
        returns process 0's JSON-able result, or raises when fn raised on any process."""
        if self.count == 1:
            return fn()
        result, error = None, None
        if self.index == 0 or not first_only:
            try:
                result = fn()
            except Exception as err:    # noqa: BLE001 - re-raised below, on every process
                error = err
        mine = {"result": result} if error is None else {
            "kind": type(error).__name__, "message": str(error), "errno": getattr(error, "errno", None)}
        got = [json.loads(b) for b in self.allgather(json.dumps(mine).encode())]
        if error is not None:
            raise error
        for i, g in enumerate(got):
            if "kind" in g:
                if g["kind"] == "StoreWriteError":
                    raise StoreWriteError(g["errno"], g["message"])
                raise _error_class(g["kind"])(f"(process {i}) {g['message']}")
        return got[0]["result"]


class _GroupRun:
    """Data, model and program of one group (built, hence validated, on construction)."""

    def __init__(self, cfg: dict, group: Group, columns: dict, sharding, n_devices: int):
        import jax

        import dmft
        from .jobs import build

        self.cfg, self.group, self.columns, self.sharding = cfg, group, columns, sharding
        sc, tr, th, sim = cfg["scan"], cfg["train"], cfg["theory"], cfg["simulate"]
        self.data, model, _, _ = build(cfg)
        self.model = model.replace(gamma0=cfg["model"]["gamma0"])
        self.n_program = -(-min(sc["chunk"], len(group.indices)) // n_devices) * n_devices
        # the batched fields the grid sets (a program batches at least one: gamma0 then)
        self.batched = {BATCHED[f]: f for f in columns if f in BATCHED} or {"gamma0": None}
        self.prog = None
        if sc["theory"]:
            self.prog = dmft.BatchProgram(
                self.model, self.data, eta0=tr["eta0"], steps=tr["steps"], save_every=tr["save_every"],
                fields=tuple(self.batched), method=th["method"],
                samples=th["samples"], replicas=th["replicas"], sampler=th["sampler"],
                weight_decay=tr["weight_decay"], curves="predictions" in sc["outputs"])
            self.theory_key = jax.random.key(th["seed"])
        if sc["networks"]:
            from networks.train import _validate

            _validate(self.model, self.data, sim["width"], sim["seeds"], tr["eta0"], tr["steps"],
                      tr["save_every"], None, sim["antithetic"], False, tr["weight_decay"],
                      sim["max_memory_gb"])
            self.network_key = jax.random.key(sim["seed"])

    @property
    def nbytes(self) -> int:
        d = self.data
        return sum(a.nbytes for a in (d.x_train, d.y_train, d.x_test, d.y_test) if a is not None)

    def compute(self, chunk: Chunk) -> dict:
        sc = self.cfg["scan"]
        idx = chunk.indices
        n = len(idx)
        out = {"index": idx.astype(np.int64)}
        if self.prog is not None:
            # pad to the program's size by repeating the last point; drop the copies
            pad = np.concatenate([idx, np.repeat(idx[-1:], self.n_program - n)])
            values = {b: (self.columns[f][pad].astype(np.float64) if f is not None
                          else np.full(len(pad), self.model.gamma0)) for b, f in self.batched.items()}
            rec = self.prog(values, pad, key=self.theory_key, sharding=self.sharding)
            rec = {k: np.asarray(v)[:n] for k, v in rec.items()}
            out.update(_derive("theory", rec, sc["outputs"], sc["grok_threshold"]))
        if sc["networks"]:
            recs = [self._network_point(int(i)) for i in idx]
            rec = {k: np.stack([r[k] for r in recs]) for k in recs[0]}
            out.update(_derive("networks", rec, sc["outputs"], sc["grok_threshold"]))
        return out

    def _network_point(self, i: int) -> dict:
        import jax

        import dmft
        import networks

        tr, sim, m = self.cfg["train"], self.cfg["simulate"], self.cfg["model"]
        v = {f: self.columns[f][i].item() for f in self.columns if f in BATCHED}
        model = self.model.replace(gamma0=v.get("model.gamma0", m["gamma0"]))
        if "model.eps" in v:
            model = model.replace(activation=dmft.activations.quadratic(v["model.eps"]))
        run = networks.train(model, self.data, width=sim["width"], seeds=sim["seeds"],
                             eta0=v.get("train.eta0", tr["eta0"]), steps=tr["steps"],
                             save_every=tr["save_every"], key=jax.random.fold_in(self.network_key, i),
                             antithetic=sim["antithetic"],
                             weight_decay=v.get("train.weight_decay", tr["weight_decay"]),
                             max_memory_gb=sim["max_memory_gb"])
        return _network_records(run)


class _Groups:
    """Builds each group's `_GroupRun` once; keeps at most KEEP_BYTES of data between uses."""

    KEEP_BYTES = 2 ** 30

    def __init__(self, cfg, pl: Plan, sharding, n_devices):
        self.cfg, self.plan, self.sharding, self.n_devices = cfg, pl, sharding, n_devices
        self.columns = pl.grid.columns()
        self.kept: dict[int, _GroupRun] = {}

    def get(self, g: int) -> _GroupRun:
        if g not in self.kept:
            group = self.plan.groups[g]
            try:
                self.kept[g] = _GroupRun(self.plan.group_config(self.cfg, g), group, self.columns,
                                         self.sharding, self.n_devices)
            except ValueError as err:
                if not group.fields:
                    raise
                where = ", ".join(f"{f} = {v}" for f, v in group.fields.items())
                raise type(err)(f"at {where}: {err}") from err
        return self.kept[g]

    def preflight(self, groups) -> None:
        """Build (and so validate) every group, before any compute or write."""
        total = 0
        for g in sorted(groups):
            total += self.get(g).nbytes
            if total > self.KEEP_BYTES:    # rebuilt when its turn comes
                del self.kept[g]

    def release_before(self, g: int) -> None:
        """Drop the groups numbered below g (done with them)."""
        for k in [k for k in self.kept if k < g]:
            del self.kept[k]


def _point_sharding(devices):
    """A NamedSharding of the point axis over `devices` (None for one device)."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = list(jax.local_devices() if devices is None else devices)
    if len(devices) == 1:
        return None, 1
    return NamedSharding(Mesh(np.array(devices), ("points",)), PartitionSpec("points")), len(devices)


def _identity(cfg: dict) -> dict:
    """What must match for a store to be resumed: configuration, code and number type."""
    import jax
    import jaxlib

    import dmft
    from dmft.io import jsonable

    return {"config": jsonable(cfg), "x64": bool(jax.config.jax_enable_x64),
            "versions": {"dmft": dmft.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__}}


def _traces() -> int:
    from dmft.runner import TRACE_COUNTS

    return sum(v for k, v in TRACE_COUNTS.items() if k == "batch.point" or k.startswith("networks."))


def _pack(arrays: dict, meta: dict) -> bytes:
    return npz_bytes({**arrays, "__meta__": np.frombuffer(json.dumps(meta).encode(), np.uint8)})


def _unpack(blob: bytes) -> tuple[dict, dict]:
    arrays = npz_arrays(blob)
    return arrays, json.loads(arrays.pop("__meta__").tobytes().decode())


# ----------------------------------------------------------------- running

def run(config=None, out: str = "results/scan", *, overrides=(), devices=None,
        progress: bool = False, log=None):
    """Run (or resume) a scan into the store `out`.

    Under `jax.distributed` every process calls this with the same configuration;
    each computes every count-th remaining chunk, and process 0 writes them all.

    Args:
        config: a TOML path, a dict laid out like one, or a `load_config` result.
        out: the store directory (created; a directory holding another scan is refused).
        overrides: "section.key=value" strings applied on top of `config`.
        devices: local devices to shard each chunk over (default: all local devices).
        progress: a progress bar over points (process 0 only).
        log: a callable receiving one-line messages (default: none).

    Returns:
        The `ScanResult` as loaded from the store (process 0), None on other processes.

    Raises:
        ConfigError / ValueError: bad configuration, before anything is computed or written.
        StoreConflict: `out` holds another scan, or is in use.
        StoreWriteError: a write failed (disk full, permissions); finished chunks are kept.
        dmft.DivergenceError, dmft.NotConverged: a solver failed outright (points that
            merely diverge are recorded, not raised).
    """
    import jax

    say = log or (lambda s: None)
    cfg = load_config(config, overrides)
    pl = plan(cfg)
    comm = _Comm()
    identity = _identity(cfg)
    comm.agree(lambda: _same_everywhere(comm, identity))
    # before anything is written: the store must hold this scan or nothing, and every
    # group still to compute must build (data, programs: validated)
    finished = set(comm.agree(lambda: sorted(Store.peek(out, identity)), first_only=True))
    sharding, n_dev = _point_sharding(devices)
    groups = _Groups(cfg, pl, sharding, n_dev)
    comm.agree(lambda: groups.preflight({c.group for c in pl.chunks if c.name not in finished}))
    layout = {"grid": pl.grid.describe(), "chunk_names": [c.name for c in pl.chunks],
              "groups": [{"fields": g.fields, "points": len(g.indices)} for g in pl.groups]}
    holder = {}

    def open_store():
        holder["store"] = Store.create_or_open(out, identity, layout)
        return sorted(holder["store"].finished())

    finished = set(comm.agree(open_store, first_only=True))
    store = holder.get("store")
    todo = [c for c in pl.chunks if c.name not in finished]
    skipped = sum(len(c.indices) for c in pl.chunks if c.name in finished)
    session = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "processes": comm.count,
               "devices": [str(d) for d in (devices or jax.local_devices())],
               "skipped_points": skipped, "status": "running"}
    say(f"scan {out}: {pl.grid.size} points in {len(pl.groups)} group(s), {len(pl.chunks)} chunk(s); "
        f"{skipped} already on disk, {pl.grid.size - skipped} to compute on {comm.count} "
        f"process(es) x {n_dev} device(s)")
    stats = {g.number: {"chunks": 0, "points": 0, "compiles": 0, "seconds": 0.0} for g in pl.groups}
    bar = _bar(pl.grid.size, skipped) if (progress and store is not None and todo) else None
    t0 = time.perf_counter()
    try:
        if store is not None:
            store.manifest["sessions"].append(session)
        comm.agree(lambda: store.save_manifest(), first_only=True)
        for r in range(0, len(todo), comm.count):
            mine = todo[r + comm.index] if r + comm.index < len(todo) else None
            if mine is not None:
                groups.release_before(mine.group)      # chunks come group by group
            blob = b"" if mine is None else _compute(groups, mine, comm)
            blobs = comm.allgather(blob)
            errors = comm.agree(lambda: _write(store, blobs, stats, bar), first_only=True)
            if errors:
                e = errors[0]
                raise _error_class(e["error"])(f"chunk {e['chunk']} (process {e['process']}): "
                                               f"{e['message']}; finished chunks are kept")
    finally:
        if bar is not None:
            bar.close()
        if store is not None:
            done = len(store.finished() & {c.name for c in pl.chunks})
            session.update(seconds=time.perf_counter() - t0,
                           computed_points=sum(s["points"] for s in stats.values()),
                           groups=[dict(stats[g.number], group=g.number) for g in pl.groups],
                           status="complete" if done == len(pl.chunks) else "stopped")
            try:
                store.save_manifest()
            except StoreWriteError:
                pass      # the chunks are what matters, and an error is already on its way
            store.close()
    if comm.count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("dmft scan: store written")
    return load(out) if comm.index == 0 else None


def _same_everywhere(comm: _Comm, identity: dict) -> None:
    ids = comm.allgather(json.dumps(identity, sort_keys=True).encode())
    if len(set(ids)) > 1:
        raise ConfigError("the processes of this scan were given different configurations or "
                          "versions; start every process with the same command")


def _compute(groups: _Groups, chunk: Chunk, comm: _Comm) -> bytes:
    """One chunk's arrays and bookkeeping, packed; a failure is packed too when other
    processes wait for this one (they all raise it after the round)."""
    before, t1 = _traces(), time.perf_counter()
    try:
        arrays = groups.get(chunk.group).compute(chunk)
    except (ArithmeticError, ValueError, RuntimeError) as err:
        if comm.count == 1:
            raise
        return _pack({}, {"chunk": chunk.name, "process": comm.index, "error": type(err).__name__,
                          "message": str(err)})
    return _pack(arrays, {"chunk": chunk.name, "group": chunk.group, "process": comm.index,
                          "seconds": time.perf_counter() - t1, "compiles": _traces() - before})


def _write(store: Store, blobs, stats, bar) -> list:
    """Process 0 writes the round's chunks; returns the failures reported by any process."""
    errors = []
    for blob in blobs:
        if not blob:
            continue
        arrays, meta = _unpack(blob)
        if "error" in meta:
            errors.append(meta)
            continue
        store.write_chunk(meta["chunk"], arrays)
        n = len(arrays["index"])
        store.log(event="chunk", chunk=meta["chunk"], points=n, process=meta["process"],
                  seconds=round(meta["seconds"], 6))
        st = stats[meta["group"]]
        st["chunks"] += 1
        st["points"] += n
        st["compiles"] += meta["compiles"]
        st["seconds"] += meta["seconds"]
        if bar is not None:
            bar.update(n)
    return errors


def _bar(total, initial):
    try:
        from tqdm.auto import tqdm
    except ImportError:   # progress is a nicety
        return None
    return tqdm(total=total, initial=initial, desc="scan", unit="pt", smoothing=0.1)


def init_distributed(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> None:
    """Join JAX's multi-process runtime (for entry points; CPU processes talk through gloo).

    With no arguments JAX detects a cluster (SLURM, ...); else give all three.
    Must run before anything else touches JAX's devices.
    """
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


# ----------------------------------------------------------------- loading

@dataclasses.dataclass
class ScanResult:
    """A scan's results, each array shaped grid.shape + per-point shape.

    Attributes:
        path: the store directory.
        config: the full configuration.
        grid: the `Grid`.
        arrays: name -> array; points not yet computed hold NaN (float), -1 (int) or
            False (bool): read `done`.
        done: grid-shaped bool, True where the point is on disk.
        manifest: the store's manifest (identity, layout, sessions).
    """

    path: str
    config: dict
    grid: Grid
    arrays: dict
    done: np.ndarray
    manifest: dict

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise KeyError(f"{name!r}: not among this scan's outputs ({', '.join(sorted(self.arrays))})")
        return self.arrays[name]

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def coords(self) -> dict[str, np.ndarray]:
        """Each scanned field's value at every point, grid-shaped."""
        return {f: c.reshape(self.grid.shape) for f, c in self.grid.columns().items()}

    def summary(self) -> str:
        """A table: groups (points, time, compilations) and the range of every scalar output."""
        return summary(self)

    def heatmap(self, name: str, x: str, y: str, **kw):
        return heatmap(self, name, x, y, **kw)

    def lines(self, name: str, x: str, **kw):
        return lines(self, name, x, **kw)


def load(out) -> ScanResult:
    """Read a store back as arrays shaped by the grid (finished points only)."""
    store = Store.read(out)
    man = store.manifest
    cfg = man["identity"]["config"]
    grid = grid_of(cfg)
    names = set(man.get("chunk_names", []))
    chunks = [store.read_chunk(n) for n in sorted(store.finished() & names)]
    arrays, done = {}, np.zeros(grid.size, dtype=bool)
    for ch in chunks:
        idx = ch["index"]
        done[idx] = True
        for k, v in ch.items():
            if k == "index":
                continue
            if k not in arrays:
                fill = (np.nan if np.issubdtype(v.dtype, np.floating) else
                        False if v.dtype == np.bool_ else -1)
                arrays[k] = np.full((grid.size,) + v.shape[1:], fill, dtype=v.dtype)
            arrays[k][idx] = v
    arrays = {k: v.reshape(grid.shape + v.shape[1:]) for k, v in arrays.items()}
    return ScanResult(os.fspath(out), cfg, grid, arrays, done.reshape(grid.shape), man)


# ----------------------------------------------------------------- summary and figures

def _fmt(v) -> str:
    return "nan" if not np.isfinite(v) else f"{v:.4g}"


def summary(res: ScanResult) -> str:
    lines_ = []
    n, k = res.grid.size, int(res.done.sum())
    sess = (res.manifest.get("sessions") or [{}])[-1]
    head = f"scan {res.path}: {k} of {n} points done"
    if "computed_points" in sess:
        c, s = sess["computed_points"], sess["seconds"]
        head += (f" ({c} computed now in {s:.2f} s" + (f", {c / s:.1f} points/s" if c and s > 0 else "")
                 + f"; {sess['skipped_points']} found on disk)")
    lines_.append(head)
    groups = res.manifest.get("groups", [])
    per = {g["group"]: g for g in sess.get("groups", [])}
    if groups:
        lines_.append(f"{'group':>5}  {'fields':<28} {'points':>7} {'chunks now':>10} {'compiles':>8} "
                      f"{'seconds':>8} {'points/s':>9}")
        for i, g in enumerate(groups):
            st = per.get(i, {})
            fields = " ".join(f"{f}={v:g}" for f, v in g["fields"].items()) or "(all points)"
            rate = st.get("points", 0) / st["seconds"] if st.get("seconds") else float("nan")
            lines_.append(f"{i:>5}  {fields:<28} {g['points']:>7} {st.get('chunks', 0):>10} "
                          f"{st.get('compiles', 0):>8} {st.get('seconds', 0.0):>8.2f} {_fmt(rate):>9}")
    scalars = [q for q, v in sorted(res.arrays.items()) if v.ndim == len(res.grid.shape)]
    if scalars:
        lines_.append(f"{'output':<40} {'min':>10} {'median':>10} {'max':>10} {'non-finite':>10}")
        for q in scalars:
            if res.arrays[q].dtype == np.bool_:
                lines_.append(f"{q:<40} true at {int(res.arrays[q][res.done].sum())} of {k} points")
                continue
            v = res.arrays[q][res.done].astype(np.float64)
            fin = v[np.isfinite(v)]
            stat = (np.min(fin), np.median(fin), np.max(fin)) if fin.size else (np.nan,) * 3
            if q.endswith("diverged_step"):
                lines_.append(f"{q:<40} {int(np.sum(v >= 0))} of {v.size} points diverged")
                continue
            lines_.append(f"{q:<40} {_fmt(stat[0]):>10} {_fmt(stat[1]):>10} {_fmt(stat[2]):>10} "
                          f"{v.size - fin.size:>10}")
    return "\n".join(lines_)


def _select(res: ScanResult, name: str, keep: list, at: dict | None) -> np.ndarray:
    """res[name] with every axis but `keep` fixed by `at` (or of length one); axes in `keep` order."""
    if res.grid.kind != "product":
        if len(res.grid.fields) == 1 and keep == [res.grid.fields[0]]:
            return res[name]
        raise ValueError("figures need a product grid ([scan.grid]), or a points grid over one field")
    at = {resolve_field(k, "at"): v for k, v in (at or {}).items()}
    v = res[name]
    if v.ndim != len(res.grid.shape):
        raise ValueError(f"{name}: not one number per point (shape {v.shape}); plot a final value "
                         "or a grokking time")
    index = []
    for f, vals in zip(res.grid.fields, res.grid.values):
        if f in keep:
            index.append(slice(None))
        elif f in at:
            hits = [i for i, x in enumerate(vals) if np.isclose(x, at[f])]
            if not hits:
                raise ValueError(f"at: {f}={at[f]} is not on the grid ({list(vals)})")
            index.append(hits[0])
        elif len(vals) == 1:
            index.append(0)
        else:
            raise ValueError(f"fix {f} with at={{'{f}': value}} (values {list(vals)})")
    sub = v[tuple(index)]
    kept = [f for f in res.grid.fields if f in keep]
    return np.transpose(sub, [kept.index(f) for f in keep])


def _axis_values(res, f):
    return np.asarray(res.grid.values[res.grid.fields.index(f)], dtype=np.float64)


def heatmap(res: ScanResult, name: str, x: str, y: str, *, at: dict | None = None,
            logx: bool = True, logy: bool = True, logc: bool = False, ax=None):
    """A heatmap of one number per point over two grid axes (others fixed by `at`)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    x, y = resolve_field(x, "x"), resolve_field(y, "y")
    z = _select(res, name, [y, x], at)
    xs, ys = _axis_values(res, x), _axis_values(res, y)
    z = z[np.argsort(ys)][:, np.argsort(xs)]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.2), constrained_layout=True)
    norm = LogNorm() if logc else None
    mesh = ax.pcolormesh(_edges(xs, logx), _edges(ys, logy), z, norm=norm, shading="flat")
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.figure.colorbar(mesh, ax=ax, label=name)
    return fig or ax.figure


def _edges(v, log):
    """Cell edges around sorted axis values (geometric midpoints on a log axis)."""
    v = np.sort(v)
    if len(v) == 1:
        return np.array([v[0] / 2, v[0] * 2]) if log else np.array([v[0] - 0.5, v[0] + 0.5])
    w = np.log(v) if log else v
    mid = (w[1:] + w[:-1]) / 2
    e = np.concatenate([[2 * w[0] - mid[0]], mid, [2 * w[-1] - mid[-1]]])
    return np.exp(e) if log else e


def lines(res: ScanResult, name: str, x: str, *, hue: str | None = None, at: dict | None = None,
          logx: bool = True, logy: bool = False, ax=None):
    """One number per point against one grid axis, one line per value of `hue`."""
    import matplotlib.pyplot as plt

    x = resolve_field(x, "x")
    keep = [x] if hue is None else [resolve_field(hue, "hue"), x]
    z = _select(res, name, keep, at)
    xs = _axis_values(res, x) if res.grid.kind == "product" else np.asarray(res.grid.values[0], float)
    order = np.argsort(xs)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.2), constrained_layout=True)
    if hue is None:
        ax.plot(xs[order], z[order], "o-")
    else:
        for hv, row in zip(_axis_values(res, keep[0]), z):
            ax.plot(xs[order], row[order], "o-", label=f"{keep[0]} = {hv:g}")
        ax.legend(fontsize=8)
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    ax.set_xlabel(x)
    ax.set_ylabel(name)
    ax.grid(True, alpha=0.3)
    return fig or ax.figure

