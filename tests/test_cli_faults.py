"""Every job of the `dmft` command answers a filesystem or configuration fault with one line
naming the problem and its documented exit code, never a traceback, before any compute."""

import json
import os
import pathlib
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments import cli, jobs

SCAN_TOML = """
[task]
name = "single_index"
D = 3
P = 6
P_test = 4
degree = 1
[model]
activation = "linear"
[train]
eta0 = 0.5
steps = 4
save_every = 2
[scan.grid]
"model.gamma0" = [0.5, 1.0]
"""

JOBS = {"solve": ["--steps", "4", "--set", "train.save_every=2", "--set", "task.D=3", "--set", "task.P=6"],
        "simulate": ["--steps", "4", "--set", "train.save_every=2", "--widths", "4", "--seeds", "2"],
        "validate": ["--steps", "4", "--set", "train.save_every=2", "--widths", "4", "--seeds", "2"],
        "grok": ["--steps", "4", "--set", "train.save_every=2", "--widths", "4", "--seeds", "2"],
        "dln": ["--steps", "4", "--set", "train.save_every=2", "--seeds", "2"],
        "scan": []}


def _argv(job, tmp_path, out, config=None):
    argv = [job, "--out", str(out), "--no-progress"] + JOBS[job]
    if config is not None:
        argv += ["--config", str(config)]
    elif job == "scan":
        path = tmp_path / "scan.toml"
        path.write_text(SCAN_TOML)
        argv += ["--config", str(path)]
    return argv


def _run(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


@pytest.mark.parametrize("job", sorted(JOBS))
def test_output_faults_are_exit_3(job, tmp_path, capsys, monkeypatch):
    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("mine")
    code, err = _run(_argv(job, tmp_path, in_the_way), capsys)
    assert code == cli.EXIT_OUTPUT and "a_file" in err, err
    code, err = _run(_argv(job, tmp_path, in_the_way / "sub"), capsys)
    assert code == cli.EXIT_OUTPUT and "a_file" in err, err
    assert in_the_way.read_text() == "mine"
    # no permission (simulated, so that the test means the same as root and as a user)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access, real_makedirs = os.access, os.makedirs

    def access(path, mode, *a, **k):
        return False if str(path).startswith(str(locked)) else real_access(path, mode, *a, **k)

    def makedirs(path, *a, **k):
        if str(path).startswith(str(locked)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_makedirs(path, *a, **k)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "makedirs", makedirs)
    code, err = _run(_argv(job, tmp_path, locked / "out"), capsys)
    assert code == cli.EXIT_OUTPUT and ("permission" in err.lower()), err


@pytest.mark.parametrize("job", sorted(JOBS))
def test_config_faults_are_exit_2(job, tmp_path, capsys):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"[train]\nsteps = 4 # \xff\xfe caf\xe9\n")
    code, err = _run(_argv(job, tmp_path, tmp_path / "o1", bad), capsys)
    assert code == cli.EXIT_CONFIG and "UTF-8" in err, err
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    code, err = _run(_argv(job, tmp_path, tmp_path / "o2", folder), capsys)
    assert code == cli.EXIT_CONFIG and "directory" in err, err
    code, err = _run(_argv(job, tmp_path, tmp_path / "o3", tmp_path / "missing.toml"), capsys)
    assert code == cli.EXIT_CONFIG and "not found" in err, err
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


@pytest.mark.parametrize("job", sorted(JOBS))
def test_a_device_this_machine_lacks_is_exit_2(job, tmp_path, capsys):
    import jax

    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this machine has a GPU")
    code, err = _run(_argv(job, tmp_path, tmp_path / "o") + ["--device", "gpu"], capsys)
    assert code == cli.EXIT_CONFIG and "--device gpu" in err, err
    assert jax.devices()[0].platform == "cpu"            # nothing global changed for the next job


def test_a_missing_parent_is_created(tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "out"
    code, _ = _run(["solve", "--out", str(out), "--no-progress", "--gamma0", "1", "--samples", "64"]
                   + JOBS["solve"] + ["--set", "task.P_test=4"], capsys)
    assert code == 0 and (out / "run.json").exists()


def test_a_figure_that_fails_keeps_the_numbers_and_says_so(tmp_path, capsys, monkeypatch):
    import json

    from validation import plots

    def broken(*a, **k):
        raise RuntimeError("no font")

    monkeypatch.setattr(plots, "theory_vs_networks", broken)
    from experiments import report
    monkeypatch.setitem(report.FIGURES, "losses", broken)
    out = tmp_path / "v"
    code, err = _run(["validate", "--out", str(out), "--no-progress", "--gamma0", "1", "--samples", "64",
                      "--set", "task.P_test=4"] + JOBS["validate"] + ["--set", "task.D=3", "--set", "task.P=6"],
                     capsys)
    assert code == cli.EXIT_PLOT and "no font" in err and "numbers were saved" in err
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == "plot_failed" and "losses" in man["plot_errors"]
    assert (out / "theory" / "dmft_gamma0_1.npz").exists() and (out / "report.json").exists()


def _loader(name):
    from experiments import dln, grok, jobs, scan

    if name.startswith("grok_"):
        return lambda path, full: grok.load_config(path, (), full=full)
    if name.endswith("scan.toml"):
        return lambda path, full: scan.load_config(path)
    if name.startswith("dln"):
        return lambda path, full: dln.load_config(path, (), full=full)
    return lambda path, full: jobs.load_config(path, (), full=full)


CONFIGS = sorted(os.listdir(os.path.join(os.path.dirname(__file__), "..", "scripts", "configs")))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_loads(name):
    """The configurations the README and the headers of scripts/configs name pass their job's
    schema and checks (with and without --full, which the grok testbeds other than kumar refuse:
    its preset is Kumar et al.'s sizes), so a schema change cannot break one silently."""
    assert name.endswith(".toml"), name
    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "configs", name)
    load = _loader(name)
    cfg = load(path, False)
    assert isinstance(cfg, dict) and cfg
    if name.startswith("grok_") and cfg["testbed"]["name"] != "kumar":
        with pytest.raises(cli.ConfigError, match="^--full: "):
            load(path, True)
    else:
        assert load(path, True)


@pytest.mark.parametrize("name", [None] + [c for c in CONFIGS
                                           if not c.startswith(("dln", "grok_")) and not c.endswith("scan.toml")])
@pytest.mark.parametrize("full", [False, True])
def test_every_shipped_job_config_passes_its_preflight(name, full):
    """Beyond the schema: the defaults and every solve / validate configuration we ship, with and
    without the --full preset, pass the checks run before any compute (memory included):
    `dmft validate --full` was refused on its own preset (16 networks of width 8192 need 7 GiB,
    its limit was 6)."""
    path = None if name is None else os.path.join(os.path.dirname(__file__), "..", "scripts", "configs", name)
    cfg = jobs.load_config(path, (), full=full)
    for job in ("solve", "simulate", "validate"):
        assert jobs.preflight(cfg, job) is not None


# ------------------------------------------------------------------ what makes a run the same run

def _solve_argv(out, *extra):
    return (["solve", "--out", str(out), "--no-progress", "--samples", "64", "--set", "task.P_test=4"]
            + JOBS["solve"] + list(extra))


def test_a_changed_data_file_or_precision_is_another_run(tmp_path, capsys):
    """A rerun is "already complete" only with the same command, configuration (less the memory
    limits) and inputs: a data file whose bytes changed (same path) or another precision is
    refused as a different run, naming it, and --force recomputes it."""
    import json

    import jax
    import numpy as np

    import dmft

    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"

    def save():
        dmft.Dataset(rng.normal(size=(6, 3)), rng.normal(size=6), rng.normal(size=(4, 3)),
                     rng.normal(size=4)).save(str(path))

    save()
    out = tmp_path / "s"
    argv = ["solve", "--out", str(out), "--no-progress", "--samples", "64", "--steps", "4", "--set",
            "train.save_every=2", "--gamma0", "1", "--set", "task.name=npz", "--set", f"task.path={path}"]
    assert _run(argv, capsys)[0] == 0
    first = json.loads((out / "run.json").read_text())
    assert len(first["inputs"]["task.path sha256"]) == 64 and first["inputs"]["x64"] is True
    code, err = _run(argv, capsys)
    assert code == 0 and "already complete" in err
    # a memory limit changes no result: the same run (it was refused as a different one)
    code, err = _run(argv + ["--set", "theory.max_memory_gb=8", "--set", "simulate.max_memory_gb=2"], capsys)
    assert code == 0 and "already complete" in err, err
    save()                                                  # new arrays, same path
    code, err = _run(argv, capsys)
    assert code == cli.EXIT_OUTPUT and "task.path sha256" in err, err
    assert _run(argv + ["--force"], capsys)[0] == 0
    assert json.loads((out / "run.json").read_text())["inputs"] != first["inputs"]
    try:
        code, err = _run(argv + ["--x32"], capsys)
    finally:
        jax.config.update("jax_enable_x64", True)           # (the entry point set float32)
    assert code == cli.EXIT_OUTPUT and "x64" in err, err


def test_a_file_whose_name_the_journal_cannot_take_is_not_left_to_a_killed_runs_next_run(tmp_path, monkeypatch):
    """A full disk at the journal's append (.dmft-written) was swallowed: the file was written all
    the same, and after a kill the next run's clean-up (--force, another configuration) kept that
    result of the killed run as "a file the previous run did not write". Now the open that would
    make the file fails (naming the journal), so no file exists that the journal does not name."""
    import errno

    from experiments import output
    from experiments.jobs import load_config

    out, said = str(tmp_path / "o"), []
    cfg = load_config(None, ["theory.method=lazy"])
    assert output.prepare_output(out, "solve", cfg, False, log=said.append) is True
    journal, real_write = output._JOURNALS[os.path.realpath(out)], os.write

    def write(fd, data):
        if fd == journal:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    stale = tmp_path / "o" / "theory" / "lazy_gamma0_0.05.npz"
    stale.parent.mkdir()
    try:
        with open(stale, "wb") as fh:
            fh.write(b"killed run's")
    except OSError as err:
        assert err.errno == errno.ENOSPC and err.filename.endswith(".dmft-written"), err
    monkeypatch.undo()
    output.release(out)                       # killed outright: run.json still "running"
    assert output.read_manifest(out)["status"] == "running"
    try:
        assert output.prepare_output(out, "solve", load_config(None, ["theory.method=lazy", "sweep.gamma0=[2.0]"]),
                                     True, log=said.append) is True
    finally:
        output.release(out)
    assert not stale.exists() and not [s for s in said if "did not write" in s], said


def test_force_removes_what_the_previous_run_wrote(tmp_path, capsys):
    """--force over a finished run starts from an empty directory: no file of the old run
    outlives it or enters the new run's digests."""
    import json

    out = tmp_path / "s"
    assert _run(_solve_argv(out, "--gamma0", "0.5", "1"), capsys)[0] == 0
    assert (out / "theory" / "dmft_gamma0_0.5.npz").exists()
    assert _run(_solve_argv(out, "--gamma0", "2", "--force"), capsys)[0] == 0
    assert not (out / "theory" / "dmft_gamma0_0.5.npz").exists()
    digests = json.loads((out / "run.json").read_text())["digests"]
    assert not [k for k in digests if "gamma0_0.5" in k or "gamma0_1." in k], digests
    assert any("gamma0_2" in k for k in digests)


def test_a_numerical_failure_is_recorded_in_run_json(tmp_path, capsys):
    import json

    out = tmp_path / "s"
    # (minibatch SGD: a full-batch lazy step this far past its stability is refused by the preflight)
    code, err = _run(_solve_argv(out, "--gamma0", "2", "--eta0", "50", "--set", "train.batch_size=2"), capsys)
    assert code == cli.EXIT_NUMERIC and "eta0" in err, err
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == "failed" and "DivergenceError" in man["error"], man


@pytest.mark.parametrize("job, setting, name", [
    ("solve", "sweep.gamma0=[1, 1.0000001]", "sweep.gamma0"),
    ("grok", "model.gamma0=[1, 1]", "model.gamma0"),
    ("dln", "teacher.label_noise=[0.5, 0.5]", "teacher.label_noise"),
    ("dln", "check.spread_low=2", "check.spread_low"),
    ("solve", "task.seed=4294967296", "task.seed"),
    ("grok", "simulate.seed=4294967296", "simulate.seed"),
    ("dln", "theory.seed=4294967296", "theory.seed"),
    ("solve", "model.eps=0.1", "model.eps"),                            # read only by 'quadratic'
    ("validate", ("task.degree=3", "task.name='kumar_quadratic'"), "task.degree"),   # ignored by the task
    ("grok", "simulate.widths=[2, 100000000]", "simulate.widths"),      # memory, before the DMFT runs
    ("dln", "theory.paths=300000000", "theory.paths"),                  # before the networks train
])
def test_values_that_would_overwrite_each_other_or_wrap_are_refused(job, setting, name, tmp_path, capsys):
    """Two values that label their results alike (files named by their value) would overwrite
    each other; a seed past 2^32 - 1 would wrap onto another under --x32; a setting nothing
    reads would be silently lost; sizes over the memory limit would fail after compute began."""
    out = tmp_path / "o"
    sets = [x for v in ((setting,) if isinstance(setting, str) else setting) for x in ("--set", v)]
    code, err = _run([job, "--out", str(out), "--no-progress"] + sets, capsys)
    assert code == cli.EXIT_CONFIG and name in err, err
    assert not out.exists()


def test_a_float64_deep_linear_scan_under_x32_is_refused_before_its_store_exists(tmp_path, capsys):
    """A float64 train.dtype the user wrote (the default follows --x32)."""
    import jax

    out = tmp_path / "scan"
    config = os.path.join(os.path.dirname(__file__), "..", "scripts", "configs", "dln_scan.toml")
    try:
        code, err = _run(["scan", "--config", config, "--out", str(out), "--no-progress", "--x32",
                          "--set", "train.dtype='float64'"], capsys)
    finally:
        jax.config.update("jax_enable_x64", True)           # (the entry point set float32)
    assert code == cli.EXIT_CONFIG and "train.dtype" in err, err
    assert not out.exists()


def test_a_forced_run_in_a_users_directory_never_deletes_the_users_files(tmp_path, capsys):
    """--force into a directory dmft did not make writes there; a later forced (or unfinished)
    rerun removes only what the dmft run recorded, never the user's own files; a run.json that
    dmft did not write is not taken for a run."""
    import json

    out = tmp_path / "mine"
    (out / "data").mkdir(parents=True)
    (out / "thesis.tex").write_text("mine")
    (out / "data" / "x.txt").write_text("mine")
    assert _run(_solve_argv(out, "--gamma0", "0.5"), capsys)[0] == cli.EXIT_OUTPUT      # not empty
    assert _run(_solve_argv(out, "--gamma0", "0.5", "--force"), capsys)[0] == 0
    assert _run(_solve_argv(out, "--gamma0", "2", "--force"), capsys)[0] == 0
    assert (out / "thesis.tex").read_text() == "mine" and (out / "data" / "x.txt").read_text() == "mine"
    assert not (out / "theory" / "dmft_gamma0_0.5.npz").exists() and (out / "theory" / "dmft_gamma0_2.npz").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "run.json").write_text(json.dumps({"tool": "not dmft"}))
    (foreign / "model.ckpt").write_text("mine")
    code, err = _run(_solve_argv(foreign, "--gamma0", "1"), capsys)
    assert code == cli.EXIT_OUTPUT and "run.json" in err, err
    assert _run(_solve_argv(foreign, "--gamma0", "1", "--force"), capsys)[0] == 0
    assert (foreign / "model.ckpt").read_text() == "mine"


def test_a_forced_run_digests_and_removes_only_its_own_files(tmp_path, capsys, monkeypatch):
    """A run's files are the files its process wrote: in a user's directory a file the user adds
    between runs, appends to from another process during a run, or copied with a future mtime is
    never digested nor removed; the files of a run that failed after writing (a figure) or was
    interrupted are recorded and removed by the next forced run, not claimed by it; in a
    directory dmft made, --force over a damaged run.json digests the new files."""
    import json

    from experiments import report

    import subprocess
    import sys
    import time

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "data.csv").write_text("mine, copied with a clock ahead")
    ahead = time.time() + 86400
    os.utime(out / "data.csv", (ahead, ahead))
    (out / "log.txt").write_text("my log\n")
    write_report = report.write_report

    def tee(*args, **kw):      # another process appends to the user's log while the run goes
        subprocess.run([sys.executable, "-c", f"open({str(out / 'log.txt')!r}, 'a').write('more\\n')"],
                       check=True)
        return write_report(*args, **kw)
    monkeypatch.setattr(report, "write_report", tee)
    assert _run(_solve_argv(out, "--gamma0", "0.5", "--force"), capsys)[0] == 0
    monkeypatch.setattr(report, "write_report", write_report)
    digests = json.loads((out / "run.json").read_text())["digests"]
    assert not {"log.txt", "data.csv", "notes.txt"} & set(digests) and "theory/dmft_gamma0_0.5.npz" in digests
    assert (out / "log.txt").read_text() == "my log\nmore\n"
    (out / "analysis.ipynb").write_text("added after the first run")
    figures = dict(report.FIGURES)
    monkeypatch.setitem(report.FIGURES, "losses", lambda sweep: 1 / 0)        # fails after the numbers
    assert _run(_solve_argv(out, "--gamma0", "2", "--force"), capsys)[0] == cli.EXIT_PLOT
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == "plot_failed" and "theory/dmft_gamma0_2.npz" in man["written"]
    assert "notes.txt" not in man["written"] and "analysis.ipynb" not in man["written"]
    monkeypatch.setattr(report, "FIGURES", figures)

    def interrupt(*args, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(report, "write_report", interrupt)                    # Ctrl-C after the numbers
    assert _run(_solve_argv(out, "--gamma0", "3", "--force"), capsys)[0] == 130
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == "interrupted" and "theory/dmft_gamma0_3.npz" in man["written"]
    assert not (out / "theory" / "dmft_gamma0_2.npz").exists()                # the failed run's files went
    monkeypatch.undo()
    assert _run(_solve_argv(out, "--gamma0", "4", "--force"), capsys)[0] == 0
    digests = json.loads((out / "run.json").read_text())["digests"]
    assert sorted(os.listdir(out / "theory")) == sorted(k.split("/")[1] for k in digests if k.startswith("theory/"))
    assert all("gamma0_4" in k for k in digests if k.startswith("theory/")), digests
    assert "analysis.ipynb" not in digests and "notes.txt" not in digests
    assert (out / "notes.txt").read_text() == "mine" and (out / "analysis.ipynb").exists()
    assert (out / "data.csv").exists() and (out / "log.txt").exists()
    owned = tmp_path / "owned"
    assert _run(_solve_argv(owned, "--gamma0", "0.5"), capsys)[0] == 0
    (owned / "run.json").write_text('{"command": "solve", "sta')                 # damaged
    assert _run(_solve_argv(owned, "--gamma0", "0.5"), capsys)[0] == cli.EXIT_OUTPUT
    assert _run(_solve_argv(owned, "--gamma0", "0.5", "--force"), capsys)[0] == 0
    assert "theory/dmft_gamma0_0.5.npz" in json.loads((owned / "run.json").read_text())["digests"]
    assert not (owned / ".dmft-foreign").exists()
    with open(owned / "theory" / "dmft_gamma0_0.5.npz", "r+b") as fh:          # damaged after
        fh.seek(100)
        fh.write(b"\0" * 64)
    code, err = _run(_solve_argv(owned, "--gamma0", "0.5"), capsys)
    assert code == cli.EXIT_OUTPUT and "dmft_gamma0_0.5.npz was changed" in err, err


def test_a_run_written_before_inputs_were_recorded_is_judged_by_its_environment(tmp_path, capsys):
    """run.json files of earlier versions have no "inputs": their environment's x64 and backend
    stand in (a float32 run of then is not "already complete" for a float64 rerun now)."""
    import json

    out = tmp_path / "s"
    argv = _solve_argv(out, "--gamma0", "1")
    assert _run(argv, capsys)[0] == 0
    man = json.loads((out / "run.json").read_text())
    del man["inputs"], man["seal"]                              # (as written before either was recorded)
    (out / "run.json").write_text(json.dumps(man))
    code, err = _run(argv, capsys)
    assert code == 0 and "already complete" in err, err          # same environment: the same run
    man["environment"]["x64"] = False
    (out / "run.json").write_text(json.dumps(man))
    code, err = _run(argv, capsys)
    assert code == cli.EXIT_OUTPUT and "x64" in err, err


def test_a_complete_run_of_other_code_is_computed_again(tmp_path, capsys):
    """A rerun said "already complete" after the solver was edited (run.json held no trace of
    the code): the same run of other code is now computed again, without --force, as an
    unfinished one is; of this code it stays complete."""
    import json

    from experiments.output import code_digest, seal

    out = tmp_path / "s"
    argv = _solve_argv(out, "--gamma0", "1")
    assert _run(argv, capsys)[0] == 0
    man = json.loads((out / "run.json").read_text())
    assert man["code"] == code_digest()
    man["code"] = "0" * 64
    man["seal"] = seal(man)                                     # (as that code sealed it)
    (out / "run.json").write_text(json.dumps(man))
    code, err = _run(argv, capsys)
    assert code == 0 and "already complete" not in err, err
    assert json.loads((out / "run.json").read_text())["code"] == code_digest()
    code, err = _run(argv, capsys)
    assert code == 0 and "already complete" in err, err
    # other code, and a file of the run edited since: refused without --force, as with this code
    man = json.loads((out / "run.json").read_text())
    man["code"] = "0" * 64
    man["seal"] = seal(man)
    (out / "run.json").write_text(json.dumps(man))
    with open(out / "report.json", "a") as fh:
        fh.write(" ")
    code, err = _run(argv, capsys)
    assert code == cli.EXIT_OUTPUT and "report.json was changed" in err, err


def _leaves(node, path=()):
    """Every leaf of a JSON tree as (path, value)."""
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, path + (k,))]
    if isinstance(node, list):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, path + (i,))]
    return [(path, node)]


def _changed(value):
    """Another value of the same kind: what a hand edit of run.json makes of a leaf."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1 if value == value else 0.0
    if isinstance(value, str):
        return value + "x"
    return "edited" if value is None else None


_SEALED = {}


def _sealed_copy(tmp_path_factory, capsys, name):
    """A copy, in a new folder, of one complete sealed solve run (made once for the tests that edit it)."""
    import shutil

    if not _SEALED:
        base = tmp_path_factory.mktemp("sealed") / "s"
        assert _run(_solve_argv(base, "--gamma0", "1"), capsys)[0] == 0
        _SEALED["base"] = base
    out = tmp_path_factory.mktemp(name) / "s"
    shutil.copytree(_SEALED["base"], out)
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(0, 10 ** 6))
def test_a_run_json_edited_after_it_was_written_is_refused(tmp_path_factory, capsys, pick):
    """run.json is sealed (the SHA-256 of its content): a complete run whose run.json was edited
    since (any one leaf: its configuration edited to another run's made the old results "already
    complete", a verdict edited FAIL to PASS was reported as the run's) is refused before
    anything is touched, naming the edit; --force computes it again, sealed anew."""
    import json

    from experiments.output import seal

    out = _sealed_copy(tmp_path_factory, capsys, "edited")
    man = json.loads((out / "run.json").read_text())
    leaves = [leaf for leaf in _leaves(man) if leaf[0] != ("seal",)]
    path, value = leaves[pick % len(leaves)]
    node = man
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = _changed(value)
    (out / "run.json").write_text(json.dumps(man, indent=2))
    argv = _solve_argv(out, "--gamma0", "1")
    before = _tree(out)
    code, err = _run(argv, capsys)
    assert code == cli.EXIT_OUTPUT and "run.json was edited after dmft wrote it" in err, (path, err)
    assert _tree(out) == before
    if pick % 5 == 0:                     # (a few: each computes the run again)
        code, err = _run(argv + ["--force"], capsys)
        assert code == 0, err
        again = json.loads((out / "run.json").read_text())
        assert again["status"] == "complete" and again["seal"] == seal(again)
        assert _run(argv, capsys)[1].count("already complete") == 1


def test_a_forced_run_over_an_edited_run_json_removes_none_of_the_files_it_lists(tmp_path_factory, capsys):
    """With --force, an edited run.json's file list is not trusted: a user's file edited into its
    digests is kept when the directory is claimed (as the previous run's it would be removed)."""
    import json

    from experiments.output import prepare_output, release

    out = _sealed_copy(tmp_path_factory, capsys, "forced")
    (out / "notes.txt").write_text("mine")
    man = json.loads((out / "run.json").read_text())
    man["digests"]["notes.txt"] = "0" * 64
    (out / "run.json").write_text(json.dumps(man))
    try:
        assert prepare_output(str(out), man["command"], man["config"], force=True) is True
    finally:
        release(str(out))
    assert (out / "notes.txt").read_text() == "mine"


@given(st.dictionaries(st.text(min_size=1, max_size=4).filter(lambda k: k != "seal"),
                       st.one_of(st.integers(), st.text(max_size=4), st.lists(st.floats(allow_nan=False), max_size=3)),
                       min_size=2, max_size=6))
def test_the_seal_is_of_the_content_not_of_its_order_or_layout(man):
    """run.json's seal is of its content (canonical JSON, sorted keys): the same content in another key
    order, as a tool that rewrites JSON may leave it, keeps its seal; a changed value does not."""
    import json

    from experiments.output import seal

    reordered = dict(reversed(list(man.items())))
    assert seal(reordered) == seal(man) == seal(json.loads(json.dumps(man, indent=1)))
    assert seal({**man, "seal": "x"}) == seal(man)
    first = next(iter(man))
    assert seal({**man, first: [man[first]]}) != seal(man)


# ------------------------------------------------------------------ one run per results directory

def _tree(out):
    """Every file under `out` (relative path -> bytes)."""
    return {os.path.relpath(os.path.join(d, f), out): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(out) for f in files}


def test_a_directory_a_live_run_holds_is_refused_and_left_as_it_is(tmp_path, capsys):
    """A second run into a directory whose lock a live run holds is refused (exit 3, naming the
    directory and the holder's pid), forced or not, with any configuration, and deletes nothing
    (it took the live run's "running" run.json for an unfinished run of its own and emptied
    the directory); once the holder is gone, a rerun says the previous run was killed."""
    import json
    import subprocess
    import sys

    from experiments.output import seal

    out = tmp_path / "s"
    argv = _solve_argv(out, "--gamma0", "1")
    assert _run(argv, capsys)[0] == 0
    man = json.loads((out / "run.json").read_text())
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(out / '.dmft-lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.write(fd, f'pid {os.getpid()} on here'.encode())\n"
         "print('locked', flush=True)\n"
         "time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        man.update(status="running", pid=holder.pid)           # as the live run's run.json says
        man["seal"] = seal(man)
        (out / "run.json").write_text(json.dumps(man))
        before = _tree(out)
        for extra in ([], ["--force"], ["--force", "--gamma0", "2"]):
            code, err = _run(argv + extra, capsys)
            assert code == cli.EXIT_OUTPUT and "in use" in err and str(out) in err, err
            assert f"pid {holder.pid}" in err and len(err.strip().splitlines()) == 1, err
            assert _tree(out) == before
    finally:
        holder.kill()
        holder.wait()
    code, err = _run(argv, capsys)
    assert code == 0 and "killed before it finished" in err and "already complete" not in err, err
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == "complete" and man["pid"] == os.getpid() and man["host"]


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_are_recorded_as_interruptions(name, tmp_path, capsys, monkeypatch):
    """kill, timeout, a batch scheduler (SIGTERM) or a closed terminal (SIGHUP) stop a job as
    Ctrl-C does: run.json says "interrupted" with the signal (it said "running" forever), the
    exit code is 128 + the signal's number, and the handlers before the job are restored."""
    import json
    import signal
    import time

    from experiments import report

    signum = getattr(signal, name)
    write_report = report.write_report

    def killed(*args, **kw):
        os.kill(os.getpid(), signum)
        time.sleep(2)                                   # (the handler raises at once)
        return write_report(*args, **kw)

    def unhandled(*_):
        raise RuntimeError(f"{name} reached the handler the job found")

    monkeypatch.setattr(report, "write_report", killed)
    previous = signal.signal(signum, unhandled)
    try:
        out = tmp_path / "s"
        code, err = _run(_solve_argv(out, "--gamma0", "1"), capsys)
        assert signal.getsignal(signum) is unhandled
    finally:
        signal.signal(signum, previous)
    assert code == 128 + signum and f"interrupted ({name})" in err, err
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == "interrupted" and man["signal"] == name
    assert "theory/dmft_gamma0_1.npz" in man["written"]


def test_a_ctrl_c_lost_in_jaxs_gc_callback_still_interrupts_the_job():
    """A Ctrl-C whose KeyboardInterrupt lands in JAX's garbage-collection callback (errors there
    are only printed) interrupts the job: exit 130, "interrupted". It was lost, and a scan killed
    with SIGINT in its first second (while JAX was imported) ran to its end with exit 0."""
    import subprocess
    import sys

    code = ("import gc, signal, sys, time\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"   # (a background parent ignores it)
            "from experiments import cli\n"
            "def lost(phase, info):\n"
            "    gc.callbacks.remove(lost)\n"
            "    raise KeyboardInterrupt\n"
            "def job(args):\n"
            "    gc.callbacks.append(lost)\n"
            "    gc.collect()\n"
            "    time.sleep(2)\n"
            "    print('the job went on')\n"
            "    return 0\n"
            "cli._JOBS['scan'] = job\n"
            "sys.exit(cli.main(['scan', '--no-progress', '--compile-cache', 'off']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))})
    assert done.returncode == 130 and "dmft scan: interrupted" in done.stderr, done
    assert "the job went on" not in done.stdout


def test_force_in_a_directory_dmft_made_keeps_the_users_files(tmp_path, capsys):
    """--force in a directory dmft made removes only what the previous run wrote (it removed
    everything there, the user's notes and folders too), then the folders that leaves empty, and
    says what it kept; an empty directory of the user's is not taken for one dmft made."""
    out = tmp_path / "s"
    assert _run(_solve_argv(out, "--gamma0", "0.5"), capsys)[0] == 0
    assert (out / ".dmft-owned").exists()
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "data.csv").write_text("mine")
    (out / "theory" / "fit.py").write_text("mine")
    code, err = _run(_solve_argv(out, "--gamma0", "2", "--eta0", "50", "--set", "train.batch_size=2", "--force"),
                     capsys)   # diverges (under SGD: a full-batch lazy step so far past its limit is refused)
    assert code == cli.EXIT_NUMERIC, err
    assert "kept 3 file(s)" in err and "notes.txt" in err and "theory/fit.py" in err, err
    assert (out / "notes.txt").read_text() == "mine" and (out / "mine" / "data.csv").read_text() == "mine"
    assert sorted(os.listdir(out / "theory")) == ["fit.py"] and not (out / "figures").exists()
    assert not (out / "report.md").exists()
    assert _run(_solve_argv(out, "--gamma0", "1", "--force"), capsys)[0] == 0
    assert (out / "notes.txt").exists() and (out / "theory" / "fit.py").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(_solve_argv(empty, "--gamma0", "1"), capsys)[0] == 0
    assert not (empty / ".dmft-owned").exists()


def test_an_already_complete_run_names_its_files_from_any_working_directory(tmp_path, capsys, monkeypatch):
    """run.json records the run's files relative to the results directory, so a rerun from
    another working directory prints paths that exist (they were relative to the first one's)."""
    import json

    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert cli.main(_solve_argv("res", "--gamma0", "1")) == 0
    capsys.readouterr()
    files = json.loads((tmp_path / "a" / "res" / "run.json").read_text())["files"]
    assert files["report"] == ["report.md", "report.json"], files
    monkeypatch.chdir(tmp_path)
    assert cli.main(_solve_argv(os.path.join("a", "res"), "--gamma0", "1")) == 0
    printed, err = capsys.readouterr()
    assert "already complete" in err, err
    paths = [line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith(("report:", "figure:"))]
    assert paths and paths[0] == os.path.join("a", "res", "report.md") and all(os.path.isfile(p) for p in paths)


def test_a_complete_run_in_a_read_only_place_is_already_complete(tmp_path, capsys, monkeypatch):
    """A finished run on a read-only file system is found complete (it was refused with "no
    permission to write", exit 3): write access is needed only for something to compute."""
    import errno

    out = tmp_path / "s"
    argv = _solve_argv(out, "--gamma0", "1")
    assert _run(argv, capsys)[0] == 0
    # a recheck killed after its last write left its copy: beside a complete run.json it is
    # dropped where it can be, and here, where it cannot, it is left (it was refused, exit 3)
    (out / ".dmft-recheck").write_text("{}")
    real_access, real_open, real_makedirs, real_remove = os.access, os.open, os.makedirs, os.remove
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def access(path, mode, *a, **k):
        return False if str(path).startswith(str(tmp_path)) and mode & os.W_OK else real_access(path, mode, *a, **k)

    def open_(path, flags, *a, **k):
        if str(path).startswith(str(tmp_path)) and flags & writes:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **k)

    def makedirs(path, *a, **k):
        if str(path).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_makedirs(path, *a, **k)

    def remove(path, *a, **k):
        if str(path).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_remove(path, *a, **k)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "makedirs", makedirs)
    monkeypatch.setattr(os, "remove", remove)
    code, err = _run(argv, capsys)
    assert code == 0 and "already complete" in err, err
    assert (out / ".dmft-recheck").exists()
    code, err = _run(_solve_argv(out, "--gamma0", "1", "--force"), capsys)
    assert code == cli.EXIT_OUTPUT and "permission" in err, err


def test_writing_is_said_only_when_a_run_writes(tmp_path, capsys):
    """"writing OUT" comes once the run has claimed OUT: not before a configuration the job
    refuses, nor for a run already complete."""
    out = tmp_path / "s"
    code, err = _run(_solve_argv(out, "--gamma0", "1", "--set", "model.readout='fixed'",
                                 "--set", "model.centered=false"), capsys)
    assert code == cli.EXIT_CONFIG and f", writing {out}" not in err and not out.exists(), err
    code, err = _run(_solve_argv(out, "--gamma0", "1"), capsys)
    assert code == 0 and f", writing {out}" in err, err
    code, err = _run(_solve_argv(out, "--gamma0", "1"), capsys)
    assert code == 0 and "already complete" in err and f", writing {out}" not in err, err


@pytest.mark.parametrize("job", sorted(set(JOBS) - {"scan"}))
def test_no_job_writes_into_a_scan_store_even_forced(job, tmp_path, capsys):
    """A scan's store is no run's directory: every job refuses it with --force too (exit 3,
    naming it), before computing, and leaves it as it was; a store's manifest alone (format
    written) or beside chunks/ is recognised."""
    from experiments.store import Store

    store = tmp_path / "store"
    Store.create_or_open(store, {"config": {"a": 1}}, {"grid": {}, "chunk_names": ["c0"]}).close()
    before = sorted(os.listdir(store))
    code, err = _run(_argv(job, tmp_path, store) + ["--force"], capsys)
    assert code == cli.EXIT_OUTPUT and str(store) in err and "scan's store" in err, err
    assert sorted(os.listdir(store)) == before


def test_a_numerical_failure_names_the_point_that_failed(tmp_path, capsys):
    """A sweep over gamma0 that diverges says at which gamma0 and in which solve (it said only
    'forward: non-finite output at step 7'); run.json records the same message. (At eta0 = 50 under
    SGD on batches of 2 the lazy limit runs away: its solve, the sweep's first, fails first; under
    full-batch descent the preflight refuses that step, tests/test_preflight68.py.)"""
    import json

    out = tmp_path / "s"
    code, err = _run(_solve_argv(out, "--gamma0", "1", "2", "--eta0", "50", "--set", "train.batch_size=2"), capsys)
    assert code == cli.EXIT_NUMERIC, err
    assert "numerical failure: lazy limit at gamma0 = 1: lazy: " in err and "ran away" in err, err
    man = json.loads((out / "run.json").read_text())
    assert "lazy limit at gamma0 = 1: " in json.dumps(man), man
    # nothing lost: the saves before the failure are in the results directory, named by the message
    import numpy as np

    from dmft.io import load
    assert man["partial"] == "partial.npz" and "partial.npz" in man["written"], man
    assert f"are in {out / 'partial.npz'} (their step counts in saved_steps)" in err, err
    arrays, meta = load(str(out / "partial"))
    assert arrays["saved_steps"][0] == 0 and arrays["train_loss"].shape == arrays["saved_steps"].shape
    assert np.all(np.isfinite(arrays["train_loss"])) and meta["extra"]["step"] > arrays["saved_steps"][-1]


@pytest.mark.parametrize("failing", ["dmft", "lazy"])
def test_a_failing_point_loses_none_of_the_points_before_it(tmp_path, capsys, monkeypatch, failing):
    """A sweep whose second gamma0 diverges keeps what was done before it on disk (it was written
    only after the whole sweep), recorded in run.json and read back verified: the lazy limits come
    first (validation.lazy_to_rich), so a DMFT failing at the second gamma0 keeps both lazy limits
    and the first DMFT, and a lazy limit failing there keeps the first lazy limit."""
    import json

    import numpy as np

    import dmft
    from dmft.errors import DivergenceError

    real = dmft.solve

    def spy(model, *args, **kwargs):
        if float(model.gamma0) == 2.0 and (kwargs.get("method") == "lazy") == (failing == "lazy"):
            raise DivergenceError("forward: non-finite output at step 3 (made up by the test)", step=3)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(dmft, "solve", spy)
    out = tmp_path / "s"
    code, err = _run(_solve_argv(out, "--gamma0", "1", "2"), capsys)
    where = "theory" if failing == "dmft" else "lazy limit"
    assert code == cli.EXIT_NUMERIC and f"{where} at gamma0 = 2: forward: non-finite" in err, err
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == "failed"
    kept = ["lazy_gamma0_1", "lazy_gamma0_2", "dmft_gamma0_1"] if failing == "dmft" else ["lazy_gamma0_1"]
    for name in kept:
        assert f"theory/{name}.npz" in man["written"], man["written"]
        sol = dmft.Solution.load(str(out / "theory" / name))
        assert sol.train_loss.shape == (3,) and np.all(np.isfinite(sol.train_loss))
    assert sorted(p.name for p in (out / "theory").glob("*.npz")) == sorted(f"{n}.npz" for n in kept)


def test_an_interrupted_simulation_keeps_the_ensembles_it_finished(tmp_path, capsys, monkeypatch):
    """dmft simulate saves each gamma0's ensembles as they are done: Ctrl-C during the second
    gamma0 keeps the first one's (they were written only after every gamma0), recorded in run.json."""
    import json

    import networks

    real = networks.train

    def spy(model, *args, **kwargs):
        if float(model.gamma0) == 2.0:
            raise KeyboardInterrupt
        return real(model, *args, **kwargs)

    monkeypatch.setattr(networks, "train", spy)
    out = tmp_path / "m"
    code, err = _run(["simulate", "--out", str(out), "--no-progress", "--gamma0", "1", "2"] + JOBS["simulate"],
                     capsys)
    assert code == 130, err
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == "interrupted" and "networks/gamma0_1_N4.npz" in man["written"], man
    assert networks.Run.load(str(out / "networks" / "gamma0_1_N4")).train_loss.shape[0] == 2



@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job=st.sampled_from(["solve", "simulate", "validate"]), data=st.data())   # (capsys read before each)
def test_a_set_in_a_section_the_job_never_reads_is_said(job, data, capsys):
    """`dmft solve --set simulate.seeds=3` (or `dmft simulate --set theory.samples=128`) was
    accepted without a word and changed nothing: a note names the key and the jobs that read it;
    a key the job reads gets none."""
    from experiments.output import UNREAD_SECTIONS

    sec = data.draw(st.sampled_from(sorted(jobs.SCHEMA)))
    key = data.draw(st.sampled_from(sorted(jobs.SCHEMA[sec])))
    capsys.readouterr()
    cli._say_unread(job, [f"{sec}.{key}=1"])
    err = capsys.readouterr().err
    if sec in UNREAD_SECTIONS.get(job, ()):
        assert f"dmft {job}: note: {sec}.{key} changes nothing here: dmft {job} does not read [{sec}]" in err, err
    else:
        assert err == "", err


def test_report_figures_are_named_relative_to_the_results_directory(tmp_path, monkeypatch):
    """report.json's figure paths are relative to the results directory, whether the job got an
    absolute --out or a relative one (the jobs build out/figures/NAME, relative to the working
    directory when out is: those were kept as they were, naming the file from the wrong place)."""
    from experiments.output import figures_relative

    monkeypatch.chdir(tmp_path)
    for out in ("results/dln", str(tmp_path / "results" / "dln")):
        rep = {"figures": {"a": os.path.join(out, "figures", "a.png")}, "n": 3,
               "studies": [{"figure": os.path.join(out, "figures", "b.png"), "figures": {}}]}
        assert figures_relative(rep, out) == {"figures": {"a": "figures/a.png"}, "n": 3,
                                              "studies": [{"figure": "figures/b.png", "figures": {}}]}


def test_the_code_digest_reads_every_byte_of_the_sources(tmp_path, monkeypatch):
    """code_digest over a copy of the four packages equals the real one; one byte changed in one
    source file (its length kept) changes it (a digest of the paths and lengths alone passed every
    test: an edit of a solver that keeps the file's length would pass old results as current)."""
    import shutil

    import dmft
    import experiments
    import networks
    import validation
    from experiments.output import code_digest

    digest = code_digest.__wrapped__                 # (the cached one keeps the process's first answer)
    real = digest()
    assert real == code_digest()
    for pkg in (dmft, networks, validation, experiments):
        src = os.path.dirname(os.path.abspath(pkg.__file__))
        dst = tmp_path / os.path.basename(src)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        monkeypatch.setattr(pkg, "__file__", str(dst / "__init__.py"))
    assert digest() == real
    path = tmp_path / "dmft" / "solve.py"
    body = bytearray(path.read_bytes())
    i = body.index(b"#")
    body[i + 1] = ord("x") if body[i + 1] != ord("x") else ord("y")
    path.write_bytes(bytes(body))
    assert digest() != real


@pytest.mark.parametrize("job, section, key, value", [
    ("simulate", "task", "P", "20"), ("simulate", "model", "activation", "'tanh'"),
    ("simulate", "train", "eta0", "0.3"), ("simulate", "simulate", "seed", "7"),
    ("solve", "task", "P", "20"), ("solve", "theory", "seed", "7"), ("solve", "check", "agreement_sigma", "4.0")])
def test_a_changed_setting_the_job_reads_is_another_run_not_already_complete(job, section, key, value,
                                                                              tmp_path, capsys):
    """A finished run's directory, asked again with one setting the job reads changed, is another
    run there (exit 3; a [check] change of solve is re-checked instead, exit 0 with its results
    kept), never "already complete" with the old results (with [task] among simulate's unread
    sections, a changed task kept the stale networks: a mutation audit)."""
    out = tmp_path / "r"
    # (solve: the sizes of _solve_argv, which the file's other solves compile)
    argv = (_solve_argv(out, "--gamma0", "1") if job == "solve"
            else [job, "--out", str(out), "--no-progress"] + JOBS[job])
    assert _run(argv, capsys)[0] == 0
    code, err = _run(argv, capsys)
    assert code == 0 and "already complete" in err, err
    code, err = _run(argv + ["--set", f"{section}.{key}={value}"], capsys)
    if section == "check":
        assert code == 0 and "already complete" not in err and "re-check" in err.lower(), err
    else:
        assert code == 3 and "already complete" not in err, (code, err)


@pytest.mark.parametrize("job", ["dln", "scan"])
def test_x32_runs_deep_linear_networks_in_float32_unless_float64_is_written(job, capsys, monkeypatch, tmp_path):
    """--x32 refused `dmft dln` and deep-linear scans with their defaults ("train.dtype =
    'float64' with --x32"): the networks' dtype now follows --x32 where nobody wrote one; a
    float64 the user wrote is still refused under --x32, and --x64 keeps the default."""
    from dmft.errors import ConfigError
    from experiments import dln, scan

    if job == "dln":
        path, load = None, dln.load_config
    else:
        path, load = os.path.join(os.path.dirname(__file__), "..", "scripts", "configs", "dln_scan.toml"), \
            scan.load_config
    assert cli._load_for_precision(load, path, [], False)["train"]["dtype"] == "float32"
    assert cli._load_for_precision(load, path, [], True)["train"]["dtype"] == "float64"
    written = cli._load_for_precision(load, path, ["train.dtype='float64'"], False)
    assert written["train"]["dtype"] == "float64"
    with pytest.raises(ConfigError, match="train.dtype = .float64. with --x32"):
        cli._check_network_dtype(written, False)
    two_layer = cli._load_for_precision(scan.load_config, os.path.join(os.path.dirname(__file__), "..", "scripts",
                                                                       "configs", "scan.toml"), [], False)
    # and the command itself loads through it: what the job is handed under --x32
    seen = {}

    class Stop(Exception):
        pass

    def caught(cfg, *a, **k):
        seen["dtype"] = cfg["train"]["dtype"]
        raise Stop
    monkeypatch.setattr(dln if job == "dln" else scan, "build" if job == "dln" else "run", caught)
    argv = [job, "--x32", "--out", str(tmp_path / "o"), "--no-progress"] + ([] if job == "dln" else ["--config", path])
    try:
        with pytest.raises(Stop):
            cli.main(argv)
    finally:
        import jax
        jax.config.update("jax_enable_x64", True)           # (the entry point set float32)
    assert seen == {"dtype": "float32"}
    assert "dtype" not in two_layer.get("train", {})


def test_the_command_prints_a_warning_on_one_line(monkeypatch):
    """The command's warnings printed the script's path and line and `sys.exit(console())`
    around the message: they print as "dmft: warning: MESSAGE"."""
    import warnings

    monkeypatch.setattr(cli, "main", lambda: 0)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)     # (restored after)
    with pytest.raises(SystemExit):
        cli.console()
    text = warnings.formatwarning("networks.train: 1 of 2 seeds diverged", UserWarning, "/x/bin/dmft", 8,
                                  "sys.exit(console())")
    assert text == "dmft: warning: networks.train: 1 of 2 seeds diverged\n"


def test_the_command_prints_each_warning_text_once(monkeypatch, capsys):
    """A dln study at a large step printed the same law warning up to five times (from each call
    site of boltzmann_temperature): the command prints each text once a run; another text, or the
    same words about another point, still prints."""
    import sys
    import warnings

    from dmft.errors import warn

    def job():               # (one call site each: a site's repeats were already printed once)
        warn("law: h = 0.643")
        warn("law: h = 0.643")
        warn("sde: h = 0.643")
        warn("law: h = 0.643")
        warn("law: h = 0.7")
        return 0

    monkeypatch.setattr(cli, "main", job)
    monkeypatch.setattr(sys, "warnoptions", [])
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)     # (restored after)
    with warnings.catch_warnings(), pytest.raises(SystemExit):      # (filters and showwarning restored after)
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line))     # (pytest records them)
        cli.console()
    assert capsys.readouterr().err.splitlines() == [
        "dmft: warning: law: h = 0.643", "dmft: warning: sde: h = 0.643", "dmft: warning: law: h = 0.7"]


@settings(max_examples=12, deadline=None)
@given(which=st.sampled_from(["P", "P_test"]), log_size=st.floats(6.5, 7.5), job=st.sampled_from(["solve", "validate"]))
def test_a_data_size_no_solve_could_hold_is_refused_before_the_data_are_made(which, log_size, job):
    """A task whose kernels alone would overflow theory.max_memory_gb is refused from its sizes (exit
    2, naming the keys), before any data are generated: task.P_test = 1e8 made 16 GB of data for 55 s
    before the solve's plan refused it (a CLI audit)."""
    import contextlib
    import io
    import pathlib
    import tempfile
    from unittest import mock

    import dmft

    size = int(10 ** log_size)
    err = io.StringIO()
    made = mock.Mock(side_effect=AssertionError("the data were generated"))
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(err), \
            mock.patch.object(dmft.tasks, "single_index", made):
        out = pathlib.Path(tmp) / "o"
        code = cli.main([job, "--out", str(out), "--no-progress", "--set", "task.D=8", "--set", f"task.{which}={size}"])
        assert not out.exists()
    assert code == cli.EXIT_CONFIG, err.getvalue()
    assert "task.P, task.P_test, task.D: a solve on" in err.getvalue() and "theory.max_memory_gb" in err.getvalue()
    assert not made.called


@pytest.mark.parametrize("address", ["nohostcolon", "localhost:abc", ":1234", "host:0", "host:70000", "host:"])
def test_a_malformed_coordinator_is_exit_2_before_the_runtime_starts(address, tmp_path, capsys):
    """--coordinator without HOST:PORT raised IndexError from inside jax.distributed (a traceback,
    exit 1), and 'localhost:abc' printed the gRPC library's own log line first."""
    code, err = _run(_argv("scan", tmp_path, tmp_path / "o") + ["--coordinator", address, "--num-processes", "1",
                                                                  "--process-id", "0"], capsys)
    assert code == cli.EXIT_CONFIG and "--coordinator: expected HOST:PORT" in err, err


def test_a_command_line_that_says_a_thing_twice_or_says_nothing_is_refused(tmp_path, capsys):
    """Found by a CLI audit, each decided without a word: a --set value carrying a second TOML table
    (dropped), two --config files (the first dropped) and --out '' (the default directory written).
    (A key given again by a later --set takes the later value, as the help says.)"""
    argv = ["solve", "--no-progress", "--out", str(tmp_path / "o")]
    code, err = _run(argv + ["--set", "train.steps=20\n[foo]"], capsys)
    assert code == cli.EXIT_CONFIG and "expected one value after '=', got more TOML (['foo'])" in err, err
    for extra, said in ((["--config", "a.toml", "--config", "b.toml"], "--config: given twice"),
                        (["--out", ""], "argument --out: an empty path")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["solve", "--no-progress"] + extra)
        assert exit_.value.code == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_check_settings_that_nothing_reads_or_that_cannot_pass_are_refused():
    """check.node_bias_rel with theory.node_check = false was stored and never read, and
    check.spread_slope_tol = 0 (a fitted slope is never exact) was a check that cannot pass
    (a CLI audit)."""
    from dmft.errors import ConfigError

    with pytest.raises(ConfigError, match="^check.node_bias_rel: read only by the node bias check"):
        jobs.load_config(None, ["check.node_bias_rel=0.7", "theory.node_check=false"])
    jobs.load_config(None, ["check.node_bias_rel=0.7", "theory.node_check=true"])
    with pytest.raises(ConfigError, match="spread_slope_tol"):
        jobs.load_config(None, ["check.spread_slope_tol=0"])


@pytest.mark.parametrize("sets, said", [
    (["train.weight_decay=1e6"], "train.weight_decay, train.eta0: weight_decay: eta0 * weight_decay"),
    (["train.steps=1e30"], "train.steps: must be <= 2147483647"),
])
def test_train_settings_are_named_by_their_keys(sets, said):
    """train.weight_decay past the step's stability was named 'weight_decay:' (the library's
    argument), and train.steps = 1e30 'not a multiple of train.save_every' (a CLI audit)."""
    from dmft.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        jobs.load_config(None, sets)
    assert str(err.value).startswith(said), str(err.value)


def test_a_key_set_twice_in_an_unread_section_gets_one_note(capsys):
    """`dmft simulate --set theory.samples=1024 --set theory.samples=1000` printed the same note
    twice (a walkthrough); one note a key, each key named."""
    capsys.readouterr()
    cli._say_unread("simulate", ["theory.samples=1024", "theory.samples=1000", "theory.replicas=4"])
    err = capsys.readouterr().err
    assert err.count("theory.samples changes nothing here") == 1, err
    assert err.count("theory.replicas changes nothing here") == 1, err


@pytest.mark.parametrize("how", ["extension", "missing"])
def test_a_ctrl_c_while_the_command_starts_is_an_interruption(how):
    """A Ctrl-C while the command's libraries were imported (before main() runs: 0.3-3.7 s on a
    loaded machine) ended with Python's traceback and the signal's status (-2), or, landing in a C
    extension's initialization (numpy's, jaxlib's), exit 1 and "ImportError: ... failed to import"
    (3 of 140 random Ctrl-Cs): the entry point the package declares holds it until they have
    loaded (nothing raised in them) and ends the command as any interruption, "interrupted" and
    exit 130. A library truly missing still shows its ImportError."""
    import subprocess
    import tomllib

    with open(pathlib.Path(__file__).parents[1] / "pyproject.toml", "rb") as f:
        entry = tomllib.load(f)["project"]["scripts"]["dmft"]
    module, _, function = entry.partition(":")
    act = {"extension": "extension()",
           "missing": "raise ImportError('No module named jax')"}[how]
    script = f"""
import importlib, os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)       # (a background parent may ignore it)
def extension():                                 # a C extension's initialization, interrupted
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", file=sys.stderr)    # (printed by the extension)
        stopped = True
    else:
        stopped = False
    if stopped:
        raise ImportError("Encountered an error while initializing the extension.")
class CtrlC:                                                    # pressed as JAX is imported
    def find_spec(self, name, path=None, target=None):
        if name == "jax":
            {act}
sys.meta_path.insert(0, CtrlC())
sys.argv = ["dmft", "solve"]
getattr(importlib.import_module({module!r}), {function!r})()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=pathlib.Path(__file__).parents[1])
    if how == "missing":
        assert done.returncode == 1 and done.stderr.endswith("ImportError: No module named jax\n"), done.stderr
    else:
        assert (done.returncode, done.stderr) == (130, "dmft: interrupted while starting (nothing written)\n")


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_while_the_interpreter_exits_after_a_complete_run_keeps_its_status(signame):
    """A Ctrl-C once the run had ended, while the interpreter exits (its atexit callbacks, JAX's
    runtime torn down), printed "Exception ignored ... KeyboardInterrupt"; a SIGTERM there made a
    complete run's status -15. It ends the process at once with the run's own status (1 here: a
    check failed), what it printed flushed. The command's module is a stand-in (nothing imported,
    no job run)."""
    import subprocess

    script = f"""
import atexit, os, signal, sys, time, types
signal.signal(signal.SIGINT, signal.default_int_handler)       # (a background parent may ignore it)
def exiting():
    print("exiting", end="")                                    # (buffered: flushed by the handler)
    os.kill(os.getpid(), signal.{signame})
    time.sleep(2)
    print("not reached", file=sys.stderr)
def console():
    atexit.register(exiting)
    print("run complete")
    sys.exit(1)
sys.modules["experiments.cli"] = types.SimpleNamespace(console=console)
import experiments
experiments.console()
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}     # (set, it hid a missing flush)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=pathlib.Path(__file__).parents[1], env=env)
    assert (done.returncode, done.stdout, done.stderr) == (1, "run complete\nexiting", ""), done


@pytest.mark.parametrize("how", ["chained", "received"])
def test_a_ctrl_c_while_a_job_imports_a_library_is_an_interruption(how, tmp_path, capsys, monkeypatch):
    """Within a job (its libraries imported as needed: matplotlib's, scipy's C extensions) such a
    Ctrl-C (or SIGTERM) came out as an ImportError: run.json "failed" with it, and a traceback. It
    is an interruption: run.json "interrupted" with its signal, exit 128 + its number."""
    import signal

    import experiments
    from experiments import report

    def load(*args, **kw):
        if how == "chained":
            raise ImportError("matplotlib's ft2font failed to import") from KeyboardInterrupt()
        try:
            cli._terminate(signal.SIGTERM, None)          # (its handler, as the signal would call it)
        except KeyboardInterrupt:
            pass                                           # (printed by the extension)
        raise ImportError("matplotlib's ft2font failed to import")

    monkeypatch.setattr(report, "write_report", load)
    code, err = _run(_solve_argv(tmp_path / "out", "--gamma0", "1", "--set", "theory.method=lazy"), capsys)
    experiments.RECEIVED.clear()
    man = json.loads((tmp_path / "out" / "run.json").read_text())
    want = (130, "SIGINT") if how == "chained" else (143, "SIGTERM")
    assert (code, man["status"], man["signal"]) == (want[0], "interrupted", want[1]) and "interrupted" in err, err


def test_a_ctrl_c_while_the_arguments_are_read_is_an_interruption(monkeypatch, capsys):
    """One landing in main() before the job's own handler (the arguments' parsing) was a traceback
    too."""
    def parser():
        raise KeyboardInterrupt

    def leave(code):
        raise SystemExit(code)

    monkeypatch.setattr(cli, "_parser", parser)
    monkeypatch.setattr(cli.os, "_exit", leave)
    with pytest.raises(SystemExit) as left:
        try:
            cli.console()
        except KeyboardInterrupt:
            pytest.fail("the Ctrl-C left console() (a traceback)")
    assert left.value.code == 130 and capsys.readouterr().err == "dmft: interrupted\n"


def test_a_ctrl_c_redelivered_while_its_timer_starts_is_not_lost(monkeypatch):
    """The hook's timer can fire (on a loaded machine) while start() still waits for its thread:
    that delivery raises in the hook, where it is lost, so the hook schedules one more."""
    started = []

    class Timer:
        def __init__(self, delay, fn, args):
            self.args = args

        def start(self):
            started.append(self.args)
            if len(started) == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(cli.threading, "Timer", Timer)
    hook = cli._redeliver(lambda u: pytest.fail("passed on"))
    try:
        hook(type("U", (), {"exc_value": KeyboardInterrupt()})())
    except KeyboardInterrupt:
        pytest.fail("the redelivered Ctrl-C escaped the hook: lost")
    assert len(started) == 2


def test_a_run_json_with_a_byte_that_is_not_utf8_is_damaged_not_a_configuration_error(tmp_path, capsys):
    """A byte flipped in run.json that leaves it not UTF-8 is a damaged run.json, as a cut one is:
    exit 3 naming it, and --force writes over it (it was exit 2, "configuration error: 'utf-8'
    codec can't decode ...", with --force too)."""
    out = tmp_path / "out"
    assert _run(_solve_argv(out, "--gamma0", "1", "--set", "theory.method=lazy"), capsys)[0] == 0
    blob = bytearray((out / "run.json").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (out / "run.json").write_bytes(bytes(blob))
    code, err = _run(_solve_argv(out, "--gamma0", "1", "--set", "theory.method=lazy"), capsys)
    assert code == cli.EXIT_OUTPUT and "run.json is unreadable (damaged" in err, err
    assert _run(_solve_argv(out, "--gamma0", "1", "--set", "theory.method=lazy", "--force"), capsys)[0] == 0


def test_a_full_disk_at_config_toml_marks_the_run_failed(tmp_path, capsys, monkeypatch):
    """ENOSPC writing config.toml (after run.json said "running"): run.json says "failed" with the
    error (it stayed "running", and the rerun said the run was killed); the rerun completes."""
    import errno

    from experiments import output

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out, argv = tmp_path / "out", _solve_argv(tmp_path / "out", "--gamma0", "1", "--set", "theory.method=lazy")
    real = output.to_toml
    monkeypatch.setattr(output, "to_toml", full)
    code, err = _run(argv, capsys)
    assert code == cli.EXIT_OUTPUT and str(out) in err and "No space left" in err, err
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == "failed" and "No space left" in man["error"], man
    monkeypatch.setattr(output, "to_toml", real)
    code, err = _run(argv, capsys)
    assert code == cli.EXIT_OK and "killed" not in err, err


def test_any_failure_writing_config_toml_marks_the_run_failed(tmp_path, capsys, monkeypatch):
    """Not only a write error: a config.toml that cannot be made (a value TOML cannot hold, a
    locale that cannot spell it) left run.json "running" too, a run killed to the next run."""
    from experiments import output

    def bad(*_a, **_k):
        raise ValueError("a value TOML cannot hold")

    out = tmp_path / "out"
    monkeypatch.setattr(output, "to_toml", bad)
    code, err = _run(_solve_argv(out, "--gamma0", "1", "--set", "theory.method=lazy"), capsys)
    man = json.loads((out / "run.json").read_text())
    assert code != cli.EXIT_OK and man["status"] == "failed" and "TOML cannot hold" in man["error"], (code, man)


def test_a_full_disk_in_a_write_names_the_results_directory(tmp_path, capsys, monkeypatch):
    """ENOSPC raised by a write (no file name in the error: a flush, a close) while the report is
    written: one line naming the results directory ("file error: [Errno 28] No space left on
    device" named nothing), recorded in run.json."""
    import errno

    from experiments import report

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "out"
    monkeypatch.setattr(report, "write_report", full)
    code, err = _run(_solve_argv(out, "--gamma0", "1", "--set", "theory.method=lazy"), capsys)
    assert code == cli.EXIT_OUTPUT and f"{out}: cannot write the results (No space left" in err, err
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == "failed" and str(out) in man["error"], man


def test_an_io_error_in_a_write_names_the_results_directory():
    """EIO raised by a write that names no file (the fsync of .dmft-results on a failing disk) said
    "dmft solve: file error: [Errno 5] Input/output error", nothing of where; now, as a full
    disk's, one line naming the results directory."""
    import errno

    from experiments import output

    err = output._named("/r/out", OSError(errno.EIO, os.strerror(errno.EIO)))
    assert isinstance(err, output.OutputError) and str(err) == "/r/out: cannot write the results (Input/output error)"
    assert cli.exit_code(err)[0] == cli.EXIT_OUTPUT


@pytest.mark.parametrize("job", ["grok", "dln"])
def test_a_final_run_json_that_cannot_be_written_marks_the_run_failed(job, tmp_path, capsys, monkeypatch):
    """grok and dln wrote their final run.json ("complete") outside the block that records a
    failure: a full disk there left run.json "running", and the rerun said the run had been
    killed. Now, as solve's, it says "failed" with the error (the job itself stubbed: 0.1 s)."""
    import errno

    from experiments import dln, grok, output

    real = output.write_manifest

    def write_manifest(out, job_, cfg, status, extra=None):
        if status == "complete":
            raise output.OutputError(f"{out}: cannot write run.json ({os.strerror(errno.ENOSPC)})")
        return real(out, job_, cfg, status, extra)

    res = {"report": {"wall_s": 0.0, "checks": []}, "files": {"report": ["r"], "figures": {}}, "plot_errors": {}}
    monkeypatch.setattr(grok if job == "grok" else dln, "run", lambda *a, **k: res)
    monkeypatch.setattr(output, "write_manifest", write_manifest)
    out = tmp_path / "o"
    code, err = _run(_argv(job, tmp_path, out), capsys)
    assert code == cli.EXIT_OUTPUT and f"{out}: cannot write run.json (No space left" in err, err
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
