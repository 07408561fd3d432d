"""A scan's results as arrays shaped like its grid, with a summary and figures.

    from experiments import scan
    res = scan.load("results/scan")                  # finished points; res.done marks them
    res["theory.final.test_loss"]                    # an array shaped like the grid
    res.heatmap("theory.grok.gap", x="gamma0", y="P").savefig("gap.png")
    print(res.summary())
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re

import numpy as np

from dmft.errors import InputError, StoreConflict
from dmft.plotting import new_figure

from ..store import Store, atomic_write, text_bytes
from .grid import Grid, grid_of, plan
from .schema import SETTINGS, kind_of, resolve_field

__all__ = ["ScanResult", "load", "summary", "last_session", "heatmap", "lines", "final_time_label", "write_report",
           "REPORT"]

# the store's human-readable report, rewritten at the end of every session (nothing reads it back)
REPORT = "report.md"


# ----------------------------------------------------------------- loading

# "name[i]": entry i of a per-point vector output (ScanResult.__getitem__)
_ENTRY = re.compile(r"(.+)\[(-?[0-9]+)\]")


class UnknownOutput(InputError, KeyError):
    """A name that is not among a scan's outputs: an InputError (the project's one error for bad
    input, as every figure's argument) that is also the KeyError of a mapping's lookup."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


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
        damaged: chunk file -> what is wrong with it (those points are not done).
    """

    path: str
    config: dict
    grid: Grid
    arrays: dict
    done: np.ndarray
    manifest: dict
    damaged: dict = dataclasses.field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        """The output `name`, grid-shaped; "name[i]" is entry i of an output with one number per
        entry at each point (a deep linear scan's modes: "theory.final.modes_mean[0]", the
        strongest mode), so that it can be drawn as one number per point."""
        if name not in self.arrays and not self.arrays:
            raise UnknownOutput(f"{name!r}: no point of this scan is done yet (res.done is all False), so it has "
                           "no outputs; rerun the scan to compute them")
        entry = _ENTRY.fullmatch(name)
        if name not in self.arrays and entry and entry.group(1) in self.arrays:
            base, i = entry.group(1), int(entry.group(2))
            v = self.arrays[base]
            if v.ndim != len(self.grid.shape) + 1:
                raise UnknownOutput(f"{name!r}: {base} has shape {v.shape[len(self.grid.shape):]} at each point; "
                                    "an entry [i] picks from one axis of them")
            if not -v.shape[-1] <= i < v.shape[-1]:
                raise UnknownOutput(f"{name!r}: {base} has {v.shape[-1]} entries at each point (i from 0 to "
                                    f"{v.shape[-1] - 1})")
            return v[..., i]
        if name not in self.arrays:
            raise UnknownOutput(f"{name!r}: not among this scan's outputs ({', '.join(sorted(self.arrays))})")
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

    def last_session(self) -> str:
        """What became of the last session (`last_session`): complete, stopped, running, killed."""
        return last_session(self)

    def heatmap(self, name: str, x: str, y: str, **kw):
        return heatmap(self, name, x, y, **kw)

    def lines(self, name: str, x: str, **kw):
        return lines(self, name, x, **kw)


def load(out) -> ScanResult:
    """Read a store back as arrays shaped by the grid (finished, verified points only).

    A bad chunk file (truncated, emptied, corrupted, swapped, not recorded in the manifest or
    its journal, its journal record cut short by a kill or edited, holding other outputs or
    coordinates than its group's, recorded but gone) is not read: its points stay not done and
    `ScanResult.damaged` names the file and what is wrong (rerun the scan to compute them again).

    Raises:
        StoreConflict: no store at `out`, or a manifest that is damaged, edited, incomplete or
            disagrees with the plan of its own configuration.
    """
    from .grid import plan

    store = Store.read(out)
    man = store.manifest
    cfg = copy.deepcopy(man["identity"]["config"])
    settings = man.get("settings") or {}
    allowed = {f"{sec}.{key}" for sec, key in SETTINGS}
    if not isinstance(settings, dict) or set(settings) - allowed:
        raise StoreConflict(f"{out}: the manifest's settings hold fields that are not settings "
                            f"({sorted(set(settings) - allowed) if isinstance(settings, dict) else settings!r}; "
                            f"only {sorted(allowed)} are kept outside the identity): edited or damaged")
    for name, value in settings.items():    # limits kept out of the identity
        sec, _, key = name.partition(".")
        if isinstance(cfg.get(sec), dict):
            cfg[sec][key] = value
    try:
        pl = plan(cfg)
    except Exception as err:  # noqa: BLE001 - a configuration that gives no plan is damage
        raise StoreConflict(f"{store.path}/manifest.json: its configuration does not give a grid "
                            f"({err})") from None
    grid = pl.grid
    store.check_layout(pl.layout())
    good, damaged = store.read_all(pl.expected())
    chunks = [good[n] for n in sorted(good)]
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
    return ScanResult(os.fspath(out), cfg, grid, arrays, done.reshape(grid.shape), man,
                      {os.path.basename(store.chunk_path(n)): r for n, r in damaged.items()})


# ----------------------------------------------------------------- summary and figures

def _fmt(v) -> str:
    return "nan" if not np.isfinite(v) else f"{v:.4g}"


def last_session(res: ScanResult) -> str:
    """What became of the store's last session: "complete", "stopped" (it ended early, by an
    error or Ctrl-C, and said so), "running" (its process still holds the store), "killed ..."
    (its manifest still says running, but no process holds the store any more: killed outright,
    e.g. SIGKILL or a lost machine; rerun to resume), or "none" (no session yet)."""
    sessions = res.manifest.get("sessions") or []
    if not sessions:
        return "none"
    status = str(sessions[-1].get("status", "unknown"))
    if status != "running":
        return status
    holder = Store.lock_holder(res.path)
    if holder is None or holder["alive"] is False:
        who = "" if holder is None else f" (process {holder['process']} no longer runs)"
        return f"was killed before it could say so{who}; rerun the scan to resume"
    if holder["alive"] is None:
        return f"is running on {holder['host']} (process {holder['process']}), or was killed there"
    return f"is running (process {holder['process']})"


def summary(res: ScanResult) -> str:
    """Points done, the work of every session (points, chunks, compilations, seconds), damaged
    chunk files, and the range of every scalar output."""
    lines_ = []
    n, k = res.grid.size, int(res.done.sum())
    sessions = res.manifest.get("sessions") or []
    total = {"points": 0, "seconds": 0.0, "theory_reused": 0, "networks_reused": 0}
    per: dict[int, dict] = {}
    for sess in sessions:
        total["points"] += sess.get("computed_points", 0)
        total["seconds"] += sess.get("seconds", 0.0)
        for g in sess.get("groups", []):
            for part in ("theory_reused", "networks_reused"):
                total[part] += g.get(part, 0)
            acc = per.setdefault(g["group"], {"chunks": 0, "points": 0, "compiles": 0, "seconds": 0.0})
            for key in acc:
                acc[key] += g.get(key, 0)
    head = f"scan {res.path}: {k} of {n} points done"
    if sessions:
        rate = total["points"] / total["seconds"] if total["seconds"] > 0 else float("nan")
        last = sessions[-1]
        head += (f" ({last.get('computed_points', 0)} computed by the last session; {total['points']} computed"
                 f" over {len(sessions)} session(s) in {total['seconds']:.2f} s, {_fmt(rate)} points/s)")
        reused = [f"{total[p + '_reused']} took the {p} another point computed" for p in ("theory", "networks")
                  if total[p + "_reused"]]
        if reused:          # (a width scan solves its theory once; a scan of theory settings trains once)
            head += f"; of the points computed, {' and '.join(reused)}"
        state = last_session(res)
        if state != "complete":
            head += f"; the last session {state}"
    lines_.append(head)
    if res.damaged:
        lines_.append(f"damaged chunk files (not read; rerun the scan to recompute): "
                      + ", ".join(f"{name} ({why})" for name, why in sorted(res.damaged.items())))
    groups = res.manifest.get("groups", [])
    if groups:
        lines_.append(f"{'group':>5}  {'fields':<28} {'points':>7} {'chunks':>7} {'compiles':>8} "
                      f"{'seconds':>8} {'points/s':>9}")
        decay = _decay_labels(res, len(groups))
        for i, g in enumerate(groups):
            st = per.get(i, {})
            fields = " ".join([f"{f}={v:g}" for f, v in g["fields"].items()] + decay[i:i + 1]) or "(all points)"
            rate = st.get("points", 0) / st["seconds"] if st.get("seconds") else float("nan")
            lines_.append(f"{i:>5}  {fields:<28} {g['points']:>7} {st.get('chunks', 0):>7} "
                          f"{st.get('compiles', 0):>8} {st.get('seconds', 0.0):>8.2f} {_fmt(rate):>9}")
    for src in sorted({q.split(".final.")[0] for q in res.arrays if ".final." in q}):
        when = final_time_label(res, f"{src}.final.x")
        if when:
            lines_.append(f"{src} final values: {when}")
    scalars = [q for q, v in sorted(res.arrays.items()) if v.ndim == len(res.grid.shape)]
    if scalars:
        lines_.append(f"{'output':<40} {'min':>10} {'median':>10} {'max':>10} {'non-finite':>10}")
        for q in scalars:
            if res.arrays[q].dtype == np.bool_:      # (a solver's flag names its points, as the diverged)
                lines_.append(f"{q:<40} true at {int(res.arrays[q][res.done].sum())} of {k} points"
                              + (_where(res, res.arrays[q], lambda i: "") if q.endswith(_FLAGS) else ""))
                continue
            v = res.arrays[q][res.done].astype(np.float64)
            fin = v[np.isfinite(v)]
            stat = (np.min(fin), np.median(fin), np.max(fin)) if fin.size else (np.nan,) * 3
            if q.endswith("diverged_step"):
                lines_.append(f"{q:<40} {int(np.sum(v >= 0))} of {v.size} points diverged"
                              + _where(res, res.arrays[q] >= 0, lambda i: f" (step {int(res.arrays[q].flat[i])})"))
                continue
            if q.endswith("diverged_seeds"):     # (their seed means are NaN: a min/median/max said not where)
                lines_.append(f"{q:<40} seeds diverged at {int(np.sum(v > 0))} of {v.size} points"
                              + _where(res, res.arrays[q] > 0, lambda i: f" ({int(res.arrays[q].flat[i])} seeds)"))
                continue
            lines_.append(f"{q:<40} {_fmt(stat[0]):>10} {_fmt(stat[1]):>10} {_fmt(stat[2]):>10} "
                          f"{v.size - fin.size:>10}")
    lines_ += node_bias_lines(res)
    return "\n".join(lines_)


# per-point flags a solver raises (its warning said how many points, not which): the summary names them
_FLAGS = ("heavy_tailed", "control_variate_noisy", "control_variate_off")


def _none_read(name: str, z):
    """`z` with an output's "none" code as no value, and what the legend calls a computed point
    without one: theory.diverged_step's -1 (it did not diverge) was drawn as the step -1."""
    if name.endswith("diverged_step"):
        return np.where(np.asarray(z, float) < 0, np.nan, z), "did not diverge (-1)"
    return z, "no value (not reached or diverged)"


def node_bias_flags(res: ScanResult, prefix: str = "theory.node", sigma: float = 5.0,
                    rel: float | None = None) -> np.ndarray | None:
    """Grid-shaped bool: the points whose final loss's node-count shift (scan.node_check's
    `prefix`.z, the test loss's, or `prefix` = "theory.node.train" the train loss's) passes the
    validate job's node bias bound: `validation.verdicts.z_bound` at its dof, the normal tail
    beyond `sigma` shared among the points judged, plus `rel` (default: check.node_bias_rel's
    0.5) times the loss's own standard error over the shift's (`prefix`.full_se; in a store
    written before it, theory.final.error.*, where the scan keeps it). False where a point is not
    done or has no z (one replica, a control variate set apart); None without scan.node_check."""
    from validation.verdicts import TOLERANCES, node_bias_bound

    if f"{prefix}.z" not in res.arrays:
        return None
    rel = TOLERANCES["node_bias_rel"] if rel is None else rel
    z, dof, sse = (np.asarray(res.arrays[f"{prefix}.{k}"], float) for k in ("z", "dof", "shift_se"))
    se = res.arrays.get(f"{prefix}.full_se")
    if se is None:               # (a store written before node_check kept the loss's own error)
        loss = "train" if prefix.endswith(".train") or "theory.node.train.z" not in res.arrays and \
            "theory.final.error.test_loss" not in res.arrays else "test"
        se = res.arrays.get(f"theory.final.error.{loss}_loss")
    se = np.zeros(z.shape) if se is None else np.asarray(se, float)
    ok = _node_judged(res, prefix)
    return ok & (np.abs(z) > node_bias_bound(sigma, dof, ok, rel, se, sse))


def _node_judged(res: ScanResult, prefix: str) -> np.ndarray:
    """The done points whose `prefix`.z has an error to be judged against (finite z, dof > 0)."""
    z, dof = (np.asarray(res.arrays[f"{prefix}.{k}"], float) for k in ("z", "dof"))
    return res.done & np.isfinite(z) & (dof > 0)


def node_bias_lines(res: ScanResult) -> list[str]:
    """The summary's node-bias lines (`node_bias_flags`, test and train loss): at how many points the
    final loss's node-count shift passes the validate job's bound ([] without scan.node_check)."""
    out = []
    for prefix in ("theory.node", "theory.node.train"):
        flags = node_bias_flags(res, prefix)
        if flags is None:
            continue
        judged = int(_node_judged(res, prefix).sum())
        out.append(f"{prefix}.z: node-count bias past the node bias check's bound (5 sigma shared among the "
                   f"{judged} points with an error, + 0.5 of the loss's own error) at {int(flags.sum())} of them"
                   + (f": {', '.join(_point_label(res, i) for i in np.flatnonzero(flags.ravel())[:5])}"
                      if flags.any() else ""))
    return out


COARSE_LABEL = "coarse (the saves do not resolve the crossing)"


def coarse_flags(res: ScanResult, name: str) -> np.ndarray | None:
    """Grid-shaped flags of the points whose grokking time `name` (SOURCE.grok.t_train, t_test or
    gap) lies in a save interval over which its loss fell more than COARSE_FALL-fold
    (SOURCE.grok.coarse_*: the interpolated time may lie anywhere in it); None for another output."""
    m = re.fullmatch(r"(.+)\.grok\.(t_train|t_test|gap)", name)
    if not m:
        return None
    parts = ("train", "test") if m.group(2) == "gap" else (m.group(2)[2:],)
    flags = [res.arrays.get(f"{m.group(1)}.grok.coarse_{p}") for p in parts]
    if any(f is None for f in flags):
        return None
    return np.logical_or.reduce([np.asarray(f, bool) for f in flags]) & res.done


def _where(res: ScanResult, flags: np.ndarray, detail, most: int = 5) -> str:
    """": <label> <detail(i)>; ..." for the first `most` done points i where `flags`, "" where none."""
    at = np.flatnonzero(np.asarray(flags, bool).ravel() & res.done.ravel())
    if not at.size:
        return ""
    more = f"; ... {at.size - most} more" if at.size > most else ""
    return ": " + "; ".join(_point_label(res, int(i)) + detail(int(i)) for i in at[:most]) + more


def _point_label(res: ScanResult, i: int) -> str:
    """Grid point i's scanned values, as "gamma0=1 P=64"."""
    return " ".join(f"{f.rpartition('.')[2]}={c[i]:g}" for f, c in res.grid.columns().items())


def _decay_labels(res: ScanResult, n: int) -> list[str]:
    """Where a two-layer scan batches train.weight_decay, its groups hold the points without decay
    apart from those with (`grid.plan`: a program that batches the decay has no control variate):
    each group's "train.weight_decay=0" or ">0" ([] otherwise; they all read "(all points)"
    before, two groups of 2 points each)."""
    if "train.weight_decay" not in res.grid.fields or kind_of(res.config).pointwise:
        return []
    cols = res.grid.columns()["train.weight_decay"]
    groups = plan(res.config).groups
    if len(groups) != n:
        return []
    return ["train.weight_decay" + ("=0" if not np.any(cols[g.indices] > 0) else ">0") for g in groups]


def example_figure(res: ScanResult) -> str | None:
    """A figure call that runs on this scan, as report.md shows it ("res.heatmap(...)" or
    "res.lines(...)"), on a final loss or the first float output; None where no figure fits (a
    points grid over several fields, or no scalar float output)."""
    g = res.grid
    floats = [q for q in sorted(res.arrays) if res.arrays[q].ndim == len(g.shape)
              and np.issubdtype(res.arrays[q].dtype, np.floating)]
    name = next((q for q in ("theory.final.test_loss", "networks.final.test_loss", "theory.final.train_loss")
                 if q in floats), floats[0] if floats else None)
    if name is None or (g.kind != "product" and len(g.fields) != 1):
        return None
    fields = list(g.fields)
    rest = {f: vals[0] for f, vals in zip(g.fields, g.values)}
    if len(fields) == 1 or g.kind != "product":
        return f"res.lines({name!r}, x={fields[0]!r})"
    at = {f: (float(v) if isinstance(v, (int, float, np.number)) else v) for f, v in rest.items()
          if f not in fields[:2]}
    return (f"res.heatmap({name!r}, x={fields[0]!r}, y={fields[1]!r}" + (f", at={at!r}" if at else "") + ")")


def write_report(res: ScanResult) -> str:
    """Write REPORT in the store: what was scanned, the summary (`summary`), every output's
    shape, how to read and draw them, and the configuration (a scan wrote no report: only its
    printed summary said what it held). The manifest and chunks stay the results; this file is
    rewritten by every session that runs to its end (`run`; an interrupted one leaves the
    previous report) and never read back for values. Written without the store's lock (a session's
    last act, or a rerun's that finds the scan complete), so it is replaced whole (`atomic_write`):
    a rerun reading it meanwhile finds the old report or the new one, never one cut short. Returns
    its path."""
    path = os.path.join(res.path, REPORT)
    atomic_write(path, text_bytes(report_text(res)))
    return path


def report_text(res: ScanResult) -> str:
    """REPORT's text for `res` (`write_report`): a function of the store alone, so a complete
    scan's rerun tells a report changed or damaged since from the one its store gives."""
    from ..config import to_toml

    g = res.grid
    kind = res.config.get("scan", {}).get("kind", "two_layer")
    axes = [[f, ", ".join(f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v) for v in vals)]
            for f, vals in zip(g.fields, g.values)]
    lines_ = [f"# Scan ({kind}): {' x '.join(g.fields) or 'one point'}", "",
              f"{int(res.done.sum())} of {g.size} points done ({g.kind} grid, shape {g.shape}); "
              f"last session: {last_session(res)}.", "",
              "## Grid", "", "| field | values |", "|---|---|"]
    lines_ += [f"| {f} | {v} |" for f, v in axes]
    lines_ += ["", "## Summary", "", "```", summary(res), "```", "",
               "## Outputs (arrays shaped like the grid, then per point)", "",
               "| output | shape | dtype |", "|---|---|---|"]
    lines_ += [f"| {q} | {tuple(a.shape)} | {a.dtype} |" for q, a in sorted(res.arrays.items())]
    lines_ += ["", "## Reading it", "", "```python", "from experiments import scan",
               f"res = scan.load({res.path!r})   # verified on reading; points not done are NaN,",
               "# -1 (an int output) or False (a bool one): read res.done"]
    call = example_figure(res)
    if call:
        lines_.append(f"{call}.savefig('figure.png')")
    lines_ += ["```", "", "## Configuration", "", "```toml", to_toml(res.config).rstrip(), "```", ""]
    return "\n".join(lines_)


def _select(res: ScanResult, name: str, keep: list, at: dict | None, values=None) -> np.ndarray:
    """res[name] (or `values`, one per point) with every axis but `keep` fixed by `at` (or of
    length one); axes in `keep` order."""
    v = res[name] if values is None else values
    kind = kind_of(res.config)
    for f in keep:       # (a field the grid does not scan read "fix <another axis> with at=...", or a ValueError)
        if f not in res.grid.fields:
            raise InputError(f"{f} is not scanned here, so it cannot be an axis of the figure (the grid's "
                             f"fields: {', '.join(res.grid.fields)}); its value is the configuration's for "
                             "every point")
    at = {resolve_field(k, "at", kind): x for k, x in (at or {}).items()}
    for f in at:         # (a plotted axis, or a field the grid does not scan, was ignored and titled)
        if f in keep:
            raise InputError(f"at: {f} is an axis of the figure; fix only the other axes "
                             f"({', '.join(g for g in res.grid.fields if g not in keep) or 'none'})")
        if f not in res.grid.fields:
            raise InputError(f"at: {f} is not scanned here (the grid's fields: {', '.join(res.grid.fields)}); "
                             "its value is the configuration's for every point")
    if res.grid.kind != "product":
        if len(res.grid.fields) == 1 and keep == [res.grid.fields[0]]:
            return v
        raise InputError("figures need a product grid ([scan.grid]), or a points grid over one field")
    if v.ndim != len(res.grid.shape):
        pick = (f", or one entry of it: '{name}[i]' (i < {v.shape[-1]})"
                if v.ndim == len(res.grid.shape) + 1 else "")
        raise InputError(f"{name}: not one number per point (shape {v.shape}); plot a final value "
                         f"or a grokking time{pick}")
    index = []
    for f, vals in zip(res.grid.fields, res.grid.values):
        if f in keep:
            index.append(slice(None))
        elif f in at:
            # relative only: an absolute 1e-8 took weight_decay 1e-8 (and 5e-9) for the grid's 0
            hits = [i for i, x in enumerate(vals) if np.isclose(x, at[f], rtol=1e-9, atol=0.0)]
            if len(hits) != 1:
                raise InputError(f"at: {f}={at[f]} is not on the grid ({list(vals)})")
            index.append(hits[0])
        elif len(vals) == 1:
            index.append(0)
        else:
            raise InputError(f"fix {f} with at={{'{f}': value}} (values {list(vals)})")
    sub = v[tuple(index)]
    kept = [f for f in res.grid.fields if f in keep]
    return np.transpose(sub, [kept.index(f) for f in keep])


def _axis_values(res, f):
    return np.asarray(res.grid.values[res.grid.fields.index(f)], dtype=np.float64)


def _log_axis(log, values, axis: str, field: str) -> bool:
    """Whether an axis is drawn in log scale: `log` (None: when every value is > 0); a log axis
    asked for over values <= 0 is refused, naming it (they would be dropped or break the cells)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    positive = bool(np.all(values > 0))          # (no finite value: nothing to refuse)
    if log is None:
        return positive and bool(values.size)
    if log and not positive:
        raise InputError(f"log{axis}=True: {field} has values <= 0 ({values[values <= 0][:3].tolist()}); "
                         f"pass log{axis}=False")
    return bool(log)


def _full_batch(res: ScanResult, field: str, values) -> bool:
    """Whether `values` of grid axis `field` are two-layer batch sizes with 0 (full batch, B = P)
    among positive ones: 0 is then the largest batch and is drawn last, labelled "full" (a
    walkthrough: [0, 2, 8, 32] drew full batch beside B = 2)."""
    values = np.asarray(values, dtype=np.float64)
    return (field == "train.batch_size" and not kind_of(res.config).pointwise and values.size >= 2
            and np.count_nonzero(values == 0) == 1 and bool(np.all(values[values != 0] > 0)))


def _sort_key(res: ScanResult, field: str, values) -> np.ndarray:
    """The order an axis is drawn in: its values, full batch (0, `_full_batch`) last."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(values == 0, np.inf, values) if _full_batch(res, field, values) else values


def _tick_labels(res: ScanResult, field: str, values) -> list[str]:
    full = _full_batch(res, field, values)
    return ["full" if full and v == 0 else f"{v:g}" for v in np.asarray(values, dtype=np.float64)]


def _full_batch_positions(log, values, axis: str, field: str):
    """(positions, log scale?) of batch sizes with full batch (0): the positive ones where they
    are, 0 one step past the largest (a geometric step on a log axis, an arithmetic one on a
    linear axis, the last gap's)."""
    values = np.asarray(values, dtype=np.float64)
    p = np.sort(values[values > 0])
    log = _log_axis(log, p, axis, field)
    if p.size == 1:
        past = 2 * p[0]
    else:
        past = p[-1] * p[-1] / p[-2] if log else 2 * p[-1] - p[-2]
    return np.where(values == 0, past, values), log


def _cell_positions(log, values, axis: str, field: str):
    """(where a heatmap draws the sorted grid values, log scale?): `_log_axis`'s choice, and with
    log None also a log axis when one value is 0 and the others, all > 0, span a decade or more
    (weight decays [0, 1e-4, 1e-3]; batch sizes with full batch, 0, go to `_full_batch_positions`):
    the 0 cell is drawn one geometric step below the smallest positive value, as wide as its
    neighbour, and its tick still reads 0 (on a linear axis the positive cells were crushed
    against it)."""
    values = np.asarray(values, dtype=np.float64)
    pos = values[values > 0]
    if (log is None and values.size >= 3 and np.count_nonzero(values == 0) == 1
            and pos.size == values.size - 1 and pos.max() >= 10 * pos.min()):
        p = np.sort(pos)
        return np.where(values == 0, p[0] * p[0] / p[1], values), True
    return values, _log_axis(log, values, axis, field)


def heatmap(res: ScanResult, name: str, x: str, y: str, *, at: dict | None = None,
            logx: bool | None = None, logy: bool | None = None, logc: bool = False, ax=None):
    """A heatmap of one number per point over two grid axes (others fixed by `at`).

    Axes are logarithmic when every grid value on them is > 0 (logx, logy: None), or as given;
    also when one value is 0 and the others span a decade or more (its cell then sits one
    geometric step below the smallest, labelled 0; a batch-size axis's full batch, 0, is the
    largest batch: one step past the largest B, labelled "full"). Cells are centred on the grid
    values, which label the ticks. A point not computed yet is
    hatched grey ("not computed"); a computed point without a number (a threshold not reached,
    a diverged point) is hatched on white ("no value"), so neither reads as a value.
    A grokking time (or gap) whose crossing the saves do not resolve (SOURCE.grok.coarse_*) is
    dotted over its colour ("coarse" in the legend). The title
    says where the other axes are fixed and when final values were taken."""
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Patch

    kind = kind_of(res.config)
    x, y = resolve_field(x, "x", kind), resolve_field(y, "y", kind)
    if x == y:          # (it asked to fix task.P with at=..., the other axis it could not find)
        raise InputError(f"x and y: both are {x}; a heatmap needs two different grid axes")
    z, none = _none_read(name, np.asarray(_select(res, name, [y, x], at), dtype=float))
    done = np.asarray(_select(res, name, [y, x], at, values=res.done), dtype=bool)
    xs, ys = _axis_values(res, x), _axis_values(res, y)
    oy, ox = np.argsort(_sort_key(res, y, ys), kind="stable"), np.argsort(_sort_key(res, x, xs), kind="stable")
    coarse = coarse_flags(res, name)
    coarse = (np.zeros_like(done) if coarse is None else
              np.asarray(_select(res, name, [y, x], at, values=coarse), dtype=bool))
    z, done, coarse = z[oy][:, ox], done[oy][:, ox], coarse[oy][:, ox]
    xs, ys = xs[ox], ys[oy]
    (px, logx), (py, logy) = (
        (_full_batch_positions if _full_batch(res, f, v) else _cell_positions)(lg, v, a, f)
        for lg, v, a, f in ((logx, xs, "x", x), (logy, ys, "y", y)))
    if logc:
        _log_axis(True, z[done], "c", name)
    fig = None
    if ax is None:
        fig, ax = new_figure(size=(5.5, 4.2))
    shown = z[done & np.isfinite(z)]
    norm = (LogNorm() if shown.size else LogNorm(vmin=1.0, vmax=10.0)) if logc else None   # (no value: hatching only)
    ex, ey = _edges(px, logx), _edges(py, logy)
    mesh = ax.pcolormesh(ex, ey, np.ma.masked_invalid(np.where(done, z, np.nan)), norm=norm,
                         shading="flat")
    legend = []
    for mask, face, hatch, label in ((~done, "0.85", "xx", "not computed"),
                                     (done & ~np.isfinite(z), "white", "//", none),
                                     (done & np.isfinite(z) & coarse, "none", "..", COARSE_LABEL)):
        if mask.any():
            ax.pcolor(ex, ey, np.ma.masked_where(~mask, np.ones_like(z)), hatch=hatch, shading="flat",
                      cmap=_flat(face), edgecolor="0.5", linewidth=0.0)
            legend.append(Patch(facecolor=face, hatch=hatch, edgecolor="0.4", label=label))
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    _grid_ticks(ax.xaxis, px, _tick_labels(res, x, xs))
    _grid_ticks(ax.yaxis, py, _tick_labels(res, y, ys))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.figure.colorbar(mesh, ax=ax, label=name)
    if legend:
        ax.legend(handles=legend, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                  frameon=False)
    _slice_title(ax, res, name, at)
    return fig or ax.figure


def _slice_title(ax, res: ScanResult, name: str, at: dict | None) -> None:
    """A figure's title: where `at` fixes the other axes, and when final values were taken."""
    kind = kind_of(res.config)
    fixed = ", ".join(f"{resolve_field(k, 'at', kind).rpartition('.')[2]} = {v:g}" for k, v in (at or {}).items())
    title = "; ".join(t for t in (fixed, final_time_label(res, name)) if t)
    if title:
        ax.set_title(title, fontsize=9)


def _flat(color):
    from matplotlib.colors import ListedColormap

    return ListedColormap([color])


def _grid_ticks(axis, values, labels=None, most: int = 8):
    """Major ticks at the grid values (at most `most` of them, evenly thinned), labelled with
    `labels` (strings, `_tick_labels`, for values drawn elsewhere, `_cell_positions`; None: the
    values), no minor ticks."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    values = np.asarray(values, dtype=np.float64)
    labels = [f"{v:g}" for v in values] if labels is None else list(labels)
    if axis.axis_name == "x":   # (as many as fit side by side: 8 labels like "0.0251" ran into each other)
        size = axis.get_ticklabels()[0].get_fontsize() if axis.get_ticklabels() else 10.0
        width = axis.axes.get_position().width * axis.axes.figure.get_figwidth() * 72.0     # points
        room = (0.62 * max(len(t) for t in labels) + 1.2) * size                            # one label, a gap
        most = max(2, min(most, int(width // room)))
    keep = np.arange(len(values)) if len(values) <= most else np.unique(np.linspace(0, len(values) - 1, most).round().astype(int))
    axis.set_major_locator(FixedLocator(values[keep]))
    axis.set_major_formatter(FixedFormatter([labels[i] for i in keep]))
    axis.set_minor_locator(NullLocator())


def final_time_label(res: ScanResult, name: str) -> str:
    """When a "final" output was taken: "at t = T", or the range of times when points ended at
    different times (a scan over eta0 at fixed steps), or "" for other outputs."""
    src, _, rest = name.partition(".final.")
    if not rest or f"{src}.final.t" not in res.arrays:
        return ""
    t = np.asarray(res.arrays[f"{src}.final.t"], dtype=np.float64)[res.done]
    t = t[np.isfinite(t)]
    if t.size == 0:
        return ""
    if np.allclose(t, t[0]):
        return f"at t = {t[0]:g}"
    final_time = (res.config.get("train") or {}).get("final_time") or 0.0
    if final_time:       # (it was set: the advice to set it misled; its times are whole steps of each eta0)
        return (f"at train.final_time = {final_time:g}, each point's nearest whole step: t from {t.min():g} "
                f"to {t.max():g}")
    return (f"at each point's last step: t from {t.min():g} to {t.max():g} (set train.final_time for a "
            "common time)")


def _edges(v, log):
    """Cell edges around sorted axis values (geometric midpoints on a log axis)."""
    v = np.sort(v)
    if len(v) == 1:
        return np.array([v[0] / 2, v[0] * 2]) if log else np.array([v[0] - 0.5, v[0] + 0.5])
    w = np.log(v) if log else v
    mid = (w[1:] + w[:-1]) / 2
    e = np.concatenate([[2 * w[0] - mid[0]], mid, [2 * w[-1] - mid[-1]]])
    return np.exp(e) if log else e


def error_name(res: ScanResult, name: str) -> str | None:
    """The stored standard error of output `name` (a theory point's over its replicas, a network
    ensemble's over its seeds): "SRC.final.error.Q" for "SRC.final.Q", "NAME_se" (grokking times
    and gaps, theory.node.*); None where none is stored."""
    entry = _ENTRY.fullmatch(name)
    if entry and name not in res.arrays:        # an entry's error: the same entry of the output's
        se = error_name(res, entry.group(1))
        return None if se is None else f"{se}[{entry.group(2)}]"
    head, _, last = name.rpartition(".")
    for cand in (f"{name}_se", f"{head}.error.{last}" if head.endswith(".final") else None):
        if cand and cand in res.arrays:
            return cand
    return None


def standard_errors(res: ScanResult, name: str) -> np.ndarray | None:
    """Grid-shaped standard errors of output `name` (or its entry "name[i]"): the stored ones
    (`error_name`), or for a deep linear scan's mean mode strengths ("networks.final.modes_mean",
    "theory.final.modes_mean") their spread / sqrt(count), the count the seeds or SDE paths that
    did not diverge (the spreads are over those, with ddof 1); None where there are none."""
    se_name = error_name(res, name)
    if se_name is not None:
        return np.asarray(res[se_name], dtype=np.float64)
    entry = _ENTRY.fullmatch(name) if name not in res.arrays else None
    base = entry.group(1) if entry else name
    src, _, rest = base.partition(".final.")
    counts = {"networks": ("train.seeds", "networks.diverged_seeds"), "theory": ("theory.paths", "theory.diverged_paths")}
    if rest != "modes_mean" or src not in counts or f"{src}.final.modes_std" not in res.arrays:
        return None
    field, diverged = counts[src]
    if field in res.grid.fields:
        total = res.coords()[field]
    else:
        sec, key = field.split(".")
        total = np.full(res.grid.shape, res.config[sec][key])
    n = np.asarray(total, dtype=np.float64) - res[diverged]
    with np.errstate(divide="ignore", invalid="ignore"):
        se = res[f"{src}.final.modes_std"] / np.sqrt(np.where(n > 0, n, np.nan))[..., None]
    return se[..., int(entry.group(2))] if entry else se


def lines(res: ScanResult, name: str, x: str, *, hue: str | None = None, at: dict | None = None,
          logx: bool | None = None, logy: bool = False, errors: bool = True, ax=None):
    """One number per point against one grid axis, one line per value of `hue` (in increasing
    order; a batch-size hue's full batch, 0, last and labelled "full", as on an x axis) (x logarithmic
    when every value is > 0, or as `logx` says; a log x axis ticked at the grid values, as a heatmap's); points not computed yet are gaps, computed points
    without a value (a threshold not reached, a diverged point) are marked x on the bottom edge
    ("no value (not reached or diverged)" in the legend), a grokking time the saves do not resolve
    (SOURCE.grok.coarse_*) is ringed ("coarse" in the legend), and the title
    names where `at` fixes the other axes. With `errors` each point carries +- its standard error
    where the scan keeps one (`error_name`) or it follows from a stored spread (a deep linear
    scan's mean mode strengths: `standard_errors`)."""
    from matplotlib.transforms import blended_transform_factory

    kind = kind_of(res.config)
    x = resolve_field(x, "x", kind)
    keep = [x] if hue is None else [resolve_field(hue, "hue", kind), x]
    if keep[0] == x and hue is not None:
        raise InputError(f"x and hue: both are {x}; give the lines' hue another grid axis")
    v = res[name]
    if v.ndim == len(res.grid.shape):   # points not computed are gaps (an int or bool output read -1 or False)
        v = np.where(res.done, v.astype(np.float64), np.nan)
    z, none = _none_read(name, _select(res, name, keep, at, values=v))
    done = np.asarray(_select(res, name, keep, at, values=res.done), dtype=bool)
    coarse = coarse_flags(res, name)
    coarse = (np.zeros_like(done) if coarse is None else
              np.asarray(_select(res, name, keep, at, values=coarse), dtype=bool))
    se = standard_errors(res, name) if errors and v.ndim == len(res.grid.shape) else None
    se = None if se is None else _select(res, name, keep, at, values=np.where(res.done, se, np.nan))
    xs = _axis_values(res, x) if res.grid.kind == "product" else np.asarray(res.grid.values[0], float)
    order = np.argsort(_sort_key(res, x, xs), kind="stable")
    full = _full_batch(res, x, xs)
    labels = _tick_labels(res, x, xs)
    xs, logx = _full_batch_positions(logx, xs, "x", x) if full else (xs, _log_axis(logx, xs, "x", x))
    if logy:
        _log_axis(True, z, "y", name)
    fig = None
    if ax is None:
        fig, ax = new_figure(size=(5.5, 4.2))
    if hue is None:
        rows = [(None, z, se, done, coarse)]
    else:        # (full batch, 0, labelled "full" and drawn last, as on an x axis: `_tick_labels`)
        hv = _axis_values(res, keep[0])
        names = _tick_labels(res, keep[0], hv)
        rows = [(f"{keep[0]} = {names[i]}", z[i], None if se is None else se[i], done[i], coarse[i])
                for i in np.argsort(_sort_key(res, keep[0], hv), kind="stable")]
    # a computed point without a value (a threshold not reached, a diverged point) is marked x on
    # the bottom edge in its line's colour, so it does not read as a point not computed (a gap;
    # a walkthrough: the diverged row's legend entry drew nothing, and nothing said why)
    below = blended_transform_factory(ax.transData, ax.transAxes)
    missing = shown_coarse = False
    for label, row, err, ok, rough in rows:
        if err is None:
            (drawn,) = ax.plot(xs[order], row[order], "o-", label=label)
        else:
            drawn = ax.errorbar(xs[order], row[order], yerr=err[order], fmt="o-", capsize=2, label=label).lines[0]
        lost = (ok & ~np.isfinite(row))[order]
        if lost.any():
            ax.plot(xs[order][lost], np.full(int(lost.sum()), 0.02), "x", color=drawn.get_color(), markersize=8,
                    clip_on=False, transform=below, label=None if missing else none)
            missing = True
        rough = (rough & np.isfinite(row))[order]
        if rough.any():          # (a grokking time the saves do not resolve: ringed)
            ax.plot(xs[order][rough], row[order][rough], "o", markersize=12, markerfacecolor="none",
                    color=drawn.get_color(), label=None if shown_coarse else COARSE_LABEL)
            shown_coarse = True
    if hue is not None or missing or shown_coarse:
        ax.legend(fontsize=8)
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    if full or logx:              # (full batch drawn last, labelled "full"; a log axis at the grid
        _grid_ticks(ax.xaxis, xs[order], [labels[i] for i in order])   # values, as a heatmap's)
    ax.set_xlabel(x)
    ax.set_ylabel(name + (" (+- its standard error)" if se is not None else ""))
    ax.grid(True, alpha=0.3)
    _slice_title(ax, res, name, at)      # (it named the final time only, not the slice)
    return fig or ax.figure

