"""Minibatch SGD in the two-layer jobs (`dmft solve`, `dmft simulate`, `dmft validate`):
train.batch_size and train.batch_seed give every DMFT solve and every network ensemble of a
run one batch sequence, so that the DMFT is the one conditioned on the networks' batches."""

import contextlib
import io
import json
import math
import os
import tempfile

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dmft
import networks
from dmft.schedule import default_batch_key
from experiments import cli, jobs, problem

P = 32
SIZES = ["--no-progress", "--gamma0", "1", "--steps", "40", "--set", "train.save_every=10", "--set", "task.D=8",
         "--set", f"task.P={P}", "--set", "task.P_test=64"]
SEED = 5                                  # not theory.seed (0): a batch key drawn from that would pass too
SGD = ["--set", "train.batch_size=8", "--set", f"train.batch_seed={SEED}"]
SOLVE = ["--samples", "512", "--set", "theory.replicas=4"]      # (the replicas of the direct solves below)
NETS = ["--widths", "64", "256", "--seeds", "4"]


def _main(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(argv)
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return code, err.getvalue()


def _job(out, job, *extra):
    code, err = _main([job, "--out", str(out)] + SIZES + list(extra))
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    return _job(tmp_path_factory.mktemp("sgd") / "solve", "solve", *SOLVE, *SGD)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    return _job(tmp_path_factory.mktemp("sgd") / "simulate", "simulate", *NETS, *SGD)


@pytest.fixture(scope="module")
def theory():
    """The problem of SIZES solved directly: on the batch sequence of train.batch_seed = SEED,
    on another one, and by full-batch gradient descent (a schedule written here, not the job's)."""
    cfg = jobs.load_config(None, ["task.D=8", f"task.P={P}", "task.P_test=64"])
    prob = problem.build(cfg)
    model = prob.model.replace(gamma0=1.0)
    sgd = dmft.Schedule(eta0=0.5, steps=40, save_every=10, batch_size=8)
    kw = dict(key=jax.random.key(0), method="auto", samples=512, replicas=4, sampler="stratified")
    solve = lambda sch, **more: dmft.solve(model, prob.data, sch, **kw, **more)      # noqa: E731
    return {"prob": prob, "model": model, "schedule": sgd,
            "same": solve(sgd, batch_key=default_batch_key(jax.random.key(SEED))),
            "other": solve(sgd, batch_key=default_batch_key(jax.random.key(SEED + 1))),
            "full": solve(sgd.replace(batch_size=None))}


def _key_data(key):
    return np.asarray(jax.random.key_data(key)).tolist()


# ------------------------------------------------------------------ one batch sequence

def test_solve_is_the_dmft_of_the_batch_sequence_of_batch_seed(solved, theory):
    """The saved DMFT is dmft.solve(..., batch_key=fold_in(key(batch_seed), 2^31 - 1)) called
    directly, bit for bit, not the full-batch one; the report says SGD."""
    saved = dmft.Solution.load(str(solved / "theory" / "dmft_gamma0_1"))
    same, full = theory["same"], theory["full"]
    for name in ("f_train", "f_test", "train_loss", "test_loss"):
        np.testing.assert_array_equal(getattr(saved, name), getattr(same, name), err_msg=name)
    assert saved.info["batch_key"] == _key_data(default_batch_key(jax.random.key(SEED)))
    assert np.abs(saved.test_loss - full.test_loss).max() > 0.05
    cfg = json.loads((solved / "run.json").read_text())["config"]
    assert (cfg["train"]["batch_size"], cfg["train"]["batch_seed"]) == (8, SEED)
    assert "minibatch SGD: B = 8 of the P = 32" in (solved / "report.md").read_text()


def test_simulate_trains_every_network_on_the_same_batches(simulated, theory):
    """Every seed of every width trains on the run's one batch sequence: the saved N = 64
    ensemble is networks.train(..., batch_key=K) bit for bit, and the N = 256 ensemble's mean
    prediction is far closer to the DMFT on K than to the DMFT on another sequence or the
    full-batch DMFT (measured: rms 0.044 against 0.28 and 0.18)."""
    runs = {w: networks.Run.load(str(simulated / "networks" / f"gamma0_1_N{w}")) for w in (64, 256)}
    K = default_batch_key(jax.random.key(SEED))
    for run in runs.values():
        assert run.info["shared_batches"] and run.info["batch_size"] == 8
        assert run.info["config"]["batch_key"] == _key_data(K)
    prob = theory["prob"]
    direct = networks.train(theory["model"], prob.data, width=64, seeds=4, schedule=theory["schedule"],
                            key=jax.random.fold_in(jax.random.key(1), 0), batch_key=K)
    np.testing.assert_array_equal(runs[64].f_test, direct.f_test)
    mean = np.mean(runs[256].f_test, axis=0)
    rms = {name: float(np.sqrt(np.mean((mean - theory[name].f_test) ** 2))) for name in ("same", "other", "full")}
    assert rms["same"] < 0.5 * min(rms["other"], rms["full"]), rms
    rep = json.loads((simulated / "report.json").read_text())
    assert "gamma0" not in rep["model"] and rep["gamma0"] == [1.0]      # (the model's default was recorded)
    md = (simulated / "report.md").read_text()
    assert "minibatch SGD: B = 8" in md and "| wall s (incl. its compile, where not reused) |" in md    # (its column said 's')


def test_another_batch_seed_or_size_is_another_run(solved):
    """run.json's identity holds train.batch_size and train.batch_seed: the same command is
    "already complete", another batch_seed or batch size (full batch included) a different run,
    refused without --force, naming the key."""
    argv = ["solve", "--out", str(solved)] + SIZES + SOLVE
    code, err = _main(argv + SGD)
    assert code == 0 and "already complete" in err, err
    for other, key in ((["--set", "train.batch_size=8", "--set", f"train.batch_seed={SEED + 1}"], "train.batch_seed"),
                       (["--set", "train.batch_size=4", "--set", f"train.batch_seed={SEED}"], "train.batch_size"),
                       ([], "train.batch_size")):
        code, err = _main(argv + other)
        assert code == cli.EXIT_OUTPUT and "different run" in err and key in err, err
    assert json.loads((solved / "run.json").read_text())["config"]["train"]["batch_seed"] == SEED


# ------------------------------------------------------------------ refused at load

_BAD = st.one_of(st.integers(max_value=-1).map(str), st.integers(min_value=P + 1, max_value=2 ** 62).map(str),
                 st.floats().filter(lambda x: not (math.isfinite(x) and x.is_integer() and 0 <= x <= P)).map(repr),
                 st.sampled_from(["true", "'eight'", "[8]", "8.5"]))


@settings(max_examples=40, deadline=None)
@given(job=st.sampled_from(["solve", "simulate", "validate"]), value=_BAD)
def test_a_bad_batch_size_is_refused_at_load_naming_it(job, value):
    """A negative, non-integer or larger-than-P train.batch_size: exit 2, one line naming
    train.batch_size (its own refusal, not an unknown key), nothing written."""
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/out"
        code, err = _main([job, "--out", out, "--no-progress", "--set", f"task.P={P}",
                           "--set", f"train.batch_size={value}"])
        assert code == cli.EXIT_CONFIG, err
        assert "configuration error: train.batch_size: " in err and "unknown key" not in err, err
        assert not os.path.exists(out)


@pytest.mark.parametrize("sets, key", [
    (["train.batch_seed=3"], "train.batch_seed"),                                   # full batch reads no batches
    ([f"train.batch_size={P}", "train.batch_seed=3"], "train.batch_seed"),           # B = P is full batch
    (["train.batch_size=8", "train.batch_seed=-1"], "train.batch_seed"),
    (["train.batch_size=8", "train.batch_seed=4294967296"], "train.batch_seed"),
    (["train.batch_size=8", "theory.method='iterate'"], "train.batch_size"),         # iterate: full batch only
])
def test_settings_sgd_cannot_honour_are_refused_naming_the_key(sets, key, tmp_path):
    out = tmp_path / "out"
    for job in ("solve", "validate"):
        code, err = _main([job, "--out", str(out), "--no-progress", "--set", f"task.P={P}"]
                          + [x for s in sets for x in ("--set", s)])
        assert code == cli.EXIT_CONFIG and f"configuration error: {key}: " in err, err
        assert not out.exists()


def test_a_batch_larger_than_a_data_files_points_is_refused_before_anything_is_written(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    dmft.Dataset(rng.normal(size=(6, 3)), rng.normal(size=6), rng.normal(size=(4, 3)),
                 rng.normal(size=4)).save(str(path))
    out = tmp_path / "out"
    code, err = _main(["validate", "--out", str(out), "--no-progress", "--set", "task.name=npz",
                       "--set", f"task.path={path}", "--set", "train.batch_size=7"])
    assert code == cli.EXIT_CONFIG and "train.batch_size: must be <= P = 6" in err and "task.path" in err, err
    assert not out.exists()


@pytest.mark.parametrize("sets", [["theory.method='lazy'"], ["train.weight_decay=0.1"],
                                  ["model.activation='linear'", "theory.method='closure'"],
                                  [f"train.batch_size={P}"]])
def test_sgd_with_lazy_closure_or_weight_decay_passes_the_preflight(sets):
    """What the library solves under SGD passes every check before compute (the lazy baseline's
    included); B = P is full-batch gradient descent: no batch key, no batch size."""
    cfg = jobs.load_config(None, [f"task.P={P}", "task.D=8", "train.batch_size=8", *sets])
    prob = jobs.preflight(cfg, "validate")
    sgd = cfg["train"]["batch_size"] < P
    assert prob.schedule.batch_size == (8 if sgd else None)
    assert ("batch_key" in prob.solve_options) == ("batch_key" in prob.train_options) == sgd
    if sgd:
        assert prob.solve_options["batch_key"] is prob.train_options["batch_key"]


# ------------------------------------------------------------------ validate

@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    return _job(tmp_path_factory.mktemp("sgd") / "validate", "validate", *SOLVE, *NETS, *SGD)


def test_validate_under_sgd_runs_end_to_end(validated):
    """The DMFT and the networks on one batch sequence, the lazy baseline solved (kernel SGD),
    verdicts reported."""
    man = json.loads((validated / "run.json").read_text())
    assert man["status"] == "complete" and man["checks"], man
    assert any(c["name"].startswith("lazy limit") for c in man["checks"]), man["checks"]
    K = _key_data(default_batch_key(jax.random.key(SEED)))
    assert dmft.Solution.load(str(validated / "theory" / "dmft_gamma0_1")).info["batch_key"] == K
    assert networks.Run.load(str(validated / "networks" / "gamma0_1_N256")).info["config"]["batch_key"] == K
    lazy = dmft.Solution.load(str(validated / "theory" / "lazy_gamma0_1"))
    assert lazy.info["config"]["solve"]["batch_size"] == 8
    assert "minibatch SGD: B = 8" in (validated / "report.md").read_text()


def test_the_lazy_baseline_sees_the_run_s_batches(validated):
    lazy = dmft.Solution.load(str(validated / "theory" / "lazy_gamma0_1"))
    assert lazy.info["batch_key"] == _key_data(default_batch_key(jax.random.key(SEED)))


def test_a_full_batch_run_written_before_the_sgd_keys_is_the_same_run(tmp_path):
    """A run.json whose configuration lacks train.batch_size and train.batch_seed (written before
    they existed) is read as full-batch descent, their value then: the same command is "already
    complete" there (it was refused as a different run), and an SGD run there still differs."""
    out = _job(tmp_path / "old", "solve", *SOLVE)
    path = out / "run.json"
    manifest = json.loads(path.read_text())
    for key in ("batch_size", "batch_seed"):
        del manifest["config"]["train"][key]
    del manifest["seal"]                                        # (written before run.json was sealed too)
    path.write_text(json.dumps(manifest))
    code, err = _main(["solve", "--out", str(out)] + SIZES + SOLVE)
    assert code == 0 and "already complete" in err, err
    code, err = _main(["solve", "--out", str(out)] + SIZES + SOLVE + SGD)
    assert code == 3 and "different run" in err and "train.batch_size" in err, err
