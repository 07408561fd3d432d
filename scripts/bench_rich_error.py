"""What the forward estimator's sampling error is made of, from lazy to rich: how much of it a
further control variate could remove.

A control variate built from the leading order in gamma0 (an expansion around the lazy
solution) is, for a given set of nodes, proportional to the error those same nodes make at
a small gamma0. So the fraction of the error's variance explained by a least-squares fit
on the error at gamma0 = 0.01 (same keys, same nodes) bounds what any such control variate
could remove: a fraction q cuts the variance by at most 1 / (1 - q) (one coefficient per
saved time; per point coefficients would gain little more, each fitted on 12 keys). The same fit on the
error of a coupled exactly solvable model (the same nodes trained as a linear network,
whose infinite-width answer the closure gives) bounds that second candidate; a further table does
the same for relu with fixed readouts against a quadratic surrogate (the closure is exact for
degree <= 2 there).

A further table measures the estimator's bias, what extrapolation in the node count could remove:
the same 4096 nodes split into R replicas of M (the replicas' mean carries the bias of M nodes, to
first order proportional to 1 / M), the mean over keys against the reference, the keys' spread and
the reference's own error subtracted from the squared bias. Removing all of it would cut the mean
squared error by rms^2 / sd^2 at most.

The last table bounds every control variate, stratification or change of sampler at once that
works through a given set of a node's initial coordinates. To first order in 1 / M the
estimator's error is the node average of each node's influence G (the derivative of the result
with respect to the node's weight, the feedback through the shared error included; computed by
`jax.grad` through `dmft.single_site`'s own step, control variate included), so its variance is
Var(G) / M. The table gives that prediction beside the spread over keys, and the fraction of
Var(G) (of antithetic pairs) that features of the initial condition explain, fitted on half of
the pairs and scored on the other half: the second moments z z^T (which the stratified
sampler's orthogonal blocks already fix), the same with the readout's size |a| coupled in, and
any function of (|a|, the planted direction's coordinate, the rest's squared radius) by
nearest-neighbour regression. A family that explains a fraction q can cut the variance by
1 / (1 - q) at most.

Problem: the tanh single-index task of `bench_dmft.py`'s error table (D=16, P=64, 256 test
points, 100 steps at eta0 = 0.5), 4096 nodes in one replica per key, errors of f_test at
every save against a 2^18-node reference (its error is 8x smaller).

Run: python scripts/bench_rich_error.py [--quick] [--only influence|bias]
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dmft  # noqa: E402
from dmft import single_site  # noqa: E402
from dmft.geometry import geometry, lazy_setup_compiled  # noqa: E402
from dmft.sampling import draw_sites  # noqa: E402


def explained(x, y):
    """Fraction of sum(y^2) removed by the best multiple of x, one multiple per saved time
    (x, y: errors shaped (keys, saves, points); fitted in-sample, so if anything generous)."""
    xy, xx = np.sum(x * y, axis=(0, 2)), np.sum(x * x, axis=(0, 2))
    b = np.divide(xy, xx, out=np.zeros_like(xy), where=xx > 0)     # t = 0: no error at all
    return 1.0 - np.sum((y - b[None, :, None] * x) ** 2) / np.sum(y ** 2)


def errors(model, data, keys, samples, ref, kw):
    return np.stack([dmft.solve(model, data, method="forward", samples=samples, replicas=1,
                                kernels=False, key=jax.random.key(100 + k), **kw).f_test - ref
                     for k in range(keys)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="6 keys instead of 12; the influence table on tanh only")
    ap.add_argument("--only", choices=["influence", "bias"], help="run only this table")
    args = ap.parse_args()
    keys, samples = (6 if args.quick else 12), 4096
    data = dmft.tasks.single_index(D=16, P=64, P_test=256, degree=1, key=jax.random.key(3))
    kw = dict(eta0=0.5, steps=100, save_every=10)
    if args.only is None:
        control_variates(data, keys, samples, kw)
        quadratic_coupled(data, keys, samples, kw)
    if args.only in (None, "bias"):
        bias_table(data, 2 * keys, samples, kw)
    if args.only in (None, "influence"):
        influence_table(data, args.quick)


def control_variates(data, keys, samples, kw):
    base = 0.01
    print(f"tanh, D=16, P=64, {samples} nodes, {keys} keys; errors of f_test at all saves\n")
    print(f"{'gamma0':>7} {'rms error':>10} {'leading order':>14} {'linear coupled':>15} "
          f"{'max gain':>9} {'s':>6}")
    small = None
    for g in (base, 0.1, 0.3, 1.0, 2.0):
        t = time.perf_counter()
        model, lin = dmft.TwoLayer("tanh", gamma0=g), dmft.TwoLayer("linear", gamma0=g)
        ref = dmft.solve(model, data, method="forward", samples=2 ** 18, replicas=1,
                         kernels=False, key=jax.random.key(7), **kw).f_test
        e = errors(model, data, keys, samples, ref, kw)
        if small is None:
            small = e
            print(f"{g:7g} {np.sqrt(np.mean(e ** 2)):10.2e} {'(itself)':>14}")
            continue
        exact_lin = dmft.solve(lin, data, method="closure", **kw).f_test
        e_lin = errors(lin, data, keys, samples, exact_lin, kw)
        q_lead, q_lin = explained(small, e), explained(e_lin, e)
        print(f"{g:7g} {np.sqrt(np.mean(e ** 2)):10.2e} {q_lead:14.3f} {q_lin:15.3f} "
              f"{1 / (1 - max(q_lead, q_lin)):9.2f} {time.perf_counter() - t:6.1f}")
    print("\nleading order / linear coupled: fraction of the error variance the best multiple of "
          f"that\nerror (gamma0 = {base} on the same nodes / the coupled linear network) explains; max gain:\n"
          "the variance reduction a control variate built on it could reach at most")


def quadratic_coupled(data, keys, samples, kw):
    """The exact closure of a polynomial surrogate as a coupled model: relu with fixed readouts
    (the closure is exact for degree <= 2 there) against phi = h + 0.4 h^2 (relu's Hermite
    expansion to second order is 0.2 + h / 2 + 0.2 h^2: this is twice it, less the constant),
    the same nodes."""
    sur_act = dmft.activations.quadratic(4 / (2 * np.sqrt(2 * np.pi)))
    print(f"\nrelu, fixed readouts, against the coupled quadratic surrogate (exact by the closure):")
    print(f"{'gamma0':>7} {'rms error':>10} {'surrogate error':>16} {'explained':>10} {'max gain':>9} {'s':>6}")
    for g in (0.3, 1.0, 2.0):
        t = time.perf_counter()
        model = dmft.TwoLayer("relu", gamma0=g, readout="fixed")
        sur = dmft.TwoLayer(sur_act, gamma0=g, readout="fixed")
        ref = dmft.solve(model, data, method="forward", samples=2 ** 18, replicas=1,
                         kernels=False, key=jax.random.key(7), **kw).f_test
        e = errors(model, data, keys, samples, ref, kw)
        e_q = errors(sur, data, keys, samples, dmft.solve(sur, data, method="closure", **kw).f_test, kw)
        q = explained(e_q, e)
        print(f"{g:7g} {np.sqrt(np.mean(e ** 2)):10.2e} {np.sqrt(np.mean(e_q ** 2)):16.2e} {q:10.3f} "
              f"{1 / (1 - q):9.2f} {time.perf_counter() - t:6.1f}")
    print("(the surrogate's own error is tiny: the lazy-kernel control variate already removes what\n"
          "a degree-2 model's nodes get wrong, so nothing is left for it to explain)")


def bias_table(data, keys, samples, kw):
    """The finite-node bias beside the sampling error, at several splits of the same nodes."""
    splits = [(16, samples // 16), (4, samples // 4), (1, samples)]
    print(f"\nthe bias of M nodes a replica (tanh, {samples} nodes split into R replicas, {keys} keys; "
          "f_test at all saves)")
    print(f"{'gamma0':>7} {'R':>3} {'M':>5} {'rms error':>10} {'sd':>9} {'bias':>9} {'bias / sd':>9} "
          f"{'max gain':>9} {'s':>6}")
    for g in (0.3, 1.0, 2.0):
        model = dmft.TwoLayer("tanh", gamma0=g)
        refs = [dmft.solve(model, data, method="forward", samples=2 ** 18, replicas=1, kernels=False,
                           key=jax.random.key(k), **kw).f_test for k in (7, 8)]
        ref = 0.5 * (refs[0] + refs[1])
        ref_var = np.mean((refs[0] - refs[1]) ** 2) / 4            # the mean of two references' variance
        for r, m in splits:
            t = time.perf_counter()
            e = np.stack([dmft.solve(model, data, method="forward", samples=r * m, replicas=r, kernels=False,
                                     key=jax.random.key(100 + k), **kw).f_test - ref for k in range(keys)])
            var = np.mean(np.var(e, axis=0, ddof=1))
            bias_sq = max(np.mean(np.mean(e, axis=0) ** 2) - var / keys - ref_var, 0.0)
            mse = np.mean(e ** 2)
            print(f"{g:7g} {r:3d} {m:5d} {np.sqrt(mse):10.2e} {np.sqrt(var):9.2e} {np.sqrt(bias_sq):9.2e} "
                  f"{np.sqrt(bias_sq / var):9.3f} {mse / max(mse - bias_sq, 1e-300):9.3f} "
                  f"{time.perf_counter() - t:6.1f}")
    print("bias: the squared mean error over keys less the keys' spread / keys and the reference's own\n"
          "variance (0 where that is negative); max gain: the mean squared error over what is left without\n"
          "the bias, what an extrapolation in M that removed it exactly (at no cost in variance) could reach")


def influence(model, data, samples, eta0, steps, key):
    """Each node's influence on the final test loss, G_m = d loss / d w_m (w: the node weights,
    1 / samples each; one replica of antithetic pairs, the matrix control variate), and the nodes.
    The step is checkpointed, so memory holds one state a step."""
    act = model.activation
    su = lazy_setup_compiled(geometry(data), act, model.gamma0, centered=model.centered,
                             trained=True, nodes=64)
    static = single_site.Static(True, "gd", False, True, "matrix")
    sh = single_site.make_shared(act, su, model.gamma0, eta0, 0.0)
    y_test = jnp.asarray(data.y_test)

    def loss(w, z0, a0):
        rep = single_site.init_replicas(act, su["l_all"], su["kx_all_tr"], su["phi0"], su["g0"], z0[None],
                                        a0[None], w[None], p=su["P"], trained=True, cv="matrix")
        body = jax.checkpoint(lambda st, _: (single_site.step(static, (sh, rep), st, None), None))
        st, _ = jax.lax.scan(body, single_site.initial_state(rep, su["P"], static), None, steps)
        f = single_site.record(static, (sh, rep), st)["f_test"][0, :, 0]
        return jnp.mean((y_test - f) ** 2)

    sites = draw_sites(key, "antithetic", samples, 1, su["r"], 1, True, dtype=jnp.float64)
    z0, a0 = sites.z[0], sites.a[0]
    g = jax.jit(jax.grad(loss))(jnp.full(samples, 1.0 / samples), z0, a0)
    assert su["basis"] == "weights"           # z are the weights: the planted direction applies
    return np.asarray(g), np.asarray(z0), np.asarray(a0[:, 0])


def explained_out_of_sample(g, features):
    """Fraction of var(g) that a least-squares fit on `features` (columns), made on the first
    half of the rows, explains on the second half."""
    half = g.size // 2
    f = np.column_stack([np.ones(g.size), features])
    coef, *_ = np.linalg.lstsq(f[:half], g[:half], rcond=None)
    return 1.0 - np.var(g[half:] - f[half:] @ coef) / np.var(g[half:])


def explained_by_neighbours(g, coords, ks=(16, 64, 256)):
    """The same for any function of a few coordinates: the mean of g over the k nearest first-half
    rows (standardized coordinates), scored on the second half; the best k (if anything generous)."""
    half = g.size // 2
    u = (coords - coords.mean(0)) / coords.std(0)
    d2 = np.sum((u[half:, None, :] - u[None, :half, :]) ** 2, axis=-1)
    best = -np.inf
    for k in ks:
        near = np.argpartition(d2, k, axis=1)[:, :k]
        best = max(best, 1.0 - np.mean((g[half:] - g[:half][near].mean(1)) ** 2) / np.var(g[half:]))
    return best


def influence_table(data, quick):
    """What any sampler or control variate working through a node's initial coordinates could
    remove, from each node's influence (module docstring)."""
    demo = dmft.tasks.single_index(D=32, P=256, P_test=1000, degree=2, key=jax.random.key(0))
    tanh_keys, relu_keys = (32 if quick else 128), 24
    cases = [("tanh", data, g, 16384, 0.5, 100, tanh_keys) for g in (0.3, 1.0, 2.0)]
    if not quick:      # the demo problem (relu, D = 32, P = 256, t = 300): 16384 nodes
        cases += [("relu", demo, g, 16384, 0.5, 600, relu_keys) for g in (1.0, 2.0)]
    print("\nwhere the error lies: each node's influence G on the final test loss (antithetic pairs)")
    print(f"{'problem':>22} {'gamma0':>6} {'var pred':>9} {'var seen':>9} {'z z^T':>6} {'+ |a|':>6} "
          f"{'invariants':>10} {'strat. gain':>11} {'s':>6}")
    for act, d, g, m, eta0, steps, keys in cases:
        t = time.perf_counter()
        model = dmft.TwoLayer(act, gamma0=g)
        grad, z, a = influence(model, d, m, eta0, steps, jax.random.key(11))
        h = m // 2
        pair = 0.5 * (grad[:h] + grad[h:])             # the pairs (z, a), (z, -a) enter together
        z, size = z[:h], np.abs(a[:h])
        i, j = np.triu_indices(z.shape[1])
        zz = z[:, i] * z[:, j]
        sz = size - size.mean()
        q_zz = explained_out_of_sample(pair, zz)
        q_a = explained_out_of_sample(pair, np.column_stack([zz, sz, sz ** 2, sz[:, None] * zz]))
        beta = np.asarray(d.meta["beta"]) / np.linalg.norm(d.meta["beta"])
        along = z @ beta
        q_inv = explained_by_neighbours(pair, np.column_stack([size, along, np.sum(z ** 2, 1) - along ** 2]))
        seen = {}
        for sampler in ("antithetic", "stratified"):
            loss = [dmft.solve(model, d, method="forward", samples=m, replicas=1, kernels=False, sampler=sampler,
                               eta0=eta0, steps=steps, save_every=steps, key=jax.random.key(200 + k)).test_loss[-1]
                    for k in range(keys)]
            seen[sampler] = np.var(loss, ddof=1)
        name = f"{act} D={d.D} P={d.P} M={m}"
        print(f"{name:>22} {g:6g} {np.var(pair) / h:9.2e} {seen['antithetic']:9.2e} {q_zz:6.3f} {q_a:6.3f} "
              f"{q_inv:10.3f} {seen['antithetic'] / seen['stratified']:11.2f} {time.perf_counter() - t:6.1f}")
    print(f"var pred: var(G of a pair) / pairs, the first-order prediction of the antithetic sampler's\n"
          f"variance; var seen: its spread over keys ({tanh_keys} for tanh, {relu_keys} for relu; G's tails are heavy,\n"
          "kurtosis ~20, so a few keys' spread falls short of it more often than not); then the\n"
          "fraction of var(G) explained out of sample by z z^T, by z z^T with |a| coupled in, and by any\n"
          "function of (|a|, beta.z, |z_perp|^2); strat. gain: the antithetic over the stratified\n"
          "sampler's spread over the same keys. A family explaining q cuts the variance by 1 / (1 - q)\n"
          "at most")


if __name__ == "__main__":
    main()
