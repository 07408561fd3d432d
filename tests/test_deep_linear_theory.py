"""Deep linear networks, per-mode theory: when the diffusion peaks along the gradient flow, the
metastable law under weight decay, and the refusals' messages.

The claims are general (any depth, start, target and noise), so they are property tests against
an independent evaluation: D from `dl.diffusion` on dense grids in pi, times from
`dl.learning_times` and `dl.mode_flow`."""

import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import dmft
import validation.deep_linear
from dmft import deep_linear as dl

ETA, B = 0.01, 1
# targets and label noise: D's maximum and minimum merge where the quadratic of
# `_diffusion_extrema` has a double root (online at sigma / s = sqrt(2 / (k (k + 2))): 0.33-0.5 for
# D, 0.57-0.82 for D_a at L = 2..6); there the bump is too small for a dense grid to see. With
# these teachers and noises (online and on 12 points, key 3) the discriminant stays >= 1% of b^2.
TARGETS = ([2.1, 0.7], [1.3, 0.25], [3.0, 1e-3])
NOISES = (0.0, 0.2, 0.6)


def _teacher(s, sigma, P=None):
    return dmft.tasks.linear_teacher(3, 3, list(s), label_noise=sigma, P=P, key=3)


def _dense_peak(model, data, i, kappa, layer):
    """The first interior local maximum of D_i (layer: D_a) along the flow's path in pi, from dense
    grids: (level, its uncertainty) or (None, "rises" | "falls" | "dips"). The path runs from pi0
    to the settled value pi*; below 1e-12 pi* D ~ pi^k c(0) only rises, so the grid starts there."""
    L = model.depth
    star = dl.fixed_points(model, data, kappa)[i]
    pi0 = model.init_scale ** L
    lo, knee = max(pi0, 1e-12 * star), 0.01 * star
    if lo < knee:
        grid = np.concatenate([np.geomspace(lo, knee, 2000)[:-1], np.linspace(knee, star, 20001)])
    else:
        grid = np.linspace(pi0, star, 20001)                      # in path order (decreasing from above)

    def curve(p):
        D = dl.diffusion(model, data, np.repeat(p[:, None], data.rank, axis=1), eta0=ETA, batch_size=B)[:, i]
        return D / (L * p ** (1 - 1 / L)) ** 2 if layer else D

    D = curve(grid)
    up = np.diff(D) > 0
    peaks = np.flatnonzero(up[:-1] & ~up[1:]) + 1                # D[j-1] < D[j] >= D[j+1]
    if peaks.size:
        j = peaks[0]
        fine = np.linspace(grid[j - 1], grid[j + 1], 20001)
        level = fine[int(np.argmax(curve(fine)))]
        # the argmax is known to its step and to where rounding (1e-15 of D) hides the curvature
        h = 1e-3 * level
        d0, dm, dp = curve(np.array([level, level - h, level + h]))
        flat = math.sqrt(4e-15 * d0 * h * h / max(abs(dp + dm - 2 * d0), 1e-300))
        return level, abs(fine[1] - fine[0]) + flat
    if up[0]:
        return None, "rises"
    return None, "dips" if np.any(up) else "falls"


def _time_tolerance(model, data, i, kappa, level, error, t):
    """How far a time can be off when its level is off by `error`: twice that over |d pi / dt|
    there, plus the quadrature's relative rounding."""
    pi = np.full((1, data.rank), level)
    mu = abs(dl.drift(model, data, pi, eta0=ETA, batch_size=B, ito=False, weight_decay=kappa)[0, i])
    return 2 * error / mu + 1e-9 * abs(t) + 1e-12


def _time_between(data, L, kappa, i, lo, hi):
    """Flow time from level lo up to level hi (< pi*) of mode i, by `learning_times` from a model
    that starts at lo: independent of where the network itself started."""
    star = dl.fixed_points(dmft.DeepLinear(L, 3, 0.5, "aligned"), data, kappa)[i]
    start = dmft.DeepLinear(L, 3, lo ** (1 / L), "aligned")
    return dl.learning_times(start, data, hi / star, weight_decay=kappa)[i]


@settings(max_examples=60, deadline=None)
@given(L=st.integers(2, 6), log_init=st.floats(-30.0, -1.0), targets=st.sampled_from(TARGETS),
       sigma=st.sampled_from(NOISES), decay=st.sampled_from([0.0, 0.3, 0.9, 2.5]), fixed=st.booleans())
@example(L=4, log_init=-3.0, targets=[2.1, 0.7], sigma=0.0, decay=0.0, fixed=False)     # review: lead of the wrong sign
@example(L=4, log_init=-4.0, targets=[2.1, 0.7], sigma=0.0, decay=0.0, fixed=False)
@example(L=3, log_init=-5.0, targets=[2.1, 0.7], sigma=0.0, decay=0.0, fixed=False)
@example(L=2, log_init=-20.0, targets=[3.0, 1e-3], sigma=0.0, decay=0.0, fixed=False)   # review: false "falls"
def test_diffusion_peaks_at_the_exact_time_of_the_level_where_D_peaks_in_pi(L, log_init, targets, sigma,
                                                                         decay, fixed):
    """Along the flow pi moves monotonically, so D (and the layer scalar's D_a) peaks in time where
    it peaks in pi over the path: t_peak is the exact time to that level, the leads are the flow
    times between it and t_half / t_90, and a mode without an interior maximum is NaN with the
    reason the dense evaluation sees (rises, falls, or falls and rises again), whatever the start
    (down to init 1e-30, pi0 = 1e-180, times ~1e120). Weight decay kappa = decay x about the
    largest that keeps the start above the decay's barrier (decay 2.5: the weakest mode is
    switched off)."""
    data = _teacher(targets, sigma, P=12 if fixed else None)
    init = 10.0 ** log_init
    model = dmft.DeepLinear(L, 3, init, "aligned")
    s_min = float(np.min(dl.effective_modes(data).s))
    kappa = decay * s_min * (init ** L) ** (1 - 2 / L) if L > 2 else decay * s_min
    pk = dl.diffusion_peaks(model, data, eta0=ETA, batch_size=B, weight_decay=kappa)
    off = dl.switched_off(model, data, kappa)
    stars = dl.fixed_points(model, data, kappa)
    for i in range(data.rank):
        if off[i]:
            assert "switches the mode off" in pk["no_peak"][i] and np.isnan(pk["t_peak"][i])
            continue
        s_i = dl.effective_modes(data).s[i]
        if min(abs(init ** L / stars[i] - 1), abs(init ** L / s_i - 1)) < 1e-9:
            continue                # a start on the target or the fixed point, to rounding: no path to see
        for layer, t_key, why_key, leads in ((False, "t_peak", "no_peak", (("lead_half", 0.5), ("lead_90", 0.9))),
                                             (True, "t_peak_layer", "no_peak_layer", (("lead_half_layer", 0.5),))):
            level, detail = _dense_peak(model, data, i, kappa, layer)     # (level, error) or (None, shape)
            t_peak = pk[t_key][i]
            if level is None:
                assert np.isnan(t_peak), (i, layer, detail, t_peak)
                expected = {"rises": "rises to its plateau", "falls": "falls from the start",
                            "dips": "to a minimum, then rises"}[detail]
                assert expected in pk[why_key][i], (i, layer, pk[why_key][i])
                continue
            assert pk[why_key][i] == "" and np.isfinite(t_peak), (i, layer, pk[why_key][i], level)
            star = stars[i]
            if level > star:                                # from above (decay pulls the mode down)
                pi = dl.mode_flow(model, data, [t_peak], weight_decay=kappa)[0, i]
                assert abs(pi - level) <= 2 * detail, (i, layer, pi, level)
                assert all(np.isnan(pk[lead_key][i]) for lead_key, _ in leads)    # never learned
                continue
            exact = dl.learning_times(model, data, level / star, weight_decay=kappa)[i]
            assert abs(t_peak - exact) <= _time_tolerance(model, data, i, kappa, level, detail, exact), \
                (i, layer, t_peak, exact, level)
            for lead_key, frac in leads:
                lead = pk[lead_key][i]
                half = frac * star
                if half <= init ** L:                       # started past that level: no learning time
                    assert np.isnan(lead) and np.isnan(pk["t_half" if frac == 0.5 else "t_90"][i])
                    continue
                exact = (_time_between(data, L, kappa, i, level, half) if level < half
                         else -_time_between(data, L, kappa, i, half, level))
                assert abs(lead - exact) <= _time_tolerance(model, data, i, kappa, level, detail, exact), \
                    (i, lead_key, lead, exact, level)


@settings(max_examples=25, deadline=None)
@given(L=st.integers(2, 6), log_inits=st.lists(st.floats(-100.0, -2.0), min_size=2, max_size=2),
       sigma=st.sampled_from(NOISES))
@example(L=4, log_inits=[-2.0, -100.0], sigma=0.0)          # review: "rises to its plateau" from 1e-100
def test_leads_do_not_depend_on_the_start(L, log_inits, sigma):
    """The flow is autonomous: the time between two levels does not depend on where the flow
    started. So every lead is the same from init 1e-2 as from 1e-100 (pi0 = 1e-400 at L = 4, below
    float range; t_half up to ~1e300), to 1e-9; a difference of two such times would be rounding
    noise, and a grid over [0, 2 t_90] useless."""
    data = _teacher([2.1, 0.7], sigma)
    out = []
    for log_init in log_inits:
        model = dmft.DeepLinear(L, 3, 10.0 ** log_init, "aligned")
        try:
            out.append(dl.diffusion_peaks(model, data, eta0=ETA, batch_size=B))
        except dmft.InputError as err:                      # t_half beyond float64 (L = 2: never)
            assert str(err).startswith("init_scale:") and "exceeds float64's range" in str(err)
            assume(False)
    for key in ("lead_half", "lead_90", "lead_half_layer"):
        np.testing.assert_allclose(out[0][key], out[1][key], rtol=1e-9, atol=1e-12, err_msg=key)
    for key in ("no_peak", "no_peak_layer"):
        assert out[0][key] == out[1][key]


def test_diffusion_peaks_closed_forms_and_reasons():
    """Online without label noise D = (2 eta / B) mu^2 peaks at pi / s = 2(L-1)/(3L-2) and D_a at
    (L-1)/(2L-1) (at L = 2: t_half exactly, and ln 2 / (2s) before it); with label noise at L = 2
    D peaks at pi = (3 s - sqrt(s^2 - 4 sigma^2)) / 4. From above: D falls from the start, or
    (with decay pulling the mode below s / 2) peaks on the way down; a start between D's maximum
    and minimum falls, then rises; full-batch steps have no noise at all."""
    s = np.array([3.0, 1e-3])
    data = _teacher(s, 0.0)
    for L in (2, 3, 4, 6):
        for init in (0.01, 1e-20):
            model = dmft.DeepLinear(L, 3, init, "aligned")
            pk = dl.diffusion_peaks(model, data, eta0=ETA, batch_size=B)
            np.testing.assert_allclose(pk["t_peak"], dl.learning_times(model, data, 2 * (L - 1) / (3 * L - 2)),
                                       rtol=1e-12)
            np.testing.assert_allclose(pk["t_peak_layer"], dl.learning_times(model, data, (L - 1) / (2 * L - 1)),
                                       rtol=1e-12)
            if L == 2:
                np.testing.assert_array_equal(pk["lead_half"], 0.0)
                np.testing.assert_allclose(pk["lead_half_layer"], np.log(2) / (2 * s), rtol=1e-12)
    noisy = _teacher([2.0], 0.3)
    pk = dl.diffusion_peaks(dmft.DeepLinear(2, 3, 0.01, "aligned"), noisy, eta0=ETA, batch_size=B)
    pi = dl.mode_flow(dmft.DeepLinear(2, 3, 0.01, "aligned"), noisy, pk["t_peak"])[0, 0]
    assert pi == pytest.approx((3 * 2.0 - math.sqrt(4.0 - 4 * 0.09)) / 4, rel=1e-12)
    # from above the target: D ~ pi^2 (pi - s)^2 falls from the start ...
    above = dl.diffusion_peaks(dmft.DeepLinear(2, 3, 1.5, "aligned"), _teacher([2.0], 0.0), eta0=ETA, batch_size=B)
    assert np.isnan(above["t_peak"][0]) and above["no_peak"][0].startswith("no peak: D falls from the start")
    # ... unless decay pulls the mode below s / 2, where D ~ pi^2 (s - pi)^2 peaks, on the way down
    model, one = dmft.DeepLinear(2, 3, 0.9, "aligned"), _teacher([1.0], 0.0)
    pk = dl.diffusion_peaks(model, one, eta0=ETA, batch_size=B, weight_decay=0.6)        # pi*: 0.4
    assert dl.mode_flow(model, one, pk["t_peak"], weight_decay=0.6)[0, 0] == pytest.approx(0.5, rel=1e-12)
    assert np.isnan(pk["t_half"][0]) and np.isnan(pk["lead_half"][0])                 # never learned from below
    # a start between D's maximum (0.641) and minimum (0.859): falls, then rises to its plateau
    dips = dl.diffusion_peaks(dmft.DeepLinear(2, 3, math.sqrt(0.7), "aligned"), _teacher([1.0], 0.45),
                              eta0=ETA, batch_size=B)
    assert "falls from the start to a minimum, then rises to its plateau" in dips["no_peak"][0]
    # full batch on a fixed set: no gradient noise
    full = dl.diffusion_peaks(dmft.DeepLinear(2, 3, 0.1, "aligned"), _teacher([2.0], 0.3, P=6), eta0=ETA,
                              batch_size=6)
    assert all("zero along the flow" in r for r in full["no_peak"] + full["no_peak_layer"])


def test_diffusion_peaks_window_t():
    """t is a window, not a grid: a peak inside [t[0], t[-1]] is the same number as without it,
    one outside is NaN with its time in the reason; t must be increasing, finite and >= 0."""
    data = _teacher([2.1, 0.7], 0.2)
    model = dmft.DeepLinear(3, 3, 0.1, "aligned")
    free = dl.diffusion_peaks(model, data, eta0=ETA, batch_size=B)
    both = dl.diffusion_peaks(model, data, eta0=ETA, batch_size=B, t=[0.0, 1e6])
    for key in ("t_peak", "t_peak_layer", "lead_half", "lead_90", "lead_half_layer"):
        np.testing.assert_array_equal(both[key], free[key])
    cut = 0.5 * (free["t_peak"][0] + free["t_peak"][1])
    first = dl.diffusion_peaks(model, data, eta0=ETA, batch_size=B, t=np.linspace(0.0, cut, 7))
    assert first["t_peak"][0] == free["t_peak"][0] and np.isnan(first["t_peak"][1])
    assert first["no_peak"][1].startswith("no peak in t's range") and f"{free['t_peak'][1]:.6g}" in first["no_peak"][1]
    tt = np.linspace(0.0, 10.0, 401)
    for bad in (np.random.default_rng(0).permutation(tt), tt - 5, [0.0, np.nan, 1.0], [1.0], [[0.0, 1.0]],
                [0.0, 1.0, 1.0], "a"):
        with pytest.raises(dmft.InputError, match=r"^t: "):
            dl.diffusion_peaks(model, data, eta0=ETA, batch_size=B, t=bad)


# ------------------------------------------------------------------ the metastable law under decay

SHALLOW = dict(model=dmft.DeepLinear(6, 3, 0.95, "aligned"), eta0=0.05, batch_size=1, weight_decay=0.3)


@settings(max_examples=30, deadline=None)
@given(lo=st.floats(1e-8, 1.0), span=st.floats(0.01, 3.0), n=st.integers(2, 3000))
@example(lo=0.6, span=0.6, n=2001)                 # review: grids from 0.501 or 0.6 returned a density
@example(lo=0.5010116387661359, span=0.7, n=2001)
def test_a_shallow_well_is_refused_on_any_grid(lo, span, n):
    """The documented shallow well (L = 6, kappa = 0.3, eta = 0.05, B = 1: the density at pi* is
    e^0.00 times that at the barrier's top) has no metastable law, whichever grid asks for it:
    the barrier is searched on all of (0, pi*), not on the caller's grid."""
    data = _teacher([1.0], 0.0)
    grid = np.linspace(lo, lo + span, n)
    with pytest.raises(dl.ShallowWellError, match=r"weight_decay: the well around pi\* = 0.5567 of mode 1 is"):
        dl.stationary_density(SHALLOW["model"], data, grid, **{k: v for k, v in SHALLOW.items() if k != "model"})


@settings(max_examples=30, deadline=None)
@example(lo=1e-4, span=0.0625)     # a grid point between the reference's last zero and first positive point
@given(lo=st.floats(1e-8, 1.0), span=st.floats(0.01, 3.0))
def test_a_deep_well_is_never_refused_and_cut_at_the_same_barrier(lo, span):
    """A deep well (L = 3, kappa = 0.1, label noise 0.5: e^62 between pi* and the barrier's top near
    1e-3) is never refused whatever the grid: a density, or an InputError naming pi when the
    grid holds none of the law; and the density is zero below the same barrier on every grid,
    as far as the reference grid places it (between its last zero and its first positive point,
    0.5% apart: a fresh run found a grid point 0.4% below the first positive one, positive)."""
    data = _teacher([1.0], 0.5)
    model = dmft.DeepLinear(3, 3, 0.5, "aligned")
    kw = dict(eta0=0.05, batch_size=1, weight_decay=0.1)
    grid = np.linspace(lo, lo + span, 801)
    ref_grid = np.geomspace(1e-8, 4.0, 4001)
    ref = dl.stationary_density(model, data, ref_grid, **kw)[:, 0]
    first = np.flatnonzero(ref > 0)[0]
    below, barrier = ref_grid[first - 1], ref_grid[first]
    try:
        p = dl.stationary_density(model, data, grid, **kw)[:, 0]
    except dl.ShallowWellError as err:
        pytest.fail(f"refused a deep well: {err}")
    except dmft.InputError as err:
        assert str(err).startswith("pi: ") and "mode 1's law" in str(err), str(err)
        return
    assert np.all(p[grid < 0.999 * below] == 0) and np.all(p[grid > 1.001 * barrier] > 0)


# ------------------------------------------------------------------ messages

def test_messages_name_the_argument_and_count_modes_from_one():
    data = _teacher([2.0, 0.8], 0.2)
    model = dmft.DeepLinear(2, 3, 0.5, "aligned")
    for ito in ("no", "False", None, 1, 0.0):
        with pytest.raises(dmft.InputError, match="^ito must be True or False"):
            dl.drift(model, data, [1.0, 1.0], eta0=0.1, batch_size=1, ito=ito)
    yes, no = (dl.drift(model, data, [1.0, 1.0], eta0=0.1, batch_size=1, ito=v) for v in (np.True_, False))
    assert np.all(yes != no)
    with pytest.raises(dmft.InputError, match="^model.init: switched_off starts from the aligned"):
        dl.switched_off(dmft.DeepLinear(2, 3, 0.5, "random"), data, 0.3)
    # the figure: a start above every target has no default time axis; run and sde are records
    import matplotlib
    matplotlib.use("Agg")
    with pytest.raises(dmft.InputError, match="^init_scale: the default time axis"):
        dl.staircase_figure(dmft.DeepLinear(2, 3, 1.5, "aligned"), data)
    for kw, name in ((dict(run="x"), "run"), (dict(sde=3), "sde")):
        with pytest.raises(dmft.InputError, match=f"^{name}: expected"):
            dl.staircase_figure(model, data, **kw)
    # modes are counted from 1, as learning_times and the figures count them
    with pytest.raises(dmft.InputError, match=r"switches off mode\(s\) \[2\]"):
        dl.stationary_density(dmft.DeepLinear(2, 3, 0.5, "aligned"), data, np.linspace(0.1, 3, 50), eta0=0.1,
                              batch_size=1, weight_decay=1.0)
    with pytest.raises(dmft.InputError, match="holds none of mode 2's law"):   # past its wall at s = 0.8
        dl.stationary_density(model, _teacher([2.0, 0.8], 0.0), np.linspace(1.0, 1.95, 50), eta0=0.01,
                              batch_size=1, weight_decay=0.1)


# ------------------------------------------------------------------ a law the grid steps over

@settings(max_examples=20, deadline=None)
@given(log_eta=st.floats(-13, -2), n=st.integers(50, 400), kappa=st.sampled_from([0.0, 0.05]))
def test_a_grid_that_steps_over_the_law_is_refused_and_a_fine_one_normalizes_it(log_eta, n, kappa):
    """At a tiny eta0 the law is ~sqrt(eta0) wide (1e-6 at 1e-12): a grid stepping over it gave
    a 'density' one grid point wide (standard deviation 0 or 2e-3 against 1.4e-6). Now such a
    grid is refused naming the law's core, and a grid through the core recovers the law: it
    integrates to one with the small-noise variance eta0 c(s) / (2 B L s^(2 - 2/L) (1 + ...)),
    here checked against the independent local (Gaussian) variance of the drift and diffusion."""
    eta = 10.0 ** log_eta
    data = _teacher([2.0, 1.0], 1.0)
    model = dmft.DeepLinear(2, 3, 0.5, "aligned")
    kw = dict(eta0=eta, batch_size=1, weight_decay=kappa)
    star = float(dl.fixed_points(model, data, kappa)[0])
    grid = np.linspace(0.5 * star, 1.5 * star, n)
    # the local variance of the SDE at its fixed point: D / (2 |mu'|), mu' by a central difference
    h = 1e-6 * star
    mu = [float(dl.drift(model, data, [star + d, 1.0], eta0=eta, batch_size=1, weight_decay=kappa)[0])
          for d in (h, -h)]
    D = float(dl.diffusion(model, data, [star, 1.0], eta0=eta, batch_size=1)[0])
    var = D / (2 * abs((mu[0] - mu[1]) / (2 * h)))
    try:
        p = dl.stationary_density(model, data, grid, mode=0, **kw)[:, 0]
    except dl.UnresolvedLawError as err:
        a, b = err.core
        assert a < star < b and (grid[1] - grid[0]) > (b - a) / 6, str(err)
        assert 5 < (b - a) / np.sqrt(var) < 10, (b - a, var)          # ~ +-3.7 standard deviations
        assert str(err).startswith("pi: the grid steps by up to") and "mode 1's law" in str(err)
        grid, p = validation.deep_linear.mode_law(model, data, grid, 0, **kw)
        assert np.all(np.diff(grid) > 0)
    np.testing.assert_allclose(np.trapezoid(p, grid), 1.0, rtol=1e-6)
    mean = np.trapezoid(grid * p, grid)
    got = np.trapezoid((grid - mean) ** 2 * p, grid)
    if eta < 1e-4:                                    # small noise: the law is the local Gaussian
        np.testing.assert_allclose(got, var, rtol=0.02)
