"""Argument checks shared by every entry point: one clear `InputError` naming the argument.

Booleans and strings are not numbers here: `integer` and `real` refuse True and False (a flag
passed where a count or a value belongs is a mistake, not 1 or 0) and "0.5" (text where a
number belongs: a quoted value in a file, say); `flag` accepts only booleans.

Example:
    >>> from dmft import checks
    >>> checks.integer("steps", 10.0, minimum=1), checks.real("eta0", 0.5, positive=True)
    (10, 0.5)
    >>> checks.real("eta0", "0.5")
    Traceback (most recent call last):
    ...
    dmft.errors.InputError: eta0 must be a real number, got '0.5' (text)
    >>> checks.flag("kernels", "no")
    Traceback (most recent call last):
    ...
    dmft.errors.InputError: kernels must be True or False, got 'no'
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .errors import InputError

__all__ = ["integer", "real", "choice", "flag", "prng_key", "neuron_measure", "measure_size"]


def integer(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (an integral float is accepted), within [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
            v = int(value)
        else:
            raise InputError(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and v < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise InputError(f"{name} must be <= {maximum}, got {v}")
    return int(v)


def real(name: str, value, *, positive: bool = False, nonnegative: bool = False,
         at_most: float | None = None, below: float | None = None) -> float:
    """A finite real number, optionally > 0, >= 0, <= at_most or < below."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, (str, bytes, np.str_, np.bytes_)):
        raise InputError(f"{name} must be a real number, got {value!r} (text)")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a real number, got {value!r}") from None
    if isinstance(value, complex) or (hasattr(value, "dtype") and np.iscomplexobj(value)):
        raise InputError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise InputError(f"{name} must be > 0, got {v}")
    if nonnegative and v < 0:
        raise InputError(f"{name} must be >= 0, got {v}")
    if at_most is not None and v > at_most:
        raise InputError(f"{name} must be <= {at_most}, got {v}")
    if below is not None and v >= below:
        raise InputError(f"{name} must be < {below}, got {v}")
    return v


def choice(name: str, value, options):
    """One of `options` (compared with ==; unhashable values are refused, not crashed on)."""
    try:
        ok = any(value == o and type(value) is type(o) for o in options)
    except Exception:  # noqa: BLE001 - an array compared with a string, say
        ok = False
    if not ok:
        raise InputError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def flag(name: str, value) -> bool:
    """True or False (numpy booleans too); strings, numbers and None are refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def prng_key(name: str, value):
    """A typed `jax.random.key` (or a legacy uint32 key of shape (2,)); None is left to the caller."""
    import jax

    if value is None:
        return None
    try:
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            if value.shape != ():
                raise InputError(f"{name} must be one key, got a key array of shape {value.shape}")
            return value
    except AttributeError:
        raise InputError(f"{name} must be a jax.random.key, got {type(value).__name__} {value!r}") from None
    arr = np.asarray(value)
    if arr.dtype == np.uint32 and arr.shape == (2,):
        return jax.random.wrap_key_data(value)
    raise InputError(f"{name} must be a jax.random.key, got an array of dtype {arr.dtype} and shape "
                     f"{arr.shape}")


def neuron_measure(name: str, fn, dim: int):
    """A neuron measure (w, w0) -> (K,) or scalar, checked by tracing it once on abstract
    weights of shape (dim,) (`jax.eval_shape`: nothing is computed or compiled), so that a
    function of the wrong arity or one that fails on a neuron's weights is refused here,
    naming the argument, not deep inside a solver's trace. None is left to the caller."""
    if fn is None:
        return None
    _measure_out(name, fn, dim)
    return fn


def measure_size(fn, dim: int) -> int:
    """K, the values per neuron of a measure `neuron_measure` accepted (traced, not computed)."""
    return int(math.prod(_measure_out("neuron_measures", fn, dim).shape))


def _measure_out(name: str, fn, dim: int):
    """The abstract output of a neuron measure on weights of shape (dim,); InputError naming
    `name` when it is not a function of them returning one real (K,) array or scalar."""
    import jax
    import jax.numpy as jnp

    if not callable(fn):
        raise InputError(f"{name} must be a function (w, w0) -> (K,), got {fn!r}")
    spec = jax.ShapeDtypeStruct((int(dim),), jnp.result_type(float))
    try:
        out = jax.eval_shape(fn, spec, spec)
    except Exception as err:  # noqa: BLE001 - the user's function: any failure is a bad argument
        raise InputError(f"{name} must be a function (w, w0) -> (K,) of one neuron's weights now and "
                         f"at initialization (each of shape ({int(dim)},)); calling it failed: "
                         f"{type(err).__name__}: {err}") from None
    if (not isinstance(out, jax.ShapeDtypeStruct) or out.ndim > 1
            or not (jnp.issubdtype(out.dtype, jnp.floating) or jnp.issubdtype(out.dtype, jnp.integer))):
        raise InputError(f"{name} must return one real array of shape (K,) (or a scalar) per neuron, "
                         f"got {out!r}")
    return out
