"""Tests a mutation audit of validation/deep_linear.py and validation/grokking.py found missing:
each kills a small semantic mutant (a flipped comparison, a dropped factor, a swapped min / max)
of a line that decides a number or a verdict users read, and that the suite let pass. Synthetic
inputs with closed-form or independently computed expectations; nothing is trained or solved
(each < 0.5 s)."""

import types

import numpy as np
import pytest

import dmft


def _ensembles(a, b, s=1.0):
    """A run and an SDE result of one mode with two saves (t = 0, 1), their members at t = 1 `a`
    and `b` (both start at 0.1): what `compare_modes` reads, nothing trained."""
    def result(x, info):
        x = np.asarray(x, float)
        modes = np.stack([np.full(x.size, 0.1), x], axis=1)[..., None]       # (S, T, 1)
        return types.SimpleNamespace(t=np.array([0.0, 1.0]), modes=modes, info=info)
    return result(a, None), result(b, {"s_effective": np.array([s])})


# ----------------------------------------------------------------- deep_linear.spread_ratio_error
def test_spread_ratio_error_counts_each_sample_with_n_minus_one():
    """Two samples, -1, 0, 1 and 5 times that: standardized, their pooled kurtosis is 3/2, so
    var(log ratio) = (3/2 - 1) / 4 x (1/2 + 1/2) = 1/8 (1 / n instead of 1 / (n - 1) read 5/48)."""
    from validation.deep_linear import spread_ratio_error

    assert spread_ratio_error([-1.0, 0.0, 1.0], [-5.0, 0.0, 5.0]) == pytest.approx(np.sqrt(1 / 8), rel=1e-12)


# ----------------------------------------------------------------- deep_linear.compare_modes
def test_compare_modes_z_takes_the_larger_of_the_two_variances_for_the_networks():
    """Networks of spread 0.01 against an SDE of spread 0.1 (16 each): the z-score divides the
    difference of the means by sqrt(var_sde / 16 + var_sde / 16), the networks' variance raised
    to the SDE's (with their own, 0.01^2, the z was 1.4 times larger)."""
    from validation.deep_linear import compare_modes

    u = np.tile([-1.0, 1.0], 8)
    a, b = 0.5 + 0.01 * u, 0.45 + 0.1 * u
    [row] = compare_modes(*_ensembles(a, b))
    vb = np.var(b, ddof=1)
    assert row["z"] == pytest.approx(0.05 / np.sqrt(vb / 16 + vb / 16), rel=1e-9)


def test_compare_modes_keeps_a_difference_of_a_thousand_ulp_where_one_side_has_spread():
    """Networks all at 1 (no spread) against an SDE spread by 1e-13 whose mean is 1000 ulp away: the
    difference is no rounding (only where neither side has spread are 4096 ulp allowed), and z
    is the difference over its error (read 0 where the smaller spread decided)."""
    from validation.deep_linear import compare_modes

    u = np.tile([-1.0, 1.0], 8)
    a, b = np.ones(16), 1.0 + 1000 * np.finfo(float).eps + 1e-13 * u
    [row] = compare_modes(*_ensembles(a, b))
    diff = a.mean() - b.mean()
    assert diff < 0 and row["z"] == pytest.approx(diff / np.sqrt(2 * np.var(b, ddof=1) / 16), rel=1e-6)


def test_compare_modes_z_rule_does_not_pass_a_mean_beyond_the_target_and_three_sde_spreads():
    """Networks scattered (spread 10) around 2 against an SDE at 0.5 +- 0.1, target 1: z = 0.6,
    but the difference 1.5 exceeds max(target, 3 SDE spreads) = 1, so no rule passes the mean
    (30 spreads admitted it by its z)."""
    from validation.deep_linear import compare_modes

    u = np.tile([-1.0, 1.0], 8)
    [row] = compare_modes(*_ensembles(2.0 + 10.0 * u, 0.5 + 0.1 * u))
    assert abs(row["z"]) < 1 and row["mean_rule"] == "" and row["verdict"] == "FAIL"


def test_compare_modes_effect_rule_stops_at_a_quarter_of_the_sde_spread():
    """1024 networks 0.4 SDE spreads above the SDE's mean (z = 9, 4% of the target 1): neither the
    z, the effect (0.4 > 0.25) nor the target rule passes it, a FAIL on the mean alone (the
    spreads are equal)."""
    from validation.deep_linear import compare_modes

    u = np.tile([-1.0, 1.0], 512)
    [row] = compare_modes(*_ensembles(0.54 + 0.1 * u, 0.5 + 0.1 * u))
    assert row["effect"] == pytest.approx(0.4, rel=1e-9) and row["z"] > 5
    assert row["std_ratio"] == pytest.approx(1.0) and row["mean_rule"] == "" and row["verdict"] == "FAIL"


def test_compare_modes_judges_the_spread_from_ten_members_on_a_side():
    """Ten networks (SPREAD_MIN_N, not fewer) ten times as spread as ten SDE paths: the spread is
    compared (the +-1 members' kurtosis 1 leaves the band unwidened) and FAILs."""
    from validation.deep_linear import SPREAD_MIN_N, compare_modes

    u = np.tile([-1.0, 1.0], SPREAD_MIN_N // 2)
    [row] = compare_modes(*_ensembles(0.5 + 1.0 * u, 0.5 + 0.1 * u))
    assert row["spread_compared"] is True and row["std_ratio"] == pytest.approx(10.0)
    assert "spread_note" not in row and row["verdict"] == "FAIL"


def test_compare_modes_room_around_a_collapsed_sde_is_widened_by_the_log_error_of_2_n_minus_2():
    """An SDE collapsed at its target 1 (spread 1e-3 < 1% of it) against 16 networks of spread
    0.026: above 1.33 x exp(3 / sqrt(2 x 15)) x 0.01 = 0.0230, so they are scattered, a FAIL
    (exp(3 / sqrt(15)) allowed 0.0289)."""
    from validation.deep_linear import compare_modes

    u = np.tile([-1.0, 1.0], 8)
    [row] = compare_modes(*_ensembles(1.0 + 0.026 * u, 1.0 + 0.001 * u))
    assert row["mean_rule"] and row.get("scattered") is True and row["verdict"] == "FAIL"


def test_compare_modes_z_of_two_ensembles_without_spread_carries_the_sign_of_the_difference():
    """Networks all at 0.5 against SDE paths all at 0.6: no spread on either side and a real
    difference, z = -inf (the networks below), not +inf."""
    from validation.deep_linear import compare_modes

    [row] = compare_modes(*_ensembles(np.full(16, 0.5), np.full(16, 0.6)))
    assert row["z"] == -np.inf and row["verdict"] == "FAIL"


def test_compare_modes_leaves_the_ratio_of_spreads_alone_where_the_sde_has_collapsed():
    """An SDE collapsed at its target 1 (spread 1e-3) against networks of spread 0.015, within the
    room 0.023 around it: the ratio of spreads (15) is not compared (`spread_compared` False, by
    the SDE's spread, not the networks'), a PASS."""
    from validation.deep_linear import compare_modes

    u = np.tile([-1.0, 1.0], 8)
    [row] = compare_modes(*_ensembles(1.0 + 0.015 * u, 1.0 + 0.001 * u))
    assert row["spread_compared"] is False and row["verdict"] == "PASS"


def test_compare_modes_default_z_max_is_5_and_spread_band_0_75_to_1_33():
    """256 networks 4.5 standard errors from the SDE's mean (0.40 of its spread, 4% of the
    target: only the z rule applies) PASS by z_max = 5; a ratio of spreads of 1.4 (members +-1:
    kurtosis 1, the band unwidened) FAILs the band (0.75, 1.33)."""
    from validation.deep_linear import compare_modes

    u = np.tile([-1.0, 1.0], 128)
    d = 4.5 * 0.1 * np.sqrt(2 / 256)
    [row] = compare_modes(*_ensembles(0.5 + d + 0.1 * u, 0.5 + 0.1 * u))
    assert row["z"] == pytest.approx(4.5 * np.sqrt(255 / 256)) and row["mean_rule"] == "z"
    assert row["verdict"] == "PASS"
    [row] = compare_modes(*_ensembles(0.5 + 0.14 * u, 0.5 + 0.1 * u))
    assert row["mean_rule"] == "z" and row["spread_band"] == pytest.approx([0.75, 1.33])
    assert row["std_ratio"] == pytest.approx(1.4) and row["verdict"] == "FAIL"


def test_compare_modes_reads_a_float32_runs_rounding_in_float32_ulp():
    """A float32 run (info "dtype") whose mean is 4 float32 ulp off the SDE's: within 8 ulp of
    its dtype, rounding, so z = 0 (in float64 ulp it read a difference)."""
    from validation.deep_linear import compare_modes

    u = np.tile([-1.0, 1.0], 8)
    run, sde = _ensembles(1.0 + 1e-3 * u, 1.0 + 4 * np.finfo(np.float32).eps + 1e-3 * u)
    run.info = {"dtype": "float32"}
    [row] = compare_modes(run, sde)
    assert row["z"] == 0.0 and row["verdict"] == "PASS"


# ----------------------------------------------------------------- grokking.grokking_times
def test_a_leave_one_out_loss_of_exactly_zero_is_a_loss_and_its_crossing_has_an_error():
    """Two identical replicas whose losses reach exactly 0 at their crossings: every leave-one-out
    curve is the curve itself, in its range (only a loss below 0 is none), so the times' and the
    gap's jackknife errors are 0, not unknown (NaN)."""
    from validation.grokking import grokking_times

    t = np.array([0.0, 1.0, 2.0])
    train, test = np.array([1.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0])
    g = grokking_times(t, train, test, 0.5, replicas={"train_loss": np.stack([train, train]),
                                                      "test_loss": np.stack([test, test])})
    assert (float(g.t_train), float(g.t_test), float(g.gap)) == (0.5, 1.5, 1.0)
    assert float(g.t_train_se) == 0.0 and float(g.t_test_se) == 0.0 and float(g.gap_se) == 0.0


def test_the_gaps_jackknife_error_is_unknown_where_the_train_time_is_the_first_save():
    """A train loss below the threshold from the first save (t_train = t[0], a bound, not a
    crossing) and a test loss whose replicas cross at different times: the gap's error is NaN,
    as the train time's, not the spread of the test time alone."""
    from validation.grokking import grokking_times

    t = np.array([0.0, 1.0, 2.0])
    train = np.array([0.1, 0.05, 0.01])
    reps = np.array([[1.0, 1.0, 0.1], [1.0, 1.0, 0.3]])
    g = grokking_times(t, train, reps.mean(axis=0), 0.5,
                       replicas={"train_loss": np.stack([train, train]), "test_loss": reps})
    assert float(g.t_train) == 0.0 and np.isnan(g.t_train_se)
    assert np.isfinite(g.gap) and np.isfinite(g.t_test_se) and g.t_test_se > 0 and np.isnan(g.gap_se)


# ----------------------------------------------------------------- grokking.drop_time
def test_a_drop_behind_a_non_finite_save_is_not_observed():
    """A test loss 1, 1, NaN, 0.5, 0.01: its crossing of sqrt(1 x 0.01) = 0.1 from the plateau runs
    into the NaN save, so no drop is read (not a crossing interpolated past it)."""
    from validation.grokking import drop_time

    td, observed = drop_time(np.arange(1.0, 6.0), np.array([1.0, 1.0, np.nan, 0.5, 0.01]))
    assert np.isnan(td) and not observed
