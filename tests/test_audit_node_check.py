"""Mutation-audit tests of the node-count check (theory.node_check): what tests/test_node_check.py
leaves open. Expected values come from the planted inputs and the documented formulas
(`validation.compare.node_bias`, `validation.verdicts._node_check`), never from a run of the code."""

import dataclasses
import json
import types

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dmft
import validation
from experiments import cli
from experiments import report
from validation.compare import node_bias
from validation.sweep import NODE_CHECK_KINDS, NODE_FRACTIONS, node_check_key
from validation.verdicts import z_bound
from validation.verdicts import checks as verdicts


def _solution(test, se, R, nodes, train=None, t=None, cv=None):
    """A sampled solve's record: test loss (T,), its standard error (T,) from R replicas."""
    test = np.asarray(test, float)
    T = len(test)
    train = test + 1.0 if train is None else np.asarray(train, float)        # (not the test loss)
    info = {"error_dof": R - 1, "replicas": R, "sampler": "stratified"}
    if nodes is not None:
        info["nodes_per_replica"] = nodes
    if cv is not None:
        info["control_variate"] = cv
    return dmft.Solution(t=np.arange(T, dtype=float) if t is None else np.asarray(t, float),
                         f_train=np.zeros((T, 1)), f_test=None, train_loss=train, test_loss=test, ntk=None,
                         feature_kernel=None, gradient_kernel=None, alignment=np.zeros(T),
                         weight_change={"first_layer": np.zeros(T)},
                         error=None if se is None else {"test_loss": np.asarray(se, float),
                                                        "train_loss": np.asarray(se, float)},
                         info=info)


def _sweep(full, half, quarter, g=1.0):
    return validation.LazyToRich(dmft.TwoLayer("relu"), None, [g], [], 1, {g: full}, {g: full}, {}, {}, {},
                                 None, {g: {2: half, 4: quarter}})


def _node(sweep, sigma=5.0, rel=0.0):
    """The node bias verdict, by default without the immaterial-bias margin (node_bias_rel = 0: the
    bound is z_bound's alone)."""
    (check,) = [c for c in verdicts(sweep, {"agreement_sigma": sigma, "node_bias_rel": rel})
                if c["name"].startswith("node bias")]
    return check


# ------------------------------------------------------------------ node_bias


def test_node_bias_reads_the_test_loss_not_the_train_loss():
    sols = [_solution([1.0, 0.5, 0.3 + 0.01 * k], [0, 1e-3, 1e-3], 4, 64 // k) for k in (1, 2, 4)]
    nb = node_bias(*sols)
    assert nb["loss"] == "test"
    np.testing.assert_array_equal(nb["full"], sols[0].test_loss)
    np.testing.assert_array_equal(nb["half"], sols[1].test_loss)
    np.testing.assert_allclose(nb["shift"], sols[0].test_loss - sols[1].test_loss)


def test_node_bias_refuses_a_half_solve_at_other_times_of_the_same_count():
    sols = [_solution(np.full(3, 0.5), np.full(3, 1e-3), 4, 64 // k) for k in (1, 2, 4)]
    shifted = _solution(np.full(3, 0.5), np.full(3, 1e-3), 4, 32, t=[0.0, 2.0, 4.0])
    with pytest.raises(dmft.InputError, match="share their saved times"):
        node_bias(sols[0], shifted, sols[2])


def test_node_bias_takes_solves_that_do_not_record_their_node_counts():
    """`_check_node_counts` compares the counts only where the solves record them."""
    sols = [_solution([1.0, 0.5, 0.4], [0, 1e-3, 1e-3], 4, None) for _ in range(3)]
    nb = node_bias(*sols)
    np.testing.assert_array_equal(nb["shift"], np.zeros(3))


def test_node_bias_z_is_nan_for_one_replica_even_where_the_losses_agree():
    """z is NaN where a solve has no error (one replica), shift 0 or not (docstring)."""
    sols = [_solution([1.0, 0.5, 0.4 + 0.1 * (k == 2)], None, 1, 64 // k) for k in (1, 2, 4)]
    assert np.isnan(node_bias(*sols)["z"]).all()
    assert np.isnan(node_bias(*sols)["dof"]).all()                  # (no replicas - 1 = 0 dof: unknown)


def test_paired_z_of_a_shift_without_spread_is_nan_and_of_no_shift_zero():
    """Where every replica's own difference is the same (shift_se = 0), z is NaN for a shift (no error to
    judge it by) and 0 where there is none, never +-inf (`_shift_z`'s docstring)."""
    from validation.compare import paired_node_statistics
    lf = np.array([[1.0, 2.0], [1.0, 2.0]])                      # (T, R): two times, two replicas
    lh = np.array([[1.0, 1.0, 2.0, 2.0], [0.5, 0.5, 1.5, 1.5]])  # replica j's parts: columns 2j, 2j + 1
    lq = lh.repeat(2, axis=1)
    x = paired_node_statistics([a.mean(axis=1) for a in (lf, lh, lq)], [lf, lh, lq], np.zeros(2))
    assert x["shift_se"].tolist() == [0.0, 0.0] and x["shift"].tolist() == [0.0, 0.5]
    assert x["z"][0] == 0.0 and np.isnan(x["z"][1])


# ------------------------------------------------------------------ the verdict


R, M = 16, 256
T_FULL = [1.0, 0.5, 0.4, 0.3]
SE = [0.0, 0.01, 0.02, 0.03]


def _planted():
    """The shift is 0 at t = 1, -2 at t = 2 (|z| = 2 / hypot(0.02, 0.02) = 70.7, a FAIL) and +0.005 at
    t = 3 (z = +0.118); the control variate off at M / 2 only."""
    full = _solution(T_FULL, SE, R, M, cv=True)
    half = _solution([1.0, 0.5, 2.4, 0.295], SE, R, M // 2, cv=False)
    quarter = _solution([1.0, 0.5, 2.4, 0.33], SE, R, M // 4, cv=True)
    return full, half, quarter


def test_node_verdict_judges_the_time_furthest_past_its_bound_with_its_sign():
    check = _node(_sweep(*_planted()))
    b = z_bound(5.0, R - 1, 6)                    # 3 saved times t > 0 of the test and the train loss
    z2 = -2.0 / np.hypot(0.02, 0.02)
    assert abs(z2) > b > 0.2
    assert check["verdict"] == "FAIL"
    assert check["value"] == pytest.approx(z2, rel=1e-12)               # the signed z of t = 2
    assert check["tolerance"] == f"|z| <= {b:g}"
    d = check["detail"]
    assert "z = shift / its se of the test loss at t = 2," in d
    assert "shift = loss(M) - loss(M / 2) = -2 " in d
    assert f"{2.0 / 0.02:.3g}x the DMFT's own standard error there" in d                     # 100x
    assert f"a bias up to {b * np.hypot(0.02, 0.02) / 0.02:.3g}x the DMFT's own standard error" in d
    assert "the control variate was on, off, on at M, M / 2 and M / 4" in d


def test_node_verdict_detail_gives_each_final_loss_at_its_count_and_the_extrapolation():
    d = _node(_sweep(*_planted()))["detail"]
    # 2 x 0.3 - 0.295 = 0.305: Richardson's extrapolation
    assert d.startswith("final test loss 0.3 at 256 nodes a replica, 0.295 at 128, 0.33 at 64; extrapolated to "
                        "infinitely many nodes 0.305 +- ")


def test_node_verdict_says_a_wide_bound_says_little():
    """Two replicas: a t of 1 degree of freedom, bound far over WEAK_Z (50)."""
    sols = [_solution([1.0, 0.5, 0.4], [0, 0.01, 0.01], 2, 64 // k) for k in (1, 2, 4)]
    check = _node(_sweep(*sols))
    assert z_bound(5.0, 1, 2) > 50
    assert check["verdict"] == "PASS" and "so a PASS here says little: more replicas narrow it fast" in check["detail"]


# ------------------------------------------------------------------ the sweep's shape checks


def test_checks_refuse_a_fewer_that_is_not_a_dict_or_has_an_unknown_gamma0():
    sols = [_solution(np.full(3, 0.5), np.full(3, 1e-3), 4, 64 // k) for k in (1, 2, 4)]
    sweep = _sweep(*sols)
    sweep.fewer = [sols[1], sols[2]]
    with pytest.raises(dmft.InputError, match="sweep.fewer must be a dict"):
        verdicts(sweep)
    sweep.fewer = {1.0: {2: sols[1], 4: sols[2]}, 2.0: {2: sols[1], 4: sols[2]}}
    with pytest.raises(dmft.InputError, match="gamma0 2.0 has no full solution"):
        verdicts(sweep)


def test_checks_take_a_sweep_like_object_without_fewer():
    """`checks` takes any object with a LazyToRich's gamma0s, widths, solutions and lazy: one
    without `fewer` has no node bias check."""
    sols = [_solution(np.full(3, 0.5), np.full(3, 1e-3), 4, 64 // k) for k in (1, 2, 4)]
    sweep = _sweep(*sols)
    duck = types.SimpleNamespace(**{f.name: getattr(sweep, f.name) for f in dataclasses.fields(sweep)
                                    if f.name != "fewer"})
    names = [c["name"] for c in verdicts(duck)]
    assert names and not any(n.startswith("node bias") for n in names)


# ------------------------------------------------------------------ report.py


def test_node_table_has_no_nan_for_one_replica():
    """report.json's rows hold None (JSON null) where an error is unknown, never NaN."""
    sols = [_solution([1.0, 0.5, 0.4 + 0.01 * k], None, 1, 64 // k) for k in (1, 2, 4)]
    rows = report._node_table(_sweep(*sols))
    assert [r["loss"] for r in rows] == ["test", "train"]
    for row in rows:
        for k in ("full_se", "half_se", "quarter_se", "shift_se", "extrapolated_se"):
            assert row[k] is None, k
        json.dumps(row, allow_nan=False)


def test_node_lines_put_each_value_under_its_column():
    row = {"gamma0": 1.0, "loss": "test", "nodes_per_replica": 64, "quarter": 0.3, "quarter_se": 0.03,
           "half": 0.2, "half_se": 0.02, "full": 0.1, "full_se": 0.01, "shift": -0.1, "shift_se": 0.022,
           "curvature": 0.5, "curvature_se": 0.05, "extrapolated": 0.07, "extrapolated_se": 0.007}
    lines = report._node_lines([row])
    (head_i,) = [i for i, line in enumerate(lines) if line.startswith("| gamma0 |")]
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]       # noqa: E731
    table = dict(zip(cells(lines[head_i]), cells(lines[head_i + 2])))
    assert table == {"gamma0": "1", "loss": "test", "M": "64", "loss at M / 4": "0.3 +- 0.03",
                     "loss at M / 2": "0.2 +- 0.02", "loss at M": "0.1 +- 0.01", "shift": "-0.1 +- 0.022",
                     "curvature": "0.5 +- 0.05", "extrapolated (infinitely many nodes)": "0.07 +- 0.007"}
    assert report._node_lines([]) == []


def test_saved_files_list_the_node_check_solves_only_with_it():
    plain = report.saved_files([1.0], [8])
    assert plain == ["theory/lazy_gamma0_1.npz", "theory/lazy_gamma0_1.json", "theory/dmft_gamma0_1.npz",
                     "theory/dmft_gamma0_1.json", "networks/gamma0_1_N8.npz", "networks/gamma0_1_N8.json"]
    checked = report.saved_files([1.0], [8], node_check=True)
    assert checked == plain[:4] + [f"theory/{n}_gamma0_1{e}" for n in ("dmft_half_nodes", "dmft_quarter_nodes")
                                   for e in (".npz", ".json")] + plain[4:]
    # two gamma0s: the lazy limits first (validation.lazy_to_rich solves them first), then each
    # gamma0's DMFT and ensembles
    two = report.saved_files([1.0, 2.0], [8])[::2]
    assert two == ["theory/lazy_gamma0_1.npz", "theory/lazy_gamma0_2.npz", "theory/dmft_gamma0_1.npz",
                   "networks/gamma0_1_N8.npz", "theory/dmft_gamma0_2.npz", "networks/gamma0_2_N8.npz"]
    assert report.saved_files([1.0], [8], theory=False, node_check=True) == plain[4:]


# ------------------------------------------------------------------ the sweep's solves

DATA = dict(D=4, P=12, P_test=20, degree=2, key=0)


def test_node_check_key_is_the_grok_jobs_and_independent():
    """fold_in(fold_in(key, NODE_CHECK_FOLD), k) with the grok job's former constant 0x6E6F6465 (its
    saved node-check runs reproduce), distinct per k and from the key itself."""
    key = jax.random.key(3)
    data = lambda k: jax.random.key_data(k).tolist()            # noqa: E731
    for k in NODE_FRACTIONS:
        assert data(node_check_key(key, k)) == data(jax.random.fold_in(jax.random.fold_in(key, 0x6E6F6465), k))
    assert len({str(data(key)), *(str(data(node_check_key(key, k))) for k in NODE_FRACTIONS)}) == 3


def test_sweep_node_check_solves_keep_the_solves_options_gamma0_and_batches():
    """At gamma0 = 0.5 under minibatch SGD with 2 replicas and no nodes' key (dmft.solve's default,
    key(0)): each node-check solve is dmft.solve with the full solve's options, key, batches and
    gamma0, its nodes split in k, and no kernels."""
    data = dmft.tasks.single_index(**DATA)
    sch = dmft.Schedule(eta0=0.5, steps=20, save_every=10, batch_size=6)
    bkey = jax.random.key(9)
    kw = dict(samples=128, replicas=2, batch_key=bkey)
    sw = validation.lazy_to_rich(dmft.TwoLayer("relu"), data, [0.5], [], 1, schedule=sch, simulate=False,
                                 solve_kw=kw, node_check=True)
    assert sw.solutions[0.5].ntk is not None                      # (dmft.solve's default: kernels)
    m = dmft.TwoLayer("relu", gamma0=0.5)
    for k in NODE_FRACTIONS:
        sol = sw.fewer[0.5][k]
        assert sol.info["replicas"] == 2 * k and sol.info["nodes_per_replica"] == 64 // k
        assert sol.ntk is None and sol.feature_kernel is None
        direct = dmft.solve(m, data, schedule=sch, **kw, key=jax.random.key(0), node_split=k, kernels=False)
        np.testing.assert_array_equal(sol.test_loss, direct.test_loss)


# ------------------------------------------------------------------ the jobs

TINY = ["--gamma0", "0.05", "1", "--widths", "8", "16", "--seeds", "2", "--steps", "20",
        "--samples", "256", "--set", "task.D=4", "--set", "task.P=16", "--set", "task.P_test=20",
        "--set", "train.save_every=10", "--no-progress"]
SOLVE = ["--gamma0", "1", "--steps", "20", "--samples", "256", "--set", "task.D=4", "--set", "task.P=16",
         "--set", "task.P_test=20", "--set", "train.save_every=10", "--no-progress"]


def test_solve_job_refuses_a_node_check_that_cannot_run_before_the_run(tmp_path, capsys):
    out = tmp_path / "bad"
    args = ["solve", "--out", str(out), "--set", "theory.node_check=true", "--set", "theory.samples=264",
            "--set", "theory.replicas=4"]
    assert cli.main(args + [a for a in SOLVE if a not in ("--samples", "256")]) == 2
    assert "theory.node_check: samples = 264 in 4 replicas cannot be split into 4 parts" in capsys.readouterr().err
    assert not out.exists()


def test_solve_job_without_node_check_reports_none_and_rechecks(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["solve", "--out", str(out)] + SOLVE) in (0, 1)
    rep = json.loads((out / "report.json").read_text())
    assert rep["node_check"] is None and not any(c["name"].startswith("node bias") for c in rep["checks"])
    assert "Node-count check" not in (out / "report.md").read_text()
    capsys.readouterr()
    assert cli.main(["solve", "--out", str(out), "--set", "check.agreement_sigma=3"] + SOLVE) in (0, 1)
    assert "re-checked" in capsys.readouterr().err


def test_validate_recheck_keeps_the_node_check_results_in_run_json(tmp_path):
    """A recheck's run.json lists the node-check solves among the run's results, as the run's did
    (`saved_files(node_check=True)`, read and verified by the recheck)."""
    out = tmp_path / "v"
    args = ["validate", "--out", str(out), "--set", "theory.node_check=true"] + TINY
    assert cli.main(args) in (0, 1)
    results = set(json.loads((out / "run.json").read_text())["files"]["results"])
    assert {f"theory/{n}_gamma0_{g}.npz" for n in NODE_CHECK_KINDS.values() for g in ("0.05", "1")} <= results
    assert cli.main(args + ["--set", "check.agreement_sigma=3"]) in (0, 1)
    assert set(json.loads((out / "run.json").read_text())["files"]["results"]) == results


# ------------------------------------------------------------------ both losses judged


def _pair(test, train, se, R=R, M=M):
    """Independent full and split solves with planted test and train losses (lists of 3 (T,) lists)."""
    return [_solution(te, se, R, M // k, train=tr) for te, tr, k in zip(test, train, (1, 2, 4))]


def test_a_node_bias_of_the_train_loss_alone_fails_naming_it():
    """The test loss agrees at every count; the train loss at M / 2 sits 50 shift errors off at t = 2
    (a walkthrough measured a train-loss node bias the test loss did not show)."""
    test = [T_FULL] * 3
    train = [[1.0, 0.6, 0.5, 0.4], [1.0, 0.6, 0.5 + 50 * np.hypot(0.02, 0.02), 0.4], [1.0, 0.6, 0.5, 0.4]]
    check = _node(_sweep(*_pair(test, train, SE)))
    assert check["verdict"] == "FAIL" and check["value"] == pytest.approx(-50.0, rel=1e-12)
    assert "z = shift / its se of the train loss at t = 2," in check["detail"]
    assert ("shared among 6 judged (loss, saved time) pairs (the test loss at 3 and the train loss at 3 saved "
            "times t > 0)") in check["detail"]
    assert "; final train loss 0.4 at 256 nodes a replica" in check["detail"]
    # without test losses the train loss is the only one: 3 saved times
    sols = _pair(test, train, SE)
    for s in sols:
        s.test_loss = None
    check = _node(_sweep(*sols))
    assert check["verdict"] == "FAIL" and check["tolerance"] == f"|z| <= {z_bound(5.0, R - 1, 3):g}"


def test_a_train_loss_at_rounding_is_not_judged():
    """A realizable train loss falls to rounding (below AGREEMENT_FLOOR of its start), where its
    shift and error are rounding's: those times are left out of the family; all of them: SKIP."""
    test = [T_FULL] * 3
    tiny = [1.0, 1e-9, 1e-30, 2e-31]
    train = [tiny, [1.0, 1e-9, 3e-30, 1e-31], tiny]
    se = [0.0, 1e-11, 1e-33, 1e-33]
    check = _node(_sweep(*_pair(test, train, se)))
    assert check["verdict"] == "PASS" and check["tolerance"] == f"|z| <= {z_bound(5.0, R - 1, 3):g}"
    assert ("shared among 3 judged (loss, saved time) pairs (the test loss at 3 saved times t > 0) (3 more, "
            "where the loss is below 1e-06 of its start, at rounding, are not judged)") in check["detail"]
    sols = _pair(test, train, se)
    for s in sols:
        s.test_loss = None
    check = _node(_sweep(*sols))
    assert check["verdict"] == "SKIP" and "below 1e-06 of its start" in check["detail"]


def test_node_bias_refuses_an_unknown_loss_or_a_test_loss_it_does_not_have():
    sols = _pair([T_FULL] * 3, [T_FULL] * 3, SE)
    assert node_bias(*sols, loss="train")["loss"] == "train"
    np.testing.assert_array_equal(node_bias(*sols, loss="train")["full"], sols[0].train_loss)
    with pytest.raises(dmft.InputError, match="loss must be 'test', 'train' or None, got 'val'"):
        node_bias(*sols, loss="val")
    sols[1].test_loss = None
    with pytest.raises(dmft.InputError, match="no test losses"):
        node_bias(*sols, loss="test")
    assert node_bias(*sols)["loss"] == "train"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-30.0, 30.0), min_size=6, max_size=6), st.integers(2, 32))
def test_node_verdict_fails_exactly_where_some_loss_and_time_passes_the_shared_bound(zs, reps):
    """Planted z's at 3 saved times of each loss: FAIL iff one |z| exceeds z_bound at reps - 1 dof
    shared among the 6; the value is the z furthest past (or nearest) it, of either loss."""
    se = [0.0, 0.01, 0.01, 0.01]
    base = [1.0, 0.5, 0.4, 0.3]
    shift = np.asarray(zs) * 0.01 * np.sqrt(2)
    test = [base, [b - d for b, d in zip(base, [0.0, *shift[:3]])], base]
    train = [base, [b - d for b, d in zip(base, [0.0, *shift[3:]])], base]
    check = _node(_sweep(*_pair(test, train, se, R=reps)))
    b = z_bound(5.0, reps - 1, 6)
    # (|z|'s tied to rounding, as -30 and +30, may be judged at either: the value is one of the largest)
    top = max(map(abs, zs))
    assert any(check["value"] == pytest.approx(z, rel=1e-9, abs=1e-9) for z in zs if abs(z) >= top * (1 - 1e-9))
    assert check["verdict"] == ("FAIL" if max(map(abs, zs)) > b else "PASS")


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 60.0), st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]), st.sampled_from([0.0, 0.01, 0.1]),
       st.integers(2, 32))
def test_a_bias_within_node_bias_rel_of_the_error_bar_passes_however_resolved(bias, rel, half_se, reps):
    """The test loss at M / 2 sits bias x the DMFT's standard error (0.01) above it at every time (the
    train loss's shift 0): FAIL iff |shift| passes rel x se by more than z_bound x its error
    (hypot(0.01, half_se)), the bound shown (rounded up to 3 digits) the one applied."""
    se, T = 0.01, [1.0, 0.5, 0.4, 0.3]
    full = _solution(T, [0.0] + [se] * 3, reps, M)
    half = _solution([1.0] + [v + bias * se for v in T[1:]], [0.0] + [half_se] * 3, reps, M // 2,
                     train=np.asarray(T) + 1.0)
    quarter = _solution(T, [0.0] + [se] * 3, reps, M // 4)
    check = _node(_sweep(full, half, quarter), rel=rel)
    sse = np.hypot(se, half_se)
    b = z_bound(5.0, reps - 1, 6) + rel * se / sse
    shown = float(check["tolerance"].removeprefix("|z| <= "))
    assert b <= shown <= b * (1 + 1e-2)
    assert check["value"] == pytest.approx(-bias * se / sse, rel=1e-9, abs=1e-12)
    assert check["verdict"] == ("FAIL" if bias * se / sse > shown else "PASS")
    assert f"({rel:g}x of it by design, check.node_bias_rel" in check["detail"]


def test_the_allowance_is_zero_where_either_error_is_zero_or_unknown():
    """node_bias_bound's allowance rel x full_se / shift_se is 0 where either error is 0 or unknown, at
    rel = inf too: the bound is z_bound's alone there, never NaN (a NaN bound is never the nearest)."""
    from validation.verdicts import node_bias_bound
    bounds = node_bias_bound(5.0, [15.0] * 4, [True] * 4, float("inf"), [0.0, np.nan, 0.01, 0.01],
                             [0.01, 0.01, 0.0, np.nan])
    assert bounds.tolist() == [z_bound(5.0, 15.0, 4)] * 4


def test_a_wide_bound_from_the_allowance_alone_is_not_called_weak():
    """The allowance (node_bias_rel x se / shift_se) can make the bound wide where the shift is far
    more precise than the loss (the demo's train loss: 153 at gamma0 = 0.05): 'a PASS here says
    little' is for few degrees of freedom, not for it. Here 100 x 0.01 / hypot(0.01, 0.01) = 70.7
    beside z_bound = 9.5 at 15 dof."""
    sols = [_solution(T_FULL, SE, R, M // k) for k in (1, 2, 4)]
    check = _node(_sweep(*sols), rel=100.0)
    assert float(check["tolerance"].removeprefix("|z| <= ")) > 50 > z_bound(5.0, R - 1, 6)
    assert check["verdict"] == "PASS" and "says little" not in check["detail"]
    # two replicas: weak by its degrees of freedom, said
    sols = [_solution(T_FULL, SE, 2, M // k) for k in (1, 2, 4)]
    assert "says little" in _node(_sweep(*sols), rel=100.0)["detail"]


def test_an_infinite_allowance_reports_the_largest_z_not_the_first_times():
    """node_bias_rel = inf (accepted by checks: no bound) makes every judged bound inf: the value
    shown is the largest |z| (a review: 0.0, the first time's, against a real -70.7)."""
    check = _node(_sweep(*_planted()), rel=float("inf"))
    assert check["verdict"] == "PASS" and check["tolerance"] == "|z| <= inf"
    assert check["value"] == pytest.approx(-2.0 / np.hypot(0.02, 0.02), rel=1e-12)
