"""Tests from a mutation audit of stop 68's library changes: each kills a mutant (a flipped
comparison, a dropped term or branch, a swapped constant) that the earlier tests let pass, on a
claim the code's docstrings and messages make. Fake solves, fake clocks and plans (nothing
compiled) where the claim allows."""

import os
import re
import types

import jax
import numpy as np
import pytest

import dmft


# ----------------------------------------------------------------- the scan's watchdog
class _Clock:
    """time for `_Watchdog._check` / `_beat`: each wait of the stop event advances it by the
    next of `steps` seconds (then 1 s each); the event is set once `until` is passed."""

    def __init__(self, steps=(), until=100.0):
        self.now, self.steps, self.until, self.set = 0.0, list(steps), until, False

    def monotonic(self):
        return self.now

    def wait(self, interval):
        self.now += self.steps.pop(0) if self.steps else 1.0
        self.set = self.set or self.now > self.until
        return self.set

    def is_set(self):
        return self.set


def _dog(monkeypatch, clock, index=0, count=2, timeout=10.0):
    """A `_Watchdog` of process `index` of `count` with no threads, on `clock`: the hangs it reports
    are recorded with the time (its `on_hang` ends the process; here it stops the loop)."""
    from experiments.scan import execute
    monkeypatch.setattr(execute, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    dog = object.__new__(execute._Watchdog)
    dog.comm = types.SimpleNamespace(index=index, count=count)
    dog.timeout, dog.interval, dog.prefix = timeout, 1.0, "p/"
    dog.seen, dog.last, dog.answered = dict.fromkeys(range(count), 0.0), {}, 0.0
    dog.stopped, dog.hangs = clock, []

    def on_hang(silent):
        dog.hangs.append((clock.now, list(silent)))
        clock.set = True
    dog.on_hang = on_hang
    return dog


def test_the_watchdog_reports_a_silent_process_after_the_timeout_not_itself_after_its_own_pause(monkeypatch):
    """`_check`: another process whose last sign is older than the timeout is reported (process 1
    silent from t = 0, timeout 10 s, checks every 1 s: at t = 11, the first check past 10), this
    process never; a check that comes late by more than half the timeout (this process was itself
    stopped: a SIGSTOP, a paused machine) looks again before it blames the others (they signed while
    it slept and it could not see it), and a worker whose store (process 0's) stops answering
    reports process 0. The times are a fake clock: no thread, no sleep."""
    clock = _Clock()
    dog = _dog(monkeypatch, clock)
    dog._check()
    assert dog.hangs == [(11.0, [1])]
    # this process paused 30 s right after its start: the others are judged from its wake-up on
    clock = _Clock(steps=[30.0])
    dog = _dog(monkeypatch, clock)
    dog._check()
    assert dog.hangs == [(41.0, [1])]
    # a worker (process 1) whose own sign stays fresh but whose store stops answering: process 0
    clock = _Clock()
    dog = _dog(monkeypatch, clock, index=1)
    dog.seen[0] = 1e9             # (process 0 looked alive: only the store's silence tells)
    dog._check()
    assert dog.hangs == [(11.0, [0])]


def test_the_watchdog_counts_only_a_new_sign_as_a_sign_of_life(monkeypatch):
    """`_beat`: a process is seen alive when its value in the store changes, not while an old value
    stays there (a stopped process's last sign stays in the store forever): process 1 signs at each
    of the first 3 beats, then its value stays; its last new sign is then at t = 2."""
    clock = _Clock(until=8.0)
    dog = _dog(monkeypatch, clock)
    store = {}

    class Client:
        def key_value_set(self, key, value, allow_overwrite):
            store[key] = value
            if clock.now < 3:
                store["p/1"] = f"{clock.now:g}"

        def key_value_dir_get(self, prefix):
            return sorted(store.items())
    dog.client = Client()
    dog._beat()
    assert dog.seen[1] == 2.0 and dog.seen[0] == clock.now - 1.0, (dog.seen, clock.now)


# ----------------------------------------------------------------- report.still_note
def _sweep(*losses):
    sols = {g: types.SimpleNamespace(train_loss=np.asarray(l, float), t=np.arange(len(l), dtype=float))
            for g, l in zip((0.1, 1.0), losses)}
    return types.SimpleNamespace(gamma0s=list(sols), solutions=sols)


def test_still_note_says_nothing_was_learned_only_where_no_gamma0_moved_its_loss():
    """`still_note` flags a sweep whose theory train loss moved by under 1e-3 of its start at every
    gamma0, and only that: a loss that fell 1% at one gamma0 learned something (a run whose small
    steps moved it slowly must not read 'Nothing was learned'), and so did a loss that rose."""
    from experiments.report import STILL_REL, still_note
    assert STILL_REL == 1e-3
    still = [1.0, 1.0 - 1e-4, 1.0 - 2e-4]
    assert still_note(_sweep(still, still)).startswith("**Nothing was learned**: the theory's train loss moved "
                                                       "by at most 0.0002 of its start at every gamma0 (t up to 2)")
    for moved in ([1.0, 0.995, 0.99], [1.0, 1.0, 1.01]):
        assert still_note(_sweep(still, moved)) is None, moved
        assert still_note(_sweep(moved, still)) is None, moved
    # nothing to judge: a loss of 0 at the start, a non-finite one
    assert still_note(_sweep([0.0, 0.0, 0.0], still)) is None
    assert still_note(_sweep(still, [1.0, np.nan, 1.0])) is None


# ----------------------------------------------------------------- the jobs' configuration checks
def test_scale_note_reads_the_targets_rms_not_their_largest():
    """`dmft.tasks.scale_note` judges the targets by their RMS (of order one: gamma0's scale): one
    outlying target of 200 among 399 of order one (RMS about 10) is in range, as standardized inputs
    are; all targets at 200 are not."""
    from dmft.tasks import scale_note
    x = np.random.default_rng(0).normal(size=(400, 3))
    y = np.where(np.arange(400) == 7, 200.0, x[:, 0])
    assert scale_note(dmft.Dataset(x, y)) is None
    assert scale_note(dmft.Dataset(x, np.full(400, 200.0))).startswith("y_train: RMS 200, outside [0.01, 100]")



def test_a_sample_count_only_one_replica_fits_is_told_so():
    """theory.samples = 22 = 2 x 11 at the built-in 8 replicas: only 1 replica fits (11 is prime), and
    the refusal says so; 1001 (odd) fits none: no replica count is offered."""
    from dmft.errors import ConfigError
    from experiments import jobs
    with pytest.raises(ConfigError, match=r"theory.replicas is 8 \(written, or the default\): set it to 1, which fits"):
        jobs.load_config(None, ["theory.samples=22"])
    with pytest.raises(ConfigError) as err:
        jobs.load_config(None, ["theory.samples=1001"])
    assert "antithetic pairs" in str(err.value) and "set it to" not in str(err.value)


def test_a_file_too_large_for_the_solves_is_refused_by_validate_too(tmp_path):
    """The validate job solves the DMFT as solve does: a data file whose solves' setup alone passes
    theory.max_memory_gb is refused naming task.path there too (1200 points, a setup of 0.054 GiB
    against 0.02), not by the first gamma0's plan with remedies that cannot help."""
    from dmft.errors import ConfigError
    from experiments.jobs import load_config, preflight
    x = np.random.default_rng(3).normal(size=(1200, 4))
    path = tmp_path / "big.npz"
    dmft.Dataset(x[:1000], x[:1000, 0], x[1000:], x[1000:, 0]).save(path)
    cfg = load_config(None, ["task.name='npz'", f"task.path='{path}'", "theory.max_memory_gb=0.02"])
    with pytest.raises(ConfigError, match=r"^task\.path: a solve on its 1000 training and 200 test points"):
        preflight(cfg, "validate")


# ----------------------------------------------------------------- the preflight's lazy step
def test_the_lazy_step_refusal_offers_a_step_below_the_limit_batch_size_p_included(tmp_path):
    """The preflight's refusal of a lazy step past its stability offers a step below the limit (3
    digits rounded down, within 1% of it: rounding up offered one past it), naming train.eta0,
    before the job claims its directory; train.batch_size = P (the full batch, which the jobs take
    as full-batch descent) is refused as gradient descent is. P = 32 relu points, 40 steps at 1.5x
    the limit 2 P / lambda_max(K0), read from a stable 4-step lazy solve's own record."""
    from dmft.errors import ConfigError
    from experiments import jobs
    small = ["task.D=8", "task.P=32", "task.P_test=8", "train.save_every=10", "theory.samples=64",
             "theory.replicas=2", "sweep.gamma0=[0.1, 1.0]"]
    p = jobs.preflight(jobs.load_config(None, small + ["train.steps=4", "train.save_every=1"]), "solve")
    sol = dmft.solve(p.model, p.data, schedule=p.schedule, method="lazy", kernels=False)
    limit = 2 * p.schedule.eta0 / sol.info["lazy_eta0_stability"]
    out = tmp_path / "out"
    cfg = jobs.load_config(None, small + [f"train.eta0={1.5 * limit!r}", "train.steps=40", "train.batch_size=32"])
    with pytest.raises(ConfigError, match=r"^train\.eta0 = .*> 2, and its train loss grows") as err:
        jobs.run_job("solve", cfg, str(out), log=lambda *_: None)
    assert not out.exists()
    # the step it offers is below the limit (3 digits, rounded down: within 1% of it)
    offered = float(re.search(r"\(e\.g\. ([0-9.e+-]+)\)", str(err.value)).group(1))
    assert 0.99 * limit <= offered < limit, (offered, limit)


# ----------------------------------------------------------------- lazy_to_rich(on_failure=)
def _failing_solves(monkeypatch, fails):
    """dmft.solve where the DMFT and node-check solves are the lazy limit's (seconds, the same
    numbers at every gamma0), and those with fails(gamma0, node_split) raise a DivergenceError."""
    from dmft.errors import DivergenceError
    real = dmft.solve

    def solve(model, data, *args, method=None, node_split=None, **kw):
        if method != "lazy" and fails(model.gamma0, node_split):
            raise DivergenceError(f"{method}: train_loss is not finite at t = 3", step=3, cause="non-finite train_loss")
        return real(model, data, *args, schedule=kw["schedule"], method="lazy", kernels=False)
    monkeypatch.setattr(dmft, "solve", solve)


def test_lazy_to_rich_raises_by_default_and_leaves_a_failed_node_check_out_of_every_field(monkeypatch):
    """Without on_failure a DMFT that diverges raises its DivergenceError (naming the gamma0);
    with it, a gamma0 whose node-check split solve diverged is in none of the result's fields
    (its full solve had finished: solutions held it), its error in `failed` with the split's kind;
    where every gamma0 failed so, the first error is raised, not an empty sweep returned. An
    on_failure that is not callable is refused before any solve, not met as a TypeError at the
    first failure."""
    from dmft.errors import DivergenceError
    from validation import lazy_to_rich
    data = dmft.tasks.single_index(D=3, P=8, P_test=4, degree=1, key=0)
    model = dmft.TwoLayer("relu", gamma0=1.0)
    sch = dmft.Schedule(0.1, 4, 2)
    kw = dict(schedule=sch, solve_kw={"method": "forward", "samples": 32, "replicas": 2}, simulate=False)
    with pytest.raises(dmft.InputError, match="^on_failure must be a callable or None, got int"):
        lazy_to_rich(model, data, [0.5, 1.0], [], 1, on_failure=5, **kw)     # (before any solve)
    _failing_solves(monkeypatch, lambda g, k: g == 1.0 and k is None)
    with pytest.raises(DivergenceError, match=r"^theory at gamma0 = 1: forward: train_loss is not finite"):
        lazy_to_rich(model, data, [0.5, 1.0], [], 1, **kw)
    _failing_solves(monkeypatch, lambda g, k: g == 1.0 and k == 2)
    seen = []
    res = lazy_to_rich(model, data, [0.5, 1.0], [], 1, node_check=True, on_failure=lambda g, e: seen.append(g), **kw)
    assert res.gamma0s == [0.5] and list(res.solutions) == [0.5] and list(res.fewer) == [0.5] == list(res.lazy)
    assert seen == [1.0] and list(res.failed) == [1.0] and res.failed[1.0].kind == "dmft_half_nodes"
    _failing_solves(monkeypatch, lambda g, k: k == 2)
    with pytest.raises(DivergenceError, match=r"^theory at gamma0 = 0.5 with its nodes split in 2") as err:
        lazy_to_rich(model, data, [0.5, 1.0], [], 1, node_check=True, on_failure=lambda g, e: None, **kw)
    assert err.value.kind == "dmft_half_nodes"
    # with networks: none are trained at the failed gamma0 (no theory to compare them with)
    _failing_solves(monkeypatch, lambda g, k: g == 1.0)
    res = lazy_to_rich(model, data, [0.5, 1.0], [4], 1, on_failure=lambda g, e: None,
                       **{**kw, "simulate": True})
    assert list(res.runs) == [0.5] == list(res.scaling) and list(res.failed) == [1.0]


def test_a_failure_with_no_saves_before_it_writes_no_file_and_claims_none(tmp_path):
    """`report.write_failure` of a DivergenceError raised before the first save (.partial None, or
    records with no save in them): no theory/..._failed.npz is written, the record's partial is
    None (report.md's 'saves before it': none) and its error names no file of saves (the
    attribute's note is dropped, no 'The saves before it are in ...' added)."""
    from dmft.errors import DivergenceError
    from experiments.report import write_failure
    msg = "forward: train_loss is not finite at t = 0. Nothing was recorded before it (.partial is None)."
    for partial, steps in ((None, None), ({"train_loss": np.zeros(0)}, np.zeros(0, int))):
        err = DivergenceError(msg, step=0, cause="non-finite train_loss", partial=partial, saved_steps=steps)
        rec = write_failure(str(tmp_path), {}, 1.0, err)
        assert rec["partial"] is None and rec["step"] == 0 and rec["solve"] == "dmft", rec
        assert rec["error"] == "forward: train_loss is not finite at t = 0. Nothing was recorded before it.", rec
        assert not list(tmp_path.rglob("*.npz")), list(tmp_path.rglob("*"))
    # (`output.partial_named`, where saves were kept: the attributes' names become the file's, once)
    from experiments.output import partial_named
    kept = "The saves up to step 5 (2) are in .partial (their step counts in .saved_steps)."
    assert partial_named(kept, "d/f.npz") == ("The saves up to step 5 (2) are in d/f.npz (their step counts in "
                                              "saved_steps).")


def test_a_sweep_stopped_by_every_gamma0_names_each_other_failure_once():
    """`jobs._kept_results`, appended to the first failure's own message: the others' errors,
    each once, the first not repeated; what was kept, by kind."""
    from experiments.jobs import _kept_results
    failed = [{"gamma0": g, "error": f"theory at gamma0 = {g}: diverged.", "partial": None} for g in (0.1, 0.5, 1)]
    text = _kept_results([("lazy", 0.1, None), ("lazy", 0.5, None)], failed, "solve")
    assert text.startswith("Kept from the sweep before it, each .npz with its .json under theory/: lazy limit at "
                           "gamma0 = 0.1, 0.5; no report was written. The DMFT failed at every gamma0"), text
    assert "gamma0 = 0.1: diverged" not in text
    assert text.count("gamma0 = 0.5: diverged.") == 1 and text.count("gamma0 = 1: diverged.") == 1
    assert _kept_results([], failed[:1], "validate") == "Nothing of the sweep had finished; no report was written."


# ----------------------------------------------------------------- dmft scan --hang-timeout
def test_the_command_refuses_a_hang_timeout_out_of_range_before_any_process_joins(tmp_path, monkeypatch, capsys):
    """--hang-timeout with --coordinator: out of [1, 86400] (0.5 s would end a live process between two
    of its signs) refused by the command, before jax.distributed is joined; 1 s is taken."""
    from scan_configs import TOML

    from experiments import cli, scan
    config = tmp_path / "scan.toml"
    config.write_text(TOML)
    joined = []

    def init(*explicit, timeout, heartbeat):
        joined.append(heartbeat)
        raise RuntimeError("stopped here")
    monkeypatch.setattr(scan, "init_distributed", init)
    base = ["scan", "--config", str(config), "--out", str(tmp_path / "s"), "--no-progress",
            "--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "1", "--hang-timeout"]
    for value in ("0.5", "86401"):
        assert cli.main(base + [value]) == cli.EXIT_CONFIG
        assert f"--hang-timeout: expected seconds in [1, 86400], got {float(value):g}" in capsys.readouterr().err
    assert joined == []
    assert cli.main(base + ["1"]) == cli.EXIT_CONFIG and joined == [61]
    # a value in range reaches the scan (it was read and dropped: the default 60 s waited instead)
    ran = []
    monkeypatch.setattr(scan, "init_distributed", lambda *explicit, timeout, heartbeat: joined.append(heartbeat))
    monkeypatch.setattr(scan, "run", lambda *a, hang_timeout, **kw: ran.append(hang_timeout))
    assert cli.main(base + ["7"]) == cli.EXIT_OK and ran == [7.0] and joined[-1] == 67


def test_a_scan_lost_only_after_its_last_write_ends_complete_not_to_resume(tmp_path, monkeypatch, capsys):
    """ProcessLost with its .result (process 0 lost a process only in the last synchronisation, the
    scan complete): the command prints the summary and ends with exit 0, not 6 ("start every process
    again"); without a result, exit 6 and the resume advice."""
    from scan_configs import TOML

    from experiments import cli, scan
    from experiments.scan.execute import ProcessLost
    config = tmp_path / "scan.toml"
    config.write_text(TOML)

    class Ended(BaseException):       # (past the command's own handlers, as os._exit is)
        pass

    def _exit(code):
        raise Ended(code)
    monkeypatch.setattr(os, "_exit", _exit)
    done = types.SimpleNamespace(summary=lambda: "SUMMARY of the complete scan")
    for result, code in ((done, cli.EXIT_OK), (None, cli.EXIT_LOST)):
        def run(*a, result=result, **kw):
            raise ProcessLost("process 1 lost", result=result)
        monkeypatch.setattr(scan, "run", run)
        with pytest.raises(Ended) as ended:
            cli.main(["scan", "--config", str(config), "--out", str(tmp_path / "s"), "--no-progress"])
        out, err = capsys.readouterr()
        assert ended.value.args == (code,)
        assert ("SUMMARY of the complete scan" in out) == (result is not None)
        assert ("start every process again" in err) == (result is None), err


# ----------------------------------------------------------------- memory estimates (planned, nothing run)
def test_a_sampled_solves_cpu_work_is_one_populations_fields_and_float32_steps_under_mixed():
    """`plan._sampled_cpu_work`, as its docstring says: past RECORD_MAP_VALUES the fields on every
    point are built one population at a time (node_split = 4: a quarter of the fields of a replica
    at node_split = 1), and the vmapped step's temporaries are float32 under precision='mixed' (half
    the full precision's, where they dominate)."""
    from dmft import plan as dplan
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    sch = dmft.Schedule(0.1, 20, 10)
    wide = dmft.tasks.single_index(D=4, P=16, P_test=2000, degree=2, key=0)   # fields dominate
    work = {}
    for k in (1, 4):
        p = dmft.plan_solve(model, wide, sch, method="forward", samples=32768, replicas=8, node_split=k, kernels=False)
        m = p.samples // p.replicas
        assert p.replicas_at_once > 1 and (m // k) * (wide.P + wide.P_test) >= dmft.runner.RECORD_MAP_VALUES
        work[k] = dplan._sampled_cpu_work(p, p.replicas_at_once, m, 0.0)
    assert work[4] == work[1] / 4 == 4.0 * (m // 4) * (wide.P + wide.P_test), work
    deep = dmft.tasks.single_index(D=4, P=256, P_test=8, degree=2, key=0)       # the step dominates
    step = {}
    for precision in ("full", "mixed"):
        p = dmft.plan_solve(model, deep, sch, method="forward", samples=32768, replicas=8, precision=precision,
                            kernels=False)
        step[precision] = dplan._sampled_cpu_work(p, p.replicas_at_once, p.samples // p.replicas, 0.0)
    assert step["mixed"] == step["full"] / 2 == 3.0 * p.replicas_at_once * 4096 * 256, step


def test_only_a_single_sampled_solve_is_counted_as_on_a_cpu(monkeypatch):
    """The CPU's smaller count of a sampled solve's records (1.25 copies, measured for one solve)
    is not a batch's: vmapped points keep every member's records and fields, counted as on an
    accelerator (3 copies) on any backend; a lazy solve's records are counted 3 times over too
    (device output, host copy, concatenation): its estimate grows at least 3x what its Solution
    keeps a save (`solution_bytes`; 3.2x at these sizes, 2.0x where counted once)."""
    from dmft import plan as dplan
    data = dmft.tasks.single_index(D=4, P=16, P_test=8, degree=2, key=0)
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    plan = dmft.plan_solve(model, data, dmft.Schedule(0.1, 20, 1), method="forward", samples=64, replicas=4)
    est = {}
    for backend in ("cpu", "gpu"):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        est[backend] = [dplan.memory_estimate(plan, points=n) for n in (1, 2)]
    assert est["cpu"][0] < est["gpu"][0] and est["cpu"][1] == est["gpu"][1], est
    data = dmft.tasks.single_index(D=32, P=64, P_test=32, degree=1, key=0)
    short, long = dmft.Schedule(0.1, 20, 10), dmft.Schedule(0.1, 20, 1)
    plans = [dmft.plan_solve(model, data, s, method="lazy", kernels=False) for s in (short, long)]
    grow = plans[1].memory_bytes - plans[0].memory_bytes
    kept = dplan.solution_bytes(plans[1]) - dplan.solution_bytes(plans[0])
    assert grow >= 3 * kept > 0, (grow, kept)
