"""The compiled loop cut into calls (`dmft.runner.run_saved`, and the iterate method's windows): with
a progress bar a long save interval is split so that an interruption acts within seconds, and the
numbers do not change."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dmft
import networks
from dmft import runner
from platform_checks import assert_same_run

LOG_SAVES = np.unique(np.geomspace(1, 240, 9).astype(int))


@pytest.fixture
def calls(monkeypatch):
    """Record the steps of every compiled call, and cut calls at 25 steps, then at 1 step."""
    seen = []
    advance = runner._advance

    def spy(step, record, static, ctx, state, gaps, drive, offset):
        seen.append(int(np.sum(gaps)))
        return advance(step, record, static, ctx, state, gaps, drive, offset)

    monkeypatch.setattr(runner, "_advance", spy)
    monkeypatch.setattr(runner, "FIRST_CALL_STEPS", 25)
    return seen


def _runs(progress):
    data = dmft.tasks.single_index(D=6, P=24, P_test=8, key=jax.random.key(0))
    model = dmft.TwoLayer(activation="tanh", gamma0=1.0)
    teacher = dmft.tasks.linear_teacher(4, 4, [3.0, 2.0, 1.0, 0.5], P=20, label_noise=0.5, key=1)
    dln = dmft.DeepLinear(3, 8, 0.3)
    common = dict(eta0=0.2, steps=240, progress=progress)
    out = {
        "closure": dmft.solve(dmft.TwoLayer(activation="linear", gamma0=1.0), data, save_every=30,
                              method="closure", **common).f_test,
        "forward": dmft.solve(model, data, save_at=LOG_SAVES, method="forward", samples=64,
                              replicas=2, key=jax.random.key(1), **common).f_test,
        "lazy SGD": dmft.solve(model, data, save_at=LOG_SAVES, method="lazy", batch_size=5,
                               batch_key=jax.random.key(5), **common).f_test,
        "iterate": dmft.solve(model, data, save_every=40, method="iterate", samples=64,
                              replicas=2, key=jax.random.key(1), **common).f_test,
        "networks": networks.train(model, data, width=16, seeds=2, save_at=LOG_SAVES, batch_size=8,
                                   key=jax.random.key(2), **common).f_test,
        # (at eta0 = 0.1: at 0.2 it diverged at step 18, and its records compared NaN from there)
        "deep linear": networks.train(dln, teacher, seeds=2, save_every=24, batch_size=5,
                                      key=jax.random.key(3), **{**common, "eta0": 0.1}).modes,
        "mode SDE": dmft.deep_linear.mode_sde(dmft.DeepLinear(3, 8, 0.3, "aligned"), teacher, paths=16,
                                              schedule=dmft.Schedule(0.02, 240, save_at=LOG_SAVES, batch_size=5),
                                              key=jax.random.key(4), progress=progress).modes,
    }
    return out


def test_cut_calls_change_no_number(calls, monkeypatch):
    windows = []                                 # method="iterate": windows per compiled call
    iterate = dmft.single_site.iterate

    def spy(static, max_iter, window, n_windows, *args):
        windows.append(n_windows)
        return iterate(static, max_iter, window, n_windows, *args)

    monkeypatch.setattr(dmft.single_site, "iterate", spy)
    whole = _runs(progress=False)
    assert max(calls) == 240 and windows == [24]     # without a bar each run is one call
    calls.clear()
    windows.clear()
    monkeypatch.setattr(runner, "CALL_SECONDS", 0.0)     # once a rate is known: one step a call
    cut = _runs(progress=True)
    assert max(calls) == 25 and calls.count(1) > 200 and windows == [1] * 24
    for name in whole:
        assert np.all(np.isfinite(whole[name])), name          # (every save compared)
        np.testing.assert_array_equal(cut[name], whole[name], err_msg=name)


@pytest.mark.parametrize("gaps, done, n, pending, cap, expected", [
    ([10, 10, 10], 0, 3, 0, 30, (3, 0)),         # the chunk fits
    ([10, 10, 10], 0, 3, 0, 25, (2, 0)),         # whole intervals, a power of two
    ([10, 10, 10, 10], 0, 4, 0, 39, (2, 0)),
    ([10, 10, 10], 1, 2, 0, 5, (0, 5)),          # into interval 1 without a record
    ([10, 10, 10], 1, 2, 5, 5, (1, 0)),          # its last 5 steps, recorded
    ([10, 10, 10], 1, 2, 4, 5, (0, 5)),          # 6 left: 5 silently, leaving one to record
    ([1], 0, 1, 0, 1, (1, 0)),
])
def test_next_call(gaps, done, n, pending, cap, expected):
    assert runner.next_call(np.asarray(gaps), done, n, pending, cap) == expected


@pytest.mark.parametrize("method", [dict(method="forward", samples=64, replicas=2, key=jax.random.key(1),
                                         control_variate=True),      # (None: a diverging run is rerun)
                                    dict(method="lazy", batch_size=4, batch_key=jax.random.key(5))],
                         ids=["forward", "lazy SGD"])
def test_divergence_inside_a_cut_interval(calls, monkeypatch, method):
    """A run that overflows inside a long interval cut into silent calls reports the same step
    and keeps the same saves (as a Solution's records) as the run in one call."""
    data = dmft.tasks.single_index(D=6, P=24, P_test=8, key=jax.random.key(0))
    model = dmft.TwoLayer(activation="tanh", gamma0=1.0)
    monkeypatch.setattr(runner, "CALL_SECONDS", 0.0)
    errors = []
    for progress in (False, True):
        with pytest.raises(dmft.DivergenceError) as err:
            dmft.solve(model, data, eta0=40.0, steps=400, save_at=[1, 2, 400], progress=progress, **method)
        errors.append(err.value)
    assert {"f_train", "f_test", "train_loss"} <= set(errors[0].partial)
    assert calls[0] == 400 and max(calls[1:]) <= 25 and calls[-1] == 1   # the last interval was cut
    assert errors[0].step == errors[1].step and 2 < errors[0].step < 400
    np.testing.assert_array_equal(errors[0].saved_steps, errors[1].saved_steps)
    for k in errors[0].partial:                           # (bit for bit on a CPU)
        assert_same_run(errors[1].partial[k], errors[0].partial[k], err_msg=k)


@pytest.fixture
def count_maps_each_call(monkeypatch):
    """`drop_compiled_if_crowded` counts the memory maps at every call (not only after a compile
    or MAPS_RECHECK_S), and the counts a test patched in are not judged after it."""
    monkeypatch.setattr(runner, "MAPS_RECHECK_S", 0.0)
    yield
    runner._MAPS_WATCH.dropped()


def test_compiled_programs_are_dropped_only_when_they_crowd_the_memory_maps(monkeypatch, count_maps_each_call):
    """XLA:CPU maps each compiled program's code; past `share` of the kernel's limit on memory maps
    JAX's compiled programs are dropped (a process that passed the limit segfaulted in XLA's
    compiler), and not before."""
    import dmft.runner as runner

    held, limit = runner.memory_maps()
    if limit:                                  # Linux: this process holds some, under its limit
        assert 0 < held < limit
    cleared = []
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(1))
    for maps, want in (((100, 65530), False), ((29000, 65530), False), ((29500, 65530), True),
                       ((10, 20), True), ((5, 0), False)):
        monkeypatch.setattr(runner, "memory_maps", lambda maps=maps: maps)
        assert runner.drop_compiled_if_crowded() is want
    assert len(cleared) == 2


def test_the_memory_maps_are_counted_again_only_after_a_compile_a_drop_or_a_while(monkeypatch):
    """Counting the maps costs ~1.2 us a map (40 ms at the 28000 a long test process holds: more
    than a small solve), and only a compile adds maps by the thousand. The last count is judged at
    each call's own share until a compile (JAX's own event, seen with a real compile here), a drop
    or MAPS_RECHECK_S seconds; then the maps are counted again."""
    counts, cleared = [], []
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(1))
    monkeypatch.setattr(runner, "memory_maps", lambda: counts.append(1) or (int(0.6 * 65530), 65530))
    monkeypatch.setattr(runner, "MAPS_RECHECK_S", 1e9)
    monkeypatch.setattr(runner, "_MAPS_WATCH", runner._MapsWatch())
    assert runner.drop_compiled_if_crowded(0.7) is False and len(counts) == 1
    assert runner.drop_compiled_if_crowded(0.7) is False and len(counts) == 1       # no compile since
    assert runner.drop_compiled_if_crowded(0.45) is True and len(counts) == 1       # the count judged anew
    assert len(cleared) == 1
    assert runner.drop_compiled_if_crowded(0.7) is False and len(counts) == 2       # after a drop
    assert runner.drop_compiled_if_crowded(0.7) is False and len(counts) == 2
    before = runner._MAPS_WATCH.compiles
    jax.jit(lambda x: x * 3.0 + 0.25)(np.arange(7.0)).block_until_ready()         # a new program
    assert runner._MAPS_WATCH.compiles > before
    assert runner.drop_compiled_if_crowded(0.7) is False and len(counts) == 3       # after a compile
    assert runner.drop_compiled_if_crowded(0.7) is False and len(counts) == 3
    monkeypatch.setattr(runner, "MAPS_RECHECK_S", 0.0)
    assert runner.drop_compiled_if_crowded(0.7) is False and len(counts) == 4       # after a while
    assert len(cleared) == 1


def test_the_maps_are_crowded_only_past_the_share_and_a_trace_alone_is_no_compile(monkeypatch):
    """`share` is passed only by more maps than share x limit (9 of 20 at 0.45 is not crowded); the
    compile listener is registered once, on first use (not at each call); and a trace that compiles
    nothing (jax.make_jaxpr, jax.eval_shape: JAX reports their traces as events too) leaves the last
    count judged."""
    counts, registered = [], []
    monkeypatch.setattr(jax, "clear_caches", lambda: None)
    monkeypatch.setattr(runner, "memory_maps", lambda: counts.append(1) or (9, 20))
    monkeypatch.setattr(runner, "MAPS_RECHECK_S", 1e9)
    monkeypatch.setattr(runner, "_MAPS_WATCH", runner._MapsWatch())
    register = jax.monitoring.register_event_duration_secs_listener
    monkeypatch.setattr(jax.monitoring, "register_event_duration_secs_listener",
                        lambda fn: registered.append(fn) or register(fn))
    assert runner.drop_compiled_if_crowded(0.45) is False and len(counts) == 1
    jax.make_jaxpr(lambda x: x * 5.0 - 0.5)(np.arange(5.0))                    # traced, not compiled
    jax.eval_shape(lambda x: x * 7.0 - 0.5, np.arange(5.0))
    assert runner.drop_compiled_if_crowded(0.45) is False and len(counts) == 1
    assert len(registered) == 1


def test_each_library_call_drops_compiled_programs_when_they_crowd_the_memory_maps(monkeypatch,
                                                                                   count_maps_each_call):
    """A user's loop over many shapes through the library (a notebook) reached the memory-map limit
    as a scan did. `dmft.solve`, `dmft.solve_batch`, `dmft.mode_sde` and `networks.train` (each width,
    two-layer or deep linear) drop JAX's compiled programs before they run once the maps pass
    `runner.CALL_SHARE` of the limit, and not below it (between the tests' and scans' 0.45 and
    CALL_SHARE nothing is dropped)."""
    # (the data, models and schedules of `_runs` above, but for the batch and the second width: the
    # programs that test_cut_calls_change_no_number compiled, not compiled again; what is counted here
    # is the drops)
    data = dmft.tasks.single_index(D=6, P=24, P_test=8, key=jax.random.key(0))
    small = dmft.tasks.single_index(D=4, P=12, P_test=6, key=jax.random.key(0))
    model = dmft.TwoLayer(activation="tanh", gamma0=1.0)
    teacher = dmft.tasks.linear_teacher(4, 4, [3.0, 2.0, 1.0, 0.5], P=20, label_noise=0.5, key=1)
    dln, aligned = dmft.DeepLinear(3, 8, 0.3), dmft.DeepLinear(3, 8, 0.3, "aligned")
    common = dict(eta0=0.2, steps=240, progress=False)
    calls = {
        "solve": (1, lambda: dmft.solve(model, data, save_at=LOG_SAVES, method="forward", samples=64, replicas=2,
                                        key=jax.random.key(1), **common).f_test),
        "solve_batch": (1, lambda: dmft.solve_batch(model, small, {"gamma0": [0.5, 1.0]}, method="forward",
                                                    samples=32, replicas=2, key=jax.random.key(1), eta0=0.2,
                                                    steps=12, save_every=6)["test_loss"]),
        "train": (2, lambda: np.stack([r.f_test for r in networks.train(model, data, width=[16, 8], seeds=2,
                                                                         save_at=LOG_SAVES, batch_size=8,
                                                                         key=jax.random.key(2), **common).values()])),
        "train_deep_linear": (1, lambda: networks.train(dln, teacher, seeds=2, save_every=24, batch_size=5,
                                                        key=jax.random.key(3), **{**common, "eta0": 0.1}).modes),
        "mode_sde": (1, lambda: dmft.deep_linear.mode_sde(aligned, teacher, paths=16, key=jax.random.key(4),
                                                          schedule=dmft.Schedule(0.02, 240, save_at=LOG_SAVES,
                                                                                 batch_size=5),
                                                          progress=False).modes),
    }
    cleared = []             # (counted, not done: that the numbers survive a real drop, the scan's test shows)
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(1))
    for name, (times, call) in calls.items():
        plain = np.asarray(call())
        for held, want in ((int(0.69 * 65530), 0), (int(0.71 * 65530), times)):
            cleared.clear()
            monkeypatch.setattr(runner, "memory_maps", lambda held=held: (held, 65530))
            again = np.asarray(call())
            assert len(cleared) == want, (name, held, len(cleared))
            np.testing.assert_array_equal(again, plain, err_msg=name)
        monkeypatch.setattr(runner, "memory_maps", lambda: (0, 0))


def test_over_members_loops_on_a_cpu_past_its_size_and_vmaps_below(monkeypatch):
    fn = lambda x, y: (x @ x.T).sum() + y     # noqa: E731
    members = (np.ones((3, 4, 5)), np.arange(3.0))
    prims = lambda n: {e.primitive.name for e in jax.make_jaxpr(      # noqa: E731
        lambda m: runner.over_members(fn, m, n))(members).jaxpr.eqns}
    on_cpu = jax.default_backend() == "cpu"
    assert ("scan" in prims(runner.RECORD_MAP_VALUES)) == on_cpu
    assert "scan" not in prims(runner.RECORD_MAP_VALUES - 1)
    one = (members[0][:1], members[1][:1])                   # one member: never a loop
    assert "scan" not in {e.primitive.name for e in jax.make_jaxpr(
        lambda m: runner.over_members(fn, m, 2 ** 40))(one).jaxpr.eqns}
    np.testing.assert_array_equal(jax.jit(lambda m: runner.over_members(fn, m, 2 ** 40))(members),
                                  jax.vmap(fn)(*members))


@pytest.mark.parametrize("who,precision,test_points", [("forward", "full", 8), ("forward", "mixed", 8),
                                                        ("forward", "full", 0), ("networks", "full", 8),
                                                        ("networks", "full", 0)])
def test_a_records_loop_is_sized_by_its_fields_on_the_train_and_test_points(monkeypatch, who, precision,
                                                                             test_points):
    """The size a record's loop is chosen by is one member's fields: its units on the train and test
    points, a count of values in float64 and under precision="mixed" alike (float32 fields cross
    over at the same count: sized in bytes, a mixed solve at 1-2 MiB was vmapped, 1.2-1.35x
    slower)."""
    where = importlib.import_module("dmft.single_site" if who == "forward" else "networks.train")
    seen = []

    def spy(fn, members, values):
        if fn.__qualname__.startswith("record."):     # (the setup's and predictions' loops size their own)
            seen.append(values)
        return runner.over_members(fn, members, values)

    monkeypatch.setattr(where, "over_members", spy)
    jax.clear_caches()                                 # (traced anew: the size is taken at trace time)
    data = dmft.tasks.single_index(D=6, P=24, P_test=test_points, key=jax.random.key(0))
    model = dmft.TwoLayer(activation="tanh", gamma0=1.0)
    kw = dict(eta0=0.2, steps=4, save_every=2, key=jax.random.key(1))
    if who == "forward":
        dmft.solve(model, data, method="forward", samples=96, replicas=3, precision=precision, **kw)
        units = 32
    else:
        networks.train(model, data, width=16, seeds=3, **kw)
        units = 16
    assert seen and set(seen) == {units * (24 + test_points)}


def _flat(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        elif v is not None:
            yield f"{prefix}{k}", v


@pytest.mark.parametrize("who", ["forward", "networks"])
def test_records_one_member_at_a_time_equal_the_vmapped_ones(monkeypatch, who):
    """A record over replicas or seeds as a loop (past RECORD_MAP_VALUES on a CPU) gives the
    vmapped record's numbers up to rounding: every recorded quantity, kernels and the control
    variate's included; so do the loops of the replicas' setup, the networks' initial outputs and
    the forward solver's predictions."""
    data = dmft.tasks.single_index(D=6, P=24, P_test=8, key=jax.random.key(0))
    model = dmft.TwoLayer(activation="tanh", gamma0=1.0)
    kw = dict(eta0=0.2, steps=30, save_every=10, kernels=True, key=jax.random.key(1))

    def run(threshold):
        monkeypatch.setattr(runner, "RECORD_MAP_VALUES", threshold)
        jax.clear_caches()                                  # the record's program is traced anew
        run = (dmft.solve(model, data, method="forward", samples=96, replicas=3, **kw) if who == "forward"
               else networks.train(model, data, width=16, seeds=3, **kw))
        out = {name: getattr(run, name) for name in ("f_train", "f_test", "train_loss", "test_loss", "ntk",
                                                      "feature_kernel", "gradient_kernel", "alignment")}
        out.update(weight_change=run.weight_change, error=getattr(run, "error", None) or {})
        if who == "forward":                                # (the replicas' setup and predictions too)
            out["predict"], out["predict_error"] = run.predict(x_new, error=True)
        return dict(_flat(out))

    x_new = np.asarray(jax.random.normal(jax.random.key(2), (5, 6)))

    looped, vmapped = run(1), run(2 ** 40)
    assert looped.keys() == vmapped.keys()
    if who == "forward":
        assert "error.test_loss" in looped
    for name in looped:
        x, y = np.asarray(looped[name], float), np.asarray(vmapped[name], float)
        scale = np.max(np.abs(y[np.isfinite(y)]), initial=0.0)
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-12 * max(scale, 1e-300), err_msg=name)


@settings(max_examples=40, deadline=None)
@given(bad=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 5), max_size=3))
def test_the_first_non_finite_record_is_the_earliest_over_all_records(bad):
    """first_nonfinite names the earliest bad save over every record, not the first record met
    in the dict's order (a mutation audit: keeping the first record met failed no test)."""
    from dmft.runner import first_nonfinite
    recs = {k: np.ones((6, 2)) for k in ("a", "b", "c")}
    for k, i in bad.items():
        recs[k][i, 1] = np.nan
    first, name = first_nonfinite(recs)
    if not bad:
        assert (first, name) == (-1, None)
    else:
        assert first == min(bad.values()) and bad[name] == first


def test_save_grids_and_decay_factors_have_their_exact_values():
    """final_time_counts rounds to the nearest step (a floor put saves one step off, 16 for 17, and
    refused a valid grid of 0.7 / 0.1); the flow's decay factor is RK4's to its fourth-order term
    (a mutation audit: neither had a value test)."""
    from dmft.schedule import decay_factor, final_time_counts
    np.testing.assert_array_equal(final_time_counts(10, 5, [0.3]), [[0, 8, 17, 25, 33]])
    np.testing.assert_array_equal(final_time_counts(0.7, 8, [0.1]), [np.arange(8)])
    for x in (0.1, 0.25, 1.3):
        R = 1 - x + x ** 2 / 2 - x ** 3 / 6 + x ** 4 / 24
        assert decay_factor(x, 1.0, 40, "flow") == pytest.approx(R ** 40, rel=1e-13)
        assert decay_factor(x, 1.0, 40, "gd") == pytest.approx((1 - x) ** 40, rel=1e-13)


def test_a_record_that_overflows_while_the_state_is_finite_names_its_save():
    """A record (a kernel, say) that is not finite at the third save while the state stays finite:
    the DivergenceError names the step of that save, keeps the two saves before it, and says the
    step interval (no test reached this path; a step one save early passed: a mutation audit)."""
    from typing import NamedTuple

    class St(NamedTuple):
        x: jax.Array
        k: jax.Array
        bad: jax.Array

    def step(static, ctx, st, drive):
        return St(st.x + 1.0, st.k + 1, st.bad)

    def record(static, ctx, st):
        return {"y": jnp.where(st.x >= 5.0, jnp.inf, st.x)}      # finite at steps 0, 2, 4; inf at 6

    start = St(jnp.asarray(0.0), jnp.asarray(0), jnp.asarray(-1))
    with pytest.raises(dmft.DivergenceError, match=r"'y' is not finite at the save after step 6 \(it "
                                                   r"overflowed between steps 4 and 6\)") as err:
        runner.run_saved(step, record, None, None, start, gaps=np.array([2, 2, 2, 2]))
    assert err.value.step == 6 and list(err.value.saved_steps) == [0, 2, 4]
    np.testing.assert_array_equal(err.value.partial["y"], [0.0, 2.0, 4.0])
