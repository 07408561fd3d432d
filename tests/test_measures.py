"""Neuron measures and grokking-time helpers against independent answers: the sampled forward
solver's planted alignment against the Kumar model's exact closure, and the small helpers on
planted inputs."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dmft
from dmft.errors import InputError
from validation import grokking as gk


def test_sampled_planted_alignment_equals_the_closure():
    """direction_alignment averaged over the forward solver's nodes, through alignment_ratio,
    against planted_alignment of the exact Gaussian closure (quadratic activation, Kumar task),
    at every save. Measured: within 1e-5 relative (one key's spread ~1e-4 at 8192 nodes); the
    tolerance 1e-3 is ~10 of those spreads at 4096 nodes; t = 0 is exactly 1 (the sampler's
    second moment is exact)."""
    data = dmft.tasks.kumar_quadratic(D=8, P=40, P_test=50, key=0)
    model = dmft.TwoLayer(dmft.activations.quadratic(0.02), gamma0=0.5, readout="fixed")
    beta = np.asarray(data.meta["beta"])
    sch = dmft.Schedule(1.0, 1000, 100)
    exact = gk.planted_alignment(dmft.solve(model, data, sch, kernels=False, method="closure").state, beta)
    fw = dmft.solve(model, data, sch, kernels=False, method="forward", samples=4096, replicas=4,
                    key=jax.random.key(3), neuron_measures=gk.direction_alignment(beta))
    got = gk.alignment_ratio(fw.measures)
    assert exact[-1] > 2.5                                 # the weights did align: a real comparison
    np.testing.assert_allclose(got[0], 1.0, rtol=1e-12)
    np.testing.assert_allclose(got, exact, rtol=1e-3)


def test_direction_overlap_is_the_second_moment_along_u():
    rng = np.random.default_rng(0)
    W, W0 = rng.normal(size=(500, 6)) + [2.0, 0, 0, 0, 0, 0], rng.normal(size=(500, 6))
    u = rng.normal(size=6)
    got = np.mean([np.asarray(gk.direction_overlap(u)(w, w0))[0] for w, w0 in zip(W, W0)])
    S = W.T @ W / len(W)
    np.testing.assert_allclose(got, u @ S @ u / (u @ u), rtol=1e-12)
    both = np.mean([np.asarray(gk.direction_alignment(u)(w, w0)) for w, w0 in zip(W, W0)], axis=0)
    np.testing.assert_allclose(gk.alignment_ratio(both), (u @ S @ u / (u @ u)) / (np.trace(S) / 6), rtol=1e-12)


def test_steepest_change_time_finds_the_inflection_in_log_time():
    """y = tanh(log(t / t0)) changes fastest in log time at t0: found to the save grid's spacing."""
    t = np.geomspace(1e-2, 1e4, 2001)
    for t0 in (0.3, 20.0, 700.0):
        y = np.stack([np.tanh(np.log(t / t0)), 2 * np.tanh(np.log(t / t0)) + 1])   # (curves, T)
        got = gk.steepest_change_time(t, y, smooth=1)
        np.testing.assert_allclose(got, t0, rtol=np.log(t[1] / t[0]))
    assert np.isnan(gk.steepest_change_time(t, np.ones_like(t)))          # a flat curve: no time


def test_fit_power_law_decay_recovers_a_planted_power_and_skips_the_missing():
    kappa = np.geomspace(1e-3, 1e-1, 7)
    t = 3.0 * kappa ** -1.3
    t[2] = np.nan                                           # a point that never grokked
    fit = gk.fit_power_law_decay(kappa, t)
    np.testing.assert_allclose(fit.slope, -1.3, rtol=1e-12)


@pytest.mark.parametrize("n", [2, 3, 6])
def test_the_exponents_error_from_the_times_errors_is_their_spread(n):
    """power_law_exponent_se against 4000 draws of times with known relative errors (2-8%, one
    point never grokked): the fitted exponents' spread is the reported error (within 5%), and
    two points, which leave the fit no residual error, get one."""
    kappa = np.geomspace(1e-3, 1e-1, n + 1)
    rel = np.linspace(0.02, 0.08, n + 1)
    t = 3.0 * kappa ** -1.3
    t[1] = np.nan
    rng = np.random.default_rng(n)
    draws = t * (1 + rel * rng.normal(size=(4000, n + 1)))
    slopes = [gk.fit_power_law_decay(kappa, d).slope for d in draws]
    se = gk.power_law_exponent_se(kappa, t, rel * t)
    assert np.std(slopes) == pytest.approx(se, rel=0.05)
    assert np.isnan(gk.power_law_exponent_se(kappa, t, np.where(np.arange(n + 1) == 0, np.nan, rel * t)))
    with pytest.raises(InputError, match="t_se must have one value per point"):
        gk.power_law_exponent_se(kappa, t, rel[:-1])
    with pytest.raises(InputError, match="t_se: standard errors must be >= 0"):
        gk.power_law_exponent_se(kappa, t, -rel * t)


@settings(max_examples=25, deadline=None)
@given(P=st.integers(1, 6), seed=st.integers(0, 2 ** 16))
def test_kernel_alignment_closed_forms(P, seed):
    """A(K, y) = y^T K y / (|K|_F |y|^2): 1 for K = y y^T, invariant to K's scale, 0 for a zero
    kernel or target, NaN (never a silent 0) for a kernel holding NaN."""
    from dmft.kernels import alignment
    rng = np.random.default_rng(seed)
    y = rng.normal(size=P)
    A = rng.normal(size=(P, P))
    K = A @ A.T
    np.testing.assert_allclose(alignment(np.outer(y, y), y), 1.0, rtol=1e-12)
    np.testing.assert_allclose(alignment(3.0 * K, y), alignment(K, y), rtol=1e-12)
    np.testing.assert_allclose(alignment(K, y), y @ K @ y / (np.linalg.norm(K) * y @ y), rtol=1e-12)
    assert float(alignment(np.zeros((P, P)), y)) == 0.0 and float(alignment(K, 0 * y)) == 0.0
    K[0, 0] = np.nan
    assert np.isnan(alignment(K, y))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5), zeros=st.integers(0, 2), log_time=st.booleans(), smooth=st.integers(0, 4),
       seed=st.integers(0, 2 ** 16))
def test_steepest_change_time_of_short_curves_is_a_time_nan_or_one_clear_error(n, zeros, log_time, smooth, seed):
    """Curves of one to five saves, some at t = 0: a time within the saves, NaN for a flat curve, or
    an InputError naming t when fewer than two saves are left to difference (one save at t > 0
    raised numpy's 'argmax of an empty sequence')."""
    zeros = min(zeros, n)
    t = np.concatenate([np.zeros(zeros), np.cumsum(np.random.default_rng(seed).uniform(0.5, 2, n - zeros))])
    t = np.unique(t)
    y = np.random.default_rng(seed + 1).normal(size=t.size)
    usable = np.count_nonzero(t > 0) if log_time else t.size
    if usable < 2:
        with pytest.raises(dmft.InputError, match="^t: a change needs at least two saves|^t must have at least two times"):
            gk.steepest_change_time(t, y, log_time=log_time, smooth=smooth)
        return
    got = gk.steepest_change_time(t, y, log_time=log_time, smooth=smooth)
    assert np.isnan(got) or t[0] <= got <= t[-1]
