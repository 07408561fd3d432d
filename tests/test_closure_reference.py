"""The exact closures against a moment recursion written here in numpy (float64, small sizes).

The recursion propagates the site's Gaussian law in the weights' own coordinates (all D of them,
not the field basis): gradient descent is z <- M z + b with M = (1 - eta0 kappa) I + (affine part
of the step), so the second moment moves as M S M^T and the mean as M m + b. Minibatch SGD weighs
the batch's errors by P / B (`dmft.schedule.batch_indices` gives the batches, shared with the
solvers by construction). Settings the statistical comparisons in test_solvers.py do not pin to
rounding: weight decay with SGD, uncentered fixed readouts (f(0) = beta |x|^2 / (D gamma0)),
inputs wider than the data (kernel eigenbasis) and predictions on new inputs outside its span.
"""

import jax
import numpy as np
import pytest

import dmft
from dmft.schedule import batch_indices

STEPS, ETA0 = 25, 0.2


def _weights(key, k, P, batch):
    w = np.ones(P)
    if batch:
        w = np.zeros(P)
        w[np.asarray(batch_indices(key, k, P, batch))] = P / batch
    return w


def _linear_trained(x, y, x_new, gamma0, kappa, batch, key):
    """f on x_new after STEPS steps: the joint site (w, a) in R^(D + C), mean zero."""
    P, D = x.shape
    n = D + y.shape[1]
    S = np.eye(n)
    L = x / np.sqrt(D)
    for k in range(STEPS):
        delta = (y - L @ S[:D, D:] / gamma0) * _weights(key, k, P, batch)[:, None]
        g = L.T @ delta / P
        A = np.zeros((n, n))
        A[:D, D:], A[D:, :D] = gamma0 * g, gamma0 * g.T
        M = (1 - ETA0 * kappa) * np.eye(n) + ETA0 * A
        S = M @ S @ M.T
    return x_new / np.sqrt(D) @ S[:D, D:] / gamma0


def _quadratic_fixed(x, y, x_new, alpha, beta, gamma0, kappa, batch, key, centered):
    """f on x_new after STEPS steps: phi = alpha h + beta h^2, readouts fixed at 1."""
    P, D = x.shape
    S, m = np.eye(D), np.zeros(D)
    L = x / np.sqrt(D)

    def f(S, m, rows):
        eh = rows @ m
        eh2 = np.einsum("pi,ij,pj->p", rows, S, rows) + eh ** 2
        f0 = 0.0 if centered else beta * np.sum(rows ** 2, axis=1) / gamma0
        return f0 + (alpha * eh + beta * (eh2 - np.sum(rows ** 2, axis=1))) / gamma0

    for k in range(STEPS):
        delta = (y[:, 0] - f(S, m, L)) * _weights(key, k, P, batch)
        M = (1 - ETA0 * kappa) * np.eye(D) + 2 * beta * ETA0 * gamma0 * (L.T * delta) @ L / P
        S, m = M @ S @ M.T, M @ m + ETA0 * gamma0 * alpha * L.T @ delta / P
    return f(S, m, x_new / np.sqrt(D))[:, None]


@pytest.mark.parametrize("D", [5, 30])               # weights basis, kernel eigenbasis (P + P* = 11)
@pytest.mark.parametrize("kappa, batch", [(0.3, None), (0.2, 3)])
@pytest.mark.parametrize("case", ["linear-trained", "quadratic-fixed-uncentered", "square-fixed"])
def test_closure_matches_a_moment_recursion_with_decay_and_minibatches(D, kappa, batch, case):
    rng = np.random.default_rng(D)
    P, P_test = 7, 4
    x, x_test, x_new = rng.normal(size=(P, D)), rng.normal(size=(P_test, D)), 1.3 * rng.normal(size=(3, D))
    C = 2 if case == "linear-trained" else 1
    y, y_test = rng.normal(size=(P, C)), rng.normal(size=(P_test, C))
    data = dmft.Dataset(x, y, x_test, y_test)
    key = jax.random.key(4) if batch else None
    schedule = dmft.Schedule(eta0=ETA0, steps=STEPS, save_every=5, weight_decay=kappa, batch_size=batch)
    gamma0 = 0.7
    if case == "linear-trained":
        model = dmft.TwoLayer("linear", gamma0=gamma0)
        ref = lambda xs: _linear_trained(x, y, xs, gamma0, kappa, batch, key)              # noqa: E731
    else:
        act, (alpha, beta) = ((dmft.activations.quadratic(0.8), (1.0, 0.4)) if case.startswith("quadratic")
                              else ("square", (0.0, 1.0)))
        centered = case == "square-fixed"
        model = dmft.TwoLayer(act, gamma0=gamma0, readout="fixed", centered=centered)
        ref = lambda xs: _quadratic_fixed(x, y, xs, alpha, beta, gamma0, kappa, batch, key, centered)  # noqa: E731
    sol = dmft.solve(model, data, schedule=schedule, method="closure", batch_key=key)
    assert sol.info["basis"] == ("weights" if D <= P + P_test else "kernel-eigenbasis")
    for got, xs in ((sol.f_test[-1], x_test), (sol.predict(x_new), x_new)):
        want = ref(xs)
        np.testing.assert_allclose(np.reshape(got, want.shape), want, rtol=1e-11, atol=1e-12)
