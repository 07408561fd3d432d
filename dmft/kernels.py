"""Kernels of docs/conventions.md ("Kernels and measures") and the exact lazy kernels
(docs/derivations.md, section 2).

Example:
    >>> import jax.numpy as jnp
    >>> from dmft import kernels
    >>> K = jnp.eye(3); y = jnp.array([1.0, -1.0, 0.0])
    >>> round(float(kernels.alignment(K, y)), 6)   # y^T K y / (|K|_F |y|^2)
    0.57735
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .activations import HERMITE_MIN_ENTRIES, grid_nodes, mehler_kernels
from .errors import InputError
from .runner import exact_products

__all__ = ["input_kernel", "field_basis", "lazy_kernels", "lazy_ntk", "alignment"]


def _real_array(name: str, value, like=jnp):
    """`value` as an array of real numbers (`like.asarray`: jnp or np), an InputError naming
    `name` for None, text, booleans, complex numbers or anything else that is not one. A traced
    value is returned as it is (its dtype and shape are static: the caller checks those)."""
    if isinstance(value, jax.core.Tracer):
        return value
    if value is None or isinstance(value, (str, bytes)):
        raise InputError(f"{name} must be an array of real numbers, got {value!r}")
    try:
        # (through numpy first: jnp.asarray reads a list of text such as ["f8"] as a dtype)
        arr = value if isinstance(value, jax.Array) else np.asarray(value)
        if arr.dtype == object:
            arr = arr.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be an array of real numbers, got {type(value).__name__} "
                         f"{value!r}") from None
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise InputError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    return like.asarray(arr)


def _finite(name: str, arr, like=jnp) -> None:
    """InputError naming `name` when a concrete array holds NaN or inf (a traced one is skipped:
    its values are not known until it runs)."""
    if not isinstance(arr, jax.core.Tracer) and not bool(like.all(like.isfinite(arr))):
        raise InputError(f"{name} must be finite, got NaN or inf")


def _points(name: str, x, like=jnp):
    """Points as a (P, D) real array with D >= 1, concrete ones finite (InputError naming `name`)."""
    x = _real_array(name, x, like)
    if x.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (points, dimensions), got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise InputError(f"{name} must have at least one dimension (column), got shape {tuple(x.shape)}")
    _finite(name, x, like)
    return x


@exact_products
def input_kernel(xa, xb=None):
    """K^x = xa xb^T / D (docs/conventions.md).

    xa: (A, D), xb: (B, D) or None (xa again), real; concrete inputs must be finite (InputError
    naming the argument). Inputs that are not JAX arrays (numpy, lists) are multiplied on the host
    in float64 and returned as a JAX array: eagerly, JAX compiles its check and product anew for
    every shape (a scan over 100 training-set sizes spent 29 s of its 39 s of setup here)."""
    host = not isinstance(xa, jax.Array) and not isinstance(xb, jax.Array)
    like = np if host else jnp
    xa = _points("xa", xa, like)
    if xb is None:
        xb = xa
    else:
        xb = _points("xb", xb, like)
        if xb.shape[1] != xa.shape[1]:
            raise InputError(f"xb must have the dimension of xa ({xa.shape[1]} columns), got shape "
                             f"{tuple(xb.shape)}")
    if host:
        xa, xb = np.asarray(xa, np.float64), np.asarray(xb, np.float64)
        return jnp.asarray(xa @ xb.T / xa.shape[1])
    return xa @ xb.T / xa.shape[1]


def field_basis(x_all) -> tuple[np.ndarray, str]:
    """A factor L with L L^T = K^x on all points.

    The first-layer field of a neuron on every point is h = L z with
    z ~ N(0, I_r): for D <= number of points, L = x / sqrt(D) and z is the
    weight vector itself; otherwise L comes from the eigendecomposition of
    K^x and z are the weights' coordinates in the span of the data (the rest
    of w never reaches the outputs). r = min(D, number of points).

    Returns:
        (L, kind) with kind "weights" or "kernel-eigenbasis".

    x_all must be a finite real (points, D) array, D >= 1 (InputError naming it).
    """
    x_all = np.asarray(_points("x_all", x_all, np), dtype=np.float64)
    n, d = x_all.shape
    if d <= n:
        return x_all / np.sqrt(d), "weights"
    kx = x_all @ x_all.T / d
    lam, vec = np.linalg.eigh(kx)
    return vec * np.sqrt(np.clip(lam, 0.0, None)), "kernel-eigenbasis"


@exact_products
def lazy_kernels(activation, kx_ab, diag_a, diag_b, nodes: int = 48):
    """Exact Phi0 = E[phi(u_a) phi(u_b)], G0 = E[phi'(u_a) phi'(u_b)], u ~ N(0, K^x).

    Args:
        activation: a `dmft.activations.Activation`.
        kx_ab: (A, B) input-kernel block.
        diag_a, diag_b: (A,), (B,) input-kernel diagonals of the two point sets.
        nodes: the grid's nodes per dimension when there is no closed form (raised with the
            variance for concrete inputs, `dmft.activations.grid_nodes`).

    Without a closed form or declared kinks, concrete inputs of at least HERMITE_MIN_ENTRIES
    entries take Mehler's series (`_series_and_grid`; docs/derivations.md), traced ones the grid.
    """
    k11 = jnp.asarray(diag_a)[:, None]
    k22 = jnp.asarray(diag_b)[None, :]
    if activation.quadrature == "trapezoid" and np.size(kx_ab) >= HERMITE_MIN_ENTRIES and not any(
            isinstance(v, jax.core.Tracer) for v in (kx_ab, diag_a, diag_b, *jax.tree_util.tree_leaves(activation))):
        return _series_and_grid(activation, k11, jnp.asarray(kx_ab), k22, nodes)
    return activation.lazy_kernels(k11, jnp.asarray(kx_ab), k22, nodes=nodes)


@functools.partial(jax.jit, static_argnames=("nodes",))
def _grid_entries(activation, k11, k12, k22, *, nodes: int):
    """The grid's kernels on a list of entries, one compiled program (op by op, its snapping and
    correlations compiled some 30 small programs: 1.5 s)."""
    return activation.lazy_kernels(k11, k12, k22, nodes=nodes)


def _series_and_grid(activation, k11, k12, k22, nodes: int):
    """Concrete covariances of an activation without a closed form or kinks, at least
    HERMITE_MIN_ENTRIES of them: Mehler's series where it converges fast, and its one-dimensional
    rule at rho = +-1 (`dmft.activations.mehler_kernels`: |rho| <= 0.9, standard deviations <= 4;
    1e-15 from a 512-node grid); the grid, at the node count of the whole block, for the rest (near
    duplicates, wide inputs), those entries padded to a power of two (few compiled shapes)."""
    dt = jnp.result_type(k12, float)
    phi, g, summed = mehler_kernels(activation, k11[:, 0], k22[0, :], k12)
    rest = np.flatnonzero(~summed)
    if rest.size:
        size = max(8, 1 << int(rest.size - 1).bit_length())
        pick = np.concatenate([rest, np.full(size - rest.size, rest[0])])
        a, b = np.unravel_index(pick, summed.shape)
        k11_all = np.broadcast_to(np.asarray(k11), summed.shape)
        k22_all = np.broadcast_to(np.asarray(k22), summed.shape)
        top = max(float(np.max(k11_all)), float(np.max(k22_all)))
        grid = _grid_entries(activation, jnp.asarray(k11_all[a, b]), jnp.asarray(np.asarray(k12)[a, b]),
                             jnp.asarray(k22_all[a, b]), nodes=grid_nodes(top, nodes))
        phi.flat[rest], g.flat[rest] = (np.asarray(v)[:rest.size] for v in grid)
    return jnp.asarray(phi, dt), jnp.asarray(g, dt)


def lazy_ntk(phi0, g0, kx, trained_readout: bool):
    """K0 = Phi0 + G0 * K^x (trained readouts) or G0 * K^x (fixed readouts)."""
    k = g0 * kx
    return k + phi0 if trained_readout else k


@exact_products
def alignment(K, y):
    """Kernel-target alignment A(K, y) = y^T K y / (||K||_F ||y||^2).

    K: (..., P, P); y: (P,) or (P, C) (summed over outputs). Batched over K's
    leading axes. A zero target or a zero kernel aligns with nothing: 0 (not 0/0); a kernel
    holding NaN gives NaN.
    """
    K = _real_array("K", K)
    y = _real_array("y", y)
    # (shapes only: this runs on traced kernels inside the solvers' records)
    if K.ndim < 2 or K.shape[-1] != K.shape[-2]:
        raise InputError(f"K must be a (..., P, P) array of square kernels, got shape {tuple(K.shape)}")
    if y.ndim not in (1, 2) or y.shape[0] != K.shape[-1]:
        raise InputError(f"y must be a ({K.shape[-1]},) or ({K.shape[-1]}, C) array (P = {K.shape[-1]} "
                         f"points, as K), got shape {tuple(y.shape)}")
    y = y[:, None] if y.ndim == 1 else y
    num = jnp.einsum("pc,...pq,qc->...", y, K, y)
    den = jnp.sqrt(jnp.sum(K * K, axis=(-2, -1))) * jnp.sum(y * y)
    return jnp.where(den == 0, 0.0, num / jnp.where(den == 0, 1.0, den))
