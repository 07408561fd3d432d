"""Argument checks shared by the entry points of `validation`: one `dmft.InputError` naming the
argument and what was expected, raised before any compute (`dmft.checks` covers single numbers
and flags; these cover arrays of real numbers, boolean arrays, mappings and collections of names).

Text, None, complex values and ragged nests are not arrays of real numbers here (a quoted number
is text, as in `dmft.checks.real`); booleans and integers are, as numpy converts them.

Example:
    >>> from validation.inputs import real_array
    >>> real_array("t", [0, 1]).dtype
    dtype('float64')
    >>> real_array("t", "abc")
    Traceback (most recent call last):
    ...
    dmft.errors.InputError: t must be an array of real numbers, got 'abc' (text)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from dmft import checks
from dmft.errors import InputError

__all__ = ["shown", "real_array", "boolean_array", "mapping", "names", "real_or_inf", "theory_name"]


def shown(value, limit: int = 60) -> str:
    """A short repr of a value for a message (an array by its shape and dtype)."""
    if isinstance(value, np.ndarray) and value.size > 8:
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    r = repr(value)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def real_array(name: str, value, *, min_ndim: int = 0) -> np.ndarray:
    """`value` as a float64 array (np.asarray(value, float) for valid input), with at least
    `min_ndim` axes; InputError naming `name` for text, None, complex values, ragged nests or
    objects that are not real numbers."""
    what = f"{name} must be an array of real numbers"
    if value is None:
        raise InputError(f"{what}, got None")
    if isinstance(value, (str, bytes)):
        raise InputError(f"{what}, got {shown(value)} (text)")
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"{what}, got {shown(value)} ({err})") from None
    kind = raw.dtype.kind
    if kind == "c":
        raise InputError(f"{what}, got complex values ({shown(value)})")
    if kind in "USV" or (kind == "O" and not all(isinstance(v, numbers.Real) for v in raw.flat)):
        raise InputError(f"{what}, got {shown(value)}")
    if kind not in "biufO":
        raise InputError(f"{what}, got dtype {raw.dtype}")
    out = np.asarray(raw, dtype=np.float64)
    if out.ndim < min_ndim:
        raise InputError(f"{name} must have at least {min_ndim} axes, got shape {out.shape} ({shown(value)})")
    return out


def boolean_array(name: str, value) -> np.ndarray:
    """`value` as a boolean array: booleans, or numbers that are all 0 or 1 (an empty list too)."""
    if isinstance(value, np.ndarray) and value.dtype == bool:
        return value
    arr = real_array(name, value)
    if not np.all((arr == 0) | (arr == 1)):
        raise InputError(f"{name} must be booleans (True/False per run), got {shown(value)}")
    return arr.astype(bool)


def mapping(name: str, value, what: str) -> Mapping:
    """A mapping (a dict, say); InputError saying what it should map otherwise."""
    if not isinstance(value, Mapping):
        got = "None" if value is None else f"a {type(value).__name__}: {shown(value)}"
        raise InputError(f"{name} must be a dict of {what}, got {got}")
    return value


def names(name: str, value) -> tuple:
    """A collection of names (tuple, list, set; not one string: its letters are no names)."""
    if isinstance(value, (str, bytes)):
        raise InputError(f"{name} must be a collection of names, got the string {value!r}: write ({value!r},)")
    if not isinstance(value, (tuple, list, set, frozenset)) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{name} must be a tuple (or list, set) of names, got {shown(value)}")
    return tuple(value)


def real_or_inf(name: str, value, **bounds) -> float:
    """`dmft.checks.real`, except that +inf is accepted (a bound that is no bound)."""
    if (isinstance(value, (float, np.floating)) or (isinstance(value, np.ndarray) and value.shape == ()
                                                     and value.dtype.kind == "f")) and float(value) == math.inf:
        return math.inf
    return checks.real(name, value, **bounds)


def theory_name(sweep) -> str:
    """How verdicts, reports and figures name a sweep's theory: "DMFT", or "lazy limit" where every
    gamma0 was solved with method='lazy' (`dmft validate --set theory.method=lazy` showed the lazy
    limit as "DMFT", and FAILed it against rich networks under that name)."""
    methods = {(getattr(s, "info", None) or {}).get("method") for s in sweep.solutions.values()}
    return "lazy limit" if methods == {"lazy"} else "DMFT"
