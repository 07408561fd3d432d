"""Tests a mutation audit of validation/compare.py, validation/fitting.py and validation/verdicts.py
found missing (after tests/test_mutation_audit74.py and 74b.py, which did validation/deep_linear.py
and validation/grokking.py): each kills a small semantic mutant (a changed constant, a swapped
min / max, a dropped factor) of a line that decides a number or a verdict `dmft validate`'s report
shows, and that the suite let pass. Synthetic inputs with closed-form expectations; nothing is
trained or solved."""

import types

import numpy as np
import pytest

from validation.compare import rounding_share


# ------------------------------------------------------------------------ compare.rounding_share
def _results(dtype=np.float64, precision=None):
    """A solution and a run as rounding_share reads them: their train losses' dtype and the
    solve's recorded precision."""
    loss = np.ones(3, dtype)
    return (types.SimpleNamespace(train_loss=loss, info={"precision": precision}),
            types.SimpleNamespace(train_loss=loss))


def test_rounding_share_is_round_ulps_of_float64_and_mixed_ulps_of_float32():
    """float64 results share ROUND_ULPS = 4096 ulp of float64 (9.1e-13 relative, the docstring's
    number; with min for max it read 0, and the exact closure's 22-ulp agreement FAILed z); a solve
    that took float32 products ("mixed") shares MIXED_ULPS = 64 ulp of float32 (7.6e-6), the larger."""
    assert rounding_share(*_results()) == 4096 * 2.0 ** -52
    assert rounding_share(*_results(precision="mixed")) == 64 * 2.0 ** -23
    assert rounding_share(*_results(np.float32)) == 4096 * 2.0 ** -23


# ----------------------------------------------------------------------- fitting.node_extrapolation
def test_node_extrapolation_takes_a_standard_error_of_zero():
    """A full_se of 0 (an exact estimate) is a standard error >= 0, not refused: the extrapolation's
    error is then sqrt(half_se^2 + (curvature / 3)^2) (x = 1 + 1 / M + 1 / M^2 at M = 4, 2, 1)."""
    from validation.fitting import node_extrapolation

    x = [1 + 1 / m + 1 / m ** 2 for m in (4.0, 2.0, 1.0)]
    out = node_extrapolation(*x, full_se=0.0, half_se=0.03, quarter_se=0.0)
    curvature = (x[1] - x[2]) - 2 * (x[0] - x[1])                     # -6 b / M^2 = -0.375
    assert curvature == pytest.approx(-0.375)
    assert out["extrapolated_se"] == pytest.approx(np.hypot(0.03, curvature / 3), rel=1e-12)
    assert out["shift_se"] == pytest.approx(0.03, rel=1e-12)


# ------------------------------------------------------------------------ verdicts bounds
def test_z_bound_at_zero_sigma_fails_every_z():
    """sigma = 0: the tail is everything, so the bound is 0 at any dof and number of times (with
    `each > 1` for `each >= 1` it read inf, a bound that passes every z)."""
    from validation.verdicts import q_bound, z_bound

    assert z_bound(0.0, 4.0, 3) == 0.0 and z_bound(0.0, np.inf, 1) == 0.0
    assert q_bound(0.0, 2.0, 4.0, 3) == 0.0


def test_node_bias_bound_shares_the_tail_among_the_judged_entries_and_adds_rel_full_over_shift():
    """ok = [T, F, T]: the tail is shared between the 2 judged entries (not all 3), the first gets
    rel x full_se / shift_se = 0.5 x 0.2 / 0.1 = 1 on top, the third (shift_se 0: no ratio) none."""
    from scipy import stats

    from validation.verdicts import node_bias_bound

    b = node_bias_bound(3.0, [4.0, 4.0, 4.0], [True, False, True], 0.5, [0.2, 0.2, 0.2], [0.1, 0.1, 0.0])
    each = 1 - (1 - 2 * stats.norm.sf(3.0)) ** (1 / 2)
    raw = stats.t.isf(each / 2, 4.0)                                  # 7.35..., rounded up to 3 digits
    assert np.isnan(b[1])
    assert raw <= b[2] <= raw * (1 + 2e-3) and b[0] == pytest.approx(b[2] + 1.0, rel=1e-12)


# ------------------------------------------------------------------------- verdicts, lazy check
def test_the_lazy_check_floors_its_scale_at_one_percent_of_the_initial_loss():
    """Final lazy loss 0.005 of an initial 1: the scale is LAZY_FLOOR (0.01) x 1, so DMFT 0.0052
    reads 0.0002 / 0.01 = 0.02 (a floor of 0.001 read 0.04), relative to the initial loss; its
    tolerance is shown in the digits that read back as the one compared."""
    from validation.verdicts import checks

    sol = lambda final: types.SimpleNamespace(test_loss=np.array([1.0, final]),      # noqa: E731
                                              train_loss=np.array([1.0, final]), info={"method": "forward"})
    sweep = types.SimpleNamespace(gamma0s=[0.01], widths=[], solutions={0.01: sol(0.0052)},
                                  lazy={0.01: sol(0.005)})
    (lazy,) = checks(sweep)
    assert lazy["verdict"] == "PASS" and lazy["value"] == pytest.approx(0.02, rel=1e-9)
    assert "relative to 0.01 x the initial loss" in lazy["detail"]
    # a tolerance is shown as it is compared: every digit %g would drop (it read <= 0.123457)
    assert checks(sweep, {"lazy_rel": 0.1234567})[0]["tolerance"] == "<= 0.1234567"
