"""The grid of a scan and its plan: groups of one shape, chunks of fixed size.

Chunk boundaries depend on the grid and `scan.chunk` only, and a point draws its
randomness from fold_in(key, id), its id a digest of its own coordinates (`point_ids`), so
a point's draws do not depend on devices, processes, interruptions, or the other points of the
grid; its numbers do bit for bit where its compiled program (its width, min(scan.chunk, the
group's points), and the devices it is sharded over) stays the same, else to rounding (5e-16
relative in the losses, 7e-15 in their standard errors: another compiled program).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import warnings

import numpy as np

from dmft.batch import CV_ADVICE
from dmft.errors import ConfigError, Float32Warning, warn

from .. import problem as _problem
from .schema import coerce_value, kind_of, resolve_field

__all__ = ["Grid", "Group", "Chunk", "Plan", "grid_of", "plan", "point_ids", "point_digests", "PartCache", "NOT_READ",
           "point_warnings", "point_where"]


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
    model_kind = kind_of(cfg)
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
        f = resolve_field(name, "scan.grid", model_kind)
        where = f"scan.{'grid' if kind == 'product' else 'points'}.{f}"
        if isinstance(vals, (tuple, np.ndarray)):
            vals = list(np.asarray(vals).tolist())
        if not isinstance(vals, list):
            raise ConfigError(f"{where}: expected a list of values, got {vals!r}")
        if not vals:
            raise ConfigError(f"{where}: empty grid (no values)")
        vals = [coerce_value(f, f"{where}[{i}]", v, model_kind) for i, v in enumerate(vals)]
        if kind == "product" and len(set(vals)) != len(vals):
            raise ConfigError(f"{where}: repeated values {vals}; each point would be computed twice")
        fields.append(f)
        values.append(tuple(vals))
    if kind == "points" and len({len(v) for v in values}) != 1:
        raise ConfigError("scan.points: every field needs the same number of values, got "
                          + ", ".join(f"{f}: {len(v)}" for f, v in zip(fields, values)))
    if kind == "points":
        rows = list(zip(*values))
        repeated = sorted({i for i, r in enumerate(rows) if rows.index(r) != i})
        if repeated:
            raise ConfigError(f"scan.points: point {repeated[0]} repeats point {rows.index(rows[repeated[0]])} "
                              f"({dict(zip(fields, rows[repeated[0]]))}); each point would be computed twice, "
                              "with the same numbers")
    return Grid(kind, tuple(fields), tuple(values))


# ----------------------------------------------------------------- the points' keys

# the fields each part of a point does not read (prefixes, or whole names): its key ignores
# them, so a width scan has one theory and the networks of a samples scan are one ensemble
# ("train.seed..." are the deep-linear networks' fields)
NOT_READ = {"theory": ("simulate.", "train.seeds", "train.seed", "train.probe", "train.dtype"),
            "networks": ("theory.",)}


def _reads(field: str, part: str, kind_name: str, values: dict) -> bool:
    if any(field == n or (n.endswith(".") and field.startswith(n)) for n in NOT_READ[part]):
        return False
    # a deep-linear SDE does not see the width, unless init_scale = 0 sets the scale from it
    return not (kind_name == "deep_linear" and part == "theory" and field == "model.width"
                and values.get("model.init_scale", 0.0) > 0)


# a two-layer point's minibatch settings: read only where it runs SGD (0 < batch_size < P)
_SGD = ("train.batch_size", "train.batch_seed")


def _full_batch(values: dict, npz: bool) -> bool:
    """Whether a two-layer point runs full-batch descent (`problem.sgd_batch`: batch_size 0, or at
    least task.P; a data file's P is not a coordinate: there only 0 counts)."""
    return not _problem.sgd_batch({"batch_size": values.get("train.batch_size", 0.0)},
                                  None if npz else values.get("task.P"))


def point_digests(cfg: dict, columns: dict, indices, part: str) -> list[bytes]:
    """Each point's SHA-256 for `part` ("theory" or "networks"): a digest of the part's name and
    the value at the point of every scannable field that part reads (the grid's coordinate, or
    the configuration's value). Equal digests mean the part computes the same thing (the rest of
    the configuration is the scan's), which `PartCache` uses; `point_ids` folds four of its bytes
    into the part's key. A full-batch two-layer point reads neither train.batch_size nor
    train.batch_seed (they set only SGD), so its digest is the one it had before they existed."""
    if part not in NOT_READ:
        raise ValueError(f"part: one of {list(NOT_READ)}, got {part!r}")
    kind = kind_of(cfg)
    npz = cfg.get("task", {}).get("name") == "npz"
    base = {f: cfg[f.split(".", 1)[0]][f.split(".", 1)[1]] for f in kind.scannable if f not in columns}
    out = []
    for i in np.asarray(indices).reshape(-1):
        values = {**base, **{f: col[i] for f, col in columns.items()}}
        values = {f: float(v) + 0.0 for f, v in values.items()}          # (-0.0 reads 0.0)
        unread = _SGD if kind.name == "two_layer" and _full_batch(values, npz) else ()
        text = ";".join([part] + [f"{f}={values[f]!r}" for f in sorted(values)
                                  if f not in unread and _reads(f, part, kind.name, values)])
        out.append(hashlib.sha256(text.encode()).digest())
    return out


def point_ids(cfg: dict, columns: dict, indices, part: str) -> np.ndarray:
    """(n,) uint32 in [0, 2^31 - 1]: each point's id for `part` ("theory" or "networks"), folded
    into that part's key: four bytes of its `point_digests`, so a point draws the same numbers in
    any grid that holds it (extended, reordered, or another axis scanned beside it at the
    configuration's value), and the theory and the networks of one point never share a key (with
    sampler "mc" and equal seeds, replica j's nodes were network seed j's weights). Two distinct
    points share an id with probability ~ n^2 / 2^32 (their draws then coincide; their
    parameters do not)."""
    digests = point_digests(cfg, columns, indices, part)
    return np.array([int.from_bytes(d[:4], "little") & 0x7FFFFFFF for d in digests], np.uint32)


class PartCache:
    """One part's per-point outputs within a run, by the point's full digest (`point_digests`):
    a point whose part reads the same values as a point computed before is not computed again (a
    width scan's theory, a scan of theory.samples' networks). The oldest entries go past
    `max_bytes`; a missing entry is only computed again."""

    def __init__(self, max_bytes: int = 2 ** 28):
        self.max_bytes, self.nbytes, self.rows, self.hits = max_bytes, 0, {}, 0

    def rows_of(self, digests: list, compute) -> dict:
        """The stacked outputs of the points `digests`; `compute(positions)` gives a dict of
        arrays with a leading axis over those positions (of `digests`) for the points not kept."""
        fresh = {}
        for j, d in enumerate(digests):
            if d in self.rows:
                fresh[d] = self.rows[d]
            elif d not in fresh:
                fresh[d] = j
        todo = [j for j in fresh.values() if isinstance(j, int)]
        self.hits += len(digests) - len(todo)
        if todo:
            got = compute(np.asarray(todo))
            for n, j in enumerate(todo):
                fresh[digests[j]] = row = {k: np.asarray(v[n]) for k, v in got.items()}
                self._keep(digests[j], row)
        return {k: np.stack([fresh[d][k] for d in digests]) for k in fresh[digests[0]]}

    def _keep(self, digest: bytes, row: dict) -> None:
        size = sum(v.nbytes for v in row.values())
        self.rows[digest] = row
        self.nbytes += size
        while self.nbytes > self.max_bytes and self.rows:
            old = next(iter(self.rows))
            self.nbytes -= sum(v.nbytes for v in self.rows.pop(old).values())


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

    def layout(self) -> dict:
        """The store's fixed record of this plan: grid, chunk names, groups."""
        return {"grid": self.grid.describe(), "chunk_names": [c.name for c in self.chunks],
                "groups": [{"fields": g.fields, "points": len(g.indices)} for g in self.groups]}

    def expected(self) -> dict:
        """Chunk name -> {"index": its grid indices, "coords": {field: its points' values}}: what
        the store checks each chunk file against."""
        cols = self.grid.columns()
        return {c.name: {"index": c.indices, "coords": {f: col[c.indices] for f, col in cols.items()}}
                for c in self.chunks}

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
    kind = kind_of(cfg)
    # points of one group share one program: the two-layer kind splits groups by every field it
    # does not batch; a deep-linear point runs alone, so all its points form one group
    keyed = [] if kind.pointwise else [f for f in grid.fields if f not in kind.batched]
    # and a batched weight decay splits its points without decay from those with: a program that
    # batches the decay has no control variate (the decay moves the kernel), so a point at 0 read
    # other numbers (0.4926 +- 0.037 against dmft.solve's 0.5022 +- 0.017) than in a grid
    # without that axis; on its own it is solved as dmft.solve solves it
    split = [] if kind.pointwise or "train.weight_decay" not in grid.fields else [cols["train.weight_decay"] > 0]
    if keyed or split:
        rows = np.stack([cols[f].astype(np.float64) for f in keyed] + [c.astype(np.float64) for c in split], axis=1)
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


class point_warnings:
    """The warnings raised while grid point i computes, raised again with the point and its
    scanned values after the message ("networks.train: every one of 2 seeds diverged ... (scan grid
    point 1: train.eta0 = 1e+06)"): inside a scan such a warning said "at width 4", not which point.
    Only UserWarnings are taken (every one, each point's own); a `dmft.errors.Float32Warning`, the
    same at every point, is raised again as it was, and other categories pass as they would. The
    point follows the message, so a filter on its start still applies; a filter turning it into an
    error acts when the point is done. A context manager; a class, so that no frame outside the
    packages stands between it and the user's call (`dmft.errors.warn` names the user's line)."""

    def __init__(self, columns: dict, i):
        # i: one point, or a batch's points (the theory's program: then `marked`, set inside the
        # block, are the points its flags name, those the warning is about)
        self.columns, self.i, self.marked = columns, i, None
        self._catch = warnings.catch_warnings(record=True)

    def __enter__(self):
        self._caught = self._catch.__enter__()
        warnings.simplefilter("always", UserWarning)

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        if np.ndim(self.i) == 0:
            where = f"scan grid point {self.i}: {point_where(self.columns, self.i)}"
        else:               # (a batch's solve_batch warning counted its points, named none)
            pts = [int(j) for j in (self.i if self.marked is None or not len(self.marked) else self.marked)]
            where = ("scan grid point(s) " + "; ".join(f"{j}: {point_where(self.columns, j)}" for j in pts[:6])
                     + (f"; and {len(pts) - 6} more (res.summary() names them)" if len(pts) > 6 else ""))
        for w in self._caught:
            if not issubclass(w.category, UserWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            elif issubclass(w.category, Float32Warning):
                warn(str(w.message), w.category)
            else:
                text = str(w.message)
                if np.ndim(self.i) and text.endswith(CV_ADVICE):    # (advice a scan cannot take)
                    text = (text[:-len(CV_ADVICE)] + ". A scan has no control_variate setting: the solver sets "
                            "the correction aside by itself where a point diverged or ended unresolved with it; "
                            "theory.control_variate_noisy and theory.control_variate_off mark the points")
                    text = text.replace("res['control_variate_noisy']", "theory.control_variate_noisy").replace(
                        "res['control_variate_off']", "theory.control_variate_off")
                warn(f"{text} ({where})", w.category)
        return False


def point_where(columns: dict, i: int) -> str:
    """Grid point i's scanned values, "field = value, ..." (floats as %g), for messages."""
    def shown(value):
        value = value.item() if hasattr(value, "item") else value
        return f"{value:g}" if isinstance(value, float) else str(value)
    return ", ".join(f"{f} = {shown(columns[f][i])}" for f in columns)
