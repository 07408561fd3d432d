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

import jax.numpy as jnp
import numpy as np

from .runner import exact_products

__all__ = ["input_kernel", "field_basis", "lazy_kernels", "lazy_ntk", "alignment"]


@exact_products
def input_kernel(xa, xb=None):
    """K^x = xa xb^T / D (docs/conventions.md)."""
    xa = jnp.asarray(xa)
    xb = xa if xb is None else jnp.asarray(xb)
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
    """
    x_all = np.asarray(x_all, dtype=np.float64)
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
        nodes: Gauss-Hermite nodes per dimension when there is no closed form.
    """
    k11 = jnp.asarray(diag_a)[:, None]
    k22 = jnp.asarray(diag_b)[None, :]
    return activation.lazy_kernels(k11, jnp.asarray(kx_ab), k22, nodes=nodes)


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
    K = jnp.asarray(K)
    y = jnp.asarray(y)
    y = y[:, None] if y.ndim == 1 else y
    num = jnp.einsum("pc,...pq,qc->...", y, K, y)
    den = jnp.sqrt(jnp.sum(K * K, axis=(-2, -1))) * jnp.sum(y * y)
    return jnp.where(den == 0, 0.0, num / jnp.where(den == 0, 1.0, den))
