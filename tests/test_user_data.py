"""A theorist's own data (README, "Your own data on the command line"): the arrays and files
users bring, read by `dmft.Dataset`, `dmft.tasks.load_npz` and the jobs' `task.path`, and what
each does before any computation."""

import os
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dmft
from dmft.runner import TRACE_COUNTS

# every real dtype numpy reads from an .npz: each is computed in float64
DTYPES = (np.float16, np.float32, np.float64, np.longdouble, np.int8, np.int16, np.int32, np.int64,
          np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)


@settings(max_examples=30, deadline=None)
@given(dtype=st.sampled_from(DTYPES), which=st.sampled_from(["x", "y"]), seed=st.integers(0, 2 ** 16))
def test_every_real_dtype_is_read_with_its_values(dtype, which, seed):
    """A file of any real dtype gives a Dataset whose arrays hold the same numbers as float64 (its
    digest is the float64 copy's). np.longdouble (extended precision) raised numpy's TypeError
    ("cannot be cast from dtype('float128') to dtype('float64') according to the rule 'safe'")
    from the overflow check, not a Dataset or an InputError."""
    rng = np.random.default_rng(seed)
    top = 2 if dtype is np.bool_ else 60           # (sums up to 118: exact in every dtype, int8 and float16 too)
    x = rng.integers(0, top, size=(12, 3)).astype(np.float64)
    y = x[:, 0] if dtype is np.bool_ else x[:, 0] + x[:, 1]
    arrays = {"x": x, "y": y}
    arrays[which] = arrays[which].astype(dtype)
    data = dmft.Dataset(arrays["x"][:8], arrays["y"][:8], arrays["x"][8:], arrays["y"][8:])
    ref = dmft.Dataset(x[:8], y[:8], x[8:], y[8:])
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(np.asarray(getattr(data, name), np.float64), getattr(ref, name))
        assert np.asarray(getattr(data, name)).dtype.itemsize <= 8, name       # (nothing wider than float64)
    assert data.digest == ref.digest


def test_extended_precision_beyond_float64_is_refused_naming_the_array(tmp_path):
    """A long double value beyond float64's range is refused naming its array; numpy's TypeError
    came first before."""
    x = np.ones((6, 2), dtype=np.longdouble)
    x[2, 1] = np.longdouble("1e400")
    np.savez(tmp_path / "wide.npz", x_train=x, y_train=np.ones(6))
    with pytest.raises(dmft.InputError,
                       match=r"wide\.npz: x_train: values up to 1\.00e\+400 are beyond float64's range"):
        dmft.tasks.load_npz(tmp_path / "wide.npz")


def _save(path, x, y):
    dmft.Dataset(x[:30], y[:30], x[30:], y[30:]).save(path)
    return path


@pytest.mark.parametrize("x_scale, y_scale, warned", [
    (1.0, 1.0, None), (1e3, 1.0, "x_train: mean |x|^2 / D = "), (1e-3, 1.0, "x_train: mean |x|^2 / D = "),
    (1.0, 1e3, "y_train: RMS "), (1.0, 0.0, "y_train: every target is 0"), (3.0, 0.2, None)])
def test_a_file_far_from_the_theory_units_is_named_when_read(tmp_path, x_scale, y_scale, warned):
    """The theory's units take |x|^2 / D and the targets of order one. Inputs scaled by 1e-3 ran
    validate to all PASS on a loss that never moved (0.342 -> 0.342), by 1e3 stopped at the lazy
    limit's unstable step, targets by 1e3 overflowed the DMFT at gamma0 = 0.1: nothing said the
    data's scale was the cause before the run. `load_npz` now warns, naming the file, the array
    and its scale; standardized data, and data a few times off, read silently."""
    x = np.random.default_rng(0).normal(size=(40, 4))
    path = _save(tmp_path / "d.npz", x_scale * x, y_scale * np.tanh(x[:, 0]))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        data = dmft.tasks.load_npz(path)
    texts = [str(w.message) for w in seen if issubclass(w.category, UserWarning)]
    if warned is None:
        assert texts == [] and dmft.tasks.scale_note(data) is None
    else:
        assert len(texts) == 1 and texts[0].startswith(f"d.npz: {warned}"), texts
        assert "order one" in texts[0] or "nothing to learn" in texts[0]
    np.testing.assert_array_equal(data.x_train, x_scale * x[:30])        # solved as given: no rescaling


def test_the_scale_warning_comes_from_the_jobs_preflight_before_any_compute(tmp_path):
    """`dmft validate` on such a file says so while the configuration is checked: nothing
    compiled or ran yet."""
    from experiments.jobs import load_config, preflight
    x = np.random.default_rng(1).normal(size=(40, 4))
    path = _save(tmp_path / "small.npz", 1e-3 * x, np.tanh(x[:, 0]))
    cfg = load_config(None, ["task.name='npz'", f"task.path='{path}'", "theory.samples=256",
                             "train.steps=20", "train.save_every=10", "simulate.widths=[16]", "simulate.seeds=2"])
    before = dict(TRACE_COUNTS)
    with pytest.warns(UserWarning, match=r"small\.npz: x_train: mean \|x\|\^2 / D = \d\.\d+e-07, outside"):
        preflight(cfg, "validate")
    assert TRACE_COUNTS == before


def test_a_rewrite_that_keeps_size_and_mtime_changes_the_recorded_digest(tmp_path):
    """run.json's and a scan store's `task.path sha256` was cached by (path, size, mtime): a file
    rewritten with other values of the same shapes and its mtime restored (cp -p, rsync -t,
    os.utime) kept the old digest in the same process, so a rerun was taken for the same run."""
    from experiments.problem import data_digest
    rng = np.random.default_rng(2)
    path = tmp_path / "mine.npz"
    _save(path, rng.normal(size=(40, 3)), rng.normal(size=40))
    cfg = {"task": {"name": "npz", "path": str(path)}}
    first = data_digest(cfg)["task.path sha256"]
    st = os.stat(path)
    _save(path, rng.normal(size=(40, 3)), rng.normal(size=40))          # same shapes: same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns
    second = data_digest(cfg)["task.path sha256"]
    assert second != first
    from dmft.io import sha256
    assert second == sha256(str(path))


def test_a_file_too_large_for_the_solves_is_refused_naming_task_path(tmp_path):
    """A data file whose every solve's setup alone passes theory.max_memory_gb is refused naming
    task.path and its sizes, before any compute, as a generator's task.P is; it was refused by the
    first gamma0's plan ("[sweep at gamma0 = 0.05]: this solve needs about 9.22 GiB ...; save less often
    (save_every), pass kernels=False, use fewer samples or more replicas": none of which helps).
    1200 points: a setup of 0.054 GiB against a limit of 0.02."""
    from dmft.errors import ConfigError
    from experiments.jobs import load_config, preflight
    x = np.random.default_rng(3).normal(size=(1200, 4))
    path = tmp_path / "big.npz"
    dmft.Dataset(x[:1000], x[:1000, 0], x[1000:], x[1000:, 0]).save(path)
    cfg = load_config(None, ["task.name='npz'", f"task.path='{path}'", "theory.max_memory_gb=0.02"])
    before = dict(TRACE_COUNTS)
    with pytest.raises(ConfigError, match=r"^task\.path: a solve on its 1000 training and 200 test points in D = 4 "
                                          r"holds at least 0\.05\d+ GiB .*> theory\.max_memory_gb = 0\.02"):
        preflight(cfg, "solve")
    assert TRACE_COUNTS == before
    # dmft simulate solves no DMFT and does not read [theory]: its networks' own limit decides
    preflight(cfg, "simulate")
    # so for a generated task of those sizes (it was refused at load, for simulate too)
    cfg = load_config(None, ["task.P=1000", "task.P_test=200", "task.D=4", "theory.max_memory_gb=0.02"])
    with pytest.raises(ConfigError, match=r"^task\.P, task\.P_test, task\.D: a solve on 1000 training and 200 test "
                                          r"points in D = 4 holds at least 0\.05\d+ GiB .*> theory\.max_memory_gb"):
        preflight(cfg, "validate")
    preflight(cfg, "simulate")


@settings(max_examples=8, deadline=None)
@given(key=st.sampled_from(["x_train", "y_train", "x_test", "y_test"]), ragged=st.booleans())
def test_an_object_array_is_refused_naming_it_with_pickles_off(tmp_path_factory, key, ragged):
    """An object array in the file (ragged rows, or any array of Python objects: np.savez pickles
    it) is refused naming the array and the numeric form to save instead, never unpickled; the
    refusal was numpy's "Object arrays cannot be loaded when allow_pickle=False", naming neither
    the array nor anything the user can do (allow_pickle is not theirs to set)."""
    rng = np.random.default_rng(4)
    arrays = {"x_train": rng.normal(size=(6, 2)), "y_train": rng.normal(size=6),
              "x_test": rng.normal(size=(3, 2)), "y_test": rng.normal(size=3)}
    rows = len(arrays[key])
    bad = np.empty(rows, dtype=object)
    for i in range(rows):
        bad[i] = list(range(i % 2 + 1)) if ragged else float(i)
    arrays[key] = bad
    path = tmp_path_factory.mktemp("obj") / "obj.npz"
    np.savez(path, **arrays)
    with pytest.raises(dmft.InputError,
                       match=rf"obj\.npz: {key} is an object array .*np\.asarray\({key}, dtype=float\)"):
        dmft.tasks.load_npz(path)


@settings(max_examples=12, deadline=None)
@given(key=st.sampled_from(["x_train", "y_train", "x_test", "y_test"]),
       flaw=st.sampled_from(["nan", "inf", "rows", "complex"]))
def test_a_flawed_array_in_the_file_is_refused_naming_the_file_and_the_array(tmp_path_factory, key, flaw):
    """A file whose arrays the Dataset refuses (NaN or inf, rows that do not match, a complex
    array) is refused naming task.path, the file and the array, before any compute: it read
    "[task]: x_train: contains 1 NaN or infinite value(s)", naming neither the file nor the key
    (`load_npz` alone said "x_train: ..." too: with several files, which one?)."""
    from dmft.errors import ConfigError
    from experiments.jobs import load_config, preflight
    rng = np.random.default_rng(5)
    arrays = {"x_train": rng.normal(size=(8, 3)), "y_train": rng.normal(size=8),
              "x_test": rng.normal(size=(4, 3)), "y_test": rng.normal(size=4)}
    a = arrays[key]
    named = key
    if flaw == "rows":
        a = a[:-1]
        named = "y" + key[1:]                      # (a row mismatch is named by the pair's targets)
    elif flaw == "complex":
        a = a + 1j
    else:
        a = a.copy()
        a[(1,) * a.ndim] = np.nan if flaw == "nan" else -np.inf
    arrays[key] = a
    path = tmp_path_factory.mktemp("flawed") / "mine.npz"
    np.savez(path, **arrays)
    with pytest.raises(dmft.InputError, match=rf"^{re.escape(str(path))}: {named}: "):
        dmft.tasks.load_npz(path)
    cfg = load_config(None, ["task.name='npz'", f"task.path='{path}'"])
    before = dict(TRACE_COUNTS)
    with pytest.raises(ConfigError, match=rf"^task\.path: {re.escape(str(path))}: {named}: "):
        preflight(cfg, "solve")
    assert TRACE_COUNTS == before


def test_a_run_that_learned_nothing_says_so_in_its_report(tmp_path, capsys):
    """Inputs scaled by 1e-3 (|x|^2 / D ~ 1e-6): the loss stayed where it started and every check
    PASSed, report.md saying nothing of it (the load's scale warning is on stderr only). The report
    now says nothing was learned, where the theory's train loss moved by less than 1e-3 of its start
    at every gamma0; a run that learns is not flagged."""
    from types import SimpleNamespace

    from experiments import cli
    from experiments.report import STILL_REL, still_note

    x = np.random.default_rng(5).normal(size=(36, 4))
    y = np.tanh(x[:, 0]) + 0.5 * x[:, 1]
    path = tmp_path / "tiny.npz"
    dmft.Dataset(1e-3 * x[:16], y[:16], 1e-3 * x[16:], y[16:]).save(path)
    out = str(tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["solve", "--out", out, "--set", "task.name='npz'", "--set", f"task.path='{path}'",
                         "--gamma0", "0.5", "1", "--steps", "20", "--samples", "256", "--set", "train.save_every=10",
                         "--no-progress"]) == 0
    capsys.readouterr()
    with open(os.path.join(out, "report.md")) as fh:
        assert "**Nothing was learned**: the theory's train loss moved by at most" in fh.read()

    def sweep(*moves):
        sols = {g: SimpleNamespace(train_loss=np.array([1.0, 1.0 - m]), t=np.array([0.0, 1.0]))
                for g, m in enumerate(moves)}
        return SimpleNamespace(gamma0s=list(sols), solutions=sols)
    assert still_note(sweep(0.1 * STILL_REL, 0.5 * STILL_REL)) is not None
    assert still_note(sweep(0.1 * STILL_REL, 2 * STILL_REL)) is None          # (one gamma0 learned)
    assert still_note(sweep(0.3, 0.5)) is None
