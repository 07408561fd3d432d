"""Verdicts: theory against networks, each check against a stated tolerance.

Checks (tolerances from a dict, the [check] section of the validate job):
- spread:      per-seed prediction error against width has slope spread_slope +- spread_slope_tol,
               fitted over at least MIN_SPREAD_WIDTHS widths (a fit through two points has no
               error; fewer widths: SKIP);
- agreement:   at the largest width, the ensemble-mean final test loss is within
               agreement_rel (relative) of the DMFT;
- agreement z: at the largest width, |z| <= agreement_sigma, z = (ensemble mean - DMFT) / se with
               se combining the seeds' standard error and the DMFT's own (SKIP when se = 0 or
               unknown: under two finite seeds, or a DMFT of one replica, whose error nothing
               estimates);
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

Each check keeps its value at full precision and shows it ("shown") to 4 significant digits, or
as many more as it takes to sit on the same side of the tolerance as the value: a verdict follows
from the numbers a reader sees (0.0081313 against <= 0.0081 is shown as 0.008131, not 0.0081).
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from dmft import checks as arg
from dmft.errors import InputError

from .compare import zero_targets
from .inputs import mapping, real_or_inf, theory_name

__all__ = ["checks", "TOLERANCES", "MIN_SPREAD_WIDTHS", "LAZY_FLOOR"]

# default tolerances (the validate job's [check] section)
TOLERANCES = {"spread_slope": -0.5, "spread_slope_tol": 0.15, "agreement_sigma": 5.0,
              "agreement_rel": 0.05, "lazy_rel": 0.1, "lazy_move": 0.1}

# the fewest widths the spread check fits a slope over (two points give a slope without an error)
MIN_SPREAD_WIDTHS = 3

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
            elif fit is None:
                out.append(_skip(name, None, "the per-seed errors are not all finite and positive: no fit"))
            else:
                lo, hi = _spread_bounds(chk["spread_slope"], chk["spread_slope_tol"])
                floor = sc["theory_floor"]
                note = (f"; smallest network error is {sc['per_seed_error'][-1] / floor:.0f}x the "
                        "DMFT's own error") if floor > 0 else ""
                err = f"+- {fit.stderr:.3f} (1 s.e.)" if np.isfinite(fit.stderr) else "(no error estimate)"
                out.append(_check(name, fit.slope, (lo, hi),
                                  f"{_num(chk['spread_slope'], sign=True)} +- {_num(chk['spread_slope_tol'])}",
                                  lo <= fit.slope <= hi,
                                  f"slope {_shown(fit.slope, (lo, hi))} {err} over widths "
                                  f"{fit.x_range[0]:g} to {fit.x_range[1]:g} ({fit.n} widths){note}"))
            s = sc["comparisons"][wmax].summary
            loss = f"final {s['loss']} loss: {theory} {s['final_theory_loss']:.4g}, {_networks(s)}"
            rel, tol = s["final_rel_error"], chk["agreement_rel"]
            if s.get("zero_targets"):
                out.append(_skip(f"agreement gamma0={g:g} N={wmax}", f"<= {_num(tol)}",
                                 f"{loss}; the targets are all zero, so the {theory}'s loss is zero to rounding "
                                 "and no relative error is defined (the z check judges the agreement)"))
            else:
                out.append(_check(f"agreement gamma0={g:g} N={wmax}", rel, (tol,), f"<= {_num(tol)}", rel <= tol,
                                  f"{loss}; relative error abs(networks - {theory}) / {theory}{lazy}"))
            se, z, sigma = s.get("final_se", float("nan")), s["final_z"], chk["agreement_sigma"]
            zname = f"agreement z gamma0={g:g} N={wmax}"
            if not (se > 0 and np.isfinite(z)):
                out.append(_skip(zname, f"|z| <= {_num(sigma)}",
                                 f"{loss}; no uncertainty to measure z against ({_no_z(s)}){lazy}"))
            else:
                out.append(_check(zname, z, (-sigma, sigma), f"|z| <= {_num(sigma)}", abs(z) <= sigma,
                                  f"{loss}; z = (networks - {theory}) / se, se = {se:.2g} (the seeds' "
                                  f"standard error and the {theory}'s own combined){lazy}"))
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
                         f"<= {below:.2g} to the sweep to check the solver against the lazy limit)"))
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
