"""The node-count check of the lazy-to-rich sweep and the solve and validate jobs: the DMFT solved
again at half and a quarter of the nodes a replica (`validation.lazy_to_rich(node_check=True)`,
theory.node_check), `validation.compare.node_bias` and the node bias verdict."""

import dataclasses
import json
import pathlib
import re

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import dmft
import validation
from experiments import cli
from validation.compare import node_bias
from validation.sweep import NODE_CHECK_KINDS, NODE_FRACTIONS, node_check_key
from validation.verdicts import z_bound
from validation.verdicts import checks as verdicts


def _solution(loss, se, dof, nodes):
    """A solve's record with its test loss (T,), that loss's standard error (T,) and error_dof."""
    T = len(loss)
    return dmft.Solution(t=np.arange(T, dtype=float), f_train=np.zeros((T, 1)), f_test=None,
                         train_loss=np.asarray(loss, float), test_loss=np.asarray(loss, float), ntk=None,
                         feature_kernel=None, gradient_kernel=None, alignment=np.zeros(T),
                         weight_change={"first_layer": np.zeros(T)},
                         error=None if se is None else {"test_loss": np.asarray(se, float)},
                         info={"error_dof": dof, "nodes_per_replica": nodes, "sampler": "stratified"})


def _sweep(sols, fewer):
    """A LazyToRich of theory only (the node checks read its solutions and `fewer`)."""
    g = 1.0
    return validation.LazyToRich(dmft.TwoLayer("relu"), None, [g], [], 1, {g: sols}, {g: sols}, {}, {}, {},
                                 None, {g: fewer})


# ------------------------------------------------------------------ node_bias and the verdict


@settings(max_examples=40, deadline=None)
@given(x_inf=st.floats(0.1, 2.0), a=st.floats(-50.0, 50.0), b=st.floats(-2000.0, 2000.0),
       M=st.sampled_from([256, 1024, 4096]), se=st.floats(1e-5, 1e-2), R=st.integers(2, 16))
def test_node_bias_reads_a_planted_law(x_inf, a, b, M, se, R):
    """Losses on x_inf + a / M + b / M^2 at every saved time (no noise): the shift is -a / M - 3b / M^2,
    the extrapolation x_inf - 2 b / M^2, the curvature -6 b / M^2, z the shift over hypot(se, se_half),
    at replicas - 1 degrees of freedom."""
    T = 5
    x = lambda m: np.full(T, x_inf + a / m + b / m ** 2)            # noqa: E731
    ses = [np.full(T, se * np.sqrt(k)) for k in (1, 2, 4)]
    sols = [_solution(x(M // k), s, R - 1, M // k) for k, s in zip((1, 2, 4), ses)]
    nb = node_bias(*sols)
    assert nb["loss"] == "test" and nb["t"].tolist() == list(range(T))
    np.testing.assert_allclose(nb["shift"], -a / M - 3 * b / M ** 2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(nb["extrapolated"], x_inf - 2 * b / M ** 2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(nb["curvature"], -6 * b / M ** 2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(nb["z"], nb["shift"] / np.hypot(ses[0], ses[1]), rtol=1e-12)
    assert (nb["dof"] == R - 1).all()
    # the verdict: FAIL exactly where some time's |z| is past the bound of the family of T - 1 times
    (check,) = [c for c in verdicts(_sweep(sols[0], dict(zip(NODE_FRACTIONS, sols[1:]))),
                                    {"agreement_sigma": 5.0, "node_bias_rel": 0.0})
                if c["name"].startswith("node bias")]
    bound = z_bound(5.0, R - 1, T - 1)
    assert check["verdict"] == ("FAIL" if np.abs(nb["z"][1:]).max() > bound else "PASS")
    assert float(check["tolerance"].removeprefix("|z| <= ")) == bound
    assert f"at {M} nodes a replica, " in check["detail"] and f"at {M // 4}; extrapolated" in check["detail"]


def test_node_bias_z_keeps_its_tail_over_independent_draws():
    """Without a bias, |z| passes the bound at the normal tail's level or less: R replicas at M and R
    at M / 2 (twice the variance), each solve's error from its own replicas, 20000 independent draws
    (one per saved time). The bound's dof, replicas - 1, is the fewer of the two solves' (their summed
    variance has between R - 1 and 2 (R - 1)), which bounds the law whatever the share of each
    (`validation.compare.min_dof`): conservative, 0.12x nominal at 2 sigma with 2 replicas, 0.82x with
    16. Welch's estimated dof came nearer (0.5-1.0x at 2 sigma) but past it at 5 sigma where the two
    variances differ eightfold: 2.5-3.5x nominal (exact conditional tails, 8-16 replicas)."""
    rng = np.random.default_rng(7)
    T, sigma = 20001, 2.0
    nominal = 2 * stats.norm.sf(sigma)
    for R, least in ((2, 0.05), (4, 0.25), (8, 0.5), (16, 0.65)):
        sols = []
        for k in (1, 2, 4):
            reps = 0.4 + np.sqrt(k) * rng.normal(size=(R, T))
            sols.append(_solution(reps.mean(0), reps.std(0, ddof=1) / np.sqrt(R), R - 1, 4096 // k))
        z = node_bias(*sols)["z"][1:]
        rate = np.mean(np.abs(z) > z_bound(sigma, R - 1))
        assert least * nominal < rate <= nominal * 1.1, (R, rate / nominal)


def test_node_bias_takes_the_train_loss_without_test_targets_and_refuses_other_times():
    sols = [_solution(np.linspace(1, 0.5, 4) + k * 1e-3, np.full(4, 1e-3), 3, 256 // k) for k in (1, 2, 4)]
    for s in sols:
        s.test_loss = None
        s.error = {"train_loss": np.full(4, 1e-3)}
    nb = node_bias(*sols)
    assert nb["loss"] == "train" and np.isfinite(nb["z"]).all()
    other = _solution(np.ones(5), np.full(5, 1e-3), 3, 64)
    with pytest.raises(dmft.InputError, match="share their saved times"):
        node_bias(sols[0], sols[1], other)
    with pytest.raises(dmft.InputError, match="half must be a dmft.Solution"):
        node_bias(sols[0], {"test_loss": 1.0}, sols[2])


def test_node_bias_refuses_solves_at_other_node_counts_and_a_malformed_sweep():
    """Solves in another order, at other node counts or replicas are refused (they would read as a
    bias of the wrong size or sign), and so is a sweep whose `fewer` is not {2: ..., 4: ...}."""
    sols = [_solution(np.full(3, 0.5), np.full(3, 1e-3), 3, 256 // k) for k in (1, 2, 4)]
    with pytest.raises(dmft.InputError, match=r"M, M / 2 and M / 4 nodes a replica, got \[128, 256, 64\]"):
        node_bias(sols[1], sols[0], sols[2])
    five = _solution(np.full(3, 0.5), np.full(3, 1e-3), 3, 51)
    with pytest.raises(dmft.InputError, match="M / 4 nodes a replica"):
        node_bias(sols[0], sols[1], five)
    more = dataclasses.replace(sols[1], info={**sols[1].info, "replicas": 8})
    with pytest.raises(dmft.InputError, match="as many replicas"):
        node_bias(dataclasses.replace(sols[0], info={**sols[0].info, "replicas": 4}), more,
                  dataclasses.replace(sols[2], info={**sols[2].info, "replicas": 4}))
    for bad in ({2: sols[1]}, [sols[1], sols[2]], {2: sols[1], 4: "x"}):
        sweep = _sweep(sols[0], {})
        sweep.fewer = {1.0: bad}
        with pytest.raises(dmft.InputError, match=r"sweep.fewer\[1.0\] must map 2 and 4"):
            verdicts(sweep)


def test_node_bias_verdict_skips_one_replica_and_fails_a_loss_that_is_not_finite():
    T = 4
    one = [_solution(np.full(T, 0.5), None, 0, 64 // k) for k in (1, 2, 4)]
    (check,) = [c for c in verdicts(_sweep(one[0], dict(zip(NODE_FRACTIONS, one[1:])))) if "node" in c["name"]]
    assert check["verdict"] == "SKIP" and "one replica" in check["detail"]
    assert np.isnan(node_bias(*one)["extrapolated_se"]).all()         # (its curvature alone is no error bar)
    bad = [_solution(np.array([0.5, 0.4, np.nan, np.nan]) if k == 2 else np.full(T, 0.5), np.full(T, 1e-3), 3,
                     64 // k) for k in (1, 2, 4)]
    (check,) = [c for c in verdicts(_sweep(bad[0], dict(zip(NODE_FRACTIONS, bad[1:])))) if "node" in c["name"]]
    assert check["verdict"] == "FAIL" and "at M / 2 nodes a replica is not finite from t = 2" in check["detail"]


# ------------------------------------------------------------------ the sweep's solves

DATA = dict(D=4, P=12, P_test=20, degree=2, key=0)
SCHEDULE = dmft.Schedule(eta0=0.5, steps=20, save_every=10)


def test_sweep_splits_each_solves_own_nodes_in_halves_and_quarters():
    """node_check=True: each gamma0's DMFT again with each replica's nodes split in 2 and in 4
    (dmft.solve(node_split=k): the same key and samples, 2 and 4 times the replicas of 1 / k of
    the nodes), handed to on_result as it is done; the same seed, the same numbers."""
    data = dmft.tasks.single_index(**DATA)
    seen = []
    kw = dict(gamma0s=[1.0], widths=[], seeds=1, schedule=SCHEDULE, simulate=False,
              solve_kw=dict(samples=256, key=jax.random.key(3)), node_check=True)
    sw = validation.lazy_to_rich(dmft.TwoLayer("relu"), data, on_result=lambda *r: seen.append(r[0]), **kw)
    assert seen == ["lazy", "dmft", *NODE_CHECK_KINDS.values()]
    full, fewer = sw.solutions[1.0], sw.fewer[1.0]
    assert sorted(fewer) == list(NODE_FRACTIONS)
    for k, sol in fewer.items():
        assert sol.info["nodes_per_replica"] == full.info["nodes_per_replica"] // k
        assert sol.info["replicas"] == k * full.info["replicas"] and sol.info["node_split"] == k
        assert sol.info["nodes_key"] == full.info["nodes_key"] and sol.info["error_dof"] == full.info["error_dof"]
        direct = dmft.solve(dmft.TwoLayer("relu", gamma0=1.0), data, schedule=SCHEDULE, samples=256,
                            key=jax.random.key(3), node_split=k, kernels=False)
        np.testing.assert_array_equal(sol.test_loss, direct.test_loss)
    again = validation.lazy_to_rich(dmft.TwoLayer("relu"), data, **kw)
    for k in NODE_FRACTIONS:
        np.testing.assert_array_equal(again.fewer[1.0][k].test_loss, fewer[k].test_loss)
    assert validation.node_bias(full, fewer[2], fewer[4])["paired"]
    names = [c["name"] for c in validation.checks(sw)]
    assert names[-1] == "node bias gamma0=1"
    plain = validation.lazy_to_rich(dmft.TwoLayer("relu"), data, **{**kw, "node_check": False})
    assert plain.fewer == {} and not any("node" in c["name"] for c in validation.checks(plain))


@pytest.mark.parametrize("solve_kw, match", [
    (dict(method="lazy"), "method 'lazy' has no sampled nodes"),
    (dict(samples=264), r"samples = 264 in 4 replicas cannot be split into 4 parts a replica .*multiple of 8 x replicas"),
    (dict(samples=248, replicas=2), r"samples = 248 in 2 replicas cannot be split into 4 parts a replica"),
    (dict(samples=12, replicas=1, sampler="mc"), r"cannot be split into 4 parts a replica .*multiple of 8"),
    (dict(sampler="quadrature"), "with a quadrature rule")])
def test_sweep_node_check_refused_before_any_compute(solve_kw, match, monkeypatch):
    data = dmft.tasks.single_index(**DATA)
    monkeypatch.setattr(dmft, "solve", lambda *a, **k: pytest.fail("solved before the refusal"))
    with pytest.raises(dmft.InputError, match=match):
        validation.lazy_to_rich(dmft.TwoLayer("relu"), data, [1.0], [], 1, schedule=SCHEDULE, simulate=False,
                                solve_kw=solve_kw, node_check=True)
    with pytest.raises(dmft.InputError, match="node_check must be"):
        validation.lazy_to_rich(dmft.TwoLayer("relu"), data, [1.0], [], 1, schedule=SCHEDULE, simulate=False,
                                node_check="yes")


# ------------------------------------------------------------------ the jobs

# (the sizes of tests/test_validation.py's TINY: its programs are compiled already in a shared worker)
TINY = ["--gamma0", "0.05", "1", "--widths", "8", "16", "--seeds", "2", "--steps", "20",
        "--samples", "256", "--set", "task.D=4", "--set", "task.P=16", "--set", "task.P_test=20",
        "--set", "train.save_every=10", "--no-progress"]


@pytest.fixture(scope="module")
def node_check_run(tmp_path_factory):
    """One fresh `validate` run with theory.node_check=true (TINY's sizes), made once: each test
    below takes its own copy (a folder of relative paths) to recheck, edit or damage."""
    out = tmp_path_factory.mktemp("node_check") / "v"
    assert cli.main(["validate", "--out", str(out), "--set", "theory.node_check=true"] + TINY) in (0, 1)
    return out


def _copy_of(run, tmp_path):
    import shutil
    return pathlib.Path(shutil.copytree(run, tmp_path / "v"))


def test_validate_with_node_check_saves_reports_and_rechecks_the_solves(node_check_run, tmp_path, capsys):
    out = _copy_of(node_check_run, tmp_path)
    for g in ("0.05", "1"):
        for name in NODE_CHECK_KINDS.values():
            for ext in (".npz", ".json"):
                assert (out / "theory" / f"{name}_gamma0_{g}{ext}").exists()
    rep = json.loads((out / "report.json").read_text())
    rows = rep["node_check"]
    assert [(r["gamma0"], r["loss"]) for r in rows] == [(0.05, "test"), (0.05, "train"), (1.0, "test"), (1.0, "train")]
    for r in rows:
        g = f"{r['gamma0']:g}"
        sols = [dmft.Solution.load(str(out / "theory" / f"{n}_gamma0_{g}"))
                for n in ("dmft", *NODE_CHECK_KINDS.values())]
        nb = node_bias(*sols, loss=r["loss"])
        for k in ("full", "half", "quarter", "shift", "shift_se", "curvature", "extrapolated", "extrapolated_se"):
            assert r[k] == pytest.approx(float(nb[k][-1]), rel=1e-12), k
        assert r["nodes_per_replica"] == 256 // 8        # TINY's samples in the jobs' default 8 replicas
        assert r["full"] == pytest.approx(float(getattr(sols[0], f"{r['loss']}_loss")[-1]), rel=1e-12)
    node = [c for c in rep["checks"] if c["name"].startswith("node bias")]
    assert [c["name"] for c in node] == ["node bias gamma0=0.05", "node bias gamma0=1"]
    assert all(c["verdict"] in ("PASS", "FAIL") for c in node)
    md = (out / "report.md").read_text()
    assert "## Node-count check (theory.node_check)" in md and "| 1 | test | 32 |" in md and "| 1 | train | 32 |" in md
    # a recheck under another sigma reads the node check's solves back (verified) and judges them again
    capsys.readouterr()
    assert cli.main(["validate", "--out", str(out), "--set", "theory.node_check=true",
                     "--set", "check.agreement_sigma=3"] + TINY) in (0, 1)
    assert "re-checked" in capsys.readouterr().err
    again = json.loads((out / "report.json").read_text())
    assert again["node_check"] == rows
    assert [c["value"] for c in again["checks"] if "node" in c["name"]] == [c["value"] for c in node]
    assert [c["tolerance"] for c in again["checks"] if "node" in c["name"]] != [c["tolerance"] for c in node]
    # a node check's result edited, then removed: the recheck refuses, naming it (the digests cover them)
    capsys.readouterr()
    with open(out / "theory" / "dmft_half_nodes_gamma0_1.json", "a") as fh:
        fh.write(" ")
    assert cli.main(["validate", "--out", str(out), "--set", "theory.node_check=true",
                     "--set", "check.agreement_sigma=4"] + TINY) == 3
    err = capsys.readouterr().err
    assert "dmft_half_nodes_gamma0_1.json" in err and "changed or damaged" in err
    (out / "theory" / "dmft_quarter_nodes_gamma0_1.npz").unlink()
    assert cli.main(["validate", "--out", str(out), "--set", "theory.node_check=true",
                     "--set", "check.agreement_sigma=4"] + TINY) == 3
    assert "dmft_quarter_nodes_gamma0_1.npz" in capsys.readouterr().err


@pytest.mark.parametrize("sets, match", [
    (["theory.method='lazy'"], "theory.node_check: the DMFT solved by method 'lazy'"),
    (["theory.samples=264", "theory.replicas=4"],
     r"theory.node_check: samples = 264 in 4 replicas cannot be split into 4 parts"),
    (["theory.method='closure'", "model.activation='linear'"], "theory.node_check: the DMFT solved by method 'closure'")])
def test_node_check_config_refused_before_the_run(tmp_path, capsys, sets, match):
    out = tmp_path / "bad"
    args = ["validate", "--out", str(out), "--set", "theory.node_check=true"]
    for s in sets:
        args += ["--set", s]
    assert cli.main(args + [a for a in TINY if a not in ("--samples", "256")]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not out.exists()


def test_a_node_check_solve_that_diverges_stops_the_run_saying_why(tmp_path, capsys):
    """Fewer nodes are noisier: where the DMFT at half the nodes a replica diverges and the full one did not,
    the run stops (exit 4, as for the DMFT's own divergence) naming the node check and what to do;
    what was done before it is kept."""
    out = tmp_path / "d"
    args = [a for a in TINY if a not in ("--steps", "20")]
    args[args.index("train.save_every=10")] = "train.save_every=20"
    assert cli.main(["validate", "--out", str(out), "--set", "theory.node_check=true", "--set", "theory.seed=3",
                     "--set", "train.eta0=3.25", "--steps", "40"] + args) == 4
    err = capsys.readouterr().err
    assert "with its nodes split in 2 (node_check: where the full solve did not diverge" in err
    assert (out / "theory" / "dmft_gamma0_0.05.npz").exists()


def test_solve_job_with_node_check_judges_the_node_bias(tmp_path):
    out = tmp_path / "s"
    assert cli.main(["solve", "--out", str(out), "--set", "theory.node_check=true", "--gamma0", "1", "--steps", "20",
                     "--samples", "256", "--set", "task.D=4", "--set", "task.P=16", "--set", "task.P_test=20",
                     "--set", "train.save_every=10", "--no-progress"]) in (0, 1)
    rep = json.loads((pathlib.Path(out) / "report.json").read_text())
    assert [c["name"] for c in rep["checks"]][-1] == "node bias gamma0=1"
    assert [r["loss"] for r in rep["node_check"]] == ["test", "train"]


# ------------------------------------------------------------------ scans

def test_scan_node_check_splits_each_points_own_nodes(tmp_path):
    """scan.node_check: each point's DMFT again with each replica's nodes split in 2 and in 4, from the
    point's own key (key(theory.seed) folded with the point's id, as the full solve's);
    theory.node.* is node_bias of the three paired solves' final test losses."""
    from experiments import scan
    from experiments.scan.grid import point_ids

    # (DATA, relu and SCHEDULE: the split solves below are the compiled programs of
    # test_sweep_splits_each_solves_own_nodes_in_halves_and_quarters)
    table = {"task": {"D": 4, "P": 12, "P_test": 20, "degree": 2}, "model": {"activation": "relu"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10}, "theory": {"samples": 256, "replicas": 4, "seed": 1},
             "scan": {"node_check": True, "grid": {"gamma0": [0.5, 2.0]}}}
    res = scan.run(table, str(tmp_path / "s"))
    data = dmft.tasks.single_index(**DATA)
    sch = SCHEDULE
    for i, g in enumerate([0.5, 2.0]):
        tid = int(point_ids(res.config, {"model.gamma0": np.array([g])}, [0], "theory")[0])
        sols = [dmft.solve(dmft.TwoLayer("relu", gamma0=g), data, schedule=sch, samples=256, replicas=4,
                           kernels=False, key=jax.random.fold_in(jax.random.key(1), tid), node_split=k)
                for k in (1, 2, 4)]
        want = {k: v[-1] for k, v in validation.node_bias(*sols).items() if isinstance(v, np.ndarray)}
        assert res["theory.node.half"][i] == pytest.approx(sols[1].test_loss[-1], rel=1e-10)
        assert res["theory.node.quarter"][i] == pytest.approx(sols[2].test_loss[-1], rel=1e-10)
        for k in ("shift", "shift_se", "curvature", "curvature_se", "extrapolated", "extrapolated_se",
                  "pooled_noise", "z", "dof"):
            assert res[f"theory.node.{k}"][i] == pytest.approx(float(want[k]), rel=1e-8), k
        assert res["theory.node.dof"][i] == 3 and res["theory.node.pooled_noise"][i] > 0
        # the train loss's, as theory.node.train.*
        train = {k: v[-1] for k, v in validation.node_bias(*sols, loss="train").items() if isinstance(v, np.ndarray)}
        assert res["theory.node.train.half"][i] == pytest.approx(sols[1].train_loss[-1], rel=1e-10)
        for k in ("shift", "shift_se", "extrapolated", "extrapolated_se", "pooled_noise", "z"):
            assert res[f"theory.node.train.{k}"][i] == pytest.approx(float(train[k]), rel=1e-8), k
        assert res["theory.node.train.shift"][i] != res["theory.node.shift"][i]
    assert "theory.node.z" in res.summary() and "theory.node.train.z" in res.summary()
    # the summary counts the points whose shift passes the node bias check's bound (z_bound shared
    # among the points, + 0.5 of the loss's own error over the shift's)
    from validation.verdicts import z_bound
    for prefix, loss in (("theory.node", "test"), ("theory.node.train", "train")):
        z, dof, sse = (res[f"{prefix}.{k}"] for k in ("z", "dof", "shift_se"))
        se = res[f"theory.final.error.{loss}_loss"]
        want = np.abs(z) > np.array([z_bound(5.0, d, 2) for d in dof]) + 0.5 * se / sse
        np.testing.assert_array_equal(scan.result.node_bias_flags(res, prefix), want)
        assert f"{prefix}.z: node-count bias past the node bias check's bound (5 sigma shared among the 2 points " \
               f"with an error, + 0.5 of the loss's own error) at {int(want.sum())} of them" in res.summary()
    planted = dataclasses.replace(res, arrays={**res.arrays, "theory.node.z": np.array([0.0, 1e6])})
    assert scan.result.node_bias_flags(planted).tolist() == [False, True]
    assert "at 1 of them: gamma0=2" in scan.result.summary(planted)


@pytest.mark.parametrize("sets, match", [
    ({"model": {"activation": "linear"}}, r"scan.node_check: the DMFT solved by theory.method = 'auto' \(an exact"),
    ({"theory": {"samples": 264, "replicas": 4}}, r"scan.node_check: theory.samples \(264\) must be a multiple of 32"),
    ({"theory": {"samples": 36, "replicas": 3, "sampler": "mc"}}, r"theory.samples \(36\) must be a multiple of 24 \(4 x 2 x theory.replicas"),
    ({"scan": {"theory": False, "networks": True}}, "scan.node_check: checks the DMFT's node count, but scan.theory")])
def test_scan_node_check_refused_before_the_store(tmp_path, sets, match):
    from experiments import scan
    from experiments.config import ConfigError

    table = {"task": {"D": 4, "P": 12, "P_test": 8, "degree": 2}, "model": {"activation": "tanh"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10}, "theory": {"samples": 256, "replicas": 4},
             "scan": {"node_check": True, "grid": {"gamma0": [0.5, 2.0]}}}
    for sec, kv in sets.items():
        table[sec] = {**table[sec], **kv}
    if sets.get("scan", {}).get("theory") is False:
        table.pop("theory")
        table["simulate"] = {"width": 8, "seeds": 2}
    with pytest.raises(ConfigError, match=match):
        scan.run(table, str(tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_scan_node_check_memory_is_checked_before_the_store(tmp_path):
    """Each split program carries every population's matrices (3.7 GiB against the full program's
    1.8 at P = 512, 4 parts): a chunk of them over theory.max_memory_gb is refused before the store,
    in the scan's keys (a review: the full program computed a chunk first, then the split one raised
    solve_batch's advice)."""
    from experiments import scan

    table = {"task": {"D": 16, "P": 512, "P_test": 256, "degree": 2}, "model": {"activation": "tanh"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10},
             "theory": {"samples": 1024, "replicas": 4, "max_memory_gb": 2.75},
             "scan": {"node_check": True, "chunk": 8, "grid": {"gamma0": [0.25 * i for i in range(1, 9)]}}}
    with pytest.raises(dmft.InputError, match=r"scan.node_check's programs split each replica's nodes.*scan.chunk"):
        scan.run(table, str(tmp_path / "s"))
    assert not any((tmp_path / "s").glob("**/*.npz"))


def test_a_validate_run_written_before_node_bias_rel_is_the_same_run(node_check_run, tmp_path, capsys):
    """A run.json without check.node_bias_rel (written before it existed, by older code) is read
    with the default: the same command there is that run (computed again under new code), not
    "a different run" refused over a key its user never set (a review); another value differs."""
    from experiments.output import ADDED_KEYS
    from validation.verdicts import TOLERANCES

    assert ADDED_KEYS[("check", "node_bias_rel")] == TOLERANCES["node_bias_rel"]
    out = _copy_of(node_check_run, tmp_path)        # (a fresh run of argv: node_bias_rel's reader)
    argv = ["validate", "--out", str(out), "--set", "theory.node_check=true"] + TINY
    path = out / "run.json"
    manifest = json.loads(path.read_text())
    del manifest["config"]["check"]["node_bias_rel"]
    del manifest["seal"]                                        # (written before run.json was sealed too)
    path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli.main(argv) in (0, 1)
    assert "this run is already complete" in "".join(capsys.readouterr())
    assert cli.main(argv + ["--set", "check.node_bias_rel=2.0"]) in (0, 1)       # a [check] change: re-checked
    assert "re-checked" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["lazy", "closure"])
def test_node_bias_refuses_solutions_without_nodes(method):
    """Three lazy (or closure) solutions were accepted and every standard error came back NaN, where
    three equal sampled ones are refused: a method without nodes has no node-count bias."""
    data = dmft.tasks.single_index(D=3, P=6, P_test=4, degree=1, key=0)
    model = dmft.TwoLayer("linear" if method == "closure" else "relu", readout="trained")
    sol = dmft.solve(model, data, eta0=0.5, steps=4, save_every=2, method=method)
    with pytest.raises(dmft.InputError, match=f"^solution: a {method} solution has no sampled nodes"):
        validation.node_bias(sol, sol, sol)


def test_scan_node_bias_flags_do_not_depend_on_the_outputs_kept(tmp_path):
    """node_bias_flags' bound has a margin of rel x the loss's own standard error over the shift's;
    a node_check scan that keeps only "grokking" (no theory.final.error.*) had a margin of 0, so its
    points were judged by another bound than the same points with "final" (a walkthrough). The
    loss's own error comes from the full solve at the point's key (dmft.solve, independent of the
    scan), and sigma / rel are chosen so that the margin decides every point."""
    from experiments import scan
    from experiments.scan.grid import point_ids
    from validation.verdicts import z_bound

    table = {"task": {"D": 4, "P": 12, "P_test": 20, "degree": 2}, "model": {"activation": "relu"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10}, "theory": {"samples": 256, "replicas": 4, "seed": 1},
             "scan": {"node_check": True, "outputs": ["grokking"], "grid": {"gamma0": [0.5, 2.0]}}}
    res = scan.run(table, str(tmp_path / "s"))
    assert "theory.final.error.test_loss" not in res.arrays
    data = dmft.tasks.single_index(**DATA)
    se = {"test": [], "train": []}
    for g in (0.5, 2.0):
        tid = int(point_ids(res.config, {"model.gamma0": np.array([g])}, [0], "theory")[0])
        sol = dmft.solve(dmft.TwoLayer("relu", gamma0=g), data, schedule=SCHEDULE, samples=256, replicas=4,
                         kernels=False, key=jax.random.fold_in(jax.random.key(1), tid))
        for loss in se:
            se[loss].append(sol.error[f"{loss}_loss"][-1])
    sigma = 1e-3                               # (z_bound ~ 0: |z| against the margin alone)
    for prefix, loss in (("theory.node", "test"), ("theory.node.train", "train")):
        z, dof, sse = (np.asarray(res[f"{prefix}.{k}"]) for k in ("z", "dof", "shift_se"))
        base = np.array([z_bound(sigma, d, 2) for d in dof])
        assert np.all(np.abs(z) > base)
        margin = np.asarray(se[loss]) / sse
        # rel puts point 0's bound 1.5x as far from base as its |z|: not flagged with the margin,
        # flagged without it (point 1: whichever side its own |z| falls)
        rel = 1.5 * (np.abs(z[0]) - base[0]) / margin[0]
        want = np.abs(z) > base + rel * margin
        assert not want[0]
        np.testing.assert_array_equal(scan.result.node_bias_flags(res, prefix, sigma=sigma, rel=rel), want)
