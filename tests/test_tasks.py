"""Task generators, data loading and the results format."""

import json

import jax
import numpy as np
import pytest

import dmft
from dmft import io
from dmft.activations import gauss_hermite


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_hermite_targets_are_orthonormal(k):
    xi, w = gauss_hermite(40)
    for j in range(1, 5):
        inner = np.sum(w * dmft.tasks.hermite(k, xi) * dmft.tasks.hermite(j, xi))
        assert inner == pytest.approx(float(j == k), abs=1e-12)


def test_single_index_is_deterministic_and_planted():
    a = dmft.tasks.single_index(D=7, P=20, P_test=5, degree=3, key=jax.random.key(4))
    b = dmft.tasks.single_index(D=7, P=20, P_test=5, degree=3, key=4)
    c = dmft.tasks.single_index(D=7, P=20, P_test=5, degree=3, key=5)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    beta = np.asarray(a.meta["beta"])
    assert np.linalg.norm(beta) == pytest.approx(1.0)
    np.testing.assert_allclose(a.y_train, dmft.tasks.hermite(3, a.x_train @ beta))


def test_kumar_and_teacher_targets():
    d = dmft.tasks.kumar_quadratic(D=10, P=30, P_test=7, key=1)
    beta = np.asarray(d.meta["beta"])
    np.testing.assert_allclose(d.y_train, 0.5 * (d.x_train @ beta) ** 2)
    t = dmft.tasks.teacher_network(D=5, P=9, P_test=0, width=3, activation="erf", key=2)
    assert t.x_test is None and t.y_train.shape == (9,) and np.all(np.isfinite(t.y_train))


def test_terrain_is_real_data_on_distinct_points():
    """The real elevation map: distinct points, unit-variance inputs, a standardized target
    that is a smooth (not random) function of position, and clear errors for bad sizes."""
    a, b = dmft.tasks.terrain(P=300, P_test=200, key=3), dmft.tasks.terrain(P=300, P_test=200, key=3)
    assert np.array_equal(a.x_train, b.x_train) and a.D == 2
    pts = np.concatenate([a.x_train, a.x_test])
    assert len(np.unique(pts, axis=0)) == 500 and np.all(np.abs(pts) <= np.sqrt(3) + 1e-12)
    # neighbours on the map have close elevations: the target is a landscape, not noise
    d = np.linalg.norm(a.x_train[:, None] - a.x_test[None], axis=-1)
    near = np.argmin(d, axis=1)
    assert np.corrcoef(a.y_train, a.y_test[near])[0, 1] > 0.8
    with pytest.raises(dmft.InputError, match="P \\+ P_test must be <="):
        dmft.tasks.terrain(P=10 ** 6)
    with pytest.raises(dmft.InputError, match="P must be >= 1"):
        dmft.tasks.terrain(P=0)


@pytest.mark.parametrize("kwargs, match", [(dict(D=0), "D must be >= 1"), (dict(P=2.5), "P must be an integer"),
                                           (dict(degree=0), "degree must be >= 1"),
                                           (dict(noise=-1.0), "noise must be >= 0")])
def test_task_arguments_are_checked(kwargs, match):
    with pytest.raises(dmft.InputError, match=match):
        dmft.tasks.single_index(**kwargs)


def test_npz_round_trip_and_errors(tmp_path):
    d = dmft.tasks.single_index(D=3, P=5, P_test=4, degree=1, key=0)
    d.save(tmp_path / "data.npz")
    back = dmft.tasks.load_npz(tmp_path / "data.npz")
    assert np.array_equal(back.x_test, d.x_test) and np.array_equal(back.y_train, d.y_train)
    d.save(tmp_path / "stem")                 # written as stem.npz; read back by the name it was given
    assert np.array_equal(dmft.tasks.load_npz(tmp_path / "stem").y_test, d.y_test)
    np.savez(tmp_path / "bad.npz", x_train=d.x_train)
    with pytest.raises(dmft.InputError, match=r"missing array\(s\) \['y_train'\]"):
        dmft.tasks.load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "extra.npz", x_train=d.x_train, y_train=d.y_train, w=d.y_train)
    with pytest.raises(dmft.InputError, match=r"unknown array\(s\) \['w'\]"):
        dmft.tasks.load_npz(tmp_path / "extra.npz")
    with pytest.raises(dmft.InputError, match="data file not found"):
        dmft.tasks.load_npz(tmp_path / "missing.npz")


def test_results_metadata_records_config_and_versions(tmp_path):
    npz, meta = io.save(tmp_path / "r", {"a": np.arange(3), "skip": None}, {"gamma0": 1.0, "x": np.nan})
    arrays, m = io.load(tmp_path / "r")
    assert list(arrays) == ["a"]
    assert m["config"] == {"gamma0": 1.0, "x": "nan"}
    assert {"jax", "jaxlib", "numpy", "python", "devices"} <= set(m["environment"])
    with open(meta) as fh:
        json.load(fh)


# ------------------------------------------------------------------ bad task arguments: one InputError

@pytest.mark.parametrize("kwargs, match", [
    (dict(key="a"), "key"), (dict(key=1.5), "key"), (dict(key=2 ** 70), "key"), (dict(key=-1), "key"),
    (dict(key=True), "key"), (dict(key=jax.random.split(jax.random.key(0))), "key"),
    (dict(noise="a"), "noise"), (dict(noise=True), "noise"), (dict(noise=float("inf")), "noise"),
    (dict(degree=200), "degree"), (dict(degree=True), "degree"),
])
def test_single_index_refuses_by_name(kwargs, match):
    with pytest.raises(dmft.InputError, match=match):
        dmft.tasks.single_index(D=3, P=4, P_test=2, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(p=3000), "p: 3000"), (dict(p=5, train_fraction=True), "train_fraction"),
    (dict(p=5, train_fraction="half"), "train_fraction"), (dict(p=5, key="k"), "key"),
])
def test_modular_addition_refuses_before_building(kwargs, match):
    """p = 3000 would be 200 GiB of one-hot pairs: refused from p alone, at once."""
    import time
    t0 = time.perf_counter()
    with pytest.raises(dmft.InputError, match=match):
        dmft.tasks.modular_addition(**kwargs)
    assert time.perf_counter() - t0 < 1.0


def test_sizes_of_other_tasks_are_estimated_first():
    with pytest.raises(dmft.InputError, match="width"):
        dmft.tasks.teacher_network(D=3, P=4, P_test=2, width=10 ** 10)
    with pytest.raises(dmft.InputError, match="d_in"):
        dmft.tasks.linear_teacher(10 ** 12, 4, [1.0])


def test_int_seeds_and_keys_give_the_same_data():
    """Data generators take an int seed (key=s is jax.random.key(s)) or a key; nothing else."""
    a = dmft.tasks.kumar_quadratic(D=3, P=4, P_test=2, key=7)
    b = dmft.tasks.kumar_quadratic(D=3, P=4, P_test=2, key=jax.random.key(7))
    c = dmft.tasks.kumar_quadratic(D=3, P=4, P_test=2, key=np.uint32(7))
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.x_train, c.x_train)
    assert dmft.tasks.as_key(2 ** 32 - 1) is not None
    with pytest.raises(dmft.InputError, match="key"):
        dmft.tasks.as_key(2 ** 32)


def test_a_key_gives_the_same_data_with_or_without_x64():
    """Every generator that draws gave another data set with x64 off (JAX draws in the default
    float type): `dmft solve --x32` and `--x64` of one configuration recorded different data
    digests (a user's report). Now the same, and the caller's setting is left as it was."""
    t = dmft.tasks
    make = {"single_index": lambda: t.single_index(D=4, P=5, P_test=3, degree=2, noise=0.1, key=3),
            "kumar_quadratic": lambda: t.kumar_quadratic(D=4, P=5, P_test=3, key=3),
            "teacher_network": lambda: t.teacher_network(D=4, P=5, P_test=3, width=3, activation="tanh", key=3),
            "modular_addition": lambda: t.modular_addition(p=5, key=3),
            "sparse_parity": lambda: t.sparse_parity(n=6, k=2, P=8, P_test=4, key=3),
            "terrain": lambda: t.terrain(P=10, P_test=5, key=3),
            "linear_teacher": lambda: t.linear_teacher(4, 3, [2.0, 1.0], P=6, label_noise=0.1, key=3)}
    on = {k: f() for k, f in make.items()}
    jax.config.update("jax_enable_x64", False)
    try:
        off = {k: f() for k, f in make.items()}
        assert not jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_enable_x64", True)
    for k in make:
        if k == "linear_teacher":
            for a, b in ((on[k].x_train, off[k].x_train), (on[k].y_train, off[k].y_train), (on[k].U, off[k].U)):
                np.testing.assert_array_equal(a, b)
        else:
            assert on[k].digest == off[k].digest, k
            np.testing.assert_array_equal(on[k].x_train, off[k].x_train)


def test_npz_files_that_are_not_datasets_are_refused_by_name(tmp_path):
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all" * 4)
    np.savez(tmp_path / "objects.npz", x_train=np.array([object(), 1], dtype=object), y_train=np.ones(2))
    np.save(tmp_path / "one.npy", np.ones(3))
    (tmp_path / "a_dir.npz").mkdir()
    for name in ("garbage.npz", "objects.npz", "one.npy", "a_dir.npz"):
        with pytest.raises(dmft.InputError, match=name):
            dmft.tasks.load_npz(tmp_path / name)
    with pytest.raises(dmft.InputError, match="path"):
        dmft.tasks.load_npz(3)
    # a text file (a user's csv): said to be no .npz, not numpy's pickle advice
    (tmp_path / "mine.csv").write_text("x,y\n1.0,2.0\n")
    with pytest.raises(dmft.InputError, match=r"mine.csv: not an .npz file") as err:
        dmft.tasks.load_npz(tmp_path / "mine.csv")
    assert "pickle" not in str(err.value)


def test_a_teachers_metadata_names_its_activation_and_spectrum_reads_what_it_uses():
    """Two quadratic teachers of other eps gave the same meta while their targets differed by
    up to 4.9; spectrum(kind='power', bottom=...) ignored bottom without a word."""
    a, b = (dmft.tasks.teacher_network(4, 8, 4, width=6, activation=dmft.activations.quadratic(eps), key=0)
            for eps in (0.5, 4.0))
    assert a.meta["activation_params"] != b.meta["activation_params"]
    with pytest.raises(dmft.InputError, match="bottom: only kind='linear'"):
        dmft.tasks.spectrum(3, "power", bottom=5.0)
    np.testing.assert_allclose(dmft.tasks.spectrum(3, "linear", top=3.0, bottom=0.5), [3.0, 1.75, 0.5])
