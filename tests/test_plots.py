"""Figures: what they show of seed ensembles, fits and bad input, read off the returned
matplotlib Figures (limits, labels, legend texts, collections), never pixels. Fake arrays
stand in for solves and runs, so every test takes well under a second."""

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.collections import LineCollection, PolyCollection

import dmft
from dmft.plotting import trajectory_figure
from validation import plots
from validation import plots_deep_linear as pdl
from validation import plots_grokking as pg

T = np.array([0.0, 1.0, 2.0, 4.0, 8.0])
FEW = settings(max_examples=8, deadline=None, derandomize=True)


def _ens(seeds=4, scale=None):
    """(seeds, time) losses decaying in time; seed i scaled by scale[i]."""
    base = np.exp(-T / 4.0) + 0.05
    scale = np.ones(seeds) if scale is None else np.asarray(scale, float)
    return scale[:, None] * base[None]


def _run(loss, test=True):
    loss = np.asarray(loss, float)
    return SimpleNamespace(ENSEMBLE_AXES=("seed",), t=T, train_loss=loss, test_loss=loss if test else None,
                           alignment=np.full_like(loss, 0.5), weight_change={"first_layer": np.full_like(loss, 0.1)},
                           label=lambda: "net")


def _sol(loss=None, se=None):
    loss = np.exp(-T / 4.0) + 0.05 if loss is None else loss
    return SimpleNamespace(ENSEMBLE_AXES=(), t=T, train_loss=loss, test_loss=loss, alignment=np.full(T.size, 0.5),
                           weight_change={"first_layer": np.full(T.size, 0.1)}, label=lambda: "DMFT",
                           error={} if se is None else {"test_loss": se})


def _sweep(net, weight_decay=0.0, floor=0.01):
    g, w = 1.0, 16
    comp = SimpleNamespace(t=T, test_loss={"rel_error": np.full(T.size, 0.1)}, train_loss=None)
    fit = SimpleNamespace(slope=-0.5, predict=lambda x: np.asarray(x, float) ** -0.5)
    return SimpleNamespace(gamma0s=[g], widths=[w], seeds=np.asarray(net).shape[0], solutions={g: _sol()},
                           lazy={g: _sol()}, runs={g: {w: _run(net)}},
                           scaling={g: {"widths": [w], "per_seed_error": [0.1], "mean_error": [0.05],
                                        "per_seed_fit": None, "mean_fit": None, "theory_floor": floor,
                                        "comparisons": {w: comp}}},
                           schedule=SimpleNamespace(weight_decay=weight_decay))


def _band_tops(ax):
    return [np.asarray(c.get_paths()[0].vertices)[:, 1].max() for c in ax.collections
            if isinstance(c, PolyCollection) and c.get_paths()]


def _labels(ax):
    return [ln.get_label() for ln in ax.get_lines()]


# 1. log loss axes follow the centre curves, not bands reaching down to the clip floor
@FEW
@given(st.floats(2.0, 1e6))
def test_log_axes_follow_centre_curves_not_wide_bands(outlier):
    net = _ens(4, [1, 1, 1, outlier])                  # std > mean: the band's lower edge is <= 0
    figs = [trajectory_figure([_run(net)]), plots.ensemble_losses({1.0: {16: _run(net)}}),
            plots.theory_vs_networks(_sweep(net))]
    for ax in (figs[0].axes[0], figs[1].axes[0], figs[2].axes[0], figs[2].axes[1]):
        lo, hi = ax.get_ylim()
        ys = np.concatenate([np.asarray(ln.get_ydata(), float) for ln in ax.get_lines()])
        ys = ys[np.isfinite(ys) & (ys > 0)]
        assert ys.min() / 10 < lo <= ys.min() and ys.max() <= hi < ys.max() * 10


# 2. bands are +-1 std with ddof=1, none under two finite seeds, and say so
@FEW
@given(st.lists(st.floats(0.5, 5.0), min_size=2, max_size=5))
def test_bands_are_one_std_ddof1_over_seeds(scales):
    net = _ens(len(scales), scales)
    ax = plots.ensemble_losses({1.0: {16: _run(net)}}).axes[0]
    top = max(_band_tops(ax))
    mean, std = net.mean(0), net.std(0, ddof=1)
    assert top == pytest.approx(np.max((mean + std)[T > 0]), rel=1e-9)
    assert "+-1 std over seeds" in ax.get_ylabel()


def test_no_band_or_bar_under_two_finite_seeds():
    from dmft.plotting import seed_stats

    one = _ens(2)
    one[1] = np.nan
    assert np.all(np.isnan(seed_stats(one)[1]))
    ax = plots.ensemble_losses({1.0: {16: _run(one)}}).axes[0]
    assert not _band_tops(ax)
    fig = trajectory_figure([_run(one)])
    assert not _band_tops(fig.axes[0]) and "+-1 std over seeds" in fig.axes[0].get_title()
    fig = plots.lazy_to_rich_summary(_sweep(one))
    assert not any(isinstance(c, LineCollection) for c in fig.axes[0].collections)   # no error bar
    # each panel says what it shows (the legend's label had taken the name's place: no y labels)
    assert [ax.get_ylabel() for ax in fig.axes[:3]] == ["final test loss", "final NTK-target alignment",
                                                        "final relative first-layer change"]
    assert "+-1 std over seeds" in fig.texts[0].get_text() or "+-1 std over seeds" in fig._suptitle.get_text()


# 3. a diverged seed is counted in the label; an all-NaN ensemble draws nothing, says "diverged"
def test_seed_count_and_diverged_ensembles_in_labels():
    part = _ens(4)
    part[3, -2:] = np.nan
    dead = np.full((4, T.size), np.nan)
    for loss, want in ((part, "3/4 seeds finite"), (dead, "diverged")):
        ax = plots.ensemble_losses({1.0: {16: _run(loss)}}).axes[0]
        (line,) = [ln for ln in ax.get_lines() if want in ln.get_label()]
        assert (len(line.get_xdata()) == 0) == (loss is dead)
        ax = trajectory_figure([_run(loss)]).axes[0]
        assert any(want in lab for lab in _labels(ax))
        th = {1.0: {"train_loss": _ens(1)[0], "test_loss": _ens(1)[0], "alignment": np.ones(T.size)}}
        nets = {1.0: {16: {"train_loss": loss, "test_loss": loss, "alignment": np.ones((4, T.size))}}}
        ax = pg.grokking_curves(T, th, {}, nets, [1.0], 0.01).axes[1]
        assert any(want in lab for lab in _labels(ax))
        ax = pg.width_departure(T, th, nets, [1.0]).axes[0]
        assert any(want in lab for lab in _labels(ax))
        fig = plots.ensemble_losses({1.0: {16: _run(loss)}, 2.0: {16: _run(_ens())}})
        assert any(want in tx.get_text() for tx in fig.axes[0].get_legend().get_texts())   # not the last panel


@settings(max_examples=40, deadline=None)
@given(y=st.lists(st.one_of(st.floats(-2, 2), st.just(np.nan)), min_size=0, max_size=4),
       logx=st.booleans(), logy=st.booleans())
def test_a_line_with_one_visible_point_gets_a_marker_when_drawn(y, logx, logy):
    """A line through one point draws nothing: a solve with one save after t = 0 (the log time
    axis leaves t = 0 out) drew three blank panels, and the jobs' loss figures too (a user's
    report). Every figure of the project marks such lines when drawn; lines with more visible
    points, or markers of their own, are left as they are."""
    import io as _io
    from dmft.plotting import new_figure
    y = np.asarray(y, float)
    x = np.arange(y.size, dtype=float)              # x = 0 is not visible on a log axis
    fig, ax = new_figure()
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    (line,) = ax.plot(x, y)
    (own,) = ax.plot(x, y, marker="s")
    fig.savefig(_io.BytesIO(), format="png", dpi=30)
    visible = np.isfinite(y) & ((x > 0) if logx else True) & ((y > 0) if logy else True)
    assert line.get_marker() == ("o" if visible.sum() == 1 else "None")
    assert own.get_marker() == "s"


def test_a_solution_with_one_save_after_the_start_draws_its_points():
    x = np.random.default_rng(0).normal(size=(10, 3))
    s = dmft.solve(dmft.TwoLayer("tanh", gamma0=1.0), dmft.Dataset(x, np.sin(x[:, 0])),
                   dmft.Schedule(eta0=0.5, steps=1, save_every=1), samples=64)
    import io as _io
    fig = s.plot()
    fig.savefig(_io.BytesIO(), format="png", dpi=30)
    assert all(line.get_marker() == "o" for ax in fig.axes for line in ax.get_lines())


def test_grokking_curves_band_a_sampled_dmft_by_its_standard_errors():
    """The grok job's curves figure draws a sampled DMFT's losses with a +-1 se band (from the
    solve's replicas), cut at a tenth of the curve on the log axis; an exact solve has none."""
    loss = np.exp(-T / 50) + 1e-3
    se = 0.05 * loss
    se[0] = 0.0
    for with_se in (False, True):
        th = {"train_loss": loss, "test_loss": 2 * loss, "alignment": np.ones(T.size)}
        if with_se:
            th.update(train_loss_se=se, test_loss_se=np.where(T > 0, 4 * loss, 0.0))
        fig = pg.grokking_curves(T, {1.0: th}, {}, {}, [1.0], 0.01)
        for ax, key in zip(fig.axes[:2], ("train_loss", "test_loss")):
            bands = [c for c in ax.collections if isinstance(c, PolyCollection) and "+-1 se" in c.get_label()]
            assert len(bands) == int(with_se), (key, with_se)
            if with_se:
                y = bands[0].get_paths()[0].vertices[:, 1]
                m = T > 0
                assert y.max() == pytest.approx((th[key] + th[f"{key}_se"])[m].max())
                # the train band stays above a tenth of its curve; the test band (se 2x its curve) is cut there
                low = th[key] - th[f"{key}_se"] if key == "train_loss" else 0.1 * th[key]
                assert y.min() == pytest.approx(low[m].min())


def test_grokking_curves_se_band_cut_on_the_log_axis_says_so():
    """A +-1 se band whose lower edge falls below a tenth of the curve is drawn cut there: its
    label said "+-1 se" all the same (se = 0.95x the loss drew a band from 0.1x, not 0.05x, of
    the curve, as if the DMFT were surer than it is). The label now says where it is cut."""
    loss = np.exp(-T / 50) + 1e-3
    for ratio, cut in ((0.5, False), (0.95, True)):
        th = {"train_loss": loss, "test_loss": loss, "alignment": np.ones(T.size),
              "train_loss_se": ratio * loss, "test_loss_se": ratio * loss}
        ax = pg.grokking_curves(T, {1.0: th}, {}, {}, [1.0], 0.01).axes[1]
        (band,) = [c for c in ax.collections if isinstance(c, PolyCollection) and "+-1 se" in c.get_label()]
        y = band.get_paths()[0].vertices[:, 1]
        assert y.min() == pytest.approx(max(1 - ratio, 0.1) * loss[T > 0].min())
        assert ("cut at 0.1x the curve" in band.get_label()) == cut


# 4. under weight decay the lazy curve is the no-decay closed form
def test_lazy_curve_says_no_weight_decay_under_decay():
    for wd, want in ((0.0, "lazy limit"), (1e-3, "lazy limit (no weight decay)")):
        for fig in (plots.theory_vs_networks(_sweep(_ens(), weight_decay=wd)),
                    plots.lazy_to_rich_summary(_sweep(_ens(), weight_decay=wd))):
            assert want in _labels(fig.axes[0])


def _decay(y, reached=None, exponent=None):
    k = np.geomspace(1e-4, 1e-2, len(y))
    times = SimpleNamespace(t_test=np.asarray(y, float))
    if reached is not None:
        times.reached_test = np.asarray(reached, bool)
    out = {"testbed": "kumar", "gamma0": 1.0, "weight_decay": k, "times": times, "t_end": 1e4}
    if exponent is not None:
        out["fit_t_test"] = {"exponent": exponent, "stderr": 0.1}
    return out


# 5. the fit line is the least-squares fit, not a line through the first point
@FEW
@given(st.lists(st.floats(10.0, 1000.0), min_size=3, max_size=6))
def test_decay_fit_line_is_the_least_squares_fit(y):
    from validation.grokking import fit_power_law_decay

    d = _decay(y)
    fit = fit_power_law_decay(d["weight_decay"], y)
    d["fit_t_test"] = {"exponent": fit.slope, "stderr": fit.stderr}
    ax = pg.decay_plot(d).axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("fit:")]
    kk, yy = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    np.testing.assert_allclose(yy, np.exp(fit.intercept) * kk ** fit.slope, rtol=1e-9)
    d["fit_t_test"]["exponent"] = fit.slope + 0.5        # a slope the points do not give: a guide only
    assert any(lab.startswith("slope guide") for lab in _labels(pg.decay_plot(d).axes[0]))


# 6. reached at t = 0 is reached, not "not reached by the end"
def test_decay_reached_at_zero_is_not_drawn_as_not_reached():
    for d in (_decay([0.0, 100.0, 50.0], reached=[True, True, True], exponent=-1.0),
              _decay([0.0, 100.0, 50.0], exponent=-1.0)):
        labs = _labels(pg.decay_plot(d).axes[0])
        assert any("reached at t = 0" in lab for lab in labs)
        assert not any(lab.startswith("not reached") for lab in labs)
    labs = _labels(pg.decay_plot(_decay([np.nan, 100.0, 50.0], reached=[False, True, True])).axes[0])
    assert any(lab.startswith("not reached") for lab in labs)


# 7. a sweep with extra trajectories or labels is refused, not silently ignored
def test_theory_vs_networks_refuses_others_with_a_sweep():
    sw = _sweep(_ens())
    with pytest.raises(dmft.InputError, match="others and labels"):
        plots.theory_vs_networks(sw, _run(_ens()))
    with pytest.raises(dmft.InputError, match="labels"):
        plots.theory_vs_networks(sw, labels=["a"])


# 8. one replica: the panel says the DMFT's standard error is unknown
def test_width_scaling_says_standard_error_unknown():
    fig = plots.width_scaling_plot(_sweep(_ens(), floor=np.nan))
    for ax in fig.axes:
        assert any("DMFT standard error unknown (one replica" in tx.get_text() for tx in ax.texts)
    assert "dotted" not in fig._suptitle.get_text()
    fig = plots.width_scaling_plot(_sweep(_ens(), floor=0.01))
    assert not any(ax.texts for ax in fig.axes) and "dotted" in fig._suptitle.get_text()


# 9. the phase diagram's colour bar only where there is a positive gap, on a real log scale
def test_phase_diagram_colour_bar():
    def diag(gap):
        return {"times": SimpleNamespace(gap=np.asarray(gap, float)), "gamma0": [0.1, 1.0],
                "values": [0.1, 0.2], "axis": "eps"}
    fig = pg.phase_diagram_plot(diag([[np.nan, np.nan], [np.nan, np.nan]]))
    assert len(fig.axes) == 1 and "not reached anywhere" in fig.axes[0].get_title()
    fig = pg.phase_diagram_plot(diag([[5.0, 5.0], [np.nan, 0.0]]))
    assert len(fig.axes) == 2
    norm = fig.axes[0].images[0].norm
    assert norm.vmin < 5.0 < norm.vmax


def test_lead_verdict_panel_counts_each_measures_runs():
    """Each measure's bar says how many runs it rests on and how many its saves left unresolved
    (the panel's title gave the first measure's count for all)."""
    th = {1.0: {"train_loss": np.ones(T.size), "test_loss": np.geomspace(1, 1e-3, T.size),
                "alignment": np.linspace(0, 1, T.size)}}
    verdict = {"alignment": {"fraction": 0.5, "ci95": [0.2, 0.8], "runs": 8, "unresolved": 0},
               "weight_change": {"fraction": 1.0, "ci95": [0.5, 1.0], "runs": 5, "unresolved": 3}}
    fig = pg.progress_measures(T, th, {}, [1.0], {"verdict": verdict, "axis": "eps"})
    ticks = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert ticks == ["alignment\nn = 8", "weight\nchange\nn = 5\n(+3 unresolved)"]


def test_lead_verdict_panels_labels_stay_apart():
    """Five measures, some with unresolved runs: no two bars' labels overlap once drawn (the
    panel was as wide as the others, and the labels of the grok job's measures ran into each other)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    names = ["alignment", "weight_change", "planted_alignment", "planted_diffusion", "max_change"]
    th = {1.0: {"train_loss": np.ones(T.size), "test_loss": np.geomspace(1, 1e-3, T.size),
                **{n: np.linspace(0.1, 1, T.size) for n in names}}}
    verdict = {n: {"fraction": 0.5, "ci95": [0.2, 0.8], "runs": 12, "unresolved": 3 * (i % 2)}
               for i, n in enumerate(names)}
    fig = pg.progress_measures(T, th, {}, [1.0], {"verdict": verdict, "axis": "eps"})
    FigureCanvasAgg(fig).draw()
    boxes = [t.get_window_extent() for t in fig.axes[-1].get_xticklabels()]
    assert len(boxes) == len(names)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [(round(b.x0), round(b.x1)) for b in boxes]


# 10. bad input: one InputError naming the argument
def test_bad_input_names_the_argument():
    th = {1.0: {"train_loss": np.ones(T.size), "test_loss": np.ones(T.size), "alignment": np.ones(T.size)}}
    nets = {1.0: {16: {"train_loss": np.ones((2, T.size)), "test_loss": np.ones((2, T.size)),
                       "alignment": np.ones((2, T.size))}}}
    run = SimpleNamespace(t=T, modes=np.zeros((1, T.size, 2)))
    cases = [("runs", lambda: plots.ensemble_losses({})),
             ("gammas", lambda: pg.progress_measures(T, {}, {}, [])),
             ("nets", lambda: pg.width_departure(T, {**th, 2.0: th[1.0]}, nets, [1.0, 2.0])),
             ("theory", lambda: pg.width_departure(T, th, nets, [1.0, 2.0])),
             ("theory", lambda: pg.grokking_curves(T, th, {}, nets, [1.0, 2.0], 0.01)),
             ("trajectories", lambda: trajectory_figure([])),
             ("trajectories", lambda: trajectory_figure([np.zeros(3)])),
             ("sweep", lambda: plots.theory_vs_networks(None)),
             ("after", lambda: pdl.stationary_figure(run, None, None, eta0=0.1, batch_size=1, after=8.0)),
             ("after", lambda: pdl.stationary_figure(run, None, None, eta0=0.1, batch_size=1, after=100.0))]
    for name, call in cases:
        with pytest.raises(dmft.InputError, match=name):
            call()


# 11. labels say what is drawn
def test_axis_labels_say_what_is_drawn():
    ax = plots.ensemble_losses({1.0: {16: _run(_ens(), test=False)}}).axes[0]
    assert ax.get_ylabel().startswith("train loss")
    ax = plots.ensemble_losses({1.0: {16: _run(_ens())}}).axes[0]
    assert ax.get_ylabel().startswith("test loss")
    ax = plots.relative_error_in_time(_sweep(_ens())).axes[0]
    assert ax.get_xlabel() == "t (= steps x eta0)" and "test loss" in ax.get_ylabel()
    sw = _sweep(_ens())                                   # data without test targets: train losses
    comp = sw.scaling[1.0]["comparisons"][16]
    comp.train_loss, comp.test_loss = comp.test_loss, None
    assert "train loss" in plots.relative_error_in_time(sw).axes[0].get_ylabel()


def test_trajectories_of_different_data_say_so_on_their_figure():
    """`Solution.plot(run)` drew trajectories of different data sets together without a word
    (a legitimate figure, which `validation.compare` refuses to judge): the figure says which
    data each ran on when their recorded data digests differ, and nothing when they agree."""
    import jax
    import networks

    a = dmft.tasks.single_index(D=3, P=8, P_test=4, degree=1, key=jax.random.key(0))
    b = dmft.tasks.single_index(D=3, P=8, P_test=4, degree=1, key=jax.random.key(1))
    model = dmft.TwoLayer("linear", gamma0=1.0)
    kw = dict(eta0=0.5, steps=4, save_every=2)
    sol = dmft.solve(model, a, **kw)
    other = networks.train(model, b, width=8, seeds=2, **kw)
    same = networks.train(model, a, width=8, seeds=2, **kw)
    fig = sol.plot(other, title="mine")
    text = fig._suptitle.get_text()
    assert text.startswith("mine\ndifferent data: ") and a.digest[:8] in text and b.digest[:8] in text
    assert sol.plot(same)._suptitle is None


def test_lone_points_are_marked_and_reference_lines_are_not():
    """A line with one drawable point (here on a log axis that leaves t = 0 out) is given a marker;
    a reference line with ends in axes units (axhline, axvline: x or y from 0 to 1 of the panel)
    was read as one point on a log axis and got a filled circle at the panel's edge, which looked
    like data (the width-scaling figure's floors, the grok figures' thresholds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from dmft.plotting import new_figure

    fig, ax = new_figure()
    FigureCanvasAgg(fig)
    ax.set_xscale("log")
    ax.set_yscale("log")
    (lone,) = ax.plot([0.0, 2.0], [1.0, 3.0], "-")          # t = 0 is not drawable on the log axis
    (two,) = ax.plot([1.0, 2.0], [1.0, 3.0], "-")
    flat = ax.axhline(2.0, ls=":")
    upright = ax.axvline(1.5, ls="--")
    fig.canvas.draw()
    assert lone.get_marker() == "o" and two.get_marker() in ("None", "", None)
    assert flat.get_marker() in ("None", "", None) and upright.get_marker() in ("None", "", None)
