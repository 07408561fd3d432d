"""Tests a third mutation audit of validation/compare.py and validation/verdicts.py found missing
(after tests/test_mutation_audit74c.py): each kills a small semantic mutant (a changed constant, a
swapped min / max, a dropped term) of a line that decides a number or a verdict `dmft validate`'s
report shows, and that the suite let pass: prediction_stats's rounding allowance and its q where
nothing varies, _worst's first non-finite theory time and AGREEMENT_FLOOR, the paired node
counts' key and config checks, width_scaling's theory floor, _nearest_bound at a zero bound, the
prediction and z checks' shared bound, judged time, noise, se and weak notes, the spread check's
decimal bounds, lower edge and fewest widths, and the lazy check's gamma0 and lazy_move skip.
Synthetic inputs with closed-form or independently computed expectations; nothing is trained or
solved."""

import types

import numpy as np
import pytest

import dmft
from dmft.errors import InputError
from validation.compare import prediction_stats


# ------------------------------------------------------------------ compare.prediction_stats
def test_prediction_stats_adds_rounding_of_the_larger_of_each_value_and_the_scale():
    """Two seeds, one time, 3 points, rounding r = 0.1, scale 2, theory se 0.3 a point: q's
    denominator is tr C / n + sum se^2 + sum (r max(|theory|, scale))^2 (points 5 and 0.5 take 5
    and 2), k divides it by lambda_max(C / n) + the two traces (capped at the points), and the
    noise is sqrt(denominator / points) / scale."""
    f_net = np.array([[[5.5, 0.5, -1.0]], [[4.5, 1.5, -1.0]]])        # (S, T, points)
    f_th = np.array([[5.0, 0.5, -3.0]])
    se = np.full((1, 3), 0.3)
    p = prediction_stats(f_net, f_th, se, 3, scale=2.0, rounding=0.1)
    rows = f_net[:, 0]
    c = np.cov(rows.T) / 2                                         # the mean's covariance, (3, 3)
    tr_r = (0.1 * 5.0) ** 2 + (0.1 * 2.0) ** 2 + (0.1 * 3.0) ** 2  # 0.25 + 0.04 + 0.09
    total = np.trace(c) + 3 * 0.09 + tr_r
    d = rows.mean(axis=0) - f_th[0]
    assert p["q"][0] == pytest.approx(d @ d / total, rel=1e-12)
    assert p["k"][0] == pytest.approx(total / (np.max(np.linalg.eigvalsh(c)) + 3 * 0.09 + tr_r), rel=1e-12)
    assert p["noise"][0] == pytest.approx(np.sqrt(total / 3) / 2.0, rel=1e-12)
    assert p["dof"][0] == 1


def test_prediction_stats_rounding_holds_where_only_the_theory_varies_and_nan_where_nothing_does():
    """Seeds that agree exactly (no spread) with a sampled theory: the rounding is still added (the
    theory varies); with an exact theory nothing varies, so q is 0 where the mean equals the
    theory and NaN (not inf) where it does not."""
    f_net = np.array([[[1.0, 2.0]], [[1.0, 2.0]]])
    f_th = np.array([[1.5, 2.0]])
    p = prediction_stats(f_net, f_th, np.full((1, 2), 0.1), 4, scale=1.0, rounding=0.1)
    total = 2 * 0.01 + (0.1 * 1.5) ** 2 + (0.1 * 2.0) ** 2
    assert p["q"][0] == pytest.approx(0.25 / total, rel=1e-12)
    assert np.isnan(prediction_stats(f_net, f_th, None, scale=1.0, rounding=0.1)["q"][0])
    assert prediction_stats(f_net, f_net[0], None, scale=1.0, rounding=0.1)["q"][0] == 0.0


# ------------------------------------------------------------------------------- compare._worst
def test_a_time_without_a_theory_is_not_read_as_seeds_diverging_where_it_did_not():
    """Theory not finite from t = 2, where the seeds are not finite either: that time is the
    theory's ("theory_not_finite_t" 2, worst_rel_t 2, the first such time, NaN), not a divergence of the seeds where the
    theory held ("first_diverged_t" None; counted, it read a FAIL of inf "where the theory did
    not")."""
    from validation.compare import _worst

    stats = {"theory": np.array([1.0, 0.5, np.inf, np.nan]), "mean": np.array([1.0, 0.5, np.nan, np.nan]),
             "rel_error": np.array([0.0, 0.0, np.nan, np.nan]), "finite_seeds": np.array([4, 4, 2, 2])}
    out = _worst(stats, [0.0, 1.0, 2.0, 3.0], 4)
    assert out["first_diverged_t"] is None and out["theory_not_finite_t"] == 2.0
    assert out["worst_rel_t"] == 2.0 and np.isnan(out["worst_rel_error"])


def test_the_agreement_floor_is_one_millionth_of_the_initial_loss():
    """AGREEMENT_FLOOR = 1e-6 of the initial loss 1: a theory at 5e-6 is above it, so networks at
    5.4e-6 read 0.08 relative to the theory (a FAIL at 0.05; a floor of 1e-5 read 0.04, a PASS);
    a theory at 5e-7 is below it and the same gap reads 0.4e-6 / 1e-6."""
    from validation.compare import _worst

    def worst(theory, mean):
        stats = {"theory": np.array([1.0, theory]), "mean": np.array([1.0, mean]),
                 "rel_error": np.abs(np.array([0.0, (mean - theory) / theory])), "finite_seeds": np.array([4, 4])}
        return _worst(stats, [0.0, 1.0], 4)["worst_rel_error"]

    assert worst(5e-6, 5.4e-6) == pytest.approx(0.08, rel=1e-9)
    assert worst(5e-7, 9e-7) == pytest.approx(0.4, rel=1e-9)


# ---------------------------------------------------------------------- verdicts._nearest_bound
def test_a_value_past_a_zero_bound_is_the_furthest_past_its_bound():
    """A bound of 0 (sigma = 0 with no allowance) and a value above it is infinitely far past it:
    that time is judged (a FAIL), not one within its bound (with ratio 0 there it judged the
    other, 0.5 against 1, a PASS)."""
    from validation.verdicts import _nearest_bound

    ok = np.array([True, True])
    assert _nearest_bound(np.array([0.5, 0.1]), np.array([1.0, 0.0]), ok, 0.0) == 1
    assert _nearest_bound(np.array([0.5, 0.0]), np.array([1.0, 0.0]), ok, 0.0) == 0


# ------------------------------------------------------------------ compare._check_node_counts
def _split(nodes, R, split, key=(0, 1), config=None):
    """A paired (or independent: split 1) sampled solve's record, nothing solved: its losses,
    errors, replicas' losses and the node split it records."""
    T = 3
    loss = np.array([1.0, 0.5, 0.25])
    info = {"error_dof": R - 1, "replicas": R, "sampler": "stratified", "nodes_per_replica": nodes,
            "node_split": split, "nodes_key": list(key), "method": "forward"}
    if config is not None:
        info["config"] = config
    return dmft.Solution(t=np.arange(T, dtype=float), f_train=np.zeros((T, 1)), f_test=None, train_loss=loss,
                         test_loss=None, ntk=None, feature_kernel=None, gradient_kernel=None,
                         alignment=np.zeros(T), weight_change={"first_layer": np.zeros(T)},
                         error={"train_loss": np.full(T, 0.01)},
                         replicas={"train_loss": np.tile(loss[:, None], (1, R))}, info=info)


def _config(**solve):
    return {"model": {"activation": "relu"}, "solve": {"samples": 64, **solve}}


def test_paired_solves_must_split_the_solutions_own_nodes_all_three():
    """The quarter split from other nodes (another key), of another problem (its config differs
    from both others' alone) or at 0 nodes is refused; paired solves that differ only in the
    solver's free choices (cv_mode) are taken; a key outside [solve] named like one of them is not
    free."""
    from validation.compare import _check_node_counts

    full, half = _split(8, 2, 1, config=_config()), _split(4, 4, 2, config=_config())
    assert _check_node_counts(full, half, _split(2, 8, 4, config=_config(cv_mode="a"))) is True
    with pytest.raises(InputError, match="one key"):
        _check_node_counts(full, half, _split(2, 8, 4, key=(0, 2), config=_config()))
    with pytest.raises(InputError, match="samples"):
        _check_node_counts(full, half, _split(2, 8, 4, config=_config(samples=32)))
    other = {"model": {"activation": "relu", "kernels": "all"}, "solve": {"samples": 64}}
    with pytest.raises(InputError, match="model.kernels"):
        _check_node_counts(full, half, _split(2, 8, 4, config=other))
    with pytest.raises(InputError, match="M / 4 nodes"):
        _check_node_counts(_split(0, 2, 1), _split(0, 4, 2), _split(0, 8, 4))


# ------------------------------------------------------------------------ compare.width_scaling
def test_the_theory_floor_is_the_rms_of_the_dmfts_errors_over_points_and_times():
    """The DMFT's own standard error 0.1 and 0.3 (on targets of RMS 1) at the two points, at every
    time: its floor is their RMS over the points, sqrt((0.01 + 0.09) / 2), not their mean (0.2),
    and the per-seed error has that taken out in quadrature at each time; over these two widths
    the spread check SKIPs (a slope through two points has no error)."""
    import networks
    import validation

    t, y = np.linspace(0.0, 2.0, 3), np.array([1.0, -1.0])
    f = np.outer(1 - np.exp(-t), y)                                   # (T, points)
    se = np.broadcast_to(np.array([0.1, 0.3]), f.shape)
    loss = np.mean((y[None] - f) ** 2, axis=1)
    sol = dmft.Solution(t=t, f_train=f, f_test=f, train_loss=loss, test_loss=loss, ntk=None, feature_kernel=None,
                        gradient_kernel=None, alignment=np.zeros(3), weight_change={"first_layer": np.zeros(3)},
                        error={"f_test": se, "f_train": se}, info={"target_rms": {"test": 1.0}})
    runs = {}
    for n, eps in ((16, 0.8), (64, 0.4)):
        fn = f[None] + eps * np.array([1.0, -1.0])[:, None, None] * (t > 0)[None, :, None]   # 2 seeds
        ln = np.mean((y[None, None] - fn) ** 2, axis=2)
        runs[n] = networks.Run(t=t, f_train=fn, f_test=fn, train_loss=ln, test_loss=ln, ntk=None,
                               feature_kernel=None, gradient_kernel=None, alignment=np.zeros((2, 3)),
                               weight_change={"first_layer": np.zeros((2, 3))},
                               info={"width": n, "seeds": 2, "diverged": {}})
    sc = validation.width_scaling(sol, runs)
    floor = np.sqrt(0.05)
    assert sc["theory_floor"] == pytest.approx(floor, rel=1e-12)
    np.testing.assert_allclose(sc["per_seed_error_net"], np.sqrt([0.64 - 0.05, 0.16 - 0.05]), rtol=1e-12)
    # two widths fit a slope without an error: the spread check SKIPs below MIN_SPREAD_WIDTHS = 3
    from validation.verdicts import checks

    sweep = types.SimpleNamespace(widths=[16, 64], gamma0s=[1.0], solutions={1.0: sol}, lazy={1.0: sol},
                                  scaling={1.0: sc})
    spread = checks(sweep)[0]
    assert spread["name"] == "spread gamma0=1" and spread["verdict"] == "SKIP"
    assert "at least 3 widths" in spread["detail"]


# --------------------------------------------------------------------- verdicts._prediction_check
def test_predictions_equal_to_an_exact_theory_without_spread_are_not_judged():
    """Seeds that agree with each other and with an exact theory at every time: q = 0 with no law
    (k NaN, nothing varies), a SKIP (with only q's finiteness asked, q_bound(NaN) = NaN made
    every judged time NaN and the check raised)."""
    from validation.verdicts import _prediction_check

    nan = np.full(3, np.nan)
    comp = types.SimpleNamespace(
        t=np.arange(3.0), mean_error=np.zeros(3),
        summary={"loss": "test", "final_finite_seeds": 4, "final_network_std": 0.0, "final_theory_se": 0.0},
        prediction={"q": np.zeros(3), "k": nan, "dof": np.full(3, 3.0), "noise": np.zeros(3),
                    "finite_seeds": np.full(3, 4), "points": 2, "split": "test"})
    check = _prediction_check("prediction", comp, 5.0, "DMFT", "", "")
    assert check["verdict"] == "SKIP" and "no spread over seeds and an exact theory" in check["detail"]


def test_the_q_bound_is_shared_among_the_judged_times_and_z_names_its_times_se():
    """Two judged times (t = 1, 2; t = 0 never): q's bound has the tail shared between them,
    q_bound(5, k, dof, 2), not one time's, and the larger q, at t = 2, is judged; the z check's
    detail gives the se of the time it judges
    (0.25 at t = 2, not t = 1's 0.5); each notes a bound too wide to say much (WEAK_Z, WEAK_Q)."""
    from validation.verdicts import _prediction_check, _z_check, q_bound

    comp = types.SimpleNamespace(
        t=np.arange(3.0), mean_error=np.full(3, 0.1),
        summary={"loss": "test", "final_finite_seeds": 4, "final_network_std": 0.1, "final_theory_se": 0.0,
                 "final_z": 4.0},
        prediction={"q": np.array([0.0, 1.0, 1.2]), "k": np.full(3, 2.0), "dof": np.full(3, 3.0),
                    "noise": np.array([0.1, 0.2, 0.3]), "finite_seeds": np.full(3, 4), "points": 2, "split": "test"},
        test_loss={"z": np.array([0.0, 0.5, 4.0]), "dof": np.full(3, 3.0), "se": np.array([1.0, 0.5, 0.25]),
                   "finite_seeds": np.full(3, 4)})
    check = _prediction_check("prediction", comp, 5.0, "DMFT", "", "")
    assert check["tolerance"] == f"q <= {q_bound(5.0, 2.0, 3.0, 2):g}" != f"q <= {q_bound(5.0, 2.0, 3.0, 1):g}"
    assert check["value"] == 1.2 and "at t = 2," in check["detail"]               # t = 0's q is never judged
    assert "against 0.3 expected" in check["detail"]                              # that time's noise
    z = _z_check("z", comp, 5.0, "loss", "DMFT", "", "")
    assert "at t = 2," in z["detail"] and "se = 0.25 " in z["detail"]
    # weak above WEAK_Z = 50 (|z| <= 198 at 3 dof) and WEAK_Q = 2500 (q <= 1040 at 5 dof is not)
    assert "says little" in z["detail"]
    comp.prediction["dof"] = np.full(3, 5.0)
    assert "says little" not in _prediction_check("prediction", comp, 5.0, "DMFT", "", "")["detail"]


# ----------------------------------------------------------------------- verdicts, lazy check
def test_the_lazy_check_judges_the_smallest_gamma0():
    """gamma0 0.01 and 1: the lazy check compares the DMFT at 0.01 with its lazy limit (equal: a
    PASS), not at 1 (0.5 apart, far from lazy)."""
    from validation.verdicts import checks

    def sol(final):
        return types.SimpleNamespace(test_loss=np.array([1.0, final]), train_loss=np.array([1.0, final]),
                                     info={"method": "forward"})

    sweep = types.SimpleNamespace(gamma0s=[1.0, 0.01], widths=[], solutions={0.01: sol(0.2), 1.0: sol(0.7)},
                                  lazy={0.01: sol(0.2), 1.0: sol(0.2)})
    (lazy,) = checks(sweep)
    assert lazy["name"] == "lazy limit gamma0=0.01" and lazy["verdict"] == "PASS" and lazy["value"] == 0.0


def test_the_spread_bounds_are_the_decimal_ones_a_reader_works_out():
    """-0.1 -+ 0.2 is [-0.3, 0.1] as read from the tolerance shown; the float sum -0.1 - 0.2 lands an
    ulp past it (-0.30000000000000004), and a slope of exactly -0.3 would have been judged outside."""
    from validation.verdicts import _spread_bounds

    assert _spread_bounds(-0.1, 0.2) == (-0.3, 0.1)


def test_the_lazy_check_skips_where_the_lazy_limits_own_weights_move_more_than_lazy_move():
    """The lazy limit's first-layer weights move 0.3 (relative) by its last save at gamma0 0.5,
    more than lazy_move = 0.1: a SKIP that suggests gamma0 <= 0.16 (0.5 x 0.1 / 0.3 rounded down);
    a movement of exactly 0.1, or one recorded for the second layer alone, is judged."""
    from validation.verdicts import checks

    def sol(final, **move):
        return types.SimpleNamespace(test_loss=np.array([1.0, final]), train_loss=np.array([1.0, final]),
                                     info={"method": "forward"}, weight_change=move)

    def lazy(**move):
        sweep = types.SimpleNamespace(gamma0s=[0.5], widths=[], solutions={0.5: sol(0.2)}, lazy={0.5: sol(0.2, **move)})
        return checks(sweep)[0]

    far = lazy(first_layer=np.array([0.0, 0.1, 0.3]))
    assert far["verdict"] == "SKIP" and "move by 0.3 (relative)" in far["detail"] and "gamma0 <= 0.16 " in far["detail"]
    assert lazy(first_layer=np.array([0.0, 0.5, 0.1]))["verdict"] == "PASS"
    assert lazy(second_layer=np.array([0.0, 0.3]))["verdict"] == "PASS"
    assert lazy(first_layer=np.array([]))["verdict"] == "PASS"


def test_the_spread_check_fails_a_slope_below_its_tolerance():
    """Per-seed errors falling as 1 / N over three widths (slope -1): outside -0.5 +- 0.15 on the
    low side, a FAIL."""
    import networks
    import validation
    from validation.verdicts import checks

    t, y = np.linspace(0.0, 2.0, 3), np.array([1.0, -1.0])
    f = np.outer(1 - np.exp(-t), y)
    loss = np.mean((y[None] - f) ** 2, axis=1)
    sol = dmft.Solution(t=t, f_train=f, f_test=f, train_loss=loss, test_loss=loss, ntk=None, feature_kernel=None,
                        gradient_kernel=None, alignment=np.zeros(3), weight_change={"first_layer": np.zeros(3)},
                        error=None, info={"target_rms": {"test": 1.0}})
    runs = {}
    for n in (16, 64, 256):
        fn = f[None] + (16.0 / n) * np.array([1.0, -1.0])[:, None, None] * (t > 0)[None, :, None]
        ln = np.mean((y[None, None] - fn) ** 2, axis=2)
        runs[n] = networks.Run(t=t, f_train=fn, f_test=fn, train_loss=ln, test_loss=ln, ntk=None,
                               feature_kernel=None, gradient_kernel=None, alignment=np.zeros((2, 3)),
                               weight_change={"first_layer": np.zeros((2, 3))},
                               info={"width": n, "seeds": 2, "diverged": {}})
    sweep = types.SimpleNamespace(widths=[16, 64, 256], gamma0s=[1.0], solutions={1.0: sol}, lazy={1.0: sol},
                                  scaling={1.0: validation.width_scaling(sol, runs)})
    spread = checks(sweep)[0]
    assert spread["verdict"] == "FAIL" and spread["value"] == pytest.approx(-1.0, rel=1e-9)
