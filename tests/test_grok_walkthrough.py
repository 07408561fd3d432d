"""The grok job outside its shipped configurations: settings a user changes, each defect found
by recomputing a run's numbers from its saved arrays kept as a fast test."""

import numpy as np
import pytest

from dmft.errors import ConfigError
from experiments import grok
from experiments.grok import config as gconfig
from experiments.grok import job as gjob
from experiments.grok.report import markdown
from validation import grokking as gk


def _report(**extra):
    """The least report.json that `markdown` renders (no rows, no diagrams, no decay scan)."""
    rep = {"testbed": "sparse_parity", "data": {"P": 24}, "threshold": 0.9, "threshold_kind": "accuracy",
           "summary": [], "diagrams": [], "early_warning_grid": None, "decay": None, "figures": {},
           "wall_s": 0.0, "environment": {}}
    rep.update(extra)
    return rep


# ------------------------------------------------------------------ sparse parity: k and phi

@pytest.mark.parametrize("activation, k, learnable", [
    ("tanh", 3, True), ("tanh", 2, False), ("erf", 1, True), ("erf", 4, False),
    ("relu", 2, True), ("relu", 1, True), ("relu", 3, False), ("softplus", 3, False),
    ("square", 2, True), ("square", 3, False), ("square", 4, False), ("linear", 1, True), ("linear", 3, False)])
def test_a_parity_the_network_cannot_represent_is_said(activation, k, learnable):
    """tanh with k = 2 (an odd f against an even target) ran to 'not reached' everywhere, test
    accuracy 0.31-0.36 at n = 8, P = 120, with no word of why: the parity of phi's parts and their
    polynomial degree decide which k any network, DMFT or lazy kernel of the testbed can fit."""
    cfg = grok.load_config(None, ["testbed.name='sparse_parity'", f"sparse_parity.activation='{activation}'",
                                  f"sparse_parity.k={k}"])
    w = gconfig.parity_warning(cfg)
    assert (w is None) == learnable, (activation, k, w)
    if w:
        assert "sparse_parity.k" in w and "sparse_parity.activation" in w and repr(activation) in w


def test_the_parity_warning_is_logged_before_compute_and_in_the_report(tmp_path, monkeypatch):
    cfg = grok.load_config(None, ["testbed.name='sparse_parity'", "sparse_parity.k=2", "sparse_parity.n=6",
                                  "sparse_parity.P=24", "sparse_parity.P_test=16", "train.steps=20",
                                  "train.save_every=10", "theory.samples=64", "simulate.widths=[4]"])

    class Stop(Exception):
        pass

    def no_compute(*a, **k):
        raise Stop
    monkeypatch.setattr(gjob, "_theory", no_compute)
    said = []
    with pytest.raises(Stop):
        gjob.run(cfg, str(tmp_path / "out"), log=said.append)
    assert any("warning" in s and "sparse_parity.k = 2" in s for s in said), said
    w = gconfig.parity_warning(cfg)
    assert f"**Warning**: {w}." in markdown(_report(warnings=[w]), cfg)


# ------------------------------------------------------------------ weight decay against the step

@pytest.mark.parametrize("kappa", [0.5, 0.6, 1.0])
def test_a_weight_decay_that_flips_the_weights_is_refused_naming_its_keys(kappa):
    """eta0 kappa >= 1 was refused by the schedule as 'weight_decay: eta0 * weight_decay = 1.2 >=
    1', naming neither model.weight_decay nor train.eta0 (the kumar testbed's eta0 = 2)."""
    with pytest.raises(ConfigError) as err:
        grok.load_config(None, [f"model.weight_decay={kappa}"])
    assert "model.weight_decay" in str(err.value) and "train.eta0" in str(err.value)
    assert grok.load_config(None, ["model.weight_decay=0.49"])["model"]["weight_decay"] == 0.49


# ------------------------------------------------------------------ the gap's jackknife

def _spiked(c_spike):
    """A pooled-output loss (the curve) and its 2 replicas: both spike at t = 3 (a catapult),
    30-fold and 6-fold, and fall to the threshold 0.1 at t ~ 23 (train) and ~ 35 (test); the
    pooled curve's spike is `c_spike` (a loss of the replicas' averaged outputs lies below their
    mean loss)."""
    t = np.arange(60.0)
    out = {}
    for name, tau, shift in (("train_loss", 10.0, 0.0), ("test_loss", 15.0, 0.05)):
        base = np.exp(-t / tau)
        reps = np.stack([base * (1 + shift), base * (1 - shift)])
        reps[:, 3] = [30.0, 6.0]
        c = reps.mean(axis=0) * 0.99
        c[3] = c_spike
        out[name], out[name + "_reps"] = c, reps
    return t, out


def test_a_jackknifed_gap_from_a_negative_leave_one_out_loss_is_unknown():
    """A lyu DMFT (D = 8, P = 30, 2 replicas, eta0 = 1) spiked to 67 at t = 3-4: one replica's
    leave-one-out test loss, the pooled loss + (their mean - its own), read -0.033 at t = 6 and
    crossed the threshold there, so the gap 178.2 read '+- 90' where its two times had +- 4.5 and
    6.6. A leave-one-out loss below 0 before its crossing is no loss: the error is unknown."""
    t, c = _spiked(c_spike=2.0)          # mean spike 18: the leave-one-out of the 30 reads -10
    reps = {k: c[k + "_reps"] for k in ("train_loss", "test_loss")}
    g = gk.grokking_times(t, c["train_loss"], c["test_loss"], 0.1, replicas=reps)
    assert 20 < float(g.t_train) < 26 and 30 < float(g.t_test) < 40 and np.isfinite(g.gap)
    assert np.isnan(g.gap_se) and np.isnan(g.t_train_se) and np.isnan(g.t_test_se)
    assert g.as_dict()["gap_se"] is None
    # the same curves with the pooled spike at the replicas' mean: every leave-one-out loss is
    # >= 0, and the errors are numbers (the jackknife's own, from the two replicas' spread)
    t, c = _spiked(c_spike=18.0)
    g = gk.grokking_times(t, c["train_loss"], c["test_loss"], 0.1, replicas={
        k: c[k + "_reps"] for k in ("train_loss", "test_loss")})
    assert np.isfinite(g.gap_se) and np.isfinite(g.t_test_se) and 0 < float(g.gap_se) < 5


def test_an_accuracy_gap_keeps_its_jackknife():
    """The rule is the losses': accuracies (a seed mean's) keep their errors."""
    t = np.arange(20.0)
    reps = {"train_loss": np.stack([np.clip(t / 5, 0, 1), np.clip(t / 6, 0, 1)]),
            "test_loss": np.stack([np.clip(t / 12, 0, 1), np.clip(t / 14, 0, 1)])}
    mean = {k: v.mean(axis=0) for k, v in reps.items()}
    g = gk.grokking_times(t, mean["train_loss"], mean["test_loss"], 0.9, accuracy=True, replicas=reps)
    assert np.isfinite(g.gap_se) and float(g.gap_se) > 0


# ------------------------------------------------------------------ the decay fit's sentence

def _decay(A, B):
    return {"testbed": "lyu", "gamma0": 0.05, "weight_decay": [2e-3, 4e-3, 8e-3], "prediction": "p",
            "times": {"t_train": [9.0, 8.0, 8.0], "t_test": [42.0, 70.0, 239.0], "gap": [33.0, 62.0, 231.0]},
            "fit_inverse": {"A": A, "B": B, "se_A": 0.3, "se_B": 100.0, "predicted_A": 0.999, "degree": 3}}


@pytest.mark.parametrize("A, B, said", [(-0.467, 253.0, "A <= 0"), (0.5, -20.0, "steeper than -1"),
                                        (0.9, 30.0, "shallower than -1")])
def test_the_inverse_fit_sentence_follows_the_signs_of_A_and_B(A, B, said):
    """A lyu scan at D = 8, P = 30 fitted A = -0.467 +- 0.31 (exponent +1.25): the report still said
    'B is the kappa-independent length of the rich phase, which makes the log-log slope shallower
    than -1', true only for A > 0 and B >= 0 (the slope of A / kappa + B is -A / (A + B kappa))."""
    cfg = grok.load_config(None, ["testbed.name='lyu'"])
    md = markdown(_report(testbed="lyu", threshold_kind="loss", threshold=0.13, decay=_decay(A, B)), cfg)
    assert said in md
    assert ("shallower than -1" in md) == (said == "shallower than -1")


# ------------------------------------------------------------------ the measures figure's marks

def _marks(fig):
    """(x, y) of the figure's change-time marks (the circled dots), per panel."""
    return [[(float(ln.get_xdata()[0]), float(ln.get_ydata()[0])) for ln in ax.get_lines()
             if ln.get_marker() == "o" and ln.get_markersize() == 6] for ax in fig.axes]


def test_a_change_mark_sits_at_the_level_the_measure_crosses():
    """Saves every 500 steps (t = 0, 1000, ...): the kumar DMFT's alignment changed half way at
    t = 530, inside the first save interval, and the figure put its mark at (530, the value at
    t = 1000), a point on no curve (0.375 where the crossed level is 0.29). A level's mark is at the
    midpoint it crosses; a rate's at its value there, interpolated in log t as change_time does and,
    on its log panel, in log y as the curve is drawn (tests/test_measures_figure74.py)."""
    from validation.plots_grokking import progress_measures
    t = np.array([0.0, 1000.0, 2000.0, 3000.0, 4000.0])
    rate = np.array([0.0, 2.0, 1.0, 0.5, 0.25])
    th = {"t": t, "train_loss": np.array([1.0, 0.1, 0.01, 0.005, 0.001]),
          "test_loss": np.array([1.0, 0.9, 0.05, 0.01, 0.005]),
          "alignment": np.array([0.1, 0.9, 0.95, 0.97, 1.0]),         # half change within [0, 1000]
          "weight_change": np.array([0.0, 0.1, 0.2, 1.5, 2.0]),       # half change within [2000, 3000]
          "planted_diffusion": rate}
    fig = progress_measures(t, {1.0: th}, {}, [1.0])
    (align,), (change,), (diff,) = _marks(fig)[:3]
    ew = gk.early_warning(t, th["test_loss"], {k: th[k] for k in ("alignment", "weight_change", "planted_diffusion")},
                          rates=("planted_diffusion",))
    assert align[0] == pytest.approx(float(ew["alignment"]["t_change"])) and align[0] < 1000
    assert align[1] == pytest.approx(0.55, abs=1e-12)                 # (0.1 + 1.0) / 2, not 0.9
    assert change[1] == pytest.approx(1.0, abs=1e-12)                 # (0 + 2) / 2, on the drawn segment
    tc = float(ew["planted_diffusion"]["t_change"])
    j = np.searchsorted(t, tc)
    f = np.log(tc / t[j - 1]) / np.log(t[j] / t[j - 1])
    assert diff == pytest.approx((tc, rate[j - 1] ** (1 - f) * rate[j] ** f), rel=1e-12)


def test_the_decay_figure_draws_the_times_errors():
    """A lyu scan's t_test = 42.07 +- 66, 69.69 +- 13, 239.3 +- 20 (report.md) were drawn as bare
    points: the figure hid the errors the report gives."""
    from validation.plots_grokking import decay_plot
    k = np.array([2e-3, 4e-3, 8e-3])
    y = np.array([42.07, 69.69, 239.3])
    se = np.array([66.0, 13.0, np.nan])               # the last without an error: no bar there
    times = gk.GrokTimes(y / 5, y, y * 0.8, np.ones(3, bool), np.ones(3, bool), np.zeros(3), np.zeros(3), 0.1,
                         "loss", t_test_se=se)
    ax = decay_plot({"weight_decay": k, "gamma0": 0.05, "testbed": "lyu", "times": times,
                     "curves": {"t": np.linspace(0, 3000, 4)}}).axes[0]
    segs = [seg for coll in ax.collections for seg in coll.get_segments()] if ax.collections else []
    bars = sorted((float(s[0, 0]), float(min(s[:, 1])), float(max(s[:, 1]))) for s in segs)
    assert len(bars) == 2
    for (x, lo, hi), kk, yy, ss in zip(bars, k, y, se):
        assert x == pytest.approx(kk) and lo == pytest.approx(yy - ss) and hi == pytest.approx(yy + ss)


def test_the_decay_scan_saves_the_curves_behind_its_times():
    """curves.npz held the decay scan's test loss alone: its t_train, gap and errors (report.json)
    could not be recomputed from the saved arrays."""
    K, T, R = 3, 5, 2
    rng = np.random.default_rng(0)
    c = {"t": np.tile(np.arange(T, dtype=float), (K, 1)), "train_loss": rng.random((K, T)),
         "test_loss": rng.random((K, T)), "error.train_loss": rng.random((K, T)),
         "error.test_loss": rng.random((K, T)), "replicas.train_loss": rng.random((K, T, R)),
         "replicas.test_loss": rng.random((K, T, R))}
    part = gjob._decay_part({"curves": c})
    for k, name in (("train_loss", "train_loss"), ("test_loss", "test_loss"), ("error.train_loss", "train_loss_se"),
                    ("error.test_loss", "test_loss_se"), ("replicas.train_loss", "replicas.train_loss"),
                    ("replicas.test_loss", "replicas.test_loss"), ("t", "t")):
        np.testing.assert_array_equal(part[f"decay/{name}"], c[k])
    closure = gjob._decay_part({"curves": {k: c[k] for k in ("t", "train_loss", "test_loss")}})
    assert set(closure) == {"decay/t", "decay/train_loss", "decay/test_loss"}


def test_a_diagram_whose_results_would_not_fit_is_refused_before_any_compute():
    """solve_batch refuses a call whose points' results (kept for every point) pass max_memory_gb,
    but the grok preflight checked one batch only: a 24 x 24 gamma0 x eps diagram (with the early
    warnings' curves and state: 4.3 GiB by solve_batch's own count, > 4) passed it and was refused
    only when the diagram ran, after the curves and networks. The shipped kumar config (20 points,
    1.3 GiB) still passes."""
    path = "scripts/configs/grok_kumar.toml"
    cfg = grok.load_config(path)
    gjob._check_parts(cfg, gconfig.build(cfg))                 # (the shipped one: no error)
    g = [round(0.1 + 0.08 * i, 3) for i in range(24)]
    e = [round(0.01 + 0.0125 * i, 4) for i in range(24)]
    cfg = grok.load_config(path, [f"diagram.gamma0={g}", f"diagram.eps={e}"])
    with pytest.raises(ConfigError, match=r"diagram\.gamma0 x diagram\.eps: solve_batch: 576 points"):
        gjob._check_parts(cfg, gconfig.build(cfg))
