"""What a scan keeps per point, from the records of a theory batch or a network ensemble."""

from __future__ import annotations

import math

import numpy as np

from validation.compare import paired_node_statistics
from validation.grokking import crossing_time, grokking_times

__all__ = ["derive", "network_records", "node_outputs"]


# ----------------------------------------------------------------- per-point outputs

_CURVES = ("train_loss", "test_loss", "alignment", "weight_change.first_layer",
           "weight_change.readout", "error.train_loss", "error.test_loss")


def derive(src: str, rec: dict, outputs, theta) -> dict:
    """The stored arrays of one source ("theory" or "networks") from its per-point records."""
    out = {}
    curves = [q for q in _CURVES if q in rec]
    if "final" in outputs:
        out.update({f"{src}.final.{q}": rec[q][:, -1] for q in curves})
        out[f"{src}.final.t"] = np.broadcast_to(np.asarray(rec["t"]), rec[curves[0]].shape)[:, -1]
    if "grokking" in outputs:
        # docs/conventions.md: first times below theta (NaN, reached False: not within the run)
        if "test_loss" in rec:
            se = {f"{n}_se": rec[f"error.{n}_loss"] for n in ("train", "test") if f"error.{n}_loss" in rec}
            # the replicas (or seeds) behind both losses, (n, R, T): the gap's error (the jackknife)
            reps = ({f"{n}_loss": np.swapaxes(rec[f"replicas.{n}_loss"], -1, -2) for n in ("train", "test")}
                    if all(f"replicas.{n}_loss" in rec for n in ("train", "test")) else None)
            g = grokking_times(rec["t"], rec["train_loss"], rec["test_loss"], theta, **se, replicas=reps)
            out.update({f"{src}.grok.{k}": getattr(g, k) for k in
                        ("t_train", "t_test", "gap", "reached_train", "reached_test", "coarse_train", "coarse_test")})
            # standard errors of the times, from the losses' (a theory point's replicas, a network
            # ensemble's seeds): validation.grokking.crossing_time_se; the gap's by the jackknife
            out.update({f"{src}.grok.t_{n}": getattr(g, f"t_{n}") for n in se})
            if reps is not None:
                out[f"{src}.grok.gap_se"] = g.gap_se
        else:
            out[f"{src}.grok.t_train"], out[f"{src}.grok.reached_train"] = \
                crossing_time(rec["t"], rec["train_loss"], theta)
    if "curves" in outputs:
        out["t"] = rec["t"]
        out.update({f"{src}.{q}": rec[q] for q in curves})
    if "predictions" in outputs:
        out.update({f"{src}.{q}": rec[q] for q in ("f_train", "f_test") if q in rec})
    for q in ("diverged_step", "diverged_seeds", "heavy_tailed", "control_variate_noisy", "control_variate_off"):
        if q in rec:
            out[f"{src}.{q}"] = rec[q]
    if "effective_node_share" in rec:         # the least over saves (NaN after a divergence left out)
        out[f"{src}.least_node_share"] = np.fmin.reduce(rec["effective_node_share"], axis=1)
    if "node_share_drift" in rec:
        out[f"{src}.least_node_share_drift"] = np.fmin.reduce(rec["node_share_drift"], axis=1)
    return out


def node_outputs(rec: dict, half: dict, quarter: dict) -> dict:
    """scan.node_check's outputs from a theory batch's records (n points each) with each replica's
    nodes whole, split in 2 and in 4 (`dmft.BatchProgram(node_split=)`: M, M / 2 and M / 4 nodes
    a replica, the same nodes), of the final test loss (train loss without test targets): its
    values at the fewer nodes, and `validation.compare.paired_node_statistics` of the three (the
    shift, curvature and extrapolation to infinitely many nodes with their errors from each
    replica's own losses, the pooled noise subtracted; z = shift / shift_se, a t statistic of
    replicas - 1 degrees of freedom where there is no bias). The errors, z and dof NaN where a solve
    has no error (one replica: no replicas.* records; the shift, curvature and extrapolation are
    still given, without the pooled noise); every statistic but dof NaN where a solve diverged
    (its losses are), and where the solver turned the control variate off in some of the three
    programs but not all (control_variate_off: two estimators of the same nodes). With test targets
    the train loss's too, as theory.node.train.* (its node-count bias differs: the validate job's
    node bias check judges both). `name`.full_se is the loss's own standard error with the nodes whole
    (NaN with one replica): the margin of the node bias bound (`experiments.scan.result.node_bias_flags`),
    whatever scan.outputs keeps. theory.node.diverged_step: the first step either split solve
    diverged at (-1: neither), where its statistics are NaN."""
    has = lambda q: all(q in r for r in (rec, half, quarter))           # noqa: E731
    losses = ([("test_loss", "theory.node")] + ([("train_loss", "theory.node.train")] if has("train_loss") else [])
              if has("test_loss") else [("train_loss", "theory.node")])
    n = np.shape(rec[losses[0][0]])[0]
    last = lambda r, k: (np.asarray(r[k], np.float64)[:, -1] if k in r else None)      # noqa: E731
    # a point whose control variate the solver turned off in some of the three programs (for its
    # noise) has two estimators of the same nodes: their difference is no node-count bias (NaN)
    off = [np.asarray(r.get("control_variate_off", np.zeros(n, bool)), bool) for r in (rec, half, quarter)]
    apart = (off[0] != off[1]) | (off[0] != off[2])
    out = {}
    for q, name in losses:
        vals = [last(r, q) for r in (rec, half, quarter)]
        per = [last(r, f"replicas.{q}") for r in (rec, half, quarter)]      # (n, R k): each point's populations
        noise = last(rec, f"pooled_noise.{q}")
        x = paired_node_statistics(vals, per, np.full(n, np.nan) if noise is None else noise)
        x = {k: np.where(apart, np.nan, v) if k != "dof" else v for k, v in x.items()}
        # the loss's own standard error at the full node count: the node bias bound's margin
        # (`result.node_bias_flags`), kept here so that it does not depend on scan.outputs
        full_se = last(rec, f"error.{q}")
        full_se = np.full(n, np.nan) if full_se is None else full_se
        out.update({f"{name}.half": vals[1], f"{name}.quarter": vals[2], f"{name}.full_se": full_se,
                    **{f"{name}.{k}": v for k, v in x.items()}})
    # where a split solve diverged its statistics are NaN, and theory.diverged_step (the whole
    # nodes') said nothing: the first step either split solve diverged at (-1: none)
    steps = [np.asarray(r["diverged_step"]) for r in (half, quarter) if "diverged_step" in r]
    if steps:
        both = np.stack(steps)
        out["theory.node.diverged_step"] = np.where(np.all(both < 0, axis=0), -1,
                                                    np.min(np.where(both < 0, np.iinfo(both.dtype).max, both), axis=0))
    return out


def network_records(run) -> dict:
    """Seed means (and standard errors of the mean) of one ensemble, as one point's records."""
    s = run.train_loss.shape[0]
    series = {"train_loss": run.train_loss, "test_loss": run.test_loss, "alignment": run.alignment,
              "weight_change.first_layer": run.weight_change["first_layer"],
              "weight_change.readout": run.weight_change["readout"]}
    rec = {"t": run.t}
    for q, v in series.items():
        if v is None:
            continue
        rec[q] = v.mean(axis=0)
        if q.endswith("loss") and s > 1:
            rec[f"error.{q}"] = v.std(axis=0, ddof=1) / math.sqrt(s)
            rec[f"replicas.{q}"] = np.swapaxes(v, 0, 1)          # (T, S): the seeds, as a theory's replicas
    rec["f_train"] = run.f_train.mean(axis=0)
    if run.f_test is not None:
        rec["f_test"] = run.f_test.mean(axis=0)
    rec["diverged_seeds"] = np.int64(len(run.info["diverged"]))
    return rec


