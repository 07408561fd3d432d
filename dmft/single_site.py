"""The sampled two-layer single site: forward integration and self-consistent iteration.

docs/derivations.md, sections 1-3. A node of the single-site law carries z (first-layer
coordinates; the fields on all points are h = L z) and readouts a. Given the
shared error Delta_mu = y_mu - f_mu, gradient descent with step eta0 moves it by

    a <- (1 - eta0 kappa) a + eta0 (gamma0 / P) sum_mu Delta_mu phi(h_mu)
    z <- (1 - eta0 kappa) z + eta0 (gamma0 / P) sum_mu (a . Delta_mu) phi'(h_mu) L_mu

and f_mu = (1 / gamma0) <a phi(h_mu)> (minus its t = 0 value) closes the loop.
The population average <.> is estimated on weighted nodes (`sampling`) with
a control variate: the exact lazy NTK K0 is known (`kernels.lazy_kernels`),
so the estimator

    f(t) = f(0) + (<a phi(h)>_t - <a phi(h)>_0) / gamma0 + (K0 - K0_nodes) S(t) / P,
    S(t) = int_0^t Delta ds  (eta0 sum_k Delta_k for gradient descent)

is exact in the lazy limit and keeps the sampling error proportional to the
kernel's movement. The kernels reported at save points carry the same
correction. Everything is vmapped over independent replicas of the nodes.

With precision="mixed" (`Shared.l_lo`, a float32 copy of the field basis) the step's
node products (fields, phi, the node sums and gradients) run in float32 while the nodes and S
accumulate in float64; so do a record's (its kernel sums and test fields, most of its cost),
each sum returned in float64 (the difference from "full" is ~1e-7 relative, far below the
sampling error).

Two solvers share the step:
- forward: Delta from the current estimate at every step (`run_saved`);
- iterate: Delta(t) guessed for all steps, the nodes integrated against it,
  kernels and Delta recomputed and mixed with damping, in a `lax.while_loop`
  until the relative change is below tol (Bordelon & Pehlevan, Algorithm 1).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .kernels import alignment
from .runner import count_trace, finite_flag, over_members
from .sampling import active_rotation, draw_sites, split_sites
from .schedule import batch_indices

__all__ = ["Static", "Shared", "Replica", "State", "init_replicas", "initial_state", "step",
           "record", "iterate", "make_shared", "make_replicas", "for_prediction", "predict"]


class Static(NamedTuple):
    trained: bool
    dynamics: str          # "gd" or "flow"
    kernels: bool          # keep (P, P) kernels in the records
    has_test: bool
    cv: str = "matrix"     # control variate: "off", "matrix" (C = 1) or "operator" (C > 1)
    measures: object = None  # neuron measure (w, w0) -> (K,) in weight coordinates, or None
    batch: int = 0         # minibatch size B of SGD (0: full batch)


class Shared(NamedTuple):
    """Arrays common to all replicas."""
    act: object            # dmft.activations.Activation (a pytree)
    l_tr: jax.Array        # (P, r)
    l_te: jax.Array        # (P*, r)
    y: jax.Array           # (P, C)
    kx_tr: jax.Array       # (P, P) input kernel
    f0_tr: jax.Array       # (P, C) exact output at t = 0
    f0_te: jax.Array       # (P*, C)
    gamma0: jax.Array
    eta0: jax.Array
    decay: jax.Array       # weight decay kappa per unit time
    k0_tr: jax.Array       # (P, P) exact lazy NTK (used by the operator control variate)
    k0_te: jax.Array       # (P*, P)
    batch_key: jax.Array = None   # the key of the minibatch sequence (SGD)
    l_lo: jax.Array = None        # (P, r) l_tr in float32: precision="mixed" (None: full)


class Replica(NamedTuple):
    """Per-replica nodes and control-variate corrections."""
    z0: jax.Array          # (M, r)
    a0: jax.Array          # (M, C)
    w: jax.Array           # (M,) node weights
    F0_tr: jax.Array       # (P, C) node estimate of <a phi(h)> at t = 0
    F0_te: jax.Array       # (P*, C)
    cv_tr: jax.Array       # (P, P)  K0 - K0_nodes, train rows ("matrix" control variate)
    cv_te: jax.Array       # (P*, P) K0 - K0_nodes, test rows
    cv_phi: jax.Array      # (P, P)  Phi0 - Phi0_nodes
    cv_g: jax.Array        # (P, P)  G0 - G0_nodes
    phi0_tr: jax.Array     # (M, P) phi(h(0)) on the train points ("operator" control variate)
    dphi0_tr: jax.Array    # (M, P) phi'(h(0))


class State(NamedTuple):
    z: jax.Array           # (M, r)
    a: jax.Array           # (M, C)
    s: jax.Array           # (P, C) time integral of Delta
    k: jax.Array           # step count
    bad: jax.Array         # first step with a non-finite Delta, or -1
    # minibatch SGD under the "operator" control variate: the two node contractions of S that
    # K0_nodes S needs, carried (linear in S, which moves on the batch's points alone) so that a
    # step costs its batch; None otherwise
    cv_u: jax.Array = None   # (M, r) sum_nu L_nu phi0'_m(nu) (a0_m . S_nu)
    cv_q: jax.Array = None   # (M, C) sum_nu phi0_m(nu) S_nu


def _mean_sq(a):
    return jnp.mean(a * a, axis=-1)


def _node_sum(u, v):
    """sum over nodes m of u[m, p] v[m, q] (an einsum: `u.T @ v` would copy u transposed)."""
    return jnp.einsum("mp,mq->pq", u, v)


# ------------------------------------------------------------- initialisation

@functools.partial(jax.jit, static_argnames=("p", "trained", "cv"))
def init_replicas(act, l_all, kx_all_tr, phi0_all, g0_all, z0, a0, w, *,
                  p: int, trained: bool, cv: str) -> Replica:
    """Node estimates at t = 0 and the control-variate corrections.

    Args:
        l_all: (P + P*, r) field basis on all points (train first).
        kx_all_tr, phi0_all, g0_all: (P + P*, P) exact input and lazy kernels.
        z0, a0, w: nodes with a leading replica axis.
        cv: "off", "matrix" (store K0 - K0_nodes) or "operator" (store the node
            features at t = 0 and apply K0_nodes to S on the fly; exact for C > 1).
    """
    count_trace("single_site.init_replicas")

    def one(z0, a0, w):
        h = l_all @ z0.T                       # (P_all, M): nodes last, the fast layout for the sums
        phi, dphi = act(h), act.derivative(h)
        F0 = _output_sum(phi, w, a0)
        phi_s = _kernel_sum(phi, w, phi[:p])                                    # (P_all, P)
        g_s = _kernel_sum(dphi, w * _mean_sq(a0), dphi[:p])
        on = 0.0 if cv == "off" else 1.0
        if cv == "matrix":
            k_s = g_s * kx_all_tr + (phi_s if trained else 0.0)
            k0 = g0_all * kx_all_tr + (phi0_all if trained else 0.0)
            cv_all = k0 - k_s
        else:
            cv_all = jnp.zeros((0, p), h.dtype)
        feats = (phi[:p].T, dphi[:p].T) if cv == "operator" else (jnp.zeros((0, p), h.dtype),) * 2
        return Replica(z0, a0, w, F0[:p], F0[p:], cv_all[:p], cv_all[p:],
                       on * (phi0_all[:p] - phi_s[:p]), on * (g0_all[:p] - g_s[:p]), *feats)

    # one replica at a time on a CPU past the size (`over_members`: its fields on all points; 16 -> 8 ms
    # at 1024 nodes a replica, P = 64, 256 test points; 423 -> 279 ms at the demo's 4096, P = 256, 1000)
    return over_members(one, (z0, a0, w), z0.shape[1] * l_all.shape[0])


def carries_cv(static: Static, n_train: int) -> bool:
    """Whether the state carries the operator control variate's contractions of S (SGD)."""
    return static.cv == "operator" and static.dynamics == "gd" and 0 < static.batch < n_train


def initial_state(rep: Replica, n_train: int, static: Static | None = None) -> State:
    """The state at t = 0 (S = 0); with `static`, the contractions of S its step carries."""
    r = rep.z0.shape[0]
    c = rep.a0.shape[-1]
    carry = {}
    if static is not None and carries_cv(static, n_train):
        carry = dict(cv_u=jnp.zeros_like(rep.z0), cv_q=jnp.zeros_like(rep.a0))
    return State(rep.z0, rep.a0, jnp.zeros((r, n_train, c), rep.z0.dtype),
                 jnp.zeros((r,), jnp.int32), jnp.full((r,), -1, jnp.int32), **carry)


# ----------------------------------------------------------------- one replica

def _fields(sh: Shared, z, mixed: bool = False, *, rows=None, nodes_last: bool = False):
    """phi(h), phi'(h) with h = L z on the training points (or on `rows`, another field basis):
    in float32 when `mixed`, else in z's dtype. nodes_last: (points, nodes), the layout a
    record's node sums of (P, P) products run fastest in (up to 1.7x in float64); else
    (nodes, points), the step's."""
    lo = sh.l_lo.dtype if mixed else z.dtype
    act = _act_in(sh, lo) if mixed else sh.act
    basis = (rows if rows is not None else sh.l_lo if mixed else sh.l_tr).astype(lo)
    h = basis @ z.astype(lo).T if nodes_last else z.astype(lo) @ basis.T
    return act(h), act.derivative(h)


def _act_in(sh: Shared, dtype):
    """The activation with its parameters (which may be float64) in `dtype`."""
    return jax.tree_util.tree_map(lambda p: jnp.asarray(p, dtype), sh.act)


def _kernel_sum(u, weight, v):
    """sum_m u[p, m] weight[m] v[q, m] (nodes last in both), products and sums in u's dtype
    (float32 under "mixed"), the result in weight's."""
    lo = u.dtype
    return jnp.einsum("pm,qm->pq", u, v.astype(lo) * weight.astype(lo)[None, :]).astype(weight.dtype)


def _output_sum(u, weight, a):
    """sum_m u[p, m] weight[m] a[m, c]: products in u's dtype, accumulated in weight's (an
    output's rounding is divided by gamma0, so it is summed in the state's precision)."""
    return jnp.einsum("pm,mc->pc", u, (weight[:, None] * a).astype(u.dtype),
                      preferred_element_type=weight.dtype)


# a sampled solve warns that its outputs are carried by few nodes (`single_site.node_share`) where
# their share falls below NODE_SHARE_MIN and their number per replica below EFFECTIVE_NODES_MIN.
# Measured (D = 8, P = 32, 4096 nodes, up to t = 1000): 0.17-1.0 for tanh, relu, erf, softplus
# and square, trained or fixed readouts, gamma0 0.1-3, at every node count; quadratic(0.5) with
# trained readouts, whose answer moves with the node count (0.473 +- 0.003 at 1024 nodes a
# replica, 0.546 +- 0.028 at 16384; 0.62 at 32768: a node's growth rate grows with its size),
# 0.08, 0.018-0.029 and 0.012-0.020 at 256, 1024 and 4096 a replica (about 20-50 nodes); the
# lyu grokking testbed (square under weight decay) 1e-3 at 1024 a replica (one node). A sparse
# activation, relu(h - 2), has a share of 0.014-0.020 at every node count (few nodes active): 7
# nodes at 512 a replica, where its answer is off by 2-4 standard errors, 30-40 at 2048 (within
# one), 130-160 at 8192, where it has converged (not flagged)
NODE_SHARE_MIN = 0.05
EFFECTIVE_NODES_MIN = 64
# ... or where the share still moves with the node count (`node_share_drift`, the median over
# replicas, below SHARE_DRIFT_MIN at any save). Measured (4 replicas, 200 steps, eta0 = 0.5, least
# over 21 saves): light-tailed laws 0.86-1.0 from 1024 nodes a replica and 0.76-1.0 at 256 (tanh,
# erf, square, linear, relu fixed or trained on D = 8-32 tasks, softplus the 0.76 and 0.86; relu
# and softplus also to t = 1000), 0.45-0.48 for softplus at 64-128 a replica (off by up to 2 standard
# errors there) and 0.61-0.70 for relu; quadratic(0.2) with trained readouts (two outputs, D = 8)
# 0.53, 0.54, 0.32, 0.11 at 128, 256, 1024, 4096 a replica, whose test loss moved 0.037 -> 0.034
# -> 0.032 -> 0.027 with errors of 0.0002-0.0025 (the share alone flagged it from 1024 a replica on)
SHARE_DRIFT_MIN = 0.6
SHARE_BLOCKS = 8
SHARE_BLOCK_MIN = 16        # nodes a subset: below 16 x 8 = 128 nodes a replica the drift is not judged


def few_nodes(share, nodes_per_replica: int, drift=None):
    """Where (per save) the outputs are carried by few nodes: an effective node share below
    NODE_SHARE_MIN and under EFFECTIVE_NODES_MIN effective nodes a replica, or (drift given: the
    replicas' median `node_share_drift`) a share that still moves with the node count, drift below
    SHARE_DRIFT_MIN (NaN: not flagged)."""
    share = np.asarray(share)
    with np.errstate(invalid="ignore"):
        few = (share < NODE_SHARE_MIN) & (share * nodes_per_replica < EFFECTIVE_NODES_MIN)
        return few if drift is None else few | (np.asarray(drift) < SHARE_DRIFT_MIN)


def _node_sizes(u, a):
    """Each node's size s_m = ||phi_m|| ||a_m|| over all points and outputs (u: (P, M) features,
    a: (M, C)), both scaled by their largest entries first: no overflow, no dependence on scale."""
    def unit(x):
        big = jnp.max(jnp.abs(x))
        return x / jnp.where(big > 0, big, 1).astype(x.dtype)
    un, an = unit(u), unit(a.astype(u.dtype))
    return jnp.sqrt(jnp.sum(un * un, axis=0) * jnp.sum(an * an, axis=-1))        # (M,)


def node_share(u, weight, a):
    """The effective share of the nodes that carry the outputs, (sum_m w s_m)^2 / (sum_m w s_m^2
    sum_m w), where s_m = ||phi_m|| ||a_m|| is node m's size over all points and outputs (u: (P, M)
    features phi; scaled by their largest entries first, so it neither overflows nor depends on
    scale): 0.17-1.0 where the site law of a phi is light-tailed; it falls towards 1 / M where a few
    nodes run away (quadratic activation with trained readouts: a node's growth rate grows with its
    own size; a homogeneous one under weight decay: the best-aligned few grow while decay shrinks
    the rest), and the output's average over the site law is carried by ever rarer nodes. Then the
    mean over M nodes moves with M and the replica spread does not see it (`NODE_SHARE_MIN`)."""
    return _share(_node_sizes(u, a), weight.astype(u.dtype))


def _share(size, w):
    """`node_share` from the nodes' sizes and weights."""
    den = jnp.sum(w * size * size) * jnp.sum(w)
    return jnp.where(den > 0, jnp.sum(w * size) ** 2 / jnp.where(den > 0, den, 1), 1.0)


def _share_corrected(size, w):
    """(E s)^2 / E s^2 with the numerator's small-sample bias removed ((sum w s)^2 - sum w^2 s^2 over
    1 - sum w^2, weights normalized): per row of (..., n) arrays; 1 where it is undefined."""
    w = w / jnp.sum(w, axis=-1, keepdims=True)
    s1, s2, w2 = jnp.sum(w * size, -1), jnp.sum(w * size * size, -1), jnp.sum(w * w, -1)
    den = (1 - w2) * s2
    return jnp.where(den > 0, (s1 * s1 - jnp.sum(w * w * size * size, -1)) / jnp.where(den > 0, den, 1), 1.0)


def node_share_drift(u, weight, a, blocks: int = SHARE_BLOCKS):
    """How far the effective node share still moves with the node count: the share over all M nodes
    over the mean share within `blocks` strided subsets of M / blocks nodes (m = j mod blocks; each
    share with its small-sample bias removed, `_share_corrected`). Near 1 where the site law is
    light-tailed and M / blocks nodes already sample it; well below 1 where larger samples keep
    finding larger nodes, so the share, and the average, still move with M (`SHARE_DRIFT_MIN`).
    1 where M < SHARE_BLOCK_MIN blocks (subsets too small to say: at 4 nodes a subset a light law
    read 0.5)."""
    return _drift(_node_sizes(u, a), weight.astype(u.dtype), blocks)


def _drift(size, w, blocks: int = SHARE_BLOCKS):
    """`node_share_drift` from the nodes' sizes and weights."""
    n = (size.shape[0] // blocks) * blocks
    if n < SHARE_BLOCK_MIN * blocks:
        return jnp.ones((), size.dtype)
    sub = _share_corrected(size[:n].reshape(n // blocks, blocks).T, w[:n].reshape(n // blocks, blocks).T)
    mean = jnp.mean(sub)
    return jnp.where(mean > 0, _share_corrected(size, w) / jnp.where(mean > 0, mean, 1), 1.0)


def _cv_contractions(rep: Replica, s, l_cols, cols=None):
    """(u, q) of `State.cv_u`, `cv_q` for S on the training points `cols` (None: all of them; S
    zero elsewhere), whose field basis is l_cols."""
    dphi0, phi0 = (rep.dphi0_tr, rep.phi0_tr) if cols is None else (rep.dphi0_tr[:, cols], rep.phi0_tr[:, cols])
    return ((rep.a0 @ s.T) * dphi0) @ l_cols, phi0 @ s


def _k0_nodes_apply(static: Static, sh: Shared, rep: Replica, s, phi_rows, dphi_rows, l_rows, uq=None):
    """K0_nodes S on some rows, from the t = 0 node features, all outputs coupled:
    sum_m w_m [phi_m(mu) (phi_m . S_c) + a_mc phi'_m(mu) L_mu . sum_nu L_nu phi'_m(nu) (a_m . S_nu)];
    uq: S's contractions (u, q) if carried (`State.cv_u`, `cv_q`), else computed from s."""
    u, q = _cv_contractions(rep, s, sh.l_tr) if uq is None else uq          # (M, r), (M, C)
    out = _node_sum(dphi_rows * (u @ l_rows.T), rep.w[:, None] * rep.a0)
    if static.trained:
        out = out + _node_sum(phi_rows, rep.w[:, None] * q)
    return out


def _cv_term(static: Static, sh: Shared, rep: Replica, s, test: bool = False):
    """Control variate (K0 - K0_nodes) S / P on the train (or test) rows."""
    p = sh.l_tr.shape[0]
    if static.cv == "off":
        return 0.0
    if static.cv == "matrix":
        return (rep.cv_te if test else rep.cv_tr) @ s / p
    if test:
        h0 = rep.z0 @ sh.l_te.T
        rows = (sh.act(h0), sh.act.derivative(h0), sh.l_te)
    else:
        rows = (rep.phi0_tr, rep.dphi0_tr, sh.l_tr)
    return ((sh.k0_te if test else sh.k0_tr) @ s - _k0_nodes_apply(static, sh, rep, s, *rows)) / p


def _f_train(static: Static, sh: Shared, rep: Replica, F, s, cv=None):
    # f = f(0) + (<a phi(h)>_t - <a phi(h)>_0) / gamma0 + (K0 - K0_nodes) S / P, F = <a phi(h)>_t
    # (cv: that correction, where the caller already has it)
    return sh.f0_tr + (F - rep.F0_tr) / sh.gamma0 + (_cv_term(static, sh, rep, s) if cv is None else cv)


def _node_output(rep: Replica, phi, a):
    """<a phi(h)> on the training points for a step, products and sums in phi's dtype."""
    return _node_sum(phi, (rep.w[:, None] * a).astype(phi.dtype)).astype(a.dtype)


def _gradient(static: Static, sh: Shared, z, a, phi, dphi, delta, basis=None):
    """Velocities of (z, a) under gradient flow for a given Delta (section 1 updates); phi, dphi
    and delta on the points whose field basis is `basis` (None: all training points)."""
    p = sh.l_tr.shape[0]
    lo = phi.dtype                      # float32 under precision="mixed", else the nodes' dtype
    g = a.astype(lo) @ delta.T.astype(lo)                         # (M, P or B): a . Delta_mu
    if basis is None:
        basis = sh.l_tr if sh.l_lo is None else sh.l_lo
    dz = sh.gamma0 / p * ((g * dphi) @ basis).astype(z.dtype) - sh.decay * z
    if static.trained:
        da = sh.gamma0 / p * (phi @ delta.astype(lo)).astype(a.dtype) - sh.decay * a
    else:
        da = jnp.zeros_like(a)
    return dz, da


def _velocity(static, sh, rep, z, a, s):
    phi, dphi = _fields(sh, z, sh.l_lo is not None)
    delta = sh.y - _f_train(static, sh, rep, _node_output(rep, phi, a), s)
    dz, da = _gradient(static, sh, z, a, phi, dphi, delta)
    return dz, da, delta - sh.decay * s


def _step1(static: Static, sh: Shared, rep: Replica, st: State, drive):
    eta = sh.eta0
    if static.dynamics == "gd" and static.batch and static.batch < sh.y.shape[0]:
        return _sgd_step1(static, sh, rep, st, drive)
    if static.dynamics == "gd":
        phi, dphi = _fields(sh, st.z, sh.l_lo is not None)
        delta = (sh.y - _f_train(static, sh, rep, _node_output(rep, phi, st.a), st.s)
                 if drive is None else drive)
        dz, da = _gradient(static, sh, st.z, st.a, phi, dphi, delta)
        # S decays with the weights (the kernel error it multiplies shrinks with them)
        z, a, s = st.z + eta * dz, st.a + eta * da, (1 - eta * sh.decay) * st.s + eta * delta
    else:
        # classical fourth-order Runge-Kutta on (z, a, S) for gradient flow
        def f(z, a, s):
            return _velocity(static, sh, rep, z, a, s)
        k1 = f(st.z, st.a, st.s)
        k2 = f(st.z + eta / 2 * k1[0], st.a + eta / 2 * k1[1], st.s + eta / 2 * k1[2])
        k3 = f(st.z + eta / 2 * k2[0], st.a + eta / 2 * k2[1], st.s + eta / 2 * k2[2])
        k4 = f(st.z + eta * k3[0], st.a + eta * k3[1], st.s + eta * k3[2])
        z, a, s = (x + eta / 6 * (q1 + 2 * q2 + 2 * q3 + q4)
                   for x, q1, q2, q3, q4 in zip((st.z, st.a, st.s), k1, k2, k3, k4))
        delta = k1[2] + sh.decay * st.s
    return State(z, a, s, st.k + 1, finite_flag(st.k, st.bad, delta, z, a, s))


def _sgd_step1(static: Static, sh: Shared, rep: Replica, st: State, drive):
    """A step of minibatch SGD computed on its B points alone (cost ~ B / P of a full-batch
    step): the batch loss (1/2P) sum_mu weight_mu Delta_mu^2 has weight P / B on the batch of
    `dmft.schedule.batch_indices` and 0 elsewhere, so only the batch's fields, errors and
    control-variate rows enter the update, and S moves on the batch's points only."""
    p = sh.y.shape[0]
    idx = batch_indices(sh.batch_key, st.k, p, static.batch)
    mixed = sh.l_lo is not None
    basis = (sh.l_lo if mixed else sh.l_tr)[idx]                            # (B, r)
    phi, dphi = _fields(sh, st.z, mixed, rows=basis)                        # (M, B)
    carried = st.cv_u is not None
    if static.cv == "operator" and not carried:
        raise ValueError("the operator control variate under SGD needs initial_state(..., static)")
    if drive is None:
        f = (sh.f0_tr[idx] + (_node_output(rep, phi, st.a) - rep.F0_tr[idx]) / sh.gamma0
             + _cv_rows(static, sh, rep, st, idx))
        delta = sh.y[idx] - f
    else:
        delta = drive[idx]
    delta = delta * (p / static.batch)
    dz, da = _gradient(static, sh, st.z, st.a, phi, dphi, delta, basis)
    eta, shrink = sh.eta0, 1 - sh.eta0 * sh.decay
    z, a = st.z + eta * dz, st.a + eta * da
    s = (shrink * st.s).at[idx].add(eta * delta)
    if not carried:
        return State(z, a, s, st.k + 1, finite_flag(st.k, st.bad, delta, z, a, s))
    # S' = shrink S + eta Delta on the batch, and (u, q) are linear in S
    du, dq = _cv_contractions(rep, eta * delta, sh.l_tr[idx], idx)
    u, q = shrink * st.cv_u + du, shrink * st.cv_q + dq
    return State(z, a, s, st.k + 1, finite_flag(st.k, st.bad, delta, z, a, s, u, q), u, q)


def _cv_rows(static: Static, sh: Shared, rep: Replica, st: State, idx):
    """`_cv_term` on the training rows idx alone (the operator's contractions of S carried)."""
    p = sh.l_tr.shape[0]
    if static.cv == "off":
        return 0.0
    if static.cv == "matrix":
        return rep.cv_tr[idx] @ st.s / p
    rows = (rep.phi0_tr[:, idx], rep.dphi0_tr[:, idx], sh.l_tr[idx])
    return (sh.k0_tr[idx] @ st.s
            - _k0_nodes_apply(static, sh, rep, st.s, *rows, uq=(st.cv_u, st.cv_q))) / p


def _record1(static: Static, sh: Shared, rep: Replica, st: State):
    # under "mixed" the node products run in float32 here too, as in the step (the (P, P)
    # kernel sums and the test fields are most of a record's cost); sums come back in float64
    mixed = sh.l_lo is not None
    phi, dphi = _fields(sh, st.z, mixed, nodes_last=True)                # (P, M)
    size, w = _node_sizes(phi, st.a), rep.w.astype(phi.dtype)          # (once for both measures)
    cv = _cv_term(static, sh, rep, st.s)
    out = {"f_train": _f_train(static, sh, rep, _output_sum(phi, rep.w, st.a), st.s, cv),
           "node_share": _share(size, w), "node_share_drift": _drift(size, w)}
    if static.cv != "off":            # the correction itself: whether it removes noise or adds it
        out["cv_train"] = cv
    if static.has_test:
        phi_te, _ = _fields(sh, st.z, mixed, rows=sh.l_te, nodes_last=True)
        cv_te = _cv_term(static, sh, rep, st.s, test=True)
        out["f_test"] = sh.f0_te + (_output_sum(phi_te, rep.w, st.a) - rep.F0_te) / sh.gamma0 + cv_te
        if static.cv != "off":
            out["cv_test"] = cv_te
    # Phi = <phi phi>, G = <a^2 phi' phi'> (output-averaged), K = Phi + G * K^x (section 2)
    feat = _kernel_sum(phi, rep.w, phi) + rep.cv_phi
    grad = _kernel_sum(dphi, rep.w * _mean_sq(st.a), dphi) + rep.cv_g
    ntk = grad * sh.kx_tr + (feat if static.trained else 0.0)
    out["alignment"] = alignment(ntk, sh.y)
    if static.kernels:
        out.update(ntk=ntk, feature_kernel=feat, gradient_kernel=grad)
    out["sq_weight_change.first_layer"] = jnp.sum(rep.w * jnp.sum((st.z - rep.z0) ** 2, axis=1))
    out["sq_weight_change.readout"] = jnp.sum(rep.w * jnp.sum((st.a - rep.a0) ** 2, axis=1))
    if static.measures is not None:      # z are the first-layer weights (basis "weights")
        out["measures"] = rep.w @ jax.vmap(static.measures)(st.z, rep.z0)
    return out


def replica_se(a, xp=jnp):
    """Standard error of the mean over replicas (axis 1; R >= 2), its spread taken of the values
    scaled by their largest magnitude: it overflows only where the values do (a plain std squares
    them: inf from |a| ~ 1e154, long before the state overflows). xp: jnp or np."""
    m = xp.max(xp.abs(a), axis=1, keepdims=True)
    m = xp.where((m > 0) & xp.isfinite(m), m, 1.0)
    return m[:, 0] * xp.std(a / m, axis=1, ddof=1) / math.sqrt(a.shape[1])


def weight_change_se(se_sq, change, dim: int, xp=jnp):
    """Standard error of a weight change sqrt(mean over replicas of the squared change / dim)
    from the standard error of the squared change, by the delta method: se_sq / (2 dim change),
    0 where the change is 0 (every replica then has none). xp: jnp in a traced program, np on
    host arrays."""
    safe = xp.where(change > 0, change, 1.0)
    return xp.where(change > 0, se_sq / (2 * dim * safe), 0.0)


# ------------------------------------------------- batched over replicas (runner API)

def step(static: Static, ctx, st: State, drive):
    """One step for all replicas; ctx = (Shared, Replica); drive None or (R, P, C)."""
    sh, rep = ctx
    if drive is None:
        return jax.vmap(lambda r, s: _step1(static, sh, r, s, None))(rep, st)
    return jax.vmap(lambda r, s, d: _step1(static, sh, r, s, d))(rep, st, drive)


def record(static: Static, ctx, st: State):
    sh, rep = ctx
    # a member's fields: its nodes on the train (and test) points
    points = sh.l_tr.shape[0] + (sh.l_te.shape[0] if static.has_test else 0)
    return over_members(lambda r, s: _record1(static, sh, r, s), (rep, st), rep.w.shape[1] * points)


# ------------------------------------------------------------- the iteration

@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def iterate(static: Static, max_iter: int, window: int, n_windows: int, sh: Shared,
            rep: Replica, delta0, tol, damping, carry=None, start=0):
    """Self-consistent iteration on Delta(t) (Bordelon & Pehlevan, Algorithm 1).

    Time is cut into windows of `window` steps, solved in order (waveform
    relaxation): in each window, Delta is guessed, the nodes are integrated
    against the guess from the converged state at the window's start, which
    gives the implied error Delta_est and the NTK K along the guess; then the
    prediction dynamics is solved with those kernels for the correction D,

        D_k = Delta_est_k - Delta_old_k - (eta0 / P) sum_{j<k} K_j D_j,

    a causal recursion run in the same scan, and Delta <- Delta + damping D,
    in a `lax.while_loop` until ||D|| / ||Delta|| <= tol in every replica. A
    fixed point (D = 0) is exactly the forward solution. The kernel term and
    the windows remove the transient growth that makes plain Picard iteration
    over a long horizon diverge.

    Args:
        delta0: (R, window, P, C) guess for the first window (e.g. lazy); later
            windows start from the last converged Delta held constant.
        carry, start: solve windows start .. start + n_windows - 1 from the `carry` a call
            for the windows before them returned (None: from t = 0, start = 0), so that a run
            can be cut into calls with the same numbers.

    Returns:
        (delta (R, n_windows * window, P, C) that drove the converged sweeps,
         iterations (n_windows,), residual history (n_windows, max_iter),
         last residual per window (n_windows,), carry for the next windows)
    """
    count_trace("single_site.iterate")
    p = sh.l_tr.shape[0]

    def sweep1(rep1, st_start, drive):
        def body(carry, d_old):
            st, c = carry
            phi, dphi = _fields(sh, st.z)
            # the Delta implied by the guess
            est = sh.y - _f_train(static, sh, rep1, _node_output(rep1, phi, st.a), st.s)
            grad = _node_sum(dphi, (rep1.w * _mean_sq(st.a))[:, None] * dphi) + rep1.cv_g
            ntk = grad * sh.kx_tr
            if static.trained:
                ntk = ntk + _node_sum(phi, rep1.w[:, None] * phi) + rep1.cv_phi
            d = est - d_old - c
            return (_step1(static, sh, rep1, st, d_old), c + sh.eta0 / p * ntk @ d), d

        (st_end, _), corr = jax.lax.scan(body, (st_start, jnp.zeros_like(st_start.s)), drive)
        return corr, st_end

    sweep = jax.vmap(sweep1)

    def cond(c):
        return (c[0] < max_iter) & (c[3] > tol)

    def one_window(carry, i):
        st_start, last = carry
        guess = jnp.where(i == 0, delta0, last[:, None])

        def body(c):
            n, d, hist, _, _, _ = c
            corr, st_end = sweep(rep, st_start, d)
            new = d + damping * corr
            num = jnp.sqrt(jnp.sum(corr ** 2, axis=(1, 2, 3)))
            den = jnp.sqrt(jnp.sum(new ** 2, axis=(1, 2, 3)))
            res = jnp.max(num / jnp.maximum(den, jnp.finfo(d.dtype).tiny))
            return n + 1, new, hist.at[n].set(res), res, st_end, d

        init = (jnp.zeros((), jnp.int32), guess, jnp.full((max_iter,), jnp.nan, guess.dtype),
                jnp.asarray(jnp.inf, guess.dtype), st_start, guess)
        n, _, hist, res, st_end, used = jax.lax.while_loop(cond, body, init)
        return (st_end, used[:, -1]), (used, n, hist, res)

    r = rep.z0.shape[0]
    if carry is None:
        st0 = State(rep.z0, rep.a0, jnp.zeros((r, p, rep.a0.shape[-1]), rep.z0.dtype),
                    jnp.zeros((r,), jnp.int32), jnp.full((r,), -1, jnp.int32))
        carry = (st0, delta0[:, 0])
    carry, (used, n, hist, res) = jax.lax.scan(one_window, carry,
                                               start + jnp.arange(n_windows))
    delta = jnp.moveaxis(used, 0, 1).reshape((r, n_windows * window) + used.shape[3:])
    return delta, n, hist, res, carry


# ------------------------------------------------------------- setup and prediction

def make_shared(act, su: dict, gamma0, eta0, decay, batch_key=None, mixed: bool = False) -> Shared:
    """Arrays common to all replicas, from `dmft.geometry.lazy_setup`'s (traceable); batch_key:
    the minibatch sequence of SGD; mixed: also a float32 copy of the field basis for the step."""
    P = su["P"]
    dt = su["y"].dtype
    return Shared(act=act, l_tr=su["l_all"][:P], l_te=su["l_all"][P:],
                  y=su["y"], kx_tr=su["kx_all_tr"][:P], f0_tr=su["f0"][:P], f0_te=su["f0"][P:],
                  gamma0=jnp.asarray(gamma0, dt), eta0=jnp.asarray(eta0, dt),
                  decay=jnp.asarray(decay, dt), k0_tr=su["k0"][:P], k0_te=su["k0"][P:],
                  batch_key=batch_key, l_lo=su["l_all"][:P].astype(jnp.float32) if mixed else None)


def make_replicas(act, su: dict, key, *, sampler: str, samples: int, replicas: int,
                  quadrature_nodes: int, trained: bool, cv: str, first: int = 0,
                  count: int | None = None, node_split: int = 1) -> Replica:
    """Draw the nodes of every replica (`dmft.sampling`) and their control-variate corrections;
    or of replicas first .. first + count - 1 only (the nodes they get in a draw of all); with
    node_split = k each replica's nodes as k populations (`sampling.split_sites`: k times as many
    replicas of a k-th of the nodes, replica j's parts consecutive)."""
    P = su["P"]
    rotation = (active_rotation(su["l_all"][:P], su["y"] - su["f0"][:P], su["g0"][:P])
                if sampler == "sobol" else None)
    sites = draw_sites(key, sampler, samples, replicas, su["r"], su["y"].shape[1], trained,
                       nodes=quadrature_nodes, dtype=su["y"].dtype, rotation=rotation,
                       first=first, count=count)
    sites = split_sites(sites, node_split)
    return init_replicas(act, su["l_all"], su["kx_all_tr"], su["phi0"], su["g0"],
                         sites.z, sites.a, sites.weight, p=su["P"], trained=trained, cv=cv)


def for_prediction(rep: Replica) -> Replica:
    """What `predict` reads of a replica: its (P + P*, P) control-variate matrices dropped
    (the predictor recomputes the node kernels on the new rows from z0, a0 and w)."""
    return rep._replace(cv_tr=None, cv_te=None, cv_phi=None, cv_g=None)


@functools.partial(jax.jit, static_argnums=(0,))
def predict(static: Static, sh: Shared, rep: Replica, st: State, l_new, xi_nodes, sd_new, k0_new,
            f0_new, shrink):
    """Predictions on new inputs from the final node population, one per replica.

    The same estimator as on the test points: f = f(0) + (<a phi(h)>_t - <a phi(h)>_0) / gamma0
    + (K0 - K0_nodes) S / P on the new rows. A new point's field is h = z . l_new + sd xi at
    t = 0, xi ~ N(0, 1) outside the data span (sd = 0 inside it; the weight basis has none),
    independent of the dynamics, which only decay it (by `shrink`). Every node term at a new point
    is linear in phi(h_t), phi(h_0) or phi'(h_0), so those are averaged over each node's draws
    `xi_nodes` (R, M, K) before the node sums. `sd_new`: (n,).

    Returns (R, n, C): the caller averages them and takes their spread as the standard error.
    """
    p = sh.l_tr.shape[0]

    def one(rep1, st1, xi):
        c0 = rep1.z0 @ l_new.T                                        # (M, n) in-span fields
        c = st1.z @ l_new.T

        def add(acc, x):                                              # x: (M,) one draw per node
            off = x[:, None] * sd_new[None, :]
            h0, h = c0 + off, c + shrink * off
            return (acc[0] + sh.act(h), acc[1] + sh.act(h0), acc[2] + sh.act.derivative(h0)), None

        zero = jnp.zeros_like(c0)
        (phi_t, phi0, dphi0), _ = jax.lax.scan(add, (zero, zero, zero), xi.T)
        k = xi.shape[1]
        phi_t, phi0, dphi0 = phi_t / k, phi0 / k, dphi0 / k
        F = _node_sum(phi_t, rep1.w[:, None] * st1.a)
        F0 = _node_sum(phi0, rep1.w[:, None] * rep1.a0)
        out = f0_new + (F - F0) / sh.gamma0
        if static.cv == "off":
            return out
        if static.cv == "operator":
            k_nodes_s = _k0_nodes_apply(static, sh, rep1, st1.s, phi0, dphi0, l_new)
        else:
            htr = rep1.z0 @ sh.l_tr.T
            g_s = _node_sum(dphi0, (rep1.w * _mean_sq(rep1.a0))[:, None] * sh.act.derivative(htr))
            k_s = g_s * (l_new @ sh.l_tr.T)
            if static.trained:
                k_s = k_s + _node_sum(phi0, rep1.w[:, None] * sh.act(htr))
            k_nodes_s = k_s @ st1.s
        return out + (k0_new @ st1.s - k_nodes_s) / p

    # one replica at a time on a CPU past the size (`over_members`: its (nodes, points) arrays)
    return over_members(one, (rep, st, xi_nodes), rep.w.shape[1] * l_new.shape[0])
