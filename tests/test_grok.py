"""Grokking: metrics on curves with known answers, the Kumar decomposition, neuron measures
in theory and networks, the testbed generators and the `dmft grok` job."""

import json
import os
import re

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dmft
import networks
from dmft.errors import ConfigError, InputError
from validation import grokking as gk
from experiments.cli import main
from platform_checks import assert_same_run


def test_grokking_times_recover_a_planted_gap():
    t = np.linspace(0, 20, 201)
    train = np.exp(-t)                                   # crosses 0.01 at ln(100)
    test = np.where(t < 10, 1.0, np.exp(-(t - 10)))      # crosses 0.01 at 10 + ln(100)
    g = gk.grokking_times(t, train, test, 0.01)
    assert abs(g.t_train - np.log(100)) < 0.02 and abs(g.t_test - 10 - np.log(100)) < 0.02
    assert abs(g.gap - 10) < 0.03 and g.status() == "ok"
    # batched over a grid of planted delays, and the gap is never negative
    delays = np.array([[0.0, 2.0], [5.0, 8.0]])
    tests = np.where(t < delays[..., None], 1.0, np.exp(-(t - delays[..., None])))
    gb = gk.grokking_times(t, np.broadcast_to(train, tests.shape), tests, 0.01)
    np.testing.assert_allclose(gb.gap, delays, atol=0.03)
    early = gk.grokking_times(t, np.exp(-t / 2), np.exp(-t), 0.01)
    assert early.gap == 0.0


def test_thresholds_never_reached_are_reported_not_crashed():
    t = np.linspace(0, 5, 51)
    g = gk.grokking_times(t, np.exp(-t), np.full_like(t, 0.5), 0.01)
    assert bool(g.reached_train) and not bool(g.reached_test) and np.isnan(g.gap)
    assert g.status() == "test not reached" and "not reached (final 0.5)" in g.describe()
    assert g.as_dict()["status"] == "test not reached"
    # not reached is never a number: JSON null, not NaN or "nan"
    d = g.as_dict()
    assert d["t_test"] is None and d["gap"] is None and d["t_train"] == pytest.approx(float(g.t_train))
    assert "nan" not in json.dumps(dmft.io.jsonable(d)).lower()
    # a diverged run (NaN tail) counts as not reached
    g = gk.grokking_times(t, np.full_like(t, np.nan), np.full_like(t, np.nan), 0.1)
    assert g.status() == "neither reached"
    # accuracy rises above its threshold
    acc = gk.grokking_times(t, np.minimum(1, t / 2), np.minimum(1, t / 4), 0.9, accuracy=True)
    assert abs(acc.t_train - 1.8) < 1e-9 and abs(acc.t_test - 3.6) < 1e-9
    with pytest.raises(InputError, match="t must be finite and strictly increasing"):
        gk.grokking_times(t[::-1], t, t, 0.1)
    with pytest.raises(InputError, match=r"train_loss: last axis \(50\) must match t \(51\)"):
        gk.grokking_times(t, t[:-1], t, 0.1)


@given(curve=st.lists(st.one_of(st.floats(0.0, 2.0), st.sampled_from([np.nan, np.inf])), min_size=2, max_size=8),
       threshold=st.floats(0.05, 1.5))
def test_crossing_times_are_finite_where_reached(curve, threshold):
    """A crossing after a NaN or inf save is reported at that save's time, not NaN beside
    reached = True (the rule: a time is never a silent NaN); where both saves are finite the
    time is interpolated between them."""
    t = np.arange(len(curve), dtype=float)
    y = np.asarray(curve)
    time, reached = gk.crossing_time(t, y, threshold)
    hit = np.where(np.isnan(y), False, y <= threshold)
    assert bool(reached) == bool(hit.any())
    if not reached:
        assert np.isnan(time)
        return
    k = int(np.argmax(hit))
    assert np.isfinite(time) and (t[k - 1] if k else t[0]) <= time <= t[k]
    if k > 0 and not np.isfinite(y[k - 1]):
        assert time == t[k]
    g = gk.grokking_times(t, y, y, threshold)
    assert g.status() == "ok" and g.as_dict()["t_test"] == pytest.approx(float(time))


def test_crossing_time_errors_are_the_curve_errors_over_the_slope():
    """The delta method on closed forms: a line y = 1 - b t whose error is c at every save
    crosses 1/2 at 1 / (2b) with standard error c / b (falling, and rising for an accuracy);
    errors that differ at the two saves are interpolated to the crossing; and over many noisy
    copies of a curve, with errors that move whole curves together (as a solve's replicas do),
    the crossings' spread is the reported error (small noise: the first-order regime)."""
    t = np.linspace(0, 4, 9)
    for b, c in ((0.2, 0.01), (0.5, 0.003)):
        g = gk.grokking_times(t, 1 - b * t, 1 - b * t, 0.5, test_se=np.full_like(t, c))
        assert g.t_test == pytest.approx(0.5 / b) and g.t_test_se == pytest.approx(c / b)
        assert np.isnan(g.t_train_se) and f"t_test = {0.5 / b:.4g} +- {c / b:.2g}" in g.describe()
        d = g.as_dict()
        assert d["t_train_se"] is None and d["t_test_se"] == pytest.approx(c / b)
        up = gk.crossing_time_se(t, b * t, np.full_like(t, c), 0.5, below=False)
        assert up == pytest.approx(c / b)
    se = np.linspace(0.01, 0.05, 9)                     # 1 - 0.2 t crosses 0.5 at 2.5: between 2 and 2.5
    assert gk.crossing_time_se(t, 1 - 0.2 * t, se, 0.5) == pytest.approx(np.interp(2.5, t, se) / 0.2)
    # many curves L(t) + e_k s(t): their crossings of exp(-1.3), inside the save interval
    # [1.2, 1.4], spread as the formula says (a crossing at a save would mix two slopes)
    tt = np.linspace(0, 5, 26)
    curve, s = np.exp(-tt), 0.002 * (1 + tt)
    e = np.random.default_rng(0).normal(size=(4000, 1))
    times, reached = gk.crossing_time(tt, curve + e * s, np.exp(-1.3))
    assert reached.all()
    se_t = gk.crossing_time_se(tt, curve, s, np.exp(-1.3))
    assert np.std(times) == pytest.approx(se_t, rel=0.05)
    # where the time is not interpolated its error is NaN: not reached, at the first save, after a NaN
    y = np.array([1.0, 0.8, np.nan, 0.1, 0.05])
    x = np.arange(5.0)
    assert np.isnan(gk.crossing_time_se(x, y, np.full(5, 0.01), 0.2))       # after the NaN save
    assert np.isnan(gk.crossing_time_se(x, y, np.full(5, 0.01), 0.01))      # never reached
    assert np.isnan(gk.crossing_time_se(x, y, np.full(5, 0.01), 2.0))       # at t[0]
    assert gk.crossing_time_se(x, y, np.full(5, 0.01), 0.9) == pytest.approx(0.01 / 0.2)
    with pytest.raises(InputError, match="y_se: standard errors must be >= 0"):
        gk.crossing_time_se(x, y, np.full(5, -0.01), 0.9)
    with pytest.raises(InputError, match="test_se: shape"):
        gk.grokking_times(x, np.stack([y, y]), np.stack([y, y]), 0.9, test_se=np.ones((3, 2, 5)))


@given(n=st.integers(2, 8), lead=st.sampled_from([(), (3,), (2, 2)]), seed=st.integers(0, 2 ** 16),
       threshold=st.floats(0.05, 1.5))
def test_crossing_time_errors_follow_their_times(n, lead, seed, threshold):
    """On generated curves (NaN and inf saves among them): the error is finite exactly where
    the time is interpolated from two finite saves, scales linearly with the curve's errors and
    has the times' shape."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 2, lead + (n,))
    y[rng.uniform(size=y.shape) < 0.15] = np.nan
    y[rng.uniform(size=y.shape) < 0.05] = np.inf
    t = np.cumsum(rng.uniform(0.1, 2, n))
    se = rng.uniform(0, 0.1, y.shape)
    time, reached = gk.crossing_time(t, y, threshold)
    got = gk.crossing_time_se(t, y, se, threshold)
    assert got.shape == time.shape
    hit = np.where(np.isnan(y), False, y <= threshold)
    k = np.argmax(hit, axis=-1)
    prev = np.take_along_axis(y, np.maximum(k - 1, 0)[..., None], -1)[..., 0]
    here = np.take_along_axis(y, k[..., None], -1)[..., 0]
    interp = reached & (k > 0) & np.isfinite(prev) & (prev != here)
    np.testing.assert_array_equal(np.isfinite(got), interp)
    np.testing.assert_allclose(gk.crossing_time_se(t, y, 3 * se, threshold)[interp], 3 * got[interp])


def test_crossing_time_errors_cover_a_reference_solve():
    """A DMFT solve's crossing times with the errors its loss errors give them, over 100
    independent keys (tanh, gamma0 = 1, 1024 nodes in 4 replicas; t intervals with 3 degrees of
    freedom) against a 2^16-node solve's crossing (its own error 1/8 of a key's): thresholds the
    train and test losses cross in the first and in a later save interval. Measured: coverage
    0.96-0.97, normal quantiles 0.85-0.87; reported variance 1.11-1.15x the spread's; the keys'
    mean time 0.3-0.4 of their spread later than the reference's (whose own error is 0.125 of
    it, and the mean's 0.1; subtracting the outputs' variance from each loss, the bias of a
    squared mean, moved it by 0.01-0.1 only)."""
    from scipy import stats
    data = dmft.tasks.single_index(D=2, P=16, P_test=24, degree=1, key=jax.random.key(3))
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    sch = dmft.Schedule(eta0=0.5, steps=20, save_every=4)
    ref = dmft.solve(model, data, sch, samples=2 ** 16, replicas=4, key=jax.random.key(99), kernels=False)
    K = 100
    res = dmft.solve_batch(model, data, {"gamma0": [1.0] * K}, schedule=sch, samples=1024, replicas=4,
                           key=jax.random.key(7), batch_size=K)
    q = stats.t.ppf(0.975, 3)
    for name in ("train", "test"):
        L = getattr(ref, f"{name}_loss")
        for frac in (0.35, 0.8):
            thr = L[0] + frac * (L[-1] - L[0])
            truth, _ = gk.crossing_time(ref.t, L, thr)
            g = gk.grokking_times(res["t"][0], res["train_loss"], res["test_loss"], thr,
                                  train_se=res["error.train_loss"], test_se=res["error.test_loss"])
            est, se = getattr(g, f"t_{name}"), getattr(g, f"t_{name}_se")
            assert np.all(np.isfinite(est)) and np.all(np.isfinite(se)), (name, frac)
            z = np.abs(est - truth) / se
            cover_t, cover_n = np.mean(z < q), np.mean(z < 1.96)
            assert 0.89 < cover_t <= 0.99 and cover_n < cover_t - 0.03, (name, frac, cover_t, cover_n)
            # (ddof 0 in the replicas' spread would read 0.83-0.86 here, R - 1 under the root 1.48-1.53)
            assert 0.9 < np.mean(se ** 2) / np.var(est) < 1.4, (name, frac)

@settings(max_examples=40, deadline=None)
@given(R=st.integers(2, 7), T=st.integers(2, 6), j=st.integers(0, 5), seed=st.integers(0, 2 ** 16),
       offset=st.floats(-3, 3), scale=st.floats(1e-3, 1e3))
def test_jackknife_of_one_value_is_the_replicas_standard_error(R, T, j, seed, offset, scale):
    """The jackknife's error of a curve's value at one save is the replicas' standard error
    there, std(ddof=1) / sqrt(R), whatever the curve itself (a pooled estimate need not be the
    replicas' mean): the leave-one-out curves move by the others' mean less all of theirs."""
    j = j % T
    rng = np.random.default_rng(seed)
    reps = scale * rng.normal(size=(3, R, T))
    curve = offset + rng.normal(size=(3, T))
    got = gk.jackknife_se(lambda c: c["a"][..., j], {"a": curve}, {"a": reps})
    np.testing.assert_allclose(got, np.std(reps[..., j], axis=1, ddof=1) / np.sqrt(R), rtol=1e-10)
    two = gk.jackknife_se(lambda c: {"x": c["a"][..., j], "y": 2 * c["a"][..., 0]}, {"a": curve}, {"a": reps})
    np.testing.assert_allclose(two["x"], got, rtol=1e-12)
    np.testing.assert_allclose(two["y"], 2 * np.std(reps[..., 0], axis=1, ddof=1) / np.sqrt(R), rtol=1e-10)


def test_jackknife_counts_the_covariance_of_two_curves():
    """A product of two curves whose replicas are correlated: the jackknife's error is the delta
    method's with their covariance, b^2 var(a) + a^2 var(b) + 2 a b cov(a, b) of the means (to
    second order in the noise), where leaving the covariance out is 22% off."""
    rng = np.random.default_rng(1)
    R, T = 6, 3
    z = rng.normal(size=(2, R, T))
    a = 2.0 + 1e-5 * z[0]
    b = 3.0 + 1e-5 * (0.9 * z[0] + 0.4 * z[1])
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    got = gk.jackknife_se(lambda c: c["a"][..., 1] * c["b"][..., 2], {"a": ca, "b": cb}, {"a": a, "b": b})
    cov = np.cov(a[:, 1], b[:, 2]) / R
    delta = np.sqrt(cb[2] ** 2 * cov[0, 0] + ca[1] ** 2 * cov[1, 1] + 2 * ca[1] * cb[2] * cov[0, 1])
    alone = np.sqrt(cb[2] ** 2 * cov[0, 0] + ca[1] ** 2 * cov[1, 1])
    assert got == pytest.approx(delta, rel=1e-4) and abs(alone / delta - 1) > 0.15


@pytest.mark.parametrize("case", ["missing", "extra", "one replica", "other R", "no replica axis", "other T",
                                  "other leading", "text", "not callable"])
@settings(max_examples=8, deadline=None)
@given(R=st.integers(2, 5), T=st.integers(2, 5))
def test_jackknife_refuses_bad_replicas_before_any_compute(case, R, T):
    calls = []

    def fn(c):
        calls.append(1)
        return c["a"][..., 0]
    curves = {"a": np.ones((2, T)), "b": np.ones((2, T))}
    reps = {"a": np.ones((2, R, T)), "b": np.ones((2, R, T))}
    if case == "missing":
        del reps["b"]
    elif case == "extra":
        reps["c"] = np.ones((2, R, T))
    elif case == "one replica":
        reps = {k: v[:, :1] for k, v in reps.items()}
    elif case == "other R":
        reps["b"] = np.ones((2, R + 1, T))
    elif case == "no replica axis":
        reps["b"] = np.ones((2, T))
    elif case == "other T":
        reps["b"] = np.ones((2, R, T + 1))
    elif case == "other leading":
        reps["b"] = np.ones((3, R, T))
    elif case == "text":
        reps["b"] = np.full((2, R, T), "x")
    elif case == "not callable":
        fn = 3
    with pytest.raises(InputError, match="^fn" if case == "not callable" else "^replicas"):
        gk.jackknife_se(fn, curves, reps)
    assert not calls
    if case == "not callable":
        return
    named = {("test_loss" if k == "a" else "train_loss" if k == "b" else k): v for k, v in reps.items()}
    with pytest.raises(InputError, match="^replicas"):
        gk.early_warning(np.arange(1.0, T + 1), curves["a"], {"b": curves["b"]},
                         replicas={("b" if k == "train_loss" else k): v for k, v in named.items()})
    seen = []
    real = gk._crossing
    try:
        gk._crossing = lambda *a, **k: seen.append(1) or real(*a, **k)
        with pytest.raises(InputError, match="^replicas"):
            gk.grokking_times(np.arange(1.0, T + 1), curves["b"], curves["a"], 0.5, replicas=named)
    finally:
        gk._crossing = real
    assert not seen                       # refused before either crossing is computed


def test_a_lead_error_is_nan_where_the_lead_is_and_zero_without_spread():
    """early_warning with replicas: the errors sit beside the times; a lead the saves do not
    resolve has no error (NaN, as the lead); replicas without spread give 0 (to rounding); a replica with a
    non-finite value anywhere (a diverged seed, early or late) leaves every error unknown (NaN)."""
    t = np.geomspace(1, 1e4, 60)
    test = 1 / (1 + (t / 1000) ** 4)
    m = 1 / (1 + (t / 100) ** 2)
    same = {"test_loss": np.stack([test] * 3), "m": np.stack([m] * 3)}
    ew = gk.early_warning(t, test, {"m": m}, replicas=same)
    assert max(ew["t_drop_se"], ew["m"]["t_change_se"], ew["m"]["lead_se"]) < 1e-9     # (rounding of t ~ 1e3)
    assert gk.early_warning(t, test, {"m": m})["m"].keys() == {"t_change", "lead", "leads", "resolved", "saves_between"}
    rng = np.random.default_rng(0)
    noisy = {k: v * (1 + 0.01 * rng.normal(size=v.shape)) for k, v in same.items()}
    ew = gk.early_warning(t, test, {"m": m}, replicas=noisy)
    assert 0 < ew["t_drop_se"] < 50 and 0 < ew["m"]["lead_se"] < 50 and np.isfinite(ew["m"]["lead"])
    coarse = np.array([1.0, 1e4])            # both crossings inside the one save interval
    ew = gk.early_warning(coarse, test[[0, -1]], {"m": m[[0, -1]]},
                          replicas={k: v[:, [0, -1]] for k, v in noisy.items()})
    assert not ew["m"]["resolved"] and np.isnan(ew["m"]["lead"]) and np.isnan(ew["m"]["lead_se"])
    assert np.isfinite(ew["m"]["t_change_se"])
    noisy["m"][1, 5] = np.nan
    ew = gk.early_warning(t, test, {"m": m}, replicas=noisy)
    assert np.isnan(ew["m"]["lead_se"]) and np.isnan(ew["m"]["t_change_se"]) and np.isnan(ew["t_drop_se"])
    # a late-diverged member's NaN tail (after the drop) too: its leave-one-out curves lost that tail,
    # and the drop read off the rest gave a finite error 4x too small
    noisy["m"][1, 5] = m[5]
    noisy["test_loss"][2, -10:] = np.nan
    ew = gk.early_warning(t, test, {"m": m}, replicas=noisy)
    assert np.isfinite(ew["t_drop"]) and np.isnan(ew["t_drop_se"]) and np.isnan(ew["m"]["lead_se"])


def test_grokking_times_with_replicas_give_the_gap_an_error():
    """grokking_times(replicas=): the gap's error by the jackknife (NaN where the gap is, or a
    time is not interpolated), the times' the same as the delta method's at small noise where
    their own errors are not given, and the given ones kept where they are."""
    rng = np.random.default_rng(3)
    t = np.linspace(0, 10, 41)
    R = 5
    noise = 1e-4 * rng.normal(size=(2, R, 1))                  # each replica's curve shifted
    train = np.exp(-t)[None] + noise[0]
    test = np.where(t < 4, 1.0, np.exp(-(t - 4)))[None] * (1 + noise[1])
    reps = {"train_loss": train, "test_loss": test}
    c_tr, c_te = train.mean(0), test.mean(0)
    g = gk.grokking_times(t, c_tr, c_te, 0.1, replicas=reps)
    se = {k: np.std(v, axis=0, ddof=1) / np.sqrt(R) for k, v in reps.items()}
    d = gk.grokking_times(t, c_tr, c_te, 0.1, train_se=se["train_loss"], test_se=se["test_loss"])
    assert g.t_train_se == pytest.approx(d.t_train_se, rel=1e-3) and g.t_test_se == pytest.approx(d.t_test_se, rel=1e-3)
    # independent shifts: the gap's variance is the two times' sum
    assert g.gap_se == pytest.approx(gk.jackknife_se(
        lambda c: gk.crossing_time(t, c["test_loss"], 0.1)[0] - gk.crossing_time(t, c["train_loss"], 0.1)[0],
        {"train_loss": c_tr, "test_loss": c_te}, reps), rel=1e-12)
    assert "gap = " in g.describe() and " +- " in g.describe().split("gap = ")[1]
    kept = gk.grokking_times(t, c_tr, c_te, 0.1, train_se=3 * se["train_loss"], replicas=reps)
    assert kept.t_train_se == pytest.approx(3 * d.t_train_se) and kept.t_test_se == g.t_test_se
    # test first: the gap is 0, its error that of t_test - t_train (clipped, it read "gap = 0 +- 0")
    first = gk.grokking_times(t, c_te, c_tr, 0.1, replicas={"train_loss": test, "test_loss": train})
    assert first.gap == 0 and first.gap_se == pytest.approx(g.gap_se, rel=1e-6) and first.gap_se > 0
    assert np.isnan(gk.grokking_times(t, c_tr, c_te, 1e-9, replicas=reps).gap_se)            # not reached
    first_save = gk.grokking_times(t, c_tr, c_te, 2.0, replicas=reps)                       # at the first save
    assert np.isnan(first_save.gap_se) and np.isnan(first_save.t_train_se) and np.isnan(first_save.t_test_se)
    assert np.isnan(gk.grokking_times(t, c_tr, c_te, 0.1).gap_se)
    with pytest.raises(InputError, match="replicas"):
        gk.grokking_times(t, c_tr, c_te, 0.1, replicas={"test_loss": test})

def test_lead_and_gap_errors_cover_a_reference_solve():
    """The early-warning times and leads, and the grokking gaps, of a sampled DMFT with their
    jackknife errors over its replicas, over 100 independent keys (tanh, gamma0 = 1, D = 4,
    1024 nodes in 4 replicas; t intervals with 3 degrees of freedom), against a 2^16-node
    solve's: the test loss's drop time, the alignment's and the first-layer weight change's
    change times and their leads, and the gap at three thresholds the test loss crosses after
    the train loss. Measured: coverage 0.94-0.98 (normal quantiles 0.82-0.88); reported variance
    0.83-1.15x the spread's. The gap's two times move together: their separate errors would
    say 1.1-2.9x its variance. (On a D = 2 problem the leads' coverage was 0.94-0.95.)"""
    from scipy import stats
    data = dmft.tasks.single_index(D=4, P=32, P_test=24, degree=1, key=jax.random.key(3))
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    sch = dmft.Schedule(eta0=0.5, steps=40, save_every=1)

    def values(sol, levels):
        rep = {k: v.T for k, v in sol.replicas.items() if k != "measures"}
        ew = gk.early_warning(sol.t, sol.test_loss, {"alignment": sol.alignment,
                                                     "weight_change": sol.weight_change["first_layer"]},
                              replicas={"test_loss": rep["test_loss"], "alignment": rep["alignment"],
                                        "weight_change": rep["weight_change.first_layer"]})
        out = [(ew["t_drop"], ew["t_drop_se"])] + [(ew[k][q], ew[k][f"{q}_se"]) for k in ("alignment", "weight_change")
                                                     for q in ("t_change", "lead")]
        for level in levels:
            g = gk.grokking_times(sol.t, sol.train_loss, sol.test_loss, level,
                                  replicas={"train_loss": rep["train_loss"], "test_loss": rep["test_loss"]})
            out.append((g.gap, g.gap_se, np.hypot(g.t_train_se, g.t_test_se)))
        return [o + (np.nan,) * (3 - len(o)) for o in out]
    ref_sol = dmft.solve(model, data, sch, samples=2 ** 16, replicas=4, key=jax.random.key(99), kernels=False)
    L = ref_sol.test_loss
    levels = [L[0] + f * (L.min() - L[0]) for f in (0.5, 0.8, 0.95)]
    ref = values(ref_sol, levels)
    assert all(r[0] > 1 for r in ref[-3:])                       # the test loss crosses later
    runs = np.array([values(dmft.solve(model, data, sch, samples=1024, replicas=4, key=jax.random.key(1000 + i),
                                       kernels=False), levels) for i in range(100)], float)   # (keys, quantity, 3)
    q = stats.t.ppf(0.975, 3)
    ratios = []
    for j, (truth, *_) in enumerate(ref):
        est, se = runs[:, j, 0], runs[:, j, 1]
        assert np.all(np.isfinite(est)) and np.all(np.isfinite(se)) and np.all(se > 0), j
        z = np.abs(est - truth) / se
        cover_t, cover_n = np.mean(z < q), np.mean(z < 1.96)
        assert 0.89 < cover_t <= 0.99 and cover_n < cover_t - 0.03, (j, cover_t, cover_n)
        ratios.append(np.mean(se ** 2) / np.var(est))
    # each within 0.6-1.6; together near 1 (leave-one-out curves moved by 1/R instead of
    # 1/(R - 1) would read 0.57, the jackknife's (R - 1) / R taken as 1 / R 0.33)
    assert all(0.6 < r < 1.6 for r in ratios) and 0.8 < np.mean(ratios) < 1.3, ratios
    apart = [np.mean(runs[:, j, 2] ** 2) / np.var(runs[:, j, 0]) for j in range(len(ref) - 3, len(ref))]
    assert max(apart) > 2, apart


@given(bad=st.lists(st.integers(0, 4), min_size=0, max_size=5, unique=True),
       value=st.sampled_from([np.nan, np.inf, -np.inf]), C=st.sampled_from([1, 3]))
def test_accuracy_of_a_diverged_output_is_nan(bad, value, C):
    """A point whose outputs are not all finite has no class: the accuracy is NaN (it was the
    share of class 0 for a NaN argmax, 0 for a NaN sign), so a seed mean that drops NaN drops
    the diverged seed, as the losses' does."""
    rng = np.random.default_rng(len(bad))
    y = np.eye(3)[rng.integers(0, 3, 5)] if C == 3 else np.sign(rng.normal(size=5))
    f = rng.normal(size=(5, 3)) if C == 3 else rng.normal(size=5)
    clean = gk.accuracy(f[None], y)[0]
    f = f.copy()
    for i in bad:
        if C == 3:
            f[i, i % 3] = value
        else:
            f[i] = value
    got = gk.accuracy(np.stack([f, np.nan_to_num(f)]), y)
    if bad:
        assert np.isnan(got[0]) and np.isfinite(got[1])
    else:
        assert got[0] == got[1] == clean


def test_early_warning_finds_a_measure_that_moves_first():
    t = np.geomspace(1, 1e4, 400)
    test = 1 / (1 + (t / 1000) ** 4)                     # drops near t = 1000
    measure = 1 / (1 + (t / 100) ** 2)                   # changes near t = 100
    ew = gk.early_warning(t, test, {"m": measure})
    # plateau 1, floor capped at 1e-2: the drop is the crossing of 0.1, at t = 1000 x 9^(1/4)
    assert ew["t_drop"] == pytest.approx(1000 * 9 ** 0.25, rel=1e-3) and 60 < ew["m"]["t_change"] < 160 and ew["m"]["leads"]


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0.5, 200.0), b=st.floats(0.5, 200.0),
       times=st.lists(st.floats(0.05, 1000.0), min_size=1, max_size=12, unique=True))
def test_a_lead_is_a_number_only_where_the_saves_order_it(a, b, times):
    """A measure that changes at ~a and a loss that drops at ~b, saved at arbitrary times: the
    lead is a number exactly when the two crossings fall in different save intervals (a save
    between them orders them), and then its sign is the sign of the lead of the continuous
    curves at the same levels; within one interval it is NaN, not a number the interpolation
    made (from 3 saves, every crossing shared the last interval and 'led')."""
    t = np.unique(np.concatenate([[0.0], times, [2000.0]]))
    m = 1 / (1 + (t / a) ** 2)
    loss = 1 / (1 + (t / b) ** 4)
    ew = gk.early_warning(t, loss, {"m": m})
    tc = a * np.sqrt(2 / (m[0] + m[-1]) - 1)                      # the half-way level, exactly
    td = b * (1 / np.sqrt(max(loss[-1], 1e-2)) - 1) ** 0.25       # sqrt(plateau x floor), exactly
    v = ew["m"]
    apart = np.searchsorted(t, tc) != np.searchsorted(t, td)
    assert ew["observed"] and bool(v["resolved"]) == apart
    if apart:
        assert np.sign(float(v["lead"])) == np.sign(td - tc) and bool(v["leads"]) == (td > tc)
        assert int(v["saves_between"]) >= 1
    else:
        assert np.isnan(v["lead"]) and not v["leads"] and int(v["saves_between"]) == 0
    # three saves, 0, 1 and the end: the lead is unresolved however far apart the curves move
    t3 = np.array([0.0, 1.0, 2000.0])
    ew3 = gk.early_warning(t3, 1 / (1 + (t3 / 1000) ** 4), {"m": 1 / (1 + (t3 / 10) ** 2)})
    assert np.isnan(ew3["m"]["lead"]) and not ew3["m"]["resolved"] and np.isfinite(ew3["m"]["t_change"])


def test_kumar_decomposition_sums_to_the_test_loss():
    """The three terms are the exact population loss: equal to the loss on a large Gaussian
    test set within its sampling error at every time, and exactly E[y^2] = 3/4 at t = 0."""
    data = dmft.tasks.kumar_quadratic(D=5, P=20, P_test=40000, key=3)
    eps, g = 0.5, 1.0
    model = dmft.TwoLayer(dmft.activations.quadratic(eps), gamma0=g, readout="fixed")
    sol = dmft.solve(model, data, eta0=0.5, steps=400, save_every=100)
    assert sol.info["basis"] == "weights"
    dec = gk.kumar_decomposition(sol.state, data.meta["beta"], g, eps)
    assert dec["total"][0] == pytest.approx(0.75, abs=1e-12)
    assert dec["variance"][0] == pytest.approx(0.25, abs=1e-12)
    sq = (sol.f_test - data.y_test[None]) ** 2
    se = sq.std(axis=1) / np.sqrt(sq.shape[1])
    z = (sol.test_loss - dec["total"]) / se
    assert np.max(np.abs(z)) < 4, z
    assert dec["total"][-1] < 0.5 * dec["total"][0]          # it did learn
    # planted overlap starts at 1 and grows as the weights align with beta
    ov = gk.planted_overlap(sol.state, data.meta["beta"])
    assert ov[0] == pytest.approx(1.0) and ov[-1] > ov[0]


def test_neuron_measures_agree_between_theory_and_wide_networks():
    """Fourier IPR of modular addition: the single-site average equals the mean over the
    units of wide networks (same definition in both), within the seed spread."""
    p = 5
    data = dmft.tasks.modular_addition(p, 0.6, key=0)
    assert data.C == p and data.D == 2 * p
    model = dmft.TwoLayer(dmft.activations.square(), gamma0=1.0)
    kw = dict(eta0=0.5, steps=40, save_every=20)
    ipr = gk.fourier_ipr(p)
    sol = dmft.solve(model, data, samples=4096, replicas=2, kernels=False, neuron_measures=ipr, **kw)
    run = networks.train(model, data, width=2048, seeds=4, neuron_measures=ipr, **kw)
    assert sol.measures.shape == (3, 1) and run.measures.shape == (4, 3, 1)
    net = run.measures[..., 0]
    se = net.std(0, ddof=1) / 2 + 1e-4
    assert np.max(np.abs(net.mean(0) - sol.measures[:, 0]) / se) < 5
    # the IPR of a single Fourier mode is 1, of a flat spectrum 1 / (p - 1)
    k = np.arange(p)
    mode = np.concatenate([np.cos(2 * np.pi * k / p), np.zeros(p)])
    assert float(ipr(mode, mode)[0]) == pytest.approx(1.0)
    assert gk.accuracy(np.eye(p)[None], np.eye(p))[0] == 1.0
    assert gk.accuracy(np.array([[0.5, -1.0, 2.0]]), np.array([1.0, -1.0, -1.0]))[0] == pytest.approx(2 / 3)
    # one output given as a column (a C = 1 Dataset's shape) is a sign, not an argmax of one column
    f, y = np.array([[0.5, -1.0, 2.0]]), np.array([1.0, -1.0, -1.0])
    for ff, yy in ((f, y[:, None]), (f[..., None], y[:, None]), (f[..., None], y)):
        assert gk.accuracy(ff, yy)[0] == pytest.approx(2 / 3)
    assert gk.accuracy(-np.ones((1, 3, 1)), np.ones((3, 1)))[0] == 0.0
    with pytest.raises(InputError, match="shape"):
        gk.accuracy(np.zeros((2, 4)), y)


# (eager: each new n, P, P_test compiles its draws, ~0.3 s an example)
@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 11), P=st.sampled_from([1, 3, 40, 300]), P_test=st.sampled_from([0, 2, 50]),
       seed=st.integers(0, 3))
def test_sparse_parity_test_points_are_never_training_points(n, P, P_test, seed):
    """Test points are uniform on the cube outside the training set (independent draws shared
    63% of them at n = 10, P = P_test = 1000: a test accuracy of memory); refused when the
    training set covers the cube; the same key gives the same points."""
    try:
        d = dmft.tasks.sparse_parity(n, min(2, n), P, P_test, key=seed)
    except InputError as err:
        x = np.asarray(jax.random.bernoulli(jax.random.fold_in(jax.random.key(seed), 0), 0.5, (P, n)))
        assert "cover" in str(err) and len({r.tobytes() for r in x}) == 2 ** n and P_test > 0
        return
    assert d.x_train.shape == (P, n) and (d.P_test == P_test)
    if P_test:
        train = {r.tobytes() for r in d.x_train}
        assert not any(r.tobytes() in train for r in d.x_test)
        assert np.all(d.y_test == np.prod(d.x_test[:, d.meta["support"]], axis=1))
        again = dmft.tasks.sparse_parity(n, min(2, n), P, P_test, key=seed)
        np.testing.assert_array_equal(again.x_test, d.x_test)


def test_modular_addition_refuses_a_fraction_that_leaves_no_test_pair():
    for p, frac in ((2, 0.9), (3, 0.95)):
        with pytest.raises(InputError, match="no test pair"):
            dmft.tasks.modular_addition(p, frac)
    assert dmft.tasks.modular_addition(3, 1.0).P_test == 0 and dmft.tasks.modular_addition(3, 0.9).P_test == 1
    # the default grok setting keeps its data: no test point was a training point to redraw
    d = dmft.tasks.sparse_parity(20, 3, 500, 1000, key=0)
    bits = np.asarray(jax.random.bernoulli(jax.random.fold_in(jax.random.key(0), 1), 0.5, (1000, 20)))
    np.testing.assert_array_equal(d.x_test, np.where(bits, 1.0, -1.0))


def test_testbed_generators_and_bad_input():
    sp = dmft.tasks.sparse_parity(8, 3, 30, 10, key=1)
    x, s = sp.x_train, sp.meta["support"]
    assert set(np.unique(x)) == {-1.0, 1.0} and np.all(sp.y_train == np.prod(x[:, s], axis=1))
    with pytest.raises(InputError, match="k must be <= n"):
        dmft.tasks.sparse_parity(3, 4)
    with pytest.raises(InputError, match="p must be >= 2"):
        dmft.tasks.modular_addition(1)
    for frac in (0.0, 1.5, -0.1):
        with pytest.raises(InputError, match=r"train_fraction must be in \(0, 1\]"):
            dmft.tasks.modular_addition(5, frac)
    full = dmft.tasks.modular_addition(3, 1.0)
    assert full.P == 9 and full.x_test is None
    with pytest.raises(InputError, match="neuron_measures needs a sampled method"):
        dmft.solve(dmft.TwoLayer("linear", gamma0=1.0), full, steps=2, save_every=1,
                   neuron_measures=gk.max_change())


def _grok_args(tmp_path, *extra):
    return ["grok", "--out", str(tmp_path / "g"), "--no-progress",
            "--set", "kumar.D=6", "--set", "kumar.P=24", "--set", "kumar.P_test=100",
            "--set", "train.steps=400", "--set", "train.save_every=50", "--set", "train.eta0=1.0",
            "--gamma0", "1", "4", "--widths", "2", "16", "--seeds", "2",
            "--set", "diagram.gamma0=[1.0, 4.0]", "--set", "diagram.eps=[0.1, 0.5]",
            "--set", "diagram.P=[12, 24]", "--set", "diagram.weight_decay=[0.0, 0.001]",
            "--set", "diagram.overlay_width=8", "--set", "decay.weight_decay=[0.001, 0.002]",
            "--set", "kumar.eps=0.5", *extra]


def test_grok_cli_writes_every_file_and_refuses_bad_input(tmp_path, capsys):
    assert main(_grok_args(tmp_path)) == 0
    console = capsys.readouterr()
    assert "nan" not in (console.err + console.out).lower()       # "not reached", never a number
    out = tmp_path / "g"
    assert '"nan"' not in (out / "report.json").read_text()
    figs = {"curves", "measures", "decomposition", "width", "phase_eps", "phase_P",
            "phase_weight_decay", "decay"}
    assert {f[:-4] for f in os.listdir(out / "figures")} == figs
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["figures"]) == figs and all(   # relative to the directory (they were absolute)
        not os.path.isabs(p) and (out / p).is_file() for p in rep["figures"].values()), rep["figures"]
    assert {d["axis"] for d in rep["diagrams"]} == {"eps", "P", "weight_decay"}
    assert len(rep["summary"]) == 2 * (1 + 1 + 2)             # gamma0 x (DMFT, lazy, two widths)
    # the seed means' times carry standard errors from the seeds' spread; the closure's and the
    # lazy limit's are exact (null)
    md = (out / "report.md").read_text()
    with_se = 0
    for row in rep["summary"]:
        for q in ("t_train", "t_test"):
            if not row["source"].startswith("N=") or row[q] is None:
                assert row[f"{q}_se"] is None, row
            elif row[f"{q}_se"] is not None:
                with_se += 1
                assert row[f"{q}_se"] > 0 and f"{row[q]:.4g} +- {row[f'{q}_se']:.2g}" in md
    assert with_se > 0
    assert "## Phase diagram: gamma0 x eps" in (out / "report.md").read_text()
    arrays, meta = dmft.io.load(out / "curves")
    assert arrays["diagram/eps/gap"].shape == (2, 2)
    # saves every 50 time units: a lead is a number only where a save lies between t_change and
    # t_drop; within one save interval it is null with its reason, and the table says so
    t = arrays["t"]
    kinds, with_se = set(), 0
    for row in rep["summary"]:
        ew = row["early_warning"]
        for name, v in ew.items():
            if not isinstance(v, dict) or not ew["drop_observed"] or v["t_change"] is None:
                continue
            inside = int(np.sum((t >= min(v["t_change"], ew["t_drop"])) & (t <= max(v["t_change"], ew["t_drop"]))))
            assert v["saves_between"] == inside and v["resolved"] == (inside >= 1)
            if v["resolved"]:
                assert v["lead"] == pytest.approx(ew["t_drop"] - v["t_change"]) and v["leads"] == (v["lead"] > 0)
                if v.get("lead_se") is not None:        # a seed mean's, by the jackknife over its seeds
                    with_se += 1
                    assert f"| {v['lead']:.4g} +- {v['lead_se']:.2g} |" in md
            else:
                assert v["lead"] is None and v["leads"] is None and v["lead_note"].startswith("unresolved")
            kinds.add(v["resolved"])
    assert kinds == {True, False} and with_se > 0
    md = (out / "report.md").read_text()
    assert "unresolved (within one save interval)" in md
    # each planted measure in the table is said what it is (planted_diffusion: SGD at B whatever the run's batch)
    assert "planted_diffusion is the diffusion per unit time of the planted overlap beta^T S beta under SGD with early_warning." \
           f"batch_size = {rep['config']['early_warning']['batch_size']} points" in md.replace("\n", " ")
    grid = rep["early_warning_grid"]
    for v in grid["verdict"].values():          # an unresolved run is left out, and counted
        assert v["runs"] + v["unresolved"] == len(grid["runs"]) and v["unresolved"] > 0
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == "complete"
    # the parts kept while it ran (curves/) are gone: curves.npz holds them
    assert not (out / "curves").exists() and not any(f.startswith("curves/") for f in man["digests"])
    assert {"curves.npz", "curves.json", "report.json", "report.md"} <= set(man["digests"])
    assert main(_grok_args(tmp_path)) == 0                      # complete: nothing recomputed
    assert main(_grok_args(tmp_path, "--set", "kumar.eps=0.2")) == 3    # another run there
    capsys.readouterr()
    assert main(_grok_args(tmp_path, "--set", "diagram.axes=['width']")) == 2
    assert "diagram.axes" in capsys.readouterr().err
    assert main(["grok", "--testbed", "sparse_parity", "--set", "sparse_parity.k=25",
                 "--out", str(tmp_path / "p")]) == 2
    assert main(["grok", "--testbed", "modular_addition", "--set", "modular_addition.p=1",
                 "--out", str(tmp_path / "m")]) == 2
    assert main(["grok", "--set", "threshold.accuracy=1.5", "--out", str(tmp_path / "a")]) == 2
    assert not (tmp_path / "p").exists() and not (tmp_path / "m").exists()


def test_diagram_axes_default_follows_the_testbed(tmp_path):
    """Phase diagrams are Kumar's: another testbed, chosen by flag, --set or file, gets no axes
    by default; axes asked for explicitly there are refused, not dropped."""
    from experiments import grok
    from dmft.errors import ConfigError
    assert grok.load_config()["diagram"]["axes"] == ["eps", "P", "weight_decay"]
    for name in ("lyu", "sparse_parity", "modular_addition"):
        assert grok.load_config(None, [f"testbed.name='{name}'"])["diagram"]["axes"] == []
        toml = tmp_path / f"{name}.toml"
        toml.write_text(f'[testbed]\nname = "{name}"\n')
        assert grok.load_config(toml)["diagram"]["axes"] == []
        with pytest.raises(ConfigError, match="diagram.axes"):
            grok.load_config(toml, ["diagram.axes=['eps']"])
    assert grok.load_config(None, ["testbed.name='lyu'", "testbed.name='kumar'"])["diagram"]["axes"] \
        == ["eps", "P", "weight_decay"]


@given(activation=st.sampled_from(["square", "relu", "linear", "tanh", "softplus", "erf"]),
       gamma0=st.sampled_from([0.05, 0.5, 1.0, 2.0, None]), scan=st.booleans(),
       loss_fraction=st.sampled_from([0.1, 0.99, 1.0, 3.0]))
def test_lyu_settings_its_law_cannot_read_are_refused(activation, gamma0, scan, loss_fraction):
    """The lyu prediction kappa t_grok ~ ln(1/gamma0) / L needs a homogeneous activation (L from
    its degree: square 3, relu and linear 2; tanh was read as L = 2) and gamma0 < 1 (the default
    1.0 predicted A = 0); decay.gamma0 defaults to 0.05 there. A loss threshold at or above the
    initial loss (every run 'crossed' at t = 0) is refused for every testbed."""
    from experiments import grok
    from experiments.grok.config import LYU_DEGREE
    from dmft.errors import ConfigError
    sets = ["testbed.name='lyu'", f"lyu.activation='{activation}'", f"threshold.loss_fraction={loss_fraction}"]
    sets += [] if gamma0 is None else [f"decay.gamma0={gamma0}"]
    sets += [] if scan else ["decay.weight_decay=[0.0]"]
    g = 0.05 if gamma0 is None else gamma0
    # (decay.gamma0 set without a scan changes nothing: refused as well, unless it is a default: the
    # testbed's 0.05 or the schema's 1.0, which a run's config.toml written before the testbeds had
    # their own defaults holds)
    bad = {"lyu.activation": activation not in LYU_DEGREE,
           "decay.gamma0": (scan and g >= 1) or (not scan and g not in (0.05, 1.0)),
           "threshold.loss_fraction": loss_fraction >= 1}
    try:
        cfg = grok.load_config(None, sets)
    except ConfigError as err:
        assert any(bad.values()) and any(k in str(err) for k, v in bad.items() if v), err
        return
    assert not any(bad.values()) and cfg["decay"]["gamma0"] == g


@given(activation=st.sampled_from(["tanh", "Relu", "square"])
       | st.text(alphabet="abfilnqrsteuxz", min_size=1, max_size=8))
def test_an_unknown_sparse_parity_activation_is_named_with_its_section(activation):
    """sparse_parity.activation is refused before compute by its key (the library's error named
    only "activation"); the known names load."""
    from experiments import grok
    from dmft.errors import ConfigError
    sets = ["testbed.name='sparse_parity'", f"sparse_parity.activation='{activation}'"]
    known = activation.lower() in dmft.activations.names()
    try:
        cfg = grok.load_config(None, sets)
    except ConfigError as err:
        assert not known and "sparse_parity.activation" in str(err) and repr(activation) in str(err), err
        return
    assert known and cfg["sparse_parity"]["activation"] == activation


# ------------------------------------------------------------------ early warning, settled

def test_drop_and_change_times_do_not_move_with_the_save_grid():
    """One definition of the drop time (half way in log scale from plateau to floor) and of a measure's change
    time (half its change; half its integral for a rate), interpolated in log time: the DMFT of
    the Kumar model saved every step, every 50 steps, or on a 40-point log grid gives the same
    times within 2%."""
    data = dmft.tasks.kumar_quadratic(D=8, P=40, P_test=200, key=0)
    model = dmft.TwoLayer(dmft.activations.quadratic(0.02), gamma0=0.5, readout="fixed")   # drop near t = 860
    beta = np.asarray(data.meta["beta"])
    results = []
    for sch in (dmft.Schedule(1.0, 3000, 1), dmft.Schedule(1.0, 3000, 50),
                dmft.Schedule(1.0, 3000, save_at="log", n_saves=40)):
        sol = dmft.solve(model, data, sch, kernels=False)
        meas = {"alignment": sol.alignment, "planted_alignment": gk.planted_alignment(sol.state, beta),
                "planted_diffusion": gk.overlap_diffusion(sol.f_train, data.y_train, data.x_train, beta,
                                                          sol.state["mean"], sol.state["second_moment"],
                                                          gamma0=0.5, eps=0.02, eta0=1.0, batch_size=1)}
        ew = gk.early_warning(sol.t, sol.test_loss, meas, rates=("planted_diffusion",))
        assert ew["observed"]
        results.append([float(ew["t_drop"])] + [float(ew[k]["t_change"]) for k in meas])
    ref = np.asarray(results[0])
    for r in results[1:]:
        np.testing.assert_allclose(r, ref, rtol=0.02)
    assert np.isfinite(ref).all()


def test_drop_time_finds_the_grokking_drop_after_a_partial_fit():
    """A test loss that falls part way early (a lazy fit), rests on a plateau, then groks: the
    drop time lies in the grokking drop, whatever the run length once the loss decays on."""
    t = np.geomspace(0.1, 1e5, 400)
    early = 0.5 * np.exp(-t / 5.0)                        # 0.8 -> 0.3 by t ~ 20
    late = 1.0 / (1.0 + (t / 2000.0) ** 4)                # the grokking drop around t = 2000
    loss = (0.3 + early) * late + 1e-12
    td, ok = gk.drop_time(t, loss)
    assert ok and 1500 < td < 4000
    # a loss that keeps falling: the time does not move when the run is ten times longer
    short = t <= 1e4
    td_short, _ = gk.drop_time(t[short], loss[short])
    assert td_short == pytest.approx(td, rel=1e-6)
    with pytest.raises(InputError, match="max_decades must be > 0"):
        gk.drop_time(t, loss, max_decades=0.0)


def test_planted_diffusion_is_the_variance_of_one_sgd_step():
    """overlap_diffusion at a network's own mean and second moment equals Var over samples of
    the change of the planted overlap in one SGD step (B = 1) divided by eta, at small eta."""
    rng = np.random.default_rng(1)
    D, P, N, g, eps, eta = 6, 20, 400, 0.7, 0.5, 1e-7
    x = rng.normal(size=(P, D))
    beta = rng.normal(size=D)
    beta /= np.linalg.norm(beta)
    y = 0.5 * (x @ beta) ** 2
    w = rng.normal(size=(N, D)) + 0.3 * beta[None]
    xt = x / np.sqrt(D)
    h = w @ xt.T                                                         # (N, P)
    f = np.mean(h + eps / 2 * h ** 2, axis=0) / g                         # uncentered fixed readouts
    delta = y - f
    O = np.mean((w @ beta) ** 2)
    dO = []
    for mu in range(P):
        dw = eta * g * delta[mu] * (1 + eps * h[:, mu])[:, None] * xt[mu][None]
        dO.append(np.mean(((w + dw) @ beta) ** 2) - O)
    direct = np.var(dO) / eta
    formula = gk.overlap_diffusion(f[None], y, x, beta, w.mean(0)[None], (w.T @ w / N)[None],
                                   gamma0=g, eps=eps, eta0=eta, batch_size=1)[0]
    assert direct == pytest.approx(formula, rel=1e-5)


def test_wilson_interval_and_lead_fractions():
    lo, hi = gk.wilson_interval(18, 20)
    assert 0.69 < lo < 0.71 and 0.97 < hi < 0.98
    v = gk.lead_verdict({"a": [True] * 9 + [False], "b": []})
    assert v["a"]["fraction"] == 0.9 and v["a"]["runs"] == 10 and np.isnan(v["b"]["fraction"])
    # coverage of the interval over many binomial draws (nominal 95%)
    rng = np.random.default_rng(0)
    p, n = 0.3, 40
    hits = [lo <= p <= hi for lo, hi in (gk.wilson_interval(int(k), n) for k in rng.binomial(n, p, 2000))]
    assert 0.93 < np.mean(hits) < 0.97


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), data=st.data(), z=st.sampled_from([1.0, 1.96, 2.576, 3.3]))
def test_wilson_interval_contains_its_fraction_and_ends_at_the_bounds(n, data, z):
    """6 of 6 gave an upper bound of 1 - 1e-16 (0 of 11 a lower one above 0), so the measures
    figure's error bar hi - p was negative and the figure failed ('yerr' must not contain negative
    values): the interval holds p, and reaches 1 (0) exactly when every run (none) leads."""
    k = data.draw(st.sampled_from([0, n, data.draw(st.integers(0, n))]))
    lo, hi = gk.wilson_interval(k, n, z)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert (hi == 1.0) if k == n else True
    assert (lo == 0.0) if k == 0 else True


def test_inverse_decay_fit_recovers_a_planted_law():
    k = np.array([1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3])
    t = 0.93 / k + 360.0
    A, B, se_A, se_B = gk.fit_inverse_decay(k, t)
    assert A == pytest.approx(0.93) and B == pytest.approx(360.0)
    with pytest.raises(InputError, match="need at least three kappa"):
        gk.fit_inverse_decay(k[:2], t[:2])


def _not_reached_report():
    from experiments.grok.job import _early

    t = np.linspace(0, 5, 51)
    g = gk.grokking_times(t, np.exp(-t), np.full_like(t, 0.5), 0.01)
    row = {"gamma0": 1.0, "source": "DMFT", **g.as_dict(), "describe": g.describe(), "final_test_loss": 0.5,
           "early_warning": _early(t, {"test_loss": np.full_like(t, 0.5), "alignment": t})}
    k = np.array([1e-4, 4e-4])
    dt = gk.grokking_times(t, np.stack([np.exp(-t)] * 2), np.stack([np.full_like(t, 0.5)] * 2), 0.01)
    decay = {"testbed": "kumar", "gamma0": 1.0, "weight_decay": k, "threshold": 0.01, "times": dt.as_dict(),
             "fit_t_test": {"error": "not fitted: need at least two kappa with a finite grokking time, got 0"},
             "prediction": "x"}
    return {"testbed": "kumar", "data": {"P": 3}, "threshold": 0.01, "threshold_kind": "loss",
            "summary": [row], "diagrams": [{"axis": "eps", "gamma0": [1.0], "values": [0.1], "seconds": 0.0,
                                            "times": g.as_dict() | {"gap": [[None]]}, "overlay": []}],
            "early_warning_grid": None, "decay": decay, "figures": {}, "wall_s": 0.0}


def test_grok_report_says_not_reached_never_a_number():
    from experiments.grok.report import markdown

    rep = _not_reached_report()
    text = json.dumps(dmft.io.jsonable(rep))
    assert "nan" not in text.lower() and '"drop_observed": false' in text
    assert "drop_observed" not in rep["summary"][0]          # only early_warning's (a drop to warn of)
    md = markdown(rep, {"threshold": {"accuracy": 0.9}})
    assert "nan" not in md.lower() and "n/a" not in md
    assert "| 1 | DMFT | 1.8" not in md and "| not reached | not reached |" in md
    assert "not fitted: need at least two kappa" in md


def test_decay_plot_never_draws_not_reached_as_a_reached_time():
    from validation.plots_grokking import decay_plot

    t = np.geomspace(1, 1000, 60)
    k = np.array([1e-4, 2e-4, 4e-4, 8e-4])
    # the two largest kappa grok (at t = 100 and 300), the two smallest never do
    drops = np.array([np.inf, np.inf, 300.0, 100.0])
    test = np.where(t[None] < drops[:, None], 1.0, 1e-3)
    times = gk.grokking_times(t, np.full((4, t.size), 1e-3), test, 0.01)
    for curves in ({"t": np.broadcast_to(t, (4, t.size))}, {}):
        decay = {"testbed": "kumar", "gamma0": 1.0, "weight_decay": k, "times": times, "curves": curves,
                 "t_end": 1000.0, "fit_t_test": {"exponent": -1.6, "stderr": 0.1, "range": (2e-4, 8e-4),
                                                 "points": 2}}
        ax = decay_plot(decay).axes[0]
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        reached = lines["t_test (threshold reached)"]
        np.testing.assert_allclose(reached.get_xdata(), k[2:])
        assert np.all(np.asarray(reached.get_ydata()) > 50)          # 300 and 100: interpolated crossings
        nr = [ln for name, ln in lines.items() if name.startswith("not reached")]
        assert len(nr) == 1
        np.testing.assert_allclose(nr[0].get_xdata(), k[:2])
        np.testing.assert_allclose(nr[0].get_ydata(), 1000.0)       # at the end of the run: a lower bound
        assert nr[0].get_marker() == "^" and nr[0].get_markerfacecolor() == "none"   # open: distinct
        assert "1e+03" in nr[0].get_label() or "1000" in nr[0].get_label()
    # none reached: still at the end of the run, never at t = 1
    none = gk.grokking_times(t, np.full((4, t.size), 1e-3), np.ones((4, t.size)), 0.01)
    ax = decay_plot({"testbed": "kumar", "gamma0": 1.0, "weight_decay": k, "times": none,
                     "curves": {"t": t}}).axes[0]
    ys = np.concatenate([np.asarray(ln.get_ydata(), float) for ln in ax.get_lines()
                         if ln.get_label().startswith("not reached")])
    np.testing.assert_allclose(ys, 1000.0)
    # the fit's own standard error is labelled as one (the report gives a 95% half-width beside it)
    decay["fit_t_test"]["stderr"] = 0.5
    assert any("+- 0.50, 1 s.e." in ln.get_label() for ln in decay_plot(decay).axes[0].get_lines())
    # a fit through two points has no error (None in report.json): drawn, labelled without one
    decay["fit_t_test"]["stderr"] = None
    assert any("no error" in ln.get_label() for ln in decay_plot(decay).axes[0].get_lines())


def test_grok_classification_report_shows_final_accuracies_and_precision(tmp_path):
    """A classification testbed's report shows the final train / test accuracy beside the
    final test loss (the threshold is on accuracy), and the arithmetic the job ran in."""
    out = tmp_path / "sp"
    assert main(["grok", "--testbed", "sparse_parity", "--out", str(out), "--no-progress",
                 "--set", "sparse_parity.n=6", "--set", "sparse_parity.k=2", "--set", "sparse_parity.P=24",
                 "--set", "sparse_parity.P_test=32", "--set", "train.steps=40", "--set", "train.save_every=20",
                 "--set", "train.eta0=2.0", "--set", "theory.samples=64", "--set", "theory.replicas=2", "--gamma0", "1",
                 "--widths", "4", "--seeds", "2"]) == 0
    md = (out / "report.md").read_text()
    assert "final train / test accuracy" in md and "Arithmetic: float64" in md
    # how far an error reaches: 2 replicas, 2 seeds: 1 degree of freedom each, t factor 12.7
    assert ("Standard errors here: the DMFT's over its 2 replicas: 1 degree of freedom, a 95% interval +- 12.7 "
            "errors; the seed means' over 2 seeds: 1 degree of freedom, +- 12.7 errors.") in md
    rep = json.loads((out / "report.json").read_text())
    assert rep["threshold_kind"] == "accuracy"
    for row in rep["summary"]:
        assert 0.0 <= row["final_test_acc"] <= 1.0 and 0.0 <= row["final_train_acc"] <= 1.0
        assert f"{row['final_train_acc']:.4g} / {row['final_test_acc']:.4g}" in md


@pytest.mark.parametrize("setting", ["diagram.eps=[0.1, 0.1]", "diagram.P=[45, 45]", "diagram.weight_decay=[0.0, 0.0]",
                                     "decay.weight_decay=[1e-4, 1e-4]", 'diagram.axes=["eps", "eps"]'])
def test_grok_refuses_a_repeated_grid_value_before_anything_runs(setting):
    """A repeat in a diagram or decay list was computed twice and labelled alike (two equal
    columns; 'need at least two distinct kappa' only after computing): refused by its key."""
    from experiments.grok.config import load_config
    key = setting.split("=")[0]
    with pytest.raises(dmft.errors.ConfigError, match=re.escape(key)):
        load_config(None, [setting])


def test_grok_refuses_a_scan_store_as_its_output_even_forced(tmp_path, capsys):
    """`dmft grok --force` into a scan's store wrote its report, curves and figures beside the
    store's files: refused (exit 3, OutputConflict naming the directory), the store untouched
    by any result of the job; another directory is not refused."""
    from dmft.errors import OutputConflict
    from experiments.output import refuse_store
    from experiments.store import Store

    store = tmp_path / "store"
    Store.create_or_open(store, {"config": {"a": 1}}, {"grid": {}, "chunk_names": ["c0"]}).close()
    manifest = (store / "manifest.json").read_bytes()
    with pytest.raises(OutputConflict, match=re.escape(str(store)) + ".*scan's store"):
        refuse_store(store)
    refuse_store(tmp_path / "elsewhere")                 # (missing: a new results directory)
    code = main(["grok", "--out", str(store), "--force", "--no-progress", "--steps", "4",
                 "--set", "train.save_every=2", "--widths", "4", "--seeds", "2", "--gamma0", "1"])
    err = capsys.readouterr().err
    assert code == 3 and str(store) in err and "store" in err, err
    assert not {"report.md", "report.json", "curves.npz", "figures"} & set(os.listdir(store))
    assert (store / "manifest.json").read_bytes() == manifest


@pytest.mark.parametrize("testbed, setting, names", [
    ("kumar", "kumar.P=100000000", "kumar.P, kumar.P_test, kumar.D"),
    ("lyu", "lyu.P_test=100000000", "lyu.P, lyu.P_test, lyu.D"),
    ("sparse_parity", "sparse_parity.P=100000000", "sparse_parity.P, sparse_parity.P_test, sparse_parity.n"),
    ("kumar", "kumar.D=2000", "kumar.D"),                   # > P + P_test: no weights for the measures
    ("lyu", "lyu.D=2000", "lyu.D"),
    ("kumar", ("diagram.P=[45, 100000000]",), "diagram.P, kumar.P_test, kumar.D"),
])
def test_grok_data_refusals_name_the_testbeds_keys(testbed, setting, names):
    """A testbed's data too large for memory (or inputs wider than its points, which leave the
    DMFT without the first-layer weights its progress measures read) is refused before any
    compute naming the keys the user writes for that testbed, not the [task] it stands for
    ('task.P + P_test: ...')."""
    from experiments import grok
    sets = [f"testbed.name='{testbed}'", *((setting,) if isinstance(setting, str) else setting)]
    with pytest.raises(dmft.errors.ConfigError) as err:
        grok.build(grok.load_config(None, sets))
    assert str(err.value).startswith(names + ":") and "task." not in str(err.value), err.value


# (testbed, setting that changes nothing there); each is read by some other configuration
UNUSED = [("modular_addition", "kumar.D=40"), ("kumar", "lyu.activation='relu'"), ("lyu", "kumar.eps=0.1"),
          ("sparse_parity", "modular_addition.p=11"), ("kumar", "theory.samples=256"),
          ("kumar", "theory.max_memory_gb=8.0"), ("modular_addition", "diagram.eps=[0.1]"),
          ("lyu", "diagram.overlay_width=0"), ("kumar", ("diagram.axes=[]", "early_warning.grid='none'",
                                                          "diagram.gamma0=[1.0]")),
          ("kumar", ("diagram.axes=['eps']", "diagram.P=[10, 20]")),
          ("kumar", ("diagram.overlay_width=0", "diagram.overlay_seeds=3")),
          ("kumar", ("decay.weight_decay=[0.0]", "decay.steps=100")), ("sparse_parity", "decay.weight_decay=[1e-4]"),
          ("modular_addition", "early_warning.batch_size=4"), ("lyu", "early_warning.grid='P'"),
          ("kumar", "threshold.accuracy=0.8"), ("sparse_parity", "threshold.loss_fraction=0.2")]


@pytest.mark.parametrize("testbed, setting", UNUSED)
def test_grok_refuses_a_setting_that_changes_nothing(testbed, setting):
    """As `dmft scan`: a key the testbed and its switches do not read (another testbed's section,
    [theory] under kumar's exact closure, diagram values without their axis, a decay scan's
    settings without one, the other kind of threshold) is refused naming it, before anything
    runs; the same configuration without it loads."""
    from experiments import grok
    sets = [f"testbed.name='{testbed}'", *((setting,) if isinstance(setting, str) else setting)]
    with pytest.raises(dmft.errors.ConfigError, match="is not used by testbed.name") as err:
        grok.load_config(None, sets)
    assert str(err.value).startswith(sets[-1].split("=")[0] + ":"), err.value
    grok.load_config(None, sets[:-1])


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("testbed", ["kumar", "modular_addition", "sparse_parity", "lyu"])
def test_grok_configurations_it_writes_and_ships_reload(tmp_path, testbed, full):
    """What is not refused: the defaults, the --full preset, a run's own config.toml (it lists
    every key, the unused ones at their defaults), switches set to off on any testbed (no decay
    scan, no diagram, no early-warning verdict), and the shipped configurations."""
    from experiments import grok
    from experiments.config import to_toml
    if full and testbed != "kumar":                  # the preset is Kumar et al.'s sizes
        with pytest.raises(dmft.errors.ConfigError, match="^--full: .* testbed's; testbed"):
            grok.load_config(None, [f"testbed.name='{testbed}'"], full=True)
        return
    cfg = grok.load_config(None, [f"testbed.name='{testbed}'", "decay.weight_decay=[0.0]", "diagram.axes=[]",
                                  "early_warning.grid='none'"], full=full)
    stored = tmp_path / "config.toml"
    stored.write_text(to_toml(cfg))
    assert grok.load_config(stored, (), full=full) == cfg
    if testbed == "kumar":
        assert grok.load_config(stored, (), full=not full) == cfg
    assert grok.load_config(cfg) == cfg
    configs = os.path.join(os.path.dirname(__file__), "..", "scripts", "configs")
    shipped = {"kumar": "grok_kumar.toml", "modular_addition": "grok_modular.toml",
               "sparse_parity": "grok_parity.toml", "lyu": "grok_lyu.toml"}[testbed]
    assert grok.load_config(os.path.join(configs, shipped), (), full=full)["testbed"]["name"] == testbed


def test_each_testbed_alone_runs_its_shipped_file():
    """`dmft grok --testbed NAME` starts from its shipped file's settings (README): equal configs,
    but for the one setting grok_kumar.toml adds (200 log-spaced saves), which the README names."""
    from experiments import grok
    configs = os.path.join(os.path.dirname(__file__), "..", "scripts", "configs")
    for testbed, shipped in {"kumar": "grok_kumar.toml", "modular_addition": "grok_modular.toml",
                             "sparse_parity": "grok_parity.toml", "lyu": "grok_lyu.toml"}.items():
        extra = ["train.log_saves=200"] if testbed == "kumar" else []
        assert grok.load_config(None, [f"testbed.name='{testbed}'", *extra]) == \
            grok.load_config(os.path.join(configs, shipped), ()), testbed
    assert grok.load_config(None, ())["train"]["log_saves"] == 0


def test_the_full_preset_minibatch_diagram_ends_at_full_batch():
    """The gamma0 x minibatch diagram's default sizes end at the testbed's P, full-batch descent,
    under --full (P = 550) as without (165): --full had kept 165, so no column was full batch."""
    from experiments import grok
    sets = ["diagram.axes=['minibatch']", "early_warning.grid='minibatch'"]
    for full in (False, True):
        cfg = grok.load_config(None, sets, full=full)
        assert cfg["diagram"]["minibatch"][-1] == cfg["kumar"]["P"], (full, cfg["diagram"]["minibatch"])


def test_the_decay_scan_shows_progress_and_stops_within_seconds(monkeypatch):
    """With progress, the weight-decay scan's batch runs in calls of seconds (`solve_batch`'s
    interruptible follows progress), as the job's other solves do; without, in one call."""
    from experiments.grok import config as gconf, job as gjob

    seen = []
    real = gjob.dmft.solve_batch

    def spy(*args, **kwargs):
        seen.append(kwargs.get("progress", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(gjob.dmft, "solve_batch", spy)
    cfg = gconf.load_config(overrides=["kumar.D=4", "kumar.P=12", "kumar.P_test=20", "decay.steps=40",
                                       "train.save_every=10", "decay.weight_decay=[0.001, 0.002]"])
    tb = gconf.build(cfg)
    quiet = gjob.decay_scan(cfg, tb, log=lambda *_: None)
    shown = gjob.decay_scan(cfg, tb, log=lambda *_: None, progress=True)
    assert seen == [False, True]
    assert_same_run(shown["curves"]["test_loss"], quiet["curves"]["test_loss"])     # (bit for bit on a CPU)


@pytest.mark.parametrize("testbed, shipped", [("modular_addition", "grok_modular.toml"),
                                              ("sparse_parity", "grok_parity.toml"), ("lyu", "grok_lyu.toml")])
def test_a_testbed_chosen_alone_runs_its_shipped_settings(testbed, shipped):
    """`dmft grok --testbed NAME` starts from the testbed's own defaults, its shipped configuration
    (with the kumar testbed's eta0 = 2 and gamma0 0.5 / 1 / 3 the lyu DMFT overflowed at step 5-201
    and modular_addition's at step 186); a save grid the user writes replaces its log saves."""
    from experiments import grok
    configs = os.path.join(os.path.dirname(__file__), "..", "scripts", "configs")
    assert grok.load_config(None, [f"testbed.name='{testbed}'"]) == grok.load_config(os.path.join(configs, shipped))
    cfg = grok.load_config(None, [f"testbed.name='{testbed}'", "train.steps=40", "train.save_every=20"])
    assert cfg["train"]["log_saves"] == 0 and cfg["train"]["save_every"] == 20
    with pytest.raises(dmft.errors.ConfigError, match="^train.save_every: not used with train.log_saves = 7"):
        grok.load_config(None, [f"testbed.name='{testbed}'", "train.save_every=20", "train.log_saves=7"])



def test_the_lyu_decay_scan_says_when_its_dmft_is_heavy_tailed():
    """The weight-decay scan (the lyu testbed's main result) ran the forward method's batch and
    dropped its heavy-tail flag: at 128 nodes a replica the least effective share is 1/128 (one
    node); the scan's result, its log and report.md now say so."""
    from experiments.grok import config as gconf, job as gjob
    from experiments.grok.report import markdown

    cfg = gconf.load_config(None, ["testbed.name='lyu'", "theory.samples=256", "decay.steps=1200",
                                   "decay.weight_decay=[1.6e-3, 3.2e-3]"])
    logs = []
    out = gjob.decay_scan(cfg, gconf.build(cfg), log=logs.append)
    assert set(out["heavy_tailed"]) == {"0.0016", "0.0032"} and min(out["heavy_tailed"].values()) < 0.05
    assert any("heavy-tailed at kappa = 0.0016, 0.0032" in line for line in logs), logs
    rep = {"testbed": "lyu", "data": {}, "threshold": 0.1, "threshold_kind": "loss", "summary": [],
           "diagrams": [], "early_warning_grid": None, "figures": {}, "wall_s": 1.0, "decay": {k: (v.as_dict() if k == "times" else v)
                                                                  for k, v in out.items() if k != "curves"}}
    md = markdown(rep, cfg)
    assert "Heavy-tailed DMFT at kappa = 0.0016, 0.0032" in md
    # the sampled DMFT's times carry standard errors, from its losses' (crossing_time_se)
    times = out["times"]
    for name in ("t_train", "t_test"):
        t, se = getattr(times, name), getattr(times, f"{name}_se")
        assert np.array_equal(np.isfinite(se), np.isfinite(t)) and np.all(se[np.isfinite(se)] > 0), name
        for k in np.flatnonzero(np.isfinite(t)):
            assert f"{t[k]:.4g} +- {se[k]:.2g}" in md
    # and the gaps, by the jackknife over the batch's per-replica losses
    want = gk.grokking_times(out["curves"]["t"][0], out["curves"]["train_loss"], out["curves"]["test_loss"],
                             out["threshold"], replicas={n: np.swapaxes(out["curves"][f"replicas.{n}"], -1, -2)
                                                         for n in ("train_loss", "test_loss")})
    np.testing.assert_allclose(times.gap_se, want.gap_se, rtol=1e-12)
    for k in np.flatnonzero(np.isfinite(times.gap_se)):
        assert f"| {times.gap[k]:.4g} +- {times.gap_se[k]:.2g} |" in md
    # two points leave the exponent no residual error; the times' own errors give it one
    fit = out["fit_t_test"]
    assert fit["stderr"] is None and fit["stderr_times"] == pytest.approx(
        gk.power_law_exponent_se(out["weight_decay"], times.t_test, times.t_test_se))
    assert f"+- {fit['stderr_times']:.4g} (1 s.e.) from the times' own errors" in md


def test_lyu_settings_that_leave_the_decay_scan_off_grid_are_refused_at_load():
    """A save grid the decay scan's steps are not on failed after the theory and networks had
    run ('steps (12000) must be a multiple of save_every (320)'); a user's train.steps now also
    sets the decay scan's (so --steps 640 runs a 640-step scan, not the testbed's 12000)."""
    from experiments import grok
    from experiments.grok.config import schedule_of
    with pytest.raises(dmft.errors.ConfigError, match=r"^decay.steps \(12000\) must be a multiple of train.save_every"):
        grok.load_config(None, ["testbed.name='lyu'", "train.save_every=320"])
    cfg = grok.load_config(None, ["testbed.name='lyu'", "train.save_every=320", "train.steps=640"])
    assert cfg["decay"]["steps"] == 0 and schedule_of(cfg, steps=cfg["decay"]["steps"] or None).steps == 640
    # values the solvers refuse are refused at load naming the key (the decay scan's ran last)
    for sets, key in ((["train.steps=3000000000"], "train.steps"), (["decay.steps=3000000000"], "decay.steps"),
                      (["train.eta0=1e-320"], "train.eta0")):
        with pytest.raises(dmft.errors.ConfigError, match=f"^{key}: "):
            grok.load_config(None, ["testbed.name='lyu'", *sets])
    # a run's config.toml written before the testbeds had defaults of their own reloads
    old = grok.load_config(None, ["testbed.name='modular_addition'"])
    old["decay"] = {k: f.default for k, f in grok.SCHEMA["decay"].items()}   # (the kumar scan's, unused)
    assert grok.load_config(old) == old


def test_grok_takes_eta0_as_the_other_jobs_do(tmp_path, capsys):
    """`dmft grok --eta0` sets train.eta0 (solve, simulate and validate had the flag; grok needed
    --set): a bad value is refused naming the key, and the flag beside --set is refused, before
    anything runs."""
    out = str(tmp_path / "g")
    assert main(["grok", "--testbed", "lyu", "--out", out, "--no-progress", "--eta0", "-1"]) == 2
    assert "train.eta0" in capsys.readouterr().err
    assert main(["grok", "--out", out, "--no-progress", "--eta0", "0.5", "--set", "train.eta0=1.0"]) == 2
    assert "train.eta0: given both as a flag and with --set" in capsys.readouterr().err
    assert not os.path.exists(out)


def _small_grok(out, *extra):
    return ["grok", "--out", str(out), "--no-progress", "--set", "kumar.D=4", "--set", "kumar.P=12",
            "--set", "kumar.P_test=20", "--steps", "40", "--set", "train.save_every=10", "--gamma0", "1", "2",
            "--widths", "4", "--seeds", "2", "--set", "diagram.axes=[]", "--set", "early_warning.grid='none'",
            "--set", "decay.weight_decay=[0.0]", *extra]


@pytest.mark.parametrize("stop", ["diverges", "interrupted", "decay fails"])
def test_a_grok_run_that_stops_keeps_the_curves_it_finished(tmp_path, capsys, monkeypatch, stop):
    """Each gamma0's theory, lazy and network curves (and each phase diagram, its finite-width
    overlay, the early-warning verdict over its runs, the decay scan) are on disk as soon as they
    are done, in curves/ (arrays named as in curves.npz; the overlay's and the verdict's
    report.json entries in the part's JSON), listed in run.json and read back verified: a failure or
    Ctrl-C at the second gamma0, or in the decay scan after a diagram, kept nothing (curves.npz
    was written only after every part; the overlay and the verdict only in report.json)."""
    from dmft.errors import DivergenceError
    from experiments.grok import job as gjob

    real = gjob.dmft.solve

    def solve(model, *args, **kwargs):
        if stop != "decay fails" and float(model.gamma0) == 2.0 and kwargs.get("method") != "lazy":
            if stop == "interrupted":
                raise KeyboardInterrupt
            raise DivergenceError("closure: non-finite output at step 3 (made up by the test)", step=3)
        return real(model, *args, **kwargs)

    def decay_scan(*args, **kwargs):
        raise DivergenceError("closure: non-finite output at step 5 (made up by the test)", step=5)

    monkeypatch.setattr(gjob.dmft, "solve", solve)
    monkeypatch.setattr(gjob, "decay_scan", decay_scan)
    out = tmp_path / "g"
    more = (["--set", "diagram.axes=['eps']", "--set", "diagram.gamma0=[1.0, 2.0]", "--set", "diagram.eps=[0.1]",
             "--set", "diagram.overlay_width=4", "--set", "early_warning.grid='eps'",
             "--set", "decay.weight_decay=[0.001, 0.002]"]
            if stop == "decay fails" else [])
    code = main(_small_grok(out, *more))
    err = capsys.readouterr().err
    assert code == (130 if stop == "interrupted" else 4), err
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == ("interrupted" if stop == "interrupted" else "failed"), man
    done = (["gamma0_1", "gamma0_2", "diagram_eps", "overlay_eps", "early_warning_grid"] if stop == "decay fails"
            else ["gamma0_1"])
    assert [f for f in man["written"] if f.startswith("curves")] == sorted(
        f"curves/{p}{ext}" for p in done for ext in (".npz", ".json")), man["written"]
    arrays, meta = dmft.io.load(out / "curves" / "gamma0_1")
    assert meta["extra"]["part_of"] == "curves.npz" and meta["config"]["model"]["gamma0"] == [1.0, 2.0]
    assert arrays["t"].shape == (5,) and arrays["networks/gamma0=1/N=4/test_loss"].shape == (2, 5)
    for src in ("theory", "lazy"):
        assert np.all(np.isfinite(arrays[f"{src}/gamma0=1/test_loss"])), src
    assert not any("gamma0=2" in k for k in arrays)
    if stop == "decay fails":
        diagram, dmeta = dmft.io.load(out / "curves" / "diagram_eps")
        assert set(diagram) == {f"diagram/eps/{k}" for k in ("gap", "t_train", "t_test", "train_loss", "test_loss",
                                                             "diverged_step")}
        assert diagram["diagram/eps/test_loss"].shape == diagram["diagram/eps/train_loss"].shape == (2, 1, 5)
        # the diagram's times are those of its saved curves (at the threshold the part records)
        thr = dmeta["extra"]["threshold"]
        again = gk.grokking_times(arrays["t"], diagram["diagram/eps/train_loss"],
                                  diagram["diagram/eps/test_loss"], thr)
        for k in ("t_train", "t_test", "gap"):
            np.testing.assert_array_equal(getattr(again, k), diagram[f"diagram/eps/{k}"], err_msg=k)
        assert "theory/gamma0=2/test_loss" in dmft.io.load(out / "curves" / "gamma0_2")[0]
        overlay, meta = dmft.io.load(out / "curves" / "overlay_eps")
        pts = meta["extra"]["overlay"]
        assert meta["extra"]["part_of"] == "diagrams[eps].overlay" and [p["gamma0"] for p in pts] == [1.0, 2.0]
        assert {"gap_network", "gap_theory", "status_network", "status_theory", "width"} <= set(pts[0])
        np.testing.assert_array_equal(overlay["gamma0"], [1.0, 2.0])
        _, meta = dmft.io.load(out / "curves" / "early_warning_grid")
        grid = meta["extra"]["early_warning_grid"]
        assert grid["axis"] == "eps" and grid["grid_points"] == 2 and "alignment" in grid["verdict"]
    assert not (out / "curves.npz").exists()


LYU_FILE = os.path.join(os.path.dirname(__file__), "..", "scripts", "configs", "grok_lyu.toml")


def test_the_lyu_file_and_testbed_run_the_same_decay_steps(tmp_path):
    """`dmft grok --config grok_lyu.toml --steps 640` ran a 12000-step weight-decay scan (the file
    writes decay.steps = 12000) while `dmft grok --testbed lyu --steps 640` ran 640: the file only
    restates the testbed's steps, which stay the testbed's, so both run 640; without --steps both
    run the testbed's 12000. A decay.steps the user writes is kept, and a run's config.toml (which
    changes train.steps beside decay.steps = 12000) reloads as it was."""
    from experiments import grok
    from experiments.config import flag_overrides, to_toml
    from experiments.grok.config import schedule_of

    def scan_steps(cfg):
        return schedule_of(cfg, steps=cfg["decay"]["steps"] or None).steps

    for flags, steps in (({"train.steps": 640}, 640), ({}, 12000)):
        from_file = grok.load_config(LYU_FILE, flag_overrides(flags, []))
        from_testbed = grok.load_config(None, flag_overrides({"testbed.name": "lyu", **flags}, []))
        assert from_file == from_testbed and scan_steps(from_file) == steps, (flags, from_file["decay"])
    for sets, steps in ((["decay.steps=1280"], 1280), (["decay.steps=12000"], 12000)):
        cfg = grok.load_config(LYU_FILE, flag_overrides({"train.steps": 640}, sets))
        assert scan_steps(cfg) == steps
        stored = tmp_path / "config.toml"
        stored.write_text(to_toml(cfg))
        assert grok.load_config(stored) == cfg


@settings(max_examples=40, deadline=None)
@given(sets=st.dictionaries(st.sampled_from(["train.steps", "decay.steps", "train.save_every", "train.log_saves"]),
                            st.sampled_from([0, 40, 150, 250, 320, 640, 8000, 12000]), max_size=3))
def test_the_shipped_lyu_file_is_the_testbed_under_any_flags(sets):
    """Whatever steps and saves the command line sets, `--config grok_lyu.toml` and `--testbed lyu`
    resolve to the same configuration, or are refused with the same message (the file's
    log_saves = 150 refused a --set train.save_every that --testbed lyu took)."""
    from experiments import grok
    over = [f"{k}={v}" for k, v in sets.items()]
    got = []
    for path, extra in ((LYU_FILE, []), (None, ["testbed.name='lyu'"])):
        try:
            got.append(grok.load_config(path, extra + over))
        except dmft.errors.ConfigError as err:
            got.append(str(err))
    assert got[0] == got[1], (sets, got)


def test_grok_under_minibatch_sgd_runs_everything_on_one_batch_sequence(tmp_path):
    """train.batch_size / train.batch_seed: the DMFT, its lazy limit and the networks of every
    gamma0 train by minibatch SGD on the one sequence of train.batch_seed (as the solve, simulate
    and validate jobs do), and a gamma0 x minibatch diagram solves each column's batch size on
    that sequence (B = P: full-batch descent); each equals the library call given that sequence."""
    from dmft.schedule import default_batch_key

    out = tmp_path / "g"
    code = main(_small_grok(out, "--set", "train.batch_size=4", "--set", "train.batch_seed=5",
                            "--set", "diagram.axes=['minibatch']", "--set", "diagram.gamma0=[1.0, 2.0]",
                            "--set", "diagram.minibatch=[3, 12]", "--set", "diagram.overlay_width=0",
                            "--set", "early_warning.grid='minibatch'"))
    assert code == 0
    arrays, _ = dmft.io.load(out / "curves")
    data = dmft.tasks.kumar_quadratic(D=4, P=12, P_test=20, key=jax.random.key(0))
    model = dmft.TwoLayer(dmft.activations.quadratic(0.02), gamma0=1.0, readout="fixed")
    sch = dmft.Schedule(eta0=2.0, steps=40, save_every=10, batch_size=4)
    bkey = default_batch_key(jax.random.key(5))
    theory = dmft.solve(model, data, method="closure", schedule=sch, batch_key=bkey, kernels=False)
    np.testing.assert_allclose(arrays["theory/gamma0=1/test_loss"], theory.test_loss, rtol=1e-12)
    full = dmft.solve(model, data, method="closure", schedule=sch.replace(batch_size=None), kernels=False)
    assert np.max(np.abs(full.test_loss - theory.test_loss)) > 1e-4          # the batches matter
    lazy = dmft.solve(model, data, method="lazy", schedule=sch, batch_key=bkey, kernels=False)
    np.testing.assert_allclose(arrays["lazy/gamma0=1/test_loss"], lazy.test_loss, rtol=1e-12)
    nets = networks.train(model, data, width=4, seeds=2, schedule=sch, key=jax.random.key(1), batch_key=bkey)
    np.testing.assert_allclose(arrays["networks/gamma0=1/N=4/test_loss"], nets.test_loss, rtol=1e-10)
    # the diagram: gamma0 = 2 at B = 3 on the same sequence, and at B = P = 12 full-batch descent
    column = arrays["diagram/minibatch/test_loss"]
    two = model.replace(gamma0=2.0)
    b3 = dmft.solve(two, data, method="closure", schedule=sch.replace(batch_size=3), batch_key=bkey, kernels=False)
    np.testing.assert_allclose(column[1, 0], b3.test_loss, rtol=1e-11)
    b12 = dmft.solve(two, data, method="closure", schedule=sch.replace(batch_size=None), kernels=False)
    np.testing.assert_allclose(column[1, 1], b12.test_loss, rtol=1e-11)
    report = (out / "report.md").read_text()
    assert "Trained by minibatch SGD: B = 4 of the P = 12 training points" in report
    assert "B = P is full-batch gradient descent" in report
    rep = json.loads((out / "report.json").read_text())
    assert rep["early_warning_grid"]["axis"] == "minibatch"
    assert rep["diagrams"][0]["diverged_step"] == [[-1, -1], [-1, -1]]


@pytest.mark.parametrize("sets, match", [
    (["train.batch_size=13"], r"^train.batch_size: must be <= P = 12 \(kumar.P"),
    (["diagram.axes=['minibatch']", "diagram.minibatch=[4, 13]"], r"^diagram.minibatch: each size must be <= "),
    (["train.batch_seed=2"], r"^train.batch_seed: read only by minibatch SGD"),
    (["train.batch_size=12", "train.batch_seed=2"], r"^train.batch_seed: read only by minibatch SGD"),
    (["diagram.axes=['minibatch']", "diagram.minibatch=[12]", "train.batch_seed=2"],
     r"^train.batch_seed: read only by minibatch SGD"),
    (["testbed.name='sparse_parity'", "sparse_parity.P=50", "train.batch_size=51"],
     r"^train.batch_size: must be <= P = 50 \(sparse_parity.P"),
    (["diagram.axes=['P']", "diagram.P=[4, 12]", "train.batch_size=6"], r"^train.batch_size: must be <= every diagram.P"),
    (["diagram.axes=['minibatch']", "diagram.minibatch=[4, 4]"], r"^diagram.minibatch"),
    (["early_warning.batch_size=13"], r"^early_warning.batch_size: .* must be <= 12 \(kumar.P;"),
    (["diagram.axes=['P']", "diagram.P=[4, 12]", "early_warning.grid='P'", "early_warning.batch_size=6"],
     r"^early_warning.batch_size: .* must be <= 4 \(kumar.P, and every diagram.P"),
])
def test_grok_refuses_minibatch_settings_it_cannot_honour_at_load(sets, match):
    """A batch above the testbed's P, a diagram's, and a batch_seed that no run reads (every run
    full-batch: batch_size 0 or P, no minibatch column below P) are refused naming the key; so is
    the planted diffusion's batch above the points it draws from (it read all zeros, and the
    figure's log axis warned of no positive values)."""
    from experiments import grok

    base = ["kumar.P=12"] if not any(s.startswith("testbed.name") for s in sets) else []
    with pytest.raises(dmft.errors.ConfigError, match=match):
        grok.load_config(None, base + sets)


def test_overlap_diffusion_refuses_a_batch_larger_than_the_training_set():
    """It took min(B, P) silently: a batch of 50 from 20 points read as full batch (no diffusion)."""
    rng = np.random.default_rng(0)
    x, beta = rng.normal(size=(20, 4)), np.eye(4)[0]
    kw = dict(gamma0=1.0, eps=0.1, eta0=0.5)
    args = (np.zeros((1, 20)), rng.normal(size=20), x, beta, np.zeros((1, 4)), np.eye(4)[None])
    assert gk.overlap_diffusion(*args, batch_size=20, **kw)[0] == 0.0             # full batch: none
    assert gk.overlap_diffusion(*args, batch_size=5, **kw)[0] > 0.0
    for bad in (0, 21, 50):
        with pytest.raises(InputError, match="^batch_size"):
            gk.overlap_diffusion(*args, batch_size=bad, **kw)


def test_a_phase_diagram_too_large_for_memory_is_refused_before_any_compute():
    """A gamma0 x P diagram whose largest column would not fit was refused when the diagram ran,
    after the curves and networks, advising solve_batch's batch_size or a scan's chunk. The job
    checks it first now, naming diagram.batch_size; one point at a time fits."""
    from experiments import grok
    from experiments.grok import job

    sets = ["kumar.D=10", "kumar.P=55", "kumar.P_test=200", "diagram.axes=['P']", "diagram.P=[10, 5000]",
            "early_warning.grid='none'"]
    cfg = grok.load_config(None, sets)
    with pytest.raises(dmft.errors.ConfigError, match=r"^diagram.batch_size: at diagram.P = 5000, \d+ points"):
        job._check_diagram_memory(cfg, grok.build(cfg))
    cfg = grok.load_config(None, sets + ["diagram.batch_size=1"])
    job._check_diagram_memory(cfg, grok.build(cfg))


def test_grok_checks_modular_addition_batches_against_its_pairs_before_any_compute(tmp_path, capsys):
    """modular_addition's P (train_fraction p^2) is known once its pairs are drawn: a batch above
    it is refused by build, before anything runs; a batch_seed with a minibatch diagram's SGD column
    alone is read (accepted)."""
    from experiments import grok

    cfg = grok.load_config(None, ["testbed.name='modular_addition'", "modular_addition.p=5",
                                  "train.batch_size=100"])
    with pytest.raises(dmft.errors.ConfigError, match=r"^train.batch_size: must be <= P = \d+ \(the modular"):
        grok.build(cfg)
    cfg = grok.load_config(None, ["kumar.P=12", "diagram.axes=['minibatch']", "diagram.minibatch=[4, 12]",
                                  "train.batch_seed=2", "early_warning.grid='minibatch'"])
    tb = grok.build(cfg)
    assert tb.batch_key is None and tb.schedule.batch_size is None       # the runs: full batch
    out = tmp_path / "m"
    assert main(["grok", "--testbed", "modular_addition", "--set", "modular_addition.p=5", "--set",
                 "train.batch_size=100", "--out", str(out), "--no-progress"]) == 2
    assert "train.batch_size" in capsys.readouterr().err and not out.exists()


def test_a_grok_run_written_before_minibatch_sgd_is_the_same_run(tmp_path, capsys):
    """A grok run.json whose configuration lacks train.batch_size, train.batch_seed and
    diagram.minibatch (written before they existed) is read with their values then (full batch,
    the diagram's default sizes, which only the minibatch axis reads): the same command is
    "already complete" there; an SGD run there differs."""
    from experiments import grok
    from experiments.output import ADDED_KEYS

    assert ADDED_KEYS[("diagram", "minibatch")] == grok.SCHEMA["diagram"]["minibatch"].default
    out = tmp_path / "g"
    assert main(_small_grok(out)) == 0
    path = out / "run.json"
    manifest = json.loads(path.read_text())
    for sec, key in (("train", "batch_size"), ("train", "batch_seed"), ("diagram", "minibatch")):
        del manifest["config"][sec][key]
    del manifest["seal"]                                        # (written before run.json was sealed too)
    path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(_small_grok(out)) == 0
    assert "this run is already complete" in capsys.readouterr().err     # (as validate's, on stderr)
    assert main(_small_grok(out, "--set", "train.batch_size=4")) == 3
    assert "train.batch_size" in capsys.readouterr().err


def test_grok_p_diagram_under_sgd_trains_each_column_on_its_points_and_marks_diverged_cells(tmp_path):
    """Under train.batch_size = B the gamma0 x P diagram's column of P points is SGD on that
    sequence (full batch where B = P), as dmft.solve on that column's data; its overlay trains on
    the column's batches. A minibatch diagram's cells that ran away read "diverged by step k" in
    report.md, in report.json's statuses and in the overlay, not "not reached"."""
    from dmft.schedule import default_batch_key

    out = tmp_path / "p"
    assert main(_small_grok(out, "--set", "train.batch_size=6", "--set", "diagram.axes=['P']",
                            "--set", "diagram.P=[6, 12]", "--set", "diagram.gamma0=[1.0]",
                            "--set", "diagram.overlay_width=4")) == 0
    arrays, _ = dmft.io.load(out / "curves")
    model = dmft.TwoLayer(dmft.activations.quadratic(0.02), gamma0=1.0, readout="fixed")
    sch = dmft.Schedule(eta0=2.0, steps=40, save_every=10)
    for j, (P, B) in enumerate(((6, None), (12, 6))):
        data = dmft.tasks.kumar_quadratic(D=4, P=P, P_test=20, key=jax.random.key(0))
        want = dmft.solve(model, data, method="closure", schedule=sch.replace(batch_size=B), kernels=False,
                          batch_key=default_batch_key(jax.random.key(0)) if B else None)
        np.testing.assert_allclose(arrays["diagram/P/test_loss"][0, j], want.test_loss, rtol=1e-11)
    # eta0 = 4: B = 1 runs away (measured by step 20 and 28), B = P = 12 does not; the overlay
    # takes the middle column, B = 1
    out = tmp_path / "m"
    assert main(_small_grok(out, "--eta0", "4", "--set", "diagram.axes=['minibatch']",
                            "--set", "diagram.minibatch=[2, 1, 12]", "--set", "diagram.gamma0=[0.5, 1.0]",
                            "--set", "diagram.overlay_width=4", "--set", "train.batch_seed=1")) == 0
    rep = json.loads((out / "report.json").read_text())
    d = rep["diagrams"][0]
    bad = np.asarray(d["diverged_step"])
    assert np.all(bad[:, 1] >= 0) and np.all(bad[:, 2] == -1), bad
    status = np.asarray(d["times"]["status"])
    for i, j in np.ndindex(bad.shape):
        assert (status[i, j] == f"diverged by step {bad[i, j]}") == (bad[i, j] >= 0), (status, bad)
    for o in d["overlay"]:
        i = d["gamma0"].index(o["gamma0"])
        assert o["minibatch"] == 1 and o["status_theory"] == f"diverged by step {bad[i, 1]}"
    assert f"| diverged by step {bad[0, 1]} | " in (out / "report.md").read_text()


_FORWARD_TESTBEDS = {
    "sparse_parity": ["sparse_parity.n=6", "sparse_parity.k=2", "sparse_parity.P=40", "sparse_parity.P_test=20",
                      "model.gamma0=[1.0]", "train.eta0=1.0"],
    # C = p outputs (the operator control variate), P = 22 of the 25 pairs; without the testbed's
    # theory.node_check (two more DMFT solves, at 32 and 16 nodes: each draws and compiles its own;
    # test_grok_node_check_solves_fewer_nodes_and_extrapolates runs it and checks its rows' errors)
    "modular_addition": ["modular_addition.p=5", "model.gamma0=[1.0]", "train.eta0=0.05",
                         "theory.node_check=false"],
    # square activation, fixed readouts, under weight decay
    "lyu": ["lyu.D=6", "lyu.P=30", "lyu.P_test=20", "model.gamma0=[0.05]", "decay.weight_decay=[0.0]",
            "train.eta0=0.2"],
}


@pytest.mark.parametrize("testbed", list(_FORWARD_TESTBEDS))
def test_a_forward_testbed_under_sgd_trains_theory_and_networks_on_one_sequence(tmp_path, testbed):
    """The forward-solver testbeds (sparse_parity: trained readouts; modular_addition: C outputs;
    lyu: fixed readouts under weight decay) under train.batch_size: the job's DMFT and networks
    equal `dmft.solve` / `networks.train` given the sequence of train.batch_seed."""
    from dmft.schedule import default_batch_key
    from experiments import grok

    sets = [f"testbed.name='{testbed}'", *_FORWARD_TESTBEDS[testbed], "train.steps=20", "train.save_every=10",
            "train.log_saves=0", "simulate.widths=[8]", "simulate.seeds=2", "theory.samples=64",
            "theory.replicas=2", "train.batch_size=8", "train.batch_seed=4"]
    out = tmp_path / "sp"
    assert main(["grok", "--out", str(out), "--no-progress"] + [a for s in sets for a in ("--set", s)]) == 0
    arrays, _ = dmft.io.load(out / "curves")
    tb = grok.build(grok.load_config(None, sets))
    bkey = default_batch_key(jax.random.key(4))
    assert tb.schedule.batch_size == 8
    g = float(next(x for x in sets if x.startswith("model.gamma0")).split("[")[1][:-1])
    model = tb.model.replace(gamma0=g)
    sol = dmft.solve(model, tb.data, method="forward", samples=64, replicas=2, key=jax.random.key(0),
                     schedule=tb.schedule, batch_key=bkey, kernels=False)
    np.testing.assert_allclose(arrays[f"theory/gamma0={g:g}/test_loss"], sol.test_loss, rtol=1e-12)
    run = networks.train(model, tb.data, width=8, seeds=2, schedule=tb.schedule, key=jax.random.key(1),
                         batch_key=bkey, antithetic=tb.antithetic)
    np.testing.assert_allclose(arrays[f"networks/gamma0={g:g}/N=8/test_loss"], run.test_loss, rtol=1e-10)
    # each replica's curves are kept (R, T), and the DMFT's and the seed mean's early warnings carry
    # jackknife errors from them (the lazy limit's none)
    for name, q in (("test_loss", "test_loss"), ("train_loss", "train_loss"), ("alignment", "alignment"),
                    ("weight_change", "weight_change.first_layer")):
        np.testing.assert_allclose(arrays[f"theory/gamma0={g:g}/replicas.{name}"], sol.replicas[q].T, rtol=1e-12)
    rep = json.loads((out / "report.json").read_text())
    for row in rep["summary"]:
        ew = row["early_warning"]
        sampled = row["source"].startswith(("DMFT", "N="))
        assert ("t_drop_se" in ew) == sampled, row["source"]
        assert all(("lead_se" in v) == sampled for v in ew.values() if isinstance(v, dict)), row["source"]
    # the sequence is what trains them: another sequence is another run (so none is full batch, which
    # draws none; the same compiled program as the one above: full batch was a program of its own)
    assert np.abs(dmft.solve(model, tb.data, method="forward", samples=64, replicas=2, key=jax.random.key(0),
                             schedule=tb.schedule, batch_key=jax.random.key(5), kernels=False).test_loss
                  - sol.test_loss).max() > 1e-6


@settings(max_examples=25, deadline=None)
@given(b=st.floats(-5, 5), se=st.one_of(st.none(), st.floats(0, 2)), n=st.integers(2, 40))
def test_the_consoles_decay_fit_carries_its_error_or_why_it_has_none(b, se, n):
    """The console said "t_test ~ kappa^0.083" where the report said "no error: a line through 2
    points": it now carries the error bar, or the report's reason for none, and the point count."""
    from experiments.grok.job import _fit_text

    fit = {"exponent": b, "stderr": se, "points": n, "range": (0.001, 0.01)}
    if se is None and n == 2:
        fit["stderr_note"] = "no error: a line through 2 points"
    text = _fit_text(fit)
    assert text.startswith(f"t_test ~ kappa^{b:.3f}") and text.endswith(f"over {n} points"), text
    assert (f"+- {se:.3f}" in text) if se is not None else ("(no error" in text), text
    if se is not None and n > 2:        # the job records the 95% t interval too: that is shown
        text = _fit_text({**fit, "half_width_95": 4.3 * se})
        assert f"+- {4.3 * se:.3g} (95%, t with {n - 2} dof)" in text, text
    assert _fit_text({"error": "not fitted: 1 point"}) == "t_test ~ kappa^b not fitted: 1 point"


def test_the_grok_jobs_errors_are_the_jackknifes_of_its_replicas():
    """The job's early-warning record and grokking times of a curve set with replicas (a sampled
    DMFT's, a seed mean's) carry the jackknife's errors of exactly those replicas; without
    replicas none, and a curve set whose replicas miss a measure has none either."""
    from experiments.grok import job

    rng = np.random.default_rng(0)
    t = np.geomspace(1, 1e4, 60)
    R = 4
    # each replica's curves at times of its own (a factor on a loss moves no drop: its level moves too)
    z = 1 + 0.05 * rng.normal(size=(3, R, 1))
    test = 1 / (1 + (t / (1000 * z[0])) ** 4)
    train = 1 / (1 + (t / (100 * z[1])) ** 2)
    align = 1 - 1 / (1 + (t / (300 * z[2])) ** 2)
    reps = {"train_loss": train, "test_loss": test, "alignment": align}
    cur = {**{k: v.mean(0) for k, v in reps.items()}, **{f"{job.REPLICAS}{k}": v for k, v in reps.items()}}
    rec = job._early(t, cur)
    ew = gk.early_warning(t, cur["test_loss"], {"alignment": cur["alignment"]},
                          replicas={"test_loss": test, "alignment": align})
    assert rec["t_drop_se"] == pytest.approx(float(ew["t_drop_se"])) and rec["t_drop_se"] > 0
    assert rec["alignment"]["lead_se"] == pytest.approx(float(ew["alignment"]["lead_se"])) and rec["alignment"]["lead_se"] > 0
    assert set(rec) == {"drop_observed", "t_drop", "t_drop_se", "alignment"}
    cfg = {"threshold": {"accuracy": 0.9}}
    g = job._times(cfg, t, cur, 0.05, False)
    want = gk.grokking_times(t, cur["train_loss"], cur["test_loss"], 0.05,
                             replicas={"train_loss": train, "test_loss": test})
    assert g.gap_se == pytest.approx(float(want.gap_se)) and g.gap_se > 0
    plain = {k: v for k, v in cur.items() if not k.startswith(job.REPLICAS)}
    assert "t_drop_se" not in job._early(t, plain) and np.isnan(job._times(cfg, t, plain, 0.05, False).gap_se)
    partial = {k: v for k, v in cur.items() if k != f"{job.REPLICAS}alignment"}
    assert "t_drop_se" not in job._early(t, partial)
    # accuracy times by the jackknife over the accuracies' own replicas (not the losses')
    acc = {"train_acc": 1 - train, "test_acc": 1 - test}
    with_acc = {**cur, **{k: v.mean(0) for k, v in acc.items()}, **{f"{job.REPLICAS}{k}": v for k, v in acc.items()}}
    g = job._times(cfg, t, with_acc, 0.05, True)
    want = gk.grokking_times(t, 1 - cur["train_loss"], 1 - cur["test_loss"], 0.9, accuracy=True,
                             replicas={"train_loss": acc["train_acc"], "test_loss": acc["test_acc"]})
    assert g.kind == "accuracy" and g.gap_se == pytest.approx(float(want.gap_se)) and g.gap_se > 0
    # a seed mean of one seed has no replicas (the jackknife needs two); of two it has them
    one = job._seed_mean({k: v[:1] for k, v in reps.items()})
    assert not any(k.startswith(job.REPLICAS) for k in one)
    assert set(job._seed_mean({k: v[:2] for k, v in reps.items()})) >= {f"{job.REPLICAS}{k}" for k in reps}


def test_the_grok_report_marks_gap_errors_and_coarse_times():
    """report.md's summary table gives a gap's +- se and marks a coarse time, with its note."""
    from experiments.grok import config as gconf
    from experiments.grok.report import markdown

    cfg = gconf.load_config(None, [])
    t = np.array([0.0, 1.0, 2.0, 3.0])
    train = np.array([1.0, 0.04, 0.03, 0.02])                    # falls 25-fold across its crossing
    test = np.array([1.0, 0.9, 0.5, 0.05])
    g = gk.grokking_times(t, train, test, 0.1, replicas={"train_loss": train * np.array([[1.0], [1.1], [0.9]]),
                                                        "test_loss": test * np.array([[1.0], [1.05], [0.97]])})
    assert bool(g.coarse_train) and not bool(g.coarse_test) and g.gap_se > 0
    row = {"gamma0": 1.0, "source": "DMFT", **g.as_dict(), "describe": g.describe(), "final_test_loss": 0.05,
           "early_warning": {"drop_observed": False, "t_drop": None}}
    rep = {"testbed": "kumar", "data": {}, "threshold": 0.1, "threshold_kind": "loss", "summary": [row],
           "diagrams": [], "early_warning_grid": None, "figures": {}, "wall_s": 1.0, "decay": None}
    md = markdown(rep, cfg)
    assert (f"| {float(g.t_train):.4g} +- {float(g.t_train_se):.2g} (coarse) | {float(g.t_test):.4g} +- "
            f"{float(g.t_test_se):.2g} | {float(g.gap):.4g} +- {float(g.gap_se):.2g} |") in md
    assert "(coarse): the loss (or the error rate 1 - accuracy) fell over 10-fold between the two saves around the crossing" in md


def test_a_crossing_the_saves_do_not_resolve_is_flagged_coarse():
    """A train loss falling 1000-fold within the first save interval [0, 5000] read t_train = 4590
    (saves every 100: 93-400) with nothing said: such a crossing, in an interval over which the
    loss fell more than COARSE_FALL-fold, is flagged (describe says so), and one on fine saves is
    not; an accuracy's crossing is flagged where its error rate 1 - accuracy fell so (the same
    curve as an accuracy: flagged on the coarse saves, not on the fine ones)."""
    def loss(t):
        return np.exp(-t / 300.0) + 1e-3
    coarse_t, fine_t = np.arange(0, 100001, 2500.0), np.arange(0, 100001, 100.0)
    g = gk.grokking_times(coarse_t, loss(coarse_t), loss(coarse_t) + 0.2, 0.1)
    assert bool(g.coarse_train) and not bool(g.coarse_test) and "coarse" in g.describe().split("t_test")[0]
    assert g.as_dict()["coarse_train"] is True
    f = gk.grokking_times(fine_t, loss(fine_t), loss(fine_t), 0.1)
    assert not bool(f.coarse_train) and "coarse" not in f.describe()
    assert abs(float(f.t_train) - 300 * np.log(1 / (0.1 - 1e-3))) < 5 < abs(float(g.t_train) - float(f.t_train))
    acc = gk.grokking_times(coarse_t, 1 - loss(coarse_t), 1 - loss(coarse_t), 0.9, accuracy=True)
    assert bool(acc.coarse_train) and bool(acc.coarse_test) and "coarse: the error rate 1 - accuracy fell" in acc.describe()
    fine_acc = gk.grokking_times(fine_t, 1 - loss(fine_t), 1 - loss(fine_t), 0.9, accuracy=True)
    assert not bool(fine_acc.coarse_train) and not bool(fine_acc.coarse_test)
    grid = gk.grokking_times(coarse_t, np.stack([loss(coarse_t), loss(coarse_t / 100)]), np.ones((2, coarse_t.size)), 0.1)
    np.testing.assert_array_equal(grid.coarse_train, [True, False])


def test_the_jackknife_is_the_textbook_one_on_the_replicas_mean():
    """Where the curve is the replicas' mean, each leave-one-out curve is exactly the mean of the
    other replicas, so a nonlinear quantity's error is the textbook jackknife's (a leave-one-out
    shift of the other sign, or by c - v_i, agreed only to first order)."""
    rng = np.random.default_rng(5)
    R, T = 5, 4
    reps = 1.0 + 0.3 * rng.normal(size=(R, T)) ** 2
    def fn(c):
        return np.exp(c["a"][..., 1]) / c["a"][..., 2] ** 3
    loo = np.array([fn({"a": np.delete(reps, i, axis=0).mean(0)}) for i in range(R)])
    want = np.sqrt((R - 1) / R * np.sum((loo - loo.mean()) ** 2))
    assert gk.jackknife_se(fn, {"a": reps.mean(0)}, {"a": reps}) == pytest.approx(want, rel=1e-12)


def test_a_lead_of_two_curves_shifted_together_has_no_error():
    """Replicas whose test loss and measure are shifted in time together: each replica's drop and
    change move by the same amount, so the lead does not move at all: its error is ~0 while each
    time's is not (3% of it, from the second order; a sum, or separate errors, would give 1.4-2x). A rate's
    change time (the median of its burst) is jackknifed as a rate."""
    t = np.linspace(0.0, 3000.0, 3001)
    shifts = np.array([-4.0, -1.0, 1.5, 3.5])[:, None]          # (small against the widths: first order)
    test = 0.01 + 1 / (1 + np.exp((t - 1500 - shifts) / 40))
    meas = 1 / (1 + np.exp(-(t - 900 - shifts) / 60))
    burst = np.exp(-((t - 900 - shifts) / 80) ** 2)
    cur = {"test_loss": test.mean(0), "m": meas.mean(0), "rate": burst.mean(0)}
    ew = gk.early_warning(t, cur["test_loss"], {"m": cur["m"], "rate": cur["rate"]}, rates=("rate",),
                          replicas={"test_loss": test, "m": meas, "rate": burst})
    assert 0.5 < ew["t_drop_se"] < 5 and 0.5 < ew["m"]["t_change_se"] < 5
    assert ew["m"]["lead_se"] < 0.1 * ew["t_drop_se"] and ew["rate"]["lead_se"] < 0.1 * ew["t_drop_se"]
    want = gk.jackknife_se(lambda c: gk.change_time(t, c["rate"], rate=True), {"rate": cur["rate"]}, {"rate": burst})
    assert ew["rate"]["t_change_se"] == pytest.approx(float(want), rel=1e-9)
    level = gk.jackknife_se(lambda c: gk.change_time(t, c["rate"]), {"rate": cur["rate"]}, {"rate": burst})
    assert abs(float(level) / float(want) - 1) > 0.05 or not np.isfinite(level)


def test_coarse_is_a_tenfold_fall_within_the_crossings_interval():
    """COARSE_FALL = 10: a loss that falls twelvefold across its crossing's save interval is flagged,
    one that falls eightfold is not."""
    t = np.array([0.0, 1.0, 2.0, 3.0])
    for fall, coarse in ((12.0, True), (8.0, False)):
        y = np.array([1.0, 1.0, 1.0 / fall, 1.0 / fall])
        g = gk.grokking_times(t, y, y, 0.5)
        assert bool(g.coarse_train) is coarse and bool(g.coarse_test) is coarse, fall
    assert gk.COARSE_FALL == 10.0


def test_grok_node_check_solves_fewer_nodes_and_extrapolates(tmp_path, monkeypatch):
    """theory.node_check solves each DMFT again at half and a quarter of the nodes a replica, from
    independent keys; the report gives every time and final loss at the three, the shift, the
    curvature and the extrapolation (`validation.fitting.node_extrapolation`), from the values the
    summary and curves.npz hold."""
    from experiments.grok import job as gjob
    from validation.fitting import node_extrapolation
    real, calls = gjob.dmft.solve, []

    def solve(model, data, **kw):
        if kw.get("method") == "forward":
            calls.append((kw["samples"], kw["replicas"], tuple(np.ravel(jax.random.key_data(kw["key"])))))
        return real(model, data, **kw)
    monkeypatch.setattr(gjob.dmft, "solve", solve)
    out = tmp_path / "sp"
    assert main(["grok", "--testbed", "sparse_parity", "--out", str(out), "--no-progress",
                 "--set", "sparse_parity.n=6", "--set", "sparse_parity.k=2", "--set", "sparse_parity.P=24",
                 "--set", "sparse_parity.P_test=32", "--set", "train.steps=40", "--set", "train.save_every=20",
                 "--set", "train.eta0=2.0", "--set", "theory.samples=64", "--set", "theory.replicas=2",
                 "--set", "theory.node_check=true", "--gamma0", "1", "--widths", "4", "--seeds", "2"]) == 0
    assert [c[:2] for c in calls] == [(64, 2), (32, 2), (16, 2)] and len({c[2] for c in calls}) == 3
    rep = json.loads((out / "report.json").read_text())
    rows = {r["source"]: r for r in rep["summary"]}
    srcs = ["DMFT", gjob.NODE_CHECK_ROWS[2], gjob.NODE_CHECK_ROWS[4]]
    assert set(rows) >= set(srcs)
    for s in srcs:          # each solve's early warnings carry errors from its own replicas
        ew = rows[s]["early_warning"]
        assert "t_drop_se" in ew and all("lead_se" in v for v in ew.values() if isinstance(v, dict)), s
    assert [r["quantity"] for r in rep["node_check"]] == ["t_train", "t_test", "gap", "final train loss",
                                                          "final test loss"]
    groups = ["theory", gjob.NODE_CHECK_GROUPS[2], gjob.NODE_CHECK_GROUPS[4]]
    with np.load(out / "curves.npz") as z:
        ends = {(grp, q): (float(z[f"{grp}/gamma0=1/{q}"][-1]), float(z[f"{grp}/gamma0=1/{q}_se"][-1]))
                for grp in groups for q in ("train_loss", "test_loss")}
        assert not np.array_equal(z["theory/gamma0=1/train_loss"], z[f"{groups[1]}/gamma0=1/train_loss"])
    nan = lambda v: np.nan if v is None else v                          # noqa: E731
    for r in rep["node_check"]:
        q = r["quantity"]
        if q.startswith("final"):           # the losses' errors are the solves' own
            vals = [ends[(grp, q[6:].replace(" ", "_"))] for grp in groups]
        else:
            vals = [(nan(rows[s][q]), nan(rows[s].get(f"{q}_se"))) for s in srcs]
        got = [(nan(r[k]), nan(r[f"{k}_se"])) for k in ("full", "half", "quarter")]
        np.testing.assert_array_equal(got, vals)
        want = node_extrapolation(*[v for v, _ in vals], *[e for _, e in vals])
        for k, v in want.items():
            np.testing.assert_allclose(nan(r[k]), v, rtol=1e-12, atol=0)
    md = (out / "report.md").read_text()
    assert "## Node-count check" in md and "| 8 nodes a replica | 16 | 32 | shift | curvature |" in md


@pytest.mark.parametrize("sets, match", [
    (["testbed.name='sparse_parity'", "theory.samples=100", "theory.replicas=2", "theory.node_check=true"],
     r"theory.node_check: theory.samples \(100\) must be a multiple of 16"),
    (["testbed.name='kumar'", "theory.node_check=true"], "theory.node_check")])
def test_grok_node_check_refuses_a_half_that_does_not_split_or_a_closure(sets, match):
    """The half solve's nodes must split into the replicas' antithetic pairs as the full solve's
    do; the kumar testbed's closure draws no nodes (the key is refused as changing nothing)."""
    from experiments.grok.config import load_config
    with pytest.raises(ConfigError, match=match):
        load_config(None, sets)
    load_config(None, ["testbed.name='sparse_parity'", "theory.samples=96", "theory.replicas=2",
                       "theory.node_check=true"])
    load_config(None, ["testbed.name='kumar'", "theory.node_check=false"])


@pytest.mark.parametrize("sets, match", [
    (["decay.weight_decay=[1e-4, 2e-4]", "decay.gamma0=1e200"], r"^decay: gamma0 = 1e\+200 is outside"),
    (["diagram.gamma0=[1, 1e200]"], r"^diagram.gamma0 x diagram.P: gamma0 = 1e\+200"),
    (["diagram.axes=['weight_decay']", "diagram.weight_decay=[0, 1e6]"],
     r"^diagram.gamma0 x diagram.weight_decay: weight_decay: eta0 \* weight_decay"),
    (["diagram.overlay_width=100000000"], r"^diagram.overlay_width, diagram.overlay_seeds \(P diagram\): width"),
    (["decay.weight_decay=[1e-4, 2e-4]", "decay.steps=2000000000"], r"^decay: "),
])
def test_diagram_overlay_and_decay_settings_are_checked_before_any_curve(tmp_path, sets, match):
    """A diagram point, an overlay's networks or the decay scan that its solve or training would
    refuse was refused only when that part ran, after every gamma0's curves (and often a diagram)
    were computed, and mostly without naming the key (a CLI audit): now before any compute."""
    from unittest import mock

    from experiments import grok
    from experiments.grok import job

    base = ["kumar.D=8", "kumar.P=20", "early_warning.grid='none'"]
    if not any(x.startswith("diagram.axes") for x in sets):
        base += ["diagram.axes=['P']", "diagram.P=[20, 40]"]
    cfg = grok.load_config(None, base + sets)
    with mock.patch.object(job, "_theory", side_effect=AssertionError("a curve was computed")), \
            pytest.raises(dmft.errors.ConfigError, match=match):
        job.run(cfg, str(tmp_path / "out"), log=lambda *a: None)


def test_the_grok_report_marks_coarse_times_in_the_decay_and_diagram_tables():
    """A coarse crossing (report.json's coarse_train) is marked "(coarse)" in the weight-decay
    table and in a phase diagram's gap cell, as in the summary table, with the note (they showed
    a coarse t_train as 11.88 +- 0.31, unmarked, where report.json said coarse_train: true)."""
    from experiments.grok import config as gconf
    from experiments.grok.report import markdown

    cfg = gconf.load_config(None, [])
    t = np.array([0.0, 1.0, 2.0, 3.0])
    train = np.array([[1.0, 0.04, 0.03, 0.02], [1.0, 0.5, 0.2, 0.05]])     # the first falls 25-fold
    test = np.array([[1.0, 0.9, 0.5, 0.05], [1.0, 0.9, 0.5, 0.05]])
    g = gk.grokking_times(t, train, test, 0.1)
    assert list(g.coarse_train) == [True, False] and not np.any(g.coarse_test)
    fine = gk.grokking_times(t, train[1], test[1], 0.1)
    row = {"gamma0": 1.0, "source": "DMFT", **fine.as_dict(), "describe": fine.describe(), "final_test_loss": 0.05,
           "early_warning": {"drop_observed": False, "t_drop": None}}
    times = g.as_dict()
    diag = {"axis": "eps", "gamma0": [1.0], "values": [0.1, 0.3], "seconds": 0.0, "overlay": [],
            "times": {k: [v] for k, v in times.items()}, "diverged_step": [[-1, -1]]}
    decay = {"testbed": "kumar", "gamma0": 1.0, "weight_decay": [1e-4, 2e-4], "times": times}
    rep = {"testbed": "kumar", "data": {}, "threshold": 0.1, "threshold_kind": "loss", "summary": [row],
           "diagrams": [diag], "early_warning_grid": None, "figures": {}, "wall_s": 1.0, "decay": decay}
    md = markdown(rep, cfg)
    t_train, gap = times["t_train"], times["gap"]
    assert f"| 0.0001 | {t_train[0]:.4g} (coarse) | " in md
    assert f"| 0.0002 | {t_train[1]:.4g} | " in md
    assert f"| 1 | {gap[0]:.4g} (coarse) | {gap[1]:.4g} |" in md
    assert "(coarse): the loss (or the error rate 1 - accuracy) fell over 10-fold between the two saves around the crossing" in md


def test_a_gap_whose_leave_one_out_curve_does_not_cross_has_no_error():
    """The gap's jackknife error where a curve left without one replica does not cross within the
    run (the test loss crosses at its last save, one replica above the threshold there): NaN, the
    error unknown (a scan's networks.grok.gap_se at 1 of 20 points, with the gap 5.0 and both
    times' own errors finite), as `GrokTimes` says; with every leave-one-out curve crossing, finite."""
    t = np.arange(4.0)
    train = np.tile([1.0, 0.5, 0.01, 0.01], (3, 1))
    test = np.array([[1.0, 1.0, 1.0, 0.05], [1.0, 1.0, 1.0, 0.05], [1.0, 1.0, 1.0, 0.16]])
    for last, finite in ((0.16, False), (0.12, True)):
        test[2, -1] = last
        g = gk.grokking_times(t, train.mean(0), test.mean(0), 0.1, replicas={"train_loss": train, "test_loss": test})
        assert np.isfinite(g.gap) and np.isfinite(g.t_train_se) and np.isfinite(g.gap_se) == finite, g
