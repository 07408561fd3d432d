"""Nodes for the single-site average (docs/derivations.md, sections 1-2).

The two-layer single site starts from z ~ N(0, I_r) (first-layer weights in
the basis of `kernels.field_basis`) and, with trained readouts, a ~ N(0, I_C).
Averages over the site law are estimated on weighted nodes. Samplers:

- "stratified" (default): antithetic pairs, (z, a) and (z, -a) for trained
  readouts (so f(0) = 0 exactly) or z and -z for fixed readouts; the z's come
  in blocks of r mutually orthogonal directions sharing one chi_r radius, the
  radii stratified across blocks, and the readouts stratified per coordinate
  (Latin hypercube). The nodes together are exactly N(0, I) (a node's row in a
  block of r has a stratum-dependent radius law, but every row's place is uniform, so
  averages over nodes are unbiased), while the empirical second moments of z are
  near-exactly the identity, and the readouts' diagonal ones (their cross moments are
  those of independent draws).
- "orthogonal": the same pairs and orthogonal blocks, independent radii.
- "antithetic": the same pairs with independent z's (for comparison).
- "mc": independent draws, no pairing. This is exactly a width-M network.
- "quadrature": tensor-product Gauss-Hermite nodes in all r (+ C) site
  dimensions; exponentially accurate for smooth activations, only for tiny r.
- "sobol": randomized quasi-Monte Carlo. The first M/2 points of the Sobol
  sequence in C + r dimensions (readouts first), scrambled per replica by a random
  linear matrix scramble and digital shift (Matousek), jittered within their cell,
  mapped to N(0, 1) by the inverse CDF, with the same antithetic pairs. The z block
  is rotated so that its first (best distributed) coordinates are the directions
  along which the first layer moves most at t = 0 (`active_rotation`). Each node is
  exactly N(0, I) marginally, so averages stay unbiased, and independent scrambles
  give independent replicas, so the error bars keep their meaning.

Replicas use independent keys (`fold_in(key, replica)`), giving the spread
from which the solvers estimate their error.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import checks
from .activations import gauss_hermite
from .errors import InputError
from .io import compute_platform

__all__ = ["Sites", "SAMPLERS", "draw_sites", "split_sites", "orthogonal_gaussian", "sobol_points", "active_rotation"]

SAMPLERS = ("stratified", "orthogonal", "antithetic", "mc", "quadrature", "sobol")
SOBOL_BITS = 30
DEGENERATE_REL = 1e-9   # eigenvalues of the active rotation this close (relative to the largest) share a space
SOBOL_MAX_DIM = 21201      # scipy.stats.qmc.Sobol's direction numbers (Joe and Kuo) stop there
MAX_QUADRATURE_NODES = 2 ** 21


class Sites(NamedTuple):
    """Initial single-site nodes, one leading axis per replica.

    z: (R, M, r) first-layer coordinates; a: (R, M, C) readouts (ones when
    the readouts are fixed); weight: (R, M), summing to one per replica.
    """

    z: jax.Array
    a: jax.Array
    weight: jax.Array


def _concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def _check_key(key) -> None:
    """A concrete key must be a jax.random.key (or a legacy uint32 (2,) key); InputError naming
    `key` otherwise. Traced keys (inside the solvers' jit and vmap) are not looked at."""
    if _concrete(key):
        if key is None:
            raise InputError("key must be a jax.random.key, got None")
        checks.prng_key("key", key)


def _count(name: str, value, minimum: int, maximum: int | None = None):
    """A static count (a Python integer, checked at trace time: no cost in a compiled program)."""
    if not _concrete(value):
        raise InputError(f"{name} must be a static integer (it sets an array's shape), got a traced value")
    return checks.integer(name, value, minimum=minimum, maximum=maximum)


def _check_dtype(dtype) -> None:
    """None (the default float) or a floating dtype; InputError naming `dtype` otherwise."""
    if dtype is None:
        return
    try:
        ok = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"dtype must be a floating dtype (jnp.float32, jnp.float64) or None, got {dtype!r}")


def _check_draws(key, n, r_name: str, r, dtype):
    """The checks shared by the samplers: key, n >= 0 draws, r_name >= 1 coordinates, dtype."""
    _check_key(key)
    n = _count("n", n, 0)
    r = _count(r_name, r, 1)
    _check_dtype(dtype)
    return n, r


def orthogonal_gaussian(key, n: int, r: int, dtype=None):
    """n draws of N(0, I_r) in blocks of r orthogonal directions.

    Each block is Q diag(rho) with Q Haar-orthogonal and rho_j ~ chi_r
    independent, so each row is exactly standard normal. n >= 0 and r >= 1 are static integers
    (InputError naming the argument otherwise).
    """
    n, r = _check_draws(key, n, "r", r, dtype)
    dtype = dtype or jnp.result_type(float)
    blocks = -(-n // r)
    kq, kr = jax.random.split(key)
    g = jax.random.normal(kq, (blocks, r, r), dtype)
    q, rr = jnp.linalg.qr(g)
    q = q * jnp.sign(jnp.diagonal(rr, axis1=-2, axis2=-1))[:, None, :]   # Haar measure
    radii = jnp.linalg.norm(jax.random.normal(kr, (blocks, r, r), dtype), axis=-1)
    rows = jnp.swapaxes(q, -1, -2) * radii[..., None]                       # (blocks, r, r)
    return rows.reshape(blocks * r, r)[:n]


def _chi2_upper(x, k: int):
    """P(chi2_k > x) for an integer k, from the finite sums of the incomplete gamma
    function at integer and half-integer shape (cheap to compile, unlike gammainc)."""
    s = jnp.maximum(x / 2, 1e-300)[..., None]
    m = k // 2
    if k % 2 == 0:      # e^{-s} sum_{j<m} s^j / j!
        j = np.arange(m, dtype=np.float64)
        logc = -np.array([math.lgamma(v + 1) for v in j])
        tail = 0.0
    else:               # erfc(sqrt s) + e^{-s} sum_{j<m} s^{j+1/2} / Gamma(j + 3/2)
        j = np.arange(m, dtype=np.float64) + 0.5
        logc = -np.array([math.lgamma(v + 1) for v in j])
        tail = jax.scipy.special.erfc(jnp.sqrt(s[..., 0]))
    if m == 0:
        return tail
    shape = (1,) * (s.ndim - 1) + (m,)
    terms = jnp.exp(j.reshape(shape) * jnp.log(s) - s + logc.reshape(shape))
    return tail + jnp.sum(terms, axis=-1)


def _chi2_lower(x, k: int, terms: int):
    """P(chi2_k <= x) by its power series, accurate relative to itself deep in the lower tail:
    s^a e^-s / Gamma(a + 1) sum_n s^n / ((a + 1) ... (a + n)), a = k / 2, s = x / 2 (`terms`
    covers s up to a few times a, where this tail is used)."""
    a = k / 2.0
    s = jnp.maximum(x / 2, 1e-300)
    n = np.arange(1, terms, dtype=np.float64)
    shape = (1,) * s.ndim + (terms - 1,)
    logt = n.reshape(shape) * jnp.log(s)[..., None] - np.cumsum(np.log(a + n)).reshape(shape)
    return jnp.exp(a * jnp.log(s) - s - math.lgamma(a + 1)) * (1.0 + jnp.sum(jnp.exp(logt), axis=-1))


def chi2_quantile(u, k: int):
    """Quantiles of the chi-squared law with k degrees of freedom, u in [0, 1] (clipped to
    [sqrt(tiny), 1 - eps / 2] of its dtype): Newton on the log of the tail u lies in (the lower tail's series for
    u <= 1/2, the upper tail's finite sum above), so both ends keep their relative accuracy
    (about 1e-13 in the tail probability from u = 1e-12 to 1 - 1e-12, k = 1..500; tested against
    gammainc), iterated until the steps stop moving x (5-10 iterations from Wilson-Hilferty).

    k >= 1 is a static integer; u a floating array, when concrete within [0, 1] (InputError naming
    the argument otherwise; a traced u is not looked at)."""
    k = _count("k", k, 1)
    if _concrete(u):
        if u is None or isinstance(u, (str, bytes)):
            raise InputError(f"u must be an array of probabilities in [0, 1], got {u!r}")
        try:      # (through numpy: jnp.asarray reads a list of text such as ["f8"] as a dtype)
            u = jnp.asarray(u if isinstance(u, jax.Array) else np.asarray(u))
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"u must be an array of probabilities in [0, 1], got {type(u).__name__} "
                             f"{u!r}") from None
    if not jnp.issubdtype(u.dtype, jnp.floating):
        raise InputError(f"u must be a floating array (probabilities in [0, 1]), got dtype {u.dtype}")
    # (on the host: XLA's CPU arithmetic flushes subnormals to 0, so a u of -1e-323 passed u >= 0)
    host = np.asarray(u) if _concrete(u) and u.size else None
    if host is not None and not np.all((host >= 0) & (host <= 1)):
        raise InputError("u must hold probabilities in [0, 1], got values outside it (or NaN)")
    u = jnp.asarray(u)
    fi = jnp.finfo(u.dtype)
    u = jnp.clip(u, math.sqrt(fi.tiny), 1 - fi.eps / 2)     # (far tails that the dtype still resolves)
    z = jax.scipy.special.ndtri(u)
    x = k * jnp.maximum(1 - 2 / (9 * k) + z * jnp.sqrt(2 / (9 * k)), 0.05) ** 3  # Wilson-Hilferty
    half = k / 2.0
    log_norm = half * math.log(2.0) + math.lgamma(half)
    # Newton on the concave log lower tail stays at or below the root (<= the median, s <~ a) after
    # its first step; the series' terms then fall off within ~10 sqrt(a) of n = max(0, s - a)
    terms = int(math.ceil(0.25 * half + 10 * math.sqrt(half + 1) + 40))
    lower = u <= 0.5
    log_target = jnp.log(jnp.where(lower, u, 1 - u))

    def newton(x):
        tail = jnp.where(lower, _chi2_lower(x, k, terms), _chi2_upper(x, k))
        log_pdf = (half - 1) * jnp.log(x) - x / 2 - log_norm
        slope = jnp.exp(log_pdf - jnp.log(tail)) * jnp.where(lower, 1.0, -1.0)  # d log(tail) / dx
        new = jnp.clip(x - (jnp.log(tail) - log_target) / slope, x / 10, x * 10)
        return jnp.maximum(new, fi.tiny).astype(x.dtype)     # (Python constants promote float32)

    def moving(c):
        i, x, dx = c
        return (i < 40) & (dx > 64 * fi.eps)     # (then within rounding: Newton is quadratic)

    def body(c):
        i, x, _ = c
        new = newton(x)
        return i + 1, new, jnp.max(jnp.abs(new - x) / x, initial=0.0).astype(x.dtype)

    return jax.lax.while_loop(moving, body, (0, x, jnp.asarray(jnp.inf, x.dtype)))[1]


def stratified_normal(key, n: int, c: int, dtype=None):
    """n draws of N(0, I_c), each coordinate stratified over n equal-probability
    strata (Latin hypercube): exact marginals, near-exact empirical moments of each
    coordinate (the cross moments are those of independent draws).

    The uniforms are kept inside (0, 1) in the working dtype: in float32, (n - 1 + U) / n
    rounds to 1 for U near 1 and ndtri(1) = inf (0.2% of 2048 x 23 draws gave an infinite
    readout, which a solve then reported as a divergence at step 0).

    n >= 0 and c >= 1 are static integers (InputError naming the argument otherwise)."""
    n, c = _check_draws(key, n, "c", c, dtype)
    dtype = dtype or jnp.result_type(float)
    kp, ku = jax.random.split(key)
    # (one permutation a coordinate, vmapped over their keys: the same draws as a loop over them, but
    # one program whatever c; the loop's program grew with c, 35 s and 1.8 GB to compile at c = 256)
    perm = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(kp, c)).T
    return normal_quantile((perm.astype(dtype) + jax.random.uniform(ku, (n, c), dtype)) / n)


def normal_quantile(u):
    """The N(0, 1) quantile of u, with u kept inside (0, 1) in its own dtype (an inf at 1)."""
    fi = jnp.finfo(u.dtype)
    return jax.scipy.special.ndtri(jnp.clip(u, math.sqrt(fi.tiny), 1 - fi.eps / 2))


def shared_radius_gaussian(key, n: int, r: int, dtype=None):
    """n draws of N(0, I_r) in blocks of r orthogonal directions sharing one radius.

    The sum of z z^T over each block is exactly rho_b^2 I; the radii rho_b ~ chi_r are
    stratified across blocks, so the total second moment is near-exactly I. A block's
    stratum of the chi_r law has the mass of its rows (the last block keeps n mod r rows
    when r does not divide n): the strata tile the law with the rows' weights, so the
    average over rows stays unbiased and the stratification holds (equal strata, with the
    last block cut, fluctuated more than plain Monte Carlo). Directions are uniform.
    """
    dtype = dtype or jnp.result_type(float)
    blocks = -(-n // r)
    kq, kp, ku = jax.random.split(key, 3)
    g = jax.random.normal(kq, (blocks, r, r), dtype)
    q, rr = jnp.linalg.qr(g)
    q = q * jnp.sign(jnp.diagonal(rr, axis1=-2, axis2=-1))[:, None, :]   # Haar measure
    pos = jax.random.permutation(kp, blocks)                 # each block's place among the strata
    rows = np.full(blocks, r, np.float64)
    rows[-1] = n - (blocks - 1) * r
    if rows[-1] == r:      # equal strata: (pos + U) / blocks
        u = (pos + jax.random.uniform(ku, (blocks,), dtype)) / blocks
    else:
        mass = jnp.asarray(rows / n, dtype)
        ordered = mass[jnp.argsort(pos)]                         # the blocks' masses in stratum order
        start = (jnp.cumsum(ordered) - ordered)[pos]             # mass placed before each block
        u = start + jax.random.uniform(ku, (blocks,), dtype) * mass
    radii = jnp.sqrt(chi2_quantile(u, r)).astype(dtype)
    rows = jnp.swapaxes(q, -1, -2) * radii[:, None, None]
    return rows.reshape(blocks * r, r)[:n]


@functools.lru_cache(maxsize=8)
def _sobol_integers(n: int, d: int) -> np.ndarray:
    """The first n points of the unscrambled Sobol sequence in d dimensions, as integers
    of SOBOL_BITS bits (scipy's direction numbers, Joe and Kuo)."""
    from scipy.stats import qmc
    m = max(1, math.ceil(math.log2(max(n, 2))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = qmc.Sobol(d, scramble=False, bits=SOBOL_BITS).random_base2(m)[:n]
    return np.rint(x * 2.0 ** SOBOL_BITS).astype(np.uint32)


def sobol_points(key, n: int, d: int, dtype=None):
    """n scrambled Sobol points in [0, 1)^d (see `_sobol_points`); jitted.

    0 <= n <= 2^SOBOL_BITS and 1 <= d <= SOBOL_MAX_DIM (the dimensions scipy has direction
    numbers for) are static integers (InputError naming the argument otherwise)."""
    _check_key(key)
    n = _count("n", n, 0, 2 ** SOBOL_BITS)
    d = _count("d", d, 1, SOBOL_MAX_DIM)
    _check_dtype(dtype)
    return _sobol_points(key, int(n), int(d), dtype or jnp.result_type(float))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sobol_points(key, n: int, d: int, dtype):
    """n scrambled Sobol points in [0, 1)^d: a random linear matrix scramble (a random
    lower-triangular binary matrix with unit diagonal per coordinate acting on the bits),
    a random digital shift, and a uniform jitter within the 2^-30 cell. Every point is
    exactly uniform on [0, 1)^d; the set keeps the Sobol net's balance."""
    x = jnp.asarray(_sobol_integers(n, d))                                   # (n, d) uint32
    km, ks, kj = jax.random.split(key, 3)
    bits = SOBOL_BITS
    rand = jax.random.bits(km, (bits, d), jnp.uint32)

    def one_bit(b, y):      # output bit b (0 = most significant) of every coordinate
        pos = (bits - 1 - b).astype(jnp.uint32)
        above = ~((jnp.uint32(2) << pos) - jnp.uint32(1)) & jnp.uint32(2 ** bits - 1)
        mask = (jnp.uint32(1) << pos) | (rand[b] & above)                     # (d,)
        parity = jax.lax.population_count(x & mask[None, :]) & jnp.uint32(1)
        return y | (parity << pos)

    y = jax.lax.fori_loop(0, bits, one_bit, jnp.zeros_like(x))
    y = y ^ (jax.random.bits(ks, (1, d), jnp.uint32) & jnp.uint32(2 ** bits - 1))
    work = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    u = ((y.astype(work) + jax.random.uniform(kj, (n, d), work)) / 2.0 ** bits).astype(dtype)
    tiny = jnp.finfo(dtype).eps            # in float32 the jitter is below the rounding
    return jnp.clip(u, tiny, 1 - tiny)


def active_rotation(l_tr, y, g0_tr):
    """An orthogonal (r, r) matrix whose columns are the eigenvectors, largest first, of
    sum_c L^T diag(y_c) G0 diag(y_c) L with y the error at t = 0 (y - f(0)): the covariance
    of the first layer's gradient then, i.e. the directions the weights start to move along.

    The eigenvectors are made unique, so that a key gives one node set on every platform (an
    H200's eigh returned other signs than a CPU's, hence another answer for the same key):
    - a degenerate eigenvalue's space (eigenvalues within DEGENERATE_REL, or 100 r eps of the
      dtype where that is larger, of the largest; e.g.
      the null space of dimension r - P when D > P, present whenever there are test points) gets
      the basis that diagonalizes diag(1, ..., r) within it, in its order;
    - each column's entry of largest magnitude is positive, the first of those within 1e-6 of it
      (a rounding-level tie, as in symmetric problems, is broken by position).
    A problem whose restricted diag(1, ..., r) is itself degenerate (a constructed symmetry) is
    left with eigh's basis there."""
    a = sum(l_tr.T @ (y[:, c:c + 1] * g0_tr * y[:, c][None, :]) @ l_tr for c in range(y.shape[1]))
    lam, vec = jnp.linalg.eigh((a + a.T) / 2)
    lam, vec = lam[::-1], vec[:, ::-1]
    r = lam.size
    # clusters of eigenvalues apart by at most the tolerance (largest first: ids 0, 1, ...); in
    # the eigenbasis, diag(1..r) / r restricted to each cluster, the clusters' ranges offset 2
    # apart, so one eigh rotates within each cluster alone (a cluster of one is left as it is, up
    # to sign). In float32 at r in the thousands the offsets' rounding can blur the order within
    # a cluster: the rotation stays orthogonal (any rotation keeps the sampler unbiased).
    # (in float32 a null space's eigenvalues come out ~1e-8 of the largest: the tolerance grows
    # with the dtype's rounding, 100 r eps)
    rel = max(DEGENERATE_REL, 100 * r * float(jnp.finfo(lam.dtype).eps))
    tol = rel * jnp.maximum(jnp.max(jnp.abs(lam)), jnp.finfo(lam.dtype).tiny)
    cluster = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(lam[:-1] - lam[1:] > tol).astype(jnp.int32)])
    same = cluster[:, None] == cluster[None, :]
    weight = jnp.arange(1, r + 1, dtype=vec.dtype) / r                  # diag(1, ..., r) / r
    inner = jnp.where(same, (vec.T * weight[None, :]) @ vec, 0.0)       # its restriction: within (0, 1]
    _, turn = jnp.linalg.eigh(inner + jnp.diag(2.0 * cluster.astype(vec.dtype)))
    vec = vec @ turn
    big = jnp.abs(vec) >= (1 - 1e-6) * jnp.max(jnp.abs(vec), axis=0, keepdims=True)
    lead = jnp.take_along_axis(vec, jnp.argmax(big, axis=0)[None, :], axis=0)
    return vec * jnp.where(lead < 0, -1.0, 1.0).astype(vec.dtype)


def _sobol_replica(key, m, r, c, trained, dtype, rotation):
    half = m // 2
    dims = r + (c if trained else 0)
    g = jax.scipy.special.ndtri(sobol_points(key, half, dims, dtype))
    ab, zb = (g[:, :c], g[:, c:]) if trained else (None, g)
    if rotation is not None:
        zb = zb @ rotation.T.astype(dtype)
    if trained:
        return jnp.concatenate([zb, zb]), jnp.concatenate([ab, -ab])
    return jnp.concatenate([zb, -zb]), jnp.ones((m, c), dtype)


def _one_replica(key, sampler, m, r, c, trained, dtype):
    kz, ka = jax.random.split(key)
    if sampler == "mc":
        z = jax.random.normal(kz, (m, r), dtype)
        a = jax.random.normal(ka, (m, c), dtype) if trained else jnp.ones((m, c), dtype)
        return z, a
    half = m // 2
    if sampler == "stratified":
        zb = shared_radius_gaussian(kz, half, r, dtype)
    elif sampler == "orthogonal":
        zb = orthogonal_gaussian(kz, half, r, dtype)
    else:
        zb = jax.random.normal(kz, (half, r), dtype)
    if trained:
        ab = (stratified_normal(ka, half, c, dtype) if sampler == "stratified"
              else jax.random.normal(ka, (half, c), dtype))
        return jnp.concatenate([zb, zb]), jnp.concatenate([ab, -ab])
    return jnp.concatenate([zb, -zb]), jnp.ones((m, c), dtype)


def check_counts(sampler: str, samples: int, replicas: int, node_split: int = 1) -> None:
    """Every replica gets the same number of nodes, in antithetic pairs unless sampler="mc",
    and with node_split = k its k parts as many whole pairs (InputError otherwise; plan_solve and
    draw_sites both ask)."""
    pairs = sampler != "mc" or node_split > 1          # (mc's parts are split as pairs' halves are)
    per = (2 * replicas if pairs else replicas) * node_split
    if samples % per:
        raise InputError(f"samples ({samples}) must be a multiple of {per} (replicas"
                         f"{' x antithetic pairs' if sampler != 'mc' else (' x 2' if pairs else '')}"
                         f"{f' x node_split {node_split}' if node_split > 1 else ''})")


def split_sites(sites: Sites, k: int) -> Sites:
    """Each replica's nodes as k populations of M / k (`dmft.solve(node_split=k)`): part p holds
    rows [p h / k, (p + 1) h / k) of each half of the replica (h = M / 2), so a node and its
    antithetic partner (rows i and h + i, `_one_replica`) stay together and every part keeps the
    pairs' layout; parts are replica-major ((R, M) -> (R k, M / k): replica j's parts are
    populations j k .. j k + k - 1), each node weighted k / M. Every node's law is unchanged, so a
    part's averages stay unbiased; the parts of one replica are dependent (their nodes were drawn
    together), which is what pairs the split solve with the whole one."""
    R, M = sites.weight.shape
    if k == 1:
        return sites
    idx = _split_index(M, k)
    z, a = (x[:, idx].reshape((R * k, M // k) + x.shape[2:]) for x in (sites.z, sites.a))
    return Sites(z, a, jnp.full((R * k, M // k), k / M, sites.weight.dtype))


def split_rows(x, k: int):
    """One replica's per-node rows x (M, ...) as its k parts (k, M / k, ...), as `split_sites`
    splits its nodes (what a split solve's predictor splits its per-node draws by)."""
    M = x.shape[0]
    return x[None] if k == 1 else x[_split_index(M, k)].reshape((k, M // k) + x.shape[1:])


def _split_index(M: int, k: int) -> np.ndarray:
    """The order of a replica's M nodes that puts its k parts one after another (part-major):
    part p holds rows [p h / k, (p + 1) h / k) of each half (h = M / 2)."""
    if M % (2 * k):
        raise InputError(f"node_split: {M} nodes a replica do not split into {k} parts of whole antithetic pairs")
    h = M // 2
    return np.arange(M).reshape(2, k, h // k).transpose(1, 0, 2).reshape(-1)


def draw_sites(key, sampler: str, samples: int, replicas: int, r: int, c: int,
               trained: bool, nodes: int = 8, dtype=None, rotation=None, first: int = 0,
               count: int | None = None) -> Sites:
    """Draw the single-site nodes for all replicas, or for replicas first .. first + count - 1
    of them (the same nodes those replicas get in a draw of all: replica i uses fold_in(key, i)).

    Args:
        key: a `jax.random.key`.
        sampler: one of SAMPLERS.
        samples: total nodes over all replicas (ignored by "quadrature").
        replicas: number of independent replicas (1 for "quadrature").
        r: first-layer dimension; c: number of outputs.
        trained: whether readouts are trained (random) or fixed to one.
        nodes: Gauss-Hermite nodes per dimension for "quadrature".
        rotation: for "sobol", an (r, r) orthogonal matrix whose first columns get the
            Sobol sequence's first coordinates (`active_rotation`); None: the identity.

    The sizes are checked as `dmft.plan_solve` checks them (InputError naming the argument):
    a public function must not hand back nodes that disagree with their weights.
    """
    sampler = checks.choice("sampler", sampler, SAMPLERS)
    r = checks.integer("r", r, minimum=1)
    c = checks.integer("c", c, minimum=1)
    trained = checks.flag("trained", trained)
    if sampler == "quadrature":
        nodes = checks.integer("nodes", nodes, minimum=1)
        size = quadrature_size(nodes, r, c, trained)
        if size > MAX_QUADRATURE_NODES:
            raise InputError(f"nodes: sampler='quadrature' needs {nodes}^dims = {size} nodes "
                             f"(> {MAX_QUADRATURE_NODES})")
    else:
        samples = checks.integer("samples", samples, minimum=1)
        replicas = checks.integer("replicas", replicas, minimum=1)
        check_counts(sampler, samples, replicas)
        if not isinstance(first, jax.core.Tracer):          # (traced inside solve_batch's jit)
            first = checks.integer("first", first, minimum=0, maximum=replicas - 1)
            if count is not None:
                count = checks.integer("count", count, minimum=1, maximum=replicas - first)
    dtype = dtype or jnp.result_type(float)
    if sampler == "quadrature":
        dims = r + (c if trained else 0)
        xi, w = gauss_hermite(nodes)
        grid = np.array(list(itertools.product(range(nodes), repeat=dims)), dtype=np.int64)
        pts = xi[grid]
        wts = np.prod(w[grid], axis=1)
        z = jnp.asarray(pts[:, :r], dtype)[None]
        a = (jnp.asarray(pts[:, r:], dtype) if trained
             else jnp.ones((pts.shape[0], c), dtype))[None]
        return Sites(z, a, jnp.asarray(wts, dtype)[None])
    n = replicas if count is None else count
    first = jnp.asarray(first, jnp.int32)
    if sampler == "sobol":
        return _draw_sobol(key, samples // replicas, n, r, c, trained, dtype, rotation, first)
    return _draw_replicas(key, sampler, samples // replicas, n, r, c, trained, dtype, first)


# The draw runs once per solve, in milliseconds, while XLA:CPU's backend optimizer spends seconds
# on its QR, sort and Newton loops: on a CPU it is compiled unoptimized (README's first solve 8.8 ->
# ~5 s; the nodes equal to rounding, 3e-14; the run 2-3x slower, 0.05 s at 16384 nodes, r = 32).
_QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _compiled_once(static_argnums):
    """jax.jit for a program that runs once per solve: compiled quickly on a CPU (inside another
    jit, which compiles it with itself, an ordinary jit)."""
    def wrap(fun):
        fast = jax.jit(fun, static_argnums=static_argnums)
        quick = jax.jit(fun, static_argnums=static_argnums, compiler_options=_QUICK_COMPILE)

        @functools.wraps(fun)
        def call(*args):
            traced = any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(args))
            return (quick if compute_platform() == "cpu" and not traced else fast)(*args)
        return call
    return wrap


@_compiled_once(static_argnums=(1, 2, 3, 4, 5, 6, 7))
def _draw_replicas(key, sampler, m, replicas, r, c, trained, dtype, first) -> Sites:
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(first + jnp.arange(replicas))
    z, a = jax.vmap(lambda k: _one_replica(k, sampler, m, r, c, trained, dtype))(keys)
    return Sites(z, a, jnp.full((replicas, m), 1.0 / m, dtype))


@_compiled_once(static_argnums=(1, 2, 3, 4, 5, 6))
def _draw_sobol(key, m, replicas, r, c, trained, dtype, rotation, first) -> Sites:
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(first + jnp.arange(replicas))
    z, a = jax.vmap(lambda k: _sobol_replica(k, m, r, c, trained, dtype, rotation))(keys)
    return Sites(z, a, jnp.full((replicas, m), 1.0 / m, dtype))


def quadrature_size(nodes: int, r: int, c: int, trained: bool) -> int:
    """Number of tensor Gauss-Hermite nodes."""
    return int(nodes) ** (r + (c if trained else 0))
