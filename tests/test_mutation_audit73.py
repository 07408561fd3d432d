"""Tests a mutation audit of the rounding, scan store, results record and report changes found
missing (each kills a mutant the suite let pass; each < 0.1 s, nothing compiled)."""

import os
import types

import numpy as np
import pytest

import dmft


# ----------------------------------------------------------------- verdicts.rounded
def test_rounding_refuses_a_direction_other_than_up_or_down_and_rounding_down_leaves_the_rest():
    """`rounded` with a direction neither "up" nor "down" is refused (it rounded down without a
    word), and `_rounded_down` gives back what is not positive and finite as it is (not 0)."""
    from validation.verdicts import _rounded_down, rounded

    for bad in ("Up", "nearest", None):
        with pytest.raises(dmft.InputError, match="direction must be 'up' or 'down'"):
            rounded(0.123, 2, bad)
    assert _rounded_down(-0.1234) == -0.1234 and _rounded_down(float("inf")) == float("inf")
    assert np.isnan(_rounded_down(float("nan"))) and _rounded_down(0.1234) == 0.12


# ----------------------------------------------------------------- the lazy step's refusal
def test_the_lazy_step_refusal_offers_the_largest_three_digit_step_strictly_below_the_limit(monkeypatch):
    """Where 2 P / lambda_max(K0) is itself a 3-digit decimal (0.5 here) the step offered is the
    3-digit one just below it, 0.499 (not the limit itself, nor 2 digits' 0.49). K0 and the lazy
    solve are stand-ins: nothing is solved."""
    from dmft.errors import ConfigError, DivergenceError
    from experiments import jobs

    P = 8
    monkeypatch.setattr(jobs, "initial_ntk", lambda plan: np.diag([4.0 * P, 1.0]))    # rate 4: limit 0.5

    def solve(*_a, **_k):
        raise DivergenceError("lazy: train_loss grows", step=None)

    monkeypatch.setattr(dmft, "solve", solve)
    prob = types.SimpleNamespace(data=types.SimpleNamespace(P=P))
    plan = types.SimpleNamespace(model=dmft.TwoLayer("relu", gamma0=1.0), kernel_nodes=None)
    schedule = types.SimpleNamespace(eta0=1.0, dynamics="gd", batch_size=None)
    with pytest.raises(ConfigError, match=r"< 2 P / lambda_max\(K0\) = 0\.5 \(e\.g\. 0\.499\)"):
        jobs._check_lazy_step({"sweep": {"gamma0": [1.0]}}, prob, plan, schedule)


# ----------------------------------------------------------------- a damaged chunk's reason
def test_a_chunk_damaged_in_place_or_lengthened_is_named_so_not_as_another_scans(tmp_path):
    """A chunk of this scan whose bytes changed (one value's byte flipped: its own record still
    names this configuration) is "checksum mismatch (corrupted)", and one with bytes appended
    "truncated or extended": the name of a chunk written for another configuration is only for
    one whose record names another digest."""
    from experiments import store as S
    from experiments.store import Store

    path = str(tmp_path / "s")
    store = Store.create_or_open(path, {"config": {"a": 1}}, {"grid": {}, "chunk_names": ["c0", "c1"]})
    for i in range(2):
        store.write_chunk(f"c{i}", {"index": np.arange(2 * i, 2 * i + 2), "x": np.full(2, 1234.5678 + i)},
                          family="g")
    store.save_manifest()
    store.close()
    chunk = os.path.join(path, S.CHUNKS, "c0.npz")
    with open(chunk, "rb") as fh:
        data = bytearray(fh.read())
    at = data.find(np.float64(1234.5678).tobytes())
    assert at > 0
    data[at] ^= 0x01
    with open(chunk, "wb") as fh:
        fh.write(bytes(data))
    with open(os.path.join(path, S.CHUNKS, "c1.npz"), "ab") as fh:
        fh.write(b"\0" * 7)
    good, bad = Store.read(path).verified()
    assert good == set() and bad["c0"] == "checksum mismatch (corrupted)", bad
    assert bad["c1"].startswith("truncated or extended ("), bad


# ----------------------------------------------------------------- the journal (.dmft-written)
def test_a_journal_append_cut_short_fails_its_open_and_the_next_name_is_whole(tmp_path, monkeypatch):
    """The journal taking part of a name (a full disk midway: os.write returns less) fails the open
    that would make the file, naming the journal, and the file is not made; the next name appended
    starts on a line of its own (not glued to the cut one), and the file whose append failed is
    appended when it is opened again. A rename whose new name the journal cannot take keeps the
    old name recorded; one onto itself forgets nothing; run.json is never the journal's (its
    "failed" does not wait on it). The error is a plain OSError (a figure's failure names no
    private class)."""
    from experiments import output

    out = str(tmp_path)
    output._lock(out, create=True)
    output._start_recording(out)
    try:
        journal, real_write = output._JOURNALS[os.path.realpath(out)], os.write
        cut = {"on": True}

        def write(fd, data):
            if fd == journal and cut["on"]:
                return real_write(fd, data[:3])          # part of the line, then the disk is full
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", write)
        with pytest.raises(OSError) as err:
            open(tmp_path / "a.npz", "wb").close()
        assert type(err.value) is OSError and err.value.filename.endswith(output.JOURNAL), err.value  # (no private class)
        assert not (tmp_path / "a.npz").exists()
        with open(tmp_path / output.MANIFEST, "w") as fh:              # (not the journal's: written)
            fh.write("{}")
        cut["on"] = False
        for name in ("b.npz", "a.npz", "c.tmp"):
            open(tmp_path / name, "wb").close()
        os.replace(tmp_path / "b.npz", tmp_path / "b.npz")
        cut["on"] = True
        with pytest.raises(OSError):
            os.replace(tmp_path / "c.tmp", tmp_path / "c.npz")
        cut["on"] = False
        assert {"a.npz", "b.npz", "c.tmp"} <= set(output._written(out)), output._written(out)
        names = (tmp_path / output.JOURNAL).read_text().split("\n")
        assert "b.npz" in names and "a.npz" in names and output.MANIFEST not in " ".join(names), names
    finally:
        monkeypatch.undo()
        output.release(out)


# ----------------------------------------------------------------- the results record (.dmft-results)
def test_the_results_record_keeps_each_write_checked_and_forgets_what_it_is_told(tmp_path):
    """Every line of the record, those of results a resumed run keeps (`_start_recording`) as
    those it records (`record_result`), carries its check and reads back undamaged; a line whose
    path (not its digest) is damaged is counted damaged, not read as a file missing; a result
    forgotten (`forget_results`, grok's parts) is gone from the record; no record is no damage."""
    from dmft.io import sha256
    from experiments import output

    out = str(tmp_path)
    assert output._verified_results(out) == ({}, [], 0)
    (tmp_path / "theory").mkdir()
    for name in ("kept", "a", "b"):
        (tmp_path / "theory" / f"{name}.npz").write_bytes(name.encode())
    digest = {n: sha256(tmp_path / "theory" / f"{n}.npz") for n in ("kept", "a", "b")}
    output._lock(out, create=True)
    output._start_recording(out, {"theory/kept.npz": digest["kept"]})
    try:
        output.record_result(out, [tmp_path / "theory" / "a.npz", tmp_path / "theory" / "b.npz"])
        assert output._verified_results(out) == ({f"theory/{n}.npz": digest[n] for n in ("kept", "a", "b")}, [], 0)
        output.forget_results(out, [tmp_path / "theory" / "b.npz"])
        good, bad, damaged = output._verified_results(out)
        assert sorted(good) == ["theory/a.npz", "theory/kept.npz"] and (bad, damaged) == ([], 0), (good, bad)
        record = tmp_path / output.RESULTS
        record.write_text(record.read_text().replace("theory/a.npz", "theory/x.npz"))   # a path's byte damaged
        assert output._verified_results(out) == ({"theory/kept.npz": digest["kept"]}, [], 1)
    finally:
        output.release(out)


# ----------------------------------------------------------------- a write error's place
@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EIO"])
def test_each_write_error_naming_no_file_names_the_results_directory_and_one_naming_a_file_is_kept(code):
    """`output._named`: each write errno (a full disk, a quota, a file too large, a read-only or a
    failing disk) raised with no file names the results directory; the same error naming its file,
    another errno, or an OutputError already placed (a store's, with its errno) stays as it is."""
    import errno

    from experiments import output

    n = getattr(errno, code)
    named = output._named("/r/out", OSError(n, os.strerror(n)))
    assert isinstance(named, output.OutputError) and str(named) == f"/r/out: cannot write the results ({os.strerror(n)})"
    for err in (OSError(n, os.strerror(n), "/r/out/theory/a.npz"), OSError(errno.ENOENT, "gone"),
                output.OutputError("/r/out: cannot write run.json"),
                dmft.errors.StoreWriteError(n, "/r/s: could not write chunk c0: ... The 2 chunk(s) already written are kept")):
        assert output._named("/r/out", err) is err


# ----------------------------------------------------------------- a signal while the interpreter exits
def _exiting(setup: str, signame, status="1"):
    """A stand-in command (nothing imported, no job run) ending with sys.exit(`status`), whose exit
    (stdout buffered: PYTHONUNBUFFERED off) sends itself `signame` (None: nothing), then prints " after"."""
    import pathlib
    import subprocess
    import sys

    kill = f"os.kill(os.getpid(), signal.{signame}); time.sleep(0.2)" if signame else "pass"
    script = f"""
import atexit, os, signal, sys, time, types
{setup}
def exiting():
    print("exiting", end="")
    {kill}
    print(" after", end="")
def console():
    atexit.register(exiting)
    print("run complete")
    sys.exit({status})
sys.modules["experiments.cli"] = types.SimpleNamespace(console=console)
import experiments
experiments.console()
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=pathlib.Path(__file__).parents[1], env=env)


def test_a_signal_while_the_interpreter_exits_flushes_and_keeps_any_status_and_an_ignored_one_stays_ignored():
    """While the interpreter exits after the run: SIGHUP (a closed terminal) ends the process with
    the run's own status, as SIGINT and SIGTERM do, what it printed flushed (the suite's runs set
    PYTHONUNBUFFERED, which hid a handler that flushed nothing); a run ended by a message (status
    1) keeps 1; the command ends with its status where no signal comes; a signal the command's
    parent set to be ignored (a background job's SIGINT, nohup's SIGHUP) stays ignored: the exit
    goes on to its end."""
    done = _exiting("signal.signal(signal.SIGHUP, signal.SIG_DFL)", "SIGHUP")      # (not as nohup left it)
    assert (done.returncode, done.stdout, done.stderr) == (1, "run complete\nexiting", ""), done
    done = _exiting("signal.signal(signal.SIGTERM, signal.SIG_DFL)", "SIGTERM", status='"dmft: failed"')
    assert (done.returncode, done.stdout, done.stderr) == (1, "run complete\nexiting", "dmft: failed\n"), done
    done = _exiting("", None)
    assert (done.returncode, done.stdout, done.stderr) == (1, "run complete\nexiting after", ""), done
    done = _exiting("signal.signal(signal.SIGHUP, signal.SIG_DFL)", "SIGHUP", status="None")   # (status 0)
    assert (done.returncode, done.stdout, done.stderr) == (0, "run complete\nexiting", ""), done
    done = _exiting("signal.signal(signal.SIGINT, signal.SIG_IGN)", "SIGINT")
    assert (done.returncode, done.stdout, done.stderr) == (1, "run complete\nexiting after", ""), done


# ----------------------------------------------------------------- grok's parts
def test_grok_parts_removed_leave_no_line_of_theirs_in_the_results_record(tmp_path):
    """`_Parts.remove` (a complete grok run: curves.npz holds them) drops both files of each part,
    .npz and .json, from the results record: a line left for a removed .json made a rerun of a run
    killed after it name the part "changed or missing"."""
    from experiments import output
    from experiments.grok import job

    out = str(tmp_path)
    output._lock(out, create=True)
    output._start_recording(out)
    try:
        parts = job._Parts(out, {"train": {"steps": 1}})
        parts.add("gamma0_1", {"x": np.arange(3.0)})
        assert sorted(output._verified_results(out)[0]) == ["curves/gamma0_1.json", "curves/gamma0_1.npz"]
        parts.remove()
        assert output._verified_results(out) == ({}, [], 0)
        assert (tmp_path / output.RESULTS).read_text() == ""
    finally:
        output.release(out)


# ----------------------------------------------------------------- dmft dln's report
def test_dln_report_says_a_shift_where_one_mode_has_one_and_the_networks_time_is_the_steppings():
    """A cross-mode shift of rounding at one mode and a real one at another reads as a shift
    ("0, 0.59%"), not as none; the networks' time is said to be the stepping's."""
    from experiments.dln import load_config
    from experiments.dln.report import markdown

    data = {"kind": "linear_teacher", "d_in": 4, "d_out": 4, "singular_values": [3.0, 2.0], "P": 20,
            "label_noise": 0.0, "meta": {}}
    study = {"sigma": 1.0, "data": data, "effective_s": [3.0, 2.0], "networks_s": 1.3, "modes": [],
             "diffusion": [], "figures": {}, "cross_shift": [-2.55e-32, -0.0059]}
    text = markdown({"config": load_config(None, []), "studies": [study], "checks": [], "wall_s": 1.0})
    assert "lowers each mode's mean by 0, 0.59% of its target" in text and "does not shift" not in text, text
    assert "; networks 1.3 s stepping." in text, text


# ----------------------------------------------------------------- grok's curves figure
def test_grokking_curves_band_cut_in_part_of_the_run_says_so():
    """A +-1 se band cut at a tenth of the curve over part of the run only (se 0.5x the loss early,
    0.95x late) says it is cut: the label is for wherever the band is drawn narrower."""
    from matplotlib.collections import PolyCollection

    from validation import plots_grokking as pg

    t = np.concatenate([[0.0], np.geomspace(1.0, 1e3, 40)])
    loss = np.exp(-t / 50) + 1e-3
    se = np.where(t < 100, 0.5, 0.95) * loss
    th = {"train_loss": loss, "test_loss": loss, "alignment": np.ones(t.size), "train_loss_se": se, "test_loss_se": se}
    ax = pg.grokking_curves(t, {1.0: th}, {}, {}, [1.0], 0.01).axes[1]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection) and "+-1 se" in c.get_label()]
    assert band.get_label().endswith("+-1 se (cut at 0.1x the curve)"), band.get_label()
