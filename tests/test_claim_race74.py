"""Two runs claiming one results directory at once: the checks that `prepare_output` makes before
it holds the lock (a fresh directory, or one without a lock file yet, has none to take) are made
again once it holds it, so a run that claimed, wrote and left the directory meanwhile is seen:
its complete run is refused as a different run (or found complete), never cleared and overwritten."""

import json
import os

import pytest

from experiments import output
from experiments.jobs import load_config
from experiments.output import OutputConflict, prepare_output, release, write_manifest


def _cfg(steps):
    return load_config(None, overrides=[f"train.steps={steps}", "train.save_every=2"])


def _other_run(out, cfg, force=False):
    """What another process does meanwhile: claim `out`, write a result, complete."""
    assert prepare_output(out, "solve", cfg, force) is True
    os.makedirs(os.path.join(out, "theory"), exist_ok=True)
    with open(os.path.join(out, "theory", "x.npz"), "wb") as fh:
        fh.write(b"the other run's result")
    write_manifest(out, "solve", cfg, "complete")


@pytest.mark.parametrize("same", [False, True])
def test_run_that_claimed_meanwhile_is_seen_under_the_lock(tmp_path, monkeypatch, same):
    out = str(tmp_path / "res")
    mine, theirs = _cfg(4), _cfg(4 if same else 6)
    real = output.check_writable
    raced = []

    def check_writable(path):
        real(path)
        if not raced:       # the last check before the claim: the other run comes and goes here
            raced.append(True)
            _other_run(out, theirs)
    monkeypatch.setattr(output, "check_writable", check_writable)
    try:
        if same:        # the same run, complete: nothing to compute
            assert prepare_output(out, "solve", mine, False) is False
        else:
            with pytest.raises(OutputConflict, match="already holds a different run"):
                prepare_output(out, "solve", mine, False)
    finally:
        release()
    assert raced
    with open(os.path.join(out, "theory", "x.npz"), "rb") as fh:
        assert fh.read() == b"the other run's result"
    with open(os.path.join(out, "run.json")) as fh:
        man = json.load(fh)
    assert man["status"] == "complete" and man["config"]["train"]["steps"] == theirs["train"]["steps"]


def test_what_the_first_checks_said_is_not_said_again_under_the_lock(tmp_path):
    """A directory without a lock file (copied without its dot files, or of an earlier version):
    the checks run before the lock and again under it, and each line they say was said twice
    ("differs from this one only in its [check] section ... resuming it", twice)."""
    out = str(tmp_path / "res")
    cfg = _cfg(4)
    try:
        assert prepare_output(out, "solve", cfg, False, resume=True) is True
        write_manifest(out, "solve", cfg, "failed")
    finally:
        release()
    os.remove(os.path.join(out, output.LOCK))
    said = []
    other = load_config(None, overrides=["train.steps=4", "train.save_every=2", "check.lazy_rel=0.2"])
    try:
        assert prepare_output(out, "solve", other, False, log=said.append, recheck=True, resume=True) is True
    finally:
        release()
    assert len([s for s in said if "only in its [check] section" in s]) == 1, said
    assert len(said) == len(set(said)), said


def test_a_recheck_in_a_directory_without_a_lock_file_looks_again_under_the_lock(tmp_path, monkeypatch):
    """A complete run without a lock file (an earlier version's, or copied without its dot files),
    rechecked (its [check] section alone differs): its files were verified before any lock, and
    the recheck went on without looking again once it held one, so a run that replaced the
    directory meanwhile (--force) had its results judged as the recheck's. Now its checks are made again
    under the lock: the other run is refused as a different run, and left as it was."""
    out = str(tmp_path / "res")
    try:
        _other_run(out, _cfg(4))
    finally:
        release()
    os.remove(os.path.join(out, output.LOCK))
    recheck = load_config(None, overrides=["train.steps=4", "train.save_every=2", "check.lazy_rel=0.2"])
    theirs = _cfg(6)
    real = output.check_writable
    raced = []

    def check_writable(path):
        real(path)
        if not raced:       # the recheck's last check before it returns: the other run comes and goes
            raced.append(True)
            _other_run(out, theirs, force=True)
    monkeypatch.setattr(output, "check_writable", check_writable)
    try:
        with pytest.raises(OutputConflict, match="already holds a different run"):
            prepare_output(out, "solve", recheck, False, recheck=True)
    finally:
        release()
    assert raced
    with open(os.path.join(out, "run.json")) as fh:
        man = json.load(fh)
    assert man["status"] == "complete" and man["config"]["train"]["steps"] == 6
