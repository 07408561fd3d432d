"""Error bars of the validation fits against planted laws with known noise: coverage.

`LogLogFit.stderr` ("standard error of the slope", reported as "slope +- stderr") and the
se_A, se_B of `fit_inverse_decay` are one ordinary-least-squares standard error each, with the
residual variance estimated on n - 2 degrees of freedom. Under Gaussian noise the estimate
minus the truth, over that standard error, is Student t with n - 2 dof, so the nominal 95%
interval is estimate +- t_{0.975, n-2} * se (t_{0.975, 3} = 3.18 for five points), not
+- 1.96 * se (which covers only P(|t_3| < 1.96) = 0.855).

Coverage over K = 2000 independent planted fits: the binomial sd of the covered fraction is
sqrt(0.95 * 0.05 / 2000) = 0.0049, so the window (0.92, 0.98) is about +-6 sd around 0.95;
the normal quantile's 0.855 (sd 0.0079) is held below 0.90 (5.7 sd), so the test tells the
two quantiles apart.
"""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from dmft.errors import InputError
from validation import loglog_fit
from validation.grokking import fit_inverse_decay

K = 2000


def _cover(est, se, truth, dof):
    z = np.abs(np.asarray(est) - truth) / np.asarray(se)
    return np.mean(z < stats.t.ppf(0.975, dof)), np.mean(z < stats.norm.ppf(0.975))


@pytest.mark.parametrize("n", [5, 8])
def test_loglog_slope_stderr_covers_the_planted_slope(n):
    """y = 3 x^-1 exp(0.1 e), e ~ N(0, 1), at n widths 16 .. 16 * 2^(n-1): the t(n - 2)
    interval on the slope covers -1 in 95% of fits, and stderr^2 averages the slopes' variance."""
    rng = np.random.default_rng(n)
    x = 16.0 * 2.0 ** np.arange(n)
    slopes, ses = [], []
    for _ in range(K):
        fit = loglog_fit(x, 3.0 / x * np.exp(0.1 * rng.normal(size=n)))
        slopes.append(fit.slope)
        ses.append(fit.stderr)
    cover_t, cover_n = _cover(slopes, ses, -1.0, n - 2)
    assert 0.92 < cover_t < 0.98, cover_t
    if n == 5:
        assert cover_n < 0.90, cover_n           # the normal quantile is too short at 3 dof
    # E[stderr^2] is the slope's variance: the ratio's sd over 2000 fits is ~0.04 (5 sd window)
    ratio = np.var(slopes, ddof=1) / np.mean(np.square(ses))
    assert 0.8 < ratio < 1.2, ratio


def test_inverse_decay_standard_errors_cover_the_planted_law():
    """t = 0.93 / kappa + 360 + 50 e at six kappa, one of them never reaching the threshold
    (NaN, dropped): five points, three dof, for both A and B."""
    rng = np.random.default_rng(7)
    kappa = np.array([1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3])
    A, B, sigma = 0.93, 360.0, 50.0
    fits = []
    for _ in range(K):
        t = A / kappa + B + sigma * rng.normal(size=kappa.size)
        t[-1] = np.nan
        fits.append(fit_inverse_decay(kappa, t))
    a, b, se_a, se_b = np.array(fits).T
    for name, est, se, truth in (("A", a, se_a, A), ("B", b, se_b, B)):
        cover_t, cover_n = _cover(est, se, truth, 3)
        assert 0.92 < cover_t < 0.98, (name, cover_t)
        assert cover_n < 0.90, (name, cover_n)
        ratio = np.var(est, ddof=1) / np.mean(np.square(se))
        assert 0.8 < ratio < 1.2, (name, ratio)


@settings(max_examples=60, deadline=None)
@given(x=st.lists(st.sampled_from([1e-4, 2e-4, 64.0, 128.0]), min_size=0, max_size=6),
       noise=st.lists(st.floats(-1.0, 1.0), min_size=6, max_size=6), nan_at=st.integers(-1, 5))
@example(x=[64.0, 64.0], noise=[0.0, 0.5] + [0.0] * 4, nan_at=-1)     # all x equal: had a slope 0.079
@example(x=[1e-4, 1e-4, 1e-4], noise=[0.0, 0.1, 0.2] + [0.0] * 3, nan_at=-1)    # singular X^T X
def test_fits_of_repeated_abscissae_are_the_least_squares_line_or_refused(x, noise, nan_at):
    """Any points, repeats included: each fit returns the least-squares line (numpy's polyfit,
    finite) when its points pin one down (two distinct x; three points for the inverse law),
    else one InputError; a NaN grokking time is a point dropped, never a NaN fit."""
    from validation.grokking import fit_power_law_decay

    x = np.asarray(x, float)
    y = 3.0 / x * np.exp(np.asarray(noise[:x.size]))
    t = y.copy()
    if 0 <= nan_at < x.size:
        t[nan_at] = np.nan
    ok = np.isfinite(t)
    for fit, xs, n_min, ref in (
            (lambda: loglog_fit(x, y), x, 2, lambda: np.polyfit(np.log(x), np.log(y), 1)[0]),
            (lambda: fit_power_law_decay(x, t), x[ok], 2,
             lambda: np.polyfit(np.log(x[ok]), np.log(t[ok]), 1)[0]),
            (lambda: fit_inverse_decay(x, t)[0], x[ok], 3, lambda: np.polyfit(1 / x[ok], t[ok], 1)[0])):
        if xs.size < n_min or np.unique(xs).size < 2:
            with pytest.raises(InputError):
                fit()
            continue
        got = fit()
        slope = got.slope if hasattr(got, "slope") else got
        assert np.isfinite(slope) and slope == pytest.approx(ref(), rel=1e-6, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(x=st.lists(st.floats(1.0, 1e6), min_size=2, max_size=6), rel=st.floats(0.0, 1e-10),
       as_bool=st.sampled_from(["x", "y", None]))
def test_fits_refuse_booleans_and_abscissae_within_rounding(x, rel, as_bool):
    """Booleans were read as 1 and 0 (and refused as "not positive"); abscissae 1e-15 apart fitted a
    slope of 5.5e14. Both are refused by name; abscissae spread beyond 1e-9 in log are fitted."""
    base = np.full(len(x), x[0]) * (1 + rel * np.arange(len(x)))
    y = np.arange(1.0, len(x) + 1)
    if as_bool:
        args = {"x": (base > 0, y), "y": (base, y > 0)}[as_bool]
        with pytest.raises(InputError, match=f"^{as_bool}: booleans"):
            loglog_fit(*args)
        return
    if np.ptp(np.log(base)) < 1e-9:
        with pytest.raises(InputError, match="x spread beyond rounding|two distinct x"):
            loglog_fit(base, y)
    else:
        assert np.isfinite(loglog_fit(base, y).slope)


def test_the_slope_interval_shown_is_the_t_interval():
    """The slope's 95% interval (`half_width`, shown in verdicts and reports) is t(n - 2) x stderr:
    one standard error, shown before, covered 49% of slopes fitted through 3 points."""
    rng = np.random.default_rng(3)
    x = np.array([64.0, 256.0, 1024.0])
    hits, ses = [], []
    for _ in range(K):
        fit = loglog_fit(x, x ** -0.5 * np.exp(0.05 * rng.normal(size=3)))
        hits.append(abs(fit.slope + 0.5) <= fit.half_width())
        ses.append(abs(fit.slope + 0.5) <= fit.stderr)
    assert 0.93 <= np.mean(hits) <= 0.97 and np.mean(ses) < 0.6, (np.mean(hits), np.mean(ses))
    assert "(95%, t with 1 dof)" in fit.describe()


@settings(max_examples=60, deadline=None)
@given(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.integers(8, 2 ** 16),
       *[st.one_of(st.just(0.0), st.floats(1e-6, 10))] * 3)
def test_node_extrapolation_of_a_planted_law(v_inf, a, b, M, se_f, se_h, se_q):
    """x(M) = v_inf + a / M + b / M^2 at M, M / 2 and M / 4: the shift is -a / M - 3 b / M^2, the
    curvature -6 b / M^2 (0 on a 1 / M law), the extrapolation 2 x(M) - x(M / 2) = v_inf - 2 b / M^2,
    off by exactly curvature / 3; its error holds the independent solves' (4 se_f^2 + se_h^2) and
    that bias in quadrature."""
    from validation.fitting import node_extrapolation
    x = lambda m: np.array([v_inf + a / m + b / m ** 2])                 # noqa: E731
    out = node_extrapolation(x(M), x(M / 2), x(M / 4), [se_f], [se_h], [se_q])
    tol = 1e-12 * (abs(v_inf) + abs(a) + abs(b) + 1)
    np.testing.assert_allclose(out["shift"], -a / M - 3 * b / M ** 2, rtol=0, atol=tol)
    np.testing.assert_allclose(out["curvature"], -6 * b / M ** 2, rtol=0, atol=tol)
    np.testing.assert_allclose(out["extrapolated"] - out["curvature"] / 3, v_inf, rtol=0, atol=tol)
    np.testing.assert_allclose(out["shift_se"], np.sqrt(se_f ** 2 + se_h ** 2), rtol=1e-12)
    np.testing.assert_allclose(out["curvature_se"], np.sqrt(4 * se_f ** 2 + 9 * se_h ** 2 + se_q ** 2), rtol=1e-12)
    np.testing.assert_allclose(out["extrapolated_se"] ** 2, 4 * se_f ** 2 + se_h ** 2 + (out["curvature"] / 3) ** 2,
                               rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("b", [0.0, 30.0])
def test_node_extrapolation_errors_cover_over_independent_draws(b):
    """Estimates drawn at M, M / 2, M / 4 with their own (known) errors around a planted law a / M
    (+ b / M^2): the extrapolation's 95% normal interval covers v_inf in at least 95% of K draws
    (conservative: the curvature's noise is counted as bias), and the plain value at M, 3 of its
    errors off, far less often."""
    from validation.fitting import node_extrapolation
    rng = np.random.default_rng(5)
    v_inf, a, M, s = 2.0, 3.0, 100, 0.01                            # bias at M: a / M = 0.03 = 3 s
    draw = lambda m, sd: v_inf + a / m + b / m ** 2 + sd * rng.standard_normal(K)    # noqa: E731
    sds = [s, s * np.sqrt(2), 2 * s]                                # (the node noise grows as 1 / sqrt(M))
    full, half, quarter = (draw(M / k, sd) for k, sd in zip((1, 2, 4), sds))
    x = node_extrapolation(full, half, quarter, *[np.full(K, sd) for sd in sds])
    covered = np.mean(np.abs(x["extrapolated"] - v_inf) < 1.96 * x["extrapolated_se"])
    assert 0.95 < covered < 0.999, covered
    assert np.mean(np.abs(full - v_inf) < 1.96 * s) < 0.2
    # the error bar grows with the curvature it holds, not past sqrt(4 + 2 + 26 / 9) of s on a 1 / M law
    assert np.sqrt(np.mean(x["extrapolated_se"] ** 2)) < (3.2 * s if b == 0 else np.inf)


def test_node_extrapolation_refuses_mismatched_or_negative_errors():
    from validation.fitting import node_extrapolation
    with pytest.raises(InputError, match="one shape"):
        node_extrapolation([1.0, 2.0], [1.0], [1.0])
    with pytest.raises(InputError, match="full_se: standard errors are >= 0"):
        node_extrapolation([1.0], [2.0], [3.0], [-0.1], [0.1], [0.1])
    with pytest.raises(InputError, match="half_se: shape"):
        node_extrapolation([1.0], [2.0], [3.0], [0.1], [0.1, 0.2])
    # a time not reached stays unknown (NaN), never a number; without errors, the curvature's alone
    x = node_extrapolation([np.nan, 1.0], [2.0, 2.0], [3.0, 4.0])
    assert np.isnan(x["extrapolated"][0]) and x["extrapolated"][1] == 0.0 and np.all(np.isnan(x["shift_se"]))
    assert x["curvature"][1] == 0.0 and x["extrapolated_se"][1] == 0.0
