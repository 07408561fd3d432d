"""Bad input: one clear ValueError naming the argument, before any compute."""

import jax
import numpy as np
import pytest

import dmft
from dmft.runner import TRACE_COUNTS


@pytest.fixture(scope="module")
def data():
    return dmft.tasks.single_index(D=3, P=6, P_test=4, degree=1, key=jax.random.key(0))


def _x(p=6, d=3):
    return np.random.default_rng(0).normal(size=(p, d))


@pytest.mark.parametrize("kwargs, match", [
    (dict(x_train=np.ones(5), y_train=np.ones(5)), "x_train"),
    (dict(x_train=_x(), y_train=np.ones(4)), "y_train"),
    (dict(x_train=_x(), y_train=np.ones((6, 2, 2))), "y_train"),
    (dict(x_train=_x(), y_train=np.ones(6), x_test=_x(4, 2)), "x_test"),
    (dict(x_train=_x(), y_train=np.ones(6), x_test=_x(4).astype(np.float32)), "x_test.*dtype"),
    (dict(x_train=_x(), y_train=np.ones(6), y_test=np.ones(3)), "y_test"),
    (dict(x_train=_x(), y_train=np.ones(6), x_test=_x(4), y_test=np.ones(3)), "y_test"),
    (dict(x_train=_x(), y_train=np.ones(6), x_test=_x(4), y_test=np.ones((4, 2))), "y_test"),
    (dict(x_train=np.where(_x() > 1, np.nan, _x()), y_train=np.ones(6)), "x_train.*NaN"),
    (dict(x_train=_x(), y_train=np.r_[np.ones(5), np.inf]), "y_train.*NaN or infinite"),
    (dict(x_train=_x().astype(complex), y_train=np.ones(6)), "x_train.*real"),
    (dict(x_train=np.array([["a"] * 3] * 6), y_train=np.ones(6)), "x_train"),
])
def test_dataset_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dmft.Dataset(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(gamma0=0.0), "gamma0"), (dict(gamma0=-1.0), "gamma0"), (dict(gamma0=np.nan), "gamma0"),
    (dict(gamma0="big"), "gamma0"), (dict(activation="sigmoidal"), "activation.*unknown"),
    (dict(activation=3), "activation"), (dict(readout="frozen"), "readout"),
    (dict(centered="yes"), "centered"), (dict(activation=lambda h: h[:1]), "activation"),
])
def test_model_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dmft.TwoLayer(**kwargs)


def test_quadratic_eps_must_be_finite():
    with pytest.raises(ValueError, match="eps"):
        dmft.activations.quadratic(float("inf"))


@pytest.mark.parametrize("model_kw, solve_kw, match", [
    ({}, dict(eta0=0.0), "eta0"), ({}, dict(eta0=-0.1), "eta0"), ({}, dict(eta0=np.inf), "eta0"),
    ({}, dict(steps=0), "steps"), ({}, dict(steps=2.5), "steps"), ({}, dict(save_every=0), "save_every"),
    ({}, dict(steps=10, save_every=3), "multiple of save_every"),
    ({}, dict(method="magic"), "method"), ({}, dict(dynamics="sgd"), "dynamics"),
    ({}, dict(sampler="halton"), "sampler"), ({}, dict(precision="half"), "precision"),
    ({}, dict(precision="mixed", method="iterate"), "precision='mixed'"),
    (dict(gamma0=0.01), dict(precision="mixed"), "gamma0 >= 0.05"), ({}, dict(samples=63, replicas=4), "samples"),
    ({}, dict(replicas=0), "replicas"), ({}, dict(weight_decay=-1.0), "weight_decay"),
    ({}, dict(damping=1.5), "damping"), ({}, dict(tol=0.0), "tol"),
    ({}, dict(method="closure"), "closure.*exact"),
    ({}, dict(method="iterate", dynamics="flow"), "iterate"),
    ({}, dict(method="iterate", steps=10, save_every=5, window=3), "window"),
    ({}, dict(method="lazy", weight_decay=0.1), "weight_decay"),
    ({}, dict(sampler="quadrature", quadrature_nodes=64), "quadrature"),
    ({}, dict(steps=100000, save_every=1, max_memory_gb=0.001), "GiB"),
])
def test_solve_rejects_before_compute(data, model_kw, solve_kw, match):
    model = dmft.TwoLayer("tanh", **model_kw)
    args = dict(eta0=0.1, steps=10, save_every=5, samples=64, method="forward")
    args.update(solve_kw)
    before = dict(TRACE_COUNTS)
    with pytest.raises(ValueError, match=match):
        dmft.solve(model, data, **args)
    assert TRACE_COUNTS == before, "a rejected solve must not compile or run anything"


def test_fixed_readout_needs_one_output():
    x = _x()
    data = dmft.Dataset(x, np.ones((6, 3)))
    with pytest.raises(ValueError, match="fixed"):
        dmft.solve(dmft.TwoLayer("relu", readout="fixed"), data, steps=2, save_every=1)


def test_wrong_types_for_model_and_data(data):
    with pytest.raises(ValueError, match="model"):
        dmft.solve("tanh", data)
    with pytest.raises(ValueError, match="data"):
        dmft.solve(dmft.TwoLayer(), (np.ones((3, 2)), np.ones(3)))


def test_divergence_reports_the_step(data):
    """A step far beyond stability overflows; the error names the step and keeps the records."""
    model = dmft.TwoLayer("relu", gamma0=1.0)
    with pytest.raises(dmft.DivergenceError, match="step") as err:
        dmft.solve(model, data, eta0=500.0, steps=400, save_every=20, samples=64, method="forward")
    assert err.value.step is not None and 0 <= err.value.step < 400
    assert err.value.partial["f_train"].shape[0] >= 1


def test_iterate_that_does_not_converge_says_so(data):
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    with pytest.raises(dmft.NotConverged, match="residual") as err:
        dmft.solve(model, data, eta0=0.5, steps=20, save_every=10, samples=64, method="iterate",
                   max_iter=1, tol=1e-14)
    assert len(err.value.residuals) == 2 and err.value.solution is not None
