"""The jobs' built-in defaults (a run without --config, a user's first run) are settings whose
checks can pass, and the docs say what they are. No default run here (minutes each): their
settings are compared with the shipped configurations and with the docs' numbers."""

import pathlib
import re

import pytest

from experiments import dln, jobs
from experiments.config import ConfigError, differences

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_plain_dln_runs_the_settings_of_dln_toml():
    """`dmft dln` without --config ran eta0 = 0.01 for 6000 steps without the cross-mode drift:
    the per-mode reduction is off there at label noise 1 (modes' means at z = -9 to -10, diffusion
    ratios up to 1.55, stationary KS 0.15-0.19: three of its six checks FAILed). Its defaults are
    now dln.toml's (eta0 = 0.003, 20000 steps, the drift on), whose six checks pass."""
    plain = dln.load_config()
    assert differences(plain, dln.load_config(ROOT / "scripts" / "configs" / "dln.toml")) == []
    assert (plain["train"]["eta0"], plain["train"]["steps"], plain["theory"]["cross_modes"]) == (0.003, 20000, True)
    # --full without --config: the preset's sizes at the same step (t = 300)
    full = dln.load_config(full=True)
    assert (full["train"]["eta0"], full["train"]["steps"], full["theory"]["cross_modes"]) == (0.003, 100000, True)


def test_dln_default_cross_modes_follows_weight_decay():
    """The cross-mode drift is derived without weight decay: the default turns it off where the run
    decays (dln_decay.toml loads as before), while one written beside a decay is still refused."""
    assert dln.load_config(None, ["train.weight_decay=0.05"])["theory"]["cross_modes"] is False
    assert dln.load_config(ROOT / "scripts" / "configs" / "dln_decay.toml")["theory"]["cross_modes"] is False
    assert dln.load_config(None, ["theory.cross_modes=false"])["theory"]["cross_modes"] is False
    with pytest.raises(ConfigError, match="theory.cross_modes: the cross-mode drift is derived without weight decay"):
        dln.load_config(None, ["train.weight_decay=0.05", "theory.cross_modes=true"])
    # the schema keeps its own defaults (deep-linear scans start from them)
    assert dln.SCHEMA["train"]["eta0"].default == 0.01 and dln.SCHEMA["theory"]["cross_modes"].default is False


def test_plain_validate_gives_the_dmft_as_many_replicas_as_seeds():
    """`dmft validate` without --config gave the DMFT 4 replicas against 8 network seeds, so its
    agreement z was judged against about 487 (28 at 8 and 8) and q against about 2e5: checks that
    could hardly fail (the run said so before it computed). Now 8192 nodes in 8 replicas, the same
    1024 nodes a replica, and no note."""
    for job in ("validate", "solve"):
        cfg = jobs.load_config()
        th = cfg["theory"]
        assert th["replicas"] == cfg["simulate"]["seeds"] == 8, job
        assert th["samples"] // th["replicas"] == 1024
        assert jobs.replicas_note(cfg) is None
    full = jobs.load_config(full=True)
    assert full["theory"]["replicas"] == full["simulate"]["seeds"]


def _said(pattern, text, where):
    found = re.search(pattern, " ".join(text.split()))
    assert found, f"{where} no longer says {pattern!r}"
    return found.groups()


def test_docs_state_the_built_in_defaults():
    """docs/course.md and the README name the plain runs' settings: they must be the code's."""
    course = (ROOT / "docs" / "course.md").read_text()
    readme = (ROOT / "README.md").read_text()
    plain = dln.load_config()
    eta0, steps = _said(r"a plain `dmft dln` runs [^.]*?eta0 = ([\d.]+) for (\d+) steps", course, "course.md")
    assert (float(eta0), int(steps)) == (plain["train"]["eta0"], plain["train"]["steps"])
    _said(r"a plain `dmft dln` runs (?:the same|its) settings", readme, "README.md")
    cfg = jobs.load_config()
    for text, where in ((course, "course.md"), (readme, "README.md")):
        samples, replicas, seeds = _said(r"plain `dmft validate`[^.]*?(\d+) nodes in (\d+) replicas[^.]*?(\d+) "
                                         r"(?:network )?seeds", text, where)
        assert (int(samples), int(replicas), int(seeds)) == (cfg["theory"]["samples"], cfg["theory"]["replicas"],
                                                              cfg["simulate"]["seeds"]), where
    for old in ("eta0 = 0.01 for 6000 steps", "built-in 4 replicas"):
        assert old not in " ".join(course.split()) and old not in " ".join(readme.split())


def test_a_sample_count_the_new_replica_default_does_not_divide_says_what_fits():
    """theory.samples = 1000 was accepted at the old 4 replicas and is refused at the built-in 8 (2 x 8
    does not divide it); the refusal named theory.replicas, which the user had not written, with
    nothing to do about it. It now says the replicas are a default and which count fits."""
    with pytest.raises(ConfigError, match=r"theory.samples \(1000\) must be a multiple of 2 x theory.replicas \(16\).*"
                                          r"theory.replicas is 8 \(written, or the default\): set it to 5"):
        jobs.load_config(None, ["theory.samples=1000"])
    assert jobs.load_config(None, ["theory.samples=1000", "theory.replicas=5"])["theory"]["replicas"] == 5
