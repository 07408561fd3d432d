"""Generated inputs (hypothesis): every call either succeeds with finite outputs or raises the
project's documented error (`dmft.InputError`, a ValueError, or `dmft.DivergenceError`)
naming the argument, before any compute.

Profiles: the default runs a short search in `make test`; HYPOTHESIS_PROFILE=long runs 25x
more cases per test."""

import math
import os
import re
import tomllib

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import dmft
import networks
from dmft.runner import TRACE_COUNTS

# (this module's tests only: the suite's profile is loaded again at its end; derandomized as the
# suite is, under CI)
settings.register_profile("short", settings.get_profile("suite"), max_examples=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("long", settings.get_profile("suite"), max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "short"))

DATA = dmft.tasks.single_index(D=3, P=6, P_test=4, degree=2, key=jax.random.key(0))
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.integers(-10 ** 6, 10 ** 6), st.booleans(), st.none(), st.text(max_size=3),
                    st.complex_numbers(max_magnitude=10, allow_nan=False))


def _names(err, *names):
    text = str(err)
    return any(n in text for n in names)


def _names_word(err, name):
    """The message names `name` as a whole word ("P" is not named by "P_test", nor "steps" by
    "train.steps_x")."""
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", str(err)) is not None


class _Absent:
    """An optional argument left out of the call."""

    def __repr__(self):
        return "ABSENT"


ABSENT = _Absent()


def _optional(strategy):
    """An optional argument: left out (ABSENT), or drawn from `strategy`."""
    return st.one_of(st.just(ABSENT), strategy)

# how many fields a draw spoils: none 6 times in 10 (the success branch runs), one 3 in 10 (the
# refusal must name that field), two otherwise (it names one of them). One comes first: the
# simplest draw, which hypothesis favours, spoils a field. Hypothesis's draws are correlated:
# over 20 derandomized examples the share without a spoilt field varies from test to test
# (10% of 180 seeds tried gave fewer than 7 of 20; the median is 12)
SPOILS = st.sampled_from((1, 0, 1, 0, 2, 0, 1, 0, 0, 0))


def _spoil(draw, valid: dict, bad: dict):
    """Every field from its valid strategy except at most two, drawn from `bad` (which may, by
    chance, give a valid value too); returns (values, the names of the spoilt fields)."""
    k = draw(SPOILS)
    spoilt = tuple(draw(st.permutations(sorted(bad)))[:k])
    values = {f: draw(bad[f] if f in spoilt else valid[f]) for f in valid}
    return values, spoilt


def _bad(values, broad=NUMBERS):
    """Half of the time one of `values` (this field's known bad values), else anything from `broad`."""
    return st.sampled_from([st.sampled_from(values), broad]).flatmap(lambda s: s)


@st.composite
def cases(draw, valid: dict, bad: dict):
    """`_spoil` for fields that do not depend on one another."""
    return _spoil(draw, valid, bad)


def _refused(err, spoilt, alias=None):
    """A refusal: the project's InputError, only when something was spoilt, naming the one
    spoilt field (of two spoilt: one of them). `alias` maps a field to the argument name the
    message uses."""
    assert isinstance(err, dmft.InputError), repr(err)
    assert spoilt, f"valid inputs refused: {err!r}"
    names = [(alias or {}).get(f, f) for f in spoilt]
    assert any(_names_word(err, n) for n in names), f"{err!r} does not name {names}"


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


@st.composite
def dataset_cases(draw):
    """Dataset arguments that fit together (P rows, D features, C outputs, one dtype for the
    inputs and one for the targets), with at most two spoilt by an array Dataset cannot use."""
    P, D, C = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.sampled_from([None, 1, 2]))
    P_test = draw(st.sampled_from([None, 0, 1, 3]))          # None: no test set
    x_kind = draw(st.sampled_from(["float64", "float32", "int64", "bool"]))
    y_kind = draw(st.sampled_from(["float64", "float32", "int64"]))
    seed = draw(st.integers(0, 2 ** 16))

    def real(rows, cols, kind, salt):
        a = np.random.default_rng([seed, salt]).normal(size=(rows,) if cols is None else (rows, cols)) * 10
        return a > 0 if kind == "bool" else a.astype(kind)

    def broken(rows, cols, salt, *more):
        """Arrays of this field's shape made unusable (NaN, inf, too large to square, not real,
        a wrong rank), the field's own wrong sizes (`more`), or any array."""
        a = real(max(rows, 1), cols, "float64", salt)
        nan, inf = a.copy(), a.copy()
        nan.flat[0], inf.flat[-1] = np.nan, -np.inf
        return st.one_of(st.sampled_from([nan, inf, np.full_like(a, 1e200), a.astype(str), a.astype(complex),
                                           a.astype(object), a[..., None], a.reshape(-1)[0], *more]), arrays())

    x, y = real(P, D, x_kind, 0), real(P, C, y_kind, 1)
    xt = None if P_test is None else real(P_test, D, x_kind, 2)
    yt = None if P_test is None else real(P_test, C, y_kind, 3)
    valid = {"x_train": st.just(x), "y_train": st.just(y), "x_test": st.just(xt),
             "y_test": st.sampled_from([None] if yt is None else [yt, None])}
    bad = {"x_train": broken(P, D, 4, x[:, 0], x[:0], x[:, :0]),                  # 1-d, no point, no feature
           "y_train": broken(P, C, 5, real(P + 1, C, y_kind, 6), y[:, None, None], real(P, 0, y_kind, 7)),
           "x_test": broken(P_test or 2, D, 8, real(P_test or 2, D + 1, x_kind, 9),
                            real(P_test or 2, D, "float16", 10)),
           "y_test": broken(P_test or 2, C, 11, real((P_test or 2) + 1, C, y_kind, 12),
                            real(P_test or 2, 2 if C is None else C + 1, y_kind, 13),
                            real(P_test or 2, C, "float16", 14))}
    return _spoil(draw, valid, bad)


@given(case=dataset_cases())
@example(case=({"x_train": np.ones((2, 3)), "y_train": np.zeros(2), "x_test": np.ones((1, 3)),
                "y_test": np.zeros(1)}, ()))                                         # all valid
def test_dataset_accepts_only_what_it_can_use(case):
    fields, spoilt = case
    try:
        d = dmft.Dataset(**fields)
    except ValueError as err:
        _refused(err, spoilt)
        return
    for a in (d.x_train, d.y_train, d.x_test, d.y_test):
        if a is not None and np.issubdtype(a.dtype, np.floating):
            assert np.all(np.isfinite(a))
    assert d.x_train.ndim == 2 and d.y_train.shape[0] == d.P and not d.x_train.flags.writeable
    if not spoilt:       # the arrays as given (an empty test set is no test set)
        xt = fields["x_test"]
        assert np.array_equal(d.x_train, fields["x_train"]) and np.array_equal(d.y_train, fields["y_train"])
        assert d.P_test == (0 if xt is None else len(xt)) and (d.y_test is None) == (not d.P_test
                                                                                  or fields["y_test"] is None)


TWO_LAYER_VALID = {"activation": st.sampled_from(["relu", "tanh", "erf", "linear", "square", "softplus", "RELU"]),
                   "gamma0": st.one_of(st.floats(1e-3, 1e3), st.integers(1, 100)),
                   "readout": st.sampled_from(["trained", "fixed"]),
                   "centered": st.sampled_from([True, False, np.True_])}
TWO_LAYER_BAD = {"activation": _bad(["sigmoid", "", "relu6"]),
                 "gamma0": _bad([0.0, -1.0, math.nan, math.inf, True]),
                 "readout": _bad(["frozen", "Trained"]),
                 "centered": _bad([0, 1, "yes", None])}


@given(case=cases(TWO_LAYER_VALID, TWO_LAYER_BAD))
@example(case=({"activation": "tanh", "gamma0": 0.5, "readout": "fixed", "centered": False}, ()))
def test_two_layer_validates_every_field(case):
    fields, spoilt = case
    try:
        m = dmft.TwoLayer(**fields)
    except ValueError as err:
        _refused(err, spoilt)
        return
    assert m.gamma0 > 0 and math.isfinite(m.gamma0) and isinstance(m.centered, bool)
    assert not isinstance(fields["gamma0"], (bool, np.bool_)), "a boolean is not a gamma0"
    if not spoilt:
        assert m.gamma0 == float(fields["gamma0"]) and m.readout == fields["readout"]
        assert m.centered == bool(fields["centered"])
        assert m.activation.name == fields["activation"].lower()


# a lazy solve at inputs of scale >~ 1e10 integrates its kernels on the largest grid (1024^2 nodes
# a pair of points, ~5 s a solve and prediction here): half the profile's examples, and the two
# refusals' thresholds as explicit ones
@settings(max_examples=max(10, settings.default.max_examples // 2))
@example(exponent=155.0, new_exponent=0.0, method="lazy")
@example(exponent=0.0, new_exponent=155.0, method="forward")
@example(exponent=0.0, new_exponent=2.0, method="lazy")          # (new inputs refused by the kernels)
@given(exponent=st.floats(0, 308), new_exponent=st.floats(0, 308), method=st.sampled_from(["lazy", "forward"]))
def test_inputs_of_any_finite_scale_are_used_or_refused_by_name(exponent, new_exponent, method):
    """Finite inputs whose squares overflow (|x| >~ 1e154) are refused naming x_train or x_new;
    inputs so wide that tanh's lazy kernels, on their capped grid, are off by more than
    KERNEL_ERROR_MAX are refused naming the activation by the lazy method, and the forward solver
    turns its control variate off there (they were used, 34% off at variance 1e4), and predict
    refuses such new inputs naming x_new where it uses the kernels; smaller ones solve and predict
    without a raw error."""
    scale, new_scale = 10.0 ** exponent, 10.0 ** new_exponent
    try:
        data = dmft.Dataset(DATA.x_train * scale, DATA.y_train, DATA.x_test * scale, DATA.y_test)
    except ValueError as err:
        assert isinstance(err, dmft.InputError) and _names(err, "x_train", "x_test"), repr(err)
        assert scale > 1e150
        return
    widest = float(np.max(np.sum(np.concatenate([data.x_train, data.x_test]) ** 2, axis=1) / data.D))
    inexact = dmft.activations.capped_grid_error(dmft.activations.get("tanh"), widest) > dmft.plan.KERNEL_ERROR_MAX
    try:
        sol = dmft.solve(dmft.TwoLayer("tanh"), data, eta0=0.3, steps=4, save_every=2, samples=64, method=method)
    except dmft.DivergenceError:
        return
    except dmft.InputError as err:          # the lazy kernels' capped quadrature, too coarse there
        assert inexact and method == "lazy" and "'tanh'" in str(err) and "Rescale the inputs" in str(err), repr(err)
        return
    assert not inexact or sol.info["control_variate"] is False     # (forward: the solver's choice, off)
    x_new = DATA.x_test * new_scale
    with np.errstate(over="ignore"):
        widest_new = float(np.max(np.sum(x_new.astype(np.float64) ** 2, axis=1) / DATA.D))
    new_inexact = (np.isfinite(widest_new) and (method == "lazy" or sol.info.get("control_variate"))
                   and dmft.activations.capped_grid_error(dmft.activations.get("tanh"), widest_new)
                   > dmft.plan.KERNEL_ERROR_MAX)
    try:
        f = sol.predict(x_new)
    except ValueError as err:
        assert isinstance(err, dmft.InputError) and _names(err, "x_new"), repr(err)
        assert new_scale > 1e150 or new_inexact, repr(err)
        return
    assert f.shape == (DATA.P_test,)


SIZES = st.one_of(st.integers(1, 10 ** 6), st.integers(2 ** 40, 2 ** 80))


@given(steps=SIZES, save_every=SIZES, n_saves=SIZES, log=st.booleans())
@example(steps=1000, save_every=1, n_saves=1, log=True)
@example(steps=1000, save_every=1, n_saves=2, log=True)
@example(steps=100, save_every=1, n_saves=101, log=True)
def test_schedule_of_any_size_is_built_small_or_refused_at_once(steps, save_every, n_saves, log):
    """Save grids are counted before they are built: a schedule is made in well under a second
    with at most MAX_SAVES saves, or refused naming steps, save_every or n_saves (never a raw
    MemoryError or OverflowError). A log grid has at most n_saves saves after step 0 (n_saves
    = 1 saved steps 1 and 1000 of 1000, as 2 does), and at most steps."""
    import time

    kw = dict(save_at="log", n_saves=n_saves) if log else dict(save_every=save_every)
    t0 = time.perf_counter()
    try:
        sch = dmft.Schedule(eta0=1e-3, steps=steps, **kw)
    except ValueError as err:
        assert isinstance(err, dmft.InputError) and _names(err, "steps", "save_every", "n_saves"), repr(err)
        assert time.perf_counter() - t0 < 0.5
        fits = steps <= dmft.schedule.MAX_STEPS and n_saves <= dmft.schedule.MAX_SAVES
        assert not (log and fits), repr(err)      # a log grid is refused only for a reason
        return
    assert sch.save_steps.size <= dmft.schedule.MAX_SAVES + 2 and sch.save_steps[-1] == steps
    if log:
        assert sch.save_steps.size - 1 <= min(n_saves, steps), (sch.save_steps[:5], n_saves)


@given(save_every=st.one_of(st.none(), st.sampled_from([1, 2, 4, 5, 8])),
       save_at=st.sampled_from([None, "log", [2, 5]]), n_saves=st.one_of(st.none(), st.integers(1, 8)),
       change=st.sampled_from([{}, {"save_every": 4}, {"save_at": "log"}, {"save_at": [3]},
                               {"save_at": None}, {"n_saves": 3}, {"steps": 80}]))
@example(save_every=None, save_at="log", n_saves=1, change={})
def test_schedule_uses_every_save_field_given_or_refuses_it(save_every, save_at, n_saves, change):
    """A save_every or n_saves that the save grid would not use is refused naming it (both
    were dropped without a word before), and a given one is the grid; `replace` moves between
    grids without carrying the old grid's field into the new one. (Every interval here divides
    the steps, 40 and 80.)"""
    kw = {k: v for k, v in dict(save_every=save_every, save_at=save_at, n_saves=n_saves).items()
          if v is not None}
    unused = [k for k, v in (("save_every", save_every), ("n_saves", n_saves)) if v is not None
              and (save_at is not None if k == "save_every" else save_at != "log")]
    try:
        sch = dmft.Schedule(eta0=0.1, steps=40, **kw)
    except ValueError as err:
        assert isinstance(err, dmft.InputError) and unused and _names(err, *unused), repr(err)
        return
    assert not unused
    if save_at is None:
        every = dmft.schedule.DEFAULT_SAVE_EVERY if save_every is None else save_every
        assert sch.uniform and sch.save_every == every and sch.n_saves is None
        assert sch.save_steps.tolist() == list(range(0, 41, every))
    elif save_at == "log":
        n = dmft.schedule.DEFAULT_N_SAVES if n_saves is None else n_saves
        assert sch.n_saves == n and sch.save_every is None and not sch.uniform
        # (one save: the last step alone)
        expect = np.unique(np.r_[0, np.rint(np.geomspace(1, 40, n)) if n > 1 else 40, 40]).astype(int)
        assert sch.save_steps.tolist() == expect.tolist()
    else:
        assert sch.save_steps.tolist() == [0, 2, 5, 40] and sch.save_every is None and sch.n_saves is None
    if "n_saves" in change and sch.save_at != "log":
        try:
            sch.replace(**change)
        except ValueError as err:
            assert isinstance(err, dmft.InputError) and _names(err, "n_saves"), repr(err)
            return
        raise AssertionError(f"n_saves accepted on {sch!r}")
    new = sch.replace(**change)
    if "save_every" in change or change.get("save_at", 0) is None:
        assert new.uniform and new.n_saves is None and new.save_every == change.get(
            "save_every", sch.save_every or dmft.schedule.DEFAULT_SAVE_EVERY)
    elif "save_at" in change:
        assert not new.uniform and (new.n_saves is not None) == (change["save_at"] == "log")
    else:
        assert (new.save_at, new.n_saves, new.save_every) == (sch.save_at, change.get("n_saves", sch.n_saves),
                                                              sch.save_every)


KEYS_AND_SEEDS = st.one_of(NUMBERS, st.integers(-2 ** 70, 2 ** 70), st.just(jax.random.key(3)))


TASK_VALID = {"key": st.one_of(st.none(), st.integers(0, 2 ** 32 - 1), st.just(jax.random.key(3))),
              "noise": st.one_of(st.floats(0, 2), st.integers(0, 3)),
              "degree": st.integers(1, dmft.tasks.MAX_DEGREE),
              # (modular_addition(3, f) refuses 17/18 < f < 1: every one of the 9 pairs would train)
              "fraction": st.one_of(st.floats(0.05, 0.9), st.just(1.0))}
TASK_BAD = {"key": _bad([-1, 2 ** 32, True, 3.0, "0"], KEYS_AND_SEEDS),
            "noise": _bad([-0.5, math.nan, math.inf, True]),
            "degree": _bad([0, -2, dmft.tasks.MAX_DEGREE + 1, 400, 2.0, True]),
            "fraction": _bad([0.0, -0.5, 1.5, math.nan, True])}


@given(case=cases(TASK_VALID, TASK_BAD))
@example(case=({"key": None, "noise": False, "degree": None, "fraction": 1.0},   # CI: a bad single_index
               ("noise", "degree")))                                              # argument, good modular_addition
@example(case=({"key": 7, "noise": 0.5, "degree": 3, "fraction": 0.5}, ()))       # all valid
@example(case=({"key": 0, "noise": 1e154, "degree": 2, "fraction": 0.5}, ("noise",)))   # noise whose square overflows
def test_task_arguments_are_used_or_refused_by_name(case):
    """Data generators take a key or an int seed in [0, 2^32 - 1]; numbers are real numbers,
    never booleans; anything else is an InputError naming the argument."""
    args, spoilt = case
    key, noise, degree, fraction = (args[k] for k in ("key", "noise", "degree", "fraction"))
    for make, fields, used in (
            (lambda: dmft.tasks.single_index(D=3, P=4, P_test=2, degree=degree, noise=noise, key=key),
             ("key", "noise", "degree"), (noise, degree)),
            (lambda: dmft.tasks.modular_addition(3, fraction, key=key), ("key", "fraction"), (fraction,))):
        here = [f for f in spoilt if f in fields]          # spoilt arguments of this generator
        try:
            d = make()
        except ValueError as err:
            # a finite noise so large that the targets overflow (single_index(noise=1e154)) is
            # refused naming noise (it named y_train, an array the caller never passed)
            _refused(err, here, alias={"fraction": "train_fraction"})
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

@st.composite
def solve_cases(draw):
    """Options of dmft.solve that fit together (absent ones take their defaults), at most two
    spoilt. Valid options that change the compiled program (samples, replicas, kernels,
    sampler, method, a weight decay > 0) keep to a few values: each new one costs a
    compilation of seconds (steps and save_every are those of the scale test above, whose
    programs it reuses)."""
    method = draw(st.sampled_from([ABSENT, "auto", "forward", "lazy"]))
    valid = {"method": st.just(method),
             "eta0": _optional(st.floats(0.05, 0.5)), "gamma0": _optional(st.floats(0.5, 2.0)),
             "weight_decay": _optional(st.just(0.0)),
             "samples": _optional(st.just(64)), "replicas": _optional(st.just(4)),
             "kernels": _optional(st.just(True)), "control_variate": _optional(st.sampled_from([None, True, False])),
             "sampler": _optional(st.just("stratified")),
             "key": _optional(st.one_of(st.none(), st.just(jax.random.key(5)))),
             "tol": _optional(st.floats(1e-12, 1e-8)), "damping": _optional(st.floats(0.8, 1.0))}
    bad = {"method": _bad(["exact", "closure", "Forward"]),   # closure: not for tanh
           "eta0": _bad([0.0, -0.1, math.nan, True]),
           "gamma0": _bad([0.0, -1.0, math.inf, True]),
           "weight_decay": _bad([-0.1, math.nan, 10.0 ** 6, True]),
           "samples": _bad([1, 33, 30.5, True]),
           "replicas": _bad([0, 3, 64, True]),
           "kernels": _bad([1, "yes"]),
           "control_variate": _bad([1, "no"]),
           "sampler": _bad(["MC", "random", ""]),
           "key": _bad([0, 7, "k", jax.random.split(jax.random.key(1), 2)]),
           "tol": _bad([0.0, -1e-9, math.inf, True]),
           "damping": _bad([0.0, 1.5, math.nan, True])}
    opts, spoilt = _spoil(draw, valid, bad)
    return {k: v for k, v in opts.items() if v is not ABSENT}, spoilt


@given(case=solve_cases())
@example(case=({"method": "lazy", "gamma0": 0.5, "control_variate": False, "tol": 1e-10}, ()))   # all valid
@example(case=({"gamma0": True, "eta0": 0.2}, ("gamma0",)))                      # refused by TwoLayer
def test_solve_succeeds_finite_or_refuses_before_compute(case):
    opts, spoilt = case
    opts = dict(opts)
    gamma0 = opts.pop("gamma0", 1.0)
    try:
        model = dmft.TwoLayer("tanh", gamma0=gamma0)
    except ValueError as err:
        _refused(err, [f for f in spoilt if f == "gamma0"])
        return
    base = dict(eta0=0.3, steps=4, save_every=2, samples=64, method="forward")
    base.update(opts)
    before = dict(TRACE_COUNTS)
    try:
        sol = dmft.solve(model, DATA, **base)
    except dmft.DivergenceError as err:          # allowed: a documented failure with its step
        assert err.step is not None
        assert spoilt, f"valid options diverged: {err!r}"
        return
    except (ValueError, TypeError) as err:
        _refused(err, spoilt)
        assert TRACE_COUNTS == before, "a refused solve must not compile"
        return
    for name, v in sol.arrays().items():
        assert np.all(np.isfinite(v)), name


@given(gamma0=st.floats(1e-3, 1e3), eta0=st.floats(1e-3, 1e3), share=st.floats(0, 1, exclude_max=True),
       method=st.sampled_from(["forward", "closure", "lazy"]))
def test_extreme_values_give_finite_results_or_a_divergence_error(gamma0, eta0, share, method):
    """Values across and beyond the stable range: finite arrays, or DivergenceError with the step.
    The decay is drawn below min(10, 1 / eta0) (eta0 x decay < 1), not filtered: assume() threw
    away most draws, and a random run failed Hypothesis's filter_too_much health check."""
    decay = share * min(10.0, 1.0 / eta0)
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


@st.composite
def train_cases(draw):
    """Options of networks.train that fit together (absent ones take their defaults), at
    most two spoilt. Valid options that change the compiled program (width, seeds, kernels,
    a batch smaller than P) keep the base values: each new one costs a compilation."""
    valid = {"width": _optional(st.just(8)), "seeds": _optional(st.just(2)),
             "eta0": _optional(st.floats(0.05, 0.5)), "weight_decay": _optional(st.floats(0.0, 1.0)),
             "kernels": _optional(st.just(False)), "antithetic": _optional(st.booleans()),
             "keep_params": _optional(st.booleans()),
             "batch_size": _optional(st.sampled_from([None, DATA.P])),
             "key": _optional(st.one_of(st.none(), st.just(jax.random.key(5))))}
    bad = {"width": _bad([0, -2, 8.5, True]),
           "seeds": _bad([0, -1, 1.5, True]),
           "eta0": _bad([0.0, -0.1, math.inf, True]),
           "weight_decay": _bad([-0.1, math.nan, 10.0 ** 6, True]),
           "kernels": _bad([1, "yes"]),
           "antithetic": _bad([1, "yes"]),
           "keep_params": _bad([0, "no"]),
           "batch_size": _bad([0, DATA.P + 1, 2.5, True]),
           "key": _bad([0, 7, "k"])}
    opts, spoilt = _spoil(draw, valid, bad)
    return {k: v for k, v in opts.items() if v is not ABSENT}, spoilt


@given(case=train_cases())
@example(case=({"width": 8, "antithetic": True, "keep_params": True, "batch_size": DATA.P}, ()))   # all valid
def test_networks_train_succeeds_finite_or_refuses(case):
    opts, spoilt = case
    base = dict(width=8, seeds=2, eta0=0.3, steps=4, save_every=2)
    base.update(opts)
    before = dict(TRACE_COUNTS)
    try:
        run = networks.train(dmft.TwoLayer("relu"), DATA, **base)
    except (ValueError, TypeError) as err:
        _refused(err, spoilt)
        assert TRACE_COUNTS == before
        return
    bad = run.info["diverged"]
    assert spoilt or not bad, f"valid options diverged: {bad}"
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


# overrides that are valid together (every steps a multiple of every save_every, samples a
# multiple of 2 x the default replicas), with the value each sets
VALID_OVERRIDES = [("train.steps", "600", 600), ("train.steps", "1200", 1200), ("train.eta0", "0.5", 0.5),
                   ("train.eta0", "2", 2.0), ("train.save_every", "20", 20), ("train.save_every", "40", 40),
                   ("model.activation", "'tanh'", "tanh"), ("model.activation", "erf", "erf"),
                   ("model.centered", "false", False), ("sweep.gamma0", "[0.5, 1]", [0.5, 1.0]),
                   ("sweep.gamma0", "[2.5]", [2.5]), ("task.P", "8", 8), ("task.D", "4", 4),
                   ("theory.samples", "64", 64), ("simulate.widths", "[64, 128]", [64, 128]),
                   ("task.name", "'kumar_quadratic'", "kumar_quadratic"), ("model.readout", "'fixed'", "fixed")]


@st.composite
def override_cases(draw):
    """Up to four valid overrides, and at most two (key, literal) pairs of any kind inserted
    among them (spoilt: usually refused, though a pair may be valid by chance)."""
    pairs = [(k, v) for k, v, _ in draw(st.lists(st.sampled_from(VALID_OVERRIDES), max_size=4))]
    n = draw(SPOILS)
    spoilt = draw(st.lists(st.tuples(KEYS, LITERALS), min_size=n, max_size=n))
    for pair in spoilt:
        pairs.insert(draw(st.integers(0, len(pairs))), pair)
    return pairs, spoilt


@given(case=override_cases())
@example(case=([("train.steps", "1200"), ("train.save_every", "40"), ("sweep.gamma0", "[2.5]")], []))  # valid
def test_config_loader_accepts_or_names_the_key(case):
    from experiments.jobs import load_config

    pairs, spoilt = case
    overrides = [f"{k}={v}" for k, v in pairs]
    try:
        cfg = load_config(None, overrides)
    except dmft.ConfigError as err:
        assert spoilt, f"valid overrides refused: {err!r}"
        assert any(f"{k}={v}" in str(err) or _names_word(err, k) for k, v in spoilt), (repr(err), spoilt)
        return
    assert cfg["train"]["steps"] % cfg["train"]["save_every"] == 0
    assert all(g > 0 for g in cfg["sweep"]["gamma0"])
    if not spoilt:       # every key holds the value its last override gave it
        want = {}
        for k, v in pairs:
            want[k] = next(w for kk, vv, w in VALID_OVERRIDES if (kk, vv) == (k, v))
        for k, w in want.items():
            sec, name = k.split(".")
            assert cfg[sec][name] == w, (k, cfg[sec][name], w)


# the same in a TOML file: [section] key = value (strings quoted)
FILE_ENTRIES = [(k, v if not isinstance(w, str) or v.startswith("'") else f"'{v}'") for k, v, w in VALID_OVERRIDES]
FILE_BAD_VALUES = ["-1", "0", "2.5", "nan", "inf", "true", "'relu'", "[]", "[0.5, -1]", "''", "[[1]]",
                   "{a=1}", "1e400", "'npz'", "[1, 2]"]


@st.composite
def config_files(draw):
    """(bytes, what is spoilt): a valid TOML configuration (()), one with a bad key or value
    ((key,): the key is named), one made unreadable ("syntax": bytes that are no TOML or no
    UTF-8; the file is named), or any bytes at all (None: no promise beyond a ConfigError)."""
    kind = draw(st.sampled_from(["valid", "valid", "valid", "key", "value", "syntax", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=60)), None
    table = dict(draw(st.lists(st.sampled_from(FILE_ENTRIES), max_size=4)))
    spoilt = ()
    if kind == "key":
        k = draw(st.sampled_from(["train.stepz", "trian.steps", "model.gamma", "theory.sample"]))
        table[k], spoilt = "1", (k,)
    elif kind == "value":
        k = draw(st.sampled_from(sorted({k for k, _ in FILE_ENTRIES})))
        table[k], spoilt = draw(st.sampled_from(FILE_BAD_VALUES)), (k,)
    sections: dict = {}
    for k, v in table.items():
        sec, name = k.split(".", 1)
        sections.setdefault(sec, []).append(f"{name} = {v}")
    text = "".join(f"[{sec}]\n" + "\n".join(lines) + "\n" for sec, lines in sections.items()).encode()
    if kind == "syntax":
        junk = draw(st.sampled_from([b"\xff\xfe", b"= =\n", b"[train\n", b"steps = \n", b"\x00"]))
        at = draw(st.integers(0, len(text)))
        return text[:at] + junk + text[at:], "syntax"
    return text, spoilt


@given(case=config_files())
@example(case=(b"[train]\nsteps = 1200\nsave_every = 40\n[model]\nactivation = 'tanh'\n", ()))   # valid
@example(case=(b"[task]\nname = 'npz'\n", ("task.name",)))   # (a random draw: its refusal said neither file nor what must be)
def test_config_files_of_any_bytes_are_read_or_refused(tmp_path_factory, case):
    from experiments.jobs import load_config

    text, spoilt = case
    path = tmp_path_factory.mktemp("c") / "c.toml"
    path.write_bytes(text)
    try:
        load_config(str(path))
    except dmft.ConfigError as err:
        assert str(path) in str(err) or "unknown" in str(err) or "expected" in str(err) or "must" in str(err)
        assert spoilt != (), f"a valid file refused: {err!r}\n{text!r}"
        if spoilt == "syntax":
            assert str(path) in str(err), repr(err)
        elif spoilt:
            k = spoilt[0]
            assert _names_word(err, k) or f"[{k.split('.')[0]}]" in str(err), (repr(err), text)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job=st.sampled_from(["grok", "dln", "scan"]), log_saves=st.sampled_from([0, 10, 40]),
       where=st.sampled_from(["none", "file", "override"]), every=st.sampled_from([20, 40]),
       full=st.booleans())
@example(job="grok", log_saves=10, where="file", every=20, full=True)
def test_save_every_beside_log_saves_is_refused_where_the_user_wrote_both(tmp_path, job, log_saves, where,
                                                                          every, full):
    """log_saves > 0 replaces the save grid: a save_every written in the file or an override
    beside it is refused by name (it was dropped without a word); the defaults', a preset's or a
    stored configuration's save_every (as a dict, or the config.toml a run writes, which lists
    every field) is not the user's and passes."""
    from experiments import dln, grok, scan
    from experiments.config import to_toml

    path = tmp_path / f"{job}_{log_saves}_{where}_{every}_{full}.toml"
    lines = ["[train]", "steps = 1000"] + ([f"log_saves = {log_saves}"] if log_saves else [])
    lines += [f"save_every = {every}"] if where == "file" else []
    if job == "scan":
        lines = ["[scan]", "kind = 'deep_linear'", "[scan.grid]", "'train.eta0' = [0.01, 0.02]"] + lines
    path.write_text("\n".join(lines) + "\n")
    over = [f"train.save_every={every}"] if where == "override" else []
    if job == "grok":
        load = lambda src, o: grok.load_config(src, o, full=full)           # noqa: E731
    elif job == "dln":
        load = lambda src, o: dln.load_config(src, o, full=full)            # noqa: E731
    else:
        load = scan.load_config
    if log_saves and where != "none":
        with pytest.raises(dmft.ConfigError, match="train.save_every.*log_saves"):
            load(str(path), over)
        with pytest.raises(dmft.ConfigError, match="train.save_every.*log_saves"):
            load(tomllib.loads(path.read_text()), over)          # a dict, as a notebook writes it
        return
    cfg = load(str(path), over)
    assert cfg["train"].get("log_saves", 0) == log_saves
    if where != "none":
        assert cfg["train"]["save_every"] == every
    if job != "scan":
        assert load(cfg, []) == cfg          # a stored configuration reloads as it is
    else:
        assert scan.load_config(cfg) == cfg
    stored = tmp_path / f"stored_{path.name}"
    stored.write_text(to_toml(cfg))
    assert load(str(stored), []) == cfg


TEACHER_FIELDS = ("d_in", "d_out", "s", "P", "sigma")


@st.composite
def deep_linear_cases(draw):
    """linear_teacher and DeepLinear arguments that fit together (rank r <= min(d_in, d_out),
    P >= d_in to whiten, width >= r), at most two spoilt; and r. Valid sizes keep to a few
    shapes: each new shape of random numbers costs a compilation."""
    d_in, d_out = draw(st.sampled_from([(3, 2), (2, 3)]))
    r = draw(st.sampled_from([2, 1]))
    valid = {"d_in": st.just(d_in), "d_out": st.just(d_out),
             "s": st.lists(st.floats(0.01, 10), min_size=r, max_size=r),
             "P": st.sampled_from([None, 4]), "sigma": st.floats(0, 2),
             "depth": st.sampled_from([3, 1, 2, 5]),        # 3 first: a narrow width drawn with the
             "width": st.integers(r, 8), "scale": st.floats(1e-3, 2)}   # simplest depth is refused
    bad = {"d_in": _bad([r - 1, -1, 2.0, True]), "d_out": _bad([r - 1, -1, 2.0, True]),   # r - 1: below the rank
           "s": _bad([[], [0.0], [1.0, -1.0], [math.nan], [math.inf], "abc", None, [1.0] * (min(d_in, d_out) + 1)],
                     st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6)),
           "P": _bad([d_in - 1, 0, 8.0, True]),                              # d_in - 1: too few to whiten
           "sigma": _bad([-0.5, math.nan, math.inf, True]),
           "depth": _bad([0, -1, 1.5, True]),
           "width": _bad([r - 1, -2, 2.5, True]),            # r - 1: narrower than the rank (refused for depth > 1)
           "scale": _bad([0.0, -0.1, math.nan, math.inf, True])}
    return _spoil(draw, valid, bad) + (r,)


@given(case=deep_linear_cases())
@example(case=({"d_in": 2, "d_out": 3, "s": [2.0, 0.5], "P": 4, "sigma": 0.1, "depth": 3, "width": 4,
                "scale": 0.1}, (), 2))                                                    # all valid
@example(case=({"d_in": 3, "d_out": 2, "s": [2.0, 0.5], "P": None, "sigma": 0.0, "depth": 3, "width": 1,
                "scale": 0.1}, ("width",), 2))                                   # narrower than the rank
@example(case=({"d_in": 3, "d_out": 2, "s": [1.0], "P": 4, "sigma": 1e200, "depth": 2, "width": 2,
                "scale": 0.1}, ("sigma",), 1))                                    # label_noise: square overflows
def test_deep_linear_inputs_are_used_or_refused_by_name(case):
    a, spoilt, r = case
    try:
        data = dmft.tasks.linear_teacher(a["d_in"], a["d_out"], a["s"], P=a["P"], label_noise=a["sigma"])
    except ValueError as err:
        # a finite label_noise so large that the targets overflow (linear_teacher(3, 2, [1.0],
        # P=4, label_noise=1e200)) is refused naming label_noise (it named y_train)
        _refused(err, [f for f in spoilt if f in TEACHER_FIELDS],
                 alias={"s": "singular_values", "sigma": "label_noise"})
        return
    assert np.all(np.isfinite(data.s)) and np.all(data.s > 0)
    if not any(f in TEACHER_FIELDS for f in spoilt):
        assert (data.d_in, data.d_out, data.rank, data.P) == (a["d_in"], a["d_out"], r, a["P"])
        assert np.allclose(data.s, a["s"])
    try:
        model = dmft.DeepLinear(a["depth"], a["width"], a["scale"], "aligned")
        model.check_data(data)
    except ValueError as err:
        here = [f for f in spoilt if f not in TEACHER_FIELDS]
        if data.rank > r:     # spoilt singular_values accepted, of a higher rank than the width was drawn for
            here.append("width")
        _refused(err, here, alias={"scale": "init_scale"})
        return
    assert model.depth >= 1 and model.width >= 1 and model.init_scale > 0
    assert model.depth == 1 or model.width >= data.rank


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


@given(job=st.sampled_from(["grok", "dln"]), steps=st.integers(1, 400), log_saves=st.integers(1, 600))
@example(job="grok", steps=100, log_saves=101)
@example(job="dln", steps=100, log_saves=100)
@settings(max_examples=25, deadline=None)
def test_more_log_saves_than_steps_are_refused_by_the_jobs_configs(job, steps, log_saves):
    """train.log_saves above train.steps (or the grok weight-decay scan's decay.steps) is refused
    when the configuration loads, naming both (the schedule cut it to steps + 1 saves without a
    word); up to the steps it loads."""
    from experiments import dln, grok

    mod = grok if job == "grok" else dln
    sets = [f"train.steps={steps}", f"train.log_saves={log_saves}"]
    if log_saves > steps:
        with pytest.raises(dmft.ConfigError, match=r"^train\.log_saves .* is more than train\.steps"):
            mod.load_config(None, sets)
    else:
        assert mod.load_config(None, sets)["train"]["log_saves"] == log_saves
    if job == "grok" and log_saves > 1:     # the weight-decay scan saves on the same log grid
        with pytest.raises(dmft.ConfigError, match=r"^train\.log_saves .* is more than decay\.steps"):
            mod.load_config(None, ["testbed.name='lyu'", f"train.log_saves={log_saves}",
                                   f"decay.steps={log_saves - 1}"])


settings.load_profile("suite")            # (the modules imported after this one: their own settings)
