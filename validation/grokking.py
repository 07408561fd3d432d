"""Grokking metrics and progress measures, the same for theory and networks.

- `grokking_times`: first times the train and test curves cross a threshold
  (losses falling below it, or accuracies rising above it) and the gap of
  Kumar et al. (2024), gap = max(0, t_test - t_train). Crossings are located
  by linear interpolation between saved times. A threshold that is never
  reached is reported as such ("not reached", with the final values); its
  time is NaN with `reached` False, never a silent NaN.
- `early_warning`: for each progress measure the time it has done half of its
  change (`change_time`) against the time the test loss has fallen half way (in log
  scale) from its plateau to its floor (`drop_time`); lead > 0 means the measure moved
  first. Level crossings, interpolated in log time, so the verdict does not move
  with the save grid; a lead is reported only where the saves order the two crossings
  (at least `MIN_SAVES_BETWEEN` saved time between them, else NaN: unresolved);
  `lead_verdict` counts the runs in which each measure leads, with a Wilson interval.
  Given the replicas (or seeds) behind the curves, each lead has a standard error by the
  jackknife (`jackknife_se`), which counts the two crossings' shared errors.
- Kumar toy model: `kumar_decomposition` (variance, misalignment, linear power
  of the test loss, exact from the closure state) and `planted_overlap`.
- Neuron measures for `dmft.solve(neuron_measures=...)` and
  `networks.train(neuron_measures=...)`: `fourier_ipr(p)` (modular addition),
  `direction_overlap(u)`, `max_change()` (sparse parity, ||w_t - w_0||_inf).

Example:
    >>> import numpy as np
    >>> t = np.linspace(0, 10, 101)
    >>> g = grokking_times(t, np.exp(-t), np.where(t < 6, 1.0, np.exp(-(t - 6))), 0.1)
    >>> round(float(g.t_train), 2), round(float(g.t_test), 2), round(float(g.gap), 2)
    (2.3, 8.3, 6.0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from dmft import checks
from dmft.errors import InputError

from .inputs import boolean_array, mapping, names, real_array, real_or_inf

__all__ = ["RATES", "GrokTimes", "grokking_times", "crossing_time", "crossing_time_se", "accuracy", "early_warning", "drop_time",
           "MIN_SAVES_BETWEEN", "saves_between", "jackknife_se", "REPLICAS_PREFIX", "COARSE_FALL",
           "change_time", "wilson_interval", "lead_verdict", "overlap_diffusion",
           "steepest_change_time", "kumar_decomposition", "planted_overlap", "fourier_ipr",
           "direction_overlap", "direction_alignment", "alignment_ratio", "planted_alignment",
           "max_change", "fit_power_law_decay", "power_law_exponent_se", "fit_inverse_decay"]


@dataclasses.dataclass
class GrokTimes:
    """Crossing times (arrays over any leading grid axes, or scalars).

    t_train, t_test: first times past the threshold (NaN where not reached).
    gap: max(0, t_test - t_train) where both are reached, else NaN.
    reached_train, reached_test: booleans.
    final_train, final_test: the last values of the curves.
    t_train_se, t_test_se: standard errors of the times where the curves' own were given
    (`crossing_time_se`), or their replicas (`jackknife_se`), else NaN.
    gap_se: the standard error of t_test - t_train where the curves' replicas were given
    (`jackknife_se`: the two times share the replicas' errors), else NaN; where the gap is 0
    (the test curve crossed first) it says how far that difference is from 0. NaN too where
    either time is not interpolated between saves (a bound, or the first save) or a curve
    left without one replica does not cross within the run (a crossing near the run's end:
    the jackknife has no value there, and the gap's error is unknown, not 0).
    coarse_train, coarse_test: a loss's crossing interpolated in a save interval over which the
    loss fell more than COARSE_FALL-fold: the saves do not resolve the curve there, and the
    time may lie anywhere in the interval (a train loss falling 1000-fold within [0, 5000]
    read t = 4590 where saves every 100 read 93-400). For accuracies, the error rate 1 - accuracy
    falling so (a sparse parity's accuracy 0.5 -> 1 within its first save interval read 180 +- 0
    for every seed: the same two saves, the same interpolation).
    """

    t_train: np.ndarray
    t_test: np.ndarray
    gap: np.ndarray
    reached_train: np.ndarray
    reached_test: np.ndarray
    final_train: np.ndarray
    final_test: np.ndarray
    threshold: float
    kind: str                  # "loss" (fall below) or "accuracy" (rise above)
    t_train_se: np.ndarray = np.nan
    t_test_se: np.ndarray = np.nan
    gap_se: np.ndarray = np.nan
    coarse_train: np.ndarray = False
    coarse_test: np.ndarray = False

    def status(self) -> np.ndarray:
        """Per point: "ok", "train not reached", "test not reached" or "neither reached"."""
        rt, rs = np.asarray(self.reached_train), np.asarray(self.reached_test)
        out = np.where(rt & rs, "ok", np.where(rt, "test not reached",
                                               np.where(rs, "train not reached", "neither reached")))
        return out if out.ndim else str(out)

    def describe(self) -> str:
        """One line for a scalar result."""
        cmp = "<" if self.kind == "loss" else ">"

        def one(name, t, r, final, se, coarse):
            pm = f" +- {float(se):.2g}" if np.isfinite(se) else ""
            what = "the loss" if self.kind == "loss" else "the error rate 1 - accuracy"
            pm += f" (coarse: {what} fell over {COARSE_FALL:g}-fold within its save interval)" if bool(coarse) else ""
            return (f"t_{name} = {float(t):.4g}{pm}" if bool(r) else
                    f"{name} {cmp} {self.threshold:g} not reached (final {float(final):.4g})")
        parts = [one("train", self.t_train, self.reached_train, self.final_train, self.t_train_se, self.coarse_train),
                 one("test", self.t_test, self.reached_test, self.final_test, self.t_test_se, self.coarse_test)]
        pm = f" +- {float(self.gap_se):.2g}" if np.isfinite(self.gap_se) else ""
        gap = f"gap = {float(self.gap):.4g}{pm}" if np.isfinite(self.gap) else "gap: not defined"
        return ", ".join(parts + [gap])

    def as_dict(self) -> dict:
        """JSON-ready: t_train, t_test and gap are None (JSON null) where not reached, never NaN;
        final_train / final_test are the curves' last values (None for a diverged run)."""
        d = {k: _none_for_nan(v) for k, v in dataclasses.asdict(self).items()
             if k not in ("threshold", "kind")}
        return {**d, "threshold": self.threshold, "kind": self.kind,
                "status": np.asarray(self.status()).tolist()}


# the progress measures that are rates (`overlap_diffusion`: their change time is the median time
# of their burst, `change_time(rate=True)`), as the grok job and its figures read them
RATES = ("planted_diffusion",)

# a loss (or an accuracy's error rate 1 - accuracy) that falls more than this many-fold between the
# two saves around its crossing is not resolved there: the interpolated time may lie anywhere in the interval (GrokTimes.coarse_*)
COARSE_FALL = 10.0


def _none_for_nan(v):
    """A nested list of the array with None where a float value is not finite."""
    a = np.asarray(v)
    if a.dtype.kind != "f":
        return a.tolist()
    obj = a.astype(object)
    obj[~np.isfinite(a)] = None
    return obj.tolist()


def _check_curves(t, curves: dict):
    """t and the curves (name -> array, the name as the caller's argument) as float arrays; an
    InputError naming the argument that is not real, has no time axis or does not fit t."""
    t = real_array("t", t)
    if t.ndim < 1 or t.shape[-1] < 2:
        raise InputError(f"t must have at least two times, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or np.any(np.diff(t, axis=-1) <= 0):
        raise InputError("t must be finite and strictly increasing")
    out = {}
    for name, c in curves.items():
        c = real_array(name, c)
        if c.ndim < 1:
            raise InputError(f"{name} must be a curve over the saved times (last axis {t.shape[-1]}, as t), "
                             f"got a scalar {float(c)!r}")
        if c.shape[-1] != t.shape[-1]:
            raise InputError(f"{name}: last axis ({c.shape[-1]}) must match t ({t.shape[-1]})")
        try:
            fits = np.broadcast_shapes(t.shape, c.shape) == c.shape
        except ValueError:
            fits = False
        if not fits:
            raise InputError(f"{name}: shape {c.shape} does not take t's shape {t.shape} (t must broadcast "
                             "to each curve)")
        out[name] = c
    try:
        np.broadcast_shapes(*(c.shape for c in out.values()))
    except ValueError:
        raise InputError("the curves' shapes do not broadcast together: "
                         + ", ".join(f"{k} {v.shape}" for k, v in out.items())) from None
    return t, out


def crossing_time(t, y, threshold: float, *, below: bool = True):
    """First time y crosses `threshold` (falling below it, or rising above with
    below=False), linearly interpolated between saved times.

    Works along the last axis; NaN values (a diverged run) count as not crossed, and a
    crossing right after a non-finite save is not interpolated (its save time is reported).
    Returns (time, reached) arrays over the leading axes; time is finite wherever reached.
    """
    threshold = checks.real("threshold", threshold)
    below = checks.flag("below", below)
    t, c = _check_curves(t, {"y": y})
    x = _crossing(t, c["y"], threshold, below)
    return x["time"], x["reached"]


def _at(a, i):
    """a's values at the indices i along its last axis (one per leading position)."""
    return np.take_along_axis(a, i[..., None], -1)[..., 0]


def _crossing(t, y, threshold: float, below: bool) -> dict:
    """The first crossing of checked curves: reached, its time (NaN where not reached), whether
    it is interpolated, and the save interval's ends (k - 1, k), fraction and slope of the
    threshold's margin s (>= 0 once crossed), for `crossing_time` and `crossing_time_se`."""
    s = (threshold - y) if below else (y - threshold)          # >= 0 once crossed
    hit = np.where(np.isnan(s), False, s >= 0)
    reached = hit.any(axis=-1)
    k = np.argmax(hit, axis=-1)                                 # first index past the threshold
    km = np.maximum(k - 1, 0)
    tb = np.broadcast_to(t, y.shape)
    t_k, t_prev, s_k, s_prev = _at(tb, k), _at(tb, km), _at(s, k), _at(s, km)
    # interpolate from the save before only where both values are finite: after a NaN or inf
    # save the crossing is known to lie at or before t_k, and t_k is what is reported
    interp = reached & (k > 0) & np.isfinite(s_prev) & np.isfinite(s_k) & (s_k != s_prev)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip(np.where(interp, -s_prev / (s_k - s_prev), 1.0), 0, 1)
        slope = (s_k - s_prev) / (t_k - t_prev)
    time = np.where(interp, t_prev + frac * (t_k - t_prev), t_k)
    return {"reached": reached, "time": np.where(reached, time, np.nan), "interp": interp, "k": k, "km": km,
            "frac": frac, "slope": slope}


def _nonnegative(name, se):
    if np.any(se < 0):
        raise InputError(f"{name}: standard errors must be >= 0 (NaN where unknown)")
    return se


def crossing_time_se(t, y, y_se, threshold: float, *, below: bool = True):
    """Standard error of `crossing_time(t, y, threshold)` from the curve's own standard errors
    y_se (say a DMFT solve's `error["test_loss"]`), by the delta method: a shift dy of the curve
    at the crossing moves it by dy / |slope|, so se(t) = se(y at t) / |slope|, with the slope of
    the segment the crossing interpolates in and y_se interpolated linearly there (the errors
    at neighbouring saves move together: a solve's replicas carry whole curves).

    NaN where the time is not interpolated: not reached, reached at the first save, or right
    after a non-finite save (no segment to take a slope from). First order in y_se: it
    describes a curve that crosses the threshold once and steeply compared with its error; where
    the curve runs along the threshold (a plateau at its level) the first crossing can jump
    between distant segments, which no local error bar describes. Returns an array over the
    leading axes, as crossing_time's times.
    """
    threshold = checks.real("threshold", threshold)
    below = checks.flag("below", below)
    t, c = _check_curves(t, {"y": y, "y_se": y_se})
    y, se = np.broadcast_arrays(c["y"], _nonnegative("y_se", c["y_se"]))
    return _time_se(_crossing(t, y, threshold, below), se)


def _time_se(x: dict, se):
    """The crossing `x`'s (`_crossing`) standard error from the curve's errors `se`."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ((1 - x["frac"]) * _at(se, x["km"]) + x["frac"] * _at(se, x["k"])) / np.abs(x["slope"])
    return np.where(x["interp"], out, np.nan)


def grokking_times(t, train_loss, test_loss, threshold: float, *, accuracy: bool = False,
                   train_se=None, test_se=None, replicas: dict | None = None) -> GrokTimes:
    """t_train, t_test and gap = max(0, t_test - t_train) (Kumar et al. 2024, Fig. 3e).

    Args:
        t: (T,) times (or broadcastable to the curves).
        train_loss, test_loss: (..., T) curves; with accuracy=True they are
            accuracies and the crossing is upward.
        threshold: the loss (or accuracy) level.
        train_se, test_se: the curves' standard errors (a DMFT solve's `error["train_loss"]`,
            `error["test_loss"]`), optional: the times' own then come by `crossing_time_se`
            (for a solve, with its `info["error_dof"]` degrees of freedom).
        replicas: optional, "train_loss" and "test_loss" -> (..., R, T), the replicas (or
            seeds) behind the two curves (accuracies with accuracy=True): the gap's error then
            comes by the jackknife (`jackknife_se`), and so do the times' where train_se /
            test_se are not given (R - 1 degrees of freedom).
    """
    threshold = checks.real("threshold", threshold)
    accuracy = checks.flag("accuracy", accuracy)
    curves = {"train_loss": train_loss, "test_loss": test_loss}
    curves.update({k: v for k, v in (("train_se", train_se), ("test_se", test_se)) if v is not None})
    t, c = _check_curves(t, curves)
    if replicas is not None:
        replicas = dict(replicas) if isinstance(replicas, Mapping) else replicas
        _check_replicas({"train_loss": c["train_loss"], "test_loss": c["test_loss"]}, replicas)
    x = {}
    for name in ("train", "test"):
        y = c[f"{name}_loss"]
        if f"{name}_se" in c:
            _nonnegative(f"{name}_se", c[f"{name}_se"])
            if np.broadcast_shapes(y.shape, c[f"{name}_se"].shape) != y.shape:
                raise InputError(f"{name}_se: shape {c[f'{name}_se'].shape} does not fit {name}_loss's "
                                 f"{y.shape}")
        x[name] = _crossing(t, y, threshold, not accuracy)
        x[name]["se"] = (_time_se(x[name], np.broadcast_to(c[f"{name}_se"], y.shape)) if f"{name}_se" in c
                         else np.full(x[name]["time"].shape, np.nan))
    (tr, rtr), (te, rte) = ((x[n]["time"], x[n]["reached"]) for n in ("train", "test"))
    with np.errstate(invalid="ignore"):
        gap = np.where(rtr & rte, np.maximum(0.0, te - tr), np.nan)
    gap_se = np.full(gap.shape, np.nan)
    if replicas is not None:
        cur = {"train_loss": c["train_loss"], "test_loss": c["test_loss"]}

        def time_of(y):
            x = _crossing(t, y, threshold, not accuracy)
            if accuracy:
                return x["time"]
            # a leave-one-out loss below 0 at or before its crossing is no loss: the linear
            # estimate c + (mean - v_i) / (R - 1) of a pooled-output loss has left its range there
            # (replicas far apart, say in a catapult spike), and the crossing it gives lies
            # wherever that dip does (a lyu DMFT's, 2 replicas: t_test 6.0 where the loss crossed
            # at 188, a gap of 178 "+- 90" where its two times had +- 4.5 and 6.6): unknown, NaN
            upto = np.arange(y.shape[-1]) <= np.where(x["reached"], x["k"], y.shape[-1])[..., None]
            return np.where(np.any((y < 0) & upto, axis=-1), np.nan, x["time"])

        def times(v):         # (the gap's error is that of t_test - t_train: clipped at 0 it read "0 +- 0")
            a, b = (time_of(v[f"{n}_loss"]) for n in ("train", "test"))
            return {"train": a, "test": b, "gap": b - a}
        jk = jackknife_se(times, cur, replicas)
        # (as crossing_time_se: none for a time not interpolated, a bound or the first save)
        gap_se = np.where(np.isfinite(gap) & x["train"]["interp"] & x["test"]["interp"], jk["gap"], np.nan)
        for n in ("train", "test"):
            if f"{n}_se" not in c:
                x[n]["se"] = np.where(x[n]["interp"], jk[n], np.nan)
    coarse = {}
    for n in ("train", "test"):       # a loss's (an error rate's) crossing between saves COARSE_FALL-fold apart
        y = 1.0 - c[f"{n}_loss"] if accuracy else c[f"{n}_loss"]
        with np.errstate(invalid="ignore", divide="ignore"):
            fell = _at(y, x[n]["km"]) > COARSE_FALL * np.maximum(_at(y, x[n]["k"]), 0.0)
        coarse[n] = x[n]["interp"] & fell
    return GrokTimes(tr, te, gap, rtr, rte, c["train_loss"][..., -1], c["test_loss"][..., -1],
                     float(threshold), "accuracy" if accuracy else "loss", x["train"]["se"], x["test"]["se"],
                     gap_se, coarse["train"], coarse["test"])


def accuracy(f, y) -> np.ndarray:
    """Fraction of points whose largest output is the target class (one-hot y).

    f: (..., P, C) outputs; y: (P, C). Scalar outputs (y of shape (P,) or (P, 1), f of shape
    (..., P) or (..., P, 1)) use the sign. NaN where any output is not finite (a diverged run)."""
    f, y = real_array("f", f), real_array("y", y)
    if y.ndim not in (1, 2):
        raise InputError(f"accuracy: y must be (P,) or (P, C), got shape {y.shape}")
    if y.ndim == 2 and y.shape[1] == 1:            # one output: argmax of one column is always 0
        y = y[:, 0]
    if y.ndim == 1 and f.ndim >= 2 and f.shape[-2:] == (y.shape[0], 1):
        f = f[..., 0]
    if f.shape[f.ndim - y.ndim:] != y.shape:
        raise InputError(f"accuracy: f of shape {f.shape} does not end in y's shape {y.shape}")
    if y.ndim == 1:
        hit, finite = (np.sign(f) == np.sign(y)), np.isfinite(f)
    else:
        hit, finite = (np.argmax(f, axis=-1) == np.argmax(y, axis=-1)), np.isfinite(f).all(axis=-1)
    # a point with a non-finite output (a diverged run) has no class: NaN, as its loss is
    # (argmax would pick the first NaN's class, the sign 0: a score that is no accuracy)
    return np.mean(np.where(finite, hit, np.nan), axis=-1)


def steepest_change_time(t, y, *, log_time: bool = True, smooth: int = 2):
    """Time of the largest |dy / dlog t| (or |dy/dt|), after a short moving average.

    Kept for comparison: a derivative of sampled curves moves with the save grid, which is why
    `early_warning` uses level crossings instead (docs/conventions.md, "Early warning").
    Times <= 0 are skipped in log time (InputError when fewer than two saves are left). Returns NaN
    if the curve does not change."""
    log_time = checks.flag("log_time", log_time)
    smooth = checks.integer("smooth", smooth, minimum=0)
    t, c = _check_curves(t, {"y": y})
    y = c["y"]
    keep = t > 0 if log_time else np.ones_like(t, bool)
    if np.count_nonzero(keep) < 2:
        raise InputError(f"t: a change needs at least two saves{' at t > 0 (log time)' if log_time else ''}, "
                         f"got {np.count_nonzero(keep)}")
    x = np.log(t[keep]) if log_time else t[keep]
    y = y[..., keep]
    if smooth > 1 and y.shape[-1] > smooth:
        kern = np.ones(smooth) / smooth
        y = np.apply_along_axis(lambda v: np.convolve(v, kern, mode="valid"), -1, y)
        x = np.convolve(x, kern, mode="valid")
    d = np.abs(np.diff(y, axis=-1)) / np.diff(x)
    d = np.where(np.isfinite(d), d, -1)
    i = np.argmax(d, axis=-1)
    mid = (x[:-1] + x[1:]) / 2
    tm = np.exp(mid[i]) if log_time else mid[i]
    return np.where(np.max(d, axis=-1) > 0, tm, np.nan)


def _crossing_1d(t, y, level, start=0):
    """First time at or after index `start` that y reaches `level` (from either side of its
    value at start), interpolated linearly in log t (linearly in t from t = 0); NaN if never."""
    s = np.sign(y[start] - level)
    if s == 0:
        return float(t[start])
    for j in range(start + 1, len(t)):
        if np.isnan(y[j]):
            return float("nan")
        if np.sign(y[j] - level) != s:
            f = (level - y[j - 1]) / (y[j] - y[j - 1]) if y[j] != y[j - 1] else 1.0
            if t[j - 1] > 0:
                return float(np.exp(np.log(t[j - 1]) + f * (np.log(t[j]) - np.log(t[j - 1]))))
            return float(t[j - 1] + f * (t[j] - t[j - 1]))
    return float("nan")


# a rise above min_ratio x the start is a spike (not the plateau) when the curve is back within
# min_ratio x the start at least this factor in time before the drop that follows (`drop_time`)
SPIKE_GAP = 10.0


def _fall_crossing(tt, r, fin, j_min: int, hi: float, lo: float, max_decades: float) -> float:
    """The first crossing of sqrt(hi x floor) after the last save at or above hi before j_min."""
    j0 = int(np.flatnonzero(np.where(fin[:j_min + 1], r[:j_min + 1] >= hi, False))[-1])
    floor = max(lo, hi * 10.0 ** (-max_decades))
    return _crossing_1d(tt, r, float(np.sqrt(hi * floor)), j0)


def drop_time(t, loss, *, min_ratio: float = 2.0, max_decades: float = 2.0):
    """The drop of a loss curve: the time it has fallen half way, in log scale, from its plateau
    to its floor.

    Plateau: the highest value before the curve reaches its minimum; floor: the minimum, but no
    deeper than max_decades below the plateau. The drop time is the first crossing of
    sqrt(plateau x floor) after the plateau, interpolated in log t. Why in log scale: a curve
    that first falls part way (a lazy fit: 0.8 -> 0.3), rests, then groks (-> 1e-4) crosses the
    linear midpoint during its first fall; the geometric one lies in the decades of the grokking
    drop. Why the cap: a loss that keeps decaying exponentially after the drop (a realizable
    target) would otherwise move the time with the length of the run. A drop is "observed" when
    the plateau is at least min_ratio times the floor.

    A spike is not the plateau: a rise above min_ratio times the curve's first (finite) value
    that is back within min_ratio times it at least SPIKE_GAP = 10 times earlier than the drop
    that follows (or than the minimum, where no drop follows) is a spike (a catapult's: a
    50-fold rise at t ~ 1 read t_drop = 2.4 for a loss grokking at ~ 1300, and a spike with no
    grokking after it read as a drop). There the plateau is min_ratio times the first value and
    the drop must fall min_ratio-fold below the first value. A rise that runs into the drop (a
    test loss that climbs while the training set is memorized, then groks) stays the plateau.

    Returns (t_drop, observed) arrays over the leading axes (t_drop NaN when not observed)."""
    max_decades = real_or_inf("max_decades", max_decades, positive=True)
    min_ratio = checks.real("min_ratio", min_ratio, positive=True)
    t, c = _check_curves(t, {"loss": loss})
    y = c["loss"]
    flat = y.reshape(-1, y.shape[-1])
    tb = np.broadcast_to(t, y.shape).reshape(-1, y.shape[-1])
    td, ok = np.full(flat.shape[0], np.nan), np.zeros(flat.shape[0], bool)
    for i, row in enumerate(flat):
        tt = tb[i]
        fin = np.isfinite(row)
        if fin.sum() < 2:
            continue
        r = np.where(fin, row, np.nan)
        j_min = int(np.nanargmin(r))
        j_max = int(np.nanargmax(r[:j_min + 1]))
        hi, lo = r[j_max], r[j_min]
        start = r[np.argmax(fin)]
        cap = min_ratio * start
        if hi > cap >= 0 and lo >= 0:
            back = [j for j in range(j_max + 1, j_min + 1) if fin[j] and r[j] <= cap]
            if back:
                t_back = tt[back[0]]
                falls = start >= min_ratio * lo and cap > lo
                tc = _fall_crossing(tt, r, fin, j_min, cap, lo, max_decades) if falls else float("nan")
                after = tc if np.isfinite(tc) else tt[j_min]
                if t_back * SPIKE_GAP <= after:       # a spike: back well before the drop (or the minimum)
                    td[i], ok[i] = tc, bool(np.isfinite(tc))
                    continue
        if not (hi >= min_ratio * lo and hi > lo and lo >= 0):
            continue
        td[i] = _fall_crossing(tt, r, fin, j_min, hi, lo, max_decades)
        ok[i] = np.isfinite(td[i])
    return td.reshape(y.shape[:-1]), ok.reshape(y.shape[:-1])


def change_time(t, measure, *, rate: bool = False, min_change: float = 1e-12):
    """When a progress measure has done half of its change.

    A level (rate=False; alignment, weight change, overlap, IPR): the first crossing of the
    midpoint between its first and its last value. A rate (rate=True; a diffusion): the time
    by which half of its time integral has accumulated (the median time of the burst).
    Crossings are interpolated in log t, so a coarser or log-spaced save grid moves them by
    little (tested). NaN when the measure does not change."""
    rate = checks.flag("rate", rate)
    min_change = checks.real("min_change", min_change, nonnegative=True)
    t, c = _check_curves(t, {"measure": measure})
    y = c["measure"]
    flat = y.reshape(-1, y.shape[-1])
    tb = np.broadcast_to(t, y.shape).reshape(-1, y.shape[-1])
    out = np.full(flat.shape[0], np.nan)
    for i, row in enumerate(flat):
        tt = tb[i]
        if not np.all(np.isfinite(row)):
            continue
        if rate:
            cum = np.concatenate([[0.0], np.cumsum((row[1:] + row[:-1]) / 2 * np.diff(tt))])
            if cum[-1] <= min_change:
                continue
            out[i] = _crossing_1d(tt, cum, cum[-1] / 2)
        else:
            if abs(row[-1] - row[0]) <= min_change * max(1.0, abs(row[0])):
                continue
            out[i] = _crossing_1d(tt, row, (row[0] + row[-1]) / 2)
    return out.reshape(y.shape[:-1])


# A lead is a difference of two level crossings, each interpolated inside the save interval
# that holds it. It is resolved when at least this many saved times lie between the two
# crossings (ends included): at such a save one curve has passed its mark and the other has not,
# so the saves themselves order them. Within one save interval the order is the interpolation's
# alone (3 saves, one per decade: every crossing shares the last interval), so the lead is NaN.
MIN_SAVES_BETWEEN = 1


def saves_between(t, a, b):
    """How many saved times lie in [min(a, b), max(a, b)] (to rounding: a crossing interpolated
    onto a save counts it), over the leading axes of a and b; 0 where a == b or either is NaN.
    t: (T,) or broadcastable to a's shape + (T,)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    lo, hi = np.fmin(a, b)[..., None], np.fmax(a, b)[..., None]
    tb = np.asarray(t, float)
    tol = 1e-9 * np.maximum(np.abs(hi), 1e-300)
    with np.errstate(invalid="ignore"):
        inside = (tb >= lo - tol) & (tb <= hi + tol) & (hi > lo)
    return np.sum(inside, axis=-1)


# the grok job's and figures' curve sets name each curve's replicas (R, T) "replicas.NAME"
REPLICAS_PREFIX = "replicas."


def _check_replicas(curves: dict, replicas) -> int:
    """replicas (name -> (..., R, T)) against the checked curves (name -> (..., T)): the same
    names, real, R >= 2 the same for every name, leading axes and T those of the curve.
    Returns R (the arrays checked in place of the given ones)."""
    mapping("replicas", replicas, "each curve's replicas (name -> (..., R, T) array)")
    if set(replicas) != set(curves):
        raise InputError(f"replicas: needs exactly the curves' names {sorted(curves)}, got {sorted(replicas)}")
    hint = " (a Solution's replicas are (T, R): pass their transpose)"
    R = None
    for k in list(replicas):
        v = real_array(f"replicas[{k!r}]", replicas[k])
        want = curves[k].shape[:-1] + (v.shape[-2] if v.ndim >= 2 else -1, curves[k].shape[-1])
        if v.ndim < 2 or v.shape != want or (R is not None and v.shape[-2] != R):
            raise InputError(f"replicas[{k!r}]: shape {v.shape} is not {k}'s {curves[k].shape} with a replica "
                             f"axis before time{'' if R is None else f' ({R} replicas, as the others)'}{hint}")
        R = v.shape[-2]
        if R < 2:
            raise InputError(f"replicas[{k!r}]: a jackknife needs at least 2 replicas, got {R}")
        replicas[k] = v
    return R


def jackknife_se(fn, curves: dict, replicas: dict):
    """Standard error of a quantity derived from several curves at once (a lead between two
    crossings, a gap), by the jackknife over the replicas (or seeds) that estimate them.

    curves: name -> (..., T) estimates. replicas: name -> (..., R, T), each replica's own
    estimate of that curve (a solve's `Solution.replicas` with its replica axis moved before
    time; an ensemble's seeds), for every curve. fn(curves) -> an array over the leading axes,
    or a dict of them, NaN where undefined. The i-th leave-one-out curve is the estimate moved
    by the other replicas' mean less all of theirs, c + (mean - v_i) / (R - 1), so a curve that
    is not the replicas' plain mean (a loss of the pooled outputs) keeps its own level. Returns
    sqrt((R - 1) / R sum_i (fn_i - mean_i fn_i)^2), shaped as fn's value (a dict for a dict; fn's
    values are over the curves' leading axes), NaN wherever fn is NaN for a left-out replica, and
    wherever a replica has a non-finite value at any save (a late-diverged seed). For a
    smooth fn it is the delta method's error with the curves' covariances included; use R - 1
    degrees of freedom, as for a solve's `error`."""
    if not callable(fn):
        raise InputError(f"fn: must be a function of a dict of curves, got {type(fn).__name__}")
    mapping("curves", curves, "curves (name -> (..., T) array)")
    curves = {k: real_array(f"curves[{k!r}]", v) for k, v in curves.items()}
    bad = [k for k, v in curves.items() if v.ndim < 1 or v.shape[-1] < 2]
    if bad:
        raise InputError(f"curves: {bad} must be curves over at least two saved times (last axis)")
    replicas = dict(replicas) if isinstance(replicas, Mapping) else replicas
    R = _check_replicas(curves, replicas)
    means = {k: np.mean(v, axis=-2) for k, v in replicas.items()}
    values = [fn({k: c + (means[k] - replicas[k][..., i, :]) / (R - 1) for k, c in curves.items()})
              for i in range(R)]
    # a replica with a non-finite value anywhere (a seed diverged late) leaves the error unknown:
    # the leave-one-out curves lose that tail, and a time read off the rest is another curve's
    bad = np.zeros(np.broadcast_shapes(*(v.shape[:-2] for v in replicas.values())), bool)
    for v in replicas.values():
        bad = bad | ~np.all(np.isfinite(v), axis=(-2, -1))

    def spread(vals):
        a = np.stack([np.asarray(v, float) for v in vals])
        out = np.sqrt((R - 1) / R * np.sum((a - a.mean(axis=0)) ** 2, axis=0))
        return np.where(bad, np.nan, out)
    if isinstance(values[0], Mapping):
        return {k: spread([v[k] for v in values]) for k in values[0]}
    return spread(values)


def early_warning(t, test_loss, measures: dict, *, rates=(), min_saves: int = MIN_SAVES_BETWEEN,
                  replicas: dict | None = None) -> dict:
    """Lead time of each progress measure over the test-loss drop (docs/conventions.md).

    t_drop: `drop_time` of the test loss; each measure's t_change: `change_time` (the names in
    `rates` are rates, e.g. a diffusion); lead = t_drop - t_change where the saves resolve it,
    i.e. at least `min_saves` saved times lie between the two (`saves_between`), else NaN
    (`resolved` False: the order of the two crossings is the interpolation's alone); leads =
    lead > 0 (False where unresolved).

    replicas: optional, "test_loss" and each measure's name -> (..., R, T), the replicas (or
    seeds) behind the curves (`jackknife_se`): the result then also holds standard errors
    "t_drop_se" and per measure "t_change_se" and "lead_se" (NaN where the time or lead is;
    R - 1 degrees of freedom). A lead's two crossings share the replicas' errors: the
    jackknife counts their covariance, which two separate errors would not.

    Returns {"t_drop", "observed", name: {"t_change", "lead", "leads", "resolved",
    "saves_between"}} (arrays over leading axes)."""
    mapping("measures", measures, "progress measures (name -> curve)")
    bad = [k for k in measures if not isinstance(k, str) or k in ("test_loss", "t_drop", "t_drop_se", "observed")]
    if bad:
        raise InputError(f"measures: names must be strings other than 'test_loss', 't_drop', 't_drop_se' and 'observed' "
                         f"(the test loss and the result's keys), got {bad!r}")
    rates = names("rates", rates)
    min_saves = checks.integer("min_saves", min_saves, minimum=1)
    t, c = _check_curves(t, {"test_loss": test_loss, **{f"measures[{k!r}]": v for k, v in measures.items()}})
    c.update({k: c.pop(f"measures[{k!r}]") for k in measures})
    if replicas is not None:
        replicas = dict(replicas) if isinstance(replicas, Mapping) else replicas
        _check_replicas(c, replicas)

    def times(cur):
        td = drop_time(t, cur["test_loss"])[0]
        tcs = {k: change_time(t, cur[k], rate=k in rates) for k in measures}
        return {"t_drop": td, **{f"t_change.{k}": v for k, v in tcs.items()},
                **{f"lead.{k}": td - v for k, v in tcs.items()}}
    t_drop, observed = drop_time(t, c["test_loss"])
    out = {"t_drop": t_drop, "observed": observed}
    se = jackknife_se(times, c, replicas) if replicas is not None else None
    if se is not None:
        out["t_drop_se"] = np.where(np.isfinite(t_drop), se["t_drop"], np.nan)
    for name in measures:
        tc = change_time(t, c[name], rate=name in rates)
        n = saves_between(t, t_drop, tc)
        resolved = np.isfinite(t_drop) & np.isfinite(tc) & (n >= min_saves)
        lead = np.where(resolved, t_drop - tc, np.nan)
        out[name] = {"t_change": tc, "lead": lead, "leads": np.where(resolved, lead > 0, False),
                     "resolved": resolved, "saves_between": n}
        if se is not None:
            out[name]["t_change_se"] = np.where(np.isfinite(tc), se[f"t_change.{name}"], np.nan)
            out[name]["lead_se"] = np.where(resolved, se[f"lead.{name}"], np.nan)
    return out


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial fraction (95% for z = 1.96); (nan, nan) for n = 0."""
    n = checks.integer("n", n, minimum=0, maximum=2 ** 63 - 1)    # a count (1e300: 4 n^2 overflowed a float)
    successes = checks.integer("successes", successes, minimum=0, maximum=n)
    z = checks.real("z", z, positive=True)
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # it contains p (exactly 1 at successes = n, 0 at none: rounding put 6 of 6 at 1 - 1e-16, and
    # the measures figure's error bar, p - lo / hi - p, below zero)
    return min(p, max(0.0, mid - half)), max(p, min(1.0, mid + half))


def lead_verdict(leads: dict) -> dict:
    """For each measure, the fraction of runs (with an observed drop) in which it leads the
    test-loss drop, with its Wilson 95% interval. leads: name -> boolean array over runs."""
    mapping("leads", leads, "boolean arrays over runs (measure name -> leads)")
    leads = {name: boolean_array(f"leads[{name!r}]", v) for name, v in leads.items()}
    out = {}
    for name, v in leads.items():
        v = np.asarray(v, bool).ravel()
        lo, hi = wilson_interval(int(v.sum()), v.size)
        out[name] = {"runs": int(v.size), "leading": int(v.sum()),
                     "fraction": float(v.mean()) if v.size else float("nan"), "ci95": [lo, hi]}
    return out


def overlap_diffusion(f_train, y_train, x_train, beta, mean, second_moment, *, gamma0: float,
                      eps: float, eta0: float, batch_size: int):
    """The diffusion of SGD along the planted direction in the Kumar model, per unit time.

    With fixed readouts and phi = h + (eps/2) h^2, one sample's contribution to the rate of the
    planted overlap O = beta^T S beta is c_mu = 2 gamma0 Delta_mu (b . m + eps b^T S x~_mu)(b . x~_mu)
    (x~ = x / sqrt(D), S the weights' second moment, m their mean); a minibatch of B distinct
    points of P moves O by eta0 times the batch mean of c, so the diffusion is
    D = eta0 Var_mu(c) (P - B) / (B (P - 1)). Arrays: f_train (T, P), mean (T, D),
    second_moment (T, D, D); 1 <= batch_size <= P (InputError otherwise). Returns (T,)."""
    x = np.asarray(x_train, dtype=np.float64) / np.sqrt(np.shape(x_train)[1])
    b = np.asarray(beta, dtype=np.float64)
    delta = np.asarray(y_train)[None] - np.asarray(f_train)                    # (T, P)
    bx = x @ b                                                                  # (P,)
    lin = np.asarray(mean) @ b                                                  # (T,)
    quad = np.einsum("i,tij,pj->tp", b, np.asarray(second_moment), x)
    c = 2 * gamma0 * delta * (lin[:, None] + eps * quad) * bx[None]
    P = c.shape[-1]
    B = checks.integer("batch_size", batch_size, minimum=1, maximum=P)     # (B distinct points of P)
    fpc = (P - B) / (P - 1) if P > 1 else 0.0
    return eta0 * np.var(c, axis=-1) / B * fpc


# ------------------------------------------------------------ the Kumar toy model

def kumar_decomposition(state: dict, beta, gamma0: float, eps: float) -> dict:
    """The exact population test loss of the Kumar model and its three parts.

    With x~ = x / sqrt(D), f(x) = (1/gamma0) [m . x~ + (eps/2) x~^T (S - I) x~] and
    y = (D/2) (beta . x~)^2, so f - y = m . x~ / gamma0 + x~^T A x~ / 2 with
    A = (eps/gamma0)(S - I) - D beta beta^T; Isserlis' theorem for x~ ~ N(0, I/D) gives
        E(f - y)^2 = (Tr A / D)^2 / 4 + ||A||_F^2 / (2 D^2) + |m|^2 / (gamma0^2 D).

    Args:
        state: `Solution.state` of the poly2-fixed closure in weight coordinates
            (info["basis"] == "weights"): "mean" (T, D), "second_moment" (T, D, D).
        beta: (D,) unit target direction (data.meta["beta"]).
    Returns:
        {"variance", "misalignment", "linear_power", "total"}, each (T,).
    """
    S, beta = _state_moment(state, beta)
    m = real_array("state['mean']", _state_entry(state, "mean"), min_ndim=1)
    if m.shape[:-1] != S.shape[:-2]:
        raise InputError(f"state: 'mean' of shape {m.shape} and 'second_moment' of shape {S.shape} "
                         "differ in their time axes")
    m, S = np.asarray(state["mean"]), np.asarray(state["second_moment"])     # as given (dtype kept)
    gamma0 = checks.real("gamma0", gamma0, positive=True)
    eps = checks.real("eps", eps)
    D = beta.shape[0]
    if S.shape[-1] != D or m.shape[-1] != D:
        raise InputError(f"state is in {S.shape[-1]} coordinates, beta in {D}: the decomposition "
                         "needs the weight basis (D <= P + P*)")
    A = (eps / gamma0) * (S - np.eye(D)) - D * np.outer(beta, beta)
    var = 0.25 * (np.trace(A, axis1=-2, axis2=-1) / D) ** 2
    mis = 0.5 * np.sum(A * A, axis=(-2, -1)) / D ** 2
    lin = np.sum(m * m, axis=-1) / (gamma0 ** 2 * D)
    return {"variance": var, "misalignment": mis, "linear_power": lin, "total": var + mis + lin}


def planted_overlap(state: dict, beta) -> np.ndarray:
    """beta^T S beta: the second moment of the weights along the planted direction (1 at t = 0)."""
    S, beta = _state_moment(state, beta)
    if beta.shape[0] != S.shape[-1]:
        raise InputError(f"beta has {beta.shape[0]} coordinates, state['second_moment'] {S.shape[-1]}")
    return np.einsum("i,...ij,j->...", beta, np.asarray(state["second_moment"]), beta)


def _state_entry(state, key):
    """state[key] of a closure state (a dict), or an InputError saying what state should be."""
    if not isinstance(state, Mapping) or key not in state:
        raise InputError(f"state must be the dict Solution.state of the closure, with 'mean' (T, D) and "
                         f"'second_moment' (T, D, D), got {type(state).__name__}"
                         + (f" with keys {sorted(map(str, state))}" if isinstance(state, Mapping) else ""))
    return state[key]


def _state_moment(state, beta):
    """The state's second moment (..., D, D) and beta (D',) as float arrays, checked."""
    S = real_array("state['second_moment']", _state_entry(state, "second_moment"), min_ndim=2)
    if S.shape[-1] != S.shape[-2]:
        raise InputError(f"state['second_moment'] must be square matrices (..., D, D), got shape {S.shape}")
    beta = real_array("beta", beta)
    if beta.ndim != 1 or beta.size == 0 or not np.all(np.isfinite(beta)):
        raise InputError(f"beta must be one finite direction of shape (D,), got shape {beta.shape}")
    return S, beta


# ------------------------------------------------------------ neuron measures

def _direction(u):
    """An InputError unless u is one finite, nonzero direction (D,)."""
    v = real_array("u", u)
    if v.ndim != 1 or not np.all(np.isfinite(v)) or not np.any(v != 0):
        raise InputError(f"u must be one finite nonzero direction of shape (D,), got shape {v.shape}"
                         + (f": {v.tolist()}" if v.size <= 8 else ""))


def direction_overlap(u):
    """Neuron measure (w . u)^2 / |u|^2 (its average is u^T S u / |u|^2)."""
    _direction(u)
    u = jnp.asarray(u) / jnp.linalg.norm(jnp.asarray(u))

    def measure(w, w0):
        return jnp.atleast_1d(jnp.dot(w, u) ** 2)
    measure.__name__ = "direction_overlap"
    return measure


def direction_alignment(u):
    """Neuron measures [(w . u)^2 / |u|^2, |w|^2 / D]: averaged over units, their ratio is the
    planted alignment, the weights' second moment along u relative to an average direction
    (1 for isotropic weights, D when all of it lies along u; `alignment_ratio`)."""
    _direction(u)
    u = jnp.asarray(u) / jnp.linalg.norm(jnp.asarray(u))

    def measure(w, w0):
        return jnp.stack([jnp.dot(w, u) ** 2, jnp.dot(w, w) / w.shape[0]])
    measure.__name__ = "planted_alignment"
    return measure


def alignment_ratio(measures) -> np.ndarray:
    """The planted alignment from `direction_alignment`'s two averaged components (..., 2)."""
    m = real_array("measures", measures, min_ndim=1)
    if m.shape[-1] != 2:
        raise InputError(f"measures must end in the two components of direction_alignment, got shape {m.shape}")
    return m[..., 0] / m[..., 1]


def planted_alignment(state: dict, beta) -> np.ndarray:
    """beta^T S beta / (Tr S / D): the closure's second moment along the planted direction
    relative to an average direction (1 at t = 0 for N(0, I) weights; D when aligned)."""
    _state_moment(state, beta)
    S = np.asarray(state["second_moment"])
    D = S.shape[-1]
    return planted_overlap(state, beta) / (np.trace(S, axis1=-2, axis2=-1) / D)


def fourier_ipr(p: int):
    """Neuron measure for modular addition: the inverse participation ratio of the
    first-layer weights over the real Fourier modes of Z_p, sum_k P_k^2 / (sum_k P_k)^2,
    with P_k the power at frequency k and p - k together (k = 1 .. p // 2; both input
    halves added). 1 for a single mode, 1 / (p // 2) for a flat spectrum with p odd (Gromov
    2023); with p even the self-conjugate mode p/2 carries half the others' power, and a flat
    spectrum gives (4 (p/2 - 1) + 1) / (p - 1)^2 (13/49 at p = 8, not 1/4)."""
    p = checks.integer("p", p, minimum=2)
    k = np.arange(1, p // 2 + 1)
    ang = 2 * np.pi * np.outer(k, np.arange(p)) / p
    # the real mode k carries the powers of the complex frequencies k and p - k (equal for
    # real weights), except k = p/2 (p even), which is its own conjugate
    mult = jnp.asarray(np.where(2 * k == p, 1.0, 2.0))
    cos, sin = jnp.asarray(np.cos(ang)), jnp.asarray(np.sin(ang))

    def measure(w, w0):
        power = 0.0
        for half in (w[:p], w[p:2 * p]):
            power = power + mult * ((cos @ half) ** 2 + (sin @ half) ** 2)
        return jnp.atleast_1d(jnp.sum(power ** 2) / jnp.sum(power) ** 2)
    measure.__name__ = "fourier_ipr"
    return measure


def max_change():
    """Neuron measure ||w_t - w_0||_inf (Barak et al. 2022 use the max over the network)."""
    def measure(w, w0):
        return jnp.atleast_1d(jnp.max(jnp.abs(w - w0)))
    measure.__name__ = "max_change"
    return measure


def fit_power_law_decay(kappa, t_grok):
    """Fit t_grok = c kappa^b on the finite points: returns a `LogLogFit` (slope b)."""
    from .fitting import loglog_fit

    kappa, t_grok, ok = _power_law_points(kappa, t_grok)
    return loglog_fit(kappa[ok], t_grok[ok])


def _power_law_points(kappa, t_grok):
    """(kappa, t_grok, ok): the points a power law is fitted on (finite, positive), at least two
    distinct kappa among them, else an InputError."""
    kappa, t_grok = _decay_points(kappa, t_grok)
    ok = np.isfinite(t_grok) & (t_grok > 0) & (kappa > 0)
    if np.unique(kappa[ok]).size < 2:
        raise InputError(f"need at least two distinct kappa with a finite grokking time, got "
                         f"{np.unique(kappa[ok]).size}")
    return kappa, t_grok, ok


def power_law_exponent_se(kappa, t_grok, t_se) -> float:
    """One standard error of `fit_power_law_decay`'s exponent from the times' own errors (say a
    sampled DMFT's `GrokTimes.t_test_se`; the points independent, as solve_batch's are): the
    least-squares slope is linear in log t, so its variance is sum_i w_i^2 (se_i / t_i)^2 with
    w_i = (log kappa_i - mean) / sum_j (log kappa_j - mean)^2, over the points the fit uses. It
    says how far the times' sampling moves the exponent, where the fit's own stderr (from its
    residuals; none through two points) says how far the points stray from a power law. NaN
    where a used point has no error."""
    kappa, t_grok, ok = _power_law_points(kappa, t_grok)
    t_se = _nonnegative("t_se", real_array("t_se", t_se).ravel())
    if t_se.shape != t_grok.shape:
        raise InputError(f"t_se must have one value per point, as t_grok ({t_grok.size}), got {t_se.size}")
    lx = np.log(kappa[ok])
    w = (lx - lx.mean()) / np.sum((lx - lx.mean()) ** 2)
    return float(np.sqrt(np.sum((w * t_se[ok] / t_grok[ok]) ** 2)))


def _decay_points(kappa, t_grok):
    """(kappa, t_grok) as float arrays of one shape, kappa finite (a NaN t_grok is a point that
    never grokked, dropped by the fits); else an InputError naming them."""
    kappa, t_grok = real_array("kappa", kappa).ravel(), real_array("t_grok", t_grok).ravel()
    if kappa.shape != t_grok.shape:
        raise InputError(f"kappa and t_grok must have one value each per point, got {kappa.size} "
                         f"and {t_grok.size}")
    if not np.all(np.isfinite(kappa)):
        raise InputError(f"kappa must be finite, got {kappa}")
    return kappa, t_grok


def fit_inverse_decay(kappa, t_grok):
    """Fit t_grok = A / kappa + B (least squares in 1 / kappa): returns (A, B, se_A, se_B), each
    se one standard error (a 95% interval takes the t quantile with n - 2 dof; coverage tested).

    The prediction of Lyu et al. (2024) is A = ln(alpha) / L with alpha = 1/gamma0 and L the
    degree of the output in the weights; B is the kappa-independent length of the rich phase."""
    kappa, t_grok = _decay_points(kappa, t_grok)
    ok = np.isfinite(t_grok) & (kappa > 0)
    if ok.sum() < 3 or np.unique(kappa[ok]).size < 2:
        raise InputError(f"need at least three kappa with a finite grokking time, two of them distinct, "
                         f"got {int(ok.sum())} ({np.unique(kappa[ok]).size} distinct)")
    X = np.stack([1 / kappa[ok], np.ones(ok.sum())], axis=1)
    coef, *_ = np.linalg.lstsq(X, t_grok[ok], rcond=None)
    resid = t_grok[ok] - X @ coef
    dof = max(int(ok.sum()) - 2, 1)
    cov = (resid @ resid / dof) * np.linalg.inv(X.T @ X)
    return float(coef[0]), float(coef[1]), float(np.sqrt(cov[0, 0])), float(np.sqrt(cov[1, 1]))
