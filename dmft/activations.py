"""Activations with the Gaussian expectations the theory needs.

Each activation knows phi, its derivative, and, where one exists, the closed
form of the lazy kernels (docs/derivations.md, section 2) for a pair of jointly Gaussian
fields (u, v) with covariance [[k11, k12], [k12, k22]]:

    Phi0 = E[phi(u) phi(v)],   G0 = E[phi'(u) phi'(v)],   mean = E[phi(u)].

Activations without a closed form fall back to quadrature on the bivariate
Gaussian: the trapezoid rule on a uniform grid with the Gaussian weight
(`trapezoid_kernels`), exponentially accurate for activations analytic in a strip
(tanh, softplus): against Gauss-Hermite at the same node count its error is
1e3-1e6 times smaller for saturating activations (at unit variance, 64 nodes:
3e-11 against 1e-7 for tanh's G0). `grid_nodes` raises the node count with the largest
field variance, since the strip narrows as the field scale grows. Across a kink (phi or
phi' not smooth, as in a leaky relu or a hard tanh) that rule converges only
algebraically (a relu callable: 1e-2 off at 64 nodes); an activation that declares its
kinks (`custom(fn, kinks=[...])`) is integrated piecewise instead, Gauss-Legendre on the
pieces between them (`piecewise_kernels`: ~1e-14 for a relu or a hard tanh). Numeric parameters (for example eps of the
quadratic activation) are pytree leaves, so changing them does not recompile.

Example:
    >>> from dmft import activations
    >>> act = activations.get("relu")
    >>> float(act(2.0)), float(act.derivative(2.0))
    (2.0, 1.0)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import checks
from .errors import InputError, warn

__all__ = [
    "Activation", "get", "names", "linear", "relu", "tanh", "erf", "softplus",
    "quadratic", "square", "custom", "gauss_hermite", "gauss_hermite_kernels", "trapezoid_grid",
    "trapezoid_kernels", "piecewise_kernels", "mehler_kernels", "grid_nodes", "grid_capped", "capped_grid_error", "tail_share", "MAX_KINKS", "TAIL_SHARE_TOL",
]


MAX_NODES = 256   # numpy's Gauss-Hermite weights overflow somewhat beyond this
MAX_GRID_NODES = 1024


GRID_HALF_WIDTH = 9.0   # the trapezoid grid spans +-9 standard deviations (weight < 3e-18 beyond)
MAX_KINKS = 8           # declared kinks of a custom activation (each adds quadrature pieces)
PIECE_NODES = 48        # least Gauss-Legendre nodes per piece (a relu piece: 1e-14 at 48, 3e-10 at 32)
GRID_STEP = 0.3         # largest step, in units of 1 / (largest field standard deviation)
REFERENCE_CORE = 60.0   # capped_grid_error's reference: sub-intervals of REFERENCE_STEP on |u| <= this (tanh'(60) ~ 1e-52)
REFERENCE_STEP = 0.02
REFERENCE_NODES = 65536  # and this many sub-intervals' ends on each side beyond
REFERENCE_ORDER = 4      # Gauss-Legendre nodes per sub-interval of the reference
TAIL_SHARE_TOL = 1e-6   # most of E[phi^2] or E[phi'^2] the grid's last nodes may carry (tail_share)
# a correlation within this many ulps of +-1 is +-1 in the lazy kernels (`Activation.lazy_kernels`):
# beyond it a pair of distinct inputs, within it what rounding alone can make of one point
SNAP_ULPS = 64


def tail_share(act, max_variance) -> float:
    """The largest share of E[phi(u)^2] and E[phi'(u)^2], u ~ N(0, max_variance), that the
    quadrature grid's two end nodes (+-GRID_HALF_WIDTH standard deviations) carry.

    Every quadrature of the lazy kernels stops there. An activation growing slower than
    exp(c u^2) leaves ~1e-17 of the integral at the ends (relu 1e-17, exp(u) at unit variance
    4e-12); where the share is not small the integral has mass past the grid: either the
    Gaussian moment does not exist (exp(u^2) at variance >= 1/4) or the fields are too wide
    for it (exp(u) at variance 9: 2e-2), and the kernels would be the grid's truncation.
    inf when phi or phi' is not finite somewhere on the grid (log(4 + u), or an overflow).

    act must be an `Activation` (`get(name)` makes one of a name) and max_variance a finite
    real >= 0 (InputError naming the argument otherwise).
    """
    if not isinstance(act, Activation):
        raise InputError(f"act must be a dmft.activations.Activation (activations.get(name) makes one), "
                         f"got {type(act).__name__} {act!r}")
    v = checks.real("max_variance", max_variance, nonnegative=True)
    xi, w = trapezoid_grid(2 * 64 + 1)
    u = jnp.asarray(np.sqrt(v) * xi)
    share = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        # (a moment far below its natural scale, v for phi^2 and 1 for phi'^2 (a relu thresholded
        # past 7 standard deviations: 1e-16), is measured against 1e-10 of that scale: its ends
        # carry an absolute 1e-20, no sign of a missing moment)
        for f, scale in ((act(u), v), (act.derivative(u), 1.0)):
            t = w * np.asarray(f, dtype=np.float64) ** 2
            total = t.sum()
            if not np.all(np.isfinite(t)):
                return float("inf")
            if total > 0:
                share = max(share, float((t[0] + t[-1]) / max(total, 1e-10 * scale)))
    return share


def grid_nodes(max_variance, nodes: int) -> int:
    """Trapezoid nodes per dimension for fields of variance up to `max_variance`: at least
    `nodes`, and enough that the step is <= GRID_STEP / sigma_max (tanh: error ~1e-13; the
    error of the rule falls as exp(-2 pi d / step) with d = pi / (2 sigma) for tanh).

    max_variance must be a real >= 0 and nodes an integer >= 1 (InputError naming the argument;
    both are concrete here: the callers skip this with traced variances)."""
    try:
        v = float(max_variance)
    except (TypeError, ValueError):
        v = None
    if v is None or isinstance(max_variance, (bool, np.bool_, str, bytes)) or np.iscomplexobj(max_variance):
        raise InputError(f"max_variance must be a real number, got {max_variance!r}")
    if not math.isfinite(v):       # Dataset and x_new refuse such inputs first; never a raw OverflowError
        raise InputError(f"x: the input kernel's diagonal |x|^2 / D (the largest field variance, "
                         f"max_variance) is {v}, not finite; rescale the inputs")
    if v < 0:
        raise InputError(f"max_variance must be >= 0 (a variance), got {v}")
    nodes = checks.integer("nodes", nodes, minimum=1)
    sigma = math.sqrt(max(v, 0.0))
    need = math.ceil(2 * GRID_HALF_WIDTH * sigma / GRID_STEP) + 1
    if need > MAX_GRID_NODES:
        warn(f"lazy kernels: input variance {float(max_variance):.3g} would need {need:.3g} "
                      f"quadrature nodes per dimension; using {MAX_GRID_NODES} (less accurate for "
                      "saturating activations: rescale the inputs to |x|^2 / D ~ 1)")
    return int(min(max(int(nodes), 8 * math.ceil(need / 8)), MAX_GRID_NODES))


def grid_capped(max_variance) -> bool:
    """Whether fields of variance up to `max_variance` need more trapezoid nodes per dimension
    than MAX_GRID_NODES (the rule then runs at MAX_GRID_NODES, coarser than GRID_STEP)."""
    sigma = math.sqrt(max(float(max_variance), 0.0))
    return math.ceil(2 * GRID_HALF_WIDTH * sigma / GRID_STEP) + 1 > MAX_GRID_NODES


def capped_grid_error(act: "Activation", max_variance) -> float:
    """Relative error of the lazy kernels (Phi0, G0) at the largest variance, where the grid is
    capped (`grid_capped`; a trapezoid rule, or Gauss-Legendre pieces between declared kinks):
    the rule's diagonal E[phi(u)^2], E[phi'(u)^2], u ~ N(0, k), against a 1-D composite
    Gauss-Legendre rule that resolves the activation near the origin whatever k: sub-intervals of
    REFERENCE_STEP on |u| <= REFERENCE_CORE (where a saturating or smoothed-kink activation bends),
    REFERENCE_NODES on each side beyond, out to GRID_HALF_WIDTH standard deviations, split at the
    declared kinks too. 0.0 where the grid is not capped or the kernels are a closed form. The
    kernels' error is largest on the diagonal: tanh at k = 1e3 / 3e3 / 1e4 is off by 5e-5 / 2% /
    34% in G0 (the capped step no longer resolves phi' near 0), softplus by 5e-6 at 1e4 (for a
    piecewise rule, doubling the nodes could not tell: both are raised to the cap). An activation
    with structure far from the origin (sin at a large variance) is not resolved by the
    reference either."""
    if act.quadrature not in ("trapezoid", "piecewise") or not grid_capped(max_variance):
        return 0.0
    return _capped_grid_error(act, float(max_variance), jnp.asarray(0.0).dtype.name)


@functools.lru_cache(maxsize=32)           # (plan_solve and the setup ask for the same one)
def _capped_grid_error(act: "Activation", k: float, dtype: str) -> float:
    sigma = math.sqrt(k)
    edge = GRID_HALF_WIDTH * sigma
    core = min(REFERENCE_CORE, edge)
    kinks = [float(b) for b in act.kinks if abs(b) < edge]
    breaks = np.unique(np.concatenate([np.linspace(-core, core, 2 * math.ceil(core / REFERENCE_STEP) + 1),
                                       np.linspace(core, edge, REFERENCE_NODES)[:-1],
                                       -np.linspace(core, edge, REFERENCE_NODES)[:-1], kinks]))
    # the pieces between them in standard units, as the piecewise rule integrates its own
    x, wx = _pieces(jnp.asarray(breaks / sigma), *np.polynomial.legendre.leggauss(REFERENCE_ORDER))
    ref = [float(jnp.sum(wx * f(sigma * x) ** 2)) for f in (act, act.derivative)]
    kk = jnp.asarray([k])
    rule = [float(v[0]) for v in act.lazy_kernels(kk, kk, kk)]
    return max(abs(a - b) / max(abs(b), 1e-300) for a, b in zip(rule, ref))


def trapezoid_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n equally spaced nodes on [-9, 9] with trapezoid weights times the N(0, 1) density,
    normalized to sum to one (the rule is then exact for constants)."""
    if not 2 <= int(n) <= MAX_GRID_NODES:
        raise InputError(f"trapezoid nodes must be in [2, {MAX_GRID_NODES}], got {n}")
    xi = np.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, int(n))
    w = np.exp(-xi ** 2 / 2)
    return xi, w / w.sum()


def gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of n-point Gauss-Hermite quadrature for N(0, 1).

    Returns:
        (nodes, weights) with sum(weights) = 1, so that
        E[g(xi)] ~ sum(weights * g(nodes)) for xi ~ N(0, 1).
    """
    if not 1 <= int(n) <= MAX_NODES:
        raise InputError(f"Gauss-Hermite nodes must be in [1, {MAX_NODES}], got {n}")
    nodes, weights = np.polynomial.hermite_e.hermegauss(int(n))
    return nodes, weights / math.sqrt(2.0 * math.pi)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class Activation:
    """An elementwise activation phi(h; params) and its Gaussian moments.

    Attributes:
        name: short name used in reports.
        fn: phi(h, *params), elementwise.
        params: numeric parameters (pytree leaves).
        dfn: phi'(h, *params); None means forward-mode autodiff of fn.
        lazy_fn: closed form (k11, k12, k22, *params) -> (Phi0, G0), or None.
        mean_fn: closed form (k, *params) -> E[phi(u)], u ~ N(0, k), or None.
        degree: polynomial degree when phi is a polynomial of degree <= 2
            (this is what makes the Gaussian moment closure exact), else None.
        kinks: sorted points where phi or phi' is not smooth (declared by the user of
            `custom`); the quadrature is then piecewise between them.
    """

    name: str
    fn: Callable
    params: tuple = ()
    dfn: Callable | None = None
    lazy_fn: Callable | None = None
    mean_fn: Callable | None = None
    degree: int | None = None
    kinks: tuple = ()

    def tree_flatten(self):
        aux = (self.name, self.fn, self.dfn, self.lazy_fn, self.mean_fn, self.degree, self.kinks)
        return (self.params,), aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        name, fn, dfn, lazy_fn, mean_fn, degree, kinks = aux
        return cls(name, fn, tuple(children[0]), dfn, lazy_fn, mean_fn, degree, kinks)

    def _identity(self):
        """What makes two activations the same function: the callables (by identity: two
        lambdas with the same body are different functions to Python), the declared moments and
        kinks, and the parameters' values; None while the parameters are traced."""
        try:
            params = tuple(float(p) for p in self.params)
        except (TypeError, jax.errors.ConcretizationTypeError):
            return None
        return (self.name, self.fn, self.dfn, self.lazy_fn, self.mean_fn, self.degree, self.kinks, params)

    def __eq__(self, other):
        if self is other:
            return True
        if not isinstance(other, Activation):
            return NotImplemented
        mine = self._identity()
        return mine is not None and mine == other._identity()

    def __hash__(self):
        mine = self._identity()
        return id(self) if mine is None else hash(mine)

    def __call__(self, h):
        return self.fn(h, *self.params)

    def derivative(self, h):
        if self.dfn is not None:
            return self.dfn(h, *self.params)
        h = jnp.asarray(h)
        return jax.jvp(lambda v: self.fn(v, *self.params), (h,), (jnp.ones_like(h),))[1]

    @property
    def has_closed_form(self) -> bool:
        return self.lazy_fn is not None

    def lazy_kernels(self, k11, k12, k22, nodes: int = 48):
        """(Phi0, G0) elementwise over broadcast covariance entries.

        A correlation k12 / sqrt(k11 k22) within rounding of +-1 (SNAP_ULPS) is taken as +-1:
        a point with itself whose kernel entry and diagonal were summed in other orders reads
        1 - 1 ulp, and the kernels' slope in the angle there (arccos(1 - d) ~ sqrt(2 d)) turned
        that into a 2e-9 error on relu's NTK diagonal and up to 2e-8 for a piecewise rule."""
        k11, k12, k22 = (jnp.asarray(k, jnp.result_type(k, float)) for k in (k11, k12, k22))
        s = _safe_corr(k11, k12, k22)[0]           # (no overflow of k11 k22 at any input scale)
        near = jnp.abs(k12) >= (1 - SNAP_ULPS * jnp.finfo(k12.dtype).eps) * s
        k12 = jnp.where(near & (s > 0), jnp.sign(k12) * s, k12)
        if self.lazy_fn is not None:
            return self.lazy_fn(k11, k12, k22, *self.params)
        if self.kinks:
            return piecewise_kernels(self, k11, k12, k22, nodes=nodes)
        return trapezoid_kernels(self, k11, k12, k22, nodes=nodes)

    @property
    def quadrature(self) -> str:
        """How the lazy kernels are computed: "closed form", "piecewise" or "trapezoid"."""
        return "closed form" if self.lazy_fn is not None else ("piecewise" if self.kinks else "trapezoid")

    def mean(self, k, nodes: int = 96):
        """E[phi(u)] for u ~ N(0, k), elementwise over k."""
        if self.mean_fn is not None:
            return self.mean_fn(k, *self.params)
        k = jnp.asarray(k)
        if not isinstance(k, jax.core.Tracer):
            nodes = grid_nodes(jnp.max(k) if k.size else 0.0, nodes)
        if self.kinks:
            return _piecewise_mean(self, k, piece_nodes(nodes))
        xi, w = trapezoid_grid(nodes)
        xi = jnp.asarray(xi).reshape((1,) * k.ndim + (-1,))
        vals = self(jnp.sqrt(jnp.maximum(k, 0.0))[..., None] * xi)
        return jnp.sum(vals * jnp.asarray(w).reshape(xi.shape), axis=-1)

    def __repr__(self):
        parts = [self.name] + [f"{float(p):g}" for p in self.params]
        if self.kinks:
            parts.append("kinks=[" + ", ".join(f"{k:g}" for k in self.kinks) + "]")
        return f"Activation({', '.join(parts)})"


def gauss_hermite_kernels(act: Activation, k11, k12, k22, nodes: int = 48):
    """(Phi0, G0) by tensor Gauss-Hermite quadrature on the bivariate Gaussian (kept as an
    independent check; the solvers use `trapezoid_kernels`)."""
    xi, w = gauss_hermite(nodes)
    return _grid_kernels(act, k11, k12, k22, jnp.asarray(xi), jnp.asarray(w))


def trapezoid_kernels(act: Activation, k11, k12, k22, nodes: int = 64):
    """(Phi0, G0) by the trapezoid rule with the Gaussian weight on [-9, 9]^2.

    Exponentially accurate for activations analytic in a strip around the real axis
    (tanh, softplus, sin); `nodes` is a minimum: with concrete inputs it is raised by
    `grid_nodes` to suit the largest variance.
    """
    k11, k12, k22, nodes = _grid_inputs(k11, k12, k22, nodes)
    xi, w = trapezoid_grid(nodes)
    return _grid_kernels(act, k11, k12, k22, jnp.asarray(xi), jnp.asarray(w))


def _grid_inputs(k11, k12, k22, nodes: int):
    """The covariance entries broadcast together, and the node count raised by `grid_nodes` for
    the largest variance when the entries are concrete (traced ones keep `nodes`)."""
    k11, k12, k22 = jnp.broadcast_arrays(*(jnp.asarray(k) for k in (k11, k12, k22)))
    if not any(isinstance(k, jax.core.Tracer) for k in (k11, k22)) and k11.size:
        nodes = grid_nodes(max(float(jnp.max(k11)), float(jnp.max(k22))), nodes)
    return k11, k12, k22, nodes


@jax.jit
def _grid_kernels(act: Activation, k11, k12, k22, xi, w):
    """Tensor-grid quadrature of (Phi0, G0) with 1-D nodes xi and weights w for N(0, 1).

    With u = sqrt(k11) xi1 and v = rho sqrt(k22) xi1 + sqrt(k22 (1 - rho^2)) xi2,
    both expectations are sums over the grid. Inputs broadcast; the work is chunked
    so memory stays bounded. Compiled once per activation, shape and node count.
    """
    k11, k12, k22 = jnp.broadcast_arrays(*(jnp.asarray(k) for k in (k11, k12, k22)))
    shape = k11.shape
    nodes = xi.shape[0]
    s1 = jnp.sqrt(jnp.maximum(k11, 0.0))
    s2 = jnp.sqrt(jnp.maximum(k22, 0.0))
    denom = jnp.where(s1 * s2 > 0, s1 * s2, 1.0)
    rho = jnp.clip(jnp.where(s1 * s2 > 0, k12 / denom, 0.0), -1.0, 1.0)
    flat = [a.reshape(-1) for a in (s1, s2, rho)]
    n = flat[0].shape[0]
    chunk = max(1, min(n, 2 ** 22 // (nodes * nodes)))
    pad = (-n) % chunk
    flat = [jnp.pad(a, (0, pad)) for a in flat]

    def one_chunk(args):
        a1, a2, r = args
        u = a1[:, None] * xi[None, :]                          # (c, n)
        v = (r * a2)[:, None, None] * xi[None, :, None] + (
            a2 * jnp.sqrt(1.0 - r ** 2))[:, None, None] * xi[None, None, :]  # (c, n, n)
        pu, du = act(u), act.derivative(u)
        pv, dv = act(v), act.derivative(v)
        phi = jnp.einsum("ci,i,cij,j->c", pu, w, pv, w)
        g = jnp.einsum("ci,i,cij,j->c", du, w, dv, w)
        return phi, g

    stacked = [a.reshape(-1, chunk) for a in flat]
    phi, g = jax.lax.map(one_chunk, tuple(stacked))
    return phi.reshape(-1)[:n].reshape(shape), g.reshape(-1)[:n].reshape(shape)


# Mehler's series for the lazy kernels of an activation without a closed form or kinks
# (`mehler_kernels`): for fields u, v of standard deviations s_u, s_v and correlation rho,
#     E[f(u) f(v)] = sum_k rho^k a_k(s_u) a_k(s_v),   a_k(s) = E[f(s xi) He_k(xi)] / sqrt(k!),
# xi ~ N(0, 1), He_k the probabilists' Hermite polynomials. By Cauchy-Schwarz (sum_k a_k(s)^2 =
# E[f(s xi)^2]) the terms from k = K on sum to at most |rho|^K ||a_{>=K}(s_u)|| ||a_{>=K}(s_v)||, at most
# |rho|^K sqrt(E f(u)^2 E f(v)^2), so K is the fewest terms whose tail, bounded so from the points'
# own coefficients, is below HERMITE_TAIL of that at the largest |rho| summed (`_terms`: tanh at unit
# variance and |rho| <= 0.9 100-117 terms, where |rho|^K alone asks 372). The a_k are one
# matrix product per distinct variance (a trapezoid rule on HERMITE_NODES points, exponentially
# accurate for an analytic f: the Hermite factor's growth in the strip, e^(sqrt(k) d), is far
# below the rule's e^(2 pi d / step) at these sizes), so a kernel block costs (A + B) x nodes
# evaluations of f and A x B x K multiply-adds, where the grid costs A x B x nodes^2 evaluations
# (tanh, P = 256 with 1000 test points: 8.6 s). The series is summed where |rho| <=
# HERMITE_RHO_MAX (at most HERMITE_TERMS_MAX terms) and both standard deviations <= HERMITE_SD_MAX; the
# grid (`Activation.lazy_kernels`) takes the rest (a point with itself: rho = 1).
HERMITE_RHO_MAX = 0.9
HERMITE_SD_MAX = 4.0
HERMITE_TAIL = 1e-17
HERMITE_NODES = 1025         # (513 gave the same kernels to 1e-15 at standard deviation 4; 257: 2e-8)
HERMITE_HALF_WIDTH = 13.0    # the coefficients' weight beyond: < 1e-36 (times |He_k| / sqrt(k!), at most about e^42)
HERMITE_TERMS_MAX = math.ceil(math.log(HERMITE_TAIL) / math.log(HERMITE_RHO_MAX))   # 372: the terms at
#                                                                         |rho| = HERMITE_RHO_MAX
HERMITE_BLOCK = 2 ** 20      # entries of a row block, and of the phi values of a block of rows or columns
#                              (arrays of 8 MiB)
# blocks of fewer entries keep the grid (`dmft.kernels.lazy_kernels`): there the setup is compile-bound,
# and the series' programs compiled beside the grid's cost more than the grid's compute (a tanh
# solve at P = 16 with 8 test points: setup 0.53 s by the grid, 0.94 s by the series; at 2^14
# entries the grid computes for about 0.3 s)
HERMITE_MIN_ENTRIES = 2 ** 14


@jax.jit
def _values(act: "Activation", h):
    return act(h), act.derivative(h)


@functools.lru_cache(maxsize=4)
def _hermite_rule(terms: int, nodes: int = HERMITE_NODES):
    """The coefficients' grid xi (`nodes` points on +-HERMITE_HALF_WIDTH), its N(0, 1) trapezoid
    weights w (summing to one) and the orthonormal Hermite polynomials He_k(xi) / sqrt(k!),
    k < terms, by their recurrence (built once: every setup and predict reads the same,
    read-only)."""
    xi = np.linspace(-HERMITE_HALF_WIDTH, HERMITE_HALF_WIDTH, nodes)
    w = np.exp(-xi ** 2 / 2)
    he = np.empty((xi.size, terms))
    he[:, 0] = 1.0
    if terms > 1:
        he[:, 1] = xi
    for k in range(1, terms - 1):
        he[:, k + 1] = (xi * he[:, k] - math.sqrt(k) * he[:, k - 1]) / math.sqrt(k + 1)
    w = w / w.sum()
    for a in (xi, w, he):
        a.flags.writeable = False
    return xi, w, he


def _values_padded(act: "Activation", sd, xi):
    """phi(s xi) and phi'(s xi) (host float64 arrays, (len(sd), len(xi))), the rows padded to a
    power of two for the compiled program (few shapes)."""
    n = max(64, 1 << int(max(sd.size - 1, 0)).bit_length())
    pad = np.concatenate([sd, np.zeros(n - sd.size)])
    return [np.asarray(v, np.float64)[:sd.size] for v in _values(act, jnp.asarray(pad[:, None] * xi[None, :]))]


def _coefficients(act: "Activation", sd, xi, w, he):
    """The coefficients of each standard deviation, (len(sd), terms) for phi and for phi'
    (`he`'s terms), and for each the largest over the points of the normalized tail
    sqrt(sum_{k >= K} a_k^2 / E f^2), K = 0..terms: beyond the last term the rest of E f^2 (by the
    one-dimensional rule on the same nodes) plus its rounding, 4 terms x eps x E f^2 (0 where f is 0
    on the point's line). Filled in blocks of rows whose phi values stay within HERMITE_BLOCK;
    where many repeat (points of one norm), of the distinct values only."""
    uniq, inv = np.unique(sd, return_inverse=True)
    if 2 * uniq.size > sd.size:                        # (few repeats: no copy through the inverse)
        uniq, inv = sd, None
    rows = max(1, HERMITE_BLOCK // xi.size)
    terms = he.shape[1]
    wh = w[:, None] * he
    out = [np.empty((uniq.size, terms)), np.empty((uniq.size, terms))]
    tails = [np.zeros(terms + 1), np.zeros(terms + 1)]
    for lo in range(0, uniq.size, rows):
        for o, tail, v in zip(out, tails, _values_padded(act, uniq[lo:lo + rows], xi)):
            c = o[lo:lo + rows]
            c[...] = v @ wh
            m2 = (v * v) @ w                                                  # E f^2 of each point
            sq = np.concatenate([np.cumsum((c * c)[:, ::-1], axis=1)[:, ::-1], np.zeros((c.shape[0], 1))], axis=1)
            rest = np.maximum(m2 - sq[:, 0], 0.0) + 4 * terms * np.finfo(np.float64).eps * m2
            norm = np.sqrt((sq + rest[:, None]) / np.where(m2 > 0, m2, 1.0)[:, None])
            np.maximum(tail, np.max(np.where(m2[:, None] > 0, norm, 0.0), axis=0), out=tail)
    return (out if inv is None else [o[inv] for o in out]), tails


# the series' sums are compiled (`_horner_program`: a tile of rows carried through all its terms in
# cache, 10x numpy's passes over the block: 1024 x 1024 entries at 120 terms 0.47 -> 0.045 s) where a
# call's work, entries x terms over its blocks and both kernels, reaches HORNER_COMPILED_WORK (compiled
# once per block shape, 0.2-0.3 s; numpy costs about 4 ns an entry and term), and x64 is on (the
# program would otherwise sum in float32)
HORNER_COMPILED_WORK = 2 ** 26
HORNER_TILE = 16


@jax.jit
def _horner_program(ca_t, cb_t, r, terms):
    """sum_{k < terms} r^k ca[:, k] cb[:, k] (outer in the two point sets) by Horner's rule: ca_t
    (K, A), A a multiple of HORNER_TILE, cb_t (K, B), r (A, B); `terms` (<= K) traced, so a block
    shape compiles once. One tile of rows at a time, through all the terms."""
    K, A = ca_t.shape

    def tile(args):
        c, rt = args                                   # (K, tile), (tile, B)

        def term(k):
            return jax.lax.dynamic_index_in_dim(c, k, 0, False)[:, None] * \
                jax.lax.dynamic_index_in_dim(cb_t, k, 0, False)[None, :]

        return jax.lax.fori_loop(0, terms - 1, lambda i, acc: acc * rt + term(terms - 2 - i), term(terms - 1))

    tiles = (ca_t.reshape(K, A // HORNER_TILE, HORNER_TILE).transpose(1, 0, 2),
             r.reshape(A // HORNER_TILE, HORNER_TILE, -1))
    return jax.lax.map(tile, tiles).reshape(A, -1)


def _horner(ca, cb, r, terms: int, rows: int, compiled: bool):
    """sum_{k < terms} r^k ca[:, k] cb[:, k], ca (A, >= terms), cb (B, >= terms), r (A, B): in
    numpy, or by `_horner_program` with the rows padded to `rows` (rounded up to HORNER_TILE) and
    the terms to HERMITE_TERMS_MAX (one shape for every block of a call)."""
    if not compiled:
        acc = np.multiply.outer(ca[:, terms - 1], cb[:, terms - 1])
        for k in range(terms - 2, -1, -1):
            acc *= r
            acc += np.multiply.outer(ca[:, k], cb[:, k])
        return acc
    n = ca.shape[0]
    size = -(-rows // HORNER_TILE) * HORNER_TILE
    ca_t, cb_t = np.zeros((HERMITE_TERMS_MAX, size)), np.zeros((HERMITE_TERMS_MAX, cb.shape[0]))
    ca_t[:terms, :n], cb_t[:terms] = ca[:, :terms].T, cb[:, :terms].T    # (all the terms: one shape)
    r_p = np.zeros((size, r.shape[1]))
    r_p[:n] = r
    return np.asarray(_horner_program(ca_t, cb_t, r_p, terms))[:n]


def _terms(top: float, tail_a, tail_b) -> int:
    """The fewest terms K (>= 1) with top^K tail_a[K] tail_b[K] <= HERMITE_TAIL: what the terms from
    K on add to an entry of correlation |rho| <= top, relative to sqrt(E f(u)^2 E f(v)^2), is at
    most |rho|^K times the two points' normalized tails (Cauchy-Schwarz)."""
    k = np.arange(tail_a.size)
    ok = np.flatnonzero(top ** k * tail_a * tail_b <= HERMITE_TAIL)
    return max(1, int(ok[0]) if ok.size else tail_a.size - 1)


def _unit_rule(act: "Activation", sa, sb, xi, w):
    """E[phi(s_a xi) phi(s_b xi)] and the same of phi' for pairs of signed standard deviations
    (s_b < 0: rho = -1), the one-dimensional rule, in blocks whose phi values stay within
    HERMITE_BLOCK."""
    out = [np.empty(sa.size), np.empty(sa.size)]
    rows = max(1, HERMITE_BLOCK // (2 * xi.size))
    for lo in range(0, sa.size, rows):
        sl = slice(lo, lo + rows)
        for o, fa, fb in zip(out, _values_padded(act, sa[sl], xi), _values_padded(act, sb[sl], xi)):
            o[sl] = np.sum(fa * fb * w, axis=1)
    return out


def mehler_kernels(act: "Activation", diag_a, diag_b, kx_ab, nodes: int = HERMITE_NODES):
    """(Phi0, G0, done): the lazy kernels on an (A, B) block of concrete covariances (host,
    float64) by Mehler's series where |rho| <= HERMITE_RHO_MAX, by the one-dimensional rule
    E[phi(s_a xi) phi(+-s_b xi)] where rho is +-1 (within SNAP_ULPS, as `Activation.lazy_kernels`
    takes it: a point with itself), both where the standard deviations are <= HERMITE_SD_MAX;
    NaN elsewhere (`done` False: the caller takes those from the grid). A zero variance has
    rho = 0 (its field is the constant 0). Rows go in blocks of at most HERMITE_BLOCK entries,
    each summed to the terms its own largest |rho| and its points' coefficient tails need
    (`_terms`; compiled where long, `_horner`); the columns' coefficients are computed once (2 B K
    values, K <= HERMITE_TERMS_MAX), and phi values only ever for a block of rows or columns, so
    memory is the blocks' and those coefficients' whatever A. nodes: the coefficients'
    trapezoid nodes (HERMITE_NODES; fewer only to measure the rule's error, `dmft.solve`'s
    info["lazy_kernels_error"])."""
    da, db = (np.asarray(d, np.float64) for d in (diag_a, diag_b))
    kab = np.asarray(kx_ab, np.float64)
    sa, sb = np.sqrt(np.maximum(da, 0.0)), np.sqrt(np.maximum(db, 0.0))
    phi, g = np.full(kab.shape, np.nan), np.full(kab.shape, np.nan)
    done = np.zeros(kab.shape, bool)
    if not kab.size:
        return phi, g, done
    rows = max(1, min(HERMITE_BLOCK // sb.size, HERMITE_BLOCK // nodes))
    blocks = []                                        # (rows, summed, unit, r, largest |rho|) per row block
    for lo in range(0, sa.size, rows):
        blk = slice(lo, lo + rows)
        root, rho = _safe_corr(da[blk, None], kab[blk], db[None, :], xp=np)
        narrow = (sa[blk, None] <= HERMITE_SD_MAX) & (sb[None, :] <= HERMITE_SD_MAX)
        unit = narrow & (root > 0) & (np.abs(kab[blk]) >= (1 - SNAP_ULPS * np.finfo(np.float64).eps) * root)
        summed = narrow & ~unit & (np.abs(rho) <= HERMITE_RHO_MAX)
        top = float(np.max(np.abs(rho[summed]), initial=0.0))
        blocks.append((blk, summed, unit, np.where(summed, rho, 0.0), top))
    xi, w, he = _hermite_rule(HERMITE_TERMS_MAX, nodes)
    tops = [b[4] for b in blocks if b[1].any()]
    if tops:
        # no block needs more terms than |rho|^K alone asks at the largest |rho| (the tails are <= 1)
        cap = _terms(max(tops), np.ones(HERMITE_TERMS_MAX + 1), np.ones(HERMITE_TERMS_MAX + 1))
        he = he[:, :cap]
        col, col_tail = _coefficients(act, sb, xi, w, he)            # (B, cap) of phi, of phi'; their tails
        # the sums' work, entries x terms (the rows' tails taken as the columns'): compiled from
        # HORNER_COMPILED_WORK
        work = sum(2 * b[3].size * _terms(b[4], col_tail[1], col_tail[1]) for b in blocks if b[1].any())
        compiled = jax.config.jax_enable_x64 and work >= HORNER_COMPILED_WORK
    for blk, summed, unit, r, top in blocks:
        if summed.any():
            row, row_tail = _coefficients(act, sa[blk], xi, w, he)
            for out, ca, cb, ta, tb in zip((phi, g), row, col, row_tail, col_tail):
                terms = 1 if top == 0 else _terms(top, ta, tb)
                acc = _horner(ca, cb, r, terms, rows, compiled)          # Horner in rho
                part = out[blk]
                part[summed] = acc[summed]
        if unit.any():
            i, j = np.nonzero(unit)
            sign = np.where(kab[blk][i, j] < 0, -1.0, 1.0)     # rho = -1: phi(-s xi)
            for out, v in zip((phi, g), _unit_rule(act, sa[blk][i], sign * sb[j], xi, w)):
                out[blk][i, j] = v
        done[blk] = summed | unit
    return phi, g, done


def piece_nodes(nodes: int) -> int:
    """Gauss-Legendre nodes per piece for a trapezoid-equivalent `nodes` per dimension: half of
    them (a piece is at most the whole line), at least PIECE_NODES."""
    return max(PIECE_NODES, -(-int(nodes) // 2))


def _pieces(breaks, t, w):
    """Gauss-Legendre nodes (..., pieces x n) and weights times the N(0, 1) density on
    [-L, b_1], [b_1, b_2], ..., [b_m, L] (L = GRID_HALF_WIDTH), for sorted breakpoints
    `breaks` (..., m) clipped to [-L, L] (a piece of length 0 has weight 0)."""
    L = GRID_HALF_WIDTH
    b = jnp.clip(breaks, -L, L)
    ends = jnp.full(b.shape[:-1] + (1,), L, b.dtype)
    lo = jnp.concatenate([-ends, b], axis=-1)
    hi = jnp.concatenate([b, ends], axis=-1)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    t, w = (jnp.reshape(a, (1,) * mid.ndim + (-1,)) for a in (t, w))
    x = mid[..., None] + half[..., None] * t
    wx = half[..., None] * w * jnp.exp(-x ** 2 / 2) / math.sqrt(2 * math.pi)
    return x.reshape(x.shape[:-2] + (-1,)), wx.reshape(wx.shape[:-2] + (-1,))


def piecewise_kernels(act: Activation, k11, k12, k22, nodes: int = 64):
    """(Phi0, G0) by Gauss-Legendre quadrature on the pieces between the activation's kinks.

    With u = sqrt(k11) xi1 and v = sqrt(k22) (rho xi1 + sqrt(1 - rho^2) xi2), the inner integral
    over xi2 is split where v crosses a kink (given xi1, those are points), the outer one over
    xi1 where u does, where v's kinks sit at xi2 = 0 (the inner integral's own kink when
    rho = +-1) and 10 eps either side of those, eps = sqrt(1 - rho^2) / |rho| being the width
    over which the inner integral crosses from one side of the kink to the other. Inside each
    piece the integrand is smooth, so the rule converges exponentially (1e-14 against the
    relu's closed form, also at rho = +-1; <= 5e-13 for kinks off 0 at |rho| -> 1).
    `nodes` is the trapezoid-equivalent count per dimension, raised by `grid_nodes` with
    concrete inputs; each piece gets `piece_nodes(nodes)`.
    """
    if not act.kinks:
        raise InputError(f"piecewise_kernels: activation {act.name!r} declares no kinks")
    k11, k12, k22, nodes = _grid_inputs(k11, k12, k22, nodes)
    t, w = np.polynomial.legendre.leggauss(piece_nodes(nodes))
    return _piecewise_grid(act, k11, k12, k22, jnp.asarray(t), jnp.asarray(w))


@jax.jit
def _piecewise_grid(act: Activation, k11, k12, k22, t, w):
    shape = k11.shape
    kinks = jnp.asarray(act.kinks, k11.dtype)
    m, n = kinks.shape[0], t.shape[0]
    s1 = jnp.sqrt(jnp.maximum(k11, 0.0)).reshape(-1)
    s2 = jnp.sqrt(jnp.maximum(k22, 0.0)).reshape(-1)
    # rho as the closed forms take it, k12 / sqrt(k11 k22): G0 has an infinite slope in rho at
    # +-1, where k12 / (sqrt(k11) sqrt(k22)) one ulp below 1 moved it by 3e-9
    rho = _safe_corr(k11, k12, k22)[1].reshape(-1)
    E = s1.shape[0]
    chunk = max(1, min(E, 2 ** 22 // ((4 * m + 1) * (m + 1) * n * n)))
    pad = (-E) % chunk
    flat = [jnp.pad(a, (0, pad)).reshape(-1, chunk) for a in (s1, s2, rho)]
    L = GRID_HALF_WIDTH

    def one_chunk(args):
        a1, a2, r = args
        c = jnp.sqrt(1.0 - r ** 2)
        far = jnp.full((a1.shape[0], m), L, a1.dtype)        # a breakpoint that splits nothing
        b_u = jnp.where(a1[:, None] > 0, kinks[None, :] / jnp.where(a1 > 0, a1, 1.0)[:, None], far)
        ok_v = (jnp.abs(r) > 0) & (a2 > 0)
        b_v = jnp.where(ok_v[:, None], kinks[None, :] / jnp.where(ok_v, r * a2, 1.0)[:, None], far)
        # the inner integral moves from one side of v's kink to the other over |xi1 - b_v| ~ eps
        # = sqrt(1 - rho^2) / |rho| (a step at rho = +-1): pieces of 10 eps either side resolve it
        eps = (c / jnp.where(ok_v, jnp.abs(r), 1.0))[:, None]
        flanks = jnp.where(ok_v[:, None], jnp.concatenate([b_v - 10 * eps, b_v + 10 * eps], axis=1), L)
        breaks = jnp.concatenate([b_u, b_v, flanks], axis=1)
        x1, w1 = _pieces(jnp.sort(jnp.clip(breaks, -L, L), axis=1), t, w)                  # (c, N1)
        ok_c = (c > 0) & (a2 > 0)
        safe_c = jnp.where(ok_c, c, 1.0)[:, None, None]
        b2 = jnp.where(ok_c[:, None, None],
                       (kinks[None, None, :] / jnp.where(a2 > 0, a2, 1.0)[:, None, None]
                        - r[:, None, None] * x1[..., None]) / safe_c,
                       L)                                                                  # (c, N1, m)
        x2, w2 = _pieces(b2, t, w)                                                         # (c, N1, N2)
        u = a1[:, None] * x1
        v = a2[:, None, None] * (r[:, None, None] * x1[..., None] + c[:, None, None] * x2)
        phi = jnp.sum(w1 * act(u) * jnp.sum(w2 * act(v), axis=-1), axis=-1)
        g = jnp.sum(w1 * act.derivative(u) * jnp.sum(w2 * act.derivative(v), axis=-1), axis=-1)
        return phi, g

    phi, g = jax.lax.map(one_chunk, tuple(flat))
    return phi.reshape(-1)[:E].reshape(shape), g.reshape(-1)[:E].reshape(shape)


def _piecewise_mean(act: Activation, k, n: int):
    """E[phi(u)], u ~ N(0, k), by Gauss-Legendre on the pieces between the kinks."""
    t, w = np.polynomial.legendre.leggauss(n)
    s = jnp.sqrt(jnp.maximum(k, 0.0))
    kinks = jnp.asarray(act.kinks, s.dtype).reshape((1,) * s.ndim + (-1,))
    b = jnp.where(s[..., None] > 0, kinks / jnp.where(s > 0, s, 1.0)[..., None], GRID_HALF_WIDTH)
    x, wx = _pieces(b, jnp.asarray(t, s.dtype), jnp.asarray(w, s.dtype))
    return jnp.sum(wx * act(s[..., None] * x), axis=-1)


# ---------------------------------------------------------------- closed forms

def _safe_corr(k11, k12, k22, xp=jnp):
    # sqrt(k11 k22), as a product of roots where k11 k22 would overflow or underflow (fields of
    # variance ~1e160 or ~1e-160: relu's kernels are finite there, and scale with it); xp: jnp, or
    # np on host arrays
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        prod = k11 * k22
        normal = (prod >= xp.finfo(prod.dtype).tiny) & (prod <= xp.finfo(prod.dtype).max)
        roots = xp.where(k11 == k22, xp.maximum(k11, 0.0),        # (a diagonal stays exact, as sqrt(k^2) is)
                         xp.sqrt(xp.maximum(k11, 0.0)) * xp.sqrt(xp.maximum(k22, 0.0)))
        s = xp.where(normal, xp.sqrt(xp.where(normal, prod, 1.0)), roots)
        c = xp.where(s > 0, k12 / xp.where(s > 0, s, 1.0), 0.0)
    return s, xp.clip(c, -1.0, 1.0)


def _linear_lazy(k11, k12, k22):
    return k12 * jnp.ones_like(k11), jnp.ones_like(k12 * k11)


def _relu_lazy(k11, k12, k22):
    # arc-cosine kernels of order 1 (Phi0) and order 0 (G0) (docs/derivations.md)
    s, c = _safe_corr(k11, k12, k22)
    theta = jnp.arccos(c)
    phi = s / (2 * jnp.pi) * (jnp.sin(theta) + (jnp.pi - theta) * c)
    g = jnp.where(s > 0, (jnp.pi - theta) / (2 * jnp.pi), 0.0)
    return phi, g


def _erf_lazy(k11, k12, k22):
    # arcsine kernel and its derivative kernel (docs/derivations.md), in units of m = max(1, k11,
    # k22), with (1 + 2 k11)(1 + 2 k22) - 4 k12^2 as 1 + 2 (k11 + k22) + 4 (k11 k22 - k12^2): the
    # determinant is exactly 0 on the diagonal, where the difference of squares lost every digit
    # at field variance ~1e10 and overflowed at ~1e154; and arcsin(x) as atan2(x, sqrt(1 - x^2))
    # from that difference (arcsin near 1 lost half the digits: 2e-10 at variance 1e13)
    m = jnp.maximum(jnp.maximum(k11, k22), 1.0)
    a11, a12, a22, u = k11 / m, k12 / m, k22 / m, 1.0 / m
    diag = u * u + 2 * u * (a11 + a22)
    inner = diag + 4 * (a11 * a22 - a12 ** 2)
    # (a determinant below 0 by rounding is taken as 0 where it would leave nothing: a clip of the
    # determinant itself halved the gradient where it is exactly 0, on the diagonal)
    rest = jnp.sqrt(jnp.where(inner > 0, inner, diag))
    phi = 2 / jnp.pi * jnp.arctan2(2 * a12, rest)
    g = 4 / jnp.pi / (m * rest)
    return phi, g


def _poly2_lazy(k11, k12, k22, alpha, beta):
    # phi = alpha h + beta h^2: Isserlis' theorem
    phi = alpha ** 2 * k12 + beta ** 2 * (k11 * k22 + 2 * k12 ** 2)
    g = alpha ** 2 + 4 * beta ** 2 * k12
    return phi, g


def _zero_mean(k, *params):
    return jnp.zeros_like(jnp.asarray(k, dtype=float))


def _relu(h):
    return jnp.maximum(h, 0.0)


def _relu_d(h):
    return (jnp.asarray(h) > 0).astype(jnp.result_type(h, float))


def _tanh_d(h):
    return 1.0 - jnp.tanh(h) ** 2


def _erf_d(h):
    return 2.0 / jnp.sqrt(jnp.pi) * jnp.exp(-jnp.asarray(h) ** 2)


def _identity(h):
    return jnp.asarray(h) * 1.0


def _ones(h):
    # not jnp.ones_like: XLA:CPU (jax 0.10) simplifies a product with a constant ones array into a
    # reduction that comes out NaN, or finite and wrong, in some shapes (vmapped over seeds, the
    # networks' gradient kernel (phi' * m) phi'^T / N for 2+ outputs at seeds x width >= 4096:
    # every seed flagged diverged; alignment -0.0 against 0.27). h * 0 + 1 is not a constant to
    # XLA (it is NaN where h is not finite, where the run has gone bad anyway).
    h = jnp.asarray(h, dtype=float)
    return h * 0 + 1


def _poly2_mean(k, alpha, beta):
    return beta * jnp.asarray(k)


def _relu_mean(k):
    return jnp.sqrt(jnp.maximum(k, 0.0) / (2 * jnp.pi))


def _poly2(h, alpha, beta):
    return alpha * h + beta * h * h


def _poly2_d(h, alpha, beta):
    return alpha + 2 * beta * h


def linear() -> Activation:
    """phi(h) = h."""
    return Activation("linear", _identity, (), _ones, _linear_lazy, _zero_mean, degree=1)


def relu() -> Activation:
    """phi(h) = max(h, 0), phi'(0) = 0."""
    return Activation("relu", _relu, (), _relu_d, _relu_lazy, _relu_mean)


def tanh() -> Activation:
    """phi(h) = tanh(h); lazy kernels by the trapezoid rule (`trapezoid_kernels`)."""
    return Activation("tanh", jnp.tanh, (), _tanh_d, None, _zero_mean)


def erf() -> Activation:
    """phi(h) = erf(h); arcsine kernels in closed form."""
    return Activation("erf", jax.scipy.special.erf, (), _erf_d, _erf_lazy, _zero_mean)


def softplus() -> Activation:
    """phi(h) = log(1 + e^h); lazy kernels by the trapezoid rule (`trapezoid_kernels`)."""
    return Activation("softplus", jax.nn.softplus, (), jax.nn.sigmoid, None, None)


def quadratic(eps: float) -> Activation:
    """phi(h) = h + (eps / 2) h^2, the toy model of Kumar et al. (2024)."""
    eps = _check_param("eps", eps)
    return Activation("quadratic", _poly2, (1.0, eps / 2.0), _poly2_d, _poly2_lazy,
                      _poly2_mean, degree=2)


def square() -> Activation:
    """phi(h) = h^2 (modular-arithmetic networks, Gromov 2023)."""
    return Activation("square", _poly2, (0.0, 1.0), _poly2_d, _poly2_lazy,
                      _poly2_mean, degree=2)


# a declared derivative is compared with JAX's derivative of the callable on this grid (shifted
# off the usual kink places 0 and +-1), at the points farther than DERIVATIVE_KINK_GAP from a
# declared kink, to DERIVATIVE_RTOL of the larger of 1 and its largest value there
DERIVATIVE_GRID = np.linspace(-3.0, 3.0, 25) + 0.0123
DERIVATIVE_KINK_GAP = 1e-2
DERIVATIVE_RTOL = 1e-4


def _check_declared_derivative(fn, derivative, kinks) -> None:
    """Refuse a `derivative` that is not the callable's own away from its kinks: the DMFT (and its
    lazy limit) integrate with the declared one while `networks.train` trains by JAX's gradient of
    the callable, so the two would solve different problems and agree by chance (sin with a
    derivative of 0: the DMFT's first layer never moved, the networks' moved by 0.5; with
    4 seeds the validate checks passed). At a kink the convention is the user's to choose."""
    h = jnp.asarray(DERIVATIVE_GRID)
    try:
        auto = jnp.asarray(jax.jvp(fn, (h,), (jnp.ones_like(h),))[1])
    except Exception:  # noqa: BLE001 - not differentiable by JAX: the networks will say so themselves
        return
    declared = jnp.asarray(derivative(h))
    keep = np.ones(h.shape, bool)
    for k in kinks:
        keep &= np.abs(np.asarray(h) - k) > DERIVATIVE_KINK_GAP
    keep &= np.asarray(jnp.isfinite(auto))
    if not keep.any():
        return
    a, d, x = np.asarray(auto)[keep], np.asarray(declared)[keep], np.asarray(h)[keep]
    scale = max(1.0, float(np.max(np.abs(a))))
    bad = np.abs(d - a) > DERIVATIVE_RTOL * scale
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            f"activation derivative: not the callable's derivative: at h = {x[i]:.4g} it gives {d[i]:.6g} where "
            f"JAX's derivative of the callable is {a[i]:.6g} ({int(bad.sum())} of {bad.size} points on [-3, 3] away "
            "from the declared kinks differ). The DMFT would integrate with the declared one and the networks "
            "train with the callable's own gradient: fix derivative=, or leave it out (JAX's is then used); at "
            "a kink, declare it in kinks= and the convention there is yours")


def custom(fn: Callable, name: str | None = None, derivative: Callable | None = None,
           kinks=()) -> Activation:
    """An activation from an elementwise callable; kernels by quadrature.

    The callable (and the derivative, when given) is checked once on a few values: it must map
    a float array to a finite, real, floating array of the same shape, each value from its own
    input alone (h - h.mean() is refused), and trace inside a compiled JAX program (jax.numpy,
    not numpy), where the solvers call it.

    kinks: the points where phi or phi' is not smooth (0 for a leaky relu, -1 and 1 for a hard
    tanh; at most MAX_KINKS). The quadrature is then exact to ~1e-13 across them (kinks within
    the +-9 standard deviations it spans); undeclared, a kink costs the trapezoid rule 1e-2
    (relu), which the solvers measure and warn about. At a zero-variance field phi'(kink) is
    what JAX's derivative of fn gives there (jnp.maximum(h, 0): 1/2; jnp.where(h > 0, h, 0):
    0, as the built-in relu), unless `derivative` is given. A given `derivative` must be fn's own
    away from the declared kinks (checked on [-3, 3]: the networks train by JAX's gradient of fn,
    the DMFT with the declared one); at a kink its value is the convention the solvers use.

    Example:
        >>> import jax.numpy as jnp
        >>> leaky = custom(lambda h: jnp.where(h > 0, h, 0.1 * h), "leaky_relu", kinks=[0.0])
        >>> leaky
        Activation(leaky_relu, kinks=[0])
    """
    kinks = _check_kinks(kinks)
    if not callable(fn):
        raise InputError(f"activation: expected a name, an Activation or a callable, got {fn!r}")
    if derivative is not None and not callable(derivative):
        raise InputError(f"activation derivative: expected a callable, got {derivative!r}")
    if name is not None and not (isinstance(name, str) and name.strip()):
        raise InputError(f"name: expected a non-empty str (or None: the callable's own name), got {name!r}")
    probe = jnp.linspace(-3.0, 3.0, 7)
    for what, f in (("activation", fn), ("activation derivative", derivative)):
        if f is None:
            continue
        try:
            raw = f(probe)
            out = jnp.asarray(raw)
        except Exception as err:  # noqa: BLE001 - report any failure of user code clearly
            raise InputError(f"{what}: the callable failed on a float array: {err}") from err
        if out.shape != probe.shape:
            raise InputError(f"{what}: the callable must be elementwise (got shape {out.shape} for "
                             f"input shape {probe.shape})")
        if not jnp.issubdtype(out.dtype, jnp.floating):
            raise InputError(f"{what}: the callable must return real floating values, got dtype {out.dtype}")
        if not bool(jnp.all(jnp.isfinite(out))):
            raise InputError(f"{what}: the callable must be finite on [-3, 3]")
        # the solvers call it inside compiled programs: a numpy function returns a numpy array
        # here and cannot be traced (refused as it is: tracing a bare numpy ufunc twice crashed
        # the process); any other is traced once
        untraceable = None if isinstance(raw, jax.Array) else f"it returned a {type(raw).__name__}"
        if untraceable is None:
            try:
                jax.eval_shape(lambda h: f(h), probe)     # noqa: B023 - called at once
            except Exception as err:  # noqa: BLE001
                untraceable = type(err).__name__
        if untraceable is not None:
            raise InputError(f"{what}: the callable runs on arrays but not inside a compiled JAX "
                             "program, where the solvers call it: write it with jax.numpy (not numpy, "
                             f"and no Python branch on values) ({untraceable})")
        # each value its own: f(h)[i] must depend on h[i] alone (h - h.mean() kept the shape, and
        # the DMFT and the networks then computed different things)
        mixed = probe[jnp.asarray([3, 0, 6, 1, 5, 2, 4])]          # (out of order: a sort is not elementwise)
        whole = jnp.asarray(f(mixed))
        alone = jnp.concatenate([jnp.ravel(jnp.asarray(f(mixed[i:i + 1]))) for i in range(mixed.size)])
        if alone.shape != whole.shape or not bool(jnp.allclose(alone, whole, rtol=1e-5, atol=1e-6)):
            raise InputError(f"{what}: the callable must be elementwise: on [-3, 3] its value at each point "
                             "changed with the other points of the array (f(h)[i] must depend on h[i] alone)")
    label = name or getattr(fn, "__name__", "custom")
    if isinstance(label, str) and label.lower() in (*_BUILTIN, "quadratic"):
        # results record the activation by its name: a custom one named relu reads back as the
        # built-in relu (validation.compare paired them, Run.predict rebuilt the built-in)
        raise InputError(f"activation: a custom activation named {label!r} would be recorded as the built-in "
                         f"{label.lower()!r}: pass the name {label.lower()!r} for the built-in, or name yours otherwise: "
                         f"dmft.activations.custom(fn, name='my_{label}')")
    if derivative is not None:
        _check_declared_derivative(fn, derivative, kinks)
    act = Activation(label, fn, (), derivative, None, None, None, kinks)
    try:
        d = jnp.asarray(act.derivative(probe))
    except Exception as err:  # noqa: BLE001
        raise InputError(f"activation: cannot differentiate the callable ({err}); pass derivative=") from err
    if not (jnp.issubdtype(d.dtype, jnp.floating) and bool(jnp.all(jnp.isfinite(d)))):
        raise InputError("activation: its derivative is not finite and real on [-3, 3]; pass derivative=")
    return act


def _check_kinks(kinks) -> tuple:
    """Declared kinks as a sorted tuple of distinct finite floats (InputError otherwise)."""
    if isinstance(kinks, (str, bytes)) or not hasattr(kinks, "__iter__"):
        kinks = [kinks]
    vals = []
    for i, k in enumerate(kinks):
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, float, np.integer, np.floating)):
            raise InputError(f"kinks[{i}]: expected a real number, got {k!r}")
        vals.append(_check_param(f"kinks[{i}]", k))
    vals = sorted(set(vals))
    if len(vals) > MAX_KINKS:
        raise InputError(f"kinks: at most {MAX_KINKS} (each adds quadrature pieces), got {len(vals)}")
    return tuple(vals)


def _check_param(name, value):
    if isinstance(value, (str, bytes, bool, np.bool_)):        # (float() reads "0.1" and True)
        raise InputError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be a real number, got {value!r}") from err
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {v}")
    return v


_BUILTIN = {"linear": linear, "relu": relu, "tanh": tanh, "erf": erf, "softplus": softplus,
            "square": square}


def names() -> tuple[str, ...]:
    """Names accepted by `get`."""
    return tuple(sorted(_BUILTIN))


def get(activation) -> Activation:
    """An Activation from a name, an Activation, or an elementwise callable."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        key = activation.lower()
        if key not in _BUILTIN:
            raise InputError(f"activation: unknown name {activation!r}; known: {', '.join(names())}"
                             " (or dmft.activations.quadratic(eps), or a callable)")
        return _BUILTIN[key]()
    if callable(activation):
        return custom(activation)
    raise InputError(f"activation: expected a name, an Activation or a callable, got {activation!r}")
