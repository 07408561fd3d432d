"""Configuration of the command-line jobs: a TOML file, defaults, and overrides.

Every key has a type and a range; an unknown key, a wrong type, or an impossible
combination raises `ConfigError` naming the key before anything is computed.

Example:
    >>> from validation.config import load
    >>> cfg = load(None, overrides=["sweep.gamma0=[0.5, 1.0]", "train.steps=100"])
    >>> cfg["sweep"]["gamma0"], cfg["train"]["steps"], cfg["model"]["activation"]
    ([0.5, 1.0], 100, 'relu')
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
from typing import Any

__all__ = ["ConfigError", "SCHEMA", "defaults", "load", "FULL"]

TASKS = ("single_index", "kumar_quadratic", "teacher_network", "npz")


class ConfigError(ValueError):
    """A configuration problem, naming the key or file."""


@dataclasses.dataclass(frozen=True)
class Field:
    kind: str                       # "int", "float", "str", "bool", "floats", "ints", "strs"
    default: Any
    doc: str
    minimum: float | None = None
    exclusive: bool = False         # minimum is exclusive
    choices: tuple | None = None


SCHEMA: dict[str, dict[str, Field]] = {
    "task": {
        "name": Field("str", "single_index", "data generator", choices=TASKS),
        "D": Field("int", 32, "input dimension", 1),
        "P": Field("int", 256, "training points", 1),
        "P_test": Field("int", 1000, "test points", 1),
        "degree": Field("int", 2, "Hermite degree of the single-index target", 1),
        "noise": Field("float", 0.0, "label noise on training targets", 0.0),
        "teacher_width": Field("int", 4, "units of the teacher network", 1),
        "teacher_activation": Field("str", "relu", "activation of the teacher network"),
        "path": Field("str", "", "an .npz with x_train, y_train, x_test, y_test (name = 'npz')"),
        "seed": Field("int", 0, "data seed", 0),
    },
    "model": {
        "activation": Field("str", "relu", "activation name (or 'quadratic' with eps)"),
        "eps": Field("float", 0.0, "eps of the quadratic activation h + eps/2 h^2"),
        "readout": Field("str", "trained", "readouts", choices=("trained", "fixed")),
        "centered": Field("bool", True, "subtract the output at initialization"),
    },
    "train": {
        "eta0": Field("float", 0.5, "gradient-descent step in DMFT time units", 0.0, True),
        "steps": Field("int", 600, "number of steps", 1),
        "save_every": Field("int", 20, "record every this many steps", 1),
        "weight_decay": Field("float", 0.0, "weight decay kappa per unit time", 0.0),
    },
    "theory": {
        "method": Field("str", "auto", "DMFT solver",
                        choices=("auto", "forward", "iterate", "closure", "lazy")),
        "samples": Field("int", 4096, "single-site nodes (sampled methods)", 2),
        "replicas": Field("int", 4, "independent replicas for the error estimate", 1),
        "sampler": Field("str", "stratified", "node sampler",
                         choices=("stratified", "orthogonal", "antithetic", "mc")),
        "seed": Field("int", 0, "seed of the single-site nodes", 0),
    },
    "sweep": {
        "gamma0": Field("floats", [0.05, 0.5, 1.0, 2.0], "richness values", 0.0, True),
    },
    "simulate": {
        "widths": Field("ints", [64, 128, 256, 512, 1024], "network widths", 1),
        "seeds": Field("int", 8, "networks per width", 1),
        "seed": Field("int", 1, "seed of the network initializations", 0),
        "antithetic": Field("bool", False, "antithetic initialization (trained readouts)"),
        "max_memory_gb": Field("float", 6.0, "refuse ensembles needing more memory", 0.0, True),
    },
    "check": {
        "spread_slope": Field("float", -0.5, "expected slope of per-seed error against width"),
        "spread_slope_tol": Field("float", 0.15, "allowed deviation from that slope", 0.0),
        "agreement_sigma": Field("float", 5.0, "max |z| of the final test loss at the largest width", 0.0, True),
        "agreement_rel": Field("float", 0.05, "max relative test-loss error at the largest width", 0.0, True),
        "lazy_rel": Field("float", 0.1, "max relative test-loss gap to the lazy limit at the smallest gamma0", 0.0, True),
    },
}

# The paper-grade preset behind --full.
FULL = {
    "train": {"steps": 2000, "save_every": 40},
    "theory": {"samples": 65536, "replicas": 8},
    "sweep": {"gamma0": [0.03, 0.1, 0.3, 0.5, 1.0, 2.0, 4.0]},
    "simulate": {"widths": [64, 128, 256, 512, 1024, 2048, 4096, 8192], "seeds": 16},
}


def defaults(schema=None) -> dict:
    schema = SCHEMA if schema is None else schema
    return {sec: {k: copy.deepcopy(f.default) for k, f in fields.items()} for sec, fields in schema.items()}


def _coerce(key: str, f: Field, value):
    def bad(what):
        raise ConfigError(f"{key}: expected {what}, got {value!r} ({type(value).__name__})")

    if f.kind == "bool":
        if not isinstance(value, bool):
            bad("true or false")
        return value
    if f.kind == "str":
        if not isinstance(value, str):
            bad("a string")
        if f.choices and value not in f.choices:
            raise ConfigError(f"{key}: must be one of {list(f.choices)}, got {value!r}")
        return value
    if f.kind in ("int", "float"):
        return _number(key, f, value, bad)
    if f.kind == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            bad("a list of strings")
        return list(value)
    if f.kind in ("ints", "floats"):
        if not isinstance(value, list) or not value:
            bad("a non-empty list")
        inner = Field(f.kind[:-1], None, f.doc, f.minimum, f.exclusive)
        return [_number(f"{key}[{i}]", inner, v, bad) for i, v in enumerate(value)]
    raise AssertionError(f.kind)


def _number(key, f, value, bad):
    if isinstance(value, bool):
        bad(f"a{'n integer' if f.kind == 'int' else ' number'}")
    if f.kind == "int":
        if not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                bad("an integer")
    else:
        if not isinstance(value, (int, float)):
            bad("a number")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value}")
    if f.minimum is not None:
        if (f.exclusive and value <= f.minimum) or (not f.exclusive and value < f.minimum):
            rel = ">" if f.exclusive else ">="
            raise ConfigError(f"{key}: must be {rel} {f.minimum}, got {value}")
    return value


def _merge(cfg: dict, update: dict, source: str, schema=None) -> None:
    schema = SCHEMA if schema is None else schema
    if not isinstance(update, dict):
        raise ConfigError(f"{source}: expected a table of sections")
    for sec, table in update.items():
        if sec not in schema:
            raise ConfigError(f"{source}: unknown section [{sec}]; known: {', '.join(schema)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{sec}] must be a table")
        for k, v in table.items():
            if k not in schema[sec]:
                raise ConfigError(f"{source}: unknown key {sec}.{k}; known in [{sec}]: "
                                  f"{', '.join(schema[sec])}")
            cfg[sec][k] = _coerce(f"{sec}.{k}", schema[sec][k], v)


def parse_override(text: str) -> dict:
    """'section.key=value' with value a TOML literal (strings may be bare)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    name, raw = text.split("=", 1)
    sec, key = (s.strip() for s in name.split(".", 1))
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()          # a bare string such as relu
    return {sec: {key: value}}


def load(path=None, overrides=(), full: bool = False, *, schema=None, full_preset=None,
         check_fn=None) -> dict:
    """Defaults, then the --full preset, then the TOML file, then overrides; validated.

    schema, full_preset, check_fn: another job's configuration (default: validate's)."""
    schema = SCHEMA if schema is None else schema
    cfg = defaults(schema)
    if full:
        _merge(cfg, copy.deepcopy(FULL if full_preset is None else full_preset), "--full preset", schema)
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML ({err})") from None
        _merge(cfg, data, str(path), schema)
    for text in overrides:
        _merge(cfg, parse_override(text), f"override {text!r}", schema)
    (check if check_fn is None else check_fn)(cfg)
    return cfg


def check(cfg: dict) -> None:
    """Cross-field checks: combinations that cannot run."""
    tr, th, task, model = cfg["train"], cfg["theory"], cfg["task"], cfg["model"]
    if tr["steps"] % tr["save_every"]:
        raise ConfigError(f"train.steps ({tr['steps']}) must be a multiple of train.save_every "
                          f"({tr['save_every']})")
    if th["samples"] % (2 * th["replicas"]):
        raise ConfigError(f"theory.samples ({th['samples']}) must be a multiple of "
                          f"2 x theory.replicas ({2 * th['replicas']})")
    if task["name"] == "npz" and not task["path"]:
        raise ConfigError("task.path: needed when task.name = 'npz'")
    if model["activation"] == "quadratic" and model["eps"] == 0.0:
        raise ConfigError("model.eps: set eps for the quadratic activation (h + eps/2 h^2)")
    if cfg["simulate"]["antithetic"]:
        if model["readout"] != "trained":
            raise ConfigError("simulate.antithetic needs model.readout = 'trained'")
        odd = [w for w in cfg["simulate"]["widths"] if w % 2]
        if odd:
            raise ConfigError(f"simulate.widths: must be even with antithetic, got {odd}")
    if len(set(cfg["simulate"]["widths"])) != len(cfg["simulate"]["widths"]):
        raise ConfigError("simulate.widths: widths must be distinct")
    if task["name"] != "npz":
        need = 8.0 * (task["P"] + task["P_test"]) * task["D"]
        if need > 8 * 2 ** 30:
            raise ConfigError(f"task.P, task.P_test, task.D: the inputs alone need {need / 2 ** 30:.0f} GiB")
    if th["method"] == "lazy" and tr["weight_decay"] > 0:
        raise ConfigError("theory.method = 'lazy' has no closed form with train.weight_decay > 0")


def to_toml(cfg: dict) -> str:
    """The configuration as TOML text (for the report)."""
    lines = []
    for sec, table in cfg.items():
        lines.append(f"[{sec}]")
        for k, v in table.items():
            if isinstance(v, bool):
                s = "true" if v else "false"
            elif isinstance(v, str):
                s = '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                s = repr(v)
            lines.append(f"{k} = {s}")
        lines.append("")
    return "\n".join(lines)
