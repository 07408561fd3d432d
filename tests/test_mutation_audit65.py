"""A mutation audit of the last sessions' changes: behaviour that a hand-made mutant changed while
every test passed (each test here fails under its mutant and passes on the library as it is)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dmft
from dmft import runner


class _Toy(NamedTuple):
    x: jax.Array
    k: jax.Array
    bad: jax.Array


def _toy(bad_at=(None, None), record_bad_from=None):
    """Two members, each a sum x of the drive's values (drive[k] = k + 1 at step k: x is exact);
    member m's update from step bad_at[m] goes non-finite (its state.bad says so), and the
    record y = x is non-finite from step `record_bad_from` on, where asked."""
    at = jnp.asarray([-1 if b is None else b for b in bad_at])

    def step(static, ctx, st, drive):
        went_bad = st.k == at
        x = jnp.where(went_bad | ~jnp.isfinite(st.x), jnp.nan, st.x + drive)
        bad = jnp.where((st.bad < 0) & went_bad, st.k, st.bad)
        return _Toy(x, st.k + 1, bad)

    def record(static, ctx, st):
        late = st.k >= (record_bad_from if record_bad_from is not None else 2 ** 30)
        return {"y": jnp.where(late, jnp.inf, st.x)}

    return step, record, _Toy(jnp.zeros(2), jnp.asarray(0), jnp.asarray([-1, -1]))


def _run(toy, gaps, **kw):
    step, record, start = toy
    drive = jnp.arange(1.0, max(int(gaps.sum()), 1) + 1)        # (a drive of no steps cannot be sliced)
    return runner.run_saved(step, record, None, None, start, gaps=gaps, drive=drive, **kw)


@pytest.fixture
def cut_calls(monkeypatch):
    """run_saved with a progress bar cuts its first call at 3 steps, then at one step a call: the
    first interval (10 steps) is taken in silent calls, the first of which records step 0."""
    monkeypatch.setattr(runner, "FIRST_CALL_STEPS", 3)
    monkeypatch.setattr(runner, "CALL_SECONDS", 0.0)


GAPS = np.array([10, 1, 6, 2])
COUNTS = np.concatenate([[0], np.cumsum(GAPS)])


def test_a_cut_run_records_step_0_once_and_every_save_at_its_step(cut_calls):
    """Cut into silent calls or not, the records are the state at steps 0, 10, 11, 17, 19, each
    step fed its own slice of the drive (x = k (k + 1) / 2 after k steps: exact). A silent first
    call that kept its last record (step 3) for step 0, counted its steps as the interval's only
    pending ones, or placed the drive one step off after the first call passed every test (a
    mutation audit)."""
    want = np.repeat((COUNTS * (COUNTS + 1) / 2)[:, None], 2, axis=1)
    whole, _, _ = _run(_toy(), GAPS)
    cut, end, _ = _run(_toy(), GAPS, progress=True)
    np.testing.assert_array_equal(whole["y"], want)
    np.testing.assert_array_equal(cut["y"], want)
    assert int(end.k) == GAPS.sum()
    none, _, _ = _run(_toy(), np.zeros(0, np.int64), progress=True)
    np.testing.assert_array_equal(none["y"], [[0.0, 0.0]])        # no intervals: the record at step 0 alone


def test_a_non_finite_record_at_step_0_is_named_when_the_first_call_is_silent(cut_calls):
    """The record at step 0 taken by a silent first call (no save after it) is checked: a
    non-finite one is named as the initial record, cut or not (with the check skipped for a
    silent call, the cut run returned an infinite record without a word: a mutation audit)."""
    for progress in (False, True):
        with pytest.raises(dmft.DivergenceError, match=r"'y' is not finite in the initial record \(step 0\)") as err:
            _run(_toy(record_bad_from=0), GAPS, progress=progress)
        assert err.value.step == 0 and err.value.partial is None and list(err.value.saved_steps) == []


@pytest.mark.parametrize("bad_at, kept", [((4, None), [0]), ((None, 10), [0, 10]), ((11, 16), [0, 10, 11]),
                                          ((16, 11), [0, 10, 11]), ((16, None), [0, 10, 11])])
def test_a_divergence_keeps_the_saves_up_to_its_step_cut_or_not(cut_calls, bad_at, kept):
    """The update from step `bad_at` of a member goes bad: the error names the earliest such
    step over the members and keeps the saves after at most that many steps (the save at step
    10 is good when step 10's update is the bad one), the same cut into calls or not (the save
    at the bad step itself, or the latest member's step, passed every test: a mutation audit)."""
    first = min(b for b in bad_at if b is not None)
    for progress in (False, True):
        with pytest.raises(dmft.DivergenceError, match=f"non-finite output at step {first} ") as err:
            _run(_toy(bad_at), GAPS, progress=progress)
        assert err.value.step == first
        assert list(err.value.saved_steps) == kept
        np.testing.assert_array_equal(err.value.partial["y"][:, 0], np.asarray(kept) * (np.asarray(kept) + 1) / 2)


def test_a_record_that_overflows_before_the_state_goes_bad_in_the_same_call_is_named():
    """In one call, the record is infinite from the save at step 10 and the state goes bad at
    step 16: the error names the record's save (the earlier), keeping the save at step 0 (with
    the records' check skipped where the state went bad, the state's step 16 and three saves,
    one of them infinite, were reported: a mutation audit)."""
    with pytest.raises(dmft.DivergenceError, match=r"'y' is not finite at the save after step 10 "
                                                   r"\(it overflowed between steps 0 and 10\)") as err:
        _run(_toy((16, None), record_bad_from=10), GAPS)
    assert err.value.step == 10 and list(err.value.saved_steps) == [0]
    assert np.all(np.isfinite(err.value.partial["y"]))


def test_batch_indices_outside_a_trace_compiles_once_per_size_and_equals_the_traced_draw(monkeypatch):
    """Called eagerly, batch_indices traces its draw once per (P, B), whatever the key and step
    (dropping the cached program, or taking the eager path op by op, passed every test: each
    compiled again at every call, 20 ms each); the batches equal the draw traced in a program."""
    from dmft import schedule

    traces = []
    draw = schedule._batch_indices

    def counted(key, step, P, B):
        traces.append((P, B))
        return draw(key, step, P, B)

    monkeypatch.setattr(schedule, "_batch_indices", counted)
    schedule._batch_indices_program.cache_clear()
    traced = jax.jit(lambda k, s: draw(k, s, 50, 5))
    for seed in range(3):
        for step in (0, 7):
            key = jax.random.key(seed)
            got = np.asarray(schedule.batch_indices(key, step, 50, 5))
            np.testing.assert_array_equal(got, np.asarray(traced(key, step)))
    assert traces == [(50, 5)]
    assert len(set(np.asarray(schedule.batch_indices(jax.random.key(0), s, 50, 5)).tobytes() for s in range(4))) == 4
    np.testing.assert_array_equal(schedule.batch_indices(jax.random.key(0), 0, 50, 50), np.arange(50))
    assert traces == [(50, 5), (50, 50)]
    schedule._batch_indices_program.cache_clear()        # (no program of the counted draw kept)


def test_a_seed_means_standard_errors_are_over_the_seeds_it_averages():
    """The grok job's seed mean leaves a diverged seed out of the whole curve, and so do its
    losses' standard errors: before the divergence they are the kept seeds' spread / sqrt(kept),
    not a spread over all seeds (which the mean does not average; taking every seed there passed
    every test: a mutation audit). The report counts the seeds the mean is over (its count was
    not read: a wrong one passed)."""
    from experiments.grok import job
    from experiments.grok.report import _diverged_text

    t = np.linspace(0.0, 10.0, 11)
    good = np.stack([np.exp(-t / (2.0 + i)) for i in range(3)])
    bad = np.where(t < 5, 10.0 * np.exp(t), np.nan)                   # runs away, NaN from t = 5
    d = {"train_loss": np.vstack([0.5 * good, bad]), "test_loss": np.vstack([good, bad])}
    cur = job._seed_mean(d)
    for k, curves in (("train_loss", 0.5 * good), ("test_loss", good)):
        np.testing.assert_allclose(cur[k], curves.mean(0), rtol=1e-14)
        np.testing.assert_allclose(cur[f"{k}_se"], curves.std(0, ddof=1) / np.sqrt(3), rtol=1e-12)
    assert _diverged_text({"seeds": 4, "seeds_diverged": 1}) == " (1 of 4 seeds diverged: the mean of the other 3)"


def test_recorded_setting_reads_info_first_then_train_sde_model_and_keeps_a_recorded_zero():
    """dl.recorded_setting: a result's info entry, else its recorded configuration's train, sde,
    then model section; a recorded 0 (no weight decay) is a value, not a missing entry (read as
    missing, a configuration's other value was taken: a mutation audit); None where nothing is
    recorded or the result has no info."""
    from types import SimpleNamespace as NS

    from dmft import deep_linear as dl

    config = {"train": {"weight_decay": 0.1}, "sde": {"weight_decay": 0.2, "paths": 8},
              "model": {"depth": 3, "paths": 9, "weight_decay": 0.3}}
    assert dl.recorded_setting(NS(info={"weight_decay": 0.0, "config": config}), "weight_decay") == 0.0
    assert dl.recorded_setting(NS(info={"config": config}), "weight_decay") == 0.1
    assert dl.recorded_setting(NS(info={"config": {**config, "train": {}}}), "weight_decay") == 0.2
    assert dl.recorded_setting(NS(info={"config": config}), "paths") == 8
    assert dl.recorded_setting(NS(info={"config": config}), "depth") == 3
    assert dl.recorded_setting(NS(info={"depth": 1, "config": config}), "depth") == 1
    assert dl.recorded_setting(NS(info={"config": config}), "init") is None
    assert dl.recorded_setting(NS(info=None), "depth") is None and dl.recorded_setting(object(), "depth") is None


def test_cross_modes_of_a_fixed_set_is_the_exact_minibatch_gradient_variance():
    """cross_modes_of on a fixed set: c_ab = A2 d_a^2 + A1 d_a + A0 is B Var(G_ab), the variance of
    the minibatch gradient along u_a v_b^T (a != b) over every B-subset of the P points drawn
    without replacement, at the network W = sum_i pi_i u_i v_i^T (residuals d = target - pi, the
    target's noise pair and an empty input direction included). Enumerated here over all 35
    subsets (P = 7, B = 3): equal to rounding (measured 9e-16 on values up to 1.25). Off the
    diagonal the gradient's mean is 0 on white inputs, so the second moment is the variance. (The
    finite-population factor, the cross term's 2, the noise pair's target and its rows' inputs
    each passed every test when changed: a mutation audit; the drift's tests take the
    coefficients as given.)"""
    import itertools

    from dmft import deep_linear as dl

    data = dmft.tasks.linear_teacher(4, 3, [2.0, 0.8], P=7, label_noise=0.7, key=3)
    B = 3
    cm = dl.cross_modes_of(data, B)
    modes = dl.effective_modes(data)
    r = modes.s.size
    _, u, sv, vt, idx = dl._least_squares_pairs(data)
    rest = [j for j in range(sv.size) if j not in idx]
    assert r == 2 and len(rest) == 1                    # a noise pair of the target, and d_in > d_out
    Uf = dl._full_basis(np.concatenate([np.asarray(modes.U), u[:, rest]], axis=1))
    Vf = dl._full_basis(np.concatenate([np.asarray(modes.V), vt[rest].T], axis=1))
    X, Y = np.asarray(data.x_train), np.asarray(data.y_train)
    pi = np.array([1.3, 0.4])
    W = Uf[:, :r] @ np.diag(pi) @ Vf[:, :r].T
    g = np.einsum("ia,pi,pj,jb->pab", Uf, Y - X @ W.T, X, Vf)           # one point's gradient, in the bases
    G = np.stack([g[list(s)].mean(0) for s in itertools.combinations(range(data.P), B)])
    d = cm.target - np.concatenate([pi, np.zeros(cm.target.size - r)])
    c = cm.A2 * d[:, None] ** 2 + cm.A1 * d[:, None] + cm.A0
    off = ~np.eye(*c.shape, dtype=bool)
    np.testing.assert_allclose(cm.target[:3], sv, rtol=1e-12)
    assert np.max(np.abs(G.mean(0))[off]) < 1e-12
    np.testing.assert_allclose((B * G.var(0))[off], c[off], rtol=0, atol=1e-12)
    assert np.max(np.abs(c[off])) > 0.5


def test_the_sde_step_adds_the_cross_mode_drift_of_its_own_step_size_and_batch():
    """One Euler-Maruyama step of mode_sde(cross_modes=True) against the plain SDE on the same
    key (the same noise): each path's layer scalar differs by eta0 times the cross-mode drift
    at the start (`_cross_drift_a`, at the run's eta0 and B), to rounding (1e-13 on a difference
    of ~1e-4). (A step that left the drift out, or took it or its coefficients at B = 1, passed every fast test: the
    mean-gap test that sees it takes minutes; a mutation audit.)"""
    from dmft import deep_linear as dl

    L, eta, B, a0 = 3, 0.01, 2, 0.5
    model = dmft.DeepLinear(L, 8, a0, "aligned")
    # a fixed set: the coefficients depend on B (their finite-population factor)
    data = dmft.tasks.linear_teacher(6, 5, [2.0, 1.0], P=12, label_noise=0.8, key=0)
    kw = dict(eta0=eta, batch_size=B, steps=1, save_every=1, paths=4, key=jax.random.key(7))
    plain, cross = dl.mode_sde(model, data, **kw), dl.mode_sde(model, data, cross_modes=True, **kw)
    np.testing.assert_array_equal(cross.modes[:, 0], plain.modes[:, 0])
    diff = np.cbrt(cross.modes[:, 1]) - np.cbrt(plain.modes[:, 1])
    want = eta * dl._cross_drift_a(np, L, np.full((1, 2), a0), dl.cross_modes_of(data, B), eta, B)
    assert np.all(np.abs(want) > 1e-5)
    np.testing.assert_allclose(diff, np.broadcast_to(want, diff.shape), rtol=0, atol=1e-13)
    # the recorded first-order shift is the run's own (B = 2: recorded at B = 1 it passed every test)
    shift = dl.cross_shift(model, data, eta0=eta, batch_size=B)
    for run in (plain, cross):
        np.testing.assert_allclose(run.info["cross_shift"], shift, rtol=1e-12)
    assert not np.allclose(shift, dl.cross_shift(model, data, eta0=eta, batch_size=1), rtol=0.1)


def test_a_log_grid_with_more_saves_than_steps_keeps_every_step_and_one_save_is_the_last_step():
    """Schedule(save_at='log'): more saves than steps are accepted and keep each step at most
    once (the default 50 on a 40-step run, 150 on 3 steps: every step); n_saves = 1 saves the
    last step alone; 1000 steps and 200 saves keep 131 after step 0 (the docstring's count). (A
    refusal of n_saves > steps, and one save read as step 1 and the last, passed the schedule's
    tests: a mutation audit.)"""
    short = dmft.Schedule(eta0=0.1, steps=40, save_at="log")
    counts = short.save_steps.tolist()
    assert counts[0] == 0 and counts[-1] == 40 and counts[:18] == list(range(18)) and len(counts) == 29
    assert np.all(np.diff(counts) > 0)
    np.testing.assert_array_equal(dmft.Schedule(eta0=0.1, steps=3, save_at="log", n_saves=150).save_steps,
                                  [0, 1, 2, 3])
    np.testing.assert_array_equal(dmft.Schedule(eta0=0.1, steps=1000, save_at="log", n_saves=1).save_steps,
                                  [0, 1000])
    assert dmft.Schedule(eta0=0.1, steps=1000, save_at="log", n_saves=200).save_steps.size == 1 + 131
