"""Deep linear networks trained by (S)GD, thousands of seeds in one compiled program.

The model and conventions are docs/conventions.md ("Deep linear networks"):
f(x) = W_L ... W_1 x, loss l = |y - f|^2 / (2B) on a batch of B points, W_l <- (1 - eta
kappa) W_l - eta grad_{W_l} l, step k at time t = k eta. Data are a `dmft.LinearTeacher`:
a fixed set of P points (minibatches of B distinct indices per step; B = P is full-batch
gradient descent) or online data (fresh Gaussian inputs and label noise every step, drawn
in-graph from per-seed keys).

Recorded at the saved steps, for every seed:

    modes         (S, T, r)    pi_i = u_i^T W_L ... W_1 v_i, in the order of the teacher's s
                               (u_i, v_i: the teacher's online; on a fixed set those of the
                               target the network fits, M~ = Y^T X / P, equal to the teacher's
                               without label noise: `dmft.deep_linear.effective_modes`)
    train_loss    (S, T)       |Y - X W^T|^2 / (2P) on the fixed set (online: = test_loss)
    test_loss     (S, T)       population loss |W - M|_F^2 / 2 + d_out sigma^2 / 2
    balancedness  (S, T, L-1)  |W_{l+1}^T W_{l+1} - W_l W_l^T|_F
    balance_change (S, T, L-1) its change since t = 0 (conserved by gradient flow)
    drift         (S, T, r)    d pi_i / dt under the full-batch (fixed set) or population
                               (online) gradient, with weight decay kappa:
                               -sum_l <d pi_i / d W_l, grad_l + kappa W_l>, the decay's part
                               -L kappa pi_i (each layer's <d pi / d W_l, W_l> is pi)
    diffusion     (S, T, r)    Var[delta pi_i] / eta of one SGD step at first order in eta:
                               eta Var(mean of c over a batch), c the per-sample projected
                               gradient (vmapped per-sample gradients; exact over the P points
                               with the finite-population factor (P - B) / (P - 1); online the
                               population variance in closed form, or, given `probe`, a sample
                               variance over that many fresh samples)

Example:
    >>> import jax; jax.config.update("jax_enable_x64", True)
    >>> import dmft, networks
    >>> data = dmft.tasks.linear_teacher(4, 4, [2.0, 1.0], P=16, key=0)
    >>> model = dmft.DeepLinear(depth=3, width=8, init_scale=0.3, init="aligned")
    >>> run = networks.train(model, data, seeds=5, eta0=0.05, steps=40, save_every=20, batch_size=4)
    >>> run.modes.shape, run.t.tolist()
    ((5, 3, 2), [0.0, 1.0, 2.0])
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dmft import checks
from dmft.deep_linear import effective_modes, step_rates, warn_sgd_unstable, warn_step
from dmft.errors import InputError, MemoryLimitError, warn
from dmft.plan import RUNTIME_BYTES, warn_float32
from dmft.plotting import new_figure
from dmft.problem import DeepLinear, LinearTeacher
from dmft.runner import CALL_SHARE, drop_compiled_if_crowded, exact_products, RUNAWAY, ran_away, run_saved
from dmft.schedule import Schedule, batch_indices, check_batch_key
from dmft.trajectory import Records

__all__ = ["DeepLinearRun", "train_deep_linear", "init_weights", "end_to_end", "mode_strengths",
           "memory_estimate", "check_init_scale"]


# ----------------------------------------------------------------- the result

@dataclasses.dataclass
class DeepLinearRun(Records):
    """An ensemble of deep linear networks (leading axes: seed, time). See the module docstring."""

    t: np.ndarray
    modes: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    balancedness: np.ndarray
    balance_change: np.ndarray
    drift: np.ndarray
    diffusion: np.ndarray
    info: dict
    weights: dict | None = None

    GROUPS: ClassVar[tuple] = ("weights",)
    ENSEMBLE_AXES: ClassVar[tuple] = ("seed",)

    @property
    def seeds(self) -> int:
        return int(self.modes.shape[0])

    def label(self) -> str:
        return f"{self.seeds} networks"

    def plot(self, theory=None, title: str | None = None):
        """Mode strengths (median and 10-90% band over seeds), population loss, drift and
        diffusion per mode against time; `theory` (an (T, r) array on the same times, or a
        result with `.t` and `.modes`) is drawn dashed on the modes."""
        fig, axes = new_figure(1, 4, size=(17, 3.8))
        t = np.asarray(self.t)
        m = t > 0
        r = self.modes.shape[-1]
        for i in range(r):
            c = f"C{i % 10}"
            for ax, v in ((axes[0], self.modes[..., i]), (axes[2], self.drift[..., i]),
                          (axes[3], self.diffusion[..., i])):
                lo, med, hi = np.nanpercentile(v, [10, 50, 90], axis=0)
                ax.plot(t[m], med[m], color=c, label=f"mode {i + 1}")
                ax.fill_between(t[m], lo[m], hi[m], color=c, alpha=0.15)
        if theory is not None:
            tt, mm = (theory.t, np.nanmedian(theory.modes, axis=0)) if hasattr(theory, "modes") \
                else (t, np.asarray(theory))
            for i in range(r):
                axes[0].plot(tt[tt > 0], mm[tt > 0, i], "k--", lw=0.9)
        lo, med, hi = np.nanpercentile(self.test_loss, [10, 50, 90], axis=0)
        axes[1].plot(t[m], med[m], "k")
        axes[1].fill_between(t[m], lo[m], hi[m], color="k", alpha=0.15)
        axes[1].set_yscale("log")
        for ax, lab in zip(axes, ("mode strength u_i^T W v_i", "population loss",
                                  "drift d pi / dt", "diffusion Var[d pi] / eta")):
            ax.set_xscale("log")
            ax.set_xlabel("t = steps x eta")
            ax.set_ylabel(lab)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=7)
        if title:
            fig.suptitle(title)
        return fig


# ----------------------------------------------------------------- the network

@exact_products
def init_weights(model: DeepLinear, data: LinearTeacher, key, dtype):
    """The L weight matrices of one network (a tuple), random or aligned and balanced (with the
    modes the network fits, `dmft.deep_linear.effective_modes`)."""
    modes = effective_modes(data)
    return _init(model, data.d_in, data.d_out, jnp.asarray(modes.U, dtype), jnp.asarray(modes.V, dtype),
                 key, dtype)


def _init(model: DeepLinear, d_in: int, d_out: int, U, V, key, dtype):
    L, w, a0 = model.depth, model.width, model.init_scale
    dims = [d_in] + [w] * (L - 1) + [d_out]
    if model.init == "random":
        keys = jax.random.split(key, L)
        return tuple(a0 * jax.random.normal(k, (dims[i + 1], dims[i]), dtype) for i, k in enumerate(keys))
    if L == 1:
        return (a0 * U @ V.T,)
    Q = jnp.eye(w, U.shape[1], dtype=dtype)     # the first r hidden directions carry the modes
    Ws = [a0 * Q @ V.T] + [a0 * Q @ Q.T for _ in range(L - 2)] + [a0 * U @ Q.T]
    return tuple(Ws)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _start_block(model: DeepLinear, d_in: int, d_out: int, dtype, key, idx, U, V):
    """Keys, initial state and initial balancedness of the seeds `idx` (one compiled program:
    op-by-op dispatch under vmap would compile every operation)."""
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(idx)
    init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2 ** 31 - 1))(keys)
    Ws0 = jax.vmap(lambda k: _init(model, d_in, d_out, U, V, k, dtype))(init_keys)
    n = idx.shape[0]
    st0 = State(tuple(jnp.moveaxis(W, 0, -1) for W in Ws0), jnp.zeros((n,), jnp.int32),
                jnp.full((n,), -1, jnp.int32))
    return keys, st0, _balance(st0.Ws)


@exact_products
def end_to_end(Ws):
    """W_tot = W_L ... W_1."""
    out = Ws[0]
    for W in Ws[1:]:
        out = W @ out
    return out


@exact_products
def mode_strengths(Ws, U, V):
    """pi_i = u_i^T W_tot v_i for every mode i."""
    return jnp.einsum("oi,oj,ji->i", U, end_to_end(Ws), V)


class Static(NamedTuple):
    online: bool
    batch: int              # B
    P: int                  # fixed points (0 online)
    probe: int              # fresh samples for the online diffusion estimate


class Shared(NamedTuple):
    U: jax.Array            # (d_out, r)
    V: jax.Array            # (d_in, r)
    M: jax.Array            # (d_out, d_in)
    sigma: jax.Array
    x: jax.Array            # (P, d_in) (empty online)
    y: jax.Array            # (P, d_out)
    eta: jax.Array
    decay: jax.Array


class Seed(NamedTuple):
    key: jax.Array
    C0: tuple               # the balancedness matrices at t = 0
    batch_key: jax.Array    # the key of the seed's batches: its own key, or the shared batch_key


class State(NamedTuple):
    Ws: tuple               # the L weight matrices, seeds last: (out, in, S)
    k: jax.Array            # (S,) step count
    bad: jax.Array          # (S,) first step with a non-finite loss, or -1


def _batch(static: Static, sh: Shared, key, k, n):
    """n points (x, y) for step k of one seed: a minibatch of the fixed set, or fresh online
    samples (x ~ N(0, I), y = M x + sigma xi)."""
    if static.online:
        kx, kn = jax.random.split(jax.random.fold_in(key, k))
        x = jax.random.normal(kx, (n, sh.V.shape[0]), sh.x.dtype)
        return x, x @ sh.M.T + sh.sigma * jax.random.normal(kn, (n, sh.U.shape[0]), sh.x.dtype)
    idx = batch_indices(key, k, static.P, n)
    return sh.x[idx], sh.y[idx]


def step(static: Static, ctx, st: State, drive):
    """One (S)GD step of every seed. The weights are stored seeds-last, (out, in, S): each
    contraction is then a loop over small matrices with the seeds as the vector lane, which
    is what makes thousands of tiny networks fast on a CPU (10x a vmapped batch of matmuls).

    Forward a_l = W_l a_{l-1}; error e = a_L - y; backward delta_L = e / B,
    grad W_l = delta_l a_{l-1}^T, delta_{l-1} = W_l^T delta_l (the gradient of |y - f|^2 / 2B).
    """
    sh, seeds = ctx
    k = st.k[0]                                  # every seed is at the same step
    if static.online:
        x, y = jax.vmap(lambda key: _batch(static, sh, key, k, static.batch))(seeds.batch_key)  # (S, B, d)
        a, y = jnp.transpose(x, (2, 1, 0)), jnp.transpose(y, (2, 1, 0))                 # (d, B, S)
    else:   # the indices per seed, then one plain gather laid out (B, S, d): a gather under vmap,
        # or one laid out (S, B, d), is several times slower here
        idx = jax.vmap(lambda key: batch_indices(key, k, static.P, static.batch))(seeds.batch_key).T
        a, y = jnp.transpose(sh.x[idx], (2, 0, 1)), jnp.transpose(sh.y[idx], (2, 0, 1))
    acts = [a]
    for W in st.Ws:
        a = jnp.einsum("ijs,jbs->ibs", W, a)
        acts.append(a)
    err = a - y
    loss = 0.5 * jnp.sum(err * err, axis=(0, 1)) / static.batch          # (S,)
    delta = err / static.batch
    new = [None] * len(st.Ws)
    for l in range(len(st.Ws) - 1, -1, -1):
        g = jnp.einsum("ibs,jbs->ijs", delta, acts[l])
        if l > 0:
            delta = jnp.einsum("ibs,ijs->jbs", delta, st.Ws[l])
        new[l] = (1 - sh.eta * sh.decay) * st.Ws[l] - sh.eta * g
    # the loss before the update, and the weights after it (an update that overflows on the
    # last step has no later loss to show it): any NaN or inf makes a layer's sum non-finite
    ok = jnp.isfinite(loss)
    for W in new:
        ok = ok & jnp.isfinite(jnp.sum(W, axis=(0, 1)))
    bad = jnp.where((st.bad < 0) & ~ok, st.k, st.bad)
    return State(tuple(new), st.k + 1, bad)


def _chain(Ws):
    """Prefix and suffix products, seeds last: B_l = W_{l-1}..W_1 (B_1 = I) and
    A_l = W_L..W_{l+1} (A_L = I), for l = 1..L, and W_tot."""
    S = Ws[0].shape[-1]
    dt = Ws[0].dtype

    def eye(n):
        return jnp.broadcast_to(jnp.eye(n, dtype=dt)[:, :, None], (n, n, S))

    pre = [eye(Ws[0].shape[1])]
    for W in Ws[:-1]:
        pre.append(jnp.einsum("ijs,jks->iks", W, pre[-1]))
    suf = [eye(Ws[-1].shape[0])]
    for W in Ws[:0:-1]:
        suf.append(jnp.einsum("ijs,jks->iks", suf[-1], W))
    suf = suf[::-1]
    total = jnp.einsum("ijs,jks->iks", Ws[-1], pre[-1])
    return pre, suf, total


def _balance(Ws):
    """C_l = W_{l+1}^T W_{l+1} - W_l W_l^T, l = 1..L-1 (seeds last), conserved by gradient flow."""
    return tuple(jnp.einsum("jis,jks->iks", Ws[l + 1], Ws[l + 1]) - jnp.einsum("ijs,kjs->iks", Ws[l], Ws[l])
                 for l in range(len(Ws) - 1))


def _projected(sh: Shared, pre, suf, x, e):
    """c[n, i, s]: the per-sample gradient of |y - f|^2 / 2 projected on d pi_i / dW, summed
    over layers: c = -sum_l (u_i^T A_l A_l^T e_n)(x_n^T B_l^T B_l v_i) (closed form of the
    vmapped per-sample gradients for a linear network). x: (n, d_in) shared by the seeds, or
    (d_in, n, S); e = y - f: (d_out, n, S)."""
    c = 0.0
    for A, B in zip(suf, pre):
        G = jnp.einsum("oi,ops,qps->iqs", sh.U, A, A)            # u_i^T A_l A_l^T   (r, d_out, S)
        Hv = jnp.einsum("kjs,kms,mi->jis", B, B, sh.V)           # B_l^T B_l v_i      (d_in, r, S)
        left = jnp.einsum("iqs,qns->nis", G, e)
        right = (jnp.einsum("nj,jis->nis", x, Hv) if x.ndim == 2 else jnp.einsum("jns,jis->nis", x, Hv))
        c = c - left * right
    return c


def _mode_kernels(sh: Shared, pre, suf):
    """K_i = sum_l g_l h_l^T (r, d_out, d_in, S), g_l = A_l A_l^T u_i, h_l = B_l^T B_l v_i: a
    sample's gradient projected on d pi_i / dW is c_i = -e^T K_i x (e = y - f)."""
    K = 0.0
    for A, B in zip(suf, pre):
        G = jnp.einsum("oi,ops,qps->iqs", sh.U, A, A)            # g_l^T   (r, d_out, S)
        Hv = jnp.einsum("kjs,kms,mi->jis", B, B, sh.V)           # h_l     (d_in, r, S)
        K = K + jnp.einsum("iqs,jis->iqjs", G, Hv)
    return K


def _population_moments(sh: Shared, K, delta):
    """E[-c_i] (S, r) and Var[c_i] (r, S) over online data, in closed form. With e = delta x +
    sigma xi (delta = M - W, x ~ N(0, I), xi ~ N(0, I) independent), c_i = -(x^T Q_i x +
    sigma xi^T K_i x), Q_i = delta^T K_i: E[-c_i] = tr Q_i (the population gradient's rate), the
    two parts are uncorrelated (odd in xi), and a Gaussian quadratic form has Var[x^T Q x] =
    2 |Q_s|_F^2 (Q_s = (Q + Q^T) / 2): Var[c_i] = 2 |Q_s,i|_F^2 + sigma^2 |K_i|_F^2."""
    Q = jnp.einsum("qas,iqbs->iabs", delta, K)                   # (r, d_in, d_in, S)
    Qs = 0.5 * (Q + jnp.swapaxes(Q, 1, 2))
    var = 2.0 * jnp.sum(Qs * Qs, axis=(1, 2)) + sh.sigma ** 2 * jnp.sum(K * K, axis=(1, 2))
    return jnp.trace(Q, axis1=1, axis2=2).T, var


def _record(static: Static, sh: Shared, seeds: Seed, st: State):
    """Every record of every seed, computed seeds last in closed form."""
    Ws = st.Ws
    pre, suf, W = _chain(Ws)
    pi = jnp.einsum("oi,ojs,ji->si", sh.U, W, sh.V)                         # (S, r)
    dW = W - sh.M[:, :, None]
    test = 0.5 * jnp.sum(dW * dW, axis=(0, 1)) + 0.5 * sh.U.shape[0] * sh.sigma ** 2
    C = _balance(Ws)
    S = W.shape[-1]
    if C:
        bal = jnp.stack([jnp.sqrt(jnp.sum(c * c, axis=(0, 1))) for c in C], axis=-1)
        change = jnp.stack([jnp.sqrt(jnp.sum((c - c0) ** 2, axis=(0, 1))) for c, c0 in zip(C, seeds.C0)],
                           axis=-1)
    else:
        bal = change = jnp.zeros((S, 0), W.dtype)
    if static.online:
        train = test
        # the population gradient's rate and the per-sample gradient's variance, for x ~ N(0, I)
        drift, var = _population_moments(sh, _mode_kernels(sh, pre, suf), -dW)
        if static.probe:        # the variance estimated from fresh samples, kept to check the closed form
            x, y = jax.vmap(lambda key: _batch(static, sh, jax.random.fold_in(key, 2 ** 30), st.k[0],
                                               static.probe))(seeds.key)
            x, y = jnp.transpose(x, (2, 1, 0)), jnp.transpose(y, (2, 1, 0))     # (d, n, S)
            e = y - jnp.einsum("ojs,jns->ons", W, x)
            var = jnp.var(_projected(sh, pre, suf, x, e), axis=0, ddof=1)
        var = var / static.batch
    else:
        x = sh.x                                                             # (n, d_in), shared
        e = jnp.transpose(sh.y)[:, :, None] - jnp.einsum("ojs,nj->ons", W, sh.x)
        train = 0.5 * jnp.mean(jnp.sum(e * e, axis=0), axis=0)
        c = _projected(sh, pre, suf, x, e)                                   # (n, r, S)
        drift = -jnp.mean(c, axis=0).T
        P, B = static.P, static.batch
        var = jnp.var(c, axis=0) / B * ((P - B) / (P - 1) if P > 1 else 0.0)
    drift = drift - len(Ws) * sh.decay * pi          # the decay's pull on every layer: -L kappa pi
    out = {"modes": pi, "train_loss": train, "test_loss": test, "balancedness": bal,
           "balance_change": change, "drift": drift, "diffusion": sh.eta * var.T}
    dead = st.bad >= 0                                                       # (S,)
    return {k: jnp.where(dead.reshape((S,) + (1,) * (v.ndim - 1)), jnp.nan, v) for k, v in out.items()}


def record(static, ctx, st):
    sh, seeds = ctx
    return _record(static, sh, seeds, st)


# ----------------------------------------------------------------- entry point

def memory_estimate(model: DeepLinear, data: LinearTeacher, seeds: int, T: int, probe: int, *,
                    batch_size: int = 1, block: int | None = None) -> float:
    """Bytes of the largest arrays (float64): for every seed, its weights and its records four
    times over (the compiled program's output, the block's parts, their concatenation, and the
    divergence flags' temporaries: a run's peak grew 2.9-3.4x its records' bytes a save); for
    each seed of a block (`block` seeds run at once, None: all), its weights' copies and
    gradients, the per-step batch (its inputs and labels, drawn or gathered from the P points
    after a permutation of them, their transposes, the activations and back-propagated errors of
    every layer) and the temporaries of a record, as the compiler lays them out (its
    memory_analysis: 4-5 r d_in d_out at d_in = d_out for the online closed form's K_i and Q_i,
    `_population_moments`; (2L + 1) r + 2 d_out values per point of the n = P points or probe
    samples, `_projected`'s two factors for each layer; the layers' prefix and suffix products),
    counted as r d_in (3 d_out + 3 d_in) online, n ((2L + 1) r + 2 d_out (+ 2 d_in with a probe))
    and 3 L widest^2. Measured peaks (fresh processes; depth 3-5, d = 4-64, 256-1024 seeds at
    once, up to 10001 saves): 0.63-0.8 of the estimate at 1-5 GB, 0.36-0.51 below 0.6 GB, where
    the runtime's fixed cost dominates. (It charged a fixed set the online closed form's K_i,
    every seed n_par x r values no record builds, and all of it twice: 6.6-7x the measured peak
    at d = 32, depth 3, 3.3-3.8x online.)"""
    L, w, r = model.depth, model.width, data.rank
    d_in, d_out = data.d_in, data.d_out
    n_par = d_in * w + (L - 2) * w * w + w * d_out if L > 1 else d_in * d_out
    n = probe if data.online else data.P
    records = 4 * T * (3 * r + 2 * max(L - 1, 0) + 2)
    dims = d_in + (L - 1) * w + d_out
    per_step = 2 * batch_size * (3 * (d_in + d_out) + 2 * dims) + (0 if data.online else data.P)
    widest = max(w, d_in, d_out)
    per_record = (3 * L * widest * widest + n * ((2 * L + 1) * r + 2 * d_out + (2 * d_in if data.online else 0))
                  + (r * d_in * (3 * d_out + 3 * d_in) if data.online else 0))
    at_once = seeds if block is None else min(block, seeds)
    per_seed = 2 * n_par + records
    return 8.0 * (seeds * per_seed + at_once * (4 * n_par + per_step + per_record)) + RUNTIME_BYTES


def check_init_scale(model: DeepLinear, dtype) -> None:
    """InputError naming init_scale where the networks' weights would start at 0 in `dtype`
    ("float32" or "float64") although init_scale > 0: at depth >= 2 an init_scale below the dtype's
    smallest normal number (it rounds to 0, or to a subnormal that XLA's arithmetic flushes to 0),
    where every gradient vanishes and the networks never move (depth 2, init_scale = 1e-40 in
    float32: the modes stayed at 0 for 8000 steps; in float64 they learn s = 3). At depth 1 the
    gradient does not depend on the weights' scale and a zero start learns. Also where
    init_scale^depth overflows `dtype` (every record NaN from t = 0, as mode_sde refuses it)."""
    dt = jnp.dtype(dtype)
    tiny = float(jnp.finfo(dt).tiny)
    top = math.log(float(jnp.finfo(dt).max))
    if model.init_scale > 0 and model.depth * math.log(model.init_scale) >= top:   # (it ran, NaN from t = 0,
        raise InputError(                                                       # and advised a lower eta0)
            f"init_scale: init_scale^depth = {model.init_scale:g}^{model.depth} = 10^"
            f"{model.depth * math.log10(model.init_scale):.0f} overflows {dt.name}: the networks' product of "
            "layers, and so every mode, would start at inf; use a smaller init_scale")
    if model.depth >= 2 and model.init_scale < tiny:
        raise InputError(f"init_scale: {model.init_scale:g} is below {dt.name}'s smallest normal number {tiny:.3g}: "
                         f"the weights start at 0 there (XLA flushes subnormals), where a network of depth "
                         f"{model.depth} never moves; use a larger init_scale"
                         + (" or float64" if dt != jnp.float64 else ""))


def _flag_records(rec: dict, bad: np.ndarray, save_steps, zero_loss: float) -> None:
    """In place: a seed whose records stop being finite before its step flag says so (a loss or
    mode product that overflows from finite weights) is flagged at that save's step k (bad = k,
    as the step flags a seed whose loss at step k is not finite), and its records from there on
    are NaN. The convention of every flag: bad = k, the saves after step k are NaN, and the save
    at k is kept when it is finite (an update from k that overflows leaves it whole).

    A seed whose population loss runs away while still finite (`dmft.runner.ran_away`, the
    two-layer networks' and the DMFT's rule, with the loss at zero weights, `zero_loss`, as the
    targets' scale) is flagged likewise from that save: SGD past its stability grows it
    geometrically (online depth 1, d_in = 4, B = 1, eta0 = 0.5: 2e99 after 2000 steps, finite)."""
    nonfinite = np.zeros(bad.shape + (len(save_steps),), bool)          # (S, T)
    for v in rec.values():
        nonfinite |= ~np.isfinite(v.reshape(v.shape[0], v.shape[1], -1)).all(axis=2)
    loss = rec["test_loss"]
    for s in range(loss.shape[0]):
        away = ran_away(np.asarray(loss[s], np.float64), zero_loss, 1.0)
        nonfinite[s] |= away
    for s in np.flatnonzero(nonfinite.any(axis=1)):
        first = int(np.argmax(nonfinite[s]))
        if bad[s] < 0 or int(save_steps[first]) < bad[s]:
            bad[s] = int(save_steps[first])
        for v in rec.values():
            v[s, first:] = np.nan


@exact_products
def train_deep_linear(model: DeepLinear, data: LinearTeacher, schedule: Schedule, seeds: int = 16, *,
                      key=None, batch_key=None, probe: int | None = None, progress: bool = False,
                      keep_weights: bool = False,
                      max_memory_gb: float = 4.0, dtype=None, block: int | None = 256) -> DeepLinearRun:
    """Train `seeds` deep linear networks (vmapped) on a linear teacher; see the module docstring.

    Args:
        schedule: eta0 (the learning rate eta), steps, save steps, weight decay, and
            batch_size B (None: full batch for a fixed set; required online).
        seeds: independent runs; seed s draws its initialization and its batches from
            fold_in(key, s).
        batch_key: None (each seed its own batches), or a key: every seed trains on the one
            batch sequence of this key (fixed set: `dmft.schedule.batch_indices(batch_key, k, P,
            B)`, the sequence `dmft.solve(batch_key=)` uses; online: the same fresh points and
            label noise, drawn from fold_in(batch_key, k)), so the seeds differ by their
            initialization only. An online diffusion probe stays per seed.
        probe: None (online: the diffusion in closed form, the population variance of the
            per-sample gradient, exact for the teacher's Gaussian inputs and label noise), or a
            number of fresh samples per record from which a seed estimates it instead (a check of
            the closed form; before, 512 samples were the default: 6% noise in each record and
            90% of a run's time). On a fixed set the diffusion is exact over its P points, and a
            probe is refused (it was accepted and ignored).
        keep_weights: keep the final weights in `run.weights` ({"W1": (S, ...), ...}).
        dtype: "float32" or "float64" (default: JAX's current float).
        block: seeds per compiled call (None: all at once). Each seed's draws are the same at
            any block, but each block size is its own compiled program, so the records agree to rounding
            only: block=2 against block=256 (float64, depth 4, 2000 steps) differed by up to
            9e-16 relative in the modes and 3e-15 in the drift; the same block, bit for bit. So
            adding seeds keeps the first seeds' records bit for bit where the block, min(seeds,
            block), stays the same, and to rounding where it grows (3 seeds against 5: 4e-16).
    """
    if not isinstance(model, DeepLinear):
        raise InputError(f"model must be a dmft.DeepLinear, got {type(model).__name__}")
    model.check_data(data)
    if not isinstance(schedule, Schedule):
        raise InputError(f"schedule must be a dmft.Schedule, got {type(schedule).__name__} (networks.train "
                         "also takes eta0=, steps=, save_every=)")
    if schedule.dynamics != "gd":
        raise InputError("dynamics: deep linear networks are trained by (S)GD here; use dmft.deep_linear."
                         "mode_flow for gradient flow")
    seeds = checks.integer("seeds", seeds, minimum=1)
    if probe is not None and not data.online:
        raise InputError(f"probe: the diffusion on a fixed set of P = {data.P} points is exact over them; "
                         "probe (fresh samples per record) is for online data")
    probe = 0 if probe is None else checks.integer("probe", probe, minimum=2)
    keep_weights = checks.flag("keep_weights", keep_weights)
    progress = checks.flag("progress", progress)
    max_memory_gb = checks.real("max_memory_gb", max_memory_gb, positive=True)
    B = schedule.batch_size
    if data.online:
        if B is None:
            raise InputError("batch_size: online data need a batch size (fresh points per step)")
    else:
        B = data.P if B is None else B
        if B > data.P:
            raise InputError(f"batch_size must be <= P = {data.P}, got {B}")
    if dtype is None:
        dt = jnp.result_type(float)
    else:
        dt = checks.choice("dtype", str(jnp.dtype(dtype)) if not isinstance(dtype, str) else dtype,
                           ("float32", "float64"))
        dt = jnp.dtype(dt)
        if dt == jnp.float64 and not jax.config.jax_enable_x64:
            raise InputError("dtype='float64' needs jax.config.update('jax_enable_x64', True) first")
    check_init_scale(model, dt)
    if dtype is None:                          # (a dtype given is a choice)
        warn_float32("networks.train (deep linear)")
    block = seeds if block is None else min(seeds, checks.integer("block", block, minimum=1))
    T = schedule.save_steps.size
    need = memory_estimate(model, data, seeds, T, probe, batch_size=int(B), block=block)
    if need > max_memory_gb * 2 ** 30:
        raise MemoryLimitError(f"seeds, batch_size: {seeds} seeds with batches of {B} need about "
                         f"{need / 2 ** 30:.3g} GiB (> max_memory_gb={max_memory_gb:g}); use fewer seeds, a "
                         "smaller batch_size or block, save less often, or a smaller probe")
    key = checks.prng_key("key", key)
    key = jax.random.key(0) if key is None else key
    # (a fixed set's full batch, B = P, draws no batches: a key there was recorded, and ignored)
    batch_key = (checks.prng_key("batch_key", batch_key) if data.online
                 else check_batch_key(batch_key, int(B), data.P))
    # (eta0 past the step's stability limit at every global minimum: the runs oscillate about the
    # target, finite and silent; their records read anywhere on the oscillation)
    eta0 = float(schedule.eta0)
    warn_step(step_rates(model, data, eta0=eta0, weight_decay=float(schedule.weight_decay)), eta0,
              "networks.train (deep linear)")
    # (below GD's limit small batches can still run away: the linearized per-batch steps' top
    # Lyapunov exponent at the minimum, `dl.sgd_lyapunov`; said before compute, cached per setting)
    warn_sgd_unstable(model, data, eta0=eta0, batch_size=int(B), weight_decay=float(schedule.weight_decay),
                      what="networks.train (deep linear)", steps_run=schedule.steps)
    drop_compiled_if_crowded(CALL_SHARE)
    t0 = time.perf_counter()
    static = Static(data.online, int(B), 0 if data.online else data.P, probe)
    x = np.zeros((0, data.d_in)) if data.online else data.x_train
    y = np.zeros((0, data.d_out)) if data.online else data.y_train
    modes = effective_modes(data)
    sh = Shared(jnp.asarray(modes.U, dt), jnp.asarray(modes.V, dt), jnp.asarray(data.M, dt),
                jnp.asarray(data.label_noise, dt), jnp.asarray(x, dt), jnp.asarray(y, dt),
                jnp.asarray(schedule.eta0, dt), jnp.asarray(schedule.weight_decay, dt))
    # seeds run in blocks (one compiled program, called per block): a block's weights stay in
    # cache across steps; seed s draws from fold_in(key, s) whatever the blocking
    parts, states, wall = [], [], 0.0
    for start in range(0, seeds, block):
        idx = jnp.arange(start, start + block) % seeds            # the last block is padded
        keys, st0, C0 = _start_block(model, data.d_in, data.d_out, dt, key, idx, sh.U, sh.V)
        bkeys = keys if batch_key is None else jnp.stack([batch_key] * keys.shape[0])
        rec, st, w = run_saved(step, record, static, (sh, Seed(keys, C0, bkeys)), st0,
                               gaps=schedule.gaps, progress=progress,
                               label=f"deep linear seeds {start}..{min(start + block, seeds) - 1}",
                               stop_on_nonfinite=False)
        n = min(block, seeds - start)
        parts.append({k: np.moveaxis(v, 0, 1)[:n] for k, v in rec.items()})
        states.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[..., :n], st))
        wall += w
    rec = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    st = jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=-1), *states)
    bad = np.array(st.bad)
    M = data.M
    _flag_records(rec, bad, schedule.save_steps,
                  0.5 * (float(np.sum(M * M)) + data.d_out * float(data.label_noise) ** 2))
    info = {"seeds": seeds, "batch_size": int(B), "online": data.online, "dtype": str(dt),
            "diverged": {int(s): int(b) for s, b in enumerate(bad) if b >= 0}, "run_s": wall,
            "shared_batches": batch_key is not None,
            "wall_s": time.perf_counter() - t0, "backend": jax.default_backend(),
            "steps_per_s": seeds * schedule.steps / max(wall, 1e-12),
            "config": {"model": model.describe(), "data": data.describe(),
                       "train": {**schedule.describe(), "batch_size": int(B), "seeds": seeds,
                                 "probe": probe or None},
                       # same keys, same result (as the two-layer networks record theirs)
                       "key": np.asarray(jax.random.key_data(key)).tolist(),
                       **({"batch_key": np.asarray(jax.random.key_data(batch_key)).tolist()}
                          if batch_key is not None else {})}}
    weights = ({f"W{i + 1}": np.moveaxis(np.asarray(W), -1, 0) for i, W in enumerate(st.Ws)}
               if keep_weights else None)
    info["block"] = block
    if info["diverged"]:   # said, as the two-layer networks say it: a nanmean was the first sign
        n, first = len(info["diverged"]), min(info["diverged"].values())
        warn(f"networks.train: {'every one' if n == seeds else n} of {seeds} deep linear seeds "
                      f"diverged (the first by step {first}): non-finite, or a loss running away past "
                      f"{RUNAWAY:.0e} times its scale; their records are NaN from the save where each went bad "
                      "(info['diverged'] holds each seed's step); lower eta0 or init_scale")
    return DeepLinearRun(t=schedule.times, info=info, weights=weights, **rec)

