"""Verdicts: theory against networks, each check against a stated tolerance.

Checks (tolerances from a dict, the [check] section of the validate job):
- spread:    per-seed prediction error against width has slope spread_slope +- spread_slope_tol;
- agreement: at the largest width, the ensemble-mean final test loss is within
             agreement_rel (relative) of the DMFT (its z-score is reported too);
- lazy:      at the smallest gamma0, the DMFT final test loss is within lazy_rel of the
             lazy closed form.
"""

from __future__ import annotations

__all__ = ["checks", "TOLERANCES"]

# default tolerances (the validate job's [check] section)
TOLERANCES = {"spread_slope": -0.5, "spread_slope_tol": 0.15, "agreement_sigma": 5.0,
              "agreement_rel": 0.05, "lazy_rel": 0.1}


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
            if fit is None or len(sweep.widths) < 2:
                out.append(dict(name=f"spread gamma0={g:g}", value=None, tolerance=None,
                                verdict="SKIP", detail="needs two widths with finite errors"))
            else:
                ok = abs(fit.slope - chk["spread_slope"]) <= chk["spread_slope_tol"]
                floor = sc["theory_floor"]
                note = (f"; smallest network error is {sc['per_seed_error'][-1] / floor:.0f}x the "
                        "DMFT's own error") if floor > 0 else ""
                out.append(dict(name=f"spread gamma0={g:g}", value=round(fit.slope, 3),
                                tolerance=f"{chk['spread_slope']:+g} +- {chk['spread_slope_tol']:g}",
                                verdict="PASS" if ok else "FAIL", detail=fit.describe() + note))
            s = sc["comparisons"][wmax].summary
            ok = s["final_rel_error"] <= chk["agreement_rel"]
            out.append(dict(name=f"agreement gamma0={g:g} N={wmax}", value=round(s["final_rel_error"], 4),
                            tolerance=f"<= {chk['agreement_rel']:g}", verdict="PASS" if ok else "FAIL",
                            detail=(f"final {s['loss']} loss: DMFT {s['final_theory_loss']:.4g}, networks "
                                    f"{s['final_network_loss']:.4g} +- {s['final_network_std']:.2g} (std), "
                                    f"z = {s['final_z']:+.1f}")))
    g0 = min(sweep.gamma0s)
    th, lz = sweep.solutions[g0], sweep.lazy[g0]
    a = th.test_loss if th.test_loss is not None else th.train_loss
    b = lz.test_loss if lz.test_loss is not None else lz.train_loss
    rel = float(abs(a[-1] - b[-1]) / abs(b[-1]))
    out.append(dict(name=f"lazy limit gamma0={g0:g}", value=round(rel, 4), tolerance=f"<= {chk['lazy_rel']:g}",
                    verdict="PASS" if rel <= chk["lazy_rel"] else "FAIL",
                    detail=f"final loss: DMFT {a[-1]:.4g}, lazy closed form {b[-1]:.4g}"))
    return out
