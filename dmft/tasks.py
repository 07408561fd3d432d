"""Data generators returning `dmft.Dataset`s, and loading user arrays.

The Gaussian generators draw inputs x ~ N(0, I_D) from a `jax.random.key` with `fold_in`
per array (modular_addition and terrain draw their one permutation or choice of points from
the key itself), so the same key gives the same data, with or without float64 (they draw in
float64 in a scope of their own: `dmft ... --x32` solves the problem `--x64` does). Data generators
(and only they) also take an int seed in [0, 2^32 - 1] (key=0 is jax.random.key(0),
with or without float64); solvers and trainers (`dmft.solve`, `dmft.solve_batch`,
`networks.train`, `dmft.deep_linear.mode_sde`) take a `jax.random.key` only, so that a
seed is never mistaken for a key there. Sizes: P training points, P_test test points;
the data's size is estimated before anything is drawn (at most MAX_DATA_GB).

Example:
    >>> import jax
    >>> from dmft import tasks
    >>> d = tasks.single_index(D=5, P=10, P_test=4, degree=2, key=jax.random.key(1))
    >>> d.x_train.shape, d.y_test.shape, d.meta["task"]
    ((10, 5), (4,), 'single_index')
"""

from __future__ import annotations

import functools
import math
import numbers
import os

import jax
import jax.numpy as jnp
import numpy as np

from . import activations as _act
from . import checks
from .errors import InputError, warn
from .problem import Dataset, LinearTeacher

__all__ = ["single_index", "terrain", "kumar_quadratic", "teacher_network", "modular_addition", "sparse_parity",
           "load_npz", "scale_note", "SCALE_RANGE", "hermite", "as_key", "linear_teacher", "spectrum"]


MAX_SEED = 2 ** 32 - 1    # jax.random.key(seed) without float64 keeps only the low 32 bits


def _same_with_or_without_x64(generator):
    """Run a data generator with float64 on (in a scope: the caller's setting is untouched), so
    that a key gives the same data set with x64 off (--x32) as with it on: JAX draws in the
    default float type, and under float32 the same key gave other inputs and targets (a user
    comparing --x32 with --x64 compared two problems)."""
    @functools.wraps(generator)
    def generate(*args, **kwargs):
        with jax.enable_x64(True):
            return generator(*args, **kwargs)
    return generate


def as_key(key, name: str = "key"):
    """A `jax.random.key` from a key, an int seed in [0, 2^32 - 1], or None (seed 0); anything
    else (a bool, a float, a string, a seed out of range) is an InputError naming `name`."""
    if key is None:
        return jax.random.key(0)
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        if not 0 <= int(key) <= MAX_SEED:
            raise InputError(f"{name}: an int seed must be in [0, {MAX_SEED}], got {int(key)}")
        return jax.random.key(int(key))
    try:
        return checks.prng_key(name, key)
    except InputError as err:
        raise InputError(f"{err} (or an int seed in [0, {MAX_SEED}])") from None


def _key_data(key) -> list:
    """A key's data as a list of ints (for `meta`: the key that regenerates the data set)."""
    return np.asarray(jax.random.key_data(key)).tolist()


def _size(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


MAX_DEGREE = 170           # sqrt(k!) is a float64 up to k = 170


def hermite(k: int, x):
    """Normalized probabilists' Hermite polynomial He_k(x) / sqrt(k!), 0 <= k <= MAX_DEGREE.

    x: finite real numbers (a scalar or an array). InputError naming the argument for anything
    else, and naming x where a finite x makes He_k(x) overflow float64 (|x| beyond ~1e300^(1/k))."""
    k = checks.integer("k", k, minimum=0, maximum=MAX_DEGREE)
    if x is None or isinstance(x, (str, bytes)):
        raise InputError(f"x must be real numbers, got {x!r}")
    try:
        x = np.asarray(x)
        if x.dtype == object:
            x = x.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"x must be real numbers, got {type(x).__name__} {x!r}") from None
    if x.dtype.kind not in "fiu":
        raise InputError(f"x must be real numbers, got dtype {x.dtype}")
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise InputError("x must be finite, got NaN or inf")
    prev, cur = np.ones_like(x), x
    if k == 0:
        return prev
    with np.errstate(over="ignore", invalid="ignore"):
        for n in range(1, k):
            prev, cur = cur, x * cur - n * prev
    if not np.all(np.isfinite(cur)):
        big = float(np.max(np.abs(x)))
        raise InputError(f"x: He_{k}(x) overflows float64 at |x| up to {big:.3g} (the recurrence "
                         f"grows like |x|^{k}); use smaller inputs or a lower degree")
    return cur / math.sqrt(math.factorial(k))


MAX_DATA_GB = 8.0


def _check_size(D, P, P_test, outputs: int = 0, names: str = "P + P_test"):
    """Refuse data whose arrays (inputs of dimension D and `outputs` target or hidden columns per
    point, float64) would exceed MAX_DATA_GB, before anything is drawn or built."""
    need = 8.0 * (P + P_test) * (D + outputs)
    if need > MAX_DATA_GB * 2 ** 30:
        raise InputError(f"{names}: {P + P_test} points in D = {D}" + (f" with {outputs} outputs"
                         if outputs else "") + f" need {need / 2 ** 30:.0f} GiB (> {MAX_DATA_GB:g} "
                         "GiB); use fewer points or dimensions")


def _gaussian_inputs(key, D, P, P_test):
    _check_size(D, P, P_test)
    x = np.asarray(jax.random.normal(jax.random.fold_in(key, 0), (P, D)), dtype=np.float64)
    xt = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (P_test, D)), dtype=np.float64)
    return x, xt


def _direction(key, D):
    beta = np.asarray(jax.random.normal(jax.random.fold_in(key, 2), (D,)), dtype=np.float64)
    return beta / np.linalg.norm(beta)


_NOISE_MAX = math.sqrt(np.finfo(np.float64).max) * 1e-4     # its square, times 1e8, stays finite


def _noise_level(name: str, value) -> float:
    """A label-noise standard deviation: >= 0 and small enough that its square (losses, noise
    variances, the targets' squares) is finite with room; else an InputError naming it."""
    value = checks.real(name, value, nonnegative=True)
    if value > _NOISE_MAX:
        raise InputError(f"{name}: {value:g} is too large: its square overflows float64 arithmetic "
                         f"(losses, noise variances); use a value below {_NOISE_MAX:.3g}")
    return value


@_same_with_or_without_x64
def single_index(D: int = 32, P: int = 128, P_test: int = 512, degree: int = 2, *, key=None,
                 noise: float = 0.0) -> Dataset:
    """y = He_k(beta . x) / sqrt(k!) with a random unit beta (unit-variance target).

    Args:
        degree: Hermite degree k >= 1 (the information exponent of the target).
        noise: standard deviation of Gaussian label noise on the training targets.
    """
    D, P, P_test = _size("D", D), _size("P", P), _size("P_test", P_test, 0)
    degree = checks.integer("degree", _size("degree", degree), maximum=MAX_DEGREE)
    noise = _noise_level("noise", noise)
    key = as_key(key)
    x, xt = _gaussian_inputs(key, D, P, P_test)
    beta = _direction(key, D)
    y = hermite(degree, x @ beta)
    if noise:
        y = y + noise * np.asarray(jax.random.normal(jax.random.fold_in(key, 3), (P,)), np.float64)
    return Dataset(x, y, xt if P_test else None, hermite(degree, xt @ beta) if P_test else None,
                   meta={"task": "single_index", "key": _key_data(key), "degree": degree, "noise": noise,
                         "beta": beta.tolist()})


@_same_with_or_without_x64
def kumar_quadratic(D: int = 100, P: int = 550, P_test: int = 1000, *, key=None) -> Dataset:
    """The quadratic single-index target of Kumar et al. (2024): y = (beta . x)^2 / 2, |beta| = 1."""
    D, P, P_test = _size("D", D), _size("P", P), _size("P_test", P_test, 0)
    key = as_key(key)
    x, xt = _gaussian_inputs(key, D, P, P_test)
    beta = _direction(key, D)
    return Dataset(x, 0.5 * (x @ beta) ** 2, xt if P_test else None,
                   0.5 * (xt @ beta) ** 2 if P_test else None,
                   meta={"task": "kumar_quadratic", "key": _key_data(key), "beta": beta.tolist()})


@_same_with_or_without_x64
def teacher_network(D: int = 16, P: int = 128, P_test: int = 512, *, width: int = 4,
                    activation="relu", key=None) -> Dataset:
    """y = (1 / sqrt(width)) sum_j a_j phi(w_j . x / sqrt(D)), w_j ~ N(0, I), a_j ~ N(0, 1)."""
    D, P, P_test, width = _size("D", D), _size("P", P), _size("P_test", P_test, 0), _size("width", width)
    _check_size(D, P, P_test, width, "P + P_test, width")     # the teacher's hidden activations
    _check_size(D, width, 0, 0, "width")                      # its first-layer weights
    act = _act.get(activation)
    key = as_key(key)
    x, xt = _gaussian_inputs(key, D, P, P_test)
    w = np.asarray(jax.random.normal(jax.random.fold_in(key, 4), (width, D)), np.float64)
    a = np.asarray(jax.random.normal(jax.random.fold_in(key, 5), (width,)), np.float64)

    def teacher(inp):
        return np.asarray(act(jnp.asarray(inp @ w.T / np.sqrt(D)))) @ a / np.sqrt(width)

    return Dataset(x, teacher(x), xt if P_test else None, teacher(xt) if P_test else None,
                   meta={"task": "teacher_network", "key": _key_data(key), "width": width, "activation": act.name,
                         "activation_params": [float(p) for p in act.params]})


def _fraction(name, value):
    v = checks.real(name, value)
    if not (0 < v <= 1):
        raise InputError(f"{name} must be in (0, 1], got {v}")
    return v


@_same_with_or_without_x64
def modular_addition(p: int = 23, train_fraction: float = 0.5, *, key=None) -> Dataset:
    """(n, m) -> (n + m) mod p (Gromov 2023; Power et al. 2022), C = p outputs.

    Inputs are the one-hot pair [e_n, e_m] in R^{2p} scaled by sqrt(p), so that the
    input kernel |x|^2 / D is 1 as for Gaussian inputs; targets are one-hot in R^p.
    A random `train_fraction` of the p^2 pairs is the training set, the rest the
    test set (empty when the fraction is 1). meta["pairs"] lists (n, m) per point,
    train first.
    """
    p = _size("p", p, 2)
    frac = _fraction("train_fraction", train_fraction)
    # p^2 points of 2p inputs and p targets (float64), built, sliced and copied into the Dataset
    need = 3 * 8.0 * p * p * (2 * p + p)
    if need > MAX_DATA_GB * 2 ** 30:
        raise InputError(f"p: {p} needs p^2 = {p * p} one-hot pairs of 3p = {3 * p} numbers, about "
                         f"{need / 2 ** 30:.0f} GiB to build (> {MAX_DATA_GB:g} GiB); use a smaller p")
    key = as_key(key)
    n_train = max(1, int(round(frac * p * p)))
    if frac < 1 and n_train >= p * p:
        raise InputError(f"train_fraction: {frac:g} of the p^2 = {p * p} pairs rounds to all of them, which "
                         "leaves no test pair; use a smaller fraction or a larger p (1.0 asks for no test set)")
    pairs = np.array([(a, b) for a in range(p) for b in range(p)], dtype=np.int64)
    order = np.asarray(jax.random.permutation(key, p * p))
    pairs = pairs[order]
    eye = np.eye(p)
    x = np.concatenate([eye[pairs[:, 0]], eye[pairs[:, 1]]], axis=1) * math.sqrt(p)
    y = eye[(pairs[:, 0] + pairs[:, 1]) % p]
    tr, te = slice(0, n_train), slice(n_train, None)
    has_test = n_train < p * p
    return Dataset(x[tr], y[tr], x[te] if has_test else None, y[te] if has_test else None,
                   meta={"task": "modular_addition", "key": _key_data(key), "p": p, "train_fraction": frac,
                         "pairs": pairs.tolist()})


@_same_with_or_without_x64
def sparse_parity(n: int = 20, k: int = 3, P: int = 1000, P_test: int = 1000, *, key=None) -> Dataset:
    """(n, k) sparse parity (Barak et al. 2022): x uniform on {-1, 1}^n, y = prod of k
    hidden coordinates (meta["support"], drawn at random).

    Training points are uniform on the cube; test points uniform on the points that are not
    training points (a test point seen in training measures memory, not generalization: with
    n = 10 and P = P_test = 1000, independent draws shared 63% of the test set). A test point
    that falls on a training point is drawn again (fold_in(key, 2 + round)); where that does
    not settle it, from the enumerated rest of the cube (n <= 24). Without such collisions the
    points are the independent draws. Refused when the training set covers the cube.
    """
    n, k, P, P_test = _size("n", n), _size("k", k), _size("P", P), _size("P_test", P_test, 0)
    if k > n:
        raise InputError(f"k must be <= n, got k={k} > n={n}")
    _check_size(n, P, P_test)
    key = as_key(key)
    support = np.sort(np.asarray(jax.random.permutation(jax.random.fold_in(key, 6), n))[:k])

    def draw(i, m):
        bits = jax.random.bernoulli(jax.random.fold_in(key, i), 0.5, (m, n))
        return np.where(np.asarray(bits), 1.0, -1.0)

    x = draw(0, P)
    xt = _outside(draw(1, P_test), x, key, draw) if P_test else draw(1, 0)
    y, yt = np.prod(x[:, support], axis=1), np.prod(xt[:, support], axis=1)
    return Dataset(x, y, xt if P_test else None, yt if P_test else None,
                   meta={"task": "sparse_parity", "key": _key_data(key), "n": n, "k": k, "support": support.tolist()})


_REDRAW_ROUNDS = 16


def _redraw_key(i: int) -> int:
    """The fold_in index of redraw round i: 2, 3, ..., skipping 6 (the support's draw)."""
    return 2 + i + (2 + i >= 6)


def _outside(xt, x, key, draw):
    """Test points of the +-1 cube that are not training points: the rows of xt that are get
    drawn again, up to _REDRAW_ROUNDS rounds, then (n <= 24) uniformly from the enumerated
    rest of the cube; InputError when no point is left."""
    n = x.shape[1]
    seen = set(map(bytes, np.packbits(x > 0, axis=1)))
    if n <= 60 and len(seen) >= 2 ** n:
        raise InputError(f"P_test: the {x.shape[0]} training points cover all 2^{n} = {2 ** n} points of the "
                         "cube; no test point is left (use fewer training points or more bits n)")
    xt = xt.copy()
    for i in range(_REDRAW_ROUNDS):
        bad = np.flatnonzero([bytes(row) in seen for row in np.packbits(xt > 0, axis=1)])
        if not bad.size:
            return xt
        xt[bad] = draw(_redraw_key(i), xt.shape[0])[:bad.size]       # (one shape: compiled once)
    if n > 24:       # acceptance >= 1 - P / 2^25 per draw: 16 rounds leave none in practice
        raise InputError(f"P_test: test points kept falling on training points after {_REDRAW_ROUNDS} "
                         f"redraws (P = {x.shape[0]} of 2^{n})")
    codes = np.arange(2 ** n, dtype=np.int64)
    rest = codes[~np.isin(codes, (x > 0) @ (1 << np.arange(n, dtype=np.int64)))]
    pick = rest[np.asarray(jax.random.randint(jax.random.fold_in(key, _redraw_key(_REDRAW_ROUNDS)), (xt.shape[0],), 0,
                                              rest.size))[:bad.size]]
    xt[bad] = np.where((pick[:, None] >> np.arange(n)) & 1, 1.0, -1.0)
    return xt


@_same_with_or_without_x64
def terrain(P: int = 256, P_test: int = 512, *, key=None) -> Dataset:
    """A real data set: elevation of a real landscape (the digital elevation model of the
    Jacksboro fault, Tennessee, that matplotlib ships as sample data) against position.

    Inputs x = (east, north) scaled to unit variance (D = 2); target the elevation minus its
    mean, divided by its standard deviation. P + P_test distinct grid points drawn without
    replacement from the 344 x 403 map by `key`.
    """
    P, P_test = _size("P", P), _size("P_test", P_test, 0)
    key = as_key(key)
    from matplotlib import cbook

    dem = cbook.get_sample_data("jacksboro_fault_dem.npz")
    z = np.asarray(dem["elevation"], np.float64)
    ny, nx = z.shape
    if P + P_test > z.size:
        raise InputError(f"P + P_test must be <= {z.size} (the map's points), got {P + P_test}")
    idx = np.asarray(jax.random.choice(key, z.size, (P + P_test,), replace=False))
    iy, ix = np.divmod(idx, nx)
    x = np.stack([ix / (nx - 1), iy / (ny - 1)], axis=1)
    x = (x - 0.5) * np.sqrt(12.0)                        # uniform on the map: unit variance
    y = (z[iy, ix] - z.mean()) / z.std()
    return Dataset(x[:P], y[:P], x[P:] if P_test else None, y[P:] if P_test else None,
                   meta={"task": "terrain", "key": _key_data(key), "source": "matplotlib sample data jacksboro_fault_dem.npz"})


def load_npz(path) -> Dataset:
    """A Dataset from an .npz with x_train, y_train and optionally x_test, y_test (path, or the stem
    `Dataset.save` was given: stem.npz)."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise InputError(f"path must be a file name, got {path!r}") from None
    if not os.path.exists(path) and not path.endswith(".npz") and os.path.isfile(path + ".npz"):
        path += ".npz"                 # as Dataset.save(stem) wrote it (numpy adds the suffix)
    if not os.path.exists(path):
        raise InputError(f"data file not found: {path}")
    if not os.path.isfile(path):
        raise InputError(f"{path}: not a file (an .npz of x_train, y_train[, x_test, y_test])")
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror})") from None
    if not (head.startswith(b"PK") or head.startswith(b"\x93NUMPY")):
        # (numpy reads any other file as a pickle and its error speaks of allow_pickle)
        raise InputError(f"{path}: not an .npz file (a text or other file); write one with "
                         "dmft.Dataset(x_train, y_train, x_test, y_test).save(path) or "
                         "numpy.savez(path, x_train=..., y_train=...)")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise InputError(f"{path}: holds one array, not an .npz of x_train, y_train[, x_test, y_test]")
        with z:
            missing = [k for k in ("x_train", "y_train") if k not in z.files]
            if missing:
                raise InputError(f"{path}: missing array(s) {missing}; found {z.files}")
            unknown = sorted(set(z.files) - {"x_train", "y_train", "x_test", "y_test"})
            if unknown:
                raise InputError(f"{path}: unknown array(s) {unknown}; the file holds x_train, y_train and "
                                 "optionally x_test, y_test, nothing else")
            arrays = {}
            for k in z.files:
                try:
                    arrays[k] = z[k]
                except ValueError as err:
                    if "allow_pickle" not in str(err):
                        raise
                    # (numpy's text names no array and speaks of a setting that stays off here)
                    raise InputError(f"{path}: {k} is an object array (ragged rows, Python objects), which "
                                     "is not read (no pickles); save it as a numeric array, "
                                     f"np.asarray({k}, dtype=float)") from None
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged zip, a pickle, not an npz at all
        raise InputError(f"{path}: not a readable .npz of numeric arrays ({type(err).__name__}: {err})") from None
    try:
        data = Dataset(arrays["x_train"], arrays["y_train"], arrays.get("x_test"), arrays.get("y_test"),
                       meta={"task": "npz", "path": os.path.basename(path)})
    except InputError as err:           # ("x_train: contains 1 NaN" named no file)
        raise InputError(f"{path}: {err}") from None
    note = scale_note(data)
    if note:
        warn(f"{os.path.basename(path)}: {note}")
    return data


# the data scales the theory's units take to be of order one (docs/conventions.md): the inputs'
# variance |x|^2 / D and the targets' RMS; outside this range `scale_note` says so
SCALE_RANGE = (1e-2, 1e2)


def scale_note(data: Dataset) -> str | None:
    """A sentence where `data` is far from the scale the theory's units take (docs/conventions.md):
    inputs with |x|^2 / D of order one (the preactivations h = w . x / sqrt(D) ~ N(0, |x|^2 / D))
    and targets of order one (gamma0 = O(1) is feature learning for such targets); else None.
    Outside `SCALE_RANGE` (the training inputs' mean |x|^2 / D, the training targets' RMS) the
    numbers are still computed in those units, but eta0, gamma0 and the times do not mean what
    they mean for standardized data: inputs scaled by 1e3 made the lazy step unstable at the
    default eta0 (eta0 lambda_max / P = 1e5), by 1e-3 left the loss where it started (every check
    passed on nothing learned), targets scaled by 1e3 overflowed the DMFT at gamma0 = 0.1.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(20, 4))
        >>> scale_note(Dataset(x, x[:, 0])) is None, scale_note(Dataset(1e3 * x, x[:, 0]))[:23]
        (True, 'x_train: mean |x|^2 / D')
    """
    low, high = SCALE_RANGE
    x = np.asarray(data.x_train, np.float64)
    var = float(np.mean(np.einsum("pi,pi->p", x, x))) / data.D
    rms = float(np.sqrt(np.mean(np.square(np.asarray(data.y_train, np.float64)))))
    notes = []
    if not low <= var <= high:
        notes.append(f"x_train: mean |x|^2 / D = {var:.3g}, outside [{low:g}, {high:g}]: the theory's units take "
                     "|x|^2 / D of order one (preactivations w . x / sqrt(D) ~ N(0, |x|^2 / D)); standardize each "
                     "feature (subtract its mean over x_train, divide by its standard deviation; the same "
                     "numbers for x_test)")
    if rms == 0.0:
        notes.append("y_train: every target is 0: there is nothing to learn")
    elif not low <= rms <= high:
        notes.append(f"y_train: RMS {rms:.3g}, outside [{low:g}, {high:g}]: the theory's units take targets of "
                     "order one (gamma0 measures richness against them); rescale y_train and y_test together")
    if not notes:
        return None
    return "; ".join(notes) + (". Computed as given, eta0, gamma0 and the times do not mean what they mean for "
                               "standardized data (an unstable step, a saturated activation, nothing learned)")


def spectrum(r: int, kind: str = "power", *, top: float = 1.0, exponent: float = 1.0,
             bottom: float | None = None) -> np.ndarray:
    """Decaying singular values for a linear teacher, largest first.

    kind="power": s_i = top * i^-exponent (i = 1..r); kind="linear": evenly spaced from
    top down to bottom (default top / r).

    Example:
        >>> spectrum(3, "power", top=3.0).tolist(), spectrum(3, "linear", top=3.0).tolist()
        ([3.0, 1.5, 1.0], [3.0, 2.0, 1.0])
    """
    # at most MAX_DATA_GB of float64 (2^40 raised a MemoryError, 2^70 numpy's own ValueError)
    r = checks.integer("r", r, minimum=1, maximum=int(MAX_DATA_GB * 2 ** 30) // 8)
    top = checks.real("top", top, positive=True)
    if kind == "power":
        if bottom is not None:
            raise InputError("bottom: only kind='linear' reads it (kind='power' decays as i^-exponent)")
        return top * np.arange(1, r + 1, dtype=np.float64) ** -checks.real("exponent", exponent,
                                                                             positive=True)
    if kind == "linear":
        low = top / r if bottom is None else checks.real("bottom", bottom, positive=True)
        if low > top:
            raise InputError(f"bottom ({low}) must be <= top ({top})")
        return np.linspace(top, low, r)
    raise InputError(f"kind must be 'power' or 'linear', got {kind!r}")


@_same_with_or_without_x64
def linear_teacher(d_in: int = 4, d_out: int = 4, singular_values=(3.0, 2.0, 1.0, 0.5), P=None,
                   label_noise: float = 0.0, whiten: bool = True, *, key=None) -> LinearTeacher:
    """A linear teacher y = M x + sigma xi, M = U diag(s) V^T with random orthonormal U, V
    (docs/conventions.md, "Deep linear networks").

    Args:
        d_in, d_out: input and output dimensions.
        singular_values: the r mode strengths s_i > 0 (a list, or `spectrum(...)`); modes
            keep this order everywhere (`run.modes[..., i]` is the mode of s_i). Each within
            [LinearTeacher.S_MIN, LinearTeacher.S_MAX] (~7.5e-151 to ~1.3e150).
        P: None for online data (fresh x ~ N(0, I) and noise at every step); otherwise P
            fixed points with labels y = M x + sigma xi drawn once.
        label_noise: sigma >= 0.
        whiten: make the P points exactly white, X^T X / P = I (needs P >= d_in).
        key: `jax.random.key` or int seed.

    Example:
        >>> t = linear_teacher(4, 3, [2.0, 1.0], P=8, key=0)
        >>> t.rank, t.x_train.shape, bool(abs(t.x_train.T @ t.x_train / 8 - np.eye(4)).max() < 1e-12)
        (2, (8, 4), True)
    """
    d_in, d_out = _size("d_in", d_in), _size("d_out", d_out)
    try:
        raw = np.asarray(singular_values, dtype=object if isinstance(singular_values, str) else None)
    except (TypeError, ValueError):
        raise InputError(f"singular_values: expected numbers, got {singular_values!r:.60}") from None
    text = raw.dtype.kind in "US" or (raw.dtype.kind == "O" and any(isinstance(v, (str, bytes)) for v in raw.flat))
    real = raw.dtype.kind in "fiu" or (raw.dtype.kind == "O" and all(
        isinstance(v, numbers.Number) and not isinstance(v, (bool, np.bool_, complex, np.complexfloating))
        for v in raw.flat))
    if not real:                          # (text read as numbers and booleans as 1: "3" gave s = [3.])
        raise InputError(f"singular_values: expected real numbers, got {singular_values!r:.60} "
                         f"({'text' if text else f'dtype {raw.dtype}'})")
    if raw.ndim > 1:                      # ([[1., 2.]] was flattened without a word)
        raise InputError(f"singular_values: expected a flat list of numbers, got shape {raw.shape}")
    try:
        s = np.asarray(singular_values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"singular_values: expected numbers, got {singular_values!r}") from None
    if s.size == 0:
        raise InputError("singular_values: give at least one")
    if not np.all(np.isfinite(s)):
        raise InputError(f"singular_values: must be finite, got {s.tolist()}")
    if np.any(s <= 0):
        raise InputError(f"singular_values: must be > 0, got {s.tolist()}")
    LinearTeacher.check_singular_values(s)              # no subnormals; squares and 1/s^2 finite
    r = s.size
    if r > min(d_in, d_out):
        raise InputError(f"singular_values: rank {r} exceeds min(d_in, d_out) = {min(d_in, d_out)}")
    sigma = _noise_level("label_noise", label_noise)
    whiten = checks.flag("whiten", whiten)
    _check_size(r, d_in + d_out, 0, 0, "d_in + d_out")       # U and V
    key = as_key(key)

    def orthonormal(i, n):
        g = np.asarray(jax.random.normal(jax.random.fold_in(key, i), (n, r)), np.float64)
        q, rr = np.linalg.qr(g)
        return q * np.sign(np.diag(rr))[None, :]

    U, V = orthonormal(10, d_out), orthonormal(11, d_in)
    meta = {"task": "linear_teacher", "key": _key_data(key), "whiten": whiten}
    if P is None:
        return LinearTeacher(U, V, s, sigma, meta=meta)
    P = _size("P", P)
    if whiten and P < d_in:
        raise InputError(f"P: {P} points cannot be whitened in d_in = {d_in} dimensions (need P >= d_in)")
    _check_size(d_in + d_out, P, 0)
    if whiten:
        _check_size(d_in, d_in, 0, 0, "d_in")                # X^T X and its eigenvectors
    x = np.asarray(jax.random.normal(jax.random.fold_in(key, 12), (P, d_in)), np.float64)
    if whiten:      # X <- X (X^T X / P)^-1/2, so that X^T X / P = I exactly
        lam, vec = np.linalg.eigh(x.T @ x / P)
        x = x @ (vec / np.sqrt(lam)) @ vec.T
    xi = np.asarray(jax.random.normal(jax.random.fold_in(key, 13), (P, d_out)), np.float64)
    y = x @ ((U * s) @ V.T).T + sigma * xi
    return LinearTeacher(U, V, s, sigma, x, y, meta=meta)
