"""Uncoordinated writers of one scan store's directory: what a scan checks before it holds the
store's lock is checked again under it, and what it writes after (report.md) is written whole.
Each race is made deterministic by letting "another process" act inside the window."""

import os
import types

import pytest

from experiments.jobs import load_config
from experiments.output import OutputConflict, prepare_output, release
from experiments.scan import result
from experiments.store import MANIFEST, Store, StoreConflict

IDENTITY = {"config": {"a": 1}}
LAYOUT = {"grid": {}, "chunk_names": ["c0"]}


def _once(monkeypatch, real, act):
    """`Store._unborn` that lets `act` run once, just before (act first) the real look."""
    def unborn(path):
        monkeypatch.setattr(Store, "_unborn", staticmethod(real))
        act()
        return real(path)
    monkeypatch.setattr(Store, "_unborn", staticmethod(unborn))


def test_a_job_that_claimed_the_directory_meanwhile_is_seen_under_the_store_lock(tmp_path, monkeypatch):
    # the scan looked (empty), then a `dmft solve` claimed the directory before the scan's lock:
    # the two locks differ, so the scan must look again under its own
    out = str(tmp_path / "out")
    real = Store._unborn

    def unborn(path):
        free = real(path)
        monkeypatch.setattr(Store, "_unborn", staticmethod(real))
        assert prepare_output(out, "solve", load_config(None, overrides=["train.steps=4", "train.save_every=2"]), False) is True
        return free
    monkeypatch.setattr(Store, "_unborn", staticmethod(unborn))
    try:
        with pytest.raises(StoreConflict, match="not empty and holds no scan"):
            Store.create_or_open(out, IDENTITY, LAYOUT)
    finally:
        release(out)
    assert not os.path.exists(os.path.join(out, MANIFEST))
    assert "run.json" in os.listdir(out) and Store.lock_holder(out) is None
    # nothing of the refused scan is left in the job's directory (its rerun would list them as
    # files it keeps)
    assert not {".lock", "chunks"} & set(os.listdir(out))


def _other_scan(out):
    """Another scan of the same configuration: creates the store, writes its chunk, ends."""
    import numpy as np

    s = Store.create_or_open(out, IDENTITY, LAYOUT)
    s.write_chunk("c0", {"index": np.arange(2), "x": np.ones(2)})
    s.save_manifest()
    s.close()


@pytest.mark.parametrize("how", ["create_or_open", "peek"])
def test_a_store_made_meanwhile_is_not_called_a_directory_holding_no_scan(tmp_path, monkeypatch, how):
    # no manifest at the first look, then another scan made the store before the listing
    out = str(tmp_path / "out")
    _once(monkeypatch, Store._unborn, lambda: _other_scan(out))
    if how == "peek":
        assert Store.peek(out, IDENTITY) == {"c0"}
    else:
        s = Store.create_or_open(out, IDENTITY, LAYOUT)
        try:
            assert s.verified()[0] == {"c0"}
        finally:
            s.close()


class _Snoop(str):
    """A report's text that reads report.md when it is encoded for writing (as another process
    reading the report at that moment would)."""
    seen = []

    def encode(self, *args):
        with open(os.path.join(self.path, result.REPORT), "rb") as fh:
            self.seen.append(fh.read())
        return str(self).encode(*args)


def test_report_is_replaced_whole_so_a_reader_never_sees_it_cut(tmp_path, monkeypatch):
    # a session's end writes report.md without the lock; a rerun finding the scan complete reads it
    # meanwhile to tell whether it is its store's: it must find the old report or the new one
    with open(tmp_path / result.REPORT, "wb") as fh:
        fh.write(b"the previous report")
    text = _Snoop("the new report")
    text.path, _Snoop.seen = str(tmp_path), []
    monkeypatch.setattr(result, "report_text", lambda res: text)
    result.write_report(types.SimpleNamespace(path=str(tmp_path)))
    assert _Snoop.seen == [b"the previous report"]
    assert (tmp_path / result.REPORT).read_bytes() == b"the new report"
    assert sorted(os.listdir(tmp_path)) == [result.REPORT]


def test_a_live_processs_temporary_is_left_to_it_when_a_session_opens(tmp_path):
    # a scan that has ended writes report.md (through report.md.tmp-PID) after it let the lock go;
    # the next session's cleaning must not take the file from under it (a killed writer's goes)
    out = str(tmp_path / "out")
    _other_scan(out)
    live = os.path.join(out, f"{result.REPORT}.tmp-{os.getppid()}")
    dead = os.path.join(out, "manifest.json.tmp-999999999")      # (beyond any pid the kernel gives)
    for path in (live, dead):
        with open(path, "wb") as fh:
            fh.write(b"being written")
    s = Store.create_or_open(out, IDENTITY, LAYOUT)
    s.close()
    assert os.path.exists(live) and not os.path.exists(dead)


@pytest.mark.parametrize("force", [False, True])
def test_a_job_is_refused_the_chunks_folder_of_a_store(tmp_path, force):
    # empty until a session writes its first chunk (a new store, or one whose chunks failed)
    out = str(tmp_path / "store")
    Store.create_or_open(out, IDENTITY, LAYOUT).close()
    cfg = load_config(None, overrides=["train.steps=4", "train.save_every=2"])
    try:
        with pytest.raises(OutputConflict, match="chunks/ folder of the dmft scan store"):
            prepare_output(os.path.join(out, "chunks"), "solve", cfg, force)
    finally:
        release()
    assert os.listdir(os.path.join(out, "chunks")) == []


def test_a_job_is_refused_a_link_to_the_chunks_folder_of_a_store(tmp_path):
    # the chunks/ folder named through a symbolic link is the same folder
    out = str(tmp_path / "store")
    Store.create_or_open(out, IDENTITY, LAYOUT).close()
    link = tmp_path / "results"
    link.symlink_to(os.path.join(out, "chunks"))
    cfg = load_config(None, overrides=["train.steps=4", "train.save_every=2"])
    try:
        with pytest.raises(OutputConflict, match="chunks/ folder of the dmft scan store"):
            prepare_output(str(link), "solve", cfg, False)
    finally:
        release()
    assert os.listdir(os.path.join(out, "chunks")) == []
