"""Benchmark of parameter scans: points per second of a gamma0 scan against a Python loop.

For each problem and each scan size (64 and 1024 gamma0 values, log-spaced) it
times `experiments.scan.run` (batched program, chunks, store on disk) and a Python
loop of single `dmft.solve` calls at the same points, and prints a table and their
ratio. Compilation is reported apart: "scan cold" includes it, "scan warm" reruns
the same scan into a fresh store with the program already compiled. The loop is
timed warm on `--loop-points` points (its rate does not depend on the scan size).

Problems: the Kumar et al. toy model through the exact closure (quadratic
activation, fixed readouts) and a ReLU single-index task through the sampled
forward solver.

Run: python scripts/bench_scan.py [--quick] [--json FILE]
"""

import argparse
import json
import shutil
import tempfile
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import dmft  # noqa: E402
from experiments import problem, scan  # noqa: E402

PROBLEMS = {
    "closure (Kumar quadratic, D=20 P=110, 1000 steps)": {
        "task": {"name": "kumar_quadratic", "D": 20, "P": 110, "P_test": 500},
        "model": {"activation": "quadratic", "eps": 0.2, "readout": "fixed"},
        "train": {"eta0": 2.0, "steps": 1000, "save_every": 50},
    },
    "forward (ReLU single-index, D=8 P=32, 512 nodes, 100 steps)": {
        "task": {"name": "single_index", "D": 8, "P": 32, "P_test": 64, "degree": 2},
        "model": {"activation": "relu"},
        "train": {"eta0": 0.5, "steps": 100, "save_every": 10},
        "theory": {"method": "forward", "samples": 512, "replicas": 4},
    },
}


def scan_table(name, base, sizes, chunk, loop_points):
    rows = []
    loop_rate = None
    for n in sizes:
        gammas = np.geomspace(0.05, 5.0, n).tolist()
        table = {**base, "scan": {"chunk": chunk, "outputs": ["final"], "grid": {"model.gamma0": gammas}}}
        tmp = tempfile.mkdtemp(prefix="bench_scan_")
        try:
            t = time.perf_counter()
            scan.run(table, f"{tmp}/cold")
            cold = time.perf_counter() - t
            t = time.perf_counter()
            res = scan.run(table, f"{tmp}/warm")
            warm = time.perf_counter() - t
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if loop_rate is None:
            cfg = scan.load_config(table)
            data, model = problem.build_data(cfg["task"]), problem.build_model(cfg["model"])
            kw = dict(problem.solve_options(cfg["theory"]), schedule=problem.build_schedule(cfg["train"]))
            dmft.solve(model.replace(gamma0=gammas[0]), data, kernels=False, **kw)      # compile
            pts = gammas[:: max(1, len(gammas) // loop_points)][:loop_points]
            t = time.perf_counter()
            for i, g in enumerate(pts):
                dmft.solve(model.replace(gamma0=g), data, kernels=False,
                           key=jax.random.fold_in(jax.random.key(0), i), **kw)
            loop_rate = len(pts) / (time.perf_counter() - t)
        assert res.complete
        rows.append(dict(problem=name, points=n, scan_cold_s=cold, scan_warm_s=warm,
                         scan_points_per_s=n / warm, loop_points_per_s=loop_rate,
                         ratio=n / warm / loop_rate))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the closure problem only")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 1024], help="scan sizes")
    p.add_argument("--chunk", type=int, default=64, help="points per compiled call")
    p.add_argument("--loop-points", type=int, default=32, help="single solves timed for the loop")
    p.add_argument("--json", help="also write the table to this file")
    args = p.parse_args()
    devices = jax.local_devices()
    print(f"# {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), float64, "
          f"jax {jax.__version__}")
    rows = []
    for name, base in PROBLEMS.items():
        if args.quick and not name.startswith("closure"):
            continue
        rows += scan_table(name, base, args.sizes, args.chunk, args.loop_points)
    print(f"\n{'problem':<62} {'points':>6} {'scan cold s':>11} {'scan warm s':>11} "
          f"{'scan pt/s':>10} {'loop pt/s':>10} {'ratio':>7}")
    for r in rows:
        print(f"{r['problem']:<62} {r['points']:>6} {r['scan_cold_s']:>11.2f} {r['scan_warm_s']:>11.2f} "
              f"{r['scan_points_per_s']:>10.1f} {r['loop_points_per_s']:>10.1f} {r['ratio']:>6.1f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(devices[0]), "backend": jax.default_backend(), "rows": rows}, fh,
                      indent=2)


if __name__ == "__main__":
    main()
