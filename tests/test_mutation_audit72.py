"""Tests from a mutation audit of the library changes since 936f638 (the memory estimate's neuron
measures, the command's redelivery of a lost Ctrl-C, a generated task's size check, the recheck's
temporaries and carried "reused" list): each kills a mutant (a flipped comparison, a dropped term,
branch or handler) that the earlier tests let pass, on a claim the code's docstrings, comments and
messages make. Plans, fake threads and fake unraisable exceptions (nothing compiled) where the
claim allows."""

import json
import os
import signal
import types

import jax
import pytest

import dmft


# ----------------------------------------------------------------- the estimate's neuron measures
def _outer(w, w0):
    return jax.numpy.outer(w, w0).reshape(-1)                # K = D^2


def test_the_estimate_counts_one_populations_measures_only_where_a_cpu_records_them_so(monkeypatch):
    """`memory_estimate` counts the measures' (nodes, K) values of one population where a CPU records
    them one at a time (`over_members`: one call, more than one population, a population's fields on
    all points reaching RECORD_MAP_VALUES, >=), else the group's. D = 96, P = P* = 64 (N = 128),
    4 replicas, K = 9216: 8192 samples (2048 nodes, 2048 x 128 = 2^18) count 144 MiB, split in two
    populations of 16384 samples' 4096 nodes too; 8184 samples (just below) and a batch of 2 points
    (vmapped) count the group's, 4 x 2046 and 4 x 4096 x 2 nodes."""
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    model, schedule = dmft.TwoLayer("tanh", gamma0=1.0), dmft.Schedule(eta0=0.2, steps=20, save_every=10)
    data = dmft.tasks.single_index(D=96, P=64, P_test=64, degree=2, key=0)
    per_node = 96 * 96 * 8 / 2 ** 20                    # MiB of K values a node

    def counted(samples, points=1, **kw):
        """The measures' MiB in the estimate, less their records (1 MiB here)."""
        opts = dict(method="forward", samples=samples, replicas=4, kernels=False, control_variate=False, **kw)
        est = [dmft.plan.memory_estimate(dmft.plan_solve(model, data, schedule, neuron_measures=m, **opts),
                                         points=points, at_once=4) for m in (_outer, None)]
        return (est[0] - est[1]) / 2 ** 20

    assert 2048 * per_node <= counted(8192) <= 2048 * per_node + 2            # (at the size: one at a time)
    assert 2048 * per_node <= counted(16384, node_split=2) <= 2048 * per_node + 3
    assert 4 * 2046 * per_node <= counted(8184) <= 4 * 2046 * per_node + 2    # (below it: the group's)
    assert counted(16384, points=2) >= 2 * 4 * 4096 * per_node


# ----------------------------------------------------------------- a Ctrl-C lost in a callback
class _Timers:
    """`threading` for `cli._redeliver`'s hook: the timers it starts, (delay, function, args); with
    `fail`, starting one raises RuntimeError (no new thread at the interpreter's shutdown)."""

    def __init__(self, fail=False):
        self.started, self.fail = [], fail

    def Timer(self, delay, fn, args):
        def start():
            if self.fail:
                raise RuntimeError("can't create new thread at interpreter shutdown")
            self.started.append((delay, fn, args))
        return types.SimpleNamespace(start=start)


def test_a_lost_interruption_is_delivered_again_with_its_signal_and_nothing_else_is(monkeypatch):
    """The unraisable hook delivers again a lost Ctrl-C, SIGTERM or SIGHUP with its own signal (a
    SIGTERM redelivered as SIGINT would exit 130, not 143), from another thread, and does not also
    print it; every other unraisable exception goes to the previous hook, undelivered; and where no
    thread can start (the interpreter's shutdown) the lost interruption is printed by it."""
    from experiments import cli

    seen = []
    hook = cli._redeliver(seen.append)
    timers = _Timers()
    monkeypatch.setattr(cli, "threading", timers)
    for exc, signum in ((KeyboardInterrupt(), signal.SIGINT), (cli._Terminated(signal.SIGTERM), signal.SIGTERM),
                        (cli._Terminated(signal.SIGHUP), signal.SIGHUP)):
        hook(types.SimpleNamespace(exc_value=exc))
        assert timers.started[-1][1:] == (cli._thread.interrupt_main, (signum,)), timers.started
    assert len(timers.started) == 3 and not seen, seen
    other = types.SimpleNamespace(exc_value=ValueError("in a __del__"))
    hook(other)
    assert seen == [other] and len(timers.started) == 3
    monkeypatch.setattr(cli, "threading", _Timers(fail=True))
    lost = types.SimpleNamespace(exc_value=KeyboardInterrupt())
    hook(lost)
    assert seen == [other, lost]


# ----------------------------------------------------------------- a generated task's sizes
def test_a_generated_task_is_refused_from_its_sizes_exactly_past_the_limit():
    """`check_task_size` refuses a generated task whose setup alone (`dmft.plan.setup_bytes` of task.P,
    task.P_test, task.D) passes theory.max_memory_gb (GiB), and passes one within it: 1% either side
    of the 0.05 GiB of P = 1000, P* = 200, D = 4; never an npz task (`_NOT_SIZED`)."""
    from dmft.errors import ConfigError
    from experiments.jobs import load_config
    from experiments.problem import check_task_size

    least = dmft.plan.setup_bytes(1000, 200, 4) / 2 ** 30
    sizes = ["task.P=1000", "task.P_test=200", "task.D=4"]
    check_task_size(load_config(None, sizes + [f"theory.max_memory_gb={1.01 * least!r}"]))
    with pytest.raises(ConfigError, match=r"^task\.P, task\.P_test, task\.D: a solve on 1000 training and 200 "):
        check_task_size(load_config(None, sizes + [f"theory.max_memory_gb={0.99 * least!r}"]))
    # an npz task's sizes are its file's (`check_data_size`, once read): [task]'s unread P, P_test and
    # D (their defaults here, 0.002 GiB) refuse nothing
    check_task_size(load_config(None, ["task.name='npz'", "task.path='mine.npz'", "theory.max_memory_gb=1e-6"]))


# ----------------------------------------------------------------- a recheck's carried "reused"
def test_a_rechecks_carried_reused_list_ends_with_it(tmp_path):
    """A recheck keeps the list of results its run reused (`_CARRIED`) for its own run.json alone:
    once it has ended (`release`), a later run of the same process in the directory that reused
    nothing writes a run.json saying none (it listed the recheck's carried results, files that run
    may have removed: here a --force run over it)."""
    from experiments import output
    from experiments.jobs import load_config

    out, root = str(tmp_path), os.path.realpath(tmp_path)
    cfg = load_config(None, ["theory.method=lazy"])
    output._start_recording(out, results=False)
    output._CARRIED[root] = {"theory/lazy_gamma0_1.npz"}         # (as `start_recheck` sets it)
    try:
        output.write_manifest(out, "solve", cfg, "complete")
        assert json.loads((tmp_path / "run.json").read_text())["reused"] == ["theory/lazy_gamma0_1.npz"]
        output._start_recording(out)                             # the next run
        output.write_manifest(out, "solve", cfg, "complete")
        assert "reused" not in json.loads((tmp_path / "run.json").read_text())
    finally:
        output._CARRIED.pop(root, None)
        output.release(out)


# ----------------------------------------------------------------- run.json and a put-back that fail
def test_a_final_run_json_that_cannot_be_written_ends_the_run_and_leaves_no_temporary(tmp_path, monkeypatch):
    """write_manifest's final run.json that cannot be written (disk full at its rename): OutputError
    "cannot write run.json", no run.json.tmp left, and the run has ended all the same: recording
    stops and the directory's lock goes (only a recheck, its copy on disk, keeps them until the
    complete run is put back)."""
    from dmft.errors import OutputError
    from experiments import output
    from experiments.jobs import load_config

    out, root = str(tmp_path), os.path.realpath(tmp_path)
    output._lock(out, create=True)
    output._start_recording(out)
    real = os.replace

    def replace(src, dst, *a, **k):
        if os.path.basename(dst) == "run.json":
            raise OSError(28, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    try:
        with pytest.raises(OutputError, match=r": cannot write run\.json \(No space left on device\)"):
            output.write_manifest(out, "solve", load_config(None, ["theory.method=lazy"]), "failed")
        assert root not in output._LOCKS and root not in output._RECORDING
        assert not (tmp_path / "run.json.tmp").exists() and not (tmp_path / "run.json").exists()
    finally:
        output.release(out)


def test_a_file_that_cannot_be_put_back_leaves_no_restore_temporary(tmp_path, monkeypatch):
    """`_put_back` names a file it could not put back (its rename failed) and removes the
    .restore temporary it wrote for it; the file stays as it was."""
    from experiments import output

    (tmp_path / "report.md").write_text("the recheck's")
    real = os.replace

    def replace(src, dst, *a, **k):
        if str(src).endswith(".restore"):
            raise OSError(28, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    assert output._put_back(str(tmp_path), {"report.md": b"the complete run's"}) == ["report.md"]
    assert sorted(os.listdir(tmp_path)) == ["report.md"] and (tmp_path / "report.md").read_text() == "the recheck's"


def test_a_run_json_write_interrupted_leaves_no_temporary(tmp_path, monkeypatch):
    """A Ctrl-C (or a failure) while write_manifest writes run.json leaves no run.json.tmp, for a
    run's first "running" run.json too (no final cleanup follows it: the temporary stayed until
    the next run)."""
    from experiments import output
    from experiments.jobs import load_config

    out, cfg = str(tmp_path), load_config(None, ["theory.method=lazy"])
    output._lock(out, create=True)
    output._start_recording(out)
    real = os.replace
    for err in (KeyboardInterrupt(), OSError(28, "No space left on device")):
        def replace(src, dst, *a, _err=err, **k):
            if os.path.basename(dst) == "run.json":
                raise _err
            return real(src, dst, *a, **k)

        monkeypatch.setattr(os, "replace", replace)
        try:
            with pytest.raises((KeyboardInterrupt, output.OutputError)):
                output.write_manifest(out, "solve", cfg, "running")
            assert not (tmp_path / "run.json.tmp").exists() and not (tmp_path / "run.json").exists()
        finally:
            monkeypatch.undo()
    output.release(out)


def test_a_killed_run_without_a_rechecks_copy_is_not_said_to_have_one(tmp_path):
    """The next run of a run killed outright (run.json "running", no recheck's copy beside it) finds
    no copy to put back: nothing said of one (it said the copy a killed re-check left was unreadable),
    and a kill's leftover temporaries are dropped."""
    from experiments import output
    from experiments.jobs import load_config

    out, said = str(tmp_path), []
    output._lock(out, create=True)
    output._start_recording(out)
    output.write_manifest(out, "solve", load_config(None, ["theory.method=lazy"]), "running")
    (tmp_path / "run.json.tmp").write_text("{half")
    try:
        output._restore_killed_recheck(out, said.append)
        assert said == [] and not (tmp_path / "run.json.tmp").exists()
        assert output.read_manifest(out)["status"] == "running"
    finally:
        output.release(out)
