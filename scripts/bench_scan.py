"""Benchmark of parameter scans: points per second of a gamma0 scan against a Python loop.

For each problem and each scan size (64 and 1024 gamma0 values, log-spaced) it
times `experiments.scan.run` (batched program, chunks, store on disk) and a Python
loop of single `dmft.solve` calls at the same points, and prints a table and their
ratio. Compilation is reported apart: "scan cold" includes it, "scan warm" reruns
the same scan into a fresh store with the program already compiled. The loop is
timed warm on `--loop-points` points (its rate does not depend on the scan size).

Then the store's own cost per chunk (`experiments.store.Store.write_chunk` of a one-point chunk
with a session's counts, as a scan writes them, no compute), for 200 and 2000 chunks: time per
chunk over the first and the last tenth of the chunks, and the bytes written per chunk besides
the chunk files (from /proc/self/io where there is one); both should not grow with the count.

Problems: the Kumar et al. toy model through the exact closure (quadratic
activation, fixed readouts) and a ReLU single-index task through the sampled
forward solver.

Run: python scripts/bench_scan.py [--quick] [--json FILE]
"""

import argparse
import json
import os
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


def _written() -> int | None:
    """Bytes this process has passed to write() so far (Linux), None elsewhere."""
    try:
        with open("/proc/self/io") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("wchar:"))
    except (OSError, StopIteration, ValueError):
        return None


def store_table(counts):
    """The store's cost per chunk against the number of chunks written."""
    from experiments.store import Store

    rows = []
    for n in counts:
        names = [f"c{i:06d}" for i in range(n)]
        tmp = tempfile.mkdtemp(prefix="bench_store_")
        try:
            store = Store.create_or_open(f"{tmp}/s", {"config": {"bench": n}}, {"grid": {}, "chunk_names": names})
            session = {"status": "running", "computed_points": 0, "seconds": 0.0,
                       "groups": [{"group": 0, "chunks": 0, "points": 0}]}
            store.manifest["sessions"].append(session)
            store.save_manifest()
            times, chunk_bytes, w0 = [], 0, _written()
            for i, name in enumerate(names):
                def count(i=i):
                    session.update(computed_points=i + 1, seconds=float(i),
                                   groups=[{"group": 0, "chunks": i + 1, "points": i + 1}])
                t = time.perf_counter()
                store.write_chunk(name, {"index": np.array([i]), "x": np.ones(1)}, family="g", then=count)
                times.append(time.perf_counter() - t)
                chunk_bytes += os.path.getsize(store.chunk_path(name))
            w1 = _written()
            store.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        k = max(1, n // 10)
        rows.append(dict(chunks=n, first_ms=1e3 * float(np.mean(times[:k])), last_ms=1e3 * float(np.mean(times[-k:])),
                         total_s=float(sum(times)),
                         other_bytes_per_chunk=None if w0 is None or w1 is None else (w1 - w0 - chunk_bytes) / n))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the closure problem only")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 1024], help="scan sizes")
    p.add_argument("--chunk", type=int, default=64, help="points per compiled call")
    p.add_argument("--loop-points", type=int, default=32, help="single solves timed for the loop")
    p.add_argument("--store-chunks", type=int, nargs="*", default=[200, 2000],
                   help="chunk counts of the store's own cost per chunk (none: skip it)")
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
    store_rows = store_table(args.store_chunks)
    if store_rows:
        print(f"\n{'store: chunks written':<22} {'first 10% ms/chunk':>18} {'last 10% ms/chunk':>17} "
              f"{'total s':>8} {'other bytes/chunk':>17}")
    for r in store_rows:
        other = "n/a" if r["other_bytes_per_chunk"] is None else f"{r['other_bytes_per_chunk']:.0f}"
        print(f"{r['chunks']:<22} {r['first_ms']:>18.2f} {r['last_ms']:>17.2f} {r['total_s']:>8.2f} {other:>17}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(devices[0]), "backend": jax.default_backend(), "rows": rows,
                       "store": store_rows}, fh, indent=2)


if __name__ == "__main__":
    main()
