"""The command-line jobs as functions: solve, simulate, validate into a results directory.

A results directory holds run.json (the command, configuration, environment and
status), config.toml, theory/ and networks/ (.npz + .json each), figures/ and
report.md + report.json. A directory that holds a different run is refused;
rerunning the same configuration finds it complete and does nothing (pass
force=True to recompute).
"""

from __future__ import annotations

import json
import os

import jax

import dmft

from . import report as _report
from .config import to_toml
from .sweep import lazy_to_rich

__all__ = ["OutputConflict", "build", "run_job", "JOBS"]

JOBS = ("solve", "simulate", "validate")


class OutputConflict(RuntimeError):
    """The output directory already holds something else."""


def build(cfg: dict):
    """(data, model, solve_kw, train_kw) from a validated configuration."""
    t, m = cfg["task"], cfg["model"]
    key = jax.random.key(t["seed"])
    if t["name"] == "single_index":
        data = dmft.tasks.single_index(D=t["D"], P=t["P"], P_test=t["P_test"], degree=t["degree"],
                                       key=key, noise=t["noise"])
    elif t["name"] == "kumar_quadratic":
        data = dmft.tasks.kumar_quadratic(D=t["D"], P=t["P"], P_test=t["P_test"], key=key)
    elif t["name"] == "teacher_network":
        data = dmft.tasks.teacher_network(D=t["D"], P=t["P"], P_test=t["P_test"], width=t["teacher_width"],
                                          activation=t["teacher_activation"], key=key)
    else:
        data = dmft.tasks.load_npz(t["path"])
    act = dmft.activations.quadratic(m["eps"]) if m["activation"] == "quadratic" else m["activation"]
    model = dmft.TwoLayer(act, gamma0=1.0, readout=m["readout"], centered=m["centered"])
    tr, th = cfg["train"], cfg["theory"]
    common = dict(eta0=tr["eta0"], steps=tr["steps"], save_every=tr["save_every"])
    solve_kw = dict(common, method=th["method"], samples=th["samples"], replicas=th["replicas"],
                    sampler=th["sampler"], key=jax.random.key(th["seed"]), weight_decay=tr["weight_decay"])
    train_kw = dict(common, antithetic=cfg["simulate"]["antithetic"], weight_decay=tr["weight_decay"],
                    max_memory_gb=cfg["simulate"]["max_memory_gb"])
    return data, model, solve_kw, train_kw


def preflight(cfg: dict, job: str):
    """Build the problem and check every solve and ensemble would start, before any compute.

    Raises ValueError (from dmft / networks validation) naming the argument.
    """
    data, model, solve_kw, train_kw = build(cfg)
    if job in ("validate", "simulate") and data.P_test == 0:
        raise ValueError("task.P_test: the validation compares test losses; give test points")
    from networks.train import _validate as _check_train
    from dmft.solve import _validate as _check_solve

    for g in cfg["sweep"]["gamma0"]:
        m = model.replace(gamma0=g)
        if job in ("solve", "validate"):
            opts = {k: solve_kw.get(k, d) for k, d in (
                ("method", "auto"), ("dynamics", "gd"), ("samples", 16384), ("replicas", 4),
                ("sampler", "stratified"), ("control_variate", True), ("kernels", True),
                ("weight_decay", 0.0), ("tol", 1e-12), ("max_iter", 200), ("damping", 1.0),
                ("window", None), ("kernel_nodes", 64), ("quadrature_nodes", 8), ("max_memory_gb", 4.0))}
            _check_solve(m, data, solve_kw["eta0"], solve_kw["steps"], solve_kw["save_every"], opts)
        if job in ("simulate", "validate"):
            _check_train(m, data, cfg["simulate"]["widths"], cfg["simulate"]["seeds"], train_kw["eta0"],
                         train_kw["steps"], train_kw["save_every"], None, train_kw["antithetic"], False,
                         train_kw["weight_decay"], train_kw["max_memory_gb"])
    return data, model, solve_kw, train_kw


def _manifest_path(out):
    return os.path.join(out, "run.json")


def prepare_output(out: str, job: str, cfg: dict, force: bool) -> bool:
    """Claim the directory for this run. Returns False when the same run is already complete."""
    from dmft.io import jsonable

    path = _manifest_path(out)
    if os.path.exists(path):
        try:
            with open(path) as fh:
                old = json.load(fh)
        except (OSError, json.JSONDecodeError):
            old = {}
        same = old.get("command") == job and old.get("config") == jsonable(cfg)
        if same and old.get("status") == "complete" and not force:
            return False
        if not same and not force:
            diff = _differences(old.get("config", {}), jsonable(cfg))
            raise OutputConflict(
                f"{out} already holds a different run ({old.get('command', '?')}"
                f"{'; differing keys: ' + ', '.join(diff[:8]) if diff else ''}). "
                "Choose another --out, or pass --force to overwrite it.")
    elif os.path.isdir(out) and os.listdir(out) and not force:
        raise OutputConflict(f"{out} is not empty and was not written by dmft; choose another --out "
                             "or pass --force")
    os.makedirs(out, exist_ok=True)
    _write_manifest(out, job, cfg, "running")
    with open(os.path.join(out, "config.toml"), "w") as fh:
        fh.write(to_toml(cfg))
    return True


def _differences(a: dict, b: dict, prefix=""):
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}")
    return out


def _write_manifest(out, job, cfg, status, extra=None):
    from dmft.io import environment, jsonable

    man = {"command": job, "status": status, "config": jsonable(cfg), "environment": environment()}
    if extra:
        man.update(jsonable(extra))
    tmp = _manifest_path(out) + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(man, fh, indent=2)
    os.replace(tmp, _manifest_path(out))


def run_job(job: str, cfg: dict, out: str, *, force: bool = False, progress: bool = False,
            log=print) -> dict:
    """Run `job` ("solve", "simulate" or "validate") into `out`.

    Returns:
        {"status": "complete" | "already complete", "checks": [...], "files": {...}}
    """
    if job not in JOBS:
        raise ValueError(f"job must be one of {JOBS}, got {job!r}")
    data, model, solve_kw, train_kw = preflight(cfg, job)
    if not prepare_output(out, job, cfg, force):
        log(f"{out}: this run is already complete (same command and configuration); "
            "pass --force to recompute")
        with open(_manifest_path(out)) as fh:
            old = json.load(fh)
        return {"status": "already complete", "checks": old.get("checks", []), "files": old.get("files", {})}
    sim = cfg["simulate"]
    key = jax.random.key(sim["seed"])
    if job == "simulate":
        runs = simulate(model, data, cfg["sweep"]["gamma0"], sim["widths"], sim["seeds"], train_kw,
                        key, progress)
        stems = _report.write_runs(runs, out)
        figures = _report.write_ensemble_figure(runs, out)
        verdicts = []
        md, js = _report.write_simulation_report(runs, model, data, cfg, out, figures)
        sweep = None
    else:
        sweep = lazy_to_rich(model, data, cfg["sweep"]["gamma0"],
                             sim["widths"] if job == "validate" else [], sim["seeds"],
                             solve_kw=solve_kw, train_kw=train_kw, key=key, progress=progress,
                             simulate=job == "validate")
        stems = _report.write_results(sweep, out)
        figures = _report.write_figures(sweep, out)
        verdicts = _report.checks(sweep, cfg["check"])
        md, js = _report.write_report(sweep, cfg, out, verdicts, figures)
    files = {"report": [md, js], "figures": figures, "results": [s + ".npz" for s in stems]}
    _write_manifest(out, job, cfg, "complete", {"checks": verdicts, "files": files})
    return {"status": "complete", "checks": verdicts, "files": files, "sweep": sweep}


def simulate(model, data, gamma0s, widths, seeds, train_kw, key, progress=False) -> dict:
    """Network ensembles only: gamma0 -> {width -> networks.Run}; point i uses fold_in(key, i)."""
    import networks

    runs = {}
    for i, g in enumerate(gamma0s):
        runs[float(g)] = networks.train(model.replace(gamma0=g), data, width=list(widths), seeds=seeds,
                                        key=jax.random.fold_in(key, i), progress=progress, **train_kw)
    return runs
