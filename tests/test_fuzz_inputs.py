"""Generated bad input to the public calls: one clear error naming the argument, before compute.

Each test draws its inputs with Hypothesis, derandomized (the same examples every run, as CI's
profile in tests/conftest.py), and few of them, so the file runs in seconds. "Before compute" is
checked by JAX's own events: a program lowered for XLA fires '/jax/core/compile/
jaxpr_to_mlir_module_duration' (also where the persistent compilation cache then serves it),
and the solvers' compiled calls count in `dmft.runner.TRACE_COUNTS`.

The defects these tests caught (each fixed in the call that receives the input):
- networks.train(model, data=<not a Dataset>): AttributeError "'int' object has no attribute
  'P'" from the batch-key check, which ran before the data's type was checked;
- networks.train(width=np.array(4)): "TypeError: iteration over a 0-d array" (a 0-d jax array
  was taken as one width; a 0-d numpy array was iterated);
- dmft.deep_linear.drift(..., cross_modes=True) with pi one value for every mode, as the
  docstring allows: a scalar raised IndexError deep in the cross drift, and shape (1,) returned
  a different drift (1.8455, 0.5489 against 1.8411, 0.5713 for the same pi given per mode);
- dmft.tasks.spectrum(r=2**40): MemoryError; r=2**70 or 1e300: numpy's "Maximum allowed size
  exceeded", naming nothing;
- validation.verdicts.z_bound / q_bound with sigma, k or dof an array of one element: numpy's
  TypeError from float() after the argument check had let it through;
- validation.grokking.wilson_interval(n=1e300): OverflowError "int too large to convert to float";
- networks.train(<a DeepLinear>, keep_params="yes"): refused naming keep_weights, a name the
  caller never gave;
- dmft.solve(..., key="0") in a fresh process lowered 4 XLA programs (the activation's tail
  check in plan_solve) before refusing the key.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dmft
import dmft.deep_linear as dl
import networks
from dmft.runner import TRACE_COUNTS
import validation
from validation import grokking, verdicts

FUZZ = settings(derandomize=True, deadline=None, max_examples=15)
ERRORS = (dmft.DmftError, ValueError, TypeError)
_LOWERED = [0]                    # programs lowered for XLA in this process so far


def _listen(name, _secs, **_kw):
    if name == "/jax/core/compile/jaxpr_to_mlir_module_duration":
        _LOWERED[0] += 1


jax.monitoring.register_event_duration_secs_listener(_listen)


def refused(call, name):
    """call() raises one clear error whose message names `name`, lowering and running nothing."""
    lowered, traced = _LOWERED[0], dict(TRACE_COUNTS)
    with pytest.raises(ERRORS) as err:
        call()
    assert re.search(rf"\b{re.escape(name)}\b", str(err.value)), \
        f"{type(err.value).__name__}: {err.value} does not name {name}"
    frame = err.traceback[-1].path
    assert not any(part in str(frame) for part in ("/jax/", "/jaxlib/", "/numpy/")), \
        f"raised from inside a library: {frame}"
    assert _LOWERED[0] == lowered and TRACE_COUNTS == traced, "a refused call compiled or ran something"


# ------------------------------------------------------------------------------- strategies

NOT_NUMBERS = st.sampled_from([None, "abc", "1", b"1", 1j, object(), {}, [1.0, 2.0], np.ones(2), np.ones((1, 1)),
                               jnp.ones(2), np.array("a"), np.array([1j])])
NOT_FINITE = st.sampled_from([float("nan"), float("inf"), -float("inf"), np.float64("nan"), jnp.array(np.inf)])
FLAGS = st.sampled_from([True, False, np.True_])


def bad_positive_real():
    return st.one_of(NOT_NUMBERS, NOT_FINITE, FLAGS, st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
                     st.integers(max_value=0))


def bad_count(minimum=1):
    return st.one_of(NOT_NUMBERS, NOT_FINITE, FLAGS, st.integers(max_value=minimum - 1),
                     st.floats(0.01, 1e6).filter(lambda v: not float(v).is_integer()))


def bad_name(valid):
    return st.one_of(st.text(max_size=6).filter(lambda s: s not in valid), st.integers(), st.none(), FLAGS,
                     st.sampled_from([1.5, [valid[0]], (valid[0],), np.array(valid[0])]))


def bad_flag():
    return st.one_of(st.sampled_from([None, "yes", "True", 0, 1, 1.0, np.array([True]), [True]]), st.integers())


def bad_key():
    return st.one_of(st.sampled_from(["0", 1.5, object(), np.ones(3), np.zeros(2, np.int64),
                                      jax.random.split(jax.random.key(0), 2)]), st.integers(), FLAGS)


@pytest.fixture(scope="module")
def data():
    return dmft.tasks.single_index(D=3, P=4, P_test=2, degree=1, key=jax.random.key(0))


@pytest.fixture(scope="module")
def teacher():
    return dmft.tasks.linear_teacher(3, 2, (2.0, 1.0), P=8, key=0)


MODEL = dmft.TwoLayer("tanh", 1.0)
SCHEDULE = dmft.Schedule(eta0=0.1, steps=4, save_every=2)
ALIGNED = dmft.DeepLinear(depth=3, width=4, init_scale=0.1, init="aligned")


# ------------------------------------------------------------------- the problem's own objects

SCHEDULE_ARGS = {"eta0": bad_positive_real(), "steps": bad_count(), "save_every": bad_count(),
                 "weight_decay": st.one_of(NOT_NUMBERS, NOT_FINITE, FLAGS, st.floats(max_value=-1e-300, allow_nan=False,
                                                                                      allow_infinity=False)),
                 "dynamics": bad_name(("gd", "flow")), "batch_size": bad_count()}


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("name", sorted(SCHEDULE_ARGS))
def test_schedule_refuses(name, data):
    value = data.draw(SCHEDULE_ARGS[name].filter(lambda v: v is not None or name not in ("save_every", "batch_size")),
                      label=name)                 # (None: every step's end only, or full batch)
    refused(lambda: dmft.Schedule(**{"eta0": 0.1, "steps": 4, "save_every": 2, name: value}), name)


MODEL_ARGS = {"gamma0": bad_positive_real(), "readout": bad_name(("trained", "fixed")), "centered": bad_flag(),
              "activation": bad_name(("linear", "relu", "tanh", "erf", "softplus", "square"))}


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("name", sorted(MODEL_ARGS))
def test_two_layer_refuses(name, data):
    value = data.draw(MODEL_ARGS[name].filter(lambda v: not callable(v)), label=name)
    refused(lambda: dmft.TwoLayer(**{name: value}), name)


def _bad_array(good: np.ndarray):
    """Arrays that are wrong for a slot holding `good`: dtype, rank, length, entries."""
    bad_entry = st.sampled_from([np.nan, np.inf, -np.inf, 1e160])
    p = good.shape[0]
    return st.one_of(
        st.sampled_from([good.astype(complex), good.astype(object) * 1j, good.astype(str), good[:0], good[:p - 1],
                         np.concatenate([good, good]), good[None], np.array(1.0), None, "x", good.reshape(-1)[:0]]),
        bad_entry.map(lambda v: np.where(np.arange(good.size).reshape(good.shape) == 0, v, good)))


@settings(derandomize=True, deadline=None, max_examples=25)
@given(st.data())
@pytest.mark.parametrize("name", ["x_train", "y_train", "x_test", "y_test"])
def test_dataset_refuses(name, data):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(4, 3)), "y_train": rng.normal(size=4),
              "x_test": rng.normal(size=(2, 3)), "y_test": rng.normal(size=2)}
    value = data.draw(_bad_array(arrays[name]), label=name)
    if value is None and name in ("x_test", "y_test"):
        return                                    # (no test set, or none but its inputs: allowed)
    refused(lambda: dmft.Dataset(**{**arrays, name: value}), name)


TASKS = {"single_index": (dmft.tasks.single_index, {"D": 3, "P": 4, "P_test": 2}),
         "teacher_network": (dmft.tasks.teacher_network, {"D": 3, "P": 4, "P_test": 2, "width": 2}),
         "sparse_parity": (dmft.tasks.sparse_parity, {"n": 4, "k": 2, "P": 4, "P_test": 2}),
         "modular_addition": (dmft.tasks.modular_addition, {"p": 5})}


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("task", sorted(TASKS))
def test_tasks_refuse_bad_sizes_and_keys(task, data):
    fn, sizes = TASKS[task]
    name = data.draw(st.sampled_from(sorted(sizes) + ["key"]), label="argument")
    value = data.draw(bad_key() if name == "key" else bad_count(), label=name)
    if name == "key" and isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 32:
        return                                    # (an int seed in [0, 2^32 - 1] is a key there)
    refused(lambda: fn(**{**sizes, "key": 0, name: value}), name)


@FUZZ
@given(r=st.one_of(st.integers(2 ** 40, 2 ** 80), st.sampled_from([1e300, 2.0 ** 40, np.int64(2 ** 40)])))
def test_spectrum_refuses_more_modes_than_memory(r):
    """r beyond 8 GiB of float64 is refused naming r (2^40 raised a MemoryError, 2^70 numpy's
    'Maximum allowed size exceeded'). Drawn from 2^40 up, which numpy refuses to allocate at
    once, so that the test cannot fill the machine's memory where the bound is missing."""
    refused(lambda: dmft.tasks.spectrum(r), "r")


# ------------------------------------------------------------------------------ the solvers

SOLVE_ARGS = {"method": bad_name(dmft.METHODS), "samples": bad_count(), "replicas": bad_count(),
              "sampler": bad_name(("stratified", "sobol", "quadrature", "iid")),
              "precision": bad_name(("full", "mixed")), "node_split": bad_count(), "kernel_nodes": bad_count(4),
              "tol": bad_positive_real(), "max_iter": bad_count(), "max_memory_gb": bad_positive_real(),
              "key": bad_key(), "kernels": bad_flag(), "progress": bad_flag()}


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("name", sorted(SOLVE_ARGS))
def test_solve_refuses_before_compute(name, data, request):
    d = request.getfixturevalue("data")
    value = data.draw(SOLVE_ARGS[name], label=name)
    refused(lambda: dmft.solve(MODEL, d, SCHEDULE, **{"samples": 64, "replicas": 2, name: value}), name)


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("field", ["gamma0", "eta0", "weight_decay"])
def test_solve_batch_refuses_bad_grid_values(field, data, request):
    d = request.getfixturevalue("data")
    values = data.draw(st.one_of(
        st.lists(st.one_of(NOT_FINITE, st.floats(max_value=-1e-3 if field == "weight_decay" else 0.0,
                                                  allow_nan=False, allow_infinity=False)), min_size=1, max_size=3),
        st.sampled_from([[], "abc", [[1.0, 2.0]], [1j], ["1"], [None], None])), label=field)
    refused(lambda: dmft.solve_batch(MODEL, d, {field: values}, SCHEDULE, samples=64, replicas=2), field)


@FUZZ
@given(value=bad_key())
def test_solve_batch_refuses_bad_keys(value, data):
    refused(lambda: dmft.solve_batch(MODEL, data, {"gamma0": [1.0]}, SCHEDULE, samples=64, replicas=2, key=value), "key")


TRAIN_ARGS = {"width": bad_count(), "seeds": bad_count(), "key": bad_key(), "antithetic": bad_flag(),
              "kernels": bad_flag(), "keep_params": bad_flag(), "max_memory_gb": bad_positive_real()}


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("name", sorted(TRAIN_ARGS))
def test_train_refuses_before_compute(name, data, request):
    d = request.getfixturevalue("data")
    value = data.draw(TRAIN_ARGS[name], label=name)
    if name == "width" and (value is None or isinstance(value, list)):
        return                                    # (None: the default width; [1.0, 2.0]: the widths 1 and 2)
    refused(lambda: networks.train(MODEL, d, schedule=SCHEDULE, **{"width": 4, "seeds": 2, name: value}), name)


@FUZZ
@given(value=bad_flag())
def test_deep_linear_train_names_keep_params(value, teacher):
    """The user's argument is keep_params: the error named keep_weights, its name inside."""
    refused(lambda: networks.train(ALIGNED, teacher, seeds=2, keep_params=value,
                                   schedule=dmft.Schedule(eta0=0.1, steps=4, save_every=2, batch_size=2)), "keep_params")


@FUZZ
@given(value=st.one_of(NOT_NUMBERS, NOT_FINITE, FLAGS, st.integers(), st.floats(allow_nan=False),
                       st.sampled_from([dmft.TwoLayer(), SCHEDULE, np.zeros((4, 3))])))
def test_train_refuses_data_that_is_not_a_dataset(value):
    """The batch key's check read data.P before data was known a Dataset: AttributeError."""
    refused(lambda: networks.train(MODEL, value, width=4, seeds=2, schedule=SCHEDULE), "data")


@FUZZ
@given(w=st.integers(1, 64), form=st.sampled_from([int, np.int64, np.array, jnp.array, float]))
def test_one_width_in_any_scalar_form_is_one_width(w, form):
    """np.array(w) is one width, as w and jnp.array(w) are (it raised 'iteration over a 0-d array')."""
    plan = networks.plan_train(MODEL, dmft.tasks.single_index(D=2, P=2, P_test=1, key=0), SCHEDULE, form(w), 1)
    assert list(plan.widths) == [w]


# --------------------------------------------------------------------------- deep linear theory

@settings(derandomize=True, deadline=None, max_examples=20)
@given(v=st.floats(0.05, 3.0), form=st.sampled_from(["float", "0-d numpy", "0-d jax", "(1,)", "(3, 1)"]),
       depth=st.sampled_from([2, 3, 4]))
def test_cross_mode_drift_takes_one_pi_for_every_mode(teacher, v, form, depth):
    """pi given once for every mode (the docstring allows it) is the same pi given per mode: a
    scalar raised IndexError inside the cross drift, shape (1,) returned another drift (the cross
    drift read the modes off its one entry). Compared to 1e-12 relative: the same arithmetic on the
    same numbers, only broadcast earlier."""
    model = dmft.DeepLinear(depth=depth, width=4, init_scale=0.1, init="aligned")
    r = teacher.s.size
    pi = {"float": v, "0-d numpy": np.array(v), "0-d jax": jnp.array(v), "(1,)": np.array([v]),
          "(3, 1)": np.full((3, 1), v)}[form]
    kw = dict(eta0=0.1, batch_size=2, cross_modes=True)
    want = dl.drift(model, teacher, np.full(r, v), **kw)
    got = dl.drift(model, teacher, pi, **kw)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-12, atol=0)


DL_ARGS = {"eta0": bad_positive_real(), "batch_size": st.one_of(bad_count(), st.integers(9, 2 ** 40)),
           "pi": st.sampled_from([np.inf, -np.inf, "abc", None, 1j, np.ones(3), np.ones((2, 3)), object()])}


@FUZZ
@given(data=st.data())
@pytest.mark.parametrize("fn", ["drift", "diffusion", "boltzmann_temperature", "cross_shift"])
def test_deep_linear_laws_refuse(fn, data, teacher):
    names = ["eta0", "batch_size"] + (["pi"] if fn in ("drift", "diffusion") else [])
    name = data.draw(st.sampled_from(names), label="argument")
    value = data.draw(DL_ARGS[name], label=name)
    kw = dict(eta0=0.1, batch_size=2, **({"pi": 0.5} if "pi" in names else {}))
    refused(lambda: getattr(dl, fn)(ALIGNED, teacher, **{**kw, name: value}), name)


# -------------------------------------------------------------------------------- validation

@FUZZ
@given(data=st.data(), which=st.sampled_from(["z sigma", "z dof", "q sigma", "q k", "q dof"]))
def test_bounds_refuse_arrays_and_non_numbers(data, which):
    """One number each: an array of one element passed the check, then float() raised numpy's
    TypeError naming nothing."""
    fn, name = which.split()
    value = data.draw(st.one_of(st.sampled_from([np.ones(1) * 3, np.ones((1, 1)) * 3, jnp.ones(2) * 3, [3.0],
                                                 "3", None, 1j, True]),
                                st.floats(-1e6, -1e-9) if name == "sigma" else st.floats(-1e6, 0.0)), label=name)
    args = {"sigma": 5.0, "dof": 7.0, "k": 3.0, name: value}
    call = (lambda: verdicts.z_bound(args["sigma"], args["dof"], 20)) if fn == "z" else \
        (lambda: verdicts.q_bound(args["sigma"], args["k"], args["dof"], 20))
    refused(call, name)


@FUZZ
@given(n=st.one_of(st.integers(2 ** 63, 2 ** 400), st.floats(1e19, 1e300)), successes=st.integers(0, 5))
def test_wilson_interval_refuses_counts_beyond_int64(n, successes):
    refused(lambda: grokking.wilson_interval(successes, n), "n")


@FUZZ
@given(n=st.integers(1, 2 ** 62), share=st.floats(0.0, 1.0))
def test_wilson_interval_holds_its_fraction_for_any_count(n, share):
    k = int(share * n)
    lo, hi = grokking.wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


# ------------------------------------------------------------------------ valid edge inputs run

def test_smallest_valid_problem_runs(key):
    """P = 1, D = 1, one save after one step, one seed of width 1 given as a 0-d numpy array, and
    the lazy limit of the same: finite records of the expected shapes (about 5 s, both compiles)."""
    d = dmft.tasks.single_index(D=1, P=1, P_test=1, degree=1, key=0)
    sch = dmft.Schedule(eta0=0.1, steps=1, save_every=1)
    run = networks.train(dmft.TwoLayer("relu", 1.0), d, width=np.array(1), seeds=1, schedule=sch, key=key)
    assert isinstance(run, networks.Run) and run.train_loss.shape == (1, 2)
    assert np.all(np.isfinite(run.train_loss)) and np.all(np.isfinite(run.test_loss))
    sol = dmft.solve(dmft.TwoLayer("relu", 1.0), d, sch, method="lazy")
    assert sol.train_loss.shape == (2,) and np.all(np.isfinite(sol.train_loss))
    assert np.all(np.isfinite(sol.test_loss))


def test_lazy_to_rich_without_widths_is_theory_only():
    """widths=[] is allowed ("none: theory only, as simulate=False"), but the sweep solved the
    theory and then raised "runs: no networks" from its width fit."""
    d = dmft.tasks.single_index(D=1, P=1, P_test=1, degree=1, key=0)
    sweep = validation.lazy_to_rich(dmft.TwoLayer("linear", 1.0), d, [0.5], [], 2,
                                    schedule=dmft.Schedule(eta0=0.1, steps=1, save_every=1))
    assert sweep.runs == {} and list(sweep.solutions) == [0.5]
    assert np.all(np.isfinite(sweep.solutions[0.5].train_loss))
