"""The project's exceptions: one base class, one subclass per kind of failure.

    DmftError                      anything this project raises on purpose
    +-- InputError (ValueError)    a bad argument, named, raised before any compute
    |   +-- ConfigError            a bad configuration key or file (the `dmft` command)
    +-- DivergenceError            a solve or training run produced NaN or inf
    +-- NotConverged               a self-consistent iteration stopped above tolerance
    +-- OutputError (OSError)      an output location that cannot be used
        +-- OutputConflict         it holds another run
        +-- StoreConflict          it holds another scan, or a scan is writing it
        +-- StoreWriteError        a write failed (disk full, permissions)

`InputError` is a `ValueError` and `DivergenceError` a `FloatingPointError`, so
code that catches the built-in kinds keeps working. The command line maps these
classes to its exit codes in one place (`experiments.cli`).

Example:
    >>> from dmft.errors import InputError, DmftError
    >>> issubclass(InputError, ValueError) and issubclass(InputError, DmftError)
    True
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import numpy as np

__all__ = ["DmftError", "InputError", "ConfigError", "MemoryLimitError", "DivergenceError", "NotConverged",
           "OutputError", "OutputConflict", "StoreConflict", "StoreWriteError", "ResultFileError", "failing_at",
           "warn", "Float32Warning"]


class DmftError(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(DmftError, ValueError):
    """A bad argument (shape, dtype, value, name); the message names the argument."""


class ConfigError(InputError):
    """A configuration problem, naming the key or the file."""


class MemoryLimitError(InputError):
    """A program whose estimated memory exceeds its max_memory_gb, refused before it runs (callers
    that name their own knobs, as a scan does, catch this one)."""


class DivergenceError(DmftError, FloatingPointError):
    """A run produced NaN or inf.

    Attributes:
        step: the first step whose output was not finite.
        cause: which quantity went non-finite (e.g. "prediction error Delta").
        partial: the saves recorded before it, all finite (a dict of arrays with a leading
            save axis), or None; from `dmft.solve`, named and shaped as the `Solution`'s arrays
            ("train_loss", "f_train", "weight_change.first_layer", "error.test_loss", ...).
        saved_steps: the step counts of those saves (None when unknown).
    """

    def __init__(self, message, step=None, cause=None, partial=None, saved_steps=None):
        super().__init__(message)
        self.step = step
        self.cause = cause
        self.partial = partial
        self.saved_steps = None if saved_steps is None else np.asarray(saved_steps)


class NotConverged(DmftError, RuntimeError):
    """A self-consistent iteration stopped at max_iter above tolerance.

    Attributes:
        residuals: the residual history.
        solution: the last iterate.
    """

    def __init__(self, message, residuals=None, solution=None):
        super().__init__(message)
        self.residuals = residuals
        self.solution = solution


class OutputError(DmftError, OSError):
    """An output location that cannot be used (a file in the way, no permission, ...)."""


class OutputConflict(OutputError):
    """The output directory already holds something else."""


class StoreConflict(OutputError):
    """The directory holds something other than this scan (or is in use by another)."""


class StoreWriteError(OutputError):
    """Writing to a store failed (disk full, permissions, ...); finished chunks are kept."""


class ResultFileError(DmftError, OSError):
    """A saved result (NAME.npz + NAME.json) that cannot be read back as it was written: a file
    missing, damaged, from another run, or of another kind; the message names the file."""


@contextlib.contextmanager
def failing_at(where: str):
    """Prefix `where` (say "theory at gamma0 = 0.5") to the message of a DivergenceError or
    NotConverged raised inside, keeping the exception and its attributes: a loop over points
    says which point failed.

    Example:
        >>> try:
        ...     with failing_at("theory at gamma0 = 2"):
        ...         raise DivergenceError("non-finite output at step 7", step=7)
        ... except DivergenceError as err:
        ...     print(err, err.step)
        theory at gamma0 = 2: non-finite output at step 7 7
    """
    try:
        yield
    except (DivergenceError, NotConverged) as err:
        if err.args and isinstance(err.args[0], str):
            err.args = (f"{where}: {err.args[0]}",) + err.args[1:]
        raise


class Float32Warning(UserWarning):
    """A computation runs in float32 because JAX's x64 is off (`dmft.plan.warn_float32`); an
    entry point that chose float32 filters it (the command's --x32)."""


# the project's packages; a warning names the first line outside them
_PACKAGES = frozenset({"dmft", "networks", "validation", "experiments"})


def warn(message: str, category=UserWarning) -> None:
    """`warnings.warn` attributed to the user's line: the first caller outside the project's
    packages (a fixed stacklevel named a library file whenever the call came through another
    entry point, as networks.train's deep linear warning named networks/train.py)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").partition(".")[0] in _PACKAGES:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
