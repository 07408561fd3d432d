"""Verdicts: theory against networks, each check against a stated tolerance.

Checks (tolerances from a dict, the [check] section of the validate job):
- spread:      per-seed prediction error against width has slope spread_slope +- spread_slope_tol,
               fitted over at least MIN_SPREAD_WIDTHS widths (a fit through two points has no
               error; fewer widths: SKIP), the DMFT's own standard error taken out in quadrature
               (SKIP where a width's error is within FLOOR_RATIO of it);
- agreement:   at the largest width, the ensemble-mean test loss is within agreement_rel
               (relative; where the DMFT's loss is below `validation.compare.AGREEMENT_FLOOR` of its
               initial loss, relative to that: two losses at rounding on a realizable task read a
               relative error of 74) of the DMFT at every saved time t > 0 (the worst is judged: a 10% error
               in the networks' time units met the theory at the end, 0.002, and was 0.10-0.12 on
               the way); inf, a FAIL naming them, where seeds diverged and the DMFT did not;
- agreement z: at the largest width, z = (ensemble mean - DMFT) / se at every saved time t > 0,
               se combining the seeds' standard error and the DMFT's own, against `z_bound`: the
               normal tail beyond agreement_sigma, shared among the saved times, at that time's
               degrees of freedom (z is a t statistic: a normal bound FAILed 13% of correct
               2-seed ensembles), the fewer of the seeds' and the DMFT's replicas'
               (`validation.compare.min_dof`: it bounds the law whatever the two's true shares of
               se; the estimated shares did not: 9-9500x nominal at 5 sigma). SKIP when se = 0 or
               unknown: under two finite seeds, or a DMFT of one replica, whose error nothing
               estimates;
- prediction:  at the largest width, the ensemble mean's test predictions (train without test
               points) against the DMFT's, every point at once: q = the mean-square difference over
               its expected value from the seeds' covariance and the DMFT's own error
               (`validation.compare.prediction_stats`; about 1 where they agree), at every saved
               time t > 0 against `q_bound`, its F law's tail beyond agreement_sigma shared among
               the times as for z. It sees what the loss cannot: a prediction bias orthogonal to
               the residual leaves the loss unchanged. Its law is bounded so that the far tail is
               not too light (validation.compare's docstring), so with few seeds it has little
               power (bounds 366-422 with 8 seeds, 8 replicas and 20 saves at 5 sigma on
               teacher.toml: a bias 19-21x the mean's noise); its dof are z's. SKIP as the z
               check;
- lazy:        at the smallest gamma0, the DMFT final test loss (train loss without test targets)
               is within lazy_rel of the lazy closed form's, relative to that loss, or to
               LAZY_FLOOR of the initial loss when the final one is smaller (a train loss fitted
               to ~0: a relative error of two tiny numbers says nothing about the limit). SKIP
               under weight decay: the lazy closed form has none (decay moves the kernel), so the
               gap would measure the decay, not the solver. SKIP too where that gamma0 is not near
               the lazy limit: where the lazy limit itself says the first-layer weights move by
               more than lazy_move (relative, by the last save; that movement is linear in gamma0,
               and the gap grows as its square: 2-5x it on the default and teacher tasks, so at
               0.1 the gap is ~0.05 at most), the gap measures the richness, not the solver.
- node bias:   (a sweep with node_check, `validation.lazy_to_rich`) at each gamma0, the DMFT's test
               and train losses (the train loss alone without test targets) at M nodes a replica
               against the same nodes split in two (M / 2 a population): z = shift / se at every
               saved time t > 0 of both (`validation.compare.node_bias`; the shift is minus the bias
               at M to first order, which the replicas' spread does not see), against `z_bound` at
               replicas - 1 degrees of freedom, the same tail as the agreement z shared among all of
               them, plus node_bias_rel times the DMFT's own standard error over the shift's: a bias
               up to node_bias_rel (0.5) of the error bar is immaterial to its intervals, and the
               paired shift resolves far less (0.09 of it on the demo's train loss, z = -23). A
               loss below AGREEMENT_FLOOR of its start (at rounding) is not judged. The
               detail gives the losses at M / 4 too and their extrapolation to infinitely many nodes
               with its error. SKIP for one replica (no error), where every time's loss is below
               the floor, and for paired solves whose control variates differ (the solver turned
               it off in some: two estimators of the same nodes).

Each check keeps its value at full precision and shows it ("shown") to 4 significant digits, or
as many more as it takes to sit on the same side of the tolerance as the value: a verdict follows
from the numbers a reader sees (0.0081313 against <= 0.0081 is shown as 0.008131, not 0.0081).
"""

from __future__ import annotations

import functools
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np

from dmft import checks as arg
from dmft.errors import InputError

from .compare import AGREEMENT_FLOOR, node_bias, node_losses, zero_targets
from .inputs import mapping, real_or_inf, shown, theory_name

__all__ = ["checks", "TOLERANCES", "MIN_SPREAD_WIDTHS", "LAZY_FLOOR", "FLOOR_RATIO", "z_bound", "q_bound",
           "node_bias_bound"]

# default tolerances (the validate job's [check] section)
TOLERANCES = {"spread_slope": -0.5, "spread_slope_tol": 0.15, "agreement_sigma": 5.0,
              "agreement_rel": 0.05, "lazy_rel": 0.1, "lazy_move": 0.1, "node_bias_rel": 0.5}

# the fewest widths the spread check fits a slope over (two points give a slope without an error)
MIN_SPREAD_WIDTHS = 3

# the spread check SKIPs where a width's per-seed error is within this factor of the DMFT's own
# standard error (taken out in quadrature, the remainder is then mostly the floor's own noise)
FLOOR_RATIO = 2.0

# the lazy check's scale never falls below this fraction of the lazy limit's initial loss
LAZY_FLOOR = 0.01


def _num(x, sign: bool = False) -> str:
    """x in the fewest digits that read back as x: a tolerance is shown as it is compared."""
    s = f"{x:+g}" if sign else f"{x:g}"
    return s if float(s) == float(x) else ("+" if sign and x >= 0 else "") + repr(float(x))


def _shown(value, bounds, digits: int = 4) -> str:
    """`value` to `digits` significant digits, or as many more as it takes to sit on the same side
    of (or on) every bound as the value itself, so the verdict follows from the number shown."""
    value = float(value)
    side = lambda v: [(v > b) - (v < b) for b in bounds]      # noqa: E731
    for n in range(digits, 18):                                # 17 digits read back exactly
        s = f"{value:.{n}g}"
        if side(float(s)) == side(value):
            return s
    return repr(value)


def _check(name, value, bounds, tolerance, ok, detail) -> dict:
    """A judged check: the value at full precision (JSON) and as shown beside its tolerance."""
    return dict(name=name, value=float(value), shown=_shown(value, bounds), tolerance=tolerance,
                verdict="PASS" if ok else "FAIL", detail=detail)


def _skip(name, tolerance, detail) -> dict:
    """A check with nothing to judge: no value, the reason in the detail."""
    return dict(name=name, value=None, shown="-", tolerance=tolerance, verdict="SKIP", detail=detail)


def _spread_bounds(center, half) -> tuple[float, float]:
    """center -+ half as a reader works it out from the tolerance shown (in decimal, then the
    nearest floats): the float sum can land an ulp off and flip a verdict shown at the edge."""
    c, h = Decimal(_num(center)), Decimal(_num(half))
    return float(c - h), float(c + h)


def _networks(s) -> str:
    """The ensemble's final loss with its std over seeds; none from fewer than two finite seeds."""
    n = s.get("final_finite_seeds")
    spread = (f"+- {s['final_network_std']:.2g} (std over seeds)" if np.isfinite(s["final_network_std"])
              else f"(no std over seeds: {'under two' if n is None else n} finite at the end)")
    return f"networks {s['final_network_loss']:.4g} {spread}"


def _no_z(s) -> str:
    """Why an agreement z has nothing to be measured against."""
    if s.get("final_finite_seeds", 2) < 2 or not np.isfinite(s["final_network_std"]):
        return "fewer than two seeds finite at the end"
    if not np.isfinite(s.get("final_theory_se", 0.0)):
        return "the DMFT has one replica, so its own standard error is unknown: use replicas >= 2"
    return "no spread over seeds and an exact theory"


def z_bound(sigma: float, dof: float, tests: int = 1) -> float:
    """The bound on |z| for a t statistic of `dof` degrees of freedom, the worst of `tests` saved
    times, with the two-sided tail of a normal |z| > sigma shared among them (Sidak), rounded up
    to 3 significant digits (the bound shown is the bound applied); sigma itself for dof = inf and
    one test.
    z = (networks - theory) / se estimates se from the seeds: with 2 seeds a normal bound of 5
    FAILed 13% of correct ensembles (t law: 12.6%), with 8 seeds 0.2%, where 5 sigma claims 6e-7.

    Raises:
        InputError (a ValueError): sigma < 0, dof <= 0 or tests < 1 (they read inf, a bound that
        passes every z, or 0, one that fails every z); NaN sigma or dof gives NaN."""
    _bound_args(sigma=sigma, dof=dof, tests=tests)
    return _z_bound(float(sigma), float(dof), int(tests))


# The bounds are asked for again and again with a few distinct arguments (every ensemble of a sweep,
# every draw of a calibration): scipy's argument checks took ~45% of `checks`' time there
@functools.lru_cache(maxsize=1024)
def _z_bound(sigma: float, dof: float, tests: int) -> float:
    from scipy import stats

    if np.isinf(sigma) or (np.isinf(dof) and tests == 1):
        return float(sigma)
    each = _each(sigma, tests)                                          # one time's two-sided tail
    bound = float(stats.norm.isf(each / 2) if np.isinf(dof) else stats.t.isf(each / 2, dof))
    if np.isnan(sigma) or np.isnan(dof):
        return float("nan")
    return _rounded_bound(bound, each)


def _bound_args(tests, **positive) -> None:
    """InputError unless tests is an integer >= 1, sigma >= 0 and the others (dof, k) > 0 (NaN
    passes: the bounds are NaN there)."""
    if isinstance(tests, (bool, np.bool_)) or not isinstance(tests, (int, np.integer)) or tests < 1:
        raise InputError(f"tests: the number of saved times judged, an integer >= 1, got {tests!r}")
    for name, v in positive.items():
        try:
            bad = (isinstance(v, (bool, np.bool_, str, bytes)) or np.ndim(v) != 0   # ([2.] passed, then
                   or bool(v < 0 if name == "sigma" else v <= 0))                   # float() raised)
        except TypeError:
            bad = True
        if bad:
            want = ">= 0" if name == "sigma" else "> 0"
            raise InputError(f"{name} must be a real number {want} (or inf), got {v!r}")


def _each(sigma: float, tests: int) -> float:
    """One test's share of the two-sided normal tail beyond sigma among `tests` (Sidak)."""
    from scipy import stats

    with np.errstate(divide="ignore"):                                  # (sigma = 0: log1p(-1))
        return float(-np.expm1(np.log1p(-2 * stats.norm.sf(sigma)) / tests))


def _rounded_bound(bound: float, each: float) -> float:
    """A bound at tail `each`, rounded up to 3 significant digits (the bound shown is the bound
    applied): 0 where the tail is everything (sigma = 0), inf past the floats' tails."""
    if each >= 1:                      # (sigma = 0: every value is beyond it)
        return 0.0
    if not 0 < bound < np.inf:         # a tail past the floats' (sigma above ~36): no finite bound
        return float("inf")
    return rounded(bound, 3, "up")


def node_bias_bound(sigma: float, dof, ok, rel: float, full_se, shift_se) -> np.ndarray:
    """The node bias check's bound on |z| at each judged entry (`ok`; NaN elsewhere): `z_bound` at
    its dof, the tail beyond sigma shared among the judged entries, plus the allowance rel x
    full_se / shift_se (0 where either error is 0 or unknown): a bias up to rel of the DMFT's own
    standard error leaves its 95% intervals covering >= 92%, and the paired shift resolves far
    less (0.09 of it on the demo's train loss), which no reader of the error bar needs flagged.
    The verdict rounds it up to the digits it shows; a scan's summary applies it as it is
    (`experiments.scan.result.node_bias_flags`)."""
    dof, ok = np.asarray(dof, float), np.asarray(ok, bool)
    full_se, shift_se = np.asarray(full_se, float), np.asarray(shift_se, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.where((full_se > 0) & (shift_se > 0), rel * full_se / shift_se, 0.0)
    n = int(ok.sum())
    return np.array([z_bound(sigma, d, n) + m if k else np.nan
                     for k, d, m in zip(ok.ravel(), dof.ravel(), margin.ravel())]).reshape(ok.shape)


def rounded(x: float, digits: int, direction: str) -> float:
    """x > 0 (finite) rounded "up" or "down" to `digits` significant digits: the nearest such
    decimal on that side of x's shortest repr, so its float lies on that side of x too (a limit or a
    bound a reader may take as given). Exact in decimal: log10 rounds just below a power of ten
    (0.09999999999999999 read 0.09 where 0.099 is right) and a subnormal's unit underflows."""
    if direction not in ("up", "down") or not (isinstance(digits, int) and 1 <= digits <= 17):
        raise InputError(f"rounded: direction must be 'up' or 'down' and digits an int in 1..17, got "
                         f"{direction!r}, {digits!r}")
    if not (x > 0 and np.isfinite(x)):
        raise InputError(f"rounded: x must be positive and finite, got {x!r}")
    d = Decimal(repr(float(x)))
    unit = Decimal(1).scaleb(d.adjusted() - digits + 1)
    return float(d.quantize(unit, rounding=ROUND_CEILING if direction == "up" else ROUND_FLOOR))


def _rounded_down(x: float, digits: int = 2) -> float:
    """x > 0 rounded down to `digits` significant digits (the lazy check's suggested gamma0 read
    0.94 where 0.9388 was the limit, and 0.94 was skipped); anything else as it is."""
    return rounded(x, digits, "down") if x > 0 and np.isfinite(x) else float(x)


def _rounded_up(x: float) -> float:
    """x >= 0 rounded up to 3 significant digits, as the bounds shown are (0 and inf as they are)."""
    return float(x) if x == 0 or not np.isfinite(x) else rounded(float(x), 3, "up")


def q_bound(sigma: float, k: float, dof: float, tests: int = 1) -> float:
    """The bound on the prediction check's q (`validation.compare.prediction_stats`), judged as
    F(k, dof) for networks that agree with the theory, the worst of `tests` saved times: its
    upper tail beyond the bound is the two-sided normal tail beyond sigma shared among them
    (Sidak, as `z_bound`), rounded up to 3 significant digits.

    Raises:
        InputError (a ValueError): sigma < 0, k <= 0, dof <= 0 or tests < 1 (they read inf, a
        bound that passes every q, or 0); NaN sigma, k or dof gives NaN."""
    _bound_args(sigma=sigma, k=k, dof=dof, tests=tests)
    return _q_bound(float(sigma), float(k), float(dof), int(tests))


@functools.lru_cache(maxsize=1024)
def _q_bound(sigma: float, k: float, dof: float, tests: int) -> float:
    from scipy import stats

    if np.isnan(sigma) or np.isnan(k) or np.isnan(dof):
        return float("nan")
    if np.isinf(sigma):
        return float("inf")
    each = _each(sigma, tests)
    bound = float(stats.chi2.isf(each, k) / k if np.isinf(dof) else stats.f.isf(each, k, dof))
    return _rounded_bound(bound, each)


def _lost(comp) -> int:
    """How many of the ensemble's seeds are not finite at some save of the judged loss."""
    stats = comp.test_loss if comp.summary["loss"] == "test" else comp.train_loss
    return int(comp.seeds - np.min(stats["finite_seeds"]))


def _diverged(s, comp, width) -> str:
    """How many seeds of the ensemble diverged and from when, or "" where none did (judged loss)."""
    if s.get("first_diverged_t") is None:
        return ""
    return (f"{_lost(comp)} of {comp.seeds} seeds at N={width} diverged (the first by t = "
            f"{s['first_diverged_t']:g}) where the theory did not")


def _nearest_bound(value, bounds, ok, sigma) -> int:
    """The index of the judged time (`ok`) whose value >= 0 is nearest its bound, or past it the
    furthest (the largest value where sigma = inf: every bound is inf)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bounds > 0, value / bounds, np.where(value > 0, np.inf, 0.0))
        return int(np.nanargmax(np.where(ok, ratio if np.isfinite(sigma) else value, np.nan)))


def _z_check(name, comp, sigma, loss, theory, lazy, lost) -> dict:
    """The agreement z check: |z| at each saved time t > 0 against `z_bound` at that time's degrees
    of freedom (the family of all of them), judged at the time nearest its bound; inf where seeds
    diverged; SKIP where no time has an uncertainty to measure z against."""
    s = comp.summary
    stats = comp.test_loss if s["loss"] == "test" else comp.train_loss
    z, dof = np.asarray(stats["z"], float)[1:], np.asarray(stats["dof"], float)[1:]
    t = np.asarray(comp.t, float)[1:]
    tol = f"|z| <= bound ({_num(sigma)} sigma)"     # (no bound was worked out: |z| <= sigma read as the one)
    if lost:
        return _check(name, np.inf, (-np.inf, np.inf), tol, False, f"{loss}; {lost}")
    if s.get("theory_not_finite_t") is not None:
        return _check(name, np.nan, (), tol, False,
                      f"{loss}; the {theory} is not finite from t = {s['theory_not_finite_t']:g}")
    ok = np.isfinite(z) & (dof > 0)
    if not ok.any():
        return _skip(name, tol,
                     f"{loss}; no uncertainty to measure z against ({_no_z(s)}){lazy}")
    bounds = np.array([z_bound(sigma, d, int(ok.sum())) if k else np.nan for k, d in zip(ok, dof)])
    i = _nearest_bound(np.abs(z), bounds, ok, sigma)
    b = float(bounds[i])
    se = float(np.asarray(stats["se"], float)[1:][i])
    return _check(name, float(z[i]), (-b, b), f"|z| <= {_num(b)}", abs(z[i]) <= b,
                  f"{loss}; z = (networks - {theory}) / se at t = {t[i]:g}, the saved time t > 0 nearest "
                  f"its bound (final z {s['final_z']:.3g}), se = {se:.2g} (the seeds' standard error and the "
                  f"{theory}'s own combined), a t statistic of {dof[i]:.3g} degrees of freedom"
                  f"{_fewer(stats, i, dof[i], theory)}: the bound has the normal tail beyond {_num(sigma)} sigma "
                  f"shared among {int(ok.sum())} saved times{lazy}" + (_weak(b, b) if b > WEAK_Z else ""))


def _prediction_check(name, comp, sigma, theory, lazy, lost) -> dict:
    """The prediction check: q (the ensemble mean's mean-square prediction error over its noise,
    `validation.compare.prediction_stats`) at each saved time t > 0 against `q_bound` (the family
    of all of them), judged at the time nearest its bound; inf where seeds diverged; SKIP where no
    time has a noise to measure q against."""
    s, p = comp.summary, comp.prediction
    tol = f"q <= bound ({_num(sigma)} sigma)"
    what = f"{p['split']} predictions ({p['points']} values)"
    if lost:
        return _check(name, np.inf, (), tol, False, f"{what}; {lost}")
    if s.get("theory_not_finite_t") is not None:
        return _check(name, np.nan, (), tol, False,
                      f"{what}; the {theory} is not finite from t = {s['theory_not_finite_t']:g}")
    q, k, dof = (np.asarray(p[x], float)[1:] for x in ("q", "k", "dof"))
    t = np.asarray(comp.t, float)[1:]
    ok = np.isfinite(q) & np.isfinite(k) & (dof > 0)
    if not ok.any():
        return _skip(name, tol, f"{what}; no noise to measure the ensemble mean's error against ({_no_z(s)}){lazy}")
    bounds = np.array([q_bound(sigma, kk, d, int(ok.sum())) if g else np.nan for g, kk, d in zip(ok, k, dof)])
    i = _nearest_bound(q, bounds, ok, sigma)
    b = float(bounds[i])
    scale = "absolute (the targets are all zero)" if s.get("absolute_errors") else "of the targets' RMS"
    return _check(name, float(q[i]), (b,), f"q <= {_num(b)}", q[i] <= b,
                  f"{what}: the ensemble mean's RMS error {comp.mean_error[1:][i]:.3g} {scale} at t = {t[i]:g}, "
                  f"the saved time t > 0 nearest its bound, against {float(np.asarray(p['noise'])[1:][i]):.3g} "
                  f"expected from the seeds' standard error and the {theory}'s own; q, their squared ratio, is "
                  f"about 1 where the two agree (final q {float(np.asarray(p['q'])[-1]):.3g}), judged as "
                  f"F({k[i]:.3g}, {dof[i]:.3g}) (effective points as the noise's largest direction allows, "
                  f"degrees of freedom){_fewer(p, i, dof[i], theory)}: the bound has the normal tail beyond "
                  f"{_num(sigma)} sigma shared among {int(ok.sum())} saved times{lazy}"
                  + (_weak(b, math.sqrt(b)) if b > WEAK_Q else ""))


def _node_check(name, solution, fewer: dict, sigma, rel) -> dict:
    """The node bias check: z = shift / shift_se (`validation.compare.node_bias`: the loss at M nodes
    a replica minus the loss at M / 2, over their errors) of the test and the train loss
    (`node_losses`: the train loss alone without test targets) at each saved time t > 0 against
    `z_bound` at its dof (the family of all of them, both losses) plus rel times the DMFT's own
    standard error over shift_se (a bias up to rel of the error bar is immaterial: the test is
    |shift| <= rel se under the null), judged at the (loss, time) nearest its bound; FAIL where a
    loss is not finite; SKIP where no time has an error (one replica), where every time's loss is
    below AGREEMENT_FLOOR of its start, and for paired solves through two control variates."""
    nbs = [node_bias(solution, fewer[2], fewer[4], loss=k) for k in node_losses(solution, fewer[2], fewer[4])]
    tol = f"|z| <= {_num(sigma)}"
    t = np.asarray(nbs[0]["t"], float)[1:]
    for nb in nbs:
        vals = np.stack([nb[k][1:] for k in ("full", "half", "quarter")])
        if not np.isfinite(vals).all():
            which = ["M", "M / 2", "M / 4"][int(np.argmax(~np.isfinite(vals).all(axis=1)))]
            bad = float(t[int(np.argmax(~np.isfinite(vals).all(axis=0)))])
            return _check(name, np.nan, (), tol, False, f"the DMFT's {nb['loss']} loss at {which} nodes a replica "
                                                        f"is not finite from t = {bad:g}")
    M = int((solution.info or {}).get("nodes_per_replica", 0))
    z, dof = (np.concatenate([np.asarray(nb[k], float)[1:] for nb in nbs]) for k in ("z", "dof"))
    # (a loss fallen below AGREEMENT_FLOOR of its start, as a realizable train loss falls to rounding,
    # is not judged, as in the agreement check: its shift and error are rounding's)
    floored = np.concatenate([np.abs(nb["full"][1:]) < AGREEMENT_FLOOR * abs(float(nb["full"][0])) for nb in nbs])
    ok = np.isfinite(z) & (dof > 0) & ~floored
    final = "; ".join(
        f"final {nb['loss']} loss {nb['full'][-1]:.4g} at {M} nodes a replica, {nb['half'][-1]:.4g} at {M // 2}, "
        f"{nb['quarter'][-1]:.4g} at {M // 4}; extrapolated to infinitely many nodes {nb['extrapolated'][-1]:.4g}"
        + (f" +- {nb['extrapolated_se'][-1]:.2g}" if ok.any() else "") for nb in nbs)
    if not (np.isfinite(z) & (dof > 0)).any():
        return _skip(name, tol, f"{final} (without errors); no error to measure the shift against: the solution "
                                "has one replica, which its split solves' populations share (use replicas >= 2)")
    if not ok.any():
        return _skip(name, tol, f"{final}; every saved time t > 0 has its loss below {AGREEMENT_FLOOR:g} of its "
                                "start (fitted to rounding), where no node bias is judged")
    below = (f" ({int(floored.sum())} more, where the loss is below {AGREEMENT_FLOOR:g} of its start, at "
             "rounding, are not judged)" if floored.any() else "")
    full_se, shift_se = (np.concatenate([np.asarray(nb[k], float)[1:] for nb in nbs]) for k in ("full_se", "shift_se"))
    bounds = np.array([_rounded_up(b) for b in node_bias_bound(sigma, dof, ok, rel, full_se, shift_se)])
    # (every judged bound inf, as node_bias_rel = inf makes them: the largest |z|, not the first time)
    i = _nearest_bound(np.abs(z), bounds, ok, sigma if np.isfinite(bounds[ok]).any() else np.inf)
    nb, j = nbs[i // len(t)], i % len(t)
    b = float(bounds[i])
    se, sse = float(full_se[i]), float(shift_se[i])
    shift = float(nb["shift"][1:][j])
    ratio = f"{abs(shift) / se:.3g}x" if se > 0 else "(no error at M)"
    # (the bias the bound lets pass, in the DMFT's own errors: what this check catches is one of
    # the error bar's size or more, as the modular testbed's, many errors wide)
    passes = (f"; a bias up to {b * sse / se:.3g}x the DMFT's own standard error passes this bound ({_num(rel)}x "
              "of it by design, check.node_bias_rel: immaterial to its intervals, though resolved)"
              if se > 0 and np.isfinite(b) else "")
    if nb["paired"]:
        passes += ("; the solves at M / 2 and M / 4 split the solution's own nodes (their shared noise cancels "
                   "in the shift; the extrapolation less the pooled prediction's noise, "
                   + ", ".join(f"{x['pooled_noise'][-1]:.2g} ({x['loss']})" for x in nbs) + " at the end)")
    cv = [(s.info or {}).get("control_variate") for s in (solution, fewer[2], fewer[4])]
    if nb["paired"] and len(set(cv)) > 1:
        # (the same nodes through two estimators: their difference is no node-count bias, and can be
        # any size where the solver turned the correction off for its noise)
        return _skip(name, tol, f"{final}; the solver turned the control variate off in some of the three solves "
                                f"({', '.join('on' if c else 'off' for c in cv)} at M, M / 2 and M / 4: it added "
                                "noise there, or the run diverged or ended unresolved with it), so they are two estimators of the same nodes and their shift is not "
                                "the node count's; set theory.control_variate = false to check the node count")
    if len(set(cv)) > 1:                # (the solver turned it off in one: two estimators, not one)
        passes += (f"; the control variate was {', '.join('on' if c else 'off' for c in cv)} at M, M / 2 and M / 4 "
                   "(turned off where it added noise, or the run diverged or ended unresolved with it), so the shift holds the estimators' difference too")
    # (the family is (loss, saved time) pairs: each loss's count of judged times named)
    counts = [int(ok[k * len(t):(k + 1) * len(t)].sum()) for k in range(len(nbs))]
    both = " and ".join(f"the {x['loss']} loss at {c}" for x, c in zip(nbs, counts) if c)
    return _check(name, float(z[i]), (-b, b), f"|z| <= {_num(b)}", abs(z[i]) <= b,
                  f"{final}; z = shift / its se of the {nb['loss']} loss at t = {t[j]:g}, the (loss, saved time "
                  f"t > 0) nearest its bound, shift = loss(M) - loss(M / 2) = {shift:.3g} (minus the bias at M, to "
                  f"first order: {ratio} the DMFT's own standard error there), a t statistic of {dof[i]:.3g} degrees "
                  f"of freedom (replicas - 1): the bound has the normal tail beyond {_num(sigma)} sigma shared among "
                  f"{int(ok.sum())} judged (loss, saved time) pairs ({both} saved times t > 0){below}{passes}"
                  # (weak by its degrees of freedom, not by the allowance the margin adds)
                  + (f"; with these degrees of freedom alone a shift up to {zb:.3g} times its error passes "
                     f"(z_bound {zb:.3g}, before the allowance), so a PASS here says little: more replicas "
                     "narrow it fast" if (zb := z_bound(sigma, dof[i], int(ok.sum()))) > WEAK_Z else ""))


# a z bound this many standard errors wide, or a q bound this many times the expected squared error
# (an RMS error sqrt(q) times its noise), lets only a gross disagreement fail: the detail says so
# (4 seeds and 4 replicas: |z| <= 338 and q <= 1e5, networks trained at 0.8x the learning rate
# PASSed both; 8 and 8: 24 and 330-470)
WEAK_Z = 50.0
WEAK_Q = 2500.0


def _weak(bound: float, ratio: float, more: str = "more seeds and replicas") -> str:
    """The note for a check whose bound lets a disagreement `ratio` times its noise pass (`more`:
    what narrows it)."""
    return (f"; with these degrees of freedom a disagreement up to {ratio:.3g} times its noise passes (bound "
            f"{bound:.3g}), so a PASS here says little: {more} narrow it fast")


def _fewer(stats: dict, i: int, dof: float, theory: str) -> str:
    """Where the theory's replicas, not the seeds, set the dof at saved time i + 1 (t > 0): say so,
    and that more replicas would sharpen the bound (`validation.compare.min_dof`)."""
    if "finite_seeds" not in stats:
        return ""
    seeds = int(np.asarray(stats["finite_seeds"])[1:][i]) - 1
    if dof >= seeds:
        return ""
    return (f" (the {theory}'s own error has {dof:.3g} degrees of freedom, fewer than the seeds' {seeds}; the "
            f"fewer bound the law whatever share of se each has: a {theory} error of more, from more replicas "
            f"at as many nodes each, sharpens the bound)")


def _check_sweep(sweep) -> None:
    """InputError unless `sweep` has what the checks read (a LazyToRich, or an object with its
    gamma0s, widths, solutions, lazy, and scaling when it has widths)."""
    missing = [a for a in ("gamma0s", "widths", "solutions", "lazy") if not hasattr(sweep, a)]
    if not missing and sweep.widths and not hasattr(sweep, "scaling"):
        missing = ["scaling"]
    if missing:
        raise InputError(f"sweep must be a validation.LazyToRich (from lazy_to_rich), got "
                         f"{type(sweep).__name__} (no {', '.join(missing)})")
    if not sweep.gamma0s:
        raise InputError("sweep: has no gamma0s: nothing to check")
    fewer = getattr(sweep, "fewer", None) or {}
    if not isinstance(fewer, dict):
        raise InputError(f"sweep.fewer must be a dict (gamma0 -> {{2: Solution, 4: Solution}}), got {type(fewer).__name__}")
    for g, sols in fewer.items():
        if not isinstance(sols, dict) or set(sols) != {2, 4} or \
                not all(hasattr(s, "test_loss") and hasattr(s, "t") for s in sols.values()):
            raise InputError(f"sweep.fewer[{g!r}] must map 2 and 4 to the DMFT's solutions at half and a quarter of "
                             f"its nodes a replica (validation.lazy_to_rich(node_check=True)), got {shown(sols)}")
        if g not in sweep.solutions:
            raise InputError(f"sweep.fewer: gamma0 {g!r} has no full solution in sweep.solutions")
    for g in (sweep.gamma0s if sweep.widths else ()):
        for comp in sweep.scaling[g]["comparisons"].values():
            stats = getattr(comp, "test_loss", None) or getattr(comp, "train_loss", None) or {}
            if "worst_rel_error" not in comp.summary or "dof" not in stats \
                    or getattr(comp, "prediction", None) is None:
                raise InputError("sweep: its comparisons were made by an older version (no worst_rel_error, "
                                 "dof or prediction): build them again with validation.width_scaling")


def _check_tolerances(chk) -> dict:
    """chk as a dict of known tolerances, each a real number >= 0 or +inf (spread_slope: any finite)."""
    if chk is None:
        return {}
    mapping("chk", chk, f"tolerances (names {', '.join(TOLERANCES)})")
    unknown = [k for k in chk if k not in TOLERANCES]
    if unknown:
        raise InputError(f"chk: unknown tolerance(s) {unknown!r}; expected some of {list(TOLERANCES)}")
    # (+inf: no bound, as before these checks; the spread's slope is a centre, never inf)
    return {k: (arg.real(f"chk[{k!r}]", v) if k == "spread_slope" else real_or_inf(f"chk[{k!r}]", v, nonnegative=True))
            for k, v in chk.items()}


def _lazy_move(lazy) -> float | None:
    """The lazy limit's relative first-layer weight change by its last save (linear in gamma0 there:
    how far from lazy the sweep's smallest gamma0 is, from the closed form, not the solver under
    check); None where the solution records none (then the check is judged)."""
    wc = getattr(lazy, "weight_change", None)
    first = wc.get("first_layer") if isinstance(wc, dict) else None
    if first is None or not np.size(first) or not np.isfinite(np.asarray(first, float)[-1]):
        return None
    return float(np.asarray(first, float)[-1])


def checks(sweep, chk: dict | None = None) -> list[dict]:
    """One verdict per check of a `validation.LazyToRich` sweep: dicts with name, value (full
    precision), shown (the value as reports show it), tolerance, verdict ("PASS"/"FAIL"/"SKIP")
    and detail. `chk` overrides `TOLERANCES`."""
    _check_sweep(sweep)
    chk = {**TOLERANCES, **_check_tolerances(chk)}
    fewer = getattr(sweep, "fewer", None) or {}
    return _checks(sweep, chk) + [_node_check(f"node bias gamma0={g:g}", sweep.solutions[g], fewer[g],
                                              chk["agreement_sigma"], chk["node_bias_rel"])
                                  for g in sweep.gamma0s if g in fewer]


def _checks(sweep, chk: dict) -> list[dict]:
    """`checks` but the node bias checks."""
    out = []
    theory = theory_name(sweep)
    lazy = ("; the theory is the lazy limit (method = 'lazy'), not the DMFT at this gamma0"
            if theory == "lazy limit" else "")
    if sweep.widths:
        wmax = max(sweep.widths)
        for g in sweep.gamma0s:
            sc = sweep.scaling[g]
            fit = sc["per_seed_fit"]
            name = f"spread gamma0={g:g}"
            if len(sweep.widths) < MIN_SPREAD_WIDTHS:
                out.append(_skip(name, None, f"needs at least {MIN_SPREAD_WIDTHS} widths for a fitted slope "
                                             f"with an error, got {len(sweep.widths)}"))
            # (before "no fit": the DMFT's error, taken out in quadrature, can leave errors of 0 and no fit)
            elif sc["theory_floor"] > 0 and np.min(sc["per_seed_error"]) < FLOOR_RATIO * sc["theory_floor"]:
                w_at = int(sc["widths"][int(np.argmin(sc["per_seed_error"]))])
                out.append(_skip(name, None, f"the networks' per-seed error at N={w_at}, "
                                             f"{np.min(sc['per_seed_error']):.3g}, is within {FLOOR_RATIO:g}x the "
                                             f"DMFT's own standard error, {sc['theory_floor']:.3g}: the slope would "
                                             "measure the DMFT's sampling (raise theory.samples)"))
            elif fit is None:
                lost = [f"{_lost(c)} of {c.seeds} at N={w}" for w, c in sc["comparisons"].items()
                        if c.summary.get("first_diverged_t") is not None]
                why = (f" (seeds diverged: {', '.join(lost)})" if lost else "")
                out.append(_skip(name, None, f"the per-seed errors are not all finite and positive: no fit{why}"))
            else:
                lo, hi = _spread_bounds(chk["spread_slope"], chk["spread_slope_tol"])
                floor = sc["theory_floor"]
                note = (f"; the smallest network error is {np.min(sc['per_seed_error']) / floor:.0f}x the "
                        "DMFT's own error, taken out in quadrature before the fit") if floor > 0 else (
                        "; the DMFT's own standard error is unknown (one replica): nothing taken out, and the "
                        "slope may measure its sampling (use replicas >= 2)" if np.isnan(floor) else "")
                err = (f"+- {fit.half_width():.3g} (95%, t with {fit.n - 2} dof)" if np.isfinite(fit.stderr)
                       else "(no error estimate)")
                # (a diverging seed's last finite saves, huge, are in its width's per-seed error)
                lost = [f"{_lost(c)} of {c.seeds} at N={w}" for w, c in sc["comparisons"].items()
                        if c.summary.get("first_diverged_t") is not None]
                if lost:
                    note += (f"; seeds diverged ({', '.join(lost)}): their saves before they did are in the "
                             "per-seed errors, so the slope may measure the divergence")
                out.append(_check(name, fit.slope, (lo, hi),
                                  f"{_num(chk['spread_slope'], sign=True)} +- {_num(chk['spread_slope_tol'])}",
                                  lo <= fit.slope <= hi,
                                  f"slope {_shown(fit.slope, (lo, hi))} {err} over widths "
                                  f"{fit.x_range[0]:g} to {fit.x_range[1]:g} ({fit.n} widths){note}"))
            comp = sc["comparisons"][wmax]
            s = comp.summary
            loss = f"final {s['loss']} loss: {theory} {s['final_theory_loss']:.4g}, {_networks(s)}"
            lost = _diverged(s, comp, wmax)
            rel, tol = s["worst_rel_error"], chk["agreement_rel"]
            if s.get("zero_targets"):
                out.append(_skip(f"agreement gamma0={g:g} N={wmax}", f"<= {_num(tol)}",
                                 f"{loss}; the targets are all zero, so the {theory}'s loss is zero to rounding "
                                 "and no relative error is defined (the z check judges the agreement)"))
            else:
                where = (f"{lost}: the mean over all seeds is not finite" if lost else
                         f"the {theory} is not finite from t = {s['theory_not_finite_t']:g}"
                         if s.get("theory_not_finite_t") is not None else
                         f"the worst of the saved times t > 0, at t = {s['worst_rel_t']:g} (final "
                         f"{s['final_rel_error']:.3g})")
                out.append(_check(f"agreement gamma0={g:g} N={wmax}", rel, (tol,), f"<= {_num(tol)}", rel <= tol,
                                  f"{loss}; relative error abs(networks - {theory}) / {theory} (or / {AGREEMENT_FLOOR:g} of its "
                                  f"initial loss where it is smaller: rounding), {where}{lazy}"))
            out.append(_z_check(f"agreement z gamma0={g:g} N={wmax}", comp, chk["agreement_sigma"], loss, theory,
                                lazy, lost))
            out.append(_prediction_check(f"prediction gamma0={g:g} N={wmax}", comp, chk["agreement_sigma"], theory,
                                         lazy, lost))
    g0 = min(sweep.gamma0s)
    th, lz = sweep.solutions[g0], sweep.lazy[g0]
    which = "test" if th.test_loss is not None and lz.test_loss is not None else "train"
    a = th.test_loss if which == "test" else th.train_loss
    b = lz.test_loss if which == "test" else lz.train_loss
    name, tol = f"lazy limit gamma0={g0:g}", chk["lazy_rel"]
    decay = float(getattr(getattr(sweep, "schedule", None), "weight_decay", 0.0) or 0.0)
    if decay > 0:       # the baseline is solved without it (sweep.py): the gap would be the decay's
        out.append(_skip(name, f"<= {_num(tol)}",
                         f"final {which} loss: DMFT {a[-1]:.4g} with weight_decay = {decay:g}, lazy closed form "
                         f"{b[-1]:.4g} without (decay moves the kernel: the lazy limit has none), so their "
                         "gap measures the decay, not the solver"))
        return out
    if (getattr(th, "info", None) or {}).get("method") == "lazy":
        out.append(_skip(name, f"<= {_num(tol)}", "the theory was solved with method = 'lazy': it is the "
                         "lazy limit itself, so the check would compare it with itself"))
        return out
    move = _lazy_move(lz)
    if move is not None and move > chk["lazy_move"]:
        below = g0 * chk["lazy_move"] / move
        out.append(_skip(name, f"<= {_num(tol)}",
                         f"final {which} loss: DMFT {a[-1]:.4g}, lazy closed form {b[-1]:.4g}; not near the "
                         f"lazy limit: the lazy limit's own first-layer weights move by {move:.3g} (relative) "
                         f"at gamma0 = {g0:g}, more than check.lazy_move = {_num(chk['lazy_move'])}, so the gap "
                         "measures the richness, not the solver (the movement is linear in gamma0: add a gamma0 "
                         f"<= {_rounded_down(below):g} to the sweep to check the solver against the lazy limit)"))
        return out
    if zero_targets(th, which):
        out.append(_skip(name, f"<= {_num(tol)}",
                         f"final {which} loss: DMFT {a[-1]:.4g}, lazy closed form {b[-1]:.4g}; the targets are all "
                         "zero, so both are zero to rounding and no relative error is defined"))
        return out
    scale = max(abs(float(b[-1])), LAZY_FLOOR * abs(float(b[0])))
    floored = scale > abs(float(b[-1]))
    diff = abs(float(a[-1]) - float(b[-1]))
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else np.inf)      # no loss at all: equal or not
    out.append(_check(name, rel, (tol,), f"<= {_num(tol)}", rel <= tol,
                      f"final {which} loss: DMFT {a[-1]:.4g}, lazy closed form {b[-1]:.4g}"
                      + (f"; relative to {LAZY_FLOOR:g} x the initial loss {b[0]:.4g} (the final one "
                         "is below it)" if floored else "")))
    return out
