"""`networks.train` against a plain-numpy two-layer network written from the theory notes alone.

The reference steps THEORY.md's update rules as written, not an autodiff gradient:

    f = (1 / (gamma0 N)) sum_i a_i phi(w_i . x / sqrt(D))         (minus f(theta_0) when centered)
    a_ic <- (1 - eta0 kappa) a_ic + eta0 (gamma0 / B) sum_mu Delta_mu,c phi(h_i,mu)
    w_i  <- (1 - eta0 kappa) w_i  + eta0 (gamma0 / B) sum_mu (a_i . Delta_mu) phi'(h_i,mu) x_mu / sqrt(D)

over the step's B points (B = P for gradient descent; the batch of `dmft.schedule.batch_indices`
for SGD), and gradient flow by classical RK4 of the same velocity at step eta0. It starts from
the run's own initial weights (keep_params=True) and is compared record by record: predictions,
losses (plain mean squared errors over points and outputs), the three kernels, the alignment and
the weight changes as docs/conventions.md defines them, and the final weights.

Tolerance 1e-10 relative to each record's largest value: in float64 the two agree to 3.4e-15 at
most over 31 configurations (12 steps each, the ones below among them); a units error (a factor
gamma0, N, P/B or sqrt(D), the decay applied after the step instead of before) moves them by
1e-3 or more.
"""

import jax
import numpy as np
import pytest

import dmft
import networks
from dmft.schedule import batch_indices

RTOL = 1e-10
STEPS, WIDTH, SEEDS = 8, 8, 2

ACTS = {
    "relu": (lambda h: np.maximum(h, 0.0), lambda h: (h > 0).astype(float)),
    "tanh": (np.tanh, lambda h: 1.0 - np.tanh(h) ** 2),
    "linear": (lambda h: h, np.ones_like),
    "quadratic": (lambda h: h + 0.35 * h * h, lambda h: 1.0 + 0.7 * h),      # eps = 0.7
}


def _model(act, **kw):
    return dmft.TwoLayer(dmft.activations.quadratic(0.7) if act == "quadratic" else act, **kw)


def _forward(phi, w, a, x, gamma0):
    return phi(x @ w.T / np.sqrt(x.shape[1])) @ a / (gamma0 * w.shape[0])


def _velocity(act, w, a, x, y, f0, gamma0, trained, kappa):
    """d(w, a)/dt of THEORY.md sections 1 and 8 on the points given (their mean)."""
    phi, dphi = act
    n_pts, d = x.shape
    h = x @ w.T / np.sqrt(d)                                   # (points, N)
    delta = y - (phi(h) @ a / (gamma0 * w.shape[0]) - f0)     # (points, C)
    vw = gamma0 / n_pts * ((delta @ a.T) * dphi(h)).T @ x / np.sqrt(d) - kappa * w
    va = gamma0 / n_pts * phi(h).T @ delta - kappa * a if trained else np.zeros_like(a)
    return vw, va


def _records(act, w, a, w0, a0, data, f0, f0t, gamma0, trained):
    phi, dphi = act
    x, xt = np.asarray(data.x_train), np.asarray(data.x_test)
    y = np.asarray(data.targets("train")).reshape(data.P, -1)
    n, d = w.shape
    h = x @ w.T / np.sqrt(d)
    feat = phi(h) @ phi(h).T / n
    grad = (dphi(h) * np.mean(a * a, axis=1)) @ dphi(h).T / n      # a^2 averaged over outputs
    ntk = grad * (x @ x.T / d) + (feat if trained else 0.0)
    return {"f_train": _forward(phi, w, a, x, gamma0) - f0, "f_test": _forward(phi, w, a, xt, gamma0) - f0t,
            "feature_kernel": feat, "gradient_kernel": grad, "ntk": ntk,
            "alignment": np.sum(y * (ntk @ y)) / (np.linalg.norm(ntk) * np.sum(y * y)),
            "first_layer": np.linalg.norm(w - w0) / np.sqrt(w0.size),
            "readout": np.linalg.norm(a - a0) / np.sqrt(a0.size) if trained else 0.0}


def _reference(act, w0, a0, data, model, eta0, kappa, B, bkey, flow):
    g, trained = model.gamma0, model.trained_readout
    x, xt = np.asarray(data.x_train), np.asarray(data.x_test)
    y = np.asarray(data.targets("train")).reshape(data.P, -1)
    f0 = _forward(act[0], w0, a0, x, g) if model.centered else 0.0 * y
    f0t = _forward(act[0], w0, a0, xt, g) if model.centered else 0.0
    w, a = w0.copy(), a0.copy()
    recs = [_records(act, w, a, w0, a0, data, f0, f0t, g, trained)]
    for k in range(STEPS):
        if flow:
            def vel(p):
                return _velocity(act, p[0], p[1], x, y, f0, g, trained, kappa)
            k1 = vel((w, a))
            k2 = vel((w + eta0 / 2 * k1[0], a + eta0 / 2 * k1[1]))
            k3 = vel((w + eta0 / 2 * k2[0], a + eta0 / 2 * k2[1]))
            k4 = vel((w + eta0 * k3[0], a + eta0 * k3[1]))
            w = w + eta0 / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            a = a + eta0 / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        else:
            rows = np.arange(data.P) if B is None else np.asarray(batch_indices(bkey, k, data.P, B))
            vw, va = _velocity(act, w, a, x[rows], y[rows], f0[rows], g, trained, kappa)
            w, a = w + eta0 * vw, a + eta0 * va
        recs.append(_records(act, w, a, w0, a0, data, f0, f0t, g, trained))
    out = {k: np.stack([r[k] for r in recs]) for k in recs[0]}
    yt = np.asarray(data.targets("test")).reshape(data.P_test, -1)
    out["train_loss"] = np.mean((y - out["f_train"]) ** 2, axis=(1, 2))
    out["test_loss"] = np.mean((yt - out["f_test"]) ** 2, axis=(1, 2))
    if data.scalar:
        out["f_train"], out["f_test"] = out["f_train"][..., 0], out["f_test"][..., 0]
    return out, w, a


def _data(C):
    if C == 1:
        return dmft.tasks.single_index(D=5, P=12, P_test=7, degree=2, key=jax.random.key(1))
    rng = np.random.default_rng(0)
    return dmft.Dataset(rng.standard_normal((12, 5)), rng.standard_normal((12, 3)),
                        rng.standard_normal((7, 5)), rng.standard_normal((7, 3)))


# (activation, readout, centered, C, eta0, weight decay kappa, batch: None / "key" (a shared
# batch_key) / "own" (each seed's documented own key), dynamics)
CASES = [
    ("relu", "trained", True, 1, 0.3, 0.0, None, "gd"),
    ("tanh", "fixed", False, 1, 0.3, 0.3, None, "gd"),
    ("linear", "trained", False, 3, 0.2, 0.4, None, "gd"),
    ("quadratic", "fixed", True, 1, 0.2, 0.2, "key", "gd"),
    ("tanh", "trained", True, 3, 0.3, 0.0, "own", "gd"),
    ("quadratic", "trained", True, 3, 0.2, 0.4, None, "flow"),
    ("relu", "fixed", False, 1, 0.3, 0.0, None, "flow"),
]


@pytest.mark.parametrize("act, readout, centered, C, eta0, kappa, batch, dynamics", CASES)
def test_networks_follow_the_theory_update_rules(act, readout, centered, C, eta0, kappa, batch, dynamics):
    """Every record of `networks.train` equals the numpy reference's, from the same initial weights."""
    data = _data(C)
    model = _model(act, gamma0=0.7, readout=readout, centered=centered)
    key, B = jax.random.key(3), (4 if batch else None)
    kw = dict(eta0=eta0, steps=STEPS, save_every=1, key=key, keep_params=True, kernels=True,
              weight_decay=kappa, dynamics=dynamics)
    if batch:
        kw["batch_size"] = B
    if batch == "key":
        kw["batch_key"] = jax.random.key(11)
    run = networks.train(model, data, width=WIDTH, seeds=SEEDS, **kw)
    np.testing.assert_allclose(run.t, eta0 * np.arange(STEPS + 1), rtol=1e-15)
    trained = readout == "trained"
    for s in range(SEEDS):
        w0 = np.asarray(run.params0["w"][s])
        a0 = np.asarray(run.params0["a"][s]) if trained else np.ones((WIDTH, 1))
        if batch == "own":     # documented: seed s's key fold_in(fold_in(key, N), s), batches from
            seed_key = jax.random.fold_in(jax.random.fold_in(key, WIDTH), s)    # fold_in(it, 2^31 - 1)
            bkey = jax.random.fold_in(seed_key, 2 ** 31 - 1)
            p0 = networks.init_params(seed_key, WIDTH, data.D, C, trained, False, np.float64)
            np.testing.assert_array_equal(p0["w"], w0)
        else:
            bkey = kw.get("batch_key")
        ref, w, a = _reference(ACTS[act], w0, a0, data, model, eta0, kappa, B, bkey, dynamics == "flow")
        got = {"f_train": run.f_train[s], "f_test": run.f_test[s], "train_loss": run.train_loss[s],
               "test_loss": run.test_loss[s], "ntk": run.ntk[s], "feature_kernel": run.feature_kernel[s],
               "gradient_kernel": run.gradient_kernel[s], "alignment": run.alignment[s],
               "first_layer": run.weight_change["first_layer"][s], "readout": run.weight_change["readout"][s]}
        for name, value in got.items():
            scale = np.max(np.abs(ref[name]))
            if name == "readout" and not trained:
                assert np.all(value == 0)
                continue
            err = np.max(np.abs(np.asarray(value) - ref[name])) / scale
            assert err < RTOL, (name, s, err)
        np.testing.assert_allclose(run.params["w"][s], w, rtol=0, atol=RTOL * np.max(np.abs(w)))
        if trained:
            np.testing.assert_allclose(run.params["a"][s], a, rtol=0, atol=RTOL * np.max(np.abs(a)))
        # not a trivial agreement: the network moved (predictions and first layer)
        f = ref["f_train"].reshape(STEPS + 1, -1)
        assert np.max(np.abs(f[-1] - f[0])) > 0.05 * np.max(np.abs(f[-1]))
        assert ref["first_layer"][-1] > 1e-3


@pytest.mark.parametrize("readout", ["trained", "fixed"])
def test_recorded_ntk_is_the_rate_of_the_predictions(readout):
    """One output: df/dt = K Delta / P with the recorded K (docs/conventions.md), checked against the
    exact chain-rule rate of the final weights (no finite difference). With C outputs the recorded
    K (readouts' squares averaged over outputs) is not that rate at finite width nor, once the
    readouts of different outputs correlate, at infinite width: the rate needs the outputs' cross
    terms <a_c a_c' phi' phi'>, which the test checks instead."""
    for C in (1, 3):
        if C == 3 and readout == "fixed":
            continue
        data = _data(C)
        model = _model("tanh", gamma0=1.0, readout=readout)
        run = networks.train(model, data, width=WIDTH, seeds=1, eta0=0.3, steps=STEPS, save_every=STEPS,
                             key=jax.random.key(4), keep_params=True, kernels=True)
        w = np.asarray(run.params["w"][0])
        w0 = np.asarray(run.params0["w"][0])
        trained = readout == "trained"
        a = np.asarray(run.params["a"][0]) if trained else np.ones((WIDTH, 1))
        a0 = np.asarray(run.params0["a"][0]) if trained else np.ones((WIDTH, 1))
        x = np.asarray(data.x_train)
        y = np.asarray(data.targets("train")).reshape(data.P, -1)
        f0 = _forward(np.tanh, w0, a0, x, 1.0)
        vw, va = _velocity(ACTS["tanh"], w, a, x, y, f0, 1.0, trained, 0.0)
        h = x @ w.T / np.sqrt(data.D)
        dphi = 1 - np.tanh(h) ** 2
        rate = (dphi * (x @ vw.T / np.sqrt(data.D))) @ a / WIDTH + np.tanh(h) @ va / WIDTH
        delta = y - run.f_train[0, -1].reshape(data.P, -1)
        kx = x @ x.T / data.D
        if C == 1:
            pred = run.ntk[0, -1] @ delta / data.P
        else:
            cross = np.einsum("ic,id,mi,ni->mncd", a, a, dphi, dphi) / WIDTH    # <a_c a_d phi' phi'>
            pred = (run.feature_kernel[0, -1] @ delta
                    + np.einsum("mncd,mn,nd->mc", cross, kx, delta)) / data.P
            averaged = run.ntk[0, -1] @ delta / data.P
            assert np.max(np.abs(averaged - rate)) > 0.05 * np.max(np.abs(rate))
        np.testing.assert_allclose(pred, rate, rtol=0, atol=1e-12 * np.max(np.abs(rate)))
