"""The DMFT's kernel records (`Solution.ntk`, `feature_kernel`, `gradient_kernel`, `alignment`,
`weight_change`) in THEORY.md's units, pinned from two sides:

- at t = 0, against the lazy kernels written here in closed form from the notes (relu's
  arc-cosine kernels, the linear activation's K^x and 1), for the forward solver, the closure and
  the lazy method, trained and fixed readouts, one and three outputs: to rounding;
- at t > 0, against ensembles of finite networks (`networks.train`, whose records
  tests/test_networks_reference.py pins to a numpy network written from the notes), on the same
  time axis: the seed mean within the finite-width and sampling error.

(The networks' own records are pinned by tests/test_networks_reference.py, not again here.)
"""

import jax
import numpy as np
import pytest

import dmft
import networks

P, D, C = 8, 4, 3
EXACT = 1e-12          # t = 0 records against closed forms: float64 rounding (measured <= 2e-15)
# Relative error of the seed mean of 4 networks of width 2048 (one key) against the DMFT at t = 5,
# per record (Frobenius for the kernels): measured over 6 network keys at most 2.1e-2 (relu's NTK
# against a 4096-node forward solve), 1.9e-2 (feature kernels), 6.9e-3 (weight changes) and 4.5e-3
# (alignment). A units error moves a record by a factor: G summed rather than averaged over the
# C = 3 outputs (x3), a weight change without its 1 / sqrt(D) or 1 / sqrt(C) (x2, x1.7), the NTK
# without K^x, the alignment normalized by |y| rather than |y|^2.
LIMIT = 0.06


def _data(c):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((P, D)), rng.standard_normal((P, C))
    return dmft.Dataset(x, y if c > 1 else y[:, 0])


def _lazy_reference(act, data, trained):
    """Phi0, G0, K0 and A(K0, y) of THEORY.md sections 2 and 4 for u ~ N(0, K^x)."""
    x = np.asarray(data.x_train)
    kx = x @ x.T / x.shape[1]
    if act == "linear":
        phi0, g0 = kx, np.ones_like(kx)
    else:                                   # relu: arc-cosine kernels of degree 1 and 0
        s = np.sqrt(np.outer(np.diag(kx), np.diag(kx)))
        th = np.arccos(np.clip(kx / s, -1.0, 1.0))
        phi0 = s / (2 * np.pi) * (np.sin(th) + (np.pi - th) * np.cos(th))
        g0 = (np.pi - th) / (2 * np.pi)     # E[a^2] = 1 (trained) or a = 1 (fixed)
    k0 = g0 * kx + (phi0 if trained else 0.0)
    y = np.asarray(data.y_train).reshape(P, -1)
    return {"feature_kernel": phi0, "gradient_kernel": g0, "ntk": k0,
            "alignment": np.sum(y * (k0 @ y)) / (np.linalg.norm(k0) * np.sum(y * y))}


@pytest.mark.parametrize("act, readout, c, method", [
    ("relu", "trained", 3, "forward"), ("relu", "fixed", 1, "forward"), ("relu", "trained", 3, "lazy"),
    ("linear", "trained", 3, "closure")])
def test_records_at_t0_are_the_lazy_kernels_of_the_notes(act, readout, c, method):
    data = _data(c)
    model = dmft.TwoLayer(act, 1.0, readout)
    kw = dict(samples=256, replicas=2) if method == "forward" else {}
    sol = dmft.solve(model, data, eta0=0.5, steps=4, save_every=2, method=method, kernels=True,
                     key=jax.random.key(0), **kw)
    assert np.allclose(sol.t, [0.0, 1.0, 2.0], rtol=0, atol=1e-15)          # t = k eta0
    ref = _lazy_reference(act, data, readout == "trained")
    for name, want in ref.items():
        got = np.asarray(getattr(sol, name))[0]
        assert np.max(np.abs(got - want)) <= EXACT * max(1.0, np.max(np.abs(want))), name
    for group in ("first_layer", "readout"):
        assert sol.weight_change[group][0] == 0.0


@pytest.mark.parametrize("act, readout, c, method", [("linear", "trained", 3, "closure"),
                                                     ("relu", "fixed", 1, "forward")])
def test_records_are_the_limit_of_the_networks_records(act, readout, c, method):
    data = _data(c)
    model = dmft.TwoLayer(act, 1.0, readout)
    kw = dict(samples=2 ** 12, replicas=4) if method == "forward" else {}
    sched = dict(eta0=0.5, steps=10, save_every=10)
    sol = dmft.solve(model, data, method=method, kernels=True, key=jax.random.key(0), **sched, **kw)
    run = networks.train(model, data, width=2048, seeds=4, kernels=True, key=jax.random.key(0), **sched)
    np.testing.assert_array_equal(sol.t, run.t)
    for name in ("ntk", "feature_kernel", "gradient_kernel", "alignment"):
        th, net = np.asarray(getattr(sol, name))[-1], np.asarray(getattr(run, name))[:, -1].mean(axis=0)
        assert np.linalg.norm(net - th) / np.linalg.norm(th) < LIMIT, name
    for group in ("first_layer", "readout"):
        th, net = sol.weight_change[group][-1], np.mean(run.weight_change[group][:, -1])
        assert abs(net - th) <= LIMIT * th, group
    assert sol.weight_change["first_layer"][-1] > 0.3                        # the weights moved
    assert (sol.weight_change["readout"][-1] > 0.3) == (readout == "trained")


def test_lazy_weight_change_is_the_small_gamma0_limit_of_the_closure():
    """The lazy method's linearized weight changes (from S = int Delta dt) are the exact closure's
    as gamma0 -> 0: relative difference O(gamma0^2), measured 1.5e-7 at gamma0 = 1e-3 (1.5e-5 at
    1e-2) for both groups; a factor in their normalization (P, D, C, gamma0) is O(1)."""
    data = _data(C)
    model = dmft.TwoLayer("linear", 1e-3)
    sched = dict(eta0=0.5, steps=20, save_every=10)
    lazy = dmft.solve(model, data, method="lazy", **sched)
    exact = dmft.solve(model, data, method="closure", **sched)
    for group in ("first_layer", "readout"):
        got, want = lazy.weight_change[group][1:], exact.weight_change[group][1:]
        assert np.all(want > 1e-4), group                                    # (moved: O(gamma0))
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=group)
