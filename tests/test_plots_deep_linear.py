"""The deep-linear figures (validation.plots_deep_linear) under weight decay and with seeds that
never learn a mode: what is drawn, read back from the Line2D objects on the axes.

The runs are stand-ins (the gradient flow copied over a few seeds), so that each figure's
lines can be checked against the theory's numbers exactly."""

from types import SimpleNamespace

import numpy as np
import pytest

import dmft
import dmft.plotting
from dmft import deep_linear as dl
from validation import plots_deep_linear as figs
from validation.deep_linear import decaying_modes

T = np.geomspace(1e-2, 1e2, 2000)


def _run(modes, s):
    """A stand-in for a DeepLinearRun on the times T: modes (seeds, T, r), the population loss of
    aligned modes on an online teacher (label noise left out: the figures add no floor to data)."""
    modes = np.asarray(modes, dtype=np.float64)
    loss = 0.5 * np.sum((np.asarray(s) - np.nan_to_num(modes)) ** 2, axis=-1)
    return SimpleNamespace(t=T, modes=modes, test_loss=loss, drift=np.ones_like(modes),
                           diffusion=np.ones_like(modes))


def _flow_run(model, data, kappa, seeds=3):
    flow = dl.mode_flow(model, data, T, weight_decay=kappa)
    return _run(np.broadcast_to(flow, (seeds,) + flow.shape), data.s)


def _hlines(ax):
    """(y, colour, label) of the horizontal reference lines (axhline) on ax."""
    grid = ax.get_yaxis_transform(which="grid")
    return [(float(ln.get_ydata()[0]), ln.get_color(), ln.get_label()) for ln in ax.get_lines()
            if ln.get_transform() is grid]


def _vlines(ax, ls="-"):
    """(x, colour, label) of the vertical lines (axvline) of line style `ls` on ax."""
    grid = ax.get_xaxis_transform(which="grid")
    return [(float(ln.get_xdata()[0]), ln.get_color(), ln.get_label()) for ln in ax.get_lines()
            if ln.get_transform() is grid and ln.get_linestyle() == ls]


def _legend(ax):
    return [x.get_text() for x in ax.get_legend().get_texts()]


# (depth, s, init_scale, kappa): mode 2 has no fixed point (L = 2, s <= kappa), or has one
# (0.29) but starts below the decay's barrier (0.21) and above half the fixed point (L = 3)
DECAYING = [(2, [3.0, 0.5], 0.3, 1.0), (3, [3.0, 1.0], 0.18 ** (1 / 3), 0.47)]


@pytest.mark.parametrize("depth, s, scale, kappa", DECAYING)
def test_modes_figure_draws_no_target_for_a_mode_decay_switches_off(depth, s, scale, kappa):
    """Mode 1 gets its target s_1 (dotted) and its fixed point (dash-dotted); mode 2, which the
    decay switches off, gets neither (it used to get s_2, and at L = 3 a fixed point it never
    reaches), and its label says it decays to 0."""
    data = dmft.tasks.linear_teacher(2, 2, s, key=0)
    model = dmft.DeepLinear(depth, 4, scale, "aligned")
    star = dl.fixed_points(model, data, kappa)
    assert decaying_modes(model, data, kappa).tolist() == [False, True]
    ax = figs.modes_figure(_flow_run(model, data, kappa), model, data, weight_decay=kappa).axes[0]
    lines = _hlines(ax)
    assert sorted((round(y, 12), c) for y, c, _ in lines) == sorted([(round(s[0], 12), "C0"),
                                                                    (round(star[0], 12), "C0")])
    assert {lab for _, _, lab in lines} == {"target s_i without decay", "fixed point with decay"}
    legend = _legend(ax)
    assert f"mode 2, s = {s[1]:.3g} (networks; decays to 0 under weight decay {kappa:g})" in legend
    assert f"mode 1, s = {s[0]:.3g} (networks)" in legend


def test_noise_figure_draws_no_half_learned_line_for_a_decaying_mode():
    """At L = 3 mode 2 starts above half its fixed point but below the barrier and decays: the
    old figure drew its "half learned" line at the first save. Now mode 1 alone has a half-learned
    line (at the flow's time) and a diffusion peak; mode 2's legend says it decays."""
    depth, s, scale, kappa = DECAYING[1]
    data = dmft.tasks.linear_teacher(2, 2, s, key=0)
    model = dmft.DeepLinear(depth, 4, scale, "aligned")
    fig = figs.noise_figure(_flow_run(model, data, kappa), model, data, eta0=0.01, batch_size=1,
                            weight_decay=kappa)
    t_half = dl.learning_times(model, data, 0.5, weight_decay=kappa)
    peak = dl.diffusion_peaks(model, data, eta0=0.01, batch_size=1, weight_decay=kappa)["t_peak"]
    assert np.isnan(t_half[1]) and np.isnan(peak[1])
    (x, c, label), = _vlines(fig.axes[0])
    assert c == "C0" and x == pytest.approx(t_half[0], rel=1e-4)
    assert label == "mode 1 half learned (median; 3/3 seeds learned it)"
    (x, c, _), = _vlines(fig.axes[1])
    assert c == "C0" and x == pytest.approx(t_half[0], rel=1e-4)
    (x, c, _), = _vlines(fig.axes[1], ls=":")                 # the diffusion peak
    assert c == "C0" and x == pytest.approx(peak[0], rel=1e-6)
    assert f"mode 2: decays to 0 under weight decay {kappa:g}" in _legend(fig.axes[0])


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_staircase_under_decay_has_the_fixed_points_plateaus_and_learning_times(sigma):
    """s = (3, 1), kappa = 0.6 at L = 2: the modes settle at s - kappa = (2.4, 0.4), so the plateaus
    are 5, 1/2 + 0.6^2/2 = 0.68 and 0.6^2 = 0.36 (plus the floor d_out sigma^2 / 2), not 5, 0.5, 0,
    and the half-learning times are to half the fixed points (mode 2 never reaches s_2 / 2: its
    line was missing, mode 1's 16% late)."""
    data = dmft.tasks.linear_teacher(4, 4, [3.0, 1.0], key=0, label_noise=sigma)
    model = dmft.DeepLinear(2, 4, 0.3, "aligned")
    kappa = 0.6
    run = _flow_run(model, data, kappa)
    run.test_loss = run.test_loss + 2 * sigma ** 2
    ax = figs.staircase_figure(run, data, model=model, weight_decay=kappa).axes[0]
    floor = 2 * sigma ** 2
    assert sorted(y for y, _, _ in _hlines(ax)) == pytest.approx(sorted(floor + np.array([5.0, 0.68, 0.36])))
    assert ax.get_ylim()[0] < floor + 0.36 < floor + 5.0 < ax.get_ylim()[1]
    assert sorted(x.get_text() for x in ax.texts) == [f"plateau {k}: {lev:.3g}" for k, lev in
                                                      enumerate(floor + np.array([5.0, 0.68, 0.36]))]
    t_half = dl.learning_times(model, data, 0.5, weight_decay=kappa)
    v = sorted(_vlines(ax))
    assert [c for _, c, _ in v] == ["C0", "C1"]
    assert [x for x, _, _ in v] == pytest.approx(t_half, rel=1e-4)
    assert [lab for _, _, lab in v] == [f"mode {i} half learned (median; 3/3 seeds learned it)" for i in (1, 2)]
    assert "weight decay 0.6" in ax.get_title()


def test_staircase_under_decay_gives_a_decaying_mode_target_zero():
    """s = (3, 0.5), kappa = 1 at L = 2: mode 2 has no fixed point and decays, so its s_2^2/2 = 0.125
    stays in every plateau (4.625, then 0.5 + 0.125 = 0.625, not 0.125 and 0); it has no learning
    line, and the legend says it decays."""
    data = dmft.tasks.linear_teacher(4, 4, [3.0, 0.5], key=0)
    model = dmft.DeepLinear(2, 4, 0.3, "aligned")
    run = _flow_run(model, data, 1.0)
    assert run.test_loss[0, -1] == pytest.approx(0.625)
    ax = figs.staircase_figure(run, data, model=model, weight_decay=1.0).axes[0]
    assert sorted(y for y, _, _ in _hlines(ax)) == pytest.approx([0.625, 4.625])
    (x, c, _), = _vlines(ax)
    assert c == "C0" and x == pytest.approx(dl.learning_times(model, data, 0.5, weight_decay=1.0)[0], rel=1e-4)
    assert "mode 2: decays to 0 under weight decay 1, never learned" in _legend(ax)
    assert figs.staircase_ylim(run, data, model=model, weight_decay=1.0) == pytest.approx((0.125, 9.25))


@pytest.mark.parametrize("seeds, never, learned", [(3, [2], True), (4, [3], True), (2, [1], False),
                                                   (4, [2, 3], False)])
def test_median_learning_line_counts_the_seeds_that_learned_the_mode(seeds, never, learned):
    """Seeds in `never` stay at 1e-3 on mode 2 (the first of them diverges midway: NaN). The
    median counts them as later than all: a line at the learners' time, labelled "k/n seeds",
    when more than half learned it; else no line and a legend entry saying so (it used to vanish
    without a word, and the label never said how many seeds learned it). No decay: the staircase's
    plateaus are still dl.plateaus'."""
    data = dmft.tasks.linear_teacher(4, 4, [3.0, 1.0], key=0)
    model = dmft.DeepLinear(2, 4, 0.3, "aligned")
    flow = dl.mode_flow(model, data, T)
    modes = np.array(np.broadcast_to(flow, (seeds,) + flow.shape))
    modes[never, :, 1] = 1e-3
    modes[never[0], T.size // 2:, :] = np.nan
    run = _run(modes, data.s)
    t_half = dl.learning_times(model, data, 0.5)
    k = seeds - len(never)
    stair = figs.staircase_figure(run, data).axes[0]
    assert sorted(y for y, _, _ in _hlines(stair)) == pytest.approx(sorted(dl.plateaus(data)["levels"][:2]))
    noise = figs.noise_figure(run, model, data, eta0=0.01, batch_size=1)
    for ax, labelled in ((stair, True), (noise.axes[0], True), (noise.axes[1], False)):
        (x1, _), = [(x, lab) for x, c, lab in _vlines(ax) if c == "C0"]
        assert x1 == pytest.approx(t_half[0], rel=1e-4)
        mine = [(x, lab) for x, c, lab in _vlines(ax) if c == "C1"]
        if learned:
            (x, lab), = mine
            assert x == pytest.approx(t_half[1], rel=1e-4)
            if labelled:
                assert lab == f"mode 2 half learned (median; {k}/{seeds} seeds learned it)"
        else:
            assert mine == []
    for ax in (stair, noise.axes[0]):
        legend = _legend(ax)
        if not learned:
            assert f"mode 2: half learned by {k}/{seeds} seeds only, no median" in legend
        assert f"mode 1 half learned (median; {seeds}/{seeds} seeds learned it)" in legend


def test_bad_input_names_the_argument():
    data = dmft.tasks.linear_teacher(2, 2, [3.0, 1.0], key=0)
    model = dmft.DeepLinear(2, 4, 0.3, "aligned")
    run = _flow_run(model, data, 0.0, seeds=2)
    cases = [("model", lambda: figs.staircase_figure(run, data, weight_decay=0.5)),
             ("model", lambda: figs.staircase_ylim(run, data, weight_decay=0.5)),
             ("model", lambda: figs.staircase_figure(run, data, model="deep", weight_decay=0.5)),
             ("weight_decay", lambda: figs.staircase_figure(run, data, model=model, weight_decay=-0.1)),
             ("weight_decay", lambda: figs.staircase_figure(run, data, model=model, weight_decay=True)),
             ("weight_decay", lambda: figs.modes_figure(run, model, data, weight_decay="0.1")),
             ("weight_decay", lambda: figs.noise_figure(run, model, data, eta0=0.01, batch_size=1,
                                                        weight_decay=float("nan")))]
    for name, call in cases:
        with pytest.raises(dmft.InputError, match=name):
            call()


def test_the_stationary_figure_draws_each_modes_law_on_its_own():
    """stationary_figure computed every mode's law on the grid of the panel's mode: two proper
    laws (online, no label noise, L = 2, kappa = 0.1) read 'no stationary density: the grid
    holds none of mode 1's law', and a mode without a fixed point (kappa = 1) refused the
    other's panel, while stationary_fit fitted them."""
    import matplotlib.pyplot as plt

    for kappa in (0.1, 1.0):
        data = dmft.tasks.linear_teacher(d_in=2, d_out=2, singular_values=[2.0, 0.8], P=None, key=0)
        model = dmft.DeepLinear(2, 2, 0.5, "aligned")
        star = dl.fixed_points(model, data, kappa)
        rng = np.random.default_rng(0)
        modes = np.stack([np.full((64, 5), v if np.isfinite(v) else 1e-6) for v in star], -1)
        run = SimpleNamespace(t=np.linspace(0, 1, 5),
                                    modes=np.abs(modes * (1 + 0.05 * rng.standard_normal(modes.shape))))
        fig = figs.stationary_figure(run, model, data, eta0=0.05, batch_size=1, after=0.5, weight_decay=kappa)
        for ax, s in zip(fig.axes, star):
            texts = " ".join(t.get_text() for t in ax.texts)
            assert "no stationary density" not in texts, texts
            if np.isfinite(s):
                assert any(line.get_label() == "stationary density" for line in ax.lines)
            else:
                assert "decays to 0" in texts
        plt.close(fig)



def test_figures_of_diverged_runs_and_a_depth_one_network_print_no_warnings():
    """A review found stray warnings on stderr: numpy's 'All-NaN slice' where every run diverged
    (the modes figure), matplotlib's empty legend for a depth-1 network (no layer boundary) and an
    overflow in the log axis' tick labels at a span past the float range. None now."""
    import warnings

    import matplotlib.pyplot as plt

    data = dmft.tasks.linear_teacher(2, 2, [2.0, 1.0], P=None, key=0)
    model = dmft.DeepLinear(2, 4, 0.3, "aligned")
    run = _flow_run(model, data, 0.0)
    run.modes = run.modes.copy()
    run.modes[:, T > 1.0] = np.nan                           # every seed diverged at t = 1
    depth1 = SimpleNamespace(t=T, balancedness=np.zeros((3, T.size, 0)), balance_change=np.zeros((3, T.size, 0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drawn = [figs.modes_figure(run, model, data), figs.balance_figure(depth1)]
        wide = plt.figure()
        ax = wide.add_subplot()
        ax.set_xscale("log")
        labels = dmft.plotting._minor_log_formatter(ax.xaxis)
        ax.xaxis.get_view_interval = lambda: np.array([5e-324, 1e10])   # hi / lo overflows
        labels.set_locs([1e-300, 1e-200])
    for f in drawn + [wide]:
        plt.close(f)


def test_noise_figure_keeps_its_line_key_under_a_title_and_says_when_there_is_no_noise():
    """`dmft dln` passes a title, which replaced the only key to the noise figure's lines (dashed:
    the formula; dotted: the predicted peak); the key now stays. Full-batch steps record a
    diffusion of 0 everywhere: the panel says so on a linear axis (a log axis drew nothing)."""
    data = dmft.tasks.linear_teacher(2, 2, [3.0, 1.0], key=0)
    model = dmft.DeepLinear(2, 4, 0.3, "aligned")
    run = _flow_run(model, data, 0.0)
    fig = figs.noise_figure(run, model, data, eta0=0.01, batch_size=1, title="drift and diffusion, label noise 0")
    text = fig._suptitle.get_text()
    assert text.startswith("drift and diffusion, label noise 0")
    assert "dashed: the formula at the networks' modes" in text and "dotted vertical: predicted diffusion peak" in text
    assert fig.axes[1].get_yscale() == "log" and not fig.axes[1].texts
    run.diffusion = np.zeros_like(run.modes)
    fig = figs.noise_figure(run, model, data, eta0=0.01, batch_size=1, title="t")
    assert fig.axes[1].get_yscale() == "linear"
    assert [x.get_text() for x in fig.axes[1].texts] == ["no gradient noise: the diffusion is 0 (full-batch steps)"]


def test_noise_figure_does_not_blame_full_batch_steps_for_a_diffusion_no_seed_recorded():
    """Every seed diverged (its records NaN): the diffusion panel said "no gradient noise: the
    diffusion is 0 (full-batch steps)" of minibatch SGD with label noise; it now says that no seed
    recorded a finite diffusion."""
    data = dmft.tasks.linear_teacher(2, 2, [3.0, 1.0], key=0, label_noise=0.5)
    model = dmft.DeepLinear(2, 4, 0.3, "aligned")
    run = _flow_run(model, data, 0.0)
    run.diffusion = np.full_like(run.modes, np.nan)
    fig = figs.noise_figure(run, model, data, eta0=0.01, batch_size=1, title="t")
    said = [x.get_text() for x in fig.axes[1].texts]
    assert said == ["no finite diffusion recorded (every seed diverged)"], said
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_noise_figure_panels_share_one_t_range_when_a_peak_lies_past_the_run():
    """A diffusion peak predicted past the run's end (dotted line) widened the diffusion panel's
    t axis alone (a report audit: t = 10.6, the run ending at 6), so that the same half-learning
    line stood at different places in the two panels. Both span the same range now, the peak in it."""
    data = dmft.tasks.linear_teacher(2, 2, [3.0, 1.0], key=0)
    model = dmft.DeepLinear(2, 4, 0.3, "aligned")
    peak = dl.diffusion_peaks(model, data, eta0=0.01, batch_size=1)["t_peak"]
    keep = T < 0.5 * np.nanmax(peak)
    flow = dl.mode_flow(model, data, T)[keep]
    run = _run(np.broadcast_to(flow, (3,) + flow.shape), data.s)
    run.t = T[keep]
    fig = figs.noise_figure(run, model, data, eta0=0.01, batch_size=1)
    left, right = (ax.get_xlim() for ax in fig.axes[:2])
    assert left == right and right[1] >= np.nanmax(peak), (left, right, peak)
