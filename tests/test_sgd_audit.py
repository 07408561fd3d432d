"""Minibatch SGD of the two-layer DMFT at settings the other tests leave out: a batch of one point,
a batch of all points but one, batches that do not divide P, three outputs, weight decay.

The references are written here from the update rules (docs/conventions.md): a minibatch step
replaces the full-batch average (1/P) sum_mu by the batch average (1/B) sum_{mu in batch}, on the
batches of `dmft.schedule.batch_indices` (the sequence the solvers and networks share).
- linear activation, trained readouts: the site (w, a) in R^(D + C) is Gaussian with mean zero
  and a step is linear in it, z <- M z, so its covariance moves as M S M^T and
  f_c(x) = (1 / gamma0) x~ . E[w a_c], x~ = x / sqrt(D);
- phi = h + (eps / 2) h^2, fixed readouts: w <- M w + c (M, c from the batch's errors), so the
  mean m and second moment Q = E[w w^T] move as M m + c and M Q M^T + M m c^T + c m^T M^T + c c^T;
- the lazy limit: kernel SGD with the arc-cosine NTK of relu, f <- f + (eta0 / B) K0[:, batch]
  (y - f)[batch] on train and test points alike.
"""

import jax
import numpy as np
import pytest

import dmft
from dmft.schedule import batch_indices

ETA0, STEPS = 0.3, 30


def _batches(key, P, B):
    return [np.asarray(batch_indices(key, k, P, B)) for k in range(STEPS)]


def _linear_reference(x, y, x_out, gamma0, kappa, batches):
    P, D = x.shape
    C = y.shape[1]
    xt = x / np.sqrt(D)
    cov = np.eye(D + C)
    for b in batches:
        err = y[b] - xt[b] @ cov[:D, D:] / gamma0                      # (B, C)
        g = xt[b].T @ err / len(b)                                     # (D, C)
        M = (1 - ETA0 * kappa) * np.eye(D + C)
        M[:D, D:] += ETA0 * gamma0 * g                                 # w += eta g0 / B sum (a . err) x~
        M[D:, :D] += ETA0 * gamma0 * g.T                               # a += eta g0 / B sum err (w . x~)
        cov = M @ cov @ M.T
    return x_out / np.sqrt(D) @ cov[:D, D:] / gamma0


def _quadratic_reference(x, y, x_out, eps, gamma0, kappa, batches):
    P, D = x.shape
    xt = x / np.sqrt(D)
    m, Q = np.zeros(D), np.eye(D)

    def f(rows):                                                       # centered: minus f at t = 0
        return (rows @ m + eps / 2 * (np.einsum("pi,ij,pj->p", rows, Q, rows) - np.sum(rows ** 2, 1))) / gamma0

    for b in batches:
        err = y[b, 0] - f(xt[b])
        M = (1 - ETA0 * kappa) * np.eye(D) + eps * ETA0 * gamma0 / len(b) * (xt[b].T * err) @ xt[b]
        c = ETA0 * gamma0 / len(b) * xt[b].T @ err                     # phi'(h) = 1 + eps h
        Mm = M @ m
        Q = M @ Q @ M.T + np.outer(Mm, c) + np.outer(c, Mm) + np.outer(c, c)
        m = Mm + c
    return f(x_out / np.sqrt(D))[:, None]


def _relu_ntk(x1, x2):
    """E[relu(u) relu(v)] + E[relu'(u) relu'(v)] x1.x2 / D, the angle from the wedge product (an
    arccos of the cosine is off by 1e-8 where two inputs coincide)."""
    D = x1.shape[1]
    dot = x1 @ x2.T / D
    outer = x1[:, None, :, None] * x2[None, :, None, :]
    wedge = np.sqrt(np.sum(np.triu(outer - np.swapaxes(outer, 2, 3), 1) ** 2, axis=(2, 3))) / D
    theta = np.arctan2(wedge, dot)
    norms = np.sqrt(np.outer(np.sum(x1 ** 2, 1), np.sum(x2 ** 2, 1))) / D
    phi = (norms * np.sin(theta) + (np.pi - theta) * dot) / (2 * np.pi)
    return phi + (np.pi - theta) / (2 * np.pi) * dot


def _problem(P, D, C, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(P, D)), rng.normal(size=(P, C))
    return dmft.Dataset(x, y, rng.normal(size=(4, D)), rng.normal(size=(4, C)))


# (P, B): a batch of one, all but one (a permutation's prefix), and batches that do not divide P
# (Floyd's draws); D above P + P* puts the closure in the kernel eigenbasis
@pytest.mark.parametrize("P, B, D, kappa", [(6, 1, 4, 0.0), (6, 5, 4, 0.3), (7, 3, 5, 0.2), (7, 1, 12, 0.25)])
def test_linear_closure_with_three_outputs_follows_the_minibatch_moment_recursion(P, B, D, kappa):
    """Measured: agreement to 1.1e-15 (outputs of size 0.2-1.1); 1e-11 leaves rounding of 30 steps
    room while a wrong batch weight (P / B) or decay order is off by > 1e-2."""
    data, key, gamma0 = _problem(P, D, 3, P * 10 + B), jax.random.key(11), 0.8
    sol = dmft.solve(dmft.TwoLayer("linear", gamma0=gamma0), data, method="closure", batch_key=key,
                     schedule=dmft.Schedule(ETA0, STEPS, 10, weight_decay=kappa, batch_size=B))
    batches = _batches(key, P, B)
    for got, xs in ((sol.f_train[-1], data.x_train), (sol.f_test[-1], data.x_test)):
        want = _linear_reference(data.x_train, data.y_train, xs, gamma0, kappa, batches)
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("P, B, D, kappa", [(6, 1, 4, 0.0), (6, 5, 4, 0.3), (7, 2, 14, 0.1)])
def test_kumar_closure_follows_the_minibatch_moment_recursion(P, B, D, kappa):
    """Measured: agreement to 2.2e-15; tolerance as above."""
    data, key, gamma0, eps = _problem(P, D, 1, P * 10 + B), jax.random.key(11), 0.8, 0.6
    model = dmft.TwoLayer(dmft.activations.quadratic(eps), gamma0=gamma0, readout="fixed")
    sol = dmft.solve(model, data, method="closure", batch_key=key,
                     schedule=dmft.Schedule(ETA0, STEPS, 10, weight_decay=kappa, batch_size=B))
    batches = _batches(key, P, B)
    for got, xs in ((sol.f_train[-1], data.x_train), (sol.f_test[-1], data.x_test)):
        want = _quadratic_reference(data.x_train, data.y_train, xs, eps, gamma0, kappa, batches)
        np.testing.assert_allclose(np.reshape(got, want.shape), want, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("P, B, C, eta0", [(8, 1, 1, 0.5), (8, 7, 3, 0.7), (10, 3, 3, 1.5)])
def test_lazy_sgd_is_kernel_sgd_with_the_relu_ntk(P, B, C, eta0):
    """Measured: agreement to 1.4e-14 over 30 steps (outputs up to 2.3); tolerance 1e-11."""
    data, key = _problem(P, 5, C, P + B), jax.random.key(5)
    sol = dmft.solve(dmft.TwoLayer("relu", gamma0=1.0), data, eta0=eta0, steps=STEPS, save_every=STEPS,
                     batch_size=B, method="lazy", batch_key=key)
    k_train, k_test = _relu_ntk(data.x_train, data.x_train), _relu_ntk(data.x_test, data.x_train)
    f, f_test = np.zeros((P, C)), np.zeros((4, C))
    for b in _batches(key, P, B):
        err = data.y_train.reshape(P, C)[b] - f[b]
        f, f_test = f + eta0 / B * k_train[:, b] @ err, f_test + eta0 / B * k_test[:, b] @ err
    np.testing.assert_allclose(np.reshape(sol.f_train[-1], f.shape), f, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(np.reshape(sol.f_test[-1], f_test.shape), f_test, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(np.reshape(sol.predict(data.x_test), f_test.shape), f_test, rtol=1e-11, atol=1e-12)


def test_lazy_sgd_does_not_claim_a_stable_step():
    """info["stable"] was True for every minibatch lazy solve: here (B = 1, eta0 = 3.5) the
    full-batch step is stable (eta0 lambda_max / P = 0.76) but the batch steps are not, and the
    test loss grows from 0.14 to 3e5-3e8 in 60 steps (keys 1-5), short of the runaway rule. No
    step-size test decides SGD's stability: None (unknown), while full-batch descent keeps its
    criterion."""
    data = _problem(8, 5, 1, 0)
    model = dmft.TwoLayer("relu", gamma0=1.0)
    full = dmft.solve(model, data, eta0=3.5, steps=60, save_every=15, method="lazy")
    assert full.info["stable"] is True and full.info["lazy_eta0_stability"] < 1
    sgd = dmft.solve(model, data, eta0=3.5, steps=60, save_every=15, batch_size=1, method="lazy",
                     batch_key=jax.random.key(1))
    assert sgd.test_loss[-1] > 1e4 * sgd.test_loss[0]        # (3.4e6 against 0.14)
    assert sgd.info["stable"] is None
