"""A mutation audit's tests of validation.fitting, validation.compare, validation.verdicts and
networks.train: each pins a number or a verdict that a plausible one-token bug changed while the
rest of the suite passed. Planted ensembles with known answers, each value checked against an
independent computation (numpy/scipy/autodiff directly) or a closed form; each test takes about a
second at most (the networks' ones compile a small program)."""

import pathlib
import tomllib
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import dmft
import dmft.runner as runner
import networks
import validation
from dmft.errors import InputError
from networks.train import init_params
from validation.compare import prediction_stats
from validation.fitting import LogLogFit, loglog_fit
from validation.verdicts import TOLERANCES, checks, z_bound

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _solution(f, t, y, error=None, test_loss=None, **info):
    T = len(t)
    loss = np.mean((y[None] - f) ** 2, axis=1) if test_loss is None else np.asarray(test_loss, float)
    return dmft.Solution(t=t, f_train=f, f_test=f, train_loss=loss, test_loss=loss, ntk=None,
                         feature_kernel=None, gradient_kernel=None, alignment=np.zeros(T),
                         weight_change={"first_layer": np.zeros(T)}, error=error,
                         info={"target_rms": {"test": float(np.sqrt(np.mean(y ** 2)))}, **info})


def _run(f, t, y, width, losses=None, diverged=None):
    S = f.shape[0]
    loss = np.mean((y[None, None] - f) ** 2, axis=2) if losses is None else np.asarray(losses, float)
    return networks.Run(t=t, f_train=f, f_test=f, train_loss=loss, test_loss=loss, ntk=None,
                        feature_kernel=None, gradient_kernel=None, alignment=np.zeros((S, len(t))),
                        weight_change={"first_layer": np.zeros((S, len(t)))},
                        info={"width": width, "seeds": S, "diverged": diverged or {}})


def _sweep(sol, runs):
    return types.SimpleNamespace(widths=sorted(runs), gamma0s=[1.0], solutions={1.0: sol}, lazy={1.0: sol},
                                 scaling={1.0: validation.width_scaling(sol, runs)})


def _by_name(out):
    return {c["name"].split(" gamma0")[0]: c for c in out}


T6 = np.linspace(0.0, 5.0, 6)
Y = np.random.default_rng(0).normal(size=12)
F6 = np.outer(0.5 * (1 - np.exp(-T6)), Y)              # 0 at t = 0, as a centered model; final loss ~ y^2 / 4
RMS = float(np.sqrt(np.mean(Y ** 2)))


# ------------------------------------------------------------------ fitting

@settings(max_examples=40, deadline=None)
@given(x=st.lists(st.floats(1.0, 1e4), min_size=2, max_size=2, unique=True).filter(
           lambda v: abs(np.log(v[0] / v[1])) > 1e-3),
       y=st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=2))
def test_a_two_point_fit_is_the_line_through_them_with_no_error_estimate(x, y):
    """Two points: the slope is log(y1/y0)/log(x1/x0) and the standard error NaN (documented), with
    no RuntimeWarning (the residual variance on 0 dof read inf or NaN, with a division warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = loglog_fit(x, y)
    assert fit.slope == pytest.approx(np.log(y[1] / y[0]) / np.log(x[1] / x[0]), rel=1e-9, abs=1e-9)
    assert np.isnan(fit.stderr) and np.isnan(fit.half_width()) and "(no error estimate)" in fit.describe()


@settings(max_examples=30, deadline=None)
@given(perm=st.permutations(list(range(5))), slope=st.floats(-2.0, 2.0), c=st.floats(0.1, 10.0))
def test_a_fit_of_unsorted_points_reports_their_range_and_predicts_the_law(perm, slope, c):
    """x_range is (min x, max x) whatever the order of the points (reports and the grokking job
    show it), and predict() is the fitted law c x^slope, at the points and between them."""
    x = np.array([16.0, 32.0, 64.0, 128.0, 256.0])[perm]
    fit = loglog_fit(x, c * x ** slope)
    assert fit.x_range == (16.0, 256.0) and fit.n == 5
    new = np.array([10.0, 50.0, 1000.0])
    np.testing.assert_allclose(fit.predict(new), c * new ** slope, rtol=1e-9)


@pytest.mark.parametrize("where", ["x", "y"])
def test_a_zero_value_is_refused_not_fitted_as_nan(where):
    """An error of exactly 0 (log -inf) is refused like a negative one; it was fitted to a NaN
    slope without a word where only y < 0 was refused."""
    x, y = [1.0, 2.0, 4.0], [1.0, 0.5, 0.25]
    (x if where == "x" else y)[1] = 0.0
    with pytest.raises(InputError, match="positive finite"):
        loglog_fit(x, y)


# ------------------------------------------------------------------ compare: errors and z

def test_relative_errors_are_to_the_theory_and_the_worst_is_over_t_above_zero():
    """rel_error = |mean over seeds - theory| / theory at each time, and the worst (the agreement
    check's value) is taken over t > 0: uncentered networks (f(theta_0) != 0) start off the
    theory's loss at t = 0 by their initial function, which is not a disagreement."""
    rng = np.random.default_rng(1)
    f_net = F6[None] + 0.05 + 0.02 * rng.normal(size=(4,) + F6.shape)
    f_net[:, 0] += 1.5 * rng.normal(size=(4, 1))             # uncentered: a large f(theta_0)
    sol = _solution(F6, T6, Y)
    c = validation.compare(sol, _run(f_net, T6, Y, 64))
    losses = np.mean((Y - f_net) ** 2, axis=2)
    rel = np.abs(losses.mean(0) - sol.test_loss) / sol.test_loss
    np.testing.assert_allclose(c.test_loss["rel_error"], rel, rtol=1e-12)
    assert rel[0] > 10 * rel[1:].max()                        # (the planted t = 0 gap dominates)
    assert c.summary["worst_rel_error"] == pytest.approx(rel[1:].max(), rel=1e-12)
    assert c.summary["worst_rel_t"] == T6[1 + int(np.argmax(rel[1:]))]
    assert c.summary["max_rel_error"] == pytest.approx(rel[1:].max(), rel=1e-12)


def test_time_means_of_the_errors_are_over_t_above_zero():
    """The per-seed error that width_scaling fits is the mean over saved times t > 0 (at t = 0 a
    centered network is exact, and counting it scaled every width's error by (T - 1) / T, which
    moved the spread check's floor test): seeds +-0.1 off at every point give 0.1 / rms(y)."""
    off = 0.1 * (T6 > 0)[:, None]
    f_net = np.stack([F6 + off, F6 - off])
    c = validation.compare(_solution(F6, T6, Y), _run(f_net, T6, Y, 64))
    assert c.summary["time_mean_per_seed_error"] == pytest.approx(0.1 / RMS, rel=1e-12)
    assert c.summary["time_mean_mean_error"] == pytest.approx(0.0, abs=1e-15)


def test_one_diverged_seed_fails_the_agreement_checks():
    """One seed of eight NaN from a save on (networks.train's record of a divergence) makes the mean
    over all seeds infinite there: agreement, z and prediction FAIL naming it (three such seeds were
    tested; one was let through as 'the finite seeds' mean')."""
    rng = np.random.default_rng(2)
    sol = _solution(F6, T6, Y)
    runs = {}
    for n in (16, 64, 256):
        f = F6[None] + 0.01 * rng.normal(size=(8,) + F6.shape) * (T6 > 0)[None, :, None]
        f[0, 3:] = np.nan
        runs[n] = _run(f, T6, Y, n, diverged={0: 30})
    c = runs[256]
    out = _by_name(checks(_sweep(sol, runs)))
    for name in ("agreement", "agreement z", "prediction"):
        assert out[name]["verdict"] == "FAIL" and out[name]["value"] == np.inf, out[name]
        assert f"1 of 8 seeds at N=256 diverged (the first by t = {T6[3]:g})" in out[name]["detail"], out[name]
    assert validation.compare(sol, c).summary["first_diverged_t"] == T6[3]


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(1.001, 1.08) | st.floats(0.93, 0.999))
def test_targets_a_few_percent_off_are_refused(scale):
    """Both centered (0 at t = 0): their initial losses are the targets' mean squares, equal to
    rounding for the same data. Targets scaled by 0.1-8% (loss 0.2-17% off) are other data."""
    f_net = np.stack([F6, F6])
    with pytest.raises(InputError, match="different training data"):
        validation.compare(_solution(F6, T6, Y), _run(f_net, T6, Y * scale, 64))


def _flat_at(j, seeds=4, exact_value=0.25):
    """A theory whose test loss at save j is `exact_value` (a dyadic number: sums of it are exact) and
    seeds whose losses there equal it exactly (no spread: se = 0), scattered elsewhere."""
    rng = np.random.default_rng(3)
    th = np.mean((Y[None] - F6) ** 2, axis=1)
    th[j] = exact_value
    losses = th[None] * (1 + 0.01 * rng.normal(size=(seeds, T6.size)) * (T6 > 0))
    losses[:, j] = exact_value
    return _solution(F6, T6, Y, test_loss=th), losses


def test_an_ensemble_without_spread_against_an_exact_theory_is_not_judged():
    """Seeds identical to an exact theory at every save: se = 0, nothing to measure z by. z has no
    degrees of freedom there (dof NaN) and the z and prediction checks SKIP, saying why; they were
    PASSed with z = 0 (dof kept) or FAILed against a NaN bound (the dof test dropped)."""
    th = np.mean((Y[None] - F6) ** 2, axis=1)
    losses = np.broadcast_to(th, (2, T6.size))              # (two seeds: their mean is exactly theirs)
    sol = _solution(F6, T6, Y)
    runs = {n: _run(np.broadcast_to(F6, (2,) + F6.shape).copy(), T6, Y, n, losses=losses) for n in (16, 64, 256)}
    c = validation.compare(sol, runs[256])
    assert np.all(c.test_loss["se"] == 0) and np.all(np.isnan(c.test_loss["dof"]))
    out = _by_name(checks(_sweep(sol, runs)))
    for name in ("agreement z", "prediction"):
        assert out[name]["verdict"] == "SKIP" and out[name]["value"] is None, out[name]
        assert "no spread over seeds and an exact theory" in out[name]["detail"], out[name]


def test_the_z_bound_is_shared_among_the_judged_times_only():
    """Sidak's share of the tail goes to the saved times z is judged at: a time with no spread and
    an exact theory (se = 0) is not one of them. 4 judged of 5 times t > 0, 4 seeds (3 dof), at 3
    sigma: the exact t bound, rounded up to 3 digits."""
    sol, losses = _flat_at(2)
    runs = {n: _run(np.broadcast_to(F6, (4,) + F6.shape).copy(), T6, Y, n, losses=losses) for n in (16, 64, 256)}
    z = validation.compare(sol, runs[256]).test_loss["z"][1:]
    judged = int(np.sum(np.isfinite(z) & np.isfinite(validation.compare(sol, runs[256]).test_loss["dof"][1:])))
    assert judged == 4
    each = 1 - (1 - 2 * stats.norm.sf(3.0)) ** (1 / judged)
    exact = stats.t.isf(each / 2, 3)
    zc = _by_name(checks(_sweep(sol, runs), {"agreement_sigma": 3.0}))["agreement z"]
    b = float(zc["tolerance"].split()[-1])
    assert exact <= b <= exact * 1.01 and float(f"{b:.3g}") == b, (b, exact)
    assert b == z_bound(3.0, 3, 4) != z_bound(3.0, 3, 5)


# ------------------------------------------------------------------ compare: dof and prediction_stats

def test_a_theory_error_without_recorded_dof_has_one():
    """A theory with a standard error but no error_dof recorded (a hand-built or older Solution):
    z's dof and the prediction check's are 1, the fewest, not the seeds' 7."""
    rng = np.random.default_rng(4)
    se = np.full(F6.shape, 1e-3)
    sol = _solution(F6, T6, Y, error={"f_test": se, "f_train": se, "test_loss": np.full(6, 1e-3),
                                      "train_loss": np.full(6, 1e-3)})
    f_net = F6[None] + 0.01 * rng.normal(size=(8,) + F6.shape) * (T6 > 0)[None, :, None]
    c = validation.compare(sol, _run(f_net, T6, Y, 64))
    assert np.all(c.test_loss["dof"][1:] == 1) and np.all(c.prediction["dof"][1:] == 1)
    assert prediction_stats(f_net, F6, se, None)["dof"][-1] == 1


def test_a_seed_with_one_nonfinite_prediction_is_left_out_at_that_time():
    """A seed with a NaN at one point of a save is not finite there: left out of q, k and dof,
    which are those of the other seeds (np.cov over the points), not NaN for the whole save."""
    rng = np.random.default_rng(5)
    f_net = rng.normal(size=(5, 1, 6))
    f_net[2, 0, 4] = np.nan
    th = rng.normal(size=(1, 6))
    p = prediction_stats(f_net, th)
    rows = np.delete(f_net[:, 0], 2, axis=0)
    c = np.cov(rows.T) / 4
    d = rows.mean(0) - th[0]
    assert p["finite_seeds"][0] == 4 and p["dof"][0] == 3
    np.testing.assert_allclose(p["q"][0], d @ d / np.trace(c), rtol=1e-10)
    np.testing.assert_allclose(p["k"][0], np.trace(c) / np.linalg.eigvalsh(c).max(), rtol=1e-10)


# ------------------------------------------------------------------ width_scaling

def test_the_floor_is_taken_out_where_a_time_is_below_it():
    """The DMFT's own error is taken out of each time's per-seed error in quadrature, sqrt(max(e^2 -
    floor^2, 0)): at a time where the networks' error is below the floor that time counts 0 (it was
    NaN, and no slope was fitted: the spread check SKIPped). Closed form from the planted errors."""
    rng = np.random.default_rng(6)
    floor_t = np.array([0.0, 0.5, 0.01, 0.01, 0.01, 0.01]) * RMS     # the floor beats every width at t_1
    se = np.broadcast_to(floor_t[:, None], F6.shape)
    sol = _solution(F6, T6, Y, error={"f_test": se, "f_train": se})
    runs, expected = {}, []
    for n in (64, 256, 1024):
        f = F6[None] + (T6 > 0)[None, :, None] * 2.0 * RMS * rng.normal(size=(8,) + F6.shape) / np.sqrt(n)
        runs[n] = _run(f, T6, Y, n)
        e = np.sqrt(np.mean((f - F6[None]) ** 2, axis=(0, 2))) / RMS
        expected.append(np.mean(np.sqrt(np.maximum(e[1:] ** 2 - (floor_t[1:] / RMS) ** 2, 0.0))))
    sc = validation.width_scaling(sol, runs)
    np.testing.assert_allclose(sc["per_seed_error_net"], expected, rtol=1e-12)
    assert sc["per_seed_fit"] is not None
    np.testing.assert_allclose(sc["per_seed_fit"].slope, np.polyfit(np.log([64, 256, 1024]), np.log(expected), 1)[0],
                               rtol=1e-10)


def test_two_widths_give_slopes_without_error_bars_and_the_bias_skips_t0():
    """Two widths: each fit is the slope between them (bias 3 / N: exactly -1), without an error
    estimate; the loss bias is the largest |mean - theory| over t > 0 (uncentered networks' loss at
    t = 0 is off by their initial function, 0.5 here)."""
    sol = _solution(F6, T6, Y)
    runs, bias = {}, []
    for n in (16, 64):
        f = F6[None] + 3.0 / n * np.sign(Y)[None, None] * (T6 > 0)[None, :, None] + np.zeros((2, 1, 1))
        f[:, 0] += 0.5 * np.array([[1.0], [-1.0]])                # uncentered start
        runs[n] = _run(f, T6, Y, n)
        loss = np.mean((Y - f) ** 2, axis=2).mean(0)
        bias.append(np.max(np.abs(loss - sol.test_loss)[1:]))
    sc = validation.width_scaling(sol, runs)
    assert sc["mean_fit"] is not None and sc["mean_fit"].slope == pytest.approx(-1.0, abs=1e-9)
    assert np.isnan(sc["mean_fit"].stderr) and sc["per_seed_fit"].n == 2
    np.testing.assert_allclose(sc["test_loss_bias"], bias, rtol=1e-12)
    assert sc["bias_fit"].slope == pytest.approx(np.log(bias[1] / bias[0]) / np.log(4.0), rel=1e-9)


# ------------------------------------------------------------------ verdicts

def _floor_sweep(ratio):
    """A sweep whose smallest per-seed error is `ratio` x the DMFT's own error (the floor)."""
    floor = 0.01
    errors = np.array([4.0, 2.0, ratio]) * floor
    fit = LogLogFit(-0.5, 0.0, 0.02, (64.0, 1024.0), 3)
    sol = _solution(F6, T6, Y)
    comp = validation.compare(sol, _run(np.stack([F6 + 0.01, F6 - 0.01]), T6, Y, 1024))
    return types.SimpleNamespace(widths=[64, 256, 1024], gamma0s=[1.0], solutions={1.0: sol}, lazy={1.0: sol},
                                 scaling={1.0: {"per_seed_fit": fit, "theory_floor": floor, "per_seed_error": errors,
                                                "widths": np.array([64, 256, 1024]),
                                                "comparisons": {1024: comp}}})


@pytest.mark.parametrize("ratio, skipped", [(1.5, True), (1.99, True), (2.01, False), (3.0, False)])
def test_the_spread_check_skips_within_twice_the_dmfts_own_error(ratio, skipped):
    """README: SKIP 'where a width's error is within 2x of' the DMFT's own standard error; judged
    beyond it."""
    spread = checks(_floor_sweep(ratio))[0]
    assert spread["name"].startswith("spread")
    assert (spread["verdict"] == "SKIP") == skipped, spread
    if skipped:
        assert "within 2x the DMFT's own standard error" in spread["detail"], spread


def test_the_spread_check_names_the_smallest_network_error_against_the_floor():
    """The PASS detail said "smallest network error is Nx the DMFT's own error" of the largest
    width's error, which is the smallest only where the errors fall with width (a walkthrough)."""
    sweep = _floor_sweep(5.0)
    sweep.scaling[1.0]["per_seed_error"] = np.array([4.0, 3.0, 5.0]) * 0.01      # the smallest in the middle
    spread = checks(sweep)[0]
    assert spread["verdict"] != "SKIP" and "the smallest network error is 3x the DMFT's own" in spread["detail"], spread


def test_the_default_tolerances_are_the_documented_ones():
    """TOLERANCES is the validate job's [check] section: scripts/configs/default.toml spells out the
    built-in defaults ('only [theory] differs from the built-in defaults'), and its agreement sigma,
    which no shipped file sets, is the README's 5 (its bounds are quoted 'at 5 sigma')."""
    text = (ROOT / "scripts/configs/default.toml").read_text()
    assert "only [theory]" in text and "differs from the built-in defaults" in text
    shipped = tomllib.loads(text)["check"]
    assert {k: TOLERANCES[k] for k in shipped} == shipped
    assert "agreement_sigma" not in shipped and TOLERANCES["agreement_sigma"] == 5.0
    assert "at 5 sigma" in (ROOT / "README.md").read_text()


# ------------------------------------------------------------------ networks.train
DATA = dmft.tasks.single_index(D=4, P=8, P_test=4, degree=2, key=0)


@pytest.mark.parametrize("antithetic", [False, True])
def test_initial_readouts_are_drawn_apart_from_the_first_layer(antithetic):
    """a ~ N(0, 1) independent of w: no readout is one of the first-layer weights (drawn from the
    first layer's key, a_i was w's i-th entry, w_{i // D, i % D}: unit 0's readout its own weight)."""
    for s in range(4):
        p = init_params(jax.random.key(s), 32, 5, 2, True, antithetic, jnp.float64)
        assert not np.isin(np.asarray(p["a"]), np.asarray(p["w"])).any()


def test_the_fixed_readout_ntk_is_the_first_layers_alone():
    """readout='fixed' (a = 1, not trained): the recorded NTK is gamma0^2 N J_w J_w^T, J_w = df/dw
    by autodiff of the network written out here, at t = 0 and at the end (no feature kernel term:
    the readouts do not move)."""
    g, n = 0.7, 6
    model = dmft.TwoLayer("tanh", gamma0=g, readout="fixed")
    run = networks.train(model, DATA, width=n, seeds=1, eta0=0.2, steps=2, save_every=2, kernels=True,
                         keep_params=True)
    x = np.asarray(DATA.x_train)

    def f(w):
        return jnp.sum(jnp.tanh(x @ w.T / np.sqrt(DATA.D)), axis=1) / (g * n)

    jac = jax.jit(jax.jacobian(f))
    for j, params in ((0, run.params0), (-1, run.params)):
        J = np.asarray(jac(jnp.asarray(params["w"][0]))).reshape(DATA.P, -1)
        np.testing.assert_allclose(run.ntk[0, j], g * g * n * J @ J.T, rtol=1e-10, atol=1e-12)


def test_readout_movement_is_relative_to_sqrt_n_c_with_several_outputs():
    """weight_change['readout'] = ||a - a0|| / sqrt(N C) (docs: the initial readouts' expected norm),
    with C = 2 outputs (C = 1 could not tell N C from N)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(8, 3))
    data = dmft.Dataset(x, np.stack([np.tanh(x[:, 0]), x[:, 1]], 1))
    run = networks.train(dmft.TwoLayer("tanh", gamma0=1.0), data, width=4, seeds=2, eta0=0.5, steps=2,
                         save_every=2, keep_params=True)
    change = np.linalg.norm((run.params["a"] - run.params0["a"]).reshape(2, -1), axis=1)
    assert change.min() > 0
    np.testing.assert_allclose(run.weight_change["readout"][:, -1], change / np.sqrt(4 * 2), rtol=1e-12)


def test_each_seeds_own_batches_are_the_documented_sequence_and_are_not_shared():
    """Without batch_key, seed s draws its batches from fold_in(its key, 2^31 - 1), its key being
    fold_in(fold_in(key, N), s): seed 0 is reproduced by one seed trained on that sequence. Such a
    run records its batches as not shared, and compare() refuses it against a DMFT conditioned on
    one sequence (it was let through when recorded as shared)."""
    key, n = jax.random.key(4), 6
    model = dmft.TwoLayer("tanh", gamma0=0.8)
    kw = dict(width=n, eta0=0.3, steps=6, save_every=3, batch_size=3, key=key)
    own = networks.train(model, DATA, seeds=2, **kw)
    seq = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, n), 0), 2 ** 31 - 1)
    one = networks.train(model, DATA, seeds=1, batch_key=seq, **kw)
    np.testing.assert_allclose(own.f_test[0], one.f_test[0], rtol=1e-12, atol=1e-14)
    assert not np.allclose(own.f_test[1], one.f_test[0])
    assert own.info["shared_batches"] is False and one.info["shared_batches"] is True
    T = len(own.t)
    sol = dmft.Solution(t=own.t, f_train=own.f_train.mean(0), f_test=own.f_test.mean(0),
                        train_loss=own.train_loss.mean(0), test_loss=own.test_loss.mean(0), ntk=None,
                        feature_kernel=None, gradient_kernel=None, alignment=np.zeros(T),
                        weight_change={"first_layer": np.zeros(T)}, error=None,
                        info={"batch_key": [0, 9], "target_rms": {"test": 1.0}})
    with pytest.raises(InputError, match="each network seed drew its own"):
        validation.compare(sol, own)


def test_a_batch_of_all_points_is_full_batch_descent():
    """README: 1 <= B <= P, and B = P is full-batch gradient descent: accepted, the same numbers as
    no batch size (to rounding: the same sum in another order), recorded as full batch."""
    model = dmft.TwoLayer("tanh", gamma0=0.8)
    kw = dict(width=6, seeds=2, eta0=0.3, steps=4, save_every=2, key=jax.random.key(1))
    full = networks.train(model, DATA, **kw)
    all_points = networks.train(model, DATA, batch_size=DATA.P, **kw)
    np.testing.assert_allclose(all_points.f_test, full.f_test, rtol=1e-12, atol=1e-14)
    assert all_points.info["batch_size"] is None and all_points.info["shared_batches"] is False


@pytest.mark.parametrize("act, gamma0, eta0", [("linear", 0.01, 3.63), ("tanh", 0.1, 21.5)])
def test_a_seed_is_flagged_at_the_first_save_past_the_runaway_bound(monkeypatch, act, gamma0, eta0):
    """Past its stability a seed's train loss grows geometrically: it is a divergence from the first
    save past RUNAWAY x max(1, gamma0^-2) x max(loss at t = 0, mean y^2, 1) (the DMFT's bound,
    dmft.runner), or its first non-finite one. The raw losses, from the same run with the bound
    lifted, give that save by hand: info['diverged'] is it, the records NaN from it on and equal
    before. The linear case keeps a save past gamma0 = 1's bound (a bound read at gamma0 = 1 cut
    there) and its state overflows later (the flag stayed at the overflow); the tanh case has a save
    past the bound but within 1e6 of it (a bound scaled up by max y^2 / mean y^2 x 1e6 kept it)."""
    model = dmft.TwoLayer(act, gamma0=gamma0)
    kw = dict(width=8, seeds=2, eta0=eta0, steps=30, save_every=1)
    bound0 = runner.RUNAWAY
    y_ms = float(np.mean(np.asarray(DATA.y_train) ** 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = networks.train(model, DATA, **kw)
        monkeypatch.setattr(runner, "RUNAWAY", 1e300)
        raw = networks.train(model, DATA, **kw).train_loss
    flagged = []
    for s in range(2):
        loss = raw[s]
        scale = max(loss[0], y_ms, 1.0)
        bound = bound0 * max(1.0, gamma0 ** -2) * scale
        with np.errstate(invalid="ignore"):
            past = np.flatnonzero(~np.isfinite(loss) | (loss > bound))
        if not past.size:
            assert s not in run.info["diverged"] and np.all(np.isfinite(run.train_loss[s]))
            continue
        j = int(past[0])
        assert run.info["diverged"][s] == j, (s, j, run.info["diverged"])
        np.testing.assert_array_equal(run.train_loss[s, :j], loss[:j])
        assert np.all(np.isnan(run.train_loss[s, j:]))
        with np.errstate(invalid="ignore"):
            flagged.append((loss[j - 1] > bound0 * scale and not np.all(np.isfinite(loss[j:])))
                           if act == "linear" else bool(np.any((loss > bound) & (loss < 1e6 * bound))))
    assert flagged and all(flagged), flagged


def test_the_spread_check_says_when_the_dmfts_own_error_is_unknown():
    """A DMFT of one replica has a sampling error nothing estimates (width_scaling's floor NaN): the
    spread check is still judged, but neither took that error out nor could SKIP where it dominates,
    and the detail said nothing of it (a walkthrough: theory.replicas = 1 read as a plain PASS beside
    the z and prediction checks' SKIPs for the same reason)."""
    sweep = _floor_sweep(5.0)
    sweep.scaling[1.0]["theory_floor"] = float("nan")
    spread = checks(sweep)[0]
    assert spread["verdict"] == "PASS", spread
    assert "the DMFT's own standard error is unknown (one replica)" in spread["detail"], spread
    known = checks(_floor_sweep(5.0))[0]                    # a known floor: no such words
    assert "unknown" not in known["detail"], known


def test_the_spread_check_names_seeds_that_diverged():
    """A seed that diverges keeps its last finite, huge save (a walkthrough: a test loss of 3.5e10
    one save before NaN at N = 16), which the per-seed error averages in: the spread slope read
    +5.2 'over widths 4 to 16' with nothing said of the divergence, where the agreement checks
    named it. The judged spread's detail names the diverged seeds too."""
    rng = np.random.default_rng(3)
    sol = _solution(F6, T6, Y)
    runs = {}
    for n in (64, 256, 1024):
        f = F6[None] + (T6 > 0)[None, :, None] * 2.0 * RMS * rng.normal(size=(4,) + F6.shape) / np.sqrt(n)
        if n == 1024:                                     # one seed blows up, then is NaN
            f[0, 1] = 1e5
            f[0, 2:] = np.nan
        runs[n] = _run(f, T6, Y, n, diverged={0: 2} if n == 1024 else None)
    spread = _by_name(checks(_sweep(sol, runs)))["spread"]
    assert spread["verdict"] != "SKIP", spread
    assert "1 of 4 at N=1024" in spread["detail"] and "diverged" in spread["detail"], spread
    calm = {n: r for n, r in runs.items() if n < 1024}
    calm[512] = _run(F6[None] + 0.01 * RMS * rng.normal(size=(4,) + F6.shape), T6, Y, 512)
    assert "diverged" not in _by_name(checks(_sweep(sol, calm)))["spread"]["detail"]


def test_an_unjudged_agreement_z_shows_no_bound_it_did_not_work_out():
    """Where z is not judged (a DMFT of one replica: SKIP; a diverged seed: inf, FAIL) its tolerance
    read '|z| <= 5', sigma itself, as if that were the bound (at 3 seeds' dof it is 338): a
    walkthrough read it so; it says 'bound (5 sigma)', as the prediction check's does."""
    rng = np.random.default_rng(4)
    runs = {n: _run(F6[None] + 0.01 * RMS * rng.normal(size=(4,) + F6.shape), T6, Y, n) for n in (64, 256, 1024)}
    one = _solution(F6, T6, Y, error_dof=0, sampler="stratified")          # one replica: its error unknown
    z = _by_name(checks(_sweep(one, runs)))["agreement z"]
    assert z["verdict"] == "SKIP" and z["tolerance"] == "|z| <= bound (5 sigma)", z
    f = F6[None] + 0.01 * RMS * rng.normal(size=(4,) + F6.shape)
    f[0, 3:] = np.nan
    runs[1024] = _run(f, T6, Y, 1024, diverged={0: 3})
    z = _by_name(checks(_sweep(_solution(F6, T6, Y), runs)))["agreement z"]
    assert z["verdict"] == "FAIL" and z["value"] == np.inf and z["tolerance"] == "|z| <= bound (5 sigma)", z
