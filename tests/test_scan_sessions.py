"""A scan store says what became of its last session: complete, stopped, still running, or
killed outright (its manifest still says running, and the lock names a process that is gone)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from experiments import scan
from experiments.store import Store
from dmft.errors import StoreConflict

BASE = {"task": {"name": "single_index", "D": 4, "P": 12, "P_test": 8, "degree": 1},
        "model": {"activation": "linear"}, "train": {"eta0": 0.5, "steps": 20, "save_every": 10},
        "scan": {"outputs": ["final"], "grid": {"train.eta0": [0.1, 0.2]}}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("s") / "store")
    scan.run(BASE, out)
    return out


def _mark_running(out):
    path = os.path.join(out, "manifest.json")
    with open(path) as fh:
        man = json.load(fh)
    man["sessions"][-1]["status"] = "running"          # (sessions are outside the manifest's digest)
    with open(path, "w") as fh:
        json.dump(man, fh)


def _gone_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_last_session_is_told_apart_running_or_killed(store):
    assert scan.load(store).last_session() == "complete"
    assert Store.lock_holder(store) is None                 # a scan that ended emptied its lock
    _mark_running(store)
    lock = os.path.join(store, ".lock")
    here = socket.gethostname()
    cases = {b"": "was killed before it could say so; rerun",                   # no holder at all
             f"{_gone_pid()}@{here}".encode(): "no longer runs); rerun the scan to resume",
             f"{os.getpid()}@{here}".encode(): f"is running (process {os.getpid()})",
             str(os.getpid()).encode(): f"is running (process {os.getpid()})",  # (older lock files: no host)
             b"12@elsewhere.example": "is running on elsewhere.example (process 12), or was killed there"}
    for text, said in cases.items():
        with open(lock, "wb") as fh:
            fh.write(text)
        res = scan.load(store)
        assert said in res.last_session(), (text, res.last_session())
        assert said in res.summary().split("\n")[0]
    with open(lock, "wb") as fh:
        fh.write(b"not a pid")
    with pytest.raises(StoreConflict, match="not a scan's process id"):
        scan.load(store).last_session()


def test_a_scan_writes_its_process_and_host_into_the_lock_it_holds(store, monkeypatch):
    seen = {}
    real = Store.write_chunk

    def spy(self, *a, **k):
        seen["holder"] = Store.lock_holder(self.path)
        return real(self, *a, **k)

    monkeypatch.setattr(Store, "write_chunk", spy)
    scan.run(BASE, store + "-2")
    assert seen["holder"] == {"process": os.getpid(), "host": socket.gethostname(), "alive": True}
    assert Store.lock_holder(store + "-2") is None


def test_points_that_took_another_points_part_are_counted_as_such(tmp_path):
    """A width scan solves its theory once: the summary says the other widths took it (a scan
    of a theory setting, training its networks once, is in the test below)."""
    widths = {**BASE, "simulate": {"seeds": 2},
              "scan": {"outputs": ["final"], "networks": True, "grid": {"simulate.width": [8, 16]}}}
    res = scan.run(widths, str(tmp_path / "w"))
    groups = res.manifest["sessions"][-1]["groups"]
    assert sum(g["theory_reused"] for g in groups) == 1 and sum(g["networks_reused"] for g in groups) == 0
    assert "1 took the theory another point computed" in res.summary().split("\n")[0]
    plain = scan.run(BASE, str(tmp_path / "p"))
    assert "another point" not in plain.summary()


@pytest.mark.parametrize("field", ["theory.samples", "theory.replicas", "theory.seed"])
def test_an_axis_of_the_node_draw_under_a_method_that_draws_none_is_refused(tmp_path, field):
    """The closure (and the lazy limit) draw no nodes: every value of such an axis gave the same
    point again; refused before anything is written, naming the axis and the method."""
    values = {"theory.samples": [64, 128], "theory.replicas": [2, 4], "theory.seed": [0, 1]}[field]
    for method in ("closure", "auto", "lazy"):     # (auto: the closure, for a linear network)
        cfg = {**BASE, "theory": {"method": method}, "scan": {"outputs": ["final"], "grid": {field: values}}}
        with pytest.raises(scan.ConfigError, match=f"{field} scanned.*(closure|lazy) method"):
            scan.run(cfg, str(tmp_path / method))
        assert not os.path.exists(tmp_path / method / "manifest.json")
    if field == "theory.seed":        # a method that draws nodes takes the axis (and trains once)
        sampled = {**BASE, "theory": {"method": "forward", "samples": 64}, "simulate": {"seeds": 2, "width": 8},
                   "scan": {"outputs": ["final"], "networks": True, "grid": {field: values}}}
        res = scan.run(sampled, str(tmp_path / "forward"))
        a, b = res["theory.final.test_loss"]
        assert a != b
        assert "1 took the networks another point computed" in res.summary().split("\n")[0]


def test_an_interrupted_session_says_what_it_left_on_disk(tmp_path, monkeypatch):
    """Ctrl-C after the first of two chunks: the session is recorded as stopped, as before, and
    now also says how many chunks and points are on disk and that the same command resumes (it
    said nothing: the command printed only 'interrupted')."""
    calls, real = [], Store.write_chunk

    def interrupt_second(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Store, "write_chunk", interrupt_second)
    cfg = {**BASE, "scan": {**BASE["scan"], "chunk": 1}}
    said, out = [], str(tmp_path / "s")
    with pytest.raises(KeyboardInterrupt):
        scan.run(cfg, out, log=said.append)
    assert said[-1] == (f"scan {out}: stopped with 1 of 2 chunk(s) on disk (1 of 2 points, 1 computed by this "
                        "session); the same command resumes it"), said
    assert scan.load(out).last_session() == "stopped"
    monkeypatch.setattr(Store, "write_chunk", real)
    assert scan.run(cfg, out).complete
    calls.clear()                                  # a failure, not an interruption: it would recur
    monkeypatch.setattr(Store, "write_chunk", lambda self, *a, **k: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ValueError):
        scan.run(cfg, str(tmp_path / "f"), log=said.append)
    assert said[-1].endswith("a rerun resumes it, but will meet the same error unless its cause is fixed"), said
