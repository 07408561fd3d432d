"""What the forward estimator's sampling error is made of, from lazy to rich: how much of it a
further control variate could remove.

A control variate built from the leading order in gamma0 (an expansion around the lazy
solution) is, for a given set of nodes, proportional to the error those same nodes make at
a small gamma0. So the fraction of the error's variance explained by a least-squares fit
on the error at gamma0 = 0.01 (same keys, same nodes) bounds what any such control variate
could remove: a fraction q cuts the variance by at most 1 / (1 - q) (one coefficient per
saved time; per point coefficients would gain little more, each fitted on 12 keys). The same fit on the
error of a coupled exactly solvable model (the same nodes trained as a linear network,
whose infinite-width answer the closure gives) bounds that second candidate; a last table does
the same for relu with fixed readouts against a quadratic surrogate (the closure is exact for
degree <= 2 there).

Problem: the tanh single-index task of `bench_dmft.py`'s error table (D=16, P=64, 256 test
points, 100 steps at eta0 = 0.5), 4096 nodes in one replica per key, errors of f_test at
every save against a 2^18-node reference (its error is 8x smaller).

Run: python scripts/bench_rich_error.py [--quick]
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import dmft  # noqa: E402


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
    ap.add_argument("--quick", action="store_true", help="6 keys instead of 12")
    args = ap.parse_args()
    keys, samples = (6 if args.quick else 12), 4096
    data = dmft.tasks.single_index(D=16, P=64, P_test=256, degree=1, key=jax.random.key(3))
    kw = dict(eta0=0.5, steps=100, save_every=10)
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
    quadratic_coupled(data, keys, samples, kw)


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


if __name__ == "__main__":
    main()
