"""A scan store records each chunk by appending one checksummed line to its journal (folded into
the manifest when a session opens, starts and ends), not by rewriting the whole manifest: that
wrote bytes growing as the square of the chunk count (a 573-chunk scan spent ~50 s rewriting a
3 MB manifest). These tests hold the journal to every guarantee the manifest gave."""

import json
import os

import numpy as np
import pytest

from experiments import scan
from experiments import store as S
from experiments.store import JOURNAL, Store

NAMES = [f"c{i}" for i in range(6)]


def _arrays(i):
    return {"index": np.arange(2 * i, 2 * i + 2), "x": np.full(2, float(i))}


def _writer(path, n, names=NAMES):
    """A store holding chunks c0..c(n-1), its last session's counts updated with each, and its
    writer still open (as a scan that is running, or killed: no manifest saved since)."""
    store = Store.create_or_open(path, {"config": {"a": 1}}, {"grid": {}, "chunk_names": names})
    store.manifest["sessions"].append({"status": "running", "chunks": 0})
    store.save_manifest()
    for i in range(n):
        store.write_chunk(names[i], _arrays(i), family="g",
                          then=lambda i=i: store.manifest["sessions"][-1].update(chunks=i + 1))
    return store


def _kill(store):
    """What SIGKILL leaves: the lock file still naming the process, no manifest saved."""
    store._close_journal()
    if store._lock is not None:
        store._lock.close()
        store._lock = None


def _journal(path):
    with open(os.path.join(path, JOURNAL), "rb") as fh:
        return fh.read()


def _put_journal(path, data):
    with open(os.path.join(path, JOURNAL), "wb") as fh:
        fh.write(data)


def test_a_line_cut_short_by_a_kill_costs_only_its_chunk(tmp_path):
    """Killed while appending c3's record: c3's line is cut short. A reader sees c0-c2 (and the
    session's counts they carried) and names c3 with the reason; a resume sets c3 aside and
    rewrites it, and the line it appends is whole although the torn one is still before it."""
    path = str(tmp_path / "s")
    store = _writer(path, 4)
    _kill(store)
    data = _journal(path)
    assert data.count(b"\n") == 5                        # header + 4 records
    last = data[:-1].rfind(b"\n") + 1
    _put_journal(path, data[: last + (len(data) - last) // 2])      # c3's line cut in its middle
    read = Store.read(path)
    good, bad = read.verified()
    assert good == {"c0", "c1", "c2"} and set(bad) == {"c3"}, bad
    assert "journal.jsonl was cut short" in bad["c3"], bad
    assert read.manifest["sessions"][-1] == {"status": "running", "chunks": 3}
    resumed = Store.create_or_open(path, {"config": {"a": 1}}, {"grid": {}, "chunk_names": NAMES})
    try:
        assert resumed.verified()[0] == {"c0", "c1", "c2"}
        assert resumed.set_aside("c3").endswith("c3.npz.damaged-0")
        resumed.write_chunk("c3", _arrays(3), family="g")          # appended after the torn line
        resumed.write_chunk("c4", _arrays(4), family="g")
    finally:
        _kill(resumed)                                   # killed again, nothing folded
    good, bad = Store.read(path).verified()
    assert good == {"c0", "c1", "c2", "c3", "c4"} and not bad, bad
    np.testing.assert_array_equal(Store.read(path).read_chunk("c3")["x"], [3.0, 3.0])


def test_an_edited_journal_line_is_not_trusted(tmp_path):
    """A journal record edited by hand (its line's checksum no longer matches) is not trusted,
    nor is any older record of that chunk; a forger who recomputes the line's checksum still
    has to match the chunk file, as with an edited manifest record."""
    path = str(tmp_path / "s")
    store = _writer(path, 3)
    store.save_manifest()                               # c0-c2 in the manifest
    store.write_chunk("c1", _arrays(1), family="g")      # c1 recorded again, in the journal
    _kill(store)
    lines = _journal(path).split(b"\n")
    assert json.loads(lines[1])["chunk"] == "c1"
    line = json.loads(lines[1])
    line["record"]["points"] = 3
    lines[1] = json.dumps(line, separators=(",", ":")).encode()
    _put_journal(path, b"\n".join(lines))
    good, bad = Store.read(path).verified()
    assert good == {"c0", "c2"} and "its checksum does not match" in bad["c1"], bad
    body = {k: v for k, v in line.items() if k != "sha256"}   # the forger recomputes the checksum
    lines[1] = S._line_bytes(body).rstrip(b"\n")
    _put_journal(path, b"\n".join(lines))
    good, bad = Store.read(path).verified()
    assert good == {"c0", "c2"} and "holds other points than recorded" in bad["c1"], bad
    # a line may change the session's counts and the groups' schemas, never the fixed part the
    # manifest's digest covers (its identity, grid, ...)
    body = {**json.loads(_journal(path).split(b"\n")[1]), "state": [[["identity", "config", "a"], 2]]}
    body.pop("sha256")
    body["record"]["points"] = 2
    lines[1] = S._line_bytes(body).rstrip(b"\n")
    _put_journal(path, b"\n".join(lines))
    read = Store.read(path)
    assert read.manifest["identity"] == {"config": {"a": 1}}
    assert "is not a record this store writes" in read.verified()[1]["c1"]



@pytest.mark.parametrize("bad", [[["sessions", 99], {"status": "x"}],      # past the list's end
                                 [["schemas"], [1]],                         # not what a store writes
                                 "not a change"])
def test_a_line_whose_changes_do_not_fit_changes_nothing(tmp_path, bad):
    """A line with a valid checksum whose state changes fit only in part (a good change, then a
    bad one) leaves the manifest's state as it was: no half-applied line (the good change used to
    stay while its chunk was set aside); its drops and record are not applied either."""
    path = str(tmp_path / "s")
    store = _writer(path, 2)
    store.save_manifest()
    before = S._state(store.manifest)
    store.write_chunk("c2", _arrays(2), family="g")
    _kill(store)
    lines = _journal(path).split(b"\n")
    body = json.loads(lines[1])
    body.pop("sha256")
    body["state"] = [[["sessions", 0, "status"], "forged"], bad]
    body["drop"] = ["c0"]
    lines[1] = S._line_bytes(body).rstrip(b"\n")
    _put_journal(path, b"\n".join(lines))
    read = Store.read(path)
    assert S._state(read.manifest) == before
    good, bad_chunks = read.verified()
    assert good == {"c0", "c1"} and "is not a record this store writes" in bad_chunks["c2"], bad_chunks


def test_a_journal_already_folded_is_not_read_again(tmp_path):
    """Killed between saving the manifest and emptying the journal: the journal names the
    manifest it followed, not the one on disk, and is ignored (replayed, it would bring back
    the record of a chunk set aside since)."""
    path = str(tmp_path / "s")
    store = _writer(path, 3)
    stale = _journal(path)
    store.set_aside("c1")
    store.save_manifest()
    _kill(store)
    _put_journal(path, stale)
    read = Store.read(path)
    assert "c1" not in read.manifest["chunks"] and read.verified() == ({"c0", "c2"}, {})
    store = Store.create_or_open(path, {"config": {"a": 1}}, {"grid": {}, "chunk_names": NAMES})
    store.write_chunk("c1", _arrays(1), family="g")     # the stale journal is started again
    _kill(store)
    assert _journal(path).count(b"\n") == 2 and Store.read(path).verified() == ({"c0", "c1", "c2"}, {})


def test_the_bytes_written_per_chunk_do_not_grow_with_the_chunks_written(tmp_path, monkeypatch):
    """Every chunk's record rewrote the whole manifest (its records, its plan's chunk names):
    bytes per chunk grew with the chunk count. Now a chunk's file and one journal line of a
    size that does not grow; the manifest is not rewritten while chunks are written."""
    names = [f"c{i:04d}" for i in range(120)]
    path = str(tmp_path / "s")
    store = _writer(path, 0, names)
    rewrites = []                                       # (path, bytes) of every file rewritten
    real = S.atomic_write
    monkeypatch.setattr(S, "atomic_write", lambda p, data: (rewrites.append((p, len(data))), real(p, data)))
    journal = os.path.join(path, JOURNAL)
    sizes, files = [], []                               # bytes written for each chunk, but its file
    for i, name in enumerate(names):
        before, rewrites[:] = (os.path.getsize(journal) if os.path.exists(journal) else 0), []
        store.write_chunk(name, {"index": np.array([i]), "x": np.ones(1)}, family="g",
                          then=lambda i=i: store.manifest["sessions"][-1].update(chunks=i + 1))
        grown = (os.path.getsize(journal) if os.path.exists(journal) else 0) - before
        sizes.append(grown + sum(n for p, n in rewrites if not p.endswith(".npz")))
        files.append([p for p, n in rewrites])
    store.close()
    # (the first line carries the journal's header and the group's schema; the rest differ
    # only in the digits of the count)
    assert max(sizes[1:]) - min(sizes[1:]) <= 4 and max(sizes[1:]) < 600, sizes
    assert files == [[store.chunk_path(name)] for name in names]         # the manifest untouched
    assert Store.read(path).verified() == (set(names), {})


_TINY = {"task": {"D": 4, "P": 8, "P_test": 6, "degree": 1}, "model": {"activation": "linear"},
         "train": {"eta0": 0.5, "steps": 4, "save_every": 2}, "theory": {"samples": 16, "replicas": 2},
         "scan": {"chunk": 1, "grid": {"model.gamma0": [0.5, 1.0, 2.0]}}}


class _Killed(BaseException):
    pass


def test_a_scan_killed_mid_record_resumes_computing_that_chunk_alone(tmp_path, monkeypatch):
    """scan.run killed (no cleanup) while appending its second chunk's record: load names that
    chunk; the resume computes it alone, and the store equals an uninterrupted scan's bit for
    bit, counting the killed session's chunk; a session writes the manifest a fixed number of
    times, however many chunks it writes."""
    saves = []
    real_save = Store.save_manifest
    monkeypatch.setattr(Store, "save_manifest", lambda self: (saves.append(1), real_save(self))[1])
    ref = scan.run(_TINY, str(tmp_path / "ref"))
    assert len(saves) == 4                              # created, opened, session started, ended
    out = str(tmp_path / "s")
    real = Store._journal_append
    dead = []

    def append(self, line, what, **kw):
        if line.get("chunk") == "g0000-c000001" and not dead:
            data = S._line_bytes(line)
            with open(os.path.join(self.path, JOURNAL), "ab") as fh:
                fh.write(data[: len(data) // 2])
            dead.append(1)
            raise _Killed
        return real(self, line, what, **kw)

    with monkeypatch.context() as m:
        m.setattr(Store, "_journal_append", append)
        m.setattr(Store, "save_manifest", lambda self: None if dead else real_save(self))
        m.setattr(Store, "close", _kill)                         # killed: the lock stays named
        with pytest.raises(_Killed):
            scan.run(_TINY, out)
    partial = scan.load(out)
    assert partial.done.tolist() == [True, False, False]
    assert "cut short" in partial.damaged["g0000-c000001.npz"], partial.damaged
    chunks = [e["chunk"] for e in Store.read(out).events() if e.get("event") == "chunk"]
    assert chunks == ["g0000-c000000"]                  # (the log line comes after the record)
    res = scan.run(_TINY, out)
    chunks = [e["chunk"] for e in Store.read(out).events() if e.get("event") == "chunk"]
    assert chunks == ["g0000-c000000", "g0000-c000001", "g0000-c000002"]
    assert any(f.startswith("g0000-c000001.npz.damaged") for f in os.listdir(os.path.join(out, "chunks")))
    for k in ref.arrays:
        np.testing.assert_array_equal(res[k], ref[k], err_msg=k)
    killed, resumed = res.manifest["sessions"]
    assert killed["status"] == "running" and sum(g["chunks"] for g in killed["groups"]) == 1
    assert resumed["status"] == "complete" and resumed["computed_points"] == 2
    assert _journal(out) == b""                         # folded into the manifest


def test_a_manifest_swapped_in_from_another_scan_is_named_not_called_corruption(tmp_path):
    """A manifest.json copied from another scan (same chunk names, another configuration) makes
    every intact chunk disagree with its record: each is named as a chunk written for another
    configuration, not as a corrupted file (it was 'checksum mismatch (corrupted)'), and a chunk
    really damaged beside them is still named as damaged."""
    paths = [str(tmp_path / n) for n in ("a", "b")]
    for path, a in zip(paths, (1, 2)):
        store = Store.create_or_open(path, {"config": {"a": a}}, {"grid": {}, "chunk_names": NAMES})
        for i in range(3):
            store.write_chunk(NAMES[i], {**_arrays(i), "x": np.full(2, float(a * 10 + i))}, family="g")
        store.save_manifest()
        store.close()
    with open(os.path.join(paths[1], S.MANIFEST), "rb") as fh:
        other = fh.read()
    with open(os.path.join(paths[0], S.MANIFEST), "wb") as fh:
        fh.write(other)
    os.remove(os.path.join(paths[0], JOURNAL))
    chunk = os.path.join(paths[0], S.CHUNKS, "c2.npz")
    with open(chunk, "r+b") as fh:
        fh.seek(os.path.getsize(chunk) // 2)
        fh.write(b"\xff\xfe")
    good, bad = Store.read(paths[0]).verified()
    assert good == set() and sorted(bad) == ["c0", "c1", "c2"], bad
    for name in ("c0", "c1"):
        assert "written for another configuration" in bad[name] and "corrupted" not in bad[name], bad
    assert "another configuration" not in bad["c2"], bad


def test_a_chunk_whose_record_cannot_be_appended_is_not_counted_as_kept(tmp_path, monkeypatch):
    """A full disk at the journal's append of a chunk's record: the error said "The 3 chunk(s)
    already written are kept", counting the one whose record failed, which a rerun does not trust
    (no record) and computes again. It counts the recorded ones (a write-error audit)."""
    import errno

    path = str(tmp_path / "s")
    store = _writer(path, 2)
    real = os.write

    def write(fd, data):
        if fd == store._journal_fd:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(S.StoreWriteError, match=r"The 2 chunk\(s\) already written are kept"):
        store.write_chunk(NAMES[2], _arrays(2), family="g")
    monkeypatch.undo()
    _kill(store)
