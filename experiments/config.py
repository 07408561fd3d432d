"""Configuration files of the `dmft` command: typed fields, TOML files, overrides.

A job's configuration is a schema (section -> key -> `Field`), filled from the
defaults, then a preset (`--full`), then a TOML file (or a dict laid out like one),
then `section.key=value` overrides. Every key has a type and a range; an unknown
key, a wrong type, or an impossible combination raises `ConfigError` naming the key
before anything is computed. `load` is the one place where this happens for every
job (validate, grok, scan, dln).

Example:
    >>> from experiments.config import Field, load
    >>> schema = {"train": {"steps": Field("int", 100, "number of steps", 1)}}
    >>> load(schema, None, ["train.steps=20"])["train"]["steps"]
    20
    >>> load(schema, None, ["train.stepz=20"])
    Traceback (most recent call last):
    ...
    dmft.errors.ConfigError: override 'train.stepz=20': unknown key train.stepz (train.steps?); known in [train]: steps
"""

from __future__ import annotations

import codecs
import copy
import dataclasses
import difflib
import math
import os
import sys
import tomllib
from typing import Any, Callable

from dmft.errors import ConfigError

__all__ = ["ConfigError", "Field", "defaults", "resolve_path", "coerce", "parse_override", "merge", "load",
           "read_toml", "to_toml", "differences", "flag_overrides", "given_keys", "check_saves",
           "check_log_saves"]


SEED_MAX = 2 ** 32 - 1              # seeds are uint32: jax.random.key's range under --x32 too


@dataclasses.dataclass(frozen=True)
class Field:
    kind: str                       # "int", "float", "str", "bool", "floats", "ints", "strs"
    default: Any
    doc: str
    minimum: float | None = None
    exclusive: bool = False         # minimum is exclusive
    choices: tuple | None = None
    maximum: float | None = None
    path: bool = False              # a file path: stored absolute (see `resolve_path`)


def resolve_path(value: str, base: str | None) -> str:
    """A path field's value made absolute: relative paths are taken against `base` (the directory
    of the TOML file that names them) or, without one (--set, a dict), the current directory.
    A ".." after a symbolic link is the parent of the link's target, as the OS reads it: dropped
    with the link (normpath), "link/../d.npz" named another file ("not found", or another data
    file read); the lexical form is kept wherever it names the same file."""
    if not value:
        return value
    value = os.path.expanduser(value)
    if not os.path.isabs(value):
        value = os.path.join(base if base is not None else os.getcwd(), value)
    lexical, parts = os.path.normpath(value), value.split(os.sep)
    if ".." not in parts:
        return lexical
    last = len(parts) - parts[::-1].index("..")
    physical = os.path.normpath(os.path.join(os.path.realpath(os.sep.join(parts[:last]) or os.sep), *parts[last:]))
    return lexical if os.path.realpath(lexical) == os.path.realpath(physical) else physical


def defaults(schema: dict) -> dict:
    """Every section filled with its fields' defaults."""
    return {sec: {k: copy.deepcopy(f.default) for k, f in fields.items()} for sec, fields in schema.items()}


def coerce(key: str, f: Field, value):
    """`value` checked against field `f` (named `key` in errors) and converted to its kind."""
    def bad(what):
        _refuse(key, what, value)

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
        return _number(key, f, value)
    if f.kind == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            bad("a list of strings")
        if f.choices:
            for v in value:
                if v not in f.choices:
                    raise ConfigError(f"{key}: {v!r} is not one of {list(f.choices)}")
        return list(value)
    if f.kind in ("ints", "floats"):
        if not isinstance(value, list) or not value:
            bad("a non-empty list")
        inner = dataclasses.replace(f, kind=f.kind[:-1], default=None)
        return [_number(f"{key}[{i}]", inner, v) for i, v in enumerate(value)]
    raise AssertionError(f.kind)


def _refuse(key, what, value):
    raise ConfigError(f"{key}: expected {what}, got {value!r} ({type(value).__name__})")


INT_LIMIT = 2 ** 63 - 1          # no integer setting is larger: counts, sizes, steps and seeds


def _number(key, f, value):
    """A number checked against `f`; an error names `key` and `value` (a list's entry as key[i],
    not the whole list: "gamma0: expected a number, got [1, '2'] (list)" read as if the list
    were wrong)."""
    def bad(what):
        _refuse(key, what, value)

    if isinstance(value, bool):
        bad(f"a{'n integer' if f.kind == 'int' else ' number'}")
    if f.kind == "int":
        if not isinstance(value, int):
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            else:
                bad("an integer")
        if abs(value) > INT_LIMIT:      # (1e308 read as an integer overflowed a float in the preflight)
            digits = len(str(abs(value)))
            # (a field's own maximum first: train.steps = 1e30 said "within +-(2^63 - 1)", not "<= 2^31 - 1")
            bound = f"<= {f.maximum}" if f.maximum is not None and value > f.maximum else "within +-(2^63 - 1)"
            raise ConfigError(f"{key}: must be {bound}, got "
                              + (f"{value:.4g}" if digits < 300 else f"a {'negative ' if value < 0 else ''}{digits}-digit integer"))
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
    if f.maximum is not None and value > f.maximum:
        raise ConfigError(f"{key}: must be <= {f.maximum}, got {value}")
    return value


def merge(cfg: dict, update, source: str, schema: dict,
          tables: dict[str, Callable] | None = None, base: str | None = None) -> None:
    """Merge `update` (section -> key -> value) into `cfg`, checking every key.

    Args:
        base: the directory relative path fields (`Field.path`) are resolved against (the TOML
            file's directory); None: the current directory.
        tables: "section.key" -> handler(cfg, subkey, value, source) for keys whose value is a
            table of its own (the grid of a scan); the subkey is what follows "section.key."
            in an override such as scan.grid.model.gamma0=[...].
    """
    tables = tables or {}
    if not isinstance(update, dict):
        raise ConfigError(f"{source}: expected a table of sections")
    for sec, table in update.items():
        if sec not in schema:
            raise ConfigError(f"{source}: unknown section [{sec}]{_hint(sec, None, schema, list(schema))}; "
                              f"known: {', '.join(schema)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{sec}] must be a table")
        for k, v in table.items():
            head, _, rest = k.partition(".")
            if f"{sec}.{head}" in tables:
                tables[f"{sec}.{head}"](cfg, rest, v, source)
            elif k not in schema[sec]:
                known = list(schema[sec]) + [t.split(".", 1)[1] for t in tables if t.startswith(sec + ".")]
                raise ConfigError(f"{source}: unknown key {sec}.{k}{_hint(k, sec, schema, known)}; "
                                  f"known in [{sec}]: {', '.join(known)}")
            else:
                f = schema[sec][k]
                value = coerce(f"{sec}.{k}", f, v)
                cfg[sec][k] = resolve_path(value, base) if f.path else value


def _hint(name: str, sec: str | None, schema: dict, known: list[str]) -> str:
    """What an unknown section (sec None) or key `name` of [sec] was likely meant to be: for a
    section, the sections that have such a key (a key written outside any), else the closest
    section; for a key, the closest known name of [sec] (a typo, another case), then the other
    sections that have it (a key in the wrong section); nothing when none is. (A key close to
    one of its own section's named only the others: staircase.seed said "teacher.seed or
    train.seed or theory.seed?", not staircase.seeds.)"""
    homes = [f"{s}.{name}" for s in schema if s != sec and name in schema[s]]
    if sec is None and homes:
        return f" ({' or '.join(homes)}?)"
    lower = {k.lower(): k for k in known}
    close = ([lower[name.lower()]] if name.lower() in lower
             else difflib.get_close_matches(name, known, n=1, cutoff=0.75))
    names = [f"[{c}]" if sec is None else f"{sec}.{c}" for c in close] + homes
    return f" ({' or '.join(names)}?)" if names else ""


def parse_override(text: str) -> dict:
    """'section.key=value' with value a TOML literal (strings may be bare)."""
    if not isinstance(text, str) or "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    name, raw = text.split("=", 1)
    sec, key = _dotted(name)
    try:
        table = tomllib.loads(f"v = {raw.strip()}")
    except tomllib.TOMLDecodeError:
        table = {"v": raw.strip()}   # a bare string such as relu
    except ValueError as err:        # (an integer past Python's 4300 digits: it named no key)
        raise ConfigError(f"override {name.strip()}=...: {err}") from None
    if set(table) != {"v"}:          # ('20\n[foo]' read as 20, its table dropped)
        raise ConfigError(f"override {text!r}: expected one value after '=', got more TOML ({sorted(set(table) - {'v'})})")
    return {sec: {key: table["v"]}}


def _dotted(name: str) -> tuple[str, str]:
    """'section.key' as TOML reads a dotted key, so that quoted parts work as in a file
    (scan.grid."model.gamma0"); the key's parts are joined by dots, as the schema names them."""
    try:
        parts, node = [], tomllib.loads(f"{name.strip()} = 0")
        while isinstance(node, dict) and len(node) == 1:
            (part, node), = node.items()
            parts.append(part)
    except tomllib.TOMLDecodeError:
        parts = [s.strip() for s in name.split(".")]
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {name.strip()!r}: expected section.key=value")
    return parts[0], ".".join(parts[1:])


def read_toml(path) -> dict:
    """A TOML file as a dict; ConfigError for a missing, unreadable, non-UTF-8 or invalid file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ConfigError(f"config {path} is a directory, not a TOML file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
    try:
        # (a byte order mark, as Windows editors save UTF-8, read as TOML's "Invalid statement
        # (at line 1, column 1)": the file is UTF-8 all the same)
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        at = err.start + (3 if raw.startswith(codecs.BOM_UTF8) else 0)     # (utf-8-sig counts after the mark)
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {at}); TOML is UTF-8") from None
    try:
        return tomllib.loads(text)
    except ValueError as err:           # (TOMLDecodeError, or an integer past Python's 4300 digits)
        raise ConfigError(f"{path}: not valid TOML ({err})") from None


def load(schema: dict, source=None, overrides=(), *, preset: dict | None = None,
         check: Callable[[dict], None] | None = None, tables: dict | None = None,
         initial: dict | None = None, edit: Callable[[dict], None] | None = None) -> dict:
    """Defaults, then `preset`, then `source` (a TOML path or a dict), then overrides; checked.

    Path fields are stored absolute: relative to the TOML file's directory when the file names
    them, to the current directory when an override or a dict does.

    Args:
        schema: section -> key -> Field.
        check: cross-field checks on the merged configuration (raise ConfigError).
        tables: table-valued keys (see `merge`).
        initial: the starting configuration (default: the schema's defaults).
        edit: applied in place to the source's table (a copy of a dict) before it is merged.
    """
    cfg = copy.deepcopy(initial) if initial is not None else defaults(schema)
    if preset:
        merge(cfg, copy.deepcopy(preset), "--full preset", schema, tables)
    if source is not None:
        table = copy.deepcopy(source) if isinstance(source, dict) else read_toml(source)
        if edit is not None:
            edit(table)
        if isinstance(source, dict):
            merge(cfg, table, "configuration", schema, tables)
        else:
            merge(cfg, table, os.fspath(source), schema, tables,
                  base=os.path.dirname(os.path.abspath(os.fspath(source))))
            if preset:
                _note_preset_overridden(preset, table, cfg, os.fspath(source))
    for text in overrides:             # (in order: a key set again by a later --set takes its value)
        merge(cfg, parse_override(text), f"override {text!r}", schema, tables)
    if check is not None:
        check(cfg)
    return cfg


def _note_preset_overridden(preset: dict, table: dict, cfg: dict, path: str) -> None:
    """Name on stderr the --full preset's keys that the file `path` (its TOML `table`) sets to
    other values: the file wins over the preset (defaults, preset, file, overrides), so a
    shipped file that writes them all made --full change nothing, without a word."""
    written = {f"{sec}.{key}" for sec, keys in table.items() if isinstance(keys, dict) for key in keys}
    taken = [(sec, key) for sec, vals in preset.items() for key, v in vals.items()
             if f"{sec}.{key}" in written and cfg[sec][key] != v]
    if not taken:
        return
    unwritten = [f"{sec}.{key}" for sec, vals in preset.items() for key in vals if f"{sec}.{key}" not in written]
    what = ", ".join(f"{sec}.{key} = {cfg[sec][key]!r} (preset {preset[sec][key]!r})" for sec, key in taken)
    rest = "--full changes nothing here" if not unwritten else f"--full sets only {', '.join(unwritten)}"
    print(f"--full: {path} sets {what}; the file wins over the preset, so {rest} (drop --config, or "
          "edit the file, for the preset's values)", file=sys.stderr)


def given_keys(source=None, overrides=()) -> set[str]:
    """The dotted keys a TOML file or dict `source` and the overrides set: what the user wrote,
    not the defaults or a preset (a whole stored configuration names every key)."""
    tables = [] if source is None else [source if isinstance(source, dict) else read_toml(source)]
    tables += [parse_override(text) for text in overrides]
    return {f"{sec}.{key}" for table in tables for sec, keys in table.items()
            if isinstance(keys, dict) for key in keys}


def check_saves(cfg: dict, schema: dict, source=None, overrides=(), preset: dict | None = None,
                initial: dict | None = None) -> None:
    """Refuse train.save_every written beside train.log_saves > 0: the log-spaced saves replace
    the save grid, so one of the two would be dropped without a word; and more log-spaced saves
    than train.steps. A save_every equal to the
    value it has when nobody writes it (`schema`'s default, `initial`'s, or the preset's) passes,
    so a run's own config.toml, which lists every field, reloads."""
    start = initial["train"]["save_every"] if initial is not None else schema["train"]["save_every"].default
    baseline = (preset or {}).get("train", {}).get("save_every", start)
    if (cfg["train"].get("log_saves") and "train.save_every" in given_keys(source, overrides)
            and cfg["train"]["save_every"] != baseline):
        raise ConfigError(f"train.save_every: not used with train.log_saves = {cfg['train']['log_saves']} "
                          "(log-spaced saves replace the save grid); give one of the two")
    check_log_saves(cfg, "train.steps", cfg["train"]["steps"])


def check_log_saves(cfg: dict, key: str, steps: int) -> None:
    """Refuse more log-spaced saves (train.log_saves) than the `steps` of `key`: the schedule
    would refuse them after the configuration loaded (it had cut them to steps + 1 saves)."""
    if cfg["train"].get("log_saves", 0) > steps:
        raise ConfigError(f"train.log_saves ({cfg['train']['log_saves']}) is more than {key} ({steps}): "
                          "log-spaced saves are distinct step counts from 1 to the steps")


def flag_overrides(flags: dict, overrides) -> list[str]:
    """Overrides for command-line flags (key -> value, None when not given), after the
    --set overrides; a key set both ways is refused rather than silently decided."""
    out = list(overrides)
    set_keys = {f"{sec}.{key}" for o in overrides for sec, keys in parse_override(o).items() for key in keys}
    for key, v in flags.items():
        if v is None:
            continue
        if key in set_keys:
            raise ConfigError(f"{key}: given both as a flag and with --set; give it once")
        if isinstance(v, str):
            out.append(f"{key}='{v}'")
        else:
            out.append(f"{key}={list(v) if isinstance(v, (list, tuple)) else v!r}")
    return out


def distinct_labels(name: str, values) -> None:
    """A list whose values each get their own results (files named by `{value:g}`): refuse
    repeats, and values too close to tell apart in those names (1 and 1.0000001 both read 1)."""
    labels = [f"{v:g}" for v in values]
    seen = {}
    for v, lab in zip(values, labels):
        if lab in seen:
            raise ConfigError(f"{name}: values must be distinct, got {seen[lab]!r} and {v!r} (both label "
                              f"their results {lab!r})")
        seen[lab] = v


def differences(a, b, prefix="") -> list[str]:
    """Dotted keys whose values differ between two JSON-like dicts."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [prefix.rstrip(".") or "(value)"] if a != b else []
    out = []
    for k in sorted(set(a) | set(b), key=str):
        out += differences(a.get(k), b.get(k), f"{prefix}{k}.")
    return out


def to_toml(cfg: dict, unread: dict | None = None) -> str:
    """The configuration as TOML text (for the report and config.toml). unread: "section.key" ->
    why nothing reads it; those are left out, named in a comment (they hold their defaults,
    which a reload fills in again), so the file does not state, say, sizes of data it did not
    make."""
    lines = []
    unread = unread or {}
    for sec, table in cfg.items():
        lines.append(f"[{sec}]")
        reasons: dict[str, list] = {}
        for k in table:
            if f"{sec}.{k}" in unread:
                reasons.setdefault(unread[f"{sec}.{k}"], []).append(k)
        lines += [f"# {', '.join(keys)}: {why}" for why, keys in reasons.items()]
        for k, v in table.items():
            if f"{sec}.{k}" in unread:
                continue
            if isinstance(v, bool):
                s = "true" if v else "false"
            elif isinstance(v, str):
                s = '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            elif isinstance(v, dict):
                s = "{ " + ", ".join(f'"{kk}" = {vv!r}' for kk, vv in v.items()) + " }"
            elif v is None:
                continue
            else:
                s = repr(v)
            lines.append(f"{k} = {s}")
        lines.append("")
    return "\n".join(lines)
