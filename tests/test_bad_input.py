"""Bad input: one clear ValueError naming the argument, before any compute."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import dmft
import networks
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


_DTYPES = st.sampled_from([np.float64, np.float32, np.int64, np.int32, np.bool_])


@settings(max_examples=40, deadline=None)
@given(dx=_DTYPES, dxt=_DTYPES, dy=_DTYPES, dyt=_DTYPES)
def test_test_arrays_need_the_training_arrays_dtypes(dx, dxt, dy, dyt):
    """x_test has x_train's dtype and y_test y_train's (the docstring says so): any other pair is
    refused naming the array and the fix; equal dtypes, of any real kind, are accepted."""
    x, y = (np.arange(12).reshape(6, 2) % 2).astype(dx), (np.arange(6) % 2).astype(dy)
    xt, yt = (np.arange(8).reshape(4, 2) % 2).astype(dxt), (np.arange(4) % 2).astype(dyt)
    bad = "x_test" if dx != dxt else "y_test" if dy != dyt else None
    if bad is None:
        assert dmft.Dataset(x, y, xt, yt).P_test == 4
        return
    with pytest.raises(dmft.InputError, match=f"^{bad}: dtype .* differs from .*give both the same dtype"):
        dmft.Dataset(x, y, xt, yt)


@pytest.mark.parametrize("kwargs, match", [
    (dict(gamma0=0.0), "gamma0"), (dict(gamma0=-1.0), "gamma0"), (dict(gamma0=np.nan), "gamma0"),
    (dict(gamma0="big"), "gamma0"), (dict(activation="sigmoidal"), "activation.*unknown"),
    (dict(activation=3), "activation"), (dict(readout="frozen"), "readout"),
    (dict(centered="yes"), "centered"), (dict(activation=lambda h: h[:1]), "activation"),
])
def test_model_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dmft.TwoLayer(**kwargs)


@given(eps=st.one_of(st.just(float("inf")), st.just(float("nan")), st.text(max_size=4), st.booleans(),
                   st.binary(max_size=3), st.none(), st.just([0.1])))
def test_quadratic_eps_must_be_a_finite_real_number(eps):
    """Not finite, text ("0.1", which float() read), booleans, None or a list: refused naming eps."""
    with pytest.raises(dmft.InputError, match="eps"):
        dmft.activations.quadratic(eps)


@given(name=st.one_of(st.integers(), st.just(""), st.just("  "), st.binary(max_size=3), st.just(["a"])))
def test_a_custom_activation_name_is_a_non_empty_str(name):
    with pytest.raises(dmft.InputError, match="name"):
        dmft.activations.custom(np.tanh, name=name)


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(["relu", "tanh", "erf", "softplus", "square", "linear", "quadratic"]),
       case=st.sampled_from([str.lower, str.upper, str.title]), implicit=st.booleans())
def test_a_custom_activation_named_as_a_built_in_is_refused(name, case, implicit):
    """Results record an activation by its name: a user's `def relu(h): return relu(h) ** 1.5` was
    recorded as the built-in relu, so Run.predict rebuilt the built-in (0.32 off the run's own
    f_test) and validation.compare paired it with a built-in relu solve. Refused, naming the fix."""
    def fn(h):
        return jnp.maximum(h, 0.0) ** 1.5
    fn.__name__ = case(name)
    with pytest.raises(dmft.InputError, match=f"named '{case(name)}' would be recorded as the built-in"):
        dmft.TwoLayer(fn) if implicit else dmft.activations.custom(lambda h: jnp.sin(h), name=case(name))


def test_networks_predict_with_the_activation_they_trained_with(tmp_path):
    """Run.predict rebuilt the model from the run's description even in memory: a custom activation
    was refused there ('train with keep_params=True', which was given) or, named as a built-in,
    replaced by it. In memory it predicts with the model trained (equal to its own f_test); loaded
    from disk a custom one says why it cannot (the parameters are there)."""
    rng = np.random.default_rng(0)
    x, xt = rng.normal(size=(10, 3)), rng.normal(size=(6, 3))
    data = dmft.Dataset(x, np.tanh(x[:, 0]), xt, np.tanh(xt[:, 0]))
    model = dmft.TwoLayer(dmft.activations.custom(lambda h: jnp.maximum(h, 0.0) ** 1.5, name="relu15"))
    run = networks.train(model, data, width=16, seeds=2, eta0=0.5, steps=20, save_every=10, keep_params=True)
    np.testing.assert_allclose(run.predict(xt), run.f_test[:, -1], rtol=1e-12, atol=1e-14)
    run.save(str(tmp_path / "run"))
    with pytest.raises(dmft.InputError, match="the parameters are here, but the model cannot be rebuilt"):
        networks.Run.load(str(tmp_path / "run")).predict(xt)


@pytest.mark.parametrize("fn, derivative", [
    (np.tanh, None), (lambda h: np.tanh(h), None),
    (lambda h: np.tanh(h), lambda h: 1 - np.tanh(h) ** 2),      # what the former error advised
    (lambda h: jnp.asarray(np.tanh(h)), None),                   # numpy inside, a JAX array out
    (lambda h: jnp.tanh(h) if float(h[0]) < 0 else h, None),     # a Python branch on values
    (jnp.tanh, lambda h: 1 - np.tanh(h) ** 2)])                  # a numpy derivative
def test_a_custom_activation_the_solvers_cannot_compile_is_refused_up_front(fn, derivative):
    """Each of these runs on an array, so it was accepted, and the solve failed inside its
    compiled step with a raw JAX traceback (a review's user followed the advice to pass
    derivative= and met it); refused now, naming jax.numpy. A jax.numpy one is accepted."""
    with pytest.raises(dmft.InputError, match="jax.numpy"):
        dmft.activations.custom(fn, derivative=derivative)
    if derivative is None:                                       # as a model's activation too
        with pytest.raises(dmft.InputError, match="jax.numpy"):
            dmft.TwoLayer(fn)
    act = dmft.activations.custom(lambda h: jnp.tanh(h) + 0.1 * h)
    np.testing.assert_allclose(act.derivative(jnp.zeros(1)), [1.1])


@pytest.mark.parametrize("fn", [lambda h: h - h.mean(), lambda h: jnp.tanh(h) / jnp.linalg.norm(h),
                                lambda h: jnp.cumsum(h), lambda h: jnp.sort(h), lambda h: h[::-1]])
def test_a_custom_activation_that_is_not_elementwise_is_refused(fn):
    """h - h.mean() keeps the shape and traces, so it was accepted, and the DMFT (which calls
    it on each node's fields) and the networks computed different things (train loss 0.0499
    against 0.0429 at width 512: a user's report); refused now, as its derivative would be."""
    with pytest.raises(dmft.InputError, match="must be elementwise"):
        dmft.TwoLayer(fn)
    with pytest.raises(dmft.InputError, match="activation derivative: the callable must be elementwise"):
        dmft.activations.custom(jnp.tanh, derivative=fn)


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
    ({}, dict(dynamics="flow", eta0=0.5, weight_decay=6.0), "RK4"),
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


@pytest.mark.parametrize("activation, has_limit", [("relu", False), ("softplus", False), ("square", False),
                                                   ("tanh", True), ("erf", True)])
def test_lazy_needs_a_lazy_limit(data, activation, has_limit, tmp_path, capsys):
    """Fixed readouts with an uncentered output start at f = E[phi] / gamma0: where that mean is
    not zero there is no gamma0 -> 0 kernel regime, and the lazy method (and every sweep that
    compares with it) refuses before compute; odd activations (zero mean) keep their limit."""
    import validation
    from experiments import cli
    model = dmft.TwoLayer(activation, gamma0=0.1, readout="fixed", centered=False)
    kw = dict(eta0=0.1, steps=10, save_every=5)
    assert (dmft.plan.no_lazy_limit(model, data) is None) == has_limit
    assert dmft.plan.no_lazy_limit(model.replace(centered=True), data) is None
    if has_limit:
        assert np.all(np.isfinite(dmft.solve(model, data, method="lazy", **kw).test_loss))
        return
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.InputError, match="no lazy limit"):
        dmft.solve(model, data, method="lazy", **kw)
    with pytest.raises(dmft.InputError, match="no lazy limit"):
        dmft.solve_batch(model, data, {"gamma0": [0.1, 0.2]}, method="lazy", **kw)
    with pytest.raises(dmft.InputError, match="no lazy limit"):
        validation.lazy_to_rich(model, data, [0.5], [8], 2, solve_kw=kw)
    assert TRACE_COUNTS == before
    out = tmp_path / "v"
    assert cli.main(["validate", "--out", str(out), "--no-progress", "--set", f"model.activation='{activation}'",
                     "--set", "model.readout='fixed'", "--set", "model.centered=false"]) == cli.EXIT_CONFIG
    assert "no lazy limit" in capsys.readouterr().err and not out.exists()


def test_gradient_flow_refuses_a_step_past_rk4_stability(data):
    """dynamics='flow' is RK4 at step eta0: past its stability on the fastest initial kernel rate
    it returned finite numbers that are no flow (test loss 3e7 where the flow gives 0.26)."""
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    rate = np.linalg.eigvalsh(dmft.solve(model, data, eta0=0.1, steps=1, save_every=1, method="lazy",
                                         kernels=True).ntk[0])[-1] / data.P
    for method in ("forward",):
        with pytest.raises(dmft.InputError, match="RK4"):
            dmft.solve(model, data, eta0=2.9 / rate, steps=4, save_every=2, dynamics="flow", samples=64,
                       method=method)
        ok = dmft.solve(model, data, eta0=2.6 / rate, steps=4, save_every=2, dynamics="flow", samples=64,
                        method=method)
        assert np.all(np.isfinite(ok.test_loss))
    lazy = dmft.solve(model, data, eta0=2.9 / rate, steps=4, save_every=2, dynamics="flow", method="lazy")
    assert np.all(np.isfinite(lazy.test_loss))                      # exact exponentials: no step limit


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


# ------------------------------------------------------------------ sizes counted before anything is built

@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=10 ** 9, save_every=1), "save_every: 1000000000 saves"),     # was 8 GB and 21 s
    (dict(steps=10 ** 10, save_every=1), "steps must be <="),                # was a raw MemoryError
    (dict(steps=2 ** 70, save_every=1), "steps must be <="),                 # was a raw OverflowError
    (dict(steps=10 ** 9, save_at="log", n_saves=10 ** 10), "n_saves"),
    (dict(steps=10 ** 9, save_at=np.arange(1, 10 ** 7 + 2)), "save_at"),
])
def test_schedule_counts_its_saves_before_building_them(kwargs, match):
    import time
    t0 = time.perf_counter()
    with pytest.raises(dmft.InputError, match=match):
        dmft.Schedule(eta0=0.1, **kwargs)
    assert time.perf_counter() - t0 < 1.0


def test_inputs_whose_squares_overflow_are_refused_by_name(data):
    """|x|^2 / D = inf from finite x: x_train at construction, x_new at predict, never a raw
    OverflowError from the kernels' node count."""
    with pytest.raises(dmft.InputError, match="x_train"):
        dmft.Dataset(data.x_train * 1e200, data.y_train)
    with pytest.raises(dmft.InputError, match="x_test"):
        dmft.Dataset(data.x_train, data.y_train, data.x_test * 1e160)
    sol = dmft.solve(dmft.TwoLayer("tanh"), data, eta0=0.5, steps=4, save_every=2, samples=64,
                     method="forward")
    with pytest.raises(dmft.InputError, match="x_new"):
        sol.predict(np.full((2, 3), 1e200))
    with pytest.raises(dmft.InputError, match="not finite"):
        dmft.activations.grid_nodes(float("inf"), 64)


@pytest.mark.parametrize("key", [3, "k", True, 1.5, jax.random.split(jax.random.key(0))])
def test_solve_batch_checks_the_key_as_solve_does(data, key):
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.InputError, match="key"):
        dmft.solve_batch(dmft.TwoLayer("linear"), data, {"gamma0": [1.0]}, eta0=0.5, steps=4,
                         save_every=2, key=key)
    with pytest.raises(dmft.InputError, match="key"):
        dmft.solve(dmft.TwoLayer("linear"), data, eta0=0.5, steps=4, save_every=2, key=key)
    assert TRACE_COUNTS == before


@pytest.mark.parametrize("grid, kw", [
    ({"eta0": [0.1, 0.5], "weight_decay": [1.0, 3.0]}, {}),
    ({"weight_decay": [0.0, 3.0]}, dict(eta0=0.5)),
    ({"eta0": [0.1, 0.5]}, dict(weight_decay=2.0)),
])
def test_solve_batch_refuses_points_a_schedule_refuses(data, grid, kw):
    """eta0 * weight_decay >= 1 at any point: refused before any batch runs, as Schedule does."""
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.InputError, match="weight_decay.*point"):
        dmft.solve_batch(dmft.TwoLayer("linear"), data, grid, steps=4, save_every=2, batch_size=1, **kw)
    assert TRACE_COUNTS == before


@settings(max_examples=20, deadline=None)
@given(field=st.sampled_from(["gamma0", "eta0"]), at=st.integers(0, 2),
       bad=st.one_of(st.floats(1e-323, 1e-309), st.sampled_from([1e-200, 1e-160, 1e155, 1e200, 1e300])))
def test_solve_batch_refuses_the_scales_solve_refuses(data, field, at, bad):
    """dmft.solve refuses a gamma0 whose square or inverse square float64 cannot hold and an eta0
    that is not a normal float; solve_batch ran eta0 = 1e-320 (16 s, no step moved) and read
    gamma0 = 1e200 as a divergence. Refused now, naming the value, before any trace."""
    from dmft.plan import gamma0_range
    low, high = gamma0_range("float64")
    assume(not (low <= bad <= high) if field == "gamma0" else bad < np.finfo(np.float64).tiny)
    values = [0.5, 1.0, 0.25]
    values[at] = bad
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.InputError, match=f"^{field} = .* is outside"):
        dmft.solve_batch(dmft.TwoLayer("relu"), data, {field: values}, eta0=0.5, steps=4, save_every=2)
    with pytest.raises(dmft.InputError, match=f"^{field} = "):         # (or below what forward resolves)
        dmft.solve(dmft.TwoLayer("relu", **({"gamma0": bad} if field == "gamma0" else {})), data,
                   eta0=bad if field == "eta0" else 0.5, steps=4, save_every=2)
    assert TRACE_COUNTS == before


@pytest.mark.parametrize("fn", [lambda w: w, lambda: 0.0, lambda w, w0, extra: w,
                                lambda w, w0: np.outer(w, w0), lambda w, w0: "text"])
def test_neuron_measures_of_the_wrong_form_are_refused_before_tracing(data, fn):
    import networks
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.InputError, match="neuron_measures"):
        dmft.solve(dmft.TwoLayer("tanh"), data, eta0=0.5, steps=4, save_every=2, samples=64,
                   method="forward", neuron_measures=fn)
    with pytest.raises(dmft.InputError, match="neuron_measures"):
        networks.train(dmft.TwoLayer("tanh"), data, eta0=0.5, steps=4, save_every=2, width=8, seeds=2,
                       neuron_measures=fn)
    assert TRACE_COUNTS == before


@pytest.mark.parametrize("fn", [lambda w, w0: jnp.log(w[:1]), lambda w, w0: jnp.full((2,), jnp.nan) + w[0]])
def test_non_finite_neuron_measures_name_the_function_not_the_step_size(data, fn):
    """A neuron_measures function that returns NaN on finite weights (a log of a negative weight) is
    the user's function's fault: the error names it, and does not say to lower eta0 or gamma0 (it did)."""
    import networks
    with pytest.raises(dmft.DivergenceError, match="'measures' is not finite in the initial record") as err:
        dmft.solve(dmft.TwoLayer("tanh"), data, eta0=0.5, steps=4, save_every=2, samples=64, replicas=2,
                   method="forward", neuron_measures=fn)
    assert "check that function" in str(err.value) and "eta0" not in str(err.value)
    with pytest.raises(dmft.DivergenceError, match="neuron_measures function") as err:
        networks.train(dmft.TwoLayer("tanh"), data, eta0=0.5, steps=4, save_every=2, width=8, seeds=2,
                       neuron_measures=fn)
    assert "eta0" not in str(err.value)


@pytest.mark.parametrize("kw, match", [(dict(dtype=3), "dtype"), (dict(dtype="int8"), "dtype"),
                                       (dict(colour="red"), "colour"), (dict(block="all"), "block"),
                                       (dict(probe=64), "probe: the diffusion on a fixed set")])
def test_deep_linear_training_options_are_checked(kw, match):
    """probe on a fixed set was accepted and ignored (the diffusion is exact over the P points)."""
    import networks
    teacher = dmft.tasks.linear_teacher(4, 4, [3.0, 2.0], P=16, key=0)
    with pytest.raises(dmft.InputError, match=match):
        networks.train(dmft.DeepLinear(3, 6, 0.5), teacher, eta0=0.01, steps=4, save_every=2, seeds=2, **kw)


@pytest.mark.parametrize("schedule", [None, {"eta0": 0.01, "steps": 4}, 0.01])
def test_train_deep_linear_refuses_a_schedule_that_is_not_one(schedule):
    """A None or dict schedule failed inside with an AttributeError."""
    from networks.deep_linear import train_deep_linear
    teacher = dmft.tasks.linear_teacher(4, 4, [3.0, 2.0], P=16, key=0)
    with pytest.raises(dmft.InputError, match="schedule must be a dmft.Schedule"):
        train_deep_linear(dmft.DeepLinear(3, 6, 0.5), teacher, schedule, seeds=2)


def test_sgd_mean_checks_its_arguments(data):
    sch = dmft.Schedule(0.5, 4, 2, batch_size=3)
    with pytest.raises(dmft.InputError, match="data"):
        dmft.sgd_mean(dmft.TwoLayer("tanh"), "data", sch)
    with pytest.raises(dmft.InputError, match="model"):
        dmft.sgd_mean("tanh", data, sch)
    with pytest.raises(dmft.InputError, match="batch_key"):
        dmft.sgd_mean(dmft.TwoLayer("tanh"), data, sch, batch_key=jax.random.key(1))


@settings(max_examples=12, deadline=None)
@given(B=st.one_of(st.none(), st.integers(1, 6)))          # (P = 6; above P is refused as such)
def test_a_batch_key_under_full_batch_descent_is_refused_not_ignored(data, B):
    """solve, solve_batch, a BatchProgram's call and networks.train (two-layer and deep linear, on
    a fixed set) ignored a batch_key under full-batch descent (batch_size None or P): a user who
    meant SGD got gradient descent without a word (a deep linear run even recorded it as shared
    batches). Refused there, naming it, before any compute; under SGD it is taken."""
    import sys

    class Ran(Exception):
        pass

    def ran(*a, **k):
        raise Ran
    patch = pytest.MonkeyPatch()               # (a function-scoped fixture would outlive the examples)
    patch.setattr(sys.modules["dmft.solve"], "run_plan", ran)          # (no compute either way)
    patch.setattr(sys.modules["networks.train"], "run_width", ran)
    sch = dmft.Schedule(0.5, 4, 2, batch_size=B)
    bk, full = jax.random.key(1), B is None or B >= data.P
    teacher = dmft.tasks.linear_teacher(2, 2, [2.0, 1.0], P=6, key=0)          # (P = 6 as data's)
    patch.setattr(sys.modules["networks.deep_linear"], "run_saved", ran)
    batch = sys.modules["dmft.batch"]
    prog = dmft.BatchProgram(dmft.TwoLayer("tanh"), data, schedule=sch, fields=("gamma0",), samples=64)
    patch.setattr(batch.BatchProgram, "save_counts", ran)          # (a call's first step after its checks)
    try:
        for call in (lambda: dmft.solve(dmft.TwoLayer("tanh"), data, sch, samples=64, batch_key=bk),
                     lambda: dmft.solve_batch(dmft.TwoLayer("tanh"), data, {"gamma0": [1.0]}, schedule=sch,
                                              samples=64, batch_key=bk),
                     lambda: prog({"gamma0": [1.0]}, [0], batch_key=bk),
                     lambda: networks.train(dmft.TwoLayer("tanh"), data, schedule=sch, width=4, seeds=1, batch_key=bk),
                     lambda: networks.train(dmft.DeepLinear(2, 3, 0.5, "aligned"), teacher, schedule=sch, seeds=1,
                                            batch_key=bk)):
            with pytest.raises(dmft.InputError if full else Ran,
                               match="^batch_key: given, but the schedule is full-batch" if full else None):
                call()
    finally:
        patch.undo()


@pytest.mark.parametrize("make", [lambda: dmft.TwoLayer(gamma0=True), lambda: dmft.TwoLayer(gamma0=np.bool_(1)),
                                  lambda: dmft.Schedule(eta0=True), lambda: dmft.Schedule(steps=True),
                                  lambda: dmft.Schedule(steps=10, save_at=[True, 3]),
                                  lambda: dmft.Schedule(steps=10, save_at=np.array([False, True]))])
def test_booleans_are_not_numbers(make):
    with pytest.raises(dmft.InputError, match="gamma0|eta0|steps|save_at"):
        make()


@pytest.mark.parametrize("call", ["train", "sweep_widths", "sweep_gamma0s"])
def test_repeated_widths_or_gamma0s_are_refused_before_compute(data, call):
    """Results keyed by width or gamma0 kept one of two equal values without a word (a list of
    widths [16, 16] trained twice and returned one run; a sweep over gamma0 [1, 1] one solution)."""
    import networks
    import validation

    model, sch = dmft.TwoLayer("relu"), dmft.Schedule(eta0=0.5, steps=4, save_every=2)
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.InputError, match="distinct"):
        if call == "train":
            networks.train(model, data, width=[16, 8, 16], seeds=2, schedule=sch)
        else:
            gamma0s, widths = ([1.0, 1.0], [8]) if call == "sweep_gamma0s" else ([1.0], [8, 8])
            validation.lazy_to_rich(model, data, gamma0s, widths, 2, schedule=sch, solve_kw=dict(samples=64))
    assert TRACE_COUNTS == before


def test_a_list_of_widths_counts_the_runs_it_keeps_against_the_memory_limit():
    """Each width was checked alone while the finished widths' runs stayed in memory: six widths
    with kernels passed a 2 GiB limit one by one and peaked at 2.8 GiB (review). The runs kept
    before a width now count against it."""
    import networks
    from networks.train import kept_bytes, memory_estimate

    data = dmft.tasks.single_index(D=8, P=100, P_test=20, degree=2, key=0)
    sch = dmft.Schedule(0.1, 200, 1)
    networks.plan_train(dmft.TwoLayer("tanh"), data, sch, [8], 8, kernels=True, max_memory_gb=2.0)
    with pytest.raises(dmft.InputError, match="of it the runs of the widths before it"):
        networks.plan_train(dmft.TwoLayer("tanh"), data, sch, [8, 16, 24, 32, 40, 48], 8, kernels=True,
                            max_memory_gb=2.0)
    one = kept_bytes(data, 8, 8, sch.save_steps.size, True, False)
    assert one > 8 * 8 * 201 * 3 * 100 * 100 and one < memory_estimate(data, 8, 8, sch.save_steps.size, True)


@pytest.mark.filterwarnings("ignore::dmft.errors.Float32Warning")   # (float32 on purpose)
@settings(max_examples=30, deadline=None)
@given(log_gamma0=st.floats(-16, 0), x64=st.booleans(), method=st.sampled_from(["forward", "iterate", "closure"]))
def test_a_sampled_method_refuses_a_gamma0_its_rounding_would_decide(data, log_gamma0, x64, method):
    """The forward and iterate methods divide their node sums' rounding by gamma0: at 1e-14 in
    float64 (1e-6 in float32) the test loss was off by 1e-2 (0.3) with no error. Below
    SAMPLED_MIN_GAMMA0 of the working float type they are refused, in solve and in a batch,
    before anything runs; the closure (exact there) is not."""
    from dmft.plan import SAMPLED_MIN_GAMMA0, plan_solve

    gamma0 = 10.0 ** log_gamma0
    floor = SAMPLED_MIN_GAMMA0["float64" if x64 else "float32"]
    model = dmft.TwoLayer("linear", gamma0=gamma0)
    sch = dmft.Schedule(0.1, 4, 2)
    jax.config.update("jax_enable_x64", x64)
    try:
        refused = method != "closure" and gamma0 < floor
        if refused:
            with pytest.raises(dmft.InputError, match="gamma0 = .* is below what method"):
                plan_solve(model, data, sch, method=method, samples=64)
        else:
            plan_solve(model, data, sch, method=method, samples=64)
        prog = dmft.BatchProgram(dmft.TwoLayer("linear"), data, schedule=sch, fields=("gamma0",),
                                 method=method if method != "iterate" else "forward", samples=64)
        if method != "iterate":
            if refused:
                with pytest.raises(dmft.InputError, match="is below what method"):
                    prog.check_points({"gamma0": [1.0, gamma0]})
            else:
                prog.check_points({"gamma0": [1.0, gamma0]})
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.filterwarnings("ignore::dmft.errors.Float32Warning")   # (float32 on purpose)
@settings(max_examples=60, deadline=None)
@given(log_gamma0=st.floats(-320, 300), log_eta0=st.floats(-330, 30), x64=st.booleans(),
       method=st.sampled_from(["lazy", "closure"]))
def test_solve_refuses_a_gamma0_or_eta0_its_float_type_cannot_hold(data, log_gamma0, log_eta0, x64, method):
    """gamma0^2 and 1/gamma0^2 vanish or overflow outside `dmft.plan.gamma0_range` of the working
    float type: the closure at gamma0 = 1e-300 said its train loss was not finite at t = 0 and
    advised a lower gamma0, and in float32 an eta0 of 1e-300 ran as 0 (no step moved). Both are
    refused, naming the argument and its range, whatever the method."""
    from dmft.plan import gamma0_range, plan_solve

    gamma0, eta0 = 10.0 ** log_gamma0, 10.0 ** log_eta0
    assume(gamma0 > 0 and eta0 > 0)
    dtype = "float64" if x64 else "float32"
    low, high = gamma0_range(dtype)
    info = np.finfo(dtype)
    model = dmft.TwoLayer(dmft.activations.quadratic(0.5), gamma0=gamma0, readout="fixed")
    sch = dmft.Schedule(eta0, 4, 2)
    jax.config.update("jax_enable_x64", x64)
    try:
        if not low <= gamma0 <= high:
            with pytest.raises(dmft.InputError, match=f"gamma0 = .* is outside .* {dtype} holds"):
                plan_solve(model, data, sch, method=method)
        elif eta0 < info.tiny:
            with pytest.raises(dmft.InputError, match=f"eta0 = .* {dtype} .* would run as 0"):
                plan_solve(model, data, sch, method=method)
        else:
            plan_solve(model, data, sch, method=method)
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("phi", [lambda h: jax.numpy.log(4.0 + h), lambda h: jax.numpy.sqrt(16.0 - h ** 2)])
@pytest.mark.parametrize("method", ["lazy", "forward"])
def test_an_activation_without_gaussian_kernels_is_refused_naming_it(data, phi, method):
    """A callable finite on the construction check's [-3, 3] but undefined further out has no
    lazy kernels: refused naming the activation (it was a DivergenceError at t = 0 advising a
    smaller eta0)."""
    with pytest.raises(dmft.InputError, match="lazy kernels .* are not finite"):
        dmft.solve(dmft.TwoLayer(phi, gamma0=0.5), data, eta0=0.1, steps=4, save_every=2, method=method,
                   samples=64)


@settings(max_examples=25, deadline=None)
@given(c=st.floats(0.01, 3.0), scale=st.floats(0.2, 3.0))
def test_an_activation_whose_gaussian_moment_does_not_exist_is_refused(c, scale):
    """phi = exp(c h^2): E[phi(u)^2] exists iff 4 c var(u) < 1. Where it does not, its quadrature
    on the +-9 std grid was finite and every solve diverged at t = 0 (DivergenceError advising a
    smaller eta0): refused before any compute, naming the activation. Where it exists with room
    (4 c var <= 1/2) it is accepted."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4))
    x *= scale / np.sqrt(np.max(np.sum(x * x, axis=1) / 4))        # largest field variance = scale^2
    data = dmft.Dataset(x, np.tanh(x[:, 0]))
    model = dmft.TwoLayer(lambda h: jax.numpy.exp(c * h * h), gamma0=0.5)
    sch = dmft.Schedule(eta0=0.1, steps=4, save_every=2)
    moment = 4 * c * scale ** 2
    if moment >= 1:
        with pytest.raises(dmft.InputError, match="activation '<lambda>'.*(does not exist|not finite)"):
            dmft.plan_solve(model, data, sch, samples=64)
    elif moment <= 0.5:
        dmft.plan_solve(model, data, sch, samples=64)
    # a legitimate activation that is nearly zero on the fields (a relu thresholded at 8 standard
    # deviations: E[phi^2] ~ 1e-16, its grid ends carry 1e-20) is no missing moment
    thresholded = dmft.TwoLayer(lambda h: jax.numpy.maximum(h - 8 * scale, 0.0), gamma0=0.5)
    dmft.plan_solve(thresholded, data, sch, samples=64)


def _tanh_kernels_by_hand(k: float) -> tuple[float, float]:
    """(E[tanh(u)^2], E[tanh'(u)^2]) for u ~ N(0, k), independently of the library: both as
    integrals of sech^2 / sech^4 (1 - E[sech^2] for the first), which vanish beyond |u| ~ 40, on
    a fine grid there."""
    u = np.linspace(-40.0, 40.0, 400001)
    dens = np.exp(-u * u / (2 * k)) / np.sqrt(2 * np.pi * k)
    sech2 = 1.0 / np.cosh(u) ** 2
    du = u[1] - u[0]
    return 1.0 - np.sum(sech2 * dens) * du, np.sum(sech2 ** 2 * dens) * du   # (ends ~1e-35)


@settings(max_examples=12, deadline=None)
@given(log_variance=st.floats(2.0, 12.0), method=st.sampled_from(["lazy", "forward", "iterate"]),
       cv=st.sampled_from([None, True, False]))
def test_lazy_kernels_too_coarse_at_wide_inputs_are_refused_where_they_are_used(log_variance, method, cv):
    """Beyond field variance ~290 the trapezoid grid of the lazy kernels is capped at 1024 nodes,
    and its step no longer resolves tanh' near 0: G0 is 2% off at variance 3e3, 34% at 1e4. The
    solve used them anyway, with a warning that said 'less accurate': the control variate turned
    a loss of 0.004 into 1689 +- 6378, or a divergence that was not there. The error of the
    capped rule is measured at the widest field (`capped_grid_error`, checked here against an
    integral by hand), and a solve that uses the kernels (method='lazy', or a control variate
    asked for) is refused above KERNEL_ERROR_MAX, naming the activation; a control variate left to
    the solver (None) is turned off there with a warning; control_variate=False is accepted."""
    k = 10.0 ** log_variance
    want = _tanh_kernels_by_hand(k)
    kk = jax.numpy.asarray([k])
    rule = [float(v[0]) for v in dmft.activations.get("tanh").lazy_kernels(kk, kk, kk)]
    err = max(abs(a - b) / b for a, b in zip(rule, want))
    got = dmft.activations.capped_grid_error(dmft.activations.get("tanh"), k)
    assert got == pytest.approx(err, rel=1e-3, abs=1e-7)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3))
    x *= np.sqrt(k / np.max(np.sum(x * x, axis=1) / 3))            # largest field variance = k
    data = dmft.Dataset(x, np.tanh(x[:, 0] / np.sqrt(k)))
    sch = dmft.Schedule(eta0=1e-4, steps=4, save_every=2)
    kw = {} if method == "lazy" else {"control_variate": cv, "samples": 64}
    if method == "lazy" and cv is not None:
        return
    inexact = err > dmft.plan.KERNEL_ERROR_MAX
    if inexact and (method == "lazy" or cv is True):
        with pytest.raises(dmft.InputError, match="activation 'tanh': at the widest field .* off by"):
            dmft.plan_solve(dmft.TwoLayer("tanh"), data, sch, method=method, **kw)
    elif inexact and cv is None:              # the solver's own choice: turned off, and said
        with pytest.warns(UserWarning, match="activation 'tanh': at the widest field .* the control variate"):
            plan = dmft.plan_solve(dmft.TwoLayer("tanh"), data, sch, method=method, **kw)
        assert plan.control_variate is False and plan.cv_mode == "off"
    else:
        plan = dmft.plan_solve(dmft.TwoLayer("tanh"), data, sch, method=method, **kw)
        assert plan.control_variate == (cv is not False or method == "lazy") or method == "lazy"


@settings(max_examples=10, deadline=None)
@given(log_variance=st.floats(2.5, 8.0), kink=st.floats(2.0, 60.0))
def test_a_kinked_activations_capped_piecewise_rule_is_measured_and_refused_where_off(log_variance, kink):
    """Declared kinks are integrated by Gauss-Legendre pieces between them; at a capped grid the
    check that doubles the nodes raised both counts back to the cap and compared the rule with
    itself (0), so a kinked activation's kernels went unchecked at wide inputs. erf declared with
    a (needless) kink off the origin has known kernels: the measured error (`capped_grid_error`)
    is the rule's true error, and method='lazy' is refused above KERNEL_ERROR_MAX naming it."""
    k = 10.0 ** log_variance
    act = dmft.activations.custom(jax.scipy.special.erf, "erf_kinked", kinks=(kink,))
    x = np.random.default_rng(0).standard_normal((8, 3))
    x *= np.sqrt(k / np.max(np.sum(x * x, axis=1) / 3))            # largest field variance = k
    data = dmft.Dataset(x, np.tanh(x[:, 0] / np.sqrt(k)))
    # k as the plan reads it off the data (to rounding the same): plan_solve's check then finds the
    # capped rule's error measured below (capped_grid_error keeps it) instead of integrating again
    k = float(np.max(np.sum(x * x, axis=1) / 3))
    kk = jax.numpy.asarray([k])
    rule = [float(v[0]) for v in act.lazy_kernels(kk, kk, kk)]
    exact = [2 / np.pi * np.arctan2(2 * k, np.sqrt(1 + 4 * k)), 4 / np.pi / np.sqrt(1 + 4 * k)]
    err = max(abs(a - b) / b for a, b in zip(rule, exact))
    assert dmft.activations.capped_grid_error(act, k) == pytest.approx(err, rel=1e-3, abs=1e-12)
    sch = dmft.Schedule(eta0=1e-4, steps=4, save_every=2)
    if err > dmft.plan.KERNEL_ERROR_MAX:
        with pytest.raises(dmft.InputError, match="activation 'erf_kinked': at the widest field .* off by"):
            dmft.plan_solve(dmft.TwoLayer(act), data, sch, method="lazy")
    else:
        dmft.plan_solve(dmft.TwoLayer(act), data, sch, method="lazy")


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 400), log_scale=st.floats(-300, 300))
def test_a_deep_linear_mode_init_past_float64_is_refused_by_name(depth, log_scale):
    """init_scale^depth past float64's range raised OverflowError from mode_init: now InputError
    naming init_scale; an underflow is 0.0 (the per-mode theory works in logs there)."""
    import math

    m = dmft.DeepLinear(depth, 8, 10.0 ** log_scale, "aligned")
    if depth * math.log(m.init_scale) >= math.log(np.finfo(np.float64).max):
        with pytest.raises(dmft.InputError, match="init_scale: init_scale\\^depth"):
            m.mode_init
    else:
        assert 0.0 <= m.mode_init < math.inf


def test_the_inputs_copies_are_counted_once_per_program():
    """The inputs' float64 copies bind when D >> P + P* (a plan at D = 4e5 was 0.31 of its
    measured peak without them), and a batch shares its geometry: they count once, not per
    point (32 points at D = 4e4 were refused at 4.6 GiB; measured 0.57)."""
    from dmft.plan import memory_estimate, plan_solve

    x = np.random.default_rng(0).normal(size=(100, 40000))
    data = dmft.Dataset(x[:50], x[:50, 0], x[50:], x[50:, 0])
    plan = plan_solve(dmft.TwoLayer("linear"), data, dmft.Schedule(0.1, 10, 10), method="closure")
    copies = 8.0 * 4 * 100 * 40000
    one, two = memory_estimate(plan), memory_estimate(plan, points=2)
    assert one > copies and two - one < copies / 4, (one, two, copies)


@settings(max_examples=25, deadline=None)
@given(case=st.sampled_from([
    ("task.teacher_activation", {"task.name": "'teacher_network'", "task.teacher_activation": "'bogus'"}),
    ("task.noise", {"task.noise": "1e300"}), ("task.degree", {"task.degree": "171"}),
    ("task.path", {"task.name": "'npz'", "task.path": "'no-such-file.npz'"}),
    ("model.activation", {"model.activation": "'bogus'"}),
    ("task.teacher_width", {"task.name": "'teacher_network'", "task.teacher_width": "0"})]),
    job=st.sampled_from(["solve", "simulate", "validate"]))
def test_the_command_names_the_configuration_key_a_generator_refuses(case, job):
    """A task generator's or model's refusal names the key the user set (it named the library's
    argument: 'activation: unknown name' for task.teacher_activation, where model.activation
    also exists), before anything is computed."""
    from experiments.jobs import load_config, preflight
    key, sets = case
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.errors.ConfigError) as err:
        preflight(load_config(None, [f"{k}={v}" for k, v in sets.items()]), job)
    assert str(err.value).startswith(key), str(err.value)
    if key.endswith("activation"):       # no library-only advice a file cannot follow
        assert "callable" not in str(err.value) and "known: erf, linear" in str(err.value)
        assert ("model.eps" in str(err.value)) == (key == "model.activation")
    assert TRACE_COUNTS == before


@pytest.mark.parametrize("job", ["solve", "simulate", "validate"])
def test_fixed_readouts_on_several_outputs_are_named_by_model_readout(job, tmp_path):
    """Fixed readouts with C > 1 outputs are refused by model.readout, not as a sweep point's
    failure: the refusal read '[sweep at gamma0 = 0.1]: readout=...', a gamma0 it does not depend
    on (a walkthrough's finding)."""
    from experiments.jobs import load_config, preflight
    x = np.random.default_rng(0).normal(size=(30, 4))
    dmft.Dataset(x[:20], np.tanh(x[:20, :3]), x[20:], np.tanh(x[20:, :3])).save(tmp_path / "c3.npz")
    sets = {"task.name": "'npz'", "task.path": f"'{tmp_path / 'c3.npz'}'", "model.readout": "'fixed'",
            "sweep.gamma0": "[0.1, 1.0]"}
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.errors.ConfigError) as err:
        preflight(load_config(None, [f"{k}={v}" for k, v in sets.items()]), job)
    assert str(err.value).startswith("model.readout='fixed' with several outputs"), str(err.value)
    assert "gamma0" not in str(err.value)
    assert TRACE_COUNTS == before


@pytest.mark.parametrize("job, sets, key", [
    ("simulate", {"simulate.widths": "[100000000]"}, "simulate.widths"),
    ("solve", {"theory.precision": "'mixed'", "sweep.gamma0": "[0.02]"}, "theory.precision"),
    ("validate", {"simulate.widths": "[100000000]"}, "simulate.widths")])
def test_the_command_names_the_key_a_solve_or_ensemble_check_refuses(job, sets, key):
    """The solve and ensemble checks of a sweep named the library's arguments ('width 1e8 x 8
    seeds needs ...', "precision='mixed' needs gamma0 >= 0.05"; found by the CLI audit): they
    name the configuration's keys, before anything is computed."""
    from experiments.jobs import load_config, preflight
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.errors.ConfigError) as err:
        preflight(load_config(None, [f"{k}={v}" for k, v in sets.items()]), job)
    assert str(err.value).startswith(key), str(err.value)
    if key.endswith("activation"):       # no library-only advice a file cannot follow
        assert "callable" not in str(err.value) and "known: erf, linear" in str(err.value)
        assert ("model.eps" in str(err.value)) == (key == "model.activation")
    assert TRACE_COUNTS == before


@given(name=st.sampled_from(["x_train", "y_train", "x_test", "y_test"]), scale=st.floats(1e160, 1e300))
def test_values_too_large_to_square_are_refused_naming_the_array_and_only_inputs_their_kernel(name, scale):
    """The message spoke of the input kernel for targets too (a review's y = 1e200)."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(6, 3)), "y_train": rng.normal(size=6),
              "x_test": rng.normal(size=(4, 3)), "y_test": rng.normal(size=4)}
    arrays[name] = arrays[name] * scale
    with pytest.raises(dmft.InputError, match=f"^{name}: values up to .* too large") as err:
        dmft.Dataset(**arrays)
    assert ("input kernel" in str(err.value)) == name.startswith("x")


def test_float32_is_said_when_the_entry_point_left_x64_off():
    """With JAX's x64 off everything ran in float32 and said so only in info['dtype']
    (precision='mixed' became 'full (float32)'). The solver, both kinds of networks and the mode
    SDE now warn (Float32Warning, naming the caller's line); with x64 on, or a deep linear dtype
    chosen, or the command's --x32, nothing is said."""
    import warnings

    from experiments import cli

    data = dmft.tasks.single_index(D=3, P=6, P_test=4, degree=1, key=0)
    teacher = dmft.tasks.linear_teacher(d_in=2, d_out=2, singular_values=[2.0], P=8, key=0)
    aligned = dmft.DeepLinear(2, 3, 0.5, "aligned")
    kw = dict(eta0=0.1, steps=2, save_every=2)
    calls = {"dmft.solve (precision='mixed')":
             lambda: dmft.solve(dmft.TwoLayer("linear"), data, method="closure", precision="mixed", **kw),
             "networks.train": lambda: networks.train(dmft.TwoLayer("tanh"), data, width=4, seeds=1, **kw),
             "networks.train (deep linear)": lambda: networks.train(aligned, teacher, seeds=1, batch_size=2, **kw),
             "mode_sde": lambda: dmft.deep_linear.mode_sde(aligned, teacher, paths=2, key=jax.random.key(0),
                                                                  batch_size=2, **kw)}
    jax.config.update("jax_enable_x64", False)
    try:
        for who, call in calls.items():
            with pytest.warns(dmft.errors.Float32Warning, match="jax_enable_x64 is off") as said:
                call()
            assert str(said[0].message).startswith(who + ":") and said[0].filename == __file__, said[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            networks.train(aligned, teacher, seeds=1, batch_size=2, dtype="float32", **kw)   # a choice
            cli._select_device(None, False)                                                   # --x32
            calls["dmft.solve (precision='mixed')"]()
    finally:
        jax.config.update("jax_enable_x64", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dmft.plan.warn_float32("dmft.solve")               # x64 on (each entry calls it as above)


@functools.cache
def _small_tanh_solution(method, cv):
    """The solution the prediction test below predicts from (each method and control variate
    solved once; predict reads it and changes nothing). Plain Monte Carlo nodes: the kernels' check
    at the new inputs is the point, not the sampler, whose stratified draw compiles for seconds."""
    data = dmft.tasks.single_index(D=4, P=8, P_test=4, degree=1, key=jax.random.key(0))
    kw = {} if method == "lazy" else {"samples": 256, "control_variate": cv, "sampler": "mc"}
    return data, dmft.solve(dmft.TwoLayer("tanh", gamma0=1.0), data, eta0=0.5, steps=4, save_every=2, method=method,
                            **kw)


@settings(max_examples=6, deadline=None)
@given(log_variance=st.floats(2.0, 8.0), method=st.sampled_from(["lazy", "forward"]), cv=st.booleans())
def test_predictions_at_wide_new_inputs_on_too_coarse_kernels_are_refused_naming_x_new(log_variance, method, cv):
    """predict at new inputs whose lazy kernels, on the capped grid, are off by more than
    KERNEL_ERROR_MAX ran on them with a 'less accurate' warning (tanh's G0 34% off at variance
    1e4): refused naming x_new where the prediction uses them (the lazy method, or the control
    variate), before any compute; accepted otherwise."""
    # (few points: an accepted prediction integrates the kernels of each new point with each
    # training point on a grid of up to 1024^2 nodes)
    data, sol = _small_tanh_solution(method, cv if method != "lazy" else None)
    x = np.asarray(data.x_test)
    k = 10.0 ** log_variance
    x = x * np.sqrt(k / np.max(np.sum(x * x, axis=1) / 4))            # widest new field variance = k
    # k as predict reads it off x (to rounding the same): its check then finds the error measured
    # here (capped_grid_error keeps it) instead of integrating again
    k = float(np.max(np.sum(x * x, axis=1) / 4))
    err = dmft.activations.capped_grid_error(dmft.activations.get("tanh"), k)
    if err > dmft.plan.KERNEL_ERROR_MAX and (method == "lazy" or cv):
        with pytest.raises(dmft.InputError, match="x_new: at the widest new field .* off by"):
            sol.predict(x)
    else:
        assert np.all(np.isfinite(sol.predict(x)))


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["sin", "tanh", "softplus"]), st.floats(0.05, 3.0).filter(lambda c: abs(c - 1) > 1e-3),
       st.floats(-1.0, 1.0))
def test_a_declared_derivative_that_is_not_the_callables_is_refused(name, scale, shift):
    """The DMFT integrates with a declared derivative, the networks train by JAX's gradient of the
    callable: sin with derivative 0 gave a DMFT whose first layer never moved beside networks whose
    moved by 0.5, and with 4 seeds the validate checks passed (a walkthrough). A derivative off by a
    factor (or a shift) is refused naming the point; the right one, and any convention at a
    declared kink, is accepted."""
    fn, d = {"sin": (jnp.sin, jnp.cos), "tanh": (jnp.tanh, lambda h: 1 - jnp.tanh(h) ** 2),
             "softplus": (jax.nn.softplus, jax.nn.sigmoid)}[name]
    with pytest.raises(dmft.InputError, match="not the callable's derivative: at h = "):
        dmft.activations.custom(fn, name="mine", derivative=lambda h: scale * d(h))
    with pytest.raises(dmft.InputError, match="not the callable's derivative"):
        dmft.activations.custom(fn, name="mine", derivative=lambda h: d(h) + 1e-2 * (1 + abs(shift)))
    dmft.activations.custom(fn, name="mine", derivative=d)
    # at a declared kink the value is the user's convention (relu's 0 or 1 at h = 0)
    relu = lambda h: jnp.maximum(h, 0.0)                                    # noqa: E731
    for at_kink in (0.0, 1.0, scale):
        dmft.activations.custom(relu, name="mine", kinks=[0.0],
                                derivative=lambda h: jnp.where(h == 0, at_kink, (h > 0) * 1.0))


@settings(max_examples=12, deadline=None)
@given(max_iter=st.integers(10 ** 5, 10 ** 9), window=st.sampled_from([1, 2, 5]))
def test_the_iteration_counts_its_residual_history_against_the_memory_limit(data, max_iter, window):
    """method="iterate" keeps each window's residuals (windows x max_iter): a max_iter whose history
    does not fit max_memory_gb is refused by the plan, naming max_iter, before anything compiles
    (a max_iter of 2e7 at 10 windows ran to 5 GB under a 1 GB limit); past the int32 counter it
    is refused by name."""
    model, kw = dmft.TwoLayer("relu", 1.0), dict(method="iterate", samples=8, replicas=2, kernels=False)
    schedule = dmft.Schedule(0.5, 10, 5)
    small = dmft.plan_solve(model, data, schedule, max_iter=1, window=window, **kw).memory_bytes
    history = 8 * 3 * (10 // window) * max_iter
    big = dmft.plan_solve(model, data, schedule, max_iter=max_iter, window=window, max_memory_gb=1e6, **kw)
    assert big.memory_bytes >= small + history
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.errors.MemoryLimitError, match="max_iter"):
        dmft.solve(model, data, schedule, max_iter=max_iter, window=window,
                   max_memory_gb=(small + history / 2) / 2 ** 30, **kw)
    assert dict(TRACE_COUNTS) == before
    with pytest.raises(dmft.InputError, match="max_iter must be <= 2147483647"):
        dmft.plan_solve(model, data, schedule, max_iter=2 ** 31, **kw)


@settings(max_examples=25, deadline=None)
@given(log_x=st.floats(-1.0, 25.0), log_y=st.floats(-4.0, 2.0), gamma0=st.sampled_from([0.05, 0.3, 1.0, 3.0]),
       activation=st.sampled_from(["relu", "tanh", "linear"]))
@example(log_x=3.2, log_y=0.0, gamma0=1.0, activation="tanh")    # fields 6.8x the limit, tanh's output bounded
@example(log_x=1.0, log_y=-1.5, gamma0=1.0, activation="relu")   # ratio 680 by relu's output, 41 by its slope's
def test_mixed_precision_is_refused_where_the_data_scale_moves_its_rounding(log_x, log_y, gamma0, activation):
    """precision='mixed' on inputs of any scale: fields wider than MIXED_MAX_FIELD_VARIANCE, or an
    output scale over gamma0 x the targets' rms above MIXED_MAX_SCALE_RATIO, are refused by name
    before anything compiles (inputs at 1e20 read as a divergence at step 0, and at 1e8 the loss
    came out 10x that of precision='full' with no word), the fields' rule first; elsewhere the plan
    accepts them."""
    from dmft.plan import MIXED_MAX_FIELD_VARIANCE, MIXED_MAX_SCALE_RATIO
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 2)) * 10.0 ** log_x
    y = np.tanh(rng.normal(size=8)) * 10.0 ** log_y
    data = dmft.Dataset(x, y, x[:3], y[:3])
    model = dmft.TwoLayer(activation, gamma0, readout="trained")
    v = float(np.max(np.sum(x * x, axis=1) / 2))
    out = float(np.sqrt(model.activation.lazy_kernels(v, v, v)[0]))
    ratio = out / (gamma0 * float(np.sqrt(np.mean(y ** 2))))
    kw = dict(method="forward", precision="mixed", samples=8, replicas=2)
    schedule = dmft.Schedule(0.5, 4, 2)
    assume(abs(np.log(v / MIXED_MAX_FIELD_VARIANCE)) > 1e-6 and abs(np.log(ratio / MIXED_MAX_SCALE_RATIO)) > 1e-6)
    if v > MIXED_MAX_FIELD_VARIANCE or ratio > MIXED_MAX_SCALE_RATIO:
        before = dict(TRACE_COUNTS)
        rule = "widest field's variance" if v > MIXED_MAX_FIELD_VARIANCE else "output scale"
        with pytest.raises(dmft.InputError, match=f"^precision='mixed': the {rule}"):
            dmft.solve(model, data, schedule, **kw)
        assert TRACE_COUNTS == before
    else:
        assert dmft.plan_solve(model, data, schedule, **kw).precision == "mixed"


def test_mixed_precision_at_the_scale_limits_stays_far_below_the_sampling_error():
    """Just inside both of the mixed-scale limits (the widest field's variance at 0.9 of
    MIXED_MAX_FIELD_VARIANCE with relu, whose output scales with it, and the targets scaled so the
    output scale ratio is 0.9 of MIXED_MAX_SCALE_RATIO) precision='mixed' moves the final losses by
    less than 0.05 of their standard error (the same key, against precision='full'); a scale 100x
    past the ratio's limit moved them by 6-240 errors (measured when the limit was set)."""
    from dmft.plan import MIXED_MAX_FIELD_VARIANCE, MIXED_MAX_SCALE_RATIO
    rng = np.random.default_rng(3)
    x0 = rng.normal(size=(40, 8))
    x0 /= np.sqrt(np.max(np.sum(x0 * x0, axis=1) / 8))           # widest field variance 1
    y0 = np.tanh(x0[:, 0] * 2.0)
    for activation, scale in (("relu", np.sqrt(0.9 * MIXED_MAX_FIELD_VARIANCE)), ("tanh", 1.0)):
        model = dmft.TwoLayer(activation, 1.0)
        v = scale ** 2
        out = float(np.sqrt(model.activation.lazy_kernels(v, v, v)[0]))
        y = y0 * out / (0.9 * MIXED_MAX_SCALE_RATIO * np.sqrt(np.mean(y0[:32] ** 2)))
        data = dmft.Dataset(x0[:32] * scale, y[:32], x0[32:] * scale, y[32:])
        sols = [dmft.solve(model, data, eta0=0.5 / v, steps=40, save_every=20, samples=256, replicas=2,
                           kernels=False, precision=p, key=jax.random.key(1)) for p in ("full", "mixed")]
        for name in ("test_loss", "train_loss"):
            moved = abs(getattr(sols[1], name)[-1] - getattr(sols[0], name)[-1]) / sols[0].error[name][-1]
            assert moved < 0.05, (activation, name, moved)


def test_a_mixed_precision_batch_checks_the_data_scale_at_its_smallest_gamma0():
    """A batch's points carry their own gamma0: the mixed-scale limit is judged at the smallest
    (targets at 0.02 x a unit-scale problem's pass at gamma0 = 1 and not at 0.3), before any
    point runs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 2))
    y = np.tanh(x[:, 0]) * 0.02
    data, model = dmft.Dataset(x, y, x[:3], y[:3]), dmft.TwoLayer("relu", 1.0)
    kw = dict(method="forward", precision="mixed", samples=8, replicas=2, eta0=0.5, steps=4, save_every=2)
    program = dmft.BatchProgram(model, data, fields=("gamma0",), **kw)
    program.check_points({"gamma0": [1.0, 2.0]})
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.InputError, match=r"^precision='mixed': the output scale .* x gamma0 \(0.3\)"):
        dmft.solve_batch(model, data, {"gamma0": [1.0, 0.3]}, **kw)
    assert TRACE_COUNTS == before


def test_every_memory_refusal_is_a_memory_limit_error_with_its_need_to_three_digits():
    """networks.train, the deep linear trainer and mode_sde refused a program over max_memory_gb
    with a plain InputError (a scan catches MemoryLimitError to rephrase it in its keys), and
    the need rounded to 0.1 GiB read as less than the limit ('0.5 GiB (> max_memory_gb=0.515)')."""
    import re

    import networks
    from dmft import deep_linear as dl

    data = dmft.tasks.single_index(D=8, P=64, P_test=16, degree=1, key=jax.random.key(0))
    teacher = dmft.tasks.linear_teacher(4, 4, [3.0, 2.0], P=16, key=0)
    dln = dmft.DeepLinear(3, 6, 0.5, "aligned")
    calls = [lambda gb: networks.train(dmft.TwoLayer("relu"), data, eta0=0.5, steps=4, save_every=2, width=4096,
                                       seeds=64, max_memory_gb=gb),
             lambda gb: networks.train(dln, teacher, eta0=0.01, steps=100, save_every=1, seeds=65536,
                                       batch_size=2, max_memory_gb=gb),
             lambda gb: dl.mode_sde(dln, teacher, eta0=0.01, batch_size=2, steps=100, save_every=1, paths=10 ** 6,
                                    max_memory_gb=gb),
             lambda gb: dmft.solve(dmft.TwoLayer("relu"), data, eta0=0.5, steps=4, save_every=2, max_memory_gb=gb),
             lambda gb: dmft.solve_batch(dmft.TwoLayer("relu"), data, {"gamma0": [1.0, 2.0]}, eta0=0.5, steps=4,
                                         save_every=2, max_memory_gb=gb)]
    before = dict(TRACE_COUNTS)
    for call in calls:
        with pytest.raises(dmft.errors.MemoryLimitError) as err:
            call(0.515)
        need = float(re.search(r"([0-9.]+) GiB \(>", str(err.value)).group(1))
        assert need > 0.515, str(err.value)
    assert TRACE_COUNTS == before


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(["bogus", "tol", "max_iter", "damping", "window", "fields", "neuron_measures",
                             "kernels", "Samples"]))
def test_solve_batch_names_an_unknown_option(data, name):
    """An option BatchProgram does not take reached it as Python's TypeError ('got an unexpected
    keyword argument'); iterate's options said nothing of iterate not being batched. One InputError
    naming the option and the known ones, before anything compiles."""
    before = dict(TRACE_COUNTS)
    with pytest.raises(dmft.InputError, match=rf"^unknown option\(s\) \['{name}'\] of a batch.*; known: schedule, method"):
        dmft.solve_batch(dmft.TwoLayer("relu"), data, {"gamma0": [1.0, 2.0]}, eta0=0.5, steps=4, save_every=2,
                         **{name: 1})
    assert TRACE_COUNTS == before


def test_the_mixed_scale_ratio_is_the_forward_methods_and_zero_targets_are_named():
    """The output-scale ratio bounds the forward method's rounding against its sampling error: the
    closure has none (mixed within 1e-8 of full at ratios up to 5800), so it takes any ratio; all-zero
    targets are refused by that name under the forward method, not as an infinite ratio. A batch
    judges its grid by its own method too."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    y = (x[:, 0] - x[:, 1]) * 0.01                                      # ratio ~ 1 / (0.05 x 0.01 x 1.1)
    data = dmft.Dataset(x, y, x[:4], y[:4])
    model = dmft.TwoLayer("linear", 0.05, readout="trained")
    schedule = dmft.Schedule(0.5, 4, 2)
    assert dmft.plan_solve(model, data, schedule, method="closure", precision="mixed").precision == "mixed"
    with pytest.raises(dmft.InputError, match="^precision='mixed': the output scale"):
        dmft.plan_solve(model, data, schedule, method="forward", precision="mixed", samples=8, replicas=2)
    batch = dict(schedule=schedule, fields=("gamma0",), precision="mixed")
    dmft.BatchProgram(model, data, method="closure", **batch).check_points({"gamma0": [0.05, 1.0]})
    with pytest.raises(dmft.InputError, match="^precision='mixed': the output scale"):
        dmft.BatchProgram(model, data, method="forward", samples=8, replicas=2, **batch).check_points(
            {"gamma0": [0.05, 1.0]})
    zero = dmft.Dataset(x, np.zeros(12), x[:4], np.zeros(4))
    with pytest.raises(dmft.InputError, match="^precision='mixed': the targets are all zero"):
        dmft.plan_solve(dmft.TwoLayer("relu", 1.0), zero, schedule, method="forward", precision="mixed",
                        samples=8, replicas=2)
    sols = [dmft.solve(model, data, schedule, method="closure", precision=p) for p in ("full", "mixed")]
    np.testing.assert_allclose(sols[1].test_loss, sols[0].test_loss, rtol=1e-6)


@settings(max_examples=20, deadline=None)
@given(eps=st.lists(st.floats(-300.0, 300.0), min_size=1, max_size=3),
       gamma0=st.one_of(st.none(), st.sampled_from([0.05, 0.2, 1.0])))
@example(eps=[0.5, -300.0], gamma0=None)                         # the largest |eps| is not the largest eps
def test_a_mixed_batch_over_eps_is_judged_at_its_worst_point(eps, gamma0):
    """precision='mixed''s output-scale rule in a batch over eps (the quadratic activation's): the
    grid is refused before any compute exactly when one of its points would be refused by
    `dmft.plan_solve` (it read the model's eps: a point at eps = 1000 ran to NaN), naming the
    grid's largest |eps|."""
    data = dmft.tasks.kumar_quadratic(D=8, P=16, P_test=8, key=0)
    model = dmft.TwoLayer(dmft.activations.quadratic(0.02), gamma0=0.1, readout="fixed")
    grid = {"eps": eps} if gamma0 is None else {"eps": eps, "gamma0": [gamma0] * len(eps)}
    schedule = dmft.Schedule(0.5, 4, 2)
    kw = dict(method="forward", precision="mixed", samples=8, replicas=2)

    def refused(e):
        point = dmft.TwoLayer(dmft.activations.quadratic(e), gamma0=gamma0 or 0.1, readout="fixed")
        try:
            dmft.plan_solve(point, data, schedule, **kw)
        except dmft.InputError:
            return True
        return False

    before = dict(TRACE_COUNTS)
    if any(refused(e) for e in eps):
        with pytest.raises(dmft.InputError,
                           match=r"^precision='mixed': the output .*judged at the grid's largest \|eps\|"):
            dmft.solve_batch(model, data, grid, schedule=schedule, **kw)
        assert TRACE_COUNTS == before
    else:
        cols, _ = dmft.BatchProgram(model, data, schedule=schedule, fields=tuple(grid), **kw).check_points(grid)
        np.testing.assert_array_equal(cols["eps"], eps)


def test_a_diverging_seed_with_measures_is_flagged_not_blamed_on_the_measures():
    """A weight moment that overflows while the weights run away is the seed's divergence: flagged
    in info['diverged'] with a warning (as without measures), not a DivergenceError naming the
    neuron_measures function (a review found the check blamed the function where only the run-away
    loss, not a non-finite one, marked the seed)."""
    data = dmft.tasks.single_index(D=8, P=32, P_test=16, key=0)
    with pytest.warns(UserWarning, match="seeds diverged"):
        run = networks.train(dmft.TwoLayer("linear", 1.0), data, eta0=20, steps=200, save_every=5, width=64,
                             seeds=2, neuron_measures=lambda w, w0: jnp.sum(w ** 8)[None])
    assert set(run.info["diverged"]) == {0, 1}
    with pytest.warns(UserWarning, match="seeds diverged"):
        plain = networks.train(dmft.TwoLayer("linear", 1.0), data, eta0=20, steps=200, save_every=5, width=64,
                               seeds=2)
    assert run.info["diverged"] == plain.info["diverged"]
