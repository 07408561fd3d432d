"""Deep linear networks: theory (gradient flow, per-mode SDE, stationary laws) against networks.

Each function compares one prediction of `dmft.deep_linear` with a `networks.DeepLinearRun`
and returns numbers plus a verdict against a stated tolerance:

- `compare_modes`: ensemble mean and spread of each mode against the SDE paths at several
  times (z-scores of the mean difference; ratios of the spreads, within a band widened by their
  sampling error);
- `compare_diffusion`: the measured per-step diffusion along each mode against D_i(pi) at
  the measured pi (pooled ratio over seeds and times, with its standard error);
- `stationary_fit`: the late-time histogram of each mode against the stationary density
  (Kolmogorov-Smirnov distance against its 1% critical value for the number of seeds);
- `staircase`: the order in which modes are learned and the loss on each plateau.

Example:
    >>> import numpy as np
    >>> from validation.deep_linear import ks_distance
    >>> x = np.linspace(-3, 3, 2001); p = np.exp(-x ** 2 / 2) / np.sqrt(2 * np.pi)
    >>> float(ks_distance(np.zeros(1), x, p)) > 0.49
    True
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

from dmft import checks
from dmft import deep_linear as dl
from dmft.errors import InputError

from .compare import ROUND_ULPS

__all__ = ["compare_modes", "spread_ratio_error", "compare_diffusion", "stationary_fit", "staircase", "ks_distance",
           "learning_times_of", "decaying_modes", "settled_targets", "mode_law"]


_ULPS = 8        # a difference of ensemble means within this many ulp of the values is rounding
# between two ensembles without spread (full-batch steps from an aligned start: every member the same,
# and the reduction exact) the rounding of thousands of steps, each side its own arithmetic, as the
# two-layer comparisons allow it: depth 1, 3000 steps, read 9-16 ulp apart and FAILed at z = -inf (a
# real mismatch is O(eta), 1e9 ulp and more)
_FLAT_ULPS = ROUND_ULPS
_GRID_ULPS = 1e4  # a stationary grid spans at least this many ulp each side (4001 distinct points)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


SPREAD_Z = 3.0    # the spread band is widened by this many sampling errors of the ratio of spreads
SPREAD_MIN_N = 10  # fewer finite members on either side: a spread is not judged (its error is not normal)
SETTLED = 0.9     # a stationary window must open after each mode's flow reaches this share of its fixed point
TIE_REL = 1e-9    # strengths this close (relative) are one step of the staircase, learned together


def spread_ratio_error(a, b) -> float:
    """The sampling error of log(std(a) / std(b)) for two independent samples of one law: by the
    delta method var(log s) = (kurtosis - 1) / (4 (n - 1)) for each (1 / (2 (n - 1)) for a normal
    law), the kurtosis that of the two samples pooled, each standardized by its own mean and
    spread (the law they share when the spreads agree). NaN for fewer than two values in either."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or b.size < 2 or not (a.std() > 0 and b.std() > 0):
        return float("nan")
    z = np.concatenate([(a - a.mean()) / a.std(), (b - b.mean()) / b.std()])
    kurtosis = float(np.mean(z ** 4))
    return float(np.sqrt(max(kurtosis - 1.0, 0.0) / 4 * (1 / (a.size - 1) + 1 / (b.size - 1))))


def _protocol(info) -> dict:
    """What a deep linear run or SDE result was computed with, from its info (empty for a result
    without a recorded configuration): depth, init scale and start, the teacher, eta0, B, decay."""
    cfg = (info or {}).get("config") or {}
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    proto = cfg.get("train") or cfg.get("sde") or {}
    out = {f"model.{k}": model[k] for k in ("depth", "init_scale", "init") if k in model}
    # (a fixed set's digest: two draws of one spectrum have other effective strengths)
    out.update({f"data.{k}": data[k] for k in ("d_in", "d_out", "singular_values", "label_noise", "P", "sha256")
                if k in data})
    out.update({k: proto[k] for k in ("eta0", "batch_size", "weight_decay") if k in proto})
    return out


def _same(a, b) -> bool:
    try:
        # (to float32 rounding: an np.float32(0.01) eta0 is the run's 0.01; a real mismatch is far larger)
        return a == b or bool(np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-6, atol=0))
    except (TypeError, ValueError):
        return False


def check_same_protocol(what: str, first: dict, second: dict, names=("the run", "the theory")) -> None:
    """InputError naming every field two results' protocols (`_protocol`) both record and
    disagree on: an SDE of another depth or batch size 'validated' networks (7 of 8 PASS at depth
    2 against 3), and a mistyped eta0 came back as a theory FAIL."""
    bad = [f"{k} ({names[0]}: {first[k]!r}, {names[1]}: {second[k]!r})" for k in first
           if k in second and not _same(first[k], second[k])]
    if bad:
        raise InputError(f"{what}: {names[0]} and {names[1]} differ in {', '.join(bad)}; compare results of "
                         "one protocol")


def _band(name: str, band) -> tuple[float, float]:
    """A (low, high) band of ratios, 0 < low <= high."""
    try:
        lo, hi = (checks.real(f"{name}[{i}]", v, positive=True) for i, v in enumerate(band))
    except (TypeError, ValueError):
        raise InputError(f"{name}: a (low, high) pair of positive ratios, got {band!r}") from None
    if lo > hi:
        raise InputError(f"{name}: low above high in {band!r}; no ratio could pass")
    return lo, hi


def _check_arguments(what: str, run, model, data, eta0, batch_size, weight_decay) -> None:
    """InputError where the run records another protocol than the arguments describe."""
    given = {**_protocol({"config": {"model": model.describe(), "data": data.describe()}}), "eta0": eta0,
             "batch_size": batch_size, "weight_decay": weight_decay}
    check_same_protocol(what, _protocol(getattr(run, "info", None)), given, ("the run", "the arguments"))


def _check_own_batches(what: str, run) -> None:
    """InputError where the run's seeds all trained on one minibatch sequence
    (`networks.train(..., batch_key=)`, info "shared_batches") under SGD: the SDE
    describes SGD's noise over independent sequences, and seeds that share theirs are one path from
    an aligned start (a helper's 64 such seeds spread by 2e-15 and read mode z's of 42 and a
    diffusion ratio of 1.08 +- 0.0 as though 64 were independent). (Full-batch descent takes no
    batch_key: `dmft.schedule.check_batch_key`.)"""
    if not (getattr(run, "info", None) or {}).get("shared_batches"):
        return
    raise InputError(f"{what}: the run's seeds all trained on one minibatch sequence (batch_key given to "
                     "networks.train): their spread is not SGD's noise, which the SDE describes over "
                     "independent sequences; train without batch_key (each seed draws its own)")


def _check_data(what: str, run, data) -> None:
    """InputError where the run records another teacher than `data` (its spectrum, noise, sizes
    or fixed set): its modes measured against another teacher's strengths read as a theory's
    failure, or as a learning time of 0."""
    ran = {k: v for k, v in _protocol(getattr(run, "info", None)).items() if k.startswith("data.")}
    check_same_protocol(what, ran, _protocol({"config": {"data": data.describe()}}), ("the run", "the data"))


def compare_modes(run, sde, times=None, *, z_max: float = 5.0, spread: tuple = (0.75, 1.33),
                  effect: float = 0.25, target_rel: float = 0.01, spread_z: float = SPREAD_Z) -> list[dict]:
    """Mean and spread of each mode, networks against SDE paths, at the saved times `times`
    (default: four times spread over the run). One row per (mode, time) with the z-score of
    the mean difference (over sqrt(var_n / n + var_sde / n_sde), the networks' variance var_n
    no less than the SDE's var_sde: the law tested is the SDE's), the difference over the SDE's
    spread and over the mode's target, and the ratio of the standard deviations.

    A mean passes by any one of three named rules, and the row says which (`mean_rule`):
    "z" (|z| <= z_max), "effect" (|difference| <= effect x the SDE's spread: with a thousand
    networks the standard error resolves the reduction's known O(eta / B) cross-mode shift, a
    few percent of the spread), or "target" (|difference| <= target_rel x the mode's target,
    where the SDE's mean is within target_rel of the target or below its start, shrunk by weight
    decay: an ensemble collapsed where it stays has a vanishing spread, against which any
    difference is many standard errors; on a plateau, small and growing, it is no rule: it
    passed networks at twice the SDE's mean); "z" only where the difference is within the target or
    three SDE spreads (diverging seeds' scatter made a z of -1 of a mean 1e26 away). Spreads are
    compared where the SDE's spread exceeds target_rel x the target (below it `spread_compared`
    is False, and the networks' spread must be below spread[1] times that, widened by spread_z
    of its own log sampling error, 1 / sqrt(2 (n - 1)), or the row FAILs
    with a "spread_note": the SDE collapsed onto its target, the networks not): the ratio passes
    within `spread` widened by `spread_z` of its own sampling errors (`spread_ratio_error`, on a log
    scale: "spread_band" is the band applied), so that a few seeds' sampling noise is not read
    as a mismatch (16 seeds of a law the SDE matches exactly gave ratios of 0.58); with fewer
    than SPREAD_MIN_N finite members on either side the spread is not judged ("spread_note").
    Non-finite members (diverged seeds or paths) are left out and counted (fewer than two finite
    values on a side FAIL; a run or SDE of one member SKIPs: nothing to judge). The default times
    leave out t = 0 (both start from the same values), and a difference of the means within a few
    ulp of the values (of the networks' dtype) counts as none: it is rounding (a z of -7.9 on a
    2.8e-17 difference between the starts was reported); between two ensembles with no spread
    beyond rounding (full-batch steps from an aligned start, where the reduction is exact) within
    4096 ulp, the rounding of thousands of steps (depth 1, 3000 steps: 9-16 ulp, a FAIL at z = -inf)."""
    z_max = checks.real("z_max", z_max, positive=True)
    spread = _band("spread", spread)
    effect = checks.real("effect", effect, nonnegative=True)
    target_rel = checks.real("target_rel", target_rel, nonnegative=True)
    spread_z = checks.real("spread_z", spread_z, nonnegative=True)
    if run.t.shape != sde.t.shape or not np.allclose(run.t, sde.t):
        raise InputError("compare_modes: the run and the SDE need the same saved times")
    check_same_protocol("compare_modes", _protocol(getattr(run, "info", None)), _protocol(getattr(sde, "info", None)),
                        ("the run", "the SDE"))
    _check_own_batches("compare_modes", run)
    T = run.t.size
    if times is not None:
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(times)) or np.any(times < run.t[0]) or np.any(times > run.t[-1]):
            raise InputError(f"times: must lie within the run's saved times [{run.t[0]:g}, {run.t[-1]:g}] "
                             f"(each is taken at the nearest save), got {times.tolist()}")
    # by default four saves after the start (which both set alike: rounded up, so that few saves
    # do not bring in t = 0, where any difference is rounding and its z-score meaningless)
    idx = sorted({int(i) for i in (np.ceil(np.linspace(0, T - 1, 5)[1:]) if times is None else
                                   [int(np.argmin(np.abs(run.t - t))) for t in times])})
    target = np.asarray(sde.info.get("s_effective", np.nanmax(np.abs(sde.modes), axis=(0, 1))))
    info = getattr(run, "info", None)
    eps = np.finfo(np.float32 if isinstance(info, dict) and info.get("dtype") == "float32" else np.float64).eps
    rows = []
    for i in range(run.modes.shape[-1]):
        # the SDE's start (the target rule's "shrunk below its start"; inf where no path is finite)
        start = sde.modes[:, 0, i]
        start = abs(float(np.mean(start[np.isfinite(start)]))) if np.any(np.isfinite(start)) else math.inf
        for k in idx:
            a, b = run.modes[:, k, i], sde.modes[:, k, i]
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            scale = abs(target[i])
            if a.size < 2 or b.size < 2:
                rows.append({"mode": i, "t": float(run.t[k]), "networks_n": int(a.size), "sde_n": int(b.size),
                             "networks_mean": float("nan"), "sde_mean": float("nan"), "networks_std": float("nan"),
                             "sde_std": float("nan"), "z": float("nan"), "effect": float("nan"),
                             "target_rel": float("nan"), "std_ratio": float("nan"), "std_ratio_log_se": float("nan"),
                             "spread_band": [float("nan")] * 2, "spread_compared": False, "mean_rule": "",
                             # one member in all: nothing to judge (as two-layer checks SKIP under two
                             # seeds); fewer finite than two of more: they diverged, a FAIL
                             **({"verdict": "SKIP", "note": "one member: no spread to judge a mean against"}
                                if min(run.modes.shape[0], sde.modes.shape[0]) < 2 else {"verdict": "FAIL"})})
                continue
            # the networks' variance no less than the SDE's: under the law tested they share the SDE's
            # spread, and a few members that missed a skewed law's tail (a mode mid-escape) have a
            # sample variance far below it, which read their mean as many errors off (z up to 15:
            # 4 and 8 SDE paths against 1024 of the same SDE FAILed 26% and 10% of 200 dln-protocol
            # ensembles on the mean, none since); a spread really smaller is the spread check's
            se = np.sqrt(max(a.var(ddof=1), b.var(ddof=1)) / a.size + b.var(ddof=1) / b.size)
            diff = a.mean() - b.mean()
            size = max(np.abs(a).max(), np.abs(b).max())
            flat = max(a.std(), b.std()) <= _ULPS * eps * size          # no spread on either side but rounding
            if abs(diff) <= (_FLAT_ULPS if flat else _ULPS) * eps * size:
                diff = 0.0                 # rounding of the values themselves (at t = 0, say): no difference
            # two ensembles without spread (full-batch steps from an aligned start: every member
            # the same) agree only if their values do
            z = float(diff / se) if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
            ratio = float(a.std() / b.std()) if b.std() > 0 else float("nan")
            eff = float(abs(diff) / b.std()) if b.std() > 0 else (0.0 if diff == 0 else float("inf"))
            rel = float(abs(diff) / scale) if scale > 0 else float("inf")
            # a z inflated by the networks' own scatter does not pass a mean further from the SDE's
            # than the target and three SDE spreads (4 seeds at -1e26 +- 1.5e26 against 2.5: z = -1)
            near = abs(diff) <= max(scale, 3 * b.std())
            # the target rule is for an ensemble collapsed where it stays: at its target, or shrunk
            # below its start by weight decay; on a plateau (small values, growing) it passed any
            # mismatch under 1% of the target (twice the SDE's mean, z = 5.5, during an escape)
            settled = abs(b.mean() - target[i]) <= target_rel * scale or abs(b.mean()) < start
            rule = ("z" if abs(z) <= z_max and near else "effect" if eff <= effect else
                    "target" if rel <= target_rel and settled else "")
            few = min(a.size, b.size) < SPREAD_MIN_N
            compared = bool(b.std() > target_rel * scale) and not few
            log_se = spread_ratio_error(a, b)
            widen = math.exp(spread_z * log_se) if np.isfinite(log_se) else 1.0
            band = [float(spread[0] / widen), float(spread[1] * widen)]
            spread_ok = (not compared) or (band[0] <= ratio <= band[1])
            # an SDE collapsed onto its target (spread below target_rel x the target) needs networks
            # collapsed too: 61 surviving seeds at 2.29 +- 1.77 against 3 +- 3e-15 passed by their z
            # (with few members too, their spread's own sampling error allowed: spread_z of its log
            # error ~ 1 / sqrt(2 (n - 1)), as the compared band is widened; a bare 1.33 x 1% FAILed
            # 7 of 400 correct 16-seed rows whose SDE spread sat just under the threshold)
            room = spread[1] * math.exp(spread_z / math.sqrt(2 * (a.size - 1))) * target_rel * scale
            scattered = b.std() <= target_rel * scale and a.std() > room
            spread_ok = spread_ok and not scattered
            rows.append({"mode": i, "t": float(run.t[k]), "networks_n": int(a.size), "sde_n": int(b.size),
                         "networks_mean": float(a.mean()), "sde_mean": float(b.mean()),
                         "networks_std": float(a.std()), "sde_std": float(b.std()), "z": z, "effect": eff,
                         "target_rel": rel, "std_ratio": ratio, "std_ratio_log_se": log_se, "spread_band": band,
                         "spread_compared": compared, "mean_rule": rule,
                         **({"spread_note": f"fewer than {SPREAD_MIN_N} finite values on a side: a spread from so "
                                            "few is not judged"} if few and not scattered else {}),
                         **({"spread_note": f"the SDE has collapsed onto the target (spread {b.std():.2g}) and the "
                                            f"networks have not (spread {a.std():.3g})", "scattered": True}
                            if scattered else {}),
                         "verdict": _verdict(bool(rule) and spread_ok)})
    return rows


def compare_diffusion(run, model, data, *, eta0: float, batch_size: int, after: float = 0.0,
                      band: tuple = (0.7, 1.4), floor: float = 0.01, weight_decay: float = 0.0) -> list[dict]:
    """Measured diffusion against D_i(measured pi), one row per mode: the pooled ratio
    sum(measured) / sum(D_i) over seeds and saved times t > after where D_i exceeds `floor` x its
    largest value (where D_i itself vanishes, at a mode's start and, without label noise, at its
    target, the measured diffusion is the noise leaking from the other modes through
    misalignment, which the reduction drops). The verdict: the ratio within `band` widened by
    SPREAD_Z of its standard errors on a log scale ("band": the band applied), as the modes'
    spread band is (a verdict that ignored its error flipped between estimates one error apart),
    SPREAD_Z read as the normal tail it stands for in Student t with seeds - 1 dof (the error is
    estimated from the seeds: 9.2 errors at 4 seeds, 3.01 at 1024).
    A record counts where D_i also exceeds `floor` x the largest D_j of any mode at that record:
    the leak is of the order of the misalignment squared times the other modes' D, so below it
    the reduction's prediction is not what is measured (at the saddles, before any mode is
    learned, the modes' D are alike and are compared).

    Each measurement is exact (a fixed set's P points; online data's closed form) or, for a run
    given a `probe`, a sample variance over its fresh samples: unbiased, but skewed, so that a
    median of per-record ratios is biased low for few probes (0.41 at probe = 4 where the mean
    is 1); the pooled ratio is not. Its standard error ("stderr") counts the seeds
    as the independent units (the ratio estimator's delta method on per-seed sums: the records
    of one seed are correlated through its weights); "p10", "p90" are the percentiles of the
    single records' ratios, the spread of one measurement. A mode that weight decay switches off
    (`decaying_modes`) stays where D_i vanishes: a SKIP row; so does a mode without gradient noise
    (D_i = 0 wherever a network is finite: full-batch steps, B = P; "no_noise"), which has nothing
    to compare (it was a FAIL with a NaN ratio), and so does a mode swamped by the others wherever
    it has a D_i of its own ("swamped": its largest D_i over the largest mode's D at that record):
    one still at its saddle while the others are learned, whose measured diffusion is their
    noise leaking in (a 400-step `dmft dln` FAILed such a mode with ratios of 92 and 261)."""
    after = checks.real("after", after, nonnegative=True)
    band = _band("band", band)
    floor = checks.real("floor", floor, nonnegative=True, below=1.0)
    _check_arguments("compare_diffusion", run, model, data, eta0, batch_size, weight_decay)
    _check_own_batches("compare_diffusion", run)
    D = dl.diffusion(model, data, run.modes, eta0=eta0, batch_size=batch_size)
    loudest = np.max(np.where(np.isfinite(D), D, -np.inf), axis=-1, keepdims=True)     # per seed and save
    # records of a mode's own (late enough, above its own floor, finite), and those not swamped; the
    # floor is that of the records compared (t > after): a large random start's D at t = 0, 1e4 times
    # any later one, set a floor above every record and FAILed each mode with none to compare
    late = (run.t > after)[None, :, None]
    top = np.max(np.where(late & np.isfinite(D), D, -np.inf), axis=(0, 1), keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)        # (no finite late record: none is compared anyway)
    own = late & (D > floor * top) & np.isfinite(run.diffusion) & np.isfinite(D)
    keep = own & (D > floor * loudest)
    decays = decaying_modes(model, data, weight_decay)
    nan = float("nan")
    rows = []
    for i in range(run.modes.shape[-1]):
        if decays[i]:
            rows.append({"mode": i, "ratio": nan, "stderr": nan, "p10": nan, "p90": nan, "n": 0, "seeds": 0,
                         "decays": True, "verdict": "SKIP"})
            continue
        Di = D[..., i][np.isfinite(D[..., i])]
        if Di.size and not np.any(Di != 0):           # no gradient noise: nothing to compare
            rows.append({"mode": i, "ratio": nan, "stderr": nan, "p10": nan, "p90": nan, "n": 0, "seeds": 0,
                         "no_noise": True, "verdict": "SKIP"})
            continue
        k, mine = keep[..., i], own[..., i]
        if mine.any() and not k.any():        # swamped wherever it has a D of its own: nothing of its own
            with np.errstate(invalid="ignore", divide="ignore"):
                share = float(np.max(D[..., i][mine] / loudest[..., 0][mine]))
            rows.append({"mode": i, "ratio": nan, "stderr": nan, "p10": nan, "p90": nan, "n": 0, "seeds": 0,
                         "swamped": share, "verdict": "SKIP"})
            continue
        measured = np.where(k, run.diffusion[..., i], 0.0).sum(axis=1)            # per seed
        predicted = np.where(k, D[..., i], 0.0).sum(axis=1)
        used = k.any(axis=1)
        measured, predicted = measured[used], predicted[used]
        n_seeds = int(used.sum())
        ratio = float(measured.sum() / predicted.sum()) if n_seeds else nan
        stderr = (float(np.sqrt(n_seeds / (n_seeds - 1) * np.sum((measured - ratio * predicted) ** 2))
                        / predicted.sum()) if n_seeds > 1 else nan)
        single = run.diffusion[..., i][k] / D[..., i][k]
        q = np.percentile(single, [10, 90]).tolist() if single.size else [nan] * 2
        # the band widened by SPREAD_Z of the ratio's own sampling errors (log scale), as the modes'
        # spread band is: 1.70 +- 0.28 (32 seeds) FAILed where 1.38 +- 0.15 (64 seeds) PASSed. The
        # error is estimated from the seeds: SPREAD_Z is taken as the normal tail it stands for, in
        # Student t with seeds - 1 dof (3 at 2-4 seeds of a probe's noisy records FAILed 9-29% of
        # ensembles of the predicted diffusion; 3.01 at 1024 seeds)
        z_t = float(stats.t.isf(stats.norm.sf(SPREAD_Z), n_seeds - 1)) if n_seeds > 1 else SPREAD_Z
        widen = math.exp(z_t * stderr / ratio) if np.isfinite(stderr) and ratio > 0 else 1.0
        applied = [float(band[0] / widen), float(band[1] * widen)]
        rows.append({"mode": i, "ratio": ratio, "stderr": stderr, "p10": q[0], "p90": q[1], "n": int(single.size),
                     "seeds": n_seeds, "band": applied, "verdict": _verdict(applied[0] <= ratio <= applied[1])})
    return rows


def _real_array(name: str, value) -> np.ndarray:
    """A float64 array of real numbers (not text, booleans or complex), else an InputError naming it."""
    try:
        arr = np.asarray(value)
        if arr.dtype == object or arr.dtype.kind not in "fiu":
            raise TypeError(f"dtype {arr.dtype}")
        return arr.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name}: expected real numbers, got {value!r:.60} ({err})") from None


def ks_distance(samples, grid, density) -> float:
    """Kolmogorov-Smirnov distance between samples and a density tabulated on a grid.

    samples: one or more finite values; grid: (G,) finite and strictly increasing, G >= 2;
    density: (G,) finite, >= 0, with a positive integral. Anything else is an InputError
    naming it (NaN samples sorted to the end and counted as mass; a decreasing grid gave a
    negative CDF)."""
    x = _real_array("samples", samples).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise InputError(f"samples: one or more finite values, got {x.size} value(s)"
                         + (f", {int(np.sum(~np.isfinite(x)))} not finite" if x.size else ""))
    x = np.sort(x)
    grid, density = _real_array("grid", grid), _real_array("density", density)
    if grid.ndim != 1 or grid.size < 2 or not np.all(np.isfinite(grid)) or np.any(np.diff(grid) <= 0):
        raise InputError(f"grid: finite, strictly increasing values, at least two, got shape {grid.shape}")
    if density.shape != grid.shape:
        raise InputError(f"density: one value per grid point, shape {grid.shape}, got shape {density.shape}")
    if not np.all(np.isfinite(density)) or np.any(density < 0):
        raise InputError("density: finite values >= 0")
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
    if not 0 < cdf[-1] < np.inf:
        raise InputError(f"density: its integral over the grid must be positive and finite, got {cdf[-1]:g}")
    cdf = cdf / cdf[-1]
    F = np.interp(x, grid, cdf)
    n = x.size
    return float(max(np.max(np.arange(1, n + 1) / n - F), np.max(F - np.arange(n) / n)))


def decaying_modes(model, data, weight_decay: float = 0.0) -> np.ndarray:
    """(r,) bool: the modes whose gradient flow from the aligned start decays to 0 under weight
    decay (a start below the barrier, or no fixed point); all False without decay or from a
    random start (whose modes do not follow the one-mode flow)."""
    r = dl.effective_modes(data).s.size
    if not weight_decay or model.init != "aligned":
        return np.zeros(r, bool)
    return dl.switched_off(model, data, weight_decay)


def settled_targets(model, data, weight_decay: float = 0.0):
    """(r,) where each mode settles under weight decay, the level its learning time is measured
    against (`learning_times_of`'s targets): its fixed point, NaN for a mode the decay switches off
    (`decaying_modes`, or no fixed point); None without decay (the effective s, the default)."""
    if not weight_decay:
        return None
    star = dl.fixed_points(model, data, weight_decay)            # (checks the arguments first)
    return np.where(decaying_modes(model, data, weight_decay), np.nan, star)


def stationary_fit(run, model, data, *, eta0: float, batch_size: int, after: float,
                   alpha_coef: float = 1.63, ks_max: float = 0.1, weight_decay: float = 0.0,
                   cross_modes: bool = False) -> list[dict]:
    """Late-time (t > after) samples of each mode against the stationary density: the KS
    distance passes below its 1% critical value alpha_coef / sqrt(seeds) (the saved times of one
    seed are correlated, so the seeds count as the independent samples) or below ks_max (the
    effect size: with many seeds the test resolves the reduction's O(eta / B) cross-mode
    mean shift); the variance is reported against the Boltzmann temperature. Needs label
    noise or weight decay (else the law is a point mass at s). With decay, a mode whose gradient
    flow from the aligned start decays to 0 (below the barrier, or no fixed point) gets a SKIP row
    ("decays", and "no_fixed_point" where the decay leaves it none): the law of the well around the
    fixed point does not describe it; so does a mode
    whose gradient flow from an aligned start reaches SETTLED of its fixed point only after the
    window's first save ("settling": that time; "after": that save), still being learned in the
    window; from a random start, the networks' median time to get there ("settling_by": "networks";
    inf where most never do within the run). A mode without a
    finite value after `after` (every seed diverged) gets a FAIL row ("diverged"). Each mode's
    law is computed alone (`stationary_density(mode=i)`) on a grid over its samples and its
    fixed point: a mode whose law is a point mass or a shallow well gets a SKIP row
    ("no_density", the reason), and the others are fitted (one such mode, or one off another's
    grid, refused them all). InputError when no save comes after `after`; ShallowWellError or
    PointMassError (`stationary_density`) when no mode has a density to compare with.
    cross_modes=True compares with the laws that hold the cross-mode drift
    (`dl.stationary_density(cross_modes=True)`: their means O(eta / B) lower; no weight decay)."""
    after = checks.real("after", after, nonnegative=True)
    if checks.flag("cross_modes", cross_modes) and weight_decay:
        raise InputError("cross_modes: the cross-mode drift is derived without weight decay; give "
                         "weight_decay=0 or cross_modes=False")
    alpha_coef = checks.real("alpha_coef", alpha_coef, positive=True)
    ks_max = checks.real("ks_max", ks_max, nonnegative=True)
    _check_arguments("stationary_fit", run, model, data, eta0, batch_size, weight_decay)
    _check_own_batches("stationary_fit", run)
    late = run.modes[:, run.t > after]
    if late.shape[1] == 0:
        raise InputError(f"after={after}: no saved time after it")
    T = dl.boltzmann_temperature(model, data, eta0=eta0, batch_size=batch_size, weight_decay=weight_decay)
    decays = decaying_modes(model, data, weight_decay)
    star = dl.fixed_points(model, data, weight_decay) if weight_decay else dl.effective_modes(data).s
    decays = decays | ~np.isfinite(star)          # (no fixed point: decays from any start, random too)
    # from an aligned start, when each mode's gradient flow reaches SETTLED of its fixed point: a mode
    # that gets there only after the window opens is still being learned in it (its FAIL read as the
    # law's; a random start has no such time: judged as it is)
    first = float(run.t[run.t > after][0])        # the window's first save
    if model.init == "aligned":
        settle = dl.learning_times(model, data, level=SETTLED, weight_decay=weight_decay)
    else:     # a random start: when most networks get there (a short run FAILed at KS = 1, nothing learned)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            settle = np.median(learning_times_of(run, data, level=SETTLED,
                                                 targets=settled_targets(model, data, weight_decay)), axis=0)
        settle = np.where(np.isnan(settle), np.inf, settle)
    rows, refused = [], []
    for i in range(late.shape[-1]):
        x = late[..., i].ravel()
        x = x[np.isfinite(x)]
        if x.size == 0:                 # every seed diverged before: nothing that could pass
            rows.append({"mode": i, "ks": float("nan"), "critical": float("nan"), "mean": float("nan"),
                         "density_mean": float("nan"), "var": float("nan"), "boltzmann_T": float(T[i]),
                         "diverged": True, "verdict": "FAIL"})
            continue
        if decays[i]:     # ("no_fixed_point": the decay leaves the mode none, else a start below its barrier)
            rows.append({"mode": i, "ks": float("nan"), "critical": float("nan"), "mean": float(x.mean()),
                         "density_mean": float("nan"), "var": float(x.var()), "boltzmann_T": float("nan"),
                         "decays": True, "no_fixed_point": bool(not np.isfinite(star[i])), "verdict": "SKIP"})
            continue
        if settle[i] > first:
            rows.append({"mode": i, "ks": float("nan"), "critical": float("nan"), "mean": float(x.mean()),
                         "density_mean": float("nan"), "var": float(x.var()), "boltzmann_T": float(T[i]),
                         "settling": float(settle[i]), "after": first,
                         "settling_by": "flow" if model.init == "aligned" else "networks", "verdict": "SKIP"})
            continue
        # each mode's law on a grid of its own, over its samples and its fixed point, its 4001 points
        # apart in float64 (full-batch steps: samples within rounding of the target, whose law is a
        # point mass, made a grid of repeated values, refused after training)
        a, b = min(x.min(), star[i]), max(x.max(), star[i])
        pad = max(4 * x.std(), _GRID_ULPS * np.finfo(np.float64).eps * max(abs(a), abs(b)))
        lo, hi = (a - pad if model.depth == 1 else max(a - pad, 1e-6 * b)), b + pad
        try:
            grid, p = mode_law(model, data, np.linspace(lo, hi, 4001), i, eta0=eta0, batch_size=batch_size,
                               weight_decay=weight_decay, cross_modes=cross_modes)
        except (dl.ShallowWellError, dl.PointMassError) as err:      # this mode has no density
            refused.append(err)
            rows.append({"mode": i, "ks": float("nan"), "critical": float("nan"), "mean": float(x.mean()),
                         "density_mean": float("nan"), "var": float(x.var()), "boltzmann_T": float(T[i]),
                         "no_density": str(err), "verdict": "SKIP"})
            continue
        ks = ks_distance(x, grid, p)
        seeds = int(np.sum(np.any(np.isfinite(late[..., i]), axis=1)))     # those not diverged
        crit = alpha_coef / np.sqrt(seeds)
        rows.append({"mode": i, "ks": ks, "critical": float(crit), "ks_max": float(ks_max),
                     "mean": float(x.mean()), "density_mean": float(np.trapezoid(grid * p, grid)),
                     "var": float(x.var()), "boltzmann_T": float(T[i]),
                     "verdict": _verdict(ks <= max(crit, ks_max))})
    if refused and all(row["verdict"] == "SKIP" for row in rows):
        raise refused[0]                # no mode has a density to compare with
    return rows


def mode_law(model, data, grid, mode: int, **kw):
    """(grid, p): mode `mode`'s stationary density (`dl.stationary_density(..., mode=mode)`) on
    `grid`, with points added across the law's core where the grid steps over it (a law much
    narrower than the samples' spread, e.g. at a tiny eta0: `dl.UnresolvedLawError`)."""
    try:
        return grid, dl.stationary_density(model, data, grid, mode=mode, **kw)[:, mode]
    except dl.UnresolvedLawError as err:
        a, b = err.core
        width = b - a
        core = np.linspace(max(a - width, grid[0]), min(b + width, grid[-1]), 401)
        # and out to the grid's own points in steps doubling from the core's width, so that the
        # trapezoid rule follows the law's tails down instead of stretching the core's edge over
        # a gap as wide as the grid's step (1e85 for samples that blew up to 1e88: the law came
        # back as 0 everywhere, its mass on the gap)
        span = grid[-1] - grid[0]
        n = int(np.ceil(np.log2(span / width))) if np.isfinite(span) and 0 < width < span else 0
        out = width * 2.0 ** np.arange(1, n + 1)
        tails = np.concatenate([a - width - out, b + width + out])
        tails = tails[(tails > grid[0]) & (tails < grid[-1])]
        grid = np.unique(np.concatenate([grid, core, tails]))
        return grid, dl.stationary_density(model, data, grid, mode=mode, **kw)[:, mode]


def learning_times_of(run, data, level: float = 0.5, targets=None) -> np.ndarray:
    """(S, r) first saved-time crossing of level x target by each seed's modes (interpolated along
    the mode's gradient flow between the two saves around it, `_crossing_fraction`, for a run
    that records its depth: from an aligned start always, from a random one where the flow's own
    time between the two saves is their gap, `FLOW_GATE`; under weight decay the decay's flow,
    with its fixed points as the targets; else a straight line). The targets
    are the effective s by default; with weight decay pass `dl.fixed_points(...)`. A seed's mode
    that starts at or above the level counts from the first save after it has been below it (a
    random start can begin above and dip first), or reads
    t[0] if it never was (learned from the start; the flow's `dl.learning_times` says NaN there:
    it has no crossing); NaN for a mode the decay switches off (a NaN target), as the flow's;
    inf for one not learned within the run (it may be later), and for a diverged seed
    (`run.info["diverged"]`) that crosses only into its last finite save, which is already
    running away (a seed going 0.125 -> 8592 -> NaN read a learning time shorter than one step).

    level: in (0, 1), as for the flow's `dl.learning_times`; targets: (r,) real numbers, each > 0
    or NaN. Anything else is an InputError naming it."""
    level = checks.real("level", level, positive=True, below=1.0)
    _check_data("learning_times_of", run, data)
    s = strength = dl.effective_modes(data).s
    if targets is not None:
        s = _targets(targets, s.size)
    if np.shape(run.modes)[-1] != s.size:
        raise InputError(f"run: its modes (last axis {np.shape(run.modes)[-1]}) are not the data's {s.size}")
    out = np.full(run.modes.shape[::2], np.inf)
    info = getattr(run, "info", None) or {}
    diverged = set(info.get("diverged") or {})
    # the run's depth for the interpolation between saves (`_crossing_fraction`), where its
    # modes follow the flow without decay
    config = info.get("config") or {}
    model = config.get("model") or {}
    depth = model.get("depth")
    decay = dl.recorded_setting(run, "weight_decay")
    # (a random start is neither aligned nor balanced: a large one learns at once, along no
    # one-mode flow, and read 0.037 where fine saves read 0.029; the straight line, 0.034, is
    # kept there. A small one aligns first and then follows the flow: its crossing takes the flow
    # where the flow's own time between the two saves is the gap, `FLOW_GATE`. Under weight
    # decay the flow is the decay's, towards the targets given where they are its fixed points)
    kappa = float(decay or 0.0)
    if (targets is not None) != (kappa > 0) or model.get("init") not in ("aligned", "random"):
        depth = None
    gated = model.get("init") != "aligned"
    for k in range(run.modes.shape[0]):
        for i in range(s.size):
            y = run.modes[k, :, i]
            if k in diverged:    # its last finite save is already running away (0.125 -> 8592 -> NaN)
                y = y.copy()
                y[np.flatnonzero(np.isfinite(y))[-1:]] = np.nan
            above = y >= level * s[i]
            below = np.flatnonzero(~above & np.isfinite(y))         # (NaN: a diverged seed's saves)
            # from the start above: the first crossing after a dip below, else learned at t[0]
            hit = np.flatnonzero(above[below[0]:]) + below[0] if (above[0] and below.size) else np.flatnonzero(above)
            if np.isnan(s[i]):
                out[k, i] = np.nan                     # switched off by the decay: none, as the flow's
            elif hit.size:
                j = hit[0]
                if j == 0:
                    out[k, i] = run.t[0]
                else:
                    f = _crossing_fraction(y[j - 1], y[j], s[i], level, depth, run.t[j] - run.t[j - 1],
                                           gated=gated, strength=strength[i], kappa=kappa)
                    out[k, i] = run.t[j - 1] + f * (run.t[j] - run.t[j - 1])
    return out


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)

# A random start's crossing follows the mode's flow where the flow's own time between the two saves
# around it is the gap to within this fraction (the mode has aligned and moves as the one-mode
# flow says); else the straight line. Measured on full-batch runs from random starts (depths 2-6,
# init_scale 0.05-0.3, saves 0.2-1 time unit apart, 477 crossings): inside the gate, 145 of them,
# the flow's error was at most 0.039 of the gap (median 0.0006) where the line's was 0.32 (median
# 0.018). At 0.05 it admitted 214, at most 0.058 there, but a review found large starts (depth
# 5-6, init_scale 0.2-0.3) whose admitted crossings read 0.24 of the gap, worse than the line.
FLOW_GATE = 0.02


def _crossing_fraction(a: float, b: float, target: float, level: float, depth, gap: float,
                       gated: bool = False, strength: float | None = None, kappa: float = 0.0) -> float:
    """Where between two saves `gap` apart (strengths a < level x target <= b) a mode crosses its
    level, as a fraction of the interval: along the mode's gradient flow, d pi / dt = F(pi) =
    L pi^(2 - 2/L) (s - pi) - L kappa pi (s = `strength`, the target itself by default; with
    weight decay kappa the target is the flow's fixed point), the time from a to pi is the
    integral of 1 / F. In w = logit(pi / target) that is int target sigma (1 - sigma) / F(target
    sigma) dw, without decay (target s sigma(w))^(2/L - 1) / (L s): constant in w at L = 2 (so
    linear in the logit), Gauss-Legendre in pieces otherwise; the fraction is a ratio of two such
    integrals. Where b has reached the target (to 1e-6: its logit is infinite, or target - b has
    lost its digits), the integral from a itself, at most the gap. Straight lines between the saves
    read the learning time up to 25% early at saves one time unit apart (depth 3-4, t_half ~1-2: a
    sigmoid's chord). depth None (a run that does not record it), strengths outside (0, target),
    or a flow that does not rise between them (below a decay's barrier): the straight line.
    Measured on the flow, depths 1-6, saves 0.05-3 time units apart: 2e-7 or better. gated (a
    random start): the flow only where its own time from a to b is the gap within `FLOW_GATE`
    (b below the target). Under decay a target that is not the fixed point of the flow (to 1e-6)
    takes the straight line."""
    lvl = level * target
    line = (lvl - a) / (b - a)
    if depth is None or not (0 < a < lvl <= b and lvl < target):
        return line
    L, s = depth, target if strength is None else strength
    if kappa and not abs(target ** (1.0 - 2.0 / L) * (s - target) - kappa) <= 1e-6 * kappa:
        return line                    # (a target that is not the decay flow's fixed point)
    w0, w1 = (math.log(v / (target - v)) for v in (a, lvl))

    def rule(lo, hi, n):               # Gauss-Legendre on n equal pieces of [lo, hi]
        edges = np.linspace(lo, hi, n + 1)
        mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
        x = mid[:, None] + half[:, None] * _GL_NODES
        sig, rest = 1.0 / (1.0 + np.exp(-x)), 1.0 / (1.0 + np.exp(x))
        if not kappa:                  # (s - pi as s (1 - sigma): no cancellation near the target)
            dens = (target * sig) ** (2.0 / L - 1.0) / (L * target)
        else:
            pi = target * sig
            with np.errstate(all="ignore"):
                dens = target * sig * rest / (L * pi * (pi ** (1.0 - 2.0 / L) * (s - pi) - kappa))
        return float(np.sum(half[:, None] * _GL_WEIGHTS * dens)) if np.all(dens > 0) else math.nan

    def integral(lo, hi):              # (pieces of length <= 2 in w, the integrand ~exp(-(1 - 2/L) w);
        n = max(1, math.ceil((hi - lo) / 2))     # halved until two agree: a decay's barrier nearby is
        prev = rule(lo, hi, n)                   # a pole of 1 / F just outside the interval)
        while n < 4096 and math.isfinite(prev):
            n *= 2
            now = rule(lo, hi, n)
            if abs(now - prev) <= 1e-11 * abs(now):
                return now
            prev = now
        return math.nan                          # (not settled: the straight line)

    if b < target * (1 - 1e-6):        # (closer, target - b has lost digits: as reached)
        w2 = math.log(b / (target - b))
        whole = integral(w0, w2)
        if not whole > 0 or (gated and not abs(whole - gap) <= FLOW_GATE * gap):
            return line
        if L == 2 and not kappa:
            return (w1 - w0) / (w2 - w0)
        part = integral(w0, w1)
        return part / whole if part >= 0 else line
    if gated or not gap > 0:
        return line
    part = integral(w0, w1)
    return min(part / gap, 1.0) if part >= 0 else line


def _one_path(run, data) -> bool:
    """Whether every seed of `run` follows one path: an aligned start trained full batch on a fixed
    set (as its recorded configuration says; a run that records none counts as not)."""
    config = (getattr(run, "info", None) or {}).get("config") or {}
    model, train = config.get("model") or {}, config.get("train") or {}
    return (model.get("init") == "aligned" and data.P is not None
            and train.get("batch_size") in (None, data.P))


def _targets(targets, r: int) -> np.ndarray:
    """(r,) targets, each > 0 or NaN (a mode weight decay switches off), else an InputError."""
    arr = _real_array("targets", targets)
    if arr.shape != (r,):
        raise InputError(f"targets: one per mode, shape ({r},), got shape {arr.shape}")
    if np.any(np.isinf(arr) | (arr <= 0)):
        raise InputError(f"targets: each must be > 0 and finite (or NaN: a mode weight decay switches off), "
                         f"got {arr.tolist()}")
    return arr


def staircase(run, data, *, rel: float = 0.15, targets=None) -> dict:
    """The saddle-to-saddle staircase: modes learned in the predicted order (decreasing s, s~
    on a fixed set), and the median population loss between consecutive learning times against
    the predicted plateau (`dl.plateaus`, within rel).

    targets: None, or (r,) where each mode settles (`settled_targets(model, data, kappa)`: under
    weight decay kappa the fixed points, NaN for a mode the decay switches off), as
    `learning_times_of` takes them: learning times are then times to half of them and the plateaus
    `dl.plateaus(data, targets)`; a switched-off mode is left out (never learned, as the flow says:
    not a failure). A run that records weight decay needs them (InputError naming targets: its
    modes settle below s, and a mode the decay switches off was read as not learned, a FAIL).

    Returns {"order_ok", "all_learned", "fraction_all_learned", "fraction_of_seeds_in_order" (of
    the seeds that learn every mode within the run; pairs in "unresolved" not counted), "order": the
    predicted learning order (mode indices), "unresolved": [earlier, later] mode indices of the
    consecutive steps whose order the seeds do not resolve (not checked), "unresolved_why": why (the
    seeds' spread, or one seed with none), "learning_times": (r,) the seeds' median
    learning times in mode order (like every per-mode list; inf for a mode most seeds have not
    learned), "plateaus": one row per plateau between two learned modes, "verdict", "reason"}.
    Modes of equal strength (within TIE_REL) are one step, learned together: their order among
    themselves is not checked and no plateau is judged between them. Between steps, the order is
    checked only where the seeds' median learning times are more than 2 standard errors apart, and
    a plateau is read (from the saves on it alone) only where the previous step is 90% learned
    before this one is 10% learned and saves fall in between; otherwise its row is a SKIP that
    says which. A teacher of rank 1, or of modes all of one strength, has no plateau between two
    learned modes and no order to check: SKIP, with the reason; so is a run at depth 1 (its recorded
    configuration's model.depth: one matrix learns every mode at one rate). So is one seed of a random start
    or of SGD (no spread to resolve the order against; one seed of an aligned full-batch run is
    every seed's path)."""
    rel = checks.real("rel", rel, positive=True)
    kappa = float(dl.recorded_setting(run, "weight_decay") or 0.0)
    if targets is None and kappa > 0:
        raise InputError(f"targets: the run trained with weight decay {kappa:g}, under which its modes settle at "
                         "the decay's fixed points (a mode below the barrier never rises); pass "
                         "targets=validation.deep_linear.settled_targets(model, data, weight_decay)")
    if targets is not None:
        targets = _targets(targets, dl.effective_modes(data).s.size)
    pl = dl.plateaus(data, targets)
    tl = learning_times_of(run, data, targets=targets)
    active = np.zeros(tl.shape[1], bool)
    active[pl["order"]] = True                          # the modes that are learned (a NaN target: never)
    finite = np.all(np.isfinite(tl[:, active]), axis=1)
    learned = bool(np.mean(finite) >= 0.5)            # most seeds learn every mode within the run
    # a mode a seed has not learned within the run (inf) counts as learned after it: the median
    # is finite while most seeds learned it (was NaN as soon as one seed had not, dropping every row)
    med = np.median(tl, axis=0)                                        # mode order
    order = pl["order"]
    # modes of equal strength are learned together: one step of the staircase, in no predicted
    # order among themselves (s = 3, 3, 1 FAILed on a coin flip and on a plateau between the two)
    strength = np.asarray(pl["strengths"], dtype=np.float64)
    tied = np.concatenate([[False], strength[1:] >= strength[:-1] * (1 - TIE_REL)])
    # one weight matrix learns every mode at one rate (pi_i(t) = s_i (1 - e^-t) from 0): one step,
    # no staircase (depth 1 FAILed the flow's own modes for "not the predicted order")
    shallow = dl.recorded_setting(run, "depth") == 1
    if shallow:
        tied[1:] = True
    step = np.cumsum(~tied) - 1                                        # each mode's step, learning order
    # the order between two consecutive steps is checked only where the seeds resolve it: their
    # median learning times (log) further apart than 2 standard errors of the difference (modes
    # 0.6% apart in strength on a noisy set came in either order, 38-63% of seeds by key)
    logs = np.log(np.where(np.isfinite(tl) & (tl > 0), tl, np.nan))
    n = np.sum(np.isfinite(logs), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)                # (a mode one seed learned: no spread)
        se = 1.2533 * np.nanstd(logs, axis=0, ddof=1) / np.sqrt(n) if tl.shape[0] > 1 else np.zeros(med.size)
        gap = np.log(med[order[1:]]) - np.log(med[order[:-1]])
    se = np.nan_to_num(se)
    # one seed has no spread: it resolves an order only where every seed would follow its path (an
    # aligned start, full batch on a fixed set); one seed of a random start or of SGD resolves none
    # (a coin flip between near strengths FAILed)
    lone = tl.shape[0] == 1 and not _one_path(run, data)
    if lone:
        se = np.full(med.size, np.inf)
    resolved = np.concatenate([[True], ~tied[1:] & ~(np.abs(gap) <= 2 * np.hypot(se[order[1:]], se[order[:-1]]))])
    rank = np.cumsum(resolved) - 1
    rank_of = np.full(tl.shape[1], -1)
    rank_of[order] = rank

    def in_order(times):             # (over the modes that are learned: `order`)
        return bool(np.all(np.diff(rank_of[order[np.argsort(times[order], kind="stable")]]) >= 0))

    order_ok = learned and in_order(med)
    per_seed = float(np.mean([in_order(row) for row in tl[finite]])) if finite.any() else 0.0
    loss = np.nanmedian(run.test_loss, axis=0)
    # a plateau lies between the previous step's modes being 90% learned and this step's 10%: where
    # those overlap there is none to read (it read mid-transition values), and with no save inside
    # the window its reading interpolated across a transition (save_every 250 FAILed what 10 PASSes)
    t90 = np.median(learning_times_of(run, data, level=0.9, targets=targets), axis=0)
    t10 = np.median(learning_times_of(run, data, level=0.1, targets=targets), axis=0)
    rows = []
    for k in range(1, order.size):
        if tied[k]:
            continue                                                    # no plateau inside a step
        prev, this = order[step == step[k] - 1], order[step == step[k]]
        last, first = np.max(t90[prev]), np.min(t10[this])
        if not (np.isfinite(np.max(med[prev])) and np.isfinite(np.min(med[this]))):
            continue
        pred = float(pl["levels"][k])
        row = {"after_mode": int(prev[np.argmax(med[prev])]), "t": float(np.sqrt(last * first)), "plateau": pred,
               "loss": None, "rel_error": None, "verdict": "SKIP"}
        inside = (run.t >= last) & (run.t <= first)
        lo, hi = np.max(med[prev]), np.min(med[this])
        if lone:
            row["note"] = (f"one seed of a random start or of SGD: no spread over seeds to resolve its learning "
                           f"times {lo:.3g} and {hi:.3g} (run more seeds)")
        elif not resolved[k]:
            row["note"] = (f"no plateau: the steps' median learning times {lo:.3g} and {hi:.3g} are within "
                           "the seeds' spread (learned together)")
        elif not np.any((run.t > lo) & (run.t < hi)):
            row["note"] = f"no save between the learning times {lo:.3g} and {hi:.3g}: save more often"
        elif not first > last:
            row["note"] = (f"no plateau: mode {row['after_mode'] + 1} is 90% learned at {last:.3g}, after mode "
                           f"{int(this[np.argmin(t10[this])]) + 1} is 10% learned at {first:.3g} (their "
                           "transitions overlap, as the saves show them)")
        elif not inside.any():
            row["note"] = f"no save between {last:.3g} and {first:.3g}, where the plateau lies: save more often"
        else:
            # read at the window's geometric middle, or at its save nearest to it where none lies beyond
            # (the row showed the middle's t beside the loss of a save before it)
            ts = run.t[inside]
            at = float(np.clip(row["t"], ts.min(), ts.max()))
            level = float(np.interp(at, ts, loss[inside]))
            row.update(t=at, loss=level, rel_error=abs(level - pred) / pred,
                       verdict=_verdict(abs(level - pred) <= rel * pred))
        rows.append(row)
    judged = [r for r in rows if r["verdict"] != "SKIP"]
    if shallow and med.size > 1:
        verdict, reason = "SKIP", ("a depth-1 (linear) model learns every mode at one rate, together: no "
                                   "staircase, no plateau between two learned modes and no order to check")
    elif step[-1] == 0 and order.size < med.size:      # (targets: the decay switches the others off)
        verdict, reason = "SKIP", (f"the weight decay switches off {med.size - order.size} of the {med.size} modes "
                                   f"(NaN targets), leaving {order.size}: no plateau between two learned modes "
                                   "and no order to check")
    elif step[-1] == 0:
        verdict, reason = "SKIP", ("a teacher of rank 1 has no plateau between two learned modes and no order "
                                   "to check" if med.size < 2 else
                                   f"its {med.size} modes are of equal strength, learned together: no plateau "
                                   "between two learned modes and no order to check")
    elif lone:
        verdict, reason = "SKIP", ("one seed of a random start or of SGD: no spread over seeds to resolve the "
                                   "learning order or read a plateau against (run more seeds)")
    elif order_ok and rows and not judged:
        verdict, reason = "SKIP", ("the order is as predicted, but no plateau could be read (each row says why: "
                                   "overlapping transitions, or no save on the plateau)")
    else:
        verdict = _verdict(order_ok and bool(judged) and all(r["verdict"] == "PASS" for r in judged))
        if not learned:       # (a FAIL without a word: the order was "False" for a run too short)
            late = [int(i) + 1 for i in order if not np.isfinite(med[i])]
            reason = (f"only {100 * np.mean(finite):.0f}% of seeds learn every mode within the run (it ends at "
                      f"t = {run.t[-1]:.4g})" + (f"; most have not learned mode{'s' if len(late) > 1 else ''} "
                                                  f"{', '.join(map(str, late))}: run longer" if late else ""))
        else:
            reason = "" if order_ok else "the seeds' median learning order is not the predicted one"
    # consecutive steps whose order the seeds do not resolve (not checked, in the median or per seed:
    # s = 2, 1.99 read "order as predicted, 100% of the seeds" where 58% learned the weaker first)
    unresolved = [[int(order[k - 1]), int(order[k])] for k in range(1, order.size) if not tied[k] and not resolved[k]]
    # why they are not resolved: one seed has no spread at all (it listed every pair as "within the
    # seeds' spread", blaming the modes for what the seed count causes)
    why = ("one seed of a random start or of SGD: no spread over seeds to resolve their order against"
           if lone else "their median learning times are within the seeds' spread: learned together, in either order")
    return {"order_ok": order_ok, "all_learned": learned, "fraction_all_learned": float(np.mean(finite)),
            "fraction_of_seeds_in_order": per_seed, "order": pl["order"].tolist(), "learning_times": med.tolist(),
            "unresolved": unresolved, "unresolved_why": why, "plateaus": rows, "verdict": verdict, "reason": reason}
