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
    with pytest.raises(dmft.InputError, match="misses mode 2's law"):   # past its wall at s = 0.8
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


# ------------------------------------------------------------------ the flow at extreme inputs

_GX, _GW = np.polynomial.legendre.leggauss(20)


def _log_h(u, s, L, kappa):
    """log |h| at log p = u of the flow d log p / dt = L h(p), h = p^c (s - p) - kappa, c = 1 - 2/L,
    written independently of dmft.deep_linear: from the terms' logs, with log1p/expm1 where they
    cancel (vectorized; the reference of the tests below)."""
    u = np.asarray(u, dtype=np.float64)
    c, ls = 1.0 - 2.0 / L, math.log(s)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = u - ls                                              # log(p / s)
        l1m = np.where(x > -0.69, np.log(-np.expm1(np.minimum(x, 0.0))), np.log1p(-np.exp(np.minimum(x, 0.0))))
        lpm = u + np.where(-x > -0.69, np.log(-np.expm1(np.minimum(-x, 0.0))), np.log1p(-np.exp(np.minimum(-x, 0.0))))
        big = np.where(x < 0, c * u + ls + l1m, c * u + lpm)   # log(p^c |s - p|)
        if kappa == 0:
            return big
        z = big - math.log(kappa)
        below = math.log(kappa) + np.where(z > 30, z + np.log1p(-np.exp(-np.abs(z))),
                                           np.log(np.abs(np.expm1(z))))
        return np.where(x < 0, below, np.logaddexp(math.log(kappa), big))


def _ref_time(u0, u1, s, L, kappa):
    """The flow's time from log p = u0 to u1 (no root of h between them): int du / (L |h|) by
    20-point Gauss-Legendre on panels geometric toward both ends (a root may lie just beyond
    one) and at most 1/4 wide between, each scaled by |h| at its middle (times up to 1e300)."""
    lo, hi = min(u0, u1), max(u0, u1)
    span = hi - lo
    if span == 0:
        return 0.0
    geo = span * 2.0 ** -np.arange(1, 60)
    edges = np.unique(np.concatenate([[lo, hi], lo + geo, hi - geo, np.arange(math.ceil(4 * lo) / 4, hi, 0.25)]))
    edges = edges[(edges >= lo) & (edges <= hi)]
    a, w = edges[:-1], np.diff(edges)
    mid = _log_h(a + w / 2, s, L, kappa)
    x = a[:, None] + w[:, None] * (_GX + 1) / 2
    with np.errstate(over="ignore"):
        part = (w / 2) * np.sum(_GW * np.exp(mid[:, None] - _log_h(x, s, L, kappa)), axis=1)
        return float(np.sum(part * np.exp(-mid - math.log(L))))


def _ref_roots(s, L, kappa):
    """(log barrier, log fixed point) of h (None for none): for L > 2 by bisection in log p on either
    side of h's top at p = c s / (1 + c); for L <= 2 (h decreasing) the closed forms."""
    if kappa == 0:
        return None, math.log(s)
    if L <= 2:
        return None, (math.log(s / (1 + kappa)) if L == 1 else (math.log(s - kappa) if kappa < s else None))
    c = 1.0 - 2.0 / L
    top = math.log(c * s / (1 + c))

    def sign(u):                    # sign of h: p^c (s - p) against kappa, in logs
        x = u - math.log(s)
        return x < 0 and c * u + math.log(s) + math.log(-math.expm1(x)) > math.log(kappa)

    if not sign(top):
        return None, None
    out = []
    for lo, hi, up in (((math.log(kappa) - math.log(s)) / c - 5, top, True), (top, math.log(s), False)):
        for _ in range(3000):
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            lo, hi = (lo, mid) if sign(mid) == up else (mid, hi)
        out.append(0.5 * (lo + hi))
    return tuple(out)


def _flow_agrees(model, data, kappa, t, rtol_p=1e-9, rtol_t=1e-10):
    """mode_flow of one mode at times t is the flow's value, to rtol_p in p, at a time within rtol_t
    of t (t itself is only known to rounding: a fast passage, 1e-300 to 5e9 within 1e-280 of
    t = 1e295, is the flow at t's neighbours), by `_ref_time` from the start: no assertion holds
    the library's own variables."""
    L, s = model.depth, float(dl.effective_modes(data).s[0])
    lp = L * math.log(model.init_scale)
    la, lb = _ref_roots(s, L, kappa)
    end = lb if (lb is not None and (la is None or lp > la)) else -math.inf
    p = dl.mode_flow(model, data, t, weight_decay=kappa)[:, 0]
    assert np.all(np.isfinite(p)) and np.all(p >= 0)
    sign = 1.0 if end > lp else -1.0

    def time_to(v):             # the reference time from the start to log p = v on the path (0 before it)
        if (v - lp) * sign <= 0:
            return 0.0
        return math.inf if (v - end) * sign >= 0 else _ref_time(lp, v, s, L, kappa)

    for tk, pk in zip(t, p):
        if tk == 0:
            np.testing.assert_allclose(pk, math.exp(lp), rtol=1e-15)
            continue
        if pk < 1e-300:                 # (near) underflow: past the time to 1e-300 falling, before it rising
            low = math.log(1e-300)
            assert end < low or lp < low, (tk, pk)
            if lp > low:
                assert time_to(low) <= tk * (1 + rtol_t), (tk, pk)
            elif end > low:
                assert tk <= time_to(low) * (1 + rtol_t), (tk, pk)
            continue
        u = math.log(pk)
        t_lo, t_hi = sorted(time_to(u + d) for d in (-rtol_p, rtol_p))
        assert t_lo * (1 - rtol_t) <= tk <= t_hi * (1 + rtol_t), (tk, pk, t_lo, t_hi)
    return p


def test_the_reference_quadrature_is_exact_where_the_flow_has_closed_forms():
    """_ref_time against closed forms: without decay at L = 2 (logistic), and at L = 4 from far
    below (t ~ pi0^(-1/2) / (s L / 2), to 1e-9 where the plateau dominates)."""
    s, p0, p1 = 3.0, 1e-200, 1.5
    exact = (math.log(p1 / (s - p1)) - math.log(p0 / (s - p0))) / (2 * s)
    np.testing.assert_allclose(_ref_time(math.log(p0), math.log(p1), s, 2, 0.0), exact, rtol=1e-12)
    # L = 4 on the plateau, a decay 1e-200 of the drift: int dp / (4 s p^(3/2)) = (p0^-1/2 - p1^-1/2) / (2 s)
    np.testing.assert_allclose(_ref_time(math.log(1e-200), math.log(1e-190), 2.0, 4, 1e-300),
                               (1e100 - 1e95) / (2 * 2.0), rtol=1e-9)


@settings(max_examples=8, deadline=None)
@given(log_f=st.floats(1e-3, 50.0), L=st.sampled_from([3, 10, 100]), log_s=st.floats(-5.0, 150.0))
@example(log_f=math.log10(1e3), L=100, log_s=10.0)     # the audit's subnormal barrier: t_half 3.5e299 for 1.2e295
@example(log_f=math.log10(1e10), L=100, log_s=10.0)    # (1.9e299 for 1.6e288), flow stuck at the barrier
@example(log_f=math.log10(1.001), L=100, log_s=10.0)   # ValueError: math domain error
@example(log_f=20.0, L=100, log_s=100.0)               # barrier 1e-400: ValueError: math domain error
@example(log_f=1.0, L=100, log_s=120.0)                # "not finite at t = 0.001", "exceeds float64's range"
def test_decayed_flow_near_a_barrier_below_float_range(log_f, L, log_s):
    """Weight decay 1e-300 puts the barrier p^(1 - 2/L) s = kappa far below the start (subnormal,
    1e-316, at s = 1e10, L = 100; below float range, 1e-400, at s = 1e100): a start f times above
    it raised ValueError (log of an underflowed ratio), or rose ~1e4 times too slowly, or stayed
    at the barrier. Learning times against an independent quadrature to 1e-9, and the flow on
    times 1e-300..1e300 as `_flow_agrees` checks it."""
    kappa, s = 1e-300, 10.0 ** log_s
    la, lb = _ref_roots(s, L, kappa)
    lp = la + log_f * math.log(10)
    assume(lp < math.log(0.4 * s) and math.exp(lp / L) > 0)
    data = dmft.tasks.linear_teacher(1, 1, [s], key=0)
    model = dmft.DeepLinear(L, 2, math.exp(lp / L), "aligned")
    lp = L * math.log(model.init_scale)
    got = dl.learning_times(model, data, 0.5, weight_decay=kappa)[0]
    np.testing.assert_allclose(got, _ref_time(lp, lb + math.log(0.5), s, L, kappa), rtol=1e-9)
    assert not dl.switched_off(model, data, kappa)[0]
    _flow_agrees(model, data, kappa, np.concatenate([[0.0], np.geomspace(1e-300, 1e300, 13), [got]]))


@settings(max_examples=15, deadline=None)
@given(L=st.one_of(st.integers(1, 6), st.integers(7, 100)), log_pi0=st.floats(-400.0, 300.0),
       log_s=st.floats(-150.0, 150.0), kappa=st.one_of(st.just(0.0), st.floats(-300.0, 2.0).map(lambda x: 10.0 ** x)))
@example(L=3, log_pi0=303.0, log_s=-30.0, kappa=0.0)          # pi0 / s > 2^1074: ValueError: math domain error
@example(L=3, log_pi0=303.0, log_s=-30.0, kappa=1e-300)       # (with decay too)
@example(L=3, log_pi0=276.0, log_s=-10.0, kappa=0.0)          # Newton stopped at 1e-15 absolute in w ~ 1e-286: 4e-4 off
@example(L=5, log_pi0=72.0, log_s=-143.86, kappa=1e-100)      # no fixed point: decayed at rate L kappa too early
@example(L=100, log_pi0=-216.9, log_s=150.0, kappa=0.0)       # s e^w with e^w < 1e-308: 0 at t = 1e-300
@example(L=2, log_pi0=237.1, log_s=-135.4, kappa=1e-100)      # 2 kappa t underflowed: stuck at the start
@example(L=100, log_pi0=-400.0, log_s=100.0, kappa=1e-300)    # below float range, above the barrier (1e-408): refused
@example(L=2, log_pi0=300.0, log_s=-24.0, kappa=0.0)          # w = s / pi0 + 2 s t below float range: s / 0 = inf
@example(L=2, log_pi0=298.0, log_s=-17.0, kappa=0.0)          # (at t = 1e-300: 1e-300, not 3.3e297)
def test_flow_at_extreme_inputs_agrees_with_an_independent_quadrature(L, log_pi0, log_s, kappa):
    """mode_flow at times 1e-300..1e300 and learning_times (levels 0.5, 0.9) against `_ref_time`,
    over depth 1..100, starts 1e-400..1e300, targets 1e-150..1e150 and decay 0 or 1e-300..1e2; a
    refusal only where a time exceeds float64 or the flow is not representable. The examples are
    the wrong numbers and raw errors found this way."""
    s, lp = 10.0 ** log_s, log_pi0 * math.log(10)
    assume(math.exp(lp / L) > 0 and lp / L < 700)
    data = dmft.tasks.linear_teacher(1, 1, [s], key=0)
    model = dmft.DeepLinear(L, 2, math.exp(lp / L), "aligned")
    lp = L * math.log(model.init_scale)
    la, lb = _ref_roots(s, L, kappa)
    assume(la is None or abs(lp - la) > 1e-6)                  # (on the barrier: p(t) is pi0's last bits)
    assume(lb is None or abs(lp - lb) > 1e-6)
    assume(not (L == 2 and kappa and abs(s / kappa - 1) < 1e-6))   # (s' = s - kappa: rounding's own)
    try:
        _flow_agrees(model, data, kappa, np.concatenate([[0.0], np.geomspace(1e-300, 1e300, 19)]))
    except dmft.InputError as err:                             # only a start whose own scale overflows
        assert str(err).startswith("init_scale:") and lp >= 700, str(err)
        return
    for level in (0.5, 0.9):
        try:
            got = dl.learning_times(model, data, level, weight_decay=kappa)[0]
        except dmft.InputError as err:
            assert "exceeds float64's range" in str(err)
            assert _ref_time(lp, lb + math.log(level), s, L, kappa) > 1e307
            continue
        if lb is None or (la is not None and lp < la) or lp >= lb + math.log(level):
            assert np.isnan(got)                                # never reaches it
        else:
            np.testing.assert_allclose(got, _ref_time(lp, lb + math.log(level), s, L, kappa), rtol=1e-9)


def test_boltzmann_temperature_where_the_diffusion_overflows_but_the_temperature_does_not():
    """T = D(pi*) / (2 |mu'(pi*)|) = eta L s^(2 - 2/L) sigma^2 / (2 B) online without decay: at
    s = 1e100, sigma = 1e10, L = 4 that is 2e168 while D(s) = 1.6e319 overflows (it was refused
    naming pi, an argument boltzmann_temperature does not take); a T beyond float64 is refused
    naming the teacher's scale that makes it."""
    model = dmft.DeepLinear(4, 3, 0.5, "aligned")
    for s, sigma in ((1e100, 1e10), (1e100, 1.0), (2.0, 0.3)):
        data = dmft.tasks.linear_teacher(2, 2, [s], label_noise=sigma, key=1)
        T = dl.boltzmann_temperature(model, data, eta0=0.01, batch_size=1)
        np.testing.assert_allclose(T, 0.01 * 4 * s ** 1.5 * sigma ** 2 / 2, rtol=1e-12)
    data = dmft.tasks.linear_teacher(2, 2, [1e150], label_noise=1e60, key=1)     # (c(pi*) = sigma^2: the noise's)
    with pytest.raises(dmft.InputError, match="^label_noise: mode 1's Boltzmann temperature .* is 10\\^417, beyond"):
        dl.boltzmann_temperature(dmft.DeepLinear(100, 3, 0.5, "aligned"), data, eta0=0.01, batch_size=1)


@pytest.mark.parametrize("s, sigma, L, eta", [(3.0, 1e-7, 4, 0.01), (1e7, 1.0, 2, 1e-8), (3.0, 1e-9, 3, 1e-3)])
def test_weak_label_noise_has_a_stationary_density_not_a_point_mass(s, sigma, L, eta):
    """The point-mass rule was c(pi*) <= 1e-12 c(0): label noise 1e-7 on s = 3 (or 1 on s = 1e7)
    was refused as a point mass, although the law is 3.2e-8 (0.32) wide, about 1e8 float64 ulps:
    its SDE's paths spread by 3.9e-8 (0.38) at eta L s^(2-2/L) = 0.2. The density is now computed;
    its standard deviation is the Boltzmann one, sqrt(T), to the Ito and anharmonic corrections."""
    data = dmft.tasks.linear_teacher(1, 1, [s], key=0, label_noise=sigma)
    model = dmft.DeepLinear(L, 2, 0.5, "aligned")
    T = dl.boltzmann_temperature(model, data, eta0=eta, batch_size=1)[0]
    grid = np.linspace(s - 8 * math.sqrt(T), s + 8 * math.sqrt(T), 2001)
    p = dl.stationary_density(model, data, grid, eta0=eta, batch_size=1)[:, 0]
    mean = np.trapezoid(grid * p, grid)
    sd = math.sqrt(np.trapezoid((grid - mean) ** 2 * p, grid))
    assert abs(sd / math.sqrt(T) - 1) < 0.15 and math.sqrt(T) > 1e4 * np.spacing(s), (sd, T)


def test_a_point_mass_is_no_noise_or_a_law_narrower_than_float64():
    """What stays a point mass: no noise at pi* (online c = 0 exactly; on a fixed set c(pi*) at the
    rounding of its moments, ~1e-30 of the largest c(0)), and a law narrower than float64 resolves
    at pi* (eta0 = 1e-300, or a decay of 1e-14 moving pi* by 1e-14): that one raised
    UnresolvedLawError asking for grid steps of 0 (the dln job failed after training)."""
    model = dmft.DeepLinear(2, 2, 0.5, "aligned")
    online = dmft.tasks.linear_teacher(1, 1, [3.0], key=0)
    fixed = dmft.tasks.linear_teacher(3, 3, [1e100, 1e50], P=20, key=0)    # rounding: c(s_2) / c_2(0) = 1.2
    narrow = np.linspace(2.9, 3.1, 101)
    for data, kw in ((online, {}), (fixed, {}), (online, {"eta0": 1e-300, "weight_decay": 0.1}),
                     (online, {"weight_decay": 1e-14})):
        kw = {"eta0": 0.01, **kw}
        star = dl.fixed_points(model, data, kw.get("weight_decay", 0.0))
        grid = narrow if data is online else np.linspace(0.5, 1.5, 101) * star[1]
        with pytest.raises(dl.PointMassError, match="point mass"):
            dl.stationary_density(model, data, grid, batch_size=1, mode=0 if data is online else 1, **kw)


def test_a_law_is_found_on_a_grid_far_wider_than_it():
    """Depth 1, eta0 = 1.5: the networks blow up to 1e88 while the law sits at s; the stationary
    fit's grid spans 1e89 and the law (0.6 wide) needs ~13 refinements of ~1e3 to be seen: 12 stopped
    short (UnresolvedLawError with a core of one point, then the dln job failed after training).
    The law on that grid, made fine across its core by `mode_law`, is the law on a grid of its own."""
    data = dmft.tasks.linear_teacher(1, 1, [3.0], key=0, label_noise=1.0)
    model = dmft.DeepLinear(1, 2, 0.5, "aligned")
    kw = dict(eta0=0.01, batch_size=1)
    grid, p = validation.deep_linear.mode_law(model, data, np.linspace(-6e88, 2e88, 4001), 0, **kw)
    own = np.linspace(2.0, 4.0, 4001)
    q = dl.stationary_density(model, data, own, **kw)[:, 0]
    mean, mean_own = np.trapezoid(grid * p, grid), np.trapezoid(own * q, own)
    assert abs(np.trapezoid(p, grid) - 1) < 1e-6 and abs(mean - mean_own) < 1e-6, (mean, mean_own)


@pytest.mark.parametrize("lo, hi", [(3.0, 4.0), (10.0, 20.0), (0.01, 0.5)])
def test_a_density_grid_that_misses_the_law_is_refused(lo, hi):
    """stationary_density normalized its law on any grid: on [3, 4], where mode 2's law (at 1.0,
    0.07 wide) has no mass to speak of, it returned a density of mean 3.21. A grid that misses the
    law's core is refused, naming the core; one across it gives the law."""
    t = dmft.tasks.linear_teacher(d_in=2, d_out=2, singular_values=[3.0, 1.0], label_noise=0.5, key=1)
    m = dmft.DeepLinear(depth=2, width=4, init_scale=0.1, init="aligned")
    with pytest.raises(dmft.InputError, match=r"misses mode 2's law, whose core .* is \[0\.[0-9]+, 1\.[0-9]+\]"):
        dl.stationary_density(m, t, np.linspace(lo, hi, 2001), eta0=0.02, batch_size=1, mode=1)
    g = np.linspace(0.5, 1.5, 2001)
    p = dl.stationary_density(m, t, g, eta0=0.02, batch_size=1, mode=1)[:, 1]
    assert abs(np.trapezoid(p * g, g) - 1.0) < 0.05


def test_staircase_figure_draws_the_decayed_flow_and_refuses_another_decay():
    """dl.staircase_figure drew the undecayed flow and plateaus beside decayed networks or SDE paths
    (no weight_decay argument): at depth 3, kappa = 0.05 its s = 0.75 mode rose to 0.75 in the
    figure while the paths decayed to 0. It takes weight_decay now, refuses a run or SDE that
    records another (naming weight_decay), and draws mode_flow(..., weight_decay) and the plateaus of
    the fixed points."""
    import matplotlib
    matplotlib.use("Agg")
    data = dmft.tasks.linear_teacher(3, 3, [3.0, 1.5, 0.75], key=1)
    model = dmft.DeepLinear(depth=3, width=6, init_scale=0.05, init="aligned")
    kappa = 0.05
    sde = dl.mode_sde(model, data, eta0=0.01, batch_size=4, steps=200, save_every=20, paths=4,
                      weight_decay=kappa)
    with pytest.raises(dmft.InputError, match="weight_decay"):
        dl.staircase_figure(model, data, sde=sde)
    t = np.geomspace(1e-2, 60.0, 50)
    fig = dl.staircase_figure(model, data, sde=sde, t=t, weight_decay=kappa)
    black = [ln.get_ydata() for ln in fig.axes[0].lines if ln.get_color() == "k"]
    np.testing.assert_allclose(np.stack(black, axis=1), dl.mode_flow(model, data, t, weight_decay=kappa), rtol=1e-12)
    assert black[2][-1] < 1e-6                                   # (the switched-off mode decays)
    settled = np.where(dl.switched_off(model, data, kappa), np.nan, dl.fixed_points(model, data, kappa))
    dotted = sorted(ln.get_ydata()[0] for ln in fig.axes[1].lines if ln.get_linestyle() == ":")
    np.testing.assert_allclose(dotted, sorted(dl.plateaus(data, settled)["levels"]), rtol=1e-12)
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_a_full_batch_point_mass_names_full_batch_steps_not_the_weight_decay():
    """Full-batch steps (B = P) with weight decay 0.2, which moves the fixed point well off the
    target: the law is a point mass because the steps have no noise, and the message says so (it
    read "weight_decay = 0.2 too small to move it off the target, or full-batch steps" in `dmft
    dln`'s report); without label noise or decay the message names those."""
    data = dmft.tasks.linear_teacher(4, 4, [3.0, 2.0], P=20, key=0)
    model = dmft.DeepLinear(2, 8, 0.2, "aligned")
    grid = np.linspace(2.0, 3.2, 401)
    with pytest.raises(dl.PointMassError) as err:
        dl.stationary_density(model, data, grid, eta0=0.005, batch_size=20, weight_decay=0.2)
    assert "full-batch steps, batch_size = P = 20" in str(err.value) and "too small" not in str(err.value)
    with pytest.raises(dl.PointMassError) as err:
        dl.stationary_density(model, data, grid, eta0=0.005, batch_size=4)
    assert "no label noise, and weight_decay = 0 too small" in str(err.value) and "full-batch" not in str(err.value)
