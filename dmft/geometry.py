"""What a solve needs from the data and the lazy limit, computed once per problem.

`geometry(data)` holds everything that depends on the inputs and targets only: the
field basis L (h = L z on all points, `kernels.field_basis`), the input kernel K^x
and its diagonal, the targets. `lazy_setup(geo, activation, gamma0, ...)` adds the
exact lazy kernels Phi0, G0, the NTK K0 and the output at t = 0 (docs/conventions.md,
"Kernels and measures"; docs/derivations.md, lazy limit). Both are traceable in the
activation parameters and gamma0, so `dmft.solve_batch` vmaps over them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .activations import HERMITE_MIN_ENTRIES, grid_nodes
from .kernels import field_basis, input_kernel, lazy_kernels, lazy_ntk
from .problem import Dataset

__all__ = ["geometry", "lazy_setup", "lazy_setup_compiled", "host_kernels", "series_setup", "dtype",
           "new_point_basis"]


def dtype():
    """The float type JAX uses now (float64 when the entry point enabled x64)."""
    return jnp.result_type(float)


def geometry(data: Dataset) -> dict:
    """Arrays that depend on the inputs and targets only (numpy, once per dataset).

    Keys: l_all (P + P*, r) field basis, basis ("weights" or "kernel-eigenbasis"),
    kx_all_tr (P + P*, P) input kernel, diag (P + P*,) its diagonal, y (P, C) targets,
    P, r.
    """
    dt = dtype()
    x_tr = np.asarray(data.x_train, dtype=np.float64)
    x_all = x_tr if data.x_test is None else np.concatenate(
        [x_tr, np.asarray(data.x_test, dtype=np.float64)])
    l_all, basis = field_basis(x_all)
    return {"l_all": jnp.asarray(l_all, dt), "basis": basis,
            "kx_all_tr": jnp.asarray(input_kernel(x_all, x_tr), dt),
            "diag": jnp.asarray(np.sum(x_all * x_all, axis=1) / data.D, dt),
            "y": jnp.asarray(data.targets("train"), dt), "P": data.P, "r": l_all.shape[1]}


def lazy_setup(geo: dict, act, gamma0, *, centered: bool, trained: bool, nodes: int) -> dict:
    """Lazy kernels and f(0) for one activation and gamma0 (traceable: these may be traced).

    Adds phi0, g0 (P + P*, P), k0 (P + P*, P) and f0 (P + P*, C) to `geo`.
    """
    P = geo["P"]
    diag = geo["diag"]
    # (geo["lazy_kernels"]: (Phi0, G0) computed on the host before the trace, `host_kernels`)
    phi0, g0 = geo.get("lazy_kernels") or lazy_kernels(act, geo["kx_all_tr"], diag, diag[:P], nodes=nodes)
    # quadrature is not exactly symmetric in (mu, nu): symmetrize the train block (built as a
    # new array: an in-place `.at[:P].set` that reads its own transpose is not symmetric under jit)
    phi0 = jnp.concatenate([(phi0[:P] + phi0[:P].T) / 2, phi0[P:]])
    g0 = jnp.concatenate([(g0[:P] + g0[:P].T) / 2, g0[P:]])
    k0 = lazy_ntk(phi0, g0, geo["kx_all_tr"], trained)
    c = geo["y"].shape[1]
    f0 = initial_output(act, diag, gamma0, c, centered=centered, trained=trained)
    return {**geo, "phi0": phi0, "g0": g0, "k0": k0, "f0": f0}


def series_setup(geo: dict, act) -> bool:
    """Whether a setup's lazy kernels (all points against the training points) come from Mehler's
    series: an activation without a closed form or kinks, at least HERMITE_MIN_ENTRIES entries
    (`dmft.kernels.lazy_kernels` with concrete inputs; geo: `geometry`'s or a setup's dict)."""
    return act.quadrature == "trapezoid" and geo["diag"].size * geo["P"] >= HERMITE_MIN_ENTRIES


def host_kernels(geo: dict, act, nodes: int):
    """(Phi0, G0) on all points against the training points, computed before any trace where
    that is faster (`series_setup`); None otherwise (the traced program computes them on its
    grid)."""
    if not series_setup(geo, act):
        return None
    P = geo["P"]
    return lazy_kernels(act, geo["kx_all_tr"], geo["diag"], geo["diag"][:P], nodes=nodes)


@functools.partial(jax.jit, static_argnames=("P", "trained", "nodes"))
def _kernels_program(kx_all_tr, diag, act, raw, *, P: int, trained: bool, nodes: int) -> dict:
    su = lazy_setup({"kx_all_tr": kx_all_tr, "diag": diag, "y": jnp.zeros((P, 1), diag.dtype), "P": P,
                     "lazy_kernels": raw}, act, 1.0, centered=True, trained=trained, nodes=nodes)
    return {k: su[k] for k in ("phi0", "g0", "k0")}


def lazy_setup_compiled(geo: dict, act, gamma0, *, centered: bool, trained: bool, nodes: int) -> dict:
    """`lazy_setup` with its kernels as one compiled program per shape, activation and node count
    (the activation's parameters are arguments; op by op they compiled some 15 small programs).
    The node count of a quadrature rule is raised by `grid_nodes` for the largest variance
    first, as `lazy_setup` does with concrete inputs (traced ones keep `nodes`); a closed form
    keeps it (no warning about nodes it does not use, and one program for every data scale);
    f(0) is computed as there."""
    if act.quadrature != "closed form" and geo["diag"].size:       # (a closed form uses no nodes)
        nodes = grid_nodes(float(jnp.max(geo["diag"])), nodes)
    raw = host_kernels(geo, act, nodes)
    kern = _kernels_program(geo["kx_all_tr"], geo["diag"], act, raw, P=geo["P"], trained=trained, nodes=nodes)
    f0 = initial_output(act, geo["diag"], gamma0, geo["y"].shape[1], centered=centered, trained=trained)
    return {**geo, **kern, "f0": f0}


def initial_output(act, diag, gamma0, c: int, *, centered: bool, trained: bool):
    """f(x; theta_0) at infinite width on points with input-kernel diagonal `diag`:
    zero when centered or with trained readouts, else E[phi(u)] / gamma0 (fixed readouts)."""
    if centered or trained:
        return jnp.zeros((diag.shape[0], c), diag.dtype)
    return jnp.broadcast_to(jnp.asarray(act.mean(diag), diag.dtype)[:, None] / gamma0,
                            (diag.shape[0], c))


def new_point_basis(data: Dataset, basis: str, x_new) -> tuple[np.ndarray, np.ndarray]:
    """Field-basis rows of new inputs, and the input-kernel variance outside the data span.

    With h = L z on the data, a new input x has h(x) = L_x z + h_perp: L_x = x W / sqrt(D)
    for the weight basis (h_perp = 0), and for the kernel eigenbasis L_x = K^x(x, all) V
    lam^{-1/2} (the coordinates of x in the span of the data) with h_perp independent of
    z, of variance |x|^2 / D - |L_x|^2 (the weights outside the span never move but decay).

    Returns (L_x (n, r), perp variance (n,): the diagonal of the perp covariance, all a
    prediction reads; the (n, n) matrix took 2.4 GB at n = 16000).
    """
    x_tr = np.asarray(data.x_train, dtype=np.float64)
    x_all = x_tr if data.x_test is None else np.concatenate([x_tr, np.asarray(data.x_test, np.float64)])
    x_new = np.asarray(x_new, dtype=np.float64)
    d = x_all.shape[1]
    if basis == "weights":
        return x_new / np.sqrt(d), np.zeros(x_new.shape[0])
    kx = x_all @ x_all.T / d
    lam, vec = np.linalg.eigh(kx)
    keep = lam > lam.max() * 1e-12
    coef = (x_new @ x_all.T / d) @ vec[:, keep] / np.sqrt(lam[keep])
    l_new = np.zeros((x_new.shape[0], lam.size))
    l_new[:, keep] = coef
    # the projection of x_new on the data span, and the rest
    proj = coef @ (vec[:, keep] / np.sqrt(lam[keep])).T @ x_all / np.sqrt(d)   # rows: x_par / sqrt(D)
    perp = x_new / np.sqrt(d) - proj
    return l_new, np.einsum("nd,nd->n", perp, perp)
