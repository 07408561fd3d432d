"""Parameter scans: a grid of problems, one compiled program per shape, a resumable store.

A scan is a configuration (the sections of `experiments.problem` plus [scan]) and a
grid over numeric fields of it, named "section.key" (or by the bare key when that
is unambiguous). Fields that only set scalars of the dynamics (model.gamma0,
train.eta0, train.weight_decay, model.eps) are *batched*: the points of one
group differ only in them and run through one `dmft.BatchProgram`, vmapped over
points, in chunks of `scan.chunk` points, sharded over the local devices. Every
other scanned field (task.P, task.D, simulate.width, seeds, ...) starts a new
group with its own data and program.

    [scan]
    outputs = ["final", "grokking"]   # also "curves" (loss, alignment, weight change
                                      # against time) and "predictions" (f_train, f_test)
    [scan.grid]                       # cartesian product; or [scan.points] (equal-length lists)
    "model.gamma0" = [0.1, 0.3, 1.0, 3.0]
    "task.P" = [64, 128]

From Python (a dict laid out like the TOML works as well as a file):

    res = scan.run("scan.toml", "results/scan")    # ScanResult; rerun to resume
    res["theory.final.test_loss"]                  # an array shaped like the grid
    res["theory.final.modes_mean[0]"]              # entry 0 of a per-point vector (deep linear modes)
    res.heatmap("theory.grok.gap", x="gamma0", y="P").savefig("gap.png")
    print(res.summary())

Outputs per point, for source = theory (`dmft.BatchProgram`) and networks (seed
means of `networks.train`; "error.*" are standard errors of those means):
"final" gives SOURCE.final.Q for Q in train_loss, test_loss, alignment,
weight_change.first_layer, weight_change.readout, error.train_loss,
error.test_loss; "grokking" gives SOURCE.grok.t_train, t_test, gap, reached_train,
reached_test, coarse_train, coarse_test (a crossing in a save interval over which the loss fell
over COARSE_FALL-fold: the saves do not resolve it) (`validation.grokking_times` at
scan.grok_threshold) and, where the losses have
standard errors (theory with 2 replicas or more, networks with 2 seeds or more), t_train_se and
t_test_se (`validation.grokking.crossing_time_se`) and gap_se (the jackknife over the replicas or
seeds: `validation.grokking.jackknife_se`; NaN where a time is not interpolated or a curve left
without one replica or seed does not cross within the run: `validation.GrokTimes`);
"curves" gives t and SOURCE.Q against time; "predictions" SOURCE.f_train and
f_test. Always: theory.diverged_step (-1: none) and networks.diverged_seeds; with the
forward method theory.heavy_tailed, theory.least_node_share and theory.least_node_share_drift
(as `dmft.solve`'s info: a point whose outputs few nodes carry, or whose share of them still
moves with the node count, so that its value moves with theory.samples); with its lazy-kernel
control variate and 3 replicas or more, theory.control_variate_noisy and
theory.control_variate_off (`dmft.solve_batch`: the correction's noise dominated; the point
diverged or ended unresolved with it and was solved again without it). With `[scan] node_check = true` (a sampled DMFT), every point is solved
again with each replica's nodes split in 2 and in 4 (half and a quarter of its nodes a replica, the
same nodes: `dmft.BatchProgram(node_split=)`), and theory.node.half, quarter, full_se, shift, shift_se,
curvature, curvature_se, extrapolated, extrapolated_se, pooled_noise, z and dof give the final test
loss's (train loss's without test targets) node-count shift and its extrapolation to infinitely
many nodes, and theory.node.train.* the train loss's beside it (`experiments.scan.outputs.node_outputs`,
`validation.compare.paired_node_statistics`; 3x the DMFT's cost in all), and theory.node.diverged_step
the first step a split solve diverged at (-1: none; its statistics NaN there); the summary counts the
points past the validate job's node bias bound (`experiments.scan.result.node_bias_flags`).

Deep linear networks (`[scan] kind = "deep_linear"`, the sections of `dmft dln` with one
label-noise value per point) scan init scale (model.init_scale, or model.gamma with init_scale = 0), depth,
learning rate, batch size, label noise or any other numeric field; every point is one
network ensemble and one per-mode SDE (outputs final, learning, curves:
`experiments.scan.deep_linear`).

Results go to an `experiments.store.Store`: a manifest and one .npz per chunk, each
written atomically, each chunk's record appended to a journal (one checksummed line; folded
into the manifest when a session opens, starts and ends, so a chunk costs the same however
many are written), and a report.md that a session rewrites when it runs to its end
(`write_report`: the grid, the summary, the outputs' shapes, the configuration; never read
back; an interrupted session leaves the previous one); rerunning the same scan resumes (finished, verified chunks are skipped;
a complete scan says "already complete" and computes nothing, no session either: its
report.md alone is written again, where missing or not the one its store gives); another
configuration in the same directory is refused, except for the memory limits
(theory.max_memory_gb, simulate.max_memory_gb), which change no result: a scan resumes
under another limit, and each session records its own. Everything read is verified (the
manifest's digest and its agreement with its own plan; each journal line's checksum; each
chunk's checksum record, points, coordinates and outputs): a chunk whose record a kill cut
short is computed again, alone; a bad chunk is named by `load` (`ScanResult.damaged`) and moved
aside and recomputed on resume; an edited manifest is refused. Under `jax.distributed`
each process takes every count-th chunk and process 0 writes them all:

    dmft scan --config scan.toml --coordinator HOST0:1234 --num-processes 2 --process-id RANK

Modules: `schema` (fields, what can be scanned), `config` (loading, checks), `grid` (grid and plan), `outputs` (what a point
keeps), `execute` (groups, devices, processes, the run loop), `result` (loading,
summary, figures); the store is `experiments.store`.

Example:
    >>> from experiments import scan
    >>> cfg = scan.load_config({"scan": {"grid": {"gamma0": [0.5, 1.0], "task.P": [8, 16, 32]}}})
    >>> grid = scan.grid_of(cfg)
    >>> grid.fields, grid.shape, grid.point(4)
    (('model.gamma0', 'task.P'), (2, 3), {'model.gamma0': 1.0, 'task.P': 16})
    >>> [(g.fields, len(g.indices)) for g in scan.plan(cfg).groups]
    [({'task.P': 8}, 2), ({'task.P': 16}, 2), ({'task.P': 32}, 2)]
"""

from dmft.errors import ConfigError, StoreConflict, StoreWriteError

from .config import load_config
from .schema import BATCHED, OUTPUTS, SCANNABLE, SCHEMA, resolve_field
from .execute import init_distributed, run
from .grid import Chunk, Grid, Group, Plan, grid_of, plan
from .result import ScanResult, heatmap, lines, load, summary, write_report

__all__ = ["SCHEMA", "BATCHED", "OUTPUTS", "SCANNABLE", "Grid", "Group", "Chunk", "Plan",
           "ScanResult", "load_config", "resolve_field", "grid_of", "plan", "run", "load",
           "summary", "write_report", "init_distributed", "heatmap", "lines", "ConfigError", "StoreConflict",
           "StoreWriteError"]
