"""SGD's stability at the minimum of a deep linear network: `dl.sgd_lyapunov` (the top Lyapunov
exponent of the linearized per-batch steps) and the warning `networks.train`, `mode_sde` and the
dln job give before compute where it is positive (below full-batch GD's limit h = 2)."""

import warnings

import jax
import numpy as np
import pytest
from scipy import optimize, special

import dmft
import networks
from dmft import deep_linear as dl
from networks import deep_linear as ndl


def _online(d=4):
    return dmft.tasks.linear_teacher(d_in=d, d_out=d, singular_values=[1.0], P=None, key=0)


def _closed_form(eta, d, n=200):
    """Depth 1, online, B = 1: the map of u (each row of W - M) is A = I - eta x x^T, x ~ N(0, I_d).
    A's law is invariant under u -> O u (O orthogonal), so the uniform law on directions is
    stationary and the exponent is E log |A e| for any unit e (Furstenberg): with z = x . e ~ N(0, 1)
    and c = |x|^2 - z^2 ~ chi^2_(d-1) independent, |A e|^2 = (1 - eta z^2)^2 + eta^2 z^2 c, so
    exponent = E log[(1 - eta z^2)^2 + eta^2 z^2 c] / 2, by Gauss-Hermite (z) and generalized
    Gauss-Laguerre (c / 2 ~ Gamma((d-1)/2)) quadrature on n x n nodes: n = 200 agrees with scipy's
    adaptive dblquad to 3e-5 at eta = 0.3, 0.4, 0.5 (n = 100: 1e-4)."""
    z, wz = special.roots_hermitenorm(n)
    t, wt = special.roots_genlaguerre(n, (d - 1) / 2 - 1)
    wz, wt = wz / np.sqrt(2 * np.pi), wt / special.gamma((d - 1) / 2)
    Z, C = np.meshgrid(z, 2 * t, indexing="ij")
    return 0.5 * np.einsum("i,j,ij->", wz, wt, np.log((1 - eta * Z * Z) ** 2 + eta ** 2 * Z * Z * C))


@pytest.mark.parametrize("eta", [0.3, 0.4, 0.5])
def test_the_exponent_at_depth_1_online_batch_1_is_the_closed_form(eta):
    """Against the rank-one closed form (`_closed_form`): within 4 standard errors (the estimate's
    own, 0.0014-0.0019 at 16 chains x 2000 steps; over keys 0-5 and these three eta the largest
    deviation was 2.8 standard errors) and 0.002 absolute for the quadrature (its error: 3e-5). The closed form crosses 0 at
    eta ~ 0.437 (runs settle at 0.4, run away at 0.5), where mean-square stability (1 - 2 eta +
    eta^2 (d + 2) < 1: eta < 1/3) already fails: the test would fail for that criterion."""
    model = dmft.DeepLinear(1, 4, 0.1, "aligned")
    est = dl.sgd_lyapunov(model, _online(), eta0=eta, batch_size=1, key=jax.random.key(0))
    want = _closed_form(eta, 4)
    assert est.stderr < 0.003 and est.dim == 16
    assert abs(est.exponent - want) < 4 * est.stderr + 0.002, (est, want)
    assert est.unstable == (eta == 0.5)


def test_the_largest_stable_eta0_is_the_closed_forms_root():
    """(~3 s) Bisection on common keys against the closed form's root (0.437): within 3% (the
    exponent's slope there is ~0.3 per unit eta, its standard error ~0.0015: ~1% in eta)."""
    root = optimize.brentq(lambda e: _closed_form(e, 4), 0.35, 0.5, xtol=1e-4)
    model = dmft.DeepLinear(1, 4, 0.1, "aligned")
    got = dl.largest_stable_eta0(model, _online(), batch_size=1, high=0.6)
    assert abs(got - root) < 0.03 * root, (got, root)


def _minimum_weights(model, modes, kappa):
    """The aligned, balanced weights at the fixed points pi*_i (`dl.fixed_points`; a mode the decay
    switches off at 0): each layer carries a_i = pi*_i^(1/L) on mode i, laid out as
    networks.deep_linear lays out an aligned start (the first r hidden units carry the modes)."""
    L = model.depth
    star = dl._fixed_points(modes.s, L, kappa)
    star = np.where(np.isfinite(star), star, 0.0)
    U, V = np.asarray(modes.U, np.float64), np.asarray(modes.V, np.float64)
    if L == 1:
        return ((U * star) @ V.T,)
    a = star ** (1.0 / L)
    Q = np.eye(model.width, star.size)
    return tuple([(Q * a) @ V.T] + [(Q * a) @ Q.T for _ in range(L - 2)] + [(U * a) @ Q.T])


def _end_to_end(Ws):
    out = Ws[0]
    for W in Ws[1:]:
        out = W @ out
    return out


def _kernel_from_weights(Ws):
    """N = T T^* built from the weights alone: T d = sum_l A_l d_l B_l (the jvp of W_tot = A_l W_l
    B_l), so N(u) = sum_l A_l A_l^T u B_l^T B_l, in row-major vec sum_l kron(A_l A_l^T, B_l^T B_l)."""
    d_out, d_in = Ws[-1].shape[0], Ws[0].shape[1]
    N = np.zeros((d_out * d_in, d_out * d_in))
    for l in range(len(Ws)):
        A, Bm = np.eye(d_out), np.eye(d_in)
        for W in Ws[:l:-1]:
            A = A @ np.asarray(W)
        for W in Ws[:l]:
            Bm = np.asarray(W) @ Bm
        N += np.kron(A @ A.T, Bm.T @ Bm)
    return N


@pytest.mark.parametrize("depth, kappa", [(1, 0.0), (2, 0.0), (3, 0.0), (3, 0.2)])
def test_the_mode_kernel_is_the_tangent_kernel_of_the_weights(depth, kappa):
    """The closed form the estimate uses (`_mode_kernel`: N diagonal in the modes' completed bases,
    nu_ij = sum_l alpha_i beta_j) equals N built from the minimum's weights by Kronecker products,
    to rounding, at depths 1-3, with a decay that switches a mode off (s = 0.1 at kappa = 0.2);
    its range has r (d_in + d_out - r) directions at depth >= 2, all d_in d_out at depth 1."""
    data = dmft.tasks.linear_teacher(d_in=5, d_out=3, singular_values=[2.0, 1.0, 0.1], P=12, key=1)
    model = dmft.DeepLinear(depth, 6, 0.5, "aligned")
    modes = dl.effective_modes(data)
    Uf, Vf, nu = dl._mode_kernel(model, modes, kappa)
    N = _kernel_from_weights(_minimum_weights(model, modes, kappa))
    F = np.kron(Uf, Vf)                     # (row-major vec of Uf E_ij Vf^T is kron(Uf, Vf)[:, ij])
    np.testing.assert_allclose(F @ np.diag(nu.ravel()) @ F.T, N, atol=1e-12 * np.abs(N).max())
    alive = int(np.sum(np.isfinite(dl.fixed_points(model, data, weight_decay=kappa))
                       & (np.abs(dl.fixed_points(model, data, weight_decay=kappa)) > 0))) if kappa else 3
    want = 15 if depth == 1 else alive * (5 + 3 - alive)
    assert int(np.sum(nu > 1e-10 * nu.max())) == want


def test_the_linearized_map_is_the_networks_own_step():
    """(~1 s) The map u -> u - eta N(u S_b) that the estimate iterates (N from `_mode_kernel`) is
    the networks' step (networks/deep_linear.py's `step`, the same batch) linearized at the
    minimum: a change eps v of the weights (depth 3, a fixed set, B = 3) moves W_tot after one step
    as predicted, to O(eps^2) (eps = 1e-6: relative 1e-5 allowed, measured 1e-7 to 1e-6)."""
    data = dmft.tasks.linear_teacher(d_in=4, d_out=3, singular_values=[2.0, 1.0], P=12, key=1)
    model = dmft.DeepLinear(3, 5, 0.5, "aligned")
    eta, B, eps = 0.05, 3, 1e-6
    Ws = _minimum_weights(model, dl.effective_modes(data), 0.0)
    Uf, Vf, nu = dl._mode_kernel(model, dl.effective_modes(data), 0.0)
    rng = np.random.default_rng(0)
    V = tuple(rng.standard_normal(W.shape) for W in Ws)
    Wp = tuple(W + eps * v for W, v in zip(Ws, V))
    W0 = _end_to_end(Ws)
    u = np.asarray(_end_to_end(Wp)) - W0
    modes = dl.effective_modes(data)
    sh = ndl.Shared(*(jax.numpy.asarray(a) for a in (modes.U, modes.V, data.M, data.label_noise, data.x_train,
                                                       data.y_train, eta, 0.0)))
    bkey = jax.random.key(7)
    seeds = ndl.Seed(bkey[None], None, bkey[None])
    st = ndl.State(tuple(jax.numpy.asarray(W)[..., None] for W in Wp), jax.numpy.zeros(1, int),
                   jax.numpy.full(1, -1))
    new = ndl.step(ndl.Static(False, B, data.P, 0), (sh, seeds), st, None)
    after = np.asarray(_end_to_end(tuple(W[..., 0] for W in new.Ws))) - W0
    x = data.x_train[np.asarray(dmft.schedule.batch_indices(bkey, 0, data.P, B))]
    g = u @ x.T @ x / B
    want = u - eta * Uf @ (nu * (Uf.T @ g @ Vf)) @ Vf.T
    assert np.max(np.abs(after - want)) < 1e-5 * np.max(np.abs(u))
    assert np.max(np.abs(after - u)) > 1e-3 * np.max(np.abs(u))        # (the step did move it)


class _Stop(Exception):
    pass


def _stop(*a, **k):
    raise _Stop


@pytest.mark.parametrize("eta, unstable", [(0.5, True), (0.4, False)])
def test_networks_and_the_sde_warn_before_compute_where_sgd_is_unstable(monkeypatch, eta, unstable):
    """(~4 s) Online depth 1, d_in = 4, B = 1 (h = eta0: far below GD's 2): at eta0 = 0.5 every
    network runs away (tests/test_dln_walkthrough.py), at 0.4 they settle. The warning fires at 0.5
    before the run starts (the run is replaced by an exception) and names the exponent and the
    largest stable eta0 (~0.44); at 0.4 nothing is said."""
    data, model = _online(), dmft.DeepLinear(1, 4, 0.1, "aligned")
    monkeypatch.setattr(ndl, "run_saved", _stop)
    monkeypatch.setattr(dl, "run_saved", _stop)
    calls = [lambda: networks.train(model, data, seeds=4, eta0=eta, steps=1000, save_every=100, batch_size=1),
             lambda: dl.mode_sde(model, data, eta0=eta, batch_size=1, steps=1000, save_every=100, paths=4)]
    for call in calls:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            with pytest.raises(_Stop):
                call()
        text = [str(w.message) for w in said if "Lyapunov" in str(w.message)]
        assert bool(text) == unstable
        if unstable:
            assert "cannot settle at the target minimum" in text[0]
            limit = float(text[0].split("largest stable eta0 at this batch size is about ")[1].split(";")[0])
            assert 0.42 < limit < 0.45


def test_a_fixed_set_whose_every_step_contracts_is_not_estimated(monkeypatch):
    """(~1 s) On a fixed set with eta0 nu_max max |x|^2 <= 2 every batch's map is a contraction,
    so the warning skips the estimate (none is run: `sgd_lyapunov` replaced by an exception), and
    the estimate agrees that it is negative there."""
    data = dmft.tasks.linear_teacher(d_in=4, d_out=4, singular_values=[1.0], P=16, key=0)
    model = dmft.DeepLinear(2, 6, 0.3, "aligned")
    top = float(np.max(np.sum(data.x_train ** 2, axis=1)))
    eta = 1.9 / (2 * top)                                   # nu_max = 2 s = 2 at depth 2
    assert dl.sgd_lyapunov(model, data, eta0=eta, batch_size=2).exponent < 0
    monkeypatch.setattr(dl, "sgd_lyapunov", _stop)
    assert dl.warn_sgd_unstable(model, data, eta0=eta, batch_size=2, weight_decay=0.0, what="x") is None
    with pytest.raises(_Stop):
        dl.warn_sgd_unstable(model, data, eta0=3 * eta, batch_size=2, weight_decay=0.0, what="x")


@pytest.mark.parametrize("kw, match", [
    (dict(eta0=0.0), "eta0"), (dict(eta0=float("nan")), "eta0"), (dict(batch_size=0), "batch_size"),
    (dict(batch_size=17), "batch_size"), (dict(chains=1), "chains"), (dict(steps=3), "steps"),
    (dict(weight_decay=-1.0), "weight_decay"), (dict(weight_decay=20.0), "weight_decay|eta0"),
    (dict(key="k"), "key"), (dict(burn=-1), "burn")])
def test_bad_inputs_are_refused_before_compute(kw, match):
    data = dmft.tasks.linear_teacher(d_in=4, d_out=4, singular_values=[1.0], P=16, key=0)
    args = dict(eta0=0.1, batch_size=2) | kw
    with pytest.raises(dmft.InputError, match=match):
        dl.sgd_lyapunov(dmft.DeepLinear(2, 6, 0.3, "aligned"), data, **args)
    with pytest.raises(dmft.InputError, match="model"):
        dl.sgd_lyapunov("net", data, eta0=0.1, batch_size=2)


def test_the_dln_job_records_and_reports_an_unstable_step(tmp_path):
    """`dmft dln` online, depth 1, d_in = 4, B = 1: at eta0 = 0.5 (h = 0.5) every network runs away;
    the job warns before its networks train, records the exponent (> 0) and its report says SGD is
    unstable at the minimum; at eta0 = 0.1 the exponent is recorded negative and nothing is said."""
    import json

    from experiments import dln

    base = ["teacher.d_in=4", "teacher.d_out=4", "teacher.singular_values=[1.0]", "teacher.P=0",
            "teacher.label_noise=[0.0]", "model.depth=1", "model.width=4", "model.init_scale=0.1",
            "train.steps=200", "train.save_every=50", "train.batch_size=1", "train.seeds=8",
            "theory.paths=8", "staircase.seeds=0"]
    for eta, unstable in ((0.5, True), (0.1, False)):
        out = tmp_path / str(eta)
        cfg = dln.load_config(None, base + [f"train.eta0={eta}"])
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            dln.run(cfg, str(out), log=lambda *a: None)
        assert any("Lyapunov" in str(w.message) for w in said) == unstable
        ly = json.loads((out / "report.json").read_text())["studies"][0]["sgd_lyapunov"]
        assert ly["unstable"] == unstable and (ly["exponent"] > 0) == unstable
        text = (out / "report.md").read_text()
        assert ("SGD is unstable at the target minimum at this eta0 and batch size" in text) == unstable
