"""Comparison and fitting code on planted answers, configuration, and the `dmft` command."""

import json
import os

import numpy as np
import pytest

import dmft
import networks
import validation
from experiments import cli
from experiments.config import ConfigError, parse_override
from experiments.jobs import load_config as load


# ------------------------------------------------------------------ planted answers

def _fake_solution(f_test, t, y):
    T = len(t)
    loss = np.mean((y[None] - f_test) ** 2, axis=1)
    return dmft.Solution(t=t, f_train=f_test, f_test=f_test, train_loss=loss, test_loss=loss,
                         ntk=None, feature_kernel=None, gradient_kernel=None, alignment=np.zeros(T),
                         weight_change={}, error=None,
                         info={"target_rms": {"test": float(np.sqrt(np.mean(y ** 2)))}})


def _fake_run(f_test, t, y, width):
    loss = np.mean((y[None, None] - f_test) ** 2, axis=2)
    s = f_test.shape[0]
    return networks.Run(t=t, f_train=f_test, f_test=f_test, train_loss=loss, test_loss=loss, ntk=None,
                        feature_kernel=None, gradient_kernel=None, alignment=np.zeros((s, len(t))),
                        weight_change={}, info={"width": width, "seeds": s, "diverged": {}})


def _planted(kind, seeds):
    rng = np.random.default_rng(0)
    t = np.linspace(0, 10, 6)
    y = rng.normal(size=40)
    f_th = np.outer(1 - np.exp(-t), y)
    runs = {}
    for n in (16, 64, 256, 1024):
        if kind == "bias":       # every seed off by 3 / N
            dev = np.broadcast_to(3.0 / n * np.sign(y)[None, None] * (t > 0)[None, :, None],
                                  (seeds,) + f_th.shape)
        else:                    # independent fluctuations of size 0.3 / sqrt(N)
            dev = 0.3 * rng.normal(size=(seeds,) + f_th.shape) / np.sqrt(n)
        runs[n] = _fake_run(f_th[None] + dev, t, y, n)
    return validation.width_scaling(_fake_solution(f_th, t, y), runs)


def test_planted_bias_gives_slope_minus_one():
    sc = _planted("bias", seeds=3)
    assert sc["mean_fit"].slope == pytest.approx(-1.0, abs=1e-9)
    assert sc["bias_fit"].slope == pytest.approx(-1.0, abs=0.02)   # loss bias ~ 2 |f - y| 3/N
    assert sc["per_seed_fit"].x_range == (16.0, 1024.0) and sc["per_seed_fit"].n == 4


def test_planted_fluctuations_give_slope_minus_half():
    sc = _planted("noise", seeds=2000)
    assert sc["per_seed_fit"].slope == pytest.approx(-0.5, abs=0.02)
    assert sc["mean_fit"].slope == pytest.approx(-0.5, abs=0.06)      # noise / sqrt(seeds N)


def test_compare_measures_known_errors():
    t = np.array([0.0, 1.0, 2.0])
    y = np.array([1.0, -1.0, 2.0, 0.5])
    f_th = np.outer([0.0, 0.5, 0.9], y)
    sol = _fake_solution(f_th, t, y)
    f_net = np.stack([f_th + 0.1, f_th - 0.1])                 # per-seed error 0.1, mean exact
    c = validation.compare(sol, _fake_run(f_net, t, y, 8))
    scale = np.sqrt(np.mean(y ** 2))
    np.testing.assert_allclose(c.per_seed_error, 0.1 / scale)
    np.testing.assert_allclose(c.mean_error, 0.0, atol=1e-15)
    assert c.summary["final_network_std"] > 0 and c.summary["loss"] == "test"
    with pytest.raises(ValueError, match="time bases"):
        validation.compare(sol, _fake_run(f_net, t * 2, y, 8))


def test_loglog_fit_rejects_bad_values():
    with pytest.raises(ValueError):
        validation.loglog_fit([1, 2], [1.0, -1.0])
    with pytest.raises(ValueError):
        validation.loglog_fit([1], [1.0])


# ------------------------------------------------------------------ configuration

def test_config_precedence_and_types(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nsteps = 40\nsave_every = 10\n[sweep]\ngamma0 = [1, 2]\n')
    cfg = load(f, ["train.steps=80", "model.activation=tanh"])
    assert cfg["train"]["steps"] == 80 and cfg["train"]["save_every"] == 10
    assert cfg["sweep"]["gamma0"] == [1.0, 2.0] and isinstance(cfg["sweep"]["gamma0"][0], float)
    assert cfg["model"]["activation"] == "tanh"
    full = load(None, full=True)
    assert full["simulate"]["widths"][-1] == 8192
    assert parse_override("theory.samples=2048") == {"theory": {"samples": 2048}}


@pytest.mark.parametrize("text, match", [
    ("[train]\nstepz = 3\n", "train.stepz"),
    ("[trian]\nsteps = 3\n", "trian"),
    ("[train]\nsteps = 'many'\n", "train.steps"),
    ("[train]\neta0 = 0\n", "train.eta0"),
    ("[model]\ncentered = 1\n", "model.centered"),
    ("[sweep]\ngamma0 = []\n", "sweep.gamma0"),
    ("[sweep]\ngamma0 = [1.0, -2.0]\n", r"sweep.gamma0\[1\]"),
    ("[simulate]\nwidths = [64, 0]\n", r"simulate.widths\[1\]"),
    ("[train]\nsteps = 10\nsave_every = 3\n", "save_every"),
    ("[theory]\nsamples = 100\nreplicas = 8\n", "theory.samples"),
    ("[model]\nreadout = 'frozen'\n", "model.readout"),
    ("[model]\nactivation = 'quadratic'\n", "model.eps"),
    ("[train\n", "not valid TOML"),
])
def test_config_errors_name_the_key(tmp_path, text, match):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load(f)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load("/nonexistent/dir/c.toml")


# ------------------------------------------------------------------ the command line

TINY = ["--gamma0", "0.05", "1", "--widths", "16", "64", "--seeds", "3", "--steps", "40",
        "--samples", "512", "--set", "task.D=6", "--set", "task.P=32", "--set", "task.P_test=40",
        "--set", "train.save_every=10", "--no-progress"]


def test_validate_end_to_end_writes_every_file(tmp_path, capsys):
    out = str(tmp_path / "v")
    assert cli.main(["validate", "--out", out] + TINY) == 0
    text = capsys.readouterr().out
    assert "spread gamma0=1" in text and "report:" in text
    for rel in ("run.json", "config.toml", "report.md", "report.json",
                "figures/losses.png", "figures/lazy_to_rich.png", "figures/width_scaling.png",
                "figures/relative_error.png", "theory/dmft_gamma0_1.npz", "theory/dmft_gamma0_1.json",
                "theory/lazy_gamma0_0.05.npz", "networks/gamma0_1_N64.npz", "networks/gamma0_0.05_N16.json"):
        assert os.path.exists(os.path.join(out, rel)), rel
    rep = json.load(open(os.path.join(out, "report.json")))
    assert {c["verdict"] for c in rep["checks"]} <= {"PASS", "FAIL", "SKIP"}
    assert rep["config"]["train"]["steps"] == 40 and "jax" in rep["environment"]
    man = json.load(open(os.path.join(out, "run.json")))
    assert man["status"] == "complete"
    sol = dmft.Solution.load(os.path.join(out, "theory", "dmft_gamma0_1"))
    assert sol.info["config"]["model"]["gamma0"] == 1.0
    # the same run again: nothing recomputed, exit 0
    assert cli.main(["validate", "--out", out] + TINY) == 0
    assert "already complete" in capsys.readouterr().err
    # a different run into the same directory: refused, nothing overwritten
    before = os.path.getmtime(os.path.join(out, "report.json"))
    assert cli.main(["validate", "--out", out] + TINY[:-1] + ["--set", "train.eta0=0.25"]) == 3
    assert "train.eta0" in capsys.readouterr().err
    assert os.path.getmtime(os.path.join(out, "report.json")) == before
    # --strict with an impossible tolerance: the run completes, the exit code says a check failed
    strict = str(tmp_path / "strict")
    assert cli.main(["validate", "--out", strict, "--strict", "--set", "check.agreement_rel=1e-12"]
                    + TINY) == 1


def test_solve_and_simulate_subcommands(tmp_path):
    common = ["--gamma0", "0.5", "--steps", "20", "--set", "train.save_every=10", "--set", "task.D=4",
              "--set", "task.P=16", "--set", "task.P_test=20", "--no-progress"]
    assert cli.main(["solve", "--out", str(tmp_path / "s"), "--samples", "256"] + common) == 0
    assert os.path.exists(tmp_path / "s" / "theory" / "dmft_gamma0_0.5.npz")
    assert not os.path.exists(tmp_path / "s" / "networks")
    assert cli.main(["simulate", "--out", str(tmp_path / "n"), "--widths", "8", "--seeds", "2"] + common) == 0
    assert os.path.exists(tmp_path / "n" / "networks" / "gamma0_0.5_N8.npz")
    assert os.path.exists(tmp_path / "n" / "figures" / "networks.png")
    assert not os.path.exists(tmp_path / "n" / "theory")


@pytest.mark.parametrize("argv, code", [
    (["validate", "--set", "train.stepz=1"], 2),
    (["validate", "--set", "train.steps=abc"], 2),
    (["validate", "--config", "/nonexistent.toml"], 2),
    (["validate", "--set", "simulate.widths=[7]", "--set", "simulate.antithetic=true"], 2),
    (["validate", "--set", "task.D=100000", "--set", "task.P=100000"], 2),   # too large for memory
])
def test_exit_codes_for_bad_configuration(tmp_path, argv, code, capsys):
    out = str(tmp_path / "x")
    assert cli.main(argv + ["--out", out, "--no-progress"]) == code
    assert "error" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "report.md"))


def test_foreign_output_directory_is_refused(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli.main(["solve", "--out", str(out), "--no-progress"] + TINY[:2]) == 3
    assert (out / "notes.txt").read_text() == "mine"


def test_numerical_failure_exit_code(tmp_path):
    argv = ["solve", "--out", str(tmp_path / "d"), "--gamma0", "1", "--eta0", "500", "--steps", "200",
            "--set", "train.save_every=10", "--set", "task.D=4", "--set", "task.P=16",
            "--set", "task.P_test=8", "--samples", "64", "--no-progress"]
    assert cli.main(argv) == 4
