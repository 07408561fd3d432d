"""Theory against simulation: per-time errors and width scaling.

`compare(solution, run)` puts a `dmft.Solution` and a `networks.Run` on the same
time base and returns errors per time and summary numbers; `width_scaling(solution,
runs)` fits error against width on log-log axes.

Prediction errors are measured relative to the RMS of the test targets (so they
are defined at t = 0, where the centered predictions vanish):

    per_seed_error(t) = sqrt(mean_{seeds, points} (f_seed - f_theory)^2) / rms(y)
    mean_error(t)     = sqrt(mean_points (mean_seeds f - f_theory)^2) / rms(y)

and the ensemble mean's prediction error is measured against its own noise (`prediction`):

    q(t) = sum_points (mean_seeds f - f_theory)^2 / (tr C / S + sum_points se_theory^2)

with C the seeds' covariance over the points: about 1 for networks that agree with the theory
(0.98-1.00 over 96 seeds of teacher.toml at N = 1024, in ensembles of 4-32), where a
prediction bias that leaves the loss unchanged (orthogonal to the residual) raises it. It is
judged as F(k, dof) distributed, with bounds that keep the tail from being too light:
- the numerator is a sum of chi-squares weighted by the eigenvalues of the noise's covariance,
  and its far tail decays as exp(-x / (2 lambda_max)): it is heaviest where the weights are
  most concentrated, which for weights at most lambda_max is k = tr / lambda_max equal ones
  (the DMFT's part taken as if of rank one: lambda_max <= lambda_max(C / S) + sum se^2). The
  Satterthwaite number tr^2 / ||.||_F^2, which matches two moments, made the tail too light:
  correct ensembles FAILed at 50-650x the nominal rate at 5 sigma where one direction dominates
  (a review; 2.2-3.7x at 3 sigma);
- dof, of the denominator: the fewer of the seeds' S - 1 and the DMFT's replicas - 1 (the
  seeds' alone for an exact theory). The denominator mixes two estimates in a share that is
  itself estimated from them; the fewer dof bound its law for every share (`min_dof`: proven for
  z, checked numerically for this F law at sigma >= 1). Welch-
  Satterthwaite's dof from the estimated share, as here before, made the law too light where
  the DMFT's few replicas underestimate its error: correct ensembles FAILed at up to 2.3x
  nominal at 3 sigma with 4 replicas (28x with 2) and at 1e3-6e4x at 5 sigma where the DMFT's
  error is 3x the seeds' mean's.
With an exact theory, against exact conditional tails (1-100 points, 2-128 seeds, 3-5 sigma, one
to three strong directions over a bulk, geometric, power-law and diagonal spectra; a review): at
most 0.84x nominal (0.95x for 2-5 points). The price of the fewer dof is power where the DMFT has
fewer replicas than the ensemble has seeds: the validate job's configurations give it as many.

Where the compared targets are all zero the errors are absolute (rms(y) taken as 1;
summary["absolute_errors"], summary["error_scale"] the divisor used), and a loss whose own
targets are all zero has NaN relative errors (summary["zero_targets"] for the judged loss).

Example:
    >>> import numpy as np
    >>> from validation.compare import scaling_fit
    >>> widths = np.array([64, 128, 256, 512])
    >>> fit = scaling_fit(widths, 2.0 / widths)
    >>> round(fit.slope, 6)
    -1.0
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np

import dmft
import networks
from dmft import checks
from dmft.errors import InputError

from .fitting import LogLogFit, loglog_fit, node_extrapolation
from .inputs import mapping

__all__ = ["Comparison", "compare", "width_scaling", "scaling_fit", "theory_se", "prediction_stats",
           "node_bias", "node_losses"]


@dataclasses.dataclass
class Comparison:
    """Errors of one network ensemble against the theory, per saved time.

    Attributes:
        width, seeds: the ensemble.
        t: (T,) times.
        train_loss, test_loss: dicts with "theory", "mean", "std" (across seeds),
            "rel_error" = |mean - theory| / theory (NaN where the targets are all zero), and
            "z" = (mean - theory) / se,
            se combining the seeds' standard error and the theory's own.
        per_seed_error, mean_error: (T,) prediction errors on the test (or train) points.
        prediction: the ensemble mean's prediction error against its noise, (T,) arrays: "q"
            (about 1 where the two agree), "k" and "dof" (its F law), "noise" (the expected
            RMS error of a mean that agrees, on mean_error's scale), "finite_seeds", and "points"
            and "split" ("test" or "train"), the predictions compared.
        summary: final-time and worst-over-time numbers.
    """

    width: int
    seeds: int
    t: np.ndarray
    train_loss: dict
    test_loss: dict | None
    per_seed_error: np.ndarray
    mean_error: np.ndarray
    summary: dict
    prediction: dict | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def min_dof(n, theory_var, theory_dof=None):
    """Degrees of freedom of a t (or F) statistic whose variance is estimated as the seeds' part
    (n seeds: n - 1) plus the theory's (`theory_var`, of `theory_dof`: replicas - 1; None or 0
    counts as 1, the fewest): the fewer of the two where the theory's part is above 0, else n - 1.

    It holds whatever the true share of the two parts, which is itself only estimated: the
    estimated variance is a weighted average of (n - 1) + theory_dof chi-squares of one dof,
    whose weights the fewer dof's equal ones majorize, so it is smaller in the convex order than
    that one estimate, and a t statistic's tail beyond b, 2 Phi(-b sqrt(v)) given the variance
    ratio v, is convex in v: the fewer dof's t tail is the heavier (the Behrens-Fisher bound of
    Mickey and Brown, 1966), for normal seeds and replicas. That proves it for z; for the
    prediction check's F(k, .) law the tail is convex in v only where b v >= 1 - 2 / k, so there
    it is checked numerically: at most nominal for k up to 50, 2-64 seeds and replicas, any share,
    at sigma 1-5 (a review's quadrature; the estimated k included, by simulation); below sigma 1
    with k ~ 200 up to 1.15x. Exact tails in tests/test_validation.py (k = 1 and 5, 3 and 5
    sigma). Where the theory has fewer replicas than the ensemble has seeds this costs power."""
    n = np.asarray(n, float)
    own = float(theory_dof) if theory_dof else 1.0
    return np.where(np.asarray(theory_var, float) > 0, np.minimum(n - 1, own), n - 1)


# Two computations of the same numbers differ by their rounding, which z and q must not read as a
# disagreement where nothing else varies: networks that are exact at any width (fixed readouts and a
# linear activation: every unit takes the same step) against the exact closure agreed to 4.8e-15
# relative (22 ulp) with a seed spread of 5e-17, and FAILed z (8.6 against 7.1) and q (55 against
# 14). Their standard errors hold ROUND_ULPS ulp of the coarser arithmetic (of the values; for the
# predictions of the larger of the value and the targets' RMS), 9e-13 relative in float64, and
# MIXED_ULPS of float32 where the theory took float32 products (the Kumar closure: 5.3e-8 from
# float64 after 1e5 steps): far below any finite-width effect or sampling error
ROUND_ULPS = 4096
MIXED_ULPS = 64


def rounding_share(solution, run) -> float:
    """The relative rounding `compare` allows between `solution` and `run` (ROUND_ULPS, MIXED_ULPS)."""
    eps = max(np.finfo(np.result_type(np.asarray(a).dtype, np.float32)).eps
              for a in (solution.train_loss, run.train_loss))
    mixed = (solution.info or {}).get("precision") == "mixed"
    return float(max(ROUND_ULPS * eps, MIXED_ULPS * np.finfo(np.float32).eps if mixed else 0.0))


def _loss_stats(theory, per_seed, theory_se, relative=True, theory_dof=None, rounding=0.0):
    """Seed mean, spread and z against the theory at each time, over the seeds still finite
    there (a diverged seed is NaN from its divergence on); with fewer than two finite seeds the
    spread, se and z are NaN (nothing to judge the seeds' scatter by), never 0. relative=False
    (all-zero targets: the theory's loss is zero to rounding) makes rel_error NaN. Where anything
    varies, se holds `rounding` of the larger of |theory| and |mean| too (`rounding_share`).

    "dof": z's degrees of freedom (`min_dof`: the fewer of the seeds' n - 1 and the theory's
    `theory_dof`, replicas - 1; n - 1 for an exact theory). z is a t statistic: with 2 finite
    seeds |z| > 5 came out in 13% of correct ensembles (`validation.verdicts.z_bound`)."""
    n = np.sum(np.isfinite(per_seed), axis=0)
    finite = np.where(np.isfinite(per_seed), per_seed, 0.0)
    th_var = (theory_se if theory_se is not None else 0.0) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, finite.sum(axis=0) / n, np.nan)
        dev = np.where(np.isfinite(per_seed), per_seed - mean, 0.0)
        std = np.where(n > 1, np.sqrt((dev ** 2).sum(axis=0) / (n - 1)), np.nan)
        se = np.sqrt(std ** 2 / n + th_var)     # (0 where nothing varies: not judged, dof NaN below)
        se = np.where(se > 0, np.sqrt(se ** 2 + (rounding * np.fmax(np.abs(theory), np.abs(mean))) ** 2), se)
        rel = np.abs(mean - theory) / np.abs(theory) if relative else np.full(np.shape(mean), np.nan)
        z = np.where(se > 0, (mean - theory) / se, np.where(mean == theory, 0.0, np.nan))
        dof = min_dof(n, th_var, theory_dof)
    return {"theory": theory, "mean": mean, "std": std, "se": se, "rel_error": rel, "z": z,
            "dof": np.where(np.isfinite(se) & (se > 0), dof, np.nan), "finite_seeds": n}


def theory_se(solution, name):
    """The theory's standard error of record `name`: its replicas' (solution.error), None for a
    solve without sampling error (closure, lazy, a quadrature rule), NaN for a sampled solve of one
    replica: it has a sampling error that nothing estimates (taken as 0 it inflated z)."""
    err = solution.error or {}
    if name in err:
        return np.asarray(err[name])
    info = solution.info or {}
    if info.get("error_dof") == 0 and info.get("sampler") != "quadrature":
        return np.nan
    return None


def compare(solution, run) -> Comparison:
    """Errors of a network ensemble (`networks.Run`) against a `dmft.Solution`.

    Raises:
        InputError (a ValueError): solution is not a `dmft.Solution` or run not a `networks.Run`,
        they are not on the same time base or data shapes, they can be shown to come from
        different data (their recorded data differ, or both predict 0 at t = 0 and their losses
        there, the targets' mean squares, differ), they record different models (activation,
        its parameters, gamma0, readout, centering) or weight decays, or a DMFT conditioned on
        one minibatch sequence against networks trained on another (or each seed on its own:
        `dmft.sgd_mean` is their theory).
    """
    _check_types(solution, run)
    if solution.t.shape != run.t.shape or not np.allclose(solution.t, run.t):
        def base(t):
            t = np.asarray(t)
            return f"{t.size} saves at t = {np.array2string(t[:3], separator=', ')[1:-1]}" + (
                f", ..., {t[-1]:g}" if t.size > 3 else "")
        raise InputError(f"compare: solution and run have different time bases (theory: {base(solution.t)}; "
                         f"run: {base(run.t)}); use the same eta0, steps, save_every")
    use_test = solution.f_test is not None and run.f_test is not None
    f_th = solution.f_test if use_test else solution.f_train
    f_net = run.f_test if use_test else run.f_train
    if f_net.shape[1:] != f_th.shape:
        raise InputError(f"compare: prediction shapes differ: theory {f_th.shape}, run {f_net.shape[1:]}")
    _check_same_data(solution, run)
    _check_same_model(solution, run)
    _check_same_batches(solution, run)
    th_dof = (solution.info or {}).get("error_dof")
    rounding = rounding_share(solution, run)
    train = _loss_stats(solution.train_loss, run.train_loss, theory_se(solution, "train_loss"),
                        not zero_targets(solution, "train"), th_dof, rounding)
    test = None
    if solution.test_loss is not None and run.test_loss is not None:
        test = _loss_stats(solution.test_loss, run.test_loss, theory_se(solution, "test_loss"),
                           not zero_targets(solution, "test"), th_dof, rounding)
    point_axes = tuple(range(2, f_net.ndim))
    # scale: RMS of the targets the predictions are compared on
    scale = _target_rms(solution, use_test)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # a time at which every seed diverged
        per_seed = np.sqrt(np.nanmean((f_net - f_th[None]) ** 2, axis=(0,) + point_axes)) / scale
        mean_err = np.sqrt(np.mean((np.nanmean(f_net, axis=0) - f_th) ** 2,
                                   axis=tuple(range(1, f_th.ndim)))) / scale
    main = test if test is not None else train
    pred = {**prediction_stats(f_net, f_th, theory_se(solution, "f_test" if use_test else "f_train"), th_dof, scale,
                               rounding),
            "split": "test" if use_test else "train"}
    summary = {
        "final_theory_loss": float(main["theory"][-1]), "final_network_loss": float(main["mean"][-1]),
        "final_network_std": float(main["std"][-1]), "final_rel_error": float(main["rel_error"][-1]),
        "final_z": float(main["z"][-1]), "final_se": float(main["se"][-1]),
        "max_abs_z": _nanmax(np.abs(main["z"][1:])) if main["z"].size > 1 else float("nan"),
        "final_finite_seeds": int(main["finite_seeds"][-1]),
        "final_theory_se": _final(theory_se(solution, "test_loss" if test is not None else "train_loss")),
        "max_rel_error": _nanmax(main["rel_error"][1:]) if main["rel_error"].size > 1 else 0.0,
        "final_per_seed_error": float(per_seed[-1]), "final_mean_error": float(mean_err[-1]),
        "time_mean_per_seed_error": float(np.mean(per_seed[1:])) if per_seed.size > 1 else 0.0,
        "time_mean_mean_error": float(np.mean(mean_err[1:])) if mean_err.size > 1 else 0.0,
        "loss": "test" if test is not None else "train",
        "diverged_seeds": len(run.info.get("diverged", {})),
        "error_scale": float(scale), "absolute_errors": _zero_scale(solution, use_test),
        "zero_targets": zero_targets(solution, "test" if test is not None else "train"),
        **_worst(main, solution.t, int(run.info["seeds"])),
    }
    return Comparison(width=int(run.info["width"]), seeds=int(run.info["seeds"]), t=solution.t,
                      train_loss=train, test_loss=test, per_seed_error=per_seed, mean_error=mean_err,
                      summary=summary, prediction=pred)


def prediction_stats(f_net, f_theory, theory_se=None, theory_dof=None, scale=1.0, rounding=0.0) -> dict:
    """The ensemble mean's prediction error against its noise at each saved time (module
    docstring): "q", "k" and "dof" (the F law it is judged by), "noise" (sqrt of q's denominator
    over the points, / scale) and "finite_seeds", each (T,), and "points" (how many predictions
    a time has).

    Args:
        f_net: (S, T, ...) the seeds' predictions; a seed not finite at a time is left out there.
        f_theory: (T, ...) the theory's; theory_se its standard error per point (None: exact;
            NaN: one replica, unknown), of `theory_dof` degrees of freedom (replicas - 1; None
            with a theory_se: 1, the fewest).
        rounding: the relative rounding allowed each point, of the larger of its theory value and
            `scale` (`rounding_share`), added to q's denominator (not to the theory's
            degrees of freedom).

    NaN where fewer than two seeds are finite, the theory's error is unknown, the seeds' spread
    overflows, or nothing varies (q = 0 there if the predictions are equal)."""
    f_net, f_theory = np.asarray(f_net, float), np.asarray(f_theory, float)
    S, T = f_net.shape[:2]
    x = f_net.reshape(S, T, -1)
    th = f_theory.reshape(T, -1)
    th_var = None if theory_se is None else np.broadcast_to(       # (a scalar NaN: one replica)
        np.asarray(theory_se, float), f_theory.shape).reshape(T, -1) ** 2
    out = {k: np.full(T, np.nan) for k in ("q", "k", "dof", "noise")}
    out["finite_seeds"] = np.zeros(T, int)
    out["points"] = int(th.shape[1])
    for t in range(T):
        rows = x[:, t][np.all(np.isfinite(x[:, t]), axis=1)]
        n = rows.shape[0]
        out["finite_seeds"][t] = n
        if n < 2 or not np.all(np.isfinite(th[t])):
            continue
        d = rows.mean(axis=0) - th[t]
        dev = rows - rows.mean(axis=0)
        with np.errstate(over="ignore", invalid="ignore"):
            # the seeds' covariance through the smaller of its Gram (n, n) and the points' (d, d): the
            # same trace and nonzero eigenvalues (2000 seeds of 40 points: eigvalsh 0.46 s -> 0.1 ms)
            gram = dev @ dev.T if n <= dev.shape[1] else dev.T @ dev
        tr_a = float(np.trace(gram)) / ((n - 1) * n)    # tr C / n
        tr_b = 0.0 if th_var is None else float(np.sum(th_var[t]))
        # (rounding where anything varies; not the theory's dof)
        tr_r = float(np.sum((rounding * np.fmax(np.abs(th[t]), scale)) ** 2)) if tr_a + tr_b > 0 else 0.0
        total = tr_a + tr_b + tr_r
        if not (np.isfinite(total) and np.all(np.isfinite(gram))):     # (seeds near overflow: eigvalsh raised)
            continue
        top_a = float(np.max(np.linalg.eigvalsh(gram))) / ((n - 1) * n)    # lambda_max(C / n)
        if total == 0:
            out["q"][t] = 0.0 if np.all(d == 0) else np.nan
            continue
        out["q"][t] = float(d @ d) / total
        out["k"][t] = total / max(top_a + tr_b + tr_r, total / d.size)   # lambda_max(B) <= tr B; k <= points
        out["dof"][t] = min_dof(n, tr_b, theory_dof)
        out["noise"][t] = np.sqrt(total / d.size) / scale
    return out


# the agreement check's relative error is taken against the larger of the theory's loss and this
# share of its initial loss: on a realizable task both losses fall to rounding (1.1e-27 against
# 8.5e-26 from 0.744: a relative error of 74 between two zeros FAILed correct networks)
AGREEMENT_FLOOR = 1e-6


def _worst(stats: dict, t, seeds: int) -> dict:
    """The judged loss's worst saved time t > 0 (t = 0 is the data's own mean square for centered
    networks, equal to rounding, where z read 2.65 from 1e-17 differences): "worst_rel_error" and
    "worst_rel_t", the relative error |mean - theory| against the larger of |theory| and
    AGREEMENT_FLOOR of the theory's initial loss. A time at which a seed is not finite (diverged,
    while the theory is judged) reads inf: the ensemble's mean over all its seeds is not finite
    there ("first_diverged_t"); one at
    which the theory is not finite makes it NaN ("theory_not_finite_t"). A 10%
    error in the networks' time units read a final relative error of 0.002 (the losses meet at the
    end) and 0.10-0.12 on the way."""
    t = np.asarray(t, float)
    later = np.arange(t.size) >= 1
    gone = later & ~np.isfinite(stats["theory"])
    lost = later & (stats["finite_seeds"] < seeds) & ~gone
    theory = np.asarray(stats["theory"], float)
    floor = AGREEMENT_FLOOR * abs(float(theory[0])) if theory.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        floored = np.where(np.abs(theory) < floor, np.abs(stats["mean"] - theory) / floor, stats["rel_error"])
    rel = np.where(lost, np.inf, floored)
    out = {"worst_rel_error": float("nan"), "worst_rel_t": float("nan"),
           "first_diverged_t": float(t[lost][0]) if lost.any() else None,
           "theory_not_finite_t": float(t[gone][0]) if gone.any() else None}
    if gone.any():          # (a judged time without a theory: NaN, a FAIL, not the finite times' worst)
        return {**out, "worst_rel_t": float(t[gone][0])}
    if later.any() and np.any(~np.isnan(rel[later])):
        i = int(np.nanargmax(np.where(later, rel, np.nan)))
        out.update(worst_rel_error=float(rel[i]), worst_rel_t=float(t[i]))
    return out


def _check_types(solution, run, where: str = "compare") -> None:
    """InputError unless solution is a dmft.Solution and run a networks.Run (saying when the two
    are swapped)."""
    swapped = isinstance(solution, networks.Run) and isinstance(run, dmft.Solution)
    hint = " (solution and run are swapped: call compare(solution, run))" if swapped else ""
    if not isinstance(solution, dmft.Solution):
        raise InputError(f"{where}: solution must be a dmft.Solution (from dmft.solve), got "
                         f"{type(solution).__name__}{hint}")
    if not isinstance(run, networks.Run):
        raise InputError(f"{where}: run must be a networks.Run (from networks.train), got {type(run).__name__}")


# what a result records of its data (Dataset.describe(), in info["config"]["data"]) that two
# results on the same data share
_DATA_FIELDS = ("P", "P_test", "D", "C", "has_test_targets", "sha256")


def _recorded(result, part: str = "data"):
    """The description of its data (or another `part` of info["config"]: "model", "solve",
    "train") a result records (JSON-normalized), or None."""
    info = result.info if isinstance(result.info, dict) else {}
    config = info.get("config")
    data = config.get(part) if isinstance(config, dict) else None
    if not isinstance(data, dict):
        return None
    try:
        return json.loads(json.dumps(data, sort_keys=True, default=str))
    except (TypeError, ValueError):
        return None


def _check_same_batches(solution, run) -> None:
    """InputError where the theory is conditioned on one minibatch sequence (`dmft.solve(...,
    batch_key=)`, recorded) and the networks trained under SGD on another, or each seed on its own:
    their mean approaches the DMFT of their own sequence, or the average over sequences
    (`dmft.sgd_mean`), and the difference is batch noise (z = -96 in a helper's audit). Networks
    trained full batch, a theory that records no sequence (full batch, `sgd_mean`, or older
    files), or a run that records none are compared."""
    seq = (getattr(solution, "info", None) or {}).get("batch_key")
    info = run.info if isinstance(run.info, dict) else {}
    if seq is None or info.get("batch_size") is None:
        return
    if info.get("shared_batches") is False:
        raise InputError("compare: the DMFT is conditioned on one minibatch sequence, and each network seed drew "
                         "its own: their mean approaches the average over sequences; compare with "
                         "dmft.sgd_mean(...), or train the networks with networks.train(..., batch_key=) on the "
                         "solve's sequence")
    own = (info.get("config") or {}).get("batch_key")
    if own is not None and [int(v) for v in np.ravel(own)] != [int(v) for v in np.ravel(seq)]:
        raise InputError(f"compare: the DMFT is conditioned on the minibatch sequence of batch_key {list(seq)}, the "
                         f"networks trained on that of {list(own)}: pass the same batch_key to both (or compare "
                         "with dmft.sgd_mean, the average over sequences)")


def _check_same_model(solution, run) -> None:
    """InputError when the two record different models (activation, its parameters, gamma0,
    readout, centering) or weight decays: the theory then says nothing about those networks
    (gamma0 = 5 relu networks read z = -51 against a gamma0 = 1 tanh solution). The step size,
    dynamics and batch size may differ (gradient flow against small steps, full batch against
    SGD: comparisons of interest); without recorded configurations nothing is refused."""
    a, b = _recorded(solution, "model"), _recorded(run, "model")
    diff = [] if a is None or b is None else [
        f"{k} {a[k]!r} (theory) vs {b[k]!r} (run)" for k in sorted(a) if k in b and a[k] != b[k]]
    sa, tb = _recorded(solution, "solve"), _recorded(run, "train")
    if sa is not None and tb is not None and "weight_decay" in sa and "weight_decay" in tb \
            and sa["weight_decay"] != tb["weight_decay"]:
        diff.append(f"weight_decay {sa['weight_decay']!r} (theory) vs {tb['weight_decay']!r} (run)")
    if diff:
        raise InputError("compare: solution and run are of different models or objectives ("
                         + "; ".join(diff) + "); train the networks with the solution's model and "
                         "weight decay (the model is in solution.info['config']['model'])")


def _check_same_data(solution, run) -> None:
    """InputError when the two can be shown to come from different data: their recorded data
    differ (sizes, or the task and key of two generated data sets), their training predictions
    differ in shape, or both predict exactly 0 at t = 0 (centered) and their losses there, the
    mean squares of the targets, differ. Nothing is refused on a guess: without such evidence
    (uncentered networks, no recorded data) the comparison goes ahead."""
    a, b = _recorded(solution), _recorded(run)
    if a is not None and b is not None:
        diff = [("the arrays' values (Dataset.digest " + f"{str(a[k])[:12]}... vs {str(b[k])[:12]}...)"
                 if k == "sha256" else f"{k} {a[k]!r} vs {b[k]!r}")
                for k in _DATA_FIELDS if k in a and k in b and a[k] != b[k]]
        ma, mb = a.get("meta"), b.get("meta")
        if all(isinstance(m, dict) and "task" in m and "key" in m for m in (ma, mb)) and ma != mb:
            keys = [k for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)]
            diff.append("meta " + ", ".join(k if len(repr((ma.get(k), mb.get(k)))) > 40
                                            else f"{k} {ma.get(k)!r} vs {mb.get(k)!r}" for k in keys))
        if diff:
            raise InputError("compare: solution and run were computed on different data (their recorded "
                             f"data differ: {'; '.join(diff)})")
    if solution.f_train is not None and run.f_train is not None \
            and np.shape(run.f_train)[2:] != np.shape(solution.f_train)[1:]:
        raise InputError(f"compare: solution and run were trained on different training data: training "
                         f"predictions of shape {np.shape(solution.f_train)[1:]} (theory) and "
                         f"{np.shape(run.f_train)[2:]} (run)")
    for split, f_th, f_net, l_th, l_net in (
            ("training", solution.f_train, run.f_train, solution.train_loss, run.train_loss),
            ("test", solution.f_test, run.f_test, solution.test_loss, run.test_loss)):
        if any(v is None for v in (f_th, f_net, l_th, l_net)):
            continue
        f_th, f_net = np.asarray(f_th), np.asarray(f_net)
        if f_th.ndim < 1 or f_net.ndim < 2 or not (np.all(f_th[0] == 0) and np.all(f_net[:, 0] == 0)):
            continue
        l0, n0 = float(np.asarray(l_th)[0]), np.asarray(l_net, dtype=float)[:, 0]
        n0 = n0[np.isfinite(n0)]
        if np.isfinite(l0) and n0.size and not np.allclose(n0, l0, rtol=1e-5, atol=1e-300):
            raise InputError(f"compare: solution and run were computed on different {split} data: both predict 0 "
                             f"at t = 0, where their {split} losses (the targets' mean square) differ: "
                             f"{l0:.6g} (theory) vs {float(n0[0]):.6g} (run)")


def _final(se) -> float:
    """The last time's value of a `theory_se` (0.0 for None: no sampling error)."""
    return 0.0 if se is None else float(np.asarray(se).ravel()[-1])


def _nanmax(a) -> float:
    a = np.asarray(a)
    return float(np.max(a[np.isfinite(a)])) if np.any(np.isfinite(a)) else float("nan")


def _target_rms(solution, use_test):
    """RMS of the targets the predictions are compared on (recorded by dmft.solve); 1 where they
    are all zero (`_zero_scale`: the errors are then absolute; the theory's predictions are zero
    to rounding there, and dividing by their scale read 1e16)."""
    if _zero_scale(solution, use_test):
        return 1.0
    rms = solution.info.get("target_rms", {}).get("test" if use_test else "train")
    if rms is None:   # no test targets: fall back to the theory's largest prediction scale
        f = solution.f_test if use_test else solution.f_train
        rms = float(np.sqrt(np.max(np.mean(f.reshape(f.shape[0], -1) ** 2, axis=1))))
    return rms or 1.0


def _zero_scale(solution, use_test) -> bool:
    """Whether the predictions compared (test or train) have no scale: their targets are all zero,
    or, without test targets, the training targets are (the theory then predicts zero everywhere)."""
    recorded = (getattr(solution, "info", None) or {}).get("target_rms", {})
    return zero_targets(solution, "test" if use_test and recorded.get("test") is not None else "train")


def zero_targets(solution, split: str) -> bool:
    """Whether the solve recorded the targets of `split` ("train" or "test") and they are all zero
    (no scale for relative errors of that split's loss)."""
    rms = (getattr(solution, "info", None) or {}).get("target_rms", {}).get(split)
    return rms is not None and rms == 0


def node_bias(solution, half, quarter, loss: str | None = None) -> dict:
    """The DMFT's node-count bias at every saved time, from solves of one problem at M, M / 2 and
    M / 4 nodes a replica (`validation.lazy_to_rich(node_check=True)`): of `loss` ("test" or
    "train"; None: the test loss, or the train loss where a solve has no test targets, the first
    of `node_losses`).

    The replicas' spread, all at M nodes, sees no bias that falls as 1 / M (the shipped
    modular-addition testbed's times were 15-60 of their errors apart at 512-2048 nodes a
    replica, docs/derivations.md section 2); the three solves measure it. Two kinds of solves:

    - paired (what lazy_to_rich solves): half and quarter are the solution's own nodes split
      (`dmft.solve(node_split=2 and 4)`: the same key, samples and replicas). The sampling noise the
      three share cancels in their differences, whose errors come from each replica's own losses
      (its parts' mean against it: the replicas are the independent units, replicas - 1 dof): the
      shift's error measured 5-10x smaller than from independent solves, and the extrapolation's
      as small as the solution's own. Their pooled losses hold the same S nodes, so they share the
      term by which the loss of the replicas' mean prediction exceeds that of its expectation, the
      mean variance of that prediction (about c / S); the extrapolation subtracts it, estimated by
      the mean square of the solution's prediction errors ("pooled_noise").
    - independent (`validation.sweep.node_check_key`, the grok job's):
      `validation.fitting.node_extrapolation`, the solves' errors in quadrature (their S halves
      with M, so the 1 / M extrapolation removes c / S too); dof the fewer of the solves'.

    z = shift / shift_se, with shift = x(M) - x(M / 2) (minus the bias at M, to first order), is a
    t statistic of `dof` degrees of freedom (as `min_dof` argues for z).

    Returns {"loss": "test" | "train", "paired": bool, "t", "full", "full_se", "half", "half_se",
    "quarter", "quarter_se", "shift", "shift_se", "curvature", "curvature_se", "extrapolated",
    "extrapolated_se", "pooled_noise" (0 for independent solves), "z", "dof"}: arrays over the saved
    times (NaN where unknown: the errors and z where the solves have one replica)."""
    sols = (solution, half, quarter)
    for name, s in zip(("solution", "half", "quarter"), sols):
        if not isinstance(s, dmft.Solution):
            raise InputError(f"{name} must be a dmft.Solution, got {type(s).__name__}")
        method = (s.info or {}).get("method")
        if method in ("lazy", "closure"):
            raise InputError(f"{name}: a {method} solution has no sampled nodes whose count could bias it "
                             "(node_bias compares forward or iterate solves)")
    if not (np.array_equal(solution.t, half.t) and np.array_equal(solution.t, quarter.t)):
        raise InputError("solution, half and quarter must share their saved times (one schedule), got "
                         f"{[len(s.t) for s in sols]} times")
    if loss not in (None, "test", "train"):
        raise InputError(f"loss must be 'test', 'train' or None, got {loss!r}")
    losses = node_losses(*sols)
    if loss == "test" and "test" not in losses:
        raise InputError("loss='test' but the solves have no test losses (no test targets)")
    paired = _check_node_counts(*sols)
    loss = loss or losses[0]
    vals, ses = [], []
    for s in sols:
        vals.append(np.asarray(s.test_loss if loss == "test" else s.train_loss, float))
        se = theory_se(s, f"{loss}_loss")
        ses.append(np.full(vals[-1].shape, np.nan) if se is None else np.broadcast_to(np.asarray(se, float),
                                                                                      vals[-1].shape))
    out = {"loss": loss, "paired": paired, "t": np.asarray(solution.t, float),
           **{f"{n}{e}": v for n, pair in zip(("full", "half", "quarter"), zip(vals, ses))
              for e, v in zip(("", "_se"), pair)}}
    if not paired:
        # node_extrapolation of the three, no extrapolated_se where the solves have no errors (its
        # curvature / 3 alone is no error bar), dof the fewer of the two solves'
        x = node_extrapolation(*vals, *ses)
        x["extrapolated_se"] = np.where(np.isfinite(ses[0]) & np.isfinite(ses[1]), x["extrapolated_se"], np.nan)
        dof = min(float((s.info or {}).get("error_dof") or 0) for s in sols[:2])
        return {**out, **x, "z": _shift_z(x["shift"], x["shift_se"]),
                "dof": np.full(vals[0].shape, dof if dof > 0 else np.nan), "pooled_noise": np.zeros_like(vals[0])}
    per = [None if s.replicas is None or s.replicas.get(f"{loss}_loss") is None
           else np.asarray(s.replicas[f"{loss}_loss"], float) for s in sols]
    f_se = (solution.error or {}).get(f"f_{loss}")
    noise = (np.full(vals[0].shape, np.nan) if f_se is None
             else np.mean(np.reshape(np.asarray(f_se, float) ** 2, (len(vals[0]), -1)), axis=1))
    return {**out, **paired_node_statistics(vals, per, noise)}


def node_losses(*solutions) -> tuple[str, ...]:
    """The losses `node_bias` can judge on all of `solutions`: ("test", "train") where they all have
    test losses, else ("train",). The node-count bias of the two differs (a walkthrough measured
    the train loss's at 0.8-2 of its error at 128-256 nodes a replica where the test loss's was
    unresolved), so the node bias check judges both."""
    return ("test", "train") if all(s.test_loss is not None for s in solutions) else ("train",)


def paired_node_statistics(values, per_replica, pooled_noise) -> dict:
    """The node-count statistics of paired solves (`node_bias`): `values` the pooled estimates x(M),
    x(M / 2), x(M / 4) (three (T,) arrays) of one solve's nodes whole, split in 2 and in 4;
    `per_replica` their populations' own values ((T, R), (T, 2 R), (T, 4 R), replica j's parts
    consecutive; None without replicas); `pooled_noise` the pooled estimate's excess from the
    spread of the mean prediction (the mean square of its standard errors; NaN: unknown).

    shift = x(M) - x(M / 2), curvature = (x(M / 2) - x(M / 4)) - 2 shift and extrapolated =
    2 x(M) - x(M / 2) - pooled_noise (on x(M) = x_inf + a / M + b / M^2 + c / S its remaining bias
    is curvature / 3, as for `validation.fitting.node_extrapolation`, and c / S, the same in all
    three, is the pooled noise; where it is unknown, NaN as for one replica, the extrapolation
    keeps it). Errors: the spread over replicas of each replica's own
    differences (its loss less its parts' mean), / sqrt(R), with R - 1 dof; extrapolated_se holds
    curvature / 3 beside it in quadrature."""
    f, h, q = (np.asarray(v, float) for v in values)
    shift = f - h
    curvature = (h - q) - 2 * shift
    pooled_noise = np.asarray(pooled_noise, float)
    # (unknown with one replica: no spread to estimate it from, nor an error; uncorrected there)
    extrapolated = f + shift - np.where(np.isfinite(pooled_noise), pooled_noise, 0.0)
    nan = np.full(f.shape, np.nan)
    if any(p is None for p in per_replica) or per_replica[0].shape[1] < 2:
        return {"shift": shift, "shift_se": nan, "curvature": curvature, "curvature_se": nan,
                "extrapolated": extrapolated, "extrapolated_se": nan, "z": nan, "dof": nan,
                "pooled_noise": pooled_noise}
    R = per_replica[0].shape[1]
    lf = per_replica[0]
    lh, lq = (p.reshape(p.shape[0], R, k).mean(axis=2) for p, k in zip(per_replica[1:], (2, 4)))
    se = lambda a: np.std(a, axis=1, ddof=1) / np.sqrt(R)          # noqa: E731
    d = lf - lh
    shift_se, curvature_se = se(d), se((lh - lq) - 2 * d)
    extrapolated_se = np.hypot(se(2 * lf - lh), curvature / 3)
    return {"shift": shift, "shift_se": shift_se, "curvature": curvature, "curvature_se": curvature_se,
            "extrapolated": extrapolated, "extrapolated_se": extrapolated_se, "z": _shift_z(shift, shift_se),
            "dof": np.full(f.shape, float(R - 1)), "pooled_noise": pooled_noise}


def _shift_z(shift, shift_se):
    """z = shift / shift_se: 0 where both are 0, NaN where the shift has no error."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(shift_se > 0, shift / shift_se, np.where(shift == 0, 0.0, np.nan))
    return np.where(np.isfinite(shift_se), z, np.nan)


def _check_node_counts(solution, half, quarter) -> bool:
    """Whether the three are paired (True: half and quarter the solution's nodes split in 2 and
    4, `dmft.solve(node_split=)`: the same nodes' key, R, 2 R and 4 R populations) or independent
    (False: as many replicas); InputError unless they record M, M / 2 and M / 4 nodes a replica
    (where they record them) in one of the two ways: solves given in another order, at other
    counts or from other nodes would read as a bias of the wrong size or sign."""
    info = [s.info or {} for s in (solution, half, quarter)]
    nodes = [i.get("nodes_per_replica") for i in info]
    if None not in nodes and not (nodes[0] == 2 * nodes[1] == 4 * nodes[2] and nodes[2] > 0):
        raise InputError(f"solution, half and quarter must have M, M / 2 and M / 4 nodes a replica, got {nodes}")
    splits = [int(i.get("node_split", 1)) for i in info]
    reps = [i.get("replicas") for i in info]
    if splits == [1, 1, 1]:
        if None not in reps and len(set(reps)) > 1:
            raise InputError(f"solution, half and quarter must have as many replicas, got {reps}")
        return False
    if splits != [1, 2, 4]:
        raise InputError(f"half and quarter must be independent solves (node_split 1) or the solution's nodes "
                         f"split (node_split 2 and 4), got node_split {splits}")
    if None not in reps and not (reps[1] == 2 * reps[0] and reps[2] == 4 * reps[0]):
        raise InputError(f"split solves of the solution's nodes have 2 and 4 times its replicas, got {reps}")
    keys = [i.get("nodes_key") for i in info]
    if None not in keys and not keys[0] == keys[1] == keys[2]:
        raise InputError(f"half and quarter must split the solution's own nodes (one key), got keys {keys}")
    configs = [i.get("config") for i in info]
    if None not in configs:
        # one problem and solve but for the split itself, the kernels kept and the control variate
        # (which the solver may turn off in one of them: the verdict says so)
        free = ("node_split", "kernels", "control_variate", "cv_mode")
        flat = [{f"{sec}.{k}": v for sec, part in c.items() if isinstance(part, dict)
                 for k, v in part.items() if not (sec == "solve" and k in free)} for c in configs]
        differ = sorted(k for k in set(flat[0]) | set(flat[1]) | set(flat[2])
                        if not flat[0].get(k) == flat[1].get(k) == flat[2].get(k))
        if differ:
            raise InputError(f"half and quarter must split the solution's own nodes, but their problems or solves "
                             f"differ in {', '.join(differ)}")
    return True


def scaling_fit(widths, errors) -> LogLogFit:
    """Fit log error against log width (a thin, named wrapper of `loglog_fit`)."""
    return loglog_fit(widths, errors)


def width_scaling(solution, runs: dict) -> dict:
    """Prediction error against width, fitted on log-log axes.

    Args:
        solution: the `dmft.Solution` (same time base as the runs).
        runs: width -> `networks.Run`, at least one, each under the width it records.

    Returns:
        dict with "widths", "per_seed_error" and "mean_error" (time-averaged over
        t > 0), "test_loss_bias" (max over time of |ensemble mean - theory|), their
        fits ("per_seed_fit", expected slope -1/2: fluctuations, fitted to
        "per_seed_error_net", the per-seed error with the theory's own standard error taken out
        in quadrature at each time; "mean_fit", between -1 (bias) and -1/2 (seed noise)), and
        "theory_floor", the theory's own standard error on the same scale (0 for an exact
        method, NaN for one sampled replica: unknown, and nothing is taken out).
    """
    mapping("runs", runs, "networks.Run by width (width -> run)")
    if not isinstance(solution, dmft.Solution):
        _check_types(solution, next(iter(runs.values()), None), "width_scaling")
    if not runs:
        raise InputError("runs: no networks (an empty dict): nothing to fit against width")
    for w, r in runs.items():
        checks.integer("runs: width", w, minimum=1)
        if not isinstance(r, networks.Run):
            raise InputError(f"runs[{w!r}] must be a networks.Run (from networks.train), got {type(r).__name__}")
        recorded = (r.info or {}).get("width")
        if recorded is not None and recorded != w:      # (a slope of +0.5 for -0.5, without a word)
            raise InputError(f"runs[{w!r}]: that run records width {recorded}, not its key {w}")
    widths = np.array(sorted(runs))
    comps = [compare(solution, runs[w]) for w in widths]
    per_seed = np.array([c.summary["time_mean_per_seed_error"] for c in comps])
    mean = np.array([c.summary["time_mean_mean_error"] for c in comps])
    bias = np.array([np.nanmax(np.abs(((c.test_loss or c.train_loss)["mean"]
                                       - (c.test_loss or c.train_loss)["theory"])[1:]))
                     for c in comps])
    out = {"widths": widths, "per_seed_error": per_seed, "mean_error": mean, "test_loss_bias": bias,
           "comparisons": {int(w): c for w, c in zip(widths, comps)}}
    err = solution.error or {}
    key = "f_test" if solution.f_test is not None and "f_test" in err else "f_train"
    # the theory's own error enters every width's per-seed error in quadrature (f_theory = f_inf +
    # its sampling error): at each time it is taken out, sqrt(e^2 - floor^2), before the fit (an
    # error sqrt(c / N + floor^2) fitted -0.33 over widths 1024-65536 at the demo's floor, 0.0045)
    if key in err:
        fl_t = np.sqrt(np.mean(np.asarray(err[key]).reshape(len(solution.t), -1) ** 2, axis=1)) / _target_rms(
            solution, key == "f_test")                       # (T,): its RMS over the points, per save
        floor = float(np.sqrt(np.mean(fl_t[1:] ** 2)))
        fl_t = np.where(np.isfinite(fl_t), fl_t, 0.0)        # (a time without an error estimate: none taken out)
        net = np.array([np.mean(np.sqrt(np.maximum(c.per_seed_error[1:] ** 2 - fl_t[1:] ** 2, 0.0)))
                        if c.per_seed_error.size > 1 else 0.0 for c in comps])
    else:       # exact (0), or a sampled solve of one replica (NaN: its error is unknown, not 0)
        floor = 0.0 if theory_se(solution, key) is None else float("nan")
        net = per_seed
    out["theory_floor"] = floor
    out["per_seed_error_net"] = net
    ok = lambda e: np.all(np.isfinite(e)) and np.all(e > 0) and len(e) >= 2   # noqa: E731
    out["per_seed_fit"] = scaling_fit(widths, net) if ok(net) else None
    out["mean_fit"] = scaling_fit(widths, mean) if ok(mean) else None
    out["bias_fit"] = scaling_fit(widths, bias) if ok(bias) else None
    return out
