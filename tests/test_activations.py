"""Closed-form Gaussian kernels against independent methods (quadrature, sampling)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dmft
from dmft import activations as A

K11 = jnp.array([0.3, 1.0, 1.7, 1.0, 2.5])
K22 = jnp.array([1.2, 1.0, 0.9, 1.0, 0.4])
K12 = jnp.array([0.2, 0.99, -0.5, 1.0, -0.9])  # includes a perfectly correlated pair


@pytest.mark.parametrize("act", [A.linear(), A.erf(), A.quadratic(0.7), A.square()],
                         ids=lambda a: a.name)
def test_smooth_closed_forms_match_quadrature(act):
    exact = act.lazy_kernels(K11, K12, K22)
    quad = A.gauss_hermite_kernels(act, K11, K12, K22, nodes=96)
    np.testing.assert_allclose(exact[0], quad[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(exact[1], quad[1], rtol=0, atol=1e-12)


def test_relu_arccos_kernels_match_quadrature():
    """ReLU's kink makes quadrature converge only algebraically: the error must fall
    with the number of nodes (measured slopes -1.03 for Phi0 and -0.50 for G0 over
    16..250 nodes)."""
    from validation import loglog_fit
    exact = A.relu().lazy_kernels(K11, K12, K22)
    nodes = [16, 32, 64, 128, 250]
    errs = np.array([[float(jnp.max(jnp.abs(q - e))) for q, e in zip(
        A.gauss_hermite_kernels(A.relu(), K11, K12, K22, nodes=n), exact)] for n in nodes])
    assert loglog_fit(nodes, errs[:, 0]).slope < -0.9
    assert loglog_fit(nodes, errs[:, 1]).slope < -0.35
    assert errs[-1, 0] < 5e-4 and errs[-1, 1] < 1e-2


def test_relu_kernels_match_monte_carlo():
    """Independent check of the arc-cosine formulas by sampling 2e6 pairs: each sample mean
    within 5 of its standard errors (sample sd / sqrt(n), 1.8e-4 .. 4.7e-4) of the closed
    form (measured |z| 1.03, 0.39, 0.41; <= 1.71 over seeds 0-5). Drawn and averaged in numpy
    (jax.random's 4e6 normals took a second in the tests' unoptimized XLA; numpy 0.1 s)."""
    k11, k12, k22 = 1.3, -0.4, 0.8
    L = np.linalg.cholesky(np.array([[k11, k12], [k12, k22]]))
    u = np.random.default_rng(0).standard_normal((2_000_000, 2)) @ L.T
    exact = A.relu().lazy_kernels(k11, k12, k22)
    for name, samples, value in [
            ("Phi0", np.maximum(u[:, 0], 0) * np.maximum(u[:, 1], 0), exact[0]),
            ("G0", (u[:, 0] > 0) * (u[:, 1] > 0), exact[1]),
            ("mean", np.maximum(u[:, 0], 0), A.relu().mean(k11))]:
        se = float(np.std(samples)) / np.sqrt(samples.shape[0])
        z = (float(np.mean(samples)) - float(value)) / se
        assert abs(z) < 5, (name, z)


@pytest.mark.parametrize("act", [A.quadratic(0.3), A.linear(), A.erf()],
                         ids=lambda a: a.name)
def test_mean_closed_forms(act):
    k = jnp.array([0.5, 1.0, 2.0])
    exact = act.mean(k)
    xi, w = A.gauss_hermite(250)
    quad = jnp.sum(act(jnp.sqrt(k)[:, None] * jnp.asarray(xi)[None, :]) * jnp.asarray(w)[None, :], 1)
    np.testing.assert_allclose(exact, quad, atol=1e-12)


@pytest.mark.parametrize("name", ["linear", "relu", "tanh", "erf", "softplus", "square"])
def test_derivatives_match_autodiff(name):
    act = A.get(name)
    h = jnp.linspace(-2.3, 2.1, 11)
    auto = jax.vmap(jax.grad(lambda v: act(v)))(h)
    np.testing.assert_allclose(act.derivative(h), auto, atol=1e-12)


def test_gauss_hermite_converges_geometrically_for_tanh():
    """No closed form for tanh: against 250 nodes, every 32 more nodes cut the error
    by at least 10x (measured 30-1000x; slowest at the largest variance, k = 2.5)."""
    ref = A.gauss_hermite_kernels(A.tanh(), K11, K12, K22, nodes=250)
    errs = []
    for n in (32, 64, 96):
        got = A.gauss_hermite_kernels(A.tanh(), K11, K12, K22, nodes=n)
        errs.append(max(float(jnp.max(jnp.abs(g - r))) for g, r in zip(got, ref)))
    assert errs[1] < errs[0] / 10 and errs[2] < errs[1] / 10
    assert errs[2] < 1e-6


def test_custom_callable_activation():
    act = A.get(lambda h: jnp.sin(h) + 0.1 * h)
    assert act.lazy_fn is None
    np.testing.assert_allclose(act.derivative(jnp.array([0.0, 1.0])), [1.1, np.cos(1.0) + 0.1])
    # sin is odd: E[sin u sin v] = e^{-(k11+k22)/2} sinh(k12) for the sin part
    phi, _ = A.get(jnp.sin).lazy_kernels(1.0, 0.5, 1.0)
    assert abs(float(phi) - np.exp(-1.0) * np.sinh(0.5)) < 1e-12


def test_activation_params_are_traced_not_static():
    """Changing eps of the quadratic activation does not recompile a jitted function."""
    traces = []

    @jax.jit
    def f(act, h):
        traces.append(1)
        return act(h)

    f(A.quadratic(0.1), 1.0)
    f(A.quadratic(0.2), 1.0)
    assert len(traces) == 1
    assert float(f(A.quadratic(0.2), 2.0)) == pytest.approx(2.0 + 0.1 * 4.0)


@settings(deadline=None)
@given(k11=st.floats(0.05, 20.0), k22=st.floats(0.05, 20.0), rho=st.floats(-1.0, 1.0))
def test_trapezoid_kernels_exact_for_erf_at_any_variance(k11, k22, rho):
    """The solvers' quadrature (trapezoid rule, nodes raised with the variance) against the
    arcsine closed form, from small to large field variance and any correlation: exact to
    rounding (measured <= 6.7e-16 over 4000 points of this box, edges and |rho| -> 1
    included; kernels are O(1)), asserted at 1e-13, ~150x."""
    k12 = rho * np.sqrt(k11 * k22)
    exact = A.erf().lazy_kernels(k11, k12, k22)
    quad = A.trapezoid_kernels(A.erf(), k11, k12, k22, nodes=64)
    np.testing.assert_allclose(quad[0], exact[0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(quad[1], exact[1], rtol=0, atol=1e-13)


_SMOOTH = A.custom(lambda h: jnp.sin(h) + 0.5 * jnp.tanh(h))     # (one activation: compiled once)


def _grid_512(act):
    """The 512-node trapezoid rule as a reference, compiled once with XLA's backend optimizations
    (tests/conftest.py turns them off: its 262144 nodes an entry then took 2.5x as long, most of the
    Mehler test's time). Traced, its node count stays the 512 given, which concrete inputs of
    standard deviation <= 4 would not raise (`grid_nodes`: 248)."""
    return jax.jit(functools.partial(A.trapezoid_kernels, act, nodes=512),
                   compiler_options={"xla_backend_optimization_level": 3})


_GRID_512 = {"tanh": _grid_512(A.tanh()), "smooth": _grid_512(_SMOOTH)}


@settings(deadline=None, max_examples=25)
@given(sd_a=st.lists(st.floats(0.0, 4.0), min_size=4, max_size=4),      # (fixed shapes: one compile)
       sd_b=st.lists(st.floats(0.0, 4.0), min_size=3, max_size=3),
       seed=st.integers(0, 2 ** 31 - 1), unit=st.booleans())
def test_mehler_series_matches_the_closed_form_and_the_grid(sd_a, sd_b, seed, unit):
    """Mehler's series (`mehler_kernels`: |rho| <= 0.9) and its one-dimensional rule (rho = +-1)
    against erf's arcsine closed form, and against a 512-node grid for tanh and a custom smooth
    activation, at standard deviations 0-4 and any correlation: every entry within 1e-13
    (measured <= 5e-15; kernels are O(1)); |rho| in (0.9, 1) is left to the grid (NaN)."""
    sa, sb = np.array(sd_a), np.array(sd_b)
    rng = np.random.default_rng(seed)
    rho = rng.uniform(-1.0, 1.0, (sa.size, sb.size))
    if unit:                                        # correlations of exactly +-1 (a point with itself)
        rho = np.sign(rho)
    da, db = sa ** 2, sb ** 2
    kab = rho * np.sqrt(da)[:, None] * np.sqrt(db)[None, :]
    for act, ref in ((A.erf(), A.erf().lazy_kernels), (A.tanh(), _GRID_512["tanh"]), (_SMOOTH, _GRID_512["smooth"])):
        phi, g, done = A.mehler_kernels(act, da, db, kab)
        zero = (da[:, None] == 0) | (db[None, :] == 0)
        assert np.array_equal(done, (np.abs(rho) <= 0.9) | (np.abs(rho) == 1) | zero)
        want = [np.asarray(v) for v in ref(jnp.asarray(da[:, None]), jnp.asarray(kab), jnp.asarray(db[None, :]))]
        for got, w in zip((phi, g), want):
            np.testing.assert_allclose(got[done], w[done], rtol=0, atol=1e-13, err_msg=act.name)
            assert np.all(np.isnan(got[~done]))


def test_lazy_kernels_of_concrete_inputs_sum_the_series_and_fill_the_rest_from_the_grid(monkeypatch):
    """dmft.kernels.lazy_kernels on concrete inputs (the solvers' setup, batches and predict) of an
    activation without a closed form: the series where it converges fast (blocks of at least
    HERMITE_MIN_ENTRIES entries; below, the grid as before), the grid where the
    correlation is in (0.9, 1) or a standard deviation beyond 4 (a wide input), there as the grid
    alone computes them in a trace; the rest within 1e-13 of a 1024-node grid (the solvers' grid at
    its 184 nodes: 1.4e-11 off on a wide point's G0, the one-dimensional rule 1e-16); a relu given
    as a callable (a kink not declared) is 1e-5 from its closed form by the series (1e-3 by the
    one-dimensional rule, whose node sits on the kink), where the grid is 1e-2 off."""
    from dmft import kernels
    monkeypatch.setattr(kernels, "HERMITE_MIN_ENTRIES", 1)          # (a small block: the series too)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    x[1] = x[0] + 0.05 * rng.normal(size=3)             # a near duplicate: rho in (0.9, 1)
    x[2] *= 5.0                                        # a wide input: its standard deviation > 4
    d = np.sum(x * x, axis=1) / 3
    kx = x @ x[:8].T / 3
    act = A.tanh()
    nodes = A.grid_nodes(np.max(d), 48)                 # (raised for the widest field, as the solvers do)
    series = kernels.lazy_kernels(act, kx, d, d[:8], nodes=nodes)
    traced = jax.jit(lambda kx, d: kernels.lazy_kernels(act, kx, d, d[:8], nodes=nodes))(kx, d)
    fine = A.trapezoid_kernels(act, jnp.asarray(d[:, None]), jnp.asarray(kx), jnp.asarray(d[None, :8]), nodes=1024)
    _, _, done = A.mehler_kernels(act, d, d[:8], kx)
    assert not done[1, 0] and not done[2, 0] and not done[2, 2] and done.sum() > done.size // 2
    for a, b, c in zip(series, traced, fine):
        a, b, c = np.asarray(a), np.asarray(b), np.asarray(c)
        np.testing.assert_allclose(a[~done], b[~done], rtol=0, atol=1e-14)      # the grid's own entries
        np.testing.assert_allclose(a[done], c[done], rtol=0, atol=1e-13)        # (the 184-node grid: 1.4e-11)
    relu = A.custom(lambda h: jnp.maximum(h, 0.0))
    exact = A.relu().lazy_kernels(jnp.asarray(d[:, None]), jnp.asarray(kx), jnp.asarray(d[None, :8]))
    phi, g, done = A.mehler_kernels(relu, d, d[:8], kx)
    summed = done & (np.abs(kx) <= 0.9 * np.sqrt(d[:, None] * d[None, :8]))     # (the series' own entries)
    assert np.max(np.abs(phi - exact[0])[summed]) < 1e-4 and np.max(np.abs(g - exact[1])[summed]) < 1e-4


def test_the_series_in_small_blocks_of_rows_and_columns_is_the_series(monkeypatch):
    """Rows, the columns' coefficients and the one-dimensional rule's pairs go in blocks whose phi
    values stay within HERMITE_BLOCK (the columns' phi values were held whole: a 1 x 65536 block
    took 2.3 GB); blocks of a few points give the same kernels to rounding, duplicated points, a
    point against its mirror image (rho = -1) and a zero variance included; and the coefficients on
    half the nodes (what measures the rule's error) are within 1e-13 for tanh."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    x[5], x[6], x[7] = x[0], -x[1], 0.0
    d = np.sum(x * x, axis=1) / 3
    kx = x @ x[:30].T / 3
    act = A.tanh()
    whole = A.mehler_kernels(act, d, d[:30], kx)
    monkeypatch.setattr(A, "HERMITE_BLOCK", 3 * A.HERMITE_NODES)           # 3 rows or columns, 1 pair a block
    blocks = A.mehler_kernels(act, d, d[:30], kx)
    assert np.array_equal(whole[2], blocks[2]) and whole[2][6, 1] and whole[2][7, 3]
    for a, b in zip(whole[:2], blocks[:2]):
        np.testing.assert_allclose(a[whole[2]], b[whole[2]], rtol=0, atol=1e-15)
    coarse = A.mehler_kernels(act, d, d[:30], kx, nodes=(A.HERMITE_NODES + 1) // 2)
    for a, b in zip(whole[:2], coarse[:2]):
        np.testing.assert_allclose(a[whole[2]], b[whole[2]], rtol=0, atol=1e-13)


@settings(max_examples=12, deadline=None)
@given(sd=st.lists(st.floats(0.0, 4.0), min_size=2, max_size=6), top=st.floats(0.05, 0.9),
       act=st.sampled_from(["tanh", "softplus", "kinked"]), seed=st.integers(0, 2 ** 16))
def test_the_series_stops_where_the_coefficients_tails_bound_the_rest(sd, top, act, seed):
    """Each block is summed to the fewest terms K with max|rho|^K times the points' largest
    normalized coefficient tails (sqrt(sum_{k >= K} a_k^2 / E f^2), Cauchy-Schwarz) below
    HERMITE_TAIL: the same kernels as all HERMITE_TERMS_MAX terms to rounding, in fewer terms than
    the bound |rho|^K alone (tanh at unit standard deviation and |rho| <= 0.9: 100-117 of 372)."""
    fn = {"tanh": A.tanh(), "softplus": A.get("softplus"),
          "kinked": A.custom(lambda h: jnp.maximum(h, 0.0) + 0.1 * jnp.tanh(h), "kinked")}[act]
    rng = np.random.default_rng(seed)
    s = np.array(sd)
    rho = rng.uniform(-top, top, (s.size, s.size))
    kab = rho * s[:, None] * s[None, :]
    got = A.mehler_kernels(fn, s ** 2, s ** 2, kab)
    import unittest.mock
    with unittest.mock.patch.object(A, "_terms", lambda top, ta, tb: A.HERMITE_TERMS_MAX):
        full = A.mehler_kernels(fn, s ** 2, s ** 2, kab)
    assert np.array_equal(got[2], full[2])
    for a, b in zip(got[:2], full[:2]):     # (1e-14: the coefficients' sums over 1025 nodes, another order)
        np.testing.assert_allclose(a[got[2]], b[got[2]], rtol=0, atol=1e-14)
    xi, w, he = A._hermite_rule(A.HERMITE_TERMS_MAX)
    _, (tail, _) = A._coefficients(A.tanh(), np.array([1.0]), xi, w, he)
    assert 50 <= A._terms(0.9, tail, tail) <= 130


@settings(max_examples=10, deadline=None)
@given(a=st.integers(1, 40), b=st.integers(1, 9), terms=st.sampled_from([1, 2, 7, 372]), seed=st.integers(0, 2 ** 16))
def test_the_compiled_sums_are_numpys(a, b, terms, seed):
    """The series' sums compiled (`_horner_program`, a tile of rows through all its terms; rows
    padded to the block's size) equal numpy's term by term Horner to rounding, at any rows (not a
    multiple of the tile), columns and terms, 1 and all 372 included."""
    rng = np.random.default_rng(seed)
    ca, cb = (rng.normal(size=(n, A.HERMITE_TERMS_MAX)) / np.sqrt(np.arange(1, 373)) for n in (a, b))
    r = rng.uniform(-0.9, 0.9, (a, b))
    want = A._horner(ca, cb, r, terms, a, compiled=False)
    got = A._horner(ca, cb, r, terms, a + 3, compiled=True)
    assert got.shape == (a, b)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


def test_the_series_compiles_its_sums_where_they_are_long(monkeypatch):
    """From HORNER_COMPILED_WORK (entries x terms) a call's sums are compiled: the same kernels as
    numpy's to 1e-15 (a tanh setup at P = 1024 with 1000 test points measured 3.3e-16 from all 372
    terms in numpy; 5.3 -> 1.0 s at D = 8)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(70, 4))
    d = np.sum(x * x, axis=1) / 4
    kx = x @ x[:50].T / 4
    calls = []
    program = A._horner_program
    monkeypatch.setattr(A, "_horner_program", lambda *args: calls.append(1) or program(*args))
    numpy_sums = A.mehler_kernels(A.tanh(), d, d[:50], kx)
    assert not calls                                     # (a small block: numpy's sums)
    monkeypatch.setattr(A, "HORNER_COMPILED_WORK", 1)
    compiled = A.mehler_kernels(A.tanh(), d, d[:50], kx)
    assert calls and np.array_equal(numpy_sums[2], compiled[2])
    for u, v in zip(numpy_sums[:2], compiled[:2]):
        np.testing.assert_allclose(u[compiled[2]], v[compiled[2]], rtol=0, atol=1e-15)


def test_the_reported_kernel_error_is_the_error_of_the_rule_used(monkeypatch):
    """info["lazy_kernels_error"] measures the rule the setup used: the grid's nodes doubled, or,
    where Mehler's series computed the kernels (here from any size), its coefficients' nodes
    halved. It described the grid when the series was used (a relu callable: 1.5e-2, where the
    kernels used are 5e-3 off its closed form, the one-dimensional rule's G0 at rho = 1, whose
    middle node sits on the kink); now within 0.5-2x of the used kernels' own error (measured 1.01x;
    the grid's doubling read 2.6-3.8x here), and below 1e-12 for a smooth callable."""
    import warnings

    from dmft import geometry, kernels

    for mod in (kernels, geometry):               # (geometry.series_setup decides for the solve too)
        monkeypatch.setattr(mod, "HERMITE_MIN_ENTRIES", 1)
    data = dmft.tasks.single_index(D=4, P=16, P_test=8, degree=2, key=0)
    lazy = dict(eta0=0.5, steps=10, save_every=5, method="lazy")
    kinked_fn = A.custom(lambda h: jnp.maximum(h, 0.0), "kinked")
    with pytest.warns(UserWarning, match="Mehler's series moves by .* on 1025 and 513 nodes.*not smooth"):
        kinked = dmft.solve(dmft.TwoLayer(kinked_fn, gamma0=1.0), data, **lazy)
    assert "Mehler series" in kinked.info["lazy_kernels"]
    geo = geometry.geometry(data)
    used = geometry.host_kernels(geo, kinked_fn, 48)
    exact = A.relu().lazy_kernels(geo["diag"][:, None], geo["kx_all_tr"], geo["diag"][None, :16])
    true = max(float(jnp.max(jnp.abs(u - e)) / jnp.max(jnp.abs(e))) for u, e in zip(used, exact))
    assert 0.5 * true <= kinked.info["lazy_kernels_error"] <= 2 * true, (kinked.info["lazy_kernels_error"], true)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smooth = dmft.solve(dmft.TwoLayer(lambda h: jnp.tanh(h) + 0.1 * jnp.sin(h), gamma0=1.0), data, **lazy)
    assert "Mehler series" in smooth.info["lazy_kernels"] and smooth.info["lazy_kernels_error"] < 1e-12


def test_trapezoid_beats_gauss_hermite_for_saturating_activations():
    """At the same 64 nodes and unit-scale variances, the trapezoid rule's error for tanh is
    far below Gauss-Hermite's (measured 3e-10 against 5e-7), against a 512-node reference;
    and the node count grows with the variance so that large fields stay accurate."""
    ref = A.trapezoid_kernels(A.tanh(), K11, K12, K22, nodes=512)
    err = {}
    for name, fn in (("trap", A.trapezoid_kernels), ("gh", A.gauss_hermite_kernels)):
        got = fn(A.tanh(), K11, K12, K22, nodes=64)
        err[name] = max(float(jnp.max(jnp.abs(g - r))) for g, r in zip(got, ref))
    assert err["trap"] < 1e-8 and err["trap"] < err["gh"] / 100, err
    assert A.grid_nodes(1.0, 64) == 64 and A.grid_nodes(16.0, 64) > 2 * A.grid_nodes(2.5, 64)
    big = 8.0 * K11, 8.0 * K12, 8.0 * K22
    auto = A.trapezoid_kernels(A.tanh(), *big, nodes=64)
    fine = A.trapezoid_kernels(A.tanh(), *big, nodes=1024)
    assert max(float(jnp.max(jnp.abs(a - f))) for a, f in zip(auto, fine)) < 1e-9


@functools.lru_cache(maxsize=None)
def _leggauss(n):
    return np.polynomial.legendre.leggauss(n)


def _shifted_relu_reference(a, k11, k12, k22, n=400):
    """(Phi0, G0) of phi(h) = relu(h - a) by an independent route: the inner expectation over
    v given u in closed form (v | u is Gaussian), the outer one by 400-node Gauss-Legendre on
    the half-line u > a (|rho| < 1)."""
    from jax.scipy.special import ndtr
    s1, s2 = np.sqrt(k11), np.sqrt(k22)
    rho = k12 / (s1 * s2)
    lo, hi = min(a / s1, 9.0), 9.0
    t, w = _leggauss(n)
    x = (lo + hi) / 2 + (hi - lo) / 2 * t
    wx = (hi - lo) / 2 * w * np.exp(-x ** 2 / 2) / np.sqrt(2 * np.pi)
    m, sd = s2 * rho * x, s2 * np.sqrt(1 - rho ** 2)
    z = (m - a) / sd
    cdf = np.asarray(ndtr(z))
    inner = (m - a) * cdf + sd * np.exp(-z ** 2 / 2) / np.sqrt(2 * np.pi)
    return float(np.sum(wx * (s1 * x - a) * inner)), float(np.sum(wx * cdf))


# built once: each new callable compiles the quadrature again
LEAKY = {leak: A.custom(lambda h, a=leak: jnp.where(h > 0, h, a * h), kinks=[0.0]) for leak in (0.0, 0.1, 0.4)}
SHIFTED = {a: A.custom(lambda h, a=a: jnp.maximum(h - a, 0.0), kinks=a) for a in (-1.5, -0.3, 0.7, 2.0)}


# (each example compiles the piecewise quadrature of two activations at the node count its
# variance asks for, and the eager mean: ~1.3 s per example)
@settings(deadline=None, max_examples=10)
@given(k11=st.floats(0.05, 20.0), k22=st.floats(0.05, 20.0), rho=st.floats(-1.0, 1.0),
       shift=st.sampled_from(sorted(SHIFTED)), leak=st.sampled_from(sorted(LEAKY)))
def test_declared_kinks_make_the_quadrature_exact(k11, k22, rho, shift, leak):
    """A custom activation that declares its kinks is integrated piecewise (Gauss-Legendre
    between them): a leaky relu against its closed form (built from the relu's arc-cosine
    kernel) at any variance and correlation, |rho| = 1 included, and a relu kinked at `shift`
    against an independent semi-analytic reference; the trapezoid rule was 1e-2 off for a
    relu. Measured <= 5e-13 over this box (|rho| up to 0.9999 included); asserted at 1e-11."""
    k12 = rho * np.sqrt(k11 * k22)
    lrelu = LEAKY[leak]
    r = A.relu().lazy_kernels(k11, k12, k22)
    # lrelu(h) = (1 - leak) relu(h) + leak h, and E[relu(u) v] = k12 / 2
    want = ((1 - leak) ** 2 * r[0] + leak * (1 - leak) * k12 + leak ** 2 * k12,
            (1 - leak) ** 2 * r[1] + 2 * leak * (1 - leak) * 0.5 + leak ** 2)
    got = lrelu.lazy_kernels(k11, k12, k22)
    scale = max(k11, k22)
    for g, e in zip(got, want):
        assert abs(float(g) - float(e)) <= 1e-11 * scale, (got, want)
    np.testing.assert_allclose(float(lrelu.mean(k11)), (1 - leak) * np.sqrt(k11 / (2 * np.pi)),
                               rtol=1e-12, atol=1e-14)
    if abs(rho) < 0.999:
        got = SHIFTED[shift].lazy_kernels(k11, k12, k22)
        ref = _shifted_relu_reference(shift, k11, k12, k22)
        assert abs(float(got[0]) - ref[0]) <= 1e-11 * scale and abs(float(got[1]) - ref[1]) <= 1e-11, (got, ref)


@given(kinks=st.one_of(st.sampled_from([float("nan"), float("inf"), "0", True, None, [0.0, "x"]]),
                       st.lists(st.floats(-5, 5), min_size=A.MAX_KINKS + 1, max_size=12, unique=True)))
def test_bad_kinks_are_refused_by_name(kinks):
    with pytest.raises(dmft.InputError, match="kinks"):
        A.custom(lambda h: jnp.abs(h), kinks=kinks)


def test_a_kinked_custom_activation_says_its_kernels_are_inexact():
    """Without a closed form the lazy kernels come from a trapezoid rule: exponentially accurate
    for smooth activations, slow across a kink, where the control variate and the lazy method
    carry the error into every answer (a relu given as a callable biased a solve by 6 standard
    errors at 131072 samples): the doubling estimate is recorded, and above 1e-6 warned."""
    import warnings

    data = dmft.tasks.single_index(D=4, P=16, P_test=8, degree=2, key=0)
    # (plain Monte Carlo nodes: the kernels are the point, not the sampler, whose stratified draw
    # compiles for longer; the sampled solves share one draw)
    kw = dict(eta0=0.5, steps=10, save_every=5, samples=256, sampler="mc")
    # the estimate and its warning come from the solve's setup, the same for every method: where
    # only they are checked, the lazy method (whose programs do not depend on the activation)
    lazy = dict(eta0=0.5, steps=10, save_every=5, method="lazy")
    with pytest.warns(UserWarning, match="not smooth") as said:
        kinked = dmft.solve(dmft.TwoLayer(lambda h: jnp.maximum(h, 0.0), gamma0=1.0), data, **kw)
    assert kinked.info["lazy_kernels_error"] > 1e-3                 # measured 1.3e-2
    assert {w.filename for w in said} == {__file__}                 # the caller's line (dmft.errors.warn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smooth = dmft.solve(dmft.TwoLayer(lambda h: jnp.tanh(h), gamma0=1.0), data, **lazy)
    assert smooth.info["lazy_kernels_error"] < 1e-10                # measured 8.8e-13
    # a closed form; the library's analytic tanh (no estimate needed)
    builtin = dmft.solve(dmft.TwoLayer("relu", gamma0=1.0), data, **kw)
    for sol in (builtin, dmft.solve(dmft.TwoLayer("tanh"), data, **lazy)):
        assert "lazy_kernels_error" not in sol.info
    # the same relu with its kink declared: exact kernels, no warning, and the solve of the
    # built-in relu (closed form) with the same nodes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        declared = dmft.solve(dmft.TwoLayer(A.custom(lambda h: jnp.maximum(h, 0.0), kinks=[0.0]),
                                            gamma0=1.0), data, **kw)
    assert declared.info["lazy_kernels_error"] < 1e-12 and "piecewise" in declared.info["lazy_kernels"]
    np.testing.assert_allclose(declared.test_loss, builtin.test_loss, rtol=1e-10)
    assert abs(kinked.test_loss[-1] - builtin.test_loss[-1]) > 1e3 * abs(declared.test_loss[-1] - builtin.test_loss[-1])


@settings(max_examples=30, deadline=None)
@given(a=st.sampled_from(["relu", "tanh", "erf", "linear", "q0.5", "q0.25", "leaky"]),
       b=st.sampled_from(["relu", "tanh", "erf", "linear", "q0.5", "q0.25", "leaky"]),
       g=st.sampled_from([0.5, 1.0]), h=st.sampled_from([0.5, 1.0]))
def test_models_and_activations_compare_by_what_they_compute(a, b, g, h):
    """TwoLayer("relu") == TwoLayer("relu") (it was False: activations compared by identity):
    activations are equal when their callables, moments, kinks and parameter values are, and
    equal ones hash alike (usable as keys); one custom activation object equals itself."""
    leaky = A.custom(lambda x: jnp.where(x > 0, x, 0.1 * x), "leaky", kinks=[0.0])

    def make(name):
        return leaky if name == "leaky" else A.quadratic(float(name[1:])) if name[0] == "q" else name

    m1, m2 = dmft.TwoLayer(make(a), gamma0=g), dmft.TwoLayer(make(b), gamma0=h)
    assert (m1 == m2) == (a == b and g == h)
    assert (m1.activation == m2.activation) == (a == b)
    if m1 == m2:
        assert hash(m1) == hash(m2) and len({m1, m2}) == 1
    # two custom activations with the same name and kinks but other functions are not the same
    other = A.custom(lambda x: jnp.where(x > 0, x, 0.2 * x), "leaky", kinks=[0.0])
    assert other != leaky and other == other
    # a traced parameter (a batch over it) compares by identity only
    q, seen = A.quadratic(0.5), []

    @jax.jit
    def traced(e):
        seen.append(dataclasses.replace(q, params=(e, q.params[1])) == q)
        return e
    traced(q.params[0])
    assert seen == [False]


def _erf_kernels_exact(k11, k12, k22):
    """erf's arcsine kernels' arguments in 700-digit decimals (an independent evaluation: no
    cancellation, no overflow), k12 held to Cauchy-Schwarz as the closed form holds it."""
    import decimal
    with decimal.localcontext() as ctx:
        ctx.prec = 700
        a, b, c = (decimal.Decimal(float(v)) for v in (k11, k12, k22))
        den = (1 + 2 * a) * (1 + 2 * c)
        inner = 1 + 2 * a + 2 * c + 4 * max(a * c - b * b, 0)
        # the condition numbers in k12 (of G0, of Phi0): one ulp of k12 moves the determinant by ~eps k12^2
        root = (inner * den).sqrt()
        phi = 2 / np.pi * np.arctan2(float(2 * b / den.sqrt()), float(inner.sqrt() / den.sqrt()))
        return phi, 4 / np.pi / float(inner.sqrt()), float(8 * b * b / inner), float(8 * b * b / root)


@pytest.mark.filterwarnings("ignore:lazy kernels. input variance")
@settings(deadline=None, max_examples=40)
@given(log_k=st.floats(-150.0, 300.0), ratio=st.floats(0.01, 100.0),
       rho=st.one_of(st.floats(-1.0, 1.0), st.sampled_from([-1.0, 1.0, 1 - 1e-12])), leak=st.sampled_from([None, 0.1]))
def test_kernels_of_homogeneous_and_saturating_activations_hold_at_any_input_scale(log_k, ratio, rho, leak):
    """Field variances 1e-150 to 1e300: relu (and a custom leaky relu with its kink declared) are
    homogeneous, Phi0(s^2 k) = s^2 Phi0(k) and G0(s^2 k) = G0(k), and erf's kernels match a 60-digit
    evaluation. k11 k22 overflowed beyond variance ~1e154 (relu read Phi0 = inf and G0 = 1/4, the
    leaky relu 0.139 for 0.0879) and erf's (1 + 2 k11)(1 + 2 k22) - 4 k12^2 lost every digit on the
    diagonal from variance ~1e10 (G0 0.6% off at 1e6, inf at 1e20, NaN at 1e160); an entry one ulp
    off its diagonal was not snapped beyond 1e154 (relu's G0 off by 3e-9)."""
    k11 = 10.0 ** log_k
    k22 = k11 * ratio
    k12 = rho * np.sqrt(k11) * np.sqrt(k22)
    kk = [jnp.asarray([v]) for v in (k11, k12, k22)]
    phi, g = (float(v[0]) for v in A.erf().lazy_kernels(*kk))
    phi_exact, g_exact, cond_g, cond_phi = _erf_kernels_exact(k11, k12, k22)
    eps = np.finfo(float).eps
    assert np.isfinite([phi, g]).all() and g > 0
    if 4 * eps * cond_phi < 1e-3:     # (else k12's own rounding leaves the answer undetermined)
        np.testing.assert_allclose(phi, phi_exact, rtol=1e-13 + 4 * eps * cond_phi, atol=1e-300)
    if 4 * eps * cond_g < 1e-3:
        np.testing.assert_allclose(g, g_exact, rtol=1e-13 + 4 * eps * cond_g)
    # a point with itself, its entry one ulp off its diagonal: snapped to the diagonal at any scale
    off = [jnp.asarray([v]) for v in (k11, np.nextafter(k11, 0.0), k11)]
    np.testing.assert_allclose(float(A.relu().lazy_kernels(*off)[1][0]), 0.5, rtol=0, atol=1e-15)
    diag = A.erf().lazy_kernels(*[jnp.asarray([k11])] * 3)     # the diagonal: k12 = k11 = k22 exactly
    np.testing.assert_allclose(float(diag[0][0]), 2 / np.pi * np.arctan2(2 * k11, np.sqrt(1 + 4 * k11)),
                               rtol=1e-14)
    np.testing.assert_allclose(float(diag[1][0]), 4 / np.pi / np.sqrt(1 + 4 * k11), rtol=1e-14)
    act = A.relu() if leak is None else LEAKY[leak]     # (built once: a new callable compiled again)
    unit = [jnp.asarray([v]) for v in (1.0, rho * np.sqrt(ratio), ratio)]
    phi, g = (float(v[0]) for v in act.lazy_kernels(*kk))
    phi1, g1 = (float(v[0]) for v in act.lazy_kernels(*unit))
    tol = 1e-12 if leak is None else 1e-6       # (the quadrature's own rounding at variance 1e-150)
    np.testing.assert_allclose(phi, phi1 * k11, rtol=tol, atol=1e-300)
    # (G0 = 1 - arccos(c) / pi has an infinite slope at c = +-1: an ulp of c moves it by ~eps / sqrt(1 - c^2))
    np.testing.assert_allclose(g, g1, rtol=tol + 8 * eps / np.sqrt(max(1 - rho ** 2, eps)), atol=1e-15)
