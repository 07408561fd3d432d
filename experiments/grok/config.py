"""Configuration of the `dmft grok` job: testbeds, thresholds, phase diagrams, weight decay.

Each testbed is a task of `experiments.problem` with its model:

- "kumar": phi = h + eps/2 h^2, fixed readouts, centered, y = (beta . x)^2 / 2
  (task kumar_quadratic); infinite width through the exact closure.
- "modular_addition": one-hot pairs -> (n + m) mod p, square activation, trained
  readouts, C = p outputs; the forward solver.
- "sparse_parity": x in {-1, 1}^n, y = product of k hidden bits; tanh with trained
  readouts by default (relu has no odd degree-3 part without biases: it cannot learn it).
- "lyu": weight decay that triggers grokking (Lyu et al. 2024; Kumar et al. 2024, Sec. 5):
  the Kumar target with a homogeneous activation (square), trained readouts, an
  uncentered output with an antithetic initialization (so f(theta_0) = 0), a small gamma0
  (large alpha = 1/gamma0: a lazy, large initialization) and weight decay kappa; the
  prediction is kappa t_grok ~ ln(1/gamma0) / L, L = 3 the degree of f in the weights.

    from experiments import grok
    cfg = grok.load_config(None, ["testbed.name='kumar'"])
"""

from __future__ import annotations

import dataclasses

import numpy as np

import dmft
from dmft.errors import ConfigError
from networks.train import memory_estimate
from validation import grokking as gk

from .. import config as _config
from .. import problem as _problem
from ..config import SEED_MAX, Field, distinct_labels

__all__ = ["SCHEMA", "FULL", "TESTBED_DEFAULTS", "AXES", "LYU_DEGREE", "TESTBEDS", "Testbed", "load_config", "build", "task_of", "schedule_of",
           "minibatch_of", "parity_warning"]

TESTBEDS = ("kumar", "modular_addition", "sparse_parity", "lyu")

SCHEMA: dict[str, dict[str, Field]] = {
    "testbed": {
        "name": Field("str", "kumar", "grokking testbed", choices=TESTBEDS),
        "seed": Field("int", 0, "data seed", 0, maximum=SEED_MAX),
    },
    "kumar": {
        "D": Field("int", 30, "input dimension", 1),
        "P": Field("int", 165, "training points (between D and D^2 for grokking)", 1),
        "P_test": Field("int", 1000, "test points", 1),
        "eps": Field("float", 0.02, "eps of phi = h + eps/2 h^2", 0.0, True),
    },
    "modular_addition": {
        "p": Field("int", 23, "modulus (p >= 2)", 2),
        "train_fraction": Field("float", 0.9, "fraction of the p^2 pairs used for training", 0.0, True),
    },
    "sparse_parity": {
        "n": Field("int", 20, "input bits", 1),
        "k": Field("int", 3, "bits in the parity (k <= n)", 1),
        "P": Field("int", 500, "training points", 1),
        "P_test": Field("int", 1000, "test points", 1),
        "activation": Field("str", "tanh", "activation of the parity network"),
    },
    "lyu": {
        "D": Field("int", 30, "input dimension", 1),
        "P": Field("int", 165, "training points", 1),
        "P_test": Field("int", 1000, "test points", 1),
        "activation": Field("str", "square", "a homogeneous activation (square: f has degree 3)"),
    },
    "model": {
        "gamma0": Field("floats", [0.5, 1.0, 3.0], "richness values (gamma0 = 1/alpha)", 0.0, True),
        "weight_decay": Field("float", 0.0, "weight decay kappa per unit time", 0.0),
    },
    "train": {
        "eta0": Field("float", 2.0, "gradient-descent step in DMFT time units", 0.0, True),
        "steps": Field("int", 30000, "number of steps", 1),
        "save_every": Field("int", 250, "record every this many steps", 1),
        "log_saves": Field("int", 0, "if > 0: this many log-spaced saves instead of save_every (which "
                           "is then not to be given; times that span decades are not quantized by "
                           "the save grid)", 0),
        **_problem.SGD_FIELDS,
    },
    "theory": {
        "samples": Field("int", 4096, "single-site nodes (forward solver testbeds)", 2),
        "replicas": Field("int", 4, "replicas for the error estimate", 1),
        "seed": Field("int", 0, "seed of the single-site nodes", 0, maximum=SEED_MAX),
        "node_check": Field("bool", False, "also solve the DMFT at half and a quarter of the nodes a replica "
                            "(independent nodes; 1.75x the DMFT's cost): the report gives each grokking time and "
                            "final loss at all three, their shift and its extrapolation to infinitely many nodes "
                            "(a bias ~ 1 / nodes, which the replicas' error bars do not see)"),
        "max_memory_gb": Field("float", 4.0, "memory limit of the DMFT (GiB): a solve runs its replicas a few "
                               "at a time above it; a scan's batch, which cannot, is refused", 0.0, True),
    },
    "simulate": {
        "widths": Field("ints", [2, 16, 128], "network widths", 1),
        "seeds": Field("int", 4, "networks per width", 1),
        "seed": Field("int", 1, "seed of the network initializations", 0, maximum=SEED_MAX),
        "max_memory_gb": Field("float", 6.0, "refuse ensembles needing more memory (checked before any "
                               "compute)", 0.0, True),
    },
    "threshold": {
        "loss_fraction": Field("float", 0.1, "loss threshold as a fraction of the initial test loss",
                               0.0, True),
        "accuracy": Field("float", 0.9, "accuracy threshold (classification testbeds)", 0.0, True),
    },
    "diagram": {
        "axes": Field("strs", ["eps", "P", "weight_decay"],
                      "phase diagrams: gamma0 against these (kumar; default [] for the other testbeds)"),
        "gamma0": Field("floats", [0.25, 0.5, 1.0, 2.0, 4.0], "gamma0 values of the diagrams", 0.0, True),
        "eps": Field("floats", [0.01, 0.03, 0.1, 0.3], "eps values", 0.0, True),
        "P": Field("ints", [45, 90, 165, 330], "training-set sizes", 1),
        "weight_decay": Field("floats", [0.0, 2.5e-5, 1e-4, 4e-4], "weight decays", 0.0),
        "minibatch": Field("ints", [4, 16, 64, 165], "SGD minibatch sizes B of the gamma0 x minibatch diagram "
                           "(kumar.P: full-batch gradient descent; each on train.batch_seed's sequence; --full: "
                           "[4, 16, 64, 550])", 1),
        "overlay_width": Field("int", 128, "network width of the finite-width points (0: none)", 0),
        "overlay_seeds": Field("int", 2, "networks per finite-width point", 1),
        "batch_size": Field("int", 32, "grid points per compiled call", 1),
    },
    "decay": {
        "gamma0": Field("float", 1.0, "gamma0 of the weight-decay scan (lyu: default 0.05, must be < 1)",
                        0.0, True),
        "weight_decay": Field("floats", [2.5e-5, 5e-5, 1e-4, 2e-4], "kappa values ([0.0]: no scan)", 0.0),
        "steps": Field("int", 0, "steps of the scan (0: train.steps)", 0),
    },
    "early_warning": {
        "batch_size": Field("int", 1, "the minibatch size B of the SGD whose diffusion along the "
                            "planted direction is a measure (kumar; whatever the run's own train.batch_size)", 1),
        "grid": Field("str", "eps", "the phase diagram over whose runs each measure's lead is counted "
                      "(kumar; 'none': no verdict)", choices=("eps", "P", "weight_decay", "minibatch", "none")),
    },
}

FULL = {   # Kumar et al. (2024) sizes: Fig. 1 (D=100, P=550, eps=0.02, alpha=1) and Fig. 3e
    "kumar": {"D": 100, "P": 550, "P_test": 1000},
    "model": {"gamma0": [0.25, 0.5, 1.0, 2.0]},
    "train": {"steps": 100000, "save_every": 500},
    "simulate": {"widths": [2, 8, 32, 128, 512, 2048, 4096], "seeds": 8},
    "diagram": {"gamma0": [0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0],
                "eps": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
                "P": [110, 220, 330, 550, 1100, 2200], "minibatch": [4, 16, 64, 550],
                "overlay_width": 1024, "overlay_seeds": 4},
}

AXES = ("eps", "P", "weight_decay", "minibatch")

# testbeds whose data has P and P_test in its own section: their input dimension's key
_BASIS = {"kumar": "D", "lyu": "D", "sparse_parity": "n"}
# the data generators' arguments as the keys a user writes for each testbed (a refusal of
# `dmft.tasks` names these, not the [task] section the testbed stands for)
_DATA_KEYS = {
    **{tb: {"P + P_test": f"{tb}.P, {tb}.P_test, {tb}.D", "D": f"{tb}.D", "P_test": f"{tb}.P_test",
            "P": f"{tb}.P", "seed": "testbed.seed", "key": "testbed.seed"} for tb in ("kumar", "lyu")},
    "modular_addition": {"p": "modular_addition.p", "train_fraction": "modular_addition.train_fraction",
                         "seed": "testbed.seed", "key": "testbed.seed"},
    "sparse_parity": {"P + P_test": "sparse_parity.P, sparse_parity.P_test, sparse_parity.n",
                      "n": "sparse_parity.n", "k": "sparse_parity.k", "P_test": "sparse_parity.P_test",
                      "P": "sparse_parity.P", "seed": "testbed.seed", "key": "testbed.seed"},
}

# the lyu testbed's homogeneous activations and the degree L of the output in the weights
# (phi of degree k: f = sum a phi(w . x) has degree k + 1), which its prediction
# kappa t_grok ~ ln(1 / gamma0) / L needs
LYU_DEGREE = {"square": 3, "relu": 2, "linear": 2}
# decay.gamma0 when not given, for the lyu testbed (its law is for alpha = 1 / gamma0 >> 1)
LYU_DECAY_GAMMA0 = 0.05

# Each testbed's own defaults (the schema's are the kumar testbed's), the settings of its shipped
# configuration in scripts/configs, so that `dmft grok --testbed NAME` runs it (grok_kumar.toml
# alone adds one setting to its testbed's, train.log_saves = 200: tests/test_grok.py): with the kumar
# step and gamma0 values (eta0 = 2, gamma0 0.5 / 1 / 3) the lyu DMFT overflowed at step 5-201
# and the modular_addition one at step 186. (sparse_parity's ran, for 30000 steps; its shipped
# settings take 1000.) The kumar testbed alone has a --full preset (Kumar et al.'s sizes).
TESTBED_DEFAULTS = {
    "modular_addition": {
        "model": {"gamma0": [3.0, 4.0, 6.0]},
        "train": {"eta0": 0.05, "steps": 2000, "log_saves": 120},
        "theory": {"samples": 1024, "replicas": 2, "node_check": True},
        "simulate": {"widths": [256, 1024], "seeds": 2},
        "threshold": {"accuracy": 0.95},
        "decay": {"weight_decay": [0.0]},
    },
    "sparse_parity": {
        "model": {"gamma0": [0.02, 0.1, 1.0]},
        "train": {"eta0": 10.0, "steps": 1000, "log_saves": 60},
        "theory": {"samples": 4096, "replicas": 2},
        "simulate": {"widths": [128, 1024], "seeds": 4},
        "decay": {"weight_decay": [0.0]},
    },
    "lyu": {
        "model": {"gamma0": [0.05], "weight_decay": 4e-4},
        "train": {"eta0": 1.0, "steps": 8000, "log_saves": 150},
        "theory": {"samples": 2048, "replicas": 2},
        "simulate": {"widths": [256, 1024], "seeds": 2},
        "decay": {"gamma0": LYU_DECAY_GAMMA0, "weight_decay": [2e-4, 4e-4, 8e-4, 1.6e-3], "steps": 12000},
    },
}


def _check(cfg: dict) -> None:
    tr = cfg["train"]
    if not tr["log_saves"] and tr["steps"] % tr["save_every"]:
        raise ConfigError(f"train.steps ({tr['steps']}) must be a multiple of train.save_every "
                          f"({tr['save_every']})")
    if tr["eta0"] < np.finfo(np.float64).tiny:
        raise ConfigError(f"train.eta0: {tr['eta0']:g} is below the smallest normal float64 "
                          f"({np.finfo(np.float64).tiny:g}): the solvers refuse it")
    kappa = cfg["model"]["weight_decay"]     # (the schedule's refusal named neither key)
    if tr["eta0"] * kappa >= 1:
        raise ConfigError(f"model.weight_decay: train.eta0 x model.weight_decay = {tr['eta0']:g} x {kappa:g} = "
                          f"{tr['eta0'] * kappa:g} >= 1 shrinks the weights by a factor 1 - eta0 kappa <= 0 each step "
                          "(a sign flip); use a smaller model.weight_decay or train.eta0")
    dc = cfg["decay"]           # the weight-decay scan (kumar, lyu) saves on the same grid
    for key, steps in (("train.steps", tr["steps"]), ("decay.steps", dc["steps"])):
        if steps > dmft.schedule.MAX_STEPS:
            raise ConfigError(f"{key}: at most {dmft.schedule.MAX_STEPS} (the solvers' step counter), got {steps}")
    if cfg["testbed"]["name"] in ("kumar", "lyu") and any(k > 0 for k in dc["weight_decay"]) and dc["steps"]:
        if not tr["log_saves"] and dc["steps"] % tr["save_every"]:
            raise ConfigError(f"decay.steps ({dc['steps']}) must be a multiple of train.save_every "
                              f"({tr['save_every']}): the weight-decay scan saves on the same grid")
        _config.check_log_saves(cfg, "decay.steps", dc["steps"])
    th = cfg["theory"]
    if cfg["testbed"]["name"] != "kumar":
        _problem.check_counts(th)
        per = 4 * _problem.sample_unit(th.get("sampler", "stratified"), th["replicas"])
        if th["node_check"] and th["samples"] % per:      # its quarter solve splits as the full one does
            raise ConfigError(f"theory.node_check: theory.samples ({th['samples']}) must be a multiple of {per}, "
                              f"so that a quarter of it, solved again, is a multiple of {per // 4} as well "
                              "(theory.replicas" + ("" if per == 4 * th["replicas"] else " x antithetic pairs")
                              + ")")
    P = training_points(cfg)
    if P is not None:
        check_batches(cfg, P)
    sp = cfg["sparse_parity"]
    if sp["k"] > sp["n"]:
        raise ConfigError(f"sparse_parity.k: must be <= sparse_parity.n ({sp['n']}), got {sp['k']}")
    if cfg["testbed"]["name"] == "sparse_parity" and sp["activation"].lower() not in dmft.activations.names():
        raise ConfigError(f"sparse_parity.activation: unknown name {sp['activation']!r}; known: "
                          + ", ".join(dmft.activations.names()))
    name = cfg["testbed"]["name"]
    if name in _BASIS:
        # the progress measures read the first-layer weights themselves: the DMFT carries them
        # only when the inputs span no more dimensions than the points (else its field basis is
        # the data's kernel eigenbasis; refused after the claim, naming library arguments)
        d, sec = _BASIS[name], cfg[name]
        if sec[d] > sec["P"] + sec["P_test"]:
            raise ConfigError(f"{name}.{d}: the progress measures need {name}.{d} <= {name}.P + {name}.P_test "
                              f"({sec['P'] + sec['P_test']}: the DMFT then carries the first-layer weights "
                              f"themselves), got {sec[d]}")
    if cfg["modular_addition"]["train_fraction"] > 1:
        raise ConfigError("modular_addition.train_fraction: must be in (0, 1], got "
                          f"{cfg['modular_addition']['train_fraction']}")
    if cfg["threshold"]["accuracy"] > 1:
        raise ConfigError(f"threshold.accuracy: must be in (0, 1], got {cfg['threshold']['accuracy']}")
    if cfg["threshold"]["loss_fraction"] >= 1:
        raise ConfigError(f"threshold.loss_fraction: must be in (0, 1) (a fraction of the initial test "
                          f"loss; at or above it every run 'crosses' at t = 0), got "
                          f"{cfg['threshold']['loss_fraction']}")
    if cfg["testbed"]["name"] == "lyu":
        act = cfg["lyu"]["activation"]
        if act not in LYU_DEGREE:
            raise ConfigError(f"lyu.activation: the lyu testbed's law needs a homogeneous activation, one of "
                              f"{sorted(LYU_DEGREE)}; got {act!r}")
        g = cfg["decay"]["gamma0"]
        if g >= 1 and cfg["decay"]["weight_decay"] != [0.0]:
            raise ConfigError(f"decay.gamma0: the lyu law kappa t_grok ~ ln(1 / gamma0) / L is for a large "
                              f"initialization, alpha = 1 / gamma0 > 1; got gamma0 = {g:g} (ln(1 / gamma0) "
                              f"<= 0); e.g. {LYU_DECAY_GAMMA0:g}, or decay.weight_decay = [0.0] for no scan")
    for a in cfg["diagram"]["axes"]:
        if a not in AXES:
            raise ConfigError(f"diagram.axes: unknown axis {a!r}; known: {list(AXES)}")
    if len(set(cfg["simulate"]["widths"])) != len(cfg["simulate"]["widths"]):
        raise ConfigError("simulate.widths: widths must be distinct")
    distinct_labels("model.gamma0", cfg["model"]["gamma0"])
    # every grid and axis list: a repeat computed twice and labelled alike (diagram.eps = [0.1, 0.1]
    # drew two equal columns; a repeated kappa left 'need at least two distinct kappa' after computing)
    for key in ("gamma0", "eps", "P", "weight_decay", "minibatch"):
        distinct_labels(f"diagram.{key}", cfg["diagram"][key])
    distinct_labels("decay.weight_decay", cfg["decay"]["weight_decay"])
    axes = cfg["diagram"]["axes"]
    if len(set(axes)) != len(axes):
        raise ConfigError(f"diagram.axes: each axis once, got {axes}")
    ew = cfg["early_warning"]["grid"]
    if cfg["testbed"]["name"] == "kumar" and ew != "none" and ew not in cfg["diagram"]["axes"]:
        raise ConfigError(f"early_warning.grid: {ew!r} is not among diagram.axes {cfg['diagram']['axes']}; "
                          "add it there or set early_warning.grid = 'none'")
    _check_diagram_data(cfg)
    if cfg["testbed"]["name"] != "kumar" and cfg["diagram"]["axes"]:
        # diagrams are for the Kumar model; quietly irrelevant elsewhere would hide a typo
        raise ConfigError("diagram.axes: phase diagrams are drawn for the kumar testbed; set "
                          "diagram.axes = [] for other testbeds")


def _parity_parts(name: str) -> tuple:
    """The polynomial degrees of the odd and even parts of the activation `name` on a grid
    (-1: the part is zero; None: not a polynomial of degree <= 1 (odd) or <= 2 (even))."""
    act = dmft.activations.get(name)
    z = np.linspace(-3.0, 3.0, 61)
    y = np.asarray(act.fn(z, *act.params) if act.params else act.fn(z), float)
    tol = 1e-5 * max(1.0, float(np.max(np.abs(y))))

    def degree(v, candidates):
        if np.max(np.abs(v)) <= tol:
            return -1
        for d in candidates:
            if np.max(np.abs(np.polyval(np.polyfit(z, v, d), z) - v)) <= tol:
                return d
        return None
    return degree((y - y[::-1]) / 2, (1,)), degree((y + y[::-1]) / 2, (0, 2))


def parity_warning(cfg: dict) -> str | None:
    """Why the sparse_parity testbed's network cannot represent its parity at all (None where it
    can, or for another testbed): f = sum_i a_i phi(w_i . x) has the parity of phi's parts, and a
    part that is a polynomial of degree d gives multilinear terms of degree <= d only, so the
    degree-k parity is orthogonal to f (test accuracy at chance whatever the training): an odd phi
    (tanh, erf) has no even k; relu and softplus, whose odd part is linear, no odd k >= 3; square
    (even, quadratic) only k = 2; linear only k = 1. (A warning, said before any compute and in
    report.md, not a refusal: such a run still exercises the job.)"""
    if cfg["testbed"]["name"] != "sparse_parity":
        return None
    name, k = cfg["sparse_parity"]["activation"].lower(), cfg["sparse_parity"]["k"]
    odd, even = _parity_parts(name)
    part, deg = (odd, "odd") if k % 2 else (even, "even")
    if not (part == -1 or (part is not None and part < k)):
        return None
    what = (f"phi = {name} has no {deg} part" if part == -1 else
            f"the {deg} part of phi = {name} is a polynomial of degree {part}")
    return (f"sparse_parity.k = {k} with sparse_parity.activation = {name!r}: {what}, so f = sum a phi(w . x) has "
            f"no degree-{k} part and its correlation with the parity is 0 on the cube: no network, DMFT or "
            f"lazy kernel here can generalize (test accuracy at chance), and 'not reached' is no statement "
            f"about grokking; use another k or activation (tanh or erf: odd k; relu or softplus: k = 1 or "
            f"even k; square: k = 2)")


def training_points(cfg: dict) -> int | None:
    """The testbed's number of training points where its section gives it (None for
    modular_addition, whose P = train_fraction p^2 is known once its data are drawn)."""
    name = cfg["testbed"]["name"]
    return None if name == "modular_addition" else int(cfg[name]["P"])


def sgd_used(cfg: dict, P: int | None = None) -> bool:
    """Whether any run of this configuration is minibatch SGD (train.batch_size, or a gamma0 x
    minibatch diagram with a size below P): what reads train.batch_seed."""
    P = training_points(cfg) if P is None else P
    axes = cfg["diagram"]["axes"] if cfg["testbed"]["name"] == "kumar" else []
    return bool(_problem.sgd_batch(cfg["train"], P)) or ("minibatch" in axes and any(
        _problem.sgd_batch({"batch_size": b}, P) for b in cfg["diagram"]["minibatch"]))


def check_batches(cfg: dict, P: int) -> None:
    """train.batch_size and diagram.minibatch against the testbed's P training points (a batch
    above P is refused; B = P is full-batch descent), and a train.batch_seed that nothing reads
    (no run is SGD) refused as any setting that changes nothing."""
    name = cfg["testbed"]["name"]
    where = "the modular_addition pairs for training" if name == "modular_addition" else f"{name}.P"
    B = cfg["train"]["batch_size"]
    if B > P:
        raise ConfigError(f"train.batch_size: must be <= P = {P} ({where}; 0: full-batch gradient descent), "
                          f"got {B}")
    if name == "kumar" and "P" in cfg["diagram"]["axes"] and cfg["diagram"]["P"] and B > min(cfg["diagram"]["P"]):
        raise ConfigError(f"train.batch_size: must be <= every diagram.P (a column trains on that many points; "
                          f"B = P is full batch there), got {B} > {min(cfg['diagram']['P'])}")
    if name == "kumar" and "minibatch" in cfg["diagram"]["axes"]:
        big = [b for b in cfg["diagram"]["minibatch"] if b > P]
        if big:
            raise ConfigError(f"diagram.minibatch: each size must be <= kumar.P = {P} (P itself: full-batch "
                              f"gradient descent), got {big}")
    if name == "kumar":                 # the planted diffusion's SGD draws its batches from the run's points
        Bew = cfg["early_warning"]["batch_size"]
        least = min([P] + (list(cfg["diagram"]["P"]) if cfg["early_warning"]["grid"] == "P" else []))
        if Bew > least:
            raise ConfigError(f"early_warning.batch_size: the planted diffusion is that of SGD drawing B distinct "
                              f"points of the training set, so B must be <= {least} (kumar.P"
                              f"{', and every diagram.P of the early-warning grid' if least < P or cfg['early_warning']['grid'] == 'P' else ''}"
                              f"; B = P: full batch, no diffusion), got {Bew}")
    if not sgd_used(cfg, P) and cfg["train"]["batch_seed"] != _problem.SGD_FIELDS["batch_seed"].default:
        raise ConfigError(f"train.batch_seed: read only by minibatch SGD (0 < train.batch_size < P = {P}, or a "
                          "gamma0 x minibatch diagram); here every run is full-batch gradient descent, so it "
                          "would be silently ignored")


def _unused(cfg: dict) -> dict[str, str]:
    """The keys this configuration does not read: key -> why (they would change nothing)."""
    name = cfg["testbed"]["name"]
    out = {}
    for tb in TESTBEDS:
        if tb != name:
            out.update({f"{tb}.{k}": f"[{tb}] is the {tb} testbed's section" for k in SCHEMA[tb]})
    if name == "kumar":
        out.update({f"theory.{k}": "its theory is the exact closure, which draws no single-site nodes"
                    for k in SCHEMA["theory"]})
    else:
        out.update({f"early_warning.{k}": "the planted diffusion and the early-warning verdict over a diagram "
                    "are the kumar testbed's" for k in SCHEMA["early_warning"]})
    axes = cfg["diagram"]["axes"] if name == "kumar" else []
    if not axes:
        why = ("no phase diagram is drawn: diagram.axes = []" if name == "kumar"
               else "phase diagrams are drawn for the kumar testbed only")
        out.update({f"diagram.{k}": why for k in SCHEMA["diagram"] if k != "axes"})
    else:
        out.update({f"diagram.{a}": f"{a!r} is not among diagram.axes {axes}" for a in AXES if a not in axes})
        if cfg["diagram"]["overlay_width"] == 0:
            out["diagram.overlay_seeds"] = "diagram.overlay_width = 0 draws no finite-width points"
    if name not in ("kumar", "lyu"):
        out.update({f"decay.{k}": "the weight-decay scan is the kumar and lyu testbeds'" for k in SCHEMA["decay"]})
    elif not any(k > 0 for k in cfg["decay"]["weight_decay"]):
        out.update({f"decay.{k}": "decay.weight_decay has no kappa > 0: there is no scan"
                    for k in ("gamma0", "steps")})
    if name in ("modular_addition", "sparse_parity"):
        out["threshold.loss_fraction"] = "its grokking times are on accuracy, threshold.accuracy"
    else:
        out["threshold.accuracy"] = "its grokking times are on the loss, threshold.loss_fraction"
    return out


# switches whose "off" value is accepted where they are not read: it asks for nothing
_OFF = {"decay.weight_decay": lambda v: not any(x > 0 for x in v), "early_warning.grid": lambda v: v == "none",
        "theory.node_check": lambda v: not v}


def _check_unused(cfg: dict, baselines: list[dict]) -> None:
    """Refuse a setting that changes nothing (as `dmft scan` does): a key this testbed and these
    switches do not read, set to a value other than the one it has when nobody writes it (the
    testbed's defaults, the schema's, or the --full preset's: a run's own config.toml, which lists
    every key, reloads, also one written before the testbeds had defaults of their own).
    A switch set to off is accepted everywhere: decay.weight_decay without a kappa > 0 (no scan),
    early_warning.grid = 'none'."""
    name = cfg["testbed"]["name"]
    for key, why in _unused(cfg).items():
        sec, k = key.split(".", 1)
        value = cfg[sec][k]
        if any(value == b[sec][k] for b in baselines):
            continue
        if key in _OFF and _OFF[key](value):
            continue
        raise ConfigError(f"{key}: is not used by testbed.name = {name!r} here ({why}); it would change "
                          "nothing: remove it")


# (key, the key that follows it), for the testbeds other than kumar: a key the user writes without
# the one that follows sets that one to 0: a save grid replaces the testbed's log-spaced saves
# (train.log_saves = 0), a number of steps the decay scan's (decay.steps = 0: train.steps)
_FOLLOWS = (("train.save_every", "train.log_saves"), ("train.steps", "decay.steps"))


def _written(path, overrides, initial: dict) -> set:
    """The keys the user wrote: every override's, and every key of the file (or dict) but those of
    a `_FOLLOWS` pair that the file writes only at the testbed's values (`initial`), as the
    testbed's shipped file does: those stay the testbed's, so a command-line --steps moves the
    decay scan from the shipped file as from `--testbed NAME` (the lyu file's decay.steps = 12000
    kept its scan at 12000 steps under --steps 640). A file that changes one of a pair (a run's
    config.toml, a user's file) is read as written."""
    table = {} if path is None else (path if isinstance(path, dict) else _config.read_toml(path))
    in_file = _config.given_keys(table)

    def restates(key):
        sec, k = key.split(".")
        return table[sec][k] == initial[sec][k]

    for pair in _FOLLOWS:
        keys = [k for k in pair if k in in_file]
        if keys and all(restates(k) for k in keys):
            in_file -= set(keys)
    return in_file | _config.given_keys(None, overrides)


def load_config(path=None, overrides=(), full: bool = False) -> dict:
    """The grok configuration: defaults, --full preset, TOML file, overrides (validated).

    A testbed other than kumar starts from its own defaults, `TESTBED_DEFAULTS` (its shipped
    configuration's settings: the lyu testbed's decay.gamma0 is LYU_DECAY_GAMMA0, its law being
    for gamma0 < 1; a train.save_every written without train.log_saves replaces its log-spaced
    saves, a train.steps without decay.steps its decay scan's steps, `_FOLLOWS`; a file that only
    restates the testbed's values of such a pair, as its shipped file does, leaves them the
    testbed's, so `--config grok_lyu.toml --steps 640` is `--testbed lyu --steps 640`, `_written`),
    diagram.axes = [] (the diagrams are Kumar's; axes set in the file or an override are
    refused there); the --full preset is the kumar testbed's only. A setting that would
    change nothing (another testbed's section, [theory] under kumar's exact closure, diagram
    values without their axis, ...) is refused naming its key (`_unused`)."""
    initial = None
    name = _config.load(SCHEMA, path, overrides)["testbed"]["name"]
    if full and name != "kumar":
        raise ConfigError(f"--full: the preset is Kumar et al.'s sizes, the kumar testbed's; testbed {name!r} "
                          "has none (set its sizes in a file or with --set)")
    preset = FULL if full else None
    drop = []
    if name != "kumar":
        initial = _config.defaults(SCHEMA)
        initial["diagram"]["axes"] = []
        for sec, values in TESTBED_DEFAULTS[name].items():
            initial[sec].update(values)
        given = _written(path, overrides, initial)
        for lead, follower in _FOLLOWS:
            if lead in given and follower not in given:
                sec, key = follower.split(".")
                initial[sec][key] = 0
                drop.append((sec, key))           # (where the file restates it: the testbed's value)

    def edit(table):
        for sec, key in drop:
            if isinstance(table.get(sec), dict):
                table[sec].pop(key, None)

    cfg = _config.load(SCHEMA, path, overrides, preset=preset, check=_check, initial=initial, edit=edit)
    _config.check_saves(cfg, SCHEMA, path, overrides, preset, initial=initial)
    baselines = [_config.load(SCHEMA, None, (), preset=p, initial=initial)
                 for p in ((None, FULL) if name == "kumar" else (None,))]
    if initial is not None:       # the schema's own defaults: a run's config.toml written before
        baselines.append(_config.defaults(SCHEMA))      # the testbeds had their own reloads
    _check_unused(cfg, baselines)
    return cfg



@dataclasses.dataclass(frozen=True)
class Testbed:
    """The typed problem of a grok configuration."""

    name: str
    data: dmft.Dataset
    model: dmft.TwoLayer          # gamma0 = 1; each run replaces it
    schedule: dmft.Schedule
    measure: object               # the neuron measure of this testbed
    accuracy: bool                # classification: thresholds on accuracy
    beta: np.ndarray | None = None
    antithetic: bool = False      # networks start with f(theta_0) = 0 by antithetic pairs (uncentered models)
    batch_key: object = None      # minibatch SGD: the one batch sequence of every solve and network (else None)


def task_of(cfg: dict) -> dict:
    """The [task] section (experiments.problem) that a testbed stands for."""
    name, seed = cfg["testbed"]["name"], cfg["testbed"]["seed"]
    if name in ("kumar", "lyu"):
        k = cfg[name]
        return {"name": "kumar_quadratic", "D": k["D"], "P": k["P"], "P_test": k["P_test"], "seed": seed}
    if name == "modular_addition":
        m = cfg["modular_addition"]
        return {"name": "modular_addition", "p": m["p"], "train_fraction": m["train_fraction"], "seed": seed}
    s = cfg["sparse_parity"]
    return {"name": "sparse_parity", "n": s["n"], "k": s["k"], "P": s["P"], "P_test": s["P_test"],
            "seed": seed}


def schedule_of(cfg: dict, weight_decay=None, steps=None, P: int | None = None) -> dmft.Schedule:
    """The training protocol of the job (log-spaced saves with train.log_saves > 0; with the
    testbed's P, minibatch SGD of train.batch_size when 0 < batch_size < P)."""
    tr = cfg["train"]
    kappa = cfg["model"]["weight_decay"] if weight_decay is None else weight_decay
    steps = tr["steps"] if not steps else steps
    batch = _problem.sgd_batch(tr, P) or None
    if tr["log_saves"]:
        return dmft.Schedule(eta0=tr["eta0"], steps=steps, save_at="log", n_saves=tr["log_saves"],
                             weight_decay=kappa, batch_size=batch)
    return dmft.Schedule(eta0=tr["eta0"], steps=steps, save_every=tr["save_every"], weight_decay=kappa,
                         batch_size=batch)


def minibatch_of(cfg: dict, B: int, P: int):
    """(schedule's batch_size, batch key) of the minibatch size B on P points: (None, None) for
    full-batch descent (B >= P), else B and the one sequence of train.batch_seed."""
    train = {"batch_size": int(B), "batch_seed": cfg["train"]["batch_seed"]}
    return (_problem.sgd_batch(train, P) or None), _problem.batch_key(train, P)


def build(cfg: dict) -> Testbed:
    """The testbed's data, model and schedule; raises ValueError on bad sizes, and ConfigError
    for network ensembles that would not fit in simulate.max_memory_gb (before any compute)."""
    tb = _build(cfg)
    sim = cfg["simulate"]
    limit = sim.get("max_memory_gb", 6.0)
    K = dmft.checks.measure_size(tb.measure, tb.data.D)     # the networks record the testbed's measure
    for w in sim["widths"]:
        need = memory_estimate(tb.data, w, sim["seeds"], tb.schedule.save_steps.size, False, K)
        if need > limit * 2 ** 30:
            raise ConfigError(f"simulate.widths: width {w} x {sim['seeds']} seeds needs about "
                              f"{need / 2 ** 30:.1f} GiB (> simulate.max_memory_gb = {limit:g}); use smaller "
                              "widths or fewer seeds, or raise simulate.max_memory_gb")
    return tb


def _data(cfg: dict) -> dmft.Dataset:
    """The testbed's data; a generator's refusal as a ConfigError naming the keys of the
    testbed's own section (kumar.P, kumar.P_test, kumar.D), not of the [task] it stands for."""
    name = cfg["testbed"]["name"]
    try:
        return _problem.build_data(task_of(cfg))
    except ConfigError as err:
        cause = err.__cause__
        if isinstance(cause, dmft.InputError):
            raise _problem.config_error(cause, _DATA_KEYS[name], name) from cause
        raise


def _check_diagram_data(cfg: dict) -> None:
    """The gamma0 x P diagram draws the kumar data at every diagram.P: its largest is refused
    here, before any compute, as the generator would refuse it mid-run (and, when its runs give
    the early-warning verdict, the smallest that leaves the DMFT without the weights' basis)."""
    k = cfg["kumar"]
    if cfg["testbed"]["name"] != "kumar" or "P" not in cfg["diagram"]["axes"] or not cfg["diagram"]["P"]:
        return
    P = max(cfg["diagram"]["P"])
    need = 8.0 * (P + k["P_test"]) * k["D"]
    if need > dmft.tasks.MAX_DATA_GB * 2 ** 30:
        raise ConfigError(f"diagram.P, kumar.P_test, kumar.D: the diagram's data at P = {P} needs "
                          f"{need / 2 ** 30:.0f} GiB (> {dmft.tasks.MAX_DATA_GB:g} GiB); use fewer points or "
                          "dimensions")
    if cfg["early_warning"]["grid"] == "P" and k["D"] > min(cfg["diagram"]["P"]) + k["P_test"]:
        raise ConfigError(f"diagram.P: the progress measures need kumar.D <= P + kumar.P_test at every "
                          f"diagram.P; kumar.D = {k['D']} > {min(cfg['diagram']['P'])} + {k['P_test']}")


def _build(cfg: dict) -> Testbed:
    name = cfg["testbed"]["name"]
    data = _data(cfg)
    beta, antithetic = None, False
    if name == "kumar":
        model = dmft.TwoLayer(dmft.activations.quadratic(cfg["kumar"]["eps"]), gamma0=1.0,
                              readout="fixed")
        beta = np.asarray(data.meta["beta"])
        measure, accuracy = gk.direction_alignment(beta), False
    elif name == "lyu":
        model = dmft.TwoLayer(cfg["lyu"]["activation"], gamma0=1.0, readout="trained", centered=False)
        beta = np.asarray(data.meta["beta"])
        measure, accuracy, antithetic = gk.direction_alignment(beta), False, True
    elif name == "modular_addition":
        if data.P_test == 0:
            raise ConfigError("modular_addition.train_fraction = 1 leaves no test pairs")
        model = dmft.TwoLayer(dmft.activations.square(), gamma0=1.0)
        measure, accuracy = gk.fourier_ipr(cfg["modular_addition"]["p"]), True
    else:
        model = dmft.TwoLayer(cfg["sparse_parity"]["activation"], gamma0=1.0)
        measure, accuracy = gk.max_change(), True
    check_batches(cfg, data.P)         # (modular_addition's P is known now)
    return Testbed(name, data, model, schedule_of(cfg, P=data.P), measure, accuracy, beta, antithetic,
                   _problem.batch_key(cfg["train"], data.P))
