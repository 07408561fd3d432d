"""A walkthrough of the deep linear part against independent references: the step's stability
limit at the target, which networks, the SDE and the laws met silently, and full-batch runs that
agree with the SDE to rounding, which compare_modes FAILed."""

import dataclasses
import warnings

import jax
import numpy as np
import pytest

import dmft
import networks
import validation.deep_linear as vdl
from dmft import deep_linear as dl


def _teacher():
    # a non-square fixed set with label noise: s~ = 3.279, 1.097 (effective_modes)
    return dmft.tasks.linear_teacher(d_in=4, d_out=3, singular_values=[3.0, 1.0], P=10, label_noise=0.5, key=1)


def test_step_rates_are_eta_times_the_restoring_rate_at_the_fixed_point():
    """h_i = eta0 |mu_i'(pi*)| against a numerical derivative of the flow's drift
    L p^(2-2/L)(s - p) - L kappa p at a root found by bisection here (rtol 1e-6: the central
    difference's error at step 1e-6 of p is ~1e-10 relative)."""
    data = _teacher()
    s = dl.effective_modes(data).s
    for L, kappa in ((1, 0.0), (2, 0.0), (3, 0.2), (5, 0.1)):
        model = dmft.DeepLinear(L, 4, 0.5, "aligned")

        def mu(p, si):
            return L * p ** (2 - 2 / L) * (si - p) - L * kappa * p

        want = []
        for si in s:
            lo, hi = si / 2, si                          # mu(lo) > 0 > mu(hi) for these decays
            for _ in range(200):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if mu(mid, si) > 0 else (lo, mid)
            p, d = lo, 1e-6 * lo
            want.append(0.01 * abs(mu(p + d, si) - mu(p - d, si)) / (2 * d))
        np.testing.assert_allclose(dl.step_rates(model, data, eta0=0.01, weight_decay=kappa), want, rtol=1e-6)


def test_a_step_past_the_stability_limit_is_said_not_returned_silently():
    """Depth 2, s~_1 = 3.279: the flattest global minimum's sharpness is 2 s~_1 = 6.56, so full-batch
    GD settles only for eta0 < 0.305. At eta0 = 0.34 the networks (and the SDE's paths, the same
    step) sat on a period-2 orbit 4.12 <-> 2.10 about the target, finite and without a word, and the
    laws returned a Boltzmann temperature for a fixed point SGD cannot reach. Each warns now,
    naming eta0 and the limit; at eta0 = 0.3 (h = 1.97) the networks settle and nothing is said."""
    data = _teacher()
    model = dmft.DeepLinear(2, 4, 0.5, "aligned")
    with pytest.warns(UserWarning, match=r"networks.train \(deep linear\): eta0 = 0.34 is beyond the step's "
                                         r"stability limit 0.305 at mode 1"):
        run = networks.train(model, data, seeds=1, eta0=0.34, steps=200, save_every=1)
    last = run.modes[0, -2:, 0]
    assert np.all(np.isfinite(last)) and abs(last[0] - last[1]) > 1.0           # the oscillation
    with pytest.warns(UserWarning, match=r"mode_sde: eta0 = 0.34 is beyond"):
        dl.mode_sde(model, data, eta0=0.34, batch_size=10, steps=20, save_every=10, paths=2)
    with pytest.warns(UserWarning, match=r"boltzmann_temperature: eta0 = 0.34 .* describes no SGD"):
        dl.boltzmann_temperature(model, data, eta0=0.34, batch_size=2)
    with pytest.warns(UserWarning, match=r"stationary_density: eta0 = 0.34 .* describes no SGD"):
        dl.stationary_density(model, data, np.linspace(0.1, 5, 4000), eta0=0.34, batch_size=2, mode=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = networks.train(model, data, seeds=1, eta0=0.3, steps=200, save_every=1)
        dl.mode_sde(model, data, eta0=0.3, batch_size=10, steps=20, save_every=10, paths=2)
    np.testing.assert_allclose(run.modes[0, -1], dl.effective_modes(data).s, rtol=1e-3)


def test_a_law_at_a_large_step_says_how_far_sgd_is_from_it():
    """Depth 2, B = 5, eta0 = 0.2 (h = 0.88 on mode 1): 256 networks' late variance was 0.0165
    against the law's Boltzmann T = 0.0047 (3.5x; the linearized step alone: 1 / (1 - h/2) = 1.79),
    with no word. The laws warn above h = 0.4 (25% by the step alone) with that factor; dln_scan.toml's
    largest step (h = 0.23) stays silent."""
    data = dmft.tasks.linear_teacher(d_in=5, d_out=3, singular_values=[2.0, 1.0], P=15, label_noise=0.5, key=7)
    model = dmft.DeepLinear(2, 4, 1.2, "aligned")
    with pytest.warns(UserWarning, match=r"mode 1's fixed point is 0.884 .* variance 1.79 times the law's"):
        dl.boltzmann_temperature(model, data, eta0=0.2, batch_size=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dl.boltzmann_temperature(model, data, eta0=0.05, batch_size=5)                     # h = 0.22
        shipped = dmft.tasks.linear_teacher(4, 4, [3.0, 2.0, 1.0, 0.5], P=20, label_noise=1.0, key=0)
        deep = dmft.DeepLinear(4, 10, 0.3, "aligned")
        assert dl.step_rates(deep, shipped, eta0=0.01).max() < 0.25                     # dln_scan's largest
        dl.boltzmann_temperature(deep, shipped, eta0=0.01, batch_size=1)
        dl.stationary_density(deep, shipped, np.linspace(2.0, 4.0, 4001), eta0=0.003, batch_size=1, mode=0)


def test_full_batch_networks_and_sde_agreeing_to_rounding_pass_and_a_real_mismatch_fails():
    """Full-batch steps from an aligned start: the networks and the SDE are deterministic and
    the reduction exact, so they agree to rounding (here 3e-15 relative over 3000 steps). At
    depth 1 one (mode, time) pair read 9 ulp apart, over the 8-ulp guard, and FAILed at z = -inf
    (the `dmft dln` job: z = -52 on stds of 2e-16), by chance of the arithmetic. Now ensembles
    without spread pass within 4096 ulp: the real pair, and one 16 ulp apart (before: FAIL), while
    values 1e-9 apart (a real, deterministic mismatch) still FAIL."""
    data = dmft.tasks.linear_teacher(d_in=5, d_out=3, singular_values=[2.0, 1.0, 1.0], P=12, label_noise=0.5,
                                     key=jax.random.key(0))
    kw = dict(eta0=0.005, steps=3000, save_every=50, batch_size=12)
    for L in (3, 1):                                  # (the mismatch below: depth 1, still learning at t = 3.75)
        model = dmft.DeepLinear(L, 4, 0.4, "aligned")
        run = networks.train(model, data, seeds=8, **kw)
        sde = dl.mode_sde(model, data, paths=8, **kw)
        assert np.max(np.abs(run.modes - sde.modes) / sde.modes) < 1e-13
        assert [r["verdict"] for r in vdl.compare_modes(run, sde)] == ["PASS"] * 12
    # which pairs land past 8 ulp is a coin flip of the arithmetic: shift the SDE by 16 ulp (the
    # most measured) to judge it every time; a deterministic mismatch of 1e-9 (4.5e6 ulp; the
    # reduction's own effects are O(eta)) FAILs, on the rows still 1% or more from the target
    # (the settled ones pass by the target rule)
    target = dl.effective_modes(data).s
    for shift, verdict in ((16 * np.finfo(float).eps, "PASS"), (1e-9, "FAIL")):
        other = dataclasses.replace(sde, modes=sde.modes * (1 + shift))
        rows = [r for r in vdl.compare_modes(run, other) if abs(r["sde_mean"] / target[r["mode"]] - 1) > 0.01]
        assert rows and all(r["verdict"] == verdict for r in rows), (shift, rows)


def test_dln_report_says_when_its_laws_are_too_coarse_for_the_step(tmp_path):
    """`dmft dln` at depth 2, eta0 = 0.15, B = 4, P = 12, sigma = 0.5 (h = 0.64 on mode 1): the
    networks' late variance was 0.0054 against the law's Boltzmann T = 0.0029 (the step alone:
    1.47x), and the stationary verdict PASSed by KS (0.092 <= 0.144) without a word. The report
    now says h, the factor and that a KS verdict can pass it; at eta0 = 0.005 (h = 0.02) it does
    not (the same sizes, theory.paths 64)."""
    from experiments import dln

    base = ["teacher.d_in=5", "teacher.d_out=3", "teacher.singular_values=[2.0, 1.0, 1.0]", "teacher.P=12",
            "teacher.label_noise=[0.5]", "model.depth=2", "model.width=4", "model.init_scale=0.4",
            "train.steps=400", "train.save_every=50", "train.batch_size=4", "train.seeds=64",
            "theory.paths=64", "staircase.seeds=0"]
    for eta, said in ((0.15, True), (0.005, False)):
        out = tmp_path / str(eta)
        cfg = dln.load_config(None, base + [f"train.eta0={eta}"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dln.run(cfg, str(out), log=lambda *a: None)
        text = (out / "report.md").read_text()
        assert ("These laws are the continuous-time SDE's: at this eta0 the step times mode 1's restoring rate "
                "is 0.643, where the step alone makes SGD's variance about 1.47 times" in text) == said
        assert "stationary law" in text


def test_networks_whose_loss_runs_away_while_finite_are_flagged_diverged():
    """Online depth 1, d_in = d_out = 4, s = 1, B = 1: SGD settles at eta0 = 0.4 and runs away at 0.5
    (a linear regression's mean-square stability needs eta0 < 2 / (d_in + 2) per sample; h = 0.5
    is far below GD's 2, so `step_rates` says nothing). The networks read |pi - s| ~ 5e48 and a loss
    of 2e99 there, finite, with no flag and no warning; the per-mode SDE (no noise at a noiseless
    target) stays at s. Now a loss past RUNAWAY x its scale (the two-layer networks' and the DMFT's
    rule) flags the seed from that save: NaN from there, kept saves finite and under the bound."""
    from dmft.runner import RUNAWAY

    data = dmft.tasks.linear_teacher(d_in=4, d_out=4, singular_values=[1.0], P=None, key=0)
    model = dmft.DeepLinear(1, 4, 0.1, "aligned")
    kw = dict(seeds=16, steps=2000, save_every=100, batch_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calm = networks.train(model, data, eta0=0.4, **kw)
    assert not calm.info["diverged"] and np.all(np.isfinite(calm.test_loss))
    with pytest.warns(UserWarning, match=r"every one of 16 deep linear seeds diverged \(the first by step \d+\): non-finite, or a loss running away"):
        run = networks.train(model, data, eta0=0.5, **kw)
    assert sorted(run.info["diverged"]) == list(range(16))
    steps = np.asarray(run.t) / 0.5
    scale = max(0.5 * 1.0, 1.0)                      # the loss at zero weights is 0.5 s^2 = 0.5
    for s, k in run.info["diverged"].items():
        cut = np.flatnonzero(np.isclose(steps, k))[0]
        assert 0 < cut and np.all(np.isnan(run.test_loss[s, cut:])) and np.all(np.isnan(run.modes[s, cut:]))
        kept = run.test_loss[s, :cut]
        assert np.all(np.isfinite(kept)) and kept.max() <= RUNAWAY * max(kept[0], scale)


@pytest.mark.parametrize("key, value", [("paths", 10), ("seed", 5), ("max_memory_gb", 1.0)])
def test_dln_refuses_the_sde_settings_a_random_start_never_reads(key, value):
    """From a random start `dmft dln` runs no per-mode SDE, so theory.paths, theory.seed and
    theory.max_memory_gb are never read: set there they were ignored in silence (a scan refuses
    theory.seed so); an aligned start, and the --full preset's paths, still load."""
    from experiments.dln.config import load_config
    from dmft.errors import ConfigError
    with pytest.raises(ConfigError, match=f"^theory.{key}: read only with model.init = 'aligned'"):
        load_config(None, ["model.init='random'", f"theory.{key}={value}"])
    assert load_config(None, [f"theory.{key}={value}"])["theory"][key] == value
    assert load_config(None, ["model.init='random'"], full=True)["theory"]["paths"] == 16384
