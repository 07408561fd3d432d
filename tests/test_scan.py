"""Parameter scans: results equal single solves, compile once per shape, and survive devices,
processes, SIGKILL, full disks and wrong configurations without losing or redoing a point."""

import dataclasses
import errno
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys

import hashlib
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import dmft
import jax
from dmft.runner import TRACE_COUNTS
from experiments import cli, scan
from validation.grokking import grokking_times
from experiments.config import to_toml
from experiments.scan import config as scan_config
from experiments.scan import execute
from experiments.scan.execute import SETTINGS, store_identity
from experiments.scan.grid import PartCache, point_ids
from experiments.scan.schema import KINDS
from experiments.store import MUTABLE, Store, StoreConflict, manifest_digest
from scan_configs import TOML   # (linear closure: 20 points, 2 groups, 4 chunks)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "scan_worker.py")


# for the tests in fresh processes, which should spend their time on the point of the test:
# the data from a file (no generator to compile) and two groups of one shape (one compilation)
# (a seed axis needs a method that draws nodes: under the closure every seed gave the same point;
# plain Monte Carlo nodes, whose draw compiles in a fraction of the time of the stratified
# sampler's QR, sorts and Newton loop: this scan took 1.3-2.1 s in one process, 3.2-3.4 s with those)
TOML_SEEDS = (TOML.replace('"task.P" = [12, 16]', '"theory.seed" = [0, 1]')
              .replace('[scan]\n', '[theory]\nmethod = "forward"\nsampler = "mc"\nsamples = 32\nreplicas = 2\n\n'
                                    '[scan]\n')
              .replace('name = "single_index"\nD = 4\nP = 12\nP_test = 8\ndegree = 1',
                       'name = "npz"\npath = "{path}"'))


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "scan.toml"
    path.write_text(TOML)
    return str(path)


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    # the run's compile counts are those of a process that had not compiled its programs: a
    # module fixture is built again where a test worker comes back to this module, and a scan of
    # the same configuration then found its programs compiled (0 compiles a group, not 1)
    jax.clear_caches()
    out = str(tmp_path_factory.mktemp("ref") / "store")
    return scan.run(config, out)


@pytest.fixture(scope="module")
def config_seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfg")
    dmft.tasks.single_index(D=4, P=12, P_test=8, degree=1, key=0).save(d / "data.npz")
    (d / "scan_seeds.toml").write_text(TOML_SEEDS.format(path=d / "data.npz"))
    return str(d / "scan_seeds.toml")


@pytest.fixture(scope="module")
def reference_seeds(config_seeds, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "store")
    return scan.run(config_seeds, out)


def _assert_same(a: scan.ScanResult, b: scan.ScanResult, rtol=0.0):
    """Bit for bit, or within rtol of each array's largest value (a loss near zero is the
    difference of O(1) numbers, so its own relative error says nothing)."""
    assert a.complete and b.complete
    assert sorted(a.arrays) == sorted(b.arrays)
    for k in a.arrays:
        if rtol == 0.0:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            scale = np.nanmax(np.abs(b[k])) if np.isfinite(b[k]).any() else 0.0
            np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=rtol * scale, err_msg=k)


def _worker(args, xla_flags="", **kw):
    """A fresh process running `dmft scan ARGS` (with this process's XLA flags, plus xla_flags)."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, XLA_FLAGS=flags)
    return subprocess.Popen([sys.executable, WORKER] + args, cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _finish(proc, timeout=180):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def _chunks_written(path):
    return [e["chunk"] for e in Store.read(path).events() if e.get("event") == "chunk"]


# ------------------------------------------------------------------ grid, plan, configuration

def test_grid_order_groups_and_chunks(config):
    cfg = scan.load_config(config)
    grid = scan.grid_of(cfg)
    assert grid.fields == ("model.gamma0", "train.eta0", "task.P") and grid.shape == (5, 2, 2)
    cols = grid.columns()
    assert grid.point(11) == {"model.gamma0": 1.0, "train.eta0": 0.5, "task.P": 16}
    assert all(cols[f][11] == v for f, v in grid.point(11).items())
    pl = scan.plan(cfg)
    assert [g.fields for g in pl.groups] == [{"task.P": 12}, {"task.P": 16}]
    assert [c.name for c in pl.chunks] == ["g0000-c000000", "g0000-c000001",
                                          "g0001-c000000", "g0001-c000001"]
    assert [len(c.indices) for c in pl.chunks] == [6, 4, 6, 4]
    assert sorted(np.concatenate([c.indices for c in pl.chunks]).tolist()) == list(range(20))
    assert all(np.all(cols["task.P"][c.indices] == pl.groups[c.group].fields["task.P"]) for c in pl.chunks)
    pts = scan.grid_of(scan.load_config({"scan": {"points": {"gamma0": [1, 2], "P": [8, 8]}}}))
    assert pts.kind == "points" and pts.shape == (2,) and pts.point(1) == {"model.gamma0": 2.0, "task.P": 8}


def test_a_whole_grid_override_replaces_the_grid_and_an_axis_override_one_axis(config):
    """--set scan.grid={...} replaces the file's grid (an axis can be dropped); --set
    scan.grid.FIELD=[...] replaces that axis and keeps the others."""
    base = scan.grid_of(scan.load_config(config))
    one = scan.grid_of(scan.load_config(config, ['scan.grid={"model.gamma0" = [0.5, 2.0]}']))
    assert one.fields == ("model.gamma0",) and one.shape == (2,)
    axis = scan.grid_of(scan.load_config(config, ["scan.grid.model.gamma0=[0.5, 2.0]"]))
    assert axis.fields == base.fields and axis.shape == (2,) + base.shape[1:]


@pytest.mark.parametrize("table, match", [
    ({"scan": {"grid": {"gamma": [1.0]}}}, "unknown field 'gamma'"),
    ({"scan": {"grid": {"gamma0": []}}}, "empty grid"),
    ({"scan": {"grid": {}}}, "give exactly one of"),      # (an empty table is no grid)
    ({"scan": {}}, "exactly one of"),
    ({"scan": {"grid": {"gamma0": [1.0]}, "points": {"gamma0": [1.0]}}}, "exactly one of"),
    ({"scan": {"grid": {"gamma0": [1.0, -2.0]}}}, r"model.gamma0\[1\]: must be > 0"),
    ({"scan": {"grid": {"task.P": [8, 0]}}}, r"task.P\[1\]: must be >= 1"),
    ({"scan": {"grid": {"gamma0": [1.0, 1.0]}}}, "repeated values"),
    ({"scan": {"grid": {"seed": [0, 1]}}}, "ambiguous"),
    ({"scan": {"grid": {"gamma0": [1.0], "model.gamma0": [2.0]}}}, "model.gamma0 twice"),
    ({"scan": {"grid": {"train.steps": [10, 20]}}}, "cannot be scanned"),
    ({"scan": {"grid": {"save_every": [10, 20]}}}, "train.save_every cannot be scanned"),
    ({"task": {"name": "kumar_quadratic"}, "scan": {"grid": {"degree": [1, 2]}}}, "not used by"),
    ({"scan": {"grid": {"width": [8, 16]}}}, "scan.networks is false"),
    ({"scan": {"grid": {"eps": [0.1]}}}, "model.eps is scanned"),
    ({"scan": {"points": {"gamma0": [1.0, 2.0], "eta0": [0.5]}}}, "same number of values"),
    ({"scan": {"grid": {"gamma0": [1.0]}, "outputs": ["kernels"]}}, "scan.outputs"),
    ({"scan": {"grid": {"gamma0": [1.0]}, "theory": False}}, "nothing to compute"),
    ({"scan": {"grid": {"P": [8, 16]}, "outputs": ["predictions"]}}, "predictions"),
    ({"sweep": {"gamma0": [1.0]}}, r"unknown section \[sweep\]"),
    ({"scan": {"grid": {"gamma0": [1.0]}, "chunk": 0}}, "scan.chunk"),
    ({"model": {"activation": "relu", "eps": 0.3}, "scan": {"grid": {"gamma0": [1.0]}}}, "model.eps: used only"),
    ({"task": {"name": "kumar_quadratic", "degree": 5}, "scan": {"grid": {"gamma0": [1.0]}}},
     "task.degree: not used by task.name = 'kumar_quadratic'"),
    # fixed settings of a part the scan does not run (they were accepted and read by nothing)
    ({"simulate": {"width": 64}, "scan": {"grid": {"gamma0": [1.0]}}},
     r"^simulate.width: set, but scan.networks is false, so nothing reads \[simulate\]"),
    ({"theory": {"samples": 128}, "scan": {"grid": {"gamma0": [1.0]}, "theory": False, "networks": True}},
     r"^theory.samples: set, but scan.theory is false"),
])
def test_bad_configuration_names_the_key(table, match):
    with pytest.raises(scan.ConfigError, match=match):
        scan.load_config(table)


def test_the_settings_of_a_part_the_scan_runs_are_read():
    """(the refusals above, of [simulate] without networks and [theory] without theory, leave
    the settings of what does run alone)"""
    cfg = scan.load_config({"simulate": {"width": 64}, "theory": {"samples": 128},
                            "scan": {"grid": {"gamma0": [1.0]}, "networks": True}})
    assert cfg["simulate"]["width"] == 64 and cfg["theory"]["samples"] == 128


@pytest.mark.parametrize("kind", ["two_layer", "deep_linear"])
def test_a_scan_file_is_read_like_any_config_file(tmp_path, kind, monkeypatch):
    """A scan TOML's relative task.path is relative to the file, not the current directory,
    and an error in the file names the file (the two-layer scan read it as a bare table)."""
    (tmp_path / "cfg").mkdir()
    good, bad = tmp_path / "cfg" / "s.toml", tmp_path / "cfg" / "bad.toml"
    head = f'[scan]\nkind = "{kind}"\n'
    if kind == "two_layer":
        good.write_text(head + '[scan.grid]\n"model.gamma0" = [0.5, 1.0]\n'
                        '[task]\nname = "npz"\npath = "data.npz"\n')
    bad.write_text(head + "[model]\nnot_a_key = 1\n")
    monkeypatch.chdir(tmp_path)
    if kind == "two_layer":
        assert scan.load_config("cfg/s.toml")["task"]["path"] == str(tmp_path / "cfg" / "data.npz")
    with pytest.raises(scan.ConfigError, match=r"^cfg/bad.toml: unknown key model.not_a_key"):
        scan.load_config("cfg/bad.toml")


_TINY_KUMAR = """[task]
name = "kumar_quadratic"
D = 4
P = 8
P_test = 8
[model]
activation = "quadratic"
eps = 0.2
readout = "fixed"
[scan]
outputs = ["final"]
chunk = 1
"""
_TINY_NETWORKS = "[simulate]\nwidth = 8\nseeds = 2\n"


@pytest.mark.parametrize("extra, match", [
    ('[train]\neta0 = 1.0\nsteps = 20\nsave_every = 10\n[scan.grid]\n"train.weight_decay" = [0.0, 0.1, 2.0]\n',
     r"grid point 2 \(train.weight_decay = 2\): weight_decay: eta0 \* weight_decay = 2 >= 1 flips"),
    ('[train]\nsteps = 20\nsave_every = 2\nfinal_time = 10.0\n[scan.grid]\n'
     '"train.eta0" = [0.1, 0.5, 2.0]\n', r"grid point 2 \(train.eta0 = 2\): eta0: \[2.0\] too large"),
])
@pytest.mark.parametrize("theory", [True, False])
def test_every_grid_point_is_checked_before_the_first_chunk(tmp_path, capsys, extra, match, theory):
    """A point that solve_batch would refuse (decay against eta0, a final-time grid its eta0
    cannot hold) is refused, named by its grid index and values, before any chunk is computed,
    for the theory and for networks alone (chunks were written before)."""
    toml = tmp_path / "s.toml"
    toml.write_text(_TINY_KUMAR.replace('[scan]\n', f'[scan]\ntheory = {str(theory).lower()}\n'
                                        f'networks = {str(not theory).lower()}\n')
                    + ("" if theory else _TINY_NETWORKS) + extra)
    out = tmp_path / "s"
    assert cli.main(["scan", "--config", str(toml), "--out", str(out), "--no-progress"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert not out.exists()


@pytest.mark.parametrize("table, match", [
    ({"scan": {"grid": {"model.gamma": [0.5, 1.0]}}}, "model.gamma: read only with model.init_scale = 0"),
    ({"scan": {"grid": {"teacher.top": [1.0, 5.0]}}}, "teacher.top: read only with a generated"),
    ({"teacher": {"spectrum": "linear"}, "scan": {"grid": {"teacher.exponent": [0.5, 2.0]}}},
     "teacher.exponent: read only with teacher.spectrum = 'power'"),
    ({"model": {"gamma": 2.0}, "scan": {"grid": {"model.depth": [2, 3]}}}, "model.gamma"),
    # axes that changed nothing and ran (rc 0): a random start has no SDE; the networks' seeds
    # without networks
    ({"model": {"init": "random"}, "scan": {"grid": {"theory.seed": [1, 2]}}},
     "theory.seed is scanned but model.init = 'random' has no per-mode SDE"),
    ({"scan": {"networks": False, "grid": {"train.seed": [1, 2]}}},
     "train.seed is read only by the networks, and scan.networks is false"),
])
def test_a_deep_linear_setting_nothing_reads_is_refused(table, match):
    """model.gamma is read only when init_scale = 0, the spectrum fields only by the spectrum
    that uses them: scanned or set, they would make every point the same problem."""
    table = {**table, "scan": {"kind": "deep_linear", **table["scan"]}}
    with pytest.raises(scan.ConfigError, match=match):
        scan.load_config(table)
    assert scan.load_config({"model": {"init_scale": 0.0},
                             "scan": {"kind": "deep_linear", "grid": {"model.gamma": [0.5, 1.0]}}})


def test_cli_bad_configuration_exits_2_and_writes_nothing(tmp_path, config, capsys):
    out = tmp_path / "s"
    assert cli.main(["scan", "--config", config, "--out", str(out), "--no-progress",
                     "--set", "scan.grid.gamma0=[1.0, -1.0]"]) == cli.EXIT_CONFIG
    assert "configuration error" in capsys.readouterr().err and not out.exists()
    # samples not a multiple of 2 x replicas: refused at load, named by the configuration's keys
    assert cli.main(["scan", "--config", config, "--out", str(out), "--no-progress",
                     "--set", "theory.method='forward'", "--set", "theory.samples=10"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "theory.samples (10) must be a multiple of 2 x theory.replicas (8" in err and not out.exists()
    bare = err.replace("theory.samples", "").replace("theory.replicas", "")
    assert not re.search(r"\b(samples|replicas)\b", bare), err     # (the keys, as the user writes them)


@pytest.mark.parametrize("table, match", [
    ({"theory": {"method": "forward", "samples": 30, "replicas": 4}, "scan": {"grid": {"eta0": [0.25, 0.5]}}},
     r"^theory.samples \(30\) must be a multiple of 2 x theory.replicas \(8"),
    ({"theory": {"method": "forward", "replicas": 4}, "scan": {"grid": {"theory.samples": [32, 30]}}},
     r"^scan.grid: at the point theory.samples = 30: theory.samples \(30\) must be a multiple of 2 x "
     r"theory.replicas \(8"),
    ({"theory": {"method": "forward", "samples": 32, "sampler": "mc"},
      "scan": {"points": {"theory.replicas": [4, 3], "eta0": [0.5, 0.25]}}},
     r"^scan.points: at the point theory.replicas = 3: theory.samples \(32\) must be a multiple of "
     r"theory.replicas \(3; theory.sampler = 'mc'\)"),
])
def test_samples_and_replicas_are_refused_by_the_keys_the_user_writes(tmp_path, table, match):
    """The refusal said 'samples (30) must be a multiple of 8 (replicas x antithetic pairs)', the
    library's argument names, and only once the groups were built; now at load, by the keys (and
    the grid's point where an axis sets them). The closure draws no nodes: there any count loads."""
    cfg = {**_SMALL, **table}
    with pytest.raises(scan.ConfigError, match=match) as err:
        scan.load_config(cfg)
    bare = str(err.value).replace("theory.samples", "").replace("theory.replicas", "")
    assert not re.search(r"\b(samples|replicas)\b", bare), err.value
    with pytest.raises(scan.ConfigError, match=match):
        scan.run(cfg, str(tmp_path / "s"))
    assert not (tmp_path / "s").exists()
    assert scan.load_config({**cfg, "theory": {**table["theory"], "method": "closure"}})


# ------------------------------------------------------------------ values a scan dropped or could not compute

_SMALL = {"task": {"name": "single_index", "D": 4, "P": 12, "P_test": 8, "degree": 1},
          "model": {"activation": "linear"}, "train": {"eta0": 0.5, "steps": 20, "save_every": 10}}
_DLN = {"scan": {"kind": "deep_linear"}}


@pytest.mark.parametrize("base, field, value, table, axes", [
    (_SMALL, "model.gamma0", 0.5, "grid", {"model.gamma0": [0.25, 1.0]}),
    (_SMALL, "train.eta0", 0.3, "grid", {"eta0": [0.25, 1.0]}),                 # (a bare axis name)
    (_SMALL, "task.P", 20, "points", {"task.P": [12, 16], "gamma0": [1.0, 2.0]}),
    ({**_SMALL, "theory": {"method": "forward", "samples": 64}}, "theory.seed", 3, "grid", {"theory.seed": [0, 1]}),
    (_DLN, "train.eta0", 0.0123, "grid", {"train.eta0": [0.002, 0.005]}),
])
def test_a_value_set_in_a_section_and_scanned_is_refused(tmp_path, capsys, base, field, value, table, axes):
    """theory.gamma0 = 0.5 in the file beside an axis over it was replaced by the axis at every
    point without a word. Refused naming the key and the axis, from a file or --set, before
    anything is written; a value nobody wrote (the default: a loaded configuration names every
    key, and reloads) and one of the axis's own values (that point is computed) load."""
    sec, key = field.split(".")
    unset = {**base, "scan": {**base.get("scan", {}), table: axes}}
    cfg = {**unset, sec: {**unset.get(sec, {}), key: value}}
    match = rf"^{field} = {value!r} is set in \[{sec}\], but scan.{table} also scans {field} \("
    with pytest.raises(scan.ConfigError, match=match):
        scan.load_config(cfg)
    with pytest.raises(scan.ConfigError, match=match):                    # set by --set
        scan.load_config(unset, [f"{field}={value!r}"])
    path, out = tmp_path / "s.toml", tmp_path / "out"
    path.write_text(to_toml(cfg))
    assert cli.main(["scan", "--config", str(path), "--out", str(out), "--no-progress"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert re.search(match[1:], err) and not out.exists(), err
    kind = KINDS["deep_linear" if base is _DLN else "two_layer"]
    on_axis = next(v for name, v in axes.items() if name in (field, key))[0]
    for ok in (None, kind.schema[sec][key].default, on_axis):
        loaded = scan.load_config(unset if ok is None else {**cfg, sec: {**cfg[sec], key: ok}})
        assert scan.load_config(loaded) == loaded                           # (every key, reloaded)


def test_an_empty_grid_override_turns_a_files_grid_into_points():
    """--set scan.grid={} read as an empty grid ("empty grid (no fields)"), so a file's grid could
    not become points from the command line; it now removes the grid. Alone it leaves neither."""
    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "configs", "scan.toml")
    cfg = scan.load_config(path, ["scan.grid={}", 'scan.points={"model.gamma0"=[0.5, 1.0], "task.P"=[40, 110]}'])
    assert cfg["scan"]["grid"] is None and cfg["scan"]["points"] == {"model.gamma0": [0.5, 1.0], "task.P": [40, 110]}
    assert scan.load_config(cfg) == cfg
    with pytest.raises(scan.ConfigError, match="give exactly one of"):
        scan.load_config(path, ["scan.grid={}"])


def test_the_set_and_scanned_refusal_shows_a_long_axis_elided():
    """A 1000-value axis beside a value set in its section: the refusal printed every value."""
    axis = [round(0.1 + 0.001 * i, 6) for i in range(1000)]
    cfg = {**_SMALL, "model": {**_SMALL["model"], "gamma0": 7.0}, "scan": {"grid": {"model.gamma0": axis}}}
    with pytest.raises(scan.ConfigError) as err:
        scan.load_config(cfg)
    said = str(err.value)
    assert "also scans model.gamma0 ([0.1, 0.101, 0.102, ... 994 more ..., 1.097, 1.098, 1.099])" in said, said
    assert len(said) < 400, said


@settings(max_examples=40, deadline=None)
@given(st.floats(min_value=5e-324, max_value=1.7e308), st.sampled_from(["grid", "points"]))
@example(2.0 ** -511, "grid")
@example(2.0 ** 511, "grid")
@example(1e-300, "grid")
@example(1e300, "points")
@example(float(np.nextafter(2.0 ** -511, 0)), "grid")
@example(float(np.nextafter(2.0 ** 511, np.inf)), "points")
def test_a_gamma0_whose_square_the_float_type_cannot_hold_is_refused_at_load(g, table):
    """gamma0 = 1e-300 or 1e300 loaded, and every such point then computed with gamma0^2 or
    1/gamma0^2 at 0 or inf (float32 reads the values themselves as 0 and inf): flagged diverged.
    A value loads exactly when its square and inverse square are normal float64 numbers (this
    closure scan has no floor of a sampled method or a network); refused naming the table."""
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        sq = np.float64(g) * np.float64(g)
        holds = all(np.isfinite(x) and x >= np.finfo(np.float64).tiny for x in (sq, 1.0 / sq))
    cfg = {**_SMALL, "scan": {table: {"model.gamma0": [g]}}}
    if holds:
        assert scan.load_config(cfg)["scan"][table]["model.gamma0"] == [g]
    else:
        with pytest.raises(scan.ConfigError, match=rf"^scan.{table}: model.gamma0 = {re.escape(f'{g:g}')} "
                                                   r"is outside \[1.49e-154, 6.7e\+153\]"):
            scan.load_config(cfg)
    assert scan_config.gamma0_range("float64") == (2.0 ** -511, 2.0 ** 511)
    assert scan_config.gamma0_range("float32") == (2.0 ** -63, 2.0 ** 63)


@pytest.mark.parametrize("extra, low, why", [
    ({"scan": {"networks": True}}, 1e-12, r"what a network resolves in float64 \(1e-09; networks.train refuses"),
    ({"theory": {"method": "forward"}}, 1e-12, r"what theory.method = 'forward' resolves in float64 \(1e-09"),
    ({"model": {"activation": "tanh"}}, 1e-12, r"what theory.method = 'auto' \(the forward method here\) resolves"),
    ({"theory": {"precision": "mixed"}}, 0.01, r"what theory.precision = 'mixed' resolves \(0.05"),
])
def test_a_gamma0_a_point_would_refuse_is_refused_at_load(tmp_path, extra, low, why):
    """What dmft.solve and networks.train refuse at a point (a sampled method's, mixed precision's
    and a network's floor) is refused when the scan loads, naming scan.grid and the value. The
    networks' floor was checked only at the point, once the store was written."""
    cfg = {**_SMALL, **extra, "scan": {**extra.get("scan", {}), "grid": {"model.gamma0": [1.0, low]}}}
    with pytest.raises(scan.ConfigError, match=rf"^scan.grid: model.gamma0 = {low:g} is below {why}"):
        scan.run(cfg, str(tmp_path / "s"))
    assert not (tmp_path / "s").exists()
    with pytest.raises(scan.ConfigError, match=rf"^model.gamma0 = {low:g} is below {why}"):   # (not scanned)
        scan.load_config({**cfg, "model": {**cfg.get("model", {}), "gamma0": low},
                          "scan": {**cfg["scan"], "grid": {"train.eta0": [0.25, 0.5]}}})


def test_a_gamma0_the_working_float_type_cannot_hold_is_refused_before_the_store(config, tmp_path, capsys):
    """The configuration loads under float64's range (the command loads it before --x32 takes
    effect); the run checks the type it computes in: 1e-25, whose square float32 cannot hold,
    is refused under --x32 before anything is written."""
    out = tmp_path / "s"
    argv = ["scan", "--config", config, "--out", str(out), "--no-progress", "--set",
            "scan.grid.model.gamma0=[1.0, 1e-25]", "--set", "scan.grid.task.P=[12]"]
    assert scan.load_config(config, argv[-3::2])
    try:
        code = cli.main(argv + ["--x32"])
    finally:
        jax.config.update("jax_enable_x64", True)           # (the entry point set float32)
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG and "scan.grid: model.gamma0 = 1e-25 is outside" in err, err
    assert "float32" in err and not out.exists()


# ------------------------------------------------------------------ numbers

def test_points_equal_single_solves(reference):
    res = reference
    assert res.grid.shape == (5, 2, 2) and res["theory.train_loss"].shape == (5, 2, 2, 3)
    for i, j, k in [(0, 0, 1), (2, 1, 1), (4, 0, 1)]:   # one P: the solves share a program
        p = res.grid.point(int(np.ravel_multi_index((i, j, k), res.grid.shape)))
        data = dmft.tasks.single_index(D=4, P=p["task.P"], P_test=8, degree=1, key=0)
        sol = dmft.solve(dmft.TwoLayer("linear", gamma0=p["model.gamma0"]), data,
                         eta0=p["train.eta0"], steps=20, save_every=10)
        np.testing.assert_allclose(res["t"][i, j, k], sol.t, rtol=1e-15)
        np.testing.assert_allclose(res["theory.train_loss"][i, j, k], sol.train_loss, rtol=1e-10)
        np.testing.assert_allclose(res["theory.test_loss"][i, j, k], sol.test_loss, rtol=1e-10)
        np.testing.assert_allclose(res["theory.final.alignment"][i, j, k], sol.alignment[-1], rtol=1e-10)
        np.testing.assert_allclose(res["theory.final.weight_change.first_layer"][i, j, k],
                                   sol.weight_change["first_layer"][-1], rtol=1e-10)
        grok = grokking_times(sol.t, sol.train_loss, sol.test_loss, 0.05)
        for q in ("t_train", "t_test", "gap", "reached_test"):
            np.testing.assert_allclose(res[f"theory.grok.{q}"][i, j, k], getattr(grok, q), rtol=1e-10)
    assert np.all(res["theory.diverged_step"] == -1)
    # two shapes (P = 12, 16): one compilation per group
    assert [g["compiles"] for g in res.manifest["sessions"][-1]["groups"]] == [1, 1]


def test_grid_of_data_seeds_alone(reference, tmp_path):
    # no batched field on the grid: every point at the base gamma0 = 1, eta0 = 0.5 (seed 10's inputs
    # take the kernel grid of seed 0's: both groups run one compiled program)
    res = scan.run({**scan.load_config(reference.config), "scan": {
        **reference.config["scan"], "grid": None, "points": {"task.seed": [0, 10]}}}, str(tmp_path / "s"))
    assert res.grid.shape == (2,) and res.manifest["groups"][1]["fields"] == {"task.seed": 10}
    for k in ("theory.final.test_loss", "theory.train_loss"):
        np.testing.assert_allclose(res[k][0], reference[k][2, 1, 0], rtol=1e-12, atol=1e-15)
    assert res["theory.final.test_loss"][1] != res["theory.final.test_loss"][0]


def test_64_gamma0_values_compile_once(tmp_path):
    table = {"task": {"D": 4, "P": 12, "P_test": 8, "degree": 1}, "model": {"activation": "linear"},
             "train": {"eta0": 0.5, "steps": 30, "save_every": 10},
             "scan": {"chunk": 24, "grid": {"gamma0": np.geomspace(0.01, 10, 64).tolist()}}}
    before = TRACE_COUNTS.get("batch.point", 0)
    res = scan.run(table, str(tmp_path / "s"))
    assert TRACE_COUNTS.get("batch.point", 0) - before == 1       # 3 chunks, the last one padded
    assert res.complete and res["theory.final.train_loss"].shape == (64,)
    assert [e["points"] for e in Store.read(tmp_path / "s").events()] == [24, 24, 16]


def test_networks_per_point_equal_networks_train(tmp_path):
    import jax

    import networks

    # (the networks of test_a_point_draws_the_same_numbers_in_any_grid_that_holds_it: one program)
    table = {"task": {"D": 4, "P": 8, "P_test": 6, "degree": 2}, "model": {"activation": "tanh"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10},
             "simulate": {"width": 8, "seeds": 2, "seed": 3},
             "scan": {"theory": False, "networks": True, "outputs": ["final", "curves", "grokking"],
                      "grok_threshold": 0.11, "points": {"gamma0": [0.5, 2.0], "eta0": [0.5, 0.25]}}}
    res = scan.run(table, str(tmp_path / "n"))
    data = dmft.tasks.single_index(D=4, P=8, P_test=6, degree=2, key=0)
    ids = point_ids(res.config, {"model.gamma0": np.array([0.5, 2.0]), "train.eta0": np.array([0.5, 0.25])},
                    [0, 1], "networks")
    for i, (g, e) in enumerate([(0.5, 0.5), (2.0, 0.25)]):
        run = networks.train(dmft.TwoLayer("tanh", gamma0=g), data, width=8, seeds=2, eta0=e,
                             steps=20, save_every=10, key=jax.random.fold_in(jax.random.key(3), int(ids[i])))
        np.testing.assert_array_equal(res["networks.test_loss"][i], run.test_loss.mean(0))
        np.testing.assert_array_equal(res["networks.error.test_loss"][i],
                                      run.test_loss.std(0, ddof=1) / np.sqrt(2))
        np.testing.assert_array_equal(res["t"][i], run.t)
        # the seed mean's grokking times, with errors from its losses' (the train loss crosses
        # 0.11 between the last two saves; the test loss never does: NaN, as its time)
        se = {f"{n}_se": getattr(run, f"{n}_loss").std(0, ddof=1) / np.sqrt(2) for n in ("train", "test")}
        grok = grokking_times(run.t, run.train_loss.mean(0), run.test_loss.mean(0), 0.11, **se)
        grok = grokking_times(run.t, run.train_loss.mean(0), run.test_loss.mean(0), 0.11, **se,
                              replicas={"train_loss": run.train_loss, "test_loss": run.test_loss})
        for q in ("t_train", "t_test", "t_train_se", "t_test_se", "gap_se", "coarse_train", "coarse_test"):
            np.testing.assert_allclose(res[f"networks.grok.{q}"][i], getattr(grok, q), rtol=1e-12)
        assert np.isfinite(res["networks.grok.t_train_se"][i]) and np.isnan(res["networks.grok.t_test_se"][i])
    assert np.all(res["networks.diverged_seeds"] == 0)
    # one seed: no spread, so no error and no replicas for a jackknife (it raised "needs at least 2")
    from experiments.scan.outputs import network_records
    one = network_records(networks.train(dmft.TwoLayer("tanh", gamma0=0.5), data, width=8, seeds=1, eta0=0.5,
                                         steps=20, save_every=10))
    assert not any(k.startswith(("replicas.", "error.")) for k in one)


def test_a_theory_points_gap_has_its_replicas_error():
    """A scan's theory point stores the gap's standard error, by the jackknife over the batch's
    per-replica losses (`validation.grokking.jackknife_se`), the same as a single solve's."""
    import jax

    from experiments.scan.outputs import derive

    data = dmft.tasks.single_index(D=4, P=32, P_test=24, degree=1, key=jax.random.key(3))
    model = dmft.TwoLayer("tanh", gamma0=1.0)
    sch = dmft.Schedule(eta0=0.5, steps=20, save_every=1)
    key = jax.random.key(5)
    # (plain Monte Carlo nodes: the errors are the point, not the sampler, and their draw compiles in
    # a fraction of the time of the stratified one's QR, sorts and Newton loop)
    res = dmft.solve_batch(model, data, {"gamma0": [1.0, 1.5]}, schedule=sch, samples=256, replicas=4, key=key,
                           sampler="mc")
    sol = dmft.solve(model.replace(gamma0=1.5), data, sch, samples=256, replicas=4, key=jax.random.fold_in(key, 1),
                     kernels=False, sampler="mc")
    theta = 0.5 * (sol.test_loss[0] + sol.test_loss.min())
    out = derive("theory", res, ["grokking"], theta)
    g = grokking_times(sol.t, sol.train_loss, sol.test_loss, theta, train_se=sol.error["train_loss"],
                       test_se=sol.error["test_loss"], replicas={k: sol.replicas[k].T for k in ("train_loss", "test_loss")})
    assert np.isfinite(g.gap_se) and g.gap_se > 0 and np.all(np.isfinite(out["theory.grok.gap_se"]))
    np.testing.assert_allclose(out["theory.grok.gap_se"][1], g.gap_se, rtol=1e-8)
    np.testing.assert_allclose(out["theory.grok.t_test_se"][1], g.t_test_se, rtol=1e-8)


def test_a_divergence_warning_inside_a_scan_names_its_grid_point(tmp_path):
    """networks.train's divergence warning, raised while a scan computed one of its points, said
    "every one of 2 seeds diverged at width 8" and not which point: it now names the grid point
    and its scanned values after the message (a filter on the message's start still applies; the
    point that did not diverge raises nothing)."""
    table = {"task": {"D": 4, "P": 8, "P_test": 6, "degree": 2}, "model": {"activation": "tanh"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10},
             "simulate": {"width": 8, "seeds": 2, "seed": 3},
             "scan": {"theory": False, "networks": True, "outputs": ["final"],
                      "grid": {"train.eta0": [0.5, 1e6]}}}
    with pytest.warns(UserWarning) as caught:
        res = scan.run(table, str(tmp_path / "d"))
    said = [w for w in caught if "diverged" in str(w.message)]
    text = str(said[0].message) if len(said) == 1 else said
    assert text.startswith("networks.train:") and text.endswith("(scan grid point 1: train.eta0 = 1e+06)"), text
    assert said[0].filename == __file__                      # (the user's line: this call)
    assert list(res["networks.diverged_seeds"]) == [0, 2]
    import warnings
    with warnings.catch_warnings(record=True) as quiet:      # a filter on the message's start applies
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message="networks.train: every")
        scan.run(table, str(tmp_path / "q"))
    assert not [w for w in quiet if "diverged" in str(w.message)], [str(w.message) for w in quiet]


def test_a_scan_over_the_sgd_batch_size_equals_single_solves_and_networks_on_one_sequence(tmp_path):
    """train.batch_size on the grid: one group per batch size, every point (theory and networks)
    on the batch sequence of train.batch_seed, equal to dmft.solve / networks.train given that
    batch key; the full-batch point (B = 0) is gradient descent."""
    import jax

    import networks
    from dmft.schedule import default_batch_key

    # (plain Monte Carlo nodes: the batches are the point, not the sampler, and their draw compiles
    # in a fraction of the time of the stratified one's QR, sorts and Newton loop)
    table = {"task": {"D": 4, "P": 12, "P_test": 8, "degree": 2}, "model": {"activation": "tanh"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10, "batch_seed": 4},
             "theory": {"samples": 256, "replicas": 2, "seed": 1, "sampler": "mc"},
             "simulate": {"width": 8, "seeds": 2, "seed": 3},
             "scan": {"networks": True, "outputs": ["final", "curves"],
                      "grid": {"gamma0": [0.5, 2.0], "train.batch_size": [0, 3]}}}
    res = scan.run(table, str(tmp_path / "b"))
    assert res.complete and len(res.manifest["groups"]) == 2
    data = dmft.tasks.single_index(D=4, P=12, P_test=8, degree=2, key=0)
    bkey = default_batch_key(jax.random.key(4))
    for i, g in enumerate([0.5, 2.0]):
        for j, B in enumerate([0, 3]):
            cols = {"model.gamma0": np.array([g]), "train.batch_size": np.array([B])}
            tid, nid = (int(point_ids(res.config, cols, [0], part)[0]) for part in ("theory", "networks"))
            sch = dmft.Schedule(eta0=0.5, steps=20, save_every=10, batch_size=B or None)
            model = dmft.TwoLayer("tanh", gamma0=g)
            sol = dmft.solve(model, data, schedule=sch, samples=256, replicas=2, sampler="mc",
                             key=jax.random.fold_in(jax.random.key(1), tid), batch_key=bkey if B else None)
            np.testing.assert_allclose(res["theory.test_loss"][i, j], sol.test_loss, rtol=1e-10)
            run = networks.train(model, data, width=8, seeds=2, schedule=sch,
                                 key=jax.random.fold_in(jax.random.key(3), nid), batch_key=bkey if B else None)
            np.testing.assert_allclose(res["networks.test_loss"][i, j], run.test_loss.mean(0), rtol=1e-12)
    assert np.all(res["theory.test_loss"][:, 0, -1] != res["theory.test_loss"][:, 1, -1])


def test_a_data_files_batch_settings_are_checked_against_its_points_before_the_store(tmp_path, capsys):
    """task.name = npz: a file's P is known once it is read; a batch_seed where every batch is
    the file's whole set (full batch) is refused then, as dmft solve refuses it, before any
    store is written (it was accepted and ignored)."""
    x = np.random.default_rng(0).normal(size=(20, 3))
    dmft.Dataset(x[:10], np.tanh(x[:10, 0]), x[10:], np.tanh(x[10:, 0])).save(str(tmp_path / "d.npz"))
    out = tmp_path / "s"
    code = cli.main(["scan", "--out", str(out), "--no-progress", "--set", "task.name='npz'", "--set",
                     f"task.path='{tmp_path / 'd.npz'}'", "--set", "train.batch_size=10", "--set",
                     "train.batch_seed=3", "--set", "scan.grid.gamma0=[0.5, 1.0]", "--set", "train.steps=20",
                     "--set", "train.save_every=10"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG and "train.batch_seed: read only by minibatch SGD" in err, err
    assert not out.exists()
    # a file whose solves' setup alone passes theory.max_memory_gb: refused naming task.path and its
    # sizes (it named train.save_every, theory.samples, scan.chunk: none of which can help)
    code = cli.main(["scan", "--out", str(out), "--no-progress", "--set", "task.name='npz'", "--set",
                     f"task.path='{tmp_path / 'd.npz'}'", "--set", "theory.max_memory_gb=1e-7", "--set",
                     "scan.grid.gamma0=[0.5, 1.0]", "--set", "train.steps=20", "--set", "train.save_every=10"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG and "task.path: a solve on its 10 training and 10 test points" in err, err
    assert not out.exists()


def test_a_scan_drops_compiled_programs_between_groups_when_they_crowd_memory_maps(tmp_path, monkeypatch):
    """A scan over many shapes compiles a few programs a group (~700 memory maps each group, at
    full optimization); past the kernel's limit XLA's compiler segfaulted. Between groups the
    scan drops JAX's compiled programs once they crowd the maps: the same numbers, compiled again."""
    import jax

    import dmft.runner as runner

    # (a linear activation, solved by the exact closure: its programs compile in a fifth of the
    # time of a sampled tanh solve's, and the groups drop and compile them again all the same)
    table = {"task": {"D": 4, "P": 12, "P_test": 8}, "model": {"activation": "linear"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10},
             "scan": {"grid": {"gamma0": [0.5, 1.0], "task.P": [10, 12]}}}
    plain = scan.run(table, str(tmp_path / "plain"))
    cleared = []
    real = jax.clear_caches
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(1) or real())
    monkeypatch.setattr(runner, "memory_maps", lambda: (10 ** 6, 65530))      # always crowded
    crowded = scan.run(table, str(tmp_path / "crowded"))
    assert len(cleared) == 1                                                  # between the 2 groups
    for k in ("theory.final.test_loss", "theory.final.train_loss", "theory.final.alignment"):
        np.testing.assert_array_equal(crowded[k], plain[k])


def test_a_full_batch_points_key_does_not_read_the_sgd_settings():
    """A full-batch point (batch_size 0, or at least task.P) reads neither train.batch_size nor
    train.batch_seed: its draws are those of the same point without them (its part is computed
    once, and as before these keys existed); an SGD point reads both."""
    table = {"task": {"D": 4, "P": 12, "P_test": 8}, "model": {"activation": "tanh"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10},
             "scan": {"grid": {"train.batch_size": [0, 12, 4], "train.batch_seed": [1, 2]}}}
    cfg = scan.load_config(table)
    cols = scan.grid_of(cfg).columns()
    ids = point_ids(cfg, cols, range(6), "theory").reshape(3, 2)
    plain = scan.load_config({**table, "train": table["train"], "scan": {"grid": {"gamma0": [1.0]}}})
    base = point_ids(plain, {"model.gamma0": np.array([1.0])}, [0], "theory")[0]
    assert np.all(ids[:2] == base)                     # B = 0 and B = P = 12, either seed
    assert ids[2, 0] != ids[2, 1] and base not in ids[2]


@pytest.mark.parametrize("grid, train, match", [
    ({"train.batch_size": [4, 13]}, {}, "train.batch_size \\(13\\) must be <= task.P \\(12"),
    ({"gamma0": [0.5, 1.0]}, {"batch_seed": 3}, "train.batch_seed: read only by minibatch SGD"),
    ({"train.batch_seed": [1, 2]}, {}, "train.batch_seed: read only by minibatch SGD"),
    ({"train.batch_size": [0, 12]}, {"batch_seed": 3}, "train.batch_seed"),
])
def test_a_scan_refuses_sgd_settings_it_cannot_honour_at_load(grid, train, match):
    table = {"task": {"D": 4, "P": 12, "P_test": 8}, "model": {"activation": "tanh"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10, **train}, "scan": {"grid": grid}}
    with pytest.raises(dmft.ConfigError, match=match):
        scan.load_config(table)


# ------------------------------------------------------------------ devices and processes

def test_sharded_over_4_devices_equals_unsharded(config_seeds, reference_seeds, tmp_path):
    out = str(tmp_path / "sharded")
    _finish(_worker(["--config", config_seeds, "--out", out, "--no-progress"],
                    "--xla_force_host_platform_device_count=4"))
    sharded = scan.load(out)
    assert len(sharded.manifest["sessions"][-1]["devices"]) == 4
    _assert_same(sharded, reference_seeds, rtol=1e-12)


def test_two_processes_equal_one(config_seeds, reference_seeds, tmp_path):
    out = str(tmp_path / "two")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [_worker(["--config", config_seeds, "--out", out, "--no-progress", "--coordinator",
                      f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)])
             for i in range(2)]
    texts = [_finish(p) for p in procs]
    assert "of 20 points done" in texts[0][0] and "points done" not in texts[1][0]  # process 0 reports
    _assert_same(scan.load(out), reference_seeds)
    writers = {e["chunk"]: e["process"] for e in Store.read(out).events()}
    assert sorted(writers) == [c.name for c in scan.plan(reference_seeds.config).chunks]
    assert set(writers.values()) == {0, 1}                              # both computed chunks


# ------------------------------------------------------------------ interruptions and the store

def test_sigkill_midway_then_resume_equals_uninterrupted(config_seeds, reference_seeds, tmp_path):
    out = str(tmp_path / "killed")
    proc = _worker(["--pause-after", "2", "--config", config_seeds, "--out", out, "--no-progress"])
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready and proc.stdout.readline().strip() == "PAUSED", proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    chunks = sorted(os.listdir(os.path.join(out, "chunks")))
    assert len([c for c in chunks if c.endswith(".npz")]) == 2 and any(".tmp-" in c for c in chunks)
    partial = scan.load(out)
    assert partial.done.sum() == 10 and np.isnan(partial["theory.final.test_loss"][~partial.done]).all()
    res = scan.run(config_seeds, out)
    _assert_same(res, reference_seeds)
    written = _chunks_written(out)
    assert sorted(written) == sorted(set(written)) and len(written) == 4     # each chunk once
    assert not any(".tmp-" in c for c in os.listdir(os.path.join(out, "chunks")))
    killed, resumed = res.manifest["sessions"]
    assert killed["status"] == "running" and resumed["status"] == "complete"
    assert resumed["skipped_points"] == 10 and resumed["computed_points"] == 10
    # the killed session's counts were saved with each of its chunks: the summary counts them
    assert killed["computed_points"] == 10 and sum(g["chunks"] for g in killed["groups"]) == 2
    assert killed["seconds"] > 0
    assert "20 of 20 points done (10 computed by the last session; 20 computed over 2 session(s)" in res.summary()


def test_a_scan_writes_a_report_of_what_it_holds(reference):
    """A scan wrote no report: only its printed summary said what the store held. Each session
    ends by writing report.md there: the grid, the summary, every output's shape, how to read it
    and the configuration, from the store as loaded (verified)."""
    text = open(os.path.join(reference.path, "report.md")).read()
    assert text.startswith("# Scan (two_layer): model.gamma0 x train.eta0 x task.P")
    assert "20 of 20 points done (product grid, shape (5, 2, 2)); last session: complete." in text
    assert "| model.gamma0 | 0.25, 0.5, 1, 2, 4 |" in text and "| task.P | 12, 16 |" in text
    assert reference.summary() in text
    for q, a in reference.arrays.items():
        assert f"| {q} | {tuple(a.shape)} | {a.dtype} |" in text
    assert f"res = scan.load({reference.path!r})" in text
    copy = shutil.copytree(reference.path, reference.path + "-nore")     # a report whose write failed:
    os.remove(os.path.join(copy, "report.md"))                          # a complete rerun writes it
    said = []
    scan.run(reference.config, copy, log=said.append)
    assert "already complete" in said[0] and "wrote its missing report" in said[1], said
    assert open(os.path.join(copy, "report.md")).read() == text.replace(reference.path, copy)
    call = scan.result.example_figure(reference)            # the figure it shows runs on this scan
    assert call.startswith("res.heatmap('theory.final.test_loss', x='model.gamma0', y='train.eta0', at=")
    assert f"{call}.savefig" in text and eval(call, {"res": reference}) is not None   # (the first report's failed)
    assert "\"task.P\" = [12, 16]" in text and "grok_threshold = 0.05" in text         # the configuration


def test_a_complete_rerun_rewrites_a_changed_or_damaged_report(reference):
    """A complete scan's rerun ("already complete") kept a report.md edited, cut short or swapped
    in from another scan, silently: its numbers then contradicted the verified store. The rerun
    now compares it with the report its store gives and rewrites it, saying so; the report of
    an intact store, named by another path, is kept as it is."""
    copy = shutil.copytree(reference.path, reference.path + "-bad-report")
    path = os.path.join(copy, "report.md")
    text = open(os.path.join(reference.path, "report.md")).read().replace(reference.path, copy)
    for damage in (lambda t: t.replace("20 of 20", "19 of 20"), lambda t: t[: len(t) // 2], lambda t: ""):
        open(path, "w").write(damage(text))
        said = []
        scan.run(reference.config, copy, log=said.append)
        assert "already complete" in said[0] and "report.md did not match its store" in said[1], said
        assert open(path).read() == text
    said = []
    scan.run(reference.config, os.path.relpath(copy), log=said.append)      # intact, named otherwise
    assert "already complete" in said[0] and not any("report" in s for s in said[1:2]), said
    assert open(path).read() == text


def test_rerun_computes_only_missing_chunks(config, reference, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(reference.path, out)
    os.remove(os.path.join(out, "chunks", "g0001-c000000.npz"))
    res = scan.run(config, out)
    _assert_same(res, reference)
    assert _chunks_written(out)[4:] == ["g0001-c000000"]
    sessions = res.manifest["sessions"]
    assert len(sessions) == 2 and sessions[-1]["computed_points"] == 6 and sessions[-1]["skipped_points"] == 14
    env = sessions[-1]["environment"]                   # each session records its versions
    assert {"python", "numpy", "jax", "jaxlib", "x64"} <= set(env), env
    again = scan.run(config, out)                       # complete: nothing computed, no session
    assert again.manifest == res.manifest and len(_chunks_written(out)) == 5
    _assert_same(again, reference)


def _files(out) -> dict:
    """Every file under a store: relative path -> (bytes, modification time)."""
    found = {}
    for d, _, names in os.walk(out):
        for n in names:
            p = os.path.join(d, n)
            found[os.path.relpath(p, out)] = (_read(p), os.stat(p).st_mtime_ns)
    return found


def test_a_complete_scan_reruns_as_already_complete_and_writes_nothing(config, reference, tmp_path, capsys):
    """A rerun of a complete scan printed '0 to compute' and appended a session to the manifest.
    As the other jobs' reruns: it says the scan is already complete, exits 0 and leaves every file
    of the store as it was. A store whose last session was killed after its last chunk is opened
    as a resume opens it: its stale lock cleared, a session recorded that says complete."""
    out = _copy(reference, str(tmp_path))
    before = _files(out)
    assert cli.main(["scan", "--config", config, "--out", out, "--no-progress"]) == cli.EXIT_OK
    said = capsys.readouterr()
    assert "this scan is already complete" in said.err and "0 to compute" not in said.err, said.err
    assert "writing" not in said.err and f"store {out}" in said.err, said.err      # (it wrote nothing)
    assert "20 of 20 points done (20 computed by the last session; 20 computed over 1 session(s)" in said.out
    assert _files(out) == before
    _assert_same(scan.run(config, out), reference)
    assert _files(out) == before
    man = _manifest(out)                                # killed after its last chunk: "running"
    man["sessions"][-1]["status"] = "running"
    _save_manifest(out, man)
    _write(os.path.join(out, ".lock"), b"999999999")
    res = scan.run(config, out, log=print)
    said = capsys.readouterr().out
    assert "already complete" not in said and "cleared the lock left by process 999999999" in said
    assert [x["status"] for x in res.manifest["sessions"]] == ["running", "complete"]
    assert res.manifest["sessions"][-1]["computed_points"] == 0 and _read(os.path.join(out, ".lock")) == b""
    _assert_same(res, reference)


def test_store_refuses_another_configuration_or_version(config, reference, tmp_path, capsys):
    out = str(tmp_path / "other")
    shutil.copytree(reference.path, out)
    code = cli.main(["scan", "--config", config, "--out", out, "--no-progress", "--set", "task.noise=0.1"])
    assert code == cli.EXIT_OUTPUT
    err = capsys.readouterr().err
    assert "differs in: config.task.noise" in err and "rerun it with the original configuration" in err, err
    man_path = os.path.join(out, "manifest.json")
    with open(man_path) as fh:
        man = json.load(fh)
    man["identity"]["versions"]["dmft"] = "0.0.1"
    man["digest"] = manifest_digest(man)                # as another version would have written it
    with open(man_path, "w") as fh:
        json.dump(man, fh)
    with pytest.raises(StoreConflict, match="versions.dmft.*rerun it with the code and versions that computed it"):
        scan.run(config, out)
    man["format"] = "dmft-scan-store/0"
    with open(man_path, "w") as fh:
        json.dump(man, fh)
    with pytest.raises(StoreConflict, match="store format 'dmft-scan-store/0'"):
        scan.run(config, out)
    assert len(os.listdir(os.path.join(out, "chunks"))) == 4             # nothing lost
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(StoreConflict, match="not empty"):
        scan.run(config, str(tmp_path / "notes"))
    import fcntl                                        # another running scan holds the store's lock
    busy = str(tmp_path / "busy")
    shutil.copytree(reference.path, busy)
    os.remove(os.path.join(busy, "chunks", "g0001-c000000.npz"))     # (a chunk left to compute)
    with open(os.path.join(busy, ".lock"), "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(StoreConflict, match="in use by another running scan"):
            scan.run(config, busy)                      # (was a StoreWriteError saying [Errno None])
    (tmp_path / "a_file").write_text("mine")
    with pytest.raises(StoreConflict, match="not a directory"):
        scan.run(config, str(tmp_path / "a_file"))


def test_disk_full_keeps_finished_points_and_resumes(config, reference, tmp_path, monkeypatch, capsys):
    from experiments import store as store_mod

    out = str(tmp_path / "full")
    write = store_mod.atomic_write
    calls = {"chunks": 0}

    def full_after_two(path, data):
        if "chunks" in path:
            calls["chunks"] += 1
            if calls["chunks"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data)

    monkeypatch.setattr(store_mod, "atomic_write", full_after_two)
    assert cli.main(["scan", "--config", config, "--out", out, "--no-progress"]) == cli.EXIT_OUTPUT
    err = capsys.readouterr().err
    assert "No space left on device" in err and "2 chunk(s) already written are kept" in err
    assert scan.load(out).done.sum() == 10
    monkeypatch.setattr(store_mod, "atomic_write", write)
    _assert_same(scan.run(config, out, progress=True), reference)


def test_unwritable_output_is_a_clear_error(config, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["scan", "--config", config, "--out", str(blocker / "s"), "--no-progress"]) \
        == cli.EXIT_OUTPUT
    assert "cannot use" in capsys.readouterr().err


# ------------------------------------------------------------------ loading, summary, figures

def test_cli_summary_and_figures(config, reference, tmp_path, capsys):
    out = str(tmp_path / "cli")
    shutil.copytree(reference.path, out)
    assert cli.main(["scan", "--config", config, "--out", out, "--no-progress"]) == cli.EXIT_OK
    text = capsys.readouterr().out
    assert "20 of 20 points done (20 computed by the last session" in text and "task.P=16" in text
    assert "theory.final.test_loss" in text
    fig = reference.heatmap("theory.final.test_loss", x="gamma0", y="eta0", at={"task.P": 16})
    assert fig.axes[0].get_xlabel() == "model.gamma0"
    fig = reference.lines("theory.grok.t_train", x="gamma0", hue="task.P", at={"eta0": 0.5})
    # (one line per P; every t_train here crosses in the first save interval: ringed as coarse)
    assert [ln.get_label() for ln in fig.axes[0].lines if ln.get_linestyle() == "-"] == ["task.P = 12", "task.P = 16"]
    with pytest.raises(ValueError, match="fix train.eta0"):
        reference.heatmap("theory.final.test_loss", x="gamma0", y="P")
    # the slice is named, and an at= that fixes nothing is refused (both were drawn and titled)
    assert fig.axes[0].get_title().startswith("eta0 = 0.5")
    with pytest.raises(ValueError, match="at: task.P is an axis of the figure"):
        reference.heatmap("theory.final.test_loss", x="gamma0", y="P", at={"P": 16, "eta0": 0.5})
    with pytest.raises(ValueError, match="at: model.eps is not scanned here"):
        reference.lines("theory.final.test_loss", x="gamma0", at={"eps": 7.0, "eta0": 0.5, "P": 16})
    # points not computed are gaps in lines, also for int and bool outputs (-1 and False read as data)
    part = dataclasses.replace(reference, done=reference.done.copy())
    part.done[0, 0, 0] = False
    for name in ("theory.grok.reached_test", "theory.final.test_loss"):     # (diverged_step's -1: no value)
        y = part.lines(name, x="gamma0", at={"eta0": 0.25, "P": 12}).axes[0].lines[0].get_ydata()
        assert np.isnan(y[0]) and np.all(np.isfinite(y[1:])), (name, y)
    from experiments.scan.grid import Grid                # a points grid too (it skipped the checks)
    pts = dataclasses.replace(reference, grid=Grid("points", ("model.gamma0",), ((0.5, 1.0),)),
                              arrays={"theory.final.test_loss": np.array([1.0, 2.0])}, done=np.ones(2, bool))
    for at, what in (({"eta0": 7.0}, "train.eta0 is not scanned"), ({"gamma0": 5.0}, "model.gamma0 is an axis")):
        with pytest.raises(ValueError, match=f"at: {what}"):
            pts.lines("theory.final.test_loss", x="gamma0", at=at)
    assert len(pts.lines("theory.final.test_loss", x="gamma0").axes[0].lines) == 1
    empty = dataclasses.replace(reference, arrays={}, done=np.zeros_like(reference.done))
    with pytest.raises(KeyError, match="no point of this scan is done yet"):
        empty["theory.final.test_loss"]
    # a name not among the outputs, or one axis as two: the project's InputError naming them (a bare
    # KeyError, and "fix task.P with at=..." for x = y)
    from dmft.errors import InputError
    with pytest.raises(InputError, match="'theory.final.nope': not among this scan's outputs"):
        reference.heatmap("theory.final.nope", x="gamma0", y="P", at={"eta0": 0.25})
    with pytest.raises(KeyError):
        reference["theory.final.nope"]
    with pytest.raises(InputError, match="x and y: both are model.gamma0"):
        reference.heatmap("theory.final.test_loss", x="gamma0", y="gamma0", at={"eta0": 0.25})
    with pytest.raises(InputError, match="x and hue: both are model.gamma0"):
        reference.lines("theory.final.test_loss", x="gamma0", hue="gamma0", at={"eta0": 0.25})
    coords = reference.coords()
    assert coords["task.P"][0, 0, 1] == 16 and coords["model.gamma0"].shape == (5, 2, 2)


def test_an_axis_through_zero_is_drawn_linear_and_log_is_refused_there(tmp_path):
    """Axes are logarithmic only when all their values are > 0: a weight-decay axis holding 0
    gets a linear axis in lines (log(0) broke the heatmap's cells and dropped the line's points);
    a heatmap draws 0 and positive values a decade apart on a log axis, the 0 cell one geometric
    step below the smallest positive one and labelled 0 (on a linear axis the cells of 0.01 and
    0.1 were slivers beside each other, as batch sizes [0, 2, 8, 32] were)."""
    toml = tmp_path / "s.toml"
    toml.write_text(_TINY_KUMAR.replace('outputs = ["final"]', 'outputs = ["final", "grokking"]\n'
                                        'grok_threshold = 1e-12')
                    + '[train]\neta0 = 1.0\nsteps = 20\nsave_every = 10\n[scan.grid]\n'
                    '"train.weight_decay" = [0.0, 0.01, 0.1]\n"model.gamma0" = [0.5, 1.0]\n')
    res = scan.run(scan.load_config(str(toml)), str(tmp_path / "s"))
    # the points without decay are a group apart (grid.plan): the summary names each group's decay
    # (a walkthrough: two groups both read "(all points)")
    rows = [line.split() for line in res.summary().splitlines() if line.split()[:1] in (["0"], ["1"])]
    assert [r[1:3] for r in rows] == [["train.weight_decay=0", "2"], ["train.weight_decay>0", "4"]]
    assert np.all(np.isnan(res["theory.grok.t_test"]))                # never reached: no value anywhere
    res.heatmap("theory.grok.t_test", x="weight_decay", y="gamma0", logc=True)   # hatched, not refused
    res.lines("theory.grok.t_test", x="weight_decay", logy=True, at={"gamma0": 0.5})
    fig = res.heatmap("theory.final.test_loss", x="weight_decay", y="gamma0")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    fig.canvas.draw()
    ticks = ax.get_xticks()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.01", "0.1"]
    np.testing.assert_allclose(ticks, [1e-3, 1e-2, 1e-1])                  # one step of x10 below
    mesh = ax.collections[0]
    edges = np.unique(mesh.get_coordinates()[..., 0])
    np.testing.assert_allclose(np.diff(np.log(edges)), np.log(10))          # equal cells in log x
    np.testing.assert_array_equal(mesh.get_array().reshape(2, 3), res["theory.final.test_loss"].T)
    line = res.lines("theory.final.test_loss", x="weight_decay", hue="gamma0").axes[0]
    assert line.get_xscale() == "linear" and all(len(l.get_xdata()) == 3 for l in line.get_lines())
    with pytest.raises(dmft.InputError, match="logx=True: train.weight_decay has values <= 0"):
        res.heatmap("theory.final.test_loss", x="weight_decay", y="gamma0", logx=True)
    # at= matches relatively: 1e-10 (and 1e-8) was taken for the grid's 0 (absolute 1e-8)
    for off in (1e-10, 1e-8, 0.0100001):
        with pytest.raises(dmft.InputError, match="not on the grid"):
            res.lines("theory.final.test_loss", x="gamma0", at={"weight_decay": off})
    for j, kappa in enumerate([0.0, 0.01, 0.1]):
        (drawn,) = res.lines("theory.final.test_loss", x="gamma0", at={"weight_decay": kappa}).axes[0].get_lines()
        np.testing.assert_array_equal(drawn.get_ydata(), res["theory.final.test_loss"][j])


def test_heatmap_tells_missing_points_from_values(reference):
    """Cells sit on the grid values (the ticks), points not computed and points without a
    value are hatched and named in a legend instead of drawn as values, and the title says
    where the other axes are fixed."""
    import dataclasses

    name = "theory.final.test_loss"
    done = reference.done.copy()
    done[0, 0, 0] = False                              # gamma0[0], eta0[0], P[0]: not computed
    values = reference[name].copy()
    values[1, 0, 0] = np.nan                           # computed, no value (e.g. not reached)
    res = dataclasses.replace(reference, done=done, arrays={**reference.arrays, name: values})
    P = float(reference.coords()["task.P"][0, 0, 0])
    fig = res.heatmap(name, x="gamma0", y="eta0", at={"task.P": P})
    ax = fig.axes[0]
    gammas = np.unique(reference.coords()["model.gamma0"])
    np.testing.assert_allclose(sorted(ax.get_xticks()), gammas)
    assert f"P = {P:g}" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["not computed", "no value (not reached or diverged)"]
    drawn = ax.collections[0].get_array()             # the value mesh: both cells masked
    assert np.ma.count_masked(drawn) == 2
    full = reference.heatmap(name, x="gamma0", y="eta0", at={"task.P": P}).axes[0]
    assert full.get_legend() is None and np.ma.count_masked(full.collections[0].get_array()) == 0


# ------------------------------------------------------------------ damaged stores

def _read(path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _write(path, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as fh:
        fh.write(data)


def _flip(path):
    data = bytearray(_read(path))
    data[len(data) // 2] ^= 0xFF
    _write(path, bytes(data))


DAMAGE = {       # each reads the file before it opens it for writing (a truncated file keeps a third)
    "empty": lambda p, q: _write(p, b""),
    "truncated": lambda p, q: _write(p, _read(p)[: os.path.getsize(p) // 3]),
    "extended": lambda p, q: _write(p, b"\0" * 17, "ab"),
    "corrupted": lambda p, q: _flip(p),
    "garbage": lambda p, q: _write(p, os.urandom(os.path.getsize(p))),
    "swapped": lambda p, q: (os.replace(p, p + ".x"), os.replace(q, p), os.replace(p + ".x", q)),
    "removed": lambda p, q: os.remove(p),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_chunks_are_named_set_aside_and_recomputed(config, reference, tmp_path, kind, capsys):
    """Every kind of damage to a chunk file is detected (checksum, size and points recorded in
    the manifest), reported by file name on load, moved aside on resume (never deleted) and
    recomputed: the resumed store equals an uninterrupted run bit for bit."""
    out = str(tmp_path / "s")
    shutil.copytree(reference.path, out)
    chunks = sorted(f for f in os.listdir(os.path.join(out, "chunks")) if f.endswith(".npz"))
    p, q = (os.path.join(out, "chunks", c) for c in (chunks[0], chunks[-1]))
    size = os.path.getsize(p)
    DAMAGE[kind](p, q)
    if kind == "truncated":
        assert os.path.getsize(p) == size // 3 > 0
    loaded = scan.load(out)                                     # reads what is good, names the rest
    assert not loaded.complete
    if kind != "removed":
        assert chunks[0] in loaded.damaged, loaded.damaged
        assert chunks[0] in loaded.summary()
    resumed = scan.run(config, out, log=print)
    _assert_same(resumed, reference)
    if kind != "removed":
        assert "is damaged" in capsys.readouterr().out
        assert any(f.startswith(chunks[0] + ".damaged") for f in os.listdir(os.path.join(out, "chunks")))


@pytest.mark.parametrize("field", ["identity", "digest", "grid", "chunk_names", "chunks", "sessions"])
def test_a_manifest_that_lost_a_field_is_refused_naming_it(reference, tmp_path, field):
    out = str(tmp_path / "s")
    shutil.copytree(reference.path, out)
    man = json.loads(_read(os.path.join(out, "manifest.json")))
    del man[field]
    _write(os.path.join(out, "manifest.json"), json.dumps(man).encode())
    with pytest.raises(StoreConflict, match=field):
        scan.load(out)


def test_a_killed_scans_lock_is_reported_stale_and_summaries_count_every_session(config, reference,
                                                                               tmp_path, capsys):
    out = str(tmp_path / "s")
    shutil.copytree(reference.path, out)
    _write(os.path.join(out, ".lock"), b"999999999")              # left by a scan killed with -9
    os.remove(os.path.join(out, "chunks", sorted(os.listdir(os.path.join(out, "chunks")))[0]))
    res = scan.run(config, out, log=print)
    assert "cleared the lock left by process 999999999" in capsys.readouterr().out
    assert _read(os.path.join(out, ".lock")) == b""                # released: empty
    text = res.summary()
    assert "over 2 session(s)" in text and "nan points/s" not in text.split("\n")[0]


def test_scans_over_eta0_say_when_final_values_were_taken(tmp_path):
    base = {"task": {"name": "single_index", "D": 4, "P": 12, "P_test": 8, "degree": 1},
            "model": {"activation": "linear"}, "train": {"eta0": 0.5, "steps": 20, "save_every": 10},
            "scan": {"outputs": ["final"], "grid": {"train.eta0": [0.1, 0.2, 0.5]}}}
    res = scan.run(base, str(tmp_path / "a"))
    np.testing.assert_allclose(res["theory.final.t"], [2.0, 4.0, 10.0])
    assert "t from 2 to 10" in res.summary()
    fig = res.lines("theory.final.test_loss", x="eta0")
    assert "t from 2 to 10" in fig.axes[0].get_title()
    fixed = scan.run({**base, "train": {**base["train"], "final_time": 4.0}}, str(tmp_path / "b"))
    np.testing.assert_allclose(fixed["theory.final.t"], 4.0)
    assert "at t = 4" in fixed.summary()
    with pytest.raises(scan.ConfigError, match="final_time"):
        scan.load_config({**base, "scan": {"grid": {"train.final_time": [1.0, 2.0]}}})


# ------------------------------------------------------------------ what the store verifies

def _copy(reference, where):
    out = os.path.join(where, "s")
    shutil.copytree(reference.path, out)
    return out


def _manifest(out):
    with open(os.path.join(out, "manifest.json")) as fh:
        return json.load(fh)


def _save_manifest(out, man):
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(man, fh, indent=1)


def _chunk_arrays(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _write_npz(path, arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _record_of(path, index):
    """The manifest record a store would write for this file (a forger who recomputes it)."""
    data = _read(path)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "points": int(index.size),
            "index_sha256": hashlib.sha256(np.ascontiguousarray(index, np.int64).tobytes()).hexdigest()}


def test_an_unrecorded_chunk_is_not_done_and_is_recomputed(config, reference, tmp_path, capsys):
    """A valid chunk file with the right points but forged values, whose manifest record was
    removed, is not trusted: load reports it (its points not done), resume moves it aside and
    computes it again; the record written then is the new file's, not the forgery's."""
    out = _copy(reference, str(tmp_path))
    name = "g0000-c000000"
    path = os.path.join(out, "chunks", name + ".npz")
    arrays = _chunk_arrays(path)
    arrays["theory.final.test_loss"] = np.full_like(arrays["theory.final.test_loss"], 123.0)
    _write_npz(path, arrays)
    man = _manifest(out)
    del man["chunks"][name]
    _save_manifest(out, man)
    loaded = scan.load(out)
    assert loaded.done.sum() == 20 - arrays["index"].size
    assert "not recorded in manifest.json" in loaded.damaged[name + ".npz"]
    assert not np.any(loaded["theory.final.test_loss"] == 123.0)
    assert Store.peek(out, store_identity(reference.config), scan.plan(reference.config).expected()) \
        == {c.name for c in scan.plan(reference.config).chunks} - {name}
    resumed = scan.run(config, out, log=print)
    _assert_same(resumed, reference)
    assert "not recorded in manifest.json" in capsys.readouterr().out
    assert _chunks_written(out)[4:] == [name]                          # only that chunk computed
    assert os.path.exists(path + ".damaged-0")                          # kept, not deleted
    assert _manifest(out)["chunks"][name]["sha256"] == hashlib.sha256(_read(path)).hexdigest()


# how a chunk file can be altered: each returns the altered arrays (or raises Skip when it
# would not change this chunk); the store must catch every one even when the forger also
# rewrites the chunk's manifest record to match the altered file
def _drop_output(a, k):
    return {q: v for q, v in a.items() if q != k}


CHUNK_EDITS = {
    "drop an output": lambda a, k: _drop_output(a, k),
    "add an output": lambda a, k: {**a, k + ".extra": a[k]},
    "change an output's dtype": lambda a, k: {**a, k: a[k].astype(np.float32 if a[k].dtype != np.float32
                                                                 else np.float64)},
    "change an output's shape": lambda a, k: {**a, k: np.stack([a[k], a[k]], axis=-1)},
    "relabel the coordinates": lambda a, k: {**a, **{q: v * 2 + 1 for q, v in a.items() if q.startswith("__coord__")}},
    "drop the coordinates": lambda a, k: {q: v for q, v in a.items() if not q.startswith("__coord__")},
    "another scan's digest": lambda a, k: {**a, "__store__": np.frombuffer(json.dumps(
        {**json.loads(a["__store__"].tobytes()), "digest": "0" * 64}).encode(), np.uint8)},
    "another chunk's name": lambda a, k: {**a, "__store__": np.frombuffer(json.dumps(
        {**json.loads(a["__store__"].tobytes()), "name": "g0000-c000009"}).encode(), np.uint8)},
    "drop the store record": lambda a, k: {q: v for q, v in a.items() if q != "__store__"},
    "forge values": lambda a, k: {**a, k: np.full_like(a[k], 123)},
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunk=st.integers(0, 3), edit=st.sampled_from(sorted(CHUNK_EDITS)), output=st.integers(0, 100),
       record=st.sampled_from(["removed", "rewritten to match"]))
# (always: relabelled coordinates under a rewritten record, which only a check of the coordinates'
# values, not their shape, catches; a mutation audit's random draws caught its absence 2 times of 3)
@example(chunk=1, edit="relabel the coordinates", output=0, record="rewritten to match")
def test_an_altered_chunk_is_named_and_not_done(reference, chunk, edit, output, record):
    """Generated alterations of a chunk file (an output dropped, added, retyped or reshaped,
    coordinates relabelled, the manifest digest or name it was written for changed), with its
    manifest record removed or rewritten to match the altered file: load never counts its
    points as done and names the file with what is wrong. (Forged values under a rewritten
    record match everything the store keeps, so that one combination is left out.)"""
    if edit == "forge values" and record == "rewritten to match":
        return
    # no scan runs beside this reader: the waits for one that a reader makes before calling an
    # unrecorded chunk damaged (test_a_reader_beside_a_running_scan_...) are only slept here
    with tempfile.TemporaryDirectory() as where, pytest.MonkeyPatch.context() as m:
        m.setattr(Store, "READ_WAIT", 0.0)
        out = _copy(reference, where)
        names = sorted(n[:-4] for n in os.listdir(os.path.join(out, "chunks")))
        name = names[chunk]
        path = os.path.join(out, "chunks", name + ".npz")
        arrays = _chunk_arrays(path)
        outputs = sorted(k for k in arrays if k != "index" and not k.startswith("__"))
        altered = CHUNK_EDITS[edit](arrays, outputs[output % len(outputs)])
        _write_npz(path, altered)
        man = _manifest(out)
        if record == "removed":
            del man["chunks"][name]
        else:
            man["chunks"][name].update(_record_of(path, arrays["index"]))
        _save_manifest(out, man)
        loaded = scan.load(out)
        assert not loaded.done.reshape(-1)[arrays["index"]].any(), (edit, record)
        assert loaded.done.sum() == 20 - arrays["index"].size
        assert set(loaded.damaged) == {name + ".npz"} and loaded.damaged[name + ".npz"]
        assert name + ".npz" in loaded.summary()


def _leaves(obj, path=()):
    """Paths to every value (and every list) inside a JSON document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(obj, list):
        yield path
        for i, v in enumerate(obj):
            yield from _leaves(v, path + (i,))
    else:
        yield path


def _changed(value, how: int):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1 if how % 2 else value + 0.5
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value[:-1] if value and how % 2 else value + [value[-1] if value else 0]
    return 0 if value is None else None


def _edit(man, path, how):
    parent = man
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = _changed(parent[path[-1]], how)


_FIXED = None


def _fixed_paths(reference):
    global _FIXED
    if _FIXED is None:
        man = _manifest(reference.path)
        _FIXED = sorted((p for k in man if k not in MUTABLE and k != "format" for p in _leaves(man[k], (k,))),
                        key=str)
    return _FIXED


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(0, 10 ** 6), how=st.integers(0, 1), redigest=st.booleans())
def test_an_edited_manifest_is_refused_or_labels_nothing(reference, pick, how, redigest):
    """Any edit of the manifest's fixed part (configuration, grid, chunk names, groups, versions,
    ...) is refused on load naming manifest.json; an editor who also recomputes the digest gets
    either a refusal (the manifest disagrees with its own plan) or no point labelled: every chunk
    is reported as written for another configuration. Results are never relabelled."""
    paths = _fixed_paths(reference)
    path = paths[pick % len(paths)]
    with tempfile.TemporaryDirectory() as where:
        out = _copy(reference, where)
        man = _manifest(out)
        _edit(man, path, how)
        if redigest:
            man["digest"] = manifest_digest(man)
        _save_manifest(out, man)
        try:
            loaded = scan.load(out)
        except StoreConflict as err:
            assert "manifest.json" in str(err), (path, str(err))
            if not redigest:     # (an edited "created" read "its configuration, grid or chunk list")
                assert "its fixed fields (" in str(err) and path[0] in str(err).split("(")[1], (path, str(err))
            return
        assert redigest, path
        assert loaded.done.sum() == 0 and len(loaded.damaged) == 4, (path, loaded.damaged)
        assert all("another configuration or grid" in why for why in loaded.damaged.values())


@pytest.mark.parametrize("edit", ["chunk_names", "grid values"])
def test_resume_and_load_agree_on_an_edited_manifest(config, reference, tmp_path, edit):
    """Emptied chunk names or relabelled grid values (digest recomputed or not): load and resume
    both refuse, or both find nothing done; neither reports a complete scan it cannot load."""
    for redigest in (False, True):
        out = os.path.join(tmp_path, f"{edit}-{redigest}")
        shutil.copytree(reference.path, out)
        man = _manifest(out)
        if edit == "chunk_names":
            man["chunk_names"] = []
        else:
            man["identity"]["config"]["scan"]["grid"]["model.gamma0"][0] = 0.3
            man["grid"]["values"][0][0] = 0.3
        if redigest:
            man["digest"] = manifest_digest(man)
        _save_manifest(out, man)
        cfg = scan.load_config(man["identity"]["config"])
        if edit == "chunk_names" or not redigest:
            with pytest.raises(StoreConflict, match="manifest.json"):
                scan.load(out)
            with pytest.raises(StoreConflict, match="manifest.json"):
                scan.run(cfg, out)
        else:                      # every chunk was written for the old grid: none is done
            loaded = scan.load(out)
            assert loaded.done.sum() == 0 and len(loaded.damaged) == 4


def test_load_without_a_store_is_a_store_error(tmp_path):
    with pytest.raises(StoreConflict, match="no scan store here"):
        scan.load(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreConflict, match="holds no manifest.json"):
        scan.load(str(tmp_path / "empty"))


def test_memory_limits_are_not_part_of_the_identity(reference):
    """Changing any field of the configuration changes the store's identity, except the memory
    limits (they decide whether a chunk runs, never what it gives)."""
    cfg = reference.config
    base = store_identity(cfg)
    for sec, table in cfg.items():
        for key, value in table.items():
            other = json.loads(json.dumps(cfg))
            other[sec][key] = _changed(value, 1) if not isinstance(value, dict) else {}
            if (sec, key) in SETTINGS:
                assert store_identity(other) == base, (sec, key)
            else:
                assert store_identity(other) != base, (sec, key)


def test_settings_outside_the_identity_are_only_the_memory_limits(reference, tmp_path):
    """The manifest's settings are not covered by its digest: a field there other than the
    memory limits (an edit that would relabel the results' configuration) is refused on load."""
    out = _copy(reference, tmp_path)
    man = _manifest(out)
    assert set(man["settings"]) <= {f"{s}.{k}" for s, k in SETTINGS}
    man["settings"] = {**man["settings"], "task.P": 999}
    _save_manifest(out, man)
    with pytest.raises(StoreConflict, match="task.P"):
        scan.load(out)


def test_resume_under_another_memory_limit(config, reference, tmp_path, capsys):
    """The audit's case: rerunning a scan with a larger theory.max_memory_gb resumes it (exit 0,
    the missing chunk computed, equal to the uninterrupted run); the limit each session ran
    under is recorded; a result-changing field is still refused."""
    out = _copy(reference, str(tmp_path))
    os.remove(os.path.join(out, "chunks", "g0001-c000000.npz"))
    assert cli.main(["scan", "--config", config, "--out", out, "--no-progress",
                     "--set", "theory.max_memory_gb=8", "--set", "simulate.max_memory_gb=7"]) == cli.EXIT_OK
    res = scan.load(out)
    _assert_same(res, reference)
    assert _chunks_written(out)[4:] == ["g0001-c000000"]
    assert res.manifest["sessions"][-1]["settings"] == {"theory.max_memory_gb": 8.0,
                                                        "simulate.max_memory_gb": 7.0}
    assert res.config["theory"]["max_memory_gb"] == 8.0
    assert "max_memory_gb" not in res.manifest["identity"]["config"]["theory"]
    capsys.readouterr()
    assert cli.main(["scan", "--config", config, "--out", out, "--no-progress",
                     "--set", "theory.max_memory_gb=8", "--set", "theory.seed=5"]) == cli.EXIT_OUTPUT
    assert "differs in: config.theory.seed" in capsys.readouterr().err


def test_a_point_draws_the_same_numbers_in_any_grid_that_holds_it(tmp_path, monkeypatch):
    """Keys came from the point's place in the grid: gamma0 = 1 read 0.308 alone and 0.210 after
    a 0.5 was put before it, and a width scan solved its one theory with other nodes at each
    width (0.308, 0.210, 0.244). Now from a digest of the coordinates each part reads."""
    # (plain Monte Carlo nodes: which nodes a point draws is the point, not how, and their draw
    # compiles in a fraction of the time of the stratified one's QR, sorts and Newton loop)
    base = {"task": {"D": 4, "P": 8, "P_test": 6, "degree": 2}, "model": {"activation": "tanh"},
            "train": {"eta0": 0.5, "steps": 20, "save_every": 10},
            "theory": {"samples": 64, "replicas": 2, "sampler": "mc"}, "simulate": {"width": 8, "seeds": 2, "seed": 0}}
    # every group here holds two points (one compiled program per kind of point: gamma0 = 1 first
    # or after another value, of the same shape)
    final = {}
    for name, gammas in (("first", [1.0, 2.0]), ("after", [0.5, 1.0])):
        table = {**base, "scan": {"networks": True, "grid": {"model.gamma0": gammas}}}
        res = scan.run(table, str(tmp_path / name))
        j = gammas.index(1.0)
        final[name] = (res["theory.final.test_loss"][j], res["networks.final.test_loss"][j])
    # another axis beside it, at the configuration's value there (eta0 = 0.5): the same point
    table = {**base, "scan": {"networks": True, "grid": {"model.gamma0": [1.0], "train.eta0": [0.5, 0.25]}}}
    res = scan.run(table, str(tmp_path / "beside"))
    final["beside"] = (res["theory.final.test_loss"][0, 0], res["networks.final.test_loss"][0, 0])
    # a weight-decay axis beside it: its point at decay 0 lost the control variate (a program
    # batching the decay has none) and read other numbers; it has a program of its own now
    table = {**base, "scan": {"networks": True, "grid": {"model.gamma0": [1.0, 2.0],
                                                         "train.weight_decay": [0.0, 0.1]}}}
    res = scan.run(table, str(tmp_path / "decay"))
    final["decay"] = (res["theory.final.test_loss"][0, 0], res["networks.final.test_loss"][0, 0])
    assert final["first"] == final["after"] == final["beside"] == final["decay"], final
    # a width scan solves its one theory once (it did at each width); a samples scan trains its
    # one ensemble once
    computed = {"theory": [], "networks": []}
    for part in computed:
        def counted(self, idx, part=part, run=getattr(execute._GroupRun, f"_{part}")):
            computed[part].append(len(idx))
            return run(self, idx)
        monkeypatch.setattr(execute._GroupRun, f"_{part}", counted)
    # (each width, each number of samples, a group of two gamma0 values)
    table = {**base, "scan": {"networks": True, "grid": {"model.gamma0": [1.0, 2.0], "simulate.width": [8, 16]}}}
    res = scan.run(table, str(tmp_path / "widths"))
    loss = {part: res[f"{part}.final.test_loss"] for part in computed}
    assert np.array_equal(loss["theory"][:, 0], loss["theory"][:, 1]) and loss["theory"][0, 0] == final["first"][0]
    assert np.all(loss["networks"][:, 0] != loss["networks"][:, 1])
    assert computed == {"theory": [2], "networks": [2, 2]}, computed
    table = {**base, "scan": {"networks": True, "grid": {"model.gamma0": [1.0, 2.0], "theory.samples": [64, 128]}}}
    res = scan.run(table, str(tmp_path / "samples"))
    loss = {part: res[f"{part}.final.test_loss"] for part in computed}
    assert np.array_equal(loss["networks"][:, 0], loss["networks"][:, 1]) and loss["networks"][0, 0] == final["first"][1]
    assert loss["theory"][0, 0] == final["first"][0] and np.all(loss["theory"][:, 0] != loss["theory"][:, 1])
    assert computed == {"theory": [2, 2, 2], "networks": [2, 2, 2]}, computed
    cols = {"model.gamma0": np.array([1.0]), "simulate.width": np.array([8.0])}
    assert point_ids(res.config, cols, [0], "theory")[0] != point_ids(res.config, cols, [0], "networks")[0]
    with pytest.raises(dmft.ConfigError, match="point 2 repeats point 0"):   # (they would be identical)
        scan.load_config({**base, "scan": {"points": {"gamma0": [1.0, 0.5, 1.0], "eta0": [0.5, 0.5, 0.5]}}})


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=6), min_size=1, max_size=5),
       st.sampled_from([0, 40, 2 ** 20]))
def test_a_part_cache_returns_what_computing_gives_and_computes_each_point_once(calls, max_bytes):
    """PartCache.rows_of: the rows of every asked point, in order (repeats too), computing only
    points it does not hold, once per call; an evicted point is only computed again."""
    cache, seen = PartCache(max_bytes), set()
    for points in calls:
        digests = [bytes([p]) for p in points]
        asked = []

        def compute(pos, digests=digests, asked=asked):
            asked.extend(digests[j] for j in pos)
            return {"v": np.array([[digests[j][0], -1.0] for j in pos]), "s": np.array([digests[j][0] for j in pos])}

        got = cache.rows_of(digests, compute)
        np.testing.assert_array_equal(got["v"], [[p, -1.0] for p in points])
        np.testing.assert_array_equal(got["s"], points)
        assert len(asked) == len(set(asked))
        if max_bytes == 2 ** 20:
            assert set(asked) == set(digests) - seen
        seen |= set(digests)
        assert cache.nbytes <= max_bytes or not cache.rows
    assert cache.nbytes == sum(v.nbytes for row in cache.rows.values() for v in row.values())


def test_a_store_written_by_other_code_or_on_another_platform_is_not_resumed(tmp_path, monkeypatch):
    """The identity held dmft.__version__ (a constant) and no platform: a resume after an edit
    of the solver mixed chunks of both codes (test loss ratio [1, 1, 1.1] in the review)."""
    from experiments import output

    table = {"task": {"D": 4, "P": 8, "P_test": 6, "degree": 1}, "model": {"activation": "linear"},
             "train": {"eta0": 0.5, "steps": 4, "save_every": 2}, "theory": {"samples": 16, "replicas": 2},
             "scan": {"chunk": 1, "grid": {"model.gamma0": [0.5, 1.0]}}}
    out = str(tmp_path / "s")
    scan.run(table, out)
    ident = store_identity(scan.load_config(table))
    here = dmft.io.compute_platform()
    assert ident["code"] == output.code_digest() and len(ident["code"]) == 64 and ident["platform"] == here
    other = "gpu" if here == "cpu" else "cpu"
    for name, value in (("code_digest", lambda: "0" * 64), ("compute_platform", lambda: other)):
        with monkeypatch.context() as m:
            if name == "code_digest":
                m.setattr(output, name, value)
            else:
                m.setattr("dmft.io.compute_platform", value)
            with pytest.raises(StoreConflict, match="code" if name == "code_digest" else "platform") as err:
                scan.run(table, out)
            said = str(err.value)
            assert ("no configuration alone restores them" if name == "code_digest" else "(--device)") in said, said
            assert "the original configuration" not in said, said
    assert scan.run(table, out)["theory.final.test_loss"].shape == (2,)          # same code: resumed


_TINY = {"task": {"D": 4, "P": 8, "P_test": 6, "degree": 1}, "model": {"activation": "linear"},
         "train": {"eta0": 0.5, "steps": 4, "save_every": 2}, "theory": {"samples": 16, "replicas": 2},
         "scan": {"chunk": 1, "grid": {"model.gamma0": [0.5, 1.0]}}}


def test_a_failed_manifest_write_leaves_the_directory_usable_and_the_lock_free(tmp_path, monkeypatch):
    """A disk full at the first manifest left .lock and an empty chunks/, and every later run was
    told the directory 'holds no scan'; one at a resume's manifest kept the lock held for as long
    as the traceback lived (a notebook), so the next resume was 'in use by another running scan'."""
    from dmft.errors import StoreWriteError
    from experiments import store as store_mod

    write = store_mod.atomic_write

    def full(path, data):
        if path.endswith("manifest.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data)

    out = str(tmp_path / "s")
    for attempt in ("create", "resume"):
        if attempt == "resume":                    # (a complete scan writes nothing: one chunk to redo)
            os.remove(os.path.join(out, "chunks", sorted(os.listdir(os.path.join(out, "chunks")))[0]))
        with monkeypatch.context() as m:
            m.setattr(store_mod, "atomic_write", full)
            with pytest.raises(StoreWriteError) as caught:
                scan.run(_TINY, out)
        if attempt == "create":
            assert sorted(os.listdir(out)) == [".lock", "chunks"] and not os.listdir(os.path.join(out, "chunks"))
            with open(os.path.join(out, "manifest.json.tmp-12345"), "w") as fh:     # killed mid-write
                fh.write("{")
        held = caught                              # the traceback lives on, as in a notebook
        res = scan.run(_TINY, out)                 # space freed: created, or resumed, at once
        assert res.complete and held is caught


def test_a_scan_shards_over_the_default_device_when_one_is_set(tmp_path):
    """scan.run(devices=None) sharded over every local device of the default backend and
    recorded them, whatever jax_default_device (what --device sets) said."""
    # (one fresh process for both cases: the default device is set for the first and unset,
    # JAX's own again, for the second)
    code = ("import jax, json, sys; jax.config.update('jax_enable_x64', True)\n"
            "jax.config.update('jax_default_device', jax.devices()[1])\n"
            "import dmft.batch as B\nfrom experiments import scan\n"
            f"res = scan.run(json.loads(sys.argv[1]), {str(tmp_path / 'd')!r})\n"
            "print(res.manifest['sessions'][-1]['devices'])\n"
            "jax.config.update('jax_default_device', None)\n"
            "orig, seen = B._run, set()\n"
            "def spy(*a, **k):\n    out = orig(*a, **k)\n"
            "    seen.update(str(d) for leaf in jax.tree_util.tree_leaves(out) for d in leaf.devices())\n"
            "    return out\nB._run = spy\n"
            f"res = scan.run(json.loads(sys.argv[1]), {str(tmp_path / 'one')!r}, devices=[jax.devices()[1]])\n"
            "print(sorted(seen), res.manifest['sessions'][-1]['devices'])")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip())
    done = subprocess.run([sys.executable, "-c", code, json.dumps(_TINY)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-2] == "['cpu:1']", done.stdout
    # devices=[one device] from Python: the session recorded it while everything ran on JAX's
    # default device (no sharding places a one-device program)
    assert done.stdout.strip().splitlines()[-1] == "['cpu:1'] ['cpu:1']", done.stdout


def test_a_reader_beside_a_running_scan_does_not_call_a_chunk_in_flight_damaged(tmp_path):
    """A chunk file is renamed into place before the manifest records it; scan.load between the
    two called it damaged ('not recorded', 12 of 222 loads beside a live scan). A reader now reads
    the manifest again before it says so; a file still unrecorded then is reported as before."""
    import threading

    out = str(tmp_path / "s")
    scan.run(_TINY, out)
    path = os.path.join(out, "manifest.json")
    with open(path) as fh:
        full = fh.read()
    man = json.loads(full)
    name = sorted(man["chunks"])[-1]
    del man["chunks"][name]
    with open(path, "w") as fh:
        json.dump(man, fh)

    def record():                     # the writer's manifest save, a moment later
        with open(path + ".new", "w") as fh:
            fh.write(full)
        os.replace(path + ".new", path)

    timer = threading.Timer(0.05, record)
    timer.start()
    try:
        res = scan.load(out)
    finally:
        timer.join()
    assert res.complete and not res.damaged
    with open(path, "w") as fh:                      # never recorded: damaged, as before
        json.dump(man, fh)
    assert "not recorded" in scan.load(out).damaged[name + ".npz"]


def test_a_deep_linear_point_whose_sde_paths_diverge_is_recorded_not_raised(tmp_path):
    """A point whose SDE paths all diverged raised out of the scan (its later points were never
    computed, on every resume), and one where some diverged read NaN theory outputs with nothing
    saying why. Now theory.diverged_paths counts them and the means are over the others."""
    table = {"scan": {"kind": "deep_linear", "outputs": ["final"], "chunk": 2, "networks": False,
                      "grid": {"train.eta0": [0.01, 0.13, 0.5]}},
             "teacher": {"singular_values": [3.0, 1.0], "d_in": 2, "d_out": 2, "P": 4, "label_noise": 1.0},
             "model": {"depth": 2, "width": 4, "init": "aligned", "init_scale": 0.3},
             "train": {"steps": 200, "save_every": 50, "seeds": 4, "batch_size": 1}, "theory": {"paths": 64}}
    res = scan.run(table, str(tmp_path / "s"))
    assert res.done.all()
    paths = res["theory.diverged_paths"]
    assert paths[0] == 0 and 0 < paths[1] < 64 and paths[2] == 64, paths
    mean = res["theory.final.modes_mean"]
    assert np.isfinite(mean[:2]).all() and np.isnan(mean[2]).all(), mean


def test_a_failed_last_manifest_write_is_raised(tmp_path, monkeypatch):
    """The final manifest write's StoreWriteError was swallowed even when no other error was on
    its way: run() returned complete while the store kept the session "running"."""
    import errno

    from experiments import store as S

    orig = S.Store.save_manifest

    def full(self):
        if self.manifest.get("sessions") and self.manifest["sessions"][-1].get("status") == "complete":
            raise S.StoreWriteError(errno.ENOSPC, "No space left on device")
        return orig(self)

    monkeypatch.setattr(S.Store, "save_manifest", full)
    with pytest.raises(dmft.errors.StoreWriteError, match="No space"):
        scan.run(_TINY, str(tmp_path / "s"))


def test_a_scan_flags_heavy_tailed_points_as_a_solve_does(tmp_path):
    """The forward method's points carry `dmft.solve`'s heavy-tail flag and least effective node
    share (a batch computed and dropped them: a scan of such points looked as trustworthy as
    any): quadratic(0.5) with trained readouts is flagged, tanh is not. (Plain Monte Carlo nodes:
    the flag is the point, not the sampler, and their draw compiles in a fraction of the time of
    the stratified one's; over theory.seed 0-4 the quadratic's least shares 0.023-0.045 (drift
    0.27-0.40) at gamma0 = 0.5, tanh's >= 0.60 (drift >= 0.999).)"""
    base = {"task": {"name": "single_index", "D": 8, "P": 32, "P_test": 16, "degree": 2},
            "model": {"activation": "quadratic", "eps": 0.5},
            "train": {"eta0": 0.5, "steps": 100, "save_every": 50},
            "theory": {"method": "forward", "samples": 4096, "sampler": "mc"},
            "scan": {"outputs": ["final"], "networks": False, "grid": {"model.gamma0": [0.5, 1.0]}}}
    res = scan.run(base, str(tmp_path / "q"))
    share = res["theory.least_node_share"]
    assert res["theory.heavy_tailed"].any(), share                 # (measured 0.043 and 0.118)
    drift = res["theory.least_node_share_drift"]
    np.testing.assert_array_equal(res["theory.heavy_tailed"], ((share < 0.05) & (share * 1024 < 64)) | (drift < 0.6))
    light = scan.run({**base, "model": {"activation": "tanh"}}, str(tmp_path / "t"))
    assert not light["theory.heavy_tailed"].any() and (light["theory.least_node_share"] > 0.3).all()
    assert (light["theory.least_node_share_drift"] > 0.9).all()


@pytest.mark.parametrize("kind", ["two_layer", "deep_linear"])
def test_a_memory_limit_is_not_a_parameter_of_any_kind_of_scan(kind):
    """A deep-linear scan took theory.max_memory_gb into its points' keys (its SDE draws, and so
    its results, moved with a limit a scan may be resumed under: 0.0372 at 8 GiB, 0.0400 at 6) and
    accepted it as an axis. Neither kind does now."""
    from experiments.scan.grid import point_ids

    base = ["scan.kind='deep_linear'"] if kind == "deep_linear" else []
    cols = {"train.eta0": np.array([0.005])}
    ids = {mem: point_ids(scan.load_config(None, base + [f"theory.max_memory_gb={mem}", "scan.grid.train.eta0=[0.005]"]),
                          cols, [0], "theory") for mem in (8.0, 6.0)}
    assert ids[8.0] == ids[6.0]
    with pytest.raises(scan.ConfigError, match="theory.max_memory_gb cannot be scanned"):
        scan.load_config(None, base + ["scan.grid.theory.max_memory_gb=[4.0, 8.0]"])


def test_the_reports_figure_call_fits_the_grid():
    """report.md's example figure: lines for one axis (or a points grid of one field), a heatmap
    with the other axes fixed for more, nothing for a points grid of several fields (figures need
    a product grid there), and never a flag such as diverged_step."""
    import types

    from experiments.scan.grid import Grid

    def fake(kind, fields, values, shape):
        arrays = {"theory.diverged_step": np.zeros(shape, int), "theory.final.test_loss": np.zeros(shape)}
        return types.SimpleNamespace(grid=Grid(kind, tuple(fields), tuple(values)), arrays=arrays)

    ex = scan.result.example_figure
    assert ex(fake("product", ["model.gamma0"], [(1.0, 2.0)], (2,))) == \
        "res.lines('theory.final.test_loss', x='model.gamma0')"
    assert ex(fake("points", ["model.gamma0"], [(1.0, 2.0)], (2,))).startswith("res.lines(")
    assert ex(fake("points", ["model.gamma0", "task.P"], [(1.0, 2.0), (8, 16)], (2,))) is None
    assert ex(fake("product", ["model.gamma0", "task.P"], [(1.0, 2.0), (8, 16)], (2, 2))) == \
        "res.heatmap('theory.final.test_loss', x='model.gamma0', y='task.P')"


def test_a_scan_too_large_for_memory_is_refused_in_the_scans_keys(tmp_path):
    """The refusal named dmft.solve's arguments ("pass kernels=False", "more replicas (they run a
    few at a time)"): a scan passes no kernels and integrates every replica of a call at once. It
    now names train.save_every, theory.samples, scan.chunk and theory.max_memory_gb, before any
    write."""
    cfg = {"task": {"D": 16, "P": 256, "P_test": 100, "degree": 1}, "model": {"activation": "tanh"},
           "train": {"eta0": 0.5, "steps": 1000, "save_every": 1},
           "theory": {"method": "forward", "samples": 1048576, "replicas": 4},
           "scan": {"outputs": ["final"], "grid": {"model.gamma0": [0.5, 1.0]}}}
    with pytest.raises(dmft.InputError) as err:
        scan.run(cfg, str(tmp_path / "m"))
    said = str(err.value)
    assert said.startswith("theory: this solve needs about") and "a scan's call more" in said and "kernels" not in said, said
    for key in ("train.save_every", "theory.samples", "scan.chunk (2 points per compiled call here)",
                "theory.max_memory_gb (4)", "more theory.replicas do not help"):
        assert key in said, (key, said)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("change, said", [({"x64": False}, "(--x64 / --x32)"), ({"platform": "gpu"}, "(--device)"),
                                          ({"data": "ab"}, "the data file it was computed from, restored"),
                                          ({"config": {"a": 2}}, "rerun it with the original configuration."),
                                          ({"code": "ff", "config": {"a": 2}}, "rerun it with the code and versions that "
                                           "computed it (no configuration alone restores them) and the original "
                                           "configuration.")])
def test_a_store_conflict_says_what_a_resume_needs(change, said):
    """A store of other code said to rerun the original configuration (which cannot resume it);
    the advice now follows what differs, one rerun naming every condition (code and configuration
    both differing read "only the code ... can (no configuration can); rerun the original
    configuration": two contradicting ways)."""
    from experiments.store import Store

    base = {"config": {"a": 1}, "x64": True, "platform": "cpu", "code": "00", "data": "cd"}
    with pytest.raises(StoreConflict, match="To resume it: ") as err:
        Store._check_identity("S", {"identity": base}, {**base, **change})
    assert said in str(err.value), err.value


def test_a_chunk_whose_outputs_differ_from_its_familys_is_refused(tmp_path):
    """write_chunk checks a chunk's outputs (names, per-point shapes, dtypes) against those its
    family's chunks hold: a second chunk of the family with another dtype or another output is
    refused before anything is written, and the first is still read back (with the check off the
    second was written, replaced the family's schema and made the first read as damaged: a
    mutation audit); another family may hold other outputs."""
    store = Store.create_or_open(tmp_path / "s", {"config": {"a": 1}}, {"grid": {}, "chunk_names": ["c0", "c1", "c2"]})
    try:
        store.write_chunk("c0", {"index": np.arange(3), "x": np.ones(3)}, family="g")
        for bad in ({"index": np.arange(3, 6), "x": np.ones(3, np.float32)},
                    {"index": np.arange(3, 6), "x": np.ones(3), "y": np.ones(3)},
                    {"index": np.arange(3, 6), "x": np.ones((3, 2))}):
            with pytest.raises(dmft.InputError, match="its outputs differ from those of the chunks of g"):
                store.write_chunk("c1", bad, family="g")
            assert "c1" not in store.manifest["chunks"] and not os.path.exists(store.chunk_path("c1"))
        store.write_chunk("c2", {"index": np.arange(6, 9), "z": np.zeros(3, np.int32)}, family="h")
    finally:
        store.close()
    read = Store.read(tmp_path / "s")
    np.testing.assert_array_equal(read.read_chunk("c0")["x"], np.ones(3))


def test_a_deep_linear_spread_from_one_member_is_nan_not_zero(tmp_path):
    """A deep-linear scan point with one SDE path stored a spread of 0 (a ddof-0 std of one
    value); the spreads are the ddof-1 standard deviation, NaN from fewer than two members."""
    table = {"scan": {"kind": "deep_linear", "outputs": ["final"], "networks": True,
                      "grid": {"theory.paths": [1, 16]}},
             "teacher": {"singular_values": [3.0, 1.0], "d_in": 2, "d_out": 2, "P": 4, "label_noise": 1.0},
             "model": {"depth": 2, "width": 4, "init": "aligned", "init_scale": 0.3},
             "train": {"steps": 40, "save_every": 20, "seeds": 3, "batch_size": 1, "seed": 2}}
    res = scan.run(table, str(tmp_path / "s"))
    std = res["theory.final.modes_std"]
    assert np.isnan(std[0]).all() and np.isfinite(std[1]).all() and (std[1] > 0).all(), std
    assert np.isfinite(res["networks.final.modes_std"]).all()
    # one network: its spreads too, final and over time
    one = {**table, "scan": {**table["scan"], "outputs": ["final", "curves"], "grid": {"theory.paths": [4]}},
           "train": {**table["train"], "seeds": 1}}
    res = scan.run(one, str(tmp_path / "one"))
    assert np.isnan(res["networks.final.modes_std"]).all() and np.isnan(res["networks.modes_std"]).all()


def test_lines_draw_each_point_with_its_stored_standard_error(tmp_path):
    """A sampled scan keeps each point's standard error (theory.final.error.*, grokking times'
    *_se): lines draws it as +- bars (a walkthrough: stored, never drawn); errors=False, or an
    output without one (the final time), draws plain lines."""
    table = {"task": {"D": 4, "P": 12, "P_test": 8, "degree": 2}, "model": {"activation": "tanh"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10}, "theory": {"samples": 64, "replicas": 2},
             "scan": {"outputs": ["final", "grokking"], "grok_threshold": 0.5,
                      "grid": {"model.gamma0": [0.5, 1.0, 2.0]}}}
    res = scan.run(table, str(tmp_path / "s"))
    assert scan.result.error_name(res, "theory.final.test_loss") == "theory.final.error.test_loss"
    assert scan.result.error_name(res, "theory.grok.t_train") == "theory.grok.t_train_se"
    assert scan.result.error_name(res, "theory.final.t") is None
    ax = res.lines("theory.final.test_loss", x="gamma0").axes[0]
    (bars,) = ax.containers
    segs = bars.lines[2][0].get_segments()
    se = res["theory.final.error.test_loss"]
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segs], 2 * se, rtol=1e-12)
    np.testing.assert_allclose([0.5 * (s[1, 1] + s[0, 1]) for s in segs], res["theory.final.test_loss"], rtol=1e-12)
    assert "standard error" in ax.get_ylabel()
    assert not res.lines("theory.final.test_loss", x="gamma0", errors=False).axes[0].containers
    assert not res.lines("theory.final.t", x="gamma0").axes[0].containers


def test_full_batch_is_drawn_as_the_largest_batch_and_labelled_full(tmp_path):
    """train.batch_size = 0 is full batch (B = P), the largest batch: heatmaps and lines draw it
    past the largest B, labelled "full" (a walkthrough: [0, 2, 4] drew it beside B = 2, at 0)."""
    # (a linear activation, solved by the exact closure: the figures are the point, and its three
    # groups' programs compile in a fraction of a sampled tanh solve's time; the batch sizes'
    # losses still differ, so a column drawn out of place shows)
    table = {"task": {"D": 4, "P": 12, "P_test": 8, "degree": 2}, "model": {"activation": "linear"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10},
             "scan": {"grid": {"model.gamma0": [0.5, 1.0], "train.batch_size": [0, 2, 4]}}}
    res = scan.run(table, str(tmp_path / "s"))
    z = res["theory.final.test_loss"]                                     # (gamma0, batch_size)
    assert len(np.unique(z[0])) == len(np.unique(z[1])) == 3
    fig = res.heatmap("theory.final.test_loss", x="batch_size", y="gamma0")
    ax = fig.axes[0]
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "4", "full"]
    np.testing.assert_allclose(ax.get_xticks(), [2, 4, 8])                # one step of x2 past 4
    assert ax.get_xscale() == "log"
    np.testing.assert_array_equal(ax.collections[0].get_array().reshape(2, 3), z[:, [1, 2, 0]])
    line = res.lines("theory.final.test_loss", x="batch_size", at={"gamma0": 0.5}, errors=False).axes[0]
    (drawn,) = line.get_lines()
    np.testing.assert_allclose(drawn.get_xdata(), [2, 4, 8])
    np.testing.assert_array_equal(drawn.get_ydata(), z[0, [1, 2, 0]])
    line.figure.canvas.draw()
    assert [t.get_text() for t in line.get_xticklabels()] == ["2", "4", "full"]


def test_full_batch_as_the_hue_of_lines_is_labelled_full_and_drawn_last(tmp_path):
    """lines(..., hue="batch_size") labelled full batch "train.batch_size = 0" and drew it first,
    where the x axis and heatmaps label it "full", the largest batch (a walkthrough)."""
    table = {"task": {"D": 4, "P": 12, "P_test": 8, "degree": 2}, "model": {"activation": "linear"},
             "train": {"eta0": 0.5, "steps": 20, "save_every": 10},
             "scan": {"grid": {"model.gamma0": [0.5, 1.0], "train.batch_size": [0, 2, 4]}}}
    res = scan.run(table, str(tmp_path / "s"))
    z = res["theory.final.test_loss"]                                     # (gamma0, batch_size)
    ax = res.lines("theory.final.test_loss", x="gamma0", hue="batch_size", errors=False).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == \
        ["train.batch_size = 2", "train.batch_size = 4", "train.batch_size = full"]
    for line, j in zip(ax.get_lines(), [1, 2, 0]):                       # each label on its own column
        np.testing.assert_array_equal(line.get_ydata(), z[:, j])


def test_a_deep_linear_scan_draws_one_mode_with_its_standard_error(tmp_path):
    """A deep linear scan stores its modes per point ((..., r) arrays), and no figure could draw
    them ("not one number per point"): "name[i]" reads mode i as one number per point, the figures
    take it, and lines draws a mean mode strength +- spread / sqrt(members), the members the seeds
    or SDE paths that did not diverge (the spreads are over those). Bad entries are refused."""
    table = {"scan": {"kind": "deep_linear", "outputs": ["final", "learning"], "chunk": 4,
                      "grid": {"train.eta0": [0.01, 0.13], "train.batch_size": [1, 2]}},
             "teacher": {"singular_values": [3.0, 1.0], "d_in": 2, "d_out": 2, "P": 4, "label_noise": 1.0},
             "model": {"depth": 2, "width": 4, "init": "aligned", "init_scale": 0.3},
             "train": {"steps": 200, "save_every": 50, "seeds": 5}, "theory": {"paths": 64}}
    res = scan.run(table, str(tmp_path / "s"))
    paths = res["theory.diverged_paths"]
    assert paths[1, 0] > 0, paths           # (eta0 = 0.13, B = 1: some SDE paths diverge)
    for src, total, lost in (("networks", 5, res["networks.diverged_seeds"]), ("theory", 64, paths)):
        name = f"{src}.final.modes_mean"
        np.testing.assert_array_equal(res[f"{name}[1]"], res[name][..., 1])
        np.testing.assert_array_equal(res[f"{name}[-2]"], res[name][..., 0])
        se = res[f"{src}.final.modes_std"][..., 1] / np.sqrt(total - lost)
        ax = res.lines(f"{name}[1]", x="eta0", hue="batch_size").axes[0]
        for j, bars in enumerate(ax.containers):       # one line per batch size
            segs = bars.lines[2][0].get_segments()
            np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segs], 2 * se[:, j], rtol=1e-12)
        assert "standard error" in ax.get_ylabel()
    assert not res.lines("networks.learn.t_half[0]", x="eta0", at={"batch_size": 1}).axes[0].containers
    res.heatmap("networks.learn.t_half[0]", x="eta0", y="batch_size")
    with pytest.raises(dmft.InputError, match=r"one entry of it: 'theory.final.modes_mean\[i\]' \(i < 2\)"):
        res.lines("theory.final.modes_mean", x="eta0", at={"batch_size": 1})
    for bad, match in (("theory.final.modes_mean[2]", "has 2 entries"), ("theory.final.modes_mean[-3]", "has 2 entries"),
                       ("networks.final.test_loss[0]", r"shape \(\) at each point"),
                       ("nothing.final.modes_mean[0]", "not among")):
        with pytest.raises(scan.result.UnknownOutput, match=match):
            res[bad]
