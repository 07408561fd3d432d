"""Tests from a mutation audit of the last session's changes: each pins a behaviour that a small
change to the code (a flipped comparison, a dropped check or term) altered while every existing
test still passed. The scan's multi-process paths are checked here in one process (their own
tests start several, and reach only some of the branches)."""

import socket

import numpy as np
import pytest

import dmft
from dmft.errors import ConfigError
from experiments import cli, scan
from experiments.scan import execute
from experiments.scan.execute import ProcessLost, check_port_free
from experiments.scan.grid import point_warnings
from experiments.store import Store
from validation import deep_linear as vdl


def test_a_theory_calls_flagged_points_are_those_either_flag_marks():
    """The grid points a theory call's warning names: those its control_variate_noisy or
    control_variate_off flags mark, read over the call's own points (not the padding)."""
    idx = np.array([4, 7, 9])
    rec = {"control_variate_noisy": np.array([False, True, False, True]),      # (padded to 4)
           "control_variate_off": np.array([True, False, False, False]), "final.test_loss": np.ones(4)}
    assert execute._flagged(idx, rec).tolist() == [4, 7]
    assert execute._flagged(idx, {"control_variate_off": np.array([False, False, True])}).tolist() == [9]
    assert execute._flagged(idx, {}).tolist() == []


def test_a_batch_warning_with_no_point_marked_names_every_point_of_the_call():
    """No flag marks a point (an empty `marked`): the warning names the call's points, not none;
    past six it counts the rest (the seventh too)."""
    import warnings

    columns = {"model.gamma0": np.arange(7.0)}
    for marked, said in ((np.array([], int), "scan grid point(s) 0: model.gamma0 = 0; 1: model.gamma0 = 1; "),
                         (np.arange(7), "; 5: model.gamma0 = 5; and 1 more (res.summary() names them))")):
        with pytest.warns(UserWarning) as got:
            with (pw := point_warnings(columns, np.arange(7))):
                warnings.warn("solve_batch: something", UserWarning)
                pw.marked = marked
        assert said in str(got[0].message), str(got[0].message)
    assert "6: model.gamma0 = 6" not in str(got[0].message)


def test_a_failed_collective_is_process_lost_and_other_errors_pass_through():
    """`_Comm.lost`: the runtime's failures (JAX's own error type, or gloo's ValueError whose text
    starts with a status code such as UNAVAILABLE or DEADLINE_EXCEEDED) become ProcessLost, whose
    message says the others were lost; any other error is raised as it is."""
    from jax.errors import JaxRuntimeError

    comm = execute._Comm()
    for err in (ValueError("UNAVAILABLE: Connection reset by peer"), ValueError("DEADLINE_EXCEEDED: no heartbeat"),
                JaxRuntimeError("INTERNAL: gloo")):
        with pytest.raises(ProcessLost, match=r"process 0 of 1 lost contact .*\((UNAVAILABLE|DEADLINE_EXCEEDED|"
                                              r"INTERNAL): "):
            with comm.lost():
                raise err
    for err in (ValueError("bad value: 3"), KeyError("x")):
        with pytest.raises(type(err)) as got:
            with comm.lost():
                raise err
        assert got.value is err


def _listening(host="0.0.0.0"):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(1)
    return sock


def test_a_busy_coordinator_port_is_refused_and_a_free_one_is_not():
    """check_port_free refuses a port something listens on (on any IPv4 address: JAX's coordinator
    binds every address) and accepts it once it is free."""
    for host in ("0.0.0.0", "127.0.0.1"):
        busy = _listening(host)
        port = busy.getsockname()[1]
        with busy, pytest.raises(ConfigError, match=rf"--coordinator 127\.0\.0\.1:{port}: port {port} is in use"):
            check_port_free(f"127.0.0.1:{port}")
        check_port_free(f"127.0.0.1:{port}")          # (closed: free)


def test_init_distributed_checks_process_0s_port_and_passes_the_join_timeout(monkeypatch):
    """Process 0 (only: the others connect to the port, they do not bind it) is refused a busy
    port before JAX's runtime starts, and JAX is given the join timeout."""
    import jax

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax.config, "update", lambda *a, **k: None)
    with _listening() as busy:
        where = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(ConfigError, match="is in use"):
            execute.init_distributed(where, 2, 0)
        assert calls == []
        execute.init_distributed(where, 2, 1, timeout=7)
        execute.init_distributed(where, 2, 1)
    assert [c["initialization_timeout"] for c in calls] == [7, 300], calls
    assert [c["heartbeat_timeout_seconds"] for c in calls] == [100, 100], calls
    assert calls[0]["process_id"] == 1 and calls[0]["coordinator_address"] == where


def test_the_command_gives_jax_a_longer_limit_than_its_own_and_refuses_a_zero_join_timeout(tmp_path, monkeypatch,
                                                                                          capsys):
    """dmft scan --join-timeout T: JAX's own limit is T + 60 s (the command's message comes first,
    not JAX's abort), and its heartbeat --hang-timeout + 60 s; T must be in (0, 86400], refused before
    any process joins."""
    from scan_configs import TOML

    config = tmp_path / "scan.toml"
    config.write_text(TOML)
    got = []

    def init(*explicit, timeout, heartbeat):
        got.append(timeout)
        assert heartbeat == cli.HANG_TIMEOUT + 60        # (JAX's heartbeat after the watchdog's message)
        raise RuntimeError("stopped here")

    monkeypatch.setattr(scan, "init_distributed", init)
    base = ["scan", "--config", str(config), "--out", str(tmp_path / "s"), "--no-progress",
            "--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "1"]
    assert cli.main(base + ["--join-timeout", "5"]) == cli.EXIT_CONFIG
    assert got == [65] and "stopped here" in capsys.readouterr().err
    for value in ("0", "-1", "86401"):
        assert cli.main(base + ["--join-timeout", value]) == cli.EXIT_CONFIG
        assert "--join-timeout: expected seconds in (0, 86400]" in capsys.readouterr().err
    assert got == [65]


def test_a_scan_that_lost_a_process_says_the_same_command_resumes_it(tmp_path, monkeypatch):
    """A scan stopped by ProcessLost (a process killed mid-scan) is resumed by the same commands:
    so says its last line (not that a rerun will meet the same error)."""
    real, calls = Store.write_chunk, []

    def lose_second(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise ProcessLost("process 0 of 2 lost contact")
        return real(self, *a, **k)

    monkeypatch.setattr(Store, "write_chunk", lose_second)
    cfg = {"task": {"name": "single_index", "D": 4, "P": 12, "P_test": 8, "degree": 1},
           "model": {"activation": "linear"}, "train": {"eta0": 0.5, "steps": 20, "save_every": 10},
           "scan": {"outputs": ["final"], "chunk": 1, "grid": {"train.eta0": [0.1, 0.2]}}}
    said = []
    with pytest.raises(ProcessLost):
        scan.run(cfg, str(tmp_path / "s"), log=said.append)
    assert said[-1].endswith("on disk (1 of 2 points, 1 computed by this session); the same command resumes it"), said


def _fake_run(t, modes):
    from types import SimpleNamespace
    return SimpleNamespace(t=np.asarray(t, float), modes=np.asarray(modes, float), test_loss=np.zeros(modes.shape[:2]))


def test_the_staircase_names_no_tied_step_as_unresolved():
    """Modes of equal strength are one step, learned together: no order is predicted between them,
    so they are not an unresolved pair (only consecutive steps whose order the seeds do not
    resolve are)."""
    model = dmft.DeepLinear(depth=2, width=6, init_scale=0.01, init="aligned")
    t = np.concatenate([[0.0], np.geomspace(1e-3, 30, 400)])
    rng = np.random.default_rng(0)
    data = dmft.tasks.linear_teacher(3, 3, [3.0, 3.0, 1.0], key=0)
    pi = dmft.deep_linear.mode_flow(model, data, t)
    shift = 1 + 0.05 * rng.standard_normal((16, 3))
    modes = np.stack([np.stack([np.interp(t * sh[i], t, pi[:, i]) for i in range(3)], axis=1) for sh in shift])
    res = vdl.staircase(_fake_run(t, modes), data)
    assert res["unresolved"] == [] and res["order_ok"], res


def test_a_store_of_other_code_is_not_told_to_rerun_the_original_configuration_too():
    """A conflict in the code (or number type) alone: the advice names what differs, and the
    original configuration only where the configuration differs or nothing else named does."""
    base = {"config": {"a": 1}, "x64": True, "platform": "cpu", "code": "00", "data": "cd"}
    for change, said in (({"code": "ff"}, "rerun it with the code and versions that computed it (no configuration "
                                          "alone restores them)."),
                         ({"x64": False}, "rerun it with the number type it was computed in (--x64 / --x32).")):
        with pytest.raises(dmft.errors.StoreConflict) as err:
            Store._check_identity("S", {"identity": base}, {**base, **change})
        assert str(err.value).endswith("To resume it: " + said) and "original configuration" not in str(err.value), \
            err.value


@pytest.mark.parametrize("drop", ["c0", [1], [["c0"]]])
def test_a_journal_line_whose_drop_is_not_a_list_of_names_is_not_a_record(tmp_path, drop):
    """A journal line (valid checksum) whose drop is not a list of chunk names is set aside as not
    a record the store writes: its chunk is not read, and nothing it names is dropped."""
    import json
    import os

    from experiments import store as S

    path = str(tmp_path / "s")
    store = Store.create_or_open(path, {"config": {"a": 1}}, {"grid": {}, "chunk_names": ["c0", "c1"]})
    store.manifest["sessions"].append({"status": "running", "chunks": 0})
    store.save_manifest()
    for i, name in enumerate(("c0", "c1")):
        store.write_chunk(name, {"index": np.arange(2 * i, 2 * i + 2), "x": np.full(2, float(i))}, family="g")
    store._close_journal()                  # (killed: the lock left, no manifest saved since)
    store._lock.close()
    store._lock = None
    with open(os.path.join(path, S.JOURNAL), "rb") as fh:
        lines = fh.read().split(b"\n")
    body = json.loads(lines[2])
    body.pop("sha256")
    body["drop"] = drop
    lines[2] = S._line_bytes(body).rstrip(b"\n")
    with open(os.path.join(path, S.JOURNAL), "wb") as fh:
        fh.write(b"\n".join(lines))
    good, bad = Store.read(path).verified()
    assert good == {"c0"} and "is not a record this store writes" in bad["c1"], (good, bad)


def test_a_sweeps_kept_solutions_are_counted_at_the_limit(monkeypatch):
    """The solve job's preflight counts, against theory.max_memory_gb, every gamma0's lazy limit
    (its own plan's `solution_bytes`, not the DMFT's), the DMFT solutions of all but the last
    gamma0 with theory.node_check's two solves each (without kernels), and the largest solve's
    peak: refused just below that sum, accepted just above it (by a quarter of its smallest term:
    the sum is mostly the runtime's fixed cost, which a relative margin would let hide them)."""
    import dataclasses

    from dmft.plan import memory_estimate, solution_bytes
    from experiments import jobs
    from validation.sweep import NODE_FRACTIONS

    seen, real = {}, jobs._check_theory_memory

    def spy(cfg, prob, plans, lazy_plan):
        seen.update(plans=plans, lazy=lazy_plan)
        return real(cfg, prob, plans, lazy_plan)

    monkeypatch.setattr(jobs, "_check_theory_memory", spy)
    small = ["task.D=4", "task.P=16", "task.P_test=8", "train.steps=10", "train.save_every=5", "theory.samples=256",
             "theory.replicas=2", "theory.node_check=true", "sweep.gamma0=[0.5, 1.0, 2.0]"]
    jobs.preflight(jobs.load_config(None, small), "solve")
    plans, lazy = seen["plans"], seen["lazy"]
    assert lazy.method == "lazy" and len(plans) == 3 and plans[0].sampled
    full = solution_bytes(plans[0]) + sum(solution_bytes(dataclasses.replace(plans[0], kernels=False, node_split=k))
                                          for k in NODE_FRACTIONS)
    need = 3 * solution_bytes(lazy) + 2 * full + max(memory_estimate(p) for p in plans)
    # (a margin of a quarter of the smallest term: the lazy limit's count, or what the DMFT keeps beyond it)
    margin = 0.25 * min(solution_bytes(lazy), solution_bytes(plans[0]) - solution_bytes(lazy))
    with pytest.raises(ConfigError, match=r"^sweep\.gamma0: the DMFT solutions and lazy limits of all 3"):
        jobs.preflight(jobs.load_config(None, small + [f"theory.max_memory_gb={(need - margin) / 2 ** 30!r}"]), "solve")
    jobs.preflight(jobs.load_config(None, small + [f"theory.max_memory_gb={(need + margin) / 2 ** 30!r}"]), "solve")


def test_one_modes_cross_drift_is_the_full_drifts_row_off_the_modes_too():
    """`_cross_drift_a(row=i)` is the full drift's column i also where the inputs and outputs
    have directions off the teacher's modes (d_in, d_out > r: the sums over k >= r, with the
    target's constant residual, which a square teacher of full rank leaves empty). Rounding:
    5e-15 relative (the row sums the same terms in another grouping)."""
    import dmft.deep_linear as dl

    teacher = dmft.tasks.linear_teacher(6, 5, [3.0, 2.0, 1.0], P=24, label_noise=0.5, key=0)
    cm = dl.cross_modes_of(teacher, 4)
    r = dl.effective_modes(teacher).s.size
    assert r == 3 and cm.A2.shape[0] > r and cm.A2.shape[1] > r
    for L in (2, 3, 4):
        a = np.random.default_rng(L).uniform(0.1, 1.5, (20, r))
        full = dl._cross_drift_a(np, L, a, cm, 0.005, 4)
        for i in range(r):
            np.testing.assert_allclose(dl._cross_drift_a(np, L, a, cm, 0.005, 4, row=i), full[:, i], rtol=5e-15)


def test_spectrum_refuses_more_modes_than_max_data_gb_of_float64(monkeypatch):
    """spectrum's r is at most MAX_DATA_GB of float64 values (8 bytes each): at 1 KiB, 128
    modes are drawn and 129 refused naming r (a limit in values, not bytes, let 8x more through)."""
    import dmft.tasks as tasks

    monkeypatch.setattr(tasks, "MAX_DATA_GB", 2.0 ** -20)
    assert tasks.spectrum(128).shape == (128,)
    with pytest.raises(dmft.InputError, match=r"\br\b"):
        tasks.spectrum(129)


def test_solve_refuses_a_bad_batch_key_before_it_plans(monkeypatch):
    """dmft.solve checks batch_key with the other plain arguments, before plan_solve (which
    evaluates the activation's tails with small JAX programs)."""
    import importlib

    solve_module = importlib.import_module("dmft.solve")

    def planned(*a, **k):
        raise AssertionError("planned before the batch_key was checked")

    monkeypatch.setattr(solve_module, "plan_solve", planned)
    data = dmft.tasks.single_index(D=3, P=4, P_test=2, degree=1, key=0)
    for bad in ("0", 1.5, np.ones(3)):
        with pytest.raises(dmft.InputError, match="batch_key"):
            dmft.solve(dmft.TwoLayer("tanh", 1.0), data, dmft.Schedule(eta0=0.1, steps=4, save_every=2,
                                                                         batch_size=2), batch_key=bad)


def test_a_shallow_cross_mode_well_blames_the_cross_modes_not_a_weight_decay_never_given():
    """Without weight decay the cross-mode drift alone makes the barrier (depth 3, a weak mode
    beside strong ones, noisy labels, one sample a step): ShallowWellError names cross_modes and
    advises eta0 or batch_size, not the weight_decay the caller never set."""
    import dmft.deep_linear as dl

    teacher = dmft.tasks.linear_teacher(4, 4, [3.0, 2.0, 1.0, 0.3], P=8, label_noise=2.0, key=0)
    s = dl.effective_modes(teacher).s
    model = dmft.DeepLinear(3, 10, 0.3, "aligned")
    with pytest.raises(dl.ShallowWellError, match=r"^cross_modes: the well around .* of mode 4 is shallow") \
            as err:
        dl.stationary_density(model, teacher, np.linspace(0.2 * s[-1], 1.6 * s[-1], 501), eta0=0.02, batch_size=1,
                              mode=3, cross_modes=True)
    assert "weight_decay" not in str(err.value) and str(err.value).endswith("lower eta0, or raise batch_size")


def test_a_mode_with_no_well_at_all_is_not_called_a_shallow_well():
    """Where the cross-mode drift pulls a weak mode down harder than its loss restores it at pi*
    itself (depth 4, noisy labels, one sample a step), the density rises from pi* toward 0: there
    is no well. The error said "the well ... is shallow (the density at pi* is e^0.00 times that at
    the barrier's top, pi = 0.58)", the top being pi* itself; now it says there is no well."""
    import dmft.deep_linear as dl

    teacher = dmft.tasks.linear_teacher(4, 4, [3.0, 2.0, 1.0, 0.3], P=8, label_noise=2.0, key=0)
    model = dmft.DeepLinear(4, 8, 0.01, "aligned")
    with pytest.raises(dl.ShallowWellError, match=r"^cross_modes: mode 4 has no well at pi\* = 0\.5798: the density "
                                                  r"rises from pi\* toward pi = 0 \(the cross-mode drift") as err:
        dl.stationary_density(model, teacher, np.linspace(0.01, 1.0, 50), eta0=0.05, batch_size=1, mode=3,
                              cross_modes=True)
    assert "shallow" not in str(err.value) and str(err.value).endswith("lower eta0, or raise batch_size")
