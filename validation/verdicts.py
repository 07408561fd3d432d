"""Verdicts: theory against networks, each check against a stated tolerance.

Checks (tolerances from a dict, the [check] section of the validate job):
- spread:      per-seed prediction error against width has slope spread_slope +- spread_slope_tol,
               fitted over at least MIN_SPREAD_WIDTHS widths (a fit through two points has no
               error; fewer widths: SKIP);
- agreement:   at the largest width, the ensemble-mean final test loss is within
               agreement_rel (relative) of the DMFT;
- agreement z: at the largest width, |z| <= agreement_sigma, z = (ensemble mean - DMFT) / se with
               se combining the seeds' standard error and the DMFT's own (SKIP when se = 0: one
               seed against an exact theory has no uncertainty to measure z against);
- lazy:        at the smallest gamma0, the DMFT final test loss (train loss without test targets)
               is within lazy_rel of the lazy closed form's, relative to that loss, or to
               LAZY_FLOOR of the initial loss when the final one is smaller (a train loss fitted
               to ~0: a relative error of two tiny numbers says nothing about the limit).
"""

from __future__ import annotations

import numpy as np

__all__ = ["checks", "TOLERANCES", "MIN_SPREAD_WIDTHS", "LAZY_FLOOR"]

# default tolerances (the validate job's [check] section)
TOLERANCES = {"spread_slope": -0.5, "spread_slope_tol": 0.15, "agreement_sigma": 5.0,
              "agreement_rel": 0.05, "lazy_rel": 0.1}

# the fewest widths the spread check fits a slope over (two points give a slope without an error)
MIN_SPREAD_WIDTHS = 3

# the lazy check's scale never falls below this fraction of the lazy limit's initial loss
LAZY_FLOOR = 0.01


def checks(sweep, chk: dict | None = None) -> list[dict]:
    """One verdict per check of a `validation.LazyToRich` sweep: dicts with name, value,
    tolerance, verdict ("PASS"/"FAIL"/"SKIP") and detail. `chk` overrides `TOLERANCES`."""
    chk = {**TOLERANCES, **(chk or {})}
    out = []
    if sweep.widths:
        wmax = max(sweep.widths)
        for g in sweep.gamma0s:
            sc = sweep.scaling[g]
            fit = sc["per_seed_fit"]
            name = f"spread gamma0={g:g}"
            if len(sweep.widths) < MIN_SPREAD_WIDTHS:
                out.append(dict(name=name, value=None, tolerance=None, verdict="SKIP",
                                detail=f"needs at least {MIN_SPREAD_WIDTHS} widths for a fitted slope with "
                                       f"an error, got {len(sweep.widths)}"))
            elif fit is None:
                out.append(dict(name=name, value=None, tolerance=None, verdict="SKIP",
                                detail="the per-seed errors are not all finite and positive: no fit"))
            else:
                ok = abs(fit.slope - chk["spread_slope"]) <= chk["spread_slope_tol"]
                floor = sc["theory_floor"]
                note = (f"; smallest network error is {sc['per_seed_error'][-1] / floor:.0f}x the "
                        "DMFT's own error") if floor > 0 else ""
                out.append(dict(name=name, value=round(fit.slope, 3),
                                tolerance=f"{chk['spread_slope']:+g} +- {chk['spread_slope_tol']:g}",
                                verdict="PASS" if ok else "FAIL", detail=fit.describe() + note))
            s = sc["comparisons"][wmax].summary
            loss = (f"final {s['loss']} loss: DMFT {s['final_theory_loss']:.4g}, networks "
                    f"{s['final_network_loss']:.4g} +- {s['final_network_std']:.2g} (std over seeds)")
            ok = s["final_rel_error"] <= chk["agreement_rel"]
            out.append(dict(name=f"agreement gamma0={g:g} N={wmax}", value=round(s["final_rel_error"], 4),
                            tolerance=f"<= {chk['agreement_rel']:g}", verdict="PASS" if ok else "FAIL",
                            detail=f"{loss}; relative error abs(networks - DMFT) / DMFT"))
            se = s.get("final_se", float("nan"))
            zname = f"agreement z gamma0={g:g} N={wmax}"
            if not (se > 0 and np.isfinite(s["final_z"])):
                out.append(dict(name=zname, value=None, tolerance=f"|z| <= {chk['agreement_sigma']:g}",
                                verdict="SKIP", detail=f"{loss}; no uncertainty to measure z against (fewer "
                                                       "than two seeds finite at the end, or no spread and "
                                                       "an exact theory)"))
            else:
                z = s["final_z"]
                ok = abs(z) <= chk["agreement_sigma"]
                out.append(dict(name=zname, value=round(z, 2), tolerance=f"|z| <= {chk['agreement_sigma']:g}",
                                verdict="PASS" if ok else "FAIL",
                                detail=f"{loss}; z = (networks - DMFT) / se, se = {se:.2g} (the seeds' "
                                       "standard error and the DMFT's own combined)"))
    g0 = min(sweep.gamma0s)
    th, lz = sweep.solutions[g0], sweep.lazy[g0]
    which = "test" if th.test_loss is not None and lz.test_loss is not None else "train"
    a = th.test_loss if which == "test" else th.train_loss
    b = lz.test_loss if which == "test" else lz.train_loss
    scale = max(abs(float(b[-1])), LAZY_FLOOR * abs(float(b[0])))
    floored = scale > abs(float(b[-1]))
    diff = abs(float(a[-1]) - float(b[-1]))
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else np.inf)      # no loss at all: equal or not
    out.append(dict(name=f"lazy limit gamma0={g0:g}", value=round(rel, 4), tolerance=f"<= {chk['lazy_rel']:g}",
                    verdict="PASS" if rel <= chk["lazy_rel"] else "FAIL",
                    detail=f"final {which} loss: DMFT {a[-1]:.4g}, lazy closed form {b[-1]:.4g}"
                           + (f"; relative to {LAZY_FLOOR:g} x the initial loss {b[0]:.4g} (the final one "
                              "is below it)" if floored else "")))
    return out
