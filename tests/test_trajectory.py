"""One schedule for theory and networks, one result shape: save grids, gradient flow for
networks, predictions on new inputs, figures, and files written by earlier versions."""

import os

import jax
import numpy as np
import pytest

import dmft
import networks
import validation
from validation import loglog_fit

LEGACY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "legacy")


@pytest.fixture(scope="module")
def data():
    return dmft.tasks.single_index(D=4, P=12, P_test=8, degree=2, key=jax.random.key(3))


# ------------------------------------------------------------------ the schedule

def test_schedule_save_grids():
    s = dmft.Schedule(eta0=0.5, steps=100, save_every=25)
    assert s.save_steps.tolist() == [0, 25, 50, 75, 100] and s.uniform
    np.testing.assert_allclose(s.times, [0, 12.5, 25, 37.5, 50])
    log = dmft.Schedule(eta0=0.1, steps=10000, save_at="log", n_saves=20)
    k = log.save_steps
    assert k[0] == 0 and k[1] == 1 and k[-1] == 10000 and np.all(np.diff(k) > 0)
    ratios = k[3:] / k[2:-1]
    assert ratios.max() < 2.5                        # evenly spread in log time
    exp = dmft.Schedule(eta0=1.0, steps=10, save_at=[3, 7])
    assert exp.save_steps.tolist() == [0, 3, 7, 10] and exp.gaps.tolist() == [3, 4, 3]
    assert dmft.Schedule(eta0=1.0, steps=10, save_every=5).replace(eta0=2.0).times[-1] == 20.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(eta0=0), "eta0"), (dict(eta0=float("nan")), "eta0"), (dict(steps=0), "steps"),
    (dict(steps=10, save_every=3), "multiple"), (dict(save_every=0), "save_every"),
    (dict(weight_decay=-1), "weight_decay"), (dict(dynamics="adam"), "dynamics"),
    (dict(save_at="lin"), "save_at"), (dict(steps=10, save_at=[5, 3]), "increasing"),
    (dict(steps=10, save_at=[20]), r"save_at\[0\]"), (dict(save_at=[]), "save_at"),
    (dict(eta0=1.0, weight_decay=2.0), "weight_decay"), (dict(batch_size=0), "batch_size"),
    (dict(steps=True), "steps"), (dict(eta0="fast"), "eta0"),
])
def test_schedule_rejects(kwargs, match):
    with pytest.raises(dmft.InputError, match=match):
        dmft.Schedule(**kwargs)


def test_schedule_or_keywords_not_both(data):
    sch = dmft.Schedule(eta0=0.5, steps=4, save_every=2)
    with pytest.raises(ValueError, match="eta0"):
        dmft.solve(dmft.TwoLayer("linear"), data, schedule=sch, eta0=0.5)
    with pytest.raises(ValueError, match="steps"):
        networks.train(dmft.TwoLayer("linear"), data, width=4, seeds=1, schedule=sch, steps=4)
    a = dmft.solve(dmft.TwoLayer("linear"), data, sch)
    b = dmft.solve(dmft.TwoLayer("linear"), data, eta0=0.5, steps=4, save_every=2)
    np.testing.assert_array_equal(a.f_test, b.f_test)


@pytest.mark.parametrize("method", ["closure", "forward", "lazy"])
def test_any_save_grid_gives_the_same_values_at_common_times(data, method):
    model = dmft.TwoLayer("linear" if method == "closure" else "tanh")
    kw = dict(method=method, samples=256) if method != "closure" else {}
    every = dmft.solve(model, data, dmft.Schedule(0.2, 64, save_every=1), **kw)
    log = dmft.solve(model, data, dmft.Schedule(0.2, 64, save_at="log", n_saves=7), **kw)
    k = (log.t / 0.2).round().astype(int)
    np.testing.assert_allclose(log.f_test, every.f_test[k], rtol=1e-12, atol=1e-14)
    run = networks.train(model, data, width=16, seeds=2, schedule=dmft.Schedule(0.2, 64, save_at=[5, 17]))
    ref = networks.train(model, data, width=16, seeds=2, schedule=dmft.Schedule(0.2, 64, save_every=1))
    np.testing.assert_allclose(run.f_test, ref.f_test[:, [0, 5, 17, 64]], rtol=1e-12, atol=1e-14)


def test_network_gradient_flow_is_fourth_order_and_is_the_limit_of_small_steps(data):
    """networks.train(dynamics="flow") integrates d theta/dt = -gamma0^2 N grad L - kappa theta
    with RK4: the error at a fixed time falls as eta0^4 (fitted), and gradient descent
    approaches it at first order."""
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    kw = dict(width=16, seeds=2, key=jax.random.key(5), weight_decay=0.05)
    T = 4.0
    ref = networks.train(model, data, schedule=dmft.Schedule(T / 256, 256, 256, dynamics="flow",
                                                             weight_decay=0.05), width=16, seeds=2,
                         key=jax.random.key(5))
    etas, errs, gd_errs = [], [], []
    for n in (8, 16, 32):
        run = networks.train(model, data, eta0=T / n, steps=n, save_every=n, dynamics="flow", **kw)
        gd = networks.train(model, data, eta0=T / (8 * n), steps=8 * n, save_every=8 * n, **kw)
        etas.append(T / n)
        errs.append(np.abs(run.f_test[:, -1] - ref.f_test[:, -1]).max())
        gd_errs.append(np.abs(gd.f_test[:, -1] - ref.f_test[:, -1]).max())
    fit = loglog_fit(etas, errs)
    assert 3.5 < fit.slope < 4.6, fit.describe()
    assert 0.8 < loglog_fit(etas, gd_errs).slope < 1.2
    assert run.info["dynamics"] == "flow"


def test_network_flow_refuses_an_optimizer(data):
    import optax
    with pytest.raises(ValueError, match="flow"):
        networks.train(dmft.TwoLayer("relu"), data, width=4, seeds=1, steps=2, save_every=1,
                       dynamics="flow", optimizer=optax.sgd(0.1))


# ------------------------------------------------------------------ predictions on new inputs

def test_predict_reproduces_the_test_predictions_exactly(data):
    x = data.x_test
    for model, method in ((dmft.TwoLayer("linear"), "closure"), (dmft.TwoLayer("relu"), "lazy"),
                          (dmft.TwoLayer("tanh"), "forward"), (dmft.TwoLayer("tanh"), "iterate"),
                          (dmft.TwoLayer(dmft.activations.quadratic(0.5), readout="fixed",
                                         centered=False), "closure")):
        sol = dmft.solve(model, data, eta0=0.5, steps=20, save_every=10, method=method, samples=256)
        np.testing.assert_allclose(sol.predict(x), sol.f_test[-1], rtol=1e-10, atol=1e-12,
                                   err_msg=method)
    run = networks.train(dmft.TwoLayer("relu"), data, width=8, seeds=3, eta0=0.5, steps=20,
                         save_every=10, keep_params=True)
    np.testing.assert_allclose(run.predict(x), run.f_test[:, -1], rtol=1e-12, atol=1e-14)


def test_predict_outside_the_data_span_is_exact_for_the_closure(key):
    """With D > P + P* the solver works in the span of the data; a new input has a part
    outside it, whose weights only decay. Predicting it must equal a solve that has the
    new input among its test points (the infinite-width law does not depend on the basis)."""
    full = dmft.tasks.kumar_quadratic(D=30, P=12, P_test=8, key=key)
    part = dmft.Dataset(full.x_train, full.y_train, full.x_test[:3], full.y_test[:3])
    for model in (dmft.TwoLayer(dmft.activations.quadratic(0.5), readout="fixed"),
                  dmft.TwoLayer("linear")):
        for decay in (0.0, 0.05):
            a = dmft.solve(model, part, eta0=0.5, steps=30, save_every=10, weight_decay=decay)
            b = dmft.solve(model, full, eta0=0.5, steps=30, save_every=10, weight_decay=decay)
            assert a.info["basis"] == "kernel-eigenbasis"
            np.testing.assert_allclose(a.predict(full.x_test), b.f_test[-1], rtol=1e-9, atol=1e-12)


def test_sampled_predictions_outside_the_span_agree_within_their_errors(key):
    full = dmft.tasks.single_index(D=24, P=10, P_test=6, degree=2, key=key)
    part = dmft.Dataset(full.x_train, full.y_train, full.x_test[:2], full.y_test[:2])
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    kw = dict(eta0=0.5, steps=20, save_every=10, samples=2 ** 14, replicas=8)
    ref = dmft.solve(model, full, method="forward", key=jax.random.key(1), **kw)
    pred = dmft.solve(model, part, key=jax.random.key(2), **kw).predict(full.x_test)
    z = (pred - ref.f_test[-1]) / (np.sqrt(2) * np.maximum(ref.error["f_test"][-1], 1e-12))
    assert np.all(np.abs(z) < 5), z
    assert np.abs(pred - ref.f_test[-1]).max() < 0.02 * np.abs(ref.f_test[-1]).max() + 1e-3


def test_predict_needs_a_final_state(data, tmp_path):
    sol = dmft.solve(dmft.TwoLayer("linear"), data, eta0=0.5, steps=4, save_every=2)
    sol.save(tmp_path / "s")
    with pytest.raises(ValueError, match="solve again"):
        dmft.Solution.load(tmp_path / "s").predict(data.x_test)
    with pytest.raises(ValueError, match="x_new"):
        sol.predict(np.ones((2, data.D + 1)))
    run = networks.train(dmft.TwoLayer("relu"), data, width=4, seeds=2, eta0=0.5, steps=4,
                         save_every=2)
    with pytest.raises(ValueError, match="keep_params"):
        run.predict(data.x_test)
    kept = networks.train(dmft.TwoLayer("relu"), data, width=4, seeds=2, eta0=0.5, steps=4,
                          save_every=2, keep_params=True)
    kept.save(tmp_path / "r")
    back = networks.Run.load(tmp_path / "r")
    np.testing.assert_allclose(back.predict(data.x_test), kept.f_test[:, -1], rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ figures and files

def test_plot_one_result_or_several_or_loaded_ones(data, tmp_path):
    sol = dmft.solve(dmft.TwoLayer("relu"), data, eta0=0.5, steps=20, save_every=5, samples=256)
    run = networks.train(dmft.TwoLayer("relu"), data, width=16, seeds=3, eta0=0.5, steps=20,
                         save_every=5)
    for fig in (sol.plot(), run.plot(), sol.plot(run), validation.plots.theory_vs_networks(sol, run)):
        fig.savefig(tmp_path / "f.png")
        assert os.path.getsize(tmp_path / "f.png") > 1000
        labels = [ax.get_ylabel() for ax in fig.axes]
        assert all(labels), labels
    sol.save(tmp_path / "s")
    dmft.Solution.load(tmp_path / "s").plot().savefig(tmp_path / "g.png")


def test_files_written_by_the_earlier_layout_still_load():
    from experiments import scan

    sol = dmft.Solution.load(os.path.join(LEGACY, "solution"))
    run = networks.Run.load(os.path.join(LEGACY, "run"))
    assert sol.f_test.shape == (3, 8) and sol.error["test_loss"].shape == (3,)
    assert run.weight_change["first_layer"].shape == (2, 3) and run.width == 8
    res = scan.load(os.path.join(LEGACY, "store"))
    expected = np.load(os.path.join(LEGACY, "store_expected.npz"))
    assert res.complete and sorted(res.arrays) == sorted(expected.files)
    for k in expected.files:
        np.testing.assert_array_equal(res[k], expected[k], err_msg=k)
    sol.plot()
    run.plot()


def test_dataset_copies_and_freezes_its_arrays():
    x = np.random.default_rng(0).normal(size=(6, 3))
    y = x[:, 0].copy()
    d = dmft.Dataset(x, y)
    x[0, 0] = 100.0
    y[:] = 0
    assert d.x_train[0, 0] != 100.0 and np.any(d.y_train != 0)
    with pytest.raises(ValueError):
        d.x_train[0, 0] = 1.0
    assert "P=6" in repr(d) and len(repr(d)) < 200
