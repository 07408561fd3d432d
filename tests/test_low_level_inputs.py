"""The exported low-level helpers of `dmft` refuse bad arguments with one `dmft.InputError` naming
the argument, before computing (kernels, sampling, activations' grid helpers, tasks.hermite,
TwoLayer.from_description, exact_closure), while valid calls return what they did before and
traced calls (inside jit and vmap, as the solvers make them) are not looked at."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import dmft
from dmft import activations as A
from dmft import kernels, sampling, tasks

FEW = settings(max_examples=25, deadline=None, derandomize=True)
KEY = jax.random.key(7)


def refused(name, fn, *args, **kwargs):
    """fn(*args, **kwargs) raises one InputError whose message names `name`."""
    with pytest.raises(dmft.InputError) as err:
        fn(*args, **kwargs)
    assert re.search(rf"(?<![\w\[]){re.escape(name)}(?![\w])", str(err.value)), (name, str(err.value))
    return str(err.value)


# ----------------------------------------------------------------------------- bad values
TEXT = st.text(max_size=5)
NOT_ARRAYS = st.one_of(TEXT, st.none(), st.just({"a": 1}), st.just(object()), st.just([1.0, "a"]),
                       st.just(np.array([1 + 2j, 3])), st.just(np.array([True, False])))
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
BAD_COUNTS = st.one_of(st.integers(-10 ** 6, -1), TEXT, st.none(), st.booleans(),
                       st.floats(0.1, 50).filter(lambda v: not float(v).is_integer()), NON_FINITE)


def points(shape, bad=None, where=(0, 0)):
    x = np.random.default_rng(0).normal(size=shape)
    if bad is not None:
        x[where] = bad
    return x


# ----------------------------------------------------------------------------- dmft.kernels
@FEW
@given(bad=NOT_ARRAYS)
def test_kernels_refuse_what_is_not_an_array_of_reals(bad):
    refused("xa", kernels.input_kernel, bad)
    if bad is not None:                      # (xb=None is the default: xa again)
        refused("xb", kernels.input_kernel, points((3, 2)), bad)
    refused("x_all", kernels.field_basis, bad)
    refused("K", kernels.alignment, bad, np.ones(3))
    refused("y", kernels.alignment, np.eye(3), bad)


@FEW
@given(bad=NON_FINITE, i=st.integers(0, 3), j=st.integers(0, 1))
def test_input_kernel_and_field_basis_refuse_non_finite_inputs(bad, i, j):
    refused("xa", kernels.input_kernel, points((4, 2), bad, (i, j)))
    refused("xb", kernels.input_kernel, points((3, 2)), points((4, 2), bad, (i, j)))
    refused("x_all", kernels.field_basis, points((4, 2), bad, (i, j)))     # D <= P: "weights"
    refused("x_all", kernels.field_basis, points((2, 4), bad, (j, i)))     # D > P: eigenbasis


@FEW
@given(shape=st.sampled_from([(), (3,), (2, 3, 4), (3, 0), (0,)]))
def test_input_kernel_and_field_basis_refuse_wrong_shapes(shape):
    refused("xa", kernels.input_kernel, np.ones(shape))
    refused("x_all", kernels.field_basis, np.ones(shape))
    refused("xb", kernels.input_kernel, np.ones((2, 3)), np.ones(shape))


@FEW
@given(a=st.sampled_from([1, 4]), b=st.sampled_from([1, 3]), d=st.sampled_from([1, 3]),
       scale=st.sampled_from([1e-150, 1.0, 1e150]), ints=st.booleans(), bad=NON_FINITE)
def test_input_kernel_on_the_host_and_in_jax_agree(a, b, d, scale, ints, bad):
    """Inputs that are not JAX arrays are multiplied on the host (numpy, float64: no program to
    compile per shape); JAX arrays, or one of them, in JAX. Both give x_a x_b^T / D to rounding, as
    a JAX array, and both refuse a non-finite input by name. (Its claim is the values: the sizes
    are few, a single point, row or column among them, so the examples share the JAX path's
    programs: each size compiled ~6, 150 of the test's 25 examples.)"""
    rng = np.random.default_rng(a * 100 + b * 10 + d)
    xa, xb = rng.normal(size=(a, d)) * scale, rng.normal(size=(b, d)) * scale
    if ints:
        xa, xb = np.round(xa / scale * 3).astype(int), np.round(xb / scale * 3).astype(int)
    want = (np.asarray(xa, float) @ np.asarray(xb, float).T) / d
    for pair in ((xa, xb), (jnp.asarray(xa), jnp.asarray(xb)), (xa, jnp.asarray(xb)), (jnp.asarray(xa), xb)):
        got = kernels.input_kernel(*pair)
        assert isinstance(got, jax.Array) and got.shape == (a, b)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(np.asarray(kernels.input_kernel(xa)), (np.asarray(xa, float) @ np.asarray(xa, float).T) / d,
                               rtol=1e-12, atol=1e-300)
    broken = np.array(xa, float)
    broken[0, 0] = bad
    for x in (broken, jnp.asarray(broken)):
        refused("xa", kernels.input_kernel, x, xb)
        refused("xb", kernels.input_kernel, xa, x)


def test_input_kernel_refuses_inputs_of_another_dimension():
    msg = refused("xb", kernels.input_kernel, np.ones((2, 3)), np.ones((2, 4)))
    assert "3 columns" in msg


@FEW
@given(k_shape=st.sampled_from([(3,), (3, 4), (2, 3, 4), ()]), y_shape=st.sampled_from([(3,), (3, 2)]))
def test_alignment_refuses_kernels_that_are_not_square(k_shape, y_shape):
    refused("K", kernels.alignment, np.ones(k_shape), np.ones(y_shape))


@FEW
@given(y_shape=st.sampled_from([(4,), (2,), (4, 1), (3, 2, 1), (), (2, 3)]), batch=st.booleans())
def test_alignment_refuses_targets_of_the_wrong_shape(y_shape, batch):
    K = np.stack([np.eye(3)] * 2) if batch else np.eye(3)
    refused("y", kernels.alignment, K, np.ones(y_shape))


def test_the_audits_kernel_cases():
    refused("y", kernels.alignment, np.eye(3), np.ones(4))
    refused("xa", kernels.input_kernel, np.ones(3))
    refused("xa", kernels.input_kernel, np.array([[np.nan, 1.0]]))
    refused("x_all", kernels.field_basis, np.array([[np.nan, 1.0]]))


def test_kernels_valid_calls_keep_their_values():
    x, xb = points((5, 3)), points((4, 3)) + 1
    np.testing.assert_allclose(kernels.input_kernel(x), x @ x.T / 3, rtol=1e-13)
    np.testing.assert_allclose(kernels.input_kernel(x, xb), x @ xb.T / 3, rtol=1e-13)
    np.testing.assert_allclose(kernels.input_kernel([[1, 2]], [[3.0, 4.0]]), [[5.5]])   # lists, ints
    assert kernels.input_kernel(np.zeros((0, 3))).shape == (0, 0)                       # no points
    for shape, kind in (((5, 3), "weights"), ((3, 7), "kernel-eigenbasis")):
        x = points(shape)
        L, got = kernels.field_basis(x)
        assert got == kind and L.dtype == np.float64
        np.testing.assert_allclose(L @ L.T, x @ x.T / shape[1], atol=1e-12)
    L, kind = kernels.field_basis(np.arange(6).reshape(3, 2))       # integers: as float64
    np.testing.assert_array_equal(L, np.arange(6).reshape(3, 2) / np.sqrt(2))
    K, y = x.T @ x, points((7, 2))[:, 0]
    want = y @ K @ y / (np.linalg.norm(K) * y @ y)
    np.testing.assert_allclose(kernels.alignment(K, y), want, rtol=1e-12)
    np.testing.assert_allclose(kernels.alignment(K, y[:, None]), want, rtol=1e-12)
    np.testing.assert_allclose(kernels.alignment(np.stack([K, 2 * K]), y), [want, want], rtol=1e-12)
    assert float(kernels.alignment(np.zeros((2, 2)), np.ones(2))) == 0.0
    assert np.isnan(kernels.alignment(np.full((2, 2), np.nan), np.ones(2)))    # (as documented)


def test_kernels_are_not_checked_when_traced():
    """Inside jit and vmap only the static shapes are looked at: a NaN goes through, as before."""
    x = points((4, 2))
    got = jax.jit(kernels.input_kernel)(x, x)
    np.testing.assert_allclose(got, kernels.input_kernel(x, x), rtol=1e-14)
    assert np.isnan(jax.jit(kernels.input_kernel)(points((2, 2), np.nan))).any()
    K, y = x @ x.T, x[:, 0]
    np.testing.assert_allclose(jax.jit(kernels.alignment)(K, y), kernels.alignment(K, y), rtol=1e-14)
    batched = jax.vmap(kernels.alignment, (0, None))(np.stack([K, K + 1]), y)
    np.testing.assert_allclose(batched, [kernels.alignment(K, y), kernels.alignment(K + 1, y)], rtol=1e-14)
    with pytest.raises(dmft.InputError, match="y must"):                  # (shapes are static)
        jax.jit(kernels.alignment)(K, np.ones(5))


# ----------------------------------------------------------------------------- dmft.sampling
DRAWS = {"orthogonal_gaussian": (sampling.orthogonal_gaussian, "r"),
         "stratified_normal": (sampling.stratified_normal, "c"),
         "sobol_points": (sampling.sobol_points, "d")}


@FEW
@given(fn=st.sampled_from(sorted(DRAWS)), bad=BAD_COUNTS)
def test_samplers_refuse_bad_counts(fn, bad):
    draw, second = DRAWS[fn]
    refused("n", draw, KEY, bad, 2)
    refused(second, draw, KEY, 4, bad)
    refused(second, draw, KEY, 4, 0)


@FEW
@given(fn=st.sampled_from(sorted(DRAWS)),
       bad=st.one_of(st.none(), TEXT, st.integers(), st.just(1.5), st.just(jax.random.split(KEY))))
def test_samplers_refuse_what_is_not_a_key(fn, bad):
    refused("key", DRAWS[fn][0], bad, 4, 2)


@pytest.mark.parametrize("fn", sorted(DRAWS))
@pytest.mark.parametrize("dtype", ["abc", jnp.int32, 3, bool])
def test_samplers_refuse_a_dtype_that_is_not_floating(fn, dtype):
    refused("dtype", DRAWS[fn][0], KEY, 4, 2, dtype)


def test_sobol_points_refuse_what_scipy_cannot_make():
    refused("d", sampling.sobol_points, KEY, 4, 100000)
    refused("d", sampling.sobol_points, KEY, 4, sampling.SOBOL_MAX_DIM + 1)
    refused("n", sampling.sobol_points, KEY, 2 ** sampling.SOBOL_BITS + 1, 2)


def test_the_audits_sampling_cases():
    refused("r", sampling.orthogonal_gaussian, KEY, 4, 0)
    refused("k", sampling.chi2_quantile, jnp.asarray([0.5]), 0)
    refused("n", sampling.stratified_normal, KEY, -1, 1)


@FEW
@given(bad=st.one_of(BAD_COUNTS, st.just(0)))
def test_chi2_quantile_refuses_bad_degrees_of_freedom(bad):
    refused("k", sampling.chi2_quantile, jnp.asarray([0.5]), bad)


@FEW
@given(bad=st.one_of(NOT_ARRAYS, NON_FINITE, st.floats(1.0, 1e300, exclude_min=True),
                     st.floats(-1e300, 0.0, exclude_max=True), st.just([1, 0])))
@example(bad=-1e-323)                 # a subnormal: XLA's comparison flushed it to 0 and accepted it
def test_chi2_quantile_refuses_what_is_not_a_probability(bad):
    refused("u", sampling.chi2_quantile, bad, 3)


def test_samplers_valid_calls_keep_their_values():
    """Shapes and laws as documented; the draws are the same eagerly, jitted, vmapped and with a
    legacy key (so the checks change nothing a solver sees)."""
    for n, r in ((0, 2), (5, 2)):
        z = sampling.orthogonal_gaussian(KEY, n, r)
        assert z.shape == (n, r) and z.dtype == jnp.float64
        u = sampling.sobol_points(KEY, n, r)
        assert u.shape == (n, r) and bool(jnp.all((u > 0) & (u < 1)))
    assert sampling.stratified_normal(KEY, 0, 2).shape == (0, 2)
    z = np.asarray(sampling.orthogonal_gaussian(KEY, 6, 3))        # two blocks of 3 orthogonal rows
    for b in (z[:3], z[3:]):
        g = b @ b.T
        np.testing.assert_allclose(g - np.diag(np.diag(g)), 0, atol=1e-12)
    s = np.asarray(sampling.stratified_normal(KEY, 16, 2))         # one draw per stratum, per column
    strata = np.floor(16 * 0.5 * (1 + np.vectorize(math.erf)(s / math.sqrt(2)))).astype(int)
    assert all(sorted(strata[:, c]) == list(range(16)) for c in range(2))
    np.testing.assert_allclose(jax.jit(lambda k: sampling.stratified_normal(k, 16, 2))(KEY), s, rtol=1e-12)
    keys = jax.random.split(KEY, 3)
    np.testing.assert_allclose(jax.vmap(lambda k: sampling.orthogonal_gaussian(k, 6, 3))(keys),
                               np.stack([sampling.orthogonal_gaussian(k, 6, 3) for k in keys]), rtol=1e-12)
    np.testing.assert_array_equal(jax.vmap(lambda k: sampling.sobol_points(k, 5, 2))(keys),
                                  np.stack([sampling.sobol_points(k, 5, 2) for k in keys]))
    assert sampling.sobol_points(KEY, 5, 2, jnp.float32).dtype == jnp.float32
    legacy = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(sampling.orthogonal_gaussian(legacy, 6, 3),
                                  sampling.orthogonal_gaussian(jax.random.wrap_key_data(legacy), 6, 3))
    sites = sampling.draw_sites(KEY, "stratified", 16, 2, 3, 1, True)      # the solvers' path (traced)
    assert sites.z.shape == (2, 8, 3) and bool(jnp.all(jnp.isfinite(sites.z)))


def test_chi2_quantile_valid_calls_keep_their_values():
    from scipy.stats import chi2

    u = jnp.asarray([0.0, 1e-12, 0.3, 0.5, 0.9, 1.0])
    for k in (1, 30):
        x = np.asarray(sampling.chi2_quantile(u, k))
        np.testing.assert_allclose(x[1:-1], chi2.ppf(np.asarray(u)[1:-1], k), rtol=1e-9)
        assert x[0] > 0 and np.isfinite(x[-1])              # (the ends are clipped inside (0, 1))
    np.testing.assert_allclose(sampling.chi2_quantile(0.5, 30), chi2.ppf(0.5, 30), rtol=1e-10)
    jitted = jax.jit(lambda v: sampling.chi2_quantile(v, 30))
    np.testing.assert_allclose(jitted(u), sampling.chi2_quantile(u, 30), rtol=1e-14)
    # traced probabilities are not looked at (the solvers draw them inside jit)
    assert jitted(jnp.full(6, 1.5)).shape == (6,)


# ----------------------------------------------------------------------------- dmft.activations
@FEW
@given(bad=st.one_of(TEXT, st.none(), st.integers(), st.just(np.tanh), st.just(A.tanh)))
def test_tail_share_refuses_what_is_not_an_activation(bad):
    refused("act", A.tail_share, bad, 1.0)


@FEW
@given(bad=st.one_of(TEXT, st.none(), st.booleans(), NON_FINITE, st.floats(-1e300, -1e-300),
                     st.just(1 + 1j), st.just([1.0])))
def test_tail_share_and_grid_nodes_refuse_bad_variances(bad):
    refused("max_variance", A.tail_share, A.tanh(), bad)
    refused("max_variance", A.grid_nodes, bad, 64)


@FEW
@given(bad=st.one_of(BAD_COUNTS, st.just(0)))
def test_grid_nodes_refuses_bad_node_counts(bad):
    refused("nodes", A.grid_nodes, 1.0, bad)


def test_the_audits_activation_cases():
    refused("max_variance", A.tail_share, A.tanh(), math.nan)
    refused("act", A.tail_share, "tanh", 1)
    refused("max_variance", A.grid_nodes, -1.0, 16)
    refused("nodes", A.grid_nodes, 1.0, 0)
    with pytest.raises(dmft.InputError, match="not finite"):         # (its message, kept)
        A.grid_nodes(math.inf, 64)


def test_activation_helpers_valid_calls_keep_their_values():
    for v, n, want in [(0.0, 1, 8), (1.0, 64, 64), (16.0, 64, 248), (2.5, 8, 96),
                       (np.float32(3.0), 4.0, 112), (jnp.asarray(2.0), 64, 88)]:
        assert A.grid_nodes(v, n) == want, (v, n)
    with pytest.warns(UserWarning, match="quadrature nodes"):
        assert A.grid_nodes(1e6, 16) == A.MAX_GRID_NODES
    assert A.tail_share(A.relu(), 0.0) == 0.0
    for name in ("tanh", "relu", "erf", "softplus"):
        for v in (0.5, 1, 9.0):
            share = A.tail_share(A.get(name), v)
            assert 0 <= share < 1e-15 and share == A.tail_share(A.get(name), float(v))
    assert A.tail_share(A.get(lambda u: jnp.exp(u * u)), 1.0) > A.TAIL_SHARE_TOL     # no moment
    assert A.tail_share(A.get(lambda u: jnp.log(4.0 + u)), 1.0) == math.inf       # not finite
    np.testing.assert_allclose(A.tanh().mean(jnp.asarray([0.0, 1.0])), [0.0, 0.0], atol=1e-15)


# ----------------------------------------------------------------------------- dmft.tasks.hermite
@FEW
@given(bad=st.one_of(NOT_ARRAYS, NON_FINITE, st.just([0.5, math.nan]), st.just(np.array([[math.inf]]))))
def test_hermite_refuses_what_is_not_finite_reals(bad):
    refused("x", tasks.hermite, 3, bad)


@FEW
@given(bad=st.one_of(BAD_COUNTS, st.integers(tasks.MAX_DEGREE + 1, 10 ** 6)))
def test_hermite_refuses_bad_degrees(bad):
    refused("k", tasks.hermite, bad, 0.5)


def test_hermite_refuses_an_overflow():
    msg = refused("x", tasks.hermite, 170, 1e3)
    assert "overflows" in msg
    refused("x", tasks.hermite, 3, np.array([1.0, 1e200]))
    assert np.isfinite(tasks.hermite(170, 10.0))


def test_the_audits_hermite_cases():
    refused("x", tasks.hermite, 3, "abc")
    refused("x", tasks.hermite, 3, math.nan)


def test_hermite_valid_calls_keep_their_values():
    x = np.linspace(-3, 3, 7)
    np.testing.assert_array_equal(tasks.hermite(0, x), np.ones(7))
    np.testing.assert_array_equal(tasks.hermite(1, x), x)
    np.testing.assert_allclose(tasks.hermite(3, x), (x ** 3 - 3 * x) / math.sqrt(6), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(tasks.hermite(4, 1.5), (1.5 ** 4 - 6 * 1.5 ** 2 + 3) / math.sqrt(24), rtol=1e-13)
    assert tasks.hermite(2, [1, 2]).dtype == np.float64                        # ints, lists
    assert tasks.hermite(2, [[0.5, 1.5]]).shape == (1, 2)
    np.testing.assert_allclose(tasks.hermite(3, jnp.asarray([0.5])), (0.125 - 1.5) / math.sqrt(6))
    xi, w = A.gauss_hermite(40)
    gram = [[np.sum(w * tasks.hermite(j, xi) * tasks.hermite(k, xi)) for k in range(6)] for j in range(6)]
    np.testing.assert_allclose(gram, np.eye(6), atol=1e-12)


# ----------------------------------------------------------------------------- TwoLayer.from_description
GOOD = {"activation": "tanh", "activation_params": [], "gamma0": 0.5, "readout": "fixed", "centered": False}


@FEW
@given(bad=st.one_of(st.none(), TEXT, st.integers(), st.just([("gamma0", 1.0)]), NON_FINITE))
def test_from_description_refuses_what_is_not_a_description(bad):
    refused("d", dmft.TwoLayer.from_description, bad)


@FEW
@given(drop=st.sets(st.sampled_from(["activation", "gamma0", "readout", "centered"]), min_size=1))
def test_from_description_names_the_missing_keys(drop):
    msg = refused("d", dmft.TwoLayer.from_description, {k: v for k, v in GOOD.items() if k not in drop})
    assert all(repr(k) in msg for k in drop)


@FEW
@given(bad=st.one_of(TEXT, st.none(), st.integers(), st.just(["a", "b"]), st.just([1.0, None]),
                     st.just([1.0, math.nan]), st.just([[1.0, 2.0]])))
def test_from_description_refuses_bad_activation_params(bad):
    msg = refused("activation_params", dmft.TwoLayer.from_description,
                  {**GOOD, "activation": "quadratic", "activation_params": bad})
    assert "in d" in msg


@pytest.mark.parametrize("key, bad", [("gamma0", "abc"), ("gamma0", None), ("gamma0", -1.0),
                                      ("gamma0", math.nan), ("readout", "both"), ("centered", "no"),
                                      ("activation", None), ("activation", ["tanh"]),
                                      ("activation", "no-such")])
def test_from_description_names_a_bad_value(key, bad):
    refused("activation" if key == "activation" else key, dmft.TwoLayer.from_description, {**GOOD, key: bad})


def test_from_description_valid_calls_keep_their_values():
    for m in (dmft.TwoLayer("tanh", 0.5, "fixed", False), dmft.TwoLayer(A.quadratic(0.3), 2.0),
              dmft.TwoLayer("linear", 1.0), dmft.TwoLayer("relu", 3.0, "trained", False)):
        back = dmft.TwoLayer.from_description(m.describe())
        assert back.describe() == m.describe() and back.activation == m.activation
    m = dmft.TwoLayer.from_description({**GOOD, "activation_params": (1.0, 0.15), "activation": "quadratic"})
    assert m.activation == A.quadratic(0.3)
    assert dmft.TwoLayer.from_description({k: v for k, v in GOOD.items() if k != "activation_params"}) \
        == dmft.TwoLayer("tanh", 0.5, "fixed", False)


# ----------------------------------------------------------------------------- exact_closure
@pytest.mark.parametrize("bad", [None, "tanh", {"activation": "tanh"}, A.tanh(),
                                 dmft.DeepLinear(depth=2, width=4)])
def test_exact_closure_refuses_what_is_not_a_two_layer_model(bad):
    refused("model", dmft.exact_closure, bad)


def test_exact_closure_valid_calls_keep_their_values():
    assert dmft.exact_closure(dmft.TwoLayer("tanh", 0.5, "fixed", False)) is None
    assert dmft.exact_closure(dmft.TwoLayer(A.quadratic(0.3), 2.0)) is None
    assert dmft.exact_closure(dmft.TwoLayer("linear", 1.0)) == "linear-trained"
    assert dmft.exact_closure(dmft.TwoLayer(A.quadratic(0.3), 1.0, "fixed")) == "poly2-fixed"
