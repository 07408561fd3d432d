"""Configuration of the `dmft dln` job: a linear teacher, a deep linear network, SGD, theory.

    [teacher]   d_in, d_out, singular_values (or spectrum = "power"/"linear" with rank, top,
                exponent), P (0: online data), label_noise (a list: one study per value; study i's
                networks and SDE paths draw from fold_in of train.seed's and theory.seed's keys
                with i, so the list's order is part of the run), seed
    [model]     depth, width, init ("aligned" or "random"), init_scale (0: from gamma),
                gamma (init_scale^2 = width^-gamma)
    [train]     eta0, steps, save_every (or log_saves > 0), batch_size, weight_decay, seeds, seed,
                probe, dtype
    [theory]    paths (per-mode SDE), seed, cross_modes (the cross-mode drift; where not written,
                on without train.weight_decay and off with it), max_memory_gb, stationary_after
                (fraction of the run; a save must come after it when a stationary law is compared)
    [staircase] seeds, gamma, steps: a random small-init ensemble for the saddle-to-saddle
                staircase, at the smallest label noise (seeds = 0: none)
    [check]     tolerances of the verdicts

The job's defaults are scripts/configs/dln.toml's (`JOB_DEFAULTS` over `SCHEMA`'s, which
deep-linear scans keep: eta0 = 0.01, 6000 steps, cross_modes off).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import numpy as np

import dmft
from dmft import deep_linear as dl
from dmft.errors import ConfigError

from .. import config as _config
from ..config import SEED_MAX, Field, distinct_labels

__all__ = ["SCHEMA", "JOB_DEFAULTS", "FULL", "job_defaults", "load_config", "Study", "build", "check_unread"]

SDE_MEMORY_GB = 8.0    # default theory.max_memory_gb (the --full preset needs about 4.4 GiB)


def sde_memory_limit(cfg: dict) -> float:
    """theory.max_memory_gb (configurations stored before the field existed: the default)."""
    return cfg["theory"].get("max_memory_gb", SDE_MEMORY_GB)


SCHEMA: dict[str, dict[str, Field]] = {
    "teacher": {
        "d_in": Field("int", 4, "input dimension", 1),
        "d_out": Field("int", 4, "output dimension", 1),
        "spectrum": Field("str", "list", "singular values: an explicit list, or generated",
                          choices=("list", "power", "linear")),
        "singular_values": Field("floats", [3.0, 2.0, 1.0, 0.5], "mode strengths (spectrum = list)", 0.0, True),
        "rank": Field("int", 4, "number of modes (generated spectrum)", 1),
        "top": Field("float", 3.0, "largest singular value (generated spectrum)", 0.0, True),
        "exponent": Field("float", 1.0, "s_i = top i^-exponent (spectrum = power)", 0.0, True),
        "P": Field("int", 20, "fixed whitened training points (0: online data)", 0),
        "label_noise": Field("floats", [0.0, 1.0], "label noise sigma; one study per value", 0.0),
        "seed": Field("int", 0, "seed of the teacher and the data", 0, maximum=SEED_MAX),
    },
    "model": {
        "depth": Field("int", 4, "number of weight matrices L", 1),
        "width": Field("int", 10, "hidden width", 1),
        "init": Field("str", "aligned", "aligned and balanced (the SDE's reduction) or random",
                      choices=("aligned", "random")),
        "init_scale": Field("float", 0.3, "scale of the initial weights (0: from gamma)", 0.0),
        "gamma": Field("float", 1.5, "init_scale^2 = width^-gamma when init_scale = 0"),
    },
    "train": {
        "eta0": Field("float", 0.01, "learning rate eta (t = steps x eta)", 0.0, True),
        "steps": Field("int", 6000, "SGD steps", 1, maximum=dmft.schedule.MAX_STEPS),
        "save_every": Field("int", 50, "record every this many steps", 1),
        "log_saves": Field("int", 0, "if > 0: this many log-spaced saves instead of save_every (which "
                           "is then not to be given)", 0),
        "batch_size": Field("int", 1, "minibatch size B", 1),
        "weight_decay": Field("float", 0.0, "weight decay kappa per unit time, every layer (theory and "
                              "networks; the staircase ensemble trains without)", 0.0),
        "seeds": Field("int", 1024, "independent networks", 1),
        "seed": Field("int", 1, "seed of the networks (initialization and batches)", 0, maximum=SEED_MAX),
        "probe": Field("int", 0, "online diffusion: 0 = the population variance in closed form (exact); "
                       "n >= 2: a sample variance over n fresh samples per record instead", 0),
        "dtype": Field("str", "float64", "precision of the networks", choices=("float32", "float64")),
    },
    "theory": {
        "paths": Field("int", 4096, "per-mode SDE paths", 1),
        "max_memory_gb": Field("float", SDE_MEMORY_GB, "refuse SDE paths and saves needing more memory (checked before "
                               "any compute; the --full preset needs about 4.4 GiB)", 0.0, True),
        "seed": Field("int", 2, "seed of the SDE paths", 0, maximum=SEED_MAX),
        "cross_modes": Field("bool", False, "add to the SDE and the stationary laws the O(eta / B) drift that the "
                             "noise off the mode directions feeds back into each mode (dl.mode_sde(cross_modes=True); "
                             "docs/derivations.md, section 6); without weight decay (the dln job's default: on, "
                             "unless train.weight_decay > 0; a deep-linear scan's: off)"),
        "stationary_after": Field("float", 0.5, "stationary histograms after this fraction of the run",
                                  0.0, True, maximum=1.0),
    },
    "staircase": {
        "seeds": Field("int", 64, "random small-init networks for the staircase (0: none)", 0),
        "gamma": Field("float", 2.5, "their init_scale^2 = width^-gamma", 0.0, True),
        "steps": Field("int", 20000, "their steps (log-spaced saves)", 1, maximum=dmft.schedule.MAX_STEPS),
        "eta0": Field("float", 0.02, "their learning rate", 0.0, True),
    },
    "check": {
        "z_max": Field("float", 5.0, "max |z| of a mode's mean, networks vs SDE", 0.0, True),
        "effect": Field("float", 0.25, "or: max |mean difference| / SDE spread", 0.0, True),
        "target_rel": Field("float", 0.01, "or: max |mean difference| / the mode's target (an ensemble "
                            "collapsed at its target, or shrunk below its start by decay, has no spread; not "
                            "on a plateau); spreads are compared only above it x the target", 0.0, True),
        "ks_max": Field("float", 0.1, "or: max KS distance of a stationary law", 0.0, True),
        "spread_low": Field("float", 0.75, "min ratio of spreads, networks / SDE (widened by 3 sampling "
                            "errors of the ratio, for the seeds' and paths' numbers)", 0.0, True),
        "spread_high": Field("float", 1.33, "max ratio of spreads", 0.0, True),
        "diffusion_low": Field("float", 0.7, "min pooled ratio of measured / predicted diffusion", 0.0, True),
        "diffusion_high": Field("float", 1.4, "max pooled ratio", 0.0, True),
        "plateau_rel": Field("float", 0.15, "max relative error of a plateau loss", 0.0, True),
    },
}

# The dln job's defaults where they differ from the schema's (which deep-linear scans keep): those of
# scripts/configs/dln.toml, so that a plain `dmft dln` passes its checks. At the schema's eta0 = 0.01
# for 6000 steps (the same final time, t = 60) the per-mode reduction is off at label noise 1 (its
# modes' means at z = -9 to -10, diffusion ratios to 1.55, stationary KS 0.15-0.19: three FAILs); the
# reduction holds for eta0 <~ 0.003 here (docs/derivations.md), and the cross-mode drift takes out the
# networks' O(eta / B) lower means that remain there. theory.cross_modes is on only where the user
# does not write it and train.weight_decay = 0 (the drift is derived without decay): `load_config`.
JOB_DEFAULTS = {"train": {"eta0": 0.003, "steps": 20000, "save_every": 100}, "theory": {"cross_modes": True}}


def job_defaults() -> dict:
    """The dln job's starting configuration: the schema's defaults with `JOB_DEFAULTS` over them."""
    cfg = _config.defaults(SCHEMA)
    for sec, values in JOB_DEFAULTS.items():
        cfg[sec].update(values)
    return cfg


# closer to the seed paper's sizes (at the job's default eta0 = 0.003, 1e5 steps reach t = 300; they
# reached t = 1000 at the schema's 0.01, where the per-mode reduction FAILs the label-noise checks)
FULL = {"train": {"steps": 100000, "save_every": 100, "seeds": 1024},
        "theory": {"paths": 16384}, "staircase": {"seeds": 256, "steps": 100000}}


_UNREAD = {   # field -> (what reads it, is it read at these settings)
    "model.gamma": ("model.init_scale = 0", lambda t, m: m["init_scale"] == 0),
    "teacher.singular_values": ("teacher.spectrum = 'list'", lambda t, m: t["spectrum"] == "list"),
    "teacher.rank": ("a generated teacher.spectrum", lambda t, m: t["spectrum"] != "list"),
    "teacher.top": ("a generated teacher.spectrum", lambda t, m: t["spectrum"] != "list"),
    "teacher.exponent": ("teacher.spectrum = 'power'", lambda t, m: t["spectrum"] == "power"),
    "train.probe": ("online data, teacher.P = 0 (on a fixed set the diffusion is exact over its points)",
                    lambda t, m: not t["P"]),
}


def check_unread(cfg: dict, scanned: dict | None = None) -> None:
    """Refuse a setting nothing reads (set away from its default, or scanned): model.gamma with
    init_scale > 0, the spectrum fields the chosen spectrum ignores, train.probe on a fixed set.
    `scanned`: field -> values of a scan's grid (a scanned init_scale, spectrum or teacher.P
    counts when any point reads the field)."""
    scanned = scanned or {}
    t, m = cfg["teacher"], cfg["model"]
    deciding = [f for f in ("model.init_scale", "teacher.spectrum", "teacher.P") if f in scanned]
    points = []
    for combo in itertools.product(*[np.asarray(scanned[f]).tolist() for f in deciding]):
        tp, mp = dict(t), dict(m)
        for f, v in zip(deciding, combo):
            sec, key = f.split(".")
            (tp if sec == "teacher" else mp)[key] = v
        points.append((tp, mp))
    for field, (reader, reads) in _UNREAD.items():
        sec, key = field.split(".")
        given = field in scanned or cfg[sec][key] != SCHEMA[sec][key].default
        if given and not any(reads(tp, mp) for tp, mp in points):
            raise ConfigError(f"{field}: read only with {reader}; it would be silently ignored here")


def _check(cfg: dict) -> None:
    check_unread(cfg)
    sc = cfg.get("staircase")
    if sc is not None and not sc["seeds"]:
        given = [k for k in ("gamma", "steps", "eta0")      # (away from the default and the --full preset's)
                 if sc[k] not in (SCHEMA["staircase"][k].default, FULL["staircase"].get(k))]
        if given:
            raise ConfigError(f"staircase.{given[0]}: read only with staircase.seeds > 0 (the staircase ensemble); "
                              "it would be silently ignored here")
    t, m, tr = cfg["teacher"], cfg["model"], cfg["train"]
    if m["init"] == "random":        # no per-mode SDE runs from a random start (the job's `_study`)
        given = [k for k in ("paths", "seed", "max_memory_gb")    # (away from the default and the --full preset's)
                 if cfg["theory"][k] not in (SCHEMA["theory"][k].default, FULL["theory"].get(k))]
        if given:
            raise ConfigError(f"theory.{given[0]}: read only with model.init = 'aligned' (the per-mode SDE); "
                              "it would be silently ignored here")
    r = len(t["singular_values"]) if t["spectrum"] == "list" else t["rank"]
    if r > min(t["d_in"], t["d_out"]):
        dim = "d_in" if t["d_in"] <= t["d_out"] else "d_out"
        modes = (f"{r} teacher.singular_values" if t["spectrum"] == "list" else f"teacher.rank = {r}")
        raise ConfigError(f"teacher.{dim}: {t[dim]} is below the teacher's rank ({modes}): a rank-{r} teacher needs "
                          f"d_in and d_out >= {r}")
    if m["depth"] > 1 and r > m["width"]:
        raise ConfigError(f"model.width: {m['width']} is below the teacher's rank {r}")
    if t["P"] and t["P"] < t["d_in"]:
        raise ConfigError(f"teacher.P: {t['P']} points cannot be whitened in d_in = {t['d_in']}")
    if t["P"] and tr["batch_size"] > t["P"]:
        raise ConfigError(f"train.batch_size: must be <= teacher.P = {t['P']}")
    if tr["probe"] == 1:
        raise ConfigError("train.probe: 1 sample has no sample variance; 0 (the closed form) or >= 2")
    _check_singular_values(t)
    distinct_labels("teacher.label_noise", t["label_noise"])
    if cfg["check"]["spread_low"] > cfg["check"]["spread_high"]:
        raise ConfigError(f"check.spread_low: {cfg['check']['spread_low']} is above check.spread_high = "
                          f"{cfg['check']['spread_high']}; that check could never pass")
    log_max = math.log(float(np.finfo(np.float64).max))
    for where, depth, gamma in (("model.gamma", m["depth"], m["gamma"] if not m["init_scale"] else None),
                                ("staircase.gamma", m["depth"],
                                 cfg["staircase"]["gamma"] if cfg["staircase"]["seeds"] else None)):
        if gamma is None:
            continue
        log_scale = -gamma / 2 * math.log(m["width"])       # init_scale = width^(-gamma/2), in logs
        if not -log_max < depth * log_scale < log_max:
            raise ConfigError(f"{where}: init_scale^depth = width^(-gamma depth / 2) = 10^"
                              f"{depth * log_scale / math.log(10):.0f} is outside float64's range")
    _check_init_scale(m)
    if cfg["theory"]["cross_modes"] and tr["weight_decay"] > 0:
        raise ConfigError(f"theory.cross_modes: the cross-mode drift is derived without weight decay "
                          f"(train.weight_decay = {tr['weight_decay']:g}); turn one of the two off")
    if tr["eta0"] * tr["weight_decay"] >= 1:
        raise ConfigError(f"train.weight_decay: eta0 x weight_decay = {tr['eta0'] * tr['weight_decay']:g} "
                          "must be < 1 (each step multiplies the weights by 1 - eta0 x weight_decay)")
    if not tr["log_saves"] and tr["steps"] % tr["save_every"]:
        raise ConfigError(f"train.steps ({tr['steps']}) must be a multiple of train.save_every "
                          f"({tr['save_every']})")
    if any(x > 0 for x in t["label_noise"]) or tr["weight_decay"] > 0:      # a stationary law is compared
        _check_stationary_after(cfg)


def _check_init_scale(m: dict) -> None:
    """An explicit model.init_scale whose init_scale^depth overflows float64 (the networks' product
    of layers and the theory's start are inf): refused as model.gamma's is. One that underflows is
    not: the theory works from log(init_scale^depth) (`build` refuses the starts it cannot follow)."""
    if m["init_scale"] > 0:
        log_start = m["depth"] * math.log(m["init_scale"])
        if log_start >= math.log(float(np.finfo(np.float64).max)):
            raise ConfigError(f"model.init_scale: init_scale^depth = {m['init_scale']:g}^{m['depth']} = 10^"
                              f"{log_start / math.log(10):.0f} overflows float64; use a smaller init_scale")


def _check_singular_values(t: dict) -> None:
    """The teacher's singular values (given, or generated from teacher.top and teacher.exponent)
    within what `dmft.LinearTeacher` accepts, named by their key."""
    if t["spectrum"] == "list":
        s, key = t["singular_values"], "teacher.singular_values"
    else:
        try:
            s = dmft.tasks.spectrum(t["rank"], t["spectrum"], top=t["top"], exponent=t["exponent"])
        except dmft.InputError:           # build() says why
            return
        top_ok = dmft.LinearTeacher.S_MIN <= t["top"] <= dmft.LinearTeacher.S_MAX
        key = "teacher.exponent" if top_ok and t["spectrum"] == "power" else "teacher.top"
    try:
        dmft.LinearTeacher.check_singular_values(s, key if t["spectrum"] == "list"
                                                 else f"{key} (a generated singular value)")
    except dmft.InputError as err:
        raise ConfigError(str(err)) from None


def _check_stationary_after(cfg: dict) -> None:
    """The stationary histograms take the saves after theory.stationary_after x the run's final
    time: refuse a fraction that leaves none (the check was skipped in silence). One save is
    enough: the KS test counts the seeds as its independent samples (tests/test_cli_faults.py
    runs the job with a single save after the default 0.5)."""
    try:
        schedule = train_schedule(cfg["train"])
    except dmft.InputError:             # a schedule the library refuses: build() says why
        return
    frac = cfg["theory"]["stationary_after"]
    after = frac * schedule.final_time
    n = int(np.sum(schedule.times > after))
    if n < 1:
        last = ", ".join(f"{x:g}" for x in schedule.times[-2:])
        raise ConfigError(f"theory.stationary_after: {frac:g} x the run leaves {n} saved time(s) after t = "
                          f"{after:g} (the last saves are at t = {last}); the stationary histograms need at "
                          "least one: lower it")


def staircase_schedule(cfg: dict, schedule: dmft.Schedule) -> dmft.Schedule:
    """The staircase ensemble's schedule: [staircase] eta0 and steps, 150 log-spaced saves, the
    batches of the networks' `schedule`; one the schedule refuses is a ConfigError naming them
    (`build` makes it before any network trains: it was refused once the studies' had trained)."""
    sc = cfg["staircase"]
    try:
        return dmft.Schedule(sc["eta0"], sc["steps"], save_at="log", n_saves=150, batch_size=schedule.batch_size)
    except dmft.InputError as err:
        raise ConfigError(f"staircase.eta0 = {sc['eta0']:g}, staircase.steps = {sc['steps']}: {err}") from None


def train_schedule(tr: dict) -> dmft.Schedule:
    """The networks' (and the SDE's) schedule of the [train] section."""
    if tr["log_saves"]:
        return dmft.Schedule(tr["eta0"], tr["steps"], save_at="log", n_saves=tr["log_saves"],
                             batch_size=tr["batch_size"], weight_decay=tr["weight_decay"])
    return dmft.Schedule(tr["eta0"], tr["steps"], tr["save_every"], batch_size=tr["batch_size"],
                         weight_decay=tr["weight_decay"])


def load_config(path=None, overrides=(), full: bool = False) -> dict:
    """Defaults (`job_defaults`: dln.toml's settings), then the --full preset, then the TOML file,
    then overrides; validated. theory.cross_modes, where neither the file nor an override writes it,
    is on without weight decay and off with it (the drift is derived without decay). With
    `full`, the preset's keys the file sets to other values are named on stderr (the file wins:
    the shipped dln.toml writes them all, so `--config dln.toml --full` is `--config dln.toml`)."""
    preset = FULL if full else None
    initial = job_defaults()
    if "theory.cross_modes" not in _config.given_keys(path, overrides):
        # the run's weight decay, read first (the preset sets none: left out, so that its notice is said once)
        decay = _config.load(SCHEMA, path, overrides, initial=initial)["train"]["weight_decay"]
        initial["theory"]["cross_modes"] = not decay > 0
    cfg = _config.load(SCHEMA, path, overrides, preset=preset, check=_check, initial=initial)
    _config.check_saves(cfg, SCHEMA, path, overrides, preset, initial)
    return cfg


@dataclasses.dataclass(frozen=True)
class Study:
    """The typed problem of one label-noise value."""

    sigma: float
    data: dmft.LinearTeacher
    model: dmft.DeepLinear
    schedule: dmft.Schedule
    seeds: int
    key: object
    sde_key: object


def _reads_learning_times(cfg: dict) -> bool:
    """Whether the studies' theory takes the flow's learning times: the dln job's always (its
    report and diffusion peaks), a deep-linear scan's point with its theory's "learning" outputs."""
    sc = cfg.get("scan")
    return sc is None or bool(sc["theory"] and "learning" in sc["outputs"])


def _check_start(model: dmft.DeepLinear, data: dmft.LinearTeacher, kappa: float, key: str) -> None:
    """The flow's learning times from the aligned start (a quadrature: nothing trains), so that a
    start the theory cannot follow is refused by its key before any network trains (the job failed
    after them): one so small (init_scale^depth below float range) that a learning time passes
    float64's range."""
    try:
        dl.learning_times(model, data, 0.9, weight_decay=kappa)       # (after the 0.5 level's)
    except dmft.InputError as err:
        msg = str(err)
        raise ConfigError(f"{key}: {msg[len('init_scale: '):] if msg.startswith('init_scale: ') else msg}") from None


def _runs_sde(cfg: dict) -> bool:
    """Whether the studies' per-mode SDE runs: the dln job's always (an aligned start), a
    deep-linear scan's point with its theory part."""
    sc = cfg.get("scan")
    return sc is None or bool(sc["theory"])


def _check_sde_start(model: dmft.DeepLinear, data: dmft.LinearTeacher, schedule: dmft.Schedule,
                     t: dict, init_key: str) -> None:
    """The SDE's start (`dl.check_sde_start`: the start, its noise variance and its diffusion in the
    SDE's precision), refused by its key before any network trains (the job failed after them,
    when `mode_sde` refused it): the init key, or the teacher's when its scale is the cause."""
    try:
        dl.check_sde_start(model, data, eta0=schedule.eta0, batch_size=schedule.batch_size)
    except dmft.InputError as err:
        name, _, rest = str(err).partition(": ")
        teacher = "teacher.singular_values" if t["spectrum"] == "list" else "teacher.top"
        key = {"init_scale": init_key, "label_noise": "teacher.label_noise"}.get(name, teacher)
        raise ConfigError(f"{key}: {rest}") from None


def _check_temperature(model: dmft.DeepLinear, data: dmft.LinearTeacher, schedule: dmft.Schedule,
                       t: dict) -> None:
    """The stationary laws' Boltzmann temperatures (`dl.boltzmann_temperature`, which the job's
    stationary check and figure read), refused by the teacher's key before any network trains
    where one is beyond float64 (the job failed after them: s = 1e100 with label noise 1)."""
    try:
        dl.boltzmann_temperature(model, data, eta0=schedule.eta0, batch_size=schedule.batch_size,
                                 weight_decay=schedule.weight_decay)
    except dmft.InputError as err:
        name, _, rest = str(err).partition(": ")
        key = ("teacher.label_noise" if name == "label_noise" else
               "teacher.singular_values" if t["spectrum"] == "list" else "teacher.top")
        raise ConfigError(f"{key}: {rest}") from None


# what the job's and a scan's networks may use: `networks.train`'s default limit (neither passes one)
NETWORKS_MEMORY_GB = 4.0


def _check_network_memory(model, data, schedule, seeds: int, probe: int, seeds_key: str = "train.seeds") -> None:
    """The networks' memory (`networks.deep_linear.memory_estimate` at the trainer's default
    block), refused by its keys before anything is written: the trainer refused it only once the
    job had claimed its directory, or a scan had made its store. `seeds_key` names the ensemble's
    `seeds` (staircase.seeds: the staircase's, refused only once the studies' networks had trained;
    its 150 saves and no probe are fixed, so the advice names neither)."""
    from networks.deep_linear import memory_estimate

    B = data.P if (schedule.batch_size is None and not data.online) else int(schedule.batch_size)
    need = memory_estimate(model, data, seeds, schedule.save_steps.size, probe if data.online else 0,
                           batch_size=B, block=min(seeds, 256))
    if need > NETWORKS_MEMORY_GB * 2 ** 30:
        raise ConfigError(f"{seeds_key}, model.width: {seeds} networks of width {model.width} with batches of "
                          f"{B} need about {need / 2 ** 30:.3g} GiB (> {NETWORKS_MEMORY_GB:g} GiB, the networks' limit); "
                          f"use fewer {seeds_key}, a smaller model.width"
                          + (" or train.batch_size" if seeds_key != "train.seeds" else
                             ", train.batch_size or train.probe, or save less often"))


def _check_network_start(model: dmft.DeepLinear, dtype: str, key: str) -> None:
    """The networks' start in train.dtype (`networks.deep_linear.check_init_scale`: weights that
    start at 0, where a deep network never moves), refused by its key before any network trains."""
    from networks.deep_linear import check_init_scale

    try:
        check_init_scale(model, dtype)
    except dmft.InputError as err:
        raise ConfigError(f"{key}: {str(err).partition(': ')[2]} (train.dtype = '{dtype}')") from None


def check_dtype(cfg: dict) -> None:
    """The networks' train.dtype = 'float64' needs JAX's float64 (the command's --x64): refused
    here, before any file is written (the trainer refused it at the first network)."""
    if cfg["train"]["dtype"] == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError("train.dtype = 'float64' needs float64 arithmetic (jax_enable_x64; the "
                          "command's --x64); enable it or set train.dtype = 'float32'")


def build(cfg: dict, networks: bool = True) -> list[Study]:
    """One study per label-noise value (InputError for values the generators refuse; with
    `networks`, ConfigError for a float64 train.dtype without float64, `check_dtype`)."""
    t, m, tr, th = cfg["teacher"], cfg["model"], cfg["train"], cfg["theory"]
    if networks:
        check_dtype(cfg)
    _check_init_scale(m)                           # (a scan's point: its own init_scale and spectrum)
    _check_singular_values(t)
    if t["spectrum"] == "list":
        s = t["singular_values"]
    else:
        s = dmft.tasks.spectrum(t["rank"], t["spectrum"], top=t["top"], exponent=t["exponent"])
    scale = m["init_scale"] if m["init_scale"] > 0 else m["width"] ** (-m["gamma"] / 2)
    model = dmft.DeepLinear(m["depth"], m["width"], scale, m["init"])
    schedule = train_schedule(tr)
    if model.init == "aligned":                    # the SDE's paths, refused before any network trains
        r = len(s)
        need = dl.sde_memory_estimate(th["paths"], schedule.save_steps.size, r)
        limit = sde_memory_limit(cfg)
        if need > limit * 2 ** 30:
            raise ConfigError(f"theory.paths: {th['paths']} paths x {schedule.save_steps.size} saves x {r} modes "
                              f"need about {need / 2 ** 30:.3g} GiB (> theory.max_memory_gb = {limit:g}); use "
                              "fewer paths or fewer saves, or raise theory.max_memory_gb")
    out = []
    for i, sigma in enumerate(t["label_noise"]):
        # the same teacher, inputs and noise draws for every sigma: only the noise level changes
        data = dmft.tasks.linear_teacher(t["d_in"], t["d_out"], s, P=t["P"] or None, label_noise=sigma,
                                         key=jax.random.key(t["seed"]))
        model.check_data(data)
        init_key = "model.init_scale" if m["init_scale"] > 0 else "model.gamma"
        if networks:
            _check_network_memory(model, data, schedule, tr["seeds"], tr["probe"])
            _check_network_start(model, tr["dtype"], init_key)
            if cfg.get("scan") is None and cfg["staircase"]["seeds"]:       # (the job's random ensemble)
                stair = dmft.DeepLinear.from_gamma(m["depth"], m["width"], cfg["staircase"]["gamma"])
                _check_network_start(stair, tr["dtype"], "staircase.gamma")
                _check_network_memory(stair, data, staircase_schedule(cfg, schedule), cfg["staircase"]["seeds"], 0,
                                      "staircase.seeds")
        if model.init == "aligned" and _reads_learning_times(cfg):
            _check_start(model, data, tr["weight_decay"], init_key)
        if model.init == "aligned" and _runs_sde(cfg):
            _check_sde_start(model, data, schedule, t, init_key)
        if cfg.get("scan") is None and (sigma > 0 or tr["weight_decay"] > 0):   # the job compares a stationary law
            _check_temperature(model, data, schedule, t)
        out.append(Study(sigma, data, model, schedule, tr["seeds"],
                         jax.random.fold_in(jax.random.key(tr["seed"]), i),
                         jax.random.fold_in(jax.random.key(th["seed"]), i)))
    return out
