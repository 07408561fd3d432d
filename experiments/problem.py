"""One configuration -> one problem: data, model, schedule and solver options.

Every job (validate, grok, scan, dln) describes its problem with the same sections,
`[task]`, `[model]`, `[train]`, `[theory]`, `[simulate]`, and turns them into typed
objects here, once, at the edge: a `dmft.Dataset`, a `dmft.TwoLayer`, a
`dmft.Schedule`, the options of `dmft.solve` and of `networks.train`. Nothing below
this module sees a configuration dict.

Minibatch SGD (`SGD_FIELDS`, train.batch_size and train.batch_seed, read by the solve,
simulate and validate jobs) gives the schedule its batch size and passes ONE batch key,
`dmft.schedule.default_batch_key(jax.random.key(train.batch_seed))`, to every `dmft.solve` and
every `networks.train` of the run (batch_key in solve_options and train_options), so that
the DMFT and the networks see the same batches.

Example:
    >>> import jax; jax.config.update("jax_enable_x64", True)
    >>> from experiments import problem
    >>> from experiments.config import defaults
    >>> cfg = defaults(problem.SECTIONS)
    >>> cfg["task"].update(D=4, P=8, P_test=4)
    >>> p = problem.build(cfg)
    >>> p.data.P, p.model.activation.name, p.schedule.steps
    (8, 'relu', 600)
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax

import dmft
from dmft.errors import ConfigError
from dmft.io import sha256
from dmft.schedule import check_decay, default_batch_key

from .config import SEED_MAX, Field

__all__ = ["SECTIONS", "TASKS", "Problem", "build", "build_data", "check_data_size", "build_model", "build_schedule",
           "solve_options", "train_options", "check_counts", "check_sections", "check_task_size", "check_unread",
           "TASK_FIELDS", "SGD_FIELDS", "sgd_batch", "batch_key", "check_batches", "unread_task_keys"]

# the tasks a [task] section names (the grok testbeds add modular_addition and sparse_parity)
TASKS = ("single_index", "kumar_quadratic", "teacher_network", "npz")

# the task fields each generator reads (an axis of a scan over any other changes nothing)
TASK_FIELDS = {"single_index": {"D", "P", "P_test", "degree", "noise", "seed"},
               "kumar_quadratic": {"D", "P", "P_test", "seed"},
               "teacher_network": {"D", "P", "P_test", "teacher_width", "teacher_activation", "seed"},
               "modular_addition": {"p", "train_fraction", "seed"},
               "sparse_parity": {"n", "k", "P", "P_test", "seed"},
               "npz": set()}

SECTIONS: dict[str, dict[str, Field]] = {
    "task": {
        "name": Field("str", "single_index", "data generator (npz: your own arrays, see path)",
                      choices=TASKS),
        "D": Field("int", 32, "input dimension", 1),
        "P": Field("int", 256, "training points", 1),
        "P_test": Field("int", 1000, "test points", 1),
        "degree": Field("int", 2, "Hermite degree of the single-index target", 1),
        "noise": Field("float", 0.0, "label noise on training targets", 0.0),
        "teacher_width": Field("int", 4, "units of the teacher network", 1),
        "teacher_activation": Field("str", "relu", "activation of the teacher network"),
        "path": Field("str", "", "an .npz with x_train, y_train and optionally x_test, y_test "
                      "(task.name = 'npz'; write one with dmft.Dataset(...).save(path)); relative to the "
                      "TOML file that names it (with --set: to the current directory), stored absolute",
                      path=True),
        "seed": Field("int", 0, "data seed", 0, maximum=SEED_MAX),
    },
    "model": {
        "activation": Field("str", "relu", "activation name (or 'quadratic' with eps)"),
        "eps": Field("float", 0.0, "eps of the quadratic activation h + eps/2 h^2"),
        "readout": Field("str", "trained", "readouts", choices=("trained", "fixed")),
        "centered": Field("bool", True, "subtract the output at initialization"),
    },
    "train": {
        "eta0": Field("float", 0.5, "gradient-descent step in DMFT time units", 0.0, True),
        "steps": Field("int", 600, "number of steps", 1, maximum=2 ** 31 - 1),
        "save_every": Field("int", 20, "record every this many steps", 1),
        "weight_decay": Field("float", 0.0, "weight decay kappa per unit time", 0.0),
    },
    "theory": {
        "method": Field("str", "auto", "DMFT solver",
                        choices=("auto", "forward", "iterate", "closure", "lazy")),
        "samples": Field("int", 4096, "single-site nodes (sampled methods)", 2),
        "replicas": Field("int", 4, "independent replicas for the error estimate", 1),
        "sampler": Field("str", "stratified", "node sampler",
                         choices=("stratified", "orthogonal", "antithetic", "mc", "sobol")),
        "seed": Field("int", 0, "seed of the single-site nodes", 0, maximum=SEED_MAX),
        "precision": Field("str", "full", ("per-step products in float64 (full) or float32 with a float64 state "
                            "(mixed: closure and forward, gamma0 >= 0.05)"),
                           choices=("full", "mixed")),
        "max_memory_gb": Field("float", 4.0, "memory limit of the DMFT (GiB): a solve runs its replicas a few "
                               "at a time above it; a scan's batch, which cannot, is refused", 0.0, True),
    },
    "simulate": {
        "widths": Field("ints", [64, 128, 256, 512, 1024], "network widths", 1),
        "seeds": Field("int", 8, "networks per width", 1),
        "seed": Field("int", 1, "seed of the network initializations", 0, maximum=SEED_MAX),
        "antithetic": Field("bool", False, "antithetic initialization (trained readouts)"),
        "max_memory_gb": Field("float", 6.0, "refuse ensembles needing more memory", 0.0, True),
    },
}


# minibatch SGD, in the [train] of the solve, simulate and validate jobs (`experiments.jobs.SCHEMA`) and
# of the two-layer scan (`experiments.scan.schema`); not in SECTIONS, whose [train] grok copies too
SGD_FIELDS: dict[str, Field] = {
    "batch_size": Field("int", 0, "minibatch size B: stochastic gradient descent on B distinct training points "
                        "per step (1 <= B <= P); 0, or B = P, is full-batch gradient descent", 0),
    "batch_seed": Field("int", 0, "seed of the minibatch sequence: one sequence for the DMFT and every "
                        "network (minibatch SGD only)", 0, maximum=SEED_MAX),
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """The typed problem of a configuration."""

    data: dmft.Dataset
    model: dmft.TwoLayer            # gamma0 = the [model] gamma0 when the schema has one, else 1
    schedule: dmft.Schedule
    solve_options: dict             # keyword options of dmft.solve (no schedule; batch_key under SGD)
    theory_key: object
    train_options: dict             # keyword options of networks.train (no schedule, width, seeds;
                                    # batch_key under SGD: the same key as the solves')
    network_key: object


def data_digest(cfg: dict) -> dict:
    """{"task.path sha256": ...} for a configuration that reads a data file (task.name = npz),
    else {}: part of what makes a run or a scan store the same one. Hashed once per file
    version (path, inode, size, mtime and ctime: a rewrite that keeps the size and the mtime, as
    `cp -p`, `rsync -t` or `os.utime` leave it, was read from the cache as the old version's
    digest), however often a job asks."""
    task = cfg.get("task", {}) if isinstance(cfg, dict) else {}
    if task.get("name") != "npz" or not task.get("path"):
        return {}
    path = task["path"]
    if not os.path.isfile(path):
        return {"task.path sha256": None}
    st = os.stat(path)
    return {"task.path sha256": _sha256(os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns,
                                        st.st_ctime_ns)}


@functools.lru_cache(maxsize=16)
def _sha256(path: str, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str:
    return sha256(path)


# the library's argument names as the configuration spells them: a generator's InputError
# ("activation: unknown name ...") then names the key the user set ("task.teacher_activation")
_TASK_KEYS = {"activation": "task.teacher_activation", "width": "task.teacher_width", "noise": "task.noise",
              "degree": "task.degree", "D": "task.D", "P_test": "task.P_test", "P": "task.P", "p": "task.p",
              "train_fraction": "task.train_fraction", "n": "task.n", "k": "task.k", "data file": "task.path",
              "path": "task.path", "seed": "task.seed", "key": "task.seed"}
_MODEL_KEYS = {"activation": "model.activation", "eps": "model.eps", "gamma0": "model.gamma0",
               "readout": "model.readout", "centered": "model.centered"}
# the solve and ensemble checks of a sweep (`jobs.preflight`): their arguments' keys
PLAN_KEYS = {"gamma0": "sweep.gamma0", "eta0": "train.eta0", "steps": "train.steps", "save_every": "train.save_every",
             "weight_decay": "train.weight_decay", "samples": "theory.samples", "replicas": "theory.replicas",
             "method": "theory.method", "sampler": "theory.sampler", "precision": "theory.precision",
             "width": "simulate.widths", "seeds": "simulate.seeds", "antithetic": "simulate.antithetic",
             "batch_size": "train.batch_size", "readout": "model.readout"}


def config_error(err: Exception, keys: dict, section: str) -> ConfigError:
    """A library InputError as a ConfigError naming the configuration key it came from."""
    text = str(err)
    for arg in sorted(keys, key=len, reverse=True):       # (P_test before P)
        if text.startswith(arg) and text[len(arg):len(arg) + 1] in (":", " ", "="):
            return ConfigError(keys[arg] + text[len(arg):])
    return ConfigError(f"[{section}]: {text}")


def build_data(task: dict) -> dmft.Dataset:
    """The dataset a [task] section describes; a generator's refusal as a ConfigError naming
    the task.* key."""
    try:
        return _build_data(task)
    except ConfigError:
        raise
    except dmft.InputError as err:
        raise config_error(err, _TASK_KEYS, "task") from err


def _build_data(task: dict) -> dmft.Dataset:
    name = task["name"]
    key = jax.random.key(task.get("seed", 0))
    if name == "single_index":
        return dmft.tasks.single_index(D=task["D"], P=task["P"], P_test=task["P_test"],
                                       degree=task["degree"], key=key, noise=task["noise"])
    if name == "kumar_quadratic":
        return dmft.tasks.kumar_quadratic(D=task["D"], P=task["P"], P_test=task["P_test"], key=key)
    if name == "teacher_network":
        act = task["teacher_activation"]
        if isinstance(act, str) and act.lower() not in dmft.activations.names():
            raise ConfigError(f"task.teacher_activation: unknown name {act!r}; known: "
                              f"{', '.join(dmft.activations.names())}")
        return dmft.tasks.teacher_network(D=task["D"], P=task["P"], P_test=task["P_test"],
                                          width=task["teacher_width"],
                                          activation=task["teacher_activation"], key=key)
    if name == "modular_addition":
        return dmft.tasks.modular_addition(task["p"], task["train_fraction"], key=key)
    if name == "sparse_parity":
        return dmft.tasks.sparse_parity(task["n"], task["k"], task["P"], task["P_test"], key=key)
    if name == "npz":
        try:
            return dmft.tasks.load_npz(task["path"])
        except dmft.InputError as err:
            # (every refusal of the file is task.path's: one about its arrays read "[task]: x_train: ...")
            raise ConfigError(f"task.path: {err}") from err
    raise ConfigError(f"task.name: unknown task {name!r}; known: {', '.join(TASK_FIELDS)}")


def build_model(model: dict, gamma0: float = 1.0) -> dmft.TwoLayer:
    """The two-layer model a [model] section describes; gamma0 from the section when it holds
    one number (a scan's base value), else `gamma0` (sweeps replace it per point). A refusal
    is a ConfigError naming the model.* key."""
    try:
        return _build_model(model, gamma0)
    except ConfigError:
        raise
    except dmft.InputError as err:
        raise config_error(err, _MODEL_KEYS, "model") from err


def _build_model(model: dict, gamma0: float) -> dmft.TwoLayer:
    name = model["activation"]
    if isinstance(name, str) and name != "quadratic" and name.lower() not in dmft.activations.names():
        # (the library's refusal also offers a callable and quadratic(eps), which a file cannot hold)
        raise ConfigError(f"model.activation: unknown name {name!r}; known: "
                          f"{', '.join(sorted((*dmft.activations.names(), 'quadratic')))} "
                          "(quadratic: h + eps h^2 / 2 with model.eps)")
    act = dmft.activations.quadratic(model["eps"]) if model["activation"] == "quadratic" \
        else model["activation"]
    g = model.get("gamma0")
    if isinstance(g, bool) or not isinstance(g, (int, float)):
        g = gamma0
    return dmft.TwoLayer(act, gamma0=g, readout=model.get("readout", "trained"),
                         centered=model.get("centered", True))


def sgd_batch(train: dict, P: int | None = None) -> int:
    """The minibatch size B of a [train] section's SGD, or 0 for full-batch gradient descent
    (train.batch_size 0, absent, or B >= P: every point at every step, as the library counts it)."""
    B = train.get("batch_size", 0)
    return 0 if not B or (P is not None and B >= P) else int(B)


def batch_key(train: dict, P: int | None = None):
    """The one key of the minibatch sequence under SGD (None under full batch): the sequence
    `dmft.solve` draws by default from jax.random.key(train.batch_seed), fold_in(key, 2^31 - 1),
    which shares no random bits with nodes drawn from a key equal to it (fold_in(key, replica))."""
    if not sgd_batch(train, P):
        return None
    return default_batch_key(jax.random.key(train.get("batch_seed", 0)))


def build_schedule(train: dict, P: int | None = None) -> dmft.Schedule:
    """The training protocol a [train] section describes (with P, the number of training points:
    a batch size of P or more is full-batch gradient descent, batch_size None)."""
    return dmft.Schedule(eta0=train["eta0"], steps=train["steps"], save_every=train["save_every"],
                         weight_decay=train.get("weight_decay", 0.0),
                         dynamics=train.get("dynamics", "gd"), batch_size=sgd_batch(train, P) or None)


def solve_options(theory: dict) -> dict:
    """Keyword options of `dmft.solve` from a [theory] section."""
    return dict(method=theory["method"], samples=theory["samples"], replicas=theory["replicas"],
                sampler=theory["sampler"], precision=theory.get("precision", "full"),
                max_memory_gb=theory.get("max_memory_gb", 4.0))


def train_options(simulate: dict) -> dict:
    """Keyword options of `networks.train` from a [simulate] section."""
    return dict(antithetic=simulate.get("antithetic", False),
                max_memory_gb=simulate.get("max_memory_gb", 4.0))


def build(cfg: dict) -> Problem:
    """The problem of a configuration with the shared sections."""
    data = build_data(cfg["task"])
    key = batch_key(cfg["train"], data.P)
    batches = {} if key is None else {"batch_key": key}      # one key: theory and networks see the same batches
    return Problem(data=data, model=build_model(cfg["model"]), schedule=build_schedule(cfg["train"], data.P),
                   solve_options={**solve_options(cfg["theory"]), **batches},
                   theory_key=jax.random.key(cfg["theory"]["seed"]),
                   train_options={**train_options(cfg["simulate"]), **batches},
                   network_key=jax.random.key(cfg["simulate"]["seed"]))


def check_data_size(cfg: dict, data: dmft.Dataset) -> None:
    """A data file's sizes against theory.max_memory_gb, as `check_task_size` checks a generator's
    task.P, task.P_test and task.D before it draws them: ConfigError naming task.path where every
    solve's setup (its kernels and inputs) alone passes the limit. (A file of 30000 points was
    refused by the first solve's plan as "[sweep at gamma0 = 0.05]: this solve needs about 7.57e+03
    GiB (> max_memory_gb=4.0); save less often (save_every), pass kernels=False, use fewer samples or
    more replicas": a gamma0 it does not depend on, and remedies that cannot bring it under.)"""
    th = cfg.get("theory")
    if th is None or "max_memory_gb" not in th:
        return
    least = dmft.plan.setup_bytes(data.P, data.P_test, data.D, data.C)
    if least > th["max_memory_gb"] * 2 ** 30:
        raise ConfigError(f"task.path: a solve on its {data.P} training and {data.P_test} test points in D = {data.D} "
                          f"holds at least {least / 2 ** 30:.3g} GiB (its kernels and inputs), > theory.max_memory_gb "
                          f"= {th['max_memory_gb']:g}: use a subset of the points, or raise theory.max_memory_gb")


# the tasks whose sizes are not task.P, task.P_test and task.D (a file's; the grok testbeds' own)
_NOT_SIZED = ("npz", "modular_addition", "sparse_parity")


def check_task_size(cfg: dict) -> None:
    """A generated task's sizes against theory.max_memory_gb, for a job that solves (`jobs.preflight`:
    solve and validate; simulate reads no [theory]): ConfigError naming task.P, task.P_test and task.D
    where every solve's setup (its kernels and inputs) alone passes the limit, from the sizes alone,
    before the data are generated (P_test = 1e8 made 16 GB of data for 55 s before the solve's plan
    refused it). A data file's sizes: `check_data_size`, once it is read."""
    task, th = cfg["task"], cfg.get("theory")
    if task["name"] in _NOT_SIZED or th is None or "max_memory_gb" not in th:
        return
    P, D = task["P"], task["D"]
    least = dmft.plan.setup_bytes(P, task["P_test"], D)
    if least > th["max_memory_gb"] * 2 ** 30:
        raise ConfigError(f"task.P, task.P_test, task.D: a solve on {P} training and {task['P_test']} test "
                          f"points in D = {D} holds at least {least / 2 ** 30:.3g} GiB (its kernels and "
                          f"inputs), > theory.max_memory_gb = {th['max_memory_gb']:g}")


def _task_reads(name: str) -> set:
    """The [task] fields task `name` reads: its generator's, its name, and an npz task's path."""
    return TASK_FIELDS.get(name, set()) | {"name"} | ({"path"} if name == "npz" else set())


def check_unread(cfg: dict) -> None:
    """Refuse a setting nothing reads (it would be silently lost): model.eps off the quadratic
    activation, a task field the task does not read (set away from its default)."""
    task, model = cfg["task"], cfg["model"]
    if model["activation"] != "quadratic" and model["eps"] != SECTIONS["model"]["eps"].default:
        raise ConfigError(f"model.eps: used only by activation = 'quadratic', not {model['activation']!r}")
    used = _task_reads(task["name"])
    for key, value in task.items():
        field = SECTIONS["task"].get(key)
        if key not in used and field is not None and value != field.default:
            raise ConfigError(f"task.{key}: not used by task.name = {task['name']!r} (it reads "
                              f"{', '.join(sorted(used - {'name'})) or 'only its path'})")


def unread_task_keys(cfg: dict) -> dict:
    """"task.KEY" -> why, for the [task] fields the named task does not read, left at their
    defaults (`check_unread` keeps them there, but for a scan over task.name): config.toml names
    them in a comment, so an npz run's file does not list the built-in generator's D = 32,
    P = 256 beside the user's own data."""
    task = cfg.get("task")
    if not isinstance(task, dict) or task.get("name") not in TASK_FIELDS:
        return {}
    used = _task_reads(task["name"])
    why = (f"not read by task.name = {task['name']!r}, left at their defaults"
           + (" (the data's own sizes are in report.md)" if task["name"] == "npz" else ""))
    # (only at their defaults: a scan over task.name may set a field its base task does not read)
    return {f"task.{k}": why for k, v in task.items()
            if k not in used and k in SECTIONS["task"] and v == SECTIONS["task"][k].default}


def sample_unit(sampler: str, replicas, node_split: int = 1):
    """What theory.samples must be a multiple of, as `dmft.sampling.check_counts` asks: 2 x replicas
    (every replica the same number of antithetic pairs), replicas for sampler = 'mc' (an array of
    replicas gives an array); with each replica's nodes split in node_split parts of whole pairs
    (the validate, solve and scan node checks: 4), node_split times 2 x replicas, mc too. (The grok
    job's independent node-check solves at a quarter of the nodes need 4x the unit.)"""
    return replicas * (1 if sampler == "mc" and node_split == 1 else 2) * node_split


def check_counts(th: dict) -> None:
    """theory.samples against theory.replicas, as `dmft.sampling.check_counts` asks: a multiple of
    2 x replicas (antithetic pairs), of replicas for sampler = 'mc'."""
    sampler = th.get("sampler", "stratified")
    per = sample_unit(sampler, th["replicas"])
    if th["samples"] % per:
        # the replicas that would fit it (the count changed under a config written before: 4 -> 8)
        fits = [r for r in range(int(th["replicas"]) - 1, 0, -1) if th["samples"] % sample_unit(sampler, r) == 0]
        hint = (f"; theory.replicas is {th['replicas']} (written, or the default): set it to {fits[0]}, which "
                f"fits, or theory.samples to a multiple of {per}" if fits else "")
        raise ConfigError(f"theory.samples ({th['samples']}) must be a multiple of "
                          + (f"theory.replicas ({per}) for theory.sampler = 'mc'" if sampler == "mc"
                             else f"2 x theory.replicas ({per}): antithetic pairs") + hint)


def check_task_path(task: dict) -> None:
    """ConfigError where task.name = 'npz' names no file (jobs and scans alike)."""
    if task["name"] == "npz" and not task["path"]:
        raise ConfigError("task.path: must be given when task.name = 'npz' (the .npz file that holds the data)")


def check_sections(cfg: dict) -> None:
    """Cross-field checks of the shared sections (ConfigError naming the keys)."""
    tr, task, model = cfg["train"], cfg["task"], cfg["model"]
    try:                                # (the schedule's own check, named by its keys here)
        check_decay(tr["eta0"], tr["weight_decay"], tr.get("dynamics", "gd"))
    except dmft.InputError as err:
        raise ConfigError(f"train.weight_decay, train.eta0: {err}") from None
    if tr["steps"] % tr["save_every"]:
        raise ConfigError(f"train.steps ({tr['steps']}) must be a multiple of train.save_every "
                          f"({tr['save_every']})")
    th = cfg.get("theory")
    if th is not None:
        check_counts(th)
    check_task_path(task)
    if model["activation"] == "quadratic" and model["eps"] == 0.0:
        raise ConfigError("model.eps: set eps for the quadratic activation (h + eps/2 h^2)")
    check_unread(cfg)
    if task["name"] not in _NOT_SIZED:
        need = 8.0 * (task["P"] + task["P_test"]) * task["D"]
        if need > 8 * 2 ** 30:
            raise ConfigError(f"task.P, task.P_test, task.D: the inputs alone need {need / 2 ** 30:.0f} GiB")
    if th is not None and th["method"] == "lazy" and tr["weight_decay"] > 0:
        raise ConfigError("theory.method = 'lazy' has no closed form with train.weight_decay > 0")


def check_batches(cfg: dict, P: int | None = None) -> None:
    """train.batch_size and train.batch_seed (`SGD_FIELDS`) against the P training points:
    task.P at load (a task.path's P is known once the file is read: `jobs.preflight` calls this
    again with the data's P). A batch larger than P is refused; a batch_seed set away from its
    default under full-batch descent (batch_size 0 or P), which reads no batches, is refused as
    any setting nothing reads; theory.method = 'iterate' solves full-batch descent only."""
    tr, task = cfg["train"], cfg["task"]
    if "batch_size" not in tr:
        return
    npz = task["name"] == "npz"
    if P is None:
        if npz:
            return
        P = task["P"]
    B = tr["batch_size"]
    points = f"P = {P}, the training points of task.path" if npz else f"task.P = {P}"
    if B > P:
        raise ConfigError(f"train.batch_size: must be <= {points} (0: full-batch gradient descent), got {B}")
    sgd = sgd_batch(tr, P)
    if not sgd and tr.get("batch_seed", 0) != SGD_FIELDS["batch_seed"].default:
        raise ConfigError(f"train.batch_seed: read only by minibatch SGD (0 < train.batch_size < P = {P}); with "
                          f"train.batch_size = {B} (full-batch gradient descent) it would be silently ignored")
    th = cfg.get("theory")
    if sgd and th is not None and th["method"] == "iterate":
        raise ConfigError(f"train.batch_size: minibatch SGD (train.batch_size = {B} < {P}) is solved by "
                          "theory.method = 'auto', 'forward', 'closure' or 'lazy' (the DMFT conditioned on the "
                          "batch sequence), not 'iterate'")
