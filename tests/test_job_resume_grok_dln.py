"""A rerun of the same `dmft grok` (or `dmft dln`) into the directory of a run that was interrupted
reuses the parts (grok: curves/gamma0_G, diagram_AXIS, ...; dln: runs/) that run saved and
recorded (each file's SHA-256 verified), computes only the rest, and ends with the files of a run
never interrupted: the arrays bit for bit, the same reports but for their timings."""

import json
import os
import time

import numpy as np

from experiments.cli import main

# the grok test's tiny Kumar run: two gamma0, one width of two seeds, no diagram, no decay scan
GROK = ["grok", "--no-progress", "--set", "kumar.D=4", "--set", "kumar.P=12", "--set", "kumar.P_test=20",
        "--steps", "40", "--set", "train.save_every=10", "--gamma0", "1", "2", "--widths", "4", "--seeds", "2",
        "--set", "diagram.axes=[]", "--set", "early_warning.grid='none'", "--set", "decay.weight_decay=[0.0]"]


def _no_figures(makers, directory, **_):
    """draw_figures drawing none (in both runs compared): most of a tiny run's time, and drawn
    from the numbers compared here."""
    return {}, {}


def _tree(out) -> dict:
    return {os.path.relpath(os.path.join(d, f), out).replace(os.sep, "/"): os.path.join(d, f)
            for d, _, files in os.walk(out) for f in files}


def _assert_same_run(a, b, npz: int, timings=("wall_s",)) -> None:
    """The same files (markers aside); each .npz's arrays equal bit for bit (same names, order and
    dtypes); report.json the same less its timings and environment; run.json complete with the
    same verdicts and the same digests but for the reports' (timings) and the JSON beside an .npz
    (its creation time)."""
    ta, tb = _tree(a), _tree(b)
    assert {k for k in ta if not k.startswith(".")} == {k for k in tb if not k.startswith(".")}, sorted(tb)
    arrays = [k for k in ta if k.endswith(".npz")]
    assert len(arrays) == npz, sorted(ta)
    for rel in arrays:
        x, y = np.load(ta[rel]), np.load(tb[rel])
        assert list(x.files) == list(y.files), rel
        for name in x.files:
            assert x[name].dtype == y[name].dtype and x[name].tobytes() == y[name].tobytes(), (rel, name)
    ra, rb = (json.loads(open(t["report.json"]).read()) for t in (ta, tb))
    for r in (ra, rb):
        for k in (*timings, "environment"):
            r.pop(k)
    assert ra == rb
    ma, mb = (json.loads(open(t["run.json"]).read()) for t in (ta, tb))
    assert mb["status"] == "complete" and mb.get("checks") == ma.get("checks")
    same = {k for k in ma["digests"] if not k.startswith("report.") and k[:-5] + ".npz" not in ma["digests"]}
    assert same and {k: ma["digests"][k] for k in same} == {k: mb["digests"][k] for k in same}


def test_an_interrupted_grok_run_resumes_from_its_saved_parts(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the DMFT at the second gamma0, after the first gamma0's part (theory, lazy and
    networks) was saved: the rerun computes the second gamma0 only (before: both again)."""
    import networks
    from experiments.grok import job

    monkeypatch.setattr(job, "draw_figures", _no_figures)
    straight = tmp_path / "straight"
    assert main([*GROK, "--out", str(straight)]) == 0
    real_solve, real_train, calls = job.dmft.solve, networks.train, []

    def solve(model, *args, **kw):
        calls.append(("solve", float(model.gamma0), kw.get("method")))
        if stop and float(model.gamma0) == 2.0:
            raise KeyboardInterrupt
        return real_solve(model, *args, **kw)

    def train(model, *args, **kw):
        calls.append(("train", float(model.gamma0)))
        return real_train(model, *args, **kw)

    monkeypatch.setattr(job.dmft, "solve", solve)
    monkeypatch.setattr(job.networks, "train", train)
    out, stop = tmp_path / "out", True
    assert main([*GROK, "--out", str(out)]) == 130
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert sorted(os.listdir(out / "curves")) == ["gamma0_1.json", "gamma0_1.npz"]
    calls.clear()
    stop = False
    capsys.readouterr()
    assert main([*GROK, "--out", str(out)]) == 0
    assert calls == [("solve", 2.0, "closure"), ("train", 2.0)], calls
    assert f"{out}: resuming: 1 of 2 parts reused (verified), the rest computed" in capsys.readouterr().err
    _assert_same_run(straight, out, npz=1)
    assert json.loads((out / "run.json").read_text())["reused"] == ["curves/gamma0_1.json", "curves/gamma0_1.npz"]


def test_a_grok_run_whose_figures_failed_resumes_from_all_its_parts(tmp_path, monkeypatch, capsys):
    """A figure that fails (exit 5, plot_failed) after every part was saved: the parts stay (in
    run.json's "written") and the rerun computes none again, ending as a straight run (before:
    the parts were removed once curves.npz held them, and the rerun computed both gamma0 again)."""
    import networks
    from experiments import cli, output
    from experiments.grok import job

    monkeypatch.setattr(job, "draw_figures", _no_figures)
    straight = tmp_path / "straight"
    assert main([*GROK, "--out", str(straight)]) == 0
    real_solve, real_train, calls = job.dmft.solve, networks.train, []
    monkeypatch.setattr(job.dmft, "solve", lambda *a, **kw: calls.append("solve") or real_solve(*a, **kw))
    monkeypatch.setattr(job.networks, "train", lambda *a, **kw: calls.append("train") or real_train(*a, **kw))

    def broken(*a, **kw):
        raise RuntimeError("no font")

    # the one figure drawn (by the real draw_figures) fails
    monkeypatch.setattr(job.plots, "grokking_curves", broken)
    monkeypatch.setattr(job, "draw_figures", lambda makers, d, **_: output.draw_figures({"curves": makers["curves"]}, d))
    out = tmp_path / "out"
    assert main([*GROK, "--out", str(out)]) == cli.EXIT_PLOT
    man = json.loads((out / "run.json").read_text())
    assert man["status"] == "plot_failed" and "no font" in man["plot_errors"]["curves"]
    assert [f for f in man["written"] if f.startswith("curves/")] == [
        f"curves/gamma0_{g}.{e}" for g in (1, 2) for e in ("json", "npz")], man["written"]
    monkeypatch.setattr(job, "draw_figures", _no_figures)
    calls.clear()
    capsys.readouterr()
    assert main([*GROK, "--out", str(out)]) == 0
    assert calls == [], calls
    assert f"{out}: resuming: 2 of 2 parts reused (verified), the rest computed" in capsys.readouterr().err
    _assert_same_run(straight, out, npz=1)


def test_a_grok_run_stopped_while_drawing_its_figures_reuses_every_part(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the figures are drawn, every part saved: the parts stay and the rerun computes
    none again (before: they were removed once curves.npz held them, and it computed everything)."""
    from experiments.grok import job

    def stopped(makers, directory, **_):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "draw_figures", stopped)
    out = tmp_path / "out"
    assert main([*GROK, "--out", str(out)]) == 130
    calls = []
    monkeypatch.setattr(job, "draw_figures", _no_figures)
    for mod, name in ((job.dmft, "solve"), (job.networks, "train")):
        monkeypatch.setattr(mod, name, lambda *a, _f=getattr(mod, name), _n=name, **kw: calls.append(_n) or _f(*a, **kw))
    capsys.readouterr()
    assert main([*GROK, "--out", str(out)]) == 0
    assert calls == [], calls
    assert f"{out}: resuming: 2 of 2 parts reused (verified), the rest computed" in capsys.readouterr().err
    assert not os.path.exists(out / "curves") and os.path.isfile(out / "curves.npz")


# the dln test's tiny run (tests/test_recheck.py's, two label noises, no staircase): per label noise
# 4 networks of 4 steps and 8 SDE paths (one program each, of the same shapes for both)
DLN = ["dln", "--no-progress", "--steps", "4", "--set", "train.save_every=2", "--seeds", "4", "--set", "theory.paths=8",
       "--set", "teacher.label_noise=[1.0, 0.5]", "--set", "staircase.seeds=0"]


def test_an_interrupted_dln_run_resumes_from_its_saved_runs(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the second label noise's training, after the first's networks and SDE paths were
    saved (runs/sigma_1/networks, sde): the rerun computes the second only (before: both again)."""
    import networks
    from experiments.dln import job

    monkeypatch.setattr(job, "draw_figures", _no_figures)
    straight = tmp_path / "straight"
    assert main([*DLN, "--out", str(straight)]) == 0
    real_train, real_sde, calls = networks.train, job.dl.mode_sde, []

    def train(model, data, *args, **kw):
        calls.append(("train", data.label_noise))
        if stop and data.label_noise == 0.5:
            raise KeyboardInterrupt
        return real_train(model, data, *args, **kw)

    def mode_sde(model, data, *args, **kw):
        calls.append(("sde", data.label_noise))
        if stop:       # (the interrupted run's SDE takes 0.3 s more: the resumed report counts it)
            time.sleep(0.3)
        return real_sde(model, data, *args, **kw)

    monkeypatch.setattr(job.networks, "train", train)
    monkeypatch.setattr(job.dl, "mode_sde", mode_sde)
    out, stop = tmp_path / "out", True
    assert main([*DLN, "--out", str(out)]) == 130
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert sorted(os.listdir(out / "runs")) == ["sigma_1"]
    assert sorted(os.listdir(out / "runs" / "sigma_1")) == ["networks.json", "networks.npz", "sde.json", "sde.npz"]
    calls.clear()
    stop = False
    capsys.readouterr()
    assert main([*DLN, "--out", str(out)]) == 0
    assert calls == [("train", 0.5), ("sde", 0.5)], calls
    assert f"{out}: resuming: 2 of 4 results reused (verified), the rest computed" in capsys.readouterr().err
    _assert_same_run(straight, out, npz=4, timings=("wall_s", "studies"))
    assert json.loads((out / "run.json").read_text())["reused"] == \
        [f"runs/sigma_1/{f}" for f in ("networks.json", "networks.npz", "sde.json", "sde.npz")]
    a, b = (json.loads((d / "report.json").read_text())["studies"] for d in (straight, out))
    timing = ("networks_s", "sde_s")       # (the networks' time: the interrupted run's, recorded with them)
    assert [{k: v for k, v in s.items() if k not in timing} for s in a] == \
        [{k: v for k, v in s.items() if k not in timing} for s in b]
    # the reused SDE's time is the one it took (before: the time to read it back), and the report's
    # wall time holds it (0.3 s of sleep: a bound that no read-back reaches)
    report = json.loads((out / "report.json").read_text())
    assert b[0]["sde_s"] >= 0.3 and report["wall_s"] >= 0.3, (b[0]["sde_s"], report["wall_s"])


def test_a_grok_diagram_computed_again_for_its_grid_is_not_counted_as_reused(tmp_path, monkeypatch, capsys):
    """A diagram is reused only with the early-warning grid it feeds (the grid reads its measures,
    which the part does not hold): interrupted in the grid, after the diagram's part was saved, the
    rerun computes the diagram again and its count says so (before: "2 of 3", the diagram counted)."""
    from experiments.grok import job

    monkeypatch.setattr(job, "draw_figures", _no_figures)
    real_grid, real_diagram, calls = job.early_warning_grid, job.phase_diagram, []

    def grid(*args, **kw):
        calls.append("grid")
        if stop:
            raise KeyboardInterrupt
        return real_grid(*args, **kw)

    def diagram(*args, **kw):
        calls.append("diagram")
        return real_diagram(*args, **kw)

    monkeypatch.setattr(job, "early_warning_grid", grid)
    monkeypatch.setattr(job, "phase_diagram", diagram)
    args = [*GROK[:GROK.index("--gamma0")], "--gamma0", "1", "--widths", "4", "--seeds", "2",
            "--set", "diagram.axes=['eps']", "--set", "diagram.gamma0=[1.0, 2.0]", "--set", "diagram.eps=[0.1, 0.3]",
            "--set", "diagram.overlay_width=0", "--set", "early_warning.grid='eps'",
            "--set", "decay.weight_decay=[0.0]", "--out", str(tmp_path / "out")]
    stop = True
    assert main(args) == 130
    assert sorted(os.listdir(tmp_path / "out" / "curves")) == ["diagram_eps.json", "diagram_eps.npz",
                                                              "gamma0_1.json", "gamma0_1.npz"]
    stop, calls[:] = False, []
    capsys.readouterr()
    assert main(args) == 0
    assert calls == ["diagram", "grid"], calls
    assert f"{tmp_path / 'out'}: resuming: 1 of 3 parts reused (verified), the rest computed" in capsys.readouterr().err


def test_a_dln_run_interrupted_in_its_sde_keeps_the_networks_it_trained(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the first label noise's SDE: its networks were saved when they were trained (they
    were saved after the SDE, and lost with it), and the rerun trains no network of that study."""
    import networks
    from experiments.dln import job

    monkeypatch.setattr(job, "draw_figures", _no_figures)
    real_train, real_sde, calls = networks.train, job.dl.mode_sde, []

    def train(model, data, *args, **kw):
        calls.append(("train", data.label_noise))
        return real_train(model, data, *args, **kw)

    def mode_sde(model, data, *args, **kw):
        calls.append(("sde", data.label_noise))
        if stop:
            raise KeyboardInterrupt
        return real_sde(model, data, *args, **kw)

    monkeypatch.setattr(job.networks, "train", train)
    monkeypatch.setattr(job.dl, "mode_sde", mode_sde)
    out, stop = tmp_path / "out", True
    assert main([*DLN, "--out", str(out)]) == 130
    assert sorted(os.listdir(out / "runs" / "sigma_1")) == ["networks.json", "networks.npz"]
    calls.clear()
    stop = False
    capsys.readouterr()
    assert main([*DLN, "--out", str(out)]) == 0
    assert calls == [("sde", 1.0), ("train", 0.5), ("sde", 0.5)], calls
    assert f"{out}: resuming: 1 of 4 results reused (verified), the rest computed" in capsys.readouterr().err


def test_a_grok_run_that_cannot_rewrite_its_results_record_keeps_its_parts(tmp_path, monkeypatch):
    """The last write of a complete grok run, its results record (.dmft-results) less the parts
    curves.npz now holds, failing on a full disk: the parts had been removed first, so the rerun
    computed each again, naming it "changed or missing since the previous run wrote" it. Now the
    record is rewritten first: the run fails with its parts on disk and recorded, for a rerun."""
    import builtins
    import errno

    import pytest

    from experiments import output
    from experiments.grok import job

    out, real_open = str(tmp_path), builtins.open
    output._lock(out, create=True)
    output._start_recording(out)
    try:
        parts = job._Parts(out, {"train": {"steps": 1}})
        parts.add("gamma0_1", {"x": np.arange(3.0)})

        def full(path, mode="r", *a, **k):
            if os.path.basename(os.fspath(path)) == output.RESULTS and "w" in mode:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
            return real_open(path, mode, *a, **k)

        monkeypatch.setattr(builtins, "open", full)
        with pytest.raises(OSError):
            parts.remove()
        monkeypatch.undo()
        good, bad, _ = output._verified_results(out)
    finally:
        output.release(out)
    assert sorted(good) == ["curves/gamma0_1.json", "curves/gamma0_1.npz"] and bad == [], (good, bad)
