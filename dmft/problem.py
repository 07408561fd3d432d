"""The problem spec shared by theory and simulation: data and model.

`Dataset` holds inputs and targets; `TwoLayer` fixes the architecture and the
parameterization of docs/conventions.md ("Network"). Both validate their arguments on
construction, so bad input fails with one clear `InputError` (a `ValueError`) before
any work. A Dataset keeps read-only copies of the arrays it is given: changing the
caller's arrays afterwards changes nothing.

Example:
    >>> import numpy as np, dmft
    >>> x = np.random.default_rng(0).normal(size=(8, 3))
    >>> data = dmft.Dataset(x, x[:, 0])
    >>> data.P, data.D, data.C
    (8, 3, 1)
    >>> dmft.TwoLayer("relu", gamma0=0.5).readout
    'trained'
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any, ClassVar

import numpy as np

from . import activations as _act
from . import checks
from .errors import InputError

__all__ = ["Dataset", "TwoLayer", "DeepLinear", "LinearTeacher", "READOUTS", "INITS", "as_array"]

READOUTS = ("trained", "fixed")


def as_array(name: str, value, ndim: tuple[int, ...]) -> np.ndarray:
    """A read-only copy of `value` as a real numeric array of one of the given ranks.

    Booleans read as 0 and 1 (binary features or labels). Raises InputError naming `name`
    for a non-numeric, complex or wrongly shaped array,
    one holding NaN or inf, or one so large that its squares summed along the last axis
    overflow (for inputs x (n, D): the input kernel's diagonal |x|^2 / D would be inf, and
    every kernel, node count and loss built on it with it).
    """
    try:
        arr = np.array(value, copy=True)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{name}: cannot be read as an array ({err})") from err
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)
                                   or np.issubdtype(arr.dtype, np.integer)
                                   or arr.dtype == np.bool_):
        raise InputError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    if arr.ndim not in ndim:
        want = " or ".join(f"{d}-d" for d in ndim)
        raise InputError(f"{name}: expected a {want} array, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"{name}: contains {bad} NaN or infinite value(s)")
    if np.issubdtype(arr.dtype, np.floating) and arr.dtype.itemsize > 8:
        # (extended precision, np.longdouble: nothing computes in it, and the check below cannot
        # cast it to float64 'safely': it raised numpy's TypeError)
        with np.errstate(over="ignore"):
            wide, arr = arr, arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            top = np.format_float_scientific(np.max(np.abs(wide)), precision=2, unique=False)
            raise InputError(f"{name}: values up to {top} are beyond float64's "
                             "range (the arrays are computed in float64); rescale them")
    if np.issubdtype(arr.dtype, np.floating) and arr.size:
        with np.errstate(over="ignore", invalid="ignore"):
            sq = (np.einsum("...i,...i->...", arr, arr, dtype=np.float64) if arr.ndim
                  else np.square(arr, dtype=np.float64))
        if not np.all(np.isfinite(sq)):
            raise InputError(f"{name}: values up to {float(np.max(np.abs(arr))):.3g} are too large: their "
                             "squares summed along the last axis overflow float64"
                             + (" (the input kernel |x|^2 / D is not finite)" if name.startswith("x") else "")
                             + "; rescale them")
    arr.setflags(write=False)
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Training (and optional test) data.

    Args:
        x_train: (P, D) inputs.
        y_train: (P,) targets, or (P, C) for C outputs.
        x_test: optional (P*, D) inputs.
        y_test: optional (P*,) or (P*, C) targets; needs x_test.
        meta: optional dictionary describing how the data was made (task
            name, planted direction, ...); recorded in result metadata.

    Arrays are real (float, integer or bool) and finite. The test arrays have the training
    arrays' dtypes: x_test x_train's, y_test y_train's (integer class labels beside float test
    targets are refused: give both as floats). The solvers compute in the working float type.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        x = as_array("x_train", self.x_train, (2,))
        y = as_array("y_train", self.y_train, (1, 2))
        if x.shape[0] < 1 or x.shape[1] < 1:
            raise InputError(f"x_train: needs at least one point and one feature, got shape {x.shape}")
        if y.shape[0] != x.shape[0]:
            raise InputError(f"y_train: has {y.shape[0]} rows but x_train has {x.shape[0]}")
        if y.ndim == 2 and y.shape[1] < 1:
            raise InputError(f"y_train: needs at least one output column, got shape {y.shape}")
        xt, yt = self.x_test, self.y_test
        if xt is None and yt is not None:
            raise InputError("y_test: given without x_test")
        if xt is not None:
            xt = as_array("x_test", xt, (2,))
            if xt.shape[1] != x.shape[1]:
                raise InputError(f"x_test: has {xt.shape[1]} features but x_train has {x.shape[1]}")
            if xt.dtype != x.dtype:
                raise InputError(f"x_test: dtype {xt.dtype} differs from x_train's {x.dtype}: give "
                                 "both the same dtype (as floats: np.asarray(..., float))")
        if yt is not None:
            yt = as_array("y_test", yt, (1, 2))
            if yt.shape[0] != xt.shape[0]:
                raise InputError(f"y_test: has {yt.shape[0]} rows but x_test has {xt.shape[0]}")
            if yt.shape[1:] != y.shape[1:]:
                raise InputError(f"y_test: shape {yt.shape} does not match y_train's outputs {y.shape}")
            if yt.dtype != y.dtype:
                raise InputError(f"y_test: dtype {yt.dtype} differs from y_train's {y.dtype}: give "
                                 "both the same dtype (as floats: np.asarray(..., float))")
        if xt is not None and xt.shape[0] == 0:     # an empty test set is no test set
            xt = yt = None
        if not isinstance(self.meta, dict):
            raise InputError(f"meta: expected a dict, got {type(self.meta).__name__}")
        object.__setattr__(self, "meta", dict(self.meta))
        for name, val in (("x_train", x), ("y_train", y), ("x_test", xt), ("y_test", yt)):
            object.__setattr__(self, name, val)

    def __repr__(self):
        test = f", P_test={self.P_test}" if self.x_test is not None else ""
        task = self.meta.get("task")
        return (f"Dataset(P={self.P}, D={self.D}, C={self.C}{test}, x dtype={self.x_train.dtype}"
                + (f", task={task!r}" if task else "") + ")")

    @property
    def P(self) -> int:
        """Number of training points."""
        return int(self.x_train.shape[0])

    @property
    def P_test(self) -> int:
        """Number of test points (0 without a test set)."""
        return 0 if self.x_test is None else int(self.x_test.shape[0])

    @property
    def D(self) -> int:
        """Input dimension."""
        return int(self.x_train.shape[1])

    @property
    def C(self) -> int:
        """Number of outputs (1 for scalar targets)."""
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])

    @property
    def scalar(self) -> bool:
        """True when targets were given as vectors (single output)."""
        return self.y_train.ndim == 1

    def targets(self, split: str = "train") -> np.ndarray:
        """Targets as a (P, C) float array."""
        y = self.y_train if split == "train" else self.y_test
        if y is None:
            return None
        y = np.asarray(y, dtype=float)
        return y[:, None] if y.ndim == 1 else y

    @property
    def digest(self) -> str:
        """SHA-256 of the arrays' shapes and values (as float64: a float32 copy of the same values
        shares it), computed once: two results recording the same digest ran on the same data
        (`validation.compare` refuses two that record different ones)."""
        known = self.__dict__.get("_digest")
        if known is None:
            known = _arrays_sha256((self.x_train, self.y_train, self.x_test, self.y_test))
            object.__setattr__(self, "_digest", known)
        return known

    def describe(self) -> dict[str, Any]:
        """Shapes, meta data and the arrays' digest, for result metadata."""
        return {"P": self.P, "P_test": self.P_test, "D": self.D, "C": self.C,
                "has_test_targets": self.y_test is not None, "sha256": self.digest,
                "meta": _jsonable(self.meta)}

    def save(self, path) -> None:
        """Write the arrays to an .npz file that `dmft.tasks.load_npz` reads."""
        arrays = {"x_train": self.x_train, "y_train": self.y_train}
        if self.x_test is not None:
            arrays["x_test"] = self.x_test
        if self.y_test is not None:
            arrays["y_test"] = self.y_test
        np.savez(path, **arrays)


def _arrays_sha256(arrays) -> str:
    """SHA-256 of arrays' shapes and values as float64 (a float32 copy of the same values shares
    it), "-" for a None; the data digests of `Dataset` and `LinearTeacher`."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"-")
            continue
        v = np.ascontiguousarray(a, dtype=np.float64)
        h.update(repr(v.shape).encode())
        h.update(v.tobytes())
    return h.hexdigest()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


@dataclasses.dataclass(frozen=True)
class TwoLayer:
    """A two-layer network in mean-field (muP) scaling (docs/conventions.md, "Network").

        f(x) = 1 / (gamma0 N) sum_i a_i phi(w_i . x / sqrt(D))

    Args:
        activation: a name among `dmft.activations.names()`, an Activation
            (e.g. `dmft.activations.quadratic(eps)`), or an elementwise callable.
        gamma0: richness, > 0 (alpha = 1 / gamma0 in Kumar et al.).
        readout: "trained" (a ~ N(0, 1)) or "fixed" (a = 1, not trained).
        centered: subtract the output at initialization, f - f(theta_0).
    """

    activation: Any = "tanh"
    gamma0: float = 1.0
    readout: str = "trained"
    centered: bool = True

    def __post_init__(self):
        object.__setattr__(self, "activation", _act.get(self.activation))
        object.__setattr__(self, "gamma0", checks.real("gamma0", self.gamma0, positive=True))
        checks.choice("readout", self.readout, READOUTS)
        object.__setattr__(self, "centered", checks.flag("centered", self.centered))

    @property
    def trained_readout(self) -> bool:
        return self.readout == "trained"

    def replace(self, **changes) -> "TwoLayer":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """{"activation", "activation_params", "gamma0", "readout", "centered"}, and for a custom
        activation "activation_probe": its values at ACTIVATION_PROBE (6 significant digits). A
        name alone told two custom callables apart only by what the user called them (two
        lambdas, leaky relus of slope 0.1 and 0.3, both '<lambda>': `validation.compare` went
        ahead)."""
        act = self.activation
        d = {"activation": act.name, "activation_params": [float(p) for p in act.params],
             "gamma0": self.gamma0, "readout": self.readout, "centered": self.centered}
        builtin = act.name in _act.names() and act.fn is _act.get(act.name).fn
        if not builtin and act.name != "quadratic":            # (quadratic(eps): its parameters say it)
            values = np.asarray(act(np.asarray(ACTIVATION_PROBE)), np.float64)
            d["activation_probe"] = [float(f"{v:.6g}") for v in values]
        return d

    @classmethod
    def from_description(cls, d: dict) -> "TwoLayer":
        """The model a `describe()` dict (as saved in result metadata) stands for.

        Works for the built-in activations and quadratic(eps); a custom callable cannot be
        rebuilt from its name (InputError). `d` must be a dict with the keys gamma0, readout and
        centered (activation_params, when present, a list of real numbers); InputError naming
        what is wrong otherwise, and the model's own checks for the values.
        """
        from collections.abc import Mapping

        if not isinstance(d, Mapping):
            raise InputError(f"d must be a model description (the dict TwoLayer.describe() returns), "
                             f"got {type(d).__name__} {d!r}")
        missing = [k for k in ("activation", "gamma0", "readout", "centered") if k not in d]
        if missing:
            raise InputError(f"d: the model description lacks {', '.join(map(repr, missing))} "
                             "(TwoLayer.describe() writes activation, activation_params, gamma0, "
                             "readout and centered)")
        raw = d.get("activation_params", [])
        if not isinstance(raw, (list, tuple, np.ndarray)) or np.ndim(raw) != 1:
            raise InputError(f"activation_params (in d) must be a list of real numbers, got {raw!r}")
        params = [checks.real(f"activation_params[{i}] (in d)", p) for i, p in enumerate(raw)]
        name = d["activation"]
        if not isinstance(name, str):
            raise InputError(f"activation (in d) must be the name of a built-in activation, got {name!r}")
        if name == "quadratic" and len(params) == 2:
            act = _act.quadratic(2.0 * params[1])
        elif name in _act.names():
            act = _act.get(name)
        else:
            raise InputError(f"activation {name!r} is not built in; a custom activation cannot be "
                             "rebuilt from saved metadata")
        return cls(act, gamma0=d["gamma0"], readout=d["readout"], centered=d["centered"])


ACTIVATION_PROBE = (-3.0, -1.7, -0.6, -0.1, 0.0, 0.3, 0.9, 2.2)   # where a custom activation is described


INITS = ("random", "aligned")


@dataclasses.dataclass(frozen=True)
class DeepLinear:
    """A deep linear network f(x) = W_L ... W_1 x (docs/conventions.md, "Deep linear networks").

    W_1: (width, d_in), W_l: (width, width), W_L: (d_out, width); d_in and d_out come from
    the data. Standard parameterization, trained by (S)GD on l = |y - f|^2 / (2B).

    Args:
        depth: L >= 1, the number of weight matrices.
        width: hidden width w >= 1 (must be at least the teacher's rank; unused for L = 1).
        init_scale: > 0. init="random": i.i.d. N(0, init_scale^2) entries (the seed paper's
            init_scale^2 = width^-gamma: `DeepLinear.from_gamma`); init="aligned": balanced
            and aligned with the teacher's modes, each layer carrying init_scale on each
            mode, so every mode strength starts at init_scale^L.
        init: "random" or "aligned".

    Example:
        >>> m = DeepLinear(depth=4, width=10, init_scale=0.1, init="aligned")
        >>> round(m.mode_init, 8)
        0.0001
        >>> DeepLinear.from_gamma(depth=4, width=100, gamma=1.5).init_scale == 100 ** -0.75
        True
    """

    depth: int = 2
    width: int = 16
    init_scale: float = 0.1
    init: str = "random"

    def __post_init__(self):
        object.__setattr__(self, "depth", checks.integer("depth", self.depth, minimum=1))
        object.__setattr__(self, "width", checks.integer("width", self.width, minimum=1))
        object.__setattr__(self, "init_scale", checks.real("init_scale", self.init_scale, positive=True))
        checks.choice("init", self.init, INITS)

    @classmethod
    def from_gamma(cls, depth: int, width: int, gamma: float, init: str = "random") -> "DeepLinear":
        """init_scale^2 = width^-gamma (gamma < 1: lazy; gamma > 1: saddle-to-saddle)."""
        gamma = checks.real("gamma", gamma)
        width = checks.integer("width", width, minimum=1)
        log_scale = -gamma / 2 * math.log(width)          # in log space: width^-gamma/2 may overflow
        if not -745.0 < log_scale < 709.0:
            raise InputError(f"gamma: init_scale = width^(-gamma/2) = {width}^({-gamma / 2:g}) = "
                             f"10^{log_scale / math.log(10):.0f} is outside float64's range")
        return cls(depth, width, float(width) ** (-gamma / 2), init)

    @property
    def mode_init(self) -> float:
        """The initial mode strength init_scale^L of an aligned start (0.0 where it underflows:
        the theory works in logs there); InputError naming init_scale where it overflows float64
        (it raised OverflowError)."""
        log_scale = self.depth * math.log(self.init_scale)
        if log_scale >= math.log(np.finfo(np.float64).max):
            raise InputError(f"init_scale: init_scale^depth = {self.init_scale:g}^{self.depth} = "
                             f"10^{log_scale / math.log(10):.0f} overflows float64; use a smaller init_scale")
        return math.exp(log_scale)

    def replace(self, **changes) -> "DeepLinear":
        return dataclasses.replace(self, **changes)

    def check_data(self, data) -> None:
        """Refuse a teacher this network cannot represent (rank above the width)."""
        if not isinstance(data, LinearTeacher):
            raise InputError(f"data must be a dmft.LinearTeacher (dmft.tasks.linear_teacher) for a "
                             f"DeepLinear model, got {type(data).__name__}")
        if self.depth > 1 and data.rank > self.width:
            raise InputError(f"width: {self.width} is below the teacher's rank {data.rank}; a "
                             "narrower hidden layer cannot represent every mode")

    def describe(self) -> dict[str, Any]:
        return {"kind": "deep_linear", "depth": self.depth, "width": self.width,
                "init_scale": self.init_scale, "init": self.init}


# The per-mode theory of a linear teacher squares its singular values and label noise (the gradient
# noise variance 2 (s - pi)^2 + sigma^2, losses) and at depth L runs on time scales up to 1/s^2
# (dt/dpi ~ pi^(2/L - 2) / s near the target): both stay finite, with room (a factor 1e8), for
# values in [1 / _TEACHER_MAX, _TEACHER_MAX] (the bound `tasks.linear_teacher` puts on label_noise).
_TEACHER_MAX = math.sqrt(np.finfo(np.float64).max) * 1e-4          # ~1.34e150


@dataclasses.dataclass(frozen=True, eq=False)
class LinearTeacher:
    """A linear teacher y = M x + sigma xi with M = U diag(s) V^T (docs/conventions.md).

    Made by `dmft.tasks.linear_teacher`. Modes keep the order of `s` as given.

    Attributes:
        U: (d_out, r), V: (d_in, r) orthonormal columns; s: (r,) singular values.
        label_noise: sigma >= 0.
        x_train, y_train: (P, d_in), (P, d_out) fixed points (None for online data, where
            fresh Gaussian inputs and noise are drawn at every step).
        meta: how the data was made (a dict).

    Singular values lie in [S_MIN, S_MAX] (~7.5e-151 to ~1.3e150: no subnormals) and label_noise
    in [0, S_MAX] (`check_singular_values`): beyond, the theory's squares or time scales overflow
    float64.
    """

    S_MIN: ClassVar[float] = 1.0 / _TEACHER_MAX
    S_MAX: ClassVar[float] = _TEACHER_MAX

    U: np.ndarray
    V: np.ndarray
    s: np.ndarray
    label_noise: float = 0.0
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        U = as_array("U", self.U, (2,)).astype(np.float64)
        V = as_array("V", self.V, (2,)).astype(np.float64)
        s = as_array("singular_values", self.s, (1,)).astype(np.float64)
        if U.shape[1] != s.size or V.shape[1] != s.size:
            raise InputError(f"U {U.shape}, V {V.shape} and singular_values {s.shape} disagree on the rank")
        if s.size < 1:
            raise InputError("singular_values: give at least one")
        if np.any(s <= 0):
            raise InputError(f"singular_values must be > 0, got {s.tolist()}")
        self.check_singular_values(s)
        for name, q in (("U", U), ("V", V)):
            if not np.allclose(q.T @ q, np.eye(s.size), atol=1e-8):
                raise InputError(f"{name}: columns must be orthonormal")
        sigma = checks.real("label_noise", self.label_noise, nonnegative=True)
        if sigma > self.S_MAX:
            raise InputError(f"label_noise: {sigma:g} is too large: its square overflows float64 arithmetic "
                             f"(losses, noise variances); use a value below {self.S_MAX:.3g}")
        if not isinstance(self.meta, dict):
            raise InputError(f"meta: expected a dict, got {type(self.meta).__name__}")
        x, y = self.x_train, self.y_train
        if (x is None) != (y is None):
            raise InputError("x_train and y_train go together (both None means online data)")
        if x is not None:
            x = as_array("x_train", x, (2,))
            y = as_array("y_train", y, (2,))
            if x.shape[1] != V.shape[0] or y.shape[1] != U.shape[0] or x.shape[0] != y.shape[0]:
                raise InputError(f"x_train {x.shape} / y_train {y.shape} do not match d_in = "
                                 f"{V.shape[0]}, d_out = {U.shape[0]}")
            if x.shape[0] < 1:
                raise InputError(f"x_train: a fixed set needs at least one point, got shape {x.shape} "
                                 "(x_train = y_train = None means online data)")
        for k, v in (("U", U), ("V", V), ("s", s)):
            v.setflags(write=False)
            object.__setattr__(self, k, v)
        object.__setattr__(self, "label_noise", sigma)
        object.__setattr__(self, "x_train", x)
        object.__setattr__(self, "y_train", y)
        object.__setattr__(self, "meta", dict(self.meta))

    @classmethod
    def check_singular_values(cls, s, name: str = "singular_values") -> None:
        """Refuse (InputError naming `name`) finite positive singular values outside [S_MIN, S_MAX]:
        a subnormal or tiny one overflows the theory's time scales (up to 1/s^2), a huge one its
        squares (the gradient noise variance 2 (s - pi)^2)."""
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        low, high = s < cls.S_MIN, s > cls.S_MAX
        if np.any(low):
            v = float(s[low][0])
            sub = " (a subnormal float)" if v < np.finfo(np.float64).tiny else ""
            raise InputError(f"{name}: {v:g}{sub} is below {cls.S_MIN:.3g}: the per-mode theory's time scales "
                             "(up to 1/s^2) overflow float64; rescale the teacher")
        if np.any(high):
            raise InputError(f"{name}: {float(s[high][0]):g} is above {cls.S_MAX:.3g}: its square overflows "
                             "float64 arithmetic (noise variances 2 (s - pi)^2, losses); rescale the teacher")

    @property
    def M(self) -> np.ndarray:
        """(d_out, d_in) teacher map."""
        return (self.U * self.s) @ self.V.T

    @property
    def rank(self) -> int:
        return int(self.s.size)

    @property
    def d_in(self) -> int:
        return int(self.V.shape[0])

    @property
    def d_out(self) -> int:
        return int(self.U.shape[0])

    @property
    def online(self) -> bool:
        """True when inputs are drawn fresh at every step (no fixed training set)."""
        return self.x_train is None

    @property
    def P(self) -> int | None:
        return None if self.x_train is None else int(self.x_train.shape[0])

    def __repr__(self):
        where = "online" if self.online else f"P={self.P}"
        return (f"LinearTeacher(d_in={self.d_in}, d_out={self.d_out}, s={np.round(self.s, 4).tolist()}, "
                f"label_noise={self.label_noise:g}, {where})")

    @property
    def digest(self) -> str | None:
        """SHA-256 of a fixed set's arrays (the teacher's U, V, s and the points, as float64),
        computed once; None for online data, whose law the singular values and label noise fix.
        Two fixed sets of one spectrum drawn with other keys have other effective strengths
        (`dmft.deep_linear.effective_modes`): results recording different digests ran on
        different data (`validation.deep_linear` refuses to compare them)."""
        if self.online:
            return None
        known = self.__dict__.get("_digest")
        if known is None:
            known = _arrays_sha256((self.U, self.V, self.s, self.x_train, self.y_train))
            object.__setattr__(self, "_digest", known)
        return known

    def describe(self) -> dict[str, Any]:
        """Sizes, spectrum, label noise, meta data, and a fixed set's digest, for result metadata."""
        out = {"kind": "linear_teacher", "d_in": self.d_in, "d_out": self.d_out,
               "singular_values": self.s.tolist(), "label_noise": self.label_noise,
               "P": self.P, "meta": _jsonable(self.meta)}
        if not self.online:
            out["sha256"] = self.digest
        return out
