"""A rerun that changes only the [check] section (the verdicts' tolerances) of a complete run
judges the saved results again instead of computing them: the verdicts follow the new
tolerances and equal a full recomputation's, the results and figures are left as they are,
a damaged file is refused as for any damaged complete run, and any other change is still a
different run."""

import json
import os
import shutil

import pytest

from experiments import cli
from experiments.output import seal

VALIDATE = ["--no-progress", "--gamma0", "1", "--samples", "64", "--steps", "4", "--set", "train.save_every=2",
            "--widths", "4", "--seeds", "2", "--set", "task.D=3", "--set", "task.P=6", "--set", "task.P_test=4"]
DLN = ["--no-progress", "--steps", "4", "--set", "train.save_every=2", "--seeds", "4", "--set", "theory.paths=8",
       "--set", "teacher.label_noise=[1.0]", "--set", "staircase.seeds=2", "--set", "staircase.steps=20"]
REPORTS = {"report.md", "report.json", "run.json", "config.toml", ".dmft-written", ".dmft-lock", ".dmft-owned"}


def _tree(out):
    """Every file under `out`: relative path -> (bytes, mtime in ns)."""
    found = {}
    for d, _, files in os.walk(out):
        for f in files:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                found[os.path.relpath(path, out).replace(os.sep, "/")] = (fh.read(), os.stat(path).st_mtime_ns)
    return found


def _bytes(out):
    """Every file under `out`: relative path -> bytes (the lock file's mtime changes under any run
    that takes it, refused or not)."""
    return {k: v[0] for k, v in _tree(out).items()}


def _kept(out):
    """The results and figures (everything a recheck must leave untouched)."""
    return {k: v for k, v in _tree(out).items() if k not in REPORTS}


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


def _man(out):
    return json.loads((out / "run.json").read_text())


def _no_compute(monkeypatch):
    """Any solve, training or SDE from here on fails the test."""
    import dmft
    import networks
    from dmft import deep_linear
    from experiments import jobs

    def boom(*a, **k):
        raise AssertionError("a recheck computed")

    for owner, name in ((dmft, "solve"), (networks, "train"), (jobs, "lazy_to_rich"), (deep_linear, "mode_sde")):
        monkeypatch.setattr(owner, name, boom)


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    """A complete tiny validate run (computed once; each test works on a copy)."""
    out = tmp_path_factory.mktemp("recheck") / "v"
    assert cli.main(["validate", "--out", str(out)] + VALIDATE) == 0
    return out


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _verdicts(checks):
    return {c["name"]: c["verdict"] for c in checks}


def test_only_a_tolerance_changed_rechecks_without_recomputing(validated, tmp_path, capsys, monkeypatch):
    out = _copy(validated, tmp_path / "v")
    before, kept = _man(out), _kept(out)
    agreement = "agreement gamma0=1 N=4"
    assert _verdicts(before["checks"])[agreement] == "FAIL"           # 0.087 > 0.05 at width 4
    _no_compute(monkeypatch)
    loose = ["--set", "check.agreement_rel=0.5"]
    code, stdout, err = _run(["validate", "--out", str(out), "--strict"] + VALIDATE + loose, capsys)
    assert code == 0, err                         # every verdict passes now: --strict exits 0
    assert "re-checked the saved results under the new [check] section (check.agreement_rel) without " \
           "recomputing" in err, err
    assert agreement in stdout and "FAIL" not in stdout and "report:" in stdout
    assert _kept(out) == kept                     # results and figures: the same bytes, not even touched
    man = _man(out)
    assert man["status"] == "complete" and man["config"]["check"]["agreement_rel"] == 0.5
    assert man["rechecked"] == {"previous_check": before["config"]["check"], "differing": ["check.agreement_rel"]}
    assert _verdicts(man["checks"]) == {**_verdicts(before["checks"]), agreement: "PASS"}
    assert set(man["digests"]) == set(before["digests"]) and man["files"] == before["files"]
    rep = json.loads((out / "report.json").read_text())
    assert rep["checks"] == man["checks"] and rep["config"]["check"]["agreement_rel"] == 0.5
    assert rep["timings"] == json.loads((validated / "report.json").read_text())["timings"]
    md = (out / "report.md").read_text()
    assert "Re-checked:" in md and "agreement_rel = 0.5" in md
    # the rechecked run is complete as recorded: the same command again finds it so
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE + loose, capsys)
    assert code == 0 and "already complete" in err, err
    # a verdict that fails on a recheck: --strict's exit code, as after a computed run
    tight = loose + ["--set", "check.agreement_sigma=0.01"]
    code, stdout, err = _run(["validate", "--out", str(out), "--strict"] + VALIDATE + tight, capsys)
    assert code == cli.EXIT_CHECK and "(check.agreement_sigma)" in err, err
    man = _man(out)
    assert _verdicts(man["checks"])["agreement z gamma0=1 N=4"] == "FAIL" and _kept(out) == kept
    md = (out / "report.md").read_text()
    # a full recomputation under the new tolerances (--force still recomputes) gives the same verdicts
    monkeypatch.undo()
    code, _, err = _run(["validate", "--out", str(out), "--force"] + VALIDATE + tight, capsys)
    assert code == 0 and f"writing {out}" in err and "re-checked" not in err, err
    forced = _man(out)
    assert forced["checks"] == man["checks"] and "rechecked" not in forced
    assert all(_kept(out)[k][1] != kept[k][1] for k in kept)          # every result written again
    redone = (out / "report.md").read_text()
    strip = lambda text: [ln for ln in text.splitlines()                                 # noqa: E731
                          if not ln.startswith(("Re-checked:", "Task `")) and ln]
    assert strip(redone) == strip(md)


def test_simulate_and_solve_recheck_through_run_job(tmp_path, monkeypatch):
    from experiments import jobs

    sets = ["task.D=3", "task.P=6", "task.P_test=4", "train.steps=4", "train.save_every=2", "sweep.gamma0=[1.0]",
            "simulate.widths=[4]", "simulate.seeds=2", "theory.samples=64"]
    quiet = lambda *a: None                                   # noqa: E731
    results = {}
    for job in ("simulate", "solve"):
        out = str(tmp_path / job)
        assert jobs.run_job(job, jobs.load_config(None, sets), out, log=quiet)["status"] == "complete"
        results[job] = (out, _kept(out))
    _no_compute(monkeypatch)
    said = []
    for job, (out, kept) in results.items():
        res = jobs.run_job(job, jobs.load_config(None, sets + ["check.lazy_rel=1e-12", "check.lazy_move=1e9"]),
                           out, log=said.append)
        man = json.loads(open(os.path.join(out, "run.json")).read())
        assert man["status"] == "complete" and _kept(out) == kept
        if job == "solve":
            assert res["status"] == "rechecked" and "without recomputing" in said[-1]
            assert man["config"]["check"]["lazy_rel"] == 1e-12
            assert _verdicts(res["checks"]) == {"lazy limit gamma0=1": "FAIL"} and man["checks"] == res["checks"]
        else:       # simulate judges nothing: a [check] change is the same run (it said "re-checked")
            assert res["status"] == "already complete" and res["checks"] == [] and "networks" in res["files"]["figures"]
    # a section the job never reads does not make another run (solve: [simulate]; simulate: [theory])
    checked = sets + ["check.lazy_rel=1e-12", "check.lazy_move=1e9"]          # (as the solve was re-checked)
    for job, unread in (("solve", "simulate.seeds=3"), ("simulate", "theory.samples=128")):
        out, kept = results[job]
        assert jobs.run_job(job, jobs.load_config(None, checked + [unread]), out, log=quiet)["status"] == "already complete"
        assert _kept(out) == kept
    from dmft.errors import OutputConflict
    with pytest.raises(OutputConflict, match="different run.*theory.samples"):
        jobs.run_job("solve", jobs.load_config(None, checked + ["theory.samples=128"]), results["solve"][0], log=quiet)


def test_a_damaged_results_file_is_refused_not_rechecked(validated, tmp_path, capsys, monkeypatch):
    from dmft.errors import OutputConflict
    from experiments import output

    out = _copy(validated, tmp_path / "v")
    with open(out / "theory" / "dmft_gamma0_1.npz", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\0" * 64)
    tree = _bytes(out)
    _no_compute(monkeypatch)
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE + ["--set", "check.agreement_rel=0.5"], capsys)
    assert code == cli.EXIT_OUTPUT, err
    assert "run.json says this run is complete, but its files are not as written: theory/dmft_gamma0_1.npz " \
           "was changed or damaged" in err and "--force" in err, err
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE, capsys)      # (not "already complete")
    assert code == cli.EXIT_OUTPUT and "theory/dmft_gamma0_1.npz was changed or damaged" in err, err
    assert _bytes(out) == tree                                        # nothing written, nothing removed
    # a file the job reads is verified again as it reads it (damaged after the claim's check)
    with pytest.raises(OutputConflict, match="dmft_gamma0_1.npz was changed or damaged"):
        output.verify_files(str(out), ["theory/dmft_gamma0_1.npz"], _man(out)["digests"])
    with pytest.raises(OutputConflict, match="theory/extra.npz is missing"):
        output.verify_files(str(out), ["theory/extra.npz"], _man(out)["digests"])
    # a missing figure too: a recheck would record the run's files as complete
    out = _copy(validated, tmp_path / "w")
    os.remove(out / "figures" / "losses.png")
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE + ["--set", "check.agreement_rel=0.5"], capsys)
    assert code == cli.EXIT_OUTPUT and "figures/losses.png is missing" in err, err


def test_a_change_outside_check_is_still_a_different_run(validated, tmp_path, capsys):
    out = _copy(validated, tmp_path / "v")
    tree = _bytes(out)
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE
                        + ["--set", "check.agreement_rel=0.5", "--set", "train.eta0=0.25"], capsys)
    assert code == cli.EXIT_OUTPUT and "already holds a different run" in err, err
    assert "check.agreement_rel" in err and "train.eta0" in err and "the code that wrote it" not in err, err
    # of other code (an edited verdict may read the results otherwise): a different run too
    man = _man(out)
    man["code"] = "0" * 64
    man["seal"] = seal(man)                                     # (as that code sealed it)
    (out / "run.json").write_text(json.dumps(man))
    tree["run.json"] = _bytes(out)["run.json"]
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE + ["--set", "check.agreement_rel=0.5"], capsys)
    assert code == cli.EXIT_OUTPUT and "already holds a different run" in err, err
    # (it named check.agreement_rel alone, a change that is re-checked: the code too, a walkthrough)
    assert "check.agreement_rel" in err and "the code that wrote it" in err, err
    assert _bytes(out) == tree


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_a_recheck_that_stops_keeps_the_complete_run(validated, tmp_path, capsys, monkeypatch, stop):
    """A recheck interrupted or failing after it claimed the directory put run.json "interrupted"
    or "failed" over a complete, verified run: the original command was then "a different run"
    and the new one recomputed everything. Now the files a recheck rewrites are put back: the
    directory is the complete run again, byte for byte, and either command finds it."""
    from experiments import report

    out = _copy(validated, tmp_path / "v")
    before = {k: v for k, v in _bytes(out).items() if k not in (".dmft-lock", ".dmft-written")}

    def stopped(*a, **k):
        raise stop

    monkeypatch.setattr(report, "write_report", stopped)
    tight = ["--set", "check.agreement_rel=0.5"]
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE + tight, capsys)
    assert code == (130 if stop is KeyboardInterrupt else cli.EXIT_OUTPUT), err
    assert "the complete run is kept as it was" in err, err
    assert {k: v for k, v in _bytes(out).items() if k not in (".dmft-lock", ".dmft-written")} == before
    monkeypatch.undo()
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE, capsys)
    assert code == 0 and "already complete" in err, err
    _no_compute(monkeypatch)
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE + tight, capsys)
    assert code == 0 and "re-checked the saved results" in err, err
    assert _man(out)["status"] == "complete"


def test_a_recheck_killed_outright_is_put_back_by_the_next_run(validated, tmp_path, capsys, monkeypatch):
    """A recheck killed by SIGKILL (nothing of it runs after) left run.json "running" over a
    complete run, which the next run then computed again. The recheck keeps a copy of the files it
    rewrites on disk first; the next run (of either command) puts them back and finds the
    complete run: the original command says "already complete" with nothing computed, and the
    tighter one rechecks. Killed in a child process while it writes the new report."""
    import signal
    import subprocess
    import sys

    out = _copy(validated, tmp_path / "v")
    before = {k: v for k, v in _bytes(out).items() if k not in (".dmft-lock", ".dmft-written")}
    tight = ["--set", "check.agreement_rel=0.5"]
    child = subprocess.run(
        [sys.executable, "-c",
         "import os, signal, sys\n"
         "import jax\n"
         "jax.config.update('jax_enable_x64', True)\n"
         "from experiments import cli, report\n"
         "def killed(*a, **k):\n"
         "    open(os.path.join(sys.argv[1], 'report.md'), 'w').write('half a report')\n"
         "    os.kill(os.getpid(), signal.SIGKILL)\n"
         "report.write_report = killed\n"
         "cli.main(['validate', '--out', sys.argv[1]] + sys.argv[2:])\n",
         str(out)] + VALIDATE + tight, capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert _man(out)["status"] == "running" and (out / ".dmft-recheck").is_file()
    assert (out / "report.md").read_text() == "half a report"
    _no_compute(monkeypatch)
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE, capsys)
    assert code == 0 and "re-check was killed before it finished" in err and "already complete" in err, err
    assert {k: v for k, v in _bytes(out).items() if k not in (".dmft-lock", ".dmft-written")} == before
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE + tight, capsys)
    assert code == 0 and "re-checked the saved results" in err, err
    assert _man(out)["status"] == "complete" and not (out / ".dmft-recheck").exists()


@pytest.mark.parametrize("backup, status", [("{not json", "running"), ('{"run.json": "zz"}', "running"),
                                            ("{}", "complete")])
def test_a_recheck_copy_that_cannot_be_used_is_said_or_dropped(validated, tmp_path, capsys, backup, status):
    """A damaged copy beside a run.json still "running" is not put back (said, naming it): the
    run is then an unfinished one, resumed (its results verified and reused). A copy beside a
    complete run.json (a recheck killed after its last write) is dropped without a word. A half-written copy is dropped too,
    never taken for a user's file."""
    out = _copy(validated, tmp_path / "v")
    man = _man(out)
    man = {**man, "status": status}
    (out / "run.json").write_text(json.dumps({**man, "seal": seal(man)}))
    (out / ".dmft-recheck").write_text(backup)
    (out / ".dmft-recheck.tmp").write_text(backup[:3])            # one killed while it was written
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE, capsys)
    assert code == 0 and not (out / ".dmft-recheck").exists() and not (out / ".dmft-recheck.tmp").exists(), err
    assert "kept 1 file" not in err, err
    if status == "running":
        assert ".dmft-recheck, the copy a killed re-check left, is unreadable" in err, err
        assert "killed before it finished; resuming it" in err, err   # (its results: verified, reused)
    else:
        assert "already complete" in err and "re-check" not in err, err


def test_a_run_refused_while_a_recheck_reads_names_the_rechecking_process(validated, tmp_path):
    """While a recheck reads the saved results it holds the directory's lock (prepare_output
    returned RECHECK): another run is refused "in use", and now names the process (it said
    "in use" alone: the lock was signed only once the recheck began to write)."""
    import subprocess
    import sys

    from experiments import output

    out = _copy(validated, tmp_path / "v")
    tight = ["--set", "check.agreement_rel=0.5"]
    cfg = _man(out)["config"]
    cfg["check"]["agreement_rel"] = 0.5
    try:
        assert output.prepare_output(str(out), "validate", cfg, False, recheck=True) == output.RECHECK
        child = subprocess.run([sys.executable, "-m", "experiments.cli", "validate", "--out", str(out)] + VALIDATE + tight,
                               capture_output=True, text=True, timeout=300)
    finally:
        output.release(str(out))
    assert child.returncode == cli.EXIT_OUTPUT and "in use" in child.stderr, child.stderr
    assert f"pid {os.getpid()}" in child.stderr, child.stderr


def test_dln_rechecks_from_its_saved_runs(tmp_path, capsys, monkeypatch):
    # modes that start above their targets (init_scale^4 = 3.8 > every s): no mode is still being
    # learned in the stationary window (such a mode is a SKIP), so its FAIL after 4 steps is judged
    DLN = [*globals()["DLN"], "--set", "model.init_scale=1.4"]
    out = tmp_path / "dln"
    code, _, err = _run(["dln", "--out", str(out)] + DLN, capsys)
    assert code == 0, err
    before, kept = _man(out), _kept(out)
    assert _verdicts(before["checks"])["stationary law sigma=1"] == "FAIL"     # KS ~ 1 after 4 steps
    code, _, err = _run(["dln", "--out", str(out), "--strict"] + DLN, capsys)   # (it exited 0)
    assert code == cli.EXIT_CHECK and "this run is already complete" in err
    _no_compute(monkeypatch)
    loose = ["--set", "check.ks_max=1.0"]
    code, stdout, err = _run(["dln", "--out", str(out)] + DLN + loose, capsys)
    assert code == 0 and "re-checked the saved runs under the new [check] section (check.ks_max)" in err, err
    assert "report:" in stdout and _kept(out) == kept
    man = _man(out)
    assert man["status"] == "complete" and man["rechecked"]["differing"] == ["check.ks_max"]
    assert _verdicts(man["checks"]) == {**_verdicts(before["checks"]), "stationary law sigma=1": "PASS"}
    rechecked = json.loads((out / "report.json").read_text())
    assert rechecked["checks"] == man["checks"] and "Re-checked:" in (out / "report.md").read_text()
    monkeypatch.undo()
    code, _, err = _run(["dln", "--out", str(out), "--force"] + DLN + loose, capsys)
    assert code == 0 and "writing" in err, err
    forced = json.loads((out / "report.json").read_text())
    assert forced["checks"] == rechecked["checks"]
    timing = ("networks_s", "sde_s")
    assert [{k: v for k, v in s.items() if k not in timing} for s in forced["studies"]] == \
        [{k: v for k, v in s.items() if k not in timing} for s in rechecked["studies"]]


def test_a_loaded_result_sums_bit_for_bit_as_the_computed_one(tmp_path):
    """A recheck judges the loaded results: networks kept their (S, T, ...) records as strided
    views of (T, S, ...) and the loaded copies were C-ordered (or Fortran-ordered), so numpy's
    sums differed in the last digit and a tolerance at the edge gave another verdict than the
    computing run's (a spread slope -0.49944279391736046 against ...124). Every record is
    C-ordered now, in memory as on disk: the comparisons are bit for bit the same."""
    import jax
    import numpy as np

    import dmft
    import networks
    from networks.deep_linear import DeepLinearRun
    from validation import deep_linear as vdl
    from validation.compare import width_scaling

    data = dmft.tasks.single_index(D=4, P=16, P_test=8, degree=2, key=0)
    model = dmft.TwoLayer("tanh", gamma0=0.5)
    kw = dict(eta0=0.5, steps=6, save_every=3)
    sol = dmft.solve(model, data, method="lazy", **kw)     # the same theory for both: the cheapest to compile
    runs = {w: networks.train(model, data, width=w, seeds=7, **kw) for w in (4, 8)}
    loaded = {}
    for w, run in runs.items():
        run.save(tmp_path / f"N{w}")
        loaded[w] = networks.Run.load(tmp_path / f"N{w}")
    assert all(v.flags.c_contiguous for v in runs[4].arrays().values())
    a, b = width_scaling(sol, runs), width_scaling(sol, loaded)
    assert a["per_seed_fit"].slope == b["per_seed_fit"].slope
    assert np.array_equal(a["per_seed_error"], b["per_seed_error"])
    teacher = dmft.tasks.linear_teacher(d_in=3, d_out=3, singular_values=[3.0, 2.0, 1.0], P=12, key=0)
    dln = dmft.DeepLinear(depth=3, width=6, init_scale=0.3, init="aligned")
    run = networks.train(dln, teacher, seeds=32, eta0=0.01, steps=30, save_every=6, batch_size=1,
                         key=jax.random.key(3))
    run.save(tmp_path / "dln")
    back = DeepLinearRun.load(tmp_path / "dln")
    for r in (run, back):
        assert all(v.flags.c_contiguous for v in r.arrays().values())
    one, two = (vdl.compare_diffusion(r, dln, teacher, eta0=0.01, batch_size=1) for r in (run, back))
    assert [(x["ratio"], x["stderr"]) for x in one] == [(x["ratio"], x["stderr"]) for x in two]


def test_a_recheck_whose_reports_cannot_be_put_back_is_an_unfinished_run(validated, tmp_path, capsys, monkeypatch):
    """run.json was put back first: when a report could not be (disk full), the directory said
    "complete" with digests its report no longer matched, refused as damaged by every command.
    It is put back last and only with every other file; else the run is marked failed and the
    next run of the command computes it again."""
    from experiments import output, report

    out = _copy(validated, tmp_path / "v")
    monkeypatch.setattr(report, "write_report", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space")))
    real = output._put_back
    monkeypatch.setattr(output, "_put_back", lambda out_, before: ["report.md"] if "report.md" in before
                        else real(out_, before))
    tight = ["--set", "check.agreement_rel=0.5"]
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE + tight, capsys)
    assert code == cli.EXIT_OUTPUT and "could not put back report.md" in err, err
    assert _man(out)["status"] == "failed"
    monkeypatch.undo()
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE + tight, capsys)
    assert code == 0 and f"writing {out}" in err, err
    assert _man(out)["status"] == "complete"


def test_a_recheck_stopped_or_killed_midway_leaves_no_temporary(validated, tmp_path, capsys, monkeypatch):
    """A recheck interrupted between writing its final run.json.tmp and renaming it put the complete
    run back but left run.json.tmp (the new run.json, sealed) beside it; one killed outright while it
    wrote its copy, run.json or a put-back left .dmft-recheck.tmp, run.json.tmp or report.md.restore,
    which the next run (already complete) kept. Now neither stays; and the failed final run.json keeps
    the copy and the lock until the complete run is put back."""
    out = _copy(validated, tmp_path / "v")
    before = {k: v for k, v in _bytes(out).items() if k not in (".dmft-lock", ".dmft-written")}
    real, calls = os.replace, []

    def replace(src, dst, *a, **k):
        calls.append(dst)
        if str(dst).endswith(os.sep + "run.json") and sum(str(d).endswith(os.sep + "run.json") for d in calls) == 2:
            raise KeyboardInterrupt          # (the final run.json, before its rename)
        return real(src, dst, *a, **k)

    from experiments import output

    real_put_back, seen = output._put_back_run, []

    def put_back(d, before):        # (the copy on disk and the lock, while the run is put back)
        seen.append((os.path.isfile(os.path.join(d, ".dmft-recheck")), os.path.realpath(d) in output._LOCKS))
        return real_put_back(d, before)

    monkeypatch.setattr(output, "_put_back_run", put_back)
    monkeypatch.setattr(os, "replace", replace)
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE + ["--set", "check.agreement_rel=0.5"], capsys)
    monkeypatch.undo()
    assert code == 130 and "the complete run is kept as it was" in err, err
    # the copy and the lock held until the run is back (the failed run.json dropped both first: a kill
    # then left a "running" run.json without its copy, which the next run resumed, not put back)
    assert seen == [(True, True)], seen
    assert {k: v for k, v in _bytes(out).items() if k not in (".dmft-lock", ".dmft-written")} == before
    for name in ("run.json.tmp", ".dmft-recheck.tmp", "report.md.restore"):        # a kill's leftovers
        (out / name).write_text("{half")
    code, _, err = _run(["validate", "--out", str(out)] + VALIDATE, capsys)
    assert code == 0 and "already complete" in err, err
    assert {k: v for k, v in _bytes(out).items() if k not in (".dmft-lock", ".dmft-written")} == before
