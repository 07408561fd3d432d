"""One result shape for a training trajectory, from theory (`dmft.Solution`) or networks
(`networks.Run`): the same records under the same names, one file format, one plot.

Records at the saved times (leading axis T for the theory; (S, T) for an ensemble of
S networks):

    t                           (T,) times k * eta0 (docs/conventions.md)
    f_train, f_test             predictions on the train and test points ((..., P, C) with C outputs)
    train_loss, test_loss       mean squared errors
    ntk, feature_kernel, gradient_kernel    (..., P, P) kernels (when kept)
    alignment                   kernel-target alignment of the NTK
    weight_change               {"first_layer", "readout"}: ||theta - theta0|| / sqrt(N D), / sqrt(N C)
                                (the initial norm's root mean square; docs/conventions.md)
    measures                    (..., K) neuron measures (when asked for)
    info                        method, sizes, timings and the configuration

`save(stem)` writes STEM.npz + STEM.json (`dmft.io`); `load(stem)` reads them back;
`plot(*others)` draws losses, alignment and weight change against time (others on the
same axes, e.g. a theory beside a network run); `predict(x_new)` gives predictions at
the final time on new inputs when the result was computed in this session (or, for a
network run saved with its parameters, after loading).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

import numpy as np

from . import io as _io
from .errors import InputError, ResultFileError
from .runner import exact_products

__all__ = ["Records", "Trajectory", "COMMON_FIELDS"]

COMMON_FIELDS = ("t", "f_train", "f_test", "train_loss", "test_loss", "ntk", "feature_kernel",
                 "gradient_kernel", "alignment", "weight_change", "measures", "info")


def _c_order(a):
    """A numpy array as a C-contiguous one (the same object when it is); anything else as is."""
    if isinstance(a, np.ndarray) and not a.flags.c_contiguous:
        return np.ascontiguousarray(a).reshape(a.shape)
    return a


class Records:
    """Arrays recorded at saved times plus an `info` dict: the file format and loading shared
    by every result type (a subclass is a dataclass with at least the fields `t` and `info`;
    dict-valued fields named in GROUPS are saved as "field.key")."""

    GROUPS: ClassVar[tuple] = ()
    ENSEMBLE_AXES: ClassVar[tuple] = ()
    # every array finite (a result that raises rather than hold NaN or inf); else NaN may mark
    # a diverged member of an ensemble
    ALL_FINITE: ClassVar[bool] = False
    # records with a time axis after the ensemble axes (checked against t on load)
    TIME_SERIES: ClassVar[tuple] = ()
    TIME_SERIES_GROUPS: ClassVar[tuple] = ()

    def __post_init__(self):
        # every array in C order, as `load` gives it back: numpy's reductions add in memory
        # order, so a record kept as a strided view (networks' (S, T, ...) from (T, S, ...)) and
        # its saved copy summed to values a last digit apart (a re-check's verdict at its edge
        # differed from the computing run's)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in self.GROUPS and isinstance(v, dict):
                setattr(self, f.name, {k: _c_order(a) for k, a in v.items()})
            else:
                setattr(self, f.name, _c_order(v))

    def arrays(self) -> dict:
        """All arrays, flattened with dotted names (for saving)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in self.GROUPS:
                for k, a in (v or {}).items():
                    if a is not None:
                        out[f"{f.name}.{k}"] = a
            elif f.name != "info" and v is not None:
                out[f.name] = v
        return out

    def save(self, stem) -> tuple[str, str]:
        """Write STEM.npz + STEM.json (`dmft.io` format); returns the two paths."""
        info = dict(self.info)
        config = info.pop("config", {})
        return _io.save(stem, self.arrays(), config, extra=info, kind=type(self).__name__)

    @classmethod
    def _kinds(cls) -> dict:
        """This class and its subclasses by name: the kinds of file `load` accepts."""
        out, todo = {}, [cls]
        while todo:
            c = todo.pop()
            out.setdefault(c.__name__, c)
            todo.extend(c.__subclasses__())
        return out

    @classmethod
    def load(cls, stem):
        """Read a result written by `save` (also by earlier versions of this project), verified:
        the files as `dmft.io.load` checks them, of this kind (or a subclass), holding every
        record this type cannot do without, with one time axis. A file of a subclass (a
        `dmft.Solution` read by `Trajectory.load`) comes back as that subclass.

        Raises:
            ResultFileError: naming the file and what is wrong.
        """
        kinds = cls._kinds()
        arrays, meta = _io.load(stem, kind=tuple(kinds))
        cls = kinds.get(meta.get("kind"), cls)         # a subclass's file loads as that subclass
        names = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {n: None for n in names}
        for g in cls.GROUPS:
            kw[g] = {}
        for name, a in arrays.items():
            group, _, key = name.partition(".")
            if key and group in cls.GROUPS:
                kw[group][key] = a
            elif name in names:
                kw[name] = a
        for g in cls.GROUPS:
            if not kw[g] and g != "weight_change":
                kw[g] = None
        extra, config = meta.get("extra", {}), meta.get("config", {})
        if not isinstance(extra, dict) or not isinstance(config, dict):
            raise ResultFileError(f"{_io.result_stem(stem)}.json: its 'extra' and 'config' must be maps, got "
                                  f"{type(extra).__name__} and {type(config).__name__} (an edited file?)")
        div = extra.get("diverged")
        if isinstance(div, dict) and all(isinstance(k, str) and k.isdigit() for k in div):
            # JSON keys are text: the seed (or path) numbers come back as the ints they were saved as
            extra = {**extra, "diverged": {int(k): v for k, v in div.items()}}
        kw["info"] = {**extra, "config": config}
        _check_loaded(cls, kw, _io.result_stem(stem), arrays)
        return cls(**kw)

    @property
    def final_time(self) -> float:
        return float(np.asarray(self.t)[-1])


def _check_loaded(cls, kw, stem, arrays) -> None:
    """A loaded record set has what its type cannot do without (fields whose type does not
    admit None), real numbers (finite where its type never holds anything else, ALL_FINITE),
    increasing finite times, and its time series share the length of t. (A file written
    with its checksum passed `dmft.io.load`'s; these catch an edited or older file.)"""
    for name, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise ResultFileError(f"{stem}.npz: {name!r} holds {a.dtype} values, not real numbers")
        if cls.ALL_FINITE and a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise ResultFileError(f"{stem}.npz: {name!r} holds non-finite values, which a "
                                  f"{cls.__name__} never does (an edited file?)")
    t = kw.get("t")
    if t is not None and (np.ndim(t) != 1 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0)):
        raise ResultFileError(f"{stem}.npz: 't' must be increasing finite times (T,), got shape "
                              f"{np.shape(t)}")
    needed = [f.name for f in dataclasses.fields(cls)
              if f.name != "info" and "None" not in str(f.type) and kw.get(f.name) is None
              and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if needed:
        raise ResultFileError(f"{stem}.npz: holds no {needed}, which a {cls.__name__} needs")
    T = len(np.asarray(kw["t"]))
    axis = len(cls.ENSEMBLE_AXES)
    series = [(n, kw.get(n)) for n in cls.TIME_SERIES]
    series += [(f"{g}.{k}", v) for g in cls.GROUPS if g in cls.TIME_SERIES_GROUPS
               for k, v in (kw.get(g) or {}).items()]
    for name, v in series:
        if v is not None and (np.ndim(v) <= axis or np.shape(v)[axis] != T):
            raise ResultFileError(f"{stem}.npz: {name!r} has shape {np.shape(v)}, not {T} saved times "
                                  f"on axis {axis} as t has (arrays from different runs?)")


@dataclasses.dataclass
class Trajectory(Records):
    """Records of one training trajectory (or ensemble of them) at the saved times."""

    t: np.ndarray
    f_train: np.ndarray
    f_test: np.ndarray | None
    train_loss: np.ndarray
    test_loss: np.ndarray | None
    ntk: np.ndarray | None
    feature_kernel: np.ndarray | None
    gradient_kernel: np.ndarray | None
    alignment: np.ndarray
    weight_change: dict
    info: dict
    measures: np.ndarray | None = None

    # fields holding a dict of arrays, saved as "field.key"
    GROUPS: ClassVar[tuple] = ("weight_change",)
    TIME_SERIES: ClassVar[tuple] = ("f_train", "f_test", "train_loss", "test_loss", "ntk",
                                    "feature_kernel", "gradient_kernel", "alignment", "measures")
    TIME_SERIES_GROUPS: ClassVar[tuple] = ("weight_change",)
    # leading axes before time: () for a theory, ("seed",) for an ensemble
    ENSEMBLE_AXES: ClassVar[tuple] = ()
    # what to do when `predict` has nothing to predict from
    PREDICT_HINT: ClassVar[str] = "compute it again in this session"

    def __post_init__(self):
        super().__post_init__()
        self._predictor = None

    # ------------------------------------------------------------ use

    @exact_products
    def predict(self, x_new) -> np.ndarray:
        """Predictions at the final saved time on new inputs x_new (n, D).

        Returns (n,) or (n, C) for a theory, (S, n[, C]) for an ensemble.
        """
        if self._predictor is None:
            raise InputError(
                f"predict: this {type(self).__name__} has no final state to predict from "
                "(it was loaded from disk, or the solver keeps none); " + self.PREDICT_HINT)
        return self._predictor(x_new)

    def attach_predictor(self, predictor) -> "Trajectory":
        """Set the function x_new -> predictions that `predict` calls (solvers do this)."""
        if predictor is not None and not callable(predictor):
            raise InputError(f"predictor must be callable, got {predictor!r}")
        self._predictor = predictor
        return self

    def plot(self, *others, labels=None, title: str | None = None):
        """Losses, NTK-target alignment and first-layer weight change against time.

        Args:
            others: more trajectories drawn on the same axes (for example the theory
                beside a network run on the same schedule).
            labels: one legend label per trajectory (default: method or width).

        Returns:
            a matplotlib Figure (not attached to pyplot: nothing global changes).
        """
        from .plotting import trajectory_figure

        return trajectory_figure((self,) + others, labels=labels, title=title)

    def label(self) -> str:
        """A short legend label."""
        return str(self.info.get("method", type(self).__name__))
