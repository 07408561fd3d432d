"""The solve and validate jobs' sweep over gamma0: a lazy step past its stability refused by the
preflight (before the job claims its directory), never a run that would complete; a DMFT that
fails at one gamma0 flagged while the sweep goes on, the others' results and report kept."""

import json
import os

import numpy as np
import pytest

import dmft
from dmft.errors import ConfigError, DivergenceError
from experiments import jobs

# P = 32 relu points, 40 full-batch steps: the lazy solve at eta0 past its limit raises by step 20
# (every run saves 5 times: one compiled lazy program)
SMALL = ["task.D=8", "task.P=32", "task.P_test=8", "train.save_every=10", "theory.samples=64",
         "theory.replicas=2", "sweep.gamma0=[0.1, 1.0]"]


def _limit():
    """2 P / lambda_max(K0), read from a stable lazy solve's own record (dmft.solve's eigvalsh,
    not the preflight's): info["lazy_eta0_stability"] = eta0 lambda_max(K0) / P."""
    p = jobs.preflight(jobs.load_config(None, SMALL + ["train.steps=4", "train.save_every=1"]), "solve")
    sol = dmft.solve(p.model, p.data, schedule=p.schedule, method="lazy", kernels=False)
    return 2 * p.schedule.eta0 / sol.info["lazy_eta0_stability"]


def test_unstable_lazy_step_refused_before_compute_only_where_the_lazy_limit_diverges(tmp_path):
    limit = _limit()
    out = str(tmp_path / "out")
    cfg = jobs.load_config(None, SMALL + [f"train.eta0={1.02 * limit!r}", "train.steps=40"])
    with pytest.raises(ConfigError) as err:          # (before: a DivergenceError, the directory claimed)
        jobs.run_job("solve", cfg, out, log=lambda *_: None)
    msg = str(err.value)
    assert msg.startswith("train.eta0") and f"{limit:.6g}" in msg and "> 2" in msg, msg
    assert not os.path.exists(out)
    # no false refusal: just below the limit, and past it where its growth cannot show in a
    # 4-step run, the lazy solve completes (finite) and the preflight passes; so does SGD past
    # the full-batch limit (B = 16 of 32: the run's batch sequence converges there)
    for sets in ([f"train.eta0={0.98 * limit!r}", "train.steps=40"],
                 [f"train.eta0={1.02 * limit!r}", "train.steps=4", "train.save_every=1"],
                 [f"train.eta0={1.02 * limit!r}", "train.steps=40", "train.batch_size=16"]):
        p = jobs.preflight(jobs.load_config(None, SMALL + sets), "solve")
        lazy = dmft.solve(p.model.replace(gamma0=0.1), p.data, schedule=p.schedule, method="lazy", kernels=False,
                          **({"batch_key": p.solve_options["batch_key"]} if "batch_key" in p.solve_options else {}))
        assert np.all(np.isfinite(lazy.train_loss)) and lazy.train_loss[-1] < lazy.train_loss[0], sets


def _diverging(monkeypatch, fails, step, saved_steps, message) -> dict:
    """dmft.solve raising a DivergenceError (at `step`, its saves [1.0, 0.5] at `saved_steps`) on the
    calls where fails(gamma0, that gamma0's call count, the call's options) holds; returns the counts."""
    real, calls = dmft.solve, {}

    def solve(model, data, *args, **kw):
        calls[model.gamma0] = calls.get(model.gamma0, 0) + 1
        if fails(model.gamma0, calls[model.gamma0], kw):
            raise DivergenceError(message, step=step, cause="non-finite train_loss",
                                  partial={"train_loss": np.array([1.0, 0.5])}, saved_steps=saved_steps)
        return real(model, data, *args, **kw)

    monkeypatch.setattr(dmft, "solve", solve)
    return calls


def test_sweep_goes_on_past_a_diverging_gamma0_and_flags_it(tmp_path, monkeypatch):
    # the DMFT at gamma0 = 1 (its second solve: the first is its lazy limit) diverges at step 7 of
    # train_loss; the theory is the lazy method (seconds), the failure injected where dmft.solve raises
    failing = {1.0}
    calls = _diverging(monkeypatch, lambda g, n, kw: g in failing and n == 2, 7, [0, 5],
                       "lazy: train_loss is not finite at t = 7 (saved step 7). The saves up to step 5 (2) are in "
                       ".partial (their step counts in .saved_steps).")
    out = tmp_path / "out"
    cfg = jobs.load_config(None, SMALL + ["train.steps=4", "train.save_every=1", "theory.method=lazy",
                                          "sweep.gamma0=[0.1, 1.0, 0.5]"])
    with pytest.raises(DivergenceError) as err:
        jobs.run_job("solve", cfg, str(out), log=lambda *_: None)
    msg = str(err.value)
    assert "1 of 3 sweep.gamma0 values failed, and the sweep went on past it: theory at gamma0 = 1:" in msg, msg
    assert "theory/dmft_gamma0_1_failed.npz" in msg and ".partial" not in msg, msg
    # the point after the failing one ran, and the report of the others is written, flagging it
    for g in ("0.1", "0.5"):
        assert (out / "theory" / f"dmft_gamma0_{g}.npz").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["gamma0"] == [0.1, 0.5]
    [bad] = report["failed"]
    assert (bad["gamma0"], bad["step"], bad["cause"]) == (1.0, 7, "non-finite train_loss")
    assert "Failed points" in (out / "report.md").read_text()
    kept = np.load(out / "theory" / "dmft_gamma0_1_failed.npz")
    assert kept["train_loss"].tolist() == [1.0, 0.5] and kept["saved_steps"].tolist() == [0, 5]
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    # where every gamma0 fails there is nothing to report: the run stops with the first error,
    # naming what it kept and the others' failures
    calls.clear()
    failing.update({0.1, 0.5})
    with pytest.raises(DivergenceError) as err:
        jobs.run_job("solve", cfg, str(out), force=True, log=lambda *_: None)
    msg = str(err.value)
    assert msg.startswith("theory at gamma0 = 0.1:") and "no report was written" in msg, msg
    assert "The DMFT failed at every gamma0" in msg and "theory/dmft_gamma0_0.5_failed.npz" in msg, msg
    # (the first failure's saves, written to theory/ as every failed point's, were left unnamed)
    assert (out / "theory" / "dmft_gamma0_0.1_failed.npz").exists() and "theory/dmft_gamma0_0.1_failed.npz" in msg, msg
    assert not (out / "report.md").exists()


def test_a_failing_node_check_is_flagged_as_the_node_check_and_its_saves_named_so(tmp_path, monkeypatch):
    # theory.node_check: the DMFT at gamma0 = 1 converges (saved), its solve with the nodes split in 2
    # (the third solve there: lazy, DMFT, split) diverges. Its saves were written as the DMFT's
    # (theory/dmft_gamma0_1_failed.npz beside the complete theory/dmft_gamma0_1.npz) and report.md
    # said "The DMFT failed at gamma0 = 1"
    def third_at_1(g, n, kw):
        if g == 1.0 and n == 3:
            assert kw.get("node_split") == 2
            return True
        return False
    _diverging(monkeypatch, third_at_1, 3, [0, 2], "forward: train_loss is not finite at t = 3 (saved step 3).")
    out = tmp_path / "out"
    cfg = jobs.load_config(None, SMALL + ["train.steps=4", "train.save_every=2", "theory.method=forward",
                                          "theory.node_check=true"])
    with pytest.raises(DivergenceError, match="with its nodes split in 2"):
        jobs.run_job("solve", cfg, str(out), log=lambda *_: None)
    assert (out / "theory" / "dmft_half_nodes_gamma0_1_failed.npz").exists()
    assert not (out / "theory" / "dmft_gamma0_1_failed.npz").exists()
    [bad] = json.loads((out / "report.json").read_text())["failed"]
    assert (bad["solve"], bad["partial"]) == ("dmft_half_nodes", "theory/dmft_half_nodes_gamma0_1_failed.npz")
    assert "or its node check (theory.node_check) failed at gamma0 = 1" in (out / "report.md").read_text()
    # the rerun resumes: the DMFT at gamma0 = 1 finished (its result kept, verified, reused), so only its
    # node check's split solves are computed again (and the failed split solve's saves are gone)
    monkeypatch.undo()
    calls = _diverging(monkeypatch, lambda g, n, kw: False, 0, [], "")
    said = []
    jobs.run_job("solve", cfg, str(out), log=said.append)
    assert calls == {1.0: 2}, calls
    assert any("resuming: 6 of 8 results reused (verified)" in s for s in said), said
    assert not (out / "theory" / "dmft_half_nodes_gamma0_1_failed.npz").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
