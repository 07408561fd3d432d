"""A rerun of the same solve into the directory of a run that was interrupted or failed reuses the
results that run saved and recorded (each file's SHA-256 verified), computes only the rest, and
ends with the files of a run never interrupted; a changed saved file, and a failed point's saves,
are computed again; --force computes everything."""

import json
import os

import numpy as np
import pytest

import dmft
from dmft.errors import DivergenceError
from experiments import jobs

# the lazy method (closed form: milliseconds a solve), 4 full-batch steps, three gamma0 values
SOLVE = ["task.D=8", "task.P=32", "task.P_test=8", "train.steps=4", "train.save_every=1", "theory.method=lazy",
         "sweep.gamma0=[0.1, 1.0, 0.5]"]

REAL_SOLVE = dmft.solve


def _counting(monkeypatch, fault=None) -> list:
    """dmft.solve recording each call as (gamma0, kind) (kind: "lazy" for a lazy limit, "dmft" for the
    sweep's DMFT, here also the lazy method; "split" for a node check's) in the list returned; `fault`
    (gamma0, kind) -> an exception raised in place of that call, or None."""
    real, calls = REAL_SOLVE, []

    def solve(model, data, *args, **kw):
        kind = "split" if kw.get("node_split") else "dmft" if "key" in kw else "lazy"
        calls.append((model.gamma0, kind))
        err = fault(model.gamma0, kind) if fault else None
        if err is not None:
            raise err
        return real(model, data, *args, **kw)

    monkeypatch.setattr(dmft, "solve", solve)
    return calls


def _tree(out) -> dict:
    return {os.path.relpath(os.path.join(d, f), out): os.path.join(d, f)
            for d, _, files in os.walk(out) for f in files}


def _assert_same_results(a, b) -> None:
    """The same files (the markers aside); each .npz's arrays equal bit for bit, each figure the same bytes."""
    ta, tb = _tree(a), _tree(b)
    assert {k for k in ta if not k.startswith(".")} == {k for k in tb if not k.startswith(".")}
    npz = [k for k in ta if k.endswith(".npz")]
    assert len(npz) == 6, sorted(ta)
    for rel in npz:
        x, y = np.load(ta[rel]), np.load(tb[rel])
        assert sorted(x.files) == sorted(y.files), rel
        for name in x.files:
            assert x[name].dtype == y[name].dtype and x[name].tobytes() == y[name].tobytes(), (rel, name)
    for rel in (k for k in ta if k.endswith(".png")):
        assert open(ta[rel], "rb").read() == open(tb[rel], "rb").read(), rel
    ma, mb = (json.loads(open(t["run.json"]).read()) for t in (ta, tb))
    assert mb["status"] == "complete" and mb["checks"] == ma["checks"] and mb["files"] == ma["files"]
    assert {k: v for k, v in mb["digests"].items() if k.endswith(".npz")} == \
        {k: v for k, v in ma["digests"].items() if k.endswith(".npz")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The solve run once, never interrupted."""
    out = tmp_path_factory.mktemp("straight") / "out"
    jobs.run_job("solve", jobs.load_config(None, SOLVE), str(out), log=lambda *_: None)
    return out


def test_an_interrupted_run_resumes_from_its_verified_results(straight, tmp_path, monkeypatch):
    # Ctrl-C during the DMFT at gamma0 = 1: the three lazy limits and the DMFT at 0.1 were saved
    cfg, out, said = jobs.load_config(None, SOLVE), tmp_path / "out", []
    _counting(monkeypatch, lambda g, kind: KeyboardInterrupt() if (g, kind) == (1.0, "dmft") else None)
    with pytest.raises(KeyboardInterrupt):
        jobs.run_job("solve", cfg, str(out), log=said.append)
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    calls = _counting(monkeypatch)
    jobs.run_job("solve", cfg, str(out), log=said.append)
    assert calls == [(1.0, "dmft"), (0.5, "dmft")]          # (before: all six solves again)
    assert [s for s in said if "resuming" in s] == [f"{out}: resuming: 4 of 6 results reused (verified), the "
                                                    "rest computed"]
    assert not [s for s in said if "did not write" in s], said           # (they are its results)
    _assert_same_results(straight, out)
    # run.json names the results taken from the killed run (the three lazy limits, the DMFT at 0.1)
    reused = json.loads((out / "run.json").read_text())["reused"]
    assert reused == sorted(f"theory/{kind}_gamma0_{g}.{ext}" for kind, gs in (("lazy", ("0.1", "0.5", "1")),
                                                                              ("dmft", ("0.1",)))
                            for g in gs for ext in ("json", "npz")), reused
    assert "reused" not in json.loads((straight / "run.json").read_text())
    # complete now: a rerun computes nothing; --force computes everything
    calls.clear()
    assert jobs.run_job("solve", cfg, str(out), log=said.append)["status"] == "already complete" and not calls
    jobs.run_job("solve", cfg, str(out), force=True, log=said.append)
    assert len(calls) == 6 and "reused" not in json.loads((out / "run.json").read_text())
    _assert_same_results(straight, out)


def test_a_changed_saved_result_and_a_failed_points_saves_are_computed_again(straight, tmp_path, monkeypatch):
    # the DMFT at gamma0 = 1 diverges (exit 4: the sweep goes on, its saves kept as ..._failed.npz)
    cfg, out = jobs.load_config(None, SOLVE), tmp_path / "out"
    boom = DivergenceError("lazy: train_loss is not finite at t = 3 (saved step 3).", step=3, cause="non-finite",
                           partial={"train_loss": np.array([1.0, 0.5])}, saved_steps=[0, 2])
    _counting(monkeypatch, lambda g, kind: boom if (g, kind) == (1.0, "dmft") else None)
    with pytest.raises(DivergenceError):
        jobs.run_job("solve", cfg, str(out), log=lambda *_: None)
    assert (out / "theory" / "dmft_gamma0_1_failed.npz").exists()
    # a saved result changed since it was written (same size, one array's values): not reused
    path = out / "theory" / "dmft_gamma0_0.5.npz"
    with np.load(path) as z:
        arrays = dict(z)
    arrays["train_loss"] = arrays["train_loss"] * 2
    np.savez(path, **arrays)
    # and the results record's line for the lazy limit at 0.1 damaged (a digit of its digest): named as such
    record = (out / ".dmft-results").read_text().splitlines(keepends=True)
    [k] = [i for i, line in enumerate(record) if line.split(" ")[1] == "theory/lazy_gamma0_0.1.npz"]
    record[k] = ("1" if record[k][0] != "1" else "2") + record[k][1:]
    (out / ".dmft-results").write_text("".join(record))
    calls, said = _counting(monkeypatch), []
    jobs.run_job("solve", cfg, str(out), log=said.append)
    assert sorted(calls) == [(0.1, "lazy"), (0.5, "dmft"), (1.0, "dmft")], calls
    [changed] = [s for s in said if "not reused" in s]
    assert "theory/dmft_gamma0_0.5.npz" in changed and "lazy" not in changed and "\n" not in changed, said
    assert f"{out}: 1 line(s) of the previous run's results record (.dmft-results) damaged: the results they " \
           "named are computed again" in said, said
    assert f"{out}: resuming: 3 of 6 results reused (verified), the rest computed" in said, said
    assert not (out / "theory" / "dmft_gamma0_1_failed.npz").exists()
    _assert_same_results(straight, out)
    reused = json.loads((out / "run.json").read_text())["reused"]     # (not the changed result)
    assert len(reused) == 6 and not any("dmft_gamma0_0.5" in f or "dmft_gamma0_1" in f for f in reused), reused


def test_a_simulate_gamma0_with_some_widths_saved_is_trained_again_and_counted_so(tmp_path, monkeypatch):
    """`dmft simulate` trains a gamma0's widths together (one key): killed between two widths'
    saves, the rerun trains that gamma0 again, and its count says so (it counted the width kept)."""
    from experiments import report

    cfg = jobs.load_config(None, ["task.D=4", "task.P=8", "task.P_test=4", "train.steps=2", "train.save_every=1",
                                  "simulate.widths=[4, 8]", "simulate.seeds=2", "sweep.gamma0=[0.5]"])
    out, real, saved = tmp_path / "out", report.write_result, []

    def write_result(out_, kind, g, w, result):
        if saved:
            raise KeyboardInterrupt
        saved.append(w)
        return real(out_, kind, g, w, result)

    monkeypatch.setattr(report, "write_result", write_result)
    with pytest.raises(KeyboardInterrupt):
        jobs.run_job("simulate", cfg, str(out), log=lambda *_: None)
    monkeypatch.setattr(report, "write_result", real)
    assert saved == [4] and (out / "networks").exists()
    said = []
    jobs.run_job("simulate", cfg, str(out), log=said.append)
    assert f"{out}: resuming: 0 of 2 results reused (verified), the rest computed" in said, said


def test_a_run_left_under_other_library_versions_is_computed_again_not_resumed(straight, tmp_path, monkeypatch):
    """An interrupted run rerun under another JAX: none of its results is reused (a resumed run would
    mix two libraries' numbers), and the message says which version moved."""
    from experiments import output

    cfg, out = jobs.load_config(None, SOLVE), tmp_path / "out"
    _counting(monkeypatch, lambda g, kind: KeyboardInterrupt() if (g, kind) == (1.0, "dmft") else None)
    with pytest.raises(KeyboardInterrupt):
        jobs.run_job("solve", cfg, str(out), log=lambda *_: None)
    real = output.environment
    monkeypatch.setattr(output, "environment", lambda: {**real(), "jax": "0.0.1"})
    calls, said = _counting(monkeypatch), []
    jobs.run_job("solve", cfg, str(out), log=said.append)
    assert len(calls) == 6 and not [s for s in said if "resuming:" in s], (calls, said)
    [moved] = [s for s in said if "libraries differ" in s]
    assert f"jax {real()['jax']} -> 0.0.1" in moved, moved
    _assert_same_results(straight, out)
    # complete (under "0.0.1"), rerun under the real JAX: its numbers stand, and it says they came from
    # another JAX (it said nothing)
    monkeypatch.setattr(output, "environment", real)
    calls.clear()
    assert jobs.run_job("solve", cfg, str(out), log=said.append)["status"] == "already complete" and not calls
    [other] = [s for s in said if "other library versions" in s]
    assert f"jax 0.0.1 -> {real()['jax']}" in other and "--force" in other, other


def test_a_run_stopped_before_any_result_says_it_is_computed_again(tmp_path, monkeypatch):
    """Ctrl-C in the first solve: the rerun has nothing to reuse and says so (it said nothing: the
    "resuming: K of N" line comes only with results to reuse)."""
    cfg, out = jobs.load_config(None, SOLVE), tmp_path / "out"
    _counting(monkeypatch, lambda g, kind: KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        jobs.run_job("solve", cfg, str(out), log=lambda *_: None)
    from experiments.output import seal

    man = {**json.loads((out / "run.json").read_text()), "status": "running"}    # (as if killed outright)
    (out / "run.json").write_text(json.dumps({**man, "seal": seal(man)}))
    calls, said = _counting(monkeypatch), []
    jobs.run_job("solve", cfg, str(out), log=said.append)
    assert len(calls) == 6 and not [s for s in said if "resuming" in s], (calls, said)
    assert any(s.endswith("was killed before it finished; computing it again") for s in said), said
    assert f"{out}: none of the previous run's results can be reused (none was recorded as complete): " \
           "computing it again" in said, said


def test_an_unfinished_run_rerun_with_other_checks_is_resumed_and_judged_under_them(straight, tmp_path, monkeypatch):
    """Ctrl-C in the DMFT at gamma0 = 1, then the same run with another [check] tolerance: its results
    are the same numbers (the checks only judge them), so it is resumed, not refused as a different
    run (it was, though a complete run's [check] change is re-checked)."""
    cfg, out = jobs.load_config(None, SOLVE), tmp_path / "out"
    _counting(monkeypatch, lambda g, kind: KeyboardInterrupt() if (g, kind) == (1.0, "dmft") else None)
    with pytest.raises(KeyboardInterrupt):
        jobs.run_job("solve", cfg, str(out), log=lambda *_: None)
    calls, said = _counting(monkeypatch), []
    jobs.run_job("solve", jobs.load_config(None, SOLVE + ["check.lazy_rel=0.2"]), str(out), log=said.append)
    assert calls == [(1.0, "dmft"), (0.5, "dmft")], calls
    assert any("differs from this one only in its [check] section (check.lazy_rel" in s for s in said), said
    man, ref = (json.loads((d / "run.json").read_text()) for d in (out, straight))
    assert man["status"] == "complete" and man["config"]["check"]["lazy_rel"] == 0.2
    assert {k: v for k, v in man["digests"].items() if k.endswith(".npz")} == \
        {k: v for k, v in ref["digests"].items() if k.endswith(".npz")}
    # a recheck of it (another tolerance again) keeps its list of the results taken from the killed
    # run (its run.json dropped it)
    calls.clear()
    again = jobs.run_job("solve", jobs.load_config(None, SOLVE + ["check.lazy_rel=0.3"]), str(out), log=said.append)
    assert again["status"] == "rechecked" and not calls
    after = json.loads((out / "run.json").read_text())
    assert after["config"]["check"]["lazy_rel"] == 0.3 and after["reused"] == man["reused"] and len(man["reused"]) == 8


def test_the_results_record_vouches_only_for_whole_unchanged_results_and_a_reuse_reads_both_files(tmp_path,
                                                                                                  monkeypatch):
    """The record (.dmft-results) keeps a result only where its file is as recorded: a missing file is
    one to compute again (not a refusal of the directory), and a line naming a failed point's saves
    or a path out of the directory vouches for nothing, as does a damaged line (counted, to be named:
    a flipped digit of its digest read as the file changed) or a last line a kill cut short; a result is reused only with both its .npz
    and .json, read back only then, and one that does not read back is computed again, said."""
    from dmft.io import sha256
    from experiments import output

    out = tmp_path / "out"
    (out / "theory").mkdir(parents=True)
    files = {"theory/a.npz": b"a", "theory/a.json": b"{}", "theory/gone.npz": b"g", "theory/b_failed.npz": b"f",
             "outside.npz": b"o"}
    for rel, data in files.items():
        (out / rel).write_bytes(data)
    lines = [output._result_line(sha256(out / rel), rel) for rel in files if rel != "outside.npz"]
    lines.append(output._result_line(sha256(out / "outside.npz"), "theory/../outside.npz"))
    (out / "theory" / "c.npz").write_bytes(b"c")
    c_line = output._result_line(sha256(out / "theory" / "c.npz"), "theory/c.npz")
    lines.append(c_line.replace(c_line[5], "0" if c_line[5] != "0" else "1", 1))   # its digest damaged: named
    lines.append(output._result_line(sha256(out / "theory" / "c.npz"), "theory/c.npz")[:-1])   # cut by a kill
    (out / ".dmft-results").write_text("".join(lines))
    (out / "theory" / "gone.npz").unlink()
    good, bad, damaged = output._verified_results(str(out))
    assert set(good) == {"theory/a.npz", "theory/a.json"} and bad == ["theory/gone.npz"], (good, bad)
    assert damaged == 1
    # a result with its .npz alone kept is computed again, never read back (nor said to fail)
    root, loads, said = os.path.realpath(out), [], []
    monkeypatch.setitem(output._RESUMED, root, {"theory/a.npz": good["theory/a.npz"]})
    assert not output.is_resumed(str(out), "theory/a")
    assert output.read_back(str(out), "theory/a", loads.append, said.append) is None and not loads and not said
    monkeypatch.setitem(output._RESUMED, root, good)
    assert output.is_resumed(str(out), "theory/a")
    assert output.read_back(str(out), "theory/a", lambda stem: stem, said.append) == str(out / "theory" / "a")

    def damaged(stem):
        raise ValueError("bad bytes")

    assert output.read_back(str(out), "theory/a", damaged, said.append) is None
    assert said == [f"{out}: theory/a does not read back (ValueError: bad bytes); computing it again"], said


def test_an_unfinished_run_resumed_twice_keeps_its_results_and_forced_or_by_other_code_reuses_none(tmp_path,
                                                                                                  monkeypatch):
    """A resumed run's results record lists the results it reused with those it computed: stopped
    again, the next run resumes from both (and its run.json names the reused). Resuming asks for the
    same run of the same code, unforced: --force over an interrupted run computes every result (its
    [check] section changed or not; the next run reuses only what it wrote), and so does a rerun by
    edited code."""
    from experiments import output

    out = tmp_path / "out"

    def rerun(at, sets=(), **kw):
        """The solve with `sets`, Ctrl-C at the DMFT at gamma0 = `at` (none: to the end): its solves, lines."""
        calls, said = _counting(monkeypatch, lambda g, kind: KeyboardInterrupt() if (g, kind) == (at, "dmft")
                                else None), []
        if at is None:
            jobs.run_job("solve", jobs.load_config(None, SOLVE + list(sets)), str(out), log=said.append, **kw)
        else:
            with pytest.raises(KeyboardInterrupt):
                jobs.run_job("solve", jobs.load_config(None, SOLVE + list(sets)), str(out), log=said.append, **kw)
        return calls, said

    rerun(1.0)
    assert rerun(0.5)[0] == [(1.0, "dmft"), (0.5, "dmft")]
    assert len(json.loads((out / "run.json").read_text())["reused"]) == 8
    calls, said = rerun(0.5)
    assert calls == [(0.5, "dmft")] and f"{out}: resuming: 5 of 6 results reused (verified), the rest computed" in said
    for sets in ((), ["check.lazy_rel=0.2"]):       # (with its [check] section alone changed: not resumed either)
        calls, said = rerun(1.0, sets, force=True)
        assert (1.0, "lazy") in calls and not [s for s in said if "resuming" in s or "can be reused" in s], \
            (calls, said)
    calls, said = rerun(0.5)
    assert calls == [(1.0, "dmft"), (0.5, "dmft")] and not [s for s in said if "not reused" in s], said
    monkeypatch.setattr(output, "code_digest", lambda: "0" * 64)
    calls, said = rerun(None)
    assert len(calls) == 6 and not [s for s in said if "resuming" in s or "can be reused" in s], (calls, said)
    assert "reused" not in json.loads((out / "run.json").read_text())
