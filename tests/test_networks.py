"""Finite-width networks in DMFT units: parameterization, convergence to the theory, API."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dmft
import networks
from dmft.runner import TRACE_COUNTS
from validation import loglog_fit


# the coordinate check and the per-seed error share these (one compiled program per width)
WIDTHS, SEEDS = (32, 256, 2048), 16


@pytest.fixture(scope="module")
def data():
    return dmft.tasks.single_index(D=6, P=24, P_test=32, degree=2, key=jax.random.key(1))


@pytest.fixture(scope="module")
def kumar():
    """Quadratic activation, fixed readouts: the exact closure is the reference."""
    data = dmft.tasks.kumar_quadratic(D=8, P=40, P_test=64, key=jax.random.key(0))
    model = dmft.TwoLayer(dmft.activations.quadratic(0.5), gamma0=1.0, readout="fixed")
    return data, model


def test_time_base_matches_dmft(data):
    model = dmft.TwoLayer("tanh")
    run = networks.train(model, data, width=32, seeds=2, eta0=0.3, steps=40, save_every=8)
    sol = dmft.solve(model, data, eta0=0.3, steps=40, save_every=8, method="lazy")
    np.testing.assert_array_equal(run.t, sol.t)
    assert run.f_train.shape == (2, 6, 24) and run.f_test.shape == (2, 6, 32)
    assert run.weight_change["first_layer"].shape == (2, 6) and run.alignment.shape == (2, 6)


def test_coordinate_check_first_step_is_width_and_gamma0_independent(data):
    """muP coordinate check: at t = 0, df/dt = K0 Delta / P for every gamma0 and width, with
    deviations that shrink as N^-1/2 (fitted), never growing or vanishing with N or gamma0.

    The same seeds draw the same initial weights at every gamma0, so the relative deviation
    is the same function of N whatever gamma0 is (measured sqrt(N) dev = 1.804 at N = 32 for
    gamma0 = 0.1, 1, 10, alike to <= 3.2e-7 relative at every width: the O(eta0) part of the
    first step is what moves with gamma0); asserted at rtol 1e-5.

    Three widths over the same 64x range and 16 seeds (fitted slope -0.500 +- 0.017; -0.50 ..
    -0.54 over keys 0-5): the same programs as test_per_seed_error_against_the_forward_solver."""
    eta = 1e-5
    widths = np.array(WIDTHS)
    devs = {}
    for gamma0 in (0.1, 1.0, 10.0):
        model = dmft.TwoLayer("tanh", gamma0=gamma0)
        lazy = dmft.solve(model, data, eta0=eta, steps=1, save_every=1, method="lazy")
        target = lazy.f_test[1] / eta                     # K0_{*, train} y / P
        dev = []
        for n in widths:
            run = networks.train(model, data, width=int(n), seeds=SEEDS, eta0=eta, steps=1, save_every=1)
            rate = run.f_test[:, 1] / eta
            dev.append(np.sqrt(np.mean((rate - target) ** 2)) / np.sqrt(np.mean(target ** 2)))
        fit = loglog_fit(widths, dev)
        assert abs(fit.slope + 0.5) < 0.1, (gamma0, fit.describe())
        devs[gamma0] = np.array(dev)
    for gamma0 in (0.1, 10.0):
        np.testing.assert_allclose(devs[gamma0], devs[1.0], rtol=1e-5, err_msg=f"gamma0={gamma0}")


def test_small_gamma0_wide_networks_follow_the_lazy_theory(data):
    """Up to t = 30 in 15 steps of eta0 = 2 (eta0 lambda_max(K0) / P = 0.56, far from the edge 2;
    the lazy method is gradient descent at the same step, exactly): the z below are those of
    60 steps of 0.5 to within 0.1 (keys 0-3), at a quarter of the (width 8192) compute."""
    model = dmft.TwoLayer("erf", gamma0=0.01)
    kw = dict(eta0=2.0, steps=15, save_every=5)
    lazy = dmft.solve(model, data, method="lazy", **kw)
    run = networks.train(model, data, width=8192, seeds=8, **kw)
    se = run.f_test.std(0, ddof=1) / np.sqrt(8)
    z = (run.f_test.mean(0) - lazy.f_test)[1:] / se[1:]
    assert np.max(np.abs(z)) < 5 and np.sqrt(np.mean(z ** 2)) < 2   # no bias beyond seed noise
    # the loss too, in units of the seeds' standard error (5.5e-4 .. 1.3e-3 relative; measured
    # |z| <= 0.25 at this key, <= 3.7 over keys 0-5); at t = 0 both are the centered E[y^2] exactly
    np.testing.assert_allclose(run.test_loss[:, 0], lazy.test_loss[0], rtol=1e-12)
    se = run.test_loss.std(0, ddof=1)[1:] / np.sqrt(8)
    z = (run.test_loss.mean(0) - lazy.test_loss)[1:] / se
    assert np.max(np.abs(z)) < 5, z


def test_width_convergence_slopes_against_the_exact_closure(kumar):
    """Ensemble-mean test-loss error ~ N^-1 (bias), per-seed spread ~ N^-1/2, fitted over
    N = 16..256 with 256 seeds (measured: -1.05 and -0.49 over 16..512). Three widths over
    that range (one compiled program each): -0.995 and -0.46 here; over keys 0-7 the bias slope
    was -0.77 .. -1.11 (five widths: -0.71 .. -1.06) and the spread's -0.46 .. -0.52."""
    data, model = kumar
    kw = dict(eta0=0.5, steps=40, save_every=10)
    exact = dmft.solve(model, data, method="closure", **kw)
    widths = np.array([16, 64, 256])
    bias, spread = [], []
    for n in widths:
        run = networks.train(model, data, width=int(n), seeds=256, **kw)
        bias.append(np.max(np.abs(run.test_loss.mean(0) - exact.test_loss)))
        spread.append(np.max(run.test_loss.std(0)))
    fb, fs = loglog_fit(widths, bias), loglog_fit(widths, spread)
    assert -1.3 < fb.slope < -0.75, fb.describe()
    assert -0.6 < fs.slope < -0.4, fs.describe()


def test_per_seed_error_against_the_forward_solver(data):
    """A nonlinear rich case (tanh, gamma0 = 0.5): per-seed error falls as N^-1/2 (measured
    -0.507 +- 0.02, -0.50 .. -0.514 over keys 0-5). The widths, seeds and single save interval
    of the coordinate check: the networks are the same compiled programs (gamma0 and eta0 are
    traced), so in one process only the solver compiles here."""
    model = dmft.TwoLayer("tanh", gamma0=0.5)
    kw = dict(eta0=0.5, steps=40, save_every=40)
    sol = dmft.solve(model, data, samples=2 ** 15, **kw)
    widths = np.array(WIDTHS)
    err = []
    for n in widths:
        run = networks.train(model, data, width=int(n), seeds=SEEDS, **kw)
        err.append(np.sqrt(np.mean((run.f_test[:, -1] - sol.f_test[-1]) ** 2)))
    fit = loglog_fit(widths, err)
    assert abs(fit.slope + 0.5) < 0.12, fit.describe()


def test_centering_antithetic_seeds_and_bits(data):
    # (width 16, two seeds, two save intervals: the program of the relu tests below)
    kw = dict(eta0=0.2, steps=4, save_every=2, seeds=2)
    run = networks.train(dmft.TwoLayer("relu"), data, width=16, **kw)
    assert np.all(run.f_train[:, 0] == 0)
    raw = networks.train(dmft.TwoLayer("relu", centered=False), data, width=16, **kw)
    assert np.all(np.abs(raw.f_train[:, 0]) > 0)
    anti = networks.train(dmft.TwoLayer("relu", centered=False), data, width=16, antithetic=True, **kw)
    assert np.max(np.abs(anti.f_train[:, 0])) < 1e-13
    assert not np.allclose(run.f_train[0], run.f_train[1])            # seeds differ
    again = networks.train(dmft.TwoLayer("relu"), data, width=16, **kw)
    assert np.array_equal(again.f_test, run.f_test)                    # same key, same bits
    other = networks.train(dmft.TwoLayer("relu"), data, width=16, key=jax.random.key(9), **kw)
    assert not np.array_equal(other.f_test, run.f_test)


def test_kernels_use_the_two_layer_structure(data):
    """The structured empirical kernels equal the full-Jacobian NTK of the same network,
    K = gamma0^2 N J J^T with J = df/dtheta (DMFT units)."""
    from networks.train import init_params
    g, n = 0.7, 12
    model = dmft.TwoLayer("tanh", gamma0=g)
    run = networks.train(model, data, width=n, seeds=1, eta0=0.2, steps=2, save_every=2,
                         kernels=True)
    params = init_params(jax.random.fold_in(jax.random.fold_in(jax.random.key(0), n), 0), n, data.D, 1, True,
                         False, np.float64)                      # seed 0 of width n

    def f(p):
        h = data.x_train @ p["w"].T / np.sqrt(data.D)
        return jax.numpy.tanh(h) @ p["a"][:, 0] / (g * n)

    jac = jax.jit(jax.jacobian(f))(params)                      # (one compile, not one per op)
    J = np.concatenate([np.asarray(jac[k]).reshape(data.P, -1) for k in ("w", "a")], axis=1)
    np.testing.assert_allclose(run.ntk[0, 0], g * g * n * J @ J.T, rtol=1e-10, atol=1e-12)


def test_each_seed_diverges_alone(data):
    """With eta0 at the stability edge of the second-flattest seed's NTK, seeds well above it
    blow up: each is flagged with its step and reported as NaN from then on; the rest carry on.
    (At gamma0 = 0.05 a seed up to ~4x past the edge can still settle, its kernel shrinking:
    the median's edge left no seed diverging for some draws.)"""
    model = dmft.TwoLayer("relu", gamma0=0.05)
    kw = dict(width=6, seeds=16)
    k0 = networks.train(model, data, eta0=1e-3, steps=1, save_every=1, kernels=True, **kw).ntk[:, 0]
    lam = np.linalg.eigvalsh(k0)[:, -1]
    eta = 2 * data.P / np.sort(lam)[1]
    with pytest.warns(UserWarning, match=r"seeds diverged at width 6 \(the first by step") as said:
        run = networks.train(model, data, eta0=eta, steps=400, save_every=10, **kw)
    bad = run.info["diverged"]
    assert 0 < len(bad) < 16, bad
    assert f"{len(bad)} of 16 seeds" in str(said[0].message) and f"by step {min(bad.values())})" in str(said[0].message)
    assert said[0].filename == __file__                                # the caller's line, not the library's
    assert set(bad) <= set(np.flatnonzero(eta * lam / data.P > 1.9))
    for s in range(16):
        if s in bad:
            assert np.all(np.isnan(run.test_loss[s, bad[s] // 10 + 1:]))
        else:
            assert np.all(np.isfinite(run.test_loss[s]))


def test_the_save_before_a_bad_update_is_kept(data, tmp_path):
    """An update that overflows (here an optimizer scaling it past the float range at the
    first step) loses the saves after it, not the state before it: the t = 0 record stays."""
    model = dmft.TwoLayer("relu", gamma0=1.0)
    kw = dict(width=16, seeds=2, save_every=1, steps=2, eta0=0.1, key=jax.random.key(0))
    boom = optax.chain(optax.sgd(0.1), optax.scale(1e308), optax.scale(1e308))
    with pytest.warns(UserWarning, match="every one of 2 seeds diverged"):
        run = networks.train(model, data, optimizer=boom, **kw)
    with warnings.catch_warnings():                   # nothing diverged: nothing said
        warnings.simplefilter("error")
        plain = networks.train(model, data, **kw)
    assert run.info["diverged"] == {0: 0, 1: 0}
    # read back as saved: seed numbers, not the text JSON keeps them as ({'0': 0, '1': 0} before)
    run.save(tmp_path / "run")
    assert networks.Run.load(tmp_path / "run").info["diverged"] == {0: 0, 1: 0}
    np.testing.assert_array_equal(run.train_loss[:, 0], plain.train_loss[:, 0])
    assert np.all(np.isnan(run.train_loss[:, 1:])) and np.all(np.isnan(run.f_test[:, 1:]))


def test_optimizers_and_weight_decay(data):
    model = dmft.TwoLayer("tanh")
    # (the default optimizer's runs: the program of test_time_base_matches_dmft, five saves)
    kw = dict(width=32, seeds=2, eta0=0.2, steps=20, save_every=4)
    plain = networks.train(model, data, **kw)
    own_gd = networks.train(model, data, optimizer=optax.sgd(0.2), **kw)
    np.testing.assert_allclose(own_gd.f_test, plain.f_test, rtol=1e-12, atol=1e-14)
    decayed = networks.train(model, data, weight_decay=0.5, **kw)
    chained = networks.train(model, data, optimizer=optax.chain(optax.add_decayed_weights(0.5),
                                                                optax.sgd(0.2)), **kw)
    np.testing.assert_allclose(decayed.f_test, chained.f_test, rtol=1e-12, atol=1e-14)
    assert not np.allclose(decayed.f_test, plain.f_test)
    mom = networks.train(model, data, optimizer=optax.sgd(0.2, momentum=0.9), **kw)
    assert np.all(np.isfinite(mom.test_loss)) and not np.allclose(mom.f_test, plain.f_test)
    assert "sgd" in plain.info["optimizer"]


def test_no_recompilation_when_gamma0_or_eta0_change(data):
    kw = dict(width=32, seeds=2, steps=10, save_every=2)      # (test_time_base_matches_dmft's program)
    networks.train(dmft.TwoLayer("tanh", gamma0=1.0), data, eta0=0.1, **kw)
    before = dict(TRACE_COUNTS)
    networks.train(dmft.TwoLayer("tanh", gamma0=0.2), data, eta0=0.3, weight_decay=0.1, **kw)
    assert TRACE_COUNTS == before


def test_list_of_widths_and_save_load(data, tmp_path):
    runs = networks.train(dmft.TwoLayer("relu"), data, width=[8, 16], seeds=2, eta0=0.2, steps=4,
                          save_every=2)
    assert sorted(runs) == [8, 16] and runs[16].width == 16
    runs[8].save(tmp_path / "r8")
    back = networks.Run.load(tmp_path / "r8")
    np.testing.assert_array_equal(back.f_test, runs[8].f_test)
    assert back.info["config"]["train"]["width"] == 8


@pytest.mark.parametrize("kwargs, match", [
    (dict(width=0), "width must be >= 1"), (dict(width=[8, 0]), "width must be >= 1"),
    (dict(width=7, antithetic=True), "width must be even"), (dict(seeds=0), "seeds must be >= 1"),
    (dict(steps=10, save_every=3), r"steps \(10\) must be a multiple of save_every"),
    (dict(eta0=-1.0), "eta0 must be > 0"), (dict(optimizer="adam"), "optimizer must be an optax"),
    (dict(weight_decay=-0.1), "weight_decay must be >= 0"),
    (dict(width=4096, seeds=64, steps=1000, save_every=1, kernels=True, max_memory_gb=0.5),
     r"GiB \(> max_memory_gb=0.5\); kernels=True"),
])
def test_bad_input_is_rejected_before_compute(data, kwargs, match):
    args = dict(width=8, seeds=2, eta0=0.1, steps=4, save_every=2)
    args.update(kwargs)
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.InputError, match=match):
        networks.train(dmft.TwoLayer("relu"), data, **args)
    assert TRACE_COUNTS == before


def test_antithetic_needs_trained_readouts(data):
    with pytest.raises(dmft.InputError, match="antithetic=True .* needs readout='trained'"):
        networks.train(dmft.TwoLayer("relu", readout="fixed"), data, width=8, antithetic=True,
                       steps=2, save_every=1)


@pytest.mark.parametrize("kwargs, match", [(dict(weight_decay=None), "weight_decay must be a real number"),
                                           (dict(weight_decay="x"), "weight_decay must be a real number"),
                                           (dict(max_memory_gb="lots"), "max_memory_gb must be a real number")])
def test_numeric_arguments_are_checked(data, kwargs, match):
    with pytest.raises(dmft.InputError, match=match):
        networks.train(dmft.TwoLayer("relu"), data, width=8, steps=2, save_every=1, **kwargs)


@pytest.mark.parametrize("width", [1, 4])      # (4: test_ensembles_of_different_widths_are_independent's program)
def test_weight_change_is_relative_to_the_expected_initial_norm(width):
    """|W - W0| / sqrt(N D) and |a - a0| / sqrt(N C), the DMFT's normalization: divided by the
    drawn |a0| the seed mean at N = 1 was 5x the DMFT's value (E[1 / |a0|] is infinite)."""
    data = dmft.tasks.single_index(D=4, P=8, P_test=4, degree=2, key=0)
    run = networks.train(dmft.TwoLayer("tanh", gamma0=1.0), data, width=width, seeds=2, eta0=0.5, steps=4,
                         save_every=4, keep_params=True)
    for part, name, dim in (("first_layer", "w", data.D), ("readout", "a", data.C)):
        change = np.linalg.norm((run.params[name] - run.params0[name]).reshape(2, -1), axis=1)
        np.testing.assert_allclose(run.weight_change[part][:, -1], change / np.sqrt(width * dim), rtol=1e-12)


def test_ensembles_of_different_widths_are_independent():
    """With one key for every width, width 2N's first N units were width N's (nested networks:
    the errors of a width scan were correlated). Seed s of width N draws from
    fold_in(fold_in(key, N), s); a width alone or in a list gives the same run."""
    data = dmft.tasks.single_index(D=4, P=8, P_test=4, degree=2, key=0)
    kw = dict(seeds=2, eta0=0.5, steps=2, save_every=2, keep_params=True, key=jax.random.key(5))
    runs = networks.train(dmft.TwoLayer("tanh"), data, width=[4, 8], **kw)
    w4, w8 = runs[4].params0["w"], runs[8].params0["w"]
    assert not np.any(np.isclose(w4, w8[:, :4]))
    alone = networks.train(dmft.TwoLayer("tanh"), data, width=8, **kw)
    np.testing.assert_array_equal(alone.params0["w"], w8)
    np.testing.assert_array_equal(alone.test_loss, runs[8].test_loss)


@settings(max_examples=20, deadline=None)
@given(log_gamma0=st.floats(-300, 0), x64=st.booleans())
def test_a_gamma0_below_what_rounding_resolves_is_refused_before_training(data, log_gamma0, x64):
    """A step moves the weights by O(gamma0) and the output divides their rounding by gamma0: at
    gamma0 = 1e-20 a centered network's loss at t = 0 (where f = 0: the targets' mean square)
    read 1e6 for 0.445, with no flag. Below NETWORK_MIN_GAMMA0 of the working float type (1e-9
    in float64, 1e-5 in float32: the review found the DMFT's float32 floor 1e-2 refusing networks
    that were fine at 1e-4) the call is refused naming gamma0, with nothing compiled."""
    from networks.train import NETWORK_MIN_GAMMA0
    gamma0 = 10.0 ** log_gamma0
    jax.config.update("jax_enable_x64", x64)
    try:
        before = dict(TRACE_COUNTS)
        sch = dmft.Schedule(0.1, 2, 1)
        if gamma0 < NETWORK_MIN_GAMMA0["float64" if x64 else "float32"]:
            with pytest.raises(dmft.InputError, match="gamma0 = .* below what a network resolves"):
                networks.plan_train(dmft.TwoLayer("tanh", gamma0=gamma0), data, sch, width=8, seeds=2)
        else:
            networks.plan_train(dmft.TwoLayer("tanh", gamma0=gamma0), data, sch, width=8, seeds=2)
        assert TRACE_COUNTS == before
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("x64, gamma0", [(True, 1e-9), (False, 1e-5)])
def test_a_network_at_the_gamma0_floor_starts_at_the_targets_mean_square(data, x64, gamma0):
    jax.config.update("jax_enable_x64", x64)
    try:
        run = networks.train(dmft.TwoLayer("tanh", gamma0=gamma0), data, width=8, seeds=2, eta0=0.1, steps=2,
                             save_every=1)
    finally:
        jax.config.update("jax_enable_x64", True)
    np.testing.assert_allclose(run.train_loss[:, 0], np.mean(np.asarray(data.y_train) ** 2),
                               rtol=1e-6 if x64 else 1e-3)
    assert not run.info["diverged"]


@pytest.mark.parametrize("width, seeds", [(1024, 4), (256, 16), (4096, 1)])
def test_linear_networks_with_several_outputs_record_their_kernels(width, seeds):
    """A linear network's phi' is all ones; XLA:CPU simplified the gradient kernel (phi' * m) phi'^T / N
    built on a constant ones array into a reduction that came out NaN at seeds x width >= 4096 with
    2+ outputs (every seed flagged diverged) or finite and wrong (an audit against the DMFT). For
    phi = h, G = mean over units and outputs of a^2, exactly: at t = 0 and at the end."""
    x = np.asarray(jax.random.normal(jax.random.key(0), (32, 8)))
    y = np.stack([np.tanh(x[:, 0]), x[:, 1] * x[:, 2]], 1)
    data = dmft.Dataset(x, y)
    model = dmft.TwoLayer("linear", gamma0=1.0, readout="trained")
    run = networks.train(model, data, eta0=0.5, steps=4, save_every=4, width=width, seeds=seeds,
                         kernels=True, keep_params=True, key=jax.random.key(1))
    assert not run.info["diverged"]
    for j, params in ((0, run.params0), (-1, run.params)):
        g = np.mean(np.asarray(params["a"]) ** 2, axis=(1, 2))
        np.testing.assert_allclose(run.gradient_kernel[:, j], np.broadcast_to(g[:, None, None], (seeds, 32, 32)),
                                   rtol=1e-12)
    assert np.all(np.isfinite(run.alignment)) and np.all(run.alignment > 0.05)


@pytest.mark.parametrize("readout, centered", [("trained", True), ("fixed", False)])
def test_minibatch_sgd_steps_the_batch_loss_of_the_sequence(readout, centered):
    """networks.train under SGD (computed on the batch's points alone) steps theta <- theta - eta0
    gamma0^2 N grad L_k with L_k = (1/2P) sum_mu w_mu Delta_mu^2, w = P/B on step k's batch
    (`dmft.schedule.batch_indices(batch_key, k, P, B)`) and 0 elsewhere: stepped by hand with
    jax.grad over all P points, to rounding."""
    data = dmft.tasks.single_index(D=5, P=40, P_test=4, key=jax.random.key(0))
    model = dmft.TwoLayer("tanh", gamma0=0.8, readout=readout, centered=centered)
    eta, B, steps, bkey = 0.4, 6, 12, jax.random.key(9)
    run = networks.train(model, data, width=7, seeds=1, eta0=eta, steps=steps, save_every=steps, batch_size=B,
                         batch_key=bkey, key=jax.random.key(2), keep_params=True)
    p0 = {k: v[0] for k, v in run.params0.items()}
    x, y = data.x_train, data.y_train.reshape(data.P, -1)

    def f(p):
        a = p["a"] if readout == "trained" else jnp.ones((7, 1))
        return jnp.tanh(x @ p["w"].T / np.sqrt(5)) @ a / (0.8 * 7)

    f0 = f(p0) if centered else 0.0
    p = dict(p0)
    for k in range(steps):
        w = np.zeros(data.P)
        w[np.asarray(dmft.schedule.batch_indices(bkey, k, data.P, B))] = data.P / B
        g = jax.grad(lambda q: jnp.sum(w[:, None] * (y - (f(q) - f0)) ** 2) / (2 * data.P))(p)
        p = {n: p[n] - eta * 0.8 ** 2 * 7 * g[n] for n in p}
    for n in p:
        np.testing.assert_allclose(run.params[n][0], p[n], rtol=1e-11, atol=1e-13)


_LOWERED = [0]                    # programs lowered for XLA in this process so far


def _listen(name, _secs, **_kw):
    if name == "/jax/core/compile/jaxpr_to_mlir_module_duration":
        _LOWERED[0] += 1


jax.monitoring.register_event_duration_secs_listener(_listen)

def test_run_predict_in_blocks_of_points_equals_one_call(monkeypatch):
    """Run.predict takes the points in blocks whose hidden layers hold at most PREDICT_BLOCK_VALUES
    values (memory flat in the number of points: 40000 points at once took 5 GB): a block of 7
    points and an uneven last block give the one-call answer to rounding."""
    nt = __import__("sys").modules["networks.train"]
    data = dmft.tasks.single_index(D=5, P=12, P_test=4, degree=2, key=jax.random.key(0))
    for centered in (True, False):
        run = networks.train(dmft.TwoLayer("tanh", 1.0, centered=centered), data, eta0=0.5, steps=4,
                             save_every=2, width=16, seeds=3, keep_params=True)
        x = np.random.default_rng(1).normal(size=(30, 5))
        whole = run.predict(x)
        # other counts of points of the same padded size (`dmft.solve.predict_rows`) compile nothing
        # new (each count compiled its ~0.4 s of programs op by op) and give the same numbers
        lowered = _LOWERED[0]
        for n in (25, 29, 31):
            np.testing.assert_array_equal(run.predict(x[:n]), whole[:, :n])
        assert _LOWERED[0] == lowered
        monkeypatch.setattr(nt, "PREDICT_BLOCK_VALUES", 3 * 16 * 7)
        blocked = run.predict(x)
        monkeypatch.undo()
        assert blocked.shape == whole.shape == (3, 30)
        np.testing.assert_allclose(blocked, whole, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(run.predict(data.x_train), run.f_train[:, -1], rtol=1e-10, atol=1e-12)
