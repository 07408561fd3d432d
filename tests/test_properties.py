"""Generated inputs (hypothesis): every call either succeeds with finite outputs or raises the
project's documented error (`dmft.InputError`, a ValueError, or `dmft.DivergenceError`)
naming the argument, before any compute.

Profiles: the default runs a short search in `make test`; HYPOTHESIS_PROFILE=long runs 25x
more cases per test."""

import math
import os

import jax
import numpy as np
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import dmft
import networks
from dmft.runner import TRACE_COUNTS

settings.register_profile("short", max_examples=20, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "short"))

DATA = dmft.tasks.single_index(D=3, P=6, P_test=4, degree=2, key=jax.random.key(0))
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.integers(-10 ** 6, 10 ** 6), st.booleans(), st.none(), st.text(max_size=3),
                    st.complex_numbers(max_magnitude=10, allow_nan=False))


def _names(err, *names):
    text = str(err)
    return any(n in text for n in names)


# ------------------------------------------------------------------ Dataset and models

@st.composite
def arrays(draw):
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
    kind = draw(st.sampled_from(["float64", "float32", "int64", "bool", "complex128", "object", "str"]))
    n = int(np.prod(shape)) if shape else 1
    vals = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=n, max_size=n))
    a = np.asarray(vals, dtype=np.float64).reshape(shape)
    if kind == "object":
        return a.astype(object)
    if kind == "str":
        return a.astype(str)
    with np.errstate(invalid="ignore"):
        return a.astype(kind) if kind not in ("int64", "bool") else np.nan_to_num(a).astype(kind)


@given(x=arrays(), y=arrays(), xt=st.one_of(st.none(), arrays()), yt=st.one_of(st.none(), arrays()))
def test_dataset_accepts_only_what_it_can_use(x, y, xt, yt):
    try:
        d = dmft.Dataset(x, y, xt, yt)
    except ValueError as err:
        assert isinstance(err, dmft.InputError)
        assert _names(err, "x_train", "y_train", "x_test", "y_test")
        return
    for a in (d.x_train, d.y_train, d.x_test, d.y_test):
        if a is not None and np.issubdtype(a.dtype, np.floating):
            assert np.all(np.isfinite(a))
    assert d.x_train.ndim == 2 and d.y_train.shape[0] == d.P and not d.x_train.flags.writeable


@given(activation=st.one_of(st.sampled_from(["relu", "tanh", "erf", "linear", "square", "softplus",
                                             "sigmoid", "", "RELU"]), NUMBERS),
       gamma0=NUMBERS, readout=st.one_of(st.sampled_from(["trained", "fixed", "frozen"]), NUMBERS),
       centered=st.one_of(st.booleans(), NUMBERS))
def test_two_layer_validates_every_field(activation, gamma0, readout, centered):
    try:
        m = dmft.TwoLayer(activation, gamma0=gamma0, readout=readout, centered=centered)
    except ValueError as err:
        assert isinstance(err, dmft.InputError)
        assert _names(err, "activation", "gamma0", "readout", "centered")
        return
    assert m.gamma0 > 0 and math.isfinite(m.gamma0) and isinstance(m.centered, bool)
    assert not isinstance(gamma0, (bool, np.bool_)), "a boolean is not a gamma0"


@given(exponent=st.floats(0, 308), new_exponent=st.floats(0, 308), method=st.sampled_from(["lazy", "forward"]))
def test_inputs_of_any_finite_scale_are_used_or_refused_by_name(exponent, new_exponent, method):
    """Finite inputs whose squares overflow (|x| >~ 1e154) are refused naming x_train or x_new;
    smaller ones solve and predict without a raw error."""
    scale, new_scale = 10.0 ** exponent, 10.0 ** new_exponent
    try:
        data = dmft.Dataset(DATA.x_train * scale, DATA.y_train, DATA.x_test * scale, DATA.y_test)
    except ValueError as err:
        assert isinstance(err, dmft.InputError) and _names(err, "x_train", "x_test"), repr(err)
        assert scale > 1e150
        return
    try:
        sol = dmft.solve(dmft.TwoLayer("tanh"), data, eta0=0.3, steps=4, save_every=2, samples=64, method=method)
    except dmft.DivergenceError:
        return
    try:
        f = sol.predict(DATA.x_test * new_scale)
    except ValueError as err:
        assert isinstance(err, dmft.InputError) and _names(err, "x_new"), repr(err)
        assert new_scale > 1e150
        return
    assert f.shape == (DATA.P_test,)


SIZES = st.one_of(st.integers(1, 10 ** 6), st.integers(2 ** 40, 2 ** 80))


@given(steps=SIZES, save_every=SIZES, n_saves=SIZES, log=st.booleans())
def test_schedule_of_any_size_is_built_small_or_refused_at_once(steps, save_every, n_saves, log):
    """Save grids are counted before they are built: a schedule is made in well under a second
    with at most MAX_SAVES saves, or refused naming steps, save_every or n_saves (never a raw
    MemoryError or OverflowError)."""
    import time

    kw = dict(save_at="log", n_saves=n_saves) if log else dict(save_every=save_every)
    t0 = time.perf_counter()
    try:
        sch = dmft.Schedule(eta0=1e-3, steps=steps, **kw)
    except ValueError as err:
        assert isinstance(err, dmft.InputError) and _names(err, "steps", "save_every", "n_saves"), repr(err)
        assert time.perf_counter() - t0 < 0.5
        return
    assert sch.save_steps.size <= dmft.schedule.MAX_SAVES + 2 and sch.save_steps[-1] == steps


KEYS_AND_SEEDS = st.one_of(NUMBERS, st.integers(-2 ** 70, 2 ** 70), st.just(jax.random.key(3)))


@given(key=KEYS_AND_SEEDS, noise=NUMBERS, degree=st.one_of(st.integers(-2, 400), NUMBERS),
       fraction=NUMBERS)
@example(key=None, noise=False, degree=None, fraction=1.0)   # CI: a bad single_index argument, good modular_addition
def test_task_arguments_are_used_or_refused_by_name(key, noise, degree, fraction):
    """Data generators take a key or an int seed in [0, 2^32 - 1]; numbers are real numbers,
    never booleans; anything else is an InputError naming the argument."""
    for make, names, used in (
            (lambda: dmft.tasks.single_index(D=3, P=4, P_test=2, degree=degree, noise=noise, key=key),
             ("key", "noise", "degree"), (noise, degree)),
            (lambda: dmft.tasks.modular_addition(3, fraction, key=key), ("key", "train_fraction"), (fraction,))):
        try:
            d = make()
        except ValueError as err:
            assert isinstance(err, dmft.InputError) and _names(err, *names), repr(err)
            continue
        assert isinstance(d, dmft.Dataset) and np.all(np.isfinite(d.y_train))
        assert not isinstance(key, (bool, float, str))
        assert not any(isinstance(v, (bool, str)) for v in used), used   # only this generator's arguments


@given(key=KEYS_AND_SEEDS, eta0=st.lists(st.floats(0.05, 2.0), min_size=2, max_size=2),
       decay=st.lists(st.floats(0.0, 4.0), min_size=2, max_size=2))
def test_solve_batch_makes_the_checks_solve_makes(key, eta0, decay):
    """A key is a jax.random.key (as for solve), and every point passes Schedule's checks
    (eta0 * weight_decay < 1), or the batch is refused naming them before anything runs."""
    before = dict(TRACE_COUNTS)
    try:
        res = dmft.solve_batch(dmft.TwoLayer("linear"), DATA, {"eta0": eta0, "weight_decay": decay},
                               steps=4, save_every=2, key=key)
    except ValueError as err:
        assert isinstance(err, dmft.InputError) and _names(err, "key", "weight_decay"), repr(err)
        assert TRACE_COUNTS == before
        return
    assert all(e * k < 1 for e, k in zip(eta0, decay))
    assert key is None or not isinstance(key, (int, float, str, complex))
    assert res["train_loss"].shape[0] == 2


# ------------------------------------------------------------------ solvers and networks

SOLVE_OPTIONS = st.fixed_dictionaries({}, optional={
    "eta0": NUMBERS, "gamma0": NUMBERS, "weight_decay": NUMBERS, "samples": NUMBERS,
    "replicas": NUMBERS, "kernels": NUMBERS, "control_variate": NUMBERS, "method": st.one_of(
        st.sampled_from(["auto", "forward", "closure", "lazy", "iterate", "exact"]), NUMBERS),
    "sampler": st.sampled_from(["stratified", "mc", "sobol"]), "key": NUMBERS,
    "tol": NUMBERS, "damping": NUMBERS})


@given(opts=SOLVE_OPTIONS)
def test_solve_succeeds_finite_or_refuses_before_compute(opts):
    opts = dict(opts)
    gamma0 = opts.pop("gamma0", 1.0)
    try:
        model = dmft.TwoLayer("tanh", gamma0=gamma0)
    except ValueError:
        return
    base = dict(eta0=0.3, steps=6, save_every=3, samples=64, method="forward")
    base.update(opts)
    before = dict(TRACE_COUNTS)
    try:
        sol = dmft.solve(model, DATA, **base)
    except dmft.DivergenceError as err:          # allowed: a documented failure with its step
        assert err.step is not None
        return
    except (ValueError, TypeError) as err:
        assert isinstance(err, dmft.InputError), repr(err)
        assert TRACE_COUNTS == before, "a refused solve must not compile"
        return
    for name, v in sol.arrays().items():
        assert np.all(np.isfinite(v)), name


@given(gamma0=st.floats(1e-3, 1e3), eta0=st.floats(1e-3, 1e3), decay=st.floats(0, 10),
       method=st.sampled_from(["forward", "closure", "lazy"]))
def test_extreme_values_give_finite_results_or_a_divergence_error(gamma0, eta0, decay, method):
    """Values across and beyond the stable range: finite arrays, or DivergenceError with the step."""
    assume(eta0 * decay < 1)
    act = "linear" if method == "closure" else "tanh"
    if method == "lazy":
        decay = 0.0
    model = dmft.TwoLayer(act, gamma0=gamma0)
    try:
        sol = dmft.solve(model, DATA, eta0=eta0, steps=20, save_every=5, weight_decay=decay,
                         method=method, samples=64)
    except dmft.DivergenceError as err:
        assert err.step is not None and 0 <= err.step <= 20
        return
    for name, v in sol.arrays().items():
        assert np.all(np.isfinite(v)), name


@given(values=st.lists(st.one_of(st.floats(-1e3, 1e3), st.floats(allow_nan=True, allow_infinity=True)),
                       min_size=1, max_size=4),
       field=st.sampled_from(["gamma0", "eta0", "weight_decay", "eps", "width"]))
def test_solve_batch_finite_flagged_or_refused(values, field):
    model = dmft.TwoLayer(dmft.activations.quadratic(0.5), readout="fixed")
    try:
        res = dmft.solve_batch(model, DATA, {field: values}, eta0=0.5, steps=10, save_every=5)
    except ValueError as err:
        assert isinstance(err, dmft.InputError) and _names(err, field, "fields")
        return
    for k, v in res.items():
        if k in ("diverged_step",) or not np.issubdtype(np.asarray(v).dtype, np.floating):
            continue
        ok = np.isfinite(v).reshape(v.shape[0], -1).all(axis=1)
        assert np.all(ok | (res["diverged_step"] >= 0)), (k, res["diverged_step"])


@given(opts=st.fixed_dictionaries({}, optional={
    "width": NUMBERS, "seeds": NUMBERS, "eta0": NUMBERS, "weight_decay": NUMBERS, "kernels": NUMBERS,
    "antithetic": NUMBERS, "keep_params": NUMBERS, "batch_size": NUMBERS, "key": NUMBERS}))
def test_networks_train_succeeds_finite_or_refuses(opts):
    base = dict(width=8, seeds=2, eta0=0.3, steps=4, save_every=2)
    base.update(opts)
    before = dict(TRACE_COUNTS)
    try:
        run = networks.train(dmft.TwoLayer("relu"), DATA, **base)
    except (ValueError, TypeError) as err:
        assert isinstance(err, dmft.InputError), repr(err)
        assert TRACE_COUNTS == before
        return
    bad = run.info["diverged"]
    for name, v in run.arrays().items():
        v = np.asarray(v)
        if v.ndim >= 2 and np.issubdtype(v.dtype, np.floating):
            for s in range(v.shape[0]):
                assert s in bad or np.all(np.isfinite(v[s])), (name, s)


# ------------------------------------------------------------------ the configuration loader

KEYS = st.sampled_from(["train.steps", "train.eta0", "train.save_every", "model.activation", "model.centered",
                        "sweep.gamma0", "task.P", "task.D", "theory.samples", "simulate.widths",
                        "train.stepz", "trian.steps", "model", "=3", "task.name"])
LITERALS = st.sampled_from(["1", "0", "-1", "2.5", "nan", "inf", "true", "'relu'", "[1, 2]", "[]", "[0.5, -1]",
                            "abc", "''", "[[1]]", "{a=1}", "1e400", "'npz'"])


@given(pairs=st.lists(st.tuples(KEYS, LITERALS), max_size=4))
def test_config_loader_accepts_or_names_the_key(pairs):
    from experiments.jobs import load_config

    overrides = [f"{k}={v}" for k, v in pairs]
    try:
        cfg = load_config(None, overrides)
    except dmft.ConfigError as err:
        text = str(err)
        assert any(k.split("=")[0] in text or k.split(".")[0] in text for k, _ in pairs) or "override" in text
        return
    assert cfg["train"]["steps"] % cfg["train"]["save_every"] == 0
    assert all(g > 0 for g in cfg["sweep"]["gamma0"])


@given(text=st.binary(max_size=60))
def test_config_files_of_any_bytes_are_read_or_refused(tmp_path_factory, text):
    from experiments.jobs import load_config

    path = tmp_path_factory.mktemp("c") / "c.toml"
    path.write_bytes(text)
    try:
        load_config(str(path))
    except dmft.ConfigError as err:
        assert str(path) in str(err) or "unknown" in str(err) or "expected" in str(err) or "must" in str(err)


@given(d_in=st.integers(-1, 6), d_out=st.integers(-1, 6),
       s=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
       P=st.one_of(st.none(), st.integers(-1, 12)), sigma=NUMBERS,
       depth=NUMBERS, width=NUMBERS, scale=NUMBERS)
def test_deep_linear_inputs_are_used_or_refused_by_name(d_in, d_out, s, P, sigma, depth, width, scale):
    try:
        data = dmft.tasks.linear_teacher(d_in, d_out, s, P=P, label_noise=sigma)
    except ValueError as err:
        assert isinstance(err, dmft.InputError)
        assert _names(err, "d_in", "d_out", "singular_values", "P", "label_noise", "rank"), str(err)
        return
    assert np.all(np.isfinite(data.s)) and np.all(data.s > 0)
    try:
        model = dmft.DeepLinear(depth, width, scale, "aligned")
        model.check_data(data)
    except ValueError as err:
        assert isinstance(err, dmft.InputError)
        assert _names(err, "depth", "width", "init_scale"), str(err)


# ------------------------------------------------------------------ memory: replicas a few at a time

@given(replicas=st.sampled_from([1, 2, 3, 4, 6, 8]), where=st.floats(-0.2, 1.2),
       samples=st.sampled_from([48, 2 ** 14, 2 ** 18]), method=st.sampled_from(["forward", "iterate"]))
@example(replicas=8, where=1.2, samples=2 ** 18, method="forward")     # the cache budget binds
def test_plan_integrates_the_most_replicas_that_fit(replicas, where, samples, method):
    """Any memory budget: the plan integrates the largest divisor of the replica count whose
    estimate fits, or refuses (naming replicas) when even one replica at a time does not; a
    forward solve on a CPU at most as many as keep the fields (group nodes x P) in the cache
    budget (CPU_GROUP_ELEMENTS), and at least one."""
    from dmft.plan import CPU_GROUP_ELEMENTS
    from dmft.plan import memory_estimate
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    sch = dmft.Schedule(0.1, 20, 5)
    samples = samples * replicas
    ref = dmft.plan_solve(model, DATA, sch, method=method, samples=samples, replicas=replicas,
                          max_memory_gb=1e6)
    lo, hi = memory_estimate(ref, at_once=1), memory_estimate(ref, at_once=replicas)
    budget = (lo + where * (hi - lo)) / 2 ** 30 if hi > lo else lo * (1 + where / 10) / 2 ** 30
    try:
        plan = dmft.plan_solve(model, DATA, sch, method=method, samples=samples, replicas=replicas,
                               max_memory_gb=budget)
    except dmft.InputError as err:
        assert lo > budget * 2 ** 30 and "replicas" in str(err)
        return
    g = plan.replicas_at_once
    assert replicas % g == 0 and plan.memory_bytes == memory_estimate(ref, at_once=g) <= budget * 2 ** 30
    cached = (method == "forward" and jax.default_backend() == "cpu")
    fits = [h for h in range(1, replicas + 1) if replicas % h == 0
            and not (cached and h * (samples // replicas) * DATA.P > CPU_GROUP_ELEMENTS)]
    assert g <= max(fits, default=1)
    assert all(memory_estimate(ref, at_once=h) > budget * 2 ** 30 for h in fits if h > g)
