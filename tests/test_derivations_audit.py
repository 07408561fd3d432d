"""Independent checks of formulas in docs/derivations.md (and THEORY.md section 8) that the code
relies on, where the existing tests compare them only statistically or not at all.

Each test recomputes a derived formula from its starting point (a second-order expansion of
the exact gradient, an exact enumeration of minibatches, the exact one-step moments of the
layer-scalar recursion, an exact Gaussian quadrature) and compares it with the library's
function on the same inputs. (The closures, the lazy limit under SGD and the lazy kernels'
closed forms were checked the same way and already have such tests: test_closure_reference.py,
test_solvers.py, test_sgd_audit.py, test_activations.py.)"""

import itertools
import math

import numpy as np
import pytest

import dmft
from dmft import deep_linear as dl
from validation.grokking import kumar_decomposition


# ---------------------------------------------------------------- deep linear: cross-mode drift

def _second_order_drift(L, a, M, var):
    """sum_jk (1/2) d^2 F / dx_jk^2 var_jk: the mean drift of each pi_i at second order in the
    misalignments x_jk (independent, zero mean, variances var), where each layer is
    W_m = diag(a) + E_m with E_m,jk = phi_jk,m x_jk / K_jk (docs/derivations.md, section 6,
    "The cross-mode drift"), and F = sum_l (pi_i / a_i) [A_l^T (M - W_tot) B_l^T]_ii less the
    term the derivation leaves to the mode's own drift, -a_i^(L-1) (second-order (W_tot)_ii) a
    layer. Second derivatives by central differences (F is a polynomial of degree 2L in each x:
    the step's error is O(h^2) relative)."""
    d = a.size

    def phi(j, k):
        return np.array([a[j] ** (L - m) * a[k] ** (m - 1) for m in range(1, L + 1)])

    def F(X):
        Ws = []
        for m in range(L):
            E = np.zeros((d, d))
            for j, k in itertools.product(range(d), range(d)):
                p = phi(j, k)
                if j != k and p @ p > 0:
                    E[j, k] = p[m] * X[j, k] / (p @ p)
            Ws.append(np.diag(a) + E)
        Wt = np.eye(d)
        for W in Ws:
            Wt = W @ Wt
        out = L * a ** (2 * L - 2) * (np.diag(Wt) - a ** L)
        for l in range(L):
            A, B = np.eye(d), np.eye(d)
            for W in Ws[l + 1:]:
                A = W @ A
            for W in Ws[:l]:
                B = W @ B
            out = out + a ** (L - 1) * np.diag(A.T @ (M - Wt) @ B.T)
        return out

    h, zero = 1e-3, np.zeros((d, d))
    f0, total = F(zero), np.zeros(d)
    for j, k in itertools.product(range(d), range(d)):
        if j == k or var[j, k] == 0:
            continue
        X = zero.copy()
        X[j, k] = h
        fp = F(X)
        X[j, k] = -h
        total += 0.5 * (fp + F(X) - 2 * f0) / h ** 2 * var[j, k]
    return total


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_cross_mode_drift_is_the_second_order_mean_of_the_exact_gradient(depth):
    """mu_i^cross = -(eta / 2B) a_i^(L-1) sum_k S(a_i, a_k)(c_ik + c_ki) against the second-order
    expansion of the exact mean gradient, with the misalignments at their stationary variances
    eta K_jk c_jk / (2B) and c_jk from `cross_modes_of` (a fixed set with label noise: the c_jk
    differ entry by entry, so a swapped c_ik / c_ki or a wrong S(a_i, a_k) shows). At the
    learned state (pi = s~), two modes and two empty directions (M~'s noise pairs, a = 0 there).
    Measured agreement 3e-16 relative (the expansion's central differences are exact here);
    tolerance 1e-9."""
    eta, B = 0.01, 2
    data = dmft.tasks.linear_teacher(4, 4, [2.0, 0.8], P=20, label_noise=0.6, key=5)
    model = dmft.DeepLinear(depth, 8, 0.5, "aligned")
    s = dl.effective_modes(data).s
    extra = (dl.drift(model, data, s, eta0=eta, batch_size=B, cross_modes=True)
             - dl.drift(model, data, s, eta0=eta, batch_size=B))
    cm = dl.cross_modes_of(data, B)
    d = cm.A2.shape[0]
    a = np.zeros(d)
    a[:2] = s ** (1.0 / depth)
    resid = cm.target - np.concatenate([s, np.zeros(d - 2)])       # 0 on the modes, the target elsewhere
    c = cm.A2 * resid[:, None] ** 2 + cm.A1 * resid[:, None] + cm.A0
    assert np.ptp(c[~np.eye(d, dtype=bool)]) > 0.1 * np.max(c)        # entries differ: the check can fail
    K = sum(np.outer(a ** (depth - m), a ** (m - 1)) ** 2 for m in range(1, depth + 1))
    var = eta * K * c / (2 * B)
    want = _second_order_drift(depth, a, np.diag(a ** depth), var)[:2]
    assert np.all(np.abs(extra) > 1e-4)
    np.testing.assert_allclose(extra, want, rtol=1e-9)


# ---------------------------------------------------------------- deep linear: noise and SDE

def test_fixed_set_noise_variance_is_the_exact_minibatch_variance():
    """c_i(pi) = B Var(G_ii) on a whitened fixed set: the variance over every batch of B distinct
    points of P (all C(12, 3) = 220 of them) of the batch-mean gradient along u_i v_i^T at an
    aligned network, against `noise_variance` (the moments kappa, tau, lambda and the finite-
    population factor). Exact identity: tolerance 1e-10 relative (measured 1e-14)."""
    data = dmft.tasks.linear_teacher(5, 4, [3.0, 1.5], P=12, label_noise=0.7, key=3)
    modes = dl.effective_modes(data)
    X, Y = np.asarray(data.x_train), np.asarray(data.y_train)
    pi, B = np.array([0.4, 2.1]), 3
    e = Y - X @ (modes.U @ np.diag(pi) @ modes.V.T).T
    c = dl.noise_variance(modes, pi, B)
    for i in range(2):
        g = -(e @ modes.U[:, i]) * (X @ modes.V[:, i])              # per-sample gradient along the mode
        means = [g[list(b)].mean() for b in itertools.combinations(range(12), B)]
        np.testing.assert_allclose(B * np.var(means), c[i], rtol=1e-10)


def test_sde_drift_and_diffusion_are_the_layer_recursions_moments():
    """The per-mode SDE (docs/derivations.md, section 6) against the exact one-step moments of
    pi = a^L under a <- a + eta a^(L-1)(s - a^L + zeta), Var(zeta) = c / B (Gauss-Hermite: exact,
    the step is a polynomial in zeta): the Ito term (L - 1) D / (2 L pi) is the mean rate the
    noise adds (with noise less without), D = (eta / B) L^2 pi^(4-4/L) c the variance rate, both
    to O(eta): the relative gap falls tenfold with eta (measured 1.2e-3 and 2.8-4.7e-3 at
    eta = 1e-3; L = 2's Ito term is exact, 5e-11). An Ito term or a D off by any O(1) factor fails."""
    data = dmft.tasks.linear_teacher(3, 3, [2.0], label_noise=0.5, key=0)
    xs, ws = np.polynomial.hermite_e.hermegauss(40)
    ws = ws / ws.sum()
    pi0, B = 0.6, 1
    c = float(dl.noise_variance(dl.effective_modes(data), [pi0], B)[0])
    for L in (2, 3):
        model = dmft.DeepLinear(L, 6, 0.5, "aligned")
        a0 = pi0 ** (1.0 / L)
        gaps = []
        for eta in (1e-2, 1e-3):
            def moments(sd):
                dp = (a0 + eta * a0 ** (L - 1) * (2.0 - pi0 + sd * xs)) ** L - pi0
                return ws @ dp / eta, (ws @ dp ** 2 - (ws @ dp) ** 2) / eta
            (mean, var), (mean0, _) = moments(math.sqrt(c / B)), moments(0.0)
            kw = dict(eta0=eta, batch_size=B)
            ito = float(dl.drift(model, data, [pi0], **kw)[0] - dl.drift(model, data, [pi0], ito=False, **kw)[0])
            D = float(dl.diffusion(model, data, [pi0], **kw)[0])
            gaps.append((abs((mean - mean0) / ito - 1), abs(var / D - 1)))
        assert max(gaps[1]) < 1e-2
        # O(eta): tenfold smaller at the smaller step, or at rounding (L = 2: the noise's mean is
        # exactly the Ito term, the step being quadratic in zeta)
        assert all(g1 < max(0.2 * g0, 1e-8) for g0, g1 in zip(*gaps))


# ---------------------------------------------------------------- Kumar loss decomposition

def test_kumar_decomposition_is_the_exact_population_loss():
    """THEORY.md section 8: E_x (y - f)^2 = (Tr A / D)^2 / 4 + ||A||_F^2 / (2 D^2) + |m|^2 /
    (gamma0^2 D) for f = (1/gamma0)[m . x~ + (eps/2) x~^T (S - I) x~], y = (beta . x)^2 / 2,
    x ~ N(0, I_D), against a tensor Gauss-Hermite rule of 3 nodes a dimension (exact for the
    degree-4 integrand). Exact: tolerance 1e-12 relative (measured 1e-15); dropping either
    quadratic term is off by > 5%."""
    rng = np.random.default_rng(0)
    D, g0, eps = 3, 0.7, 0.4
    beta = rng.standard_normal(D)
    beta /= np.linalg.norm(beta)
    m = 0.3 * rng.standard_normal(D)
    U = np.eye(D) + 0.3 * rng.standard_normal((D, D))
    S = U @ U.T + np.outer(m, m)
    out = kumar_decomposition({"mean": m[None], "second_moment": S[None]}, beta, g0, eps)
    xi, wi = np.polynomial.hermite_e.hermegauss(3)
    wi = wi / wi.sum()
    pts = np.array(list(itertools.product(xi, repeat=D)))
    w = np.prod(np.array(list(itertools.product(wi, repeat=D))), axis=1)
    xs = pts / math.sqrt(D)
    f = (xs @ m + eps / 2 * (np.einsum("ni,ij,nj->n", xs, S, xs) - np.sum(xs ** 2, 1))) / g0
    exact = w @ (0.5 * (pts @ beta) ** 2 - f) ** 2
    np.testing.assert_allclose(out["total"][0], exact, rtol=1e-12)
    assert min(out["variance"][0], out["misalignment"][0]) > 0.05 * exact
