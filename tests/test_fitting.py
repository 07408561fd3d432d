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
from scipy import stats

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
