"""Scan points of deep linear networks: one network ensemble and one per-mode SDE per point.

Outputs per point (arrays over the r modes, in the teacher's order):

    final     networks.final.modes_mean, .modes_std, .test_loss (median over seeds);
              theory.final.modes_mean, .modes_std (SDE paths); flow.final.modes (gradient flow)
    learning  networks.learn.t_half (median over all seeds of the time to half the target, a seed
              that did not get there counting as later; NaN when the median is past the run; with
              train.weight_decay, half the fixed point), .fraction (seeds that got there);
              flow.learn.t_half;
              theory.learn.t_peak (when the diffusion peaks on the flow path: its interior maximum;
              NaN where D has none: full-batch steps, label noise strong enough that D rises to its
              plateau, a start above the target, a mode the decay switches off)
    curves    t, networks.modes_mean, .modes_std (T, r), networks.test_loss (T,),
              theory.modes_mean, .modes_std (T, r)

Always: networks.diverged_seeds and theory.diverged_paths (SDE paths that went non-finite;
the theory's means and spreads are over the others, NaN when none is left; a spread, the
standard deviation with ddof 1, is NaN from fewer than two: one path has none). Theory outputs
need an aligned start (NaN otherwise; no paths, 0 diverged). A
point draws its networks from fold_in(key(train.seed), id) and its SDE paths from
fold_in(key(theory.seed), id'), the ids digests of the coordinates each reads
(`grid.point_ids`): the same numbers in any grid that holds the point.
"""

from __future__ import annotations

import copy
import warnings

import jax
import numpy as np

from dmft import deep_linear as dl
from dmft.errors import DivergenceError

from ..dln.config import build as build_studies
from ..dln.config import sde_memory_limit
from .grid import point_digests, point_ids, point_warnings

__all__ = ["DeepLinearGroup"]


def _quiet(reduce, *args, **kwargs):
    """A NaN-skipping reduction over seeds or paths that may all have diverged: NaN there without
    numpy's 'Mean of empty slice' / 'All-NaN slice' warnings (the divergences are counted in
    their own outputs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return reduce(*args, **kwargs)


def _point_config(cfg: dict, columns: dict, i: int) -> dict:
    out = copy.deepcopy(cfg)
    for f, col in columns.items():
        sec, key = f.split(".", 1)
        out[sec][key] = col[i].item()
    out["teacher"]["label_noise"] = [out["teacher"]["label_noise"]]
    return out


def _stack(rows: list) -> dict:
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


class DeepLinearGroup:
    """All points of a deep-linear scan (each point runs alone)."""

    def __init__(self, cfg: dict, group, columns: dict, caches: dict):
        self.cfg, self.group, self.columns, self.caches = cfg, group, columns, caches
        for i in group.indices:                 # every point builds (and so is validated) now
            build_studies(_point_config(cfg, columns, int(i)), networks=cfg["scan"]["networks"])

    @property
    def nbytes(self) -> int:
        return 0

    def compute(self, chunk) -> dict:
        idx = chunk.indices
        out = {"index": idx.astype(np.int64)}
        for part in ("networks", "theory"):       # (each part's outputs; a point read before is kept)
            if self.cfg["scan"][part]:
                out.update(self.caches[part].rows_of(
                    point_digests(self.cfg, self.columns, idx, part),
                    lambda pos, part=part: _stack([self._named(int(i), part) for i in idx[pos]])))
        return out

    def _named(self, i: int, part: str) -> dict:
        with point_warnings(self.columns, i):        # (a divergence warning names the grid point)
            return self._point(i, part)

    def _id(self, i: int, part: str) -> int:
        return int(point_ids(self.cfg, self.columns, [i], part)[0])

    def _point(self, i: int, part: str) -> dict:
        """Point i's outputs of one part ("networks": the ensemble; "theory": SDE and flow)."""
        import networks
        from validation.deep_linear import learning_times_of, settled_targets

        cfg = _point_config(self.cfg, self.columns, i)
        sc, tr = cfg["scan"], cfg["train"]
        st = build_studies(cfg, networks=sc["networks"])[0]
        r = st.data.rank
        nan_r = np.full(r, np.nan)
        out = {}
        T = st.schedule.save_steps.size
        kappa = float(st.schedule.weight_decay)
        if part == "networks":
            run = networks.train(st.model, st.data, seeds=st.seeds, schedule=st.schedule,
                                 key=jax.random.fold_in(jax.random.key(tr["seed"]), self._id(i, "networks")),
                                 probe=(tr["probe"] or None) if st.data.online else None, dtype=tr["dtype"])
            modes = run.modes.astype(np.float64)
            out["networks.diverged_seeds"] = np.int64(len(run.info["diverged"]))
            if "final" in sc["outputs"]:
                out["networks.final.modes_mean"] = _quiet(np.nanmean, modes[:, -1], axis=0)
                out["networks.final.modes_std"] = _quiet(np.nanstd, modes[:, -1], axis=0, ddof=1)
                out["networks.final.test_loss"] = np.float64(_quiet(np.nanmedian, run.test_loss[:, -1]))
            if "learning" in sc["outputs"]:
                # to half the fixed point with decay; none for a mode decay switches off
                tl = learning_times_of(run, st.data, targets=settled_targets(st.model, st.data, kappa))
                ok = np.isfinite(tl)
                out["networks.learn.fraction"] = ok.mean(axis=0)
                # the median over every seed (a mode not learned within the run counts as after
                # it), as the dln job reports it; NaN when that median is past the run
                med = np.median(tl, axis=0)
                out["networks.learn.t_half"] = np.where(np.isfinite(med), med, np.nan)
            if "curves" in sc["outputs"]:
                out["t"] = st.schedule.times
                out["networks.modes_mean"] = _quiet(np.nanmean, modes, axis=0)
                out["networks.modes_std"] = _quiet(np.nanstd, modes, axis=0, ddof=1)
                out["networks.test_loss"] = _quiet(np.nanmedian, run.test_loss, axis=0)
        if part == "theory":
            aligned = st.model.init == "aligned"
            paths = cfg["theory"]["paths"]
            sde_modes = np.full((paths, T, r), np.nan)          # (a random start has no SDE: NaN)
            out["theory.diverged_paths"] = np.int64(0)
            if aligned:
                try:
                    sde = dl.mode_sde(st.model, st.data, schedule=st.schedule, paths=paths,
                                      key=jax.random.fold_in(jax.random.key(cfg["theory"]["seed"]),
                                                             self._id(i, "theory")),
                                      max_memory_gb=sde_memory_limit(cfg),
                                      cross_modes=cfg["theory"]["cross_modes"])
                    sde_modes = sde.modes
                    out["theory.diverged_paths"] = np.int64(len(sde.info["diverged"]))
                except DivergenceError:         # every path diverged: recorded, as networks are
                    out["theory.diverged_paths"] = np.int64(paths)
            with warnings.catch_warnings():     # (a diverged path reads NaN from its bad save on)
                warnings.simplefilter("ignore", RuntimeWarning)
                sde_mean, sde_std = _quiet(np.nanmean, sde_modes, axis=0), _quiet(np.nanstd, sde_modes, axis=0, ddof=1)
            if "final" in sc["outputs"]:
                out["theory.final.modes_mean"] = sde_mean[-1]
                out["theory.final.modes_std"] = sde_std[-1]
                out["flow.final.modes"] = (dl.mode_flow(st.model, st.data, [st.schedule.final_time],
                                                        weight_decay=kappa)[0]
                                           if aligned else nan_r)
            if "learning" in sc["outputs"]:
                out["flow.learn.t_half"] = (dl.learning_times(st.model, st.data, weight_decay=kappa)
                                            if aligned else nan_r)
                out["theory.learn.t_peak"] = (dl.diffusion_peaks(st.model, st.data, eta0=st.schedule.eta0,
                                                                 batch_size=st.schedule.batch_size,
                                                                 weight_decay=kappa)["t_peak"]
                                              if aligned else nan_r)
            if "curves" in sc["outputs"]:
                out["t"] = st.schedule.times
                out["theory.modes_mean"] = sde_mean
                out["theory.modes_std"] = sde_std
        return out

