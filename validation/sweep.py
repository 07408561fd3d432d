"""The lazy-to-rich sweep: DMFT, its lazy limit and network ensembles at each gamma0.

Example (tiny sizes):
    >>> import jax; jax.config.update("jax_enable_x64", True)
    >>> import dmft, validation
    >>> data = dmft.tasks.single_index(D=4, P=12, P_test=20, degree=2, key=0)
    >>> sw = validation.lazy_to_rich(dmft.TwoLayer("relu"), data, gamma0s=[0.1, 1.0],
    ...                              widths=[16, 64], seeds=2,
    ...                              solve_kw=dict(eta0=0.5, steps=20, save_every=10, samples=256),
    ...                              train_kw=dict(eta0=0.5, steps=20, save_every=10))
    >>> sorted(sw.runs[1.0]), sw.scaling[1.0]["per_seed_error"].shape
    ([16, 64], (2,))
"""

from __future__ import annotations

import dataclasses
import time

import jax

import dmft
import networks

from .compare import width_scaling

__all__ = ["LazyToRich", "lazy_to_rich"]


@dataclasses.dataclass
class LazyToRich:
    """Results of a sweep over gamma0 (dict keys are the gamma0 values).

    Attributes:
        model, data: the problem (model.gamma0 is replaced at each point).
        gamma0s, widths, seeds: the grid.
        solutions: gamma0 -> dmft.Solution; lazy: gamma0 -> the lazy closed form.
        runs: gamma0 -> {width -> networks.Run}.
        scaling: gamma0 -> `width_scaling` result (errors, fits, comparisons).
        timings: seconds spent per part.
    """

    model: dmft.TwoLayer
    data: dmft.Dataset
    gamma0s: list
    widths: list
    seeds: int
    solutions: dict
    lazy: dict
    runs: dict
    scaling: dict
    timings: dict


def lazy_to_rich(model, data, gamma0s, widths, seeds, *, solve_kw=None, train_kw=None, key=None,
                 progress: bool = False, simulate: bool = True) -> LazyToRich:
    """Solve the DMFT and train network ensembles at each gamma0, in the same units.

    Args:
        model: `dmft.TwoLayer` (its gamma0 is replaced by each sweep value).
        data: `dmft.Dataset`.
        gamma0s: richness values; widths: network widths; seeds: networks per width.
        solve_kw: keyword arguments of `dmft.solve` (eta0, steps, save_every, ...).
        train_kw: keyword arguments of `networks.train`; eta0, steps and save_every
            default to solve_kw's so both share the time base.
        key: `jax.random.key` of the networks; point i uses fold_in(key, i).
        progress: one progress bar over all solves and ensembles.
        simulate: False for theory only (no networks).
    """
    solve_kw = dict(solve_kw or {})
    train_kw = dict(train_kw or {})
    for k in ("eta0", "steps", "save_every"):
        if k in solve_kw:
            train_kw.setdefault(k, solve_kw[k])
    if [train_kw.get(k) for k in ("eta0", "steps", "save_every")] != \
            [solve_kw.get(k) for k in ("eta0", "steps", "save_every")]:
        raise ValueError("lazy_to_rich: theory and networks need the same eta0, steps, save_every")
    gamma0s = [float(g) for g in gamma0s]
    widths = [int(w) for w in widths] if simulate else []
    key = jax.random.key(1) if key is None else key
    lazy_kw = {k: v for k, v in solve_kw.items() if k in ("eta0", "steps", "save_every", "kernels",
                                                          "dynamics", "kernel_nodes")}
    bar = _bar(len(gamma0s) * (1 + len(widths)), progress)
    sols, lazy, runs, scaling = {}, {}, {}, {}
    timings = {"theory_s": 0.0, "networks_s": 0.0}
    for i, g in enumerate(gamma0s):
        m = model.replace(gamma0=g)
        t0 = time.perf_counter()
        sols[g] = dmft.solve(m, data, **solve_kw)
        lazy[g] = dmft.solve(m, data, method="lazy", **lazy_kw)
        timings["theory_s"] += time.perf_counter() - t0
        _advance(bar, f"gamma0={g:g} theory")
        if simulate:
            runs[g] = {}
            for w in widths:
                t0 = time.perf_counter()
                runs[g][w] = networks.train(m, data, width=w, seeds=seeds,
                                            key=jax.random.fold_in(key, i), **train_kw)
                timings["networks_s"] += time.perf_counter() - t0
                _advance(bar, f"gamma0={g:g} N={w}")
            scaling[g] = width_scaling(sols[g], runs[g])
    if bar is not None:
        bar.close()
    return LazyToRich(model, data, gamma0s, widths, seeds, sols, lazy, runs, scaling, timings)


def _bar(total, on):
    if not on:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="job", desc="lazy-to-rich")


def _advance(bar, text):
    if bar is not None:
        bar.set_postfix_str(text)
        bar.update(1)
