"""The node samplers: quantiles of the radius law in both tails, and each sampler's marginal
laws against the exact ones (Kolmogorov-Smirnov)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st

import dmft
from dmft import sampling


@settings(max_examples=20, deadline=None)      # (eager Newton per example: 0.5 s each)
@given(k=st.integers(1, 200), log10_tail=st.floats(-12.0, math.log10(0.5)), upper=st.booleans())
def test_chi2_quantile_keeps_relative_accuracy_in_both_tails(k, log10_tail, upper):
    """The tail probability at the returned quantile equals the one asked for to 1e-11
    relative, from 1e-12 to 1/2 on either side (independent reference: gammainc). The previous
    Newton on 1 - upper tail missed by 7% at k = 6, u = 1e-6 and by orders of magnitude deeper."""
    tail = 10.0 ** log10_tail
    u = 1.0 - tail if upper else tail
    x = sampling.chi2_quantile(jnp.asarray([u]), k)
    got = (jax.scipy.special.gammaincc if upper else jax.scipy.special.gammainc)(k / 2, x / 2)
    want = 1.0 - u if upper else u           # (exact for u > 1/2: what u can say about its upper tail)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-11)


@pytest.mark.parametrize("k", [1, 3, 40])
def test_chi2_quantile_in_float32_under_float64(k):
    """float32 probabilities with float64 on (a draw's dtype under x64): the quantile comes back in
    float32, within float32 rounding of the float64 quantile of the same probabilities (it
    failed: Python constants promoted the Newton iterate to float64 inside its while_loop)."""
    u = jnp.asarray([1e-6, 0.1, 0.5, 0.9, 1 - 2 ** -20], jnp.float32)
    x = sampling.chi2_quantile(u, k)
    assert x.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(x), np.asarray(sampling.chi2_quantile(u.astype(jnp.float64), k)),
                               rtol=2e-5)


def _ks(sample, cdf):
    x = np.sort(np.asarray(sample))
    n = x.size
    f = np.asarray(cdf(x))
    return max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n))


def _normal_cdf(x):       # (scipy's: jax's eager erf and gammainc compiled a program per call)
    return 0.5 * (1 + scipy.special.erf(np.asarray(x) / math.sqrt(2)))


def test_samplers_draw_standard_normal_rows():
    """Every sampler's rows are N(0, I_r): each coordinate's law and the radii's chi_r law,
    within the KS distance's 0.1% critical value 1.95 / sqrt(n) (stratification only brings the
    empirical laws closer)."""
    n, r = 4096, 6
    crit = 1.95 / math.sqrt(n)
    key = jax.random.key(7)
    # (each compiled as one program, as the solvers' draw compiles them: called eagerly, their QR,
    # sorts and Newton loop compiled ~100 programs of one operation each)
    draws = {name: jax.jit(fn, static_argnums=(1, 2, 3))(key, n, r, jnp.float64) for name, fn in (
        ("stratified", sampling.stratified_normal), ("orthogonal", sampling.orthogonal_gaussian),
        ("shared_radius", sampling.shared_radius_gaussian))}
    for name, z in draws.items():
        z = np.asarray(z)
        assert z.shape == (n, r) and np.all(np.isfinite(z)), name
        for j in range(r):
            assert _ks(z[:, j], _normal_cdf) < crit, (name, j)
        if name != "stratified":          # (independent coordinates: the radius law follows)
            rad2 = np.sum(z * z, axis=1)
            assert _ks(rad2, lambda v: scipy.special.gammainc(r / 2, v / 2)) < crit, name


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_stratified_draws_are_finite_in_any_float(dtype):
    """The Latin hypercube's uniforms stay inside (0, 1) in the working dtype: in float32
    (n - 1 + U) / n rounded to 1 and ndtri gave inf in 0.2% of draws (readouts of a modular
    addition solve: a 'divergence' at step 0 for some keys). Over 8 keys, n = 2048, c = 23."""
    for k in range(8):
        z = np.asarray(sampling.stratified_normal(jax.random.key(k), 2048, 23, dtype))
        assert z.dtype == dtype and np.all(np.isfinite(z)), (k, np.sum(~np.isfinite(z)))
        assert np.abs(z).max() < 7


@settings(deadline=None, max_examples=30)
@given(sampler=st.one_of(st.sampled_from(sampling.SAMPLERS), st.sampled_from(["typo", "Sobol", "", None])),
       samples=st.one_of(st.integers(-4, 80), st.sampled_from([2.5, True, "64"])),
       replicas=st.one_of(st.integers(0, 5), st.sampled_from([1.5, False])))
def test_draw_sites_checks_its_sizes_before_drawing(sampler, samples, replicas):
    """draw_sites is public: a sampler it does not know, or sizes its nodes and weights would
    disagree on (7 nodes drawn as 6 with 7 weights, 10 over 4 replicas silently 8), are refused
    by name, as plan_solve refuses them; what it accepts has consistent shapes."""
    try:
        s = sampling.draw_sites(jax.random.key(0), sampler, samples, replicas, 3, 2, True, nodes=3)
    except dmft.InputError as err:
        assert any(name in str(err) for name in ("sampler", "samples", "replicas")), err
        return
    n = s.z.shape[0] * s.z.shape[1]
    if sampler != "quadrature":
        assert s.z.shape[:2] == (replicas, samples // replicas) and n == samples
        assert samples % (replicas if sampler == "mc" else 2 * replicas) == 0
    assert s.weight.shape == s.z.shape[:2] and s.a.shape[:2] == s.z.shape[:2]
    np.testing.assert_allclose(np.sum(s.weight, axis=1), 1.0, rtol=1e-12)


@settings(max_examples=20, deadline=None)      # (its first example compiles a draw, ~2 s)
@given(first=st.one_of(st.integers(-2, 6), st.sampled_from([1.5, True])), count=st.integers(1, 5))
def test_draw_sites_refuses_replicas_a_draw_of_all_would_not_have(first, count):
    """Replicas first .. first + count - 1 of a draw of 4: outside 0..3, or a fraction, refused."""
    try:
        s = sampling.draw_sites(jax.random.key(0), "stratified", 64, 4, 3, 1, True, first=first, count=count)
    except dmft.InputError as err:
        assert "first" in str(err) or "count" in str(err)
        assert isinstance(first, (bool, float)) or first < 0 or first + count > 4
        return
    assert not isinstance(first, (bool, float)) and 0 <= first and first + count <= 4
    np.testing.assert_array_equal(s.z, sampling.draw_sites(jax.random.key(0), "stratified", 64, 4, 3, 1, True).z[first:first + count])


def test_a_draw_is_the_same_alone_and_inside_another_jit():
    """The draw is compiled on its own without XLA's backend optimization (on a CPU) and with
    its caller inside another jit (solve_batch): the same nodes, to rounding."""
    key = jax.random.key(5)
    for sampler in ("stratified", "sobol"):
        alone = sampling.draw_sites(key, sampler, 512, 4, 6, 2, True)
        inside = jax.jit(lambda k, s=sampler: sampling.draw_sites(k, s, 512, 4, 6, 2, True))(key)
        for x, y in zip(alone, inside):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-12)
        assert alone.z.shape == (4, 128, 6) and np.all(np.isfinite(alone.z))


# ----------------------------------------------------------------- minibatches

@settings(max_examples=40, deadline=None)
@given(P=st.integers(2, 400), frac=st.floats(0.0, 1.0), step=st.integers(0, 2 ** 31 - 2),
       seed=st.integers(0, 2 ** 31 - 1))
def test_a_minibatch_is_b_distinct_points_among_p(P, frac, step, seed):
    """`batch_indices` under jit, either algorithm (Floyd's for B^2 <= FLOYD_RATIO P, else a
    permutation): B distinct indices in [0, P), the full batch in order at B = P."""
    from dmft.schedule import batch_indices

    B = max(1, round(frac * P))
    idx = np.asarray(jax.jit(batch_indices, static_argnums=(2, 3))(jax.random.key(seed), step, P, B))
    assert idx.shape == (B,) and len(set(idx.tolist())) == B and idx.min() >= 0 and idx.max() < P
    if B == P:
        np.testing.assert_array_equal(idx, np.arange(P))


@pytest.mark.parametrize("P, B", [(6, 3), (7, 2), (600, 599)])
def test_every_minibatch_is_equally_likely(P, B):
    """Each of the C(P, B) subsets has probability 1 / C(P, B): a chi-square test over 20000
    steps of one key (Floyd's algorithm at (6, 3) and (7, 2); the permutation at (600, 599)), at
    the 1e-4 level; and each point is in the batch with probability B / P (within 5 standard
    errors)."""
    from dmft.schedule import batch_indices, floyd_draws

    assert floyd_draws(P, B) == (P < 600)
    n = 20000
    draws = np.sort(np.asarray(jax.jit(jax.vmap(lambda k: batch_indices(jax.random.key(11), k, P, B)))(
        np.arange(n))), axis=1)
    subsets = {}
    for row in draws:                 # (a row's bytes name its subset: tuples of 599 ints took 1-3 s)
        key = row.tobytes()
        subsets[key] = subsets.get(key, 0) + 1
    cells = math.comb(P, B)
    assert len(subsets) == cells
    counts = np.array(list(subsets.values()), float)
    stat = np.sum((counts - n / cells) ** 2 / (n / cells))
    # the chi-square law's upper tail at cells - 1 degrees of freedom (regularized gamma)
    p_value = float(jax.scipy.special.gammaincc((cells - 1) / 2, stat / 2))
    assert p_value > 1e-4, (stat, cells, p_value)
    share = np.bincount(draws.ravel(), minlength=P) / n
    se = np.sqrt(B / P * (1 - B / P) / n)
    assert np.all(np.abs(share - B / P) < 5 * se), share


@settings(max_examples=60, deadline=None)
@given(B=st.sampled_from([2, 3, 8, 17, 40]), extra=st.integers(0, 60), data=st.data())
def test_floyds_parallel_form_takes_the_loops_batch(B, extra, data):
    """`_floyd_parallel` (the accelerators' form) returns `_floyd_loop`'s batch (the CPU's) for
    any draws, generated with many collisions: small values, draws equal to earlier tops, all
    equal; against Floyd's algorithm written out in Python. (A few batch sizes, below and above
    powers of two, each one shape that the sweeps' sort and search compile for: P and the draws
    are values, so the examples share the programs of their B.)"""
    from dmft.schedule import _floyd_loop, _floyd_parallel

    P = 2 * B + extra
    top = np.arange(P - B, P)
    pick = st.one_of(st.integers(0, 3), st.sampled_from(top.tolist()), st.integers(0, P - 1))
    draw = np.array([min(v, int(t)) for v, t in zip(data.draw(st.lists(pick, min_size=B, max_size=B)), top)])
    chosen = []
    for t, j in zip(draw.tolist(), top.tolist()):
        chosen.append(j if t in chosen else t)
    for f in (_floyd_loop, _floyd_parallel):
        np.testing.assert_array_equal(np.asarray(jax.jit(f)(jnp.asarray(draw), jnp.asarray(top))), chosen)


@settings(max_examples=20, deadline=None)
@given(P=st.integers(4, 3000), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2 ** 31 - 1))
def test_a_keys_batches_are_the_same_on_every_platform(P, frac, seed):
    """`batch_indices` under jit and vmap over steps, with the platform (as
    `dmft.io.compute_platform` says, which follows the command's --device) a CPU and an
    accelerator: the same batches, for B of P in both of its algorithms' ranges."""
    from dmft.schedule import batch_indices, floyd_draws

    B = max(1, round(frac * P / 2)) if frac < 0.8 else max(1, round(frac * P))

    def on_each_platform(steps):          # (both traced into one program: one compile an example)
        out = {}
        for platform in ("cpu", "gpu"):
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(dmft.io, "compute_platform", lambda platform=platform: platform)
                out[platform] = jax.vmap(lambda k: batch_indices(jax.random.key(seed), k, P, B))(steps)
        return out

    got = {platform: np.asarray(v) for platform, v in jax.jit(on_each_platform)(np.arange(8)).items()}
    np.testing.assert_array_equal(got["gpu"], got["cpu"])
    # Floyd's while B^2 <= 512 P and 2 B <= P (where it is the cheaper, measured), on any platform
    assert [floyd_draws(*pb) for pb in ((600, 300), (600, 301), (4096, 1448), (4096, 1449))] == [
        True, False, True, False]


def _active_rotation(l_tr, y, g0):
    """`sampling.active_rotation` compiled as one program (as `dmft.solve_batch` traces it), traced
    afresh at each call, so under the eigh a test puts in its place: called eagerly, each example's
    shapes compiled ~30 programs of one operation each (~0.5 s an example)."""
    return jax.jit(lambda *args: sampling.active_rotation(*args))(l_tr, y, g0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), r=st.integers(1, 6), c=st.integers(1, 2),
       flips=st.lists(st.booleans(), min_size=6, max_size=6))
def test_the_active_rotation_has_one_sign_whatever_eigh_returns(seed, r, c, flips):
    """An eigenvector's sign is arbitrary: an H200's eigh returned others than a CPU's, and the
    Sobol sampler's nodes (so its answer for a key) differed by 26% of the predictions' RMS. Each
    column of `active_rotation` has its entry of largest magnitude positive, and the rotation is
    the same when eigh flips any of its columns; it stays orthogonal."""
    rng = np.random.default_rng(seed)
    l_tr, y = rng.normal(size=(8, r)), rng.normal(size=(8, c))
    g = rng.normal(size=(8, 8))
    g0 = g @ g.T / 8
    want = np.asarray(_active_rotation(l_tr, y, g0))
    lead = want[np.argmax(np.abs(want), axis=0), np.arange(r)]
    assert np.all(lead > 0)
    np.testing.assert_allclose(want.T @ want, np.eye(r), atol=1e-12)
    real = jnp.linalg.eigh
    signs = np.where(flips[:r], -1.0, 1.0)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(jnp.linalg, "eigh", lambda a: (lambda lam, v: (lam, v * signs[None, :]))(*real(a)))
        np.testing.assert_array_equal(np.asarray(_active_rotation(l_tr, y, g0)), want)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), p=st.integers(1, 6), extra=st.integers(1, 6), c=st.integers(1, 2),
       single=st.booleans())
def test_the_active_rotation_is_one_basis_whatever_eigh_returns_in_a_degenerate_space(seed, p, extra, c, single):
    """With more coordinates r than training points P (D > P, with test points) the gradient's
    covariance has a null space of dimension r - P, where eigh may return any orthonormal basis:
    one per platform. `active_rotation` puts a canonical basis there (the one diagonalizing
    diag(1, ..., r) within it), so the rotation is the same whatever rotation of that space
    eigh returns; it stays orthogonal and its leading columns are still the eigenvectors. In
    float32 too (there the null space's eigenvalues come out ~1e-8 of the largest, above the
    float64 tolerance: turning the block moved the rotation by 0.996)."""
    rng = np.random.default_rng(seed)
    r = p + extra
    dt, tol = (np.float32, 2e-4) if single else (np.float64, 1e-10)
    l_tr, y = rng.normal(size=(p, r)), rng.normal(size=(p, c))
    g = rng.normal(size=(p, p))
    g0 = g @ g.T / p + 0.1 * np.eye(p)
    a = sum(l_tr.T @ (y[:, k:k + 1] * g0 * y[:, k][None, :]) @ l_tr for k in range(c))
    lam = np.sort(np.linalg.eigvalsh(a))[::-1]
    l_tr, y, g0 = (jnp.asarray(v, dt) for v in (l_tr, y, g0))
    want = np.asarray(_active_rotation(l_tr, y, g0), np.float64)
    np.testing.assert_allclose(want.T @ want, np.eye(r), atol=1e3 * tol)
    np.testing.assert_allclose(a @ want, want * lam[None, :], atol=(1e-9 if not single else 1e-4) * lam[0])
    real = jnp.linalg.eigh
    turn, _ = np.linalg.qr(rng.normal(size=(extra, extra)))
    first = []

    def rotated(m):                  # the problem's eigh only: its null space (first, ascending) turned
        lam_, v = real(m)
        if first:
            return lam_, v
        first.append(True)
        return lam_, v.at[:, :extra].set(v[:, :extra] @ turn)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(jnp.linalg, "eigh", rotated)
        np.testing.assert_allclose(np.asarray(_active_rotation(l_tr, y, g0), np.float64), want, atol=tol)


def test_stratified_draws_are_one_program_whatever_the_outputs():
    """The C coordinates' permutations are drawn vmapped over their keys: the same draws as one
    permutation a key in a loop (bit for bit), in a program whose size does not grow with C (the
    loop's did: 35 s and 1.8 GB to compile at C = 256, a many-output forward solve's memory and
    time; the memory audit's finding). Sizes of the lowered programs, not timings."""
    key = jax.random.key(3)
    kp, ku = jax.random.split(key)
    loop = jnp.stack([jax.random.permutation(k, 50) for k in jax.random.split(kp, 6)], axis=1)
    want = sampling.normal_quantile((loop.astype(jnp.float64) + jax.random.uniform(ku, (50, 6), jnp.float64)) / 50)
    np.testing.assert_array_equal(sampling.stratified_normal(key, 50, 6), want)
    size = {c: len(jax.jit(lambda k, c=c: sampling.stratified_normal(k, 64, c)).lower(key).as_text())
            for c in (2, 64)}
    assert size[64] < 1.2 * size[2], size
