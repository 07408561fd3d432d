"""Audit of the grok job's edge cases: an ensemble with a diverged seed, a test loss with a
spike at the start."""

import numpy as np

from experiments.grok import job
from experiments.grok.report import _diverged_text
from validation import grokking as gk


def _ensemble():
    """Three seeds that learn and one whose loss runs away and is NaN from t = 100 (as
    networks.train leaves a diverged seed)."""
    t = np.linspace(0, 200, 201)
    good = np.stack([np.exp(-t / (60 + 5 * i)) for i in range(3)])        # cross 0.3 at t ~ 72-84
    bad = np.where(t < 100, np.exp(t / 40), np.nan)
    test = np.vstack([good, bad[None]])
    train = np.vstack([np.exp(-t / 10 - i) for i in range(3)] + [np.where(t < 100, np.exp(-t / 10), np.nan)[None]])
    return t, good, {"train_loss": train, "test_loss": test, "alignment": np.tile(t / 200, (4, 1))}


def test_a_diverged_seed_is_left_out_of_the_seed_mean_not_swapped_out_at_its_divergence():
    """A mean over whichever seeds are finite at each save changes its population where a seed
    diverges: the mean jumped from ~3 to ~0.2 at t = 100 and its test crossing of 0.3 read t = 99.5,
    the jump, where the seeds that learned cross at ~78; the report said nothing."""
    t, good, d = _ensemble()
    cur = job._seed_mean(d)
    assert np.all(np.isfinite(cur["test_loss"]))
    g = job._times({"threshold": {"accuracy": 0.9}}, t, cur, 0.3, False)
    want = gk.crossing_time(t, good.mean(0), 0.3)[0]
    np.testing.assert_allclose(g.t_test, want, rtol=1e-9)
    np.testing.assert_array_equal(job._diverged_seeds(d), [False, False, False, True])
    assert cur[job.REPLICAS + "test_loss"].shape == (3, t.size)          # the survivors' jackknife
    assert np.isfinite(g.gap_se)
    assert "1 of 4 seeds diverged" in _diverged_text({"seeds": 4, "seeds_diverged": 1})
    assert _diverged_text({"seeds": 4, "seeds_diverged": 0}) == ""


def test_an_ensemble_whose_every_seed_diverged_has_no_time_after_the_first_divergence():
    t, _, d = _ensemble()
    d = {k: np.where(np.arange(t.size) < 100 - 10 * np.arange(4)[:, None], v, np.nan) for k, v in d.items()}
    cur = job._seed_mean(d)
    assert np.all(np.isnan(cur["test_loss"][70:])) and np.all(np.isfinite(cur["test_loss"][:70]))
    g = job._times({"threshold": {"accuracy": 0.9}}, t, cur, 0.3, False)
    assert not bool(g.reached_test)
    assert "all 4 seeds diverged" in _diverged_text({"seeds": 4, "seeds_diverged": 4})


def _spiked(t, late):
    """A loss that starts at 1, spikes 50-fold around t = 1 (a catapult) and comes back."""
    return (1 + 49 * np.exp(-np.log(np.maximum(t, 1e-9)) ** 2 / 0.3)) * late


def test_a_spike_at_the_start_is_not_the_drop():
    """The drop's plateau was the highest value before the minimum: a catapult's spike at the
    start made its fall back the drop (t_drop = 2.4 where the loss groks at ~ 1300, and the
    measure that moves first 'did not lead', lead -498); a spike with no grokking after it read
    as an observed drop. A rise that runs into the drop (1.3x the start, the Kumar model's lazy
    phase; 5x or 20x, a memorized training set) stays the plateau."""
    t = np.concatenate([[0], np.logspace(-1, 4, 200)])
    groks = 1 / (1 + (t / 1000) ** 8) + 1e-3
    measure = {"m": 1 / (1 + (t / 500) ** 4)}
    plain = gk.early_warning(t, groks, measure)
    spiked = gk.early_warning(t, _spiked(t, groks), measure)
    assert 1000 < float(plain["t_drop"]) < 2000
    # in the grokking drop (its plateau is now twice the start: a level 2x higher, t_drop 1192)
    assert 1000 < float(spiked["t_drop"]) < float(plain["t_drop"])
    assert bool(spiked["m"]["leads"]) and float(spiked["m"]["lead"]) > 500
    td, seen = gk.drop_time(t, _spiked(t, 0.8 + 0.2 * np.exp(-t)))       # a spike, then no drop
    assert not bool(seen) and np.isnan(td)
    # a rise that runs into the drop is the plateau, as before, however high (a review: capping
    # every rise above twice the start moved a memorization plateau's drop 13% at 5x, 33% at 20x)
    for k in (1.3, 5.0, 20.0):
        bump = (1 + (k - 1) * t / (t + 10)) * groks
        jm = np.argmin(bump)
        hi = bump[:jm + 1].max()
        floor = max(bump[jm], hi * 1e-2)
        want = gk.crossing_time(t, np.where(t > 200, bump, hi), np.sqrt(hi * floor))[0]
        np.testing.assert_allclose(gk.drop_time(t, bump)[0], want, rtol=0.02)
    # ... and one that falls back to 0.6 of the start without grokking is still an observed drop (from 5)
    td, seen = gk.drop_time(t, (1 + 4 * t / (t + 10)) * (0.12 + 0.88 / (1 + (t / 1000) ** 8)))
    assert bool(seen) and 1000 < float(td) < 1500


def test_a_phase_diagram_overlay_says_a_seed_diverged_not_that_it_never_grokked(monkeypatch):
    """The overlay took the plain mean over seeds: one diverged seed (NaN from its divergence)
    made the network gap 'not reached (test not reached)' where the other seeds grokked."""
    import types
    from experiments.grok import load_config
    from experiments.grok.config import build
    t, good, d = _ensemble()
    fake = types.SimpleNamespace(t=t, train_loss=d["train_loss"], test_loss=d["test_loss"])
    monkeypatch.setattr(job.networks, "train", lambda *a, **k: fake)
    cfg = load_config(None, ["kumar.D=4", "kumar.P=8", "kumar.P_test=8", "diagram.axes=['eps']",
                             "diagram.gamma0=[1.0, 2.0]", "diagram.eps=[0.02]", "diagram.overlay_seeds=4",
                             "early_warning.grid='eps'"])
    tb = build(cfg)
    times = gk.grokking_times(t, good.mean(0) * 0.1, good.mean(0), 0.3)
    diag = {"axis": "eps", "gamma0": np.array([1.0, 2.0]), "values": np.array([0.02]), "threshold": 0.3,
            "times": gk.GrokTimes(*(np.full((2, 1), getattr(times, f.name))
                                    if f.name not in ("threshold", "kind") else getattr(times, f.name)
                                    for f in __import__("dataclasses").fields(times))),
            "diverged_step": np.full((2, 1), -1)}
    pt, _ = job._overlay(cfg, tb, diag, log=lambda *a: None)      # (both corners of the gamma0 axis)
    want = gk.grokking_times(t, d["train_loss"][:3].mean(0), good.mean(0), 0.3).gap
    np.testing.assert_allclose(pt["gap_network"], want, rtol=1e-9)
    assert "1 of 4 seeds diverged" in pt["status_network"] and pt["status_network"].startswith("ok")


def test_an_early_warning_drop_of_a_run_that_never_grokked_says_so():
    """A test loss that falls from 1 to 0.4 (a lazy fit) and stays there never crosses the
    threshold (0.1) but has a drop (a twofold fall) at t ~ 9: report.md's early-warning table gave
    that t_drop as if it were the grokking drop, and the lead of a measure moving at t = 500 as
    -490, with nothing saying the run never grokked."""
    import dmft
    from experiments.grok.report import markdown
    t = np.concatenate([[0], np.logspace(-1, 4, 200)])
    test = 0.4 + 0.6 * np.exp(-t / 10)
    g = gk.grokking_times(t, np.exp(-t / 10), test, 0.1)
    row = {"gamma0": 1.0, "source": "DMFT", **g.as_dict(), "describe": g.describe(), "final_test_loss": 0.4,
           "early_warning": job._early(t, {"test_loss": test, "alignment": 1 / (1 + (t / 500) ** 4)})}
    rep = {"testbed": "kumar", "data": {"P": 3}, "threshold": 0.1, "threshold_kind": "loss",
           "summary": [row], "diagrams": [], "early_warning_grid": None, "decay": None, "figures": {},
           "wall_s": 0.0}
    rep = __import__("json").loads(__import__("json").dumps(dmft.io.jsonable(rep)))
    assert row["early_warning"]["drop_observed"]
    md = markdown(rep, {"threshold": {"accuracy": 0.9}})
    line = next(x for x in md.splitlines() if x.startswith("| 1 | DMFT |") and "alignment" in x)
    assert "test threshold not reached: no grokking" in line
    from experiments.grok.report import _not_grokked
    grid = {"runs": [{"reached_test": False}, {"reached_test": True}]}
    assert "1 of these 2 runs never crossed the test threshold" in _not_grokked(grid)


def test_the_figures_draw_the_seeds_the_summary_averages(tmp_path, monkeypatch):
    """The grok figures drew a seed mean over the seeds finite at each save (it jumped where one
    diverged) beside a summary that leaves a diverged seed out: they are handed the same seeds."""
    from experiments.grok import load_config
    t, good, d = _ensemble()
    kept = job._kept_seeds(d)
    assert all(np.asarray(v).shape[0] == 3 for v in kept.values())
    np.testing.assert_array_equal(kept["test_loss"], d["test_loss"][:3])
    assert job._kept_seeds({k: v[:3] for k, v in d.items()})["test_loss"].shape[0] == 3     # none diverged
    every = {k: np.full_like(np.asarray(v, float), np.nan) for k, v in d.items()}
    assert job._kept_seeds(every)["test_loss"].shape[0] == 4                                  # all: all kept
    seen = {}
    real = job.networks.train

    def one_diverges(*a, **k):          # seed 0 of every width NaN from its third save
        runs = real(*a, **k)
        for run in (runs.values() if isinstance(runs, dict) else [runs]):
            for name in ("train_loss", "test_loss"):
                v = np.array(getattr(run, name))
                v[0, 2:] = np.nan
                object.__setattr__(run, name, v)
        return runs

    monkeypatch.setattr(job.networks, "train", one_diverges)
    monkeypatch.setattr(job.plots, "grokking_curves", lambda *a, **k: seen.setdefault("nets", a[3]))
    cfg = load_config(None, ["kumar.D=4", "kumar.P=8", "kumar.P_test=8", "model.gamma0=[1.0]", "train.steps=40",
                             "train.save_every=10", "simulate.widths=[8]", "simulate.seeds=3", "diagram.axes=[]",
                             "early_warning.grid='none'", "decay.weight_decay=[0.0]"])
    job.run(cfg, str(tmp_path / "g"), log=lambda *a: None)
    (ws,) = seen["nets"].values()
    assert ws[8]["test_loss"].shape[0] == 2 and np.all(np.isfinite(ws[8]["test_loss"]))
