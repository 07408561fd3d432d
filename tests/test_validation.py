"""Comparison and fitting code on planted answers, configuration, and the `dmft` command."""

import dataclasses
import json
import os
import pathlib
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import dmft
import networks
import validation
from experiments import cli
from experiments.config import ConfigError, parse_override, to_toml
from experiments.jobs import load_config as load
from validation.verdicts import checks as verdicts


# ------------------------------------------------------------------ planted answers

def _fake_solution(f_test, t, y, **info):
    T = len(t)
    loss = np.mean((y[None] - f_test) ** 2, axis=1)
    return dmft.Solution(t=t, f_train=f_test, f_test=f_test, train_loss=loss, test_loss=loss,
                         ntk=None, feature_kernel=None, gradient_kernel=None, alignment=np.zeros(T),
                         weight_change={"first_layer": np.zeros(T)}, error=None,
                         info={"target_rms": {"test": float(np.sqrt(np.mean(y ** 2)))}, **info})


def _fake_run(f_test, t, y, width):
    loss = np.mean((y[None, None] - f_test) ** 2, axis=2)
    s = f_test.shape[0]
    return networks.Run(t=t, f_train=f_test, f_test=f_test, train_loss=loss, test_loss=loss, ntk=None,
                        feature_kernel=None, gradient_kernel=None, alignment=np.zeros((s, len(t))),
                        weight_change={"first_layer": np.zeros((s, len(t)))},
                        info={"width": width, "seeds": s, "diverged": {}})


def _planted(kind, seeds):
    rng = np.random.default_rng(0)
    t = np.linspace(0, 10, 6)
    y = rng.normal(size=40)
    f_th = np.outer(1 - np.exp(-t), y)
    runs = {}
    for n in (16, 64, 256, 1024):
        if kind == "bias":       # every seed off by 3 / N
            dev = np.broadcast_to(3.0 / n * np.sign(y)[None, None] * (t > 0)[None, :, None],
                                  (seeds,) + f_th.shape)
        else:                    # independent fluctuations of size 0.3 / sqrt(N)
            dev = 0.3 * rng.normal(size=(seeds,) + f_th.shape) / np.sqrt(n)
        runs[n] = _fake_run(f_th[None] + dev, t, y, n)
    return validation.width_scaling(_fake_solution(f_th, t, y), runs)


def test_planted_bias_gives_slope_minus_one():
    sc = _planted("bias", seeds=3)
    assert sc["mean_fit"].slope == pytest.approx(-1.0, abs=1e-9)
    assert sc["bias_fit"].slope == pytest.approx(-1.0, abs=0.02)   # loss bias ~ 2 |f - y| 3/N
    assert sc["per_seed_fit"].x_range == (16.0, 1024.0) and sc["per_seed_fit"].n == 4


def test_planted_fluctuations_give_slope_minus_half():
    sc = _planted("noise", seeds=2000)
    assert sc["per_seed_fit"].slope == pytest.approx(-0.5, abs=0.02)
    assert sc["mean_fit"].slope == pytest.approx(-0.5, abs=0.06)      # noise / sqrt(seeds N)


def test_compare_measures_known_errors():
    t = np.array([0.0, 1.0, 2.0])
    y = np.array([1.0, -1.0, 2.0, 0.5])
    f_th = np.outer([0.0, 0.5, 0.9], y)
    sol = _fake_solution(f_th, t, y)
    f_net = np.stack([f_th + 0.1, f_th - 0.1])                 # per-seed error 0.1, mean exact
    c = validation.compare(sol, _fake_run(f_net, t, y, 8))
    scale = np.sqrt(np.mean(y ** 2))
    np.testing.assert_allclose(c.per_seed_error, 0.1 / scale)
    np.testing.assert_allclose(c.mean_error, 0.0, atol=1e-15)
    # skewed seeds (offsets 0, 0, 0.3): the seed mean's error is the mean's, 0.1, not the median's 0
    skew = validation.compare(sol, _fake_run(f_th[None] + np.array([0.0, 0.0, 0.3])[:, None, None], t, y, 8))
    np.testing.assert_allclose(skew.mean_error, 0.1 / scale, rtol=1e-12)
    np.testing.assert_allclose(skew.per_seed_error, np.sqrt(0.09 / 3) / scale, rtol=1e-12)
    # the theory's floor in width_scaling is the RMS over saved times (t > 0) of its per-time RMS
    # over points (floors 0.01 and 0.03: RMS 0.0224, where a mean reads 0.02)
    err = np.stack([np.zeros(4), np.full(4, 0.01), np.full(4, 0.03)])
    floored = _fake_solution(f_th, t, y, error_dof=3)
    floored = dataclasses.replace(floored, error={"f_test": err, "test_loss": np.zeros(3), "train_loss": np.zeros(3),
                                                  "f_train": err})
    sc = validation.width_scaling(floored, {8: _fake_run(f_net, t, y, 8), 16: _fake_run(f_net, t, y, 16)})
    assert sc["theory_floor"] == pytest.approx(np.sqrt((0.01 ** 2 + 0.03 ** 2) / 2) / scale, rel=1e-12)
    assert c.summary["final_network_std"] > 0 and c.summary["loss"] == "test"
    with pytest.raises(ValueError, match="time bases"):
        validation.compare(sol, _fake_run(f_net, t * 2, y, 8))
    # a longer run on the same step: the message says how the bases differ (it showed the two
    # equal first times only)
    t4 = np.array([0.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"theory: 3 saves at t = 0\., 1\., 2\.; run: 4 saves .*, 3\)"):
        validation.compare(sol, _fake_run(np.concatenate([f_net, f_net[:, -1:]], axis=1), t4, y, 8))


@settings(max_examples=4, deadline=None)
@given(act=st.sampled_from(["relu", "tanh"]), centered=st.booleans(), scale=st.floats(0.3, 1.5),
       seed=st.integers(0, 2 ** 16))
def test_all_zero_targets_give_absolute_errors_and_no_relative_ones(act, centered, scale, seed):
    """Targets all zero: the theory predicts zero to rounding, and the prediction errors were
    divided by that rounding (an uncentered ensemble read a per-seed error of 3e16, a centered one
    1.0, and the loss's relative error 1e33 or 1.0). The errors are now absolute and said to be
    (summary['zero_targets'], summary['absolute_errors'], summary['error_scale'] = 1); the losses'
    relative errors are NaN and the agreement and lazy-limit checks SKIP saying why, while the z
    check still judges. Each split is judged by its own targets."""
    rng = np.random.default_rng(seed)
    x, xt = rng.normal(size=(12, 3)) * scale, rng.normal(size=(6, 3)) * scale
    data = dmft.Dataset(x, np.zeros(12), xt, np.zeros(6))
    model = dmft.TwoLayer(act, gamma0=1.0, centered=centered)
    kw = dict(eta0=0.2, steps=10, save_every=5)
    sol = dmft.solve(model, data, samples=64, replicas=4, key=jax.random.key(seed), **kw)
    run = networks.train(model, data, width=32, seeds=3, key=jax.random.key(seed), **kw)
    c = validation.compare(sol, run)
    assert c.summary["zero_targets"] and c.summary["error_scale"] == 1.0
    np.testing.assert_allclose(c.per_seed_error, np.sqrt(np.mean((run.f_test - sol.f_test[None]) ** 2, axis=(0, 2))),
                               rtol=1e-12, atol=1e-300)
    assert np.all(c.per_seed_error < 10) and np.isnan(c.summary["final_rel_error"])
    sweep = types.SimpleNamespace(widths=[32], gamma0s=[1.0], solutions={1.0: sol}, lazy={1.0: sol},
                                  scaling={1.0: {"per_seed_fit": None, "theory_floor": 0.0,
                                                 "per_seed_error": c.per_seed_error, "comparisons": {32: c}}},
                                  seeds=3)
    out = {o["name"]: o for o in verdicts(sweep, {})}
    for name in ("agreement gamma0=1 N=32", "lazy limit gamma0=1"):
        assert out[name]["verdict"] == "SKIP" and "all zero" in out[name]["detail"], out[name]
    other = dmft.Dataset(x, np.full(12, 2.0), xt, np.full(6, 2.0))   # targets that are not zero: as before
    c1 = validation.compare(dmft.solve(model, other, samples=64, replicas=4, **kw),
                            networks.train(model, other, width=32, seeds=3, **kw))
    assert not c1.summary["zero_targets"] and c1.summary["error_scale"] == 2.0
    assert np.isfinite(c1.summary["final_rel_error"])
    # one split zero, the other not: each loss by its own targets, the predictions by the test split's
    for y_tr, y_te in ((2.0, 0.0), (0.0, 2.0)):
        mixed = dmft.Dataset(x, np.full(12, y_tr), xt, np.full(6, y_te))
        c2 = validation.compare(dmft.solve(model, mixed, samples=64, replicas=4, **kw),
                                networks.train(model, mixed, width=32, seeds=3, **kw))
        assert c2.summary["zero_targets"] == c2.summary["absolute_errors"] == (y_te == 0)
        assert c2.summary["error_scale"] == (1.0 if y_te == 0 else 2.0)
        assert np.isnan(c2.train_loss["rel_error"][1:]).all() == (y_tr == 0)
        assert np.isnan(c2.test_loss["rel_error"][1:]).all() == (y_te == 0)


_MODEL_CHANGES = [("activation", dict(activation="relu"), {}), ("gamma0", dict(gamma0=2.0), {}),
                  ("readout", dict(readout="fixed"), {}), ("centered", dict(centered=False), {}),
                  ("weight_decay", {}, dict(weight_decay=0.1))]


@pytest.mark.parametrize("field, model_change, train_change", _MODEL_CHANGES)
def test_compare_refuses_networks_of_another_model_naming_the_field(field, model_change, train_change):
    """A theory against networks of another model or weight decay said nothing about them and was
    reported as a disagreement (gamma0 = 5 relu networks read z = -51 against a gamma0 = 1 tanh
    solution): refused, naming the field. Another step size or batch size is a comparison of
    interest and passes, as the same model does."""
    data = dmft.tasks.single_index(4, 16, P_test=8, key=jax.random.key(0))
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    sch = dict(eta0=0.5, steps=4, save_every=2)
    sol = dmft.solve(model, data, **sch, samples=256)
    other = dmft.TwoLayer(**{**dict(activation="tanh", gamma0=1.0), **model_change})
    run = networks.train(other, data, **sch, **train_change, width=16, seeds=2)
    with pytest.raises(dmft.InputError, match=f"different models.*{field} "):
        validation.compare(sol, run)
    validation.compare(sol, networks.train(model, data, **sch, width=16, seeds=2))
    validation.compare(sol, networks.train(model, data, eta0=0.25, steps=8, save_every=4, width=16, seeds=2))
    validation.compare(sol, networks.train(model, data, **sch, batch_size=4, width=16, seeds=2))


@settings(max_examples=6, deadline=None)
@given(slopes=st.lists(st.floats(0.0, 0.5), min_size=2, max_size=2, unique=True),
       named=st.booleans())
def test_compare_tells_two_custom_activations_apart_by_their_values(slopes, named):
    """Two custom activations were told apart by name alone: two lambdas (or two custom(...,
    'leaky')) of other slopes were the same model to compare, which then reported their
    difference as the theory's error (a relative error of 0.53). A custom activation's
    description now carries its values at a few fixed points, so they are refused by that field
    where the slopes differ in the first 6 digits, and the same callable passes."""
    assume(abs(slopes[0] - slopes[1]) > 1e-4)
    data = dmft.tasks.single_index(4, 16, P_test=8, key=jax.random.key(0))
    acts = [(lambda k: (lambda h: jnp.where(h > 0, h, k * h)))(k) for k in slopes]
    if named:
        acts = [dmft.activations.custom(a, "leaky", kinks=[0.0]) for a in acts]
    sch = dict(eta0=0.5, steps=4, save_every=2)
    # (the lazy method: the model's description is the same for every method, and for each
    # example's new activation it compiles the setup's programs only, not the sampled solver's too)
    sol = dmft.solve(dmft.TwoLayer(acts[0], gamma0=1.0), data, **sch, method="lazy")
    run = networks.train(dmft.TwoLayer(acts[1], gamma0=1.0), data, **sch, width=16, seeds=2)
    with pytest.raises(dmft.InputError, match="different models.*activation_probe"):
        validation.compare(sol, run)
    validation.compare(sol, networks.train(dmft.TwoLayer(acts[0], gamma0=1.0), data, **sch, width=16, seeds=2))


@settings(max_examples=30, deadline=None)
@given(diverged_at=st.lists(st.integers(1, 6), min_size=2, max_size=8), data_seed=st.integers(0, 2 ** 16))
@example(diverged_at=[1] * 8, data_seed=35701)          # (a z of -0.0016: see below)
def test_compare_judges_each_time_by_the_seeds_still_finite(diverged_at, data_seed):
    """A seed that diverged (NaN from then on, as networks.train leaves it) counts nowhere after:
    mean, spread, standard error and z at each time are those of the finite seeds alone (the
    standard error once divided by every seed, inflating z); under two finite seeds z is NaN."""
    rng = np.random.default_rng(data_seed)
    t = np.linspace(0, 5, 6)
    y = rng.normal(size=12)
    f_th = np.outer(1 - np.exp(-t), y)
    f_net = f_th[None] + 0.2 * rng.normal(size=(len(diverged_at),) + f_th.shape)
    for s, k in enumerate(diverged_at):                 # k = 6: never diverged
        f_net[s, k:] = np.nan
    c = validation.compare(_fake_solution(f_th, t, y), _fake_run(f_net, t, y, 64))
    loss = np.mean((y - f_net) ** 2, axis=2)
    for j in range(len(t)):
        alive = loss[np.isfinite(loss[:, j]), j]
        got = {k: c.test_loss[k][j] for k in ("mean", "std", "se", "z")}
        assert c.test_loss["finite_seeds"][j] == len(alive)
        if len(alive) >= 2:
            se, theory = alive.std(ddof=1) / np.sqrt(len(alive)), c.test_loss["theory"][j]
            np.testing.assert_allclose([got["mean"], got["std"], got["se"]], [alive.mean(), alive.std(ddof=1), se],
                                       rtol=1e-12)
            # (z's numerator is a difference: its rounding is the mean's and the theory's, 1e-12 of
            # their size, not of z's; data seed 35701 put z at -0.0016, 2.8e-12 off relative)
            np.testing.assert_allclose(got["z"], (alive.mean() - theory) / se, rtol=1e-12,
                                       atol=1e-12 * (abs(alive.mean()) + abs(theory)) / se)
        else:
            assert np.isnan(got["z"]) and np.isnan(got["se"])


def _fake_sweep(widths, offset, seeds=4, **theory_info):
    """A sweep of planted ensembles: per-seed fluctuations 0.3 / sqrt(N) around the theory, the
    ensembles' final test loss shifted by `offset` (so z and the relative error are known)."""
    rng = np.random.default_rng(1)
    t = np.linspace(0, 10, 6)
    y = rng.normal(size=40)
    f_th = np.outer(0.5 * (1 - np.exp(-t)), y)         # final test loss about 0.25
    sol = _fake_solution(f_th, t, y, **theory_info)
    runs = {}
    for n in widths:
        run = _fake_run(f_th[None] + 0.3 * rng.normal(size=(seeds,) + f_th.shape) / np.sqrt(n), t, y, n)
        tl = np.array(run.test_loss)
        tl[:, -1] = sol.test_loss[-1] + offset + 0.01 * np.arange(seeds)   # std over seeds: known
        runs[n] = networks.Run(**{**{k: getattr(run, k) for k in ("t", "f_train", "f_test", "train_loss",
                                                                  "ntk", "feature_kernel", "gradient_kernel",
                                                                  "alignment", "weight_change", "info")},
                                  "test_loss": tl})
    return types.SimpleNamespace(widths=list(widths), gamma0s=[1.0], seeds=seeds,
                                 scaling={1.0: validation.width_scaling(sol, runs)},
                                 solutions={1.0: sol}, lazy={1.0: sol}, runs={1.0: runs})


@settings(max_examples=25, deadline=None)
@given(offset=st.floats(-0.05, 0.05), sigma=st.floats(0.01, 20.0), seeds=st.integers(2, 12))
def test_agreement_sigma_decides_the_z_check(offset, sigma, seeds):
    """z is a t statistic (se from the seeds): it is judged at every saved time t > 0 against the
    bound with the normal tail beyond sigma, shared among those times, at that time's degrees of
    freedom; the value and tolerance shown are those of the time nearest its bound."""
    from scipy import stats

    from validation.verdicts import z_bound

    sweep = _fake_sweep((16, 64, 256), offset, seeds=seeds)
    out = {c["name"]: c for c in verdicts(sweep, {"agreement_sigma": sigma, "agreement_rel": 10.0})}
    comp = sweep.scaling[1.0]["comparisons"][256]
    z, dof = comp.test_loss["z"][1:], comp.test_loss["dof"][1:]
    assert np.all(np.isfinite(z)) and np.all(dof > 0)
    bounds = np.array([z_bound(sigma, d, z.size) for d in dof])
    for b, d in zip(bounds, dof):     # the bound whose tail, taken to the family, is the normal one
        each = -np.expm1(np.log1p(-2 * stats.norm.sf(sigma)) / z.size)   # beyond sigma, rounded up
        exact = stats.t.isf(each / 2, d)
        assert exact <= b <= exact * (1 + 0.01) and float(f"{b:.3g}") == b, (b, exact)
    i = int(np.argmax(np.abs(z) / bounds))
    zc = out["agreement z gamma0=1 N=256"]
    assert zc["verdict"] == ("PASS" if np.all(np.abs(z) <= bounds) else "FAIL"), zc
    assert zc["value"] == z[i] and float(zc["tolerance"].split()[-1]) == bounds[i]     # as shown
    assert out["agreement gamma0=1 N=256"]["verdict"] == "PASS"        # agreement_rel = 10
    # a bound so wide that only a gross disagreement fails it says so (4 seeds, 4 replicas: 338)
    from validation.verdicts import WEAK_Q, WEAK_Z
    assert ("a PASS here says little" in zc["detail"]) == (bounds[i] > WEAK_Z), zc
    pc = out["prediction gamma0=1 N=256"]
    if pc["verdict"] != "SKIP":
        b = float(pc["tolerance"].split()[-1])
        assert ("a PASS here says little" in pc["detail"]) == (b > WEAK_Q), pc
        assert (f"up to {np.sqrt(b):.3g} times its noise" in pc["detail"]) == (b > WEAK_Q), pc


@pytest.mark.parametrize("floor_over_last, noise_share", [(0.45, 1.0), (0.7, 1.0), (3.0, 0.2)])
def test_the_spread_fit_takes_the_dmfts_own_error_out(floor_over_last, noise_share):
    """The DMFT's sampling error enters every width's per-seed error in quadrature, sqrt(c / N +
    floor^2): over widths 1024-65536 at the demo's floor that fitted -0.33 (a FAIL of correct
    networks). It is taken out at each time before the fit (slope -0.5); where a width's error is
    within FLOOR_RATIO of the floor the check SKIPs, saying so, also where taking it out left
    errors of 0 and no fit (that SKIP said "not all finite and positive": a walkthrough)."""
    from validation.verdicts import FLOOR_RATIO

    rng = np.random.default_rng(0)
    t = np.linspace(0, 10, 6)
    y = rng.normal(size=200)
    f_inf = np.outer(1 - np.exp(-t), y)
    widths = [1024, 4096, 16384, 65536]
    floor = floor_over_last * 0.3 / np.sqrt(widths[-1]) * np.sqrt(np.mean(y ** 2))     # absolute
    se = np.full(f_inf.shape, floor) * (t > 0)[:, None]
    # (noise_share < 1: the DMFT's reported error overstates its noise, as 4 replicas' may)
    f_th = f_inf + noise_share * se * rng.normal(size=f_inf.shape)
    sol = _fake_solution(f_th, t, y)
    sol = dataclasses.replace(sol, error={"f_test": se, "f_train": se})
    runs = {n: _fake_run(f_inf[None] + (t > 0)[None, :, None] * 0.3 * np.sqrt(np.mean(y ** 2))
                         * rng.normal(size=(16,) + f_inf.shape) / np.sqrt(n), t, y, n) for n in widths}
    sc = validation.width_scaling(sol, runs)
    raw = validation.loglog_fit(sc["widths"], sc["per_seed_error"])
    if floor_over_last > 1:              # the floor above the widest networks' error: no fit is left
        assert sc["per_seed_fit"] is None
    else:
        assert raw.slope > -0.49 and abs(sc["per_seed_fit"].slope + 0.5) < 0.01, (raw.slope, sc["per_seed_fit"])
    sweep = types.SimpleNamespace(widths=widths, gamma0s=[1.0], scaling={1.0: sc}, solutions={1.0: sol},
                                  lazy={1.0: sol})
    spread = verdicts(sweep)[0]
    if np.min(sc["per_seed_error"]) < FLOOR_RATIO * sc["theory_floor"]:
        assert spread["verdict"] == "SKIP" and "DMFT's own standard error" in spread["detail"], spread
    else:
        assert spread["verdict"] == "PASS" and "taken out in quadrature" in spread["detail"], spread


@settings(max_examples=200, deadline=None)
@given(sigma=st.floats(0.0, 200.0), dof=st.one_of(st.floats(1e-3, 1e6), st.just(float("inf"))),
       tests=st.integers(1, 10 ** 6))
def test_z_bound_is_the_exact_bound_rounded_up_or_inf_past_the_floats(sigma, dof, tests):
    """z_bound rounded up to 3 digits is at or above the exact t bound and within one unit of it;
    where the normal tail beyond sigma underflows (sigma above ~36) it is inf (it raised an
    OverflowError from sigma ~38, after every network had trained, and read -inf at 36-38, a
    FAIL of every ensemble); sigma = 0 gives 0."""
    from scipy import stats

    from validation.verdicts import z_bound

    b = z_bound(sigma, dof, tests)
    with np.errstate(divide="ignore"):
        each = -np.expm1(np.log1p(-2 * stats.norm.sf(sigma)) / tests)
    exact = float(stats.norm.isf(each / 2) if np.isinf(dof) else stats.t.isf(each / 2, dof)) if each < 1 else 0.0
    if np.isinf(dof) and tests == 1:
        assert b == sigma
    elif each >= 1:                      # (sigma = 0, or so small that its tail rounds to 1)
        assert b == 0.0
    elif 0 < exact < np.inf:
        assert exact <= b and float(f"{b:.3g}") == b and b <= exact * (1 + 0.0101), (b, exact)
    else:
        assert b == np.inf, (b, exact)


@settings(max_examples=100, deadline=None)
@given(sigma=st.floats(0.5, 8.0), k=st.integers(1, 40), dof=st.one_of(st.integers(1, 10 ** 4), st.just(float("inf"))),
       tests=st.integers(1, 1000))
def test_q_bound_is_the_exact_f_bound_rounded_up(sigma, k, dof, tests):
    """q_bound is F(k, dof)'s (chi2(k) / k's at infinite dof) upper quantile at the Sidak share
    of the two-sided normal tail beyond sigma, rounded up to 3 digits (the tail halved, as for a
    two-sided t, raised the bound 10-60% and passed biased theories; only z_bound had a test of
    its value: a mutation audit)."""
    from scipy import stats

    from validation.verdicts import q_bound

    each = -np.expm1(np.log1p(-2 * stats.norm.sf(sigma)) / tests)
    exact = float(stats.chi2.isf(each, k) / k if np.isinf(dof) else stats.f.isf(each, k, dof))
    b = q_bound(sigma, k, dof, tests)
    assert exact <= b <= exact * (1 + 0.0101) and float(f"{b:.3g}") == b, (b, exact)


def test_agreement_fails_where_the_theory_is_not_finite_and_refuses_old_comparisons():
    """A theory NaN from a saved time on (a hand-built or partial Solution) PASSed both agreement
    checks on the finite times; now both FAIL saying from when. Comparisons built by an older
    version (no worst_rel_error, no dof) are refused by name, not a KeyError. A theory error
    unknown at one time leaves the spread fit on (nothing taken out there)."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 10, 11)
    y = rng.normal(size=40)
    sol = _fake_solution(np.outer(1 - np.exp(-0.3 * t), y), t, y)
    losses = sol.test_loss[None] * (1 + 1e-3 * rng.normal(size=(8, t.size)) * (t > 0))
    broken = sol.test_loss.copy()
    broken[6:] = np.nan
    bad = dataclasses.replace(sol, test_loss=broken)
    out = {c["name"]: c for c in verdicts(_loss_sweep(bad, losses * np.where(t >= 6, 1.2, 1.0)))}
    for name in ("agreement gamma0=1 N=256", "agreement z gamma0=1 N=256", "prediction gamma0=1 N=256"):
        assert out[name]["verdict"] == "FAIL" and "not finite from t = 6" in out[name]["detail"], out[name]
    sweep = _loss_sweep(sol, losses)
    comp = sweep.scaling[1.0]["comparisons"][256]
    del comp.summary["worst_rel_error"]
    with pytest.raises(dmft.InputError, match="^sweep: its comparisons were made by an older version"):
        verdicts(sweep)
    se = np.full(sol.f_test.shape, 1e-4)
    se[3] = np.nan
    sc = validation.width_scaling(dataclasses.replace(sol, error={"f_test": se}), _planted_runs(sol, y))
    assert sc["per_seed_fit"] is not None and np.isfinite(sc["per_seed_fit"].slope)


def _planted_runs(sol, y):
    rng = np.random.default_rng(1)
    return {n: _fake_run(sol.f_test[None] + 0.3 * rng.normal(size=(4,) + sol.f_test.shape) / np.sqrt(n)
                         * (sol.t > 0)[None, :, None], sol.t, y, n) for n in (16, 64, 256)}


def _loss_run(sol, losses, width=256, diverged=None):
    """A run whose per-seed test losses are `losses` (S, T) (its predictions the theory's)."""
    S = losses.shape[0]
    f = np.broadcast_to(sol.f_test, (S,) + sol.f_test.shape)
    return networks.Run(t=sol.t, f_train=f, f_test=f, train_loss=losses, test_loss=losses, ntk=None,
                        feature_kernel=None, gradient_kernel=None, alignment=np.zeros(losses.shape),
                        weight_change={"first_layer": np.zeros(losses.shape)},
                        info={"width": width, "seeds": S, "diverged": diverged or {}})


def _loss_sweep(sol, losses, widths=(16, 64, 256), **kw):
    runs = {n: _loss_run(sol, losses, n, **kw) for n in widths}
    return types.SimpleNamespace(widths=list(widths), gamma0s=[1.0], scaling={1.0: validation.width_scaling(sol, runs)},
                                 solutions={1.0: sol}, lazy={1.0: sol})


@pytest.mark.parametrize("seeds, replicas", [(2, None), (3, None), (5, None), (8, 4), (8, 8)])
def test_the_z_check_fails_correct_ensembles_at_its_nominal_rate(seeds, replicas):
    """Correct ensembles (seed losses scattered around the truth, independently at each of 5 saved
    times) FAIL the z check at the rate its sigma states, for the family of times: at sigma = 2,
    4.6%. A normal bound on the final z FAILed 2-seed ensembles at 29.5% there (13% at sigma = 5,
    where 6e-7 is claimed): z's se comes from the seeds, a t statistic. With a sampled theory (its
    error as large as the seeds' mean's) z has the fewer of the two dof: below nominal, 0.02 with 8
    replicas and 0 of 600 with 4 (3 dof where the seeds have 7: the price in power)."""
    rng = np.random.default_rng(seeds)
    t = np.linspace(0, 10, 6)
    y = rng.normal(size=40)
    exact = _fake_solution(np.outer(0.5 * (1 - np.exp(-t)), y), t, y)
    fails, draws = 0, 600
    for _ in range(draws):
        sol = exact
        if replicas:                       # the theory: a mean of replicas, its se from their spread
            reps = 0.01 / np.sqrt(seeds) * np.sqrt(replicas) * rng.normal(size=(replicas, t.size)) * (t > 0)
            se = reps.std(axis=0, ddof=1) / np.sqrt(replicas)
            loss = exact.test_loss + reps.mean(axis=0)
            sol = dataclasses.replace(exact, test_loss=loss, train_loss=loss,
                                      error={"test_loss": se, "train_loss": se},
                                      info={**exact.info, "error_dof": replicas - 1})
        losses = exact.test_loss[None] + 0.01 * rng.normal(size=(seeds, t.size)) * (t > 0)
        # (the z check reads the largest width alone: a sweep of that width gives every draw the
        # verdict and z of the three widths' sweep, bit for bit over 150 draws at (2, None) and
        # (8, 4), in a third of the compares)
        zc = [c for c in verdicts(_loss_sweep(sol, losses, widths=(256,)), {"agreement_sigma": 2.0})
              if c["name"].startswith("agreement z")][0]
        fails += zc["verdict"] == "FAIL"
    rate = fails / draws                         # nominal 0.0455 (binomial sd 0.0085)
    assert (0.0 if replicas == 4 else 0.005 if replicas else 0.025) <= rate <= 0.075, rate


@settings(max_examples=60, deadline=None)
@given(seeds=st.integers(1, 6), times=st.integers(1, 4), points=st.integers(1, 5), outputs=st.integers(1, 2),
       theory=st.sampled_from(["exact", "sampled", "one replica"]), lost=st.integers(0, 3), data=st.data())
def test_prediction_stats_against_the_seeds_covariance(seeds, times, points, outputs, theory, lost, data):
    """q, k and dof from the smaller Gram matrix (the seeds' or the points'; both occur here) equal those
    from their (points x points) covariance
    (np.cov and its eigenvalues, an independent route), over the seeds finite at each time; NaN
    exactly where fewer than two are or the theory's error is unknown; k between 1 and the seeds'
    rank + 1."""
    from validation.compare import prediction_stats

    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 31)))
    shape = (times, points, outputs)
    f_net = rng.normal(size=(seeds,) + shape) * data.draw(st.sampled_from([1e-3, 1.0, 1e3]))
    for _ in range(lost):                                       # a seed not finite at one time
        f_net[rng.integers(seeds), rng.integers(times)] = np.nan
    f_th = rng.normal(size=shape)
    se = {"exact": None, "sampled": rng.uniform(0.0, 0.5, size=shape), "one replica": np.nan}[theory]
    p = prediction_stats(f_net, f_th, se, 3, scale=2.0)
    huge = np.where(np.isfinite(f_net), f_net, 0.0)
    huge[0, -1] = 1e160                                     # a seed near overflow: NaN there, not an error
    assert np.isnan(prediction_stats(huge, f_th, se, 3)["q"][-1]) or seeds == 1
    for t in range(times):
        rows = f_net[:, t].reshape(seeds, -1)
        rows = rows[np.all(np.isfinite(rows), axis=1)]
        assert p["finite_seeds"][t] == len(rows)
        if len(rows) < 2 or theory == "one replica":
            assert np.isnan(p["q"][t]) and np.isnan(p["k"][t]) and np.isnan(p["dof"][t])
            continue
        c = np.atleast_2d(np.cov(rows.T)) / len(rows)           # the mean's covariance over the points
        b = 0.0 if se is None else float(np.sum(se[t] ** 2))
        d = rows.mean(axis=0) - f_th[t].ravel()
        total = np.trace(c) + b
        top = np.max(np.linalg.eigvalsh(c))
        np.testing.assert_allclose(p["q"][t], d @ d / total, rtol=1e-9)
        np.testing.assert_allclose(p["k"][t], min(total / (top + b), d.size), rtol=1e-9)
        assert p["dof"][t] == (min(len(rows) - 1, 3) if b > 0 else len(rows) - 1)
        np.testing.assert_allclose(p["noise"][t], np.sqrt(total / d.size) / 2.0, rtol=1e-9)
        assert 1 - 1e-9 <= p["k"][t] <= min(len(rows) - 1, d.size) + 1 + 1e-9


@pytest.mark.parametrize("spectrum", ["low rank", "smooth"])
def test_the_prediction_check_fails_correct_ensembles_below_its_nominal_rate(spectrum):
    """Correct ensembles (predictions scattered around the truth with correlations across points, as
    networks' are: a few strong directions, or a smooth kernel) against an exact theory or one of 4
    replicas as noisy as the seeds' mean: q > q_bound at sigma = 2 at most at the nominal 4.6%
    (measured 0-0.021 over 2-16 seeds: the bound is set by the noise's largest direction, see the
    far-tail test), and the mean of q is about 1 from 8 seeds on."""
    from validation.compare import prediction_stats
    from validation.verdicts import q_bound

    rng = np.random.default_rng(7)
    n = 40
    if spectrum == "low rank":
        u = rng.normal(size=(n, 3))
        cov = u @ u.T + 0.05 * np.eye(n)
    else:
        x = np.linspace(0, 1, n)
        cov = np.exp(-(x[:, None] - x[None]) ** 2 / 0.02) + 1e-6 * np.eye(n)
    chol = np.linalg.cholesky(cov)
    for seeds in (2, 4, 8, 16):
        for replicas in (None, 4):
            fails, qs, draws = 0, [], 400
            for _ in range(draws):
                f_net = (chol @ rng.normal(size=(n, seeds))).T[:, None]          # truth 0, one time
                th, se = np.zeros((1, n)), None
                if replicas:
                    reps = (chol @ rng.normal(size=(n, replicas))).T * np.sqrt(replicas / seeds)
                    th, se = reps.mean(axis=0)[None], reps.std(axis=0, ddof=1)[None] / np.sqrt(replicas)
                p = prediction_stats(f_net, th, se, None if replicas is None else replicas - 1)
                qs.append(p["q"][0])
                fails += p["q"][0] > q_bound(2.0, p["k"][0], p["dof"][0])
            assert fails / draws <= 0.0455 + 0.03, (seeds, replicas, fails / draws)   # binomial sd 0.0104
            if seeds >= 8:
                assert 0.85 <= np.mean(qs) <= 1.25, (seeds, replicas, np.mean(qs))


@pytest.mark.parametrize("weak, seeds", [(1.0, 8), (1.0, 32), (3.0, 32), (3.0, 96)])
def test_the_prediction_checks_far_tail_is_not_too_light(weak, seeds):
    """One strong direction of the seeds' noise over many weak ones (covariance u u^T + (weak /
    100) I over 100 points): the mean's |d|^2 is a X_1 + b X_99 (chi-squares), so the chance that
    q passes its bound, given the seeds' covariance estimate, is one quadrature. Averaged over that
    estimate it stays below the nominal rate at 3, 4 and 5 sigma. With k from the two moments
    (tr^2 / ||.||_F^2) it was 2.2-3.7x nominal at 3 sigma and 50-650x at 5 (a review)."""
    from scipy import integrate
    from scipy import special as sc
    from scipy import stats as ss

    from validation.compare import prediction_stats
    from validation.verdicts import q_bound

    rng = np.random.default_rng(int(weak * 1000) + seeds)
    n = 100
    top, bulk = 1 + weak / n, weak / n                  # the covariance's eigenvalues (its own basis)
    a, b = top / seeds, bulk / seeds                    # those of the mean's
    # the integrand's chi-square laws by scipy.stats's own formulas (chi2.sf = chdtrc, chi2.pdf =
    # exp of its _logpdf, the same operations in the same order: the same numbers), called as the
    # ufuncs themselves: scipy.stats's argument checks took 90% of the test's time at 70000 calls
    half, log_norm, log_two = (n - 1) / 2.0 - 1, sc.gammaln((n - 1) / 2.0), (np.log(2) * (n - 1)) / 2.0

    def beyond(c):                                      # P(a X_1 + b X_{n-1} > c)
        f = lambda y: sc.chdtrc(1, max(c - b * y, 0.0) / a) * np.exp(   # noqa: E731
            sc.xlogy(half, y) - y / 2.0 - log_norm - log_two)
        return integrate.quad(f, 0, c / b, limit=200, epsabs=0, epsrel=1e-8)[0] + ss.chi2.sf(c / b, n - 1)

    rates = {3.0: [], 4.0: [], 5.0: []}
    for _ in range(60):
        x = np.concatenate([np.sqrt(top) * rng.normal(size=(seeds, 1)),
                            np.sqrt(bulk) * rng.normal(size=(seeds, n - 1))], axis=1)[:, None]
        p = prediction_stats(x, np.zeros((1, n)))
        total = p["noise"][0] ** 2 * n                   # q's denominator, from the seeds
        for sigma in rates:
            rates[sigma].append(beyond(q_bound(sigma, p["k"][0], p["dof"][0]) * total))
    for sigma, r in rates.items():
        assert np.mean(r) <= 2 * ss.norm.sf(sigma), (sigma, np.mean(r) / (2 * ss.norm.sf(sigma)))


@pytest.mark.parametrize("seeds, replicas", [(8, 4), (32, 4), (8, 2), (4, 16)])
def test_the_z_and_prediction_laws_hold_whatever_the_dmfts_share(seeds, replicas):
    """A correct ensemble against a sampled DMFT: z's (and q's) variance is estimated as the
    seeds' part plus the DMFT's, of S - 1 and R - 1 dof, in a share rho that is itself only
    estimated. For a true rho the chance that a correct ensemble passes the bound is a quadrature
    over the two chi-squares: E[P(X_k / k > b V)], V = (1 - rho) X_{S-1} / (S - 1) + rho X_{R-1} /
    (R - 1). With the dof the code gives, it stays at or below nominal for z (k = 1) and the
    prediction check's F(k, .) (k = 5) at 3 and 5 sigma for rho from 0.01 to 0.99. The dof from the
    estimated share (Welch-Satterthwaite, capped at R - 1 above a share of 1/4: the rule before)
    reached, at 5 sigma and shares 0.9 / 0.99, 8.8x / 72x nominal with 8 seeds and 4 replicas,
    175x / 182x with 16 seeds, and 159x / 9.5e3x with 8 seeds and 2 replicas (this quadrature)."""
    from scipy import stats as ss

    from validation.compare import _loss_stats, prediction_stats
    from validation.verdicts import q_bound, z_bound

    rng = np.random.default_rng(seeds + replicas)
    z_dof = _loss_stats(np.zeros(2), rng.normal(size=(seeds, 2)), np.full(2, 0.3), True, replicas - 1)["dof"]
    q_dof = prediction_stats(rng.normal(size=(seeds, 1, 6)), np.zeros((1, 6)), np.full((1, 6), 0.3),
                             replicas - 1)["dof"][0]
    assert z_dof[0] == z_dof[1] == q_dof == min(seeds, replicas) - 1

    def chi2_nodes(nu, m=250):                    # X / nu at equal steps of log-probability, both tails
        s = np.linspace(0.0, 80.0, m)
        w = np.exp(-s) * (s[1] - s[0]) / 2
        w[[0, -1]] /= 2
        x = np.concatenate([ss.chi2.ppf(np.exp(-s) / 2, nu), ss.chi2.isf(np.exp(-s) / 2, nu)])
        return x / nu, np.concatenate([w, w])

    (x1, w1), (x2, w2) = chi2_nodes(seeds - 1), chi2_nodes(replicas - 1)
    weight = np.outer(w1, w2)
    for sigma in (3.0, 5.0):
        nominal = 2 * ss.norm.sf(sigma)
        for k, bound in ((1, z_bound(sigma, z_dof[0]) ** 2), (5, q_bound(sigma, 5.0, q_dof))):
            for rho in (0.01, 0.1, 0.5, 0.9, 0.99):
                v = (1 - rho) * x1[:, None] + rho * x2[None]
                rate = float(np.sum(weight * ss.chi2.sf(k * bound * v, k)))
                assert rate <= 1.001 * nominal, (sigma, k, rho, rate / nominal)


def test_the_prediction_check_sees_a_bias_the_loss_cannot():
    """Real networks against the DMFT: q is about 1 at every saved time and the check PASSes. A bias
    of the ensemble's predictions orthogonal to the residual leaves the loss as it is (agreement and
    z PASS) and FAILs the prediction check (the audit found such a 3% bias PASSing every check).
    The DMFT has as many replicas as the ensemble has seeds (the fewer set the dof: with 4 replicas
    the bound was 70200)."""
    data = dmft.tasks.teacher_network(D=8, P=32, P_test=120, width=3, activation="tanh", key=jax.random.key(0))
    sch = dmft.Schedule(eta0=0.5, steps=60, save_every=10)
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    sol = dmft.solve(model, data, sch, samples=16384, replicas=16, key=jax.random.key(1))
    run = networks.train(model, data, schedule=sch, width=512, seeds=16, key=jax.random.key(2))

    def sweep(r):
        return types.SimpleNamespace(widths=[512], gamma0s=[1.0], scaling={1.0: validation.width_scaling(sol, {512: r})},
                                     solutions={1.0: sol}, lazy={1.0: sol})

    out = {c["name"]: c for c in verdicts(sweep(run))}
    comp = sweep(run).scaling[1.0]["comparisons"][512]
    q = comp.prediction["q"][1:]
    assert np.all((0.2 < q) & (q < 4.0)), q
    assert out["prediction gamma0=1 N=512"]["verdict"] == "PASS", out["prediction gamma0=1 N=512"]
    f_th = np.asarray(sol.f_test).reshape(len(sol.t), -1)                        # (T, points)
    resid = np.asarray(data.y_test).reshape(1, -1) - f_th
    bias = np.random.default_rng(3).normal(size=resid.shape)
    bias -= resid * np.sum(bias * resid, axis=1, keepdims=True) / np.sum(resid * resid, axis=1, keepdims=True)
    bias *= 8 * comp.prediction["noise"][:, None] * comp.summary["error_scale"] / np.sqrt(
        np.mean(bias ** 2, axis=1, keepdims=True))                               # 8x the mean's noise (RMS)
    bias[0] = 0.0
    bias = bias.reshape(np.shape(sol.f_test))
    shifted = dataclasses.replace(run, f_test=np.asarray(run.f_test) + bias[None])
    out = {c["name"]: c for c in verdicts(sweep(shifted))}
    assert out["agreement gamma0=1 N=512"]["verdict"] == out["agreement z gamma0=1 N=512"]["verdict"] == "PASS"
    pred = out["prediction gamma0=1 N=512"]
    bound = float(pred["tolerance"].split()[-1])                                 # the bound applied, shown
    assert pred["verdict"] == "FAIL" and pred["value"] > max(30.0, bound), pred


def test_agreement_judges_every_saved_time_and_diverged_seeds():
    """The agreement was judged at the final save only: networks trained in time units 10% off
    meet the theory at the end (final relative error 0.002) and PASSed, though 10% off on the way.
    It is now the worst saved time t > 0. Seeds that diverge where the theory does not were
    dropped from the mean and the checks PASSed on the survivors; now the mean over all seeds is
    inf from the first divergence: agreement and z FAIL, naming the seeds."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 10, 11)
    y = rng.normal(size=40)
    sol = _fake_solution(np.outer(1 - np.exp(-0.3 * t), y), t, y)
    slow = np.mean((y[None] - np.outer(1 - np.exp(-0.3 * t / 1.1), y)) ** 2, axis=1)
    slow[-1] = sol.test_loss[-1] * 1.002                            # they meet at the end
    losses = slow[None] * (1 + 1e-3 * rng.normal(size=(8, t.size)) * (t > 0))
    out = {c["name"]: c for c in verdicts(_loss_sweep(sol, losses))}
    agree = out["agreement gamma0=1 N=256"]
    assert agree["verdict"] == "FAIL" and agree["value"] > 0.05 and "worst of the saved times" in agree["detail"]
    ok = sol.test_loss[None] * (1 + 1e-3 * rng.normal(size=(8, t.size)) * (t > 0))
    ok[:3, 6:] = np.nan                                             # three seeds diverge at t = 6
    out = {c["name"]: c for c in verdicts(_loss_sweep(sol, ok, diverged={0: 60, 1: 60, 2: 60}))}
    for name in ("agreement gamma0=1 N=256", "agreement z gamma0=1 N=256", "prediction gamma0=1 N=256"):
        c = out[name]
        assert c["verdict"] == "FAIL" and c["value"] == np.inf and c["shown"] == "inf", c
        assert "3 of 8 seeds at N=256 diverged (the first by t = 6)" in c["detail"], c
    fine = {c["name"]: c for c in verdicts(_loss_sweep(sol, ok[3:]))}
    assert fine["agreement gamma0=1 N=256"]["verdict"] == fine["agreement z gamma0=1 N=256"]["verdict"] == "PASS"


@settings(max_examples=40, deadline=None)
@given(final=st.floats(1e-12, 1.0), gap=st.floats(-0.5, 0.5), test=st.booleans())
def test_lazy_check_measures_the_gap_on_the_loss_scale(final, gap, test):
    """The lazy verdict's relative gap is taken to the lazy final loss, or to LAZY_FLOOR of the
    initial loss when the final one is below that: a train loss fitted to 1e-10 with a DMFT at
    2e-10 is no 100% gap (it FAILed before)."""
    from validation.verdicts import LAZY_FLOOR
    t = np.linspace(0, 10, 6)
    lazy_curve = 0.5 * (final / 0.5) ** (t / t[-1])                 # 0.5 -> final
    dmft_curve = lazy_curve.copy()
    dmft_curve[-1] = lazy_curve[-1] + gap * max(final, LAZY_FLOOR * 0.5)
    loss = lambda c: dict(test_loss=c, train_loss=c) if test else dict(test_loss=None, train_loss=c)  # noqa: E731
    sweep = types.SimpleNamespace(widths=[], gamma0s=[0.01], solutions={0.01: types.SimpleNamespace(**loss(dmft_curve))},
                                  lazy={0.01: types.SimpleNamespace(**loss(lazy_curve))})
    out = [c for c in verdicts(sweep, {"lazy_rel": 0.1}) if c["name"].startswith("lazy")]
    assert len(out) == 1
    assert out[0]["value"] == pytest.approx(abs(gap), abs=1e-4)
    assert out[0]["verdict"] == ("PASS" if abs(gap) <= 0.1 else "FAIL") or abs(abs(gap) - 0.1) < 1e-9
    assert ("initial loss" in out[0]["detail"]) == (final < LAZY_FLOOR * 0.5)


@settings(max_examples=40, deadline=None)
@given(move=st.one_of(st.floats(0.0, 10.0), st.just(0.1)), limit=st.sampled_from([0.05, 0.1, 1.0]),
       g0=st.floats(0.01, 4.0), gap=st.floats(0.0, 0.5))
@example(move=0.20025063315744276, limit=0.1, g0=0.20025063315744276, gap=0.0)    # bound 0.0999..., named 0.09
def test_lazy_check_is_skipped_where_the_lazy_limit_moves_the_weights(move, limit, g0, gap):
    """Where the lazy limit itself moves the first-layer weights by more than lazy_move, the
    smallest gamma0 is not near the lazy limit and the gap measures the richness: SKIP, naming the
    movement and the gamma0 below which it would be judged (`dmft solve --gamma0 1` FAILed it);
    at or below it the gap is judged as before."""
    t = np.linspace(0, 10, 6)
    lazy_curve = 0.5 * np.exp(-t / 5)
    dmft_curve = lazy_curve * (1 + gap * t / t[-1])
    lazy = types.SimpleNamespace(test_loss=lazy_curve, weight_change={"first_layer": move * t / t[-1]})
    sweep = types.SimpleNamespace(widths=[], gamma0s=[g0], solutions={g0: types.SimpleNamespace(test_loss=dmft_curve)},
                                  lazy={g0: lazy})
    (out,) = [c for c in verdicts(sweep, {"lazy_rel": 0.1, "lazy_move": limit}) if c["name"].startswith("lazy")]
    if move > limit:
        assert out["verdict"] == "SKIP" and out["value"] is None, out
        bound = float(re.search(r"add a gamma0 <= (\S+) to the sweep", out["detail"]).group(1))
        # rounded down (2 digits): the gamma0 it names is judged (0.94 for 0.9388 was skipped, an audit)
        assert g0 * limit / move * 0.9 <= bound <= g0 * limit / move and f"{move:.3g}" in out["detail"]
    else:
        assert out["verdict"] == ("PASS" if out["value"] <= 0.1 else "FAIL")
        assert out["value"] == pytest.approx(gap, rel=1e-12, abs=1e-15)


@settings(max_examples=300, deadline=None)
@given(x=st.floats(min_value=0.0, exclude_min=True, max_value=1e300), digits=st.integers(1, 6), up=st.booleans())
@example(x=5e-324, digits=2, up=False)                  # a subnormal: its unit underflowed (ZeroDivisionError)
@example(x=0.09999999999999999, digits=3, up=False)     # log10 reads -1.0: the message showed 0.099
def test_rounding_of_shown_limits_is_exact_in_decimal(x, digits, up):
    """The bounds and limits a verdict or a message shows (`verdicts.rounded`, the lazy check's
    gamma0, the step limit's example eta0) are the nearest `digits`-digit decimal on their side of
    x, for every positive float: below a power of ten and for subnormals too."""
    from decimal import Decimal

    from validation.verdicts import _rounded_down, rounded
    r = rounded(x, digits, "up" if up else "down")
    assert (r >= x) if up else (r <= x)
    q, d = Decimal(repr(r)), Decimal(repr(x))
    assert len(q.normalize().as_tuple().digits) <= digits, (x, r)
    if x >= 1e-300:                                      # (normal floats: no decimal of `digits` digits lies between)
        unit = Decimal(1).scaleb(d.adjusted() - digits + 1)
        assert (q - unit < d) if up else (q + unit > d), (x, r)
    if digits == 2 and not up:
        assert _rounded_down(x) == r
    for bad in (0.0, -x, float("nan"), float("inf")):
        with pytest.raises(dmft.InputError, match="positive and finite"):
            rounded(bad, digits, "up")


def test_lazy_limits_weight_movement_is_the_dmfts_near_lazy_and_grows_the_gap_as_its_square():
    """The SKIP's measure, the lazy limit's first-layer movement, is linear in gamma0 and equals the
    DMFT's own at small gamma0 (to 5%), and the DMFT's gap to the lazy limit is between 1 and 8
    times its square (4.0-5.2x measured here over 3 keys, 2.3-5.0x on the default and teacher
    tasks), so lazy_move = 0.1 keeps the judged gaps near 0.05 or below."""
    data = dmft.tasks.teacher_network(D=8, P=32, P_test=64, width=3, activation="tanh", key=0)
    sch = dmft.Schedule(eta0=0.5, steps=60, save_every=60)
    move, rows = {}, []
    for g in (0.05, 0.1, 0.4):
        model = dmft.TwoLayer(activation="tanh", gamma0=g)
        lz = dmft.solve(model, data, sch, method="lazy")
        sol = dmft.solve(model, data, sch, samples=2048, key=jax.random.key(0))
        move[g] = lz.weight_change["first_layer"][-1]
        gap = abs(sol.test_loss[-1] - lz.test_loss[-1]) / lz.test_loss[-1]
        rows.append((g, move[g], sol.weight_change["first_layer"][-1], gap))
    assert move[0.1] == pytest.approx(2 * move[0.05], rel=1e-10) and move[0.4] == pytest.approx(8 * move[0.05], rel=1e-10)
    for g, m, m_dmft, gap in rows:
        if g < 0.4:
            assert m_dmft == pytest.approx(m, rel=0.05), rows
        assert m ** 2 < gap < 8 * m ** 2, rows


def test_agreement_z_without_any_uncertainty_is_skipped():
    sweep = _fake_sweep((16, 64, 256), 0.01, seeds=1)                  # one seed, exact theory: se = 0
    for zc in [c for c in verdicts(sweep) if c["name"].startswith(("agreement z", "prediction"))]:
        assert zc["verdict"] == "SKIP" and zc["value"] is None and "fewer than two seeds" in zc["detail"], zc


@pytest.mark.parametrize("widths, fitted", [((64,), False), ((64, 256), False), ((16, 64, 256), True)])
def test_spread_check_needs_three_widths(widths, fitted):
    spread = [c for c in verdicts(_fake_sweep(widths, 0.0)) if c["name"].startswith("spread")][0]
    if fitted:
        assert spread["verdict"] in ("PASS", "FAIL") and "+- nan" not in spread["detail"]
    else:
        assert spread["verdict"] == "SKIP" and spread["value"] is None and "3 widths" in spread["detail"]


@settings(max_examples=30, deadline=None)
@given(decay=st.one_of(st.just(0.0), st.floats(1e-6, 1.0)), gap=st.floats(0.0, 0.5))
def test_lazy_check_is_skipped_under_weight_decay(decay, gap):
    """The lazy closed form has no weight decay (the sweep solves it without), so against a DMFT
    that decays the gap measures the decay: SKIP with the reason, not a FAIL (it FAILed at 0.05)."""
    t = np.linspace(0, 10, 6)
    lazy_curve = 0.5 * np.exp(-t / 5)
    dmft_curve = lazy_curve * (1 + gap * t / t[-1])
    sweep = types.SimpleNamespace(widths=[], gamma0s=[0.05],
                                  schedule=dmft.Schedule(eta0=0.5, steps=20, save_every=10, weight_decay=decay),
                                  solutions={0.05: types.SimpleNamespace(test_loss=dmft_curve)},
                                  lazy={0.05: types.SimpleNamespace(test_loss=lazy_curve)})
    (lazy,) = [c for c in verdicts(sweep, {"lazy_rel": 0.1}) if c["name"].startswith("lazy")]
    if decay > 0:
        assert lazy["verdict"] == "SKIP" and lazy["value"] is None and "weight_decay" in lazy["detail"], lazy
    else:
        assert lazy["verdict"] == ("PASS" if lazy["value"] <= 0.1 else "FAIL")
        assert lazy["value"] == pytest.approx(gap, rel=1e-12, abs=1e-15)


def _near(bound, how, k, eps):
    """A value at `bound`, k floats away from it, or a relative eps away."""
    if how == "rel":
        return bound * (1 + eps)
    v = bound
    for _ in range(abs(k)):
        v = np.nextafter(v, np.inf if k > 0 else -np.inf)
    return float(v)


def _reads(shown, tolerance):
    """The verdict a reader works out from a check's shown value and tolerance (exact decimals:
    the default 28 digits rounded 0.5 + 4.941e-324 to 0.5)."""
    from decimal import Decimal, localcontext

    with localcontext(prec=2000):
        v = Decimal(shown)
        if tolerance.startswith("|z| <= "):
            return abs(v) <= Decimal(tolerance[len("|z| <= "):])
        if tolerance.startswith("<= ") or tolerance.startswith("q <= "):
            return v <= Decimal(tolerance.split("<= ")[1])
        center, half = tolerance.split(" +- ")
        return abs(v - Decimal(center)) <= Decimal(half)


_short = st.builds(lambda m, e: float(f"{m}e{e}"), st.integers(1, 9999), st.integers(-5, 0))


@settings(max_examples=150, deadline=None)
@given(tols=st.tuples(_short, _short, _short, _short), center=st.sampled_from([-0.5, -1.0, -0.25, 0.5]),
       how=st.sampled_from(["ulps", "rel"]), k=st.integers(-3, 3), eps=st.floats(-1e-3, 1e-3),
       upper=st.booleans())
@example(tols=(1.0, 1.0, 0.5, 1.0), center=-0.5, how="ulps", k=1, eps=0.0, upper=True)   # slope 5e-324
def test_verdicts_follow_from_the_values_shown(tols, center, how, k, eps, upper):
    """Near its tolerance a check's value is shown with the digits its verdict needs, against the
    tolerance as it is compared: the console, report.md and report.json showed 0.0081 <= 0.0081
    FAIL (the verdict used 0.0081313, the value stored round(x, 4)). The value keeps full precision."""
    from decimal import Decimal

    from experiments.report import verdict_table
    from validation.fitting import LogLogFit
    from validation.verdicts import q_bound

    rel_tol, sigma, half, lazy_tol = tols
    edge = float(Decimal(repr(center)) + (1 if upper else -1) * Decimal(repr(half)))
    slope, rel = _near(edge, how, k, eps), _near(rel_tol, how, k, eps)
    z = (1 if upper else -1) * _near(sigma, how, k, eps)
    lazy_final = 1.0 + _near(lazy_tol, how, k, eps)              # the lazy final loss is 1: rel = its excess
    summary = {"loss": "test", "final_theory_loss": 1.0, "final_network_loss": 1.0 + rel, "final_network_std": 0.1,
               "final_rel_error": rel, "final_z": z, "final_se": 0.01, "final_finite_seeds": 4,
               "final_theory_se": 0.0, "worst_rel_error": rel, "worst_rel_t": 1.0, "first_diverged_t": None}
    stats = {"z": np.array([0.0, z]), "dof": np.array([np.inf, np.inf]), "se": np.array([0.0, 0.01]),
             "finite_seeds": np.array([4, 4])}           # (one time t > 0, dof = inf: the bound is sigma)
    qb = q_bound(sigma, 3.0, np.inf)                         # the prediction check's edge (3 effective points)
    q = _near(qb, how, k, eps) if np.isfinite(qb) else 1.0  # (no finite bound past the floats' tail)
    pred = {"q": np.array([0.0, q]), "k": np.array([np.nan, 3.0]), "dof": np.array([np.nan, np.inf]),
            "noise": np.array([np.nan, 0.01]), "split": "test", "points": 40}
    comp = types.SimpleNamespace(summary=summary, t=np.array([0.0, 1.0]), seeds=4, test_loss=stats, prediction=pred,
                                 mean_error=np.array([0.0, 0.01 * np.sqrt(q)]))
    sweep = types.SimpleNamespace(
        widths=[16, 64, 256], gamma0s=[1.0], schedule=None,
        scaling={1.0: {"per_seed_fit": LogLogFit(slope, 0.0, 0.05, (16.0, 256.0), 3), "theory_floor": 0.0,
                       "per_seed_error": np.array([0.1, 0.05, 0.02]),
                       "comparisons": {256: comp}}},
        solutions={1.0: types.SimpleNamespace(test_loss=np.array([2.0, 1.5, lazy_final]))},
        lazy={1.0: types.SimpleNamespace(test_loss=np.array([2.0, 1.5, 1.0]))})
    out = verdicts(sweep, {"agreement_rel": rel_tol, "agreement_sigma": sigma, "spread_slope": center,
                           "spread_slope_tol": half, "lazy_rel": lazy_tol})
    for c, line in zip(out, verdict_table(out).splitlines()[1:]):
        shown = re.split(r"\s{2,}", line)[1]                  # the console's value column
        assert _reads(shown, c["tolerance"]) == (c["verdict"] == "PASS"), (c, shown)
        assert shown == c["shown"] and len(shown) <= 24        # report.md shows the same
    assert [c["value"] for c in out] == [slope, rel, z, q, lazy_final - 1.0]       # full precision
    assert json.loads(json.dumps(out))[1]["value"] == rel


@settings(max_examples=40, deadline=None)
@given(losses=st.lists(st.one_of(st.floats(0.0, 10.0), st.just(float("nan"))), min_size=1, max_size=5))
def test_seed_stats_have_no_spread_without_two_finite_seeds(losses):
    """The report's mean +- std over seeds: the std of the finite seeds (ddof 1), None under two
    of them (it was 0.0: one seed's spread is unknown, not zero), the mean None without any."""
    from experiments.report import _seed_stats

    last = np.array(losses)
    mean, std = _seed_stats(np.stack([np.zeros_like(last), last], axis=1))
    alive = last[np.isfinite(last)]
    assert (mean is None) == (alive.size == 0) and (std is None) == (alive.size < 2)
    if alive.size:
        assert mean == pytest.approx(alive.mean())
    if alive.size > 1:
        assert std == pytest.approx(alive.std(ddof=1))


def test_one_replica_theory_error_is_unknown_not_zero():
    """A sampled DMFT of one replica has a sampling error nothing estimates: z and the DMFT error
    floor are unknown (NaN; the z check SKIPs, saying why), not computed as if the theory were exact.
    A quadrature rule or an exact method has none (0)."""
    one = _fake_sweep((16, 64, 256), 0.01, error_dof=0, sampler="stratified")
    s = one.scaling[1.0]["comparisons"][256].summary
    assert np.isnan(s["final_se"]) and np.isnan(s["final_z"]) and np.isnan(one.scaling[1.0]["theory_floor"])
    for zc in [c for c in verdicts(one) if c["name"].startswith(("agreement z", "prediction"))]:
        assert zc["verdict"] == "SKIP" and "one replica" in zc["detail"], zc
    for info in ({"error_dof": 0, "sampler": "quadrature"}, {}):
        sc = _fake_sweep((16, 64, 256), 0.01, **info).scaling[1.0]
        assert np.isfinite(sc["comparisons"][256].summary["final_z"]) and sc["theory_floor"] == 0.0


def _report_sweep(seeds, weight_decay=0.0, **theory_info):
    """A fake sweep that write_report takes: planted ensembles, a real model, data and schedule."""
    sweep = _fake_sweep((16, 64, 256), 0.01, seeds=seeds, **theory_info)
    sweep.model = dmft.TwoLayer("relu")
    sweep.data = dmft.tasks.single_index(D=4, P=8, P_test=40, degree=2, key=0)
    sweep.schedule = dmft.Schedule(eta0=0.5, steps=20, save_every=10, weight_decay=weight_decay)
    sweep.timings = {"theory_s": 0.0, "networks_s": 0.0}
    return sweep


def test_report_shows_no_spread_where_none_can_be_estimated(tmp_path):
    """One seed, a one-replica DMFT, weight decay: report.json holds None for the spreads and the
    DMFT error floor, report.md shows -, never 0 or nan; the agreement detail says why there is no
    std; the lazy column says it has no decay."""
    from experiments.report import write_report

    sweep = _report_sweep(seeds=1, weight_decay=0.05, error_dof=0, sampler="stratified")
    checks = verdicts(sweep)
    md, js = write_report(sweep, {}, str(tmp_path), checks, {}, environment={"x64": True})
    rep = json.loads(pathlib.Path(js).read_text())
    assert all(n["test_loss_std"] is None for n in rep["final"][0]["networks"].values())
    assert rep["width_scaling"][0]["theory_floor"] is None and rep["final"][0]["dmft_se"] is None
    text = pathlib.Path(md).read_text()
    assert assert_tables_are_well_formed(text) >= 3
    row = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert row and " +- 0 " not in row[0] and "nan" not in row[0] and row[0].count("+- -") == 4, row
    assert "lazy test loss (no decay)" in text and "nan" not in text.split("## Configuration")[0]
    # (a centered network's subtracted initial output under decay: a finite-width offset, said)
    assert "Under weight decay a centered network keeps the initial output it subtracts" in text
    plain = _report_sweep(seeds=1, error_dof=0, sampler="stratified")
    (tmp_path / "plain").mkdir()
    md, _ = write_report(plain, {}, str(tmp_path / "plain"), verdicts(plain), {}, environment={"x64": True})
    assert "centered network keeps" not in pathlib.Path(md).read_text()
    agreement = [c for c in checks if c["name"].startswith("agreement gamma0")][0]
    assert "no std over seeds" in agreement["detail"] and "nan" not in agreement["detail"]
    assert [c["verdict"] for c in checks if c["name"].startswith("lazy")] == ["SKIP"]


def _table_cells(line):
    return [c for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def assert_tables_are_well_formed(md: str):
    """Every Markdown table: header, a separator with as many cells, rows with as many cells."""
    lines = md.splitlines()
    tables = 0
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1]):
            n = len(_table_cells(lines[i]))
            assert len(_table_cells(lines[i + 1])) == n, (lines[i], lines[i + 1])
            assert all(c.strip() for c in _table_cells(lines[i])), f"empty header cell: {lines[i]}"
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                assert len(_table_cells(lines[j])) == n, (lines[i], lines[j])
                j += 1
            tables += 1
            i = j
        else:
            assert not (lines[i].startswith("|") and "---" not in lines[i] and i + 1 < len(lines)
                        and lines[i + 1].startswith("| ---")), lines[i]
            i += 1
    return tables


def test_table_checker_catches_a_short_separator():
    with pytest.raises(AssertionError):
        assert_tables_are_well_formed("| a | b |  | c |\n| --- | --- | --- |\n| 1 | 2 | 3 |\n")
    assert assert_tables_are_well_formed("| a | b \\| c |\n| --- | --- |\n| 1 | 2 |\n") == 1


def test_loglog_fit_rejects_bad_values():
    with pytest.raises(ValueError):
        validation.loglog_fit([1, 2], [1.0, -1.0])
    with pytest.raises(ValueError):
        validation.loglog_fit([1], [1.0])


# ------------------------------------------------------------------ configuration

def test_config_precedence_and_types(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nsteps = 40\nsave_every = 10\n[sweep]\ngamma0 = [1, 2]\n')
    cfg = load(f, ["train.steps=80", "model.activation=tanh"])
    assert cfg["train"]["steps"] == 80 and cfg["train"]["save_every"] == 10
    assert cfg["sweep"]["gamma0"] == [1.0, 2.0] and isinstance(cfg["sweep"]["gamma0"][0], float)
    assert cfg["model"]["activation"] == "tanh"
    full = load(None, full=True)
    assert full["simulate"]["widths"][-1] == 8192
    assert parse_override("theory.samples=2048") == {"theory": {"samples": 2048}}


@pytest.mark.parametrize("text, expected", [
    ("theory.samples=2048", {"theory": {"samples": 2048}}),
    (" theory . samples = 2048", {"theory": {"samples": 2048}}),
    ('scan.grid."model.gamma0"=[0.5, 1]', {"scan": {"grid.model.gamma0": [0.5, 1]}}),
    ("scan.grid.model.gamma0=[0.5, 1]", {"scan": {"grid.model.gamma0": [0.5, 1]}}),
    ("'model'.activation=relu", {"model": {"activation": "relu"}}),
    ("model.activation=a=b", {"model": {"activation": "a=b"}}),
])
def test_override_keys_read_as_toml_keys(text, expected):
    """A --set key is a TOML dotted key: quoted parts work as they do in a file."""
    assert parse_override(text) == expected


@pytest.mark.parametrize("given", ["model.gamma0=[2.0]", "'model'.gamma0=[2.0]", " model . gamma0 = [2.0]"])
def test_a_key_given_as_flag_and_with_set_is_refused(given):
    from experiments.config import flag_overrides
    with pytest.raises(ConfigError, match="model.gamma0: given both as a flag and with --set"):
        flag_overrides({"model.gamma0": [1.0], "train.steps": None}, [given])
    assert flag_overrides({"model.gamma0": [1.0], "train.steps": None}, ["train.eta0=0.5"]) == [
        "train.eta0=0.5", "model.gamma0=[1.0]"]


@pytest.mark.parametrize("text", ["theory=3", "theory.=3", ".samples=3", 'scan."".x=1', "no_equals"])
def test_override_without_a_section_and_key_is_refused(text):
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override(text)


@pytest.mark.parametrize("text, match", [
    ("[train]\nstepz = 3\n", "train.stepz"),
    ("[trian]\nsteps = 3\n", "trian"),
    ("[train]\nsteps = 'many'\n", "train.steps"),
    ("[train]\neta0 = 0\n", "train.eta0"),
    ("[model]\ncentered = 1\n", "model.centered"),
    ("[sweep]\ngamma0 = []\n", "sweep.gamma0"),
    ("[sweep]\ngamma0 = [1.0, -2.0]\n", r"sweep.gamma0\[1\]"),
    ("[simulate]\nwidths = [64, 0]\n", r"simulate.widths\[1\]"),
    ("[train]\nsteps = 10\nsave_every = 3\n", "save_every"),
    ("[theory]\nsamples = 100\nreplicas = 8\n", "theory.samples"),
    ("[model]\nreadout = 'frozen'\n", "model.readout"),
    ("[model]\nactivation = 'quadratic'\n", "model.eps"),
    ("[train\n", "not valid TOML"),
])
def test_config_errors_name_the_key(tmp_path, text, match):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load(f)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load("/nonexistent/dir/c.toml")


# ------------------------------------------------------------------ the command line

# the jobs below share these sizes (D, P, P_test, steps and saves, samples, the width 8 and two
# seeds): in one process the DMFT, lazy and network programs compile once for all of them
TINY = ["--gamma0", "0.05", "1", "--widths", "8", "16", "--seeds", "2", "--steps", "20",
        "--samples", "256", "--set", "task.D=4", "--set", "task.P=16", "--set", "task.P_test=20",
        "--set", "train.save_every=10", "--no-progress"]


def test_validate_end_to_end_writes_every_file(tmp_path, capsys):
    out = str(tmp_path / "v")
    assert cli.main(["validate", "--out", out] + TINY) == 0
    text = capsys.readouterr().out
    assert "spread gamma0=1" in text and "report:" in text
    for rel in ("run.json", "config.toml", "report.md", "report.json",
                "figures/losses.png", "figures/lazy_to_rich.png", "figures/width_scaling.png",
                "figures/relative_error.png", "theory/dmft_gamma0_1.npz", "theory/dmft_gamma0_1.json",
                "theory/lazy_gamma0_0.05.npz", "networks/gamma0_1_N16.npz", "networks/gamma0_0.05_N8.json"):
        assert os.path.exists(os.path.join(out, rel)), rel
    rep = json.loads(pathlib.Path(out, "report.json").read_text())
    assert {c["verdict"] for c in rep["checks"]} <= {"PASS", "FAIL", "SKIP"}
    md = pathlib.Path(out, "report.md").read_text()
    assert assert_tables_are_well_formed(md) >= 3
    assert "networks: mean +- std over seeds" in md and "DMFT test loss +- SE" in md
    assert "Arithmetic: float64" in md                       # the precision the job ran in
    assert rep["config"]["train"]["steps"] == 20 and "jax" in rep["environment"]
    man = json.loads(pathlib.Path(out, "run.json").read_text())
    assert man["status"] == "complete"
    sol = dmft.Solution.load(os.path.join(out, "theory", "dmft_gamma0_1"))
    assert sol.info["config"]["model"]["gamma0"] == 1.0
    # the same run again: nothing recomputed, exit 0
    assert cli.main(["validate", "--out", out] + TINY) == 0
    assert "already complete" in capsys.readouterr().err
    # a different run into the same directory: refused, nothing overwritten
    before = os.path.getmtime(os.path.join(out, "report.json"))
    assert cli.main(["validate", "--out", out] + TINY[:-1] + ["--set", "train.eta0=0.25"]) == 3
    assert "train.eta0" in capsys.readouterr().err
    assert os.path.getmtime(os.path.join(out, "report.json")) == before
    # --strict with an impossible tolerance: the run completes, the exit code says a check failed
    strict = str(tmp_path / "strict")
    assert cli.main(["validate", "--out", strict, "--strict", "--set", "check.agreement_rel=1e-12"]
                    + TINY) == 1


def test_solve_and_simulate_subcommands(tmp_path):
    common = ["--gamma0", "0.5", "--steps", "20", "--set", "train.save_every=10", "--set", "task.D=4",
              "--set", "task.P=16", "--set", "task.P_test=20", "--no-progress"]
    assert cli.main(["solve", "--out", str(tmp_path / "s"), "--samples", "256"] + common) == 0
    assert os.path.exists(tmp_path / "s" / "theory" / "dmft_gamma0_0.5.npz")
    assert not os.path.exists(tmp_path / "s" / "networks")
    md = (tmp_path / "s" / "report.md").read_text()
    assert assert_tables_are_well_formed(md) >= 2
    # solve trains no networks, and its report does not say it does
    assert "finite networks" not in md and "width []" not in md and "networks 0 s" not in md
    assert cli.main(["simulate", "--out", str(tmp_path / "n"), "--widths", "8", "--seeds", "2"] + common) == 0
    assert os.path.exists(tmp_path / "n" / "networks" / "gamma0_0.5_N8.npz")
    assert os.path.exists(tmp_path / "n" / "figures" / "networks.png")
    assert not os.path.exists(tmp_path / "n" / "theory")
    assert assert_tables_are_well_formed((tmp_path / "n" / "report.md").read_text()) >= 1
    assert "Arithmetic: float64" in (tmp_path / "n" / "report.md").read_text()


@pytest.mark.parametrize("argv, code", [
    (["validate", "--set", "train.stepz=1"], 2),
    (["validate", "--set", "train.steps=abc"], 2),
    (["validate", "--config", "/nonexistent.toml"], 2),
    (["validate", "--set", "simulate.widths=[7]", "--set", "simulate.antithetic=true"], 2),
    (["validate", "--set", "task.D=100000", "--set", "task.P=100000"], 2),   # too large for memory
])
def test_exit_codes_for_bad_configuration(tmp_path, argv, code, capsys):
    out = str(tmp_path / "x")
    assert cli.main(argv + ["--out", out, "--no-progress"]) == code
    assert "error" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "report.md"))


def test_foreign_output_directory_is_refused(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli.main(["solve", "--out", str(out), "--no-progress"] + TINY[:2]) == 3
    assert (out / "notes.txt").read_text() == "mine"


def test_numerical_failure_exit_code(tmp_path):
    argv = ["solve", "--out", str(tmp_path / "d"), "--gamma0", "1", "--eta0", "500", "--steps", "20",
            "--set", "train.save_every=10", "--set", "task.D=4", "--set", "task.P=16",
            "--set", "task.P_test=20", "--samples", "256", "--no-progress"]        # (TINY's sizes)
    # (full-batch, the lazy step's instability is refused by the preflight: a configuration error)
    assert cli.main(argv) == 2
    assert cli.main(argv + ["--set", "train.batch_size=4"]) == 4


# ------------------------------------------------------------------ your own data (npz)

def _npz(path, test="both"):
    rng = np.random.default_rng(0)        # (TINY's sizes: a solve of it reuses the programs of the jobs above)
    arrays = {"x_train": rng.normal(size=(16, 4)), "y_train": rng.normal(size=16)}
    if test in ("both", "x"):
        arrays["x_test"] = rng.normal(size=(20, 4))
    if test == "both":
        arrays["y_test"] = rng.normal(size=20)
    np.savez(path, **arrays)


@pytest.mark.parametrize("job", ["validate", "simulate"])
@pytest.mark.parametrize("test, missing", [("x", "y_test"), ("none", "x_test and y_test")])
def test_npz_without_test_targets_is_refused_before_compute(tmp_path, capsys, job, test, missing):
    data = tmp_path / "d.npz"
    _npz(data, test)
    out = tmp_path / "o"
    code = cli.main([job, "--out", str(out), "--no-progress", "--set", "task.name=npz",
                     "--set", f"task.path={data}", "--steps", "4", "--set", "train.save_every=2",
                     "--widths", "4", "--seeds", "2"])
    err = capsys.readouterr().err
    assert code == 2 and missing in err and str(data) in err and "task.P_test" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("task", ["npz", "single_index", "kumar_quadratic", "teacher_network"])
def test_config_toml_leaves_out_the_task_fields_its_task_does_not_read(tmp_path, task):
    """An npz run's config.toml listed D = 32, P = 256, P_test = 1000 (the built-in generator's
    defaults) beside the user's own data of other sizes; the fields a task does not read are
    now named in a comment instead, and the file still reloads as the same configuration."""
    from experiments.config import to_toml
    from experiments.problem import TASK_FIELDS, unread_task_keys
    _npz(tmp_path / "mine.npz")
    sets = [f"task.name={task}"] + ([f"task.path={tmp_path / 'mine.npz'}"] if task == "npz" else [])
    cfg = load(None, sets)
    text = to_toml(cfg, unread_task_keys(cfg))
    (tmp_path / "config.toml").write_text(text)
    assert load(tmp_path / "config.toml") == cfg
    section = text.split("[task]")[1].split("\n[")[0]
    unread = sorted(set(cfg["task"]) - TASK_FIELDS[task] - {"name", "path"} - ({"path"} if task == "npz" else set()))
    if task != "npz":
        unread.append("path")
    for key in cfg["task"]:
        assert (f"\n{key} = " in section) == (key not in unread), (key, section)
    assert f"# {', '.join(k for k in cfg['task'] if k in unread)}: not read by task.name = '{task}'" in section


def test_npz_path_is_relative_to_the_toml_file(tmp_path, monkeypatch, capsys):
    cfgdir, elsewhere = tmp_path / "cfg", tmp_path / "elsewhere"
    cfgdir.mkdir()
    elsewhere.mkdir()
    _npz(cfgdir / "mine.npz")
    (cfgdir / "my.toml").write_text('[task]\nname = "npz"\npath = "mine.npz"\n')
    monkeypatch.chdir(elsewhere)
    cfg = load(cfgdir / "my.toml")
    assert cfg["task"]["path"] == str(cfgdir / "mine.npz")            # the TOML's directory, absolute
    assert f'path = "{cfgdir / "mine.npz"}"' in to_toml(cfg)           # what config.toml records
    # --set: the current directory
    assert load(None, ["task.name=npz", "task.path=mine.npz"])["task"]["path"] == str(elsewhere / "mine.npz")
    # a missing file: the error shows the absolute path that was looked for
    (cfgdir / "bad.toml").write_text('[task]\nname = "npz"\npath = "nothere.npz"\n')
    assert cli.main(["solve", "--config", str(cfgdir / "bad.toml"), "--out", str(tmp_path / "o"),
                     "--no-progress"]) == 2
    assert str(cfgdir / "nothere.npz") in capsys.readouterr().err
    # a run from elsewhere reads the file beside the TOML and records its absolute path
    out = tmp_path / "run"
    assert cli.main(["solve", "--config", str(cfgdir / "my.toml"), "--out", str(out), "--no-progress",
                     "--gamma0", "1", "--steps", "20", "--set", "train.save_every=10", "--samples", "256"]) == 0
    assert str(cfgdir / "mine.npz") in (out / "config.toml").read_text()


def test_grok_accepts_every_registered_testbed():
    from experiments.grok import TESTBEDS

    parser = cli._parser()
    for name in TESTBEDS:
        assert parser.parse_args(["grok", "--testbed", name]).testbed == name
    assert "lyu" in TESTBEDS


def test_compile_cache_keeps_programs_and_the_same_numbers(tmp_path, capsys):
    """--compile-cache DIR: the first run fills DIR; a second run (a fresh process) reads it,
    rewrites none of it and gets the same numbers bit for bit."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cache = tmp_path / "xla"
    args = ["solve", "--gamma0", "1", "--steps", "20", "--set", "train.save_every=10", "--set", "task.D=4",
            "--set", "task.P=16", "--set", "task.P_test=20", "--samples", "256", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=root, MPLBACKEND="Agg")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    sols = []
    for run in range(2):
        out = tmp_path / f"s{run}"
        cmd = [sys.executable, "-m", "experiments.cli", *args, "--out", str(out), "--compile-cache", str(cache)]
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        sols.append(dmft.Solution.load(str(out / "theory" / "dmft_gamma0_1")))
        if run == 0:
            first = sorted((p.name, p.stat().st_mtime_ns) for p in cache.iterdir())
            assert first, "the first run cached nothing"
    # every program of the first run was read, not rebuilt (programs that compiled in under 0.2 s
    # are not kept, and on a loaded machine the second run may keep one more of those)
    assert set(first) <= {(p.name, p.stat().st_mtime_ns) for p in cache.iterdir()}
    np.testing.assert_array_equal(sols[1].test_loss, sols[0].test_loss)
    np.testing.assert_array_equal(sols[1].f_test, sols[0].f_test)
    assert cli.compile_cache_dir("off") is None and cli.compile_cache_dir(" OFF ") is None
    assert cli.compile_cache_dir(str(tmp_path / "c")) == str(tmp_path / "c")
    # a folder that cannot be made: said once, the cache stays off, the job goes on
    (tmp_path / "file").write_text("")
    shared = jax.config.jax_compilation_cache_dir         # (the tests' own cache, tests/conftest.py)
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        cli._use_compile_cache(str(tmp_path / "file" / "xla"))
        assert "compile cache off" in capsys.readouterr().err
        assert not jax.config.jax_compilation_cache_dir
    finally:
        jax.config.update("jax_compilation_cache_dir", shared)


def test_a_sweep_checks_every_solve_and_ensemble_before_any_runs(monkeypatch):
    """A solve refused only at a later point (mixed precision below its gamma0 floor; once, the
    lazy baseline of minibatch SGD, which the lazy method now solves) or an ensemble too large
    was refused only after the first DMFT solve had run; every solve and ensemble is planned
    first."""
    import dmft
    from validation import lazy_to_rich

    ran = []
    monkeypatch.setattr(dmft, "solve", lambda *a, **k: ran.append(k) or pytest.fail("a solve ran"))
    data = dmft.tasks.single_index(D=8, P=32, P_test=16, degree=2, key=0)
    with pytest.raises(dmft.InputError, match="mixed"):
        lazy_to_rich(dmft.TwoLayer("tanh"), data, [0.5, 0.01], [16, 32], 2,
                     schedule=dmft.Schedule(0.1, 50, 10, batch_size=8),
                     solve_kw=dict(samples=256, precision="mixed"))
    with pytest.raises(dmft.InputError, match="max_memory_gb|GiB"):
        lazy_to_rich(dmft.TwoLayer("tanh"), data, [0.5, 1.0], [16, 2 ** 22], 2,
                     schedule=dmft.Schedule(0.1, 50, 10), solve_kw=dict(samples=256))
    assert not ran


def test_an_unstable_lazy_step_fails_before_any_dmft_or_network_runs():
    """The lazy limits are solved first (seconds each): a step past the lazy step's stability
    (eta0 lambda_max / P > 2, here 6) fails there, naming it, where it was found only after each
    gamma0's DMFT (a walkthrough's finding), with nothing else run."""
    data = dmft.tasks.single_index(D=4, P=16, P_test=20, degree=2, key=0)
    m = dmft.TwoLayer("relu", gamma0=1.0)
    edge = 2.0 / dmft.solve(m, data, eta0=1.0, steps=1, save_every=1, method="lazy").info["lazy_eta0_stability"]
    seen = []
    with pytest.raises(dmft.DivergenceError, match=r"lazy limit at gamma0 = 1: .*lazy step is unstable.* = 6 > 2") as err:
        validation.lazy_to_rich(m, data, [1.0, 2.0], [16], 2, schedule=dmft.Schedule(3 * edge, 40, 10),
                                solve_kw=dict(samples=256), on_result=lambda *r: seen.append(r[:2]))
    assert seen == []
    # the advice gives the stable range, and no gamma0 (the lazy limit's step does not depend on it)
    assert f"Lower eta0 below {edge:.3g}, or check the data scale" in str(err.value), str(err.value)
    assert "eta0 or gamma0" not in str(err.value)
    # a stable step: each gamma0's lazy limit first, then its DMFT and networks
    seen.clear()
    validation.lazy_to_rich(m, data, [1.0, 2.0], [16], 2, schedule=dmft.Schedule(0.1 * edge, 20, 10),
                            solve_kw=dict(samples=256), on_result=lambda *r: seen.append(r[:2]))
    assert seen == [("lazy", 1.0), ("lazy", 2.0), ("dmft", 1.0), ("networks", 1.0), ("dmft", 2.0),
                    ("networks", 2.0)]


@pytest.mark.parametrize("method", ["lazy", "forward", None])
def test_lazy_check_is_skipped_when_the_theory_is_the_lazy_limit(method):
    """`dmft solve --set theory.method="lazy"` PASSed a lazy-limit check comparing the lazy limit
    with itself (value 0): SKIP with the reason; other methods are checked as before."""
    t = np.linspace(0, 10, 6)
    curve = 0.5 * np.exp(-t / 5)
    info = {} if method is None else {"method": method}
    sweep = types.SimpleNamespace(widths=[], gamma0s=[0.05],
                                  solutions={0.05: types.SimpleNamespace(test_loss=curve, info=info)},
                                  lazy={0.05: types.SimpleNamespace(test_loss=curve)})
    (lazy,) = [c for c in verdicts(sweep) if c["name"].startswith("lazy")]
    assert (lazy["verdict"] == "SKIP" and "compare it with itself" in lazy["detail"]) == (method == "lazy"), lazy


def test_a_lazy_theory_is_named_the_lazy_limit_not_the_dmft(tmp_path):
    """`dmft validate --set theory.method=lazy` labelled the lazy limit "DMFT" in its checks,
    report and figures (and FAILed it against rich networks under that name): every place now
    names the theory it ran, and the report says what that means."""
    from experiments.report import write_report
    from validation import lazy_to_rich, plots

    data = dmft.tasks.single_index(D=3, P=8, P_test=6, degree=2, key=0)
    sch = dmft.Schedule(0.5, 20, 10)
    cfg = load(None, ["theory.method='lazy'"])
    for method, name in (("lazy", "lazy limit"),):      # (a forward sweep's "DMFT": the other validate tests)
        sweep = lazy_to_rich(dmft.TwoLayer("tanh"), data, [1.0], [8], 2, schedule=sch,
                             solve_kw=dict(method=method, samples=64))
        agree = [c for c in verdicts(sweep) if c["name"].startswith("agreement")]
        assert len(agree) == 2 and all(f"loss: {name} " in c["detail"] for c in agree), agree
        assert all(("not the DMFT at this gamma0" in c["detail"]) == (method == "lazy") for c in agree)
        legend = plots.theory_vs_networks(sweep).axes[0].get_legend_handles_labels()[1]
        assert f"gamma0 = 1 ({name})" in legend, legend
        assert name in plots.lazy_to_rich_summary(sweep).axes[0].get_legend_handles_labels()[1]
        assert plots.width_scaling_plot(sweep)._suptitle.get_text().startswith(f"finite-width departure from the {name}")
        assert plots.relative_error_in_time(sweep).axes[0].get_ylabel().endswith(f"- {name}| / {name}")
        md, js = write_report(sweep, cfg, str(tmp_path), verdicts(sweep), {})
        rep = json.loads(pathlib.Path(js).read_text())          # the sweep's gamma0, not the model's default
        assert rep["gamma0"] == [1.0] and "gamma0" not in rep["model"] and rep["model"]["activation"] == "tanh"
        text = pathlib.Path(md).read_text()
        assert f"# Lazy-to-rich validation: {name} against finite networks" in text
        assert (f"| {name} test loss +- SE |" in text) and (f"| {name} alignment |" in text)
        assert ("every theory column, check and figure below holds the lazy limit" in text) == (method == "lazy")
        assert ("DMFT" not in text.split("## Configuration")[0].replace("DMFT units", "")
                .replace("not the DMFT at", "")) == (method == "lazy")


@pytest.mark.parametrize("sampler, samples, replicas, refused", [
    ("mc", 12, 4, None), ("mc", 10, 4, "multiple of theory.replicas \\(4\\) for theory.sampler = 'mc'"),
    ("stratified", 12, 4, "multiple of 2 x theory.replicas \\(8\\)")])
def test_theory_samples_follow_the_samplers_own_rule(sampler, samples, replicas, refused):
    """The configuration asked every sampler for a multiple of 2 x replicas: 'mc' pairs nothing
    (dmft.solve takes 12 nodes over 4 replicas)."""
    over = [f"theory.sampler={sampler!r}", f"theory.samples={samples}", f"theory.replicas={replicas}"]
    if refused is None:
        assert load(None, over)["theory"]["samples"] == samples
    else:
        with pytest.raises(ConfigError, match=refused):
            load(None, over)


def test_lazy_to_rich_under_sgd_trains_theory_lazy_limit_and_networks_on_one_sequence():
    """Minibatch SGD: the solve (its key given, no batch_key), its lazy limit and the networks get
    one batch sequence, the solve's default; the networks then approach that DMFT (they were on
    their own batches: 0.20 off at width 1024 against 0.022); two different keys are refused."""
    import dmft
    from dmft.schedule import default_batch_key
    from validation import lazy_to_rich

    data = dmft.tasks.single_index(D=4, P=12, P_test=8, degree=2, key=0)
    sch = dmft.Schedule(0.5, 20, 10, batch_size=3)
    key = jax.random.key(5)
    sweep = lazy_to_rich(dmft.TwoLayer("tanh"), data, [1.0], [8], 2, schedule=sch,
                         solve_kw=dict(samples=64, key=key))
    want = jax.random.key_data(default_batch_key(key)).tolist()
    assert sweep.solutions[1.0].info["batch_key"] == want
    assert sweep.lazy[1.0].info["batch_key"] == want
    assert sweep.runs[1.0][8].info["config"]["batch_key"] == want
    with pytest.raises(dmft.InputError, match="differ"):
        lazy_to_rich(dmft.TwoLayer("tanh"), data, [1.0], [8], 2, schedule=sch,
                     solve_kw=dict(samples=64, batch_key=jax.random.key(1)),
                     train_kw=dict(batch_key=jax.random.key(2)))


def test_full_with_a_file_names_the_preset_keys_the_file_overrides(capsys):
    """defaults, then the --full preset, then the file: `--config default.toml --full` took the
    file's 600 steps and 16384 samples without a word (the shipped grok_kumar.toml and dln.toml
    said --full ran the paper's sizes); the keys the file takes over are named on stderr."""
    from experiments.jobs import FULL
    cfg = load("scripts/configs/default.toml", [], full=True)
    err = capsys.readouterr().err
    assert cfg["train"]["steps"] == 600 and f"train.steps = 600 (preset {FULL['train']['steps']})" in err
    assert "the file wins over the preset" in err
    assert cfg["simulate"]["max_memory_gb"] == FULL["simulate"]["max_memory_gb"]     # not in the file
    load("scripts/configs/default.toml", [])                  # no --full, or --full alone: nothing said
    load(None, [], full=True)
    assert capsys.readouterr().err == ""


@settings(max_examples=40, deadline=None)
@given(replicas=st.integers(1, 12), seeds=st.integers(1, 12), sigma=st.sampled_from([2.0, 5.0]))
def test_validate_notes_a_dmft_with_fewer_replicas_than_seeds(replicas, seeds, sigma):
    """The z and prediction checks take the fewer of the seeds' and the replicas' dof: where the
    replicas are fewer (but more than one), the validate job says so before it computes, with the
    bound it will apply and the one as many replicas would give; otherwise it says nothing."""
    from experiments.jobs import replicas_note
    from validation.verdicts import z_bound

    cfg = load(None, [f"theory.replicas={replicas}", f"theory.samples={512 * replicas}", f"simulate.seeds={seeds}",
                      f"check.agreement_sigma={sigma}", "train.steps=100", "train.save_every=10"])
    note = replicas_note(cfg)
    if not 1 < replicas < seeds:
        assert note is None
        return
    assert note.startswith(f"note: theory.replicas = {replicas} is below simulate.seeds = {seeds}")
    assert f"about {z_bound(sigma, replicas - 1, 10):.3g} at {sigma:g} sigma instead of " \
           f"{z_bound(sigma, seeds - 1, 10):.3g}" in note
    assert f"theory.replicas = {seeds} with theory.samples = {512 * seeds}" in note


def test_validate_preflight_notes_only_a_sampled_dmft(capsys):
    """The note comes from the validate job's preflight, for a sampled DMFT only: an exact closure
    (a linear activation) has no replicas to count."""
    from experiments.jobs import preflight

    small = ["task.D=4", "task.P=16", "task.P_test=8", "train.steps=10", "train.save_every=5",
             "theory.samples=256", "simulate.widths=[16]", "simulate.seeds=4", "theory.replicas=2"]
    preflight(load(None, small), "validate")
    assert "note: theory.replicas = 2 is below simulate.seeds = 4" in capsys.readouterr().err
    preflight(load(None, small), "solve")
    preflight(load(None, small + ["model.activation='linear'"]), "validate")
    assert capsys.readouterr().err == ""


def test_preflight_notes_a_node_check_that_can_only_skip(capsys):
    """theory.node_check with one replica: the node bias verdict has no error over replicas and
    SKIPs (a walkthrough paid 3x the DMFT's cost for it unwarned); the solve and validate jobs
    say so before they compute, and not with two replicas or without the check."""
    from experiments.jobs import NODE_CHECK_ONE_REPLICA, preflight

    small = ["task.D=4", "task.P=16", "task.P_test=8", "train.steps=10", "train.save_every=5",
             "theory.samples=256", "simulate.widths=[16]", "simulate.seeds=1"]
    for job in ("solve", "validate"):
        preflight(load(None, small + ["theory.replicas=1", "theory.node_check=true"]), job)
        assert NODE_CHECK_ONE_REPLICA in capsys.readouterr().err
        preflight(load(None, small + ["theory.replicas=2", "theory.node_check=true"]), job)
        preflight(load(None, small + ["theory.replicas=1"]), job)
        assert NODE_CHECK_ONE_REPLICA not in capsys.readouterr().err


def test_the_checks_say_when_the_dmfts_error_sets_their_dof():
    """With fewer replicas than seeds the z and prediction checks take the replicas' dof, and
    their details say so; with as many, they say nothing of it."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 10, 6)
    y = rng.normal(size=40)
    exact = _fake_solution(np.outer(0.5 * (1 - np.exp(-t)), y), t, y)
    losses = exact.test_loss[None] + 0.01 * rng.normal(size=(8, t.size)) * (t > 0)
    for replicas, said in ((4, True), (8, False)):
        se = np.full(t.size, 0.002) * (t > 0)
        sol = dataclasses.replace(exact, error={"test_loss": se, "train_loss": se, "f_test": np.full(
            exact.f_test.shape, 1e-3), "f_train": np.full(exact.f_train.shape, 1e-3)},
                                  info={**exact.info, "error_dof": replicas - 1})
        out = {c["name"].split(" gamma0")[0]: c for c in verdicts(_loss_sweep(sol, losses))}
        for name in ("agreement z", "prediction"):
            note = f"own error has {replicas - 1} degrees of freedom, fewer than the seeds' 7"
            assert (note in out[name]["detail"]) == said, (name, out[name]["detail"])


def test_a_check_is_judged_at_the_time_nearest_its_bound_not_at_its_largest_value():
    """Times with different degrees of freedom have different bounds (at 3 sigma over 2 times:
    11.7 at 3 dof, 3.3 at 100): |z| = 4 at the first passes where 3.5 at the second fails, and the
    check is judged at the second (judging the largest |z| missed that FAIL: a mutation audit);
    sigma = inf (every bound inf) judges the largest value; only the judged times count."""
    from validation.verdicts import _nearest_bound, z_bound
    bounds = np.array([z_bound(3.0, 3, 2), z_bound(3.0, 100, 2)])
    assert bounds[0] > 4.0 and 3.5 > bounds[1]
    ok = np.array([True, True])
    assert _nearest_bound(np.array([4.0, 3.5]), bounds, ok, 3.0) == 1
    assert _nearest_bound(np.array([11.0, 1.0]), bounds, ok, 3.0) == 0
    assert _nearest_bound(np.array([4.0, 3.5]), np.array([np.inf, np.inf]), ok, np.inf) == 0
    assert _nearest_bound(np.array([4.0, 3.5]), bounds, np.array([True, False]), 3.0) == 0


@settings(max_examples=25, deadline=None)
@given(tiny=st.floats(1e-30, 1e-4), seed=st.integers(0, 2 ** 31 - 1))
def test_the_agreement_error_of_losses_at_rounding_is_taken_against_a_floor(tiny, seed):
    """On a realizable task both losses fall to rounding (1.1e-27 against 8.5e-26 from 0.744: a
    relative error of 74 FAILed correct networks, a walkthrough): below AGREEMENT_FLOOR of the
    initial loss the difference is taken relative to that floor. Above it nothing changes: a
    network loss 4x the theory's reads a relative error of 3."""
    from validation.compare import AGREEMENT_FLOOR
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 10, 6)
    y = rng.normal(size=40)
    later = (t > 0)[:, None]
    sol = _fake_solution(y[None] * (1 - np.where(later, tiny, 1.0)), t, y)
    L0 = float(sol.test_loss[0])
    for k, expect in ((1.0, 3.0), (10.0, None)):       # networks' residual 2x, then 10x wobbling by seed
        wobble = 1 + 0.01 * rng.normal(size=(4, 1, 1)) if expect is None else np.ones((4, 1, 1))
        f = y[None, None] * (1 - np.where(later, 2 * k * tiny, 1.0)[None] * wobble)
        s = validation.compare(sol, _fake_run(f, t, y, 64)).summary
        if expect is not None and tiny ** 2 * np.mean(y ** 2) > 10 * AGREEMENT_FLOOR * L0:
            assert s["worst_rel_error"] == pytest.approx(expect, rel=1e-6)
        theory_late, mean_late = float(sol.test_loss[-1]), float(np.mean(_fake_run(f, t, y, 64).test_loss[:, -1]))
        bound = abs(mean_late - theory_late) / max(theory_late, AGREEMENT_FLOOR * L0)
        assert s["worst_rel_error"] == pytest.approx(bound, rel=1e-6)
        if theory_late < 1e-3 * AGREEMENT_FLOOR * L0 and mean_late < 1e-3 * AGREEMENT_FLOOR * L0:
            assert s["worst_rel_error"] < 1e-2                 # two losses at rounding agree


def test_report_says_uncentered_networks_start_from_their_initial_output(tmp_path):
    """An uncentered network's random initial output (variance E[a^2 phi^2] / (gamma0^2 N)) is a
    finite-width offset the DMFT lacks: a walkthrough's erf network with fixed readouts at gamma0 =
    0.05 FAILed agreement at 4.0 (initial test-loss excess 1.27 at N = 128 against 1.41 from that
    formula, 6.7 and 2.9 at N = 32 and 64) and report.md said nothing of why."""
    from experiments.report import write_report

    sweep = _report_sweep(seeds=2)
    sweep.model = dmft.TwoLayer("relu", centered=False)
    md, _ = write_report(sweep, {}, str(tmp_path), verdicts(sweep), {}, environment={"x64": True})
    assert "Not centered: each network starts from its random initial output" in pathlib.Path(md).read_text()
    plain = _report_sweep(seeds=2)
    (tmp_path / "plain").mkdir()
    md, _ = write_report(plain, {}, str(tmp_path / "plain"), verdicts(plain), {}, environment={"x64": True})
    assert "Not centered" not in pathlib.Path(md).read_text()


@pytest.mark.parametrize("kappa", [0.0, 0.1])
def test_simulation_report_says_the_weight_decay(tmp_path, kappa):
    """dmft simulate's report.md named the task, model, SGD and units but not train.weight_decay
    (a walkthrough: relu ensembles at kappa = 0.1 read as plain gradient descent outside the
    configuration block); it is said beside the units, and nothing is said without decay."""
    from experiments.config import defaults
    from experiments.jobs import SCHEMA
    from experiments.report import write_simulation_report

    data = dmft.tasks.single_index(D=4, P=8, P_test=10, degree=2, key=0)
    t = np.array([0.0, 1.0])
    f = np.zeros((2, 2, 10))
    run = networks.Run(t=t, f_train=np.zeros((2, 2, 8)), f_test=f, train_loss=np.ones((2, 2)),
                       test_loss=np.ones((2, 2)), ntk=None, feature_kernel=None, gradient_kernel=None,
                       alignment=np.zeros((2, 2)), weight_change={"first_layer": np.zeros((2, 2))},
                       info={"width": 16, "seeds": 2, "diverged": {}, "wall_s": 0.1})
    cfg = defaults(SCHEMA)
    cfg["train"]["weight_decay"] = kappa
    md, _ = write_simulation_report({1.0: {16: run}}, dmft.TwoLayer("relu"), data, cfg, str(tmp_path), {})
    head = pathlib.Path(md).read_text().split("## Configuration")[0]
    assert ("with weight decay 0.1 per unit time" in head) == (kappa > 0), head
