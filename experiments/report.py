"""The report of the validate, solve and simulate jobs: Markdown + JSON + figures + raw results.

The verdicts come from `validation.verdicts` (each check against a stated tolerance of
the [check] section); this module writes them, the tables and the figures to disk, and reads
the raw results back (`read_results`, `read_runs`: a rerun under another [check] section
judges them again instead of computing them; the caller verifies the files first).
"""

from __future__ import annotations

import json
import os

import numpy as np

import dmft
import networks
from dmft import io as _io
from validation import LazyToRich, plots
from validation.compare import node_bias, node_losses, theory_se, width_scaling
from validation.inputs import theory_name
from validation.sweep import NODE_CHECK_KINDS

from .config import to_toml
from . import problem as _problem
from .output import draw_figures, partial_named, precision_line, record_result
from .store import write_text

__all__ = ["write_report", "write_result", "write_figures", "write_ensemble_figure",
           "write_simulation_report", "verdict_table", "FIGURES", "saved_files", "read_results", "read_runs",
           "read_report", "recheck_line", "training_line"]

FIGURES = {"losses": plots.theory_vs_networks, "lazy_to_rich": plots.lazy_to_rich_summary,
           "width_scaling": plots.width_scaling_plot, "relative_error": plots.relative_error_in_time}


def _fmt(x, nd=4):
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}g}"


def _final_table(sweep):
    """Last-time values per gamma0: the DMFT with its standard error (across replicas; None when
    exact or from one replica), the lazy limit, and per width the networks' mean with the std over
    seeds (ddof = 1, as in the checks; None from fewer than two finite seeds). Network losses are
    test losses; without test targets they are None, never train losses."""
    rows = []
    for g in sweep.gamma0s:
        sol, lz = sweep.solutions[g], sweep.lazy[g]
        se = theory_se(sol, "test_loss")
        row = {"gamma0": g, "dmft_test_loss": float(sol.test_loss[-1]) if sol.test_loss is not None else None,
               "dmft_se": float(se[-1]) if se is not None and np.ndim(se) else None,
               "dmft_se_unknown": se is not None and not np.ndim(se),
               "dmft_heavy_tailed": bool(sol.info.get("heavy_tailed", False)),
               "lazy_test_loss": float(lz.test_loss[-1]) if lz.test_loss is not None else None,
               "dmft_alignment": float(sol.alignment[-1]),
               "dmft_weight_change": float(sol.weight_change["first_layer"][-1]),
               "networks": {}}
        for w in sweep.widths:
            run = sweep.runs[g][w]
            mean, std = _seed_stats(run.test_loss)
            row["networks"][w] = {"test_loss_mean": mean, "test_loss_std": std,
                                  "alignment": float(np.nanmean(run.alignment[:, -1])),
                                  "weight_change": float(np.nanmean(run.weight_change["first_layer"][:, -1])),
                                  "diverged": len(run.info["diverged"])}
        rows.append(row)
    return rows


def _seed_stats(loss):
    """(mean, std over seeds with ddof = 1) of a (seeds, T) loss at the last time, over the seeds
    finite there; None without the loss, and a std of None under two finite seeds (never 0: one
    seed has no spread to estimate, as in validation.compare)."""
    if loss is None:
        return None, None
    last = np.asarray(loss)[:, -1]
    last = last[np.isfinite(last)]
    mean = float(np.mean(last)) if last.size else None
    return mean, (float(np.std(last, ddof=1)) if last.size > 1 else None)


def _finite(x):
    """x as a float, or None where it is not finite (no estimate: JSON null, shown as -)."""
    return float(x) if x is not None and np.isfinite(x) else None


def _row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _table(head, rows) -> list[str]:
    """A Markdown table whose separator has as many cells as its header (and every row)."""
    for r in rows:
        assert len(r) == len(head), (head, r)
    return [_row(head), _row(["---"] * len(head))] + [_row(r) for r in rows]


def _node_table(sweep) -> list[dict]:
    """theory.node_check's rows (`validation.compare.node_bias` at the last saved time): per gamma0
    and loss (test, then train; `node_losses`), the loss at M, M / 2 and M / 4 nodes a replica with
    their errors, the shift from M / 2 to M, the curvature (0 on a 1 / M law) and the extrapolation
    to infinitely many nodes, each with its error (None where unknown)."""
    rows, fewer = [], getattr(sweep, "fewer", None) or {}
    for g in sweep.gamma0s:
        if g not in fewer:
            continue
        sols = (sweep.solutions[g], *(fewer[g][k] for k in sorted(NODE_CHECK_KINDS)))
        for loss in node_losses(*sols):
            nb = node_bias(*sols, loss=loss)
            rows.append({"gamma0": g, "loss": nb["loss"], "paired": bool(nb["paired"]),
                         "pooled_noise": _finite(nb["pooled_noise"][-1]),
                         "nodes_per_replica": int(sweep.solutions[g].info.get("nodes_per_replica", 0)),
                         **{k: _finite(nb[k][-1]) for k in ("full", "full_se", "half", "half_se", "quarter",
                                                            "quarter_se", "shift", "shift_se", "curvature",
                                                            "curvature_se", "extrapolated", "extrapolated_se")}})
    return rows


def _node_lines(rows) -> list[str]:
    """report.md's node-count section from `_node_table`'s rows ([] without theory.node_check)."""
    if not rows:
        return []
    pm = lambda r, k: f"{_fmt(r[k])} +- {_fmt(r[k + '_se'], 2)}"       # noqa: E731
    paired = all(r.get("paired") for r in rows)
    how = ("each replica's nodes split in 2 and in 4, the same nodes: the noise the three share cancels in their "
           "differences, whose errors come from each replica's own losses" if paired else
           "as many replicas, independent keys")
    extrap = ("2 loss(M) - loss(M / 2) - the pooled noise (the mean square of the predictions' standard errors: "
              "the loss of the replicas' mean prediction exceeds that of its expectation by it, alike at the "
              "three counts of one solve's nodes; its final value in the last column, - and nothing subtracted "
              "where it is unknown: one replica), whose error holds the replicas' and curvature / 3 "
              "(`validation.node_bias`)" if paired else
              "2 loss(M) - loss(M / 2), whose error holds the solves' and curvature / 3 "
              "(`validation.fitting.node_extrapolation`)")
    lines = ["## Node-count check (theory.node_check)", "",
             f"The DMFT solved again at half and a quarter of the nodes a replica ({how}): the replicas' spread, all "
             "at one node count, does not see a bias that falls as 1 / nodes. Final loss at each count +- its "
             "standard error; shift = loss(M) - loss(M / 2), minus the bias at M to first order (the node bias "
             "check judges it at every saved time of the test and the train loss); curvature = (loss(M / 2) - "
             f"loss(M / 4)) - 2 shift, 0 on a 1 / M law; extrapolated = {extrap}.", ""]
    lines += _table(["gamma0", "loss", "M", "loss at M / 4", "loss at M / 2", "loss at M", "shift", "curvature",
                     "extrapolated (infinitely many nodes)"] + (["pooled noise"] if paired else []),
                    [[f"{r['gamma0']:g}", r["loss"], str(r["nodes_per_replica"]), pm(r, "quarter"), pm(r, "half"),
                      pm(r, "full"), pm(r, "shift"), pm(r, "curvature"), pm(r, "extrapolated")]
                     + ([_fmt(r["pooled_noise"], 2)] if paired else []) for r in rows])
    return lines + [""]


def _scaling_table(sweep):
    rows = []
    for g in sweep.gamma0s:
        sc = sweep.scaling[g]
        row = {"gamma0": g, "widths": [int(w) for w in sc["widths"]],
               "per_seed_error": sc["per_seed_error"].tolist(), "mean_error": sc["mean_error"].tolist(),
               "test_loss_bias": sc["test_loss_bias"].tolist(),
               "theory_floor": _finite(sc["theory_floor"])}      # NaN: one sampled replica, unknown
        for k in ("per_seed_fit", "mean_fit", "bias_fit"):
            f = sc[k]
            row[k] = None if f is None else {"slope": f.slope, "stderr": _finite(f.stderr),
                                             "half_width_95": _finite(f.half_width()),
                                             "range": list(f.x_range), "points": f.n}
        rows.append(row)
    return rows


def _theory_stem(name: str, g) -> str:
    """theory/NAME_gamma0_G (name: "dmft" or "lazy"), relative to the results directory."""
    return f"theory/{name}_gamma0_{g:g}"


def _network_stem(g, w) -> str:
    return f"networks/gamma0_{g:g}_N{w}"


def _path(out: str, rel: str) -> str:
    return os.path.join(out, *rel.split("/"))


def write_result(out: str, kind: str, g, w, result) -> str:
    """One raw result, theory/KIND_gamma0_G or networks/gamma0_G_NW (.npz + .json; kind "dmft",
    "lazy" or one of `validation.sweep.NODE_CHECK_KINDS` (theory.node_check): a `dmft.Solution`;
    "networks": a `networks.Run` of width w); returns its stem. The jobs call it as each result is
    done (`validation.lazy_to_rich`'s on_result). Once both files are written their SHA-256 go
    to the run's results record (`experiments.output.record_result`): a rerun of a run that did
    not complete reuses them where they still match (`result_stem`, `experiments.output.resumed`)."""
    stem = result_stem(out, kind, g, w)
    result.save(stem)
    record_result(out, [stem + ".npz", stem + ".json"])
    return stem


def result_stem(out: str, kind: str, g, w=None) -> str:
    """The stem (path less .npz / .json) under `out` that `write_result` saves a result to."""
    return _path(out, _network_stem(g, w) if kind == "networks" else _theory_stem(kind, g))


def write_failure(out: str, cfg: dict, g, err) -> dict:
    """A sweep point whose DMFT failed (`validation.lazy_to_rich(on_failure=)`): the saves before
    its first bad step (a DivergenceError's .partial, finite) to theory/dmft_gamma0_G_failed
    (.npz + .json, with the error, its step and quantity), nothing where none were saved; a node
    check's split solve (`err.kind`) to theory/dmft_half_nodes_gamma0_G_failed (or quarter).
    Returns its record for report.json's "failed" and report.md: gamma0, step, cause, error,
    solve (dmft or the split solve's kind) and partial (the .npz's path relative to `out`, or None).
    These saves are not results (`experiments.output.is_result`): a resumed run never reuses them
    and computes the point again; where only a node check's split solve failed, the DMFT's own
    result (and a split solve that finished), saved by `write_result`, stay and are reused."""
    step = getattr(err, "step", None)
    rec = {"gamma0": float(g), "step": None if step is None else int(step),
           "cause": getattr(err, "cause", None) or type(err).__name__, "error": str(err), "partial": None}
    part = getattr(err, "partial", None)
    arrays = {k: np.asarray(v) for k, v in (part or {}).items()
              if v is not None and np.asarray(v).dtype.kind in "biuf"}
    if getattr(err, "saved_steps", None) is not None:
        arrays["saved_steps"] = np.asarray(err.saved_steps)
    kind = getattr(err, "kind", "dmft")       # (a node check's split solve: NODE_CHECK_KINDS[k])
    rec["solve"] = kind
    rel = _theory_stem(kind, g) + "_failed"
    kept = bool(arrays) and any(a.size for a in arrays.values())
    # (the message's attribute names become the file's, as `experiments.output.keep_partial` makes them)
    rec["error"] = partial_named(rec["error"], rel + ".npz", append=False).replace(" (.partial is None)", "")
    if kept:
        _io.save(_path(out, rel), arrays, cfg, extra={k: rec[k] for k in ("gamma0", "step", "cause", "error")})
        rec["partial"] = rel + ".npz"
    return rec


def saved_files(gamma0s, widths, theory: bool = True, node_check: bool = False) -> list[str]:
    """The raw results' files (relative to the results directory, in the order the jobs write them
    with `write_result`; without `theory` the ensembles only; `node_check`: with theory.node_check's
    solves): .npz then .json of each result."""
    stems = [_theory_stem("lazy", g) for g in gamma0s] if theory else []      # (the lazy limits first)
    names = ["dmft", *(NODE_CHECK_KINDS.values() if node_check else ())]
    for g in gamma0s:
        stems += [_theory_stem(name, g) for name in names] if theory else []
        stems += [_network_stem(g, w) for w in widths]
    return [stem + ext for stem in stems for ext in (".npz", ".json")]


def read_runs(out: str, gamma0s, widths) -> dict:
    """The ensembles `dmft simulate` saved (`write_result`), read back (each verified by `networks.Run.load`):
    gamma0 -> {width -> networks.Run}."""
    return {float(g): {int(w): networks.Run.load(_path(out, _network_stem(g, w))) for w in widths}
            for g in gamma0s}


def read_results(out: str, model, data, schedule, gamma0s, widths, seeds, timings=None,
                 node_check: bool = False) -> LazyToRich:
    """The sweep whose raw results a job saved in `out` (`write_result`), read back (`dmft.Solution.load`,
    `networks.Run.load`, each verifying its files) with its width scaling computed again from
    them (`validation.compare.width_scaling`, as `validation.lazy_to_rich` does): the verdicts
    and reports of a sweep need nothing else. `model`, `data` and `schedule` are the problem the
    results were computed for (its configuration's); `timings` are the computation's (the
    previous report's), not measured here; `node_check`: theory.node_check's solves too."""
    gamma0s, widths = [float(g) for g in gamma0s], [int(w) for w in widths]
    sols = {g: dmft.Solution.load(_path(out, _theory_stem("dmft", g))) for g in gamma0s}
    lazy = {g: dmft.Solution.load(_path(out, _theory_stem("lazy", g))) for g in gamma0s}
    fewer = ({g: {k: dmft.Solution.load(_path(out, _theory_stem(name, g))) for k, name in NODE_CHECK_KINDS.items()}
              for g in gamma0s} if node_check else {})
    runs = read_runs(out, gamma0s, widths) if widths else {}
    scaling = {g: width_scaling(sols[g], runs[g]) for g in runs}
    timings = {"theory_s": 0.0, "networks_s": 0.0, **(timings if isinstance(timings, dict) else {})}
    return LazyToRich(model, data, gamma0s, widths, int(seeds), sols, lazy, runs, scaling, timings, schedule, fewer)


def read_report(out: str) -> dict:
    """report.json of `out` ({} when it is not a JSON object)."""
    with open(os.path.join(out, "report.json")) as fh:
        rep = json.load(fh)
    return rep if isinstance(rep, dict) else {}


def training_line(cfg: dict, P: int, what: str) -> str:
    """The reports' sentence on minibatch SGD (train.batch_size, train.batch_seed), "" under
    full-batch gradient descent (batch_size 0, or P); `what`: who trained on the batches."""
    B = _problem.sgd_batch(cfg.get("train", {}), P)
    if not B:
        return ""
    return (f"Trained by minibatch SGD: B = {B} of the P = {P} training points per step, one batch sequence "
            f"(train.batch_seed = {cfg['train'].get('batch_seed', 0)}) for {what}. ")


def write_ensemble_figure(runs: dict, out: str) -> tuple[dict, dict]:
    """figures/networks.png; returns (paths, errors)."""
    return draw_figures({"networks": lambda: plots.ensemble_losses(runs)}, os.path.join(out, "figures"))


def _swept_model(model) -> dict:
    """The model as a report records it: its gamma0 is the sweep's ("gamma0" beside it), so the
    model's own (the schema's default, never run) is left out (report.json showed 1.0 beside
    gamma0 = [0.05, 0.5])."""
    return {k: v for k, v in model.describe().items() if k != "gamma0"}


def write_simulation_report(runs, model, data, cfg, out, figures, rechecked: dict | None = None):
    """report.md + report.json for network ensembles alone (`rechecked`: as for `write_report`)."""
    env = _io.environment()
    rows = []
    for g, by_width in runs.items():
        for w, run in by_width.items():
            mean, std = _seed_stats(run.test_loss)
            rows.append({"gamma0": g, "width": w, "seeds": run.info["seeds"],
                         "final_test_loss_mean": mean, "final_test_loss_std": std,
                         "alignment": float(np.nanmean(run.alignment[:, -1])),
                         "weight_change": float(np.nanmean(run.weight_change["first_layer"][:, -1])),
                         "diverged": run.info["diverged"], "wall_s": run.info["wall_s"]})
    rep = {"task": data.describe(), "model": _swept_model(model), "gamma0": list(runs), "ensembles": rows,
           "figures": {k: os.path.relpath(v, out) for k, v in figures.items()},
           "config": cfg, "environment": env, **({"rechecked": rechecked} if rechecked else {})}
    js = os.path.join(out, "report.json")
    with open(js, "w") as fh:
        json.dump(_io.jsonable(rep), fh, indent=2)
    sgd = training_line(cfg, data.P, "every network")
    kappa = float(cfg.get("train", {}).get("weight_decay", 0.0) or 0.0)
    decay = f" with weight decay {kappa:g} per unit time (train.weight_decay)" if kappa > 0 else ""
    lines = ["# Finite-width network ensembles", "",
             f"Task `{data.meta.get('task', 'custom')}` with D = {data.D}, P = {data.P}, P* = {data.P_test}, "
             f"C = {data.C}; two-layer `{model.activation.name}` network, {model.readout} readouts, "
             f"{'centered' if model.centered else 'not centered'}; trained in DMFT units "
             f"(t = steps x eta0){decay}. No theory is solved by this job (`dmft validate` compares). "
             f"{sgd}{precision_line(env)}", ""] + ([recheck_line(rechecked, verdicts=False), ""] if rechecked else [])
    lines += _table(["gamma0", "width", "seeds", "final test loss (mean +- std over seeds)", "alignment",
                     "weight change", "diverged", "wall s (incl. its compile, where not reused)"],
                    [[f"{r['gamma0']:g}", r["width"], r["seeds"],
                      f"{_fmt(r['final_test_loss_mean'])} +- {_fmt(r['final_test_loss_std'], 2)}",
                      _fmt(r["alignment"], 3), _fmt(r["weight_change"], 3), len(r["diverged"]),
                      (f"{r['wall_s']:.1f}" if r["wall_s"] >= 1 else f"{r['wall_s']:.2g}")] for r in rows])   # (0.04 s read 0.0)
    lines += ["", "## Figures", ""] + [f"- [{k}]({os.path.relpath(v, out)})" for k, v in figures.items()]
    lines += ["", "## Configuration", "", "```toml", to_toml(cfg, _problem.unread_task_keys(cfg)).rstrip(), "```", ""]
    md = os.path.join(out, "report.md")
    write_text(md, "\n".join(lines))
    return md, js


def write_figures(sweep, out: str, names=None) -> tuple[dict, dict]:
    """The sweep's figures in out/figures; returns (paths, errors) (a failed figure is reported,
    not raised: the numbers are already on disk)."""
    makers = {name: (lambda fn=fn: fn(sweep)) for name, fn in FIGURES.items()
              if (names is None or name in names) and (sweep.widths or name == "losses")}
    return draw_figures(makers, os.path.join(out, "figures"))


def recheck_line(note: dict, verdicts: bool = True) -> str:
    """The reports' sentence on a recheck (`experiments.output.recheck_note`); without
    `verdicts` (the simulate job has none) it says only that the report was written again."""
    changed = ", ".join(note.get("differing") or []) or "no key"
    if not verdicts:
        return (f"Re-checked: this report was written again for a changed [check] section ({changed}), which "
                "this job has no verdicts for; nothing was computed again (timings are that run's).")
    return (f"Re-checked: these verdicts judge the saved results of an earlier run under a changed [check] "
            f"section ({changed}); nothing was computed again (timings are that run's).")


# a finite network's output offset that the DMFT lacks (under decay, or not centered): report.md's words
_OFFSET = ("E[a^2 phi^2] / (gamma0^2 N) in each output, which the DMFT (f = 0 at t = 0 at infinite width) does "
           "not have; it falls as 1 / N and is largest at small gamma0")


STILL_REL = 1e-3      # a theory train loss that moved less than this share of its start: nothing learned


def still_note(sweep) -> str | None:
    """A sentence where the theory's train loss moved by less than STILL_REL of its start at every
    gamma0 (nothing was learned: the checks compare curves that stayed where they started, and pass;
    inputs scaled by 1e-3 ran so with every check PASS), else None."""
    moved = []
    for g in sweep.gamma0s:
        loss = np.asarray(sweep.solutions[g].train_loss, dtype=np.float64)
        if loss.size < 2 or not np.all(np.isfinite(loss)) or loss[0] <= 0:
            return None
        moved.append(float(np.max(np.abs(loss - loss[0])) / loss[0]))
    if not moved or max(moved) >= STILL_REL:
        return None
    return (f"**Nothing was learned**: the theory's train loss moved by at most {max(moved):.2g} of its start "
            f"at every gamma0 (t up to {float(sweep.solutions[sweep.gamma0s[0]].t[-1]):g}), so the checks below "
            "compare curves that stayed where they started. Check the data's scale (dmft.tasks.scale_note: "
            "|x|^2 / D and the targets of order one), train.eta0 and train.steps.")


def write_report(sweep, cfg: dict, out: str, verdicts: list[dict], figures: dict,
                 environment: dict | None = None, rechecked: dict | None = None,
                 failed: list | None = None) -> tuple[str, str]:
    """report.md and report.json in `out` (`rechecked`: the recheck's record, said in both;
    `failed`: `write_failure`'s records of the sweep points whose DMFT failed, flagged in both)."""
    environment = environment or _io.environment()
    final = _final_table(sweep)
    scaling = _scaling_table(sweep) if sweep.widths else []
    nodes = _node_table(sweep)
    data = sweep.data
    report = {"task": data.describe(), "model": _swept_model(sweep.model), "gamma0": sweep.gamma0s,
              "widths": sweep.widths, "seeds": sweep.seeds, "checks": verdicts, "final": final,
              "width_scaling": scaling, "node_check": nodes or None, "timings": sweep.timings,
              "figures": {k: os.path.relpath(v, out) for k, v in figures.items()},
              "config": cfg, "environment": environment,
              "theory_info": {f"{g:g}": {k: v for k, v in sweep.solutions[g].info.items()
                                          if k not in ("config", "residuals")} for g in sweep.gamma0s}}
    if rechecked:
        report["rechecked"] = rechecked
    if failed:
        report["failed"] = failed
    json_path = os.path.join(out, "report.json")
    with open(json_path, "w") as fh:
        json.dump(_io.jsonable(report), fh, indent=2)

    m = sweep.model
    nets = bool(sweep.widths)
    name = theory_name(sweep)
    what = (f"networks of width {sweep.widths} with {sweep.seeds} seeds each, trained in DMFT units "
            "(t = steps x eta0)") if nets else "no networks (this job solves the theory only)"
    timing = f"Theory {sweep.timings['theory_s']:.0f} s" + \
        (f", networks {sweep.timings['networks_s']:.0f} s" if nets else "")
    lines = [
        f"# Lazy-to-rich validation: {name} against finite networks" if nets else
        f"# {name} and its lazy limit at each gamma0" if name == "DMFT" else "# The lazy limit at each gamma0", "",
        f"Task `{data.meta.get('task', 'custom')}` with D = {data.D}, P = {data.P}, P* = {data.P_test}, "
        f"C = {data.C}; two-layer `{m.activation.name}` network, {m.readout} readouts, "
        f"{'centered' if m.centered else 'not centered'}. gamma0 in {sweep.gamma0s}; {what}. "
        f"{training_line(cfg, data.P, f'the {name} and every network' if nets else f'the {name}')}"
        f"{timing}. {precision_line(environment)}", ""]
    if name != "DMFT":
        lines += ["The theory was solved with theory.method = 'lazy': every theory column, check and figure "
                  "below holds the lazy limit (gamma0 -> 0, the NTK's closed form, the same at every gamma0), "
                  "not the DMFT at each gamma0; networks at larger gamma0 are expected to depart from it.", ""]
    if rechecked:
        lines += [recheck_line(rechecked), ""]
    if (still := still_note(sweep)):
        lines += [still, ""]
    if failed:
        bad = ", ".join(f"{f['gamma0']:g}" for f in failed)
        which = name if all(f.get("solve", "dmft") == "dmft" for f in failed) else \
            f"{name} or its node check (theory.node_check)"
        lines += ["## Failed points", "",
                  f"The {which} failed at gamma0 = {bad}: the sweep went on past "
                  f"{'it' if len(failed) == 1 else 'them'}, and every check, table and figure below takes the "
                  "other gamma0 values only (the run's status is failed, exit 4). Whether the rich regime "
                  "diverges is not known before its solve.", ""]
        lines += _table(["gamma0", "first bad step", "quantity", "saves before it", "error"],
                        [[f"{f['gamma0']:g}", "-" if f["step"] is None else str(f["step"]), f["cause"],
                          f["partial"] or "none", f["error"]] for f in failed])
        lines += [""]
    if verdicts:
        lines += ["## Checks", ""]
        lines += _table(["check", "value", "tolerance", "verdict", "detail"],
                        [[v["name"], _shown(v), v["tolerance"] or "-", f"**{v['verdict']}**", v["detail"]]
                         for v in verdicts])
        lines += [""]
    decay = float(getattr(getattr(sweep, "schedule", None), "weight_decay", 0.0) or 0.0)
    lines += ["## Final values (last saved time)", "",
              f"{name}: value +- its standard error across replicas (none for exact methods, - for one "
              "replica)" + ("; networks: mean +- std over seeds (- under two finite seeds)" if nets else "")
              + (f". The lazy limit has no weight decay (decay moves the kernel): its column is the lazy "
                 f"closed form without the decay of {decay:g} that the DMFT has" if decay > 0 else "")
              # (a walkthrough: 1.540 against the DMFT's 1.545 excess loss at gamma0 = 0.05, N = 256, read
              # as a disagreement; it falls as 1 / N)
              + (". Under weight decay a centered network keeps the initial output it subtracts while decay "
                 f"shrinks its own: an offset of variance about {_OFFSET}" if decay > 0 and m.centered and nets else "")
              + (f". Not centered: each network starts from its random initial output, of variance about {_OFFSET}, "
                 "so the networks' early losses sit above the DMFT's there" if not m.centered and nets else "") + ".", ""]
    head = (["gamma0", f"{name} test loss +- SE", "lazy test loss" + (" (no decay)" if decay > 0 else "")]
            + [f"N={w} test loss (mean +- std)" for w in sweep.widths]
            + [f"{name} alignment", f"{name} first-layer change"])
    body = []
    for r in final:
        se = f" +- {_fmt(r['dmft_se'], 2)}" if r["dmft_se"] is not None or r["dmft_se_unknown"] else ""
        netc = [f"{_fmt(r['networks'][w]['test_loss_mean'])} +- {_fmt(r['networks'][w]['test_loss_std'], 2)}"
                for w in sweep.widths]
        se += " (heavy-tailed: see below)" if r.get("dmft_heavy_tailed") else ""
        body.append([f"{r['gamma0']:g}", f"{_fmt(r['dmft_test_loss'])}{se}", _fmt(r["lazy_test_loss"])]
                    + netc + [_fmt(r["dmft_alignment"], 3), _fmt(r["dmft_weight_change"], 3)])
    lines += _table(head, body)
    heavy = [f"{r['gamma0']:g}" for r in final if r.get("dmft_heavy_tailed")]
    if heavy:
        lines += ["", f"Heavy-tailed at gamma0 = {', '.join(heavy)}: the DMFT's outputs are carried by few "
                  "nodes, or by a share of them that still moves with the node count (`info['effective_node_share']` "
                  "below `dmft.solve.NODE_SHARE_MIN`, or `info['node_share_drift']` below "
                  "`dmft.solve.SHARE_DRIFT_MIN`), so its value moves "
                  "with the node count and its standard error understates the error; solve at several "
                  "theory.samples before trusting it."]
    if data.y_test is None:
        lines += ["", "(-: the data has no test targets, so there is no test loss; the lazy-limit check "
                  "compares train losses.)"]
    if scaling:
        lines += ["", "## Finite-width scaling (prediction error against width, fitted)", ""]

        def s(f):
            if f is None:
                return "-"
            if f["stderr"] is None:
                return f"{f['slope']:+.2f} (no error: {f['points']} points)"
            return f"{f['slope']:+.3f} +- {f['half_width_95']:.2g} (95%, {f['points'] - 2} dof)"
        lines += _table(["gamma0", "per-seed slope", "ensemble-mean slope", "test-loss bias slope", "widths",
                         f"{name} error floor"],
                        [[f"{r['gamma0']:g}", s(r["per_seed_fit"]), s(r["mean_fit"]), s(r["bias_fit"]),
                          f"{r['widths'][0]}..{r['widths'][-1]}", _fmt(r["theory_floor"], 2)] for r in scaling])
        lines += ["", "The slopes' intervals are 95% (Student's t with points - 2 degrees of freedom). "
                  "Per-seed errors follow the N^-1/2 fluctuations of Bordelon & Pehlevan (2023); the "
                  "ensemble mean mixes the N^-1 bias with seed noise of order (seeds N)^-1/2."]
    lines += [""] + _node_lines(nodes)
    lines += ["## Figures", ""]
    lines += [f"- [{k}]({os.path.relpath(v, out)})" for k, v in figures.items()]
    lines += ["", "## Configuration", "", "```toml", to_toml(cfg, _problem.unread_task_keys(cfg)).rstrip(), "```", "",
              "## Environment", "", "```", json.dumps(environment, indent=1), "```", ""]
    md_path = os.path.join(out, "report.md")
    write_text(md_path, "\n".join(lines))
    return md_path, json_path


def _shown(check) -> str:
    """A check's value as its verdict reads it (validation.verdicts: as many digits as the verdict
    needs); checks recorded without one show theirs to 4 digits."""
    return check["shown"] if check.get("shown") is not None else _fmt(check["value"])


def verdict_table(verdicts: list[dict]) -> str:
    """A short console table, one line per check."""
    width = max(len(v["name"]) for v in verdicts)
    rows = [f"{'check':<{width}}  {'value':>9}  {'tolerance':>14}  verdict"]
    for v in verdicts:
        rows.append(f"{v['name']:<{width}}  {_shown(v):>9}  {str(v['tolerance'] or '-'):>14}  {v['verdict']}")
    return "\n".join(rows)
