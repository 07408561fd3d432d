"""Bad arguments to `validation`'s entry points raise one `dmft.InputError` naming the argument,
before any compute; valid calls give the results they gave before the checks (pinned values)."""

import re
import types

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import dmft
import networks
import validation
from dmft import InputError
from validation import grokking as gk
from validation.fitting import loglog_fit

FAST = settings(max_examples=12, deadline=None)

T = np.geomspace(0.1, 100.0, 25)
LOSS = 0.3 / (1 + (T / 10) ** 3) + 1e-3
MEAS = np.tanh(T / 5)
RATE = np.exp(-((np.log(T) - 1.5) ** 2))


def refused(name, call, *args, **kw):
    """call(*args, **kw) raises an InputError whose message names `name`."""
    with pytest.raises(InputError, match=rf"(?<!\w){re.escape(name)}(?!\w)"):
        call(*args, **kw)


# ------------------------------------------------------------------ generated bad values

text = st.text(max_size=4)
complex_numbers = st.complex_numbers(min_magnitude=0.5, max_magnitude=10, allow_nan=False,
                                     allow_infinity=False).filter(lambda z: z.imag != 0)
# not one real number: text, None, NaN, inf, complex, an array of several, a flag, a list
bad_real = st.one_of(text, st.none(), st.sampled_from([float("nan"), float("inf"), -float("inf")]),
                     complex_numbers, st.integers(2, 4).map(np.ones), st.booleans(),
                     st.lists(st.floats(0, 1), min_size=2, max_size=3))
# not an integer: those, and fractions
bad_integer = st.one_of(bad_real, st.floats(0.1, 0.9).map(lambda f: 2 + f))
# not a flag
bad_flag = st.one_of(text, st.none(), st.integers(0, 1), st.floats(0, 1), st.just(np.ones(2)))
# not a curve over T's 25 times: text, None, complex, ragged, None inside, a scalar, the wrong length
bad_curve = st.one_of(
    text.filter(lambda s: s != ""), st.none(), complex_numbers.map(lambda z: np.full(T.size, z)),
    st.just([[1.0, 2.0], [3.0]]), st.just([1.0, None] * 12 + [1.0]), st.floats(-1, 1).map(np.float64),
    st.integers(1, 40).filter(lambda n: n != T.size).map(np.ones),
    st.just(np.array(["1"] * T.size)))
# not a time axis
bad_t = st.one_of(text, st.none(), complex_numbers.map(lambda z: T + z), st.just(T[::-1]),
                  st.just(np.array([1.0])), st.just(np.float64(1.0)), st.just(np.where(T > 1, np.nan, T)))
# not a dict
not_a_dict = st.one_of(st.none(), text, st.integers(), st.lists(st.floats(0, 1), max_size=2),
                       st.just(np.ones(3)))


# ------------------------------------------------------------------ grokking metrics

@FAST
@given(bad=bad_real)
def test_grokking_times_threshold(bad):
    refused("threshold", gk.grokking_times, T, LOSS, LOSS, bad)
    refused("threshold", gk.crossing_time, T, LOSS, bad)


@FAST
@given(bad=bad_curve, which=st.sampled_from(["train_loss", "test_loss"]))
def test_grokking_times_curves(bad, which):
    kw = {"train_loss": LOSS, "test_loss": LOSS, which: bad}
    refused(which, gk.grokking_times, T, kw["train_loss"], kw["test_loss"], 0.1)


@FAST
@given(bad=st.one_of(bad_curve.filter(lambda v: v is not None), st.just(-LOSS)),
       which=st.sampled_from(["train_se", "test_se"]))
def test_grokking_times_errors(bad, which):
    """The curves' standard errors are curves too (None: not given), and never negative:
    refused by their own names."""
    refused(which, gk.grokking_times, T, LOSS, LOSS, 0.1, **{which: bad})
    refused("y_se", gk.crossing_time_se, T, LOSS, bad, 0.1)


@FAST
@given(bad=bad_t)
def test_the_time_axis(bad):
    refused("t", gk.grokking_times, bad, LOSS, LOSS, 0.1)
    refused("t", gk.drop_time, bad, LOSS)
    refused("t", gk.early_warning, bad, LOSS, {"m": MEAS})


@FAST
@given(bad=bad_flag)
def test_flags(bad):
    refused("accuracy", gk.grokking_times, T, LOSS, LOSS, 0.1, accuracy=bad)
    refused("rate", gk.change_time, T, MEAS, rate=bad)
    refused("log_time", gk.steepest_change_time, T, LOSS, log_time=bad)


def test_curves_that_do_not_broadcast_are_named():
    refused("train_loss", gk.grokking_times, np.stack([T, T]), np.ones((3, T.size)), LOSS, 0.1)
    with pytest.raises(InputError, match="broadcast"):
        gk.grokking_times(T, np.ones((2, T.size)), np.ones((3, T.size)), 0.1)


@FAST
@given(bad=bad_real, name=st.sampled_from(["min_ratio", "max_decades"]))
def test_drop_time_options(bad, name):
    if name == "max_decades" and isinstance(bad, float) and bad == float("inf"):
        bad = -bad              # +inf is no cap (allowed, as before)
    refused(name, gk.drop_time, T, LOSS, **{name: bad})


@FAST
@given(bad=st.one_of(bad_real, st.floats(-5, -1e-3)))
def test_change_time_min_change(bad):
    refused("min_change", gk.change_time, T, MEAS, min_change=bad)


@FAST
@given(bad=bad_curve, which=st.sampled_from(["loss", "measure"]))
def test_drop_and_change_curves(bad, which):
    call = gk.drop_time if which == "loss" else gk.change_time
    refused(which, call, T, bad)


@FAST
@given(bad=not_a_dict)
def test_early_warning_measures(bad):
    refused("measures", gk.early_warning, T, LOSS, bad)


@FAST
@given(bad=bad_curve)
def test_early_warning_measure_values(bad):
    refused("measures['m']", gk.early_warning, T, LOSS, {"m": bad})


@FAST
@given(bad=st.one_of(st.integers(), st.none(), st.floats(), st.just("r"), st.just((1, 2)), st.just(np.ones(2))))
def test_early_warning_rates(bad):
    refused("rates", gk.early_warning, T, LOSS, {"m": MEAS}, rates=bad)


@pytest.mark.parametrize("name", ["test_loss", "t_drop", "t_drop_se", "observed"])
def test_early_warning_refuses_measure_names_that_clobber(name):
    refused("measures", gk.early_warning, T, LOSS, {name: MEAS})


@FAST
@given(successes=st.one_of(bad_integer, st.integers(-5, -1), st.integers(11, 20)),
       n=st.one_of(bad_integer, st.integers(-5, -1)), z=st.one_of(bad_real, st.floats(-3, 0)))
def test_wilson_interval(successes, n, z):
    refused("successes", gk.wilson_interval, successes, 10)
    refused("n", gk.wilson_interval, 0, n)
    refused("z", gk.wilson_interval, 3, 10, z)


@FAST
@given(bad=not_a_dict, value=st.one_of(text.filter(lambda s: s != ""), st.none(), st.just([0.5, 1.0]),
                                       st.just([2, 0]), complex_numbers.map(lambda z: [z])))
def test_lead_verdict(bad, value):
    refused("leads", gk.lead_verdict, bad)
    refused("leads['m']", gk.lead_verdict, {"m": value})


def _state(D=3, T_=2, seed=3):
    rng = np.random.default_rng(seed)
    return {"mean": rng.normal(size=(T_, D)), "second_moment": rng.normal(size=(T_, D, D))}


BETA = np.array([0.6, 0.8, 0.0])

bad_state = st.one_of(not_a_dict, st.just({"mean": np.zeros((2, 3))}),
                      st.just({"mean": np.zeros((2, 3)), "second_moment": np.zeros((2, 3, 2))}),
                      st.just({"mean": np.zeros((2, 3)), "second_moment": "abc"}),
                      st.just({"mean": np.zeros((4, 3)), "second_moment": np.zeros((2, 3, 3))}),
                      st.just({"mean": None, "second_moment": np.zeros((2, 3, 3))}))
bad_beta = st.one_of(text, st.none(), st.just(np.ones((3, 3))), st.just(np.array([1.0, np.nan, 0.0])),
                     st.just(np.ones(3) * 1j), st.just(np.float64(1.0)), st.just(np.ones(4)))


@FAST
@given(state=bad_state, beta=bad_beta, gamma0=st.one_of(bad_real, st.floats(-2, 0)), eps=bad_real)
def test_kumar_decomposition_and_planted_overlap(state, beta, gamma0, eps):
    refused("state", gk.kumar_decomposition, state, BETA, 0.5, 0.1)
    refused("beta", gk.kumar_decomposition, _state(), beta, 0.5, 0.1)
    refused("gamma0", gk.kumar_decomposition, _state(), BETA, gamma0, 0.1)
    refused("eps", gk.kumar_decomposition, _state(), BETA, 0.5, eps)
    if not (isinstance(state, dict) and "second_moment" in state and np.shape(state["second_moment"]) == (2, 3, 3)):
        refused("state", gk.planted_overlap, state, BETA)
    refused("beta", gk.planted_overlap, _state(), beta)


@FAST
@given(bad=st.one_of(bad_integer, st.integers(-3, 1)), smooth=st.one_of(bad_integer, st.integers(-5, -1)))
def test_fourier_ipr_and_steepest_change_time(bad, smooth):
    refused("p", gk.fourier_ipr, bad)
    refused("smooth", gk.steepest_change_time, T, LOSS, smooth=smooth)


@FAST
@given(bad=st.one_of(text, st.none(), st.just(np.zeros(3)), st.just(np.ones((2, 2))), st.just([1j, 1.0])))
def test_direction_measures(bad):
    refused("u", gk.direction_overlap, bad)
    refused("u", gk.direction_alignment, bad)


# ------------------------------------------------------------------ fits

bad_points = st.one_of(st.none(), text, st.just(("ab", "cd")), st.just(["1", "2"]),
                       st.lists(complex_numbers, min_size=2, max_size=3), st.just([[1.0, 2.0], [3.0]]),
                       st.just([1.0, None]))


@FAST
@given(bad=bad_points, which=st.sampled_from(["x", "y"]))
def test_loglog_fit(bad, which):
    good = [1.0, 2.0] if not isinstance(bad, list) or len(bad) != 3 else [1.0, 2.0, 4.0]
    x, y = (bad, good) if which == "x" else (good, bad)
    refused(which, loglog_fit, x, y)


@FAST
@given(bad=bad_points)
def test_decay_fits(bad):
    refused("kappa", gk.fit_inverse_decay, bad, [1.0, 2.0, 3.0])
    refused("t_grok", gk.fit_power_law_decay, [1.0, 2.0], bad)


# ------------------------------------------------------------------ comparisons

def _solution(t, y, f, data=None):
    T_ = len(t)
    loss = np.mean((y[None] - f) ** 2, axis=1)
    info = {"target_rms": {"test": float(np.sqrt(np.mean(y ** 2)))}}
    if data is not None:
        info["config"] = {"data": data}
    return dmft.Solution(t=t, f_train=f, f_test=f, train_loss=loss, test_loss=loss, ntk=None,
                         feature_kernel=None, gradient_kernel=None, alignment=np.zeros(T_),
                         weight_change={"first_layer": np.zeros(T_)}, error=None, info=info)


def _run(t, y, f, width=16, data=None):
    S = f.shape[0]
    loss = np.mean((y[None, None] - f) ** 2, axis=2)
    info = {"width": width, "seeds": S, "diverged": {}}
    if data is not None:
        info["config"] = {"data": data}
    return networks.Run(t=t, f_train=f, f_test=f, train_loss=loss, test_loss=loss, ntk=None,
                        feature_kernel=None, gradient_kernel=None, alignment=np.zeros((S, len(t))),
                        weight_change={"first_layer": np.zeros((S, len(t)))}, info=info)


TC = np.array([0.0, 1.0, 2.0])
YC = np.array([1.0, -1.0, 2.0, 0.5])
FC = np.outer([0.0, 0.5, 0.9], YC)           # 0 at t = 0, as a centered model


def _pair(y_run=YC, data_sol=None, data_run=None, offset=0.1):
    f_net = np.stack([FC + offset * (TC > 0)[:, None], FC - offset * (TC > 0)[:, None]])
    return _solution(TC, YC, FC, data_sol), _run(TC, y_run, f_net, data=data_run)


@FAST
@given(bad=st.one_of(st.none(), text, st.integers(), st.just({"t": TC}), st.just(np.ones(3))))
def test_compare_argument_types(bad):
    sol, run = _pair()
    refused("solution", validation.compare, bad, run)
    refused("run", validation.compare, sol, bad)
    refused("solution", validation.width_scaling, bad, {16: run})


def test_compare_says_when_solution_and_run_are_swapped():
    sol, run = _pair()
    with pytest.raises(InputError, match="solution must be a dmft.Solution.*swapped"):
        validation.compare(run, sol)


@FAST
@given(scale=st.floats(1.1, 3.0) | st.floats(0.2, 0.9))
def test_compare_refuses_a_run_on_other_training_targets(scale):
    """Both predict 0 at t = 0, so their initial losses are the targets' mean squares: a run on
    other targets (same test set, same shapes) is refused, naming both arguments."""
    sol, run = _pair(y_run=YC * scale)
    with pytest.raises(InputError, match="solution and run were computed on different training data"):
        validation.compare(sol, run)


@FAST
@given(theory=st.one_of(st.none(), st.lists(st.integers(0, 3), min_size=2, max_size=2)),
       nets=st.one_of(st.none(), st.just("own"), st.lists(st.integers(0, 3), min_size=2, max_size=2)),
       full=st.booleans())
def test_compare_refuses_networks_on_another_batch_sequence(theory, nets, full):
    """A DMFT conditioned on one minibatch sequence was compared with networks trained on another
    (z = -96) or each seed on its own (their mean approaches dmft.sgd_mean): refused, naming the
    sequences. The same sequence, full-batch networks, a theory that records none (full batch,
    sgd_mean) and runs that record none are compared."""
    sol, run = _pair()
    if theory is not None:
        sol.info["batch_key"] = theory
    if not full:
        run.info["batch_size"] = 2
        if nets is not None:                       # (None: a run that records neither)
            run.info["shared_batches"] = nets != "own"
        if isinstance(nets, list):
            run.info["config"] = {"batch_key": nets}
    bad = theory is not None and not full and (nets == "own" or (isinstance(nets, list) and nets != theory))
    if bad:
        refused("sgd_mean" if nets == "own" else "batch_key", validation.compare, sol, run)
    else:
        validation.compare(sol, run)


def test_compare_refuses_recorded_data_that_differ_and_accepts_what_cannot_be_told_apart():
    gen = {"P": 4, "P_test": 4, "D": 2, "C": 1, "has_test_targets": True,
           "meta": {"task": "single_index", "key": [0, 0], "degree": 2}}
    other_key = {**gen, "meta": {**gen["meta"], "key": [0, 1]}}
    other_p = {**gen, "P": 5}
    for d in (other_key, other_p):
        sol, run = _pair(data_sol=gen, data_run=d)
        with pytest.raises(InputError, match="different data"):
            validation.compare(sol, run)
    # same recorded data, or data without a generator's key (their arrays may be the same): compared
    for a, b in ((gen, gen), ({**gen, "meta": {}}, {**gen, "meta": {"task": "npz", "path": "x.npz"}})):
        sol, run = _pair(data_sol=a, data_run=b)
        assert validation.compare(sol, run).summary["loss"] == "test"
    # uncentered (nonzero predictions at t = 0): the initial losses say nothing about the data
    sol = _solution(TC, YC, FC + 0.3)
    run = _run(TC, YC * 2, np.stack([FC + 0.3, FC + 0.31]))
    validation.compare(sol, run)


@FAST
@given(bad=st.one_of(not_a_dict, st.just({16: "run"}),
                     st.just({"a": None}), st.just({0: None}), st.just({})))
def test_width_scaling_runs(bad):
    sol, run = _pair()
    if isinstance(bad, dict) and bad.get(16) == "run":
        refused("runs[16]", validation.width_scaling, sol, bad)
    else:
        refused("runs", validation.width_scaling, sol, bad)


@FAST
@given(widths=st.lists(st.integers(1, 4096), min_size=1, max_size=4, unique=True), data=st.data())
def test_width_scaling_refuses_a_run_under_another_width(widths, data):
    """Runs keyed by widths they do not record (shuffled keys) fitted a slope of +0.5 for -0.5
    without a word; now the first such key is refused by name. Keys that match are fitted."""
    sol, _ = _pair()
    keys = data.draw(st.permutations(widths))
    runs = {k: _pair()[1] for k in keys}
    for k, w in zip(keys, widths):
        runs[k].info["width"] = w
    wrong = [k for k, w in zip(keys, widths) if k != w]
    if wrong:
        refused(f"runs[{wrong[0]}]", validation.width_scaling, sol, runs)
    else:
        assert list(validation.width_scaling(sol, runs)["widths"]) == sorted(widths)


@FAST
@given(bad=st.one_of(st.none(), text, st.integers(), st.just({"gamma0s": [1.0]}),
                     st.just(types.SimpleNamespace(gamma0s=[1.0], widths=[]))))
def test_checks_sweep(bad):
    refused("sweep", validation.checks, bad)


def _lazy_sweep():
    curve = 0.5 * 0.1 ** (TC / TC[-1])
    one = types.SimpleNamespace(train_loss=curve, test_loss=curve)
    return types.SimpleNamespace(widths=[], gamma0s=[0.01], solutions={0.01: one}, lazy={0.01: one})


@FAST
@given(value=st.one_of(bad_real.filter(lambda v: not (isinstance(v, float) and v == float("inf"))),
                       st.floats(-3, -0.01)), name=st.sampled_from(["lazy_rel", "agreement_rel"]),
       chk=st.one_of(text.filter(lambda s: s != ""), st.integers(), st.lists(st.floats(0, 1), min_size=1, max_size=2)))
def test_checks_tolerances(value, name, chk):
    """Bad tolerances refused by name; +inf is no bound (accepted, as before the checks; the
    review found it refused)."""
    refused(name, validation.checks, _lazy_sweep(), {name: value})
    assert validation.checks(_lazy_sweep(), {name: float("inf")})
    refused("chk", validation.checks, _lazy_sweep(), chk)
    refused("chk", validation.checks, _lazy_sweep(), {"lazy_rell": 0.1})


# ------------------------------------------------------------------ the sweep (refused before any compute)

@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3))
    return dmft.TwoLayer("relu"), dmft.Dataset(x, np.sin(x[:, 0]), x[:3] + 0.5, np.sin(x[:3, 0] + 0.5))


@FAST
@given(bad=st.one_of(st.sampled_from(["antithetc", "sampels", "replicas", "method", "deep"]),
                     st.text(alphabet="abcdefgh_", min_size=1, max_size=8)),
       own=st.sampled_from(["width", "seeds", "key", "model", "data"]))
def test_lazy_to_rich_refuses_train_kw_it_cannot_pass_before_any_compute(problem, bad, own):
    """A misspelt train_kw was refused by networks.train only after every solve (11.7 s of theory in
    an audit's sweep), and width, seeds or key raised Python's 'multiple values' TypeError there."""
    import inspect

    assume(bad not in inspect.signature(networks.train).parameters)
    model, data = problem
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dmft, "solve", lambda *a, **k: pytest.fail("computed before refusing"))
        refused("train_kw", validation.lazy_to_rich, model, data, [1.0], [16], 2, train_kw={bad: True})
        with pytest.raises(InputError, match=f"train_kw: {own} set by lazy_to_rich itself"):
            validation.lazy_to_rich(model, data, [1.0], [16], 2, train_kw={own: 1})


@FAST
@given(widths=st.one_of(st.none(), text, st.integers(1, 64), st.just([16, "32"]), st.just([16, 2.5]),
                        st.just([0]), st.just([True, 16]), st.just({16: 1})),
       gamma0s=st.one_of(st.none(), st.just([]), st.floats(0.1, 1), st.just(["0.5"]), st.just([0.5, np.nan]),
                         st.just([-1.0]), st.just([1j])),
       seeds=st.one_of(bad_integer, st.integers(-3, 0)))
def test_lazy_to_rich_grid(problem, widths, gamma0s, seeds):
    model, data = problem
    refused("widths", validation.lazy_to_rich, model, data, [1.0], widths, 2)
    refused("gamma0s", validation.lazy_to_rich, model, data, gamma0s, [16], 2)
    refused("seeds", validation.lazy_to_rich, model, data, [1.0], [16], seeds)


@FAST
@given(name=st.sampled_from(["foo", "samples", "eta0", "width"]), value=st.integers(1, 5))
def test_lazy_to_rich_unknown_keywords(problem, name, value):
    model, data = problem
    refused(name, validation.lazy_to_rich, model, data, [1.0], [16], 2, **{name: value})


@FAST
@given(arg=st.sampled_from(["solve_kw", "train_kw", "key", "schedule", "progress", "simulate", "on_result"]),
       bad=st.one_of(text.filter(lambda s: s != ""), st.integers(2, 9), st.just(np.ones(2))))
def test_lazy_to_rich_options(problem, arg, bad):
    model, data = problem
    refused(arg, validation.lazy_to_rich, model, data, [1.0], [16], 2, **{arg: bad})
    if arg not in ("solve_kw", "train_kw"):      # those take what dict() takes, as before
        refused(arg, validation.lazy_to_rich, model, data, [1.0], [16], 2, **{arg: [("samples", 64)]})


def test_lazy_to_rich_model_and_data(problem):
    model, data = problem
    refused("model", validation.lazy_to_rich, None, data, [1.0], [16], 2)
    refused("data", validation.lazy_to_rich, model, (data.x_train, data.y_train), [1.0], [16], 2)


# ------------------------------------------------------------------ valid calls: the same results as before

def test_valid_calls_give_the_results_they_gave_before():
    td, observed = gk.drop_time(T, LOSS)
    assert float(td) == pytest.approx(21.53153548732124, rel=1e-12) and bool(observed)
    assert float(gk.change_time(T, MEAS)) == pytest.approx(2.8012319771010055, rel=1e-12)
    assert float(gk.change_time(T, RATE, rate=True)) == pytest.approx(7.544867645905014, rel=1e-12)
    ew = gk.early_warning(T, LOSS, {"m": MEAS, "r": RATE}, rates=("r",))
    np.testing.assert_allclose([ew["t_drop"], ew["m"]["lead"], ew["r"]["lead"]],
                               [21.53153548732124, 18.730303510220235, 13.986667841416224], rtol=1e-12)
    assert float(gk.steepest_change_time(T, LOSS)) == pytest.approx(10.0, rel=1e-12)
    assert float(gk.steepest_change_time(T, LOSS, smooth=1, log_time=False)) == pytest.approx(8.74947104666228)
    assert gk.wilson_interval(7, 10) == pytest.approx((0.39677321997956516, 0.892210712513788), rel=1e-12)
    assert np.isnan(gk.wilson_interval(0, 0)).all()
    assert gk.lead_verdict({"m": [True, True, False], "e": []}) == {
        "m": {"runs": 3, "leading": 2, "fraction": pytest.approx(2 / 3),
              "ci95": [pytest.approx(0.2076549551264879), pytest.approx(0.9385096847238394)]},
        "e": {"runs": 0, "leading": 0, "fraction": pytest.approx(float("nan"), nan_ok=True),
              "ci95": [pytest.approx(float("nan"), nan_ok=True)] * 2}}
    dec = gk.kumar_decomposition(_state(), BETA, 0.5, 0.2)
    np.testing.assert_allclose(dec["total"], [16.035664782029116, 2.024337142603758], rtol=1e-12)
    np.testing.assert_allclose(dec["linear_power"], [14.495441677268277, 0.7649811253641432], rtol=1e-12)
    np.testing.assert_allclose(gk.planted_overlap(_state(), BETA), [0.9010206526931923, 0.42249624949685705],
                               rtol=1e-12)
    w = np.linspace(-1, 1, 10)
    assert float(gk.fourier_ipr(5)(w, w)[0]) == pytest.approx(0.6, rel=1e-6)
    assert float(gk.fourier_ipr(5.0)(w, w)[0]) == pytest.approx(0.6, rel=1e-6)       # integral floats, as before
    fit = loglog_fit([1, 2, 4, 8], [1.0, 0.6, 0.3, 0.17])
    assert (fit.slope, fit.intercept, fit.stderr) == pytest.approx(
        (-0.8669180045573155, 0.029663838447384697, 0.03396961146017425), rel=1e-12)
    g = gk.grokking_times(T, LOSS, LOSS ** 0.5, 0.05)
    assert (g.t_train, g.t_test, g.gap) == pytest.approx((17.40552051142444, 59.382880248352656, 41.977359736928214))
    assert gk.drop_time(T, LOSS, max_decades=float("inf"))[1]          # no cap: still allowed


@settings(max_examples=25, deadline=None)
@given(c=st.floats(0.05, 0.95), slope=st.floats(-2, 2).filter(lambda s: abs(s) > 1e-3))
def test_valid_crossings_and_fits_are_exact(c, slope):
    """Linear curves cross a level where linear interpolation says; a power law has its slope."""
    t = np.linspace(0.0, 10.0, 11)
    g = gk.grokking_times(t, 1 - t / 10, 1 - t / 20, np.float32(c) if c < 0.5 else c)
    level = float(np.float32(c)) if c < 0.5 else c
    assert g.t_train == pytest.approx(10 * (1 - level), abs=1e-9)
    assert g.reached_train and g.reached_test == (level >= 0.5)
    x = np.array([1.0, 2.0, 4.0])
    assert loglog_fit(x, 3 * x ** slope).slope == pytest.approx(slope, abs=1e-9)


def test_valid_comparisons_are_unchanged():
    sol, run = _pair(offset=0.1)
    c = validation.compare(sol, run)
    np.testing.assert_allclose(c.per_seed_error, 0.1 * (TC > 0) / np.sqrt(np.mean(YC ** 2)), atol=1e-15)
    np.testing.assert_allclose(c.mean_error, 0.0, atol=1e-15)
    sc = validation.width_scaling(sol, {w: _run(TC, YC, np.stack([FC + 1 / w * (TC > 0)[:, None]] * 2), w)
                                        for w in (16, 32, 64)})
    assert sc["mean_fit"].slope == pytest.approx(-1.0, abs=1e-9) and list(sc["widths"]) == [16, 32, 64]
    verdicts = validation.checks(_lazy_sweep(), {"lazy_rel": 1})
    assert [v["verdict"] for v in verdicts] == ["PASS"] and verdicts[0]["tolerance"] == "<= 1"


@FAST
@given(row=st.integers(0, 5), shift=st.floats(1e-12, 1.0), x64=st.booleans())
def test_compare_refuses_a_run_on_other_inputs_by_the_recorded_digest(row, shift, x64):
    """The same targets on other inputs (one training point moved by any amount) could not be
    told apart: every result records `Dataset.digest` (SHA-256 of the values as float64) and
    compare refuses two that differ; a float32 copy of the same values shares the digest."""
    import jax
    import dmft
    import networks

    rng = np.random.default_rng(0)
    x, y, xt = (rng.normal(size=n).astype(np.float32).astype(np.float64) for n in ((6, 3), 6, (4, 3)))
    data = dmft.Dataset(x, y, xt, np.zeros(4))                 # (values a float32 holds exactly)
    moved = x.copy()
    moved[row, 0] += shift
    kw = dict(eta0=0.1, steps=2, save_every=1)
    sol = dmft.solve(dmft.TwoLayer("linear"), data, method="lazy", **kw)
    other = dmft.Dataset(moved, y, xt, np.zeros(4))
    assert other.digest != data.digest
    run = networks.train(dmft.TwoLayer("linear"), other, width=8, seeds=2, key=jax.random.key(0), **kw)
    with pytest.raises(InputError, match="different data.*digest"):
        validation.compare(sol, run)
    same = data if x64 else dmft.Dataset(x.astype(np.float32), y.astype(np.float32), xt.astype(np.float32),
                                         np.zeros(4, np.float32))
    assert same.digest == data.digest
    run = networks.train(dmft.TwoLayer("linear"), same, width=8, seeds=2, key=jax.random.key(0), **kw)
    validation.compare(sol, run)
