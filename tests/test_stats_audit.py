"""An audit of the statistics the verdicts rest on, against their docstrings' claims, on
synthetic data where the null holds exactly.

- `z_bound` / `q_bound` refuse arguments that read as a bound passing every value (inf: dof or
  k <= 0, sigma < 0) or failing every one (0: tests < 1) instead of returning it.
- `node_extrapolation` gives no finite error where one of the two errors it needs is unknown.
- The agreement z (`validation.compare._loss_stats`) against `z_bound`: a t statistic of n - 1
  dof, so its false-alarm rate is the nominal two-sided normal tail beyond sigma.
"""

import numpy as np
import pytest
from scipy import stats

from dmft.errors import InputError
from validation.compare import _loss_stats
from validation.fitting import node_extrapolation
from validation.verdicts import q_bound, z_bound


@pytest.mark.parametrize("args", [(3.0, 0.0), (3.0, -1.0), (-1.0, 3.0), (3.0, 5.0, 0), (3.0, 5.0, 2.0)])
def test_z_bound_refuses_what_reads_as_pass_all_or_fail_all(args):
    """dof 0 or -1 and sigma -1 read inf (every |z| passed), tests 0 read 0 (every |z| failed)."""
    with pytest.raises(InputError):
        z_bound(*args)


@pytest.mark.parametrize("args", [(3.0, 0.0, 5.0), (3.0, 2.0, 0.0), (-1.0, 2.0, 5.0), (3.0, 2.0, 5.0, 0)])
def test_q_bound_refuses_what_reads_as_pass_all_or_fail_all(args):
    """k 0, dof 0 and sigma -1 read inf (every q passed), tests 0 read 0."""
    with pytest.raises(InputError):
        q_bound(*args)


def test_bounds_keep_nan_inf_and_integer_types():
    """NaN stays NaN (no error to judge by), inf dof is the normal or chi-square law, numpy integers
    count as integers."""
    assert np.isnan(z_bound(3.0, np.nan)) and np.isnan(q_bound(3.0, 2.0, np.nan)) and np.isnan(q_bound(3.0, np.nan, 4))
    assert z_bound(3.0, np.inf) == 3.0 and z_bound(3.0, np.float64(4.0), np.int64(5)) == z_bound(3.0, 4, 5)
    assert q_bound(3.0, 2.0, np.inf, np.int64(3)) == q_bound(3.0, 2.0, np.inf, 3)


def test_node_extrapolation_error_is_unknown_where_one_solve_error_is():
    """full_se known and half_se unknown (NaN) read extrapolated_se = |curvature| / 3 alone (7e-17
    here, the three on a 1 / M law): the known error dropped with the unknown one. Now NaN; both
    unknown keep the documented curvature term alone; an inf error stays inf."""
    nan = float("nan")
    out = node_extrapolation([1.0], [1.1], [1.3], [0.05], [nan], [0.01])
    assert np.isnan(out["extrapolated_se"][0]) and np.isnan(out["shift_se"][0])
    out = node_extrapolation([1.0], [1.1], [1.3], [nan], [0.05], [0.01])
    assert np.isnan(out["extrapolated_se"][0])
    both = node_extrapolation([1.0, 2.0], [1.1, 2.0], [1.3, 2.5])
    assert np.allclose(both["extrapolated_se"], np.abs(both["curvature"]) / 3, rtol=0, atol=1e-15)
    known = node_extrapolation([1.0], [1.1], [1.4], [0.05], [0.01], [0.01])
    assert known["extrapolated_se"][0] == pytest.approx(np.sqrt(4 * 0.05 ** 2 + 0.01 ** 2 + (0.1 / 3) ** 2), rel=1e-12)
    assert np.isinf(node_extrapolation([1.0], [1.1], [1.3], [np.inf], [0.01], [0.01])["extrapolated_se"][0])


@pytest.mark.parametrize("seeds", [2, 3, 8])
def test_agreement_z_false_alarm_rate_is_the_nominal_tail(seeds):
    """Exact theory, normal seeds: P(|z| > z_bound(2, seeds - 1)) = P(|N| > 2) = 0.0455. Over
    N = 100000 draws its binomial sd is 0.00066; the window +-0.004 is 6 sd (measured over keys
    0-4, 2-8 seeds: |rate - 0.0455| <= 0.0015). A normal bound (2.0) read 0.30 with 2 seeds, 0.19 with 3."""
    N = 100_000
    per = np.random.default_rng(seeds).standard_normal((seeds, N))
    z = _loss_stats(np.zeros(N), per, None)["z"]
    rate = float(np.mean(np.abs(z) > z_bound(2.0, seeds - 1)))
    assert abs(rate - 2 * stats.norm.sf(2.0)) < 0.004, rate
