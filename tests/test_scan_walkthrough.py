"""A user's walkthrough of two-layer scans: the reader's figures and summary say the truth about
the stored points (which ones have no value, which diverged) and refuse an axis the grid does
not scan with a message that names it."""

import dataclasses

import numpy as np
import pytest

from dmft.errors import InputError
from experiments import scan

# the exact closure (linear activation): no sampling, compiled in about a second
TABLE = {"task": {"name": "single_index", "D": 4, "P": 12, "P_test": 8, "degree": 1},
         "model": {"activation": "linear"},
         "train": {"eta0": 0.5, "steps": 20, "save_every": 10},
         "scan": {"outputs": ["final"], "grid": {"model.gamma0": [0.5, 1.0, 2.0], "task.P": [12, 16]}}}


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    return scan.run(TABLE, str(tmp_path_factory.mktemp("walk") / "store"))


@pytest.mark.parametrize("call", [
    lambda r: r.heatmap("theory.final.test_loss", x="gamma0", y="task.D"),
    lambda r: r.lines("theory.final.test_loss", x="eta0"),
    lambda r: r.lines("theory.final.test_loss", x="gamma0", hue="task.D"),
])
def test_a_figure_axis_the_grid_does_not_scan_is_named(res, call):
    """An x, y or hue the grid does not scan was answered "fix task.P with at=..." (another, scanned
    axis: the user had not asked about it); it now names the field and the grid's fields."""
    with pytest.raises(InputError, match=r"(task\.D|train\.eta0) is not scanned here.*model\.gamma0, task\.P"):
        call(res)


def test_a_figure_axis_of_a_one_field_grid_is_named(tmp_path):
    """A one-axis grid and a y it does not scan raised a bare ValueError ("'task.P' is not in list")."""
    table = {**TABLE, "scan": {"outputs": ["final"], "grid": {"model.gamma0": [1.0]}}}
    one = scan.run(table, str(tmp_path / "one"))
    with pytest.raises(InputError, match=r"task\.P is not scanned here"):
        one.heatmap("theory.final.test_loss", x="gamma0", y="P")


def _lost(res, name, where):
    """`res` with the computed points `where` (grid indices) holding no value of `name` (NaN: a
    threshold not reached, a diverged point)."""
    values = res[name].copy()
    for w in where:
        values[w] = np.nan
    return dataclasses.replace(res, arrays={**res.arrays, name: values})


def test_lines_mark_computed_points_without_a_value(res):
    """A computed point without a value was a silent gap in `lines`, as a point not computed: a
    diverged row's legend entry drew nothing. It is now an x on the bottom edge at its x, in its
    line's colour, named in the legend; a point not computed stays a plain gap."""
    name = "theory.final.test_loss"
    lost = _lost(res, name, [(0, 1), (2, 1)])                       # gamma0 0.5 and 2 at P = 16
    lost = dataclasses.replace(lost, done=np.where(np.arange(6).reshape(3, 2) == 2, False, lost.done))  # (1, 0)
    ax = lost.lines(name, x="gamma0", hue="P").axes[0]
    marks = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
    assert len(marks) == 1
    np.testing.assert_array_equal(marks[0].get_xdata(), [0.5, 2.0])   # not gamma0 = 1 at P = 12 (not computed)
    p16 = [ln for ln in ax.get_lines() if ln.get_label() == "task.P = 16"][0]
    assert marks[0].get_color() == p16.get_color()
    assert "no value (not reached or diverged)" in [t.get_text() for t in ax.get_legend().get_texts()]
    clean = res.lines(name, x="gamma0", hue="P").axes[0]
    assert not [ln for ln in clean.get_lines() if ln.get_marker() == "x"]
    alone = _lost(res, name, [(1, 0)]).lines(name, x="gamma0", at={"P": 12}).axes[0]   # one line, no hue
    (mark,) = [ln for ln in alone.get_lines() if ln.get_marker() == "x"]
    np.testing.assert_array_equal(mark.get_xdata(), [1.0])
    assert alone.get_legend() is not None


def test_summary_names_the_points_that_diverged(res):
    """The summary counted diverged points ("2 of 6 points diverged") and gave the seeds that
    diverged as a min / median / max: nothing said which points of a phase diagram they were."""
    steps = np.full(res.grid.shape, -1, np.int64)
    steps[2, 1] = 7                                                  # gamma0 = 2, P = 16
    seeds = np.zeros(res.grid.shape, np.int64)
    seeds[0, 0], seeds[2, 1] = 1, 3
    arrays = {**res.arrays, "theory.diverged_step": steps, "networks.diverged_seeds": seeds}
    text = dataclasses.replace(res, arrays=arrays).summary()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("theory.diverged_step")]
    assert line.endswith("1 of 6 points diverged: gamma0=2 P=16 (step 7)")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("networks.diverged_seeds")]
    assert line.endswith("seeds diverged at 2 of 6 points: gamma0=0.5 P=12 (1 seeds); gamma0=2 P=16 (3 seeds)")
    (line,) = [ln for ln in res.summary().splitlines() if "diverged" in ln]     # none: no list
    assert line.endswith("0 of 6 points diverged")



def test_a_diverged_step_of_none_is_drawn_as_no_divergence_not_as_step_minus_1(res):
    """theory.diverged_step is -1 where a point did not diverge: heatmaps and lines drew it as the
    step -1 (a colour beside step 7's, a point below the axis). Now such points are no value,
    labelled 'did not diverge (-1)', and a diverged point's step is drawn."""
    steps = np.full(res.grid.shape, -1, np.int64)
    steps[2, 1] = 7                                                  # gamma0 = 2, P = 16
    r = dataclasses.replace(res, arrays={**res.arrays, "theory.diverged_step": steps})
    ax = r.heatmap("theory.diverged_step", x="gamma0", y="P").axes[0]
    shown = ax.collections[0].get_array()
    assert np.ma.count(shown) == 1 and float(shown.compressed()[0]) == 7.0
    assert "did not diverge (-1)" in [t.get_text() for t in ax.get_legend().get_texts()]
    ax = r.lines("theory.diverged_step", x="gamma0", at={"P": 16}).axes[0]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [np.nan, np.nan, 7.0])
    assert "did not diverge (-1)" in [t.get_text() for t in ax.get_legend().get_texts()]


def _grokking(res, coarse_train, coarse_test):
    """`res` with grokking times at every point, flagged coarse where given (grid indices)."""
    arrays = dict(res.arrays)
    for part, where in (("train", coarse_train), ("test", coarse_test)):
        flags = np.zeros(res.grid.shape, bool)
        for w in where:
            flags[w] = True
        arrays[f"theory.grok.coarse_{part}"] = flags
        arrays[f"theory.grok.t_{part}"] = np.arange(1.0, 7.0).reshape(res.grid.shape) * (1 if part == "train" else 3)
    arrays["theory.grok.gap"] = arrays["theory.grok.t_test"] - arrays["theory.grok.t_train"]
    return dataclasses.replace(res, arrays=arrays)


def test_figures_mark_grokking_times_the_saves_do_not_resolve(res):
    """A crossing in a save interval over which the loss fell over tenfold (SOURCE.grok.coarse_*)
    may lie anywhere in it; the figures drew its interpolated time as any other (the shipped
    scan.toml: 9 of its 48 t_train, at the largest gamma0, all in the first save interval). The
    heatmap dots those cells and the lines ring those points, each named in the legend; the gap
    is coarse where either time is."""
    from experiments.scan.result import COARSE_LABEL

    g = _grokking(res, coarse_train=[(2, 0)], coarse_test=[(0, 1)])
    ax = g.heatmap("theory.grok.t_train", x="gamma0", y="P").axes[0]
    assert COARSE_LABEL in [t.get_text() for t in ax.get_legend().get_texts()]
    (dots,) = [c for c in ax.collections[1:] if c.get_hatch() == ".."]
    marked = ~np.ma.getmaskarray(dots.get_array()).reshape(2, 3)       # (P, gamma0) as drawn
    np.testing.assert_array_equal(marked, [[False, False, True], [False, False, False]])
    gap = g.heatmap("theory.grok.gap", x="gamma0", y="P").axes[0]
    (dots,) = [c for c in gap.collections[1:] if c.get_hatch() == ".."]
    np.testing.assert_array_equal(~np.ma.getmaskarray(dots.get_array()).reshape(2, 3),
                                  [[False, False, True], [True, False, False]])
    assert g.heatmap("theory.final.test_loss", x="gamma0", y="P").axes[0].get_legend() is None
    line = g.lines("theory.grok.t_test", x="gamma0", hue="P").axes[0]
    (ring,) = [ln for ln in line.get_lines() if ln.get_label() == COARSE_LABEL]
    np.testing.assert_array_equal(ring.get_xdata(), [0.5])
    np.testing.assert_array_equal(ring.get_ydata(), g["theory.grok.t_test"][0, 1:])
    clean = _grokking(res, [], [])
    assert clean.heatmap("theory.grok.t_train", x="gamma0", y="P").axes[0].get_legend() is None
    assert not [ln for ln in clean.lines("theory.grok.t_train", x="gamma0", hue="P").axes[0].get_lines()
                if ln.get_label() == COARSE_LABEL]


def test_final_values_at_a_set_final_time_do_not_advise_setting_it(tmp_path):
    """With train.final_time set, an eta0 grid ends each point at the whole step nearest to it
    (eta0 = 0.3, 0.7: t = 20.1, 20.3 for final_time = 20), and the summary and the figures' titles
    said "(set train.final_time for a common time)", advice the user had followed; they now name
    the final time and the rounding."""
    table = {**TABLE, "train": {"steps": 20, "save_every": 10, "final_time": 2.0},
             "scan": {"outputs": ["final"], "grid": {"train.eta0": [0.5, 0.3, 0.7]}}}
    res = scan.run(table, str(tmp_path / "ft"))
    np.testing.assert_allclose(res["theory.final.t"], [2.0, 0.3 * 7, 0.7 * 3], rtol=1e-12)   # nearest steps
    want = "at train.final_time = 2, each point's nearest whole step: t from 2 to 2.1"
    assert f"theory final values: {want}" in res.summary().splitlines()
    assert res.lines("theory.final.test_loss", x="eta0").axes[0].get_title() == want


def test_heatmap_tick_labels_do_not_run_into_each_other(tmp_path):
    """The shipped scan.toml's 16 log-spaced gamma0 drew 8 tick labels, and "0.0251" and "0.0631"
    ran into one ("0.02510.0631"); the x ticks are thinned to as many labels as fit side by side,
    each still at a grid value."""
    gammas = [0.01, 0.0158, 0.0251, 0.0398, 0.0631, 0.1, 0.158, 0.251, 0.398, 0.631,
              1.0, 1.58, 2.51, 3.98, 6.31, 10.0]
    table = {**TABLE, "scan": {"outputs": ["final"], "grid": {"model.gamma0": gammas, "task.P": [12, 16]}}}
    res = scan.run(table, str(tmp_path / "ticks"))
    for fig in (res.heatmap("theory.final.test_loss", x="gamma0", y="P"),
                res.lines("theory.final.test_loss", x="gamma0", hue="P")):
        ax = fig.axes[0]
        fig.canvas.draw()
        boxes = sorted((t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()), key=lambda b: b.x0)
        assert len(boxes) >= 4
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))
    ax = res.heatmap("theory.final.test_loss", x="gamma0", y="P").axes[0]
    assert set(np.round(ax.get_xticks(), 12)) <= set(gammas)


def test_lines_on_a_log_axis_label_the_grid_values(res):
    """lines drew a log x axis with matplotlib's own ticks: gamma0 = 0.5 and 2 read "6x10^-1" and
    "2x10^0" minor labels, 0.5 none (a walkthrough), where the heatmap labels the grid values."""
    ax = res.lines("theory.final.test_loss", x="gamma0", at={"P": 12}).axes[0]
    ax.figure.canvas.draw()
    assert ax.get_xscale() == "log"
    np.testing.assert_allclose(ax.get_xticks(), [0.5, 1.0, 2.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "1", "2"]
    assert not ax.xaxis.get_minorticklocs().size


def test_summary_names_the_points_a_solver_flag_marks(res):
    """A scan whose DMFT turned the control variate off at a point warned "1 point(s) ... were solved
    again without it (res['control_variate_off'])", naming no grid point, and the summary said "true at
    1 of 6 points": nothing said which (a walkthrough). The summary now names them, as the diverged."""
    flags = np.zeros(res.grid.shape, bool)
    flags[2, 1] = True                                               # gamma0 = 2, P = 16
    arrays = {**res.arrays, **{f"theory.{q}": flags for q in ("control_variate_off", "heavy_tailed")},
              "theory.grok.reached_train": np.ones(res.grid.shape, bool)}
    text = dataclasses.replace(res, arrays=arrays).summary()
    for q in ("control_variate_off", "heavy_tailed"):
        (line,) = [ln for ln in text.splitlines() if ln.startswith(f"theory.{q}")]
        assert line.endswith("true at 1 of 6 points: gamma0=2 P=16"), line
    (line,) = [ln for ln in text.splitlines() if ln.startswith("theory.grok.reached_train")]
    assert line.endswith("true at 6 of 6 points")                   # (an outcome, not a flag: no list)


def test_node_outputs_say_where_a_split_solve_diverged():
    """A point whose split solve (M / 2 or M / 4 nodes a replica) diverged had NaN node statistics
    and nothing saying why (theory.diverged_step is the whole nodes'): theory.node.diverged_step
    is the first step either split solve diverged at, -1 where neither did."""
    from experiments.scan.outputs import node_outputs

    n, T, R = 3, 4, 2
    rng = np.random.default_rng(0)

    def rec(diverged, k):            # (k populations a replica: a split solve's)
        loss = 0.5 + 0.01 * rng.random((n, T))
        return {"test_loss": loss, "replicas.test_loss": loss[:, :, None] + 0.01 * rng.random((n, T, R * k)),
                "diverged_step": np.asarray(diverged, np.int64)}

    out = node_outputs(rec([-1, -1, -1], 1), rec([-1, 40, -1], 2), rec([-1, 20, 60], 4))
    np.testing.assert_array_equal(out["theory.node.diverged_step"], [-1, 20, 60])


def test_a_batch_warning_inside_a_scan_names_its_points_and_no_setting_a_scan_lacks():
    """solve_batch's control-variate warning inside a scan counted the call's points ("at 1 of 4
    points"), named none, and advised control_variate=False, which a scan cannot set. Raised again
    now naming the grid points its flags mark and the scan's outputs that mark them."""
    import warnings

    from dmft.batch import CV_ADVICE
    from experiments.scan.grid import point_warnings

    columns = {"model.gamma0": np.array([0.5, 1.0, 6.0, 8.0])}
    said = point_warnings(columns, np.arange(4))
    with pytest.warns(UserWarning) as got:
        with said:
            warnings.warn("solve_batch: 1 point(s) that diverged or ended unresolved with it were solved again "
                          "without it, and did not diverge (res['control_variate_off'])" + CV_ADVICE, UserWarning)
            said.marked = np.array([2])
    (w,) = got
    text = str(w.message)
    assert "scan grid point(s) 2: model.gamma0 = 6" in text and "theory.control_variate_off" in text, text
    assert "control_variate=False" not in text and "res['" not in text and "A scan has no control_variate" in text
    with pytest.warns(UserWarning, match=r"\(scan grid point 1: model\.gamma0 = 1\)$"):   # one point, as before
        with point_warnings(columns, 1):
            warnings.warn("networks.train: a seed diverged", UserWarning)
